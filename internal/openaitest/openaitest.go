// Package openaitest runs a fake OpenAI-compatible model server for tests, speaking the wire format of the
// OpenAI API as OpenAI, vLLM, llama.cpp's server and Ollama's /v1 do: GET /v1/models, POST
// /v1/chat/completions (one chat.completion object, or Server-Sent Events of chat.completion.chunk objects
// ending with "data: [DONE]", with a usage chunk when stream_options.include_usage asks for one) and POST
// /v1/embeddings, every failure as OpenAI's error object. It can require an API key, load slowly, emit
// slowly, stall, fail in the middle of a stream or fail outright; it records the requests it receives and
// counts those whose client went away before the answer was complete.
package openaitest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/fakeserver"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
)

// Options configure a Server. The zero value serves the model "gpt-tiny" and streams DefaultTokens.
type Options struct {
	// Models are the ids of the models the server has; nil means []string{"gpt-tiny"}.
	Models []string
	// Tokens are the content chunks of every chat answer; nil means DefaultTokens.
	Tokens []string
	// FinishReason is the finish_reason of every answer; empty means "stop".
	FinishReason string
	// APIKey, when set, is the key every request must bear ("Authorization: Bearer <APIKey>"); others get
	// 401 with an error whose message quotes the key they sent, as a careless server would.
	APIKey string
	// InitialDelay is waited before the status line of every chat and embeddings answer, as while the
	// server loads a model or queues the request.
	InitialDelay time.Duration
	// ChunkDelay is waited before every content chunk after the first and before the finish chunk. A
	// non-streamed answer waits as long in total.
	ChunkDelay time.Duration
	// Fault, if not nil, breaks every chat answer.
	Fault *Fault
	// Status, if not zero, is the status of every /v1/ answer, with an error object whose message is
	// StatusMessage (the status text when empty).
	Status        int
	StatusMessage string
}

// DefaultTokens are the content chunks of a chat answer when Options.Tokens is nil.
var DefaultTokens = []string{"Hello", ",", " world", "!"}

// Fault breaks a chat answer after After content chunks have been sent. If Error is not empty, the stream
// sends an event holding an error object with that message, then "data: [DONE]", without a finish chunk,
// and a non-streamed chat answers 500 with it. If Error is empty, the server stalls: it sends nothing more
// and keeps the connection open until the client goes away or the Server is closed.
type Fault = fakeserver.Fault

// Request is a request the Server received; Chat is the decoded body of a POST /v1/chat/completions.
type Request = fakeserver.Request[ChatRequest]

// ChatRequest is the part of a chat completions request the fake understands; absent fields are nil.
type ChatRequest struct {
	Model         string         `json:"model"`
	Messages      []Message      `json:"messages"`
	Stream        bool           `json:"stream"`
	StreamOptions *StreamOptions `json:"stream_options"`
	Temperature   *float64       `json:"temperature"`
	TopP          *float64       `json:"top_p"`
	Seed          *int           `json:"seed"`
	Stop          any            `json:"stop"`
	MaxTokens     *int           `json:"max_tokens"`
}

// StreamOptions are a streamed request's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Message is one message of a chat request or answer.
type Message = fakeserver.Message

// Server is a running fake OpenAI-compatible server listening on 127.0.0.1. Its Requests, ChatRequests (of
// POST /v1/chat/completions), Cancelled, WaitCancelled and Close come from fakeserver.Base; its URL is the
// root, without /v1.
type Server struct {
	fakeserver.Base[ChatRequest]

	opts Options
	ids  atomic.Int64 // numbers the completions
}

// New starts a Server that is closed when the test ends.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	if opts.Models == nil {
		opts.Models = []string{"gpt-tiny"}
	}
	if opts.Tokens == nil {
		opts.Tokens = DefaultTokens
	}
	if opts.FinishReason == "" {
		opts.FinishReason = "stop"
	}
	if opts.Status != 0 && opts.StatusMessage == "" {
		opts.StatusMessage = http.StatusText(opts.Status)
	}
	s := &Server{opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("POST /v1/embeddings", s.embeddings)
	s.Start(tb, "/v1/chat/completions", s.refuse(mux))
	return s
}

// BaseURL is the root of the API, as a client is configured with it: URL + "/v1".
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// refuse applies Options.APIKey and Options.Status.
func (s *Server) refuse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); s.opts.APIKey != "" && key != s.opts.APIKey {
			writeError(w, http.StatusUnauthorized, "invalid_api_key", fmt.Sprintf("Incorrect API key provided: %s.", key))
			return
		}
		if s.opts.Status != 0 && strings.HasPrefix(r.URL.Path, "/v1/") {
			writeError(w, s.opts.Status, "", s.opts.StatusMessage)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// created is the creation time the fake gives its models and answers.
var created = time.Date(2026, 11, 25, 21, 25, 3, 0, time.UTC).Unix()

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	data := make([]model, len(s.opts.Models))
	for i, id := range s.opts.Models {
		data[i] = model{ID: id, Object: "model", Created: created, OwnedBy: "openaitest"}
	}
	writeJSON(w, http.StatusOK, struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{"list", data})
}

// usage is the usage object of answers.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// choice is one choice of an answer: Message in a chat.completion, Delta in a chunk.
type choice struct {
	Index        int             `json:"index"`
	Message      *answerMessage  `json:"message,omitempty"`
	Delta        *answerMessage  `json:"delta,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type answerMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal *string `json:"refusal,omitempty"`
}

// completion is a chat.completion or a chat.completion.chunk, with OpenAI's field order. Usage is
// omitted, or null on the chunks of a stream that asked for usage.
type completion struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []choice        `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

var null = json.RawMessage("null")

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req ChatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		if errors.Is(err, io.EOF) {
			err = errors.New("we could not parse the JSON body of your request")
		}
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	if !s.checkModel(w, req.Model) {
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, http.StatusBadRequest, "", "[] is too short - 'messages'")
		return
	}
	ctx := r.Context()
	if !s.Wait(ctx, s.opts.InitialDelay) {
		return
	}
	tokens := s.opts.Fault.Sent(s.opts.Tokens)
	prompt := 0
	for _, m := range req.Messages {
		prompt += len(strings.Fields(m.Content))
	}
	u := usage{PromptTokens: prompt, CompletionTokens: len(tokens), TotalTokens: prompt + len(tokens)}
	base := completion{ID: fmt.Sprintf("chatcmpl-%d", s.ids.Add(1)), Created: created, Model: req.Model, SystemFingerprint: "fp_openaitest"}
	if req.Stream {
		s.stream(w, r, base, tokens, u, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}

	if !s.Wait(ctx, time.Duration(len(tokens))*s.opts.ChunkDelay) ||
		s.Break(ctx, s.opts.Fault, func(msg string) { writeError(w, http.StatusInternalServerError, "", msg) }) {
		return
	}
	text := strings.Join(tokens, "")
	base.Object = "chat.completion"
	base.Choices = []choice{{Message: &answerMessage{Role: "assistant", Content: &text}, Logprobs: null, FinishReason: &s.opts.FinishReason}}
	base.Usage, _ = json.Marshal(u)
	writeJSON(w, http.StatusOK, base)
}

// stream sends the answer as Server-Sent Events, each flushed: a first chunk with the role, a chunk per
// token, a finish chunk, the usage chunk when asked for, then "data: [DONE]"; or the fault.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, base completion, tokens []string, u usage, withUsage bool) {
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	base.Object = "chat.completion.chunk"
	if withUsage {
		base.Usage = null
	}
	chunk := func(delta answerMessage, finish *string) completion {
		c := base
		c.Choices = []choice{{Delta: &delta, Logprobs: null, FinishReason: finish}}
		return c
	}
	empty := ""
	if !s.event(w, chunk(answerMessage{Role: "assistant", Content: &empty}, nil)) {
		return
	}
	for i, tok := range tokens {
		if i > 0 && !s.Wait(ctx, s.opts.ChunkDelay) {
			return
		}
		if !s.event(w, chunk(answerMessage{Content: &tok}, nil)) {
			return
		}
	}
	if s.Break(ctx, s.opts.Fault, func(msg string) {
		if s.event(w, errorObject{Error: errorDetail{Message: msg, Type: "server_error"}}) {
			s.Send(w, []byte("data: [DONE]\n\n"))
		}
	}) {
		return
	}
	if len(tokens) > 0 && !s.Wait(ctx, s.opts.ChunkDelay) {
		return
	}
	if !s.event(w, chunk(answerMessage{}, &s.opts.FinishReason)) {
		return
	}
	if withUsage {
		last := base
		last.Choices = []choice{}
		last.Usage, _ = json.Marshal(u)
		if !s.event(w, last) {
			return
		}
	}
	s.Send(w, []byte("data: [DONE]\n\n"))
}

// event sends v as one "data:" event and flushes it. It reports false if the client has gone away.
func (s *Server) event(w http.ResponseWriter, v any) bool {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return s.Send(w, []byte("data: "+string(data)+"\n\n"))
}

// checkModel answers 400 for a missing model and 404 for an unknown one, as OpenAI does, and reports
// whether the model is known.
func (s *Server) checkModel(w http.ResponseWriter, model string) bool {
	switch {
	case model == "":
		writeError(w, http.StatusBadRequest, "", "you must provide a model parameter")
		return false
	case !slices.Contains(s.opts.Models, model):
		writeError(w, http.StatusNotFound, "model_not_found",
			fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", model))
		return false
	}
	return true
}

// embeddings answers POST /v1/embeddings, whose input is one text or a list of them, with the vectors of
// ollamatest.Embedding.
func (s *Server) embeddings(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model string          `json:"model"`
		Input json.RawMessage `json:"input"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "", err.Error())
		return
	}
	var inputs []string
	var one string
	if json.Unmarshal(req.Input, &one) == nil {
		inputs = []string{one}
	} else if json.Unmarshal(req.Input, &inputs) != nil || len(inputs) == 0 {
		writeError(w, http.StatusBadRequest, "", "'input' must be a string or a non-empty array of strings")
		return
	}
	if !s.checkModel(w, req.Model) || !s.Wait(r.Context(), s.opts.InitialDelay) {
		return
	}
	type embedding struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float64 `json:"embedding"`
	}
	data := make([]embedding, len(inputs))
	words := 0
	for i, text := range inputs {
		data[i] = embedding{Object: "embedding", Index: i, Embedding: ollamatest.Embedding(req.Model, text)}
		words += len(strings.Fields(text))
	}
	writeJSON(w, http.StatusOK, struct {
		Object string      `json:"object"`
		Data   []embedding `json:"data"`
		Model  string      `json:"model"`
		Usage  any         `json:"usage"`
	}{"list", data, req.Model, struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	}{words, words}})
}

// errorObject is OpenAI's error body: all four keys always present, param and code null when unset.
type errorObject struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// writeError answers status with an error object of the type OpenAI gives that status; code may be empty.
func writeError(w http.ResponseWriter, status int, code, message string) {
	typ := "invalid_request_error"
	switch {
	case status == http.StatusTooManyRequests:
		typ = "requests"
	case status >= 500:
		typ = "server_error"
	}
	e := errorObject{Error: errorDetail{Message: message, Type: typ}}
	if code != "" {
		e.Error.Code = &code
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
