package server

import (
	"context"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/apiserver"
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

// GetMe implements GET /v1/me.
func (s *Server) GetMe(ctx context.Context, _ apiserver.GetMeRequestObject) (apiserver.GetMeResponseObject, error) {
	user, err := s.auth.User(ctx, userID(ctx))
	if err != nil {
		return nil, err
	}
	return apiserver.GetMe200JSONResponse(toAPIUser(user)), nil
}

// DeleteMe implements DELETE /v1/me. The password is a guess like a login's, so it is limited by the same
// per-email policy (the per-address one applies to the operation as a whole).
func (s *Server) DeleteMe(ctx context.Context, req apiserver.DeleteMeRequestObject) (apiserver.DeleteMeResponseObject, error) {
	id := userID(ctx)
	user, err := s.auth.User(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.limitLoginEmail(ctx, user.Email); err != nil {
		return nil, err
	}
	if err := s.auth.DeleteAccount(ctx, id, req.Body.Password, clientFrom(ctx)); err != nil {
		return nil, err
	}
	return apiserver.DeleteMe204Response{}, nil
}

// ListMyAuditEvents implements GET /v1/me/audit with keyset pagination.
func (s *Server) ListMyAuditEvents(ctx context.Context, req apiserver.ListMyAuditEventsRequestObject) (apiserver.ListMyAuditEventsResponseObject, error) {
	limit, cursor := pageParams(req.Params.Limit, req.Params.Cursor)
	page, err := s.auth.AuditEvents(ctx, userID(ctx), cursor, limit)
	if err != nil {
		return nil, err
	}
	out := apiserver.ListMyAuditEvents200JSONResponse{Items: make([]apiserver.AuditEvent, len(page.Events))}
	for i, e := range page.Events {
		out.Items[i] = apiserver.AuditEvent{
			Event: e.Event, Ip: e.IP, UserAgent: e.UserAgent, RequestId: e.RequestID, CreatedAt: e.CreatedAt,
		}
	}
	out.NextCursor = cursorOrNil(page.Next)
	return out, nil
}

func toAPIUser(u auth.User) apiserver.User {
	return apiserver.User{Id: u.ID, Email: u.Email, CreatedAt: u.CreatedAt}
}

func toAPITokens(p auth.TokenPair) apiserver.TokensJSONResponse {
	return apiserver.TokensJSONResponse{
		AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, TokenType: apiserver.Bearer,
		ExpiresIn: int(p.ExpiresIn.Seconds()),
	}
}
