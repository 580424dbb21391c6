package server

import (
	"context"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/core"
)

// adminPathPrefix starts the path of every admin route.
const adminPathPrefix = "/v1/admin/"

// requireAdmin returns nil when the request acts for an admin, and otherwise the error of a route that does
// not exist, a core.NotFound: admin routes do not exist for anybody else. The role is read from the
// database on each call rather than carried in the access token, so that a revoke holds from the next
// request on, on every instance; admin routes are rare, and no other route pays for it.
func (s *Server) requireAdmin(ctx context.Context) error {
	admin, err := s.auth.IsAdmin(ctx, userID(ctx))
	if err != nil {
		return err
	}
	if !admin {
		return errNoSuchRoute
	}
	return nil
}

// guardAdminRoute runs requireAdmin for every route under adminPathPrefix as soon as the request is
// authenticated: before its parameters and body are validated and before it counts against a rate limit,
// so that to anybody but an admin it answers as a route that does not exist would, whatever the request.
func (s *Server) guardAdminRoute(c echo.Context, p auth.Principal) error {
	if !strings.HasPrefix(c.Path(), adminPathPrefix) {
		return nil
	}
	if err := s.requireAdmin(context.WithValue(c.Request().Context(), principalKey, p)); err != nil {
		// An *echo.HTTPError passes the contract's validator as it is; the core error in it is rendered.
		return echo.NewHTTPError(kindOf(core.ErrorCode(err)).status).SetInternal(err)
	}
	return nil
}

// hideAdminMethods answers a method that an admin route does not have, for anybody, as a route that does
// not exist would, rather than with a 405 that tells that the route exists.
func hideAdminMethods(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.HasPrefix(c.Path(), adminPathPrefix) && operationID(c) == "" {
			return errNoSuchRoute
		}
		return next(c)
	}
}
