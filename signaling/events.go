package signaling

// Event types, the "type" field of WebSocket messages (names from the seed
// design note). The ViaMatrix variants are produced by the Matrix bridge.
const (
	EventCallInvite          = "CallInvite"
	EventCallAnswer          = "CallAnswer"
	EventCallCandidates      = "CallCandidates"
	EventCallSelectAnswer    = "CallSelectAnswer"
	EventCallNegotiate       = "CallNegotiate"
	EventCallRejected        = "CallRejected"
	EventCallHangup          = "CallHangup"
	EventCallInviteViaMatrix = "CallInviteViaMatrix"
	EventCallAnswerViaMatrix = "CallAnswerViaMatrix"
	EventCallCandidatesVia   = "CallCandidatesViaMatrix"
	EventCallMatrixSent      = "CallMatrixSent"
)

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
}

// invitePayload is the CallInvite (or CallInviteViaMatrix) body of c.
func invitePayload(eventType string, c Call) InvitePayload {
	return InvitePayload{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID, InitiatorID: c.Initiator,
		Invitee: c.Invitee, PartyID: c.PartyID, SDPOffer: c.SDPOffer, LifetimeMS: c.LifetimeMS, Status: c.Status,
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
