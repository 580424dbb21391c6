package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/provider"
)

// Chat implements POST /v1/chat.
func (s *Server) Chat(ctx context.Context, req apiserver.ChatRequestObject) (apiserver.ChatResponseObject, error) {
	release, err := s.acquireModelCall(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	turn, err := s.beginTurn(ctx, *req.Body)
	if err != nil {
		return nil, err
	}
	answer, err := s.complete(ctx, turn)
	if err != nil {
		return nil, err
	}
	usage := apiserver.Usage{}
	if answer.Usage != nil {
		usage = apiserver.Usage{PromptTokens: answer.Usage.PromptTokens, CompletionTokens: answer.Usage.CompletionTokens}
	}
	return apiserver.Chat200JSONResponse{Body: apiserver.ChatResult{
		ConversationId: turn.Conversation.ID,
		Message: apiserver.AssistantMessage{
			Id: answer.ID, Role: apiserver.AssistantMessageRoleAssistant, Content: answer.Content, CreatedAt: answer.CreatedAt,
		},
		Usage:      usage,
		DoneReason: answer.DoneReason,
		Model:      &answer.Model,
	}}, nil
}

// complete asks the model for the turn's whole answer and counts its tokens.
func (s *Server) complete(ctx context.Context, turn *chat.Turn) (chat.Message, error) {
	var answer chat.Message
	err := s.untilDrained(ctx, func(ctx context.Context) (err error) {
		answer, err = turn.Complete(ctx)
		return err
	})
	if err != nil {
		return chat.Message{}, err
	}
	if answer.Usage != nil {
		s.metrics.CountTokens(turn.ListedModel(), turn.Upstream(), answer.Usage.PromptTokens, answer.Usage.CompletionTokens)
	}
	return answer, nil
}

// embed turns texts into vectors with model, holding one of the caller's model calls as a chat does, and
// accounts for the call.
func (s *Server) embed(ctx context.Context, model string, input []string) (provider.EmbedResponse, error) {
	release, err := s.acquireModelCall(ctx)
	if err != nil {
		return provider.EmbedResponse{}, err
	}
	defer release()
	p := principal(ctx)
	var (
		resp provider.EmbedResponse
		left chat.QuotaLeft
	)
	err = s.untilDrained(ctx, func(ctx context.Context) (err error) {
		resp, left, err = s.chat.Embed(ctx, chat.EmbedRequest{
			UserID: p.UserID, APIKeyID: p.APIKeyID, RequestID: requestIDFrom(ctx), Model: model, Input: input,
		})
		return err
	})
	noteQuotaLeft(ctx, left)
	return resp, err
}

// untilDrained runs a model call that a shutdown of the server ends early, with errShuttingDown.
func (s *Server) untilDrained(ctx context.Context, call func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.drained, cancel)()
	if err := call(ctx); err != nil {
		if s.drained.Err() != nil {
			return errShuttingDown
		}
		return err
	}
	return nil
}

// firstChunkGrace is how much longer than the wait for a model-server slot (DS_OLLAMA_QUEUE_WAIT) a stream
// waits for its model's first chunk before it answers 200: a model server that is full, or refuses at once,
// is then answered with its own status.
const firstChunkGrace = 250 * time.Millisecond

// StreamChat implements POST /v1/chat/stream. Failures before the model's first chunk, when it comes within
// firstWait, are ordinary problems with their own status; after that they are error events.
func (s *Server) StreamChat(ctx context.Context, req apiserver.StreamChatRequestObject) (apiserver.StreamChatResponseObject, error) {
	release, err := s.acquireModelCall(ctx)
	if err != nil {
		return nil, err
	}
	turn, err := s.beginTurn(ctx, *req.Body)
	if err != nil {
		release()
		return nil, err
	}
	return s.newChatStream(ctx, release, turn, nativeEvents{
		meta:      apiserver.StreamMeta{ConversationId: turn.Conversation.ID, MessageId: turn.AnswerID, Model: turn.Model()},
		requestID: requestIDFrom(ctx),
	}), nil
}

// newChatStream returns the stream of turn's answer, written as events says; it gives back the user's
// model-call slot with release when it ends.
func (s *Server) newChatStream(ctx context.Context, release func(), turn *chat.Turn, events streamEvents) chatStream {
	return chatStream{
		ctx:          ctx,
		release:      release,
		events:       events,
		model:        turn.ListedModel(),
		upstream:     turn.Upstream(),
		chunks:       turn.Stream,
		drained:      s.drained,
		heartbeat:    s.cfg.SSEHeartbeat,
		writeTimeout: s.cfg.WriteTimeout,
		metrics:      s.metrics,
		start:        time.Now(),
		firstWait:    s.cfg.OllamaQueueWait + firstChunkGrace,
		failure:      func(err error) *core.Error { return s.failure(ctx, err) },
	}
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
	p := principal(ctx)
	turn, err := s.chat.Begin(ctx, chat.Request{
		UserID: p.UserID, APIKeyID: p.APIKeyID, RequestID: requestIDFrom(ctx), ConversationID: body.ConversationId,
		Model: body.Model, Messages: msgs, Options: options,
	})
	if err != nil {
		return nil, err
	}
	noteQuotaLeft(ctx, turn.DayQuotaLeft())
	return turn, nil
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
