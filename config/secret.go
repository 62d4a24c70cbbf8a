package config

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Value returns the secret's bytes: Secret, or the contents of SecretFile
// with surrounding whitespace trimmed (a trailing newline from an editor or
// `echo` is not part of the key). It returns nil and no error when neither
// is set: the caller generates the secret.
func (s Secret) Value() ([]byte, error) {
	switch {
	case s.Secret != "" && s.SecretFile != "":
		return nil, errBothSecrets
	case s.Secret != "":
		return []byte(s.Secret), nil
	case s.SecretFile != "":
		b, err := os.ReadFile(s.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("config: secret %s: %w", s.KID, err)
		}
		return bytes.TrimSpace(b), nil
	}
	return nil, nil
}

// SecretValue returns the JWT HMAC key: HS256Secret, or the contents of
// HS256SecretFile with surrounding whitespace trimmed (as Secret.Value). It
// returns nil and no error when neither is set: JWT authentication is off.
func (j JWT) SecretValue() ([]byte, error) {
	switch {
	case j.HS256Secret != "" && j.HS256SecretFile != "":
		return nil, errBothJWTSecrets
	case j.HS256Secret != "":
		return []byte(j.HS256Secret), nil
	case j.HS256SecretFile != "":
		b, err := os.ReadFile(j.HS256SecretFile)
		if err != nil {
			return nil, fmt.Errorf("config: auth.jwt.hs256_secret_file: %w", err)
		}
		return bytes.TrimSpace(b), nil
	}
	return nil, nil
}

// Token returns the service user's access token: AccessToken as is, or the
// contents of AccessTokenFile with surrounding whitespace trimmed (as
// Secret.Value). When a password is configured instead, it returns
// ErrMatrixPasswordLogin: see LoginPassword. Unlike a TURN secret, a token
// cannot be generated, so no way to log in being set is an error. Errors
// never hold the token.
func (m Matrix) Token() (string, error) {
	switch {
	case m.AccessToken != "" && m.AccessTokenFile != "":
		return "", errBothMatrixTokens
	case m.hasToken() && m.hasPassword():
		return "", errMatrixTokenAndPassword
	case m.AccessToken != "":
		return m.AccessToken, nil
	case m.AccessTokenFile != "":
		return readMatrixSecret("matrix.access_token_file", m.AccessTokenFile)
	case m.hasPassword():
		return "", ErrMatrixPasswordLogin
	}
	return "", errNoMatrixLogin
}

// LoginPassword returns the service user's password, for the bridge to log
// in as a new device: Password as is, or the contents of PasswordFile with
// surrounding whitespace trimmed (a trailing newline is not part of it).
// It is an error when no password is set or an access token is set too.
// Errors never hold the password.
func (m Matrix) LoginPassword() (string, error) {
	switch {
	case m.Password != "" && m.PasswordFile != "":
		return "", errBothMatrixPasswords
	case m.hasToken() && m.hasPassword():
		return "", errMatrixTokenAndPassword
	case m.Password != "":
		return m.Password, nil
	case m.PasswordFile != "":
		return readMatrixSecret("matrix.password_file", m.PasswordFile)
	}
	return "", errNoMatrixPassword
}

func (m Matrix) hasToken() bool    { return m.AccessToken != "" || m.AccessTokenFile != "" }
func (m Matrix) hasPassword() bool { return m.Password != "" || m.PasswordFile != "" }

// readMatrixSecret reads a token or password file, trimmed; key names the
// config key for errors, which never hold the contents.
func readMatrixSecret(key, name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("config: %s: %w", key, err)
	}
	s := string(bytes.TrimSpace(b))
	if s == "" {
		return "", fmt.Errorf("config: %s: %s is empty", key, name)
	}
	return s, nil
}

// Hash returns the token's SHA-256 decoded from its hex form, the form the
// HTTP API compares presented tokens against.
func (t StaticToken) Hash() ([32]byte, error) {
	var h [32]byte
	if len(t.SHA256) != 2*len(h) {
		return h, fmt.Errorf("config: static token of user %q: %w", t.User, errBadTokenHash)
	}
	if _, err := hex.Decode(h[:], []byte(t.SHA256)); err != nil {
		return h, fmt.Errorf("config: static token of user %q: %w", t.User, errBadTokenHash)
	}
	return h, nil
}

// secretFile checks a secret file: a regular file, private to its owner
// (as LiveKit checks its key file: a secret others can read is a leaked
// secret), holding at least minLen bytes.
func (v *validator) secretFile(path, name string, minLen int) {
	if b, ok := v.privateFile(path, name); ok {
		v.secretValue(path, name+" holds", bytes.TrimSpace(b), minLen)
	}
}

// privateFile checks that name is a regular file that neither its group
// nor others may read or write, and returns its contents.
func (v *validator) privateFile(path, name string) ([]byte, bool) {
	fi, ok := v.statFile(path, name)
	if !ok {
		return nil, false
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		v.add(path, "%s is readable by others (mode %04o); chmod 600 it", name, perm)
		return nil, false
	}
	b, err := os.ReadFile(name)
	if err != nil {
		v.add(path, "cannot read: %v", err)
		return nil, false
	}
	return b, true
}

// requiredFile checks a file that key `by` needs: set, a regular file, and
// readable.
func (v *validator) requiredFile(path, name, by string) {
	if name == "" {
		v.add(path, "required when %s is set", by)
		return
	}
	if _, ok := v.statFile(path, name); !ok {
		return
	}
	f, err := os.Open(name)
	if err != nil {
		v.add(path, "cannot read: %v", err)
		return
	}
	if err := f.Close(); err != nil {
		v.add(path, "cannot read: %v", err)
	}
}

// statFile checks that name exists and is a regular file (after symlinks,
// as Kubernetes mounts secrets).
func (v *validator) statFile(path, name string) (fs.FileInfo, bool) {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.add(path, "%s does not exist", name)
		return nil, false
	case err != nil:
		v.add(path, "cannot read: %v", err)
		return nil, false
	case !fi.Mode().IsRegular():
		v.add(path, "%s is not a regular file", name)
		return nil, false
	}
	return fi, true
}
