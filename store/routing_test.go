package store_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/internal/pgreplica"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/store/replica"
)

// TestReadReplicaRouting runs a Store with a real streaming replica: reads of users that the Store has not seen write go to the replica,
// reads after a user's own write go to the primary, a row the replica lacks is looked for on the primary,
// and a read that fails on the stopped replica is answered by the primary.
func TestReadReplicaRouting(t *testing.T) {
	ctx := context.Background()
	rep := pgreplica.Start(t)
	// Another instance: the Store under test does not hear of its writes.
	other := store.New(pool)
	ada, bob := mustUser(t, other, "ada-"+uuid.NewString()+"@example.com"), mustUser(t, other, "bob-"+uuid.NewString()+"@example.com")
	t.Cleanup(func() { _, _ = pool.Exec(ctx, "DELETE FROM users WHERE id = ANY($1)", []uuid.UUID{ada.ID, bob.ID}) })
	adaConv, err := other.CreateConversation(ctx, ada.ID, "ada's", "tiny", userMessage("a0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	bobConv, err := other.CreateConversation(ctx, bob.ID, "bob's", "tiny", userMessage("b0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	rep.WaitReplayed(t)

	replicaPool, err := pgxpool.New(ctx, rep.URL(pool.Config().ConnString()))
	if err != nil {
		t.Fatal(err)
	}
	defer replicaPool.Close()
	// Polled by hand, once the replica has what was written so far: what it holds stays as it was for the
	// monitor, and its stop goes unnoticed until a read fails on it.
	monitor := replica.New(pool, replicaPool, replica.Config{MaxLag: time.Minute})
	for deadline := time.Now().Add(20 * time.Second); !monitor.Fresh(ada.ID); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the replica has not replayed what was written within 20s: %v", monitor.Check())
		}
		monitor.Poll(ctx)
	}
	var (
		mu    sync.Mutex
		reads []string
	)
	st := store.New(pool).WithReplica(replicaPool, monitor, func(p string) { mu.Lock(); reads = append(reads, p); mu.Unlock() })
	served := func(want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(reads, want) {
			t.Errorf("reads served by %q, want %q", reads, want)
		}
		reads = nil
	}
	titles := func(userID uuid.UUID) []string {
		t.Helper()
		convs, err := st.Conversations(ctx, userID, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		var titles []string
		for _, c := range convs {
			titles = append(titles, c.Title)
		}
		return titles
	}

	if got := titles(ada.ID); !slices.Equal(got, []string{"ada's"}) {
		t.Errorf("ada's conversations = %q", got)
	}
	served(store.PoolReplica)

	// A conversation made elsewhere after the poll: the replica, which the monitor thinks current, is not
	// asked to replay it, and lacks it. Read by id, it is found on the primary; listed, it is missing.
	rep.PauseReplay(t)
	newer, err := other.CreateConversation(ctx, ada.ID, "ada's newer", "tiny", userMessage("a1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := st.Conversation(ctx, newer.ID, ada.ID); err != nil || c.Title != "ada's newer" {
		t.Errorf("Conversation(newer) = %+v, %v", c, err)
	}
	served(store.PoolPrimary)
	if got := titles(ada.ID); !slices.Equal(got, []string{"ada's"}) {
		t.Errorf("ada's conversations from the replica = %q, want the replica's", got)
	}
	served(store.PoolReplica)
	if err := monitor.Check(); err != nil {
		t.Errorf("a row missing on the replica made it degraded: %v", err)
	}

	// Ada's own write: her reads go to the primary from then on.
	if _, err := st.AppendMessages(ctx, ada.ID, adaConv.ID, []chat.NewMessage{{Role: "assistant", Content: "a0 answered", Status: chat.StatusComplete}}, 0); err != nil {
		t.Fatal(err)
	}
	if got := titles(ada.ID); !slices.Equal(got, []string{"ada's", "ada's newer"}) {
		t.Errorf("ada's conversations after her write = %q, want both, most recently active first", got)
	}
	msgs, _, err := st.MessagePage(ctx, adaConv.ID, 0, 10, 1<<20)
	if err != nil || len(msgs) != 2 || msgs[0].Content != "a0 answered" {
		t.Errorf("messages after ada's write = %+v, %v; want her answer first", msgs, err)
	}
	served(store.PoolPrimary, store.PoolPrimary)

	// The replica stops: Bob's read fails on it and is answered by the primary; the replica is degraded.
	rep.Stop(t)
	msgs, _, err = st.MessagePage(ctx, bobConv.ID, 0, 10, 1<<20)
	if err != nil || len(msgs) != 1 || msgs[0].Content != "b0" {
		t.Errorf("bob's messages with the replica stopped = %+v, %v", msgs, err)
	}
	served(store.PoolPrimary)
	if monitor.Check() == nil {
		t.Error("the replica is healthy after a read failed on it")
	}
}
