// Package store is the only package that talks to PostgreSQL. It wraps the sqlc-generated queries in gen/db,
// maps driver errors to the sentinels below and converts rows to the plain types of this package, so that no
// pgx or pgtype value leaks to its callers.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/gen/db"
)

var (
	// ErrNotFound means no row matched: the object does not exist or belongs to someone else.
	ErrNotFound = errors.New("not found")
	// ErrConflict means a unique constraint refused the row.
	ErrConflict = errors.New("conflict")
)

// Store runs the application's queries on a connection pool.
type Store struct {
	pool *pgxpool.Pool
	q    *db.Queries
}

// New returns a Store that uses pool.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, q: db.New(pool)}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.pool.Ping(ctx)
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(q *db.Queries) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return fn(s.q.WithTx(tx))
	})
}

// interpretError maps driver errors to this package's sentinels and leaves the rest as they are.
func interpretError(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
	}
	return err
}
