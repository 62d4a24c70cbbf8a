package matrix

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
)

// Test hooks for package matrix_test.

// SetSyncBackoff shortens the sync's backoff, and the auto-join's, which
// follows it. Call it before Run.
func SetSyncBackoff(b *Bridge, lo, hi time.Duration) {
	b.sync.timing = syncTiming{minBackoff: lo, maxBackoff: hi}
	b.rooms.timing = b.sync.timing
}

// Syncs counts the sync responses the bridge has processed.
func Syncs(b *Bridge) uint64 { return b.sync.syncs.Load() }

func strp(s string) *string { return &s }
func intp(i int) *int       { return &i }

func TestParseCallContent(t *testing.T) {
	const sdpBody = "v=0\r\n"
	tests := []struct {
		name    string
		typ     string
		content string
		want    callContent
		wantErr string
	}{
		{"invite v1 string", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0\r\n"},"invitee":"@a:x"}`,
			callContent{CallID: "c1", PartyID: "p1", SDP: sdpBody, Lifetime: 60000, Invitee: "@a:x"}, ""},
		{"invite v1 number", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":1,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", PartyID: "p1", SDP: sdpBody, Lifetime: 60000}, ""},
		{"invite v0 with party", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":0,"lifetime":60000,"offer":{"type":"offer","sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", PartyID: "p1", V0: true, SDP: sdpBody, Lifetime: 60000}, ""},
		{"invite v0 without party", TypeInvite,
			`{"call_id":"c1","version":0,"lifetime":60000,"offer":{"sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", V0: true, SDP: sdpBody, Lifetime: 60000}, ""},
		{"unknown version is 1", TypeInvite,
			`{"call_id":"c1","party_id":"p","version":"2","lifetime":1.5e4,"offer":{"sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", PartyID: "p", SDP: sdpBody, Lifetime: 15000}, ""},
		{"string 0 is not v0", TypeHangup, `{"call_id":"c1","version":"0"}`, callContent{CallID: "c1"}, ""},
		{"no version", TypeHangup, `{"call_id":"c1","party_id":"p"}`, callContent{CallID: "c1", PartyID: "p"}, ""},
		{"invite without call_id", TypeInvite,
			`{"party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"x"}}`,
			callContent{PartyID: "p1", SDP: "x", Lifetime: 60000}, "call_id missing"},
		{"offer not an object", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":"v=0"}`,
			callContent{CallID: "c1", PartyID: "p1"}, "offer is a JSON string, not the expected type"},
		{"offer without sdp", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer"}}`,
			callContent{CallID: "c1", PartyID: "p1"}, "offer.sdp missing"},
		{"offer of type answer", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"answer","sdp":"x"}}`,
			callContent{CallID: "c1", PartyID: "p1"}, `offer.type is not "offer"`},
		{"invite without lifetime", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","offer":{"sdp":"x"}}`,
			callContent{CallID: "c1", PartyID: "p1", SDP: "x"}, "lifetime missing"},
		{"negative lifetime", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":-1,"offer":{"sdp":"x"}}`,
			callContent{CallID: "c1", PartyID: "p1", SDP: "x"}, "lifetime out of range"},
		{"call_id a number", TypeHangup, `{"call_id":12,"party_id":"p"}`,
			callContent{PartyID: "p"}, "call_id is a JSON number, not the expected type"},
		{"content an array", TypeHangup, `[1]`, callContent{}, "content is a JSON array, not an object"},
		{"content not JSON", TypeHangup, `{"call_id":`, callContent{}, "content is not valid JSON"},
		{"call_id too long", TypeHangup, `{"call_id":"` + strings.Repeat("a", 256) + `","party_id":"p"}`,
			callContent{PartyID: "p"}, "call_id longer than 255 characters"},
		{"party_id too long", TypeReject, `{"call_id":"c","party_id":"` + strings.Repeat("a", 256) + `"}`,
			callContent{CallID: "c", PartyID: strings.Repeat("a", 256)}, "party_id longer than 255 characters"},
		{"answer", TypeAnswer, `{"call_id":"c1","party_id":"p","version":"1","answer":{"type":"answer","sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", PartyID: "p", SDP: sdpBody}, ""},
		{"answer missing", TypeAnswer, `{"call_id":"c1","party_id":"p","version":"1"}`,
			callContent{CallID: "c1", PartyID: "p"}, "answer missing"},
		{"candidates with end marker", TypeCandidates,
			`{"call_id":"c1","party_id":"p","version":"1","candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}`,
			callContent{CallID: "c1", PartyID: "p", Candidates: []signaling.Candidate{
				{Candidate: "candidate:1 1 udp 1 192.0.2.1 1 typ host", SDPMid: strp("0"), SDPMLineIndex: intp(0)},
				{Candidate: ""},
			}}, ""},
		{"candidates empty", TypeCandidates, `{"call_id":"c1","party_id":"p","candidates":[]}`,
			callContent{CallID: "c1", PartyID: "p"}, "candidates missing"},
		{"candidate not an object", TypeCandidates, `{"call_id":"c1","party_id":"p","candidates":["x"]}`,
			callContent{CallID: "c1", PartyID: "p"}, "candidates is a JSON string, not the expected type"},
		{"candidate without candidate", TypeCandidates, `{"call_id":"c1","party_id":"p","candidates":[{"sdpMid":"0"}]}`,
			callContent{CallID: "c1", PartyID: "p"}, "candidates[0].candidate missing"},
		{"select_answer", TypeSelectAnswer, `{"call_id":"c1","party_id":"p","version":"1","selected_party_id":"q"}`,
			callContent{CallID: "c1", PartyID: "p", Selected: "q"}, ""},
		{"select_answer without selection", TypeSelectAnswer, `{"call_id":"c1","party_id":"p","version":"1"}`,
			callContent{CallID: "c1", PartyID: "p"}, "selected_party_id missing"},
		{"hangup reason kept", TypeHangup, `{"call_id":"c1","party_id":"p","version":"1","reason":"answered_elsewhere"}`,
			callContent{CallID: "c1", PartyID: "p", Reason: "answered_elsewhere"}, ""},
		{"hangup reason not a string", TypeHangup, `{"call_id":"c1","party_id":"p","version":"1","reason":7}`,
			callContent{CallID: "c1", PartyID: "p"}, ""},
		{"negotiate description not an object", TypeNegotiate, `{"call_id":"c1","party_id":"p","version":"1","description":"whatever"}`,
			callContent{CallID: "c1", PartyID: "p"}, "description is a JSON string, not the expected type"},
		{"negotiate offer with metadata", TypeNegotiate,
			`{"call_id":"c1","party_id":"p","version":"1","lifetime":30000,"description":{"type":"offer","sdp":"v=0\r\n"},` +
				`"sdp_stream_metadata":{"s1":{"purpose":"m.screenshare","video_muted":false,"x":1}}}`,
			callContent{CallID: "c1", PartyID: "p", Lifetime: 30000,
				Description: signaling.SessionDescription{Type: "offer", SDP: sdpBody},
				Media:       signaling.Media{StreamMetadata: json.RawMessage(`{"s1":{"purpose":"m.screenshare","video_muted":false,"x":1}}`)}}, ""},
		{"negotiate answer without lifetime", TypeNegotiate,
			`{"call_id":"c1","party_id":"p","version":"1","description":{"type":"answer","sdp":"v=0\r\n"}}`,
			callContent{CallID: "c1", PartyID: "p", Description: signaling.SessionDescription{Type: "answer", SDP: sdpBody}}, ""},
		{"negotiate of type pranswer", TypeNegotiate,
			`{"call_id":"c1","party_id":"p","version":"1","description":{"type":"pranswer","sdp":"v=0"}}`,
			callContent{CallID: "c1", PartyID: "p"}, `description.type is not "offer" or "answer"`},
		{"negotiate without sdp", TypeNegotiate,
			`{"call_id":"c1","party_id":"p","version":"1","description":{"type":"offer"}}`,
			callContent{CallID: "c1", PartyID: "p"}, "description.sdp missing"},
		{"invite with metadata and capabilities", TypeInvite,
			`{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"sdp":"x"},` +
				`"sdp_stream_metadata":{"a":{"purpose":"m.usermedia","audio_muted":true}},"capabilities":{"m.call.dtmf":true}}`,
			callContent{CallID: "c1", PartyID: "p1", SDP: "x", Lifetime: 60000, Media: signaling.Media{
				StreamMetadata: json.RawMessage(`{"a":{"purpose":"m.usermedia","audio_muted":true}}`),
				Capabilities:   json.RawMessage(`{"m.call.dtmf":true}`)}}, ""},
		{"metadata not an object", TypeAnswer,
			`{"call_id":"c1","party_id":"p","answer":{"sdp":"x"},"sdp_stream_metadata":["a"]}`,
			callContent{CallID: "c1", PartyID: "p"}, "sdp_stream_metadata must be a JSON object"},
		{"a stream's metadata not an object", TypeAnswer,
			`{"call_id":"c1","party_id":"p","answer":{"sdp":"x"},"sdp_stream_metadata":{"a":true}}`,
			callContent{CallID: "c1", PartyID: "p"}, "sdp_stream_metadata: each stream's metadata must be a JSON object"},
		{"unknown purpose", TypeAnswer,
			`{"call_id":"c1","party_id":"p","answer":{"sdp":"x"},"sdp_stream_metadata":{"a":{"purpose":"m.other"}}}`,
			callContent{CallID: "c1", PartyID: "p"}, `sdp_stream_metadata: purpose must be "m.usermedia" or "m.screenshare"`},
		{"capabilities not an object", TypeInvite,
			`{"call_id":"c1","party_id":"p1","lifetime":60000,"offer":{"sdp":"x"},"capabilities":"all"}`,
			callContent{CallID: "c1", PartyID: "p1"}, "capabilities is not a JSON object"},
		{"metadata changed", TypeStreamMetadataChanged,
			`{"call_id":"c1","party_id":"p","version":"1","sdp_stream_metadata":{"s":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}}`,
			callContent{CallID: "c1", PartyID: "p", Media: signaling.Media{
				StreamMetadata: json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}`)}}, ""},
		{"metadata changed without metadata", TypeStreamMetadataChanged, `{"call_id":"c1","party_id":"p","version":"1"}`,
			callContent{CallID: "c1", PartyID: "p"}, "sdp_stream_metadata is required"},
		{"metadata changed, muted not a boolean", TypeStreamMetadataChanged,
			`{"call_id":"c1","party_id":"p","sdp_stream_metadata":{"s":{"purpose":"m.usermedia","audio_muted":"yes"}}}`,
			callContent{CallID: "c1", PartyID: "p"}, "sdp_stream_metadata: purpose must be a string, audio_muted and video_muted booleans"},
		{"candidates passed whole", TypeCandidates,
			`{"call_id":"c1","party_id":"p","version":"1","candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"uf2"},{"candidate":"","sdpMid":"0","usernameFragment":"uf2"}]}`,
			callContent{CallID: "c1", PartyID: "p", Candidates: []signaling.Candidate{
				{Candidate: "candidate:1 1 udp 1 192.0.2.1 1 typ host", SDPMid: strp("0"), SDPMLineIndex: intp(0), UsernameFragment: strp("uf2")},
				{Candidate: "", SDPMid: strp("0"), UsernameFragment: strp("uf2")},
			}}, ""},
		{"opaque IDs of 255 characters with . and ~", TypeReject,
			`{"call_id":"` + longID + `","party_id":"` + longID + `","version":"1"}`,
			callContent{CallID: longID, PartyID: longID}, ""},
		{"call_id outside the grammar", TypeReject, `{"call_id":"a/b","party_id":"p"}`,
			callContent{CallID: "a/b", PartyID: "p"}, "call_id is not 1-255 characters of [0-9a-zA-Z._~-]"},
		{"party_id outside the grammar", TypeHangup, `{"call_id":"c1","party_id":"p q"}`,
			callContent{CallID: "c1", PartyID: "p q"}, "party_id is not 1-255 characters of [0-9a-zA-Z._~-]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCallContent(tt.typ, []byte(tt.content))
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.wantErr {
				t.Errorf("error = %q, want %q", gotErr, tt.wantErr)
			}
			if tt.wantErr == "" && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if tt.wantErr != "" && got.CallID != tt.want.CallID {
				t.Errorf("call ID with an error = %q, want %q", got.CallID, tt.want.CallID)
			}
		})
	}
}

// FuzzParseCallContent: any content is either parsed into something the
// service can be given, or refused with an error that quotes none of it.
func FuzzParseCallContent(f *testing.F) {
	f.Add(TypeInvite, `{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`)
	f.Add(TypeCandidates, `{"call_id":"c1","party_id":"p","candidates":[{"candidate":""}]}`)
	f.Add(TypeAnswer, `{"call_id":"c1","party_id":"p","version":0,"answer":{"sdp":"x"}}`)
	f.Add(TypeHangup, `{"call_id":"c1","reason":{"x":1}}`)
	f.Add(TypeSelectAnswer, `{"call_id":"c1","selected_party_id":"zz"}`)
	f.Fuzz(func(t *testing.T, typ, content string) {
		c, err := parseCallContent(typ, []byte(content))
		if len(c.CallID) > maxOpaqueID {
			t.Fatalf("call ID of %d bytes returned", len(c.CallID))
		}
		if err != nil {
			if msg := err.Error(); len(content) > 8 && strings.Contains(msg, content) {
				t.Fatalf("error %q quotes the content", msg)
			}
			return
		}
		if c.CallID == "" || len(c.PartyID) > maxOpaqueID {
			t.Fatalf("accepted %+v", c)
		}
		switch typ {
		case TypeInvite:
			if c.SDP == "" || c.Lifetime <= 0 {
				t.Fatalf("invite accepted without offer or lifetime: %+v", c)
			}
		case TypeAnswer:
			if c.SDP == "" {
				t.Fatalf("answer accepted without SDP")
			}
		case TypeCandidates:
			if len(c.Candidates) == 0 {
				t.Fatalf("candidates accepted without candidates")
			}
		case TypeSelectAnswer:
			if c.Selected == "" {
				t.Fatalf("select_answer accepted without selection")
			}
		}
	})
}

func TestResultOf(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, resultOK},
		{signaling.ErrConflict, resultDuplicate},
		{errors.Join(errors.New("x"), signaling.ErrStale), resultStale},
		{signaling.ErrInvalid, resultInvalid},
		{signaling.ErrForbidden, resultIgnored},
		{signaling.ErrNotFound, resultIgnored},
		{&signaling.TransitionError{Code: "call_ended"}, resultIgnored},
		{errors.New("disk on fire"), resultError},
	}
	for _, tt := range tests {
		if got := resultOf(tt.err); got != tt.want {
			t.Errorf("resultOf(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestEndedInvites(t *testing.T) {
	ev := func(id, sender, typ, callID string) *event.Event {
		return &event.Event{
			ID: id2(id), Sender: user(sender), Type: event.Type{Type: typ, Class: event.MessageEventType},
			Content: event.Content{VeryRaw: json.RawMessage(`{"call_id":"` + callID + `"}`)},
		}
	}
	timeline := []*event.Event{
		ev("$1", "@bob:x", TypeInvite, "a"), // hung up below: suppressed
		ev("$2", "@bob:x", TypeInvite, "b"), // only candidates follow: rings
		ev("$3", "@bob:x", TypeCandidates, "b"),
		ev("$4", "@bob:x", TypeHangup, "a"),
		ev("$5", "@bob:x", TypeInvite, "c"),   // answered by icebox: its own answer does not count
		ev("$6", "@svc:x", TypeAnswer, "c"),   // (and could not be in the same batch anyway)
		ev("$7", "@bob:x", TypeHangup, "d"),   // hangup before the invite: the invite rings
		ev("$8", "@bob:x", TypeInvite, "d"),   //
		ev("$9", "@carol:x", TypeInvite, "e"), // answered on another device
		ev("$10", "@dave:x", TypeAnswer, "e"),
	}
	got := endedInvites("@svc:x", timeline)
	if want := []string{"$1", "$9"}; !reflect.DeepEqual(got, want) {
		t.Errorf("endedInvites = %v, want %v", got, want)
	}
}

func id2(s string) id.EventID { return id.EventID(s) }
func user(s string) id.UserID { return id.UserID(s) }

// TestAge: unsigned.age plus the time since the response arrived.
func TestAge(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	in := &inbound{now: func() time.Time { return now }, log: zerolog.Nop()}
	evt := &event.Event{}
	evt.Unsigned.Age = 1500
	evt.Mautrix.ReceivedAt = now.Add(-2 * time.Second)
	if got := in.age(evt); got != 3500*time.Millisecond {
		t.Errorf("age = %v, want 3.5s", got)
	}
	evt.Mautrix.ReceivedAt = time.Time{}
	if got := in.age(evt); got != 1500*time.Millisecond {
		t.Errorf("age without a receive time = %v, want 1.5s", got)
	}
}

// longID is a valid opaque ID of the spec's greatest length, with every
// kind of character the grammar allows.
var longID = strings.Repeat("aZ09._~-", 32)[:255]
