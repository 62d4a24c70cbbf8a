package node

import (
	"errors"
	"net"
)

// ConfigError marks an error in the configuration (as opposed to a runtime
// failure: a socket, the state file, a peer): `icebox serve` exits 2 on it.
// Lost or damaged state (keystore.StateError) is a runtime failure even
// when wrapped in one.
type ConfigError struct{ Err error }

func (e ConfigError) Error() string { return e.Err.Error() }
func (e ConfigError) Unwrap() error { return e.Err }

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
