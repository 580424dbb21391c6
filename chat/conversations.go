package chat

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/core"
)

// Page is one page of a user's conversations. Next is the cursor of the following page, or "" on the last.
type Page struct {
	Conversations []Conversation
	Next          string
}

// Conversations lists a page of at most limit of the user's conversations, most recently active first,
// starting after cursor (a Page.Next of an earlier call) unless it is "".
func (s *Service) Conversations(ctx context.Context, userID uuid.UUID, cursor string, limit int) (Page, error) {
	var after *Cursor
	if cursor != "" {
		c, err := ParseCursor(cursor)
		if err != nil {
			return Page{}, err
		}
		after = &c
	}
	// One more than asked tells whether another page exists.
	convs, err := s.store.Conversations(ctx, userID, after, limit+1)
	if err != nil {
		return Page{}, fmt.Errorf("list conversations: %w", err)
	}
	if len(convs) <= limit {
		return Page{Conversations: convs}, nil
	}
	convs = convs[:limit]
	last := convs[limit-1]
	return Page{Conversations: convs, Next: Cursor{UpdatedAt: last.UpdatedAt, ID: last.ID}.String()}, nil
}

// String encodes the cursor as the opaque string clients pass back: the activity time and id of the last
// conversation of a page.
func (c Cursor) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.UpdatedAt.UTC().Format(time.RFC3339Nano) + "|" + c.ID.String()))
}

// ParseCursor decodes a cursor made by Cursor.String; anything else is a core.Malformed error.
func ParseCursor(s string) (Cursor, error) {
	bad := &core.Error{Code: core.Malformed, Field: "cursor", Message: "is not a cursor from this API"}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, bad
	}
	ts, id, ok := strings.Cut(string(raw), "|")
	if !ok {
		return Cursor{}, bad
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return Cursor{}, bad
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return Cursor{}, bad
	}
	return Cursor{UpdatedAt: t, ID: u}, nil
}

// Pages of messages hold at most this much content, so that reading a long conversation costs bounded memory.
const pageBytes = 4 << 20

// NewestMessages is how many messages Conversation returns.
const NewestMessages = 100

// MessagePage is a page of a conversation's messages, oldest first. Older is the cursor of the page before
// it, or "" when there is none.
type MessagePage struct {
	Messages []Message
	Older    string
}

// Conversation returns one of the user's conversations with a page of its newest messages; another user's
// conversation is a core.NotFound error.
func (s *Service) Conversation(ctx context.Context, id, userID uuid.UUID) (Conversation, MessagePage, error) {
	conv, err := s.store.Conversation(ctx, id, userID)
	if err != nil {
		return Conversation{}, MessagePage{}, err
	}
	page, err := s.page(ctx, conv.ID, 0, NewestMessages)
	if err != nil {
		return Conversation{}, MessagePage{}, err
	}
	return conv, page, nil
}

// Messages returns the page of at most limit messages of one of the user's conversations that comes before
// the cursor before (a MessagePage.Older), or the newest when it is "".
func (s *Service) Messages(ctx context.Context, id, userID uuid.UUID, before string, limit int) (MessagePage, error) {
	var beforeSeq int64
	if before != "" {
		seq, err := core.ParsePositionCursor("before", before)
		if err != nil {
			return MessagePage{}, err
		}
		beforeSeq = seq
	}
	conv, err := s.store.Conversation(ctx, id, userID)
	if err != nil {
		return MessagePage{}, err
	}
	return s.page(ctx, conv.ID, beforeSeq, limit)
}

func (s *Service) page(ctx context.Context, conversationID uuid.UUID, before int64, limit int) (MessagePage, error) {
	msgs, older, err := s.store.MessagePage(ctx, conversationID, before, limit, pageBytes)
	if err != nil {
		return MessagePage{}, fmt.Errorf("messages of conversation %s: %w", conversationID, err)
	}
	slices.Reverse(msgs)
	page := MessagePage{Messages: msgs}
	if older && len(msgs) > 0 {
		page.Older = core.PositionCursor(msgs[0].Seq)
	}
	return page, nil
}

// Rename sets the title of one of the user's conversations, trimmed of white space; it must not be blank.
func (s *Service) Rename(ctx context.Context, id, userID uuid.UUID, title string) (Conversation, error) {
	title = strings.TrimSpace(title)
	if err := checkText("title", title); err != nil {
		return Conversation{}, err
	}
	return s.store.RenameConversation(ctx, id, userID, title)
}

// Delete deletes one of the user's conversations with its messages.
func (s *Service) Delete(ctx context.Context, id, userID uuid.UUID) error {
	return s.store.DeleteConversation(ctx, id, userID)
}
