package node

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
)

// TestLiveKitTURNServers: the managed LiveKit's rtc.turn_servers are
// icebox's listeners at the host /calls/ice_servers advertises, TLS only
// with ice_servers.hostname (the certificate's name), IPv6 in brackets,
// the SFU secret file and ttl in seconds; none when the feature is off.
func TestLiveKitTURNServers(t *testing.T) {
	cfg := config.Default()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	n := &Node{cfg: cfg, addrs: Addrs{
		TURNUDP: []string{"0.0.0.0:3478", "[::]:3478"}, TURNTCP: []string{"0.0.0.0:3478"}, TURNTLS: []string{"0.0.0.0:443"},
	}, plan: relayplan.Plan{Adv4: netip.MustParseAddr("192.0.2.10")}}
	if got, err := n.liveKitTURNServers(); got != nil || err != nil {
		t.Fatalf("off: %v, %v", got, err)
	}
	n.cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	n.cfg.MatrixRTC.LiveKit.TURN.TTL = 90 * time.Minute
	secret := keystore.SFUSecretPath(cfg.StateDir)
	for _, tc := range []struct {
		name, hostname, publicIP string
		want                     []string
	}{
		{"relay address, no tls", "", "", []string{"udp 192.0.2.10:3478", "tcp 192.0.2.10:3478"}},
		{"public_ip, no tls", "", "203.0.113.5", []string{"udp 203.0.113.5:3478", "tcp 203.0.113.5:3478"}},
		{"ipv6 public_ip", "", "2001:db8::5", []string{"udp [2001:db8::5]:3478", "tcp [2001:db8::5]:3478"}},
		{"hostname: tls too", "turn.example.org", "203.0.113.5", []string{"udp turn.example.org:3478", "tcp turn.example.org:3478", "tls turn.example.org:443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n.cfg.ICEServers.Hostname, n.cfg.TURN.Relay.PublicIP = tc.hostname, tc.publicIP
			got, err := n.liveKitTURNServers()
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("%v, %v; want %v", got, err, tc.want)
			}
			for i, s := range got {
				if e := fmt.Sprintf("%s %s:%d", s.Protocol, s.Host, s.Port); e != tc.want[i] || s.SecretFile != secret || s.TTL != 5400 {
					t.Errorf("[%d] = %+v, want %s with %s, ttl 5400", i, s, tc.want[i], secret)
				}
			}
		})
	}
}
