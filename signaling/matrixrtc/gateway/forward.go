package gateway

import (
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// The most packets of one frame (assemble.go): an Opus frame is one
// packet; a VP8 key frame can be dozens. And a frame's duration when its
// timestamps cannot say.
const (
	maxPacketsAudio = 1
	maxPacketsVideo = 256
	defaultDurAudio = 20 * time.Millisecond
	defaultDurVideo = 33 * time.Millisecond
)

// downTrack is one of the client's tracks from the room, and the member
// track that fills it.
type downTrack struct {
	kind  webrtc.RTPCodecType
	track *webrtc.TrackLocalStaticSample

	mu     sync.Mutex
	source *lksdk.RemoteParticipant // nil: free
	ssrc   webrtc.SSRC
}

// claim takes the track for a member's; false if another fills it.
func (d *downTrack) claim(rp *lksdk.RemoteParticipant, ssrc webrtc.SSRC) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.source != nil {
		return false
	}
	d.source, d.ssrc = rp, ssrc
	return true
}

func (d *downTrack) release(ssrc webrtc.SSRC) {
	d.mu.Lock()
	if d.ssrc == ssrc {
		d.source, d.ssrc = nil, 0
	}
	d.mu.Unlock()
}

// askKeyFrame asks the member whose video fills d for a key frame.
func (d *downTrack) askKeyFrame() {
	d.mu.Lock()
	rp, ssrc := d.source, d.ssrc
	d.mu.Unlock()
	if rp != nil {
		rp.WritePLI(ssrc)
	}
}

// frameAssembler returns an assembler of the codec's frames; nil if the
// gateway does not forward it.
func frameAssembler(codec webrtc.RTPCodecParameters) *assembler {
	switch {
	case strings.EqualFold(codec.MimeType, webrtc.MimeTypeOpus):
		return newAssembler(&codecs.OpusPacket{}, codec.ClockRate, maxPacketsAudio, defaultDurAudio)
	case strings.EqualFold(codec.MimeType, webrtc.MimeTypeVP8):
		return newAssembler(&codecs.VP8Packet{}, codec.ClockRate, maxPacketsVideo, defaultDurVideo)
	}
	return nil
}

// onClientTrack publishes a track of the client's into the room and
// forwards its frames until it ends.
func (g *Gateway) onClientTrack(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	codec := track.Codec()
	asm := frameAssembler(codec)
	if asm == nil {
		g.unsupported.Add(1)
		g.log.Warn().Str("codec", codec.MimeType).Msg("client track in a codec the gateway does not forward; ignored")
		return
	}
	g.mu.Lock()
	room := g.room
	g.mu.Unlock()
	if room == nil || g.closed.Load() {
		return
	}
	video := track.Kind() == webrtc.RTPCodecTypeVideo
	// LiveKit's keyframe requests (its subscribers') go to the client.
	askClient := func(p rtcp.Packet) {
		switch p.(type) {
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			_ = g.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(track.SSRC())}})
		}
	}
	local, err := lksdk.NewLocalSampleTrack(codec.RTPCodecCapability, lksdk.WithRTCPHandler(askClient))
	if err != nil {
		g.fail(err)
		return
	}
	opts := &lksdk.TrackPublicationOptions{Name: "icebox-audio", Source: livekit.TrackSource_MICROPHONE}
	if video {
		opts = &lksdk.TrackPublicationOptions{Name: "icebox-video", Source: livekit.TrackSource_CAMERA}
	}
	if g.cfg.Transformer.Encrypts() {
		opts.Encryption = livekit.Encryption_GCM
	}
	if g.scanRoom(room); g.refuses() {
		g.fail(ErrUnencrypted)
		return
	}
	if !g.goForward() {
		return
	}
	pub, err := room.LocalParticipant.PublishTrack(local, opts)
	if err != nil {
		g.wg.Done()
		g.fail(err)
		return
	}
	defer func() {
		_ = room.LocalParticipant.UnpublishTrack(pub.SID())
		g.wg.Done()
	}()
	if video {
		askClient(&rtcp.PictureLossIndication{})
	}
	identity := room.LocalParticipant.Identity()
	up := func(s assembled) {
		if g.refuses() {
			// Never media sent unencrypted: the room turned out to be
			// end-to-end encrypted (a member's track said so).
			g.drop(dirUp, reasonUnencrypted)
			return
		}
		out, err := g.cfg.Transformer.Outbound(Frame{Participant: identity, MimeType: codec.MimeType,
			RTPTimestamp: s.ts, SSRC: uint32(track.SSRC()), Payload: s.data})
		if err != nil {
			g.drop(dirUp, reasonTransform)
			return
		}
		if err := local.WriteSample(media.Sample{Data: out, Duration: s.dur, PacketTimestamp: s.ts}, nil); err != nil {
			g.drop(dirUp, reasonWrite)
			return
		}
		g.forwarded(dirUp, len(out))
	}
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) && !g.closed.Load() {
				g.log.Debug().Err(err).Str("kind", track.Kind().String()).Msg("client track ended")
			}
			return
		}
		if n := asm.push(pkt, up); n > 0 {
			for range n {
				g.drop(dirUp, reasonIncomplete)
			}
			if video {
				// The frames after a lost one do not decode without
				// a key frame.
				askClient(&rtcp.PictureLossIndication{})
			}
		}
	}
}

// refuses reports whether publishing would send media in clear into an
// end-to-end encrypted room.
func (g *Gateway) refuses() bool { return g.e2ee.Load() && !g.cfg.Transformer.Encrypts() }

// onMemberPublished learns from a member's publication whether the room
// is end-to-end encrypted.
func (g *Gateway) onMemberPublished(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	if info := pub.TrackInfo(); info != nil && info.Encryption != livekit.Encryption_NONE {
		g.e2ee.Store(true)
		if !g.cfg.Transformer.Encrypts() {
			g.fail(ErrUnencrypted)
		}
	}
}

// onMemberTrack forwards a member's track down to the client, if the
// client's track of its kind is free.
func (g *Gateway) onMemberTrack(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	g.onMemberPublished(pub, rp)
	if g.closed.Load() || g.Err() != nil {
		return
	}
	codec := track.Codec()
	asm := frameAssembler(codec)
	d := g.down[track.Kind()]
	if asm == nil || d == nil {
		g.unsupported.Add(1)
		g.log.Warn().Str("codec", codec.MimeType).Msg("member track in a codec the gateway does not forward; ignored")
		return
	}
	if !d.claim(rp, track.SSRC()) {
		g.log.Debug().Str("kind", track.Kind().String()).Msg("member track not forwarded: the client's track of its kind is taken")
		return
	}
	if !g.goForward() {
		d.release(track.SSRC())
		return
	}
	go func() {
		defer g.wg.Done()
		defer d.release(track.SSRC())
		if track.Kind() == webrtc.RTPCodecTypeVideo {
			rp.WritePLI(track.SSRC())
		}
		identity := rp.Identity()
		down := func(s assembled) {
			out, err := g.cfg.Transformer.Inbound(Frame{Participant: identity, MimeType: codec.MimeType,
				RTPTimestamp: s.ts, SSRC: uint32(track.SSRC()), Payload: s.data})
			if err != nil || out == nil {
				g.drop(dirDown, reasonTransform)
				return
			}
			if err := d.track.WriteSample(media.Sample{Data: out, Duration: s.dur}); err != nil {
				g.drop(dirDown, reasonWrite)
				return
			}
			g.forwarded(dirDown, len(out))
		}
		for {
			pkt, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			if n := asm.push(pkt, down); n > 0 {
				for range n {
					g.drop(dirDown, reasonIncomplete)
				}
				if track.Kind() == webrtc.RTPCodecTypeVideo {
					rp.WritePLI(track.SSRC())
				}
			}
		}
	}()
}

// readClientRTCP reads the RTCP of one of the client's down tracks (the
// interceptors need it read) and passes its keyframe requests on.
func (g *Gateway) readClientRTCP(sender *webrtc.RTPSender, d *downTrack) {
	defer g.wg.Done()
	for {
		pkts, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.askKeyFrame()
			}
		}
	}
}
