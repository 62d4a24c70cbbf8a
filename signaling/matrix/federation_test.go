package matrix_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// The call scenarios across homeservers: icebox's service user lives on
// one Dendrite, bob on another, and every event between them crosses
// federation (TLS from a test CA, matrixtest.StartFederation). The worlds
// are the single-homeserver tests' inWorld and e2eeWorld with bob moved to
// the second homeserver (newInWorldOn, newE2EEWorldOn), and the scenarios
// are the same bodies the single-homeserver tests run (renegotiation,
// rejectLeaveKick, answeredElsewhere, e2eeRenegotiation), with checks of
// their own around them in the spirit of TestInboundCallFromMatrix,
// TestInboundAnswerFromMatrix and testE2EEOutboundCall; plus what only
// federation makes interesting: bob's homeserver never stores a call event
// in plaintext, invite expiry on both sides and renegotiations that cross
// in flight.

// fedTimeout bounds the wait for one event to cross federation. Delivery
// takes tens of milliseconds; a federation send that failed is retried by
// Dendrite after seconds of backoff, which must still fit.
const fedTimeout = 30 * time.Second

// newFedInWorld is newInWorld with bob on the second homeserver of a
// federation: the conversation's room is created on the service user's
// homeserver, bob is invited and joins over federation. The bridge runs.
func newFedInWorld(t *testing.T) *inWorld {
	t.Helper()
	begin := time.Now()
	fed := matrixtest.StartFederation(t, 2)
	w := newInWorldOn(t, fed.Homeservers[0], fed.Homeservers[1], fedTimeout, inOptions{})
	w.start(t, w.b)
	t.Logf("federated setup (two Dendrites, users, bridge, room, bob's join over federation) took %v", time.Since(begin).Round(time.Millisecond))
	return w
}

// TestFederationCall: a plain room across homeservers. bob calls; the
// invite rings for alice, her answer, candidates both ways (every field)
// and bob's hangup cross federation. Then alice calls; bob's answer is
// selected over his second device's, and her hangup reaches him. Then bob
// calls and his client selects another party: answered elsewhere. Every
// call's credentials are revoked at its end.
func TestFederationCall(t *testing.T) {
	w := newFedInWorld(t)
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id
	since := w.since

	begin := time.Now()
	w.send(t, w.bob, "m.call.invite", invite("bob.fed~1", "bobdev", "1", 60000))
	inv := w.waitPublished(t, signaling.EventCallInviteViaMatrix, "bob.fed~1", 1)[0].Payload.(signaling.InvitePayload)
	t.Logf("bob's invite rang for alice %v after he sent it", time.Since(begin).Round(time.Millisecond))
	if inv.SDPOffer != offerSDP || inv.InitiatorID != w.bob.id || inv.PartyID != "bobdev" {
		t.Errorf("CallInviteViaMatrix = %+v; want bob's offer from %s/bobdev", inv, w.bob.id)
	}
	if _, err := w.calls.Answer(ctx, "alice", "bob.fed~1", signaling.AnswerRequest{SDPAnswer: msidAnswerSDP}); err != nil {
		t.Fatal(err)
	}
	evs, since := w.bob.callEvents(t, since, room, fedTimeout, fromIcebox(svc, "m.call.answer"))
	if ans := lastFrom(t, evs, svc, "m.call.answer"); ans["call_id"] != "bob.fed~1" || ans["party_id"] != signaling.PartyIDFor("alice") ||
		ans["answer"].(map[string]any)["sdp"] != msidAnswerSDP {
		t.Errorf("bob saw the answer %v", ans)
	}

	w.send(t, w.bob, "m.call.candidates", json.RawMessage(`{"call_id":"bob.fed~1","party_id":"bobdev","version":"1","candidates":[`+
		`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"bobuf"},`+
		`{"candidate":""}]}`))
	cs := w.waitPublished(t, signaling.EventCallCandidatesViaMatrix, "bob.fed~1", 1)[0].Payload.(signaling.CandidatesPayload)
	if raw, _ := json.Marshal(cs.Candidates); string(raw) !=
		`[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"bobuf"},{"candidate":""}]` {
		t.Errorf("bob's candidates reached alice as %s", raw)
	}
	if err := w.calls.Candidates(ctx, "alice", "bob.fed~1", signaling.CandidatesRequest{Candidates: testCandidates}); err != nil {
		t.Fatal(err)
	}
	evs, since = w.bob.callEvents(t, since, room, fedTimeout, fromIcebox(svc, "m.call.candidates"))
	var cc struct {
		Candidates []signaling.Candidate `json:"candidates"`
	}
	raw, _ := json.Marshal(lastFrom(t, evs, svc, "m.call.candidates"))
	if err := json.Unmarshal(raw, &cc); err != nil || !reflect.DeepEqual(cc.Candidates, testCandidates) {
		t.Errorf("alice's candidates reached bob as %+v (%v)", cc.Candidates, err)
	}

	w.send(t, w.bob, "m.call.hangup", with(base("bob.fed~1", "bobdev"), "reason", "user_hangup"))
	waitFor(t, fedTimeout, "bob's hangup", func() bool {
		c, _ := w.call(t, "bob.fed~1")
		return c.Status == signaling.StatusEnded
	}, w.b.logs.String)
	if c, _ := w.call(t, "bob.fed~1"); c.EndedBy != w.bob.id || c.Answerer != "alice" || !revoked(t, w.st, c.ID) {
		t.Errorf("call = %+v; want answered by alice, ended by %s, credentials revoked", c, w.bob.id)
	}

	// alice calls bob, then bob calls and selects another party.
	answeredElsewhere(t, w, since, w.bob.id)
	if got := totals(t, w.b); got["error"]+got["invalid"] != 0 {
		t.Errorf("results = %v; want nothing invalid or failed", got)
	}
	checkNoSecretsLogged(t, w.b.logs.String(), w.svc.token)
}

// TestFederationRenegotiation: renegotiation across homeservers, with a
// 255-character call_id; then bob's hangup, and nothing was invalid or
// failed.
func TestFederationRenegotiation(t *testing.T) {
	w := newFedInWorld(t)
	renegotiation(t, w, opaqueID)
	w.send(t, w.bob, "m.call.hangup", with(base(opaqueID, "bobdev"), "reason", "user_hangup"))
	waitInbound(t, w.b, "m.call.hangup", "ok", 1)
	if got := inbound(t, w.b, "m.call.negotiate", "ok"); got != 2 {
		t.Errorf("negotiate ok = %v, want 2", got)
	}
	if got := totals(t, w.b); got["error"]+got["invalid"] != 0 {
		t.Errorf("results = %v; want nothing invalid or failed", got)
	}
}

// TestFederationRejectLeave: rejectLeaveKick across homeservers.
func TestFederationRejectLeave(t *testing.T) {
	rejectLeaveKick(t, newFedInWorld(t))
}

// newFedE2EEWorld is newE2EEWorld with bob, and his encrypting client, on
// the second homeserver of a federation. w.hs is the service user's
// homeserver; bob's own is returned too (e2eeWorld's sendRaw and stored
// read w.hs with bob's token, so they are not for this world).
func newFedE2EEWorld(t *testing.T) (*e2eeWorld, *matrixtest.Homeserver) {
	t.Helper()
	begin := time.Now()
	fed := matrixtest.StartFederation(t, 2)
	w := newE2EEWorldOn(t, fed.Homeservers[0], fed.Homeservers[1], fedTimeout, true)
	t.Logf("federated setup (two Dendrites, bob's device, encrypted bridge, room, join over federation) took %v", time.Since(begin).Round(time.Millisecond))
	return w, fed.Homeservers[1]
}

// TestFederationE2EE: an encrypted room across homeservers. alice's call
// reaches bob encrypted and his encrypted answer is selected; her hangup
// reaches him. Declines both ways (his reject ends her call as rejected,
// hers reaches him as m.call.reject). bob's encrypted call rings, alice answers; renegotiation
// both ways, a metadata change and whole candidates cross federation
// encrypted; bob's leave ends the call. bob's homeserver only ever has the
// call events as m.room.encrypted, and nothing is undecryptable.
func TestFederationE2EE(t *testing.T) {
	w, remote := newFedE2EEWorld(t)
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()

	// alice calls bob.
	sent := time.Now()
	c, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	if inv := contentOf(t, w.bob.WaitEvent(t, room, isCall("m.call.invite", c.ID), fedTimeout)); inv.Offer.SDP != offerSDP || inv.Invitee != w.bob.UserID() {
		t.Errorf("bob's decrypted invite = %+v", inv)
	}
	t.Logf("alice's encrypted invite reached bob across federation in %v", time.Since(sent).Round(time.Millisecond))
	w.bob.Send(t, room, "m.call.answer", json.RawMessage(`{"call_id":"`+c.ID+`","party_id":"bobdev","version":"1","answer":{"type":"answer","sdp":"`+bobSDP+`"}}`))
	waitFor(t, fedTimeout, "bob's encrypted answer", func() bool {
		got, _ := w.call(t, c.ID)
		return got.Status == signaling.StatusAnswered && got.AnswerPartyID == "bobdev" && got.SDPAnswer == bobSDP
	}, b.logs.String)
	w.bob.WaitEvent(t, room, isCall("m.call.select_answer", c.ID), fedTimeout)
	if _, err := b.calls.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.hangup", c.ID), fedTimeout)

	// Declines both ways, encrypted.
	declined, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatal(err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.invite", declined.ID), fedTimeout)
	w.bob.Send(t, room, "m.call.reject", json.RawMessage(`{"call_id":"`+declined.ID+`","party_id":"bobdev","version":"1"}`))
	waitFor(t, fedTimeout, "bob's encrypted reject", func() bool {
		got, _ := w.call(t, declined.ID)
		return got.Status == signaling.StatusRejected && got.EndedBy == w.bob.UserID()
	}, b.logs.String)
	w.bob.Send(t, room, "m.call.invite", bobInvite("bob.fed.declined"))
	w.published(t, signaling.EventCallInviteViaMatrix, "bob.fed.declined", 1)
	if _, err := b.calls.Reject(ctx, "alice", "bob.fed.declined", signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	if rej := w.bob.WaitEvent(t, room, isCall("m.call.reject", "bob.fed.declined"), fedTimeout); rej.Sender != w.svcID {
		t.Errorf("the reject of bob's call came from %s", rej.Sender)
	}

	// bob calls alice: renegotiation, metadata, candidates, his leave.
	const callID = "bob.fed.e2ee~call"
	e2eeRenegotiation(t, w, callID)

	var all []matrixtest.Event
	for _, id := range []string{c.ID, declined.ID, "bob.fed.declined", callID} {
		all = append(all, callEventsOf(w.bob, room, id)...)
	}
	for _, ev := range all {
		if !ev.Encrypted {
			t.Errorf("bob received the %s %s unencrypted", ev.Type, ev.ID)
		}
	}
	// What bob's homeserver stores of the room: no call event in plaintext.
	for _, raw := range remote.RoomMessages(t, w.bobToken, room) {
		var ev struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(ev.Type, "m.call.") {
			t.Errorf("bob's homeserver has a %s in plaintext", ev.Type)
		}
	}
	if got := totals(t, b.testBridge); got["invalid"]+got["error"] != 0 {
		t.Errorf("results = %v; want nothing invalid or failed", got)
	}
	w.checkClean(t, b.testBridge)
}

// TestFederationInviteExpiry: invite expiry on either side of federation,
// one call after the other (two invites ringing at once in one room would
// be glare). alice's invite with the shortest lifetime icebox allows (5 s)
// reaches bob with that lifetime and, unanswered, ends with an
// m.call.hangup (invite_timeout) that reaches him too. bob's invite with a
// 5 s lifetime rings for alice for what is left of it after crossing
// federation, then expires. Both calls' credentials are revoked.
func TestFederationInviteExpiry(t *testing.T) {
	w := newFedInWorld(t)
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id
	expired := func(id string) {
		t.Helper()
		waitFor(t, fedTimeout, id+" expired", func() bool {
			got, _ := w.call(t, id)
			return got.Status == signaling.StatusExpired
		}, w.b.logs.String)
		if got, _ := w.call(t, id); got.EndReason != signaling.ReasonInviteTimeout || !revoked(t, w.st, id) {
			t.Errorf("call %s ended %s, credentials revoked %v; want invite_timeout, revoked", id, got.EndReason, revoked(t, w.st, id))
		}
	}

	c, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.id, LifetimeMS: 5000})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := w.bob.callEvents(t, w.since, room, fedTimeout, fromIcebox(svc, "m.call.hangup"))
	if inv := lastFrom(t, evs, svc, "m.call.invite"); inv["call_id"] != c.ID || inv["lifetime"] != float64(5000) {
		t.Errorf("bob saw the invite %v; want call %s with a lifetime of 5000", inv, c.ID)
	}
	if h := lastFrom(t, evs, svc, "m.call.hangup"); h["call_id"] != c.ID || h["reason"] != signaling.ReasonInviteTimeout {
		t.Errorf("bob saw the hangup %v; want invite_timeout for %s", h, c.ID)
	}
	expired(c.ID)

	w.send(t, w.bob, "m.call.invite", invite("bob.expires", "bobdev", "1", 5000))
	w.waitPublished(t, signaling.EventCallInviteViaMatrix, "bob.expires", 1)
	if got, _ := w.call(t, "bob.expires"); got.Status != signaling.StatusRinging || got.LifetimeMS > 5000 || got.LifetimeMS < 3000 {
		t.Errorf("bob's call rings as %s for %d ms; want ringing for a little under 5000", got.Status, got.LifetimeMS)
	}
	expired("bob.expires")
}

// TestFederationNegotiationGlare: crossing renegotiations across
// homeservers, in bob's call (bob the caller, alice the polite callee).
// alice's offer and bob's cross in flight: bob's wins, reaches alice, and
// her answer to it reaches him, while his answer to her dropped offer is
// ignored. With bob's offer pending, alice's own is refused
// (negotiation_glare) and nothing goes to Matrix.
func TestFederationNegotiationGlare(t *testing.T) {
	w := newFedInWorld(t)
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id
	const id = "bob.glare"
	offer := func(sdp string) signaling.NegotiateRequest {
		return signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: sdp}}
	}
	negotiate := func(typ, sdp string) map[string]any {
		return with(base(id, "bobdev"), "lifetime", 60000, "description", map[string]any{"type": typ, "sdp": sdp})
	}

	w.bobCallsAliceAnswers(t, id)
	// alice's offer goes out; bob's is sent before he has seen it.
	if err := w.calls.Negotiate(ctx, "alice", id, offer("v=0 alice offers")); err != nil {
		t.Fatal(err)
	}
	w.send(t, w.bob, "m.call.negotiate", negotiate("offer", "v=0 bob offers"))
	if p := w.waitPublished(t, signaling.EventCallNegotiateViaMatrix, id, 1)[0].Payload.(signaling.NegotiatePayload); p.Description.SDP != "v=0 bob offers" {
		t.Errorf("CallNegotiateViaMatrix = %+v; want bob's offer, the caller's", p)
	}
	if c, _ := w.call(t, id); c.OfferParty != "bobdev" {
		t.Errorf("pending offer of %q, want bob's", c.OfferParty)
	}
	if err := w.calls.Negotiate(ctx, "alice", id, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "answer", SDP: "v=0 alice answers"}}); err != nil {
		t.Fatal(err)
	}
	evs, _ := w.bob.callEvents(t, w.since, room, fedTimeout, negotiateFromIcebox(svc, "answer"))
	var sdps []string
	for _, ev := range evs {
		var c struct{ Description struct{ SDP string } }
		if ev.Type == "m.call.negotiate" && ev.Sender == svc && json.Unmarshal(ev.Content, &c) == nil {
			sdps = append(sdps, c.Description.SDP)
		}
	}
	if !reflect.DeepEqual(sdps, []string{"v=0 alice offers", "v=0 alice answers"}) {
		t.Errorf("bob saw alice's negotiates %q; want her dropped offer, then her answer to his", sdps)
	}
	// bob's client, impolite, would not answer her offer; if an answer to it
	// came anyway, it answers nothing now.
	w.send(t, w.bob, "m.call.negotiate", negotiate("answer", "v=0 bob answers the dropped offer"))
	waitInbound(t, w.b, "m.call.negotiate", "ignored", 1)

	// bob's offer pending: alice's own is refused.
	w.send(t, w.bob, "m.call.negotiate", negotiate("offer", "v=0 bob again"))
	w.waitPublished(t, signaling.EventCallNegotiateViaMatrix, id, 2)
	var te *signaling.TransitionError
	if err := w.calls.Negotiate(ctx, "alice", id, offer("v=0 alice again")); !errors.As(err, &te) || te.Code != "negotiation_glare" {
		t.Errorf("alice's offer over bob's pending one: %v; want negotiation_glare", err)
	}
	if got := inbound(t, w.b, "m.call.negotiate", "ok"); got != 2 {
		t.Errorf("negotiate ok = %v, want bob's two offers", got)
	}
}
