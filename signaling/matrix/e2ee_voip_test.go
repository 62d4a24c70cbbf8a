package matrix_test

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// TestE2EERenegotiation: e2eeRenegotiation on one homeserver; nothing was
// invalid or failed.
func TestE2EERenegotiation(t *testing.T) {
	w := newE2EEWorld(t, true)
	e2eeRenegotiation(t, w, "bob.e2ee~call")
	if got := totals(t, w.cur.testBridge); got["invalid"]+got["error"] != 0 {
		t.Errorf("results = %v; want nothing invalid or failed", got)
	}
}

// e2eeRenegotiation is TestMatrixRenegotiation's core in an encrypted room,
// bob's client encrypting: his invite with metadata rings and alice's
// answer reaches him; his m.call.negotiate offer and metadata change, his
// candidates with usernameFragment reach alice's clients decrypted and
// whole; her negotiate answer and offer and her metadata change reach him
// encrypted; his leaving the room ends the call.
func e2eeRenegotiation(t *testing.T, w *e2eeWorld, callID string) {
	t.Helper()
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()
	fromIcebox := func(typ, descType string) func(matrixtest.Event) bool {
		return func(ev matrixtest.Event) bool {
			var c struct {
				Description struct{ Type string } `json:"description"`
			}
			return ev.Type == typ && ev.Sender == w.svcID && json.Unmarshal(ev.Content, &c) == nil && c.Description.Type == descType
		}
	}

	w.bob.Send(t, room, "m.call.invite", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"offer":{"type":"offer","sdp":"`+bobSDP+`"},"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":false}},`+
		`"capabilities":{"m.call.transferee":false,"m.call.dtmf":false}}`))
	inv := w.published(t, signaling.EventCallInviteViaMatrix, callID, 1)[0].Payload.(signaling.InvitePayload)
	if inv.StreamMetadata == nil || inv.Capabilities == nil {
		t.Errorf("CallInviteViaMatrix without bob's metadata or capabilities: %+v", inv)
	}
	if _, err := b.calls.Answer(ctx, "alice", callID, signaling.AnswerRequest{SDPAnswer: msidAnswerSDP}); err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.answer", callID), w.wait)

	w.bob.Send(t, room, "m.call.negotiate", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"description":{"type":"offer","sdp":"v=0 hold a=sendonly"},"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}}`))
	neg := w.published(t, signaling.EventCallNegotiateViaMatrix, callID, 1)[0].Payload.(signaling.NegotiatePayload)
	if neg.Description.SDP != "v=0 hold a=sendonly" || neg.StreamMetadata == nil {
		t.Errorf("CallNegotiateViaMatrix = %+v", neg)
	}
	if err := b.calls.Negotiate(ctx, "alice", callID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "answer", SDP: "v=0 a=recvonly"}}); err != nil {
		t.Fatal(err)
	}
	if ev := w.bob.WaitEvent(t, room, fromIcebox("m.call.negotiate", "answer"), w.wait); !ev.Encrypted {
		t.Error("alice's negotiate answer reached bob unencrypted")
	}
	if err := b.calls.Negotiate(ctx, "alice", callID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: "v=0 ice-ufrag:new"}}); err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, fromIcebox("m.call.negotiate", "offer"), w.wait)
	w.bob.Send(t, room, "m.call.negotiate", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","lifetime":60000,`+
		`"description":{"type":"answer","sdp":"v=0 bob answers"}}`))
	if p := w.published(t, signaling.EventCallNegotiateViaMatrix, callID, 2)[1].Payload.(signaling.NegotiatePayload); p.Description.Type != "answer" {
		t.Errorf("bob's encrypted answer reached alice as %+v", p)
	}

	w.bob.Send(t, room, "m.call.sdp_stream_metadata_changed", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1",`+
		`"sdp_stream_metadata":{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true}}}`))
	w.published(t, signaling.EventCallStreamMetadataChangedViaMatrix, callID, 1)
	if err := b.calls.MetadataChanged(ctx, "alice", callID, signaling.MetadataChangedRequest{
		SDPStreamMetadata: json.RawMessage(`{"alicestream":{"purpose":"m.usermedia","audio_muted":true,"video_muted":false}}`),
	}); err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.sdp_stream_metadata_changed", callID), w.wait)
	w.bob.Send(t, room, "m.call.candidates", json.RawMessage(`{"call_id":"`+callID+`","party_id":"bobdev","version":"1","candidates":[`+
		`{"candidate":"candidate:1 1 udp 1 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"new"},{"candidate":""}]}`))
	cs := w.published(t, signaling.EventCallCandidatesViaMatrix, callID, 1)[0].Payload.(signaling.CandidatesPayload)
	if len(cs.Candidates) != 2 || cs.Candidates[0].UsernameFragment == nil || *cs.Candidates[0].UsernameFragment != "new" ||
		cs.Candidates[1] != (signaling.Candidate{}) {
		t.Errorf("bob's encrypted candidates reached alice as %+v", cs.Candidates)
	}

	lctx, cancel := context.WithTimeout(ctx, w.wait)
	defer cancel()
	if _, err := w.bob.Client.LeaveRoom(lctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w.wait, "the call ended by bob's leave", func() bool {
		c, _ := w.call(t, callID)
		return c.Status == signaling.StatusEnded && c.EndedBy == w.bob.UserID()
	}, b.logs.String)
}

// published waits until the running bridge's calls service published n
// events of type typ for call id, and returns them.
func (w *e2eeWorld) published(t *testing.T, typ, id string, n int) []signaling.Event {
	t.Helper()
	var out []signaling.Event
	waitFor(t, w.wait, typ+" published", func() bool {
		out = out[:0]
		for _, ev := range w.cur.pub.all() {
			if ev.Type == typ && ev.CallID == id {
				out = append(out, ev)
			}
		}
		return len(out) >= n
	}, w.cur.logs.String)
	return out
}
