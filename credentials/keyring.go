package credentials

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MinKeyLen is the shortest secret accepted: HMAC-SHA1 keys shorter than
// 128 bits are guessable offline from one captured username/password pair.
const MinKeyLen = 16

// Secret is one HMAC key of the keyring.
type Secret struct {
	KID    string // [a-z0-9]{1,16}
	Key    []byte // at least MinKeyLen bytes
	Compat bool   // verifies usernames without a kid (Synapse/Dendrite/coturn tools)
	// SFU marks a secret shared with the LiveKit SFU (sfu.go): it verifies
	// kid-less usernames with a participant-ID user and nothing else, and
	// never signs. At most one of Compat and SFU.
	SFU bool
}

// String hides the key so a Secret printed by mistake (%v, %+v) leaks nothing.
func (s Secret) String() string {
	if s.SFU {
		return fmt.Sprintf("credentials.Secret{KID:%q, Key:<%d bytes redacted>, SFU:true}", s.KID, len(s.Key))
	}
	return fmt.Sprintf("credentials.Secret{KID:%q, Key:<%d bytes redacted>, Compat:%t}", s.KID, len(s.Key), s.Compat)
}

// GoString hides the key from %#v as well.
func (s Secret) GoString() string { return s.String() }

// Subject is who a credential is minted for: a user, optionally within one
// call (then revoking the call revokes the credential).
type Subject struct {
	User   string // 1..256 bytes of UTF-8 without control characters
	CallID string // [A-Za-z0-9_-]{1,64}, or "" when not per-call
}

// Credential is a minted TURN REST credential, ready for a client.
type Credential struct {
	Username string
	Password string
	Expires  time.Time     // UTC, second precision
	TTL      time.Duration // as asked of Mint; Expires is now+TTL truncated to seconds
}

// Keyring holds the secrets that sign and verify credentials. The first
// secret is the active one and signs new credentials; the others are still
// accepted, so a rotation does not break credentials already handed out.
// A Keyring is immutable after NewKeyring and safe for concurrent use.
type Keyring struct {
	secrets []Secret       // copies of the caller's, secrets[0] is active
	byKID   map[string]int // index into secrets
	compat  int            // index of the compat secret, -1 if none
	// sfu are the SFU secrets (Secret.SFU), the active one first; apart
	// from secrets so that they never sign nor verify a username by kid.
	sfu []Secret
	now func() time.Time
}

// NewKeyring validates secrets and builds a keyring from them. Key ids must
// be well-formed and distinct, keys at least MinKeyLen bytes, at most one
// secret may be Compat, and at least one must not be SFU (it signs). SFU
// secrets keep their order among themselves: the first is the one the SFU
// holds now, the others are still accepted after a rotation. A nil now means time.Now. Keys are copied, so the
// caller may wipe its slices afterwards.
func NewKeyring(secrets []Secret, now func() time.Time) (*Keyring, error) {
	if len(secrets) == 0 {
		return nil, errors.New("credentials: keyring needs at least one secret")
	}
	if now == nil {
		now = time.Now
	}
	k := &Keyring{
		secrets: make([]Secret, 0, len(secrets)),
		byKID:   make(map[string]int, len(secrets)),
		compat:  -1,
		now:     now,
	}
	for i, s := range secrets {
		if err := k.add(s); err != nil {
			return nil, fmt.Errorf("credentials: secrets[%d]: %w", i, err)
		}
	}
	if len(k.secrets) == 0 {
		return nil, errors.New("credentials: keyring needs a secret that is not an SFU secret, to sign")
	}
	return k, nil
}

// add appends one validated secret. Error texts quote a kid only once it is
// known to be well-formed: a malformed one may be a key pasted in the wrong
// field.
func (k *Keyring) add(s Secret) error {
	if err := checkKID(s.KID); err != nil {
		return err
	}
	if j, dup := k.byKID[s.KID]; dup {
		return fmt.Errorf("key id %q already used by secrets[%d]", s.KID, j)
	}
	if len(s.Key) < MinKeyLen {
		return fmt.Errorf("key %q is %d bytes, need at least %d", s.KID, len(s.Key), MinKeyLen)
	}
	if k.hasSFUKID(s.KID) {
		return fmt.Errorf("key id %q already used by an SFU secret", s.KID)
	}
	if s.SFU {
		if s.Compat {
			return fmt.Errorf("key %q is both compat and SFU; it may be one only", s.KID)
		}
		k.sfu = append(k.sfu, Secret{KID: s.KID, Key: append([]byte(nil), s.Key...), SFU: true})
		return nil
	}
	if s.Compat && k.compat >= 0 {
		return fmt.Errorf("key %q is compat, but secrets[%d] already is; at most one may be", s.KID, k.compat)
	}
	i := len(k.secrets)
	if s.Compat {
		k.compat = i
	}
	k.byKID[s.KID] = i
	k.secrets = append(k.secrets, Secret{KID: s.KID, Key: append([]byte(nil), s.Key...), Compat: s.Compat})
	return nil
}

func (k *Keyring) hasSFUKID(kid string) bool {
	for _, s := range k.sfu {
		if s.KID == kid {
			return true
		}
	}
	return false
}

// SFUSecrets is how many SFU secrets the keyring holds.
func (k *Keyring) SFUSecrets() int { return len(k.sfu) }

// SFUKIDs lists the kids of the SFU secrets, the one the SFU holds first;
// none if the keyring has no SFU secret.
func (k *Keyring) SFUKIDs() []string {
	kids := make([]string, len(k.sfu))
	for i, s := range k.sfu {
		kids[i] = s.KID
	}
	return kids
}

// ActiveKID is the kid of the secret that signs new credentials.
func (k *Keyring) ActiveKID() string { return k.secrets[0].KID }

// KIDs lists every kid in the ring, active first, in the order given to
// NewKeyring; SFU secrets are not among them (SFUKIDs).
func (k *Keyring) KIDs() []string {
	kids := make([]string, len(k.secrets))
	for i, s := range k.secrets {
		kids[i] = s.KID
	}
	return kids
}

// CompatKID is the kid of the secret that verifies usernames without a kid,
// or "" if there is none.
func (k *Keyring) CompatKID() string {
	if k.compat < 0 {
		return ""
	}
	return k.secrets[k.compat].KID
}

// Mint signs a credential for sub that expires ttl from now, with the active
// secret. The username always carries the active kid, even when that secret
// is also the compat one: coturn ignores the kid (it only reads the expiry),
// and an explicit kid keeps verification right after the compat role moves.
// Mint fails only on invalid input (ttl < 1s, a bad subject).
func (k *Keyring) Mint(sub Subject, ttl time.Duration) (Credential, error) {
	if ttl < time.Second {
		return Credential{}, fmt.Errorf("credentials: mint: ttl %v is shorter than 1s", ttl)
	}
	if ttl > MaxValidity {
		return Credential{}, fmt.Errorf("credentials: mint: ttl %v is longer than %s", ttl, maxValidityText)
	}
	if err := sub.check(); err != nil {
		return Credential{}, fmt.Errorf("credentials: mint: %w", err)
	}
	// Truncating keeps the expiry on the second the username states; with
	// ttl >= 1s it still lies after now.
	expires := k.now().Add(ttl).Truncate(time.Second).UTC()
	if err := checkExpiry(expires); err != nil {
		return Credential{}, fmt.Errorf("credentials: mint: %w", err)
	}
	active := k.secrets[0]
	c := Claims{Expires: expires, KID: active.KID, CallID: sub.CallID, User: sub.User}
	username := c.Username()
	return Credential{
		Username: username,
		Password: Password(active.Key, username),
		Expires:  expires,
		TTL:      ttl,
	}, nil
}

// check applies the username grammar to a subject before minting, so every
// minted username parses back to the same claims.
func (s Subject) check() error {
	if s.CallID != "" {
		if err := checkCallID(s.CallID); err != nil {
			return err
		}
	} else if strings.HasPrefix(s.User, callPrefix) {
		return fmt.Errorf("user without a call id must not begin with %q: it would read as a call", callPrefix)
	}
	return checkUser(s.User)
}

// checkExpiry rejects expiries the grammar cannot write (a clock before 1970
// or absurdly far ahead).
func checkExpiry(t time.Time) error {
	if u := t.Unix(); u < 0 || u > maxExpiry {
		return fmt.Errorf("expiry %s is outside what a username can hold", t.Format(time.RFC3339))
	}
	return nil
}

// Lookup returns the claims of username and the password it should come
// with, whatever its past expiry: pion/turn's auth handler needs the password
// to derive the long-term key, and the relay decides about expiry itself (an
// expired credential may still refresh an existing allocation). An expiry
// more than MaxValidity ahead of the keyring's clock is refused as
// malformed: no credential this keyring mints lives that long.
// Errors: ErrMalformed, ErrUnknownKID.
func (k *Keyring) Lookup(username string) (Claims, string, error) {
	return k.LookupSFU(username, "")
}

// LookupSFU is Lookup that verifies an SFU username (Claims.SFU) with the
// SFU secret sfuKID rather than the one the SFU holds now: kid-less
// usernames cannot say which SFU secret signed them, so after a rotation
// the relay finds out from the request's MESSAGE-INTEGRITY (SFUPasswords)
// and asks for that one. An sfuKID the keyring does not hold, or "", means
// the current SFU secret; for other usernames sfuKID is ignored.
func (k *Keyring) LookupSFU(username, sfuKID string) (Claims, string, error) {
	c, err := ParseUsername(username)
	if err != nil {
		return Claims{}, "", err
	}
	if c.Expires.After(k.now().Add(MaxValidity)) {
		return Claims{}, "", malformed(fmt.Errorf("expiry %s is more than %s ahead", c.Expires.Format(time.RFC3339), maxValidityText))
	}
	var s Secret
	if c.SFU {
		s, err = k.sfuSecret(sfuKID)
	} else {
		s, err = k.secretFor(c.KID)
	}
	if err != nil {
		return Claims{}, "", err
	}
	// The HMAC covers the username as received, not c.Username(): the two
	// differ if the expiry had leading zeros.
	return c, Password(s.Key, username), nil
}

// sfuSecret returns the SFU secret kid, or the current one.
func (k *Keyring) sfuSecret(kid string) (Secret, error) {
	if len(k.sfu) == 0 {
		return Secret{}, fmt.Errorf("%w: a kid-less username with a LiveKit participant ID is verified with the SFU "+
			"secret only, and the keyring has none", ErrUnknownKID)
	}
	for _, s := range k.sfu {
		if s.KID == kid {
			return s, nil
		}
	}
	return k.sfu[0], nil
}

// SFUPasswords returns, for an SFU username, the password each SFU secret
// gives it, in the order of SFUKIDs; nil for any other username. The relay
// checks a request's MESSAGE-INTEGRITY against each to learn which secret
// signed it.
func (k *Keyring) SFUPasswords(username string) []string {
	c, err := ParseUsername(username)
	if err != nil || !c.SFU || len(k.sfu) == 0 {
		return nil
	}
	out := make([]string, len(k.sfu))
	for i, s := range k.sfu {
		out[i] = Password(s.Key, username)
	}
	return out
}

// secretFor finds the secret that signed a username with this kid.
func (k *Keyring) secretFor(kid string) (Secret, error) {
	if kid == "" {
		if k.compat < 0 {
			return Secret{}, fmt.Errorf("%w: username has none and the keyring has no compat secret", ErrUnknownKID)
		}
		return k.secrets[k.compat], nil
	}
	i, ok := k.byKID[kid]
	if !ok {
		// kid passed checkKID, so it is short and safe to log.
		return Secret{}, fmt.Errorf("%w %q", ErrUnknownKID, kid)
	}
	return k.secrets[i], nil
}

// Verify checks a username/password pair and the expiry at k's clock.
// Errors: ErrMalformed, ErrUnknownKID, ErrBadPassword, ErrExpired. With
// ErrExpired the claims are returned too; with the others they are zero.
// The password is checked before the expiry, so a guess at an expired
// username learns nothing more than at a live one.
func (k *Keyring) Verify(username, password string) (Claims, error) {
	c, want, err := k.Lookup(username)
	if err != nil {
		return Claims{}, err
	}
	// Constant time, so response timing does not reveal how much of a
	// forged password was right.
	if subtle.ConstantTimeCompare([]byte(password), []byte(want)) != 1 {
		return Claims{}, ErrBadPassword
	}
	if k.Expired(c) {
		return c, fmt.Errorf("%w at %s", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	return c, nil
}

// Expired reports whether c has expired at the keyring's clock. A credential
// is valid strictly before its expiry: at the expiry second it has expired.
func (k *Keyring) Expired(c Claims) bool {
	return !k.now().Before(c.Expires)
}
