package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/db"
)

func messageFromDB(m db.Message) chat.Message {
	msg := chat.Message{
		ID: m.ID, ConversationID: m.ConversationID, Seq: m.Seq, Role: m.Role, Content: m.Content, Status: m.Status,
		Model: m.Model, DoneReason: m.DoneReason, CreatedAt: m.CreatedAt,
	}
	if m.PromptTokens != nil && m.CompletionTokens != nil {
		msg.Usage = &chat.Usage{PromptTokens: int(*m.PromptTokens), CompletionTokens: int(*m.CompletionTokens)}
	}
	return msg
}

// countStored counts the content of msgs as stored by userID: with maxStoredBytes above zero only if that
// keeps the user within it, else the error is a core.StorageFull.
func countStored(ctx context.Context, q *db.Queries, userID uuid.UUID, msgs []chat.NewMessage, maxStoredBytes int64) error {
	var n int64
	for _, m := range msgs {
		n += int64(len(m.Content))
	}
	if maxStoredBytes <= 0 {
		return q.AddStoredBytes(ctx, db.AddStoredBytesParams{UserID: userID, Bytes: n})
	}
	counted, err := q.ReserveStoredBytes(ctx, db.ReserveStoredBytesParams{UserID: userID, Bytes: n, MaxBytes: maxStoredBytes})
	if err != nil {
		return err
	}
	if counted == 0 {
		return core.Errorf(core.StorageFull,
			"these messages would take your stored content past the %d bytes you may store; delete conversations to make room", maxStoredBytes)
	}
	return nil
}

// AppendMessages stores messages at the end of a conversation of userID and marks it active, in one
// transaction, unless their content would take the user past maxStoredBytes (when it is above zero). The
// caller must have checked that the conversation is the user's.
func (s *Store) AppendMessages(ctx context.Context, userID, conversationID uuid.UUID, msgs []chat.NewMessage, maxStoredBytes int64) ([]chat.Message, error) {
	var stored []chat.Message
	err := s.inTx(ctx, func(q *db.Queries) error {
		if err := countStored(ctx, q, userID, msgs, maxStoredBytes); err != nil {
			return err
		}
		var err error
		if stored, err = insertMessages(ctx, q, conversationID, msgs); err != nil {
			return err
		}
		return q.TouchConversation(ctx, conversationID)
	})
	if err != nil {
		return nil, fmt.Errorf("append messages to conversation %s: %w", conversationID, interpretError(err, "message"))
	}
	return stored, nil
}

func insertMessages(ctx context.Context, q *db.Queries, conversationID uuid.UUID, msgs []chat.NewMessage) ([]chat.Message, error) {
	stored := make([]chat.Message, 0, len(msgs))
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
			prompt, completion := int32(m.Usage.PromptTokens), int32(m.Usage.CompletionTokens)
			params.PromptTokens, params.CompletionTokens = &prompt, &completion
		}
		row, err := q.CreateMessage(ctx, params)
		if err != nil {
			return nil, err
		}
		stored = append(stored, messageFromDB(row))
	}
	return stored, nil
}

// MessagePage returns the messages of a conversation before seq before (the newest when it is zero), newest
// first: at most limit of them and no more than maxBytes of content, though always one; and whether older
// messages exist. PostgreSQL stops reading at the page's end, so a long conversation costs one page.
func (s *Store) MessagePage(ctx context.Context, conversationID uuid.UUID, before int64, limit int, maxBytes int64) ([]chat.Message, bool, error) {
	params := db.ListMessagePageParams{ConversationID: conversationID, PageSize: int32(limit), MaxBytes: maxBytes}
	if before > 0 {
		params.BeforeSeq = &before
	}
	rows, err := s.q.ListMessagePage(ctx, params)
	if err != nil {
		return nil, false, fmt.Errorf("list messages of conversation %s: %w", conversationID, interpretError(err, "message"))
	}
	msgs := make([]chat.Message, len(rows))
	for i, r := range rows {
		msgs[i] = messageFromDB(db.Message{
			ID: r.ID, Seq: r.Seq, ConversationID: r.ConversationID, Role: r.Role, Content: r.Content, Status: r.Status,
			Model: r.Model, DoneReason: r.DoneReason, PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens,
			CreatedAt: r.CreatedAt,
		})
	}
	older := len(rows) > 0 && rows[len(rows)-1].HasOlder
	return msgs, older, nil
}
