package keystore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/icebox-voip/icebox/internal/fileutil"
)

// The state record is icebox's evidence that a state directory held state:
// written at the first start, it names the state file it was created with
// and the generated secrets (by SHA-256, never the secret itself). Without
// it a deleted or emptied icebox.db was silently replaced by an empty one —
// the revocations of ended calls lost, their credentials working again — and
// a deleted keyring record or secret file silently regenerated (issue 13).
// With it, what disappeared or changed is refused until restored, or until
// the operator starts afresh on purpose with `icebox serve --init-state`.
const recordFile = "state.json"

// Record is the state record (state.json).
type Record struct {
	CreatedAt time.Time `json:"created_at"`
	// StoreInstance is icebox.db's instance ID (store.InstanceID).
	StoreInstance string `json:"store_instance"`
	// Secrets maps the kid of each secret generated into
	// state_dir/secrets to the SHA-256 (hex) of its value.
	Secrets map[string]string `json:"secrets,omitempty"`
	// Keyring is set once secrets/keyring.json was written (a rotation):
	// without it the configured list would sign again, bringing back a
	// secret rotated away.
	Keyring bool `json:"keyring,omitempty"`
	// SFUKeyring is set once secrets/sfu.json was written (a rotation of
	// the SFU TURN secret), for the same reason.
	SFUKeyring bool `json:"sfu_keyring,omitempty"`
}

// RecordPath is the state record's path in stateDir.
func RecordPath(stateDir string) string { return filepath.Join(stateDir, recordFile) }

// LoadRecord reads the record; ok is false if there is none.
func LoadRecord(stateDir string) (rec Record, ok bool, err error) {
	path := RecordPath(stateDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		return rec, false, StateError{fmt.Errorf("state: %s is unreadable (%v): %s", path, err, InitStateHint)}
	}
	return rec, true, nil
}

func saveRecord(stateDir string, rec Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteFileAtomic(RecordPath(stateDir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// UpdateRecord applies fn to the record (a new one if there is none) and
// saves it if fn reports a change.
func UpdateRecord(stateDir string, fn func(*Record) bool) error {
	rec, _, err := LoadRecord(stateDir)
	if err != nil {
		return err
	}
	if !fn(&rec) {
		return nil
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC().Truncate(time.Second)
	}
	return saveRecord(stateDir, rec)
}
