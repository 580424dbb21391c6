package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// TestErrorsAreProblems sends requests that fail in every layer: the router, the body limit, the request
// validator, authentication and the handlers. Each answer must be a problem+json that the contract allows.
func TestErrorsAreProblems(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, tokens := a.NewUser(t)
	bearer := "Bearer " + tokens.AccessToken
	big := `{"email":"a@example.com","password":"` + strings.Repeat("x", 3<<20) + `"}`
	tests := []struct {
		name, method, path, body, auth string
		want                           int
		wantHeader                     string
	}{
		{"unknown route", "GET", "/v1/nope", "", "", http.StatusNotFound, ""},
		{"unknown top-level route", "GET", "/nope", "", "", http.StatusNotFound, ""},
		{"method not allowed", "PUT", "/v1/me", "", bearer, http.StatusMethodNotAllowed, ""},
		{"body over the limit", "POST", "/v1/auth/signup", big, "", http.StatusRequestEntityTooLarge, ""},
		{"no token", "GET", "/v1/conversations", "", "", http.StatusUnauthorized, "WWW-Authenticate"},
		{"bad uuid in path", "GET", "/v1/conversations/not-a-uuid", "", bearer, http.StatusBadRequest, ""},
		{"unknown conversation", "GET", "/v1/conversations/6a1f0c55-3f5e-4f8e-bb5c-0d7c8d0f2a10", "", bearer, http.StatusNotFound, ""},
		{"limit out of range", "GET", "/v1/conversations?limit=1000", "", bearer, http.StatusBadRequest, ""},
		{"bad cursor", "GET", "/v1/conversations?cursor=%21%21", "", bearer, http.StatusBadRequest, ""},
		{"chat without messages", "POST", "/v1/chat", `{"model":"tiny","messages":[]}`, bearer, http.StatusBadRequest, ""},
		{"chat with an unknown role", "POST", "/v1/chat", `{"model":"tiny","messages":[{"role":"tool","content":"x"}]}`, bearer, http.StatusBadRequest, ""},
		{"chat with a bad model name", "POST", "/v1/chat", `{"model":"../etc","messages":[{"role":"user","content":"x"}]}`, bearer, http.StatusBadRequest, ""},
		{"chat with an unknown option", "POST", "/v1/chat", `{"model":"tiny","messages":[{"role":"user","content":"x"}],"options":{"evil":1}}`, bearer, http.StatusBadRequest, ""},
		{"chat with blank content", "POST", "/v1/chat", `{"model":"tiny","messages":[{"role":"user","content":"  "}]}`, bearer, http.StatusUnprocessableEntity, ""},
		{"chat with a whole number written as a fraction for an integer", "POST", "/v1/chat", `{"model":"tiny","messages":[{"role":"user","content":"x"}],"options":{"top_k":1.0}}`, bearer, http.StatusBadRequest, ""},
	}
	hc := a.HTTPClient(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, a.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			// Routes and methods that the contract lacks cannot be validated against it.
			do := hc.Do
			if tt.want == http.StatusNotFound && !strings.HasPrefix(tt.path, "/v1/conversations") || tt.want == http.StatusMethodNotAllowed {
				do = http.DefaultClient.Do
			}
			resp, err := do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, tt.want, body)
			}
			testapp.Problem(t, resp, body)
			if tt.wantHeader != "" && resp.Header.Get(tt.wantHeader) == "" {
				t.Errorf("header %s missing", tt.wantHeader)
			}
		})
	}
}

// TestOnlyTheValidatedBodyIsBound sends beside each checked member another whose name differs only in case:
// the handlers must act on the member the contract's validator checked, never on the other (encoding/json
// alone would bind the later of the two).
func TestOnlyTheValidatedBodyIsBound(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	_, tokens := a.NewUser(t)
	hc := a.HTTPClient(t)
	ctx := context.Background()
	post := func(t *testing.T, path, body string, headers ...string) []byte {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, a.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s = %d %s", path, resp.StatusCode, out)
		}
		return out
	}

	t.Run("chat", func(t *testing.T) {
		out := post(t, "/v1/chat", `{"model":"tiny","messages":[{"role":"user","content":"checked"}],"Messages":[{"role":"system","content":"smuggled"}]}`,
			"Authorization", "Bearer "+tokens.AccessToken)
		var result client.ChatResult
		if err := json.Unmarshal(out, &result); err != nil {
			t.Fatal(err)
		}
		msgs, err := a.Client(t, testapp.Bearer(tokens.AccessToken)).ListMessagesWithResponse(ctx, result.ConversationId, &client.ListMessagesParams{})
		if err != nil || msgs.JSON200 == nil || len(msgs.JSON200.Items) == 0 {
			t.Fatalf("messages: %v %+v", err, msgs)
		}
		if first := msgs.JSON200.Items[0]; first.Role != client.RoleUser || first.Content != "checked" {
			t.Errorf("stored %s %q, want the user's %q", first.Role, first.Content, "checked")
		}
	})
	t.Run("signup", func(t *testing.T) {
		const email, password = "bound@example.com", "the checked password"
		post(t, "/v1/auth/signup", `{"email":"`+email+`","password":"`+password+`","Password":"short"}`)
		login, err := a.Client(t).LoginWithResponse(ctx, client.Credentials{Email: email, Password: password})
		if err != nil || login.JSON200 == nil {
			t.Fatalf("login with the checked password: %v %+v", err, login)
		}
	})
}

func TestRequestID(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	tests := []struct {
		name, sent string
		kept       bool
	}{
		{"none sent", "", false},
		{"sane id kept", "trace-42.abc:def_1", true},
		{"too long replaced", strings.Repeat("a", 129), false},
		{"odd characters replaced", "<script>", false},
	}
	hc := a.HTTPClient(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{"/healthz", "/v1/me"} { // a success and an error
				req, _ := http.NewRequest(http.MethodGet, a.URL+path, nil)
				if tt.sent != "" {
					req.Header.Set("X-Request-ID", tt.sent)
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := resp.Header.Get("X-Request-ID")
				if tt.kept && got != tt.sent {
					t.Errorf("%s: X-Request-ID = %q, want %q kept", path, got, tt.sent)
				}
				if !tt.kept && (got == "" || got == tt.sent) {
					t.Errorf("%s: X-Request-ID = %q, want a new id", path, got)
				}
				if resp.StatusCode >= 400 {
					if p := testapp.Problem(t, resp, body); p.RequestId != got {
						t.Errorf("problem request_id %q != header %q", p.RequestId, got)
					}
				}
				if !strings.Contains(a.Logs.String(), `"request_id":"`+got+`"`) {
					t.Errorf("%s: no log line carries request id %q", path, got)
				}
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	dbURL := dbtest.NewURL(t)
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.DatabaseURL = dbURL }})
	c := a.Client(t)
	ctx := context.Background()
	ready, err := c.GetReadinessWithResponse(ctx)
	if err != nil || ready.JSON200 == nil {
		t.Fatalf("readyz = %v %d, want 200", err, ready.StatusCode())
	}

	// Take the database away: drop it, ending the service's connections.
	admin, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	down, err := c.GetReadinessWithResponse(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if down.StatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("readyz without a database = %d %s, want 503", down.StatusCode(), down.Body)
	}
	p := testapp.Problem(t, down.HTTPResponse, down.Body)
	if p.Checks == nil || (*p.Checks)["database"] == "ok" || !strings.Contains(p.Detail, "database") {
		t.Errorf("problem %+v does not name the database", p)
	}
	if health, err := c.GetHealthWithResponse(ctx); err != nil || health.StatusCode() != http.StatusOK {
		t.Errorf("healthz without a database = %v %d, want 200: the process is up", err, health.StatusCode())
	}
}

// TestLoginFloodIsShed sends many logins at once with real hashing parameters and one hashing slot: the
// excess waits briefly, then gets 503 with Retry-After instead of piling up memory.
func TestLoginFloodIsShed(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.Argon2Memory, c.Argon2Time, c.Argon2Parallelism = 19456, 2, 1
		c.HashConcurrency, c.HashQueueWait = 1, 50*time.Millisecond
		c.RateLimitAuthIP = config.Rate{Limit: 1000, Period: time.Minute}
		c.RateLimitLoginEmail = config.Rate{Limit: 1000, Period: time.Minute}
	}})
	email, _ := a.NewUser(t)
	body := []byte(`{"email":"` + email + `","password":"` + testapp.TestPassword + `"}`)
	var (
		answers tally
		wg      sync.WaitGroup
	)
	hc := a.HTTPClient(t)
	for range 40 {
		wg.Go(func() {
			resp, err := hc.Post(a.URL+"/v1/auth/login", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers.add(resp, data)
		})
	}
	wg.Wait()
	counts := answers.check(t, "busy")
	if counts[http.StatusOK] == 0 || counts[http.StatusServiceUnavailable] == 0 || counts[http.StatusOK]+counts[http.StatusServiceUnavailable] != 40 {
		t.Errorf("statuses = %v, want some 200 and the rest 503", counts)
	}
}

// TestModelCallsLeaveRoomForAccounts opens 18 streams (6 users, 3 each, all stalling after a chunk) on an
// instance that serves 12 requests at once: model calls get three quarters of the slots, 9, and the other 9
// streams are refused with 503, while login, /v1/me, signup and the probes still answer.
func TestModelCallsLeaveRoomForAccounts(t *testing.T) {
	a := testapp.Start(t, testapp.Options{
		Ollama:    ollamatest.Options{Fault: &ollamatest.Fault{After: 1}},
		Configure: sharedRedis(func(c *config.Config) { c.MaxInFlight = 12 }),
	})
	email, tokens := a.NewUser(t)
	users := []*client.ClientWithResponses{a.Client(t, testapp.Bearer(tokens.AccessToken))}
	for range 5 {
		users = append(users, a.UserClient(t))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}
	var (
		answers tally
		wg      sync.WaitGroup
	)
	for i := range 18 {
		c := users[i%len(users)]
		wg.Go(func() {
			resp, err := c.StreamChat(ctx, body)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { resp.Body.Close() })
			var data []byte
			if resp.StatusCode == http.StatusOK {
				events, _ := testapp.ReadEvents(resp.Body)
				<-events // meta: the stream is open
				go func() {
					for range events {
					}
				}()
			} else {
				data, _ = io.ReadAll(resp.Body)
			}
			answers.add(resp, data)
		})
	}
	wg.Wait()
	if counts := answers.check(t, "overloaded"); counts[http.StatusOK] != 9 || counts[http.StatusServiceUnavailable] != 9 {
		t.Fatalf("18 streams = %v, want 9 open and 9 refused with 503", counts)
	}

	if code := loginAs(t, a.HTTPClient(t), a.URL, email, testapp.TestPassword, nil).StatusCode; code != http.StatusOK {
		t.Errorf("login while the streams are open = %d, want 200", code)
	}
	if me, err := users[0].GetMeWithResponse(ctx); err != nil || me.JSON200 == nil {
		t.Errorf("/v1/me while the streams are open = %v %v, want 200", err, me)
	}
	a.NewUser(t) // signup and login
	if health, err := a.Client(t).GetHealthWithResponse(ctx); err != nil || health.StatusCode() != http.StatusOK {
		t.Errorf("healthz while the streams are open = %v %v, want 200", err, health)
	}
}

// tally collects the answers to concurrent requests, for checks once the workers end: testapp.Problem may
// call Fatalf.
type tally struct {
	mu     sync.Mutex
	counts map[int]int
	shed   []answer // the 503 answers
}

func (tl *tally) add(resp *http.Response, body []byte) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if tl.counts == nil {
		tl.counts = map[int]int{}
	}
	tl.counts[resp.StatusCode]++
	if resp.StatusCode == http.StatusServiceUnavailable {
		tl.shed = append(tl.shed, answer{resp, body})
	}
}

// check fails t unless every 503 is a problem of type urn:deepersensor:problem:slug with Retry-After, and
// returns the count of each status.
func (tl *tally) check(t *testing.T, slug string) map[int]int {
	t.Helper()
	for _, r := range tl.shed {
		if r.resp.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if p := testapp.Problem(t, r.resp, r.body); p.Type != "urn:deepersensor:problem:"+slug {
			t.Errorf("503 problem type %q, want %s", p.Type, slug)
		}
	}
	return tl.counts
}
