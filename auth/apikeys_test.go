package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
)

// countingStore counts the lookups of API keys and records the uses written.
type countingStore struct {
	auth.Store

	mu      sync.Mutex
	lookups int
	touches []map[uuid.UUID]time.Time
}

func (s *countingStore) APIKeyByHash(ctx context.Context, hash []byte) (auth.APIKey, error) {
	s.mu.Lock()
	s.lookups++
	s.mu.Unlock()
	return s.Store.APIKeyByHash(ctx, hash)
}

func (s *countingStore) TouchAPIKeys(ctx context.Context, usedAt map[uuid.UUID]time.Time) error {
	s.mu.Lock()
	s.touches = append(s.touches, usedAt)
	s.mu.Unlock()
	return s.Store.TouchAPIKeys(ctx, usedAt)
}

func (s *countingStore) counts() (lookups, touches int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lookups, len(s.touches)
}

// clock is a settable time for the service.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// keyFixture is a service on a counting store with a settable clock, and a user of it.
type keyFixture struct {
	svc   *auth.Service
	st    *countingStore
	clock *clock
	user  auth.User
}

func newKeyFixture(t *testing.T, maxKeys int) keyFixture {
	t.Helper()
	st, _ := newStore(t)
	counting := &countingStore{Store: st}
	svc := newServiceWith(t, counting, cheap, auth.ServiceConfig{MaxAPIKeys: maxKeys}, io.Discard)
	c := &clock{now: time.Now()}
	auth.SetClock(svc, c.Now)
	return keyFixture{svc: svc, st: counting, clock: c, user: mustSignup(t, svc, "ada@example.com", auth.Client{})}
}

func (f keyFixture) mustCreate(t *testing.T, name string, expiresAt *time.Time) auth.CreatedAPIKey {
	t.Helper()
	key, err := f.svc.CreateAPIKey(context.Background(), f.user.ID, name, expiresAt, auth.Client{RequestID: "req-" + name})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// wantKey checks whether a key authenticates, as its user and itself.
func (f keyFixture) wantKey(t *testing.T, what string, key auth.CreatedAPIKey, want bool) {
	t.Helper()
	p, err := f.svc.Authenticate(context.Background(), key.Secret, nil)
	switch {
	case want && (err != nil || p != auth.Principal{UserID: key.UserID, APIKeyID: key.ID}):
		t.Errorf("%s: %+v, %v; want the key's user and id", what, p, err)
	case !want && !errors.Is(err, auth.ErrInvalidToken):
		t.Errorf("%s: %+v, %v; want ErrInvalidToken", what, p, err)
	}
}

var secretFormat = regexp.MustCompile(`^ds_[A-Za-z0-9_-]{43}$`)

func TestAPIKeyLifecycle(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	svc := newServiceWith(t, st, cheap, auth.ServiceConfig{MaxAPIKeys: 50}, io.Discard)
	client := auth.Client{IP: "203.0.113.7", UserAgent: "ua/1", RequestID: "req-key"}
	ada := mustSignup(t, svc, "ada@example.com", client)

	key, err := svc.CreateAPIKey(ctx, ada.ID, "  laptop  ", nil, client)
	if err != nil {
		t.Fatal(err)
	}
	if !secretFormat.MatchString(key.Secret) || key.Prefix != key.Secret[:11] || key.Name != "laptop" || key.UserID != ada.ID {
		t.Errorf("created = %+v, want a ds_ secret of 256 bits, its first 11 characters as prefix, the trimmed name", key)
	}
	other, err := svc.CreateAPIKey(ctx, ada.ID, "ci", nil, client)
	if err != nil || other.Secret == key.Secret {
		t.Fatalf("second key = %+v, %v", other, err)
	}

	// Only the SHA-256 of the secret is stored, and nothing shows the secret again.
	var hash []byte
	var rowText string
	if err := pool.QueryRow(ctx, "SELECT secret_hash, k::text FROM api_keys AS k WHERE id = $1", key.ID).Scan(&hash, &rowText); err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256([]byte(key.Secret)); !bytes.Equal(hash, want[:]) {
		t.Errorf("stored hash %x, want the SHA-256 of the secret %x", hash, want)
	}
	if strings.Contains(rowText, key.Secret[11:]) {
		t.Errorf("the stored row %s holds the secret", rowText)
	}
	keys, err := svc.APIKeys(ctx, ada.ID)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys = %+v, %v", keys, err)
	}

	p, err := svc.Authenticate(ctx, key.Secret, nil)
	if err != nil || p.UserID != ada.ID || p.APIKeyID != key.ID {
		t.Fatalf("authenticate with the key = %+v, %v", p, err)
	}
	if err := svc.RevokeAPIKey(ctx, uuid.New(), key.ID, client); core.ErrorCode(err) != core.NotFound {
		t.Errorf("revoking as another user: %v, want not found", err)
	}
	if err := svc.RevokeAPIKey(ctx, ada.ID, key.ID, client); err != nil {
		t.Fatal(err)
	}
	// Revoked at once, although the key is cached.
	if _, err := svc.Authenticate(ctx, key.Secret, nil); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a revoked key: %v, want ErrInvalidToken", err)
	}
	if _, err := svc.Authenticate(ctx, other.Secret, nil); err != nil {
		t.Errorf("the other key after a revocation: %v", err)
	}

	got := events(t, svc, ada.ID)
	if got[0].Event != auth.EventAPIKeyRevoked || got[1].Event != auth.EventAPIKeyCreated || got[2].Event != auth.EventAPIKeyCreated {
		t.Fatalf("newest events = %+v", got[:3])
	}
	for _, e := range []auth.AuditEvent{got[0], got[2]} {
		if !strings.Contains(e.Detail, key.ID.String()) || !strings.Contains(e.Detail, key.Prefix) || strings.Contains(e.Detail, key.Secret) {
			t.Errorf("%s detail %q, want the key's id and prefix, not its secret", e.Event, e.Detail)
		}
		if e.RequestID != "req-key" || e.IP != "203.0.113.7" {
			t.Errorf("%s event = %+v", e.Event, e)
		}
	}
}

func TestAPIKeyValidation(t *testing.T) {
	f := newKeyFixture(t, 2)
	past, future := f.clock.Now().Add(-time.Second), f.clock.Now().Add(time.Hour)
	now := f.clock.Now()
	tests := []struct {
		name      string
		keyName   string
		expiresAt *time.Time
		code      core.Code
		field     string
	}{
		{"blank name", " \t", nil, core.Invalid, "name"},
		{"NUL in the name", "a\x00b", nil, core.Invalid, "name"},
		{"name of 101 characters", strings.Repeat("é", 101), nil, core.Invalid, "name"},
		{"expired already", "old", &past, core.Invalid, "expires_at"},
		{"expiring now", "now", &now, core.Invalid, "expires_at"},
		{"name of 100 characters", strings.Repeat("é", 100), &future, "", ""},
		{"no expiry", "forever", nil, "", ""},
		{"one more than the limit", "third", nil, core.Conflict, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.CreateAPIKey(context.Background(), f.user.ID, tt.keyName, tt.expiresAt, auth.Client{})
			if core.ErrorCode(err) != tt.code {
				t.Fatalf("error %v, want code %q", err, tt.code)
			}
			if e, ok := errors.AsType[*core.Error](err); ok && e.Field != tt.field {
				t.Errorf("field %q, want %q", e.Field, tt.field)
			}
		})
	}
	if _, err := f.svc.CreateAPIKey(context.Background(), uuid.New(), "gone", nil, auth.Client{}); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("a key for an account that is gone: %v, want ErrInvalidToken", err)
	}
}

func TestAPIKeyCache(t *testing.T) {
	f := newKeyFixture(t, 50)
	ctx := context.Background()
	key := f.mustCreate(t, "laptop", nil)

	f.wantKey(t, "first use", key, true)
	f.wantKey(t, "second use", key, true)
	if lookups, _ := f.st.counts(); lookups != 1 {
		t.Errorf("two uses of a key made %d lookups, want 1", lookups)
	}
	f.clock.advance(time.Minute)
	f.wantKey(t, "a minute later", key, true)
	if lookups, _ := f.st.counts(); lookups != 2 {
		t.Errorf("a use after the cache's minute made %d lookups in all, want 2", lookups)
	}

	// An unknown key is looked up once, then refused from memory for a while; admit is asked before each lookup.
	unknown := "ds_" + strings.Repeat("A", 43)
	admitted := 0
	admit := func(context.Context) error { admitted++; return nil }
	for range 3 {
		if _, err := f.svc.Authenticate(ctx, unknown, admit); !errors.Is(err, auth.ErrInvalidToken) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if lookups, _ := f.st.counts(); lookups != 3 || admitted != 1 {
		t.Errorf("three uses of an unknown key made %d lookups in all (want 3) and asked admit %d times (want 1)", lookups, admitted)
	}
	f.clock.advance(31 * time.Second)
	refused := core.Errorf(core.RateLimited, "slow down")
	if _, err := f.svc.Authenticate(ctx, unknown, func(context.Context) error { return refused }); !errors.Is(err, refused) {
		t.Errorf("a lookup that admit refuses: %v, want its error", err)
	}
	if lookups, _ := f.st.counts(); lookups != 3 {
		t.Errorf("a refused lookup reached the store: %d lookups", lookups)
	}
	// A key that newSecret cannot have made is not looked up at all.
	for _, malformed := range []string{"ds_", "ds_short", "ds_" + strings.Repeat("*", 43), "ds_" + strings.Repeat("A", 44)} {
		if _, err := f.svc.Authenticate(ctx, malformed, admit); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("malformed key %q: %v, want ErrInvalidToken", malformed, err)
		}
	}
	if lookups, _ := f.st.counts(); lookups != 3 {
		t.Errorf("malformed keys were looked up: %d lookups in all, want 3", lookups)
	}
	// A cached key is not looked up, so admit is not asked.
	if _, err := f.svc.Authenticate(ctx, key.Secret, func(context.Context) error { return refused }); err != nil {
		t.Errorf("a cached key with a refusing admit: %v", err)
	}
}

func TestAPIKeyExpiry(t *testing.T) {
	f := newKeyFixture(t, 50)
	expires := f.clock.Now().Add(30 * time.Second)
	key := f.mustCreate(t, "short", &expires)
	f.wantKey(t, "before its expiry", key, true)
	f.clock.advance(30 * time.Second)
	f.wantKey(t, "at its expiry, although cached", key, false)
	f.clock.advance(time.Hour)
	f.wantKey(t, "an hour after its expiry", key, false)
}

func TestAPIKeysOfADeletedAccount(t *testing.T) {
	f := newKeyFixture(t, 50)
	key := f.mustCreate(t, "laptop", nil)
	f.wantKey(t, "before the deletion", key, true)
	if err := f.svc.DeleteAccount(context.Background(), f.user.ID, "password-1", auth.Client{}); err != nil {
		t.Fatal(err)
	}
	f.wantKey(t, "cached, after the deletion", key, false)
	f.clock.advance(2 * time.Minute)
	f.wantKey(t, "looked up again, after the deletion", key, false)
}

func TestAPIKeyLastUsed(t *testing.T) {
	f := newKeyFixture(t, 50)
	ctx := context.Background()
	key := f.mustCreate(t, "laptop", nil)
	lastUsed := func() *time.Time {
		t.Helper()
		keys, err := f.svc.APIKeys(ctx, f.user.ID)
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys = %+v, %v", keys, err)
		}
		return keys[0].LastUsedAt
	}
	if lastUsed() != nil {
		t.Fatal("an unused key has a last use")
	}
	first := f.clock.Now()
	f.wantKey(t, "first use", key, true)
	if got := lastUsed(); got == nil || !got.Equal(first) {
		t.Errorf("last use before the write = %v, want %v at once", got, first)
	}
	auth.FlushKeyUses(f.svc)
	if _, touches := f.st.counts(); touches != 1 {
		t.Fatalf("the first use made %d writes, want 1", touches)
	}

	for range 3 { // within the minute: nothing more to write
		f.clock.advance(15 * time.Second)
		f.wantKey(t, "use within the minute", key, true)
		auth.FlushKeyUses(f.svc)
	}
	if _, touches := f.st.counts(); touches != 1 {
		t.Errorf("uses within a minute made %d writes in all, want 1", touches)
	}
	f.clock.advance(16 * time.Second)
	later := f.clock.Now()
	f.wantKey(t, "use after a minute", key, true)
	auth.FlushKeyUses(f.svc)
	if _, touches := f.st.counts(); touches != 2 {
		t.Errorf("a use after a minute made %d writes in all, want 2", touches)
	}
	stored, err := f.st.APIKeyByHash(ctx, sha(key.Secret))
	if err != nil || stored.LastUsedAt == nil || !stored.LastUsedAt.Equal(later.Truncate(time.Microsecond)) {
		t.Errorf("stored last use = %v (%v), want %v", stored.LastUsedAt, err, later)
	}
}

// TestAPIKeyUsesFlushedAtStop checks that stopping the service writes the uses still pending.
func TestAPIKeyUsesFlushedAtStop(t *testing.T) {
	f := newKeyFixture(t, 50)
	stop := f.svc.Start(context.Background())
	key := f.mustCreate(t, "laptop", nil)
	f.wantKey(t, "first use", key, true)
	f.clock.advance(2 * time.Minute)
	f.wantKey(t, "a later use", key, true) // pending until the next tick, a minute away
	stop()
	stored, err := f.st.APIKeyByHash(context.Background(), sha(key.Secret))
	if want := f.clock.Now().Truncate(time.Microsecond); err != nil || stored.LastUsedAt == nil || !stored.LastUsedAt.Equal(want) {
		t.Errorf("stored last use after stop = %v (%v), want %v", stored.LastUsedAt, err, want)
	}
}

func sha(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}
