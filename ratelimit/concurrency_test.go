package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

// concurrencyBackends builds each ConcurrencyLimiter implementation for a
// test.
func concurrencyBackends(t *testing.T) map[string]func(t *testing.T) ratelimit.ConcurrencyLimiter {
	client := mustRedis(t)
	return map[string]func(t *testing.T) ratelimit.ConcurrencyLimiter{
		"memory": func(*testing.T) ratelimit.ConcurrencyLimiter {
			return ratelimit.NewMemoryConcurrency()
		},
		"redis": func(t *testing.T) ratelimit.ConcurrencyLimiter {
			return ratelimit.NewRedisConcurrency(client, mustPrefix(t, client), 0)
		},
	}
}

func TestConcurrencyCapsAndReleases(t *testing.T) {
	steps := []struct {
		action string // acquire or release
		holder string // names the slot an acquire takes and a release frees
		key    string
		limit  int
		wantOK bool
	}{
		{"acquire", "a", "u1", 2, true},
		{"acquire", "b", "u1", 2, true},
		{"acquire", "c", "u1", 2, false},
		{"acquire", "d", "u2", 2, true},
		{"release", "a", "", 0, false},
		{"acquire", "e", "u1", 2, true}, // a's slot is reused
		{"release", "a", "", 0, false},  // a second release frees nothing
		{"release", "c", "", 0, false},  // a refused holder frees nothing
		{"acquire", "f", "u1", 2, false},
		{"acquire", "g", "u3", 0, false},
		{"release", "b", "", 0, false},
		{"release", "e", "", 0, false},
		{"release", "d", "", 0, false},
		{"acquire", "h", "u1", 2, true},
		{"acquire", "i", "u1", 2, true},
		{"acquire", "j", "u1", 2, false},
		{"release", "h", "", 0, false},
		{"release", "i", "", 0, false},
	}
	for name, newLimiter := range concurrencyBackends(t) {
		t.Run(name, func(t *testing.T) {
			l := newLimiter(t)
			releases := map[string]func(){}
			for i, s := range steps {
				if s.action == "release" {
					releases[s.holder]()
					continue
				}
				release, ok, err := l.Acquire(context.Background(), s.key, s.limit)
				if err != nil || ok != s.wantOK || release == nil {
					t.Fatalf("step %d: Acquire(%q, %d) = ok %v, err %v, release nil %v; want ok %v", i, s.key, s.limit, ok, err, release == nil, s.wantOK)
				}
				releases[s.holder] = release
			}
		})
	}
}

func TestConcurrencyUnderContention(t *testing.T) {
	const limit, callers = 3, 20
	for name, newLimiter := range concurrencyBackends(t) {
		t.Run(name, func(t *testing.T) {
			l := newLimiter(t)
			var granted atomic.Int64
			var wg sync.WaitGroup
			releases := make(chan func(), callers)
			for range callers {
				wg.Go(func() {
					release, ok, err := l.Acquire(context.Background(), "u1", limit)
					if err != nil {
						t.Error(err)
					}
					if ok {
						granted.Add(1)
					}
					releases <- release
				})
			}
			wg.Wait()
			close(releases)
			for release := range releases {
				release()
			}
			if got := granted.Load(); got != limit {
				t.Fatalf("%d of %d concurrent callers got a slot, want %d", got, callers, limit)
			}
		})
	}
}

func TestRedisConcurrencyLease(t *testing.T) {
	ctx := context.Background()
	admin := mustRedis(t)
	const lease = 300 * ms
	tests := []struct {
		name string
		// crash makes the holder's instance stop renewing.
		crash     bool
		wait      time.Duration
		wantTaken bool
	}{
		{"a held slot is renewed beyond its lease", false, 3 * lease, true},
		{"a crashed instance's slot frees itself after the lease", true, lease + 100*ms, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := mustPrefix(t, admin)
			holderClient := mustClient(t, redisOptions(t))
			holder := ratelimit.NewRedisConcurrency(holderClient, prefix, lease)
			other := ratelimit.NewRedisConcurrency(admin, prefix, lease)

			release, ok, err := holder.Acquire(ctx, "u1", 1)
			if err != nil || !ok {
				t.Fatalf("holder Acquire = %v, %v", ok, err)
			}
			defer release()
			if tt.crash {
				_ = holderClient.Close()
			}
			if _, ok, _ := other.Acquire(ctx, "u1", 1); ok {
				t.Fatal("second holder got the only slot at once")
			}
			if ttl := admin.PTTL(ctx, prefix+"u1").Val(); ttl <= 0 || ttl > lease {
				t.Fatalf("PTTL = %s, want in (0, %s]", ttl, lease)
			}
			time.Sleep(tt.wait)
			otherRelease, ok, err := other.Acquire(ctx, "u1", 1)
			if err != nil || ok == tt.wantTaken {
				t.Fatalf("after %s: second Acquire = %v, %v; want ok %v", tt.wait, ok, err, !tt.wantTaken)
			}
			otherRelease()
		})
	}
}
