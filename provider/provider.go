// Package provider defines the model types and the Provider interface through which the gateway talks to a
// model server, and builds the errors every provider reports, so that the chat service never depends on one
// server's wire format.
package provider

import (
	"context"
	"iter"
	"strings"
	"time"
)

// Message roles understood by every provider.
const (
	// RoleSystem is the role of instructions that frame the conversation.
	RoleSystem = "system"
	// RoleUser is the role of the person chatting.
	RoleUser = "user"
	// RoleAssistant is the role of the model's own earlier answers.
	RoleAssistant = "assistant"
)

// Message is one turn of a conversation sent to or received from a model.
type Message struct {
	Role    string // RoleSystem, RoleUser or RoleAssistant
	Content string
}

// ChatRequest asks a model to continue a conversation.
type ChatRequest struct {
	Model    string
	Messages []Message
	// Options are model parameters passed through to the model server as they are (temperature, seed,
	// num_predict, stop, ...). The server validates them.
	Options map[string]any
}

// Usage reports what one generation cost, as measured by the model server.
type Usage struct {
	PromptTokens       int
	CompletionTokens   int
	TotalDuration      time.Duration
	LoadDuration       time.Duration
	PromptEvalDuration time.Duration
	EvalDuration       time.Duration
}

// Chunk is one piece of a streamed answer. Model, Done, DoneReason and Usage are set only on the final chunk.
type Chunk struct {
	// Model is the model that answered: the one asked for, unless a fallback answered in its place.
	Model      string
	Content    string
	Done       bool
	DoneReason string // "stop" or "length", as the model server reports it
	Usage      Usage
}

// ChatResponse is a complete, non-streamed answer.
type ChatResponse struct {
	// Model is the model that answered: the one asked for, unless a fallback answered in its place.
	Model      string
	Content    string
	DoneReason string
	Usage      Usage
}

// EmbedRequest asks a model for one embedding vector per input text.
type EmbedRequest struct {
	Model string
	Input []string
}

// EmbedResponse holds the vectors of an EmbedRequest, in the order of its inputs.
type EmbedResponse struct {
	// Model is the model that answered: the one asked for, unless a fallback answered in its place.
	Model        string
	Embeddings   [][]float64
	PromptTokens int // the input tokens, as the model server counts them; zero when it does not say
}

// Model describes a model the model server can run, as listed by ListModels.
type Model struct {
	Name              string // with its tag, e.g. "llama3.2:latest"
	Size              int64  // bytes on disk; zero when unknown
	ModifiedAt        time.Time
	Family            string
	ParameterSize     string // e.g. "8.0B"
	QuantizationLevel string // e.g. "Q4_K_M"
}

// ModelDetails is what ShowModel knows about one model beyond the list entry.
type ModelDetails struct {
	Model
	Format        string // e.g. "gguf"
	Families      []string
	Parameters    string   // default parameters, one "name value" per line
	ContextLength int      // trained context window in tokens; zero when unknown
	Capabilities  []string // e.g. "completion", "tools", "vision", "thinking"
}

// Provider is a model server. Its methods report each failure of the server as a *core.Error built by this
// package's constructors (ModelNotFound, ModelRefused, UpstreamTimeout, UpstreamUnavailable, UpstreamFailed),
// and return an error wrapping the context's error when ctx ended first.
type Provider interface {
	// ListModels returns the models the server can run.
	ListModels(ctx context.Context) ([]Model, error)
	// ShowModel describes one model; a ModelNotFound error if the server does not have it.
	ShowModel(ctx context.Context, name string) (ModelDetails, error)
	// Chat generates a whole answer before returning it.
	Chat(ctx context.Context, req ChatRequest) (ChatResponse, error)
	// ChatStream sends the request when iteration starts and yields content chunks as they arrive, then
	// exactly one final chunk with Done set; or it stops after yielding a non-nil error, which is an
	// UpstreamFailed or UpstreamTimeout error once the answer has started. Breaking out of the loop or
	// cancelling ctx aborts the upstream request at once.
	ChatStream(ctx context.Context, req ChatRequest) iter.Seq2[Chunk, error]
	// Embed turns each input text into a vector, for search and retrieval.
	Embed(ctx context.Context, req EmbedRequest) (EmbedResponse, error)
}

// SameModel reports whether two model names mean the same model: a name without a tag means its "latest"
// tag, as model servers read it.
func SameModel(a, b string) bool {
	withTag := func(n string) string {
		if strings.Contains(n[strings.LastIndexByte(n, '/')+1:], ":") {
			return n
		}
		return n + ":latest"
	}
	return withTag(a) == withTag(b)
}
