package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
)

// secretsDir holds secrets icebox generated itself, inside state_dir.
const secretsDir = "secrets"

// buildKeyring turns the configured secrets into a keyring. A secret with
// neither `secret` nor `secret_file` is generated once into
// <state_dir>/secrets/<kid> (mode 0600) and reused after that.
//
// A managed keyring (all secrets generated) that was rotated is built from
// its rotation record instead, without the keys that have retired.
func buildKeyring(cfg config.Config) (*credentials.Keyring, error) {
	return keyringFor(cfg, true)
}

// readKeyring is buildKeyring for commands that must not create files (icebox
// creds, often run as another user than the service): a secret that was
// never generated is an error.
func readKeyring(cfg config.Config) (*credentials.Keyring, error) {
	return keyringFor(cfg, false)
}

func keyringFor(cfg config.Config, generate bool) (*credentials.Keyring, error) {
	if managedKeyring(cfg) {
		st, ok, err := loadKeyringState(cfg.StateDir)
		if err != nil {
			return nil, err
		}
		if ok {
			return managedKeyringFrom(cfg, liveKeys(cfg, st, time.Now()))
		}
	}
	secrets := make([]credentials.Secret, 0, len(cfg.Credentials.Secrets))
	for i, s := range cfg.Credentials.Secrets {
		key, err := s.Value()
		if err != nil {
			return nil, fmt.Errorf("credentials.secrets[%d]: %w", i, err)
		}
		if len(key) == 0 && !generate {
			if key, err = readSecretFile(filepath.Join(cfg.StateDir, secretsDir, s.KID)); err != nil {
				return nil, fmt.Errorf("credentials.secrets[%d]: %w (start icebox serve once to generate it, or name a secret in the config)", i, err)
			}
		}
		if len(key) == 0 {
			if key, err = generatedSecret(cfg.StateDir, s.KID); err != nil {
				return nil, fmt.Errorf("credentials.secrets[%d]: %w", i, err)
			}
		}
		secrets = append(secrets, credentials.Secret{KID: s.KID, Key: key, Compat: s.Compat})
	}
	return credentials.NewKeyring(secrets, nil)
}

// generatedSecret reads the generated secret for kid, creating it first if
// it does not exist. The file is written whole and synced before use, so a
// crash never leaves a truncated secret that would then be trusted.
func generatedSecret(stateDir, kid string) ([]byte, error) {
	dir := filepath.Join(stateDir, secretsDir)
	path := filepath.Join(dir, kid)
	key, err := readSecretFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	key = []byte(base64.RawURLEncoding.EncodeToString(raw))
	tmp, err := os.CreateTemp(dir, "."+kid+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("write secret: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	_, werr := tmp.Write(append(key, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("write secret %s: %w", path, err)
	}
	// Link, not rename: if another process generated it meanwhile, keep theirs.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecretFile(path)
		}
		return nil, fmt.Errorf("write secret %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		serr := d.Sync()
		if err := errors.Join(serr, d.Close()); err != nil {
			return nil, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return key, nil
}

func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %04o); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, fmt.Errorf("%s: secret shorter than 16 bytes", path)
	}
	return b, nil
}
