package matrix_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

func ptr[T any](v T) *T { return &v }

var encodeCall = signaling.Call{
	ID:             "call-1",
	ConversationID: "conv-1",
	RoomID:         "!room:localhost",
	Initiator:      "alice",
	PartyID:        "iceboxalice",
	LifetimeMS:     60000,
	Status:         signaling.StatusRinging,
	Version:        "1",
}

// TestEncode checks the content of every event type, byte for byte after
// key sorting: version is the string "1", invitee is there when set, the
// end-of-candidates marker is exactly {"candidate":""}.
func TestEncode(t *testing.T) {
	tests := []struct {
		name     string
		ev       signaling.Event
		wantType string
		want     string
	}{
		{
			name: "invite",
			ev: signaling.Event{Type: signaling.EventCallInvite, Payload: signaling.InvitePayload{
				Type: signaling.EventCallInvite, CallID: "call-1", PartyID: "iceboxalice", SDPOffer: "v=0 offer", LifetimeMS: 45000,
			}},
			wantType: "m.call.invite",
			want:     `{"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"lifetime":45000,"offer":{"sdp":"v=0 offer","type":"offer"},"party_id":"iceboxalice","version":"1"}`,
		},
		{
			name: "invite with invitee, by pointer, lifetime from the call",
			ev: signaling.Event{Type: signaling.EventCallInvite, Payload: &signaling.InvitePayload{
				PartyID: "iceboxalice", SDPOffer: "v=0", Invitee: "@bob:localhost",
			}},
			wantType: "m.call.invite",
			want:     `{"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"invitee":"@bob:localhost","lifetime":60000,"offer":{"sdp":"v=0","type":"offer"},"party_id":"iceboxalice","version":"1"}`,
		},
		{
			name:     "answer",
			ev:       signaling.Event{Type: signaling.EventCallAnswer, Payload: signaling.AnswerPayload{PartyID: "iceboxbob", SDPAnswer: "v=0 answer"}},
			wantType: "m.call.answer",
			want:     `{"answer":{"sdp":"v=0 answer","type":"answer"},"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"party_id":"iceboxbob","version":"1"}`,
		},
		{
			name: "candidates with end of candidates",
			ev: signaling.Event{Type: signaling.EventCallCandidates, Payload: signaling.CandidatesPayload{PartyID: "iceboxalice", Candidates: []signaling.Candidate{
				{Candidate: "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)},
				{Candidate: "candidate:2 1 udp 1686052607 198.51.100.7 40000 typ srflx", SDPMid: ptr("1")},
				{Candidate: "", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)}, // end of candidates for m-line 0: passed whole
				{Candidate: ""}, // end of candidates as matrix-js-sdk sends it
			}}},
			wantType: "m.call.candidates",
			want: `{"call_id":"call-1","candidates":[` +
				`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMLineIndex":0,"sdpMid":"0"},` +
				`{"candidate":"candidate:2 1 udp 1686052607 198.51.100.7 40000 typ srflx","sdpMid":"1"},` +
				`{"candidate":"","sdpMLineIndex":0,"sdpMid":"0"},{"candidate":""}],"party_id":"iceboxalice","version":"1"}`,
		},
		{
			name:     "select answer",
			ev:       signaling.Event{Type: signaling.EventCallSelectAnswer, Payload: signaling.SelectAnswerPayload{PartyID: "iceboxalice", SelectedPartyID: "iceboxbob"}},
			wantType: "m.call.select_answer",
			want:     `{"call_id":"call-1","party_id":"iceboxalice","selected_party_id":"iceboxbob","version":"1"}`,
		},
		{
			name: "negotiate",
			ev: signaling.Event{Type: signaling.EventCallNegotiate, Payload: signaling.NegotiatePayload{
				PartyID: "iceboxbob", Description: signaling.SessionDescription{Type: "offer", SDP: "v=0 renegotiate"}, LifetimeMS: 30000,
			}},
			wantType: "m.call.negotiate",
			want:     `{"call_id":"call-1","description":{"sdp":"v=0 renegotiate","type":"offer"},"lifetime":30000,"party_id":"iceboxbob","version":"1"}`,
		},
		{
			name: "negotiate without lifetime takes the call's",
			ev: signaling.Event{Type: signaling.EventCallNegotiate, Payload: signaling.NegotiatePayload{
				PartyID: "iceboxbob", Description: signaling.SessionDescription{Type: "answer", SDP: "v=0"},
			}},
			wantType: "m.call.negotiate",
			want:     `{"call_id":"call-1","description":{"sdp":"v=0","type":"answer"},"lifetime":60000,"party_id":"iceboxbob","version":"1"}`,
		},
		{
			name:     "reject",
			ev:       signaling.Event{Type: signaling.EventCallRejected, Payload: signaling.EndPayload{PartyID: "iceboxbob", Reason: signaling.ReasonRejected}},
			wantType: "m.call.reject",
			want:     `{"call_id":"call-1","party_id":"iceboxbob","version":"1"}`,
		},
		{
			name:     "hangup",
			ev:       signaling.Event{Type: signaling.EventCallHangup, Payload: signaling.EndPayload{PartyID: "iceboxbob", Reason: signaling.ReasonUserHangup}},
			wantType: "m.call.hangup",
			want:     `{"call_id":"call-1","party_id":"iceboxbob","reason":"user_hangup","version":"1"}`,
		},
		{
			name:     "hangup with a client reason outside the spec's list is passed through",
			ev:       signaling.Event{Type: signaling.EventCallHangup, Payload: signaling.EndPayload{PartyID: "iceboxbob", Reason: "answered_elsewhere"}},
			wantType: "m.call.hangup",
			want:     `{"call_id":"call-1","party_id":"iceboxbob","reason":"answered_elsewhere","version":"1"}`,
		},
		{
			name:     "expiry: invite_timeout from the caller's party",
			ev:       signaling.Event{Type: signaling.EventCallHangup, Payload: signaling.EndPayload{Reason: signaling.ReasonInviteTimeout, Status: signaling.StatusExpired}},
			wantType: "m.call.hangup",
			want:     `{"call_id":"call-1","party_id":"iceboxalice","reason":"invite_timeout","version":"1"}`,
		},
		{
			name:     "admin revoke: user_hangup from the caller's party",
			ev:       signaling.Event{Type: signaling.EventCallHangup, Payload: signaling.EndPayload{Reason: signaling.ReasonRevoked, Status: signaling.StatusEnded}},
			wantType: "m.call.hangup",
			want:     `{"call_id":"call-1","party_id":"iceboxalice","reason":"user_hangup","version":"1"}`,
		},
		{
			name: "invite without metadata: derived from the SDP's a=msid streams, default capabilities",
			ev: signaling.Event{Type: signaling.EventCallInvite, Payload: signaling.InvitePayload{
				PartyID: "iceboxalice", SDPOffer: msidSDP, LifetimeMS: 60000,
			}},
			wantType: "m.call.invite",
			want: `{"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"lifetime":60000,` +
				`"offer":{"sdp":` + jsonString(msidSDP) + `,"type":"offer"},"party_id":"iceboxalice",` +
				`"sdp_stream_metadata":{"screen":{"audio_muted":false,"purpose":"m.usermedia","video_muted":false},` +
				`"stream1":{"audio_muted":false,"purpose":"m.usermedia","video_muted":false}},"version":"1"}`,
		},
		{
			name: "answer with the client's own metadata and capabilities, unchanged",
			ev: signaling.Event{Type: signaling.EventCallAnswer, Payload: signaling.AnswerPayload{
				PartyID: "iceboxbob", SDPAnswer: msidSDP, Media: signaling.Media{
					StreamMetadata: json.RawMessage(`{"screen":{"purpose":"m.screenshare","x-extra":[1]}}`),
					Capabilities:   json.RawMessage(`{"m.call.dtmf":true}`),
				},
			}},
			wantType: "m.call.answer",
			want: `{"answer":{"sdp":` + jsonString(msidSDP) + `,"type":"answer"},"call_id":"call-1","capabilities":{"m.call.dtmf":true},` +
				`"party_id":"iceboxbob","sdp_stream_metadata":{"screen":{"purpose":"m.screenshare","x-extra":[1]}},"version":"1"}`,
		},
		{
			name: "negotiate without metadata: derived, no capabilities",
			ev: signaling.Event{Type: signaling.EventCallNegotiate, Payload: signaling.NegotiatePayload{
				PartyID: "iceboxbob", Description: signaling.SessionDescription{Type: "offer", SDP: msidSDP}, LifetimeMS: 60000,
			}},
			wantType: "m.call.negotiate",
			want: `{"call_id":"call-1","description":{"sdp":` + jsonString(msidSDP) + `,"type":"offer"},"lifetime":60000,"party_id":"iceboxbob",` +
				`"sdp_stream_metadata":{"screen":{"audio_muted":false,"purpose":"m.usermedia","video_muted":false},` +
				`"stream1":{"audio_muted":false,"purpose":"m.usermedia","video_muted":false}},"version":"1"}`,
		},
		{
			name: "stream metadata changed",
			ev: signaling.Event{Type: signaling.EventCallStreamMetadataChanged, Payload: signaling.StreamMetadataPayload{
				PartyID: "iceboxbob", SDPStreamMetadata: json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":true}}`),
			}},
			wantType: "m.call.sdp_stream_metadata_changed",
			want:     `{"call_id":"call-1","party_id":"iceboxbob","sdp_stream_metadata":{"s":{"audio_muted":true,"purpose":"m.usermedia"}},"version":"1"}`,
		},
		{
			name: "candidates passed whole, usernameFragment included",
			ev: signaling.Event{Type: signaling.EventCallCandidates, Payload: signaling.CandidatesPayload{PartyID: "iceboxalice", Candidates: []signaling.Candidate{
				{Candidate: "candidate:1 1 udp 1 192.0.2.1 1 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr(0), UsernameFragment: ptr("uf2")},
				{Candidate: "", SDPMid: ptr("0"), UsernameFragment: ptr("uf2")},
			}}},
			wantType: "m.call.candidates",
			want: `{"call_id":"call-1","candidates":[{"candidate":"candidate:1 1 udp 1 192.0.2.1 1 typ host","sdpMLineIndex":0,"sdpMid":"0","usernameFragment":"uf2"},` +
				`{"candidate":"","sdpMid":"0","usernameFragment":"uf2"}],"party_id":"iceboxalice","version":"1"}`,
		},
		{
			name:     "hangup without reason",
			ev:       signaling.Event{Type: signaling.EventCallHangup, Payload: signaling.EndPayload{PartyID: "iceboxbob"}},
			wantType: "m.call.hangup",
			want:     `{"call_id":"call-1","party_id":"iceboxbob","reason":"user_hangup","version":"1"}`,
		},
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	enc := matrix.NewTestEncoder(func() time.Time { return now })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := enc.Encode(tt.ev, encodeCall)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if len(got) != 1 {
				t.Fatalf("Encode returned %d entries, want 1", len(got))
			}
			e := got[0]
			if e.EventType != tt.wantType {
				t.Errorf("EventType = %q, want %q", e.EventType, tt.wantType)
			}
			if g := canonical(t, e.Content); g != tt.want {
				t.Errorf("content\n got %s\nwant %s", g, tt.want)
			}
			if e.CallID != encodeCall.ID || e.RoomID != encodeCall.RoomID {
				t.Errorf("CallID, RoomID = %q, %q, want %q, %q", e.CallID, e.RoomID, encodeCall.ID, encodeCall.RoomID)
			}
			if !e.CreatedAt.Equal(now) || e.Seq != 0 || e.Attempts != 0 || !e.NextAttempt.IsZero() {
				t.Errorf("CreatedAt, Seq, Attempts, NextAttempt = %v, %d, %d, %v; want %v, 0, 0, zero", e.CreatedAt, e.Seq, e.Attempts, e.NextAttempt, now)
			}
			if !strings.HasPrefix(e.TxnID, "icebox.") || len(e.TxnID) < 20 {
				t.Errorf("TxnID = %q, want icebox.<uuid>", e.TxnID)
			}
			// The version must be the JSON string "1", never the number.
			if !bytes.Contains(e.Content, []byte(`"version":"1"`)) {
				t.Errorf("content %s has no \"version\":\"1\"", e.Content)
			}
		})
	}
}

// msidSDP has two streams (and a track of no stream, "-").
const msidSDP = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:stream1 track-a\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:stream1 track-v\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:screen track-s\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:- track-x\r\n"

// TestEncodeViaMatrixNothing: no event Matrix caused goes back to Matrix,
// whatever its name.
func TestEncodeViaMatrixNothing(t *testing.T) {
	var enc matrix.Encoder
	for _, typ := range []string{signaling.EventCallNegotiateViaMatrix, signaling.EventCallStreamMetadataChangedViaMatrix,
		signaling.EventCallHangupViaMatrix, signaling.EventCallRejectedViaMatrix, signaling.EventCallSelectAnswerViaMatrix} {
		got, err := enc.Encode(signaling.Event{Type: typ, Payload: signaling.EndPayload{PartyID: "p"}}, encodeCall)
		if err != nil || len(got) != 0 {
			t.Errorf("Encode(%s) = %d entries, %v; want none", typ, len(got), err)
		}
	}
}

// TestEncodeEndOfCandidatesExact keeps the marker byte-exact in the raw
// content (not only after re-encoding).
func TestEncodeEndOfCandidatesExact(t *testing.T) {
	var enc matrix.Encoder // the zero Encoder works
	got, err := enc.Encode(signaling.Event{Type: signaling.EventCallCandidates, Payload: signaling.CandidatesPayload{
		PartyID: "p", Candidates: []signaling.Candidate{{Candidate: ""}},
	}}, encodeCall)
	if err != nil || len(got) != 1 {
		t.Fatalf("Encode = %d entries, %v; want 1, nil", len(got), err)
	}
	if !bytes.Contains(got[0].Content, []byte(`"candidates":[{"candidate":""}]`)) {
		t.Errorf("content %s, want candidates [{\"candidate\":\"\"}] exactly", got[0].Content)
	}
}

// TestEncodeSplitsCandidates: at most 100 candidates per entry.
func TestEncodeSplitsCandidates(t *testing.T) {
	cands := make([]signaling.Candidate, 250)
	for i := range cands {
		cands[i] = signaling.Candidate{Candidate: "candidate:x", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)}
	}
	var enc matrix.Encoder
	got, err := enc.Encode(signaling.Event{Type: signaling.EventCallCandidates, Payload: signaling.CandidatesPayload{PartyID: "p", Candidates: cands}}, encodeCall)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	txns := map[string]bool{}
	for _, e := range got {
		var c struct {
			Candidates []json.RawMessage `json:"candidates"`
		}
		if err := json.Unmarshal(e.Content, &c); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(c.Candidates))
		txns[e.TxnID] = true
	}
	if want := []int{100, 100, 50}; !slices.Equal(sizes, want) {
		t.Errorf("candidates per entry = %v, want %v", sizes, want)
	}
	if len(txns) != len(got) {
		t.Errorf("%d distinct TxnIDs for %d entries, want one each", len(txns), len(got))
	}
}

// TestEncodeNothing: no room, events from Matrix, events with no Matrix
// counterpart.
func TestEncodeNothing(t *testing.T) {
	noRoom := encodeCall
	noRoom.RoomID = ""
	invite := signaling.InvitePayload{PartyID: "p", SDPOffer: "v=0"}
	tests := []struct {
		name string
		ev   signaling.Event
		c    signaling.Call
	}{
		{"no room", signaling.Event{Type: signaling.EventCallInvite, Payload: invite}, noRoom},
		{"invite via Matrix", signaling.Event{Type: signaling.EventCallInviteViaMatrix, Payload: invite}, encodeCall},
		{"answer via Matrix", signaling.Event{Type: signaling.EventCallAnswerViaMatrix, Payload: signaling.AnswerPayload{SDPAnswer: "v=0"}}, encodeCall},
		{"candidates via Matrix", signaling.Event{Type: signaling.EventCallCandidatesVia, Payload: signaling.CandidatesPayload{}}, encodeCall},
		{"hangup via Matrix", signaling.Event{Type: "CallHangupViaMatrix", Payload: signaling.EndPayload{}}, encodeCall},
		{"matrix sent", signaling.Event{Type: signaling.EventCallMatrixSent, Payload: matrix.MatrixSentPayload{}}, encodeCall},
	}
	var enc matrix.Encoder
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := enc.Encode(tt.ev, tt.c)
			if err != nil || got != nil {
				t.Errorf("Encode = %v, %v; want nil, nil", got, err)
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	var enc matrix.Encoder
	noID := encodeCall
	noID.ID = ""
	tests := []struct {
		name string
		ev   signaling.Event
		c    signaling.Call
		want string
	}{
		{"payload of another type", signaling.Event{Type: signaling.EventCallInvite, Payload: map[string]any{}}, encodeCall,
			"matrix: encode CallInvite: unexpected payload map[string]interface {}"},
		{"end payload on answer", signaling.Event{Type: signaling.EventCallAnswer, Payload: signaling.EndPayload{}}, encodeCall,
			"matrix: encode CallAnswer: unexpected EndPayload"},
		{"call without ID", signaling.Event{Type: signaling.EventCallInvite, Payload: signaling.InvitePayload{}}, noID,
			"matrix: encode CallInvite: call has no ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := enc.Encode(tt.ev, tt.c)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Encode error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWakeNeverBlocks(t *testing.T) {
	var enc matrix.Encoder
	enc.Wake() // no sender: nothing happens
	_, b := newTestBridgeNoServer(t)
	out := b.Encoder()
	for range 3 {
		out.Wake() // one pending wake-up; the others are dropped, not blocked
	}
}

// canonical re-encodes JSON with sorted keys (Go sorts map keys).
func canonical(t *testing.T, raw []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
