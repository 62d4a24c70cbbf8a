// Package matrix is icebox's Matrix VoIP bridge: the wire content of the
// m.call.* events, the encoder that turns call transitions into outbox
// entries, the sender that delivers the outbox to the homeserver in order
// and exactly once, and the creation of conversation rooms.
//
// The content types are our own, not mautrix's: mautrix writes the VoIP
// version "1" as the number 1 and re-marshals an end-of-candidates marker
// with extra fields, and it does not model invitee (see
// /work/shared/reference/matrix-voip.md, "the traps").
package matrix

import (
	"encoding/json"

	"github.com/icebox-voip/icebox/signaling"
)

// Matrix VoIP event types (VoIP version "1").
const (
	TypeInvite       = "m.call.invite"
	TypeCandidates   = "m.call.candidates"
	TypeAnswer       = "m.call.answer"
	TypeSelectAnswer = "m.call.select_answer"
	TypeNegotiate    = "m.call.negotiate"
	TypeReject       = "m.call.reject"
	TypeHangup       = "m.call.hangup"
	// TypeStreamMetadataChanged: a party's streams were muted, unmuted or
	// put on hold.
	TypeStreamMetadataChanged = "m.call.sdp_stream_metadata_changed"
)

// callBase is what every m.call.* content carries. Version is a string:
// "1", never the number.
type callBase struct {
	CallID  string `json:"call_id"`
	PartyID string `json:"party_id"`
	Version string `json:"version"`
}

func base(callID, partyID string) callBase {
	return callBase{CallID: callID, PartyID: partyID, Version: signaling.VoIPVersion}
}

// sdp is an offer or answer: {"type":"offer"|"answer","sdp":"..."}.
type sdp struct {
	Type string `json:"type"`
	SDP  string `json:"sdp"`
}

// inviteContent is m.call.invite. Invitee absent means "anyone in the room
// but the sender".
type inviteContent struct {
	callBase
	Lifetime int64  `json:"lifetime"` // milliseconds
	Offer    sdp    `json:"offer"`
	Invitee  string `json:"invitee,omitempty"`
	media
}

// media is the sdp_stream_metadata and capabilities of an invite, answer
// or negotiate (negotiate has no capabilities in the spec; icebox sends
// them there only when its client gave some).
type media struct {
	StreamMetadata json.RawMessage `json:"sdp_stream_metadata,omitempty"`
	Capabilities   json.RawMessage `json:"capabilities,omitempty"`
}

// answerContent is m.call.answer.
type answerContent struct {
	callBase
	Answer sdp `json:"answer"`
	media
}

// candidate is one ICE candidate. The end-of-candidates marker is
// {"candidate":""}, as matrix-js-sdk sends it: no sdpMid, no sdpMLineIndex
// unless the client gave them (a browser's end-of-candidates for one
// m-line carries its sdpMid and usernameFragment).
type candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid,omitempty"`
	SDPMLineIndex    *int    `json:"sdpMLineIndex,omitempty"`
	UsernameFragment *string `json:"usernameFragment,omitempty"`
}

// candidatesContent is m.call.candidates. The sender merges entries, so it
// keeps the candidates of stored content as raw JSON (wireCandidates)
// rather than re-encoding them.
type candidatesContent struct {
	callBase
	Candidates []candidate `json:"candidates"`
}

// wireCandidates is candidatesContent with the candidates left as they were
// written: the sender concatenates them byte for byte.
type wireCandidates struct {
	callBase
	Candidates []json.RawMessage `json:"candidates"`
}

// selectAnswerContent is m.call.select_answer.
type selectAnswerContent struct {
	callBase
	SelectedPartyID string `json:"selected_party_id"`
}

// negotiateContent is m.call.negotiate.
type negotiateContent struct {
	callBase
	Description sdp   `json:"description"`
	Lifetime    int64 `json:"lifetime"` // milliseconds
	media
}

// streamMetadataContent is m.call.sdp_stream_metadata_changed.
type streamMetadataContent struct {
	callBase
	StreamMetadata json.RawMessage `json:"sdp_stream_metadata"`
}

// rejectContent is m.call.reject: nothing beyond the base.
type rejectContent struct {
	callBase
}

// hangupContent is m.call.hangup.
type hangupContent struct {
	callBase
	Reason string `json:"reason"`
}

// maxCandidatesPerEvent bounds one m.call.candidates event: 100 candidates
// of ~150 bytes stay far below Matrix's 64 KiB event limit.
const maxCandidatesPerEvent = 100

// wireCandidate converts a domain candidate, every field as given: an
// end-of-candidates marker sent as {"candidate":""} goes out as exactly
// that (absent fields stay absent).
func wireCandidate(c signaling.Candidate) candidate {
	return candidate{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment}
}
