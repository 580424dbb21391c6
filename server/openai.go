package server

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
)

// conversationHeader asks the OpenAI-compatible chat to store its exchange, and names where it was stored.
const conversationHeader = "X-DS-Conversation-Id"

// OpenaiCreateChatCompletion implements POST /openai/v1/chat/completions: a turn of the chat service, stateless
// unless the request names a conversation, answered as one chat.completion or as a stream of chunks.
func (s *Server) OpenaiCreateChatCompletion(ctx context.Context, req apiserver.OpenaiCreateChatCompletionRequestObject) (apiserver.OpenaiCreateChatCompletionResponseObject, error) {
	body := req.Body
	p := principal(ctx)
	turnReq, err := openaiTurn(p.UserID, body, req.Params.XDSConversationId)
	if err != nil {
		return nil, err
	}
	turnReq.APIKeyID, turnReq.RequestID = p.APIKeyID, requestIDFrom(ctx)
	release, err := s.acquireModelCall(ctx)
	if err != nil {
		return nil, err
	}
	turn, err := s.chat.Begin(ctx, turnReq)
	if err != nil {
		release()
		return nil, openaiParam(err, body)
	}
	noteQuotaLeft(ctx, turn.DayQuotaLeft())
	var stored *uuid.UUID
	if !turnReq.Stateless {
		stored = &turn.Conversation.ID
	}
	chunk := apiserver.OpenAIChatCompletionChunk{
		Id: "chatcmpl-" + hex.EncodeToString(turn.AnswerID[:]), Object: apiserver.OpenAIObjectChatCompletionChunk,
		Created: time.Now().Unix(), Model: turn.Model(),
	}
	if body.Stream != nil && *body.Stream {
		includeUsage := body.StreamOptions != nil && body.StreamOptions.IncludeUsage != nil && *body.StreamOptions.IncludeUsage
		events := &openaiEvents{chunk: chunk, includeUsage: includeUsage}
		return openaiChatStream{chatStream: s.newChatStream(ctx, release, turn, events), conversation: stored}, nil
	}
	defer release()
	answer, err := s.complete(ctx, turn)
	if err != nil {
		return nil, err
	}
	usage := apiserver.OpenAIUsage{}
	if answer.Usage != nil {
		usage = openaiUsage(answer.Usage.PromptTokens, answer.Usage.CompletionTokens)
	}
	return apiserver.OpenaiCreateChatCompletion200JSONResponse{
		Body: apiserver.OpenAIChatCompletion{
			Id: chunk.Id, Object: apiserver.OpenAIObjectChatCompletion, Created: chunk.Created, Model: cmp.Or(answer.Model, chunk.Model),
			Choices: []apiserver.OpenAIChoice{{
				Message:      apiserver.OpenAIAssistantMessage{Role: apiserver.OpenAIAssistantRole, Content: answer.Content},
				FinishReason: openaiFinishReason(answer.DoneReason),
			}},
			Usage: usage,
		},
		Headers: apiserver.OpenaiCreateChatCompletion200ResponseHeaders{XDSConversationId: stored},
	}, nil
}

// openaiTurn maps a chat completion request to a turn of the chat service: the messages' text, the options
// the model understands, and whether and where the exchange is stored. It refuses, naming the field, what
// the gateway cannot do rather than answer as if it had.
func openaiTurn(user uuid.UUID, body *apiserver.OpenAIChatCompletionRequest, conversation *string) (chat.Request, error) {
	if body.Model == "" {
		return chat.Request{}, malformed("model", "is required")
	}
	if len(body.Messages) == 0 {
		return chat.Request{}, malformed("messages", "must hold at least one message")
	}
	if err := openaiUnsupported(body); err != nil {
		return chat.Request{}, err
	}
	req := chat.Request{UserID: user, Model: body.Model, Messages: make([]provider.Message, len(body.Messages))}
	for i, m := range body.Messages {
		if !m.Role.Valid() {
			return chat.Request{}, core.InvalidField(fmt.Sprintf("messages[%d].role", i), "must be system, user or assistant")
		}
		text, err := openaiText(m.Content, i)
		if err != nil {
			return chat.Request{}, err
		}
		req.Messages[i] = provider.Message{Role: string(m.Role), Content: text}
	}
	var err error
	if req.Options, err = openaiOptions(body); err != nil {
		return chat.Request{}, err
	}
	switch {
	case conversation == nil || *conversation == "":
		req.Stateless = true
	case *conversation == "new":
		req.ClientHistory = true
	default:
		id, err := uuid.Parse(*conversation)
		if err != nil {
			return chat.Request{}, malformed(conversationHeader, "must be new or the id of one of your conversations")
		}
		req.ConversationID, req.ClientHistory = &id, true
	}
	return req, nil
}

// openaiUnsupported refuses the features of OpenAI's API that the gateway does not have, when the request
// asks for them.
func openaiUnsupported(body *apiserver.OpenAIChatCompletionRequest) error {
	switch {
	case body.Tools != nil && len(*body.Tools) > 0:
		return core.InvalidField("tools", "tools and function calling are not supported")
	case body.Functions != nil && len(*body.Functions) > 0:
		return core.InvalidField("functions", "tools and function calling are not supported")
	case body.N != nil && *body.N != 1:
		return core.InvalidField("n", "only one choice (n=1) is supported")
	case body.Logprobs != nil && *body.Logprobs:
		return core.InvalidField("logprobs", "logprobs are not supported")
	case body.TopLogprobs != nil && *body.TopLogprobs > 0:
		return core.InvalidField("top_logprobs", "logprobs are not supported")
	}
	return nil
}

// openaiText returns the text of the content of message i: the string, or its text parts joined by line
// breaks.
func openaiText(content apiserver.OpenAIChatMessage_Content, i int) (string, error) {
	field := func() string { return fmt.Sprintf("messages[%d].content", i) } // only for errors
	raw, _ := content.MarshalJSON()                                          // the raw JSON, never an error
	switch {
	case len(raw) > 0 && raw[0] == '"':
		return content.AsOpenAIChatMessageContent0()
	case len(raw) > 0 && raw[0] == '[':
		parts, err := content.AsOpenAIChatMessageContent1()
		if err != nil {
			return "", malformed(field(), "must be a string or a list of content parts")
		}
		texts := make([]string, len(parts))
		for j, p := range parts {
			switch p.Type {
			case "text":
				if p.Text != nil {
					texts[j] = *p.Text
				}
			case "image_url", "input_audio", "file":
				return "", core.InvalidField(fmt.Sprintf("%s[%d].type", field(), j), p.Type+" content is not supported: only text is")
			default:
				return "", core.InvalidField(fmt.Sprintf("%s[%d].type", field(), j), fmt.Sprintf("unknown content part type %q", p.Type))
			}
		}
		return strings.Join(texts, "\n"), nil
	}
	return "", malformed(field(), "must be a string or a list of content parts")
}

// openaiOptions maps the sampling fields of a request to the model's options, leaving out those not set.
func openaiOptions(body *apiserver.OpenAIChatCompletionRequest) (map[string]any, error) {
	opts := map[string]any{}
	if t := body.Temperature; t != nil {
		if *t < 0 || *t > 2 {
			return nil, core.InvalidField("temperature", "must be between 0 and 2")
		}
		opts["temperature"] = *t
	}
	if p := body.TopP; p != nil {
		if *p < 0 || *p > 1 {
			return nil, core.InvalidField("top_p", "must be between 0 and 1")
		}
		opts["top_p"] = *p
	}
	if body.Seed != nil {
		opts["seed"] = *body.Seed
	}
	if n := body.MaxCompletionTokens; n != nil && *n < 1 {
		return nil, core.InvalidField("max_completion_tokens", "must be at least 1")
	}
	if n := body.MaxTokens; n != nil && *n < 1 {
		return nil, core.InvalidField("max_tokens", "must be at least 1")
	}
	if n := cmp.Or(body.MaxCompletionTokens, body.MaxTokens); n != nil {
		opts["num_predict"] = *n
	}
	if body.Stop != nil {
		var stop []string
		var err error
		if raw, _ := body.Stop.MarshalJSON(); len(raw) > 0 && raw[0] == '"' {
			var one string
			one, err = body.Stop.AsOpenAIChatCompletionRequestStop0()
			stop = []string{one}
		} else {
			stop, err = body.Stop.AsOpenAIChatCompletionRequestStop1()
		}
		if err != nil {
			return nil, malformed("stop", "must be a string or a list of strings")
		}
		if len(stop) > 0 {
			opts["stop"] = stop
		}
	}
	if len(opts) == 0 {
		return nil, nil
	}
	return opts, nil
}

// openaiParam names, in an error of the chat service, the request's own field for the option it refused.
func openaiParam(err error, body *apiserver.OpenAIChatCompletionRequest) error {
	e, ok := errors.AsType[*core.Error](err)
	if !ok || e.Field != "options.num_predict" {
		return err
	}
	renamed := *e
	renamed.Field = "max_tokens"
	if body.MaxCompletionTokens != nil {
		renamed.Field = "max_completion_tokens"
	}
	return &renamed
}

// malformed is a request that breaks the contract at field.
func malformed(field, message string) *core.Error {
	return &core.Error{Code: core.Malformed, Field: field, Message: message}
}

// openaiFinishReason maps the model server's done_reason to OpenAI's finish_reason.
func openaiFinishReason(doneReason string) apiserver.OpenAIFinishReason {
	if doneReason == "length" {
		return apiserver.OpenAIFinishLength
	}
	return apiserver.OpenAIFinishStop
}

// openaiUsage is a call's token counts as OpenAI reports them.
func openaiUsage(prompt, completion int) apiserver.OpenAIUsage {
	return apiserver.OpenAIUsage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// OpenaiListModels implements GET /openai/v1/models.
func (s *Server) OpenaiListModels(ctx context.Context, _ apiserver.OpenaiListModelsRequestObject) (apiserver.OpenaiListModelsResponseObject, error) {
	models, err := s.provider.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	data := make([]apiserver.OpenAIModel, len(models))
	for i, m := range models {
		data[i] = openaiModel(m)
	}
	return apiserver.OpenaiListModels200JSONResponse{Object: apiserver.OpenAIObjectModelList, Data: data}, nil
}

// OpenaiGetModel implements GET /openai/v1/models/{model}.
func (s *Server) OpenaiGetModel(ctx context.Context, req apiserver.OpenaiGetModelRequestObject) (apiserver.OpenaiGetModelResponseObject, error) {
	d, err := s.provider.ShowModel(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	m := d.Model
	m.Name = cmp.Or(m.Name, req.Model)
	return apiserver.OpenaiGetModel200JSONResponse(openaiModel(m)), nil
}

// openaiModel describes a model as OpenAI does: owned by the part of its name before the first '/' (the
// upstream or namespace), or by "library" as Ollama's own OpenAI API says.
func openaiModel(m provider.Model) apiserver.OpenAIModel {
	owner, _, ok := strings.Cut(m.Name, "/")
	if !ok {
		owner = "library"
	}
	var created int64 // 0 when the model server says nothing, rather than year 1
	if !m.ModifiedAt.IsZero() {
		created = m.ModifiedAt.Unix()
	}
	return apiserver.OpenAIModel{Id: m.Name, Object: apiserver.OpenAIObjectModel, Created: created, OwnedBy: owner}
}

// openaiModelsPath is the route of one model, whose id follows it.
const openaiModelsPath = "/openai/v1/models/"

// openaiModelID lets the id in GET /openai/v1/models/{model} hold a '/' as it is, such as the router's
// "<upstream>/<model>": it escapes the id's slashes before the router, whose path parameters end at a '/',
// sees the path. Clients that escape them themselves need nothing.
func openaiModelID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		u := c.Request().URL
		if id, ok := strings.CutPrefix(u.Path, openaiModelsPath); ok && strings.Contains(id, "/") {
			u.RawPath = openaiModelsPath + url.PathEscape(id)
		}
		return next(c)
	}
}

// OpenaiCreateEmbedding implements POST /openai/v1/embeddings with the model server's embedding call.
func (s *Server) OpenaiCreateEmbedding(ctx context.Context, req apiserver.OpenaiCreateEmbeddingRequestObject) (apiserver.OpenaiCreateEmbeddingResponseObject, error) {
	body := req.Body
	input, err := openaiEmbedInput(body)
	if err != nil {
		return nil, err
	}
	resp, err := s.embed(ctx, body.Model, input)
	if err != nil {
		return nil, err
	}
	asBase64 := body.EncodingFormat != nil && *body.EncodingFormat == apiserver.OpenAIEncodingBase64
	data := make([]apiserver.OpenAIEmbedding, len(resp.Embeddings))
	for i, vector := range resp.Embeddings {
		data[i] = apiserver.OpenAIEmbedding{Object: apiserver.OpenAIObjectEmbedding, Index: i}
		if asBase64 {
			err = data[i].Embedding.FromOpenAIEmbeddingEmbedding1(float32Base64(vector))
		} else {
			err = data[i].Embedding.FromOpenAIEmbeddingEmbedding0(vector)
		}
		if err != nil {
			return nil, fmt.Errorf("encode embedding: %w", err)
		}
	}
	return apiserver.OpenaiCreateEmbedding200JSONResponse{Body: apiserver.OpenAIEmbeddingList{
		Object: apiserver.OpenAIObjectEmbeddingList, Data: data, Model: cmp.Or(resp.Model, body.Model),
		Usage: apiserver.OpenAIEmbeddingUsage{PromptTokens: resp.PromptTokens, TotalTokens: resp.PromptTokens},
	}}, nil
}

// openaiEmbedInput checks an embedding request and returns its texts.
func openaiEmbedInput(body *apiserver.OpenAIEmbeddingRequest) ([]string, error) {
	switch {
	case body.Model == "":
		return nil, malformed("model", "is required")
	case body.Dimensions != nil:
		return nil, core.InvalidField("dimensions", "is not supported: the model's vectors have the size it gives them")
	case body.EncodingFormat != nil && !body.EncodingFormat.Valid():
		return nil, core.InvalidField("encoding_format", "must be float or base64")
	}
	raw, _ := body.Input.MarshalJSON()
	if len(raw) > 0 && raw[0] == '"' {
		text, err := body.Input.AsOpenAIEmbeddingRequestInput0()
		return []string{text}, err
	}
	texts, err := body.Input.AsOpenAIEmbeddingRequestInput1()
	if len(raw) == 0 || raw[0] != '[' || err != nil {
		return nil, malformed("input", "must be a string or a list of strings")
	}
	if len(texts) == 0 {
		return nil, malformed("input", "must hold at least one text")
	}
	return texts, nil
}

// float32Base64 encodes a vector as OpenAI's base64 embeddings are: its values as little-endian float32.
func float32Base64(vector []float64) string {
	b := make([]byte, 4*len(vector))
	for i, v := range vector {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(v)))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// openaiChatStream is the 200 answer of a streamed chat completion.
type openaiChatStream struct {
	chatStream
	conversation *uuid.UUID // where the exchange is stored, if it is
}

// VisitOpenaiCreateChatCompletionResponse writes the stream, with the conversation's id in its header.
func (s openaiChatStream) VisitOpenaiCreateChatCompletionResponse(w http.ResponseWriter) error {
	if s.conversation != nil {
		w.Header().Set(conversationHeader, s.conversation.String())
	}
	return s.relay(w)
}
