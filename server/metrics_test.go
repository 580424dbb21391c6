package server_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return string(body)
}

func TestMetrics(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	ctx := context.Background()
	chat, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	if err != nil || chat.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	if _, err := c.GetConversationWithResponse(ctx, chat.JSON200.ConversationId); err != nil {
		t.Fatal(err)
	}
	// The same model spelled another way is counted under one label: its name as the model server lists it.
	_, events, end := stream(t, ctx, a, c, client.ChatRequest{Model: "tiny:latest", Messages: userMessage("hi")})
	collect(t, events, end)
	if r, _ := c.ChatWithResponse(ctx, client.ChatRequest{Model: "missing", Messages: userMessage("hi")}); r.StatusCode() != http.StatusNotFound {
		t.Fatalf("unknown model = %d", r.StatusCode())
	}

	text := scrape(t, a.URL+"/metrics")
	for _, want := range []string{
		`deepersensor_http_requests_total{method="POST",route="/v1/auth/login",status="200"} 1`,
		`deepersensor_http_requests_total{method="GET",route="/v1/conversations/:id",status="200"} 1`,
		`deepersensor_http_requests_in_flight 1`, // the scrape itself
		`deepersensor_chat_time_to_first_token_seconds_count{model="tiny:latest"} 1`,
		`deepersensor_chat_stream_duration_seconds_count{model="tiny:latest"} 1`,
		`deepersensor_chat_tokens_total{direction="out",model="tiny:latest",upstream="ollama"} 24`,
		`deepersensor_chat_open_streams 0`,
		`deepersensor_provider_errors_total{kind="model_not_found"} 1`,
		`deepersensor_auth_logins_total{outcome="success"} 1`,
		`deepersensor_auth_password_hash_queue_wait_seconds_count`,
		`deepersensor_db_pool_max_connections`,
		`go_goroutines`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if regexp.MustCompile(`route="/v1/conversations/[0-9a-f-]{36}"`).MatchString(text) {
		t.Error("a raw path is used as a route label")
	}
}

func TestMetricsOnTheirOwnListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.MetricsAddr = addr }})
	resp, err := http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the public listener = %d, want 404", resp.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the metrics listener does not answer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if text := scrape(t, "http://"+addr+"/metrics"); !strings.Contains(text, "deepersensor_http_requests_total") {
		t.Error("the metrics listener does not serve the service's metrics")
	}
}

// TestLogsHoldNoSecrets drives every path that handles a secret and searches the logs for each.
func TestLogsHoldNoSecrets(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	email, tokens := a.NewUser(t)
	c := a.Client(t)
	ctx := context.Background()
	refreshed, err := c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: tokens.RefreshToken})
	if err != nil || refreshed.JSON200 == nil {
		t.Fatalf("refresh: %v", err)
	}
	_, _ = c.RefreshWithResponse(ctx, client.RefreshRequest{RefreshToken: tokens.RefreshToken}) // reuse, logged
	_, _ = c.LoginWithResponse(ctx, client.Credentials{Email: email, Password: "Secret-Wrong-Password-1"})
	_, _ = c.GetMeWithResponse(ctx, testapp.Bearer(refreshed.JSON200.AccessToken))
	_, _ = c.GetMeWithResponse(ctx, testapp.Bearer(refreshed.JSON200.AccessToken+"tampered"))
	_, _ = c.LogoutWithResponse(ctx, client.RefreshRequest{RefreshToken: refreshed.JSON200.RefreshToken})

	logs := a.Logs.String()
	for name, secret := range map[string]string{
		"password": testapp.TestPassword, "wrong password": "Secret-Wrong-Password-1",
		"access token": tokens.AccessToken, "refresh token": tokens.RefreshToken,
		"new access token": refreshed.JSON200.AccessToken, "new refresh token": refreshed.JSON200.RefreshToken,
		"jwt secret": testapp.TestJWTSecret, "authorization header": "Bearer ",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain the %s", name)
		}
	}
	if !strings.Contains(logs, `"msg":"login failed"`) || !strings.Contains(logs, "refresh token reused") {
		t.Error("the security events are missing from the logs: the search above proves nothing")
	}
}
