package app_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/pgreplica"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// replicaReads returns deepersensor_db_reads_total{pool="replica"} from the service's metrics.
func replicaReads(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^deepersensor_db_reads_total\{pool="replica"\} (\d+)$`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("no deepersensor_db_reads_total{pool=\"replica\"} in the metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestReadReplica runs the service with a real streaming replica of its database: the replica serves a
// user's conversation list (shown by a change made behind the service's back while the replica does not
// replay, which the list does not show); after a chat, its author reads it back at once from the primary;
// and stopping the replica changes no answer and leaves the instance ready, its replica reported degraded.
func TestReadReplica(t *testing.T) {
	rep := pgreplica.Start(t)
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.DatabaseReadURL = rep.URL(c.DatabaseURL)
		c.DatabaseReadMaxLag = time.Minute // long enough that pausing the replay below does not degrade it
	}})
	ctx := context.Background()
	_, tokens := a.NewUser(t)
	c := a.Client(t, testapp.Bearer(tokens.AccessToken))
	chat := func(conversation *openapi_types.UUID, text string) client.ChatResult {
		t.Helper()
		r, err := c.ChatWithResponse(ctx, client.ChatRequest{
			Model: "tiny", ConversationId: conversation, Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: text}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.JSON200 == nil {
			t.Fatalf("chat: %d %s", r.StatusCode(), r.Body)
		}
		return *r.JSON200
	}
	titles := func() []string {
		t.Helper()
		r, err := c.ListConversationsWithResponse(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.JSON200 == nil {
			t.Fatalf("list conversations: %d %s", r.StatusCode(), r.Body)
		}
		var titles []string
		for _, conv := range r.JSON200.Items {
			titles = append(titles, conv.Title)
		}
		return titles
	}
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); {
			if time.Now().After(deadline) {
				t.Fatalf("not within 30s: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	readyz := func() map[string]string {
		t.Helper()
		r, err := c.GetReadinessWithResponse(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.JSON200 == nil || r.JSON200.Checks == nil {
			t.Fatalf("/readyz: %d %s, want 200 with checks", r.StatusCode(), r.Body)
		}
		return *r.JSON200.Checks
	}
	eventually("/readyz reports the replica ok", func() bool { return readyz()["database_replica"] == "ok" })

	first := chat(nil, "Hello there")
	eventually("the replica serves the author's conversations", func() bool {
		before := replicaReads(t, a.URL)
		titles()
		return replicaReads(t, a.URL) > before
	})

	// While the replica does not replay, a change made on the primary behind the service's back is not seen:
	// the list comes from the replica.
	rep.PauseReplay(t)
	primary, err := pgx.Connect(ctx, a.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close(ctx)
	if _, err := primary.Exec(ctx, "UPDATE conversations SET title = 'renamed behind the service' WHERE id = $1", first.ConversationId); err != nil {
		t.Fatal(err)
	}
	// (Eventually: a poll that fails under load leaves the replica degraded until the next.)
	eventually("the list comes from the paused replica, without the change", func() bool {
		got := titles()
		return len(got) == 1 && got[0] == "Hello there"
	})

	// The author's own chat is read back at once, from the primary: the replica still lacks it.
	chat(&first.ConversationId, "Tell me more")
	conv, err := c.GetConversationWithResponse(ctx, first.ConversationId)
	if err != nil {
		t.Fatal(err)
	}
	if conv.JSON200 == nil {
		t.Fatalf("get conversation: %d %s", conv.StatusCode(), conv.Body)
	}
	if n := len(conv.JSON200.Messages); n != 4 || conv.JSON200.Messages[2].Content != "Tell me more" || conv.JSON200.Title != "renamed behind the service" {
		t.Errorf("conversation read after the chat: %d messages, title %q; want 4 with the new turn, and the primary's title", n, conv.JSON200.Title)
	}
	if got := titles(); len(got) != 1 || got[0] != "renamed behind the service" {
		t.Errorf("titles after the chat = %q, want the primary's", got)
	}

	rep.ResumeReplay(t)
	eventually("the caught-up replica serves the author again", func() bool {
		before := replicaReads(t, a.URL)
		got := titles()
		return replicaReads(t, a.URL) > before && len(got) == 1 && got[0] == "renamed behind the service"
	})
	eventually("both chats are accounted", func() bool {
		r, err := c.GetUsageWithResponse(ctx, nil)
		return err == nil && r.JSON200 != nil && len(r.JSON200.Items) == 1 && r.JSON200.Items[0].Requests == 2
	})

	// Stopping the replica changes no answer, at once: reads that fail on it run on the primary.
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, a.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+tokens.AccessToken)
		resp, err := a.HTTPClient(t).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	id := first.ConversationId.String()
	paths := []string{"/v1/conversations", "/v1/conversations/" + id, "/v1/conversations/" + id + "/messages", "/v1/me/audit", "/v1/usage"}
	want := map[string]string{}
	for _, path := range paths {
		code, b := get(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s before the replica stops: %d %s", path, code, b)
		}
		want[path] = b
	}
	rep.Stop(t)
	for _, path := range paths {
		if code, b := get(path); code != http.StatusOK || b != want[path] {
			t.Errorf("GET %s with the replica stopped: %d\n%s\nwant 200\n%s", path, code, b, want[path])
		}
	}
	eventually("/readyz reports the replica degraded", func() bool {
		checks := readyz()
		return checks["database"] == "ok" && checks["database_replica"] == "degraded"
	})
}
