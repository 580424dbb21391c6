package auth

import (
	"container/list"
	"sync"
	"time"
)

// lru is a map of at most size entries, each until a deadline, that forgets the least recently used entry to
// make room. It is safe for concurrent use.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *lruEntry[K, V], the most recently used first
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
	until time.Time
}

func newLRU[K comparable, V any](size int) *lru[K, V] {
	return &lru[K, V]{size: size, order: list.New(), items: make(map[K]*list.Element)}
}

// get returns the value of key unless it is missing or its deadline is not after now.
func (c *lru[K, V]) get(key K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[K, V])
	if !e.until.After(now) {
		c.order.Remove(el)
		delete(c.items, key)
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.value, true
}

// put stores value for key until a deadline, forgetting the least recently used entry when the map is full.
func (c *lru[K, V]) put(key K, value V, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = &lruEntry[K, V]{key, value, until}
		c.order.MoveToFront(el)
		return
	}
	if c.order.Len() >= c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[K, V]).key)
	}
	c.items[key] = c.order.PushFront(&lruEntry[K, V]{key, value, until})
}
