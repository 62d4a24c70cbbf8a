package authservice

import (
	"errors"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

const (
	endpointSFUGet   = "sfu_get"
	endpointGetToken = "get_token"

	accessFull       = "full"
	accessRestricted = "restricted"

	// otherHomeserver is the homeserver label of every server name that is
	// not configured: names come from requests, and a label set that
	// requests can grow is a memory leak.
	otherHomeserver = "other"
)

type metrics struct {
	issuedC  *prometheus.CounterVec
	refusedC *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	failures *prometheus.CounterVec
	// cacheHits counts verifications answered from the cache (no
	// homeserver request, so not in latency or failures).
	cacheHits prometheus.Counter
	known     []string
}

func newMetrics(reg prometheus.Registerer, known []string) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		issuedC: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrixrtc_tokens_issued_total",
			Help: "LiveKit JWTs issued by the MatrixRTC authorization service, by endpoint (sfu_get, get_token) and access (full, restricted).",
		}, []string{"endpoint", "access"}),
		refusedC: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrixrtc_tokens_refused_total",
			Help: "Token requests refused, by endpoint and reason (not_json, bad_request, invalid_token, homeserver_unreachable, bad_response, foreign_user, user_mismatch, not_joined, membership_unknown, membership_failed, room_create_failed, internal, method_not_allowed, busy).",
		}, []string{"endpoint", "reason"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "icebox_matrixrtc_openid_verify_seconds",
			Help:    "Time to verify an OpenID token at its homeserver, by homeserver (configured names, else \"other\") and result (ok, failed).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"homeserver", "result"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrixrtc_openid_verify_failures_total",
			Help: "OpenID token verifications that failed, by homeserver (configured names, else \"other\") and reason (invalid_token, homeserver_unreachable, bad_response, foreign_user).",
		}, []string{"homeserver", "reason"}),
		cacheHits: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_matrixrtc_openid_cache_hits_total",
			Help: "OpenID tokens accepted from the verification cache (matrixrtc.verify_cache_ttl) without asking the homeserver.",
		}),
	}
	for _, k := range known {
		if k != "*" && !slices.Contains(m.known, k) {
			m.known = append(m.known, k)
		}
	}
	for _, e := range []string{endpointSFUGet, endpointGetToken} {
		m.issuedC.WithLabelValues(e, accessFull)
		m.issuedC.WithLabelValues(e, accessRestricted)
		for _, r := range allReasons {
			m.refusedC.WithLabelValues(e, r)
		}
	}
	return m
}

func (m *metrics) homeserverLabel(serverName string) string {
	if slices.Contains(m.known, serverName) {
		return serverName
	}
	return otherHomeserver
}

func (m *metrics) issued(endpoint, access string) { m.issuedC.WithLabelValues(endpoint, access).Inc() }
func (m *metrics) refused(endpoint, reason string) {
	m.refusedC.WithLabelValues(endpoint, reason).Inc()
}

func (m *metrics) verified(hs string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
		reason := reasonInvalidToken
		switch {
		case errors.Is(err, errUnreachable):
			reason = reasonUnreachable
		case errors.Is(err, errBadResponse):
			reason = reasonBadHomeserver
		case errors.Is(err, errForeignUser):
			reason = reasonForeignUser
		}
		m.failures.WithLabelValues(hs, reason).Inc()
	}
	m.latency.WithLabelValues(hs, result).Observe(time.Since(start).Seconds())
}
