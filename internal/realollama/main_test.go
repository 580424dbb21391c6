package realollama_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/realollama"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// The one Ollama the suite shares: it serves one request at a time, so the tests run one after another.
var (
	serverOnce sync.Once
	server     *realollama.Server
	serverErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if server != nil {
		if err := server.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "stop ollama: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// ollama returns the suite's Ollama, started on first use. Without DS_OLLAMA_BIN the test is skipped:
// `make test-ollama` builds the binary and sets it, and CI runs that target.
func ollama(t *testing.T) *realollama.Server {
	t.Helper()
	binary := os.Getenv(realollama.BinaryEnv)
	if binary == "" {
		t.Skipf("%s is not set: `make test-ollama` builds Ollama and runs this test against it", realollama.BinaryEnv)
	}
	serverOnce.Do(func() {
		model, err := realollama.FindModel(".")
		if err != nil {
			serverErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		server, serverErr = realollama.Start(ctx, binary, model)
	})
	if serverErr != nil {
		t.Fatalf("start ollama: %v", serverErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs := server.Logs()
			t.Logf("the end of ollama's log:\n%s", logs[max(0, len(logs)-16<<10):])
		}
	})
	return server
}

// rig is the gateway in front of the suite's Ollama, with an API key of a new user.
type rig struct {
	ollama *realollama.Server
	app    *testapp.App
	key    string
}

// newRig boots the gateway against the suite's Ollama, allowing answers long enough to be cut midway.
func newRig(t *testing.T) rig {
	t.Helper()
	o := ollama(t)
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.OllamaURL = o.URL
		c.ChatMaxPredict = 1 << 20
	}})
	_, tokens := a.NewUser(t)
	resp, err := a.Client(t, testapp.Bearer(tokens.AccessToken)).CreateAPIKeyWithResponse(context.Background(), client.NewAPIKey{Name: "real-ollama"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON201 == nil {
		t.Fatalf("create API key = %d %s", resp.StatusCode(), resp.Body)
	}
	return rig{ollama: o, app: a, key: resp.JSON201.Secret}
}

// gateway sends body to path on the gateway with the rig's key and headers as name, value pairs; the answer
// is checked against the contract.
func (r rig) gateway(t *testing.T, ctx context.Context, path, body string, headers ...string) *http.Response {
	t.Helper()
	return post(t, ctx, r.app.HTTPClient(t), r.app.URL+path, body, append(headers, "Authorization", "Bearer "+r.key)...)
}

// direct sends body to path on Ollama itself.
func (r rig) direct(t *testing.T, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	return post(t, ctx, http.DefaultClient, r.ollama.URL+path, body)
}

// post sends a JSON body and fails t unless the answer is a 200; the caller reads the answer's body.
func post(t *testing.T, ctx context.Context, c *http.Client, url, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s = %d %s", url, resp.StatusCode, b)
	}
	return resp
}

// The prompt of every chat, and its sampling: seed 42 at temperature 0 makes the answers repeatable.
const prompt = "Once upon a time"

// nativeBody is a request of the native chat routes, /v1/chat and /v1/chat/stream.
func nativeBody(numPredict int) string {
	return jsonBody(map[string]any{"model": realollama.Model, "messages": messages(), "options": options(numPredict)})
}

// ollamaChatBody is a request of /api/chat, Ollama's and the gateway's.
func ollamaChatBody(numPredict int, stream bool) string {
	return jsonBody(map[string]any{"model": realollama.Model, "messages": messages(), "options": options(numPredict), "stream": stream})
}

// generateBody is a request of /api/generate, Ollama's and the gateway's.
func generateBody(numPredict int, stream bool) string {
	return jsonBody(map[string]any{"model": realollama.Model, "prompt": prompt, "options": options(numPredict), "stream": stream})
}

// openaiBody is a request of /v1/chat/completions, Ollama's and the gateway's (/openai/v1/chat/completions).
func openaiBody(numPredict int, stream bool) string {
	return jsonBody(map[string]any{
		"model": realollama.Model, "messages": messages(), "seed": 42, "temperature": 0, "max_tokens": numPredict, "stream": stream,
	})
}

func messages() []map[string]string { return []map[string]string{{"role": "user", "content": prompt}} }

func options(numPredict int) map[string]any {
	return map[string]any{"seed": 42, "temperature": 0, "num_predict": numPredict}
}

func jsonBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings and numbers
	}
	return string(b)
}

// Kinds of chunk.
const (
	textChunk  = "text"
	metaChunk  = "meta"  // the native stream's meta event
	doneChunk  = "done"  // the answer ended well
	errorChunk = "error" // the answer ended with an error
)

// chunk is one piece of an answer, as it arrived.
type chunk struct {
	kind string
	data string // the text, for a text chunk; the JSON it came in, for the others
	at   time.Time
}

// shapes holds the fields of every answer, chunk and event the suite reads; each shape fills one of them.
type shapes struct {
	Content  string // the native stream's delta
	Response string // Ollama's generate
	Message  struct {
		Content string
	} // the native answer, Ollama's chat
	Choices []struct {
		Message struct{ Content string }
		Delta   struct{ Content string }
	} // OpenAI's completion and chunk
	Done  bool // Ollama's last line
	Error any  // an error line of Ollama's API, an error event of OpenAI's
}

func (s shapes) text() string {
	text := s.Content + s.Response + s.Message.Content
	for _, c := range s.Choices {
		text += c.Message.Content + c.Delta.Content
	}
	return text
}

// chunks reads an answer on its own goroutine, whole or streamed (native or OpenAI events, or Ollama's
// NDJSON), and sends its pieces as they arrive; the channel is closed at the end of the answer. Native events
// are checked against the contract.
func chunks(t *testing.T, resp *http.Response) <-chan chunk {
	out := make(chan chunk, 16)
	send := func(kind, data string, at time.Time) { out <- chunk{kind, data, at} }
	parse := func(data string, at time.Time) {
		var s shapes
		if err := json.Unmarshal([]byte(data), &s); err != nil {
			t.Errorf("%q is not JSON: %v", data, err)
			return
		}
		if s.Error != nil {
			send(errorChunk, data, at)
			return
		}
		if text := s.text(); text != "" {
			send(textChunk, text, at)
		}
		if s.Done {
			send(doneChunk, data, at)
		}
	}
	go func() {
		defer close(out)
		switch ct := resp.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/event-stream"):
			events, end := testapp.ReadEvents(resp.Body)
			for ev := range events {
				switch ev.Type {
				case "message": // OpenAI's
					if ev.Data == "[DONE]" {
						send(doneChunk, ev.Data, ev.At)
					} else {
						parse(ev.Data, ev.At)
					}
				case "delta":
					testapp.CheckEvent(t, ev.Event)
					parse(ev.Data, ev.At)
				default: // meta, done or error
					testapp.CheckEvent(t, ev.Event)
					send(ev.Type, ev.Data, ev.At)
				}
			}
			if e := <-end; e.Err != nil && resp.Request.Context().Err() == nil {
				t.Errorf("read the event stream: %v", e.Err)
			}
		case strings.HasPrefix(ct, "application/x-ndjson"):
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				parse(sc.Text(), time.Now())
			}
			if err := sc.Err(); err != nil && resp.Request.Context().Err() == nil {
				t.Errorf("read the NDJSON stream: %v", err)
			}
		case strings.HasPrefix(ct, "application/json"):
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("read the answer: %v", err)
				return
			}
			parse(string(b), time.Now())
			send(doneChunk, string(b), time.Now())
		default:
			t.Errorf("answer of Content-Type %q", ct)
		}
	}()
	return out
}

// answer is a whole answer, read to its end.
type answer struct {
	text  string
	texts []time.Time // when each piece of text arrived
	meta  string      // the native stream's meta event
	end   chunk       // the last chunk: done or error
}

// readAnswer reads an answer to its end, failing t unless it ended with done.
func readAnswer(t *testing.T, resp *http.Response) answer {
	t.Helper()
	a := drain(chunks(t, resp))
	if a.end.kind != doneChunk {
		t.Fatalf("the answer ended with %s %s, want done; text %q", a.end.kind, a.end.data, a.text)
	}
	return a
}

// drain reads chunks to the end.
func drain(ch <-chan chunk) answer {
	var a answer
	var text strings.Builder
	for c := range ch {
		switch c.kind {
		case textChunk:
			text.WriteString(c.data)
			a.texts = append(a.texts, c.at)
		case metaChunk:
			a.meta = c.data
		default:
			a.end = c
		}
	}
	a.text = text.String()
	return a
}

// readTexts reads text chunks until it has n of them, failing t if the answer ends first.
func readTexts(t *testing.T, ch <-chan chunk, n int) (meta, text string) {
	t.Helper()
	var b strings.Builder
	for got := 0; got < n; {
		c, ok := <-ch
		if !ok {
			t.Fatalf("the answer ended after %d pieces of text, want %d", got, n)
		}
		switch c.kind {
		case textChunk:
			b.WriteString(c.data)
			got++
		case metaChunk:
			meta = c.data
		default:
			t.Fatalf("the answer ended with %s %s after %d pieces of text, want %d", c.kind, c.data, got, n)
		}
	}
	return meta, b.String()
}
