package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

// TestNodeManagedRoomServiceBehindProxy: with matrixrtc.livekit.url set to
// the public wss:// address of a reverse proxy (which icebox itself cannot
// reach, as often in production: hairpin NAT, split DNS), /sfu/get tells
// clients that URL and creates the room at the managed livekit-server's
// own signal port: a JWT it issued joins that room there.
func TestNodeManagedRoomServiceBehindProxy(t *testing.T) {
	requireLiveKit(t)
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)

	cfg := managedConfig(t, filepath.Join(t.TempDir(), "state"))
	const public = "wss://livekit.icebox.invalid"
	cfg.MatrixRTC.LiveKit.URL = public
	cfg.MatrixRTC.FullAccessHomeservers = []string{hs.ServerName()}
	cfg.MatrixRTC.HomeserverURLs = map[string]string{hs.ServerName(): hs.URL()}
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
	poll(t, 30*time.Second, "/readyz 200 with livekit-server up", func() bool { return readyz(t, n) == http.StatusOK })

	const roomID = "!proxied:localhost"
	body, _ := json.Marshal(map[string]any{"room": roomID, "openid_token": openIDToken(t, hs.URL(), alice, aliceTok), "device_id": "ALICEDEV"})
	resp, err := http.Post("http://"+n.Addrs.HTTP+"/livekit/jwt/sfu/get", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ URL, JWT string }
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/sfu/get with a public wss:// url: %d %v", resp.StatusCode, err)
	}
	if got.URL != public {
		t.Errorf("url %q, want matrixrtc.livekit.url %q", got.URL, public)
	}
	// The room exists on the managed LiveKit (it creates none on join).
	join := joinLiveKit(t, "ws://127.0.0.1:"+itoa(cfg.MatrixRTC.LiveKit.Managed.Port), got.JWT)
	if want := authservice.RoomAlias(roomID, "m.call#ROOM"); join.GetRoom().GetName() != want {
		t.Errorf("joined room %q, want %q", join.GetRoom().GetName(), want)
	}
}
