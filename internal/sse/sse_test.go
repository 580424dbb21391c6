package sse_test

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/deepersensor/deepersensor/internal/sse"
)

// readAll parses every event of an event stream.
func readAll(t *testing.T, stream string) []sse.Event {
	t.Helper()
	events, err := sse.ReadAll(strings.NewReader(stream))
	if err != nil {
		t.Fatalf("ReadAll after %d events: %v", len(events), err)
	}
	return events
}

func TestReader(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []sse.Event
	}{
		{"named events", "event: meta\ndata: {}\n\nevent: delta\ndata: {\"content\":\"x\"}\n\n",
			[]sse.Event{{"meta", "{}"}, {"delta", `{"content":"x"}`}}},
		{"unnamed is message", "data: a\n\n", []sse.Event{{"message", "a"}}},
		{"multi-line data joins with LF", "data: a\ndata:b\ndata\ndata:  c\n\n", []sse.Event{{"message", "a\nb\n\n c"}}},
		{"CRLF", "event: x\r\ndata: 1\r\n\r\n", []sse.Event{{"x", "1"}}},
		{"CR", "event: x\rdata: 1\r\rdata: 2\r\r", []sse.Event{{"x", "1"}, {"message", "2"}}},
		{"mixed line ends", "data: 1\r\n\ndata: 2\r\r\ndata: 3\n\r", []sse.Event{{"message", "1"}, {"message", "2"}, {"message", "3"}}},
		{"comments and other fields are ignored", ": connected\nid: 7\nretry: 10\nfoo: bar\ndata: a\n: ping\n\n", []sse.Event{{"message", "a"}}},
		{"no data is not dispatched and resets the name", "event: x\n\ndata: a\n\n", []sse.Event{{"message", "a"}}},
		{"empty data is dispatched", "event: x\ndata:\n\n", []sse.Event{{"x", ""}}},
		{"blank lines between events", "\n\n\ndata: a\n\n\n", []sse.Event{{"message", "a"}}},
		{"byte order mark", "\uFEFFdata: a\n\n", []sse.Event{{"message", "a"}}},
		{"incomplete final event is dropped", "data: a\n\ndata: b\n", []sse.Event{{"message", "a"}}},
		{"unterminated final line is dropped", "data: a\n\ndata: b", []sse.Event{{"message", "a"}}},
		{"empty stream", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := readAll(t, tt.stream); !slices.Equal(got, tt.want) {
				t.Errorf("events = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReaderEventTooLarge(t *testing.T) {
	r := sse.NewReader(strings.NewReader("data: " + strings.Repeat("x", sse.MaxEventSize) + "\n\n"))
	if _, err := r.Next(); !errors.Is(err, sse.ErrEventTooLarge) {
		t.Errorf("Next = %v, want %v", err, sse.ErrEventTooLarge)
	}
}

func TestReaderComments(t *testing.T) {
	r := sse.NewReader(strings.NewReader(": connected\n\n: ping\r\n:\rdata: a\n: ping\n\ndata: b\n: cut off"))
	if ev, err := r.Next(); err != nil || ev.Data != "a" {
		t.Fatalf("Next = %q, %v; want the event a", ev, err)
	}
	if got := r.Comments(); got != 4 {
		t.Errorf("Comments after the first event = %d, want 4", got)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next at the end = %v, want io.EOF", err)
	}
	if got := r.Comments(); got != 4 {
		t.Errorf("Comments at the end = %d, want 4: an unterminated line is no comment", got)
	}
}

func TestReadAllStopsAtAnError(t *testing.T) {
	errBroken := errors.New("connection reset")
	events, err := sse.ReadAll(io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(errBroken)))
	if !errors.Is(err, errBroken) || !slices.Equal(events, []sse.Event{{"message", "a"}}) {
		t.Errorf("ReadAll = %q, %v; want the first event and %v", events, err, errBroken)
	}
}

// lineEnds are the line ends an encoder may use.
var lineEnds = []string{"\n", "\r\n", "\r"}

// encode writes events as a server would: a comment first, the name unless it is "message", one data line
// per line of data, and the blank line that dispatches the event.
func encode(events []sse.Event, eol string) string {
	var b strings.Builder
	b.WriteString(": connected" + eol)
	for _, ev := range events {
		if ev.Type != "message" {
			b.WriteString("event: " + ev.Type + eol)
		}
		for line := range strings.SplitSeq(ev.Data, "\n") {
			b.WriteString("data: " + line + eol)
		}
		b.WriteString(eol)
	}
	return b.String()
}

// eventsFrom makes well-formed events out of arbitrary bytes: NUL separates names from data, and the
// bytes an event stream cannot carry in them are removed.
func eventsFrom(raw []byte) []sse.Event {
	parts := strings.Split(string(raw), "\x00")
	var events []sse.Event
	for i := 0; i+1 < len(parts); i += 2 {
		name := strings.NewReplacer("\r", "", "\n", "").Replace(parts[i])
		if name == "" {
			name = "message"
		}
		events = append(events, sse.Event{Type: name, Data: strings.ReplaceAll(parts[i+1], "\r", "")})
	}
	return events
}

// FuzzReader checks that the reader never panics or fails on any input but an oversized event, and that
// events written by encode read back unchanged with any line end.
func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		": connected\n\nevent: meta\ndata: {\"conversation_id\":\"6a1f0c55-3f5e-4f8e-bb5c-0d7c8d0f2a10\",\"message_id\":\"9d2b5b1e-0c5e-4d57-8a0e-2b9d2d3c4e5f\",\"model\":\"tiny\"}\n\n" +
			"event: delta\ndata: {\"content\":\", there\"}\n\n: ping\n\n" +
			"event: done\ndata: {\"message_id\":\"9d2b5b1e-0c5e-4d57-8a0e-2b9d2d3c4e5f\",\"done_reason\":\"stop\",\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":1}}\n\n",
		"event: error\r\ndata: {\"type\":\"urn:deepersensor:problem:provider-failed\",\"title\":\"Bad Gateway\",\"status\":502}\r\n\r\n",
		"data: a\rdata: b\r\r",
		"meta\x00{}\x00delta\x00two\nlines\x00\x00unnamed\x00",
		"\uFEFFdata\n\n:\n\ndata: x",
	} {
		f.Add([]byte(seed), uint8(0))
	}
	f.Fuzz(func(t *testing.T, raw []byte, eol uint8) {
		r := sse.NewReader(strings.NewReader(string(raw)))
		for {
			if _, err := r.Next(); err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, sse.ErrEventTooLarge) {
					t.Fatalf("Next = %v", err)
				}
				break
			}
		}
		want := eventsFrom(raw)
		stream := encode(want, lineEnds[int(eol)%len(lineEnds)])
		if len(stream) > sse.MaxEventSize {
			return
		}
		if got := readAll(t, stream); !slices.Equal(got, want) {
			t.Errorf("round trip of %q: events = %q, want %q", stream, got, want)
		}
	})
}
