package chat

import (
	"context"
	"time"

	"github.com/google/uuid"
)

// Message statuses: an answer cut short by the client or the model is stored as incomplete.
const (
	StatusComplete   = "complete"
	StatusIncomplete = "incomplete"
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

// Message is a stored message of a conversation.
type Message struct {
	ID             uuid.UUID
	ConversationID uuid.UUID
	Seq            int64 // the order of messages in their conversation, ascending
	Role           string
	Content        string
	Status         string
	Model          string
	DoneReason     string
	Usage          *Usage // set on answers whose model reported its counts
	CreatedAt      time.Time
}

// NewMessage is a message to store. A zero ID lets the store choose one.
type NewMessage struct {
	ID         uuid.UUID
	Role       string
	Content    string
	Status     string
	Model      string
	DoneReason string
	Usage      *Usage
}

// Usage counts the tokens of one model answer.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// Cursor is the position after which a page of conversations starts: the last item of the previous page.
type Cursor struct {
	UpdatedAt time.Time
	ID        uuid.UUID
}

// Store is what the service needs from the database. Every conversation is looked up with its owner, so
// that another user's conversation is a core.NotFound error like a missing one. The store keeps count of
// the message content each user stores: with maxStoredBytes above zero, messages that would take the user
// past it are a core.StorageFull error and nothing is stored; zero stores them whatever the count.
type Store interface {
	// CreateConversation stores a new conversation with its first messages, atomically.
	CreateConversation(ctx context.Context, userID uuid.UUID, title, model string, first []NewMessage, maxStoredBytes int64) (Conversation, error)
	Conversation(ctx context.Context, id, userID uuid.UUID) (Conversation, error)
	// Conversations returns up to limit conversations, most recently active first, after the cursor if any.
	Conversations(ctx context.Context, userID uuid.UUID, after *Cursor, limit int) ([]Conversation, error)
	RenameConversation(ctx context.Context, id, userID uuid.UUID, title string) (Conversation, error)
	DeleteConversation(ctx context.Context, id, userID uuid.UUID) error
	// AppendMessages stores messages at the end of a conversation of userID whose owner was checked, atomically.
	AppendMessages(ctx context.Context, userID, conversationID uuid.UUID, msgs []NewMessage, maxStoredBytes int64) ([]Message, error)
	// MessagePage returns the messages of a conversation before seq before (the newest when it is zero),
	// newest first: at most limit of them and no more than maxBytes of content, though always one; and
	// whether older messages exist.
	MessagePage(ctx context.Context, conversationID uuid.UUID, before int64, limit int, maxBytes int64) ([]Message, bool, error)
}
