package keystore

import (
	"fmt"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
)

// Build turns the configured secrets into a keyring. A secret with neither
// `secret` nor `secret_file` is generated once into
// <state_dir>/secrets/<kid> (mode 0600) and reused after that.
//
// A managed keyring (all secrets generated) that was rotated is built from
// its rotation record instead, without the keys that have retired.
//
// With matrixrtc.livekit.turn.enabled the keyring also holds the live SFU
// TURN secrets (sfu.go), generated as needed.
func Build(cfg config.Config) (*credentials.Keyring, error) {
	return buildAt(cfg, true, time.Now())
}

// Read is Build for commands that must not create files (icebox creds,
// often run as another user than the service): a secret that was never
// generated is an error.
func Read(cfg config.Config) (*credentials.Keyring, error) {
	return buildAt(cfg, false, time.Now())
}

// buildAt builds the keyring as it is at now (which keys have retired).
func buildAt(cfg config.Config, generate bool, now time.Time) (*credentials.Keyring, error) {
	if managed(cfg) {
		st, ok, err := loadRotation(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		if ok {
			return managedKeyringFrom(cfg, liveKeys(cfg, st, now), generate, now)
		}
	}
	secrets := make([]credentials.Secret, 0, len(cfg.Credentials.Secrets))
	for i, s := range cfg.Credentials.Secrets {
		key, err := s.Value()
		if err != nil {
			return nil, fmt.Errorf("credentials.secrets[%d]: %w", i, err)
		}
		if len(key) == 0 {
			if key, err = generatedSecret(cfg.StateDir, s.KID, generate); err != nil {
				return nil, fmt.Errorf("credentials.secrets[%d]: %w", i, err)
			}
		}
		secrets = append(secrets, credentials.Secret{KID: s.KID, Key: key, Compat: s.Compat})
	}
	secrets, err := withSFU(cfg, secrets, generate, now)
	if err != nil {
		return nil, err
	}
	return credentials.NewKeyring(secrets, nil)
}
