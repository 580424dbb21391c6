package ratelimit_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/ratelimit"
)

const retryInterval = 300 * ms

// outage is the shared setup of the fallback tests: a Redis reached through
// a proxy that the test can stop and restart.
type outage struct {
	admin     *redis.Client // reaches Redis directly
	prefix    string
	proxy     *proxy
	client    *redis.Client // reaches Redis through proxy
	logs      logBuffer
	fallbacks atomic.Int64
}

func newOutage(t *testing.T) *outage {
	t.Helper()
	o := &outage{admin: mustRedis(t), proxy: mustProxy(t)}
	o.prefix = mustPrefix(t, o.admin)
	o.client = o.proxy.client()
	return o
}

func (o *outage) config() ratelimit.FallbackConfig {
	return ratelimit.FallbackConfig{
		RetryInterval: retryInterval,
		Logger:        o.logs.logger(),
		OnFallback:    func() { o.fallbacks.Add(1) },
	}
}

// check fails the test unless fallbacks, warnings and infos have happened.
func (o *outage) check(t *testing.T, when string, fallbacks int64, warnings, infos int) {
	t.Helper()
	if got := o.fallbacks.Load(); got != fallbacks {
		t.Errorf("%s: OnFallback called %d times, want %d", when, got, fallbacks)
	}
	if got := o.logs.count("level=WARN"); got != warnings {
		t.Errorf("%s: %d warnings logged, want %d", when, got, warnings)
	}
	if got := o.logs.count("level=INFO"); got != infos {
		t.Errorf("%s: %d infos logged, want %d", when, got, infos)
	}
}

// failModes are the two ways a fallback answers while Redis is down.
var failModes = []struct {
	name     string
	failOpen bool
}{
	{"fail open to memory", true},
	{"fail closed", false},
}

// countingLimiter counts the calls to the Limiter it wraps.
type countingLimiter struct {
	ratelimit.Limiter
	calls atomic.Int64
}

func (c *countingLimiter) Allow(ctx context.Context, key string, p ratelimit.Policy) (ratelimit.Decision, error) {
	c.calls.Add(1)
	return c.Limiter.Allow(ctx, key, p)
}

// restart brings Redis back and waits until the fallback may probe it.
func (o *outage) restart() {
	o.proxy.start()
	time.Sleep(retryInterval + 50*ms)
}

func TestFallbackLimiter(t *testing.T) {
	ctx := context.Background()
	p := ratelimit.Policy{Name: "chat", Limit: 2, Period: time.Minute}
	for _, tt := range failModes {
		t.Run(tt.name, func(t *testing.T) {
			o := newOutage(t)
			var secondary ratelimit.Limiter
			if tt.failOpen {
				secondary = ratelimit.NewMemory(ratelimit.MemoryConfig{})
			}
			primary := &countingLimiter{Limiter: ratelimit.NewRedis(o.client, o.prefix)}
			l := ratelimit.NewFallback(primary, secondary, o.config())
			bucket := o.prefix + "chat:u1"

			// Redis up: Redis decides.
			if d, err := l.Allow(ctx, "u1", p); err != nil || !d.Allowed || d.Remaining != 1 {
				t.Fatalf("with Redis: Allow = %+v, %v; want allowed, 1 remaining", d, err)
			}
			inRedis := o.admin.Get(ctx, bucket).Val()
			if inRedis == "" {
				t.Fatal("with Redis: no bucket in Redis")
			}
			o.check(t, "with Redis", 0, 0, 0)

			// Redis down: the fallback decides, and Redis is not
			// asked again before the retry interval.
			o.proxy.stop()
			calls := primary.calls.Load()
			for i := range 5 {
				d, err := l.Allow(ctx, "u1", p)
				switch {
				case !tt.failOpen:
					if !errors.Is(err, ratelimit.ErrUnavailable) || core.ErrorCode(err) != core.LimiterUnavailable {
						t.Fatalf("without Redis, call %d: Allow = %+v, %v; want ErrUnavailable, a %s error", i, d, err, core.LimiterUnavailable)
					}
				case err != nil || d.Allowed != (i < p.Limit):
					t.Fatalf("without Redis, call %d: Allow = %+v, %v; want allowed %v by memory", i, d, err, i < p.Limit)
				}
			}
			if n := primary.calls.Load() - calls; n != 1 {
				t.Errorf("without Redis: Redis asked %d times within the retry interval, want once", n)
			}
			o.check(t, "without Redis", 5, 1, 0)

			// Redis back: Redis decides again, from the state it kept.
			o.restart()
			if d, err := l.Allow(ctx, "u1", p); err != nil || !d.Allowed || d.Remaining != 0 {
				t.Fatalf("Redis back: Allow = %+v, %v; want allowed, 0 remaining", d, err)
			}
			if o.admin.Get(ctx, bucket).Val() == inRedis {
				t.Fatal("Redis back: bucket in Redis unchanged")
			}
			o.check(t, "Redis back", 5, 1, 1)
		})
	}
}

func TestFallbackConcurrency(t *testing.T) {
	ctx := context.Background()
	for _, tt := range failModes {
		t.Run(tt.name, func(t *testing.T) {
			o := newOutage(t)
			var secondary ratelimit.ConcurrencyLimiter
			if tt.failOpen {
				secondary = ratelimit.NewMemoryConcurrency()
			}
			l := ratelimit.NewConcurrencyFallback(ratelimit.NewRedisConcurrency(o.client, o.prefix, 0), secondary, o.config())
			holders := func() int64 { return o.admin.ZCard(ctx, o.prefix+"u1").Val() }

			// Redis up: the slot is taken in Redis.
			release, ok, err := l.Acquire(ctx, "u1", 1)
			if err != nil || !ok || holders() != 1 {
				t.Fatalf("with Redis: Acquire = %v, %v with %d holders in Redis; want a slot in Redis", ok, err, holders())
			}
			release()
			if holders() != 0 {
				t.Fatal("with Redis: release left the holder in Redis")
			}

			// Redis down: the fallback decides.
			o.proxy.stop()
			for i := range 2 {
				release, ok, err := l.Acquire(ctx, "u1", 1)
				switch {
				case !tt.failOpen:
					if !errors.Is(err, ratelimit.ErrUnavailable) || ok || release == nil {
						t.Fatalf("without Redis, call %d: Acquire = %v, %v; want ErrUnavailable", i, ok, err)
					}
				case err != nil || ok != (i == 0):
					t.Fatalf("without Redis, call %d: Acquire = %v, %v; want ok %v by memory", i, ok, err, i == 0)
				}
				defer release()
			}
			o.check(t, "without Redis", 2, 1, 0)

			// Redis back: slots are taken in Redis again.
			o.restart()
			release, ok, err = l.Acquire(ctx, "u1", 1)
			if err != nil || !ok || holders() != 1 {
				t.Fatalf("Redis back: Acquire = %v, %v with %d holders in Redis; want a slot in Redis", ok, err, holders())
			}
			release()
			o.check(t, "Redis back", 2, 1, 1)
		})
	}
}

func TestFallbackCallerGaveUp(t *testing.T) {
	o := newOutage(t)
	l := ratelimit.NewFallback(ratelimit.NewRedis(o.client, o.prefix), ratelimit.NewMemory(ratelimit.MemoryConfig{}), o.config())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := l.Allow(ctx, "u1", ratelimit.Policy{Name: "p", Limit: 1, Period: time.Second})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Allow = %+v, %v; want context.Canceled", d, err)
	}
	o.check(t, "canceled", 0, 0, 0)
}
