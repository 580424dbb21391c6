package faults_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/internal/testenv"
	"github.com/deepersensor/deepersensor/usage"
)

// waitFor is how long the checks wait for what the service does after a call's request ended: storing an
// answer whose client left, writing usage records (about a second), using Redis again (a probe a second).
const waitFor = 5 * time.Second

// stopModelServer makes the model list cached, then stops the model server: later connections to it are
// refused.
func stopModelServer(t *testing.T, e *env) {
	t.Helper()
	models, err := e.app.UserClient(t).ListModelsWithResponse(t.Context())
	if err != nil || models.JSON200 == nil {
		t.Fatalf("list models: %v", err)
	}
	e.app.Ollama.Close()
}

// upstreamCancelled checks that the model server saw each call so far given up by its client.
func upstreamCancelled(t *testing.T, e *env) {
	t.Helper()
	if !e.app.Ollama.WaitCancelled(e.calls, waitFor) {
		t.Errorf("the model server saw %d of %d calls cancelled: the client left, but the model call went on",
			e.app.Ollama.Cancelled(), e.calls)
	}
}

// restartPostgres makes PostgreSQL go away and come back for the service's database alone, as a restart
// does, without touching the other tests' databases on the shared server: it refuses new connections to the
// database, ends every connection to it, checks that the service answers a request that needs it with a 503,
// and after a moment accepts connections again.
func restartPostgres(e *env) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(e.app.Config.DatabaseURL)
	if err != nil {
		return err
	}
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	database := pgx.Identifier{cfg.Database}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+database+" WITH ALLOW_CONNECTIONS false"); err != nil {
		return fmt.Errorf("refuse connections to %s: %w", database, err)
	}
	var n int
	err = admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()`, cfg.Database).Scan(&n)
	if err != nil {
		return fmt.Errorf("terminate the connections to %s: %w", database, err)
	}
	if n == 0 {
		return fmt.Errorf("the service had no connection to %s to terminate", database)
	}
	status, err := e.get("/v1/conversations")
	if err != nil {
		return err
	}
	if status != http.StatusServiceUnavailable {
		err = fmt.Errorf("with PostgreSQL down, GET /v1/conversations answered %d, want 503", status)
	}
	time.Sleep(100 * time.Millisecond)
	if _, aerr := admin.Exec(ctx, "ALTER DATABASE "+database+" WITH ALLOW_CONNECTIONS true"); aerr != nil {
		return fmt.Errorf("accept connections to %s again: %w", database, aerr)
	}
	return err
}

// redisServer is a redis-server of the test's own on a free loopback port, which it stops and starts; it
// keeps nothing on disk, so a restart empties it.
type redisServer struct {
	port string
	cmd  *exec.Cmd
	out  bytes.Buffer // what it printed, for failures
}

// startRedis starts a redis-server that is stopped when the test ends.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	_ = ln.Close()
	r := &redisServer{port: port}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func (r *redisServer) url() string { return "redis://127.0.0.1:" + r.port }

// start starts the server and waits until it accepts connections.
func (r *redisServer) start() error {
	r.out.Reset()
	r.cmd = exec.Command("redis-server", "--port", r.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	for deadline := time.Now().Add(waitFor); ; time.Sleep(10 * time.Millisecond) {
		conn, err := net.Dial("tcp", "127.0.0.1:"+r.port)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			_ = r.stop()
			return fmt.Errorf("redis-server (pid %d) did not listen on %s within %s: %v\n%s", r.cmd.Process.Pid, r.port, waitFor, err, r.out.String())
		}
	}
}

// stop ends the server, if it runs, as a shutdown does (SIGTERM), and waits until it exited.
func (r *redisServer) stop() error {
	if r.cmd == nil {
		return nil
	}
	cmd := r.cmd
	r.cmd = nil
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop redis-server (pid %d): %w", cmd.Process.Pid, err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("redis-server (pid %d) exited: %w\n%s", cmd.Process.Pid, err, r.out.String())
	}
	return nil
}

// restartRedis stops the service's Redis, checks that the service still serves a request that its limits
// count in Redis, and starts Redis again, empty.
func restartRedis(e *env) error {
	if err := e.redis.stop(); err != nil {
		return err
	}
	status, err := e.get("/v1/me")
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("with Redis stopped, GET /v1/me answered %d", status)
	}
	return e.redis.start()
}

// redisInUse checks that the service uses Redis again after its restart: requests are counted there.
func redisInUse(t *testing.T, e *env) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + e.redis.port})
	defer rdb.Close()
	c := e.app.Client(t, testapp.Bearer(e.token))
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		if me, err := c.GetMeWithResponse(t.Context()); err != nil || me.StatusCode() != http.StatusOK {
			t.Fatalf("GET /v1/me: %v %s", err, me.Body)
		}
		if n, err := rdb.DBSize(t.Context()).Result(); err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service did not use Redis within %s of its restart", waitFor)
		}
	}
}

// checkStored checks what a call stored: on the routes that store, one conversation with the user's message,
// then the answer as w says; on the others, nothing.
func checkStored(t *testing.T, e *env, r route, c *call, w want) {
	t.Helper()
	api := e.app.Client(t, testapp.Bearer(c.token))
	list, err := api.ListConversationsWithResponse(t.Context(), nil)
	if err != nil || list.JSON200 == nil {
		t.Fatalf("list conversations: %v", err)
	}
	items := list.JSON200.Items
	if !r.stores {
		if len(items) != 0 {
			t.Errorf("%d conversations stored by a route that stores nothing", len(items))
		}
		return
	}
	if len(items) != 1 {
		t.Fatalf("%d conversations stored, want 1", len(items))
	}
	var msgs []client.Message
	for deadline := time.Now().Add(waitFor); ; time.Sleep(20 * time.Millisecond) {
		conv, err := api.GetConversationWithResponse(t.Context(), items[0].Id)
		if err != nil || conv.JSON200 == nil {
			t.Fatalf("get conversation: %v", err)
		}
		// An answer whose client left is stored once the model call stopped, after the request ended.
		if msgs = conv.JSON200.Messages; w.stored == "" || len(msgs) > 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(msgs) == 0 || msgs[0].Role != client.RoleUser || msgs[0].Content != question || msgs[0].Status != client.Complete {
		t.Fatalf("stored messages %+v, want the user's message first", msgs)
	}
	switch {
	case w.stored == "" && len(msgs) != 1:
		t.Errorf("answer stored %+v, want none", msgs[1:])
	case w.stored == "":
	case len(msgs) != 2:
		t.Errorf("%d messages stored, want the user's message and the answer", len(msgs))
	case msgs[1].Status != w.stored:
		t.Errorf("answer stored %s, want %s", msgs[1].Status, w.stored)
	case c.end == endNone && c.status == http.StatusOK:
		// The client left: the answer went on a little after it stopped reading.
		if got := msgs[1].Content; !strings.HasPrefix(got, c.text) || !strings.HasPrefix(wholeAnswer, got) {
			t.Errorf("answer stored %q, want a beginning of %q that starts with what the client got, %q", got, wholeAnswer, c.text)
		}
	case msgs[1].Content != c.text:
		t.Errorf("answer stored %.80q, want what the client got, %.80q", msgs[1].Content, c.text)
	}
}

// checkUsage checks the usage record of each call, once the service has written them all.
func checkUsage(t *testing.T, e *env, calls []finished) {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.app.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ids := make([]string, len(calls))
	for i, f := range calls {
		ids[i] = f.call.requestID
	}
	type record struct {
		RequestID, Model, Upstream, Outcome string
		Prompt, Completion                  int32
	}
	var records []record
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		rows, err := conn.Query(ctx, `SELECT request_id, model, upstream, outcome, prompt_tokens, completion_tokens
			FROM usage_records WHERE request_id = ANY($1)`, ids)
		if err != nil {
			t.Fatal(err)
		}
		if records, err = pgx.CollectRows(rows, pgx.RowToStructByPos[record]); err != nil {
			t.Fatal(err)
		}
		if len(records) >= len(calls) || time.Now().After(deadline) {
			break
		}
	}
	byID := map[string][]record{}
	for _, r := range records {
		byID[r.RequestID] = append(byID[r.RequestID], r)
	}
	for _, f := range calls {
		got := byID[f.call.requestID]
		if len(got) != 1 {
			t.Errorf("%s: %d usage records, want 1", f.route.name, len(got))
			continue
		}
		r, c := got[0], f.call
		var tokensOK bool
		switch f.want.outcome {
		case usage.Complete:
			tokensOK = r.Prompt > 0 && r.Completion == 12
		case usage.Incomplete:
			tokensOK = r.Prompt == 0 && int(r.Completion) >= c.chunks
		default:
			tokensOK = r.Prompt == 0 && int(r.Completion) == c.chunks
		}
		if r.Model != "tiny:latest" || r.Upstream != "ollama" || r.Outcome != f.want.outcome || !tokensOK {
			t.Errorf("%s: usage record %+v, want tiny:latest on ollama, %s, with the tokens of %d chunks received",
				f.route.name, r, f.want.outcome, c.chunks)
		}
	}
}
