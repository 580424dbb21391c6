package server

import (
	"context"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/apiserver"
)

// The admin routes are guarded by guardAdminRoute before they are validated: these handlers run for admins
// only.

// ListUsers implements GET /v1/admin/users with keyset pagination.
func (s *Server) ListUsers(ctx context.Context, req apiserver.ListUsersRequestObject) (apiserver.ListUsersResponseObject, error) {
	limit, cursor := pageParams(req.Params.Limit, req.Params.Cursor)
	page, err := s.auth.Users(ctx, cursor, limit)
	if err != nil {
		return nil, err
	}
	out := apiserver.ListUsers200JSONResponse{Items: make([]apiserver.AdminUser, len(page.Users)), NextCursor: cursorOrNil(page.Next)}
	for i, u := range page.Users {
		out.Items[i] = toAPIAdminUser(u)
	}
	return out, nil
}

// UpdateUser implements PATCH /v1/admin/users/{id}: it sets the user's token quotas.
func (s *Server) UpdateUser(ctx context.Context, req apiserver.UpdateUserRequestObject) (apiserver.UpdateUserResponseObject, error) {
	q := auth.Quotas{TokensPerDay: req.Body.TokensPerDay, TokensPerMonth: req.Body.TokensPerMonth}
	u, err := s.auth.SetQuotas(ctx, userID(ctx), req.Id, q, clientFrom(ctx))
	if err != nil {
		return nil, err
	}
	s.quotas.Forget(req.Id)
	return apiserver.UpdateUser200JSONResponse(toAPIAdminUser(u)), nil
}

func toAPIAdminUser(u auth.AdminUser) apiserver.AdminUser {
	return apiserver.AdminUser{
		Id: u.ID, Email: u.Email, Role: apiserver.AccountRole(u.Role), CreatedAt: u.CreatedAt,
		UsageThisMonth: apiserver.MonthUsage{
			Requests: u.UsageThisMonth.Requests, PromptTokens: u.UsageThisMonth.PromptTokens,
			CompletionTokens: u.UsageThisMonth.CompletionTokens,
		},
		Quotas: apiserver.UserQuotas{TokensPerDay: u.Quotas.TokensPerDay, TokensPerMonth: u.Quotas.TokensPerMonth},
	}
}
