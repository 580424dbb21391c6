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
	"github.com/deepersensor/deepersensor/core"
)

const (
	principalKey contextKey = iota + 100
	clientKey
)

// authenticate verifies the bearer token of an operation that the contract secures, checks that its session
// or API key and its account are not revoked (in memory, without I/O), and keeps whom it acts for on the Echo
// context, for withPrincipal. Any failure of the token is a 401; the reason is not told. An admin route is then
// a 404 for anybody but an admin (guardAdminRoute).
//
// It leaves the request as it is: the validator calls it before it checks the body, and puts the body it
// checked on the request it was given, for the generated handler to bind; a request replaced here would
// reach the handler without it, and the handler would decode the body again, unchecked.
func (s *Server) authenticate(ctx context.Context, _ *openapi3filter.AuthenticationInput) error {
	c := echomw.GetEchoContext(ctx)
	p, err := s.verifyBearer(c)
	if err != nil {
		return err
	}
	c.Set(principalEchoKey, p)
	return s.guardAdminRoute(c, p)
}

// principalEchoKey holds on the Echo context whom authenticate found a request to act for.
const principalEchoKey = "deepersensor.principal"

// compatiblePrefixes are the path prefixes of the OpenAI- and Ollama-compatible APIs. The contract's
// validator does not run on them (their clients send fields beyond the contract's), so they are
// authenticated here, all of them: nothing under these prefixes is public.
var compatiblePrefixes = []string{"/openai/", "/ollama/"}

// withPrincipal puts whom the request acts for in its context: the principal that the validator's
// authenticate found, or, on the OpenAI- and Ollama-compatible APIs, that of the request's bearer token.
func (s *Server) withPrincipal(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p, ok := c.Get(principalEchoKey).(auth.Principal)
		if !ok && isCompatible(c.Path()) {
			var err error
			if p, err = s.verifyBearer(c); err != nil {
				return err
			}
			ok = true
		}
		if ok {
			req := c.Request()
			c.SetRequest(req.WithContext(context.WithValue(req.Context(), principalKey, p)))
		}
		return next(c)
	}
}

// isCompatible reports whether a route belongs to the OpenAI- or Ollama-compatible API.
func isCompatible(route string) bool {
	for _, prefix := range compatiblePrefixes {
		if strings.HasPrefix(route, prefix) {
			return true
		}
	}
	return false
}

// verifyBearer verifies the request's bearer token, an access token or an API key, and returns whom it acts
// for. An API key that the instance has not cached costs a database lookup, limited per client address
// (DS_RATE_LIMIT_KEY_LOOKUP_IP), so that made-up keys cannot cost a query each.
func (s *Server) verifyBearer(c echo.Context) (auth.Principal, error) {
	scheme, token, ok := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return auth.Principal{}, echo.NewHTTPError(http.StatusUnauthorized)
	}
	p, err := s.auth.Authenticate(c.Request().Context(), strings.TrimSpace(token), func(ctx context.Context) error {
		return s.allow(ctx, nil, policy(policyKeyLookupIP, s.cfg.RateLimitKeyLookupIP), s.addressKey(c.RealIP()), c.RealIP(), uuid.Nil)
	})
	if err != nil {
		// An *echo.HTTPError passes the contract's validator as it is; the core error in it is rendered.
		return auth.Principal{}, echo.NewHTTPError(kindOf(core.ErrorCode(err)).status).SetInternal(err)
	}
	return p, nil
}

// principal returns whom the request acts for: its user and, when an API key authenticated it, the key.
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey).(auth.Principal)
	return p
}

// userID returns the id of the authenticated user; handlers of secured operations always have one.
func userID(ctx context.Context) uuid.UUID {
	return principal(ctx).UserID
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
