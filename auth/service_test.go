package auth_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
)

var cheap = auth.Argon2Params{Memory: 1024, Time: 1, Parallelism: 1}

// newService returns a service on st with memory-only revocations, logging to logs.
func newService(t *testing.T, st auth.Store, params auth.Argon2Params, logs io.Writer) *auth.Service {
	t.Helper()
	return newServiceWith(t, st, params, auth.ServiceConfig{}, logs)
}

// newServiceWith is newService with the API key limit of cfg.
func newServiceWith(t *testing.T, st auth.Store, params auth.Argon2Params, cfg auth.ServiceConfig, logs io.Writer) *auth.Service {
	t.Helper()
	h, err := auth.NewHasher(params, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(auth.TokenConfig{
		Secret: testSecret, Issuer: "deepersensor", Audience: "deepersensor-api", TTL: time.Minute,
	})
	logger := slog.New(slog.NewTextHandler(logs, nil))
	revocations := auth.NewRevocations(auth.RevocationsConfig{Lifetime: tokens.Lifetime(), Logger: logger})
	return auth.NewService(st, h, tokens, revocations, auth.ServiceConfig{
		RefreshTTL: time.Hour, FamilyMaxAge: 90 * 24 * time.Hour, MaxAPIKeys: cfg.MaxAPIKeys, Logger: logger,
	})
}

// newStore returns a store on a fresh database, and the pool to arrange rows with.
func newStore(t *testing.T) (*store.Store, *pgxpool.Pool) {
	t.Helper()
	pool := dbtest.New(t)
	return store.New(pool), pool
}

func mustSignup(t *testing.T, svc *auth.Service, email string, client auth.Client) auth.User {
	t.Helper()
	u, err := svc.Signup(context.Background(), email, "password-1", client)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustLogin(t *testing.T, svc *auth.Service, email string) auth.TokenPair {
	t.Helper()
	pair, err := svc.Login(context.Background(), email, "password-1", auth.Client{})
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// wantAuthenticated checks whether an access token still authenticates.
func wantAuthenticated(t *testing.T, svc *auth.Service, what, token string, want bool) {
	t.Helper()
	_, err := svc.Authenticate(context.Background(), token, nil)
	if want && err != nil {
		t.Errorf("%s: %v, want authenticated", what, err)
	}
	if !want && !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("%s: %v, want ErrInvalidToken", what, err)
	}
}

// events returns a user's audit events, newest first, and fails on a second page.
func events(t *testing.T, svc *auth.Service, userID uuid.UUID) []auth.AuditEvent {
	t.Helper()
	page, err := svc.AuditEvents(context.Background(), userID, "", 100)
	if err != nil || page.Next != "" {
		t.Fatalf("audit events = %+v, %v", page, err)
	}
	return page.Events
}

func TestLoginRehashesWhenParametersChange(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	old := newService(t, st, cheap, io.Discard)
	user := mustSignup(t, old, "ada@example.com", auth.Client{})
	current := newService(t, st, auth.Argon2Params{Memory: 2048, Time: 2, Parallelism: 1}, io.Discard)
	mustLogin(t, current, "ada@example.com")
	after, err := st.CredentialsByEmail(ctx, user.Email)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(after.PasswordHash, "$m=2048,t=2,p=1$") {
		t.Errorf("hash after login = %q, want the current parameters", after.PasswordHash)
	}
	mustLogin(t, current, "ada@example.com")
}

func TestAuditLog(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	svc := newService(t, st, cheap, io.Discard)
	client := auth.Client{IP: "203.0.113.7", UserAgent: "test-agent/1.0", RequestID: "req-1"}

	user := mustSignup(t, svc, "ada@example.com", client)
	if _, err := svc.Login(ctx, "ada@example.com", "wrong-password", client); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	first, err := svc.Login(ctx, "ada@example.com", "password-1", client)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, first.RefreshToken, client); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, first.RefreshToken, client); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("reuse: %v", err)
	}
	second, err := svc.Login(ctx, "ada@example.com", "password-1", client)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Logout(ctx, second.RefreshToken, client); err != nil {
		t.Fatal(err)
	}

	// Pages of four, newest first.
	var got []auth.AuditEvent
	cursor := ""
	for range 3 {
		page, err := svc.AuditEvents(ctx, user.ID, cursor, 4)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Events...)
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	want := []string{auth.EventLogout, auth.EventLoginSuccess, auth.EventRefreshReuse, auth.EventLoginSuccess, auth.EventLoginFailure, auth.EventSignup}
	if len(got) != len(want) {
		t.Fatalf("audit log has %d events, want %v: %+v", len(got), want, got)
	}
	for i, e := range got {
		if e.Event != want[i] || e.IP != client.IP || e.UserAgent != client.UserAgent || e.RequestID != client.RequestID || e.CreatedAt.IsZero() {
			t.Errorf("event %d = %+v, want %s from %+v", i, e, want[i], client)
		}
		if strings.Contains(e.Detail, "password-1") || strings.Contains(e.Detail, first.RefreshToken) {
			t.Errorf("event %d detail leaks a secret: %q", i, e.Detail)
		}
	}
	for _, bad := range []string{"garbage!", "MA", "LTE"} { // not base64; "0"; "-1"
		if _, err := svc.AuditEvents(ctx, user.ID, bad, 4); core.ErrorCode(err) != core.Malformed {
			t.Errorf("cursor %q: %v, want a malformed cursor", bad, err)
		}
	}
}

func TestSessionsEnd(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	svc := newService(t, st, cheap, io.Discard)
	mustSignup(t, svc, "ada@example.com", auth.Client{})

	t.Run("logout", func(t *testing.T) {
		pair, other := mustLogin(t, svc, "ada@example.com"), mustLogin(t, svc, "ada@example.com")
		wantAuthenticated(t, svc, "before logout", pair.AccessToken, true)
		if err := svc.Logout(ctx, pair.RefreshToken, auth.Client{}); err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, svc, "after logout", pair.AccessToken, false)
		wantAuthenticated(t, svc, "another session after logout", other.AccessToken, true)
	})
	t.Run("refresh-token reuse", func(t *testing.T) {
		pair, other := mustLogin(t, svc, "ada@example.com"), mustLogin(t, svc, "ada@example.com")
		rotated, err := svc.Refresh(ctx, pair.RefreshToken, auth.Client{})
		if err != nil {
			t.Fatal(err)
		}
		wantAuthenticated(t, svc, "rotated", rotated.AccessToken, true)
		if _, err := svc.Refresh(ctx, pair.RefreshToken, auth.Client{}); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("reuse: %v", err)
		}
		wantAuthenticated(t, svc, "first of a reused family", pair.AccessToken, false)
		wantAuthenticated(t, svc, "rotated of a reused family", rotated.AccessToken, false)
		wantAuthenticated(t, svc, "another session after reuse", other.AccessToken, true)
	})
}

func TestRefreshFamilyMaxAge(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	svc := newService(t, st, cheap, io.Discard)
	user := mustSignup(t, svc, "ada@example.com", auth.Client{})
	pair := mustLogin(t, svc, "ada@example.com")
	// Rotated every day, the family still ends 90 days after the login.
	for _, age := range []string{"89 days 23 hours", "90 days 1 second"} {
		if _, err := pool.Exec(ctx, "UPDATE refresh_tokens SET family_started_at = now() - $1::interval", age); err != nil {
			t.Fatal(err)
		}
		next, err := svc.Refresh(ctx, pair.RefreshToken, auth.Client{})
		if age == "89 days 23 hours" {
			if err != nil {
				t.Fatalf("refresh of a family %s old: %v", age, err)
			}
			pair = next
			continue
		}
		if !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("refresh of a family %s old: %v, want ErrInvalidToken", age, err)
		}
	}
	for _, e := range events(t, svc, user.ID) {
		if e.Event == auth.EventRefreshReuse {
			t.Error("an expired family was taken for a stolen token")
		}
	}
}

func TestDeleteAccount(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	var logs bytes.Buffer
	svc := newService(t, st, cheap, &logs)
	client := auth.Client{IP: "203.0.113.7", UserAgent: "ua/1", RequestID: "req-del"}
	ada := mustSignup(t, svc, "ada@example.com", client)
	bob := mustSignup(t, svc, "bob@example.com", client)
	pairs := []auth.TokenPair{mustLogin(t, svc, "ada@example.com"), mustLogin(t, svc, "ada@example.com")}
	bobs := mustLogin(t, svc, "bob@example.com")

	if err := svc.DeleteAccount(ctx, ada.ID, "wrong-password", client); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("delete with a wrong password: %v, want ErrInvalidCredentials", err)
	}
	if got := events(t, svc, ada.ID); got[0].Event != auth.EventAccountDeletionFailure {
		t.Errorf("newest event after a refused deletion = %+v", got[0])
	}
	wantAuthenticated(t, svc, "after a refused deletion", pairs[0].AccessToken, true)

	if err := svc.DeleteAccount(ctx, ada.ID, "password-1", client); err != nil {
		t.Fatal(err)
	}
	for i, p := range pairs {
		wantAuthenticated(t, svc, "access token of a deleted account", p.AccessToken, false)
		if _, err := svc.Refresh(ctx, p.RefreshToken, client); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("refresh token %d of a deleted account: %v, want ErrInvalidToken", i, err)
		}
	}
	if _, err := svc.Login(ctx, "ada@example.com", "password-1", client); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("login to a deleted account: %v", err)
	}
	if err := svc.DeleteAccount(ctx, ada.ID, "password-1", client); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("deleting again: %v, want ErrInvalidToken", err)
	}
	wantAuthenticated(t, svc, "another account", bobs.AccessToken, true)
	if len(events(t, svc, bob.ID)) != 2 {
		t.Error("Bob's events changed")
	}

	var kept, deleted int
	err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE event <> 'account_deleted'),
		count(*) FILTER (WHERE event = 'account_deleted' AND request_id = 'req-del')
		FROM audit_log WHERE user_id IS NULL`).Scan(&kept, &deleted)
	// Ada's signup, two logins, the refused deletion, and the failed login after it; one deletion.
	if err != nil || kept != 5 || deleted != 1 {
		t.Errorf("events without a user = %d and %d account_deleted (%v), want 5 and 1", kept, deleted, err)
	}
	if !strings.Contains(logs.String(), "account deleted") {
		t.Error("the deletion was not logged")
	}
}

func TestEmailWithNUL(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	svc := newService(t, st, cheap, io.Discard)
	_, signupErr := svc.Signup(ctx, "ada\x00@example.com", "password-1", auth.Client{})
	_, loginErr := svc.Login(ctx, "ada@example.com\x00", "password-1", auth.Client{})
	for what, err := range map[string]error{"signup": signupErr, "login": loginErr} {
		if e, ok := errors.AsType[*core.Error](err); !ok || e.Code != core.Invalid || e.Field != "email" {
			t.Errorf("%s with a NUL in the email: %v, want invalid naming the email", what, err)
		}
	}
}

func TestAuditUserAgent(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	svc := newService(t, st, cheap, io.Discard)
	user := mustSignup(t, svc, "ada@example.com", auth.Client{})
	long := strings.Repeat("a", 511) + "é" + strings.Repeat("b", 60<<10) // é straddles byte 512
	tests := []struct{ name, sent, want string }{
		{"invalid UTF-8", "agent/\xff\xfe1.0", "agent/\uFFFD1.0"},
		{"NUL", "agent\x00/1.0", "agent/1.0"},
		{"60 KB", long, strings.Repeat("a", 511)},
		{"plain", "curl/8.5.0", "curl/8.5.0"},
	}
	for _, tt := range tests {
		if _, err := svc.Login(ctx, "ada@example.com", "wrong-password", auth.Client{UserAgent: tt.sent}); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Fatal(err)
		}
		got := events(t, svc, user.ID)[0]
		if got.Event != auth.EventLoginFailure || got.UserAgent != tt.want || !utf8.ValidString(got.UserAgent) || len(got.UserAgent) > 512 {
			t.Errorf("%s: stored User-Agent %q (%d bytes), want %q", tt.name, got.UserAgent, len(got.UserAgent), tt.want)
		}
	}
}

// failingAudit is a store whose audit log refuses every event.
type failingAudit struct{ *store.Store }

func (failingAudit) InsertAuditEvent(context.Context, auth.AuditEvent) error {
	return errors.New("audit log is read-only")
}

func TestAuditFailureIsLogged(t *testing.T) {
	st, _ := newStore(t)
	var logs bytes.Buffer
	svc := newService(t, failingAudit{st}, cheap, &logs)
	client := auth.Client{IP: "203.0.113.7", UserAgent: "agent/1.0", RequestID: "req-lost"}
	user := mustSignup(t, svc, "ada@example.com", client)
	for _, want := range []string{"level=ERROR", "audit_event.event=signup", "audit_event.user_id=" + user.ID.String(),
		"audit_event.ip=203.0.113.7", "audit_event.user_agent=agent/1.0", "audit_event.request_id=req-lost", "read-only"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks %q", logs.String(), want)
		}
	}
}
