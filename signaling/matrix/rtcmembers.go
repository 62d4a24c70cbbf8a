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
// for Config.RTCRooms or Config.RTCCalls, legacy invites for RTCRooms,
// rings and declines for RTCCalls (rtcring.go).
func (s *syncer) registerRTC(ds *mautrix.DefaultSyncer) {
	l := s.loop
	if l.rtc != nil || l.rtcCalls != nil {
		ds.OnEventType(rtcMemberType, s.onRTCMember)
	}
	if l.rtc != nil {
		ds.OnEventType(event.Type{Type: TypeInvite, Class: event.MessageEventType}, s.onLegacyInvite)
	}
	if l.rtcCalls != nil {
		for _, t := range rtcTimelineTypes {
			ds.OnEventType(t, s.onRTCEvent)
		}
	}
}

// onRTCMember applies a membership state event (timeline or state part of
// the sync) to Config.RTCRooms and hands it to Config.RTCCalls. An invalid
// one is logged without its content and ignored.
func (s *syncer) onRTCMember(_ context.Context, evt *event.Event) {
	if evt.StateKey == nil {
		return
	}
	l := s.loop
	ev := membership.Event{
		EventID: string(evt.ID), StateKey: *evt.StateKey, Sender: string(evt.Sender), Content: evt.Content.VeryRaw,
		TS: time.UnixMilli(evt.Timestamp),
	}
	var m membership.Member
	var left bool
	var err error
	if l.rtc != nil {
		left, err = l.rtc.Observe(string(evt.RoomID), ev)
	}
	if err == nil {
		m, left, err = membership.ParseEvent(ev)
	}
	result := rtcJoined
	switch {
	case err != nil:
		result = rtcInvalid
		// The reason names a field, never the content.
		l.log.Info().Err(err).Str("room_id", string(evt.RoomID)).Str("sender", string(evt.Sender)).
			Msg("MatrixRTC membership ignored")
	case left:
		result = rtcLeft
	}
	if m := l.rtcSeen; m != nil {
		m.WithLabelValues(result).Inc()
	}
	if err == nil && l.rtcCalls != nil {
		s.dispatchRTCMember(evt, ev, m, left)
	}
}

// dispatchRTCMember hands a membership of another device to
// Config.RTCCalls: a live one as joined (or changed), an emptied one as
// left, with the member's last membership (unsigned.prev_content) when the
// homeserver sent it along, else the device its state key names.
func (s *syncer) dispatchRTCMember(evt *event.Event, ev membership.Event, m membership.Member, left bool) {
	l := s.loop
	if left {
		m = membership.Member{StateKey: ev.StateKey, Sender: ev.Sender}
		if prev := evt.Unsigned.PrevContent; prev != nil && len(prev.VeryRaw) > 0 {
			pm, prevLeft, err := membership.Parse(prev.VeryRaw, ev.Sender, ev.StateKey, ev.TS)
			if err == nil && prevLeft {
				return // an empty membership emptied again: nobody left
			}
			if err == nil {
				m = pm
			}
		}
		if m.DeviceID == "" {
			m.DeviceID = membership.DeviceOfStateKey(ev.StateKey, ev.Sender)
		}
	} else if !m.Live(l.now()) {
		return // an expired membership (the state of a first sync) is nobody in the call
	}
	if m.Sender == l.user && m.DeviceID == string(l.cli.DeviceID) {
		return // icebox's own device
	}
	defer func() {
		if r := recover(); r != nil {
			l.log.Error().Str("event_id", ev.EventID).Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).
				Msg("MatrixRTC membership observer panicked")
		}
	}()
	l.rtcCalls.RTCMember(string(evt.RoomID), m, left)
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
