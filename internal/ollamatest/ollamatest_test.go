package ollamatest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/internal/ollamatest"
)

// recording is one case of testdata/: the request sent to the real Ollama and its raw answer.
type recording struct {
	method, path string
	body         []byte // nil: no body
	status       int
	header       http.Header
	answer       []byte
}

func mustLoad(tb testing.TB, name string) recording {
	tb.Helper()
	req, err := os.ReadFile(filepath.Join("testdata", name+".req"))
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", name+".http"))
	if err != nil {
		tb.Fatal(err)
	}
	var rec recording
	reqLines := strings.Split(string(req), "\n")
	rec.method, rec.path, _ = strings.Cut(reqLines[0], " ")
	if len(reqLines) > 1 && reqLines[1] != "" && !strings.HasPrefix(reqLines[1], "#") {
		rec.body = []byte(reqLines[1])
	}
	head, answer, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		tb.Fatalf("%s.http: no blank line after the headers", name)
	}
	rec.answer = answer
	lines := strings.Split(string(head), "\r\n")
	if _, err := fmt.Sscanf(lines[0], "HTTP/1.1 %d", &rec.status); err != nil {
		tb.Fatalf("%s.http: status line %q: %v", name, lines[0], err)
	}
	rec.header = http.Header{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		rec.header.Add(k, v)
	}
	return rec
}

func (rec recording) send(tb testing.TB, url string) *http.Response {
	tb.Helper()
	var body io.Reader
	if rec.body != nil {
		body = bytes.NewReader(rec.body)
	}
	req, err := http.NewRequest(rec.method, url+rec.path, body)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// lines splits an NDJSON answer into its objects.
func lines(body []byte) []string {
	return strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
}

// chatOptions derives from a recorded /api/chat answer the options that make the fake answer the same:
// its content chunks, done reason and, if it ends with an error line, the fault.
func chatOptions(tb testing.TB, answer []byte) ollamatest.Options {
	tb.Helper()
	opts := ollamatest.Options{Tokens: []string{}}
	for _, l := range lines(answer) {
		var obj struct {
			Message    struct{ Content string }
			Done       bool
			DoneReason string `json:"done_reason"`
			Error      string
		}
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			tb.Fatalf("line %q: %v", l, err)
		}
		switch {
		case obj.Error != "":
			opts.Fault = &ollamatest.Fault{After: len(opts.Tokens), Error: obj.Error}
		case obj.Done:
			opts.DoneReason = obj.DoneReason
			if obj.Message.Content != "" {
				opts.Tokens = append(opts.Tokens, obj.Message.Content)
			}
		default:
			opts.Tokens = append(opts.Tokens, obj.Message.Content)
		}
	}
	return opts
}

// TestMatchesRecordings replays recorded requests against the fake and compares status, content type,
// framing (Content-Length or chunked, trailing newline) and bodies: byte for byte where the recording has
// no timestamps or timings, and by shape (key order, value types, values other than times and counters)
// where it has.
func TestMatchesRecordings(t *testing.T) {
	tests := []struct {
		name    string
		opts    func(rec recording) ollamatest.Options
		exact   bool            // compare bodies byte for byte
		ignored map[string]bool // keys whose values are compared by type only
	}{
		{name: "chat_stream"},
		{name: "chat_stream_stop_sequence"},
		{name: "chat_runner_killed_midstream"},
		{name: "chat_nostream"},
		{name: "chat_multiturn"},
		{name: "chat_name_with_tag"},
		{name: "chat_load_only"},
		{name: "chat_unload"},
		{name: "chat_unknown_model", exact: true},
		{name: "chat_unknown_model_nostream", exact: true},
		{name: "chat_malformed_json", exact: true},
		{name: "chat_empty_body", exact: true},
		{name: "chat_no_model", exact: true},
		{name: "chat_bad_option_type", exact: true, opts: func(recording) ollamatest.Options {
			return ollamatest.Options{Status: 500, StatusMessage: `option "num_predict" must be of type integer`}
		}},
		{name: "show_unknown", exact: true},
		{name: "tags", exact: true},
		{name: "root", exact: true},
		{name: "show", ignored: map[string]bool{"modelfile": true, "parent_model": true, "model_info": true, "tensors": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := mustLoad(t, tt.name)
			var opts ollamatest.Options
			switch {
			case tt.opts != nil:
				opts = tt.opts(rec)
			case rec.path == "/api/chat" && rec.status == http.StatusOK:
				opts = chatOptions(t, rec.answer)
			}
			fake := ollamatest.New(t, opts)
			resp := rec.send(t, fake.URL)
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}

			if resp.StatusCode != rec.status {
				t.Errorf("status = %d, recorded %d", resp.StatusCode, rec.status)
			}
			if g, w := resp.Header.Get("Content-Type"), rec.header.Get("Content-Type"); g != w {
				t.Errorf("Content-Type = %q, recorded %q", g, w)
			}
			recChunked := rec.header.Get("Transfer-Encoding") == "chunked"
			if chunked := slices.Contains(resp.TransferEncoding, "chunked"); chunked != recChunked {
				t.Errorf("chunked = %v, recorded %v", chunked, recChunked)
			}
			if bytes.HasSuffix(got, []byte("\n")) != bytes.HasSuffix(rec.answer, []byte("\n")) {
				t.Errorf("trailing newline differs:\n got %q\nwant %q", got, rec.answer)
			}
			if tt.exact {
				if !bytes.Equal(got, rec.answer) {
					t.Errorf("body:\n got %s\nwant %s", got, rec.answer)
				}
				if cl := rec.header.Get("Content-Length"); cl != "" && fmt.Sprint(resp.ContentLength) != cl {
					t.Errorf("Content-Length = %d, recorded %s", resp.ContentLength, cl)
				}
				return
			}
			ignored := tt.ignored
			if ignored == nil {
				ignored = map[string]bool{"created_at": true, "total_duration": true, "load_duration": true,
					"prompt_eval_count": true, "prompt_eval_duration": true, "eval_count": true, "eval_duration": true}
			}
			gotLines, wantLines := lines(got), lines(rec.answer)
			if len(gotLines) != len(wantLines) {
				t.Fatalf("%d lines, recorded %d:\n%s", len(gotLines), len(wantLines), got)
			}
			for i := range gotLines {
				if g, w := mustShape(t, gotLines[i], ignored), mustShape(t, wantLines[i], ignored); g != w {
					t.Errorf("line %d:\n got %s\nwant %s", i+1, g, w)
				}
			}
		})
	}
}

// mustShape renders a JSON document with its key order, replacing the values of ignored keys by their type.
func mustShape(tb testing.TB, doc string, ignored map[string]bool) string {
	tb.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var sb strings.Builder
	if err := writeShape(dec, &sb, ignored); err != nil {
		tb.Fatalf("%s: %v", doc, err)
	}
	return sb.String()
}

func writeShape(dec *json.Decoder, sb *strings.Builder, ignored map[string]bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		b, err := json.Marshal(tok)
		sb.Write(b)
		return err
	}
	sb.WriteRune(rune(delim))
	for first := true; dec.More(); first = false {
		if !first {
			sb.WriteByte(',')
		}
		if delim == '{' {
			key, err := dec.Token()
			if err != nil {
				return err
			}
			fmt.Fprintf(sb, "%q:", key)
			if ignored[key.(string)] {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return err
				}
				fmt.Fprintf(sb, "<%s>", kind(raw))
				continue
			}
		}
		if err := writeShape(dec, sb, ignored); err != nil {
			return err
		}
	}
	end, err := dec.Token()
	sb.WriteString(fmt.Sprint(end))
	return err
}

func kind(raw json.RawMessage) string {
	switch raw[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

func TestShowModelInfo(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	resp := mustLoad(t, "show").send(t, fake.URL)
	var show struct {
		ModelInfo map[string]any `json:"model_info"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&show); err != nil {
		t.Fatal(err)
	}
	if show.ModelInfo["general.architecture"] != "llama" || show.ModelInfo["llama.context_length"] != float64(2048) {
		t.Errorf("model_info = %v, want general.architecture llama and llama.context_length 2048", show.ModelInfo)
	}
}

func TestStreamCounters(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{Tokens: []string{"a", "b", "c"}})
	resp := post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"one two"},{"role":"user","content":"three"}]}`)
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(body)
	var final struct {
		PromptEvalCount int `json:"prompt_eval_count"`
		EvalCount       int `json:"eval_count"`
	}
	if err := json.Unmarshal([]byte(ls[len(ls)-1]), &final); err != nil {
		t.Fatal(err)
	}
	if len(ls) != 4 || final.PromptEvalCount != 3 || final.EvalCount != 3 {
		t.Errorf("%d lines, final %+v; want 4 lines, prompt_eval_count 3 (words), eval_count 3", len(ls), final)
	}
}

func post(tb testing.TB, url, body string) *http.Response {
	tb.Helper()
	resp, err := http.Post(url+"/api/chat", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

func TestRecordsRequests(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	post(t, fake.URL, `{"model":"tiny","stream":false,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}],"options":{"seed":42}}`)
	resp, err := http.Get(fake.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()

	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[0].Path != "/api/chat" || reqs[1].Method != http.MethodGet || reqs[1].Path != "/api/tags" {
		t.Fatalf("requests = %+v", reqs)
	}
	chats := fake.ChatRequests()
	if len(chats) != 1 {
		t.Fatalf("%d chat requests, want 1", len(chats))
	}
	c := chats[0]
	want := []ollamatest.Message{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}}
	if c.Model != "tiny" || c.Stream == nil || *c.Stream || !slices.Equal(c.Messages, want) || c.Options["seed"] != float64(42) {
		t.Errorf("chat request = %+v", c)
	}
}

func TestStatusAppliesToAPIOnly(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{Status: http.StatusServiceUnavailable})
	resp, err := http.Get(fake.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != `{"error":"service unavailable"}` {
		t.Errorf("/api/tags: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get(fake.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/: status %d, want 200", resp.StatusCode)
	}
}

// TestClientGoneIsCancelled replays chat_cancelled: the client reads three lines and hangs up.
func TestClientGoneIsCancelled(t *testing.T) {
	rec := mustLoad(t, "chat_cancelled")
	fake := ollamatest.New(t, ollamatest.Options{Tokens: slices.Repeat([]string{"x"}, 1000), ChunkDelay: 10 * time.Millisecond})
	resp := rec.send(t, fake.URL)
	br := bufio.NewReader(resp.Body)
	for range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	_ = resp.Body.Close()
	if !fake.WaitCancelled(1, time.Second) {
		t.Fatal("the fake did not see the client go away")
	}
}

func TestInitialDelayHoldsHeaders(t *testing.T) {
	const delay = 200 * time.Millisecond
	fake := ollamatest.New(t, ollamatest.Options{InitialDelay: delay})
	start := time.Now()
	post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
	if d := time.Since(start); d < delay {
		t.Errorf("headers after %v, want after the initial delay %v", d, delay)
	}
}

func TestChunksAreFlushedOneByOne(t *testing.T) {
	const delay = 100 * time.Millisecond
	fake := ollamatest.New(t, ollamatest.Options{Tokens: []string{"a", "b", "c", "d"}, ChunkDelay: delay})
	start := time.Now()
	resp := post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
	br := bufio.NewReader(resp.Body)
	var at []time.Duration
	for {
		if _, err := br.ReadString('\n'); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		at = append(at, time.Since(start))
	}
	if len(at) != 5 {
		t.Fatalf("%d lines, want 5", len(at))
	}
	if at[0] > 2*delay || at[4]-at[0] < 3*delay {
		t.Errorf("lines arrived at %v; want the first at once and the rest %v apart", at, delay)
	}
}

func TestStallEndsOnClose(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{Fault: &ollamatest.Fault{After: 2}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL+"/api/chat",
		strings.NewReader(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for range 2 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	read := make(chan error, 1)
	go func() {
		_, err := br.ReadString('\n')
		read <- err
	}()
	select {
	case err := <-read:
		t.Fatalf("read after the stall point returned %v, want it to block", err)
	case <-time.After(100 * time.Millisecond):
	}

	closed := make(chan struct{})
	go func() {
		fake.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked on a stalled stream")
	}
	if err := <-read; err == nil {
		t.Error("read after Close succeeded, want an error")
	}
	if n := fake.Cancelled(); n != 0 {
		t.Errorf("Cancelled() = %d after the server closed, want 0", n)
	}
}

// TestEmbed checks /api/embed: one text or a list, vectors of Embedding in input order, Ollama's field order,
// and Ollama's 404 for an unknown model.
func TestEmbed(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{})
	embed := func(body string) (int, string) {
		resp, err := http.Post(fake.URL+"/api/embed", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for input, texts := range map[string][]string{`"why is the sky blue"`: {"why is the sky blue"}, `["a","b"]`: {"a", "b"}} {
		status, body := embed(`{"model":"tiny","input":` + input + `}`)
		var out struct {
			Model           string      `json:"model"`
			Embeddings      [][]float64 `json:"embeddings"`
			PromptEvalCount int         `json:"prompt_eval_count"`
		}
		if err := json.Unmarshal([]byte(body), &out); err != nil || status != http.StatusOK {
			t.Fatalf("embed %s = %d %s", input, status, body)
		}
		if !strings.HasPrefix(body, `{"model":"tiny","embeddings":[[`) || !strings.Contains(body, `"total_duration":`) ||
			!strings.Contains(body, `"load_duration":`) {
			t.Errorf("embed %s = %s, not in Ollama's shape", input, body)
		}
		if len(out.Embeddings) != len(texts) || out.PromptEvalCount == 0 {
			t.Fatalf("embed %s = %s", input, body)
		}
		for i, v := range out.Embeddings {
			if !slices.Equal(v, ollamatest.Embedding("tiny:latest", texts[i])) {
				t.Errorf("vector %d = %v, want Embedding of %q", i, v, texts[i])
			}
		}
	}
	v := ollamatest.Embedding("tiny:latest", "x")
	var norm float64
	for _, x := range v {
		norm += x * x
	}
	if len(v) != ollamatest.EmbeddingSize || norm < 0.999 || norm > 1.001 || slices.Equal(v, ollamatest.Embedding("tiny:latest", "y")) {
		t.Errorf("Embedding = %v (norm² %v): want %d numbers of length 1, differing by text", v, norm, ollamatest.EmbeddingSize)
	}
	if status, body := embed(`{"model":"nope","input":"x"}`); status != http.StatusNotFound || body != `{"error":"model \"nope\" not found, try pulling it first"}` {
		t.Errorf("unknown model = %d %s", status, body)
	}
}

// TestBreaks checks each way Break breaks an answer, streamed (what the client reads up to the break, and
// after it) and not.
func TestBreaks(t *testing.T) {
	tokens := []string{"a", "b", "c", "d"}
	const after = 2
	tests := []struct {
		name string
		how  ollamatest.BreakKind
		// streamed checks the lines read and how reading ended; answer checks a non-streamed answer.
		streamed func(t *testing.T, lines []string, err error)
		answer   func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{
			name: "disconnect",
			how:  ollamatest.Disconnect,
			streamed: func(t *testing.T, lines []string, err error) {
				if !errors.Is(err, io.ErrUnexpectedEOF) || len(lines) != after {
					t.Errorf("%d lines, then %v; want the %d lines before the break, then an unexpected EOF", len(lines), err, after)
				}
			},
			answer: func(t *testing.T, _ *http.Response, body []byte, err error) {
				if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) == 0 {
					t.Errorf("read %d bytes, then %v; want part of the answer, then an unexpected EOF", len(body), err)
				}
			},
		},
		{
			name: "malformed line",
			how:  ollamatest.MalformedLine,
			streamed: func(t *testing.T, lines []string, err error) {
				if err != nil || len(lines) != len(tokens)+2 || json.Valid([]byte(lines[after])) || !json.Valid([]byte(lines[after+1])) {
					t.Errorf("lines %q, %v; want line %d not JSON and the rest of the answer after it", lines, err, after+1)
				}
			},
			answer: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.StatusCode != http.StatusOK || len(body) == 0 || json.Valid(body) {
					t.Errorf("%d %q, %v; want a 200 whose body is not JSON", resp.StatusCode, body, err)
				}
			},
		},
		{
			name: "huge line",
			how:  ollamatest.HugeLine,
			streamed: func(t *testing.T, lines []string, err error) {
				if err != nil || len(lines) != len(tokens)+2 || hugeContent(t, lines[after]) != "" {
					t.Errorf("%d lines, %v; want line %d with %d bytes of content and the rest of the answer after it",
						len(lines), err, after+1, ollamatest.HugeLineSize)
				}
			},
			answer: func(t *testing.T, resp *http.Response, body []byte, err error) {
				if err != nil || resp.StatusCode != http.StatusOK || hugeContent(t, string(body)) != "abcd" {
					t.Errorf("%d, %d bytes, %v; want a 200 with the huge content before the answer's", resp.StatusCode, len(body), err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := ollamatest.New(t, ollamatest.Options{Tokens: tokens, Break: &ollamatest.Break{After: after, How: tt.how}})
			resp := post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
			var got []string
			br := bufio.NewReader(resp.Body)
			var err error
			for {
				var line string
				if line, err = br.ReadString('\n'); err != nil {
					break
				}
				got = append(got, strings.TrimSuffix(line, "\n"))
			}
			if err == io.EOF {
				err = nil
			}
			tt.streamed(t, got, err)

			resp = post(t, fake.URL, `{"model":"tiny","stream":false,"messages":[{"role":"user","content":"hi"}]}`)
			body, err := io.ReadAll(resp.Body)
			tt.answer(t, resp, body, err)
		})
	}
}

// hugeContent checks that a chat answer or line has HugeLineSize bytes of "x" at the start of its content,
// and returns the rest of the content. It decodes the line without them: decoding 10 MiB takes seconds
// under the race detector.
func hugeContent(tb testing.TB, line string) string {
	tb.Helper()
	const key = `"content":"`
	at := strings.Index(line, key) + len(key)
	if at < len(key) || len(line) < at+ollamatest.HugeLineSize || line[at:at+ollamatest.HugeLineSize] != strings.Repeat("x", ollamatest.HugeLineSize) {
		tb.Fatalf("line of %d bytes does not hold %d bytes of x as its content", len(line), ollamatest.HugeLineSize)
	}
	return contentOf(tb, line[:at]+line[at+ollamatest.HugeLineSize:])
}

// contentOf returns the message content of a chat answer or line.
func contentOf(tb testing.TB, line string) string {
	tb.Helper()
	var obj struct{ Message struct{ Content string } }
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		tb.Fatalf("line of %d bytes: %v", len(line), err)
	}
	return obj.Message.Content
}

func TestChatStatusAppliesToChatOnly(t *testing.T) {
	const msg = "llama runner process has terminated: exit status 2"
	fake := ollamatest.New(t, ollamatest.Options{ChatStatus: http.StatusInternalServerError, StatusMessage: msg})
	resp := post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || string(body) != `{"error":"`+msg+`"}` {
		t.Errorf("/api/chat: %d %s", resp.StatusCode, body)
	}
	tags, err := http.Get(fake.URL + "/api/tags")
	if err != nil {
		t.Fatal(err)
	}
	_ = tags.Body.Close()
	if tags.StatusCode != http.StatusOK {
		t.Errorf("/api/tags: status %d, want 200", tags.StatusCode)
	}
}

// TestEndless checks that an endless answer keeps coming, without a final chunk, until the client leaves,
// and that a non-streamed one never comes.
func TestEndless(t *testing.T) {
	fake := ollamatest.New(t, ollamatest.Options{Tokens: []string{"a", "b", "c"}, Endless: true, ChunkDelay: time.Millisecond})
	resp := post(t, fake.URL, `{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)
	br := bufio.NewReader(resp.Body)
	var text strings.Builder
	for range 20 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, `"done":true`) {
			t.Fatalf("final chunk %s", line)
		}
		text.WriteString(contentOf(t, line))
	}
	if text.String() != strings.Repeat("abc", 7)[:20] {
		t.Errorf("content %q, want the tokens over and over", text.String())
	}
	_ = resp.Body.Close()
	if !fake.WaitCancelled(1, time.Second) {
		t.Error("the fake did not see the client go away")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL+"/api/chat",
		strings.NewReader(`{"model":"tiny","stream":false,"messages":[{"role":"user","content":"hi"}]}`))
	if resp, err := http.DefaultClient.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("non-streamed answer: %v, %v; want none before the deadline", resp, err)
		if resp != nil {
			_ = resp.Body.Close()
		}
	}
}
