package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// TestRefusedChats checks the chats refused before anything is stored: each answers its problem and names
// its field, and the user has no conversation afterwards.
func TestRefusedChats(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.MaxStoredBytesPerUser = 64 }})
	c := a.UserClient(t)
	ctx := context.Background()
	num := func(n int) *int { return &n }
	tests := []struct {
		name       string
		body       client.ChatRequest
		wantStatus int
		wantType   string
		wantField  string
	}{
		{"NUL in a message", client.ChatRequest{Model: "tiny", Messages: userMessage("a\x00b")},
			http.StatusUnprocessableEntity, "unprocessable", "messages[0].content"},
		{"context over DS_CHAT_MAX_CONTEXT", client.ChatRequest{Model: "tiny", Messages: userMessage("hi"), Options: &client.ChatOptions{NumCtx: num(1048576)}},
			http.StatusUnprocessableEntity, "unprocessable", "options.num_ctx"},
		{"endless prediction", client.ChatRequest{Model: "tiny", Messages: userMessage("hi"), Options: &client.ChatOptions{NumPredict: num(-1)}},
			http.StatusUnprocessableEntity, "unprocessable", "options.num_predict"},
		{"prediction over DS_CHAT_MAX_PREDICT", client.ChatRequest{Model: "tiny", Messages: userMessage("hi"), Options: &client.ChatOptions{NumPredict: num(4097)}},
			http.StatusUnprocessableEntity, "unprocessable", "options.num_predict"},
		{"past the stored content cap", client.ChatRequest{Model: "tiny", Messages: userMessage(strings.Repeat("x", 65))},
			http.StatusForbidden, "storage-full", ""},
	}
	for _, tt := range tests {
		for _, streamed := range []bool{false, true} {
			name := tt.name
			if streamed {
				name += ", streamed"
			}
			t.Run(name, func(t *testing.T) {
				var resp *http.Response
				var err error
				if streamed {
					resp, err = c.StreamChat(ctx, tt.body)
				} else {
					resp, err = c.Chat(ctx, tt.body)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var p client.Problem
				if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.wantStatus || p.Type != "urn:deepersensor:problem:"+tt.wantType {
					t.Fatalf("status %d %s, want %d %s", resp.StatusCode, p.Type, tt.wantStatus, tt.wantType)
				}
				if tt.wantField != "" && (p.Errors == nil || len(*p.Errors) != 1 || (*p.Errors)[0].Field != tt.wantField) {
					t.Errorf("errors = %+v, want the field %s", p.Errors, tt.wantField)
				}
			})
		}
	}
	list, err := c.ListConversationsWithResponse(ctx, nil)
	if err != nil || list.JSON200 == nil || len(list.JSON200.Items) != 0 {
		t.Errorf("conversations after refused chats: %v %+v, want none", err, list.JSON200)
	}
	// Within the cap, the same user chats.
	if r, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}); err != nil || r.JSON200 == nil {
		t.Errorf("a chat within the cap: %v %d", err, r.StatusCode())
	}
}

func TestTitleWithNUL(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	ctx := context.Background()
	chat, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	if err != nil || chat.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	resp, err := c.UpdateConversationWithResponse(ctx, chat.JSON200.ConversationId, client.ConversationUpdate{Title: "a\x00b"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode() != http.StatusUnprocessableEntity || resp.ApplicationproblemJSON422 == nil ||
		(*resp.ApplicationproblemJSON422.Errors)[0].Field != "title" {
		t.Errorf("rename with a NUL = %d %s, want 422 naming the title", resp.StatusCode(), resp.Body)
	}
}

// TestMessagePagesOverHTTP pages back through a conversation with the messages route.
func TestMessagePagesOverHTTP(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	ctx := context.Background()
	first, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("one")})
	if err != nil || first.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	id := first.JSON200.ConversationId
	for _, text := range []string{"two", "three"} {
		if r, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", ConversationId: &id, Messages: userMessage(text)}); err != nil || r.JSON200 == nil {
			t.Fatalf("chat: %v", err)
		}
	}
	if conv := conversation(t, c, id); len(conv.Messages) != 6 || conv.OlderCursor != nil {
		t.Fatalf("conversation has %d messages and older cursor %v, want all 6 and none", len(conv.Messages), conv.OlderCursor)
	}
	var users []string
	var before *string
	limit := 2
	for pages := 0; ; pages++ {
		page, err := c.ListMessagesWithResponse(ctx, id, &client.ListMessagesParams{Limit: &limit, Before: before})
		if err != nil || page.JSON200 == nil {
			t.Fatalf("page: %v %d", err, page.StatusCode())
		}
		if len(page.JSON200.Items) != 2 || pages > 3 {
			t.Fatalf("page %d has %d messages, want 2", pages, len(page.JSON200.Items))
		}
		// Oldest first in the page: the user's message, then the answer.
		users = append([]string{page.JSON200.Items[0].Content}, users...)
		if before = page.JSON200.OlderCursor; before == nil {
			break
		}
	}
	if got := strings.Join(users, ","); got != "one,two,three" {
		t.Errorf("user messages across pages = %s, want one,two,three", got)
	}
	bad := "bm90IGEgY3Vyc29y"
	if r, _ := c.ListMessagesWithResponse(ctx, id, &client.ListMessagesParams{Before: &bad}); r.StatusCode() != http.StatusBadRequest {
		t.Errorf("a bad cursor = %d, want 400", r.StatusCode())
	}
	other := a.UserClient(t)
	if r, _ := other.ListMessagesWithResponse(ctx, id, nil); r.StatusCode() != http.StatusNotFound {
		t.Errorf("another user's messages = %d, want 404", r.StatusCode())
	}
}

// TestStreamEndsAtTheRequestTimeout checks that a stream running past DS_OLLAMA_REQUEST_TIMEOUT ends with an
// error event, and that its partial answer is stored as incomplete.
func TestStreamEndsAtTheRequestTimeout(t *testing.T) {
	a := testapp.Start(t, testapp.Options{
		Ollama:    ollamatest.Options{ChunkDelay: 100 * time.Millisecond},
		Configure: func(c *config.Config) { c.OllamaRequestTimeout = 450 * time.Millisecond },
	})
	c := a.UserClient(t)
	ctx := context.Background()
	_, events, end := stream(t, ctx, a, c, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	all, _ := collect(t, events, end)
	last := all[len(all)-1]
	var p client.Problem
	if err := json.Unmarshal([]byte(last.Data), &p); err != nil || last.Type != "error" || p.Status != http.StatusGatewayTimeout {
		t.Fatalf("last event %s %s, want an error with status 504", last.Type, last.Data)
	}
	var meta client.StreamMeta
	if err := json.Unmarshal([]byte(all[0].Data), &meta); err != nil {
		t.Fatal(err)
	}
	conv := conversation(t, c, meta.ConversationId)
	answer := conv.Messages[len(conv.Messages)-1]
	if answer.Status != client.Incomplete || answer.Content == "" {
		t.Errorf("answer %q %s, want the partial answer stored as incomplete", answer.Content, answer.Status)
	}
}

func TestMetricsOnlyOnTheirListenerInProduction(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.Env = config.Production }})
	resp, err := http.Get(a.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the API port in production = %d, want 404", resp.StatusCode)
	}
}
