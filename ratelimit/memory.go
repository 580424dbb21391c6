package ratelimit

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// shardCount spreads keys over this many independently locked maps so that
// concurrent requests for different keys rarely wait for each other.
const shardCount = 64

// DefaultMaxKeys is the number of buckets a Memory limiter keeps at most
// when MemoryConfig.MaxKeys is zero.
const DefaultMaxKeys = 1 << 17

// MemoryConfig configures NewMemory. The zero value is ready to use.
type MemoryConfig struct {
	// MaxKeys caps the number of buckets kept in memory, so that a flood
	// of distinct keys cannot grow memory without bound. The cap is split
	// over 64 shards of at least one bucket each. When a shard is full,
	// expired buckets are dropped first and then the buckets closest to
	// being full again, which forgets the least. Zero means DefaultMaxKeys.
	MaxKeys int
	// Now returns the current time; nil means time.Now. Tests inject a
	// fake clock here.
	Now func() time.Time
}

// Memory is a Limiter that keeps buckets in this process. It is the default
// when no Redis is configured and the fallback when Redis is down; limits
// are per instance. It needs no background goroutine: full shards are swept
// when a new key arrives.
type Memory struct {
	now    func() time.Time
	epoch  time.Time
	seed   maphash.Seed
	shards [shardCount]shard
}

var _ Limiter = (*Memory)(nil)

// shard is one locked part of the bucket map.
type shard struct {
	mu      sync.Mutex
	maxKeys int
	tats    map[bucketKey]time.Duration
}

// bucketKey identifies a bucket without building a combined string.
type bucketKey struct {
	policy, key string
}

// NewMemory returns an in-memory limiter.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Memory{now: cfg.Now, epoch: cfg.Now(), seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].maxKeys = max(1, cfg.MaxKeys/shardCount)
		m.shards[i].tats = make(map[bucketKey]time.Duration)
	}
	return m
}

// Allow takes one token from key's bucket for policy p if one is left. It
// returns an error only for an invalid policy.
func (m *Memory) Allow(_ context.Context, key string, p Policy) (Decision, error) {
	if err := p.validate(); err != nil {
		return Decision{}, err
	}
	// Time since epoch, measured on the monotonic clock when there is one.
	now := m.now().Sub(m.epoch)
	k := bucketKey{policy: p.Name, key: key}
	s := &m.shards[maphash.String(m.seed, key)%shardCount]

	s.mu.Lock()
	defer s.mu.Unlock()
	tat, found := s.tats[k]
	tat, d := gcra(tat, now, p)
	if d.Allowed {
		if !found && len(s.tats) >= s.maxKeys {
			s.makeRoom(now)
		}
		s.tats[k] = tat
	}
	return d, nil
}

// Len returns the number of buckets currently kept, for metrics and tests.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}

// makeRoom shrinks a full shard to three quarters of its capacity, so that
// the cost of a sweep is shared by the next quarter of new keys. It drops
// every expired bucket, then the buckets with the earliest tat. Keeping the
// latest tats means a client cannot reset its own exhausted bucket by
// spraying fresh keys. The caller holds s.mu.
func (s *shard) makeRoom(now time.Duration) {
	keep := s.maxKeys * 3 / 4
	live := make([]time.Duration, 0, len(s.tats))
	for k, tat := range s.tats {
		if tat <= now {
			delete(s.tats, k)
		} else {
			live = append(live, tat)
		}
	}
	if len(live) <= keep {
		return
	}
	if keep == 0 {
		clear(s.tats)
		return
	}
	slices.Sort(live)
	cut := live[len(live)-keep] // the earliest tat to keep
	for k, tat := range s.tats {
		// Among buckets tied at the cut, drop only as many as needed.
		if tat < cut || (tat == cut && len(s.tats) > keep) {
			delete(s.tats, k)
		}
	}
}
