package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/app"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/sse"
)

func post(t *testing.T, url, token, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// serve starts the service with cfg on 127.0.0.1:0 against a fresh database and a fake Ollama. It returns
// the base URL, the func that stops it as SIGTERM does, and where Serve's result arrives.
func serve(t *testing.T, fake ollamatest.Options, grace time.Duration) (base string, stop func(), done <-chan error, databaseURL string) {
	t.Helper()
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.DatabaseURL, cfg.OllamaURL = "127.0.0.1:0", dbtest.NewURL(t), ollamatest.New(t, fake).URL
	cfg.Argon2Memory, cfg.Argon2Time = 1024, 1
	cfg.ShutdownGrace = grace
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	service, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(service.Close)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- service.Serve(ctx, ln) }()
	return "http://" + ln.Addr().String(), cancel, served, cfg.DatabaseURL
}

// startStream signs up, logs in and starts a chat stream, returning it once its first byte arrived.
func startStream(t *testing.T, base string) *http.Response {
	t.Helper()
	creds := `{"email":"ada@example.com","password":"password-1"}`
	post(t, base+"/v1/auth/signup", "", creds).Body.Close()
	login := post(t, base+"/v1/auth/login", "", creds)
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(login.Body).Decode(&tokens); err != nil {
		t.Fatal(err)
	}
	login.Body.Close()
	stream := post(t, base+"/v1/chat/stream", tokens.AccessToken, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
	t.Cleanup(func() { stream.Body.Close() })
	buf := make([]byte, 1)
	if _, err := stream.Body.Read(buf); err != nil { // the stream has begun
		t.Fatal(err)
	}
	return stream
}

// lastEvent reads a stream to its end and returns its last event.
func lastEvent(t *testing.T, stream *http.Response) sse.Event {
	t.Helper()
	events, err := sse.ReadAll(stream.Body)
	if err != nil || len(events) == 0 {
		t.Fatalf("the stream broke during shutdown after %d events: %v", len(events), err)
	}
	return events[len(events)-1]
}

// waitServe waits for Serve to return, and fails unless it returned cleanly.
func waitServe(t *testing.T, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want a clean stop", err)
		}
	case <-time.After(within):
		t.Fatal("Serve did not return")
	}
}

// TestGracefulShutdown stops the service in the middle of a stream: the stream finishes within the grace
// period, Serve returns cleanly, and the listener is closed.
func TestGracefulShutdown(t *testing.T) {
	base, stop, done, _ := serve(t, ollamatest.Options{ChunkDelay: 100 * time.Millisecond}, 10*time.Second)
	stream := startStream(t, base)
	stop()
	if last := lastEvent(t, stream); last.Type != "done" {
		t.Errorf("the stream ended with %s %s, want done within the grace period", last.Type, last.Data)
	}
	waitServe(t, done, 10*time.Second)
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the listener still accepts connections after shutdown")
	}
}

// TestShutdownEndsStreamsThatOutlastTheGrace stops the service in the middle of a stream that would run far
// longer than the grace: the stream ends with a retryable error event before the grace runs out, its partial
// answer is stored as incomplete, and Serve returns cleanly.
func TestShutdownEndsStreamsThatOutlastTheGrace(t *testing.T) {
	tokens := make([]string, 200) // 20 seconds at 100ms a token
	for i := range tokens {
		tokens[i] = " word"
	}
	const grace = 3 * time.Second
	base, stop, done, databaseURL := serve(t, ollamatest.Options{Tokens: tokens, ChunkDelay: 100 * time.Millisecond}, grace)
	stream := startStream(t, base)
	time.Sleep(300 * time.Millisecond) // a few tokens
	stopped := time.Now()
	stop()
	last := lastEvent(t, stream)
	if took := time.Since(stopped); took > grace {
		t.Errorf("the stream ended %s after the stop, past the grace of %s", took, grace)
	}
	if last.Type != "error" || !strings.Contains(last.Data, `"status":503`) || !strings.Contains(last.Data, "urn:deepersensor:problem:unavailable") {
		t.Errorf("the stream ended with %s %s, want a 503 error event", last.Type, last.Data)
	}
	waitServe(t, done, 5*time.Second)

	conn, err := pgx.Connect(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var status, content string
	err = conn.QueryRow(context.Background(), "SELECT status, content FROM messages WHERE role = 'assistant'").Scan(&status, &content)
	if err != nil || status != "incomplete" || !strings.HasPrefix(content, " word word") {
		t.Errorf("stored answer %q %q (%v), want the partial answer, incomplete", status, content, err)
	}
}
