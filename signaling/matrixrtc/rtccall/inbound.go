package rtccall

import (
	"errors"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// RTCRing: another user rang a room (MSC4075, notification_type ring).
// A room mapped to a conversation, with the caller's membership live and no
// bridged call in it, becomes a CallInvite for the conversation's icebox
// users with the offer of a new leg (matrix.RTCObserver).
func (m *Manager) RTCRing(roomID string, r matrix.RTCRingEvent) {
	if r.Type != "ring" {
		m.metrics.rings.WithLabelValues(ringNotification).Inc()
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
		m.metrics.rings.WithLabelValues(m.ring(roomID, r)).Inc()
	}()
}

// ring places an inbound call and returns the ring's result label.
func (m *Manager) ring(roomID string, r matrix.RTCRingEvent) string {
	mx, calls := m.bound()
	if mx == nil || calls == nil {
		return ringFailed
	}
	self := mx.RTCIdentity()
	caller, ok := m.callerMembership(roomID, r.Sender, self)
	if !ok {
		m.log.Info().Str("room_id", roomID).Str("sender", r.Sender).Msg("MatrixRTC ring ignored: the caller has no live membership in the room's call")
		return ringNoMembership
	}
	lifetime := r.Lifetime
	if !r.SenderTS.IsZero() {
		lifetime = r.Expiry().Sub(m.cfg.Now())
	}
	l, ok := m.add(newCallID(), roomID, dirInbound)
	if !ok {
		m.log.Info().Str("room_id", roomID).Msg("MatrixRTC ring ignored: icebox is already in the room's call for another bridged call")
		return ringBusy
	}
	l.mu.Lock()
	l.caller, l.ringID = r.Sender, r.EventID
	l.mu.Unlock()
	// The leg's first worker: a teardown (the call ended at once) waits
	// for it.
	l.worker.Add(1)
	defer l.worker.Done()
	return m.offerInbound(l, caller, lifetime)
}

// callerMembership waits (bounded) for the caller's live membership: the
// ring and the membership come in one sync, in either order.
func (m *Manager) callerMembership(roomID, sender string, self membership.Device) (membership.Member, bool) {
	deadline := time.NewTimer(membershipWait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, mb := range m.others(roomID, self) {
			if mb.Sender == sender {
				return mb, true
			}
		}
		select {
		case <-m.ctx.Done():
			return membership.Member{}, false
		case <-deadline.C:
			return membership.Member{}, false
		case <-tick.C:
		}
	}
}

// offerInbound makes the leg's offer and rings the conversation's icebox
// users; on failure the leg is dropped (no call exists yet).
func (m *Manager) offerInbound(l *leg, caller membership.Member, lifetime time.Duration) string {
	mx, calls := m.bound()
	ctx, cancel := m.step(l)
	defer cancel()
	drop := func(result string, err error) string {
		m.log.Info().Err(err).Str("room_id", l.roomID).Str("sender", caller.Sender).Str("result", result).Msg("MatrixRTC ring not bridged")
		m.mu.Lock()
		delete(m.legs, l.callID)
		if m.rooms[l.roomID] == l {
			delete(m.rooms, l.roomID)
		}
		m.mu.Unlock()
		m.metrics.active.WithLabelValues(dirInbound).Dec()
		l.mu.Lock()
		gw, s := l.gw, l.e2ee
		l.ended = true
		l.mu.Unlock()
		if gw != nil {
			_ = gw.Close()
		}
		if s != nil {
			s.Close()
		}
		l.cancel()
		return result
	}
	tr, encrypted, err := m.media(ctx, mx, l)
	if errors.Is(err, errE2EE) {
		return drop(ringE2EE, err)
	}
	if err != nil {
		return drop(ringFailed, err)
	}
	focus := caller.ServiceURL
	if focus == "" || caller.FocusType != "livekit" {
		focus = m.focus(l.roomID, mx.RTCIdentity())
	}
	l.mu.Lock()
	l.serviceURL = focus
	l.mu.Unlock()
	gw, err := m.newLeg(l, "", "", tr, encrypted)
	if err != nil {
		return drop(ringFailed, err)
	}
	offer, err := gw.Offer(ctx)
	if err != nil {
		return drop(ringFailed, err)
	}
	l.mu.Lock()
	ringID := l.ringID
	l.mu.Unlock()
	device := caller.DeviceID
	if !partyRE.MatchString(device) {
		device = ""
	}
	_, err = calls.InviteFromRTC(ctx, signaling.RTCInvite{
		ID: l.callID, RoomID: l.roomID, Sender: caller.Sender, DeviceID: device,
		NotificationEventID: ringID, SDPOffer: offer, Lifetime: lifetime,
	})
	switch {
	case errors.Is(err, signaling.ErrStale):
		return drop(ringStale, err)
	case errors.Is(err, signaling.ErrNotFound), errors.Is(err, signaling.ErrForbidden):
		return drop(ringUnmapped, err)
	case err != nil:
		return drop(ringFailed, err)
	}
	return ringInvited
}
