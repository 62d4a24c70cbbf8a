package httpapi

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// requestMetrics counts requests and times them, labelled by the route
// template (/calls/:id, not the call ID: bounded cardinality). Unmatched
// paths share the route "unmatched".
func requestMetrics(reg prometheus.Registerer) echo.MiddlewareFunc {
	f := promauto.With(reg)
	requests := f.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_http_requests_total",
		Help: "HTTP requests by method, route template and status code.",
	}, []string{"method", "route", "code"})
	duration := f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "icebox_http_request_duration_seconds",
		Help:    "HTTP request latency by method and route template (WebSocket sessions excluded).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"method", "route"})
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // write the error now, so its status is counted
			}
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			method := c.Request().Method
			requests.WithLabelValues(method, route, strconv.Itoa(c.Response().Status)).Inc()
			if route != "/ws" {
				duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			}
			return nil
		}
	}
}
