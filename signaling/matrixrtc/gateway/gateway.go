// Package gateway is icebox's participant in a LiveKit room (the media
// half of a MatrixRTC call): it answers a plain WebRTC client's SDP offer
// with a pion/webrtc endpoint of its own, joins the LiveKit room with a
// JWT through livekit's Go SDK (server-sdk-go), publishes the client's
// Opus and VP8 into the room, and forwards the other participants' tracks
// down to the client.
//
// Media is forwarded frame by frame: RTP is depacketized into encoded
// frames (pion's samplebuilder), each frame passes the FrameTransformer
// (end-to-end encryption: framecrypt's implementation; Identity in tests)
// and is packetized again on the other side. The gateway never publishes
// into an end-to-end encrypted room (Config.E2EE, or a member's track
// published encrypted) unless the transformer encrypts.
//
// Whether a room is end-to-end encrypted is the caller's to say
// (Config.E2EE: Element Call encrypts the media of calls in encrypted
// Matrix rooms); the gateway also learns it from the members' tracks, at
// join and as they publish, and then stops. Without Config.E2EE, a room
// whose first encrypted track is published after the gateway started
// publishing has had the gateway's first frames in clear: set it.
//
// A leg starts from the client's offer (Answer: an icebox client calls a
// MatrixRTC room) or from the gateway's own offer (Offer, then Accept with
// the client's answer: a MatrixRTC caller rings an icebox client, who
// answers later; the room is joined only then).
//
// One Gateway is one client's leg: one client PeerConnection, one LiveKit
// participant. The client gets one audio and one video track down; the
// first member track of each kind fills it (a one-to-one call; mixing or
// more tracks need renegotiation with the client, later).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
	"github.com/rs/zerolog"
)

// Defaults of Config.
const (
	defaultJoinTimeout = 15 * time.Second
	// streamID is the client's media stream of the members' tracks.
	streamID = "icebox-gateway"
)

// The codecs the gateway forwards, and their payload types towards the
// client (the client's offer decides; these are pion's and browsers'
// usual numbers).
var (
	opusCodec = webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}}
	vp8Codec = webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: []webrtc.RTCPFeedback{
			{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}, {Type: "goog-remb"}}}}
)

// Config is one leg's.
type Config struct {
	// URL is LiveKit's signalling URL (ws:// or wss://). Required by
	// Answer; a leg started with Offer may get it with Accept instead.
	URL string
	// Token is the participant's LiveKit JWT: room join, publish and
	// subscribe grants. Required with URL; never logged.
	Token string
	// Transformer is applied to every frame (transform.go). Required.
	Transformer FrameTransformer
	// E2EE says the room's media is end-to-end encrypted (Element Call in
	// an encrypted Matrix room); a member's track published encrypted
	// says so too. Then Transformer must encrypt.
	E2EE bool
	// Settings configures the client's PeerConnection (ports, NAT 1:1,
	// interfaces); nil: pion's defaults.
	Settings *webrtc.SettingEngine
	// ICEServers are the client PeerConnection's (icebox's TURN).
	ICEServers []webrtc.ICEServer
	// JoinTimeout bounds joining the LiveKit room. Default: 15 s.
	JoinTimeout time.Duration
	// Metrics are shared by the legs (NewMetrics). Default: none.
	Metrics *Metrics
	// OnMemberLeft, if set, is told when another participant left the
	// LiveKit room (or vanished: LiveKit dropped it), with how many others
	// remain: a member's client can vanish without its Matrix membership
	// leaving. Called on a goroutine of its own; must not block.
	OnMemberLeft func(identity string, remaining int)
	// Logger is the parent logger; the gateway adds component=gateway.
	Logger zerolog.Logger
}

// Stats counts what the leg forwarded. Bytes are frame payload bytes
// after the transformer.
type Stats struct {
	UpFrames, UpBytes     uint64 // client → room
	DownFrames, DownBytes uint64 // room → client
	Dropped               uint64 // frames the transformer refused, or held back unencrypted
	Unsupported           uint64 // tracks in a codec the gateway does not forward
}

// Gateway is one client's leg into a LiveKit room.
type Gateway struct {
	cfg Config
	log zerolog.Logger

	room *lksdk.Room
	pc   *webrtc.PeerConnection
	down map[webrtc.RTPCodecType]*downTrack

	e2ee   atomic.Bool // the room is end-to-end encrypted
	closed atomic.Bool

	mu       sync.Mutex
	err      error         // why the leg ended (first failure)
	roomLeft bool          // room.Disconnect was called
	live     bool          // counted in the legs gauge (answered, not ended)
	done     chan struct{} // closed when the leg fails or is closed
	mode     int           // mode*: how the leg started
	accepted bool          // Accept was called

	wg sync.WaitGroup // forwarding goroutines

	upFrames, upBytes, downFrames, downBytes, dropped, unsupported atomic.Uint64
}

// New checks cfg; Answer starts the leg.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.URL == "" && cfg.Token != "":
		return nil, errors.New("gateway: URL is required")
	case cfg.Token == "" && cfg.URL != "":
		return nil, errors.New("gateway: Token is required")
	case cfg.Transformer == nil:
		return nil, errors.New("gateway: Transformer is required")
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = defaultJoinTimeout
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger.With().Str("component", "gateway").Logger(), done: make(chan struct{})}
	g.e2ee.Store(cfg.E2EE)
	return g, nil
}

// Answer joins the LiveKit room, answers the client's offer and returns
// the answer SDP (ICE candidates gathered; the client's trickled ones go
// to AddCandidate). It may be called once, and not after Offer. On error
// the leg is closed.
func (g *Gateway) Answer(ctx context.Context, offer string) (string, error) {
	if err := g.begin(modeAnswer); err != nil {
		return "", err
	}
	if g.cfg.URL == "" {
		err := errors.New("gateway: answer: URL and Token are required")
		g.fail(err)
		return "", err
	}
	answer, err := g.start(ctx, offer)
	if err != nil {
		return "", g.failed(err)
	}
	g.goLive()
	return answer, nil
}

// Offer makes the leg's client PeerConnection and returns its offer (one
// audio and one video track each way, ICE candidates gathered), without
// joining the room: Accept does that with the client's answer. It may be
// called once, and not after Answer. On error the leg is closed.
func (g *Gateway) Offer(ctx context.Context) (string, error) {
	if err := g.begin(modeOffer); err != nil {
		return "", err
	}
	offer, err := g.offer(ctx)
	if err != nil {
		return "", g.failed(err)
	}
	return offer, nil
}

func (g *Gateway) offer(ctx context.Context) (string, error) {
	if err := g.newClientPC(); err != nil {
		return "", err
	}
	offer, err := g.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("gateway: create the offer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(g.pc)
	if err := g.pc.SetLocalDescription(offer); err != nil {
		return "", fmt.Errorf("gateway: set the offer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gateway: gathering ICE candidates: %w", ctx.Err())
	}
	return g.pc.LocalDescription().SDP, nil
}

// Accept completes a leg started with Offer: it joins the LiveKit room
// (at url with token; "" keeps Config's) and then applies the client's
// answer, so the client's media, once it flows, has a room to go to. On
// error the leg is closed.
func (g *Gateway) Accept(ctx context.Context, answer, url, token string) error {
	g.mu.Lock()
	ok := g.mode == modeOffer && !g.accepted
	g.accepted = true
	g.mu.Unlock()
	if !ok {
		return errors.New("gateway: accept: not a leg waiting for its answer (Offer first, Accept once)")
	}
	if url != "" {
		g.cfg.URL, g.cfg.Token = url, token
	}
	if g.cfg.URL == "" || g.cfg.Token == "" {
		return g.failed(errors.New("gateway: accept: URL and Token are required"))
	}
	if g.e2ee.Load() && !g.cfg.Transformer.Encrypts() {
		return g.failed(ErrUnencrypted)
	}
	if err := g.joinRoom(ctx); err != nil {
		return g.failed(err)
	}
	if err := g.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return g.failed(fmt.Errorf("gateway: accept: the client's answer: %w", err))
	}
	g.goLive()
	return nil
}

// AddCandidate adds an ICE candidate the client trickled (after Answer
// returned, or after Accept).
func (g *Gateway) AddCandidate(c webrtc.ICECandidateInit) error {
	g.mu.Lock()
	pc := g.pc
	g.mu.Unlock()
	if pc == nil {
		return errors.New("gateway: add a candidate: no client connection yet")
	}
	if err := pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("gateway: add a candidate: %w", err)
	}
	return nil
}

// How a leg started (Gateway.mode).
const (
	modeNone = iota
	modeAnswer
	modeOffer
)

// begin starts the leg once, in mode.
func (g *Gateway) begin(mode int) error {
	g.mu.Lock()
	if g.mode != modeNone {
		g.mu.Unlock()
		return errors.New("gateway: already started")
	}
	g.mode = mode
	g.mu.Unlock()
	if g.e2ee.Load() && !g.cfg.Transformer.Encrypts() {
		g.fail(ErrUnencrypted)
		return ErrUnencrypted
	}
	return nil
}

// failed ends the leg for err and returns the first reason (an E2EE room
// found while joining closes the client connection under the answer being
// made, which fails it with a less useful error).
func (g *Gateway) failed(err error) error {
	g.fail(err)
	_ = g.Close()
	return g.Err()
}

// goLive counts the leg in the legs gauge, unless it ended meanwhile.
func (g *Gateway) goLive() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.done:
	default:
		if !g.live {
			g.live = true
			g.cfg.Metrics.legs.Inc()
		}
	}
}

func (g *Gateway) start(ctx context.Context, offer string) (string, error) {
	if err := g.newClientPC(); err != nil {
		return "", err
	}
	if err := g.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("gateway: answer: the client's offer: %w", err)
	}
	// The LiveKit room before the answer: a client whose media arrives
	// has somewhere to publish it.
	if err := g.joinRoom(ctx); err != nil {
		return "", err
	}
	answer, err := g.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("gateway: create the answer: %w", err)
	}
	gathered := webrtc.GatheringCompletePromise(g.pc)
	if err := g.pc.SetLocalDescription(answer); err != nil {
		return "", fmt.Errorf("gateway: set the answer: %w", err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", fmt.Errorf("gateway: gathering ICE candidates: %w", ctx.Err())
	}
	return g.pc.LocalDescription().SDP, nil
}

// joinRoom joins the LiveKit room as the leg's participant and learns
// from the members' tracks already there whether it is end-to-end
// encrypted (ErrUnencrypted when the transformer does not encrypt).
func (g *Gateway) joinRoom(ctx context.Context) error {
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = g.onMemberTrack
	cb.OnTrackPublished = g.onMemberPublished
	cb.OnDisconnectedWithReason = func(reason lksdk.DisconnectionReason) {
		g.fail(fmt.Errorf("gateway: LiveKit disconnected: %s", reason))
	}
	if g.cfg.OnMemberLeft != nil {
		cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
			g.cfg.OnMemberLeft(rp.Identity(), g.Others())
		}
	}
	room := lksdk.NewRoom(cb)
	jctx, cancel := context.WithTimeout(ctx, g.cfg.JoinTimeout)
	err := room.JoinWithContextAndToken(jctx, g.cfg.URL, g.cfg.Token, lksdk.WithAutoSubscribe(true))
	cancel()
	if err != nil {
		return fmt.Errorf("gateway: join the LiveKit room at %s: %w", g.cfg.URL, err)
	}
	g.mu.Lock()
	g.room = room
	g.mu.Unlock()
	select {
	case <-g.done: // failed or closed while joining
		g.stop()
		if err := g.Err(); err != nil {
			return err
		}
		return errors.New("gateway: closed while joining")
	default:
	}
	if g.scanRoom(room); g.refuses() {
		// A member's track already in the room is end-to-end encrypted.
		return ErrUnencrypted
	}
	return nil
}

// newClientPC makes the client's PeerConnection: Opus and VP8 only, pion's
// default interceptors (NACK, RTCP reports), one audio and one video track
// down.
func (g *Gateway) newClientPC() error {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterCodec(opusCodec, webrtc.RTPCodecTypeAudio); err != nil {
		return fmt.Errorf("gateway: register Opus: %w", err)
	}
	if err := m.RegisterCodec(vp8Codec, webrtc.RTPCodecTypeVideo); err != nil {
		return fmt.Errorf("gateway: register VP8: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return fmt.Errorf("gateway: interceptors: %w", err)
	}
	opts := []func(*webrtc.API){webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir)}
	if g.cfg.Settings != nil {
		opts = append(opts, webrtc.WithSettingEngine(*g.cfg.Settings))
	}
	pc, err := webrtc.NewAPI(opts...).NewPeerConnection(webrtc.Configuration{ICEServers: g.cfg.ICEServers})
	if err != nil {
		return fmt.Errorf("gateway: client PeerConnection: %w", err)
	}
	g.mu.Lock()
	g.pc = pc
	g.mu.Unlock()
	g.down = make(map[webrtc.RTPCodecType]*downTrack, 2)
	for _, c := range []webrtc.RTPCodecParameters{opusCodec, vp8Codec} {
		kind := webrtc.RTPCodecTypeAudio
		if c.MimeType == webrtc.MimeTypeVP8 {
			kind = webrtc.RTPCodecTypeVideo
		}
		track, err := webrtc.NewTrackLocalStaticSample(c.RTPCodecCapability, kind.String(), streamID)
		if err != nil {
			return fmt.Errorf("gateway: %s track: %w", kind, err)
		}
		sender, err := pc.AddTrack(track)
		if err != nil {
			return fmt.Errorf("gateway: add the %s track: %w", kind, err)
		}
		d := &downTrack{kind: kind, track: track}
		g.down[kind] = d
		if g.goForward() {
			go g.readClientRTCP(sender, d)
		}
	}
	pc.OnTrack(g.onClientTrack)
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			g.fail(fmt.Errorf("gateway: client connection %s", s))
		}
	})
	return nil
}

// scanRoom learns from the members' publications known at join (the join
// response lists them; the callbacks come later, with the subscriptions)
// whether the room is end-to-end encrypted.
func (g *Gateway) scanRoom(room *lksdk.Room) {
	for _, rp := range room.GetRemoteParticipants() {
		for _, pub := range rp.TrackPublications() {
			if info := pub.TrackInfo(); info != nil && info.Encryption != livekit.Encryption_NONE {
				g.e2ee.Store(true)
			}
		}
	}
}

// Others is how many other participants the leg's LiveKit room has now (0
// before it joined).
func (g *Gateway) Others() int {
	g.mu.Lock()
	room := g.room
	g.mu.Unlock()
	if room == nil {
		return 0
	}
	return len(room.GetRemoteParticipants())
}

// Done is closed when the leg ends (failure or Close); Err says why.
func (g *Gateway) Done() <-chan struct{} { return g.done }

// Err is why the leg ended: nil while it runs and after a plain Close.
func (g *Gateway) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// fail ends the leg for err (the first reason is kept). It does not wait
// for the forwarding goroutines (it may run on one); Close does.
func (g *Gateway) fail(err error) {
	g.mu.Lock()
	first := g.err == nil && !g.closed.Load()
	if first {
		g.err = err
	}
	g.mu.Unlock()
	if first {
		g.log.Warn().Err(err).Msg("gateway leg ended")
		g.stop()
	}
}

// stop ends the leg (without waiting): Done closes, and both sides are
// disconnected, each once, also one that start sets after a failure.
func (g *Gateway) stop() {
	g.mu.Lock()
	select {
	case <-g.done:
	default:
		close(g.done)
		reason := "closed"
		switch {
		case errors.Is(g.err, ErrUnencrypted):
			reason = "unencrypted"
		case g.err != nil:
			reason = "failed"
		}
		g.cfg.Metrics.ended.WithLabelValues(reason).Inc()
		if g.live {
			g.live = false
			g.cfg.Metrics.legs.Dec()
		}
	}
	var room *lksdk.Room
	if !g.roomLeft {
		room, g.roomLeft = g.room, g.room != nil
	}
	pc := g.pc
	g.mu.Unlock()
	if room != nil {
		room.Disconnect()
	}
	if pc != nil {
		_ = pc.Close() // idempotent
	}
}

// Close leaves the room, closes the client connection and waits for the
// forwarding to end.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed.Store(true)
	g.mu.Unlock()
	g.stop()
	g.wg.Wait()
	return nil
}

// goForward counts a forwarding goroutine about to start; false once the
// leg is closed (Close is waiting, or has).
func (g *Gateway) goForward() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() {
		return false
	}
	g.wg.Add(1)
	return true
}

// forwarded counts a frame of n bytes forwarded in direction dir.
func (g *Gateway) forwarded(dir string, n int) {
	if dir == dirUp {
		g.upFrames.Add(1)
		g.upBytes.Add(uint64(n))
	} else {
		g.downFrames.Add(1)
		g.downBytes.Add(uint64(n))
	}
	g.cfg.Metrics.frames.WithLabelValues(dir).Inc()
	g.cfg.Metrics.bytes.WithLabelValues(dir).Add(float64(n))
}

// drop counts a frame not forwarded.
func (g *Gateway) drop(dir, reason string) {
	g.dropped.Add(1)
	g.cfg.Metrics.dropped.WithLabelValues(dir, reason).Inc()
}

// Stats returns the leg's counters.
func (g *Gateway) Stats() Stats {
	return Stats{
		UpFrames: g.upFrames.Load(), UpBytes: g.upBytes.Load(),
		DownFrames: g.downFrames.Load(), DownBytes: g.downBytes.Load(),
		Dropped: g.dropped.Load(), Unsupported: g.unsupported.Load(),
	}
}
