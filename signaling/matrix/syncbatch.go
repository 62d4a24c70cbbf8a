package matrix

import (
	"context"
	"encoding/json"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// Preparing a sync batch for the handlers: the spec has clients look at a
// whole batch before ringing, and the invites' age counts from the time
// the response arrived.

// beginBatch prepares the handlers for a response: it stamps its events
// with the time it arrived, decrypts the encrypted ones it can, finds the
// invites that must not ring, and logs the gaps of limited timelines.
func (l *syncLoop) beginBatch(ctx context.Context, resp *mautrix.RespSync, since string, now time.Time) {
	stamp := func(evs []*event.Event) {
		for _, evt := range evs {
			evt.Mautrix.ReceivedAt = now
		}
	}
	var suppressed map[string]bool
	for roomID, room := range resp.Rooms.Join {
		stamp(room.Timeline.Events)
		stamp(room.State.Events)
		l.crypto.decryptTimeline(ctx, roomID, room.Timeline.Events)
		if room.Timeline.Limited && since != "" && !joinedIn(l.user, room.Timeline.Events) {
			l.log.Warn().Str("room_id", string(roomID)).Int("events", len(room.Timeline.Events)).
				Msg("matrix sync skipped older call events of a room (limited timeline)")
		}
		for _, inv := range endedInvites(l.user, room.Timeline.Events) {
			if suppressed == nil {
				suppressed = make(map[string]bool)
			}
			suppressed[inv] = true
		}
	}
	for _, room := range resp.Rooms.Leave {
		stamp(room.Timeline.Events)
	}
	for _, room := range resp.Rooms.Invite {
		stamp(room.State.Events)
	}
	l.in.setSuppressed(suppressed)
}

// joinedIn reports whether the timeline holds the service user's own join:
// a homeserver marks the timeline of a room just joined as limited, though
// there is nothing the bridge missed.
func joinedIn(self string, timeline []*event.Event) bool {
	for _, evt := range timeline {
		if evt.Type.Type == event.StateMember.Type && evt.GetStateKey() == self {
			var m struct {
				Membership string `json:"membership"`
			}
			if json.Unmarshal(evt.Content.VeryRaw, &m) == nil && m.Membership == string(event.MembershipJoin) {
				return true
			}
		}
	}
	return false
}

// endedInvites returns the event IDs of the invites in a room's timeline
// that a later event of the same batch answered, rejected or hung up (not
// icebox's own): the spec has clients process a whole batch before
// ringing, so that a call already over does not ring.
func endedInvites(self string, timeline []*event.Event) []string {
	invites := map[string]string{} // call_id → invite event ID
	var out []string
	for _, evt := range timeline {
		if string(evt.Sender) == self || evt.StateKey != nil {
			continue
		}
		var base struct {
			CallID string `json:"call_id"`
		}
		if json.Unmarshal(evt.Content.VeryRaw, &base) != nil || base.CallID == "" {
			continue
		}
		switch evt.Type.Type {
		case TypeInvite:
			invites[base.CallID] = string(evt.ID)
		case TypeAnswer, TypeReject, TypeHangup:
			if inv, ok := invites[base.CallID]; ok {
				out = append(out, inv)
				delete(invites, base.CallID)
			}
		}
	}
	return out
}
