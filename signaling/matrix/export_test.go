package matrix

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Test hooks, visible to package matrix_test only.

// NewTestEncoder returns an Encoder with a fixed clock and no sender.
func NewTestEncoder(now func() time.Time) *Encoder { return &Encoder{now: now} }

// Timing shortens the sender's intervals (zero keeps a value). Call it
// before Run.
type Timing struct {
	Poll, MinBackoff, MaxBackoff time.Duration
	PermanentAttempts, PageSize  int
}

func SetTiming(b *Bridge, t Timing) {
	s := b.send
	if t.Poll != 0 {
		s.poll = t.Poll
	}
	if t.MinBackoff != 0 {
		s.minBackoff = t.MinBackoff
	}
	if t.MaxBackoff != 0 {
		s.maxBackoff = t.MaxBackoff
	}
	if t.PageSize != 0 {
		s.pageSize = t.PageSize
	}
	if t.PermanentAttempts != 0 {
		s.permanentAttempts = t.PermanentAttempts
	}
}

// Waiters counts the WaitInviteSent calls in progress.
func Waiters(b *Bridge) int { return b.waiters.len() }

// EncryptionUp reports whether Run brought end-to-end encryption up.
func EncryptionUp(b *Bridge) bool { return b.crypto.ready() }

// Collector returns the bridge's metric name — for a vector, its child
// with labels (name, value pairs) — for testutil.ToFloat64; nil if the
// bridge has no such metric.
func Collector(b *Bridge, name string, labels ...string) prometheus.Collector {
	out, in := b.send.metrics, b.in.metrics
	vecs := map[string]*prometheus.CounterVec{
		"icebox_matrix_outbox_dropped_total": out.dropped,
		"icebox_matrix_send_errors_total":    out.sendErrors,
		"icebox_matrix_inbound_total":        in.inbound,
		"icebox_matrix_sync_errors_total":    in.syncErrors,
		"icebox_matrix_autojoin_total":       in.autojoin,
		"icebox_matrix_undecryptable_total":  in.undecryptable,
	}
	if v, ok := vecs[name]; ok {
		l := prometheus.Labels{}
		for i := 0; i+1 < len(labels); i += 2 {
			l[labels[i]] = labels[i+1]
		}
		return v.With(l)
	}
	c, ok := map[string]prometheus.Collector{
		"matrix_voip_invite_sent_total":         out.inviteSent,
		"matrix_voip_invite_failed_total":       out.inviteFailed,
		"matrix_voip_answer_sent_total":         out.answerSent,
		"matrix_voip_ice_candidates_sent_total": out.candidatesSent,
		"matrix_voip_hangup_sent_total":         out.hangupSent,
		"icebox_matrix_outbox_depth":            out.depth,
		"matrix_voip_answer_received_total":     in.answerReceived,
		"icebox_matrix_sync_lag_seconds":        in.syncLag,
	}[name]
	if !ok || len(labels) > 0 {
		return nil
	}
	return c
}
