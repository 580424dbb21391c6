package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
)

// TestAdminCommand runs `deepersensor admin` in-process on a fresh database, which it migrates itself.
func TestAdminCommand(t *testing.T) {
	url := dbtest.NewURL(t)
	t.Setenv("DS_DATABASE_URL", url)
	t.Setenv("DS_ENV", "development")
	ctx := context.Background()

	admin := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code = run(ctx, append([]string{"admin"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	// Before any account exists: the command applies the migrations, then finds nobody.
	code, out, errOut := admin("grant", "ada@example.com")
	if code != 1 || out != "" || !strings.Contains(errOut, `no account has the email "ada@example.com"`) {
		t.Fatalf("grant to an unknown email = %d, stdout %q, stderr %q; want 1 and a message", code, out, errOut)
	}

	pool, err := dbtest.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool)
	ada, err := st.CreateUser(ctx, "Ada@Example.com", "hash")
	if err != nil {
		t.Fatal(err)
	}

	for _, step := range []struct {
		args     []string
		wantOut  string
		wantRole auth.Role
	}{
		{[]string{"grant", "ada@example.com"}, "Ada@Example.com (" + ada.ID.String() + ") is an admin now\n", auth.RoleAdmin},
		{[]string{"grant", "ADA@example.com"}, "Ada@Example.com (" + ada.ID.String() + ") is an admin already\n", auth.RoleAdmin},
		{[]string{"revoke", "ada@example.com"}, "Ada@Example.com (" + ada.ID.String() + ") is no longer an admin\n", auth.RoleUser},
		{[]string{"revoke", "ada@example.com"}, "Ada@Example.com (" + ada.ID.String() + ") is not an admin\n", auth.RoleUser},
	} {
		code, out, errOut := admin(step.args...)
		if code != 0 || out != step.wantOut {
			t.Fatalf("admin %v = %d, stdout %q, stderr %q; want 0 and %q", step.args, code, out, errOut, step.wantOut)
		}
		if role, err := st.UserRole(ctx, ada.ID); err != nil || role != step.wantRole {
			t.Fatalf("after admin %v: role %q, %v; want %s", step.args, role, err, step.wantRole)
		}
	}

	events, err := st.AuditEvents(ctx, ada.ID, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 || events[0].Event != auth.EventAdminRevoked || events[1].Event != auth.EventAdminGranted ||
		!strings.HasPrefix(events[1].Detail, "role user -> admin by deepersensor admin, run by ") {
		t.Errorf("audit events = %+v; want one grant and one revoke, naming who ran the command", events)
	}

	for _, args := range [][]string{{}, {"grant"}, {"promote", "ada@example.com"}, {"grant", "a@example.com", "b@example.com"}} {
		if code, out, errOut := admin(args...); code != 2 || out != "" || !strings.Contains(errOut, "usage: deepersensor") {
			t.Errorf("admin %v = %d, stdout %q, stderr %q; want 2 and the usage", args, code, out, errOut)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"admins"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage: deepersensor") {
		t.Errorf("an unknown command = %d, stderr %q; want 2 and the usage", code, stderr.String())
	}
}
