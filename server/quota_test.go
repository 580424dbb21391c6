package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// postJSON sends a JSON body to path with a bearer token and returns the answer with its body read.
func postJSON(t *testing.T, a *testapp.App, method, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	header := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	return send(t, a, request{method: method, path: path, header: header, body: []byte(body)})
}

// TestDayQuotaInEveryDialect: a call that would cross the day quota is refused before anything is stored or
// sent to the model, on every route that calls a model, in the route's own error shape with Retry-After;
// the answers that pass carry the tokens left today.
func TestDayQuotaInEveryDialect(t *testing.T) {
	const perDay = 200
	a := testapp.Start(t, testapp.Options{Configure: sharedRedis(func(c *config.Config) { c.QuotaTokensPerDay = perDay })})
	_, tokens := a.NewUser(t)
	token := tokens.AccessToken

	// "Hi there" is 8 bytes: an estimate of 2 tokens, and 10 more for num_predict.
	resp, body := postJSON(t, a, http.MethodPost, "/v1/chat", token,
		`{"model":"tiny","messages":[{"role":"user","content":"Hi there"}],"options":{"num_predict":10}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first chat = %d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Quota-Day-Remaining"); got != strconv.Itoa(perDay-12) {
		t.Fatalf("X-Quota-Day-Remaining = %q, want %d", got, perDay-12)
	}
	var counts struct {
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(body, &counts); err != nil {
		t.Fatal(err)
	}
	used := counts.Usage.Prompt + counts.Usage.Completion
	if used == 0 || used >= perDay {
		t.Fatalf("the first chat used %d tokens; the test needs between 1 and %d", used, perDay-1)
	}
	left := perDay - used

	// The settled call: the next estimate sees the real counts. 4 bytes: 1 token.
	resp, body = postJSON(t, a, http.MethodPost, "/ollama/api/embed", token, `{"model":"tiny","input":["abcd"]}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Quota-Day-Remaining") != strconv.Itoa(left-1) {
		t.Fatalf("embed = %d %s, X-Quota-Day-Remaining %q; want 200 and %d", resp.StatusCode, body,
			resp.Header.Get("X-Quota-Day-Remaining"), left-1)
	}
	usageBefore := countRows(t, a, "SELECT count(*) FROM usage_records")
	for deadline := time.Now().Add(3 * time.Second); usageBefore < 2 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		usageBefore = countRows(t, a, "SELECT count(*) FROM usage_records")
	}
	messagesBefore := countRows(t, a, "SELECT count(*) FROM messages")

	big := strings.Repeat("w", 4*left) // left tokens: one more than what is left, less than the whole quota
	msgs := `[{"role":"user","content":"` + big + `"}]`
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	tests := []struct {
		name, path, body string
		check            func(t *testing.T, resp *http.Response, body []byte)
	}{
		{"native chat", "/v1/chat", `{"model":"tiny","messages":` + msgs + `}`, nativeQuotaProblem},
		{"native stream", "/v1/chat/stream", `{"model":"tiny","messages":` + msgs + `}`, nativeQuotaProblem},
		{"openai chat", "/openai/v1/chat/completions", `{"model":"tiny","messages":` + msgs + `}`, openaiQuotaError},
		{"openai stream", "/openai/v1/chat/completions", `{"model":"tiny","stream":true,"messages":` + msgs + `}`, openaiQuotaError},
		{"openai embeddings", "/openai/v1/embeddings", `{"model":"tiny","input":"` + big + `"}`, openaiQuotaError},
		{"ollama chat", "/ollama/api/chat", `{"model":"tiny","messages":` + msgs + `}`, ollamaQuotaError},
		{"ollama generate", "/ollama/api/generate", `{"model":"tiny","prompt":"` + big + `"}`, ollamaQuotaError},
		{"ollama embed", "/ollama/api/embed", `{"model":"tiny","input":"` + big + `"}`, ollamaQuotaError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := postJSON(t, a, http.MethodPost, tt.path, token, tt.body)
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("%s = %d %s, want 429", tt.path, resp.StatusCode, body)
			}
			retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if untilMidnight := time.Until(midnight); err != nil || time.Duration(retry)*time.Second < untilMidnight-5*time.Second ||
				time.Duration(retry)*time.Second > untilMidnight+5*time.Second {
				t.Errorf("Retry-After = %q, want about %s (until midnight UTC)", resp.Header.Get("Retry-After"), untilMidnight)
			}
			if resp.Header.Get("X-Request-ID") == "" {
				t.Error("no X-Request-ID")
			}
			tt.check(t, resp, body)
			if !strings.Contains(string(body), "day") || !strings.Contains(string(body), strconv.Itoa(left-1)) {
				t.Errorf("the error does not name the day quota and the %d tokens left: %s", left-1, body)
			}
		})
	}
	time.Sleep(1500 * time.Millisecond) // a usage record would be written within a second
	if n := countRows(t, a, "SELECT count(*) FROM usage_records"); n != usageBefore {
		t.Errorf("%d usage records after the refusals, want %d: a refused call reached the model", n, usageBefore)
	}
	if n := countRows(t, a, "SELECT count(*) FROM messages"); n != messagesBefore {
		t.Errorf("%d messages after the refusals, want %d: a refused call was stored", n, messagesBefore)
	}
	metrics := scrape(t, a.URL+"/metrics")
	if !strings.Contains(metrics, `deepersensor_quota_refusals_total{quota="day"} 8`) {
		t.Errorf("quota refusals not counted:\n%s", grepLines(metrics, "quota_refusals"))
	}
}

func nativeQuotaProblem(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	var p struct {
		Type  string `json:"type"`
		Quota struct {
			Name      string    `json:"name"`
			Limit     int64     `json:"limit"`
			Remaining int64     `json:"remaining"`
			Reset     time.Time `json:"reset"`
		} `json:"quota"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("not a problem: %s (%v)", body, err)
	}
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if p.Type != "urn:deepersensor:problem:quota-exceeded" || p.Quota.Name != "day" || p.Quota.Limit != 200 ||
		!p.Quota.Reset.Equal(midnight) || p.RequestID != resp.Header.Get("X-Request-ID") {
		t.Errorf("problem = %s", body)
	}
}

func openaiQuotaError(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Type != "insufficient_quota" || e.Error.Code != "insufficient_quota" {
		t.Errorf("OpenAI error = %s (%v)", body, err)
	}
	if resp.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("X-Should-Retry = %q, want false: a day's quota does not come back in seconds", resp.Header.Get("X-Should-Retry"))
	}
}

func ollamaQuotaError(t *testing.T, _ *http.Response, body []byte) {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(body, &e); err != nil || len(e) != 1 || e["error"] == nil {
		t.Errorf("Ollama error = %s (%v)", body, err)
	}
}

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestTokensPerMinuteSharedByInstances: two instances on one Redis hold a user to one tokens-per-minute
// limit together: while a call reserved on one instance runs, the other refuses the call that would pass
// the limit, with a 429 naming the minute.
func TestTokensPerMinuteSharedByInstances(t *testing.T) {
	configure := sharedRedis(func(c *config.Config) { c.RateLimitTokensPerMinute = 100 })
	a := testapp.Start(t, testapp.Options{Configure: configure, Ollama: ollamatest.Options{ChunkDelay: 100 * time.Millisecond}})
	b := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		configure(c)
		c.DatabaseURL = a.Config.DatabaseURL
	}})
	_, tokens := a.NewUser(t)
	// An estimate of 1 + 60 tokens: one such call fits 100 per minute, two do not.
	body := `{"model":"tiny","messages":[{"role":"user","content":"Hi"}],"options":{"num_predict":60}}`

	// A stream on a holds its reservation until it ends (12 chunks, 100ms apart).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, a.URL+"/v1/chat/stream", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tokens.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	stream, err := a.HTTPClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("stream on a = %d", stream.StatusCode)
	}

	resp, data := postJSON(t, b, http.MethodPost, "/v1/chat", tokens.AccessToken, body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(data), `"name":"minute"`) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("chat on b while a's call runs = %d %s (Retry-After %q); want 429 naming the minute",
			resp.StatusCode, data, resp.Header.Get("Retry-After"))
	}
	// Alone, b would have let it through: another user's call passes on b.
	_, other := b.NewUser(t)
	if resp, data := postJSON(t, b, http.MethodPost, "/v1/chat", other.AccessToken, body); resp.StatusCode != http.StatusOK {
		t.Fatalf("another user's chat on b = %d %s", resp.StatusCode, data)
	}
}

// TestAdminQuotaOverride: an admin's PATCH of a user's day quota applies to the user's next call, and null
// gives the default back.
func TestAdminQuotaOverride(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.QuotaTokensPerDay = 10_000
	}})
	adminEmail, admin := a.NewUser(t)
	grantAdmin(t, a, adminEmail)
	_, user := a.NewUser(t)
	userID := subject(t, user.AccessToken)
	chat := `{"model":"tiny","messages":[{"role":"user","content":"Tell me a story"}]}`

	steps := []struct {
		patch string
		want  int
		left  string
	}{
		{"", http.StatusOK, strconv.Itoa(10_000 - 4)},
		{`{"tokens_per_day":3,"tokens_per_month":null}`, http.StatusTooManyRequests, ""},
		{`{"tokens_per_day":0,"tokens_per_month":null}`, http.StatusOK, ""}, // 0: no day quota
		{`{"tokens_per_day":null,"tokens_per_month":null}`, http.StatusOK, "*"},
	}
	for i, s := range steps {
		if s.patch != "" {
			if resp, data := postJSON(t, a, http.MethodPatch, "/v1/admin/users/"+userID, admin.AccessToken, s.patch); resp.StatusCode != http.StatusOK {
				t.Fatalf("step %d: PATCH = %d %s", i, resp.StatusCode, data)
			}
		}
		resp, data := postJSON(t, a, http.MethodPost, "/v1/chat", user.AccessToken, chat)
		left := resp.Header.Get("X-Quota-Day-Remaining")
		if resp.StatusCode != s.want || (s.left != "*" && left != s.left) || (s.left == "*" && left == "") {
			t.Fatalf("step %d: chat = %d %s, X-Quota-Day-Remaining %q; want %d and %q", i, resp.StatusCode, data, left, s.want, s.left)
		}
	}
}
