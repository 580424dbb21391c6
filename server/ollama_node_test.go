package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/ollamatest"
	"github.com/deepersensor/deepersensor/internal/testapp"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// ollamaNodeDir is the Node project with the official npm clients.
var ollamaNodeDir = filepath.Join("..", "clients", "node")

// runOllamaJS runs clients/node/ollama.mjs with args against the service's Ollama API, with a new API key of
// a new user as its credential, and decodes what it printed into result. Call testenv.RequireNodeModule first.
func runOllamaJS(t *testing.T, a *testapp.App, model string, result any, args ...string) {
	t.Helper()
	key, err := a.UserClient(t).CreateAPIKeyWithResponse(context.Background(), client.NewAPIKey{Name: "ollama-js"})
	if err != nil {
		t.Fatal(err)
	}
	if key.JSON201 == nil {
		t.Fatalf("create API key = %d %s", key.StatusCode(), key.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{"ollama.mjs"}, args...)...)
	cmd.Dir = ollamaNodeDir
	cmd.Env = append(os.Environ(), "DS_BASE_URL="+a.URL+"/ollama", "DS_API_KEY="+key.JSON201.Secret, "DS_MODEL="+model)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("node ollama.mjs: %v\n%s\n%s", err, out, stderr)
	}
	if err := json.Unmarshal(out, result); err != nil {
		t.Fatalf("decode what node printed: %v\n%s", err, out)
	}
}

// ollamaJSFailure is how ollama.mjs describes an error that the client threw.
type ollamaJSFailure struct {
	Name    string `json:"name"`
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// ollamaJSStream is how ollama.mjs sums up a stream.
type ollamaJSStream struct {
	Parts int            `json:"parts"`
	Text  string         `json:"text"`
	Last  map[string]any `json:"last"`
}

// TestOllamaOfficialClient runs the official `ollama` npm package, pointed at /ollama with an API key in its
// Authorization header, through a chat, a streamed chat, a generate, a model list and the other routes.
func TestOllamaOfficialClient(t *testing.T) {
	testenv.RequireNodeModule(t, ollamaNodeDir, "ollama")
	model := ollamatest.Tiny()
	model.Name = "library/tiny:7b"
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Models: []ollamatest.Model{ollamatest.Tiny(), model}}})
	var got struct {
		Chat, Generate             map[string]any
		Streamed, StreamedGenerate ollamaJSStream
		Models                     []string
		Show, Embed, Version       map[string]any
		BadKey, UnknownModel, Pull ollamaJSFailure
	}
	runOllamaJS(t, a, model.Name, &got)

	for name, answer := range map[string]map[string]any{
		"chat": got.Chat, "generate": got.Generate,
		"streamed chat's last part": got.Streamed.Last, "streamed generate's last part": got.StreamedGenerate.Last,
	} {
		if answer["model"] != model.Name || answer["done"] != true || answer["done_reason"] != "stop" || answer["eval_count"] != 12.0 {
			t.Errorf("%s: %v, want done with model %s, done_reason stop and 12 tokens", name, answer, model.Name)
		}
	}
	if content := got.Chat["message"].(map[string]any)["content"]; content != ollamaStory || got.Generate["response"] != ollamaStory {
		t.Errorf("chat %v, generate %v: want the whole story", got.Chat, got.Generate)
	}
	for name, s := range map[string]ollamaJSStream{"streamed chat": got.Streamed, "streamed generate": got.StreamedGenerate} {
		if s.Parts != 13 || s.Text != ollamaStory {
			t.Errorf("%s: %d parts %q, want 13 parts %q", name, s.Parts, s.Text, ollamaStory)
		}
	}
	if !slices.Equal(got.Models, []string{"tiny:latest", model.Name}) {
		t.Errorf("models %v", got.Models)
	}
	if got.Show["capabilities"] == nil || got.Show["details"].(map[string]any)["format"] != "gguf" {
		t.Errorf("show %v", got.Show)
	}
	if embeddings, _ := got.Embed["embeddings"].([]any); len(embeddings) != 2 {
		t.Errorf("embed %v", got.Embed)
	}
	spec, _ := testapp.Contract(t)
	if got.Version["version"] != spec.Info.Version {
		t.Errorf("version %v", got.Version)
	}
	for name, f := range map[string]struct {
		got  ollamaJSFailure
		want ollamaJSFailure
	}{
		"bad key":       {got.BadKey, ollamaJSFailure{"ResponseError", http.StatusUnauthorized, "the token is invalid, expired or revoked"}},
		"unknown model": {got.UnknownModel, ollamaJSFailure{"ResponseError", http.StatusNotFound, "model 'llama9:70b' not found"}},
		"pull":          {got.Pull, ollamaJSFailure{"ResponseError", http.StatusNotFound, "no such route"}},
	} {
		if f.got != f.want {
			t.Errorf("%s: the client threw %+v, want %+v", name, f.got, f.want)
		}
	}
}

// TestOllamaOfficialClientStreamFailsMidway checks that the official client throws the error line of a
// stream that the model server breaks after three chunks, having yielded those.
func TestOllamaOfficialClientStreamFailsMidway(t *testing.T) {
	testenv.RequireNodeModule(t, ollamaNodeDir, "ollama")
	a := testapp.Start(t, testapp.Options{Ollama: ollamatest.Options{Fault: &ollamatest.Fault{After: 3, Error: "runner died"}}})
	var got struct {
		Midway struct {
			ollamaJSFailure
			Before ollamaJSStream `json:"before"`
		}
	}
	runOllamaJS(t, a, "tiny", &got, "midway")
	want := ollamaJSFailure{Name: "Error", Message: "the model provider failed in the middle of the answer"}
	if got.Midway.ollamaJSFailure != want || got.Midway.Before.Parts != 3 || got.Midway.Before.Text != ", there was" {
		t.Errorf("the client saw %+v, want %+v after 3 parts", got.Midway, want)
	}
}
