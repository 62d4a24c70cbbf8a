package matrix_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// rtcObserver records what the bridge hands to Config.RTCCalls.
type rtcObserver struct {
	mu       sync.Mutex
	members  []rtcMemberCall
	rings    []rtcRingCall
	declines []rtcDeclineCall
}

type rtcMemberCall struct {
	room string
	m    membership.Member
	left bool
}
type rtcRingCall struct {
	room string
	r    matrix.RTCRingEvent
}
type rtcDeclineCall struct {
	room string
	d    matrix.RTCDeclineEvent
}

func (o *rtcObserver) RTCMember(room string, m membership.Member, left bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.members = append(o.members, rtcMemberCall{room, m, left})
}
func (o *rtcObserver) RTCRing(room string, r matrix.RTCRingEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rings = append(o.rings, rtcRingCall{room, r})
}
func (o *rtcObserver) RTCDecline(room string, d matrix.RTCDeclineEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.declines = append(o.declines, rtcDeclineCall{room, d})
}

func (o *rtcObserver) ring(eventID string) (rtcRingCall, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range o.rings {
		if r.r.EventID == eventID {
			return r, true
		}
	}
	return rtcRingCall{}, false
}

func (o *rtcObserver) decline(eventID string) (rtcDeclineCall, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range o.declines {
		if d.d.EventID == eventID {
			return d, true
		}
	}
	return rtcDeclineCall{}, false
}

// member returns the last membership call for the member's event (joined)
// or the device's leaving.
func (o *rtcObserver) member(match func(rtcMemberCall) bool) (rtcMemberCall, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.members) - 1; i >= 0; i-- {
		if match(o.members[i]) {
			return o.members[i], true
		}
	}
	return rtcMemberCall{}, false
}

func (o *rtcObserver) counts() (members, rings, declines int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.members), len(o.rings), len(o.declines)
}

// rtcEvents reads icebox_matrix_rtc_events_total{kind,result}.
func rtcEvents(t *testing.T, b *testBridge, kind, result string) float64 {
	t.Helper()
	mfs, err := b.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "icebox_matrix_rtc_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["kind"] == kind && got["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// TestRTCCallEvents runs the Matrix side of a gateway call against a real
// Dendrite, in an encrypted and in a plain room that bob (a mautrix client
// with its own device and crypto) created and icebox's encrypting bridge
// joined:
//
//   - icebox joins the call (JoinRTC returns the event ID the room's state
//     holds) and rings; bob reads the notification, encrypted on the wire
//     in the encrypted room, with matrix-js-sdk 43's fields and the
//     relation to icebox's membership;
//   - bob joins the call (Element Call's membership), rings (matrix-js-sdk's
//     notification and the older call.notify), declines icebox's ring, and
//     leaves: each reaches Config.RTCCalls decrypted, with its fields;
//     icebox's own membership and ring never do;
//   - malformed and expired ones are counted and not delivered, and their
//     content is not logged;
//   - RTCFocusToken gets a LiveKit token from icebox's authorization
//     service, which verifies icebox's OpenID token at the Dendrite; a
//     refusal is a clear *RTCFocusError.
func TestRTCCallEvents(t *testing.T) {
	// The OpenID userinfo endpoint is a federation route: keep those on.
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	svcID, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	bob := hs.NewE2EEUser(t, bobID, "bob-password")

	st := openStore(t)
	obs := &rtcObserver{}
	tb := newBridge(t, matrix.Config{
		HomeserverURL: hs.URL(), UserID: svcID, Password: servicePassword, Store: st,
		Encryption: &matrix.Encryption{Dir: filepath.Join(t.TempDir(), "matrix")},
		RTCCalls:   obs,
	}, matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	matrix.SetSyncBackoff(tb.Bridge, 50*time.Millisecond, 400*time.Millisecond)
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, RoomIndex: st, Publisher: &recorder{}, Outbound: tb.Encoder(), Rooms: tb.Bridge,
		Logger: zerolog.New(tb.logs).With().Timestamp().Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	tb.SetCalls(calls)
	tb.run(t)
	waitFor(t, 60*time.Second, "encryption up and a first sync", func() bool {
		return matrix.EncryptionUp(tb.Bridge) && matrix.Syncs(tb.Bridge) > 0
	}, tb.logs.String)
	self := tb.RTCIdentity()
	if self.UserID != svcID || self.DeviceID == "" {
		t.Fatalf("RTCIdentity = %+v", self)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	memberType := event.Type{Type: membership.EventType, Class: event.StateEventType}
	// openRoom: bob's room with icebox joined, where members may send call
	// memberships (power 0, as Element sets it up).
	openRoom := func(encrypted bool) string {
		t.Helper()
		var room string
		if encrypted {
			room = bob.CreateEncryptedRoom(t, svcID)
		} else {
			room = bob.CreatePlainRoom(t, svcID)
		}
		var pl event.PowerLevelsEventContent
		if err := bob.Client.StateEvent(ctx, id.RoomID(room), event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		if pl.Events == nil {
			pl.Events = map[string]int{}
		}
		pl.Events[membership.EventType] = 0
		if _, err := bob.Client.SendStateEvent(ctx, id.RoomID(room), event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		bob.WaitJoined(t, room, svcID, 20*time.Second) // icebox's auto-join
		return room
	}
	// stateEventID is the event ID of a membership in the room's state.
	stateEventID := func(room, stateKey string) string {
		t.Helper()
		st, err := bob.Client.State(ctx, id.RoomID(room))
		if err != nil {
			t.Fatal(err)
		}
		if evt := st[memberType][stateKey]; evt != nil {
			return string(evt.ID)
		}
		return ""
	}
	const marker = "CONTENT-MARKER-d41d8cd9"
	bobKey := "_" + bobID + "_" + bob.DeviceID() + "_m.call"
	invalidBefore := map[string]float64{}

	for _, tc := range []struct {
		name      string
		encrypted bool
		ring      matrix.RTCRing
	}{
		{"encrypted room", true, matrix.RTCRing{}},
		{"plain room", false, matrix.RTCRing{Type: "notification", Lifetime: 30 * time.Second, Mentions: []string{bobID}, Intent: "audio"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := openRoom(tc.encrypted)
			if enc, err := tb.RoomEncrypted(ctx, room); err != nil || enc != tc.encrypted {
				t.Fatalf("RoomEncrypted = %v, %v; want %v", enc, err, tc.encrypted)
			}

			// icebox joins and rings.
			iceboxMembership, err := tb.JoinRTC(ctx, room, matrix.RTCMembership{ServiceURL: "http://127.0.0.1:1/livekit/jwt", Intent: "audio"})
			if err != nil {
				t.Fatal(err)
			}
			if got := stateEventID(room, "_"+svcID+"_"+self.DeviceID+"_m.call"); got != iceboxMembership {
				t.Fatalf("JoinRTC returned %q, the room's state holds %q", iceboxMembership, got)
			}
			tc.ring.MembershipEventID = iceboxMembership
			before := time.Now()
			ringID, err := tb.RingRTC(ctx, room, tc.ring)
			if err != nil {
				t.Fatal(err)
			}
			got := bob.WaitEvent(t, room, func(ev matrixtest.Event) bool { return ev.ID == ringID }, e2eeTimeout)
			if got.Type != matrix.TypeRTCNotification || got.Sender != svcID || got.Encrypted != tc.encrypted {
				t.Fatalf("bob's view of icebox's ring: type %s sender %s encrypted %v", got.Type, got.Sender, got.Encrypted)
			}
			var c struct {
				SlotID    string `json:"slot_id"`
				StickyKey string `json:"msc4354_sticky_key"`
				Type      string `json:"notification_type"`
				Mentions  struct {
					UserIDs []string `json:"user_ids"`
					Room    *bool    `json:"room"`
				} `json:"m.mentions"`
				RelatesTo struct {
					EventID string `json:"event_id"`
					RelType string `json:"rel_type"`
				} `json:"m.relates_to"`
				SenderTS int64  `json:"sender_ts"`
				Lifetime int64  `json:"lifetime"`
				Intent   string `json:"m.call.intent"`
			}
			if err := json.Unmarshal(got.Content, &c); err != nil {
				t.Fatal(err)
			}
			wantType, wantLifetime, wantIntent := "ring", int64(90_000), ""
			if tc.ring.Type != "" {
				wantType, wantLifetime, wantIntent = tc.ring.Type, tc.ring.Lifetime.Milliseconds(), tc.ring.Intent
			}
			if c.SlotID != "m.call#ROOM" || c.StickyKey != "m.call#ROOM" || c.Type != wantType || c.Lifetime != wantLifetime ||
				c.Intent != wantIntent || c.RelatesTo.EventID != iceboxMembership || c.RelatesTo.RelType != "m.reference" {
				t.Errorf("icebox's ring content: %s", got.Content)
			}
			if ts := time.UnixMilli(c.SenderTS); ts.Before(before.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
				t.Errorf("sender_ts %v, sent between %v and now", ts, before)
			}
			if tc.ring.Mentions == nil {
				if c.Mentions.Room == nil || !*c.Mentions.Room || c.Mentions.UserIDs == nil || len(c.Mentions.UserIDs) != 0 {
					t.Errorf("room ring's m.mentions: %s", got.Content)
				}
			} else if c.Mentions.Room != nil || len(c.Mentions.UserIDs) != 1 || c.Mentions.UserIDs[0] != bobID {
				t.Errorf("ring of bob's m.mentions: %s", got.Content)
			}
			// What the homeserver stores and hands out.
			for _, raw := range hs.RoomMessages(t, bob.Client.AccessToken, room) {
				var ev struct {
					ID   string `json:"event_id"`
					Type string `json:"type"`
				}
				if json.Unmarshal(raw, &ev) == nil && ev.ID == ringID {
					if want := map[bool]string{true: "m.room.encrypted", false: matrix.TypeRTCNotification}[tc.encrypted]; ev.Type != want {
						t.Errorf("the homeserver holds icebox's ring as %s, want %s", ev.Type, want)
					}
				}
			}

			// bob joins the call as Element Call does.
			bobMembership, err := bob.Client.SendStateEvent(ctx, id.RoomID(room), memberType, bobKey, map[string]any{
				"application": "m.call", "call_id": "", "scope": "m.room", "device_id": bob.DeviceID(),
				"created_ts": time.Now().UnixMilli(), "expires": 4 * 3600 * 1000,
				"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
				"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "https://bob.example/livekit/jwt", "livekit_alias": room}},
				"m.call.intent":  "video",
			})
			if err != nil {
				t.Fatal(err)
			}
			var joined rtcMemberCall
			waitFor(t, e2eeTimeout, "bob's membership at the observer", func() bool {
				var ok bool
				joined, ok = obs.member(func(c rtcMemberCall) bool { return c.m.EventID == string(bobMembership.EventID) })
				return ok
			}, tb.logs.String)
			if m := joined.m; joined.room != room || joined.left || m.Sender != bobID || m.DeviceID != bob.DeviceID() ||
				m.StateKey != bobKey || m.ServiceURL != "https://bob.example/livekit/jwt" || m.Alias != room ||
				m.FocusType != "livekit" || m.FocusSelection != "oldest_membership" || m.Intent != "video" || !m.Live(time.Now()) {
				t.Errorf("bob's membership at the observer: %+v in %s, left %v", m, joined.room, joined.left)
			}

			// bob rings as matrix-js-sdk 43 does, then with the older form.
			senderTS := time.Now().UnixMilli()
			bobRing := bob.Send(t, room, matrix.TypeRTCNotification, map[string]any{
				"slot_id": "m.call#ROOM", "m.mentions": map[string]any{"user_ids": []string{}, "room": true},
				"notification_type": "ring", "m.relates_to": map[string]any{"event_id": bobMembership.EventID, "rel_type": "m.reference"},
				"sender_ts": senderTS, "lifetime": 60_000, "msc4354_sticky_key": "m.call#ROOM", "m.call.intent": "video",
			})
			oldRing := bob.Send(t, room, matrix.TypeCallNotify, map[string]any{
				"application": "m.call", "call_id": "", "notify_type": "ring",
				"m.mentions": map[string]any{"user_ids": []string{svcID}, "room": false},
			})
			// As ruma (Element X's SDK) builds it: the stable type, no slot_id.
			rumaRing := bob.Send(t, room, "m.rtc.notification", map[string]any{
				"sender_ts": senderTS, "lifetime": 30_000, "m.mentions": map[string]any{"room": true},
				"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": bobMembership.EventID}, "notification_type": "ring",
			})
			var r1, r2, r3 rtcRingCall
			waitFor(t, e2eeTimeout, "bob's three rings at the observer", func() bool {
				var ok1, ok2, ok3 bool
				r1, ok1 = obs.ring(bobRing)
				r2, ok2 = obs.ring(oldRing)
				r3, ok3 = obs.ring(rumaRing)
				return ok1 && ok2 && ok3
			}, tb.logs.String)
			if r := r3.r; r3.room != room || r.Type != "ring" || r.Lifetime != 30*time.Second || !r.RoomMention ||
				r.MembershipEventID != string(bobMembership.EventID) {
				t.Errorf("bob's ruma-form ring at the observer: %+v", r3)
			}
			if r := r1.r; r1.room != room || r.Sender != bobID || r.Type != "ring" || r.Lifetime != time.Minute ||
				!r.SenderTS.Equal(time.UnixMilli(senderTS)) || r.MembershipEventID != string(bobMembership.EventID) ||
				!r.RoomMention || len(r.Mentions) != 0 {
				t.Errorf("bob's ring at the observer: %+v", r1)
			}
			if r := r2.r; r2.room != room || r.Sender != bobID || r.Type != "ring" || r.Lifetime != matrix.DefaultRingLifetime ||
				r.MembershipEventID != "" || r.RoomMention || len(r.Mentions) != 1 || r.Mentions[0] != svcID ||
				time.Since(r.SenderTS) > time.Minute {
				t.Errorf("bob's call.notify at the observer: %+v", r2)
			}

			// Malformed and expired: counted, not delivered, not logged;
			// the valid decline after them shows they were processed.
			for _, bad := range []struct{ typ, what string }{
				{matrix.TypeRTCNotification, "lifetime negative"},
				{matrix.TypeRTCNotification, "lifetime a string"},
				{matrix.TypeRTCNotification, "no relation, no slot_id"},
				{matrix.TypeRTCDecline, "no relation"},
				{matrix.TypeRTCNotification, "expired"},
			} {
				content := map[string]any{
					"slot_id": "m.call#ROOM", "m.mentions": map[string]any{"room": true}, "notification_type": "ring",
					"m.relates_to": map[string]any{"event_id": bobMembership.EventID, "rel_type": "m.reference"},
					"sender_ts":    time.Now().UnixMilli(), "lifetime": 60_000, "m.call.intent": marker,
				}
				switch bad.what {
				case "lifetime negative":
					content["lifetime"] = -5
				case "lifetime a string":
					content["lifetime"] = "60000"
				case "no relation, no slot_id":
					delete(content, "m.relates_to")
					delete(content, "slot_id")
				case "no relation":
					content = map[string]any{"reason": marker}
				case "expired":
					// Within MSC4075's 20 s of origin_server_ts, so
					// sender_ts counts.
					content["sender_ts"] = time.Now().Add(-10 * time.Second).UnixMilli()
					content["lifetime"] = 1000
				}
				bob.Send(t, room, bad.typ, content)
			}
			declineID := bob.Send(t, room, matrix.TypeRTCDecline, map[string]any{
				"m.relates_to":       map[string]any{"event_id": ringID, "rel_type": "m.reference"},
				"msc4354_sticky_key": ringID,
			})
			var d rtcDeclineCall
			waitFor(t, e2eeTimeout, "bob's decline at the observer", func() bool {
				var ok bool
				d, ok = obs.decline(declineID)
				return ok
			}, tb.logs.String)
			if d.room != room || d.d.Sender != bobID || d.d.NotificationEventID != ringID {
				t.Errorf("bob's decline at the observer: %+v", d)
			}
			if _, r, dc := obs.counts(); r != 3*(1+btoi(!tc.encrypted)) || dc != 1+btoi(!tc.encrypted) {
				t.Errorf("observer got %d rings and %d declines; malformed or expired ones delivered?", r, dc)
			}
			for kind, want := range map[string]float64{"notification": 3, "decline": 1} {
				if got := rtcEvents(t, tb, kind, "invalid") - invalidBefore[kind]; got != want {
					t.Errorf("icebox_matrix_rtc_events_total{%s,invalid} grew by %v, want %v", kind, got, want)
				}
				invalidBefore[kind] = rtcEvents(t, tb, kind, "invalid")
			}
			if n := rtcEvents(t, tb, "notification", "expired"); n != float64(1+btoi(!tc.encrypted)) {
				t.Errorf("expired notifications = %v", n)
			}
			if n := rtcEvents(t, tb, "notification", "own"); n != float64(1+btoi(!tc.encrypted)) {
				t.Errorf("icebox's own notifications counted %v", n)
			}

			// icebox leaves and bob leaves: only bob's leaving is delivered.
			if err := tb.LeaveRTC(ctx, room); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.Client.SendStateEvent(ctx, id.RoomID(room), memberType, bobKey, map[string]any{}); err != nil {
				t.Fatal(err)
			}
			var left rtcMemberCall
			waitFor(t, e2eeTimeout, "bob's leaving at the observer", func() bool {
				var ok bool
				left, ok = obs.member(func(c rtcMemberCall) bool { return c.room == room && c.left })
				return ok
			}, tb.logs.String)
			// With the membership bob left (his device, his focus).
			if m := left.m; m.Sender != bobID || m.DeviceID != bob.DeviceID() || m.StateKey != bobKey ||
				m.EventID != string(bobMembership.EventID) || m.ServiceURL != "https://bob.example/livekit/jwt" {
				t.Errorf("bob's leaving at the observer: %+v", m)
			}
			if c, ok := obs.member(func(c rtcMemberCall) bool { return c.m.Sender == svcID && c.m.DeviceID == self.DeviceID }); ok {
				t.Errorf("icebox's own device at the observer: %+v", c)
			}
			if m, _, _ := obs.counts(); m != 2*(1+btoi(!tc.encrypted)) {
				t.Errorf("observer got %d membership calls, want bob's join and leave per room", m)
			}
		})
	}
	if strings.Contains(tb.logs.String(), marker) {
		t.Error("the content of a malformed event is in the log")
	}

	t.Run("focus token", func(t *testing.T) {
		const (
			lkURL    = "wss://sfu.example.test"
			lkKey    = "APIicebox"
			lkSecret = "a-livekit-secret-of-at-least-32-bytes!"
		)
		// require_joined as icebox deploys it, asking as bob (a member of
		// the rooms below).
		joinedCheck, err := authservice.NewMatrixMembership(hs.URL(), bob.Client.AccessToken, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := authservice.New(authservice.Config{
			LiveKitURL: lkURL, APIKey: lkKey, APISecret: lkSecret,
			FullAccessHomeservers: []string{"elsewhere.example"}, // restricted: no LiveKit room to create
			HomeserverURLs:        map[string]string{hs.ServerName(): hs.URL()},
			Membership:            joinedCheck,
			Logger:                zerolog.Nop(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = svc.Close() })
		srv := httptest.NewServer(svc.Handler("/livekit/jwt"))
		t.Cleanup(srv.Close)

		room := openRoom(false)
		gotURL, jwt, err := tb.RTCFocusToken(ctx, srv.URL+"/livekit/jwt", room)
		if err != nil {
			t.Fatal(err)
		}
		if gotURL != lkURL {
			t.Errorf("url %q, want %q", gotURL, lkURL)
		}
		v, err := auth.ParseAPIToken(jwt)
		if err != nil {
			t.Fatal(err)
		}
		_, grants, err := v.Verify(lkSecret)
		if err != nil {
			t.Fatal(err)
		}
		if want := self.Identity(); grants.Identity != want {
			t.Errorf("identity %q, want %q", grants.Identity, want)
		}
		if want := authservice.RoomAlias(room, "m.call#ROOM"); grants.Video == nil || grants.Video.Room != want || !grants.Video.RoomJoin {
			t.Errorf("video grant %+v, want room %q", grants.Video, want)
		}
		if strings.Contains(tb.logs.String(), jwt) {
			t.Error("the JWT is in the log")
		}

		// A room icebox is not in: refused by require_joined.
		notIn := bob.CreatePlainRoom(t)
		_, _, err = tb.RTCFocusToken(ctx, srv.URL+"/livekit/jwt", notIn)
		var fe *matrix.RTCFocusError
		if !errors.As(err, &fe) || fe.Status != http.StatusUnauthorized || fe.ErrCode != "M_UNAUTHORIZED" {
			t.Fatalf("refused token: %v", err)
		}
		t.Logf("refusal: %v", err)
		// With a policy refusing loopback: icebox's own (trusted) service
		// is still asked, the same service under another name is not.
		tok2, dev2 := hs.Login(t, svcID, servicePassword)
		guarded := newBridge(t, matrix.Config{HomeserverURL: hs.URL(), UserID: svcID, AccessToken: tok2, DeviceID: dev2, Store: openStore(t),
			RTCFocusAllowAddr: func(a netip.Addr) bool { return !a.IsLoopback() }, RTCFocusTrusted: []string{srv.URL + "/livekit/jwt"}}, matrix.Timing{})
		if _, jwt, err := guarded.RTCFocusToken(ctx, srv.URL+"/livekit/jwt/", room); err != nil || jwt == "" {
			t.Fatalf("trusted service refused by the policy: %v", err)
		}
		other := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/livekit/jwt"
		if _, _, err := guarded.RTCFocusToken(ctx, other, room); err == nil || !strings.Contains(err.Error(), "address refused") {
			t.Fatalf("a loopback service not trusted: %v", err)
		}

		// Nobody listening: an error naming the service, quickly.
		if _, _, err := tb.RTCFocusToken(ctx, closedURL(t)+"/livekit/jwt", room); err == nil || !strings.Contains(err.Error(), "focus token") {
			t.Fatalf("unreachable service: %v", err)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
