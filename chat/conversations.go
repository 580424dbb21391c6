package chat

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/store"
)

// Conversations lists a page of the user's conversations, most recently active first.
func (s *Service) Conversations(ctx context.Context, userID uuid.UUID, after *store.ConversationCursor, limit int32) ([]store.Conversation, error) {
	return s.store.Conversations(ctx, userID, after, limit)
}

// Conversation returns one of the user's conversations with all its messages; another user's conversation
// is store.ErrNotFound.
func (s *Service) Conversation(ctx context.Context, id, userID uuid.UUID) (store.Conversation, []store.Message, error) {
	conv, err := s.store.Conversation(ctx, id, userID)
	if err != nil {
		return store.Conversation{}, nil, err
	}
	msgs, err := s.store.Messages(ctx, conv.ID)
	if err != nil {
		return store.Conversation{}, nil, fmt.Errorf("conversation %s: %w", id, err)
	}
	return conv, msgs, nil
}

// Rename sets the title of one of the user's conversations.
func (s *Service) Rename(ctx context.Context, id, userID uuid.UUID, title string) (store.Conversation, error) {
	return s.store.RenameConversation(ctx, id, userID, title)
}

// Delete deletes one of the user's conversations with its messages.
func (s *Service) Delete(ctx context.Context, id, userID uuid.UUID) error {
	return s.store.DeleteConversation(ctx, id, userID)
}
