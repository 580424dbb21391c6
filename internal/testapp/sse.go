package testapp

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
)

// Event is one Server-Sent Event as it arrived.
type Event struct {
	Name string
	Data string
	At   time.Time // when its blank line arrived
}

// ReadEvents reads events from r until it ends, sending each on the returned channel as soon as it is
// complete. Comment lines are counted in the second channel's single value, sent at the end.
func ReadEvents(r io.Reader) (<-chan Event, <-chan int) {
	events := make(chan Event)
	comments := make(chan int, 1)
	go func() {
		defer close(events)
		n := 0
		defer func() { comments <- n }()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev Event
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" || len(data) > 0 {
					ev.Data, ev.At = strings.Join(data, "\n"), time.Now()
					events <- ev
				}
				ev, data = Event{}, nil
			case strings.HasPrefix(line, ":"):
				n++
			case strings.HasPrefix(line, "event:"):
				ev.Name = strings.TrimPrefix(strings.TrimPrefix(line, "event:"), " ")
			case strings.HasPrefix(line, "data:"):
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			}
		}
	}()
	return events, comments
}

// eventSchemas names the contract schema of each event's data.
var eventSchemas = map[string]string{"meta": "StreamMeta", "delta": "StreamDelta", "done": "StreamDone", "error": "Problem"}

// CheckEvent fails tb unless the event is one the contract describes and its data matches its schema.
func CheckEvent(tb testing.TB, ev Event) {
	tb.Helper()
	spec, _ := Contract(tb)
	name, ok := eventSchemas[ev.Name]
	if !ok {
		tb.Errorf("event %q is not in the contract", ev.Name)
		return
	}
	var v any
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
		tb.Errorf("event %s data %q is not JSON: %v", ev.Name, ev.Data, err)
		return
	}
	if err := spec.Components.Schemas[name].Value.VisitJSON(v, openapi3.MultiErrors()); err != nil {
		tb.Errorf("event %s data %s does not match schema %s: %v", ev.Name, ev.Data, name, err)
	}
}
