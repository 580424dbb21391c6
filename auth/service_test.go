package auth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
)

func newService(t *testing.T, st *store.Store, params auth.Argon2Params) *auth.Service {
	t.Helper()
	h, err := auth.NewHasher(params, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(auth.TokenConfig{
		Secret: strings.Repeat("s", 32), Issuer: "deepersensor", Audience: "deepersensor-api", TTL: time.Minute,
	})
	return auth.NewService(st, h, tokens, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)), auth.Metrics{})
}

func TestLoginRehashesWhenParametersChange(t *testing.T) {
	st := store.New(dbtest.New(t))
	ctx := context.Background()
	old := newService(t, st, auth.Argon2Params{Memory: 1024, Time: 1, Parallelism: 1})
	user, err := old.Signup(ctx, "ada@example.com", "password-1", auth.Client{})
	if err != nil {
		t.Fatal(err)
	}
	current := newService(t, st, auth.Argon2Params{Memory: 2048, Time: 2, Parallelism: 1})
	if _, err := current.Login(ctx, "ada@example.com", "password-1", auth.Client{}); err != nil {
		t.Fatal(err)
	}
	after, err := st.UserByID(ctx, user.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(after.PasswordHash, "$m=2048,t=2,p=1$") {
		t.Errorf("hash after login = %q, want the current parameters", after.PasswordHash)
	}
	if _, err := current.Login(ctx, "ada@example.com", "password-1", auth.Client{}); err != nil {
		t.Errorf("login with the re-hashed password: %v", err)
	}
}

func TestAuditLog(t *testing.T) {
	st := store.New(dbtest.New(t))
	ctx := context.Background()
	svc := newService(t, st, auth.Argon2Params{Memory: 1024, Time: 1, Parallelism: 1})
	client := auth.Client{IP: "203.0.113.7", UserAgent: "test-agent/1.0", RequestID: "req-1"}

	user, err := svc.Signup(ctx, "ada@example.com", "password-1", client)
	if err != nil {
		t.Fatal(err)
	}
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

	events, err := st.AuditEventsByUser(ctx, user.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{auth.EventSignup, auth.EventLoginFailure, auth.EventLoginSuccess, auth.EventRefreshReuse, auth.EventLoginSuccess, auth.EventLogout}
	if len(events) != len(want) {
		t.Fatalf("audit log has %d events, want %v: %+v", len(events), want, events)
	}
	for i, e := range events {
		if e.Event != want[i] || e.IP != client.IP || e.UserAgent != client.UserAgent || e.RequestID != client.RequestID || e.CreatedAt.IsZero() {
			t.Errorf("event %d = %+v, want %s from %+v", i, e, want[i], client)
		}
		if strings.Contains(e.Detail, "password-1") || strings.Contains(e.Detail, first.RefreshToken) {
			t.Errorf("event %d detail leaks a secret: %q", i, e.Detail)
		}
	}
}
