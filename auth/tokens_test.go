package auth_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
)

const testSecret = "ssssssssssssssssssssssssssssssss"

func testTokens() *auth.Tokens {
	return auth.NewTokens(auth.TokenConfig{
		Secret: testSecret, PreviousSecrets: []string{strings.Repeat("p", 32)},
		Issuer: "deepersensor", Audience: "deepersensor-api", TTL: time.Minute,
	})
}

func TestIssueAndVerify(t *testing.T) {
	tokens := testTokens()
	user, session := uuid.New(), uuid.New()
	raw, err := tokens.Issue(user, session)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := tokens.Verify(raw)
	if err != nil {
		t.Fatal(err)
	}
	if claims.UserID != user || claims.SessionID != session || claims.TokenID == "" || time.Until(claims.ExpiresAt) > time.Minute {
		t.Errorf("claims = %+v, want user %s in session %s, expiring within the TTL", claims, user, session)
	}
	header := jwt.MapClaims{}
	parsed, _, err := jwt.NewParser().ParseUnverified(raw, header)
	if err != nil || parsed.Header["typ"] != "at+jwt" {
		t.Errorf("typ header = %v (%v), want at+jwt", parsed.Header["typ"], err)
	}
	if _, ok := header["exp"].(float64); !ok {
		t.Errorf("exp = %#v, want a number", header["exp"])
	}
}

// TestVerifyRemembersOnlyWhatHolds checks the cache of verified tokens: a token that verified once still
// expires on time, and a token that differs from it in one byte is checked on its own.
func TestVerifyRemembersOnlyWhatHolds(t *testing.T) {
	tokens := testTokens()
	now := time.Now()
	auth.SetTokensClock(tokens, func() time.Time { return now })
	raw, err := tokens.Issue(uuid.New(), uuid.New())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(raw); err != nil {
		t.Fatal(err)
	}
	// Verified again, it is neither parsed nor its signature computed: checking it afresh allocates some 60 times.
	if allocs := testing.AllocsPerRun(10, func() { _, _ = tokens.Verify(raw) }); allocs != 0 {
		t.Errorf("verifying a token verified before allocates %v times, want 0: it was checked afresh", allocs)
	}
	// A character inside the signature, changed: every bit of it counts.
	i := len(raw) - 10
	changed := raw[:i] + map[bool]string{true: "B", false: "A"}[raw[i] == 'A'] + raw[i+1:]
	tests := []struct {
		name  string
		token string
		after time.Duration // since the token was issued
		ok    bool
	}{
		{"again", raw, 0, true},
		{"signature changed", changed, 0, false},
		{"within the leeway after expiry", raw, time.Minute + 29*time.Second, true},
		{"expired beyond the leeway", raw, time.Minute + 31*time.Second, false},
	}
	issued := now
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = issued.Add(tt.after)
			_, err := tokens.Verify(tt.token)
			if tt.ok != (err == nil) {
				t.Errorf("Verify = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestVerifyRefuses signs tokens by hand with the right key, each wrong in one way.
func TestVerifyRefuses(t *testing.T) {
	tokens := testTokens()
	now := time.Now()
	valid := jwt.MapClaims{
		"iss": "deepersensor", "aud": "deepersensor-api", "sub": uuid.NewString(), "sid": uuid.NewString(),
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": "x",
	}
	sum := sha256.Sum256([]byte(testSecret))
	sign := func(typ any, change func(jwt.MapClaims)) string {
		claims := maps.Clone(valid)
		change(claims)
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		tok.Header["kid"] = hex.EncodeToString(sum[:8])
		if typ == nil {
			delete(tok.Header, "typ")
		} else {
			tok.Header["typ"] = typ
		}
		s, err := tok.SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	same := func(jwt.MapClaims) {}
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", sign("at+jwt", same), true},
		{"typ with the media type prefix, in other case", sign("application/AT+JWT", same), true},
		{"typ JWT", sign("JWT", same), false},
		{"no typ", sign(nil, same), false},
		{"typ not a string", sign(1, same), false},
		{"exp as a string", sign("at+jwt", func(c jwt.MapClaims) { c["exp"] = "9999999999" }), false},
		{"iat as a string", sign("at+jwt", func(c jwt.MapClaims) { c["iat"] = "1" }), false},
		{"lives longer than the TTL", sign("at+jwt", func(c jwt.MapClaims) { c["exp"] = now.Add(time.Minute + time.Second).Unix() }), false},
		{"lives as long as the TTL", sign("at+jwt", func(c jwt.MapClaims) { c["exp"] = now.Add(time.Minute).Unix() }), true},
		{"no sid", sign("at+jwt", func(c jwt.MapClaims) { delete(c, "sid") }), false},
		{"sid not a session id", sign("at+jwt", func(c jwt.MapClaims) { c["sid"] = "all" }), false},
		{"not yet valid", sign("at+jwt", func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokens.Verify(tt.token)
			if tt.ok && err != nil {
				t.Errorf("Verify = %v, want valid", err)
			}
			if !tt.ok && !errors.Is(err, auth.ErrInvalidToken) {
				t.Errorf("Verify = %v, want ErrInvalidToken", err)
			}
		})
	}
}

// BenchmarkVerifyAccessToken verifies a token seen before (a client's every request after its first) and
// tokens never seen before.
func BenchmarkVerifyAccessToken(b *testing.B) {
	tokens := testTokens()
	issue := func() string {
		raw, err := tokens.Issue(uuid.New(), uuid.New())
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}
	b.Run("seen before", func(b *testing.B) {
		raw := issue()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tokens.Verify(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new", func(b *testing.B) {
		raws := make([]string, b.N)
		for i := range raws {
			raws[i] = issue()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for _, raw := range raws {
			if _, err := tokens.Verify(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func FuzzVerify(f *testing.F) {
	tokens := testTokens()
	// Fixed ids: each fuzzing worker issues its own token, and may be given another worker's.
	user, session := uuid.MustParse("0b9e7c4e-6f0a-4c9a-9a43-5d1f2f7b8c11"), uuid.MustParse("6a1f0c55-3f5e-4f8e-bb5c-0d7c8d0f2a10")
	valid, err := tokens.Issue(user, session)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add(valid + "x")
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Fuzz(func(t *testing.T, raw string) {
		claims, err := tokens.Verify(raw)
		if err != nil {
			if !errors.Is(err, auth.ErrInvalidToken) {
				t.Fatalf("Verify(%q) error %v is not ErrInvalidToken", raw, err)
			}
			return
		}
		// Only tokens we signed verify (base64 may spell one another way); forging one is infeasible.
		if claims.UserID != user || claims.SessionID != session || claims.TokenID == "" {
			t.Fatalf("Verify accepted %q", raw)
		}
	})
}
