package sdk

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// sseEvent is one Server-Sent Event as dispatched to a listener.
type sseEvent struct {
	Type string // "message" when the stream did not name it
	Data string
}

// maxEventSize bounds the bytes of one event, so that a broken stream cannot exhaust memory.
const maxEventSize = 1 << 20

var errEventTooLarge = errors.New("event stream: event larger than 1 MiB")

// sseReader parses a text/event-stream as WHATWG HTML §9.2.6 says: lines end in CRLF, LF or CR; a line
// starting with a colon is a comment; "event" names the event and "data" lines are joined with LF; other
// fields, id and retry among them, are ignored; a blank line dispatches the event unless no data arrived;
// and an event cut off by the end of the stream is never dispatched.
type sseReader struct {
	r       *bufio.Reader
	afterCR bool // the previous line ended with CR, so an LF right after it is part of that line end
	started bool // the first line, which may begin with a byte order mark, was read
	size    int  // bytes of the event read so far
}

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReader(r)}
}

// Next returns the next event, or io.EOF when the stream ends.
func (s *sseReader) Next() (sseEvent, error) {
	var (
		typ     string
		data    strings.Builder
		hasData bool
	)
	s.size = 0
	for {
		line, err := s.readLine()
		if err != nil {
			return sseEvent{}, err
		}
		if line == "" {
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return sseEvent{Type: typ, Data: data.String()}, nil
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		}
	}
}

// readLine returns the next line without its end. At the end of the stream it returns io.EOF and drops an
// unterminated line.
func (s *sseReader) readLine() (string, error) {
	var line []byte
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			return "", err
		}
		if s.afterCR {
			s.afterCR = false
			if b == '\n' {
				continue
			}
		}
		if b == '\r' || b == '\n' {
			s.afterCR = b == '\r'
			if !s.started {
				s.started = true
				line = []byte(strings.TrimPrefix(string(line), "\uFEFF"))
			}
			return string(line), nil
		}
		if s.size++; s.size > maxEventSize {
			return "", errEventTooLarge
		}
		line = append(line, b)
	}
}
