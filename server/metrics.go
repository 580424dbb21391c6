package server

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/deepersensor/deepersensor/metrics"
)

// httpMetrics counts requests by method, route template (never the raw path, which would let clients
// create series at will) and status, and times them.
func httpMetrics(m *metrics.Metrics) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			m.HTTPInFlight.Inc()
			defer m.HTTPInFlight.Dec()
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // render now, so that the status is known
			}
			route := c.Path()
			if route == "" || c.Response().Status == 404 && route == "/*" {
				route = "unmatched"
			}
			method := c.Request().Method
			m.HTTPRequests.WithLabelValues(method, route, strconv.Itoa(c.Response().Status)).Inc()
			m.HTTPDuration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			return nil
		}
	}
}

// metricsHandler serves the registry in the Prometheus text format.
func metricsHandler(m *metrics.Metrics) echo.HandlerFunc {
	return echo.WrapHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
}
