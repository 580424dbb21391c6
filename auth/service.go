// Package auth manages accounts and sessions: sign-up, password login, access tokens (JWT) and rotating
// refresh tokens with reuse detection. It records every security event in the audit log.
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

	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/validation"
)

// Errors the service returns for expected failures.
var (
	// ErrInvalidCredentials is the one answer for an unknown email and a wrong password alike.
	ErrInvalidCredentials = errors.New("invalid email or password")
	// ErrEmailTaken means an account with this email exists.
	ErrEmailTaken = errors.New("an account with this email exists")
)

// Audit event names.
const (
	EventSignup       = "signup"
	EventLoginSuccess = "login_success"
	EventLoginFailure = "login_failure"
	EventRefreshReuse = "refresh_reuse"
	EventLogout       = "logout"
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

// Service implements accounts and sessions on a store.
type Service struct {
	store      *store.Store
	hasher     *Hasher
	tokens     *Tokens
	refreshTTL time.Duration
	logger     *slog.Logger
	metrics    Metrics
}

// NewService returns a Service.
func NewService(st *store.Store, hasher *Hasher, tokens *Tokens, refreshTTL time.Duration, logger *slog.Logger, metrics Metrics) *Service {
	return &Service{store: st, hasher: hasher, tokens: tokens, refreshTTL: refreshTTL, logger: logger, metrics: metrics}
}

// Tokens returns the access-token issuer and verifier.
func (s *Service) Tokens() *Tokens { return s.tokens }

// NormalizeEmail trims an email and checks that it is a plain address such as ada@example.com.
func NormalizeEmail(email string) (string, error) {
	email = strings.TrimSpace(email)
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") {
		return "", validation.New("email", "must be a valid email address such as ada@example.com")
	}
	return email, nil
}

// Signup creates an account.
func (s *Service) Signup(ctx context.Context, email, password string, client Client) (store.User, error) {
	email, err := NormalizeEmail(email)
	if err != nil {
		return store.User{}, err
	}
	if err := checkPassword(password); err != nil {
		return store.User{}, err
	}
	hash, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return store.User{}, fmt.Errorf("signup: %w", err)
	}
	user, err := s.store.CreateUser(ctx, email, hash)
	if errors.Is(err, store.ErrConflict) {
		return store.User{}, ErrEmailTaken
	}
	if err != nil {
		return store.User{}, fmt.Errorf("signup: %w", err)
	}
	s.audit(ctx, EventSignup, &user.ID, client, "")
	return user, nil
}

// checkPassword enforces the length limits in characters, as the contract states them.
func checkPassword(password string) error {
	if n := len([]rune(password)); n < 8 || n > 128 {
		return validation.New("password", "must be 8 to 128 characters long")
	}
	return nil
}

// Login checks a password and starts a new session: a new refresh-token family.
func (s *Service) Login(ctx context.Context, email, password string, client Client) (TokenPair, error) {
	email = strings.TrimSpace(email)
	user, err := s.store.UserByEmail(ctx, email)
	switch {
	case errors.Is(err, store.ErrNotFound):
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
	pair, err := s.issue(ctx, user.ID, uuid.New())
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

// Refresh rotates a refresh token: the presented one is used up and a new pair is issued in the same family.
// Presenting a token that was already used revokes its whole family.
func (s *Service) Refresh(ctx context.Context, refreshToken string, client Client) (TokenPair, error) {
	newToken, newHash := newRefreshToken()
	old, err := s.store.RotateRefreshToken(ctx, hashRefreshToken(refreshToken), newHash, time.Now().Add(s.refreshTTL))
	if errors.Is(err, store.ErrNotFound) {
		if old.UsedAt != nil && old.RevokedAt == nil {
			s.revokeReused(ctx, old, client)
		}
		return TokenPair{}, ErrInvalidToken
	}
	if err != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", err)
	}
	access, err := s.tokens.Issue(old.UserID)
	if err != nil {
		return TokenPair{}, fmt.Errorf("refresh: %w", err)
	}
	return TokenPair{AccessToken: access, RefreshToken: newToken, ExpiresIn: s.tokens.TTL()}, nil
}

// revokeReused answers the reuse of a used refresh token: someone holds a stolen copy, so every token of the
// family dies.
func (s *Service) revokeReused(ctx context.Context, old store.RefreshToken, client Client) {
	if _, err := s.store.RevokeRefreshTokenFamily(ctx, old.FamilyID); err != nil {
		s.logger.ErrorContext(ctx, "revoke reused refresh token family", "family_id", old.FamilyID, "error", err)
	}
	s.logger.WarnContext(ctx, "refresh token reused; family revoked",
		"user_id", old.UserID, "family_id", old.FamilyID, "ip", client.IP, "request_id", client.RequestID)
	s.audit(ctx, EventRefreshReuse, &old.UserID, client, "family "+old.FamilyID.String())
	if s.metrics.RefreshReuse != nil {
		s.metrics.RefreshReuse()
	}
}

// Logout revokes the family of a refresh token. An unknown token is not an error: the session is over anyway.
func (s *Service) Logout(ctx context.Context, refreshToken string, client Client) error {
	t, err := s.store.RefreshTokenByHash(ctx, hashRefreshToken(refreshToken))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	if _, err := s.store.RevokeRefreshTokenFamily(ctx, t.FamilyID); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	s.audit(ctx, EventLogout, &t.UserID, client, "")
	return nil
}

// User returns the account of a verified access token.
func (s *Service) User(ctx context.Context, id uuid.UUID) (store.User, error) {
	return s.store.UserByID(ctx, id)
}

// issue creates an access token and a refresh token of family.
func (s *Service) issue(ctx context.Context, userID, family uuid.UUID) (TokenPair, error) {
	access, err := s.tokens.Issue(userID)
	if err != nil {
		return TokenPair{}, err
	}
	refresh, hash := newRefreshToken()
	if err := s.store.CreateRefreshToken(ctx, family, userID, hash, time.Now().Add(s.refreshTTL)); err != nil {
		return TokenPair{}, err
	}
	return TokenPair{AccessToken: access, RefreshToken: refresh, ExpiresIn: s.tokens.TTL()}, nil
}

// audit records a security event. The audit log must not turn a good request into a failure, so an error is
// logged rather than returned.
func (s *Service) audit(ctx context.Context, event string, userID *uuid.UUID, client Client, detail string) {
	err := s.store.InsertAuditEvent(context.WithoutCancel(ctx), store.AuditEvent{
		Event: event, UserID: userID, IP: client.IP, UserAgent: client.UserAgent, RequestID: client.RequestID, Detail: detail,
	})
	if err != nil {
		s.logger.ErrorContext(ctx, "write audit event", "event", event, "error", err)
	}
}

func (s *Service) observeLogin(outcome string) {
	if s.metrics.Login != nil {
		s.metrics.Login(outcome)
	}
}
