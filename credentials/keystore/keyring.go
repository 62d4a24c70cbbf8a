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
func Build(cfg config.Config) (*credentials.Keyring, error) {
	return keyringFor(cfg, true)
}

// Read is Build for commands that must not create files (icebox creds,
// often run as another user than the service): a secret that was never
// generated is an error.
func Read(cfg config.Config) (*credentials.Keyring, error) {
	return keyringFor(cfg, false)
}

func keyringFor(cfg config.Config, generate bool) (*credentials.Keyring, error) {
	if managed(cfg) {
		st, ok, err := loadRotation(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		if ok {
			return managedKeyringFrom(cfg, liveKeys(cfg, st, time.Now()), generate)
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
	return credentials.NewKeyring(secrets, nil)
}
