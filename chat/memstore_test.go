package chat_test

import (
	"cmp"
	"context"
	"errors"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
)

// memStore is a chat.Store in memory, for testing the service without a database. failAnswers makes every
// store of an assistant message fail, as a database that went away mid-turn would.
type memStore struct {
	mu          sync.Mutex
	convs       map[uuid.UUID]chat.Conversation
	msgs        map[uuid.UUID][]chat.Message
	stored      map[uuid.UUID]int64 // content bytes by user
	seq         int64
	clock       time.Time
	failAnswers bool
	// failAnswerOnce makes the next append of an answer fail, as a connection that the database ended does.
	failAnswerOnce bool
}

var _ chat.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{
		convs:  make(map[uuid.UUID]chat.Conversation),
		msgs:   make(map[uuid.UUID][]chat.Message),
		stored: make(map[uuid.UUID]int64),
		clock:  time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	}
}

var errNotFound = core.Errorf(core.NotFound, "conversation not found")

// tick returns a new, later time, so that activity order is deterministic.
func (s *memStore) tick() time.Time {
	s.clock = s.clock.Add(time.Second)
	return s.clock
}

// countLocked counts msgs as stored by userID, or refuses them past maxStoredBytes, as the real store does.
func (s *memStore) countLocked(userID uuid.UUID, msgs []chat.NewMessage, maxStoredBytes int64) error {
	var n int64
	for _, m := range msgs {
		n += int64(len(m.Content))
	}
	if maxStoredBytes > 0 && s.stored[userID]+n > maxStoredBytes {
		return core.Errorf(core.StorageFull, "storage full")
	}
	s.stored[userID] += n
	return nil
}

func (s *memStore) CreateConversation(_ context.Context, userID uuid.UUID, title, model string, first []chat.NewMessage, maxStoredBytes int64) (chat.Conversation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.countLocked(userID, first, maxStoredBytes); err != nil {
		return chat.Conversation{}, err
	}
	now := s.tick()
	c := chat.Conversation{ID: uuid.New(), UserID: userID, Title: title, Model: model, CreatedAt: now, UpdatedAt: now}
	s.convs[c.ID] = c
	s.appendLocked(c.ID, first)
	return c, nil
}

func (s *memStore) Conversation(_ context.Context, id, userID uuid.UUID) (chat.Conversation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[id]
	if !ok || c.UserID != userID {
		return chat.Conversation{}, errNotFound
	}
	return c, nil
}

func (s *memStore) Conversations(_ context.Context, userID uuid.UUID, after *chat.Cursor, limit int) ([]chat.Conversation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []chat.Conversation
	for _, c := range s.convs {
		if c.UserID == userID {
			out = append(out, c)
		}
	}
	// Newest activity first, then id descending, as the store's keyset.
	slices.SortFunc(out, func(a, b chat.Conversation) int {
		return cmp.Or(b.UpdatedAt.Compare(a.UpdatedAt), cmp.Compare(b.ID.String(), a.ID.String()))
	})
	if after != nil {
		out = slices.DeleteFunc(out, func(c chat.Conversation) bool {
			return c.UpdatedAt.After(after.UpdatedAt) || c.UpdatedAt.Equal(after.UpdatedAt) && c.ID.String() >= after.ID.String()
		})
	}
	return out[:min(limit, len(out))], nil
}

func (s *memStore) RenameConversation(_ context.Context, id, userID uuid.UUID, title string) (chat.Conversation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[id]
	if !ok || c.UserID != userID {
		return chat.Conversation{}, errNotFound
	}
	c.Title, c.UpdatedAt = title, s.tick()
	s.convs[id] = c
	return c, nil
}

func (s *memStore) DeleteConversation(_ context.Context, id, userID uuid.UUID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.convs[id]
	if !ok || c.UserID != userID {
		return errNotFound
	}
	delete(s.convs, id)
	delete(s.msgs, id)
	return nil
}

func (s *memStore) AppendMessages(_ context.Context, userID, conversationID uuid.UUID, msgs []chat.NewMessage, maxStoredBytes int64) ([]chat.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (s.failAnswers || s.failAnswerOnce) && slices.ContainsFunc(msgs, func(m chat.NewMessage) bool { return m.Role == provider.RoleAssistant }) {
		s.failAnswerOnce = false
		return nil, errors.New("connection reset by peer")
	}
	if err := s.countLocked(userID, msgs, maxStoredBytes); err != nil {
		return nil, err
	}
	c := s.convs[conversationID]
	c.UpdatedAt = s.tick()
	s.convs[conversationID] = c
	return s.appendLocked(conversationID, msgs), nil
}

func (s *memStore) appendLocked(conversationID uuid.UUID, msgs []chat.NewMessage) []chat.Message {
	stored := make([]chat.Message, len(msgs))
	for i, m := range msgs {
		id := m.ID
		if id == uuid.Nil {
			id = uuid.New()
		}
		s.seq++
		stored[i] = chat.Message{
			ID: id, ConversationID: conversationID, Seq: s.seq, Role: m.Role, Content: m.Content, Status: m.Status,
			Model: m.Model, DoneReason: m.DoneReason, Usage: m.Usage, CreatedAt: s.clock,
		}
	}
	s.msgs[conversationID] = append(s.msgs[conversationID], stored...)
	return stored
}

func (s *memStore) MessagePage(_ context.Context, conversationID uuid.UUID, before int64, limit int, maxBytes int64) ([]chat.Message, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.msgs[conversationID]
	end := len(all)
	if before > 0 {
		end, _ = slices.BinarySearchFunc(all, before, func(m chat.Message, seq int64) int { return int(m.Seq - seq) })
	}
	var page []chat.Message
	var size int64
	for i := end - 1; i >= 0 && len(page) < limit && (len(page) == 0 || size+int64(len(all[i].Content)) <= maxBytes); i-- {
		page = append(page, all[i])
		size += int64(len(all[i].Content))
	}
	return page, end > len(page), nil
}

// messages returns every message of a conversation, oldest first.
func (s *memStore) messages(conversationID uuid.UUID) []chat.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs[conversationID])
}

// conversationCount returns how many conversations are stored.
func (s *memStore) conversationCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.convs)
}

// fakeModel is a provider.Provider with one model, "tiny", that answers with chunks and then ends as end says:
// a final chunk (nil), an error, a bare end of the stream (errEndWithoutFinal) or a panic (errPanic).
type fakeModel struct {
	chunks []string
	end    error
	// answeredBy, when set, is the model that answers, as a fallback would.
	answeredBy string
	// sent is the last request the model was sent.
	sent provider.ChatRequest
}

var _ chat.Models = (*fakeModel)(nil)

// Ends of the fake's stream other than an error: without a final chunk and without an error, or a panic.
var (
	errEndWithoutFinal = errors.New("end without a final chunk")
	errPanic           = errors.New("panic")
)

var fakeUsage = provider.Usage{PromptTokens: 7, CompletionTokens: 3}

func (f *fakeModel) ListModels(context.Context) ([]provider.Model, error) {
	return []provider.Model{{Name: "tiny:latest"}}, nil
}

func (f *fakeModel) ShowModel(_ context.Context, name string) (provider.ModelDetails, error) {
	if provider.SameModel(name, "tiny") {
		return provider.ModelDetails{Model: provider.Model{Name: "tiny:latest"}}, nil
	}
	return provider.ModelDetails{}, core.Errorf(core.ModelNotFound, "model not found")
}

func (f *fakeModel) ListedModel(ctx context.Context, name string) (string, error) {
	d, err := f.ShowModel(ctx, name)
	return d.Name, err
}

func (f *fakeModel) Chat(ctx context.Context, req provider.ChatRequest) (provider.ChatResponse, error) {
	f.sent = req
	if f.end != nil {
		return provider.ChatResponse{}, f.end
	}
	var text string
	for _, c := range f.chunks {
		text += c
	}
	return provider.ChatResponse{Model: f.answeredBy, Content: text, DoneReason: "stop", Usage: fakeUsage}, nil
}

func (f *fakeModel) Embed(_ context.Context, req provider.EmbedRequest) (provider.EmbedResponse, error) {
	if f.end != nil {
		return provider.EmbedResponse{}, f.end
	}
	return provider.EmbedResponse{Model: cmp.Or(f.answeredBy, req.Model), Embeddings: [][]float64{{0.5}}, PromptTokens: 5}, nil
}

// Upstream names the fake's one model server.
func (f *fakeModel) Upstream(string) string { return "local" }

func (f *fakeModel) ChatStream(ctx context.Context, req provider.ChatRequest) iter.Seq2[provider.Chunk, error] {
	f.sent = req
	return func(yield func(provider.Chunk, error) bool) {
		for _, c := range f.chunks {
			if !yield(provider.Chunk{Content: c}, nil) {
				return
			}
		}
		switch {
		case f.end == nil:
			yield(provider.Chunk{Model: f.answeredBy, Done: true, DoneReason: "stop", Usage: fakeUsage}, nil)
		case errors.Is(f.end, errEndWithoutFinal):
		case errors.Is(f.end, errPanic):
			panic("bug in the model client")
		default:
			yield(provider.Chunk{}, f.end)
		}
	}
}
