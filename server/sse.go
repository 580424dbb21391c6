package server

import (
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
)

// sseWriter writes Server-Sent Events and flushes each one as soon as it is written. Before every write it
// pushes the connection's write deadline forward, so that a long stream outlives the server's WriteTimeout
// while a stalled client still cannot hold the connection for ever.
type sseWriter struct {
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	buf          []byte // reused for every event
}

func newSSEWriter(w http.ResponseWriter, writeTimeout time.Duration) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout, buf: make([]byte, 0, 512)}
}

// start sends the status and headers of an event stream.
func (s *sseWriter) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

// event writes one event whose data is JSON already.
func (s *sseWriter) event(name string, data []byte) error {
	s.buf = append(s.buf[:0], "event: "...)
	s.buf = append(s.buf, name...)
	s.buf = append(s.buf, "\ndata: "...)
	s.buf = append(s.buf, data...)
	s.buf = append(s.buf, "\n\n"...)
	return s.send()
}

// jsonEvent writes one event whose data is v encoded as JSON. It is for the rare events; deltas use delta.
func (s *sseWriter) jsonEvent(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.event(name, data)
}

// delta writes a delta event, {"content": ...}, without reflection: it runs once per token.
func (s *sseWriter) delta(content string) error {
	s.buf = append(s.buf[:0], "event: delta\ndata: {\"content\":"...)
	s.buf = appendJSONString(s.buf, content)
	s.buf = append(s.buf, "}\n\n"...)
	return s.send()
}

// comment writes a comment line, which clients ignore: it keeps idle connections alive through proxies.
func (s *sseWriter) comment(text string) error {
	s.buf = append(append(append(s.buf[:0], ": "...), text...), "\n\n"...)
	return s.send()
}

func (s *sseWriter) send() error {
	if s.writeTimeout > 0 {
		if err := s.rc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return err
	}
	return s.rc.Flush()
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s to dst as a JSON string literal, as encoding/json would but without its HTML
// escaping: invalid UTF-8 becomes U+FFFD, and U+2028 and U+2029 are escaped for JavaScript's sake.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// chatStream is the 200 answer of POST /v1/chat/stream. It implements the generated response interface, so
// the route stays on the strict server, and relays the model's chunks as events: meta first, a delta per
// chunk, then exactly one done or error.
type chatStream struct {
	ctx          context.Context
	release      func() // gives back the user's stream slot when the stream ends
	meta         apiserver.StreamMeta
	chunks       func(context.Context) iter.Seq2[provider.Chunk, error]
	heartbeat    time.Duration
	writeTimeout time.Duration
	// problem renders a mid-stream failure as the data of the error event.
	problem func(error) apiserver.Problem
	metrics *metrics.Metrics
	start   time.Time // when the request arrived, for the time to first token
}

type streamItem struct {
	chunk provider.Chunk
	err   error
}

// VisitStreamChatResponse writes the stream. The model is read on its own goroutine so that heartbeats go
// out while it is silent; when the client leaves, the read stops and the upstream request is cancelled.
func (cs chatStream) VisitStreamChatResponse(w http.ResponseWriter) error {
	defer cs.release()
	ctx, cancel := context.WithCancel(cs.ctx)
	items := make(chan streamItem, 16)
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		defer close(items)
		for chunk, err := range cs.chunks(ctx) {
			select {
			case items <- streamItem{chunk, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// The answer is stored when the producer ends; wait for it so that the request ends after the store.
	defer func() { cancel(); <-producerDone }()

	sse := newSSEWriter(w, cs.writeTimeout)
	sse.start()
	model := cs.meta.Model
	cs.metrics.OpenStreams.Inc()
	cancelled := true // until the stream reaches its done or error event
	firstToken := true
	defer func() {
		cs.metrics.OpenStreams.Dec()
		cs.metrics.StreamDuration.WithLabelValues(model).Observe(time.Since(cs.start).Seconds())
		if cancelled {
			cs.metrics.ClientCancellations.Inc()
		}
	}()
	delta := func(content string) error {
		if firstToken {
			firstToken = false
			cs.metrics.TimeToFirstToken.WithLabelValues(model).Observe(time.Since(cs.start).Seconds())
		}
		return sse.delta(content)
	}
	if err := sse.jsonEvent("meta", cs.meta); err != nil {
		return nil // the client is gone; nothing more to say
	}
	ticker := time.NewTicker(cs.heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := sse.comment("ping"); err != nil {
				return nil
			}
		case item, ok := <-items:
			switch {
			case !ok:
				// The model's stream ended without a final chunk or an error; never pretend it succeeded.
				cancelled = false
				_ = sse.jsonEvent("error", cs.problem(provider.ErrStream))
				return nil
			case item.err != nil:
				cancelled = false
				_ = sse.jsonEvent("error", cs.problem(item.err))
				return nil
			case item.chunk.Done:
				if item.chunk.Content != "" {
					if err := delta(item.chunk.Content); err != nil {
						return nil
					}
				}
				cancelled = false
				usage := item.chunk.Usage
				cs.metrics.CountTokens(model, usage.PromptTokens, usage.CompletionTokens)
				_ = sse.jsonEvent("done", apiserver.StreamDone{
					MessageId: cs.meta.MessageId, DoneReason: item.chunk.DoneReason, Usage: toAPIUsage(usage),
				})
				return nil
			case item.chunk.Content != "":
				if err := delta(item.chunk.Content); err != nil {
					return nil
				}
			}
		}
	}
}

func toAPIUsage(u provider.Usage) apiserver.Usage {
	return apiserver.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
}
