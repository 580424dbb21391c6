// Package quota holds each user's token budgets: a rate per minute, and quotas per UTC day and per calendar
// month, with an admin's overrides of the latter. A model call reserves its estimated tokens before anything
// is stored or sent, and settles with the tokens it used when it ends. The running totals live in Redis (or
// in memory without it) and are rebuilt from the stored usage records when they are missing, so that
// quotas survive restarts of the service and of Redis.
package quota

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// The quotas, as refusals name them.
const (
	Minute = "minute"
	Day    = "day"
	Month  = "month"
)

// overrideTTL is how long a user's own quotas are cached: an admin's change reaches other instances within it.
const overrideTTL = 30 * time.Second

// overrideCacheSize bounds the users whose own quotas are cached.
const overrideCacheSize = 100_000

// settleTimeout bounds the correction of a call's budgets after the call, which runs whether or not its
// request is still open.
const settleTimeout = 2 * time.Second

// Limits are token limits; 0 means none.
type Limits struct {
	PerMinute int64
	PerDay    int64
	PerMonth  int64
}

// none reports whether no limit applies.
func (l Limits) none() bool { return l.PerMinute == 0 && l.PerDay == 0 && l.PerMonth == 0 }

// Store is what quotas need from the database.
type Store interface {
	// UserQuotas returns the day and month quotas an admin set for a user, nil where the default applies.
	UserQuotas(ctx context.Context, userID uuid.UUID) (day, month *int64, err error)
	// TokensUsed sums the prompt and completion tokens of a user's usage records since dayStart and since
	// monthStart.
	TokensUsed(ctx context.Context, userID uuid.UUID, dayStart, monthStart time.Time) (day, month int64, err error)
}

// Service checks and keeps the budgets.
type Service struct {
	defaults  Limits
	store     Store
	budgets   ratelimit.Budgets
	now       func() time.Time
	overrides *lru.Cache[uuid.UUID, cachedLimits]
}

// cachedLimits are a user's limits as read at a time.
type cachedLimits struct {
	limits Limits
	read   time.Time
}

// New returns quotas with these defaults, kept in budgets; now is the clock (nil: time.Now).
func New(defaults Limits, st Store, budgets ratelimit.Budgets, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	overrides, err := lru.New[uuid.UUID, cachedLimits](overrideCacheSize)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &Service{defaults: defaults, store: st, budgets: budgets, now: now, overrides: overrides}
}

// Hold is a call's reservation. A nil Hold holds nothing.
type Hold struct {
	svc      *Service
	userID   uuid.UUID
	request  ratelimit.BudgetRequest
	dayLeft  int64
	hasDay   bool
	estimate int64
}

// Reserve takes a call's estimated tokens from the user's budgets, or refuses the call with a
// core.QuotaExceeded error naming the quota that would be crossed. It returns a nil Hold when no limit
// applies to the user.
func (s *Service) Reserve(ctx context.Context, userID uuid.UUID, estimate int64) (*Hold, error) {
	limits, err := s.limitsOf(ctx, userID)
	if err != nil || limits.none() {
		return nil, err
	}
	now := s.now().UTC()
	dayStart := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	monthStart := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var windows []window // those with a quota, in the order of req.Totals
	req := ratelimit.BudgetRequest{Tokens: estimate, PerMinute: limits.PerMinute}
	for _, w := range []window{
		{Day, "day:" + dayStart.Format(time.DateOnly), limits.PerDay, dayStart.AddDate(0, 0, 1)},
		{Month, "month:" + monthStart.Format("2006-01"), limits.PerMonth, monthStart.AddDate(0, 1, 0)},
	} {
		if w.limit > 0 {
			windows = append(windows, w)
			req.Totals = append(req.Totals, ratelimit.Total{Window: w.key, Limit: w.limit, Ends: w.ends, Base: -1})
		}
	}
	key := userID.String()
	d, err := s.budgets.Take(ctx, key, req)
	if err == nil && d.Missing {
		// The totals are gone (a new window, or Redis or the service restarted): rebuild them from the records.
		var day, month int64
		if day, month, err = s.store.TokensUsed(ctx, userID, dayStart, monthStart); err != nil {
			return nil, fmt.Errorf("quota: rebuild the totals of %s: %w", userID, err)
		}
		for i, w := range windows {
			req.Totals[i].Base = month
			if w.name == Day {
				req.Totals[i].Base = day
			}
		}
		d, err = s.budgets.Take(ctx, key, req)
	}
	if err != nil {
		return nil, fmt.Errorf("quota: reserve for %s: %w", userID, err)
	}
	if !d.Allowed {
		return nil, refusal(d, req, windows, now)
	}
	h := &Hold{svc: s, userID: userID, request: req, estimate: estimate}
	for i, w := range windows {
		if w.name == Day {
			h.dayLeft, h.hasDay = max(0, w.limit-d.Used[i]), true
		}
	}
	return h, nil
}

// window is one quota's window at the time of a call.
type window struct {
	name  string
	key   string
	limit int64
	ends  time.Time
}

// refusal is the error of a refused reservation; windows are those of req.Totals.
func refusal(d ratelimit.BudgetDecision, req ratelimit.BudgetRequest, windows []window, now time.Time) error {
	if d.Refused < 0 {
		return &core.Error{
			Code: core.QuotaExceeded, RetryAfter: d.RetryAfter,
			Message: fmt.Sprintf("the tokens-per-minute limit (%d) is used up; retry in %s", req.PerMinute, d.RetryAfter.Round(time.Second)),
			Quota:   &core.Quota{Name: Minute, Limit: req.PerMinute, Reset: now.Add(d.RetryAfter)},
		}
	}
	w := windows[d.Refused]
	left := max(0, w.limit-d.Used[d.Refused])
	msg := fmt.Sprintf("the %s's token quota (%d) would be crossed: %d tokens left, this call needs about %d; it resets at %s",
		w.name, w.limit, left, req.Tokens, w.ends.Format(time.RFC3339))
	if req.Tokens > w.limit {
		msg = fmt.Sprintf("this call needs about %d tokens, more than the %s's whole token quota (%d, %d left): send less, or ask for a shorter answer",
			req.Tokens, w.name, w.limit, left)
	}
	return &core.Error{
		Code: core.QuotaExceeded, RetryAfter: w.ends.Sub(now),
		Message: msg,
		Quota:   &core.Quota{Name: w.name, Limit: w.limit, Remaining: left, Reset: w.ends},
	}
}

// DayRemaining returns the tokens left of the user's day quota after this call's estimate, and whether the
// user has a day quota.
func (h *Hold) DayRemaining() (int64, bool) {
	if h == nil {
		return 0, false
	}
	return h.dayLeft, h.hasDay
}

// Settle replaces the call's estimate with the tokens it used. It runs even when ctx has ended.
func (h *Hold) Settle(ctx context.Context, used int64) error {
	if h == nil || used == h.estimate {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := h.svc.budgets.Adjust(ctx, h.userID.String(), h.request, used); err != nil {
		return fmt.Errorf("quota: settle for %s: %w", h.userID, err)
	}
	return nil
}

// Forget drops what this instance cached of a user's own quotas, after an admin changed them; other
// instances see the change within overrideTTL. A nil Service has nothing to forget.
func (s *Service) Forget(userID uuid.UUID) {
	if s == nil {
		return
	}
	s.overrides.Remove(userID)
}

// limitsOf returns the limits of a user: the defaults, with an admin's overrides.
func (s *Service) limitsOf(ctx context.Context, userID uuid.UUID) (Limits, error) {
	if c, ok := s.overrides.Get(userID); ok && time.Since(c.read) < overrideTTL {
		return c.limits, nil
	}
	day, month, err := s.store.UserQuotas(ctx, userID)
	if err != nil {
		if s.defaults.none() && ctx.Err() == nil {
			// Without default limits, a database that does not answer must not stop calls that store
			// nothing; an admin's quota for this user waits for it.
			return Limits{}, nil
		}
		return Limits{}, fmt.Errorf("quota: limits of %s: %w", userID, err)
	}
	l := s.defaults
	if day != nil {
		l.PerDay = *day
	}
	if month != nil {
		l.PerMonth = *month
	}
	s.overrides.Add(userID, cachedLimits{limits: l, read: time.Now()})
	return l, nil
}
