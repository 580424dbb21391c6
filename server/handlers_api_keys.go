package server

import (
	"context"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/apiserver"
)

// CreateAPIKey implements POST /v1/api-keys.
func (s *Server) CreateAPIKey(ctx context.Context, req apiserver.CreateAPIKeyRequestObject) (apiserver.CreateAPIKeyResponseObject, error) {
	key, err := s.auth.CreateAPIKey(ctx, userID(ctx), req.Body.Name, req.Body.ExpiresAt, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	k := toAPIKey(key.APIKey)
	return apiserver.CreateAPIKey201JSONResponse{
		Id: k.Id, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt,
		LastUsedAt: k.LastUsedAt, Secret: key.Secret,
	}, nil
}

// ListAPIKeys implements GET /v1/api-keys.
func (s *Server) ListAPIKeys(ctx context.Context, _ apiserver.ListAPIKeysRequestObject) (apiserver.ListAPIKeysResponseObject, error) {
	keys, err := s.auth.APIKeys(ctx, userID(ctx))
	if err != nil {
		return nil, err
	}
	out := apiserver.ListAPIKeys200JSONResponse{Items: make([]apiserver.APIKey, len(keys))}
	for i, k := range keys {
		out.Items[i] = toAPIKey(k)
	}
	return out, nil
}

// DeleteAPIKey implements DELETE /v1/api-keys/{id}.
func (s *Server) DeleteAPIKey(ctx context.Context, req apiserver.DeleteAPIKeyRequestObject) (apiserver.DeleteAPIKeyResponseObject, error) {
	if err := s.auth.RevokeAPIKey(ctx, userID(ctx), req.Id, clientFrom(ctx)); err != nil {
		return nil, err
	}
	return apiserver.DeleteAPIKey204Response{}, nil
}

func toAPIKey(k auth.APIKey) apiserver.APIKey {
	return apiserver.APIKey{
		Id: k.ID, Name: k.Name, Prefix: k.Prefix, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsedAt,
	}
}
