package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

// step is one Allow call made after waiting, and the decision it must get.
type step struct {
	after time.Duration
	want  ratelimit.Decision
}

func allowed(remaining int, reset time.Duration) ratelimit.Decision {
	return ratelimit.Decision{Allowed: true, Remaining: remaining, ResetAfter: reset}
}

func refused(reset, retry time.Duration) ratelimit.Decision {
	return ratelimit.Decision{ResetAfter: reset, RetryAfter: retry}
}

const ms = time.Millisecond

// bucketCases pin the bucket's burst and rate. Both backends must pass them:
// the memory backend exactly with a fake clock, the Redis backend in real
// time give or take the time the calls themselves take.
var bucketCases = []struct {
	name   string
	policy ratelimit.Policy
	steps  []step
}{
	{
		name:   "burst then one token per interval",
		policy: ratelimit.Policy{Name: "burst", Limit: 4, Period: 800 * ms},
		steps: []step{
			{0, allowed(3, 200*ms)},
			{0, allowed(2, 400*ms)},
			{0, allowed(1, 600*ms)},
			{0, allowed(0, 800*ms)},
			{0, refused(800*ms, 200*ms)},
			{100 * ms, refused(700*ms, 100*ms)},
			{100 * ms, allowed(0, 800*ms)},
			{0, refused(800*ms, 200*ms)},
			{400 * ms, allowed(1, 600*ms)},
			{0, allowed(0, 800*ms)},
			{0, refused(800*ms, 200*ms)},
		},
	},
	{
		name:   "limit one",
		policy: ratelimit.Policy{Name: "one", Limit: 1, Period: 300 * ms},
		steps: []step{
			{0, allowed(0, 300*ms)},
			{0, refused(300*ms, 300*ms)},
			{150 * ms, refused(150*ms, 150*ms)},
			{150 * ms, allowed(0, 300*ms)},
		},
	},
	{
		name:   "idle bucket holds no more than limit",
		policy: ratelimit.Policy{Name: "idle", Limit: 2, Period: 400 * ms},
		steps: []step{
			{0, allowed(1, 200*ms)},
			{time.Second, allowed(1, 200*ms)},
			{0, allowed(0, 400*ms)},
			{0, refused(400*ms, 200*ms)},
		},
	},
	{
		// Float seconds since 2017, as in redis_rate, give 8 here.
		name:   "ten per second leaves nine",
		policy: ratelimit.Policy{Name: "ten", Limit: 10, Period: time.Second},
		steps: []step{
			{0, allowed(9, 100*ms)},
			{0, allowed(8, 200*ms)},
		},
	},
	{
		name:   "interval not a whole number of nanoseconds",
		policy: ratelimit.Policy{Name: "third", Limit: 3, Period: time.Second},
		steps: []step{
			{0, allowed(2, time.Second/3)},
			{0, allowed(1, 2*(time.Second/3))},
			{0, allowed(0, 3*(time.Second/3))},
			{0, refused(3*(time.Second/3), time.Second/3)},
		},
	},
}

// clock is how a test waits between steps, and how far the backend's time
// may have moved beyond the time the test waited for.
type clock interface {
	Advance(time.Duration)
	Drift() time.Duration
}

// runBucketCase plays steps against l, waiting with clk. Durations in a
// decision may be up to the clock's drift (plus slack) shorter than wanted,
// and up to slack longer.
func runBucketCase(t *testing.T, l ratelimit.Limiter, clk clock, slack time.Duration, policy ratelimit.Policy, steps []step) {
	t.Helper()
	for i, s := range steps {
		clk.Advance(s.after)
		got, err := l.Allow(context.Background(), "client", policy)
		if err != nil {
			t.Fatalf("step %d: Allow: %v", i, err)
		}
		want := s.want
		want.Limit = policy.Limit
		low, high := clk.Drift()+slack, slack
		if got.Allowed != want.Allowed || got.Limit != want.Limit || got.Remaining != want.Remaining ||
			!near(got.ResetAfter, want.ResetAfter, low, high) || !near(got.RetryAfter, want.RetryAfter, low, high) {
			t.Fatalf("step %d (after %s): got %+v, want %+v (durations from %s shorter to %s longer)", i, s.after, got, want, low, high)
		}
	}
}

// near reports whether got lies between want-low and want+high.
func near(got, want, low, high time.Duration) bool {
	return got >= want-low && got <= want+high
}

func TestInvalidPolicy(t *testing.T) {
	client := mustRedis(t)
	limiters := map[string]ratelimit.Limiter{
		"memory":   ratelimit.NewMemory(ratelimit.MemoryConfig{}),
		"redis":    ratelimit.NewRedis(client, mustPrefix(t, client)),
		"fallback": ratelimit.NewFallback(ratelimit.NewRedis(client, mustPrefix(t, client)), nil, ratelimit.FallbackConfig{}),
	}
	policies := map[string]ratelimit.Policy{
		"zero limit":         {Name: "p", Limit: 0, Period: time.Second},
		"negative limit":     {Name: "p", Limit: -1, Period: time.Second},
		"zero period":        {Name: "p", Limit: 1},
		"interval below 1µs": {Name: "p", Limit: 1001, Period: time.Millisecond},
	}
	for lname, l := range limiters {
		for pname, p := range policies {
			t.Run(lname+"/"+pname, func(t *testing.T) {
				if d, err := l.Allow(context.Background(), "k", p); err == nil {
					t.Fatalf("Allow = %+v, want an error", d)
				}
			})
		}
	}
}

func TestDecisionSeconds(t *testing.T) {
	tests := []struct {
		name       string
		d          ratelimit.Decision
		reset      int
		retryAfter int
	}{
		{"allowed, full", ratelimit.Decision{Allowed: true}, 0, 0},
		{"allowed, reset rounds up", ratelimit.Decision{Allowed: true, ResetAfter: 1001 * ms}, 2, 0},
		{"allowed, whole second", ratelimit.Decision{Allowed: true, ResetAfter: time.Second}, 1, 0},
		{"refused, short retry is one second", ratelimit.Decision{ResetAfter: 10 * ms, RetryAfter: time.Microsecond}, 1, 1},
		{"refused, retry rounds up", ratelimit.Decision{ResetAfter: time.Minute, RetryAfter: 2*time.Second + 1}, 60, 3},
		{"refused, zero retry is one second", ratelimit.Decision{}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.ResetSeconds(); got != tt.reset {
				t.Errorf("ResetSeconds = %d, want %d", got, tt.reset)
			}
			if got := tt.d.RetryAfterSeconds(); got != tt.retryAfter {
				t.Errorf("RetryAfterSeconds = %d, want %d", got, tt.retryAfter)
			}
		})
	}
}
