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
	fallback[Limiter, Decision]
}

var _ Limiter = (*Fallback)(nil)

// NewFallback returns a limiter that prefers primary. A nil secondary makes
// it fail closed: while primary is down, Allow returns ErrUnavailable.
func NewFallback(primary, secondary Limiter, cfg FallbackConfig) *Fallback {
	return &Fallback{newFallback[Limiter, Decision](primary, secondary, cfg, "rate")}
}

// Allow returns the primary's decision, or the secondary's while the
// primary is down. Its only errors are an invalid policy, ErrUnavailable,
// the secondary's error and ctx.Err().
func (f *Fallback) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	if err := p.validate(); err != nil {
		return Decision{}, err
	}
	return f.ask(ctx, func(l Limiter) (Decision, error) {
		return l.Allow(ctx, key, p)
	})
}

// ConcurrencyFallback is a ConcurrencyLimiter that asks a primary (Redis)
// and, while the primary is unreachable, a secondary (MemoryConcurrency)
// with per-instance limits, or refuses with ErrUnavailable when there is no
// secondary. Slots taken from the secondary during an outage are unknown to
// the primary, so right after Redis returns a key may briefly hold up to
// twice its limit.
type ConcurrencyFallback struct {
	fallback[ConcurrencyLimiter, slot]
}

var _ ConcurrencyLimiter = (*ConcurrencyFallback)(nil)

// slot is the outcome of one Acquire.
type slot struct {
	release func()
	ok      bool
}

// NewConcurrencyFallback returns a concurrency limiter that prefers
// primary. A nil secondary makes it fail closed: while primary is down,
// Acquire returns ErrUnavailable.
func NewConcurrencyFallback(primary, secondary ConcurrencyLimiter, cfg FallbackConfig) *ConcurrencyFallback {
	return &ConcurrencyFallback{newFallback[ConcurrencyLimiter, slot](primary, secondary, cfg, "concurrency")}
}

// Acquire takes a slot from the primary, or from the secondary while the
// primary is down. The release func returned always belongs to the backend
// that granted the slot.
func (f *ConcurrencyFallback) Acquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	s, err := f.ask(ctx, func(l ConcurrencyLimiter) (slot, error) {
		release, ok, err := l.Acquire(ctx, key, limit)
		return slot{release: release, ok: ok}, err
	})
	if err != nil {
		return noop, false, err
	}
	return s.release, s.ok, nil
}

// fallback is the mechanism of Fallback and ConcurrencyFallback: backends
// of type L whose calls return a T, and the breaker that picks one.
type fallback[L, T any] struct {
	primary, secondary L
	failOpen           bool // whether there is a secondary
	breaker            *breaker
}

func newFallback[L, T any](primary, secondary L, cfg FallbackConfig, backend string) fallback[L, T] {
	failOpen := any(secondary) != nil
	return fallback[L, T]{
		primary:   primary,
		secondary: secondary,
		failOpen:  failOpen,
		breaker:   newBreaker(cfg, backend, failOpen),
	}
}

// ask returns call(primary) unless the primary is down, and otherwise
// call(secondary), or ErrUnavailable when there is no secondary. A failure
// caused by ctx ending is the caller's, not an outage, and comes back as
// ctx.Err().
func (f *fallback[L, T]) ask(ctx context.Context, call func(L) (T, error)) (T, error) {
	var none T
	if f.breaker.shouldTry() {
		res, err := call(f.primary)
		switch {
		case err == nil:
			f.breaker.succeeded()
			return res, nil
		case ctx.Err() != nil:
			return none, ctx.Err()
		}
		f.breaker.failed(err)
	}
	f.breaker.fallback()
	if !f.failOpen {
		return none, ErrUnavailable
	}
	return call(f.secondary)
}
