package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// story is the fake model's answer to every chat: its 12 recorded tokens.
const story = ", there was a little girl named Lily. She"

// namespacedModel is a model whose id holds '/' and ':', as the router names the models of its upstreams.
func namespacedModel() ollamatest.Model {
	m := ollamatest.Tiny()
	m.Name = "team/tiny:latest"
	return m
}

// startOpenAI starts the service with the fake models tiny and team/tiny, and returns it with the secret of a
// new user's API key.
func startOpenAI(t *testing.T, opts testapp.Options) (*testapp.App, string) {
	t.Helper()
	if opts.Ollama.Models == nil {
		opts.Ollama.Models = []ollamatest.Model{ollamatest.Tiny(), namespacedModel()}
	}
	a := testapp.Start(t, opts)
	return a, newAPIKey(t, a)
}

// newAPIKey signs up a user and creates an API key for it, returning the key's secret.
func newAPIKey(t *testing.T, a *testapp.App) string {
	t.Helper()
	_, tokens := a.NewUser(t)
	resp, err := a.Client(t, testapp.Bearer(tokens.AccessToken)).CreateAPIKeyWithResponse(context.Background(), client.NewAPIKey{Name: "openai"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON201 == nil {
		t.Fatalf("create API key = %d %s", resp.StatusCode(), resp.Body)
	}
	return resp.JSON201.Secret
}

// openaiClient is the official Go client pointed at the service, every answer checked against the contract.
func openaiClient(t *testing.T, a *testapp.App, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(a.URL+"/openai/v1/"), option.WithAPIKey(key),
		option.WithHTTPClient(a.HTTPClient(t)), option.WithMaxRetries(0))
}

// wantAPIError fails t unless err is the client's typed error with status and code.
func wantAPIError(t *testing.T, err error, status int, typ, code string) {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error = %v, want an *openai.Error", err)
	}
	if apiErr.StatusCode != status || apiErr.Type != typ || apiErr.Code != code || apiErr.Message == "" {
		t.Errorf("error = %d %s/%s %q, want %d %s/%s", apiErr.StatusCode, apiErr.Type, apiErr.Code, apiErr.Message, status, typ, code)
	}
	if apiErr.Response.Header.Get("X-Request-ID") == "" {
		t.Error("the error answer has no X-Request-ID")
	}
}

// TestOpenAIGoClient runs the official Go module, pointed at /openai/v1 with an API key, through a completion,
// a stream with usage, the models, embeddings and two typed errors.
func TestOpenAIGoClient(t *testing.T) {
	a, key := startOpenAI(t, testapp.Options{})
	c := openaiClient(t, a, key)
	ctx := context.Background()
	messages := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Tell me a story")}

	t.Run("completion", func(t *testing.T) {
		got, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "tiny", Messages: messages, Temperature: openai.Float(0.2), TopP: openai.Float(0.9),
			MaxCompletionTokens: openai.Int(40), Seed: openai.Int(7),
			Stop: openai.ChatCompletionNewParamsStopUnion{OfStringArray: []string{"THE END"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Choices) != 1 || got.Choices[0].Message.Content != story || got.Choices[0].Message.Role != "assistant" ||
			got.Choices[0].FinishReason != "stop" || got.Model != "tiny" || !strings.HasPrefix(got.ID, "chatcmpl-") ||
			got.Usage.CompletionTokens != 12 || got.Usage.TotalTokens != got.Usage.PromptTokens+12 || got.Usage.PromptTokens == 0 {
			t.Errorf("completion = %s", got.RawJSON())
		}
		chats := a.Ollama.ChatRequests()
		sent := chats[len(chats)-1]
		wantOptions := map[string]any{"temperature": 0.2, "top_p": 0.9, "num_predict": 40.0, "seed": 7.0, "stop": []any{"THE END"}}
		if len(sent.Messages) != 2 || sent.Messages[0].Role != "system" || !jsonEqual(sent.Options, wantOptions) {
			t.Errorf("the model was sent %+v", sent)
		}
	})

	t.Run("stream with usage", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "tiny", Messages: messages, StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for stream.Next() {
			acc.AddChunk(stream.Current())
			chunks++
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		// The role, 12 pieces, the finish_reason and the usage.
		if chunks != 15 || len(acc.Choices) != 1 || acc.Choices[0].Message.Content != story || acc.Choices[0].FinishReason != "stop" ||
			acc.Usage.CompletionTokens != 12 || acc.Usage.TotalTokens != acc.Usage.PromptTokens+12 {
			t.Errorf("%d chunks make %+v", chunks, acc.ChatCompletion)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
			if m.Object != "model" || m.Created != ollamatest.Tiny().ModifiedAt.Unix() {
				t.Errorf("model %s", m.RawJSON())
			}
		}
		if !slices.Equal(ids, []string{"tiny:latest", "team/tiny:latest"}) {
			t.Errorf("model ids = %q", ids)
		}
		m, err := c.Models.Get(ctx, "team/tiny:latest")
		if err != nil {
			t.Fatal(err)
		}
		if m.ID != "team/tiny:latest" || m.OwnedBy != "team" {
			t.Errorf("model = %s", m.RawJSON())
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		got, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "tiny", Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one text", "another text"}},
			EncodingFormat: openai.EmbeddingNewParamsEncodingFormatFloat,
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Data) != 2 || got.Data[1].Index != 1 || !slices.Equal(got.Data[1].Embedding, ollamatest.Embedding("tiny:latest", "another text")) ||
			got.Usage.PromptTokens != 4 || got.Usage.TotalTokens != 4 || got.Model != "tiny" {
			t.Errorf("embeddings = %s", got.RawJSON())
		}
	})

	t.Run("bad key", func(t *testing.T) {
		bad := openaiClient(t, a, "ds_not-a-key")
		_, err := bad.Models.List(ctx)
		wantAPIError(t, err, http.StatusUnauthorized, "authentication_error", "invalid_api_key")
	})

	t.Run("unknown model", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "llama9:70b", Messages: messages})
		wantAPIError(t, err, http.StatusNotFound, "not_found_error", "model_not_found")
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "llama9:70b", Messages: messages})
		for stream.Next() {
			t.Error("a stream for an unknown model sent a chunk")
		}
		wantAPIError(t, stream.Err(), http.StatusNotFound, "not_found_error", "model_not_found")
	})
}

// jsonEqual reports whether a and b encode to the same JSON value.
func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// TestOpenAINodeClient runs the official `openai` npm package, pointed at /openai/v1 with an API key, through
// a completion, a stream, the models, embeddings (base64, as it asks for them) and two typed errors.
func TestOpenAINodeClient(t *testing.T) {
	dir := filepath.Join("..", "clients", "node")
	testenv.RequireNodeModule(t, dir, "openai")
	a, key := startOpenAI(t, testapp.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "openai.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DS_BASE_URL="+a.URL+"/openai/v1", "DS_API_KEY="+key, "DS_MODEL=tiny", "DS_MODEL_ID=team/tiny:latest")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node openai.mjs: %v\n%s%s", err, out, stderr.Bytes())
	}
	type apiError struct {
		Class, Type, Code string
		Status            int
	}
	var got struct {
		Plain struct {
			Object, Model, Content string
			FinishReason           string `json:"finish_reason"`
			Usage                  struct {
				PromptTokens     int `json:"prompt_tokens"`
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		Streamed struct {
			Content, Role string
			Chunks        int
			FinishReason  string `json:"finish_reason"`
			Usage         *struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		Models []string
		Model  struct {
			ID, Object string
			OwnedBy    string `json:"owned_by"`
		}
		Embeddings struct {
			Model   string
			Vectors [][]float64
		}
		BadKey, UnknownModel apiError
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if got.Plain.Object != "chat.completion" || got.Plain.Content != story || got.Plain.FinishReason != "stop" ||
		got.Plain.Model != "tiny" || got.Plain.Usage.CompletionTokens != 12 || got.Plain.Usage.PromptTokens == 0 {
		t.Errorf("completion = %+v", got.Plain)
	}
	if got.Streamed.Content != story || got.Streamed.Role != "assistant" || got.Streamed.Chunks != 15 ||
		got.Streamed.FinishReason != "stop" || got.Streamed.Usage == nil || got.Streamed.Usage.CompletionTokens != 12 {
		t.Errorf("stream = %+v", got.Streamed)
	}
	if !slices.Equal(got.Models, []string{"tiny:latest", "team/tiny:latest"}) || got.Model.ID != "team/tiny:latest" || got.Model.OwnedBy != "team" {
		t.Errorf("models = %q, model = %+v", got.Models, got.Model)
	}
	// The client asked for base64 and decoded float32s: the fake's vectors to float32 precision.
	for i, text := range []string{"one text", "another text"} {
		want := ollamatest.Embedding("tiny:latest", text)
		if i >= len(got.Embeddings.Vectors) || len(got.Embeddings.Vectors[i]) != len(want) {
			t.Fatalf("embeddings = %+v", got.Embeddings)
		}
		for j, v := range got.Embeddings.Vectors[i] {
			if float32(v) != float32(want[j]) {
				t.Errorf("embedding %d[%d] = %v, want %v", i, j, v, want[j])
			}
		}
	}
	if got.BadKey != (apiError{"AuthenticationError", "authentication_error", "invalid_api_key", 401}) {
		t.Errorf("bad key: %+v", got.BadKey)
	}
	if got.UnknownModel != (apiError{"NotFoundError", "not_found_error", "model_not_found", 404}) {
		t.Errorf("unknown model: %+v", got.UnknownModel)
	}
}

// openaiCall sends a request to the OpenAI-compatible API with key and headers given as name, value pairs,
// and returns the answer with its body read. Answers are checked against the contract.
func openaiCall(t *testing.T, a *testapp.App, method, path, key, body string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req := request{method: method, path: "/openai/v1" + path, header: http.Header{}}
	if body != "" {
		req = req.withRaw(body, "application/json")
	}
	if key != "" {
		req.header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.header.Set(headers[i], headers[i+1])
	}
	return send(t, a, req)
}

// openaiErrorOf decodes an OpenAI error answer, failing t when it is not one with status.
func openaiErrorOf(t *testing.T, resp *http.Response, body []byte, status int) (typ, code, param string) {
	t.Helper()
	var e struct {
		Error struct {
			Message, Type string
			Param, Code   *string
		}
	}
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		t.Fatalf("answer = %d %s %s, want a %d OpenAI error", resp.StatusCode, resp.Header.Get("Content-Type"), body, status)
	}
	if resp.Header.Get("X-Request-ID") == "" {
		t.Error("no X-Request-ID")
	}
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	return e.Error.Type, deref(e.Error.Code), deref(e.Error.Param)
}

func TestOpenAIRefusals(t *testing.T) {
	a, key := startOpenAI(t, testapp.Options{})
	const hi = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, path, body string
		status           int
		code, param      string
	}{
		{"tools", "/chat/completions", `{"model":"tiny",` + hi + `,"tools":[{"type":"function","function":{"name":"f"}}]}`, 400, "invalid_value", "tools"},
		{"n above 1", "/chat/completions", `{"model":"tiny",` + hi + `,"n":3}`, 400, "invalid_value", "n"},
		{"logprobs", "/chat/completions", `{"model":"tiny",` + hi + `,"logprobs":true,"top_logprobs":2}`, 400, "invalid_value", "logprobs"},
		{"an image", "/chat/completions", `{"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`,
			400, "invalid_value", "messages[0].content[1].type"},
		{"a tool message", "/chat/completions", `{"model":"tiny","messages":[{"role":"tool","content":"42","tool_call_id":"c1"}]}`, 400, "invalid_value", "messages[0].role"},
		{"too many tokens", "/chat/completions", `{"model":"tiny",` + hi + `,"max_tokens":100000}`, 400, "invalid_value", "max_tokens"},
		{"a wrong type", "/chat/completions", `{"model":"tiny",` + hi + `,"stream":"yes"}`, 400, "invalid_request", ""},
		{"not JSON", "/chat/completions", `{"model":`, 400, "invalid_request", "body"},
		{"dimensions", "/embeddings", `{"model":"tiny","input":"x","dimensions":64}`, 400, "invalid_value", "dimensions"},
		{"token arrays", "/embeddings", `{"model":"tiny","input":[[1,2,3]]}`, 400, "invalid_request", "input"},
		{"an unknown embedding model", "/embeddings", `{"model":"llama9:70b","input":"x"}`, 404, "model_not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := openaiCall(t, a, http.MethodPost, tt.path, key, tt.body)
			_, code, param := openaiErrorOf(t, resp, body, tt.status)
			if code != tt.code || param != tt.param {
				t.Errorf("code %q param %q, want %q %q: %s", code, param, tt.code, tt.param, body)
			}
		})
	}
	if n := len(a.Ollama.ChatRequests()); n != 0 {
		t.Errorf("refused requests reached the model %d times", n)
	}

	t.Run("no credentials", func(t *testing.T) {
		resp, body := openaiCall(t, a, http.MethodGet, "/models", "", "")
		if typ, code, _ := openaiErrorOf(t, resp, body, http.StatusUnauthorized); typ != "authentication_error" || code != "invalid_api_key" {
			t.Errorf("401 = %s", body)
		}
		if resp.Header.Get("WWW-Authenticate") != "Bearer" {
			t.Error("no Bearer challenge")
		}
	})
	t.Run("no such route", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, a.URL+"/openai/v1/completions", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, body := doPlain(t, req)
		if typ, _, _ := openaiErrorOf(t, resp, body, http.StatusNotFound); typ != "not_found_error" {
			t.Errorf("404 = %s", body)
		}
	})
}

// doPlain sends req without checking the answer against the contract, for what the contract does not
// describe, and returns the answer with its body read.
func doPlain(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp, body.Bytes()
}

func TestOpenAIRateLimitKeepsRetryAfter(t *testing.T) {
	a, key := startOpenAI(t, testapp.Options{Configure: func(c *config.Config) {
		c.RateLimitChat = config.Rate{Limit: 1, Period: time.Hour}
	}})
	body := `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`
	if resp, raw := openaiCall(t, a, http.MethodPost, "/chat/completions", key, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("first call = %d %s", resp.StatusCode, raw)
	}
	resp, raw := openaiCall(t, a, http.MethodPost, "/chat/completions", key, body)
	if typ, code, _ := openaiErrorOf(t, resp, raw, http.StatusTooManyRequests); typ != "rate_limit_error" || code != "rate_limit_exceeded" {
		t.Errorf("429 = %s", raw)
	}
	if resp.Header.Get("Retry-After") == "" || resp.Header.Get("RateLimit-Limit") != "1" {
		t.Errorf("429 headers = %v", resp.Header)
	}
}

func TestOpenAIModelIDs(t *testing.T) {
	a, key := startOpenAI(t, testapp.Options{})
	for _, path := range []string{"team/tiny:latest", "team%2Ftiny%3Alatest", "team/tiny"} {
		req, _ := http.NewRequest(http.MethodGet, a.URL+"/openai/v1/models/"+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, body := doPlain(t, req)
		var m struct{ ID, Object string }
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &m) != nil || m.ID != "team/tiny:latest" || m.Object != "model" {
			t.Errorf("GET /openai/v1/models/%s = %d %s", path, resp.StatusCode, body)
		}
	}
	resp, body := openaiCall(t, a, http.MethodGet, "/models/tiny", key, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":"tiny:latest"`) {
		t.Errorf("GET /openai/v1/models/tiny = %d %s", resp.StatusCode, body)
	}
	resp, body = openaiCall(t, a, http.MethodGet, "/models/llama9:70b", key, "")
	if _, code, _ := openaiErrorOf(t, resp, body, http.StatusNotFound); code != "model_not_found" {
		t.Errorf("unknown model = %s", body)
	}
}

// openaiEvents posts a streamed chat completion and returns the data of its events; it fails t unless the
// answer is a 200 event stream.
func openaiEvents(t *testing.T, a *testapp.App, key, body string, headers ...string) (*http.Response, []string) {
	t.Helper()
	resp, raw := openaiCall(t, a, http.MethodPost, "/chat/completions", key, body, headers...)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("stream = %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	events, err := sse.ReadAll(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]string, len(events))
	for i, ev := range events {
		if ev.Type != "message" {
			t.Errorf("event %d is named %q; OpenAI's are unnamed", i, ev.Type)
		}
		data[i] = ev.Data
		if ev.Data != "[DONE]" {
			checkSchema(t, ev.Data, "OpenAIChatCompletionChunk", "OpenAIErrorResponse")
		}
	}
	return resp, data
}

// checkSchema fails t unless the JSON data matches one of the contract's schemas.
func checkSchema(t *testing.T, data string, schemas ...string) {
	t.Helper()
	spec, _ := testapp.Contract(t)
	var v any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("event data %s: %v", data, err)
	}
	var errs []error
	for _, name := range schemas {
		err := spec.Components.Schemas[name].Value.VisitJSON(v)
		if err == nil {
			return
		}
		errs = append(errs, err)
	}
	t.Errorf("event data %s matches none of %v: %v", data, schemas, errors.Join(errs...))
}

func TestOpenAIStreamEnds(t *testing.T) {
	body := `{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}],"stream":true,"stream_options":{"include_usage":true}}`
	t.Run("complete", func(t *testing.T) {
		a, key := startOpenAI(t, testapp.Options{})
		_, data := openaiEvents(t, a, key, body)
		if len(data) != 16 || data[len(data)-1] != "[DONE]" || !strings.Contains(data[13], `"finish_reason":"stop"`) ||
			!strings.Contains(data[14], `"choices":[]`) || !strings.Contains(data[14], `"completion_tokens":12`) {
			t.Errorf("events = %q", data)
		}
	})
	t.Run("the model fails midway", func(t *testing.T) {
		a, key := startOpenAI(t, testapp.Options{Ollama: ollamatest.Options{
			Models: []ollamatest.Model{ollamatest.Tiny()}, Fault: &ollamatest.Fault{After: 3, Error: "an error was encountered while running the model"},
		}})
		_, data := openaiEvents(t, a, key, body)
		if len(data) != 5 || !strings.Contains(data[0], `"role":"assistant"`) || !strings.HasPrefix(data[4], `{"error":`) {
			t.Fatalf("events = %q, want the role, 3 pieces, then an error and no [DONE]", data)
		}
		var e struct{ Error struct{ Type, Code string } }
		if err := json.Unmarshal([]byte(data[4]), &e); err != nil || e.Error.Type != "server_error" || e.Error.Code != "upstream_failed" {
			t.Errorf("error event = %s", data[4])
		}
	})
	t.Run("the model is unknown: an error answer, not a stream", func(t *testing.T) {
		a, key := startOpenAI(t, testapp.Options{})
		resp, raw := openaiCall(t, a, http.MethodPost, "/chat/completions", key, strings.Replace(body, `"tiny"`, `"llama9:70b"`, 1))
		if _, code, _ := openaiErrorOf(t, resp, raw, http.StatusNotFound); code != "model_not_found" {
			t.Errorf("answer = %s", raw)
		}
	})
}

func TestOpenAIConversations(t *testing.T) {
	a, key := startOpenAI(t, testapp.Options{})
	messages := func(msgs ...string) string { // role, content pairs
		var b strings.Builder
		for i := 0; i+1 < len(msgs); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"role":"` + msgs[i] + `","content":"` + msgs[i+1] + `"}`)
		}
		return `{"model":"tiny","messages":[` + b.String() + `]}`
	}
	storedMessages := func() int {
		return countRows(t, a, "SELECT count(*) FROM messages")
	}

	t.Run("nothing is stored by default", func(t *testing.T) {
		before := storedMessages()
		resp, body := openaiCall(t, a, http.MethodPost, "/chat/completions", key, messages("user", "Tell me a story"))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-DS-Conversation-Id") != "" {
			t.Fatalf("chat = %d %v %s", resp.StatusCode, resp.Header, body)
		}
		if after := storedMessages(); after != before {
			t.Errorf("a stateless chat stored %d messages", after-before)
		}
	})

	var id uuid.UUID
	t.Run("new", func(t *testing.T) {
		resp, body := openaiCall(t, a, http.MethodPost, "/chat/completions", key,
			messages("system", "Be brief.", "user", "Tell me a story"), "X-DS-Conversation-Id", "new")
		var err error
		if id, err = uuid.Parse(resp.Header.Get("X-DS-Conversation-Id")); resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("chat = %d %v %s", resp.StatusCode, resp.Header, body)
		}
	})
	t.Run("an existing conversation, with the whole history", func(t *testing.T) {
		resp, body := openaiCall(t, a, http.MethodPost, "/chat/completions", key,
			messages("system", "Be brief.", "user", "Tell me a story", "assistant", story, "user", "And then?"), "X-DS-Conversation-Id", id.String())
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-DS-Conversation-Id") != id.String() {
			t.Fatalf("chat = %d %v %s", resp.StatusCode, resp.Header, body)
		}
		chats := a.Ollama.ChatRequests()
		if sent := chats[len(chats)-1].Messages; len(sent) != 4 {
			t.Errorf("the model was sent %+v, want the client's 4 messages and no stored ones", sent)
		}
	})
	t.Run("streamed", func(t *testing.T) {
		resp, data := openaiEvents(t, a, key, strings.Replace(messages("user", "Once more"), `]}`, `],"stream":true}`, 1), "X-DS-Conversation-Id", id.String())
		if resp.Header.Get("X-DS-Conversation-Id") != id.String() || data[len(data)-1] != "[DONE]" {
			t.Errorf("stream = %v %q", resp.Header, data)
		}
	})
	t.Run("the conversation holds each last message and answer", func(t *testing.T) {
		conv := conversationOf(t, a, key, id)
		var got []string
		for _, m := range conv.Messages {
			got = append(got, string(m.Role)+":"+m.Content+":"+string(m.Status))
		}
		want := []string{
			"user:Tell me a story:complete", "assistant:" + story + ":complete",
			"user:And then?:complete", "assistant:" + story + ":complete",
			"user:Once more:complete", "assistant:" + story + ":complete",
		}
		if !slices.Equal(got, want) || conv.Title != "Tell me a story" {
			t.Errorf("conversation %q holds %q, want %q", conv.Title, got, want)
		}
	})
	t.Run("another user's conversation", func(t *testing.T) {
		other := newAPIKey(t, a)
		resp, body := openaiCall(t, a, http.MethodPost, "/chat/completions", other, messages("user", "hi"), "X-DS-Conversation-Id", id.String())
		if typ, code, _ := openaiErrorOf(t, resp, body, http.StatusNotFound); typ != "not_found_error" || code != "not_found" {
			t.Errorf("answer = %s", body)
		}
	})
	t.Run("a bad id", func(t *testing.T) {
		resp, body := openaiCall(t, a, http.MethodPost, "/chat/completions", key, messages("user", "hi"), "X-DS-Conversation-Id", "latest")
		if _, _, param := openaiErrorOf(t, resp, body, http.StatusBadRequest); param != "X-DS-Conversation-Id" {
			t.Errorf("answer = %s", body)
		}
	})
}

// conversationOf reads a conversation with the native API, authenticated by key.
func conversationOf(t *testing.T, a *testapp.App, key string, id uuid.UUID) client.ConversationDetail {
	t.Helper()
	return conversation(t, a.Client(t, testapp.Bearer(key)), id)
}
