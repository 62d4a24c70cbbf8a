package tlsreload

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Expiry exports when each TLS listener's certificate expires, as
// icebox_tls_certificate_expiry_timestamp_seconds{listener}, read at
// scrape time from the listener's certificate source (files or ACME), so a
// reload or renewal shows at the next scrape. A listener whose source has
// no certificate yet is left out.
type Expiry struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources map[string]func() time.Time // by listener name
}

// NewExpiry registers the gauge with reg.
func NewExpiry(reg prometheus.Registerer) *Expiry {
	e := &Expiry{
		desc: prometheus.NewDesc("icebox_tls_certificate_expiry_timestamp_seconds",
			"When the certificate a TLS listener serves expires (Unix seconds); listener is api or turn.",
			[]string{"listener"}, nil),
		sources: map[string]func() time.Time{},
	}
	reg.MustRegister(e)
	return e
}

// Track reports listener's expiry from notAfter (zero: no certificate).
// listener is a fixed name chosen by the caller ("api", "turn"), never
// configuration text.
func (e *Expiry) Track(listener string, notAfter func() time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sources[listener] = notAfter
}

// Describe implements prometheus.Collector.
func (e *Expiry) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

// Collect implements prometheus.Collector.
func (e *Expiry) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for listener, notAfter := range e.sources {
		if t := notAfter(); !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, float64(t.Unix()), listener)
		}
	}
}

// NotAfter is when the served certificate expires.
func (r *Reloader) NotAfter() time.Time {
	if leaf := r.cert.Load().Leaf; leaf != nil {
		return leaf.NotAfter
	}
	return time.Time{}
}
