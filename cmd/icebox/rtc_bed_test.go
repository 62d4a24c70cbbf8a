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
//	     of icebox's SFU secret (matrixrtc.livekit.turn, peers: those ports)
//
// That is icebox in matrixrtc.livekit.mode: external, started before the
// livekit-server, which is given the SFU secret icebox generated into its
// state_dir: LiveKit's credentials ("<expiry>:PA_…") verify with that
// secret only, never with the compat one. manage() then
// restarts icebox in mode managed, with the TURN of issue 16 item 3: icebox
// runs livekit-server itself in "rtc" (ws://198.18.0.1:7880, ICE on
// 198.18.0.1 UDP rtcManagedUDP / TCP 7881), on its own host, and that
// server hands clients turn:198.18.0.1:3478 with credentials of icebox's
// SFU secret, scoped to the SFU's media ports.
//
// The authorization service reaches the homeserver (homeserver_urls)
// through hsProxy, a proxy to the front that the homeserver-down test
// turns off.
//
// The page calls /sfu/get on icebox's own origin (127.0.0.1:8080), not the
// front's: the cross-origin request with its CORS preflight is what Element
// Call on its own domain sends.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/credentials/keystore"
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
	// rtcManagedUDP is the managed livekit-server's ICE/UDP port range,
	// apart from icebox's relay range (relayMinPort..relayMaxPort).
	rtcManagedUDP = "47000-47099"
)

// rtcBed is one Dendrite, one livekit-server, one icebox and one browser
// for every test of the file.
type rtcBed struct {
	ns      *netbed.NS
	hs      *matrixtest.Homeserver
	front   string // http://127.0.0.1:P inside the namespace
	service string // the authorization service as the pages reach it
	lk      *livekittest.Server
	lkKey   string // lk's API key and secret, chosen before it starts
	lkSec   string
	lkURL   string // the LiveKit URL /sfu/get answers: lk's, or the managed one's
	// stateDir is the running icebox's state_dir.
	stateDir string
	managed  bool // icebox runs livekit-server (manage)
	hsProxy  *rtcHSProxy
	icebox   *instance
	browser  *jsBrowser
	hc       *http.Client // dials inside the namespace
	// lkBinary is livekit-server, for the managed mode.
	lkBinary string

	users  []string          // Matrix user IDs: alice, bob, carol
	tokens map[string]string // user ID → the Go side's token (room set-up)

	// The gateway bed's (rtc_gateway_test.go): icebox's Matrix bridge on,
	// logged in as service, with the MatrixRTC gateway; empty otherwise.
	iceboxUser string
	// env is icebox's environment (its API tokens, the Matrix password).
	env []string
}

// rtcBedOpts chooses the bed's variant.
type rtcBedOpts struct {
	// gateway turns icebox's Matrix bridge and MatrixRTC gateway on
	// (icebox's user "icebox"; API users alice and admin).
	gateway bool
	// matrixTURN has the homeserver hand out icebox's TURN
	// (/voip/turnServer), as the jssdk bed's does: what a legacy
	// matrix-js-sdk caller relays through.
	matrixTURN bool
}

func newRTCBed(t *testing.T) *rtcBed { return newRTCBedWith(t, rtcBedOpts{}) }

func newRTCBedWith(t *testing.T, opts rtcBedOpts) *rtcBed {
	t.Helper()
	distDir := filepath.Join(requireRTC(t), "dist")
	lkBinary := livekittest.Binary(t) // skip before building anything when it is missing
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
	hsOpts := []matrixtest.Option{matrixtest.WithConfig("global.disable_federation", false)}
	if opts.matrixTURN {
		hsOpts = append(hsOpts,
			matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:" + browserBedIP + ":" + browserBedTURN + "?transport=udp"}),
			matrixtest.WithConfig("client_api.turn.turn_shared_secret", testSecret),
			matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h"))
	}
	hs := matrixtest.StartDendrite(t, hsOpts...)
	b := &rtcBed{ns: ns, hs: hs, hc: nsClient(ns, 10*time.Second), tokens: map[string]string{}, lkBinary: lkBinary,
		service: "http://" + nsHTTP + rtcServicePath}
	for _, name := range []string{"alice", "bob", "carol"} {
		id, tok, _ := hs.Register(t, name, rtcPass, false)
		b.users = append(b.users, id)
		b.tokens[id] = tok
	}
	// The jssdk bed's front: only its fields ns and hs are used.
	b.front = (&jsBed{ns: ns, hs: hs}).startFront(t, distDir)
	b.hsProxy = startRTCHSProxy(t, ns, b.front)
	b.lkKey, b.lkSec = "APIrtc"+rtcRandomHex(t, 4), rtcRandomHex(t, 32)
	b.lkURL = "ws://" + net.JoinHostPort(browserBedPeer, strconv.Itoa(rtcLiveKitPort))
	b.env = []string{apiTokens{"admin": rtcAdminTok}.env()}
	if opts.gateway {
		b.iceboxUser, _, _ = hs.Register(t, "icebox", jsServicePass, false)
		b.env = []string{apiTokens{"admin": rtcAdminTok, "alice": jsAliceTok}.env(), "ICEBOX_MATRIX_PASSWORD=" + jsServicePass}
	}
	b.icebox = startIceboxIn(t, ns, b.hc, b.iceboxConfig, b.env...)
	sfuSecret, err := os.ReadFile(keystore.SFUSecretPath(b.stateDir))
	if err != nil {
		t.Fatalf("icebox's SFU TURN secret: %v", err)
	}
	b.lk = livekittest.Start(t, livekittest.Config{
		Command: sfuNS.Command, Dial: sfuNS.DialContext,
		BindIP: browserBedPeer, Port: rtcLiveKitPort, NodeIP: browserBedPeer, TCPPort: rtcLiveKitPort + 1, UDPPort: rtcLiveKitPort + 2,
		APIKey: b.lkKey, APISecret: b.lkSec,
		TURNServers: []livekittest.TURNServer{{Host: browserBedIP, Port: 3478, Protocol: "udp", Secret: strings.TrimSpace(string(sfuSecret)), TTL: 3600}},
	})
	if b.lk.URL != b.lkURL {
		t.Fatalf("livekit-server at %s, icebox told it is at %s", b.lk.URL, b.lkURL)
	}
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
// authorization service on, for the bed's Dendrite (through hsProxy) and
// the "rtcsfu" namespace's livekit-server (external mode), or after
// manage() a livekit-server of its own with icebox's relay as its TURN.
func (b *rtcBed) iceboxConfig(stateDir string) string {
	b.stateDir = stateDir
	conf := browserBedConfig(stateDir, "rtc.icebox.test")
	if b.iceboxUser != "" {
		// The gateway: icebox's device joins the rooms' calls and names
		// its own authorization service as the focus (public_url).
		conf += fmt.Sprintf(`calls:
  invite_lifetime: 60s
matrix:
  enabled: true
  homeserver_url: %q
  service_user: %q
  require_encryption: false
  invite_wait: 5s
`, b.front, b.iceboxUser)
	}
	conf += fmt.Sprintf(`matrixrtc:
  enabled: true
  full_access_homeservers: [%[1]q]
  homeserver_urls: {%[1]q: %[2]q}
`, b.hs.ServerName(), b.hsProxy.url)
	if b.iceboxUser != "" {
		conf += fmt.Sprintf("  public_url: %q\n", "http://"+nsHTTP)
	}
	if !b.managed {
		return conf + fmt.Sprintf(`  livekit:
    url: %q
    api_key: %q
    api_secret: %q
    turn:
      enabled: true
      peers: ["%s:%d-%d"]
      ttl: 1h
`, b.lkURL, b.lkKey, b.lkSec, browserBedPeer, rtcLiveKitPort+1, rtcLiveKitPort+2)
	}
	// No turn.peers: icebox derives the SFU's from the managed ports.
	return conf + fmt.Sprintf(`  livekit:
    mode: managed
    managed:
      binary: %[1]q
      bind: %[2]s
      port: %[3]d
      node_ip: %[2]s
      rtc_tcp_port: %[4]d
      rtc_udp_ports: %[5]q
    turn:
      enabled: true
      ttl: 1h
`, b.lkBinary, browserBedIP, rtcLiveKitPort, rtcLiveKitPort+1, rtcManagedUDP)
}

// manage restarts icebox in matrixrtc.livekit.mode: managed (the bed's
// comment); /readyz waits for its livekit-server.
func (b *rtcBed) manage(t *testing.T) {
	t.Helper()
	begin := time.Now()
	b.icebox.stop(t)
	b.managed = true
	b.lkURL = "ws://" + browserBedIP + ":" + strconv.Itoa(rtcLiveKitPort)
	b.icebox = startIceboxIn(t, b.ns, b.hc, b.iceboxConfig, apiTokens{"admin": rtcAdminTok}.env())
	t.Logf("icebox restarted with a managed livekit-server (pid %d) in %v", b.liveKitPID(t), time.Since(begin).Round(time.Millisecond))
}

// liveKitPID is the managed livekit-server's PID: icebox's child, found in
// /proc (icebox reports no PID over HTTP); 0 if there is none.
func (b *rtcBed) liveKitPID(t *testing.T) int {
	t.Helper()
	parent := map[int]int{}
	var found []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		parent[pid] = ppid
		if s[open+1:end] == "livekit-server" && f[0] != "Z" {
			found = append(found, pid)
		}
	}
	for _, pid := range found {
		for p, n := pid, 0; p > 1 && n < 10; p, n = parent[p], n+1 {
			if p == b.icebox.Process.Pid {
				return pid
			}
		}
	}
	return 0
}

// metrics reads icebox's /metrics inside the namespace.
func (b *rtcBed) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := b.hc.Get("http://" + nsHTTP + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	m, err := metricSamples(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return m
}

// readyz is icebox's /readyz status (0: no answer).
func (b *rtcBed) readyz() int {
	resp, err := b.hc.Get("http://" + nsHTTP + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func rtcRandomHex(t *testing.T, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(buf)
}

// rtcHSProxy is the authorization service's way to the homeserver: a
// reverse proxy to the front's /_matrix/ inside the namespace that answers
// 502 while down, as a reverse proxy in front of a stopped homeserver does.
type rtcHSProxy struct {
	url  string
	down atomic.Bool
}

func startRTCHSProxy(t *testing.T, ns *netbed.NS, front string) *rtcHSProxy {
	t.Helper()
	target, err := url.Parse(front)
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := ns.Do(func() error {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	p := &rtcHSProxy{url: "http://" + ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{DialContext: ns.DialContext}
	rp.ErrorHandler = quietProxyError
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("homeserver proxy: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return p
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
	WaitingForKey int `json:"waitingForKey"`
	// The TURN servers LiveKit handed the page (credentials: never logged).
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
	// livekit-client's connection events and the page's rejoins.
	LiveKitEvents []struct {
		T    int64  `json:"t"` // ms since the epoch
		What string `json:"what"`
	} `json:"livekitEvents"`
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
