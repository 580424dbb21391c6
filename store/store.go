// Package store is the only package that talks to PostgreSQL. It wraps the sqlc-generated queries in gen/db,
// implements the store interfaces that the auth and chat services declare beside themselves, converts rows
// into those services' types and maps driver errors to core codes, so that no pgx or pgtype value leaks.
package store

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/db"
)

// DB is what a Store runs its queries on: a connection pool, or a transaction (as in tests, which roll it
// back), in which the Store's own transactions become savepoints.
type DB interface {
	db.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store runs the application's queries.
type Store struct {
	db      DB
	q       *db.Queries
	replica *readReplica // nil without a read replica
}

var (
	_ auth.Store = (*Store)(nil)
	_ chat.Store = (*Store)(nil)
)

// New returns a Store that runs its queries on d.
func New(d DB) *Store {
	return &Store{db: d, q: db.New(d)}
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(q *db.Queries) error) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		return fn(s.q.WithTx(tx))
	})
}

// databaseRetryAfter is how long clients are told to wait when the database is unavailable.
const databaseRetryAfter = 5 * time.Second

// interpretError maps driver errors to core errors about object, such as "conversation", and a database out
// of reach to core.Unavailable, and leaves the rest as they are.
func interpretError(err error, object string) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return core.Wrap(core.NotFound, err, object+" not found")
	}
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	_, noConnection := errors.AsType[*pgconn.ConnectError](err)
	switch {
	case noConnection, ok && (strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")):
		// Connection exceptions and operator intervention: PostgreSQL is down, restarting, or ended the session.
		e := core.Wrap(core.Unavailable, err, "the database is unavailable")
		e.RetryAfter = databaseRetryAfter
		return e
	case !ok:
	case pgErr.Code == "23505": // unique_violation
		return core.Wrap(core.Conflict, err, object+" exists already")
	case pgErr.Code == "23503": // foreign_key_violation: what it belongs to was deleted meanwhile
		return core.Wrap(core.NotFound, err, object+" not found")
	}
	return err
}
