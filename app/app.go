// Package app is the composition root: it builds every part of the service from the configuration, wires
// them together and serves. cmd/deepersensor and the end-to-end tests start the service through it alike.
package app

import (
	"context"
	"errors"
	"fmt"
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/chat"
	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/metrics"
	"github.com/deepersensor/deepersensor/provider/ollama"
	"github.com/deepersensor/deepersensor/server"
	"github.com/deepersensor/deepersensor/store"
	"github.com/deepersensor/deepersensor/tracing"
)

// Run builds the service from cfg and serves until ctx ends, then shuts down gracefully: it stops accepting,
// lets in-flight requests finish within the grace period and closes the pools. When ready is not nil it
// receives the listening address once the server accepts connections; tests use it to boot the whole
// service on 127.0.0.1:0.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, ready chan<- string) error {
	logger.Info("starting", "config", cfg)
	if cfg.GeneratedJWTSecret {
		logger.Warn("DS_JWT_SECRET is not set: using a random secret for this run only; every token dies at restart. " +
			"Set DS_JWT_SECRET (32 bytes or more) for anything but local development.")
	}
	if cfg.Env == config.Development {
		if err := store.CreateDatabaseIfMissing(ctx, cfg.DatabaseURL); err != nil {
			return err
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
			return err
		}
		defer func() { _ = shutdown(context.WithoutCancel(ctx)) }()
		queryTracer = otelpgx.NewTracer()
		wrapTransport = func(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt) }
		logger.Info("tracing enabled")
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, queryTracer)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool, logger); err != nil {
		return err
	}
	st := store.New(pool)
	m := metrics.New()
	m.RegisterPool(pool)

	hasher, err := auth.NewHasher(auth.Argon2Params{
		Memory: cfg.Argon2Memory, Time: cfg.Argon2Time, Parallelism: cfg.Argon2Parallelism,
	}, cfg.HashConcurrency, cfg.HashQueueWait, func(d time.Duration) { m.HashQueueWait.Observe(d.Seconds()) })
	if err != nil {
		return err
	}
	tokens := auth.NewTokens(auth.TokenConfig{
		Secret: cfg.JWTSecret, PreviousSecrets: cfg.JWTPreviousSecrets, Issuer: cfg.JWTIssuer,
		Audience: cfg.JWTAudience, TTL: cfg.AccessTokenTTL,
	})
	authSvc := auth.NewService(st, hasher, tokens, cfg.RefreshTokenTTL, logger, auth.Metrics{
		Login:        func(outcome string) { m.Logins.WithLabelValues(outcome).Inc() },
		RefreshReuse: m.RefreshReuse.Inc,
	})
	models := ollama.New(ollama.Config{
		BaseURL: cfg.OllamaURL, ConnectTimeout: cfg.OllamaConnectTimeout, FirstChunkTimeout: cfg.OllamaFirstChunkTimeout,
		ChunkTimeout: cfg.OllamaChunkTimeout, RequestTimeout: cfg.OllamaRequestTimeout, ModelsCacheTTL: cfg.ModelsCacheTTL,
		WrapTransport: wrapTransport,
	})
	chatSvc := chat.NewService(st, models, cfg.ChatHistoryMessages, logger)

	limits, closeLimits, err := newLimits(cfg, logger, m.LimiterFallbacks.Inc)
	if err != nil {
		return err
	}
	defer closeLimits()

	srv, err := server.New(server.Deps{
		Config: cfg, Logger: logger, Auth: authSvc, Chat: chatSvc, Provider: models, Store: st, Limits: limits,
		Metrics: m, Tracing: tracingOn,
	})
	if err != nil {
		return err
	}
	httpServer := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	serveErr := make(chan error, 2)
	go func() { serveErr <- httpServer.Serve(ln) }()
	if cfg.MetricsAddr != "" {
		metricsServer := &http.Server{Addr: cfg.MetricsAddr, Handler: server.MetricsHandler(m), ReadHeaderTimeout: cfg.ReadHeaderTimeout}
		go func() { serveErr <- metricsServer.ListenAndServe() }()
		defer metricsServer.Close()
		logger.Info("serving metrics", "addr", cfg.MetricsAddr)
	}

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", cfg.ShutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}
