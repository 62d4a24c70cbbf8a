package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Fixed label values for what a request can name freely: a client chooses
// the method and the path, and every distinct label value is a series kept
// for the life of the process (and in every scrape).
const (
	methodOther    = "other"
	routeUnmatched = "unmatched"
)

// methodLabel maps a request method to a fixed set of values.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return methodOther
}

// codeLabel is the status code; net/http writes only three-digit codes, but
// the label must not depend on that.
func codeLabel(status int) string {
	if status < 100 || status > 599 {
		return methodOther
	}
	return strconv.Itoa(status)
}

// requestMetrics counts requests and times them, labelled by a fixed set of
// methods (others count as "other"), the route template (/calls/:id, not
// the call ID) and the status code. Unmatched paths share the route
// "unmatched". The middleware is installed before the routes are added;
// setRoutes tells it their templates afterwards.
type requestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	routes   map[string]bool // registered route templates; set by setRoutes
}

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	f := promauto.With(reg)
	return &requestMetrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_http_requests_total",
			Help: "HTTP requests by method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or other), route template (or unmatched) and status code.",
		}, []string{"method", "route", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "icebox_http_request_duration_seconds",
			Help:    "HTTP request latency by method and route template (WebSocket sessions excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
	}
}

// setRoutes records the route templates that may appear as labels. It is
// called once, after every route is added and before serving.
func (m *requestMetrics) setRoutes(routes []*echo.Route) {
	m.routes = make(map[string]bool, len(routes))
	for _, r := range routes {
		m.routes[r.Path] = true
	}
}

// routeLabel is the matched route template. echo reports a catch-all's
// template (the auth group's "/*") for paths no route matches; those are
// "unmatched" too, as is anything not registered.
func (m *requestMetrics) routeLabel(path string) string {
	if path == "" || path == "/*" || !m.routes[path] {
		return routeUnmatched
	}
	return path
}

func (m *requestMetrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // write the error now, so its status is counted
		}
		route := m.routeLabel(c.Path())
		method := methodLabel(c.Request().Method)
		m.requests.WithLabelValues(method, route, codeLabel(c.Response().Status)).Inc()
		if route != "/ws" {
			m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		}
		return nil
	}
}
