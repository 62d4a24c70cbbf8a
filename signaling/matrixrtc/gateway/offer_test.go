//go:build linux

package gateway_test

import (
	"context"
	"sync"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
)

// TestGatewayOfferMode: the leg of a call a MatrixRTC member places to an
// icebox client. The gateway offers first (Offer: no room joined yet, the
// client may answer much later), the client (pion) answers with its own
// Opus and VP8 on the offered transceivers, Accept joins the room of the
// real livekit-server and applies the answer; media then flows both ways
// between the client and a member (server-sdk-go) as in Answer mode.
func TestGatewayOfferMode(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	lk := startSFU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	var wg sync.WaitGroup
	mediaCtx, stopMedia := context.WithCancel(ctx)
	b := &bed{lk: lk, reg: prometheus.NewRegistry()}

	gw, err := gateway.New(gateway.Config{Transformer: gateway.Identity{}, Settings: loopback(),
		Metrics: gateway.NewMetrics(b.reg), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	b.gw = gw
	offer, err := gw.Offer(ctx)
	if err != nil {
		t.Fatalf("Offer: %v", err)
	}
	if p, _ := roomList(t, lk); p > 0 {
		t.Fatalf("%d participants in the room before Accept", p)
	}
	if v := b.metric(t, "icebox_gateway_legs_active"); v != 0 {
		t.Errorf("legs_active %v before Accept", v)
	}

	// The member is in the room before the client answers.
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
	if _, err := member.LocalParticipant.PublishTrack(mAudio, &lksdk.TrackPublicationOptions{Name: "mic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := member.LocalParticipant.PublishTrack(mVideo, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480}); err != nil {
		t.Fatal(err)
	}
	sendMedia(mediaCtx, &wg, lkSampleWriter{LocalTrack: mAudio}, lkSampleWriter{LocalTrack: mVideo})

	// The client answers the gateway's offer, its tracks on the offered
	// transceivers.
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(*loopback())).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = gw.Close()
		stopMedia()
		member.Disconnect()
		_ = client.Close()
		wg.Wait()
	})
	client.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { b.atClient.read(&wg, track) })
	if err := client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
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
		if _, err := client.AddTrack(tr); err != nil {
			t.Fatal(err)
		}
	}
	answer, err := client.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	start := time.Now()
	if err := gw.Accept(ctx, client.LocalDescription().SDP, lk.URL, token(t, lk, "icebox-gw")); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	joined := time.Since(start)
	sendMedia(mediaCtx, &wg, cAudio, cVideo)
	waitFor(t, 60*time.Second, "media both ways", func() bool {
		return b.atMember.audio.Load() > 8_000 && b.atMember.video.Load() > 54_000 &&
			b.atClient.audio.Load() > 8_000 && b.atClient.video.Load() > 54_000
	})
	t.Logf("Accept (join + answer) %v, media both ways after %v; member received audio %d B video %d B; client received audio %d B video %d B; gateway %+v",
		joined.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
		b.atMember.audio.Load(), b.atMember.video.Load(), b.atClient.audio.Load(), b.atClient.video.Load(), gw.Stats())
	if v := b.metric(t, "icebox_gateway_legs_active"); v != 1 {
		t.Errorf("legs_active %v during the leg", v)
	}
	if err := gw.Accept(ctx, client.LocalDescription().SDP, "", ""); err == nil {
		t.Error("a second Accept succeeded")
	}
}
