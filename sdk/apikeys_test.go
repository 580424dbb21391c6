package sdk_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/sdk"
)

func TestAPIKey(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	ctx := context.Background()
	expires := time.Now().Add(time.Hour).Truncate(time.Second)
	key, err := s.CreateAPIKey(ctx, "script", &expires)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key.Secret, "ds_") || key.Prefix != key.Secret[:11] || key.Name != "script" || !key.ExpiresAt.Equal(expires) {
		t.Errorf("created = %+v", key)
	}
	if _, err := s.CreateAPIKey(ctx, "old", new(time.Now().Add(-time.Hour))); !hasStatus(err, http.StatusUnprocessableEntity) {
		t.Errorf("a key that expired already: %v, want 422", err)
	}

	// A client made with the key needs no login and never refreshes.
	transport := &countingTransport{next: a.HTTPClient(t).Transport}
	k, err := sdk.New(a.URL, sdk.WithAPIKey(key.Secret), sdk.WithHTTPClient(&http.Client{Transport: transport}))
	if err != nil {
		t.Fatal(err)
	}
	if me, err := k.Me(ctx); err != nil || me.Email != s.email {
		t.Fatalf("Me with the key = %+v, %v", me, err)
	}
	if models, err := k.Models(ctx); err != nil || len(models) == 0 {
		t.Errorf("Models with the key = %v, %v", models, err)
	}
	if resp, err := k.API().GetMeWithResponse(ctx); err != nil || resp.JSON200 == nil {
		t.Errorf("API().GetMe with the key = %v, %v", resp, err)
	}
	keys, err := k.APIKeys(ctx)
	if err != nil || len(keys) != 1 || keys[0].Id != key.Id || keys[0].Prefix != key.Prefix || keys[0].LastUsedAt == nil {
		t.Fatalf("APIKeys = %+v, %v; want the key, used", keys, err)
	}

	if err := s.DeleteAPIKey(ctx, key.Id); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAPIKey(ctx, key.Id); !sdk.IsNotFound(err) {
		t.Errorf("deleting it again: %v, want 404", err)
	}
	if _, err := k.Me(ctx); !sdk.IsUnauthorized(err) {
		t.Errorf("Me with a revoked key = %v, want 401", err)
	}
	if n := transport.refreshes.Load(); n != 0 {
		t.Errorf("the key's client refreshed %d times, want never", n)
	}
}

func hasStatus(err error, status int) bool {
	e, ok := errors.AsType[*sdk.Error](err)
	return ok && e.Status == status
}
