package testapp

import (
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/deepersensor/deepersensor/internal/sse"
)

// Event is one Server-Sent Event with the time it arrived.
type Event struct {
	sse.Event
	At time.Time // when the blank line that dispatched it arrived
}

// StreamEnd tells how an event stream read by ReadEvents ended.
type StreamEnd struct {
	Comments int   // comment lines read, such as heartbeats
	Err      error // nil when the stream ended cleanly
}

// ReadEvents reads r with an sse.Reader on its own goroutine, sending each event on the returned channel as
// soon as it is complete. When the stream ends the channel is closed, and the second channel gets how it
// ended.
func ReadEvents(r io.Reader) (<-chan Event, <-chan StreamEnd) {
	events := make(chan Event)
	end := make(chan StreamEnd, 1)
	go func() {
		defer close(events)
		sr := sse.NewReader(r)
		for {
			ev, err := sr.Next()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				end <- StreamEnd{Comments: sr.Comments(), Err: err}
				return
			}
			events <- Event{Event: ev, At: time.Now()}
		}
	}()
	return events, end
}

// eventSchemas names the contract schema of each event's data.
var eventSchemas = map[string]string{"meta": "StreamMeta", "delta": "StreamDelta", "done": "StreamDone", "error": "Problem"}

// CheckEvent fails tb unless the event is one the contract describes and its data matches its schema. It
// reports with Errorf only, so it is safe on any goroutine.
func CheckEvent(tb testing.TB, ev sse.Event) {
	tb.Helper()
	if err := loadContract(); err != nil {
		tb.Errorf("contract: load: %v", err)
		return
	}
	name, ok := eventSchemas[ev.Type]
	if !ok {
		tb.Errorf("event %q is not in the contract", ev.Type)
		return
	}
	var v any
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
		tb.Errorf("event %s data %q is not JSON: %v", ev.Type, ev.Data, err)
		return
	}
	if err := spec.Components.Schemas[name].Value.VisitJSON(v, openapi3.MultiErrors()); err != nil {
		tb.Errorf("event %s data %s does not match schema %s: %v", ev.Type, ev.Data, name, err)
	}
}
