package signaling

import (
	"context"
	"time"
)

// Store is what the calls service needs from durable storage, one interface
// per aggregate. Every method commits (with fsync) before it returns nil.
// Implemented by package store.
type Store interface {
	ConversationStore
	UserConversationStore // userconversations.go: a user's conversations
	CallStore
	RevocationStore
	OutboxStore // outbox.go: transitions written with their Matrix events
}

// ConversationStore keeps conversations.
type ConversationStore interface {
	// PutConversation creates or replaces a conversation.
	PutConversation(ctx context.Context, c Conversation) error
	// Conversation returns ErrNotFound if there is none with that ID.
	Conversation(ctx context.Context, id string) (Conversation, error)
	// DeleteConversation returns ErrNotFound if there is none with that ID.
	DeleteConversation(ctx context.Context, id string) error
}

// CallStore keeps calls.
type CallStore interface {
	// CreateCall stores a new call; ErrConflict if the ID exists.
	CreateCall(ctx context.Context, c Call) error
	// UpdateCall applies fn to the stored call in one transaction and
	// returns the result. If fn returns an error nothing is written and
	// that error is returned. When fn sets RevokedUntil (the call ended),
	// a Revocation is written in the same transaction. ErrNotFound if
	// there is no such call.
	UpdateCall(ctx context.Context, id string, fn func(*Call) error) (Call, error)
	// Call returns ErrNotFound if there is none with that ID.
	Call(ctx context.Context, id string) (Call, error)
	// Calls lists a conversation's calls, newest first.
	Calls(ctx context.Context, f CallFilter) ([]Call, error)
	// RingingCalls lists every call in StatusRinging (to re-arm invite
	// expiry after a restart).
	RingingCalls(ctx context.Context) ([]Call, error)
	// ActiveCalls lists every call in StatusRinging or StatusAnswered (to
	// end answered calls that outlived the maximum call duration).
	ActiveCalls(ctx context.Context) ([]Call, error)
	// PruneEndedCalls deletes up to limit calls that ended before before,
	// oldest first, in one transaction, and returns how many it deleted.
	// Revocations are not deleted with them.
	PruneEndedCalls(ctx context.Context, before time.Time, limit int) (int, error)
}

// RevocationStore keeps the revocations that ended calls leave behind
// (written by CallStore.UpdateCall with the end of the call).
type RevocationStore interface {
	// Revocations lists revocations still in force at now, and deletes
	// the others.
	Revocations(ctx context.Context, now time.Time) ([]Revocation, error)
}

// Relay is what the calls service needs from the TURN relay: refusing a
// call's credentials and closing its allocations.
type Relay interface {
	RevokeCall(callID string, until time.Time) int
}

// Publisher delivers domain events (to the WebSocket hub; later also to
// the Matrix bridge). Publish must not block on slow consumers.
type Publisher interface {
	Publish(Event)
}
