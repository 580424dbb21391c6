// Package ollama implements provider.Provider on the native API of an Ollama server (/api/chat, /api/tags,
// /api/show, /api/embed).
package ollama

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/upstream"
)

var _ provider.Provider = (*Client)(nil)

// DefaultBaseURL is where Ollama listens out of the box.
const DefaultBaseURL = "http://127.0.0.1:11434"

// Config says where the Ollama server is and how long to wait for it; a zero BaseURL means DefaultBaseURL,
// and zero timeouts and limits the defaults of upstream.Config. Ollama sends not even the status line while
// it queues a request or loads its model, so keep FirstChunkTimeout generous.
type Config = upstream.Config

// Client talks to one Ollama server over one shared, tuned connection pool. It is safe for concurrent use.
type Client struct {
	up *upstream.Client
}

// New returns a Client for cfg, with defaults for its zero fields. It does not contact the server.
func New(cfg Config) *Client {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	return &Client{up: upstream.New(cfg, statusError)}
}

// ListModels returns the models the server has (GET /api/tags), from the cache when it is fresh. Failures
// are not cached.
func (c *Client) ListModels(ctx context.Context) ([]provider.Model, error) {
	return c.up.Models(ctx, func(ctx context.Context) ([]provider.Model, error) {
		var tags struct {
			Models []struct {
				Name       string       `json:"name"`
				Size       int64        `json:"size"`
				ModifiedAt time.Time    `json:"modified_at"`
				Details    modelDetails `json:"details"`
			} `json:"models"`
		}
		if err := c.up.CallJSON(ctx, "ollama list models", http.MethodGet, "/api/tags", nil, &tags); err != nil {
			return nil, err
		}
		models := make([]provider.Model, 0, len(tags.Models))
		for _, m := range tags.Models {
			models = append(models, m.Details.toModel(m.Name, m.Size, m.ModifiedAt))
		}
		return models, nil
	})
}

// ShowModel describes one model (POST /api/show). Name is the name asked for, and Size is zero: /api/show
// does not report it.
func (c *Client) ShowModel(ctx context.Context, name string) (provider.ModelDetails, error) {
	var show struct {
		Parameters   string                     `json:"parameters"`
		Details      modelDetails               `json:"details"`
		ModelInfo    map[string]json.RawMessage `json:"model_info"`
		Capabilities []string                   `json:"capabilities"`
		ModifiedAt   time.Time                  `json:"modified_at"`
	}
	op := fmt.Sprintf("ollama show %q", name)
	if err := c.up.CallJSON(ctx, op, http.MethodPost, "/api/show", map[string]string{"model": name}, &show); err != nil {
		return provider.ModelDetails{}, err
	}
	// /api/show knows neither the size nor the full name ("tiny" for "tiny:latest"): the list does.
	model := show.Details.toModel(name, 0, show.ModifiedAt)
	if models, err := c.ListModels(ctx); err == nil {
		for _, m := range models {
			if provider.SameModel(m.Name, name) {
				model.Name, model.Size = m.Name, m.Size
			}
		}
	}
	return provider.ModelDetails{
		Model:         model,
		Format:        show.Details.Format,
		Families:      show.Details.Families,
		Parameters:    show.Parameters,
		ContextLength: contextLength(show.ModelInfo),
		Capabilities:  show.Capabilities,
	}, nil
}

// modelDetails is the "details" object of /api/tags and /api/show.
type modelDetails struct {
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

func (d modelDetails) toModel(name string, size int64, modified time.Time) provider.Model {
	return provider.Model{
		Name:              name,
		Size:              size,
		ModifiedAt:        modified,
		Family:            d.Family,
		ParameterSize:     d.ParameterSize,
		QuantizationLevel: d.QuantizationLevel,
	}
}

// contextLength reads "<general.architecture>.context_length" from /api/show's model_info, or 0.
func contextLength(info map[string]json.RawMessage) int {
	var arch string
	if json.Unmarshal(info["general.architecture"], &arch) != nil {
		return 0
	}
	var n int
	if json.Unmarshal(info[arch+".context_length"], &n) != nil {
		return 0
	}
	return n
}

// chatRequest is the body of POST /api/chat.
type chatRequest struct {
	Model    string         `json:"model"`
	Messages []message      `json:"messages"`
	Stream   bool           `json:"stream"`
	Options  map[string]any `json:"options,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func chatBody(req provider.ChatRequest, stream bool) chatRequest {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = message{Role: m.Role, Content: m.Content}
	}
	return chatRequest{Model: req.Model, Messages: msgs, Stream: stream, Options: req.Options}
}

// Chat generates a whole answer in one non-streamed /api/chat call, holding one of MaxConcurrency slots.
// The answer's Model is the model asked for, as Ollama echoes it. An answer longer than
// upstream.MaxChatAnswer is an UpstreamFailed error.
func (c *Client) Chat(ctx context.Context, req provider.ChatRequest) (provider.ChatResponse, error) {
	var line chatLine
	op := fmt.Sprintf("ollama chat %q", req.Model)
	if err := c.up.ModelCall(ctx, op, "/api/chat", chatBody(req, false), &line, upstream.MaxChatAnswer); err != nil {
		return provider.ChatResponse{}, err
	}
	return provider.ChatResponse{Model: req.Model, Content: line.Message.Content, DoneReason: line.DoneReason, Usage: line.usage()}, nil
}

func (l *chatLine) usage() provider.Usage {
	return provider.Usage{
		PromptTokens:       l.PromptEvalCount,
		CompletionTokens:   l.EvalCount,
		TotalDuration:      l.TotalDuration,
		LoadDuration:       l.LoadDuration,
		PromptEvalDuration: l.PromptEvalDuration,
		EvalDuration:       l.EvalDuration,
	}
}

// Embed turns texts into vectors in one POST /api/embed call, holding one of MaxConcurrency slots.
func (c *Client) Embed(ctx context.Context, req provider.EmbedRequest) (provider.EmbedResponse, error) {
	var out struct {
		Embeddings      [][]float64 `json:"embeddings"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}
	op := fmt.Sprintf("ollama embed %q", req.Model)
	in := struct {
		Model string   `json:"model"`
		Input []string `json:"input"`
	}{req.Model, req.Input}
	if err := c.up.ModelCall(ctx, op, "/api/embed", in, &out, 0); err != nil {
		return provider.EmbedResponse{}, err
	}
	return provider.EmbedResponse{Model: req.Model, Embeddings: out.Embeddings, PromptTokens: out.PromptEvalCount}, nil
}
