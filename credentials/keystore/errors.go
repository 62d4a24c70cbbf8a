package keystore

import (
	"errors"
	"fmt"
)

// InitStateHint tells an operator the two ways out of lost or damaged state.
const InitStateHint = "restore it from a backup, or start afresh on purpose with `icebox serve --init-state` " +
	"(which logs what it replaced)"

// StateError is state that was lost or damaged: a runtime failure (exit 1),
// even when it surfaces while the keyring is built from the configuration.
type StateError struct{ Err error }

func (e StateError) Error() string { return e.Err.Error() }
func (e StateError) Unwrap() error { return e.Err }

// ErrNotManaged: rotation is for keyrings icebox generates itself.
var ErrNotManaged = errors.New("credentials.secrets names its own secrets (secret or secret_file); " +
	"rotate by adding the new secret first in the list and sending SIGHUP")

// KeyringLost is the error for a rotation record that the state record says
// was written and that is now gone.
func KeyringLost(stateDir string) error {
	return StateError{fmt.Errorf("state: %s is missing, but %s records that the keyring was rotated: the configured "+
		"secrets would sign again, a rotated-away one among them; %s", KeyringRecordPath(stateDir), RecordPath(stateDir), InitStateHint)}
}
