package main

import (
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

func TestKeys(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	u := newUser(t, a)
	u.mustLogin(t)

	out, stderr := u.mustRun(t, "", "keys", "create", "laptop")
	secret := strings.TrimSuffix(out, "\n")
	if !strings.HasPrefix(secret, "ds_") || strings.Contains(secret, "\n") || !strings.Contains(stderr, "only time") {
		t.Fatalf("keys create printed %q on stdout and %q on stderr, want the secret alone", out, stderr)
	}
	created := decodeJSON[client.CreatedAPIKey](t, first(u.mustRun(t, "", "--json", "keys", "create", "-expires", "24h", "ci")))
	if created.Name != "ci" || created.ExpiresAt == nil || time.Until(*created.ExpiresAt) < 23*time.Hour || !strings.HasPrefix(created.Secret, "ds_") {
		t.Errorf("keys create --json = %+v", created)
	}
	if _, _, code := u.run(t, "", "keys", "create", "-expires", "soon", "x"); code != 2 {
		t.Errorf("keys create with a bad -expires exited %d, want 2", code)
	}

	// Another person with the key only: no login, no saved session.
	k := newUser(t, a)
	k.env["DS_API_KEY"] = secret
	if out, _ := k.mustRun(t, "", "models"); !strings.Contains(out, "tiny:latest") {
		t.Errorf("models with the key = %q", out)
	}
	list, _ := k.mustRun(t, "", "keys", "list")
	if !strings.Contains(list, secret[:11]) || !strings.Contains(list, "laptop") || !strings.Contains(list, "ci") || strings.Contains(list, secret) {
		t.Errorf("keys list = %q, want both keys by prefix and name, no secret", list)
	}
	keys := decodeJSON[client.APIKeyList](t, first(k.mustRun(t, "", "--json", "keys", "list")))
	if len(keys.Items) != 2 {
		t.Fatalf("keys list --json = %+v", keys)
	}
	var laptop string
	for _, key := range keys.Items {
		if key.Name == "laptop" {
			laptop = key.Id.String()
		}
	}

	if out, _ := u.mustRun(t, "", "keys", "rm", laptop); !strings.Contains(out, "Revoked") {
		t.Errorf("keys rm printed %q", out)
	}
	_, stderr, code := k.run(t, "", "models")
	if code != 1 || !strings.Contains(stderr, "401") || !strings.Contains(stderr, "DS_API_KEY") {
		t.Errorf("models with a revoked key = %d, %q", code, stderr)
	}
}

// first returns the first of two strings, such as the standard output of mustRun.
func first(a, _ string) string { return a }
