package node

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// matrixDir is where the bridge keeps its device: the session of a
// password login, the end-to-end encryption store and keys.
func matrixDir(stateDir string) string { return filepath.Join(stateDir, "matrix") }

// newBridge builds the Matrix VoIP bridge, or returns nil when Matrix (or
// VoIP over it) is off: icebox then works exactly as without it. The
// bridge always speaks end-to-end encryption; matrix.require_encryption
// decides whether it also sends into rooms that are not encrypted.
//
// rtc receives the MatrixRTC call memberships the bridge's sync reads, for
// matrix.call_protocol "auto" (signaling.ServiceConfig.RTCRooms); nil when
// Matrix is off.
//
// gw, when its newCalls is set, is the gateway's call path (rtccall): it
// receives the rooms' MatrixRTC events and is made before the bridge, from
// rtc, by newCalls.
func newBridge(cfg config.Matrix, stateDir string, st matrix.Store, pub signaling.Publisher, reg prometheus.Registerer, log zerolog.Logger,
	gw bridgeRTC,
) (b *matrix.Bridge, rtc *membership.Rooms, err error) {
	if !cfg.Enabled || !cfg.VoIP.Enabled {
		return nil, nil, nil
	}
	token, err := cfg.Token()
	var password string
	if errors.Is(err, config.ErrMatrixPasswordLogin) {
		password, err = cfg.LoginPassword()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("matrix: %w", err)
	}
	rtc = membership.NewRooms(0, 0, nil) // the default bounds; the bridge sets its loader
	var calls matrix.RTCObserver
	if gw.newCalls != nil {
		if calls, err = gw.newCalls(rtc); err != nil {
			return nil, nil, err
		}
	}
	b, err = matrix.New(matrix.Config{
		HomeserverURL: cfg.HomeserverURL,
		UserID:        cfg.ServiceUser,
		AccessToken:   token,
		Password:      password,
		DeviceID:      cfg.DeviceID,
		Store:         st,
		Publisher:     pub,
		Logger:        log,
		Registerer:    reg,
		Encryption:    bridgeEncryption(matrixDir(stateDir), cfg.RequireEncryption, st), // bridgelease.go
		RTCRooms:      rtc,
		RTCCalls:      calls,
		// A member's focus URL is room state any member writes, and the
		// token request carries icebox's OpenID token: kept off this host
		// and the relay's deny-list, but for icebox's own service.
		RTCFocusAllowAddr: gw.allowAddr,
		RTCFocusTrusted:   gw.trusted,
	})
	if err != nil {
		return nil, nil, err
	}
	return b, rtc, nil
}

// bridgeRTC is what the bridge needs of the gateway's call path.
type bridgeRTC struct {
	newCalls  func(*membership.Rooms) (matrix.RTCObserver, error) // nil: the gateway is off
	allowAddr func(netip.Addr) bool                               // where a member's focus may be
	trusted   []string                                            // icebox's own focus
}
