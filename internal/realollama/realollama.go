// Package realollama runs a real Ollama server for tests against the real thing: the binary that
// scripts/ollama-build.sh builds from the Go module proxy, on a free loopback port, with its own home and model
// store in a temporary folder, serving the tiny llama model ../shared/models/stories260K.gguf.
package realollama

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// BinaryEnv names the environment variable that holds the path of the Ollama binary; `make test-ollama` sets
// it after building or finding the binary.
const BinaryEnv = "DS_OLLAMA_BIN"

// ModelFile is the GGUF file the server serves, looked up in a shared/models folder beside the repository.
const ModelFile = "stories260K.gguf"

// Model is the name the server serves ModelFile under.
const Model = "stories260k"

// modelfile creates Model: a context window small enough to keep every call cheap, and one thread. ggml's
// threads wait for each other spinning, so on a busy machine two of them generate about 100 times slower than
// one (measured here: 4 to 12 tokens/s against 670 to 830 tokens/s); the tiny model needs no more.
const modelfile = "FROM ./" + ModelFile + "\nPARAMETER num_ctx 512\nPARAMETER num_thread 1\n"

// Server is a running Ollama.
type Server struct {
	// URL is its base URL, e.g. http://127.0.0.1:41234.
	URL string

	cmd  *exec.Cmd
	dir  string
	logs *logBuffer
	done chan struct{} // closed when the process has exited
}

// Start starts the Ollama binary as a server in a new temporary folder, creates Model from modelPath and loads
// it with one call. Close stops it and removes the folder.
func Start(ctx context.Context, binary, modelPath string) (*Server, error) {
	dir, err := os.MkdirTemp("", "realollama-")
	if err != nil {
		return nil, fmt.Errorf("make a folder for ollama: %w", err)
	}
	s := &Server{dir: dir, logs: &logBuffer{}, done: make(chan struct{})}
	if err := s.start(ctx, binary, modelPath); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func (s *Server) start(ctx context.Context, binary, modelPath string) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	s.URL = "http://" + addr
	home := filepath.Join(s.dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		return fmt.Errorf("make ollama's home: %w", err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + s.dir,
		"OLLAMA_HOST=" + addr, "OLLAMA_MODELS=" + filepath.Join(s.dir, "models"),
		"OLLAMA_NUM_PARALLEL=1", "OLLAMA_MAX_LOADED_MODELS=1", "OLLAMA_KEEP_ALIVE=-1", "OLLAMA_NO_CLOUD=1",
	}
	s.cmd = exec.Command(binary, "serve")
	s.cmd.Env, s.cmd.Dir = env, s.dir
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	// Its own process group, so that Close also ends the runners it starts; and killed with the test process.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s serve: %w", binary, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		return err
	}

	if err := os.Symlink(modelPath, filepath.Join(s.dir, ModelFile)); err != nil {
		return fmt.Errorf("link the model file: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "Modelfile"), []byte(modelfile), 0o600); err != nil {
		return fmt.Errorf("write the Modelfile: %w", err)
	}
	create := exec.CommandContext(ctx, binary, "create", Model, "-f", "Modelfile")
	create.Env, create.Dir = env, s.dir
	if out, err := create.CombinedOutput(); err != nil {
		return fmt.Errorf("ollama create %s: %w\n%s", Model, err, out)
	}
	warm := `{"model":"` + Model + `","messages":[{"role":"user","content":"Once upon a time"}],"stream":false,"options":{"num_predict":1}}`
	if _, err := s.Post(ctx, "/api/chat", warm); err != nil {
		return fmt.Errorf("load the model: %w", err)
	}
	return nil
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls GET / until the server answers, it exits or timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.done:
			return fmt.Errorf("ollama serve exited before it answered: %s", s.cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ollama serve did not answer on %s within %s", s.URL, timeout)
		}
	}
}

// Post sends a JSON body to path and returns the answer's body, or an error unless the status is 200.
func (s *Server) Post(ctx context.Context, path, body string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("POST %s: read the answer: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST %s: %s: %s", path, resp.Status, out)
	}
	return out, nil
}

// RunnerPIDs returns the process ids of the model runners the server started (`ollama runner ...`): its
// children, found by walking /proc.
func (s *Server) RunnerPIDs() ([]int, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, p := range procs {
		stat, err := p.Stat()
		if err != nil || stat.PPID != s.cmd.Process.Pid {
			continue // it ended meanwhile, or is no child
		}
		if args, err := p.CmdLine(); err == nil && slices.Contains(args, "runner") {
			pids = append(pids, p.PID)
		}
	}
	return pids, nil
}

// KillRunners kills the model runners with SIGKILL; the server starts a new one for the next call.
func (s *Server) KillRunners() ([]int, error) {
	pids, err := s.RunnerPIDs()
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return pids, fmt.Errorf("kill runner %d: %w", pid, err)
		}
	}
	return pids, nil
}

// PostsEnded counts the POST requests to path whose end the server's access log shows: gin writes a request's
// line when its handler returns, which for a stream is when the answer ended or its client went away.
func (s *Server) PostsEnded(path string) int {
	n := 0
	for line := range strings.Lines(s.Logs()) {
		if strings.HasPrefix(line, "[GIN]") && strings.Contains(line, "| POST ") && strings.HasSuffix(strings.TrimSpace(line), `"`+path+`"`) {
			n++
		}
	}
	return n
}

// Logs returns what the server has printed so far.
func (s *Server) Logs() string { return s.logs.String() }

// Close stops the server and its runners and removes its folder.
func (s *Server) Close() error {
	var err error
	if s.cmd != nil && s.cmd.Process != nil {
		// The whole process group: the server and the runners it started.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
			err = errors.New("ollama serve did not stop within 10s of SIGTERM")
		}
	}
	if rmErr := os.RemoveAll(s.dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove ollama's folder: %w", rmErr))
	}
	return err
}

// FindModel looks for shared/models/ModelFile in each folder above dir, the repository's root, so that a
// checkout beside the shared folder (../shared, from ../main or ../ci-check) finds it.
func FindModel(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		path := filepath.Join(d, "shared", "models", ModelFile)
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no shared/models/%s in any folder above %s", ModelFile, dir)
		}
	}
}

// logBuffer keeps what the server prints, for a failing test to show; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
