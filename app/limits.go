package app

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/deepersensor/deepersensor/config"
	"github.com/deepersensor/deepersensor/ratelimit"
	"github.com/deepersensor/deepersensor/server"
)

// redisTimeout bounds each Redis call of the limiter, so that a dead Redis costs a request little before
// the fallback takes over.
const redisTimeout = 300 * time.Millisecond

// newLimits builds the rate limits and the token budgets: in memory for one instance, or in Redis, shared by
// every instance, with a fallback while Redis is down. The returned close func closes the Redis client, if
// any.
func newLimits(cfg config.Config, logger *slog.Logger, onFallback func()) (server.Limits, ratelimit.Budgets, func() error, error) {
	memory := ratelimit.NewMemory(ratelimit.MemoryConfig{})
	memoryStreams := ratelimit.NewMemoryConcurrency()
	memoryBudgets := ratelimit.NewMemoryBudgets(ratelimit.MemoryConfig{})
	if cfg.RedisURL == "" {
		return server.Limits{Limiter: memory, Streams: memoryStreams}, memoryBudgets, func() error { return nil }, nil
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return server.Limits{}, nil, nil, fmt.Errorf("DS_REDIS_URL: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = redisTimeout, redisTimeout, redisTimeout
	opts.ContextTimeoutEnabled = true
	opts.DialerRetries, opts.MaxRetries = 1, -1
	client := redis.NewClient(opts)

	var limiter, streams, budgets = ratelimit.Limiter(memory), ratelimit.ConcurrencyLimiter(memoryStreams), ratelimit.Budgets(memoryBudgets)
	if cfg.RateLimitFailClosed {
		limiter, streams, budgets = nil, nil, nil
	}
	fallback := ratelimit.FallbackConfig{Logger: logger, OnFallback: onFallback}
	return server.Limits{
		Limiter: ratelimit.NewFallback(ratelimit.NewRedis(client, cfg.RedisKeyPrefix+"rl:"), limiter, fallback),
		Streams: ratelimit.NewConcurrencyFallback(ratelimit.NewRedisConcurrency(client, cfg.RedisKeyPrefix+"streams:", ratelimit.DefaultLease), streams, fallback),
	}, ratelimit.NewBudgetFallback(ratelimit.NewRedisBudgets(client, cfg.RedisKeyPrefix+"budget:"), budgets, fallback), client.Close, nil
}
