// Package core is the vocabulary every layer of the service shares: one error type with a closed set of codes.
// Services and adapters return an *Error for every failure that a client caused or must be told about, and
// wrap their own causes in it; the HTTP layer renders each code once per wire dialect. An error that is not an
// *Error is internal: it is logged, and the client learns only that something went wrong.
package core

import (
	"errors"
	"fmt"
	"time"
)

// Code says what kind of failure an Error is. The set is closed: the HTTP layer has one row for each.
type Code string

// The codes, grouped by who is at fault.
const (
	// Malformed: the request breaks the contract (not JSON, a wrong type, a missing field).
	Malformed Code = "malformed"
	// Invalid: the request is well-formed but a value breaks a rule of the service.
	Invalid Code = "invalid"
	// Unauthorized: no valid credentials came with a request that needs them.
	Unauthorized Code = "unauthorized"
	// InvalidCredentials: the email or the password of a login is wrong (never saying which).
	InvalidCredentials Code = "invalid_credentials"
	// NotFound: the object does not exist, or belongs to somebody else.
	NotFound Code = "not_found"
	// MethodNotAllowed: the route exists but not with this method.
	MethodNotAllowed Code = "method_not_allowed"
	// Conflict: the object exists already.
	Conflict Code = "conflict"
	// TooLarge: the request body is larger than allowed.
	TooLarge Code = "too_large"
	// UnsupportedMediaType: the body is not of a media type the route reads.
	UnsupportedMediaType Code = "unsupported_media_type"
	// RateLimited: the caller sent more requests than its limit allows; Limit says which.
	RateLimited Code = "rate_limited"
	// QuotaExceeded: the call would cross one of the caller's token quotas; Quota says which.
	QuotaExceeded Code = "quota_exceeded"
	// TooManyStreams: the caller holds as many model calls open as it may.
	TooManyStreams Code = "too_many_streams"
	// StorageFull: the caller stores as much as it may; waiting does not help, deleting does.
	StorageFull Code = "storage_full"

	// ModelNotFound: the model server does not have the model asked for.
	ModelNotFound Code = "model_not_found"
	// ModelRefused: the model server refused the request, such as an option of the wrong type.
	ModelRefused Code = "model_refused"
	// UpstreamUnavailable: the model server cannot be reached or failed before answering.
	UpstreamUnavailable Code = "upstream_unavailable"
	// UpstreamTimeout: the model server did not answer, or send the next chunk, in time.
	UpstreamTimeout Code = "upstream_timeout"
	// UpstreamFailed: the model server failed in the middle of an answer.
	UpstreamFailed Code = "upstream_failed"

	// Busy: too many password hashes are being computed; retry shortly.
	Busy Code = "busy"
	// Overloaded: the instance serves as many requests as it may; retry shortly.
	Overloaded Code = "overloaded"
	// LimiterUnavailable: rate limits cannot be checked (Redis is down and limits fail closed).
	LimiterUnavailable Code = "limiter_unavailable"
	// NotStored: the model answered but the answer could not be stored.
	NotStored Code = "not_stored"
	// NotReady: a dependency of the instance, such as the database, does not answer.
	NotReady Code = "not_ready"
	// Unavailable: the service cannot answer for a reason of its own; retry later.
	Unavailable Code = "unavailable"
	// Internal: an unexpected failure; details are logged, never shown.
	Internal Code = "internal"
)

// Error is a failure of a known kind. Message is written for clients and never holds internals; Err, the
// cause, is for the logs.
type Error struct {
	Code    Code
	Message string
	// Field names the input at fault, such as "messages[0].content", for Malformed and Invalid.
	Field string
	// RetryAfter is how long the client should wait before trying again, when waiting helps.
	RetryAfter time.Duration
	// Limit is the state of the limit that refused the request, for RateLimited.
	Limit *Limit
	// Quota is the state of the token quota that refused the request, for QuotaExceeded.
	Quota *Quota
	// Err is the cause, or nil.
	Err error
}

// Quota is the state of a token quota at the moment it refused a call.
type Quota struct {
	Name      string    // minute, day or month
	Limit     int64     // the tokens it allows in its window
	Remaining int64     // the tokens left in the window
	Reset     time.Time // when the window starts anew, or the bucket has room for the call
}

// Limit is the state of a rate limit at the moment it refused a request.
type Limit struct {
	Limit     int           // the requests the limit allows at once
	Remaining int           // the requests still allowed now
	Reset     time.Duration // until the limit is whole again
}

// Error returns the message followed by the cause, for logs.
func (e *Error) Error() string {
	msg := e.Message
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause, so that errors.Is and errors.As see it.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an Error with code and a client-safe message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with code and a client-safe message whose cause is err.
func Wrap(code Code, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// InvalidField returns an Invalid error that names the field at fault.
func InvalidField(field, message string) *Error {
	return &Error{Code: Invalid, Field: field, Message: message}
}

// ErrorCode returns the code of the outermost Error in err's chain: "" for nil, Internal when there is none.
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return Internal
}

// Upstream reports whether the code is a failure of the model server rather than of the request or the
// gateway.
func (c Code) Upstream() bool {
	switch c {
	case ModelNotFound, ModelRefused, UpstreamUnavailable, UpstreamTimeout, UpstreamFailed:
		return true
	}
	return false
}
