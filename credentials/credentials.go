package credentials

import (
	"crypto/hmac"
	"crypto/sha1" // the TURN REST scheme fixes HMAC-SHA1; coturn and Synapse compute the same
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Claims is what a username says. It carries no secret: the password is
// derived from the username, not stored in it.
type Claims struct {
	Expires time.Time // UTC, second precision
	KID     string    // "" for compat usernames
	CallID  string    // "" when not per-call
	User    string
	// SFU: no kid and a LiveKit participant-ID user (IsSFUClaims), a
	// username the SFU secret signs. Username does not write it; it
	// follows from the other fields.
	SFU bool
}

// Username formats c per the grammar, writing the kid only if KID != "".
// It does not validate c: ParseUsername(c.Username()) == c holds for claims
// that ParseUsername or Mint produced.
func (c Claims) Username() string {
	var b strings.Builder
	b.Grow(maxExpiryDigits + 1 + len(c.KID) + 1 + len(callPrefix) + len(c.CallID) + 1 + len(c.User))
	b.WriteString(strconv.FormatInt(c.Expires.Unix(), 10))
	if c.KID != "" {
		b.WriteByte('.')
		b.WriteString(c.KID)
	}
	b.WriteByte(':')
	if c.CallID != "" {
		b.WriteString(callPrefix)
		b.WriteString(c.CallID)
		b.WriteByte(':')
	}
	b.WriteString(c.User)
	return b.String()
}

// ParseUsername splits a username into its claims. It reads the expiry the
// way coturn does (the digits before the first '.' or ':'), so a username
// both servers accept means the same to both. Errors wrap [ErrMalformed] and
// never quote the username, which is untrusted.
func ParseUsername(s string) (Claims, error) {
	if len(s) > MaxUsernameLen {
		return Claims{}, malformed(fmt.Errorf("longer than %d bytes", MaxUsernameLen))
	}
	i := strings.IndexAny(s, ".:")
	if i < 0 {
		return Claims{}, malformed(fmt.Errorf("no ':' after expiry"))
	}
	expiry, err := parseExpiry(s[:i])
	if err != nil {
		return Claims{}, malformed(err)
	}
	c := Claims{Expires: time.Unix(expiry, 0).UTC()}
	rest := s[i+1:]
	if s[i] == '.' {
		if c.KID, rest, err = cutKID(rest); err != nil {
			return Claims{}, malformed(err)
		}
	}
	if c.CallID, c.User, err = parseSubject(rest); err != nil {
		return Claims{}, malformed(err)
	}
	c.SFU = IsSFUClaims(c)
	return c, nil
}

// cutKID reads the kid that runs up to the next ':' and returns what follows.
func cutKID(s string) (kid, rest string, err error) {
	kid, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("no ':' after key id")
	}
	if err := checkKID(kid); err != nil {
		return "", "", err
	}
	return kid, rest, nil
}

// parseSubject reads [ "call-" call-id ":" ] user. A subject starting with
// "call-" is always per-call, never a user by that name: otherwise one
// username could mean two things.
func parseSubject(s string) (callID, user string, err error) {
	if after, ok := strings.CutPrefix(s, callPrefix); ok {
		var found bool
		callID, user, found = strings.Cut(after, ":")
		if !found {
			return "", "", fmt.Errorf("no ':' after call id")
		}
		if err := checkCallID(callID); err != nil {
			return "", "", err
		}
	} else {
		user = s
	}
	if err := checkUser(user); err != nil {
		return "", "", err
	}
	return callID, user, nil
}

func malformed(reason error) error {
	return fmt.Errorf("%w: %w", ErrMalformed, reason)
}

// Password is the TURN REST password for username:
// base64.StdEncoding(HMAC-SHA1(key, username)).
func Password(key []byte, username string) string {
	mac := hmac.New(sha1.New, key)
	mac.Write([]byte(username)) // hash.Hash.Write never fails
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
