package node

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/turnserver"
)

// TestKeyringRotateRotatesSFUSecret: `icebox keyring rotate` (the admin
// API's Rotate) rotates the SFU TURN secret with the keyring and calls the
// restart hook; with configured (unmanaged) secrets only the SFU secret
// rotates and the answer says so.
func TestKeyringRotateRotatesSFUSecret(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{"198.51.100.7:50000-60000"}
	keys, err := keystore.NewManager(cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var restarts []string
	keys.OnSFURotated(func(kid string) { restarts = append(restarts, kid) })
	info, err := keyringAdmin{keys: keys}.Rotate(false)
	if err != nil {
		t.Fatal(err)
	}
	if info.ActiveKID != "k2" || len(restarts) != 1 || restarts[0] != "sfu2" || keys.Keyring().SFUKIDs()[0] != "sfu2" {
		t.Fatalf("after Rotate: active %s, SFU %v, restarts %v", info.ActiveKID, keys.Keyring().SFUKIDs(), restarts)
	}

	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Secret: "configured-secret-0123456789", Compat: true}}
	keys, err = keystore.NewManager(cfg, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	info, err = keyringAdmin{keys: keys}.Rotate(false)
	if err != nil || keys.Keyring().SFUKIDs()[0] != "sfu2" || info.ActiveKID != "k1" ||
		info.Rotation == nil || info.Rotation.Keyring || !info.Rotation.SFU || info.Rotation.KeyringNotRotated == "" {
		t.Fatalf("unmanaged keyring: %+v (rotation %+v), %v, SFU %v; want a success saying the SFU secret rotated and the keyring not", info, info.Rotation, err, keys.Keyring().SFUKIDs())
	}
	t.Logf("unmanaged keyring: %+v", *info.Rotation)

	// Nothing rotated at all: 409 as before.
	cfg.MatrixRTC.LiveKit.TURN.Enabled = false
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	if keys, err = keystore.NewManager(cfg, time.Now); err != nil {
		t.Fatal(err)
	}
	if _, err = (keyringAdmin{keys: keys}).Rotate(false); !errors.Is(err, httpapi.ErrKeyringNotManaged) {
		t.Fatalf("unmanaged keyring, no SFU: %v; want ErrKeyringNotManaged", err)
	}
}

func TestSFUPeers(t *testing.T) {
	cfg := config.Default()
	if got, err := sfuPeers(cfg, nil); err != nil || got != nil {
		t.Fatalf("off: %v, %v", got, err)
	}
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{"198.51.100.7:50000-60000"}
	managed := turnserver.PeerRange{Prefix: netip.MustParsePrefix("203.0.113.9/32"), MinPort: 7881, MaxPort: 7881}
	got, err := sfuPeers(cfg, []turnserver.PeerRange{managed})
	want := []turnserver.PeerRange{{Prefix: netip.MustParsePrefix("198.51.100.7/32"), MinPort: 50000, MaxPort: 60000}, managed}
	if err != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("sfuPeers = %v, %v; want %v", got, err, want)
	}
}

// TestManagedSFUPeers: in managed mode the relay's SFU allow-list is the
// managed LiveKit's node IP on its rtc_udp_ports and rtc_tcp_port, plus
// the peers listed; in mode external only the listed ones.
func TestManagedSFUPeers(t *testing.T) {
	cfg := config.Default()
	cfg.MatrixRTC.Enabled = true
	cfg.MatrixRTC.LiveKit.Mode = config.LiveKitModeManaged
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{"198.51.100.7:50000-60000"}
	cfg.MatrixRTC.LiveKit.Managed.NodeIP = "203.0.113.9"
	got, err := relaySFUPeers(cfg)
	want := []string{"198.51.100.7/32:50000-60000", "203.0.113.9/32:47000-48999", "203.0.113.9/32:7881"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("managed: %v, %v; want %v", got, err, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("managed [%d] = %s, want %s", i, got[i], want[i])
		}
	}
	cfg.MatrixRTC.LiveKit.Managed.RTCTCPPort = 0
	if got, _ := relaySFUPeers(cfg); len(got) != 2 {
		t.Errorf("rtc_tcp_port 0: %v, want no TCP port entry", got)
	}
	// No node IP: this host's non-loopback addresses.
	cfg.MatrixRTC.LiveKit.Managed.NodeIP, cfg.TURN.Relay.PublicIP = "", ""
	got, err = relaySFUPeers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got[1:] {
		if r.Prefix.Addr().IsLoopback() || r.MinPort != 47000 {
			t.Errorf("no node IP: %s", r)
		}
	}
	t.Logf("no node IP: %v", got)
	cfg.MatrixRTC.LiveKit.Mode = config.LiveKitModeExternal
	if got, _ := relaySFUPeers(cfg); len(got) != 1 {
		t.Errorf("external: %v, want the listed peer only", got)
	}
}
