// Package metrics defines the service's Prometheus metrics in one place, so that every part of the service
// counts into the same registry and /metrics shows them all.
package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "deepersensor"

// Metrics are the service's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	HTTPRequests *prometheus.CounterVec   // method, route, status
	HTTPDuration *prometheus.HistogramVec // method, route
	HTTPInFlight prometheus.Gauge

	TimeToFirstToken    *prometheus.HistogramVec // model
	StreamDuration      *prometheus.HistogramVec // model
	Tokens              *prometheus.CounterVec   // model, upstream, direction (in, out)
	OpenStreams         prometheus.Gauge
	ProviderErrors      *prometheus.CounterVec // kind
	ClientCancellations prometheus.Counter

	Logins            *prometheus.CounterVec // outcome
	RefreshReuse      prometheus.Counter
	RateLimitRefusals *prometheus.CounterVec // policy
	QuotaRefusals     *prometheus.CounterVec // quota (minute, day, month)
	LimiterFallbacks  prometheus.Counter
	HashQueueWait     prometheus.Histogram
}

// New creates the metrics and registers them, with the Go runtime and process collectors, in a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "HTTP requests by method, route template and status."}, []string{"method", "route", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help: "HTTP request duration by method and route template.", Buckets: prometheus.DefBuckets}, []string{"method", "route"}),
		HTTPInFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "http_requests_in_flight",
			Help: "HTTP requests being served."}),
		TimeToFirstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "chat_time_to_first_token_seconds",
			Help: "Time from the chat request to the first token, by model.", Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}}, []string{"model"}),
		StreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "chat_stream_duration_seconds",
			Help: "Whole chat stream duration, by model.", Buckets: []float64{.1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}}, []string{"model"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "chat_tokens_total",
			Help: "Tokens by model, upstream (its model server) and direction (in: prompt, out: completion)."}, []string{"model", "upstream", "direction"}),
		OpenStreams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "chat_open_streams",
			Help: "Chat streams open now."}),
		ProviderErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "provider_errors_total",
			Help: "Model provider failures by kind."}, []string{"kind"}),
		ClientCancellations: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "chat_client_cancellations_total",
			Help: "Chat streams the client left before the end."}),
		Logins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "auth_logins_total",
			Help: "Logins by outcome."}, []string{"outcome"}),
		RefreshReuse: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "auth_refresh_reuse_total",
			Help: "Reused refresh tokens detected (each revokes a token family)."}),
		RateLimitRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "ratelimit_refusals_total",
			Help: "Requests refused by a rate limit, by policy."}, []string{"policy"}),
		QuotaRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "quota_refusals_total",
			Help: "Model calls refused because a token quota was used up, by quota (minute, day, month)."}, []string{"quota"}),
		LimiterFallbacks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "ratelimit_backend_fallbacks_total",
			Help: "Limiter decisions made without Redis because it was unreachable."}),
		HashQueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: "auth_password_hash_queue_wait_seconds",
			Help: "Time a password hash waited for a hashing slot.", Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2}}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.HTTPRequests, m.HTTPDuration, m.HTTPInFlight,
		m.TimeToFirstToken, m.StreamDuration, m.Tokens, m.OpenStreams, m.ProviderErrors, m.ClientCancellations,
		m.Logins, m.RefreshReuse, m.RateLimitRefusals, m.QuotaRefusals, m.LimiterFallbacks, m.HashQueueWait,
	)
	// Every quota's series exists from the start, so that rates and alerts over it are defined before a refusal.
	for _, quota := range []string{"minute", "day", "month"} {
		m.QuotaRefusals.WithLabelValues(quota)
	}
	return m
}

// RegisterPool adds the statistics of a pgx pool.
func (m *Metrics) RegisterPool(pool *pgxpool.Pool) {
	m.Registry.MustRegister(poolCollector{pool: pool})
}

// CountTokens adds one answer's prompt and completion tokens to chat_tokens_total, under its model and the
// upstream that serves it.
func (m *Metrics) CountTokens(model, upstream string, in, out int) {
	m.Tokens.WithLabelValues(model, upstream, "in").Add(float64(in))
	m.Tokens.WithLabelValues(model, upstream, "out").Add(float64(out))
}
