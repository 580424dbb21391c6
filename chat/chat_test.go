package chat_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/provider"
)

// testLimits are the service's defaults.
var testLimits = chat.Limits{HistoryMessages: 50, HistoryBytes: 1 << 20, MaxContext: 32768, MaxPredict: 4096, MaxStoredBytes: 256 << 20}

func newService(st *memStore, model *fakeModel) *chat.Service {
	return newServiceWithin(st, model, testLimits)
}

func newServiceWithin(st *memStore, model *fakeModel, limits chat.Limits) *chat.Service {
	return chat.NewService(st, model, nil, nil, limits, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func userSays(text string) []provider.Message {
	return []provider.Message{{Role: provider.RoleUser, Content: text}}
}

// TestStreamEndings drives a streamed turn to each way it can end and checks what was stored and when: the
// answer must be in the store before the consumer sees the final chunk or the error.
func TestStreamEndings(t *testing.T) {
	midway := core.Errorf(core.UpstreamFailed, "the model provider failed in the middle of the answer")
	tests := []struct {
		name        string
		end         error
		stopAfter   int // the consumer breaks after this many chunks; 0 reads to the end
		failAnswers bool
		failOnce    bool
		wantStatus  string
		wantContent string
		wantCode    core.Code // of the error the consumer is given; "" for none
		wantUsage   bool
	}{
		{name: "complete", wantStatus: chat.StatusComplete, wantContent: "Hello there", wantUsage: true},
		{name: "model fails midway", end: midway, wantStatus: chat.StatusIncomplete, wantContent: "Hello there",
			wantCode: core.UpstreamFailed},
		{name: "stream ends without a final chunk", end: errEndWithoutFinal, wantStatus: chat.StatusIncomplete,
			wantContent: "Hello there", wantCode: core.UpstreamFailed},
		{name: "consumer stops early", stopAfter: 1, wantStatus: chat.StatusIncomplete, wantContent: "Hello"},
		{name: "answer cannot be stored", failAnswers: true, wantCode: core.NotStored},
		{name: "answer stored at the second try", failOnce: true, wantStatus: chat.StatusComplete, wantContent: "Hello there", wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			model := &fakeModel{chunks: []string{"Hello", " there"}, end: tt.end}
			svc := newService(st, model)
			ctx := context.Background()
			user := uuid.New()
			turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("hi")})
			if err != nil {
				t.Fatal(err)
			}
			st.failAnswers, st.failAnswerOnce = tt.failAnswers, tt.failOnce

			answer := func() *chat.Message {
				msgs := st.messages(turn.Conversation.ID)
				for _, m := range msgs {
					if m.ID == turn.AnswerID {
						return &m
					}
				}
				return nil
			}
			var gotErr error
			seen := 0
			for chunk, err := range turn.Stream(ctx) {
				if err != nil {
					gotErr = err
					if tt.wantStatus != "" && answer() == nil {
						t.Error("the error came before the partial answer was stored")
					}
					break
				}
				if chunk.Done && answer() == nil {
					t.Error("the final chunk came before the answer was stored")
				}
				if seen++; seen == tt.stopAfter {
					break
				}
			}

			if got := core.ErrorCode(gotErr); got != tt.wantCode {
				t.Errorf("error code = %q (%v), want %q", got, gotErr, tt.wantCode)
			}
			stored := answer()
			if tt.wantStatus == "" {
				if stored != nil {
					t.Errorf("an answer was stored: %+v", stored)
				}
				return
			}
			if stored == nil {
				t.Fatal("no answer stored")
			}
			if stored.Status != tt.wantStatus || stored.Content != tt.wantContent || stored.Model != "tiny" {
				t.Errorf("stored %q %q by %q, want %q %q by tiny", stored.Status, stored.Content, stored.Model, tt.wantStatus, tt.wantContent)
			}
			if (stored.Usage != nil) != tt.wantUsage {
				t.Errorf("stored usage = %+v, want usage: %v", stored.Usage, tt.wantUsage)
			}
			msgs := st.messages(turn.Conversation.ID)
			if len(msgs) != 2 || msgs[0].Role != provider.RoleUser || msgs[0].Content != "hi" {
				t.Errorf("messages = %+v, want the user's message, then the answer", msgs)
			}
		})
	}
}

func TestComplete(t *testing.T) {
	tests := []struct {
		name      string
		end       error
		wantCode  core.Code
		wantMsgs  int
		wantUsage *chat.Usage
	}{
		{name: "answered", wantMsgs: 2, wantUsage: &chat.Usage{PromptTokens: 7, CompletionTokens: 3}},
		{name: "model unavailable keeps the user's message", end: core.Errorf(core.UpstreamUnavailable, "the model provider is unavailable"),
			wantCode: core.UpstreamUnavailable, wantMsgs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			svc := newService(st, &fakeModel{chunks: []string{"Hi", "!"}, end: tt.end})
			ctx := context.Background()
			turn, err := svc.Begin(ctx, chat.Request{UserID: uuid.New(), Model: "tiny", Messages: userSays("hello")})
			if err != nil {
				t.Fatal(err)
			}
			answer, err := turn.Complete(ctx)
			if got := core.ErrorCode(err); got != tt.wantCode {
				t.Fatalf("error code = %q (%v), want %q", got, err, tt.wantCode)
			}
			msgs := st.messages(turn.Conversation.ID)
			if len(msgs) != tt.wantMsgs {
				t.Fatalf("stored %d messages, want %d", len(msgs), tt.wantMsgs)
			}
			if tt.wantUsage == nil {
				return
			}
			if answer.Content != "Hi!" || answer.Status != chat.StatusComplete || *answer.Usage != *tt.wantUsage || answer.ID != turn.AnswerID {
				t.Errorf("answer = %+v, want Hi! complete with usage %+v", answer, *tt.wantUsage)
			}
		})
	}
}

// TestBeginRefusesBeforeStoring checks that a turn that cannot go ahead stores nothing at all.
func TestBeginRefusesBeforeStoring(t *testing.T) {
	tests := []struct {
		name     string
		req      chat.Request
		wantCode core.Code
	}{
		{"unknown model", chat.Request{Model: "nope", Messages: userSays("hi")}, core.ModelNotFound},
		{"blank message", chat.Request{Model: "tiny", Messages: userSays(" \n\t")}, core.Invalid},
		{"NUL in a message", chat.Request{Model: "tiny", Messages: userSays("a\x00b")}, core.Invalid},
		{"another user's conversation", chat.Request{Model: "tiny", Messages: userSays("hi"), ConversationID: new(uuid.New())}, core.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			svc := newService(st, &fakeModel{})
			tt.req.UserID = uuid.New()
			_, err := svc.Begin(context.Background(), tt.req)
			if got := core.ErrorCode(err); got != tt.wantCode {
				t.Errorf("error code = %q (%v), want %q", got, err, tt.wantCode)
			}
			if n := st.conversationCount(); n != 0 {
				t.Errorf("%d conversations stored, want none", n)
			}
		})
	}
}

// TestHistoryIsSent checks that a turn in an existing conversation sends the stored history, then the new
// messages, and that the title comes from the first message.
func TestHistoryIsSent(t *testing.T) {
	st := newMemStore()
	model := &fakeModel{chunks: []string{"ok"}}
	svc := newService(st, model)
	ctx := context.Background()
	user := uuid.New()
	first, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("  What is\n\n a   GCRA? " + strings.Repeat("x", 80))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	if first.Model() != "tiny" || first.ListedModel() != "tiny:latest" {
		t.Errorf("model %q listed as %q, want tiny listed as tiny:latest", first.Model(), first.ListedModel())
	}
	if title := first.Conversation.Title; !strings.HasPrefix(title, "What is a GCRA? x") || len([]rune(title)) != 60 || !strings.HasSuffix(title, "…") {
		t.Errorf("title = %q, want the first message collapsed and shortened to 60 runes", title)
	}
	second, err := svc.Begin(ctx, chat.Request{UserID: user, ConversationID: &first.Conversation.ID, Model: "tiny", Messages: userSays("and then?")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for _, m := range model.sent.Messages {
		sent = append(sent, m.Role+":"+strings.Fields(m.Content)[0])
	}
	if got, want := strings.Join(sent, " "), "user:What assistant:ok user:and"; got != want {
		t.Errorf("sent %q, want %q", got, want)
	}
}

func TestConversations(t *testing.T) {
	st := newMemStore()
	svc := newService(st, &fakeModel{chunks: []string{"ok"}})
	ctx := context.Background()
	user, other := uuid.New(), uuid.New()
	var ids []uuid.UUID
	for range 5 {
		turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("hi")})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, turn.Conversation.ID)
	}
	if _, err := svc.Begin(ctx, chat.Request{UserID: other, Model: "tiny", Messages: userSays("hi")}); err != nil {
		t.Fatal(err)
	}

	t.Run("pages", func(t *testing.T) {
		var got []uuid.UUID
		cursor := ""
		for pages := 0; ; pages++ {
			page, err := svc.Conversations(ctx, user, cursor, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page.Conversations {
				got = append(got, c.ID)
			}
			if page.Next == "" {
				if pages != 2 {
					t.Errorf("%d pages, want 3", pages+1)
				}
				break
			}
			cursor = page.Next
		}
		want := []uuid.UUID{ids[4], ids[3], ids[2], ids[1], ids[0]}
		if len(got) != len(want) {
			t.Fatalf("got %d conversations, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("item %d = %s, want %s (newest first)", i, got[i], want[i])
			}
		}
	})
	t.Run("bad cursor", func(t *testing.T) {
		_, err := svc.Conversations(ctx, user, "not-a-cursor", 2)
		if e, ok := errors.AsType[*core.Error](err); !ok || e.Code != core.Malformed || e.Field != "cursor" {
			t.Errorf("error = %v, want a malformed cursor", err)
		}
	})
	t.Run("rename", func(t *testing.T) {
		conv, err := svc.Rename(ctx, ids[0], user, "  Renamed \n")
		if err != nil || conv.Title != "Renamed" {
			t.Errorf("Rename = %q, %v; want the title trimmed", conv.Title, err)
		}
		for _, title := range []string{" \t ", "a\x00b"} {
			if _, err := svc.Rename(ctx, ids[0], user, title); core.ErrorCode(err) != core.Invalid {
				t.Errorf("title %q: %v, want invalid", title, err)
			}
		}
		if _, err := svc.Rename(ctx, ids[0], other, "mine now"); core.ErrorCode(err) != core.NotFound {
			t.Errorf("another user's rename: %v, want not found", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := svc.Delete(ctx, ids[1], other); core.ErrorCode(err) != core.NotFound {
			t.Errorf("another user's delete: %v, want not found", err)
		}
		if err := svc.Delete(ctx, ids[1], user); err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Conversation(ctx, ids[1], user); core.ErrorCode(err) != core.NotFound {
			t.Errorf("deleted conversation: %v, want not found", err)
		}
	})
}

func FuzzParseCursor(f *testing.F) {
	f.Add(chat.Cursor{UpdatedAt: time.Date(2026, 11, 25, 10, 0, 0, 123456000, time.UTC), ID: uuid.MustParse("6a1f0c55-3f5e-4f8e-bb5c-0d7c8d0f2a10")}.String())
	f.Add("")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := chat.ParseCursor(s)
		if err != nil {
			if core.ErrorCode(err) != core.Malformed {
				t.Fatalf("ParseCursor(%q) = %v, want a malformed error", s, err)
			}
			return
		}
		if again, err := chat.ParseCursor(c.String()); err != nil || !again.UpdatedAt.Equal(c.UpdatedAt) || again.ID != c.ID {
			t.Fatalf("cursor %q does not round-trip: %+v", s, c)
		}
	})
}

// TestStreamPanicStoresThePartialAnswer checks that a panic in the model's stream, which the HTTP layer
// recovers, still leaves the partial answer stored as incomplete.
func TestStreamPanicStoresThePartialAnswer(t *testing.T) {
	st := newMemStore()
	svc := newService(st, &fakeModel{chunks: []string{"Hello", " there"}, end: errPanic})
	ctx := context.Background()
	turn, err := svc.Begin(ctx, chat.Request{UserID: uuid.New(), Model: "tiny", Messages: userSays("hi")})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Error("the panic did not reach the consumer")
			}
		}()
		for range turn.Stream(ctx) {
		}
	}()
	msgs := st.messages(turn.Conversation.ID)
	if len(msgs) != 2 || msgs[1].Status != chat.StatusIncomplete || msgs[1].Content != "Hello there" {
		t.Errorf("messages = %+v, want the partial answer stored as incomplete", msgs)
	}
}

func TestOptionsWithinLimits(t *testing.T) {
	tests := []struct {
		name      string
		options   map[string]any
		wantField string // of the Invalid error; "" for none
	}{
		{"none", nil, ""},
		{"largest context", map[string]any{"num_ctx": float64(32768)}, ""},
		{"context too large", map[string]any{"num_ctx": float64(1048576)}, "options.num_ctx"},
		{"no context", map[string]any{"num_ctx": float64(0)}, "options.num_ctx"},
		{"largest prediction", map[string]any{"num_predict": float64(4096)}, ""},
		{"prediction too long", map[string]any{"num_predict": float64(4097)}, "options.num_predict"},
		{"endless prediction", map[string]any{"num_predict": float64(-1)}, "options.num_predict"},
		{"no prediction", map[string]any{"num_predict": 0}, "options.num_predict"},
		{"other options pass", map[string]any{"temperature": 0.5, "seed": float64(42)}, ""},
		{"an option of the model server", map[string]any{"num_gpu": float64(0)}, "options.num_gpu"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			model := &fakeModel{chunks: []string{"ok"}}
			_, err := newService(st, model).Begin(context.Background(),
				chat.Request{UserID: uuid.New(), Model: "tiny", Messages: userSays("hi"), Options: tt.options})
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Begin: %v", err)
				}
				return
			}
			if e, ok := errors.AsType[*core.Error](err); !ok || e.Code != core.Invalid || e.Field != tt.wantField {
				t.Errorf("Begin = %v, want an invalid %s", err, tt.wantField)
			}
			if st.conversationCount() != 0 {
				t.Error("a refused turn stored a conversation")
			}
		})
	}
}

// TestStorageCap checks that a turn that would take its user past the content they may store is refused
// before anything is stored, while answers are stored whatever the count.
func TestStorageCap(t *testing.T) {
	st := newMemStore()
	limits := testLimits
	limits.MaxStoredBytes = 10
	svc := newServiceWithin(st, &fakeModel{chunks: []string{"a long answer past the cap"}}, limits)
	ctx := context.Background()
	user := uuid.New()
	turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("12345")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := turn.Complete(ctx); err != nil {
		t.Fatalf("the answer was not stored past the cap: %v", err)
	}
	for _, req := range []chat.Request{
		{UserID: user, Model: "tiny", Messages: userSays("6")},
		{UserID: user, Model: "tiny", Messages: userSays("6"), ConversationID: &turn.Conversation.ID},
	} {
		if _, err := svc.Begin(ctx, req); core.ErrorCode(err) != core.StorageFull {
			t.Errorf("Begin past the cap = %v, want storage full", err)
		}
	}
	if n, msgs := st.conversationCount(), st.messages(turn.Conversation.ID); n != 1 || len(msgs) != 2 {
		t.Errorf("%d conversations, %d messages stored; want the first turn only", n, len(msgs))
	}
	other := uuid.New()
	if _, err := svc.Begin(ctx, chat.Request{UserID: other, Model: "tiny", Messages: userSays("1234567890")}); err != nil {
		t.Errorf("another user was refused: %v", err)
	}
}

// TestMessagePages pages back through a conversation and checks that every page keeps to its count and to
// its content bound, and that together they hold every message once, in order.
func TestMessagePages(t *testing.T) {
	st := newMemStore()
	model := &fakeModel{chunks: []string{"ok"}}
	svc := newService(st, model)
	ctx := context.Background()
	user := uuid.New()
	big := strings.Repeat("x", 1536<<10) // three of them pass the 4 MiB of a page
	turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("first")})
	if err != nil {
		t.Fatal(err)
	}
	id := turn.Conversation.ID
	for _, text := range []string{"a", "b", big, big, big, "c"} {
		if _, err := svc.Begin(ctx, chat.Request{UserID: user, ConversationID: &id, Model: "tiny", Messages: userSays(text)}); err != nil {
			t.Fatal(err)
		}
	}

	conv, newest, err := svc.Conversation(ctx, id, user)
	if err != nil || conv.ID != id {
		t.Fatal(err)
	}
	// Newest first: c, then two of the big ones; the third would pass 4 MiB.
	if got := len(newest.Messages); got != 3 || newest.Messages[2].Content != "c" || newest.Older == "" {
		t.Fatalf("newest page has %d messages, older %q; want 3 ending with c, and a cursor", got, newest.Older)
	}
	var all []string
	for _, m := range newest.Messages {
		all = append(all, m.Content[:1])
	}
	cursor := newest.Older
	for pages := 0; cursor != ""; pages++ {
		page, err := svc.Messages(ctx, id, user, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) == 0 || len(page.Messages) > 2 || pages > 10 {
			t.Fatalf("page of %d messages", len(page.Messages))
		}
		var head []string
		for _, m := range page.Messages {
			head = append(head, m.Content[:1])
		}
		all = append(head, all...)
		cursor = page.Older
	}
	if got, want := strings.Join(all, ""), "fabxxxc"; got != want {
		t.Errorf("all pages = %q, want %q", got, want)
	}

	if _, err := svc.Messages(ctx, id, uuid.New(), "", 10); core.ErrorCode(err) != core.NotFound {
		t.Errorf("another user's messages: %v, want not found", err)
	}
	if _, err := svc.Messages(ctx, id, user, "bm90IGEgc2Vx", 10); core.ErrorCode(err) != core.Malformed {
		t.Errorf("a bad cursor: %v, want malformed", err)
	}
}

// TestHistoryBytes checks that the history sent to the model keeps to its content bound.
func TestHistoryBytes(t *testing.T) {
	st := newMemStore()
	model := &fakeModel{chunks: []string{"ok"}}
	limits := testLimits
	limits.HistoryBytes = 10
	svc := newServiceWithin(st, model, limits)
	ctx := context.Background()
	user := uuid.New()
	turn, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: userSays("0123456789 long")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := turn.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := svc.Begin(ctx, chat.Request{UserID: user, ConversationID: &turn.Conversation.ID, Model: "tiny", Messages: userSays("next")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := next.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	// The answer "ok" fits in 10 bytes; the first message does not.
	if n := len(model.sent.Messages); n != 2 || model.sent.Messages[0].Content != "ok" {
		t.Errorf("sent %+v, want the answer and the new message", model.sent.Messages)
	}
}

// TestStatelessAndClientHistory checks the turns of the compatible APIs: a stateless turn stores nothing and
// sends only what the client sent; a turn whose client keeps the history stores only its last message.
func TestStatelessAndClientHistory(t *testing.T) {
	ctx := context.Background()
	history := []provider.Message{
		{Role: provider.RoleSystem, Content: "be brief"},
		{Role: provider.RoleUser, Content: "hi"},
		{Role: provider.RoleAssistant, Content: "hello"},
		{Role: provider.RoleUser, Content: "and now?"},
	}
	t.Run("stateless", func(t *testing.T) {
		st := newMemStore()
		model := &fakeModel{chunks: []string{"ok"}}
		turn, err := newService(st, model).Begin(ctx, chat.Request{UserID: uuid.New(), Model: "tiny", Messages: history, Stateless: true})
		if err != nil {
			t.Fatal(err)
		}
		var text string
		for chunk, err := range turn.Stream(ctx) {
			if err != nil {
				t.Fatal(err)
			}
			text += chunk.Content
		}
		if text != "ok" || len(model.sent.Messages) != 4 || st.conversationCount() != 0 {
			t.Errorf("answer %q, sent %d messages, %d conversations stored; want ok, 4, none", text, len(model.sent.Messages), st.conversationCount())
		}
		answer, err := turn.Complete(ctx)
		if err != nil || answer.Content != "ok" || answer.ID != turn.AnswerID || st.conversationCount() != 0 {
			t.Errorf("Complete = %+v, %v; want the answer, nothing stored", answer, err)
		}
	})
	t.Run("client history", func(t *testing.T) {
		st := newMemStore()
		model := &fakeModel{chunks: []string{"ok"}}
		svc := newService(st, model)
		user := uuid.New()
		first, err := svc.Begin(ctx, chat.Request{UserID: user, Model: "tiny", Messages: history[:2], ClientHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := first.Complete(ctx); err != nil {
			t.Fatal(err)
		}
		next, err := svc.Begin(ctx, chat.Request{UserID: user, ConversationID: &first.Conversation.ID, Model: "tiny", Messages: history, ClientHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := next.Complete(ctx); err != nil {
			t.Fatal(err)
		}
		var stored []string
		for _, m := range st.messages(first.Conversation.ID) {
			stored = append(stored, m.Content)
		}
		if got := strings.Join(stored, "|"); got != "hi|ok|and now?|ok" || len(model.sent.Messages) != 4 {
			t.Errorf("stored %q and sent %d messages; want each turn's last message and answer, and the client's 4", got, len(model.sent.Messages))
		}
	})
}
