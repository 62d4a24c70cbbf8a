package signaling

import (
	"context"
	"fmt"
	"slices"
)

// How a transition is committed and announced: the call's change and the
// Matrix outbox entries of its event in one store transaction, then the
// relay revocation, the log line and the event for the WebSocket hub.

// update checks user takes part, then applies fn in one store transaction
// together with the outbox entries of the event it produces.
func (s *Service) update(ctx context.Context, user, callID string, fn func(*Call) error,
	event func(Conversation, Call) Event,
) (Conversation, Call, Event, error) {
	conv, _, err := s.read(ctx, user, callID)
	if err != nil {
		return Conversation{}, Call{}, Event{}, err
	}
	c, ev, err := s.commit(ctx, callID, fn, func(c Call) (Event, bool) { return event(conv, c), true })
	if err != nil {
		return Conversation{}, Call{}, Event{}, err
	}
	return conv, c, ev, nil
}

// commit applies fn and writes the outbox entries of the event it yields
// (if ok) in the same transaction.
func (s *Service) commit(ctx context.Context, callID string, fn func(*Call) error,
	event func(Call) (Event, bool),
) (Call, Event, error) {
	var ev Event
	var out []OutboxEntry
	ctx, j := WithTxEvents(ctx)
	c, err := s.cfg.Store.UpdateCallOutbox(ctx, callID, func(c *Call) ([]OutboxEntry, error) {
		j.Set()
		if err := fn(c); err != nil {
			return nil, err
		}
		e, ok := event(*c)
		if !ok {
			ev, out = Event{}, nil
			return nil, nil
		}
		var err error
		ev = j.set1(e)
		out, err = s.encode(e, *c)
		return out, err
	})
	if err != nil {
		return Call{}, Event{}, err
	}
	s.wake(out)
	return c, ev, nil
}

// signal writes the outbox entries of an event that changes no call state
// (candidates, select_answer, negotiate) and publishes it.
func (s *Service) signal(ctx context.Context, c Call, ev Event) error {
	out, err := s.encode(ev, c)
	if err != nil {
		return err
	}
	ctx, j := WithTxEvents(ctx)
	ev = j.set1(ev)
	if err := s.cfg.Store.AppendOutbox(ctx, out); err != nil {
		return err
	}
	s.wake(out)
	s.emit(ev)
	return nil
}

func (s *Service) encode(ev Event, c Call) ([]OutboxEntry, error) {
	// A bridged call's Matrix side is its MatrixRTC session, which the
	// gateway keeps: no m.call.* event goes out for it — but to a legacy
	// caller's (rtclegacy.go).
	if s.cfg.Outbound == nil || ev.Type == "" || (c.Bridged() && !c.LegacyBridged()) {
		return nil, nil
	}
	out, err := s.cfg.Outbound.Encode(ev, c)
	if err != nil {
		return nil, fmt.Errorf("signaling: encoding %s for Matrix: %w", ev.Type, err)
	}
	return out, nil
}

func (s *Service) wake(out []OutboxEntry) {
	if len(out) > 0 && s.cfg.Outbound != nil {
		s.cfg.Outbound.Wake()
	}
}

// ended runs what follows a committed end of call: relay revocation, the
// expiry timer, the log line and the event.
func (s *Service) ended(c Call, ev Event) {
	s.stopExpiry(c.ID)
	s.revokeRelay(c)
	s.logTransition(c, string(c.Status))
	s.emit(ev)
	if c.Bridged() && s.cfg.RTC != nil {
		s.cfg.RTC.Ended(c)
	}
}

// endEvent is the CallRejected or CallHangup event of an ended call.
func endEvent(conv Conversation, c Call, eventType, user, party string) Event {
	return newEvent(conv, c, eventType, EndPayload{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Reason: c.EndReason, Status: c.Status,
	})
}

// newEvent addresses an event to the conversation's participants (or, for
// a conversation that is gone, to the call's parties).
func newEvent(conv Conversation, c Call, eventType string, payload any) Event {
	recipients := conv.Participants
	if len(recipients) == 0 {
		recipients = callParties(c)
	}
	if c.LegacyBridged() {
		recipients = nil // the icebox clients take no part (rtclegacy.go)
	}
	return Event{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID,
		Recipients: slices.Clone(recipients), Payload: payload,
	}
}

func (s *Service) revokeRelay(c Call) {
	if s.cfg.Relay == nil || c.RevokedUntil == nil {
		return
	}
	n := s.cfg.Relay.RevokeCall(CredentialID(c.ID), *c.RevokedUntil)
	if n > 0 {
		s.log.Info().Str("call_id", c.ID).Int("allocations", n).Msg("closed the relay allocations of an ended call")
	}
}

func (s *Service) emit(ev Event) {
	if ev.tx != nil {
		taken := ev.tx.wasTaken()
		ev.tx = nil
		if taken { // the store wrote it with its transition; its readers deliver it
			return
		}
	}
	if s.cfg.Publisher != nil && ev.Type != "" {
		s.cfg.Publisher.Publish(ev)
	}
}

// logTransition writes one line per call transition — IDs and state only,
// never SDP.
func (s *Service) logTransition(c Call, what string) {
	ev := s.log.Info().Str("call_id", c.ID).Str("conversation_id", c.ConversationID).
		Str("status", string(c.Status)).Str("initiator", c.Initiator)
	if c.Answerer != "" {
		ev = ev.Str("answerer", c.Answerer)
	}
	if c.EndReason != "" {
		ev = ev.Str("reason", c.EndReason)
	}
	ev.Msg("call " + what)
}
