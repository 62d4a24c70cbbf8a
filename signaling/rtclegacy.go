package signaling

import (
	"context"
	"slices"
)

// A legacy m.call.* caller bridged to a room's MatrixRTC call (issue 17,
// item 5). An m.call.invite from a Matrix user (Element Web's legacy call,
// Nheko, FluffyChat) in a room whose other side speaks MatrixRTC cannot be
// answered there: Element X never sees it. Such an invite becomes a
// bridged call (Protocol matrixrtc) that the gateway places as it places
// an icebox client's call — its leg answers the caller's offer, icebox's
// device joins the room's MatrixRTC call and rings it (MSC4075) — with
// the legacy caller in the icebox client's place. The caller's Matrix
// events are the call's signaling both ways:
//
//   - the first member joining answers: m.call.answer with the leg's SDP
//     (candidates inside), the member's device as party_id; until then the
//     caller hears ringing;
//   - a decline (MSC4310) is m.call.reject; the members leaving, or the
//     gateway failing, m.call.hangup; the invite's lifetime running out
//     sends nothing (the caller's client times out its own invite);
//   - the caller's m.call.candidates go to the leg, its m.call.hangup ends
//     the call (the gateway leaves the session); renegotiation is refused.
//
// The conversation's icebox clients take no part: the call is between the
// Matrix caller and the room's MatrixRTC members, icebox only carries it.
// They are not rung (a client answering too would race the members for
// one caller) and no event of the call reaches them; the call is listed
// (GET /calls, the status page) with protocol matrixrtc.
//
// When an invite is bridged (legacyToRTC): the gateway runs and the room's
// calls resolve to MatrixRTC by Service.CallProtocol's rule, asked about the
// callee's side — the invitee when the invite names one, else the
// conversation's participants but the caller (the caller's own last call is
// this legacy one). So: call_protocol matrixrtc (the conversation's, else
// matrix.call_protocol); or auto with a live MatrixRTC call in the room, or
// with those participants' last calls MatrixRTC. Otherwise it rings the
// icebox clients as a legacy call, as it always did.

// GatewayPartyID is the party_id of the gateway's m.call.* events to a
// legacy caller when no member's device speaks (a decline, the gateway
// failing before a member answered).
const GatewayPartyID = "icebox-gateway"

// LegacyBridged reports whether c is a legacy Matrix caller's call the
// gateway bridges to a MatrixRTC call (a bridged call with the caller's
// Matrix party).
func (c Call) LegacyBridged() bool { return c.Bridged() && c.MatrixPartyID != "" }

// legacyToRTC reports whether a legacy invite in conv is bridged to the
// room's MatrixRTC call (see above).
func (s *Service) legacyToRTC(ctx context.Context, conv Conversation, in MatrixInvite) bool {
	if s.cfg.RTC == nil || s.cfg.Outbound == nil || conv.RoomID == "" {
		return false
	}
	callee := conv
	if in.Invitee != "" {
		callee.Participants = []string{in.Invitee}
	} else {
		callee.Participants = slices.DeleteFunc(slices.Clone(conv.Participants), func(p string) bool { return p == in.Sender })
	}
	r := s.CallProtocol(ctx, callee)
	if r.Protocol != CallProtocolMatrixRTC {
		return false
	}
	s.log.Info().Str("conversation_id", conv.ID).Str("call_id", in.CallID).Str("reason", r.Reason).
		Msg("legacy invite bridged to the room's MatrixRTC call")
	return true
}

// Their events are addressed to no icebox client (newEvent); Encode
// still turns them into the caller's m.call.* events.

// legacyAnswerEvent is the m.call.answer of a legacy-bridged call a member
// answered (party: the member's device).
func legacyAnswerEvent(conv Conversation, c Call) Event {
	return newEvent(conv, c, EventCallAnswer, AnswerPayload{
		Type: EventCallAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: c.Answerer,
		PartyID: c.AnswerPartyID, SDPAnswer: c.SDPAnswer, Status: c.Status,
	})
}

// legacyEndEvent is the m.call.reject (a declined ring) or m.call.hangup
// of a legacy-bridged call ended from the MatrixRTC side, sent as the
// answering member's party, else the gateway's.
func legacyEndEvent(conv Conversation, c Call, user string, reject bool) Event {
	party := GatewayPartyID
	if c.AnswerPartyID != "" {
		party = c.AnswerPartyID
	}
	typ := EventCallHangup
	if reject {
		typ = EventCallRejected
	}
	return endEvent(conv, c, typ, user, party)
}
