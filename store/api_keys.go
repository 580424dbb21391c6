package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/db"
)

func apiKeyFromDB(k db.ApiKey) auth.APIKey {
	return auth.APIKey{
		ID: k.ID, UserID: k.UserID, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt,
		LastUsedAt: k.LastUsedAt,
	}
}

// CreateAPIKey stores a key unless its user has maxLive keys that have not expired: then it returns
// auth.ErrAPIKeyLimit. The user's row is locked first, so that keys created at once are counted one after
// the other. A missing user is a core.NotFound.
func (s *Store) CreateAPIKey(ctx context.Context, key auth.NewAPIKey, maxLive int) (auth.APIKey, error) {
	var created db.ApiKey
	err := s.inTx(ctx, func(q *db.Queries) error {
		if _, err := q.LockUserForAPIKeys(ctx, key.UserID); err != nil {
			return interpretError(err, "user")
		}
		live, err := q.CountLiveAPIKeys(ctx, key.UserID)
		if err != nil {
			return err
		}
		if live >= int64(maxLive) {
			return auth.ErrAPIKeyLimit
		}
		created, err = q.CreateAPIKey(ctx, db.CreateAPIKeyParams{
			UserID: key.UserID, Name: key.Name, Prefix: key.Prefix, SecretHash: key.SecretHash, ExpiresAt: key.ExpiresAt,
		})
		return interpretError(err, "API key")
	})
	if err != nil {
		return auth.APIKey{}, fmt.Errorf("create API key of user %s: %w", key.UserID, err)
	}
	return apiKeyFromDB(created), nil
}

// APIKeys lists a user's keys, newest first.
func (s *Store) APIKeys(ctx context.Context, userID uuid.UUID) ([]auth.APIKey, error) {
	rows, err := s.q.ListAPIKeys(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("list API keys of user %s: %w", userID, interpretError(err, "API key"))
	}
	keys := make([]auth.APIKey, len(rows))
	for i, r := range rows {
		keys[i] = apiKeyFromDB(r)
	}
	return keys, nil
}

// APIKeyByHash finds a key by the SHA-256 of its secret.
func (s *Store) APIKeyByHash(ctx context.Context, secretHash []byte) (auth.APIKey, error) {
	k, err := s.q.GetAPIKeyByHash(ctx, secretHash)
	if err != nil {
		return auth.APIKey{}, fmt.Errorf("get API key: %w", interpretError(err, "API key"))
	}
	return apiKeyFromDB(k), nil
}

// DeleteAPIKey deletes a key of a user and returns it; a key of another user is a core.NotFound.
func (s *Store) DeleteAPIKey(ctx context.Context, userID, id uuid.UUID) (auth.APIKey, error) {
	k, err := s.q.DeleteAPIKey(ctx, db.DeleteAPIKeyParams{ID: id, UserID: userID})
	if err != nil {
		return auth.APIKey{}, fmt.Errorf("delete API key %s: %w", id, interpretError(err, "API key"))
	}
	return apiKeyFromDB(k), nil
}

// TouchAPIKeys records when keys were last used, in one statement; a key used later keeps its time.
func (s *Store) TouchAPIKeys(ctx context.Context, usedAt map[uuid.UUID]time.Time) error {
	params := db.TouchAPIKeysParams{Ids: make([]uuid.UUID, 0, len(usedAt)), UsedAt: make([]time.Time, 0, len(usedAt))}
	for id, t := range usedAt {
		params.Ids = append(params.Ids, id)
		params.UsedAt = append(params.UsedAt, t)
	}
	if err := s.q.TouchAPIKeys(ctx, params); err != nil {
		return fmt.Errorf("touch %d API keys: %w", len(usedAt), interpretError(err, "API key"))
	}
	return nil
}
