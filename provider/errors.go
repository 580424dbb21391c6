package provider

import "errors"

// Kinds of provider failure. The HTTP layer maps each to a status: ErrModelNotFound to 404, ErrBadRequest
// to 400 or 422, ErrUnavailable to 502 or 503, ErrTimeout to 504; ErrStream ends a stream that has already
// started with an error event.
var (
	// ErrModelNotFound means the model server does not have the requested model.
	ErrModelNotFound = errors.New("model not found")
	// ErrBadRequest means the model server rejected the request, e.g. an option of the wrong type.
	ErrBadRequest = errors.New("bad request")
	// ErrUnavailable means the model server could not be reached, failed, or was too busy to answer.
	ErrUnavailable = errors.New("model server unavailable")
	// ErrTimeout means the model server did not connect, start answering, or send the next chunk in time.
	ErrTimeout = errors.New("model server timed out")
	// ErrStream means a stream that had started failed: the server reported an error in it, or it ended
	// without a final chunk.
	ErrStream = errors.New("stream failed")
)

// Error is a provider failure of a known Kind; errors.Is matches both its Kind and its cause. Msg is the
// model server's own message, or a short description of ours, and never holds network details, which stay
// in Err for the logs. Msg is written for API users when Kind is ErrBadRequest or ErrModelNotFound.
type Error struct {
	Kind error  // one of the Err* sentinels
	Op   string // what was being done, e.g. `ollama chat "llama3.2"`
	Msg  string // e.g. `model 'x' not found`, `option "num_predict" must be of type integer`
	Err  error  // the underlying cause, or nil
}

// Error returns "op: kind: msg: cause", leaving out empty parts.
func (e *Error) Error() string {
	s := e.Op + ": " + e.Kind.Error()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the Kind and, if any, the cause, so that errors.Is and errors.As see both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
