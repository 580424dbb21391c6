package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
)

// running is the service serving on 127.0.0.1 for a test or a benchmark.
type running struct {
	app         *App
	base        string
	token       string // the access token of a user signed up for the test
	databaseURL string
	stop        func() // ends Serve, as SIGTERM does, and waits for it; the test's end closes the app too
}

// start serves the service, with or without accounting, against a fresh database and a fake Ollama, with
// limits that a benchmark does not reach, and signs a user up.
func start(tb testing.TB, accounting bool) *running {
	tb.Helper()
	cfg, err := config.Load()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.HTTPAddr, cfg.DatabaseURL, cfg.OllamaURL = "127.0.0.1:0", dbtest.NewURL(tb), ollamatest.New(tb, ollamatest.Options{}).URL
	cfg.Argon2Memory, cfg.Argon2Time = 1024, 1
	cfg.RateLimitChat = config.Rate{Limit: 1 << 20, Period: time.Minute}
	cfg.RateLimitUser = cfg.RateLimitChat
	ctx, cancel := context.WithCancel(context.Background())
	a, err := build(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), accounting)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		cancel()
		a.Close()
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, ln) }()
	r := &running{app: a, base: "http://" + ln.Addr().String(), databaseURL: cfg.DatabaseURL}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-served; err != nil {
				tb.Errorf("Serve = %v", err)
			}
		})
	}
	tb.Cleanup(func() {
		r.stop()
		a.Close()
	})
	creds := `{"email":"ada@example.com","password":"password-1"}`
	r.post(tb, "/v1/auth/signup", creds)
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(r.post(tb, "/v1/auth/login", creds), &tokens); err != nil {
		tb.Fatal(err)
	}
	r.token = tokens.AccessToken
	return r
}

// post posts a JSON body with the user's token, when there is one, and returns the answer's body; any
// status but 200 and 201 fails tb.
func (r *running) post(tb testing.TB, path, body string) []byte {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated) {
		tb.Fatalf("POST %s = %d %s %v", path, resp.StatusCode, data, err)
	}
	return data
}

const chatBody = `{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}]}`

// TestShutdownWritesUsage checks that the usage records still queued at shutdown are written before the
// database is closed: the call right before the stop is in the database after Close.
func TestShutdownWritesUsage(t *testing.T) {
	r := start(t, true)
	r.post(t, "/v1/chat", chatBody)
	r.stop()
	r.app.Close()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, r.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM usage_records WHERE outcome = 'complete'").Scan(&n); err != nil || n != 1 {
		t.Errorf("%d usage records after shutdown (%v), want 1", n, err)
	}
}

// BenchmarkChatAccounting measures a non-streamed POST /v1/chat through the whole service on loopback, with
// and without usage accounting: recording a call costs a send on a channel, and the records are written in
// batches by another goroutine, so both cost the same within noise.
func BenchmarkChatAccounting(b *testing.B) {
	for _, bench := range []struct {
		name       string
		accounting bool
	}{{"off", false}, {"on", true}} {
		b.Run(bench.name, func(b *testing.B) {
			r := start(b, bench.accounting)
			for b.Loop() {
				r.post(b, "/v1/chat", chatBody)
			}
		})
	}
}
