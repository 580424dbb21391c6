package testapp

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
)

// StartMain boots the service like Start, for a TestMain, which has no testing.TB: runnable examples need a
// server that outlives every test. stop shuts the service down and drops its database; problems while
// stopping are printed to standard error, as a test would log them.
func StartMain(opts Options) (app *App, stop func(), err error) {
	h := &mainTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		app = Start(h, opts)
	}()
	<-done
	if h.failure != nil {
		h.cleanup()
		return nil, nil, h.failure
	}
	return app, h.cleanup, nil
}

// mainTB stands in for a *testing.T while StartMain runs Start. Embedding the interface supplies TB's
// unexported method; only the methods Start and the helpers it calls use (Helper, Cleanup, Errorf and
// Fatalf) are implemented, and any other would panic on the nil TB.
type mainTB struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
	failure  error
}

func (h *mainTB) Helper() {}

func (h *mainTB) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}

func (h *mainTB) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testapp: "+format+"\n", args...)
}

// Fatalf records the failure and ends the calling goroutine, as t.Fatalf does.
func (h *mainTB) Fatalf(format string, args ...any) {
	h.mu.Lock()
	h.failure = errors.Join(h.failure, fmt.Errorf(format, args...))
	h.mu.Unlock()
	runtime.Goexit()
}

// cleanup runs the registered functions, last registered first, as a test's end does.
func (h *mainTB) cleanup() {
	h.mu.Lock()
	fs := h.cleanups
	h.cleanups = nil
	h.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
