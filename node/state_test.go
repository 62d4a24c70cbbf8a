package node

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/store"
)

func stateCfg(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	return cfg
}

// startState is serve's start-up of the state directory: open the state
// file, then build the keyring.
func startState(t *testing.T, cfg config.Config, initState bool) error {
	t.Helper()
	st, err := openState(cfg, initState, zerolog.Nop())
	if err != nil {
		return err
	}
	defer st.Close()
	_, err = keystore.Build(cfg)
	return err
}

func TestStateDirFirstStartAndUpgrade(t *testing.T) {
	cfg := stateCfg(t)
	if err := startState(t, cfg, false); err != nil {
		t.Fatalf("first start on an empty state_dir: %v", err)
	}
	rec, ok, err := keystore.LoadRecord(cfg.StateDir)
	if err != nil || !ok || rec.StoreInstance == "" || len(rec.Secrets) != 1 || rec.Secrets["k1"] == "" {
		t.Fatalf("record after the first start: %+v, %v, %v", rec, ok, err)
	}

	// An icebox from before the record: state file and secret, no record.
	// The next start adopts them.
	if err := os.Remove(keystore.RecordPath(cfg.StateDir)); err != nil {
		t.Fatal(err)
	}
	if err := startState(t, cfg, false); err != nil {
		t.Fatalf("start on a state_dir without a record: %v", err)
	}
	again, ok, err := keystore.LoadRecord(cfg.StateDir)
	if err != nil || !ok || again.StoreInstance != rec.StoreInstance || again.Secrets["k1"] != rec.Secrets["k1"] {
		t.Fatalf("adopted record %+v, want %+v (%v)", again, rec, err)
	}
}

// TestStateDirEvidenceWithoutRecord: a state_dir from before the record
// whose state file was lost still refuses: its generated secret is evidence.
func TestStateDirEvidenceWithoutRecord(t *testing.T) {
	cfg := stateCfg(t)
	if err := startState(t, cfg, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{keystore.RecordPath(cfg.StateDir), filepath.Join(cfg.StateDir, store.FileName)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	err := startState(t, cfg, false)
	var se keystore.StateError
	if !errors.As(err, &se) || !errors.Is(err, store.ErrMissing) {
		t.Fatalf("got %v, want a keystore.StateError with ErrMissing", err)
	}
	if err := startState(t, cfg, true); err != nil {
		t.Fatalf("--init-state: %v", err)
	}
}

// TestStateDirCredsWritesNothing: keystore.Read (icebox creds) verifies but
// never writes the record.
func TestStateDirCredsWritesNothing(t *testing.T) {
	cfg := stateCfg(t)
	if err := startState(t, cfg, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keystore.RecordPath(cfg.StateDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Read(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(keystore.RecordPath(cfg.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("keystore.Read wrote the state record: %v", err)
	}
	// A recorded secret that changed is refused by keystore.Read too.
	if err := startState(t, cfg, false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keystore.SecretsPath(cfg.StateDir), "k1"), []byte("another-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var se keystore.StateError
	if _, err := keystore.Read(cfg); !errors.As(err, &se) {
		t.Errorf("keystore.Read with a changed secret: got %v, want a keystore.StateError", err)
	}
}
