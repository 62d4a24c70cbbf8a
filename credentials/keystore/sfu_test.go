package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
)

func sfuCfg(t *testing.T) config.Config {
	t.Helper()
	cfg := managedCfg(t)
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{"198.51.100.7:50000-60000"}
	return cfg
}

// livekitUsername is a username as livekit-server mints it.
func livekitUsername(expiry time.Time) string {
	return fmt.Sprintf("%d:PA_%s", expiry.Unix(), "aBcDeFgHiJkL")
}

// readLiveKitSecret reads SFUSecretPath as livekit-server v1.13.5 does
// (config.LoadTURNSecrets): refused if others may read it, whitespace
// trimmed.
func readLiveKitSecret(t *testing.T, path string) []byte {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o007 != 0 {
		t.Fatalf("%s is mode %04o; livekit-server refuses a TURN secret file others may read", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// TestSFUSecretGenerated: with matrixrtc.livekit.turn on, Build generates
// the SFU TURN secret (0600) and puts it in the keyring as an SFU secret;
// the file livekit-server reads holds it, and what LiveKit signs with it
// verifies. Read (icebox creds) writes nothing for it; off, nothing exists.
func TestSFUSecretGenerated(t *testing.T) {
	off := managedCfg(t)
	if kr, err := Build(off); err != nil || len(kr.SFUKIDs()) != 0 {
		t.Fatalf("feature off: %v, %v", kr.SFUKIDs(), err)
	}
	if _, err := os.Stat(SFUSecretPath(off.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("feature off, yet %s: %v", SFUSecretPath(off.StateDir), err)
	}

	cfg := sfuCfg(t)
	if _, err := Build(config.Config{StateDir: cfg.StateDir, Credentials: cfg.Credentials}); err != nil {
		t.Fatal(err)
	}
	if kr, err := Read(cfg); err != nil || len(kr.SFUKIDs()) != 0 {
		t.Fatalf("Read: %v, %v; want no SFU secret and no error", kr, err)
	}
	kr, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := kr.SFUKIDs(); len(got) != 1 || got[0] != "sfu1" {
		t.Fatalf("SFUKIDs = %v, want [sfu1]", got)
	}
	secret := readLiveKitSecret(t, SFUSecretPath(cfg.StateDir))
	user := livekitUsername(time.Now().Add(4 * time.Hour))
	c, err := kr.Verify(user, credentials.Password(secret, user))
	if err != nil || !c.SFU {
		t.Fatalf("a credential signed with %s: %+v, %v", SFUSecretPath(cfg.StateDir), c, err)
	}
	if again, err := Build(cfg); err != nil || again.SFUKIDs()[0] != "sfu1" || !bytes.Equal(readLiveKitSecret(t, SFUSecretPath(cfg.StateDir)), secret) {
		t.Fatalf("a second Build changed the SFU secret: %v", err)
	}
	t.Logf("SFU TURN secret at %s (%d bytes, 0600), kid sfu1", SFUSecretPath(cfg.StateDir), len(secret))
}

// TestSFUSecretRotation: RotateSFU makes a new SFU secret current, writes
// it for livekit-server and calls the restart hook; credentials of the old
// secret keep verifying until matrixrtc.livekit.turn.ttl +
// max_allocation_duration, when Retire drops it. The main keyring is not
// touched; a lost sfu.json is lost state.
func TestSFUSecretRotation(t *testing.T) {
	cfg := sfuCfg(t)
	now := time.Now().UTC()
	m, err := NewManager(cfg, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	oldSecret := readLiveKitSecret(t, SFUSecretPath(cfg.StateDir))
	var hooked []string
	m.OnSFURotated(func(kid string) { hooked = append(hooked, kid) })
	info, err := m.RotateSFU()
	if err != nil {
		t.Fatal(err)
	}
	retire := now.Add(cfg.MatrixRTC.LiveKit.TURN.TTL + cfg.TURN.MaxAllocationDuration).Truncate(time.Second)
	if info.CurrentKID != "sfu2" || len(info.Keys) != 2 || info.Keys[1].RetireAt == nil || !info.Keys[1].RetireAt.Equal(retire) {
		t.Fatalf("after RotateSFU: %+v, want sfu2 current and sfu1 retiring at %s", info, retire)
	}
	if len(hooked) != 1 || hooked[0] != "sfu2" {
		t.Errorf("restart hook calls: %v, want [sfu2]", hooked)
	}
	newSecret := readLiveKitSecret(t, SFUSecretPath(cfg.StateDir))
	if bytes.Equal(newSecret, oldSecret) {
		t.Fatal("SFUSecretPath still holds the old secret")
	}
	kr := m.Keyring()
	if got := kr.SFUKIDs(); len(got) != 2 || got[0] != "sfu2" || got[1] != "sfu1" {
		t.Fatalf("live SFUKIDs = %v", got)
	}
	if kr.ActiveKID() != "k1" || len(kr.KIDs()) != 1 {
		t.Errorf("the main keyring changed: %v", kr.KIDs())
	}
	oldUser := livekitUsername(now.Add(time.Hour))
	if _, pw, _ := kr.LookupSFU(oldUser, "sfu1"); pw != credentials.Password(oldSecret, oldUser) {
		t.Error("the old SFU secret is not accepted during its grace period")
	}
	if _, pw, _ := kr.Lookup(oldUser); pw != credentials.Password(newSecret, oldUser) {
		t.Error("the current SFU secret is not the new one")
	}
	if rebuilt, err := Build(cfg); err != nil || len(rebuilt.SFUKIDs()) != 2 {
		t.Fatalf("rebuilt after a restart: %v, %v", rebuilt.SFUKIDs(), err)
	}
	if retired, err := m.Retire(); err != nil || len(retired) != 0 {
		t.Fatalf("Retire before the time: %v, %v", retired, err)
	}
	now = retire
	retired, err := m.Retire()
	if err != nil || len(retired) != 1 || retired[0] != "sfu1" {
		t.Fatalf("Retire at the time: %v, %v, want [sfu1]", retired, err)
	}
	if got := m.Keyring().SFUKIDs(); len(got) != 1 || got[0] != "sfu2" {
		t.Errorf("after retirement: %v", got)
	}
	t.Logf("rotated sfu1 -> sfu2; sfu1 accepted until %s (ttl %s + max_allocation_duration %s), then retired",
		retire.Format(time.RFC3339), cfg.MatrixRTC.LiveKit.TURN.TTL, cfg.TURN.MaxAllocationDuration)

	if err := os.Remove(SFURecordPath(cfg.StateDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(cfg); !errors.As(err, new(StateError)) {
		t.Errorf("Build with sfu.json gone after a rotation: %v, want a StateError", err)
	}
	rec, _, err := LoadRecord(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckRotation(cfg.StateDir, rec); !errors.As(err, new(StateError)) {
		t.Errorf("CheckRotation with sfu.json gone: %v, want a StateError", err)
	}

	off := managedCfg(t)
	mo, err := NewManager(off, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mo.RotateSFU(); !errors.Is(err, ErrSFUDisabled) {
		t.Errorf("RotateSFU with the feature off: %v", err)
	}
}
