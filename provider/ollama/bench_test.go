package ollama_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/deepersensor/deepersensor/provider/ollama"
)

// BenchmarkChatStream streams a 200-token answer through ChatStream over real HTTP on loopback: the whole
// upstream path of a streamed token (the server's flushed writes, chunked framing, reading, decoding and
// yielding). The server sends the lines of the recording chat_stream, its content lines repeated. With
// -cpu 1 the server and the client take turns on one thread, so ns/token is the CPU cost of a token, the
// server's share included.
func BenchmarkChatStream(b *testing.B) {
	const tokens = 200
	body := recordedStream(b, tokens)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		rc := http.NewResponseController(w)
		for _, line := range body {
			if _, err := w.Write(line); err != nil {
				return
			}
			_ = rc.Flush() // Ollama flushes every line
		}
	}))
	b.Cleanup(srv.Close)
	c := ollama.New(ollama.Config{BaseURL: srv.URL})

	b.ReportAllocs()
	for b.Loop() {
		n := 0
		for chunk, err := range c.ChatStream(b.Context(), story) {
			if err != nil {
				b.Fatal(err)
			}
			if !chunk.Done {
				n++
			}
		}
		if n != tokens {
			b.Fatalf("%d tokens, want %d", n, tokens)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
}

// recordedStream returns the NDJSON lines of the recording chat_stream with its content lines repeated up
// to n, then its final line.
func recordedStream(tb testing.TB, n int) [][]byte {
	tb.Helper()
	raw, err := os.ReadFile("../../internal/ollamatest/testdata/chat_stream.http")
	if err != nil {
		tb.Fatal(err)
	}
	_, recorded, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var content [][]byte
	var final []byte
	for line := range bytes.Lines(recorded) {
		if bytes.Contains(line, []byte(`"done":true`)) {
			final = line
		} else if len(bytes.TrimSpace(line)) > 0 {
			content = append(content, line)
		}
	}
	if len(content) == 0 || final == nil {
		tb.Fatal("chat_stream.http holds no content lines or no final line")
	}
	lines := make([][]byte, 0, n+1)
	for i := range n {
		lines = append(lines, content[i%len(content)])
	}
	return append(lines, final)
}
