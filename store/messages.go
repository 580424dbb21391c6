package store

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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

// noTokens stands for a token count the model did not report, in the arrays of the queries that store
// messages, which store it as NULL.
const noTokens = -1

// messageColumns are messages to store as the queries take them: one array per column, one element per
// message in order, and the bytes of their content, counted against the user's cap.
type messageColumns struct {
	ids                                        []uuid.UUID
	roles, contents, statuses, models, reasons []string
	prompt, completion                         []int32
	bytes                                      int64
}

func columnsOf(msgs []chat.NewMessage) messageColumns {
	n := len(msgs)
	c := messageColumns{
		ids: make([]uuid.UUID, n), roles: make([]string, n), contents: make([]string, n), statuses: make([]string, n),
		models: make([]string, n), reasons: make([]string, n), prompt: make([]int32, n), completion: make([]int32, n),
	}
	for i, m := range msgs {
		c.ids[i] = m.ID
		if m.ID == uuid.Nil {
			c.ids[i] = uuid.New()
		}
		c.roles[i], c.contents[i], c.statuses[i], c.models[i], c.reasons[i] = m.Role, m.Content, m.Status, m.Model, m.DoneReason
		c.prompt[i], c.completion[i] = noTokens, noTokens
		if m.Usage != nil {
			c.prompt[i], c.completion[i] = int32(m.Usage.PromptTokens), int32(m.Usage.CompletionTokens)
		}
		c.bytes += int64(len(m.Content))
	}
	return c
}

// notCounted is the error of a store query that returned no row because it did not count the messages:
// with maxStoredBytes above zero a core.StorageFull, else the user is gone (pgx.ErrNoRows).
func notCounted(maxStoredBytes int64) error {
	if maxStoredBytes > 0 {
		return core.Errorf(core.StorageFull,
			"these messages would take your stored content past the %d bytes you may store; delete conversations to make room", maxStoredBytes)
	}
	return pgx.ErrNoRows
}

// AppendMessages stores messages at the end of a conversation of userID and marks it active, in one
// statement, unless their content would take the user past maxStoredBytes (when it is above zero); without
// messages it does nothing. The caller must have checked that the conversation is the user's.
func (s *Store) AppendMessages(ctx context.Context, userID, conversationID uuid.UUID, msgs []chat.NewMessage, maxStoredBytes int64) ([]chat.Message, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	c := columnsOf(msgs)
	rows, err := s.q.AppendMessages(ctx, db.AppendMessagesParams{
		Bytes: c.bytes, UserID: userID, MaxBytes: maxStoredBytes, ConversationID: conversationID,
		Ids: c.ids, Roles: c.roles, Contents: c.contents, Statuses: c.statuses, Models: c.models, DoneReasons: c.reasons,
		PromptTokens: c.prompt, CompletionTokens: c.completion,
	})
	if err == nil && len(rows) == 0 {
		err = notCounted(maxStoredBytes)
	}
	s.wrote(userID, conversationID)
	if err != nil {
		return nil, fmt.Errorf("append messages to conversation %s: %w", conversationID, interpretError(err, "message"))
	}
	stored := make([]chat.Message, len(rows))
	for i, r := range rows {
		// The rows come in the order of the messages, as the query inserts them.
		m := msgs[i]
		stored[i] = chat.Message{
			ID: r.ID, ConversationID: conversationID, Seq: r.Seq, Role: m.Role, Content: m.Content, Status: m.Status,
			Model: m.Model, DoneReason: m.DoneReason, Usage: m.Usage, CreatedAt: r.CreatedAt,
		}
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
	rows, err := staleRead(ctx, s, []uuid.UUID{conversationID}, func(q *db.Queries) ([]db.ListMessagePageRow, error) {
		return q.ListMessagePage(ctx, params)
	})
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
