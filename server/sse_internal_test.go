package server

import (
	"context"
	"iter"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
)

// discardWriter is a flushable ResponseWriter with write deadlines, like the server's, that throws the body
// away, to time the relay alone.
type discardWriter struct{ h http.Header }

func (d *discardWriter) SetWriteDeadline(time.Time) error { return nil }
func (d *discardWriter) Header() http.Header              { return d.h }
func (d *discardWriter) Write(p []byte) (int, error)      { return len(p), nil }
func (d *discardWriter) WriteHeader(int)                  {}
func (d *discardWriter) Flush()                           {}

func chunks(n int, content string) func(context.Context) iter.Seq2[provider.Chunk, error] {
	return func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) {
			for range n {
				if !yield(provider.Chunk{Content: content}, nil) {
					return
				}
			}
			yield(provider.Chunk{Done: true, DoneReason: "stop", Usage: provider.Usage{PromptTokens: 1, CompletionTokens: n}}, nil)
		}
	}
}

// BenchmarkRelay times the relay per chunk: one chunk from the provider in, one delta event written and
// flushed out.
func BenchmarkRelay(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	cs := chatStream{
		ctx: context.Background(), release: func() {},
		events: nativeEvents{meta: apiserver.StreamMeta{ConversationId: uuid.New(), MessageId: uuid.New(), Model: "tiny"}},
		chunks: chunks(b.N, " token"), heartbeat: time.Hour, writeTimeout: time.Minute, metrics: m, start: time.Now(),
		failure: func(err error) *core.Error { return core.Wrap(core.Internal, err, "x") },
	}
	b.ResetTimer()
	if err := cs.VisitStreamChatResponse(&discardWriter{h: http.Header{}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSSEDelta times writing one delta event.
func BenchmarkSSEDelta(b *testing.B) {
	w := newSSEWriter(&discardWriter{h: http.Header{}}, 0)
	b.ReportAllocs()
	for b.Loop() {
		if err := w.event("delta", apiserver.StreamDelta{Content: ` a "quoted" token with é`}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRelayEndsWithExactlyOneTerminalEvent(t *testing.T) {
	failing := func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) {
			if yield(provider.Chunk{Content: "a"}, nil) {
				yield(provider.Chunk{}, provider.UpstreamFailed(nil))
			}
		}
	}
	truncated := func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) { yield(provider.Chunk{Content: "a"}, nil) }
	}
	panicking := func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) {
			if yield(provider.Chunk{Content: "a"}, nil) {
				panic("bug in the model client")
			}
		}
	}
	tests := []struct {
		name   string
		chunks func(context.Context) iter.Seq2[provider.Chunk, error]
		want   string
	}{
		{"done", chunks(2, "x"), "meta,delta,delta,done"},
		{"upstream error", failing, "meta,delta,error"},
		{"stream ends without a final chunk", truncated, "meta,delta,error"},
		{"the model's stream panics", panicking, "meta,delta,error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingWriter{h: http.Header{}}
			cs := chatStream{
				ctx: context.Background(), release: func() {}, events: nativeEvents{meta: apiserver.StreamMeta{Model: "tiny"}}, chunks: tt.chunks,
				heartbeat: time.Hour, metrics: metrics.New(), start: time.Now(),
				failure: func(err error) *core.Error { return core.Wrap(core.UpstreamFailed, err, "x") },
			}
			if err := cs.VisitStreamChatResponse(rec); err != nil {
				t.Fatal(err)
			}
			if got, _ := eventNames(t, rec.body.String()); got != tt.want {
				t.Errorf("events = %s, want %s", got, tt.want)
			}
		})
	}
}

// eventNames reads the events of a stream's body and returns their names, comma-separated, and the last event.
func eventNames(t *testing.T, body string) (string, sse.Event) {
	t.Helper()
	events, err := sse.ReadAll(strings.NewReader(body))
	if err != nil || len(events) == 0 {
		t.Fatalf("read the events of %q: %d, %v", body, len(events), err)
	}
	names := make([]string, len(events))
	for i, ev := range events {
		names[i] = ev.Type
	}
	return strings.Join(names, ","), events[len(events)-1]
}

type recordingWriter struct {
	h    http.Header
	body strings.Builder
}

func (r *recordingWriter) Header() http.Header         { return r.h }
func (r *recordingWriter) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recordingWriter) WriteHeader(int)             {}
func (r *recordingWriter) Flush()                      {}

// timedWriter records the status and, with the time of each, the writes of a response written from several
// goroutines (the relay's timers write too).
type timedWriter struct {
	h      http.Header
	mu     sync.Mutex
	status int
	body   strings.Builder
	errAt  time.Time // when the error event was written
}

func (w *timedWriter) Header() http.Header { return w.h }
func (w *timedWriter) Flush()              {}

func (w *timedWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status = status
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.HasPrefix(string(p), "event: error") {
		w.errAt = time.Now()
	}
	return w.body.Write(p)
}

// TestRelayDrain drains the server in the middle of a model's answer that takes its time to stop: a stream that
// began gets its error event at once, before the model's stream has ended; one that had not begun is refused
// with 503.
func TestRelayDrain(t *testing.T) {
	tests := []struct {
		name       string
		firstWait  time.Duration
		pieces     int
		wantStatus int
		wantEvents string
	}{
		{"begun", 0, 1, http.StatusOK, "meta,delta,error"},
		{"not begun", time.Hour, 0, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			drained, drain := context.WithCancel(context.Background())
			defer drain()
			var stopped time.Time
			slowToStop := func(ctx context.Context) iter.Seq2[provider.Chunk, error] {
				return func(yield func(provider.Chunk, error) bool) {
					for range tt.pieces {
						if !yield(provider.Chunk{Content: "a"}, nil) {
							return
						}
					}
					drain()
					<-ctx.Done()
					time.Sleep(200 * time.Millisecond)
					stopped = time.Now()
					yield(provider.Chunk{}, provider.UpstreamFailed(ctx.Err()))
				}
			}
			w := &timedWriter{h: http.Header{}}
			cs := chatStream{
				ctx: context.Background(), release: func() {}, events: nativeEvents{meta: apiserver.StreamMeta{Model: "tiny"}},
				chunks: slowToStop, drained: drained, heartbeat: time.Hour, firstWait: tt.firstWait, metrics: metrics.New(),
				start: time.Now(), failure: (&Server{}).toCoreError, // as the server turns failures into answers
			}
			if err := cs.relay(w); err != nil {
				t.Fatal(err)
			}
			if w.status != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.status, tt.wantStatus, w.body.String())
			}
			if tt.wantStatus != http.StatusOK {
				return
			}
			got, last := eventNames(t, w.body.String())
			if got != tt.wantEvents || !strings.Contains(last.Data, "shutting down") {
				t.Fatalf("events = %s, last %s; want %s, ending with the shutdown", got, last.Data, tt.wantEvents)
			}
			if !w.errAt.Before(stopped) {
				t.Errorf("the error event went out %v after the model's stream stopped, want before it", w.errAt.Sub(stopped))
			}
		})
	}
}
