package benche2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/app"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/internal/dbtest"
)

// serveEnv makes the test binary serve the gateway instead of running tests: the harness measures a
// process of its own, and the test needs no toolchain to build one.
const serveEnv = "BENCHE2E_TEST_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		os.Exit(serve())
	}
	os.Exit(m.Run())
}

// serve runs the gateway as cmd/deepersensor does, until SIGTERM.
func serve() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: cfg.SlogLevel()}))
	if err := app.Run(ctx, cfg, logger); err != nil {
		logger.Error("server stopped", "error", err)
		return 1
	}
	return 0
}

// TestQuickRun runs the harness in its quickest form, a few scenarios of a second, against the gateway (this
// test binary, built with the race detector in `make test`, so the figures mean nothing) and checks that
// every part of the report was measured.
func TestQuickRun(t *testing.T) {
	cfg := Quick()
	cfg.Round, cfg.Warmup, cfg.Rounds = time.Second, 200*time.Millisecond, 1
	cfg.Rates, cfg.Workers = []int{40}, 4
	cfg.Streams, cfg.StreamTokens, cfg.TokenInterval = []int{3}, 20, time.Millisecond
	cfg.SlowStreams, cfg.SlowInterval, cfg.LoginFlood, cfg.Users, cfg.Settle = 50, 200*time.Millisecond, 20, 2, time.Second
	cfg.Only = regexp.MustCompile(`^(native-chat-40|openai-ceiling|native-streams-3|login-flood|slow-streams)$`)
	cfg.Gateway = GatewaySpec{
		Command: []string{os.Args[0]}, Env: []string{serveEnv + "=1"},
		AdminDatabaseURL: dbtest.AdminURL(), LogDir: t.TempDir(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rep.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	t.Log(md)

	if len(rep.Calls) != 1 || len(rep.Ceilings) != 1 || len(rep.Streams) != 1 || rep.Flood == nil || rep.Slow == nil {
		t.Fatalf("scenarios run: %d open-loop, %d ceilings, %d streams, flood %v, slow %v; want one of each",
			len(rep.Calls), len(rep.Ceilings), len(rep.Streams), rep.Flood != nil, rep.Slow != nil)
	}
	for _, want := range []string{
		"| native chat at 500/s: added latency p50 / p99, CPU per call | ≤ +0.8 ms / ≤ +3 ms, ≤ 300 µs | — | not measured |",
		"| native | 40/s |", "| openai | 4 |", "| 3 | 20 (1ms) |", "## Login flood", "## Open streams",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if missed, why := strings.Contains(md, "**not met**"), strings.Contains(md, "## Why targets are not met"); missed != why {
		t.Errorf("a target not met: %v; the section on why: %v; want both or neither", missed, why)
	}
	for _, c := range append(rep.Calls, rep.Ceilings...) {
		for side, s := range map[string]sample{"direct": c.Direct, "gateway": c.Gateway} {
			if len(s.latencies) == 0 || s.failed > 0 {
				t.Errorf("%s %d/s %d workers, %s: %d calls answered, %d failed (%s)", c.Path, c.Rate, c.Workers, side,
					len(s.latencies), s.failed, s.firstErr)
			}
		}
		if c.Gateway.cpu <= 0 {
			t.Errorf("%s %d/s %d workers: no gateway CPU time measured", c.Path, c.Rate, c.Workers)
		}
	}
	for side, s := range map[string]streamSample{"direct": rep.Streams[0].Direct, "gateway": rep.Streams[0].Gateway} {
		if len(s.ttft) == 0 || s.failed > 0 || s.tokens != 20*len(s.ttft) {
			t.Errorf("streams, %s: %d ended well with %d tokens, %d failed (%s)", side, len(s.ttft), s.tokens, s.failed, s.firstErr)
		}
	}
	// How many logins get past the hashing queue depends on the machine; each must have one of the answers.
	answered := 0
	for _, n := range rep.Flood.Statuses {
		answered += n
	}
	if f := rep.Flood; f.Unexpected() > 0 || answered != f.Logins || f.PeakRSS == 0 {
		t.Errorf("login flood: statuses %v, %d unanswered (%s), peak RSS %d", f.Statuses, f.Errors, f.FirstErr, f.PeakRSS)
	}
	if s := rep.Slow; s.Open != 50 || s.Failed > 0 || s.RSS == 0 {
		t.Errorf("slow streams: %d of %d open, %d failed (%s), RSS %d", s.Open, s.Tried, s.Failed, s.FirstErr, s.RSS)
	}
	if peak, _ := rep.peak(); peak == 0 {
		t.Error("no peak RSS recorded")
	}
}

// TestReportExplainsOnlyMisses checks that a report with no target missed (here: none measured) carries no
// explanation of misses; TestQuickRun checks the other way.
func TestReportExplainsOnlyMisses(t *testing.T) {
	var b strings.Builder
	if err := (&Report{Config: Quick()}).Markdown(&b); err != nil {
		t.Fatal(err)
	}
	if md := b.String(); strings.Contains(md, "**not met**") || strings.Contains(md, "## Why targets are not met") {
		t.Errorf("a report of nothing measured misses a target or explains misses:\n%s", md)
	}
}
