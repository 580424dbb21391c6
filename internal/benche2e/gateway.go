package benche2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/procfs"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: 100 per second on every Linux the server runs on.
const userHZ = 100

// Gateway is the server under test: a process of its own, so that its CPU time and memory, read from
// /proc, are its alone and not the load generator's or the fake upstream's.
type Gateway struct {
	URL     string // the root, such as http://127.0.0.1:41235
	LogPath string // where its output goes
	spec    GatewaySpec
	env     []string
	cmd     *exec.Cmd
	proc    procfs.Proc
	exited  chan struct{}
	waitErr error
	dropDB  func() error
}

// GatewaySpec says how to start the gateway.
type GatewaySpec struct {
	// Command is the server's program and its arguments; its environment is this process's without DS_*
	// variables, then Env.
	Command []string
	Env     []string
	// AdminDatabaseURL is the PostgreSQL server on which a fresh database is created for the run and dropped
	// after it.
	AdminDatabaseURL string
	// LogDir receives the server's output, in gateway.log.
	LogDir string
}

// StartGateway creates a fresh database, starts the gateway on a free loopback port and waits until it is
// ready.
func StartGateway(ctx context.Context, spec GatewaySpec) (*Gateway, error) {
	dbURL, dropDB, err := createDatabase(ctx, spec.AdminDatabaseURL)
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, errors.Join(err, dropDB())
	}
	g := &Gateway{URL: "http://" + addr, LogPath: filepath.Join(spec.LogDir, "gateway.log"), spec: spec, dropDB: dropDB}
	g.env = append(withoutDS(os.Environ()), "DS_HTTP_ADDR="+addr, "DS_DATABASE_URL="+dbURL)
	g.env = append(g.env, spec.Env...)
	if err := g.start(ctx); err != nil {
		return nil, errors.Join(err, dropDB())
	}
	return g, nil
}

// start starts the gateway's process, its output appended to the log, and waits until it is ready.
func (g *Gateway) start(ctx context.Context) error {
	logFile, err := os.OpenFile(g.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("gateway log: %w", err)
	}
	defer logFile.Close()
	g.cmd = exec.Command(g.spec.Command[0], g.spec.Command[1:]...)
	g.cmd.Env = g.env
	g.cmd.Stdout, g.cmd.Stderr = logFile, logFile
	if err := g.cmd.Start(); err != nil {
		return fmt.Errorf("start gateway %s: %w", g.spec.Command[0], err)
	}
	exited, cmd := make(chan struct{}), g.cmd
	g.exited, g.waitErr = exited, nil
	go func() {
		g.waitErr = cmd.Wait()
		close(exited)
	}()
	if g.proc, err = procfs.NewProc(cmd.Process.Pid); err != nil {
		g.stopProcess()
		return fmt.Errorf("gateway process: %w", err)
	}
	if err := g.waitReady(ctx, time.Minute); err != nil {
		g.stopProcess()
		return err
	}
	return nil
}

// Restart stops the gateway and starts it again on the same database and address, so that a scenario
// measures memory that the ones before did not leave behind.
func (g *Gateway) Restart(ctx context.Context) error {
	if err := g.stopProcess(); err != nil {
		return err
	}
	return g.start(ctx)
}

// withoutDS drops the DS_* variables of env, so that the developer's own settings do not change the run.
func withoutDS(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DS_") {
			out = append(out, kv)
		}
	}
	return out
}

// freeAddr finds a free port on 127.0.0.1.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	return addr, ln.Close()
}

// waitReady polls /readyz until it answers 200, the process exits or the timeout passes.
func (g *Gateway) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/readyz", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-g.exited:
			return fmt.Errorf("gateway exited before it was ready (%v); see %s", g.waitErr, g.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("gateway not ready within %s; see %s", timeout, g.LogPath)
		case <-tick.C:
		}
	}
}

// Stop ends the gateway and drops its database.
func (g *Gateway) Stop() error {
	return errors.Join(g.stopProcess(), g.dropDB())
}

// stopProcess ends the gateway gracefully (SIGTERM), killing it if it has not exited within 15 seconds; an
// exit other than a clean one is an error.
func (g *Gateway) stopProcess() error {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(15 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	if g.waitErr != nil {
		return fmt.Errorf("gateway: %w; see %s", g.waitErr, g.LogPath)
	}
	return nil
}

// CPU is the CPU time the gateway has used so far, user and system, at /proc's resolution of 10 ms.
func (g *Gateway) CPU() (time.Duration, error) {
	st, err := g.proc.Stat()
	if err != nil {
		return 0, fmt.Errorf("gateway cpu: %w", err)
	}
	return time.Duration(st.UTime+st.STime) * time.Second / userHZ, nil
}

// Memory returns the gateway's resident memory now and its peak (VmRSS, VmHWM), in bytes.
func (g *Gateway) Memory() (rss, peak uint64, err error) {
	st, err := g.proc.NewStatus()
	if err != nil {
		return 0, 0, fmt.Errorf("gateway memory: %w", err)
	}
	return st.VmRSS, st.VmHWM, nil
}

// ResetPeak sets the gateway's peak resident memory (VmHWM) back to what it uses now, so that the next
// Memory reports the peak from here on.
func (g *Gateway) ResetPeak() error {
	if err := os.WriteFile("/proc/"+strconv.Itoa(g.proc.PID)+"/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset gateway peak memory: %w", err)
	}
	return nil
}

// createDatabase creates an empty database named ds_bench_<time>_<random> on the server of adminURL and
// returns its URL and a func that drops it.
func createDatabase(ctx context.Context, adminURL string) (string, func() error, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("database url: %w", err)
	}
	name := fmt.Sprintf("ds_bench_%d_%s", time.Now().Unix(), strings.ToLower(rand.Text()[:6]))
	admin := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", u.Redacted(), err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	}
	ident := pgx.Identifier{name}.Sanitize()
	if err := admin("CREATE DATABASE " + ident); err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), func() error { return admin("DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)") }, nil
}

// raiseFileLimit lifts this process's limit of open files (inherited by the gateway) to want, or as far as
// it may, and returns the limit it has.
func raiseFileLimit(want uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want
		}
	}
	lim.Cur = lim.Max
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return lim.Cur
}
