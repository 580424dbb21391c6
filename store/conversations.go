package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/gen/db"
)

func conversationFromDB(c db.Conversation) chat.Conversation {
	return chat.Conversation{ID: c.ID, UserID: c.UserID, Title: c.Title, Model: c.Model, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// CreateConversation stores a new conversation of userID together with its first messages, in one
// statement, unless their content would take the user past maxStoredBytes (when it is above zero).
func (s *Store) CreateConversation(ctx context.Context, userID uuid.UUID, title, model string, first []chat.NewMessage, maxStoredBytes int64) (chat.Conversation, error) {
	c := columnsOf(first)
	row, err := s.q.CreateConversation(ctx, db.CreateConversationParams{
		Bytes: c.bytes, UserID: userID, MaxBytes: maxStoredBytes, Title: title, Model: model,
		Ids: c.ids, Roles: c.roles, Contents: c.contents, Statuses: c.statuses, Models: c.models, DoneReasons: c.reasons,
		PromptTokens: c.prompt, CompletionTokens: c.completion,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = notCounted(maxStoredBytes)
	}
	s.wrote(userID, row.ID)
	if err != nil {
		return chat.Conversation{}, fmt.Errorf("create conversation: %w", interpretError(err, "conversation"))
	}
	return conversationFromDB(db.Conversation(row)), nil
}

// Conversation returns the conversation id of userID; another user's conversation is a core.NotFound.
func (s *Store) Conversation(ctx context.Context, id, userID uuid.UUID) (chat.Conversation, error) {
	c, err := staleRead(ctx, s, []uuid.UUID{userID}, func(q *db.Queries) (db.Conversation, error) {
		return q.GetConversation(ctx, db.GetConversationParams{ID: id, UserID: userID})
	})
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
	rows, err := staleRead(ctx, s, []uuid.UUID{userID}, func(q *db.Queries) ([]db.Conversation, error) {
		return q.ListConversations(ctx, params)
	})
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
	s.wrote(userID, id)
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
	s.wrote(userID, id)
	if err != nil {
		return fmt.Errorf("delete conversation %s: %w", id, interpretError(err, "conversation"))
	}
	return nil
}
