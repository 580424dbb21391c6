package faults_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// question is what every call asks.
const question = "Tell me a story"

// route is a chat route of one of the APIs.
type route struct {
	name     string
	streamed bool // the answer is streamed
	stores   bool // the user's message and the answer are stored
	// send makes the call c, calling mid, if not nil, in its middle (see fault.during).
	send func(t *testing.T, ctx context.Context, e *env, c *call, mid func())
}

var routes = []route{
	{name: "native JSON", stores: true, send: nativeJSON},
	{name: "native SSE", streamed: true, stores: true, send: nativeSSE},
	{name: "OpenAI stream", streamed: true, stores: true, send: openaiStream},
	{name: "Ollama stream", streamed: true, send: ollamaStream},
}

// env is the running service of a fault and what its calls need.
type env struct {
	app   *testapp.App
	http  *http.Client
	redis *redisServer // the service's own Redis, or nil
	calls int          // the calls made so far
	token string       // the access token of the running or last call's user
	leave func()       // ends the running call's request, as a client that goes away
}

// call is one model call and what its client saw of it.
type call struct {
	requestID string
	token     string // the caller's access token: each call has a user of its own
	midRan    bool   // the fault's during ran
	status    int    // 0 when the client left before the status came
	header    http.Header
	text      string // the answer's text received
	chunks    int    // the pieces of the answer received
	end       string
	told      told // the failure the client was told of
}

// told is a failure as a route tells it.
type told struct {
	status int    // the problem's status, or the HTTP status of an error answer; 0 when the route does not say
	code   string // the code of an OpenAI-compatible error
	detail string // the problem's detail, or the error's message
}

// finished is a call made, with what it had to end in.
type finished struct {
	route route
	call  *call
	want  want
}

// call makes one call of route r as a new user, with during in its middle.
func (e *env) call(t *testing.T, r route, during func(*env) error) *call {
	t.Helper()
	_, tokens := e.app.NewUser(t)
	c := &call{requestID: "fault-" + rand.Text(), token: tokens.AccessToken}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e.leave, e.token = cancel, c.token
	var mid func()
	if during != nil {
		mid = func() {
			c.midRan = true
			if err := during(e); err != nil {
				t.Errorf("in the middle of the call: %v", err)
			}
		}
	}
	r.send(t, ctx, e, c, mid)
	e.calls++
	if during != nil && !c.midRan {
		t.Error("the call ended before its middle")
	}
	return c
}

// post sends a chat request of c, with headers given as name, value pairs, and notes the answer's status and
// headers. It reports false when the client left before the answer came; any other failure ends the test.
func (e *env) post(t *testing.T, ctx context.Context, c *call, path, body string, headers ...string) (*http.Response, bool) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.app.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("X-Request-ID", c.requestID)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.http.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		return nil, false
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	c.status, c.header = resp.StatusCode, resp.Header
	return resp, true
}

// get sends GET path as the running call's user and returns the status of the answer.
func (e *env) get(path string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, e.app.URL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// whenModelCalled runs mid, if not nil, on a goroutine of its own once the model server received one
// more chat request than it has now. The returned func waits for mid to end, or stops waiting for the
// request; call it before the call returns.
func (e *env) whenModelCalled(mid func()) (wait func()) {
	if mid == nil {
		return func() {}
	}
	n := len(e.app.Ollama.ChatRequests())
	stop, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		for len(e.app.Ollama.ChatRequests()) == n {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		mid()
	}()
	return func() {
		close(stop)
		<-ended
	}
}

// chatBody is the body of a native chat.
const chatBody = `{"model":"tiny","messages":[{"role":"user","content":"` + question + `"}]}`

// nativeJSON calls POST /v1/chat.
func nativeJSON(t *testing.T, ctx context.Context, e *env, c *call, mid func()) {
	defer e.whenModelCalled(mid)()
	resp, ok := e.post(t, ctx, c, "/v1/chat", chatBody)
	if !ok {
		return
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		p := testapp.Problem(t, resp, body)
		c.told = told{status: p.Status, detail: p.Detail}
		return
	}
	var result client.ChatResult
	if err := json.Unmarshal(body, &result); err != nil {
		t.Fatalf("decode the answer: %v", err)
	}
	c.text, c.end = result.Message.Content, endDone
}

// nativeSSE calls POST /v1/chat/stream, checking each event against the contract.
func nativeSSE(t *testing.T, ctx context.Context, e *env, c *call, mid func()) {
	resp, ok := e.post(t, ctx, c, "/v1/chat/stream", chatBody)
	if !ok {
		return
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		p := testapp.Problem(t, resp, body)
		c.told = told{status: p.Status, detail: p.Detail}
		return
	}
	events, end := testapp.ReadEvents(resp.Body)
	for ev := range events {
		testapp.CheckEvent(t, ev.Event)
		if c.end != endNone {
			t.Errorf("event %s after the stream's end", ev.Type)
		}
		switch ev.Type {
		case "delta":
			var d client.StreamDelta
			_ = json.Unmarshal([]byte(ev.Data), &d)
			c.received(d.Content, mid)
		case "done":
			c.end = endDone
		case "error":
			var p client.Problem
			_ = json.Unmarshal([]byte(ev.Data), &p)
			c.end, c.told = endError, told{status: p.Status, detail: p.Detail}
		}
	}
	if err := (<-end).Err; err != nil && ctx.Err() == nil {
		t.Errorf("read the stream: %v", err)
	}
}

// received notes a piece of the answer, and calls mid after the first.
func (c *call) received(content string, mid func()) {
	c.text += content
	c.chunks++
	if c.chunks == 1 && mid != nil {
		mid()
	}
}

// openaiError is the error body of the OpenAI-compatible API, and an error event of its streams.
type openaiError struct {
	Error *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

// openaiStream calls POST /openai/v1/chat/completions with stream true, asking for the exchange to be stored
// in a new conversation.
func openaiStream(t *testing.T, ctx context.Context, e *env, c *call, mid func()) {
	body := `{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"` + question + `"}]}`
	resp, ok := e.post(t, ctx, c, "/openai/v1/chat/completions", body, "X-DS-Conversation-Id", "new")
	if !ok {
		return
	}
	if resp.StatusCode != http.StatusOK {
		var oe openaiError
		if err := json.NewDecoder(resp.Body).Decode(&oe); err != nil || oe.Error == nil {
			t.Fatalf("%d answer is not an OpenAI error: %v", resp.StatusCode, err)
		}
		c.told = told{status: resp.StatusCode, code: oe.Error.Code, detail: oe.Error.Message}
		return
	}
	r := sse.NewReader(resp.Body)
	finished := false // a chunk with a finish_reason came
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				t.Errorf("read the stream: %v", err)
			}
			return
		}
		if c.end != endNone {
			t.Errorf("event %q after the stream's end", ev.Data)
		}
		if ev.Data == "[DONE]" {
			if !finished {
				t.Error("[DONE] without a chunk with a finish_reason")
			}
			c.end = endDone
			continue
		}
		var chunk struct {
			openaiError
			Choices []struct {
				Delta        struct{ Content string }
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(ev.Data), &chunk); err != nil {
			t.Fatalf("event %q: %v", ev.Data, err)
		}
		if chunk.Error != nil {
			c.end, c.told = endError, told{code: chunk.Error.Code, detail: chunk.Error.Message}
			continue
		}
		for _, choice := range chunk.Choices {
			if choice.Delta.Content != "" {
				c.received(choice.Delta.Content, mid)
			}
			finished = finished || choice.FinishReason != nil
		}
	}
}

// ollamaStream calls POST /ollama/api/chat, which streams by default.
func ollamaStream(t *testing.T, ctx context.Context, e *env, c *call, mid func()) {
	resp, ok := e.post(t, ctx, c, "/ollama/api/chat", chatBody)
	if !ok {
		return
	}
	if resp.StatusCode != http.StatusOK {
		var oe struct{ Error string }
		if err := json.NewDecoder(resp.Body).Decode(&oe); err != nil {
			t.Fatalf("%d answer is not an Ollama error: %v", resp.StatusCode, err)
		}
		c.told = told{status: resp.StatusCode, detail: oe.Error}
		return
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if c.end != endNone {
				t.Errorf("line %s after the stream's end", line)
			}
			var l struct {
				Message struct{ Content string }
				Done    bool
				Error   string
			}
			if err := json.Unmarshal(line, &l); err != nil {
				t.Fatalf("line %s: %v", line, err)
			}
			switch {
			case l.Error != "":
				c.end, c.told = endError, told{detail: l.Error}
			case l.Done:
				c.end = endDone
			case l.Message.Content != "":
				c.received(l.Message.Content, mid)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				t.Errorf("read the stream: %v", err)
			}
			return
		}
	}
}
