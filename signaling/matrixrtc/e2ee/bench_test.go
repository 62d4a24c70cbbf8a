package e2ee_test

import (
	"context"
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// BenchmarkTransformer: the cost per frame of a Session's Outbound and
// Inbound, what the gateway adds per forwarded frame (an Opus frame is one
// packet; a VP8 frame is several).
func BenchmarkTransformer(b *testing.B) {
	n := newNetwork()
	a, m := n.party(b, "alice", e2ee.Config{}), n.party(b, "bob", e2ee.Config{})
	a.open()
	m.open()
	a.s.Start(context.Background(), []membership.Device{m.dev})
	m.s.Start(context.Background(), []membership.Device{a.dev})
	for _, f := range []codecFrame{codecFrames[0], {mime: "video/VP8", payload: append(vp8Delta, make([]byte, 1200)...)}} {
		out := a.s.Transformer()
		in := m.s.Transformer()
		b.Run("outbound/"+f.mime, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.payload)))
			for i := 0; b.Loop(); i++ {
				if _, err := out.Outbound(gateway.Frame{MimeType: f.mime, RTPTimestamp: uint32(i), SSRC: 1, Payload: f.payload}); err != nil {
					b.Fatal(err)
				}
			}
		})
		enc, err := out.Outbound(gateway.Frame{MimeType: f.mime, SSRC: 1, Payload: f.payload})
		if err != nil {
			b.Fatal(err)
		}
		b.Run("inbound/"+f.mime, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(f.payload)))
			for b.Loop() {
				if _, err := in.Inbound(gateway.Frame{Participant: a.dev.Identity(), MimeType: f.mime, Payload: enc}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
