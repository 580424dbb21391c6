// Package deploy_test checks the deployment files: the Dockerfile and compose.yaml by parsing them (there is no
// Docker engine in CI), and deploy/nginx by running the real nginx in front of two real API instances.
package deploy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// nginxBin is where the Debian package installs nginx.
const nginxBin = "/usr/sbin/nginx"

// brotliModule is where the Debian package libnginx-mod-http-brotli-filter installs the module that nginx.conf
// loads.
const brotliModule = "/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so"

// nginxSrc is the committed nginx configuration, relative to this package.
const nginxSrc = "nginx"

// nginxTarget is what the rendered configuration points at.
type nginxTarget struct {
	upstreams  [2]string // host:port of the two API instances
	httpAddr   string    // host:port of the redirecting listener
	httpsAddr  string    // host:port of the TLS listener
	http6Addr  string    // [::1]:port of the IPv6 redirecting listener; empty leaves it out
	https6Addr string    // [::1]:port of the IPv6 TLS listener; empty leaves it out
	// edits are further replacements in the committed files, by file name, such as lower limits.
	edits map[string][][2]string
}

// renderNginx copies the committed configuration into a fresh directory and rewrites its three
// deployment-specific files for target, and writes a self-signed certificate for 127.0.0.1, ::1 and localhost
// into DIR/certs. It returns the directory and the certificate, for the clients to trust.
//
// The directory is world-readable: when the test runs as root, nginx's workers run as nobody.
func renderNginx(tb testing.TB, target nginxTarget) (string, *x509.Certificate) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "deepersensor-nginx-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	// Each replacement must match exactly once, so the test notices when the committed files change shape.
	edits := map[string][][2]string{
		"nginx.conf": nil,
		"upstream.conf": {
			{"server api1:8080 ", "server " + target.upstreams[0] + " "},
			{"server api2:8080 ", "server " + target.upstreams[1] + " "},
		},
		"listen-http.conf": {
			{"listen 8080;", "listen " + target.httpAddr + ";"},
			{"listen [::]:8080;", listen(target.http6Addr, "")},
		},
		"listen-https.conf": {
			{"listen 8443 ssl http2;", "listen " + target.httpsAddr + " ssl http2;"},
			{"listen [::]:8443 ssl http2;", listen(target.https6Addr, " ssl http2")},
			{"/etc/nginx/certs/fullchain.pem", filepath.Join(dir, "certs", "fullchain.pem")},
			{"/etc/nginx/certs/privkey.pem", filepath.Join(dir, "certs", "privkey.pem")},
		},
	}
	for name, more := range target.edits {
		edits[name] = append(edits[name], more...)
	}
	for name, replacements := range edits {
		b, err := os.ReadFile(filepath.Join(nginxSrc, name))
		if err != nil {
			tb.Fatal(err)
		}
		text := string(b)
		for _, r := range replacements {
			if n := strings.Count(text, r[0]); n != 1 {
				tb.Fatalf("%s: %q occurs %d times, want once", name, r[0], n)
			}
			text = strings.Replace(text, r[0], r[1], 1)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	cert := writeTestCert(tb, filepath.Join(dir, "certs"))
	return dir, cert
}

// listen is the listen directive for addr with params, or nothing when addr is empty.
func listen(addr, params string) string {
	if addr == "" {
		return ""
	}
	return "listen " + addr + params + ";"
}

// writeTestCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1, ::1 and localhost, valid for an hour,
// as fullchain.pem and privkey.pem into dir.
func writeTestCert(tb testing.TB, dir string) *x509.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "deepersensor test"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "fullchain.pem"), certPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "privkey.pem"), keyPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// nginxArgs are the arguments that run the configuration in dir, in the foreground, with everything
// nginx writes kept inside dir.
func nginxArgs(dir string) []string {
	return []string{
		"-p", dir + "/", "-c", filepath.Join(dir, "nginx.conf"),
		"-g", "daemon off; pid " + filepath.Join(dir, "nginx.pid") + "; error_log stderr;",
	}
}

// requireNginx skips the test when nginx or its brotli module is not installed, or fails it in CI.
func requireNginx(tb testing.TB) {
	tb.Helper()
	testenv.RequireBinary(tb, nginxBin, "apt-get install -y nginx")
	testenv.RequireFile(tb, brotliModule, "apt-get install -y libnginx-mod-http-brotli-filter")
}

// checkNginxConfig runs `nginx -t` on the configuration in dir and fails tb unless it passes without warnings.
func checkNginxConfig(tb testing.TB, dir string) {
	tb.Helper()
	out, err := exec.Command(nginxBin, append([]string{"-t"}, nginxArgs(dir)...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("nginx -t: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("test is successful")) || bytes.Contains(out, []byte("[warn]")) {
		tb.Fatalf("nginx -t is not clean:\n%s", out)
	}
}

// startNginx checks and runs the configuration in dir as a child process until the test ends, and waits until
// it accepts connections on httpsAddr. It returns nginx's output (access log and error log).
func startNginx(tb testing.TB, dir, httpsAddr string) *testapp.SyncBuffer {
	tb.Helper()
	checkNginxConfig(tb, dir)
	out, exited := startProcess(tb, "nginx", exec.Command(nginxBin, nginxArgs(dir)...), 5*time.Second, func(out string) {
		for _, bad := range []string{"[emerg]", "[alert]", "[crit]"} {
			if strings.Contains(out, bad) {
				tb.Errorf("nginx logged %s", bad)
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", httpsAddr, time.Second)
		if err == nil {
			_ = conn.Close()
			return out
		}
		select {
		case err := <-exited:
			tb.Fatalf("nginx exited at start: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("nginx does not accept connections on %s after 10s\n%s", httpsAddr, out.String())
		}
	}
}

// startProcess starts cmd in a process group of its own, so that its children go with it whatever happens, and
// stops it with SIGTERM when tb ends (SIGKILL to the group after stopWithin, an error); check then looks at
// what it printed, which tb logs if it failed. exited receives cmd's end.
func startProcess(tb testing.TB, name string, cmd *exec.Cmd, stopWithin time.Duration, check func(out string)) (out *testapp.SyncBuffer, exited <-chan error) {
	tb.Helper()
	out = &testapp.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ended:
		case <-time.After(stopWithin):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-ended
			tb.Errorf("%s did not stop within %s of SIGTERM", name, stopWithin)
		}
		if check != nil {
			check(out.String())
		}
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, out.String())
		}
	})
	return out, ended
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := freeAddrOn("127.0.0.1")
	if err != nil {
		tb.Fatal(err)
	}
	return addr
}

// freeAddr6 returns a [::1] address with a port that was free a moment ago. Without IPv6 on the machine it
// skips the test, or fails it in CI.
func freeAddr6(tb testing.TB) string {
	tb.Helper()
	addr, err := freeAddrOn("::1")
	switch {
	case err == nil:
		return addr
	case testenv.InCI():
		tb.Fatalf("IPv6 is required in CI, but [::1] is unusable: %v", err)
	default:
		tb.Skipf("this test needs IPv6, but [::1] is unusable: %v", err)
	}
	return ""
}

// freeAddrOn returns ip:port with a port that was free a moment ago.
func freeAddrOn(ip string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
