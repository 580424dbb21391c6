package server_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/testapp"
)

// Paths of the Debian packages chromium and chromium-driver, which the docs test drives.
const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
)

// TestDocs opens Swagger UI in headless Chromium with every host but 127.0.0.1 unreachable, checks that it
// lists every operation of the contract without a Content-Security-Policy violation, authorizes with a
// bearer token, runs "Try it out" on getMe against the same server, and saves a screenshot.
func TestDocs(t *testing.T) {
	for _, bin := range []string{chromiumPath, chromedriverPath} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s is missing (%v): install it with `apt-get install -y chromium chromium-driver`", bin, err)
		}
	}
	a := testapp.Start(t, testapp.Options{})
	email, tokens := a.NewUser(t)

	t.Run("headers", func(t *testing.T) {
		for _, path := range []string{"/docs", "/docs/", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} {
			resp, err := http.Get(a.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || len(body) == 0 {
				t.Errorf("GET %s: %d with %d bytes, want 200 with a body", path, resp.StatusCode, len(body))
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
				strings.Contains(csp, "unsafe") {
				t.Errorf("GET %s: Content-Security-Policy %q, want the docs policy", path, csp)
			}
			if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
				t.Errorf("GET %s: X-Frame-Options %q, want DENY", path, got)
			}
		}
	})

	wd := startChromeDriver(t)
	wd.get(a.URL + "/docs/")
	spec, _ := testapp.Contract(t)
	operations := spec.Paths.Len() // at least one operation per path
	for _, item := range spec.Paths.Map() {
		operations += len(item.Operations()) - 1
	}
	wd.waitFor(func() bool { return len(wd.findAll(".opblock")) == operations },
		fmt.Sprintf("Swagger UI to list %d operations", operations))

	source := wd.source()
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if !strings.Contains(source, `data-path="`+path+`"`) {
				t.Errorf("the rendered page has no %s %s", method, path)
			}
			if !strings.Contains(source, op.Summary) {
				t.Errorf("the rendered page lacks the summary %q of %s", op.Summary, op.OperationID)
			}
		}
	}
	for _, entry := range wd.browserLog() {
		if strings.Contains(entry, "Content Security Policy") || strings.Contains(entry, "Failed to load") {
			t.Errorf("browser console: %s", entry)
		}
	}

	// Authorize with the access token, then run getMe through "Try it out".
	wd.click(wd.find(".auth-wrapper .authorize"))
	wd.sendKeys(wd.find(".auth-container input"), tokens.AccessToken)
	wd.click(wd.find(".auth-container .auth-btn-wrapper .authorize"))
	wd.click(wd.find(".auth-container .auth-btn-wrapper .btn-done"))
	wd.click(wd.find("#operations-auth-getMe .opblock-summary-control"))
	wd.click(wd.find("#operations-auth-getMe .try-out__btn"))
	wd.click(wd.find("#operations-auth-getMe .execute"))
	live := "#operations-auth-getMe .live-responses-table .response"
	wd.waitFor(func() bool { return len(wd.findAll(live)) > 0 }, "the getMe response")
	if status := wd.text(wd.find(live + " .response-col_status")); !strings.HasPrefix(status, "200") {
		t.Errorf("Try it out: getMe status %q, want 200", status)
	}
	if body := wd.text(wd.find(live + " .response-col_description")); !strings.Contains(body, email) {
		t.Errorf("Try it out: getMe body %q lacks %s", body, email)
	}

	png := wd.screenshot()
	if len(png) == 0 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dir := os.Getenv("DS_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "docs-screenshot.png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of /docs/ after Try it out: %s (%d bytes)", file, len(png))
}

// webDriver is a WebDriver session on a chromedriver started for one test, spoken to over plain HTTP.
type webDriver struct {
	t       *testing.T
	session string // base URL of the session
}

// webElementKey is the W3C key of an element reference.
const webElementKey = "element-6066-11e4-a52e-4f735466cecf"

// chromedriverPort finds the port in chromedriver's "started successfully on port N." line.
var chromedriverPort = regexp.MustCompile(`started successfully on port (\d+)`)

// startChromeDriver runs chromedriver on a free loopback port and opens a headless Chromium session in
// which every host name but 127.0.0.1 fails to resolve, so nothing can come from a CDN. Both end with the
// test.
func startChromeDriver(t *testing.T) *webDriver {
	t.Helper()
	cmd := exec.Command(chromedriverPath, "--port=0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := chromedriverPort.FindStringSubmatch(sc.Text()); m != nil {
				port <- m[1]
			}
		}
	}()
	var base string
	select {
	case p := <-port:
		base = "http://127.0.0.1:" + p
	case <-time.After(20 * time.Second):
		t.Fatal("chromedriver did not start within 20s")
	}

	wd := &webDriver{t: t, session: base}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	wd.call(http.MethodPost, "/session", map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":       "chrome",
		"goog:loggingPrefs": map[string]string{"browser": "ALL"},
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args": []string{
				"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
				"--no-first-run", "--disable-background-networking", "--disable-component-update",
				"--disable-sync", "--window-size=1280,2000", "--user-data-dir=" + t.TempDir(),
				"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
			},
		},
	}}}, &created)
	wd.session = base + "/session/" + created.SessionID
	t.Cleanup(func() { wd.call(http.MethodDelete, "", nil, nil) })
	return wd
}

// call sends one WebDriver command and decodes the "value" of its answer into out, failing the test on a
// WebDriver error.
func (wd *webDriver) call(method, path string, in, out any) {
	wd.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			wd.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, wd.session+path, body)
	if err != nil {
		wd.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		wd.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		wd.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	var answer struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil || resp.StatusCode != http.StatusOK {
		wd.t.Fatalf("webdriver %s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(answer.Value, out); err != nil {
			wd.t.Fatalf("webdriver %s %s: decode %s: %v", method, path, answer.Value, err)
		}
	}
}

// get navigates to url.
func (wd *webDriver) get(url string) {
	wd.t.Helper()
	wd.call(http.MethodPost, "/url", map[string]string{"url": url}, nil)
}

// findAll returns the ids of the elements matching a CSS selector, possibly none.
func (wd *webDriver) findAll(css string) []string {
	wd.t.Helper()
	var refs []map[string]string
	wd.call(http.MethodPost, "/elements", map[string]string{"using": "css selector", "value": css}, &refs)
	ids := make([]string, len(refs))
	for i, ref := range refs {
		ids[i] = ref[webElementKey]
	}
	return ids
}

// find waits up to 10 s for an element matching a CSS selector and returns the first one's id.
func (wd *webDriver) find(css string) string {
	wd.t.Helper()
	var ids []string
	wd.waitFor(func() bool { ids = wd.findAll(css); return len(ids) > 0 }, css)
	return ids[0]
}

// waitFor polls cond for up to 10 s, failing the test with what it waited for.
func (wd *webDriver) waitFor(cond func() bool, what string) {
	wd.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			wd.t.Fatalf("waited 10s for %s", what)
		}
	}
}

// click clicks an element.
func (wd *webDriver) click(id string) {
	wd.t.Helper()
	wd.call(http.MethodPost, "/element/"+id+"/click", map[string]any{}, nil)
}

// sendKeys types text into an element.
func (wd *webDriver) sendKeys(id, text string) {
	wd.t.Helper()
	wd.call(http.MethodPost, "/element/"+id+"/value", map[string]string{"text": text}, nil)
}

// text returns an element's rendered text.
func (wd *webDriver) text(id string) string {
	wd.t.Helper()
	var s string
	wd.call(http.MethodGet, "/element/"+id+"/text", nil, &s)
	return s
}

// source returns the current DOM serialized as HTML.
func (wd *webDriver) source() string {
	wd.t.Helper()
	var s string
	wd.call(http.MethodGet, "/source", nil, &s)
	return s
}

// browserLog returns the console messages logged since the last call, such as CSP violations.
func (wd *webDriver) browserLog() []string {
	wd.t.Helper()
	var entries []struct {
		Level   string `json:"level"`
		Message string `json:"message"`
	}
	wd.call(http.MethodPost, "/se/log", map[string]string{"type": "browser"}, &entries)
	lines := make([]string, len(entries))
	for i, e := range entries {
		lines[i] = e.Level + " " + e.Message
	}
	return lines
}

// screenshot returns a PNG of the window.
func (wd *webDriver) screenshot() []byte {
	wd.t.Helper()
	var b64 string
	wd.call(http.MethodGet, "/screenshot", nil, &b64)
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		wd.t.Fatalf("decode screenshot: %v", err)
	}
	return png
}
