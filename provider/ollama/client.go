// Package ollama implements provider.Provider on the native API of an Ollama server (/api/chat, /api/tags,
// /api/show).
package ollama

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/ratelimit"
)

var _ provider.Provider = (*Client)(nil)

// Defaults for the zero fields of Config.
const (
	// DefaultBaseURL is where Ollama listens out of the box.
	DefaultBaseURL = "http://127.0.0.1:11434"
	// DefaultConnectTimeout is the default Config.ConnectTimeout.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultFirstChunkTimeout is the default Config.FirstChunkTimeout, long enough to load a large model.
	DefaultFirstChunkTimeout = 5 * time.Minute
	// DefaultChunkTimeout is the default Config.ChunkTimeout.
	DefaultChunkTimeout = time.Minute
	// DefaultRequestTimeout is the default Config.RequestTimeout.
	DefaultRequestTimeout = 5 * time.Minute
	// DefaultMaxConcurrency is the default Config.MaxConcurrency.
	DefaultMaxConcurrency = 32
	// DefaultQueueWait is the default Config.QueueWait.
	DefaultQueueWait = 2 * time.Second
)

// busyRetryAfter is how long a chat refused for want of a slot is told to wait.
const busyRetryAfter = time.Second

// Config says where the Ollama server is and how long to wait for it. Zero timeouts mean the defaults.
type Config struct {
	// BaseURL is the server's root, e.g. http://127.0.0.1:11434.
	BaseURL string
	// ConnectTimeout bounds opening a TCP connection.
	ConnectTimeout time.Duration
	// FirstChunkTimeout bounds the wait from sending a streamed chat until its first chunk. Ollama sends
	// not even the status line while it queues the request or loads the model, so keep it generous.
	FirstChunkTimeout time.Duration
	// ChunkTimeout bounds the silence between two chunks of a stream.
	ChunkTimeout time.Duration
	// RequestTimeout bounds each call: Ping, ListModels, ShowModel, and Chat and ChatStream, which include
	// loading the model and the whole generation.
	RequestTimeout time.Duration
	// ModelsCacheTTL is how long ListModels serves the model list from memory; zero or negative disables
	// the cache.
	ModelsCacheTTL time.Duration
	// MaxConcurrency caps the chats, streamed or not, that the Client runs on the server at once; each holds
	// its slot until it ends. A model server runs few generations in parallel and queues the rest, so the
	// cap keeps one gateway from piling up calls that would only wait there.
	MaxConcurrency int
	// QueueWait is how long a chat waits for a free slot before it fails with a core.Overloaded error.
	QueueWait time.Duration
	// WrapTransport, when set, wraps the tuned transport, such as to trace every call.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Client talks to one Ollama server over one shared, tuned connection pool. It is safe for concurrent use.
type Client struct {
	cfg   Config
	base  string
	hc    *http.Client
	slots *ratelimit.Semaphore // one per chat running on the server

	mu            sync.Mutex // guards the two fields below
	models        []provider.Model
	modelsExpires time.Time
}

// New returns a Client for cfg, with defaults for its zero fields. It does not contact the server.
func New(cfg Config) *Client {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.FirstChunkTimeout <= 0 {
		cfg.FirstChunkTimeout = DefaultFirstChunkTimeout
	}
	if cfg.ChunkTimeout <= 0 {
		cfg.ChunkTimeout = DefaultChunkTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxConcurrency <= 0 {
		cfg.MaxConcurrency = DefaultMaxConcurrency
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = DefaultQueueWait
	}
	transport := &http.Transport{
		// No proxy: Ollama runs beside the gateway.
		DialContext: (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		// Every open stream holds a connection; keep enough idle ones for bursts of short chats.
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// No ResponseHeaderTimeout: Ollama sends no headers until the model is loaded and the request's
		// turn has come. FirstChunkTimeout and RequestTimeout bound that wait instead.
	}
	var rt http.RoundTripper = transport
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(rt)
	}
	return &Client{
		cfg:   cfg,
		base:  strings.TrimRight(cfg.BaseURL, "/"),
		hc:    &http.Client{Transport: rt},
		slots: ratelimit.NewSemaphore(cfg.MaxConcurrency, cfg.QueueWait),
	}
}

// ListModels returns the models the server has (GET /api/tags), from the cache when it is fresh. Failures
// are not cached.
func (c *Client) ListModels(ctx context.Context) ([]provider.Model, error) {
	if c.cfg.ModelsCacheTTL > 0 {
		c.mu.Lock()
		models, expires := c.models, c.modelsExpires
		c.mu.Unlock()
		if models != nil && time.Now().Before(expires) {
			return slices.Clone(models), nil
		}
	}

	var tags struct {
		Models []struct {
			Name       string       `json:"name"`
			Size       int64        `json:"size"`
			ModifiedAt time.Time    `json:"modified_at"`
			Details    modelDetails `json:"details"`
		} `json:"models"`
	}
	if err := c.callJSON(ctx, "ollama list models", http.MethodGet, "/api/tags", nil, &tags); err != nil {
		return nil, err
	}
	models := make([]provider.Model, 0, len(tags.Models))
	for _, m := range tags.Models {
		models = append(models, m.Details.toModel(m.Name, m.Size, m.ModifiedAt))
	}

	if c.cfg.ModelsCacheTTL > 0 {
		c.mu.Lock()
		c.models, c.modelsExpires = models, time.Now().Add(c.cfg.ModelsCacheTTL)
		c.mu.Unlock()
		return slices.Clone(models), nil
	}
	return models, nil
}

// ShowModel describes one model (POST /api/show). Name is the name asked for, and Size is zero: /api/show
// does not report it.
func (c *Client) ShowModel(ctx context.Context, name string) (provider.ModelDetails, error) {
	var show struct {
		Parameters   string                     `json:"parameters"`
		Details      modelDetails               `json:"details"`
		ModelInfo    map[string]json.RawMessage `json:"model_info"`
		Capabilities []string                   `json:"capabilities"`
		ModifiedAt   time.Time                  `json:"modified_at"`
	}
	op := fmt.Sprintf("ollama show %q", name)
	if err := c.callJSON(ctx, op, http.MethodPost, "/api/show", map[string]string{"model": name}, &show); err != nil {
		return provider.ModelDetails{}, err
	}
	// /api/show knows neither the size nor the full name ("tiny" for "tiny:latest"): the list does.
	model := show.Details.toModel(name, 0, show.ModifiedAt)
	if models, err := c.ListModels(ctx); err == nil {
		for _, m := range models {
			if provider.SameModel(m.Name, name) {
				model.Name, model.Size = m.Name, m.Size
			}
		}
	}
	return provider.ModelDetails{
		Model:         model,
		Format:        show.Details.Format,
		Families:      show.Details.Families,
		Parameters:    show.Parameters,
		ContextLength: contextLength(show.ModelInfo),
		Capabilities:  show.Capabilities,
	}, nil
}

// modelDetails is the "details" object of /api/tags and /api/show.
type modelDetails struct {
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

func (d modelDetails) toModel(name string, size int64, modified time.Time) provider.Model {
	return provider.Model{
		Name:              name,
		Size:              size,
		ModifiedAt:        modified,
		Family:            d.Family,
		ParameterSize:     d.ParameterSize,
		QuantizationLevel: d.QuantizationLevel,
	}
}

// contextLength reads "<general.architecture>.context_length" from /api/show's model_info, or 0.
func contextLength(info map[string]json.RawMessage) int {
	var arch string
	if json.Unmarshal(info["general.architecture"], &arch) != nil {
		return 0
	}
	var n int
	if json.Unmarshal(info[arch+".context_length"], &n) != nil {
		return 0
	}
	return n
}

// chatRequest is the body of POST /api/chat.
type chatRequest struct {
	Model    string         `json:"model"`
	Messages []message      `json:"messages"`
	Stream   bool           `json:"stream"`
	Options  map[string]any `json:"options,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func chatBody(req provider.ChatRequest, stream bool) chatRequest {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = message{Role: m.Role, Content: m.Content}
	}
	return chatRequest{Model: req.Model, Messages: msgs, Stream: stream, Options: req.Options}
}

// Chat generates a whole answer in one non-streamed /api/chat call, holding one of MaxConcurrency slots.
func (c *Client) Chat(ctx context.Context, req provider.ChatRequest) (provider.ChatResponse, error) {
	var line chatLine
	op := fmt.Sprintf("ollama chat %q", req.Model)
	release, err := c.acquire(ctx, op)
	if err != nil {
		return provider.ChatResponse{}, err
	}
	defer release()
	if err := c.callJSON(ctx, op, http.MethodPost, "/api/chat", chatBody(req, false), &line); err != nil {
		return provider.ChatResponse{}, err
	}
	return provider.ChatResponse{Content: line.Message.Content, DoneReason: line.DoneReason, Usage: line.usage()}, nil
}

func (l *chatLine) usage() provider.Usage {
	return provider.Usage{
		PromptTokens:       l.PromptEvalCount,
		CompletionTokens:   l.EvalCount,
		TotalDuration:      l.TotalDuration,
		LoadDuration:       l.LoadDuration,
		PromptEvalDuration: l.PromptEvalDuration,
		EvalDuration:       l.EvalDuration,
	}
}

// acquire takes a chat slot, waiting at most QueueWait. It fails with a core.Overloaded error when no slot
// freed up, and with the context's error when ctx ended first.
func (c *Client) acquire(ctx context.Context, op string) (release func(), err error) {
	release, ok, err := c.slots.Acquire(ctx)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: wait for a slot: %w", op, err)
	case !ok:
		return nil, &core.Error{Code: core.Overloaded, RetryAfter: busyRetryAfter,
			Message: "the model server is busy with as many chats as this instance may run, retry shortly",
			Err:     fmt.Errorf("%s: all %d slots stayed taken for %s", op, c.cfg.MaxConcurrency, c.cfg.QueueWait)}
	}
	return release, nil
}

// callJSON makes one non-streamed call bounded by RequestTimeout and decodes a 200 answer into out.
func (c *Client) callJSON(ctx context.Context, op, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.RequestTimeout, errTimedOut)
	defer cancel()
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("%s: encode request: %w", op, err)
		}
	}
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return sendError(ctx, op, err, c.requestTimedOut())
	}
	defer drainClose(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return statusError(op, resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if err := ctxError(ctx, op, c.requestTimedOut()); err != nil {
			return err
		}
		return provider.UpstreamUnavailable(fmt.Errorf("%s: unreadable answer: %w", op, err))
	}
	return nil
}

// do sends one request; body nil means none.
func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.hc.Do(req)
}

// requestTimedOut says, for the logs, that RequestTimeout ran out.
func (c *Client) requestTimedOut() string {
	return "no answer within " + c.cfg.RequestTimeout.String()
}

// drainClose reads what is left of a small body so that its connection can be reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}
