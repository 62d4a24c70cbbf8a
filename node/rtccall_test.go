//go:build linux

// The gateway's call path with real peers: Dendrite, livekit-server (in a
// network namespace: LiveKit's Go SDK gathers no loopback candidates),
// icebox's node with its API, an icebox client (pion) and the Element X
// side played at protocol level (raw client-server API for the membership,
// ring and decline; server-sdk-go for LiveKit media).

package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/livekit/protocol/auth"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekittest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// rtcBed is one node bridging calls between its API and a room's
// MatrixRTC session.
type rtcBed struct {
	hs                         *matrixtest.Homeserver
	lk                         *livekittest.Server
	n                          *nodetest.Node
	reg                        *prometheus.Registry
	base, serviceURL, room     string
	svcID, svcDevice, svcToken string
	bobID, bobToken, bobDevice string
	ws                         *wsEvents
	adminToken, aliceToken     string
	cfg                        config.Config
	conv                       string // the room's conversation
	auth                       *httpapi.Authenticator
	mediaCtx                   context.Context
	wg                         sync.WaitGroup
}

// netnsSFU runs livekit-server in a namespace of its own, linked to the
// test's by a veth pair (as the gateway's tests do).
func netnsSFU(t *testing.T) *livekittest.Server {
	t.Helper()
	bed := netbed.New(t)
	ns := bed.Namespace("sfu")
	var r [2]byte
	_, _ = rand.Read(r[:])
	prefix := fmt.Sprintf("10.%d.%d.", 64+r[0]%64, r[1]&0xfc)
	hostIf := bed.Prefix() + "s"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	run("link", "add", hostIf, "type", "veth", "peer", "name", "sfu0", "netns", ns.Name)
	run("addr", "add", prefix+"1/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	ns.Run("ip", "addr", "add", prefix+"2/30", "dev", "sfu0")
	ns.Run("ip", "link", "set", "sfu0", "up")
	return livekittest.Start(t, livekittest.Config{Command: ns.Command, Dial: ns.DialContext, BindIP: prefix + "2", NodeIP: prefix + "2"})
}

func newRTCBed(t *testing.T, edits ...func(*config.Config)) *rtcBed {
	t.Helper()
	requireLiveKit(t)
	b := &rtcBed{adminToken: "rtc-admin-token", aliceToken: "rtc-alice-token", reg: prometheus.NewRegistry()}
	b.lk = netnsSFU(t)
	b.hs = matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	hs := b.hs
	b.svcID, _, _ = hs.Register(t, "icebox", "icebox-password", false)
	b.svcToken, b.svcDevice = hs.Login(t, b.svcID, "icebox-password")
	b.bobID, _, _ = hs.Register(t, "bob", "bob-password", false)
	b.bobToken, b.bobDevice = hs.Login(t, b.bobID, "bob-password")

	auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{StaticTokens: []httpapi.StaticToken{
		{SHA256: sha256.Sum256([]byte(b.adminToken)), User: "admin", Admin: true},
		{SHA256: sha256.Sum256([]byte(b.aliceToken)), User: "alice"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	port := freeTCPPort(t)
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	cfg.Matrix.Enabled = true
	cfg.Matrix.HomeserverURL = hs.URL()
	cfg.Matrix.ServiceUser = b.svcID
	cfg.Matrix.AccessToken = b.svcToken
	cfg.Matrix.DeviceID = b.svcDevice
	cfg.Matrix.CallProtocol = config.CallProtocolMatrixRTC
	cfg.Matrix.RequireEncryption = false // a plain room: the Element X side speaks the raw API
	cfg.Matrix.InviteWait = 0
	cfg.MatrixRTC.Enabled = true
	cfg.MatrixRTC.LiveKit.URL, cfg.MatrixRTC.LiveKit.APIKey, cfg.MatrixRTC.LiveKit.APISecret = b.lk.URL, b.lk.APIKey, b.lk.APISecret
	cfg.MatrixRTC.FullAccessHomeservers = []string{hs.ServerName()}
	cfg.MatrixRTC.HomeserverURLs = map[string]string{hs.ServerName(): hs.URL()}
	cfg.MatrixRTC.PublicURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.MatrixRTC.Gateway.Mode = config.GatewayOn
	for _, edit := range edits {
		edit(&cfg)
	}
	b.cfg, b.auth = cfg, auth
	b.n = nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), Auth: auth, Registry: b.reg})
	b.base = "http://" + b.n.Addrs.HTTP
	b.serviceURL = cfg.MatrixRTC.PublicURL + cfg.MatrixRTC.BasePath

	// bob's plain room, where call memberships need no power, with icebox
	// invited (it joins by itself); the conversation maps to it.
	body, _ := json.Marshal(map[string]any{
		"preset": "private_chat", "invite": []string{b.svcID},
		"power_level_content_override": map[string]any{"events": map[string]int{membership.EventType: 0}},
	})
	code, out := doReq(t, b.bobToken, http.MethodPost, hs.URL()+"/_matrix/client/v3/createRoom", string(body))
	var created struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &created) != nil {
		t.Fatalf("createRoom: %d %s", code, out)
	}
	b.room = created.RoomID
	poll(t, 30*time.Second, "icebox joins bob's room", func() bool {
		code, out := doReq(t, b.svcToken, http.MethodGet, hs.URL()+"/_matrix/client/v3/joined_rooms", "")
		return code == http.StatusOK && strings.Contains(string(out), b.room)
	})
	// icebox makes the room it joined a conversation of the room's
	// members; alice, an icebox user, is added to it.
	sum := sha256.Sum256([]byte(b.room))
	b.conv = "room-" + hex.EncodeToString(sum[:8])
	poll(t, 30*time.Second, "the room's conversation", func() bool {
		code, _ := doReq(t, b.adminToken, http.MethodGet, b.base+"/admin/conversations/"+b.conv, "")
		return code == http.StatusOK
	})
	code, out = doReq(t, b.adminToken, http.MethodPut, b.base+"/admin/conversations/"+b.conv,
		`{"participants":["alice","`+b.bobID+`"],"room_id":"`+b.room+`"}`)
	if code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.mediaCtx = ctx
	t.Cleanup(func() { cancel(); b.wg.Wait() })
	b.ws = dialEvents(t, b.n.Addrs.HTTP, b.aliceToken)
	return b
}

// wsEvents collects the events alice's WebSocket receives.
type wsEvents struct {
	mu     sync.Mutex
	events []map[string]any
}

func dialEvents(t *testing.T, addr, token string) *wsEvents {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	w := &wsEvents{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var m map[string]any
			if err := wsjson.Read(ctx, c, &m); err != nil {
				return
			}
			w.mu.Lock()
			w.events = append(w.events, m)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); _ = c.CloseNow(); <-done })
	return w
}

// wait returns the first event of type typ (for callID, if not "").
func (w *wsEvents) wait(t *testing.T, typ, callID string, d time.Duration) map[string]any {
	t.Helper()
	var found map[string]any
	poll(t, d, "event "+typ, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, e := range w.events {
			if e["type"] == typ && (callID == "" || e["call_id"] == callID) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// bobJoin sends bob's membership as matrix-js-sdk 43 writes it for
// Element Call (session form, LiveKit focus at icebox's service), and
// returns its event ID.
func (b *rtcBed) bobJoin(t *testing.T) string {
	t.Helper()
	key := "_" + b.bobID + "_" + b.bobDevice + "_m.call"
	content := map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": b.bobDevice,
		"membershipID": b.bobID + ":" + b.bobDevice, "expires": 14400000, "created_ts": time.Now().UnixMilli(),
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": b.serviceURL, "livekit_alias": b.room}},
		"m.call.intent":  "video",
	}
	raw, _ := json.Marshal(content)
	u := b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(b.room) + "/state/" + membership.EventType + "/" + url.PathEscape(key)
	code, out := doReq(t, b.bobToken, http.MethodPut, u, string(raw))
	var ev struct {
		EventID string `json:"event_id"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &ev) != nil {
		t.Fatalf("bob's membership: %d %s", code, out)
	}
	return ev.EventID
}

func (b *rtcBed) bobLeave(t *testing.T) {
	t.Helper()
	sendState(t, b.hs.URL(), b.bobToken, b.room, "_"+b.bobID+"_"+b.bobDevice+"_m.call", map[string]any{})
}

// bobSend sends a room event as bob and returns its ID.
func (b *rtcBed) bobSend(t *testing.T, typ string, content map[string]any) string {
	t.Helper()
	raw, _ := json.Marshal(content)
	u := b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(b.room) + "/send/" + typ + "/" + fmt.Sprint(time.Now().UnixNano())
	code, out := doReq(t, b.bobToken, http.MethodPut, u, string(raw))
	var ev struct {
		EventID string `json:"event_id"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &ev) != nil {
		t.Fatalf("send %s: %d %s", typ, code, out)
	}
	return ev.EventID
}

// roomEvent finds the newest event of typ sent by sender after since
// (an event ID to skip to; "" = any), as bob reads the room.
func (b *rtcBed) roomEvent(t *testing.T, typ, sender string, not []string) map[string]any {
	t.Helper()
	var found map[string]any
	poll(t, 30*time.Second, typ+" from "+sender, func() bool {
		code, out := doReq(t, b.bobToken, http.MethodGet, b.hs.URL()+"/_matrix/client/v3/rooms/"+url.PathEscape(b.room)+"/messages?dir=b&limit=30", "")
		if code != http.StatusOK {
			return false
		}
		var page struct {
			Chunk []map[string]any `json:"chunk"`
		}
		if json.Unmarshal(out, &page) != nil {
			return false
		}
		for _, e := range page.Chunk {
			id, _ := e["event_id"].(string)
			if e["type"] == typ && e["sender"] == sender && !slices.Contains(not, id) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// svcMembership reads icebox's membership: live, or emptied (also when
// icebox never sent one).
func (b *rtcBed) svcMembership(t *testing.T) (membership.Member, bool) {
	t.Helper()
	key := "_" + b.svcID + "_" + b.svcDevice + "_m.call"
	u := b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(b.room) + "/state/" + membership.EventType + "/" + url.PathEscape(key)
	if code, _ := doReq(t, b.bobToken, http.MethodGet, u, ""); code == http.StatusNotFound {
		return membership.Member{}, true
	}
	return readMembership(t, b.hs.URL(), b.bobToken, b.room, b.svcID, key)
}

// peerCounter counts received RTP payload bytes by kind.
type peerCounter struct{ audio, video atomic.Uint64 }

func (c *peerCounter) read(wg *sync.WaitGroup, track *webrtc.TrackRemote) {
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

type sampleSink interface{ WriteSample(media.Sample) error }

type lkSink struct{ *lksdk.LocalTrack }

func (s lkSink) WriteSample(m media.Sample) error { return s.LocalTrack.WriteSample(m, nil) }

// sendSynthetic writes 50 Opus frames and 30 VP8 frames (a key frame every
// 10th) a second until ctx ends.
func sendSynthetic(ctx context.Context, wg *sync.WaitGroup, audio, video sampleSink) {
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
				f := make([]byte, 80)
				_, _ = rand.Read(f)
				f[0] = 0xfc
				_ = audio.WriteSample(media.Sample{Data: f, Duration: 20 * time.Millisecond})
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
				f := make([]byte, 900)
				_, _ = rand.Read(f)
				if i%10 == 0 {
					copy(f, []byte{0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01})
				} else {
					copy(f, []byte{0x51, 0x01, 0x00})
				}
				_ = video.WriteSample(media.Sample{Data: f, Duration: 33 * time.Millisecond})
			}
		}
	}()
}

// bobMedia is bob's LiveKit participant: a JWT from icebox's
// authorization service as Element Call gets one (OpenID token, /sfu/get),
// Opus and VP8 published, what arrives counted.
type bobMedia struct {
	room *lksdk.Room
	got  peerCounter
	stop context.CancelFunc
}

func (b *rtcBed) bobMedia(t *testing.T) *bobMedia {
	t.Helper()
	tok := openIDToken(t, b.hs.URL(), b.bobID, b.bobToken)
	body, _ := json.Marshal(map[string]any{"room": b.room, "openid_token": tok, "device_id": b.bobDevice})
	resp, err := http.Post(b.serviceURL+"/sfu/get", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ URL, JWT string }
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("bob's /sfu/get: %d %v", resp.StatusCode, err)
	}
	m := &bobMedia{}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		m.got.read(&b.wg, track)
	}
	room, err := lksdk.ConnectToRoomWithToken(got.URL, got.JWT, cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		t.Fatalf("bob joins LiveKit: %v", err)
	}
	m.room = room
	audio, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	video, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := room.LocalParticipant.PublishTrack(audio, &lksdk.TrackPublicationOptions{Name: "mic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := room.LocalParticipant.PublishTrack(video, &lksdk.TrackPublicationOptions{Name: "cam", VideoWidth: 640, VideoHeight: 480}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(b.mediaCtx)
	m.stop = func() { stop(); room.Disconnect() }
	sendSynthetic(ctx, &b.wg, lkSink{audio}, lkSink{video})
	t.Cleanup(m.stop)
	return m
}

// aliceClient is the icebox client: a pion PeerConnection relayed through
// icebox's TURN (its host address is loopback, which the gateway's
// endpoint does not gather), Opus and VP8 each way.
type aliceClient struct {
	pc           *webrtc.PeerConnection
	audio, video *webrtc.TrackLocalStaticSample
	got          peerCounter
}

func (b *rtcBed) alice(t *testing.T) *aliceClient {
	t.Helper()
	code, out := doReq(t, b.aliceToken, http.MethodGet, b.base+"/calls/ice_servers", "")
	var ice struct {
		ICEServers []struct {
			URLs                 []string
			Username, Credential string
		} `json:"ice_servers"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &ice) != nil {
		t.Fatalf("ice_servers: %d %s", code, out)
	}
	var servers []webrtc.ICEServer
	for _, s := range ice.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{
		ICEServers: servers, ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &aliceClient{pc: pc}
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { a.got.read(&b.wg, track) })
	if a.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "alice"); err != nil {
		t.Fatal(err)
	}
	if a.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "alice"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return a
}

// offer makes alice's offer (candidates gathered).
func (a *aliceClient) offer(t *testing.T) string {
	t.Helper()
	for _, tr := range []webrtc.TrackLocal{a.audio, a.video} {
		if _, err := a.pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
			t.Fatal(err)
		}
	}
	o, err := a.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(a.pc)
	if err := a.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return a.pc.LocalDescription().SDP
}

// answer answers the gateway's offer with alice's tracks.
func (a *aliceClient) answer(t *testing.T, offer string) string {
	t.Helper()
	if err := a.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []webrtc.TrackLocal{a.audio, a.video} {
		if _, err := a.pc.AddTrack(tr); err != nil {
			t.Fatal(err)
		}
	}
	ans, err := a.pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(a.pc)
	if err := a.pc.SetLocalDescription(ans); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return a.pc.LocalDescription().SDP
}

func (b *rtcBed) initiate(t *testing.T, offer string, lifetimeMS int) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"conversation_id": b.conv, "sdp_offer": offer, "lifetime_ms": lifetimeMS})
	code, out := doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/initiate", string(body))
	var c struct {
		ID, Protocol string
	}
	if code != http.StatusCreated || json.Unmarshal(out, &c) != nil {
		t.Fatalf("initiate: %d %s", code, out)
	}
	if c.Protocol != "matrixrtc" {
		t.Fatalf("initiate: protocol %q, want matrixrtc", c.Protocol)
	}
	return c.ID
}

type callState struct {
	Status, EndReason, Protocol string
	RevokedUntil                *time.Time `json:"revoked_until"`
}

func (b *rtcBed) call(t *testing.T, id string) callState {
	t.Helper()
	code, out := doReq(t, b.aliceToken, http.MethodGet, b.base+"/calls/"+id, "")
	var c struct {
		Status       string     `json:"status"`
		EndReason    string     `json:"end_reason"`
		Protocol     string     `json:"protocol"`
		RevokedUntil *time.Time `json:"revoked_until"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &c) != nil {
		t.Fatalf("GET call: %d %s", code, out)
	}
	return callState{Status: c.Status, EndReason: c.EndReason, Protocol: c.Protocol, RevokedUntil: c.RevokedUntil}
}

// waitEnded waits for the call's end and checks its credentials are
// revoked and icebox's membership emptied.
func (b *rtcBed) waitEnded(t *testing.T, id, status, reason string) {
	t.Helper()
	var c callState
	poll(t, 60*time.Second, "call "+status, func() bool { c = b.call(t, id); return c.Status == status })
	if c.EndReason != reason || c.RevokedUntil == nil {
		t.Fatalf("ended call: %+v, want reason %s and revoked credentials", c, reason)
	}
	poll(t, 30*time.Second, "the call's relay allocations closed", func() bool {
		code, out := doReq(t, b.adminToken, http.MethodGet, b.base+"/admin/allocations", "")
		return code == http.StatusOK && !strings.Contains(string(out), id)
	})
	poll(t, 30*time.Second, "icebox's membership emptied", func() bool { _, left := b.svcMembership(t); return left })
	poll(t, 30*time.Second, "the leg closed", func() bool { return b.metric(t, "icebox_gateway_legs_active") == 0 })
}

func (b *rtcBed) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	return metric(t, b.reg, name, m)
}

// answered waits for the call's answer and applies it to alice's
// connection (a client whose connection never completes fails the leg).
func (b *rtcBed) answered(t *testing.T, a *aliceClient, id string) {
	t.Helper()
	ans := b.ws.wait(t, "CallAnswerViaMatrix", id, 30*time.Second)
	sdp, _ := ans["sdp_answer"].(string)
	if err := a.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
}

// waitMetric waits for a metric's value (the teardown that counts a call's
// end runs after the call ended).
func (b *rtcBed) waitMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	poll(t, 20*time.Second, fmt.Sprintf("%s%v = %v", name, labels, want), func() bool { return b.metric(t, name, labels...) == want })
}

// mediaBothWays waits until alice and bob each received two seconds' worth
// of the other's audio and video through the gateway.
func mediaBothWays(t *testing.T, a *aliceClient, bob *bobMedia) time.Duration {
	t.Helper()
	start := time.Now()
	poll(t, 90*time.Second, "media both ways", func() bool {
		return a.got.audio.Load() > 8_000 && a.got.video.Load() > 54_000 && bob.got.audio.Load() > 8_000 && bob.got.video.Load() > 54_000
	})
	return time.Since(start)
}

// TestRTCCallOutbound: alice (icebox client, pion) calls the
// conversation whose calls use MatrixRTC. The call is answered by the
// gateway, not sent as m.call.invite: icebox's device joins the room's
// call (membership naming icebox's focus) and rings (MSC4075); bob (the
// Element X side) joins with his membership and his LiveKit participant:
// alice gets the answer, and media flows both ways. alice hangs up:
// icebox's membership is emptied, the leg closed, the call's credentials
// revoked and its allocations closed. Then: bob declines the next ring
// (rejected), a ring nobody answers (invite_timeout), and bob leaving an
// answered call (ended).
func TestRTCCallOutbound(t *testing.T) {
	b := newRTCBed(t)

	// Answered, media both ways, hung up by the client.
	a := b.alice(t)
	started := time.Now()
	id := b.initiate(t, a.offer(t), 60_000)
	if inv := b.ws.wait(t, "CallInvite", id, 10*time.Second); inv["protocol"] != "matrixrtc" {
		t.Fatalf("CallInvite protocol %v", inv["protocol"])
	}
	ring := b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, nil)
	rang := time.Since(started)
	if m, left := b.svcMembership(t); left || !m.Live(time.Now()) || m.ServiceURL != b.serviceURL {
		t.Fatalf("icebox's membership while ringing: %+v left %v, want live with focus %s", m, left, b.serviceURL)
	}
	if c, _ := ring["content"].(map[string]any); c["notification_type"] != "ring" {
		t.Fatalf("ring content %v", c)
	}
	b.bobJoin(t)
	bob := b.bobMedia(t)
	ans := b.ws.wait(t, "CallAnswerViaMatrix", id, 30*time.Second)
	answered := time.Since(started)
	if err := a.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans["sdp_answer"].(string)}); err != nil {
		t.Fatal(err)
	}
	sendSynthetic(b.mediaCtx, &b.wg, a.audio, a.video)
	took := mediaBothWays(t, a, bob)
	t.Logf("outbound: rang after %v, answered after %v, media both ways %v later: alice got audio %d B video %d B, bob got audio %d B video %d B",
		rang.Round(time.Millisecond), answered.Round(time.Millisecond), took.Round(time.Millisecond),
		a.got.audio.Load(), a.got.video.Load(), bob.got.audio.Load(), bob.got.video.Load())
	if v := b.metric(t, "icebox_rtccall_calls_active", "direction", "outbound"); v != 1 {
		t.Errorf("calls_active{outbound} = %v during the call", v)
	}
	if code, out := doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/"+id+"/hangup", `{}`); code != http.StatusOK {
		t.Fatalf("hangup: %d %s", code, out)
	}
	b.waitEnded(t, id, "ended", "user_hangup")
	b.waitMetric(t, 1, "icebox_rtccall_calls_ended_total", "reason", "hangup_client")
	bob.stop()
	b.bobLeave(t)

	// Declined (MSC4310): rejected.
	a2 := b.alice(t)
	id2 := b.initiate(t, a2.offer(t), 60_000)
	ring2 := b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, []string{ring["event_id"].(string)})
	b.bobSend(t, "org.matrix.msc4310.rtc.decline", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": ring2["event_id"]},
	})
	b.ws.wait(t, "CallRejectedViaMatrix", id2, 30*time.Second)
	b.waitEnded(t, id2, "rejected", "rejected")

	// Nobody answers: invite_timeout at the lifetime.
	a3 := b.alice(t)
	id3 := b.initiate(t, a3.offer(t), 5_000)
	b.waitEnded(t, id3, "expired", "invite_timeout")

	// Answered, then bob leaves the call: ended.
	a4 := b.alice(t)
	id4 := b.initiate(t, a4.offer(t), 60_000)
	b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, []string{ring["event_id"].(string), ring2["event_id"].(string)})
	b.bobJoin(t)
	b.answered(t, a4, id4)
	b.bobLeave(t)
	b.ws.wait(t, "CallHangupViaMatrix", id4, 30*time.Second)
	b.waitEnded(t, id4, "ended", "user_hangup")
	for _, r := range []string{"declined", "invite_timeout", "hangup_member"} {
		b.waitMetric(t, 1, "icebox_rtccall_calls_ended_total", "reason", r)
	}
}

// TestRTCCallInbound: bob (the Element X side) joins the room's call and
// rings (MSC4075); alice gets a CallInvite (protocol matrixrtc) with an
// SDP offer the gateway made, answers it over the API: icebox joins the
// session and the LiveKit room, and media flows both ways. Then bob rings
// again and alice rejects: a decline (MSC4310) of bob's ring appears in
// the room.
func TestRTCCallInbound(t *testing.T) {
	b := newRTCBed(t)
	ringIt := func() (string, map[string]any) {
		t.Helper()
		member := b.bobJoin(t)
		ringID := b.bobSend(t, "org.matrix.msc4075.rtc.notification", map[string]any{
			"m.mentions": map[string]any{"user_ids": []string{}, "room": true}, "notification_type": "ring",
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": member},
			"sender_ts":    time.Now().UnixMilli(), "lifetime": 60000, "m.call.intent": "video",
		})
		inv := b.ws.wait(t, "CallInviteViaMatrix", "", 30*time.Second)
		b.ws.mu.Lock()
		b.ws.events = nil // the next ring's invite is the next one
		b.ws.mu.Unlock()
		return ringID, inv
	}

	started := time.Now()
	_, inv := ringIt()
	invited := time.Since(started)
	id, _ := inv["call_id"].(string)
	offer, _ := inv["sdp_offer"].(string)
	if inv["protocol"] != "matrixrtc" || inv["initiator_id"] != b.bobID || !strings.Contains(offer, "m=video") {
		t.Fatalf("CallInviteViaMatrix: protocol %v, initiator %v, offer with video %v", inv["protocol"], inv["initiator_id"], strings.Contains(offer, "m=video"))
	}
	bob := b.bobMedia(t)
	a := b.alice(t)
	body, _ := json.Marshal(map[string]any{"sdp_answer": a.answer(t, offer)})
	if code, out := doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/"+id+"/answer", string(body)); code != http.StatusOK {
		t.Fatalf("answer: %d %s", code, out)
	}
	sendSynthetic(b.mediaCtx, &b.wg, a.audio, a.video)
	poll(t, 30*time.Second, "icebox's membership", func() bool { m, left := b.svcMembership(t); return !left && m.Live(time.Now()) })
	took := mediaBothWays(t, a, bob)
	t.Logf("inbound: CallInvite %v after the ring, media both ways %v after the answer: alice got audio %d B video %d B, bob got audio %d B video %d B",
		invited.Round(time.Millisecond), took.Round(time.Millisecond), a.got.audio.Load(), a.got.video.Load(), bob.got.audio.Load(), bob.got.video.Load())
	if c := b.call(t, id); c.Status != "answered" || c.Protocol != "matrixrtc" {
		t.Fatalf("call %+v", c)
	}
	// bob hangs up (his membership leaves).
	bob.stop()
	b.bobLeave(t)
	b.waitEnded(t, id, "ended", "user_hangup")

	// Rejected by alice: the ring is declined in the room.
	ringID, inv2 := ringIt()
	id2, _ := inv2["call_id"].(string)
	if code, out := doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/"+id2+"/reject", `{}`); code != http.StatusOK {
		t.Fatalf("reject: %d %s", code, out)
	}
	decline := b.roomEvent(t, "org.matrix.msc4310.rtc.decline", b.svcID, nil)
	rel, _ := decline["content"].(map[string]any)["m.relates_to"].(map[string]any)
	if rel["event_id"] != ringID || rel["rel_type"] != "m.reference" {
		t.Fatalf("decline relates to %v, want bob's ring %s", rel, ringID)
	}
	if c := b.call(t, id2); c.Status != "rejected" || c.RevokedUntil == nil {
		t.Fatalf("rejected call %+v", c)
	}
	b.bobLeave(t)

	// bob gives up before alice answers: his membership leaves, the
	// ringing call ends.
	_, inv3 := ringIt()
	id3, _ := inv3["call_id"].(string)
	b.bobLeave(t)
	b.ws.wait(t, "CallHangupViaMatrix", id3, 30*time.Second)
	if c := b.call(t, id3); c.Status != "ended" || c.EndReason != "user_hangup" || c.RevokedUntil == nil {
		t.Fatalf("call whose caller left: %+v", c)
	}
	if v := b.metric(t, "icebox_rtccall_rings_total", "result", "invited"); v != 3 {
		t.Errorf("rings_total{invited} = %v, want 3", v)
	}
	b.waitMetric(t, 0, "icebox_rtccall_calls_active", "direction", "inbound")
}

// TestRTCCallMemberVanishes: bob's client goes from the LiveKit room, his
// membership stays (as it does when a client vanishes and the homeserver
// has no delayed leave events): the call ends once MediaGrace passes.
func TestRTCCallMemberVanishes(t *testing.T) {
	b := newRTCBed(t)
	// bob's client goes from the LiveKit room, his membership stays (as
	// it does when a client vanishes and the homeserver has no delayed
	// leave): the call ends once the grace passes.
	a4 := b.alice(t)
	id4 := b.initiate(t, a4.offer(t), 60_000)
	b.bobJoin(t)
	b.answered(t, a4, id4)
	// alice's media flows, so icebox's leg publishes: LiveKit tells a
	// participant about the others once its connection is up, and a leg
	// that publishes nothing never hears that bob came or went.
	sendSynthetic(b.mediaCtx, &b.wg, a4.audio, a4.video)
	poll(t, 30*time.Second, "icebox's leg publishing in the LiveKit room", func() bool {
		p, tracks := lkParticipants(t, b.lk, authservice.RoomAlias(b.room, authservice.LegacySlot))
		return p == 1 && tracks == 2
	})
	bob4 := b.bobMedia(t)
	poll(t, 30*time.Second, "icebox in the LiveKit room with bob", func() bool {
		p, _ := lkParticipants(t, b.lk, authservice.RoomAlias(b.room, authservice.LegacySlot))
		return p == 2
	})
	poll(t, 60*time.Second, "media both ways", func() bool {
		return a4.got.audio.Load() > 0 && a4.got.video.Load() > 0 && bob4.got.audio.Load() > 0 && bob4.got.video.Load() > 0
	})
	gone := time.Now()
	bob4.stop()
	b.waitEnded(t, id4, "ended", "user_hangup")
	t.Logf("bob's client left LiveKit, membership kept: the call ended %v later", time.Since(gone).Round(time.Millisecond))
	if _, left := readMembership(t, b.hs.URL(), b.bobToken, b.room, b.bobID, "_"+b.bobID+"_"+b.bobDevice+"_m.call"); left {
		t.Fatal("bob's membership left: the test meant to keep it")
	}
	b.bobLeave(t)

}

// TestRTCCallEnds: the ends that are not a user's.
//
//   - LiveKit drops icebox's participant (an administrator removes it from
//     the room through LiveKit's RoomService): the answered call ends with
//     gateway_failed, icebox's membership emptied, credentials revoked.
//   - The conversation's room is end-to-end encrypted (icebox made it): the
//     call rings there (icebox's membership), and the hangup empties it.
//   - icebox stops during an answered call and starts again on the same
//     state: the call is ended (gateway_restarted, credentials revoked),
//     no membership of icebox's is left.
func TestRTCCallEnds(t *testing.T) {
	b := newRTCBed(t)

	// LiveKit drops the leg.
	a := b.alice(t)
	id := b.initiate(t, a.offer(t), 60_000)
	b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, nil)
	b.bobJoin(t)
	b.answered(t, a, id)
	identity := authservice.LegacyIdentity(b.svcID, b.svcDevice)
	lkRoom := authservice.RoomAlias(b.room, authservice.LegacySlot)
	jwt, err := auth.NewAccessToken(b.lk.APIKey, b.lk.APISecret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: lkRoom}).
		SetValidFor(time.Minute).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"room": lkRoom, "identity": identity})
	poll(t, 30*time.Second, "icebox's participant removed from the LiveKit room", func() bool {
		code, _ := doReq(t, jwt, http.MethodPost, b.lk.HTTPURL+"/twirp/livekit.RoomService/RemoveParticipant", string(body))
		return code == http.StatusOK
	})
	b.waitEnded(t, id, "ended", "gateway_failed")
	b.waitMetric(t, 1, "icebox_rtccall_calls_ended_total", "reason", "gateway_failed")
	b.bobLeave(t)

	// An encrypted room: with the media keys (e2ee) wired, the call rings
	// there as in a plain room — icebox joins the room's call — and the
	// client's hangup empties the membership again.
	code, out := doReq(t, b.adminToken, http.MethodPut, b.base+"/admin/conversations/enc", `{"participants":["alice","`+b.bobID+`"]}`)
	var enc struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &enc) != nil || enc.RoomID == "" {
		t.Fatalf("PUT conversation enc: %d %s", code, out)
	}
	a2 := b.alice(t)
	offer := a2.offer(t)
	body, _ = json.Marshal(map[string]any{"conversation_id": "enc", "sdp_offer": offer})
	code, out = doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/initiate", string(body))
	var c2 struct{ ID string }
	if code != http.StatusCreated || json.Unmarshal(out, &c2) != nil {
		t.Fatalf("initiate in the encrypted room: %d %s", code, out)
	}
	key := "_" + b.svcID + "_" + b.svcDevice + "_m.call"
	u := b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(enc.RoomID) + "/state/" + membership.EventType + "/" + url.PathEscape(key)
	poll(t, 30*time.Second, "icebox's membership in the encrypted room", func() bool {
		code, out := doReq(t, b.svcToken, http.MethodGet, u, "")
		return code == http.StatusOK && len(out) > 2
	})
	if st := b.call(t, c2.ID); st.Status != "ringing" {
		t.Fatalf("call in the encrypted room: %+v, want ringing", st)
	}
	if code, out := doReq(t, b.aliceToken, http.MethodPost, b.base+"/calls/"+c2.ID+"/hangup", ""); code != http.StatusOK {
		t.Fatalf("hangup in the encrypted room: %d %s", code, out)
	}
	b.waitEnded(t, c2.ID, "ended", "user_hangup")
	poll(t, 30*time.Second, "icebox's membership in the encrypted room emptied", func() bool {
		code, out := doReq(t, b.svcToken, http.MethodGet, u, "")
		return code == http.StatusOK && strings.TrimSpace(string(out)) == "{}"
	})

	// A restart mid-call.
	a3 := b.alice(t)
	id3 := b.initiate(t, a3.offer(t), 60_000)
	b.bobJoin(t)
	b.answered(t, a3, id3)
	if m, left := b.svcMembership(t); left || !m.Live(time.Now()) {
		t.Fatalf("icebox's membership during the call: %+v left %v", m, left)
	}
	if err := b.n.Stop(); err != nil {
		t.Fatal(err)
	}
	b.reg = prometheus.NewRegistry()
	b.n = nodetest.Start(t, b.cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), Auth: b.auth, Registry: b.reg})
	b.base = "http://" + b.n.Addrs.HTTP
	var after callState
	poll(t, 30*time.Second, "the call ended after the restart", func() bool { after = b.call(t, id3); return after.Status == "ended" })
	if after.EndReason != "gateway_restarted" || after.RevokedUntil == nil {
		t.Fatalf("after the restart: %+v, want gateway_restarted with revoked credentials", after)
	}
	poll(t, 30*time.Second, "no membership of icebox's left", func() bool { _, left := b.svcMembership(t); return left })
}

// lkParticipants asks LiveKit's RoomService for the room's participants
// and their tracks.
func lkParticipants(t *testing.T, lk *livekittest.Server, room string) (participants, tracks int) {
	t.Helper()
	jwt, err := auth.NewAccessToken(lk.APIKey, lk.APISecret).SetVideoGrant(&auth.VideoGrant{RoomAdmin: true, Room: room}).
		SetValidFor(time.Minute).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	code, out := doReq(t, jwt, http.MethodPost, lk.HTTPURL+"/twirp/livekit.RoomService/ListParticipants", `{"room":"`+room+`"}`)
	var list struct {
		Participants []struct {
			Tracks []json.RawMessage `json:"tracks"`
		} `json:"participants"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &list) != nil {
		return -1, -1
	}
	for _, p := range list.Participants {
		tracks += len(p.Tracks)
	}
	return len(list.Participants), tracks
}

// TestRTCCallRenewsMembership: icebox's membership announces
// matrixrtc.gateway.membership_expires (6 s here) and is renewed, its
// created_ts kept, before it expires: a call outlives the lifetime of the
// membership it started with, and Element Call keeps seeing icebox in it.
func TestRTCCallRenewsMembership(t *testing.T) {
	b := newRTCBed(t, func(c *config.Config) { c.MatrixRTC.Gateway.MembershipExpires = 6 * time.Second })
	a := b.alice(t)
	id := b.initiate(t, a.offer(t), 60_000)
	b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, nil)
	first, left := b.svcMembership(t)
	if left || first.Expiry.Sub(first.Created) != 6*time.Second {
		t.Fatalf("icebox's membership: %+v left %v, want expires 6s", first, left)
	}
	b.bobJoin(t)
	b.answered(t, a, id)
	var renewed membership.Member
	poll(t, 20*time.Second, "icebox's membership renewed", func() bool {
		m, left := b.svcMembership(t)
		renewed = m
		return !left && m.Expiry.After(first.Expiry)
	})
	if !renewed.Created.Equal(first.Created) {
		t.Errorf("renewed membership created %v, want the first's %v", renewed.Created, first.Created)
	}
	poll(t, 20*time.Second, "past the first membership's expiry", func() bool { return time.Now().After(first.Expiry.Add(time.Second)) })
	if m, left := b.svcMembership(t); left || !m.Live(time.Now()) {
		t.Fatalf("icebox's membership after its first expiry: %+v left %v, want live", m, left)
	}
	if c := b.call(t, id); c.Status != "answered" {
		t.Fatalf("call %+v, want still answered", c)
	}
	t.Logf("membership created %v, first expiry %v, renewed to %v", first.Created.Format(time.StampMilli),
		first.Expiry.Format(time.StampMilli), renewed.Expiry.Format(time.StampMilli))
}
