package signaling

import (
	"context"
	"encoding/json"
	"time"
)

// OutboxEntry is one Matrix event waiting to be sent. It is written in the
// same store transaction as the call transition that caused it, so a crash
// can neither lose it nor send an event for a transition that did not
// happen. The Matrix bridge's worker sends entries in Seq order per call,
// with TxnID as the transaction ID, so a retry is never a duplicate.
type OutboxEntry struct {
	Seq         uint64          `json:"seq"` // assigned by the store, increasing
	CallID      string          `json:"call_id"`
	RoomID      string          `json:"room_id"`
	EventType   string          `json:"event_type"` // m.call.invite, m.call.candidates, …
	Content     json.RawMessage `json:"content"`
	TxnID       string          `json:"txn_id"`
	CreatedAt   time.Time       `json:"created_at"`
	Attempts    int             `json:"attempts"`
	NextAttempt time.Time       `json:"next_attempt"` // zero = now
}

// Outbound turns domain events into Matrix events (implemented by the
// Matrix bridge; nil when Matrix is off).
type Outbound interface {
	// Encode returns the entries to write with the transition that
	// produced ev; none if c's conversation has no room. It must not do
	// I/O: it runs inside a store transaction.
	Encode(ev Event, c Call) ([]OutboxEntry, error)
	// Wake tells the sender that new entries were committed.
	Wake()
}

// InviteWaiter lets Initiate report the Matrix invite's event ID when it
// goes out quickly (implemented by the Matrix bridge; optional).
type InviteWaiter interface {
	// WaitInviteSent waits until the call's m.call.invite was sent, or
	// ctx ends; ok is false if it was not sent in time.
	WaitInviteSent(ctx context.Context, callID string) (eventID string, ok bool)
}

// RoomCreator creates the Matrix room of a conversation that has none
// (implemented by the Matrix bridge; nil when Matrix is off).
type RoomCreator interface {
	// EnsureRoom returns the room for conv, creating it (with the
	// participants that are Matrix users invited) if conv.RoomID is empty.
	EnsureRoom(ctx context.Context, conv Conversation) (roomID string, err error)
}

// OutboxStore is the part of the store that writes transitions together
// with their outbox entries.
type OutboxStore interface {
	// CreateCallOutbox is CreateCall that also appends out, in one transaction.
	CreateCallOutbox(ctx context.Context, c Call, out []OutboxEntry) error
	// UpdateCallOutbox is UpdateCall whose fn also returns entries to
	// append in the same transaction.
	UpdateCallOutbox(ctx context.Context, id string, fn func(*Call) ([]OutboxEntry, error)) (Call, error)
	// AppendOutbox appends entries that need no call change (candidates,
	// select_answer, negotiate).
	AppendOutbox(ctx context.Context, out []OutboxEntry) error
}
