package benche2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// ModelName is the one model the fake upstream has, on both of its APIs.
const ModelName = "bench"

// answerTokens are the content chunks of a non-streamed answer, as the recorded Ollama answer of
// internal/ollamatest has them.
var answerTokens = []string{",", " there", " was", " a", " little", " g", "ir", "l", " named", " Lily", ".", " She"}

// streamToken is every content chunk of a streamed answer.
const streamToken = " token"

// StreamShape is how the fake upstream streams: Tokens content chunks, one every Interval (the first at
// once), then the final chunk. Tokens 0 streams a chunk every Interval until the client leaves.
type StreamShape struct {
	Tokens   int
	Interval time.Duration
}

// Fake is a fast fake model server on loopback that speaks Ollama's API under /api and OpenAI's under /v1,
// with one model, ModelName. Non-streamed answers are fixed bytes written at once; streams follow the
// current StreamShape. It records nothing, so that it costs the load generator's process as little as a
// model server can.
type Fake struct {
	URL   string // the root, such as http://127.0.0.1:41234
	srv   *http.Server
	ln    net.Listener
	shape atomic.Pointer[StreamShape]

	ollamaAnswer, openaiAnswer []byte
}

// StartFake starts a Fake on 127.0.0.1, streaming as shape says until SetShape changes it.
func StartFake(shape StreamShape) (*Fake, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake upstream: listen: %w", err)
	}
	f := &Fake{URL: "http://" + ln.Addr().String(), ln: ln}
	f.shape.Store(&shape)
	content := ""
	for _, t := range answerTokens {
		content += t
	}
	f.ollamaAnswer = mustJSON(map[string]any{
		"model": ModelName, "created_at": "2026-11-25T21:25:04.190262373Z",
		"message": map[string]string{"role": "assistant", "content": content},
		"done":    true, "done_reason": "length", "total_duration": 8045444, "load_duration": 1372983,
		"prompt_eval_count": 5, "prompt_eval_duration": 1558210, "eval_count": len(answerTokens), "eval_duration": 4051801,
	})
	f.openaiAnswer = mustJSON(map[string]any{
		"id": "chatcmpl-bench", "object": "chat.completion", "created": 1764105904, "model": ModelName,
		"choices": []any{map[string]any{
			"index": 0, "message": map[string]string{"role": "assistant", "content": content}, "finish_reason": "length",
		}},
		"usage": map[string]int{"prompt_tokens": 5, "completion_tokens": len(answerTokens), "total_tokens": 5 + len(answerTokens)},
	})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/tags", f.ollamaTags)
	mux.HandleFunc("POST /api/show", f.ollamaShow)
	mux.HandleFunc("GET /api/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, []byte(`{"version":"0.17.4"}`))
	})
	mux.HandleFunc("POST /api/chat", f.ollamaChat)
	mux.HandleFunc("GET /v1/models", f.openaiModels)
	mux.HandleFunc("POST /v1/chat/completions", f.openaiChat)
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// SetShape changes how later streams are sent.
func (f *Fake) SetShape(s StreamShape) { f.shape.Store(&s) }

// Close stops the server at once, ending the streams in flight.
func (f *Fake) Close() error { return f.srv.Close() }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func writeJSON(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	_, _ = w.Write(body)
}

func (f *Fake) ollamaTags(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, mustJSON(map[string]any{"models": []any{map[string]any{
		"name": ModelName + ":latest", "model": ModelName + ":latest", "modified_at": "2026-11-25T21:25:03.746828622Z",
		"size": 1185764, "digest": "e0ef374bba5b123ce5170587954f61a631e2ba62b9d20f5291e3f17af4e727de",
		"details": map[string]any{
			"parent_model": "", "format": "gguf", "family": "llama", "families": []string{"llama"},
			"parameter_size": "293K", "quantization_level": "unknown",
		},
	}}}))
}

func (f *Fake) ollamaShow(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, mustJSON(map[string]any{
		"parameters": "num_ctx 512", "template": "{{ .Prompt }}",
		"details": map[string]any{
			"parent_model": "", "format": "gguf", "family": "llama", "families": []string{"llama"},
			"parameter_size": "293K", "quantization_level": "unknown",
		},
		"model_info":   map[string]any{"general.architecture": "llama", "llama.context_length": 2048},
		"capabilities": []string{"completion"},
		"modified_at":  "2026-11-25T21:25:03.746828622Z",
	}))
}

func (f *Fake) openaiModels(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, mustJSON(map[string]any{"object": "list", "data": []any{map[string]any{
		"id": ModelName, "object": "model", "created": 1764105903, "owned_by": "bench",
	}}}))
}

// streamed reads a chat request's body and reports whether it asks for a stream; Ollama streams unless
// told not to, OpenAI only when told to.
func streamed(r *http.Request, byDefault bool) (bool, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return false, err
	}
	var req struct {
		Stream *bool `json:"stream"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return false, err
	}
	if req.Stream == nil {
		return byDefault, nil
	}
	return *req.Stream, nil
}

func (f *Fake) ollamaChat(w http.ResponseWriter, r *http.Request) {
	stream, err := streamed(r, true)
	if err != nil {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	if !stream {
		writeJSON(w, f.ollamaAnswer)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	chunk := []byte(`{"model":"` + ModelName + `","created_at":"2026-11-25T21:25:04.161522898Z","message":{"role":"assistant","content":"` + streamToken + `"},"done":false}` + "\n")
	n := f.stream(w, r, chunk)
	final := fmt.Sprintf(`{"model":%q,"created_at":"2026-11-25T21:25:04.165867644Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":11480547,"load_duration":2846146,"prompt_eval_count":5,"prompt_eval_duration":1640722,"eval_count":%d,"eval_duration":5330604}`+"\n", ModelName, n)
	_, _ = io.WriteString(w, final)
}

func (f *Fake) openaiChat(w http.ResponseWriter, r *http.Request) {
	stream, err := streamed(r, false)
	if err != nil {
		http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
		return
	}
	if !stream {
		writeJSON(w, f.openaiAnswer)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	const head = `{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1764105904,"model":"` + ModelName + `","choices":[`
	chunk := []byte("data: " + head + `{"index":0,"delta":{"content":"` + streamToken + `"},"finish_reason":null}]}` + "\n\n")
	n := f.stream(w, r, chunk)
	final := "data: " + head + `{"index":0,"delta":{},"finish_reason":"length"}]}` + "\n\n" +
		"data: " + head + fmt.Sprintf(`],"usage":{"prompt_tokens":5,"completion_tokens":%d,"total_tokens":%d}}`, n, n+5) + "\n\n" +
		"data: [DONE]\n\n"
	_, _ = io.WriteString(w, final)
}

// stream writes chunk as the current shape says, flushing each, and returns how many it wrote; it stops
// early when the client leaves.
func (f *Fake) stream(w http.ResponseWriter, r *http.Request, chunk []byte) int {
	shape := *f.shape.Load()
	rc := http.NewResponseController(w)
	var t *time.Timer
	n := 0
	for shape.Tokens == 0 || n < shape.Tokens {
		if n > 0 && shape.Interval > 0 {
			if t == nil {
				t = time.NewTimer(shape.Interval)
				defer t.Stop()
			} else {
				t.Reset(shape.Interval)
			}
			select {
			case <-t.C:
			case <-r.Context().Done():
				return n
			}
		}
		if _, err := w.Write(chunk); err != nil {
			return n
		}
		if err := rc.Flush(); err != nil {
			return n
		}
		n++
	}
	return n
}
