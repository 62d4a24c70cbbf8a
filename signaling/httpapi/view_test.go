package httpapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestCallViewJSON pins the API's JSON of a call: the names clients read,
// whatever the domain or the store call them.
func TestCallViewJSON(t *testing.T) {
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
	const call = `{"id":"k","conversation_id":"c","room_id":"!r:x","initiator":"alice","invitee":"bob",` +
		`"party_id":"p1","status":"ended","sdp_offer":"o","sdp_answer":"a","answerer":"bob",` +
		`"answer_party_id":"p2","lifetime_ms":60000,"version":"1","protocol":"legacy","created_at":"2026-01-02T03:04:05Z",` +
		`"answered_at":"2026-01-02T03:04:06Z","ended_at":"2026-01-02T03:04:07Z","end_reason":"user_hangup",` +
		`"ended_by":"alice","matrix_invite_event_id":"$e","matrix_party_id":"m","revoked_until":"2026-01-03T03:05:07Z"`
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"view", viewOf(c), call + `}`},
		{"response", callResponse{callView: viewOf(c), Matrix: matrixOf(c)},
			call + `,"matrix":{"event_id":"$e","party_id":"p1","room_id":"!r:x"}}`},
		{"minimal", viewOf(signaling.Call{ID: "k", ConversationID: "c", PartyID: "p", Status: signaling.StatusRinging}),
			`{"id":"k","conversation_id":"c","initiator":"","party_id":"p","status":"ringing","lifetime_ms":0,"version":"","protocol":"legacy","created_at":"0001-01-01T00:00:00Z"}`},
	} {
		got, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}
