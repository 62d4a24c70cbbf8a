package credentials

import "errors"

// Errors returned by [ParseUsername], [Keyring.Lookup] and [Keyring.Verify].
// They are exported because the relay counts authentication failures by
// reason with errors.Is (see [Reason]). Their text never contains a password
// or key, nor the username as received: it is untrusted and up to 513 bytes.
var (
	// ErrMalformed: the username does not follow the grammar. The wrapping
	// error says which part is wrong.
	ErrMalformed = errors.New("credentials: malformed username")

	// ErrUnknownKID: the username names a key id the keyring does not hold
	// (for example a secret retired since), or it has no key id and the
	// keyring has no compat secret.
	ErrUnknownKID = errors.New("credentials: unknown key id")

	// ErrBadPassword: the password is not the HMAC of the username under the
	// secret it names.
	ErrBadPassword = errors.New("credentials: bad password")

	// ErrExpired: the password is right but the expiry has passed. Verify
	// still returns the claims with it, so callers can tell whose credential
	// it was.
	ErrExpired = errors.New("credentials: expired")
)

// Reason maps an error from this package to a short, fixed metric label:
// "malformed", "unknown_kid", "bad_password", "expired", or "other" for any
// other error. Reason(nil) is "" since nil is not a failure.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMalformed):
		return "malformed"
	case errors.Is(err, ErrUnknownKID):
		return "unknown_kid"
	case errors.Is(err, ErrBadPassword):
		return "bad_password"
	case errors.Is(err, ErrExpired):
		return "expired"
	default:
		return "other"
	}
}
