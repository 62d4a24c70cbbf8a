package membership

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

var t0 = time.UnixMilli(1_780_000_000_000)

// elementCall is a membership as Element Call (matrix-js-sdk v43,
// session kind) sends it.
func elementCall(device string, createdTS, expires int64) []byte {
	extra := ""
	if createdTS != 0 {
		extra += fmt.Sprintf(`,"created_ts":%d`, createdTS)
	}
	if expires != 0 {
		extra += fmt.Sprintf(`,"expires":%d`, expires)
	}
	return []byte(`{"application":"m.call","call_id":"","device_id":"` + device + `","scope":"m.room",` +
		`"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
		`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://x/livekit/jwt","livekit_alias":"!r:x"}]` + extra + `}`)
}

func TestParse(t *testing.T) {
	tests := []struct {
		name       string
		raw        string
		left       bool
		err        bool
		wantExpiry time.Time
	}{
		{"empty content (left)", `{}`, true, false, time.Time{}},
		{"no content", ``, true, false, time.Time{}},
		{"only a sticky key (left)", `{"msc4354_sticky_key":"k"}`, true, false, time.Time{}},
		{"deprecated memberships list", `{"memberships":[{"call_id":""}]}`, true, false, time.Time{}},
		{"expires and created_ts", string(elementCall("DEV", t0.UnixMilli(), 60_000)), false, false, t0.Add(time.Minute)},
		{"no created_ts: the event's ts", string(elementCall("DEV", 0, 60_000)), false, false, t0.Add(10*time.Second + time.Minute)},
		{"no expires: 4 h", string(elementCall("DEV", t0.UnixMilli(), 0)), false, false, t0.Add(4 * time.Hour)},
		{"no device_id", `{"application":"m.call","call_id":"","focus_active":{"type":"livekit"}}`, false, true, time.Time{}},
		{"no focus type", `{"application":"m.call","call_id":"","device_id":"D","focus_active":{}}`, false, true, time.Time{}},
		{"application not a string", `{"application":1,"call_id":"","device_id":"D","focus_active":{"type":"livekit"}}`, false, true, time.Time{}},
		{"not an object", `[1]`, false, true, time.Time{}},
	}
	// The state key must be the sender's.
	for key, ok := range map[string]bool{"_@a:x_DEV_m.call": true, "@a:x_DEV": true, "@a:x": true,
		"_@b:x_DEV_m.call": false, "@a:xy_DEV": false, "_@a:x.evil_DEV_m.call": false, "": false} {
		_, _, err := Parse(elementCall("DEV", 0, 0), "@a:x", key, t0)
		if (err == nil) != ok {
			t.Errorf("state key %q of @a:x: err = %v, want ok %v", key, err, ok)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, left, err := Parse([]byte(tt.raw), "@a:x", "_@a:x_DEV_m.call", t0.Add(10*time.Second))
			if (err != nil) != tt.err || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if left != tt.left {
				t.Fatalf("left = %v, want %v", left, tt.left)
			}
			if !tt.wantExpiry.IsZero() && !m.Expiry.Equal(tt.wantExpiry) {
				t.Fatalf("expiry = %v, want %v", m.Expiry, tt.wantExpiry)
			}
		})
	}
}

func TestRoomsLiveAndLastCall(t *testing.T) {
	r := NewRooms(0, 0, nil)
	ctx := context.Background()
	members := []string{"@a:x", "@b:x"}
	st, _ := r.State(ctx, "!r:x", members, t0)
	if st.Live != 0 || st.LastCallRTC() || st.Known {
		t.Fatalf("unknown room = %+v", st)
	}
	// a's legacy call (another room), then a MatrixRTC one here.
	r.ObserveLegacyCall("@a:x", t0)
	if left, err := r.Observe("!r:x", Event{StateKey: "_@a:x_DEV_m.call", Sender: "@a:x", Content: elementCall("DEV", 0, 60_000), TS: t0.Add(time.Second)}); err != nil || left {
		t.Fatal(err)
	}
	st, _ = r.State(ctx, "!r:x", members, t0.Add(2*time.Second))
	if st.Live != 1 || !st.LastCallRTC() || st.MembersRTC != 1 {
		t.Fatalf("after a membership: %+v", st)
	}
	// Expired: no longer live, but a's last call was MatrixRTC.
	st, _ = r.State(ctx, "!r:x", members, t0.Add(2*time.Minute))
	if st.Live != 0 || !st.LastCallRTC() {
		t.Fatalf("after expiry: %+v", st)
	}
	// Another room's members know nothing of a.
	if st, _ := r.State(ctx, "!other:x", []string{"@c:x"}, t0.Add(2*time.Minute)); st.LastCallRTC() || st.Live != 0 {
		t.Fatalf("another room: %+v", st)
	}
	// Emptied (left), then b places a legacy call: one member's last call
	// is legacy, so not "the members' last calls were MatrixRTC".
	if left, err := r.Observe("!r:x", Event{StateKey: "_@a:x_DEV_m.call", Sender: "@a:x", Content: []byte(`{}`), TS: t0.Add(3 * time.Minute)}); err != nil || !left {
		t.Fatalf("leaving: left %v, %v", left, err)
	}
	r.ObserveLegacyCall("@b:x", t0.Add(4*time.Minute))
	st, _ = r.State(ctx, "!r:x", members, t0.Add(5*time.Minute))
	if st.Live != 0 || st.LastCallRTC() || st.MembersRTC != 1 || st.MembersLegacy != 1 {
		t.Fatalf("after leaving and a legacy call: %+v", st)
	}
	// An invalid membership changes nothing.
	if _, err := r.Observe("!r:x", Event{StateKey: "_@a:x_DEV_m.call", Sender: "@a:x", Content: []byte(`{"application":"m.call","x":1}`), TS: t0}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid membership: %v", err)
	}
}

func TestRoomsBounds(t *testing.T) {
	r := NewRooms(2, 3, nil)
	for i := range 5 {
		_, _ = r.Observe("!r:x", Event{StateKey: fmt.Sprintf("_@a:x_D%d_m.call", i), Sender: "@a:x", Content: elementCall(fmt.Sprint(i), t0.UnixMilli(), 60_000), TS: t0})
	}
	st, _ := r.State(context.Background(), "!r:x", nil, t0)
	if st.Live != 3 || st.Dropped != 2 {
		t.Fatalf("members past the bound: %+v", st)
	}
	_, _ = r.Observe("!b:x", Event{StateKey: "k", Content: []byte(`{}`)})
	_, _ = r.Observe("!c:x", Event{StateKey: "k", Content: []byte(`{}`)}) // evicts !r:x, the least recently updated
	if r.Len() != 2 {
		t.Fatalf("rooms = %d, want 2", r.Len())
	}
	if st, _ := r.State(context.Background(), "!r:x", nil, t0); st.Known {
		t.Fatalf("evicted room still known: %+v", st)
	}
}

func TestRoomsLoader(t *testing.T) {
	calls := 0
	fail := true
	r := NewRooms(0, 0, func(ctx context.Context, roomID string) ([]Event, error) {
		calls++
		if fail {
			return nil, errors.New("homeserver down")
		}
		return []Event{
			{StateKey: "_@a:x_A_m.call", Sender: "@a:x", Content: elementCall("A", t0.UnixMilli(), 60_000), TS: t0},
			{StateKey: "_@b:x_B_m.call", Sender: "@b:x", Content: []byte(`{}`), TS: t0},
		}, nil
	})
	if _, err := r.State(context.Background(), "!r:x", nil, t0); err == nil {
		t.Fatal("a failed load is not reported")
	}
	fail = false
	st, err := r.State(context.Background(), "!r:x", nil, t0)
	if err != nil || st.Live != 1 || !st.Known {
		t.Fatalf("loaded state = %+v, %v", st, err)
	}
	if _, err := r.State(context.Background(), "!r:x", nil, t0); err != nil || calls != 2 {
		t.Fatalf("loaded twice: %d calls, %v", calls, err)
	}
}

func TestNilRooms(t *testing.T) {
	var r *Rooms
	if st, err := r.State(context.Background(), "!r:x", []string{"@a:x"}, t0); err != nil || st.Known || st.Live != 0 {
		t.Fatalf("nil Rooms: %+v, %v", st, err)
	}
}

func TestParseFocusAndDevice(t *testing.T) {
	ev := Event{EventID: "$e", StateKey: "_@a:x_DEV_m.call", Sender: "@a:x", TS: t0,
		Content: []byte(`{"application":"m.call","call_id":"","device_id":"DEV","m.call.intent":"video",` +
			`"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
			`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://x/livekit/jwt","livekit_alias":"!r:x"},{"type":"livekit","livekit_service_url":"https://y"}]}`)}
	m, left, err := ParseEvent(ev)
	if err != nil || left {
		t.Fatal(left, err)
	}
	if m.EventID != "$e" || m.ServiceURL != "https://x/livekit/jwt" || m.Alias != "!r:x" || m.FocusSelection != "oldest_membership" || m.Intent != "video" {
		t.Fatalf("member %+v", m)
	}
	// Odd foci or intent do not make a membership matrix-js-sdk accepts
	// invalid: they are left out.
	for _, odd := range []string{`"foci_preferred":"x","m.call.intent":1`, `"foci_preferred":[{"type":"full_mesh"}]`, `"foci_preferred":[]`, `"foci_preferred":[7]`} {
		ev.Content = []byte(`{"application":"m.call","call_id":"","device_id":"DEV","focus_active":{"type":"livekit"},` + odd + `}`)
		m, _, err := ParseEvent(ev)
		if err != nil || m.ServiceURL != "" || m.Intent != "" {
			t.Errorf("%s: %+v, %v", odd, m, err)
		}
	}
	for key, want := range map[string]string{
		"_@a:x_DEV_m.call": "DEV", "_@a:x_D_E_V_m.call": "D_E_V", "@a:x_DEV": "DEV", "@a:x": "", "_@b:x_DEV_m.call": "", "": "",
	} {
		if got := DeviceOfStateKey(key, "@a:x"); got != want {
			t.Errorf("DeviceOfStateKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestRoomsApply(t *testing.T) {
	r := NewRooms(0, 0, nil)
	join := Event{EventID: "$j", StateKey: "_@a:x_DEV_m.call", Sender: "@a:x", Content: elementCall("DEV", t0.UnixMilli(), 60_000), TS: t0}
	c, err := r.Apply("!r:x", join)
	if err != nil || c.Left || c.HadPrev || c.Member.EventID != "$j" || c.Member.DeviceID != "DEV" {
		t.Fatalf("join: %+v, %v", c, err)
	}
	c, _ = r.Apply("!r:x", join)
	if !c.HadPrev || c.Prev.EventID != "$j" {
		t.Fatalf("the same event again: %+v", c)
	}
	c, err = r.Apply("!r:x", Event{EventID: "$l", StateKey: join.StateKey, Sender: "@a:x", Content: []byte(`{}`), TS: t0})
	if err != nil || !c.Left || !c.HadPrev || c.Prev.DeviceID != "DEV" || c.Prev.ServiceURL != "https://x/livekit/jwt" || c.Member.StateKey != join.StateKey {
		t.Fatalf("leave: %+v, %v", c, err)
	}
	if c, _ := r.Apply("!r:x", Event{EventID: "$l2", StateKey: join.StateKey, Sender: "@a:x", Content: []byte(`{}`), TS: t0}); !c.Left || c.HadPrev {
		t.Fatalf("leaving again: %+v", c)
	}
}
