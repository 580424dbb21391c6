package auth

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// User is an account as the rest of the service sees it: never with its password hash.
type User struct {
	ID        uuid.UUID
	Email     string
	CreatedAt time.Time
}

// Credentials are an account with the hash its password is checked against.
type Credentials struct {
	User
	PasswordHash string
}

// RefreshToken is the stored state of one refresh token; the token itself is never stored, only its hash.
type RefreshToken struct {
	FamilyID uuid.UUID
	UserID   uuid.UUID
	// FamilyStartedAt is when the family's first token was issued, at login; rotation copies it.
	FamilyStartedAt time.Time
	ExpiresAt       time.Time
	UsedAt          *time.Time
	RevokedAt       *time.Time
}

// RefreshNotLiveError is the store's answer to rotating a refresh token that cannot be used: it was used,
// revoked, has expired, its family is too old, or it is unknown. Token is its stored state, or nil when the
// token is unknown.
type RefreshNotLiveError struct {
	Token *RefreshToken
}

func (e *RefreshNotLiveError) Error() string { return "refresh token is not live" }

// AuditEvent is one security event: who did what, from where. ID orders a user's events.
type AuditEvent struct {
	ID        int64
	Event     string
	UserID    *uuid.UUID
	IP        string
	UserAgent string
	RequestID string
	Detail    string
	CreatedAt time.Time
}

// APIKey is a stored API key: never its secret, which its creator sees once, nor the secret's hash.
type APIKey struct {
	ID     uuid.UUID
	UserID uuid.UUID
	Name   string
	// Prefix is the first characters of the secret, safe to show.
	Prefix     string
	CreatedAt  time.Time
	ExpiresAt  *time.Time // nil when the key does not expire
	LastUsedAt *time.Time // nil until its first use
}

// NewAPIKey is a key to store: the SHA-256 of its secret stands for the secret.
type NewAPIKey struct {
	UserID     uuid.UUID
	Name       string
	Prefix     string
	SecretHash []byte
	ExpiresAt  *time.Time
}

// ErrAPIKeyLimit is the store's answer to creating a key for a user who has as many live keys as allowed.
var ErrAPIKeyLimit = core.Errorf(core.Conflict, "too many API keys")

// Store is what the service needs from the database. Lookups of missing rows answer a core.NotFound error;
// an email taken already, in any letter case, a core.Conflict.
type Store interface {
	CreateUser(ctx context.Context, email, passwordHash string) (User, error)
	CredentialsByEmail(ctx context.Context, email string) (Credentials, error)
	CredentialsByID(ctx context.Context, id uuid.UUID) (Credentials, error)
	UserByID(ctx context.Context, id uuid.UUID) (User, error)
	UpdatePasswordHash(ctx context.Context, id uuid.UUID, passwordHash string) error
	// DeleteUser deletes an account with its tokens, API keys, conversations and messages; its audit events
	// stay, without the user id.
	DeleteUser(ctx context.Context, id uuid.UUID) error

	CreateRefreshToken(ctx context.Context, familyID, userID uuid.UUID, tokenHash []byte, expiresAt time.Time) error
	// RotateRefreshToken uses the live token with hash oldHash, whose family started after familyStartedAfter,
	// and stores newHash in its family, atomically, returning the used token's state; a token that is not
	// live is a *RefreshNotLiveError and changes nothing.
	RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt, familyStartedAfter time.Time) (RefreshToken, error)
	RefreshTokenByHash(ctx context.Context, tokenHash []byte) (RefreshToken, error)
	RevokeRefreshTokenFamily(ctx context.Context, familyID uuid.UUID) (int64, error)

	// CreateAPIKey stores a key unless its user has maxLive keys that have not expired, atomically: then it
	// returns ErrAPIKeyLimit. A missing user is a core.NotFound.
	CreateAPIKey(ctx context.Context, key NewAPIKey, maxLive int) (APIKey, error)
	// APIKeys lists a user's keys, newest first.
	APIKeys(ctx context.Context, userID uuid.UUID) ([]APIKey, error)
	// APIKeyByHash finds a key by the SHA-256 of its secret.
	APIKeyByHash(ctx context.Context, secretHash []byte) (APIKey, error)
	// DeleteAPIKey deletes a key of a user and returns it; a key of another user is a core.NotFound.
	DeleteAPIKey(ctx context.Context, userID, id uuid.UUID) (APIKey, error)
	// TouchAPIKeys records when keys were last used, in one statement; a key used later keeps its time.
	TouchAPIKeys(ctx context.Context, usedAt map[uuid.UUID]time.Time) error

	// UserRole returns a user's role.
	UserRole(ctx context.Context, id uuid.UUID) (Role, error)
	// SetRoleByEmail gives the account with email, in any letter case, role, and returns it with the role it
	// had before.
	SetRoleByEmail(ctx context.Context, email string, role Role) (User, Role, error)
	// Accounts lists up to limit accounts in the order of their lower-cased emails, those after afterEmail
	// ("" for the first page).
	Accounts(ctx context.Context, afterEmail string, limit int) ([]Account, error)
	// SetQuotas sets a user's quotas and returns the account with the quotas it had before.
	SetQuotas(ctx context.Context, id uuid.UUID, q Quotas) (Account, Quotas, error)
	// UsageByUser sums the model calls of each user of ids made since since and before until; a user
	// without any is missing from the map.
	UsageByUser(ctx context.Context, ids []uuid.UUID, since, until time.Time) (map[uuid.UUID]Usage, error)

	InsertAuditEvent(ctx context.Context, e AuditEvent) error
	// AuditEvents returns up to limit events of a user, newest first, older than the event beforeID when it
	// is not zero.
	AuditEvents(ctx context.Context, userID uuid.UUID, beforeID int64, limit int) ([]AuditEvent, error)
}
