package openaitest_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/openaitest"
	"github.com/deepersensor/deepersensor/internal/sse"
)

// call sends body (none when empty) to the fake and returns the answer and its body.
func call(t *testing.T, s *openaitest.Server, method, path, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.BaseURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

const hello = `{"model":"gpt-tiny","messages":[{"role":"user","content":"Say hello"}]`

func TestModels(t *testing.T) {
	s := openaitest.New(t, openaitest.Options{Models: []string{"a", "b"}})
	resp, body := call(t, s, http.MethodGet, "/models", "")
	want := `{"object":"list","data":[{"id":"a","object":"model","created":1795641903,"owned_by":"openaitest"},` +
		`{"id":"b","object":"model","created":1795641903,"owned_by":"openaitest"}]}`
	if resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("models = %d %s, want %s", resp.StatusCode, body, want)
	}
}

func TestChat(t *testing.T) {
	s := openaitest.New(t, openaitest.Options{FinishReason: "length"})
	resp, body := call(t, s, http.MethodPost, "/chat/completions", hello+`,"temperature":0,"max_tokens":5}`)
	want := `{"id":"chatcmpl-1","object":"chat.completion","created":1795641903,"model":"gpt-tiny","system_fingerprint":"fp_openaitest",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello, world!"},"logprobs":null,"finish_reason":"length"}],` +
		`"usage":{"prompt_tokens":2,"completion_tokens":4,"total_tokens":6}}`
	if resp.StatusCode != http.StatusOK || body != want || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("chat = %d %s %s, want %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, want)
	}
	sent := s.ChatRequests()
	if len(sent) != 1 || sent[0].Stream || *sent[0].Temperature != 0 || *sent[0].MaxTokens != 5 || sent[0].TopP != nil {
		t.Errorf("recorded %+v", sent)
	}
}

func TestStream(t *testing.T) {
	const chunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1795641903,"model":"gpt-tiny","system_fingerprint":"fp_openaitest",`
	for _, withUsage := range []bool{false, true} {
		s := openaitest.New(t, openaitest.Options{Tokens: []string{"Hi", "!"}})
		body, usage := hello+`,"stream":true}`, ""
		if withUsage {
			body, usage = hello+`,"stream":true,"stream_options":{"include_usage":true}}`, `,"usage":null`
		}
		resp, got := call(t, s, http.MethodPost, "/chat/completions", body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Fatalf("stream = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		want := "data: " + chunk + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]` + usage + "}\n\n" +
			"data: " + chunk + `"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]` + usage + "}\n\n" +
			"data: " + chunk + `"choices":[{"index":0,"delta":{"content":"!"},"logprobs":null,"finish_reason":null}]` + usage + "}\n\n" +
			"data: " + chunk + `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]` + usage + "}\n\n"
		if withUsage {
			want += "data: " + chunk + `"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}` + "\n\n"
		}
		want += "data: [DONE]\n\n"
		if got != want {
			t.Errorf("include_usage %t: stream\n%s\nwant\n%s", withUsage, got, want)
		}
	}
}

func TestFaults(t *testing.T) {
	t.Run("error in the stream", func(t *testing.T) {
		s := openaitest.New(t, openaitest.Options{Fault: &openaitest.Fault{After: 1, Error: "engine died"}})
		_, body := call(t, s, http.MethodPost, "/chat/completions", hello+`,"stream":true}`)
		events, err := sse.ReadAll(strings.NewReader(body))
		if err != nil || len(events) != 4 {
			t.Fatalf("events %+v, %v; want role, one token, the error, [DONE]", events, err)
		}
		if events[2].Data != `{"error":{"message":"engine died","type":"server_error","param":null,"code":null}}` || events[3].Data != "[DONE]" {
			t.Errorf("end of the stream = %+v", events[2:])
		}
	})
	t.Run("error without a stream", func(t *testing.T) {
		s := openaitest.New(t, openaitest.Options{Fault: &openaitest.Fault{After: 1, Error: "engine died"}})
		resp, body := call(t, s, http.MethodPost, "/chat/completions", hello+`}`)
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, `"message":"engine died"`) {
			t.Errorf("answer = %d %s", resp.StatusCode, body)
		}
	})
	t.Run("stall ends when the client goes away", func(t *testing.T) {
		s := openaitest.New(t, openaitest.Options{Fault: &openaitest.Fault{After: 1}})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.BaseURL()+"/chat/completions", strings.NewReader(hello+`,"stream":true}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if !s.WaitCancelled(1, time.Second) {
			t.Error("the stalled stream was not counted as cancelled")
		}
	})
}

// errorObject is OpenAI's error body, every key required.
type errorObject struct {
	Error struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name       string
		opts       openaitest.Options
		method     string
		path, body string
		header     []string
		wantStatus int
		wantType   string
		wantCode   string
		wantIn     string // a part of the message
	}{
		{name: "unknown model", method: http.MethodPost, path: "/chat/completions", body: `{"model":"nope","messages":[{"role":"user","content":"x"}]}`,
			wantStatus: 404, wantType: "invalid_request_error", wantCode: "model_not_found", wantIn: "`nope` does not exist"},
		{name: "no model", method: http.MethodPost, path: "/embeddings", body: `{"input":"x"}`,
			wantStatus: 400, wantType: "invalid_request_error", wantIn: "model"},
		{name: "no messages", method: http.MethodPost, path: "/chat/completions", body: `{"model":"gpt-tiny","messages":[]}`,
			wantStatus: 400, wantType: "invalid_request_error", wantIn: "messages"},
		{name: "not JSON", method: http.MethodPost, path: "/chat/completions", body: `{`,
			wantStatus: 400, wantType: "invalid_request_error"},
		{name: "wrong key", opts: openaitest.Options{APIKey: "sk-right"}, method: http.MethodGet, path: "/models",
			header: []string{"Authorization", "Bearer sk-wrong"}, wantStatus: 401, wantType: "invalid_request_error",
			wantCode: "invalid_api_key", wantIn: "sk-wrong"},
		{name: "no key", opts: openaitest.Options{APIKey: "sk-right"}, method: http.MethodGet, path: "/models",
			wantStatus: 401, wantType: "invalid_request_error", wantCode: "invalid_api_key"},
		{name: "status 429", opts: openaitest.Options{Status: 429}, method: http.MethodGet, path: "/models",
			wantStatus: 429, wantType: "requests", wantIn: "Too Many Requests"},
		{name: "status 503", opts: openaitest.Options{Status: 503, StatusMessage: "overloaded"}, method: http.MethodPost,
			path: "/chat/completions", body: hello + "}", wantStatus: 503, wantType: "server_error", wantIn: "overloaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openaitest.New(t, tt.opts)
			resp, body := call(t, s, tt.method, tt.path, tt.body, tt.header...)
			var e errorObject
			if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != tt.wantStatus {
				t.Fatalf("answer = %d %s (%v), want %d and an error object", resp.StatusCode, body, err, tt.wantStatus)
			}
			for _, key := range []string{`"message":`, `"type":`, `"param":`, `"code":`} {
				if !strings.Contains(body, key) {
					t.Errorf("error object %s lacks %s", body, key)
				}
			}
			if e.Error.Message == nil || !strings.Contains(*e.Error.Message, tt.wantIn) || e.Error.Type == nil || *e.Error.Type != tt.wantType {
				t.Errorf("error = %s, want type %s and a message with %q", body, tt.wantType, tt.wantIn)
			}
			if code := e.Error.Code; (tt.wantCode == "") != (code == nil) || (code != nil && *code != tt.wantCode) {
				t.Errorf("error = %s, want code %q", body, tt.wantCode)
			}
		})
	}
}

func TestEmbeddings(t *testing.T) {
	s := openaitest.New(t, openaitest.Options{APIKey: "sk-right"})
	for input, texts := range map[string][]string{`"one text"`: {"one text"}, `["a","b c"]`: {"a", "b c"}} {
		resp, body := call(t, s, http.MethodPost, "/embeddings", `{"model":"gpt-tiny","input":`+input+`}`, "Authorization", "Bearer sk-right")
		var out struct {
			Object string `json:"object"`
			Data   []struct {
				Object    string    `json:"object"`
				Index     int       `json:"index"`
				Embedding []float64 `json:"embedding"`
			} `json:"data"`
			Model string `json:"model"`
			Usage struct {
				PromptTokens int `json:"prompt_tokens"`
				TotalTokens  int `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("embeddings = %d %s", resp.StatusCode, body)
		}
		if out.Object != "list" || out.Model != "gpt-tiny" || len(out.Data) != len(texts) || out.Usage.PromptTokens == 0 {
			t.Fatalf("embeddings = %s", body)
		}
		for i, d := range out.Data {
			want := ollamatest.Embedding("gpt-tiny", texts[i])
			if d.Object != "embedding" || d.Index != i || len(d.Embedding) != len(want) || d.Embedding[0] != want[0] {
				t.Errorf("embedding %d = %+v, want %v", i, d, want)
			}
		}
	}
}
