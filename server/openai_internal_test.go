package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"iter"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
)

// chatRequest decodes a chat completion request as the strict server does.
func chatRequest(t *testing.T, body string) *apiserver.OpenAIChatCompletionRequest {
	t.Helper()
	var req apiserver.OpenAIChatCompletionRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return &req
}

func TestOpenAITurn(t *testing.T) {
	user := uuid.New()
	conv := uuid.New()
	const hi = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name         string
		body         string
		conversation *string
		want         chat.Request // UserID and Model are always user and "m"
		wantCode     core.Code
		wantField    string
	}{
		{name: "plain", body: `{"model":"m",` + hi + `}`,
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, Stateless: true}},
		{name: "every role, text parts joined, unknown fields ignored",
			body: `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},` +
				`{"role":"assistant","content":"ok","name":"bot"}],"frequency_penalty":1,"metadata":{"x":"y"},"store":false,"user":"u1","n":1,"logprobs":false,"tools":[]}`,
			want: chat.Request{Messages: []provider.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "a\nb"}, {Role: "assistant", Content: "ok"}}, Stateless: true}},
		{name: "options",
			body: `{"model":"m",` + hi + `,"temperature":0.5,"top_p":0.9,"seed":42,"max_tokens":100,"stop":"\n\n"}`,
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, Stateless: true,
				Options: map[string]any{"temperature": 0.5, "top_p": 0.9, "seed": 42, "num_predict": 100, "stop": []string{"\n\n"}}}},
		{name: "max_completion_tokens wins, stop list, nulls are absent",
			body: `{"model":"m",` + hi + `,"max_tokens":100,"max_completion_tokens":7,"stop":["a","b"],"temperature":null,"stream_options":null,"user":null}`,
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, Stateless: true,
				Options: map[string]any{"num_predict": 7, "stop": []string{"a", "b"}}}},
		{name: "a new conversation", body: `{"model":"m",` + hi + `}`, conversation: new("new"),
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, ClientHistory: true}},
		{name: "an existing conversation", body: `{"model":"m",` + hi + `}`, conversation: new(conv.String()),
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, ClientHistory: true, ConversationID: &conv}},
		{name: "an empty header stores nothing", body: `{"model":"m",` + hi + `}`, conversation: new(""),
			want: chat.Request{Messages: []provider.Message{{Role: "user", Content: "hi"}}, Stateless: true}},

		{name: "no model", body: `{` + hi + `}`, wantCode: core.Malformed, wantField: "model"},
		{name: "no messages", body: `{"model":"m","messages":[]}`, wantCode: core.Malformed, wantField: "messages"},
		{name: "unknown role", body: `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, wantCode: core.Invalid, wantField: "messages[0].role"},
		{name: "developer role", body: `{"model":"m","messages":[{"role":"developer","content":"x"}]}`, wantCode: core.Invalid, wantField: "messages[0].role"},
		{name: "no content", body: `{"model":"m","messages":[{"role":"user"}]}`, wantCode: core.Malformed, wantField: "messages[0].content"},
		{name: "null content", body: `{"model":"m","messages":[{"role":"user","content":null}]}`, wantCode: core.Malformed, wantField: "messages[0].content"},
		{name: "number content", body: `{"model":"m","messages":[{"role":"user","content":1}]}`, wantCode: core.Malformed, wantField: "messages[0].content"},
		{name: "image part", body: `{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":{"url":"data:,"}}]}]}`,
			wantCode: core.Invalid, wantField: "messages[1].content[1].type"},
		{name: "unknown part", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"video"}]}]}`, wantCode: core.Invalid, wantField: "messages[0].content[0].type"},
		{name: "tools", body: `{"model":"m",` + hi + `,"tools":[{"type":"function","function":{"name":"f"}}]}`, wantCode: core.Invalid, wantField: "tools"},
		{name: "functions", body: `{"model":"m",` + hi + `,"functions":[{"name":"f"}]}`, wantCode: core.Invalid, wantField: "functions"},
		{name: "n above 1", body: `{"model":"m",` + hi + `,"n":2}`, wantCode: core.Invalid, wantField: "n"},
		{name: "logprobs", body: `{"model":"m",` + hi + `,"logprobs":true}`, wantCode: core.Invalid, wantField: "logprobs"},
		{name: "top_logprobs", body: `{"model":"m",` + hi + `,"top_logprobs":2}`, wantCode: core.Invalid, wantField: "top_logprobs"},
		{name: "temperature too high", body: `{"model":"m",` + hi + `,"temperature":2.5}`, wantCode: core.Invalid, wantField: "temperature"},
		{name: "top_p negative", body: `{"model":"m",` + hi + `,"top_p":-0.1}`, wantCode: core.Invalid, wantField: "top_p"},
		{name: "max_tokens zero", body: `{"model":"m",` + hi + `,"max_tokens":0,"max_completion_tokens":5}`, wantCode: core.Invalid, wantField: "max_tokens"},
		{name: "max_completion_tokens negative", body: `{"model":"m",` + hi + `,"max_completion_tokens":-1}`, wantCode: core.Invalid, wantField: "max_completion_tokens"},
		{name: "stop of numbers", body: `{"model":"m",` + hi + `,"stop":[1]}`, wantCode: core.Malformed, wantField: "stop"},
		{name: "a bad conversation id", body: `{"model":"m",` + hi + `}`, conversation: new("42"), wantCode: core.Malformed, wantField: "X-DS-Conversation-Id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := openaiTurn(user, chatRequest(t, tt.body), tt.conversation)
			if tt.wantCode != "" {
				e, ok := errors.AsType[*core.Error](err)
				if !ok || e.Code != tt.wantCode || e.Field != tt.wantField {
					t.Fatalf("error = %v, want %s naming %s", err, tt.wantCode, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.UserID, tt.want.Model = user, "m"
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("turn = %+v\nwant   %+v", got, tt.want)
			}
		})
	}
}

func TestOpenAIParamNamesTheClientsField(t *testing.T) {
	refused := core.InvalidField("options.num_predict", "must be between 1 and 4096")
	for body, want := range map[string]string{
		`{"max_tokens":5000}`:                             "max_tokens",
		`{"max_completion_tokens":5000}`:                  "max_completion_tokens",
		`{"max_tokens":1,"max_completion_tokens":5000}`:   "max_completion_tokens",
		`{"max_completion_tokens":1,"max_tokens":100000}`: "max_completion_tokens",
	} {
		e, _ := errors.AsType[*core.Error](openaiParam(refused, chatRequest(t, body)))
		if e == nil || e.Field != want || e.Message != refused.Message {
			t.Errorf("%s: error %v, want it to name %s", body, e, want)
		}
	}
	if refused.Field != "options.num_predict" {
		t.Error("openaiParam changed the chat service's error")
	}
	other := core.InvalidField("messages[0].content", "must not be blank")
	if got := openaiParam(other, chatRequest(t, `{}`)); got != other {
		t.Errorf("openaiParam changed %v into %v", other, got)
	}
}

func TestOpenAIErrorTableIsComplete(t *testing.T) {
	for code := range problemKinds {
		if _, ok := openaiErrorKinds[code]; !ok {
			t.Errorf("core code %q has no OpenAI error kind", code)
		}
	}
	for code, k := range openaiErrorKinds {
		if native := kindOf(code).status; k.status != native && native != http.StatusUnprocessableEntity {
			t.Errorf("%s: status %d, the native API answers %d", code, k.status, native)
		}
	}
}

func TestOpenAIErrors(t *testing.T) {
	limit := &core.Limit{Limit: 30, Remaining: 0, Reset: 2 * time.Second}
	tests := []struct {
		name    string
		err     *core.Error
		status  int
		body    string
		headers map[string]string
	}{
		{"unsupported field", core.InvalidField("tools", "tools and function calling are not supported"), 400,
			`{"error":{"message":"tools: tools and function calling are not supported","type":"invalid_request_error","param":"tools","code":"invalid_value"}}`, nil},
		{"malformed body", core.Errorf(core.Malformed, "the request is malformed"), 400,
			`{"error":{"message":"the request is malformed","type":"invalid_request_error","param":null,"code":"invalid_request"}}`, nil},
		{"no credentials", core.Errorf(core.Unauthorized, "a valid bearer token is required"), 401,
			`{"error":{"message":"a valid bearer token is required","type":"authentication_error","param":null,"code":"invalid_api_key"}}`,
			map[string]string{"WWW-Authenticate": "Bearer"}},
		{"storage full", core.Errorf(core.StorageFull, "full"), 403,
			`{"error":{"message":"full","type":"permission_error","param":null,"code":"storage_full"}}`, nil},
		{"unknown model", core.Errorf(core.ModelNotFound, `model "x" not found`), 404,
			`{"error":{"message":"model \"x\" not found","type":"not_found_error","param":null,"code":"model_not_found"}}`, nil},
		{"another user's conversation", core.Errorf(core.NotFound, "conversation not found"), 404,
			`{"error":{"message":"conversation not found","type":"not_found_error","param":null,"code":"not_found"}}`, nil},
		{"rate limited", &core.Error{Code: core.RateLimited, Message: "rate limit exceeded, retry in 2 seconds", RetryAfter: 2 * time.Second, Limit: limit}, 429,
			`{"error":{"message":"rate limit exceeded, retry in 2 seconds","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`,
			map[string]string{"Retry-After": "2", "RateLimit-Limit": "30", "RateLimit-Remaining": "0", "RateLimit-Reset": "2"}},
		{"too many streams", &core.Error{Code: core.TooManyStreams, Message: "wait", RetryAfter: time.Second}, 429,
			`{"error":{"message":"wait","type":"rate_limit_error","param":null,"code":"too_many_concurrent_requests"}}`, map[string]string{"Retry-After": "1"}},
		{"internal, with its cause hidden", core.Wrap(core.Internal, errors.New("secret detail"), "secret detail"), 500,
			`{"error":{"message":"an unexpected error occurred","type":"server_error","param":null,"code":"internal_error"}}`, nil},
		{"model failed", core.Errorf(core.UpstreamFailed, "the model server failed"), 502,
			`{"error":{"message":"the model server failed","type":"server_error","param":null,"code":"upstream_failed"}}`, nil},
		{"overloaded", &core.Error{Code: core.Overloaded, Message: "busy", RetryAfter: time.Second}, 503,
			`{"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded"}}`, map[string]string{"Retry-After": "1"}},
		{"timeout", core.Errorf(core.UpstreamTimeout, "too slow"), 504,
			`{"error":{"message":"too slow","type":"server_error","param":null,"code":"upstream_timeout"}}`, nil},
		{"a code missing from the table", core.Errorf("no_such_code", "x"), 500,
			`{"error":{"message":"x","type":"server_error","param":null,"code":"internal_error"}}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if err := writeOpenAIError(rec, tt.err); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tt.status || !sameJSON(rec.Body.String(), tt.body) {
				t.Errorf("answer = %d %s\nwant     %d %s", rec.Code, rec.Body, tt.status, tt.body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			for name, want := range tt.headers {
				if got := rec.Header().Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// sameJSON reports whether a and b are the same JSON value, whatever the order of their members.
func sameJSON(a, b string) bool {
	var va, vb any
	return json.Unmarshal([]byte(a), &va) == nil && json.Unmarshal([]byte(b), &vb) == nil && reflect.DeepEqual(va, vb)
}

// openaiStreamOf relays chunks as a streamed chat completion and returns the answer.
func openaiStreamOf(t *testing.T, chunks func(context.Context) iter.Seq2[provider.Chunk, error], includeUsage bool) *httptest.ResponseRecorder {
	t.Helper()
	events := &openaiEvents{includeUsage: includeUsage, chunk: apiserver.OpenAIChatCompletionChunk{
		Id: "chatcmpl-1", Object: apiserver.OpenAIObjectChatCompletionChunk, Created: 1700000000, Model: "tiny",
	}}
	cs := chatStream{
		ctx: context.Background(), release: func() {}, events: events, chunks: chunks, heartbeat: time.Hour,
		firstWait: time.Hour, metrics: metrics.New(), start: time.Now(),
		failure: func(err error) *core.Error { e, _ := errors.AsType[*core.Error](err); return e },
	}
	rec := httptest.NewRecorder()
	if err := cs.relay(rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// yieldAll returns a model stream of the given chunks, then err if it is not nil.
func yieldAll(err error, chunks ...provider.Chunk) func(context.Context) iter.Seq2[provider.Chunk, error] {
	return func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) {
			for _, c := range chunks {
				if !yield(c, nil) {
					return
				}
			}
			if err != nil {
				yield(provider.Chunk{}, err)
			}
		}
	}
}

func TestOpenAIStreamEvents(t *testing.T) {
	const head = `"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000`
	final := provider.Chunk{Done: true, DoneReason: "stop", Usage: provider.Usage{PromptTokens: 5, CompletionTokens: 2}}
	tests := []struct {
		name         string
		chunks       func(context.Context) iter.Seq2[provider.Chunk, error]
		includeUsage bool
		status       int
		want         []string // the data of each event
	}{
		{"complete", yieldAll(nil, provider.Chunk{Content: "Hel"}, provider.Chunk{Content: "lo"}, final), false, 200, []string{
			`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
			`{"choices":[{"delta":{"content":"Hel"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
			`{"choices":[{"delta":{"content":"lo"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
			`{"choices":[{"delta":{},"finish_reason":"stop","index":0}],` + head + `,"model":"tiny"}`,
			`[DONE]`,
		}},
		{"with usage, content in the final chunk, a fallback answered, cut at the length",
			yieldAll(nil, provider.Chunk{Content: "Hi"}, provider.Chunk{Content: "!", Done: true, DoneReason: "length", Model: "other:7b", Usage: final.Usage}), true, 200, []string{
				`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"choices":[{"delta":{"content":"!"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"choices":[{"delta":{},"finish_reason":"length","index":0}],` + head + `,"model":"other:7b"}`,
				`{"choices":[],` + head + `,"model":"other:7b","usage":{"completion_tokens":2,"prompt_tokens":5,"total_tokens":7}}`,
				`[DONE]`,
			}},
		{"failure after the first chunk: an error and no [DONE]",
			yieldAll(provider.UpstreamFailed(errors.New("runner died")), provider.Chunk{Content: "Hel"}), true, 200, []string{
				`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"choices":[{"delta":{"content":"Hel"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"error":{"message":"` + provider.UpstreamFailed(nil).Message + `","type":"server_error","param":null,"code":"upstream_failed"}}`,
			}},
		{"a stream that ends without a final chunk is a failure",
			yieldAll(nil, provider.Chunk{Content: "Hel"}), false, 200, []string{
				`{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"choices":[{"delta":{"content":"Hel"},"finish_reason":null,"index":0}],` + head + `,"model":"tiny"}`,
				`{"error":{"message":"` + errStreamEnded.Message + `","type":"server_error","param":null,"code":"upstream_failed"}}`,
			}},
		{"failure before the first chunk: an error answer",
			yieldAll(core.Errorf(core.ModelNotFound, "model not found")), true, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := openaiStreamOf(t, tt.chunks, tt.includeUsage)
			if rec.Code != tt.status {
				t.Fatalf("status = %d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			if tt.status != http.StatusOK {
				var body apiserver.OpenAIErrorResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code == nil || *body.Error.Code != "model_not_found" {
					t.Errorf("answer %s is not an OpenAI model_not_found error", rec.Body)
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got []string
			for _, event := range strings.Split(strings.TrimSuffix(rec.Body.String(), "\n\n"), "\n\n") {
				data, ok := strings.CutPrefix(event, "data: ")
				if !ok || strings.Contains(data, "\n") {
					t.Fatalf("event %q is not one data line", event)
				}
				got = append(got, data)
			}
			same := len(got) == len(tt.want)
			for i := 0; same && i < len(got); i++ {
				same = got[i] == tt.want[i] || sameJSON(got[i], tt.want[i])
			}
			if !same {
				t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestFloat32Base64(t *testing.T) {
	vector := []float64{0.5, -1.25, 3}
	raw, err := base64.StdEncoding.DecodeString(float32Base64(vector))
	if err != nil || len(raw) != 12 {
		t.Fatalf("decoded %d bytes, err %v", len(raw), err)
	}
	for i, want := range vector {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); float64(got) != want {
			t.Errorf("value %d = %v, want %v", i, got, want)
		}
	}
}

func TestOpenAIEmbedInput(t *testing.T) {
	tests := []struct {
		body, field string
		want        []string
	}{
		{`{"model":"m","input":"one"}`, "", []string{"one"}},
		{`{"model":"m","input":["a","b"],"encoding_format":"base64","user":null}`, "", []string{"a", "b"}},
		{`{"input":"one"}`, "model", nil},
		{`{"model":"m"}`, "input", nil},
		{`{"model":"m","input":null}`, "input", nil},
		{`{"model":"m","input":[]}`, "input", nil},
		{`{"model":"m","input":[1,2,3]}`, "input", nil},
		{`{"model":"m","input":"one","dimensions":256}`, "dimensions", nil},
		{`{"model":"m","input":"one","encoding_format":"int8"}`, "encoding_format", nil},
	}
	for _, tt := range tests {
		var body apiserver.OpenAIEmbeddingRequest
		if err := json.Unmarshal([]byte(tt.body), &body); err != nil {
			t.Fatal(err)
		}
		got, err := openaiEmbedInput(&body)
		e, _ := errors.AsType[*core.Error](err)
		switch {
		case tt.field == "" && (err != nil || !reflect.DeepEqual(got, tt.want)):
			t.Errorf("%s: %q, %v; want %q", tt.body, got, err, tt.want)
		case tt.field != "" && (e == nil || e.Field != tt.field):
			t.Errorf("%s: error %v, want one naming %s", tt.body, err, tt.field)
		}
	}
}

func TestOpenAIModel(t *testing.T) {
	modified := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	for name, owner := range map[string]string{"llama3.2:latest": "library", "ollama/llama3.2:latest": "ollama", "hf.co/org/m:q4": "hf.co"} {
		got := openaiModel(provider.Model{Name: name, ModifiedAt: modified})
		want := apiserver.OpenAIModel{Id: name, Object: apiserver.OpenAIObjectModel, Created: modified.Unix(), OwnedBy: owner}
		if got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
}
