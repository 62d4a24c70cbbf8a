// Package snapshot is the whole state of one icebox store, as `icebox store
// migrate` carries it from one driver to another (store.Store.Export,
// postgres.Store.Import). It holds no code of either driver, so both can
// use it.
package snapshot

import (
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// Snapshot is everything a store holds.
type Snapshot struct {
	// InstanceID is the source's random instance ID: outbox transaction
	// IDs carry it, and the target keeps it so that the entries it
	// appends later never reuse a transaction ID the homeserver remembers.
	InstanceID string
	// OutboxSeq is the last outbox Seq the source handed out (entries
	// sent and deleted included): the target continues above it.
	OutboxSeq     uint64
	Conversations []signaling.Conversation
	// RoomIndex maps each Matrix room to the conversation the source
	// routes its events to (a room two conversations of an old schema
	// name belongs to one of them).
	RoomIndex   map[string]string
	Calls       []signaling.Call // SDPs included
	Outbox      []signaling.OutboxEntry
	Revocations []signaling.Revocation // as stored, expired ones included
	SeenEvents  []SeenEvent
	Sync        map[string]string
}

// SeenEvent is one Matrix event the bridge has applied.
type SeenEvent struct {
	ID string
	At time.Time
}

// Counts is how many of each a store holds (what `icebox store migrate`
// verifies after the copy).
type Counts struct {
	Conversations, Calls, Outbox, Revocations, SeenEvents, Sync int
}

// Counts of the snapshot.
func (s *Snapshot) Counts() Counts {
	return Counts{
		Conversations: len(s.Conversations), Calls: len(s.Calls), Outbox: len(s.Outbox),
		Revocations: len(s.Revocations), SeenEvents: len(s.SeenEvents), Sync: len(s.Sync),
	}
}
