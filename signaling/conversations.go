package signaling

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Conversations, as the admin API and the Matrix rooms the service user
// joins make them, and the participant checks of the call operations.

// PutConversation creates or replaces a conversation (admin), keeping its
// call protocol setting.
func (s *Service) PutConversation(ctx context.Context, id string, participants []string, roomID string) (Conversation, error) {
	return s.PutConversationSpec(ctx, id, ConversationSpec{Participants: participants, RoomID: roomID})
}

// ConversationSpec is what an administrator puts (PUT
// /admin/conversations/{id}).
type ConversationSpec struct {
	Participants []string
	RoomID       string // "" keeps the stored room
	// CallProtocol: nil keeps the stored setting, "" clears it (the
	// conversation follows matrix.call_protocol), else legacy, matrixrtc
	// or auto.
	CallProtocol *string
}

// PutConversationSpec creates or replaces a conversation (admin).
func (s *Service) PutConversationSpec(ctx context.Context, id string, spec ConversationSpec) (Conversation, error) {
	participants, roomID := spec.Participants, spec.RoomID
	if err := checkConversation(id, participants); err != nil {
		return Conversation{}, err
	}
	if p := spec.CallProtocol; p != nil && *p != "" && !ValidCallProtocol(*p) {
		return Conversation{}, invalidf("call_protocol must be one of legacy, matrixrtc, auto (or \"\" for matrix.call_protocol)")
	}
	defer s.convLocks.lock(id)()
	now := s.cfg.Now().UTC()
	conv := Conversation{ID: id, Participants: slices.Clone(participants), RoomID: roomID, CreatedAt: now, UpdatedAt: now}
	if spec.CallProtocol != nil {
		conv.CallProtocol = *spec.CallProtocol
	}
	if old, err := s.cfg.Store.Conversation(ctx, id); err == nil {
		conv.CreatedAt = old.CreatedAt
		if roomID == "" {
			conv.RoomID = old.RoomID
		}
		if spec.CallProtocol == nil {
			conv.CallProtocol = old.CallProtocol
		}
	} else if !errors.Is(err, ErrNotFound) {
		return Conversation{}, err
	}
	if s.cfg.Rooms != nil {
		// The room is created before the conversation is stored: a
		// conversation without its room would carry calls Matrix never sees.
		room, err := s.cfg.Rooms.EnsureRoom(ctx, conv)
		if err != nil {
			return Conversation{}, fmt.Errorf("%w: creating the Matrix room: %w", ErrUnavailable, err)
		}
		conv.RoomID = room
	}
	if err := s.cfg.Store.PutConversation(ctx, conv); err != nil {
		return Conversation{}, err
	}
	return conv, nil
}

// Conversation returns a conversation (admin).
func (s *Service) Conversation(ctx context.Context, id string) (Conversation, error) {
	return s.cfg.Store.Conversation(ctx, id)
}

// DeleteConversation removes a conversation (admin). Its calls stay
// readable by ID; no new call can start in it.
func (s *Service) DeleteConversation(ctx context.Context, id string) error {
	return s.cfg.Store.DeleteConversation(ctx, id)
}

// participantOf loads a conversation and checks user is in it.
func (s *Service) participantOf(ctx context.Context, user, convID string) (Conversation, error) {
	conv, err := s.cfg.Store.Conversation(ctx, convID)
	if errors.Is(err, ErrNotFound) {
		return Conversation{}, fmt.Errorf("conversation %q: %w", convID, ErrNotFound)
	}
	if err != nil {
		return Conversation{}, err
	}
	if !conv.HasParticipant(user) {
		return Conversation{}, forbiddenf("not a participant of conversation %q", convID)
	}
	return conv, nil
}

// checkConversation validates a conversation an administrator puts.
func checkConversation(id string, participants []string) error {
	if !ValidID(id) {
		return invalidf("conversation id must be 1-64 characters of [A-Za-z0-9_-]")
	}
	if len(participants) == 0 || len(participants) > 1000 {
		return invalidf("participants must hold 1-1000 user IDs")
	}
	seen := make(map[string]bool, len(participants))
	for i, p := range participants {
		if !validUser(p) {
			return invalidf("participants[%d] is not a valid user ID", i)
		}
		if seen[p] {
			return invalidf("participants[%d] is listed twice", i)
		}
		seen[p] = true
	}
	return nil
}

// isMatrixUserID reports whether user looks like @localpart:server.
func isMatrixUserID(user string) bool {
	return len(user) > 3 && user[0] == '@' && strings.Contains(user[1:], ":")
}

// conversationOfRoom returns the room's conversation, or a new one (not
// stored) with an ID derived from the room's.
func (s *Service) conversationOfRoom(ctx context.Context, roomID string, now time.Time) (Conversation, error) {
	conv, err := s.cfg.RoomIndex.ConversationByRoom(ctx, roomID)
	switch {
	case errors.Is(err, ErrNotFound):
		sum := sha256.Sum256([]byte(roomID))
		id := "room-" + hex.EncodeToString(sum[:8])
		// An admin may have stored that conversation, room still unset.
		if c, err := s.cfg.Store.Conversation(ctx, id); err == nil {
			c.RoomID = roomID
			return c, nil
		} else if !errors.Is(err, ErrNotFound) {
			return Conversation{}, err
		}
		return Conversation{ID: id, RoomID: roomID, CreatedAt: now}, nil
	case err != nil:
		return Conversation{}, err
	}
	return conv, nil
}

// RoomJoined makes a Matrix room the service user joined into a
// conversation whose participants are the room's joined members (the
// service user excluded), or refreshes the participants of the
// conversation the room already maps to.
func (s *Service) RoomJoined(ctx context.Context, roomID string, members []string) (Conversation, error) {
	if s.cfg.RoomIndex == nil {
		return Conversation{}, fmt.Errorf("%w: no room index", ErrInvalid)
	}
	var valid []string
	for _, m := range members {
		if validUser(m) && !slices.Contains(valid, m) {
			valid = append(valid, m)
		}
	}
	if len(valid) == 0 {
		return Conversation{}, invalidf("room %s has no members to call", roomID)
	}
	now := s.cfg.Now().UTC()
	conv, err := s.conversationOfRoom(ctx, roomID, now)
	if err != nil {
		return Conversation{}, err
	}
	// Read again under the conversation's lock: an admin PUT of the same
	// conversation meanwhile must not be overwritten with stale members.
	defer s.convLocks.lock(conv.ID)()
	if conv, err = s.conversationOfRoom(ctx, roomID, now); err != nil {
		return Conversation{}, err
	}
	// Local (non-Matrix) participants stay: they are icebox's users, not
	// room members. Matrix participants are the room's joined members.
	participants := make([]string, 0, len(conv.Participants)+len(valid))
	for _, p := range conv.Participants {
		if !isMatrixUserID(p) {
			participants = append(participants, p)
		}
	}
	conv.Participants = append(participants, valid...)
	conv.UpdatedAt = now
	if err := s.cfg.Store.PutConversation(ctx, conv); err != nil {
		return Conversation{}, err
	}
	return conv, nil
}
