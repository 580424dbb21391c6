package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/deepersensor/deepersensor/config"
)

func TestLoad(t *testing.T) {
	secret := strings.Repeat("k", 32)
	const twoUpstreams = "local=ollama+http://127.0.0.1:11434, gpu=openai+http://gpu-box:8000/v1"
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // a substring of the error; empty for success
		check   func(*testing.T, config.Config)
	}{
		{"defaults", nil, "", func(t *testing.T, c config.Config) {
			if c.HTTPAddr != "127.0.0.1:8080" || c.Env != config.Development || c.BodyLimit != 2<<20 || c.LogFormat != "text" {
				t.Errorf("defaults = %+v", c)
			}
			if !c.GeneratedJWTSecret || len(c.JWTSecret) < config.MinJWTSecretBytes {
				t.Errorf("development without DS_JWT_SECRET must generate one")
			}
			if c.DatabaseReadURL != "" || c.DatabaseReadMaxLag != 5*time.Second {
				t.Errorf("read replica defaults = %q, %s; want none, 5s", c.DatabaseReadURL, c.DatabaseReadMaxLag)
			}
			if c.Argon2Memory != 19456 || c.Argon2Time != 2 || c.Argon2Parallelism != 1 {
				t.Errorf("argon2 defaults = %d/%d/%d, want OWASP's", c.Argon2Memory, c.Argon2Time, c.Argon2Parallelism)
			}
		}},
		{"production without a secret", map[string]string{"DS_ENV": "production"}, "DS_JWT_SECRET", nil},
		{"production with a secret", map[string]string{"DS_ENV": "production", "DS_JWT_SECRET": secret}, "", func(t *testing.T, c config.Config) {
			if c.LogFormat != "json" || c.GeneratedJWTSecret {
				t.Errorf("production = %+v", c)
			}
		}},
		{"short secret", map[string]string{"DS_JWT_SECRET": "short"}, "DS_JWT_SECRET", nil},
		{"short previous secret", map[string]string{"DS_JWT_PREVIOUS_SECRETS": secret + ",short"}, "DS_JWT_PREVIOUS_SECRETS", nil},
		{"unknown environment", map[string]string{"DS_ENV": "staging"}, "DS_ENV", nil},
		{"bad duration", map[string]string{"DS_ACCESS_TOKEN_TTL": "soon"}, "ACCESS_TOKEN_TTL", nil},
		{"bad number", map[string]string{"DS_BODY_LIMIT": "big"}, "BODY_LIMIT", nil},
		{"zero body limit", map[string]string{"DS_BODY_LIMIT": "0"}, "DS_BODY_LIMIT", nil},
		{"bad proxy network", map[string]string{"DS_TRUSTED_PROXIES": "10.0.0.0/8,nonsense"}, "DS_TRUSTED_PROXIES", nil},
		{"bad ollama url", map[string]string{"DS_OLLAMA_URL": "localhost:11434"}, "DS_OLLAMA_URL", nil},
		{"bad redis url", map[string]string{"DS_REDIS_URL": "http://x"}, "DS_REDIS_URL", nil},
		{"bad read url", map[string]string{"DS_DATABASE_READ_URL": "replica:5432"}, "DS_DATABASE_READ_URL", nil},
		{"zero read lag", map[string]string{"DS_DATABASE_READ_MAX_LAG": "0s"}, "DS_DATABASE_READ_MAX_LAG", nil},
		{"read replica", map[string]string{"DS_DATABASE_READ_URL": "postgres://replica:5432/ds", "DS_DATABASE_READ_MAX_LAG": "2s"}, "", func(t *testing.T, c config.Config) {
			if c.DatabaseReadURL != "postgres://replica:5432/ds" || c.DatabaseReadMaxLag != 2*time.Second {
				t.Errorf("read replica = %q, max lag %s", c.DatabaseReadURL, c.DatabaseReadMaxLag)
			}
		}},
		{"bad rate", map[string]string{"DS_RATE_LIMIT_CHAT": "ten per minute"}, "RATE_LIMIT_CHAT", nil},
		{"rate too fast", map[string]string{"DS_RATE_LIMIT_USER": "100000000/1s"}, "RATE_LIMIT_USER", nil},
		{"rate", map[string]string{"DS_RATE_LIMIT_CHAT": "5/30s"}, "", func(t *testing.T, c config.Config) {
			if c.RateLimitChat != (config.Rate{Limit: 5, Period: 30 * time.Second}) {
				t.Errorf("rate = %v", c.RateLimitChat)
			}
		}},
		{"bad log level", map[string]string{"DS_LOG_LEVEL": "loud"}, "DS_LOG_LEVEL", nil},
		{"lists", map[string]string{"DS_CORS_ORIGINS": "https://a.example,https://b.example", "DS_TRUSTED_PROXIES": "10.0.0.0/8"}, "", func(t *testing.T, c config.Config) {
			if len(c.CORSOrigins) != 2 || c.TrustedProxies[0] != "10.0.0.0/8" {
				t.Errorf("lists = %v %v", c.CORSOrigins, c.TrustedProxies)
			}
		}},
		{"no upstreams", nil, "", func(t *testing.T, c config.Config) {
			if len(c.Upstreams) != 0 || len(c.ModelFallbacks) != 0 {
				t.Errorf("upstreams %v, fallbacks %v, want none", c.Upstreams, c.ModelFallbacks)
			}
		}},
		{"two with a key", map[string]string{"DS_UPSTREAMS": twoUpstreams, "DS_UPSTREAM_GPU_API_KEY": "sk-secret"}, "", func(t *testing.T, c config.Config) {
			want := config.Upstreams{
				{Name: "local", Kind: config.UpstreamOllama, URL: "http://127.0.0.1:11434"},
				{Name: "gpu", Kind: config.UpstreamOpenAI, URL: "http://gpu-box:8000/v1", APIKey: "sk-secret"},
			}
			if len(c.Upstreams) != 2 || c.Upstreams[0] != want[0] || c.Upstreams[1] != want[1] {
				t.Errorf("upstreams = %#v, want %#v", c.Upstreams, want)
			}
		}},
		{"fallbacks", map[string]string{"DS_MODEL_FALLBACKS": "local/llama3.2=gpu/llama-3.2-3b, tiny = gpu/tiny"}, "", func(t *testing.T, c config.Config) {
			if len(c.ModelFallbacks) != 2 || c.ModelFallbacks["local/llama3.2"] != "gpu/llama-3.2-3b" || c.ModelFallbacks["tiny"] != "gpu/tiny" {
				t.Errorf("fallbacks = %v", c.ModelFallbacks)
			}
		}},
		{"no kind", map[string]string{"DS_UPSTREAMS": "gpu=http://gpu-box:8000/v1"}, "DS_UPSTREAMS", nil},
		{"unknown kind", map[string]string{"DS_UPSTREAMS": "gpu=vllm+http://gpu-box:8000/v1"}, "DS_UPSTREAMS", nil},
		{"bad url", map[string]string{"DS_UPSTREAMS": "gpu=openai+gpu-box:8000"}, "DS_UPSTREAMS", nil},
		{"bad name", map[string]string{"DS_UPSTREAMS": "gpu-box=openai+http://gpu-box:8000/v1"}, "DS_UPSTREAMS", nil},
		{"upper-case name", map[string]string{"DS_UPSTREAMS": "GPU=openai+http://gpu-box:8000/v1"}, "DS_UPSTREAMS", nil},
		{"repeated name", map[string]string{"DS_UPSTREAMS": twoUpstreams + ",gpu=ollama+http://x:1"}, "DS_UPSTREAMS", nil},
		{"empty entry", map[string]string{"DS_UPSTREAMS": twoUpstreams + ","}, "DS_UPSTREAMS", nil},
		{"key of no upstream", map[string]string{"DS_UPSTREAMS": twoUpstreams, "DS_UPSTREAM_GUP_API_KEY": "sk-x"}, "DS_UPSTREAM_GUP_API_KEY", nil},
		{"key without upstreams", map[string]string{"DS_UPSTREAM_GPU_API_KEY": "sk-x"}, "DS_UPSTREAM_GPU_API_KEY", nil},
		{"fallback without a target", map[string]string{"DS_MODEL_FALLBACKS": "local/llama3.2="}, "DS_MODEL_FALLBACKS", nil},
		{"fallback to itself", map[string]string{"DS_MODEL_FALLBACKS": "a=a"}, "DS_MODEL_FALLBACKS", nil},
		{"two fallbacks", map[string]string{"DS_MODEL_FALLBACKS": "a=b,a=c"}, "DS_MODEL_FALLBACKS", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := config.Load()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestLogValueMasksSecrets(t *testing.T) {
	t.Setenv("DS_JWT_SECRET", strings.Repeat("k", 40))
	t.Setenv("DS_DATABASE_URL", "postgres://app:hunter2@db:5432/ds")
	t.Setenv("DS_DATABASE_READ_URL", "postgres://app:hunter2@replica:5432/ds")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	logged := c.LogValue().String()
	if strings.Contains(logged, "hunter2") || strings.Contains(logged, strings.Repeat("k", 40)) {
		t.Errorf("logged configuration leaks a secret: %s", logged)
	}
}
