package ratelimit

import "context"

// Fallback is a Limiter that asks a primary (Redis) and, while the primary
// is unreachable, a secondary (Memory) with per-instance limits, or refuses
// with ErrUnavailable when there is no secondary. An error of the primary
// is never returned as a decision.
//
// How long a call to a dead or hanging Redis takes before it counts as a
// failure is set on the go-redis client: a limiter wants DialTimeout,
// ReadTimeout and WriteTimeout of a few hundred milliseconds, DialerRetries
// 1 and MaxRetries -1, so that the one request per RetryInterval that probes
// Redis during an outage is not held for seconds.
type Fallback struct {
	primary, secondary Limiter
	breaker            *breaker
}

var _ Limiter = (*Fallback)(nil)

// NewFallback returns a limiter that prefers primary. A nil secondary makes
// it fail closed: while primary is down, Allow returns ErrUnavailable.
func NewFallback(primary, secondary Limiter, cfg FallbackConfig) *Fallback {
	return &Fallback{
		primary:   primary,
		secondary: secondary,
		breaker:   newBreaker(cfg, "rate", secondary != nil),
	}
}

// Allow returns the primary's decision, or the secondary's while the
// primary is down. Its only errors are an invalid policy, ErrUnavailable,
// the secondary's error and ctx.Err().
func (f *Fallback) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	if err := p.validate(); err != nil {
		return Decision{}, err
	}
	var d Decision
	ok, err := f.breaker.call(ctx, func() error {
		var err error
		d, err = f.primary.Allow(ctx, key, p)
		return err
	})
	if ok {
		return d, nil
	}
	if err != nil {
		return Decision{}, err
	}
	f.breaker.fallback()
	if f.secondary == nil {
		return Decision{}, ErrUnavailable
	}
	return f.secondary.Allow(ctx, key, p)
}

// ConcurrencyFallback is a ConcurrencyLimiter that asks a primary (Redis)
// and, while the primary is unreachable, a secondary (MemoryConcurrency)
// with per-instance limits, or refuses with ErrUnavailable when there is no
// secondary. Slots taken from the secondary during an outage are unknown to
// the primary, so right after Redis returns a key may briefly hold up to
// twice its limit.
type ConcurrencyFallback struct {
	primary, secondary ConcurrencyLimiter
	breaker            *breaker
}

var _ ConcurrencyLimiter = (*ConcurrencyFallback)(nil)

// NewConcurrencyFallback returns a concurrency limiter that prefers
// primary. A nil secondary makes it fail closed: while primary is down,
// Acquire returns ErrUnavailable.
func NewConcurrencyFallback(primary, secondary ConcurrencyLimiter, cfg FallbackConfig) *ConcurrencyFallback {
	return &ConcurrencyFallback{
		primary:   primary,
		secondary: secondary,
		breaker:   newBreaker(cfg, "concurrency", secondary != nil),
	}
}

// Acquire takes a slot from the primary, or from the secondary while the
// primary is down. The release func returned always belongs to the backend
// that granted the slot.
func (f *ConcurrencyFallback) Acquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	answered, err := f.breaker.call(ctx, func() error {
		var err error
		release, ok, err = f.primary.Acquire(ctx, key, limit)
		return err
	})
	if answered {
		return release, ok, nil
	}
	if err != nil {
		return noop, false, err
	}
	f.breaker.fallback()
	if f.secondary == nil {
		return noop, false, ErrUnavailable
	}
	return f.secondary.Acquire(ctx, key, limit)
}
