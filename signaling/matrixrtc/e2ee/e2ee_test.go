package e2ee_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

const room = "!call:example.org"

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// network carries keys between the participants' registries in process,
// as the Matrix bridge and its to-device messages do between devices:
// each send reaches the target's registry as a KeyEvent from the sender's
// device. A device without a registry is an error naming it.
type network struct {
	mu    sync.Mutex
	clock *clock
	regs  map[membership.Device]*e2ee.Registry
	sent  []sentKey
}

type sentKey struct {
	from, to membership.Device
	index    int
}

// endpoint is one device's Sender.
type endpoint struct {
	net  *network
	self membership.Device
}

func (e endpoint) SendRTCKey(_ context.Context, roomID string, index int, key []byte, to []membership.Device) error {
	var errs []error
	for _, d := range to {
		e.net.mu.Lock()
		reg := e.net.regs[d]
		if reg != nil {
			e.net.sent = append(e.net.sent, sentKey{from: e.self, to: d, index: index})
		}
		e.net.mu.Unlock()
		if reg == nil {
			errs = append(errs, fmt.Errorf("no device %s", d.Identity()))
			continue
		}
		reg.RTCKey(e2ee.KeyEvent{RoomID: roomID, Device: e.self, Index: index, Key: bytes.Clone(key), SentTS: e.net.clock.Now()})
	}
	return errors.Join(errs...)
}

func (n *network) sends(from, to membership.Device) []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []int
	for _, s := range n.sent {
		if s.from == from && s.to == to {
			out = append(out, s.index)
		}
	}
	return out
}

// party is one device in the call with its registry and session.
type party struct {
	dev  membership.Device
	reg  *e2ee.Registry
	prom *prometheus.Registry
	logs *syncbuf.Buffer
	s    *e2ee.Session
}

func newNetwork() *network {
	return &network{clock: &clock{now: time.Unix(1_800_000_000, 0)}, regs: map[membership.Device]*e2ee.Registry{}}
}

func (n *network) party(t testing.TB, name string, cfg e2ee.Config) *party {
	t.Helper()
	dev := membership.Device{UserID: "@" + name + ":example.org", DeviceID: strings.ToUpper(name) + "DEV"}
	p := &party{dev: dev, prom: prometheus.NewRegistry(), logs: &syncbuf.Buffer{}}
	cfg.Registerer = p.prom
	cfg.Logger = zerolog.New(p.logs).Level(zerolog.DebugLevel)
	cfg.Now = n.clock.Now
	if cfg.UseKeyDelay == 0 {
		cfg.UseKeyDelay = time.Hour // switched by SwitchKeyNow
	}
	p.reg = e2ee.NewRegistry(endpoint{net: n, self: dev}, cfg)
	n.mu.Lock()
	n.regs[dev] = p.reg
	n.mu.Unlock()
	t.Cleanup(func() {
		if p.s != nil {
			p.s.Close()
		}
	})
	return p
}

func (p *party) open() *e2ee.Session {
	p.s = p.reg.Open(room, p.dev)
	return p.s
}

// counter reads a counter of p's registry by name and label values.
func (p *party) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := p.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if labelValue(m, labels[i]) != labels[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// frames of each codec the gateway encrypts.
var (
	opusFrame = append([]byte{0x78}, bytes.Repeat([]byte("opus-payload-"), 8)...)
	vp8Key    = append([]byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01}, bytes.Repeat([]byte("vp8-key-frame-"), 20)...)
	vp8Delta  = append([]byte{0x31, 0x05, 0x00}, bytes.Repeat([]byte("vp8-delta-"), 10)...)
	h264Frame = append([]byte{0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 1, 0x65, 0x88, 0x84},
		bytes.Repeat([]byte{0x11, 0x00, 0x00, 0x01, 0x22}, 30)...)
)

type codecFrame struct {
	mime    string
	payload []byte
	clear   int // leading bytes livekit leaves in clear
}

var codecFrames = []codecFrame{
	{"audio/opus", opusFrame, 1},
	{"video/VP8", vp8Key, 10},
	{"video/VP8", vp8Delta, 3},
	{"video/H264", h264Frame, 21},
}

// encrypt is p's Outbound of a frame, checked to be encrypted.
func (p *party) encrypt(t *testing.T, f codecFrame, ts uint32) []byte {
	t.Helper()
	out, err := p.s.Transformer().Outbound(gateway.Frame{Participant: p.dev.Identity(), MimeType: f.mime, RTPTimestamp: ts, SSRC: 0x1234abcd, Payload: f.payload})
	if err != nil {
		t.Fatalf("%s Outbound %s: %v", p.dev.UserID, f.mime, err)
	}
	if bytes.Equal(out, f.payload) || bytes.Contains(out, f.payload[f.clear:]) {
		t.Fatalf("%s Outbound %s: the frame left in clear", p.dev.UserID, f.mime)
	}
	return out
}

// decrypt is p's Inbound of a frame from sender.
func (p *party) decrypt(from *party, mime string, frame []byte) ([]byte, error) {
	return p.s.Transformer().Inbound(gateway.Frame{Participant: from.dev.Identity(), MimeType: mime, SSRC: 0x1234abcd, Payload: frame})
}

func keyIndex(t *testing.T, frame []byte) uint8 {
	t.Helper()
	i, err := framecrypt.FrameKeyIndex(frame)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestRoundTrip: two sessions exchange keys on Start and decrypt each
// other's frames of every codec; the IV carries the SSRC; the header
// livekit leaves in clear is in clear.
func TestRoundTrip(t *testing.T) {
	n := newNetwork()
	a, b := n.party(t, "alice", e2ee.Config{}), n.party(t, "bob", e2ee.Config{})
	a.open()
	b.open()
	ctx := context.Background()
	a.s.Start(ctx, []membership.Device{a.dev, b.dev})
	b.s.Start(ctx, []membership.Device{a.dev, b.dev})
	if got := n.sends(a.dev, a.dev); len(got) != 0 {
		t.Errorf("alice sent her key to herself: %v", got)
	}
	for i, f := range codecFrames {
		for _, pair := range [][2]*party{{a, b}, {b, a}} {
			from, to := pair[0], pair[1]
			enc := from.encrypt(t, f, uint32(1000+i))
			if !bytes.Equal(enc[:f.clear], f.payload[:f.clear]) {
				t.Errorf("%s: header %x not in clear (%x)", f.mime, enc[:f.clear], f.payload[:f.clear])
			}
			if f.mime != "video/H264" { // H.264's tail is escaped
				iv := enc[len(enc)-2-framecrypt.IVLength:]
				if !bytes.Equal(iv[:4], []byte{0x12, 0x34, 0xab, 0xcd}) {
					t.Errorf("%s: IV %x does not start with the SSRC", f.mime, iv)
				}
			}
			got, err := to.decrypt(from, f.mime, enc)
			if err != nil || !bytes.Equal(got, f.payload) {
				t.Errorf("%s from %s: decrypted %x, %v; want the frame", f.mime, from.dev.UserID, got, err)
			}
		}
	}
	for _, p := range []*party{a, b} {
		if v := p.counter(t, "icebox_e2ee_keys_sent_total", "result", "ok"); v != 1 {
			t.Errorf("%s keys sent = %v, want 1", p.dev.UserID, v)
		}
		if v := p.counter(t, "icebox_e2ee_keys_received_total", "result", "accepted"); v != 1 {
			t.Errorf("%s keys accepted = %v, want 1", p.dev.UserID, v)
		}
	}
	checkNoKeyLogged(t, a, b)
}

// TestRefusals: a codec icebox does not encrypt is refused both ways
// (never passed in clear); a frame of a participant without a key, at an
// index without a key, tampered, and any frame after Close fail, each
// counted under its reason.
func TestRefusals(t *testing.T) {
	n := newNetwork()
	a, b, c := n.party(t, "alice", e2ee.Config{}), n.party(t, "bob", e2ee.Config{}), n.party(t, "carol", e2ee.Config{})
	for _, p := range []*party{a, b, c} {
		p.open()
	}
	ctx := context.Background()
	// Before Start alice has no key: nothing leaves.
	if out, err := a.s.Transformer().Outbound(gateway.Frame{MimeType: "audio/opus", Payload: opusFrame}); !errors.Is(err, e2ee.ErrNoKey) || out != nil {
		t.Errorf("Outbound before Start = %x, %v; want ErrNoKey", out, err)
	}
	a.s.Start(ctx, []membership.Device{b.dev})
	b.s.Start(ctx, []membership.Device{a.dev})
	c.s.Start(ctx, nil) // carol is not in alice's call: alice has no key of hers
	for _, mime := range []string{"video/VP9", "video/AV1", "audio/PCMU", ""} {
		if out, err := a.s.Transformer().Outbound(gateway.Frame{MimeType: mime, Payload: vp8Key}); !errors.Is(err, e2ee.ErrUnsupportedCodec) || out != nil {
			t.Errorf("Outbound %q = %x, %v; want ErrUnsupportedCodec", mime, out, err)
		}
		if out, err := a.s.Transformer().Inbound(gateway.Frame{Participant: b.dev.Identity(), MimeType: mime, Payload: vp8Key}); !errors.Is(err, e2ee.ErrUnsupportedCodec) || out != nil {
			t.Errorf("Inbound %q = %x, %v; want ErrUnsupportedCodec", mime, out, err)
		}
	}
	if _, err := a.decrypt(c, "audio/opus", c.encrypt(t, codecFrames[0], 1)); !errors.Is(err, e2ee.ErrNoKey) {
		t.Errorf("frame from a participant without a key: %v; want ErrNoKey", err)
	}
	enc := b.encrypt(t, codecFrames[0], 2)
	enc[len(enc)-1] = 7 // an index bob never sent
	if _, err := a.decrypt(b, "audio/opus", enc); !errors.Is(err, framecrypt.ErrMissingKey) {
		t.Errorf("frame at an index without a key: %v; want ErrMissingKey", err)
	}
	enc = b.encrypt(t, codecFrames[0], 3)
	enc[3] ^= 0xff
	if _, err := a.decrypt(b, "audio/opus", enc); !errors.Is(err, framecrypt.ErrDecrypt) {
		t.Errorf("tampered frame: %v; want ErrDecrypt", err)
	}
	a.s.Close()
	if _, err := a.s.Transformer().Outbound(gateway.Frame{MimeType: "audio/opus", Payload: opusFrame}); !errors.Is(err, e2ee.ErrClosed) {
		t.Errorf("Outbound after Close: %v; want ErrClosed", err)
	}
	if _, err := a.decrypt(b, "audio/opus", b.encrypt(t, codecFrames[0], 4)); !errors.Is(err, e2ee.ErrClosed) {
		t.Errorf("Inbound after Close: %v; want ErrClosed", err)
	}
	for _, want := range []struct {
		dir, reason string
		n           float64
	}{
		{"encrypt", "no_key", 1}, {"encrypt", "unsupported_codec", 4}, {"decrypt", "unsupported_codec", 4},
		{"decrypt", "no_key", 1}, {"decrypt", "missing_key", 1}, {"decrypt", "auth", 1},
		{"encrypt", "closed", 1}, {"decrypt", "closed", 1},
	} {
		if v := a.counter(t, "icebox_e2ee_frame_failures_total", "direction", want.dir, "reason", want.reason); v != want.n {
			t.Errorf("frame failures {%s, %s} = %v, want %v", want.dir, want.reason, v, want.n)
		}
	}
}

// TestRotationOnLeave: when carol leaves, alice rotates: the new key (index
// 1) reaches bob at once, alice keeps encrypting with index 0 until the
// use delay has passed, frames in flight under index 0 still decrypt at
// bob after the switch, carol cannot decrypt what follows, and alice
// forgets carol's key.
func TestRotationOnLeave(t *testing.T) {
	n := newNetwork()
	a, b, c := n.party(t, "alice", e2ee.Config{}), n.party(t, "bob", e2ee.Config{}), n.party(t, "carol", e2ee.Config{})
	all := []membership.Device{a.dev, b.dev, c.dev}
	ctx := context.Background()
	for _, p := range []*party{a, b, c} {
		p.open()
		p.s.Start(ctx, all)
	}
	opus := codecFrames[0]
	before := a.encrypt(t, opus, 10)
	fromCarol := c.encrypt(t, opus, 10)
	if _, err := a.decrypt(c, opus.mime, fromCarol); err != nil {
		t.Fatalf("alice decrypting carol before she left: %v", err)
	}

	a.s.MemberLeft(ctx, c.dev)
	b.s.MemberLeft(ctx, c.dev)
	if got := n.sends(a.dev, b.dev); len(got) != 2 || got[1] != 1 {
		t.Errorf("alice sent bob indexes %v; want [0 1]", got)
	}
	if got := n.sends(a.dev, c.dev); len(got) != 1 {
		t.Errorf("alice sent carol indexes %v; want only [0]: the leaver gets no new key", got)
	}
	inDelay := a.encrypt(t, opus, 11)
	if i := keyIndex(t, inDelay); i != 0 {
		t.Errorf("during the use delay alice encrypts with index %d, want 0", i)
	}
	if !e2ee.SwitchKeyNow(a.s) {
		t.Fatal("no switch to the rotated key pending")
	}
	after := a.encrypt(t, opus, 12)
	if i := keyIndex(t, after); i != 1 {
		t.Errorf("after the use delay alice encrypts with index %d, want 1", i)
	}
	for name, f := range map[string][]byte{"before": before, "in delay": inDelay, "after": after} {
		if got, err := b.decrypt(a, opus.mime, f); err != nil || !bytes.Equal(got, opus.payload) {
			t.Errorf("bob decrypting alice's frame %s the rotation: %v", name, err)
		}
	}
	if _, err := c.decrypt(a, opus.mime, after); !errors.Is(err, framecrypt.ErrMissingKey) {
		t.Errorf("carol decrypting alice's frame after the rotation: %v; want ErrMissingKey", err)
	}
	if _, err := a.decrypt(c, opus.mime, fromCarol); !errors.Is(err, e2ee.ErrNoKey) {
		t.Errorf("alice decrypting carol after she left: %v; want ErrNoKey (her key forgotten)", err)
	}
	a.s.MemberLeft(ctx, c.dev) // again (a duplicate leave): nothing to rotate
	if v := a.counter(t, "icebox_e2ee_key_rotations_total", "reason", "left"); v != 1 {
		t.Errorf("rotations{left} = %v, want 1", v)
	}
	checkNoKeyLogged(t, a, b, c)
}

// TestJoin: a member joining within the grace period gets the current key
// (no rotation); one joining later makes alice rotate, to everyone.
func TestJoin(t *testing.T) {
	n := newNetwork()
	a, b := n.party(t, "alice", e2ee.Config{}), n.party(t, "bob", e2ee.Config{})
	d, e := n.party(t, "dave", e2ee.Config{}), n.party(t, "erin", e2ee.Config{})
	ctx := context.Background()
	a.open()
	a.s.Start(ctx, []membership.Device{b.dev})
	for _, p := range []*party{b, d, e} {
		p.open()
		p.s.Start(ctx, []membership.Device{a.dev})
	}
	n.clock.advance(e2ee.DefaultGracePeriod / 2)
	a.s.MemberJoined(ctx, d.dev)
	if got := n.sends(a.dev, d.dev); len(got) != 1 || got[0] != 0 {
		t.Errorf("dave, joining in the grace period, got indexes %v; want [0]", got)
	}
	if got := n.sends(a.dev, b.dev); len(got) != 1 {
		t.Errorf("bob got indexes %v; want only [0]: no rotation in the grace period", got)
	}
	if _, err := d.decrypt(a, "audio/opus", a.encrypt(t, codecFrames[0], 1)); err != nil {
		t.Errorf("dave decrypting alice: %v", err)
	}
	n.clock.advance(e2ee.DefaultGracePeriod)
	a.s.MemberJoined(ctx, e.dev)
	for _, p := range []*party{b, d, e} {
		if got := n.sends(a.dev, p.dev); got[len(got)-1] != 1 {
			t.Errorf("%s got indexes %v; want the rotated key 1 last", p.dev.UserID, got)
		}
	}
	if v := a.counter(t, "icebox_e2ee_key_rotations_total", "reason", "joined"); v != 1 {
		t.Errorf("rotations{joined} = %v, want 1", v)
	}
}

// TestHeldKeys: keys that come before the room's Session opens, or from a
// device before it is a member, are held (bounded in count and time) and
// used once it opens or the device joins; an outdated key is dropped.
func TestHeldKeys(t *testing.T) {
	n := newNetwork()
	a := n.party(t, "alice", e2ee.Config{HoldKeys: 3})
	b := n.party(t, "bob", e2ee.Config{})
	ctx := context.Background()
	// Keys of other rooms first; then bob's: the bound pushes the oldest out.
	for i := range 4 {
		a.reg.RTCKey(e2ee.KeyEvent{RoomID: fmt.Sprintf("!other%d:example.org", i), Device: b.dev, Index: i, Key: bytes.Repeat([]byte{1}, 16), SentTS: n.clock.Now()})
	}
	b.open()
	b.s.Start(ctx, []membership.Device{a.dev}) // alice's session is not open yet
	if h := e2ee.Held(a.reg); h != 3 {
		t.Errorf("alice holds %d keys, want 3 (the bound)", h)
	}
	if v := a.counter(t, "icebox_e2ee_keys_received_total", "result", "evicted"); v != 2 {
		t.Errorf("evicted = %v, want 2", v)
	}
	// Time passes beyond the hold: the others' keys expire at the next key.
	n.clock.advance(e2ee.DefaultHoldFor + time.Second)
	b.s.MemberJoined(ctx, a.dev) // alice's membership changed: bob sends his key again
	if h := e2ee.Held(a.reg); h != 1 {
		t.Errorf("after the hold time alice holds %d keys, want the new one only", h)
	}
	if v := a.counter(t, "icebox_e2ee_keys_received_total", "result", "expired"); v != 3 {
		t.Errorf("expired = %v, want 3", v)
	}
	if got := n.sends(b.dev, a.dev); len(got) != 2 || got[1] != 0 {
		t.Errorf("bob sent alice indexes %v; want [0 0]: a member already in gets the key again, no rotation", got)
	}
	// Alice opens: bob's held key (index 0) goes to her session, held
	// there until bob is a member (Start), then used.
	a.open()
	frame := b.encrypt(t, codecFrames[1], 5)
	if _, err := a.decrypt(b, "video/VP8", frame); !errors.Is(err, e2ee.ErrNoKey) {
		t.Errorf("before bob is a member: %v; want ErrNoKey", err)
	}
	a.s.Start(ctx, []membership.Device{b.dev})
	if got, err := a.decrypt(b, "video/VP8", frame); err != nil || !bytes.Equal(got, vp8Key) {
		t.Errorf("bob's held key not used: %v", err)
	}
	// A key for index 0 older than the one alice has: dropped.
	a.reg.RTCKey(e2ee.KeyEvent{RoomID: room, Device: b.dev, Index: 0, Key: bytes.Repeat([]byte{9}, 16), SentTS: n.clock.Now().Add(-time.Minute)})
	if v := a.counter(t, "icebox_e2ee_keys_received_total", "result", "outdated"); v != 1 {
		t.Errorf("outdated = %v, want 1", v)
	}
	if got, err := a.decrypt(b, "video/VP8", frame); err != nil || !bytes.Equal(got, vp8Key) {
		t.Errorf("after the outdated key: %v", err)
	}
}

// checkNoKeyLogged: no log line carries key bytes (the logs are debug
// level and hold every key event's fields but the key).
func checkNoKeyLogged(t *testing.T, ps ...*party) {
	t.Helper()
	for _, p := range ps {
		logs := p.logs.String()
		if strings.Contains(logs, "\"key\"") {
			t.Errorf("%s's log has a key field:\n%s", p.dev.UserID, logs)
		}
	}
}

// TestConcurrentUse: frames both ways on several goroutines while members
// join and leave and keys rotate (with a real use delay); run under -race.
// Every frame bob receives from alice decrypts: the keys reach him before
// alice uses them.
func TestConcurrentUse(t *testing.T) {
	n := newNetwork()
	cfg := e2ee.Config{UseKeyDelay: time.Millisecond}
	a, b, c := n.party(t, "alice", cfg), n.party(t, "bob", cfg), n.party(t, "carol", cfg)
	ctx := context.Background()
	for _, p := range []*party{a, b, c} {
		p.open()
		p.s.Start(ctx, []membership.Device{a.dev, b.dev, c.dev})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failed sync.Map
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := codecFrames[i%len(codecFrames)]
			for ts := uint32(0); ; ts++ {
				select {
				case <-stop:
					return
				default:
				}
				enc, err := a.s.Transformer().Outbound(gateway.Frame{MimeType: f.mime, RTPTimestamp: ts, SSRC: uint32(i), Payload: f.payload})
				if err != nil {
					failed.Store("encrypt: "+err.Error(), true)
					continue
				}
				if got, err := b.decrypt(a, f.mime, enc); err != nil || !bytes.Equal(got, f.payload) {
					failed.Store(fmt.Sprintf("bob decrypt: %v", err), true)
				}
			}
		}()
	}
	for range 20 {
		a.s.MemberLeft(ctx, c.dev)
		b.s.MemberLeft(ctx, c.dev)
		n.clock.advance(time.Minute)
		a.s.MemberJoined(ctx, c.dev)
		b.s.MemberJoined(ctx, c.dev)
	}
	close(stop)
	wg.Wait()
	failed.Range(func(k, _ any) bool {
		t.Errorf("%v", k)
		return true
	})
	if v := a.counter(t, "icebox_e2ee_key_rotations_total", "reason", "left"); v != 20 {
		t.Errorf("rotations{left} = %v, want 20", v)
	}
}
