package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// ErrInvalidToken means a token is missing, malformed, expired, wrongly signed, or not ours.
var ErrInvalidToken = errors.New("invalid token")

// signingMethod is the only algorithm access tokens are signed and accepted with.
var signingMethod = jwt.SigningMethodHS256

// Claims are what a verified access token says.
type Claims struct {
	UserID    uuid.UUID
	TokenID   string
	ExpiresAt time.Time
}

// TokenConfig configures access tokens.
type TokenConfig struct {
	// Secret signs new tokens; PreviousSecrets still verify tokens signed before a rotation.
	Secret          string
	PreviousSecrets []string
	Issuer          string
	Audience        string
	TTL             time.Duration
}

// Tokens issues and verifies HS256 access tokens. Each key is named by a kid derived from it, so a token
// is verified with the key that signed it, and keys can rotate without invalidating live tokens.
type Tokens struct {
	signKID string
	keys    map[string][]byte
	cfg     TokenConfig
	parser  *jwt.Parser
	now     func() time.Time
}

// NewTokens returns Tokens for cfg.
func NewTokens(cfg TokenConfig) *Tokens {
	t := &Tokens{keys: make(map[string][]byte), cfg: cfg, now: time.Now}
	t.signKID = t.addKey(cfg.Secret)
	for _, s := range cfg.PreviousSecrets {
		t.addKey(s)
	}
	t.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{signingMethod.Alg()}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return t.now() }),
		jwt.WithLeeway(30*time.Second),
	)
	return t
}

// addKey registers a secret and returns its kid: the first 8 bytes of its SHA-256, in hex.
func (t *Tokens) addKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	kid := hex.EncodeToString(sum[:8])
	t.keys[kid] = []byte(secret)
	return kid
}

// TTL is the lifetime of new access tokens.
func (t *Tokens) TTL() time.Duration { return t.cfg.TTL }

// Issue signs a new access token for userID with the newest key.
func (t *Tokens) Issue(userID uuid.UUID) (string, error) {
	now := t.now()
	claims := jwt.RegisteredClaims{
		Issuer:    t.cfg.Issuer,
		Subject:   userID.String(),
		Audience:  jwt.ClaimStrings{t.cfg.Audience},
		ExpiresAt: jwt.NewNumericDate(now.Add(t.cfg.TTL)),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        rand.Text(),
	}
	token := jwt.NewWithClaims(signingMethod, claims)
	token.Header["kid"] = t.signKID
	signed, err := token.SignedString(t.keys[t.signKID])
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return signed, nil
}

// Verify checks an access token's signature, algorithm, issuer, audience, expiry, issue time, id and subject.
// Every failure is ErrInvalidToken, wrapped with the reason.
func (t *Tokens) Verify(raw string) (Claims, error) {
	var claims jwt.RegisteredClaims
	_, err := t.parser.ParseWithClaims(raw, &claims, func(token *jwt.Token) (any, error) {
		kid, _ := token.Header["kid"].(string)
		key, ok := t.keys[kid]
		if !ok {
			return nil, errors.New("unknown key id")
		}
		return key, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.ID == "" || claims.IssuedAt == nil {
		return Claims{}, fmt.Errorf("%w: jti and iat are required", ErrInvalidToken)
	}
	userID, err := uuid.Parse(claims.Subject)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: subject is not a user id", ErrInvalidToken)
	}
	return Claims{UserID: userID, TokenID: claims.ID, ExpiresAt: claims.ExpiresAt.Time}, nil
}

// newRefreshToken returns a random 256-bit refresh token and the SHA-256 that is stored instead of it.
func newRefreshToken() (token string, hash []byte) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashRefreshToken(token)
}

func hashRefreshToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
