package sdk_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/sdk"
)

// countingTransport counts the refresh requests it passes on.
type countingTransport struct {
	next      http.RoundTripper
	refreshes atomic.Int32
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.URL.Path == "/v1/auth/refresh" {
		c.refreshes.Add(1)
	}
	return c.next.RoundTrip(req)
}

// session is a user's SDK client and what the tests watch of it.
type session struct {
	*sdk.Client
	email     string
	transport *countingTransport
	mu        sync.Mutex
	saved     []sdk.TokenSet // every set passed to OnTokens
}

// newSession returns an SDK client for a that is not logged in; its responses are checked against the contract.
func newSession(t *testing.T, a *testapp.App) *session {
	t.Helper()
	s := &session{transport: &countingTransport{next: a.HTTPClient(t).Transport}}
	c, err := sdk.New(a.URL, sdk.WithHTTPClient(&http.Client{Transport: s.transport}), sdk.OnTokens(func(ts sdk.TokenSet) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.saved = append(s.saved, ts)
	}))
	if err != nil {
		t.Fatal(err)
	}
	s.Client = c
	// Concurrent calls can leave a connection that was dialed but never used. The server's graceful
	// shutdown waits 5s for such a connection (net/http's rule for new connections), as long as the test
	// server's whole grace period, so close them before the server stops.
	t.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	return s
}

// mustLogin signs up a new user and logs in through the SDK.
func mustLogin(t *testing.T, a *testapp.App) *session {
	t.Helper()
	s := newSession(t, a)
	s.email = "sdk-" + strings.ToLower(rand.Text()[:10]) + "@example.com"
	ctx := context.Background()
	if _, err := s.Signup(ctx, s.email, testapp.TestPassword); err != nil {
		t.Fatalf("signup: %v", err)
	}
	if err := s.Login(ctx, s.email, testapp.TestPassword); err != nil {
		t.Fatalf("login: %v", err)
	}
	return s
}

func (s *session) lastSaved() sdk.TokenSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.saved) == 0 {
		return sdk.TokenSet{}
	}
	return s.saved[len(s.saved)-1]
}

func userMessage(content string) []client.ChatMessageInput {
	return []client.ChatMessageInput{{Role: client.RoleUser, Content: content}}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://example.com", "http://"} {
		if _, err := sdk.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestLogin(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	tokens := s.Tokens()
	if tokens.AccessToken == "" || tokens.RefreshToken == "" {
		t.Fatalf("tokens = %+v, want a pair", tokens)
	}
	if left := time.Until(tokens.Expiry); left < a.Config.AccessTokenTTL-time.Minute || left > a.Config.AccessTokenTTL {
		t.Errorf("expiry in %v, want about %v", left, a.Config.AccessTokenTTL)
	}
	if s.lastSaved() != tokens {
		t.Errorf("OnTokens got %+v, want %+v", s.lastSaved(), tokens)
	}
	me, err := s.Me(context.Background())
	if err != nil || me.Email != s.email {
		t.Errorf("Me = %+v, %v; want %s", me, err, s.email)
	}
	// The generated client sends the session's token too.
	resp, err := s.API().GetMeWithResponse(context.Background())
	if err != nil || resp.JSON200 == nil || resp.JSON200.Email != s.email {
		t.Errorf("API().GetMe = %v, %v", resp, err)
	}
}

func TestLogout(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	old := s.Tokens()
	ctx := context.Background()
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Tokens() != (sdk.TokenSet{}) || s.lastSaved() != (sdk.TokenSet{}) {
		t.Errorf("after logout tokens %+v, saved %+v; want none", s.Tokens(), s.lastSaved())
	}
	if _, err := s.Me(ctx); !sdk.IsUnauthorized(err) {
		t.Errorf("Me after logout = %v, want 401", err)
	}
	// The revoked refresh token no longer works: the old session cannot be revived.
	s.SetTokens(sdk.TokenSet{AccessToken: "revoked", RefreshToken: old.RefreshToken, Expiry: time.Now().Add(time.Hour)})
	if _, err := s.Me(ctx); !sdk.IsUnauthorized(err) {
		t.Errorf("Me with a revoked session = %v, want 401", err)
	}
}

func TestRefreshWhenExpired(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.AccessTokenTTL = time.Second }})
	s := mustLogin(t, a)
	before := s.Tokens()
	time.Sleep(1200 * time.Millisecond)
	if _, err := s.Me(context.Background()); err != nil {
		t.Fatalf("Me with an expired access token: %v", err)
	}
	after := s.Tokens()
	if after.AccessToken == before.AccessToken || after.RefreshToken == before.RefreshToken || !after.Expiry.After(before.Expiry) {
		t.Errorf("tokens were not replaced: before %+v, after %+v", before, after)
	}
	if n := s.transport.refreshes.Load(); n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if s.lastSaved() != after {
		t.Errorf("OnTokens got %+v, want the new tokens %+v", s.lastSaved(), after)
	}
}

// TestConcurrentRefresh checks that many calls needing a refresh at once use the single-use refresh token
// once: a second use would revoke the whole session.
func TestConcurrentRefresh(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	tests := []struct {
		name  string
		spoil func(sdk.TokenSet) sdk.TokenSet
	}{
		{"access token expired", func(ts sdk.TokenSet) sdk.TokenSet {
			ts.Expiry = time.Now().Add(-time.Minute)
			return ts
		}},
		{"access token rejected with 401", func(ts sdk.TokenSet) sdk.TokenSet {
			ts.AccessToken = "not-a-jwt"
			return ts
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustLogin(t, a)
			s.SetTokens(tt.spoil(s.Tokens()))
			const callers = 16
			start := make(chan struct{})
			errs := make(chan error, callers)
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					<-start
					_, err := s.Me(context.Background())
					errs <- err
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Errorf("Me: %v", err)
				}
			}
			if n := s.transport.refreshes.Load(); n != 1 {
				t.Errorf("%d refreshes for %d concurrent calls, want 1", n, callers)
			}
			// The session is still alive: the next refresh works.
			s.SetTokens(tt.spoil(s.Tokens()))
			if _, err := s.Me(context.Background()); err != nil {
				t.Errorf("Me after a second refresh: %v (was the session revoked?)", err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	anonymous := newSession(t, a)
	ctx := context.Background()
	firstStreamError := func(req client.ChatRequest) error {
		for _, err := range s.ChatStream(ctx, req) {
			if err != nil {
				return err
			}
		}
		return nil
	}
	tests := []struct {
		name       string
		call       func() error
		status     int
		typ        string
		detail     string
		fieldError string
	}{
		{"unknown conversation", func() error { _, err := s.Conversation(ctx, uuid.New()); return err },
			404, "urn:deepersensor:problem:not-found", "conversation not found", ""},
		{"unknown model", func() error { _, err := s.Model(ctx, "nope"); return err },
			404, "urn:deepersensor:problem:model-not-found", "model not found", ""},
		{"blank message", func() error {
			_, err := s.Chat(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("   ")})
			return err
		},
			422, "urn:deepersensor:problem:unprocessable", "must not be blank", "messages[0].content"},
		{"blank message, streamed", func() error { return firstStreamError(client.ChatRequest{Model: "tiny", Messages: userMessage("   ")}) },
			422, "urn:deepersensor:problem:unprocessable", "must not be blank", "messages[0].content"},
		{"page too large", func() error { _, err := s.Conversations(ctx, 1000, ""); return err },
			400, "urn:deepersensor:problem:invalid-request", "limit", ""},
		{"wrong password", func() error { return anonymous.Login(ctx, s.email, "wrong password!") },
			401, "urn:deepersensor:problem:invalid-credentials", "invalid email or password", ""},
		{"not logged in", func() error { _, err := anonymous.Me(ctx); return err },
			401, "urn:deepersensor:problem:unauthorized", "", ""},
		{"email taken", func() error { _, err := anonymous.Signup(ctx, s.email, testapp.TestPassword); return err },
			409, "urn:deepersensor:problem:conflict", "exists", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *sdk.Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v (%T), want an *sdk.Error", err, err)
			}
			p := e.Problem
			if e.Status != tt.status || p.Status != tt.status || p.Type != tt.typ || !strings.Contains(p.Detail, tt.detail) || p.RequestId == "" {
				t.Errorf("error = %d %+v, want %d %s with detail %q and a request id", e.Status, p, tt.status, tt.typ, tt.detail)
			}
			if tt.fieldError != "" && (p.Errors == nil || !slices.ContainsFunc(*p.Errors, func(f client.FieldError) bool { return f.Field == tt.fieldError })) {
				t.Errorf("errors = %+v, want one for %s", p.Errors, tt.fieldError)
			}
			want := fmt.Sprintf("%d %s: %s", tt.status, http.StatusText(tt.status), p.Detail)
			if msg := err.Error(); msg != want+" (request "+p.RequestId+")" {
				t.Errorf("Error() = %q, want %q…(request %s)", msg, want, p.RequestId)
			}
			if sdk.IsNotFound(err) != (tt.status == 404) || sdk.IsUnauthorized(err) != (tt.status == 401) {
				t.Errorf("IsNotFound = %t, IsUnauthorized = %t for %d", sdk.IsNotFound(err), sdk.IsUnauthorized(err), tt.status)
			}
		})
	}
}

func TestErrorWithoutProblemBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Request-ID", "proxy-1")
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer srv.Close()
	c, err := sdk.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Models(context.Background())
	if want := "502 Bad Gateway: <html>bad gateway</html> (request proxy-1)"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestModels(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	ctx := context.Background()
	models, err := s.Models(ctx)
	if err != nil || len(models) != 1 || models[0].Name != "tiny:latest" {
		t.Fatalf("Models = %+v, %v; want tiny:latest", models, err)
	}
	m, err := s.Model(ctx, "tiny:latest")
	if err != nil || m.Family != "llama" || m.Format != "gguf" || m.ContextLength == nil || *m.ContextLength != 2048 {
		t.Errorf("Model = %+v, %v", m, err)
	}
}

func TestConversations(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	ctx := context.Background()
	var ids []uuid.UUID
	for _, prompt := range []string{"first", "second"} {
		res, err := s.Chat(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage(prompt)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ConversationId)
	}
	first, err := s.Conversations(ctx, 1, "")
	if err != nil || len(first.Items) != 1 || first.Items[0].Id != ids[1] || first.NextCursor == nil {
		t.Fatalf("first page = %+v, %v; want the second conversation and a cursor", first, err)
	}
	second, err := s.Conversations(ctx, 1, *first.NextCursor)
	if err != nil || len(second.Items) != 1 || second.Items[0].Id != ids[0] {
		t.Fatalf("second page = %+v, %v; want the first conversation", second, err)
	}

	// Continuing a conversation adds to it.
	if _, err := s.Chat(ctx, client.ChatRequest{Model: "tiny", ConversationId: &ids[0], Messages: userMessage("more")}); err != nil {
		t.Fatal(err)
	}
	renamed, err := s.RenameConversation(ctx, ids[0], "Renamed")
	if err != nil || renamed.Title != "Renamed" {
		t.Fatalf("RenameConversation = %+v, %v", renamed, err)
	}
	detail, err := s.Conversation(ctx, ids[0])
	if err != nil || detail.Title != "Renamed" || len(detail.Messages) != 4 {
		t.Fatalf("Conversation = %+v, %v; want the new title and 4 messages", detail, err)
	}
	if err := s.DeleteConversation(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConversation(ctx, ids[0]); !sdk.IsNotFound(err) {
		t.Errorf("second DeleteConversation = %v, want 404", err)
	}
}

// collect ranges over a chat stream, returning its events and the error that ended it.
func collect(stream func(func(sdk.Event, error) bool)) ([]sdk.Event, error) {
	var events []sdk.Event
	for ev, err := range stream {
		if err != nil {
			return events, err
		}
		events = append(events, ev)
	}
	return events, nil
}

func TestChatStream(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	s := mustLogin(t, a)
	ctx := context.Background()
	events, err := collect(s.ChatStream(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 14 {
		t.Fatalf("%d events, want meta, 12 deltas and done: %+v", len(events), events)
	}
	meta, ok := events[0].(sdk.Meta)
	if !ok || meta.Model != "tiny" {
		t.Errorf("first event = %#v, want meta", events[0])
	}
	var text strings.Builder
	for _, ev := range events[1:13] {
		d, ok := ev.(sdk.Delta)
		if !ok {
			t.Fatalf("event %#v, want a delta", ev)
		}
		text.WriteString(d.Content)
	}
	if text.String() != ", there was a little girl named Lily. She" {
		t.Errorf("text = %q", text.String())
	}
	done, ok := events[13].(sdk.Done)
	if !ok || done.MessageId != meta.MessageId || done.DoneReason != "stop" || done.Usage.CompletionTokens != 12 {
		t.Errorf("last event = %#v, want done for message %s", events[13], meta.MessageId)
	}

	// The stream continues a conversation too.
	req := client.ChatRequest{Model: "tiny", ConversationId: &meta.ConversationId, Messages: userMessage("And then?")}
	if events, err := collect(s.ChatStream(ctx, req)); err != nil || events[0].(sdk.Meta).ConversationId != meta.ConversationId {
		t.Fatalf("continued stream: %v, first event %#v", err, events)
	}
	conv, err := s.Conversation(ctx, meta.ConversationId)
	if err != nil || len(conv.Messages) != 4 {
		t.Errorf("conversation = %+v, %v; want 4 messages", conv, err)
	}
}

func TestChatStreamErrorEvent(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Fault: &ollamatest.Fault{After: 2, Error: "boom"}}})
	s := mustLogin(t, a)
	events, err := collect(s.ChatStream(context.Background(), client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}))
	var e *sdk.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || e.Problem.RequestId == "" {
		t.Fatalf("stream ended with %v (%T), want a 502 *sdk.Error", err, err)
	}
	if len(events) != 3 {
		t.Errorf("events before the error = %#v, want meta and 2 deltas", events)
	}
}

func TestChatStreamStops(t *testing.T) {
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc) bool // called after each event; true breaks the loop
		want error
	}{
		{"context cancelled", func(cancel context.CancelFunc) bool { cancel(); return false }, context.Canceled},
		{"loop broken", func(context.CancelFunc) bool { return true }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{ChunkDelay: 200 * time.Millisecond}})
			s := mustLogin(t, a)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var got error
			var deltas int
			var stopped time.Time
			for ev, err := range s.ChatStream(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}) {
				if err != nil {
					got = err
					break
				}
				if _, ok := ev.(sdk.Delta); !ok {
					continue
				}
				deltas++
				stopped = time.Now()
				if tt.stop(cancel) {
					break
				}
			}
			if elapsed := time.Since(stopped); !errors.Is(got, tt.want) || (tt.want == nil && got != nil) || deltas != 1 || elapsed > 500*time.Millisecond {
				t.Errorf("loop ended %v after stopping with %v after %d deltas, want %v after 1", elapsed, got, deltas, tt.want)
			}
			if !a.Ollama.WaitCancelled(1, 2*time.Second) {
				t.Error("the model request was not cancelled")
			}
		})
	}
}

func TestChatStreamCutShort(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		body        string
		want        string
		cut         bool // the error wraps io.ErrUnexpectedEOF
	}{
		{"ends without done", "text/event-stream", "event: meta\ndata: {}\n\nevent: delta\ndata: {\"content\":\"a\"}\n\n", "ended before its done event", true},
		{"ends mid-event", "text/event-stream", "event: meta\ndata: {}\n\nevent: done\ndata: {", "ended before its done event", true},
		{"not an event stream", "application/json", "{}", "not an event stream", false},
		{"bad event data", "text/event-stream", "event: delta\ndata: nope\n\n", "decode delta event", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c, err := sdk.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			_, err = collect(c.ChatStream(context.Background(), client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("stream ended with %v, want an error containing %q", err, tt.want)
			}
			if tt.cut && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}
