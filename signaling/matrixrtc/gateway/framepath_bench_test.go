//go:build linux

package gateway_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// BenchmarkFramePath is the gateway's per-frame work without LiveKit and
// without the network: what forward.go does with each frame between
// pion's ReadRTP and the outgoing track (RTP packets into a samplebuilder,
// the frame out, the e2ee Session's transformer — encrypt up, decrypt
// down —, packetized again and marshalled), for an Opus frame (one packet)
// and a VP8 frame of 1500 bytes (two packets). SRTP, the interceptors and
// the sockets are pion's, not here: TestGatewayLoad measures the whole.
// The samplebuilder limits are forward.go's (16 packets audio, 256 video).
func BenchmarkFramePath(b *testing.B) {
	memberDev := membership.Device{UserID: "@member:example.org", DeviceID: "MEMBERDEV"}
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	memberRing, _ := framecrypt.NewKeyRing(framecrypt.ElementCallOptions(), nil)
	atMember, _ := framecrypt.NewKeyRing(framecrypt.ElementCallOptions(), nil)
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	if err := memberRing.SetKey(0, key); err != nil {
		b.Fatal(err)
	}
	reg := e2ee.NewRegistry(&keyCapture{ring: atMember}, e2ee.Config{})
	reg.RTCKey(e2ee.KeyEvent{RoomID: "!bench:example.org", Device: memberDev, Index: 0, Key: key, SentTS: time.Now()})
	sess := reg.Open("!bench:example.org", self)
	b.Cleanup(sess.Close)
	sess.Start(context.Background(), []membership.Device{memberDev})
	tr := sess.Transformer()
	memberEnc := framecrypt.NewEncryptor(memberRing)

	type codec struct {
		name      string
		mime      string
		clock     uint32
		ticks     uint32 // RTP timestamp per frame
		maxLate   uint16
		payloader rtp.Payloader
		dep       func() rtp.Depacketizer
		frame     []byte
		fc        framecrypt.Codec
	}
	for _, c := range []codec{
		{"opus", "audio/opus", 48000, 960, 16, &codecs.OpusPayloader{}, func() rtp.Depacketizer { return &codecs.OpusPacket{} }, timedOpus(), framecrypt.Opus},
		{"vp8", "video/VP8", 90000, 3000, 256, &codecs.VP8Payloader{}, func() rtp.Depacketizer { return &codecs.VP8Packet{} }, vp8Frame(false, 1500), framecrypt.VP8},
	} {
		for _, dir := range []string{"up", "down"} {
			b.Run(dir+"/"+c.name, func(b *testing.B) {
				frame := c.frame
				if dir == "down" {
					enc, err := memberEnc.Encrypt(nil, c.frame, c.fc, false, 0x5eed, 1)
					if err != nil {
						b.Fatal(err)
					}
					frame = enc
				}
				// The incoming packets' payloads, cut as a sender would.
				in := rtp.NewPacketizer(1200, 96, 1, c.payloader, rtp.NewRandomSequencer(), c.clock)
				var payloads [][]byte
				for _, p := range in.Packetize(frame, c.ticks) {
					payloads = append(payloads, p.Payload)
				}
				sb := samplebuilder.New(c.maxLate, c.dep(), c.clock)
				out := rtp.NewPacketizer(1200, 96, 2, c.payloader, rtp.NewRandomSequencer(), c.clock)
				var seq uint16
				var ts uint32
				buf := make([]byte, 1500)
				b.ReportAllocs()
				b.SetBytes(int64(len(c.frame)))
				for b.Loop() {
					ts += c.ticks
					for i, p := range payloads {
						seq++
						sb.Push(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts,
							SSRC: 1, Marker: i == len(payloads)-1}, Payload: p})
					}
					for s := sb.Pop(); s != nil; s = sb.Pop() {
						f := gateway.Frame{MimeType: c.mime, RTPTimestamp: s.PacketTimestamp, SSRC: 1, Payload: s.Data}
						var data []byte
						var err error
						if dir == "up" {
							data, err = tr.Outbound(f)
						} else {
							f.Participant = memberDev.Identity()
							data, err = tr.Inbound(f)
						}
						if err != nil {
							b.Fatal(err)
						}
						for _, p := range out.Packetize(data, c.ticks) {
							if _, err := p.MarshalTo(buf); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
			})
		}
	}
}
