package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Budgets hold token budgets per key: a bucket of tokens per minute (GCRA, as Policy's buckets but weighed
// in tokens), and totals that only grow within a window such as a UTC day, each with its own cap. Take
// checks and takes from all of them at once; Adjust corrects them afterwards.
type Budgets interface {
	// Take takes r.Tokens from every budget of key when each has room for them, or none.
	Take(ctx context.Context, key string, r BudgetRequest) (BudgetDecision, error)
	// Adjust replaces a Take of r that was allowed with the tokens used in the end, without a check: the
	// totals of key that still exist change by used - r.Tokens, and the minute bucket by as much, within the
	// whole bucket that Take could take.
	Adjust(ctx context.Context, key string, r BudgetRequest, used int64) error
}

// BudgetRequest names the budgets of one call and what it takes.
type BudgetRequest struct {
	Tokens    int64 // taken by Take; added by Adjust
	PerMinute int64 // the bucket's tokens per minute; 0 for no bucket
	Totals    []Total
}

// Total is one window's running total of tokens.
type Total struct {
	// Window names the window, such as "day:2026-11-29"; a new name starts a new total. Keep it free of
	// spaces; it is part of a Redis key.
	Window string
	// Limit caps the total; 0 counts without a cap.
	Limit int64
	// Ends is when the window ends; its total is forgotten a little after.
	Ends time.Time
	// Base is the total the window had before its counter existed, such as summed from stored records, or
	// -1 when not known: Take then answers Missing instead of starting the total at zero.
	Base int64
}

// BudgetDecision is the outcome of a Take.
type BudgetDecision struct {
	// Allowed reports whether the tokens were taken.
	Allowed bool
	// Missing reports that a total with an unknown Base has no counter: ask again with its Base.
	Missing bool
	// Refused is the index in Totals of the total that refused, or -1 for the minute bucket; meaningful
	// only when neither Allowed nor Missing.
	Refused int
	// Used holds each total's tokens: after the take, or as they are when refused.
	Used []int64
	// RetryAfter is how long until the minute bucket has room, when it refused.
	RetryAfter time.Duration
}

// minuteWindow is the period of a BudgetRequest's bucket.
const minuteWindow = time.Minute

// totalGrace is how long a window's total is kept after the window ends, for calls that end after it.
const totalGrace = time.Hour

// bucketCost returns the time the minute bucket advances for tokens at perMinute: a call larger than the
// whole bucket weighs as much as the whole bucket, so that it can pass when the bucket is full.
func bucketCost(tokens, perMinute int64) time.Duration {
	return time.Duration(float64(min(tokens, perMinute)) * float64(minuteWindow) / float64(perMinute))
}

// MemoryBudgets are Budgets kept in this process: the default when no Redis is configured and the fallback
// when Redis is down; budgets are then per instance.
type MemoryBudgets struct {
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	buckets map[string]time.Time // key → the minute bucket's theoretical arrival time
	totals  map[string]*memoryTotal
}

var _ Budgets = (*MemoryBudgets)(nil)

// memoryTotal is one window's total for one key.
type memoryTotal struct {
	used    int64
	expires time.Time
}

// NewMemoryBudgets returns in-memory budgets of cfg's size and clock.
func NewMemoryBudgets(cfg MemoryConfig) *MemoryBudgets {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &MemoryBudgets{now: cfg.Now, maxKeys: cfg.MaxKeys, buckets: map[string]time.Time{}, totals: map[string]*memoryTotal{}}
}

// Take takes r.Tokens from every budget of key when each has room for them.
func (m *MemoryBudgets) Take(_ context.Context, key string, r BudgetRequest) (BudgetDecision, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	d := BudgetDecision{Refused: -1, Used: make([]int64, len(r.Totals))}
	for i, t := range r.Totals {
		if total, ok := m.totals[key+":"+t.Window]; ok {
			d.Used[i] = total.used
		} else if t.Base < 0 {
			return BudgetDecision{Missing: true}, nil
		} else {
			d.Used[i] = t.Base
		}
	}
	for i, t := range r.Totals {
		if t.Limit > 0 && d.Used[i]+r.Tokens > t.Limit {
			d.Refused = i
			return d, nil
		}
	}
	tat := m.buckets[key]
	if r.PerMinute > 0 {
		tat = later(tat, now).Add(bucketCost(r.Tokens, r.PerMinute))
		if wait := tat.Sub(now) - minuteWindow; wait > 0 {
			d.RetryAfter = wait
			return d, nil
		}
		m.buckets[key] = tat
	}
	for i, t := range r.Totals {
		d.Used[i] += r.Tokens
		m.totals[key+":"+t.Window] = &memoryTotal{used: d.Used[i], expires: t.Ends.Add(totalGrace)}
	}
	d.Allowed = true
	return d, nil
}

// Adjust replaces a Take of r with used tokens.
func (m *MemoryBudgets) Adjust(_ context.Context, key string, r BudgetRequest, used int64) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range r.Totals {
		if total, ok := m.totals[key+":"+t.Window]; ok {
			total.used += used - r.Tokens
		}
	}
	if tat, ok := m.buckets[key]; ok && r.PerMinute > 0 {
		m.buckets[key] = later(tat.Add(bucketCost(used, r.PerMinute)-bucketCost(r.Tokens, r.PerMinute)), now)
	}
	return nil
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sweep forgets full buckets and ended totals once the maps hold more than maxKeys entries. The caller
// holds m.mu.
func (m *MemoryBudgets) sweep(now time.Time) {
	if len(m.buckets)+len(m.totals) < m.maxKeys {
		return
	}
	for k, tat := range m.buckets {
		if !tat.After(now) {
			delete(m.buckets, k)
		}
	}
	for k, t := range m.totals {
		if !t.expires.After(now) {
			delete(m.totals, k)
		}
	}
}

// BudgetFallback is Budgets that asks a primary (Redis) and, while it is unreachable, a secondary (memory)
// with per-instance budgets, or refuses with ErrUnavailable when there is no secondary.
type BudgetFallback struct {
	fallback[Budgets, BudgetDecision]
}

var _ Budgets = (*BudgetFallback)(nil)

// NewBudgetFallback returns budgets that prefer primary. A nil secondary makes them fail closed.
func NewBudgetFallback(primary, secondary Budgets, cfg FallbackConfig) *BudgetFallback {
	return &BudgetFallback{newFallback[Budgets, BudgetDecision](primary, secondary, cfg, "budgets")}
}

// Take asks the primary, or the secondary while the primary is down.
func (f *BudgetFallback) Take(ctx context.Context, key string, r BudgetRequest) (BudgetDecision, error) {
	return f.ask(ctx, func(b Budgets) (BudgetDecision, error) { return b.Take(ctx, key, r) })
}

// Adjust corrects the primary's budgets, or the secondary's while the primary is down.
func (f *BudgetFallback) Adjust(ctx context.Context, key string, r BudgetRequest, used int64) error {
	_, err := f.ask(ctx, func(b Budgets) (BudgetDecision, error) { return BudgetDecision{}, b.Adjust(ctx, key, r, used) })
	return err
}
