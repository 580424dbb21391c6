package server_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/uuid"

	contract "github.com/deepersensor/deepersensor/api"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// mustCreateKey creates an API key with an access token (or another key).
func mustCreateKey(t *testing.T, a *testapp.App, token, name string, expiresAt *time.Time) client.CreatedAPIKey {
	t.Helper()
	resp, err := a.Client(t, testapp.Bearer(token)).CreateAPIKeyWithResponse(context.Background(), client.NewAPIKey{Name: name, ExpiresAt: expiresAt})
	if err != nil || resp.JSON201 == nil {
		t.Fatalf("create API key: %v %s", err, resp.Body)
	}
	return *resp.JSON201
}

var keySecret = regexp.MustCompile(`^ds_[A-Za-z0-9_-]{43}$`)

func TestAPIKeys(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.MaxAPIKeysPerUser = 3 }})
	_, tokens := a.NewUser(t)
	_, other := a.NewUser(t)
	ctx := context.Background()
	c := a.Client(t, testapp.Bearer(tokens.AccessToken))

	key := mustCreateKey(t, a, tokens.AccessToken, "laptop", nil)
	if !keySecret.MatchString(key.Secret) || key.Prefix != key.Secret[:11] || key.Name != "laptop" || key.LastUsedAt != nil || key.ExpiresAt != nil {
		t.Errorf("created = %+v", key)
	}
	list, err := c.ListAPIKeysWithResponse(ctx)
	if err != nil || list.JSON200 == nil || len(list.JSON200.Items) != 1 {
		t.Fatalf("list = %v %s", err, list.Body)
	}
	if got := list.JSON200.Items[0]; got.Id != key.Id || got.Prefix != key.Prefix || got.LastUsedAt != nil || strings.Contains(string(list.Body), key.Secret) {
		t.Errorf("listed %s, want the key, unused, without its secret", list.Body)
	}
	// Only the SHA-256 of the secret is stored.
	hash := sha256.Sum256([]byte(key.Secret))
	if n := countRows(t, a, "SELECT count(*) FROM api_keys AS k WHERE secret_hash = $1 AND position($2 in k::text) = 0", hash[:], key.Secret[11:]); n != 1 {
		t.Errorf("%d rows hold the secret's hash and not the secret, want 1", n)
	}

	wantStatus(t, a, "the key", key.Secret, http.StatusOK)
	me, err := a.Client(t, testapp.Bearer(key.Secret)).GetMeWithResponse(ctx)
	if err != nil || me.JSON200 == nil || me.JSON200.Id.String() != subject(t, tokens.AccessToken) {
		t.Fatalf("me with the key = %v %s, want the key's user", err, me.Body)
	}
	// The first use shows at once, and is written to the database off the request path.
	list, _ = c.ListAPIKeysWithResponse(ctx)
	if used := list.JSON200.Items[0].LastUsedAt; used == nil || time.Since(*used) > time.Minute {
		t.Errorf("last used after the first use = %v, want just now", used)
	}
	deadline := time.Now().Add(5 * time.Second)
	for countRows(t, a, "SELECT count(*) FROM api_keys WHERE id = $1 AND last_used_at IS NOT NULL", key.Id) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first use was not stored within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if r, err := a.Client(t, testapp.Bearer(other.AccessToken)).DeleteAPIKeyWithResponse(ctx, key.Id); err != nil || r.StatusCode() != http.StatusNotFound {
		t.Errorf("deleting another user's key = %v %d, want 404", err, r.StatusCode())
	}
	wantStatus(t, a, "the key after another user tried to delete it", key.Secret, http.StatusOK)
	del, err := c.DeleteAPIKeyWithResponse(ctx, key.Id)
	if err != nil || del.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete = %v %d %s", err, del.StatusCode(), del.Body)
	}
	wantStatus(t, a, "a revoked key", key.Secret, http.StatusUnauthorized)
	if r, _ := c.DeleteAPIKeyWithResponse(ctx, key.Id); r.StatusCode() != http.StatusNotFound {
		t.Errorf("deleting it again = %d, want 404", r.StatusCode())
	}

	audit, err := c.ListMyAuditEventsWithResponse(ctx, nil)
	if err != nil || audit.JSON200 == nil {
		t.Fatalf("audit = %v", err)
	}
	if e := audit.JSON200.Items; len(e) < 2 || e[0].Event != "api_key_revoked" || e[1].Event != "api_key_created" {
		t.Errorf("newest audit events = %+v, want api_key_revoked, api_key_created", e)
	}
	if n := countRows(t, a, "SELECT count(*) FROM audit_log WHERE event IN ('api_key_created', 'api_key_revoked') AND detail LIKE '%' || $1 || '%' || $2", key.Id.String(), key.Prefix); n != 2 {
		t.Errorf("%d audit events name the key's id and prefix, want 2", n)
	}
	if strings.Contains(a.Logs.String(), key.Secret) {
		t.Error("the logs hold a key's secret")
	}
}

func TestAPIKeyValidation(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.MaxAPIKeysPerUser = 2 }})
	_, tokens := a.NewUser(t)
	c := a.Client(t, testapp.Bearer(tokens.AccessToken))
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	past := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	tests := []struct {
		name, body string
		want       int
		field      string
	}{
		{"blank name", `{"name":"   "}`, http.StatusUnprocessableEntity, "name"},
		{"NUL in the name", `{"name":"a\u0000b"}`, http.StatusUnprocessableEntity, "name"},
		{"empty name", `{"name":""}`, http.StatusBadRequest, "name"},
		{"name of 101 characters", `{"name":"` + strings.Repeat("é", 101) + `"}`, http.StatusBadRequest, "name"},
		{"no name", `{"expires_at":"` + future + `"}`, http.StatusBadRequest, "name"},
		{"expires in the past", `{"name":"old","expires_at":"` + past + `"}`, http.StatusUnprocessableEntity, "expires_at"},
		{"expires_at not a time", `{"name":"x","expires_at":"tomorrow"}`, http.StatusBadRequest, "expires_at"},
		{"name of 100 characters", `{"name":"` + strings.Repeat("é", 100) + `","expires_at":"` + future + `"}`, http.StatusCreated, ""},
		{"no expiry", `{"name":"forever"}`, http.StatusCreated, ""},
		{"one key more than DS_MAX_API_KEYS_PER_USER", `{"name":"third"}`, http.StatusConflict, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.CreateAPIKeyWithBodyWithResponse(context.Background(), "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != tt.want {
				t.Fatalf("status = %d %s, want %d", resp.StatusCode(), resp.Body, tt.want)
			}
			if tt.want < 400 {
				return
			}
			p := testapp.Problem(t, resp.HTTPResponse, resp.Body)
			if tt.field != "" && (p.Errors == nil || (*p.Errors)[0].Field != tt.field) {
				t.Errorf("problem %+v does not name %q", p, tt.field)
			}
		})
	}
}

func TestExpiredAPIKey(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, tokens := a.NewUser(t)
	expires := time.Now().Add(time.Second)
	key := mustCreateKey(t, a, tokens.AccessToken, "short", &expires)
	wantStatus(t, a, "a key before its expiry", key.Secret, http.StatusOK)
	time.Sleep(time.Until(expires) + 50*time.Millisecond)
	wantStatus(t, a, "a key after its expiry, cached", key.Secret, http.StatusUnauthorized)
}

// TestAPIKeyLookupsAreLimited checks that made-up keys cost at most DS_RATE_LIMIT_KEY_LOOKUP_IP queries per
// client address, while a key that was repeated is refused from memory.
func TestAPIKeyLookupsAreLimited(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.RateLimitKeyLookupIP = config.Rate{Limit: 2, Period: time.Hour}
	}})
	me := func(token string) (*http.Response, []byte) {
		resp, err := a.Client(t, testapp.Bearer(token)).GetMeWithResponse(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return resp.HTTPResponse, resp.Body
	}
	madeUp := func() string { return "ds_" + strings.Repeat("x", 17) + rand.Text() }
	first := madeUp()
	for i, token := range []string{first, first, first, madeUp()} { // the repeats are refused from memory
		if resp, body := me(token); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("made-up key %d = %d %s, want 401", i, resp.StatusCode, body)
		}
	}
	resp, body := me(madeUp())
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a third made-up key = %d %s, want 429", resp.StatusCode, body)
	}
	check429(t, resp, body)
	_, tokens := a.NewUser(t)
	wantStatus(t, a, "an access token from the limited address", tokens.AccessToken, http.StatusOK)
}

// TestAPIKeyWorksOnEveryRoute sends every operation's example, as TestContractAttack does, with an API key
// wherever the contract asks for a bearer token.
func TestAPIKeyWorksOnEveryRoute(t *testing.T) {
	a := startContractApp(t)
	spec, err := openapi3.NewLoader().LoadFromData(contract.OpenAPIYAML)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	sendExamples(t, a, contractOperations(spec), func(access string) string {
		if key == "" {
			key = mustCreateKey(t, a, access, "every route", nil).Secret
		}
		return key
	})
	if key == "" {
		t.Fatal("no operation asked for a bearer token")
	}
}

// TestAPIKeyRevocationOnTwoInstances runs two instances on one database and one Redis: revoking a key and
// deleting the account of a key on one end the keys on both, at once, although both have them cached.
func TestAPIKeyRevocationOnTwoInstances(t *testing.T) {
	one, two := startTwoInstances(t)
	ctx := context.Background()
	_, tokens := one.NewUser(t)
	revoked := mustCreateKey(t, one, tokens.AccessToken, "revoked", nil)
	kept := mustCreateKey(t, two, tokens.AccessToken, "kept", nil)
	for _, a := range []*testapp.App{one, two} {
		wantStatus(t, a, "a live key", revoked.Secret, http.StatusOK)
		wantStatus(t, a, "another live key", kept.Secret, http.StatusOK)
	}

	if r, err := one.Client(t, testapp.Bearer(kept.Secret)).DeleteAPIKeyWithResponse(ctx, revoked.Id); err != nil || r.StatusCode() != http.StatusNoContent {
		t.Fatalf("revoke = %v %d", err, r.StatusCode())
	}
	wantEnded(t, "a revoked key", revoked.Secret, one, two)
	wantStatus(t, two, "the other key", kept.Secret, http.StatusOK)

	del, err := two.Client(t, testapp.Bearer(kept.Secret)).DeleteMeWithResponse(ctx, client.DeleteAccountRequest{Password: testapp.TestPassword})
	if err != nil || del.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete the account = %v %d", err, del.StatusCode())
	}
	wantEnded(t, "a key of a deleted account", kept.Secret, two, one)
	if n := countRows(t, one, "SELECT count(*) FROM api_keys WHERE id = ANY($1)", []uuid.UUID{revoked.Id, kept.Id}); n != 0 {
		t.Errorf("%d keys remain", n)
	}
}
