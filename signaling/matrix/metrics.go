package matrix

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the bridge's outbound counters. The matrix_voip_* names come
// from the seed design note.
type metrics struct {
	inviteSent     prometheus.Counter
	inviteFailed   prometheus.Counter
	answerSent     prometheus.Counter
	candidatesSent prometheus.Counter
	hangupSent     prometheus.Counter
	dropped        *prometheus.CounterVec
	sendErrors     *prometheus.CounterVec
}

// depthTimeout bounds the store read behind the outbox depth gauge.
const depthTimeout = 2 * time.Second

func newMetrics(reg prometheus.Registerer, st Store) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		inviteSent: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_invite_sent_total",
			Help: "m.call.invite events sent to the homeserver.",
		}),
		inviteFailed: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_invite_failed_total",
			Help: "m.call.invite events given up on (dropped from the outbox; see icebox_matrix_outbox_dropped_total for why).",
		}),
		answerSent: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_answer_sent_total",
			Help: "m.call.answer events sent to the homeserver.",
		}),
		candidatesSent: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_ice_candidates_sent_total",
			Help: "ICE candidates sent in m.call.candidates events (end-of-candidates markers not counted).",
		}),
		hangupSent: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_hangup_sent_total",
			Help: "m.call.hangup events sent to the homeserver.",
		}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_outbox_dropped_total",
			Help: "Outbox entries dropped unsent, by reason: expired (older than 24 h), invite_expired (the invite's lifetime passed first), or the homeserver's permanent refusal (forbidden, not_found, bad_request, client_error), or invalid_entry.",
		}, []string{"reason"}),
		sendErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_send_errors_total",
			Help: "Failed attempts to send an outbox entry, by kind: network, timeout, server, rate_limited, unauthorized (retried); forbidden, not_found, bad_request, client_error, invalid_entry (dropped after 5 attempts).",
		}, []string{"kind"}),
	}
	for _, k := range sendKinds {
		m.sendErrors.WithLabelValues(k)
	}
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(r)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_matrix_outbox_depth",
		Help: "Matrix events waiting in the outbox (read from the store at scrape time; NaN if it cannot be read).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), depthTimeout)
		defer cancel()
		n, err := st.OutboxDepth(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	})
	return m
}
