package rtccall

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/icebox-voip/icebox/signaling"
)

// Directions of bridged calls (the direction label).
const (
	dirOutbound = "outbound" // an icebox client called the MatrixRTC room
	dirInbound  = "inbound"  // a MatrixRTC member rang icebox's clients
	dirLegacy   = "legacy"   // a legacy m.call.* caller called the MatrixRTC room
)

// Results of a ring from the MatrixRTC side (the result label).
const (
	ringInvited      = "invited"       // a CallInvite went to the conversation's icebox users
	ringNotification = "notification"  // notification_type notification: nothing rings
	ringNoMembership = "no_membership" // the caller had no live membership in the room's call
	ringBusy         = "busy"          // icebox is in the room's call for another bridged call
	ringE2EE         = "encryption_unavailable"
	ringStale        = "stale"    // too little of its lifetime left
	ringUnmapped     = "unmapped" // no conversation for the room, or the caller is not its participant
	ringFailed       = "failed"   // the leg or the homeserver failed
)

// Why a bridged call ended (the reason label), from a fixed list.
const (
	endHangupClient = "hangup_client"  // the icebox client hung up
	endHangupMember = "hangup_member"  // the members left (or their memberships expired)
	endDeclined     = "declined"       // a member declined icebox's ring (MSC4310)
	endRejected     = "rejected"       // the icebox client rejected the ring
	endTimeout      = "invite_timeout" // nobody answered within the lifetime
	endFailed       = "gateway_failed" // LiveKit, the client's connection or the homeserver failed
	endE2EE         = "encryption_unavailable"
	endBusy         = "busy"
	endRestarted    = "gateway_restarted"
	endOther        = "other" // revoked by an administrator, a reason a client chose
)

type metrics struct {
	active   *prometheus.GaugeVec
	ended    *prometheus.CounterVec
	answered *prometheus.CounterVec
	rings    *prometheus.CounterVec
	declined prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		active: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "icebox_rtccall_calls_active",
			Help: "Calls the MatrixRTC gateway bridges now (ringing or answered), by direction: outbound (an icebox client called), inbound (a MatrixRTC member rang), legacy (a legacy m.call.* caller called).",
		}, []string{"direction"}),
		ended: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_rtccall_calls_ended_total",
			Help: "Bridged calls ended, by reason: hangup_client (the icebox client or legacy caller), hangup_member, declined, rejected, invite_timeout, gateway_failed, encryption_unavailable, busy, gateway_restarted, other.",
		}, []string{"reason"}),
		answered: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_rtccall_calls_answered_total",
			Help: "Bridged calls answered, by direction.",
		}, []string{"direction"}),
		rings: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_rtccall_rings_total",
			Help: "MatrixRTC notifications from other users in icebox's rooms, by result: invited, notification, no_membership, busy, encryption_unavailable, stale, unmapped, failed.",
		}, []string{"result"}),
		declined: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_rtccall_declines_total",
			Help: "MSC4310 declines of icebox's rings.",
		}),
	}
	for _, d := range []string{dirOutbound, dirInbound, dirLegacy} {
		m.active.WithLabelValues(d)
		m.answered.WithLabelValues(d)
	}
	for _, r := range []string{endHangupClient, endHangupMember, endDeclined, endRejected, endTimeout, endFailed, endE2EE, endBusy, endRestarted, endOther} {
		m.ended.WithLabelValues(r)
	}
	for _, r := range []string{ringInvited, ringNotification, ringNoMembership, ringBusy, ringE2EE, ringStale, ringUnmapped, ringFailed} {
		m.rings.WithLabelValues(r)
	}
	return m
}

// endLabel is the reason label of an ended bridged call.
func endLabel(c signaling.Call, inbound bool, caller string) string {
	switch c.Status {
	case signaling.StatusExpired:
		return endTimeout
	case signaling.StatusRejected:
		if inbound {
			return endRejected
		}
		return endDeclined
	}
	switch c.EndReason {
	case signaling.ReasonGatewayFailed:
		return endFailed
	case signaling.ReasonE2EEUnavailable:
		return endE2EE
	case signaling.ReasonBusy:
		if c.EndedBy == "" {
			return endBusy
		}
	case signaling.ReasonGatewayRestarted:
		return endRestarted
	case signaling.ReasonRevoked:
		return endOther
	}
	// Who hung up: the Matrix side is the caller of an inbound call and
	// the answering member of an outbound one; "" is a membership expiry.
	matrixSide := caller
	if !inbound {
		matrixSide = c.Answerer
	}
	switch {
	case c.EndedBy == "" || (c.EndedBy == matrixSide && matrixSide != ""):
		return endHangupMember
	case inbound && c.EndedBy == c.Answerer, !inbound && c.EndedBy == c.Initiator:
		return endHangupClient
	}
	return endOther
}
