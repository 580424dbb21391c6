// Package pgreplica gives a test a real streaming replica of the test PostgreSQL server (dbtest's): a
// pg_basebackup -R of it in a temporary directory, started with pg_ctl on a free loopback port, as the
// postgres user when the test runs as root. A physical replica copies every database, so a database that
// dbtest creates appears on it once replayed. The replica is stopped and its directory removed when the test
// ends, and a replica that a killed test process left behind is stopped, by the PID in its postmaster.pid,
// when the next one starts.
//
// Replication must be allowed from 127.0.0.1 for the user postgres (in pg_hba.conf:
// `host replication postgres 127.0.0.1/32 trust`, which .ci/run adds). Without it, or without PostgreSQL's
// programs, the test is skipped, and fails in CI.
package pgreplica

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/deepersensor/deepersensor/internal/dbtest"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// startTimeout bounds making and starting a replica; the base backup of the test server takes seconds.
const startTimeout = 2 * time.Minute

// dirPattern names the temporary directory of each replica; ownerFile in it holds the test process's PID.
const (
	dirPattern = "pgreplica-"
	ownerFile  = "owner.pid"
)

// standbySettings must be at least the primary's on a hot standby; the replica copies them.
var standbySettings = []string{
	"max_connections", "max_locks_per_transaction", "max_prepared_transactions", "max_wal_senders",
	"max_worker_processes",
}

// Replica is a running streaming replica of the test server.
type Replica struct {
	// Port is where it listens, on 127.0.0.1.
	Port int

	dir        string // data/, its log and its socket
	bin        string // PostgreSQL's programs, of the primary's major version
	asPostgres bool   // run them as the postgres user, since this process is root
}

// Start makes a replica of the test server and starts it. It is stopped, and its directory removed, when
// the test ends.
func Start(tb testing.TB) *Replica {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	primary, err := pgx.Connect(ctx, dbtest.AdminURL())
	if err != nil {
		tb.Fatalf("connect to the test PostgreSQL server: %v", err)
	}
	defer primary.Close(ctx)
	var versionNum int
	if err := primary.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&versionNum); err != nil {
		tb.Fatalf("read the server's version: %v", err)
	}
	major := versionNum / 10000
	r := &Replica{bin: fmt.Sprintf("/usr/lib/postgresql/%d/bin", major), asPostgres: os.Geteuid() == 0}
	install := fmt.Sprintf("apt-get install postgresql-%d", major)
	testenv.RequireBinary(tb, filepath.Join(r.bin, "pg_basebackup"), install)
	testenv.RequireBinary(tb, filepath.Join(r.bin, "pg_ctl"), install)
	if r.asPostgres {
		testenv.RequireBinary(tb, "runuser", "apt-get install util-linux")
	}
	removeStale(tb, r)

	if r.dir, err = os.MkdirTemp("", dirPattern); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.remove(tb) })
	if err := r.chown(r.dir); err != nil {
		tb.Fatal(err)
	}
	data := filepath.Join(r.dir, "data")
	out, err := r.run(ctx, "pg_basebackup", "-d", dbtest.AdminURL(), "-D", data, "-R", "-X", "stream", "-c", "fast", "--no-sync")
	if err != nil {
		if strings.Contains(out, "pg_hba.conf") {
			missing(tb, fmt.Sprintf("replication from 127.0.0.1 for the user postgres is not allowed (%s): add "+
				"`host replication postgres 127.0.0.1/32 trust` to pg_hba.conf and reload, as .ci/run does", strings.TrimSpace(out)))
		}
		tb.Fatalf("pg_basebackup: %v\n%s", err, out)
	}

	if r.Port, err = freePort(); err != nil {
		tb.Fatal(err)
	}
	conf := fmt.Sprintf("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nhot_standby = on\nfsync = off\n", r.Port, r.dir)
	for _, name := range standbySettings {
		var v string
		if err := primary.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			tb.Fatalf("read the server's %s: %v", name, err)
		}
		conf += fmt.Sprintf("%s = %s\n", name, v)
	}
	// Debian keeps the configuration outside the data directory, so the base backup has none.
	files := map[string]string{"postgresql.conf": conf, "pg_hba.conf": "local all all trust\nhost all all 127.0.0.1/32 trust\n"}
	for name, content := range files {
		path := filepath.Join(data, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := r.chown(path); err != nil {
			tb.Fatal(err)
		}
	}
	if out, err := r.run(ctx, "pg_ctl", "-D", data, "-l", filepath.Join(r.dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(r.dir, "log"))
		tb.Fatalf("start the replica: %v\n%s\n%s", err, out, log)
	}
	return r
}

// URL is databaseURL, a URL of the test server, with the replica's address: the same database on the
// replica.
func (r *Replica) URL(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		panic(fmt.Sprintf("pgreplica: parse %q: %v", databaseURL, err))
	}
	u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))
	return u.String()
}

// WaitReplayed waits until the replica has replayed everything the primary has flushed so far, such as the
// creation of the test's database.
func (r *Replica) WaitReplayed(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var flushed string
	if err := queryRow(ctx, dbtest.AdminURL(), "SELECT pg_current_wal_flush_lsn()::text", &flushed); err != nil {
		tb.Fatal(err)
	}
	for {
		var done bool
		err := queryRow(ctx, r.URL(dbtest.AdminURL()), "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &done, flushed)
		if err == nil && done {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("the replica did not replay %s within 30s (last error: %v)", flushed, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PauseReplay stops the replica from applying what it receives until ResumeReplay: it falls behind.
func (r *Replica) PauseReplay(tb testing.TB) { r.exec(tb, "SELECT pg_wal_replay_pause()") }

// ResumeReplay lets the replica catch up again.
func (r *Replica) ResumeReplay(tb testing.TB) { r.exec(tb, "SELECT pg_wal_replay_resume()") }

func (r *Replica) exec(tb testing.TB, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, r.URL(dbtest.AdminURL()))
	if err != nil {
		tb.Fatalf("connect to the replica: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s on the replica: %v", sql, err)
	}
}

// Stop stops the replica at once, as a crash would: connections to it break.
func (r *Replica) Stop(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := r.run(ctx, "pg_ctl", "-D", filepath.Join(r.dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
		tb.Fatalf("stop the replica: %v\n%s", err, out)
	}
}

// remove stops the replica if it runs, by the PID in its postmaster.pid (pg_ctl signals it, or else this
// kills it), and removes its directory.
func (r *Replica) remove(tb testing.TB) {
	tb.Helper()
	if pidFile, err := os.ReadFile(filepath.Join(r.dir, "data", "postmaster.pid")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := r.run(ctx, "pg_ctl", "-D", filepath.Join(r.dir, "data"), "-m", "immediate", "-w", "stop"); err != nil {
			first, _, _ := strings.Cut(string(pidFile), "\n")
			if pid, convErr := strconv.Atoi(first); convErr == nil && pid > 0 && syscall.Kill(pid, syscall.SIGKILL) == nil {
				tb.Logf("pg_ctl could not stop the replica in %s (%v: %s); killed its PID %d", r.dir, err, out, pid)
			} else {
				tb.Errorf("stop the replica in %s: %v\n%s", r.dir, err, out)
			}
		}
	}
	if err := os.RemoveAll(r.dir); err != nil {
		tb.Errorf("remove the replica's directory: %v", err)
	}
}

// removeStale stops and removes the replicas of test processes that no longer run.
func removeStale(tb testing.TB, r *Replica) {
	tb.Helper()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPattern+"*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being made, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(owner)))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue // its test still runs
		}
		stale := *r
		stale.dir = dir
		stale.remove(tb)
	}
}

// run runs one of PostgreSQL's programs, as the postgres user when this process is root, and returns its
// output.
func (r *Replica) run(ctx context.Context, program string, args ...string) (string, error) {
	path := filepath.Join(r.bin, program)
	cmd := exec.CommandContext(ctx, path, args...)
	if r.asPostgres {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	cmd.Dir = r.dir // the postgres user may not be allowed into the test's working directory
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// chown gives path to the postgres user when PostgreSQL's programs run as it.
func (r *Replica) chown(path string) error {
	if !r.asPostgres {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("look up the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("give %s to the postgres user: %w", path, err)
	}
	return nil
}

// missing skips the test for want of what, or fails it in CI.
func missing(tb testing.TB, what string) {
	tb.Helper()
	if testenv.InCI() {
		tb.Fatalf("required in CI: %s", what)
	}
	tb.Skipf("skipped: %s", what)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func queryRow(ctx context.Context, databaseURL, sql string, dest any, args ...any) error {
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql, args...).Scan(dest)
}
