// Package testenv tells tests about the machine they run on, so that a test that needs a program the Go
// toolchain does not bring, such as nginx or Chromium, skips on a developer's machine without it and fails in
// CI, where .ci/run installs it and a skip would hide a test that never ran.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI, which sets CI=true as most CI services do.
func InCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// RequireBinary makes sure that path is an executable file. When it is not, tb is skipped, with install as
// the command that installs it, or fails in CI.
func RequireBinary(tb testing.TB, path, install string) {
	tb.Helper()
	_, err := exec.LookPath(path)
	require(tb, path, err, install)
}

// RequireFile makes sure that path exists, such as a module that a program loads. When it does not, tb is
// skipped, with install as the command that installs it, or fails in CI.
func RequireFile(tb testing.TB, path, install string) {
	tb.Helper()
	_, err := os.Stat(path)
	require(tb, path, err, install)
}

// RequireNodeModule makes sure that node is installed, and the npm package name in the Node project at dir.
// When they are not, tb is skipped, with the command that installs them, or fails in CI.
func RequireNodeModule(tb testing.TB, dir, name string) {
	tb.Helper()
	RequireBinary(tb, "node", "apt-get install -y nodejs npm")
	_, err := os.Stat(filepath.Join(dir, "node_modules", name, "package.json"))
	require(tb, "the npm package "+name, err, "cd "+dir+" && npm ci")
}

// require does nothing when err is nil; otherwise what is missing, and tb is skipped, with install as the
// command that installs it, or fails in CI.
func require(tb testing.TB, what string, err error, install string) {
	tb.Helper()
	if err == nil {
		return
	}
	if InCI() {
		tb.Fatalf("%s is required in CI but missing (%v): install it with `%s`", what, err, install)
	}
	tb.Skipf("%s is missing (%v): install it with `%s` to run this test", what, err, install)
}
