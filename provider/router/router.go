// Package router is a provider.Provider in front of several model servers (upstreams): it names each model
// "<upstream>/<model>", sends each call to the upstream its name says, lists the models of all of them
// together, and hands a call whose model fails before its first token to the model configured as its
// fallback. The chat service uses it like any one model server.
package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
)

var _ provider.Provider = (*Router)(nil)

// Upstream is one model server behind the router.
type Upstream struct {
	// Name is the prefix of its models' names, such as "local" in "local/llama3.2"; it holds no '/'.
	Name     string
	Provider provider.Provider
}

// Config lists the upstreams and the fallbacks.
type Config struct {
	// Upstreams are the model servers, at least one. The first also answers model names without an
	// upstream prefix.
	Upstreams []Upstream
	// Fallbacks maps a model's name to the model that answers in its place when it fails before its first
	// token, both as clients name them (such as "local/llama3.2" to "gpu/llama-3.2-3b"). A fallback's own
	// fallback is not tried.
	Fallbacks map[string]string
	// Bare keeps the models' own names, without prefix, for a router in front of its one upstream, so that
	// a gateway configured with a single model server names models as that server does.
	Bare bool
}

// Router routes each call by model name. It is safe for concurrent use.
type Router struct {
	upstreams []Upstream
	byName    map[string]*Upstream
	fallbacks []fallback
	bare      bool
}

// fallback is one entry of Config.Fallbacks, its model routed.
type fallback struct {
	up    *Upstream
	model string // as the upstream names it
	to    string // as clients name it
}

// New returns a Router for cfg. It fails when cfg has no upstream, an upstream name is empty, repeated or
// holds a '/', Bare comes with more than one upstream, or two fallbacks name one model (as "tiny" and
// "local/tiny:latest").
func New(cfg Config) (*Router, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("router: no upstream")
	}
	if cfg.Bare && len(cfg.Upstreams) > 1 {
		return nil, errors.New("router: bare names need a single upstream")
	}
	r := &Router{upstreams: slices.Clone(cfg.Upstreams), byName: map[string]*Upstream{}, bare: cfg.Bare}
	for i := range r.upstreams {
		u := &r.upstreams[i]
		if u.Name == "" || strings.Contains(u.Name, "/") || r.byName[u.Name] != nil {
			return nil, fmt.Errorf("router: upstream name %q is empty, holds a '/' or is repeated", u.Name)
		}
		r.byName[u.Name] = u
	}
	for from, to := range cfg.Fallbacks {
		up, model := r.route(from)
		if _, ok := r.fallbackOf(up, model); ok {
			return nil, fmt.Errorf("router: model %q has two fallbacks, under two names", from)
		}
		r.fallbacks = append(r.fallbacks, fallback{up: up, model: model, to: to})
	}
	return r, nil
}

// route returns the upstream that serves the model name and the name it knows the model by: the upstream
// its prefix names, the prefix cut off; or else the first upstream, with the whole name, which may hold a
// '/' of its own (an Ollama namespace, as in "hf.co/org/model").
func (r *Router) route(name string) (*Upstream, string) {
	if prefix, model, ok := strings.Cut(name, "/"); ok && !r.bare && model != "" {
		if u := r.byName[prefix]; u != nil {
			return u, model
		}
	}
	return &r.upstreams[0], name
}

// Upstream returns the name of the upstream that serves the model name, such as "gpu" for
// "gpu/llama-3.2-3b", for the usage record of a call.
func (r *Router) Upstream(name string) string {
	u, _ := r.route(name)
	return u.Name
}

// qualify names an upstream's model as clients do.
func (r *Router) qualify(u *Upstream, model string) string {
	if r.bare {
		return model
	}
	return u.Name + "/" + model
}

// fallbackFor returns the model configured to answer for u's model when it failed with err, if err is a
// failure that another server may not have: the upstream was unreachable, failed, timed out or was full
// (UpstreamUnavailable, UpstreamFailed, UpstreamTimeout, Overloaded). A refused request, an unknown model
// and the caller's cancellation are not retried.
func (r *Router) fallbackFor(ctx context.Context, u *Upstream, model string, err error) (string, bool) {
	if ctx.Err() != nil {
		return "", false
	}
	switch core.ErrorCode(err) {
	case core.UpstreamUnavailable, core.UpstreamFailed, core.UpstreamTimeout, core.Overloaded:
	default:
		return "", false
	}
	return r.fallbackOf(u, model)
}

// fallbackOf returns the fallback configured for u's model, if any.
func (r *Router) fallbackOf(u *Upstream, model string) (string, bool) {
	for _, f := range r.fallbacks {
		if f.up == u && provider.SameModel(f.model, model) {
			return f.to, true
		}
	}
	return "", false
}

// withFallback runs call on the provider and model that name routes to and, when it fails in a way
// fallbackFor accepts, on those of the fallback. It names the model of the answer, found by named, as
// clients name it.
func withFallback[T any](ctx context.Context, r *Router, name string, call func(provider.Provider, string) (T, error), named func(*T) *string) (T, error) {
	try := func(u *Upstream, model string) (T, error) {
		out, err := call(u.Provider, model)
		if err == nil {
			*named(&out) = r.qualify(u, cmp.Or(*named(&out), model))
		}
		return out, err
	}
	u, model := r.route(name)
	out, err := try(u, model)
	if err == nil {
		return out, nil
	}
	to, ok := r.fallbackFor(ctx, u, model, err)
	if !ok {
		return out, err
	}
	out, ferr := try(r.route(to))
	if ferr != nil {
		return out, fallbackError(to, name, ferr, err)
	}
	return out, nil
}

// fallbackError is the failure of the fallback to, called after name failed with err.
func fallbackError(to, name string, ferr, err error) error {
	return fmt.Errorf("fallback %q: %w (after %q failed: %v)", to, ferr, name, err)
}

// ListModels returns the models of every upstream that answers, named as clients name them, in the order
// of the upstreams. An upstream that fails is left out; when all fail, the first one's error is returned.
func (r *Router) ListModels(ctx context.Context) ([]provider.Model, error) {
	lists := make([][]provider.Model, len(r.upstreams))
	errs := r.each(ctx, func(ctx context.Context, i int, u *Upstream) error {
		models, err := u.Provider.ListModels(ctx)
		for j := range models {
			models[j].Name = r.qualify(u, models[j].Name)
		}
		lists[i] = models
		return err
	})
	var all []provider.Model
	failed := 0
	for i, list := range lists {
		if errs[i] != nil {
			failed++
		}
		all = append(all, list...)
	}
	if failed == len(r.upstreams) {
		return nil, errs[0]
	}
	return all, nil
}

// Health calls every upstream at once for its model list (cached by the clients) and returns, by upstream
// name, nil for those that answered and the error of those that did not.
func (r *Router) Health(ctx context.Context) map[string]error {
	errs := r.each(ctx, func(ctx context.Context, _ int, u *Upstream) error {
		_, err := u.Provider.ListModels(ctx)
		return err
	})
	health := make(map[string]error, len(r.upstreams))
	for i, u := range r.upstreams {
		health[u.Name] = errs[i]
	}
	return health
}

// each runs f for every upstream at once and returns their errors, in the order of the upstreams.
func (r *Router) each(ctx context.Context, f func(context.Context, int, *Upstream) error) []error {
	errs := make([]error, len(r.upstreams))
	var wg sync.WaitGroup
	for i := range r.upstreams {
		wg.Go(func() { errs[i] = f(ctx, i, &r.upstreams[i]) })
	}
	wg.Wait()
	return errs
}

// ListedModel returns the name under which the model server lists name, named as clients name it: one name
// for every spelling of a model, such as "local/llama3.2:latest" for "llama3.2", or a ModelNotFound error.
// Only the upstream that name routes to is asked (its fallback's when it fails), from its cached model
// list, and directly only for a model missing from the list, in case it was pulled since.
func (r *Router) ListedModel(ctx context.Context, name string) (string, error) {
	type listed struct{ name string }
	out, err := withFallback(ctx, r, name, func(p provider.Provider, model string) (listed, error) {
		models, err := p.ListModels(ctx)
		if err != nil {
			return listed{}, err
		}
		for _, m := range models {
			if provider.SameModel(m.Name, model) {
				return listed{m.Name}, nil
			}
		}
		d, err := p.ShowModel(ctx, model)
		return listed{d.Name}, err
	}, func(l *listed) *string { return &l.name })
	return out.name, err
}

// ShowModel describes the model name routes to, named as clients name it; when its upstream fails, the
// fallback's, so that a model whose server is down can still be checked before a chat that will fall back.
func (r *Router) ShowModel(ctx context.Context, name string) (provider.ModelDetails, error) {
	return withFallback(ctx, r, name, func(p provider.Provider, model string) (provider.ModelDetails, error) {
		return p.ShowModel(ctx, model)
	}, func(d *provider.ModelDetails) *string { return &d.Name })
}

// Chat asks the model req names for a whole answer, or its fallback when it fails (see Config.Fallbacks).
// The answer's Model says which of the two answered.
func (r *Router) Chat(ctx context.Context, req provider.ChatRequest) (provider.ChatResponse, error) {
	return withFallback(ctx, r, req.Model, func(p provider.Provider, model string) (provider.ChatResponse, error) {
		req.Model = model
		return p.Chat(ctx, req)
	}, func(resp *provider.ChatResponse) *string { return &resp.Model })
}

// Embed asks the model req names for embeddings, or its fallback when it fails (see Config.Fallbacks). The
// answer's Model says which of the two answered.
func (r *Router) Embed(ctx context.Context, req provider.EmbedRequest) (provider.EmbedResponse, error) {
	return withFallback(ctx, r, req.Model, func(p provider.Provider, model string) (provider.EmbedResponse, error) {
		req.Model = model
		return p.Embed(ctx, req)
	}, func(resp *provider.EmbedResponse) *string { return &resp.Model })
}

// ChatStream streams the answer of the model req names. When that stream fails before yielding anything,
// the fallback's answer is streamed in its place (see Config.Fallbacks); once a chunk was yielded, a failure
// is yielded as it is, never retried. The final chunk's Model says which model answered.
func (r *Router) ChatStream(ctx context.Context, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		u, model := r.route(req.Model)
		started := false
		for chunk, err := range r.stream(ctx, u, model, req) {
			if err != nil && !started {
				if to, ok := r.fallbackFor(ctx, u, model, err); ok {
					fu, fmodel := r.route(to)
					for chunk, ferr := range r.stream(ctx, fu, fmodel, req) {
						if ferr != nil {
							ferr = fallbackError(to, req.Model, ferr, err)
						}
						if !yield(chunk, ferr) {
							return
						}
					}
					return
				}
			}
			started = true
			if !yield(chunk, err) {
				return
			}
		}
	}
}

// stream runs one upstream's stream of model, naming the model that answered on the final chunk as clients
// name it.
func (r *Router) stream(ctx context.Context, u *Upstream, model string, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		req.Model = model
		for chunk, err := range u.Provider.ChatStream(ctx, req) {
			if chunk.Done {
				chunk.Model = r.qualify(u, cmp.Or(chunk.Model, model))
			}
			if !yield(chunk, err) {
				return
			}
		}
	}
}
