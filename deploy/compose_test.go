package deploy_test

import (
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
		Internal bool `yaml:"internal"`
		IPAM     struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Networks    []string          `yaml:"networks"`
	ReadOnly    bool              `yaml:"read_only"`
	Tmpfs       []string          `yaml:"tmpfs"`
	CapDrop     []string          `yaml:"cap_drop"`
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

// requiredVar matches a Compose interpolation that refuses to start when the variable is unset or empty.
func requiredVar(name string) *regexp.Regexp {
	return regexp.MustCompile(`\$\{` + name + `:\?[^}]+\}`)
}

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
	for _, name := range []string{"postgres", "redis", "ollama", "api1", "api2", "nginx"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}
	backend := c.Networks["backend"]
	if !backend.Internal || len(backend.IPAM.Config) != 1 {
		t.Fatalf("the backend network must be internal with one fixed subnet: %+v", backend)
	}
	subnet := backend.IPAM.Config[0].Subnet

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

	for _, name := range []string{"api1", "api2"} {
		t.Run(name, func(t *testing.T) {
			s := c.Services[name]
			if s.Build != "." || s.Image == "" || !reflect.DeepEqual(s, c.Services["api1"]) {
				t.Errorf("build %q image %q: want both replicas built from . as the same image", s.Build, s.Image)
			}
			if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("read_only %v, cap_drop %v, security_opt %v: want read-only, ALL dropped, no-new-privileges",
					s.ReadOnly, s.CapDrop, s.SecurityOpt)
			}
			if !slices.Contains(s.Tmpfs, "/tmp") {
				t.Errorf("tmpfs %v, want /tmp", s.Tmpfs)
			}
			if l := s.Deploy.Resources.Limits; l.CPUs == "" || l.Memory == "" || l.Pids <= 0 {
				t.Errorf("limits %+v, want cpus, memory and pids", l)
			}
			if s.Healthcheck == nil || !slices.Equal(s.Healthcheck.Test, []string{"CMD", "/deepersensor", "healthcheck"}) {
				t.Errorf("healthcheck %+v, want the binary's healthcheck subcommand", s.Healthcheck)
			}
			for _, dep := range []string{"postgres", "redis", "ollama"} {
				if _, ok := s.DependsOn[dep]; !ok {
					t.Errorf("does not wait for %s", dep)
				}
			}
			if !slices.Equal(s.Networks, []string{"backend"}) {
				t.Errorf("networks %v, want only backend", s.Networks)
			}
			env := s.Environment
			if !requiredVar("DS_JWT_SECRET").MatchString(env["DS_JWT_SECRET"]) || strings.Count(env["DS_JWT_SECRET"], "$") != 1 {
				t.Errorf("DS_JWT_SECRET = %q, want exactly ${DS_JWT_SECRET:?...}", env["DS_JWT_SECRET"])
			}
			if !requiredVar("POSTGRES_PASSWORD").MatchString(env["DS_DATABASE_URL"]) {
				t.Errorf("DS_DATABASE_URL = %q, want the password from ${POSTGRES_PASSWORD:?...}", env["DS_DATABASE_URL"])
			}
			for key, host := range map[string]string{"DS_DATABASE_URL": "postgres", "DS_REDIS_URL": "redis", "DS_OLLAMA_URL": "ollama"} {
				u, err := url.Parse(requiredVar("POSTGRES_PASSWORD").ReplaceAllString(env[key], "x"))
				if err != nil || u.Hostname() != host {
					t.Errorf("%s = %q, want a URL of the %s service", key, env[key], host)
				}
			}
			if env["DS_TRUSTED_PROXIES"] != subnet {
				t.Errorf("DS_TRUSTED_PROXIES = %q, want the backend subnet %s", env["DS_TRUSTED_PROXIES"], subnet)
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
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("read_only %v, cap_drop %v, security_opt %v: want read-only, ALL dropped, no-new-privileges",
				s.ReadOnly, s.CapDrop, s.SecurityOpt)
		}
		if !slices.Contains(s.Volumes, "./deploy/nginx:/etc/nginx/deepersensor:ro") {
			t.Errorf("volumes %v: want deploy/nginx mounted read-only at /etc/nginx/deepersensor", s.Volumes)
		}
		for _, v := range s.Volumes {
			if !strings.HasSuffix(v, ":ro") {
				t.Errorf("volume %s is writable", v)
			}
		}
		if !slices.Contains(s.Networks, "backend") || !slices.Contains(s.Networks, "frontend") {
			t.Errorf("networks %v, want frontend and backend", s.Networks)
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
		if !strings.Contains(files["listen-http.conf"], "listen 8080;") || !strings.Contains(files["listen-https.conf"], "listen 8443 ssl") {
			t.Errorf("the nginx listeners are not the ports compose.yaml publishes (8080, 8443)")
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
}
