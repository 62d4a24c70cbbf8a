// Package signaling is icebox's call domain: conversations, calls, the call
// state machine (which follows the Matrix VoIP rules whatever side started
// the call), the calls Service, and the domain events the WebSocket hub and
// the Matrix bridge consume. It declares what it needs from a store, a relay
// and an event publisher; cmd/icebox plugs the implementations in.
package signaling

import "time"

// Status is a call's state. ringing → answered → ended, with rejected,
// expired and ended as terminal states.
type Status string

const (
	StatusRinging  Status = "ringing"
	StatusAnswered Status = "answered"
	StatusEnded    Status = "ended"
	StatusRejected Status = "rejected"
	StatusExpired  Status = "expired"
)

// Terminal reports whether no transition leaves s.
func (s Status) Terminal() bool {
	return s == StatusEnded || s == StatusRejected || s == StatusExpired
}

// Hangup reasons (m.call.hangup). Received reasons outside this list are
// kept as received.
const (
	ReasonUserHangup    = "user_hangup"
	ReasonInviteTimeout = "invite_timeout"
	ReasonICEFailed     = "ice_failed"
	ReasonICETimeout    = "ice_timeout"
	ReasonUserBusy      = "user_busy"
	ReasonMediaFailed   = "user_media_failed"
	ReasonUnknownError  = "unknown_error"
	ReasonRejected      = "rejected" // end_reason of a rejected call
	ReasonRevoked       = "revoked"  // ended by an administrator
	// ReasonAnsweredElsewhere: the Matrix caller selected another party's
	// answer (m.call.select_answer).
	ReasonAnsweredElsewhere = "answered_elsewhere"
)

// VoIPVersion is the Matrix VoIP version icebox speaks.
const VoIPVersion = "1"

// Conversation is a set of participants who may call each other; with Matrix
// on, it maps to one room.
type Conversation struct {
	ID           string   `json:"id"`
	Participants []string `json:"participants"`
	RoomID       string   `json:"room_id,omitempty"`
	// CallProtocol overrides matrix.call_protocol for this conversation:
	// legacy, matrixrtc or auto; "" follows the default.
	CallProtocol string    `json:"call_protocol,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// HasParticipant reports whether user takes part in the conversation.
func (c Conversation) HasParticipant(user string) bool {
	for _, p := range c.Participants {
		if p == user {
			return true
		}
	}
	return false
}

// Call is one call in a conversation, the domain's view of it. Its stored
// record (package store) and its API view (package httpapi) are types of
// their own, converted explicitly, so that neither the file nor the wire
// changes with it. SDP bodies are kept (a restart must not lose a ringing
// call's offer) but never logged.
type Call struct {
	ID             string
	ConversationID string
	RoomID         string
	Initiator      string
	Invitee        string
	PartyID        string // the initiator's party
	Status         Status
	SDPOffer       string
	SDPAnswer      string
	Answerer       string // user whose answer was selected
	AnswerPartyID  string // their party
	LifetimeMS     int64  // invite lifetime
	Version        string
	// Protocol is how the call reaches Matrix: "" for legacy m.call.*
	// events (every call stored before MatrixRTC calls existed), or
	// CallProtocolMatrixRTC for a call bridged by the gateway (icebox's
	// device in the room's MatrixRTC session; no m.call.* event is sent).
	Protocol string

	CreatedAt  time.Time
	AnsweredAt *time.Time
	EndedAt    *time.Time
	EndReason  string
	EndedBy    string

	MatrixInviteEventID string
	MatrixPartyID       string

	// OfferParty is the party whose renegotiation offer (m.call.negotiate
	// of type offer) waits for its answer, until OfferExpires (the
	// negotiate's lifetime); "" when none does. See applyNegotiate for the
	// glare rule.
	OfferParty   string
	OfferExpires *time.Time

	// CallerMedia and AnswererMedia are the latest sdp_stream_metadata and
	// capabilities of each side (the caller's party, the chosen answer's
	// party), from its invite or answer, negotiates and metadata changes;
	// a field an event lacks leaves the one before. GET /calls/{id} returns
	// them, so that a client joining late knows who is muted or on hold.
	CallerMedia   Media
	AnswererMedia Media

	// RevokedUntil is set when the call ends: its TURN credentials are
	// refused until then (when they would have expired anyway). The store
	// persists a revocation in the same transaction.
	RevokedUntil *time.Time
}

// ProtocolName is the call's protocol as the API and events say it:
// legacy or matrixrtc.
func (c Call) ProtocolName() string {
	if c.Protocol == "" {
		return CallProtocolLegacy
	}
	return c.Protocol
}

// Bridged reports whether the call is bridged to a MatrixRTC session.
func (c Call) Bridged() bool { return c.Protocol == CallProtocolMatrixRTC }

// InviteDeadline is when an unanswered invite expires.
func (c Call) InviteDeadline() time.Time {
	return c.CreatedAt.Add(time.Duration(c.LifetimeMS) * time.Millisecond)
}

// Candidate is one ICE candidate as WebRTC (RTCIceCandidateInit) and
// Matrix write it. An empty Candidate string is the end-of-candidates
// marker. usernameFragment tells ICE generations apart after a restart;
// absent fields stay absent.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *int    `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// SessionDescription is an SDP offer or answer (m.call.negotiate's description).
type SessionDescription struct {
	Type string `json:"type"` // "offer" or "answer"
	SDP  string `json:"sdp"`
}

// Revocation says a call's TURN credentials are refused until Until.
// CallID is the call's CredentialID (the call ID itself for every ID
// icebox makes).
type Revocation struct {
	CallID string    `json:"call_id"`
	Until  time.Time `json:"until"`
}

// CallFilter selects calls for listing.
type CallFilter struct {
	ConversationID string // required
	ActiveOnly     bool   // only ringing and answered calls
	Limit          int    // 0 = no limit; newest first
	NoSDP          bool   // leave the SDP bodies out (a listing needs none; up to 128 KiB a call)
}
