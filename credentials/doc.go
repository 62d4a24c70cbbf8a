// Package credentials owns icebox's TURN REST credentials: the
// time-limited username/password scheme that coturn (use-auth-secret),
// eturnal, Synapse and Dendrite share.
//
// A username reads
//
//	expiry [ "." kid ] ":" [ "call-" call-id ":" ] user
//
// and its password is base64(HMAC-SHA1(secret, username)). The expiry is
// Unix seconds up to the end of the year 9999, the user printable UTF-8 (see
// checkUser); Lookup and Verify also refuse an expiry more than
// [MaxValidity] ahead. The optional kid
// names the secret that signed it, so secrets can be rotated without breaking
// live calls; a username without a kid (as Synapse, Dendrite and coturn's
// tools mint them) is checked with the keyring's single "compat" secret.
//
// The package is pure: it does no I/O, keeps no package-level state and reads
// time only through the clock handed to [NewKeyring]. Revocation, rate
// limiting and metrics belong to its callers; [Reason] gives them a stable
// label for each failure.
package credentials
