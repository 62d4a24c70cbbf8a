package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// The Matrix side of calls: transitions caused by m.call.* events from
// Matrix users. They apply the same state machine as icebox's own clients,
// publish the ViaMatrix events to the conversation's WebSocket clients, and
// write no outbox entries for the event itself (it came from Matrix; it
// must not be echoed back).

// RoomIndex finds the conversation of a Matrix room (implemented by store).
type RoomIndex interface {
	ConversationByRoom(ctx context.Context, roomID string) (Conversation, error)
}

// ErrStale: a Matrix invite too old to ring (its lifetime has passed).
var ErrStale = errors.New("stale")

// minRingLeft is how much of an invite's lifetime must be left for it to
// ring: matrix-js-sdk drops invites with less than 3 s to go.
const minRingLeft = 3 * time.Second

// MatrixEvent is what every inbound m.call.* event carries.
type MatrixEvent struct {
	RoomID  string
	Sender  string // the Matrix user ID
	EventID string
	CallID  string
	PartyID string
	// Media is the event's sdp_stream_metadata and capabilities (invite,
	// answer, negotiate), carried to icebox's clients as received.
	Media Media
}

// MatrixInvite is an m.call.invite.
type MatrixInvite struct {
	MatrixEvent
	SDPOffer   string
	Invitee    string
	LifetimeMS int64
	AgeMS      int64 // unsigned.age plus the time since it was received
}

// matrixParty checks the room maps to a conversation the sender takes part in.
func (s *Service) matrixParty(ctx context.Context, ev MatrixEvent) (Conversation, error) {
	if s.cfg.RoomIndex == nil {
		return Conversation{}, fmt.Errorf("%w: no room index", ErrInvalid)
	}
	conv, err := s.cfg.RoomIndex.ConversationByRoom(ctx, ev.RoomID)
	if err != nil {
		return Conversation{}, err
	}
	if !conv.HasParticipant(ev.Sender) {
		return Conversation{}, forbiddenf("%s is not a participant of the room's conversation", ev.Sender)
	}
	if _, err := partyOf(ev.Sender, ev.PartyID); err != nil || ev.PartyID == "" {
		return Conversation{}, invalidf("party_id missing or invalid")
	}
	return conv, nil
}

// InviteFromMatrix starts a call that a Matrix user placed in a room mapped
// to a conversation. The Matrix call_id becomes the call's ID (it must fit
// icebox's ID grammar). A duplicate is ErrConflict; a stale invite ErrStale.
func (s *Service) InviteFromMatrix(ctx context.Context, in MatrixInvite) (Call, error) {
	conv, err := s.matrixParty(ctx, in.MatrixEvent)
	if err != nil {
		return Call{}, err
	}
	if !ValidCallID(in.CallID) {
		return Call{}, invalidf("call_id does not fit [0-9a-zA-Z._~-]{1,255}")
	}
	if err := checkSDP("offer.sdp", in.SDPOffer); err != nil {
		return Call{}, err
	}
	media, err := checkMedia(in.Media)
	if err != nil {
		return Call{}, err
	}
	left := time.Duration(in.LifetimeMS-in.AgeMS) * time.Millisecond
	if left < minRingLeft {
		return Call{}, fmt.Errorf("%w: invite has %v of its lifetime left", ErrStale, left)
	}
	if in.Invitee != "" && !conv.HasParticipant(in.Invitee) {
		return Call{}, invalidf("invitee is not a participant")
	}
	if keep, err := s.resolveGlare(ctx, conv, in); err != nil || !keep {
		return Call{}, err
	}
	bridged := s.legacyToRTC(ctx, conv, in)
	c := Call{
		ID:                  in.CallID,
		ConversationID:      conv.ID,
		RoomID:              conv.RoomID,
		Initiator:           in.Sender,
		Invitee:             in.Invitee,
		PartyID:             in.PartyID,
		Status:              StatusRinging,
		SDPOffer:            in.SDPOffer,
		LifetimeMS:          left.Milliseconds(),
		Version:             VoIPVersion,
		CreatedAt:           s.cfg.Now().UTC(),
		MatrixInviteEventID: in.EventID,
		MatrixPartyID:       in.PartyID,
		CallerMedia:         media,
	}
	if bridged {
		c.Protocol = CallProtocolMatrixRTC // rtclegacy.go
	}
	tctx, j := WithTxEvents(ctx)
	ev := j.set1(newEvent(conv, c, EventCallInviteViaMatrix, invitePayload(EventCallInviteViaMatrix, c, media)))
	if err := s.cfg.Store.CreateCallOutbox(tctx, c, nil); err != nil {
		return Call{}, err
	}
	s.logTransition(c, "invited from Matrix")
	s.armExpiry(c)
	s.emit(ev)
	if bridged {
		s.cfg.RTC.Place(c)
	}
	return c, nil
}

// AnswerFromMatrix applies a Matrix user's m.call.answer to a call an icebox
// client placed. The first answer wins; the caller's selection
// (m.call.select_answer) goes out in the same transaction.
func (s *Service) AnswerFromMatrix(ctx context.Context, ev MatrixEvent, sdp string) (Call, error) {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("answer.sdp", sdp); err != nil {
		return Call{}, err
	}
	media, err := checkMedia(ev.Media)
	if err != nil {
		return Call{}, err
	}
	var out Event
	tctx, j := WithTxEvents(ctx)
	c, err := s.cfg.Store.UpdateCallOutbox(tctx, ev.CallID, func(c *Call) ([]OutboxEntry, error) {
		j.Set()
		if err := inRoom(c, conv); err != nil {
			return nil, err
		}
		if err := applyAnswer(c, ev.Sender, ev.PartyID, sdp, s.cfg.Now().UTC()); err != nil {
			return nil, err
		}
		keepMedia(c, ev.Sender, ev.PartyID, media)
		out = j.set1(newEvent(conv, *c, EventCallAnswerViaMatrix, AnswerPayload{
			Type: EventCallAnswerViaMatrix, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: ev.Sender,
			PartyID: ev.PartyID, SDPAnswer: sdp, Status: c.Status, Media: media,
		}))
		// The caller (an icebox client) selects the first answer.
		sel := newEvent(conv, *c, EventCallSelectAnswer, SelectAnswerPayload{
			Type: EventCallSelectAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: c.Initiator,
			PartyID: c.PartyID, SelectedPartyID: ev.PartyID,
		})
		return s.encode(sel, *c)
	})
	if err != nil {
		return Call{}, err
	}
	if s.cfg.Outbound != nil {
		s.cfg.Outbound.Wake()
	}
	s.stopExpiry(c.ID)
	s.logTransition(c, "answered from Matrix")
	s.emit(out)
	return c, nil
}

// CandidatesFromMatrix relays a Matrix party's ICE candidates to the
// conversation's icebox clients.
func (s *Service) CandidatesFromMatrix(ctx context.Context, ev MatrixEvent, cs []Candidate) error {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return err
	}
	if err := checkCandidates(cs); err != nil {
		return err
	}
	c, err := s.cfg.Store.Call(ctx, ev.CallID)
	if err != nil {
		return err
	}
	if err := inRoom(&c, conv); err != nil {
		return err
	}
	if err := checkInCall(&c, ev.Sender, ev.PartyID); err != nil {
		return err
	}
	if c.Bridged() && s.cfg.RTC != nil {
		s.cfg.RTC.Candidates(c, cs) // a legacy caller's, for the gateway's leg
	}
	s.emit(newEvent(conv, c, EventCallCandidatesViaMatrix, CandidatesPayload{
		Type: EventCallCandidatesViaMatrix, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: ev.Sender,
		PartyID: ev.PartyID, Candidates: cs,
	}))
	return nil
}

// HangupFromMatrix ends a call by a Matrix party's m.call.hangup, or
// rejects it by m.call.reject (reject=true). A reject of a call an icebox
// client placed is selected like an answer (m.call.select_answer naming
// the rejecting party, as the spec has the caller do), so the Matrix
// user's other devices stop ringing.
func (s *Service) HangupFromMatrix(ctx context.Context, ev MatrixEvent, reason string, reject bool) (Call, error) {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return Call{}, err
	}
	if reason == "" || !reasonRE.MatchString(reason) {
		reason = ReasonUserHangup // received reasons are parsed leniently
	}
	evType := EventCallHangupViaMatrix
	apply := func(c *Call) error {
		return applyHangup(c, ev.Sender, ev.PartyID, reason, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
	}
	if reject {
		evType = EventCallRejectedViaMatrix
		apply = func(c *Call) error {
			return applyReject(c, ev.Sender, ev.PartyID, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		}
	}
	var out Event
	tctx, j := WithTxEvents(ctx)
	c, err := s.cfg.Store.UpdateCallOutbox(tctx, ev.CallID, func(c *Call) ([]OutboxEntry, error) {
		j.Set()
		if err := inRoom(c, conv); err != nil {
			return nil, err
		}
		if err := apply(c); err != nil {
			return nil, err
		}
		out = j.set1(endEvent(conv, *c, evType, ev.Sender, ev.PartyID))
		if !reject || c.MatrixPartyID != "" {
			return nil, nil
		}
		return s.encode(newEvent(conv, *c, EventCallSelectAnswer, SelectAnswerPayload{
			Type: EventCallSelectAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: c.Initiator,
			PartyID: c.PartyID, SelectedPartyID: ev.PartyID,
		}), *c)
	})
	if err != nil {
		return Call{}, err
	}
	if reject && s.cfg.Outbound != nil {
		s.cfg.Outbound.Wake()
	}
	s.ended(c, out)
	return c, nil
}

// SelectAnswerFromMatrix handles a Matrix caller's m.call.select_answer for
// a call an icebox client answered: if another party was chosen, the call
// ends here ("answered elsewhere").
func (s *Service) SelectAnswerFromMatrix(ctx context.Context, ev MatrixEvent, selected string) (Call, error) {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return Call{}, err
	}
	c, err := s.cfg.Store.Call(ctx, ev.CallID)
	if err != nil {
		return Call{}, err
	}
	if err := inRoom(&c, conv); err != nil {
		return Call{}, err
	}
	if err := checkSelectAnswer(&c, ev.Sender, ev.PartyID, selected); err == nil {
		s.emit(newEvent(conv, c, EventCallSelectAnswerViaMatrix, SelectAnswerPayload{
			Type: EventCallSelectAnswerViaMatrix, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: ev.Sender,
			PartyID: ev.PartyID, SelectedPartyID: selected,
		}))
		return c, nil
	} else if !isTransition(err, "answer_already_selected") {
		return Call{}, err
	}
	var out Event
	tctx, j := WithTxEvents(ctx)
	c, err = s.cfg.Store.UpdateCallOutbox(tctx, ev.CallID, func(c *Call) ([]OutboxEntry, error) {
		j.Set()
		if err := inRoom(c, conv); err != nil {
			return nil, err
		}
		if err := notEnded(c); err != nil {
			return nil, err
		}
		end(c, StatusEnded, ReasonAnsweredElsewhere, ev.Sender, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		out = j.set1(endEvent(conv, *c, EventCallHangupViaMatrix, ev.Sender, ev.PartyID))
		return nil, nil
	})
	if err != nil {
		return Call{}, err
	}
	s.ended(c, out)
	return c, nil
}

// NegotiateFromMatrix relays a Matrix party's m.call.negotiate (an offer,
// or the answer to an icebox client's offer) to the conversation's icebox
// clients as CallNegotiateViaMatrix, under the same glare rule as
// Negotiate: an answer to no pending offer of the other party (no_offer),
// a callee's offer crossing the caller's (negotiation_glare), anything on
// an ended call or from a party not chosen is refused — the bridge counts
// it as ignored. lifetimeMS 0 is the default, 60 s.
func (s *Service) NegotiateFromMatrix(ctx context.Context, ev MatrixEvent, desc SessionDescription, lifetimeMS int64) (Call, error) {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return Call{}, err
	}
	if err := checkDescription(desc); err != nil {
		return Call{}, err
	}
	if lifetimeMS != 0 {
		// Received lifetimes are taken within the bounds, not refused.
		lifetimeMS = min(max(lifetimeMS, minNegotiateLifetime.Milliseconds()), maxNegotiateLifetime.Milliseconds())
	}
	lifetime, _ := negotiateLifetime(lifetimeMS)
	media, err := checkMedia(ev.Media)
	if err != nil {
		return Call{}, err
	}
	var out Event
	tctx, j := WithTxEvents(ctx)
	c, err := s.cfg.Store.UpdateCallOutbox(tctx, ev.CallID, func(c *Call) ([]OutboxEntry, error) {
		j.Set()
		if err := inRoom(c, conv); err != nil {
			return nil, err
		}
		if c.Bridged() {
			return nil, transitionErr(c, "not_supported", "renegotiation is not supported on a call bridged to MatrixRTC")
		}
		if err := applyNegotiate(c, ev.Sender, ev.PartyID, desc.Type, lifetime, s.cfg.Now().UTC()); err != nil {
			return nil, err
		}
		keepMedia(c, ev.Sender, ev.PartyID, media)
		out = j.set1(newEvent(conv, *c, EventCallNegotiateViaMatrix, NegotiatePayload{
			Type: EventCallNegotiateViaMatrix, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: ev.Sender,
			PartyID: ev.PartyID, Description: desc, LifetimeMS: lifetime.Milliseconds(), Media: media,
		}))
		return nil, nil
	})
	if err != nil {
		return Call{}, err
	}
	s.emit(out)
	return c, nil
}

// StreamMetadataFromMatrix relays a Matrix party's
// m.call.sdp_stream_metadata_changed to the conversation's icebox clients
// (CallStreamMetadataChangedViaMatrix), from the caller or the chosen
// answerer of a live call only, and keeps it as the latest of that side.
func (s *Service) StreamMetadataFromMatrix(ctx context.Context, ev MatrixEvent, metadata json.RawMessage) error {
	conv, err := s.matrixParty(ctx, ev)
	if err != nil {
		return err
	}
	md, err := checkStreamMetadata(metadata, true)
	if err != nil {
		return err
	}
	var out Event
	tctx, j := WithTxEvents(ctx)
	_, err = s.cfg.Store.UpdateCall(tctx, ev.CallID, func(c *Call) error {
		j.Set()
		if err := inRoom(c, conv); err != nil {
			return err
		}
		if err := checkInCall(c, ev.Sender, ev.PartyID); err != nil {
			return err
		}
		keepMedia(c, ev.Sender, ev.PartyID, Media{StreamMetadata: md})
		out = j.set1(newEvent(conv, *c, EventCallStreamMetadataChangedViaMatrix, StreamMetadataPayload{
			Type: EventCallStreamMetadataChangedViaMatrix, CallID: c.ID, ConversationID: c.ConversationID,
			ParticipantID: ev.Sender, PartyID: ev.PartyID, SDPStreamMetadata: md,
		}))
		return nil
	})
	if err != nil {
		return err
	}
	s.emit(out)
	return nil
}

// MemberLeft ends the live calls of a Matrix user who left the room of a
// conversation, or was kicked or banned from it: the spec counts leaving
// the room as a hangup. The calls ended are those the user placed, the
// ones they answered, the ringing ones that invite them by name, and the
// ringing ones that invite nobody by name when nobody but their caller is
// left to answer (the user was the room's only other member: such a call
// would otherwise ring on until it expires); each ends with reason
// user_hangup, ended by the user, its TURN credentials
// revoked, and CallHangupViaMatrix goes to the conversation's icebox
// clients. Nothing is sent to Matrix (the user is gone; the room's other
// members saw the leave).
func (s *Service) MemberLeft(ctx context.Context, roomID, user string) ([]Call, error) {
	if s.cfg.RoomIndex == nil {
		return nil, fmt.Errorf("%w: no room index", ErrInvalid)
	}
	conv, err := s.cfg.RoomIndex.ConversationByRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	active, err := s.cfg.Store.Calls(ctx, CallFilter{ConversationID: conv.ID, ActiveOnly: true, NoSDP: true})
	if err != nil {
		return nil, err
	}
	var ended []Call
	for _, c := range active {
		if !involves(c, user) && !orphaned(c, conv, user) {
			continue
		}
		var out Event
		tctx, j := WithTxEvents(ctx)
		c, err := s.cfg.Store.UpdateCallOutbox(tctx, c.ID, func(c *Call) ([]OutboxEntry, error) {
			j.Set()
			if err := notEnded(c); err != nil {
				return nil, err
			}
			if !involves(*c, user) && !orphaned(*c, conv, user) {
				return nil, transitionErr(c, "not_involved", "the user no longer takes part in the call")
			}
			end(c, StatusEnded, ReasonUserHangup, user, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
			party := c.PartyID
			if c.Answerer == user && c.Initiator != user {
				party = c.AnswerPartyID
			}
			out = j.set1(endEvent(conv, *c, EventCallHangupViaMatrix, user, party))
			return nil, nil
		})
		var te *TransitionError
		switch {
		case errors.As(err, &te):
			continue // ended meanwhile
		case err != nil:
			return ended, err
		}
		s.ended(c, out)
		ended = append(ended, c)
	}
	return ended, nil
}

// involves reports whether user placed c, answered it, or is the invitee
// of a ringing c.
func involves(c Call, user string) bool {
	return c.Initiator == user || c.Answerer == user || (c.Status == StatusRinging && c.Invitee == user)
}

// orphaned reports whether c rings for anyone (no invitee named) in conv
// while nobody but its caller and the user who left could answer it. The
// conversation may still list the user: mapping the room to the
// conversation refuses a room with no member left but the service user.
func orphaned(c Call, conv Conversation, user string) bool {
	if c.Status != StatusRinging || c.Invitee != "" {
		return false
	}
	for _, p := range conv.Participants {
		if p != c.Initiator && p != user {
			return false
		}
	}
	return true
}

func isTransition(err error, code string) bool {
	var te *TransitionError
	return errors.As(err, &te) && te.Code == code
}

// ErrGlare: both sides called each other at once and ours was kept.
var ErrGlare = errors.New("glare")

// resolveGlare applies the spec's glare rule when a Matrix user's invite
// crosses a ringing call an icebox client placed to them in the same
// conversation: the call with the lexicographically lesser call_id stays.
// If theirs wins, ours ends ("replaced", sent to Matrix too); if ours
// wins, theirs is refused with ErrGlare.
func (s *Service) resolveGlare(ctx context.Context, conv Conversation, in MatrixInvite) (keepTheirs bool, err error) {
	active, err := s.cfg.Store.Calls(ctx, CallFilter{ConversationID: conv.ID, ActiveOnly: true, NoSDP: true})
	if err != nil {
		return false, err
	}
	for _, ours := range active {
		crossing := ours.Status == StatusRinging && ours.MatrixPartyID == "" &&
			(ours.Invitee == in.Sender || ours.Invitee == "") && ours.Initiator != in.Sender
		if !crossing {
			continue
		}
		if ours.ID < in.CallID {
			return false, fmt.Errorf("%w: call %s crosses %s and has the lesser call_id", ErrGlare, ours.ID, in.CallID)
		}
		c, ev, err := s.commit(ctx, ours.ID, func(c *Call) error {
			if c.Status != StatusRinging {
				return &TransitionError{Code: "not_ringing", Status: c.Status, Msg: "the call stopped ringing"}
			}
			end(c, StatusEnded, "replaced", "", s.cfg.Now().UTC(), s.cfg.CredentialTTL)
			return nil
		}, func(c Call) (Event, bool) {
			return endEvent(conv, c, EventCallHangup, "", ""), true
		})
		if err != nil {
			if isTransition(err, "not_ringing") {
				continue
			}
			return false, err
		}
		s.ended(c, ev)
	}
	return true, nil
}

// inRoom refuses a Matrix event about a call of another conversation than
// the room it was sent in: a member of one room must not reach the calls
// (and the clients) of another.
func inRoom(c *Call, conv Conversation) error {
	if c.ConversationID != conv.ID {
		return forbiddenf("the call is not in this room")
	}
	return nil
}
