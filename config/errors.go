package config

import "errors"

// ErrInvalid is matched (errors.Is) by every error that Load and Validate
// return because of the configuration's content: a YAML syntax or type error,
// an unknown key, a bad environment value, or a value Validate refuses. An
// error reading the file itself is not ErrInvalid; it wraps the os error
// (errors.Is(err, fs.ErrNotExist) for a missing file).
var ErrInvalid = errors.New("invalid configuration")

// ErrMatrixPasswordLogin is returned by Matrix.Token when the service user
// logs in with a password (matrix.password or matrix.password_file) rather
// than an access token: the caller then reads the password with
// Matrix.LoginPassword, logs in as a new device, and keeps that session.
var ErrMatrixPasswordLogin = errors.New("config: matrix: a password is set, not an access token")

var (
	errBothSecrets    = errors.New("config: secret and secret_file are both set")
	errBothJWTSecrets = errors.New("config: auth.jwt: hs256_secret and hs256_secret_file are both set")
	errBadTokenHash   = errors.New("sha256 must be 64 hex characters")

	errBothMatrixTokens       = errors.New("config: matrix: access_token and access_token_file are both set")
	errBothMatrixPasswords    = errors.New("config: matrix: password and password_file are both set")
	errMatrixTokenAndPassword = errors.New("config: matrix: an access token and a password are both set")
	errNoMatrixLogin          = errors.New("config: matrix: none of access_token, access_token_file, password and password_file is set")
	errNoMatrixPassword       = errors.New("config: matrix: neither password nor password_file is set")
)

// invalid is one problem with the configuration. Its text is shown as is
// ("turn.realm: must not be empty"); it matches ErrInvalid.
type invalid string

func (e invalid) Error() string { return string(e) }

func (e invalid) Is(target error) bool { return target == ErrInvalid }
