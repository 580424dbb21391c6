package server_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/openaitest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// TestUpstreams runs the service in front of three model servers: "local", the fake Ollama; "gpu", a fake
// OpenAI-compatible server that requires a key; and "down", where nothing listens, whose tiny falls back to
// gpu's gpt-tiny. Chats go where their model names say, bare names to local, down's to the fallback; the
// model list merges what answers, and readiness reports each server.
func TestUpstreams(t *testing.T) {
	const key = "sk-e2e-0123456789"
	gpu := openaitest.New(t, openaitest.Options{APIKey: key})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	_ = l.Close()
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.Upstreams = config.Upstreams{
			{Name: "local", Kind: config.UpstreamOllama, URL: c.OllamaURL},
			{Name: "gpu", Kind: config.UpstreamOpenAI, URL: gpu.BaseURL(), APIKey: key},
			{Name: "down", Kind: config.UpstreamOllama, URL: down},
		}
		c.ModelFallbacks = config.Fallbacks{"down/tiny": "gpu/gpt-tiny"}
	}})
	c := a.UserClient(t)
	ctx := context.Background()

	list, err := c.ListModelsWithResponse(ctx)
	if err != nil || list.JSON200 == nil {
		t.Fatalf("list models: %v %s", err, list.Body)
	}
	var names []string
	for _, m := range list.JSON200.Models {
		names = append(names, m.Name)
	}
	if want := []string{"local/tiny:latest", "gpu/gpt-tiny"}; !slices.Equal(names, want) {
		t.Errorf("models = %q, want %q: down's are left out", names, want)
	}
	if m, err := c.GetModelWithResponse(ctx, "gpu/gpt-tiny"); err != nil || m.JSON200 == nil || m.JSON200.Name != "gpu/gpt-tiny" {
		t.Errorf("get gpu/gpt-tiny: %v %s", err, m.Body)
	}

	ollamaAnswer := ", there was a little girl named Lily. She"
	openaiAnswer := strings.Join(openaitest.DefaultTokens, "")
	for model, want := range map[string]string{
		"local/tiny": ollamaAnswer, "tiny": ollamaAnswer, "gpu/gpt-tiny": openaiAnswer, "down/tiny": openaiAnswer,
	} {
		resp, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: model, Messages: userMessage("Tell me a story")})
		if err != nil || resp.JSON200 == nil {
			t.Fatalf("chat with %s = %v %d %s", model, err, resp.StatusCode(), resp.Body)
		}
		if resp.JSON200.Message.Content != want {
			t.Errorf("chat with %s answered %q, want %q", model, resp.JSON200.Message.Content, want)
		}
		if answered := resp.JSON200.Model; model == "down/tiny" && (answered == nil || *answered != "gpu/gpt-tiny") {
			t.Errorf("chat with %s says %v answered, want the fallback gpu/gpt-tiny", model, answered)
		}
	}
	resp, events, end := stream(t, ctx, a, c, client.ChatRequest{Model: "down/tiny", Messages: userMessage("Tell me a story")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream with down/tiny = %d", resp.StatusCode)
	}
	all, _ := collect(t, events, end)
	var text strings.Builder
	for _, ev := range all {
		var d client.StreamDelta
		if ev.Type == "delta" && json.Unmarshal([]byte(ev.Data), &d) == nil {
			text.WriteString(d.Content)
		}
	}
	if last := all[len(all)-1]; last.Type != "done" || text.String() != openaiAnswer || !strings.Contains(last.Data, `"model":"gpu/gpt-tiny"`) {
		t.Errorf("stream with down/tiny = %q ending with %s %s, want the fallback's answer, named", text.String(), last.Type, last.Data)
	}
	var gpuModels []string
	for _, r := range gpu.ChatRequests() {
		gpuModels = append(gpuModels, r.Model)
	}
	if want := []string{"gpt-tiny", "gpt-tiny", "gpt-tiny"}; !slices.Equal(gpuModels, want) {
		t.Errorf("gpu was asked for %q, want %q (its own model, then the fallback twice)", gpuModels, want)
	}

	ready, err := a.Client(t).GetReadinessWithResponse(ctx)
	if err != nil || ready.JSON200 == nil || ready.JSON200.Checks == nil {
		t.Fatalf("readyz = %v %d %s, want 200: an upstream down leaves the instance ready", err, ready.StatusCode(), ready.Body)
	}
	checks := *ready.JSON200.Checks
	if checks["database"] != "ok" || checks["upstream:local"] != "ok" || checks["upstream:gpu"] != "ok" || checks["upstream:down"] != "unavailable" {
		t.Errorf("checks = %v", checks)
	}
	if strings.Contains(a.Logs.String(), key) {
		t.Error("the logs hold the upstream's API key")
	}
}

// TestReadinessReportsTheOneOllama checks the one Ollama of DS_OLLAMA_URL in /readyz: ok, then unavailable
// once it is down (with no model list cached), which leaves the instance ready.
func TestReadinessReportsTheOneOllama(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.ModelsCacheTTL = 0 }})
	c := a.Client(t)
	for _, want := range []string{"ok", "unavailable"} {
		ready, err := c.GetReadinessWithResponse(context.Background())
		if err != nil || ready.JSON200 == nil || ready.JSON200.Checks == nil || (*ready.JSON200.Checks)["upstream:ollama"] != want {
			t.Fatalf("readyz = %v %d %s, want 200 with upstream:ollama %s", err, ready.StatusCode(), ready.Body, want)
		}
		a.Ollama.Close()
	}
}
