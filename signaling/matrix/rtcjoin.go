package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// icebox's own MatrixRTC call membership, for the gateway (issue 17): the
// state event Element Call sends when its device joins a room's call
// (matrix-js-sdk MembershipManager.makeMyMembership, session form), sent
// for icebox's device, and emptied when it leaves. LeaveAllRTC empties
// every one icebox left behind (a restart mid-call), at start-up.

// RTCMembership is what icebox's membership says.
type RTCMembership struct {
	// ServiceURL is the LiveKit focus's livekit_service_url (the
	// MatrixRTC authorization service members get their LiveKit token
	// from: icebox's own, or the one the room's call already uses).
	ServiceURL string
	// Intent is m.call.intent, "audio" or "video"; "" leaves it out.
	Intent string
	// Expires is the membership's lifetime. Default: 4 h (Element Call's).
	Expires time.Duration
	// CreatedTS keeps the creation time of a membership being renewed
	// (Element Call sends created_ts on updates); zero for a new one.
	CreatedTS time.Time
}

// rtcStateKey is the state key of icebox's device's membership in a room
// (MSC3757's owned-state form with the leading underscore, as Element Call
// writes it for rooms of today's versions).
func (b *Bridge) rtcStateKey() string {
	return "_" + string(b.cli.UserID) + "_" + string(b.cli.DeviceID) + "_m.call"
}

// JoinRTC sends icebox's device's membership of the room's MatrixRTC call
// and returns the membership state event's ID (what RingRTC's
// notification relates to, as Element Call's does).
func (b *Bridge) JoinRTC(ctx context.Context, roomID string, m RTCMembership) (string, error) {
	if b.cli.DeviceID == "" {
		return "", errors.New("matrix: join the MatrixRTC call: the device is not known yet (Run logs in)")
	}
	if m.Expires <= 0 {
		m.Expires = membership.DefaultExpires
	}
	content := map[string]any{
		"application": "m.call",
		"call_id":     "",
		"scope":       "m.room",
		"device_id":   string(b.cli.DeviceID),
		// LiveKit's participant identity for session memberships.
		"membershipID": string(b.cli.UserID) + ":" + string(b.cli.DeviceID),
		"expires":      m.Expires.Milliseconds(),
		"focus_active": map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{
			"type": "livekit", "livekit_service_url": m.ServiceURL, "livekit_alias": roomID,
		}},
	}
	if m.Intent != "" {
		content["m.call.intent"] = m.Intent
	}
	if !m.CreatedTS.IsZero() {
		content["created_ts"] = m.CreatedTS.UnixMilli()
	}
	resp, err := b.cli.SendStateEvent(quiet(ctx), id.RoomID(roomID), rtcMemberType, b.rtcStateKey(), content)
	if err != nil {
		return "", fmt.Errorf("matrix: join the MatrixRTC call of %s: %w", roomID, err)
	}
	b.log.Info().Str("room_id", roomID).Str("event_id", string(resp.EventID)).Msg("joined the room's MatrixRTC call")
	return string(resp.EventID), nil
}

// LeaveRTC empties icebox's device's membership (a member who left).
func (b *Bridge) LeaveRTC(ctx context.Context, roomID string) error {
	if _, err := b.cli.SendStateEvent(quiet(ctx), id.RoomID(roomID), rtcMemberType, b.rtcStateKey(), map[string]any{}); err != nil {
		return fmt.Errorf("matrix: leave the MatrixRTC call of %s: %w", roomID, err)
	}
	b.log.Info().Str("room_id", roomID).Msg("left the room's MatrixRTC call")
	return nil
}

// LeaveAllRTC empties icebox's device's membership in every joined room
// where it is not empty: after a restart no call shows icebox as a member
// it no longer is. It returns how many it emptied; it goes on past a room
// that fails and returns the failures joined.
func (b *Bridge) LeaveAllRTC(ctx context.Context) (int, error) {
	rooms, err := b.cli.JoinedRooms(quiet(ctx))
	if err != nil {
		return 0, fmt.Errorf("matrix: joined rooms: %w", err)
	}
	key := b.rtcStateKey()
	var errs []error
	n := 0
	for _, room := range rooms.JoinedRooms {
		var content map[string]json.RawMessage
		err := b.cli.StateEvent(quiet(ctx), room, rtcMemberType, key, &content)
		if errors.Is(err, mautrix.MNotFound) || (err == nil && len(content) == 0) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("matrix: MatrixRTC membership in %s: %w", room, err))
			continue
		}
		if err := b.LeaveRTC(ctx, string(room)); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// leaveStaleRTC is Run's LeaveAllRTC, once after login: a membership icebox
// left behind when it stopped mid-call would show a member that is no longer
// there until it expires (4 h). It runs beside the sync, not before it (one
// state read per joined room); a failure is logged, not fatal: the
// memberships still expire.
func (b *Bridge) leaveStaleRTC(ctx context.Context) {
	n, err := b.LeaveAllRTC(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		b.log.Warn().Err(err).Int("left", n).Msg("stale MatrixRTC memberships of icebox's device not all emptied; they expire on their own")
		return
	}
	if n > 0 {
		b.log.Info().Int("left", n).Msg("emptied MatrixRTC memberships icebox's device left behind before a restart")
	}
}
