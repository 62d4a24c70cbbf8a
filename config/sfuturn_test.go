package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestLiveKitTURNValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		turn LiveKitTURN
		want string // "" = valid
	}{
		{"off needs nothing", defaultLiveKitTURN(), ""},
		{"good", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7:50000-60000", "198.51.100.7:7881", "[2001:db8::7]:7882", "198.51.100.0/28:3478"}, TTL: 4 * time.Hour}, ""},
		{"no peers", LiveKitTURN{Enabled: true, TTL: time.Hour}, "matrixrtc.livekit.turn.peers: required when matrixrtc.livekit.turn.enabled"},
		{"no port", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7"}, TTL: time.Hour}, `matrixrtc.livekit.turn.peers[0]: "198.51.100.7" has no port`},
		{"ipv6 unbracketed", LiveKitTURN{Enabled: true, Peers: []string{"2001:db8::7:7881"}, TTL: time.Hour}, "put an IPv6 address in brackets"},
		{"reversed ports", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7:60000-50000"}, TTL: time.Hour}, "ports must be N or N-M"},
		{"port zero", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7:0"}, TTL: time.Hour}, "ports must be N or N-M"},
		{"too wide", LiveKitTURN{Enabled: true, Peers: []string{"198.0.0.0/8:1-65535"}, TTL: time.Hour}, "prefix wider than /16"},
		{"everything", LiveKitTURN{Enabled: true, Peers: []string{"0.0.0.0/0:1-65535"}, TTL: time.Hour}, "the unspecified address is no SFU"},
		{"host bits", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7/24:7881"}, TTL: time.Hour}, "has host bits set"},
		{"multicast", LiveKitTURN{Enabled: true, Peers: []string{"224.0.0.1:7881"}, TTL: time.Hour}, "multicast"},
		{"ttl", LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7:7881"}, TTL: 48 * time.Hour}, "matrixrtc.livekit.turn.ttl: must be between 1m and 24h (got 48h0m0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.MatrixRTC.LiveKit.TURN = tc.turn
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
	c := Default()
	c.MatrixRTC.LiveKit.TURN = LiveKitTURN{Enabled: true, Peers: []string{"198.51.100.7:7881"}, TTL: time.Hour}
	c.Credentials.Secrets[0].KID = "sfu1"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `credentials.secrets[0].kid: "sfu1" is reserved for the SFU TURN secrets`) {
		t.Errorf("a credentials kid sfu1 with the SFU TURN on: %v", err)
	}
	// In mode managed the managed LiveKit's peers are icebox's own: none
	// need be listed.
	c = Default()
	c.MatrixRTC.Enabled, c.MatrixRTC.LiveKit.Mode = true, LiveKitModeManaged
	c.MatrixRTC.LiveKit.TURN = LiveKitTURN{Enabled: true, TTL: time.Hour}
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "matrixrtc.livekit.turn.peers") {
		t.Errorf("managed mode without peers: %v", err)
	}
	ranges, err := LiveKitTURN{Peers: []string{"198.51.100.7:50000-60000", "[2001:db8::7]:7882"}}.PeerRanges()
	if err != nil {
		t.Fatal(err)
	}
	want := []PeerRange{
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), MinPort: 50000, MaxPort: 60000},
		{Prefix: netip.MustParsePrefix("2001:db8::7/128"), MinPort: 7882, MaxPort: 7882},
	}
	if len(ranges) != 2 || ranges[0] != want[0] || ranges[1] != want[1] {
		t.Errorf("PeerRanges = %v, want %v", ranges, want)
	}
}
