package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/db"
)

func refreshTokenFromDB(t db.RefreshToken) auth.RefreshToken {
	return auth.RefreshToken{
		FamilyID: t.FamilyID, UserID: t.UserID, FamilyStartedAt: t.FamilyStartedAt, ExpiresAt: t.ExpiresAt,
		UsedAt: t.UsedAt, RevokedAt: t.RevokedAt,
	}
}

// CreateRefreshToken stores the hash of the first token of a new family, which starts now.
func (s *Store) CreateRefreshToken(ctx context.Context, familyID, userID uuid.UUID, tokenHash []byte, expiresAt time.Time) error {
	err := s.q.CreateRefreshToken(ctx, db.CreateRefreshTokenParams{
		FamilyID: familyID, UserID: userID, TokenHash: tokenHash, ExpiresAt: expiresAt,
	})
	if err != nil {
		return fmt.Errorf("create refresh token: %w", interpretError(err, "refresh token"))
	}
	return nil
}

// RotateRefreshToken uses the live token with hash oldHash, whose family started after familyStartedAfter,
// and stores newHash in its family, in one transaction, returning the used token's state. When the token is
// not live (used, revoked, expired, of a family too old, or unknown) nothing changes and the error is an
// *auth.RefreshNotLiveError with the token's state, if known.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, newHash []byte, expiresAt, familyStartedAfter time.Time) (auth.RefreshToken, error) {
	var used db.RefreshToken
	err := s.inTx(ctx, func(q *db.Queries) error {
		var err error
		used, err = q.UseRefreshToken(ctx, db.UseRefreshTokenParams{TokenHash: oldHash, FamilyStartedAfter: familyStartedAfter})
		if err != nil {
			return err
		}
		return q.CreateRefreshToken(ctx, db.CreateRefreshTokenParams{
			FamilyID: used.FamilyID, UserID: used.UserID, TokenHash: newHash, ExpiresAt: expiresAt,
			FamilyStartedAt: &used.FamilyStartedAt,
		})
	})
	if err == nil {
		return refreshTokenFromDB(used), nil
	}
	if err = interpretError(err, "refresh token"); core.ErrorCode(err) != core.NotFound {
		return auth.RefreshToken{}, fmt.Errorf("rotate refresh token: %w", err)
	}
	known, err := s.RefreshTokenByHash(ctx, oldHash)
	switch {
	case core.ErrorCode(err) == core.NotFound:
		return auth.RefreshToken{}, &auth.RefreshNotLiveError{}
	case err != nil:
		return auth.RefreshToken{}, fmt.Errorf("rotate refresh token: %w", err)
	}
	return auth.RefreshToken{}, &auth.RefreshNotLiveError{Token: &known}
}

// RefreshTokenByHash returns the stored state of a token.
func (s *Store) RefreshTokenByHash(ctx context.Context, tokenHash []byte) (auth.RefreshToken, error) {
	t, err := s.q.GetRefreshToken(ctx, tokenHash)
	if err != nil {
		return auth.RefreshToken{}, fmt.Errorf("get refresh token: %w", interpretError(err, "refresh token"))
	}
	return refreshTokenFromDB(t), nil
}

// RevokeRefreshTokenFamily revokes every live token of a family and reports how many it revoked.
func (s *Store) RevokeRefreshTokenFamily(ctx context.Context, familyID uuid.UUID) (int64, error) {
	n, err := s.q.RevokeRefreshTokenFamily(ctx, familyID)
	if err != nil {
		return 0, fmt.Errorf("revoke refresh token family %s: %w", familyID, interpretError(err, "refresh token"))
	}
	return n, nil
}
