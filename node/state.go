package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/store"
)

// The state record (keystore.Record, state.json) is the evidence that a
// state directory held state; openState checks the state file against it,
// the keystore checks the secrets and the keyring record.

// priorStart lists what an earlier icebox left in stateDir besides the state
// file: the record, generated secrets, the Matrix device. Any of them means
// a missing or empty icebox.db was lost, not never made.
func priorStart(stateDir string) []string {
	var found []string
	for _, p := range []string{keystore.RecordPath(stateDir), keystore.SecretsPath(stateDir), matrixDir(stateDir)} {
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
	rec, haveRec, err := keystore.LoadRecord(dir)
	if err != nil {
		return nil, err
	}
	evidence := priorStart(dir)
	st, err := store.Open(dir, store.Options{MustExist: len(evidence) > 0 && !initState})
	switch {
	case errors.Is(err, store.ErrMissing):
		return nil, keystore.StateError{Err: fmt.Errorf("%w, but this state directory was used before (found %v): the revocations of ended calls "+
			"would be lost and their TURN credentials work again; %s", err, evidence, keystore.InitStateHint)}
	case errors.Is(err, store.ErrCorrupt):
		return nil, keystore.StateError{Err: fmt.Errorf("%w; %s", err, keystore.InitStateHint)}
	case err != nil:
		return nil, err
	}
	if err := checkState(dir, st, rec, haveRec); err != nil {
		return nil, errors.Join(err, st.Close())
	}
	if !haveRec {
		log.Info().Str("component", "state").Str("record", keystore.RecordPath(dir)).
			Msg("recorded this state directory: a later start refuses it if its state file, keyring record or generated secrets go missing")
	}
	return st, nil
}

// checkState refuses a state file that is not the one the record names, or
// a keyring record that went missing, and records the state file.
func checkState(dir string, st *store.Store, rec keystore.Record, haveRec bool) error {
	id, err := st.InstanceID()
	if err != nil {
		return keystore.StateError{Err: err}
	}
	if haveRec && rec.StoreInstance != "" && rec.StoreInstance != id {
		return keystore.StateError{Err: fmt.Errorf("state: %s is not the state file %s records (instance %s, recorded %s): %s",
			st.Path(), keystore.RecordPath(dir), id, rec.StoreInstance, keystore.InitStateHint)}
	}
	if haveRec {
		if err := keystore.CheckRotation(dir, rec); err != nil {
			return err
		}
	}
	return keystore.RecordStoreInstance(dir, id)
}

// resetState is --init-state: it moves a damaged state file aside (an empty
// or missing one is simply replaced), then lets the keystore move aside
// generated secrets that are unusable or changed since recorded and remove
// the record, which openState and the keyring write anew from what is
// there; each step is logged as a warning.
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
	return keystore.Reset(dir, suffix, log)
}
