package server

import (
	"context"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	echomw "github.com/oapi-codegen/echo-middleware"

	"github.com/deepersensor/deepersensor/auth"
)

const (
	userIDKey contextKey = iota + 100
	clientKey
)

// authenticate verifies the bearer token of an operation that the contract secures, checks that its session
// and account are not revoked (in memory, without I/O), and puts the user id in the request context. Any
// failure is a 401; the reason is not told.
func (s *Server) authenticate(ctx context.Context, _ *openapi3filter.AuthenticationInput) error {
	c := echomw.GetEchoContext(ctx)
	scheme, token, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return echo.NewHTTPError(http.StatusUnauthorized)
	}
	claims, err := s.auth.Authenticate(strings.TrimSpace(token))
	if err != nil {
		return echo.NewHTTPError(http.StatusUnauthorized).SetInternal(err)
	}
	req := c.Request()
	c.SetRequest(req.WithContext(context.WithValue(req.Context(), userIDKey, claims.UserID)))
	return nil
}

// userID returns the id of the authenticated user; handlers of secured operations always have one.
func userID(ctx context.Context) uuid.UUID {
	id, _ := ctx.Value(userIDKey).(uuid.UUID)
	return id
}

// clientMiddleware records where the request came from, for the audit log of the auth service.
func clientMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		client := auth.Client{IP: c.RealIP(), UserAgent: req.UserAgent(), RequestID: requestID(c)}
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), clientKey, client)))
		return next(c)
	}
}

// clientFrom returns what clientMiddleware recorded.
func clientFrom(ctx context.Context) auth.Client {
	client, _ := ctx.Value(clientKey).(auth.Client)
	return client
}
