package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
)

// TestDatabaseDownIsUnavailable takes the store's database away, as a restart of PostgreSQL does: a call on
// a connection that PostgreSQL ended, and a call that cannot connect, fail with core.Unavailable and a
// Retry-After (a 503 for clients), not as internal errors.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	ctx := context.Background()
	url := dbtest.NewURL(t)
	pool, err := dbtest.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := store.New(pool)
	if _, err := st.UserByID(ctx, uuid.New()); core.ErrorCode(err) != core.NotFound {
		t.Fatalf("unknown user: %v, want not found", err) // and the pool holds an idle connection
	}

	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	database := pgx.Identifier{cfg.Database}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+database+" WITH ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", cfg.Database); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // for the backends to end

	for _, call := range []string{"on a connection that PostgreSQL ended", "with no connection to be made"} {
		_, err := st.UserByID(ctx, uuid.New())
		var e *core.Error
		if !errors.As(err, &e) || e.Code != core.Unavailable || e.RetryAfter <= 0 {
			t.Errorf("a call %s: %v, want core.Unavailable with a Retry-After", call, err)
		}
	}
}
