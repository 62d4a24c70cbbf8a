package signaling

import (
	"context"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// Which protocol a conversation's calls use: legacy Matrix VoIP (m.call.*
// events, one-to-one WebRTC) or MatrixRTC (call membership state, media
// through a LiveKit SFU, what Element X speaks). The conversation's own
// setting wins over matrix.call_protocol; "auto" looks at the room.

// The call protocols (the same words as config's matrix.call_protocol).
const (
	CallProtocolLegacy    = "legacy"
	CallProtocolMatrixRTC = "matrixrtc"
	CallProtocolAuto      = "auto"
)

// Why a protocol was chosen (ResolvedProtocol.Reason).
const (
	ReasonConfigured = "configured"    // the setting is legacy or matrixrtc
	ReasonLiveCall   = "live_call"     // auto: the room has a live MatrixRTC call
	ReasonLastCall   = "last_call_rtc" // auto: the members' last calls were MatrixRTC
	ReasonNoRTC      = "no_rtc_call"   // auto: neither, so legacy
	ReasonNoRoom     = "no_room"       // auto: the conversation has no Matrix room
	ReasonUnknown    = "state_unknown" // auto: the room's MatrixRTC state could not be loaded; legacy
)

// ValidCallProtocol reports whether p is legacy, matrixrtc or auto.
func ValidCallProtocol(p string) bool {
	return p == CallProtocolLegacy || p == CallProtocolMatrixRTC || p == CallProtocolAuto
}

// RTCRooms is the MatrixRTC state of the bridge's rooms
// (membership.Rooms).
type RTCRooms interface {
	State(ctx context.Context, roomID string, members []string, now time.Time) (membership.State, error)
}

var _ RTCRooms = (*membership.Rooms)(nil)

// ResolvedProtocol is the protocol a conversation's next call uses.
type ResolvedProtocol struct {
	Protocol string `json:"protocol"`         // legacy or matrixrtc
	Setting  string `json:"setting"`          // legacy, matrixrtc or auto: the conversation's, else the default
	Source   string `json:"source"`           // "conversation" or "default"
	Reason   string `json:"reason"`           // Reason*
	LiveRTC  int    `json:"live_rtc_members"` // unexpired MatrixRTC memberships in the room (auto only)
	// Participants whose last call was MatrixRTC / legacy (auto only).
	MembersRTC    int `json:"members_last_rtc"`
	MembersLegacy int `json:"members_last_legacy"`
}

// ResolveCallProtocol is the rule: setting legacy or matrixrtc is taken as
// is; auto is matrixrtc when the room has a live MatrixRTC call (an
// unexpired joined membership) or its members' last calls were MatrixRTC
// (of the conversation's participants whose last call icebox saw, in any
// room, at least one joined a MatrixRTC call last and none placed a legacy
// invite last), else legacy.
func ResolveCallProtocol(setting string, st membership.State) (protocol, reason string) {
	switch setting {
	case CallProtocolMatrixRTC:
		return CallProtocolMatrixRTC, ReasonConfigured
	case CallProtocolAuto:
		switch {
		case st.Live > 0:
			return CallProtocolMatrixRTC, ReasonLiveCall
		case st.LastCallRTC():
			return CallProtocolMatrixRTC, ReasonLastCall
		}
		return CallProtocolLegacy, ReasonNoRTC
	}
	return CallProtocolLegacy, ReasonConfigured
}

// CallProtocol resolves the protocol of conv's next call. A room whose
// MatrixRTC state cannot be loaded resolves auto to legacy (what icebox
// always did), with ReasonUnknown; it is not an error of the caller's.
func (s *Service) CallProtocol(ctx context.Context, conv Conversation) ResolvedProtocol {
	r := ResolvedProtocol{Setting: conv.CallProtocol, Source: "conversation"}
	if r.Setting == "" {
		r.Setting, r.Source = s.cfg.CallProtocol, "default"
	}
	if r.Setting != CallProtocolAuto {
		r.Protocol, r.Reason = ResolveCallProtocol(r.Setting, membership.State{})
		return r
	}
	if conv.RoomID == "" || s.cfg.RTCRooms == nil {
		r.Protocol, r.Reason = CallProtocolLegacy, ReasonNoRoom
		return r
	}
	st, err := s.cfg.RTCRooms.State(ctx, conv.RoomID, conv.Participants, s.cfg.Now())
	if err != nil {
		s.log.Warn().Err(err).Str("conversation_id", conv.ID).Msg("MatrixRTC state of the room not loaded; auto resolves to legacy")
		r.Protocol, r.Reason = CallProtocolLegacy, ReasonUnknown
		return r
	}
	r.Protocol, r.Reason = ResolveCallProtocol(r.Setting, st)
	r.LiveRTC, r.MembersRTC, r.MembersLegacy = st.Live, st.MembersRTC, st.MembersLegacy
	return r
}
