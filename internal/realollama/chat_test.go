package realollama_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// The paths of the gateway's chat routes.
const (
	nativeChat   = "/v1/chat"
	nativeStream = "/v1/chat/stream"
	openaiChat   = "/openai/v1/chat/completions"
	ollamaChat   = "/ollama/api/chat"
	ollamaGen    = "/ollama/api/generate"
)

// TestSameAnswerAsDirect asks the same question through each API of the gateway and straight to Ollama, in
// the same dialect where Ollama speaks it: at seed 42 and temperature 0 the answers are the same text.
func TestSameAnswerAsDirect(t *testing.T) {
	const n = 48
	r := newRig(t)
	tests := []struct {
		name, path, body       string // sent to the gateway
		directPath, directBody string // sent to Ollama
	}{
		{"native", nativeChat, nativeBody(n), "/api/chat", ollamaChatBody(n, false)},
		{"native stream", nativeStream, nativeBody(n), "/api/chat", ollamaChatBody(n, false)},
		{"OpenAI", openaiChat, openaiBody(n, false), "/v1/chat/completions", openaiBody(n, false)},
		{"OpenAI stream", openaiChat, openaiBody(n, true), "/v1/chat/completions", openaiBody(n, false)},
		{"Ollama chat", ollamaChat, ollamaChatBody(n, false), "/api/chat", ollamaChatBody(n, false)},
		{"Ollama chat stream", ollamaChat, ollamaChatBody(n, true), "/api/chat", ollamaChatBody(n, false)},
		{"Ollama generate", ollamaGen, generateBody(n, false), "/api/generate", generateBody(n, false)},
		{"Ollama generate stream", ollamaGen, generateBody(n, true), "/api/generate", generateBody(n, false)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			want := readAnswer(t, r.direct(t, ctx, tt.directPath, tt.directBody)).text
			got := readAnswer(t, r.gateway(t, ctx, tt.path, tt.body)).text
			if got != want || len(strings.Fields(want)) < 5 {
				t.Errorf("through the gateway %q,\nstraight to Ollama %q: want the same answer of several words", got, want)
			}
		})
	}
}

// TestStreamsAreIncremental checks that each streaming API passes the model's tokens on as they come: many
// pieces, the first long before the last.
func TestStreamsAreIncremental(t *testing.T) {
	const n = 400 // tokens, within the context window of 512
	r := newRig(t)
	tests := []struct{ name, path, body string }{
		{"native", nativeStream, nativeBody(n)},
		{"OpenAI", openaiChat, openaiBody(n, true)},
		{"Ollama chat", ollamaChat, ollamaChatBody(n, true)},
		{"Ollama generate", ollamaGen, generateBody(n, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			a := readAnswer(t, r.gateway(t, ctx, tt.path, tt.body))
			if len(a.texts) < n/2 {
				t.Fatalf("%d pieces of text for %d tokens: the stream is batched", len(a.texts), n)
			}
			first, last := a.texts[0].Sub(start), a.texts[len(a.texts)-1].Sub(start)
			t.Logf("%d pieces: the first after %v, the last after %v", len(a.texts), first, last)
			if first > last/3 {
				t.Errorf("the first of %d pieces after %v, the last after %v: the stream is buffered", len(a.texts), first, last)
			}
		})
	}
}

// TestClientLeavingFreesOllama starts a long answer through each streaming API (each a call of Ollama's
// /api/chat), leaves after a few pieces, and checks that the gateway ends its call to Ollama at once (Ollama's
// access log shows the call's end), so that Ollama, which serves one request at a time, answers the next call
// at once rather than after the abandoned answer. The test's own calls of Ollama go to /api/generate, so that
// the log's /api/chat lines are the gateway's alone.
//
// Ollama v0.17.4 itself can hang after a client leaves a stream (ollama/ollama#17131): when its handler notices
// the closed connection between two pieces, the goroutine producing the answer blocks for ever on its next send
// and keeps the runner's only slot, so every later call waits. That is told apart from a gateway that does not
// end its call: the call's end is in Ollama's log, and killing the runner (which Ollama replaces) frees it.
func TestClientLeavingFreesOllama(t *testing.T) {
	r := newRig(t)
	// Long enough that finishing it would take about 10 s.
	n := int(10 * tokensPerSecond(t, r))
	tests := []struct{ name, path, body string }{
		{"native", nativeStream, nativeBody(n)},
		{"OpenAI", openaiChat, openaiBody(n, true)},
		{"Ollama chat", ollamaChat, ollamaChatBody(n, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, leave := context.WithCancel(context.Background())
			defer leave()
			ended := r.ollama.PostsEnded("/api/chat")
			ch := chunks(t, r.gateway(t, ctx, tt.path, tt.body))
			readTexts(t, ch, 5)
			leave()
			left := time.Now()
			for r.ollama.PostsEnded("/api/chat") == ended {
				if time.Since(left) > 2*time.Second {
					t.Fatal("Ollama's log shows no end of the gateway's call 2s after the client left")
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("Ollama saw the gateway's call end %v after the client left", time.Since(left))
			drain(ch)

			// The abandoned answer had about 10 s to go: a next call answered within 2 s shows it was not made.
			next, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			sent := time.Now()
			_, err := r.ollama.Post(next, "/api/generate", generateBody(8, false))
			took := time.Since(sent)
			if errors.Is(err, context.DeadlineExceeded) {
				freeHungRunner(t, r)
				return
			}
			if err != nil {
				t.Fatalf("the next call: %v", err)
			}
			t.Logf("the next call was answered in %v", took)
			if took > 2*time.Second {
				t.Errorf("the next call was answered in %v: Ollama went on with the abandoned answer", took)
			}
		})
	}
}

// freeHungRunner frees an Ollama that hung after its handler saw the gateway's call end (ollama/ollama#17131):
// with the runner killed, the next call must be answered by a new one; if it is not, Ollama was held by
// something else, and t fails.
func freeHungRunner(t *testing.T, r rig) {
	t.Helper()
	pids, err := r.ollama.KillRunners()
	if err != nil || len(pids) == 0 {
		t.Fatalf("Ollama answered no next call within 5s, and its runners %v could not be killed: %v", pids, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r.ollama.Post(ctx, "/api/generate", generateBody(8, false)); err != nil {
		t.Fatalf("Ollama answered no next call within 5s, nor after its runner was killed: %v", err)
	}
	t.Logf("Ollama hung after the gateway's call ended (ollama/ollama#17131) and answered again once its runner %v was killed", pids)
}

// tokensPerSecond measures how fast Ollama generates, with one direct call.
func tokensPerSecond(t *testing.T, r rig) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := r.ollama.Post(ctx, "/api/generate", generateBody(256, false))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		EvalCount    int   `json:"eval_count"`
		EvalDuration int64 `json:"eval_duration"`
	}
	if err := json.Unmarshal(out, &m); err != nil || m.EvalCount < 100 || m.EvalDuration <= 0 {
		t.Fatalf("decode the answer %s: %v; want eval_count and eval_duration", out, err)
	}
	rate := float64(m.EvalCount) / time.Duration(m.EvalDuration).Seconds()
	t.Logf("ollama generates %.0f tokens/s", rate)
	return rate
}

// TestRunnerKilledMidway kills Ollama's model runner in the middle of an answer through each streaming API:
// the stream ends with the API's error, and the native and OpenAI routes, which store the conversation here,
// keep the partial answer as incomplete. Ollama starts a new runner for the next call.
func TestRunnerKilledMidway(t *testing.T) {
	r := newRig(t)
	n := int(10 * tokensPerSecond(t, r))
	tests := []struct {
		name, path, body string
		headers          []string
		stored           bool // the conversation is stored
	}{
		{"native", nativeStream, nativeBody(n), nil, true},
		{"OpenAI", openaiChat, openaiBody(n, true), []string{"X-DS-Conversation-Id", "new"}, true},
		{"Ollama chat", ollamaChat, ollamaChatBody(n, true), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// The model is loaded, by the previous call or this one.
			if _, err := r.ollama.Post(ctx, "/api/chat", ollamaChatBody(1, false)); err != nil {
				t.Fatalf("load the model: %v", err)
			}
			resp := r.gateway(t, ctx, tt.path, tt.body, tt.headers...)
			ch := chunks(t, resp)
			meta, before := readTexts(t, ch, 5)
			if pids, err := r.ollama.KillRunners(); err != nil || len(pids) == 0 {
				t.Fatalf("killed runners %v, %v: want the model's runner", pids, err)
			}
			a := drain(ch)
			streamed := before + a.text
			if a.end.kind != errorChunk {
				t.Fatalf("the stream ended with %s %s after %q, want an error", a.end.kind, a.end.data, streamed)
			}
			t.Logf("the stream ended with %s after %d bytes of text", a.end.data, len(streamed))
			if !tt.stored {
				return
			}
			id := conversationID(t, meta, resp.Header.Get("X-DS-Conversation-Id"))
			last := lastMessage(t, r, id)
			if last.Role != client.RoleAssistant || last.Status != client.Incomplete || last.Content != streamed {
				t.Errorf("stored %s %s %q, want the assistant's incomplete answer %q", last.Role, last.Status, last.Content, streamed)
			}
		})
	}
}

// conversationID reads the conversation's id from the native stream's meta event, or else from the
// OpenAI-compatible answer's header.
func conversationID(t *testing.T, meta, header string) uuid.UUID {
	t.Helper()
	if meta != "" {
		var m client.StreamMeta
		if err := json.Unmarshal([]byte(meta), &m); err != nil {
			t.Fatalf("meta event %s: %v", meta, err)
		}
		return m.ConversationId
	}
	id, err := uuid.Parse(header)
	if err != nil {
		t.Fatalf("X-DS-Conversation-Id %q: %v", header, err)
	}
	return id
}

// lastMessage reads the newest stored message of a conversation through the messages API, waiting a little
// for the answer to be stored.
func lastMessage(t *testing.T, r rig, id uuid.UUID) client.Message {
	t.Helper()
	c := r.app.Client(t, testapp.Bearer(r.key))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.ListMessagesWithResponse(context.Background(), id, &client.ListMessagesParams{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("messages of %s = %d %s", id, resp.StatusCode(), resp.Body)
		}
		items := resp.JSON200.Items
		if len(items) > 0 && items[len(items)-1].Role == client.RoleAssistant || time.Now().After(deadline) {
			if len(items) == 0 {
				t.Fatalf("conversation %s holds no message", id)
			}
			return items[len(items)-1]
		}
	}
}
