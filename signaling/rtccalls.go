package signaling

import (
	"context"
	"fmt"
	"time"
)

// Calls bridged to a room's MatrixRTC session (issue 17): the gateway
// (package signaling/matrixrtc/rtccall) joins the session with icebox's
// device on behalf of an icebox client and forwards the media between the
// client's WebRTC connection and the LiveKit room. The domain keeps the
// call as any other (ringing → answered → ended, TURN credentials revoked
// at the end); no m.call.* event goes out for it (encode), and the
// gateway hears of each step that concerns it through RTCCalls. The
// gateway's own transitions (a member answering, declining or leaving, an
// Element X user ringing) come back through the *FromRTC methods below.

// RTCCalls is the MatrixRTC gateway as the domain sees it. Its methods are
// called after the transition committed and must not block (the gateway
// does its Matrix and LiveKit work on goroutines of its own).
type RTCCalls interface {
	// Place starts the MatrixRTC side of a call an icebox client placed,
	// or a legacy Matrix caller's (c.LegacyBridged, rtclegacy.go): answer
	// c.SDPOffer with a gateway leg, join the room's session, ring.
	Place(c Call)
	// Answered: an icebox client answered a call an Element X user
	// placed (c.SDPAnswer answers the leg's offer): join the session.
	Answered(c Call)
	// Candidates are an icebox client's trickled ICE candidates for the
	// call's leg.
	Candidates(c Call, cs []Candidate)
	// Ended: c ended, whoever ended it: leave the session, close the leg
	// (and decline the ring of a call an icebox client rejected).
	Ended(c Call)
}

// Reasons of calls the gateway ends (EndFromRTC's reason when no user
// ended it).
const (
	// ReasonGatewayFailed: the call's leg failed (LiveKit disconnected,
	// the client's connection failed, joining the session failed).
	ReasonGatewayFailed = "gateway_failed"
	// ReasonE2EEUnavailable: the room is end-to-end encrypted and icebox
	// has no media keys for it; media is never sent in clear.
	ReasonE2EEUnavailable = "encryption_unavailable"
	// ReasonGatewayRestarted: icebox stopped during the call; its leg did
	// not survive (ended at the next start).
	ReasonGatewayRestarted = "gateway_restarted"
	// ReasonBusy: icebox's device is already in the room's session for
	// another bridged call (one membership per device and room).
	ReasonBusy = ReasonUserBusy
)

// RTCInvite is a MatrixRTC call an Element X user started in a room mapped
// to a conversation (their membership and an MSC4075 ring), offered to the
// conversation's icebox users with the gateway leg's SDP offer.
type RTCInvite struct {
	ID       string // the call's ID (the gateway mints its leg's TURN credentials for it first)
	RoomID   string
	Sender   string // the caller, a participant of the room's conversation
	DeviceID string // the caller's device: the call's party
	// NotificationEventID is the ring's event ID (kept as the call's
	// matrix_invite_event_id; a rejection declines it).
	NotificationEventID string
	SDPOffer            string        // the leg's offer
	Lifetime            time.Duration // what is left of the ring's lifetime
}

// InviteFromRTC starts a call a MatrixRTC caller placed. It rings the
// conversation's participants (CallInviteViaMatrix, protocol matrixrtc).
func (s *Service) InviteFromRTC(ctx context.Context, in RTCInvite) (Call, error) {
	if s.cfg.RoomIndex == nil {
		return Call{}, fmt.Errorf("%w: no room index", ErrNotFound)
	}
	conv, err := s.cfg.RoomIndex.ConversationByRoom(ctx, in.RoomID)
	if err != nil {
		return Call{}, err
	}
	if !conv.HasParticipant(in.Sender) {
		return Call{}, forbiddenf("%s is not a participant of the room's conversation", in.Sender)
	}
	if !ValidCallID(in.ID) {
		return Call{}, invalidf("call ID does not fit [0-9a-zA-Z._~-]{1,255}")
	}
	party, err := partyOf(in.Sender, in.DeviceID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_offer", in.SDPOffer); err != nil {
		return Call{}, err
	}
	if in.Lifetime < minRingLeft {
		return Call{}, fmt.Errorf("%w: ring has %v of its lifetime left", ErrStale, in.Lifetime)
	}
	c := Call{
		ID:                  in.ID,
		ConversationID:      conv.ID,
		RoomID:              conv.RoomID,
		Initiator:           in.Sender,
		PartyID:             party,
		Status:              StatusRinging,
		SDPOffer:            in.SDPOffer,
		LifetimeMS:          min(in.Lifetime, s.cfg.MaxInviteLifetime).Milliseconds(),
		Version:             VoIPVersion,
		Protocol:            CallProtocolMatrixRTC,
		CreatedAt:           s.cfg.Now().UTC(),
		MatrixInviteEventID: in.NotificationEventID,
	}
	// The event goes into the transaction's feed journal like every other
	// transition's (a store shared by several nodes writes it with the
	// call: every node delivers it in commit order, none loses it).
	tctx, j := WithTxEvents(ctx)
	ev := j.set1(newEvent(conv, c, EventCallInviteViaMatrix, invitePayload(EventCallInviteViaMatrix, c, Media{})))
	if err := s.cfg.Store.CreateCallOutbox(tctx, c, nil); err != nil {
		return Call{}, err
	}
	s.logTransition(c, "invited from MatrixRTC")
	s.armExpiry(c)
	s.emit(ev)
	return c, nil
}

// AnswerFromRTC answers a bridged call an icebox client placed: the first
// other member (user, device) joined the session; sdpAnswer is the leg's
// answer to the client's offer (CallAnswerViaMatrix; a legacy caller's
// call sends it as m.call.answer instead: rtclegacy.go).
func (s *Service) AnswerFromRTC(ctx context.Context, callID, user, device, sdpAnswer string) (Call, error) {
	party, err := partyOf(user, device)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_answer", sdpAnswer); err != nil {
		return Call{}, err
	}
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		return Call{}, err
	}
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		if !c.Bridged() {
			return invalidf("not a MatrixRTC call")
		}
		return applyAnswer(c, user, party, sdpAnswer, s.cfg.Now().UTC())
	}, func(c Call) (Event, bool) {
		if c.LegacyBridged() {
			return legacyAnswerEvent(conv, c), true
		}
		return newEvent(conv, c, EventCallAnswerViaMatrix, AnswerPayload{
			Type: EventCallAnswerViaMatrix, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, SDPAnswer: c.SDPAnswer, Status: c.Status,
		}), true
	})
	if err != nil {
		return Call{}, err
	}
	s.stopExpiry(c.ID)
	s.logTransition(c, "answered from MatrixRTC")
	s.emit(ev)
	return c, nil
}

// EndFromRTC ends a bridged call from the MatrixRTC side: user declined
// the ring (reject: the call is rejected; MSC4310), or hung up (their
// membership left, reason user_hangup); with user "" the gateway ended it
// (reason one of the Reason* of the gateway). Ending an ended call is the
// call_ended transition error. A legacy caller's call sends it as
// m.call.reject or m.call.hangup (rtclegacy.go).
func (s *Service) EndFromRTC(ctx context.Context, callID, user, reason string, reject bool) (Call, error) {
	if !reasonRE.MatchString(reason) {
		return Call{}, invalidf("reason must be 1-%d characters of [a-z_]", maxReason)
	}
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		return Call{}, err
	}
	evType := EventCallHangup
	switch {
	case reject:
		evType = EventCallRejectedViaMatrix
	case user != "":
		evType = EventCallHangupViaMatrix
	}
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		if err := notEnded(c); err != nil {
			return err
		}
		if !c.Bridged() {
			return invalidf("not a MatrixRTC call")
		}
		now := s.cfg.Now().UTC()
		if reject {
			if c.Status != StatusRinging {
				return transitionErr(c, "not_ringing", "only a ringing call can be rejected")
			}
			end(c, StatusRejected, ReasonRejected, user, now, s.cfg.CredentialTTL)
			return nil
		}
		end(c, StatusEnded, reason, user, now, s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		if c.LegacyBridged() {
			return legacyEndEvent(conv, c, user, reject), true
		}
		return endEvent(conv, c, evType, user, ""), true
	})
	if err != nil {
		return Call{}, err
	}
	s.ended(c, ev)
	return c, nil
}

// endStaleRTC ends the bridged calls a previous run left ringing or
// answered: their legs (a pion endpoint, a LiveKit participant) lived in
// that process. The bridge empties icebox's memberships at start-up
// (LeaveAllRTC); the calls end here, their credentials revoked.
func (s *Service) endStaleRTC(ctx context.Context) error {
	active, err := s.cfg.Store.ActiveCalls(ctx)
	if err != nil {
		return err
	}
	for _, c := range active {
		// A call bridged after this Service was made is this run's: the
		// API and the Matrix bridge may take calls before Run gets here.
		if !c.Bridged() || c.CreatedAt.After(s.created) {
			continue
		}
		if _, err := s.EndFromRTC(ctx, c.ID, "", ReasonGatewayRestarted, false); err != nil && !isTransition(err, "call_ended") {
			s.log.Error().Err(err).Str("call_id", c.ID).Msg("ending a MatrixRTC call left by the previous run")
		}
	}
	return nil
}
