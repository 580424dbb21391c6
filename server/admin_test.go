package server_test

import (
	"context"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	contract "github.com/deepersensor/deepersensor/api"
	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/store"
)

// setRole gives the account with email the role, as `deepersensor admin` does on the server's machine.
func setRole(t *testing.T, a *testapp.App, email string, role auth.Role) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, a.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, _, err := auth.SetRole(ctx, store.New(pool), email, role, "a test"); err != nil {
		t.Fatal(err)
	}
}

// TestAdminRoutesDoNotExistForNonAdmins sends every admin operation of the contract as a user who is not an
// admin, valid and broken in every way the contract attack knows, and the same request to a route that does
// not exist: the answers must be the same, a 404 for each valid request. Only a request without valid
// credentials differs: it is a 401, as everywhere the contract asks for a bearer token, so that clients
// refresh their tokens.
func TestAdminRoutesDoNotExistForNonAdmins(t *testing.T) {
	a := startContractApp(t)
	spec, err := openapi3.NewLoader().LoadFromData(contract.OpenAPIYAML)
	if err != nil {
		t.Fatal(err)
	}
	_, user := a.NewUser(t)
	// The user's own id: were the route not hidden, its PATCH would succeed.
	f := attackFixtures{token: user.AccessToken, paramValues: map[string]string{"id": subject(t, user.AccessToken)}, bodyLimit: a.Config.BodyLimit}
	plain := &http.Client{}
	admins := 0
	for _, op := range contractOperations(spec) {
		if !strings.HasPrefix(op.Path, "/v1/admin/") {
			continue
		}
		admins++
		if !op.Secured {
			t.Errorf("%s: an admin route must ask for a bearer token", op.ID)
		}
		valid := attack{name: "valid", request: op.valid(f), status: http.StatusNotFound}
		otherMethod := op.valid(f)
		otherMethod.method = http.MethodPut // no admin route has it
		wrong := attack{name: "method", request: otherMethod, status: http.StatusNotFound}
		for _, atk := range append([]attack{valid, wrong}, op.attacks(t, f)...) {
			if strings.HasPrefix(atk.name, "auth:") {
				continue
			}
			c := a.HTTPClient(t)
			if atk.name == "method" {
				c = plain // not an operation of the contract
			}
			resp, body := sendWith(t, c, a, atk.request)
			missing := atk.request.clone()
			missing.path = "/v1/no-such-route" + strings.TrimPrefix(op.Path, "/v1/admin")
			wantResp, wantBody := sendWith(t, plain, a, missing)
			got, want := problemOf(t, resp, body), problemOf(t, wantResp, wantBody)
			if resp.StatusCode != wantResp.StatusCode || got != want {
				t.Errorf("%s %s: %d %s, but a route that does not exist answers %d %s", op.ID, atk.name, resp.StatusCode, body, wantResp.StatusCode, wantBody)
			}
			if atk.status != 0 && resp.StatusCode != atk.status {
				t.Errorf("%s %s: %d %s, want %d", op.ID, atk.name, resp.StatusCode, body, atk.status)
			}
		}
	}
	if admins < 2 {
		t.Errorf("the contract has %d admin operations, want at least listUsers and updateUser", admins)
	}
}

// problemOf is a problem answer without its request id, which differs between any two answers.
func problemOf(t *testing.T, resp *http.Response, body []byte) client.Problem {
	t.Helper()
	p := testapp.Problem(t, resp, body)
	p.RequestId = ""
	p.Errors = nil // compared through Detail, which names the field
	return p
}

func TestAdminUsers(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	ctx := context.Background()
	adminEmail, adminTokens := a.NewUser(t)
	setRole(t, a, adminEmail, auth.RoleAdmin)
	admin := a.Client(t, testapp.Bearer(adminTokens.AccessToken))
	emails := []string{adminEmail}
	for range 4 {
		email, _ := a.NewUser(t)
		emails = append(emails, email)
	}
	slices.Sort(emails) // the generated ones are lower-case already

	// The first page, to learn the ids.
	first, err := admin.ListUsersWithResponse(ctx, &client.ListUsersParams{Limit: new(100)})
	if err != nil || first.JSON200 == nil {
		t.Fatalf("list users = %v %s", err, first.Body)
	}
	byEmail := map[string]client.AdminUser{}
	for _, u := range first.JSON200.Items {
		byEmail[u.Email] = u
	}
	heavy := byEmail[emails[1]]
	now := time.Now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	for _, r := range []struct {
		at                 time.Time
		prompt, completion int
	}{
		{month, 10, 20},
		{now, 1, 2},
		{now, 100, 0},
		{month.Add(-time.Microsecond), 1000, 1000}, // last month
		{now.AddDate(0, 0, -40), 1000, 1000},       // long before
	} {
		countRows(t, a, `WITH r AS (INSERT INTO usage_records (user_id, model, prompt_tokens, completion_tokens, duration_ms,
			outcome, created_at) VALUES ($1, 'tiny', $2, $3, 10, 'complete', $4) RETURNING 1) SELECT count(*) FROM r`,
			heavy.Id, r.prompt, r.completion, r.at)
	}

	var got []client.AdminUser
	var cursor *string
	for range len(emails) {
		page, err := admin.ListUsersWithResponse(ctx, &client.ListUsersParams{Limit: new(2), Cursor: cursor})
		if err != nil || page.JSON200 == nil {
			t.Fatalf("list users = %v %s", err, page.Body)
		}
		got = append(got, page.JSON200.Items...)
		if cursor = page.JSON200.NextCursor; cursor == nil {
			break
		}
	}
	var gotEmails []string
	for _, u := range got {
		gotEmails = append(gotEmails, u.Email)
		wantRole := client.AccountRoleUser
		if u.Email == adminEmail {
			wantRole = client.AccountRoleAdmin
		}
		if u.Role != wantRole || u.Quotas.TokensPerDay != nil || u.Quotas.TokensPerMonth != nil || u.CreatedAt.IsZero() {
			t.Errorf("user %+v: want role %s and the default quotas", u, wantRole)
		}
		wantUsage := client.MonthUsage{}
		if u.Id == heavy.Id {
			wantUsage = client.MonthUsage{Requests: 3, PromptTokens: 111, CompletionTokens: 22}
		}
		if u.UsageThisMonth != wantUsage {
			t.Errorf("usage this month of %s = %+v, want %+v", u.Email, u.UsageThisMonth, wantUsage)
		}
	}
	if !slices.Equal(gotEmails, emails) {
		t.Errorf("pages hold %v, want %v", gotEmails, emails)
	}
	garbage := "garbage!"
	if r, err := admin.ListUsersWithResponse(ctx, &client.ListUsersParams{Cursor: &garbage}); err != nil || r.StatusCode() != http.StatusBadRequest {
		t.Errorf("a cursor the server did not make = %v %d %s, want 400", err, r.StatusCode(), r.Body)
	}

	// PATCH with values, then with nulls.
	day, monthly := int64(50_000), int64(0)
	for _, q := range []client.UserQuotas{{TokensPerDay: &day, TokensPerMonth: &monthly}, {}} {
		r, err := admin.UpdateUserWithResponse(ctx, heavy.Id, q)
		if err != nil || r.JSON200 == nil {
			t.Fatalf("update %+v = %v %d %s", q, err, r.StatusCode(), r.Body)
		}
		if u := r.JSON200; u.Id != heavy.Id || !reflect.DeepEqual(u.Quotas, q) || u.UsageThisMonth.Requests != 3 {
			t.Errorf("update %+v = %+v", q, u)
		}
		listed, err := admin.ListUsersWithResponse(ctx, &client.ListUsersParams{Limit: new(100)})
		if err != nil || listed.JSON200 == nil {
			t.Fatalf("list users = %v", err)
		}
		for _, u := range listed.JSON200.Items {
			if u.Id == heavy.Id && !reflect.DeepEqual(u.Quotas, q) {
				t.Errorf("after update %+v the list shows %+v", q, u.Quotas)
			}
		}
	}
	wantDetails := []string{
		"user " + heavy.Id.String() + " (" + heavy.Email + "): tokens_per_day default -> 50000, tokens_per_month default -> 0",
		"user " + heavy.Id.String() + " (" + heavy.Email + "): tokens_per_day 50000 -> default, tokens_per_month 0 -> default",
	}
	for _, detail := range wantDetails {
		if n := countRows(t, a, "SELECT count(*) FROM audit_log WHERE event = 'quotas_set' AND user_id = $1 AND detail = $2",
			subject(t, adminTokens.AccessToken), detail); n != 1 {
			t.Errorf("%d audit events of the admin %q, want 1", n, detail)
		}
	}
	audit, err := admin.ListMyAuditEventsWithResponse(ctx, nil)
	if err != nil || audit.JSON200 == nil || audit.JSON200.Items[0].Event != auth.EventQuotasSet {
		t.Errorf("the admin's newest audit event = %v %s, want %s", err, audit.Body, auth.EventQuotasSet)
	}

	for _, c := range []struct {
		name   string
		id     uuid.UUID
		body   string
		status int
	}{
		{"an unknown user", uuid.New(), `{"tokens_per_day": 1, "tokens_per_month": null}`, http.StatusNotFound},
		{"a negative quota", heavy.Id, `{"tokens_per_day": -1, "tokens_per_month": null}`, http.StatusBadRequest},
		{"a quota that is not an integer", heavy.Id, `{"tokens_per_day": 1.5, "tokens_per_month": null}`, http.StatusBadRequest},
		{"a missing quota", heavy.Id, `{"tokens_per_day": 1}`, http.StatusBadRequest},
	} {
		r, err := admin.UpdateUserWithBodyWithResponse(ctx, c.id, "application/json", strings.NewReader(c.body))
		if err != nil || r.StatusCode() != c.status {
			t.Errorf("%s: %v %d %s, want %d", c.name, err, r.StatusCode(), r.Body, c.status)
		}
	}
}

// TestAdminRoleChecksEveryRequest grants and revokes the role of a user who keeps its access token and API
// key: each change holds from the next request on.
func TestAdminRoleChecksEveryRequest(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	email, tokens := a.NewUser(t)
	key := mustCreateKey(t, a, tokens.AccessToken, "admin", nil).Secret
	list := func(what string, want int) {
		t.Helper()
		for _, bearer := range []string{tokens.AccessToken, key} {
			r, err := a.Client(t, testapp.Bearer(bearer)).ListUsersWithResponse(context.Background(), nil)
			if err != nil || r.StatusCode() != want {
				t.Fatalf("%s: list users = %v %d %s, want %d", what, err, r.StatusCode(), r.Body, want)
			}
		}
	}
	list("a user", http.StatusNotFound)
	setRole(t, a, email, auth.RoleAdmin)
	list("granted, with the tokens from before", http.StatusOK)
	setRole(t, a, email, auth.RoleUser)
	list("revoked", http.StatusNotFound)
}
