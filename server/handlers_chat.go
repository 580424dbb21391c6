package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/store"
)

// Chat implements POST /v1/chat.
func (s *Server) Chat(ctx context.Context, req apiserver.ChatRequestObject) (apiserver.ChatResponseObject, error) {
	turn, err := s.beginTurn(ctx, *req.Body)
	if err != nil {
		return nil, err
	}
	answer, err := turn.Complete(ctx)
	if err != nil {
		return nil, err
	}
	usage := apiserver.Usage{}
	if answer.Usage != nil {
		s.metrics.CountTokens(turn.Model(), int(answer.Usage.PromptTokens), int(answer.Usage.CompletionTokens))
		usage = apiserver.Usage{PromptTokens: int(answer.Usage.PromptTokens), CompletionTokens: int(answer.Usage.CompletionTokens)}
	}
	return apiserver.Chat200JSONResponse{
		ConversationId: turn.Conversation.ID,
		Message: apiserver.AssistantMessage{
			Id: answer.ID, Role: apiserver.AssistantMessageRoleAssistant, Content: answer.Content, CreatedAt: answer.CreatedAt,
		},
		Usage:      usage,
		DoneReason: answer.DoneReason,
	}, nil
}

// StreamChat implements POST /v1/chat/stream. Failures before the stream starts are ordinary problems;
// after that they are error events.
func (s *Server) StreamChat(ctx context.Context, req apiserver.StreamChatRequestObject) (apiserver.StreamChatResponseObject, error) {
	release, err := s.acquireStream(ctx)
	if err != nil {
		return nil, err
	}
	turn, err := s.beginTurn(ctx, *req.Body)
	if err != nil {
		release()
		return nil, err
	}
	return chatStream{
		ctx:          ctx,
		release:      release,
		meta:         apiserver.StreamMeta{ConversationId: turn.Conversation.ID, MessageId: turn.AnswerID, Model: turn.Model()},
		chunks:       turn.Stream,
		heartbeat:    s.cfg.SSEHeartbeat,
		writeTimeout: s.cfg.WriteTimeout,
		metrics:      s.metrics,
		start:        time.Now(),
		problem: func(err error) apiserver.Problem {
			s.countProviderError(err)
			p := s.toProblem(err)
			if p.cause != nil {
				s.logger.ErrorContext(ctx, "stream failed", "request_id", requestIDFrom(ctx), "error", p.cause)
			}
			return problemBody(p, requestIDFrom(ctx))
		},
	}, nil
}

func (s *Server) beginTurn(ctx context.Context, body apiserver.ChatRequest) (*chat.Turn, error) {
	msgs := make([]provider.Message, len(body.Messages))
	for i, m := range body.Messages {
		msgs[i] = provider.Message{Role: string(m.Role), Content: m.Content}
	}
	options, err := optionsMap(body.Options)
	if err != nil {
		return nil, err
	}
	return s.chat.Begin(ctx, chat.Request{
		UserID: userID(ctx), ConversationID: body.ConversationId, Model: body.Model, Messages: msgs, Options: options,
	})
}

// optionsMap turns the contract's options into the provider's map, keeping only those that were set.
func optionsMap(o *apiserver.ChatOptions) (map[string]any, error) {
	if o == nil {
		return nil, nil
	}
	data, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode options: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode options: %w", err)
	}
	return m, nil
}

// domainProblem explains the errors of the chat service, the store and the model provider.
func (s *Server) domainProblem(err error) *problemError {
	var perr *provider.Error
	msg := ""
	if errors.As(err, &perr) {
		msg = perr.Msg
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return newProblem(http.StatusNotFound, "not-found", "conversation not found")
	case errors.Is(err, provider.ErrModelNotFound):
		return newProblem(http.StatusNotFound, "model-not-found", "model not found")
	case errors.Is(err, provider.ErrBadRequest):
		detail := "the model provider refused the request"
		if msg != "" {
			detail += ": " + msg
		}
		return &problemError{status: http.StatusUnprocessableEntity, slug: "provider-refused", detail: detail, cause: err}
	case errors.Is(err, provider.ErrTimeout):
		return &problemError{status: http.StatusGatewayTimeout, slug: "provider-timeout",
			detail: "the model provider did not answer in time", cause: err}
	case errors.Is(err, provider.ErrUnavailable):
		return &problemError{status: http.StatusServiceUnavailable, slug: "provider-unavailable",
			detail: "the model provider is unavailable", retryAfter: 5 * time.Second, cause: err}
	case errors.Is(err, provider.ErrStream):
		return &problemError{status: http.StatusBadGateway, slug: "provider-failed",
			detail: "the model provider failed in the middle of the answer", cause: err}
	case errors.Is(err, chat.ErrAnswerNotStored):
		return &problemError{status: http.StatusServiceUnavailable, slug: "not-stored",
			detail: "the answer could not be stored", retryAfter: 5 * time.Second, cause: err}
	}
	return nil
}
