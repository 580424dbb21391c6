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

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/validation"
)

// problemContentType is the media type of every error answer (RFC 9457).
const problemContentType = "application/problem+json"

// problemError is an error that knows its problem details; handlers and middleware return it for expected
// failures, and the one error handler renders it.
type problemError struct {
	status     int
	slug       string // the last part of the problem type URI
	detail     string
	fields     []apiserver.FieldError
	retryAfter time.Duration // sets Retry-After when positive
	checks     map[string]string
	headers    map[string]string // extra response headers, such as RateLimit-*
	cause      error             // logged, never shown
}

func (p *problemError) Error() string { return p.detail }
func (p *problemError) Unwrap() error { return p.cause }

func newProblem(status int, slug, detail string) *problemError {
	return &problemError{status: status, slug: slug, detail: detail}
}

// problemType turns a slug into the problem type URI.
func problemType(slug string) string { return "urn:deepersensor:problem:" + slug }

// toProblem finds the problem an error stands for. Errors it does not know are internal.
func (s *Server) toProblem(err error) *problemError {
	var (
		p       *problemError
		invalid *validation.Error
		reqErr  *openapi3filter.RequestError
		httpErr *echo.HTTPError
	)
	switch {
	case errors.As(err, &p):
		return p
	case errors.Is(err, echo.ErrStatusRequestEntityTooLarge):
		return newProblem(http.StatusRequestEntityTooLarge, "payload-too-large",
			"the request body is larger than "+strconv.FormatInt(s.cfg.BodyLimit, 10)+" bytes")
	case errors.As(err, &invalid):
		return &problemError{status: http.StatusUnprocessableEntity, slug: "unprocessable", detail: invalid.Error(),
			fields: []apiserver.FieldError{{Field: invalid.Field, Message: invalid.Message}}}
	case errors.As(err, &reqErr):
		return requestProblem(reqErr)
	case errors.Is(err, auth.ErrInvalidCredentials):
		return newProblem(http.StatusUnauthorized, "invalid-credentials", "invalid email or password")
	case errors.Is(err, auth.ErrInvalidToken):
		return newProblem(http.StatusUnauthorized, "unauthorized", "the token is invalid, expired or revoked")
	case errors.Is(err, auth.ErrEmailTaken):
		return newProblem(http.StatusConflict, "conflict", "an account with this email exists")
	case errors.Is(err, auth.ErrBusy):
		return &problemError{status: http.StatusServiceUnavailable, slug: "busy",
			detail: "too many logins at once, retry shortly", retryAfter: time.Second}
	case errors.As(err, &httpErr):
		return s.httpProblem(httpErr)
	}
	if p := s.domainProblem(err); p != nil {
		return p
	}
	return &problemError{status: http.StatusInternalServerError, slug: "internal",
		detail: "an unexpected error occurred", cause: err}
}

// httpProblem renders Echo's own errors: the router's 404 and 405, binding failures and the like.
func (s *Server) httpProblem(he *echo.HTTPError) *problemError {
	if he.Internal != nil {
		var reqErr *openapi3filter.RequestError
		if errors.As(he.Internal, &reqErr) {
			return requestProblem(reqErr)
		}
	}
	slug := map[int]string{
		http.StatusBadRequest:           "invalid-request",
		http.StatusUnauthorized:         "unauthorized",
		http.StatusNotFound:             "not-found",
		http.StatusMethodNotAllowed:     "method-not-allowed",
		http.StatusUnsupportedMediaType: "unsupported-media-type",
		http.StatusServiceUnavailable:   "unavailable",
	}[he.Code]
	if slug == "" {
		slug = strings.ToLower(strings.ReplaceAll(http.StatusText(he.Code), " ", "-"))
	}
	detail := http.StatusText(he.Code)
	switch he.Code {
	case http.StatusNotFound:
		detail = "no such route"
	case http.StatusMethodNotAllowed:
		detail = "the route does not allow this method"
	case http.StatusUnauthorized:
		detail = "a valid bearer token is required"
	case http.StatusBadRequest:
		detail = "the request is malformed"
		if msg, ok := he.Message.(string); ok && msg != "" {
			detail = msg
		}
	}
	p := newProblem(he.Code, slug, detail)
	if he.Code >= 500 {
		p.cause = he
	}
	return p
}

// requestProblem explains a contract violation found by the request validator, naming the field.
func requestProblem(e *openapi3filter.RequestError) *problemError {
	if errors.Is(e.Err, echo.ErrStatusRequestEntityTooLarge) {
		return newProblem(http.StatusRequestEntityTooLarge, "payload-too-large", "the request body is too large")
	}
	if e.RequestBody != nil && strings.HasPrefix(e.Reason, "header Content-Type has unexpected value") {
		return newProblem(http.StatusUnsupportedMediaType, "unsupported-media-type", "the body must be application/json")
	}
	field, message := "body", e.Reason
	if e.Parameter != nil {
		field = e.Parameter.Name
	}
	var schemaErr *openapi3.SchemaError
	switch {
	case errors.As(e.Err, &schemaErr):
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
	return &problemError{status: http.StatusBadRequest, slug: "invalid-request", detail: field + ": " + message,
		fields: []apiserver.FieldError{{Field: field, Message: message}}}
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
	s.countProviderError(err)
	p := s.toProblem(err)
	if p.status >= 500 && p.cause != nil {
		s.logger.ErrorContext(ctx, "request failed", "request_id", requestID(c), "error", p.cause)
	}
	if err := s.writeProblem(c, p); err != nil {
		s.logger.DebugContext(ctx, "write problem", "error", err)
	}
}

// problemBody builds the contract's Problem for p.
func problemBody(p *problemError, requestID string) apiserver.Problem {
	body := apiserver.Problem{
		Type: problemType(p.slug), Title: http.StatusText(p.status), Status: p.status, Detail: p.detail,
		RequestId: requestID,
	}
	if len(p.fields) > 0 {
		body.Errors = &p.fields
	}
	if len(p.checks) > 0 {
		body.Checks = &p.checks
	}
	return body
}

func (s *Server) writeProblem(c echo.Context, p *problemError) error {
	h := c.Response().Header()
	if p.status == http.StatusUnauthorized {
		h.Set(echo.HeaderWWWAuthenticate, "Bearer")
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((p.retryAfter+time.Second-1)/time.Second)))
	}
	for k, v := range p.headers {
		h.Set(k, v)
	}
	h.Set(echo.HeaderContentType, problemContentType)
	c.Response().WriteHeader(p.status)
	if c.Request().Method == http.MethodHead {
		return nil
	}
	return json.NewEncoder(c.Response()).Encode(problemBody(p, requestID(c)))
}
