package openai_test

import (
	"cmp"
	"errors"
	"io"
	"iter"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/openaitest"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/providertest"
	"github.com/deepersensor/deepersensor/provider/openai"
)

const key = "sk-test-0123456789"

var greeting = provider.ChatRequest{
	Model: "gpt-tiny",
	Messages: []provider.Message{
		{Role: provider.RoleSystem, Content: "You are terse."},
		{Role: provider.RoleUser, Content: "Say hello"},
	},
	Options: map[string]any{"temperature": float64(0), "top_p": 0.9, "seed": float64(42), "stop": []any{"\n"},
		"num_predict": float64(64), "num_ctx": float64(4096), "top_k": float64(40)},
}

// newClient returns a client of a fake started with opts, which requires the client's key.
func newClient(t *testing.T, opts openaitest.Options, cfg openai.Config) (*openai.Client, *openaitest.Server) {
	t.Helper()
	opts.APIKey = key
	fake := openaitest.New(t, opts)
	cfg.BaseURL, cfg.APIKey = fake.BaseURL(), key
	return openai.New(cfg), fake
}

func TestChatStream(t *testing.T) {
	c, fake := newClient(t, openaitest.Options{}, openai.Config{})
	contents, final, err := providertest.Collect(t, c.ChatStream(t.Context(), greeting))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(contents, openaitest.DefaultTokens) {
		t.Errorf("contents = %q, want %q (no chunk for the empty role delta)", contents, openaitest.DefaultTokens)
	}
	if final.Model != "gpt-tiny" || final.DoneReason != "stop" || final.Usage.PromptTokens != 5 || final.Usage.CompletionTokens != 4 {
		t.Errorf("final = %+v, want model, stop and the usage chunk's counts", final)
	}
	sent := fake.ChatRequests()
	if len(sent) != 1 {
		t.Fatalf("%d requests, want 1", len(sent))
	}
	r := sent[0]
	wantMsgs := []openaitest.Message{{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Say hello"}}
	if r.Model != "gpt-tiny" || !r.Stream || r.StreamOptions == nil || !r.StreamOptions.IncludeUsage || !slices.Equal(r.Messages, wantMsgs) {
		t.Errorf("sent %+v", r)
	}
	if *r.Temperature != 0 || *r.TopP != 0.9 || *r.Seed != 42 || *r.MaxTokens != 64 || len(r.Stop.([]any)) != 1 {
		t.Errorf("options sent %+v, want temperature, top_p, seed, stop and num_predict as max_tokens", r)
	}
	body := string(fake.Requests()[0].Body)
	if strings.Contains(body, "num_ctx") || strings.Contains(body, "top_k") || strings.Contains(body, "num_predict") {
		t.Errorf("body %s carries options the API does not have", body)
	}
}

func TestChat(t *testing.T) {
	c, fake := newClient(t, openaitest.Options{FinishReason: "length"}, openai.Config{})
	resp, err := c.Chat(t.Context(), provider.ChatRequest{Model: "gpt-tiny", Messages: greeting.Messages})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Content != "Hello, world!" || resp.DoneReason != "length" || resp.Model != "gpt-tiny" ||
		resp.Usage.PromptTokens != 5 || resp.Usage.CompletionTokens != 4 {
		t.Errorf("answer = %+v", resp)
	}
	body := string(fake.Requests()[0].Body)
	if strings.Contains(body, "stream") || strings.Contains(body, "temperature") {
		t.Errorf("body %s: want neither stream fields nor unset options", body)
	}
	if got := fake.Requests()[0].Header.Get("Authorization"); got != "Bearer "+key {
		t.Errorf("Authorization = %q", got)
	}
}

func TestModels(t *testing.T) {
	c, fake := newClient(t, openaitest.Options{Models: []string{"gpt-tiny", "meta-llama/Llama-3.2-3B"}}, openai.Config{ModelsCacheTTL: time.Minute})
	models, err := c.ListModels(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 2 || models[1].Name != "meta-llama/Llama-3.2-3B" || models[0].ModifiedAt.Year() != 2026 {
		t.Errorf("models = %+v", models)
	}
	d, err := c.ShowModel(t.Context(), "meta-llama/Llama-3.2-3B")
	if err != nil || d.Name != "meta-llama/Llama-3.2-3B" {
		t.Errorf("show = %+v, %v", d, err)
	}
	_, err = c.ShowModel(t.Context(), "nope")
	providertest.CheckError(t, err, core.ModelNotFound, providertest.NotFoundMsg, "not in the model list")
	if n := len(fake.Requests()); n != 1 {
		t.Errorf("%d requests to the server, want 1: the list is cached", n)
	}
}

func TestEmbed(t *testing.T) {
	c, _ := newClient(t, openaitest.Options{}, openai.Config{})
	resp, err := c.Embed(t.Context(), provider.EmbedRequest{Model: "gpt-tiny", Input: []string{"a", "b c"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Model != "gpt-tiny" || len(resp.Embeddings) != 2 || resp.PromptTokens != 3 ||
		!slices.Equal(resp.Embeddings[1], ollamatest.Embedding("gpt-tiny", "b c")) {
		t.Errorf("embeddings = %+v", resp)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name      string
		opts      openaitest.Options
		upstream  http.HandlerFunc // when set, answers in place of the fake
		key       string           // the client's key; empty means the fake's
		model     string
		only      []string // the calls concerned; nil means all
		wantCode  core.Code
		wantMsg   string
		wantCause string
	}{
		{name: "unknown model", model: "nope", only: []string{"ChatStream", "Chat", "Embed"},
			wantCode: core.ModelNotFound, wantMsg: providertest.NotFoundMsg, wantCause: "404 Not Found: The model `nope` does not exist"},
		{name: "wrong key", key: "sk-wrong-key", wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg,
			wantCause: "401 Unauthorized: the server refused the gateway's API key"},
		{name: "400", opts: openaitest.Options{Status: 400, StatusMessage: "max_tokens is too large"},
			wantCode: core.ModelRefused, wantMsg: providertest.RefusedMsg + "max_tokens is too large", wantCause: "400 Bad Request"},
		{name: "429", opts: openaitest.Options{Status: 429, StatusMessage: "Rate limit reached"},
			wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: "429 Too Many Requests: Rate limit reached"},
		{name: "500", opts: openaitest.Options{Status: 500}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg,
			wantCause: "500 Internal Server Error: Internal Server Error"},
		{name: "503", opts: openaitest.Options{Status: 503, StatusMessage: "overloaded"}, wantCode: core.UpstreamUnavailable,
			wantMsg: providertest.UnavailableMsg, wantCause: "503 Service Unavailable: overloaded"},
		{name: "not the server", upstream: func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "404 page not found", http.StatusNotFound)
		}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: `unexpected answer 404 Not Found, body "404 page not found\n"`},
		{name: "vLLM's bare error", upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"object":"error","message":"context too long","type":"BadRequestError","param":null,"code":400}`)
		}, wantCode: core.ModelRefused, wantMsg: providertest.RefusedMsg + "context too long", wantCause: "400 Bad Request"},
		{name: "non-stream fault", opts: openaitest.Options{Fault: &openaitest.Fault{After: 1, Error: "engine died"}},
			only: []string{"Chat"}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: "engine died"},
		{name: "unreadable answer", upstream: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "It works!")
		}, only: []string{"Chat", "Embed", "ListModels", "ShowModel"}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg,
			wantCause: "unreadable answer"},
	}
	for _, tt := range tests {
		for name, call := range providertest.Calls {
			if tt.only != nil && !slices.Contains(tt.only, name) {
				continue
			}
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				opts := tt.opts
				opts.APIKey = key
				url := openaitest.New(t, opts).BaseURL()
				if tt.upstream != nil {
					srv := httptest.NewServer(tt.upstream)
					t.Cleanup(srv.Close)
					url = srv.URL
				}
				c := openai.New(openai.Config{BaseURL: url, APIKey: cmp.Or(tt.key, key)})
				err := call(t.Context(), c, cmp.Or(tt.model, "gpt-tiny"))
				providertest.CheckError(t, err, tt.wantCode, tt.wantMsg, tt.wantCause)
				if strings.Contains(err.Error(), "sk-") {
					t.Errorf("error %q mentions a key", err)
				}
			})
		}
	}
}

func TestRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	}))
	t.Cleanup(srv.Close)
	_, err := openai.New(openai.Config{BaseURL: srv.URL}).Chat(t.Context(), greeting)
	if e, ok := errors.AsType[*core.Error](err); !ok || e.Code != core.UpstreamUnavailable || e.RetryAfter != 20*time.Second {
		t.Errorf("error = %#v, want UpstreamUnavailable retrying after the server's 20s", err)
	}
}

func TestConnectionRefused(t *testing.T) {
	providertest.CheckRefused(t, openai.New(openai.Config{BaseURL: providertest.ClosedURL(t) + "/v1", APIKey: key}), "gpt-tiny")
}

func TestStreamFailsMidway(t *testing.T) {
	tests := []struct {
		name         string
		opts         openaitest.Options
		upstream     http.HandlerFunc // when set, answers in place of the fake
		wantContents []string
		wantCause    string
	}{
		{name: "error in the stream", opts: openaitest.Options{Fault: &openaitest.Fault{After: 2, Error: "engine died"}},
			wantContents: openaitest.DefaultTokens[:2], wantCause: `openai chat "gpt-tiny": error in the stream: engine died`},
		{name: "no [DONE] nor finish", upstream: sseHandler(`{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}`),
			wantContents: []string{"a"}, wantCause: `openai chat "gpt-tiny": stream ended before data: [DONE]`},
		{name: "malformed chunk", upstream: sseHandler(`{"choices":[{"index":0,"delta":{"content":"a"}}]}`, `{"choices":`),
			wantContents: []string{"a"}, wantCause: `openai chat "gpt-tiny": malformed chunk`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := ""
			if tt.upstream != nil {
				srv := httptest.NewServer(tt.upstream)
				t.Cleanup(srv.Close)
				url = srv.URL
			} else {
				url = openaitest.New(t, tt.opts).BaseURL()
			}
			contents, _, err := providertest.Collect(t, openai.New(openai.Config{BaseURL: url}).ChatStream(t.Context(), greeting))
			providertest.CheckError(t, err, core.UpstreamFailed, providertest.FailedMsg, tt.wantCause)
			if !slices.Equal(contents, tt.wantContents) {
				t.Errorf("contents before the error = %q, want %q", contents, tt.wantContents)
			}
		})
	}
}

// sseHandler answers with one "data:" event per payload and nothing more.
func sseHandler(payloads ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, p := range payloads {
			_, _ = io.WriteString(w, "data: "+p+"\n\n")
		}
	}
}

// TestStreamWithoutDone accepts a stream that ends after its finish_reason without the usage chunk or
// "data: [DONE]", as some servers send it: the answer is complete.
func TestStreamWithoutDone(t *testing.T) {
	srv := httptest.NewServer(sseHandler(
		`{"model":"served-name","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}`,
		`{"model":"served-name","choices":[{"index":0,"delta":{},"finish_reason":"length"}]}`))
	t.Cleanup(srv.Close)
	contents, final, err := providertest.Collect(t, openai.New(openai.Config{BaseURL: srv.URL}).ChatStream(t.Context(), greeting))
	if err != nil || !slices.Equal(contents, []string{"a"}) || final.DoneReason != "length" || final.Model != "served-name" || final.Usage.PromptTokens != 0 {
		t.Errorf("stream = %q, %+v, %v", contents, final, err)
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("first chunk", func(t *testing.T) {
		c, fake := newClient(t, openaitest.Options{InitialDelay: 10 * time.Second}, openai.Config{FirstChunkTimeout: 100 * time.Millisecond})
		_, _, err := providertest.Collect(t, c.ChatStream(t.Context(), greeting))
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no answer within 100ms")
		providertest.WantCancelled(t, fake)
	})
	t.Run("stall between chunks", func(t *testing.T) {
		c, fake := newClient(t, openaitest.Options{Fault: &openaitest.Fault{After: 2}}, openai.Config{ChunkTimeout: 150 * time.Millisecond})
		contents, _, err := providertest.Collect(t, c.ChatStream(t.Context(), greeting))
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no chunk for 150ms")
		if len(contents) != 2 {
			t.Errorf("got %d chunks before the stall, want 2", len(contents))
		}
		providertest.WantCancelled(t, fake)
	})
	t.Run("whole stream", func(t *testing.T) {
		c, fake := newClient(t, openaitest.Options{ChunkDelay: 80 * time.Millisecond, Tokens: slices.Repeat([]string{"x"}, 50)},
			openai.Config{ChunkTimeout: time.Second, RequestTimeout: 300 * time.Millisecond})
		_, _, err := providertest.Collect(t, c.ChatStream(t.Context(), greeting))
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "answer not done within 300ms")
		providertest.WantCancelled(t, fake)
	})
	t.Run("non-stream request", func(t *testing.T) {
		c, fake := newClient(t, openaitest.Options{InitialDelay: 10 * time.Second}, openai.Config{RequestTimeout: 100 * time.Millisecond})
		_, err := c.Chat(t.Context(), greeting)
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no answer within 100ms")
		providertest.WantCancelled(t, fake)
	})
	t.Run("consumer breaks", func(t *testing.T) {
		c, fake := newClient(t, openaitest.Options{ChunkDelay: time.Second}, openai.Config{})
		for range c.ChatStream(t.Context(), greeting) {
			break
		}
		providertest.WantCancelled(t, fake)
	})
}

// TestConcurrencyCap fills the client's one slot with a stream: a chat then fails with core.Overloaded once
// QueueWait ran out, while model lists still work.
func TestConcurrencyCap(t *testing.T) {
	c, fake := newClient(t, openaitest.Options{Tokens: slices.Repeat([]string{"x"}, 100), ChunkDelay: 5 * time.Second},
		openai.Config{MaxConcurrency: 1, QueueWait: 50 * time.Millisecond})
	next, stop := iter.Pull2(c.ChatStream(t.Context(), greeting))
	defer stop()
	if _, err, _ := next(); err != nil {
		t.Fatal(err)
	}
	_, err := c.Chat(t.Context(), greeting)
	providertest.CheckError(t, err, core.Overloaded, providertest.BusyMsg, "all 1 slots")
	_, err = c.Embed(t.Context(), provider.EmbedRequest{Model: "gpt-tiny", Input: []string{"x"}})
	providertest.CheckError(t, err, core.Overloaded, providertest.BusyMsg, "all 1 slots")
	if _, err := c.ListModels(t.Context()); err != nil {
		t.Errorf("ListModels while the slot is taken: %v", err)
	}
	if n := len(fake.ChatRequests()); n != 1 {
		t.Errorf("the server received %d chats, want only the first", n)
	}
}
