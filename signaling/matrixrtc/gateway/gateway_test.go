//go:build linux

// The tests with the real livekit-server run it in a network namespace
// (internal/netbed, Linux only).

package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/prometheus/client_golang/prometheus"
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

// lkSampleWriter writes into a server-sdk-go track, each frame changed
// by frame (if set).
type lkSampleWriter struct {
	*lksdk.LocalTrack
	frame func([]byte) []byte
}

func (w lkSampleWriter) WriteSample(s media.Sample) error {
	if w.frame != nil {
		s.Data = w.frame(s.Data)
	}
	return w.LocalTrack.WriteSample(s, nil)
}

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
type counter struct {
	audio, video atomic.Uint64
	onPayload    func(webrtc.RTPCodecType, []byte)
}

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
			if c.onPayload != nil {
				c.onPayload(track.Kind(), pkt.Payload)
			}
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

// roomList asks LiveKit's RoomService how many participants the room has
// and how many tracks they publish (its own HTTP client: no connection
// outlives the test).
func roomList(t *testing.T, lk *livekittest.Server) (participants, tracks int) {
	t.Helper()
	jwt, err := auth.NewAccessToken(lk.APIKey, lk.APISecret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: roomName}).
		SetValidFor(time.Minute).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, lk.HTTPURL+"/twirp/livekit.RoomService/ListParticipants", strings.NewReader(`{"room":"`+roomName+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+jwt)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return -1, -1
	}
	defer resp.Body.Close()
	var list struct {
		Participants []struct {
			Tracks []json.RawMessage `json:"tracks"`
		} `json:"participants"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&list) != nil {
		return -1, -1
	}
	for _, p := range list.Participants {
		tracks += len(p.Tracks)
	}
	return len(list.Participants), tracks
}

// metric is the value of the gateway metric name with labels (name,
// value pairs); -1 if absent.
func (b *bed) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
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
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
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

// bed is one leg under test: the real livekit-server in its namespace, a
// member (server-sdk-go) publishing Opus and VP8 and counting what it
// receives, a plain WebRTC client (pion) doing the same, and the gateway
// between the client and the room.
type bed struct {
	reg                *prometheus.Registry
	lk                 *livekittest.Server
	gw                 *gateway.Gateway
	atMember, atClient counter
	joined             time.Duration // Answer: join the room and answer
	start              time.Time
}

// bedOptions vary newBed.
type bedOptions struct {
	transformer gateway.FrameTransformer
	// memberEncryption is how the member declares its tracks.
	memberEncryption livekit.Encryption_Type
	// memberFrame changes each frame the member sends.
	memberFrame func([]byte) []byte
	// onMemberPayload sees each RTP payload the member receives.
	onMemberPayload func(kind webrtc.RTPCodecType, payload []byte)
	// onClientPayload sees each RTP payload the client receives.
	onClientPayload func(kind webrtc.RTPCodecType, payload []byte)
	// answerErr, if set, takes Answer's error instead of failing on it.
	answerErr *error
}

func newBed(t *testing.T, o bedOptions) *bed {
	t.Helper()
	// Checked after every cleanup (the SFU's stop included): registered first.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	lk := startSFU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	var wg sync.WaitGroup
	mediaCtx, stopMedia := context.WithCancel(ctx)
	b := &bed{lk: lk, reg: prometheus.NewRegistry()}
	b.atMember.onPayload, b.atClient.onPayload = o.onMemberPayload, o.onClientPayload

	// The member: joins, publishes, counts what it receives.
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		b.atMember.read(&wg, track)
	}
	member, err := lksdk.ConnectToRoomWithToken(lk.URL, token(t, lk, "member"), cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		t.Fatalf("member join: %v", err)
	}
	mAudio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	mVideo, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.LocalParticipant.PublishTrack(mAudio, &lksdk.TrackPublicationOptions{Name: "mic", Encryption: o.memberEncryption}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.LocalParticipant.PublishTrack(mVideo, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480, Encryption: o.memberEncryption}); err != nil {
		t.Fatal(err)
	}
	sendMedia(mediaCtx, &wg, lkSampleWriter{mAudio, o.memberFrame}, lkSampleWriter{mVideo, o.memberFrame})
	// The member's tracks are in the room (the SFU lists a track once its
	// media arrives) before the gateway joins.
	waitFor(t, 30*time.Second, "the member's tracks published", func() bool {
		p, tr := roomList(t, lk)
		return p == 1 && tr == 2
	})

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
	client.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { b.atClient.read(&wg, track) })
	offer, err := client.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered

	gw, err := gateway.New(gateway.Config{URL: lk.URL, Token: token(t, lk, "icebox-gw"), Transformer: o.transformer,
		Settings: loopback(), Metrics: gateway.NewMetrics(b.reg), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	b.gw = gw
	// Stopped before the SFU (cleanups run last-registered first).
	t.Cleanup(func() {
		_ = gw.Close()
		stopMedia()
		member.Disconnect()
		_ = client.Close()
		wg.Wait()
	})
	b.start = time.Now()
	answer, err := gw.Answer(ctx, client.LocalDescription().SDP)
	if err != nil && o.answerErr != nil {
		*o.answerErr = err
		return b
	}
	if err != nil {
		t.Fatalf("Answer: %v", err)
	}
	b.joined = time.Since(b.start)
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	sendMedia(mediaCtx, &wg, cAudio, cVideo)
	return b
}

// TestGatewayForwardsBothWays: a plain WebRTC client (pion) sends Opus and
// VP8 to the gateway, which publishes them into a room of the real
// livekit-server, where a second participant (server-sdk-go) receives
// them; that participant's Opus and VP8 come back down to the client. No
// E2EE (Identity transformer, the room not encrypted).
func TestGatewayForwardsBothWays(t *testing.T) {
	b := newBed(t, bedOptions{transformer: gateway.Identity{}})
	waitFor(t, 60*time.Second, "first media both ways", func() bool {
		return b.atMember.audio.Load() > 0 && b.atMember.video.Load() > 0 && b.atClient.audio.Load() > 0 && b.atClient.video.Load() > 0
	})
	firstMedia := time.Since(b.start)
	// Two seconds' worth each way: 50 Opus frames of 80 B, 30 VP8 frames
	// of 900 B a second.
	waitFor(t, 60*time.Second, "media both ways", func() bool {
		return b.atMember.audio.Load() > 8_000 && b.atMember.video.Load() > 54_000 &&
			b.atClient.audio.Load() > 8_000 && b.atClient.video.Load() > 54_000
	})
	// And it keeps flowing.
	a0, v0, ca0, cv0 := b.atMember.audio.Load(), b.atMember.video.Load(), b.atClient.audio.Load(), b.atClient.video.Load()
	waitFor(t, 30*time.Second, "media still flowing", func() bool {
		return b.atMember.audio.Load() > a0 && b.atMember.video.Load() > v0 && b.atClient.audio.Load() > ca0 && b.atClient.video.Load() > cv0
	})
	st := b.gw.Stats()
	t.Logf("join+answer %v, first media both ways after %v; member received audio %d B video %d B; client received audio %d B video %d B; gateway %+v",
		b.joined.Round(time.Millisecond), firstMedia.Round(time.Millisecond),
		b.atMember.audio.Load(), b.atMember.video.Load(), b.atClient.audio.Load(), b.atClient.video.Load(), st)
	if st.UpFrames == 0 || st.DownFrames == 0 || st.Dropped != 0 {
		t.Errorf("gateway stats %+v", st)
	}
	if up, down := b.metric(t, "icebox_gateway_frame_bytes_total", "direction", "up"), b.metric(t, "icebox_gateway_frame_bytes_total", "direction", "down"); up <= 0 || down <= 0 {
		t.Errorf("icebox_gateway_frame_bytes_total up %v down %v", up, down)
	}
	if v := b.metric(t, "icebox_gateway_legs_active"); v != 1 {
		t.Errorf("icebox_gateway_legs_active = %v during the leg", v)
	}
	if err := b.gw.Close(); err != nil {
		t.Fatal(err)
	}
	if a, e := b.metric(t, "icebox_gateway_legs_active"), b.metric(t, "icebox_gateway_legs_ended_total", "reason", "closed"); a != 0 || e != 1 {
		t.Errorf("after Close: legs_active %v, legs_ended_total{closed} %v", a, e)
	}
	if err := b.gw.Err(); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
}

// TestGatewayLeavesE2EERoomWithoutEncryption: a member publishes its
// tracks as end-to-end encrypted before the gateway joins (Config.E2EE not
// set); the gateway, whose transformer does not encrypt, learns it from
// the join and ends the leg with ErrUnencrypted instead of publishing the
// client's media in clear: not one frame goes out.
func TestGatewayLeavesE2EERoomWithoutEncryption(t *testing.T) {
	var answerErr error
	b := newBed(t, bedOptions{transformer: gateway.Identity{}, memberEncryption: livekit.Encryption_GCM, answerErr: &answerErr})
	// The member's encrypted tracks are known while the gateway joins (the
	// answer is refused) or just after (the leg ends).
	if answerErr == nil {
		select {
		case <-b.gw.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the leg did not end")
		}
	}
	if !errors.Is(answerErr, gateway.ErrUnencrypted) && answerErr != nil {
		t.Fatalf("Answer = %v, want ErrUnencrypted", answerErr)
	}
	if !errors.Is(b.gw.Err(), gateway.ErrUnencrypted) {
		t.Fatalf("Err = %v, want ErrUnencrypted", b.gw.Err())
	}
	_ = b.gw.Close()
	if n := b.atMember.audio.Load() + b.atMember.video.Load(); n != 0 || b.gw.Stats().UpBytes != 0 {
		t.Fatalf("the member received %d B from the gateway (stats %+v)", n, b.gw.Stats())
	}
	if a, e := b.metric(t, "icebox_gateway_legs_active"), b.metric(t, "icebox_gateway_legs_ended_total", "reason", "unencrypted"); a != 0 || e != 1 {
		t.Errorf("legs_active %v, legs_ended_total{unencrypted} %v", a, e)
	}
	// The gateway left the room (it joined before refusing).
	waitFor(t, 20*time.Second, "only the member in the room", func() bool {
		p, _ := roomList(t, b.lk)
		return p == 1
	})
}

// marker is a stand-in for the frame crypto (framecrypt's): it says it
// encrypts, appends "ICBX" to each frame going into the room and takes the
// member's "MEMB" off each frame coming out (refusing a frame without it),
// so the test sees the transformer applied once per frame each way.
type marker struct{ refused atomic.Int64 }

func (*marker) Encrypts() bool { return true }
func (*marker) Outbound(f gateway.Frame) ([]byte, error) {
	return append(append([]byte(nil), f.Payload...), "ICBX"...), nil
}
func (m *marker) Inbound(f gateway.Frame) ([]byte, error) {
	if !bytes.HasSuffix(f.Payload, []byte("MEMB")) || f.Participant != "member" {
		m.refused.Add(1)
		return nil, errors.New("not the member's")
	}
	return f.Payload[:len(f.Payload)-4], nil
}

// TestGatewayTransformsEachFrame: with an encrypting transformer the
// gateway publishes into the E2EE room, declaring its tracks encrypted;
// every Opus packet the member receives carries the transformer's mark,
// none the client receives carries the member's.
func TestGatewayTransformsEachFrame(t *testing.T) {
	var memberMarked, memberPlain, clientMarked atomic.Int64
	tr := &marker{}
	b := newBed(t, bedOptions{
		transformer:      tr,
		memberEncryption: livekit.Encryption_GCM,
		memberFrame:      func(f []byte) []byte { return append(f, "MEMB"...) },
		onMemberPayload: func(kind webrtc.RTPCodecType, p []byte) {
			if kind != webrtc.RTPCodecTypeAudio {
				return
			}
			if bytes.HasSuffix(p, []byte("ICBX")) {
				memberMarked.Add(1)
			} else {
				memberPlain.Add(1)
			}
		},
		onClientPayload: func(kind webrtc.RTPCodecType, p []byte) {
			if bytes.HasSuffix(p, []byte("MEMB")) {
				clientMarked.Add(1)
			}
		},
	})
	waitFor(t, 60*time.Second, "media both ways", func() bool {
		return memberMarked.Load() > 50 && b.atMember.video.Load() > 20_000 &&
			b.atClient.audio.Load() > 4_000 && b.atClient.video.Load() > 20_000
	})
	if memberPlain.Load() != 0 || clientMarked.Load() != 0 || tr.refused.Load() != 0 {
		t.Fatalf("member: %d marked, %d unmarked Opus packets; client: %d packets with the member's mark; refused %d",
			memberMarked.Load(), memberPlain.Load(), clientMarked.Load(), tr.refused.Load())
	}
	if err := b.gw.Err(); err != nil {
		t.Fatalf("Err = %v", err)
	}
	if v := b.metric(t, "icebox_gateway_frames_dropped_total", "direction", "down", "reason", "transform"); v != 0 {
		t.Errorf("frames dropped by the transformer: %v", v)
	}
}
