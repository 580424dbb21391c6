package ratelimit_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/ratelimit"
)

// benchKeys returns n distinct keys, built before the clock starts.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "10.1." + strconv.Itoa(i)
	}
	return keys
}

// benchAllow calls l.Allow over a set of keys, serially and in parallel.
func benchAllow(b *testing.B, l ratelimit.Limiter) {
	ctx := context.Background()
	keys := benchKeys(1024)
	p := ratelimit.Policy{Name: "bench", Limit: 100, Period: time.Second}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := l.Allow(ctx, keys[i%len(keys)], p); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 7919
			for pb.Next() {
				if _, err := l.Allow(ctx, keys[i%len(keys)], p); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

func BenchmarkMemoryAllow(b *testing.B) {
	benchAllow(b, ratelimit.NewMemory(ratelimit.MemoryConfig{}))
}

func BenchmarkRedisAllow(b *testing.B) {
	client := mustRedis(b)
	benchAllow(b, ratelimit.NewRedis(client, mustPrefix(b, client)))
}
