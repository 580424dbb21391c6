// Package auth manages accounts and sessions: sign-up, password login, access tokens (JWT), rotating
// refresh tokens with reuse detection, API keys, the revocation of sessions and keys on every instance, and
// account deletion; and roles: admins, made on the server's machine, see every account with its usage and
// set its quotas.
// It records every security event in the audit log, which each user can read.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// Errors the service returns for expected failures.
var (
	// ErrInvalidCredentials is the one answer for an unknown email and a wrong password alike.
	ErrInvalidCredentials = core.Errorf(core.InvalidCredentials, "invalid email or password")
	// ErrEmailTaken means an account with this email exists.
	ErrEmailTaken = core.Errorf(core.Conflict, "an account with this email exists")
)

// Audit event names.
const (
	EventSignup                 = "signup"
	EventLoginSuccess           = "login_success"
	EventLoginFailure           = "login_failure"
	EventRefreshReuse           = "refresh_reuse"
	EventLogout                 = "logout"
	EventAccountDeleted         = "account_deleted"
	EventAccountDeletionFailure = "account_deletion_failure"
	EventAPIKeyCreated          = "api_key_created"
	EventAPIKeyRevoked          = "api_key_revoked"
)

// Client describes where a request came from, for the audit log.
type Client struct {
	IP        string
	UserAgent string
	RequestID string
}

// TokenPair is what a login or a refresh returns.
type TokenPair struct {
	AccessToken  string
	RefreshToken string
	ExpiresIn    time.Duration
}

// Metrics observes security outcomes; any field may be nil.
type Metrics struct {
	Login        func(outcome string)
	RefreshReuse func()
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// RefreshTTL is the lifetime of each refresh token.
	RefreshTTL time.Duration
	// FamilyMaxAge is the absolute lifetime of a refresh-token family, however often it is rotated.
	FamilyMaxAge time.Duration
	// MaxAPIKeys is how many API keys that have not expired a user may have.
	MaxAPIKeys int
	Logger     *slog.Logger
	Metrics    Metrics
}

// Service implements accounts and sessions on a store.
type Service struct {
	store       Store
	hasher      *Hasher
	tokens      *Tokens
	revocations *Revocations
	cfg         ServiceConfig
	logger      *slog.Logger
	now         func() time.Time

	knownKeys   *lru[string, APIKey]   // verified API keys by the SHA-256 of their secret
	unknownKeys *lru[string, struct{}] // secret hashes that the database did not know
	keyUses     *keyUses
}

// NewService returns a Service that issues tokens with tokens and ends sessions in revocations.
func NewService(st Store, hasher *Hasher, tokens *Tokens, revocations *Revocations, cfg ServiceConfig) *Service {
	return &Service{
		store: st, hasher: hasher, tokens: tokens, revocations: revocations, cfg: cfg, logger: cfg.Logger, now: time.Now,
		knownKeys: newLRU[string, APIKey](keyCacheSize), unknownKeys: newLRU[string, struct{}](keyCacheSize),
		keyUses: newKeyUses(),
	}
}

// NormalizeEmail trims an email and checks that it is a plain address such as ada@example.com.
func NormalizeEmail(email string) (string, error) {
	email, err := trimEmail(email)
	if err != nil {
		return "", err
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") {
		return "", core.InvalidField("email", "must be a valid email address such as ada@example.com")
	}
	return email, nil
}

// Signup creates an account.
func (s *Service) Signup(ctx context.Context, email, password string, client Client) (User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return User{}, err
	}
	if err := checkPassword(password); err != nil {
		return User{}, err
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return User{}, fmt.Errorf("signup: %w", err)
	}
	user, err := s.store.CreateUser(ctx, email, hash)
	if core.ErrorCode(err) == core.Conflict {
		return User{}, ErrEmailTaken
	}
	if err != nil {
		return User{}, fmt.Errorf("signup: %w", err)
	}
	s.audit(ctx, EventSignup, &user.ID, client, "")
	return user, nil
}

// checkPassword enforces the length limits in characters, as the contract states them.
func checkPassword(password string) error {
	if n := len([]rune(password)); n < 8 || n > 128 {
		return core.InvalidField("password", "must be 8 to 128 characters long")
	}
	return nil
}

// trimEmail trims an email and refuses a NUL, which PostgreSQL cannot store or compare in text.
func trimEmail(email string) (string, error) {
	if strings.ContainsRune(email, 0) {
		return "", core.InvalidField("email", "must not contain NUL characters")
	}
	return strings.TrimSpace(email), nil
}

// Login checks a password and starts a new session: a new refresh-token family.
func (s *Service) Login(ctx context.Context, email, password string, client Client) (TokenPair, error) {
	email, err := trimEmail(email)
	if err != nil {
		return TokenPair{}, err
	}
	user, err := s.store.CredentialsByEmail(ctx, email)
	switch {
	case core.ErrorCode(err) == core.NotFound:
		if err := s.hasher.VerifyDummy(ctx, password); err != nil {
			return TokenPair{}, fmt.Errorf("login: %w", err)
		}
		return TokenPair{}, s.loginFailed(ctx, nil, client, "unknown email")
	case err != nil:
		return TokenPair{}, fmt.Errorf("login: %w", err)
	}
	match, rehash, err := s.hasher.Verify(ctx, password, user.PasswordHash)
	if err != nil {
		return TokenPair{}, fmt.Errorf("login: %w", err)
	}
	if !match {
		return TokenPair{}, s.loginFailed(ctx, &user.ID, client, "wrong password")
	}
	if rehash {
		s.rehash(ctx, user.ID, password)
	}
	pair, err := s.startSession(ctx, user.ID)
	if err != nil {
		return TokenPair{}, fmt.Errorf("login: %w", err)
	}
	s.audit(ctx, EventLoginSuccess, &user.ID, client, "")
	s.observeLogin("success")
	return pair, nil
}

func (s *Service) loginFailed(ctx context.Context, userID *uuid.UUID, client Client, reason string) error {
	s.logger.WarnContext(ctx, "login failed", "reason", reason, "ip", client.IP, "request_id", client.RequestID)
	s.audit(ctx, EventLoginFailure, userID, client, reason)
	s.observeLogin("failure")
	return ErrInvalidCredentials
}

// rehash stores a new hash of a correct password made with the current parameters. A failure is logged, not
// returned: the login itself succeeded.
func (s *Service) rehash(ctx context.Context, userID uuid.UUID, password string) {
	hash, err := s.hasher.Hash(ctx, password)
	if err == nil {
		err = s.store.UpdatePasswordHash(ctx, userID, hash)
	}
	if err != nil {
		s.logger.ErrorContext(ctx, "re-hash password", "user_id", userID, "error", err)
	}
}

// Refresh rotates a refresh token: the presented one is used up and a new pair is issued in the same family,
// unless the family is older than its maximum age. Presenting a token that was already used revokes its
// whole family and ends its access tokens.
func (s *Service) Refresh(ctx context.Context, refreshToken string, client Client) (TokenPair, error) {
	newToken, newHash := newSecret("")
	now := time.Now()
	old, err := s.store.RotateRefreshToken(ctx, hashSecret(refreshToken), newHash, now.Add(s.cfg.RefreshTTL), now.Add(-s.cfg.FamilyMaxAge))
	if notLive, ok := errors.AsType[*RefreshNotLiveError](err); ok {
		if t := notLive.Token; t != nil && t.UsedAt != nil && t.RevokedAt == nil {
			s.revokeReused(ctx, *t, client)
		}
		return TokenPair{}, ErrInvalidToken
	}
	if err != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", err)
	}
	access, err := s.tokens.Issue(old.UserID, old.FamilyID)
	if err != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", err)
	}
	return TokenPair{AccessToken: access, RefreshToken: newToken, ExpiresIn: s.tokens.TTL()}, nil
}

// revokeReused answers the reuse of a used refresh token: someone holds a stolen copy, so every token of the
// family dies, access tokens included.
func (s *Service) revokeReused(ctx context.Context, old RefreshToken, client Client) {
	s.revocations.RevokeSession(ctx, old.FamilyID)
	if _, err := s.store.RevokeRefreshTokenFamily(ctx, old.FamilyID); err != nil {
		s.logger.ErrorContext(ctx, "revoke reused refresh token family", "family_id", old.FamilyID, "error", err)
	}
	s.logger.WarnContext(ctx, "refresh token reused; family revoked",
		"user_id", old.UserID, "family_id", old.FamilyID, "ip", client.IP, "request_id", client.RequestID)
	s.audit(ctx, EventRefreshReuse, &old.UserID, client, "family "+old.FamilyID.String())
	if s.cfg.Metrics.RefreshReuse != nil {
		s.cfg.Metrics.RefreshReuse()
	}
}

// Logout ends the session of a refresh token: its family and its access tokens. An unknown token is not an
// error: the session is over anyway.
func (s *Service) Logout(ctx context.Context, refreshToken string, client Client) error {
	t, err := s.store.RefreshTokenByHash(ctx, hashSecret(refreshToken))
	if core.ErrorCode(err) == core.NotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if _, err := s.store.RevokeRefreshTokenFamily(ctx, t.FamilyID); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	s.revocations.RevokeSession(ctx, t.FamilyID)
	s.audit(ctx, EventLogout, &t.UserID, client, "")
	return nil
}

// User returns the account of a verified access token. The token of an account that is gone is invalid.
func (s *Service) User(ctx context.Context, id uuid.UUID) (User, error) {
	user, err := s.store.UserByID(ctx, id)
	if core.ErrorCode(err) == core.NotFound {
		return User{}, fmt.Errorf("user of token: %w", ErrInvalidToken)
	}
	return user, err
}

// startSession starts a refresh-token family and issues its first token pair.
func (s *Service) startSession(ctx context.Context, userID uuid.UUID) (TokenPair, error) {
	family := uuid.New()
	access, err := s.tokens.Issue(userID, family)
	if err != nil {
		return TokenPair{}, err
	}
	refresh, hash := newSecret("")
	expires := time.Now().Add(min(s.cfg.RefreshTTL, s.cfg.FamilyMaxAge))
	if err := s.store.CreateRefreshToken(ctx, family, userID, hash, expires); err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: s.tokens.TTL()}, nil
}

func (s *Service) observeLogin(outcome string) {
	if s.cfg.Metrics.Login != nil {
		s.cfg.Metrics.Login(outcome)
	}
}
