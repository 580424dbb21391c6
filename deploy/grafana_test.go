package deploy_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The committed Grafana files, relative to this package.
const (
	dashboardsGlob        = "grafana/dashboards/*.json"
	datasourceFile        = "grafana/provisioning/datasources/prometheus.yml"
	dashboardProviderFile = "grafana/provisioning/dashboards/deepersensor.yml"
)

// datasource is Grafana's provisioned data source.
type datasource struct {
	UID      string `yaml:"uid"`
	Type     string `yaml:"type"`
	URL      string `yaml:"url"`
	JSONData struct {
		TimeInterval string `yaml:"timeInterval"`
	} `yaml:"jsonData"`
}

// loadDatasource returns the one provisioned data source.
func loadDatasource(tb testing.TB) datasource {
	tb.Helper()
	var f struct {
		Datasources []datasource `yaml:"datasources"`
	}
	loadYAML(tb, datasourceFile, &f)
	if len(f.Datasources) != 1 {
		tb.Fatalf("%s: %d data sources, want 1", datasourceFile, len(f.Datasources))
	}
	return f.Datasources[0]
}

// dashboardProvider tells Grafana where the dashboards are.
type dashboardProvider struct {
	Type    string `yaml:"type"`
	Options struct {
		Path string `yaml:"path"`
	} `yaml:"options"`
}

// loadDashboardProvider returns the one provisioned dashboard provider.
func loadDashboardProvider(tb testing.TB) dashboardProvider {
	tb.Helper()
	var f struct {
		Providers []dashboardProvider `yaml:"providers"`
	}
	loadYAML(tb, dashboardProviderFile, &f)
	if len(f.Providers) != 1 || f.Providers[0].Type != "file" {
		tb.Fatalf("%s: providers %+v, want one of type file", dashboardProviderFile, f.Providers)
	}
	return f.Providers[0]
}

// dsRef is a dashboard's reference to a data source.
type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashboard is the part of a Grafana dashboard that the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	Datasource *dsRef  `json:"datasource"`
	Targets    []query `json:"targets"`
	Panels     []panel `json:"panels"` // a collapsed row's
}

// query is a panel's PromQL query.
type query struct {
	RefID        string `json:"refId"`
	Expr         string `json:"expr"`
	LegendFormat string `json:"legendFormat"`
	Datasource   *dsRef `json:"datasource"`
}

// templateVar is a dashboard variable.
type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *dsRef          `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

// queryText is a query variable's query, which Grafana stores as a string or as {"query": ...}.
func (v templateVar) queryText(tb testing.TB) string {
	tb.Helper()
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &q); err != nil {
		tb.Fatalf("variable %s: query %s: %v", v.Name, v.Query, err)
	}
	return q.Query
}

// labelValues matches the query of a variable that lists a label's values: label_values(SELECTOR, LABEL).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// loadDashboards returns the committed dashboards by file name.
func loadDashboards(tb testing.TB) map[string]dashboard {
	tb.Helper()
	all := map[string]dashboard{}
	for _, path := range glob(tb, dashboardsGlob) {
		var d dashboard
		if err := json.Unmarshal([]byte(readFile(tb, path)), &d); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		all[filepath.Base(path)] = d
	}
	return all
}

// charts returns the dashboard's panels that show data: every panel but rows, those in collapsed rows too.
func (d dashboard) charts() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" {
				out = append(out, p)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// rateInterval is the $__rate_interval Grafana gives queries at the dashboards' usual zoom: four of the data
// source's scrape interval.
func rateInterval(tb testing.TB) string {
	tb.Helper()
	scrape, err := time.ParseDuration(loadDatasource(tb).JSONData.TimeInterval)
	if err != nil {
		tb.Fatalf("%s: timeInterval: %v", datasourceFile, err)
	}
	return fmt.Sprintf("%ds", int(4*scrape.Seconds()))
}

// grafanaVar matches a variable reference in a query: $name, ${name} or [[name]].
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?|\[\[(\w+)\]\]`)

// interpolate replaces the variables of expr as Grafana does before it sends the query, with every
// dashboard variable set to All. It fails tb on a variable it does not know.
func (d dashboard) interpolate(tb testing.TB, expr, rate string) string {
	tb.Helper()
	values := map[string]string{"__rate_interval": rate}
	for _, v := range d.Templating.List {
		if !v.IncludeAll || v.AllValue == "" {
			tb.Fatalf("%s: variable %s has no All value; the test sets every variable to All", d.Title, v.Name)
		}
		values[v.Name] = v.AllValue
	}
	return grafanaVar.ReplaceAllStringFunc(expr, func(ref string) string {
		m := grafanaVar.FindStringSubmatch(ref)
		name := m[1] + m[2]
		value, ok := values[name]
		if !ok {
			tb.Errorf("%s: query %q uses the variable %s, which the test cannot set", d.Title, expr, name)
		}
		return value
	})
}

// TestGrafanaDashboards checks the dashboards' shape and provisioning; TestPrometheusScrapesTheService runs
// every query of every panel against a running server.
func TestGrafanaDashboards(t *testing.T) {
	ds := loadDatasource(t)
	if ds.Type != "prometheus" || ds.UID == "" {
		t.Fatalf("data source %+v, want a prometheus one with a uid", ds)
	}
	if want := loadPrometheusConfig(t).Global.ScrapeInterval; ds.JSONData.TimeInterval != want {
		t.Errorf("the data source's timeInterval is %q, prometheus.yml's scrape_interval %q: $__rate_interval needs the real one",
			ds.JSONData.TimeInterval, want)
	}
	readme := readFile(t, "../README.md")
	uids := map[string]string{}
	for file, d := range loadDashboards(t) {
		t.Run(file, func(t *testing.T) {
			if d.UID == "" || uids[d.UID] != "" {
				t.Errorf("uid %q: want one of its own", d.UID)
			}
			uids[d.UID] = file
			// Every reference names the provisioned data source, so that no panel asks for one that is not there.
			checkRef := func(what string, ref *dsRef) {
				if ref == nil || ref.UID != ds.UID || ref.Type != ds.Type {
					t.Errorf("%s: data source %+v, want {%s %s}", what, ref, ds.Type, ds.UID)
				}
			}
			for _, v := range d.Templating.List {
				checkRef("variable "+v.Name, v.Datasource)
				if v.Type != "query" || !labelValues.MatchString(v.queryText(t)) {
					t.Errorf("variable %s: %s query %q, want label_values(SELECTOR, LABEL), which the test can check", v.Name, v.Type, v.queryText(t))
				}
			}
			ids, titles := map[int]bool{}, map[string]bool{}
			for _, p := range d.charts() {
				if ids[p.ID] || titles[p.Title] || p.Title == "" {
					t.Errorf("panel %d %q: want its own id and title", p.ID, p.Title)
				}
				ids[p.ID], titles[p.Title] = true, true
				checkRef("panel "+p.Title, p.Datasource)
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, q := range p.Targets {
					checkRef(fmt.Sprintf("panel %q query %s", p.Title, q.RefID), q.Datasource)
					if strings.TrimSpace(q.Expr) == "" {
						t.Errorf("panel %q query %s has no expr", p.Title, q.RefID)
					}
					d.interpolate(t, q.Expr, "1m")
				}
				if !strings.Contains(readme, p.Title) {
					t.Errorf("README.md does not list the panel %q", p.Title)
				}
			}
		})
	}
}
