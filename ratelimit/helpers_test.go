package ratelimit_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisOptions returns the options of the test Redis, from DS_TEST_REDIS_URL.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	url := os.Getenv("DS_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("parse DS_TEST_REDIS_URL: %v", err)
	}
	return opts
}

// mustRedis returns a client of the test Redis and fails the test when
// Redis cannot be reached.
func mustRedis(tb testing.TB) *redis.Client {
	tb.Helper()
	return mustClient(tb, redisOptions(tb))
}

// mustClient returns a client with opts that has answered a PING.
func mustClient(tb testing.TB, opts *redis.Options) *redis.Client {
	tb.Helper()
	client := redis.NewClient(opts)
	tb.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		tb.Fatalf("redis at %s: %v (set DS_TEST_REDIS_URL)", opts.Addr, err)
	}
	return client
}

// mustPrefix returns a key prefix of its own for this test and deletes its
// keys when the test ends.
func mustPrefix(tb testing.TB, client *redis.Client) string {
	tb.Helper()
	prefix := "dstest:" + rand.Text() + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			tb.Errorf("clean up %s*: %v", prefix, err)
		}
	})
	return prefix
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Drift is always zero: a fake clock moves exactly as far as told.
func (c *fakeClock) Drift() time.Duration { return 0 }

// wallClock waits in real time, sleeping until deadlines counted from its
// start so that oversleeping does not accumulate.
type wallClock struct {
	start   time.Time
	elapsed time.Duration // the time the test has waited for
}

func newWallClock() *wallClock {
	return &wallClock{start: time.Now()}
}

// Advance waits until d more has passed, plus a margin: the limiter's clock (Redis's) started a little after
// this one, at its first call, so a step exactly on a token's boundary must not come early by its clock.
// Drift accounts for the margin.
func (c *wallClock) Advance(d time.Duration) {
	c.elapsed += d
	if d > 0 {
		time.Sleep(time.Until(c.start.Add(c.elapsed + 20*time.Millisecond)))
	}
}

// Drift returns how much more time has passed than the test waited for.
func (c *wallClock) Drift() time.Duration {
	return time.Since(c.start) - c.elapsed
}

// proxy is a TCP proxy to Redis that a test stops and restarts to simulate
// an outage without touching the shared Redis server.
type proxy struct {
	tb     testing.TB
	addr   string
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// mustProxy starts a proxy to the test Redis on a free local port.
func mustProxy(tb testing.TB) *proxy {
	tb.Helper()
	p := &proxy{tb: tb, addr: "127.0.0.1:0", target: redisOptions(tb).Addr, conns: make(map[net.Conn]struct{})}
	p.start()
	tb.Cleanup(p.stop)
	return p
}

// start listens on the proxy's address again.
func (p *proxy) start() {
	p.tb.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.tb.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
}

// stop closes the listener and every open connection, like a dead server.
func (p *proxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) serve(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	_ = c.Close()
	_ = up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers the connections of a proxied session, or closes them
// when the proxy has been stopped meanwhile.
func (p *proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

// client returns a client that reaches Redis through the proxy and fails
// fast.
func (p *proxy) client() *redis.Client {
	p.tb.Helper()
	opts := redisOptions(p.tb)
	opts.Addr = p.addr
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout = 200 * time.Millisecond
	opts.ReadTimeout = 200 * time.Millisecond
	opts.WriteTimeout = 200 * time.Millisecond
	return mustClient(p.tb, opts)
}

// logBuffer collects log output written from several goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// count returns how many log lines contain s.
func (b *logBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, nil))
}
