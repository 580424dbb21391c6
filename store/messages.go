package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
)

// Message statuses: an answer cut short by the client or the model is stored as incomplete.
const (
	StatusComplete   = "complete"
	StatusIncomplete = "incomplete"
)

// Usage counts the tokens of one model answer.
type Usage struct {
	PromptTokens     int32
	CompletionTokens int32
}

// NewMessage is a message to store. A zero ID lets the database choose one.
type NewMessage struct {
	ID         uuid.UUID
	Role       string
	Content    string
	Status     string
	Model      string
	DoneReason string
	Usage      *Usage
}

// Message is a stored message of a conversation.
type Message struct {
	ID             uuid.UUID
	ConversationID uuid.UUID
	Role           string
	Content        string
	Status         string
	Model          string
	DoneReason     string
	Usage          *Usage
	CreatedAt      time.Time
}

func messageFromDB(m db.Message) Message {
	msg := Message{
		ID: m.ID, ConversationID: m.ConversationID, Role: m.Role, Content: m.Content, Status: m.Status,
		Model: m.Model, DoneReason: m.DoneReason, CreatedAt: m.CreatedAt,
	}
	if m.PromptTokens != nil && m.CompletionTokens != nil {
		msg.Usage = &Usage{PromptTokens: *m.PromptTokens, CompletionTokens: *m.CompletionTokens}
	}
	return msg
}

func messagesFromDB(rows []db.Message) []Message {
	msgs := make([]Message, len(rows))
	for i, r := range rows {
		msgs[i] = messageFromDB(r)
	}
	return msgs
}

// AppendMessages stores messages at the end of a conversation and marks it active, in one transaction. The
// caller must have checked that the conversation is the user's.
func (s *Store) AppendMessages(ctx context.Context, conversationID uuid.UUID, msgs []NewMessage) ([]Message, error) {
	var stored []Message
	err := s.inTx(ctx, func(q *db.Queries) error {
		var err error
		if stored, err = insertMessages(ctx, q, conversationID, msgs); err != nil {
			return err
		}
		return q.TouchConversation(ctx, conversationID)
	})
	if err != nil {
		return nil, fmt.Errorf("append messages to conversation %s: %w", conversationID, interpretError(err))
	}
	return stored, nil
}

func insertMessages(ctx context.Context, q *db.Queries, conversationID uuid.UUID, msgs []NewMessage) ([]Message, error) {
	stored := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		id := m.ID
		if id == uuid.Nil {
			id = uuid.New()
		}
		params := db.CreateMessageParams{
			ID: id, ConversationID: conversationID, Role: m.Role, Content: m.Content, Status: m.Status,
			Model: m.Model, DoneReason: m.DoneReason,
		}
		if m.Usage != nil {
			params.PromptTokens, params.CompletionTokens = &m.Usage.PromptTokens, &m.Usage.CompletionTokens
		}
		row, err := q.CreateMessage(ctx, params)
		if err != nil {
			return nil, err
		}
		stored = append(stored, messageFromDB(row))
	}
	return stored, nil
}

// Messages lists all messages of a conversation in the order they were stored.
func (s *Store) Messages(ctx context.Context, conversationID uuid.UUID) ([]Message, error) {
	rows, err := s.q.ListMessages(ctx, conversationID)
	if err != nil {
		return nil, fmt.Errorf("list messages of conversation %s: %w", conversationID, interpretError(err))
	}
	return messagesFromDB(rows), nil
}

// RecentMessages lists the newest max messages of a conversation, oldest first.
func (s *Store) RecentMessages(ctx context.Context, conversationID uuid.UUID, max int32) ([]Message, error) {
	rows, err := s.q.ListRecentMessages(ctx, db.ListRecentMessagesParams{ConversationID: conversationID, MaxMessages: max})
	if err != nil {
		return nil, fmt.Errorf("list recent messages of conversation %s: %w", conversationID, interpretError(err))
	}
	return messagesFromDB(rows), nil
}
