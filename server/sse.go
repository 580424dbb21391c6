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
	"sync"
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
	drained      context.Context // ends when the server ends its streams to shut down; nil for never
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

// VisitStreamChatResponse writes the stream of POST /v1/chat/stream.
func (cs chatStream) VisitStreamChatResponse(w http.ResponseWriter) error { return cs.relay(w) }

// relay writes the stream, reading the model's pieces on the request's own goroutine and writing each as it
// comes: no other goroutine and no hand-off per piece. Timers write the rest: the headers and the first event
// once firstWait has passed without a piece, heartbeats every interval after that, and the error event of a
// drain at once. The model's stream is cancelled when the client leaves, a write to it fails, or the server
// drains; the chat service has stored the answer, whole or partial, before the iteration over it ends, so the
// request ends after the store.
func (cs chatStream) relay(w http.ResponseWriter) error {
	defer cs.release()
	ctx, cancel := context.WithCancel(cs.ctx)
	defer cancel()
	r := &streamRelay{cs: cs, w: w, cancel: cancel}
	if cs.drained != nil {
		defer context.AfterFunc(cs.drained, r.drain)()
	}
	late := time.AfterFunc(cs.firstWait, r.startLate)
	defer r.finish(late)

	failure, over := r.relayPieces(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timerPanic != nil {
		panic(r.timerPanic) // for the server's recovery, as on this goroutine
	}
	switch {
	case over || r.finished:
		return nil
	case cs.drained != nil && cs.drained.Err() != nil:
		failure = errShuttingDown // drained before the stream began
	case ctx.Err() != nil:
		return nil // the client left, or a write to it failed: nobody is listening
	}
	r.finished = true
	if r.sse == nil {
		// Within firstWait: a failure that has its own status, such as a full model server, answers with it.
		r.refused = true
		return cs.events.refuse(w, cs.failure(failure))
	}
	r.ended = true
	_ = cs.events.fail(r.sse, cs.failure(failure))
	return nil
}

// streamRelay is the state of one relayed stream, shared by the request's goroutine and the timers.
type streamRelay struct {
	cs     chatStream
	w      http.ResponseWriter
	cancel context.CancelFunc // ends the model's stream: nobody is listening any more

	mu         sync.Mutex  // serialises the writes and guards the fields below
	sse        *sseWriter  // set when the stream started: status, headers and the first event sent
	heartbeat  *time.Timer // set when the stream started, with heartbeats configured
	ended      bool        // the done or error event was sent (or tried)
	finished   bool        // the stream is over: nothing more may be written
	refused    bool        // answered with a problem instead of a stream
	gotToken   bool        // the first content went out, for the time to first token
	inPiece    bool        // the request's goroutine is writing a piece, not reading the model
	timerPanic any         // a panic of a timer's write, for the request's goroutine to raise
}

// relayPieces writes the model's pieces until the last, and reports over when the stream needs nothing more:
// its done event written, or a write to the client failed; otherwise failure says why the model's stream ended
// early. A panic in the model's stream ends this stream with an internal error, not the process; one in the
// relay's own writing goes on to the server's recovery.
func (r *streamRelay) relayPieces(ctx context.Context) (failure error, over bool) {
	defer func() {
		if p := recover(); p != nil {
			if r.inPiece {
				panic(p)
			}
			failure, over = internalError(fmt.Errorf("model stream panicked: %v\n%s", p, debug.Stack())), false
		}
	}()
	for chunk, err := range r.cs.chunks(ctx) {
		if err != nil {
			return err, false
		}
		if r.piece(chunk) {
			return nil, true
		}
	}
	// A model stream that ended without a final chunk or an error: never pretend it succeeded.
	return errStreamEnded, false
}

// piece writes one piece of the answer, and the done event with the final one; it reports whether the stream
// is over.
func (r *streamRelay) piece(chunk provider.Chunk) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return true // drained, or the client is gone
	}
	r.inPiece = true // left set by a panic
	over := r.write(chunk)
	r.inPiece = false
	return over
}

// write writes a piece; r.mu is held.
func (r *streamRelay) write(chunk provider.Chunk) bool {
	r.start()
	if r.finished {
		return true // the client is gone
	}
	cs := r.cs
	if chunk.Content != "" {
		if !r.gotToken {
			r.gotToken = true
			cs.metrics.TimeToFirstToken.WithLabelValues(cs.model).Observe(time.Since(cs.start).Seconds())
		}
		if err := cs.events.delta(r.sse, chunk.Content); err != nil {
			r.gone()
			return true
		}
	}
	if !chunk.Done {
		return false
	}
	r.ended, r.finished = true, true
	cs.metrics.CountTokens(cs.model, cs.upstream, chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens)
	_ = cs.events.done(r.sse, chunk)
	return true
}

// start sends the status, the headers and the first event, once; r.mu is held.
func (r *streamRelay) start() {
	if r.sse != nil {
		return
	}
	cs := r.cs
	r.sse = newSSEWriter(r.w, cs.writeTimeout)
	r.sse.start()
	cs.metrics.OpenStreams.Inc()
	if err := cs.events.begin(r.sse); err != nil {
		r.gone()
		return
	}
	if cs.heartbeat > 0 {
		r.heartbeat = time.AfterFunc(cs.heartbeat, r.ping)
	}
}

// gone ends a stream whose client cannot be written to any more; r.mu is held.
func (r *streamRelay) gone() {
	r.finished = true
	r.cancel()
}

// startLate starts the stream when firstWait has passed without a piece of the model's answer.
func (r *streamRelay) startLate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.recoverTimer()
	if !r.finished {
		r.start()
	}
}

// ping writes a heartbeat, which keeps idle connections alive through proxies, and schedules the next.
func (r *streamRelay) ping() {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.recoverTimer()
	if r.finished {
		return
	}
	if err := r.sse.comment("ping"); err != nil {
		r.gone()
		return
	}
	r.heartbeat.Reset(r.cs.heartbeat)
}

// drain ends the stream as the server shuts down: a stream that began gets its error event at once, before the
// model's stream has stopped and the partial answer is stored, so that the client hears it before the grace
// runs out; one that did not begin is refused by the request's goroutine.
func (r *streamRelay) drain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer r.cancel()
	defer r.recoverTimer()
	if r.sse == nil || r.finished {
		return
	}
	r.ended, r.finished = true, true
	_ = r.cs.events.fail(r.sse, r.cs.failure(errShuttingDown))
}

// recoverTimer keeps a panic in a timer's write from ending the process: the stream ends, and the request's
// goroutine raises the panic where the server recovers from it. Deferred with r.mu held.
func (r *streamRelay) recoverTimer() {
	if p := recover(); p != nil {
		r.timerPanic = fmt.Sprintf("%v\n%s", p, debug.Stack())
		r.gone()
	}
}

// finish stops the timers and counts the stream. A timer that fires meanwhile writes nothing: finished is set.
func (r *streamRelay) finish(late *time.Timer) {
	late.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = true
	cs := r.cs
	if r.sse == nil {
		if !r.refused {
			cs.metrics.ClientCancellations.Inc() // the client left before the stream began
		}
		return
	}
	if r.heartbeat != nil {
		r.heartbeat.Stop()
	}
	cs.metrics.OpenStreams.Dec()
	cs.metrics.StreamDuration.WithLabelValues(cs.model).Observe(time.Since(cs.start).Seconds())
	if !r.ended {
		cs.metrics.ClientCancellations.Inc()
	}
}

// errStreamEnded is a model stream that ended without a final chunk or an error: never pretend it succeeded.
var errStreamEnded = provider.UpstreamFailed(errors.New("the stream ended without a final chunk"))

func toAPIUsage(u provider.Usage) apiserver.Usage {
	return apiserver.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
}
