package auth_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
)

func TestSetRole(t *testing.T) {
	st, _ := newStore(t)
	svc := newService(t, st, cheap, io.Discard)
	ctx := context.Background()
	ada := mustSignup(t, svc, "ada@example.com", auth.Client{})

	for _, step := range []struct {
		role        auth.Role
		wantChanged bool
		wantAdmin   bool
	}{
		{auth.RoleAdmin, true, true},
		{auth.RoleAdmin, false, true}, // idempotent
		{auth.RoleUser, true, false},
		{auth.RoleUser, false, false},
	} {
		u, changed, err := auth.SetRole(ctx, st, " ADA@example.com ", step.role, "a test")
		if err != nil || u.ID != ada.ID || changed != step.wantChanged {
			t.Fatalf("set role %s = %+v, changed %v, %v; want ada, changed %v", step.role, u, changed, err, step.wantChanged)
		}
		if admin, err := svc.IsAdmin(ctx, ada.ID); err != nil || admin != step.wantAdmin {
			t.Fatalf("after set role %s: admin = %v, %v; want %v", step.role, admin, err, step.wantAdmin)
		}
	}
	events := auditEvents(t, svc, ada.ID)
	if len(events) != 3 || events[0].Event != auth.EventAdminRevoked || events[1].Event != auth.EventAdminGranted ||
		events[0].Detail != "role admin -> user by a test" || events[1].Detail != "role user -> admin by a test" {
		t.Errorf("audit events = %+v; want the grant and the revoke after the signup, once each", events)
	}

	_, _, err := auth.SetRole(ctx, st, "nobody@example.com", auth.RoleAdmin, "a test")
	if core.ErrorCode(err) != core.NotFound {
		t.Errorf("set the role of an unknown email = %v, want not found", err)
	}
	if admin, err := svc.IsAdmin(ctx, uuid.New()); err != nil || admin {
		t.Errorf("an unknown user is admin = %v, %v; want false", admin, err)
	}
}

func TestAdminUsers(t *testing.T) {
	st, pool := newStore(t)
	svc := newService(t, st, cheap, io.Discard)
	now := time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC)
	auth.SetClock(svc, func() time.Time { return now })
	ctx := context.Background()
	var ids []uuid.UUID
	for _, email := range []string{"carol@example.com", "Bob@example.com", "alice@example.com"} {
		ids = append(ids, mustSignup(t, svc, email, auth.Client{}).ID)
	}
	carol, bob := ids[0], ids[1]
	month := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	mustUsageRecord(t, pool, carol, month, 10, 20)
	mustUsageRecord(t, pool, carol, now, 1, 2)
	mustUsageRecord(t, pool, carol, month.Add(-time.Second), 100, 100) // October

	var got []auth.AdminUser
	cursor := ""
	for range 3 {
		page, err := svc.Users(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Users...)
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if len(got) != 3 || got[0].Email != "alice@example.com" || got[1].Email != "Bob@example.com" || got[2].Email != "carol@example.com" {
		t.Fatalf("users = %+v, want alice, Bob and carol", got)
	}
	if want := (auth.Usage{Requests: 2, PromptTokens: 11, CompletionTokens: 22}); got[2].UsageThisMonth != want {
		t.Errorf("carol's usage this month = %+v, want %+v", got[2].UsageThisMonth, want)
	}
	if got[1].UsageThisMonth != (auth.Usage{}) || got[1].Role != auth.RoleUser || got[1].Quotas != (auth.Quotas{}) {
		t.Errorf("bob = %+v, want a user without usage, with the default quotas", got[1])
	}
	if _, err := svc.Users(ctx, "garbage!", 2); core.ErrorCode(err) != core.Malformed {
		t.Errorf("a cursor the service did not make = %v, want malformed", err)
	}

	admin := mustSignup(t, svc, "admin@example.com", auth.Client{})
	day := int64(5000)
	client := auth.Client{IP: "203.0.113.7", UserAgent: "test", RequestID: "req-1"}
	u, err := svc.SetQuotas(ctx, admin.ID, carol, auth.Quotas{TokensPerDay: &day}, client)
	if err != nil || u.ID != carol || *u.Quotas.TokensPerDay != 5000 || u.Quotas.TokensPerMonth != nil || u.UsageThisMonth.Requests != 2 {
		t.Fatalf("set quotas = %+v, %v", u, err)
	}
	events := auditEvents(t, svc, admin.ID)
	want := "user " + carol.String() + " (carol@example.com): tokens_per_day default -> 5000, tokens_per_month default -> default"
	if events[0].Event != auth.EventQuotasSet || events[0].Detail != want || events[0].IP != client.IP || events[0].RequestID != client.RequestID {
		t.Errorf("the admin's last audit event = %+v, want %s", events[0], want)
	}
	if events := auditEvents(t, svc, carol); events[0].Event == auth.EventQuotasSet {
		t.Errorf("the event went to the user's log: %+v", events[0])
	}

	negative := int64(-1)
	if _, err := svc.SetQuotas(ctx, admin.ID, bob, auth.Quotas{TokensPerMonth: &negative}, client); !isInvalidField(err, "tokens_per_month") {
		t.Errorf("a negative quota = %v, want invalid tokens_per_month", err)
	}
	if _, err := svc.SetQuotas(ctx, admin.ID, uuid.New(), auth.Quotas{}, client); core.ErrorCode(err) != core.NotFound {
		t.Errorf("quotas of an unknown user = %v, want not found", err)
	}
}

func isInvalidField(err error, field string) bool {
	e, ok := err.(*core.Error)
	return ok && e.Code == core.Invalid && e.Field == field
}

// auditEvents returns a user's audit events, newest first.
func auditEvents(t *testing.T, svc *auth.Service, userID uuid.UUID) []auth.AuditEvent {
	t.Helper()
	page, err := svc.AuditEvents(context.Background(), userID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return page.Events
}

// mustUsageRecord stores a usage record of a model call, as the usage accounting does.
func mustUsageRecord(t *testing.T, pool *pgxpool.Pool, userID uuid.UUID, at time.Time, prompt, completion int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO usage_records (user_id, model, prompt_tokens, completion_tokens,
		duration_ms, outcome, created_at) VALUES ($1, 'tiny', $2, $3, 10, 'complete', $4)`, userID, prompt, completion, at)
	if err != nil {
		t.Fatal(err)
	}
}
