package acmecert

import "github.com/prometheus/client_golang/prometheus"

// metrics counts what the CA was asked and how it went. Labels are fixed
// values, never names from the configuration or the CA.
type metrics struct {
	obtained, renewed prometheus.Counter
	failures          *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		obtained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_acme_obtained_total",
			Help: "Certificates obtained from the ACME CA for a domain that had none in storage.",
		}),
		renewed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "icebox_acme_renewals_total",
			Help: "Certificates renewed by the ACME CA (each swapped in for new handshakes).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_acme_failures_total",
			Help: "Failed attempts to get (op=obtain) or renew (op=renew) a certificate; a served certificate stays.",
		}, []string{"op"}),
	}
	for _, op := range []string{"obtain", "renew"} {
		m.failures.WithLabelValues(op)
	}
	if reg != nil {
		reg.MustRegister(m.obtained, m.renewed, m.failures)
	}
	return m
}

func (m *metrics) done(renewal bool) {
	if renewal {
		m.renewed.Inc()
	} else {
		m.obtained.Inc()
	}
}

func (m *metrics) failed(op string) { m.failures.WithLabelValues(op).Inc() }
