package store

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestCallRecordOnDisk pins the JSON of a call record: these names are in
// every file written so far, whatever the domain or the API call them.
func TestCallRecordOnDisk(t *testing.T) {
	at := func(s string) *time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	c := signaling.Call{
		ID: "k", ConversationID: "c", RoomID: "!r:x", Initiator: "alice", Invitee: "bob", PartyID: "p1",
		Status: signaling.StatusEnded, SDPOffer: "o", SDPAnswer: "a", Answerer: "bob", AnswerPartyID: "p2",
		LifetimeMS: 60000, Version: "1", CreatedAt: *at("2026-01-02T03:04:05Z"),
		AnsweredAt: at("2026-01-02T03:04:06Z"), EndedAt: at("2026-01-02T03:04:07Z"),
		EndReason: "user_hangup", EndedBy: "alice", MatrixInviteEventID: "$e", MatrixPartyID: "m",
		RevokedUntil: at("2026-01-03T03:05:07Z"),
	}
	const want = `{"id":"k","conversation_id":"c","room_id":"!r:x","initiator":"alice","invitee":"bob",` +
		`"party_id":"p1","status":"ended","sdp_offer":"o","sdp_answer":"a","answerer":"bob",` +
		`"answer_party_id":"p2","lifetime_ms":60000,"version":"1","created_at":"2026-01-02T03:04:05Z",` +
		`"answered_at":"2026-01-02T03:04:06Z","ended_at":"2026-01-02T03:04:07Z","end_reason":"user_hangup",` +
		`"ended_by":"alice","matrix_invite_event_id":"$e","matrix_party_id":"m","revoked_until":"2026-01-03T03:05:07Z"}`
	raw, err := encode(recordOf(c))
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != want {
		t.Errorf("record of a call:\n got %s\nwant %s", raw, want)
	}
	got, err := decodeCall([]byte(c.ID), []byte(want))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("decoded record:\n got %+v\nwant %+v", got, c)
	}
}

// TestCallRecordMedia pins the JSON of each side's media in a call record
// and keeps it through the store: a record without it (every record
// before it was kept) reads as no media.
func TestCallRecordMedia(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		c := ringingCall("m", "c", 0)
		c.CallerMedia = signaling.Media{StreamMetadata: []byte(`{"s":{"purpose":"m.usermedia","audio_muted":true}}`),
			Capabilities: []byte(`{"m.call.dtmf":false}`)}
		c.AnswererMedia = signaling.Media{StreamMetadata: []byte(`{"t":{"purpose":"m.screenshare"}}`)}
		raw, err := encode(recordOf(c))
		if err != nil {
			t.Fatal(err)
		}
		const want = `"caller_media":{"sdp_stream_metadata":{"s":{"purpose":"m.usermedia","audio_muted":true}},` +
			`"capabilities":{"m.call.dtmf":false}},"answerer_media":{"sdp_stream_metadata":{"t":{"purpose":"m.screenshare"}}}}`
		if !strings.HasSuffix(string(raw), want) {
			t.Errorf("record with media:\n got %s\nwant it to end with %s", raw, want)
		}
		s := d.open(t, t.TempDir())
		mustCreate(t, s, c)
		got, err := s.Call(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.CallerMedia, c.CallerMedia) || !reflect.DeepEqual(got.AnswererMedia, c.AnswererMedia) {
			t.Errorf("stored media: caller %s %s, answerer %s %s", got.CallerMedia.StreamMetadata, got.CallerMedia.Capabilities,
				got.AnswererMedia.StreamMetadata, got.AnswererMedia.Capabilities)
		}
		old, err := decodeCall([]byte("k"), []byte(`{"id":"k","conversation_id":"c","initiator":"a","party_id":"p","status":"ringing","lifetime_ms":1,"version":"1","created_at":"2026-01-02T03:04:05Z"}`))
		if err != nil || old.CallerMedia.StreamMetadata != nil || old.AnswererMedia.Capabilities != nil {
			t.Errorf("record without media: %+v, %v", old, err)
		}
	})
}

// TestCallRecordProtocol: a bridged call's protocol is kept (the record's
// "protocol"); a record without it, as every file before MatrixRTC calls
// has them, reads as a legacy call.
func TestCallRecordProtocol(t *testing.T) {
	c := signaling.Call{ID: "k", ConversationID: "c", Initiator: "alice", PartyID: "p", Status: signaling.StatusRinging,
		Protocol: signaling.CallProtocolMatrixRTC}
	raw, err := encode(recordOf(c))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"protocol":"matrixrtc"`) {
		t.Fatalf("record %s lacks the protocol", raw)
	}
	got, err := decodeCall([]byte("k"), raw)
	if err != nil || got.Protocol != signaling.CallProtocolMatrixRTC || !got.Bridged() {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	old, err := decodeCall([]byte("k"), []byte(`{"id":"k","conversation_id":"c","initiator":"alice","party_id":"p","status":"ringing","lifetime_ms":60000,"version":"1","created_at":"2026-01-02T03:04:05Z"}`))
	if err != nil || old.Protocol != "" || old.Bridged() || old.ProtocolName() != signaling.CallProtocolLegacy {
		t.Fatalf("an old record: %+v, %v; want a legacy call", old, err)
	}
}
