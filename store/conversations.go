package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/db"
)

// Conversation is a user's chat with a model.
type Conversation struct {
	ID        uuid.UUID
	UserID    uuid.UUID
	Title     string
	Model     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ConversationCursor is the position after which a page of conversations starts: the last item of the
// previous page.
type ConversationCursor struct {
	UpdatedAt time.Time
	ID        uuid.UUID
}

func conversationFromDB(c db.Conversation) Conversation {
	return Conversation{ID: c.ID, UserID: c.UserID, Title: c.Title, Model: c.Model, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// CreateConversation stores a new conversation of userID together with its first messages, in one transaction.
func (s *Store) CreateConversation(ctx context.Context, userID uuid.UUID, title, model string, first []NewMessage) (Conversation, []Message, error) {
	var (
		conv db.Conversation
		msgs []Message
	)
	err := s.inTx(ctx, func(q *db.Queries) error {
		var err error
		conv, err = q.CreateConversation(ctx, db.CreateConversationParams{UserID: userID, Title: title, Model: model})
		if err != nil {
			return err
		}
		msgs, err = insertMessages(ctx, q, conv.ID, first)
		return err
	})
	if err != nil {
		return Conversation{}, nil, fmt.Errorf("create conversation: %w", interpretError(err))
	}
	return conversationFromDB(conv), msgs, nil
}

// Conversation returns the conversation id of userID; another user's conversation is ErrNotFound.
func (s *Store) Conversation(ctx context.Context, id, userID uuid.UUID) (Conversation, error) {
	c, err := s.q.GetConversation(ctx, db.GetConversationParams{ID: id, UserID: userID})
	if err != nil {
		return Conversation{}, fmt.Errorf("get conversation %s: %w", id, interpretError(err))
	}
	return conversationFromDB(c), nil
}

// Conversations returns up to limit conversations of userID, most recently active first, starting after the
// cursor when it is not nil.
func (s *Store) Conversations(ctx context.Context, userID uuid.UUID, after *ConversationCursor, limit int32) ([]Conversation, error) {
	params := db.ListConversationsParams{UserID: userID, PageSize: limit}
	if after != nil {
		params.AfterUpdatedAt, params.AfterID = &after.UpdatedAt, &after.ID
	}
	rows, err := s.q.ListConversations(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", interpretError(err))
	}
	convs := make([]Conversation, len(rows))
	for i, r := range rows {
		convs[i] = conversationFromDB(r)
	}
	return convs, nil
}

// RenameConversation sets the title of a conversation of userID.
func (s *Store) RenameConversation(ctx context.Context, id, userID uuid.UUID, title string) (Conversation, error) {
	c, err := s.q.UpdateConversationTitle(ctx, db.UpdateConversationTitleParams{ID: id, UserID: userID, Title: title})
	if err != nil {
		return Conversation{}, fmt.Errorf("rename conversation %s: %w", id, interpretError(err))
	}
	return conversationFromDB(c), nil
}

// DeleteConversation deletes a conversation of userID with its messages.
func (s *Store) DeleteConversation(ctx context.Context, id, userID uuid.UUID) error {
	n, err := s.q.DeleteConversation(ctx, db.DeleteConversationParams{ID: id, UserID: userID})
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, interpretError(err))
	}
	if n == 0 {
		return fmt.Errorf("delete conversation %s: %w", id, ErrNotFound)
	}
	return nil
}
