package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestExposedSecretIsNotLostState: a generated secret others may read is
// refused with the chmod advice, not as lost state (no --init-state hint),
// and --init-state keeps it instead of replacing a good secret.
func TestExposedSecretIsNotLostState(t *testing.T) {
	cfg := managedCfg(t)
	if _, err := Build(cfg); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(SecretsPath(cfg.StateDir), "k1")
	before, err := os.ReadFile(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Build(cfg)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") || errors.As(err, new(StateError)) {
		t.Fatalf("Build with a 0644 secret: %v; want the chmod advice, not a StateError", err)
	}
	if err := Reset(cfg.StateDir, ".replaced", zerolog.Nop()); err == nil {
		t.Fatal("Reset went on past an exposed secret")
	}
	if after, err := os.ReadFile(secret); err != nil || string(after) != string(before) {
		t.Fatalf("the secret was replaced or moved: %v", err)
	}
}

// TestDamagedKeyringRecord: a keyring.json that names no key is lost state
// (exit 1 with the hint), and --init-state moves it aside.
func TestDamagedKeyringRecord(t *testing.T) {
	cfg := managedCfg(t)
	m, err := NewManager(cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(KeyringRecordPath(cfg.StateDir), []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Build(cfg)
	if !errors.As(err, new(StateError)) || !strings.Contains(err.Error(), "names no key") || !strings.Contains(err.Error(), "--init-state") {
		t.Fatalf("Build with an empty keyring record: %v", err)
	}
	if err := Reset(cfg.StateDir, ".replaced", zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(KeyringRecordPath(cfg.StateDir) + ".replaced"); err != nil {
		t.Fatalf("damaged keyring record not moved aside: %v", err)
	}
	if _, err := Build(cfg); err != nil {
		t.Fatalf("Build after --init-state: %v", err)
	}
}
