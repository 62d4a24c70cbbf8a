package matrix

import (
	"context"
	"github.com/icebox-voip/icebox/signaling"
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
	callDuration   prometheus.Histogram
	dropped        *prometheus.CounterVec
	sendErrors     *prometheus.CounterVec
	depth          prometheus.GaugeFunc
}

// depthTimeout bounds the store read behind the outbox depth gauge.
const depthTimeout = 2 * time.Second

func newMetrics(reg prometheus.Registerer, st Store) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		callDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "matrix_voip_call_duration_seconds",
			Help:    "Duration of bridged calls from answer to end, observed when the end reaches or comes from Matrix.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
		}),
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
			Help: "Outbox entries dropped unsent, by reason: expired (older than 24 h), invite_expired (the invite's lifetime passed first), unencrypted_room (the room is not end-to-end encrypted and matrix.require_encryption is on), or the homeserver's permanent refusal (forbidden, not_found, bad_request, client_error), or invalid_entry.",
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
	m.depth = f.NewGaugeFunc(prometheus.GaugeOpts{
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

// inboundMetrics are the counters of the sync and the inbound handlers.
type inboundMetrics struct {
	inbound        *prometheus.CounterVec
	answerReceived prometheus.Counter
	syncErrors     *prometheus.CounterVec
	autojoin       *prometheus.CounterVec
	undecryptable  *prometheus.CounterVec
	syncLag        prometheus.GaugeFunc
	// observeCall records a call's duration (shared with the outbound
	// side's histogram); nil in tests that build the handlers alone.
	observeCall func(signaling.Call)
}

// newInboundMetrics registers the inbound metrics; lag reads the seconds
// since the last successful sync.
func newInboundMetrics(reg prometheus.Registerer, lag func() float64) *inboundMetrics {
	f := promauto.With(reg)
	m := &inboundMetrics{
		inbound: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_inbound_total",
			Help: "m.call.* events received from the sync, by type and result: ok (applied), duplicate (seen before), echo (icebox's own), stale (too old; an invite past its lifetime), ignored (not for icebox: unmapped room, unknown call, a transition the call's state refuses — a negotiate on an ended call, an answer to no pending offer, the callee's offer crossing the caller's —, v0 without party_id), invalid (malformed content), error (store failure or handler panic).",
		}, []string{"type", "result"}),
		answerReceived: f.NewCounter(prometheus.CounterOpts{
			Name: "matrix_voip_answer_received_total",
			Help: "m.call.answer events from Matrix users accepted as the answer of an icebox call.",
		}),
		syncErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_sync_errors_total",
			Help: "Failed /sync rounds, by kind: network, timeout, server, rate_limited, unauthorized, forbidden, not_found, bad_request, client_error (the homeserver), store (the sync token or filter could not be read or written), processing (a response could not be dispatched). All are retried with backoff (1 s to 30 s).",
		}, []string{"kind"}),
		undecryptable: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_undecryptable_total",
			Help: "Encrypted events that could not be decrypted, by reason: no_session (the room key never arrived, after waiting 25 s and asking the sender's devices for it), error (any other decryption failure).",
		}, []string{"reason"}),
		autojoin: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_autojoin_total",
			Help: "Attempts to join rooms the service user was invited to, by result: ok, failed (retried after a later sync), dropped (refused, or 5 attempts failed).",
		}, []string{"result"}),
	}
	for _, t := range inboundTypes {
		for _, r := range inboundResults {
			m.inbound.WithLabelValues(t, r)
		}
	}
	for _, k := range syncKinds {
		m.syncErrors.WithLabelValues(k)
	}
	for _, r := range joinResults {
		m.autojoin.WithLabelValues(r)
	}
	for _, r := range []string{"no_session", "error"} {
		m.undecryptable.WithLabelValues(r)
	}
	m.syncLag = f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_matrix_sync_lag_seconds",
		Help: "Seconds since the last successful /sync response (counted from the start until the first); 0 when the sync is not running. A long poll returns within 30 s, so more than about 60 means the sync is failing (see icebox_matrix_sync_errors_total).",
	}, lag)
	return m
}

// observeCall records an ended call's duration, if it was answered.
func (m *metrics) observeCall(c signaling.Call) {
	if c.AnsweredAt != nil && c.EndedAt != nil {
		m.callDuration.Observe(c.EndedAt.Sub(*c.AnsweredAt).Seconds())
	}
}
