package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// Limits are the rate limits and the per-user stream cap the server enforces.
type Limits struct {
	Limiter ratelimit.Limiter
	Streams ratelimit.ConcurrencyLimiter
}

// Policy names, also the first part of each bucket's key.
const (
	policyAuthIP     = "auth_ip"
	policyLoginEmail = "login_email"
	policyUser       = "user"
	policyChat       = "chat"
	policyStreams    = "streams"
)

// authRoutes are limited per client IP before anything else runs: they need no account, so the IP is all
// there is to limit by.
var authRoutes = map[string]bool{"/v1/auth/signup": true, "/v1/auth/login": true, "/v1/auth/refresh": true}

// chatRoutes have their own, stricter per-user policy: each request keeps a model busy.
var chatRoutes = map[string]bool{"/v1/chat": true, "/v1/chat/stream": true}

func policy(name string, r config.Rate) ratelimit.Policy {
	return ratelimit.Policy{Name: name, Limit: r.Limit, Period: r.Period}
}

// limitByIP limits the unauthenticated auth routes per client IP.
func (s *Server) limitByIP(next echo.HandlerFunc) echo.HandlerFunc {
	p := policy(policyAuthIP, s.cfg.RateLimitAuthIP)
	return func(c echo.Context) error {
		if !authRoutes[c.Path()] {
			return next(c)
		}
		if err := s.allow(c.Request().Context(), c.Response().Header(), p, c.RealIP(), c.RealIP(), uuid.Nil, c.Path()); err != nil {
			return err
		}
		return next(c)
	}
}

// limitByUser limits authenticated requests per user, after the validator has authenticated them.
func (s *Server) limitByUser(next echo.HandlerFunc) echo.HandlerFunc {
	user, chat := policy(policyUser, s.cfg.RateLimitUser), policy(policyChat, s.cfg.RateLimitChat)
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		id := userID(ctx)
		if id == uuid.Nil {
			return next(c)
		}
		p := user
		if chatRoutes[c.Path()] {
			p = chat
		}
		if err := s.allow(ctx, c.Response().Header(), p, id.String(), c.RealIP(), id, c.Path()); err != nil {
			return err
		}
		return next(c)
	}
}

// limitLoginEmail limits logins per account email, against password guessing spread over many IPs.
func (s *Server) limitLoginEmail(ctx context.Context, email string) error {
	key := strings.ToLower(strings.TrimSpace(email))
	return s.allow(ctx, nil, policy(policyLoginEmail, s.cfg.RateLimitLoginEmail), key, clientFrom(ctx).IP, uuid.Nil, "/v1/auth/login")
}

// allow asks the limiter about one request. It sets the RateLimit headers when it has a header to set, and
// returns a 429 problem when the request is refused, or a 503 when the limiter cannot decide and fails
// closed.
func (s *Server) allow(ctx context.Context, h http.Header, p ratelimit.Policy, key, ip string, user uuid.UUID, route string) error {
	d, err := s.limits.Limiter.Allow(ctx, key, p)
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return &problemError{status: http.StatusServiceUnavailable, slug: "limiter-unavailable",
			detail: "rate limiting is unavailable, retry shortly", retryAfter: time.Second}
	}
	if err != nil {
		return err
	}
	headers := rateLimitHeaders(d)
	for k, v := range headers {
		if h != nil {
			h.Set(k, v)
		}
	}
	if d.Allowed {
		return nil
	}
	s.refused(ctx, p.Name, ip, user, route)
	return &problemError{status: http.StatusTooManyRequests, slug: "rate-limited",
		detail:     "rate limit exceeded, retry in " + strconv.Itoa(d.RetryAfterSeconds()) + " seconds",
		retryAfter: time.Duration(d.RetryAfterSeconds()) * time.Second, headers: headers}
}

// refused logs and counts a refusal.
func (s *Server) refused(ctx context.Context, policy, ip string, user uuid.UUID, route string) {
	attrs := []any{"policy", policy, "ip", ip, "route", route, "request_id", requestIDFrom(ctx)}
	if user != uuid.Nil {
		attrs = append(attrs, "user_id", user)
	}
	s.logger.WarnContext(ctx, "rate limit refused a request", attrs...)
	s.metrics.RateLimitRefusals.WithLabelValues(policy).Inc()
}

func rateLimitHeaders(d ratelimit.Decision) map[string]string {
	return map[string]string{
		"RateLimit-Limit":     strconv.Itoa(d.Limit),
		"RateLimit-Remaining": strconv.Itoa(d.Remaining),
		"RateLimit-Reset":     strconv.Itoa(d.ResetSeconds()),
	}
}

// acquireStream takes one of the user's stream slots; release gives it back.
func (s *Server) acquireStream(ctx context.Context) (release func(), err error) {
	id := userID(ctx)
	release, ok, err := s.limits.Streams.Acquire(ctx, id.String(), s.cfg.MaxStreamsPerUser)
	if errors.Is(err, ratelimit.ErrUnavailable) {
		return nil, &problemError{status: http.StatusServiceUnavailable, slug: "limiter-unavailable",
			detail: "rate limiting is unavailable, retry shortly", retryAfter: time.Second}
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		s.refused(ctx, policyStreams, clientFrom(ctx).IP, id, "/v1/chat/stream")
		return nil, &problemError{status: http.StatusTooManyRequests, slug: "too-many-streams",
			detail:     "you have " + strconv.Itoa(s.cfg.MaxStreamsPerUser) + " streams open already; close one first",
			retryAfter: time.Second}
	}
	return release, nil
}
