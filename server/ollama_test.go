package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/routers"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// ollamaApp starts the service with opts and returns it with the Authorization header of a new user.
func ollamaApp(t *testing.T, opts testapp.Options) (*testapp.App, string) {
	t.Helper()
	a := testapp.Start(t, opts)
	_, tokens := a.NewUser(t)
	return a, "Bearer " + tokens.AccessToken
}

// ollamaDo sends a request to the Ollama API and returns the answer, its body unread. Answers to the
// contract's operations are checked against it; routes and methods that it lacks cannot be.
func ollamaDo(t *testing.T, a *testapp.App, method, path, auth, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, a.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	c := a.HTTPClient(t)
	if _, router := testapp.Contract(t); !inContract(router, req) {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// inContract reports whether req is an operation of the contract.
func inContract(router routers.Router, req *http.Request) bool {
	_, _, err := router.FindRoute(req)
	return err == nil
}

// ollamaLine is one line of an NDJSON answer, decoded, with the time it arrived.
type ollamaLine struct {
	fields map[string]any
	at     time.Time
}

// readOllamaLines reads an NDJSON answer to its end, checking each line against the contract's schema, which is
// schema for every line but a final error line.
func readOllamaLines(t *testing.T, body io.Reader, schema string) []ollamaLine {
	t.Helper()
	var lines []ollamaLine
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		var fields map[string]any
		if err := json.Unmarshal(sc.Bytes(), &fields); err != nil {
			t.Fatalf("line %d %q is not JSON: %v", len(lines), sc.Text(), err)
		}
		lines = append(lines, ollamaLine{fields, time.Now()})
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read the stream after %d lines: %v", len(lines), err)
	}
	for i, l := range lines {
		name := schema
		if _, failed := l.fields["error"]; failed {
			name = "OllamaError"
		}
		checkOllamaSchema(t, name, l.fields, i)
	}
	return lines
}

// checkOllamaSchema checks a decoded JSON value against a schema of the contract.
func checkOllamaSchema(t *testing.T, name string, v any, line int) {
	t.Helper()
	spec, _ := testapp.Contract(t)
	if err := spec.Components.Schemas[name].Value.VisitJSON(v); err != nil {
		t.Errorf("line %d %v is not a %s: %v", line, v, name, err)
	}
}

// readOllamaJSON decodes a whole JSON answer, checking its Content-Type and status.
func readOllamaJSON(t *testing.T, resp *http.Response, status int) map[string]any {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return v
}

const ollamaStory = ", there was a little girl named Lily. She"

func TestOllamaChatAndGenerate(t *testing.T) {
	namespaced := ollamatest.Tiny()
	namespaced.Name = "library/tiny:7b"
	a, auth := ollamaApp(t, testapp.Options{Ollama: ollamatest.Options{Models: []ollamatest.Model{ollamatest.Tiny(), namespaced}}})
	tests := []struct {
		name, path, body string
		stream           bool
		model            string // as the answer names it
		sent             []ollamatest.Message
		options          map[string]any
	}{
		{
			name: "chat", path: "/ollama/api/chat", stream: false, model: "tiny",
			body: `{"model":"tiny","stream":false,"think":false,"keep_alive":"5m","messages":[{"role":"system","content":"Tell stories."},{"role":"user","content":"Once upon a time"},{"role":"assistant","content":"Yes?"},{"role":"user","content":"Go on"}]}`,
			sent: []ollamatest.Message{{Role: "system", Content: "Tell stories."}, {Role: "user", Content: "Once upon a time"}, {Role: "assistant", Content: "Yes?"}, {Role: "user", Content: "Go on"}},
		},
		{
			name: "chat streamed by default", path: "/ollama/api/chat", stream: true, model: "tiny:latest",
			body:    `{"model":"tiny:latest","messages":[{"role":"user","content":"Once upon a time"}],"options":{"temperature":0,"seed":42,"num_predict":12}}`,
			sent:    []ollamatest.Message{{Role: "user", Content: "Once upon a time"}},
			options: map[string]any{"temperature": 0.0, "seed": 42.0, "num_predict": 12.0},
		},
		{
			name: "chat with a namespaced model", path: "/ollama/api/chat", stream: true, model: "library/tiny:7b",
			body: `{"model":"library/tiny:7b","stream":true,"messages":[{"role":"user","content":"Hi"}]}`,
			sent: []ollamatest.Message{{Role: "user", Content: "Hi"}},
		},
		{
			name: "generate", path: "/ollama/api/generate", stream: false, model: "tiny",
			body: `{"model":"tiny","prompt":"Once upon a time","system":"Tell stories.","stream":false}`,
			sent: []ollamatest.Message{{Role: "system", Content: "Tell stories."}, {Role: "user", Content: "Once upon a time"}},
		},
		{
			name: "generate streamed by default", path: "/ollama/api/generate", stream: true, model: "library/tiny:7b",
			body:    `{"model":"library/tiny:7b","prompt":"Once upon a time","options":{"num_ctx":2048}}`,
			sent:    []ollamatest.Message{{Role: "user", Content: "Once upon a time"}},
			options: map[string]any{"num_ctx": 2048.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(a.Ollama.ChatRequests())
			resp := ollamaDo(t, a, http.MethodPost, tt.path, auth, tt.body)
			schema, text := "OllamaChatAnswer", func(f map[string]any) string { return f["message"].(map[string]any)["content"].(string) }
			if strings.HasSuffix(tt.path, "/generate") {
				schema, text = "OllamaGenerateAnswer", func(f map[string]any) string { return f["response"].(string) }
			}
			var final map[string]any
			var answer strings.Builder
			if tt.stream {
				if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/x-ndjson" {
					t.Fatalf("answer %d %q, want 200 application/x-ndjson", resp.StatusCode, ct)
				}
				lines := readOllamaLines(t, resp.Body, schema)
				if len(lines) != 13 {
					t.Fatalf("%d lines, want 12 and a final one: %v", len(lines), lines)
				}
				for _, l := range lines[:12] {
					if l.fields["done"] != false || l.fields["model"] != tt.model || l.fields["done_reason"] != nil || l.fields["eval_count"] != nil {
						t.Errorf("line %v: want done false, model %s and no counters", l.fields, tt.model)
					}
					answer.WriteString(text(l.fields))
				}
				final = lines[12].fields
				if text(final) != "" {
					t.Errorf("final line %v has text", final)
				}
			} else {
				final = readOllamaJSON(t, resp, http.StatusOK)
				checkOllamaSchema(t, schema, final, 0)
				answer.WriteString(text(final))
			}
			if answer.String() != ollamaStory {
				t.Errorf("answer %q, want %q", answer.String(), ollamaStory)
			}
			if final["done"] != true || final["done_reason"] != "stop" || final["model"] != tt.model || final["eval_count"] != 12.0 ||
				final["prompt_eval_count"].(float64) < 1 || final["total_duration"].(float64) <= 0 || final["context"] != nil {
				t.Errorf("final answer %v", final)
			}
			chats := a.Ollama.ChatRequests()
			if len(chats) != before+1 {
				t.Fatalf("%d chat requests upstream, want 1", len(chats)-before)
			}
			if sent := chats[len(chats)-1]; !reflect.DeepEqual(sent.Messages, tt.sent) || !reflect.DeepEqual(sent.Options, tt.options) {
				t.Errorf("sent upstream %+v with options %v, want %+v with %v", sent.Messages, sent.Options, tt.sent, tt.options)
			}
		})
	}
	// Nothing is stored: Ollama's clients keep their own history.
	resp := ollamaDo(t, a, http.MethodGet, "/v1/conversations", auth, "")
	if page := readOllamaJSON(t, resp, http.StatusOK); len(page["items"].([]any)) != 0 {
		t.Errorf("conversations %v, want none", page)
	}
}

func TestOllamaStreamIsIncremental(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{Ollama: ollamatest.Options{ChunkDelay: 50 * time.Millisecond}})
	start := time.Now()
	resp := ollamaDo(t, a, http.MethodPost, "/ollama/api/chat", auth, `{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}`)
	if resp.Header.Get("X-Accel-Buffering") != "no" {
		t.Errorf("X-Accel-Buffering = %q, want no", resp.Header.Get("X-Accel-Buffering"))
	}
	lines := readOllamaLines(t, resp.Body, "OllamaChatAnswer")
	ended := time.Now()
	// The lines arrive as the model makes them: the first long before the last, which the fake sends 12
	// chunk delays later.
	if first, total := lines[0].at.Sub(start), ended.Sub(start); len(lines) != 13 || first > total/2 {
		t.Errorf("%d lines; the first after %v of %v: the stream is buffered", len(lines), first, total)
	}
}

func TestOllamaStreamFailsMidway(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{Ollama: ollamatest.Options{Fault: &ollamatest.Fault{After: 3, Error: "an error was encountered while running the model: unexpected EOF"}}})
	tests := []struct{ name, path, body, schema string }{
		{"chat", "/ollama/api/chat", `{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}`, "OllamaChatAnswer"},
		{"generate", "/ollama/api/generate", `{"model":"tiny","prompt":"Hi"}`, "OllamaGenerateAnswer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ollamaDo(t, a, http.MethodPost, tt.path, auth, tt.body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200: the failure comes after the first chunk", resp.StatusCode)
			}
			lines := readOllamaLines(t, resp.Body, tt.schema)
			if len(lines) != 4 {
				t.Fatalf("%d lines, want 3 and an error line: %v", len(lines), lines)
			}
			for _, l := range lines[:3] {
				if l.fields["done"] != false {
					t.Errorf("line %v, want done false", l.fields)
				}
			}
			want := map[string]any{"error": "the model provider failed in the middle of the answer"}
			if last := lines[3].fields; !reflect.DeepEqual(last, want) {
				t.Errorf("last line %v, want %v", last, want)
			}
		})
	}
	t.Run("not streamed", func(t *testing.T) {
		resp := ollamaDo(t, a, http.MethodPost, "/ollama/api/chat", auth, `{"model":"tiny","stream":false,"messages":[{"role":"user","content":"Hi"}]}`)
		if got := readOllamaJSON(t, resp, http.StatusBadGateway); got["error"] != "the model provider failed in the middle of the answer" {
			t.Errorf("error %v", got)
		}
	})
}

func TestOllamaErrors(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{})
	chat := func(extra string) string {
		return `{"model":"tiny","stream":false,"messages":[{"role":"user","content":"Hi"}]` + extra + `}`
	}
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		message                        string
		header                         string // a header the answer must have
	}{
		{"unknown model", "POST", "/ollama/api/chat", auth, `{"model":"nosuch:7b","messages":[{"role":"user","content":"Hi"}]}`, 404, "model 'nosuch:7b' not found", ""},
		{"unknown model, not streamed", "POST", "/ollama/api/chat", auth, `{"model":"nosuch","stream":false,"messages":[{"role":"user","content":"Hi"}]}`, 404, "model 'nosuch' not found", ""},
		{"generate with an unknown model", "POST", "/ollama/api/generate", auth, `{"model":"nosuch","prompt":"x"}`, 404, "model 'nosuch' not found", ""},
		{"embed with an unknown model", "POST", "/ollama/api/embed", auth, `{"model":"nosuch","input":"x"}`, 404, "model 'nosuch' not found", ""},
		{"show an unknown model", "POST", "/ollama/api/show", auth, `{"model":"no-such-model"}`, 404, "model 'no-such-model' not found", ""},
		{"no model", "POST", "/ollama/api/chat", auth, `{"messages":[{"role":"user","content":"Hi"}]}`, 400, "model: is required", ""},
		{"no messages", "POST", "/ollama/api/chat", auth, `{"model":"tiny","messages":[]}`, 400, "messages: is required", ""},
		{"a tool message", "POST", "/ollama/api/chat", auth, `{"model":"tiny","messages":[{"role":"tool","content":"42"}]}`, 400, "messages[0].role: must be system, user or assistant", ""},
		{"images", "POST", "/ollama/api/chat", auth, `{"model":"tiny","messages":[{"role":"user","content":"Hi","images":["aGk="]}]}`, 400, "messages[0].images: is not supported by this gateway", ""},
		{"tools", "POST", "/ollama/api/chat", auth, chat(`,"tools":[{"type":"function","function":{"name":"f"}}]`), 400, "tools: is not supported by this gateway", ""},
		{"thinking", "POST", "/ollama/api/chat", auth, chat(`,"think":"high"`), 400, "think: is not supported by this gateway", ""},
		{"structured output", "POST", "/ollama/api/generate", auth, `{"model":"tiny","prompt":"x","format":"json"}`, 400, "format: is not supported by this gateway", ""},
		{"no prompt", "POST", "/ollama/api/generate", auth, `{"model":"tiny"}`, 400, "prompt: is required", ""},
		{"no input", "POST", "/ollama/api/embed", auth, `{"model":"tiny","input":[]}`, 400, "input: must be a text or a list of texts", ""},
		{"num_predict beyond the bound", "POST", "/ollama/api/chat", auth, chat(`,"options":{"num_predict":100000}`), 422, "options.num_predict: must be", ""},
		{"num_ctx beyond the bound", "POST", "/ollama/api/generate", auth, `{"model":"tiny","prompt":"x","options":{"num_ctx":1000000}}`, 422, "options.num_ctx: must be", ""},
		{"a wrong type", "POST", "/ollama/api/chat", auth, `{"model":"tiny","messages":"hi"}`, 400, "Unmarshal type error", ""},
		{"malformed JSON", "POST", "/ollama/api/chat", auth, `{"model":"tiny","messages":[`, 400, "body: is not one valid JSON value", ""},
		{"no token", "POST", "/ollama/api/chat", "", chat(""), 401, "a valid bearer token is required", "WWW-Authenticate"},
		{"a bad token", "GET", "/ollama/api/tags", "Bearer not-a-token", "", 401, "the token is invalid", "WWW-Authenticate"},
		{"wrong method", "GET", "/ollama/api/chat", auth, "", 405, "the route does not allow this method", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ollamaDo(t, a, tt.method, tt.path, tt.auth, tt.body)
			got := readOllamaJSON(t, resp, tt.status)
			if msg, _ := got["error"].(string); len(got) != 1 || !strings.HasPrefix(msg, tt.message) {
				t.Errorf("body %v, want {\"error\": %q...}", got, tt.message)
			}
			if tt.header != "" && resp.Header.Get(tt.header) == "" {
				t.Errorf("header %s missing", tt.header)
			}
		})
	}
}

// TestOllamaRefusesModelManagement checks that the routes that change the model server are not served, in
// Ollama's error shape.
func TestOllamaRefusesModelManagement(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{})
	for _, route := range []struct{ method, path string }{
		{"POST", "/ollama/api/pull"}, {"POST", "/ollama/api/push"}, {"POST", "/ollama/api/create"},
		{"POST", "/ollama/api/copy"}, {"DELETE", "/ollama/api/delete"},
	} {
		t.Run(route.path, func(t *testing.T) {
			resp := ollamaDo(t, a, route.method, route.path, auth, `{"model":"tiny"}`)
			if got := readOllamaJSON(t, resp, http.StatusNotFound); got["error"] != "no such route" {
				t.Errorf("body %v", got)
			}
		})
	}
	if n := len(a.Ollama.Requests()); n != 0 {
		t.Errorf("%d requests reached the model server", n)
	}
}

// TestOllamaRetryAfter checks that refusals that say when to retry keep saying it in Ollama's shape.
func TestOllamaRetryAfter(t *testing.T) {
	t.Run("too many model calls", func(t *testing.T) {
		a, auth := ollamaApp(t, testapp.Options{
			Ollama:    ollamatest.Options{Fault: &ollamatest.Fault{After: 1}}, // streams stall after one chunk
			Configure: func(c *config.Config) { c.MaxStreamsPerUser = 1 },
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"/ollama/api/chat", strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"Hi"}]}`))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		held, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Body.Close()
		if _, err := bufio.NewReader(held.Body).ReadString('\n'); err != nil {
			t.Fatalf("first line of the held stream: %v", err)
		}
		resp := ollamaDo(t, a, http.MethodPost, "/ollama/api/generate", auth, `{"model":"tiny","prompt":"x"}`)
		if got := readOllamaJSON(t, resp, http.StatusTooManyRequests); resp.Header.Get("Retry-After") != "1" || !strings.HasPrefix(got["error"].(string), "you have 1 chats running") {
			t.Errorf("Retry-After %q, body %v", resp.Header.Get("Retry-After"), got)
		}
	})
	t.Run("model server unavailable", func(t *testing.T) {
		a, auth := ollamaApp(t, testapp.Options{Ollama: ollamatest.Options{Status: http.StatusServiceUnavailable}})
		resp := ollamaDo(t, a, http.MethodGet, "/ollama/api/tags", auth, "")
		if got := readOllamaJSON(t, resp, http.StatusServiceUnavailable); resp.Header.Get("Retry-After") == "" || got["error"] != "the model provider is unavailable" {
			t.Errorf("Retry-After %q, body %v", resp.Header.Get("Retry-After"), got)
		}
	})
}

func TestOllamaModels(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{})
	tiny := ollamatest.Tiny()
	details := map[string]any{
		"parent_model": "", "format": "", "family": "llama", "families": []any{"llama"}, "parameter_size": "293K",
		"quantization_level": "unknown",
	}
	tags := readOllamaJSON(t, ollamaDo(t, a, http.MethodGet, "/ollama/api/tags", auth, ""), http.StatusOK)
	want := map[string]any{"models": []any{map[string]any{
		"name": "tiny:latest", "model": "tiny:latest", "modified_at": tiny.ModifiedAt.Format(time.RFC3339Nano),
		"size": float64(tiny.Size), "digest": "", "details": details,
	}}}
	if !reflect.DeepEqual(tags, want) {
		t.Errorf("tags %v, want %v", tags, want)
	}

	show := readOllamaJSON(t, ollamaDo(t, a, http.MethodPost, "/ollama/api/show", auth, `{"model":"tiny"}`), http.StatusOK)
	details["format"] = "gguf"
	want = map[string]any{
		"parameters": tiny.Parameters, "details": details, "capabilities": []any{"completion"},
		"model_info":  map[string]any{"general.architecture": "llama", "llama.context_length": 2048.0},
		"modified_at": tiny.ModifiedAt.Format(time.RFC3339Nano),
	}
	if !reflect.DeepEqual(show, want) {
		t.Errorf("show %v, want %v", show, want)
	}

	spec, _ := testapp.Contract(t)
	version := readOllamaJSON(t, ollamaDo(t, a, http.MethodGet, "/ollama/api/version", auth, ""), http.StatusOK)
	if want := map[string]any{"version": spec.Info.Version}; !reflect.DeepEqual(version, want) {
		t.Errorf("version %v, want %v", version, want)
	}
}

func TestOllamaEmbed(t *testing.T) {
	a, auth := ollamaApp(t, testapp.Options{})
	tests := []struct {
		name, input string
		texts       []string
	}{
		{"one text", `"Once upon a time"`, []string{"Once upon a time"}},
		{"a list", `["Once upon a time","a big fish"]`, []string{"Once upon a time", "a big fish"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ollamaDo(t, a, http.MethodPost, "/ollama/api/embed", auth, `{"model":"tiny","input":`+tt.input+`}`)
			var got struct {
				Model           string      `json:"model"`
				Embeddings      [][]float64 `json:"embeddings"`
				PromptEvalCount int         `json:"prompt_eval_count"`
			}
			raw, _ := json.Marshal(readOllamaJSON(t, resp, http.StatusOK))
			_ = json.Unmarshal(raw, &got)
			want := make([][]float64, len(tt.texts))
			for i, text := range tt.texts {
				want[i] = ollamatest.Embedding("tiny:latest", text)
			}
			if got.Model != "tiny" || !reflect.DeepEqual(got.Embeddings, want) || got.PromptEvalCount == 0 {
				t.Errorf("embed = %+v, want model tiny and %v", got, want)
			}
		})
	}
}
