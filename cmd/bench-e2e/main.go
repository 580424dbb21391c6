// Command bench-e2e measures what the gateway adds to a model call, end to end on loopback: it builds the
// server from this checkout, runs it as a process of its own with a fresh database in front of a fast fake
// model server, sends the same load straight to the fake and through the gateway in alternating rounds, and
// writes a Markdown report (to stdout, and to -out) that puts each figure beside its target.
//
//	go run ./cmd/bench-e2e -out docs/performance.md   # what `make bench-e2e` runs, about 7 minutes
//	BENCH_QUICK=1 go run ./cmd/bench-e2e              # a smoke run of every scenario, about 2 minutes
//	go run ./cmd/bench-e2e -only 'native-chat-500$' -cpuprofile cpu.out   # profile the gateway under load
//
// It needs PostgreSQL (the server of -database-url, default that of the tests) and the Go toolchain; it
// talks to nothing but loopback addresses.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deepersensor/deepersensor/internal/benche2e"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// defaultDatabaseURL is the PostgreSQL server of the tests, where the run's database is created.
const defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// envList collects repeated -env flags.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }

func (e *envList) Set(v string) error {
	if !strings.HasPrefix(v, "DS_") || !strings.Contains(v, "=") {
		return fmt.Errorf("%q is not DS_NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-e2e", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick, _ := strconv.ParseBool(os.Getenv("BENCH_QUICK"))
	fs.BoolVar(&quick, "quick", quick, "a smoke run: one short round per side, fewer slow streams and logins (also BENCH_QUICK=1)")
	round := fs.Duration("round", 0, "length of each measured round (default 5s, or 1s with -quick)")
	rounds := fs.Int("rounds", 0, "measured rounds per side and scenario (default 2, or 1 with -quick)")
	only := fs.String("only", "", "run only the scenarios whose names match this regular expression, such as 'native-chat|streams'")
	rates := fs.String("rates", "", "calls a second of the open-loop scenarios, comma-separated (default 500,1000,2000)")
	slow := fs.Int("slow-streams", 0, "streams held open at once (default 10000, or 1000 with -quick)")
	out := fs.String("out", "", "also write the report to this file, such as docs/performance.md")
	serverBin := fs.String("server-bin", "", "the server to measure; default: build ./cmd/deepersensor from this checkout")
	dbURL := fs.String("database-url", cmp.Or(os.Getenv("DS_TEST_DATABASE_URL"), defaultDatabaseURL),
		"PostgreSQL server on which the run's database is created (default $DS_TEST_DATABASE_URL or the local server)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the gateway during its first measured round to this file "+
		"(builds the server with the pprof tag)")
	logDir := fs.String("logdir", "", "keep the gateway's output in DIR/gateway.log (default: a temporary directory, removed)")
	var env envList
	fs.Var(&env, "env", "a DS_NAME=VALUE setting of the gateway, over the bench's own (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	cfg := benche2e.Full()
	if quick {
		cfg = benche2e.Quick()
	}
	if *round > 0 {
		cfg.Round = *round
	}
	if *rounds > 0 {
		cfg.Rounds = *rounds
	}
	if *rates != "" {
		cfg.Rates = nil
		for f := range strings.SplitSeq(*rates, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				fmt.Fprintf(stderr, "-rates: %q is not a positive number\n", f)
				return 2
			}
			cfg.Rates = append(cfg.Rates, n)
		}
	}
	if *slow > 0 {
		cfg.SlowStreams = *slow
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintln(stderr, "-only:", err)
			return 2
		}
		cfg.Only = re
	}
	tmp, err := os.MkdirTemp("", "bench-e2e-")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin := *serverBin
	if *cpuProfile != "" {
		cfg.CPUProfile, cfg.ProfileAddr = *cpuProfile, "127.0.0.1:6061"
	}
	if bin == "" {
		if bin, err = build(ctx, tmp, *cpuProfile != "", stderr); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	cfg.Gateway = benche2e.GatewaySpec{Command: []string{bin}, Env: env, AdminDatabaseURL: *dbURL, LogDir: cmp.Or(*logDir, tmp)}
	cfg.Log = stderr

	rep, err := benche2e.Run(ctx, cfg)
	if rep != nil {
		rep.Command = strings.TrimSpace("go run ./cmd/bench-e2e " + strings.Join(args, " "))
		rep.Commit = benche2e.Commit(".")
		if werr := rep.Markdown(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench-e2e:", err)
		if data, rerr := os.ReadFile(filepath.Join(cfg.Gateway.LogDir, "gateway.log")); rerr == nil {
			fmt.Fprintf(stderr, "last lines of the gateway's log:\n%s\n", tail(string(data), 20))
		}
		return 1
	}
	if *out != "" {
		err := os.MkdirAll(filepath.Dir(*out), 0o755)
		var f *os.File
		if err == nil {
			f, err = os.Create(*out)
		}
		if err == nil {
			err = rep.Markdown(f)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench-e2e: write report:", err)
			return 1
		}
		fmt.Fprintf(stderr, "report written to %s\n", *out)
	}
	return 0
}

// build builds the server from this checkout into dir, with net/http/pprof when profiled.
func build(ctx context.Context, dir string, profiled bool, stderr io.Writer) (string, error) {
	bin := filepath.Join(dir, "deepersensor")
	args := []string{"build", "-trimpath", "-o", bin}
	if profiled {
		args = append(args, "-tags", "pprof")
	}
	args = append(args, "./cmd/deepersensor")
	fmt.Fprintf(stderr, "go %s\n", strings.Join(args, " "))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the server: %w", err)
	}
	fmt.Fprintf(stderr, "built in %s\n", time.Since(start).Round(time.Millisecond))
	return bin, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
