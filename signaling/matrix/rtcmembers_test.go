package matrix_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// TestCallProtocolAutoFollowsMemberships runs matrix.call_protocol auto on
// a real Dendrite: bob's client joins and leaves a MatrixRTC call the way
// Element Call does (org.matrix.msc3401.call.member state, session form,
// with expires), and the conversation's resolved protocol follows: legacy
// before, matrixrtc while the membership is live, still matrixrtc after it
// expires or is emptied (bob's last call was MatrixRTC), legacy once bob
// places a legacy m.call.invite. bob may send his membership at all because
// icebox creates its rooms with call memberships at power 0. A second tracker (icebox restarted) loads
// a live membership from the room's state.
func TestCallProtocolAutoFollowsMemberships(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	svcToken, svcDevice := hs.Login(t, svcID, "icebox-password")
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	bobToken, bobDevice := hs.Login(t, bobID, "bob-password")
	bob := matrixUser{hs.URL(), bobID, bobToken}

	st := openStore(t)
	rtc := membership.NewRooms(0, 0, nil)
	b := newBridge(t, matrix.Config{HomeserverURL: hs.URL(), UserID: svcID, AccessToken: svcToken, DeviceID: svcDevice,
		Store: st, RTCRooms: rtc},
		matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, RoomIndex: st, Publisher: &recorder{}, Outbound: b.Encoder(), Rooms: b.Bridge,
		CallProtocol: signaling.CallProtocolAuto, RTCRooms: rtc,
		Logger: zerolog.New(b.logs).With().Timestamp().Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCalls(calls)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conv, err := calls.PutConversation(ctx, "c1", []string{"alice", bobID}, "")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "bob's invitation", func() bool {
		_, ok := bob.sync(t, "", 0).Rooms.Invite[conv.RoomID]
		return ok
	})
	bob.join(t, conv.RoomID)
	b.run(t)

	resolved := func() signaling.ResolvedProtocol { return calls.CallProtocol(ctx, conv) }
	waitProtocol := func(what, protocol, reason string) {
		t.Helper()
		var last signaling.ResolvedProtocol
		waitFor(t, 20*time.Second, what, func() bool {
			last = resolved()
			return last.Protocol == protocol && last.Reason == reason
		}, func() string { return "last: " + last.Protocol + " " + last.Reason })
	}
	waitProtocol("legacy before any MatrixRTC call", signaling.CallProtocolLegacy, signaling.ReasonNoRTC)

	// bob's Go client sends what Element Call sends on joining.
	bobCli, err := mautrix.NewClient(hs.URL(), id.UserID(bobID), bobToken)
	if err != nil {
		t.Fatal(err)
	}
	stateKey := "_" + bobID + "_" + bobDevice + "_m.call"
	join := func(expires time.Duration) {
		t.Helper()
		content := map[string]any{
			"application": "m.call", "call_id": "", "scope": "m.room", "device_id": bobDevice,
			"created_ts": time.Now().UnixMilli(), "expires": expires.Milliseconds(),
			"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
			"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "http://127.0.0.1:1/livekit/jwt", "livekit_alias": conv.RoomID}},
			"m.call.intent":  "audio",
		}
		if _, err := bobCli.SendStateEvent(ctx, id.RoomID(conv.RoomID), event.Type{Type: membership.EventType, Class: event.StateEventType}, stateKey, content); err != nil {
			t.Fatalf("bob's membership: %v", err)
		}
	}
	leave := func() {
		t.Helper()
		if _, err := bobCli.SendStateEvent(ctx, id.RoomID(conv.RoomID), event.Type{Type: membership.EventType, Class: event.StateEventType}, stateKey, map[string]any{}); err != nil {
			t.Fatalf("bob's leaving: %v", err)
		}
	}

	// What Element Call would never send (no device_id), and a membership
	// under another user's state key: counted invalid, nothing changes.
	for key, content := range map[string]map[string]any{
		stateKey: {"application": "m.call", "call_id": "", "focus_active": map[string]any{"type": "livekit"}},
		"_" + svcID + "_" + svcDevice + "_m.call": {"application": "m.call", "call_id": "", "device_id": bobDevice,
			"focus_active": map[string]any{"type": "livekit"}},
	} {
		if _, err := bobCli.SendStateEvent(ctx, id.RoomID(conv.RoomID), event.Type{Type: membership.EventType, Class: event.StateEventType}, key, content); err != nil {
			t.Fatalf("bob's invalid membership: %v", err)
		}
	}
	waitFor(t, 20*time.Second, "two invalid memberships counted", func() bool { return rtcCount(t, b, "invalid") == 2 })
	if r := resolved(); r.Protocol != signaling.CallProtocolLegacy || r.LiveRTC != 0 {
		t.Fatalf("after invalid memberships: %+v", r)
	}

	join(3 * time.Second)
	waitProtocol("matrixrtc while bob's membership is live", signaling.CallProtocolMatrixRTC, signaling.ReasonLiveCall)
	if r := resolved(); r.LiveRTC != 1 {
		t.Fatalf("live members = %d, want 1", r.LiveRTC)
	}
	waitProtocol("bob's membership expired: his last call was MatrixRTC", signaling.CallProtocolMatrixRTC, signaling.ReasonLastCall)

	join(time.Hour)
	waitProtocol("matrixrtc again", signaling.CallProtocolMatrixRTC, signaling.ReasonLiveCall)
	// icebox restarted: a new tracker learns the live membership from the
	// room's state (the sync would not repeat it).
	restarted := membership.NewRooms(0, 0, nil)
	newBridge(t, matrix.Config{HomeserverURL: hs.URL(), UserID: svcID, AccessToken: svcToken, DeviceID: svcDevice,
		Store: st, RTCRooms: restarted}, matrix.Timing{})
	if s, err := restarted.State(ctx, conv.RoomID, conv.Participants, time.Now()); err != nil || s.Live != 1 {
		t.Fatalf("restarted tracker: %+v, %v; want 1 live member", s, err)
	}
	leave()
	waitProtocol("bob left (emptied membership): his last call was MatrixRTC", signaling.CallProtocolMatrixRTC, signaling.ReasonLastCall)

	// bob places a legacy call: legacy again.
	api(t, bob.base, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(conv.RoomID)+"/send/m.call.invite/legacy1", bob.token,
		map[string]any{"call_id": "legacy1", "party_id": "bobparty", "version": "1", "lifetime": 60000,
			"offer": map[string]any{"type": "offer", "sdp": "v=0\r\n"}}, nil)
	waitProtocol("bob's last call legacy", signaling.CallProtocolLegacy, signaling.ReasonNoRTC)
	if r := resolved(); r.MembersLegacy != 1 || r.MembersRTC != 0 {
		t.Fatalf("members' last calls = %+v", r)
	}

	if j, l := rtcCount(t, b, "joined"), rtcCount(t, b, "left"); j != 2 || l != 1 {
		t.Errorf("icebox_matrix_rtc_memberships_total joined %v left %v, want 2 and 1", j, l)
	}

	// A conversation's own setting wins over the default.
	mx := signaling.CallProtocolMatrixRTC
	conv, err = calls.PutConversationSpec(ctx, "c1", signaling.ConversationSpec{Participants: conv.Participants, CallProtocol: &mx})
	if err != nil {
		t.Fatal(err)
	}
	if r := calls.CallProtocol(ctx, conv); r.Protocol != signaling.CallProtocolMatrixRTC || r.Source != "conversation" {
		t.Fatalf("conversation override: %+v", r)
	}
}

// rtcCount reads icebox_matrix_rtc_memberships_total{result}.
func rtcCount(t *testing.T, b *testBridge, result string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "icebox_matrix_rtc_memberships_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}
