package framecrypt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// vectorFile is testdata/livekit-vectors.json, written by
// testdata/livekit-vectors.mjs from livekit-client's own worker code.
type vectorFile struct {
	Source           string     `json:"source"`
	InitialSendCount uint32     `json:"initialSendCount"`
	Keys             []vecKey   `json:"keys"`
	Vectors          []vecFrame `json:"vectors"`
	Ratchet          struct {
		Participant string   `json:"participant"`
		Index       int      `json:"index"`
		ChainKey    string   `json:"chainKey"`
		Frame       vecFrame `json:"frame"`
	} `json:"ratchet"`
}

type vecKey struct {
	Participant string `json:"participant"`
	Index       int    `json:"index"`
	Key         string `json:"key"`
}

type vecFrame struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	Type        string `json:"type,omitempty"`
	Mime        string `json:"mime,omitempty"`
	Participant string `json:"participant"`
	SSRC        uint32 `json:"ssrc"`
	Timestamp   uint32 `json:"timestamp"`
	Plain       string `json:"plain"`
	Encrypted   string `json:"encrypted"`
}

func (f vecFrame) codec(t testing.TB) Codec {
	t.Helper()
	if f.Kind == "audio" {
		return Opus
	}
	switch f.Mime {
	case "video/VP8":
		return VP8
	case "video/VP9":
		return VP9
	case "video/H264":
		return H264
	case "video/H265":
		return H265
	case "video/AV1":
		return AV1
	}
	t.Fatalf("%s: unknown mime %q", f.Name, f.Mime)
	return 0
}

func (f vecFrame) keyFrame() bool { return f.Type == "key" }

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadVectors(t testing.TB) vectorFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "livekit-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

// rings are the participants' key rings with the vectors' keys, in
// Element Call's configuration.
func rings(t testing.TB, v vectorFile) map[string]*KeyRing {
	t.Helper()
	m := map[string]*KeyRing{}
	for _, k := range v.Keys {
		r, ok := m[k.Participant]
		if !ok {
			var err error
			if r, err = NewKeyRing(ElementCallOptions(), nil); err != nil {
				t.Fatal(err)
			}
			m[k.Participant] = r
		}
		if err := r.SetKey(k.Index, unhex(t, k.Key)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// TestLiveKitVectorsDecrypt: every frame livekit-client encrypted
// decrypts to its original with the participant's key ring.
func TestLiveKitVectorsDecrypt(t *testing.T) {
	v := loadVectors(t)
	rs := rings(t, v)
	for _, f := range v.Vectors {
		got, err := rs[f.Participant].Decrypt(nil, unhex(t, f.Encrypted), f.codec(t), f.keyFrame())
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		if want := unhex(t, f.Plain); !bytes.Equal(got, want) {
			t.Errorf("%s: decrypted\n %x\nwant\n %x", f.Name, got, want)
		}
	}
}

// TestLiveKitVectorsEncrypt: the Encryptor, starting from the send count
// livekit drew (Math.random pinned by the script), produces livekit's
// ciphertexts byte for byte, frame after frame on each track: the IV (SSRC,
// timestamp, counter), header, escaping and trailer are livekit's.
func TestLiveKitVectorsEncrypt(t *testing.T) {
	v := loadVectors(t)
	rs := rings(t, v)
	encs := map[string]*Encryptor{}
	for _, f := range v.Vectors {
		track := fmt.Sprint(f.Participant, "|", f.SSRC)
		e, ok := encs[track]
		if !ok {
			e = NewEncryptor(rs[f.Participant])
			e.start = func() uint32 { return v.InitialSendCount }
			encs[track] = e
		}
		got, err := e.Encrypt(nil, unhex(t, f.Plain), f.codec(t), f.keyFrame(), f.SSRC, f.Timestamp)
		if err != nil {
			t.Errorf("%s: %v", f.Name, err)
			continue
		}
		if want := unhex(t, f.Encrypted); !bytes.Equal(got, want) {
			t.Errorf("%s: encrypted\n %x\nlivekit\n %x", f.Name, got, want)
		}
	}
}

// TestLiveKitRatchet: livekit's ratchet of bob's key gives the same chain
// key, and a frame livekit encrypted with the ratcheted key decrypts with
// the original key through the ring's ratchet-on-failure, which then holds
// the ratcheted key at that index.
func TestLiveKitRatchet(t *testing.T) {
	v := loadVectors(t)
	rs := rings(t, v)
	r := rs[v.Ratchet.Participant]
	_, orig := r.Current()
	next, chain, err := orig.Ratchet()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(chain); got != v.Ratchet.ChainKey {
		t.Fatalf("chain key %s, livekit %s", got, v.Ratchet.ChainKey)
	}
	f := v.Ratchet.Frame
	if _, err := orig.Open(nil, unhex(t, f.Encrypted), Opus, false); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("original key opened the ratcheted frame: %v", err)
	}
	got, err := r.Decrypt(nil, unhex(t, f.Encrypted), Opus, false)
	if err != nil || !bytes.Equal(got, unhex(t, f.Plain)) {
		t.Fatalf("ring decrypt: %x, %v; want %s", got, err, f.Plain)
	}
	if idx, k := r.Current(); int(idx) != v.Ratchet.Index || k != next {
		t.Fatalf("ring after ratchet: index %d, ratcheted key %v", idx, k == next)
	}
	// A ring that does not ratchet (window 0) refuses the frame.
	opts := ElementCallOptions()
	opts.RatchetWindowSize = 0
	r0, _ := NewKeyRing(opts, nil)
	for _, k := range v.Keys {
		if k.Participant == v.Ratchet.Participant {
			_ = r0.SetKey(k.Index, unhex(t, k.Key))
		}
	}
	if _, err := r0.Decrypt(nil, unhex(t, f.Encrypted), Opus, false); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("window 0: %v, want ErrDecrypt", err)
	}
}

// livekitDir returns web/e2e-matrix/node_modules/livekit-client and node,
// or skips (fails under CI=true, where scripts/install-test-deps.sh
// installs web/e2e-matrix's packages).
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

func runNode(t *testing.T, stdin []byte, mode string) []byte {
	t.Helper()
	node, dir := livekitNode(t)
	cmd := exec.CommandContext(t.Context(), node, filepath.Join("testdata", "livekit-vectors.mjs"), dir, mode)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node livekit-vectors.mjs %s: %v\n%s", mode, err, stderr.String())
	}
	return out
}

// TestLiveKitVectorsCurrent regenerates the vectors with livekit-client's
// worker and checks they are the committed ones (regenerate with
// `node testdata/livekit-vectors.mjs ../../../web/e2e-matrix/node_modules/livekit-client gen > testdata/livekit-vectors.json`
// when livekit-client changes).
func TestLiveKitVectorsCurrent(t *testing.T) {
	out := runNode(t, nil, "gen")
	var fresh vectorFile
	if err := json.Unmarshal(out, &fresh); err != nil {
		t.Fatal(err)
	}
	committed := loadVectors(t)
	fresh.Source, committed.Source = "", ""
	a, _ := json.Marshal(fresh)
	b, _ := json.Marshal(committed)
	if !bytes.Equal(a, b) {
		t.Fatalf("livekit-client's output differs from testdata/livekit-vectors.json: regenerate it\n%s", out)
	}
}

// TestLiveKitDecryptsGo: frames the Encryptor encrypts (every codec, both
// key lengths, key indexes 0 and 3, H.264 with zero runs that need
// escaping) decrypt to the originals in livekit-client's worker; a frame
// with a flipped tag byte and one with another key index are dropped there.
func TestLiveKitDecryptsGo(t *testing.T) {
	v := loadVectors(t)
	rs := rings(t, v)
	type frameIn struct {
		Participant string `json:"participant"`
		Kind        string `json:"kind"`
		Type        string `json:"type,omitempty"`
		Mime        string `json:"mime,omitempty"`
		Data        string `json:"data"`
	}
	var in struct {
		Keys   []vecKey  `json:"keys"`
		Frames []frameIn `json:"frames"`
	}
	in.Keys = v.Keys
	var want [][]byte
	mimes := map[Codec]string{VP8: "video/VP8", VP9: "video/VP9", H264: "video/H264", H265: "video/H265"}
	for i, f := range goFrames() {
		p := v.Keys[i%len(v.Keys)].Participant
		e := NewEncryptor(rs[p])
		ct, err := e.Encrypt(nil, f.data, f.codec, f.key, uint32(1000+i), uint32(90000*i))
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		fi := frameIn{Participant: p, Kind: "video", Mime: mimes[f.codec], Type: "delta", Data: hex.EncodeToString(ct)}
		if f.codec == Opus {
			fi.Kind, fi.Type = "audio", ""
		} else if f.key {
			fi.Type = "key"
		}
		in.Frames = append(in.Frames, fi)
		want = append(want, f.data)
		if i == 0 {
			bad := bytes.Clone(ct)
			bad[len(bad)-IVLength-trailerLength-1] ^= 1 // last tag byte
			in.Frames = append(in.Frames, frameIn{Participant: p, Kind: "audio", Data: hex.EncodeToString(bad)})
			want = append(want, nil)
			bad = bytes.Clone(ct)
			bad[len(bad)-1] = 7 // no key at index 7
			in.Frames = append(in.Frames, frameIn{Participant: p, Kind: "audio", Data: hex.EncodeToString(bad)})
			want = append(want, nil)
		}
	}
	req, _ := json.Marshal(in)
	var res struct {
		Frames []struct {
			Data *string `json:"data"`
		} `json:"frames"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(runNode(t, req, "decrypt"), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Frames) != len(want) {
		t.Fatalf("livekit answered %d frames, want %d", len(res.Frames), len(want))
	}
	for i, w := range want {
		got := res.Frames[i].Data
		switch {
		case w == nil && got != nil:
			t.Errorf("frame %d: livekit decrypted a tampered frame to %s", i, *got)
		case w != nil && got == nil:
			t.Errorf("frame %d: livekit dropped it", i)
		case w != nil && *got != hex.EncodeToString(w):
			t.Errorf("frame %d: livekit decrypted\n %s\nwant\n %x", i, *got, w)
		}
	}
	t.Logf("livekit-client decrypted %d Go frames; its errors: %q", len(want)-2, res.Errors)
}

type goFrame struct {
	name  string
	codec Codec
	key   bool
	data  []byte
}

func pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*37 + seed)
	}
	return b
}

func annexB(nalus ...[]byte) []byte {
	var b []byte
	for i, n := range nalus {
		if i == 0 {
			b = append(b, 0, 0, 0, 1)
		} else {
			b = append(b, 0, 0, 1)
		}
		b = append(b, n...)
	}
	return b
}

func goFrames() []goFrame {
	zeros := make([]byte, 40)
	return []goFrame{
		{"opus", Opus, false, append([]byte{0x78}, pattern(120, 1)...)},
		{"opus-1", Opus, false, []byte{0xfc}},
		{"vp8-key", VP8, true, append([]byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01}, pattern(700, 2)...)},
		{"vp8-delta", VP8, false, append([]byte{0x31, 0x0a, 0x01}, pattern(997, 3)...)},
		{"vp9", VP9, false, pattern(333, 4)},
		{"h264-key", H264, true, annexB([]byte{0x67, 0x42, 0xc0, 0x1f, 0x0f}, []byte{0x68, 0xce, 0x3c, 0x80}, append(append([]byte{0x65, 0x88, 0x84}, zeros...), pattern(300, 5)...))},
		{"h264-delta", H264, false, annexB([]byte{0x09, 0xf0}, append([]byte{0x41, 0x9a}, append(pattern(200, 6), 0, 0, 0, 0, 1, 2, 3)...))},
		{"h264-no-slice", H264, true, annexB([]byte{0x67, 0x42, 0xc0, 0x1f, 0x0f, 1, 2, 3, 4, 5, 6, 7, 8})},
		{"h265-key", H265, true, annexB([]byte{0x40, 0x01, 0x0c}, append([]byte{0x26, 0x01}, append(zeros, pattern(150, 7)...)...))},
	}
}
