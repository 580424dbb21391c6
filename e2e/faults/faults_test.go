package faults_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/usage"
)

// The model server's timeouts in the matrix: short, so that a stalled call ends well within a second.
const (
	firstChunkTimeout = 300 * time.Millisecond
	chunkTimeout      = 300 * time.Millisecond
	requestTimeout    = time.Second
)

// chunkDelay is the fake model server's pace: its whole answer takes 60ms.
const chunkDelay = 5 * time.Millisecond

// wholeAnswer is the fake model server's answer, in 12 chunks; firstThree are its first three.
const (
	wholeAnswer = ", there was a little girl named Lily. She"
	firstThree  = ", there was"
)

// failure is a failure as clients are told of it: its status, and the core error whose code the
// OpenAI-compatible API names and whose message every API gives.
type failure struct {
	status int
	err    *core.Error
}

var (
	unavailable = &failure{http.StatusServiceUnavailable, provider.UpstreamUnavailable(nil)}
	failed      = &failure{http.StatusBadGateway, provider.UpstreamFailed(nil)}
	timedOut    = &failure{http.StatusGatewayTimeout, provider.UpstreamTimeout(nil)}
)

// How an answer ended, as its client saw it.
const (
	endDone  = "done"  // the final event or line, or the whole answer
	endError = "error" // an error event or line, after the answer began
	endNone  = ""      // no answer began, or the client left before its end
)

// want is how a call must end: for its client, in the database and in the usage records.
type want struct {
	status int // the HTTP status; 0 when the client left before it came
	end    string
	fail   *failure  // the failure the client is told of, before the answer began or at its end
	text   textCheck // the answer's text as the client received it
	// stored is the status of the answer stored, on the routes that store, or "" for no answer. An answer
	// stored holds the text the client received (when the client left: a beginning of the whole answer
	// that starts with it).
	stored client.MessageStatus
	// outcome is the usage record's. Its completion tokens are the model's count when the call is complete,
	// else the chunks the client received (at least those, when the client left).
	outcome string
}

// textCheck tells which answer texts are right.
type textCheck struct {
	desc string
	ok   func(string) bool
}

func is(s string) textCheck {
	return textCheck{fmt.Sprintf("%q", s), func(got string) bool { return got == s }}
}

var (
	nothing = is("")
	// beginning is at least one chunk of the whole answer, but not all of it.
	beginning = textCheck{"a beginning of the whole answer", func(got string) bool {
		return got != "" && got != wholeAnswer && strings.HasPrefix(wholeAnswer, got)
	}}
	// endless is the whole answer over and over, past its end.
	endless = textCheck{"the whole answer repeated", func(got string) bool {
		return len(got) > len(wholeAnswer) && strings.HasPrefix(strings.Repeat(wholeAnswer, len(got)/len(wholeAnswer)+1), got)
	}}
)

// fault is a row of the matrix: something that goes wrong while a model call runs, and how a call must end
// on the one route whose answer is not streamed (plain) and on those whose answer is (streamed).
type fault struct {
	name   string
	ollama ollamatest.Options
	redis  bool // the service uses a Redis of the row's own, which during may stop and start
	// configure, if set, changes the service's configuration.
	configure func(*config.Config)
	// setup runs once the service started, before the calls.
	setup func(t *testing.T, e *env)
	// during runs in the middle of each call: once the client received the answer's first chunk, or, when
	// the answer is not streamed, once the model server received the request. It may run on a goroutine of
	// its own.
	during func(e *env) error
	// after runs after each call.
	after           func(t *testing.T, e *env)
	plain, streamed want
}

// finishes is how every call ends when what goes wrong spares the model call.
var finishes = want{status: http.StatusOK, end: endDone, text: is(wholeAnswer), stored: client.Complete, outcome: usage.Complete}

// faults is the matrix. On the streamed routes that store, a stream that failed before it began stores
// its answer incomplete all the same, empty: the chat service stores whatever the model said when it fails.
// The non-streamed route stores no answer when the model fails; an answer it cannot read (cut off, not JSON)
// is a 503, as from a model server that is not working, and one longer than 8 MiB a 502.
var faults = []fault{
	{
		name:     "model server refuses connections",
		setup:    stopModelServer,
		plain:    want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server answers 500",
		ollama:   ollamatest.Options{ChatStatus: http.StatusInternalServerError, StatusMessage: "llama runner process has terminated: exit status 2"},
		plain:    want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server stalls before the first token",
		ollama:   ollamatest.Options{InitialDelay: time.Hour},
		plain:    want{status: http.StatusGatewayTimeout, fail: timedOut, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusGatewayTimeout, fail: timedOut, text: nothing, stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server stalls midway",
		ollama:   ollamatest.Options{Fault: &ollamatest.Fault{After: 3}},
		plain:    want{status: http.StatusGatewayTimeout, fail: timedOut, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusOK, end: endError, fail: timedOut, text: is(firstThree), stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server dies midway",
		ollama:   ollamatest.Options{Break: &ollamatest.Break{After: 3, How: ollamatest.Disconnect}},
		plain:    want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusOK, end: endError, fail: failed, text: is(firstThree), stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server sends malformed NDJSON",
		ollama:   ollamatest.Options{Break: &ollamatest.Break{After: 3, How: ollamatest.MalformedLine}},
		plain:    want{status: http.StatusServiceUnavailable, fail: unavailable, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusOK, end: endError, fail: failed, text: is(firstThree), stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:   "model server sends a 10 MiB line",
		ollama: ollamatest.Options{Break: &ollamatest.Break{After: 3, How: ollamatest.HugeLine}},
		// Reading 8 MiB may take longer than the short timeouts on a loaded machine: the size must decide.
		configure: func(c *config.Config) { c.OllamaChunkTimeout, c.OllamaRequestTimeout = time.Minute, time.Minute },
		plain:     want{status: http.StatusBadGateway, fail: failed, text: nothing, outcome: usage.Error},
		streamed:  want{status: http.StatusOK, end: endError, fail: failed, text: is(firstThree), stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "model server never ends",
		ollama:   ollamatest.Options{Endless: true},
		plain:    want{status: http.StatusGatewayTimeout, fail: timedOut, text: nothing, outcome: usage.Error},
		streamed: want{status: http.StatusOK, end: endError, fail: timedOut, text: endless, stored: client.Incomplete, outcome: usage.Error},
	},
	{
		name:     "client leaves",
		ollama:   ollamatest.Options{ChunkDelay: 50 * time.Millisecond},
		during:   func(e *env) error { e.leave(); return nil },
		after:    upstreamCancelled,
		plain:    want{text: nothing, outcome: usage.Incomplete},
		streamed: want{status: http.StatusOK, text: beginning, stored: client.Incomplete, outcome: usage.Incomplete},
	},
	{
		name: "PostgreSQL restarts",
		// The answer takes 1.8s and so ends well over a second after the restart, as an answer does after a
		// real restart, which takes seconds: pgxpool pings the connections idle for a second before it uses
		// them, and so finds those that PostgreSQL closed.
		ollama:    ollamatest.Options{ChunkDelay: 150 * time.Millisecond},
		configure: func(c *config.Config) { c.OllamaChunkTimeout, c.OllamaRequestTimeout = time.Minute, time.Minute },
		during:    restartPostgres,
		plain:     finishes,
		streamed:  finishes,
	},
	{
		name:     "Redis stops and starts",
		ollama:   ollamatest.Options{ChunkDelay: 30 * time.Millisecond},
		redis:    true,
		during:   restartRedis,
		after:    redisInUse,
		plain:    finishes,
		streamed: finishes,
	},
}

// TestFault runs each route of each chat API through each fault of the matrix, on a service of the fault's
// own, and checks that no goroutine outlives it.
func TestFault(t *testing.T) {
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			noGoroutineLeft(t)
			e := start(t, f)
			var calls []finished
			for _, r := range routes {
				t.Run(r.name, func(t *testing.T) {
					w := f.plain
					if r.streamed {
						w = f.streamed
					}
					c := e.call(t, r, f.during)
					checkCall(t, c, w)
					checkStored(t, e, r, c, w)
					if f.after != nil {
						f.after(t, e)
					}
					calls = append(calls, finished{r, c, w})
				})
			}
			checkUsage(t, e, calls)
		})
	}
}

// start boots the service for a fault, with the model server's timeouts short.
func start(t *testing.T, f fault) *env {
	t.Helper()
	e := &env{}
	if f.redis {
		e.redis = startRedis(t)
	}
	opts := f.ollama
	if opts.ChunkDelay == 0 {
		opts.ChunkDelay = chunkDelay
	}
	e.app = testapp.Start(t, testapp.Options{Ollama: opts, Configure: func(c *config.Config) {
		c.OllamaFirstChunkTimeout, c.OllamaChunkTimeout, c.OllamaRequestTimeout = firstChunkTimeout, chunkTimeout, requestTimeout
		// Each call checks its model in the model list, which then stays cached while the model server is down.
		c.ModelsCacheTTL = time.Hour
		if e.redis != nil {
			c.RedisURL = e.redis.url()
		}
		if f.configure != nil {
			f.configure(c)
		}
	}})
	e.http = e.app.HTTPClient(t)
	if f.setup != nil {
		f.setup(t, e)
	}
	return e
}

// noGoroutineLeft fails t if goroutines that were not running when it was called still run once t and its
// cleanups (the service's shutdown among them) have ended. Call it first: its check must be the last cleanup.
func noGoroutineLeft(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(before); err != nil {
			t.Errorf("goroutines left behind once the service stopped: %v", err)
		}
	})
}

// checkCall checks what the client saw of a call.
func checkCall(t *testing.T, c *call, w want) {
	t.Helper()
	if c.status != w.status || c.end != w.end || !w.text.ok(c.text) {
		t.Errorf("status %d, end %q, text %.80q; want status %d, end %q, text %s", c.status, c.end, c.text, w.status, w.end, w.text.desc)
	}
	switch f := w.fail; {
	case f == nil && c.told != (told{}):
		t.Errorf("told of a failure %+v, want none", c.told)
	case f != nil && (c.told.detail != f.err.Message || (c.told.status != 0 && c.told.status != f.status) ||
		(c.told.code != "" && c.told.code != string(f.err.Code))):
		t.Errorf("told of %+v, want status %d, code %s, %q", c.told, f.status, f.err.Code, f.err.Message)
	}
	if c.status == http.StatusServiceUnavailable && c.header.Get("Retry-After") == "" {
		t.Error("a 503 without Retry-After")
	}
}
