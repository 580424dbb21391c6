// Package openai implements provider.Provider on the OpenAI-compatible API that OpenAI, vLLM, llama.cpp's
// server, LM Studio, LiteLLM and Ollama's /v1 serve: GET /models, POST /chat/completions (plain, or streamed
// as Server-Sent Events) and POST /embeddings, below a base URL such as http://gpu-box:8000/v1.
package openai

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/provider/internal/upstream"
)

var _ provider.Provider = (*Client)(nil)

// Config says where the server is, with the /v1 part of its path (BaseURL is required), which API key to
// send, and how long to wait for it; zero timeouts and limits mean the defaults of upstream.Config.
type Config = upstream.Config

// Client talks to one OpenAI-compatible server over one shared, tuned connection pool. It is safe for
// concurrent use.
type Client struct {
	up *upstream.Client
}

// New returns a Client for cfg, with defaults for its zero fields. It does not contact the server.
func New(cfg Config) *Client {
	return &Client{up: upstream.New(cfg, statusError)}
}

// ListModels returns the models the server has (GET /models), from the cache when it is fresh; each model's
// ModifiedAt is its creation time, and the list says nothing of sizes or families. Failures are not cached.
func (c *Client) ListModels(ctx context.Context) ([]provider.Model, error) {
	return c.up.Models(ctx, func(ctx context.Context) ([]provider.Model, error) {
		var list struct {
			Data []struct {
				ID      string `json:"id"`
				Created int64  `json:"created"`
			} `json:"data"`
		}
		if err := c.up.CallJSON(ctx, "openai list models", http.MethodGet, "/models", nil, &list); err != nil {
			return nil, err
		}
		models := make([]provider.Model, len(list.Data))
		for i, m := range list.Data {
			models[i] = provider.Model{Name: m.ID}
			if m.Created > 0 {
				models[i].ModifiedAt = time.Unix(m.Created, 0).UTC()
			}
		}
		return models, nil
	})
}

// ShowModel describes one model from the model list, which is all the API says about it: a ModelNotFound
// error when the list does not have it.
func (c *Client) ShowModel(ctx context.Context, name string) (provider.ModelDetails, error) {
	models, err := c.ListModels(ctx)
	if err != nil {
		return provider.ModelDetails{}, err
	}
	for _, m := range models {
		if m.Name == name {
			return provider.ModelDetails{Model: m}, nil
		}
	}
	return provider.ModelDetails{}, provider.ModelNotFound(fmt.Errorf("openai show %q: not in the model list", name))
}

// chatRequest is the body of POST /chat/completions. The options are those of provider.ChatRequest that
// the API has, under its names; nil ones are left out.
type chatRequest struct {
	Model            string         `json:"model"`
	Messages         []message      `json:"messages"`
	Stream           bool           `json:"stream,omitempty"`
	StreamOptions    *streamOptions `json:"stream_options,omitempty"`
	Temperature      any            `json:"temperature,omitempty"`
	TopP             any            `json:"top_p,omitempty"`
	Seed             any            `json:"seed,omitempty"`
	Stop             any            `json:"stop,omitempty"`
	MaxTokens        any            `json:"max_tokens,omitempty"`
	PresencePenalty  any            `json:"presence_penalty,omitempty"`
	FrequencyPenalty any            `json:"frequency_penalty,omitempty"`
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// chatBody maps req to the API: temperature, top_p, seed, stop, presence_penalty and frequency_penalty
// keep their names, num_predict becomes max_tokens, and the options the API does not have (num_ctx, top_k,
// ...) are dropped. A stream asks for the usage chunk.
func chatBody(req provider.ChatRequest, stream bool) chatRequest {
	msgs := make([]message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = message{Role: m.Role, Content: m.Content}
	}
	o := req.Options
	body := chatRequest{
		Model: req.Model, Messages: msgs, Stream: stream,
		Temperature: o["temperature"], TopP: o["top_p"], Seed: o["seed"], Stop: o["stop"],
		MaxTokens: o["num_predict"], PresencePenalty: o["presence_penalty"], FrequencyPenalty: o["frequency_penalty"],
	}
	if stream {
		body.StreamOptions = &streamOptions{IncludeUsage: true}
	}
	return body
}

// usage is the usage object of answers and of a stream's last chunk.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func (u *usage) toUsage() provider.Usage {
	if u == nil {
		return provider.Usage{}
	}
	return provider.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens}
}

// Chat generates a whole answer in one non-streamed /chat/completions call, holding one of MaxConcurrency
// slots. The answer's Model is the one the server says answered. An answer longer than upstream.MaxChatAnswer
// is an UpstreamFailed error.
func (c *Client) Chat(ctx context.Context, req provider.ChatRequest) (provider.ChatResponse, error) {
	var out struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *usage `json:"usage"`
	}
	op := fmt.Sprintf("openai chat %q", req.Model)
	if err := c.up.ModelCall(ctx, op, "/chat/completions", chatBody(req, false), &out, upstream.MaxChatAnswer); err != nil {
		return provider.ChatResponse{}, err
	}
	if len(out.Choices) == 0 {
		return provider.ChatResponse{}, provider.UpstreamUnavailable(fmt.Errorf("%s: an answer without choices", op))
	}
	return provider.ChatResponse{
		Model: cmp.Or(out.Model, req.Model), Content: out.Choices[0].Message.Content,
		DoneReason: out.Choices[0].FinishReason, Usage: out.Usage.toUsage(),
	}, nil
}

// Embed turns texts into vectors in one POST /embeddings call, holding one of MaxConcurrency slots.
func (c *Client) Embed(ctx context.Context, req provider.EmbedRequest) (provider.EmbedResponse, error) {
	var out struct {
		Model string `json:"model"`
		Data  []struct {
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
		Usage *usage `json:"usage"`
	}
	op := fmt.Sprintf("openai embed %q", req.Model)
	in := struct {
		Model string   `json:"model"`
		Input []string `json:"input"`
	}{req.Model, req.Input}
	if err := c.up.ModelCall(ctx, op, "/embeddings", in, &out, 0); err != nil {
		return provider.EmbedResponse{}, err
	}
	vectors := make([][]float64, len(req.Input))
	for _, d := range out.Data {
		if d.Index < 0 || d.Index >= len(vectors) || vectors[d.Index] != nil {
			return provider.EmbedResponse{}, provider.UpstreamUnavailable(fmt.Errorf("%s: embedding index %d out of place", op, d.Index))
		}
		vectors[d.Index] = d.Embedding
	}
	if len(out.Data) != len(vectors) {
		return provider.EmbedResponse{}, provider.UpstreamUnavailable(
			fmt.Errorf("%s: %d embeddings for %d inputs", op, len(out.Data), len(vectors)))
	}
	return provider.EmbedResponse{Model: cmp.Or(out.Model, req.Model), Embeddings: vectors, PromptTokens: out.Usage.toUsage().PromptTokens}, nil
}
