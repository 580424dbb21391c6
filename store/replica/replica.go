// Package replica decides, read by read, whether a PostgreSQL streaming replica may serve a read that can be
// slightly stale, without ever showing users a state older than their own last write through this process.
//
// A Monitor polls both servers: each poll takes the time, asks the primary how far it has flushed its
// write-ahead log (every transaction whose commit returned before then lies below that position, with
// synchronous_commit on, the default) and asks the replica how far it has replayed. Once the replica has
// replayed past a sample's position, everything committed before the sample's time is visible on it: that
// time is the replica's coverage. The store tells the Monitor after each write which keys (the user, the
// conversation) it touched, and the Monitor remembers when, in a bounded map of recent writers. A read of a
// key goes to the replica only when that key's last write came before the coverage, so read-your-writes
// costs no round trip per write and no query per read: a map lookup. A key not in the map counts as written
// at the floor: the latest write time of the keys forgotten to bound it.
//
// The replica is degraded, and every read goes to the primary, while a poll fails, while a read on it has
// failed since the last good poll, and when it is more than MaxLag behind the primary.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/golang-lru/v2/simplelru"

	"github.com/deepersensor/deepersensor/gen/db"
)

// Defaults of Config.
const (
	DefaultInterval = 250 * time.Millisecond
	DefaultRemember = 100_000
)

// maxSamples bounds the positions waiting for the replica to replay them. Past it the second oldest is
// dropped: the oldest stays, so that the lag stays measured, and the coverage can only come later.
const maxSamples = 256

// Config configures a Monitor.
type Config struct {
	// MaxLag is how far behind the primary the replica may be, and how old the last good poll, before it is
	// degraded.
	MaxLag time.Duration
	// Interval is the time between polls; DefaultInterval when zero.
	Interval time.Duration
	// Remember is how many recent writers are remembered by key; DefaultRemember when zero. Forgetting one
	// only sends reads to the primary for longer.
	Remember int
	Logger   *slog.Logger
}

// sample is where the primary's flushed write-ahead log ended at a time.
type sample struct {
	at  time.Time
	lsn int64
}

// Monitor tracks a replica's progress and recent writes. It is safe for concurrent use.
type Monitor struct {
	primary, replica *db.Queries
	cfg              Config

	mu        sync.Mutex
	writes    *simplelru.LRU[uuid.UUID, time.Time] // when each key was last written, oldest first
	floor     time.Time                            // the latest write time among keys forgotten
	pending   []sample                             // positions the replica has not replayed yet, oldest first
	coveredAt time.Time                            // everything committed before it is on the replica
	polledAt  time.Time                            // of the last good poll
	err       error                                // why the replica is unusable until the next good poll
	degraded  bool                                 // as last logged
}

// New returns a Monitor of the replica behind replicaDB, which follows the primary behind primaryDB. It polls
// when Run or Poll runs; until the first good poll the replica is degraded.
func New(primaryDB, replicaDB db.DBTX, cfg Config) *Monitor {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Remember <= 0 {
		cfg.Remember = DefaultRemember
	}
	m := &Monitor{primary: db.New(primaryDB), replica: db.New(replicaDB), cfg: cfg, floor: time.Now(), degraded: true}
	// The size is positive, the only error NewLRU returns.
	m.writes, _ = simplelru.NewLRU(cfg.Remember, func(_ uuid.UUID, at time.Time) {
		m.floor = later(m.floor, at)
	})
	return m
}

// Run polls the replica every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	ticker := time.NewTicker(m.cfg.Interval)
	defer ticker.Stop()
	for {
		m.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Poll checks the replica once, as Run does every Interval: it samples the primary's position, then reads
// the replica's, and moves the coverage forward. The sample is kept when the replica does not answer, so
// that the lag goes on growing while it is down.
func (m *Monitor) Poll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(m.cfg.Interval, time.Second))
	defer cancel()
	at := time.Now()
	flushed, err := m.primary.PrimaryFlushLSN(ctx)
	if err != nil {
		m.fail(fmt.Errorf("read the primary's write-ahead log position: %w", err))
		return
	}
	m.mu.Lock()
	m.pending = append(m.pending, sample{at: at, lsn: flushed})
	if len(m.pending) > maxSamples {
		m.pending = append(m.pending[:1], m.pending[2:]...)
	}
	m.mu.Unlock()
	replayed, err := m.replica.ReplicaReplayLSN(ctx)
	switch {
	case err != nil:
		m.fail(fmt.Errorf("read the replica's replay position: %w", err))
		return
	case replayed < 0:
		m.fail(errors.New("the server of DS_DATABASE_READ_URL is not a streaming replica (pg_last_wal_replay_lsn is null)"))
		return
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for n < len(m.pending) && m.pending[n].lsn <= replayed {
		n++
	}
	if n > 0 {
		m.coveredAt = m.pending[n-1].at
		m.pending = append(m.pending[:0], m.pending[n:]...)
	}
	for {
		_, wrote, ok := m.writes.GetOldest()
		if !ok || !wrote.Before(m.coveredAt) {
			break
		}
		m.writes.RemoveOldest() // covered: the floor it raises stays below the coverage
	}
	m.polledAt, m.err = time.Now(), nil
	m.logChange()
}

// fail makes the replica degraded until the next good poll.
func (m *Monitor) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
	m.logChange()
}

// Failed reports a read that failed on the replica: it is degraded until the next good poll.
func (m *Monitor) Failed(err error) {
	m.fail(fmt.Errorf("a read failed on the replica: %w", err))
}

// logChange logs when the replica becomes degraded or healthy again. m.mu must be held.
func (m *Monitor) logChange() {
	err := m.check(time.Now())
	if (err != nil) == m.degraded {
		return
	}
	m.degraded = err != nil
	switch {
	case m.cfg.Logger == nil:
	case err != nil:
		m.cfg.Logger.Warn("read replica degraded: reads go to the primary", "component", "database_replica", "error", err)
	default:
		m.cfg.Logger.Info("read replica healthy: it serves reads", "component", "database_replica")
	}
}

// Wrote records that keys, such as a user and a conversation, were just written on the primary. Call it
// after the write returned, whether it failed or not: a commit whose answer was lost may have happened.
func (m *Monitor) Wrote(keys ...uuid.UUID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for _, k := range keys {
		m.writes.Add(k, now)
	}
}

// Fresh reports whether the replica may serve a read of keys now: it is healthy and has replayed the last
// write of each. With no keys, it reports whether the replica is healthy.
func (m *Monitor) Fresh(keys ...uuid.UUID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.check(time.Now()) != nil {
		return false
	}
	for _, k := range keys {
		wrote, ok := m.writes.Peek(k)
		if !ok {
			wrote = m.floor
		}
		if !wrote.Before(m.coveredAt) {
			return false
		}
	}
	return true
}

// Check returns nil when the replica is healthy, else why it is degraded.
func (m *Monitor) Check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.check(time.Now())
}

// Lag is how long the oldest write-ahead log position the replica has not replayed has been flushed on the
// primary: zero when it has replayed every one sampled.
func (m *Monitor) Lag() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lag(time.Now())
}

func (m *Monitor) lag(now time.Time) time.Duration {
	if len(m.pending) == 0 {
		return 0
	}
	return now.Sub(m.pending[0].at)
}

func (m *Monitor) check(now time.Time) error {
	switch {
	case m.err != nil:
		return m.err
	case m.polledAt.IsZero():
		return errors.New("not polled yet")
	case now.Sub(m.polledAt) > m.cfg.MaxLag:
		return fmt.Errorf("last polled %s ago, more than DS_DATABASE_READ_MAX_LAG (%s)", now.Sub(m.polledAt).Round(time.Millisecond), m.cfg.MaxLag)
	case m.lag(now) > m.cfg.MaxLag:
		return fmt.Errorf("%s behind the primary, more than DS_DATABASE_READ_MAX_LAG (%s)", m.lag(now).Round(time.Millisecond), m.cfg.MaxLag)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
