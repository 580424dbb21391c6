package provider

import (
	"time"

	"github.com/deepersensor/deepersensor/core"
)

// The constructors below build the errors of a failing model server with the messages clients see, so that
// every provider, and the chat service, reports the same failure the same way. Their cause says what was
// being done and what went wrong (the operation, the network error, the status, the body): it is for the
// logs, never shown to clients, and may be nil.

// unavailableRetryAfter is how long clients are told to wait when the model server is unavailable.
const unavailableRetryAfter = 5 * time.Second

// ModelNotFound returns a core.ModelNotFound error: the model server does not have the model asked for.
func ModelNotFound(cause error) *core.Error {
	return core.Wrap(core.ModelNotFound, cause, "model not found")
}

// ModelRefused returns a core.ModelRefused error: the model server refused the request, such as an option of
// the wrong type. Its reason, such as `option "num_predict" must be of type integer`, is about the client's
// request, so the client sees it; it may be empty.
func ModelRefused(reason string, cause error) *core.Error {
	msg := "the model provider refused the request"
	if reason != "" {
		msg += ": " + reason
	}
	return core.Wrap(core.ModelRefused, cause, msg)
}

// UpstreamTimeout returns a core.UpstreamTimeout error: the model server did not connect, start answering or
// send the next chunk in time.
func UpstreamTimeout(cause error) *core.Error {
	return core.Wrap(core.UpstreamTimeout, cause, "the model provider did not answer in time")
}

// UpstreamUnavailable returns a core.UpstreamUnavailable error: the model server could not be reached, failed
// before answering, or something other than the model server answered. Clients may retry after 5 seconds.
func UpstreamUnavailable(cause error) *core.Error {
	err := core.Wrap(core.UpstreamUnavailable, cause, "the model provider is unavailable")
	err.RetryAfter = unavailableRetryAfter
	return err
}

// UpstreamFailed returns a core.UpstreamFailed error: an answer that had started failed, because the model
// server reported an error in its stream, sent a malformed chunk, or ended the stream before its final chunk.
func UpstreamFailed(cause error) *core.Error {
	return core.Wrap(core.UpstreamFailed, cause, "the model provider failed in the middle of the answer")
}
