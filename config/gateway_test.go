package config

import (
	"strings"
	"testing"
	"time"
)

// TestGatewayConfig: matrixrtc.gateway's mode resolves auto by what is
// configured and refuses on without it; the UDP range is checked.
func TestGatewayConfig(t *testing.T) {
	full := func() Config {
		c := Default()
		c.Matrix.Enabled = true
		c.MatrixRTC.Enabled = true
		c.MatrixRTC.PublicURL = "https://icebox.example.org"
		return c
	}
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		enabled bool
		want    string // an error of v.gateway; "" = none
	}{
		{"default is auto, off without matrix", func(c *Config) { *c = Default() }, false, ""},
		{"auto with everything", func(*Config) {}, true, ""},
		{"auto without public_url", func(c *Config) { c.MatrixRTC.PublicURL = "" }, false, ""},
		{"auto without voip", func(c *Config) { c.Matrix.VoIP.Enabled = false }, false, ""},
		{"off", func(c *Config) { c.MatrixRTC.Gateway.Mode = GatewayOff }, false, ""},
		{"on", func(c *Config) { c.MatrixRTC.Gateway.Mode = GatewayOn }, true, ""},
		{"on without matrixrtc", func(c *Config) { c.MatrixRTC.Gateway.Mode, c.MatrixRTC.Enabled = GatewayOn, false }, true,
			"matrixrtc.gateway.mode: on needs matrixrtc.enabled"},
		{"on without public_url", func(c *Config) { c.MatrixRTC.Gateway.Mode, c.MatrixRTC.PublicURL = GatewayOn, "" }, true,
			"matrixrtc.gateway.mode: on needs matrixrtc.public_url"},
		{"unknown mode", func(c *Config) { c.MatrixRTC.Gateway.Mode = "yes" }, false, `matrixrtc.gateway.mode: "yes" is not one of auto, on, off`},
		{"ports", func(c *Config) { c.MatrixRTC.Gateway.UDPPortMin, c.MatrixRTC.Gateway.UDPPortMax = 30000, 30100 }, true, ""},
		{"one port", func(c *Config) { c.MatrixRTC.Gateway.UDPPortMin, c.MatrixRTC.Gateway.UDPPortMax = 30000, 30000 }, true, ""},
		{"reversed ports", func(c *Config) { c.MatrixRTC.Gateway.UDPPortMin, c.MatrixRTC.Gateway.UDPPortMax = 30100, 30000 }, true,
			"matrixrtc.gateway.udp_port_min: udp_port_min..udp_port_max must be a range within 1024..65535"},
		{"only min", func(c *Config) { c.MatrixRTC.Gateway.UDPPortMin = 30000 }, true,
			"matrixrtc.gateway.udp_port_min: udp_port_min..udp_port_max must be a range"},
		{"short membership", func(c *Config) { c.MatrixRTC.Gateway.MembershipExpires = time.Second }, true,
			"matrixrtc.gateway.membership_expires: must be between 5s and 24h0m0s (got 1s)"},
		{"overlaps the relay", func(c *Config) { c.MatrixRTC.Gateway.UDPPortMin, c.MatrixRTC.Gateway.UDPPortMax = 49000, 50000 }, true,
			"matrixrtc.gateway.udp_port_min: udp_port_min..udp_port_max (49000..50000) overlaps turn.relay.min_port..max_port (49152..65535)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := full()
			tc.edit(&c)
			if got := c.GatewayEnabled(); got != tc.enabled {
				t.Errorf("GatewayEnabled = %v, want %v", got, tc.enabled)
			}
			v := &validator{}
			v.gateway(&c)
			var got string
			if len(v.errs) > 0 {
				got = v.errs[0].Error()
			}
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("errors %v, want %q", v.errs, tc.want)
			}
		})
	}
}
