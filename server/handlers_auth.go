package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/store"
)

// Signup implements POST /v1/auth/signup.
func (s *Server) Signup(ctx context.Context, req apiserver.SignupRequestObject) (apiserver.SignupResponseObject, error) {
	user, err := s.auth.Signup(ctx, req.Body.Email, req.Body.Password, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	return apiserver.Signup201JSONResponse(toAPIUser(user)), nil
}

// Login implements POST /v1/auth/login.
func (s *Server) Login(ctx context.Context, req apiserver.LoginRequestObject) (apiserver.LoginResponseObject, error) {
	if err := s.limitLoginEmail(ctx, req.Body.Email); err != nil {
		return nil, err
	}
	pair, err := s.auth.Login(ctx, req.Body.Email, req.Body.Password, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	return apiserver.Login200JSONResponse{TokensJSONResponse: toAPITokens(pair)}, nil
}

// Refresh implements POST /v1/auth/refresh.
func (s *Server) Refresh(ctx context.Context, req apiserver.RefreshRequestObject) (apiserver.RefreshResponseObject, error) {
	pair, err := s.auth.Refresh(ctx, req.Body.RefreshToken, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	return apiserver.Refresh200JSONResponse{TokensJSONResponse: toAPITokens(pair)}, nil
}

// Logout implements POST /v1/auth/logout.
func (s *Server) Logout(ctx context.Context, req apiserver.LogoutRequestObject) (apiserver.LogoutResponseObject, error) {
	if err := s.auth.Logout(ctx, req.Body.RefreshToken, clientFrom(ctx)); err != nil {
		return nil, err
	}
	return apiserver.Logout204Response{}, nil
}

// GetMe implements GET /v1/me. A valid token of a deleted account is treated as invalid.
func (s *Server) GetMe(ctx context.Context, _ apiserver.GetMeRequestObject) (apiserver.GetMeResponseObject, error) {
	user, err := s.auth.User(ctx, userID(ctx))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("user of token: %w", auth.ErrInvalidToken)
	}
	if err != nil {
		return nil, err
	}
	return apiserver.GetMe200JSONResponse(toAPIUser(user)), nil
}

func toAPIUser(u store.User) apiserver.User {
	return apiserver.User{Id: u.ID, Email: u.Email, CreatedAt: u.CreatedAt}
}

func toAPITokens(p auth.TokenPair) apiserver.TokensJSONResponse {
	return apiserver.TokensJSONResponse{
		AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, TokenType: apiserver.Bearer,
		ExpiresIn: int(p.ExpiresIn.Seconds()),
	}
}
