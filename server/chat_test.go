package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

func userMessage(content string) []client.ChatMessageInput {
	return []client.ChatMessageInput{{Role: client.RoleUser, Content: content}}
}

// stream posts a chat stream request and returns the response, its events as they arrive and how the stream
// ended.
func stream(t *testing.T, ctx context.Context, a *testapp.App, c *client.ClientWithResponses, body client.ChatRequest) (*http.Response, <-chan testapp.Event, <-chan testapp.StreamEnd) {
	t.Helper()
	resp, err := c.StreamChat(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return resp, nil, nil
	}
	events, end := testapp.ReadEvents(resp.Body)
	return resp, events, end
}

// collect reads every event until the stream ends, checking each against the contract and that the stream
// ended cleanly. It returns the events and the number of comment lines.
func collect(t *testing.T, events <-chan testapp.Event, end <-chan testapp.StreamEnd) ([]testapp.Event, int) {
	t.Helper()
	var all []testapp.Event
	for ev := range events {
		testapp.CheckEvent(t, ev.Event)
		all = append(all, ev)
	}
	e := <-end
	if e.Err != nil {
		t.Errorf("read the stream after %d events: %v", len(all), e.Err)
	}
	return all, e.Comments
}

func conversation(t *testing.T, c *client.ClientWithResponses, id uuid.UUID) client.ConversationDetail {
	t.Helper()
	resp, err := c.GetConversationWithResponse(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("get conversation = %d %s", resp.StatusCode(), resp.Body)
	}
	return *resp.JSON200
}

func TestChat(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	ctx := context.Background()
	resp, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("Once upon a time, in a land far away, there lived a curious little fox")})
	if err != nil {
		t.Fatal(err)
	}
	if resp.JSON200 == nil {
		t.Fatalf("chat = %d %s", resp.StatusCode(), resp.Body)
	}
	got := resp.JSON200
	if got.Message.Content != ", there was a little girl named Lily. She" || got.DoneReason != "stop" || got.Usage.CompletionTokens != 12 || got.Usage.PromptTokens == 0 {
		t.Errorf("chat answer = %+v", got)
	}
	conv := conversation(t, c, got.ConversationId)
	if conv.Title != "Once upon a time, in a land far away, there lived a curious…" || conv.Model != "tiny" {
		t.Errorf("conversation title %q model %q", conv.Title, conv.Model)
	}
	if len(conv.Messages) != 2 || conv.Messages[0].Role != client.RoleUser || conv.Messages[1].Id != got.Message.Id ||
		conv.Messages[1].Status != client.Complete || conv.Messages[1].Usage == nil || conv.Messages[1].Usage.CompletionTokens != 12 {
		t.Errorf("stored messages = %+v", conv.Messages)
	}
}

func TestChatStream(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{ChunkDelay: 50 * time.Millisecond}})
	c := a.UserClient(t)
	start := time.Now()
	resp, events, end := stream(t, context.Background(), a, c, client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream = %d", resp.StatusCode)
	}
	for header, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	all, _ := collect(t, events, end)
	ended := time.Now()
	if len(all) != 1+12+1 || all[0].Type != "meta" || all[len(all)-1].Type != "done" {
		t.Fatalf("events = %+v, want meta, 12 deltas, done", all)
	}
	var text strings.Builder
	for _, ev := range all[1 : len(all)-1] {
		var d client.StreamDelta
		if ev.Type != "delta" || json.Unmarshal([]byte(ev.Data), &d) != nil {
			t.Fatalf("event %+v is not a delta", ev)
		}
		text.WriteString(d.Content)
	}
	// The deltas arrive as the model makes them, not all at the end: the first one comes long before the
	// last, which the fake sends 11 chunk delays later.
	if firstDelta, total := all[1].At.Sub(start), ended.Sub(start); firstDelta > total/2 {
		t.Errorf("first delta after %v of %v: the stream is buffered", firstDelta, total)
	}
	var meta client.StreamMeta
	var done client.StreamDone
	_ = json.Unmarshal([]byte(all[0].Data), &meta)
	_ = json.Unmarshal([]byte(all[len(all)-1].Data), &done)
	if meta.MessageId != done.MessageId || meta.Model != "tiny" || done.DoneReason != "stop" || done.Usage.CompletionTokens != 12 {
		t.Errorf("meta %+v, done %+v", meta, done)
	}
	conv := conversation(t, c, meta.ConversationId)
	answer := conv.Messages[len(conv.Messages)-1]
	if answer.Id != meta.MessageId || answer.Content != text.String() || answer.Status != client.Complete {
		t.Errorf("stored answer %+v, streamed %q", answer, text.String())
	}
}

func TestChatStreamHeartbeat(t *testing.T) {
	a := testapp.Start(t, testapp.Options{
		Ollama: ollamatest.Options{InitialDelay: 700 * time.Millisecond, Tokens: []string{"hi"}},
		Configure: func(c *config.Config) {
			// The stream answers 200 after the slot wait and a grace (260ms here), then keeps the silence alive.
			c.SSEHeartbeat, c.OllamaQueueWait = 100*time.Millisecond, 10*time.Millisecond
		},
	})
	c := a.UserClient(t)
	_, events, end := stream(t, context.Background(), a, c, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	all, n := collect(t, events, end)
	if n < 2 {
		t.Errorf("%d heartbeat comments during a 440ms silence with a 100ms heartbeat, want at least 2", n)
	}
	if all[len(all)-1].Type != "done" {
		t.Errorf("last event = %s, want done", all[len(all)-1].Type)
	}
}

func TestChatStreamClientDisconnect(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{ChunkDelay: 200 * time.Millisecond}})
	c := a.UserClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	_, events, _ := stream(t, ctx, a, c, client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")})
	var meta client.StreamMeta
	if ev := <-events; ev.Type != "meta" || json.Unmarshal([]byte(ev.Data), &meta) != nil {
		t.Fatalf("first event %+v", ev)
	}
	if ev := <-events; ev.Type != "delta" {
		t.Fatalf("second event %+v", ev)
	}
	cancel()
	if !a.Ollama.WaitCancelled(1, time.Second) {
		t.Fatal("the upstream request was not cancelled within a second of the client leaving")
	}
	// The partial answer is stored as incomplete.
	deadline := time.Now().Add(5 * time.Second)
	for {
		conv := conversation(t, c, meta.ConversationId)
		if last := conv.Messages[len(conv.Messages)-1]; last.Id == meta.MessageId {
			if last.Status != client.Incomplete || !strings.HasPrefix(", there was a little girl named Lily. She", last.Content) || last.Content == "" {
				t.Errorf("stored answer = %+v, want the partial text, incomplete", last)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the partial answer was not stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestChatStreamUpstreamFailure(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Fault: &ollamatest.Fault{After: 3, Error: "an error was encountered while running the model"}}})
	c := a.UserClient(t)
	_, events, end := stream(t, context.Background(), a, c, client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")})
	all, _ := collect(t, events, end)
	names := make([]string, len(all))
	for i, ev := range all {
		names[i] = ev.Type
	}
	if got := strings.Join(names, ","); got != "meta,delta,delta,delta,error" {
		t.Fatalf("events = %s, want meta, 3 deltas, one error and nothing after", got)
	}
	var p client.Problem
	if err := json.Unmarshal([]byte(all[len(all)-1].Data), &p); err != nil || p.Status != http.StatusBadGateway || p.RequestId == "" {
		t.Errorf("error event = %s", all[len(all)-1].Data)
	}
	var meta client.StreamMeta
	_ = json.Unmarshal([]byte(all[0].Data), &meta)
	conv := conversation(t, c, meta.ConversationId)
	last := conv.Messages[len(conv.Messages)-1]
	if last.Id != meta.MessageId || last.Status != client.Incomplete || last.Content != ", there was" {
		t.Errorf("stored answer = %+v, want the 3 chunks, incomplete", last)
	}
}

// answer is an HTTP answer with its body read.
type answer struct {
	resp *http.Response
	body []byte
}

// chatBoth sends body to the plain and the streaming chat route, for failures that come before any stream.
func chatBoth(t *testing.T, c *client.ClientWithResponses, body client.ChatRequest) []answer {
	t.Helper()
	ctx := context.Background()
	plain, err := c.ChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	streamed, err := c.StreamChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	return []answer{{plain.HTTPResponse, plain.Body}, {streamed.HTTPResponse, streamed.Body}}
}

func TestChatUnknownModel(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	for _, r := range chatBoth(t, c, client.ChatRequest{Model: "llama9:70b", Messages: userMessage("hi")}) {
		if r.resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s with an unknown model = %d, want 404", r.resp.Request.URL.Path, r.resp.StatusCode)
			continue
		}
		if p := testapp.Problem(t, r.resp, r.body); !strings.Contains(p.Detail, "model") {
			t.Errorf("problem %+v does not say the model is unknown", p)
		}
	}
	list, err := c.ListConversationsWithResponse(context.Background(), nil)
	if err != nil || list.JSON200 == nil || len(list.JSON200.Items) != 0 {
		t.Errorf("a request for an unknown model stored a conversation: %s", list.Body)
	}
}

func TestProviderDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.OllamaURL = closed }})
	c := a.UserClient(t)
	answers := chatBoth(t, c, client.ChatRequest{Model: "tiny", Messages: userMessage("hi")})
	models, err := c.ListModelsWithResponse(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// An unreachable model server is unavailable (503), not a failed answer (502).
	for _, r := range append(answers, answer{models.HTTPResponse, models.Body}) {
		if r.resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s with the provider down = %d, want 503", r.resp.Request.URL.Path, r.resp.StatusCode)
			continue
		}
		p := testapp.Problem(t, r.resp, r.body)
		if p.Type != "urn:deepersensor:problem:provider-unavailable" {
			t.Errorf("%s with the provider down: problem type %q, want urn:deepersensor:problem:provider-unavailable", r.resp.Request.URL.Path, p.Type)
		}
		if !strings.Contains(p.Detail, "provider") {
			t.Errorf("problem %+v does not say the provider is down", p)
		}
	}
}

func TestChatSendsHistory(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.ChatHistoryMessages = 2 }})
	c := a.UserClient(t)
	ctx := context.Background()
	first, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: []client.ChatMessageInput{
		{Role: client.RoleSystem, Content: "You tell stories."}, {Role: client.RoleUser, Content: "first question"},
	}})
	if err != nil || first.JSON200 == nil {
		t.Fatalf("first chat: %v %s", err, first.Body)
	}
	id := first.JSON200.ConversationId
	second, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", ConversationId: &id, Messages: userMessage("second question")})
	if err != nil || second.JSON200 == nil || second.JSON200.ConversationId != id {
		t.Fatalf("follow-up chat: %v %s", err, second.Body)
	}
	sent := a.Ollama.ChatRequests()
	if len(sent) != 2 {
		t.Fatalf("model got %d chat requests, want 2", len(sent))
	}
	// History is bounded to the 2 newest stored messages: the system message falls out.
	var got []string
	for _, m := range sent[1].Messages {
		got = append(got, m.Role+":"+m.Content)
	}
	want := []string{"user:first question", "assistant:" + first.JSON200.Message.Content, "user:second question"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("follow-up sent %q, want %q", got, want)
	}
	if n := len(conversation(t, c, id).Messages); n != 5 {
		t.Errorf("conversation has %d messages, want 5", n)
	}
}

func TestConversationsBelongToTheirOwner(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	owner, other := a.UserClient(t), a.UserClient(t)
	ctx := context.Background()
	chat, err := owner.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage("mine")})
	if err != nil || chat.JSON200 == nil {
		t.Fatalf("chat: %v", err)
	}
	id := chat.JSON200.ConversationId

	get, _ := other.GetConversationWithResponse(ctx, id)
	patch, _ := other.UpdateConversationWithResponse(ctx, id, client.ConversationUpdate{Title: "stolen"})
	del, _ := other.DeleteConversationWithResponse(ctx, id)
	cont, _ := other.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", ConversationId: &id, Messages: userMessage("let me in")})
	streamed, _ := other.StreamChatWithResponse(ctx, client.ChatRequest{Model: "tiny", ConversationId: &id, Messages: userMessage("let me in")})
	for name, r := range map[string]*http.Response{"get": get.HTTPResponse, "patch": patch.HTTPResponse, "delete": del.HTTPResponse, "chat": cont.HTTPResponse, "stream": streamed.HTTPResponse} {
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("%s of another user's conversation = %d, want 404", name, r.StatusCode)
		}
	}
	list, _ := other.ListConversationsWithResponse(ctx, nil)
	if list.JSON200 == nil || len(list.JSON200.Items) != 0 {
		t.Errorf("another user lists %s", list.Body)
	}
	conv := conversation(t, owner, id)
	if conv.Title != "mine" || len(conv.Messages) != 2 {
		t.Errorf("owner's conversation changed: %+v", conv)
	}
}

func TestConversationLifecycle(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	c := a.UserClient(t)
	ctx := context.Background()
	var ids []uuid.UUID
	for i := range 5 {
		r, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: "tiny", Messages: userMessage(fmt.Sprintf("conversation %d", i))})
		if err != nil || r.JSON200 == nil {
			t.Fatalf("chat %d: %v", i, err)
		}
		ids = append(ids, r.JSON200.ConversationId)
	}
	// Pages of 2, newest first, until next_cursor is null.
	var seen []uuid.UUID
	var cursor *string
	pages := 0
	for {
		limit := 2
		r, err := c.ListConversationsWithResponse(ctx, &client.ListConversationsParams{Limit: &limit, Cursor: cursor})
		if err != nil || r.JSON200 == nil {
			t.Fatalf("list: %v %s", err, r.Body)
		}
		pages++
		for _, it := range r.JSON200.Items {
			seen = append(seen, it.Id)
		}
		if cursor = r.JSON200.NextCursor; cursor == nil {
			break
		}
	}
	if pages != 3 || len(seen) != 5 {
		t.Fatalf("%d pages with %d items, want 3 pages with 5", pages, len(seen))
	}
	for i := range seen {
		if seen[i] != ids[len(ids)-1-i] {
			t.Fatalf("order = %v, want newest first %v", seen, ids)
		}
	}

	renamed, err := c.UpdateConversationWithResponse(ctx, ids[0], client.ConversationUpdate{Title: "  Renamed  "})
	if err != nil || renamed.JSON200 == nil || renamed.JSON200.Title != "Renamed" || !renamed.JSON200.UpdatedAt.After(renamed.JSON200.CreatedAt) {
		t.Fatalf("rename: %v %s", err, renamed.Body)
	}
	blank, _ := c.UpdateConversationWithResponse(ctx, ids[0], client.ConversationUpdate{Title: "   "})
	if blank.StatusCode() != http.StatusUnprocessableEntity {
		t.Errorf("blank title = %d, want 422", blank.StatusCode())
	}
	del, err := c.DeleteConversationWithResponse(ctx, ids[0])
	if err != nil || del.StatusCode() != http.StatusNoContent {
		t.Fatalf("delete: %v %d", err, del.StatusCode())
	}
	if gone, _ := c.GetConversationWithResponse(ctx, ids[0]); gone.StatusCode() != http.StatusNotFound {
		t.Errorf("deleted conversation = %d, want 404", gone.StatusCode())
	}
	if again, _ := c.DeleteConversationWithResponse(ctx, ids[0]); again.StatusCode() != http.StatusNotFound {
		t.Errorf("second delete = %d, want 404", again.StatusCode())
	}
}

func TestModels(t *testing.T) {
	namespaced := ollamatest.Tiny()
	namespaced.Name = "hf.co/org/tiny:latest"
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Models: []ollamatest.Model{ollamatest.Tiny(), namespaced}}})
	c := a.UserClient(t)
	ctx := context.Background()
	list, err := c.ListModelsWithResponse(ctx)
	if err != nil || list.JSON200 == nil {
		t.Fatalf("list models: %v %s", err, list.Body)
	}
	if len(list.JSON200.Models) != 2 || list.JSON200.Models[0].Name != "tiny:latest" || list.JSON200.Models[0].Family != "llama" {
		t.Errorf("models = %+v", list.JSON200.Models)
	}
	// A name with slashes travels URL-encoded in the path.
	if r, err := c.GetModelWithResponse(ctx, namespaced.Name); err != nil || r.JSON200 == nil || r.JSON200.Name != namespaced.Name {
		t.Errorf("get %s: %v %s", namespaced.Name, err, r.Body)
	}
	one, err := c.GetModelWithResponse(ctx, "tiny")
	if err != nil || one.JSON200 == nil {
		t.Fatalf("get model: %v %s", err, one.Body)
	}
	if one.JSON200.ContextLength == nil || *one.JSON200.ContextLength != 2048 || one.JSON200.Format != "gguf" ||
		one.JSON200.Name != "tiny:latest" || one.JSON200.Size != ollamatest.Tiny().Size {
		t.Errorf("model = %+v", one.JSON200)
	}
	missing, _ := c.GetModelWithResponse(ctx, "nope:1b")
	if missing.StatusCode() != http.StatusNotFound {
		t.Errorf("unknown model = %d, want 404", missing.StatusCode())
	}
	testapp.Problem(t, missing.HTTPResponse, missing.Body)
}
