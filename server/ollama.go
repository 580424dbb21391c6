package server

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
)

// The Ollama-compatible API under /ollama serves Ollama's own clients with the services behind /v1: its
// routes, bodies, NDJSON streams and {"error": "..."} bodies are Ollama's. Its chat turns are stateless, since
// Ollama's clients send the whole conversation every time.

// OllamaChat implements POST /ollama/api/chat.
func (s *Server) OllamaChat(ctx context.Context, req apiserver.OllamaChatRequestObject) (apiserver.OllamaChatResponseObject, error) {
	body := req.Body
	msgs, err := chatMessages(*body)
	if err != nil {
		return nil, err
	}
	return s.ollamaTurn(ctx, body.Model, msgs, body.Options, body.Stream, ollamaChatLine)
}

// OllamaGenerate implements POST /ollama/api/generate.
func (s *Server) OllamaGenerate(ctx context.Context, req apiserver.OllamaGenerateRequestObject) (apiserver.OllamaGenerateResponseObject, error) {
	body := req.Body
	msgs, err := generateMessages(*body)
	if err != nil {
		return nil, err
	}
	return s.ollamaTurn(ctx, body.Model, msgs, body.Options, body.Stream, ollamaGenerateLine)
}

// OllamaEmbed implements POST /ollama/api/embed. It holds one of the caller's model calls, as a chat does.
func (s *Server) OllamaEmbed(ctx context.Context, req apiserver.OllamaEmbedRequestObject) (apiserver.OllamaEmbedResponseObject, error) {
	body := req.Body
	if body.Model == "" {
		return nil, ollamaRequired("model")
	}
	input, err := embedInput(body.Input)
	if err != nil {
		return nil, err
	}
	resp, err := s.embed(ctx, body.Model, input)
	if err != nil {
		return nil, ollamaModelError(err, body.Model)
	}
	return apiserver.OllamaEmbed200JSONResponse{Body: apiserver.OllamaEmbeddings{
		Model: cmp.Or(resp.Model, body.Model), Embeddings: resp.Embeddings, PromptEvalCount: resp.PromptTokens,
	}}, nil
}

// OllamaTags implements GET /ollama/api/tags.
func (s *Server) OllamaTags(ctx context.Context, _ apiserver.OllamaTagsRequestObject) (apiserver.OllamaTagsResponseObject, error) {
	models, err := s.provider.ListModels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]apiserver.OllamaModel, len(models))
	for i, m := range models {
		out[i] = apiserver.OllamaModel{
			Name: m.Name, Model: m.Name, ModifiedAt: m.ModifiedAt, Size: m.Size, Details: ollamaDetails(m, "", nil),
		}
	}
	return apiserver.OllamaTags200JSONResponse{Models: out}, nil
}

// OllamaShow implements POST /ollama/api/show.
func (s *Server) OllamaShow(ctx context.Context, req apiserver.OllamaShowRequestObject) (apiserver.OllamaShowResponseObject, error) {
	name := req.Body.Model
	if name == "" {
		return nil, ollamaRequired("model")
	}
	d, err := s.provider.ShowModel(ctx, name)
	if err != nil {
		return nil, ollamaModelError(err, name)
	}
	info := map[string]any{}
	if d.Family != "" {
		info["general.architecture"] = d.Family
		if d.ContextLength > 0 {
			info[d.Family+".context_length"] = d.ContextLength
		}
	}
	return apiserver.OllamaShow200JSONResponse{
		Parameters: d.Parameters, Details: ollamaDetails(d.Model, d.Format, d.Families), ModelInfo: info,
		Capabilities: nonNil(d.Capabilities), ModifiedAt: d.ModifiedAt,
	}, nil
}

// OllamaVersion implements GET /ollama/api/version: the version of this API, not of the model server.
func (s *Server) OllamaVersion(context.Context, apiserver.OllamaVersionRequestObject) (apiserver.OllamaVersionResponseObject, error) {
	version, err := apiVersion()
	if err != nil {
		return nil, err
	}
	return apiserver.OllamaVersion200JSONResponse{Version: version}, nil
}

// apiVersion is the version of this API, as the contract states it.
var apiVersion = sync.OnceValues(func() (string, error) {
	spec, err := apiserver.GetSpec()
	if err != nil {
		return "", fmt.Errorf("load embedded contract: %w", err)
	}
	return spec.Info.Version, nil
})

// ollamaTurn begins a stateless chat turn, holding one of the caller's model calls until its answer ends,
// and returns that answer, whose lines line renders.
func (s *Server) ollamaTurn(ctx context.Context, model string, msgs []provider.Message, options *apiserver.OllamaOptions,
	stream *bool, line ollamaLine) (ollamaAnswer, error) {
	if model == "" {
		return ollamaAnswer{}, ollamaRequired("model")
	}
	var opts map[string]any
	if options != nil {
		opts = *options
	}
	release, err := s.acquireModelCall(ctx)
	if err != nil {
		return ollamaAnswer{}, err
	}
	p := principal(ctx)
	turn, err := s.chat.Begin(ctx, chat.Request{
		UserID: p.UserID, APIKeyID: p.APIKeyID, RequestID: requestIDFrom(ctx), Model: model, Messages: msgs, Options: opts,
		Stateless: true,
	})
	if err != nil {
		release()
		return ollamaAnswer{}, ollamaModelError(err, model)
	}
	noteQuotaLeft(ctx, turn.DayQuotaLeft())
	return ollamaAnswer{
		chunks:       s.turnChunks(ctx, turn, release),
		stream:       stream == nil || *stream,
		model:        model,
		line:         line,
		failure:      func(err error) *core.Error { return s.failure(ctx, ollamaModelError(err, model)) },
		writeTimeout: s.cfg.WriteTimeout,
		metrics:      s.metrics,
		label:        turn.ListedModel(),
		start:        time.Now(),
	}, nil
}

// chatMessages reads the messages of a chat request: at least one, each with a role the service knows, and
// no feature the gateway does not offer.
func chatMessages(body apiserver.OllamaChatRequest) ([]provider.Message, error) {
	err := refuseUnsupported(map[string]*apiserver.OllamaUnsupported{"tools": body.Tools, "format": body.Format, "think": body.Think})
	if err != nil {
		return nil, err
	}
	if len(body.Messages) == 0 {
		return nil, ollamaRequired("messages")
	}
	msgs := make([]provider.Message, len(body.Messages))
	for i, m := range body.Messages {
		field := fmt.Sprintf("messages[%d]", i)
		if err := refuseUnsupported(map[string]*apiserver.OllamaUnsupported{field + ".images": m.Images}); err != nil {
			return nil, err
		}
		role := apiserver.OllamaMessageRole(strings.ToLower(string(m.Role)))
		if !role.Valid() {
			return nil, &core.Error{Code: core.Malformed, Field: field + ".role", Message: "must be system, user or assistant"}
		}
		msgs[i] = provider.Message{Role: string(role)}
		if m.Content != nil {
			msgs[i].Content = *m.Content
		}
	}
	return msgs, nil
}

// generateMessages turns a generate request into the messages of a chat turn: the prompt, after the system
// text when there is one.
func generateMessages(body apiserver.OllamaGenerateRequest) ([]provider.Message, error) {
	err := refuseUnsupported(map[string]*apiserver.OllamaUnsupported{
		"images": body.Images, "format": body.Format, "think": body.Think, "suffix": body.Suffix,
		"context": body.Context, "raw": body.Raw, "template": body.Template,
	})
	if err != nil {
		return nil, err
	}
	if body.Prompt == "" {
		return nil, ollamaRequired("prompt")
	}
	var msgs []provider.Message
	if body.System != nil && *body.System != "" {
		msgs = append(msgs, provider.Message{Role: provider.RoleSystem, Content: *body.System})
	}
	return append(msgs, provider.Message{Role: provider.RoleUser, Content: body.Prompt}), nil
}

// embedInput reads the texts of an embed request: one text or a list of them, never none.
func embedInput(in apiserver.OllamaEmbedRequest_Input) ([]string, error) {
	if one, err := in.AsOllamaEmbedRequestInput0(); err == nil && one != "" {
		return []string{one}, nil
	}
	if list, err := in.AsOllamaEmbedRequestInput1(); err == nil && len(list) > 0 {
		return list, nil
	}
	return nil, &core.Error{Code: core.Malformed, Field: "input", Message: "must be a text or a list of texts"}
}

// refuseUnsupported refuses a request that asks for a feature of Ollama the gateway does not offer: one of
// fields set to anything but null, false, or an empty string, array or object.
func refuseUnsupported(fields map[string]*apiserver.OllamaUnsupported) error {
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if v := fields[name]; v != nil && isSet(*v) {
			return &core.Error{Code: core.Malformed, Field: name, Message: "is not supported by this gateway"}
		}
	}
	return nil
}

// isSet reports whether a JSON value asks for something: it is not null, false, or an empty string, array or
// object.
func isSet(v any) bool {
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// ollamaRequired is the error of a required field that is missing or empty.
func ollamaRequired(field string) error {
	return &core.Error{Code: core.Malformed, Field: field, Message: "is required"}
}

// ollamaModelError words a model the model server does not have as Ollama does, naming it.
func ollamaModelError(err error, model string) error {
	if core.ErrorCode(err) == core.ModelNotFound {
		return core.Wrap(core.ModelNotFound, err, fmt.Sprintf("model '%s' not found", model))
	}
	return err
}

// ollamaDetails describes a model in Ollama's words; format and families are empty when not known.
func ollamaDetails(m provider.Model, format string, families []string) apiserver.OllamaModelDetails {
	if families == nil && m.Family != "" {
		families = []string{m.Family}
	}
	return apiserver.OllamaModelDetails{
		Format: format, Family: m.Family, Families: nonNil(families), ParameterSize: m.ParameterSize,
		QuantizationLevel: m.QuantizationLevel,
	}
}
