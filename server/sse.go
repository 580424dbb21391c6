package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/deepersensor/deepersensor/core"
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
	buf          bytes.Buffer  // reused for every event
	enc          *json.Encoder // writes to buf
}

func newSSEWriter(w http.ResponseWriter, writeTimeout time.Duration) *sseWriter {
	s := &sseWriter{w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout}
	s.enc = json.NewEncoder(&s.buf)
	s.enc.SetEscapeHTML(false) // the data is JSON, never HTML
	return s
}

// start sends the status and headers of an event stream.
func (s *sseWriter) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

// event writes one event whose data is v encoded as JSON, on one line; an empty name writes an unnamed
// event, as OpenAI's streams have.
func (s *sseWriter) event(name string, v any) error {
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: ")
		s.buf.WriteString(name)
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("data: ")
	if err := s.enc.Encode(v); err != nil { // ends the line
		return err
	}
	s.buf.WriteByte('\n')
	return s.send()
}

// comment writes a comment line, which clients ignore: it keeps idle connections alive through proxies.
func (s *sseWriter) comment(text string) error {
	s.buf.Reset()
	s.buf.WriteString(": ")
	s.buf.WriteString(text)
	s.buf.WriteString("\n\n")
	return s.send()
}

func (s *sseWriter) send() error {
	if s.writeTimeout > 0 {
		if err := s.rc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return err
	}
	return s.rc.Flush()
}

// streamEvents write a chat stream in one wire dialect: the native API's named events, or the chunks of the
// OpenAI-compatible API.
type streamEvents interface {
	// begin writes what comes before the answer's first piece.
	begin(sse *sseWriter) error
	// delta writes one piece of the answer.
	delta(sse *sseWriter, content string) error
	// done writes the end of a complete answer, from its final chunk.
	done(sse *sseWriter, final provider.Chunk) error
	// fail writes the error that ends the stream midway.
	fail(sse *sseWriter, e *core.Error) error
	// refuse answers a failure that came before the stream began, with its own status.
	refuse(w http.ResponseWriter, e *core.Error) error
}

// nativeEvents are the events of POST /v1/chat/stream: meta first, a delta per chunk, then exactly one done
// or error.
type nativeEvents struct {
	meta      apiserver.StreamMeta
	requestID string
}

func (n nativeEvents) begin(sse *sseWriter) error { return sse.event("meta", n.meta) }

func (n nativeEvents) delta(sse *sseWriter, content string) error {
	return sse.event("delta", apiserver.StreamDelta{Content: content})
}

func (n nativeEvents) done(sse *sseWriter, final provider.Chunk) error {
	model := cmp.Or(final.Model, n.meta.Model)
	return sse.event("done", apiserver.StreamDone{
		MessageId: n.meta.MessageId, DoneReason: final.DoneReason, Usage: toAPIUsage(final.Usage), Model: &model,
	})
}

func (n nativeEvents) fail(sse *sseWriter, e *core.Error) error {
	return sse.event("error", problemBody(e, n.requestID))
}

func (n nativeEvents) refuse(w http.ResponseWriter, e *core.Error) error {
	return writeProblemTo(w, e, n.requestID, false)
}

// chatStream is the 200 answer of a streamed chat. It implements the generated response interface, so the
// route stays on the strict server, and relays the model's chunks as its events say.
type chatStream struct {
	ctx          context.Context
	release      func() // gives back the user's stream slot when the stream ends
	events       streamEvents
	chunks       func(context.Context) iter.Seq2[provider.Chunk, error]
	draining     <-chan struct{} // closed when the server ends its streams to shut down
	heartbeat    time.Duration
	writeTimeout time.Duration
	// firstWait bounds how long the stream waits for the model's first chunk before it sends its headers: a
	// failure within it, such as the model server being full, answers with its own status and headers, as
	// the non-streamed route does; a slower model gets the meta event and heartbeats meanwhile.
	firstWait time.Duration
	// failure turns a failure into the core error the client is told.
	failure  func(error) *core.Error
	metrics  *metrics.Metrics
	model    string    // the metrics label of the model: its name as the model server lists it
	upstream string    // the metrics label of the model server
	start    time.Time // when the request arrived, for the time to first token
}

type streamItem struct {
	chunk provider.Chunk
	err   error
}

// VisitStreamChatResponse writes the stream of POST /v1/chat/stream.
func (cs chatStream) VisitStreamChatResponse(w http.ResponseWriter) error { return cs.relay(w) }

// relay writes the stream. The model is read on its own goroutine so that heartbeats go out while it is
// silent; when the client leaves, the read stops and the upstream request is cancelled.
func (cs chatStream) relay(w http.ResponseWriter) error {
	defer cs.release()
	ctx, cancel := context.WithCancel(cs.ctx)
	items := make(chan streamItem, 16)
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		defer close(items)
		defer func() {
			// A panic in the model's stream ends this stream, not the process; the chat service has stored
			// the partial answer while the panic unwound.
			if r := recover(); r != nil {
				err := internalError(fmt.Errorf("model stream panicked: %v\n%s", r, debug.Stack()))
				select {
				case items <- streamItem{err: err}:
				case <-ctx.Done():
				}
			}
		}()
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

	first, early := cs.awaitFirst(ctx, items)
	if early && first.err != nil && ctx.Err() == nil {
		return cs.events.refuse(w, cs.failure(first.err))
	}
	sse := newSSEWriter(w, cs.writeTimeout)
	sse.start()
	model := cs.model
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
		return cs.events.delta(sse, content)
	}
	fail := func(err error) {
		cancelled = false
		_ = cs.events.fail(sse, cs.failure(err))
	}
	// handle relays one item and reports whether the stream is over.
	handle := func(item streamItem) bool {
		switch {
		case item.err != nil && ctx.Err() != nil:
			return true // the client left: the model's stream ended for that, and nobody is listening
		case item.err != nil:
			fail(item.err)
			return true
		case item.chunk.Done:
			if item.chunk.Content != "" {
				if err := delta(item.chunk.Content); err != nil {
					return true
				}
			}
			cancelled = false
			usage := item.chunk.Usage
			cs.metrics.CountTokens(model, cs.upstream, usage.PromptTokens, usage.CompletionTokens)
			_ = cs.events.done(sse, item.chunk)
			return true
		case item.chunk.Content != "":
			return delta(item.chunk.Content) != nil
		}
		return false
	}
	if err := cs.events.begin(sse); err != nil {
		return nil // the client is gone; nothing more to say
	}
	if early && handle(first) {
		return nil
	}
	ticker := time.NewTicker(cs.heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cs.draining:
			// The server is shutting down: end the stream now, with the partial answer stored (the producer
			// stores it as it stops), rather than be cut off without a word when the grace runs out.
			fail(errShuttingDown)
			return nil
		case <-ticker.C:
			if err := sse.comment("ping"); err != nil {
				return nil
			}
		case item, ok := <-items:
			if !ok {
				item = streamItem{err: errStreamEnded}
			}
			if handle(item) {
				return nil
			}
		}
	}
}

// errStreamEnded is a model stream that ended without a final chunk or an error: never pretend it succeeded.
var errStreamEnded = provider.UpstreamFailed(errors.New("the stream ended without a final chunk"))

// awaitFirst waits up to firstWait for the first item of the model's stream, and reports whether it came.
func (cs chatStream) awaitFirst(ctx context.Context, items <-chan streamItem) (streamItem, bool) {
	timer := time.NewTimer(cs.firstWait)
	defer timer.Stop()
	select {
	case item, ok := <-items:
		if !ok {
			if ctx.Err() != nil {
				return streamItem{}, false // the client left; the loop sees it
			}
			item = streamItem{err: errStreamEnded}
		}
		return item, true
	case <-timer.C:
	case <-ctx.Done():
	case <-cs.draining:
	}
	return streamItem{}, false
}

func toAPIUsage(u provider.Usage) apiserver.Usage {
	return apiserver.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
}
