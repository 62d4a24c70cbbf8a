//go:build linux

package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
)

// fedNodeEnv, when set in the environment (to a fedNodeConfig in JSON),
// makes TestMatrixRTCFederation the icebox node of the test: the test
// binary runs itself again inside the bed's namespace, because the node's
// OpenID verification dials from Go's transport goroutines, and a
// network namespace is a property of the thread that makes the socket.
const fedNodeEnv = "ICEBOX_TEST_MATRIXRTC_FEDERATION_NODE"

// fedNodeConfig is what the parent test hands the node process.
type fedNodeConfig struct {
	LiveKitURL, APIKey, APISecret string
	FullAccess                    []string
	AllowedPeers                  []string
}

// fedNS is the address of the node's namespace on the federation's bridge
// (.1 and .2 are the homeservers).
const fedNS = "198.18.0.10"

// TestMatrixRTCFederation: icebox's MatrixRTC authorization service, as a
// node runs it, verifies OpenID tokens at the claimed user's homeserver
// over federation: discovery of an IP-literal server name (port 8448, TLS
// verified with the system roots, which are the federation's test CA in
// the node's environment as a deployment's CA bundle would be) and the
// node's address guard, which refuses the bed's benchmarking range by
// default and lets it through when turn.allowed_peers names it, as an
// operator would for public homeservers. HS1 (198.18.0.1) has full access,
// HS2 (198.18.0.2) does not; the LiveKit server is the real livekit-server
// with room auto-creation off, as lk-jwt-service deployments run it.
//
//   - bob of HS2 alone: a JWT (200, as lk-jwt-service), without roomCreate,
//     and no room is created: LiveKit refuses that JWT (404) until …
//   - alice of HS1: /sfu/get creates the LiveKit room;
//   - bob again, /sfu/get and /get_token: the same room, no roomCreate,
//     and LiveKit now accepts his JWTs;
//   - bob's token presented as HS1's, or claiming a user of HS1: 401;
//   - a node without turn.allowed_peers does not dial the bed (503 naming
//     the homeserver): the guard is on.
func TestMatrixRTCFederation(t *testing.T) {
	if v := os.Getenv(fedNodeEnv); v != "" {
		runFedNode(t, v)
		return
	}
	fed := matrixtest.StartFederation(t, 2)
	hs1, hs2 := fed.Homeservers[0], fed.Homeservers[1]
	bed := netbed.New(t)
	ns := bed.Namespace("rtc")
	fed.AttachNamespace(t, ns, "eth0", fedNS+"/24")
	lk := livekittest.Start(t, livekittest.Config{
		Command: ns.Command, Dial: ns.DialContext, NodeIP: fedNS,
		Extra: map[string]any{"room": map[string]any{"auto_create": false}},
	})
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	t.Cleanup(hc.CloseIdleConnections)

	aliceID, aliceTok, _ := hs1.Register(t, "alice", "alice-password-1", false)
	bobID, bobTok, _ := hs2.Register(t, "bob", "bob-password-1", false)
	const matrixRoom = "!call:198.18.0.1"

	base := startFedNode(t, ns, fed.CAFile, fedNodeConfig{
		LiveKitURL: lk.URL, APIKey: lk.APIKey, APISecret: lk.APISecret,
		FullAccess: []string{hs1.ServerName()}, AllowedPeers: []string{"198.18.0.0/24"},
	}) + "/livekit/jwt"

	rooms := func() []string {
		t.Helper()
		jwt, err := auth.NewAccessToken(lk.APIKey, lk.APISecret).SetVideoGrant(&auth.VideoGrant{RoomList: true}).SetValidFor(time.Minute).ToJWT()
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, lk.HTTPURL+"/twirp/livekit.RoomService/ListRooms", strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+jwt)
		var out struct{ Rooms []struct{ Name string } }
		code, body := do(t, hc, req)
		if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("ListRooms: %d %s", code, body)
		}
		var names []string
		for _, r := range out.Rooms {
			names = append(names, r.Name)
		}
		return names
	}
	sfuGet := func(tok fedOpenID, device string) (int, string) {
		js, _ := json.Marshal(map[string]any{"room": matrixRoom, "openid_token": tok, "device_id": device})
		return postJSON(t, hc, base+"/sfu/get", js)
	}
	getToken := func(tok fedOpenID, claimed, device string) (int, string) {
		js, _ := json.Marshal(map[string]any{
			"room_id": matrixRoom, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]any{"id": "member-" + device, "claimed_user_id": claimed, "claimed_device_id": device},
		})
		return postJSON(t, hc, base+"/get_token", js)
	}
	// LiveKit's own check of a JWT before a client connects: 404 while
	// the room does not exist and the JWT cannot create it (auto_create
	// off), 200 "success" when the client may join.
	validate := func(jwt string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, lk.HTTPURL+"/rtc/validate?access_token="+url.QueryEscape(jwt), nil)
		return do(t, hc, req)
	}
	jwts := map[string]string{} // what → the JWT of grantOf
	grantOf := func(what string, res func() (int, string)) *auth.ClaimGrants {
		t.Helper()
		code, body := res()
		var r struct{ URL, JWT string }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil || r.JWT == "" {
			t.Fatalf("%s: %d %s, want 200 with a JWT", what, code, body)
		}
		if r.URL != lk.URL {
			t.Errorf("%s: url %q, want %q", what, r.URL, lk.URL)
		}
		jwts[what] = r.JWT
		v, err := auth.ParseAPIToken(r.JWT)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, g, err := v.Verify(lk.APISecret)
		if err != nil || g.Video == nil {
			t.Fatalf("%s: the JWT does not verify with LiveKit's secret: %v", what, err)
		}
		return g
	}

	// Bob of HS2 alone: lk-jwt-service answers a restricted user with a
	// join-only JWT and creates nothing; the room does not exist, so
	// LiveKit (auto_create off) would refuse him until someone with full
	// access opens it.
	bob := requestFedOpenID(t, hs2, bobID, bobTok)
	bobAlone := grantOf("bob alone /sfu/get", func() (int, string) { return sfuGet(bob, "BOBDEV") })
	if bobAlone.Video.RoomCreate || !bobAlone.Video.RoomJoin {
		t.Errorf("bob alone: roomCreate %v roomJoin %v, want false true", bobAlone.Video.RoomCreate, bobAlone.Video.RoomJoin)
	}
	if got := rooms(); len(got) != 0 {
		t.Fatalf("after bob alone, LiveKit has rooms %q; want none", got)
	}
	if code, body := validate(jwts["bob alone /sfu/get"]); code != http.StatusNotFound {
		t.Errorf("LiveKit /rtc/validate of bob's JWT before the room exists: %d %s, want 404", code, body)
	}

	// Alice of HS1 (full access) creates the room.
	alice := requestFedOpenID(t, hs1, aliceID, aliceTok)
	aliceGrant := grantOf("alice /sfu/get", func() (int, string) { return sfuGet(alice, "ALICEDEV") })
	lkRoom := aliceGrant.Video.Room
	if lkRoom == "" || !aliceGrant.Video.RoomJoin {
		t.Fatalf("alice's grant: room %q, roomJoin %v", lkRoom, aliceGrant.Video.RoomJoin)
	}
	if got := rooms(); len(got) != 1 || got[0] != lkRoom {
		t.Fatalf("after alice, LiveKit has rooms %q; want [%q]", got, lkRoom)
	}
	if bobAlone.Video.Room != lkRoom {
		t.Errorf("bob alone was sent to room %q, alice to %q", bobAlone.Video.Room, lkRoom)
	}

	// Bob joins it, by both endpoints.
	bob = requestFedOpenID(t, hs2, bobID, bobTok)
	for name, res := range map[string]func() (int, string){
		"/sfu/get":   func() (int, string) { return sfuGet(bob, "BOBDEV") },
		"/get_token": func() (int, string) { return getToken(bob, bobID, "BOBDEV") },
	} {
		g := grantOf("bob "+name, res)
		if g.Video.Room != lkRoom || g.Video.RoomCreate || !g.Video.RoomJoin {
			t.Errorf("bob %s: room %q roomCreate %v roomJoin %v; want %q false true", name, g.Video.Room, g.Video.RoomCreate, g.Video.RoomJoin, lkRoom)
		}
		if !strings.Contains(g.Identity, bobID) && name == "/sfu/get" {
			t.Errorf("bob /sfu/get: identity %q does not name %s", g.Identity, bobID)
		}
		if code, body := validate(jwts["bob "+name]); code != http.StatusOK {
			t.Errorf("LiveKit /rtc/validate of bob's %s JWT in alice's room: %d %s, want 200", name, code, body)
		}
	}

	// Bob's token presented as a token of HS1 (HS1 does not know it), and
	// bob's real token claiming a user of HS1 (HS2 vouches for bob of HS2
	// only): 401 M_UNAUTHORIZED, as lk-jwt-service.
	asHS1 := bob
	asHS1.MatrixServerName = hs1.ServerName()
	for name, res := range map[string]func() (int, string){
		"token as HS1's": func() (int, string) { return sfuGet(asHS1, "BOBDEV") },
		"claimed as HS1": func() (int, string) { return getToken(bob, "@bob:"+hs1.ServerName(), "BOBDEV") },
	} {
		if code, body := res(); code != http.StatusUnauthorized || !strings.Contains(body, "M_UNAUTHORIZED") {
			t.Errorf("bob's %s: %d %s, want 401 M_UNAUTHORIZED", name, code, body)
		}
	}
	if got := rooms(); len(got) != 1 {
		t.Errorf("LiveKit has rooms %q at the end; want only %q", got, lkRoom)
	}

	// The guard is on: without turn.allowed_peers the bed's range (RFC
	// 2544's, on the relay's deny-list) is not dialled, and the answer is
	// 503 naming the homeserver.
	guarded := startFedNode(t, ns, fed.CAFile, fedNodeConfig{
		LiveKitURL: lk.URL, APIKey: lk.APIKey, APISecret: lk.APISecret,
		FullAccess: []string{hs1.ServerName()},
	}) + "/livekit/jwt"
	js, _ := json.Marshal(map[string]any{"room": matrixRoom, "openid_token": requestFedOpenID(t, hs1, aliceID, aliceTok), "device_id": "ALICEDEV"})
	if code, body := postJSON(t, hc, guarded+"/sfu/get", js); code != http.StatusServiceUnavailable || !strings.Contains(body, hs1.ServerName()) {
		t.Errorf("node without allowed_peers: %d %s, want 503 naming %s", code, body, hs1.ServerName())
	}
}

// startFedNode runs the test binary again in ns as an icebox node with cfg
// (see runFedNode), trusting caFile as its system roots, and returns its
// HTTP base URL (reachable from ns). The node stops when the test ends.
func startFedNode(t *testing.T, ns *netbed.NS, caFile string, cfg fedNodeConfig) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := ns.Command(ctx, exe, "-test.run=^TestMatrixRTCFederation$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fedNodeEnv+"="+string(js),
		// Go reads its system roots from these on Linux: the node trusts
		// the federation's CA as a deployment trusts its CA bundle.
		"SSL_CERT_FILE="+caFile, "SSL_CERT_DIR="+filepath.Dir(caFile),
		"HTTPS_PROXY=", "https_proxy=", "HTTP_PROXY=", "http_proxy=", "ALL_PROXY=", "all_proxy=")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var log syncBuffer
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if a, ok := strings.CutPrefix(line, fedNodeReady); ok {
				addr <- a
			}
			_, _ = log.Write([]byte(line + "\n"))
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the node's cue to stop
		select {
		case <-done:
		case <-time.After(nodetest.StopTimeout + 5*time.Second):
			cancel()
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("node process output:\n%s", log.String())
		}
	})
	select {
	case a := <-addr:
		return "http://" + a
	case <-done:
		t.Fatalf("the node process ended before it served:\n%s", log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the node process did not serve within 60s:\n%s", log.String())
	}
	return ""
}

// fedNodeReady prefixes the line with the node's HTTP address.
const fedNodeReady = "ICEBOX-FED-NODE-HTTP "

// runFedNode is the node process: an icebox node with the MatrixRTC
// service in mode external towards the test's livekit-server, the given
// full-access homeservers and turn.allowed_peers; it serves until stdin
// closes.
func runFedNode(t *testing.T, v string) {
	var fc fedNodeConfig
	if err := json.Unmarshal([]byte(v), &fc); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.HTTP.Listen = fedNS + ":0"
	cfg.TURN.AllowedPeers = fc.AllowedPeers
	cfg.MatrixRTC.Enabled = true
	cfg.MatrixRTC.LiveKit.URL = fc.LiveKitURL
	cfg.MatrixRTC.LiveKit.APIKey = fc.APIKey
	cfg.MatrixRTC.LiveKit.APISecret = fc.APISecret
	cfg.MatrixRTC.FullAccessHomeservers = fc.FullAccess
	cfg.MatrixRTC.VerifyCacheTTL = 0
	cfg.MatrixRTC.VerifyTimeout = 5 * time.Second
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(os.Stderr)})
	_, _ = os.Stdout.WriteString(fedNodeReady + n.Addrs.HTTP + "\n")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// fedOpenID is a Matrix OpenID token as the client-server API hands it out.
type fedOpenID struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

func requestFedOpenID(t *testing.T, hs *matrixtest.Homeserver, userID, token string) fedOpenID {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, hs.URL()+"/_matrix/client/v3/user/"+url.PathEscape(userID)+"/openid/request_token", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	code, body := do(t, http.DefaultClient, req)
	var o fedOpenID
	if code != http.StatusOK || json.Unmarshal([]byte(body), &o) != nil || o.AccessToken == "" {
		t.Fatalf("openid request_token for %s: %d", userID, code)
	}
	if o.MatrixServerName != hs.ServerName() {
		t.Fatalf("openid token of %s names %q", userID, o.MatrixServerName)
	}
	return o
}

func postJSON(t *testing.T, hc *http.Client, u string, js []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(string(js)))
	req.Header.Set("Content-Type", "application/json")
	return do(t, hc, req)
}

func do(t *testing.T, hc *http.Client, req *http.Request) (int, string) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
