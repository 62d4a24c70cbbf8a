package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/internal/fileutil"
	"github.com/icebox-voip/icebox/store"
)

// The state record is icebox's evidence that a state directory held state:
// written at the first start, it names the state file it was created with
// and the generated secrets (by SHA-256, never the secret itself). Without
// it a deleted or emptied icebox.db was silently replaced by an empty one —
// the revocations of ended calls lost, their credentials working again — and
// a deleted keyring record or secret file silently regenerated (issue 13).
// With it, what disappeared or changed is refused until restored, or until
// the operator starts afresh on purpose with `icebox serve --init-state`.
const stateRecordFile = "state.json"

// initStateHint tells an operator the two ways out.
const initStateHint = "restore it from a backup, or start afresh on purpose with `icebox serve --init-state` " +
	"(which logs what it replaced)"

type stateRecord struct {
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
}

// stateError is state that was lost or damaged: a runtime failure (exit 1),
// even when it surfaces while the keyring is built from the configuration.
type stateError struct{ err error }

func (e stateError) Error() string { return e.err.Error() }
func (e stateError) Unwrap() error { return e.err }

func stateRecordPath(stateDir string) string { return filepath.Join(stateDir, stateRecordFile) }

// loadStateRecord reads the record; ok is false if there is none.
func loadStateRecord(stateDir string) (rec stateRecord, ok bool, err error) {
	path := stateRecordPath(stateDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		return rec, false, stateError{fmt.Errorf("state: %s is unreadable (%v): %s", path, err, initStateHint)}
	}
	return rec, true, nil
}

func saveStateRecord(stateDir string, rec stateRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteFileAtomic(stateRecordPath(stateDir), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// updateStateRecord applies fn to the record (a new one if there is none)
// and saves it if fn reports a change.
func updateStateRecord(stateDir string, fn func(*stateRecord) bool) error {
	rec, _, err := loadStateRecord(stateDir)
	if err != nil {
		return err
	}
	if !fn(&rec) {
		return nil
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = time.Now().UTC().Truncate(time.Second)
	}
	return saveStateRecord(stateDir, rec)
}

// priorStart lists what an earlier icebox left in stateDir besides the state
// file: the record, generated secrets, the Matrix device. Any of them means
// a missing or empty icebox.db was lost, not never made.
func priorStart(stateDir string) []string {
	var found []string
	for _, p := range []string{stateRecordPath(stateDir), filepath.Join(stateDir, secretsDir), matrixDir(stateDir)} {
		if entries, err := os.ReadDir(p); err == nil && len(entries) > 0 {
			found = append(found, p)
		} else if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			found = append(found, p)
		}
	}
	return found
}

// openState opens the state file, refusing one that a previous start
// evidently made and that is now missing, empty, corrupt or another file,
// and records it. With initState it starts afresh instead: a damaged file
// is moved aside, lost or changed secrets are forgotten (and generated anew
// by the keyring), and every replacement is logged as a warning.
func openState(cfg config.Config, initState bool, log zerolog.Logger) (*store.Store, error) {
	dir := cfg.StateDir
	if initState {
		if err := resetState(dir, log); err != nil {
			return nil, err
		}
	}
	rec, haveRec, err := loadStateRecord(dir)
	if err != nil {
		return nil, err
	}
	evidence := priorStart(dir)
	st, err := store.Open(dir, store.Options{MustExist: len(evidence) > 0 && !initState})
	switch {
	case errors.Is(err, store.ErrMissing):
		return nil, stateError{fmt.Errorf("%w, but this state directory was used before (found %v): the revocations of ended calls "+
			"would be lost and their TURN credentials work again; %s", err, evidence, initStateHint)}
	case errors.Is(err, store.ErrCorrupt):
		return nil, stateError{fmt.Errorf("%w; %s", err, initStateHint)}
	case err != nil:
		return nil, err
	}
	id, err := st.InstanceID()
	if err != nil {
		return nil, errors.Join(stateError{err}, st.Close())
	}
	if haveRec && rec.StoreInstance != "" && rec.StoreInstance != id {
		return nil, errors.Join(stateError{fmt.Errorf("state: %s is not the state file %s records (instance %s, recorded %s): %s",
			st.Path(), stateRecordPath(dir), id, rec.StoreInstance, initStateHint)}, st.Close())
	}
	if haveRec && rec.Keyring {
		if _, err := os.Stat(statePath(dir)); errors.Is(err, fs.ErrNotExist) {
			return nil, errors.Join(keyringLost(dir), st.Close())
		}
	}
	err = updateStateRecord(dir, func(r *stateRecord) bool {
		changed := r.StoreInstance != id
		r.StoreInstance = id
		if _, err := os.Stat(statePath(dir)); err == nil && !r.Keyring {
			r.Keyring, changed = true, true
		}
		return changed
	})
	if err != nil {
		return nil, errors.Join(err, st.Close())
	}
	if !haveRec {
		log.Info().Str("component", "state").Str("record", stateRecordPath(dir)).
			Msg("recorded this state directory: a later start refuses it if its state file, keyring record or generated secrets go missing")
	}
	return st, nil
}

func keyringLost(stateDir string) error {
	return stateError{fmt.Errorf("state: %s is missing, but %s records that the keyring was rotated: the configured "+
		"secrets would sign again, a rotated-away one among them; %s", statePath(stateDir), stateRecordPath(stateDir), initStateHint)}
}

// resetState is --init-state: it moves a damaged state file aside (an empty
// or missing one is simply replaced) and generated secrets that are
// unusable or changed since recorded, then removes the record, which
// openState and the keyring write anew from what is there; each step is
// logged as a warning.
func resetState(dir string, log zerolog.Logger) error {
	log = log.With().Str("component", "state").Logger()
	log.Warn().Str("state_dir", dir).Msg("--init-state: starting afresh on purpose; whatever state is missing or damaged is replaced by new, empty state")
	db := filepath.Join(dir, store.FileName)
	suffix := ".replaced-" + strconv.FormatInt(time.Now().Unix(), 10)
	if fi, err := os.Stat(db); err == nil && fi.Size() > 0 {
		st, err := store.Open(dir, store.Options{})
		switch {
		case errors.Is(err, store.ErrCorrupt):
			if err := os.Rename(db, db+suffix); err != nil {
				return fmt.Errorf("state: --init-state: %w", err)
			}
			log.Warn().Err(err).Str("moved_to", db+suffix).Msg("--init-state: the state file is corrupt; moved aside, a new empty one is created (revocations and calls lost)")
		case err != nil:
			return err
		default:
			if err := st.Close(); err != nil {
				return err
			}
		}
	} else {
		log.Warn().Str("file", db).Msg("--init-state: no state file (or an empty one); a new empty one is created (revocations and calls lost)")
	}
	// Generated secrets that are unusable or changed since they were
	// recorded are moved aside (the keyring makes a new one under the same
	// kid); a missing one is simply generated anew.
	rec, _, err := loadStateRecord(dir)
	if err != nil {
		rec = stateRecord{} // unreadable: replaced below anyway
	}
	secrets := filepath.Join(dir, secretsDir)
	entries, err := os.ReadDir(secrets)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: --init-state: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == keyringStateFile || e.Name()[0] == '.' {
			continue
		}
		path := filepath.Join(secrets, e.Name())
		key, err := readSecretFile(path)
		if want, ok := rec.Secrets[e.Name()]; err == nil && (!ok || want == secretSum(key)) {
			continue
		}
		if err := os.Rename(path, path+suffix); err != nil {
			return fmt.Errorf("state: --init-state: %w", err)
		}
		log.Warn().Str("kid", e.Name()).Str("moved_to", path+suffix).
			Msg("--init-state: generated secret unusable or changed since recorded; moved aside, a new one is generated under its kid (homeservers sharing it need the new one)")
	}
	// A new record is written from what is there now.
	if err := os.Remove(stateRecordPath(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: --init-state: %w", err)
	}
	if _, err := os.Stat(statePath(dir)); errors.Is(err, fs.ErrNotExist) {
		log.Warn().Msg("--init-state: no keyring record: the configured secrets sign")
	}
	return nil
}

// secretSum is the SHA-256 (hex) the state record keeps of a secret.
func secretSum(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])
}
