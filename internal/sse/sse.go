// Package sse reads Server-Sent Events (text/event-stream) the way a browser does, so that the SDK and the
// tests of the server, the SDK and the deployment all read a stream by the same rules.
package sse

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// Event is one Server-Sent Event as dispatched to a listener.
type Event struct {
	Type string // "message" when the stream did not name it
	Data string // the data lines joined with LF
}

// MaxEventSize bounds the bytes of one event, counting the comments and ignored fields read with it but no
// line ends, so that a broken or hostile stream cannot exhaust memory.
const MaxEventSize = 1 << 20

// ErrEventTooLarge is returned by Next for an event larger than MaxEventSize.
var ErrEventTooLarge = errors.New("event stream: event larger than 1 MiB")

// Reader parses a text/event-stream as WHATWG HTML §9.2.6 says: lines end in CRLF, LF or CR; a line
// starting with a colon is a comment; "event" names the event and "data" lines are joined with LF; other
// fields, id and retry among them, are ignored; a blank line dispatches the event unless no data arrived;
// and an event cut off by the end of the stream is never dispatched.
type Reader struct {
	br       *bufio.Reader
	afterCR  bool // the previous line ended with CR, so an LF right after it is part of that line end
	started  bool // the first line, which may begin with a byte order mark, was read
	size     int  // bytes of the event read so far
	comments int  // comment lines read so far
}

// NewReader returns a Reader of the event stream r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReader(r)}
}

// Next returns the next event, io.EOF when the stream ends, ErrEventTooLarge, or the error of the
// underlying reader.
func (r *Reader) Next() (Event, error) {
	var (
		typ     string
		data    strings.Builder
		hasData bool
	)
	r.size = 0
	for {
		line, err := r.readLine()
		if err != nil {
			return Event{}, err
		}
		if line == "" {
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return Event{Type: typ, Data: data.String()}, nil
		}
		if strings.HasPrefix(line, ":") {
			r.comments++
			continue
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

// Comments returns how many comment lines, such as a server's heartbeats, were read so far.
func (r *Reader) Comments() int { return r.comments }

// readLine returns the next line without its end. At the end of the stream it returns io.EOF and drops an
// unterminated line.
func (r *Reader) readLine() (string, error) {
	var line []byte
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return "", err
		}
		if r.afterCR {
			r.afterCR = false
			if b == '\n' {
				continue
			}
		}
		if b == '\r' || b == '\n' {
			r.afterCR = b == '\r'
			if !r.started {
				r.started = true
				line = []byte(strings.TrimPrefix(string(line), "\uFEFF"))
			}
			return string(line), nil
		}
		if r.size++; r.size > MaxEventSize {
			return "", ErrEventTooLarge
		}
		line = append(line, b)
	}
}

// ReadAll reads events until the stream ends. It returns the events read and, when the stream did not end
// cleanly, the error that stopped it; io.EOF is not an error.
func ReadAll(r io.Reader) ([]Event, error) {
	sr := NewReader(r)
	var events []Event
	for {
		ev, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, ev)
	}
}
