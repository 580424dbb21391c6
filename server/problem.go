package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
)

// problemContentType is the media type of every error answer (RFC 9457).
const problemContentType = "application/problem+json"

// problemKind is how the native API answers one core code: its status and the last part of its problem type
// URI. The title is the status text.
type problemKind struct {
	status int
	slug   string
}

// problemKinds is the one table from core codes to problems.
var problemKinds = map[core.Code]problemKind{
	core.Malformed:            {http.StatusBadRequest, "invalid-request"},
	core.Unauthorized:         {http.StatusUnauthorized, "unauthorized"},
	core.InvalidCredentials:   {http.StatusUnauthorized, "invalid-credentials"},
	core.NotFound:             {http.StatusNotFound, "not-found"},
	core.ModelNotFound:        {http.StatusNotFound, "model-not-found"},
	core.StorageFull:          {http.StatusForbidden, "storage-full"},
	core.MethodNotAllowed:     {http.StatusMethodNotAllowed, "method-not-allowed"},
	core.Conflict:             {http.StatusConflict, "conflict"},
	core.TooLarge:             {http.StatusRequestEntityTooLarge, "payload-too-large"},
	core.UnsupportedMediaType: {http.StatusUnsupportedMediaType, "unsupported-media-type"},
	core.Invalid:              {http.StatusUnprocessableEntity, "unprocessable"},
	core.ModelRefused:         {http.StatusUnprocessableEntity, "provider-refused"},
	core.RateLimited:          {http.StatusTooManyRequests, "rate-limited"},
	core.QuotaExceeded:        {http.StatusTooManyRequests, "quota-exceeded"},
	core.TooManyStreams:       {http.StatusTooManyRequests, "too-many-streams"},
	core.Internal:             {http.StatusInternalServerError, "internal"},
	core.UpstreamFailed:       {http.StatusBadGateway, "provider-failed"},
	core.UpstreamUnavailable:  {http.StatusServiceUnavailable, "provider-unavailable"},
	core.Busy:                 {http.StatusServiceUnavailable, "busy"},
	core.Overloaded:           {http.StatusServiceUnavailable, "overloaded"},
	core.LimiterUnavailable:   {http.StatusServiceUnavailable, "limiter-unavailable"},
	core.NotStored:            {http.StatusServiceUnavailable, "not-stored"},
	core.NotReady:             {http.StatusServiceUnavailable, "not-ready"},
	core.Unavailable:          {http.StatusServiceUnavailable, "unavailable"},
	core.UpstreamTimeout:      {http.StatusGatewayTimeout, "provider-timeout"},
}

// kindOf returns the problem kind of code; a code missing from the table is internal.
func kindOf(code core.Code) problemKind {
	if k, ok := problemKinds[code]; ok {
		return k
	}
	return problemKinds[core.Internal]
}

// errNoSuchRoute answers a route that does not exist, and an admin route to anybody but an admin.
var errNoSuchRoute = core.Errorf(core.NotFound, "no such route")

// internalError is what clients see of an error the service did not expect.
func internalError(err error) *core.Error {
	return core.Wrap(core.Internal, err, "an unexpected error occurred")
}

// toCoreError finds the core error that err stands for: the one in its chain, or a translation of the errors
// of Echo and of the request validator. Errors it does not know are internal.
func (s *Server) toCoreError(err error) *core.Error {
	if e, ok := errors.AsType[*core.Error](err); ok {
		return e
	}
	if errors.Is(err, echo.ErrStatusRequestEntityTooLarge) {
		return core.Errorf(core.TooLarge, "the request body is larger than %d bytes", s.cfg.BodyLimit)
	}
	if reqErr, ok := errors.AsType[*openapi3filter.RequestError](err); ok {
		return requestError(reqErr)
	}
	if httpErr, ok := errors.AsType[*echo.HTTPError](err); ok {
		return echoError(httpErr)
	}
	return internalError(err)
}

// echoError translates Echo's own errors: the router's 404 and 405, binding failures and the like.
func echoError(he *echo.HTTPError) *core.Error {
	switch he.Code {
	case http.StatusBadRequest:
		msg, _ := he.Message.(string)
		if msg == "" {
			msg = "the request is malformed"
		}
		return core.Errorf(core.Malformed, "%s", msg)
	case http.StatusUnauthorized:
		return core.Errorf(core.Unauthorized, "a valid bearer token is required")
	case http.StatusNotFound:
		return errNoSuchRoute
	case http.StatusMethodNotAllowed:
		return core.Errorf(core.MethodNotAllowed, "the route does not allow this method")
	case http.StatusUnsupportedMediaType:
		return core.Errorf(core.UnsupportedMediaType, "%s", http.StatusText(he.Code))
	case http.StatusServiceUnavailable:
		return core.Wrap(core.Unavailable, he, http.StatusText(he.Code))
	}
	if he.Code < http.StatusInternalServerError {
		return core.Errorf(core.Malformed, "%s", http.StatusText(he.Code))
	}
	return internalError(he)
}

// requestError explains a contract violation found by the request validator, naming the field.
func requestError(e *openapi3filter.RequestError) *core.Error {
	if errors.Is(e.Err, echo.ErrStatusRequestEntityTooLarge) {
		return core.Errorf(core.TooLarge, "the request body is too large")
	}
	if e.RequestBody != nil && strings.HasPrefix(e.Reason, "header Content-Type has unexpected value") {
		return core.Errorf(core.UnsupportedMediaType, "the body must be application/json")
	}
	field, message := "body", e.Reason
	if e.Parameter != nil {
		field = e.Parameter.Name
	}
	switch schemaErr, isSchemaErr := errors.AsType[*openapi3.SchemaError](e.Err); {
	case isSchemaErr:
		if path := fieldPath(schemaErr.JSONPointer()); path != "" {
			if e.Parameter == nil {
				field = path
			} else {
				field += "." + path
			}
		}
		message = schemaErr.Reason
	case errors.Is(e.Err, openapi3filter.ErrInvalidRequired):
		message = "is required"
	case e.RequestBody != nil && e.Reason == "failed to decode request body":
		message = "is not valid JSON"
	case e.Err != nil && message == "":
		message = e.Err.Error()
	}
	return &core.Error{Code: core.Malformed, Field: field, Message: message}
}

// fieldPath turns a JSON pointer such as [messages 0 content] into messages[0].content.
func fieldPath(pointer []string) string {
	var b strings.Builder
	for _, part := range pointer {
		if _, err := strconv.Atoi(part); err == nil {
			b.WriteString("[" + part + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(part)
	}
	return b.String()
}

// handleError is Echo's one error handler: every error becomes an application/problem+json answer with the
// request id. Only unexpected errors are logged with their cause; clients see a generic message.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ctx := c.Request().Context()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return // the client went away; there is nobody to answer
	}
	e := s.failure(ctx, err)
	if err := writeError(c, e); err != nil {
		s.logger.DebugContext(ctx, "write problem", "error", err)
	}
}

// failure turns err into the core error the client is told about, counting model server failures and
// logging the cause of server-side ones.
func (s *Server) failure(ctx context.Context, err error) *core.Error {
	e := s.toCoreError(err)
	if e.Code.Upstream() {
		s.metrics.ProviderErrors.WithLabelValues(string(e.Code)).Inc()
	}
	if e.Quota != nil {
		s.metrics.QuotaRefusals.WithLabelValues(e.Quota.Name).Inc()
	}
	if kindOf(e.Code).status >= http.StatusInternalServerError && e.Err != nil {
		s.logger.ErrorContext(ctx, "request failed", "request_id", requestIDFrom(ctx), "code", e.Code, "error", e.Err)
	}
	return e
}

// problemBody builds the contract's Problem for e.
func problemBody(e *core.Error, requestID string) apiserver.Problem {
	k := kindOf(e.Code)
	body := apiserver.Problem{
		Type: problemType(k.slug), Title: http.StatusText(k.status), Status: k.status, Detail: e.Message,
		RequestId: requestID,
	}
	if e.Field != "" {
		body.Detail = e.Field + ": " + e.Message
		body.Errors = &[]apiserver.FieldError{{Field: e.Field, Message: e.Message}}
	}
	if e.Code == core.Internal {
		body.Detail = "an unexpected error occurred"
	}
	if q := e.Quota; q != nil {
		body.Quota = &apiserver.QuotaState{Name: apiserver.QuotaStateName(q.Name), Limit: q.Limit, Remaining: q.Remaining, Reset: q.Reset}
	}
	return body
}

// problemType turns a slug into the problem type URI.
func problemType(slug string) string { return "urn:deepersensor:problem:" + slug }

// writeError answers with e in the wire dialect of the request's path: the OpenAI- and Ollama-compatible
// APIs have error bodies of their own; everything else answers problem+json.
func writeError(c echo.Context, e *core.Error) error {
	switch path := c.Request().URL.Path; {
	case strings.HasPrefix(path, "/openai/"):
		return writeOpenAIError(c.Response(), e)
	case strings.HasPrefix(path, "/ollama/"):
		return writeOllamaError(c.Response(), e)
	default:
		return writeProblem(c, e)
	}
}

// writeProblem answers with e as a problem, with the headers its code calls for.
func writeProblem(c echo.Context, e *core.Error) error {
	return writeProblemTo(c.Response(), e, requestID(c), c.Request().Method == http.MethodHead)
}

// writeProblemTo writes e as a problem to w; headOnly leaves out the body, as HEAD wants.
func writeProblemTo(w http.ResponseWriter, e *core.Error, requestID string, headOnly bool) error {
	h := w.Header()
	status := kindOf(e.Code).status
	if status == http.StatusUnauthorized {
		h.Set(echo.HeaderWWWAuthenticate, "Bearer")
	}
	setRetryHeaders(h, e)
	h.Set(echo.HeaderContentType, problemContentType)
	w.WriteHeader(status)
	if headOnly {
		return nil
	}
	return json.NewEncoder(w).Encode(problemBody(e, requestID))
}

// setRetryHeaders sets Retry-After and, for a refusal by a rate limit, the RateLimit headers.
func setRetryHeaders(h http.Header, e *core.Error) {
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(ceilSeconds(e.RetryAfter)))
	}
	if e.Limit != nil {
		setRateLimitHeaders(h, *e.Limit)
	}
}

// ceilSeconds returns d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
