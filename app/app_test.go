package app_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/app"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
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

// TestGracefulShutdown stops the service in the middle of a stream: the stream finishes within the grace
// period, Run returns cleanly, and the listener is closed.
func TestGracefulShutdown(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{ChunkDelay: 100 * time.Millisecond})
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr, cfg.DatabaseURL, cfg.OllamaURL = "127.0.0.1:0", dbtest.NewURL(t), fake.URL
	cfg.Argon2Memory, cfg.Argon2Time = 1024, 1
	cfg.ShutdownGrace = 10 * time.Second
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ready) }()
	base := "http://" + <-ready

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
	defer stream.Body.Close()
	buf := make([]byte, 1)
	if _, err := stream.Body.Read(buf); err != nil { // the stream has begun
		t.Fatal(err)
	}
	stop() // as SIGTERM does
	rest, err := io.ReadAll(stream.Body)
	if err != nil {
		t.Fatalf("the stream broke during shutdown: %v", err)
	}
	if !strings.Contains(string(rest), "event: done") {
		t.Errorf("the stream did not finish during the grace period:\n%s", rest)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("the listener still accepts connections after shutdown")
	}
}
