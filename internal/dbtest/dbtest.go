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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(AdminURL())
	if err != nil {
		tb.Fatalf("parse DS_TEST_DATABASE_URL: %v", err)
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatalf("connect to the test PostgreSQL server (set DS_TEST_DATABASE_URL): %v", err)
	}
	defer admin.Close(ctx)

	dropStale(ctx, tb, admin)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := fmt.Sprintf("%s%d_%s", prefix, time.Now().Unix(), hex.EncodeToString(suffix))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() { drop(tb, name) })

	u, err := url.Parse(AdminURL())
	if err != nil {
		tb.Fatalf("DS_TEST_DATABASE_URL must be a postgres:// URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// New creates a fresh database for the test, applies the migrations and returns a pool on it. The pool is
// closed and the database dropped when the test ends.
func New(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := store.Open(ctx, NewURL(tb), nil)
	if err != nil {
		tb.Fatalf("open test database: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		tb.Fatalf("migrate test database: %v", err)
	}
	return pool
}

func drop(tb testing.TB, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		tb.Errorf("connect to drop test database %s: %v", name, err)
		return
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		tb.Errorf("drop test database %s: %v", name, err)
	}
}

// dropStale drops the test databases that killed test processes left behind.
func dropStale(ctx context.Context, tb testing.TB, admin *pgx.Conn) {
	rows, err := admin.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'ds\\_test\\_%'")
	if err != nil {
		tb.Fatalf("list test databases: %v", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("list test databases: %v", err)
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
}
