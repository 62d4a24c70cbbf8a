package signaling

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Limits on what clients send. SDP bodies of real browsers are 2–10 KiB;
// the bound keeps one call from filling the store.
const (
	maxSDP        = 64 << 10
	maxCandidates = 100
	maxCandidate  = 1024
	maxUserID     = 255
	maxReason     = 64
)

var (
	// Conversation IDs, and the call IDs icebox makes (UUIDs): what fits a
	// URL path segment and a TURN username's call-id ([A-Za-z0-9_-],
	// credentials package).
	idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// Matrix opaque IDs (call_id, party_id): 1–255 of [0-9a-zA-Z._~-]. A
	// call placed from Matrix keeps its call_id as the icebox call ID.
	partyRE  = regexp.MustCompile(`^[0-9a-zA-Z._~-]{1,255}$`)
	reasonRE = regexp.MustCompile(`^[a-z_]{1,64}$`)
)

// ValidID reports whether s can be a conversation ID (or a call ID icebox
// makes).
func ValidID(s string) bool { return idRE.MatchString(s) }

// ValidCallID reports whether s can be a call ID: the Matrix opaque-ID
// grammar, 1–255 of [0-9a-zA-Z._~-] (calls placed from Matrix keep their
// call_id; icebox's own are UUIDs, a subset).
func ValidCallID(s string) bool { return partyRE.MatchString(s) }

// credentialPrefix marks a derived credential ID. No call ID that is used
// as its own credential ID starts with it (CredentialID hashes those too),
// so a derived ID never equals another call's.
const credentialPrefix = "h_"

// CredentialID is the call-id a call's TURN credentials carry, and the key
// of its relay revocation. The credential grammar ([A-Za-z0-9_-]{1,64})
// is narrower than the Matrix call_id's: a call ID that fits it (every
// UUID icebox makes) is its own credential ID; any other — with '.' or '~',
// longer than 64, or starting with "h_" — is "h_" and 40 hex digits of its
// SHA-256.
func CredentialID(callID string) string {
	if idRE.MatchString(callID) && !strings.HasPrefix(callID, credentialPrefix) {
		return callID
	}
	sum := sha256.Sum256([]byte(callID))
	return credentialPrefix + hex.EncodeToString(sum[:20])
}

func validUser(u string) bool {
	return u != "" && len(u) <= maxUserID && utf8.ValidString(u) && !hasControl(u, "")
}

// PartyIDFor is the party ID of a user's icebox client that did not name
// its own: "icebox" and a hash of the user ID, within the Matrix opaque-ID
// grammar.
func PartyIDFor(user string) string {
	sum := sha256.Sum256([]byte(user))
	return "icebox" + hex.EncodeToString(sum[:8])
}

// partyOf returns the request's party ID, or the user's default one.
func partyOf(user, requested string) (string, error) {
	if requested == "" {
		return PartyIDFor(user), nil
	}
	if !partyRE.MatchString(requested) {
		return "", invalidf("party_id must be 1-255 characters of [0-9a-zA-Z._~-]")
	}
	return requested, nil
}

func checkSDP(field, sdp string) error {
	switch {
	case sdp == "":
		return invalidf("%s is required", field)
	case len(sdp) > maxSDP:
		return invalidf("%s is larger than %d bytes", field, maxSDP)
	case !utf8.ValidString(sdp):
		return invalidf("%s is not valid UTF-8", field)
	case hasControl(sdp, "\r\n\t"):
		return invalidf("%s holds a control character other than CR, LF or tab", field)
	}
	return nil
}

// hasControl reports an ASCII control character (or DEL) in s other than
// those in allowed. SDP is text lines (RFC 8866 §5: CRLF-separated, no NUL,
// CR or LF inside a value); browsers send nothing else, and each control
// character costs six bytes in every JSON copy of the SDP (the store, the
// Matrix event, each WebSocket frame).
func hasControl(s, allowed string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; (b < 0x20 || b == 0x7f) && strings.IndexByte(allowed, b) < 0 {
			return true
		}
	}
	return false
}

func checkCandidates(cs []Candidate) error {
	if len(cs) == 0 || len(cs) > maxCandidates {
		return invalidf("candidates must hold 1-%d entries", maxCandidates)
	}
	for i, c := range cs {
		if len(c.Candidate) > maxCandidate {
			return invalidf("candidates[%d].candidate is longer than %d bytes", i, maxCandidate)
		}
		if !utf8.ValidString(c.Candidate) {
			return invalidf("candidates[%d].candidate is not valid UTF-8", i)
		}
		if hasControl(c.Candidate, "") {
			return invalidf("candidates[%d].candidate holds a control character", i)
		}
		if c.SDPMLineIndex != nil && (*c.SDPMLineIndex < 0 || *c.SDPMLineIndex > 1024) {
			return invalidf("candidates[%d].sdpMLineIndex out of range", i)
		}
		if c.SDPMid != nil && (len(*c.SDPMid) > 64 || hasControl(*c.SDPMid, "")) {
			return invalidf("candidates[%d].sdpMid is longer than 64 bytes or holds a control character", i)
		}
		if c.UsernameFragment != nil && (len(*c.UsernameFragment) > 256 || !utf8.ValidString(*c.UsernameFragment) || hasControl(*c.UsernameFragment, "")) {
			return invalidf("candidates[%d].usernameFragment is longer than 256 bytes, not UTF-8 or holds a control character", i)
		}
	}
	return nil
}
