// Package ollamatest runs a fake Ollama server for tests. It answers POST /api/chat (streamed and not),
// GET /api/tags, POST /api/show and GET / with the headers, field order and error bodies recorded from a
// real Ollama v0.17.4 (testdata/ holds the recordings), and POST /api/embed with Ollama's shape and
// deterministic vectors (see Embedding); it can be told to load slowly, emit slowly, stall, fail in the
// middle of a stream or fail outright, and to break its answers as a crashing or faulty server does (see
// Break and Endless). It records the requests it receives and counts those whose client went away before
// the answer was complete.
package ollamatest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/fakeserver"
)

// Options configure a Server. The zero value serves the model Tiny and streams the recorded tokens.
type Options struct {
	// Models are the models the server has; nil means []Model{Tiny()}.
	Models []Model
	// Tokens are the content chunks of every chat answer; nil means the tokens of the recording
	// chat_stream: ", there was a little girl named Lily. She" in 12 pieces.
	Tokens []string
	// DoneReason is the final chunk's done_reason; empty means "stop".
	DoneReason string
	// InitialDelay is waited before the status line of every chat and embed answer, as while Ollama loads a
	// model or queues the request.
	InitialDelay time.Duration
	// ChunkDelay is waited before every chat chunk after the first, the final one included. A non-streamed
	// answer waits as long in total.
	ChunkDelay time.Duration
	// Fault, if not nil, breaks every chat answer.
	Fault *Fault
	// Status, if not zero, is the status of every /api/ answer, with the body {"error": StatusMessage}.
	Status int
	// ChatStatus, if not zero, is the status of every /api/chat answer, with the body {"error": StatusMessage},
	// while the other routes answer as usual: Ollama answers 500 so when a model's runner fails to start.
	ChatStatus int
	// StatusMessage is the error message sent with Status or ChatStatus; empty means the status text in lower
	// case.
	StatusMessage string
	// Break, if not nil, breaks every chat answer in one of the ways that Fault does not describe.
	Break *Break
	// Endless makes every streamed chat answer go on for ever: the tokens over and over, ChunkDelay apart,
	// and never a final chunk, until the client goes away or the Server is closed. A non-streamed answer
	// never comes.
	Endless bool
}

// Break breaks a chat answer as How says: a streamed answer after After content chunks have been sent.
type Break struct {
	After int
	How   BreakKind
}

// BreakKind is a way of breaking a chat answer.
type BreakKind int

const (
	// Disconnect closes the connection without the final chunk and without ending the chunked body, as when
	// the Ollama process is killed. A non-streamed answer is cut off in the middle of its JSON object.
	Disconnect BreakKind = iota + 1
	// MalformedLine sends a line that is not JSON (an object cut short), then the rest of the answer as usual.
	// A non-streamed answer is such an object.
	MalformedLine
	// HugeLine sends one content chunk of HugeLineSize bytes of content, on one line, then the rest of the
	// answer as usual. A non-streamed answer holds that content before its own.
	HugeLine
)

// HugeLineSize is the content size of the chunk that HugeLine sends: 10 MiB.
const HugeLineSize = 10 << 20

// Fault breaks a chat answer after After content chunks have been sent. If Error is not empty, the stream
// ends with an {"error": Error} line and no final chunk, as when Ollama's runner dies mid-stream
// (recording chat_runner_killed_midstream), and a non-streamed chat answers 500 with that error. If Error is
// empty, the server stalls: it sends nothing more and keeps the connection open until the client goes away
// or the Server is closed.
type Fault = fakeserver.Fault

// Model is a model the fake server has, as listed by /api/tags and described by /api/show.
type Model struct {
	Name              string // with its tag, e.g. "tiny:latest"; requests may leave out ":latest"
	Size              int64
	Digest            string
	ModifiedAt        time.Time
	Format            string
	Family            string // also the architecture in /api/show's model_info
	ParameterSize     string
	QuantizationLevel string
	ContextLength     int // "<family>.context_length" in /api/show's model_info; zero leaves it out
	Capabilities      []string
	Parameters        string // /api/show's "parameters"
	Template          string
}

// Tiny returns the model of the recordings: a 1.1 MiB llama model named "tiny:latest".
func Tiny() Model {
	return Model{
		Name:              "tiny:latest",
		Size:              1185764,
		Digest:            "e0ef374bba5b123ce5170587954f61a631e2ba62b9d20f5291e3f17af4e727de",
		ModifiedAt:        time.Date(2026, 11, 25, 21, 25, 3, 746828622, time.UTC),
		Format:            "gguf",
		Family:            "llama",
		ParameterSize:     "293K",
		QuantizationLevel: "unknown",
		ContextLength:     2048,
		Capabilities:      []string{"completion"},
		Parameters: "num_ctx                        512\n" +
			"num_predict                    48\n" +
			"num_thread                     1",
		Template: "{{ .Prompt }}",
	}
}

var defaultTokens = []string{",", " there", " was", " a", " little", " g", "ir", "l", " named", " Lily", ".", " She"}

// Request is a request the Server received; Chat is the decoded body of a POST /api/chat.
type Request = fakeserver.Request[ChatRequest]

// ChatRequest is the part of an /api/chat request body the fake understands.
type ChatRequest struct {
	Model     string          `json:"model"`
	Messages  []Message       `json:"messages"`
	Stream    *bool           `json:"stream,omitempty"` // nil means true, as in Ollama
	Options   map[string]any  `json:"options,omitempty"`
	KeepAlive json.RawMessage `json:"keep_alive,omitempty"`
}

// Message is one message of a chat request or answer.
type Message = fakeserver.Message

// Server is a running fake Ollama server listening on 127.0.0.1. Its URL, Requests, ChatRequests (of
// POST /api/chat), Cancelled, WaitCancelled and Close come from fakeserver.Base.
type Server struct {
	fakeserver.Base[ChatRequest]

	opts Options
}

// New starts a Server that is closed when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Models == nil {
		opts.Models = []Model{Tiny()}
	}
	if opts.Tokens == nil {
		opts.Tokens = defaultTokens
	}
	if opts.Endless && len(opts.Tokens) == 0 {
		tb.Fatal("ollamatest: Endless needs Tokens to repeat")
	}
	if opts.DoneReason == "" {
		opts.DoneReason = "stop"
	}
	if status := cmp.Or(opts.Status, opts.ChatStatus); status != 0 && opts.StatusMessage == "" {
		opts.StatusMessage = strings.ToLower(http.StatusText(status))
	}
	s := &Server{opts: opts}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.root)
	mux.HandleFunc("POST /api/chat", s.chat)
	mux.HandleFunc("GET /api/tags", s.tags)
	mux.HandleFunc("POST /api/show", s.show)
	mux.HandleFunc("POST /api/embed", s.embed)
	s.Start(tb, "/api/chat", s.refuse(mux))
	return s
}

// refuse applies Options.Status to every /api/ request, and Options.ChatStatus to /api/chat.
func (s *Server) refuse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Status != 0 && strings.HasPrefix(r.URL.Path, "/api/") {
			writeError(w, s.opts.Status, s.opts.StatusMessage)
			return
		}
		if s.opts.ChatStatus != 0 && r.URL.Path == "/api/chat" {
			writeError(w, s.opts.ChatStatus, s.opts.StatusMessage)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) root(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "Ollama is running")
}

// chatChunk is one object of an /api/chat answer, with Ollama's field order and omitted zero counters.
type chatChunk struct {
	Model              string    `json:"model"`
	CreatedAt          time.Time `json:"created_at"`
	Message            Message   `json:"message"`
	Done               bool      `json:"done"`
	DoneReason         string    `json:"done_reason,omitempty"`
	TotalDuration      int64     `json:"total_duration,omitempty"`
	LoadDuration       int64     `json:"load_duration,omitempty"`
	PromptEvalCount    int       `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64     `json:"prompt_eval_duration,omitempty"`
	EvalCount          int       `json:"eval_count,omitempty"`
	EvalDuration       int64     `json:"eval_duration,omitempty"`
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req ChatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "missing request body")
		} else {
			writeError(w, http.StatusBadRequest, err.Error())
		}
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	if _, ok := s.model(req.Model); !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	ctx := r.Context()
	if !s.Wait(ctx, s.opts.InitialDelay) {
		return
	}
	if len(req.Messages) == 0 {
		// Ollama loads the model (or, with keep_alive 0, unloads it) and answers in one JSON object.
		reason := "load"
		if string(req.KeepAlive) == "0" {
			reason = "unload"
		}
		writeJSON(w, http.StatusOK, chatChunk{Model: req.Model, CreatedAt: now(), Message: assistant(""), Done: true, DoneReason: reason})
		return
	}

	tokens := s.opts.Fault.Sent(s.opts.Tokens)
	final := chatChunk{
		Model:           req.Model,
		Message:         assistant(""),
		Done:            true,
		DoneReason:      s.opts.DoneReason,
		LoadDuration:    elapsed(start),
		PromptEvalCount: promptTokens(req.Messages),
		EvalCount:       len(tokens),
	}
	promptStart := time.Now()
	if req.Stream == nil || *req.Stream {
		s.stream(w, r, final, tokens, promptStart, start)
		return
	}

	if !s.Wait(ctx, time.Duration(len(tokens))*s.opts.ChunkDelay) ||
		s.Break(ctx, s.opts.Fault, func(msg string) { writeError(w, http.StatusInternalServerError, msg) }) {
		return
	}
	if s.opts.Endless {
		s.Stall(ctx)
		return
	}
	final.CreatedAt = now()
	final.Message.Content = strings.Join(tokens, "")
	final.PromptEvalDuration = elapsed(promptStart)
	final.EvalDuration = elapsed(promptStart)
	final.TotalDuration = elapsed(start)
	if s.opts.Break != nil {
		breakAnswer(w, s.opts.Break.How, final)
		return
	}
	writeJSON(w, http.StatusOK, final)
}

// stream sends tokens one NDJSON line each, flushed one by one, then the final chunk or the fault; with
// Endless, it sends them over and over.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, final chatChunk, tokens []string, promptStart, start time.Time) {
	ctx := r.Context()
	w.Header().Set("Content-Type", "application/x-ndjson")
	brk := s.opts.Break
	var evalStart time.Time
	for i := 0; i < len(tokens) || s.opts.Endless; i++ {
		if i > 0 && !s.Wait(ctx, s.opts.ChunkDelay) {
			return
		}
		if i == 0 {
			final.PromptEvalDuration = elapsed(promptStart)
			evalStart = time.Now()
		}
		if brk != nil && i == brk.After && !s.breakStream(w, brk.How, final.Model) {
			return
		}
		if !s.writeLine(w, chatChunk{Model: final.Model, CreatedAt: now(), Message: assistant(tokens[i%len(tokens)])}) {
			return
		}
	}
	if brk != nil && brk.After >= len(tokens) && !s.breakStream(w, brk.How, final.Model) {
		return
	}
	if s.Break(ctx, s.opts.Fault, func(msg string) { s.writeLine(w, errorBody{Error: msg}) }) {
		return
	}
	if len(tokens) > 0 {
		if !s.Wait(ctx, s.opts.ChunkDelay) {
			return
		}
		final.EvalDuration = elapsed(evalStart)
	}
	final.CreatedAt = now()
	final.TotalDuration = elapsed(start)
	s.writeLine(w, final)
}

// breakStream breaks a streamed answer as how says, and reports whether the rest of the answer should follow.
func (s *Server) breakStream(w http.ResponseWriter, how BreakKind, model string) bool {
	switch how {
	case Disconnect:
		panic(http.ErrAbortHandler) // net/http closes the connection, without the end of the chunked body
	case MalformedLine:
		return s.Send(w, []byte(`{"model":"`+model+`","created_at":"`+now().Format(time.RFC3339Nano)+`","message":{"role":"assis`+"\n"))
	case HugeLine:
		line := withHugeContent(chatChunk{Model: model, CreatedAt: now(), Message: assistant("")})
		return s.Send(w, append(line, '\n'))
	}
	panic(fmt.Sprintf("ollamatest: unknown BreakKind %d", how))
}

// breakAnswer writes final, a non-streamed answer, broken as how says.
func breakAnswer(w http.ResponseWriter, how BreakKind, final chatChunk) {
	body, err := json.Marshal(final)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	switch how {
	case HugeLine:
		_, _ = w.Write(withHugeContent(final))
	case Disconnect:
		// The whole length is announced, half the body sent, and the connection closed.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:len(body)/2])
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	case MalformedLine:
		_, _ = w.Write(body[:len(body)/2])
	default:
		panic(fmt.Sprintf("ollamatest: unknown BreakKind %d", how))
	}
}

// withHugeContent returns the JSON of c with HugeLineSize bytes of "x" before its content. They are spliced
// in rather than encoded: encoding 10 MiB takes seconds under the race detector.
func withHugeContent(c chatChunk) []byte {
	body, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	const key = `"content":"`
	at := bytes.Index(body, []byte(key)) + len(key)
	return slices.Concat(body[:at], bytes.Repeat([]byte("x"), HugeLineSize), body[at:])
}

// writeLine sends v as one NDJSON line and flushes it. It reports false if the client has gone away.
func (s *Server) writeLine(w http.ResponseWriter, v any) bool {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return s.Send(w, append(line, '\n'))
}

// model finds a model by name, with or without its ":latest" tag.
func (s *Server) model(name string) (Model, bool) {
	for _, m := range s.opts.Models {
		if m.Name == name || m.Name == name+":latest" {
			return m, true
		}
	}
	return Model{}, false
}

// details is the "details" object of /api/tags and /api/show.
type details struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

func (m Model) details() details {
	return details{
		Format:            m.Format,
		Family:            m.Family,
		Families:          []string{m.Family},
		ParameterSize:     m.ParameterSize,
		QuantizationLevel: m.QuantizationLevel,
	}
}

func (s *Server) tags(w http.ResponseWriter, _ *http.Request) {
	type entry struct {
		Name       string    `json:"name"`
		Model      string    `json:"model"`
		ModifiedAt time.Time `json:"modified_at"`
		Size       int64     `json:"size"`
		Digest     string    `json:"digest"`
		Details    details   `json:"details"`
	}
	models := make([]entry, 0, len(s.opts.Models))
	for _, m := range s.opts.Models {
		models = append(models, entry{Name: m.Name, Model: m.Name, ModifiedAt: m.ModifiedAt, Size: m.Size, Digest: m.Digest, Details: m.details()})
	}
	writeJSON(w, http.StatusOK, struct {
		Models []entry `json:"models"`
	}{models})
}

func (s *Server) show(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string `json:"model"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	m, ok := s.model(req.Model)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model '%s' not found", req.Model))
		return
	}
	info := map[string]any{"general.architecture": m.Family}
	if m.ContextLength != 0 {
		info[m.Family+".context_length"] = m.ContextLength
	}
	// A real model's answer lists hundreds of tensors and so is always chunked; flush to frame it the same.
	defer func() { _ = http.NewResponseController(w).Flush() }()
	writeJSON(w, http.StatusOK, struct {
		Modelfile    string         `json:"modelfile"`
		Parameters   string         `json:"parameters"`
		Template     string         `json:"template"`
		Details      details        `json:"details"`
		ModelInfo    map[string]any `json:"model_info"`
		Tensors      []struct{}     `json:"tensors"`
		Capabilities []string       `json:"capabilities"`
		ModifiedAt   time.Time      `json:"modified_at"`
	}{
		Modelfile:    fmt.Sprintf("# Modelfile generated by \"ollama show\"\nFROM %s\nTEMPLATE %s\n", m.Name, m.Template),
		Parameters:   m.Parameters,
		Template:     m.Template,
		Details:      m.details(),
		ModelInfo:    info,
		Tensors:      []struct{}{},
		Capabilities: m.Capabilities,
		ModifiedAt:   m.ModifiedAt,
	})
}

// EmbeddingSize is the length of the fake's embedding vectors.
const EmbeddingSize = 8

// Embedding returns the vector the fake gives text embedded by the model listed as model (such as
// "tiny:latest"): EmbeddingSize numbers derived from a hash of both, the same every time, of length 1 as
// Ollama's are.
func Embedding(model, text string) []float64 {
	v := make([]float64, EmbeddingSize)
	var norm float64
	for i := range v {
		h := fnv.New64a()
		_, _ = fmt.Fprintf(h, "%s\x00%s\x00%d", model, text, i)
		v[i] = float64(h.Sum64())/math.MaxUint64*2 - 1
		norm += v[i] * v[i]
	}
	for i := range v {
		v[i] /= math.Sqrt(norm)
	}
	return v
}

// embed answers POST /api/embed, whose input is one text or a list of them, as Ollama does.
func (s *Server) embed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var inputs []string
	var one string
	if json.Unmarshal(req.Input, &one) == nil {
		inputs = []string{one}
	} else if len(req.Input) > 0 && json.Unmarshal(req.Input, &inputs) != nil {
		writeError(w, http.StatusBadRequest, "invalid input type")
		return
	}
	if req.Model == "" {
		writeError(w, http.StatusBadRequest, "model is required")
		return
	}
	m, ok := s.model(req.Model)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q not found, try pulling it first", req.Model))
		return
	}
	if !s.Wait(r.Context(), s.opts.InitialDelay) {
		return
	}
	vectors := make([][]float64, len(inputs))
	words := 0
	for i, text := range inputs {
		vectors[i] = Embedding(m.Name, text)
		words += len(strings.Fields(text))
	}
	writeJSON(w, http.StatusOK, struct {
		Model           string      `json:"model"`
		Embeddings      [][]float64 `json:"embeddings"`
		TotalDuration   int64       `json:"total_duration"`
		LoadDuration    int64       `json:"load_duration"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}{req.Model, vectors, elapsed(start), elapsed(start), words})
}

type errorBody struct {
	Error string `json:"error"`
}

// writeJSON answers like Ollama's JSON answers: no trailing newline, and net/http adds Content-Length to
// short bodies and chunks long ones.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func assistant(content string) Message { return Message{Role: "assistant", Content: content} }

func now() time.Time { return time.Now().UTC() }

// elapsed is time.Since(t) in nanoseconds, at least 1 so that Ollama's always-present durations are not
// omitted as zero.
func elapsed(t time.Time) int64 { return max(int64(time.Since(t)), 1) }

// promptTokens stands in for the prompt's token count: the number of words in the messages.
func promptTokens(msgs []Message) int {
	n := 0
	for _, m := range msgs {
		n += len(strings.Fields(m.Content))
	}
	return n
}
