// Package fakeserver is what the fake model servers of the tests (ollamatest, openaitest) share beyond their
// wire formats: an HTTP server on 127.0.0.1 closed when the test ends, the record of the requests it
// received (chat requests decoded), the count of those whose client went away before the answer was complete, and waits that end
// early when the client or the server goes away.
package fakeserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Message is one message of a chat request or answer, in either server's wire format.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Fault breaks a chat answer after After content chunks have been sent: with Error, the server reports that
// error as its wire format says; without, it stalls until the client goes away or the server closes.
type Fault struct {
	After int
	Error string
}

// Sent returns the tokens sent before f breaks the answer: all of them when f is nil.
func (f *Fault) Sent(tokens []string) []string {
	if f == nil {
		return tokens
	}
	return tokens[:min(max(f.After, 0), len(tokens))]
}

// Break ends an answer at fault, if there is one, once its tokens were sent: it stalls (see Stall), or calls
// report with the fault's error. It reports whether there was a fault.
func (b *Base[C]) Break(ctx context.Context, fault *Fault, report func(msg string)) bool {
	if fault == nil {
		return false
	}
	if fault.Error == "" {
		b.Stall(ctx)
	} else {
		report(fault.Error)
	}
	return true
}

// Request is a request a fake server received.
type Request[C any] struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	// Chat is the decoded body of a chat request; zero for other requests or a body that did not decode.
	Chat C
}

// Base runs a fake server whose chat requests decode into C. Embed it in the fake and call Start.
type Base[C any] struct {
	// URL is the server's root, e.g. http://127.0.0.1:41234.
	URL string

	chatPath  string
	srv       *httptest.Server
	done      chan struct{} // closed by Close, to end stalled and delayed answers
	closeOnce sync.Once

	mu        sync.Mutex // guards the fields below
	requests  []Request[C]
	cancelled int
	changed   chan struct{} // closed and replaced whenever cancelled grows
}

// Start serves h on 127.0.0.1 until Close, which runs when the test ends, recording every request and
// decoding the body of those POSTed to chatPath.
func (b *Base[C]) Start(tb testing.TB, chatPath string, h http.Handler) {
	tb.Helper()
	b.chatPath, b.done, b.changed = chatPath, make(chan struct{}), make(chan struct{})
	b.srv = httptest.NewServer(b.record(h))
	b.URL = b.srv.URL
	tb.Cleanup(b.Close)
}

// record stores each request, reading its whole body first: only then does net/http watch the connection
// and cancel the request's context when the client goes away.
func (b *Base[C]) record(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		rec := Request[C]{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		if r.Method == http.MethodPost && r.URL.Path == b.chatPath {
			_ = json.Unmarshal(body, &rec.Chat)
		}
		b.mu.Lock()
		b.requests = append(b.requests, rec)
		b.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// Close stops the server, ending stalled and delayed answers first. Later requests fail to connect, as
// when the model server is down. It is safe to call more than once.
func (b *Base[C]) Close() {
	b.closeOnce.Do(func() {
		close(b.done)
		b.srv.Close()
	})
}

// Requests returns the requests received so far, oldest first.
func (b *Base[C]) Requests() []Request[C] {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Request[C](nil), b.requests...)
}

// ChatRequests returns the decoded bodies of the chat requests received so far, oldest first.
func (b *Base[C]) ChatRequests() []C {
	var chats []C
	for _, r := range b.Requests() {
		if r.Method == http.MethodPost && r.Path == b.chatPath {
			chats = append(chats, r.Chat)
		}
	}
	return chats
}

// Cancelled returns how many requests were abandoned by their client (connection closed, request
// cancelled) before the server had finished answering.
func (b *Base[C]) Cancelled() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cancelled
}

// WaitCancelled waits up to timeout until at least n requests were abandoned by their client, and reports
// whether they were.
func (b *Base[C]) WaitCancelled(n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		b.mu.Lock()
		got, changed := b.cancelled, b.changed
		b.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// NoteCancelled counts a request abandoned by its client.
func (b *Base[C]) NoteCancelled() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cancelled++
	close(b.changed)
	b.changed = make(chan struct{})
}

// Wait sleeps for d. It reports false, counting the request as cancelled, if the client goes away first,
// or if the server is closing.
func (b *Base[C]) Wait(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		b.NoteCancelled()
		return false
	case <-b.done:
		return false
	}
}

// Stall blocks until the client goes away, counting the request as cancelled, or the server closes.
func (b *Base[C]) Stall(ctx context.Context) {
	select {
	case <-ctx.Done():
		b.NoteCancelled()
	case <-b.done:
	}
}

// Send writes data to the client at once. It reports false, counting the request as cancelled, if the
// client has gone away.
func (b *Base[C]) Send(w http.ResponseWriter, data []byte) bool {
	if _, err := w.Write(data); err == nil {
		if err = http.NewResponseController(w).Flush(); err == nil {
			return true
		}
	}
	b.NoteCancelled()
	return false
}
