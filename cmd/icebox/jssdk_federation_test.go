package main

// Element's own call code across homeservers (issue 15, item 7): bob, on
// matrix-js-sdk in Chromium, lives on the second Dendrite of
// matrixtest.StartFederation; icebox's service user on the first. Every
// call event between them crosses federation (TLS from the federation's
// test CA); the media goes through icebox's TURN as in the single
// homeserver bed (jssdk_bed_test.go), whose scenario bodies run here.
//
//	namespace "lan": bridge br0 (matrixtest.StartFederation)
//	  hs1 198.18.0.1   Dendrite of icebox's service user
//	  hs2 198.18.0.2   Dendrite of bob; /voip/turnServer → turn:198.18.0.10:3478
//	  fedjs 198.18.0.10 (attached with Federation.AttachNamespace):
//	    icebox serve: TURN 198.18.0.10:3478, relays on 198.18.0.10,
//	                  Matrix bridge → http://198.18.0.1:8008 (hs1)
//	    Chromium: element.html (bob) and icebox.html (alice)
//	    front 127.0.0.1:P: the bundle, /_matrix/ → hs2, /icebox/ → icebox

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// fedBrowserIP is the federated bed's namespace on the federation's
// bridge: icebox's TURN and relays, and Chromium.
const fedBrowserIP = "198.18.0.10"

// newFedJSBed is newJSBed with the two homeservers of a federation: bob on
// the second, icebox's service user on the first.
func newFedJSBed(t *testing.T) *jsBed {
	t.Helper()
	distDir := filepath.Join(requireJSSDK(t), "dist")
	begin := time.Now()
	fed := matrixtest.StartFederation(t, 2,
		matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:" + fedBrowserIP + ":" + browserBedTURN + "?transport=udp"}),
		matrixtest.WithConfig("client_api.turn.turn_shared_secret", testSecret),
		matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h"))
	ns := netbed.New(t).Namespace("fedjs")
	fed.AttachNamespace(t, ns, "eth0", fedBrowserIP+"/24")
	svcHS, bobHS := fed.Homeservers[0], fed.Homeservers[1]
	b := &jsBed{ns: ns, hs: bobHS, hc: nsClient(ns, 10*time.Second), ip: fedBrowserIP, iceboxHS: fed.LANURLs[0]}
	b.service, _, _ = svcHS.Register(t, "icebox", jsServicePass, false)
	b.bob, b.bobTok, _ = bobHS.Register(t, "bob", jsBobPass, false)
	b.front = b.startFront(t, distDir)
	b.icebox = startIceboxIn(t, ns, b.hc, b.iceboxConfig,
		apiTokens{"alice": jsAliceTok, "admin": jsAdminTok}.env(), "ICEBOX_MATRIX_PASSWORD="+jsServicePass)
	b.browser = startJSBrowser(t, ns, filepath.Dir(distDir))
	t.Logf("federated browser bed (%s for icebox, %s for bob) ready in %s", svcHS.ServerName(), bobHS.ServerName(),
		time.Since(begin).Round(time.Millisecond))
	return b
}

// TestJSSDKFederation: Element's call code on bob's homeserver, icebox's
// service user on another. In the encrypted room (icebox's, bob joined
// over federation): a call each way with media through icebox's TURN,
// then every scenario of jsScenarioList (renegotiation both ways, hold,
// video, screen share, ICE restarts, mute, rejects, answered elsewhere,
// the invite's expiry), each event crossing federation. In the plain room
// (bob's, icebox joined over federation): a call from Element; its other
// scenarios run on one homeserver (TestJSSDKCalls), where they take no
// other path.
func TestJSSDKFederation(t *testing.T) {
	t.Parallel()
	b := newFedJSBed(t)
	b.makeRooms(t, "plain", "enc")
	s := openJSSession(t, b)

	t.Run("enc/element calls icebox", func(t *testing.T) {
		id := s.elementCallsIcebox(t, b.encRoom, "voice")
		s.mediaFlows(t, id, "audio", "after the answer")
		s.elementHangsUp(t, id)
	})
	t.Run("enc/icebox calls element", func(t *testing.T) {
		id := s.iceboxCallsElement(t, "enc", "voice")
		s.mediaFlows(t, id, "audio", "after the answer")
		s.iceboxHangsUp(t, id)
	})
	for _, sc := range jsScenarioList {
		t.Run("enc/"+sc.name, func(t *testing.T) { sc.run(s, t, "enc") })
	}
	t.Run("plain/element calls icebox", func(t *testing.T) {
		id := s.elementCallsIcebox(t, b.plainRoom, "voice")
		s.mediaFlows(t, id, "audio", "after the answer")
		s.elementHangsUp(t, id)
	})
}
