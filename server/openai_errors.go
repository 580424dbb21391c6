package server

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/quota"
)

// openaiErrorKind is how the OpenAI-compatible API answers one core code: its status, and the type and code
// of OpenAI's error object.
type openaiErrorKind struct {
	status int
	typ    string
	code   string
}

// openaiErrorKinds is the one table from core codes to OpenAI errors. Statuses follow the native table,
// except that every refused request is a 400, as OpenAI answers them.
var openaiErrorKinds = map[core.Code]openaiErrorKind{
	core.Malformed:            {http.StatusBadRequest, "invalid_request_error", "invalid_request"},
	core.Invalid:              {http.StatusBadRequest, "invalid_request_error", "invalid_value"},
	core.ModelRefused:         {http.StatusBadRequest, "invalid_request_error", "model_refused"},
	core.Unauthorized:         {http.StatusUnauthorized, "authentication_error", "invalid_api_key"},
	core.InvalidCredentials:   {http.StatusUnauthorized, "authentication_error", "invalid_credentials"},
	core.StorageFull:          {http.StatusForbidden, "permission_error", "storage_full"},
	core.NotFound:             {http.StatusNotFound, "not_found_error", "not_found"},
	core.ModelNotFound:        {http.StatusNotFound, "not_found_error", "model_not_found"},
	core.MethodNotAllowed:     {http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed"},
	core.Conflict:             {http.StatusConflict, "invalid_request_error", "conflict"},
	core.TooLarge:             {http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large"},
	core.UnsupportedMediaType: {http.StatusUnsupportedMediaType, "invalid_request_error", "unsupported_media_type"},
	core.RateLimited:          {http.StatusTooManyRequests, "rate_limit_error", "rate_limit_exceeded"},
	core.TooManyStreams:       {http.StatusTooManyRequests, "rate_limit_error", "too_many_concurrent_requests"},
	core.QuotaExceeded:        {http.StatusTooManyRequests, "insufficient_quota", "insufficient_quota"},
	core.Internal:             {http.StatusInternalServerError, "server_error", "internal_error"},
	core.UpstreamFailed:       {http.StatusBadGateway, "server_error", "upstream_failed"},
	core.UpstreamUnavailable:  {http.StatusServiceUnavailable, "server_error", "upstream_unavailable"},
	core.Busy:                 {http.StatusServiceUnavailable, "server_error", "busy"},
	core.Overloaded:           {http.StatusServiceUnavailable, "server_error", "overloaded"},
	core.LimiterUnavailable:   {http.StatusServiceUnavailable, "server_error", "limiter_unavailable"},
	core.NotStored:            {http.StatusServiceUnavailable, "server_error", "not_stored"},
	core.NotReady:             {http.StatusServiceUnavailable, "server_error", "not_ready"},
	core.Unavailable:          {http.StatusServiceUnavailable, "server_error", "unavailable"},
	core.UpstreamTimeout:      {http.StatusGatewayTimeout, "server_error", "upstream_timeout"},
}

// openaiKindOf returns the OpenAI error kind of code; a code missing from the table is internal.
func openaiKindOf(code core.Code) openaiErrorKind {
	if k, ok := openaiErrorKinds[code]; ok {
		return k
	}
	return openaiErrorKinds[core.Internal]
}

// openaiErrorBody builds OpenAI's error object for e; param names the field at fault, if one is.
func openaiErrorBody(e *core.Error) apiserver.OpenAIErrorResponse {
	k := openaiKindOf(e.Code)
	if e.Quota != nil && e.Quota.Name == quota.Minute {
		k = openaiKindOf(core.RateLimited) // a per-minute limit is a rate limit to OpenAI's clients
	}
	body := apiserver.OpenAIError{Message: e.Message, Type: k.typ, Code: &k.code}
	if e.Field != "" {
		body.Message = e.Field + ": " + e.Message
		body.Param = &e.Field
	}
	if e.Code == core.Internal {
		body.Message = "an unexpected error occurred"
	}
	return apiserver.OpenAIErrorResponse{Error: body}
}

// writeOpenAIError answers with e as an OpenAI error, with the headers its code calls for; the request id
// is in the X-Request-ID header already.
func writeOpenAIError(w http.ResponseWriter, e *core.Error) error {
	h := w.Header()
	status := openaiKindOf(e.Code).status
	if status == http.StatusUnauthorized {
		h.Set(echo.HeaderWWWAuthenticate, "Bearer")
	}
	setRetryHeaders(h, e)
	if e.Quota != nil && e.Quota.Name != quota.Minute {
		// OpenAI's clients retry a 429 unless told not to; a day's or a month's quota is not back in seconds.
		h.Set("X-Should-Retry", "false")
	}
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(openaiErrorBody(e))
}
