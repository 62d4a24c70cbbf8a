package matrix

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// MatrixRTC call memberships, for matrix.call_protocol auto: the sync asks
// for org.matrix.msc3401.call.member state (syncFilter) and hands each to
// Config.RTCRooms, with the time of each legacy m.call.invite (the room's
// last call was legacy). After a restart the sync resumes where it stopped
// and does not repeat the memberships already in a room, so RTCRooms loads
// a room's current ones from the homeserver when first asked
// (loadRTCMembers).

// rtcMemberType is the membership state event type.
var rtcMemberType = event.Type{Type: membership.EventType, Class: event.StateEventType}

// onRTCMember applies a membership state event (timeline or state part of
// the sync). An invalid one is logged without its content and ignored.
func (s *syncer) onRTCMember(_ context.Context, evt *event.Event) {
	rtc := s.loop.rtc
	if rtc == nil || evt.StateKey == nil {
		return
	}
	err := rtc.Observe(string(evt.RoomID), membership.Event{
		StateKey: *evt.StateKey, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
		TS: time.UnixMilli(evt.Timestamp),
	})
	if err != nil {
		s.loop.log.Debug().Err(err).Str("room_id", string(evt.RoomID)).Str("sender", string(evt.Sender)).
			Msg("MatrixRTC membership ignored")
	}
}

// onLegacyInvite records that the sender placed a legacy call (icebox's
// own invites come back through the sync too, under the service user, who
// is no conversation's participant).
func (s *syncer) onLegacyInvite(_ context.Context, evt *event.Event) {
	if rtc := s.loop.rtc; rtc != nil {
		rtc.ObserveLegacyCall(string(evt.Sender), time.UnixMilli(evt.Timestamp))
	}
}

// loadRTCMembers is RTCRooms' Loader: the room's current membership state
// events, from the homeserver's room state.
func (b *Bridge) loadRTCMembers(ctx context.Context, roomID string) ([]membership.Event, error) {
	st, err := b.cli.State(quiet(ctx), id.RoomID(roomID))
	if err != nil {
		return nil, fmt.Errorf("matrix: room state of %s: %w", roomID, err)
	}
	var out []membership.Event
	for key, evt := range st[rtcMemberType] {
		if evt == nil {
			continue
		}
		out = append(out, membership.Event{StateKey: key, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
			TS: time.UnixMilli(evt.Timestamp)})
	}
	return out, nil
}
