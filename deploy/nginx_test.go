package deploy_test

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"

	spec "github.com/deepersensor/deepersensor/api"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/sse"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// chunkDelay is how long the fake Ollama waits between chunks, so that a buffered stream would show.
const chunkDelay = 200 * time.Millisecond

// TestNginxUpstreamDown runs the committed configuration with no API behind it: nginx -t passes, and a
// request gets nginx's own 502 in the API's problem shape, with the security headers.
func TestNginxUpstreamDown(t *testing.T) {
	requireNginx(t)
	target := nginxTarget{
		upstreams: [2]string{freeAddr(t), freeAddr(t)},
		httpAddr:  freeAddr(t),
		httpsAddr: freeAddr(t),
	}
	dir, cert := renderNginx(t, target)
	startNginx(t, dir, target.httpsAddr)
	resp, err := newClient(cert, true, 0, 0).Get("https://" + target.httpsAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	checkProblem(t, resp, body, resp.Header.Get("X-Request-ID"))
	checkSecurityHeaders(t, resp)
}

// stack is two API instances on one database behind nginx.
type stack struct {
	apps     [2]*testapp.App
	https    string // base URL of nginx's TLS listener
	plain    string // base URL of nginx's redirecting listener
	cert     *x509.Certificate
	c        *http.Client        // HTTP/2, trusts cert, follows no redirects
	c1       *http.Client        // the same over HTTP/1.1
	nginxLog *testapp.SyncBuffer // nginx's access and error log
}

// startStack boots two API instances sharing one database, and nginx in front of them.
func startStack(t *testing.T) *stack {
	t.Helper()
	requireNginx(t)
	dbURL := dbtest.NewURL(t)
	// Enough models that their list is worth compressing.
	var models []ollamatest.Model
	for _, name := range []string{"tiny:latest", "tiny:a", "tiny:b", "tiny:c", "tiny:d"} {
		m := ollamatest.Tiny()
		m.Name = name
		models = append(models, m)
	}
	var s stack
	for i := range s.apps {
		s.apps[i] = testapp.Start(t, testapp.Options{
			Ollama: ollamatest.Options{ChunkDelay: chunkDelay, Models: models},
			Configure: func(c *config.Config) {
				c.DatabaseURL = dbURL
				c.TrustedProxies = []string{"127.0.0.1/32"}
			},
		})
	}
	target := nginxTarget{
		upstreams: [2]string{hostPort(s.apps[0].URL), hostPort(s.apps[1].URL)},
		httpAddr:  freeAddr(t),
		httpsAddr: freeAddr(t),
	}
	dir, cert := renderNginx(t, target)
	s.nginxLog = startNginx(t, dir, target.httpsAddr)
	s.https, s.plain, s.cert = "https://"+target.httpsAddr, "http://"+target.httpAddr, cert
	s.c, s.c1 = newClient(cert, true, 0, 0), newClient(cert, false, 0, 0)
	return &s
}

// newClient returns a client that trusts cert, offers HTTP/2 when h2 is true, offers the TLS versions from
// minVersion to maxVersion (zero: Go's defaults) and follows no redirects.
func newClient(cert *x509.Certificate, h2 bool, minVersion, maxVersion uint16) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: minVersion, MaxVersion: maxVersion},
			ForceAttemptHTTP2: h2,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       30 * time.Second,
	}
}

// do sends a request through nginx and returns the response with its body read.
func (s *stack) do(t *testing.T, method, path string, body []byte, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.https+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return send(t, s.c, req)
}

// send sends req with c and returns the response with its body read.
func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return resp, b
}

// accessLine is the part of an API access log line the tests look at.
type accessLine struct {
	Msg       string `json:"msg"`
	RequestID string `json:"request_id"`
	Path      string `json:"path"`
	IP        string `json:"ip"`
}

// requests returns the access log lines of app.
func requests(t *testing.T, app *testapp.App) []accessLine {
	t.Helper()
	var lines []accessLine
	for _, raw := range strings.Split(app.Logs.String(), "\n") {
		var l accessLine
		if json.Unmarshal([]byte(raw), &l) == nil && l.Msg == "request" {
			lines = append(lines, l)
		}
	}
	return lines
}

// seen returns the API access log lines, of either instance, with the request id id.
func (s *stack) seen(t *testing.T, id string) []accessLine {
	t.Helper()
	var found []accessLine
	for _, app := range s.apps {
		for _, l := range requests(t, app) {
			if l.RequestID == id {
				found = append(found, l)
			}
		}
	}
	return found
}

// TestNginx runs the real nginx with the committed configuration in front of two API instances, over TLS.
func TestNginx(t *testing.T) {
	s := startStack(t)

	t.Run("tls", func(t *testing.T) {
		resp, _ := s.do(t, http.MethodGet, "/healthz", nil, nil)
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.ProtoMajor != 2 {
			t.Fatalf("got %s, want HTTP/2 over TLS 1.2 or later", resp.Proto)
		}
		old := newClient(s.cert, false, tls.VersionTLS10, tls.VersionTLS11)
		resp, err := old.Get(s.https + "/healthz")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a TLS 1.1 client was served")
		}
		// nginx's refusal, not Go's.
		if !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("a TLS 1.1 client got %v, want nginx's protocol version alert", err)
		}
	})

	t.Run("redirects http to https", func(t *testing.T) {
		resp, err := s.c.Get(s.plain + "/healthz?x=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://127.0.0.1/healthz?x=1" {
			t.Errorf("got %d Location %q, want 301 to https://127.0.0.1/healthz?x=1", resp.StatusCode, resp.Header.Get("Location"))
		}
	})

	t.Run("security headers", func(t *testing.T) {
		resp, _ := s.do(t, http.MethodGet, "/healthz", nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		checkSecurityHeaders(t, resp)
		if v := resp.Header.Get("Server"); v != "nginx" {
			t.Errorf("Server = %q, want nginx without a version", v)
		}
	})

	t.Run("request id made by nginx", func(t *testing.T) {
		// The forged X-Forwarded-For must not reach the API's idea of the client.
		resp, _ := s.do(t, http.MethodGet, "/healthz", nil, http.Header{"X-Forwarded-For": {"203.0.113.7"}})
		id := resp.Header.Get("X-Request-ID")
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(id) {
			t.Fatalf("X-Request-ID = %q, want nginx's 32 hex digits", id)
		}
		lines := s.seen(t, id)
		if len(lines) != 1 {
			t.Fatalf("the API logged %d requests with id %s, want 1", len(lines), id)
		}
		if lines[0].IP != "127.0.0.1" {
			t.Errorf("the API saw the client as %q, want 127.0.0.1 (the forged X-Forwarded-For must be replaced)", lines[0].IP)
		}
	})

	t.Run("request id from the client", func(t *testing.T) {
		const id = "client-id-0001"
		resp, _ := s.do(t, http.MethodGet, "/healthz", nil, http.Header{"X-Request-ID": {id}})
		if got := resp.Header.Values("X-Request-ID"); len(got) != 1 || got[0] != id {
			t.Errorf("X-Request-ID = %q, want [%s]", got, id)
		}
		if n := len(s.seen(t, id)); n != 1 {
			t.Errorf("the API logged %d requests with id %s, want 1", n, id)
		}
	})

	t.Run("request id that the API would not keep", func(t *testing.T) {
		resp, _ := s.do(t, http.MethodGet, "/healthz", nil, http.Header{"X-Request-ID": {"no spaces <allowed>"}})
		id := resp.Header.Get("X-Request-ID")
		if n := len(s.seen(t, id)); n != 1 {
			t.Errorf("X-Request-ID %q: the API logged it %d times, want 1", id, n)
		}
	})

	t.Run("body too large", func(t *testing.T) {
		const id = "too-large-0001"
		body := bytes.Repeat([]byte("a"), 3<<20)
		resp, b := s.do(t, http.MethodPost, "/v1/chat", body, http.Header{"X-Request-ID": {id}})
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", resp.StatusCode)
		}
		checkProblem(t, resp, b, id)
		checkSecurityHeaders(t, resp)
		if n := len(s.seen(t, id)); n != 0 {
			t.Errorf("the API saw the request %d times; nginx should have refused it", n)
		}
	})

	t.Run("metrics are not served", func(t *testing.T) {
		for i, path := range []string{"/metrics", "/metrics/", "/metrics?format=prometheus"} {
			id := fmt.Sprintf("metrics-%d", i)
			resp, b := s.do(t, http.MethodGet, path, nil, http.Header{"X-Request-ID": {id}})
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404", path, resp.StatusCode)
				continue
			}
			checkProblem(t, resp, b, id)
			if n := len(s.seen(t, id)); n != 0 {
				t.Errorf("GET %s reached the API", path)
			}
		}
	})

	t.Run("load balanced", func(t *testing.T) {
		const n = 20
		for i := range n {
			resp, _ := s.do(t, http.MethodGet, "/healthz", nil, http.Header{"X-Request-ID": {fmt.Sprintf("lb-%d", i)}})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: status %d", i, resp.StatusCode)
			}
		}
		var served [2]int
		for i, app := range s.apps {
			for _, l := range requests(t, app) {
				if strings.HasPrefix(l.RequestID, "lb-") {
					served[i]++
				}
			}
		}
		if served[0] == 0 || served[1] == 0 || served[0]+served[1] != n {
			t.Errorf("the instances served %v of %d requests, want both some and all served once", served, n)
		}
	})

	// nginx buffers differently for each protocol: over HTTP/1.1 a buffered stream arrives all at once.
	for _, proto := range []struct {
		name  string
		c     *http.Client
		major int
	}{{"http1.1", s.c1, 1}, {"http2", s.c, 2}} {
		t.Run("stream event by event over "+proto.name, func(t *testing.T) {
			_, token := s.login(t)
			events, resp := s.stream(t, proto.c, token)
			if resp.ProtoMajor != proto.major {
				t.Errorf("the stream came over %s", resp.Proto)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("Content-Type = %q", ct)
			}
			if ce := resp.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding = %q: event streams must not be compressed", ce)
			}
			checkSecurityHeaders(t, resp)
			var firstDelta, deltas int
			for i, e := range events {
				if e.name == "delta" {
					if deltas == 0 {
						firstDelta = i
					}
					deltas++
				}
			}
			last := events[len(events)-1]
			if events[0].name != "meta" || deltas < 10 || last.name != "done" {
				t.Fatalf("events %v: want meta, at least 10 deltas and done", events)
			}
			// The fake sends a chunk every 200ms: unbuffered, the first delta arrives seconds before the end.
			if gap := last.at.Sub(events[firstDelta].at); gap < 5*chunkDelay {
				t.Errorf("%s: the first delta arrived %v before the end of the stream, want at least %v: the stream was buffered",
					resp.Proto, gap, 5*chunkDelay)
			}
		})
	}

	t.Run("json compressed", func(t *testing.T) {
		_, token := s.login(t)
		resp, b := s.do(t, http.MethodGet, "/v1/models", nil, http.Header{
			"Authorization": {"Bearer " + token}, "Accept-Encoding": {"gzip"},
		})
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("GET /v1/models: status %d, Content-Encoding %q, %d bytes, want 200 gzip",
				resp.StatusCode, resp.Header.Get("Content-Encoding"), len(b))
		}
	})

	// Brotli beside gzip, under the same rules: the contract and JSON answers are compressed, never the answers
	// of the auth routes, which carry tokens, nor event streams.
	t.Run("compression", func(t *testing.T) {
		creds, token := s.login(t)
		auth := "Bearer " + token
		// Conversations enough for a list worth compressing (nginx compresses from 512 bytes).
		const conversations = 3
		var wg sync.WaitGroup
		for i := range conversations {
			wg.Go(func() {
				chat := fmt.Sprintf(`{"model":"tiny","messages":[{"role":"user","content":"conversation %d, whose title is long enough to fill a list"}]}`, i)
				if resp, b := s.do(t, http.MethodPost, "/v1/chat", []byte(chat), http.Header{"Authorization": {auth}}); resp.StatusCode != http.StatusOK {
					t.Errorf("chat: %d %s", resp.StatusCode, b)
				}
			})
		}
		wg.Wait()
		stream := []byte(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)

		tests := []struct {
			name, method, path string
			body               []byte
			compressed         bool
			check              func(t *testing.T, plain []byte)
		}{
			{"the contract", http.MethodGet, "/openapi.yaml", nil, true, func(t *testing.T, plain []byte) {
				if !bytes.Equal(plain, spec.OpenAPIYAML) {
					t.Errorf("the contract decoded to %d bytes, not the %d of api/openapi.yaml", len(plain), len(spec.OpenAPIYAML))
				}
			}},
			{"a conversation list", http.MethodGet, "/v1/conversations", nil, true, func(t *testing.T, plain []byte) {
				var list struct{ Items []json.RawMessage }
				if err := json.Unmarshal(plain, &list); err != nil || len(list.Items) != conversations {
					t.Errorf("the list decoded to %d conversations (%v), want %d", len(list.Items), err, conversations)
				}
			}},
			{"a login", http.MethodPost, "/v1/auth/login", creds, false, func(t *testing.T, plain []byte) {
				// Long enough to be compressed anywhere else: only the route's rule keeps it plain.
				if len(plain) < 512 || !bytes.Contains(plain, []byte(`"access_token"`)) {
					t.Errorf("the login answered %d bytes: %s; want tokens, 512 bytes or more", len(plain), plain)
				}
			}},
			{"a stream", http.MethodPost, "/v1/chat/stream", stream, false, func(t *testing.T, plain []byte) {
				if !bytes.Contains(plain, []byte("event: done")) {
					t.Errorf("the stream has no done event: %s", plain)
				}
			}},
		}
		decoders := map[string]func(io.Reader) (io.Reader, error){
			"br":   func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
			"gzip": func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
		}
		for _, tt := range tests {
			for encoding, decode := range decoders {
				t.Run(tt.name+" with "+encoding, func(t *testing.T) {
					resp, body := s.do(t, tt.method, tt.path, tt.body, http.Header{"Authorization": {auth}, "Accept-Encoding": {encoding}})
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("status %d: %s", resp.StatusCode, body)
					}
					got := resp.Header.Get("Content-Encoding")
					if !tt.compressed {
						if got != "" {
							t.Fatalf("Content-Encoding %q, want none", got)
						}
						tt.check(t, body)
						return
					}
					if got != encoding || !slices.Contains(resp.Header.Values("Vary"), "Accept-Encoding") {
						t.Fatalf("Content-Encoding %q, Vary %q; want %s, varying by Accept-Encoding", got, resp.Header.Values("Vary"), encoding)
					}
					r, err := decode(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					plain, err := io.ReadAll(r)
					if err != nil {
						t.Fatalf("decode %s: %v", encoding, err)
					}
					tt.check(t, plain)
				})
			}
		}
	})

	// Last: it spends the address's whole burst.
	t.Run("rate limited", func(t *testing.T) {
		const n = 150
		statuses := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				resp, err := s.c.Get(s.https + "/healthz")
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				defer resp.Body.Close()
				statuses[i] = resp.StatusCode
				if resp.StatusCode == http.StatusTooManyRequests {
					b, _ := io.ReadAll(resp.Body)
					checkProblem(t, resp, b, resp.Header.Get("X-Request-ID"))
				}
			})
		}
		wg.Wait()
		counts := map[int]int{}
		for _, st := range statuses {
			counts[st]++
		}
		if counts[http.StatusTooManyRequests] == 0 || counts[http.StatusOK] == 0 || counts[http.StatusOK]+counts[http.StatusTooManyRequests] != n {
			t.Errorf("statuses %v: want some 200 and some 429, nothing else", counts)
		}
	})
}

// checkSecurityHeaders checks the headers nginx adds to every answer, each sent exactly once.
func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	want := map[string]string{
		"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
		"Content-Security-Policy":   "default-src 'none'; frame-ancestors 'none'",
		"X-Frame-Options":           "DENY",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
	}
	for name, value := range want {
		if got := resp.Header.Values(name); len(got) != 1 || got[0] != value {
			t.Errorf("%s = %q, want [%s]", name, got, value)
		}
	}
	if got := resp.Header.Values("X-Request-ID"); len(got) != 1 || got[0] == "" {
		t.Errorf("X-Request-ID = %q, want one value", got)
	}
}

// checkProblem checks that an answer made by nginx has the API's problem+json shape. It is safe to call from
// any goroutine.
func checkProblem(t *testing.T, resp *http.Response, body []byte, requestID string) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
		RequestID           string `json:"request_id"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Errorf("problem %s: %v", body, err)
		return
	}
	if !strings.HasPrefix(p.Type, "urn:deepersensor:problem:") || p.Title != http.StatusText(resp.StatusCode) ||
		p.Status != resp.StatusCode || p.Detail == "" || p.RequestID != requestID || resp.Header.Get("X-Request-ID") != requestID {
		t.Errorf("problem %+v, X-Request-ID %q: want a complete problem for %d with request id %q",
			p, resp.Header.Get("X-Request-ID"), resp.StatusCode, requestID)
	}
}

// login signs up a new user through nginx, logs in and returns the user's credentials, as a login's body, and
// the access token. Whichever instance serves each step, they share the database and the signing secret.
func (s *stack) login(t *testing.T) (creds []byte, accessToken string) {
	t.Helper()
	creds, err := json.Marshal(map[string]string{
		"email":    fmt.Sprintf("nginx-%d@example.com", time.Now().UnixNano()),
		"password": testapp.TestPassword,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp, b := s.do(t, http.MethodPost, "/v1/auth/signup", creds, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("signup: %d %s", resp.StatusCode, b)
	}
	resp, b := s.do(t, http.MethodPost, "/v1/auth/login", creds, nil)
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tokens) != nil || tokens.AccessToken == "" {
		t.Fatalf("login: %d %s", resp.StatusCode, b)
	}
	return creds, tokens.AccessToken
}

// event is a Server-Sent Event's name and when it arrived.
type event struct {
	name string
	at   time.Time
}

func (e event) String() string { return e.name }

// stream posts a chat to /v1/chat/stream through nginx with c and returns the events as they arrived.
func (s *stack) stream(t *testing.T, c *http.Client, token string) ([]event, *http.Response) {
	t.Helper()
	body := `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequest(http.MethodPost, s.https+"/v1/chat/stream", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	// Asked for explicitly, so that Go does not decompress behind the test's back.
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	var events []event
	for r := sse.NewReader(resp.Body); ; {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read stream after %d events: %v", len(events), err)
		}
		events = append(events, event{name: ev.Type, at: time.Now()})
	}
	if len(events) == 0 {
		t.Fatal("no events")
	}
	return events, resp
}

// hostPort strips the scheme from a base URL.
func hostPort(baseURL string) string {
	return strings.TrimPrefix(baseURL, "http://")
}
