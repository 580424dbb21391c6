package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/auth"
	"github.com/deepersensor/deepersensor/config"
)

// startRevocations starts the list of ended sessions: in memory for one instance, or shared by every
// instance through Redis. lifetime is how long an access token can verify after it was issued. The returned
// stop func stops keeping the list and closes the Redis client, if any.
func startRevocations(ctx context.Context, cfg config.Config, logger *slog.Logger, lifetime time.Duration) (*auth.Revocations, func(), error) {
	rc := auth.RevocationsConfig{KeyPrefix: cfg.RedisKeyPrefix, Lifetime: lifetime, Logger: logger}
	if cfg.RedisURL != "" {
		opts, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, nil, fmt.Errorf("DS_REDIS_URL: %w", err)
		}
		// A dead Redis must cost a logout little: it is retried in the background.
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = time.Second, time.Second, time.Second
		opts.ContextTimeoutEnabled = true
		opts.DialerRetries, opts.MaxRetries = 1, -1
		rc.Redis = redis.NewClient(opts)
	}
	revocations := auth.NewRevocations(rc)
	stop := revocations.Start(ctx)
	return revocations, func() {
		stop()
		if rc.Redis != nil {
			_ = rc.Redis.Close()
		}
	}, nil
}
