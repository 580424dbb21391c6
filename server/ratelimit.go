package server

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/core"
	"github.com/deepersensor/deepersensor/ratelimit"
)

// Limits are the rate limits and the per-user cap on model calls the server enforces.
type Limits struct {
	Limiter ratelimit.Limiter
	// Streams counts the model calls, streamed or not, that each user has running.
	Streams ratelimit.ConcurrencyLimiter
}

// Policy names, also the first part of each bucket's key.
const (
	policyAuthIP            = "auth_ip"
	policyLoginEmail        = "login_email"
	policyLoginEmailCeiling = "login_email_ceiling"
	policyUser              = "user"
	policyChat              = "chat"
	policyStreams           = "streams"
	policyKeyLookupIP       = "key_lookup_ip"
)

func policy(name string, r config.Rate) ratelimit.Policy {
	return ratelimit.Policy{Name: name, Limit: r.Limit, Period: r.Period}
}

// limitByIP limits the account operations per client address, before anything else runs.
func (s *Server) limitByIP(next echo.HandlerFunc) echo.HandlerFunc {
	p := policy(policyAuthIP, s.cfg.RateLimitAuthIP)
	return func(c echo.Context) error {
		if !ipLimitedOperations[operationID(c)] {
			return next(c)
		}
		if err := s.allow(c.Request().Context(), c.Response().Header(), p, s.addressKey(c.RealIP()), c.RealIP(), uuid.Nil); err != nil {
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
		if modelOperations[operationID(c)] {
			p = chat
		}
		if err := s.allow(ctx, c.Response().Header(), p, id.String(), c.RealIP(), id); err != nil {
			return err
		}
		return next(c)
	}
}

// limitLoginEmail limits the password guesses for the account of email; every operation that checks a
// password calls it. The strict limit counts per email and client address, so that a guesser locks out
// its own address only; the much looser ceiling counts per email from every address, against guessing
// spread over many. A guess the strict limit refuses does not count against the ceiling.
func (s *Server) limitLoginEmail(ctx context.Context, email string) error {
	email = strings.ToLower(strings.TrimSpace(email))
	ip := clientFrom(ctx).IP
	strict := policy(policyLoginEmail, s.cfg.RateLimitLoginEmail)
	if err := s.allow(ctx, nil, strict, s.addressKey(ip)+"|"+email, ip, uuid.Nil); err != nil {
		return err
	}
	return s.allow(ctx, nil, policy(policyLoginEmailCeiling, s.cfg.RateLimitLoginEmailCeiling), email, ip, uuid.Nil)
}

// addressKey is the key of the client at ip in the per-address limits: an IPv6 client counts by its
// network of DS_RATE_LIMIT_IPV6_PREFIX bits, since it may pick any address in it.
func (s *Server) addressKey(ip string) string {
	return ratelimit.AddressKey(ip, s.cfg.RateLimitIPv6Prefix)
}

// allow asks the limiter about one request. It sets the RateLimit headers when it has a header to set, and
// returns a core.RateLimited error when the request is refused; the limiter's own errors, such as
// ratelimit.ErrUnavailable, pass through.
func (s *Server) allow(ctx context.Context, h http.Header, p ratelimit.Policy, key, ip string, user uuid.UUID) error {
	d, err := s.limits.Limiter.Allow(ctx, key, p)
	if err != nil {
		return err
	}
	limit := core.Limit{Limit: d.Limit, Remaining: d.Remaining, Reset: d.ResetAfter}
	if h != nil {
		setRateLimitHeaders(h, limit)
	}
	if d.Allowed {
		return nil
	}
	s.refused(ctx, p.Name, ip, user)
	retry := d.RetryAfterSeconds()
	return &core.Error{Code: core.RateLimited, Message: "rate limit exceeded, retry in " + strconv.Itoa(retry) + " seconds",
		RetryAfter: time.Duration(retry) * time.Second, Limit: &limit}
}

// setRateLimitHeaders sets the IETF RateLimit headers.
func setRateLimitHeaders(h http.Header, l core.Limit) {
	h.Set("RateLimit-Limit", strconv.Itoa(l.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(l.Remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(l.Reset)))
}

// refused logs and counts a refusal of the request of ctx.
func (s *Server) refused(ctx context.Context, policy, ip string, user uuid.UUID) {
	attrs := []any{"policy", policy, "ip", ip, "operation", operationFrom(ctx), "request_id", requestIDFrom(ctx)}
	if user != uuid.Nil {
		attrs = append(attrs, "user_id", user)
	}
	s.logger.WarnContext(ctx, "rate limit refused a request", attrs...)
	s.metrics.RateLimitRefusals.WithLabelValues(policy).Inc()
}

// acquireModelCall takes one of the user's DS_MAX_STREAMS_PER_USER slots for a model call, streamed or not;
// release gives it back when the call ends.
func (s *Server) acquireModelCall(ctx context.Context) (release func(), err error) {
	id := userID(ctx)
	release, ok, err := s.limits.Streams.Acquire(ctx, id.String(), s.cfg.MaxStreamsPerUser)
	if err != nil {
		return nil, err
	}
	if !ok {
		s.refused(ctx, policyStreams, clientFrom(ctx).IP, id)
		return nil, &core.Error{Code: core.TooManyStreams, RetryAfter: time.Second,
			Message: "you have " + strconv.Itoa(s.cfg.MaxStreamsPerUser) + " chats running already; wait for one to end"}
	}
	return release, nil
}
