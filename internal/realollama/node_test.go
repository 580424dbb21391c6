package realollama_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/realollama"
	"github.com/deepersensor/deepersensor/internal/testenv"
)

// nodeDir is the Node project with the official npm clients.
var nodeDir = filepath.Join("..", "..", "clients", "node")

// TestOfficialNodeClients runs the official `ollama` and `openai` npm packages through the gateway against the
// real model (clients/node/real-model.mjs): each answer, whole or streamed, is the one Ollama gives directly.
func TestOfficialNodeClients(t *testing.T) {
	const n = 48
	r := newRig(t)
	testenv.RequireNodeModule(t, nodeDir, "ollama")
	testenv.RequireNodeModule(t, nodeDir, "openai")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "node", "real-model.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "DS_URL="+r.app.URL, "DS_API_KEY="+r.key, "DS_MODEL="+realollama.Model,
		"DS_PROMPT="+prompt, "DS_NUM_PREDICT="+strconv.Itoa(n))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node real-model.mjs: %v\n%s\n%s", err, out, stderr)
	}
	type stream struct {
		Parts int
		Text  string
	}
	var got struct {
		OllamaChat, OllamaGenerate, OpenAI                   string
		OllamaChatStream, OllamaGenerateStream, OpenAIStream stream
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decode what node printed: %v\n%s", err, out)
	}

	chat := readAnswer(t, r.direct(t, ctx, "/api/chat", ollamaChatBody(n, false))).text
	generate := readAnswer(t, r.direct(t, ctx, "/api/generate", generateBody(n, false))).text
	openai := readAnswer(t, r.direct(t, ctx, "/v1/chat/completions", openaiBody(n, false))).text
	for _, c := range []struct {
		name, got, want string
		parts           int // pieces of text in a stream; 0 for a whole answer
	}{
		{"ollama chat", got.OllamaChat, chat, 0},
		{"ollama chat stream", got.OllamaChatStream.Text, chat, got.OllamaChatStream.Parts},
		{"ollama generate", got.OllamaGenerate, generate, 0},
		{"ollama generate stream", got.OllamaGenerateStream.Text, generate, got.OllamaGenerateStream.Parts},
		{"openai", got.OpenAI, openai, 0},
		{"openai stream", got.OpenAIStream.Text, openai, got.OpenAIStream.Parts},
	} {
		if c.got != c.want || len(strings.Fields(c.want)) < 5 {
			t.Errorf("%s: the client got %q, Ollama answers %q directly: want the same answer of several words", c.name, c.got, c.want)
		}
		if strings.HasSuffix(c.name, "stream") && c.parts < n/2 {
			t.Errorf("%s: %d pieces of text for %d tokens, want one a token or so", c.name, c.parts, n)
		}
	}
}
