package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	openapi_types "github.com/oapi-codegen/runtime/types"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// usageRow is a row of usage_records, as these tests read it.
type usageRow struct {
	Model, Upstream    string
	APIKeyID           *uuid.UUID
	Prompt, Completion int32
	TTFT               *int32
	Outcome, RequestID string
}

// usageOf waits up to three seconds for the usage record of a request and returns it.
func usageOf(t *testing.T, a *testapp.App, requestID string) usageRow {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		rows, err := conn.Query(ctx, `SELECT model, upstream, api_key_id, prompt_tokens, completion_tokens, ttft_ms, outcome,
			request_id FROM usage_records WHERE request_id = $1`, requestID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[usageRow])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 1 {
			t.Fatalf("%d usage records of request %s, want one: %+v", len(got), requestID, got)
		}
		if len(got) == 1 {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usage record of request %s within 3s", requestID)
		}
	}
}

// withRequestID sends a request id of the test's choosing.
func withRequestID(id string) client.RequestEditorFn {
	return func(_ context.Context, req *http.Request) error {
		req.Header.Set("X-Request-ID", id)
		return nil
	}
}

// checkUsage compares a usage record with want; a want of -1 completion tokens accepts any number between
// one and the 12 of the fake's whole answer.
func checkUsage(t *testing.T, got, want usageRow) {
	t.Helper()
	completionOK := got.Completion == want.Completion || (want.Completion == -1 && got.Completion >= 1 && got.Completion < 12)
	promptOK := got.Prompt == want.Prompt || (want.Prompt == -1 && got.Prompt > 0)
	if got.Model != want.Model || got.Upstream != want.Upstream || !completionOK || !promptOK || got.Outcome != want.Outcome ||
		(got.APIKeyID == nil) != (want.APIKeyID == nil) || (got.APIKeyID != nil && *got.APIKeyID != *want.APIKeyID) ||
		(got.TTFT == nil) != (want.TTFT == nil) {
		t.Errorf("usage record %+v (key %v, ttft %v)\nwant         %+v (key %v, ttft set: %v)", got, got.APIKeyID, got.TTFT,
			want, want.APIKeyID, want.TTFT != nil)
	}
}

var anyTTFT = new(int32) // a want of a time to first token, whatever it is

// streamToEnd streams a chat under a request id and reads the stream to its end.
func streamToEnd(t *testing.T, c *client.ClientWithResponses, body client.ChatRequest, requestID string) {
	t.Helper()
	resp, err := c.StreamChat(context.Background(), body, withRequestID(requestID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events, end := testapp.ReadEvents(resp.Body)
	collect(t, events, end)
}

// TestUsageOfNativeCalls checks the usage record of each way a call of the native API ends.
func TestUsageOfNativeCalls(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{ChunkDelay: 50 * time.Millisecond}})
	user := a.UserClient(t)
	ctx := context.Background()
	created, err := user.CreateAPIKeyWithResponse(ctx, client.NewAPIKey{Name: "script"})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create API key: %v", err)
	}
	key := created.JSON201.Id
	withKey := a.Client(t, testapp.Bearer(created.JSON201.Secret))
	story := client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}

	t.Run("chat with an API key", func(t *testing.T) {
		resp, err := withKey.ChatWithResponse(ctx, story, withRequestID("native-chat"))
		if err != nil || resp.JSON200 == nil {
			t.Fatalf("chat: %v", err)
		}
		checkUsage(t, usageOf(t, a, "native-chat"), usageRow{Model: "tiny:latest", Upstream: "ollama", APIKeyID: &key,
			Prompt: int32(resp.JSON200.Usage.PromptTokens), Completion: 12, Outcome: "complete"})
	})
	t.Run("complete stream", func(t *testing.T) {
		streamToEnd(t, user, story, "native-stream")
		checkUsage(t, usageOf(t, a, "native-stream"), usageRow{Model: "tiny:latest", Upstream: "ollama", Prompt: -1,
			Completion: 12, TTFT: anyTTFT, Outcome: "complete"})
	})
	t.Run("the client leaves the stream", func(t *testing.T) {
		streamCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := user.StreamChat(streamCtx, story, withRequestID("native-left"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		events, _ := testapp.ReadEvents(resp.Body)
		for ev := range events {
			if ev.Type == "delta" {
				break
			}
		}
		cancel()
		checkUsage(t, usageOf(t, a, "native-left"), usageRow{Model: "tiny:latest", Upstream: "ollama", Completion: -1,
			TTFT: anyTTFT, Outcome: "incomplete"})
	})
}

// TestUsageOfFailedCalls checks the usage record of calls whose model fails: midway through a stream, with
// the chunks it delivered, and before a whole answer.
func TestUsageOfFailedCalls(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Fault: &ollamatest.Fault{After: 3, Error: "the runner died"}}})
	user := a.UserClient(t)
	ctx := context.Background()
	story := client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}

	streamToEnd(t, user, story, "failed-stream")
	checkUsage(t, usageOf(t, a, "failed-stream"), usageRow{Model: "tiny:latest", Upstream: "ollama", Completion: 3,
		TTFT: anyTTFT, Outcome: "error"})

	if _, err := user.ChatWithResponse(ctx, story, withRequestID("failed-chat")); err != nil {
		t.Fatal(err)
	}
	checkUsage(t, usageOf(t, a, "failed-chat"), usageRow{Model: "tiny:latest", Upstream: "ollama", Outcome: "error"})
}

// TestUsageOfCompatibleCalls checks that the calls of the Ollama- and OpenAI-compatible APIs are accounted
// for like the native ones: chats streamed and not, generations and embeddings.
func TestUsageOfCompatibleCalls(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, tokens := a.NewUser(t)
	httpClient := a.HTTPClient(t)
	post := func(path, requestID, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, a.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tokens.AccessToken)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Request-ID", requestID)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s = %d %s", path, resp.StatusCode, data)
		}
	}
	chat := `{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}]`
	tests := []struct {
		name, path, body string
		want             usageRow
	}{
		{name: "chat stream", path: "/ollama/api/chat", body: chat + `}`,
			want: usageRow{Prompt: -1, Completion: 12, TTFT: anyTTFT, Outcome: "complete"}},
		// The answers that are not streamed to the client are streamed from the model all the same.
		{name: "chat", path: "/ollama/api/chat", body: chat + `,"stream":false}`,
			want: usageRow{Prompt: -1, Completion: 12, TTFT: anyTTFT, Outcome: "complete"}},
		{name: "generate", path: "/ollama/api/generate", body: `{"model":"tiny","prompt":"Tell me a story","stream":false}`,
			want: usageRow{Prompt: -1, Completion: 12, TTFT: anyTTFT, Outcome: "complete"}},
		{name: "embed", path: "/ollama/api/embed", body: `{"model":"tiny","input":["a","b"]}`,
			want: usageRow{Prompt: -1, Outcome: "complete"}},
		{name: "openai chat completion", path: "/openai/v1/chat/completions", body: chat + `}`,
			want: usageRow{Prompt: -1, Completion: 12, Outcome: "complete"}},
		{name: "openai chat completion stream", path: "/openai/v1/chat/completions", body: chat + `,"stream":true}`,
			want: usageRow{Prompt: -1, Completion: 12, TTFT: anyTTFT, Outcome: "complete"}},
		{name: "openai embeddings", path: "/openai/v1/embeddings", body: `{"model":"tiny","input":["a","b"]}`,
			want: usageRow{Prompt: -1, Outcome: "complete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requestID := "ollama-" + strings.ReplaceAll(tt.name, " ", "-")
			post(tt.path, requestID, tt.body)
			tt.want.Model, tt.want.Upstream = "tiny:latest", "ollama"
			checkUsage(t, usageOf(t, a, requestID), tt.want)
		})
	}
}

// TestUsageReports checks GET /v1/usage and GET /v1/admin/usage: a call reaches them within two seconds of
// its end, each user sees only its own calls, the bounds hold, and the admin report exists for admins only.
func TestUsageReports(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	ctx := context.Background()
	adaEmail, adaTokens := a.NewUser(t)
	ada := a.Client(t, testapp.Bearer(adaTokens.AccessToken))
	bob := a.UserClient(t)
	story := client.ChatRequest{Model: "tiny", Messages: userMessage("Tell me a story")}
	for _, c := range []*client.ClientWithResponses{ada, ada, bob} {
		if resp, err := c.ChatWithResponse(ctx, story); err != nil || resp.JSON200 == nil {
			t.Fatalf("chat: %v", err)
		}
	}
	ended := time.Now()
	today := time.Now().UTC()
	byModel := client.GetUsageParamsGroupByModel
	var prompt int64 // the prompt tokens of one call: all three send the same prompt
	for {
		resp, err := ada.GetUsageWithResponse(ctx, &client.GetUsageParams{GroupBy: &byModel})
		if err != nil || resp.JSON200 == nil {
			t.Fatalf("usage: %v", err)
		}
		if items := resp.JSON200.Items; len(items) == 1 && items[0].Requests == 2 {
			if *items[0].Model != "tiny:latest" || items[0].CompletionTokens != 24 || items[0].PromptTokens == 0 {
				t.Errorf("ada's usage by model: %+v", items[0])
			}
			prompt = items[0].PromptTokens / 2
			break
		}
		if time.Since(ended) > 2*time.Second {
			t.Fatalf("ada's usage 2s after her calls: %s", resp.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	day := func(t time.Time) *openapi_types.Date { return &openapi_types.Date{Time: t} }
	tests := []struct {
		name   string
		client *client.ClientWithResponses
		params client.GetUsageParams
		want   string // the items as JSON, their fields in alphabetical order
	}{
		{name: "by day, the default", client: ada, params: client.GetUsageParams{},
			want: `[{"completion_tokens":24,"day":"` + today.Format(time.DateOnly) + `","prompt_tokens":P2,"requests":2}]`},
		{name: "another user's", client: bob, params: client.GetUsageParams{GroupBy: &byModel},
			want: `[{"completion_tokens":12,"model":"tiny:latest","prompt_tokens":P1,"requests":1}]`},
		{name: "a period that starts tomorrow", client: ada, params: client.GetUsageParams{From: day(today.AddDate(0, 0, 1))}, want: `[]`},
		{name: "a period that ended yesterday", client: ada, params: client.GetUsageParams{To: day(today.AddDate(0, 0, -1))}, want: `[]`},
		{name: "today alone", client: ada, params: client.GetUsageParams{From: day(today), To: day(today)},
			want: `[{"completion_tokens":24,"day":"` + today.Format(time.DateOnly) + `","prompt_tokens":P2,"requests":2}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.client.GetUsageWithResponse(ctx, &tt.params)
			if err != nil || resp.JSON200 == nil {
				t.Fatalf("usage: %v", err)
			}
			got, _ := json.Marshal(resp.JSON200.Items)
			want := strings.NewReplacer("P2", strconv.FormatInt(2*prompt, 10), "P1", strconv.FormatInt(prompt, 10)).Replace(tt.want)
			if string(got) != want {
				t.Errorf("items = %s\nwant    %s", got, want)
			}
		})
	}
	t.Run("a period that ends before it starts", func(t *testing.T) {
		resp, err := ada.GetUsageWithResponse(ctx, &client.GetUsageParams{From: day(today), To: day(today.AddDate(0, 0, -1))})
		if err != nil || resp.StatusCode() != http.StatusUnprocessableEntity {
			t.Fatalf("usage = %v, %v; want 422", resp.StatusCode(), err)
		}
	})

	t.Run("admin report", func(t *testing.T) {
		if resp, err := ada.GetAdminUsageWithResponse(ctx, &client.GetAdminUsageParams{}); err != nil || resp.StatusCode() != http.StatusNotFound {
			t.Fatalf("admin usage of a user who is not an admin = %v, %v; want 404", resp.StatusCode(), err)
		}
		grantAdmin(t, a, adaEmail)
		byUser := client.GetAdminUsageParamsGroupByUser
		resp, err := ada.GetAdminUsageWithResponse(ctx, &client.GetAdminUsageParams{GroupBy: &byUser})
		if err != nil || resp.JSON200 == nil {
			t.Fatalf("admin usage = %v, %v", resp.StatusCode(), err)
		}
		requests := map[int64]int{}
		for _, item := range resp.JSON200.Items {
			if item.UserId == nil || item.Day != nil || item.Model != nil {
				t.Errorf("item %+v: want only a user id as its key", item)
			}
			requests[item.Requests]++
		}
		if len(resp.JSON200.Items) != 2 || requests[2] != 1 || requests[1] != 1 {
			t.Errorf("admin usage by user: %s, want ada's 2 calls and bob's 1", resp.Body)
		}
	})
}

// grantAdmin makes the account with email an admin, as `deepersensor admin grant` does.
func grantAdmin(t *testing.T, a *testapp.App, email string) {
	t.Helper()
	const grant = "WITH granted AS (UPDATE users SET role = 'admin' WHERE email = $1 RETURNING id) SELECT count(*) FROM granted"
	if n := countRows(t, a, grant, email); n != 1 {
		t.Fatalf("granted %d accounts the admin role, want 1", n)
	}
}
