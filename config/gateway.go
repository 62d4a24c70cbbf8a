package config

import "time"

// Gateway configures the MatrixRTC gateway's call path
// (matrixrtc.gateway): icebox's clients calling into a room's MatrixRTC
// session, and MatrixRTC rings reaching icebox's clients.
type Gateway struct {
	// Mode is "auto" (on when matrix.enabled with matrix.voip.enabled,
	// matrixrtc.enabled and matrixrtc.public_url is set), "on" (the same,
	// and the configuration is refused when one is missing) or "off"
	// (conversations resolving to MatrixRTC refuse calls with 409
	// matrixrtc_unsupported). Default: "auto"
	Mode string `yaml:"mode"`
	// UDPPortMin is the first UDP port of the gateway's WebRTC endpoints
	// towards icebox's clients (one per bridged call); it and
	// udp_port_max 0 = ephemeral ports. The range must not overlap
	// turn.relay.min_port..max_port. Default: 0
	UDPPortMin int `yaml:"udp_port_min"`
	// UDPPortMax is the last of those ports. Default: 0
	UDPPortMax int `yaml:"udp_port_max"`
	// MembershipExpires is the lifetime icebox's call memberships announce
	// (their expires, 5s..24h); a bridged call renews its membership when
	// three quarters of it passed. Default: 4h (Element Call's)
	MembershipExpires time.Duration `yaml:"membership_expires"`
}

// Gateway modes.
const (
	GatewayAuto = "auto"
	GatewayOn   = "on"
	GatewayOff  = "off"
)

func defaultGateway() Gateway { return Gateway{Mode: GatewayAuto, MembershipExpires: 4 * time.Hour} }

// Bounds of matrixrtc.gateway.membership_expires.
const (
	minMembershipExpires = 5 * time.Second
	maxMembershipExpires = 24 * time.Hour
)

// GatewayEnabled reports whether the gateway's call path runs: mode on,
// or auto with what it needs configured.
func (c Config) GatewayEnabled() bool {
	switch c.MatrixRTC.Gateway.Mode {
	case GatewayOn:
		return true
	case GatewayAuto:
		return c.gatewayMissing() == ""
	}
	return false
}

// gatewayMissing names what the gateway needs and lacks; "" if nothing.
func (c Config) gatewayMissing() string {
	switch {
	case !c.Matrix.Enabled || !c.Matrix.VoIP.Enabled:
		return "matrix.enabled and matrix.voip.enabled (icebox's device joins the rooms' calls)"
	case !c.MatrixRTC.Enabled:
		return "matrixrtc.enabled (the LiveKit server and the authorization service the calls' members use)"
	case c.MatrixRTC.PublicURL == "":
		return "matrixrtc.public_url (the focus icebox's call memberships name, where members get their LiveKit token)"
	}
	return ""
}

func (v *validator) gateway(c *Config) {
	g := c.MatrixRTC.Gateway
	switch g.Mode {
	case GatewayAuto, GatewayOff:
	case GatewayOn:
		if missing := c.gatewayMissing(); missing != "" {
			v.add("matrixrtc.gateway.mode", "on needs %s (or set mode: auto)", missing)
		}
	default:
		v.add("matrixrtc.gateway.mode", "%q is not one of auto, on, off", g.Mode)
	}
	if g.MembershipExpires < minMembershipExpires || g.MembershipExpires > maxMembershipExpires {
		v.add("matrixrtc.gateway.membership_expires", "must be between %s and %s (got %s)", minMembershipExpires, maxMembershipExpires, g.MembershipExpires)
	}
	switch {
	case g.UDPPortMin == 0 && g.UDPPortMax == 0:
	case g.UDPPortMin < 1024 || g.UDPPortMax > 65535 || g.UDPPortMin > g.UDPPortMax:
		v.add("matrixrtc.gateway.udp_port_min", "udp_port_min..udp_port_max must be a range within 1024..65535 (got %d..%d; 0 and 0 = ephemeral)", g.UDPPortMin, g.UDPPortMax)
	case g.UDPPortMin <= c.TURN.Relay.MaxPort && c.TURN.Relay.MinPort <= g.UDPPortMax:
		v.add("matrixrtc.gateway.udp_port_min", "udp_port_min..udp_port_max (%d..%d) overlaps turn.relay.min_port..max_port (%d..%d)", g.UDPPortMin, g.UDPPortMax, c.TURN.Relay.MinPort, c.TURN.Relay.MaxPort)
	}
}
