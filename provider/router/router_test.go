package router_test

import (
	"cmp"
	"context"
	"errors"
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
	"github.com/deepersensor/deepersensor/provider/ollama"
	"github.com/deepersensor/deepersensor/provider/openai"
	"github.com/deepersensor/deepersensor/provider/router"
)

var hello = []provider.Message{{Role: provider.RoleUser, Content: "Once upon a time"}}

// setup is a router in front of two fakes: "local", an Ollama with tiny and the namespaced user/model, and
// "gpu", an OpenAI-compatible server with gpt-tiny.
type setup struct {
	local *ollamatest.Server
	gpu   *openaitest.Server
	r     *router.Router
}

// newSetup starts the fakes with the options given and builds the router with fallbacks; cfg applies to
// both clients.
func newSetup(t *testing.T, local ollamatest.Options, gpu openaitest.Options, fallbacks map[string]string, cfg ollama.Config) setup {
	t.Helper()
	if local.Models == nil {
		namespaced := ollamatest.Tiny()
		namespaced.Name = "user/model:latest"
		local.Models = []ollamatest.Model{ollamatest.Tiny(), namespaced}
	}
	s := setup{local: ollamatest.New(t, local), gpu: openaitest.New(t, gpu)}
	lc, gc := cfg, cfg
	lc.BaseURL, gc.BaseURL = s.local.URL, s.gpu.BaseURL()
	r, err := router.New(router.Config{
		Upstreams: []router.Upstream{{Name: "local", Provider: ollama.New(lc)}, {Name: "gpu", Provider: openai.New(gc)}},
		Fallbacks: fallbacks,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.r = r
	return s
}

// stream runs a stream to its end and returns its contents and final chunk, or the error that ended it.
func stream(seq iter.Seq2[provider.Chunk, error]) (contents []string, final provider.Chunk, err error) {
	for c, err := range seq {
		if err != nil {
			return contents, final, err
		}
		if c.Done {
			final = c
		} else {
			contents = append(contents, c.Content)
		}
	}
	return contents, final, nil
}

func TestRouting(t *testing.T) {
	s := newSetup(t, ollamatest.Options{}, openaitest.Options{}, nil, ollama.Config{})
	tests := []struct {
		name      string
		wantLocal string // the model the Ollama fake is asked for; empty when the OpenAI fake is
		wantGPU   string
		answered  string
	}{
		{"local/tiny", "tiny", "", "local/tiny"},
		{"tiny", "tiny", "", "local/tiny"},
		{"gpu/gpt-tiny", "", "gpt-tiny", "gpu/gpt-tiny"},
		// "user" is no upstream: the whole name is an Ollama namespace, for the first upstream.
		{"user/model", "user/model", "", "local/user/model"},
		{"local/user/model", "user/model", "", "local/user/model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			beforeLocal, beforeGPU := len(s.local.ChatRequests()), len(s.gpu.ChatRequests())
			resp, err := s.r.Chat(t.Context(), provider.ChatRequest{Model: tt.name, Messages: hello})
			if err != nil || resp.Model != tt.answered || resp.Content == "" {
				t.Fatalf("Chat = %+v, %v; want an answer from %s", resp, err, tt.answered)
			}
			_, final, err := stream(s.r.ChatStream(t.Context(), provider.ChatRequest{Model: tt.name, Messages: hello}))
			if err != nil || final.Model != tt.answered {
				t.Fatalf("ChatStream final = %+v, %v; want an answer from %s", final, err, tt.answered)
			}
			local, gpu := s.local.ChatRequests()[beforeLocal:], s.gpu.ChatRequests()[beforeGPU:]
			if tt.wantLocal != "" && (len(local) != 2 || local[0].Model != tt.wantLocal || local[1].Model != tt.wantLocal || len(gpu) != 0) {
				t.Errorf("local got %+v and gpu %+v, want local to get %q twice", local, gpu, tt.wantLocal)
			}
			if tt.wantGPU != "" && (len(gpu) != 2 || gpu[0].Model != tt.wantGPU || gpu[1].Model != tt.wantGPU || len(local) != 0) {
				t.Errorf("gpu got %+v and local %+v, want gpu to get %q twice", gpu, local, tt.wantGPU)
			}
		})
	}
	t.Run("upstream", func(t *testing.T) {
		for name, want := range map[string]string{"gpu/gpt-tiny": "gpu", "tiny": "local", "user/model": "local", "local/tiny": "local"} {
			if got := s.r.Upstream(name); got != want {
				t.Errorf("Upstream(%q) = %q, want %q", name, got, want)
			}
		}
	})
	t.Run("embed", func(t *testing.T) {
		for name, want := range map[string][]float64{
			"gpu/gpt-tiny": ollamatest.Embedding("gpt-tiny", "x"),
			"tiny":         ollamatest.Embedding("tiny:latest", "x"),
		} {
			resp, err := s.r.Embed(t.Context(), provider.EmbedRequest{Model: name, Input: []string{"x"}})
			if err != nil || len(resp.Embeddings) != 1 || !slices.Equal(resp.Embeddings[0], want) {
				t.Errorf("Embed %s = %+v, %v", name, resp, err)
			}
		}
	})
}

func TestListAndShow(t *testing.T) {
	s := newSetup(t, ollamatest.Options{}, openaitest.Options{Models: []string{"gpt-tiny", "meta-llama/Llama-3.2-3B"}}, nil, ollama.Config{})
	models, err := s.r.ListModels(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range models {
		names = append(names, m.Name)
	}
	want := []string{"local/tiny:latest", "local/user/model:latest", "gpu/gpt-tiny", "gpu/meta-llama/Llama-3.2-3B"}
	if !slices.Equal(names, want) || models[0].Family != "llama" {
		t.Errorf("models = %q, want %q", names, want)
	}
	for name, want := range map[string]string{
		"tiny": "local/tiny:latest", "local/user/model": "local/user/model:latest",
		"gpu/meta-llama/Llama-3.2-3B": "gpu/meta-llama/Llama-3.2-3B",
	} {
		if d, err := s.r.ShowModel(t.Context(), name); err != nil || d.Name != want {
			t.Errorf("ShowModel(%q) = %q, %v; want %q", name, d.Name, err, want)
		}
	}
	if _, err := s.r.ShowModel(t.Context(), "gpu/tiny"); core.ErrorCode(err) != core.ModelNotFound {
		t.Errorf("ShowModel of a model of the other upstream = %v, want ModelNotFound", err)
	}

	s.gpu.Close()
	models, err = s.r.ListModels(t.Context())
	if err != nil || len(models) != 2 || models[0].Name != "local/tiny:latest" {
		t.Errorf("models with gpu down = %+v, %v; want local's", models, err)
	}
	s.local.Close()
	if _, err := s.r.ListModels(t.Context()); core.ErrorCode(err) != core.UpstreamUnavailable {
		t.Errorf("models with both down: %v, want UpstreamUnavailable", err)
	}
}

func TestFallback(t *testing.T) {
	fallbacks := map[string]string{"local/tiny": "gpu/gpt-tiny"}
	tests := []struct {
		name     string
		local    ollamatest.Options
		cfg      ollama.Config
		down     bool   // local does not listen
		model    string // asked for; "tiny" when empty
		fallback bool
		wantCode core.Code // when no fallback
		chats    bool      // the failure breaks chats only
	}{
		{name: "refused connection", down: true, fallback: true},
		{name: "503", local: ollamatest.Options{Status: 503}, fallback: true},
		{name: "500", local: ollamatest.Options{Status: 500, StatusMessage: "runner died"}, fallback: true},
		{name: "timeout", local: ollamatest.Options{InitialDelay: 5 * time.Second},
			cfg: ollama.Config{FirstChunkTimeout: 100 * time.Millisecond, RequestTimeout: 100 * time.Millisecond}, fallback: true, chats: true},
		{name: "error before the first token", local: ollamatest.Options{Fault: &ollamatest.Fault{Error: "out of memory"}}, fallback: true, chats: true},
		{name: "full name", model: "local/tiny:latest", local: ollamatest.Options{Status: 503}, fallback: true},
		{name: "refused request", local: ollamatest.Options{Status: 400, StatusMessage: "bad option"}, wantCode: core.ModelRefused},
		{name: "model without fallback", model: "local/user/model", local: ollamatest.Options{Status: 503}, wantCode: core.UpstreamUnavailable},
	}
	calls := map[string]func(r *router.Router, model string) (string, error){
		"Chat": func(r *router.Router, model string) (string, error) {
			resp, err := r.Chat(context.Background(), provider.ChatRequest{Model: model, Messages: hello})
			return resp.Model, err
		},
		"ChatStream": func(r *router.Router, model string) (string, error) {
			_, final, err := stream(r.ChatStream(context.Background(), provider.ChatRequest{Model: model, Messages: hello}))
			return final.Model, err
		},
		"ShowModel": func(r *router.Router, model string) (string, error) {
			d, err := r.ShowModel(context.Background(), model)
			return d.Name, err
		},
	}
	for _, tt := range tests {
		for name, call := range calls {
			if tt.chats && name == "ShowModel" {
				continue
			}
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				s := newSetup(t, tt.local, openaitest.Options{}, fallbacks, tt.cfg)
				if tt.down {
					s.local.Close()
				}
				answered, err := call(s.r, cmp.Or(tt.model, "tiny"))
				if !tt.fallback {
					if core.ErrorCode(err) != tt.wantCode || len(s.gpu.Requests()) != 0 {
						t.Errorf("error %v, gpu asked %d times; want %s and no fallback", err, len(s.gpu.Requests()), tt.wantCode)
					}
					return
				}
				if err != nil || answered != "gpu/gpt-tiny" {
					t.Errorf("answered by %q, %v; want the fallback gpu/gpt-tiny", answered, err)
				}
			})
		}
	}
	t.Run("fallback fails too", func(t *testing.T) {
		s := newSetup(t, ollamatest.Options{Status: 503}, openaitest.Options{Status: 500}, fallbacks, ollama.Config{})
		_, err := s.r.Chat(t.Context(), provider.ChatRequest{Model: "tiny", Messages: hello})
		if core.ErrorCode(err) != core.UpstreamUnavailable || !strings.Contains(err.Error(), `fallback "gpu/gpt-tiny"`) ||
			!strings.Contains(err.Error(), `after "tiny" failed`) {
			t.Errorf("error = %v, want the fallback's, naming both", err)
		}
	})
}

// TestNoFallbackAfterFirstToken breaks the local stream after two chunks: the failure reaches the caller,
// and the fallback is never asked.
func TestNoFallbackAfterFirstToken(t *testing.T) {
	s := newSetup(t, ollamatest.Options{Fault: &ollamatest.Fault{After: 2, Error: "runner died"}}, openaitest.Options{},
		map[string]string{"local/tiny": "gpu/gpt-tiny"}, ollama.Config{})
	contents, _, err := stream(s.r.ChatStream(t.Context(), provider.ChatRequest{Model: "tiny", Messages: hello}))
	if core.ErrorCode(err) != core.UpstreamFailed || len(contents) != 2 {
		t.Errorf("stream = %q, %v; want two chunks then UpstreamFailed", contents, err)
	}
	if n := len(s.gpu.Requests()); n != 0 {
		t.Errorf("the fallback was asked %d times after the answer had started", n)
	}
}

// TestCapsPerUpstream fills local's one slot: gpu still answers, local refuses with Overloaded, and a
// model with a fallback goes there.
func TestCapsPerUpstream(t *testing.T) {
	s := newSetup(t, ollamatest.Options{Tokens: slices.Repeat([]string{"x"}, 100), ChunkDelay: 5 * time.Second},
		openaitest.Options{}, map[string]string{"local/tiny": "gpu/gpt-tiny"}, ollama.Config{MaxConcurrency: 1, QueueWait: 50 * time.Millisecond})
	next, stop := iter.Pull2(s.r.ChatStream(t.Context(), provider.ChatRequest{Model: "local/user/model", Messages: hello}))
	defer stop()
	if _, err, _ := next(); err != nil {
		t.Fatal(err)
	}
	if resp, err := s.r.Chat(t.Context(), provider.ChatRequest{Model: "gpu/gpt-tiny", Messages: hello}); err != nil || resp.Model != "gpu/gpt-tiny" {
		t.Errorf("gpu while local is full = %+v, %v", resp, err)
	}
	if _, err := s.r.Chat(t.Context(), provider.ChatRequest{Model: "local/user/model", Messages: hello}); core.ErrorCode(err) != core.Overloaded {
		t.Errorf("local while full = %v, want Overloaded", err)
	}
	if resp, err := s.r.Chat(t.Context(), provider.ChatRequest{Model: "local/tiny", Messages: hello}); err != nil || resp.Model != "gpu/gpt-tiny" {
		t.Errorf("local/tiny while local is full = %+v, %v; want its fallback", resp, err)
	}
}

func TestHealth(t *testing.T) {
	s := newSetup(t, ollamatest.Options{}, openaitest.Options{}, nil, ollama.Config{})
	s.gpu.Close()
	h := s.r.Health(t.Context())
	if len(h) != 2 || h["local"] != nil || core.ErrorCode(h["gpu"]) != core.UpstreamUnavailable {
		t.Errorf("health = %v, want local fine and gpu unavailable", h)
	}
}

// TestBare puts the router in front of one Ollama whose models keep their own names, namespaces and all.
func TestBare(t *testing.T) {
	namespaced := ollamatest.Tiny()
	namespaced.Name = "ollama/tiny:latest"
	fake := ollamatest.New(t, ollamatest.Options{Models: []ollamatest.Model{ollamatest.Tiny(), namespaced}})
	r, err := router.New(router.Config{Upstreams: []router.Upstream{{Name: "ollama", Provider: ollama.New(ollama.Config{BaseURL: fake.URL})}}, Bare: true})
	if err != nil {
		t.Fatal(err)
	}
	models, err := r.ListModels(t.Context())
	if err != nil || len(models) != 2 || models[0].Name != "tiny:latest" || models[1].Name != "ollama/tiny:latest" {
		t.Errorf("models = %+v, %v", models, err)
	}
	resp, err := r.Chat(t.Context(), provider.ChatRequest{Model: "ollama/tiny", Messages: hello})
	if err != nil || resp.Model != "ollama/tiny" || fake.ChatRequests()[0].Model != "ollama/tiny" {
		t.Errorf("chat = %+v, %v; want the namespaced model asked for whole", resp, err)
	}
	if h := r.Health(t.Context()); len(h) != 1 || h["ollama"] != nil {
		t.Errorf("health = %v", h)
	}
}

func TestNew(t *testing.T) {
	p := ollama.New(ollama.Config{BaseURL: providertest.ClosedURL(t)})
	for name, cfg := range map[string]router.Config{
		"no upstream":     {},
		"empty name":      {Upstreams: []router.Upstream{{Provider: p}}},
		"slash in a name": {Upstreams: []router.Upstream{{Name: "a/b", Provider: p}}},
		"repeated name":   {Upstreams: []router.Upstream{{Name: "a", Provider: p}, {Name: "a", Provider: p}}},
		"bare with two":   {Upstreams: []router.Upstream{{Name: "a", Provider: p}, {Name: "b", Provider: p}}, Bare: true},
		"two fallbacks":   {Upstreams: []router.Upstream{{Name: "a", Provider: p}}, Fallbacks: map[string]string{"tiny": "b", "a/tiny:latest": "c"}},
	} {
		if _, err := router.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// The caller's cancellation is no failure of the upstream: it is not retried on the fallback.
func TestCancelledIsNotRetried(t *testing.T) {
	s := newSetup(t, ollamatest.Options{InitialDelay: 5 * time.Second}, openaitest.Options{},
		map[string]string{"local/tiny": "gpu/gpt-tiny"}, ollama.Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := s.r.Chat(ctx, provider.ChatRequest{Model: "tiny", Messages: hello})
	if !errors.Is(err, context.DeadlineExceeded) || len(s.gpu.Requests()) != 0 {
		t.Errorf("error = %v, gpu asked %d times; want the caller's deadline and no fallback", err, len(s.gpu.Requests()))
	}
}

// TestListedModel checks the one name of a model for every spelling of it, and that only the model's own
// upstream is asked: a chat check must not wait on the other servers, even one that hangs.
func TestListedModel(t *testing.T) {
	s := newSetup(t, ollamatest.Options{}, openaitest.Options{Models: []string{"gpt-tiny"}},
		map[string]string{"local/gone": "gpu/gpt-tiny"}, ollama.Config{})
	for name, want := range map[string]string{
		"tiny": "local/tiny:latest", "tiny:latest": "local/tiny:latest", "local/tiny": "local/tiny:latest",
		"local/user/model": "local/user/model:latest", "gpu/gpt-tiny": "gpu/gpt-tiny",
	} {
		if got, err := s.r.ListedModel(t.Context(), name); err != nil || got != want {
			t.Errorf("ListedModel(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	if _, err := s.r.ListedModel(t.Context(), "gpu/tiny"); core.ErrorCode(err) != core.ModelNotFound {
		t.Errorf("a model of the other upstream: %v, want ModelNotFound", err)
	}

	// An upstream that hangs does not hold up a model of another.
	hanging := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hanging.Close)
	r, err := router.New(router.Config{Upstreams: []router.Upstream{
		{Name: "local", Provider: ollama.New(ollama.Config{BaseURL: s.local.URL})},
		{Name: "stuck", Provider: openai.New(openai.Config{BaseURL: hanging.URL, RequestTimeout: time.Hour})},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if got, err := r.ListedModel(ctx, "tiny"); err != nil || got != "local/tiny:latest" {
		t.Errorf("with the other upstream hanging: %q, %v; want local/tiny:latest at once", got, err)
	}
}
