package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
)

func TestRoles(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "Ada@Example.com")

	if role, err := st.UserRole(ctx, ada.ID); err != nil || role != auth.RoleUser {
		t.Fatalf("role of a new user = %q, %v; want user", role, err)
	}
	u, before, err := st.SetRoleByEmail(ctx, "ADA@example.COM", auth.RoleAdmin)
	if err != nil || u.ID != ada.ID || u.Email != ada.Email || before != auth.RoleUser {
		t.Fatalf("grant = %+v, %q, %v; want ada, who was a user", u, before, err)
	}
	if role, err := st.UserRole(ctx, ada.ID); err != nil || role != auth.RoleAdmin {
		t.Fatalf("role after the grant = %q, %v; want admin", role, err)
	}
	if _, before, err := st.SetRoleByEmail(ctx, ada.Email, auth.RoleAdmin); err != nil || before != auth.RoleAdmin {
		t.Errorf("grant again: before = %q, %v; want admin", before, err)
	}

	_, _, err = st.SetRoleByEmail(ctx, "nobody@example.com", auth.RoleAdmin)
	wantCode(t, "set the role of an unknown email", err, core.NotFound)
	_, err = st.UserRole(ctx, uuid.New())
	wantCode(t, "role of an unknown user", err, core.NotFound)
}

func TestAccountsInEmailOrder(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	for _, email := range []string{"carol@example.com", "Bob@example.com", "alice@example.com", "Dave@example.com"} {
		mustUser(t, st, email)
	}
	var got []string
	after := ""
	for range 3 {
		page, err := st.Accounts(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			got = append(got, a.Email)
			if a.Role != auth.RoleUser || a.Quotas != (auth.Quotas{}) || a.CreatedAt.IsZero() {
				t.Errorf("account %+v: want a user with the default quotas", a)
			}
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Email
	}
	if want := "alice@example.com Bob@example.com carol@example.com Dave@example.com"; strings.Join(got, " ") != want {
		t.Errorf("accounts = %v, want %s", got, want)
	}
}

func TestSetQuotas(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	day, month := int64(1000), int64(0)

	account, before, err := st.SetQuotas(ctx, ada.ID, auth.Quotas{TokensPerDay: &day, TokensPerMonth: &month})
	if err != nil || before != (auth.Quotas{}) {
		t.Fatalf("set = %v, before %+v; want the defaults before", err, before)
	}
	if account.ID != ada.ID || account.Email != ada.Email || *account.Quotas.TokensPerDay != 1000 || *account.Quotas.TokensPerMonth != 0 {
		t.Errorf("account after the change = %+v", account)
	}
	account, before, err = st.SetQuotas(ctx, ada.ID, auth.Quotas{})
	if err != nil || *before.TokensPerDay != 1000 || *before.TokensPerMonth != 0 {
		t.Fatalf("reset = %v, before %+v; want 1000 and 0 before", err, before)
	}
	if account.Quotas != (auth.Quotas{}) {
		t.Errorf("quotas after the reset = %+v, want the defaults", account.Quotas)
	}
	_, _, err = st.SetQuotas(ctx, uuid.New(), auth.Quotas{})
	wantCode(t, "quotas of an unknown user", err, core.NotFound)
}

func TestUsageByUser(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada, bob, eve := mustUser(t, st, "ada@example.com"), mustUser(t, st, "bob@example.com"), mustUser(t, st, "eve@example.com")
	since := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	until := since.AddDate(0, 1, 0)
	mustUsageRecord(t, tx, ada.ID, since, 10, 20)
	mustUsageRecord(t, tx, ada.ID, until.Add(-time.Microsecond), 1, 2)
	mustUsageRecord(t, tx, ada.ID, since.Add(-time.Microsecond), 100, 100) // last month
	mustUsageRecord(t, tx, ada.ID, until, 100, 100)                        // next month
	mustUsageRecord(t, tx, bob.ID, since.Add(time.Hour), 5, 0)
	mustUsageRecord(t, tx, eve.ID, since.Add(time.Hour), 7, 7) // not asked for

	usage, err := st.UsageByUser(ctx, []uuid.UUID{ada.ID, bob.ID, uuid.New()}, since, until)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uuid.UUID]auth.Usage{
		ada.ID: {Requests: 2, PromptTokens: 11, CompletionTokens: 22},
		bob.ID: {Requests: 1, PromptTokens: 5},
	}
	if len(usage) != len(want) || usage[ada.ID] != want[ada.ID] || usage[bob.ID] != want[bob.ID] {
		t.Errorf("usage = %+v, want %+v", usage, want)
	}
}

// mustUsageRecord stores a usage record of a model call, as the usage accounting does.
func mustUsageRecord(t *testing.T, tx pgx.Tx, userID uuid.UUID, at time.Time, prompt, completion int) {
	t.Helper()
	_, err := tx.Exec(context.Background(), `INSERT INTO usage_records (user_id, model, prompt_tokens, completion_tokens,
		duration_ms, outcome, created_at) VALUES ($1, 'tiny', $2, $3, 10, 'complete', $4)`, userID, prompt, completion, at)
	if err != nil {
		t.Fatal(err)
	}
}
