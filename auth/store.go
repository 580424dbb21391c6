package auth

import (
	"context"
	"time"

	"github.com/google/uuid"
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

// Store is what the service needs from the database. Lookups of missing rows answer a core.NotFound error;
// an email taken already, in any letter case, a core.Conflict.
type Store interface {
	CreateUser(ctx context.Context, email, passwordHash string) (User, error)
	CredentialsByEmail(ctx context.Context, email string) (Credentials, error)
	CredentialsByID(ctx context.Context, id uuid.UUID) (Credentials, error)
	UserByID(ctx context.Context, id uuid.UUID) (User, error)
	UpdatePasswordHash(ctx context.Context, id uuid.UUID, passwordHash string) error
	// DeleteUser deletes an account with its tokens, conversations and messages; its audit events stay,
	// without the user id.
	DeleteUser(ctx context.Context, id uuid.UUID) error

	CreateRefreshToken(ctx context.Context, familyID, userID uuid.UUID, tokenHash []byte, expiresAt time.Time) error
	// RotateRefreshToken uses the live token with hash oldHash, whose family started after familyStartedAfter,
	// and stores newHash in its family, atomically, returning the used token's state; a token that is not
	// live is a *RefreshNotLiveError and changes nothing.
	RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt, familyStartedAfter time.Time) (RefreshToken, error)
	RefreshTokenByHash(ctx context.Context, tokenHash []byte) (RefreshToken, error)
	RevokeRefreshTokenFamily(ctx context.Context, familyID uuid.UUID) (int64, error)

	InsertAuditEvent(ctx context.Context, e AuditEvent) error
	// AuditEvents returns up to limit events of a user, newest first, older than the event beforeID when it
	// is not zero.
	AuditEvents(ctx context.Context, userID uuid.UUID, beforeID int64, limit int) ([]AuditEvent, error)
}
