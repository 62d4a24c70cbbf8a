package matrix

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var rtcT0 = time.UnixMilli(1_780_000_000_000)

// sdkRing is a notification as matrix-js-sdk 43's sendCallNotify builds it,
// with fields replaced or removed (nil value) by over.
func sdkRing(over map[string]string) string {
	fields := map[string]string{
		"slot_id":            `"m.call#ROOM"`,
		"m.mentions":         `{"user_ids":[],"room":true}`,
		"notification_type":  `"ring"`,
		"m.relates_to":       `{"event_id":"$member","rel_type":"m.reference"}`,
		"sender_ts":          "1780000000000",
		"lifetime":           "90000",
		"msc4354_sticky_key": `"m.call#ROOM"`,
		"m.call.intent":      `"audio"`,
	}
	for k, v := range over {
		if v == "" {
			delete(fields, k)
		} else {
			fields[k] = v
		}
	}
	var parts []string
	for k, v := range fields {
		parts = append(parts, `"`+k+`":`+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestParseRTCNotification(t *testing.T) {
	for _, tt := range []struct {
		name string
		over map[string]string
		want RTCRingEvent // zero: invalid
	}{
		{"matrix-js-sdk 43", nil, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"notification type", map[string]string{"notification_type": `"notification"`}, RTCRingEvent{Type: "notification", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"no notification type: notification", map[string]string{"notification_type": ""}, RTCRingEvent{Type: "notification", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"lifetime capped at 2 min", map[string]string{"lifetime": "600000"}, RTCRingEvent{Type: "ring", Lifetime: 2 * time.Minute, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"lifetime 5.0 is an integer", map[string]string{"lifetime": "5.0"}, RTCRingEvent{Type: "ring", Lifetime: 5 * time.Millisecond, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"sender_ts far ahead: origin_server_ts", map[string]string{"sender_ts": "1780000030000"}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"sender_ts far behind: origin_server_ts", map[string]string{"sender_ts": "1779999970000"}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"sender_ts slightly behind kept", map[string]string{"sender_ts": "1779999990000"}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0.Add(-10 * time.Second), MembershipEventID: "$member", RoomMention: true}},
		{"sender_ts slightly ahead kept", map[string]string{"sender_ts": "1780000010000"}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0.Add(10 * time.Second), MembershipEventID: "$member", RoomMention: true}},
		{"users mentioned", map[string]string{"m.mentions": `{"user_ids":["@a:x"]}`}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", Mentions: []string{"@a:x"}}},
		{"slot_id without relation", map[string]string{"m.relates_to": ""}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, RoomMention: true}},
		{"relation without slot_id", map[string]string{"slot_id": "", "msc4354_sticky_key": ""}, RTCRingEvent{Type: "ring", Lifetime: 90 * time.Second, SenderTS: rtcT0, MembershipEventID: "$member", RoomMention: true}},
		{"neither relation nor slot_id", map[string]string{"slot_id": "", "m.relates_to": ""}, RTCRingEvent{}},
		{"relation not a reference", map[string]string{"slot_id": "", "m.relates_to": `{"event_id":"$m","rel_type":"m.thread"}`}, RTCRingEvent{}},
		{"slot_id not a string", map[string]string{"slot_id": "1"}, RTCRingEvent{}},
		{"slot_id with two #", map[string]string{"slot_id": `"a#b#c"`, "msc4354_sticky_key": `"a#b#c"`}, RTCRingEvent{}},
		{"sticky key not the slot", map[string]string{"msc4354_sticky_key": `"other#x"`}, RTCRingEvent{}},
		{"lifetime missing", map[string]string{"lifetime": ""}, RTCRingEvent{}},
		{"lifetime negative", map[string]string{"lifetime": "-1"}, RTCRingEvent{}},
		{"lifetime fractional", map[string]string{"lifetime": "5.5"}, RTCRingEvent{}},
		{"lifetime a string", map[string]string{"lifetime": `"90000"`}, RTCRingEvent{}},
		{"sender_ts missing", map[string]string{"sender_ts": ""}, RTCRingEvent{}},
		{"mentions missing", map[string]string{"m.mentions": ""}, RTCRingEvent{}},
		{"mentions null", map[string]string{"m.mentions": "null"}, RTCRingEvent{}},
		{"mentions nobody", map[string]string{"m.mentions": `{"user_ids":[],"room":false}`}, RTCRingEvent{}},
		{"mentions room not a boolean", map[string]string{"m.mentions": `{"room":"yes"}`}, RTCRingEvent{}},
		{"mentions users not strings", map[string]string{"m.mentions": `{"user_ids":[1]}`}, RTCRingEvent{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRTCNotification([]byte(sdkRing(tt.over)), rtcT0)
			if tt.want.Type == "" {
				if !errors.Is(err, errRTCContent) {
					t.Fatalf("accepted: %+v, %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.want.Type || got.Lifetime != tt.want.Lifetime || !got.SenderTS.Equal(tt.want.SenderTS) ||
				got.MembershipEventID != tt.want.MembershipEventID || got.RoomMention != tt.want.RoomMention ||
				strings.Join(got.Mentions, ",") != strings.Join(tt.want.Mentions, ",") {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parseRTCNotification([]byte(`[1]`), rtcT0); !errors.Is(err, errRTCContent) {
		t.Fatalf("not an object: %v", err)
	}
}

func TestParseCallNotifyAndDecline(t *testing.T) {
	r, err := parseCallNotify([]byte(`{"application":"m.call","call_id":"","m.mentions":{"user_ids":["@a:x"],"room":false},"notify_type":"notify"}`), rtcT0)
	if err != nil || r.Type != "notification" || r.Lifetime != DefaultRingLifetime || !r.SenderTS.Equal(rtcT0) || r.RoomMention ||
		len(r.Mentions) != 1 || r.MembershipEventID != "" {
		t.Fatalf("call.notify: %+v, %v", r, err)
	}
	for _, bad := range []string{
		`{"application":"m.other","m.mentions":{"room":true},"notify_type":"ring"}`,
		`{"application":"m.call","m.mentions":{"room":true},"notify_type":"buzz"}`,
		`{"application":"m.call","notify_type":"ring"}`,
		`"x"`,
	} {
		if _, err := parseCallNotify([]byte(bad), rtcT0); !errors.Is(err, errRTCContent) {
			t.Errorf("call.notify %s accepted (%v)", bad, err)
		}
	}
	if n, err := parseRTCDecline([]byte(`{"m.relates_to":{"event_id":"$n","rel_type":"m.reference"},"msc4354_sticky_key":"$n"}`)); err != nil || n != "$n" {
		t.Fatalf("decline: %q, %v", n, err)
	}
	for _, bad := range []string{`{}`, `{"m.relates_to":{"event_id":"$n"}}`, `{"m.relates_to":{"rel_type":"m.reference"}}`, `{"m.relates_to":"x"}`, `[]`} {
		if _, err := parseRTCDecline([]byte(bad)); !errors.Is(err, errRTCContent) {
			t.Errorf("decline %s accepted (%v)", bad, err)
		}
	}
}

// FuzzParseRTCEvent: a ring is either refused or accepted with a type of
// ring or notification, a lifetime within (0, MaxRingLifetime], someone
// to notify; a decline names its notification. The error never carries
// the content.
func FuzzParseRTCEvent(f *testing.F) {
	f.Add(TypeRTCNotification, sdkRing(nil))
	f.Add(TypeRTCNotification, sdkRing(map[string]string{"slot_id": "", "lifetime": "1e300"}))
	f.Add(TypeCallNotify, `{"application":"m.call","call_id":"","m.mentions":{"room":true},"notify_type":"ring"}`)
	f.Add(TypeRTCDecline, `{"m.relates_to":{"event_id":"$n","rel_type":"m.reference"}}`)
	f.Fuzz(func(t *testing.T, typ, content string) {
		var r RTCRingEvent
		var err error
		switch typ {
		case TypeRTCNotification:
			r, err = parseRTCNotification([]byte(content), rtcT0)
		case TypeCallNotify:
			r, err = parseCallNotify([]byte(content), rtcT0)
		default:
			n, err := parseRTCDecline([]byte(content))
			if err == nil && n == "" {
				t.Fatal("decline accepted without a notification")
			}
			return
		}
		if err != nil {
			if len(content) > 8 && strings.Contains(err.Error(), content) {
				t.Fatalf("error carries the content: %v", err)
			}
			return
		}
		if (r.Type != RTCRingTypeRing && r.Type != RTCRingTypeNotification) || r.Lifetime < 0 || r.Lifetime > MaxRingLifetime ||
			(!r.RoomMention && len(r.Mentions) == 0) {
			t.Fatalf("accepted %+v", r)
		}
	})
}
