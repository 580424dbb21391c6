package deploy_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is where the Debian package chromium installs the browser that the docs test drives.
const chromiumPath = "/usr/bin/chromium"

// browserStepTimeout bounds each step that browse takes in the browser, waiting for the page included.
const browserStepTimeout = 20 * time.Second

// browser is a tab of a headless Chromium started for one test, with what the page wrote to its console.
type browser struct {
	ctx context.Context // the chromedp context of the tab

	mu      sync.Mutex
	console []string // the page's console messages and browser log entries, such as CSP violations
}

// startBrowser runs the local Chromium headless, through the DevTools protocol, with every host name but
// 127.0.0.1 failing to resolve, so that nothing can come from a CDN, and trusting the key of cert. The browser
// ends with the test.
func startBrowser(t *testing.T, cert *x509.Certificate) *browser {
	t.Helper()
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // the tests run as root, where Chromium's sandbox does not start
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 2000),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first call starts the browser and ties it to ctx, which has no deadline: see chromedp.NewContext.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}

	b := &browser{ctx: ctx}
	messages := chromedp.Console(ctx)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for m, err := range messages {
			if err != nil { // the browser closed
				return
			}
			b.mu.Lock()
			b.console = append(b.console, m.String())
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-read
	})
	return b
}

// consoleMessages returns what the page has written to the console so far.
func (b *browser) consoleMessages() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// browse runs one action in the browser's tab within browserStepTimeout and returns its value, failing t with
// what it was doing when the action fails.
func browse[T any](t *testing.T, b *browser, what string, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}
