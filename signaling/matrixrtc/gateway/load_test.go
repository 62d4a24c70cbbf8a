//go:build linux

package gateway_test

// The gateway's load benchmark (issue 17): N bridged legs at once through
// the real livekit-server, each with a plain pion client sending Opus
// (50 frames/s) and VP8 (30 frames/s, 1–3 packets a frame) up and a LiveKit
// member (server-sdk-go) publishing the same down, end-to-end encrypted as
// in production (an e2ee.Session per leg whose key the member got, the
// member's key delivered to the Session). It runs only when
// ICEBOX_BENCH_GATEWAY lists leg counts ("1,20"); bench/measure_gateway.go
// runs it from `make bench` and parses the "gateway load:" line it logs.
//
// What it measures, and how (the peers run in this process too):
//   - CPU: a CPU profile over the measurement window, each sample
//     attributed by goroutine label. The gateway (gateway.New, Answer, the
//     e2ee Session) is started under pprof label side=gateway, the peers
//     (members, clients, the direct-path probe) under side=peer; goroutines
//     inherit the label of the goroutine that started them, so pion's and
//     server-sdk-go's goroutines of each side carry it. Samples with no label
//     (garbage collection, runtime) are shared pro rata of the labelled
//     ones. Divided by the RTP packets the gateway sent on (received by the
//     members from the gateway's tracks, and by the clients).
//   - Latency: each Opus frame, and each one-packet VP8 delta frame (every
//     other frame), carries its send time (wall clock, one process). Up: client → gateway → SFU → member; down: member → SFU →
//     gateway → client; direct: a LiveKit participant → SFU → another
//     (the path without the gateway, in a room of its own, under the same
//     load). The gateway's added latency is a via-gateway percentile minus
//     the direct one; it includes the pion client's send path, which a
//     browser has too.
//   - Memory: Go heap in use (after a GC) with the peers set up and the
//     members publishing, then with the N legs live; the difference per leg
//     is an upper bound (it also holds the clients' connected state and the
//     members' subscriptions to the gateway's tracks). Goroutines per leg:
//     those labelled side=gateway, exactly.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

const (
	loadEnv        = "ICEBOX_BENCH_GATEWAY"         // leg counts, e.g. "1,20"
	loadSecondsEnv = "ICEBOX_BENCH_GATEWAY_SECONDS" // measurement window; default 10
	loadSetupLimit = 4                              // legs set up at once
	loadProfileEnv = "ICEBOX_BENCH_GATEWAY_PROFILE" // a directory: keep the CPU profiles there
)

// TestGatewayLoad runs the load once per leg count in ICEBOX_BENCH_GATEWAY.
func TestGatewayLoad(t *testing.T) {
	spec := os.Getenv(loadEnv)
	if spec == "" {
		t.Skipf("the gateway's load benchmark: set %s (e.g. 1,20); bench/measure_gateway.go does", loadEnv)
	}
	secs := 10.0
	if s := os.Getenv(loadSecondsEnv); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || v <= 0 || v > 120 {
			t.Fatalf("%s=%q: want seconds in (0, 120]", loadSecondsEnv, s)
		}
		secs = v
	}
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 100 {
			t.Fatalf("%s=%q: want leg counts in [1, 100]", loadEnv, spec)
		}
		t.Run(fmt.Sprintf("legs=%d", n), func(t *testing.T) { runLoad(t, n, time.Duration(secs*float64(time.Second))) })
	}
}

// loadStats is what the legs' peers observe, shared by the legs.
type loadStats struct {
	measuring              atomic.Bool
	offered                atomic.Uint64 // frames the legs' peers sent, in the window
	atMember, atClient     atomic.Uint64 // RTP packets from the gateway, in the window
	memberBad, clientBad   atomic.Uint64 // frames that failed to decrypt or carried no time
	mu                     sync.Mutex
	up, down, direct       []float64 // one-way latency of Opus frames, ms
	vUp, vDown, vDirect    []float64 // one-way latency of one-packet VP8 frames, ms
	legAudioUp, legAudioDn []atomic.Uint64
}

func (s *loadStats) latency(to *[]float64, payload []byte) bool {
	if len(payload) < 9 || payload[0] != 0xfc {
		return false
	}
	return s.latencyAt(to, payload[1:9])
}

// latencyAt records the latency of a frame whose send time is stamp.
func (s *loadStats) latencyAt(to *[]float64, stamp []byte) bool {
	sent := int64(binary.BigEndian.Uint64(stamp))
	if !s.measuring.Load() {
		return true
	}
	ms := float64(time.Now().UnixNano()-sent) / 1e6
	s.mu.Lock()
	*to = append(*to, ms)
	s.mu.Unlock()
	return true
}

// timedOpus is an Opus frame (TOC byte of a 20 ms CELT frame) carrying
// its send time.
func timedOpus() []byte {
	b := make([]byte, 80)
	_, _ = rand.Read(b)
	b[0] = 0xfc
	binary.BigEndian.PutUint64(b[1:9], uint64(time.Now().UnixNano()))
	return b
}

// loadVP8 is the i-th VP8 frame: a key frame every 30th (3 packets),
// otherwise 1 or 2 packets (pion's packetizer cuts at 1200 bytes).
func loadVP8(i int) []byte {
	switch {
	case i%30 == 0:
		return vp8Frame(true, 3000)
	case i%2 == 0:
		return vp8Frame(false, 1500)
	}
	// One packet, timed (after the 3 header bytes LiveKit's E2EE leaves
	// in clear): its latency is measured.
	f := vp8Frame(false, timedVP8Len)
	binary.BigEndian.PutUint64(f[3:11], uint64(time.Now().UnixNano()))
	return f
}

// timedVP8Len is the size of the VP8 delta frames that carry their send
// time: one RTP packet each, so a receiver sees the whole frame in one.
const timedVP8Len = 700

// vp8Whole is the frame in a VP8 RTP packet that holds a whole frame (start
// of the first partition and the marker bit), nil otherwise.
func vp8Whole(pkt *rtp.Packet) []byte {
	if !pkt.Marker {
		return nil
	}
	var d codecs.VP8Packet
	f, err := d.Unmarshal(pkt.Payload)
	if err != nil || d.S != 1 || d.PID != 0 {
		return nil
	}
	return f
}

// videoLatency records a one-packet VP8 frame's latency (decrypted with
// ring, if set).
func (s *loadStats) videoLatency(to *[]float64, pkt *rtp.Packet, ring *framecrypt.KeyRing) {
	f := vp8Whole(pkt)
	if f == nil {
		return
	}
	if ring != nil {
		var err error
		if f, err = ring.Decrypt(nil, f, framecrypt.VP8, false); err != nil {
			return
		}
	}
	if len(f) == timedVP8Len && !framecrypt.IsVP8KeyFrame(f) {
		s.latencyAt(to, f[3:11])
	}
}

// sendTimed writes Opus every 20 ms and VP8 every 33 ms (each frame
// through enc, if set) until ctx ends.
func sendTimed(ctx context.Context, wg *sync.WaitGroup, audio, video sampleWriter, enc func([]byte) []byte, st *loadStats) {
	count := func() {
		if st != nil && st.measuring.Load() {
			st.offered.Add(1)
		}
	}
	if enc == nil {
		enc = func(b []byte) []byte { return b }
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		at, vt := time.NewTicker(20*time.Millisecond), time.NewTicker(33*time.Millisecond)
		defer at.Stop()
		defer vt.Stop()
		for i := 0; ; {
			select {
			case <-ctx.Done():
				return
			case <-at.C:
				_ = audio.WriteSample(media.Sample{Data: enc(timedOpus()), Duration: 20 * time.Millisecond})
				count()
			case <-vt.C:
				if video != nil {
					_ = video.WriteSample(media.Sample{Data: enc(loadVP8(i)), Duration: 33 * time.Millisecond})
					count()
				}
				i++
			}
		}
	}()
}

func roomToken(t *testing.T, lk *livekittest.Server, room, identity string) string {
	t.Helper()
	jwt, err := auth.NewAccessToken(lk.APIKey, lk.APISecret).SetIdentity(identity).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room}).SetValidFor(10 * time.Minute).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	return jwt
}

// memberCrypt is a member's frame encryption, as livekit-client's: its
// own key out, icebox's key in.
type memberCrypt struct {
	mu     sync.Mutex
	enc    *framecrypt.Encryptor
	icebox *framecrypt.KeyRing
	ssrc   uint32
}

func (m *memberCrypt) encrypt(f []byte) []byte {
	codec := framecrypt.VP8
	if len(f) == 80 && f[0] == 0xfc {
		codec = framecrypt.Opus
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out, err := m.enc.Encrypt(nil, f, codec, framecrypt.IsVP8KeyFrame(f), m.ssrc, uint32(time.Now().UnixNano()/1000))
	if err != nil {
		return f
	}
	return out
}

// loadLeg is one bridged leg and its two peers.
type loadLeg struct {
	i      int
	member *lksdk.Room
	client *webrtc.PeerConnection
	cAudio *webrtc.TrackLocalStaticSample
	cVideo *webrtc.TrackLocalStaticSample
	gw     *gateway.Gateway
	sess   *e2ee.Session
}

// setupPeers joins leg i's member (publishing, encrypted) and makes its
// client's offer. Run under the peer label.
func setupPeers(ctx context.Context, t *testing.T, lk *livekittest.Server, st *loadStats, wg *sync.WaitGroup, l *loadLeg,
	mc *memberCrypt) error {
	room := fmt.Sprintf("gwload-%d", l.i)
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			audio := track.Kind() == webrtc.RTPCodecTypeAudio
			for {
				pkt, _, err := track.ReadRTP()
				if err != nil {
					return
				}
				if st.measuring.Load() {
					st.atMember.Add(1)
				}
				if !audio {
					st.videoLatency(&st.vUp, pkt, mc.icebox)
					continue
				}
				plain, err := mc.icebox.Decrypt(nil, pkt.Payload, framecrypt.Opus, false)
				if err != nil || !st.latency(&st.up, plain) {
					st.memberBad.Add(1)
					continue
				}
				st.legAudioUp[l.i].Add(1)
			}
		}()
	}
	member, err := lksdk.ConnectToRoomWithToken(lk.URL, roomToken(t, lk, room, "member"), cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		return fmt.Errorf("member %d join: %w", l.i, err)
	}
	l.member = member
	mAudio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		return err
	}
	mVideo, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		return err
	}
	if _, err := member.LocalParticipant.PublishTrack(mAudio, &lksdk.TrackPublicationOptions{Name: "mic", Encryption: livekit.Encryption_GCM}); err != nil {
		return err
	}
	if _, err := member.LocalParticipant.PublishTrack(mVideo, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480, Encryption: livekit.Encryption_GCM}); err != nil {
		return err
	}
	sendTimed(ctx, wg, lkSampleWriter{LocalTrack: mAudio}, lkSampleWriter{LocalTrack: mVideo}, mc.encrypt, st)

	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return err
	}
	client, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(*loopback())).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	l.client = client
	if l.cAudio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "client"); err != nil {
		return err
	}
	if l.cVideo, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "client"); err != nil {
		return err
	}
	for _, tr := range []webrtc.TrackLocal{l.cAudio, l.cVideo} {
		if _, err := client.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
			return err
		}
	}
	client.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			audio := track.Kind() == webrtc.RTPCodecTypeAudio
			for {
				pkt, _, err := track.ReadRTP()
				if err != nil {
					return
				}
				if st.measuring.Load() {
					st.atClient.Add(1)
				}
				if !audio {
					st.videoLatency(&st.vDown, pkt, nil)
					continue
				}
				if !st.latency(&st.down, pkt.Payload) {
					st.clientBad.Add(1)
					continue
				}
				st.legAudioDn[l.i].Add(1)
			}
		}()
	})
	offer, err := client.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(client)
	if err := client.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func runLoad(t *testing.T, n int, window time.Duration) {
	lk := startSFU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	mediaCtx, stopMedia := context.WithCancel(ctx)
	var wg sync.WaitGroup
	st := &loadStats{legAudioUp: make([]atomic.Uint64, n), legAudioDn: make([]atomic.Uint64, n)}
	legs := make([]*loadLeg, n)
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		stopMedia()
		wg.Wait()
	}()
	var closeMu sync.Mutex
	onClose := func(f func()) { closeMu.Lock(); closers = append(closers, f); closeMu.Unlock() }
	peerLabel, gwLabel := pprof.Labels("side", "peer"), pprof.Labels("side", "gateway")

	// The direct path: probe-a publishes timed, encrypted Opus into a room
	// of its own, probe-b receives it.
	pprof.Do(ctx, peerLabel, func(ctx context.Context) {
		opts := framecrypt.ElementCallOptions()
		ring, _ := framecrypt.NewKeyRing(opts, nil)
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		if err := ring.SetKey(0, key); err != nil {
			t.Fatal(err)
		}
		mc := &memberCrypt{enc: framecrypt.NewEncryptor(ring), ssrc: 0xd1ec}
		cb := lksdk.NewRoomCallback()
		cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					pkt, _, err := track.ReadRTP()
					if err != nil {
						return
					}
					if track.Kind() == webrtc.RTPCodecTypeVideo {
						st.videoLatency(&st.vDirect, pkt, ring)
					} else if plain, err := ring.Decrypt(nil, pkt.Payload, framecrypt.Opus, false); err == nil {
						st.latency(&st.direct, plain)
					}
				}
			}()
		}
		b, err := lksdk.ConnectToRoomWithToken(lk.URL, roomToken(t, lk, "gwload-direct", "probe-b"), cb, lksdk.WithAutoSubscribe(true))
		if err != nil {
			t.Fatalf("probe-b join: %v", err)
		}
		onClose(b.Disconnect)
		a, err := lksdk.ConnectToRoomWithToken(lk.URL, roomToken(t, lk, "gwload-direct", "probe-a"), lksdk.NewRoomCallback())
		if err != nil {
			t.Fatalf("probe-a join: %v", err)
		}
		onClose(a.Disconnect)
		audio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
		if err != nil {
			t.Fatal(err)
		}
		video, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic", Encryption: livekit.Encryption_GCM}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480, Encryption: livekit.Encryption_GCM}); err != nil {
			t.Fatal(err)
		}
		sendTimed(mediaCtx, &wg, lkSampleWriter{LocalTrack: audio}, lkSampleWriter{LocalTrack: video}, mc.encrypt, nil)
	})

	// The peers of every leg, and each leg's e2ee Session with the keys
	// exchanged.
	crypts := make([]*memberCrypt, n)
	sessions := make([]*e2ee.Session, n)
	memberDev := membership.Device{UserID: "@member:example.org", DeviceID: "MEMBERDEV"}
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	for i := range n {
		opts := framecrypt.ElementCallOptions()
		atMember, _ := framecrypt.NewKeyRing(opts, nil)
		ring, _ := framecrypt.NewKeyRing(opts, nil)
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		if err := ring.SetKey(0, key); err != nil {
			t.Fatal(err)
		}
		crypts[i] = &memberCrypt{enc: framecrypt.NewEncryptor(ring), icebox: atMember, ssrc: 0x5eed + uint32(i)}
		pprof.Do(ctx, gwLabel, func(ctx context.Context) {
			reg := e2ee.NewRegistry(&keyCapture{ring: atMember}, e2ee.Config{})
			room := fmt.Sprintf("!load%d:example.org", i)
			reg.RTCKey(e2ee.KeyEvent{RoomID: room, Device: memberDev, Index: 0, Key: key, SentTS: time.Now()})
			sessions[i] = reg.Open(room, self)
			sessions[i].Start(ctx, []membership.Device{memberDev})
		})
		onClose(sessions[i].Close)
		legs[i] = &loadLeg{i: i, sess: sessions[i]}
	}
	parallel := func(what string, f func(l *loadLeg) error) {
		t.Helper()
		sem := make(chan struct{}, loadSetupLimit)
		errs := make(chan error, n)
		var setup sync.WaitGroup
		for _, l := range legs {
			setup.Add(1)
			sem <- struct{}{}
			go func() {
				defer setup.Done()
				defer func() { <-sem }()
				errs <- f(l)
			}()
		}
		setup.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	parallel("peers", func(l *loadLeg) error {
		var err error
		pprof.Do(ctx, peerLabel, func(ctx context.Context) {
			err = setupPeers(mediaCtx, t, lk, st, &wg, l, crypts[l.i])
		})
		if l.member != nil {
			onClose(l.member.Disconnect)
		}
		if l.client != nil {
			onClose(func() { _ = l.client.Close() })
		}
		return err
	})
	heapBefore, goroutinesBefore := heapInUse(), runtime.NumGoroutine()

	// The gateways: each answers its client's offer and joins its room.
	start := time.Now()
	parallel("gateways", func(l *loadLeg) error {
		var answer string
		var err error
		pprof.Do(ctx, gwLabel, func(ctx context.Context) {
			l.gw, err = gateway.New(gateway.Config{URL: lk.URL, Token: roomToken(t, lk, fmt.Sprintf("gwload-%d", l.i), memberDev.Identity()+"-icebox"),
				Transformer: asIdentity{l.sess.Transformer(), memberDev.Identity()}, E2EE: true, Settings: loopback(),
				Logger: zerolog.Nop()})
			if err == nil {
				answer, err = l.gw.Answer(ctx, l.client.LocalDescription().SDP)
			}
		})
		if l.gw != nil {
			onClose(func() { _ = l.gw.Close() })
		}
		if err != nil {
			return fmt.Errorf("leg %d: %w", l.i, err)
		}
		var serr error
		pprof.Do(ctx, peerLabel, func(context.Context) {
			serr = l.client.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer})
			if serr == nil {
				sendTimed(mediaCtx, &wg, l.cAudio, l.cVideo, nil, st)
			}
		})
		return serr
	})
	waitFor(t, 2*time.Minute, "decrypted audio both ways on every leg", func() bool {
		for i := range n {
			if st.legAudioUp[i].Load() < 10 || st.legAudioDn[i].Load() < 10 {
				return false
			}
		}
		return true
	})
	setup := time.Since(start)
	heapAfter, goroutinesAfter := heapInUse(), runtime.NumGoroutine()
	gwGoroutines, _, err := labelledProfile("goroutine")
	if err != nil {
		t.Fatal(err)
	}

	// The measurement window.
	var prof bytes.Buffer
	// The profile's samples (100 Hz) only split the process's CPU time
	// (getrusage) by side: a few hundred samples in a window of seconds.
	if err := pprof.StartCPUProfile(&prof); err != nil {
		t.Fatalf("CPU profile: %v", err)
	}
	ru0 := rusage(t)
	frames0, dropped0 := gwFrames(legs)
	st.memberBad.Store(0)
	st.clientBad.Store(0)
	st.measuring.Store(true)
	t0 := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	st.measuring.Store(false)
	elapsed := time.Since(t0)
	ru1 := rusage(t)
	pprof.StopCPUProfile()
	frames, dropped := gwFrames(legs)
	frames, dropped = frames-frames0, dropped-dropped0
	if dir := os.Getenv(loadProfileEnv); dir != "" {
		// For go tool pprof -tagfocus=side=gateway -top.
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("gateway-load-%d.pprof", n)), prof.Bytes(), 0o644); err != nil {
			t.Error(err)
		}
	}
	byLabel, err := parseProfile(prof.Bytes(), 0)
	if err != nil {
		t.Fatalf("CPU profile: %v", err)
	}
	for _, l := range legs {
		if err := l.gw.Err(); err != nil {
			t.Fatalf("leg %d ended: %v", l.i, err)
		}
	}

	// Samples by side; the unlabelled ones (GC, runtime) shared pro rata.
	gwN, peerN, otherN := float64(byLabel["gateway"]), float64(byLabel["peer"]), float64(byLabel[""])
	totalN := math.Max(1, gwN+peerN+otherN)
	procNs := float64(ru1 - ru0)
	gwNs := procNs * (gwN + otherN*gwN/math.Max(1, gwN+peerN)) / totalN
	gwLabelledNs := procNs * gwN / totalN
	packets := st.atMember.Load() + st.atClient.Load()
	st.mu.Lock()
	up, down, direct := slices.Clone(st.up), slices.Clone(st.down), slices.Clone(st.direct)
	vUp, vDown, vDirect := slices.Clone(st.vUp), slices.Clone(st.vDown), slices.Clone(st.vDirect)
	st.mu.Unlock()
	line := fmt.Sprintf("gateway load: legs=%d window_s=%.1f setup_s=%.1f packets=%d packets_up=%d packets_down=%d frames_offered=%d frames=%d dropped=%d"+
		" gw_us_per_pkt=%.2f gw_labelled_us_per_pkt=%.2f process_us_per_pkt=%.2f gw_cores=%.3f process_cores=%.3f"+
		" samples_gateway=%.0f samples_peer=%.0f samples_unlabelled=%.0f"+
		" up_p50_ms=%.2f up_p99_ms=%.2f down_p50_ms=%.2f down_p99_ms=%.2f direct_p50_ms=%.2f direct_p99_ms=%.2f"+
		" added_up_p50_ms=%.2f added_up_p99_ms=%.2f added_down_p50_ms=%.2f added_down_p99_ms=%.2f latency_samples=%d/%d/%d"+
		" vp8_up_p50_ms=%.2f vp8_up_p99_ms=%.2f vp8_down_p50_ms=%.2f vp8_down_p99_ms=%.2f vp8_direct_p50_ms=%.2f vp8_direct_p99_ms=%.2f"+
		" vp8_added_up_p50_ms=%.2f vp8_added_down_p50_ms=%.2f vp8_latency_samples=%d/%d/%d"+
		" heap_kib_per_leg=%.0f goroutines_per_leg=%.1f all_goroutines_per_leg=%.1f bad_frames=%d",
		n, elapsed.Seconds(), setup.Seconds(), packets, st.atMember.Load(), st.atClient.Load(), st.offered.Load(), frames, dropped,
		gwNs/1e3/float64(max(packets, 1)), gwLabelledNs/1e3/float64(max(packets, 1)), procNs/1e3/float64(max(packets, 1)),
		gwNs/float64(elapsed.Nanoseconds()), procNs/float64(elapsed.Nanoseconds()),
		gwN, peerN, otherN,
		pct(up, 50), pct(up, 99), pct(down, 50), pct(down, 99), pct(direct, 50), pct(direct, 99),
		pct(up, 50)-pct(direct, 50), pct(up, 99)-pct(direct, 99), pct(down, 50)-pct(direct, 50), pct(down, 99)-pct(direct, 99),
		len(up), len(down), len(direct),
		pct(vUp, 50), pct(vUp, 99), pct(vDown, 50), pct(vDown, 99), pct(vDirect, 50), pct(vDirect, 99),
		pct(vUp, 50)-pct(vDirect, 50), pct(vDown, 50)-pct(vDirect, 50), len(vUp), len(vDown), len(vDirect),
		float64(heapAfter-heapBefore)/1024/float64(n), float64(gwGoroutines["gateway"])/float64(n),
		float64(goroutinesAfter-goroutinesBefore)/float64(n), st.memberBad.Load()+st.clientBad.Load())
	t.Log(line)
	if packets == 0 || len(up) == 0 || len(down) == 0 || len(direct) == 0 {
		t.Errorf("no media measured: %s", line)
	}
}

// gwFrames is the frames the legs forwarded, both ways, and dropped.
func gwFrames(legs []*loadLeg) (forwarded, dropped uint64) {
	for _, l := range legs {
		s := l.gw.Stats()
		forwarded += s.UpFrames + s.DownFrames
		dropped += s.Dropped
	}
	return forwarded, dropped
}

// heapInUse is the Go heap in use after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// rusage is the process's user+system CPU time so far, ns.
func rusage(t *testing.T) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// pct is the p-th percentile (nearest rank); NaN for none.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	v := slices.Clone(xs)
	slices.Sort(v)
	rank := int(math.Ceil(p / 100 * float64(len(v))))
	return v[max(1, min(rank, len(v)))-1]
}

// labelledProfile writes the named runtime profile and sums its first
// value by the "side" label.
func labelledProfile(name string) (map[string]int64, int64, error) {
	var b bytes.Buffer
	if err := pprof.Lookup(name).WriteTo(&b, 0); err != nil {
		return nil, 0, err
	}
	m, err := parseProfile(b.Bytes(), 0)
	var total int64
	for _, v := range m {
		total += v
	}
	return m, total, err
}

// parseProfile sums value[vi] of a gzipped pprof profile's samples by
// their "side" label ("" for none), read with pprof's own profile package.
func parseProfile(gz []byte, vi int) (map[string]int64, error) {
	p, err := profile.Parse(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, s := range p.Sample {
		if vi >= len(s.Value) {
			continue
		}
		side := ""
		if l := s.Label["side"]; len(l) > 0 {
			side = l[0]
		}
		out[side] += s.Value[vi]
	}
	return out, nil
}
