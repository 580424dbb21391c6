package ratelimit

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultLease is the lease of a Redis concurrency slot when
// NewRedisConcurrency is given none.
const DefaultLease = 30 * time.Second

// releaseTimeout bounds the ZREM of a release; if it fails, the slot frees
// itself when its lease runs out.
const releaseTimeout = time.Second

// acquireScript takes a slot in one atomic round trip. KEYS[1] is a sorted
// set of holder ids scored by the server time (ms) at which their lease
// ends; ARGV[1] is the new holder's id, ARGV[2] the limit and ARGV[3] the
// lease in ms. Expired holders are dropped first. The set expires with the
// newest lease, so an abandoned key disappears. It returns 1 when the slot
// was taken, else 0.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
	return 0
end
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[3])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
`)

// renewScript extends the lease of holder ARGV[1] of KEYS[1] to ARGV[2] ms
// from now. It returns 0, and adds nothing, when the holder has lost its
// slot, else 1.
var renewScript = redis.NewScript(`
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
	return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// RedisConcurrency is a ConcurrencyLimiter shared by all instances through
// Redis. Each slot is a lease that a goroutine renews every third of the
// lease until release, so a crashed instance blocks its slots for at most
// one lease, while a stream may run for as long as it likes. The tradeoff:
// a holder whose renewals fail for a whole lease (a Redis outage longer than
// the lease) loses its slot in Redis while it keeps running, so the key may
// briefly exceed its limit.
type RedisConcurrency struct {
	client redis.UniversalClient
	prefix string
	lease  time.Duration
}

var _ ConcurrencyLimiter = (*RedisConcurrency)(nil)

// NewRedisConcurrency returns a concurrency limiter that keeps the holders
// of key in the Redis sorted set prefix+key, with slots leased for lease
// (DefaultLease when below a millisecond, the resolution of a lease).
func NewRedisConcurrency(client redis.UniversalClient, prefix string, lease time.Duration) *RedisConcurrency {
	if lease < time.Millisecond {
		lease = DefaultLease
	}
	return &RedisConcurrency{client: client, prefix: prefix, lease: lease}
}

// Acquire takes one of limit slots for key if one is free, in one EVALSHA
// round trip. While the slot is held, its lease is renewed in the
// background; release stops the renewal and frees the slot.
func (r *RedisConcurrency) Acquire(ctx context.Context, key string, limit int) (release func(), ok bool, err error) {
	id := rand.Text()
	zkey := r.prefix + key
	took, err := acquireScript.Run(ctx, r.client, []string{zkey}, id, limit, r.lease.Milliseconds()).Int()
	if err != nil {
		return noop, false, fmt.Errorf("ratelimit: redis acquire %q: %w", key, err)
	}
	if took == 0 {
		return noop, false, nil
	}
	return r.hold(context.WithoutCancel(ctx), zkey, id), true, nil
}

// hold renews the lease of holder id until the returned release func is
// called, which then removes the holder.
func (r *RedisConcurrency) hold(ctx context.Context, zkey, id string) func() {
	renewCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(r.lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-tick.C:
				// A failed renewal is retried at the next tick;
				// a lost slot cannot be won back.
				kept, err := renewScript.Run(renewCtx, r.client, []string{zkey}, id, r.lease.Milliseconds()).Int()
				if err == nil && kept == 0 {
					return
				}
			}
		}
	}()
	return sync.OnceFunc(func() {
		stop()
		<-done
		ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		defer cancel()
		r.client.ZRem(ctx, zkey, id)
	})
}
