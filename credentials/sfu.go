package credentials

import "strings"

// The LiveKit SFU's TURN credentials. livekit-server mints one per
// participant from a shared secret (rtc.turn_servers[].secret), in the
// coturn REST form with no kid: username "<unix expiry>:<participant ID>",
// password base64(HMAC-SHA1(secret, username)). Such usernames cannot name
// the secret that signed them, so the keyring tells them apart by their
// user part instead: a kid-less username whose user (with or without a
// call) has the form of a LiveKit participant ID is verified only with the
// SFU secrets, never with the compat one, and carries Claims.SFU; every
// other kid-less username is verified with the compat secret only. The SFU
// secrets never verify a username with a kid either. Homeservers mint
// "@user:server" user parts, so reserving the participant-ID form costs
// them nothing.
const (
	// ParticipantPrefix begins every LiveKit participant ID
	// (livekit/protocol utils/guid.ParticipantPrefix).
	ParticipantPrefix = "PA_"
	// ParticipantIDLen is the length of the random part
	// (livekit/protocol utils/guid.Size).
	ParticipantIDLen = 12
	// ParticipantAlphabet is the alphabet of the random part
	// (livekit/protocol utils/guid.IDAlphabet, shortuuid's default:
	// base57 without 0, 1, I, O and l).
	ParticipantAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
)

// IsParticipantID reports whether user has the form of a LiveKit
// participant ID: "PA_" and 12 characters of ParticipantAlphabet.
func IsParticipantID(user string) bool {
	id, ok := strings.CutPrefix(user, ParticipantPrefix)
	if !ok || len(id) != ParticipantIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if strings.IndexByte(ParticipantAlphabet, id[i]) < 0 {
			return false
		}
	}
	return true
}

// IsSFUClaims reports whether claims are the SFU's kind: no kid and a
// participant-ID user. It depends on the username alone, so the relay
// scopes an allocation by the same rule that chose the secret verifying
// it.
func IsSFUClaims(c Claims) bool {
	return c.KID == "" && IsParticipantID(c.User)
}
