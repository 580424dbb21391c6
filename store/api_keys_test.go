package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/store"
)

// newKey returns a key of user to store, with a random secret hash.
func newKey(user uuid.UUID, name string, expiresAt *time.Time) auth.NewAPIKey {
	hash := sha256.Sum256([]byte(rand.Text()))
	return auth.NewAPIKey{UserID: user, Name: name, Prefix: "ds_" + name, SecretHash: hash[:], ExpiresAt: expiresAt}
}

func TestAPIKeys(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada, bob := mustUser(t, st, "ada@example.com"), mustUser(t, st, "bob@example.com")
	expires := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	first := newKey(ada.ID, "first", &expires)
	created, err := st.CreateAPIKey(ctx, first, 10)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == uuid.Nil || created.UserID != ada.ID || created.Name != "first" || created.Prefix != "ds_first" ||
		!created.ExpiresAt.Equal(expires) || created.LastUsedAt != nil || created.CreatedAt.IsZero() {
		t.Errorf("created = %+v", created)
	}
	var stored []byte
	if err := tx.QueryRow(ctx, "SELECT secret_hash FROM api_keys WHERE id = $1", created.ID).Scan(&stored); err != nil || !bytes.Equal(stored, first.SecretHash) {
		t.Errorf("stored hash = %x, %v; want %x", stored, err, first.SecretHash)
	}
	second, err := st.CreateAPIKey(ctx, newKey(ada.ID, "second", nil), 10)
	if err != nil {
		t.Fatal(err)
	}
	// In one transaction both were created at the same now().
	if _, err := tx.Exec(ctx, "UPDATE api_keys SET created_at = created_at - interval '1 hour' WHERE id = $1", created.ID); err != nil {
		t.Fatal(err)
	}

	found, err := st.APIKeyByHash(ctx, first.SecretHash)
	if err != nil || found.ID != created.ID {
		t.Errorf("by hash = %+v, %v", found, err)
	}
	_, err = st.APIKeyByHash(ctx, make([]byte, 32))
	wantCode(t, "unknown hash", err, core.NotFound)

	keys, err := st.APIKeys(ctx, ada.ID)
	if err != nil || len(keys) != 2 || keys[0].ID != second.ID || keys[1].ID != created.ID {
		t.Errorf("ada's keys = %+v, %v; want second, first", keys, err)
	}
	if keys, err := st.APIKeys(ctx, bob.ID); err != nil || len(keys) != 0 {
		t.Errorf("bob's keys = %+v, %v; want none", keys, err)
	}

	t0 := time.Now().Truncate(time.Microsecond)
	if err := st.TouchAPIKeys(ctx, map[uuid.UUID]time.Time{created.ID: t0, second.ID: t0}); err != nil {
		t.Fatal(err)
	}
	// An older time, as from a slower instance, does not move last_used_at back.
	if err := st.TouchAPIKeys(ctx, map[uuid.UUID]time.Time{created.ID: t0.Add(-time.Minute), second.ID: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	found, _ = st.APIKeyByHash(ctx, first.SecretHash)
	if found.LastUsedAt == nil || !found.LastUsedAt.Equal(t0) {
		t.Errorf("first last used %v, want %v", found.LastUsedAt, t0)
	}
	keys, _ = st.APIKeys(ctx, ada.ID)
	if keys[0].LastUsedAt == nil || !keys[0].LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("second last used %v, want %v", keys[0].LastUsedAt, t0.Add(time.Minute))
	}

	_, err = st.DeleteAPIKey(ctx, bob.ID, created.ID)
	wantCode(t, "deleting another user's key", err, core.NotFound)
	deleted, err := st.DeleteAPIKey(ctx, ada.ID, created.ID)
	if err != nil || deleted.ID != created.ID || deleted.Prefix != "ds_first" {
		t.Errorf("delete = %+v, %v", deleted, err)
	}
	_, err = st.DeleteAPIKey(ctx, ada.ID, created.ID)
	wantCode(t, "deleting it again", err, core.NotFound)

	_, err = st.CreateAPIKey(ctx, newKey(uuid.New(), "orphan", nil), 10)
	wantCode(t, "a key of no user", err, core.NotFound)

	if err := st.DeleteUser(ctx, ada.ID); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM api_keys WHERE user_id = $1", ada.ID).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d keys of a deleted user remain (%v)", left, err)
	}
}

func TestAPIKeyLimit(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	for _, name := range []string{"a", "b"} {
		if _, err := st.CreateAPIKey(ctx, newKey(ada.ID, name, nil), 2); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.CreateAPIKey(ctx, newKey(ada.ID, "c", nil), 2); !errors.Is(err, auth.ErrAPIKeyLimit) {
		t.Fatalf("a third key with a limit of 2: %v, want ErrAPIKeyLimit", err)
	}
	// Keys that have expired do not count.
	if _, err := tx.Exec(ctx, "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE name = 'a'"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateAPIKey(ctx, newKey(ada.ID, "c", nil), 2); err != nil {
		t.Errorf("a key in place of an expired one: %v", err)
	}
}

// TestAPIKeyLimitUnderConcurrency creates keys at once on separate connections: the limit holds.
func TestAPIKeyLimitUnderConcurrency(t *testing.T) {
	st := store.New(pool) // committed, so that the connections see each other's keys
	ctx := context.Background()
	user := mustUser(t, st, "racer-"+strings.ToLower(rand.Text())+"@example.com")
	t.Cleanup(func() { _ = st.DeleteUser(context.Background(), user.ID) })
	const tries, limit = 10, 3
	var wg sync.WaitGroup
	errs := make(chan error, tries)
	for range tries {
		wg.Go(func() {
			_, err := st.CreateAPIKey(ctx, newKey(user.ID, "k", nil), limit)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	created := 0
	for err := range errs {
		switch {
		case err == nil:
			created++
		case !errors.Is(err, auth.ErrAPIKeyLimit):
			t.Errorf("create: %v", err)
		}
	}
	if created != limit {
		t.Errorf("%d keys created at once, want the limit %d", created, limit)
	}
}
