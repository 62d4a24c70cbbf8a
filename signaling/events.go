package signaling

import (
	"encoding/json"
	"strings"
)

// Event types, the "type" field of WebSocket messages (names from the seed
// design note).
//
// One naming rule: an event caused by a Matrix user's m.call.* event (or
// by their leaving the room) is named <Name>ViaMatrix; the same
// transition caused by an icebox client, by expiry or by an administrator
// is <Name>. The payloads are the same. A client that does not care where
// an event came from strips the suffix (as the project's web UI does).
const (
	EventCallInvite                         = "CallInvite"
	EventCallAnswer                         = "CallAnswer"
	EventCallCandidates                     = "CallCandidates"
	EventCallSelectAnswer                   = "CallSelectAnswer"
	EventCallNegotiate                      = "CallNegotiate"
	EventCallStreamMetadataChanged          = "CallStreamMetadataChanged"
	EventCallRejected                       = "CallRejected"
	EventCallHangup                         = "CallHangup"
	EventCallMatrixSent                     = "CallMatrixSent"
	EventCallInviteViaMatrix                = EventCallInvite + viaMatrix
	EventCallAnswerViaMatrix                = EventCallAnswer + viaMatrix
	EventCallCandidatesViaMatrix            = EventCallCandidates + viaMatrix
	EventCallSelectAnswerViaMatrix          = EventCallSelectAnswer + viaMatrix
	EventCallNegotiateViaMatrix             = EventCallNegotiate + viaMatrix
	EventCallStreamMetadataChangedViaMatrix = EventCallStreamMetadataChanged + viaMatrix
	EventCallRejectedViaMatrix              = EventCallRejected + viaMatrix
	EventCallHangupViaMatrix                = EventCallHangup + viaMatrix

	// EventCallCandidatesVia is the old name of EventCallCandidatesViaMatrix.
	EventCallCandidatesVia = EventCallCandidatesViaMatrix
)

const viaMatrix = "ViaMatrix"

// ViaMatrix is the name of event type name when Matrix caused it.
func ViaMatrix(name string) string { return name + viaMatrix }

// FromMatrix reports whether an event type is one Matrix caused.
func FromMatrix(eventType string) bool { return strings.HasSuffix(eventType, viaMatrix) }

// Event is a domain event: something happened to a call that its
// conversation's participants must hear about.
type Event struct {
	Type           string
	CallID         string
	ConversationID string
	// Recipients are the user IDs to deliver to: the conversation's
	// participants at the time of the event.
	Recipients []string
	// Payload is the JSON object sent to clients; it has a "type" field
	// equal to Type.
	Payload any

	// tx is the transaction that carried the event (txevents.go): set
	// when a store took it, so it is not published a second time.
	tx *TxEvents
}

// InvitePayload is the body of CallInvite.
type InvitePayload struct {
	Type           string `json:"type"`
	CallID         string `json:"call_id"`
	ConversationID string `json:"conversation_id"`
	InitiatorID    string `json:"initiator_id"`
	Invitee        string `json:"invitee,omitempty"`
	PartyID        string `json:"party_id"`
	SDPOffer       string `json:"sdp_offer"`
	LifetimeMS     int64  `json:"lifetime_ms"`
	Status         Status `json:"status"`
	// Protocol is "matrixrtc" for a call bridged to a MatrixRTC session
	// (the other side is in Element Call / Element X), else "legacy".
	Protocol string `json:"protocol,omitempty"`
	Media           // sdp_stream_metadata, capabilities
}

// invitePayload is the CallInvite (or CallInviteViaMatrix) body of c.
func invitePayload(eventType string, c Call, m Media) InvitePayload {
	return InvitePayload{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID, InitiatorID: c.Initiator,
		Invitee: c.Invitee, PartyID: c.PartyID, SDPOffer: c.SDPOffer, LifetimeMS: c.LifetimeMS, Status: c.Status,
		Protocol: c.ProtocolName(), Media: m,
	}
}

// AnswerPayload is the body of CallAnswer.
type AnswerPayload struct {
	Type           string `json:"type"`
	CallID         string `json:"call_id"`
	ConversationID string `json:"conversation_id"`
	ParticipantID  string `json:"participant_id"`
	PartyID        string `json:"party_id"`
	SDPAnswer      string `json:"sdp_answer"`
	Status         Status `json:"status"`
	Media                 // sdp_stream_metadata, capabilities
}

// CandidatesPayload is the body of CallCandidates.
type CandidatesPayload struct {
	Type           string      `json:"type"`
	CallID         string      `json:"call_id"`
	ConversationID string      `json:"conversation_id"`
	ParticipantID  string      `json:"participant_id"`
	PartyID        string      `json:"party_id"`
	Candidates     []Candidate `json:"candidates"`
}

// SelectAnswerPayload is the body of CallSelectAnswer.
type SelectAnswerPayload struct {
	Type            string `json:"type"`
	CallID          string `json:"call_id"`
	ConversationID  string `json:"conversation_id"`
	ParticipantID   string `json:"participant_id"`
	PartyID         string `json:"party_id"`
	SelectedPartyID string `json:"selected_party_id"`
}

// NegotiatePayload is the body of CallNegotiate.
type NegotiatePayload struct {
	Type           string             `json:"type"`
	CallID         string             `json:"call_id"`
	ConversationID string             `json:"conversation_id"`
	ParticipantID  string             `json:"participant_id"`
	PartyID        string             `json:"party_id"`
	Description    SessionDescription `json:"description"`
	LifetimeMS     int64              `json:"lifetime_ms,omitempty"`
	Media                             // sdp_stream_metadata, capabilities
}

// StreamMetadataPayload is the body of CallStreamMetadataChanged
// (m.call.sdp_stream_metadata_changed): a party's streams were muted,
// unmuted, put on hold, or changed purpose.
type StreamMetadataPayload struct {
	Type              string          `json:"type"`
	CallID            string          `json:"call_id"`
	ConversationID    string          `json:"conversation_id"`
	ParticipantID     string          `json:"participant_id"`
	PartyID           string          `json:"party_id"`
	SDPStreamMetadata json.RawMessage `json:"sdp_stream_metadata"`
}

// EndPayload is the body of CallRejected and CallHangup.
type EndPayload struct {
	Type           string `json:"type"`
	CallID         string `json:"call_id"`
	ConversationID string `json:"conversation_id"`
	ParticipantID  string `json:"participant_id,omitempty"` // who ended it; empty for expiry
	PartyID        string `json:"party_id,omitempty"`
	Reason         string `json:"reason,omitempty"`
	Status         Status `json:"status"`
}
