package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	"github.com/pion/webrtc/v4"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// The gateway with e2ee's Session as its transformer, through the real
// livekit-server: the member encrypts its frames as livekit-client does
// (framecrypt, its own key, which the Session got as the Matrix bridge
// delivers keys), and decrypts the gateway's Opus with the key the Session
// sent it.

// keyCapture is the Session's Sender: it hands icebox's key to the member.
type keyCapture struct {
	mu   sync.Mutex
	ring *framecrypt.KeyRing
}

func (c *keyCapture) SendRTCKey(_ context.Context, _ string, index int, key []byte, _ []membership.Device) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ring.SetKey(index, key)
}

// asIdentity gives the member's frames the LiveKit identity of its Matrix
// device ("<user>:<device>", what /sfu/get grants); the bed's member joins
// as "member".
type asIdentity struct {
	gateway.FrameTransformer
	identity string
}

func (a asIdentity) Inbound(f gateway.Frame) ([]byte, error) {
	f.Participant = a.identity
	return a.FrameTransformer.Inbound(f)
}

// TestGatewayE2EESession: media flows both ways end-to-end encrypted: every
// Opus packet the member receives decrypts with icebox's key (and is not
// the client's frame in clear), every one the client receives is the
// member's decrypted frame; the IV of the gateway's frames carries the
// client's SSRC; no frame fails.
func TestGatewayE2EESession(t *testing.T) {
	memberDev := membership.Device{UserID: "@member:example.org", DeviceID: "MEMBERDEV"}
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	opts := framecrypt.ElementCallOptions()
	iceboxAtMember, _ := framecrypt.NewKeyRing(opts, nil)
	memberRing, _ := framecrypt.NewKeyRing(opts, nil)
	memberKey := make([]byte, 16)
	_, _ = rand.Read(memberKey)
	if err := memberRing.SetKey(0, memberKey); err != nil {
		t.Fatal(err)
	}
	reg := e2ee.NewRegistry(&keyCapture{ring: iceboxAtMember}, e2ee.Config{})
	reg.RTCKey(e2ee.KeyEvent{RoomID: "!room:example.org", Device: memberDev, Index: 0, Key: memberKey, SentTS: time.Now()})
	sess := reg.Open("!room:example.org", self)
	t.Cleanup(sess.Close)
	sess.Start(context.Background(), []membership.Device{memberDev})

	var encMu sync.Mutex
	memberEnc := framecrypt.NewEncryptor(memberRing)
	var memberOK, memberBad, clientOK, clientBad atomic.Int64
	var ivSSRC atomic.Uint32
	b := newBed(t, bedOptions{
		transformer:      asIdentity{sess.Transformer(), memberDev.Identity()},
		memberEncryption: livekit.Encryption_GCM,
		memberFrame: func(f []byte) []byte {
			codec := framecrypt.VP8
			if len(f) == 80 && f[0] == 0xfc {
				codec = framecrypt.Opus
			}
			encMu.Lock()
			defer encMu.Unlock()
			out, err := memberEnc.Encrypt(nil, f, codec, framecrypt.IsVP8KeyFrame(f), 0x5eed, uint32(time.Now().UnixNano()/1000))
			if err != nil {
				t.Errorf("member encrypt: %v", err)
			}
			return out
		},
		onMemberPayload: func(kind webrtc.RTPCodecType, p []byte) {
			if kind != webrtc.RTPCodecTypeAudio {
				return
			}
			plain, err := iceboxAtMember.Decrypt(nil, p, framecrypt.Opus, false)
			if err != nil || len(plain) != 80 || plain[0] != 0xfc {
				memberBad.Add(1)
				return
			}
			ivSSRC.Store(uint32(p[len(p)-14])<<24 | uint32(p[len(p)-13])<<16 | uint32(p[len(p)-12])<<8 | uint32(p[len(p)-11]))
			memberOK.Add(1)
		},
		onClientPayload: func(kind webrtc.RTPCodecType, p []byte) {
			if kind != webrtc.RTPCodecTypeAudio {
				return
			}
			if len(p) == 80 && p[0] == 0xfc {
				clientOK.Add(1)
				return
			}
			clientBad.Add(1)
		},
	})
	waitFor(t, 60*time.Second, "end-to-end encrypted media both ways", func() bool {
		return memberOK.Load() > 50 && clientOK.Load() > 50 && b.atMember.video.Load() > 20_000 && b.atClient.video.Load() > 20_000
	})
	if memberBad.Load() != 0 || clientBad.Load() != 0 {
		t.Errorf("member: %d Opus packets decrypted, %d not; client: %d member frames in clear, %d not", memberOK.Load(), memberBad.Load(), clientOK.Load(), clientBad.Load())
	}
	if ivSSRC.Load() == 0 {
		t.Error("the IV of the gateway's frames does not carry the client's SSRC")
	}
	if err := b.gw.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	for _, dir := range []string{"up", "down"} {
		if v := b.metric(t, "icebox_gateway_frames_dropped_total", "direction", dir, "reason", "transform"); v != 0 {
			t.Errorf("frames dropped by the transformer (%s): %v", dir, v)
		}
	}
	t.Logf("member decrypted %d of the gateway's Opus packets; the client got %d of the member's frames decrypted; video %d B up, %d B down",
		memberOK.Load(), clientOK.Load(), b.atMember.video.Load(), b.atClient.video.Load())
	if bytes.Equal(memberKey, make([]byte, 16)) {
		t.Fatal("no member key")
	}
}
