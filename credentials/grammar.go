package credentials

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Limits of the username grammar.
const (
	// MaxUsernameLen bounds a username, near the STUN USERNAME limit
	// (RFC 5389 §15.3). The grammar's longest username is 356 bytes, so this
	// only rejects garbage early, before any parsing.
	MaxUsernameLen = 513
	// MaxUserLen bounds the user part; Matrix user IDs are at most 255 bytes.
	MaxUserLen = 256

	maxExpiryDigits = 12           // year 33658: no realistic expiry needs more
	maxExpiry       = 999999999999 // the largest 12-digit expiry
	maxKIDLen       = 16
	maxCallIDLen    = 64

	// callPrefix marks a per-call subject. A subject that starts with it is
	// always read as per-call, so a plain user may not start with it.
	callPrefix = "call-"
)

// parseExpiry reads 1..12 decimal digits, nothing else (no sign, no space),
// as Unix seconds. Twelve digits cannot overflow int64.
func parseExpiry(s string) (int64, error) {
	if len(s) == 0 || len(s) > maxExpiryDigits {
		return 0, errors.New("expiry must be 1 to 12 decimal digits")
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("expiry must be 1 to 12 decimal digits")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

func checkKID(kid string) error {
	if len(kid) == 0 || len(kid) > maxKIDLen || !allBytes(kid, isKIDByte) {
		return errors.New("key id must match [a-z0-9]{1,16}")
	}
	return nil
}

func checkCallID(id string) error {
	if len(id) == 0 || len(id) > maxCallIDLen || !allBytes(id, isCallIDByte) {
		return errors.New("call id must match [A-Za-z0-9_-]{1,64}")
	}
	return nil
}

// checkUser accepts any opaque user (Matrix IDs contain ':') that is safe to
// put into a log line: bounded, valid UTF-8, no ASCII control characters.
func checkUser(user string) error {
	switch {
	case len(user) == 0:
		return errors.New("user is empty")
	case len(user) > MaxUserLen:
		return errors.New("user is longer than 256 bytes")
	case !utf8.ValidString(user):
		return errors.New("user is not valid UTF-8")
	case strings.ContainsFunc(user, isControl):
		return errors.New("user contains a control character")
	}
	return nil
}

func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isKIDByte(c byte) bool {
	return ('a' <= c && c <= 'z') || ('0' <= c && c <= '9')
}

func isCallIDByte(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == '_' || c == '-'
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
