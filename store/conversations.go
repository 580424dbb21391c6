package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/gen/db"
)

func conversationFromDB(c db.Conversation) chat.Conversation {
	return chat.Conversation{ID: c.ID, UserID: c.UserID, Title: c.Title, Model: c.Model, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// CreateConversation stores a new conversation of userID together with its first messages, in one
// transaction, unless their content would take the user past maxStoredBytes (when it is above zero).
func (s *Store) CreateConversation(ctx context.Context, userID uuid.UUID, title, model string, first []chat.NewMessage, maxStoredBytes int64) (chat.Conversation, error) {
	var conv db.Conversation
	err := s.inTx(ctx, func(q *db.Queries) error {
		if err := countStored(ctx, q, userID, first, maxStoredBytes); err != nil {
			return err
		}
		var err error
		conv, err = q.CreateConversation(ctx, db.CreateConversationParams{UserID: userID, Title: title, Model: model})
		if err != nil {
			return err
		}
		_, err = insertMessages(ctx, q, conv.ID, first)
		return err
	})
	if err != nil {
		return chat.Conversation{}, fmt.Errorf("create conversation: %w", interpretError(err, "conversation"))
	}
	return conversationFromDB(conv), nil
}

// Conversation returns the conversation id of userID; another user's conversation is a core.NotFound.
func (s *Store) Conversation(ctx context.Context, id, userID uuid.UUID) (chat.Conversation, error) {
	c, err := s.q.GetConversation(ctx, db.GetConversationParams{ID: id, UserID: userID})
	if err != nil {
		return chat.Conversation{}, fmt.Errorf("get conversation %s: %w", id, interpretError(err, "conversation"))
	}
	return conversationFromDB(c), nil
}

// Conversations returns up to limit conversations of userID, most recently active first, starting after the
// cursor when it is not nil.
func (s *Store) Conversations(ctx context.Context, userID uuid.UUID, after *chat.Cursor, limit int) ([]chat.Conversation, error) {
	params := db.ListConversationsParams{UserID: userID, PageSize: int32(limit)}
	if after != nil {
		params.AfterUpdatedAt, params.AfterID = &after.UpdatedAt, &after.ID
	}
	rows, err := s.q.ListConversations(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("list conversations: %w", interpretError(err, "conversation"))
	}
	convs := make([]chat.Conversation, len(rows))
	for i, r := range rows {
		convs[i] = conversationFromDB(r)
	}
	return convs, nil
}

// RenameConversation sets the title of a conversation of userID.
func (s *Store) RenameConversation(ctx context.Context, id, userID uuid.UUID, title string) (chat.Conversation, error) {
	c, err := s.q.UpdateConversationTitle(ctx, db.UpdateConversationTitleParams{ID: id, UserID: userID, Title: title})
	if err != nil {
		return chat.Conversation{}, fmt.Errorf("rename conversation %s: %w", id, interpretError(err, "conversation"))
	}
	return conversationFromDB(c), nil
}

// DeleteConversation deletes a conversation of userID with its messages, which no longer count as stored.
// The conversation is locked first, so that an answer being stored meanwhile is counted and freed too.
func (s *Store) DeleteConversation(ctx context.Context, id, userID uuid.UUID) error {
	err := s.inTx(ctx, func(q *db.Queries) error {
		if _, err := q.LockConversation(ctx, db.LockConversationParams{ID: id, UserID: userID}); err != nil {
			return err
		}
		return q.DeleteConversation(ctx, db.DeleteConversationParams{ID: id, UserID: userID})
	})
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, interpretError(err, "conversation"))
	}
	return nil
}
