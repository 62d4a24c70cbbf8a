package e2ee_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// Interop with livekit-client's own frame encryption (its E2EE worker,
// the code Element Call runs, in node), through framecrypt's
// testdata/livekit-vectors.mjs: a Session's frames decrypt there with the
// keys the Session sent, and livekit-client's frames decrypt in a Session
// fed the keys as the Matrix bridge delivers them.

// vectorScript is framecrypt's driver of livekit-client's worker.
var vectorScript = filepath.Join("..", "framecrypt", "testdata", "livekit-vectors.mjs")

// livekitNode returns node and livekit-client's directory, or skips (fails
// under CI=true, where scripts/install-test-deps.sh installs them).
func livekitNode(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "web", "e2e-matrix", "node_modules", "livekit-client"))
	if err != nil {
		t.Fatal(err)
	}
	node, _ = exec.LookPath("node")
	why := ""
	switch {
	case node == "":
		why = "node not found (apt-get install nodejs npm)"
	default:
		if _, err := os.Stat(filepath.Join(dir, "dist", "livekit-client.e2ee.worker.mjs")); err != nil {
			why = "livekit-client not installed in web/e2e-matrix (cd web/e2e-matrix && npm ci)"
		}
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("livekit-client interop: %s; CI installs it with scripts/install-test-deps.sh", why)
		}
		t.Skipf("livekit-client interop: %s", why)
	}
	return node, dir
}

func runLiveKit(t *testing.T, stdin []byte, mode string) []byte {
	t.Helper()
	node, dir := livekitNode(t)
	cmd := exec.CommandContext(t.Context(), node, vectorScript, dir, mode)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node livekit-vectors.mjs %s: %v\n%s", mode, err, stderr.String())
	}
	return out
}

type lkKey struct {
	Participant string `json:"participant"`
	Index       int    `json:"index"`
	Key         string `json:"key"`
}

type lkFrame struct {
	Participant string `json:"participant"`
	Kind        string `json:"kind"`
	Type        string `json:"type,omitempty"`
	Mime        string `json:"mime,omitempty"`
	Data        string `json:"data"`
}

// capture is a Sender that keeps what it sends (the member's view).
type capture struct {
	mu   sync.Mutex
	keys []lkKey
	self membership.Device
}

func (c *capture) SendRTCKey(_ context.Context, _ string, index int, key []byte, _ []membership.Device) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys = append(c.keys, lkKey{Participant: c.self.Identity(), Index: index, Key: hex.EncodeToString(key)})
	return nil
}

// TestLiveKitDecryptsSession: frames of every codec a Session encrypts,
// with its first key and after a rotation, decrypt in livekit-client to
// the originals with the keys the Session sent the member.
func TestLiveKitDecryptsSession(t *testing.T) {
	livekitNode(t)
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	member := membership.Device{UserID: "@alice:example.org", DeviceID: "ALICEDEVICE"}
	leaver := membership.Device{UserID: "@carol:example.org", DeviceID: "CAROLDEVICE"}
	sent := &capture{self: self}
	reg := e2ee.NewRegistry(sent, e2ee.Config{UseKeyDelay: 1 << 40})
	s := reg.Open(room, self)
	defer s.Close()
	ctx := context.Background()
	s.Start(ctx, []membership.Device{member, leaver})

	var in struct {
		Keys   []lkKey   `json:"keys"`
		Frames []lkFrame `json:"frames"`
	}
	var want [][]byte
	encrypt := func(f codecFrame, ts uint32) {
		t.Helper()
		out, err := s.Transformer().Outbound(gateway.Frame{Participant: self.Identity(), MimeType: f.mime, RTPTimestamp: ts, SSRC: 0x0badcafe, Payload: f.payload})
		if err != nil {
			t.Fatalf("Outbound %s: %v", f.mime, err)
		}
		lf := lkFrame{Participant: self.Identity(), Kind: "audio", Data: hex.EncodeToString(out)}
		if f.mime != "audio/opus" {
			lf.Kind, lf.Mime, lf.Type = "video", f.mime, "delta"
			if (f.mime == "video/VP8" && f.payload[0]&1 == 0) || f.mime == "video/H264" {
				lf.Type = "key"
			}
		}
		in.Frames = append(in.Frames, lf)
		want = append(want, f.payload)
	}
	for i, f := range codecFrames {
		encrypt(f, uint32(3000*i))
	}
	s.MemberLeft(ctx, leaver)
	if !e2ee.SwitchKeyNow(s) {
		t.Fatal("no rotated key pending")
	}
	for i, f := range codecFrames {
		encrypt(f, uint32(90000+3000*i))
	}
	sent.mu.Lock()
	in.Keys = append(in.Keys, sent.keys...)
	sent.mu.Unlock()
	if len(in.Keys) != 2 || in.Keys[0].Index != 0 || in.Keys[1].Index != 1 {
		t.Fatalf("keys sent: %d, want index 0 then 1", len(in.Keys))
	}
	req, _ := json.Marshal(in)
	var res struct {
		Frames []struct {
			Data *string `json:"data"`
		} `json:"frames"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(runLiveKit(t, req, "decrypt"), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Frames) != len(want) {
		t.Fatalf("livekit answered %d frames, want %d", len(res.Frames), len(want))
	}
	for i, w := range want {
		got := res.Frames[i].Data
		if got == nil || *got != hex.EncodeToString(w) {
			t.Errorf("frame %d (%s): livekit-client did not decrypt it to the original (%v); its errors: %q", i, in.Frames[i].Mime, got != nil, res.Errors)
		}
	}
	t.Logf("livekit-client decrypted %d frames of the Session (key indexes 0 and 1)", len(want))
}

// TestSessionDecryptsLiveKit: livekit-client's own encrypted frames
// (framecrypt's vectors) of the codecs icebox forwards decrypt in a
// Session given the senders' keys as KeyEvents; the others are refused.
func TestSessionDecryptsLiveKit(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "framecrypt", "testdata", "livekit-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Keys    []lkKey `json:"keys"`
		Vectors []struct {
			Name        string `json:"name"`
			Kind        string `json:"kind"`
			Mime        string `json:"mime"`
			Participant string `json:"participant"`
			Plain       string `json:"plain"`
			Encrypted   string `json:"encrypted"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	reg := e2ee.NewRegistry(&capture{}, e2ee.Config{})
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	var members []membership.Device
	for _, k := range v.Keys {
		// Identities are "<user>:<device>"; the device ID has no colon.
		cut := strings.LastIndex(k.Participant, ":")
		d := membership.Device{UserID: k.Participant[:cut], DeviceID: k.Participant[cut+1:]}
		key, _ := hex.DecodeString(k.Key)
		reg.RTCKey(e2ee.KeyEvent{RoomID: room, Device: d, Index: k.Index, Key: key}) // before the session opens
		members = append(members, d)
	}
	s := reg.Open(room, self)
	defer s.Close()
	s.Start(context.Background(), members)
	n := 0
	for _, f := range v.Vectors {
		mime := f.Mime
		if f.Kind == "audio" {
			mime = "audio/opus"
		}
		enc, _ := hex.DecodeString(f.Encrypted)
		got, err := s.Transformer().Inbound(gateway.Frame{Participant: f.Participant, MimeType: mime, Payload: enc})
		switch mime {
		case "audio/opus", "video/VP8", "video/H264":
			if err != nil || hex.EncodeToString(got) != f.Plain {
				t.Errorf("%s: %v", f.Name, err)
			}
			n++
		default:
			if err == nil {
				t.Errorf("%s (%s): decrypted; want the codec refused", f.Name, mime)
			}
		}
	}
	t.Logf("decrypted %d of livekit-client's frames", n)
}
