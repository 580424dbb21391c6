package replica_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/pgreplica"
	"github.com/deepersensor/deepersensor/store/replica"
)

// eventually fails t unless cond holds within 20s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMonitor follows a real streaming replica of the test server: healthy once polled; a key written on the
// primary is not fresh until the replica replays the write, while other keys are; keys forgotten for room
// wait for the replica like remembered ones; past MaxLag behind, and when it stops, the replica is degraded,
// and its lag grows while it is down.
func TestMonitor(t *testing.T) {
	rep := pgreplica.Start(t)
	databaseURL := dbtest.NewURL(t)
	rep.WaitReplayed(t) // the test database exists on the replica
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	primary, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close()
	replicaPool, err := pgxpool.New(ctx, rep.URL(databaseURL))
	if err != nil {
		t.Fatal(err)
	}
	defer replicaPool.Close()

	const maxLag = 5 * time.Second
	m := replica.New(primary, replicaPool, replica.Config{MaxLag: maxLag, Interval: 20 * time.Millisecond, Remember: 2})
	if err := m.Check(); err == nil || m.Fresh() {
		t.Fatalf("before any poll: Check() = %v, Fresh() = %t; want degraded", err, m.Fresh())
	}
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// A key never written is fresh once the replica has replayed a position sampled after the monitor began.
	writer, other := uuid.New(), uuid.New()
	eventually(t, "the replica is healthy and has caught up", func() bool { return m.Fresh(other) })

	// The replica stops replaying: a write of writer's is not on it.
	rep.PauseReplay(t)
	if _, err := primary.Exec(ctx, "CREATE TABLE t (n int)"); err != nil {
		t.Fatal(err)
	}
	m.Wrote(writer)
	if m.Fresh(writer) {
		t.Error("Fresh(writer) right after its write, with replay paused: want false")
	}
	if !m.Fresh(other) {
		t.Errorf("Fresh(other) with the replica %s behind: want true (Check() = %v)", m.Lag(), m.Check())
	}
	// Two more writers take the room of the first, whose write time becomes the floor of every key forgotten
	// or never written.
	m.Wrote(uuid.New(), uuid.New())
	if m.Fresh(writer) || m.Fresh(other) {
		t.Errorf("with writer forgotten: Fresh(writer) = %t, Fresh(other) = %t; want false for both", m.Fresh(writer), m.Fresh(other))
	}
	eventually(t, "the replica is degraded for its lag", func() bool {
		err := m.Check()
		return err != nil && strings.Contains(err.Error(), "behind the primary")
	})
	if m.Fresh(other) || m.Lag() <= maxLag {
		t.Errorf("degraded: Fresh(other) = %t, Lag() = %s; want false, more than %s", m.Fresh(other), m.Lag(), maxLag)
	}

	rep.ResumeReplay(t)
	eventually(t, "the replica catches up and has writer's write", func() bool { return m.Check() == nil && m.Fresh(writer) })
	if !m.Fresh(other) || m.Lag() > maxLag {
		t.Errorf("caught up: Fresh(other) = %t, Lag() = %s", m.Fresh(other), m.Lag())
	}

	rep.Stop(t)
	eventually(t, "the stopped replica is degraded", func() bool { return m.Check() != nil })
	if m.Fresh() || m.Fresh(other) {
		t.Error("Fresh on a stopped replica: want false")
	}
	eventually(t, "the lag grows while the replica is down", func() bool { return m.Lag() > 200*time.Millisecond })
}
