package app

import (
	"net/http"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/ollama"
	"github.com/deepersensor/deepersensor/provider/openai"
	"github.com/deepersensor/deepersensor/provider/router"
)

// singleUpstream names the one Ollama of DS_OLLAMA_URL, used when DS_UPSTREAMS is empty, in readiness
// checks; its models keep their own names.
const singleUpstream = "ollama"

// newProvider builds the model servers of cfg behind a router: the upstreams of DS_UPSTREAMS, each with
// the DS_OLLAMA_* timeouts and its own concurrency cap, or else the one Ollama at DS_OLLAMA_URL with its
// models' own names. wrapTransport, when set, wraps each client's transport.
func newProvider(cfg config.Config, wrapTransport func(http.RoundTripper) http.RoundTripper) (*router.Router, error) {
	// ollama.Config and openai.Config are one type: both clients take the same settings.
	client := func(u config.Upstream) provider.Provider {
		c := ollama.Config{
			BaseURL: u.URL, APIKey: u.APIKey, ConnectTimeout: cfg.OllamaConnectTimeout,
			FirstChunkTimeout: cfg.OllamaFirstChunkTimeout, ChunkTimeout: cfg.OllamaChunkTimeout,
			RequestTimeout: cfg.OllamaRequestTimeout, ModelsCacheTTL: cfg.ModelsCacheTTL,
			MaxConcurrency: cfg.OllamaMaxConcurrency, QueueWait: cfg.OllamaQueueWait, WrapTransport: wrapTransport,
		}
		if u.Kind == config.UpstreamOpenAI {
			return openai.New(c)
		}
		return ollama.New(c)
	}
	if len(cfg.Upstreams) == 0 {
		only := config.Upstream{Name: singleUpstream, Kind: config.UpstreamOllama, URL: cfg.OllamaURL}
		return router.New(router.Config{
			Upstreams: []router.Upstream{{Name: only.Name, Provider: client(only)}}, Fallbacks: cfg.ModelFallbacks, Bare: true,
		})
	}
	upstreams := make([]router.Upstream, len(cfg.Upstreams))
	for i, u := range cfg.Upstreams {
		upstreams[i] = router.Upstream{Name: u.Name, Provider: client(u)}
	}
	return router.New(router.Config{Upstreams: upstreams, Fallbacks: cfg.ModelFallbacks})
}
