package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"

	"github.com/deepersensor/deepersensor/gen/client"
	"github.com/deepersensor/deepersensor/internal/sse"
)

// Event is one event of a chat stream: a Meta, then Deltas, then a Done. Switch on its type.
type Event interface{ isEvent() }

// Meta opens a chat stream: it names the conversation (new or continued), the answer's message id and
// the model.
type Meta client.StreamMeta

// Delta is the next piece of the answer's text.
type Delta client.StreamDelta

// Done ends a successful chat stream, with why the model stopped and the token usage.
type Done client.StreamDone

func (Meta) isEvent()  {}
func (Delta) isEvent() {}
func (Done) isEvent()  {}

// ChatStream sends one turn and returns the model's answer as it is made, for use with range:
//
//	for ev, err := range c.ChatStream(ctx, req) {
//		if err != nil {
//			return err
//		}
//		if d, ok := ev.(sdk.Delta); ok {
//			fmt.Print(d.Content)
//		}
//	}
//
// The request is sent when the loop starts, and again by every new loop. The events arrive in order, and
// the last one is a Done; events this package does not know are skipped. Otherwise the loop ends with an error: an *Error for a rejected request or for the
// stream's error event (such as a 502 when the model failed midway), io.ErrUnexpectedEOF (wrapped) when the
// stream ended early, or the context's error once ctx is done. Breaking out of the loop closes the stream,
// and the server keeps what was answered so far as an incomplete message.
func (c *Client) ChatStream(ctx context.Context, req client.ChatRequest) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		resp, err := c.do(ctx, func(auth client.RequestEditorFn) (*http.Response, error) {
			return c.raw.StreamChat(ctx, req, auth)
		})
		if err != nil {
			yield(nil, err)
			return
		}
		if resp.StatusCode != http.StatusOK {
			yield(nil, errorFrom(resp))
			return
		}
		defer resp.Body.Close()
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
			yield(nil, fmt.Errorf("chat stream: the server answered %q, not an event stream", mt))
			return
		}
		events := sse.NewReader(resp.Body)
		for {
			ev, err := events.Next()
			if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
				err = ctxErr
			}
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("chat stream ended before its done event: %w", io.ErrUnexpectedEOF)
			}
			if err != nil {
				yield(nil, err)
				return
			}
			switch ev.Type {
			case "meta":
				if !yieldDecoded[Meta](yield, ev) {
					return
				}
			case "delta":
				if !yieldDecoded[Delta](yield, ev) {
					return
				}
			case "done":
				yieldDecoded[Done](yield, ev)
				return
			case "error":
				var e Error
				if err := json.Unmarshal([]byte(ev.Data), &e.Problem); err != nil {
					yield(nil, fmt.Errorf("chat stream: decode error event %q: %w", ev.Data, err))
					return
				}
				e.Status = e.Problem.Status
				yield(nil, &e)
				return
			}
		}
	}
}

// yieldDecoded decodes ev's data as an E and yields it, or yields the decoding error. It reports whether
// the loop goes on.
func yieldDecoded[E Event](yield func(Event, error) bool, ev sse.Event) bool {
	var v E
	if err := json.Unmarshal([]byte(ev.Data), &v); err != nil {
		yield(nil, fmt.Errorf("chat stream: decode %s event %q: %w", ev.Type, ev.Data, err))
		return false
	}
	return yield(v, nil)
}
