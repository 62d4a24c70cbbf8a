package matrix

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
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
	left, err := rtc.Observe(string(evt.RoomID), membership.Event{
		StateKey: *evt.StateKey, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
		TS: time.UnixMilli(evt.Timestamp),
	})
	result := rtcJoined
	switch {
	case err != nil:
		result = rtcInvalid
		// The reason names a field, never the content.
		s.loop.log.Info().Err(err).Str("room_id", string(evt.RoomID)).Str("sender", string(evt.Sender)).
			Msg("MatrixRTC membership ignored")
	case left:
		result = rtcLeft
	}
	if m := s.loop.rtcSeen; m != nil {
		m.WithLabelValues(result).Inc()
	}
}

// Results of a membership event (icebox_matrix_rtc_memberships_total).
const (
	rtcJoined  = "joined"
	rtcLeft    = "left"
	rtcInvalid = "invalid"
)

// newRTCMetrics registers icebox_matrix_rtc_memberships_total.
func newRTCMetrics(reg prometheus.Registerer) *prometheus.CounterVec {
	c := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_matrix_rtc_memberships_total",
		Help: "MatrixRTC call membership state events (org.matrix.msc3401.call.member) from the sync, by result: joined, left (empty content), invalid (a required field missing or of the wrong type, or a state key of another user; ignored).",
	}, []string{"result"})
	for _, r := range []string{rtcJoined, rtcLeft, rtcInvalid} {
		c.WithLabelValues(r)
	}
	return c
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
