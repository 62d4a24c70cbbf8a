package signaling

import (
	"context"
	"time"
)

// The conversations a user takes part in, for GET /conversations: a
// client (the call demo) picks one to call in from them.

// UserConversationStore lists a user's conversations (implemented by both
// stores, through an index by participant).
type UserConversationStore interface {
	// UserConversations lists the conversations user takes part in,
	// newest first (CreatedAt, then ID, both descending), at most limit
	// (>= 1), starting after the position after (zero: at the newest).
	UserConversations(ctx context.Context, user string, after ConversationCursor, limit int) ([]Conversation, error)
}

// ConversationCursor is a position in a user's list of conversations: the
// last conversation listed. The zero value is the start of the list.
type ConversationCursor struct {
	CreatedAt time.Time
	ID        string
}

// IsZero reports whether the cursor is the start of the list.
func (c ConversationCursor) IsZero() bool { return c.ID == "" }

// CursorAfter is the position after conv in a list.
func CursorAfter(conv Conversation) ConversationCursor {
	return ConversationCursor{CreatedAt: conv.CreatedAt, ID: conv.ID}
}

// MaxConversationsListed bounds a page of a user's conversations: each
// holds up to 1000 participants, so a page of 100 is a few MiB at worst.
const MaxConversationsListed = 100

// UserConversations lists the conversations user takes part in, newest
// first, limit at most, after the cursor. limit is 1 to
// MaxConversationsListed+1: one more than a page tells whether there are
// more.
func (s *Service) UserConversations(ctx context.Context, user string, after ConversationCursor, limit int) ([]Conversation, error) {
	if limit < 1 || limit > MaxConversationsListed+1 {
		return nil, invalidf("limit must be 1-%d", MaxConversationsListed)
	}
	if !validUser(user) {
		return nil, invalidf("not a valid user ID")
	}
	if !after.IsZero() && !ValidID(after.ID) {
		return nil, invalidf("the cursor names no valid conversation ID")
	}
	return s.cfg.Store.UserConversations(ctx, user, after, limit)
}

// ListedCallProtocol is conv's call protocol as a list shows it: resolved
// as CallProtocol does, unless that needs the room's MatrixRTC state (auto
// in a room), which may be fetched from the homeserver — not for every
// conversation of a list: then nil (GET /calls/{id} or an initiate tells).
func (s *Service) ListedCallProtocol(ctx context.Context, conv Conversation) *ResolvedProtocol {
	setting := conv.CallProtocol
	if setting == "" {
		setting = s.cfg.CallProtocol
	}
	if setting == CallProtocolAuto && conv.RoomID != "" && s.cfg.RTCRooms != nil {
		return nil
	}
	r := s.CallProtocol(ctx, conv)
	return &r
}
