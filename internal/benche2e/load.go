package benche2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/deepersensor/deepersensor/internal/sse"
)

// callTimeout bounds every call of the load, so that a stuck server cannot hold the run.
const callTimeout = 30 * time.Second

// format is how a streamed answer reads.
type format int

const (
	ndjson    format = iota // Ollama's: a JSON object per line, the last with "done":true
	nativeSSE               // the gateway's /v1/chat/stream: meta, delta..., then done or error
	openaiSSE               // OpenAI's: chunks, then data: [DONE]
)

// endpoint is one way of calling a model: where, with which body, with which headers (one set per caller,
// used in turn), and how its streamed answer reads.
type endpoint struct {
	url     string
	body    []byte
	headers []http.Header
	format  format
	next    atomic.Uint64
}

// header returns the headers of the next call.
func (e *endpoint) header() http.Header {
	return e.headers[int(e.next.Add(1)%uint64(len(e.headers)))]
}

// newClient returns the HTTP client of one side of a scenario: keep-alive connections to a loopback server,
// as many as the load needs.
func newClient() *http.Client {
	return &http.Client{
		Timeout: callTimeout,
		Transport: &http.Transport{
			MaxIdleConns: 0, MaxIdleConnsPerHost: 100_000, IdleConnTimeout: time.Minute,
			ResponseHeaderTimeout: callTimeout,
		},
	}
}

// sample is what one round of calls measured: the latencies of the calls that succeeded, the number that
// failed with the first failure, and the gateway's CPU time over the round (zero for direct rounds).
type sample struct {
	latencies []time.Duration
	failed    int
	firstErr  string
	elapsed   time.Duration
	cpu       time.Duration
}

// calls counts the calls of the sample, whatever their outcome.
func (s sample) calls() int { return len(s.latencies) + s.failed }

// add merges o into s.
func (s *sample) add(o sample) {
	s.latencies = append(s.latencies, o.latencies...)
	s.failed += o.failed
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.elapsed += o.elapsed
	s.cpu += o.cpu
}

// attack sends non-streamed calls to e for d with vegeta: rate calls a second, open loop (a call does not
// wait for the one before), or with rate 0 as fast as workers callers can, each waiting for its answer
// (closed loop). A call succeeds when it answers 200.
func attack(ctx context.Context, c *http.Client, e *endpoint, rate, workers int, d time.Duration) sample {
	opts := []func(*vegeta.Attacker){vegeta.Client(c), vegeta.MaxBody(512)}
	pacer := vegeta.ConstantPacer{Freq: rate, Per: time.Second}
	if rate == 0 {
		opts = append(opts, vegeta.Workers(uint64(workers)), vegeta.MaxWorkers(uint64(workers)))
	}
	a := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	targeter := func(t *vegeta.Target) error {
		t.Method, t.URL, t.Body, t.Header = http.MethodPost, e.url, e.body, e.header()
		return nil
	}
	var s sample
	start := time.Now()
	for r := range a.Attack(targeter, pacer, d, "") {
		if r.Code == http.StatusOK && r.Error == "" {
			s.latencies = append(s.latencies, r.Latency)
			continue
		}
		s.failed++
		if s.firstErr == "" {
			s.firstErr = strings.TrimSpace(fmt.Sprintf("%d %s %.200s", r.Code, r.Error, r.Body))
		}
	}
	s.elapsed = time.Since(start)
	return s
}

// call makes one non-streamed call to e and checks that it is answered 200.
func call(ctx context.Context, c *http.Client, e *endpoint) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(e.body))
	if err != nil {
		return err
	}
	req.Header = e.header().Clone()
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: status %d: %.300s", e.url, resp.StatusCode, body)
	}
	return err
}

// streamSample is what one round of streams measured: the time to the first token and the length of each
// stream that ended well, the tokens they carried, and the failures.
type streamSample struct {
	ttft, total []time.Duration
	tokens      int
	failed      int
	firstErr    string
	cpu         time.Duration
}

func (s *streamSample) add(o streamSample) {
	s.ttft, s.total = append(s.ttft, o.ttft...), append(s.total, o.total...)
	s.tokens += o.tokens
	s.failed += o.failed
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.cpu += o.cpu
}

// streams runs workers callers that each stream answers from e one after the other until d has passed
// (closed loop), and measures each stream.
func streams(ctx context.Context, c *http.Client, e *endpoint, workers int, d time.Duration) streamSample {
	ctx, cancel := context.WithTimeout(ctx, d+callTimeout)
	defer cancel()
	deadline := time.Now().Add(d)
	var (
		mu  sync.Mutex
		out streamSample
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				ttft, total, tokens, err := stream(ctx, c, e, nil)
				mu.Lock()
				if err != nil {
					out.failed++
					if out.firstErr == "" {
						out.firstErr = err.Error()
					}
				} else {
					out.ttft, out.total = append(out.ttft, ttft), append(out.total, total)
					out.tokens += tokens
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// errStreamFailed is a stream that ended with an error event or without its final one.
var errStreamFailed = errors.New("stream failed")

// stream makes one streamed call to e and reads its answer to the end: it returns the time to the first
// content token, the time to the end and the tokens received. firstToken, when not nil, is called once the
// first token came.
func stream(ctx context.Context, c *http.Client, e *endpoint, firstToken func()) (ttft, total time.Duration, tokens int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(e.body))
	if err != nil {
		return 0, 0, 0, err
	}
	req.Header = e.header().Clone()
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return 0, 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	token := func() {
		if tokens == 0 {
			ttft = time.Since(start)
			if firstToken != nil {
				firstToken()
			}
		}
		tokens++
	}
	done := false
	switch e.format {
	case ndjson:
		done, err = readNDJSON(resp.Body, token)
	case nativeSSE, openaiSSE:
		done, err = readSSE(resp.Body, e.format, token)
	}
	if err == nil && !done {
		err = fmt.Errorf("%w: no final event after %d tokens", errStreamFailed, tokens)
	}
	return ttft, time.Since(start), tokens, err
}

// readNDJSON reads an Ollama stream, calling token for each content chunk, and reports whether the final
// chunk came.
func readNDJSON(r io.Reader, token func()) (bool, error) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case bytes.Contains(line, []byte(`"done":false`)):
			token()
		case bytes.Contains(line, []byte(`"done":true`)):
			return true, nil
		case len(bytes.TrimSpace(line)) > 0:
			return false, fmt.Errorf("%w: %.200s", errStreamFailed, line)
		}
		if err != nil {
			return false, ignoreEOF(err)
		}
	}
}

// readSSE reads the gateway's native stream or an OpenAI stream, calling token for each content event,
// and reports whether the final event came.
func readSSE(r io.Reader, f format, token func()) (bool, error) {
	events := sse.NewReader(r)
	for {
		ev, err := events.Next()
		if err != nil {
			return false, ignoreEOF(err)
		}
		switch {
		case f == nativeSSE && ev.Type == "delta", f == openaiSSE && openaiContent(ev.Data):
			token()
		case f == nativeSSE && ev.Type == "done", f == openaiSSE && ev.Data == "[DONE]":
			return true, nil
		case ev.Type == "error", f == openaiSSE && strings.Contains(ev.Data, `"error"`):
			return false, fmt.Errorf("%w: %.200s", errStreamFailed, ev.Data)
		}
	}
}

// openaiContent reports whether an OpenAI chunk carries content: the gateway's first chunk has the role and
// empty content, its last the finish_reason and no content.
func openaiContent(data string) bool {
	return strings.Contains(data, `"content":"`) && !strings.Contains(data, `"content":""`)
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
