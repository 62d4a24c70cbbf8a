package node

import (
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/rtccall"
)

// gatewayUser is the TURN credentials' user of the gateway's legs: one
// per call (turn.quotas.per_user counts a user's allocations, and the
// gateway has one leg per bridged call).
const gatewayUser = "icebox-gateway:"

// buildRTCCalls builds the MatrixRTC gateway's call path (when
// matrixrtc.gateway resolves to on: config.GatewayEnabled). rooms are the
// memberships the bridge's sync keeps. The bridge and the
// calls service are bound to it once built (buildCalls).
func (n *Node) buildRTCCalls(rooms *membership.Rooms) (*rtccall.Manager, error) {
	cfg := n.cfg
	if rooms == nil {
		return nil, nil
	}
	var se *webrtc.SettingEngine
	if g := cfg.MatrixRTC.Gateway; g.UDPPortMin > 0 {
		se = &webrtc.SettingEngine{}
		if err := se.SetEphemeralUDPPortRange(uint16(g.UDPPortMin), uint16(g.UDPPortMax)); err != nil {
			return nil, ConfigError{fmt.Errorf("matrixrtc.gateway: %w", err)}
		}
	}
	return rtccall.New(rtccall.Config{
		Members:           rooms.Members,
		ServiceURL:        gatewayServiceURL(cfg),
		MembershipExpires: cfg.MatrixRTC.Gateway.MembershipExpires,
		ICEServers:        n.gatewayICEServers,
		Settings:          se,
		GatewayMetrics:    gateway.NewMetrics(n.opts.Registry),
		Registerer:        n.opts.Registry,
		Logger:            n.log,
		// Media keys (e2ee): n.rtcKeys is made with the bridge, after
		// this manager (buildCalls); a session is opened per call.
		E2EE: func(roomID string, self membership.Device) rtccall.E2EESession { return n.rtcKeys.Open(roomID, self) },
	})
}

// gatewayServiceURL is icebox's own MatrixRTC authorization service as
// members reach it: the focus icebox's memberships name.
func gatewayServiceURL(cfg config.Config) string {
	return strings.TrimSuffix(cfg.MatrixRTC.PublicURL, "/") + cfg.MatrixRTC.BasePath
}

// gatewayICEServers are a bridged call's leg's ICE servers: icebox's TURN
// URIs with credentials naming the call, so that they die with it (the
// relay closes the leg's allocation when the call ends) — the same the
// call's client gets. Relayed, the leg reaches the client's relay
// address: the relay's policy lets a relay reach another allocation's
// relay address, never the host's own addresses.
func (n *Node) gatewayICEServers(callID string) ([]webrtc.ICEServer, error) {
	ice := n.api.ICE() // as reloaded (turn URIs, credential TTL); the API is built before any call

	var out []webrtc.ICEServer
	if len(ice.STUN) > 0 {
		out = append(out, webrtc.ICEServer{URLs: ice.STUN})
	}
	if len(ice.TURN) > 0 {
		id := signaling.CredentialID(callID)
		cred, err := n.keys.Keyring().Mint(credentials.Subject{User: gatewayUser + id, CallID: id}, ice.TTL)
		if err != nil {
			return nil, fmt.Errorf("rtccall: TURN credentials: %w", err)
		}
		out = append(out, webrtc.ICEServer{URLs: ice.TURN, Username: cred.Username, Credential: cred.Password})
	}
	return out, nil
}

// logGatewayOff says why mode auto left the gateway off when it is the
// public URL that is missing (the other keys say by themselves that
// MatrixRTC is off).
func (n *Node) logGatewayOff() {
	cfg := n.cfg
	if cfg.MatrixRTC.Gateway.Mode == config.GatewayAuto && cfg.Matrix.Enabled && cfg.MatrixRTC.Enabled && cfg.MatrixRTC.PublicURL == "" {
		n.log.Info().Str("component", "rtccall").
			Msg("MatrixRTC gateway off: matrixrtc.public_url is not set (the focus icebox's call memberships name); calls in MatrixRTC conversations are refused")
	}
}
