package signaling

import (
	"context"
	"errors"
)

// Reading calls: by a participant, by the administrator, and for the
// system-driven transitions.

// Get returns a call to a participant of its conversation.
func (s *Service) Get(ctx context.Context, user, callID string) (Call, error) {
	_, c, err := s.read(ctx, user, callID)
	return c, err
}

// GetAny returns a call whoever asks (admin).
func (s *Service) GetAny(ctx context.Context, callID string) (Call, error) {
	return s.cfg.Store.Call(ctx, callID)
}

// List returns a conversation's calls, newest first, to a participant.
func (s *Service) List(ctx context.Context, user, convID string, activeOnly bool, limit int) ([]Call, error) {
	if _, err := s.participantOf(ctx, user, convID); err != nil {
		return nil, err
	}
	return s.cfg.Store.Calls(ctx, CallFilter{ConversationID: convID, ActiveOnly: activeOnly, Limit: limit, NoSDP: true})
}

// read loads a call and its conversation and checks user takes part. A call
// whose conversation was deleted stays visible to its caller and answerer.
func (s *Service) read(ctx context.Context, user, callID string) (Conversation, Call, error) {
	if !ValidCallID(callID) {
		return Conversation{}, Call{}, invalidf("a call ID is 1-255 characters of [0-9a-zA-Z._~-]")
	}
	c, err := s.cfg.Store.Call(ctx, callID)
	if err != nil {
		return Conversation{}, Call{}, err
	}
	conv, err := s.cfg.Store.Conversation(ctx, c.ConversationID)
	switch {
	case errors.Is(err, ErrNotFound):
		if user != c.Initiator && user != c.Answerer {
			return Conversation{}, Call{}, forbiddenf("not a participant of the call")
		}
		return Conversation{ID: c.ConversationID, Participants: callParties(c)}, c, nil
	case err != nil:
		return Conversation{}, Call{}, err
	case !conv.HasParticipant(user):
		return Conversation{}, Call{}, forbiddenf("not a participant of the call's conversation")
	}
	return conv, c, nil
}

// conversationOfCall loads the conversation of a call for system-driven
// transitions (expiry, revocation). A deleted conversation yields one made
// of the call's parties.
func (s *Service) conversationOfCall(ctx context.Context, callID string) (Conversation, error) {
	c, err := s.cfg.Store.Call(ctx, callID)
	if err != nil {
		return Conversation{}, err
	}
	conv, err := s.cfg.Store.Conversation(ctx, c.ConversationID)
	if errors.Is(err, ErrNotFound) {
		return Conversation{ID: c.ConversationID, Participants: callParties(c)}, nil
	}
	return conv, err
}

func callParties(c Call) []string {
	out := []string{c.Initiator}
	if c.Answerer != "" && c.Answerer != c.Initiator {
		out = append(out, c.Answerer)
	}
	return out
}
