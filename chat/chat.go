// Package chat runs a chat turn: it checks the model, stores the user's messages before the model is called,
// sends the stored history with them, and stores the model's answer when it ends, complete or not, so that
// nothing a user sent or was shown is lost.
package chat

import (
	"cmp"
	"context"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/quota"
	"github.com/deepersensor/deepersensor/usage"
)

// titleRunes is the longest title made from a first message.
const titleRunes = 60

// persistTimeout bounds the store call that saves an answer after its request may have ended.
const persistTimeout = 10 * time.Second

// answerRetryAfter is how long a client should wait to retry a turn whose answer could not be stored.
const answerRetryAfter = 5 * time.Second

// Service runs chat turns and manages conversations, and accounts for every model call it makes.
type Service struct {
	store    Store
	provider Models
	recorder Recorder
	quotas   *quota.Service
	limits   Limits
	logger   *slog.Logger
}

// Models are the model servers behind the service.
type Models interface {
	provider.Provider
	// Upstream names the model server that serves a model, named as ListModels names it.
	Upstream(model string) string
	// ListedModel returns the name under which the model server lists a model, the same for every spelling
	// of it, or a core.ModelNotFound error; it asks only the model's own server.
	ListedModel(ctx context.Context, name string) (string, error)
}

// Recorder takes the usage record of each model call when the call ends. Record is called on the request
// path: it must not block.
type Recorder interface {
	Record(usage.Record)
}

// Limits bound what one user's turns may ask of the model and store.
type Limits struct {
	HistoryMessages int   // stored messages sent to the model before the new ones, at most
	HistoryBytes    int64 // and at most this much of their content (always the newest message)
	MaxContext      int   // the largest num_ctx option a turn may ask for
	MaxPredict      int   // the largest num_predict option a turn may ask for
	MaxStoredBytes  int64 // message content one user may store; 0 for no cap
}

// NewService returns a Service within limits that gives the usage record of each model call to rec and
// holds each call to the caller's token quotas; a nil rec accounts for nothing, nil quotas hold nothing.
func NewService(st Store, models Models, rec Recorder, quotas *quota.Service, limits Limits, logger *slog.Logger) *Service {
	return &Service{store: st, provider: models, recorder: rec, quotas: quotas, limits: limits, logger: logger}
}

// Request is one turn asked by a user.
type Request struct {
	UserID         uuid.UUID
	APIKeyID       uuid.UUID  // the API key that authenticated the request, or uuid.Nil, for the usage record
	RequestID      string     // for the usage record
	ConversationID *uuid.UUID // nil starts a new conversation
	Model          string
	Messages       []provider.Message
	Options        map[string]any
	// Stateless turns store nothing and are sent no stored history: the OpenAI- and Ollama-compatible APIs,
	// whose clients keep their own history, by default.
	Stateless bool
	// ClientHistory says that Messages hold the whole conversation, as the compatible APIs send it: no stored
	// history is sent, and only the last message is stored as new.
	ClientHistory bool
}

// Turn is a started turn: the user's messages are stored (unless it is stateless), and the answer has an id
// already.
type Turn struct {
	Conversation Conversation
	AnswerID     uuid.UUID
	svc          *Service
	upstream     provider.ChatRequest
	listedAs     string // the model's name as the model server lists it
	stateless    bool   // nothing is stored
	caller       caller
	hold         *quota.Hold // the call's tokens, reserved in the caller's quotas
}

// Begin checks the request and the model, prepares what the model will be sent (the stored history, then the
// new messages), reserves the call's estimated tokens in the caller's quotas, and stores the new messages
// (creating the conversation when needed).
func (s *Service) Begin(ctx context.Context, req Request) (*Turn, error) {
	toStore := req.Messages
	switch {
	case req.Stateless:
		toStore = nil
	case req.ClientHistory && len(req.Messages) > 0:
		toStore = req.Messages[len(req.Messages)-1:]
	}
	if err := checkMessages(toStore, len(req.Messages)-len(toStore)); err != nil {
		return nil, err
	}
	if err := s.checkOptions(req.Options); err != nil {
		return nil, err
	}
	listedAs, err := s.checkModel(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	turn := &Turn{
		AnswerID:  uuid.New(),
		svc:       s,
		upstream:  provider.ChatRequest{Model: req.Model, Messages: req.Messages, Options: req.Options},
		listedAs:  listedAs,
		stateless: req.Stateless,
		caller:    caller{userID: req.UserID, apiKeyID: req.APIKeyID, requestID: req.RequestID},
	}
	if req.ConversationID != nil && !req.Stateless {
		if err := s.readHistory(ctx, turn, req); err != nil {
			return nil, err
		}
	}
	// The whole prompt is known now, and nothing is stored yet.
	if turn.hold, err = s.reserve(ctx, req.UserID, estimate(turn.upstream.Messages, req.Options)); err != nil {
		return nil, err
	}
	if req.Stateless {
		return turn, nil
	}
	if err := s.storeNew(ctx, turn, req, toStore); err != nil {
		if err := turn.hold.Settle(ctx, 0); err != nil { // nothing was sent to the model
			s.logger.WarnContext(ctx, "give back the quota of a turn that did not start", "error", err)
		}
		return nil, err
	}
	return turn, nil
}

// readHistory reads the conversation that a turn continues and puts the stored history before the new
// messages that the model will be sent, unless the client sent the whole conversation.
func (s *Service) readHistory(ctx context.Context, turn *Turn, req Request) error {
	conv, err := s.store.Conversation(ctx, *req.ConversationID, req.UserID)
	if err != nil {
		return fmt.Errorf("begin turn: %w", err)
	}
	turn.Conversation = conv
	if req.ClientHistory {
		return nil
	}
	history, _, err := s.store.MessagePage(ctx, conv.ID, 0, s.limits.HistoryMessages, s.limits.HistoryBytes)
	if err != nil {
		return fmt.Errorf("begin turn: %w", err)
	}
	msgs := make([]provider.Message, 0, len(history)+len(req.Messages))
	for _, m := range slices.Backward(history) {
		msgs = append(msgs, provider.Message{Role: m.Role, Content: m.Content})
	}
	turn.upstream.Messages = append(msgs, req.Messages...)
	return nil
}

// storeNew stores the turn's new messages, in a new conversation unless it continues one.
func (s *Service) storeNew(ctx context.Context, turn *Turn, req Request, toStore []provider.Message) error {
	newMsgs := make([]NewMessage, len(toStore))
	for i, m := range toStore {
		newMsgs[i] = NewMessage{Role: m.Role, Content: m.Content, Status: StatusComplete}
	}
	var err error
	if req.ConversationID == nil {
		turn.Conversation, err = s.store.CreateConversation(ctx, req.UserID, titleFrom(req.Messages), req.Model, newMsgs, s.limits.MaxStoredBytes)
	} else {
		_, err = s.store.AppendMessages(ctx, req.UserID, turn.Conversation.ID, newMsgs, s.limits.MaxStoredBytes)
	}
	if err != nil {
		return fmt.Errorf("begin turn: %w", err)
	}
	return nil
}

// checkMessages refuses what the contract cannot express in messages to be stored, the request's from index
// first on: content that is blank or holds a NUL.
func checkMessages(msgs []provider.Message, first int) error {
	for i, m := range msgs {
		if err := checkText(fmt.Sprintf("messages[%d].content", first+i), m.Content); err != nil {
			return err
		}
	}
	return nil
}

// samplingOptions are the model options a turn may set: they shape one answer. Options that configure how the
// model server runs a model (num_gpu, num_thread, use_mmap, ...) would change it for every user, and are
// refused.
var samplingOptions = map[string]bool{
	"temperature": true, "top_p": true, "top_k": true, "seed": true, "num_predict": true, "num_ctx": true,
	"stop": true, "repeat_penalty": true, "presence_penalty": true, "frequency_penalty": true,
}

// checkOptions allows only sampling options, and keeps those that cost the model server most within what
// the operator allows: the context window (a reload of the model at that size) and the tokens to generate.
func (s *Service) checkOptions(opts map[string]any) error {
	for name := range opts {
		if !samplingOptions[name] {
			return core.InvalidField("options."+name, "is not an option that a chat may set")
		}
	}
	if n, ok := number(opts["num_ctx"]); ok && (n < 1 || n > float64(s.limits.MaxContext)) {
		return core.InvalidField("options.num_ctx", fmt.Sprintf("must be between 1 and %d", s.limits.MaxContext))
	}
	if n, ok := number(opts["num_predict"]); ok && (n < 1 || n > float64(s.limits.MaxPredict)) {
		return core.InvalidField("options.num_predict", fmt.Sprintf("must be between 1 and %d", s.limits.MaxPredict))
	}
	return nil
}

// number returns an option's value as a number, if it is one.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

// checkText refuses text to be stored that is only white space, or that holds a NUL (U+0000), which
// PostgreSQL cannot store in text.
func checkText(field, text string) error {
	if strings.TrimSpace(text) == "" {
		return core.InvalidField(field, "must not be blank")
	}
	if strings.ContainsRune(text, 0) {
		return core.InvalidField(field, "must not contain NUL (U+0000)")
	}
	return nil
}

// checkModel makes sure the model exists before anything is stored, and returns its name as the model
// server lists it.
func (s *Service) checkModel(ctx context.Context, name string) (string, error) {
	listed, err := s.provider.ListedModel(ctx, name)
	if err != nil {
		return "", fmt.Errorf("check model %q: %w", name, err)
	}
	return cmp.Or(listed, name), nil
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

// Complete asks the model for a whole answer, accounts for the call and stores the answer.
func (t *Turn) Complete(ctx context.Context) (Message, error) {
	c := t.svc.startCall(t.caller, t.listedAs, promptTokens(t.upstream.Messages), t.hold)
	resp, err := t.svc.provider.Chat(ctx, t.upstream)
	if err != nil {
		c.end(failed(ctx), "", nil)
		return Message{}, fmt.Errorf("chat: %w", err)
	}
	c.end(usage.Complete, resp.Model, &resp.Usage)
	return t.save(ctx, resp.Content, StatusComplete, resp.Model, resp.DoneReason, &resp.Usage)
}

// Stream yields the model's answer chunk by chunk and stores it when the stream ends: complete, with the
// final chunk's usage, before that chunk is yielded; incomplete, with the text so far, when the model fails
// or its stream ends without a final chunk (before the error is yielded), or when the consumer stops early.
// A failure to store is yielded as a core.NotStored error in place of the final chunk. The call is accounted
// for when the stream ends, however it ends.
func (t *Turn) Stream(ctx context.Context) iter.Seq2[provider.Chunk, error] {
	return func(yield func(provider.Chunk, error) bool) {
		c := t.svc.startCall(t.caller, t.listedAs, promptTokens(t.upstream.Messages), t.hold)
		outcome, answeredBy, counts := usage.Error, "", (*provider.Usage)(nil)
		var text strings.Builder
		saved := false
		defer func() {
			if !saved {
				_, _ = t.save(ctx, text.String(), StatusIncomplete, "", "", nil)
			}
			c.end(outcome, answeredBy, counts)
		}()
		fail := func(err error) {
			saved, outcome = true, failed(ctx)
			_, _ = t.save(ctx, text.String(), StatusIncomplete, "", "", nil)
			yield(provider.Chunk{}, err)
		}
		for chunk, err := range t.svc.provider.ChatStream(ctx, t.upstream) {
			if err != nil {
				fail(err)
				return
			}
			text.WriteString(chunk.Content)
			if chunk.Done {
				saved, outcome, answeredBy, counts = true, usage.Complete, chunk.Model, &chunk.Usage
				if _, err := t.save(ctx, text.String(), StatusComplete, chunk.Model, chunk.DoneReason, &chunk.Usage); err != nil {
					yield(provider.Chunk{}, err)
					return
				}
			}
			c.delivered(chunk.Content)
			if !yield(chunk, nil) {
				if !chunk.Done {
					outcome = usage.Incomplete // the consumer stopped before the end
				}
				return
			}
			if chunk.Done {
				return
			}
		}
		if ctx.Err() != nil {
			outcome = usage.Incomplete
			return
		}
		// The model's stream ended without a final chunk or an error; never pretend it succeeded.
		fail(provider.UpstreamFailed(fmt.Errorf("chat %q: stream ended without a final chunk", t.upstream.Model)))
	}
}

// save stores the answer, unless the turn is stateless. It runs even when ctx has ended, since the client
// leaving is no reason to lose it.
func (t *Turn) save(ctx context.Context, content, status, answeredBy, doneReason string, usage *provider.Usage) (Message, error) {
	msg := NewMessage{
		ID: t.AnswerID, Role: provider.RoleAssistant, Content: content, Status: status,
		Model: cmp.Or(answeredBy, t.upstream.Model), DoneReason: doneReason,
	}
	if usage != nil {
		msg.Usage = &Usage{PromptTokens: usage.PromptTokens, CompletionTokens: usage.CompletionTokens}
	}
	if t.stateless {
		return Message{
			ID: msg.ID, Role: msg.Role, Content: content, Status: status, Model: msg.Model, DoneReason: doneReason,
			Usage: msg.Usage, CreatedAt: time.Now(),
		}, nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), persistTimeout)
	defer cancel()
	stored, err := t.svc.store.AppendMessages(ctx, t.Conversation.UserID, t.Conversation.ID, []NewMessage{msg}, 0)
	if err != nil && core.ErrorCode(err) != core.NotFound {
		// Once more: a connection that PostgreSQL ended (a restart, a failover) fails on its first use, and the
		// pool has let it go by now. The answer's id makes a second insert of a stored answer a conflict.
		stored, err = t.svc.store.AppendMessages(ctx, t.Conversation.UserID, t.Conversation.ID, []NewMessage{msg}, 0)
	}
	if err != nil {
		t.svc.logger.ErrorContext(ctx, "store answer", "conversation_id", t.Conversation.ID, "message_id", t.AnswerID,
			"status", status, "error", err)
		return Message{}, &core.Error{Code: core.NotStored, Message: "the answer could not be stored",
			RetryAfter: answerRetryAfter, Err: fmt.Errorf("store answer %s: %w", t.AnswerID, err)}
	}
	return stored[0], nil
}

// Model is the model the turn talks to, as the caller named it.
func (t *Turn) Model() string { return t.upstream.Model }

// ListedModel is the model's name as the model server lists it, such as "llama3.2:latest" for "llama3.2": a
// label that callers cannot vary, for metrics.
func (t *Turn) ListedModel() string { return t.listedAs }

// Upstream names the model server that serves the turn's model, such as "gpu": a label for metrics.
func (t *Turn) Upstream() string { return t.svc.provider.Upstream(t.listedAs) }
