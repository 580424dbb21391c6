package server_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/http"
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
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/auth/login", strings.NewReader(`{"email":"`+strings.ToLower(rand.Text())+`@example.com","password":"wrong-password"}`))
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
	if !strings.Contains(a.Logs.String(), `"msg":"rate limit refused a request","policy":"auth_ip","ip":"127.0.0.1","route":"/v1/auth/login"`) {
		t.Error("the refusal was not logged as a warning with policy, IP and route")
	}
	// Other routes are not limited by the auth policy.
	if resp, err := hc.Get(a.URL + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("healthz after the auth limit = %v %v", err, resp)
	}
}

func TestRateLimitPerLoginEmail(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.RateLimitLoginEmail = config.Rate{Limit: 2, Period: time.Minute}
		c.TrustedProxies = []string{"127.0.0.0/8"}
	}})
	email, _ := a.NewUser(t) // one login
	c := a.Client(t)
	for i, want := range []int{http.StatusUnauthorized, http.StatusTooManyRequests} {
		// A different forwarded IP each time: the email policy holds regardless.
		resp, err := c.LoginWithResponse(context.Background(), client.Credentials{Email: " " + strings.ToUpper(email), Password: "guess-number-" + strconv.Itoa(i)},
			func(_ context.Context, req *http.Request) error {
				req.Header.Set("X-Forwarded-For", "198.51.100."+strconv.Itoa(i+1))
				return nil
			})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != want {
			t.Fatalf("guess %d = %d, want %d", i, resp.StatusCode(), want)
		}
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
	prefix := strings.ToLower(rand.Text())
	shared := func(c *config.Config) {
		c.RedisURL = redisURL()
		c.RateLimitAuthIP = config.Rate{Limit: 5, Period: time.Minute}
		c.RedisKeyPrefix = "test:" + prefix + ":"
	}
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

func TestStreamsPerUserCap(t *testing.T) {
	a := testapp.Start(t, testapp.Options{
		Ollama:    ollamatest.Options{ChunkDelay: 100 * time.Millisecond},
		Configure: func(c *config.Config) { c.MaxStreamsPerUser = 1 },
	})
	c := a.UserClient(t)
	body := client.ChatRequest{Model: "tiny", Messages: userMessage("hi")}
	_, events, _ := stream(t, context.Background(), a, c, body)
	<-events // meta: the first stream is open

	second, err := c.StreamChatWithResponse(context.Background(), body)
	if err != nil {
		t.Fatal(err)
	}
	if second.StatusCode() != http.StatusTooManyRequests {
		t.Fatalf("second stream = %d, want 429", second.StatusCode())
	}
	check429(t, second.HTTPResponse, second.Body)
	collect(t, events) // the first stream ends
	resp, events, _ := stream(t, context.Background(), a, c, body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream after the first ended = %d, want 200", resp.StatusCode)
	}
	collect(t, events)
}
