package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
)

// RefreshToken is the stored state of one refresh token; the token itself is never stored, only its hash.
type RefreshToken struct {
	FamilyID  uuid.UUID
	UserID    uuid.UUID
	ExpiresAt time.Time
	UsedAt    *time.Time
	RevokedAt *time.Time
}

func refreshTokenFromDB(t db.RefreshToken) RefreshToken {
	return RefreshToken{FamilyID: t.FamilyID, UserID: t.UserID, ExpiresAt: t.ExpiresAt, UsedAt: t.UsedAt, RevokedAt: t.RevokedAt}
}

// CreateRefreshToken stores the hash of a new token of a family.
func (s *Store) CreateRefreshToken(ctx context.Context, familyID, userID uuid.UUID, tokenHash []byte, expiresAt time.Time) error {
	err := s.q.CreateRefreshToken(ctx, db.CreateRefreshTokenParams{
		FamilyID: familyID, UserID: userID, TokenHash: tokenHash, ExpiresAt: expiresAt,
	})
	if err != nil {
		return fmt.Errorf("create refresh token: %w", interpretError(err))
	}
	return nil
}

// RotateRefreshToken uses the token with hash oldHash and stores newHash in its family, in one transaction.
// It returns the used token's state. When the token is not live (used, revoked, expired or unknown) nothing
// changes, and the error is ErrNotFound; the returned state then tells why, when the token is known.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt time.Time) (RefreshToken, error) {
	var used db.RefreshToken
	err := s.inTx(ctx, func(q *db.Queries) error {
		var err error
		used, err = q.UseRefreshToken(ctx, oldHash)
		if err != nil {
			return err
		}
		return q.CreateRefreshToken(ctx, db.CreateRefreshTokenParams{
			FamilyID: used.FamilyID, UserID: used.UserID, TokenHash: newHash, ExpiresAt: expiresAt,
		})
	})
	if err == nil {
		return refreshTokenFromDB(used), nil
	}
	err = interpretError(err)
	if !errors.Is(err, ErrNotFound) {
		return RefreshToken{}, fmt.Errorf("rotate refresh token: %w", err)
	}
	known, lookupErr := s.q.GetRefreshToken(ctx, oldHash)
	if lookupErr != nil {
		return RefreshToken{}, fmt.Errorf("rotate refresh token: %w", interpretError(lookupErr))
	}
	return refreshTokenFromDB(known), fmt.Errorf("rotate refresh token: %w", ErrNotFound)
}

// RefreshTokenByHash returns the stored state of a token.
func (s *Store) RefreshTokenByHash(ctx context.Context, tokenHash []byte) (RefreshToken, error) {
	t, err := s.q.GetRefreshToken(ctx, tokenHash)
	if err != nil {
		return RefreshToken{}, fmt.Errorf("get refresh token: %w", interpretError(err))
	}
	return refreshTokenFromDB(t), nil
}

// RevokeRefreshTokenFamily revokes every live token of a family and reports how many it revoked.
func (s *Store) RevokeRefreshTokenFamily(ctx context.Context, familyID uuid.UUID) (int64, error) {
	n, err := s.q.RevokeRefreshTokenFamily(ctx, familyID)
	if err != nil {
		return 0, fmt.Errorf("revoke refresh token family %s: %w", familyID, interpretError(err))
	}
	return n, nil
}
