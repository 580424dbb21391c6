package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"go.opentelemetry.io/otel/trace"

	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// saneRequestID is what an incoming X-Request-ID must look like to be kept; anything else is replaced.
var saneRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

type contextKey int

const requestIDKey contextKey = iota

// requestIDMiddleware keeps a sane incoming X-Request-ID or makes a new one, echoes it on the response and
// puts it in the request context, so that every log line of the request can carry it.
func requestIDMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !saneRequestID.MatchString(id) {
			id = rand.Text()
		}
		c.Set(echo.HeaderXRequestID, id)
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		req := c.Request()
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), requestIDKey, id)))
		return next(c)
	}
}

// requestID returns the id given by requestIDMiddleware.
func requestID(c echo.Context) string {
	id, _ := c.Get(echo.HeaderXRequestID).(string)
	return id
}

// requestIDFrom returns the request id carried by ctx, or "".
func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

// accessLog writes one structured line per request. It never logs headers or bodies, so no token or
// password can reach the log.
func accessLog(logger *slog.Logger) echo.MiddlewareFunc {
	return middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogMethod: true, LogURIPath: true, LogRoutePath: true, LogStatus: true, LogLatency: true,
		LogRemoteIP: true, LogUserAgent: true, LogResponseSize: true, HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			level := slog.LevelInfo
			if v.Status >= 500 {
				level = slog.LevelError
			}
			attrs := []slog.Attr{slog.String("request_id", requestID(c))}
			if sc := trace.SpanContextFromContext(c.Request().Context()); sc.IsValid() {
				attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
			}
			logger.LogAttrs(c.Request().Context(), level, "request", append(attrs,
				slog.String("method", v.Method),
				slog.String("path", v.URIPath),
				slog.String("route", v.RoutePath),
				slog.Int("status", v.Status),
				slog.Duration("latency", v.Latency),
				slog.Int64("bytes_out", v.ResponseSize),
				slog.String("ip", v.RemoteIP),
				slog.String("user_agent", v.UserAgent),
			)...)
			return nil
		},
	})
}

// errOverloaded refuses a request for which the instance has no in-flight slot.
var errOverloaded = &core.Error{Code: core.Overloaded, Message: "the server is busy, retry shortly", RetryAfter: time.Second}

// modelShare is the share of the in-flight slots that model operations may hold, at least one: a model call
// holds its slot for as long as the model takes, so without a share a few users' streams would starve
// every other route. The rest, at least a quarter, stays for the account routes and everything else.
func modelShare(inFlight int) int {
	return max(1, inFlight*3/4)
}

// inFlightLimit serves at most max requests at once, of which at most modelShare(max) model operations, and
// refuses the rest at once with 503, so that a flood queues in nobody's memory. Probes are not limited.
func inFlightLimit(max int) echo.MiddlewareFunc {
	all, model := ratelimit.NewSemaphore(max, 0), ratelimit.NewSemaphore(modelShare(max), 0)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			op := operationID(c)
			if probeOperations[op] {
				return next(c)
			}
			if modelOperations[op] {
				release, ok, _ := model.Acquire(c.Request().Context()) // no wait, so no error
				if !ok {
					return errOverloaded
				}
				defer release()
			}
			release, ok, _ := all.Acquire(c.Request().Context())
			if !ok {
				return errOverloaded
			}
			defer release()
			return next(c)
		}
	}
}

// longWriteDeadline gives the chat routes time to answer: a whole non-streamed answer may take as long as
// the model provider is allowed, well past the server's WriteTimeout. Streams push their deadline forward
// per event as well.
func longWriteDeadline(d time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if modelOperations[operationID(c)] {
				if err := http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(d)); err != nil && !errors.Is(err, http.ErrNotSupported) {
					return err
				}
			}
			return next(c)
		}
	}
}

// strictJSON refuses a JSON body that is not exactly one JSON value: the decoders downstream read the first
// value and would silently ignore anything after it.
func strictJSON(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Body == nil || req.Body == http.NoBody || !strings.HasPrefix(req.Header.Get(echo.HeaderContentType), echo.MIMEApplicationJSON) {
			return next(c)
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return err
		}
		if len(body) > 0 && !json.Valid(body) {
			return &core.Error{Code: core.Malformed, Field: "body", Message: "is not one valid JSON value"}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		return next(c)
	}
}
