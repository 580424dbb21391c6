package server_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// redisURL is the real Redis of the tests, on a database of its own so that keys of other tests never meet.
func redisURL() string {
	return "redis://127.0.0.1:6379/3"
}

// login posts a login that fails (401) but counts against the per-IP auth policy.
func login(t *testing.T, hc *http.Client, url string, header map[string]string) *http.Response {
	t.Helper()
	return loginAs(t, hc, url, strings.ToLower(rand.Text())+"@example.com", "wrong-password", header)
}

// loginAs posts a login with email and password, checking a 429 against the contract's promises.
func loginAs(t *testing.T, hc *http.Client, url, email, password string, header map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/auth/login", strings.NewReader(`{"email":"`+email+`","password":"`+password+`"}`))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		check429(t, resp, body)
	}
	return resp
}

// check429 checks a refusal against the contract's promises: problem+json, Retry-After and RateLimit-*.
func check429(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	p := testapp.Problem(t, resp, body)
	if p.Type != "urn:deepersensor:problem:rate-limited" && p.Type != "urn:deepersensor:problem:too-many-streams" {
		t.Errorf("429 problem type %q", p.Type)
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
}

func TestRateLimitHeadersAndRefusal(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.RateLimitAuthIP = config.Rate{Limit: 3, Period: time.Minute} }})
	hc := a.HTTPClient(t)
	for i := range 3 {
		resp := login(t, hc, a.URL, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("login %d = %d, want 401", i, resp.StatusCode)
		}
		if got, want := resp.Header.Get("RateLimit-Remaining"), strconv.Itoa(2-i); got != want || resp.Header.Get("RateLimit-Limit") != "3" {
			t.Errorf("login %d: RateLimit-Limit %q Remaining %q, want 3 and %s", i, resp.Header.Get("RateLimit-Limit"), got, want)
		}
		if reset, err := strconv.Atoi(resp.Header.Get("RateLimit-Reset")); err != nil || reset < 1 || reset > 60 {
			t.Errorf("RateLimit-Reset = %q", resp.Header.Get("RateLimit-Reset"))
		}
	}
	refused := login(t, hc, a.URL, nil)
	if refused.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth login = %d, want 429", refused.StatusCode)
	}
	if retry, _ := strconv.Atoi(refused.Header.Get("Retry-After")); retry < 19 || retry > 21 {
		t.Errorf("Retry-After = %d, want about 20s (one token every 60s/3)", retry)
	}
	if !strings.Contains(a.Logs.String(), `"msg":"rate limit refused a request","policy":"auth_ip","ip":"127.0.0.1","operation":"login"`) {
		t.Error("the refusal was not logged as a warning with policy, IP and operation")
	}
	// Other routes are not limited by the auth policy.
	if resp, err := hc.Get(a.URL + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz after the auth limit = %v %v", err, resp)
	}
}

// TestLoginLimitPerEmailAndAddress guesses an account's password on two instances sharing Redis and one
// database: the guessing address, whichever address of its /64 it uses, is refused with Retry-After, while
// the owner logs in from elsewhere; guesses spread over many addresses meet the per-email ceiling.
func TestLoginLimitPerEmailAndAddress(t *testing.T) {
	shared := sharedRedis(func(c *config.Config) {
		c.RateLimitLoginEmail = config.Rate{Limit: 2, Period: time.Minute}
		c.RateLimitLoginEmailCeiling = config.Rate{Limit: 5, Period: time.Hour}
		c.TrustedProxies = []string{"127.0.0.1/32"}
	})
	one := testapp.Start(t, testapp.Options{Configure: shared})
	two := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		shared(c)
		c.DatabaseURL = one.Config.DatabaseURL
	}})
	email, _ := one.NewUser(t) // one login from 127.0.0.1: the ceiling has 4 left
	from := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }
	guess := func(a *testapp.App, ip string) int {
		return loginAs(t, a.HTTPClient(t), a.URL, " "+strings.ToUpper(email), "wrong-password", from(ip)).StatusCode // the same email
	}

	var codes []int
	for i, a := range []*testapp.App{one, two, one, two} {
		codes = append(codes, guess(a, "2001:db8:a:b::"+strconv.Itoa(i+1)))
	}
	if want := []int{401, 401, 429, 429}; !slices.Equal(codes, want) {
		t.Fatalf("guesses from one /64 on two instances = %v, want %v", codes, want)
	}
	owner := loginAs(t, two.HTTPClient(t), two.URL, email, testapp.TestPassword, from("198.51.100.7"))
	if owner.StatusCode != http.StatusOK {
		t.Fatalf("the owner's login from another address = %d, want 200", owner.StatusCode)
	}
	if code := guess(one, "2001:db8:a:b::99"); code != http.StatusTooManyRequests {
		t.Errorf("the guessing address after the owner's login = %d, want 429", code)
	}
	// 4 of the ceiling's 5 are spent (the refused guesses did not count); a new address gets one guess.
	if code := guess(two, "203.0.113.1"); code != http.StatusUnauthorized {
		t.Errorf("a guess from a third address = %d, want 401", code)
	}
	if code := guess(one, "203.0.113.2"); code != http.StatusTooManyRequests {
		t.Errorf("a guess from a fourth address past the ceiling = %d, want 429", code)
	}
	if !strings.Contains(one.Logs.String(), `"policy":"login_email_ceiling"`) {
		t.Error("the ceiling's refusal was not logged with its policy")
	}
}

// TestRateLimitIPv6Network sends logins from 30 addresses of one /64 through a trusted proxy: they are one
// client to the per-address limit, while another /64 and an IPv4 client are not limited.
func TestRateLimitIPv6Network(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: sharedRedis(func(c *config.Config) {
		c.RateLimitAuthIP = config.Rate{Limit: 20, Period: time.Minute}
		c.TrustedProxies = []string{"127.0.0.1/32"}
	})})
	hc := a.HTTPClient(t)
	counts := map[int]int{}
	for i := range 30 {
		resp := login(t, hc, a.URL, map[string]string{"X-Forwarded-For": "2001:db8:1:2:" + strconv.Itoa(i+1) + "::" + strconv.Itoa(i+1)})
		counts[resp.StatusCode]++
	}
	if counts[http.StatusUnauthorized] != 20 || counts[http.StatusTooManyRequests] != 10 {
		t.Errorf("30 logins from one /64 = %v, want 20 answered and 10 refused", counts)
	}
	for _, ip := range []string{"2001:db8:1:3::1", "198.51.100.1"} {
		if code := login(t, hc, a.URL, map[string]string{"X-Forwarded-For": ip}).StatusCode; code != http.StatusUnauthorized {
			t.Errorf("login from %s = %d, want 401", ip, code)
		}
	}
}

// TestLogoutIsRateLimited: logout is limited per client address like the other account routes.
func TestLogoutIsRateLimited(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.RateLimitAuthIP = config.Rate{Limit: 2, Period: time.Minute} }})
	c := a.Client(t)
	for i, want := range []int{http.StatusNoContent, http.StatusNoContent, http.StatusTooManyRequests} {
		resp, err := c.LogoutWithResponse(context.Background(), client.RefreshRequest{RefreshToken: "unknown-token-" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != want {
			t.Fatalf("logout %d = %d, want %d", i, resp.StatusCode(), want)
		}
		if want == http.StatusTooManyRequests {
			check429(t, resp.HTTPResponse, resp.Body)
		}
	}
}

// sharedRedis returns a configuration that puts the limits in the tests' Redis under a prefix of their own,
// after configure.
func sharedRedis(configure func(*config.Config)) func(*config.Config) {
	prefix := "test:" + strings.ToLower(rand.Text()) + ":"
	return func(c *config.Config) {
		c.RedisURL, c.RedisKeyPrefix = redisURL(), prefix
		configure(c)
	}
}

func TestRateLimitForwardedHeaders(t *testing.T) {
	limit := func(c *config.Config) { c.RateLimitAuthIP = config.Rate{Limit: 2, Period: time.Minute} }
	untrusted := testapp.Start(t, testapp.Options{Configure: limit})
	trusted := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		limit(c)
		c.TrustedProxies = []string{"127.0.0.0/8"}
	}})
	spoof := func(i int) map[string]string {
		return map[string]string{"X-Forwarded-For": "203.0.113." + strconv.Itoa(i), "X-Real-IP": "203.0.113." + strconv.Itoa(i)}
	}
	// From an untrusted peer, a new spoofed address on every request changes nothing: the peer is limited.
	var codes []int
	for i := range 4 {
		codes = append(codes, login(t, untrusted.HTTPClient(t), untrusted.URL, spoof(i)).StatusCode)
	}
	if codes[2] != http.StatusTooManyRequests || codes[3] != http.StatusTooManyRequests {
		t.Errorf("untrusted peer with spoofed headers: %v, want the third and fourth refused", codes)
	}
	// From a trusted proxy, the forwarded address is the client: each has its own bucket...
	for i := range 4 {
		if code := login(t, trusted.HTTPClient(t), trusted.URL, spoof(i)).StatusCode; code != http.StatusUnauthorized {
			t.Errorf("trusted proxy, client %d = %d, want 401 (not limited)", i, code)
		}
	}
	// ...and one client behind it is limited.
	codes = codes[:0]
	for range 3 {
		codes = append(codes, login(t, trusted.HTTPClient(t), trusted.URL, spoof(99)).StatusCode)
	}
	if codes[2] != http.StatusTooManyRequests {
		t.Errorf("one forwarded client: %v, want the third refused", codes)
	}
}

// TestRateLimitSharedAcrossInstances runs two instances on one Redis: together they allow the limit once.
func TestRateLimitSharedAcrossInstances(t *testing.T) {
	shared := sharedRedis(func(c *config.Config) { c.RateLimitAuthIP = config.Rate{Limit: 5, Period: time.Minute} })
	one := testapp.Start(t, testapp.Options{Configure: shared})
	two := testapp.Start(t, testapp.Options{Configure: shared})
	allowed, refused := 0, 0
	for i := range 10 {
		a := one
		if i%2 == 1 {
			a = two
		}
		switch code := login(t, a.HTTPClient(t), a.URL, nil).StatusCode; code {
		case http.StatusUnauthorized:
			allowed++
		case http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("login = %d", code)
		}
	}
	if allowed != 5 || refused != 5 {
		t.Errorf("two instances allowed %d and refused %d, want 5 and 5", allowed, refused)
	}
}

// TestRateLimitWithoutRedis points the service at a Redis that is not there: it keeps serving with
// per-instance limits (fail-open), or answers 503 (fail-closed); never a 500.
func TestRateLimitWithoutRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "redis://" + ln.Addr().String() + "/0"
	ln.Close()
	for _, tt := range []struct {
		name       string
		failClosed bool
		want       []int
	}{
		{"fail open", false, []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests}},
		{"fail closed", true, []int{http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusServiceUnavailable}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
				c.RedisURL, c.RateLimitFailClosed = gone, tt.failClosed
				c.RateLimitAuthIP = config.Rate{Limit: 2, Period: time.Minute}
			}})
			for i, want := range tt.want {
				if code := login(t, a.HTTPClient(t), a.URL, nil).StatusCode; code != want {
					t.Errorf("login %d = %d, want %d", i, code, want)
				}
			}
			if n := strings.Count(a.Logs.String(), "unavailable"); n == 0 {
				t.Error("the Redis outage was not logged")
			}
		})
	}
}

// TestModelCallsPerUserCap runs two instances on one Redis and one database: a user's model calls, streamed
// or not, on any instance, count against one DS_MAX_STREAMS_PER_USER.
func TestModelCallsPerUserCap(t *testing.T) {
	shared := sharedRedis(func(c *config.Config) { c.MaxStreamsPerUser = 1 })
	slow := ollamatest.Options{ChunkDelay: 100 * time.Millisecond}
	one := testapp.Start(t, testapp.Options{Ollama: slow, Configure: shared})
	two := testapp.Start(t, testapp.Options{Ollama: slow, Configure: func(c *config.Config) {
		shared(c)
		c.DatabaseURL = one.Config.DatabaseURL
	}})
	_, tokens := one.NewUser(t)
	c1, c2 := one.Client(t, testapp.Bearer(tokens.AccessToken)), two.Client(t, testapp.Bearer(tokens.AccessToken))
	ctx := context.Background()
	body := client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}
	refused := func(what string, resp *http.Response, body []byte) {
		t.Helper()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s = %d, want 429", what, resp.StatusCode)
		}
		check429(t, resp, body)
	}

	_, events, end := stream(t, ctx, one, c1, body)
	<-events // meta: the stream holds the user's slot
	chat, err := c2.ChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	refused("a chat while a stream is open", chat.HTTPResponse, chat.Body)
	second, err := c2.StreamChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	refused("a second stream", second.HTTPResponse, second.Body)
	collect(t, events, end)

	// A chat holds the slot for as long as the model takes: a stream meanwhile is refused.
	status := make(chan int, 1)
	go func() {
		resp, err := c1.ChatWithResponse(ctx, body)
		if err != nil {
			t.Error(err)
			status <- 0
			return
		}
		status <- resp.StatusCode()
	}()
	for deadline := time.Now().Add(10 * time.Second); len(one.Ollama.ChatRequests()) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the chat did not reach the model server")
		}
	}
	third, err := c2.StreamChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	refused("a stream while a chat runs", third.HTTPResponse, third.Body)
	if code := <-status; code != http.StatusOK {
		t.Fatalf("the chat = %d, want 200", code)
	}
	resp, events, end := stream(t, ctx, two, c2, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream after the chat ended = %d, want 200", resp.StatusCode)
	}
	collect(t, events, end)
}

// TestModelServerCap fills the instance's one slot for calls to the model server with a stream: another
// user's chat waits DS_OLLAMA_QUEUE_WAIT, then gets 503 with Retry-After; a stream, which has answered 200
// already, gets the same problem as its error event.
func TestModelServerCap(t *testing.T) {
	a := testapp.Start(t, testapp.Options{
		Ollama: ollamatest.Options{ChunkDelay: 100 * time.Millisecond},
		Configure: func(c *config.Config) {
			c.OllamaMaxConcurrency, c.OllamaQueueWait = 1, 100*time.Millisecond
		},
	})
	ctx := context.Background()
	body := client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}
	first, other := a.UserClient(t), a.UserClient(t)
	_, events, end := stream(t, ctx, a, first, body)
	<-events // meta
	<-events // the first delta: the stream holds the slot

	chat, err := other.ChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	if chat.StatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("chat while the model server slot is taken = %d %s, want 503", chat.StatusCode(), chat.Body)
	}
	if p := testapp.Problem(t, chat.HTTPResponse, chat.Body); p.Type != "urn:deepersensor:problem:overloaded" {
		t.Errorf("problem type %q, want overloaded", p.Type)
	}
	if n, err := strconv.Atoi(chat.HTTPResponse.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", chat.HTTPResponse.Header.Get("Retry-After"))
	}
	// A stream is answered the same, before it starts: the slot is asked for before the stream's headers.
	resp, _, _ := stream(t, ctx, a, other, body)
	streamBody, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("stream while the model server slot is taken = %d (Retry-After %q) %s, want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"), streamBody)
	}
	if p := testapp.Problem(t, resp, streamBody); p.Type != "urn:deepersensor:problem:overloaded" {
		t.Errorf("stream problem type %q, want overloaded", p.Type)
	}

	collect(t, events, end) // the first stream ends and frees the slot
	chat, err = other.ChatWithResponse(ctx, body)
	if err != nil {
		t.Fatal(err)
	}
	if chat.StatusCode() != http.StatusOK {
		t.Errorf("chat after the stream ended = %d %s, want 200", chat.StatusCode(), chat.Body)
	}
}
