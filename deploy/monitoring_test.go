package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// chatBurst is the chat limit of the server that Prometheus watches: one round of load makes as many calls
// per user, and one more, which is refused.
const chatBurst = 4

// TestPrometheusScrapesTheService runs the real Prometheus, with the committed configuration and rules,
// against a running server under a little load and a replica that is down, then asks it every query of every
// panel of the dashboards: none may fail or come back empty. The rules must evaluate without error, name
// only series the server exports, and alert the replica that is down.
func TestPrometheusScrapesTheService(t *testing.T) {
	api1, api2 := freeAddr(t), freeAddr(t) // api2 stays down
	broken := ollamatest.New(t, ollamatest.Options{ChatStatus: http.StatusInternalServerError})
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) {
		c.MetricsAddr = api1
		// Two model servers, one of which fails every chat: tokens per upstream and model server errors.
		c.Upstreams = config.Upstreams{
			{Name: "local", Kind: config.UpstreamOllama, URL: c.OllamaURL},
			{Name: "broken", Kind: config.UpstreamOllama, URL: broken.URL},
		}
		c.RateLimitChat = config.Rate{Limit: chatBurst, Period: time.Minute}
	}})
	prom := startPrometheus(t, map[string]string{"api1:9090": api1, "api2:9090": api2})

	// Twice, so that the series that the first round creates have grown by the last scrape: a rate needs two
	// samples, a quantile a rate above zero.
	for range 2 {
		generateLoad(t, a)
		prom.scrapedAfter(t, api1, time.Now())
	}

	t.Run("every panel has data", func(t *testing.T) {
		rate := rateInterval(t)
		// legend is the legend format of a panel's query: the labels it names must be in the result.
		type check struct{ what, expr, legend string }
		var checks []check
		for file, d := range loadDashboards(t) {
			for _, v := range d.Templating.List {
				m := labelValues.FindStringSubmatch(v.queryText(t))
				if m == nil {
					t.Fatalf("%s: variable %s: query %q is not label_values(SELECTOR, LABEL)", file, v.Name, v.queryText(t))
				}
				// The variable's values are the label's values on the selected series.
				checks = append(checks, check{fmt.Sprintf("%s variable %s", file, v.Name), fmt.Sprintf("count by (%s) (%s)", m[2], m[1]), "{{" + m[2] + "}}"})
			}
			for _, p := range d.charts() {
				for _, q := range p.Targets {
					checks = append(checks, check{fmt.Sprintf("%s panel %q query %s", file, p.Title, q.RefID), d.interpolate(t, q.Expr, rate), q.LegendFormat})
				}
			}
		}
		// A scrape or an evaluation may be a moment behind: ask again until all have data or time is up.
		failures := map[string]error{}
		for deadline := time.Now().Add(20 * time.Second); ; {
			clear(failures)
			for _, c := range checks {
				samples, err := prom.query(c.expr)
				if err == nil {
					err = hasData(samples)
				}
				if err == nil {
					err = hasLabels(samples, c.legend)
				}
				if err != nil {
					failures[c.what] = fmt.Errorf("%s: %w", c.expr, err)
				}
			}
			if len(failures) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Second)
		}
		for what, err := range failures {
			t.Errorf("%s: %v", what, err)
		}
	})

	t.Run("every rule evaluates", func(t *testing.T) {
		var data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := prom.get("/api/v1/rules", nil, &data); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				names = append(names, r.Name)
				if r.Health != "ok" {
					t.Errorf("rule %s: health %q, last error %q", r.Name, r.Health, r.LastError)
				}
			}
		}
		for _, a := range loadAlerts(t) {
			if !slices.Contains(names, a.Alert) {
				t.Errorf("prometheus did not load the rule %s", a.Alert)
			}
		}
	})

	// The unit tests of the rules feed them series of their own making: those must be the server's, with its
	// label names, or the rules are tested against a service that does not exist.
	t.Run("rules and their tests name the server's series", func(t *testing.T) {
		var names []string
		if err := prom.get("/api/v1/label/__name__/values", nil, &names); err != nil {
			t.Fatal(err)
		}
		metric := regexp.MustCompile(`\bdeepersensor_[a-z0-9_]+`)
		for _, a := range loadAlerts(t) {
			for _, name := range metric.FindAllString(a.Expr, -1) {
				if !slices.Contains(names, name) {
					t.Errorf("%s names %s, which the server does not export", a.Alert, name)
				}
			}
		}
		series := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$`)
		for _, f := range loadRuleTests(t) {
			for _, tc := range f.Tests {
				for _, in := range tc.InputSeries {
					m := series.FindStringSubmatch(in.Series)
					if m == nil {
						t.Errorf("test %q: series %q is not name{labels}", tc.Name, in.Series)
						continue
					}
					labels := prom.labelNames(t, m[1])
					if len(labels) == 0 {
						t.Errorf("test %q: the server does not export %s", tc.Name, m[1])
						continue
					}
					for _, pair := range strings.Split(m[2], ",") {
						label, _, _ := strings.Cut(pair, "=")
						if !slices.Contains(labels, strings.TrimSpace(label)) {
							t.Errorf("test %q: series %s has the label %s, which the server's %s has not (%v)", tc.Name, in.Series, label, m[1], labels)
						}
					}
				}
			}
		}
	})

	t.Run("a replica that is down is alerted", func(t *testing.T) {
		expr := `ALERTS{alertname="DeeperSensorReplicaDown"}`
		deadline := time.Now().Add(10 * time.Second)
		for {
			samples, err := prom.query(expr)
			if err != nil {
				t.Fatal(err)
			}
			if len(samples) == 1 && samples[0].Metric["instance"] == api2 {
				return // pending: the rule waits 2 minutes before it fires
			}
			if len(samples) > 1 || time.Now().After(deadline) {
				t.Fatalf("%s = %v, want the alert for %s alone", expr, samples, api2)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// legendLabel matches a label in a legend format, such as {{instance}}.
var legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)

// hasLabels reports a sample that lacks a label that the legend shows: the query groups by another (a typo
// in by (...) goes unnoticed by Prometheus).
func hasLabels(samples []sample, legend string) error {
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		for _, s := range samples {
			if s.Metric[m[1]] == "" {
				return fmt.Errorf("the legend %q shows %s, which the series %v lack", legend, m[1], s.Metric)
			}
		}
	}
	return nil
}

// labelNames returns the label names of the series called name.
func (p *prometheus) labelNames(tb testing.TB, name string) []string {
	tb.Helper()
	var series []map[string]string
	if err := p.get("/api/v1/series", url.Values{"match[]": {name}}, &series); err != nil {
		tb.Fatal(err)
	}
	var labels []string
	for _, s := range series {
		for l := range s {
			if !slices.Contains(labels, l) {
				labels = append(labels, l)
			}
		}
	}
	return labels
}

// generateLoad makes a new user do what the dashboard shows: a signup, logins (one failed), chats answered,
// failed by the model server and refused for an unknown model, a stream, a conversation list, and one chat
// more than the chat limit allows.
func generateLoad(t *testing.T, a *testapp.App) {
	t.Helper()
	// Bounded, so that a call that hangs fails the test rather than stalling the suite.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	email, tokens := a.NewUser(t)
	c := a.Client(t, testapp.Bearer(tokens.AccessToken))
	if r, err := a.Client(t).LoginWithResponse(ctx, client.Credentials{Email: email, Password: "not the password, at all"}); err != nil || r.StatusCode() != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %v %v", r.StatusCode(), err)
	}
	chat := func(model string) int {
		t.Helper()
		r, err := c.ChatWithResponse(ctx, client.ChatRequest{Model: model, Messages: []client.ChatMessageInput{{Role: client.RoleUser, Content: "hi"}}})
		if err != nil {
			t.Fatalf("chat with %s: %v", model, err)
		}
		return r.StatusCode()
	}
	for model, want := range map[string]int{"local/tiny": http.StatusOK, "broken/tiny": http.StatusServiceUnavailable, "local/missing": http.StatusNotFound} {
		if got := chat(model); got != want {
			t.Fatalf("chat with %s: %d, want %d", model, got, want)
		}
	}
	readStream(ctx, t, a.URL, tokens.AccessToken)
	if r, err := c.ListConversationsWithResponse(ctx, nil); err != nil || r.JSON200 == nil {
		t.Fatalf("list conversations: %v", err)
	}
	if got := chat("local/tiny"); got != http.StatusTooManyRequests {
		t.Fatalf("chat %d: %d, want 429", chatBurst+1, got)
	}
}

// readStream asks for a streamed chat and reads it to its end.
func readStream(ctx context.Context, t *testing.T, baseURL, token string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/chat/stream",
		strings.NewReader(`{"model":"local/tiny","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "event: done") {
		t.Fatalf("stream: %d %v\n%s", resp.StatusCode, err, b)
	}
}
