package httpapi

import (
	"encoding/json"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// callView is a call as the API writes it (GET /calls/{id}, the replies of
// the call operations, the admin routes): the JSON names below are the API's,
// apart from the domain's signaling.Call and the store's record of it, so
// that neither can change the API by changing itself. GET /calls lists
// summaries (list.go), views without the SDPs.
type callView struct {
	ID             string           `json:"id"`
	ConversationID string           `json:"conversation_id"`
	RoomID         string           `json:"room_id,omitempty"`
	Initiator      string           `json:"initiator"`
	Invitee        string           `json:"invitee,omitempty"`
	PartyID        string           `json:"party_id"` // the initiator's party
	Status         signaling.Status `json:"status"`
	SDPOffer       string           `json:"sdp_offer,omitempty"`
	SDPAnswer      string           `json:"sdp_answer,omitempty"`
	Answerer       string           `json:"answerer,omitempty"`
	AnswerPartyID  string           `json:"answer_party_id,omitempty"`
	LifetimeMS     int64            `json:"lifetime_ms"`
	Version        string           `json:"version"`
	// Protocol is legacy (m.call.* events, or no Matrix) or matrixrtc (a
	// call the gateway bridges to a room's MatrixRTC session).
	Protocol string `json:"protocol"`

	CreatedAt  time.Time  `json:"created_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	EndReason  string     `json:"end_reason,omitempty"`
	EndedBy    string     `json:"ended_by,omitempty"`

	MatrixInviteEventID string `json:"matrix_invite_event_id,omitempty"`
	MatrixPartyID       string `json:"matrix_party_id,omitempty"`

	RevokedUntil *time.Time `json:"revoked_until,omitempty"`

	// The latest sdp_stream_metadata and capabilities of each side, as
	// sent (GET /calls/{id} and the call operations; not GET /calls).
	CallerMedia   *mediaView `json:"caller_media,omitempty"`
	AnswererMedia *mediaView `json:"answerer_media,omitempty"`
}

// mediaView is one side's latest sdp_stream_metadata and capabilities.
type mediaView struct {
	SDPStreamMetadata json.RawMessage `json:"sdp_stream_metadata,omitempty"`
	Capabilities      json.RawMessage `json:"capabilities,omitempty"`
}

func mediaViewOf(m signaling.Media) *mediaView {
	if m.StreamMetadata == nil && m.Capabilities == nil {
		return nil
	}
	return &mediaView{SDPStreamMetadata: m.StreamMetadata, Capabilities: m.Capabilities}
}

func viewOf(c signaling.Call) callView {
	return callView{
		ID: c.ID, ConversationID: c.ConversationID, RoomID: c.RoomID,
		Initiator: c.Initiator, Invitee: c.Invitee, PartyID: c.PartyID, Status: c.Status,
		SDPOffer: c.SDPOffer, SDPAnswer: c.SDPAnswer,
		Answerer: c.Answerer, AnswerPartyID: c.AnswerPartyID, LifetimeMS: c.LifetimeMS, Version: c.Version,
		Protocol:  c.ProtocolName(),
		CreatedAt: c.CreatedAt, AnsweredAt: c.AnsweredAt, EndedAt: c.EndedAt,
		EndReason: c.EndReason, EndedBy: c.EndedBy,
		MatrixInviteEventID: c.MatrixInviteEventID, MatrixPartyID: c.MatrixPartyID,
		RevokedUntil: c.RevokedUntil,
		CallerMedia:  mediaViewOf(c.CallerMedia), AnswererMedia: mediaViewOf(c.AnswererMedia),
	}
}

// callResponse is a call with the ICE servers its participant should use:
// credentials that name the call, so they die with it.
type callResponse struct {
	callView
	ICEServers []ICEServer  `json:"ice_servers,omitempty"`
	Matrix     *matrixEvent `json:"matrix,omitempty"`
}

// matrixEvent says where the call's Matrix invite went, once it was sent.
type matrixEvent struct {
	EventID string `json:"event_id"`
	PartyID string `json:"party_id"`
	RoomID  string `json:"room_id"`
}

func matrixOf(c signaling.Call) *matrixEvent {
	if c.MatrixInviteEventID == "" {
		return nil
	}
	return &matrixEvent{EventID: c.MatrixInviteEventID, PartyID: c.PartyID, RoomID: c.RoomID}
}
