package store

import (
	"encoding/json"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// callRecord is a call as bucket calls stores it: the JSON field names below
// are what is on disk, in files of every schema so far, and must not change
// with the domain's signaling.Call or the API's view of it. Since schema 5
// the SDPs are kept apart (sdp.go) and left empty here; records written
// before carry them inline, and getCall reads them from either place.
type callRecord struct {
	ID             string           `json:"id"`
	ConversationID string           `json:"conversation_id"`
	RoomID         string           `json:"room_id,omitempty"`
	Initiator      string           `json:"initiator"`
	Invitee        string           `json:"invitee,omitempty"`
	PartyID        string           `json:"party_id"`
	Status         signaling.Status `json:"status"`
	SDPOffer       string           `json:"sdp_offer,omitempty"`
	SDPAnswer      string           `json:"sdp_answer,omitempty"`
	Answerer       string           `json:"answerer,omitempty"`
	AnswerPartyID  string           `json:"answer_party_id,omitempty"`
	LifetimeMS     int64            `json:"lifetime_ms"`
	Version        string           `json:"version"`

	CreatedAt  time.Time  `json:"created_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	EndReason  string     `json:"end_reason,omitempty"`
	EndedBy    string     `json:"ended_by,omitempty"`

	MatrixInviteEventID string `json:"matrix_invite_event_id,omitempty"`
	MatrixPartyID       string `json:"matrix_party_id,omitempty"`

	RevokedUntil *time.Time `json:"revoked_until,omitempty"`

	// Since schema 5, without a migration: absent in older records means
	// no renegotiation offer is pending.
	OfferParty   string     `json:"offer_party,omitempty"`
	OfferExpires *time.Time `json:"offer_expires,omitempty"`

	// Since schema 5, without a migration: absent means that side sent no
	// sdp_stream_metadata and no capabilities (or the record is older).
	// Each is at most 8 KiB (signaling checks them), a few hundred bytes
	// in practice.
	CallerMedia   *mediaRecord `json:"caller_media,omitempty"`
	AnswererMedia *mediaRecord `json:"answerer_media,omitempty"`

	// Since schema 5, without a migration: absent (every older record)
	// means a legacy call; "matrixrtc" a call the gateway bridges.
	Protocol string `json:"protocol,omitempty"`
}

// mediaRecord is one side's latest sdp_stream_metadata and capabilities,
// JSON objects as received.
type mediaRecord struct {
	StreamMetadata json.RawMessage `json:"sdp_stream_metadata,omitempty"`
	Capabilities   json.RawMessage `json:"capabilities,omitempty"`
}

func mediaRecordOf(m signaling.Media) *mediaRecord {
	if m.StreamMetadata == nil && m.Capabilities == nil {
		return nil
	}
	return &mediaRecord{StreamMetadata: m.StreamMetadata, Capabilities: m.Capabilities}
}

func (r *mediaRecord) media() signaling.Media {
	if r == nil {
		return signaling.Media{}
	}
	return signaling.Media{StreamMetadata: r.StreamMetadata, Capabilities: r.Capabilities}
}

// recordOf is the record of c, SDPs included (putCall clears them).
func recordOf(c signaling.Call) callRecord {
	return callRecord{
		ID: c.ID, ConversationID: c.ConversationID, RoomID: c.RoomID,
		Initiator: c.Initiator, Invitee: c.Invitee, PartyID: c.PartyID, Status: c.Status,
		SDPOffer: c.SDPOffer, SDPAnswer: c.SDPAnswer,
		Answerer: c.Answerer, AnswerPartyID: c.AnswerPartyID, LifetimeMS: c.LifetimeMS, Version: c.Version,
		CreatedAt: c.CreatedAt, AnsweredAt: c.AnsweredAt, EndedAt: c.EndedAt,
		EndReason: c.EndReason, EndedBy: c.EndedBy,
		MatrixInviteEventID: c.MatrixInviteEventID, MatrixPartyID: c.MatrixPartyID,
		RevokedUntil: c.RevokedUntil,
		OfferParty:   c.OfferParty, OfferExpires: c.OfferExpires,
		CallerMedia: mediaRecordOf(c.CallerMedia), AnswererMedia: mediaRecordOf(c.AnswererMedia),
		Protocol: c.Protocol,
	}
}

// call is the domain call r records (its SDPs are those inline, if any).
func (r callRecord) call() signaling.Call {
	return signaling.Call{
		ID: r.ID, ConversationID: r.ConversationID, RoomID: r.RoomID,
		Initiator: r.Initiator, Invitee: r.Invitee, PartyID: r.PartyID, Status: r.Status,
		SDPOffer: r.SDPOffer, SDPAnswer: r.SDPAnswer,
		Answerer: r.Answerer, AnswerPartyID: r.AnswerPartyID, LifetimeMS: r.LifetimeMS, Version: r.Version,
		CreatedAt: r.CreatedAt, AnsweredAt: r.AnsweredAt, EndedAt: r.EndedAt,
		EndReason: r.EndReason, EndedBy: r.EndedBy,
		MatrixInviteEventID: r.MatrixInviteEventID, MatrixPartyID: r.MatrixPartyID,
		RevokedUntil: r.RevokedUntil,
		OfferParty:   r.OfferParty, OfferExpires: r.OfferExpires,
		CallerMedia: r.CallerMedia.media(), AnswererMedia: r.AnswererMedia.media(),
		Protocol: r.Protocol,
	}
}

// decodeCall decodes a record of bucket calls into the domain call it
// records (inline SDPs included, none from call_sdps).
func decodeCall(id, raw []byte) (signaling.Call, error) {
	var r callRecord
	if err := decode("call", id, raw, &r); err != nil {
		return signaling.Call{}, err
	}
	return r.call(), nil
}
