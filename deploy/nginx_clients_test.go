package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// clientAddrHeader names the client's address to the nginx of TestNginxClients, which trusts it from
// 127.0.0.1 only (real_ip_header): the machine has one IPv6 address, ::1, and an IPv6 /64 shows only with
// several addresses in it.
const clientAddrHeader = "X-Test-Client-Addr"

// burst is the burst of nginx.conf's limit_req: a new client may send burst+1 requests at once.
const burst = 40

// TestNginxClients checks whom nginx's limits count as one client: an IPv4 address (an IPv4-mapped IPv6 address
// included), or an IPv6 /64. It runs the committed configuration with its map, zones and burst, but with
// thresholds that leave nothing to timing (1 request a minute after the burst, 1 request at a time) and a
// stand-in for the API that echoes the X-Forwarded-For nginx sends. The address ::1 is a real IPv6 connection,
// to the IPv6 listener; every other address comes through the IPv4 listener in clientAddrHeader.
func TestNginxClients(t *testing.T) {
	requireNginx(t)
	held := make(chan struct{}, 1)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" { // until the client leaves
			held <- struct{}{}
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	})
	target := nginxTarget{
		httpAddr:   freeAddr(t),
		httpsAddr:  freeAddr(t),
		http6Addr:  freeAddr6(t),
		https6Addr: freeAddr6(t),
		edits: map[string][][2]string{"nginx.conf": {
			// One worker, which ends each request before it reads the next: a finished request never counts.
			{"worker_processes auto;", "worker_processes 1;"},
			{"rate=20r/s;", "rate=1r/m;"},
			{"limit_conn per_ip_conn 64;", "limit_conn per_ip_conn 1;"},
			{"limit_req zone=per_ip burst=40 nodelay;", fmt.Sprintf(
				"limit_req zone=per_ip burst=%d nodelay; set_real_ip_from 127.0.0.1; real_ip_header %s;", burst, clientAddrHeader)},
		}},
	}
	for i := range target.upstreams {
		srv := httptest.NewServer(api)
		t.Cleanup(srv.Close)
		target.upstreams[i] = hostPort(srv.URL)
	}
	dir, cert := renderNginx(t, target)
	log := startNginx(t, dir, target.httpsAddr)
	c := newClient(cert, false, 0, 0)

	// request is GET path as the client addr.
	request := func(ctx context.Context, addr, path string) (*http.Request, error) {
		url := "https://" + target.httpsAddr + path
		if addr == "::1" {
			url = "https://" + target.https6Addr + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err == nil && addr != "::1" {
			req.Header.Set(clientAddrHeader, addr)
		}
		return req, err
	}
	// from sends GET /healthz as the client addr and returns the status. When nginx lets the request through,
	// the API must see addr as the client.
	from := func(t *testing.T, addr string) int {
		t.Helper()
		req, err := request(t.Context(), addr, "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp, body := send(t, c, req)
		if seen, err := netip.ParseAddr(string(body)); resp.StatusCode == http.StatusOK && (err != nil || seen != netip.MustParseAddr(addr)) {
			t.Errorf("GET as %s: the API saw the client as %q", addr, body)
		}
		return resp.StatusCode
	}

	// The TLS listener on IPv6 serves the ::1 cases below.
	t.Run("plain HTTP over IPv6 redirects", func(t *testing.T) {
		resp, err := c.Get("http://" + target.http6Addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://[::1]/healthz"; resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
			t.Errorf("%d to %q, want 301 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})

	// spendRequests sends requests as addr until nginx refuses one; a new client has burst+1.
	spendRequests := func(t *testing.T, addr string) {
		for n := 0; n <= 2*burst; n++ {
			if from(t, addr) == http.StatusTooManyRequests {
				if n != burst+1 {
					t.Errorf("%s was refused after %d requests, want %d", addr, n, burst+1)
				}
				return
			}
		}
		t.Fatalf("%s was never refused", addr)
	}
	// holdConnection keeps a request of addr at the API until t ends.
	holdConnection := func(t *testing.T, addr string) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := request(ctx, addr, "/hold")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		select {
		case <-held:
		case err := <-done:
			t.Fatalf("the request held as %s ended: %v", addr, err)
		}
	}

	// Each case spends the whole allowance of one client, then checks that the same client is refused at once
	// from other addresses, and that other clients are still served. No two cases share a client.
	for _, tc := range []struct {
		name        string
		spend       func(t *testing.T, addr string)
		zone        string // of the limit that spend exhausts, which nginx names when it refuses
		spent       string
		same, other []string
	}{
		{"requests/an IPv6 /64 is one client", spendRequests, "per_ip", "2001:db8:1:2::1",
			[]string{"2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"}, []string{"2001:db8:1:3::1", "2001:db8:2:2::1"}},
		{"requests/an IPv4 address is one client", spendRequests, "per_ip", "192.0.2.1",
			[]string{"::ffff:192.0.2.1"}, []string{"192.0.2.2", "::ffff:192.0.2.3"}},
		{"requests/a real IPv6 connection counts as its /64", spendRequests, "per_ip", "::1",
			[]string{"::2", "::abcd:0:0:1"}, []string{"2001:db8::1", "::ffff:192.0.2.4"}},
		{"connections/an IPv6 /64 is one client", holdConnection, "per_ip_conn", "2001:db8:3:4::1",
			[]string{"2001:db8:3:4::2"}, []string{"2001:db8:3:5::1"}},
		{"connections/an IPv4 address is one client", holdConnection, "per_ip_conn", "192.0.2.50",
			[]string{"::ffff:192.0.2.50"}, []string{"192.0.2.51"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.spend(t, tc.spent)
			for _, addr := range tc.same {
				if status := from(t, addr); status != http.StatusTooManyRequests {
					t.Errorf("%s, the same client as %s: status %d, want 429", addr, tc.spent, status)
				}
				// The refusal is this limit's, logged with the client's own address. The log arrives through a pipe.
				line := fmt.Sprintf(`by zone "%s", client: %s,`, tc.zone, addr)
				for deadline := time.Now().Add(5 * time.Second); !strings.Contains(log.String(), line); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Errorf("nginx did not log %q", line)
						break
					}
				}
			}
			for _, addr := range tc.other {
				if status := from(t, addr); status != http.StatusOK {
					t.Errorf("%s, another client than %s: status %d, want 200", addr, tc.spent, status)
				}
			}
		})
	}
}
