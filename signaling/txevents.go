package signaling

import (
	"context"
	"sync"
)

// TxEvents carries the events of one transition into the store transaction
// that commits it. A store that several nodes share (store/postgres) takes
// them there (Take) and writes them with the call's change, so every node
// delivers a call's events in commit order and a node dying between the
// commit and the publish loses none; the Service then leaves their
// delivery to that store's readers and does not hand them to the
// Publisher. A store that does not take them (bbolt, one process) changes
// nothing: the Service publishes after the commit, as always.
//
// The Service puts a TxEvents in the context of each store call that
// commits a transition (WithTxEvents); store methods find it with
// TxEventsFrom. It travels in the context because the store interface's
// methods predate it and a store that ignores it must keep working.
type TxEvents struct {
	mu     sync.Mutex
	events []Event
	taken  bool
}

type txEventsKey struct{}

// WithTxEvents returns a context carrying a new, empty TxEvents.
func WithTxEvents(ctx context.Context) (context.Context, *TxEvents) {
	j := &TxEvents{}
	return context.WithValue(ctx, txEventsKey{}, j), j
}

// TxEventsFrom returns the TxEvents ctx carries, or nil.
func TxEventsFrom(ctx context.Context) *TxEvents {
	j, _ := ctx.Value(txEventsKey{}).(*TxEvents)
	return j
}

// Set makes evs the transaction's events (replacing those of an earlier
// run of the same store callback) and returns them marked as belonging to
// it. An event with no Type is left out.
func (j *TxEvents) Set(evs ...Event) []Event {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = j.events[:0]
	out := make([]Event, 0, len(evs))
	for _, ev := range evs {
		if ev.Type == "" {
			out = append(out, ev)
			continue
		}
		ev.tx = j
		j.events = append(j.events, ev)
		out = append(out, ev)
	}
	return out
}

// set1 is Set of one event.
func (j *TxEvents) set1(ev Event) Event { return j.Set(ev)[0] }

// Take returns the events (without their mark) and records that the store
// writes them in the transaction it is about to commit. A store calls it
// inside that transaction.
func (j *TxEvents) Take() []Event {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.taken = true
	out := make([]Event, len(j.events))
	for i, ev := range j.events {
		ev.tx = nil
		out[i] = ev
	}
	return out
}

func (j *TxEvents) wasTaken() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.taken
}
