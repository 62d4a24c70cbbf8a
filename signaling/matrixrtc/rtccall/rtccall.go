// Package rtccall is the call path of icebox's MatrixRTC gateway: it
// bridges an icebox call (the domain's signaling.Call, an icebox client's
// WebRTC connection) and a room's MatrixRTC session, where Element X /
// Element Call users are.
//
//   - Outbound (an icebox client calls): the client's offer is answered by a
//     gateway leg (its own pion endpoint, ICE through icebox's TURN with the
//     call's credentials), which joins the session's LiveKit room (the
//     room's focus, or icebox's own authorization service, with a JWT from
//     /sfu/get as Element Call gets one); icebox's device joins the session
//     (membership) and rings (MSC4075). The first other member to join
//     answers the call (the leg's answer SDP goes to the client); an MSC4310
//     decline rejects it; the ring's lifetime is the invite's (expiry).
//   - Legacy (a Matrix user's m.call.invite in a room whose callee side
//     speaks MatrixRTC; signaling/rtclegacy.go): placed as an outbound
//     call, the legacy caller in the icebox client's place; the domain
//     sends the answer and the end to the caller as m.call.* events.
//   - Inbound (an Element X user rings a mapped room): a leg offers (gateway
//     offer mode) and the conversation's icebox users get a CallInvite with
//     that offer; answering joins the session and the LiveKit room with the
//     client's answer, rejecting declines the ring. The caller's membership
//     leaving first, or the ring's lifetime, ends it.
//   - Ending: whichever side ends the call, icebox's membership is emptied,
//     the leg closed and the call ended with its TURN credentials revoked
//     (the domain's path); the last other member leaving (or its membership
//     expiring) and the leg failing (LiveKit gone, the client's connection
//     failed) end it too.
//
// icebox's device has one membership per room, so one bridged call per
// room at a time. The domain drives the manager through
// signaling.RTCCalls; the Matrix bridge through matrix.RTCObserver.
package rtccall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// Matrix is what the call path needs of the Matrix bridge (*matrix.Bridge).
type Matrix interface {
	JoinRTC(ctx context.Context, roomID string, m matrix.RTCMembership) (eventID string, err error)
	LeaveRTC(ctx context.Context, roomID string) error
	RingRTC(ctx context.Context, roomID string, r matrix.RTCRing) (eventID string, err error)
	DeclineRTC(ctx context.Context, roomID, notificationEventID string) error
	RTCIdentity() membership.Device
	RoomEncrypted(ctx context.Context, roomID string) (bool, error)
	RTCFocusToken(ctx context.Context, serviceURL, roomID string) (livekitURL, jwt string, err error)
}

var _ Matrix = (*matrix.Bridge)(nil)

// Calls is what the call path needs of the calls service
// (*signaling.Service): the transitions of the MatrixRTC side.
type Calls interface {
	InviteFromRTC(ctx context.Context, in signaling.RTCInvite) (signaling.Call, error)
	AnswerFromRTC(ctx context.Context, callID, user, device, sdpAnswer string) (signaling.Call, error)
	EndFromRTC(ctx context.Context, callID, user, reason string, reject bool) (signaling.Call, error)
}

var _ Calls = (*signaling.Service)(nil)

// E2EESession is one bridged call's media keys (package e2ee's *Session):
// the frame transformer that encrypts for the call's members and
// decrypts their frames, fed with the members as they come and go.
type E2EESession interface {
	Transformer() gateway.FrameTransformer
	Start(ctx context.Context, members []membership.Device)
	MemberJoined(ctx context.Context, d membership.Device)
	MemberLeft(ctx context.Context, d membership.Device)
	Close()
}

// Defaults of Config.
const (
	defaultStepTimeout   = 30 * time.Second
	defaultWatchInterval = 5 * time.Second
	defaultMediaGrace    = 5 * time.Second
	// membershipWait bounds how long a ring waits for its caller's
	// membership to be seen (the two arrive in one sync, in either order).
	membershipWait = 5 * time.Second
)

// Config configures the Manager.
type Config struct {
	// Members are a room's live MatrixRTC memberships
	// (membership.Rooms.Members). Required.
	Members func(roomID string, now time.Time) []membership.Member
	// ServiceURL is icebox's MatrixRTC authorization service as members
	// reach it (matrixrtc.public_url + base_path): the focus of a call
	// icebox starts in a room without one. Required.
	ServiceURL string
	// ICEServers are a call's leg's ICE servers: icebox's TURN with
	// credentials for the call (revoked when it ends). Required.
	ICEServers func(callID string) ([]webrtc.ICEServer, error)
	// Settings configures the legs' client PeerConnections (UDP port
	// range); nil: pion's defaults.
	Settings *webrtc.SettingEngine
	// E2EE opens the media keys of a call in an end-to-end encrypted
	// room (package e2ee's Registry.Open). nil: only rooms without
	// encryption are bridged; a call in an encrypted room ends with
	// encryption_unavailable (media is never sent in clear).
	E2EE func(roomID string, self membership.Device) E2EESession
	// StepTimeout bounds each Matrix or LiveKit step of a call. Default: 30 s.
	StepTimeout time.Duration
	// WatchInterval is how often a call looks for its members' memberships
	// having expired. Default: 5 s.
	WatchInterval time.Duration
	// MembershipExpires is the lifetime icebox's call memberships
	// announce (their expires); a call renews its membership when three
	// quarters of it passed, as long as it lasts. Default:
	// membership.DefaultExpires (4 h, Element Call's).
	MembershipExpires time.Duration
	// MediaGrace is how long an answered call waits, once the last other
	// participant left the LiveKit room (a client that vanished leaves its
	// membership behind for up to its expiry), for one to come back before
	// it ends. Default: 5 s.
	MediaGrace time.Duration
	// GatewayMetrics are the legs' (gateway.NewMetrics); nil: none.
	GatewayMetrics *gateway.Metrics
	Registerer     prometheus.Registerer
	Logger         zerolog.Logger
	Now            func() time.Time // Default: time.Now
}

// Manager runs the bridged calls. Its methods implement
// signaling.RTCCalls and matrix.RTCObserver; none blocks.
type Manager struct {
	cfg     Config
	log     zerolog.Logger
	metrics *metrics

	mx    Matrix
	calls Calls

	ctx    context.Context // cancelled by Run's end
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	legs  map[string]*leg // by call ID
	rooms map[string]*leg // by room ID: icebox's device's one membership there
	done  bool
}

var (
	_ signaling.RTCCalls = (*Manager)(nil)
	_ matrix.RTCObserver = (*Manager)(nil)
)

// New checks cfg. Bind gives the manager the bridge and the calls service
// (they are built around it); Run runs it.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.Members == nil:
		return nil, errors.New("rtccall: Members is required")
	case cfg.ServiceURL == "":
		return nil, errors.New("rtccall: ServiceURL (matrixrtc.public_url) is required")
	case cfg.ICEServers == nil:
		return nil, errors.New("rtccall: ICEServers is required")
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = defaultStepTimeout
	}
	if cfg.WatchInterval <= 0 {
		cfg.WatchInterval = defaultWatchInterval
	}
	if cfg.MediaGrace <= 0 {
		cfg.MediaGrace = defaultMediaGrace
	}
	if cfg.MembershipExpires <= 0 {
		cfg.MembershipExpires = membership.DefaultExpires
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GatewayMetrics == nil {
		cfg.GatewayMetrics = gateway.NewMetrics(nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{
		cfg: cfg, log: cfg.Logger.With().Str("component", "rtccall").Logger(), metrics: newMetrics(cfg.Registerer),
		ctx: ctx, cancel: cancel, legs: map[string]*leg{}, rooms: map[string]*leg{},
	}, nil
}

// Bind sets the Matrix bridge and the calls service; before Run.
func (m *Manager) Bind(mx Matrix, calls Calls) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mx, m.calls = mx, calls
}

// Run waits for ctx, then closes every leg and empties icebox's
// memberships (the calls themselves are ended at the next start:
// signaling ends the bridged calls a previous run left).
func (m *Manager) Run(ctx context.Context) error {
	<-ctx.Done()
	m.mu.Lock()
	m.done = true
	legs := make([]*leg, 0, len(m.legs))
	for _, l := range m.legs {
		legs = append(legs, l)
	}
	m.mu.Unlock()
	m.cancel()
	for _, l := range legs {
		l.mu.Lock()
		l.ended = true
		l.mu.Unlock()
		l.cancel()
	}
	m.wg.Wait()
	for _, l := range legs {
		m.teardown(l, signaling.Call{})
	}
	return nil
}

// ActiveLegs is how many bridged calls run (tests, status).
func (m *Manager) ActiveLegs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.legs)
}

// leg is one bridged call.
type leg struct {
	callID, roomID string
	inbound        bool
	dir            string          // the direction label: outbound, inbound or legacy
	ctx            context.Context // cancelled when the call ends
	cancel         context.CancelFunc
	worker         sync.WaitGroup // the goroutines that use the leg

	mu         sync.Mutex
	gw         *gateway.Gateway
	e2ee       E2EESession
	ready      bool                      // the client's description is applied: candidates go straight in
	pending    []webrtc.ICECandidateInit // trickled before
	joinSent   bool                      // JoinRTC was tried: leave at the end
	answerSDP  string                    // outbound: the leg's answer, given when a member joins
	answered   bool
	ringID     string // outbound: icebox's notification; inbound: the caller's
	caller     string // inbound: the Matrix user who rang
	ended      bool
	torn       bool      // teardown ran
	joinedAt   time.Time // icebox's membership was sent (its created_ts); zero before
	mediaSeen  bool      // another participant was in the LiveKit room (checkMedia)
	mediaGone  time.Time // since when none is; zero while one is
	intent     string    // its m.call.intent
	serviceURL string    // the focus the leg uses
}

// add registers a leg (direction dir) for callID in roomID; false if the
// room has one.
func (m *Manager) add(callID, roomID, dir string) (*leg, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done || m.rooms[roomID] != nil {
		return nil, false
	}
	ctx, cancel := context.WithCancel(m.ctx)
	l := &leg{callID: callID, roomID: roomID, inbound: dir == dirInbound, dir: dir, ctx: ctx, cancel: cancel}
	m.legs[callID], m.rooms[roomID] = l, l
	m.metrics.active.WithLabelValues(dir).Inc()
	return l, true
}

// goLeg runs fn for l, counted (teardown waits for it); not once the
// leg ended (teardown may be waiting already).
func (m *Manager) goLeg(l *leg, fn func()) {
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		m.wg.Done()
		return
	}
	l.worker.Add(1)
	l.mu.Unlock()
	go func() {
		defer m.wg.Done()
		defer l.worker.Done()
		fn()
	}()
}

func (m *Manager) leg(callID string) *leg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.legs[callID]
}

func (m *Manager) roomLeg(roomID string) *leg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[roomID]
}

func (m *Manager) bound() (Matrix, Calls) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mx, m.calls
}

// step is a context for one Matrix or LiveKit step of l.
func (m *Manager) step(l *leg) (context.Context, context.CancelFunc) {
	return context.WithTimeout(l.ctx, m.cfg.StepTimeout)
}

// end ends l's call from the MatrixRTC side (the domain then calls Ended,
// which tears the leg down). It runs on a goroutine of its own.
func (m *Manager) end(l *leg, user, reason string, reject bool) {
	_, calls := m.bound()
	if calls == nil {
		return
	}
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		return
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StepTimeout)
		defer cancel()
		if _, err := calls.EndFromRTC(ctx, l.callID, user, reason, reject); err != nil && !isEnded(err) {
			m.log.Error().Err(err).Str("call_id", l.callID).Str("reason", reason).Msg("ending a bridged call")
		}
	}()
}

// fail ends l's call because its MatrixRTC side failed (err is logged).
func (m *Manager) fail(l *leg, reason string, err error) {
	if l.ctx.Err() != nil {
		return // the call ended meanwhile; err is that
	}
	m.log.Warn().Err(err).Str("call_id", l.callID).Str("room_id", l.roomID).Str("reason", reason).Msg("bridged call failed")
	m.end(l, "", reason, false)
}

func isEnded(err error) bool {
	var te *signaling.TransitionError
	return errors.As(err, &te) && te.Code == "call_ended"
}

// media decides how l's frames are transformed: the room's E2EE session
// when the room is encrypted (nil E2EE: refused), else unchanged.
func (m *Manager) media(ctx context.Context, mx Matrix, l *leg) (gateway.FrameTransformer, bool, error) {
	encrypted, err := mx.RoomEncrypted(ctx, l.roomID)
	if err != nil {
		return nil, false, fmt.Errorf("rtccall: is the room encrypted: %w", err)
	}
	if !encrypted {
		return gateway.Identity{}, false, nil
	}
	if m.cfg.E2EE == nil {
		return nil, true, errE2EE
	}
	s := m.cfg.E2EE(l.roomID, mx.RTCIdentity())
	l.mu.Lock()
	l.e2ee = s
	l.mu.Unlock()
	return s.Transformer(), true, nil
}

var errE2EE = errors.New("rtccall: the room is end-to-end encrypted and icebox has no media keys (MatrixRTC E2EE not configured)")

// focus is the LiveKit focus of the room's call: the oldest member's
// preferred one (Element Call's oldest_membership), else icebox's own.
func (m *Manager) focus(roomID string, self membership.Device) string {
	var oldest *membership.Member
	for _, mb := range m.cfg.Members(roomID, m.cfg.Now()) {
		if mb.Device() == self || mb.ServiceURL == "" || mb.FocusType != "livekit" {
			continue
		}
		if oldest == nil || mb.Created.Before(oldest.Created) {
			mb := mb
			oldest = &mb
		}
	}
	if oldest != nil {
		return oldest.ServiceURL
	}
	return m.cfg.ServiceURL
}

// others are the room's live members but icebox's device.
func (m *Manager) others(roomID string, self membership.Device) []membership.Member {
	all := m.cfg.Members(roomID, m.cfg.Now())
	return slices.DeleteFunc(all, func(mb membership.Member) bool { return mb.Device() == self })
}

func devices(ms []membership.Member) []membership.Device {
	out := make([]membership.Device, 0, len(ms))
	for _, mb := range ms {
		out = append(out, mb.Device())
	}
	return out
}

// intent is the call's m.call.intent: video when the client's SDP has
// video.
func intent(sdp string) string {
	if strings.Contains(sdp, "\nm=video") || strings.HasPrefix(sdp, "m=video") {
		return "video"
	}
	return "audio"
}

// newLeg makes l's gateway leg (url and token "" for an offer-mode leg).
func (m *Manager) newLeg(l *leg, url, token string, tr gateway.FrameTransformer, encrypted bool) (*gateway.Gateway, error) {
	ice, err := m.cfg.ICEServers(l.callID)
	if err != nil {
		return nil, fmt.Errorf("rtccall: ICE servers: %w", err)
	}
	gw, err := gateway.New(gateway.Config{
		URL: url, Token: token, Transformer: tr, E2EE: encrypted, Settings: m.cfg.Settings, ICEServers: ice,
		JoinTimeout: m.cfg.StepTimeout, Metrics: m.cfg.GatewayMetrics,
		Logger:       m.log.With().Str("call_id", l.callID).Logger(),
		OnMemberLeft: func(_ string, remaining int) { m.mediaLeft(l, remaining) },
	})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.gw = gw
	l.mu.Unlock()
	return gw, nil
}

// ready applies the candidates the client trickled before its leg had
// its description; later ones go straight in.
func (l *leg) setReady() {
	l.mu.Lock()
	pending := l.pending
	l.pending, l.ready = nil, true
	gw := l.gw
	l.mu.Unlock()
	for _, c := range pending {
		_ = gw.AddCandidate(c) // a candidate the endpoint cannot use is not the call's end
	}
}

// watch ends l's call when its leg ends (LiveKit gone, the client's
// connection failed, an encrypted track without keys) and, every
// WatchInterval, when the members it needs are gone (a membership expired
// without a leave event).
func (m *Manager) watch(l *leg, gw *gateway.Gateway, self membership.Device) {
	m.goLeg(l, func() {
		t := time.NewTicker(m.cfg.WatchInterval)
		defer t.Stop()
		renew := time.NewTimer(m.cfg.MembershipExpires * 3 / 4)
		defer renew.Stop()
		for {
			select {
			case <-l.ctx.Done():
				return
			case <-gw.Done():
				reason := signaling.ReasonGatewayFailed
				if errors.Is(gw.Err(), gateway.ErrUnencrypted) {
					reason = signaling.ReasonE2EEUnavailable
				}
				m.fail(l, reason, gw.Err())
				return
			case <-t.C:
				m.checkMembers(l, self, membership.Member{})
				m.checkMedia(l, gw)
			case <-renew.C:
				m.renew(l)
				renew.Reset(m.cfg.MembershipExpires * 3 / 4)
			}
		}
	})
}

// join sends icebox's membership of l's room's call.
func (m *Manager) join(ctx context.Context, mx Matrix, l *leg, focus, intent string) (string, error) {
	// created_ts is sent from the start (matrix-js-sdk sends it from the
	// first renewal on; before, readers take the event's timestamp): the
	// renewals keep the same value.
	now := m.cfg.Now().Truncate(time.Millisecond)
	l.mu.Lock()
	l.joinSent, l.intent = true, intent
	l.mu.Unlock()
	id, err := mx.JoinRTC(ctx, l.roomID, matrix.RTCMembership{ServiceURL: focus, Intent: intent, Expires: m.cfg.MembershipExpires, CreatedTS: now})
	if err != nil {
		return "", err
	}
	l.mu.Lock()
	l.joinedAt = now
	l.mu.Unlock()
	return id, nil
}

// renew sends icebox's membership again before it expires, its
// created_ts kept and its expires extended to MembershipExpires from now
// (as matrix-js-sdk extends a membership): a call longer than the
// membership's lifetime must not show icebox gone.
func (m *Manager) renew(l *leg) {
	mx, _ := m.bound()
	l.mu.Lock()
	joinedAt, focus, intent := l.joinedAt, l.serviceURL, l.intent
	l.mu.Unlock()
	if mx == nil || joinedAt.IsZero() {
		return
	}
	ctx, cancel := m.step(l)
	defer cancel()
	now := m.cfg.Now()
	if _, err := mx.JoinRTC(ctx, l.roomID, matrix.RTCMembership{ServiceURL: focus, Intent: intent, CreatedTS: joinedAt,
		Expires: now.Sub(joinedAt) + m.cfg.MembershipExpires}); err != nil {
		if l.ctx.Err() == nil {
			m.log.Warn().Err(err).Str("call_id", l.callID).Msg("renewing icebox's MatrixRTC membership; tried again later")
		}
	}
}

// checkMembers ends l's call when the members it needs are no longer
// live: the caller of a ringing inbound call, every other member of an
// answered call. gone is the member who just left, if any (its user ends
// the call).
func (m *Manager) checkMembers(l *leg, self membership.Device, gone membership.Member) {
	others := m.others(l.roomID, self)
	if gone.Sender != "" {
		others = slices.DeleteFunc(others, func(mb membership.Member) bool { return mb.Device() == gone.Device() })
	}
	l.mu.Lock()
	answered, inbound, caller, ended := l.answered, l.inbound, l.caller, l.ended
	l.mu.Unlock()
	if ended {
		return
	}
	switch {
	case inbound && !answered:
		if slices.ContainsFunc(others, func(mb membership.Member) bool { return mb.Sender == caller }) {
			return
		}
		m.end(l, caller, signaling.ReasonUserHangup, false)
	case answered && len(others) == 0:
		m.end(l, gone.Sender, signaling.ReasonUserHangup, false)
	}
}

// mediaLeft: another participant left l's LiveKit room. When none is
// left in an answered call, and none comes back within MediaGrace, the
// call ends: the members' clients are gone (a client that vanished leaves
// its membership behind, without MSC4140 until it expires).
func (m *Manager) mediaLeft(l *leg, remaining int) {
	m.log.Debug().Str("call_id", l.callID).Int("remaining", remaining).Msg("a participant left the bridged call's LiveKit room")
	l.mu.Lock()
	l.mediaSeen = true
	l.mu.Unlock()
	if remaining > 0 {
		return
	}
	m.goLeg(l, func() {
		t := time.NewTimer(m.cfg.MediaGrace)
		defer t.Stop()
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		gw, answered := l.gw, l.answered
		l.mu.Unlock()
		if answered && gw != nil && gw.Others() == 0 {
			m.log.Info().Str("call_id", l.callID).Msg("bridged call's members left the LiveKit room; ending it")
			m.end(l, "", signaling.ReasonUserHangup, false)
		}
	})
}

// checkMedia is mediaLeft's fallback, at each watch tick: an answered
// call whose LiveKit room had other participants and has had none for
// MediaGrace ends (a participant's leave that did not reach the leg's
// callback, on a loaded SFU, must not keep the call for the membership's
// lifetime).
func (m *Manager) checkMedia(l *leg, gw *gateway.Gateway) {
	n := gw.Others()
	now := m.cfg.Now()
	l.mu.Lock()
	switch {
	case n > 0:
		l.mediaSeen, l.mediaGone = true, time.Time{}
		l.mu.Unlock()
		return
	case !l.mediaSeen || !l.answered || l.ended:
		l.mu.Unlock()
		return
	case l.mediaGone.IsZero():
		l.mediaGone = now
		l.mu.Unlock()
		return
	}
	gone := now.Sub(l.mediaGone)
	l.mu.Unlock()
	if gone >= m.cfg.MediaGrace {
		m.log.Info().Str("call_id", l.callID).Msg("bridged call's members are no longer in the LiveKit room; ending it")
		m.end(l, "", signaling.ReasonUserHangup, false)
	}
}

// newCallID is an inbound call's ID (the leg's TURN credentials name it
// before the call exists).
func newCallID() string { return uuid.NewString() }
