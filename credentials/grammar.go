package credentials

import (
	"errors"
	"strings"
	"time"
	"unicode"
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

	// maxExpiryDigits bounds the expiry's digits, leading zeros included
	// (coturn reads them too).
	maxExpiryDigits = 12
	// maxExpiry is 9999-12-31T23:59:59Z, the last second a four-digit year
	// (RFC 3339, the logs) can show; twelve digits would reach year 33658.
	maxExpiry = 253402300799

	// MaxValidity bounds how far ahead of the keyring's clock a credential
	// may expire: Lookup and Verify refuse a later expiry, Mint a longer
	// TTL. A TURN REST credential lives for hours (Synapse's default
	// turn_user_lifetime is one hour); a correctly signed username valid
	// for decades is a mistake or a leaked secret's forgery, and it could
	// never be revoked by expiry.
	MaxValidity = 10 * 365 * 24 * time.Hour
	// maxValidityText is MaxValidity as error messages say it.
	maxValidityText = "10 years"
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
	if n > maxExpiry {
		return 0, errors.New("expiry is after the year 9999")
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
// put into a log line or a terminal: bounded, valid UTF-8, printable only —
// no C0 or C1 control characters, no DEL, and none of the invisible
// characters that make one name look like another or reorder a log line
// (format characters such as U+202E RIGHT-TO-LEFT OVERRIDE or U+200B ZERO
// WIDTH SPACE, line and paragraph separators, unassigned code points). The
// ASCII space stays allowed, as in "bob smith".
func checkUser(user string) error {
	switch {
	case len(user) == 0:
		return errors.New("user is empty")
	case len(user) > MaxUserLen:
		return errors.New("user is longer than 256 bytes")
	case !utf8.ValidString(user):
		return errors.New("user is not valid UTF-8")
	case strings.ContainsFunc(user, unicode.IsControl):
		return errors.New("user contains a control character")
	case strings.ContainsFunc(user, isNotPrintable):
		return errors.New("user contains a non-printable character")
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

// isNotPrintable: unicode.IsPrint allows letters, marks, numbers,
// punctuation, symbols and the ASCII space.
func isNotPrintable(r rune) bool { return !unicode.IsPrint(r) }
