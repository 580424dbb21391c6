package ollama_test

import (
	"context"
	"errors"
	"io"
	"iter"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/providertest"
	"github.com/deepersensor/deepersensor/provider/ollama"
)

// recordedTokens are the fake's default tokens, those of the recording chat_stream.
var recordedTokens = []string{",", " there", " was", " a", " little", " g", "ir", "l", " named", " Lily", ".", " She"}

var story = provider.ChatRequest{
	Model: "tiny",
	Messages: []provider.Message{
		{Role: provider.RoleSystem, Content: "You tell short stories."},
		{Role: provider.RoleUser, Content: "Once upon a time"},
	},
	Options: map[string]any{"seed": 42, "temperature": 0},
}

func newClient(fake *ollamatest.Server, cfg ollama.Config) *ollama.Client {
	cfg.BaseURL = fake.URL
	return ollama.New(cfg)
}

func TestChatStream(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	c := newClient(fake, ollama.Config{})

	contents, final, err := providertest.Collect(t, c.ChatStream(t.Context(), story))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(contents, recordedTokens) {
		t.Errorf("contents = %q, want %q", contents, recordedTokens)
	}
	if final.DoneReason != "stop" || final.Content != "" || final.Model != "tiny" {
		t.Errorf("final = %+v, want done_reason stop, no content and the model", final)
	}
	if u := final.Usage; u.PromptTokens != 8 || u.CompletionTokens != 12 || u.TotalDuration <= 0 || u.LoadDuration <= 0 || u.EvalDuration <= 0 {
		t.Errorf("usage = %+v, want 8 prompt tokens (the fake counts words), 12 completion tokens and durations", u)
	}

	sent := fake.ChatRequests()
	if len(sent) != 1 {
		t.Fatalf("%d requests sent, want 1", len(sent))
	}
	wantMsgs := []ollamatest.Message{{Role: "system", Content: "You tell short stories."}, {Role: "user", Content: "Once upon a time"}}
	if r := sent[0]; r.Model != "tiny" || r.Stream == nil || !*r.Stream || !slices.Equal(r.Messages, wantMsgs) ||
		r.Options["seed"] != float64(42) || r.Options["temperature"] != float64(0) {
		t.Errorf("sent %+v", r)
	}
}

func TestEmbed(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	resp, err := newClient(fake, ollama.Config{}).Embed(t.Context(), provider.EmbedRequest{Model: "tiny", Input: []string{"a b", "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Model != "tiny" || len(resp.Embeddings) != 2 || resp.PromptTokens != 3 ||
		!slices.Equal(resp.Embeddings[0], ollamatest.Embedding("tiny:latest", "a b")) {
		t.Errorf("embeddings = %+v", resp)
	}
	if r := fake.Requests(); len(r) != 1 || r[0].Path != "/api/embed" || string(r[0].Body) != `{"model":"tiny","input":["a b","c"]}` {
		t.Errorf("sent %+v", r)
	}
}

func TestChat(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{DoneReason: "length"})
	c := newClient(fake, ollama.Config{})

	resp, err := c.Chat(t.Context(), story)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(recordedTokens, ""); resp.Content != want || resp.DoneReason != "length" || resp.Model != "tiny" {
		t.Errorf("got %q (%s), want %q (length)", resp.Content, resp.DoneReason, want)
	}
	if resp.Usage.PromptTokens != 8 || resp.Usage.CompletionTokens != 12 {
		t.Errorf("usage = %+v", resp.Usage)
	}
	if sent := fake.ChatRequests(); len(sent) != 1 || sent[0].Stream == nil || *sent[0].Stream {
		t.Errorf("sent %+v, want one request with stream false", sent)
	}
}

func TestErrors(t *testing.T) {
	busy := "server busy, please try again.  maximum pending requests exceeded"
	badOption := `option "num_predict" must be of type integer`
	tests := []struct {
		name string
		opts ollamatest.Options
		// upstream, when set, answers in place of the fake.
		upstream  http.HandlerFunc
		model     string
		only      []string // the calls concerned; nil means all
		wantCode  core.Code
		wantMsg   string
		wantCause string // a part of the cause's text
	}{
		{name: "unknown model", model: "nope:7b", only: []string{"ChatStream", "Chat", "ShowModel"},
			wantCode: core.ModelNotFound, wantMsg: providertest.NotFoundMsg,
			wantCause: `"nope:7b": 404 Not Found: model 'nope:7b' not found`},
		{name: "500", opts: ollamatest.Options{Status: 500, StatusMessage: "llama runner process has terminated"},
			wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg,
			wantCause: "500 Internal Server Error: llama runner process has terminated"},
		{name: "503 busy", opts: ollamatest.Options{Status: 503, StatusMessage: busy},
			wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: busy},
		{name: "400", opts: ollamatest.Options{Status: 400, StatusMessage: `"tiny" does not support thinking`},
			wantCode: core.ModelRefused, wantMsg: providertest.RefusedMsg + `"tiny" does not support thinking`, wantCause: "400 Bad Request"},
		{name: "500 bad option", opts: ollamatest.Options{Status: 500, StatusMessage: badOption},
			wantCode: core.ModelRefused, wantMsg: providertest.RefusedMsg + badOption, wantCause: "500 Internal Server Error"},
		{name: "non-stream fault", opts: ollamatest.Options{Fault: &ollamatest.Fault{After: 2, Error: "runner died"}},
			only: []string{"Chat"}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: "runner died"},
		{name: "answer too long", opts: ollamatest.Options{Break: &ollamatest.Break{How: ollamatest.HugeLine}},
			only: []string{"Chat"}, wantCode: core.UpstreamFailed, wantMsg: providertest.FailedMsg, wantCause: "answer longer than 8388608 bytes"},
		{name: "not Ollama", upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<h1>502 Bad Gateway</h1>")
		}, wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg,
			wantCause: `unexpected answer 502 Bad Gateway, body "<h1>502 Bad Gateway</h1>"`},
		{name: "unreadable answer", upstream: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "Ollama is running")
		}, only: []string{"Chat", "Embed", "ListModels", "ShowModel"},
			wantCode: core.UpstreamUnavailable, wantMsg: providertest.UnavailableMsg, wantCause: "unreadable answer"},
	}
	for _, tt := range tests {
		for name, call := range providertest.Calls {
			if tt.only != nil && !slices.Contains(tt.only, name) {
				continue
			}
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				url := upstreamURL(t, tt.opts, tt.upstream)
				model := tt.model
				if model == "" {
					model = "tiny"
				}
				err := call(t.Context(), ollama.New(ollama.Config{BaseURL: url}), model)
				providertest.CheckError(t, err, tt.wantCode, tt.wantMsg, tt.wantCause)
			})
		}
	}
}

// upstreamURL starts the server a test case talks to: upstream when it is set, or else the fake with opts.
func upstreamURL(tb testing.TB, opts ollamatest.Options, upstream http.HandlerFunc) string {
	tb.Helper()
	if upstream == nil {
		return ollamatest.New(tb, opts).URL
	}
	srv := httptest.NewServer(upstream)
	tb.Cleanup(srv.Close)
	return srv.URL
}

func TestConnectionRefused(t *testing.T) {
	providertest.CheckRefused(t, ollama.New(ollama.Config{BaseURL: providertest.ClosedURL(t)}), "tiny")
}

func TestStreamFailsMidway(t *testing.T) {
	const died = "an error was encountered while running the model: unexpected EOF"
	tests := []struct {
		name         string
		opts         ollamatest.Options
		upstream     http.HandlerFunc // when set, answers in place of the fake
		wantContents []string
		wantCause    string
	}{
		{name: "error in the stream", opts: ollamatest.Options{Fault: &ollamatest.Fault{After: 3, Error: died}},
			wantContents: recordedTokens[:3], wantCause: `ollama chat "tiny": error in the stream: ` + died},
		{name: "no final chunk", upstream: func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			_, _ = io.WriteString(w, `{"model":"tiny","message":{"role":"assistant","content":"a"},"done":false}`+"\n")
		}, wantContents: []string{"a"}, wantCause: `ollama chat "tiny": stream ended before its final chunk`},
		{name: "malformed chunk", upstream: func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"message":{"content":"a"},"done":false}`+"\n"+`{"message":`+"\n")
		}, wantContents: []string{"a"}, wantCause: `ollama chat "tiny": malformed chunk: unexpected end of JSON input`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := upstreamURL(t, tt.opts, tt.upstream)
			contents, _, err := providertest.Collect(t, ollama.New(ollama.Config{BaseURL: url}).ChatStream(t.Context(), story))
			providertest.CheckError(t, err, core.UpstreamFailed, providertest.FailedMsg, tt.wantCause)
			if !slices.Equal(contents, tt.wantContents) {
				t.Errorf("contents before the error = %q, want %q", contents, tt.wantContents)
			}
		})
	}
}

// TestStreamReusesConnection checks that a finished stream's connection goes back to the pool even when
// the end of the chunked body comes after the final line.
func TestStreamReusesConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, line := range []string{`{"message":{"content":"a"},"done":false}`, `{"message":{"content":""},"done":true}`} {
			_, _ = io.WriteString(w, line+"\n")
			_ = http.NewResponseController(w).Flush()
		}
		time.Sleep(20 * time.Millisecond)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := ollama.New(ollama.Config{BaseURL: srv.URL})
	for range 3 {
		if _, _, err := providertest.Collect(t, c.ChatStream(t.Context(), story)); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 streams used %d connections, want 1", n)
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("first chunk", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{InitialDelay: 10 * time.Second})
		c := newClient(fake, ollama.Config{FirstChunkTimeout: 100 * time.Millisecond})
		start := time.Now()
		_, _, err := providertest.Collect(t, c.ChatStream(t.Context(), story))
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no answer within 100ms")
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("timed out after %v", d)
		}
		providertest.WantCancelled(t, fake)
	})
	t.Run("stall between chunks", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{Fault: &ollamatest.Fault{After: 2}})
		c := newClient(fake, ollama.Config{ChunkTimeout: 150 * time.Millisecond})
		contents, _, err := providertest.Collect(t, c.ChatStream(t.Context(), story))
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no chunk for 150ms")
		if len(contents) != 2 {
			t.Errorf("got %d chunks before the stall, want 2", len(contents))
		}
		providertest.WantCancelled(t, fake)
	})
	t.Run("slow model load is not a chunk timeout", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{InitialDelay: 400 * time.Millisecond})
		c := newClient(fake, ollama.Config{ChunkTimeout: 100 * time.Millisecond})
		if _, _, err := providertest.Collect(t, c.ChatStream(t.Context(), story)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("slow consumer is not a chunk timeout", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{Tokens: []string{"a", "b", "c"}})
		c := newClient(fake, ollama.Config{ChunkTimeout: 100 * time.Millisecond})
		for _, err := range c.ChatStream(t.Context(), story) {
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	})
	t.Run("non-stream request", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{InitialDelay: 10 * time.Second})
		c := newClient(fake, ollama.Config{RequestTimeout: 100 * time.Millisecond})
		_, err := c.Chat(t.Context(), story)
		providertest.CheckError(t, err, core.UpstreamTimeout, providertest.TimeoutMsg, "no answer within 100ms")
		providertest.WantCancelled(t, fake)
	})
	t.Run("caller's deadline is not UpstreamTimeout", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{InitialDelay: 10 * time.Second})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, _, err := providertest.Collect(t, newClient(fake, ollama.Config{}).ChatStream(ctx, story))
		if !errors.Is(err, context.DeadlineExceeded) || core.ErrorCode(err) != core.Internal {
			t.Errorf("error %v, want context.DeadlineExceeded and no *core.Error", err)
		}
		providertest.WantCancelled(t, fake)
	})
}

func TestCancellation(t *testing.T) {
	slow := ollamatest.Options{Tokens: slices.Repeat([]string{"x"}, 1000), ChunkDelay: 5 * time.Second}

	t.Run("consumer breaks", func(t *testing.T) {
		fake := ollamatest.New(t, slow)
		for _, err := range newClient(fake, ollama.Config{}).ChatStream(t.Context(), story) {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		providertest.WantCancelled(t, fake)
	})
	t.Run("context cancelled mid-stream", func(t *testing.T) {
		fake := ollamatest.New(t, slow)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var err error
		var cancelledAt time.Time
		for _, err = range newClient(fake, ollama.Config{}).ChatStream(ctx, story) {
			if err != nil {
				break
			}
			cancelledAt = time.Now()
			time.AfterFunc(50*time.Millisecond, cancel)
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if d := time.Since(cancelledAt); d > time.Second {
			t.Errorf("the stream stopped %v after the first chunk", d)
		}
		providertest.WantCancelled(t, fake)
	})
	t.Run("context cancelled while the model loads", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{InitialDelay: 10 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		_, err := newClient(fake, ollama.Config{}).Chat(ctx, story)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		providertest.WantCancelled(t, fake)
	})
}

// TestStreamsIncrementally checks that chunks reach the consumer as the server sends them.
func TestStreamsIncrementally(t *testing.T) {
	const delay = 100 * time.Millisecond
	fake := ollamatest.New(t, ollamatest.Options{Tokens: []string{"a", "b", "c", "d", "e"}, ChunkDelay: delay})
	start := time.Now()
	var at []time.Duration
	for _, err := range newClient(fake, ollama.Config{}).ChatStream(t.Context(), story) {
		if err != nil {
			t.Fatal(err)
		}
		at = append(at, time.Since(start))
	}
	if len(at) != 6 {
		t.Fatalf("%d chunks, want 6", len(at))
	}
	// The fake needs 5 delays to finish; the first chunk must come long before.
	if at[0] > 2*delay || at[5]-at[0] < 4*delay {
		t.Errorf("chunks arrived at %v; want the first at once and one every %v", at, delay)
	}
}

func TestListModels(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	models, err := newClient(fake, ollama.Config{}).ListModels(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []provider.Model{{
		Name:              "tiny:latest",
		Size:              1185764,
		ModifiedAt:        time.Date(2026, 11, 25, 21, 25, 3, 746828622, time.UTC),
		Family:            "llama",
		ParameterSize:     "293K",
		QuantizationLevel: "unknown",
	}}
	if len(models) != 1 || models[0].Name != want[0].Name || models[0].Size != want[0].Size ||
		!models[0].ModifiedAt.Equal(want[0].ModifiedAt) || models[0].Family != want[0].Family ||
		models[0].ParameterSize != want[0].ParameterSize || models[0].QuantizationLevel != want[0].QuantizationLevel {
		t.Errorf("models = %+v\nwant %+v", models, want)
	}
}

func TestShowModel(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	d, err := newClient(fake, ollama.Config{}).ShowModel(t.Context(), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	// The full name and the size come from the list, which /api/show does not repeat.
	if d.Name != "tiny:latest" || d.Size != ollamatest.Tiny().Size || d.Family != "llama" || d.ParameterSize != "293K" || d.Format != "gguf" ||
		!slices.Equal(d.Families, []string{"llama"}) || d.ContextLength != 2048 ||
		!slices.Equal(d.Capabilities, []string{"completion"}) || !strings.HasPrefix(d.Parameters, "num_ctx") ||
		d.ModifiedAt.IsZero() {
		t.Errorf("details = %+v", d)
	}
}

func TestModelsCache(t *testing.T) {
	tagsCalls := func(fake *ollamatest.Server) int {
		n := 0
		for _, r := range fake.Requests() {
			if r.Path == "/api/tags" {
				n++
			}
		}
		return n
	}

	t.Run("fresh within the TTL", func(t *testing.T) {
		const ttl = 500 * time.Millisecond
		fake := ollamatest.New(t, ollamatest.Options{})
		c := newClient(fake, ollama.Config{ModelsCacheTTL: ttl})
		first, err := c.ListModels(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		first[0].Name = "changed by the caller"

		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				models, err := c.ListModels(t.Context())
				if err != nil || models[0].Name != "tiny:latest" {
					t.Errorf("cached ListModels = %+v, %v", models, err)
				}
			})
		}
		wg.Wait()
		if n := tagsCalls(fake); n != 1 {
			t.Errorf("%d calls to /api/tags within the TTL, want 1", n)
		}

		time.Sleep(ttl + 100*time.Millisecond)
		if _, err := c.ListModels(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := tagsCalls(fake); n != 2 {
			t.Errorf("%d calls to /api/tags after the TTL, want 2", n)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{})
		c := newClient(fake, ollama.Config{})
		for range 3 {
			if _, err := c.ListModels(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if n := tagsCalls(fake); n != 3 {
			t.Errorf("%d calls to /api/tags without a cache, want 3", n)
		}
	})
	t.Run("errors are not cached", func(t *testing.T) {
		fake := ollamatest.New(t, ollamatest.Options{Status: 503})
		c := newClient(fake, ollama.Config{ModelsCacheTTL: time.Minute})
		for range 2 {
			if _, err := c.ListModels(t.Context()); core.ErrorCode(err) != core.UpstreamUnavailable {
				t.Fatalf("error %v, want %s", err, core.UpstreamUnavailable)
			}
		}
		if n := tagsCalls(fake); n != 2 {
			t.Errorf("%d calls to /api/tags, want 2", n)
		}
	})
}

// TestConcurrencyCap fills the client's one slot with a stream: a chat waits QueueWait for it, then fails with
// core.Overloaded and Retry-After, streamed or not, while model lists still work; a slot freed within the wait
// goes to the waiter.
func TestConcurrencyCap(t *testing.T) {
	const wait = 100 * time.Millisecond
	fake := ollamatest.New(t, ollamatest.Options{Tokens: slices.Repeat([]string{"x"}, 1000), ChunkDelay: 5 * time.Second})
	c := newClient(fake, ollama.Config{MaxConcurrency: 1, QueueWait: wait})
	next, stop := iter.Pull2(c.ChatStream(t.Context(), story))
	if _, err, _ := next(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_, err := c.Chat(t.Context(), story)
	providertest.CheckError(t, err, core.Overloaded, providertest.BusyMsg, "all 1 slots stayed taken for 100ms")
	if e, _ := errors.AsType[*core.Error](err); e.RetryAfter < time.Second {
		t.Errorf("RetryAfter = %v, want at least a second", e.RetryAfter)
	}
	if d := time.Since(start); d < wait {
		t.Errorf("refused after %v, want after the %v wait", d, wait)
	}
	_, _, err = providertest.Collect(t, c.ChatStream(t.Context(), story))
	providertest.CheckError(t, err, core.Overloaded, providertest.BusyMsg, "stayed taken")
	if _, err := c.ListModels(t.Context()); err != nil {
		t.Errorf("ListModels while the slots are taken: %v", err)
	}
	if n := len(fake.ChatRequests()); n != 1 {
		t.Errorf("the server received %d chats, want only the first", n)
	}

	time.AfterFunc(wait/2, stop) // the stream ends while the next one waits
	next, stop = iter.Pull2(c.ChatStream(t.Context(), story))
	defer stop()
	if _, err, _ := next(); err != nil {
		t.Errorf("stream after the first ended: %v", err)
	}
}
