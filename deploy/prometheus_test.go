package deploy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/deepersensor/deepersensor/internal/testenv"
)

// Where the Debian package prometheus installs its programs.
const (
	promtoolBin       = "/usr/bin/promtool"
	prometheusBin     = "/usr/bin/prometheus"
	installPrometheus = "apt-get install -y prometheus"
)

// apiJob is the scrape job of the API replicas, which the alerts and the dashboard select.
const apiJob = "deepersensor"

// The committed Prometheus files, relative to this package.
const (
	prometheusConfigFile = "prometheus/prometheus.yml"
	rulesGlob            = "prometheus/rules/*.yml"
	ruleTestsGlob        = "prometheus/tests/*.yml"
)

// prometheusConfig is the part of prometheus.yml that the tests read.
type prometheusConfig struct {
	Global struct {
		ScrapeInterval string `yaml:"scrape_interval"`
	} `yaml:"global"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func loadPrometheusConfig(tb testing.TB) prometheusConfig {
	tb.Helper()
	var c prometheusConfig
	loadYAML(tb, prometheusConfigFile, &c)
	return c
}

// targets returns the static targets of job.
func (c prometheusConfig) targets(tb testing.TB, job string) []string {
	tb.Helper()
	var targets []string
	for _, sc := range c.ScrapeConfigs {
		if sc.JobName == job {
			for _, s := range sc.StaticConfigs {
				targets = append(targets, s.Targets...)
			}
		}
	}
	if len(targets) == 0 {
		tb.Fatalf("%s: job %s has no targets", prometheusConfigFile, job)
	}
	return targets
}

// alertRule is an alerting rule of a rules file.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// loadAlerts returns the alerting rules of every committed rules file.
func loadAlerts(tb testing.TB) []alertRule {
	tb.Helper()
	var alerts []alertRule
	for _, path := range glob(tb, rulesGlob) {
		var f struct {
			Groups []struct {
				Rules []alertRule `yaml:"rules"`
			} `yaml:"groups"`
		}
		loadYAML(tb, path, &f)
		for _, g := range f.Groups {
			alerts = append(alerts, g.Rules...)
		}
	}
	return alerts
}

// ruleTests is a promtool test file: input series and the alerts expected from them.
type ruleTests struct {
	Tests []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func loadRuleTests(tb testing.TB) []ruleTests {
	tb.Helper()
	var all []ruleTests
	for _, path := range glob(tb, ruleTestsGlob) {
		var f ruleTests
		loadYAML(tb, path, &f)
		all = append(all, f)
	}
	return all
}

// TestPrometheusRules checks the configuration and the rules with promtool and runs the rules' unit tests. What
// the rules and their tests name is checked against a running server by TestPrometheusScrapesTheService.
func TestPrometheusRules(t *testing.T) {
	testenv.RequireBinary(t, promtoolBin, installPrometheus)
	for _, args := range [][]string{
		{"check", "config", prometheusConfigFile},
		append([]string{"check", "rules"}, glob(t, rulesGlob)...),
		append([]string{"test", "rules"}, glob(t, ruleTestsGlob)...),
	} {
		out, err := exec.Command(promtoolBin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	alerts := loadAlerts(t)
	if len(alerts) == 0 {
		t.Fatal("no alerting rules")
	}
	t.Run("every alert is tested firing and quiet", func(t *testing.T) {
		fires, quiet := map[string]bool{}, map[string]bool{}
		for _, f := range loadRuleTests(t) {
			for _, tc := range f.Tests {
				for _, at := range tc.AlertRuleTests {
					// promtool passes a test that expects nothing of an alert that does not exist.
					if !slices.ContainsFunc(alerts, func(a alertRule) bool { return a.Alert == at.Alertname }) {
						t.Errorf("test %q names the alert %q, which no rule defines", tc.Name, at.Alertname)
					}
					if len(at.ExpAlerts) > 0 {
						fires[at.Alertname] = true
					} else {
						quiet[at.Alertname] = true
					}
				}
			}
		}
		for _, a := range alerts {
			if !fires[a.Alert] || !quiet[a.Alert] {
				t.Errorf("%s: tested firing %v, quiet %v; want both", a.Alert, fires[a.Alert], quiet[a.Alert])
			}
		}
	})

	t.Run("every alert has a runbook", func(t *testing.T) {
		for _, a := range alerts {
			if s := a.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", a.Alert, s)
			}
			if a.For == "" {
				t.Errorf("%s: no for: one bad evaluation would page", a.Alert)
			}
			for _, key := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(a.Annotations[key]) == "" {
					t.Errorf("%s: no %s annotation", a.Alert, key)
				}
			}
		}
	})

	t.Run("README lists every alert", func(t *testing.T) {
		readme := readFile(t, "../README.md")
		for _, a := range alerts {
			if !strings.Contains(readme, "`"+a.Alert+"`") {
				t.Errorf("README.md does not list the alert %s", a.Alert)
			}
		}
	})
}

// prometheus is a Prometheus server run by a test.
type prometheus struct {
	base string // base URL, such as http://127.0.0.1:41234
	c    *http.Client
}

// startPrometheus runs the real Prometheus until the test ends, with the committed configuration and rules,
// scraping and evaluating every second, its targets replaced as targets says (committed target: address),
// and its storage in a temporary directory. It returns once Prometheus is ready.
func startPrometheus(tb testing.TB, targets map[string]string) *prometheus {
	tb.Helper()
	testenv.RequireBinary(tb, prometheusBin, installPrometheus)
	dir := tb.TempDir()
	addr := freeAddr(tb)
	edits := [][2]string{
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
		{`"localhost:9090"`, `"` + addr + `"`},
	}
	for from, to := range targets {
		edits = append(edits, [2]string{`"` + from + `"`, `"` + to + `"`})
	}
	writeFile(tb, filepath.Join(dir, "prometheus.yml"), rewrite(tb, prometheusConfigFile, readFile(tb, prometheusConfigFile), edits))
	if err := os.Mkdir(filepath.Join(dir, "rules"), 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, path := range glob(tb, rulesGlob) {
		writeFile(tb, filepath.Join(dir, "rules", filepath.Base(path)), readFile(tb, path))
	}

	out, exited := startProcess(tb, "prometheus", exec.Command(prometheusBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr), 10*time.Second, nil)

	p := &prometheus{base: "http://" + addr, c: &http.Client{Timeout: 10 * time.Second}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := p.c.Get(p.base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case err := <-exited:
			tb.Fatalf("prometheus exited at start: %v\n%s", err, out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus is not ready after 20s\n%s", out.String())
		}
	}
}

// apiResponse is the envelope of Prometheus's HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

// get calls the HTTP API at path with query and decodes its data into v.
func (p *prometheus) get(path string, query url.Values, v any) error {
	resp, err := p.c.Get(p.base + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var r apiResponse
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %d %s: %w", path, resp.StatusCode, b, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		return fmt.Errorf("%s: decode %s: %w", path, r.Data, err)
	}
	return nil
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  float64
}

// query evaluates expr now. It fails unless the result is an instant vector or a scalar, which it returns as
// samples.
func (p *prometheus) query(expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	var raw []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	switch data.ResultType {
	case "vector":
		if err := json.Unmarshal(data.Result, &raw); err != nil {
			return nil, fmt.Errorf("decode vector: %w", err)
		}
	case "scalar":
		raw = make([]struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}, 1)
		if err := json.Unmarshal(data.Result, &raw[0].Value); err != nil {
			return nil, fmt.Errorf("decode scalar: %w", err)
		}
	default:
		return nil, fmt.Errorf("result type %s, want vector or scalar", data.ResultType)
	}
	samples := make([]sample, len(raw))
	for i, r := range raw {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("sample value %v: %w", r.Value[1], err)
		}
		samples[i] = sample{Metric: r.Metric, Value: v}
	}
	return samples, nil
}

// scrapedAfter waits until Prometheus has a scrape of target that started after since, so that it has seen
// everything done before since.
func (p *prometheus) scrapedAfter(tb testing.TB, target string, since time.Time) {
	tb.Helper()
	expr := fmt.Sprintf(`timestamp(up{job=%q, instance=%q})`, apiJob, target)
	deadline := time.Now().Add(15 * time.Second)
	for {
		samples, err := p.query(expr)
		if err != nil {
			tb.Fatalf("%s: %v", expr, err)
		}
		if len(samples) == 1 && samples[0].Value > float64(since.UnixMilli())/1000 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("prometheus has not scraped %s since %s: %v", target, since.Format(time.TimeOnly), samples)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// hasData reports why samples would leave a panel or an alert blind: no sample, or only NaN.
func hasData(samples []sample) error {
	if !slices.ContainsFunc(samples, func(s sample) bool { return !math.IsNaN(s.Value) }) {
		return fmt.Errorf("no data: %v", samples)
	}
	return nil
}

// glob returns the files that pattern matches, failing tb when there is none.
func glob(tb testing.TB, pattern string) []string {
	tb.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no file matches %s (%v)", pattern, err)
	}
	return paths
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func writeFile(tb testing.TB, path, text string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func loadYAML(tb testing.TB, path string, v any) {
	tb.Helper()
	if err := yaml.Unmarshal([]byte(readFile(tb, path)), v); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
}

// rewrite applies each replacement to text, the file name, once: each must match exactly once, so that the
// test notices when the committed file changes shape.
func rewrite(tb testing.TB, name, text string, replacements [][2]string) string {
	tb.Helper()
	for _, r := range replacements {
		if n := strings.Count(text, r[0]); n != 1 {
			tb.Fatalf("%s: %q occurs %d times, want once", name, r[0], n)
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	return text
}
