package ratelimit_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

func TestMemoryBucket(t *testing.T) {
	for _, tc := range bucketCases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			l := ratelimit.NewMemory(ratelimit.MemoryConfig{Now: clock.Now})
			runBucketCase(t, l, clock, 0, tc.policy, tc.steps)
		})
	}
}

func TestMemorySeparatesKeysAndPolicies(t *testing.T) {
	ctx := context.Background()
	chat := ratelimit.Policy{Name: "chat", Limit: 1, Period: time.Minute}
	login := ratelimit.Policy{Name: "login", Limit: 1, Period: time.Minute}
	tests := []struct {
		name   string
		key    string
		policy ratelimit.Policy
		want   bool
	}{
		{"first request", "a", chat, true},
		{"same key and policy", "a", chat, false},
		{"other key", "b", chat, true},
		{"other policy", "a", login, true},
	}
	l := ratelimit.NewMemory(ratelimit.MemoryConfig{Now: newFakeClock().Now})
	for _, tt := range tests {
		d, err := l.Allow(ctx, tt.key, tt.policy)
		if err != nil || d.Allowed != tt.want {
			t.Fatalf("%s: Allow = %+v, %v; want allowed %v", tt.name, d, err, tt.want)
		}
	}
}

func TestMemoryBoundedKeys(t *testing.T) {
	tests := []struct {
		name    string
		maxKeys int
		wantCap int
		spray   int
	}{
		{"small cap", 64 * 40, 64 * 40, 100_000},
		{"cap not a multiple of the shard count", 1000, 1000, 50_000},
		{"cap below the shard count", 10, 64, 10_000},
		{"default cap", 0, ratelimit.DefaultMaxKeys, 2 * ratelimit.DefaultMaxKeys},
	}
	ctx := context.Background()
	p := ratelimit.Policy{Name: "ip", Limit: 10, Period: time.Hour}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The clock stands still, so no bucket expires and the
			// cap alone must hold memory down.
			l := ratelimit.NewMemory(ratelimit.MemoryConfig{MaxKeys: tt.maxKeys, Now: newFakeClock().Now})
			for i := range tt.spray {
				d, err := l.Allow(ctx, "10.0."+strconv.Itoa(i), p)
				if err != nil || !d.Allowed {
					t.Fatalf("key %d: Allow = %+v, %v; want allowed", i, d, err)
				}
				if i%1000 == 0 && l.Len() > tt.wantCap {
					t.Fatalf("after %d keys: Len = %d, want <= %d", i+1, l.Len(), tt.wantCap)
				}
			}
			if n := l.Len(); n > tt.wantCap || n < tt.wantCap/2 {
				t.Fatalf("Len = %d, want between %d and %d", n, tt.wantCap/2, tt.wantCap)
			}
		})
	}
}

func TestMemoryEvictionKeepsExhaustedBuckets(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	l := ratelimit.NewMemory(ratelimit.MemoryConfig{MaxKeys: 64 * 16, Now: clock.Now})
	short := ratelimit.Policy{Name: "short", Limit: 1, Period: time.Second}
	long := ratelimit.Policy{Name: "long", Limit: 1, Period: time.Hour}

	// An exhausted long bucket must survive a spray of short-lived keys.
	if d, _ := l.Allow(ctx, "abuser", long); !d.Allowed {
		t.Fatal("first request of abuser refused")
	}
	for i := range 100_000 {
		if i%10_000 == 0 {
			clock.Advance(time.Second) // expire the spray so far
		}
		if _, err := l.Allow(ctx, strconv.Itoa(i), short); err != nil {
			t.Fatal(err)
		}
	}
	if d, _ := l.Allow(ctx, "abuser", long); d.Allowed {
		t.Fatal("spray of fresh keys reset the abuser's exhausted bucket")
	}
	if n := l.Len(); n > 64*16 {
		t.Fatalf("Len = %d, want <= %d", n, 64*16)
	}
}
