package node

import (
	"net/netip"
	"testing"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/turnserver"
)

// TestHomeserverAddrPolicy: where the MatrixRTC service may dial a
// homeserver named by a request — never loopback (not even with the
// test-only loopback switch), metadata, private ranges or an address of
// this host; a public address is fine.
func TestHomeserverAddrPolicy(t *testing.T) {
	cfg := config.Default()
	cfg.TURN.AllowLoopbackPeers = true
	n := &Node{cfg: cfg}
	allow, err := n.homeserverAddrPolicy()
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{"127.0.0.1", "127.0.0.2", "::1", "169.254.169.254", "10.1.2.3", "::ffff:127.0.0.1", "0.0.0.0"}
	host, err := turnserver.ListHostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range host {
		denied = append(denied, a.String())
	}
	for _, s := range denied {
		if allow(netip.MustParseAddr(s)) {
			t.Errorf("%s allowed, want refused", s)
		}
	}
	if !allow(netip.MustParseAddr("8.8.8.8")) {
		t.Error("a public address refused")
	}
}
