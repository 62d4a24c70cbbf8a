package signaling

import (
	"context"
	"encoding/json"
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
	Media                 // sdp_stream_metadata, capabilities: optional
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
	media, err := checkMedia(req.Media)
	if err != nil {
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
	protocol, err := s.checkProtocol(ctx, conv)
	if err != nil {
		return Call{}, err
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
		CallerMedia:    media,
	}
	if protocol == CallProtocolMatrixRTC {
		c.Protocol = CallProtocolMatrixRTC
	}
	ev := newEvent(conv, c, EventCallInvite, invitePayload(EventCallInvite, c, media))
	out, err := s.encode(ev, c)
	if err != nil {
		return Call{}, err
	}
	tctx, j := WithTxEvents(ctx)
	ev = j.set1(ev)
	if err := s.cfg.Store.CreateCallOutbox(tctx, c, out); err != nil {
		return Call{}, err
	}
	s.wake(out)
	s.logTransition(c, "initiated")
	s.armExpiry(c)
	s.emit(ev)
	if c.Bridged() {
		s.cfg.RTC.Place(c)
	}
	if len(out) > 0 {
		s.awaitInviteSent(ctx, &c)
	}
	return c, nil
}

// checkProtocol returns the protocol a new call in conv uses: matrixrtc
// when the conversation's calls resolve to MatrixRTC and the gateway is
// configured (the call is placed through it, no m.call.invite goes out),
// else legacy. Without the gateway such a call is refused while Matrix is
// on: sending it as a legacy m.call.invite would ring members (Element X)
// who cannot answer it. With Matrix off no Matrix event goes out whatever
// the protocol, so nothing is refused. It runs after the rate limit:
// resolving "auto" may ask the homeserver for the room's state.
func (s *Service) checkProtocol(ctx context.Context, conv Conversation) (string, error) {
	if s.cfg.Outbound == nil {
		return CallProtocolLegacy, nil
	}
	r := s.CallProtocol(ctx, conv)
	if r.Protocol != CallProtocolMatrixRTC {
		return CallProtocolLegacy, nil
	}
	if s.cfg.RTC != nil && conv.RoomID != "" {
		return CallProtocolMatrixRTC, nil
	}
	s.log.Info().Str("conversation_id", conv.ID).Str("reason", r.Reason).
		Msg("call refused: the conversation's calls resolve to MatrixRTC and the gateway is off")
	return "", fmt.Errorf("%w: the conversation's calls use MatrixRTC (%s %s, %s); icebox's MatrixRTC gateway is off (matrixrtc.gateway) — set the conversation's call_protocol to legacy to call with m.call.* events",
		ErrMatrixRTCUnsupported, r.Source, r.Setting, r.Reason)
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
	Media            // sdp_stream_metadata, capabilities: optional
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
	media, err := checkMedia(req.Media)
	if err != nil {
		return Call{}, err
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		if err := applyAnswer(c, user, party, req.SDPAnswer, s.cfg.Now().UTC()); err != nil {
			return err
		}
		keepMedia(c, user, party, media)
		return nil
	}, func(conv Conversation, c Call) Event {
		return newEvent(conv, c, EventCallAnswer, AnswerPayload{
			Type: EventCallAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, SDPAnswer: c.SDPAnswer, Status: c.Status, Media: media,
		})
	})
	if err != nil {
		return Call{}, err
	}
	s.stopExpiry(c.ID)
	s.logTransition(c, "answered")
	s.emit(ev)
	if c.Bridged() && s.cfg.RTC != nil {
		s.cfg.RTC.Answered(c)
	}
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
	if c.Bridged() && s.cfg.RTC != nil {
		s.cfg.RTC.Candidates(c, req.Candidates)
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
		return Call{}, invalidf("selected_party_id must be 1-255 characters of [0-9a-zA-Z._~-]")
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

// NegotiateRequest is POST /calls/{id}/negotiate: a renegotiation offer,
// or the answer to the other party's.
type NegotiateRequest struct {
	Description SessionDescription `json:"description"`
	LifetimeMS  int64              `json:"lifetime_ms,omitempty"` // offer: how long it waits for its answer; default 60 s
	PartyID     string             `json:"party_id,omitempty"`
	Media                          // sdp_stream_metadata, capabilities: optional
}

// Bounds of a negotiate's lifetime; matrix-js-sdk sends 60 s.
const (
	defaultNegotiateLifetime = 60 * time.Second
	minNegotiateLifetime     = time.Second
	maxNegotiateLifetime     = 5 * time.Minute
)

func negotiateLifetime(ms int64) (time.Duration, error) {
	if ms == 0 {
		return defaultNegotiateLifetime, nil
	}
	d := time.Duration(ms) * time.Millisecond
	if d < minNegotiateLifetime || d > maxNegotiateLifetime {
		return 0, invalidf("lifetime_ms must be between %d and %d", minNegotiateLifetime.Milliseconds(), maxNegotiateLifetime.Milliseconds())
	}
	return d, nil
}

// checkDescription checks a negotiate's description.
func checkDescription(d SessionDescription) error {
	if d.Type != DescriptionOffer && d.Type != DescriptionAnswer {
		return invalidf(`description.type must be "offer" or "answer"`)
	}
	return checkSDP("description.sdp", d.SDP)
}

// Negotiate relays a renegotiation offer or answer within an answered call
// (hold, a new track, screen share, ICE restart), under the glare rule of
// applyNegotiate: the callee's offer crossing the caller's is refused
// (negotiation_glare), an answer without the other party's offer too
// (no_offer).
func (s *Service) Negotiate(ctx context.Context, user, callID string, req NegotiateRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	if err := checkDescription(req.Description); err != nil {
		return err
	}
	lifetime, err := negotiateLifetime(req.LifetimeMS)
	if err != nil {
		return err
	}
	media, err := checkMedia(req.Media)
	if err != nil {
		return err
	}
	if !s.signals.allow(user) {
		return fmt.Errorf("%w: too many renegotiations", ErrRateLimited)
	}
	_, _, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		if c.Bridged() {
			// The gateway's leg answers the call's first offer only; a
			// renegotiation would go nowhere.
			return transitionErr(c, "not_supported", "renegotiation is not supported on a call bridged to MatrixRTC")
		}
		if err := applyNegotiate(c, user, party, req.Description.Type, lifetime, s.cfg.Now().UTC()); err != nil {
			return err
		}
		keepMedia(c, user, party, media)
		return nil
	}, func(conv Conversation, c Call) Event {
		return newEvent(conv, c, EventCallNegotiate, NegotiatePayload{
			Type: EventCallNegotiate, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, Description: req.Description, LifetimeMS: lifetime.Milliseconds(), Media: media,
		})
	})
	if err != nil {
		return err
	}
	s.emit(ev)
	return nil
}

// MetadataChangedRequest is POST /calls/{id}/metadata_changed: the
// sender's streams were muted, unmuted or put on hold
// (m.call.sdp_stream_metadata_changed).
type MetadataChangedRequest struct {
	SDPStreamMetadata json.RawMessage `json:"sdp_stream_metadata"`
	PartyID           string          `json:"party_id,omitempty"`
}

// MetadataChanged relays a party's new stream metadata to the other
// participants and to Matrix.
func (s *Service) MetadataChanged(ctx context.Context, user, callID string, req MetadataChangedRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	md, err := checkStreamMetadata(req.SDPStreamMetadata, true)
	if err != nil {
		return err
	}
	if !s.signals.allow(user) {
		return fmt.Errorf("%w: too many metadata changes", ErrRateLimited)
	}
	// Kept with the call (the latest of its side) in the transaction that
	// queues it for Matrix.
	_, _, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		if err := checkInCall(c, user, party); err != nil {
			return err
		}
		keepMedia(c, user, party, Media{StreamMetadata: md})
		return nil
	}, func(conv Conversation, c Call) Event {
		return newEvent(conv, c, EventCallStreamMetadataChanged, StreamMetadataPayload{
			Type: EventCallStreamMetadataChanged, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, SDPStreamMetadata: md,
		})
	})
	if err != nil {
		return err
	}
	s.emit(ev)
	return nil
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
