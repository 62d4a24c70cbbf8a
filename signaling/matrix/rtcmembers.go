package matrix

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"maunium.net/go/mautrix"
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

// registerRTC registers the MatrixRTC handlers a Run needs: memberships
// and legacy invites with a tracker (Config.RTCRooms, or the bridge's own
// for Config.RTCCalls), rings and declines for RTCCalls (rtcring.go).
func (s *syncer) registerRTC(ds *mautrix.DefaultSyncer) {
	l := s.loop
	if l.rtc != nil {
		ds.OnEventType(rtcMemberType, s.onRTCMember)
		ds.OnEventType(event.Type{Type: TypeInvite, Class: event.MessageEventType}, s.onLegacyInvite)
	}
	if l.rtcCalls != nil {
		for _, t := range rtcTimelineTypes {
			ds.OnEventType(t, s.onRTCEvent)
		}
	}
}

// onRTCMember applies a membership state event (timeline or state part of
// the sync) to the tracker and hands it to Config.RTCCalls. An invalid one
// is logged without its content and ignored.
func (s *syncer) onRTCMember(_ context.Context, evt *event.Event) {
	l := s.loop
	if l.rtc == nil || evt.StateKey == nil {
		return
	}
	ev := membership.Event{
		EventID: string(evt.ID), StateKey: *evt.StateKey, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
		TS: time.UnixMilli(evt.Timestamp),
	}
	c, err := l.rtc.Apply(string(evt.RoomID), ev)
	result := rtcJoined
	switch {
	case err != nil:
		result = rtcInvalid
		// The reason names a field, never the content.
		l.log.Info().Err(err).Str("room_id", string(evt.RoomID)).Str("sender", string(evt.Sender)).
			Msg("MatrixRTC membership ignored")
	case c.Left:
		result = rtcLeft
	}
	if m := l.rtcSeen; m != nil {
		m.WithLabelValues(result).Inc()
	}
	if err == nil && l.rtcCalls != nil {
		s.dispatchRTCMember(evt, c)
	}
}

// dispatchRTCMember hands a membership of another device to
// Config.RTCCalls: a live one as joined (or changed), an emptied one as
// left, with the member's last membership as the tracker kept it (else as
// the homeserver sent it along in unsigned.prev_content, else only the
// device its state key names). A membership delivered again (same event)
// is not handed on twice.
func (s *syncer) dispatchRTCMember(evt *event.Event, c membership.Change) {
	l := s.loop
	m := c.Member
	switch {
	case c.Left && c.HadPrev:
		m = c.Prev
	case c.Left:
		if prev := evt.Unsigned.PrevContent; prev != nil && len(prev.VeryRaw) > 0 {
			pm, prevLeft, err := membership.Parse(prev.VeryRaw, m.Sender, m.StateKey, time.UnixMilli(evt.Timestamp))
			if err == nil && prevLeft {
				return // an empty membership emptied again: nobody left
			}
			if err == nil {
				m = pm
			}
		}
		if m.DeviceID == "" {
			m.DeviceID = membership.DeviceOfStateKey(m.StateKey, m.Sender)
		}
	case c.HadPrev && c.Prev.EventID != "" && c.Prev.EventID == m.EventID:
		return // the same event again (state and timeline of one sync, a replayed batch)
	case !m.Live(l.now()):
		return // an expired membership (the state of a first sync) is nobody in the call
	}
	if m.Sender == l.user && m.DeviceID == string(l.cli.DeviceID) {
		return // icebox's own device
	}
	defer func() {
		if r := recover(); r != nil {
			l.log.Error().Str("event_id", string(evt.ID)).Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).
				Msg("MatrixRTC membership observer panicked")
		}
	}()
	l.rtcCalls.RTCMember(string(evt.RoomID), m, c.Left)
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
		out = append(out, membership.Event{EventID: string(evt.ID), StateKey: key, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
			TS: time.UnixMilli(evt.Timestamp)})
	}
	return out, nil
}
