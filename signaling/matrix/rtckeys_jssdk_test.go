package matrix_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// jssdkPeer is matrix-js-sdk 43's ToDeviceKeyTransport (Element Call's
// media key exchange) over its Rust crypto, in node
// (testdata/jssdk-rtckeys.mjs).
type jssdkPeer struct {
	stdin  io.WriteCloser
	stderr *syncbuf.Buffer

	mu     sync.Mutex
	events []jssdkEvent
}

type jssdkEvent struct {
	Event    string `json:"event"`
	Message  string `json:"message"`
	UserID   string `json:"userId"`
	DeviceID string `json:"deviceId"`
	MemberID string `json:"memberId"`
	Key      string `json:"key"`
	Index    int    `json:"index"`
}

// jssdkDir returns matrix-js-sdk's directory in web/e2e-matrix and node,
// or skips (fails under CI=true, where scripts/install-test-deps.sh
// installs them).
func jssdkDir(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "web", "e2e-matrix", "node_modules", "matrix-js-sdk"))
	if err != nil {
		t.Fatal(err)
	}
	node, _ = exec.LookPath("node")
	why := ""
	switch {
	case node == "":
		why = "node not found (apt-get install nodejs npm)"
	default:
		if _, err := os.Stat(filepath.Join(dir, "lib", "matrixrtc", "ToDeviceKeyTransport.js")); err != nil {
			why = "matrix-js-sdk not installed in web/e2e-matrix (cd web/e2e-matrix && npm ci)"
		}
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("matrix-js-sdk peer: %s; CI installs it with scripts/install-test-deps.sh", why)
		}
		t.Skipf("matrix-js-sdk peer: %s", why)
	}
	return node, dir
}

// startJSSDKPeer logs the device in as matrix-js-sdk and waits until it is
// ready (synced, keys uploaded).
func startJSSDKPeer(t *testing.T, baseURL, userID, deviceID, token, roomID string) *jssdkPeer {
	t.Helper()
	node, dir := jssdkDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "jssdk-rtckeys.mjs"), dir)
	p := &jssdkPeer{stderr: &syncbuf.Buffer{}}
	cmd.Stderr = p.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e jssdkEvent
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				p.mu.Lock()
				p.events = append(p.events, e)
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // the script stops its client and exits
		done := make(chan struct{})
		go func() { <-read; _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel() // kills the node process by its PID
			<-done
		}
		cancel()
		if t.Failed() {
			t.Logf("matrix-js-sdk peer's stderr (last 4 kB):\n%s", tail(p.stderr.String(), 4096))
		}
	})
	p.send(t, map[string]any{"baseUrl": baseURL, "userId": userID, "deviceId": deviceID, "accessToken": token, "roomId": roomID})
	p.wait(t, 60*time.Second, "ready", func(e jssdkEvent) bool { return e.Event == "ready" })
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *jssdkPeer) send(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		t.Fatalf("matrix-js-sdk peer: %v", err)
	}
}

// wait polls the peer's events until one matches.
func (p *jssdkPeer) wait(t *testing.T, d time.Duration, what string, match func(jssdkEvent) bool) jssdkEvent {
	t.Helper()
	var got jssdkEvent
	waitFor(t, d, "matrix-js-sdk peer: "+what, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.events {
			if match(e) {
				got = e
				return true
			}
		}
		return false
	}, func() string { return tail(p.stderr.String(), 4096) })
	return got
}

// TestRTCKeysMatrixJSSDK: icebox's bridge and matrix-js-sdk's own key
// transport (Element Call's) exchange media keys both ways, Olm-encrypted
// through Dendrite: the SDK's key reaches Config.RTCKeys as the SDK's
// device's, and icebox's key is taken by the SDK's transport as icebox's
// device's, with its member ID.
func TestRTCKeysMatrixJSSDK(t *testing.T) {
	jssdkDir(t)
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	bobToken, bobDevice := hs.Login(t, bobID, "bob-password") // a device of its own for matrix-js-sdk
	// The bridge's keys go to the recording sink and to the gateway's key
	// registry, which sends icebox's keys with the bridge (as node wires
	// them: the registry needs the bridge, so it is given with SetRTCKeys).
	sink := &keySink{}
	var reg *e2ee.Registry
	tb, room := startKeyBridge(t, hs, svcID, bobID, nil, func(b *matrix.Bridge) matrix.RTCKeySink {
		reg = e2ee.NewRegistry(b, e2ee.Config{})
		return fanout{sink, reg}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	api(t, hs.URL(), "POST", "/_matrix/client/v3/join/"+url.PathEscape(room), bobToken, map[string]any{}, nil)
	peer := startJSSDKPeer(t, hs.URL(), bobID, bobDevice, bobToken, room)
	bob := membership.Device{UserID: bobID, DeviceID: bobDevice}
	me := matrix.OwnDevice(tb.Bridge)

	// matrix-js-sdk → icebox.
	theirs := bytes.Repeat([]byte{0xa5}, 16)
	peer.send(t, map[string]any{"cmd": "send", "key": base64.StdEncoding.EncodeToString(theirs), "index": 4,
		"to": []map[string]string{{"userId": me.UserID, "deviceId": me.DeviceID}}})
	if e := peer.wait(t, 30*time.Second, "key sent", func(e jssdkEvent) bool { return e.Event == "sent" || e.Event == "error" }); e.Event != "sent" {
		t.Fatalf("matrix-js-sdk could not send its key: %s", e.Message)
	}
	waitFor(t, 30*time.Second, "icebox receives matrix-js-sdk's key", func() bool { return len(sink.all()) > 0 }, tb.logs.String)
	got := sink.all()[0]
	if got.RoomID != room || got.Device != bob || got.Index != 4 || !bytes.Equal(got.Key, theirs) {
		t.Errorf("delivered %+v; want room %s, device %v, index 4, matrix-js-sdk's key", got, room, bob)
	}

	// icebox → matrix-js-sdk. Until icebox's device list has bob's device
	// (the SDK uploaded its keys, which icebox fetches), the send names it.
	ours := bytes.Repeat([]byte{0x5a}, 16)
	waitFor(t, 30*time.Second, "icebox sends its key", func() bool {
		return tb.SendRTCKey(ctx, room, 9, ours, []membership.Device{bob}) == nil
	}, tb.logs.String)
	e := peer.wait(t, 30*time.Second, "icebox's key received", func(e jssdkEvent) bool { return e.Event == "received" })
	if e.UserID != me.UserID || e.DeviceID != me.DeviceID || e.MemberID != me.Identity() || e.Index != 9 ||
		e.Key != base64.StdEncoding.EncodeToString(ours) {
		t.Errorf("matrix-js-sdk received %+v; want icebox's device %v, member %s, index 9, icebox's key", e, me, me.Identity())
	}
	if n := keysReceived(t, tb, "delivered"); n != 1 {
		t.Errorf("delivered = %v, want 1", n)
	}

	// The registry's Session for the room: Start sends icebox's first key
	// (index 0) with the bridge, and the key matrix-js-sdk sent before the
	// Session opened decrypts bob's frames.
	sess := reg.Open(room, me)
	defer sess.Close()
	sess.Start(ctx, []membership.Device{bob})
	e = peer.wait(t, 30*time.Second, "the Session's key received", func(e jssdkEvent) bool { return e.Event == "received" && e.Index == 0 })
	first, err := base64.StdEncoding.DecodeString(e.Key)
	if err != nil || len(first) != 16 || e.DeviceID != me.DeviceID {
		t.Fatalf("the Session's key as matrix-js-sdk got it: %+v", e)
	}
	opus := append([]byte{0x78}, bytes.Repeat([]byte("opus"), 20)...)
	out, err := sess.Transformer().Outbound(gateway.Frame{Participant: me.Identity(), MimeType: "audio/opus", SSRC: 1, Payload: opus})
	if err != nil {
		t.Fatal(err)
	}
	atBob, _ := framecrypt.NewKeyRing(framecrypt.ElementCallOptions(), nil)
	if err := atBob.SetKey(0, first); err != nil {
		t.Fatal(err)
	}
	if got, err := atBob.Decrypt(nil, out, framecrypt.Opus, false); err != nil || !bytes.Equal(got, opus) {
		t.Errorf("bob decrypting the Session's frame with the key matrix-js-sdk received: %v", err)
	}
	bobRing, _ := framecrypt.NewKeyRing(framecrypt.ElementCallOptions(), nil)
	if err := bobRing.SetKey(4, theirs); err != nil {
		t.Fatal(err)
	}
	fromBob, err := framecrypt.NewEncryptor(bobRing).Encrypt(nil, opus, framecrypt.Opus, false, 7, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := sess.Transformer().Inbound(gateway.Frame{Participant: bob.Identity(), MimeType: "audio/opus", Payload: fromBob}); err != nil || !bytes.Equal(got, opus) {
		t.Errorf("the Session decrypting bob's frame with matrix-js-sdk's key: %v", err)
	}
	logs := tb.logs.String()
	for _, k := range [][]byte{theirs, ours, first} {
		for _, enc := range []string{base64.StdEncoding.EncodeToString(k), base64.RawStdEncoding.EncodeToString(k)} {
			if strings.Contains(logs, enc) {
				t.Errorf("the bridge's log contains key material %s", enc)
			}
		}
	}
}

// fanout hands each key to several sinks.
type fanout []matrix.RTCKeySink

func (f fanout) RTCKey(e e2ee.KeyEvent) {
	for _, s := range f {
		s.RTCKey(e)
	}
}
