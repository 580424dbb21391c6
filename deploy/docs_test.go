package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// TestDocs opens Swagger UI in headless Chromium, driven over the DevTools protocol by chromedp, from an API
// instance and then through nginx. Each time the page must list every operation of the contract, authorize
// with a bearer token and run "Try it out" on getMe against the origin that served it, with no
// Content-Security-Policy violation and no failed load in the console. Through nginx the page keeps the
// API's own policy, and the call must reach the API through nginx.
func TestDocs(t *testing.T) {
	testenv.RequireBinary(t, chromiumPath, "apt-get install -y chromium")
	s := startStack(t)
	email, tokens := s.apps[0].NewUser(t)

	t.Run("nginx keeps the policy of the docs", func(t *testing.T) {
		for _, path := range []string{"/docs", "/docs/", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} {
			direct, err := http.Get(s.apps[0].URL + path)
			if err != nil {
				t.Fatal(err)
			}
			direct.Body.Close()
			want := direct.Header.Get("Content-Security-Policy")
			resp, _ := s.do(t, http.MethodGet, path, nil, nil)
			if got := resp.Header.Values("Content-Security-Policy"); resp.StatusCode != http.StatusOK || len(got) != 1 || got[0] != want {
				t.Errorf("GET %s through nginx: %d with Content-Security-Policy %q, want 200 with the API's [%s]",
					path, resp.StatusCode, got, want)
			}
		}
	})

	b := startBrowser(t, s.cert)
	for _, site := range []struct{ name, url string }{{"api", s.apps[0].URL}, {"nginx", s.https}} {
		t.Run(site.name, func(t *testing.T) {
			seen := len(b.consoleMessages())
			defer func() { // also when a step fails, which a violation may explain
				for _, m := range b.consoleMessages()[seen:] {
					if strings.Contains(m, "Content Security Policy") || strings.Contains(m, "Failed to load") {
						t.Errorf("browser console: %s", m)
					}
				}
			}()
			tryItOut(t, b, site.url, tokens.AccessToken, email)
			saveScreenshot(t, b, "docs-"+site.name+".png")
		})
	}

	// nginx logged the call of "Try it out", and the API served it under the same request id.
	var calls []accessLine
	for _, raw := range strings.Split(s.nginxLog.String(), "\n") {
		var l struct {
			RequestID string `json:"request_id"`
			URI       string `json:"uri"`
			Status    int    `json:"status"`
		}
		if json.Unmarshal([]byte(raw), &l) == nil && l.URI == "/v1/me" && l.Status == http.StatusOK {
			calls = append(calls, s.seen(t, l.RequestID)...)
		}
	}
	if len(calls) != 1 || calls[0].Path != "/v1/me" {
		t.Errorf("the API served %v for nginx's GET /v1/me, want the one call of Try it out", calls)
	}
}

// tryItOut opens Swagger UI at baseURL, checks that it shows every operation of the contract, authorizes with
// token, and runs getMe with "Try it out", which must answer the account of email.
func tryItOut(t *testing.T, b *browser, baseURL, token, email string) {
	t.Helper()
	browse(t, b, "open /docs/", chromedp.Navigate(baseURL+"/docs/"))
	spec, _ := testapp.Contract(t)
	operations := spec.Paths.Len() // at least one operation per path
	for _, item := range spec.Paths.Map() {
		operations += len(item.Operations()) - 1
	}
	browse(t, b, fmt.Sprintf("Swagger UI to list %d operations", operations), chromedp.Poll[chromedp.Void](
		fmt.Sprintf(`document.querySelectorAll(".opblock").length === %d`, operations),
		chromedp.WithPollingInterval(100*time.Millisecond)))

	source := browse(t, b, "the rendered page", chromedp.OuterHTML(chromedp.CSS("html")))
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

	for _, step := range []struct {
		what   string
		action chromedp.Action[chromedp.Void]
	}{
		{"open the authorize dialog", chromedp.Click(chromedp.CSS(".auth-wrapper .authorize"))},
		{"type the access token", chromedp.SendKeys(chromedp.CSS(".auth-container input"), token)},
		{"authorize", chromedp.Click(chromedp.CSS(".auth-container .auth-btn-wrapper .authorize"))},
		{"close the authorize dialog", chromedp.Click(chromedp.CSS(".auth-container .auth-btn-wrapper .btn-done"))},
		{"open getMe", chromedp.Click(chromedp.CSS("#operations-auth-getMe .opblock-summary-control"))},
		{"press Try it out", chromedp.Click(chromedp.CSS("#operations-auth-getMe .try-out__btn"))},
		{"press Execute", chromedp.Click(chromedp.CSS("#operations-auth-getMe .execute"))},
	} {
		browse(t, b, step.what, step.action)
	}
	live := "#operations-auth-getMe .live-responses-table .response"
	if status := browse(t, b, "the getMe response status", chromedp.Text(chromedp.CSS(live+" .response-col_status"))); !strings.HasPrefix(status, "200") {
		t.Errorf("Try it out: getMe status %q, want 200", status)
	}
	if body := browse(t, b, "the getMe response body", chromedp.Text(chromedp.CSS(live+" .response-col_description"))); !strings.Contains(body, email) {
		t.Errorf("Try it out: getMe body %q lacks %s", body, email)
	}
	// Swagger UI shows the URL it called: the page's own origin.
	if url := browse(t, b, "the request URL", chromedp.Text(chromedp.CSS("#operations-auth-getMe .request-url pre"))); url != baseURL+"/v1/me" {
		t.Errorf("Try it out called %q, want %s/v1/me", url, baseURL)
	}
}

// saveScreenshot saves what the browser shows as name in DS_TEST_ARTIFACTS, or in a temporary directory.
func saveScreenshot(t *testing.T, b *browser, name string) {
	t.Helper()
	png := browse(t, b, "screenshot", chromedp.CaptureScreenshot())
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dir := os.Getenv("DS_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of /docs/ after Try it out: %s (%d bytes)", file, len(png))
}
