package matrix_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/store"
)

// SDP and candidate bodies the tests send; none may show up in a log line.
const (
	offerSDP  = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=secret-offer\r\n"
	answerSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=secret-answer\r\n"
)

var testCandidates = []signaling.Candidate{
	{Candidate: "candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)},
	{Candidate: "candidate:2 1 udp 1686052607 198.51.100.2 50002 typ srflx raddr 192.0.2.1 rport 50001", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)},
	{Candidate: "candidate:3 1 udp 41885439 203.0.113.3 50003 typ relay raddr 198.51.100.2 rport 50002", SDPMid: ptr("0"), SDPMLineIndex: ptr(0)},
}

// world is a Dendrite with the service user, a Matrix user bob who joined
// the conversation's room, and a bridge.
type world struct {
	hs    *matrixtest.Homeserver
	svc   matrixUser
	bob   matrixUser
	st    *store.Store
	b     *testBridge
	conv  signaling.Conversation
	since string // bob's sync position after joining
}

// newWorld starts Dendrite and a bridge (through homeserverURL(hs) when
// given, e.g. an outage forwarder), creates the conversation's room with
// EnsureRoom, and has bob join it.
func newWorld(t *testing.T, timing matrix.Timing, cfg matrix.Config, homeserverURL func(*matrixtest.Homeserver) string) *world {
	t.Helper()
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	svcToken, svcDevice := hs.Login(t, svcID, "icebox-password")
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	bobToken, _ := hs.Login(t, bobID, "bob-password")
	w := &world{
		hs:  hs,
		svc: matrixUser{hs.URL(), svcID, svcToken},
		bob: matrixUser{hs.URL(), bobID, bobToken},
		st:  openStore(t),
	}
	cfg.HomeserverURL = hs.URL()
	if homeserverURL != nil {
		cfg.HomeserverURL = homeserverURL(hs)
	}
	cfg.UserID, cfg.AccessToken, cfg.DeviceID, cfg.Store = svcID, svcToken, svcDevice, w.st
	w.b = newBridge(t, cfg, timing)

	// alice and carol are local users; bob is on Matrix; the service user
	// itself is listed to check it does not invite itself.
	conv := signaling.Conversation{ID: "conv-1", Participants: []string{"alice", "carol", bobID, svcID}, CreatedAt: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	room, err := w.b.EnsureRoom(ctx, conv)
	if err != nil {
		t.Fatalf("EnsureRoom: %v", err)
	}
	if !strings.HasPrefix(room, "!") {
		t.Fatalf("EnsureRoom = %q, want a room ID", room)
	}
	again, err := w.b.EnsureRoom(ctx, signaling.Conversation{ID: conv.ID, RoomID: room})
	if err != nil || again != room {
		t.Errorf("EnsureRoom with a room = %q, %v; want %q, nil", again, err, room)
	}
	conv.RoomID = room
	w.conv = conv
	if err := w.st.PutConversation(ctx, conv); err != nil {
		t.Fatal(err)
	}

	// Dendrite delivers the invitation to bob's sync a moment after the
	// room is created (later still on a loaded machine, under -race).
	var first syncResponse
	waitFor(t, 10*time.Second, "bob's invitation to "+room, func() bool {
		first = w.bob.sync(t, "", 0)
		_, ok := first.Rooms.Invite[room]
		return ok
	})
	w.bob.join(t, room)
	w.since = w.bob.sync(t, first.NextBatch, 0).NextBatch
	return w
}

// newCall stores a ringing call from alice in the world's room with its
// invite in the outbox (as the calls service does) and returns it.
func (w *world) newCall(t *testing.T, id string) signaling.Call {
	t.Helper()
	c := signaling.Call{
		ID: id, ConversationID: w.conv.ID, RoomID: w.conv.RoomID,
		Initiator: "alice", PartyID: "iceboxalice", Status: signaling.StatusRinging,
		SDPOffer: offerSDP, LifetimeMS: 60000, Version: "1", CreatedAt: time.Now().UTC(),
	}
	out, err := w.b.Encoder().Encode(signaling.Event{Type: signaling.EventCallInvite, CallID: id, Payload: signaling.InvitePayload{
		Type: signaling.EventCallInvite, CallID: id, ConversationID: c.ConversationID, InitiatorID: "alice",
		PartyID: "iceboxalice", SDPOffer: offerSDP, LifetimeMS: c.LifetimeMS, Status: c.Status,
	}}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.CreateCallOutbox(context.Background(), c, out); err != nil {
		t.Fatal(err)
	}
	w.b.Encoder().Wake()
	return c
}

// appendEvent encodes ev for c and appends it to the outbox.
func (w *world) appendEvent(t *testing.T, c signaling.Call, typ string, payload any) {
	t.Helper()
	out, err := w.b.Encoder().Encode(signaling.Event{Type: typ, CallID: c.ID, Payload: payload}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.AppendOutbox(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	w.b.Encoder().Wake()
}

func candidatesOf(party string, cands ...signaling.Candidate) signaling.CandidatesPayload {
	return signaling.CandidatesPayload{Type: signaling.EventCallCandidates, PartyID: party, Candidates: cands}
}

// TestCallReachesMatrix is the whole outbound path against Dendrite: an
// invite, three candidates and an end-of-candidates, an answer and a hangup
// go through the store's outbox and reach bob in order, with the candidates
// in one event, each event once.
func TestCallReachesMatrix(t *testing.T) {
	begin := time.Now()
	w := newWorld(t, matrix.Timing{}, matrix.Config{}, nil)
	t.Logf("setup (Dendrite, users, room) took %v", time.Since(begin).Round(time.Millisecond))

	c := w.newCall(t, "call-1")
	for _, cand := range testCandidates {
		w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", cand))
	}
	w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", signaling.Candidate{Candidate: ""}))
	w.appendEvent(t, c, signaling.EventCallAnswer, signaling.AnswerPayload{Type: signaling.EventCallAnswer, PartyID: "iceboxcarol", SDPAnswer: answerSDP})
	w.appendEvent(t, c, signaling.EventCallHangup, signaling.EndPayload{Type: signaling.EventCallHangup, PartyID: "iceboxalice", Reason: signaling.ReasonUserHangup})
	if got := depth(t, w.st); got != 7 {
		t.Fatalf("outbox depth = %d, want 7", got)
	}

	sendStart := time.Now()
	w.b.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	inviteID, ok := w.b.WaitInviteSent(ctx, c.ID)
	if !ok {
		t.Fatal("WaitInviteSent: not sent within 15 s")
	}
	t.Logf("invite sent %v after the sender started", time.Since(sendStart).Round(time.Millisecond))

	evs, since := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.hangup"))
	t.Logf("all events seen by bob %v after the sender started", time.Since(sendStart).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	// Nothing more may come: no duplicate from a retry.
	more, _ := w.bob.callEvents(t, since, w.conv.RoomID, 0, func([]roomEvent) bool { return true })
	evs = append(evs, more...)

	if got, want := typesOf(evs), "[m.call.invite m.call.candidates m.call.answer m.call.hangup]"; got != want {
		t.Fatalf("bob saw %s, want %s", got, want)
	}
	if evs[0].EventID != inviteID {
		t.Errorf("invite event ID = %s, WaitInviteSent said %s", evs[0].EventID, inviteID)
	}
	wantContent := []string{
		`{"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"lifetime":60000,"offer":{"sdp":` + jsonString(offerSDP) + `,"type":"offer"},"party_id":"iceboxalice","version":"1"}`,
		`{"call_id":"call-1","candidates":[` +
			`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50001 typ host","sdpMLineIndex":0,"sdpMid":"0"},` +
			`{"candidate":"candidate:2 1 udp 1686052607 198.51.100.2 50002 typ srflx raddr 192.0.2.1 rport 50001","sdpMLineIndex":0,"sdpMid":"0"},` +
			`{"candidate":"candidate:3 1 udp 41885439 203.0.113.3 50003 typ relay raddr 198.51.100.2 rport 50002","sdpMLineIndex":0,"sdpMid":"0"},` +
			`{"candidate":""}],"party_id":"iceboxalice","version":"1"}`,
		`{"answer":{"sdp":` + jsonString(answerSDP) + `,"type":"answer"},"call_id":"call-1","capabilities":{"m.call.dtmf":false,"m.call.transferee":false},"party_id":"iceboxcarol","version":"1"}`,
		`{"call_id":"call-1","party_id":"iceboxalice","reason":"user_hangup","version":"1"}`,
	}
	for i, ev := range evs {
		if ev.Sender != w.svc.id {
			t.Errorf("%s sender = %s, want %s", ev.Type, ev.Sender, w.svc.id)
		}
		if got := canonical(t, ev.Content); got != wantContent[i] {
			t.Errorf("%s content\n got %s\nwant %s", ev.Type, got, wantContent[i])
		}
		var v struct {
			Version json.RawMessage `json:"version"`
		}
		if err := json.Unmarshal(ev.Content, &v); err != nil || string(v.Version) != `"1"` {
			t.Errorf("%s version = %s, want the string \"1\"", ev.Type, v.Version)
		}
	}

	stored, err := w.st.Call(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.MatrixInviteEventID != inviteID {
		t.Errorf("call's MatrixInviteEventID = %q, want %q", stored.MatrixInviteEventID, inviteID)
	}
	// Sent before this wait began: found in the store at once.
	if id, ok := w.b.WaitInviteSent(context.Background(), c.ID); !ok || id != inviteID {
		t.Errorf("WaitInviteSent after the fact = %q, %v; want %q, true", id, ok, inviteID)
	}
	if n := matrix.Waiters(w.b.Bridge); n != 0 {
		t.Errorf("%d WaitInviteSent waiters left registered", n)
	}

	for _, m := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"matrix_voip_invite_sent_total", nil, 1},
		{"matrix_voip_invite_failed_total", nil, 0},
		{"matrix_voip_answer_sent_total", nil, 1},
		{"matrix_voip_ice_candidates_sent_total", nil, 3},
		{"matrix_voip_hangup_sent_total", nil, 1},
		{"icebox_matrix_outbox_depth", nil, 0},
		{"icebox_matrix_outbox_dropped_total", []string{"reason", "expired"}, 0},
		{"icebox_matrix_send_errors_total", []string{"kind", "network"}, 0},
	} {
		if got := metric(t, w.b, m.name, m.labels...); got != m.want {
			t.Errorf("%s%v = %v, want %v", m.name, m.labels, got, m.want)
		}
	}

	pub := w.b.pub.all()
	if len(pub) != 1 || pub[0].Type != signaling.EventCallMatrixSent {
		t.Fatalf("published %+v, want one CallMatrixSent", pub)
	}
	wantPayload := matrix.MatrixSentPayload{
		Type: signaling.EventCallMatrixSent, CallID: c.ID, ConversationID: "conv-1",
		RoomID: w.conv.RoomID, EventID: inviteID, PartyID: "iceboxalice",
	}
	if got := pub[0].Payload; got != wantPayload {
		t.Errorf("CallMatrixSent payload = %+v, want %+v", got, wantPayload)
	}
	if got := strings.Join(pub[0].Recipients, ","); got != "alice" || pub[0].CallID != c.ID || pub[0].ConversationID != "conv-1" {
		t.Errorf("CallMatrixSent to %q (call %q, conversation %q), want alice (call-1, conv-1)", got, pub[0].CallID, pub[0].ConversationID)
	}

	logs := w.b.logs.String()
	if n := strings.Count(logs, `"message":"matrix event sent"`); n != 4 {
		t.Errorf("%d \"matrix event sent\" log lines, want 4 (one per event):\n%s", n, logs)
	}
	checkNoSecretsLogged(t, logs, w.svc.token)
}

// TestCandidatesBatchedWhileRunning: candidates committed one by one, a few
// milliseconds apart, while the sender runs, still go out as one event once
// the batch window has passed; and a lone candidates entry is not held
// longer than the window.
func TestCandidatesBatchedWhileRunning(t *testing.T) {
	const window = 400 * time.Millisecond
	w := newWorld(t, matrix.Timing{}, matrix.Config{BatchWindow: window}, nil)
	w.b.run(t)
	c := w.newCall(t, "call-batch")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, ok := w.b.WaitInviteSent(ctx, c.ID); !ok {
		t.Fatal("invite not sent")
	}

	start := time.Now()
	for _, cand := range testCandidates {
		w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", cand))
		time.Sleep(20 * time.Millisecond) // the pace of a client trickling candidates
	}
	evs, _ := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.candidates"))
	took := time.Since(start)
	waitFor(t, 5*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	if got := typesOf(evs); got != "[m.call.invite m.call.candidates]" {
		t.Fatalf("bob saw %s, want the invite and one candidates event", got)
	}
	var cc struct {
		Candidates []json.RawMessage `json:"candidates"`
	}
	if err := json.Unmarshal(evs[1].Content, &cc); err != nil || len(cc.Candidates) != 3 {
		t.Errorf("candidates event has %d candidates (%v), want 3 in one event", len(cc.Candidates), err)
	}
	if took < window {
		t.Errorf("candidates arrived %v after the first was committed, before the %v window", took, window)
	}
	t.Logf("3 trickled candidates arrived as one event %v after the first (window %v)", took.Round(time.Millisecond), window)
}

// TestHomeserverDown: with the homeserver unreachable, entries stay in the
// outbox (retried, counted, nothing dropped) and WaitInviteSent times out;
// once it is back they arrive in order, each once.
func TestHomeserverDown(t *testing.T) {
	var cut *outage
	w := newWorld(t, matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond},
		matrix.Config{}, func(hs *matrixtest.Homeserver) string {
			cut = newOutage(t, hs.URL())
			return cut.URL()
		})

	cut.setDown(true)
	c := w.newCall(t, "call-down")
	w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", testCandidates[0]))
	w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", signaling.Candidate{}))
	w.appendEvent(t, c, signaling.EventCallHangup, signaling.EndPayload{PartyID: "iceboxalice", Reason: signaling.ReasonUserHangup})
	const entries = 4

	w.b.run(t) // starts while the homeserver is down: the token check waits for it
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, ok := w.b.WaitInviteSent(ctx, c.ID)
	cancel()
	if ok {
		t.Fatal("WaitInviteSent = ok with the homeserver down")
	}
	waitFor(t, 10*time.Second, "3 failed attempts", func() bool {
		return metric(t, w.b, "icebox_matrix_send_errors_total", "kind", "network") >= 3
	})
	if got := depth(t, w.st); got != entries {
		t.Errorf("outbox depth with the homeserver down = %d, want %d (nothing lost)", got, entries)
	}
	pending, err := w.st.PendingOutbox(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if pending[0].EventType != matrix.TypeInvite || pending[0].Attempts < 2 || pending[0].NextAttempt.IsZero() {
		t.Errorf("head entry = %s with %d attempts, next %v; want the invite, retried", pending[0].EventType, pending[0].Attempts, pending[0].NextAttempt)
	}
	for _, e := range pending[1:] {
		if e.Attempts != 0 {
			t.Errorf("%s (seq %d) was tried %d times while the invite before it was not sent", e.EventType, e.Seq, e.Attempts)
		}
	}
	if got := metric(t, w.b, "icebox_matrix_outbox_depth"); got != entries {
		t.Errorf("icebox_matrix_outbox_depth = %v, want %d", got, entries)
	}
	for _, r := range []string{"expired", "invite_expired", "forbidden", "not_found", "bad_request"} {
		if got := metric(t, w.b, "icebox_matrix_outbox_dropped_total", "reason", r); got != 0 {
			t.Errorf("dropped{reason=%s} = %v, want 0", r, got)
		}
	}

	downFor := time.Now()
	cut.setDown(false)
	evs, since := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.hangup"))
	t.Logf("after the homeserver came back, all events arrived in %v", time.Since(downFor).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	more, _ := w.bob.callEvents(t, since, w.conv.RoomID, 0, func([]roomEvent) bool { return true })
	evs = append(evs, more...)
	if got, want := typesOf(evs), "[m.call.invite m.call.candidates m.call.hangup]"; got != want {
		t.Fatalf("bob saw %s, want %s (in order, once each)", got, want)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if id, ok := w.b.WaitInviteSent(ctx, c.ID); !ok || id != evs[0].EventID {
		t.Errorf("WaitInviteSent after recovery = %q, %v; want %q, true", id, ok, evs[0].EventID)
	}
	if got := metric(t, w.b, "matrix_voip_invite_sent_total"); got != 1 {
		t.Errorf("invite_sent = %v, want 1", got)
	}
	logs := w.b.logs.String()
	if !strings.Contains(logs, "homeserver unreachable") {
		t.Errorf("no log line about the unreachable homeserver")
	}
	checkNoSecretsLogged(t, logs, w.svc.token)
}

// TestRefusedEventsDropped: events for a room the service user is not in
// are refused (403) and dropped after 5 attempts, counted; meanwhile
// another call's events go out, even though the refused call's entries
// fill the whole first page of the outbox.
func TestRefusedEventsDropped(t *testing.T) {
	w := newWorld(t, matrix.Timing{MinBackoff: 100 * time.Millisecond, MaxBackoff: 800 * time.Millisecond, PageSize: 2}, matrix.Config{}, nil)
	var bobsRoom struct {
		RoomID string `json:"room_id"`
	}
	api(t, w.hs.URL(), http.MethodPost, "/_matrix/client/v3/createRoom", w.bob.token, map[string]any{"preset": "private_chat"}, &bobsRoom)

	closed := signaling.Call{
		ID: "call-refused", ConversationID: "conv-2", RoomID: bobsRoom.RoomID, Initiator: "alice", PartyID: "iceboxalice",
		Status: signaling.StatusRinging, SDPOffer: offerSDP, LifetimeMS: 60000, Version: "1", CreatedAt: time.Now().UTC(),
	}
	out, err := w.b.Encoder().Encode(signaling.Event{Type: signaling.EventCallInvite, Payload: signaling.InvitePayload{PartyID: "iceboxalice", SDPOffer: offerSDP}}, closed)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.CreateCallOutbox(context.Background(), closed, out); err != nil {
		t.Fatal(err)
	}
	w.appendEvent(t, closed, signaling.EventCallHangup, signaling.EndPayload{PartyID: "iceboxalice"})
	good := w.newCall(t, "call-good")

	w.b.run(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, ok := w.b.WaitInviteSent(ctx, good.ID); !ok {
		t.Fatal("the other call's invite was not sent")
	}
	if got := metric(t, w.b, "icebox_matrix_outbox_dropped_total", "reason", "forbidden"); got != 0 {
		t.Errorf("the refused call was dropped (%v) before the other call's invite went out: calls are not independent", got)
	}
	waitFor(t, 15*time.Second, "both refused entries dropped", func() bool {
		return metric(t, w.b, "icebox_matrix_outbox_dropped_total", "reason", "forbidden") == 2
	})
	if got := depth(t, w.st); got != 0 {
		t.Errorf("outbox depth = %d, want 0", got)
	}
	// 5 attempts for the invite, 5 for the hangup.
	if got := metric(t, w.b, "icebox_matrix_send_errors_total", "kind", "forbidden"); got != 10 {
		t.Errorf("send_errors{kind=forbidden} = %v, want 10", got)
	}
	if got := metric(t, w.b, "matrix_voip_invite_failed_total"); got != 1 {
		t.Errorf("invite_failed = %v, want 1", got)
	}
	if got := metric(t, w.b, "matrix_voip_invite_sent_total"); got != 1 {
		t.Errorf("invite_sent = %v, want 1", got)
	}
	refused, err := w.st.Call(context.Background(), closed.ID)
	if err != nil || refused.MatrixInviteEventID != "" {
		t.Errorf("refused call's MatrixInviteEventID = %q (%v), want none", refused.MatrixInviteEventID, err)
	}
	checkNoSecretsLogged(t, w.b.logs.String(), w.svc.token)
}

// TestRunRefusedToken: a token the homeserver does not know, the token of
// another device, or a URL that is not the client-server API end Run with an
// error naming the homeserver.
func TestRunRefusedToken(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	svc, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	token, dev := hs.Login(t, svc, "icebox-password")
	otherToken, _ := hs.Login(t, svc, "icebox-password")
	tests := []struct {
		name, url, token, device string
		want                     []string
	}{
		{"unknown token", hs.URL(), "not-a-token", "", []string{hs.URL() + " refused the access token of " + svc, "M_UNKNOWN_TOKEN"}},
		{"token of another device", hs.URL(), otherToken, dev, []string{"on " + hs.URL() + ", not " + dev}},
		{"not the API's base URL", hs.URL() + "/matrix", token, dev, []string{hs.URL() + "/matrix failed the access token check", "404"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			b := newBridge(t, matrix.Config{HomeserverURL: tt.url, UserID: svc, AccessToken: tt.token, DeviceID: tt.device, Store: openStore(t)}, matrix.Timing{})
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := b.Run(ctx)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("Run = %v (ctx %v), want an error at once", err, ctx.Err())
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Run error %q does not contain %q", err, s)
				}
			}
			goleak.VerifyNone(t, before) // Run left nothing behind
		})
	}
}

// checkNoSecretsLogged: no SDP, candidate or access token in the logs.
func checkNoSecretsLogged(t *testing.T, logs, token string) {
	t.Helper()
	for _, secret := range []string{"secret-offer", "secret-answer", "typ host", "typ srflx", "typ relay", `"candidate"`, `\"candidate\"`, token} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %q:\n%s", secret, logs)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
