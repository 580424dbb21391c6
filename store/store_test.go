package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/store"
)

// pool is one migrated database for the package; every test works in a transaction of its own on it that
// is rolled back at its end.
var pool *pgxpool.Pool

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx := context.Background()
	url, drop, err := dbtest.CreateDatabase(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := drop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	if pool, err = dbtest.Open(ctx, url); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pool.Close()
	return m.Run()
}

// newStore returns a store on a transaction of the test, and the transaction for arranging rows.
func newStore(t *testing.T) (*store.Store, pgx.Tx) {
	t.Helper()
	tx := dbtest.Tx(t, pool)
	return store.New(tx), tx
}

func mustUser(t *testing.T, st *store.Store, email string) auth.User {
	t.Helper()
	u, err := st.CreateUser(context.Background(), email, "hash-of-"+email)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func wantCode(t *testing.T, what string, err error, want core.Code) {
	t.Helper()
	if got := core.ErrorCode(err); got != want {
		t.Errorf("%s: error %v has code %q, want %q", what, err, got, want)
	}
}

func TestUsers(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "Ada@Example.com")

	creds, err := st.CredentialsByEmail(ctx, "ADA@example.com")
	if err != nil || creds.ID != ada.ID || creds.PasswordHash != "hash-of-Ada@Example.com" || creds.Email != "Ada@Example.com" {
		t.Errorf("CredentialsByEmail = %+v, %v; want Ada's account and hash", creds, err)
	}
	_, err = st.CredentialsByEmail(ctx, "nobody@example.com")
	wantCode(t, "unknown email", err, core.NotFound)

	if err := st.UpdatePasswordHash(ctx, ada.ID, "new-hash"); err != nil {
		t.Fatal(err)
	}
	if creds, _ := st.CredentialsByEmail(ctx, ada.Email); creds.PasswordHash != "new-hash" {
		t.Errorf("hash after update = %q", creds.PasswordHash)
	}
	got, err := st.UserByID(ctx, ada.ID)
	if err != nil || got != ada {
		t.Errorf("UserByID = %+v, %v; want %+v", got, err, ada)
	}
	if byID, err := st.CredentialsByID(ctx, ada.ID); err != nil || byID.User != ada || byID.PasswordHash != "new-hash" {
		t.Errorf("CredentialsByID = %+v, %v; want Ada's account and hash", byID, err)
	}
	_, err = st.UserByID(ctx, uuid.New())
	wantCode(t, "unknown id", err, core.NotFound)

	// Last: a failed statement ends the test's transaction.
	_, err = st.CreateUser(ctx, "ada@example.COM", "other")
	wantCode(t, "same email in other letter case", err, core.Conflict)
}

func TestRefreshTokens(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	family := uuid.New()
	later := time.Now().Add(time.Hour)
	if err := st.CreateRefreshToken(ctx, family, ada.ID, []byte("t1"), later); err != nil {
		t.Fatal(err)
	}

	// The family started long ago: rotation keeps its start, and refuses once it is older than allowed.
	started := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := tx.Exec(ctx, "UPDATE refresh_tokens SET family_started_at = $1 WHERE token_hash = 't1'", started); err != nil {
		t.Fatal(err)
	}
	longAgo := started.Add(-time.Hour)
	used, err := st.RotateRefreshToken(ctx, []byte("t1"), []byte("t2"), later, longAgo)
	if err != nil || used.FamilyID != family || used.UserID != ada.ID || used.UsedAt == nil || !used.FamilyStartedAt.Equal(started) {
		t.Fatalf("rotate a live token = %+v, %v", used, err)
	}
	next, err := st.RefreshTokenByHash(ctx, []byte("t2"))
	if err != nil || next.FamilyID != family || next.UsedAt != nil || !next.FamilyStartedAt.Equal(started) {
		t.Errorf("the new token = %+v, %v; want a live token of the same family, started when it did", next, err)
	}

	// notLive rotates a token that must not rotate, with families allowed since startedAfter.
	notLive := func(what string, hash []byte, startedAfter time.Time) *auth.RefreshToken {
		t.Helper()
		_, err := st.RotateRefreshToken(ctx, hash, []byte(what), later, startedAfter)
		e, ok := errors.AsType[*auth.RefreshNotLiveError](err)
		if !ok {
			t.Fatalf("%s: rotate = %v, want a RefreshNotLiveError", what, err)
		}
		if _, err := st.RefreshTokenByHash(ctx, []byte(what)); core.ErrorCode(err) != core.NotFound {
			t.Errorf("%s: a new token was stored although the old one is not live", what)
		}
		return e.Token
	}
	if tok := notLive("reuse", []byte("t1"), longAgo); tok == nil || tok.UsedAt == nil || tok.RevokedAt != nil {
		t.Errorf("reused token state = %+v, want used and not revoked", tok)
	}
	if tok := notLive("unknown", []byte("nope"), longAgo); tok != nil {
		t.Errorf("unknown token state = %+v, want nil", tok)
	}
	if tok := notLive("too old", []byte("t2"), started.Add(time.Second)); tok == nil || tok.UsedAt != nil || tok.RevokedAt != nil {
		t.Errorf("state of a token of a family too old = %+v, want known, unused and not revoked", tok)
	}
	if _, err := tx.Exec(ctx, "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = 't2'"); err != nil {
		t.Fatal(err)
	}
	if tok := notLive("expired", []byte("t2"), longAgo); tok == nil || tok.UsedAt != nil {
		t.Errorf("expired token state = %+v, want known and unused", tok)
	}

	if err := st.CreateRefreshToken(ctx, family, ada.ID, []byte("t3"), later); err != nil {
		t.Fatal(err)
	}
	n, err := st.RevokeRefreshTokenFamily(ctx, family)
	if err != nil || n != 3 {
		t.Errorf("revoke family = %d, %v; want 3 tokens revoked", n, err)
	}
	if tok := notLive("revoked", []byte("t3"), longAgo); tok == nil || tok.RevokedAt == nil {
		t.Errorf("revoked token state = %+v, want revoked", tok)
	}
	if n, _ := st.RevokeRefreshTokenFamily(ctx, family); n != 0 {
		t.Errorf("revoking again revoked %d, want 0", n)
	}
	_, err = st.RefreshTokenByHash(ctx, []byte("nope"))
	wantCode(t, "unknown hash", err, core.NotFound)
}

func TestAuditEvents(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	events := []auth.AuditEvent{
		{Event: auth.EventSignup, UserID: &ada.ID, IP: "203.0.113.7", UserAgent: "ua/1", RequestID: "r1"},
		{Event: auth.EventLoginFailure, IP: "198.51.100.1", Detail: "unknown email"},
		{Event: auth.EventLoginFailure, UserID: &ada.ID, IP: "203.0.113.7", Detail: "wrong password"},
		{Event: auth.EventLoginSuccess, UserID: &ada.ID, IP: "203.0.113.7"},
	}
	for _, e := range events {
		if err := st.InsertAuditEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	first, err := st.AuditEvents(ctx, ada.ID, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].Event != auth.EventLoginSuccess || first[1].Detail != "wrong password" ||
		first[1].CreatedAt.IsZero() || first[0].ID <= first[1].ID {
		t.Fatalf("Ada's first page = %+v, want her two newest events, newest first", first)
	}
	rest, err := st.AuditEvents(ctx, ada.ID, first[1].ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0].Event != auth.EventSignup || rest[0].UserAgent != "ua/1" || rest[0].RequestID != "r1" || *rest[0].UserID != ada.ID {
		t.Errorf("Ada's second page = %+v, want her signup alone", rest)
	}
}

func TestDeleteUser(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada, bob := mustUser(t, st, "ada@example.com"), mustUser(t, st, "bob@example.com")
	for _, u := range []auth.User{ada, bob} {
		if err := st.CreateRefreshToken(ctx, uuid.New(), u.ID, []byte("token-of-"+u.Email), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := st.InsertAuditEvent(ctx, auth.AuditEvent{Event: auth.EventSignup, UserID: &u.ID}); err != nil {
			t.Fatal(err)
		}
	}
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", userMessage("hi"), 0)
	if err != nil {
		t.Fatal(err)
	}

	if err := st.DeleteUser(ctx, ada.ID); err != nil {
		t.Fatal(err)
	}
	_, err = st.CredentialsByID(ctx, ada.ID)
	wantCode(t, "deleted account", err, core.NotFound)
	_, err = st.RefreshTokenByHash(ctx, []byte("token-of-ada@example.com"))
	wantCode(t, "refresh token of a deleted account", err, core.NotFound)
	_, err = st.Conversation(ctx, conv.ID, ada.ID)
	wantCode(t, "conversation of a deleted account", err, core.NotFound)
	var msgs, orphans int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM messages WHERE conversation_id = $1", conv.ID).Scan(&msgs); err != nil || msgs != 0 {
		t.Errorf("messages of a deleted account = %d, %v; want none", msgs, err)
	}
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM audit_log WHERE user_id IS NULL AND event = 'signup'").Scan(&orphans); err != nil || orphans != 1 {
		t.Errorf("audit events kept without a user id = %d, %v; want Ada's one", orphans, err)
	}
	if bobs, err := st.AuditEvents(ctx, bob.ID, 0, 10); err != nil || len(bobs) != 1 {
		t.Errorf("Bob's events = %+v, %v; want his one, untouched", bobs, err)
	}
	if _, err := st.RefreshTokenByHash(ctx, []byte("token-of-bob@example.com")); err != nil {
		t.Errorf("Bob's refresh token: %v", err)
	}
	wantCode(t, "deleting twice", st.DeleteUser(ctx, ada.ID), core.NotFound)
}

// setActivity sets when a conversation was last active, since now() is one instant in a transaction.
func setActivity(t *testing.T, tx pgx.Tx, id uuid.UUID, at time.Time) {
	t.Helper()
	if _, err := tx.Exec(context.Background(), "UPDATE conversations SET updated_at = $1 WHERE id = $2", at, id); err != nil {
		t.Fatal(err)
	}
}

func userMessage(content string) []chat.NewMessage {
	return []chat.NewMessage{{Role: "user", Content: content, Status: chat.StatusComplete}}
}

func TestConversations(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada, bob := mustUser(t, st, "ada@example.com"), mustUser(t, st, "bob@example.com")

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var convs []chat.Conversation
	for i := range 5 {
		c, err := st.CreateConversation(ctx, ada.ID, fmt.Sprintf("c%d", i), "tiny", userMessage("hi"), 0)
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, c)
		// Two conversations share an activity time, so that the id decides between them.
		setActivity(t, tx, c.ID, base.Add(time.Duration(min(i, 3))*time.Minute))
	}
	bobs, err := st.CreateConversation(ctx, bob.ID, "bob's", "tiny", nil, 0)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ownership", func(t *testing.T) {
		if c, err := st.Conversation(ctx, convs[0].ID, ada.ID); err != nil || c.Title != "c0" || c.UserID != ada.ID {
			t.Errorf("own conversation = %+v, %v", c, err)
		}
		_, err := st.Conversation(ctx, bobs.ID, ada.ID)
		wantCode(t, "another user's conversation", err, core.NotFound)
		_, err = st.RenameConversation(ctx, bobs.ID, ada.ID, "mine")
		wantCode(t, "renaming another user's conversation", err, core.NotFound)
		wantCode(t, "deleting another user's conversation", st.DeleteConversation(ctx, bobs.ID, ada.ID), core.NotFound)
		if c, _ := st.Conversation(ctx, bobs.ID, bob.ID); c.Title != "bob's" {
			t.Errorf("bob's conversation changed: %+v", c)
		}
	})

	t.Run("keyset pages", func(t *testing.T) {
		var got []string
		var after *chat.Cursor
		for {
			page, err := st.Conversations(ctx, ada.ID, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page {
				got = append(got, c.Title)
			}
			if len(page) < 2 {
				break
			}
			last := page[len(page)-1]
			after = &chat.Cursor{UpdatedAt: last.UpdatedAt, ID: last.ID}
		}
		// c3 and c4 share the newest time; the larger id comes first.
		newest := []string{"c3", "c4"}
		if convs[4].ID.String() > convs[3].ID.String() {
			newest = []string{"c4", "c3"}
		}
		want := append(newest, "c2", "c1", "c0")
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("pages = %v, want %v", got, want)
		}
	})

	t.Run("rename and delete", func(t *testing.T) {
		c, err := st.RenameConversation(ctx, convs[0].ID, ada.ID, "renamed")
		if err != nil || c.Title != "renamed" {
			t.Errorf("rename = %+v, %v", c, err)
		}
		if err := st.DeleteConversation(ctx, convs[1].ID, ada.ID); err != nil {
			t.Fatal(err)
		}
		_, err = st.Conversation(ctx, convs[1].ID, ada.ID)
		wantCode(t, "deleted conversation", err, core.NotFound)
		if msgs, _, err := st.MessagePage(ctx, convs[1].ID, 0, 10, 1<<20); err != nil || len(msgs) != 0 {
			t.Errorf("messages of a deleted conversation = %v, %v; want none", msgs, err)
		}
		wantCode(t, "deleting twice", st.DeleteConversation(ctx, convs[1].ID, ada.ID), core.NotFound)
	})
}

// storedBytes reads what the store counts as the user's stored content.
func storedBytes(t *testing.T, tx pgx.Tx, userID uuid.UUID) int64 {
	t.Helper()
	var n int64
	if err := tx.QueryRow(context.Background(), "SELECT stored_bytes FROM users WHERE id = $1", userID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMessages(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", userMessage("m0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	setActivity(t, tx, conv.ID, time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))

	answerID := uuid.New()
	stored, err := st.AppendMessages(ctx, ada.ID, conv.ID, []chat.NewMessage{
		{Role: "user", Content: "m1", Status: chat.StatusComplete},
		{ID: answerID, Role: "assistant", Content: "m2", Status: chat.StatusIncomplete, Model: "tiny:latest", DoneReason: "length",
			Usage: &chat.Usage{PromptTokens: 12, CompletionTokens: 34}},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 || stored[1].ID != answerID || stored[0].ID == uuid.Nil || stored[1].ConversationID != conv.ID ||
		stored[1].Seq <= stored[0].Seq {
		t.Errorf("stored = %+v, want the given id kept, a new one made, and seq ascending", stored)
	}
	if c, _ := st.Conversation(ctx, conv.ID, ada.ID); c.UpdatedAt.Year() == 2020 {
		t.Error("appending did not mark the conversation active")
	}

	all, older, err := st.MessagePage(ctx, conv.ID, 0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var contents []string
	for _, m := range all {
		contents = append(contents, m.Content)
	}
	if fmt.Sprint(contents) != "[m2 m1 m0]" || older {
		t.Errorf("page = %v (older %v), want newest first and nothing older", contents, older)
	}
	answer := all[0]
	if answer.Usage == nil || *answer.Usage != (chat.Usage{PromptTokens: 12, CompletionTokens: 34}) ||
		answer.Status != chat.StatusIncomplete || answer.Model != "tiny:latest" || answer.DoneReason != "length" {
		t.Errorf("answer = %+v, want its status, model, reason and usage kept", answer)
	}
	if all[2].Usage != nil {
		t.Errorf("a user message has usage %+v", all[2].Usage)
	}
}

// TestRefusedMessagesCountNothing stores messages that the schema refuses, on the pool (each write a
// transaction of its own, as in production): nothing of them is counted as stored.
func TestRefusedMessagesCountNothing(t *testing.T) {
	ctx := context.Background()
	st := store.New(pool)
	ada, err := st.CreateUser(ctx, "refused-"+uuid.NewString()+"@example.com", "hash")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(ctx, "DELETE FROM users WHERE id = $1", ada.ID) })
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", userMessage("m0"), 0)
	if err != nil {
		t.Fatal(err)
	}
	robot := []chat.NewMessage{{Role: "user", Content: "fine", Status: chat.StatusComplete}, {Role: "robot", Content: "x", Status: chat.StatusComplete}}
	if _, err := st.AppendMessages(ctx, ada.ID, conv.ID, robot, 0); err == nil {
		t.Error("a message with a role the schema refuses was stored")
	}
	if _, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", robot, 0); err == nil {
		t.Error("a conversation with a message of a role the schema refuses was stored")
	}
	if _, err := st.AppendMessages(ctx, ada.ID, uuid.New(), userMessage("lost"), 0); core.ErrorCode(err) != core.NotFound {
		t.Errorf("a message for a conversation that does not exist: error %v, want a %s", err, core.NotFound)
	}
	var n int64
	if err := pool.QueryRow(ctx, "SELECT stored_bytes FROM users WHERE id = $1", ada.ID).Scan(&n); err != nil || n != 2 {
		t.Errorf("stored bytes = %d (%v), want 2 (the refused messages count nothing)", n, err)
	}
	if page, _ := st.Conversations(ctx, ada.ID, nil, 10); len(page) != 1 {
		t.Errorf("%d conversations stored, want only the first", len(page))
	}
	if page, _, _ := st.MessagePage(ctx, conv.ID, 0, 10, 100); len(page) != 1 {
		t.Errorf("%d messages stored, want only the first", len(page))
	}
}

func TestMessagePage(t *testing.T) {
	st, _ := newStore(t)
	ctx := context.Background()
	ada := mustUser(t, st, "ada@example.com")
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Contents of 1, 2, ... 6 bytes, oldest first.
	var seqs []int64
	for i := 1; i <= 6; i++ {
		m, err := st.AppendMessages(ctx, ada.ID, conv.ID, userMessage(strings.Repeat(strconv.Itoa(i), i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, m[0].Seq)
	}
	tests := []struct {
		name      string
		before    int64
		limit     int
		maxBytes  int64
		want      string // the first byte of each content, newest first
		wantOlder bool
	}{
		{"everything", 0, 10, 100, "654321", false},
		{"by count", 0, 2, 100, "65", true},
		{"by content", 0, 10, 11, "65", true},
		{"content exactly at the bound", 0, 10, 15, "654", true},
		{"always one, however large", 0, 10, 1, "6", true},
		{"before a message", seqs[3], 10, 100, "321", false},
		{"before, by count", seqs[3], 2, 100, "32", true},
		{"before the first", seqs[0], 10, 100, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, older, err := st.MessagePage(ctx, conv.ID, tt.before, tt.limit, tt.maxBytes)
			if err != nil {
				t.Fatal(err)
			}
			var got strings.Builder
			for _, m := range msgs {
				got.WriteByte(m.Content[0])
			}
			if got.String() != tt.want || older != tt.wantOlder {
				t.Errorf("page = %q (older %v), want %q (older %v)", got.String(), older, tt.want, tt.wantOlder)
			}
		})
	}
}

func TestStoredBytes(t *testing.T) {
	st, tx := newStore(t)
	ctx := context.Background()
	ada, bob := mustUser(t, st, "ada@example.com"), mustUser(t, st, "bob@example.com")
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", userMessage("12345"), 10)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.CreateConversation(ctx, ada.ID, "t2", "tiny", userMessage("123456"), 10)
	wantCode(t, "a new conversation past the cap", err, core.StorageFull)
	_, err = st.AppendMessages(ctx, ada.ID, conv.ID, userMessage("123456"), 10)
	wantCode(t, "a message past the cap", err, core.StorageFull)
	if got := storedBytes(t, tx, ada.ID); got != 5 {
		t.Errorf("stored bytes after refusals = %d, want 5", got)
	}
	if page, _, _ := st.MessagePage(ctx, conv.ID, 0, 10, 100); len(page) != 1 {
		t.Errorf("%d messages stored, want only the first", len(page))
	}
	if page, _ := st.Conversations(ctx, ada.ID, nil, 10); len(page) != 1 {
		t.Errorf("%d conversations stored, want only the first", len(page))
	}
	// An answer is stored whatever the count.
	if _, err := st.AppendMessages(ctx, ada.ID, conv.ID, []chat.NewMessage{{Role: "assistant", Content: "a long answer", Status: chat.StatusComplete}}, 0); err != nil {
		t.Fatal(err)
	}
	if got := storedBytes(t, tx, ada.ID); got != 18 {
		t.Errorf("stored bytes after the answer = %d, want 18", got)
	}
	if _, err := st.CreateConversation(ctx, bob.ID, "t", "tiny", userMessage("1234567890"), 10); err != nil {
		t.Errorf("bob was refused for ada's count: %v", err)
	}
	if err := st.DeleteConversation(ctx, conv.ID, ada.ID); err != nil {
		t.Fatal(err)
	}
	if got := storedBytes(t, tx, ada.ID); got != 0 {
		t.Errorf("stored bytes after deleting = %d, want 0", got)
	}
	if got := storedBytes(t, tx, bob.ID); got != 10 {
		t.Errorf("bob's stored bytes = %d, want 10", got)
	}
}

func TestWriteForADeletedOwner(t *testing.T) {
	st, _ := newStore(t)
	_, err := st.CreateConversation(context.Background(), uuid.New(), "t", "tiny", userMessage("hi"), 0)
	wantCode(t, "a conversation of a user that is gone", err, core.NotFound)
}

// TestDeleteWhileAnAnswerIsStored deletes a conversation while another transaction is adding a message to
// it: the delete waits for it, and the user's stored count ends at zero.
func TestDeleteWhileAnAnswerIsStored(t *testing.T) {
	ctx := context.Background()
	st := store.New(pool)
	ada, err := st.CreateUser(ctx, "race-"+uuid.NewString()+"@example.com", "hash")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(ctx, "DELETE FROM users WHERE id = $1", ada.ID) })
	conv, err := st.CreateConversation(ctx, ada.ID, "t", "tiny", userMessage("hi"), 0)
	if err != nil {
		t.Fatal(err)
	}
	answering, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = answering.Rollback(ctx) }()
	if _, err := store.New(answering).AppendMessages(ctx, ada.ID, conv.ID,
		[]chat.NewMessage{{Role: "assistant", Content: "an answer", Status: chat.StatusComplete}}, 0); err != nil {
		t.Fatal(err)
	}
	deleted := make(chan error, 1)
	go func() { deleted <- st.DeleteConversation(ctx, conv.ID, ada.ID) }()
	select {
	case err := <-deleted:
		t.Fatalf("the delete did not wait for the answer being stored: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := answering.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := pool.QueryRow(ctx, "SELECT stored_bytes FROM users WHERE id = $1", ada.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("stored bytes after the delete = %d (%v), want 0", n, err)
	}
}
