package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
	"github.com/deepersensor/deepersensor/quota"
)

var _ quota.Store = (*Store)(nil)

// UserQuotas returns the day and month quotas an admin set for a user, nil where the default applies; a
// missing user is a core.NotFound.
func (s *Store) UserQuotas(ctx context.Context, userID uuid.UUID) (day, month *int64, err error) {
	row, err := s.q.GetUserQuotas(ctx, userID)
	if err != nil {
		return nil, nil, fmt.Errorf("get the quotas of user %s: %w", userID, interpretError(err, "user"))
	}
	return row.TokensPerDay, row.TokensPerMonth, nil
}

// TokensUsed sums the tokens of a user's usage records since dayStart and since monthStart, in one
// index-only scan. It reads the primary: quota totals must not be rebuilt from a lagging copy.
func (s *Store) TokensUsed(ctx context.Context, userID uuid.UUID, dayStart, monthStart time.Time) (day, month int64, err error) {
	row, err := s.q.UserTokensUsed(ctx, db.UserTokensUsedParams{UserID: userID, DayStart: dayStart, MonthStart: monthStart})
	if err != nil {
		return 0, 0, fmt.Errorf("sum the tokens of user %s: %w", userID, err)
	}
	return row.DayTokens, row.MonthTokens, nil
}
