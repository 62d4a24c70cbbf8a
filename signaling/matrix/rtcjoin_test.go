package matrix_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// TestJoinLeaveRTC: icebox's device joins two rooms' MatrixRTC calls with
// the membership Element Call sends (read back from the homeserver and
// parsed as matrix-js-sdk does: live, its device, a LiveKit focus), leaves
// one (emptied), and a bridge started afterwards (icebox restarted)
// empties every membership left behind, once.
func TestJoinLeaveRTC(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	svcToken, svcDevice := hs.Login(t, svcID, "icebox-password")
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	st := openStore(t)
	cfg := matrix.Config{HomeserverURL: hs.URL(), UserID: svcID, AccessToken: svcToken, DeviceID: svcDevice, Store: st}
	b := newBridge(t, cfg, matrix.Timing{})
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, RoomIndex: st, Publisher: &recorder{}, Outbound: b.Encoder(), Rooms: b.Bridge, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var rooms []string
	for _, c := range []string{"c1", "c2"} {
		conv, err := calls.PutConversation(ctx, c, []string{"alice", bobID}, "")
		if err != nil {
			t.Fatal(err)
		}
		rooms = append(rooms, conv.RoomID)
	}
	key := "_" + svcID + "_" + svcDevice + "_m.call"
	read := func(room string) (membership.Member, bool) {
		t.Helper()
		var raw json.RawMessage
		api(t, hs.URL(), http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+membership.EventType+"/"+url.PathEscape(key), svcToken, nil, &raw)
		m, left, err := membership.Parse(raw, svcID, key, time.Now())
		if err != nil {
			t.Fatalf("icebox's membership in %s: %v (%s)", room, err, raw)
		}
		return m, left
	}

	// stateEventID is the event ID the room's current state holds for
	// icebox's membership.
	stateEventID := func(room string) string {
		t.Helper()
		var state []struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			EventID  string `json:"event_id"`
		}
		api(t, hs.URL(), http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", svcToken, nil, &state)
		for _, e := range state {
			if e.Type == membership.EventType && e.StateKey == key {
				return e.EventID
			}
		}
		return ""
	}
	for _, room := range rooms {
		eventID, err := b.JoinRTC(ctx, room, matrix.RTCMembership{ServiceURL: "https://icebox.example/livekit/jwt", Intent: "audio"})
		if err != nil {
			t.Fatal(err)
		}
		if got := stateEventID(room); eventID == "" || got != eventID {
			t.Fatalf("JoinRTC returned event %q, the room's state holds %q", eventID, got)
		}
		m, left := read(room)
		if left || !m.Live(time.Now()) || m.DeviceID != svcDevice || m.FocusType != "livekit" || m.Application != "m.call" || m.CallID != "" {
			t.Fatalf("icebox's membership in %s: %+v, left %v", room, m, left)
		}
		if m.ServiceURL != "https://icebox.example/livekit/jwt" || m.Alias != room || m.FocusSelection != "oldest_membership" || m.Intent != "audio" {
			t.Fatalf("icebox's membership's focus and intent: %+v", m)
		}
		if d := time.Until(m.Expiry); d < 3*time.Hour || d > 4*time.Hour+time.Minute {
			t.Errorf("expires in %v, want about 4 h", d)
		}
	}
	if err := b.LeaveRTC(ctx, rooms[0]); err != nil {
		t.Fatal(err)
	}
	if _, left := read(rooms[0]); !left {
		t.Fatal("membership not emptied by LeaveRTC")
	}
	if _, err := b.JoinRTC(ctx, rooms[0], matrix.RTCMembership{ServiceURL: "https://icebox.example/livekit/jwt"}); err != nil {
		t.Fatal(err)
	}

	// Restarted: the new bridge empties both, then finds nothing.
	again := newBridge(t, cfg, matrix.Timing{})
	if n, err := again.LeaveAllRTC(ctx); err != nil || n != 2 {
		t.Fatalf("LeaveAllRTC = %d, %v; want 2", n, err)
	}
	for _, room := range rooms {
		if _, left := read(room); !left {
			t.Errorf("membership in %s left behind", room)
		}
	}
	if n, err := again.LeaveAllRTC(ctx); err != nil || n != 0 {
		t.Fatalf("LeaveAllRTC again = %d, %v; want 0", n, err)
	}
}
