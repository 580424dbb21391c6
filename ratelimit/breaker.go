package ratelimit

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// FallbackConfig configures NewFallback and NewConcurrencyFallback. The zero
// value is ready to use.
type FallbackConfig struct {
	// RetryInterval is how often one call probes the primary while it is
	// down; every other call goes straight to the fallback. Zero means 1s.
	RetryInterval time.Duration
	// Logger receives one warning when an outage starts and one info
	// message when it ends. Nil means slog.Default().
	Logger *slog.Logger
	// OnFallback, if set, is called for every call answered without the
	// primary, such as to count them in a metric. It must be fast and safe
	// for concurrent use.
	OnFallback func()
}

// breaker tracks whether the primary backend is down, lets one probe through
// per RetryInterval while it is, and logs the start and end of each outage.
type breaker struct {
	cfg     FallbackConfig
	backend string // what is limited, for the logs
	mode    string // fail-open or fail-closed, for the logs
	down    atomic.Bool
	mu      sync.Mutex
	since   time.Time // start of the current outage
	nextTry time.Time // earliest time for the next probe
}

func newBreaker(cfg FallbackConfig, backend string, failOpen bool) *breaker {
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	mode := "fail-closed"
	if failOpen {
		mode = "fail-open"
	}
	return &breaker{cfg: cfg, backend: backend, mode: mode}
}

// fallback accounts for one call answered without the primary.
func (b *breaker) fallback() {
	if b.cfg.OnFallback != nil {
		b.cfg.OnFallback()
	}
}

// shouldTry reports whether to call the primary: always while it is up, and
// once per RetryInterval while it is down.
func (b *breaker) shouldTry() bool {
	if !b.down.Load() {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return true
	}
	now := time.Now()
	if now.Before(b.nextTry) {
		return false
	}
	b.nextTry = now.Add(b.cfg.RetryInterval)
	return true
}

// failed records a failed primary call and logs the start of an outage.
func (b *breaker) failed(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.nextTry = now.Add(b.cfg.RetryInterval)
	if b.down.Load() {
		return
	}
	b.down.Store(true)
	b.since = now
	b.cfg.Logger.Warn("ratelimit: redis unavailable, using fallback", "backend", b.backend, "mode", b.mode, "err", err)
}

// succeeded records a successful primary call and logs the end of an outage.
func (b *breaker) succeeded() {
	if !b.down.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.down.Load() {
		return
	}
	b.down.Store(false)
	b.cfg.Logger.Info("ratelimit: redis available again", "backend", b.backend, "mode", b.mode, "outage", time.Since(b.since).Round(time.Millisecond))
}
