package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

func TestRedisBucket(t *testing.T) {
	client := mustRedis(t)
	for _, tc := range bucketCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := ratelimit.NewRedis(client, mustPrefix(t, client))
			// Redis reads its own clock, so its decisions are
			// late by however long the calls and sleeps took.
			runBucketCase(t, l, newWallClock(), 10*ms, tc.policy, tc.steps)
		})
	}
}

func TestRedisKeyExpiresWhenBucketIsFull(t *testing.T) {
	ctx := context.Background()
	client := mustRedis(t)
	prefix := mustPrefix(t, client)
	l := ratelimit.NewRedis(client, prefix)
	p := ratelimit.Policy{Name: "chat", Limit: 5, Period: 10 * time.Second}
	for range 3 {
		if _, err := l.Allow(ctx, "user-1", p); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := client.PTTL(ctx, prefix+"chat:user-1").Result()
	if err != nil {
		t.Fatal(err)
	}
	// Three tokens of two seconds each are missing.
	if ttl <= 5*time.Second || ttl > 6*time.Second {
		t.Fatalf("PTTL = %s, want about 6s", ttl)
	}
}

func TestRedisInstancesShareOneLimit(t *testing.T) {
	opts := redisOptions(t)
	admin := mustRedis(t)
	tests := []struct {
		name       string
		concurrent bool
	}{
		{"alternating", false},
		{"concurrent", true},
	}
	p := ratelimit.Policy{Name: "shared", Limit: 10, Period: time.Minute}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := mustPrefix(t, admin)
			instances := []ratelimit.Limiter{
				ratelimit.NewRedis(mustClient(t, opts), prefix),
				ratelimit.NewRedis(mustClient(t, opts), prefix),
			}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for i := range 40 {
				call := func() {
					d, err := instances[i%2].Allow(context.Background(), "user-1", p)
					if err != nil {
						t.Error(err)
					}
					if d.Allowed {
						allowed.Add(1)
					}
				}
				if tt.concurrent {
					wg.Go(call)
				} else {
					call()
				}
			}
			wg.Wait()
			if got := allowed.Load(); got != int64(p.Limit) {
				t.Fatalf("allowed %d of 40 requests over two instances, want %d", got, p.Limit)
			}
		})
	}
}
