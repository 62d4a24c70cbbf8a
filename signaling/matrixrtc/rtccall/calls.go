package rtccall

import (
	"context"
	"errors"
	"regexp"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// The domain's side (signaling.RTCCalls) and the Matrix bridge's
// (matrix.RTCObserver). Each returns at once; the work runs on the leg's
// goroutines.

// Place starts the MatrixRTC side of a call an icebox client placed, or
// of a legacy Matrix caller's invite bridged to the room's MatrixRTC call.
func (m *Manager) Place(c signaling.Call) {
	dir := dirOutbound
	if c.LegacyBridged() {
		// A legacy m.call.* caller's invite (signaling/rtclegacy.go): the
		// leg answers the caller's offer as it answers an icebox client's;
		// the domain turns the answer and the end into m.call.* events.
		dir = dirLegacy
	}
	l, ok := m.add(c.ID, c.RoomID, dir)
	if !ok {
		// One membership per device and room: another bridged call is
		// there (or icebox is stopping).
		m.log.Info().Str("call_id", c.ID).Str("room_id", c.RoomID).Msg("bridged call refused: icebox is already in the room's MatrixRTC call")
		tmp := &leg{callID: c.ID, ctx: context.Background()}
		m.end(tmp, "", signaling.ReasonBusy, false)
		return
	}
	m.goLeg(l, func() { m.placeOutbound(l, c) })
}

func (m *Manager) placeOutbound(l *leg, c signaling.Call) {
	mx, calls := m.bound()
	if mx == nil || calls == nil {
		m.fail(l, signaling.ReasonGatewayFailed, errors.New("rtccall: not bound to the bridge"))
		return
	}
	self := mx.RTCIdentity()
	ctx, cancel := m.step(l)
	defer cancel()
	tr, encrypted, err := m.media(ctx, mx, l)
	if err != nil {
		reason := signaling.ReasonGatewayFailed
		if errors.Is(err, errE2EE) {
			reason = signaling.ReasonE2EEUnavailable
		}
		m.fail(l, reason, err)
		return
	}
	focus := m.focus(l.roomID, self)
	url, jwt, err := mx.RTCFocusToken(ctx, focus, l.roomID)
	if err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	gw, err := m.newLeg(l, url, jwt, tr, encrypted)
	if err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	answer, err := gw.Answer(ctx, c.SDPOffer)
	if err != nil {
		reason := signaling.ReasonGatewayFailed
		if errors.Is(err, gateway.ErrUnencrypted) {
			reason = signaling.ReasonE2EEUnavailable
		}
		m.fail(l, reason, err)
		return
	}
	l.setReady()
	l.mu.Lock()
	l.serviceURL, l.answerSDP = focus, answer
	l.mu.Unlock()
	memberEvent, err := m.join(ctx, mx, l, focus, intent(c.SDPOffer))
	if err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	m.watch(l, gw, self)
	others := m.others(l.roomID, self)
	if s := l.session(); s != nil {
		s.Start(l.ctx, devices(others))
	}
	if len(others) > 0 {
		// The room's call is live: joining it is the answer.
		m.answer(l, others[0])
		return
	}
	lifetime := time.Until(c.InviteDeadline())
	ringID, err := mx.RingRTC(ctx, l.roomID, matrix.RTCRing{
		MembershipEventID: memberEvent, Lifetime: lifetime, Type: "ring", Intent: intent(c.SDPOffer),
	})
	if err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	l.mu.Lock()
	l.ringID = ringID
	l.mu.Unlock()
	// A member who joined while icebox rang was answered by RTCMember
	// (answerSDP was set before JoinRTC).
}

// answer answers an outbound call: mb, another member, joined.
func (m *Manager) answer(l *leg, mb membership.Member) {
	l.mu.Lock()
	if l.answered || l.answerSDP == "" || l.ended {
		l.mu.Unlock()
		return
	}
	l.answered = true
	sdp := l.answerSDP
	l.mu.Unlock()
	_, calls := m.bound()
	m.goLeg(l, func() {
		ctx, cancel := m.step(l)
		defer cancel()
		device := mb.DeviceID
		if !partyRE.MatchString(device) {
			device = "" // the user's default party
		}
		if _, err := calls.AnswerFromRTC(ctx, l.callID, mb.Sender, device, sdp); err != nil {
			if errors.Is(err, signaling.ErrForbidden) {
				// Not the invitee the call names (a legacy caller's invite
				// may name one): the next member to join may answer.
				l.mu.Lock()
				l.answered = false
				l.mu.Unlock()
				m.log.Info().Str("call_id", l.callID).Str("member", mb.Sender).Msg("a member who is not the call's invitee joined; still ringing")
				return
			}
			if l.ctx.Err() == nil {
				m.log.Warn().Err(err).Str("call_id", l.callID).Msg("answering a bridged call")
			}
			return
		}
		m.metrics.answered.WithLabelValues(l.dir).Inc()
	})
}

var partyRE = regexp.MustCompile(`^[0-9a-zA-Z._~-]{1,255}$`)

// Answered completes an inbound call's leg with the icebox client's
// answer: the LiveKit room, then icebox's membership.
func (m *Manager) Answered(c signaling.Call) {
	l := m.leg(c.ID)
	if l == nil {
		return
	}
	m.goLeg(l, func() { m.acceptInbound(l, c) })
}

func (m *Manager) acceptInbound(l *leg, c signaling.Call) {
	mx, _ := m.bound()
	self := mx.RTCIdentity()
	ctx, cancel := m.step(l)
	defer cancel()
	l.mu.Lock()
	gw, focus := l.gw, l.serviceURL
	l.answered = true
	l.mu.Unlock()
	url, jwt, err := mx.RTCFocusToken(ctx, focus, l.roomID)
	if err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	if err := gw.Accept(ctx, c.SDPAnswer, url, jwt); err != nil {
		reason := signaling.ReasonGatewayFailed
		if errors.Is(err, gateway.ErrUnencrypted) {
			reason = signaling.ReasonE2EEUnavailable
		}
		m.fail(l, reason, err)
		return
	}
	l.setReady()
	if _, err := m.join(ctx, mx, l, focus, intent(c.SDPOffer)); err != nil {
		m.fail(l, signaling.ReasonGatewayFailed, err)
		return
	}
	if s := l.session(); s != nil {
		s.Start(l.ctx, devices(m.others(l.roomID, self)))
	}
	m.metrics.answered.WithLabelValues(dirInbound).Inc()
	m.watch(l, gw, self)
	m.checkMembers(l, self, membership.Member{}) // the caller may have left meanwhile
}

// Candidates passes an icebox client's trickled candidates to its leg.
func (m *Manager) Candidates(c signaling.Call, cs []signaling.Candidate) {
	l := m.leg(c.ID)
	if l == nil {
		return
	}
	in := make([]webrtc.ICECandidateInit, 0, len(cs))
	for _, cand := range cs {
		if cand.Candidate == "" {
			continue // end of candidates
		}
		in = append(in, webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: cand.SDPMid,
			SDPMLineIndex: u16(cand.SDPMLineIndex), UsernameFragment: cand.UsernameFragment})
	}
	l.mu.Lock()
	if !l.ready {
		l.pending = append(l.pending, in...)
		l.mu.Unlock()
		return
	}
	gw := l.gw
	l.mu.Unlock()
	for _, c := range in {
		_ = gw.AddCandidate(c)
	}
}

func u16(p *int) *uint16 {
	if p == nil || *p < 0 || *p > 0xffff {
		return nil
	}
	v := uint16(*p)
	return &v
}

// Ended tears down an ended call's leg: the leg closed, icebox's
// membership emptied, the ring declined if an icebox client rejected an
// inbound call.
func (m *Manager) Ended(c signaling.Call) {
	l := m.leg(c.ID)
	if l == nil {
		return
	}
	l.mu.Lock()
	already := l.ended
	l.ended = true
	l.mu.Unlock()
	if already {
		return
	}
	l.cancel()
	m.mu.Lock()
	if m.done {
		m.mu.Unlock()
		return // Run tears it down
	}
	m.wg.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		m.teardown(l, c)
	}()
}

// teardown waits for l's goroutines, closes its leg, leaves the session
// (and declines a rejected inbound ring), then frees the room. c is zero
// when icebox stops.
func (m *Manager) teardown(l *leg, c signaling.Call) {
	l.worker.Wait()
	l.mu.Lock()
	gw, s, joined, ringID, inbound, caller := l.gw, l.e2ee, l.joinSent, l.ringID, l.inbound, l.caller
	torn := l.torn
	l.ended, l.torn = true, true
	l.mu.Unlock()
	if torn {
		return
	}
	if gw != nil {
		_ = gw.Close()
	}
	if s != nil {
		s.Close()
	}
	mx, _ := m.bound()
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.StepTimeout)
	defer cancel()
	if mx != nil && joined {
		if err := mx.LeaveRTC(ctx, l.roomID); err != nil {
			m.log.Warn().Err(err).Str("call_id", l.callID).Msg("leaving the MatrixRTC call; icebox's membership expires on its own (or is emptied at the next start)")
		}
	}
	if mx != nil && inbound && c.Status == signaling.StatusRejected && c.EndedBy != caller && ringID != "" {
		if err := mx.DeclineRTC(ctx, l.roomID, ringID); err != nil {
			m.log.Warn().Err(err).Str("call_id", l.callID).Msg("declining the MatrixRTC ring")
		}
	}
	m.mu.Lock()
	delete(m.legs, l.callID)
	if m.rooms[l.roomID] == l {
		delete(m.rooms, l.roomID)
	}
	m.mu.Unlock()
	m.metrics.active.WithLabelValues(l.dir).Dec()
	if c.ID != "" {
		m.metrics.ended.WithLabelValues(endLabel(c, inbound, caller)).Inc()
	}
	m.log.Info().Str("call_id", l.callID).Str("room_id", l.roomID).Str("status", string(c.Status)).Str("reason", c.EndReason).
		Msg("bridged call torn down")
}

func (l *leg) session() E2EESession {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.e2ee
}

// RTCMember follows another device's membership: a member joining answers
// a ringing outbound call; the members leaving end the call (matrix.RTCObserver).
func (m *Manager) RTCMember(roomID string, mb membership.Member, left bool) {
	l := m.roomLeg(roomID)
	if l == nil {
		return
	}
	mx, _ := m.bound()
	if mx == nil {
		return
	}
	self := mx.RTCIdentity()
	if mb.Device() == self {
		return
	}
	if s := l.session(); s != nil {
		m.goLeg(l, func() {
			if left {
				s.MemberLeft(l.ctx, mb.Device())
			} else {
				s.MemberJoined(l.ctx, mb.Device())
			}
		})
	}
	if !left {
		if !l.inbound {
			m.answer(l, mb)
		}
		return
	}
	m.checkMembers(l, self, mb)
}

// RTCDecline: another user declined icebox's ring; the ringing call is
// rejected (matrix.RTCObserver).
func (m *Manager) RTCDecline(roomID string, d matrix.RTCDeclineEvent) {
	l := m.roomLeg(roomID)
	if l == nil || l.inbound {
		return
	}
	l.mu.Lock()
	match := l.ringID != "" && l.ringID == d.NotificationEventID && !l.answered
	l.mu.Unlock()
	if !match {
		return
	}
	m.metrics.declined.Inc()
	m.end(l, d.Sender, signaling.ReasonRejected, true)
}
