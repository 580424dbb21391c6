package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/swaggest/swgui"
	"github.com/swaggest/swgui/v5emb"
)

// docsPath is where Swagger UI is served; its assets live below it.
const docsPath = "/docs/"

// docsSpecURL is the contract the UI shows: the one GET /openapi.yaml serves, so the page never drifts from
// what the server validates against. The contract's only server is relative ("/"), so "Try it out" calls the
// origin that served the page, behind any host name or proxy.
const docsSpecURL = "/openapi.yaml"

// inlineBlock finds the bodies of the inline <script> and <style> elements of the Swagger UI page, whose
// hashes the page's Content-Security-Policy allows.
var inlineBlock = regexp.MustCompile(`(?s)<(script|style)>(.*?)</(?:script|style)>`)

// registerDocs mounts Swagger UI for the contract at /docs/ (and /docs), with every asset embedded in the
// binary, so it works offline. The page gets its own Content-Security-Policy: the service's default one
// forbids everything, while the page needs its own scripts, styles and images, its two inline scripts (allowed
// by hash, not by 'unsafe-inline') and requests to this server.
func registerDocs(e *echo.Echo) {
	ui := v5emb.NewHandlerWithConfig(swgui.Config{
		Title:       "DeeperSensor API",
		SwaggerJSON: docsSpecURL,
		BasePath:    docsPath,
	})
	page := renderPage(ui)
	csp := docsPolicy(page)

	withCSP := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set(echo.HeaderContentSecurityPolicy, csp)
			return next(c)
		}
	}
	index := func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		return c.HTMLBlob(http.StatusOK, page)
	}
	assets := echo.WrapHandler(ui)
	e.GET(strings.TrimSuffix(docsPath, "/"), index, withCSP)
	e.GET(docsPath, index, withCSP)
	e.GET(docsPath+"*", assets, withCSP)
}

// renderPage renders the Swagger UI page once. Its content depends only on the configuration, so serving
// the rendered bytes keeps it identical to the page whose inline hashes are in the policy.
func renderPage(ui http.Handler) []byte {
	rec := &pageRecorder{header: http.Header{}}
	ui.ServeHTTP(rec, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: docsPath}})
	return rec.body.Bytes()
}

// docsPolicy is the Content-Security-Policy of the docs: this origin only, plus the page's own inline
// blocks by hash and the data: images Swagger UI's stylesheet uses for its icons.
func docsPolicy(page []byte) string {
	var scripts, styles []string
	for _, m := range inlineBlock.FindAllSubmatch(page, -1) {
		sum := sha256.Sum256(m[2])
		hash := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if string(m[1]) == "script" {
			scripts = append(scripts, hash)
		} else {
			styles = append(styles, hash)
		}
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self' " + strings.Join(scripts, " "),
		"style-src 'self' " + strings.Join(styles, " "),
		"img-src 'self' data:",
		"connect-src 'self'",
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

// pageRecorder is the http.ResponseWriter renderPage renders into.
type pageRecorder struct {
	header http.Header
	body   bytes.Buffer
}

func (r *pageRecorder) Header() http.Header         { return r.header }
func (r *pageRecorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *pageRecorder) WriteHeader(int)             {}
