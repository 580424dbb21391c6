package store

import (
	"context"
	"errors"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/gen/db"
	"github.com/deepersensor/deepersensor/store/replica"
)

// The pools that serve reads, as WithReplica's countRead names them.
const (
	PoolPrimary = "primary"
	PoolReplica = "replica"
)

// readReplica is where a Store sends the reads that may be slightly stale.
type readReplica struct {
	q         *db.Queries
	monitor   *replica.Monitor
	countRead func(pool string)
}

// WithReplica returns a copy of s that sends the reads that may be slightly stale (a user's conversations, a
// conversation and its messages, audit events, usage reports) to the streaming replica behind replicaDB
// whenever monitor says that it is healthy and has replayed the last write of what they read, and that tells
// monitor of each write that such reads could see. Everything else, and a read that fails on the replica,
// runs on the primary. countRead, when set, learns which pool served each of those reads: PoolPrimary or
// PoolReplica.
func (s *Store) WithReplica(replicaDB db.DBTX, monitor *replica.Monitor, countRead func(pool string)) *Store {
	if countRead == nil {
		countRead = func(string) {}
	}
	c := *s
	c.replica = &readReplica{q: db.New(replicaDB), monitor: monitor, countRead: countRead}
	return &c
}

// wrote tells the replica monitor, if any, that keys (users, conversations) were written. Writes call it
// after they return, failed or not, since a commit whose answer was lost may have happened.
func (s *Store) wrote(keys ...uuid.UUID) {
	if s.replica != nil {
		s.replica.monitor.Wrote(keys...)
	}
}

// staleRead runs read on the replica when it has replayed the last write of each of keys, and on the primary
// otherwise. A read that fails on the replica runs again on the primary, and one that finds no row too, so
// that a row just written elsewhere is never reported missing.
func staleRead[T any](ctx context.Context, s *Store, keys []uuid.UUID, read func(q *db.Queries) (T, error)) (T, error) {
	r := s.replica
	if r == nil {
		return read(s.q)
	}
	if r.monitor.Fresh(keys...) {
		v, err := read(r.q)
		switch {
		case err == nil:
			r.countRead(PoolReplica)
			return v, nil
		case ctx.Err() != nil:
			return v, err
		case !errors.Is(err, pgx.ErrNoRows):
			r.monitor.Failed(err)
		}
	}
	r.countRead(PoolPrimary)
	return read(s.q)
}
