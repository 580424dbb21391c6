// Package config reads the service's configuration once, from DS_* environment variables (and, in
// development, an optional .env file), and checks it before anything starts.
package config

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/joho/godotenv"
	"github.com/kelseyhightower/envconfig"
)

// Environments the service knows.
const (
	Development = "development"
	Production  = "production"
)

// MinJWTSecretBytes is the shortest signing secret accepted for HS256.
const MinJWTSecretBytes = 32

// Config is every setting of the service. Each field is read from DS_ plus its envconfig name.
type Config struct {
	Env       string `envconfig:"ENV" default:"development" desc:"development or production"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" desc:"json or text; json in production, text in development"`

	HTTPAddr          string        `envconfig:"HTTP_ADDR" default:"127.0.0.1:8080"`
	MetricsAddr       string        `envconfig:"METRICS_ADDR" desc:"a separate listener for /metrics; empty serves it on HTTP_ADDR, except in production"`
	BodyLimit         int64         `envconfig:"BODY_LIMIT" default:"2097152" desc:"largest request body in bytes"`
	MaxInFlight       int           `envconfig:"MAX_IN_FLIGHT" default:"1024" desc:"requests served at once; more get 503"`
	CORSOrigins       []string      `envconfig:"CORS_ORIGINS" desc:"comma-separated origins allowed by CORS; empty allows none"`
	TrustedProxies    []string      `envconfig:"TRUSTED_PROXIES" desc:"comma-separated CIDRs whose X-Forwarded-For is believed"`
	ReadHeaderTimeout time.Duration `envconfig:"READ_HEADER_TIMEOUT" default:"5s"`
	ReadTimeout       time.Duration `envconfig:"READ_TIMEOUT" default:"30s"`
	WriteTimeout      time.Duration `envconfig:"WRITE_TIMEOUT" default:"60s" desc:"streams extend it per event"`
	IdleTimeout       time.Duration `envconfig:"IDLE_TIMEOUT" default:"120s"`
	ShutdownGrace     time.Duration `envconfig:"SHUTDOWN_GRACE" default:"30s"`

	DatabaseURL    string `envconfig:"DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/deepersensor?sslmode=disable"`
	RedisURL       string `envconfig:"REDIS_URL" desc:"optional; enables limits shared across instances"`
	RedisKeyPrefix string `envconfig:"REDIS_KEY_PREFIX" default:"ds:" desc:"prefix of every Redis key"`

	// DatabaseReadURL, when set, is a streaming replica of DatabaseURL that serves the reads that may be
	// slightly stale, while it is no more than DatabaseReadMaxLag behind.
	DatabaseReadURL    string        `envconfig:"DATABASE_READ_URL" desc:"optional; a streaming replica of DATABASE_URL for reads that may be slightly stale"`
	DatabaseReadMaxLag time.Duration `envconfig:"DATABASE_READ_MAX_LAG" default:"5s" desc:"how far behind the primary the replica may be before every read goes to the primary"`

	JWTSecret           string        `envconfig:"JWT_SECRET" desc:"at least 32 bytes; signs access tokens"`
	JWTPreviousSecrets  []string      `envconfig:"JWT_PREVIOUS_SECRETS" desc:"comma-separated older secrets still accepted for verification"`
	JWTIssuer           string        `envconfig:"JWT_ISSUER" default:"deepersensor"`
	JWTAudience         string        `envconfig:"JWT_AUDIENCE" default:"deepersensor-api"`
	AccessTokenTTL      time.Duration `envconfig:"ACCESS_TOKEN_TTL" default:"15m"`
	RefreshTokenTTL     time.Duration `envconfig:"REFRESH_TOKEN_TTL" default:"720h"`
	RefreshFamilyMaxAge time.Duration `envconfig:"REFRESH_FAMILY_MAX_AGE" default:"2160h" desc:"absolute lifetime of a session, however often its refresh token rotates"`

	Argon2Memory      uint32        `envconfig:"ARGON2_MEMORY" default:"19456" desc:"KiB per hash"`
	Argon2Time        uint32        `envconfig:"ARGON2_TIME" default:"2"`
	Argon2Parallelism uint8         `envconfig:"ARGON2_PARALLELISM" default:"1"`
	HashConcurrency   int           `envconfig:"HASH_CONCURRENCY" default:"2" desc:"password hashes computed at once"`
	HashQueueWait     time.Duration `envconfig:"HASH_QUEUE_WAIT" default:"2s" desc:"how long a login waits for a hashing slot before 503"`

	OllamaURL               string        `envconfig:"OLLAMA_URL" default:"http://127.0.0.1:11434"`
	OllamaConnectTimeout    time.Duration `envconfig:"OLLAMA_CONNECT_TIMEOUT" default:"5s"`
	OllamaFirstChunkTimeout time.Duration `envconfig:"OLLAMA_FIRST_CHUNK_TIMEOUT" default:"5m" desc:"a model may be loading"`
	OllamaChunkTimeout      time.Duration `envconfig:"OLLAMA_CHUNK_TIMEOUT" default:"60s"`
	OllamaRequestTimeout    time.Duration `envconfig:"OLLAMA_REQUEST_TIMEOUT" default:"10m" desc:"a whole model call, streamed or not"`
	OllamaMaxConcurrency    int           `envconfig:"OLLAMA_MAX_CONCURRENCY" default:"32" desc:"chat calls to the model server at once per instance"`
	OllamaQueueWait         time.Duration `envconfig:"OLLAMA_QUEUE_WAIT" default:"2s" desc:"how long a chat call waits for a model server slot before 503"`
	ModelsCacheTTL          time.Duration `envconfig:"MODELS_CACHE_TTL" default:"30s"`
	// Upstreams, when set, replace the one Ollama of OllamaURL; each has the timeouts and caps above.
	Upstreams      Upstreams `envconfig:"UPSTREAMS" desc:"model servers, NAME=KIND+URL comma-separated (KIND ollama or openai); empty means the one Ollama at OLLAMA_URL"`
	ModelFallbacks Fallbacks `envconfig:"MODEL_FALLBACKS" desc:"MODEL=FALLBACK comma-separated: the model that answers when MODEL fails before its first token"`

	RateLimitAuthIP            Rate  `envconfig:"RATE_LIMIT_AUTH_IP" default:"20/1m" desc:"per client address on signup, login, refresh, logout and account deletion"`
	RateLimitLoginEmail        Rate  `envconfig:"RATE_LIMIT_LOGIN_EMAIL" default:"10/15m" desc:"per account email and client address on login and account deletion"`
	RateLimitLoginEmailCeiling Rate  `envconfig:"RATE_LIMIT_LOGIN_EMAIL_CEILING" default:"100/1h" desc:"per account email on login, from all addresses together"`
	RateLimitIPv6Prefix        int   `envconfig:"RATE_LIMIT_IPV6_PREFIX" default:"64" desc:"IPv6 clients are limited per network of this many bits"`
	RateLimitUser              Rate  `envconfig:"RATE_LIMIT_USER" default:"300/1m" desc:"per user on authenticated routes"`
	RateLimitChat              Rate  `envconfig:"RATE_LIMIT_CHAT" default:"30/1m" desc:"per user on the chat routes"`
	MaxStreamsPerUser          int   `envconfig:"MAX_STREAMS_PER_USER" default:"3" desc:"model calls, streamed or not, one user may have running at once"`
	RateLimitFailClosed        bool  `envconfig:"RATE_LIMIT_FAIL_CLOSED" default:"false" desc:"answer 503 instead of limiting per instance while Redis is down"`
	RateLimitKeyLookupIP       Rate  `envconfig:"RATE_LIMIT_KEY_LOOKUP_IP" default:"120/1m" desc:"per client address, API keys looked up in the database (those not cached)"`
	MaxAPIKeysPerUser          int   `envconfig:"MAX_API_KEYS_PER_USER" default:"50" desc:"API keys that have not expired one user may have"`
	RateLimitTokensPerMinute   int64 `envconfig:"RATE_LIMIT_TOKENS_PER_MINUTE" default:"0" desc:"per user, model tokens per minute on all instances together; 0 for none"`
	QuotaTokensPerDay          int64 `envconfig:"QUOTA_TOKENS_PER_DAY" default:"0" desc:"per user, model tokens per UTC day unless an admin set another; 0 for none"`
	QuotaTokensPerMonth        int64 `envconfig:"QUOTA_TOKENS_PER_MONTH" default:"0" desc:"per user, model tokens per calendar month (UTC) unless an admin set another; 0 for none"`

	ChatHistoryMessages   int           `envconfig:"CHAT_HISTORY_MESSAGES" default:"50" desc:"stored messages sent to the model before the new ones"`
	ChatHistoryBytes      int64         `envconfig:"CHAT_HISTORY_BYTES" default:"1048576" desc:"and at most this many bytes of their content"`
	ChatMaxContext        int           `envconfig:"CHAT_MAX_CONTEXT" default:"32768" desc:"largest num_ctx option a chat may ask for"`
	ChatMaxPredict        int           `envconfig:"CHAT_MAX_PREDICT" default:"4096" desc:"largest num_predict option a chat may ask for"`
	MaxStoredBytesPerUser int64         `envconfig:"MAX_STORED_BYTES_PER_USER" default:"268435456" desc:"message content one user may store; 0 for no cap"`
	SSEHeartbeat          time.Duration `envconfig:"SSE_HEARTBEAT" default:"15s"`

	// GeneratedJWTSecret is true when development generated a random JWT secret for this run.
	GeneratedJWTSecret bool `ignored:"true"`
}

// Load reads the configuration. In development a .env file in the working directory, when present, fills
// variables that the environment does not set.
func Load() (Config, error) {
	if os.Getenv("DS_ENV") != Production {
		if err := godotenv.Load(); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Config{}, fmt.Errorf("read .env: %w", err)
		}
	}
	var c Config
	if err := envconfig.Process("DS", &c); err != nil {
		return Config{}, fmt.Errorf("configuration: %w", err)
	}
	if err := c.finish(); err != nil {
		return Config{}, fmt.Errorf("configuration: %w", err)
	}
	return c, nil
}

// finish checks the values and fills the derived ones.
func (c *Config) finish() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("DS_%s: "+format, append([]any{name}, args...)...))
	}
	switch c.Env {
	case Development, Production:
	default:
		bad("ENV", "must be %q or %q, not %q", Development, Production, c.Env)
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
		if c.Env == Production {
			c.LogFormat = "json"
		}
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("LOG_FORMAT", "must be json or text")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("LOG_LEVEL", "must be debug, info, warn or error")
	}
	switch {
	case c.JWTSecret == "" && c.Env == Production:
		bad("JWT_SECRET", "is required in production")
	case c.JWTSecret == "":
		c.JWTSecret = rand.Text() + rand.Text()
		c.GeneratedJWTSecret = true
	case len(c.JWTSecret) < MinJWTSecretBytes:
		bad("JWT_SECRET", "must be at least %d bytes, got %d", MinJWTSecretBytes, len(c.JWTSecret))
	}
	for i, s := range c.JWTPreviousSecrets {
		if len(s) < MinJWTSecretBytes {
			bad("JWT_PREVIOUS_SECRETS", "secret %d must be at least %d bytes", i+1, MinJWTSecretBytes)
		}
	}
	for _, p := range c.TrustedProxies {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("TRUSTED_PROXIES", "%q is not a CIDR such as 10.0.0.0/8", p)
		}
	}
	if u, err := url.Parse(c.OllamaURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("OLLAMA_URL", "must be an http(s) URL")
	}
	errs = append(errs, c.Upstreams.readAPIKeys()...)
	if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("DATABASE_URL", "must be a postgres:// URL")
	}
	if c.DatabaseReadURL != "" {
		if u, err := url.Parse(c.DatabaseReadURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			bad("DATABASE_READ_URL", "must be a postgres:// URL")
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			bad("REDIS_URL", "must be a redis:// or rediss:// URL")
		}
	}
	positive := map[string]int64{
		"BODY_LIMIT": c.BodyLimit, "MAX_IN_FLIGHT": int64(c.MaxInFlight), "ARGON2_MEMORY": int64(c.Argon2Memory),
		"ARGON2_TIME": int64(c.Argon2Time), "ARGON2_PARALLELISM": int64(c.Argon2Parallelism),
		"HASH_CONCURRENCY": int64(c.HashConcurrency), "CHAT_HISTORY_MESSAGES": int64(c.ChatHistoryMessages),
		"CHAT_HISTORY_BYTES": c.ChatHistoryBytes, "CHAT_MAX_CONTEXT": int64(c.ChatMaxContext),
		"CHAT_MAX_PREDICT": int64(c.ChatMaxPredict),
		"ACCESS_TOKEN_TTL": int64(c.AccessTokenTTL), "REFRESH_TOKEN_TTL": int64(c.RefreshTokenTTL),
		"SSE_HEARTBEAT": int64(c.SSEHeartbeat), "MAX_STREAMS_PER_USER": int64(c.MaxStreamsPerUser),
		"MAX_API_KEYS_PER_USER":  int64(c.MaxAPIKeysPerUser),
		"REFRESH_FAMILY_MAX_AGE": int64(c.RefreshFamilyMaxAge),
		"OLLAMA_MAX_CONCURRENCY": int64(c.OllamaMaxConcurrency), "OLLAMA_QUEUE_WAIT": int64(c.OllamaQueueWait),
		"DATABASE_READ_MAX_LAG": int64(c.DatabaseReadMaxLag),
	}
	for name, v := range map[string]int64{
		"RATE_LIMIT_TOKENS_PER_MINUTE": c.RateLimitTokensPerMinute, "QUOTA_TOKENS_PER_DAY": c.QuotaTokensPerDay,
		"QUOTA_TOKENS_PER_MONTH": c.QuotaTokensPerMonth,
	} {
		if v < 0 {
			bad(name, "must not be negative")
		}
	}
	for name, v := range positive {
		if v <= 0 {
			bad(name, "must be positive")
		}
	}
	if c.Argon2Memory < 8*uint32(c.Argon2Parallelism) {
		bad("ARGON2_MEMORY", "must be at least 8 KiB per lane")
	}
	if c.RateLimitIPv6Prefix < 1 || c.RateLimitIPv6Prefix > 128 {
		bad("RATE_LIMIT_IPV6_PREFIX", "must be between 1 and 128")
	}
	return errors.Join(errs...)
}

// SlogLevel is the configured log level.
func (c Config) SlogLevel() slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel)) // checked by finish
	return level
}

// LogValue lets the configuration be logged at start-up with its secrets masked.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("env", c.Env),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.String("database_url", redactURL(c.DatabaseURL)),
		slog.String("database_read_url", redactURL(c.DatabaseReadURL)),
		slog.Duration("database_read_max_lag", c.DatabaseReadMaxLag),
		slog.String("redis_url", redactURL(c.RedisURL)),
		slog.String("ollama_url", c.OllamaURL),
		slog.String("upstreams", c.Upstreams.String()),
		slog.String("model_fallbacks", c.ModelFallbacks.String()),
		slog.String("jwt_secret", "[masked]"),
		slog.Int("jwt_previous_secrets", len(c.JWTPreviousSecrets)),
		slog.Duration("access_token_ttl", c.AccessTokenTTL),
		slog.Duration("refresh_token_ttl", c.RefreshTokenTTL),
		slog.Duration("refresh_family_max_age", c.RefreshFamilyMaxAge),
		slog.String("argon2", fmt.Sprintf("m=%d,t=%d,p=%d", c.Argon2Memory, c.Argon2Time, c.Argon2Parallelism)),
		slog.Int("hash_concurrency", c.HashConcurrency),
		slog.String("cors_origins", strings.Join(c.CORSOrigins, ",")),
		slog.String("trusted_proxies", strings.Join(c.TrustedProxies, ",")),
		slog.Int64("body_limit", c.BodyLimit),
		slog.String("rate_limits", fmt.Sprintf("auth_ip=%s login_email=%s user=%s chat=%s streams=%d fail_closed=%t",
			c.RateLimitAuthIP, c.RateLimitLoginEmail, c.RateLimitUser, c.RateLimitChat, c.MaxStreamsPerUser, c.RateLimitFailClosed)),
		slog.String("login_limits", fmt.Sprintf("email_ceiling=%s ipv6_prefix=%d", c.RateLimitLoginEmailCeiling, c.RateLimitIPv6Prefix)),
		slog.String("ollama_concurrency", fmt.Sprintf("%d queue_wait=%s", c.OllamaMaxConcurrency, c.OllamaQueueWait)),
	)
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "[unparsable]"
	}
	return u.Redacted()
}
