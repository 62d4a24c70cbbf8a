package signaling

import (
	"context"
	"fmt"
	"time"
)

// The transitions icebox's own clients ask for (REST and WebSocket), and
// the administrator's revocation. Each validates its request, applies the
// state machine (machine.go) in one store transaction with its outbox
// entries (commit.go), then publishes its event.

// InitiateRequest is POST /calls/initiate.
type InitiateRequest struct {
	ConversationID string `json:"conversation_id"`
	SDPOffer       string `json:"sdp_offer"`
	Invitee        string `json:"invitee,omitempty"`
	LifetimeMS     int64  `json:"lifetime_ms,omitempty"`
	PartyID        string `json:"party_id,omitempty"`
}

// Initiate starts a call: it rings every other participant (or only the
// invitee) until answered, rejected or the invite's lifetime passes.
func (s *Service) Initiate(ctx context.Context, user string, req InitiateRequest) (Call, error) {
	conv, err := s.participantOf(ctx, user, req.ConversationID)
	if err != nil {
		return Call{}, err
	}
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_offer", req.SDPOffer); err != nil {
		return Call{}, err
	}
	if req.Invitee != "" && (req.Invitee == user || !conv.HasParticipant(req.Invitee)) {
		return Call{}, invalidf("invitee must be another participant of the conversation")
	}
	lifetime, err := s.inviteLifetime(req.LifetimeMS)
	if err != nil {
		return Call{}, err
	}
	if !s.initiates.allow(user) {
		return Call{}, fmt.Errorf("%w: too many calls started; try again shortly", ErrRateLimited)
	}
	c := Call{
		ID:             s.cfg.NewID(),
		ConversationID: conv.ID,
		RoomID:         conv.RoomID,
		Initiator:      user,
		Invitee:        req.Invitee,
		PartyID:        party,
		Status:         StatusRinging,
		SDPOffer:       req.SDPOffer,
		LifetimeMS:     lifetime.Milliseconds(),
		Version:        VoIPVersion,
		CreatedAt:      s.cfg.Now().UTC(),
	}
	ev := newEvent(conv, c, EventCallInvite, invitePayload(EventCallInvite, c))
	out, err := s.encode(ev, c)
	if err != nil {
		return Call{}, err
	}
	if err := s.cfg.Store.CreateCallOutbox(ctx, c, out); err != nil {
		return Call{}, err
	}
	s.wake(out)
	s.logTransition(c, "initiated")
	s.armExpiry(c)
	s.emit(ev)
	if len(out) > 0 {
		s.awaitInviteSent(ctx, &c)
	}
	return c, nil
}

// inviteLifetime is the lifetime an invite asks for, or the default.
func (s *Service) inviteLifetime(ms int64) (time.Duration, error) {
	if ms == 0 {
		return s.cfg.InviteLifetime, nil
	}
	lifetime := time.Duration(ms) * time.Millisecond
	if lifetime < minInviteLifetime || lifetime > s.cfg.MaxInviteLifetime {
		return 0, invalidf("lifetime_ms must be between %d and %d", minInviteLifetime.Milliseconds(), s.cfg.MaxInviteLifetime.Milliseconds())
	}
	return lifetime, nil
}

// awaitInviteSent gives c the event ID of its Matrix invite if the bridge
// sends it within InviteWait.
func (s *Service) awaitInviteSent(ctx context.Context, c *Call) {
	if s.cfg.Invites == nil || s.cfg.InviteWait <= 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.InviteWait)
	defer cancel()
	if id, ok := s.cfg.Invites.WaitInviteSent(wctx, c.ID); ok {
		c.MatrixInviteEventID = id
	}
}

// AnswerRequest is POST /calls/{id}/answer.
type AnswerRequest struct {
	SDPAnswer string `json:"sdp_answer"`
	PartyID   string `json:"party_id,omitempty"`
}

// Answer accepts a ringing call; the first answer wins.
func (s *Service) Answer(ctx context.Context, user, callID string, req AnswerRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_answer", req.SDPAnswer); err != nil {
		return Call{}, err
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyAnswer(c, user, party, req.SDPAnswer, s.cfg.Now().UTC())
	}, func(conv Conversation, c Call) Event {
		return newEvent(conv, c, EventCallAnswer, AnswerPayload{
			Type: EventCallAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, SDPAnswer: c.SDPAnswer, Status: c.Status,
		})
	})
	if err != nil {
		return Call{}, err
	}
	s.stopExpiry(c.ID)
	s.logTransition(c, "answered")
	s.emit(ev)
	return c, nil
}

// CandidatesRequest is POST /calls/{id}/candidates.
type CandidatesRequest struct {
	Candidates []Candidate `json:"candidates"`
	PartyID    string      `json:"party_id,omitempty"`
}

// Candidates relays ICE candidates to the other participants.
func (s *Service) Candidates(ctx context.Context, user, callID string, req CandidatesRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	if err := checkCandidates(req.Candidates); err != nil {
		return err
	}
	if !s.signals.allow(user) {
		return fmt.Errorf("%w: too many candidate messages; batch them", ErrRateLimited)
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return err
	}
	if err := checkInCall(&c, user, party); err != nil {
		return err
	}
	return s.signal(ctx, c, newEvent(conv, c, EventCallCandidates, CandidatesPayload{
		Type: EventCallCandidates, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Candidates: req.Candidates,
	}))
}

// SelectAnswerRequest is POST /calls/{id}/select_answer.
type SelectAnswerRequest struct {
	SelectedPartyID string `json:"selected_party_id"`
	PartyID         string `json:"party_id,omitempty"`
}

// SelectAnswer is the caller's confirmation of the chosen answer; other
// answering devices stop ringing when they hear it.
func (s *Service) SelectAnswer(ctx context.Context, user, callID string, req SelectAnswerRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if !partyRE.MatchString(req.SelectedPartyID) {
		return Call{}, invalidf("selected_party_id is required")
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSelectAnswer(&c, user, party, req.SelectedPartyID); err != nil {
		return Call{}, err
	}
	return c, s.signal(ctx, c, newEvent(conv, c, EventCallSelectAnswer, SelectAnswerPayload{
		Type: EventCallSelectAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, SelectedPartyID: req.SelectedPartyID,
	}))
}

// NegotiateRequest is POST /calls/{id}/negotiate.
type NegotiateRequest struct {
	Description SessionDescription `json:"description"`
	LifetimeMS  int64              `json:"lifetime_ms,omitempty"`
	PartyID     string             `json:"party_id,omitempty"`
}

// Negotiate relays a renegotiation offer or answer within an answered call.
func (s *Service) Negotiate(ctx context.Context, user, callID string, req NegotiateRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	if req.Description.Type != "offer" && req.Description.Type != "answer" {
		return invalidf(`description.type must be "offer" or "answer"`)
	}
	if err := checkSDP("description.sdp", req.Description.SDP); err != nil {
		return err
	}
	if !s.signals.allow(user) {
		return fmt.Errorf("%w: too many renegotiations", ErrRateLimited)
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return err
	}
	if err := checkNegotiate(&c, user, party); err != nil {
		return err
	}
	return s.signal(ctx, c, newEvent(conv, c, EventCallNegotiate, NegotiatePayload{
		Type: EventCallNegotiate, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Description: req.Description, LifetimeMS: req.LifetimeMS,
	}))
}

// EndRequest is POST /calls/{id}/reject and /hangup.
type EndRequest struct {
	Reason  string `json:"reason,omitempty"` // hangup only; default user_hangup
	PartyID string `json:"party_id,omitempty"`
}

// Reject declines a ringing call.
func (s *Service) Reject(ctx context.Context, user, callID string, req EndRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyReject(c, user, party, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
	}, func(conv Conversation, c Call) Event { return endEvent(conv, c, EventCallRejected, user, party) })
	if err != nil {
		return Call{}, err
	}
	s.ended(c, ev)
	return c, nil
}

// Hangup ends a call.
func (s *Service) Hangup(ctx context.Context, user, callID string, req EndRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	reason := req.Reason
	if reason == "" {
		reason = ReasonUserHangup
	}
	if !reasonRE.MatchString(reason) {
		return Call{}, invalidf("reason must be 1-%d characters of [a-z_]", maxReason)
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyHangup(c, user, party, reason, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
	}, func(conv Conversation, c Call) Event { return endEvent(conv, c, EventCallHangup, user, party) })
	if err != nil {
		return Call{}, err
	}
	s.ended(c, ev)
	return c, nil
}

// Revoke ends a call by an administrator's decision and kills its TURN
// credentials. Revoking an ended call re-applies the relay revocation.
func (s *Service) Revoke(ctx context.Context, callID string) (Call, error) {
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		return Call{}, err
	}
	var wasLive bool
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		wasLive = !c.Status.Terminal()
		applyRevoke(c, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), wasLive
	})
	if err != nil {
		return Call{}, err
	}
	if !wasLive {
		s.revokeRelay(c)
		return c, nil
	}
	s.ended(c, ev)
	return c, nil
}
