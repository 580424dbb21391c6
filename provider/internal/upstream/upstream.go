// Package upstream is the HTTP plumbing that the provider clients share: one tuned connection pool per model
// server, the timeouts of its calls, the cap on the model calls running on it at once, the cache of its model
// list, and the failures that happen below any wire format (no connection, a deadline, a broken stream) as
// provider errors. Each client adds its server's paths, bodies and error format.
package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// Defaults for the zero fields of Config.
const (
	DefaultConnectTimeout    = 5 * time.Second
	DefaultFirstChunkTimeout = 5 * time.Minute // long enough to load a large model
	DefaultChunkTimeout      = time.Minute
	DefaultRequestTimeout    = 5 * time.Minute
	DefaultMaxConcurrency    = 32
	DefaultQueueWait         = 2 * time.Second
)

const (
	// busyRetryAfter is how long a model call refused for want of a slot is told to wait.
	busyRetryAfter = time.Second
	// drainTimeout bounds reading the end of a finished stream so that its connection can be reused.
	drainTimeout = time.Second
	// maxErrorBody bounds what is read of an answer that is drained or reported as an error.
	maxErrorBody = 64 << 10
)

// MaxChatAnswer bounds a non-streamed chat answer, as the clients bound a line of a stream: an answer within
// the token limits is far shorter, so only a runaway server sends more.
const MaxChatAnswer = 8 << 20

// Config says where a model server is, how to authenticate and how long to wait for it. Zero timeouts and
// limits mean the defaults.
type Config struct {
	// BaseURL is the server's root, such as http://127.0.0.1:11434 or http://gpu-box:8000/v1.
	BaseURL string
	// APIKey, when set, is sent as "Authorization: Bearer <APIKey>" with every request. It is a secret: it
	// never appears in errors or logs.
	APIKey string
	// ConnectTimeout bounds opening a TCP connection.
	ConnectTimeout time.Duration
	// FirstChunkTimeout bounds the wait from sending a streamed chat until its first chunk. A model server
	// may send not even the status line while it queues the request or loads the model, so keep it generous.
	FirstChunkTimeout time.Duration
	// ChunkTimeout bounds the silence between two chunks of a stream.
	ChunkTimeout time.Duration
	// RequestTimeout bounds each call: model lists and descriptions, embeddings, and chats, streamed or not,
	// which include loading the model and the whole generation.
	RequestTimeout time.Duration
	// ModelsCacheTTL is how long the model list is served from memory; zero or negative disables the cache.
	ModelsCacheTTL time.Duration
	// MaxConcurrency caps the model calls (chats, streamed or not, and embeddings) that the client runs on
	// the server at once; each holds its slot until it ends. A model server runs few generations in parallel
	// and queues the rest, so the cap keeps one gateway from piling up calls that would only wait there.
	MaxConcurrency int
	// QueueWait is how long a model call waits for a free slot before it fails with a core.Overloaded error.
	QueueWait time.Duration
	// WrapTransport, when set, wraps the tuned transport, such as to trace every call.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// StatusError turns an answer with a status other than 200 into a provider error, reading the server's own
// error format. op says what was being done, for the cause.
type StatusError func(op string, resp *http.Response) error

// Client talks to one model server over one shared connection pool. It is safe for concurrent use.
type Client struct {
	cfg         Config
	base        string
	hc          *http.Client
	slots       *ratelimit.Semaphore // one per model call running on the server
	statusError StatusError

	mu            sync.Mutex // guards the two fields below
	models        []provider.Model
	modelsExpires time.Time
}

// New returns a Client for cfg, with defaults for its zero fields, that reads failed answers with
// statusError. It does not contact the server.
func New(cfg Config, statusError StatusError) *Client {
	orDefault(&cfg.ConnectTimeout, DefaultConnectTimeout)
	orDefault(&cfg.FirstChunkTimeout, DefaultFirstChunkTimeout)
	orDefault(&cfg.ChunkTimeout, DefaultChunkTimeout)
	orDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	orDefault(&cfg.MaxConcurrency, DefaultMaxConcurrency)
	orDefault(&cfg.QueueWait, DefaultQueueWait)
	transport := &http.Transport{
		// No proxy: model servers run beside the gateway or are addressed directly.
		DialContext: (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		// Every open stream holds a connection; keep enough idle ones for bursts of short chats.
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		// No ResponseHeaderTimeout: a model server may send no headers until the model is loaded and the
		// request's turn has come. FirstChunkTimeout and RequestTimeout bound that wait instead.
	}
	var rt http.RoundTripper = transport
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(rt)
	}
	return &Client{
		cfg:         cfg,
		base:        strings.TrimRight(cfg.BaseURL, "/"),
		hc:          &http.Client{Transport: rt},
		slots:       ratelimit.NewSemaphore(cfg.MaxConcurrency, cfg.QueueWait),
		statusError: statusError,
	}
}

// orDefault sets *v to def unless it is positive.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// timeout is the cancellation cause of one of our own deadlines, told apart from the caller's; it says which
// deadline ran out, for the logs.
type timeout string

func (t timeout) Error() string { return string(t) }

// ctxError returns nil while ctx is live. Once it is done, it returns an UpstreamTimeout error if one of our
// deadlines ended it, or else the caller's context error.
func ctxError(ctx context.Context, op string) error {
	if ctx.Err() == nil {
		return nil
	}
	if t, ok := errors.AsType[timeout](context.Cause(ctx)); ok {
		return provider.UpstreamTimeout(fmt.Errorf("%s: %s", op, t))
	}
	return fmt.Errorf("%s: %w", op, ctx.Err())
}

// sendError classifies a request that got no response.
func sendError(ctx context.Context, op string, err error) error {
	if err := ctxError(ctx, op); err != nil {
		return err
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return provider.UpstreamTimeout(fmt.Errorf("%s: connect timed out: %w", op, err))
	}
	return provider.UpstreamUnavailable(fmt.Errorf("%s: unreachable: %w", op, err))
}

// acquire takes a model-call slot, waiting at most QueueWait. It fails with a core.Overloaded error when no
// slot freed up, and with the context's error when ctx ended first.
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

// ModelCall POSTs in to path as one model call: it holds a slot (see acquire) and decodes a 200 answer into
// out, like CallJSON. An answer longer than maxAnswer bytes, when it is positive, is an UpstreamFailed error.
func (c *Client) ModelCall(ctx context.Context, op, path string, in, out any, maxAnswer int64) error {
	release, err := c.acquire(ctx, op)
	if err != nil {
		return err
	}
	defer release()
	return c.callJSON(ctx, op, http.MethodPost, path, in, out, maxAnswer)
}

// CallJSON makes one non-streamed call bounded by RequestTimeout, sending in as JSON unless it is nil, and
// decodes a 200 answer into out. An answer that does not decode is an UpstreamUnavailable error.
func (c *Client) CallJSON(ctx context.Context, op, method, path string, in, out any) error {
	return c.callJSON(ctx, op, method, path, in, out, 0)
}

// callJSON is CallJSON, with answers longer than maxAnswer bytes, when it is positive, an UpstreamFailed
// error.
func (c *Client) callJSON(ctx context.Context, op, method, path string, in, out any, maxAnswer int64) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.RequestTimeout, timeout("no answer within "+c.cfg.RequestTimeout.String()))
	defer cancel()
	resp, err := c.send(ctx, op, method, path, in)
	if err != nil {
		return err
	}
	defer drainClose(resp.Body)
	body := &io.LimitedReader{R: resp.Body, N: math.MaxInt64}
	if maxAnswer > 0 {
		body.N = maxAnswer // a longer answer is cut short, so it does not decode
	}
	if err := json.NewDecoder(body).Decode(out); err != nil {
		if err := ctxError(ctx, op); err != nil {
			return err
		}
		if body.N == 0 {
			return provider.UpstreamFailed(fmt.Errorf("%s: answer longer than %d bytes", op, maxAnswer))
		}
		return provider.UpstreamUnavailable(fmt.Errorf("%s: unreadable answer: %w", op, err))
	}
	return nil
}

// send sends one request with in as its JSON body (none when in is nil) and returns a 200 answer; any
// failure comes classified, and the body of a failed answer closed.
func (c *Client) send(ctx context.Context, op, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, sendError(ctx, op, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer drainClose(resp.Body)
		return nil, c.statusError(op, resp)
	}
	return resp, nil
}

// Models returns the model list that fetch reads from the server, from the cache while it is fresh (see
// Config.ModelsCacheTTL). Failures are not cached.
func (c *Client) Models(ctx context.Context, fetch func(context.Context) ([]provider.Model, error)) ([]provider.Model, error) {
	if c.cfg.ModelsCacheTTL <= 0 {
		return fetch(ctx)
	}
	c.mu.Lock()
	models, expires := c.models, c.modelsExpires
	c.mu.Unlock()
	if models != nil && time.Now().Before(expires) {
		return slices.Clone(models), nil
	}
	models, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.models, c.modelsExpires = models, time.Now().Add(c.cfg.ModelsCacheTTL)
	c.mu.Unlock()
	return slices.Clone(models), nil
}

// Stream is one streamed model call whose answer is being read. It holds a model-call slot until Close.
type Stream struct {
	// Body is the answer's body.
	Body io.Reader

	ctx      context.Context
	op       string
	cfg      Config
	resp     *http.Response
	cancel   context.CancelCauseFunc
	chunk    *time.Timer // the wait for the first chunk, then for each next one
	whole    *time.Timer // RequestTimeout
	received atomic.Bool // a chunk came, so the chunk timer waits ChunkTimeout
	release  func()
}

// OpenStream POSTs in to path as a streamed model call, once one of MaxConcurrency slots is free, and returns
// the Stream of a 200 answer. FirstChunkTimeout bounds the wait for the first chunk (model loading included)
// and ChunkTimeout each later silence, neither running while the consumer handles a chunk (see Received
// and Next); RequestTimeout bounds the whole stream, so that no answer runs for ever. Cancelling ctx aborts
// the request at once. The caller must Close the Stream.
func (c *Client) OpenStream(ctx context.Context, op, path string, in any) (*Stream, error) {
	release, err := c.acquire(ctx, op)
	if err != nil {
		return nil, err
	}
	s := &Stream{op: op, cfg: c.cfg, release: release}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.chunk = time.AfterFunc(c.cfg.FirstChunkTimeout, func() {
		if s.received.Load() {
			s.cancel(timeout("no chunk for " + c.cfg.ChunkTimeout.String()))
		} else {
			s.cancel(timeout("no answer within " + c.cfg.FirstChunkTimeout.String()))
		}
	})
	s.whole = time.AfterFunc(c.cfg.RequestTimeout, func() {
		s.cancel(timeout("answer not done within " + c.cfg.RequestTimeout.String()))
	})
	s.resp, err = c.send(s.ctx, op, http.MethodPost, path, in)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Body = s.resp.Body
	return s, nil
}

// Received stops the chunk timer: a chunk came, and the consumer's time handling it is not the server's.
func (s *Stream) Received() {
	s.received.Store(true)
	s.chunk.Stop()
}

// Next starts waiting ChunkTimeout for the next chunk.
func (s *Stream) Next() { s.chunk.Reset(s.cfg.ChunkTimeout) }

// ReadError classifies a failure to read the answer, with end describing an answer that stopped short (such
// as "stream ended before its final chunk"): a deadline of ours is an UpstreamTimeout error, the caller's
// cancellation its context error, anything else an UpstreamFailed error.
func (s *Stream) ReadError(err error, end string) error {
	if err := ctxError(s.ctx, s.op); err != nil {
		return err
	}
	if errors.Is(err, io.EOF) {
		return provider.UpstreamFailed(fmt.Errorf("%s: %s", s.op, end))
	}
	return provider.UpstreamFailed(fmt.Errorf("%s: stream broken: %w", s.op, err))
}

// Finish reads, for at most a second, what is left of a complete answer so that its connection can be
// reused.
func (s *Stream) Finish() {
	s.chunk.Reset(drainTimeout)
	_, _ = io.Copy(io.Discard, io.LimitReader(s.resp.Body, maxErrorBody))
}

// Close ends the request, if it is still running, and frees the slot.
func (s *Stream) Close() {
	s.chunk.Stop()
	s.whole.Stop()
	s.cancel(nil)
	if s.resp != nil {
		_ = s.resp.Body.Close()
	}
	s.release()
}

// ReadErrorBody reads the start of a failed answer's body for its error message.
func ReadErrorBody(resp *http.Response) []byte {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return body
}

// Truncate shortens s to n bytes for a log line, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// drainClose reads what is left of a small body so that its connection can be reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxErrorBody))
	_ = body.Close()
}
