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
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
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
	sink := &keySink{}
	tb, room := startKeyBridge(t, hs, svcID, bobID, sink)
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
}
