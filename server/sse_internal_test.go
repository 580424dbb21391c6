package server

import (
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/store"
)

// discardWriter is a flushable ResponseWriter with write deadlines, like the server's, that throws the body
// away, to time the relay alone.
type discardWriter struct{ h http.Header }

func (d *discardWriter) SetWriteDeadline(time.Time) error { return nil }
func (d *discardWriter) Header() http.Header              { return d.h }
func (d *discardWriter) Write(p []byte) (int, error)      { return len(p), nil }
func (d *discardWriter) WriteHeader(int)                  {}
func (d *discardWriter) Flush()                           {}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "new\nline\ttab\r", "\x00\x1f\x7f", "é ünïcödé 😀",
		"\u2028\u2029", "bad \xff utf8 \xc3", "<html>&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("appendJSONString(%q) = %s, not a JSON string: %v", s, got, err)
		}
		want := strings.ToValidUTF8(s, "\uFFFD")
		if !utf8.ValidString(s) {
			// encoding/json replaces each invalid byte; ToValidUTF8 replaces runs. Compare with the oracle.
			var oracle string
			data, _ := json.Marshal(s)
			_ = json.Unmarshal(data, &oracle)
			want = oracle
		}
		if back != want {
			t.Fatalf("round trip of %q = %q, want %q", s, back, want)
		}
	})
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(storeCursor(time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC), uuid.MustParse("6a1f0c55-3f5e-4f8e-bb5c-0d7c8d0f2a10"))))
	f.Add("")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		c, ok := decodeCursor(s)
		if !ok {
			return
		}
		if again, ok := decodeCursor(encodeCursor(c)); !ok || !again.UpdatedAt.Equal(c.UpdatedAt) || again.ID != c.ID {
			t.Fatalf("cursor %q does not round-trip: %+v", s, c)
		}
	})
}

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
// flushed out, with the goroutine hand-off between them.
func BenchmarkRelay(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	cs := chatStream{
		ctx: context.Background(), release: func() {}, meta: apiserver.StreamMeta{ConversationId: uuid.New(), MessageId: uuid.New(), Model: "tiny"},
		chunks: chunks(b.N, " token"), heartbeat: time.Hour, writeTimeout: time.Minute, metrics: m, start: time.Now(),
		problem: func(error) apiserver.Problem { return apiserver.Problem{} },
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
		if err := w.delta(` a "quoted" token with é`); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRelayEndsWithExactlyOneTerminalEvent(t *testing.T) {
	failing := func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) {
			if yield(provider.Chunk{Content: "a"}, nil) {
				yield(provider.Chunk{}, provider.ErrStream)
			}
		}
	}
	truncated := func(context.Context) iter.Seq2[provider.Chunk, error] {
		return func(yield func(provider.Chunk, error) bool) { yield(provider.Chunk{Content: "a"}, nil) }
	}
	tests := []struct {
		name   string
		chunks func(context.Context) iter.Seq2[provider.Chunk, error]
		want   string
	}{
		{"done", chunks(2, "x"), "meta,delta,delta,done"},
		{"upstream error", failing, "meta,delta,error"},
		{"stream ends without a final chunk", truncated, "meta,delta,error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingWriter{h: http.Header{}}
			cs := chatStream{
				ctx: context.Background(), release: func() {}, meta: apiserver.StreamMeta{Model: "tiny"}, chunks: tt.chunks,
				heartbeat: time.Hour, metrics: metrics.New(), start: time.Now(),
				problem: func(error) apiserver.Problem { return apiserver.Problem{Status: 502} },
			}
			if err := cs.VisitStreamChatResponse(rec); err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, line := range strings.Split(rec.body.String(), "\n") {
				if name, ok := strings.CutPrefix(line, "event: "); ok {
					names = append(names, name)
				}
			}
			if got := strings.Join(names, ","); got != tt.want {
				t.Errorf("events = %s, want %s", got, tt.want)
			}
		})
	}
}

type recordingWriter struct {
	h    http.Header
	body strings.Builder
}

func (r *recordingWriter) Header() http.Header         { return r.h }
func (r *recordingWriter) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recordingWriter) WriteHeader(int)             {}
func (r *recordingWriter) Flush()                      {}

func storeCursor(t time.Time, id uuid.UUID) store.ConversationCursor {
	return store.ConversationCursor{UpdatedAt: t, ID: id}
}
