package openai

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"

	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/provider"
)

// streamChunk is one event of a streamed answer: a chat.completion.chunk, the last one carrying the usage
// with no choices, or an error object.
type streamChunk struct {
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage          `json:"usage"`
	Error json.RawMessage `json:"error"`
}

// ChatStream streams an answer from POST /chat/completions with stream true, as Server-Sent Events of
// chat.completion.chunk objects ending with "data: [DONE]", with the usage chunk that stream_options asks
// for. Each non-empty content delta is a chunk; the final chunk carries the finish_reason, the usage (zero
// when the server sends none) and the model the server says answered. A stream that ends without
// "data: [DONE]" is complete all the same once a finish_reason came; otherwise it failed. The slot and
// timeouts are those of the Ollama client: FirstChunkTimeout until the first event, ChunkTimeout between
// events, neither while the consumer handles a chunk, and RequestTimeout for the whole stream.
func (c *Client) ChatStream(ctx context.Context, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		op := fmt.Sprintf("openai chat %q", req.Model)
		s, err := c.up.OpenStream(ctx, op, "/chat/completions", chatBody(req, true))
		if err != nil {
			yield(provider.Chunk{}, err)
			return
		}
		defer s.Close()

		events := sse.NewReader(s.Body)
		final := provider.Chunk{Model: req.Model, Done: true}
		finished := false
		for {
			ev, err := events.Next()
			if errors.Is(err, io.EOF) && finished {
				yield(final, nil)
				return
			}
			if err != nil {
				yield(provider.Chunk{}, s.ReadError(err, "stream ended before data: [DONE]"))
				return
			}
			s.Received()
			if ev.Data == "[DONE]" {
				if yield(final, nil) {
					s.Finish()
				}
				return
			}
			var chunk streamChunk
			if err := json.Unmarshal([]byte(ev.Data), &chunk); err != nil {
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: malformed chunk: %w", op, err)))
				return
			}
			if len(chunk.Error) > 0 && string(chunk.Error) != "null" {
				msg := cmp.Or(errorMessage([]byte(ev.Data)), string(chunk.Error))
				yield(provider.Chunk{}, provider.UpstreamFailed(fmt.Errorf("%s: error in the stream: %s", op, msg)))
				return
			}
			final.Model = cmp.Or(chunk.Model, final.Model)
			if chunk.Usage != nil {
				final.Usage = chunk.Usage.toUsage()
			}
			for _, choice := range chunk.Choices {
				if choice.Index != 0 {
					continue
				}
				if choice.FinishReason != "" {
					final.DoneReason, finished = choice.FinishReason, true
				}
				if choice.Delta.Content != "" && !yield(provider.Chunk{Content: choice.Delta.Content}, nil) {
					return
				}
			}
			s.Next()
		}
	}
}
