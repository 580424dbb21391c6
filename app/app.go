// Package app is the composition root: it builds every part of the service from the configuration, wires
// them together and serves. cmd/deepersensor and the end-to-end tests start the service through it alike.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/quota"
	"github.com/deepersensor/deepersensor/server"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/tracing"
	"github.com/deepersensor/deepersensor/usage"
)

// App is the built service, ready to serve.
type App struct {
	cfg     config.Config
	logger  *slog.Logger
	server  *server.Server
	metrics *metrics.Metrics
	closers []func() // run in reverse order by Close
}

// Run builds the service from cfg, listens on cfg.HTTPAddr and serves until ctx ends, then shuts down
// gracefully.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger) error {
	a, err := New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	return a.Serve(ctx, ln)
}

// New builds the service from cfg: it connects to and migrates the database, and wires the services, the
// limits and the HTTP server. Close releases what it opened.
func New(ctx context.Context, cfg config.Config, logger *slog.Logger) (*App, error) {
	return build(ctx, cfg, logger, true)
}

// build is New, with the usage accounting of model calls left out unless accounting is true: benchmarks
// compare the two.
func build(ctx context.Context, cfg config.Config, logger *slog.Logger, accounting bool) (_ *App, err error) {
	logger.Info("starting", "config", cfg)
	if cfg.GeneratedJWTSecret {
		logger.Warn("DS_JWT_SECRET is not set: using a random secret for this run only; every token dies at restart. " +
			"Set DS_JWT_SECRET (32 bytes or more) for anything but local development.")
	}
	a := &App{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if cfg.Env == config.Development {
		if err := store.CreateDatabaseIfMissing(ctx, cfg.DatabaseURL); err != nil {
			return nil, err
		}
	}
	var (
		queryTracer   pgx.QueryTracer
		wrapTransport func(http.RoundTripper) http.RoundTripper
	)
	tracingOn := tracing.Enabled()
	if tracingOn {
		shutdown, err := tracing.Setup(ctx, "deepersensor")
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, func() { _ = shutdown(context.WithoutCancel(ctx)) })
		queryTracer = otelpgx.NewTracer()
		wrapTransport = func(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt) }
		logger.Info("tracing enabled")
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, queryTracer)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, pool.Close)
	if err := store.Migrate(ctx, pool, logger); err != nil {
		return nil, err
	}
	st := store.New(pool)
	m := metrics.New()
	m.RegisterPool(pool)
	a.metrics = m
	st, replicaChecker, err := a.readReplica(ctx, pool, st, queryTracer)
	if err != nil {
		return nil, err
	}

	hasher, err := auth.NewHasher(auth.Argon2Params{
		Memory: cfg.Argon2Memory, Time: cfg.Argon2Time, Parallelism: cfg.Argon2Parallelism,
	}, cfg.HashConcurrency, cfg.HashQueueWait, func(d time.Duration) { m.HashQueueWait.Observe(d.Seconds()) })
	if err != nil {
		return nil, err
	}
	tokens := auth.NewTokens(auth.TokenConfig{
		Secret: cfg.JWTSecret, PreviousSecrets: cfg.JWTPreviousSecrets, Issuer: cfg.JWTIssuer,
		Audience: cfg.JWTAudience, TTL: cfg.AccessTokenTTL,
	})
	revocations, stopRevocations, err := startRevocations(ctx, cfg, logger, tokens.Lifetime())
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, stopRevocations)
	authSvc := auth.NewService(st, hasher, tokens, revocations, auth.ServiceConfig{
		RefreshTTL: cfg.RefreshTokenTTL, FamilyMaxAge: cfg.RefreshFamilyMaxAge, MaxAPIKeys: cfg.MaxAPIKeysPerUser,
		Logger: logger,
		Metrics: auth.Metrics{
			Login:        func(outcome string) { m.Logins.WithLabelValues(outcome).Inc() },
			RefreshReuse: m.RefreshReuse.Inc,
		},
	})
	// Not stopped when ctx ends, since requests still finish then, but by Close, after the server and before
	// the pool is closed: it writes the last uses of API keys still pending.
	a.closers = append(a.closers, authSvc.Start(context.WithoutCancel(ctx)))
	models, err := newProvider(cfg, wrapTransport)
	if err != nil {
		return nil, err
	}
	usageWriter := usage.NewWriter(st, logger)
	// Not stopped when ctx ends, since requests still finish then, but by Close, after the server and before
	// the pool is closed: it writes the records still queued.
	a.closers = append(a.closers, usageWriter.Start(context.WithoutCancel(ctx)))
	var recorder chat.Recorder
	if accounting {
		recorder = usageWriter
	}
	limits, budgets, closeLimits, err := newLimits(cfg, logger, m.LimiterFallbacks.Inc)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { _ = closeLimits() })
	quotas := quota.New(quota.Limits{
		PerMinute: cfg.RateLimitTokensPerMinute, PerDay: cfg.QuotaTokensPerDay, PerMonth: cfg.QuotaTokensPerMonth,
	}, st, budgets, nil)
	chatSvc := chat.NewService(st, models, recorder, quotas, chat.Limits{
		HistoryMessages: cfg.ChatHistoryMessages, HistoryBytes: cfg.ChatHistoryBytes,
		MaxContext: cfg.ChatMaxContext, MaxPredict: cfg.ChatMaxPredict, MaxStoredBytes: cfg.MaxStoredBytesPerUser,
	}, logger)

	srv, err := server.New(server.Deps{
		Config: cfg, Logger: logger, Auth: authSvc, Chat: chatSvc, Usage: usage.NewService(st), Provider: models,
		Database: pool, Replica: replicaChecker, Limits: limits, Quotas: quotas, Metrics: m, Tracing: tracingOn,
	})
	if err != nil {
		return nil, err
	}
	a.server = srv
	return a, nil
}

// drainMargin is how long before the end of the shutdown grace the model calls in flight are ended: time
// to send their last event, store their partial answers, and for http.Server.Shutdown, which looks for idle
// connections every 500ms at most, to see them done.
func drainMargin(grace time.Duration) time.Duration {
	return min(grace/4, 2*time.Second)
}

// Close releases what New opened, in reverse order.
func (a *App) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// Serve serves the API on ln, and the metrics on their own address when one is configured, until ctx ends;
// then it shuts down gracefully: it stops accepting and lets in-flight requests finish within the grace.
// Model calls that would outlast it are ended shortly before it runs out, each with a retryable 503 (an
// error event on streams) and its partial answer stored.
func (a *App) Serve(ctx context.Context, ln net.Listener) error {
	cfg := a.cfg
	httpServer := &http.Server{
		Handler:           a.server.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn),
	}
	a.logger.Info("listening", "addr", ln.Addr().String())
	serveErr := make(chan error, 2)
	go func() { serveErr <- httpServer.Serve(ln) }()
	if cfg.MetricsAddr != "" {
		metricsServer := &http.Server{Addr: cfg.MetricsAddr, Handler: server.MetricsHandler(a.metrics), ReadHeaderTimeout: cfg.ReadHeaderTimeout}
		go func() { serveErr <- metricsServer.ListenAndServe() }()
		defer metricsServer.Close()
		a.logger.Info("serving metrics", "addr", cfg.MetricsAddr)
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	a.logger.Info("shutting down", "grace", cfg.ShutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	drain := time.AfterFunc(cfg.ShutdownGrace-drainMargin(cfg.ShutdownGrace), a.server.Drain)
	defer drain.Stop()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	a.logger.Info("stopped")
	return nil
}
