package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/testapp"
)

// user is one person running dsctl against a test server, with a config directory of their own.
type user struct {
	env       map[string]string
	configDir string
	email     string
}

func newUser(t *testing.T, a *testapp.App) *user {
	t.Helper()
	dir := t.TempDir()
	return &user{
		env:       map[string]string{"DS_SERVER": a.URL, "XDG_CONFIG_HOME": dir, "HOME": dir},
		configDir: dir,
		email:     "cli-" + strings.ToLower(rand.Text()[:10]) + "@example.com",
	}
}

// run runs dsctl in-process with stdin and returns its output and exit status.
func (u *user) run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut strings.Builder
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut, func(k string) string { return u.env[k] })
	return out.String(), errOut.String(), code
}

// mustRun runs dsctl and fails the test unless it succeeds.
func (u *user) mustRun(t *testing.T, stdin string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, code := u.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("dsctl %s = %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
	}
	return stdout, stderr
}

// mustLogin signs the user up and logs in.
func (u *user) mustLogin(t *testing.T) {
	t.Helper()
	u.mustRun(t, testapp.TestPassword+"\n", "signup", "-email", u.email)
	u.mustRun(t, testapp.TestPassword+"\n", "login", "-email", u.email)
}

func (u *user) credentials(t *testing.T) credentials {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.configDir, "deepersensor", "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	var creds credentials
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatalf("credentials %s: %v", b, err)
	}
	return creds
}

// decodeJSON fails the test unless out is one JSON value of type T.
func decodeJSON[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	return v
}

var conversationLine = regexp.MustCompile(`conversation ([0-9a-f-]{36})\n`)

func TestSignupLogin(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	u := newUser(t, a)
	out, _ := u.mustRun(t, testapp.TestPassword+"\n", "signup", "-email", u.email)
	if !strings.Contains(out, "Created the account "+u.email) {
		t.Errorf("signup printed %q", out)
	}
	// The email may come from stdin too, before the password.
	out, _ = u.mustRun(t, u.email+"\n"+testapp.TestPassword+"\n", "--json", "login")
	if got := decodeJSON[map[string]string](t, out); got["email"] != u.email || got["server"] != a.URL {
		t.Errorf("login --json = %v", got)
	}
	dir := filepath.Join(u.configDir, "deepersensor")
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "credentials.json"): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, mode %v; want %v", path, err, fi.Mode().Perm(), want)
		}
	}
	if creds := u.credentials(t); creds.Server != a.URL || creds.Email != u.email || creds.Tokens.AccessToken == "" || creds.Tokens.RefreshToken == "" {
		t.Errorf("credentials = %+v", creds)
	}
	if out, _ := u.mustRun(t, "", "models"); !strings.Contains(out, "tiny:latest") {
		t.Errorf("models after login = %q", out)
	}

	_, stderr, code := u.run(t, "wrong password\n", "login", "-email", u.email)
	if code != 1 || !regexp.MustCompile(`^error: 401 Unauthorized: invalid email or password \(request \S+\)\n$`).MatchString(stderr) {
		t.Errorf("login with a wrong password = %d, %q", code, stderr)
	}

	out, _ = u.mustRun(t, "", "logout")
	if !strings.Contains(out, "Logged out") {
		t.Errorf("logout printed %q", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "credentials.json")); !os.IsNotExist(err) {
		t.Errorf("credentials after logout: %v, want none", err)
	}
	_, stderr, code = u.run(t, "", "models")
	if code != 1 || !strings.Contains(stderr, "not logged in to "+a.URL) {
		t.Errorf("models after logout = %d, %q", code, stderr)
	}
}

func TestRefreshedSessionIsSaved(t *testing.T) {
	a := testapp.Start(t, testapp.Options{Configure: func(c *config.Config) { c.AccessTokenTTL = time.Second }})
	u := newUser(t, a)
	u.mustLogin(t)
	before := u.credentials(t).Tokens
	time.Sleep(1200 * time.Millisecond)
	u.mustRun(t, "", "models")
	after := u.credentials(t).Tokens
	if after.RefreshToken == before.RefreshToken || after.AccessToken == before.AccessToken {
		t.Errorf("the refreshed session was not saved: before %+v, after %+v", before, after)
	}
	// The saved session is the live one: the next refresh uses it and works.
	time.Sleep(1200 * time.Millisecond)
	u.mustRun(t, "", "models")
}

func TestCommands(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	u := newUser(t, a)
	u.mustLogin(t)
	const answer = ", there was a little girl named Lily. She"

	out, _ := u.mustRun(t, "", "models")
	if !regexp.MustCompile(`(?m)^NAME +SIZE +FAMILY.*\ntiny:latest +1\.1 MiB +llama +293K +unknown\n$`).MatchString(out) {
		t.Errorf("models =\n%s", out)
	}
	out, _ = u.mustRun(t, "", "models", "--json")
	if got := decodeJSON[client.ModelList](t, out); len(got.Models) != 1 || got.Models[0].Name != "tiny:latest" {
		t.Errorf("models --json = %+v", got)
	}

	out, stderr := u.mustRun(t, "", "chat", "-m", "tiny", "Once upon a time")
	m := conversationLine.FindStringSubmatch(stderr)
	if out != answer+"\n" || m == nil {
		t.Fatalf("chat printed %q, stderr %q", out, stderr)
	}
	id := m[1]
	out, _ = u.mustRun(t, "", "chat", "-m", "tiny", "-c", id, "And then?")
	if out != answer+"\n" {
		t.Errorf("chat -c printed %q", out)
	}
	out, _ = u.mustRun(t, "A prompt from stdin", "--json", "chat", "-m", "tiny")
	res := decodeJSON[client.ChatResult](t, out)
	if res.Message.Content != answer {
		t.Errorf("chat --json = %+v", res)
	}

	out, _ = u.mustRun(t, "", "conversations", "list")
	if !strings.Contains(out, id) || !strings.Contains(out, "Once upon a time") || !strings.Contains(out, "A prompt from stdin") {
		t.Errorf("conversations list =\n%s", out)
	}
	out, stderr = u.mustRun(t, "", "conversations", "list", "-limit", "1", "--json")
	page := decodeJSON[client.ConversationPage](t, out)
	if len(page.Items) != 1 || page.Items[0].Id != res.ConversationId || page.NextCursor == nil {
		t.Errorf("conversations list -limit 1 --json = %+v", page)
	}
	out, _ = u.mustRun(t, "", "conversations", "show", id)
	if !strings.HasPrefix(out, "Once upon a time\n") || strings.Count(out, "[assistant]\n"+answer) != 2 || !strings.Contains(out, "[user]\nAnd then?") {
		t.Errorf("conversations show =\n%s", out)
	}
	out, _ = u.mustRun(t, "", "--json", "conversations", "show", id)
	if conv := decodeJSON[client.ConversationDetail](t, out); len(conv.Messages) != 4 {
		t.Errorf("conversations show --json = %+v, want 4 messages", conv)
	}
	out, _ = u.mustRun(t, "", "conversations", "rm", id)
	if out != "Deleted conversation "+id+".\n" {
		t.Errorf("conversations rm printed %q", out)
	}

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a regular expression
	}{
		{"show a deleted conversation", []string{"conversations", "show", id}, 1,
			`^error: 404 Not Found: conversation not found \(request \S+\)\n$`},
		{"unknown model", []string{"chat", "-m", "nope", "hi"}, 1, `^error: 404 Not Found: model not found \(request \S+\)\n$`},
		{"continue a deleted conversation", []string{"chat", "-m", "tiny", "-c", id, "hi"}, 1,
			`^error: 404 Not Found: conversation not found \(request \S+\)\n$`},
		{"no prompt", []string{"chat", "-m", "tiny", " "}, 2, `chat needs a prompt`},
		{"bad id", []string{"conversations", "show", "nope"}, 2, `"nope" is not a conversation id`},
		{"chat without a model", []string{"chat", "hi"}, 2, `chat needs a model`},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", []string{"models", "-x"}, 2, `flag provided but not defined: -x`},
		{"another server", []string{"--server", "http://127.0.0.1:1", "models"}, 1, `not logged in to http://127.0.0.1:1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := u.run(t, "", tt.args...)
			if code != tt.code || !regexp.MustCompile(tt.stderr).MatchString(stderr) {
				t.Errorf("dsctl %s = %d\nstdout: %q\nstderr: %q\nwant %d and stderr matching %s", strings.Join(tt.args, " "), code, stdout, stderr, tt.code, tt.stderr)
			}
		})
	}
}

func TestChatInteractive(t *testing.T) {
	a := testapp.Start(t, testapp.Options{})
	u := newUser(t, a)
	u.mustLogin(t)
	out, stderr := u.mustRun(t, "Once upon a time\n\nAnd then?\n", "chat", "-m", "tiny", "-i")
	const answer = ", there was a little girl named Lily. She\n"
	if out != answer+answer {
		t.Errorf("chat -i printed %q", out)
	}
	ids := conversationLine.FindAllStringSubmatch(stderr, -1)
	if len(ids) != 1 {
		t.Fatalf("chat -i stderr %q: want the conversation id once", stderr)
	}
	out, _ = u.mustRun(t, "", "--json", "conversations", "show", ids[0][1])
	conv := decodeJSON[client.ConversationDetail](t, out)
	if len(conv.Messages) != 4 || conv.Messages[0].Content != "Once upon a time" || conv.Messages[2].Content != "And then?" {
		t.Errorf("conversation = %+v, want both turns", conv)
	}
}
