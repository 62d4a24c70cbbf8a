package matrix

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/icebox-voip/icebox/signaling"
)

// The received content of m.call.* events, read leniently into icebox's
// own structs.

// maxOpaqueID is the spec's bound on call_id and party_id.
const maxOpaqueID = 255

// callContent is the part of any m.call.* content icebox uses.
type callContent struct {
	CallID  string
	PartyID string
	V0      bool // "version": 0, the legacy VoIP version

	SDP        string                // invite: offer.sdp; answer: answer.sdp
	Lifetime   int64                 // invite, milliseconds
	Invitee    string                // invite; "" means anyone
	Candidates []signaling.Candidate // candidates
	Selected   string                // select_answer
	Reason     string                // hangup; "" when absent or not a string

	Description signaling.SessionDescription // negotiate
	Media       signaling.Media              // invite, answer, negotiate: as received; metadata_changed: its metadata
}

// The received content. Fields are typed as the spec has them; version
// and reason are taken as they come.
type (
	inBase struct {
		CallID  string          `json:"call_id"`
		PartyID string          `json:"party_id"`
		Version json.RawMessage `json:"version"`
	}
	inSDP struct {
		Type string `json:"type"`
		SDP  string `json:"sdp"`
	}
	inMedia struct {
		StreamMetadata json.RawMessage `json:"sdp_stream_metadata"`
		Capabilities   json.RawMessage `json:"capabilities"`
	}
	inInvite struct {
		inBase
		inMedia
		Offer    *inSDP   `json:"offer"`
		Lifetime *float64 `json:"lifetime"`
		Invitee  string   `json:"invitee"`
	}
	inAnswer struct {
		inBase
		inMedia
		Answer *inSDP `json:"answer"`
	}
	inNegotiate struct {
		inBase
		inMedia
		Description *inSDP   `json:"description"`
		Lifetime    *float64 `json:"lifetime"`
	}
	inCandidate struct {
		Candidate        *string `json:"candidate"`
		SDPMid           *string `json:"sdpMid"`
		SDPMLineIndex    *int    `json:"sdpMLineIndex"`
		UsernameFragment *string `json:"usernameFragment"`
	}
	inCandidates struct {
		inBase
		Candidates []inCandidate `json:"candidates"`
	}
	inSelectAnswer struct {
		inBase
		SelectedPartyID string `json:"selected_party_id"`
	}
	inHangup struct {
		inBase
		Reason json.RawMessage `json:"reason"`
	}
)

// parseCallContent reads the content of an m.call.* event of type typ.
// It is lenient where clients differ: version may be 0, 1 or "1" (only 0
// counts as the legacy version), unknown fields and hangup reasons are
// accepted. It is strict where icebox would otherwise act on garbage: a
// missing call_id, an offer or answer without SDP, candidates that are not
// objects. The error says what is wrong without quoting the content. The
// call ID is returned even with an error when it could be read.
func parseCallContent(typ string, raw []byte) (callContent, error) {
	var (
		c    callContent
		base *inBase
		err  error
	)
	switch typ {
	case TypeInvite:
		var v inInvite
		base, err = &v.inBase, unmarshalContent(raw, &v)
		if err == nil {
			c.SDP, err = sdpOf("offer", "offer", v.Offer)
		}
		if err == nil {
			c.Lifetime, err = lifetimeOf(v.Lifetime)
		}
		c.Invitee = v.Invitee
		if err == nil {
			c.Media, err = mediaOf(v.inMedia)
		}
	case TypeAnswer:
		var v inAnswer
		base, err = &v.inBase, unmarshalContent(raw, &v)
		if err == nil {
			c.SDP, err = sdpOf("answer", "answer", v.Answer)
		}
		if err == nil {
			c.Media, err = mediaOf(v.inMedia)
		}
	case TypeNegotiate:
		var v inNegotiate
		base, err = &v.inBase, unmarshalContent(raw, &v)
		if err == nil {
			c.Description, err = descriptionOf(v.Description)
		}
		if err == nil && v.Lifetime != nil {
			c.Lifetime, err = lifetimeOf(v.Lifetime)
		}
		if err == nil {
			c.Media, err = mediaOf(v.inMedia)
		}
	case TypeStreamMetadataChanged:
		var v inMedia
		var b inBase
		base, err = &b, unmarshalContent(raw, &b)
		if err == nil {
			err = unmarshalContent(raw, &v)
		}
		if err == nil {
			c.Media.StreamMetadata, err = streamMetadataOf(v.StreamMetadata, true)
		}
	case TypeCandidates:
		var v inCandidates
		base, err = &v.inBase, unmarshalContent(raw, &v)
		if err == nil {
			c.Candidates, err = candidatesOf(v.Candidates)
		}
	case TypeSelectAnswer:
		var v inSelectAnswer
		base, err = &v.inBase, unmarshalContent(raw, &v)
		if err == nil && v.SelectedPartyID == "" {
			err = errors.New("selected_party_id missing")
		}
		c.Selected = v.SelectedPartyID
	case TypeHangup:
		var v inHangup
		base, err = &v.inBase, unmarshalContent(raw, &v)
		_ = json.Unmarshal(v.Reason, &c.Reason) // a reason that is not a string is no reason
	default: // reject: the base is all icebox reads
		var v inBase
		base, err = &v, unmarshalContent(raw, &v)
	}
	c.CallID, c.PartyID, c.V0 = base.CallID, base.PartyID, isV0(base.Version)
	if len(c.CallID) > maxOpaqueID {
		c.CallID = "" // not worth a log line's length
	}
	if err != nil {
		return c, err
	}
	switch {
	case base.CallID == "":
		return c, errors.New("call_id missing")
	case len(base.CallID) > maxOpaqueID:
		return c, fmt.Errorf("call_id longer than %d characters", maxOpaqueID)
	case !signaling.ValidCallID(base.CallID):
		return c, errors.New("call_id is not 1-255 characters of [0-9a-zA-Z._~-]")
	case len(base.PartyID) > maxOpaqueID:
		return c, fmt.Errorf("party_id longer than %d characters", maxOpaqueID)
	case base.PartyID != "" && !signaling.ValidCallID(base.PartyID):
		return c, errors.New("party_id is not 1-255 characters of [0-9a-zA-Z._~-]")
	}
	return c, nil
}

// mediaOf checks the sdp_stream_metadata and capabilities of an invite,
// answer or negotiate: each absent or a JSON object (the metadata's
// streams objects with a known purpose). They are kept as received.
func mediaOf(m inMedia) (signaling.Media, error) {
	var out signaling.Media
	var err error
	if out.StreamMetadata, err = streamMetadataOf(m.StreamMetadata, false); err != nil {
		return signaling.Media{}, err
	}
	caps := bytes.TrimSpace(m.Capabilities)
	switch {
	case len(caps) == 0 || string(caps) == "null":
	case caps[0] != '{':
		return signaling.Media{}, errors.New("capabilities is not a JSON object")
	default:
		out.Capabilities = caps
	}
	return out, nil
}

// streamMetadataOf checks received sdp_stream_metadata (see
// signaling.CheckStreamMetadata), with an error without the domain's
// prefix.
func streamMetadataOf(raw json.RawMessage, required bool) (json.RawMessage, error) {
	md, err := signaling.CheckStreamMetadata(raw, required)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), signaling.ErrInvalid.Error()+": "))
	}
	return md, nil
}

// descriptionOf reads a negotiate's description: type offer or answer,
// and an SDP.
func descriptionOf(d *inSDP) (signaling.SessionDescription, error) {
	switch {
	case d == nil:
		return signaling.SessionDescription{}, errors.New("description missing")
	case d.Type != "offer" && d.Type != "answer":
		return signaling.SessionDescription{}, errors.New(`description.type is not "offer" or "answer"`)
	case d.SDP == "":
		return signaling.SessionDescription{}, errors.New("description.sdp missing")
	}
	return signaling.SessionDescription{Type: d.Type, SDP: d.SDP}, nil
}

// unmarshalContent decodes raw into v, with an error that names the field
// but not the value.
func unmarshalContent(raw []byte, v any) error {
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("content is a JSON %s, not an object", te.Value)
		}
		// The path has the Go name of the embedded base struct.
		return fmt.Errorf("%s is a JSON %s, not the expected type", strings.TrimPrefix(te.Field, "inBase."), te.Value)
	}
	return errors.New("content is not valid JSON")
}

// isV0 reports whether version is the number 0 (legacy VoIP). Anything
// else — "1", 1, absent, unknown — is version "1".
func isV0(version json.RawMessage) bool {
	var f float64
	return json.Unmarshal(version, &f) == nil && f == 0
}

func sdpOf(field, wantType string, d *inSDP) (string, error) {
	switch {
	case d == nil:
		return "", fmt.Errorf("%s missing", field)
	case d.Type != "" && d.Type != wantType:
		return "", fmt.Errorf("%s.type is not %q", field, wantType)
	case d.SDP == "":
		return "", fmt.Errorf("%s.sdp missing", field)
	}
	return d.SDP, nil
}

func lifetimeOf(f *float64) (int64, error) {
	switch {
	case f == nil:
		return 0, errors.New("lifetime missing")
	case *f <= 0 || math.IsNaN(*f) || *f > float64(math.MaxInt32):
		return 0, errors.New("lifetime out of range")
	}
	return int64(*f), nil
}

// candidatesOf converts the received candidates. An absent sdpMid or
// sdpMLineIndex stays absent, so an end-of-candidates marker reaches
// icebox's clients as {"candidate":""}, the way it was sent.
func candidatesOf(in []inCandidate) ([]signaling.Candidate, error) {
	if len(in) == 0 {
		return nil, errors.New("candidates missing")
	}
	out := make([]signaling.Candidate, len(in))
	for i, c := range in {
		if c.Candidate == nil {
			return nil, fmt.Errorf("candidates[%d].candidate missing", i)
		}
		out[i] = signaling.Candidate{Candidate: *c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex,
			UsernameFragment: c.UsernameFragment}
	}
	return out, nil
}
