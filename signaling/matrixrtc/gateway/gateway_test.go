package gateway_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
)

const roomName = "gw-room"

func token(t *testing.T, lk *livekittest.Server, identity string) string {
	t.Helper()
	jwt, err := auth.NewAccessToken(lk.APIKey, lk.APISecret).SetIdentity(identity).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: roomName}).SetValidFor(5 * time.Minute).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return jwt
}

// loopback keeps a pion PeerConnection's ICE on 127.0.0.1.
func loopback() *webrtc.SettingEngine {
	se := &webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return se
}

// Synthetic frames: the SFU forwards, it does not decode. A VP8 key frame
// has a frame tag with bit 0 clear and the start code 9d 01 2a with its
// size (LiveKit looks at both); an Opus frame starts with a TOC byte.
func vp8Frame(key bool, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	if key {
		copy(b, []byte{0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01})
	} else {
		copy(b, []byte{0x51, 0x01, 0x00})
	}
	return b
}

func opusFrame() []byte {
	b := make([]byte, 80)
	_, _ = rand.Read(b)
	b[0] = 0xfc // config 31 (CELT FB 20 ms), mono, one frame
	return b
}

// sampleWriter is what both sides write synthetic media into.
type sampleWriter interface {
	WriteSample(media.Sample) error
}

type lkSampleWriter struct{ *lksdk.LocalTrack }

func (w lkSampleWriter) WriteSample(s media.Sample) error { return w.LocalTrack.WriteSample(s, nil) }

// sendMedia writes 50 Opus frames and 30 VP8 frames (a key frame every
// 10th) a second into audio and video until ctx ends.
func sendMedia(ctx context.Context, wg *sync.WaitGroup, audio, video sampleWriter) {
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = audio.WriteSample(media.Sample{Data: opusFrame(), Duration: 20 * time.Millisecond})
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(33 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = video.WriteSample(media.Sample{Data: vp8Frame(i%10 == 0, 900), Duration: 33 * time.Millisecond})
			}
		}
	}()
}

// counter counts RTP payload bytes of received tracks by kind.
type counter struct{ audio, video atomic.Uint64 }

func (c *counter) read(wg *sync.WaitGroup, track *webrtc.TrackRemote) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := &c.audio
		if track.Kind() == webrtc.RTPCodecTypeVideo {
			n = &c.video
		}
		for {
			pkt, _, err := track.ReadRTP()
			if err != nil {
				return
			}
			n.Add(uint64(len(pkt.Payload)))
		}
	}()
}

// startSFU runs livekit-server in a network namespace of its own, linked
// to the test's by a veth pair: LiveKit's Go SDK gathers no loopback ICE
// candidates (and has no option for it), so the SFU needs an address the
// test's namespace reaches on a real interface; nothing listens beyond
// that link.
func startSFU(t *testing.T) *livekittest.Server {
	t.Helper()
	bed := netbed.New(t)
	ns := bed.Namespace("sfu")
	var r [2]byte
	_, _ = rand.Read(r[:])
	net := fmt.Sprintf("10.%d.%d.", 64+r[0]%64, r[1]&0xfc)
	hostIf := bed.Prefix() + "s"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("link", "add", hostIf, "type", "veth", "peer", "name", "sfu0", "netns", ns.Name) // deleted with the namespace
	run("addr", "add", net+"1/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	ns.Run("ip", "addr", "add", net+"2/30", "dev", "sfu0")
	ns.Run("ip", "link", "set", "sfu0", "up")
	return livekittest.Start(t, livekittest.Config{Command: ns.Command, Dial: ns.DialContext, BindIP: net + "2", NodeIP: net + "2"})
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGatewayForwardsBothWays: a plain WebRTC client (pion) sends Opus and
// VP8 to the gateway, which publishes them into a room of the real
// livekit-server, where a second participant (server-sdk-go) receives
// them; that participant's Opus and VP8 come back down to the client. No
// E2EE (Identity transformer, the room not encrypted).
func TestGatewayForwardsBothWays(t *testing.T) {
	// Checked after every cleanup (the SFU's stop included): registered first.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	lk := startSFU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	mediaCtx, stopMedia := context.WithCancel(ctx)
	defer func() { stopMedia(); wg.Wait() }()

	// The member: joins, publishes, counts what it receives.
	var atMember counter
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		atMember.read(&wg, track)
	}
	member, err := lksdk.ConnectToRoomWithToken(lk.URL, token(t, lk, "member"), cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		t.Fatalf("member join: %v", err)
	}
	defer member.Disconnect()
	mAudio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	mVideo, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.LocalParticipant.PublishTrack(mAudio, &lksdk.TrackPublicationOptions{Name: "mic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.LocalParticipant.PublishTrack(mVideo, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480}); err != nil {
		t.Fatal(err)
	}
	sendMedia(mediaCtx, &wg, lkSampleWriter{mAudio}, lkSampleWriter{mVideo})

	// The client: a plain pion PeerConnection that offers Opus and VP8,
	// sendrecv.
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(*loopback())).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cAudio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "client")
	if err != nil {
		t.Fatal(err)
	}
	cVideo, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "client")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []webrtc.TrackLocal{cAudio, cVideo} {
		if _, err := client.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
			t.Fatal(err)
		}
	}
	var atClient counter
	client.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { atClient.read(&wg, track) })
	offer, err := client.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered

	gw, err := gateway.New(gateway.Config{URL: lk.URL, Token: token(t, lk, "icebox-gw"), Transformer: gateway.Identity{},
		Settings: loopback(), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	start := time.Now()
	answer, err := gw.Answer(ctx, client.LocalDescription().SDP)
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	joined := time.Since(start)
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	sendMedia(mediaCtx, &wg, cAudio, cVideo)

	waitFor(t, 60*time.Second, "first media both ways", func() bool {
		return atMember.audio.Load() > 0 && atMember.video.Load() > 0 && atClient.audio.Load() > 0 && atClient.video.Load() > 0
	})
	firstMedia := time.Since(start)
	// Two seconds' worth each way: 50 Opus frames of 80 B, 30 VP8 frames
	// of 900 B a second.
	waitFor(t, 60*time.Second, "media both ways", func() bool {
		return atMember.audio.Load() > 8_000 && atMember.video.Load() > 54_000 &&
			atClient.audio.Load() > 8_000 && atClient.video.Load() > 54_000
	})
	// And it keeps flowing.
	a0, v0, ca0, cv0 := atMember.audio.Load(), atMember.video.Load(), atClient.audio.Load(), atClient.video.Load()
	waitFor(t, 30*time.Second, "media still flowing", func() bool {
		return atMember.audio.Load() > a0 && atMember.video.Load() > v0 && atClient.audio.Load() > ca0 && atClient.video.Load() > cv0
	})
	st := gw.Stats()
	t.Logf("join+answer %v, first media both ways after %v; member received audio %d B video %d B; client received audio %d B video %d B; gateway %+v",
		joined.Round(time.Millisecond), firstMedia.Round(time.Millisecond),
		atMember.audio.Load(), atMember.video.Load(), atClient.audio.Load(), atClient.video.Load(), st)
	if st.UpFrames == 0 || st.DownFrames == 0 || st.Dropped != 0 {
		t.Errorf("gateway stats %+v", st)
	}
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gw.Err(); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
	stopMedia()
	member.Disconnect()
	_ = client.Close()
	wg.Wait()
}

// TestGatewayRefusesUnencrypted: with the room known to be end-to-end
// encrypted, the Identity transformer is refused before anything joins.
func TestGatewayRefusesUnencrypted(t *testing.T) {
	gw, err := gateway.New(gateway.Config{URL: "ws://127.0.0.1:1", Token: "x", Transformer: gateway.Identity{}, E2EE: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Answer(context.Background(), "v=0\r\n"); !errors.Is(err, gateway.ErrUnencrypted) {
		t.Fatalf("Answer = %v, want ErrUnencrypted", err)
	}
	if !errors.Is(gw.Err(), gateway.ErrUnencrypted) {
		t.Fatalf("Err = %v", gw.Err())
	}
	_ = gw.Close()
}
