package e2ee

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// ownKeyLen is the length of icebox's keys: matrix-js-sdk's
// generateRandomKey makes 16 bytes.
const ownKeyLen = 16

// Session is the end-to-end encryption of icebox's device in one room's
// MatrixRTC call: icebox's own key (made, sent, rotated) and the members'
// keys, and the FrameTransformer that uses them. Its methods are safe for
// concurrent use; Start, MemberJoined and MemberLeft send keys and return
// when the send is done (they are serialised, so keys go out in order).
type Session struct {
	reg  *Registry
	room string
	self membership.Device
	log  zerolog.Logger

	// sendMu serialises the key distributions (matrix-js-sdk runs one
	// rollout at a time), so that a rotation's key is not overtaken by an
	// older one.
	sendMu sync.Mutex

	mu         sync.Mutex
	started    bool
	closed     bool
	members    map[membership.Device]struct{}
	ownIndex   int    // index of icebox's newest key (the one sent)
	ownKey     []byte // icebox's newest key; nil before Start
	ownCreated time.Time
	gen        uint64      // bumped by each rotation: a delayed switch applies only if none followed
	timer      *time.Timer // the pending switch to a rotated key
	switchFn   func()      // what timer runs (tests run it early)
	held       []heldKey   // keys of devices that are not members yet, oldest first
	sentTS     map[string]map[int]time.Time

	// rings are the members' keys by LiveKit identity; read per frame.
	ringsMu sync.RWMutex
	rings   map[string]*framecrypt.KeyRing

	done   atomic.Bool // closed, for the frame path
	own    *framecrypt.KeyRing
	encMu  sync.Mutex
	enc    *framecrypt.Encryptor
	opts   framecrypt.Options
	tracks transformer
}

func newSession(r *Registry, room string, self membership.Device) *Session {
	opts := framecrypt.ElementCallOptions()
	own, err := framecrypt.NewKeyRing(opts, nil)
	if err != nil {
		panic("e2ee: Element Call's key ring options are invalid: " + err.Error()) // constant options
	}
	s := &Session{
		reg: r, room: room, self: self,
		log:     r.log.With().Str("room_id", room).Logger(),
		members: make(map[membership.Device]struct{}),
		sentTS:  make(map[string]map[int]time.Time),
		rings:   make(map[string]*framecrypt.KeyRing),
		own:     own, enc: framecrypt.NewEncryptor(own), opts: opts,
	}
	s.tracks = transformer{s: s}
	return s
}

// Transformer is the gateway's FrameTransformer of this Session.
func (s *Session) Transformer() gateway.FrameTransformer { return s.tracks }

// Start makes icebox's key (index 0, used at once) and sends it to the
// call's members; keys already received from them are applied. Called
// again, it sends the current key to the members given (as joiners).
func (s *Session) Start(ctx context.Context, members []membership.Device) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if !s.started {
		s.started = true
		s.ownKey, s.ownIndex, s.ownCreated = newKey(), 0, s.reg.cfg.Now()
		if err := s.own.SetKey(0, s.ownKey); err != nil {
			s.mu.Unlock()
			s.log.Error().Err(err).Msg("icebox's media key could not be set")
			return
		}
	}
	var to []membership.Device
	for _, d := range members {
		if d == s.self {
			continue
		}
		s.members[d] = struct{}{}
		s.releaseHeldLocked(d)
		to = append(to, d)
	}
	index, key := s.ownIndex, s.ownKey
	s.mu.Unlock()
	s.send(ctx, index, key, to)
}

// MemberJoined adds a member: it gets icebox's current key if that is
// younger than the grace period, otherwise the key is rotated (sent to
// all members, used after the delay). Its keys received before are
// applied. For a device that is a member already (its membership
// changed) it sends the current key again.
func (s *Session) MemberJoined(ctx context.Context, d membership.Device) {
	if d == s.self {
		return
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	_, known := s.members[d]
	s.members[d] = struct{}{}
	s.releaseHeldLocked(d)
	if !s.started {
		s.mu.Unlock()
		return // Start sends to every member
	}
	// A member already in the call whose membership changed (a restarted
	// client makes a new one) gets the current key again, without a
	// rotation: matrix-js-sdk rotates only for a new member or a leaver.
	if known || s.reg.cfg.Now().Sub(s.ownCreated) < s.reg.cfg.GracePeriod {
		index, key := s.ownIndex, s.ownKey
		s.mu.Unlock()
		s.send(ctx, index, key, []membership.Device{d})
		return
	}
	s.rotateLocked(ctx, rotateJoined) // unlocks
}

// MemberLeft forgets a member and its keys and rotates icebox's key: the
// new one goes to the remaining members and is used after the delay, so
// the leaver cannot decrypt what follows. A device that was not a member
// changes nothing.
func (s *Session) MemberLeft(ctx context.Context, d membership.Device) {
	if d == s.self {
		return
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	_, known := s.members[d]
	delete(s.members, d)
	delete(s.sentTS, d.Identity())
	kept := s.held[:0]
	for _, h := range s.held {
		if h.Device != d {
			kept = append(kept, h)
		}
	}
	clear(s.held[len(kept):])
	s.held = kept
	s.ringsMu.Lock()
	delete(s.rings, d.Identity())
	s.ringsMu.Unlock()
	if !s.started || !known {
		s.mu.Unlock()
		return // nobody left who had icebox's key
	}
	s.rotateLocked(ctx, rotateLeft) // unlocks
}

// rotateLocked makes icebox's next key, sends it to the members and
// switches to it after the use delay (at once when nobody is left to
// receive it). It is called with mu held and sendMu held, and unlocks mu.
func (s *Session) rotateLocked(ctx context.Context, reason string) {
	s.ownIndex = (s.ownIndex + 1) % 256
	s.ownKey, s.ownCreated = newKey(), s.reg.cfg.Now()
	s.gen++
	gen, index, key := s.gen, s.ownIndex, s.ownKey
	to := make([]membership.Device, 0, len(s.members))
	for d := range s.members {
		to = append(to, d)
	}
	k, err := framecrypt.NewKey(key, s.opts)
	if err != nil {
		s.mu.Unlock()
		s.log.Error().Err(err).Msg("icebox's rotated media key could not be derived")
		return
	}
	// At its index now (not current): Outbound goes on with the old one.
	s.own.Put(index, k, false)
	if s.timer != nil {
		s.timer.Stop()
		s.timer, s.switchFn = nil, nil
	}
	s.mu.Unlock()
	s.reg.metrics.rotations.WithLabelValues(reason).Inc()
	s.log.Info().Str("reason", reason).Int("index", index).Int("members", len(to)).Msg("icebox's media key rotated")
	if len(to) > 0 {
		s.send(ctx, index, key, to)
	}
	// Switched even if a send failed: the key must not stay one a leaver
	// has; a member that did not get it cannot decrypt (logged).
	delay := s.reg.cfg.UseKeyDelay
	if len(to) == 0 {
		delay = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.gen != gen {
		return
	}
	if delay == 0 {
		s.own.Put(index, k, true)
		return
	}
	s.switchFn = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed && s.gen == gen {
			s.own.Put(index, k, true)
			s.timer, s.switchFn = nil, nil
		}
	}
	s.timer = time.AfterFunc(delay, s.switchFn)
}

// send sends icebox's key to devices, bounded by the send timeout.
func (s *Session) send(ctx context.Context, index int, key []byte, to []membership.Device) {
	if len(to) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.reg.cfg.SendTimeout)
	defer cancel()
	if err := s.reg.sender.SendRTCKey(ctx, s.room, index, key, to); err != nil {
		s.reg.metrics.sent.WithLabelValues(sentError).Inc()
		// The error names devices, never the key.
		s.log.Warn().Err(err).Int("index", index).Int("devices", len(to)).Msg("icebox's media key not sent to every device")
		return
	}
	s.reg.metrics.sent.WithLabelValues(sentOK).Inc()
	s.log.Debug().Int("index", index).Int("devices", len(to)).Msg("icebox's media key sent")
}

// addKey takes a member's key: into its key ring if it is a member, else
// held until it joins.
func (s *Session) addKey(e KeyEvent) {
	m := s.reg.metrics.received
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || e.Device == s.self {
		m.WithLabelValues(recvIgnored).Inc()
		return
	}
	if _, ok := s.members[e.Device]; !ok {
		s.expireHeldLocked()
		if len(s.held) >= s.reg.cfg.HoldKeys {
			s.held = s.held[1:]
			m.WithLabelValues(recvEvicted).Inc()
		}
		s.held = append(s.held, heldKey{KeyEvent: e, at: s.reg.cfg.Now()})
		m.WithLabelValues(recvHeld).Inc()
		return
	}
	s.applyLocked(e)
}

// applyLocked puts a member's key at its index (and makes it the ring's
// current one, as livekit's setKey does) unless a newer key is there.
func (s *Session) applyLocked(e KeyEvent) {
	m := s.reg.metrics.received
	identity := e.Device.Identity()
	ts := s.sentTS[identity]
	if ts == nil {
		ts = make(map[int]time.Time)
		s.sentTS[identity] = ts
	}
	if last, ok := ts[e.Index]; ok && last.After(e.SentTS) {
		m.WithLabelValues(recvOutdated).Inc()
		s.log.Info().Str("identity", identity).Int("index", e.Index).Msg("outdated media key dropped")
		return
	}
	s.ringsMu.Lock()
	ring := s.rings[identity]
	if ring == nil {
		var err error
		if ring, err = framecrypt.NewKeyRing(s.opts, nil); err != nil {
			s.ringsMu.Unlock()
			return // constant options
		}
		s.rings[identity] = ring
	}
	s.ringsMu.Unlock()
	if err := ring.SetKey(e.Index, e.Key); err != nil {
		s.log.Warn().Err(err).Str("identity", identity).Msg("member's media key refused")
		return
	}
	ts[e.Index] = e.SentTS
	m.WithLabelValues(recvAccepted).Inc()
	s.log.Debug().Str("identity", identity).Int("index", e.Index).Msg("member's media key set")
}

// releaseHeldLocked applies the held keys of a device that became a member.
func (s *Session) releaseHeldLocked(d membership.Device) {
	s.expireHeldLocked()
	kept := s.held[:0]
	var mine []KeyEvent
	for _, h := range s.held {
		if h.Device == d {
			mine = append(mine, h.KeyEvent)
			continue
		}
		kept = append(kept, h)
	}
	clear(s.held[len(kept):])
	s.held = kept
	for _, e := range mine {
		s.applyLocked(e)
	}
}

func (s *Session) expireHeldLocked() {
	cut := s.reg.cfg.Now().Add(-s.reg.cfg.HoldFor)
	n := 0
	for n < len(s.held) && s.held[n].at.Before(cut) {
		n++
	}
	if n > 0 {
		clear(s.held[:n])
		s.held = s.held[n:]
		s.reg.metrics.received.WithLabelValues(recvExpired).Add(float64(n))
	}
}

// Close ends the Session: it stops routing keys to it, forgets every key
// and makes its Transformer refuse frames.
func (s *Session) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.done.Store(true)
	if s.timer != nil {
		s.timer.Stop()
		s.timer, s.switchFn = nil, nil
	}
	s.held, s.sentTS, s.ownKey = nil, nil, nil
	s.mu.Unlock()
	s.ringsMu.Lock()
	clear(s.rings)
	s.ringsMu.Unlock()
	s.reg.remove(s)
}

// ring returns a member's key ring by LiveKit identity (nil: no key).
func (s *Session) ring(identity string) *framecrypt.KeyRing {
	s.ringsMu.RLock()
	defer s.ringsMu.RUnlock()
	return s.rings[identity]
}

func (s *Session) isClosed() bool { return s.done.Load() }

// newKey is a random media key, as matrix-js-sdk makes them.
func newKey() []byte {
	k := make([]byte, ownKeyLen)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go 1.24+)
	return k
}
