package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/db"
)

// UserRole returns a user's role; a missing user is a core.NotFound.
func (s *Store) UserRole(ctx context.Context, id uuid.UUID) (auth.Role, error) {
	role, err := s.q.GetUserRole(ctx, id)
	if err != nil {
		return "", fmt.Errorf("get the role of user %s: %w", id, interpretError(err, "user"))
	}
	return auth.Role(role), nil
}

// SetRoleByEmail gives the account with email, in any letter case, role, and returns it with the role it
// had before; an unknown email is a core.NotFound.
func (s *Store) SetRoleByEmail(ctx context.Context, email string, role auth.Role) (auth.User, auth.Role, error) {
	r, err := s.q.SetUserRoleByEmail(ctx, db.SetUserRoleByEmailParams{Email: email, Role: string(role)})
	if err != nil {
		return auth.User{}, "", fmt.Errorf("set the role of %q: %w", email, interpretError(err, "user"))
	}
	return auth.User{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt}, auth.Role(r.PreviousRole), nil
}

// Accounts lists up to limit accounts in the order of their lower-cased emails, those after afterEmail
// ("" for the first page).
func (s *Store) Accounts(ctx context.Context, afterEmail string, limit int) ([]auth.Account, error) {
	rows, err := s.q.ListUsersByEmail(ctx, db.ListUsersByEmailParams{AfterEmail: afterEmail, PageSize: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", interpretError(err, "user"))
	}
	accounts := make([]auth.Account, len(rows))
	for i, r := range rows {
		accounts[i] = auth.Account{
			User: auth.User{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt}, Role: auth.Role(r.Role),
			Quotas: auth.Quotas{TokensPerDay: r.TokensPerDay, TokensPerMonth: r.TokensPerMonth},
		}
	}
	return accounts, nil
}

// SetQuotas sets a user's quotas and returns the account with the quotas it had before; a missing user is
// a core.NotFound.
func (s *Store) SetQuotas(ctx context.Context, id uuid.UUID, q auth.Quotas) (auth.Account, auth.Quotas, error) {
	r, err := s.q.SetUserQuotas(ctx, db.SetUserQuotasParams{ID: id, TokensPerDay: q.TokensPerDay, TokensPerMonth: q.TokensPerMonth})
	if err != nil {
		return auth.Account{}, auth.Quotas{}, fmt.Errorf("set the quotas of user %s: %w", id, interpretError(err, "user"))
	}
	account := auth.Account{
		User: auth.User{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt}, Role: auth.Role(r.Role),
		Quotas: auth.Quotas{TokensPerDay: r.TokensPerDay, TokensPerMonth: r.TokensPerMonth},
	}
	return account, auth.Quotas{TokensPerDay: r.PreviousTokensPerDay, TokensPerMonth: r.PreviousTokensPerMonth}, nil
}

// UsageByUser sums the model calls of each user of ids made since since and before until, from the usage
// records; a user without any is missing from the map.
func (s *Store) UsageByUser(ctx context.Context, ids []uuid.UUID, since, until time.Time) (map[uuid.UUID]auth.Usage, error) {
	rows, err := s.q.SumUsageByUser(ctx, db.SumUsageByUserParams{UserIds: ids, Since: since, Until: until})
	if err != nil {
		return nil, fmt.Errorf("sum the usage of %d users: %w", len(ids), err)
	}
	usage := make(map[uuid.UUID]auth.Usage, len(rows))
	for _, r := range rows {
		usage[r.UserID] = auth.Usage{Requests: r.Requests, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens}
	}
	return usage, nil
}
