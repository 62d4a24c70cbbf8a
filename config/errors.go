package config

import "errors"

// ErrInvalid is matched (errors.Is) by every error that Load and Validate
// return because of the configuration's content: a YAML syntax or type error,
// an unknown key, a bad environment value, or a value Validate refuses. An
// error reading the file itself is not ErrInvalid; it wraps the os error
// (errors.Is(err, fs.ErrNotExist) for a missing file).
var ErrInvalid = errors.New("invalid configuration")

var (
	errBothSecrets    = errors.New("config: secret and secret_file are both set")
	errBothJWTSecrets = errors.New("config: auth.jwt: hs256_secret and hs256_secret_file are both set")
	errBadTokenHash   = errors.New("sha256 must be 64 hex characters")

	errBothMatrixTokens = errors.New("config: matrix: access_token and access_token_file are both set")
	errNoMatrixToken    = errors.New("config: matrix: neither access_token nor access_token_file is set")
)

// invalid is one problem with the configuration. Its text is shown as is
// ("turn.realm: must not be empty"); it matches ErrInvalid.
type invalid string

func (e invalid) Error() string { return string(e) }

func (e invalid) Is(target error) bool { return target == ErrInvalid }
