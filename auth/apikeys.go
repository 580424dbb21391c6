package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// API keys are long-lived bearer secrets: APIKeyPrefix and 256 random bits (newSecret), stored as their
// SHA-256 only. A verified key is cached in memory, and so is briefly a key the database does not know, so
// that using a key costs no database round trip in the steady state; revoking a key or deleting its account
// goes through Revocations, which every request checks, so it holds at once on every instance.
const (
	// APIKeyPrefix starts every API key, so that a bearer token shows at once whether it is a key or a JWT.
	APIKeyPrefix = "ds_"
	// shownKeyLength is how much of a key may be shown: "ds_" and 8 characters, 48 of its 256 bits.
	shownKeyLength = len(APIKeyPrefix) + 8
	// maxKeyNameLength is the longest key name, in characters.
	maxKeyNameLength = 100

	// keyCacheSize bounds each of the caches of known and unknown keys.
	keyCacheSize = 10_000
	// keyCacheTTL is how long a verified key is trusted without asking the database again. It must stay
	// shorter than a revocation lasts (more than leeway+revocationSlack, 90s), so that no instance can still
	// hold a revoked key in its cache once the revocation is dropped.
	keyCacheTTL = time.Minute
	// unknownKeyTTL is how long a key that the database does not know is refused without asking it again.
	unknownKeyTTL = 30 * time.Second
	// keyUseInterval is how often at most a key's last_used_at is refreshed (its first use is written at
	// once) and how often the pending uses are written.
	keyUseInterval = time.Minute
	// keyUseWriteWait bounds each write of the pending uses.
	keyUseWriteWait = 5 * time.Second
)

// errUnknownKey refuses a key that is not stored: made up, revoked, or of a deleted account.
var errUnknownKey = fmt.Errorf("%w: unknown API key", ErrInvalidToken)

// Principal is whom an authenticated request acts for.
type Principal struct {
	UserID uuid.UUID
	// APIKeyID is the API key that authenticated the request, or uuid.Nil for an access token.
	APIKeyID uuid.UUID
}

// CreatedAPIKey is a new key with its secret, which is shown this once.
type CreatedAPIKey struct {
	APIKey
	Secret string
}

// Authenticate verifies a bearer token: an access token, whose session and user must not be revoked, or an
// API key, which must be stored, not expired, and neither it nor its user revoked. An access token, and a
// key that was verified within the last minute, cost no I/O. A key that neither cache knows is looked up
// in the database once admit, when not nil, lets it: admit can refuse a client that makes up too many keys,
// and its error is returned as it is. Every failure of the token is ErrInvalidToken, wrapped with the
// reason.
func (s *Service) Authenticate(ctx context.Context, token string, admit func(context.Context) error) (Principal, error) {
	if strings.HasPrefix(token, APIKeyPrefix) {
		return s.authenticateKey(ctx, token, admit)
	}
	claims, err := s.tokens.Verify(token)
	if err != nil {
		return Principal{}, err
	}
	if s.revocations.Revoked(claims) {
		return Principal{}, fmt.Errorf("%w: the session has ended", ErrInvalidToken)
	}
	return Principal{UserID: claims.UserID}, nil
}

// authenticateKey verifies an API key; see Authenticate.
func (s *Service) authenticateKey(ctx context.Context, secret string, admit func(context.Context) error) (Principal, error) {
	if !wellFormedKey(secret) { // not worth a lookup, nor a place in the cache of unknown keys
		return Principal{}, errUnknownKey
	}
	hash := string(hashSecret(secret))
	now := s.now()
	key, ok := s.knownKeys.get(hash, now)
	if !ok {
		if _, unknown := s.unknownKeys.get(hash, now); unknown {
			return Principal{}, errUnknownKey
		}
		if admit != nil {
			if err := admit(ctx); err != nil {
				return Principal{}, err
			}
		}
		var err error
		key, err = s.store.APIKeyByHash(ctx, []byte(hash))
		if core.ErrorCode(err) == core.NotFound {
			s.unknownKeys.put(hash, struct{}{}, now.Add(unknownKeyTTL))
			return Principal{}, errUnknownKey
		}
		if err != nil {
			return Principal{}, fmt.Errorf("look up API key: %w", err)
		}
		// The time of the lookup's start bounds the entry, so that it never outlives a revocation made while
		// the lookup ran.
		s.knownKeys.put(hash, key, now.Add(keyCacheTTL))
	}
	if key.ExpiresAt != nil && !now.Before(*key.ExpiresAt) {
		return Principal{}, fmt.Errorf("%w: the API key has expired", ErrInvalidToken)
	}
	if s.revocations.keyRevoked(key.UserID, key.ID) {
		return Principal{}, fmt.Errorf("%w: the API key is revoked", ErrInvalidToken)
	}
	s.keyUses.used(key, now)
	return Principal{UserID: key.UserID, APIKeyID: key.ID}, nil
}

// wellFormedKey reports whether secret can be a key made by newSecret: APIKeyPrefix and 43 characters of
// base64url.
func wellFormedKey(secret string) bool {
	rest := secret[len(APIKeyPrefix):]
	if len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// CreateAPIKey makes a key for a user, named for what it is for, which works until expiresAt (never, when
// nil). The name is trimmed and must be 1 to 100 characters without NUL; expiresAt must be in the future. A
// user may have at most ServiceConfig.MaxAPIKeys keys that have not expired.
func (s *Service) CreateAPIKey(ctx context.Context, userID uuid.UUID, name string, expiresAt *time.Time, client Client) (CreatedAPIKey, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return CreatedAPIKey{}, core.InvalidField("name", "must not be blank")
	case strings.ContainsRune(name, 0):
		return CreatedAPIKey{}, core.InvalidField("name", "must not contain NUL (U+0000)")
	case utf8.RuneCountInString(name) > maxKeyNameLength:
		return CreatedAPIKey{}, core.InvalidField("name", fmt.Sprintf("must be at most %d characters long", maxKeyNameLength))
	case expiresAt != nil && !expiresAt.After(s.now()):
		return CreatedAPIKey{}, core.InvalidField("expires_at", "must be in the future")
	}
	secret, hash := newSecret(APIKeyPrefix)
	key, err := s.store.CreateAPIKey(ctx, NewAPIKey{
		UserID: userID, Name: name, Prefix: secret[:shownKeyLength], SecretHash: hash, ExpiresAt: expiresAt,
	}, s.cfg.MaxAPIKeys)
	switch {
	case errors.Is(err, ErrAPIKeyLimit):
		return CreatedAPIKey{}, core.Errorf(core.Conflict,
			"you have %d API keys that have not expired, the most you may have; revoke one first", s.cfg.MaxAPIKeys)
	case core.ErrorCode(err) == core.NotFound:
		return CreatedAPIKey{}, fmt.Errorf("create API key: %w", ErrInvalidToken)
	case err != nil:
		return CreatedAPIKey{}, fmt.Errorf("create API key: %w", err)
	}
	s.audit(ctx, EventAPIKeyCreated, &userID, client, keyDetail(key))
	return CreatedAPIKey{APIKey: key, Secret: secret}, nil
}

// APIKeys lists a user's keys, newest first. A use this instance has not written yet shows already.
func (s *Service) APIKeys(ctx context.Context, userID uuid.UUID) ([]APIKey, error) {
	keys, err := s.store.APIKeys(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list API keys: %w", err)
	}
	for i := range keys {
		keys[i].LastUsedAt = s.keyUses.lastUse(keys[i])
	}
	return keys, nil
}

// RevokeAPIKey deletes a key of a user; it stops working at once, on every instance. Another user's key is a
// core.NotFound.
func (s *Service) RevokeAPIKey(ctx context.Context, userID, id uuid.UUID, client Client) error {
	key, err := s.store.DeleteAPIKey(ctx, userID, id)
	if err != nil {
		return fmt.Errorf("revoke API key: %w", err)
	}
	s.revocations.RevokeAPIKey(ctx, id)
	s.audit(ctx, EventAPIKeyRevoked, &userID, client, keyDetail(key))
	return nil
}

// keyDetail names a key in the audit log.
func keyDetail(k APIKey) string {
	return "key " + k.ID.String() + " " + k.Prefix
}

// Start runs the background work of the service until stop is called: it writes the uses of API keys to
// the database (see keyUses), and at the end those still pending.
func (s *Service) Start(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(keyUseInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				s.flushKeyUses(context.WithoutCancel(ctx))
				return
			case <-tick.C:
			case <-s.keyUses.kick:
			}
			s.flushKeyUses(ctx)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// flushKeyUses writes the pending uses of keys in one statement; when that fails they wait for the next.
func (s *Service) flushKeyUses(ctx context.Context) {
	batch := s.keyUses.take(s.now())
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, keyUseWriteWait)
	defer cancel()
	if err := s.store.TouchAPIKeys(ctx, batch); err != nil {
		s.logger.WarnContext(ctx, "last use of API keys not stored; retrying later", "keys", len(batch), "error", err)
		s.keyUses.putBack(batch)
	}
}

// keyUses collects when keys are used, for their last_used_at, off the request path: a key's first use is
// written at once (kick wakes the writer), later ones at most once per keyUseInterval, all of them in
// batches by Service.Start.
type keyUses struct {
	mu       sync.Mutex
	recorded map[uuid.UUID]time.Time // the last use recorded of each key, while it holds back the next
	pending  map[uuid.UUID]time.Time // the uses to write
	kick     chan struct{}
}

func newKeyUses() *keyUses {
	return &keyUses{
		recorded: make(map[uuid.UUID]time.Time), pending: make(map[uuid.UUID]time.Time), kick: make(chan struct{}, 1),
	}
}

// used records a use of key at now, unless one was recorded less than keyUseInterval before.
func (u *keyUses) used(key APIKey, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	last, seen := u.recorded[key.ID]
	if !seen && key.LastUsedAt != nil {
		last, seen = *key.LastUsedAt, true
	}
	if seen && now.Sub(last) < keyUseInterval {
		return
	}
	u.recorded[key.ID], u.pending[key.ID] = now, now
	if !seen {
		select {
		case u.kick <- struct{}{}:
		default: // a write is due already
		}
	}
}

// lastUse returns the later of key's stored last use and the last use recorded here.
func (u *keyUses) lastUse(key APIKey) *time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if t, ok := u.recorded[key.ID]; ok && (key.LastUsedAt == nil || t.After(*key.LastUsedAt)) {
		return &t
	}
	return key.LastUsedAt
}

// take returns the pending uses to write, and forgets the recorded uses too old to hold back another.
func (u *keyUses) take(now time.Time) map[uuid.UUID]time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	batch := u.pending
	u.pending = make(map[uuid.UUID]time.Time)
	maps.DeleteFunc(u.recorded, func(_ uuid.UUID, t time.Time) bool { return now.Sub(t) >= keyUseInterval })
	return batch
}

// putBack returns uses that could not be written to the pending ones, unless a later use of the key is.
func (u *keyUses) putBack(batch map[uuid.UUID]time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, t := range batch {
		if t.After(u.pending[id]) {
			u.pending[id] = t
		}
	}
}
