package sdk

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// readAll parses every event of an event stream.
func readAll(t *testing.T, stream string) []sseEvent {
	t.Helper()
	r := newSSEReader(strings.NewReader(stream))
	var events []sseEvent
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return events
		}
		if err != nil {
			t.Fatalf("Next after %d events: %v", len(events), err)
		}
		events = append(events, ev)
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []sseEvent
	}{
		{"named events", "event: meta\ndata: {}\n\nevent: delta\ndata: {\"content\":\"x\"}\n\n",
			[]sseEvent{{"meta", "{}"}, {"delta", `{"content":"x"}`}}},
		{"unnamed is message", "data: a\n\n", []sseEvent{{"message", "a"}}},
		{"multi-line data joins with LF", "data: a\ndata:b\ndata\ndata:  c\n\n", []sseEvent{{"message", "a\nb\n\n c"}}},
		{"CRLF", "event: x\r\ndata: 1\r\n\r\n", []sseEvent{{"x", "1"}}},
		{"CR", "event: x\rdata: 1\r\rdata: 2\r\r", []sseEvent{{"x", "1"}, {"message", "2"}}},
		{"mixed line ends", "data: 1\r\n\ndata: 2\r\r\ndata: 3\n\r", []sseEvent{{"message", "1"}, {"message", "2"}, {"message", "3"}}},
		{"comments and other fields are ignored", ": connected\nid: 7\nretry: 10\nfoo: bar\ndata: a\n: ping\n\n", []sseEvent{{"message", "a"}}},
		{"no data is not dispatched and resets the name", "event: x\n\ndata: a\n\n", []sseEvent{{"message", "a"}}},
		{"empty data is dispatched", "event: x\ndata:\n\n", []sseEvent{{"x", ""}}},
		{"blank lines between events", "\n\n\ndata: a\n\n\n", []sseEvent{{"message", "a"}}},
		{"byte order mark", "\uFEFFdata: a\n\n", []sseEvent{{"message", "a"}}},
		{"incomplete final event is dropped", "data: a\n\ndata: b\n", []sseEvent{{"message", "a"}}},
		{"unterminated final line is dropped", "data: a\n\ndata: b", []sseEvent{{"message", "a"}}},
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

func TestSSEReaderEventTooLarge(t *testing.T) {
	r := newSSEReader(strings.NewReader("data: " + strings.Repeat("x", maxEventSize) + "\n\n"))
	if _, err := r.Next(); !errors.Is(err, errEventTooLarge) {
		t.Errorf("Next = %v, want %v", err, errEventTooLarge)
	}
}

// lineEnds are the line ends an encoder may use.
var lineEnds = []string{"\n", "\r\n", "\r"}

// encode writes events as a server would: a comment first, the name unless it is "message", one data line
// per line of data, and the blank line that dispatches the event.
func encode(events []sseEvent, eol string) string {
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
func eventsFrom(raw []byte) []sseEvent {
	parts := strings.Split(string(raw), "\x00")
	var events []sseEvent
	for i := 0; i+1 < len(parts); i += 2 {
		name := strings.NewReplacer("\r", "", "\n", "").Replace(parts[i])
		if name == "" {
			name = "message"
		}
		events = append(events, sseEvent{Type: name, Data: strings.ReplaceAll(parts[i+1], "\r", "")})
	}
	return events
}

// FuzzSSEReader checks that the reader never panics or fails on any input but an oversized event, and that
// events written by encode read back unchanged with any line end.
func FuzzSSEReader(f *testing.F) {
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
		r := newSSEReader(strings.NewReader(string(raw)))
		for {
			if _, err := r.Next(); err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errEventTooLarge) {
					t.Fatalf("Next = %v", err)
				}
				break
			}
		}
		want := eventsFrom(raw)
		stream := encode(want, lineEnds[int(eol)%len(lineEnds)])
		if len(stream) > maxEventSize {
			return
		}
		if got := readAll(t, stream); !slices.Equal(got, want) {
			t.Errorf("round trip of %q: events = %q, want %q", stream, got, want)
		}
	})
}
