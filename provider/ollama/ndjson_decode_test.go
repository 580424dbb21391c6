package ollama

// Internal tests: the decoder is unexported, and encoding/json is its oracle.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recordedLines returns every JSON line of the recorded Ollama answers shared with the fake.
func recordedLines(tb testing.TB) [][]byte {
	tb.Helper()
	files, err := filepath.Glob("../../internal/ollamatest/testdata/*.http")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no recordings: %v", err)
	}
	var out [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		for l := range bytes.Lines(body) {
			if l = bytes.TrimSuffix(l, []byte("\n")); len(l) > 0 && l[0] == '{' {
				out = append(out, l)
			}
		}
	}
	return out
}

// handWritten are lines that exercise what the recordings do not.
var handWritten = []string{
	`{"message":{"role":"assistant","content":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t"},"done":false}`,
	`{"message":{"content":"héllo wörld 😀 日本"},"done":false}`,
	`{"message":{"content":"lone \ud800 and \udc00 and \ud800\u0041 and \ud83d\ud83d\ude00"}}`,
	"{\"message\":{\"content\":\"bad utf8 \xff\xfe\"}}",
	"{\"message\":{\"content\":\"bad utf8 after escape \\n \xc3\"}}",
	`{"message":{"content":"bad escape \x"}}`,
	`{"message":{"content":"raw` + "\x01" + `control"}}`,
	`{"Message":{"Content":"case folded"},"DONE":true}`,
	`{"done_reaſon":"kelvin \u212a"}`,
	`{"message":{"content":"a","thinking":"hmm","tool_calls":[{"function":{"name":"f","arguments":{"x":[1,2.5e3,-0,true,null]}}}]},"done":false}`,
	`{"message":null,"done":null,"eval_count":null}`,
	`{"eval_count":1.0}`, `{"eval_count":-1}`, `{"eval_count":01}`, `{"eval_count":123456789012345678901}`,
	`{"done":true,"done_reason":"stop","eval_count":9223372036854775807}`,
	`{"done_reason":"len\u0067th"}`,
	`  { "message" : { "content" : "spaces" } , "done" : false }  `,
	`{"message":{"content":"x"},"message":{"role":"y"}}`,
	`{"message":{"content":"trailing"}} x`,
	`{"message":{"content":"comma"},}`,
	`{"a":[1,]}`, `{"a":[01]}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":tru}`, `{"k\u0065y":1}`,
	`{}`, `[]`, ``, `{`, `"x"`, `{"error":"model 'x' not found"}`,
	`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
}

func FuzzNDJSONDecode(f *testing.F) {
	for _, l := range recordedLines(f) {
		f.Add(l)
	}
	for _, l := range handWritten {
		f.Add([]byte(l))
	}
	var d lineDecoder
	f.Fuzz(func(t *testing.T, line []byte) {
		var got, want chatLine
		err := d.decode(line, &got)
		wantErr := json.Unmarshal(line, &want)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: error %v, encoding/json %v", line, err, wantErr)
		}
		if err == nil && got != want {
			t.Fatalf("%q:\n got %+v\nwant %+v", line, got, want)
		}
	})
}

// TestFastPathCoversRecordings checks that no recorded line needs the encoding/json fallback.
func TestFastPathCoversRecordings(t *testing.T) {
	var d lineDecoder
	for _, l := range recordedLines(t) {
		var out chatLine
		if !d.fast(l, &out) {
			t.Errorf("fast path refused %s", l)
		}
	}
}

func TestDecodeFinalLine(t *testing.T) {
	line := `{"model":"tiny","created_at":"2026-11-25T21:25:04.165867644Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":11480547,"load_duration":2846146,"prompt_eval_count":5,"prompt_eval_duration":1640722,"eval_count":12,"eval_duration":5330604}`
	var d lineDecoder
	var got chatLine
	if err := d.decode([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	want := chatLine{Done: true, DoneReason: "length", TotalDuration: 11480547, LoadDuration: 2846146,
		PromptEvalCount: 5, PromptEvalDuration: 1640722, EvalCount: 12, EvalDuration: 5330604}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if u := got.usage(); u.PromptTokens != 5 || u.CompletionTokens != 12 || u.EvalDuration != 5330604*time.Nanosecond {
		t.Errorf("usage = %+v", u)
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 10000)
	lr := lineReader{br: bufio.NewReaderSize(strings.NewReader("a\r\n\n"+long+"\nlast"), 16)}
	for _, want := range []string{"a", "", long, "last"} {
		got, err := lr.next()
		if err != nil || string(got) != want {
			t.Fatalf("next() = %.20q, %v; want %.20q", got, err, want)
		}
	}
	if _, err := lr.next(); err != io.EOF {
		t.Errorf("after the last line: %v, want io.EOF", err)
	}
}

func BenchmarkNDJSONDecode(b *testing.B) {
	lines := map[string]string{
		"chunk":   `{"model":"tiny","created_at":"2026-11-25T21:25:04.161539062Z","message":{"role":"assistant","content":" there"},"done":false}`,
		"escaped": `{"model":"tiny","created_at":"2026-11-25T21:25:04.161539062Z","message":{"role":"assistant","content":"{ \n\"Hi, Lily!\": \u00e9\ud83d\ude00"},"done":false}`,
		"final":   `{"model":"tiny","created_at":"2026-11-25T21:25:04.165867644Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","total_duration":11480547,"load_duration":2846146,"prompt_eval_count":5,"prompt_eval_duration":1640722,"eval_count":12,"eval_duration":5330604}`,
	}
	for _, name := range []string{"chunk", "escaped", "final"} {
		line := []byte(lines[name])
		b.Run(name, func(b *testing.B) {
			var d lineDecoder
			var out chatLine
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if err := d.decode(line, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/encoding_json", func(b *testing.B) {
			var out chatLine
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				out = chatLine{}
				if err := json.Unmarshal(line, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// stream: reading content lines from a body, then decoding each; per line.
	var body bytes.Buffer
	for range 100 {
		body.WriteString(lines["chunk"] + "\n")
	}
	stream := body.Bytes()
	b.Run("stream", func(b *testing.B) {
		r := bytes.NewReader(stream)
		lr := lineReader{br: bufio.NewReader(r)}
		var d lineDecoder
		var out chatLine
		b.ReportAllocs()
		for b.Loop() {
			line, err := lr.next()
			if err == io.EOF {
				r.Reset(stream)
				lr.br.Reset(r)
				line, err = lr.next()
			}
			if err != nil {
				b.Fatal(err)
			}
			if err := d.decode(line, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}
