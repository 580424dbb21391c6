package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, its continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from  instruction
	instr []instruction
}

// parseDockerfile splits a Dockerfile into stages. It knows what our Dockerfile uses: comments, parser
// directives, and lines continued with a trailing backslash; it rejects heredocs.
func parseDockerfile(tb testing.TB, path string) []stage {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var (
		stages  []stage
		pending strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue // comments may sit between continuation lines too
		}
		if pending.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		text := pending.String()
		pending.Reset()
		if strings.Contains(text, "<<") {
			tb.Fatalf("%s:%d: heredocs are not supported by this parser", path, start)
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in})
		case len(stages) == 0:
			tb.Fatalf("%s:%d: %s before the first FROM", path, start, in.cmd)
		default:
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, in)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if pending.Len() > 0 {
		tb.Fatalf("%s: ends in a continued line", path)
	}
	return stages
}

// all returns the stage's instructions of kind cmd.
func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instr {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// execForm decodes the JSON array of an exec-form instruction; ok is false for the shell form.
func execForm(args string) (argv []string, ok bool) {
	if !strings.HasPrefix(args, "[") {
		return nil, false
	}
	return argv, json.Unmarshal([]byte(args), &argv) == nil && len(argv) > 0
}

// withoutFlags drops the leading --flag=value options of an instruction's arguments.
func withoutFlags(args string) string {
	for strings.HasPrefix(args, "--") {
		_, rest, _ := strings.Cut(args, " ")
		args = strings.TrimSpace(rest)
	}
	return args
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a final one", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	t.Run("build stage", func(t *testing.T) {
		if !strings.HasPrefix(build.from.args, "golang:1.26") || !strings.Contains(build.from.args, "bookworm") {
			t.Errorf("FROM %s, want golang:1.26 on bookworm", build.from.args)
		}
		download, compile := -1, -1
		firstCopyAll := -1
		for i, in := range build.instr {
			switch {
			case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
				download = i
			case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
				compile = i
				for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "./cmd/deepersensor"} {
					if !strings.Contains(in.args, want) {
						t.Errorf("line %d: go build without %s", in.line, want)
					}
				}
			case in.cmd == "COPY" && strings.HasPrefix(withoutFlags(in.args), ". ") && firstCopyAll < 0:
				firstCopyAll = i
			}
		}
		// go.mod and go.sum alone, then the download, then the sources: the module layer survives code changes.
		if download < 0 || compile < 0 || firstCopyAll < 0 || download > firstCopyAll || firstCopyAll > compile {
			t.Errorf("want COPY go.mod go.sum, RUN go mod download, COPY . ., RUN go build in that order")
		}
	})

	t.Run("final stage", func(t *testing.T) {
		base := strings.Fields(final.from.args)[0]
		if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
			t.Errorf("final FROM %s, want distroless static or scratch", base)
		}
		users := final.all("USER")
		if len(users) == 0 || users[len(users)-1].args != "65534:65534" {
			t.Errorf("final USER %v, want 65534:65534", users)
		}
		for _, in := range final.all("RUN") {
			if _, ok := execForm(in.args); !ok {
				t.Errorf("line %d: shell-form RUN in a stage without a shell", in.line)
			}
		}
		if !slices.ContainsFunc(final.all("COPY"), func(in instruction) bool {
			return strings.Contains(in.args, "--from=") && strings.HasSuffix(in.args, " /deepersensor")
		}) {
			t.Errorf("the final stage does not copy the binary to /deepersensor")
		}
	})

	t.Run("runtime", func(t *testing.T) {
		entry := final.all("ENTRYPOINT")
		if len(entry) != 1 {
			t.Fatalf("%d ENTRYPOINTs, want 1", len(entry))
		}
		if argv, ok := execForm(entry[0].args); !ok || !slices.Equal(argv, []string{"/deepersensor"}) {
			t.Errorf("ENTRYPOINT %s, want exec form [\"/deepersensor\"]", entry[0].args)
		}
		health := final.all("HEALTHCHECK")
		if len(health) != 1 {
			t.Fatalf("%d HEALTHCHECKs, want 1", len(health))
		}
		cmd, args, _ := strings.Cut(withoutFlags(health[0].args), " ")
		if argv, ok := execForm(strings.TrimSpace(args)); cmd != "CMD" || !ok || !slices.Equal(argv, []string{"/deepersensor", "healthcheck"}) {
			t.Errorf("HEALTHCHECK %s, want CMD [\"/deepersensor\", \"healthcheck\"] in exec form", health[0].args)
		}
		var env []string
		for _, in := range final.all("ENV") {
			env = append(env, strings.Fields(in.args)...)
		}
		for _, want := range []string{"DS_ENV=production", "DS_HTTP_ADDR=0.0.0.0:8080"} {
			if !slices.Contains(env, want) {
				t.Errorf("ENV %v lacks %s", env, want)
			}
		}
		if expose := final.all("EXPOSE"); len(expose) != 1 || expose[0].args != "8080" {
			t.Errorf("EXPOSE %v, want 8080, the port of DS_HTTP_ADDR", expose)
		}
	})
}

func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	patterns := strings.Fields(string(b))
	// Secrets and the repository history must never reach the build context.
	for _, want := range []string{".git", ".env", ".env.*", "**/*.pem", "**/*.key", "certs"} {
		if !slices.Contains(patterns, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}

// TestNginxDockerfile checks the image that compose.yaml builds for nginx: Debian's nginx with Debian's brotli
// module, the packages the nginx tests run, as UID 101, with the configuration compose mounts.
func TestNginxDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "nginx/Dockerfile")
	if len(stages) != 1 {
		t.Fatalf("%d stages, want 1", len(stages))
	}
	s := stages[0]
	// Debian 12, whose nginx (1.22) and brotli module the tests run; a fixed tag.
	if !strings.HasPrefix(s.from.args, "debian:12.") || !strings.HasSuffix(s.from.args, "-slim") {
		t.Errorf("FROM %s, want a fixed debian:12.N-slim", s.from.args)
	}

	t.Run("packages", func(t *testing.T) {
		var install []string
		for _, in := range s.all("RUN") {
			for _, cmd := range strings.Split(in.args, "&&") {
				args := strings.Fields(cmd)
				if i := slices.Index(args, "install"); i > 0 && slices.Contains(args[:i], "apt-get") {
					if !slices.Contains(args, "--no-install-recommends") {
						t.Errorf("line %d: apt-get install without --no-install-recommends", in.line)
					}
					for _, a := range args[i+1:] {
						if !strings.HasPrefix(a, "-") {
							install = append(install, a)
						}
					}
				}
			}
			if strings.Contains(in.args, "apt-get update") && !strings.Contains(in.args, "rm -rf /var/lib/apt/lists/*") {
				t.Errorf("line %d: the package lists stay in the image", in.line)
			}
		}
		slices.Sort(install)
		if want := []string{"libnginx-mod-http-brotli-filter", "nginx"}; !slices.Equal(install, want) {
			t.Errorf("installs %v, want %v", install, want)
		}
	})

	// nginx.conf loads the module from where the package puts it, here and in the image.
	t.Run("modules", func(t *testing.T) {
		b, err := os.ReadFile("nginx/nginx.conf")
		if err != nil {
			t.Fatal(err)
		}
		var modules []string
		for _, m := range regexp.MustCompile(`(?m)^load_module\s+(\S+);`).FindAllStringSubmatch(string(b), -1) {
			modules = append(modules, m[1])
		}
		if !slices.Equal(modules, []string{brotliModule}) {
			t.Errorf("nginx.conf loads %v, want [%s]", modules, brotliModule)
		}
	})

	t.Run("runtime", func(t *testing.T) {
		users := s.all("USER")
		if len(users) != 1 || users[0].args != "101:101" {
			t.Errorf("USER %v, want 101:101", users)
		}
		entry, cmd := s.all("ENTRYPOINT"), s.all("CMD")
		if len(entry) != 1 || len(cmd) != 1 {
			t.Fatalf("%d ENTRYPOINTs and %d CMDs, want one each", len(entry), len(cmd))
		}
		argv, ok := execForm(entry[0].args)
		args, ok2 := execForm(cmd[0].args)
		if !ok || !ok2 || !slices.Equal(argv, []string{"nginx"}) {
			t.Fatalf("ENTRYPOINT %s CMD %s, want nginx and its arguments in exec form", entry[0].args, cmd[0].args)
		}
		// The prefix is the tmpfs compose gives it; the configuration is where compose mounts it.
		compose := loadCompose(t).Services["nginx"]
		flag := func(name string) string {
			if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
				return args[i+1]
			}
			return ""
		}
		if p := flag("-p"); p == "" || !slices.Contains(compose.Tmpfs, strings.TrimSuffix(p, "/")) {
			t.Errorf("prefix %q, want a tmpfs of the compose service (%v)", p, compose.Tmpfs)
		}
		if c := flag("-c"); !slices.Contains(compose.Volumes, "./deploy/nginx:"+filepath.Dir(c)+":ro") || filepath.Base(c) != "nginx.conf" {
			t.Errorf("configuration %q, want nginx.conf where compose mounts deploy/nginx", c)
		}
		if g := flag("-g"); !strings.Contains(g, "daemon off;") {
			t.Errorf("-g %q, want daemon off: the container's process is nginx", g)
		}
		if build := compose.Build; build != "./deploy/nginx" {
			t.Errorf("compose builds nginx from %q, want ./deploy/nginx", build)
		}
	})
}
