package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/internal/testapp"
)

// TestDocs checks that Swagger UI and its assets are served with the docs' own Content-Security-Policy. The
// page itself is driven in Chromium, straight from the API and through nginx, by TestDocs in deploy/.
func TestDocs(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
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
}
