package ratelimit

import (
	"context"
	"sync"
)

// noop is the release func of a slot that was not granted.
func noop() {}

// MemoryConcurrency is a ConcurrencyLimiter that counts holders in this
// process. It keeps a key only while it has holders.
type MemoryConcurrency struct {
	mu      sync.Mutex
	holders map[string]int
}

var _ ConcurrencyLimiter = (*MemoryConcurrency)(nil)

// NewMemoryConcurrency returns an in-memory concurrency limiter.
func NewMemoryConcurrency() *MemoryConcurrency {
	return &MemoryConcurrency{holders: make(map[string]int)}
}

// Acquire takes one of limit slots for key if one is free. It never returns
// an error.
func (m *MemoryConcurrency) Acquire(_ context.Context, key string, limit int) (release func(), ok bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holders[key] >= limit {
		return noop, false, nil
	}
	m.holders[key]++
	return sync.OnceFunc(func() { m.release(key) }), true, nil
}

func (m *MemoryConcurrency) release(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.holders[key] <= 1 {
		delete(m.holders, key)
	} else {
		m.holders[key]--
	}
}
