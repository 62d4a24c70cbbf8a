package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
)

// CheckRotation refuses a state directory whose record says the keyring was
// rotated while the rotation record is gone.
func CheckRotation(stateDir string, rec Record) error {
	if rec.Keyring {
		if _, err := os.Stat(KeyringRecordPath(stateDir)); errors.Is(err, fs.ErrNotExist) {
			return KeyringLost(stateDir)
		}
	}
	if rec.SFUKeyring {
		if _, err := os.Stat(SFURecordPath(stateDir)); errors.Is(err, fs.ErrNotExist) {
			_, err := loadSFU(stateDir) // the StateError that says so
			return err
		}
	}
	return nil
}

// RecordStoreInstance notes in the state record which state file this state
// directory holds (its instance ID), and a rotation record that an icebox
// from before the state record left.
func RecordStoreInstance(stateDir, instance string) error {
	return UpdateRecord(stateDir, func(r *Record) bool {
		changed := r.StoreInstance != instance
		r.StoreInstance = instance
		if _, err := os.Stat(KeyringRecordPath(stateDir)); err == nil && !r.Keyring {
			r.Keyring, changed = true, true
		}
		return changed
	})
}

// Reset is --init-state's part for the keyring: generated secrets that are
// unusable or changed since they were recorded are moved aside (renamed
// with suffix; the keyring makes a new one under the same kid), a missing
// one is simply generated anew, and the state record is removed, to be
// written anew from what is there. Each step is logged as a warning.
func Reset(stateDir, suffix string, log zerolog.Logger) error {
	rec, _, err := LoadRecord(stateDir)
	if err != nil {
		rec = Record{} // unreadable: replaced below anyway
	}
	secrets := SecretsPath(stateDir)
	entries, err := os.ReadDir(secrets)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: --init-state: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == rotationFile || e.Name() == sfuRotationFile || e.Name() == sfuSecretFile || e.Name()[0] == '.' {
			continue
		}
		path := filepath.Join(secrets, e.Name())
		key, err := readSecretFile(path)
		if errors.Is(err, errSecretExposed) {
			return fmt.Errorf("state: --init-state: %w (the secret itself is kept)", err)
		}
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
	if err := os.Remove(RecordPath(stateDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state: --init-state: %w", err)
	}
	if _, _, err := loadRotation(stateDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// A keyring record that does not parse (or names no key) would
		// refuse every start: moved aside like a damaged secret.
		path := KeyringRecordPath(stateDir)
		if _, serr := os.Stat(path); serr == nil {
			if err := os.Rename(path, path+suffix); err != nil {
				return fmt.Errorf("state: --init-state: %w", err)
			}
			log.Warn().Str("moved_to", path+suffix).Msg("--init-state: keyring record unreadable; moved aside: the configured secrets sign")
		}
	}
	if _, err := loadSFU(stateDir); err != nil {
		// Likewise the SFU TURN secrets' record: the first generation
		// is current again (give livekit-server the new sfu-turn.secret).
		path := SFURecordPath(stateDir)
		if _, serr := os.Stat(path); serr == nil {
			if err := os.Rename(path, path+suffix); err != nil {
				return fmt.Errorf("state: --init-state: %w", err)
			}
			log.Warn().Str("moved_to", path+suffix).Msg("--init-state: SFU TURN secret record unreadable; moved aside: the first SFU secret is current")
		}
	}
	if _, err := loadSFU(stateDir); err != nil {
		// Likewise the SFU TURN secrets' record: the first generation
		// is current again (give livekit-server the new sfu-turn.secret).
		path := SFURecordPath(stateDir)
		if _, serr := os.Stat(path); serr == nil {
			if err := os.Rename(path, path+suffix); err != nil {
				return fmt.Errorf("state: --init-state: %w", err)
			}
			log.Warn().Str("moved_to", path+suffix).Msg("--init-state: SFU TURN secret record unreadable; moved aside: the first SFU secret is current")
		}
	}
	if _, err := os.Stat(KeyringRecordPath(stateDir)); errors.Is(err, fs.ErrNotExist) {
		log.Warn().Msg("--init-state: no keyring record: the configured secrets sign")
	}
	return nil
}
