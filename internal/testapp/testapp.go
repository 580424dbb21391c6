// Package testapp boots the whole service for end-to-end tests, through the same app.New as the binary: on
// 127.0.0.1:0, against a fresh database on the real PostgreSQL and a fake Ollama. Its clients validate every
// response against api/openapi.yaml, so the contract, the server and the SDK are tested together.
package testapp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/app"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
)

// TestJWTSecret signs the access tokens of a test server.
const TestJWTSecret = "test-secret-test-secret-test-secret-0123456789"

// App is a running service.
type App struct {
	// URL is the service's base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Config is the configuration it runs with.
	Config config.Config
	// Ollama is the fake model server behind it.
	Ollama *ollamatest.Server
	// Logs holds everything the service logged, as JSON lines.
	Logs *SyncBuffer
}

// Options change a test server.
type Options struct {
	// Ollama configures the fake model server.
	Ollama ollamatest.Options
	// Configure, when set, changes the configuration before the service starts.
	Configure func(*config.Config)
}

// Start boots the service and stops it when the test ends.
func Start(tb testing.TB, opts Options) *App {
	tb.Helper()
	fake := ollamatest.New(tb, opts.Ollama)
	cfg, err := config.Load()
	if err != nil {
		tb.Fatalf("load configuration: %v", err)
	}
	cfg.Env = config.Development
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DatabaseURL = dbtest.NewURL(tb)
	cfg.OllamaURL = fake.URL
	cfg.JWTSecret, cfg.GeneratedJWTSecret = TestJWTSecret, false
	cfg.LogLevel, cfg.LogFormat = "debug", "json"
	// Cheap hashing keeps the suite fast; the hasher's own tests use the production parameters.
	cfg.Argon2Memory, cfg.Argon2Time, cfg.Argon2Parallelism = 1024, 1, 1
	cfg.HashConcurrency = 4
	// Above net/http's 5s wait for connections that were opened but never used.
	cfg.ShutdownGrace = 10 * time.Second
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}

	logs := &SyncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	service, err := app.New(ctx, cfg, logger)
	if err != nil {
		cancel()
		tb.Fatalf("service did not start: %v\nlogs:\n%s", err, logs.String())
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		cancel()
		service.Close()
		tb.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- service.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("service stopped with an error: %v", err)
			}
		case <-time.After(20 * time.Second):
			tb.Errorf("service did not stop within 20s")
		}
		service.Close()
	})
	return &App{URL: "http://" + ln.Addr().String(), Config: cfg, Ollama: fake, Logs: logs}
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
