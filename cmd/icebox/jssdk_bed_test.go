package main

// The bed of the matrix-js-sdk tests (jssdk_call_test.go): Element's own
// call code in headless Chromium as the Matrix peer of an icebox WebSocket
// client, both relay-only through icebox's TURN.
//
//	namespace "js" (lo + veth 198.18.0.1/24)                 root namespace
//	  Chromium: element.html (bob, matrix-js-sdk)
//	            icebox.html  (alice, icebox's WS API)
//	  front: 127.0.0.1:P (this test binary, bound in the namespace)
//	     /            web/e2e-matrix/dist (the bundle)
//	     /_matrix/ ─────────────────────────────────────────> Dendrite 127.0.0.1:Q
//	     /icebox/  → icebox's HTTP API 127.0.0.1:8080             (matrixtest)
//	  icebox serve: TURN 198.18.0.1:3478, relays on 198.18.0.1,
//	                Matrix bridge → the front's /_matrix/
//
// Dendrite's /voip/turnServer hands out credentials of icebox's compat
// secret for turn:198.18.0.1:3478, so matrix-js-sdk's media goes through
// icebox too. One origin for both pages keeps the browser out of CORS.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// Tokens of the bed's icebox users; the Matrix users' passwords.
const (
	jsAliceTok    = "jssdk-bed-alice-token-0001"
	jsAdminTok    = "jssdk-bed-admin-token-0001"
	jsServicePass = "icebox-service-password-1"
	jsBobPass     = "bob-password-12345"
)

// jsDriverCallWait bounds one driver command: the longest are a page load
// (the bundle and the 7.8 MB crypto wasm) and matrix-js-sdk's login with
// its first sync; each takes about a second on an idle machine.
const jsDriverCallWait = 90 * time.Second

// requireJSSDK returns web/e2e-matrix once Chromium, node and the built
// bundle are there and the bundle's stamp matches its sources; it skips
// (fails under CI=true) otherwise, saying what to run.
func requireJSSDK(t *testing.T) string {
	t.Helper()
	return requireChromium(t, "matrix-js-sdk browser tests", "e2e-matrix", func(dir string) string {
		for _, f := range []string{"node_modules/playwright-core/package.json", "node_modules/matrix-js-sdk/package.json", "dist/.stamp"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return f + " missing in web/e2e-matrix (npm ci && node build.js there)"
			}
		}
		want, err := exec.Command("node", filepath.Join(dir, "build.js"), "--stamp").Output()
		have, _ := os.ReadFile(filepath.Join(dir, "dist", ".stamp"))
		if err != nil || strings.TrimSpace(string(want)) != strings.TrimSpace(string(have)) {
			return "web/e2e-matrix/dist is older than its sources (node build.js there)"
		}
		return ""
	})
}

// jsBed is one Dendrite, one icebox and one browser for every test of the
// file: the rooms are made once, each call is a new call.
type jsBed struct {
	ns      *netbed.NS
	hs      *matrixtest.Homeserver
	front   string // http://127.0.0.1:P inside the namespace
	service string // icebox's Matrix user
	bob     string // the Matrix user on matrix-js-sdk
	bobTok  string // bob's token for the Go side's room set-up (not the page's device)
	icebox  *instance
	browser *jsBrowser
	hc      *http.Client // dials inside the namespace

	rooms              map[string]string // conversation → room: "plain", "enc" and the extra plain ones
	plainRoom, encRoom string

	// The federated bed's (jssdk_federation_test.go); empty in this one.
	ip       string // icebox's TURN and relay address in ns (browserBedIP if empty)
	iceboxHS string // the homeserver URL icebox's bridge uses (the front if empty)
}

// relayIP is icebox's TURN and relay address in the bed's namespace.
func (b *jsBed) relayIP() string {
	if b.ip == "" {
		return browserBedIP
	}
	return b.ip
}

// turnAddr is icebox's TURN server, ip:port.
func (b *jsBed) turnAddr() string { return b.relayIP() + ":" + browserBedTURN }

func newJSBed(t *testing.T) *jsBed {
	t.Helper()
	distDir := filepath.Join(requireJSSDK(t), "dist")
	ns := newBrowserNS(t, "js")
	hs := matrixtest.StartDendrite(t,
		matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:" + browserBedIP + ":" + browserBedTURN + "?transport=udp"}),
		matrixtest.WithConfig("client_api.turn.turn_shared_secret", testSecret),
		matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h"))
	b := &jsBed{ns: ns, hs: hs, hc: nsClient(ns, 10*time.Second)}
	b.service, _, _ = hs.Register(t, "icebox", jsServicePass, false)
	b.bob, b.bobTok, _ = hs.Register(t, "bob", jsBobPass, false)
	b.front = b.startFront(t, distDir)
	b.icebox = startIceboxIn(t, ns, b.hc, b.iceboxConfig,
		apiTokens{"alice": jsAliceTok, "admin": jsAdminTok}.env(), "ICEBOX_MATRIX_PASSWORD="+jsServicePass)
	b.browser = startJSBrowser(t, ns, filepath.Dir(distDir))
	return b
}

// startFront serves the bundle and proxies Matrix and icebox, on a port
// the kernel picks inside the namespace.
func (b *jsBed) startFront(t *testing.T, distDir string) string {
	t.Helper()
	var ln net.Listener
	if err := b.ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	hsURL, err := url.Parse(b.hs.URL())
	if err != nil {
		t.Fatal(err)
	}
	matrix := httputil.NewSingleHostReverseProxy(hsURL)
	matrix.ErrorHandler = quietProxyError
	ice := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: nsHTTP})
			r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, "/icebox")
			r.Out.URL.RawPath = ""
			// The page's origin is the front: keep its Host so that
			// icebox's WebSocket origin check sees a same-origin request.
			r.Out.Host = r.In.Host
		},
		Transport:    &http.Transport{DialContext: b.ns.DialContext},
		ErrorHandler: quietProxyError,
	}
	mux := http.NewServeMux()
	mux.Handle("/_matrix/", matrix)
	mux.Handle("/icebox/", ice)
	mux.Handle("/", http.FileServer(http.Dir(distDir)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("front server: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close() // hijacked WebSockets are closed with their pages
		<-done
	})
	return "http://" + ln.Addr().String()
}

// quietProxyError answers 502 without logging a request the browser gave
// up (a long /sync poll of a closing page).
func quietProxyError(w http.ResponseWriter, r *http.Request, err error) {
	if !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "front proxy: %s %s: %v\n", r.Method, r.URL.Path, err)
	}
	w.WriteHeader(http.StatusBadGateway)
}

// iceboxConfig is the browser bed's configuration with icebox's Matrix
// bridge on the front's /_matrix/.
func (b *jsBed) iceboxConfig(stateDir string) string {
	conf := browserBedConfig(stateDir, "jssdk.icebox.test")
	if b.relayIP() != browserBedIP {
		// The federated bed's address: the TURN listeners and the relays.
		conf = strings.ReplaceAll(conf, browserBedIP+":"+browserBedTURN, b.turnAddr())
		conf = strings.ReplaceAll(conf, "bind_ip: "+browserBedIP+",", "bind_ip: "+b.relayIP()+",")
	}
	hs := b.iceboxHS
	if hs == "" {
		hs = b.front
	}
	return conf + fmt.Sprintf(`calls:
  invite_lifetime: 60s
matrix:
  enabled: true
  homeserver_url: %q
  service_user: %q
  # The plain-room tests need it off; rooms icebox creates are encrypted anyway.
  require_encryption: false
  invite_wait: 5s
`, hs, b.service)
}

// iceboxAPI sends a request to icebox inside the namespace.
func (b *jsBed) iceboxAPI(t *testing.T, token, method, path string, body any) (int, []byte) {
	t.Helper()
	return clientRequest(t, b.hc, method, "http://"+nsHTTP+path, token, body)
}

// matrixAPI sends a client-server API request to Dendrite as bob.
func (b *jsBed) matrixAPI(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	return clientRequest(t, httpClient, method, b.hs.URL()+path, b.bobTok, body)
}

// makeRooms sets up conversations between alice (icebox) and bob (Matrix),
// one room each: a name starting with "enc" is an encrypted room icebox
// creates and bob joins; any other name is a room without encryption that
// bob creates, icebox's admin maps to the conversation, and icebox joins
// when bob invites it.
func (b *jsBed) makeRooms(t *testing.T, names ...string) {
	t.Helper()
	b.rooms = map[string]string{}
	for _, name := range names {
		if strings.HasPrefix(name, "enc") {
			b.rooms[name] = b.encryptedRoom(t, name)
		} else {
			b.rooms[name] = b.plainRoomOf(t, name)
		}
	}
	for name, room := range b.rooms {
		// 45 s: across homeservers icebox's first join can be refused
		// (the invitation arrived before the inviting homeserver stored
		// it), and the bridge retries after its next sync, a long poll of
		// up to 30 s when nothing else happens.
		if !waitFor(45*time.Second, func() bool {
			code, resp := b.matrixAPI(t, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/joined_members", nil)
			return code == http.StatusOK && strings.Contains(string(resp), b.service) && strings.Contains(string(resp), b.bob)
		}) {
			t.Fatalf("room %s (%s): icebox and bob not both joined", name, room)
		}
	}
	b.plainRoom, b.encRoom = b.rooms["plain"], b.rooms["enc"]
}

func (b *jsBed) encryptedRoom(t *testing.T, conv string) string {
	t.Helper()
	code, resp := b.iceboxAPI(t, jsAdminTok, http.MethodPut, "/admin/conversations/"+conv, map[string]any{"participants": []string{"alice", b.bob}})
	var c struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &c) != nil || c.RoomID == "" {
		t.Fatalf("PUT /admin/conversations/%s: %d %s", conv, code, resp)
	}
	if !waitFor(20*time.Second, func() bool {
		code, _ := b.matrixAPI(t, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(c.RoomID), map[string]any{})
		return code == http.StatusOK
	}) {
		t.Fatalf("bob could not join the encrypted room %s", c.RoomID)
	}
	return c.RoomID
}

func (b *jsBed) plainRoomOf(t *testing.T, conv string) string {
	t.Helper()
	code, resp := b.matrixAPI(t, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "name": "jssdk " + conv})
	var room struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &room) != nil || room.RoomID == "" {
		t.Fatalf("createRoom: %d %s", code, resp)
	}
	if code, resp := b.iceboxAPI(t, jsAdminTok, http.MethodPut, "/admin/conversations/"+conv,
		map[string]any{"participants": []string{"alice", b.bob}, "room_id": room.RoomID}); code != http.StatusOK {
		t.Fatalf("PUT /admin/conversations/%s with room %s: %d %s", conv, room.RoomID, code, resp)
	}
	if code, resp := b.matrixAPI(t, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID)+"/invite", map[string]any{"user_id": b.service}); code != http.StatusOK {
		t.Fatalf("invite icebox to %s: %d %s", room.RoomID, code, resp)
	}
	return room.RoomID
}

// roomEventTypes lists the types of the m.call.* events in a plain room,
// oldest first, as the homeserver has them.
func (b *jsBed) roomEventTypes(t *testing.T, room, callID string) []string {
	t.Helper()
	var types []string
	for _, raw := range b.hs.RoomMessages(t, b.bobTok, room) {
		var ev struct {
			Type    string `json:"type"`
			Content struct {
				CallID string `json:"call_id"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) == nil && strings.HasPrefix(ev.Type, "m.call.") && ev.Content.CallID == callID {
			types = append(types, ev.Type)
		}
	}
	return types
}

// jsBrowser is `node driver.js` with Chromium inside the namespace, driven
// by JSON lines.
type jsBrowser struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer // stderr and unparsed stdout

	mu      sync.Mutex
	nextID  int
	waiting map[int]chan jsReply
	done    chan struct{}
}

type jsReply struct {
	ID     int             `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

func startJSBrowser(t *testing.T, ns *netbed.NS, dir string, env ...string) *jsBrowser {
	t.Helper()
	started := make(chan jsReply, 1) // the driver's hello, id 0
	br := &jsBrowser{out: &syncBuffer{}, waiting: map[int]chan jsReply{0: started}, done: make(chan struct{})}
	br.cmd = ns.Command(context.Background(), "node", filepath.Join(dir, "driver.js"))
	br.cmd.Dir = dir
	br.cmd.Env = append(iceboxEnv(), env...)
	br.cmd.Stderr = br.out
	var err error
	if br.stdin, err = br.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := br.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := br.cmd.Start(); err != nil {
		t.Fatalf("start node driver.js: %v", err)
	}
	go br.read(stdout)
	t.Cleanup(func() {
		_ = br.stdin.Close() // the driver closes the browser and exits
		select {
		case <-br.done:
		case <-time.After(15 * time.Second):
			killDescendants(br.cmd.Process.Pid)
			_ = br.cmd.Process.Kill()
			<-br.done
		}
		_ = br.cmd.Wait()
		if t.Failed() {
			t.Logf("driver.js output:\n%s", tail(br.out.String(), 40))
		}
	})
	select {
	case r := <-started:
		if !r.OK {
			t.Fatalf("driver.js: Chromium did not start: %s\n%s", r.Error, br.out.String())
		}
		t.Logf("Chromium %s in namespace %s", r.Result, ns.Name)
	case <-br.done:
		t.Fatalf("driver.js exited before Chromium started:\n%s", br.out.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("driver.js: Chromium not started within 60 s:\n%s", br.out.String())
	}
	return br
}

func (br *jsBrowser) read(stdout io.Reader) {
	defer close(br.done)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r jsReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			fmt.Fprintf(br.out, "stdout: %s\n", sc.Bytes())
			continue
		}
		br.mu.Lock()
		ch := br.waiting[r.ID]
		delete(br.waiting, r.ID)
		br.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// do sends one command and waits for its answer; the result is decoded
// into out (if not nil).
func (br *jsBrowser) do(t *testing.T, out any, cmd map[string]any) error {
	t.Helper()
	br.mu.Lock()
	br.nextID++
	id := br.nextID
	ch := make(chan jsReply, 1)
	br.waiting[id] = ch
	br.mu.Unlock()
	cmd["id"] = id
	line, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.stdin.Write(append(line, '\n')); err != nil {
		t.Fatalf("driver.js: %v", err)
	}
	select {
	case r := <-ch:
		if !r.OK {
			return errors.New(r.Error)
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				t.Fatalf("driver.js answer to %s: %v: %s", line, err, r.Result)
			}
		}
		return nil
	case <-br.done:
		t.Fatalf("driver.js exited during %s:\n%s", line, tail(br.out.String(), 40))
	case <-time.After(jsDriverCallWait):
		t.Fatalf("driver.js: no answer to %s within %s", line, jsDriverCallWait)
	}
	return nil
}

// open loads a page of the bundle into a browser context of its own.
func (br *jsBrowser) open(t *testing.T, page, url, global string) {
	t.Helper()
	if err := br.do(t, nil, map[string]any{"op": "open", "page": page, "url": url, "global": global}); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// call runs window.<fn>(args…) in page and fails the test on an error.
func (br *jsBrowser) call(t *testing.T, page, fn string, out any, args ...any) {
	t.Helper()
	if err := br.try(t, page, fn, out, args...); err != nil {
		t.Fatalf("%s %s%v: %v", page, fn, args, err)
	}
}

// try runs window.<fn>(args…) in page and returns its error.
func (br *jsBrowser) try(t *testing.T, page, fn string, out any, args ...any) error {
	t.Helper()
	if args == nil {
		args = []any{}
	}
	return br.do(t, out, map[string]any{"op": "call", "page": page, "fn": fn, "args": args})
}

// consoleLine is one console message of a page.
type consoleLine struct {
	T    int64  `json:"t"`
	Type string `json:"type"`
	Text string `json:"text"`
}

func (br *jsBrowser) console(t *testing.T, page string, since int64) []consoleLine {
	t.Helper()
	var lines []consoleLine
	if err := br.do(t, &lines, map[string]any{"op": "console", "page": page, "since": since}); err != nil {
		t.Fatalf("console of %s: %v", page, err)
	}
	return lines
}
