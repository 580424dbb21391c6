package auth_test

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/auth"
)

// testRedisURL is the real Redis of the tests, from DS_TEST_REDIS_URL.
func testRedisURL() string {
	if u := os.Getenv("DS_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// startRevocations starts a list on the Redis at addr (none when ""), under prefix, and stops it when the
// test ends.
func startRevocations(t *testing.T, addr, prefix string, now func() time.Time) *auth.Revocations {
	t.Helper()
	cfg := auth.RevocationsConfig{KeyPrefix: prefix, Lifetime: time.Minute, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if addr != "" {
		opts, err := redis.ParseURL(testRedisURL())
		if err != nil {
			t.Fatalf("DS_TEST_REDIS_URL: %v", err)
		}
		opts.Addr, opts.DialTimeout, opts.DialerRetries = addr, 200*time.Millisecond, 1
		cfg.Redis = redis.NewClient(opts)
		t.Cleanup(func() { _ = cfg.Redis.Close() })
	}
	r := auth.NewRevocations(cfg)
	if now != nil {
		auth.SetRevocationsClock(r, now)
	}
	t.Cleanup(r.Start(context.Background()))
	return r
}

// mustRedisAddr returns the address of the test Redis, failing the test when it does not answer, and a key
// prefix of the test's own.
func mustRedisAddr(t *testing.T) (addr, prefix string) {
	t.Helper()
	opts, err := redis.ParseURL(testRedisURL())
	if err != nil {
		t.Fatalf("DS_TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v (set DS_TEST_REDIS_URL)", opts.Addr, err)
	}
	prefix = "dstest:" + rand.Text() + ":"
	t.Cleanup(func() { c := redis.NewClient(opts); c.Del(context.Background(), prefix+"revoked"); c.Close() })
	return opts.Addr, prefix
}

// eventually waits up to two seconds for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2s", what)
		}
	}
}

func session(user, sid uuid.UUID) auth.Claims { return auth.Claims{UserID: user, SessionID: sid} }

func TestRevocationsInMemory(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := startRevocations(t, "", "", clock)
	ctx := context.Background()
	ada, bob, s1, s2 := uuid.New(), uuid.New(), uuid.New(), uuid.New()

	r.RevokeSession(ctx, s1)
	if !r.Revoked(session(ada, s1)) || r.Revoked(session(ada, s2)) {
		t.Error("revoking a session must end it and no other")
	}
	r.RevokeUser(ctx, bob)
	if !r.Revoked(session(bob, s2)) || !r.Revoked(session(bob, uuid.New())) || r.Revoked(session(ada, s2)) {
		t.Error("revoking a user must end all of the user's sessions and no other user's")
	}
	// A revocation outlives the tokens it covers (a minute here, plus a minute of slack), then ends.
	mu.Lock()
	now = now.Add(2*time.Minute - time.Millisecond)
	mu.Unlock()
	if !r.Revoked(session(ada, s1)) {
		t.Error("a revocation ended before the tokens it covers")
	}
	mu.Lock()
	now = now.Add(time.Millisecond)
	mu.Unlock()
	if r.Revoked(session(ada, s1)) || r.Revoked(session(bob, s2)) {
		t.Error("a revocation outlived the tokens it covers")
	}
}

// TestRevocationsSharedThroughRedis runs three instances on one Redis: a revocation on one holds on the
// others at once (pub/sub), and an instance that starts later loads it.
func TestRevocationsSharedThroughRedis(t *testing.T) {
	addr, prefix := mustRedisAddr(t)
	one, two := startRevocations(t, addr, prefix, nil), startRevocations(t, addr, prefix, nil)
	ctx := context.Background()
	ada, s1 := uuid.New(), uuid.New()

	start := time.Now()
	one.RevokeSession(ctx, s1)
	if !one.Revoked(session(ada, s1)) {
		t.Fatal("the revoking instance still accepts the session")
	}
	eventually(t, "the other instance ends the session", func() bool { return two.Revoked(session(ada, s1)) })
	t.Logf("revocation reached the other instance in %v", time.Since(start))
	two.RevokeUser(ctx, ada)
	eventually(t, "the first instance ends the user", func() bool { return one.Revoked(session(ada, uuid.New())) })

	late := startRevocations(t, addr, prefix, nil)
	if !late.Revoked(session(uuid.New(), s1)) || !late.Revoked(session(ada, uuid.New())) {
		t.Error("an instance that started later did not load the revocations")
	}
}

// TestRevocationsAcrossRedisOutages cuts one instance off Redis: what it revokes meanwhile is shared once
// Redis answers again, and what the others revoked meanwhile is loaded when it reconnects.
func TestRevocationsAcrossRedisOutages(t *testing.T) {
	addr, prefix := mustRedisAddr(t)
	p := newProxy(t, addr)
	direct := startRevocations(t, addr, prefix, nil)
	cut := startRevocations(t, p.addr, prefix, nil) // Redis is unreachable through the proxy at first
	ctx := context.Background()
	ada := uuid.New()
	s1, s2, s3 := uuid.New(), uuid.New(), uuid.New()

	direct.RevokeSession(ctx, s1)
	cut.RevokeSession(ctx, s2)
	if !cut.Revoked(session(ada, s2)) {
		t.Fatal("without Redis, a revocation must still hold on its own instance")
	}
	time.Sleep(100 * time.Millisecond)
	if direct.Revoked(session(ada, s2)) || cut.Revoked(session(ada, s1)) {
		t.Fatal("a revocation crossed a Redis that was down")
	}

	p.open(t)
	eventually(t, "the pending revocation is shared", func() bool { return direct.Revoked(session(ada, s2)) })
	eventually(t, "the revocation made meanwhile is loaded", func() bool { return cut.Revoked(session(ada, s1)) })

	p.close()
	direct.RevokeSession(ctx, s3)
	time.Sleep(100 * time.Millisecond)
	p.open(t)
	eventually(t, "the revocation made during the second outage is loaded", func() bool { return cut.Revoked(session(ada, s3)) })
}

// proxy forwards TCP connections to a Redis while it is open; closing it cuts them all.
type proxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        []net.Conn
}

// newProxy reserves an address for a proxy to target, closed until open is called.
func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target}
	ln.Close()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) open(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", p.target)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, client, server)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(server, client); server.Close() }()
			go func() { _, _ = io.Copy(client, server); client.Close() }()
		}
	}()
}

func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
