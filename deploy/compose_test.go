package deploy_test

import (
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/deepersensor/deepersensor/config"
)

// composeFile is the part of the Compose specification that compose.yaml uses and the tests check.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]struct {
		Internal   bool `yaml:"internal"`
		EnableIPv6 bool `yaml:"enable_ipv6"`
		IPAM       struct {
			Config []struct {
				Subnet  string `yaml:"subnet"`
				IPRange string `yaml:"ip_range"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	User        string            `yaml:"user"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Networks    serviceNetworks   `yaml:"networks"`
	ReadOnly    bool              `yaml:"read_only"`
	Tmpfs       []string          `yaml:"tmpfs"`
	CapDrop     []string          `yaml:"cap_drop"`
	CapAdd      []string          `yaml:"cap_add"`
	SecurityOpt []string          `yaml:"security_opt"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Deploy struct {
		Resources struct {
			Limits struct {
				CPUs   string `yaml:"cpus"`
				Memory string `yaml:"memory"`
				Pids   int    `yaml:"pids"`
			} `yaml:"limits"`
		} `yaml:"resources"`
	} `yaml:"deploy"`
}

// serviceNetworks are the networks of a service, which Compose takes as a list of names or as a map from
// name to settings.
type serviceNetworks map[string]networkSettings

// networkSettings are a service's settings on one network.
type networkSettings struct {
	IPv4Address string `yaml:"ipv4_address"`
}

func (n *serviceNetworks) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.SequenceNode {
		type settings serviceNetworks // without this method
		return node.Decode((*settings)(n))
	}
	var names []string
	if err := node.Decode(&names); err != nil {
		return err
	}
	*n = serviceNetworks{}
	for _, name := range names {
		(*n)[name] = networkSettings{}
	}
	return nil
}

// names returns the networks' names, sorted.
func (n serviceNetworks) names() []string {
	return slices.Sorted(maps.Keys(n))
}

// requiredVar matches a Compose interpolation that refuses to start when the variable is unset or empty.
func requiredVar(name string) *regexp.Regexp {
	return regexp.MustCompile(`\$\{` + name + `:\?[^}]+\}`)
}

// anyRequiredVar matches any interpolation that requiredVar matches.
var anyRequiredVar = requiredVar(`[A-Z0-9_]+`)

func loadCompose(tb testing.TB) composeFile {
	tb.Helper()
	b, err := os.ReadFile("../compose.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		tb.Fatalf("compose.yaml: %v", err)
	}
	return c
}

func TestCompose(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"postgres", "redis", "ollama", "api1", "api2", "nginx", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	backend := c.Networks["backend"]
	if !backend.Internal || len(backend.IPAM.Config) != 1 {
		t.Fatalf("the backend network must be internal with one fixed subnet: %+v", backend)
	}
	subnet, err := netip.ParsePrefix(backend.IPAM.Config[0].Subnet)
	if err != nil {
		t.Fatalf("backend subnet: %v", err)
	}
	dynamic, err := netip.ParsePrefix(backend.IPAM.Config[0].IPRange)
	if err != nil {
		t.Fatalf("backend ip_range, whence containers get their addresses: %v", err)
	}

	// None needs a capability: each runs as an unprivileged user, or as root over files of its own.
	t.Run("every service is hardened", func(t *testing.T) {
		memory := regexp.MustCompile(`^[0-9]+[KMG]$`)
		for name, s := range c.Services {
			if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || len(s.CapAdd) > 0 || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("%s: read_only %v, cap_drop %v, cap_add %v, security_opt %v: want read-only, ALL dropped, none added, no-new-privileges",
					name, s.ReadOnly, s.CapDrop, s.CapAdd, s.SecurityOpt)
			}
			if l := s.Deploy.Resources.Limits; !memory.MatchString(l.Memory) || l.Pids <= 0 {
				t.Errorf("%s: limits %+v, want memory and pids", name, l)
			}
		}
	})

	t.Run("images are pinned", func(t *testing.T) {
		for name, s := range c.Services {
			if s.Build != "" {
				continue // built from this repository
			}
			if _, tag, ok := strings.Cut(s.Image, ":"); !ok || tag == "latest" {
				t.Errorf("%s: image %q, want a fixed tag", name, s.Image)
			}
		}
		if got := c.Services["ollama"].Image; got != "ollama/ollama:0.17.4" {
			t.Errorf("ollama: image %q, want ollama/ollama:0.17.4", got)
		}
		for name, prefix := range map[string]string{"prometheus": "prom/prometheus:v3.", "grafana": "grafana/grafana:12."} {
			if got := c.Services[name].Image; !strings.HasPrefix(got, prefix) {
				t.Errorf("%s: image %q, want %s*", name, got, prefix)
			}
		}
	})

	t.Run("only nginx publishes ports", func(t *testing.T) {
		for name, s := range c.Services {
			if name != "nginx" && len(s.Ports) > 0 {
				t.Errorf("%s publishes %v", name, s.Ports)
			}
		}
		if got := c.Services["nginx"].Ports; !slices.Equal(got, []string{"80:8080", "443:8443"}) {
			t.Errorf("nginx publishes %v, want 80:8080 and 443:8443", got)
		}
	})

	t.Run("dependencies wait for health", func(t *testing.T) {
		for name, s := range c.Services {
			for dep, d := range s.DependsOn {
				if d.Condition != "service_healthy" {
					t.Errorf("%s depends on %s with condition %q, want service_healthy", name, dep, d.Condition)
				}
				if c.Services[dep].Healthcheck == nil {
					t.Errorf("%s waits for %s, which has no healthcheck", name, dep)
				}
			}
		}
		if deps := c.Services["nginx"].DependsOn; len(deps) != 2 {
			t.Errorf("nginx depends on %v, want api1 and api2", deps)
		}
	})

	t.Run("secrets come from the environment", func(t *testing.T) {
		if v := c.Services["postgres"].Environment["POSTGRES_PASSWORD"]; !requiredVar("POSTGRES_PASSWORD").MatchString(v) {
			t.Errorf("POSTGRES_PASSWORD = %q, want ${POSTGRES_PASSWORD:?...}", v)
		}
	})

	t.Run("redis requires a password", func(t *testing.T) {
		s := c.Services["redis"]
		i := slices.Index(s.Command, "--requirepass")
		if i < 0 || i+1 == len(s.Command) || !requiredVar("REDIS_PASSWORD").MatchString(s.Command[i+1]) {
			t.Errorf("command %q, want --requirepass ${REDIS_PASSWORD:?...}", s.Command)
		}
		// redis-cli, the health check, reads the password from REDISCLI_AUTH.
		if v := s.Environment["REDISCLI_AUTH"]; !requiredVar("REDIS_PASSWORD").MatchString(v) {
			t.Errorf("REDISCLI_AUTH = %q, want ${REDIS_PASSWORD:?...}", v)
		}
		if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "redis-cli ping") {
			t.Errorf("healthcheck %+v, want redis-cli ping", s.Healthcheck)
		}
	})

	for _, name := range []string{"api1", "api2"} {
		t.Run(name, func(t *testing.T) {
			s := c.Services[name]
			if s.Build != "." || s.Image == "" || !reflect.DeepEqual(s, c.Services["api1"]) {
				t.Errorf("build %q image %q: want both replicas built from . as the same image", s.Build, s.Image)
			}
			if !slices.Contains(s.Tmpfs, "/tmp") {
				t.Errorf("tmpfs %v, want /tmp", s.Tmpfs)
			}
			if s.Deploy.Resources.Limits.CPUs == "" {
				t.Errorf("no cpus limit")
			}
			if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/deepersensor", "healthcheck"}) {
				t.Errorf("healthcheck %+v, want the binary's healthcheck subcommand", s.Healthcheck)
			}
			for _, dep := range []string{"postgres", "redis", "ollama"} {
				if _, ok := s.DependsOn[dep]; !ok {
					t.Errorf("does not wait for %s", dep)
				}
			}
			if !slices.Equal(s.Networks.names(), []string{"backend"}) {
				t.Errorf("networks %v, want only backend", s.Networks.names())
			}
			env := s.Environment
			if !requiredVar("DS_JWT_SECRET").MatchString(env["DS_JWT_SECRET"]) || strings.Count(env["DS_JWT_SECRET"], "$") != 1 {
				t.Errorf("DS_JWT_SECRET = %q, want exactly ${DS_JWT_SECRET:?...}", env["DS_JWT_SECRET"])
			}
			if !requiredVar("POSTGRES_PASSWORD").MatchString(env["DS_DATABASE_URL"]) {
				t.Errorf("DS_DATABASE_URL = %q, want the password from ${POSTGRES_PASSWORD:?...}", env["DS_DATABASE_URL"])
			}
			if u, err := url.Parse(anyRequiredVar.ReplaceAllString(env["DS_REDIS_URL"], "x")); err != nil ||
				!requiredVar("REDIS_PASSWORD").MatchString(env["DS_REDIS_URL"]) || u.User.Username() != "" {
				t.Errorf("DS_REDIS_URL = %q, want the password alone, from ${REDIS_PASSWORD:?...}", env["DS_REDIS_URL"])
			}
			for key, host := range map[string]string{"DS_DATABASE_URL": "postgres", "DS_REDIS_URL": "redis", "DS_OLLAMA_URL": "ollama"} {
				u, err := url.Parse(anyRequiredVar.ReplaceAllString(env[key], "x"))
				if err != nil || u.Hostname() != host {
					t.Errorf("%s = %q, want a URL of the %s service", key, env[key], host)
				}
			}
			// nginx alone, not the rest of the backend network: Ollama, say, must not pass for a proxy.
			nginx, err := netip.ParseAddr(c.Services["nginx"].Networks["backend"].IPv4Address)
			if err != nil || !subnet.Contains(nginx) || dynamic.Contains(nginx) || env["DS_TRUSTED_PROXIES"] != nginx.String()+"/32" {
				t.Errorf("DS_TRUSTED_PROXIES = %q, want nginx's fixed address %v/32, in %v but out of ip_range %v",
					env["DS_TRUSTED_PROXIES"], nginx, subnet, dynamic)
			}
			if env["DS_METRICS_ADDR"] != "0.0.0.0:9090" {
				t.Errorf("DS_METRICS_ADDR = %q, want 0.0.0.0:9090", env["DS_METRICS_ADDR"])
			}
			known := configVars()
			for key := range env {
				if !slices.Contains(known, key) {
					t.Errorf("%s is not a setting of config.Config", key)
				}
			}
		})
	}

	t.Run("nginx", func(t *testing.T) {
		s := c.Services["nginx"]
		if !slices.Contains(s.Volumes, "./deploy/nginx:/etc/nginx/deepersensor:ro") {
			t.Errorf("volumes %v: want deploy/nginx mounted read-only at /etc/nginx/deepersensor", s.Volumes)
		}
		for _, v := range s.Volumes {
			if !strings.HasSuffix(v, ":ro") {
				t.Errorf("volume %s is writable", v)
			}
		}
		if !slices.Equal(s.Networks.names(), []string{"backend", "frontend"}) {
			t.Errorf("networks %v, want frontend and backend", s.Networks.names())
		}
		if !c.Networks["frontend"].EnableIPv6 {
			t.Errorf("the frontend network has no IPv6: nginx would not see IPv6 clients")
		}
	})

	// Prometheus and Grafana watch from the internal network, provisioned from deploy/ by read-only mounts.
	for name, mounts := range map[string][]string{
		"prometheus": {"./deploy/prometheus:/etc/prometheus:ro"},
		"grafana":    {"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro", "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro"},
	} {
		t.Run(name, func(t *testing.T) {
			s := c.Services[name]
			if !slices.Equal(s.Networks.names(), []string{"backend"}) {
				t.Errorf("networks %v, want only backend", s.Networks.names())
			}
			for _, m := range mounts {
				if !slices.Contains(s.Volumes, m) {
					t.Errorf("volumes %v lack %s", s.Volumes, m)
				}
			}
			for _, v := range s.Volumes {
				if strings.HasPrefix(v, ".") && !strings.HasSuffix(v, ":ro") {
					t.Errorf("bind mount %s is writable", v)
				}
			}
			if s.Healthcheck == nil {
				t.Errorf("no healthcheck")
			}
		})
	}

	t.Run("prometheus reads its configuration", func(t *testing.T) {
		if cmd := c.Services["prometheus"].Command; !slices.Contains(cmd, "--config.file=/etc/prometheus/prometheus.yml") {
			t.Errorf("command %q, want --config.file=/etc/prometheus/prometheus.yml", cmd)
		}
	})

	// Every replica's metrics listener is a target of the job the alerts and the dashboard name.
	t.Run("prometheus scrapes every replica", func(t *testing.T) {
		var want []string
		for name, s := range c.Services {
			if strings.HasPrefix(name, "api") {
				_, port, err := net.SplitHostPort(s.Environment["DS_METRICS_ADDR"])
				if err != nil {
					t.Fatalf("%s: DS_METRICS_ADDR: %v", name, err)
				}
				want = append(want, net.JoinHostPort(name, port))
			}
		}
		slices.Sort(want)
		got := loadPrometheusConfig(t).targets(t, apiJob)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("prometheus.yml's job %s scrapes %v, want the replicas' metrics listeners %v", apiJob, got, want)
		}
	})

	t.Run("grafana", func(t *testing.T) {
		s := c.Services["grafana"]
		if v := s.Environment["GF_SECURITY_ADMIN_PASSWORD"]; !requiredVar("GRAFANA_ADMIN_PASSWORD").MatchString(v) {
			t.Errorf("GF_SECURITY_ADMIN_PASSWORD = %q, want ${GRAFANA_ADMIN_PASSWORD:?...}", v)
		}
		// With no route out, Grafana must not try to download the plugins it installs by default.
		if v := s.Environment["GF_PLUGINS_PREINSTALL_DISABLED"]; v != "true" {
			t.Errorf("GF_PLUGINS_PREINSTALL_DISABLED = %q, want true", v)
		}
		if _, ok := s.DependsOn["prometheus"]; !ok {
			t.Errorf("does not wait for prometheus")
		}
		// The data source is the prometheus service, on the port it listens on (its default: no
		// --web.listen-address).
		ds := loadDatasource(t)
		u, err := url.Parse(ds.URL)
		if err != nil || u.Host != "prometheus:9090" ||
			slices.ContainsFunc(c.Services["prometheus"].Command, func(a string) bool { return strings.HasPrefix(a, "--web.listen-address") }) {
			t.Errorf("data source URL %q, want http://prometheus:9090", ds.URL)
		}
		// The dashboards are where the provider looks for them.
		if p := loadDashboardProvider(t).Options.Path; !slices.Contains(s.Volumes, "./deploy/grafana/dashboards:"+p+":ro") {
			t.Errorf("the dashboard provider reads %s, where compose mounts no dashboards", p)
		}
	})

	// nginx.conf names the replicas and the listeners that compose.yaml defines.
	t.Run("nginx config agrees", func(t *testing.T) {
		files := map[string]string{}
		for _, name := range []string{"upstream.conf", "listen-http.conf", "listen-https.conf"} {
			b, err := os.ReadFile("nginx/" + name)
			if err != nil {
				t.Fatal(err)
			}
			files[name] = string(b)
		}
		var apis []string
		for name := range c.Services {
			if strings.HasPrefix(name, "api") {
				apis = append(apis, name)
			}
		}
		if got := strings.Count(files["upstream.conf"], "server "); got != len(apis) {
			t.Errorf("upstream.conf has %d servers, compose.yaml %d replicas", got, len(apis))
		}
		for _, name := range apis {
			if !strings.Contains(files["upstream.conf"], "server "+name+":8080 ") {
				t.Errorf("upstream.conf does not name %s:8080", name)
			}
		}
		for name, listens := range map[string][]string{
			"listen-http.conf":  {"listen 8080;", "listen [::]:8080;"},
			"listen-https.conf": {"listen 8443 ssl", "listen [::]:8443 ssl"},
		} {
			for _, l := range listens {
				if !strings.Contains(files[name], l) {
					t.Errorf("%s lacks %q: nginx must listen on the ports compose.yaml publishes (8080, 8443), on IPv4 and IPv6", name, l)
				}
			}
		}
	})
}

// configVars returns the environment variable of every setting in config.Config.
func configVars() []string {
	var vars []string
	typ := reflect.TypeFor[config.Config]()
	for f := range typ.Fields() {
		if name := f.Tag.Get("envconfig"); name != "" {
			vars = append(vars, "DS_"+name)
		}
	}
	return vars
}

func TestDeployReadme(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Every setting is documented for operators.
	for _, v := range configVars() {
		if !strings.Contains(string(b), "`"+v+"`") {
			t.Errorf("README.md does not document %s", v)
		}
	}
	// So is every variable that compose.yaml reads.
	compose, err := os.ReadFile("../compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+)`).FindAllStringSubmatch(string(compose), -1) {
		vars[m[1]] = true
	}
	for v := range vars {
		if !strings.Contains(string(b), "| `"+v+"` |") {
			t.Errorf("README.md's table of the variables of compose.yaml lacks %s", v)
		}
	}
}
