package ratelimit

import "time"

// gcra applies the generic cell rate algorithm to one request arriving at
// now, for a bucket whose theoretical arrival time is tat: the instant at
// which the bucket would be full again. A tat at or before now means a full
// bucket. It returns the bucket's new tat (unchanged when the request is
// refused) and the decision.
//
// The Lua script in redis.go implements the same arithmetic in microseconds.
func gcra(tat, now time.Duration, p Policy) (time.Duration, Decision) {
	interval := p.interval()
	burst := interval * time.Duration(p.Limit)
	tat = max(tat, now)
	next := tat + interval
	if wait := next - burst - now; wait > 0 {
		return tat, Decision{Limit: p.Limit, ResetAfter: tat - now, RetryAfter: wait}
	}
	return next, Decision{
		Allowed:    true,
		Limit:      p.Limit,
		Remaining:  int((burst - (next - now)) / interval),
		ResetAfter: next - now,
	}
}
