package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/deepersensor/deepersensor/core"
)

// ErrBusy means every password-hashing slot stayed taken for the whole wait: the caller should retry later.
var ErrBusy = &core.Error{Code: core.Busy, Message: "too many logins at once, retry shortly", RetryAfter: time.Second}

// Argon2Params are the cost parameters of Argon2id. OWASP's defaults are m=19456 KiB, t=2, p=1.
type Argon2Params struct {
	Memory      uint32 // KiB
	Time        uint32
	Parallelism uint8
}

const (
	saltLen = 16
	keyLen  = 32
)

// Hasher hashes and verifies passwords with Argon2id in PHC string format. Argon2id is memory-hard, so it
// bounds how many hashes run at once; a caller waits at most the configured time for a slot.
type Hasher struct {
	params Argon2Params
	slots  chan struct{}
	wait   time.Duration
	// onWait, when set, observes how long each caller waited for a slot.
	onWait func(time.Duration)
	// dummy is a hash of a random password, verified for unknown accounts so that they take as long as known ones.
	dummy string
}

// NewHasher returns a Hasher with the given parameters that runs at most concurrency hashes at once and lets
// a caller wait up to wait for a slot.
func NewHasher(params Argon2Params, concurrency int, wait time.Duration, onWait func(time.Duration)) (*Hasher, error) {
	h := &Hasher{params: params, slots: make(chan struct{}, concurrency), wait: wait, onWait: onWait}
	dummy, err := h.Hash(context.Background(), rand.Text())
	if err != nil {
		return nil, fmt.Errorf("hash dummy password: %w", err)
	}
	h.dummy = dummy
	return h, nil
}

// acquire takes a hashing slot, waiting at most h.wait.
func (h *Hasher) acquire(ctx context.Context) (release func(), err error) {
	start := time.Now()
	timer := time.NewTimer(h.wait)
	defer timer.Stop()
	select {
	case h.slots <- struct{}{}:
		if h.onWait != nil {
			h.onWait(time.Since(start))
		}
		return func() { <-h.slots }, nil
	case <-timer.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Hash returns the PHC string of password: $argon2id$v=19$m=..,t=..,p=..$salt$hash.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	release, err := h.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Parallelism, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Parallelism, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify reports whether password matches the PHC string encoded, and whether encoded was made with other
// parameters than the current ones, so that it should be re-hashed.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (match, needsRehash bool, err error) {
	params, salt, key, err := parsePHC(encoded)
	if err != nil {
		return false, false, err
	}
	release, err := h.acquire(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	got := argon2.IDKey([]byte(password), salt, params.Time, params.Memory, params.Parallelism, uint32(len(key)))
	match = subtle.ConstantTimeCompare(got, key) == 1
	return match, params != h.params, nil
}

// VerifyDummy spends the time of a verification on a password that matches nothing, so that a login with an
// unknown email takes as long as one with a wrong password.
func (h *Hasher) VerifyDummy(ctx context.Context, password string) error {
	_, _, err := h.Verify(ctx, password, h.dummy)
	return err
}

// parsePHC splits an Argon2id PHC string into its parameters, salt and key.
func parsePHC(encoded string) (Argon2Params, []byte, []byte, error) {
	var p Argon2Params
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errors.New("password hash is not an argon2id PHC string")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, fmt.Errorf("unsupported argon2 version %q", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Parallelism); err != nil {
		return p, nil, nil, fmt.Errorf("parse argon2 parameters %q: %w", parts[3], err)
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, fmt.Errorf("decode argon2 salt: %w", err)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil || len(key) == 0 {
		return p, nil, nil, errors.New("decode argon2 key")
	}
	return p, salt, key, nil
}
