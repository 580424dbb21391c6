// Package server is the HTTP face of the service: the Echo app, its middleware, thin handlers that implement
// the strict server interface generated from the contract, the Server-Sent Events writer, and the one error
// handler that renders every failure as application/problem+json.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	echomw "github.com/oapi-codegen/echo-middleware"
	"go.opentelemetry.io/contrib/instrumentation/github.com/labstack/echo/otelecho"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/gen/apiserver"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider"
	"github.com/deepersensor/deepersensor/quota"
	"github.com/deepersensor/deepersensor/usage"
)

// Deps are what the server needs from the rest of the program.
type Deps struct {
	Config   config.Config
	Logger   *slog.Logger
	Auth     *auth.Service
	Chat     *chat.Service
	Usage    *usage.Service
	Provider provider.Provider
	// Database is pinged by the readiness probe.
	Database Pinger
	Limits   Limits
	// Replica, when set, is the read replica, which the readiness probe reports without failing on it.
	Replica ReplicaChecker
	// Quotas forgets what it cached of a user's quotas when an admin changes them.
	Quotas  *quota.Service
	Metrics *metrics.Metrics
	// Tracing makes a span of every request, child of the client's W3C traceparent when it sends one.
	Tracing bool
}

// Pinger is a dependency that can say whether it answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Server implements the contract's operations.
type Server struct {
	cfg      config.Config
	logger   *slog.Logger
	auth     *auth.Service
	chat     *chat.Service
	usage    *usage.Service
	provider provider.Provider
	database Pinger
	replica  ReplicaChecker
	limits   Limits
	quotas   *quota.Service
	metrics  *metrics.Metrics
	echo     *echo.Echo
	// drained ends when Drain is called: the model calls in flight must end for a shutdown.
	drained context.Context
	drain   context.CancelFunc
}

// errShuttingDown ends the model calls still in flight when the server shuts down; another instance, or this
// one after its restart, can take the retry.
var errShuttingDown = &core.Error{Code: core.Unavailable, Message: "the server is shutting down; retry", RetryAfter: time.Second}

// Drain ends every model call in flight at once, streams that began with an error event, each with its partial
// answer stored, and the others with a 503, so that a shutdown does not cut them off without a word. It is called shortly before the shutdown
// grace runs out.
func (s *Server) Drain() { s.drain() }

var _ apiserver.StrictServerInterface = (*Server)(nil)

// New wires the Echo app: middleware in order, request validation against the contract, and the routes.
func New(d Deps) (*Server, error) {
	s := &Server{
		cfg: d.Config, logger: d.Logger, auth: d.Auth, chat: d.Chat, usage: d.Usage, provider: d.Provider,
		database: d.Database, replica: d.Replica, limits: d.Limits, quotas: d.Quotas, metrics: d.Metrics,
	}
	s.drained, s.drain = context.WithCancel(context.Background())
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	ipExtractor, err := clientIPExtractor(d.Config.TrustedProxies)
	if err != nil {
		return nil, err
	}
	e.IPExtractor = ipExtractor

	spec, err := apiserver.GetSpec()
	if err != nil {
		return nil, fmt.Errorf("load embedded contract: %w", err)
	}
	spec.Servers = nil // validate paths, not the Host header
	operations, err := operationIndex()
	if err != nil {
		return nil, err
	}
	if err := checkOperations(operations); err != nil {
		return nil, err
	}

	e.Pre(openaiModelID)
	e.Use(requestIDMiddleware, operationMiddleware(operations))
	if d.Tracing {
		e.Use(otelecho.Middleware("deepersensor"))
	}
	e.Use(
		accessLog(d.Logger),
		httpMetrics(d.Metrics),
		middleware.RecoverWithConfig(middleware.RecoverConfig{
			LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
				s.logger.ErrorContext(c.Request().Context(), "panic", "request_id", requestID(c), "error", err, "stack", string(stack))
				return err
			},
		}),
		middleware.SecureWithConfig(middleware.SecureConfig{
			XSSProtection:         "0",
			ContentTypeNosniff:    "nosniff",
			XFrameOptions:         "DENY",
			HSTSMaxAge:            63072000,
			ContentSecurityPolicy: "default-src 'none'; frame-ancestors 'none'",
			ReferrerPolicy:        "no-referrer",
		}),
		cors(d.Config.CORSOrigins),
		inFlightLimit(d.Config.MaxInFlight),
		longWriteDeadline(d.Config.OllamaRequestTimeout+d.Config.WriteTimeout),
		modelCallHeaders,
		middleware.BodyLimit(strconv.FormatInt(d.Config.BodyLimit, 10)+"B"),
		strictJSON,
		clientMiddleware,
		hideAdminMethods,
		s.limitByIP,
		echomw.OapiRequestValidatorWithOptions(spec, &echomw.Options{
			Skipper: func(c echo.Context) bool { return !strings.HasPrefix(c.Path(), "/v1/") },
			// The generated handlers bind the value the validator checked, member names matched exactly, rather
			// than decode the body again (encoding/json would match {"Messages": ...} too).
			Options: openapi3filter.Options{AuthenticationFunc: s.authenticate, KeepValidatedValue: true},
		}),
		s.withPrincipal,
		s.limitByUser,
	)
	registerDocs(e)
	// In production /metrics is served only on its own listener, never on the API port.
	if d.Config.MetricsAddr == "" && d.Config.Env != config.Production {
		e.GET("/metrics", metricsHandler(d.Metrics))
	}
	apiserver.RegisterHandlers(e, apiserver.NewStrictHandler(s, nil))
	s.echo = e
	return s, nil
}

// MetricsHandler serves /metrics alone, for a separate internal listener.
func MetricsHandler(m *metrics.Metrics) http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/metrics", metricsHandler(m))
	return e
}

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

// clientIPExtractor believes X-Forwarded-For only from the trusted proxy networks; otherwise the client is
// the TCP peer, whatever headers it sends.
func clientIPExtractor(trusted []string) (echo.IPExtractor, error) {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect(), nil
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, cidr := range trusted {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", cidr, err)
		}
		opts = append(opts, echo.TrustIPRange(network))
	}
	return echo.ExtractIPFromXFFHeader(opts...), nil
}

// cors allows the configured origins only. With none configured it adds no CORS headers at all: Echo's CORS
// middleware would otherwise allow every origin.
func cors(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins:  origins,
		AllowHeaders:  []string{echo.HeaderAuthorization, echo.HeaderContentType, echo.HeaderXRequestID, conversationHeader},
		ExposeHeaders: []string{echo.HeaderXRequestID, "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", conversationHeader},
		MaxAge:        600,
	})
}
