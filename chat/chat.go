// Package chat runs a chat turn: it checks the model, stores the user's messages before the model is called,
// sends the stored history with them, and stores the model's answer when it ends, complete or not, so that
// nothing a user sent or was shown is lost.
package chat

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/validation"
)

// ErrAnswerNotStored means the model answered but the answer could not be stored.
var ErrAnswerNotStored = errors.New("the answer could not be stored")

// titleRunes is the longest title made from a first message.
const titleRunes = 60

// persistTimeout bounds the store call that saves an answer after its request may have ended.
const persistTimeout = 10 * time.Second

// Service runs chat turns and manages conversations.
type Service struct {
	store        *store.Store
	provider     provider.Provider
	historyLimit int32
	logger       *slog.Logger
}

// NewService returns a Service that sends at most historyLimit stored messages to the model per turn.
func NewService(st *store.Store, p provider.Provider, historyLimit int, logger *slog.Logger) *Service {
	return &Service{store: st, provider: p, historyLimit: int32(historyLimit), logger: logger}
}

// Request is one turn asked by a user.
type Request struct {
	UserID         uuid.UUID
	ConversationID *uuid.UUID // nil starts a new conversation
	Model          string
	Messages       []provider.Message
	Options        map[string]any
}

// Turn is a started turn: the user's messages are stored, and the answer has an id already.
type Turn struct {
	Conversation store.Conversation
	AnswerID     uuid.UUID
	svc          *Service
	upstream     provider.ChatRequest
}

// Begin checks the request and the model, stores the new messages (creating the conversation when needed)
// and prepares what the model will be sent: the stored history, then the new messages.
func (s *Service) Begin(ctx context.Context, req Request) (*Turn, error) {
	if err := checkMessages(req.Messages); err != nil {
		return nil, err
	}
	if err := s.checkModel(ctx, req.Model); err != nil {
		return nil, err
	}
	newMsgs := make([]store.NewMessage, len(req.Messages))
	for i, m := range req.Messages {
		newMsgs[i] = store.NewMessage{Role: m.Role, Content: m.Content, Status: store.StatusComplete}
	}
	var (
		conv    store.Conversation
		history []store.Message
		err     error
	)
	if req.ConversationID == nil {
		conv, _, err = s.store.CreateConversation(ctx, req.UserID, titleFrom(req.Messages), req.Model, newMsgs)
		if err != nil {
			return nil, fmt.Errorf("begin turn: %w", err)
		}
	} else {
		if conv, err = s.store.Conversation(ctx, *req.ConversationID, req.UserID); err != nil {
			return nil, fmt.Errorf("begin turn: %w", err)
		}
		if history, err = s.store.RecentMessages(ctx, conv.ID, s.historyLimit); err != nil {
			return nil, fmt.Errorf("begin turn: %w", err)
		}
		if _, err = s.store.AppendMessages(ctx, conv.ID, newMsgs); err != nil {
			return nil, fmt.Errorf("begin turn: %w", err)
		}
	}
	msgs := make([]provider.Message, 0, len(history)+len(req.Messages))
	for _, m := range history {
		msgs = append(msgs, provider.Message{Role: m.Role, Content: m.Content})
	}
	msgs = append(msgs, req.Messages...)
	return &Turn{
		Conversation: conv,
		AnswerID:     uuid.New(),
		svc:          s,
		upstream:     provider.ChatRequest{Model: req.Model, Messages: msgs, Options: req.Options},
	}, nil
}

// checkMessages refuses what the contract cannot express: content made only of white space.
func checkMessages(msgs []provider.Message) error {
	for i, m := range msgs {
		if strings.TrimSpace(m.Content) == "" {
			return validation.New(fmt.Sprintf("messages[%d].content", i), "must not be blank")
		}
	}
	return nil
}

// checkModel makes sure the model exists before anything is stored: the cached list answers most calls, and
// a model missing from it is asked for directly, in case it was pulled since.
func (s *Service) checkModel(ctx context.Context, name string) error {
	models, err := s.provider.ListModels(ctx)
	if err != nil {
		return fmt.Errorf("check model %q: %w", name, err)
	}
	for _, m := range models {
		if provider.SameModel(m.Name, name) {
			return nil
		}
	}
	if _, err := s.provider.ShowModel(ctx, name); err != nil {
		return fmt.Errorf("check model %q: %w", name, err)
	}
	return nil
}

// titleFrom makes a conversation title from the first user message: white space collapsed, shortened.
func titleFrom(msgs []provider.Message) string {
	text := "New conversation"
	for _, m := range msgs {
		if m.Role == provider.RoleUser {
			text = strings.Join(strings.FieldsFunc(m.Content, unicode.IsSpace), " ")
			break
		}
	}
	runes := []rune(text)
	if len(runes) > titleRunes {
		return strings.TrimSpace(string(runes[:titleRunes-1])) + "…"
	}
	return text
}

// Complete asks the model for a whole answer and stores it.
func (t *Turn) Complete(ctx context.Context) (store.Message, error) {
	resp, err := t.svc.provider.Chat(ctx, t.upstream)
	if err != nil {
		return store.Message{}, fmt.Errorf("chat: %w", err)
	}
	return t.save(ctx, resp.Content, store.StatusComplete, resp.DoneReason, &resp.Usage)
}

// Stream yields the model's answer chunk by chunk and stores it when the stream ends: complete, with the
// final chunk's usage, before that chunk is yielded; incomplete, with the text so far, when the model fails
// (before the error is yielded) or when the consumer stops early. A failure to store is yielded as
// ErrAnswerNotStored in place of the final chunk.
func (t *Turn) Stream(ctx context.Context) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		var text strings.Builder
		saved := false
		defer func() {
			if !saved {
				_, _ = t.save(ctx, text.String(), store.StatusIncomplete, "", nil)
			}
		}()
		for chunk, err := range t.svc.provider.ChatStream(ctx, t.upstream) {
			if err != nil {
				saved = true
				_, _ = t.save(ctx, text.String(), store.StatusIncomplete, "", nil)
				yield(provider.Chunk{}, err)
				return
			}
			text.WriteString(chunk.Content)
			if chunk.Done {
				saved = true
				if _, err := t.save(ctx, text.String(), store.StatusComplete, chunk.DoneReason, &chunk.Usage); err != nil {
					yield(provider.Chunk{}, err)
					return
				}
			}
			if !yield(chunk, nil) {
				return
			}
		}
	}
}

// save stores the answer. It runs even when ctx has ended, since the client leaving is no reason to lose it.
func (t *Turn) save(ctx context.Context, content, status, doneReason string, usage *provider.Usage) (store.Message, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
	defer cancel()
	msg := store.NewMessage{
		ID: t.AnswerID, Role: provider.RoleAssistant, Content: content, Status: status,
		Model: t.upstream.Model, DoneReason: doneReason,
	}
	if usage != nil {
		msg.Usage = &store.Usage{PromptTokens: int32(usage.PromptTokens), CompletionTokens: int32(usage.CompletionTokens)}
	}
	stored, err := t.svc.store.AppendMessages(ctx, t.Conversation.ID, []store.NewMessage{msg})
	if err != nil {
		t.svc.logger.ErrorContext(ctx, "store answer", "conversation_id", t.Conversation.ID, "message_id", t.AnswerID,
			"status", status, "error", err)
		return store.Message{}, fmt.Errorf("%w: %w", ErrAnswerNotStored, err)
	}
	return stored[0], nil
}

// Model is the model the turn talks to.
func (t *Turn) Model() string { return t.upstream.Model }
