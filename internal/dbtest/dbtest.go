// Package dbtest gives each test a fresh, migrated PostgreSQL database of its own on the real server, and
// drops it when the test ends. The server comes from DS_TEST_DATABASE_URL (default: the local server's
// "postgres" database); a test that cannot reach it fails rather than skips.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/store"
)

// DefaultAdminURL is the server used when DS_TEST_DATABASE_URL is not set.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// prefix starts the name of every test database, followed by its creation time in Unix seconds.
const prefix = "ds_test_"

// staleAfter is the age at which a test database is taken for the leftover of a killed test process (a
// fuzzing worker, an interrupted run) and dropped.
const staleAfter = time.Hour

// AdminURL is the URL of the database the tests connect to for creating and dropping their own.
func AdminURL() string {
	if u := os.Getenv("DS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultAdminURL
}

// NewURL creates an empty database for the test and returns its URL. The database is dropped when the
// test ends.
func NewURL(tb testing.TB) string {
	tb.Helper()
	u, dropIt, err := CreateDatabase(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dropIt(); err != nil {
			tb.Error(err)
		}
	})
	return u
}

// CreateDatabase creates an empty database on the test server and returns its URL and a func that drops
// it. It is for TestMain, which has no testing.TB; tests use NewURL or New.
func CreateDatabase(ctx context.Context) (string, func() error, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(AdminURL())
	if err != nil {
		return "", nil, fmt.Errorf("parse DS_TEST_DATABASE_URL: %w", err)
	}
	u, err := url.Parse(AdminURL())
	if err != nil {
		return "", nil, fmt.Errorf("DS_TEST_DATABASE_URL must be a postgres:// URL: %w", err)
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", nil, fmt.Errorf("connect to the test PostgreSQL server (set DS_TEST_DATABASE_URL): %w", err)
	}
	defer admin.Close(ctx)

	if err := dropStale(ctx, admin); err != nil {
		return "", nil, err
	}
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s%d_%s", prefix, time.Now().Unix(), hex.EncodeToString(suffix))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create test database: %w", err)
	}
	u.Path = "/" + name
	return u.String(), func() error { return drop(name) }, nil
}

// New creates a fresh database for the test, applies the migrations and returns a pool on it. The pool is
// closed and the database dropped when the test ends.
func New(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, err := Open(context.Background(), NewURL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Open opens a pool on the test database at databaseURL and applies the migrations.
func Open(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, databaseURL, nil)
	if err != nil {
		return nil, fmt.Errorf("open test database: %w", err)
	}
	if err := store.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		pool.Close()
		return nil, fmt.Errorf("migrate test database: %w", err)
	}
	return pool, nil
}

// Tx begins a transaction on pool that is rolled back when the test ends, so that tests sharing one
// database see none of each other's rows.
func Tx(tb testing.TB, pool *pgxpool.Pool) pgx.Tx {
	tb.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		tb.Fatalf("begin test transaction: %v", err)
	}
	tb.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

func drop(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		return fmt.Errorf("connect to drop test database %s: %w", name, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop test database %s: %w", name, err)
	}
	return nil
}

// dropStale drops the test databases that killed test processes left behind.
func dropStale(ctx context.Context, admin *pgx.Conn) error {
	rows, err := admin.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'ds\\_test\\_%'")
	if err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list test databases: %w", err)
	}
	for _, name := range names {
		created, _, _ := strings.Cut(strings.TrimPrefix(name, prefix), "_")
		secs, err := strconv.ParseInt(created, 10, 64)
		if err != nil || time.Since(time.Unix(secs, 0)) < staleAfter {
			continue
		}
		// Another test process may drop it at the same moment; IF EXISTS keeps that quiet.
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	return nil
}
