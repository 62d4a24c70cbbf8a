package main

// The bed of the MatrixRTC browser tests (rtc_call_test.go): what Element
// Call runs — matrix-js-sdk's MatrixRTCSession and livekit-client with
// per-participant E2EE (web/e2e-matrix/src/rtc.js) — in headless Chromium,
// joining through icebox's MatrixRTC authorization service and a real
// livekit-server, media optionally forced through icebox's TURN.
//
//	namespace "rtc" (lo + veth 198.18.0.1/24)                root namespace
//	  Chromium: rtc.html × 2..3 (alice, bob, carol)
//	  front: 127.0.0.1:P (this test binary, bound in the namespace)
//	     /            web/e2e-matrix/dist (the bundle)
//	     /_matrix/ ────────────────────────────────────────> Dendrite 127.0.0.1:Q
//	  icebox serve: HTTP 127.0.0.1:8080                      (federation API on)
//	     /livekit/jwt/sfu/get: OpenID token → userinfo at the front's
//	        /_matrix/federation/ (matrixrtc.homeserver_urls) → LiveKit JWT
//	     TURN 198.18.0.1:3478, relays on 198.18.0.1
//	namespace "rtcsfu" (veth 198.18.0.2/24, linked to "rtc")
//	  livekit-server: ws://198.18.0.2:7880, ICE on 198.18.0.2 UDP 7882 /
//	     TCP 7881, hands clients turn:198.18.0.1:3478 with REST credentials
//	     of icebox's secret
//
// The page calls /sfu/get on icebox's own origin (127.0.0.1:8080), not the
// front's: the cross-origin request with its CORS preflight is what Element
// Call on its own domain sends.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
)

const (
	rtcAdminTok = "rtc-bed-admin-token-0001"
	rtcPass     = "rtc-password-12345"
	// rtcLiveKitPort is livekit-server's signalling port in the namespace;
	// its ICE ports (+1 TCP, +2 UDP) are outside icebox's relay range.
	rtcLiveKitPort = 7880
	// rtcServicePath is matrixrtc.base_path (the default).
	rtcServicePath = "/livekit/jwt"
)

// rtcBed is one Dendrite, one livekit-server, one icebox and one browser
// for every test of the file.
type rtcBed struct {
	ns      *netbed.NS
	hs      *matrixtest.Homeserver
	front   string // http://127.0.0.1:P inside the namespace
	service string // the authorization service as the pages reach it
	lk      *livekittest.Server
	icebox  *instance
	browser *jsBrowser
	hc      *http.Client // dials inside the namespace

	users  []string          // Matrix user IDs: alice, bob, carol
	tokens map[string]string // user ID → the Go side's token (room set-up)
}

func newRTCBed(t *testing.T) *rtcBed {
	t.Helper()
	distDir := filepath.Join(requireRTC(t), "dist")
	livekittest.Binary(t) // skip before building anything when it is missing
	// Chromium and icebox in "rtc" (198.18.0.1), livekit-server beside it
	// in "rtcsfu" (198.18.0.2): icebox's relay never reaches a port of its
	// own host but another allocation's (turnserver.Policy), so an SFU on
	// icebox's address is unreachable through TURN with an ordinary
	// credential — the scoped SFU credential of issue 16 is what opens that.
	bed := netbed.New(t)
	ns := bed.Namespace("rtc")
	sfuNS := bed.Namespace("rtcsfu")
	netbed.Link(ns, "eth0", browserBedIP+"/24", sfuNS, "eth0", browserBedPeer+"/24")
	// The federation API serves /_matrix/federation/v1/openid/userinfo,
	// where the authorization service checks the pages' OpenID tokens.
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	b := &rtcBed{ns: ns, hs: hs, hc: nsClient(ns, 10*time.Second), tokens: map[string]string{},
		service: "http://" + nsHTTP + rtcServicePath}
	for _, name := range []string{"alice", "bob", "carol"} {
		id, tok, _ := hs.Register(t, name, rtcPass, false)
		b.users = append(b.users, id)
		b.tokens[id] = tok
	}
	// The jssdk bed's front: only its fields ns and hs are used.
	b.front = (&jsBed{ns: ns, hs: hs}).startFront(t, distDir)
	b.lk = livekittest.Start(t, livekittest.Config{
		Command: sfuNS.Command, Dial: sfuNS.DialContext,
		BindIP: browserBedPeer, Port: rtcLiveKitPort, NodeIP: browserBedPeer,
		TURNServers: []livekittest.TURNServer{{Host: browserBedIP, Port: 3478, Protocol: "udp", Secret: testSecret, TTL: 3600}},
	})
	b.icebox = startIceboxIn(t, ns, b.hc, b.iceboxConfig, apiTokens{"admin": rtcAdminTok}.env())
	b.browser = startJSBrowser(t, ns, filepath.Dir(distDir))
	return b
}

// requireRTC is requireJSSDK (Chromium, node, a fresh bundle) plus
// livekit-client and its E2EE worker, and Element Call's embedded build.
func requireRTC(t *testing.T) string {
	t.Helper()
	requireJSSDK(t)
	return requireChromium(t, "MatrixRTC browser tests", "e2e-matrix", func(dir string) string {
		for _, f := range []string{"node_modules/livekit-client/package.json", "dist/rtc.js", "dist/livekit-e2ee-worker.mjs", "dist/rtc-ec.js", "dist/ec/index.html"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return f + " missing in web/e2e-matrix (npm ci && node build.js there)"
			}
		}
		return ""
	})
}

// iceboxConfig is the browser bed's configuration with the MatrixRTC
// authorization service on, for the namespace's livekit-server (external
// mode) and the bed's Dendrite, reached through the front.
func (b *rtcBed) iceboxConfig(stateDir string) string {
	return browserBedConfig(stateDir, "rtc.icebox.test") + fmt.Sprintf(`matrixrtc:
  enabled: true
  full_access_homeservers: [%[1]q]
  homeserver_urls: {%[1]q: %[2]q}
  livekit:
    url: %[3]q
    api_key: %[4]q
    api_secret: %[5]q
`, b.hs.ServerName(), b.front, b.lk.URL, b.lk.APIKey, b.lk.APISecret)
}

// matrixAPI sends a client-server API request to Dendrite as user.
func (b *rtcBed) matrixAPI(t *testing.T, user, method, path string, body any) (int, []byte) {
	t.Helper()
	return clientRequest(t, httpClient, method, b.hs.URL()+path, b.tokens[user], body)
}

// encryptedRoom is a room with Megolm encryption that the first of users
// creates and the others join; every member may send call memberships (as
// Element Web sets up rooms for Element Call).
func (b *rtcBed) encryptedRoom(t *testing.T, name string, users []string) string {
	t.Helper()
	code, resp := b.matrixAPI(t, users[0], http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
		"preset": "private_chat", "name": "rtc " + name, "invite": users[1:],
		"initial_state":                []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
		"power_level_content_override": map[string]any{"events": map[string]int{"org.matrix.msc3401.call.member": 0}},
	})
	var room struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &room) != nil || room.RoomID == "" {
		t.Fatalf("createRoom %s: %d %s", name, code, resp)
	}
	for _, u := range users[1:] {
		if code, resp := b.matrixAPI(t, u, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room.RoomID), map[string]any{}); code != http.StatusOK {
			t.Fatalf("%s joins %s: %d %s", u, room.RoomID, code, resp)
		}
	}
	return room.RoomID
}

// rtcPage is one participant: a page of its own (its own browser context)
// logged in as a new device of user.
type rtcPage struct {
	name, user, device string
}

func (b *rtcBed) openParticipant(t *testing.T, name, user, room string) rtcPage {
	t.Helper()
	local := strings.TrimPrefix(strings.SplitN(user, ":", 2)[0], "@")
	tok, dev := b.hs.Login(t, local, rtcPass)
	p := rtcPage{name: name, user: user, device: dev}
	b.browser.open(t, name, b.front+"/rtc.html", "rtc")
	t.Cleanup(func() { _ = b.browser.do(t, nil, map[string]any{"op": "closePage", "page": name}) })
	var login struct {
		Crypto bool `json:"crypto"`
	}
	b.browser.call(t, name, "rtc.login", &login, map[string]any{"baseUrl": b.front, "userId": user, "accessToken": tok, "deviceId": dev})
	if !login.Crypto {
		t.Fatalf("%s: matrix-js-sdk started without crypto", name)
	}
	b.browser.call(t, name, "rtc.roomReady", nil, room)
	return p
}

// rtcState is what rtc.js's state() reports.
type rtcState struct {
	Joined      bool `json:"joined"`
	Memberships []struct {
		Sender   string `json:"sender"`
		DeviceID string `json:"deviceId"`
		Identity string `json:"identity"`
	} `json:"memberships"`
	Identity   string         `json:"identity"`
	Connection string         `json:"connection"`
	E2EE       bool           `json:"e2ee"`
	Keys       map[string]int `json:"keys"`
	// livekit-client's E2EE errors: MissingKey before every page decrypted
	// every other's media, a key still on its way (WaitingForKey), and
	// every other one (DecryptFailures).
	WaitingForKey   int `json:"waitingForKey"`
	DecryptFailures int `json:"decryptFailures"`
	ErrorSamples    []struct {
		Participant string `json:"participant"`
		Message     string `json:"message"`
	} `json:"errorSamples"`
	Remotes []struct {
		Identity  string     `json:"identity"`
		Encrypted bool       `json:"encrypted"`
		Tracks    []rtcTrack `json:"tracks"`
	} `json:"remotes"`
	Publishing []struct {
		Kind      string `json:"kind"`
		Encrypted bool   `json:"encrypted"`
	} `json:"publishing"`
}

type rtcTrack struct {
	Kind          string        `json:"kind"`
	Source        string        `json:"source"`
	Subscribed    bool          `json:"subscribed"`
	Encrypted     bool          `json:"encrypted"`
	Bytes         int64         `json:"bytes"`
	FramesDecoded int64         `json:"framesDecoded"`
	AudioEnergy   float64       `json:"audioEnergy"`
	Local         *rtcCandidate `json:"local"`
	Remote        *rtcCandidate `json:"remote"`
}

type rtcCandidate struct {
	Type          string `json:"type"`
	Address       string `json:"address"`
	Port          int    `json:"port"`
	RelayProtocol string `json:"relayProtocol"`
}

func (b *rtcBed) state(t *testing.T, page string) rtcState {
	t.Helper()
	var s rtcState
	b.browser.call(t, page, "rtc.state", &s)
	return s
}

// track finds the received track of kind from identity in s.
func (s rtcState) track(identity, kind string) (rtcTrack, bool) {
	for _, r := range s.Remotes {
		if r.Identity != identity {
			continue
		}
		for _, tr := range r.Tracks {
			if tr.Kind == kind && tr.Subscribed {
				return tr, true
			}
		}
	}
	return rtcTrack{}, false
}
