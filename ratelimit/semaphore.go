package ratelimit

import (
	"context"
	"time"
)

// Semaphore bounds how many callers of this process hold a slot at once,
// such as the requests an instance serves or the calls it makes to a model
// server. A caller may wait a little for a slot, so that a short burst queues
// briefly instead of being refused, while a flood queues in nobody's memory.
type Semaphore struct {
	slots chan struct{}
	wait  time.Duration
}

// NewSemaphore returns a semaphore of n slots (at least one) whose Acquire
// waits at most wait for a free slot; zero or less refuses at once.
func NewSemaphore(n int, wait time.Duration) *Semaphore {
	return &Semaphore{slots: make(chan struct{}, max(1, n)), wait: wait}
}

// Acquire takes a slot. When ok is true the caller holds it until it calls
// release, which must be called once. ok is false when no slot freed up
// within the wait, and err is ctx.Err() when ctx ended first; then release
// is a no-op.
func (s *Semaphore) Acquire(ctx context.Context) (release func(), ok bool, err error) {
	select {
	case s.slots <- struct{}{}:
		return s.release, true, nil
	default:
	}
	if s.wait <= 0 {
		return noop, false, nil
	}
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		return s.release, true, nil
	case <-timer.C:
		return noop, false, nil
	case <-ctx.Done():
		return noop, false, ctx.Err()
	}
}

func (s *Semaphore) release() { <-s.slots }
