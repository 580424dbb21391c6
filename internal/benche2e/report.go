package benche2e

import (
	_ "embed"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// whyNotMet explains the targets this machine and this design do not meet; the report carries it whenever a
// target is not met. Keep it true when the figures change.
//
//go:embed why.md
var whyNotMet string

// Report is what a run measured.
type Report struct {
	Config     Config
	Command    string // how the run was started, for the report
	Commit     string
	Machine    Machine
	Started    time.Time
	Finished   time.Time
	LoadBefore string
	LoadAfter  string
	FileLimit  uint64   // the limit of open files of the load generator and the gateway
	GatewayEnv []string // the gateway's settings for the run

	Calls    []CallResult // open loop
	Ceilings []CallResult // closed loop
	Streams  []StreamResult
	Flood    *FloodResult
	Slow     *SlowResult
}

// CallResult is a scenario of non-streamed calls on one path: open loop at Rate, or closed loop with
// Workers when Rate is 0.
type CallResult struct {
	Path            string
	Rate, Workers   int
	Direct, Gateway sample
	PeakRSS         uint64 // the gateway's peak resident memory during the scenario
}

// StreamResult is a scenario of Concurrency streams of Tokens tokens, one every Interval.
type StreamResult struct {
	Path            string
	Concurrency     int
	Tokens          int
	Interval        time.Duration
	Direct, Gateway streamSample
	PeakRSS         uint64 // the gateway's peak resident memory during the scenario
}

// SlowResult is the memory of open streams: Wanted were asked for, Tried were started (fewer when the limit
// of open files did not allow them), Open were open when RSS was read, from BaseRSS before.
type SlowResult struct {
	Wanted, Tried, Open, Failed int
	FirstErr                    string
	FileLimit                   uint64
	RampTime                    time.Duration
	BaseRSS, RSS                uint64
	PeakRSS                     uint64
}

// PerStream is the gateway's resident memory per open stream.
func (s SlowResult) PerStream() uint64 {
	if s.Open == 0 || s.RSS < s.BaseRSS {
		return 0
	}
	return (s.RSS - s.BaseRSS) / uint64(s.Open)
}

// FloodResult is a flood of Logins logins at once: the statuses they were answered, the calls that got no
// answer, and the gateway's peak memory meanwhile.
type FloodResult struct {
	Logins   int
	Statuses map[int]int
	Errors   int
	FirstErr string
	Elapsed  time.Duration
	PeakRSS  uint64
}

// expectedLoginStatuses are the answers a login may get under a flood.
var expectedLoginStatuses = []int{200, 401, 429, 503}

// Unexpected counts the logins answered otherwise, or not at all.
func (f FloodResult) Unexpected() int {
	n := f.Errors
	for status, count := range f.Statuses {
		if !slices.Contains(expectedLoginStatuses, status) {
			n += count
		}
	}
	return n
}

// percentile returns the p-th percentile (nearest rank) of ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(p/100*float64(len(ds))+0.5) - 1
	return ds[min(max(rank, 0), len(ds)-1)]
}

// quantiles are p50, p90 and p99.
type quantiles [3]time.Duration

func quantilesOf(ds []time.Duration) quantiles {
	return quantiles{percentile(ds, 50), percentile(ds, 90), percentile(ds, 99)}
}

func (q quantiles) minus(o quantiles) quantiles {
	return quantiles{q[0] - o[0], q[1] - o[1], q[2] - o[2]}
}

func (q quantiles) String() string {
	return fmt.Sprintf("%s / %s / %s", ms(q[0]), ms(q[1]), ms(q[2]))
}

func (q quantiles) signed() string {
	return fmt.Sprintf("%s / %s / %s", plusMs(q[0]), plusMs(q[1]), plusMs(q[2]))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func plusMs(d time.Duration) string {
	return fmt.Sprintf("%+.2f ms", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b uint64) string { return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10)) }

// added is the latency the gateway adds at p50, p90 and p99.
func (c CallResult) added() quantiles {
	return quantilesOf(c.Gateway.latencies).minus(quantilesOf(c.Direct.latencies))
}

// cpuPerCall is the gateway's CPU time per call of its rounds.
func (c CallResult) cpuPerCall() time.Duration {
	return perCall(c.Gateway.cpu, c.Gateway.calls())
}

func perCall(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// throughput is the calls a second that succeeded on a side.
func throughput(s sample) float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(len(s.latencies)) / s.elapsed.Seconds()
}

// share is the gateway's throughput as a share of the direct one.
func (c CallResult) share() float64 {
	if d := throughput(c.Direct); d > 0 {
		return throughput(c.Gateway) / d
	}
	return 0
}

func (s StreamResult) addedTTFT() quantiles {
	return quantilesOf(s.Gateway.ttft).minus(quantilesOf(s.Direct.ttft))
}

func (s StreamResult) cpuPerStream() time.Duration {
	return perCall(s.Gateway.cpu, len(s.Gateway.ttft)+s.Gateway.failed)
}

func (s StreamResult) cpuPerToken() time.Duration {
	return perCall(s.Gateway.cpu, s.Gateway.tokens)
}

// check is one figure of the table beside its target.
type check struct {
	figure, target, measured string
	met                      *bool // nil when not measured
}

func (c check) status() string {
	switch {
	case c.met == nil:
		return "not measured"
	case *c.met:
		return "met"
	default:
		return "**not met**"
	}
}

func checked(figure, target, measured string, met bool) check {
	return check{figure: figure, target: target, measured: measured, met: &met}
}

func (r *Report) call(path string, rate int) *CallResult {
	for i := range r.Calls {
		if r.Calls[i].Path == path && r.Calls[i].Rate == rate {
			return &r.Calls[i]
		}
	}
	return nil
}

func (r *Report) ceiling(path string) *CallResult {
	for i := range r.Ceilings {
		if r.Ceilings[i].Path == path {
			return &r.Ceilings[i]
		}
	}
	return nil
}

// name says which scenario a CallResult is.
func (c CallResult) name() string {
	if c.Rate == 0 {
		return fmt.Sprintf("%s closed loop, %d workers", c.Path, c.Workers)
	}
	return fmt.Sprintf("%s at %d/s", c.Path, c.Rate)
}

// peak is the gateway's highest peak memory over the scenarios of calls and streams, and the scenario it
// was reached in; zero when none ran.
func (r *Report) peak() (uint64, string) {
	var peak uint64
	var where string
	for _, c := range append(append([]CallResult(nil), r.Calls...), r.Ceilings...) {
		if c.PeakRSS > peak {
			peak, where = c.PeakRSS, c.name()
		}
	}
	for _, s := range r.Streams {
		if s.PeakRSS > peak {
			peak, where = s.PeakRSS, fmt.Sprintf("%d concurrent streams", s.Concurrency)
		}
	}
	return peak, where
}

// checks compares the figures with the targets of issue 13 (native path) and of the OpenAI-compatible path.
func (r *Report) checks() []check {
	var out []check
	notMeasured := func(figure, target string) { out = append(out, check{figure: figure, target: target, measured: "—"}) }

	if c := r.call(native, 500); c != nil {
		a := c.added()
		out = append(out,
			checked("native chat at 500/s: added latency p50", "≤ +0.8 ms", plusMs(a[0]), a[0] <= 800*time.Microsecond),
			checked("native chat at 500/s: added latency p99", "≤ +3 ms", plusMs(a[2]), a[2] <= 3*time.Millisecond),
			checked("native chat: gateway CPU per call (at 500/s)", "≤ 300 µs", us(c.cpuPerCall()), c.cpuPerCall() <= 300*time.Microsecond))
	} else {
		notMeasured("native chat at 500/s: added latency p50 / p99, CPU per call", "≤ +0.8 ms / ≤ +3 ms, ≤ 300 µs")
	}
	if c := r.call(native, 1000); c != nil {
		a := c.added()
		out = append(out, checked("native chat at 1,000/s: added latency p99, errors", "≤ +10 ms, none",
			fmt.Sprintf("%s, %d", plusMs(a[2]), c.Gateway.failed), a[2] <= 10*time.Millisecond && c.Gateway.failed == 0))
	} else {
		notMeasured("native chat at 1,000/s: added latency p99, errors", "≤ +10 ms, none")
	}
	if c := r.ceiling(native); c != nil {
		out = append(out, checked(fmt.Sprintf("native closed-loop ceiling (%d workers), share of direct", c.Workers), "≥ 0.06x",
			fmt.Sprintf("%.3fx (%.0f/s of %.0f/s)", c.share(), throughput(c.Gateway), throughput(c.Direct)), c.share() >= 0.06))
	} else {
		notMeasured("native closed-loop ceiling, share of direct", "≥ 0.06x")
	}
	var s20 *StreamResult
	for i := range r.Streams {
		if r.Streams[i].Concurrency == 20 {
			s20 = &r.Streams[i]
		}
	}
	if s20 != nil {
		a := s20.addedTTFT()
		out = append(out,
			checked("20 concurrent streams: added time to first token, p50", "≤ +1.5 ms", plusMs(a[0]), a[0] <= 1500*time.Microsecond),
			checked(fmt.Sprintf("gateway CPU per %d-token stream (20 concurrent)", s20.Tokens), "≤ 3 ms", ms(s20.cpuPerStream()),
				s20.cpuPerStream() <= 3*time.Millisecond))
	} else {
		notMeasured("20 concurrent streams: added time to first token p50, CPU per stream", "≤ +1.5 ms, ≤ 3 ms")
	}
	if peak, where := r.peak(); peak > 0 {
		out = append(out, checked("gateway peak RSS over the runs of calls and streams", "≤ 64 MiB",
			fmt.Sprintf("%s (%s)", mib(peak), where), peak <= 64<<20))
	} else {
		notMeasured("gateway peak RSS over the runs of calls and streams", "≤ 64 MiB")
	}
	if c := r.call(openai, 1000); c != nil {
		a := c.added()
		out = append(out,
			checked("OpenAI-compatible chat at 1,000/s: added latency p50", "≤ +0.2 ms", plusMs(a[0]), a[0] <= 200*time.Microsecond),
			checked("OpenAI-compatible chat: gateway CPU per call (at 1,000/s)", "≤ 75 µs", us(c.cpuPerCall()), c.cpuPerCall() <= 75*time.Microsecond))
	} else {
		notMeasured("OpenAI-compatible chat at 1,000/s: added latency p50, CPU per call", "≤ +0.2 ms, ≤ 75 µs")
	}
	if c := r.ceiling(openai); c != nil {
		out = append(out, checked(fmt.Sprintf("OpenAI-compatible closed-loop ceiling (%d workers), share of direct", c.Workers), "≥ 0.35x",
			fmt.Sprintf("%.3fx (%.0f/s of %.0f/s)", c.share(), throughput(c.Gateway), throughput(c.Direct)), c.share() >= 0.35))
	} else {
		notMeasured("OpenAI-compatible closed-loop ceiling, share of direct", "≥ 0.35x")
	}
	if s := r.Slow; s != nil {
		out = append(out, checked(fmt.Sprintf("gateway RSS per open stream (%d open)", s.Open), "≤ 32 KiB",
			kib(s.PerStream()), s.Open > 0 && s.PerStream() <= 32<<10))
	} else {
		notMeasured("gateway RSS per open stream (10,000 open)", "≤ 32 KiB")
	}
	if f := r.Flood; f != nil {
		out = append(out,
			checked(fmt.Sprintf("%d-way login flood: gateway peak RSS", f.Logins), "< 300 MiB", mib(f.PeakRSS), f.PeakRSS < 300<<20),
			checked(fmt.Sprintf("%d-way login flood: answers other than 200, 401, 429, 503", f.Logins), "none",
				fmt.Sprint(f.Unexpected()), f.Unexpected() == 0))
	} else {
		notMeasured("login flood: peak RSS, answers other than 200, 401, 429, 503", "< 300 MiB, none")
	}
	return out
}

// Markdown writes the report.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	cfg := r.Config
	fmt.Fprintf(&b, "# Performance\n\n")
	fmt.Fprintf(&b, "What the gateway adds to a model call, measured end to end by `make bench-e2e` (`cmd/bench-e2e`): "+
		"a fast fake model server (Ollama's and OpenAI's APIs) runs in the load generator's process, the gateway is "+
		"built from the checkout and runs as a process of its own with a fresh PostgreSQL database, and the same load "+
		"goes straight to the fake and through the gateway in alternating rounds, on loopback. "+
		"Regenerate this file with the command below on a quiet machine.\n\n")
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| date | %s (took %s) |\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Finished.Sub(r.Started).Round(time.Second))
	fmt.Fprintf(&b, "| machine | %s |\n", r.Machine)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s before the scenarios, %s after |\n", r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(&b, "| commit | %s |\n", r.Commit)
	fmt.Fprintf(&b, "| command | `%s` |\n", r.Command)
	fmt.Fprintf(&b, "| rounds | %d of %s per side and scenario, alternating direct and gateway, after a %s warm-up of each |\n",
		cfg.Rounds, cfg.Round, cfg.Warmup)
	fmt.Fprintf(&b, "| load | spread over %d accounts; native calls with access tokens, OpenAI-compatible calls with API keys |\n", cfg.Users)
	fmt.Fprintf(&b, "| gateway settings | `%s` (the rest default; login limits default) |\n", strings.Join(redactEnv(r.GatewayEnv), " "))
	fmt.Fprintf(&b, "\nAdded latency is a percentile through the gateway minus the same percentile direct. Gateway CPU is "+
		"utime+stime of its process (`/proc/<pid>/stat`, 10 ms ticks) over its measured rounds, divided by the calls or "+
		"streams of those rounds; PostgreSQL's CPU is not in it. Peak RSS is `VmHWM` of `/proc/<pid>/status`, reset "+
		"(`clear_refs`) when each scenario starts. Each scenario runs on a freshly started gateway (same database), "+
		"warmed up by a few calls, so that what one scenario leaves behind (memory Go keeps, a backlog) does not count "+
		"in the next.\n\n")

	fmt.Fprintf(&b, "## Targets\n\n| figure | target | measured | |\n|---|---|---|---|\n")
	missed := false
	for _, c := range r.checks() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.figure, c.target, c.measured, c.status())
		missed = missed || c.met != nil && !*c.met
	}
	if missed {
		fmt.Fprintf(&b, "\n## Why targets are not met\n\n%s", whyNotMet)
	}

	if len(r.Calls) > 0 {
		fmt.Fprintf(&b, "\n## Non-streamed chat, open loop\n\n")
		fmt.Fprintf(&b, "Native: `POST /v1/chat` (a conversation and both messages stored) against Ollama's `POST /api/chat`. "+
			"OpenAI-compatible: `POST /openai/v1/chat/completions` (nothing stored) against the fake's `POST /v1/chat/completions`.\n\n")
		fmt.Fprintf(&b, "| path | rate | calls (failed) | direct p50 / p90 / p99 | gateway p50 / p90 / p99 | added p50 / p90 / p99 | gateway CPU per call | peak RSS |\n")
		fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Calls {
			fmt.Fprintf(&b, "| %s | %d/s | %d (%d) | %s | %s | %s | %s | %s |\n", c.Path, c.Rate, c.Gateway.calls(), c.Gateway.failed,
				quantilesOf(c.Direct.latencies), quantilesOf(c.Gateway.latencies), c.added().signed(), us(c.cpuPerCall()), mib(c.PeakRSS))
		}
		writeFailures(&b, r.Calls)
	}
	if len(r.Ceilings) > 0 {
		fmt.Fprintf(&b, "\n## Closed-loop ceiling\n\nEach worker sends its next call when the last is answered.\n\n")
		fmt.Fprintf(&b, "| path | workers | direct calls/s | gateway calls/s | share | gateway p50 / p90 / p99 | gateway CPU per call | peak RSS |\n")
		fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Ceilings {
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.3fx | %s | %s | %s |\n", c.Path, c.Workers, throughput(c.Direct), throughput(c.Gateway),
				c.share(), quantilesOf(c.Gateway.latencies), us(c.cpuPerCall()), mib(c.PeakRSS))
		}
		writeFailures(&b, r.Ceilings)
	}
	if len(r.Streams) > 0 {
		fmt.Fprintf(&b, "\n## Streams\n\nNative `POST /v1/chat/stream` against Ollama's streamed `POST /api/chat`; each worker "+
			"streams one answer after another. Time to first token is measured to the first content chunk (the first "+
			"`delta` event through the gateway).\n\n")
		fmt.Fprintf(&b, "| concurrent | tokens (interval) | streams (failed) | direct TTFT p50 / p90 / p99 | added TTFT p50 / p90 / p99 | gateway CPU per stream | per token | peak RSS |\n")
		fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.Streams {
			fmt.Fprintf(&b, "| %d | %d (%s) | %d (%d) | %s | %s | %s | %s | %s |\n", s.Concurrency, s.Tokens, s.Interval,
				len(s.Gateway.ttft)+s.Gateway.failed, s.Gateway.failed, quantilesOf(s.Direct.ttft), s.addedTTFT().signed(),
				ms(s.cpuPerStream()), us(s.cpuPerToken()), mib(s.PeakRSS))
			for _, side := range []struct {
				name string
				s    streamSample
			}{{"direct", s.Direct}, {"gateway", s.Gateway}} {
				if side.s.failed > 0 {
					fmt.Fprintf(&b, "\n%d concurrent, %s: %d failed, the first with `%s`\n", s.Concurrency, side.name, side.s.failed, oneLine(side.s.firstErr))
				}
			}
		}
	}
	if f := r.Flood; f != nil {
		fmt.Fprintf(&b, "\n## Login flood\n\n%d logins at once, each from a loopback address of its own, half with a wrong "+
			"password, with the default limits and password hashing settings. Answered in %s:", f.Logins, f.Elapsed.Round(time.Millisecond))
		statuses := make([]int, 0, len(f.Statuses))
		for s := range f.Statuses {
			statuses = append(statuses, s)
		}
		slices.Sort(statuses)
		for _, s := range statuses {
			fmt.Fprintf(&b, " %d × %d;", f.Statuses[s], s)
		}
		fmt.Fprintf(&b, " %d without an answer. Gateway peak RSS %s.\n", f.Errors, mib(f.PeakRSS))
		if f.FirstErr != "" {
			fmt.Fprintf(&b, "\nFirst call without an answer: `%s`\n", oneLine(f.FirstErr))
		}
	}
	if s := r.Slow; s != nil {
		fmt.Fprintf(&b, "\n## Open streams\n\n%d native streams opened, at most 256 at a time (in %s), each "+
			"sent a token every %s, and held open: %d open when the memory was read, %d failed. Gateway RSS %s before, %s "+
			"with them open (peak %s): %s per open stream.\n", s.Tried, s.RampTime.Round(time.Millisecond),
			r.Config.SlowInterval, s.Open, s.Failed, mib(s.BaseRSS), mib(s.RSS), mib(s.PeakRSS), kib(s.PerStream()))
		if s.Tried < s.Wanted {
			fmt.Fprintf(&b, "\nOnly %d of the %d streams asked for were tried: the limit of open files here is %d, each stream "+
				"takes two descriptors in the gateway and two in the load generator, and the streams are opened for %s at "+
				"most.\n", s.Tried, s.Wanted, s.FileLimit, slowRampLimit)
		}
		if s.FirstErr != "" {
			fmt.Fprintf(&b, "\nFirst failure: `%s`\n", oneLine(s.FirstErr))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFailures(b *strings.Builder, cs []CallResult) {
	for _, c := range cs {
		for _, side := range []struct {
			name string
			s    sample
		}{{"direct", c.Direct}, {"gateway", c.Gateway}} {
			if side.s.failed > 0 {
				fmt.Fprintf(b, "\n%s, %s: %d failed, the first with `%s`\n", c.name(), side.name, side.s.failed, oneLine(side.s.firstErr))
			}
		}
	}
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "`", "'", "|", "/").Replace(s)
}

// redactEnv masks the secrets among the gateway's settings.
func redactEnv(env []string) []string {
	out := make([]string, len(env))
	for i, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.Contains(name, "SECRET") {
			kv = name + "=[random]"
		}
		out[i] = kv
	}
	return out
}
