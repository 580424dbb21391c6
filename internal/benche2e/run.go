// Package benche2e measures what the gateway adds to a model call, as a user would: it starts a fast fake
// model server (Ollama's and OpenAI's APIs) in this process and the gateway as a process of its own with a
// fresh database, sends the same load straight to the fake and through the gateway in alternating rounds on
// loopback, and reads the gateway's CPU time and memory from /proc. The report compares each figure with
// its target. cmd/bench-e2e runs it.
package benche2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one run of the benchmark.
type Config struct {
	Gateway GatewaySpec
	// Round is how long each measured round lasts, and Rounds how many each side (direct, gateway) of a
	// scenario gets, in alternation; each side is first warmed up for Warmup.
	Round, Warmup time.Duration
	Rounds        int
	// Rates are the calls per second of the open-loop scenarios, and Workers the callers of the closed-loop
	// ceiling.
	Rates   []int
	Workers int
	// Streams are the concurrencies of the stream scenarios, of StreamTokens tokens one every TokenInterval.
	Streams       []int
	StreamTokens  int
	TokenInterval time.Duration
	// SlowStreams streams are held open at once, sent a token every SlowInterval, to measure the memory of
	// an open stream.
	SlowStreams  int
	SlowInterval time.Duration
	// LoginFlood logins are sent at once, each from a loopback address of its own.
	LoginFlood int
	// Settle is how long a restarted gateway is given at most to hand back the memory its start freed (Go
	// returns it to the system in the background), before its memory is measured.
	Settle time.Duration
	// Users are the accounts the load is spread over.
	Users int
	// Only, when set, runs only the scenarios whose names it matches.
	Only *regexp.Regexp
	// CPUProfile, when set, is where a CPU profile of the gateway during its first measured round is
	// written, fetched from the net/http/pprof of a gateway built with the pprof tag at ProfileAddr.
	CPUProfile, ProfileAddr string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Full is the configuration of `make bench-e2e`: the scenarios and figures of issue 13.
func Full() Config {
	return Config{
		Round: 5 * time.Second, Warmup: time.Second, Rounds: 2,
		Rates: []int{500, 1000, 2000}, Workers: 64,
		Streams: []int{20, 200}, StreamTokens: 200, TokenInterval: 5 * time.Millisecond,
		SlowStreams: 10_000, SlowInterval: time.Second,
		LoginFlood: 1000, Users: 16, Settle: 30 * time.Second,
	}
}

// Quick is a smoke run of every scenario of Full in about two minutes: one short round per side, fewer slow
// streams and logins. Its figures are rough.
func Quick() Config {
	c := Full()
	c.Round, c.Warmup, c.Rounds = time.Second, 200*time.Millisecond, 1
	c.SlowStreams, c.LoginFlood, c.Users, c.Settle = 1000, 200, 4, 5*time.Second
	return c
}

// Paths of the gateway that the scenarios call.
const (
	native = "native" // POST /v1/chat and /v1/chat/stream: conversations stored, access tokens
	openai = "openai" // POST /openai/v1/chat/completions: nothing stored, API keys
)

// runner runs the scenarios of one Config against one gateway.
type runner struct {
	cfg      Config
	fake     *Fake
	gw       *Gateway
	users    []user
	rep      *Report
	profiled bool
}

// Run runs the benchmark and returns its report. The gateway's output is kept in cfg.Gateway.LogDir.
func Run(ctx context.Context, cfg Config) (_ *Report, err error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	rep := &Report{Config: cfg, Started: time.Now(), Machine: readMachine()}
	rep.FileLimit = raiseFileLimit(uint64(2*cfg.SlowStreams + 4096))
	fake, err := StartFake(StreamShape{Tokens: cfg.StreamTokens, Interval: cfg.TokenInterval})
	if err != nil {
		return nil, err
	}
	defer fake.Close()
	spec := cfg.Gateway
	rep.GatewayEnv = benchEnv(cfg, fake.URL)
	spec.Env = append(append([]string(nil), rep.GatewayEnv...), spec.Env...)
	if cfg.ProfileAddr != "" {
		spec.Env = append(spec.Env, "BENCH_PPROF_ADDR="+cfg.ProfileAddr)
	}
	fmt.Fprintf(cfg.Log, "starting the gateway (%s)\n", spec.Command[0])
	gw, err := StartGateway(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if stopErr := gw.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()
	users, err := createUsers(ctx, gw.URL, cfg.Users)
	if err != nil {
		return nil, fmt.Errorf("%w; see %s", err, gw.LogPath)
	}
	r := &runner{cfg: cfg, fake: fake, gw: gw, users: users, rep: rep}
	err = r.runAll(ctx)
	rep.Finished, rep.LoadAfter = time.Now(), loadAverage()
	if err != nil {
		return rep, fmt.Errorf("%w; see %s", err, gw.LogPath)
	}
	return rep, nil
}

// benchEnv is the gateway's configuration for the run: both upstreams on the fake, and limits that do not
// interfere with the load (those of logins keep their defaults).
func benchEnv(cfg Config, fakeURL string) []string {
	room := strconv.Itoa(2*cfg.SlowStreams + 1000)
	return []string{
		"DS_ENV=development",
		"DS_JWT_SECRET=" + rand.Text() + rand.Text(),
		"DS_UPSTREAMS=" + native + "=ollama+" + fakeURL + "," + openai + "=openai+" + fakeURL + "/v1",
		"DS_ACCESS_TOKEN_TTL=6h",
		"DS_RATE_LIMIT_USER=100000/1s",
		"DS_RATE_LIMIT_CHAT=100000/1s",
		"DS_MAX_STREAMS_PER_USER=" + room,
		"DS_MAX_IN_FLIGHT=" + room,
		"DS_OLLAMA_MAX_CONCURRENCY=" + room,
	}
}

// scenario is one named measurement.
type scenario struct {
	name string
	run  func(context.Context) error
}

func (r *runner) scenarios() []scenario {
	var list []scenario
	for _, path := range []string{native, openai} {
		for _, rate := range r.cfg.Rates {
			list = append(list, scenario{fmt.Sprintf("%s-chat-%d", path, rate), func(ctx context.Context) error {
				res, err := r.calls(ctx, path, rate, 0)
				r.rep.Calls = append(r.rep.Calls, res)
				return err
			}})
		}
	}
	for _, path := range []string{native, openai} {
		list = append(list, scenario{path + "-ceiling", func(ctx context.Context) error {
			res, err := r.calls(ctx, path, 0, r.cfg.Workers)
			r.rep.Ceilings = append(r.rep.Ceilings, res)
			return err
		}})
	}
	for _, n := range r.cfg.Streams {
		list = append(list, scenario{fmt.Sprintf("native-streams-%d", n), func(ctx context.Context) error {
			res, err := r.streams(ctx, native, n)
			r.rep.Streams = append(r.rep.Streams, res)
			return err
		}})
	}
	list = append(list,
		scenario{"login-flood", func(ctx context.Context) error {
			res, err := r.loginFlood(ctx)
			r.rep.Flood = &res
			return err
		}},
		scenario{"slow-streams", func(ctx context.Context) error {
			res, err := r.slowStreams(ctx)
			r.rep.Slow = &res
			return err
		}},
	)
	return list
}

// runAll runs the scenarios that cfg.Only selects, each on a freshly started gateway (same database),
// warmed up: what one scenario left behind (memory Go keeps, a backlog) does not count in the next, nor does
// the accounts' password hashing.
func (r *runner) runAll(ctx context.Context) error {
	r.rep.LoadBefore = loadAverage()
	for _, sc := range r.scenarios() {
		if r.cfg.Only != nil && !r.cfg.Only.MatchString(sc.name) {
			continue
		}
		fmt.Fprintf(r.cfg.Log, "%s: %s\n", time.Now().Format(time.TimeOnly), sc.name)
		if err := r.gw.Restart(ctx); err != nil {
			return err
		}
		if err := r.warm(ctx); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
		r.settle()
		if err := sc.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	return nil
}

// peak runs a scenario and returns the gateway's peak resident memory while it ran.
func (r *runner) peak(fn func() error) (uint64, error) {
	if err := r.gw.ResetPeak(); err != nil {
		return 0, err
	}
	err := fn()
	_, peak, merr := r.gw.Memory()
	return peak, errors.Join(err, merr)
}

// endpoints returns the direct and the gateway's endpoint of a path.
func (r *runner) endpoints(path string, streamed bool) (direct, gateway *endpoint) {
	const msgs = `"messages":[{"role":"user","content":"Tell me a story about a little girl"}]`
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	authed := func(secret func(user) string) []http.Header {
		hs := make([]http.Header, len(r.users))
		for i, u := range r.users {
			hs[i] = http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer " + secret(u)}}
		}
		return hs
	}
	stream := strconv.FormatBool(streamed)
	switch path {
	case native:
		direct = &endpoint{url: r.fake.URL + "/api/chat", format: ndjson, headers: []http.Header{jsonHeader},
			body: []byte(`{"model":"` + ModelName + `",` + msgs + `,"stream":` + stream + `}`)}
		gateway = &endpoint{url: r.gw.URL + "/v1/chat", format: nativeSSE, headers: authed(func(u user) string { return u.token }),
			body: []byte(`{"model":"` + ModelName + `",` + msgs + `}`)}
		if streamed {
			gateway.url += "/stream"
		}
	case openai:
		extra := ""
		if streamed {
			extra = `,"stream":true,"stream_options":{"include_usage":true}`
		}
		direct = &endpoint{url: r.fake.URL + "/v1/chat/completions", format: openaiSSE, headers: []http.Header{jsonHeader},
			body: []byte(`{"model":"` + ModelName + `",` + msgs + extra + `}`)}
		gateway = &endpoint{url: r.gw.URL + "/openai/v1/chat/completions", format: openaiSSE,
			headers: authed(func(u user) string { return u.apiKey }),
			body:    []byte(`{"model":"` + openai + `/` + ModelName + `",` + msgs + extra + `}`)}
	}
	return direct, gateway
}

// alternate runs rounds of direct and of gateway, in alternating order (direct first, then gateway first,
// ...) after a warm-up of each, so that a drift of the machine's load falls on both alike. Each is told
// the length of its round and whether the round counts (the warm-up does not).
func (r *runner) alternate(ctx context.Context, direct, gateway func(d time.Duration, counts bool)) error {
	direct(r.cfg.Warmup, false)
	gateway(r.cfg.Warmup, false)
	for i := range r.cfg.Rounds {
		first, second := direct, gateway
		if i%2 == 1 {
			first, second = gateway, direct
		}
		first(r.cfg.Round, true)
		second(r.cfg.Round, true)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// measured runs a gateway round and returns the CPU time the gateway spent meanwhile; the first measured
// round is profiled when a profile is asked for.
func (r *runner) measured(fn func()) (time.Duration, error) {
	if r.cfg.CPUProfile != "" && !r.profiled {
		r.profiled = true
		go r.profile()
	}
	before, err := r.gw.CPU()
	if err != nil {
		return 0, err
	}
	fn()
	after, err := r.gw.CPU()
	return after - before, err
}

// profile fetches a CPU profile of the gateway as long as a round and writes it to cfg.CPUProfile.
func (r *runner) profile() {
	secs := max(1, int(r.cfg.Round.Seconds()))
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.cfg.ProfileAddr, secs)
	err := func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		f, err := os.Create(r.cfg.CPUProfile)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}()
	if err != nil {
		fmt.Fprintf(r.cfg.Log, "cpu profile: %v\n", err)
	} else {
		fmt.Fprintf(r.cfg.Log, "cpu profile written to %s\n", r.cfg.CPUProfile)
	}
}

// calls measures non-streamed calls on path: open loop at rate, or closed loop with workers when rate is 0.
func (r *runner) calls(ctx context.Context, path string, rate, workers int) (CallResult, error) {
	direct, gateway := r.endpoints(path, false)
	dc, gc := newClient(), newClient()
	defer dc.CloseIdleConnections()
	defer gc.CloseIdleConnections()
	res := CallResult{Path: path, Rate: rate, Workers: workers}
	var cpuErr error
	peak, err := r.peak(func() error {
		return r.alternate(ctx,
			func(d time.Duration, counts bool) {
				if s := attack(ctx, dc, direct, rate, workers, d); counts {
					res.Direct.add(s)
				}
			},
			func(d time.Duration, counts bool) {
				if !counts {
					attack(ctx, gc, gateway, rate, workers, d)
					return
				}
				var s sample
				s.cpu, cpuErr = r.measured(func() { s = attack(ctx, gc, gateway, rate, workers, d) })
				res.Gateway.add(s)
			})
	})
	res.PeakRSS = peak
	return res, errors.Join(err, cpuErr)
}

// streams measures n concurrent streams on path, each of StreamTokens tokens.
func (r *runner) streams(ctx context.Context, path string, n int) (StreamResult, error) {
	r.fake.SetShape(StreamShape{Tokens: r.cfg.StreamTokens, Interval: r.cfg.TokenInterval})
	direct, gateway := r.endpoints(path, true)
	dc, gc := newClient(), newClient()
	defer dc.CloseIdleConnections()
	defer gc.CloseIdleConnections()
	res := StreamResult{Path: path, Concurrency: n, Tokens: r.cfg.StreamTokens, Interval: r.cfg.TokenInterval}
	var cpuErr error
	peak, err := r.peak(func() error {
		return r.alternate(ctx,
			func(d time.Duration, counts bool) {
				if s := streams(ctx, dc, direct, n, d); counts {
					res.Direct.add(s)
				}
			},
			func(d time.Duration, counts bool) {
				if !counts {
					streams(ctx, gc, gateway, n, d)
					return
				}
				var s streamSample
				s.cpu, cpuErr = r.measured(func() { s = streams(ctx, gc, gateway, n, d) })
				res.Gateway.add(s)
			})
	})
	res.PeakRSS = peak
	return res, errors.Join(err, cpuErr)
}

// slowStreams opens SlowStreams native streams through the gateway, each sent a token every SlowInterval,
// holds them all open, and measures the gateway's memory per open stream.
func (r *runner) slowStreams(ctx context.Context) (SlowResult, error) {
	res := SlowResult{Wanted: r.cfg.SlowStreams, FileLimit: r.rep.FileLimit}
	// Each stream takes two descriptors in the gateway (its call and the call it makes) and two here (the
	// call, and the fake's side of the gateway's).
	n := min(r.cfg.SlowStreams, max(0, int(r.rep.FileLimit)-fdReserve)/2)
	r.fake.SetShape(StreamShape{Tokens: 0, Interval: r.cfg.SlowInterval})
	defer r.fake.SetShape(StreamShape{Tokens: r.cfg.StreamTokens, Interval: r.cfg.TokenInterval})
	if err := r.gw.ResetPeak(); err != nil {
		return res, err
	}
	base, _, err := r.gw.Memory()
	if err != nil {
		return res, err
	}
	res.BaseRSS = base

	_, gateway := r.endpoints(native, true)
	c := newClient()
	c.Timeout = 0 // the streams last as long as the scenario holds them
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		open atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
		// At most this many streams are being opened at once, so that the ramp goes as fast as the gateway
		// opens them rather than piling up calls that would time out.
		opening = make(chan struct{}, 256)
	)
	start := time.Now()
	deadline := start.Add(slowRampLimit)
ramp:
	for range n {
		select {
		case opening <- struct{}{}:
		case <-time.After(time.Until(deadline)):
			break ramp
		}
		res.Tried++
		wg.Go(func() {
			started := false
			_, _, _, err := stream(ctx, c, gateway, func() {
				started = true
				open.Add(1)
				<-opening
			})
			if started {
				open.Add(-1)
			} else {
				<-opening
			}
			if err != nil && ctx.Err() == nil {
				mu.Lock()
				res.Failed++
				if res.FirstErr == "" {
					res.FirstErr = err.Error()
				}
				mu.Unlock()
			}
		})
	}
	// Wait for the streams still being opened.
	for range cap(opening) {
		opening <- struct{}{}
	}
	res.RampTime = time.Since(start)
	// Hold them open for two tokens, then read the memory.
	time.Sleep(2 * r.cfg.SlowInterval)
	res.Open = int(open.Load())
	if res.RSS, res.PeakRSS, err = r.gw.Memory(); err != nil {
		return res, err
	}
	cancel()
	wg.Wait()
	// Let the gateway store the partial answers of the streams that were left, before anything else runs.
	r.waitIdle(30 * time.Second)
	return res, nil
}

// fdReserve is how many open files each process keeps for other than the open streams.
const fdReserve = 256

// slowRampLimit bounds the time to open the slow streams.
const slowRampLimit = 3 * time.Minute

// warm makes a call of each kind for each user through a (re)started gateway, with short streams: what it
// loads at the first call (the model lists, the users' API keys, its connection pools) is then in place.
func (r *runner) warm(ctx context.Context) error {
	r.fake.SetShape(StreamShape{Tokens: 2})
	defer r.fake.SetShape(StreamShape{Tokens: r.cfg.StreamTokens, Interval: r.cfg.TokenInterval})
	c := newClient()
	defer c.CloseIdleConnections()
	for _, path := range []string{native, openai} {
		_, chat := r.endpoints(path, false)
		_, streamed := r.endpoints(path, true)
		for range r.users {
			if err := call(ctx, c, chat); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
			if _, _, _, err := stream(ctx, c, streamed, nil); err != nil {
				return fmt.Errorf("warm-up: %s: %w", streamed.url, err)
			}
		}
	}
	return nil
}

// settle waits until the gateway's resident memory has not shrunk for three seconds, or cfg.Settle passes.
func (r *runner) settle() {
	last, _, err := r.gw.Memory()
	if err != nil {
		return
	}
	steady := time.Now()
	for deadline := time.Now().Add(r.cfg.Settle); time.Now().Before(deadline) && time.Since(steady) < 3*time.Second; {
		time.Sleep(250 * time.Millisecond)
		rss, _, err := r.gw.Memory()
		if err != nil {
			return
		}
		if rss < last {
			last, steady = rss, time.Now()
		}
	}
}

// waitIdle waits until the gateway uses less than a tenth of a core, or timeout passes.
func (r *runner) waitIdle(timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		before, err := r.gw.CPU()
		time.Sleep(500 * time.Millisecond)
		after, err2 := r.gw.CPU()
		if err != nil || err2 != nil || after-before < 50*time.Millisecond {
			return
		}
	}
}

// loginFlood sends LoginFlood logins at once, each from a loopback address of its own, half of them with
// the right password, and measures the gateway's answers and memory.
func (r *runner) loginFlood(ctx context.Context) (FloodResult, error) {
	res := FloodResult{Logins: r.cfg.LoginFlood, Statuses: map[int]int{}}
	if err := r.gw.ResetPeak(); err != nil {
		return res, err
	}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		ready sync.WaitGroup
		begin = make(chan struct{})
	)
	for i := range r.cfg.LoginFlood {
		u := r.users[i%len(r.users)]
		password := u.password
		if i%2 == 1 {
			password = "not the password"
		}
		body := fmt.Sprintf(`{"email":%q,"password":%q}`, u.email, password)
		c := clientFrom(loopbackAddr(1, i), callTimeout)
		ready.Add(1)
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.gw.URL+"/v1/auth/login", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			ready.Done()
			<-begin
			resp, err := c.Do(req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Errors++
				if res.FirstErr == "" {
					res.FirstErr = err.Error()
				}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			res.Statuses[resp.StatusCode]++
		})
	}
	ready.Wait()
	start := time.Now()
	close(begin)
	wg.Wait()
	res.Elapsed = time.Since(start)
	var err error
	_, res.PeakRSS, err = r.gw.Memory()
	return res, err
}
