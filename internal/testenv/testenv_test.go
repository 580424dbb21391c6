package testenv_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/deepersensor/deepersensor/internal/testenv"
)

// recorder is a testing.TB that records how RequireBinary ended it. Only the methods RequireBinary calls are
// implemented; embedding the interface supplies TB's unexported method.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = format
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	runtime.Goexit()
}

// requireBinary runs RequireBinary on its own goroutine, which Skipf and Fatalf end, and returns the record.
func requireBinary(path string) *recorder {
	return record(func(tb testing.TB) { testenv.RequireBinary(tb, path, "apt-get install -y it") })
}

// record runs require on its own goroutine, which Skipf and Fatalf end, and returns how it ended tb.
func record(require func(testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		require(r)
	}()
	<-done
	return r
}

func TestRequireBinary(t *testing.T) {
	dir := t.TempDir()
	present, notExecutable := filepath.Join(dir, "present"), filepath.Join(dir, "plain")
	if err := os.WriteFile(present, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notExecutable, []byte("text"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name, ci, path string
		want           string // "", "skipped" or "failed"
	}{
		{"present", "", present, ""},
		{"present in CI", "true", present, ""},
		{"missing", "", missing, "skipped"},
		{"not executable", "", notExecutable, "skipped"},
		{"CI=false", "false", missing, "skipped"},
		{"missing in CI", "true", missing, "failed"},
		{"not executable in CI", "true", notExecutable, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := requireBinary(tt.path)
			got := ""
			switch {
			case r.skipped != "" && r.failed != "":
				t.Fatalf("both skipped (%q) and failed (%q)", r.skipped, r.failed)
			case r.skipped != "":
				got = "skipped"
			case r.failed != "":
				got = "failed"
			}
			if got != tt.want {
				t.Errorf("RequireBinary with CI=%q on %s: %q, want %q", tt.ci, tt.path, got, tt.want)
			}
			if msg := r.skipped + r.failed; got != "" && !strings.Contains(msg, "install it with") {
				t.Errorf("message %q does not say how to install it", msg)
			}
		})
	}
}

func TestRequireFile(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "module.so")
	if err := os.WriteFile(present, []byte("not a program"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ci, path  string
		skipped, failed bool
	}{
		{"present, not executable", "true", present, false, false},
		{"missing", "", filepath.Join(dir, "missing.so"), true, false},
		{"missing in CI", "true", filepath.Join(dir, "missing.so"), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := record(func(tb testing.TB) { testenv.RequireFile(tb, tt.path, "apt-get install -y it") })
			if (r.skipped != "") != tt.skipped || (r.failed != "") != tt.failed {
				t.Errorf("skipped %q, failed %q; want skipped %v, failed %v", r.skipped, r.failed, tt.skipped, tt.failed)
			}
			if msg := r.skipped + r.failed; msg != "" && !strings.Contains(msg, "install it with") {
				t.Errorf("message %q does not say how to install it", msg)
			}
		})
	}
}

func TestRequireNodeModule(t *testing.T) {
	testenv.RequireBinary(t, "node", "apt-get install -y nodejs npm")
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "node_modules", "present"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node_modules", "present", "package.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ci, module string
		skipped, failed  bool
	}{
		{"present", "true", "present", false, false},
		{"missing", "", "missing", true, false},
		{"missing in CI", "true", "missing", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := record(func(tb testing.TB) { testenv.RequireNodeModule(tb, dir, tt.module) })
			if (r.skipped != "") != tt.skipped || (r.failed != "") != tt.failed {
				t.Errorf("skipped %q, failed %q; want skipped %v, failed %v", r.skipped, r.failed, tt.skipped, tt.failed)
			}
			if msg := r.skipped + r.failed; msg != "" && !strings.Contains(msg, "install it with") {
				t.Errorf("message %q does not say how to install it", msg)
			}
		})
	}
}
