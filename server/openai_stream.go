package server

import (
	"cmp"
	"net/http"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
)

// openaiEvents write a chat stream as OpenAI's: chat.completion.chunk objects, each the data of an unnamed
// event, the first with the role and the last with the finish_reason, then the usage when asked for, then
// "[DONE]". A failure midway is an OpenAI error object, with no "[DONE]" after it.
type openaiEvents struct {
	chunk        apiserver.OpenAIChatCompletionChunk // id, object, created and model: the same in every chunk
	includeUsage bool
	choice       [1]apiserver.OpenAIChunkChoice // reused by every chunk
}

// send writes a chunk with one choice.
func (o *openaiEvents) send(sse *sseWriter, delta apiserver.OpenAIDelta, finish *apiserver.OpenAIChunkChoiceFinishReason) error {
	o.choice[0] = apiserver.OpenAIChunkChoice{Delta: delta, FinishReason: finish}
	o.chunk.Choices = o.choice[:]
	return sse.event("", o.chunk)
}

func (o *openaiEvents) begin(sse *sseWriter) error {
	role, empty := apiserver.OpenAIDeltaAssistant, ""
	return o.send(sse, apiserver.OpenAIDelta{Role: &role, Content: &empty}, nil)
}

func (o *openaiEvents) delta(sse *sseWriter, content string) error {
	return o.send(sse, apiserver.OpenAIDelta{Content: &content}, nil)
}

func (o *openaiEvents) done(sse *sseWriter, final provider.Chunk) error {
	o.chunk.Model = cmp.Or(final.Model, o.chunk.Model)
	finish := apiserver.OpenAIChunkChoiceFinishReason(openaiFinishReason(final.DoneReason))
	if err := o.send(sse, apiserver.OpenAIDelta{}, &finish); err != nil {
		return err
	}
	if o.includeUsage {
		usage := openaiUsage(final.Usage.PromptTokens, final.Usage.CompletionTokens)
		o.chunk.Choices, o.chunk.Usage = []apiserver.OpenAIChunkChoice{}, &usage
		if err := sse.event("", o.chunk); err != nil {
			return err
		}
	}
	return sse.write("data: [DONE]\n\n")
}

func (o *openaiEvents) fail(sse *sseWriter, e *core.Error) error {
	return sse.event("", openaiErrorBody(e))
}

func (o *openaiEvents) refuse(w http.ResponseWriter, e *core.Error) error {
	return writeOpenAIError(w, e)
}

// write writes text as it is, such as the "[DONE]" that ends an OpenAI stream.
func (s *sseWriter) write(text string) error {
	s.buf.Reset()
	s.buf.WriteString(text)
	return s.send()
}
