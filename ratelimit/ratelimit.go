// Package ratelimit decides whether a request may proceed: a GCRA rate
// limiter (a token bucket expressed as one timestamp per key) and a limiter of
// concurrent holders, each with an in-memory backend for a single instance, a
// Redis backend shared by all instances, and a fallback wrapper that keeps the
// service answering while Redis is down; a Semaphore for the caps of one
// process; and AddressKey, which counts an IPv6 client by its network.
//
// The package knows nothing about HTTP: the server turns a Decision into
// RateLimit-* and Retry-After headers and ErrUnavailable into a 503.
package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/deepersensor/deepersensor/core"
)

// ErrUnavailable is returned by a fail-closed fallback while its primary
// backend is unreachable, so that the caller answers 503 instead of letting
// traffic through unlimited. Its message is what clients see.
var ErrUnavailable = &core.Error{
	Code:       core.LimiterUnavailable,
	Message:    "rate limiting is unavailable, retry shortly",
	RetryAfter: time.Second,
}

// Policy describes one bucket: Limit requests may be made at once (the burst),
// and the bucket refills completely in Period, one token every Period/Limit.
type Policy struct {
	// Name separates buckets of different policies for the same key, such
	// as "login" and "chat" for one client IP. Keep it free of ':' so that
	// Redis keys, prefix+Name+":"+key, cannot collide.
	Name string
	// Limit is the bucket's capacity; it must be at least 1.
	Limit int
	// Period is the time in which an empty bucket refills to Limit tokens.
	Period time.Duration
}

// interval returns the time it takes to earn one token.
func (p Policy) interval() time.Duration {
	return p.Period / time.Duration(p.Limit)
}

// validate rejects policies whose token interval would be below the
// microsecond resolution of the Redis backend.
func (p Policy) validate() error {
	if p.Limit < 1 || p.Period <= 0 || p.interval() < time.Microsecond {
		return fmt.Errorf("ratelimit: invalid policy %q: limit %d per %s (need limit >= 1 and period/limit >= 1µs)", p.Name, p.Limit, p.Period)
	}
	return nil
}

// Decision is the outcome of one Allow call, with what the caller needs for
// the IETF RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and
// Retry-After headers.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the policy's capacity.
	Limit int
	// Remaining is the number of further requests allowed right now.
	Remaining int
	// ResetAfter is the time until the bucket is full again.
	ResetAfter time.Duration
	// RetryAfter is the time until the next request would be allowed; it
	// is zero when the request was allowed.
	RetryAfter time.Duration
}

// ResetSeconds returns ResetAfter in whole seconds, rounded up, as the
// RateLimit-Reset header wants it.
func (d Decision) ResetSeconds() int {
	return ceilSeconds(d.ResetAfter)
}

// RetryAfterSeconds returns RetryAfter in whole seconds, rounded up and at
// least 1 for a refused request, as the Retry-After header wants it; it
// returns 0 for an allowed request.
func (d Decision) RetryAfterSeconds() int {
	if d.Allowed {
		return 0
	}
	return max(1, ceilSeconds(d.RetryAfter))
}

// ceilSeconds returns d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}

// Limiter decides whether one more request for key fits policy p. An error
// means no decision could be made; it is never a refusal.
type Limiter interface {
	Allow(ctx context.Context, key string, p Policy) (Decision, error)
}

// ConcurrencyLimiter bounds how many holders of key may be active at once,
// such as the chat streams one user has open.
type ConcurrencyLimiter interface {
	// Acquire takes one of limit slots for key. When ok is true the caller
	// holds a slot until it calls release; release is never nil, may be
	// called more than once, and is a no-op when ok is false.
	Acquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error)
}
