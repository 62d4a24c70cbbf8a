package matrix_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// TestE2EERenegotiation is TestMatrixRenegotiation's core in an encrypted
// room, bob's client encrypting: his invite with metadata, his
// m.call.negotiate offer and metadata change, his candidates with
// usernameFragment reach alice's clients decrypted and whole; her
// negotiate answer and offer reach him encrypted; his leaving the room
// ends the call.
func TestE2EERenegotiation(t *testing.T) {
	w := newE2EEWorld(t, true)
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()
	published := func(typ, id string, n int) []signaling.Event {
		t.Helper()
		var out []signaling.Event
		waitFor(t, e2eeTimeout, typ+" published", func() bool {
			out = out[:0]
			for _, ev := range b.pub.all() {
				if ev.Type == typ && ev.CallID == id {
					out = append(out, ev)
				}
			}
			return len(out) >= n
		}, b.logs.String)
		return out
	}
	fromIcebox := func(typ, descType string) func(matrixtest.Event) bool {
		return func(ev matrixtest.Event) bool {
			var c struct {
				Description struct{ Type string } `json:"description"`
			}
			return ev.Type == typ && ev.Sender == w.svcID && json.Unmarshal(ev.Content, &c) == nil && c.Description.Type == descType
		}
	}

	const callID = "bob.e2ee~call"
	w.bob.Send(t, room, "m.call.invite", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"offer":{"type":"offer","sdp":"`+bobSDP+`"},"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":false}},`+
		`"capabilities":{"m.call.transferee":false,"m.call.dtmf":false}}`))
	inv := published(signaling.EventCallInviteViaMatrix, callID, 1)[0].Payload.(signaling.InvitePayload)
	if inv.StreamMetadata == nil || inv.Capabilities == nil {
		t.Errorf("CallInviteViaMatrix without bob's metadata or capabilities: %+v", inv)
	}
	if _, err := b.calls.Answer(ctx, "alice", callID, signaling.AnswerRequest{SDPAnswer: msidAnswerSDP}); err != nil {
		t.Fatal(err)
	}

	w.bob.Send(t, room, "m.call.negotiate", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"description":{"type":"offer","sdp":"v=0 hold a=sendonly"},"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}}`))
	neg := published(signaling.EventCallNegotiateViaMatrix, callID, 1)[0].Payload.(signaling.NegotiatePayload)
	if neg.Description.SDP != "v=0 hold a=sendonly" || neg.StreamMetadata == nil {
		t.Errorf("CallNegotiateViaMatrix = %+v", neg)
	}
	if err := b.calls.Negotiate(ctx, "alice", callID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "answer", SDP: "v=0 a=recvonly"}}); err != nil {
		t.Fatal(err)
	}
	if ev := w.bob.WaitEvent(t, room, fromIcebox("m.call.negotiate", "answer"), e2eeTimeout); !ev.Encrypted {
		t.Error("alice's negotiate answer reached bob unencrypted")
	}
	if err := b.calls.Negotiate(ctx, "alice", callID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: "v=0 ice-ufrag:new"}}); err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, fromIcebox("m.call.negotiate", "offer"), e2eeTimeout)
	w.bob.Send(t, room, "m.call.negotiate", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"description":{"type":"answer","sdp":"v=0 bob answers"}}`))
	if p := published(signaling.EventCallNegotiateViaMatrix, callID, 2)[1].Payload.(signaling.NegotiatePayload); p.Description.Type != "answer" {
		t.Errorf("bob's encrypted answer reached alice as %+v", p)
	}

	w.bob.Send(t, room, "m.call.sdp_stream_metadata_changed", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1",`+
		`"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true}}}`))
	published(signaling.EventCallStreamMetadataChangedViaMatrix, callID, 1)
	w.bob.Send(t, room, "m.call.candidates", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","candidates":[`+
		`{"candidate":"candidate:1 1 udp 1 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"new"},{"candidate":""}]}`))
	cs := published(signaling.EventCallCandidatesViaMatrix, callID, 1)[0].Payload.(signaling.CandidatesPayload)
	if len(cs.Candidates) != 2 || cs.Candidates[0].UsernameFragment == nil || *cs.Candidates[0].UsernameFragment != "new" ||
		cs.Candidates[1] != (signaling.Candidate{}) {
		t.Errorf("bob's encrypted candidates reached alice as %+v", cs.Candidates)
	}

	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.bob.Client.LeaveRoom(lctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, e2eeTimeout, "the call ended by bob's leave", func() bool {
		c, _ := w.call(t, callID)
		return c.Status == signaling.StatusEnded && c.EndedBy == w.bob.UserID()
	}, b.logs.String)
	if got := totals(t, b.testBridge); got["invalid"]+got["error"] != 0 {
		t.Errorf("results = %v; want nothing invalid or failed", got)
	}
}
