package matrix

import (
	"context"
	"slices"
	"sync"

	"github.com/icebox-voip/icebox/signaling"
)

// Invites and who waits for them: WaitInviteSent for an initiate that
// returns the invite's event ID, and CallMatrixSent for the call's users.

// inviteWaiters are the WaitInviteSent calls in progress, by call ID.
type inviteWaiters struct {
	mu sync.Mutex
	m  map[string][]chan string
}

// add registers a waiter for callID; done unregisters it.
func (w *inviteWaiters) add(callID string) (ch chan string, done func()) {
	ch = make(chan string, 1) // release never blocks
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[string][]chan string)
	}
	w.m[callID] = append(w.m[callID], ch)
	w.mu.Unlock()
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.m[callID]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(w.m, callID)
		} else {
			w.m[callID] = list
		}
	}
}

// release hands eventID to every waiter of callID ("": the invite was
// dropped).
func (w *inviteWaiters) release(callID, eventID string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.m[callID] {
		ch <- eventID
	}
	delete(w.m, callID)
}

// len counts the registered waiters (tests).
func (w *inviteWaiters) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range w.m {
		n += len(l)
	}
	return n
}

// WaitInviteSent waits until the call's m.call.invite was sent (returning
// its event ID), or was dropped unsent, or ctx ends (ok false for both).
// An invite sent before the wait began is found in the store.
func (b *Bridge) WaitInviteSent(ctx context.Context, callID string) (eventID string, ok bool) {
	ch, done := b.waiters.add(callID)
	defer done()
	// After registering, so an invite sent in between is not missed.
	if c, err := b.cfg.Store.Call(ctx, callID); err == nil && c.MatrixInviteEventID != "" {
		return c.MatrixInviteEventID, true
	}
	select {
	case id := <-ch:
		return id, id != ""
	case <-ctx.Done():
		return "", false
	}
}

// MatrixSentPayload is the body of CallMatrixSent: the call's m.call.invite
// is in the room.
type MatrixSentPayload struct {
	Type           string `json:"type"` // CallMatrixSent
	CallID         string `json:"call_id"`
	ConversationID string `json:"conversation_id,omitempty"`
	RoomID         string `json:"room_id"`
	EventID        string `json:"event_id"`
	PartyID        string `json:"party_id"`
}

// inviteSent runs after an m.call.invite was sent and completed in the
// store: it releases WaitInviteSent and publishes CallMatrixSent to the
// call's caller, invitee and answerer (the call is loaded from the store;
// its conversation's other participants do not need the Matrix IDs).
func (b *Bridge) inviteSent(ctx context.Context, e signaling.OutboxEntry, partyID, eventID string) {
	b.waiters.release(e.CallID, eventID)
	if b.cfg.Publisher == nil {
		return
	}
	c, err := b.cfg.Store.Call(ctx, e.CallID)
	if err != nil {
		b.log.Warn().Err(err).Str("call_id", e.CallID).Msg("CallMatrixSent not published: loading the call")
		return
	}
	var recipients []string
	for _, u := range []string{c.Initiator, c.Invitee, c.Answerer} {
		if u != "" && !slices.Contains(recipients, u) {
			recipients = append(recipients, u)
		}
	}
	b.cfg.Publisher.Publish(signaling.Event{
		Type:           signaling.EventCallMatrixSent,
		CallID:         c.ID,
		ConversationID: c.ConversationID,
		Recipients:     recipients,
		Payload: MatrixSentPayload{
			Type: signaling.EventCallMatrixSent, CallID: c.ID, ConversationID: c.ConversationID,
			RoomID: e.RoomID, EventID: eventID, PartyID: partyID,
		},
	})
}
