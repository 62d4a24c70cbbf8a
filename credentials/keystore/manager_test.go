package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/config"
)

func managedCfg(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default() // one generated compat secret, k1
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	return cfg
}

// TestManagerRotateRetire: a rotation signs with a new generated secret and
// keeps the old compat one; a rotation with compat retires the others after
// credentials.ttl + max_allocation_duration, when Retire drops them; the
// record survives a rebuild (a restart).
func TestManagerRotateRetire(t *testing.T) {
	cfg := managedCfg(t)
	now := time.Now().UTC() // Build judges retirement by the real clock
	m, err := NewManager(cfg, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Keyring().ActiveKID(); got != "k1" {
		t.Fatalf("active kid = %s, want k1", got)
	}
	info, err := m.Rotate(false)
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveKID != "k2" || len(info.Keys) != 2 || !info.Keys[1].Compat || info.Keys[1].RetireAt != nil {
		t.Fatalf("after Rotate(false): %+v", info)
	}
	if got := m.Keyring().ActiveKID(); got != "k2" {
		t.Fatalf("live keyring signs with %s, want k2", got)
	}
	if info, err = m.Rotate(true); err != nil {
		t.Fatal(err)
	}
	retire := now.Add(cfg.Credentials.TTL + cfg.TURN.MaxAllocationDuration).Truncate(time.Second)
	if info.ActiveKID != "k3" || !info.Keys[0].Compat || info.Keys[1].RetireAt == nil || !info.Keys[1].RetireAt.Equal(retire) {
		t.Fatalf("after Rotate(true): %+v, want k3 compat and k2 retiring at %s", info, retire)
	}
	if kr, err := Build(cfg); err != nil || kr.ActiveKID() != "k3" || len(kr.KIDs()) != 3 {
		t.Fatalf("rebuilt from the record: %v, %v", kr.KIDs(), err)
	}
	if retired, err := m.Retire(); err != nil || len(retired) != 0 {
		t.Fatalf("Retire before the time: %v, %v", retired, err)
	}
	now = retire
	retired, err := m.Retire()
	if err != nil || len(retired) != 2 {
		t.Fatalf("Retire at the time: %v, %v, want k2 and k1", retired, err)
	}
	if kids := m.Keyring().KIDs(); len(kids) != 1 || kids[0] != "k3" {
		t.Errorf("live kids after retirement: %v", kids)
	}
}

// TestManagerNotManaged: a keyring with configured secrets is not rotated.
func TestManagerNotManaged(t *testing.T) {
	cfg := managedCfg(t)
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Secret: "configured-secret-0123456789", Compat: true}}
	m, err := NewManager(cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Rotate(false); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("Rotate: %v, want ErrNotManaged", err)
	}
	if info := m.Info(); info.ActiveKID != "k1" || len(info.Keys) != 1 || !info.Keys[0].Compat {
		t.Errorf("Info: %+v", info)
	}
}

// TestReloadKeepsKeyringOnError: a reload that fails leaves the live
// keyring and configuration as they were.
func TestReloadKeepsKeyringOnError(t *testing.T) {
	cfg := managedCfg(t)
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Secret: "configured-secret-0123456789", Compat: true}}
	m, err := NewManager(cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.Credentials.Secrets = []config.Secret{{KID: "k2", SecretFile: filepath.Join(t.TempDir(), "missing")}}
	if _, err := m.Reload(bad); err == nil {
		t.Fatal("Reload with a missing secret file: want an error")
	}
	if got := m.Keyring().ActiveKID(); got != "k1" {
		t.Errorf("after a failed reload the keyring signs with %s, want k1", got)
	}
	good := cfg
	good.Credentials.Secrets = []config.Secret{{KID: "k2", Secret: "another-secret-0123456789"}, cfg.Credentials.Secrets[0]}
	if kr, err := m.Reload(good); err != nil || kr.ActiveKID() != "k2" || m.Keyring().ActiveKID() != "k2" {
		t.Errorf("Reload: %v", err)
	}
}

// TestReadWritesNothing: Read (icebox creds) never generates a secret nor
// writes the record.
func TestReadWritesNothing(t *testing.T) {
	cfg := managedCfg(t)
	if _, err := Read(cfg); err == nil {
		t.Fatal("Read before any secret was generated: want an error")
	}
	if _, err := os.Stat(cfg.StateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read created %s: %v", cfg.StateDir, err)
	}
	if _, err := Build(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(cfg); err != nil {
		t.Errorf("Read after Build: %v", err)
	}
}
