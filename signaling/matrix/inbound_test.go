package matrix_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/store"
)

// inWorld is a Dendrite with the service user and a Matrix user bob, a
// real store, a calls service over it, and a bridge that syncs: the
// conversation c1 = {alice (local), bob} has its room, created by the
// bridge through PutConversation, and bob joined it.
type inWorld struct {
	hs    *matrixtest.Homeserver
	svc   matrixUser
	dev   string // the service user's device
	bob   matrixUser
	st    *store.Store
	calls *signaling.Service
	pub   *recorder // what the calls service published
	b     *testBridge
	conv  signaling.Conversation
	since string        // bob's sync position after joining
	wait  time.Duration // bounds the wait for one event to reach the other side
	txn   atomic.Int64
}

// inOptions change newInWorld.
type inOptions struct {
	// wrap replaces the calls service the bridge is given.
	wrap func(*signaling.Service) matrix.InboundCalls
	// homeserverURL is what the bridge connects to (e.g. an outage forwarder).
	homeserverURL func(*matrixtest.Homeserver) string
}

const inConv = "c1"

func newInWorld(t *testing.T, opts inOptions) *inWorld {
	t.Helper()
	hs := matrixtest.StartDendrite(t)
	return newInWorldOn(t, hs, hs, 15*time.Second, opts)
}

// newInWorldOn builds the world with the service user on hs and bob on
// bobHS: hs itself, or a homeserver federating with it. wait bounds each
// wait for an event to reach the other side.
func newInWorldOn(t *testing.T, hs, bobHS *matrixtest.Homeserver, wait time.Duration, opts inOptions) *inWorld {
	t.Helper()
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	svcToken, svcDevice := hs.Login(t, svcID, "icebox-password")
	bobID, _, _ := bobHS.Register(t, "bob", "bob-password", false)
	bobToken, _ := bobHS.Login(t, bobID, "bob-password")
	w := &inWorld{
		hs:   hs,
		svc:  matrixUser{hs.URL(), svcID, svcToken},
		dev:  svcDevice,
		bob:  matrixUser{bobHS.URL(), bobID, bobToken},
		st:   openStore(t),
		pub:  &recorder{},
		wait: wait,
	}
	hsURL := hs.URL()
	if opts.homeserverURL != nil {
		hsURL = opts.homeserverURL(hs)
	}
	w.b = w.newBridge(t, hsURL)
	w.calls = startCalls(t, w.st, w.pub, w.b)
	w.b.SetCalls(w.inbound(opts))

	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	var err error
	if w.conv, err = w.calls.PutConversation(ctx, inConv, []string{"alice", bobID}, ""); err != nil {
		t.Fatalf("PutConversation: %v", err)
	}
	// Dendrite delivers the invitation to bob's sync a moment after the
	// room is created (over federation, when it has crossed).
	var first syncResponse
	waitFor(t, wait, "bob's invitation to "+w.conv.RoomID, func() bool {
		first = w.bob.sync(t, "", 0)
		_, ok := first.Rooms.Invite[w.conv.RoomID]
		return ok
	})
	w.bob.join(t, w.conv.RoomID)
	w.since = w.bob.sync(t, first.NextBatch, 0).NextBatch
	return w
}

// startCalls runs a calls service over st publishing to pub, with b as its
// Matrix side, until the test ends (which stops its invite expiry timers).
func startCalls(t *testing.T, st *store.Store, pub *recorder, b *testBridge) *signaling.Service {
	t.Helper()
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, RoomIndex: st, Publisher: pub,
		Outbound: b.Encoder(), Rooms: b.Bridge,
		Logger: zerolog.New(b.logs).With().Timestamp().Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- calls.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("calls service Run: %v", err)
		}
	})
	return calls
}

func (w *inWorld) inbound(opts inOptions) matrix.InboundCalls {
	if opts.wrap != nil {
		return opts.wrap(w.calls)
	}
	return w.calls
}

// newBridge makes another bridge of the service user over the world's
// store, with short intervals; its calls are set by the caller.
func (w *inWorld) newBridge(t *testing.T, hsURL string) *testBridge {
	t.Helper()
	b := newBridge(t, matrix.Config{HomeserverURL: hsURL, UserID: w.svc.id, AccessToken: w.svc.token, DeviceID: w.dev, Store: w.st},
		matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	matrix.SetSyncBackoff(b.Bridge, 50*time.Millisecond, 400*time.Millisecond)
	return b
}

// start runs the bridge and waits for its first sync.
func (w *inWorld) start(t *testing.T, b *testBridge) (stop func()) {
	t.Helper()
	stop = b.run(t)
	waitFor(t, 15*time.Second, "the bridge's first sync", func() bool { return matrix.Syncs(b.Bridge) > 0 }, b.logs.String)
	return stop
}

// send sends an event as u into the conversation's room and returns its ID.
func (w *inWorld) send(t *testing.T, u matrixUser, typ string, content any) string {
	t.Helper()
	return w.sendTo(t, u, w.conv.RoomID, typ, content)
}

func (w *inWorld) sendTo(t *testing.T, u matrixUser, room, typ string, content any) string {
	t.Helper()
	var resp struct {
		EventID string `json:"event_id"`
	}
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/t%d", url.PathEscape(room), typ, w.txn.Add(1))
	api(t, u.base, http.MethodPut, path, u.token, content, &resp)
	return resp.EventID
}

// sendRetrying is send, retried with the same transaction ID (so applied
// once) while Dendrite answers 500: when a connection is cut with a
// request in flight, Dendrite's SQLite interrupt can fail a concurrent
// request ("interrupted (9)").
func (w *inWorld) sendRetrying(t *testing.T, u matrixUser, typ string, content any) {
	t.Helper()
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/t%d", url.PathEscape(w.conv.RoomID), typ, w.txn.Add(1))
	var err error
	for range 5 {
		if err = apiErr(u.base, http.MethodPut, path, u.token, content, nil); err == nil || !strings.Contains(err.Error(), ": 500 ") {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// call reads a call from the store; ok false if there is none.
func (w *inWorld) call(t *testing.T, id string) (signaling.Call, bool) {
	t.Helper()
	c, err := w.st.Call(context.Background(), id)
	if errors.Is(err, signaling.ErrNotFound) {
		return signaling.Call{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, true
}

// published returns the events of type typ for call id the service
// published.
func (w *inWorld) published(typ, id string) []signaling.Event {
	var out []signaling.Event
	for _, ev := range w.pub.all() {
		if ev.Type == typ && ev.CallID == id {
			out = append(out, ev)
		}
	}
	return out
}

// inbound reads icebox_matrix_inbound_total{type,result}.
func inbound(t *testing.T, b *testBridge, typ, result string) float64 {
	t.Helper()
	return metric(t, b, "icebox_matrix_inbound_total", "type", typ, "result", result)
}

// waitInbound waits until icebox_matrix_inbound_total{type,result} is n.
func waitInbound(t *testing.T, b *testBridge, typ, result string, n float64) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("%s %s = %v", typ, result, n), func() bool {
		return inbound(t, b, typ, result) == n
	}, b.logs.String)
}

// totals sums icebox_matrix_inbound_total by result.
func totals(t *testing.T, b *testBridge) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, typ := range []string{"m.call.invite", "m.call.candidates", "m.call.answer", "m.call.select_answer", "m.call.negotiate", "m.call.reject", "m.call.hangup", "m.call.sdp_stream_metadata_changed"} {
		for _, r := range []string{"ok", "duplicate", "echo", "stale", "ignored", "invalid", "error"} {
			out[r] += inbound(t, b, typ, r)
		}
	}
	return out
}

func invite(callID, party string, version any, lifetime int) map[string]any {
	c := map[string]any{
		"call_id": callID, "version": version, "lifetime": lifetime,
		"offer": map[string]any{"type": "offer", "sdp": offerSDP},
	}
	if party != "" {
		c["party_id"] = party
	}
	return c
}

func base(callID, party string) map[string]any {
	return map[string]any{"call_id": callID, "party_id": party, "version": "1"}
}

func with(m map[string]any, kv ...any) map[string]any {
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// findEvent returns the first event of type typ in evs.
func findEvent(t *testing.T, evs []roomEvent, typ string) roomEvent {
	t.Helper()
	for _, ev := range evs {
		if ev.Type == typ {
			return ev
		}
	}
	t.Fatalf("no %s among %s", typ, typesOf(evs))
	return roomEvent{}
}

// TestInboundCallFromMatrix: bob calls from Matrix; the call rings for the
// conversation's icebox users; alice answers through the service and bob
// sees the answer in the room; bob hangs up and the call ends.
func TestInboundCallFromMatrix(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	ctx := context.Background()

	begin := time.Now()
	inviteID := w.send(t, w.bob, "m.call.invite", invite("bobcall1", "bobdev", "1", 60000))
	waitFor(t, 10*time.Second, "CallInviteViaMatrix", func() bool {
		return len(w.published(signaling.EventCallInviteViaMatrix, "bobcall1")) == 1
	}, w.b.logs.String)
	t.Logf("bob's invite became CallInviteViaMatrix in %v", time.Since(begin).Round(time.Millisecond))
	c, ok := w.call(t, "bobcall1")
	if !ok {
		t.Fatal("no call bobcall1 in the store")
	}
	if c.Status != signaling.StatusRinging || c.Initiator != w.bob.id || c.PartyID != "bobdev" ||
		c.MatrixInviteEventID != inviteID || c.ConversationID != inConv || c.Invitee != "" {
		t.Errorf("call = %+v; want ringing, from %s/bobdev, invite %s, in %s, for anyone", c, w.bob.id, inviteID, inConv)
	}
	if c.LifetimeMS > 60000 || c.LifetimeMS < 50000 {
		t.Errorf("lifetime left = %d ms, want a little under 60000", c.LifetimeMS)
	}
	ev := w.published(signaling.EventCallInviteViaMatrix, "bobcall1")[0]
	if p, ok := ev.Payload.(signaling.InvitePayload); !ok || p.SDPOffer != offerSDP || p.InitiatorID != w.bob.id || p.PartyID != "bobdev" {
		t.Errorf("CallInviteViaMatrix payload = %+v", ev.Payload)
	}
	if got := strings.Join(ev.Recipients, ","); got != "alice,"+w.bob.id {
		t.Errorf("CallInviteViaMatrix recipients = %s", got)
	}

	if _, err := w.calls.Answer(ctx, "alice", "bobcall1", signaling.AnswerRequest{SDPAnswer: answerSDP}); err != nil {
		t.Fatalf("Answer: %v", err)
	}
	evs, _ := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.answer"))
	answer := findEvent(t, evs, "m.call.answer")
	var ac struct {
		CallID  string          `json:"call_id"`
		PartyID string          `json:"party_id"`
		Version json.RawMessage `json:"version"`
		Answer  struct{ Type, SDP string }
	}
	if err := json.Unmarshal(answer.Content, &ac); err != nil {
		t.Fatal(err)
	}
	if answer.Sender != w.svc.id || ac.CallID != "bobcall1" || ac.PartyID != signaling.PartyIDFor("alice") ||
		string(ac.Version) != `"1"` || ac.Answer.SDP != answerSDP || ac.Answer.Type != "answer" {
		t.Errorf("bob saw the answer %s from %s", answer.Content, answer.Sender)
	}
	// The bridge's own answer comes back through its sync: an echo.
	waitInbound(t, w.b, "m.call.answer", "echo", 1)

	w.send(t, w.bob, "m.call.hangup", with(base("bobcall1", "bobdev"), "reason", "user_hangup"))
	// Counted once the service returned: the transition is committed and published.
	waitInbound(t, w.b, "m.call.hangup", "ok", 1)
	c, _ = w.call(t, "bobcall1")
	if c.Status != signaling.StatusEnded || c.EndedBy != w.bob.id || c.EndReason != signaling.ReasonUserHangup || c.Answerer != "alice" {
		t.Errorf("call = %+v; want answered by alice, ended by bob (user_hangup)", c)
	}
	if n := len(w.published(signaling.EventCallHangupViaMatrix, "bobcall1")); n != 1 {
		t.Errorf("CallHangupViaMatrix published %d times, want 1", n)
	}
	if got := inbound(t, w.b, "m.call.invite", "ok"); got != 1 {
		t.Errorf("invite ok = %v, want 1", got)
	}
	if got := totals(t, w.b); got["error"]+got["invalid"]+got["duplicate"] != 0 {
		t.Errorf("results = %v, want no error, invalid or duplicate", got)
	}
	logs := w.b.logs.String()
	for _, want := range []string{`"type":"m.call.invite","call_id":"bobcall1"`, `"sender":"` + w.bob.id + `"`, `"result":"ok"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line with %s", want)
		}
	}
	checkNoSecretsLogged(t, logs, w.svc.token)
}

// TestInboundAnswerFromMatrix: alice calls bob; bob answers from Matrix;
// the service selects his answer (bob sees m.call.select_answer) and his
// candidates reach alice.
func TestInboundAnswerFromMatrix(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	ctx := context.Background()

	c, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.id})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	evs, since := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.invite"))
	var ic struct {
		CallID  string `json:"call_id"`
		Invitee string `json:"invitee"`
	}
	inv := findEvent(t, evs, "m.call.invite")
	if err := json.Unmarshal(inv.Content, &ic); err != nil {
		t.Fatal(err)
	}
	if ic.CallID != c.ID || ic.Invitee != w.bob.id {
		t.Fatalf("bob saw the invite %s, want call %s for him", inv.Content, c.ID)
	}

	begin := time.Now()
	w.send(t, w.bob, "m.call.answer", with(base(c.ID, "bobdev"), "answer", map[string]any{"type": "answer", "sdp": answerSDP}))
	waitInbound(t, w.b, "m.call.answer", "ok", 1)
	got, _ := w.call(t, c.ID)
	if got.Status != signaling.StatusAnswered || got.Answerer != w.bob.id || got.AnswerPartyID != "bobdev" || got.SDPAnswer != answerSDP {
		t.Errorf("answered call = %+v; want answered by %s/bobdev", got, w.bob.id)
	}
	evs, _ = w.bob.callEvents(t, since, w.conv.RoomID, 15*time.Second, hasType("m.call.select_answer"))
	t.Logf("bob's answer was selected in the room %v after he sent it", time.Since(begin).Round(time.Millisecond))
	sel := findEvent(t, evs, "m.call.select_answer")
	var sc struct {
		CallID          string `json:"call_id"`
		PartyID         string `json:"party_id"`
		SelectedPartyID string `json:"selected_party_id"`
	}
	if err := json.Unmarshal(sel.Content, &sc); err != nil {
		t.Fatal(err)
	}
	if sel.Sender != w.svc.id || sc.CallID != c.ID || sc.PartyID != c.PartyID || sc.SelectedPartyID != "bobdev" {
		t.Errorf("bob saw the selection %s from %s; want bobdev selected by %s", sel.Content, sel.Sender, c.PartyID)
	}
	if evs := w.published(signaling.EventCallAnswerViaMatrix, c.ID); len(evs) != 1 {
		t.Errorf("CallAnswerViaMatrix published %d times, want 1", len(evs))
	}
	if got := metric(t, w.b, "matrix_voip_answer_received_total"); got != 1 {
		t.Errorf("matrix_voip_answer_received_total = %v, want 1", got)
	}

	w.send(t, w.bob, "m.call.candidates", with(base(c.ID, "bobdev"), "candidates", []any{
		map[string]any{"candidate": "candidate:1 1 udp 2122260223 192.0.2.9 50001 typ host", "sdpMid": "0", "sdpMLineIndex": 0},
		map[string]any{"candidate": ""},
	}))
	waitFor(t, 10*time.Second, "CallCandidatesViaMatrix", func() bool {
		return len(w.published(signaling.EventCallCandidatesVia, c.ID)) == 1
	}, w.b.logs.String)
	p, ok := w.published(signaling.EventCallCandidatesVia, c.ID)[0].Payload.(signaling.CandidatesPayload)
	if !ok {
		t.Fatalf("payload is %T", w.published(signaling.EventCallCandidatesVia, c.ID)[0].Payload)
	}
	cands, _ := json.Marshal(p.Candidates)
	if want := `[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.9 50001 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]`; string(cands) != want ||
		p.PartyID != "bobdev" || p.ParticipantID != w.bob.id {
		t.Errorf("CallCandidatesViaMatrix from %s/%s: %s\nwant %s", p.ParticipantID, p.PartyID, cands, want)
	}
	// The bridge's own invite and selection come back as echoes.
	waitInbound(t, w.b, "m.call.invite", "echo", 1)
	waitInbound(t, w.b, "m.call.select_answer", "echo", 1)
	// A hangup carrying alice's party is not bob's to send: ignored by
	// party_id, as Matrix clients ignore their own party's echo.
	w.send(t, w.bob, "m.call.hangup", base(c.ID, c.PartyID))
	waitInbound(t, w.b, "m.call.hangup", "echo", 1)
	if got, _ := w.call(t, c.ID); got.Status != signaling.StatusAnswered {
		t.Errorf("call is %s after a hangup with alice's party, want answered", got.Status)
	}
	for typ, n := range map[string]float64{"m.call.answer": 1, "m.call.candidates": 1} {
		if got := inbound(t, w.b, typ, "ok"); got != n {
			t.Errorf("%s ok = %v, want %v", typ, got, n)
		}
	}
	checkNoSecretsLogged(t, w.b.logs.String(), w.svc.token)
}

// panicky makes CandidatesFromMatrix panic for the call "boom".
type panicky struct{ *signaling.Service }

func (p panicky) CandidatesFromMatrix(ctx context.Context, ev signaling.MatrixEvent, cs []signaling.Candidate) error {
	if ev.CallID == "boom" {
		panic("boom")
	}
	return p.Service.CandidatesFromMatrix(ctx, ev, cs)
}

// TestInboundLenient: versions 1, "1" and 0 (with a party) are accepted;
// v0 without a party is skipped, malformed content and an invite past its
// lifetime are counted and change nothing; a handler that panics is
// counted and the loop goes on. Invitations are joined, and a joined room
// becomes a conversation of its members.
func TestInboundLenient(t *testing.T) {
	w := newInWorld(t, inOptions{wrap: func(s *signaling.Service) matrix.InboundCalls { return panicky{s} }})
	w.start(t, w.b)

	w.send(t, w.bob, "m.call.invite", invite("bobnum", "bobdev", 1, 60000))
	w.send(t, w.bob, "m.call.invite", invite("bobzero", "bobv0dev", 0, 60000))
	w.send(t, w.bob, "m.call.invite", invite("bobv0", "", 0, 60000))
	noCallID := invite("x", "bobdev", "1", 60000)
	delete(noCallID, "call_id")
	w.send(t, w.bob, "m.call.invite", noCallID)
	w.send(t, w.bob, "m.call.invite", with(invite("bobbad", "bobdev", "1", 60000), "offer", "v=0"))
	w.send(t, w.bob, "m.call.invite", invite("bobstale", "bobdev", "1", 1000))
	w.send(t, w.bob, "m.call.negotiate", with(base("bobnum", "bobdev"), "lifetime", 60000,
		"description", map[string]any{"type": "offer", "sdp": offerSDP}))
	w.send(t, w.bob, "m.call.candidates", with(base("boom", "bobdev"), "candidates", []any{map[string]any{"candidate": ""}}))
	w.send(t, w.bob, "m.call.hangup", base("bobnum", "bobdev"))

	waitInbound(t, w.b, "m.call.hangup", "ok", 1)
	want := map[[2]string]float64{
		{"m.call.invite", "ok"}:         2,
		{"m.call.invite", "ignored"}:    1, // v0 without party_id
		{"m.call.invite", "invalid"}:    2, // no call_id; offer not an object
		{"m.call.invite", "stale"}:      1,
		{"m.call.negotiate", "ignored"}: 1,
		{"m.call.candidates", "error"}:  1, // the panic
	}
	for k, n := range want {
		if got := inbound(t, w.b, k[0], k[1]); got != n {
			t.Errorf("%s %s = %v, want %v", k[0], k[1], got, n)
		}
	}
	for id, status := range map[string]signaling.Status{"bobnum": signaling.StatusEnded, "bobzero": signaling.StatusRinging} {
		if c, ok := w.call(t, id); !ok || c.Status != status {
			t.Errorf("call %s = %+v (found %v), want %s", id, c, ok, status)
		}
	}
	for _, id := range []string{"bobv0", "bobbad", "bobstale", "x"} {
		if c, ok := w.call(t, id); ok {
			t.Errorf("call %s was created: %+v", id, c)
		}
	}
	logs := w.b.logs.String()
	for _, s := range []string{`"reason":"v0"`, `"reason":"call_id missing"`, `"reason":"offer is a JSON string, not the expected type"`, `"reason":"panic"`, "matrix event handler panicked"} {
		if !strings.Contains(logs, s) {
			t.Errorf("no log line with %s", s)
		}
	}

	// bob invites the service user to a room of his own: the bridge joins.
	var created struct {
		RoomID string `json:"room_id"`
	}
	api(t, w.bob.base, http.MethodPost, "/_matrix/client/v3/createRoom", w.bob.token,
		map[string]any{"preset": "private_chat", "invite": []string{w.svc.id}}, &created)
	waitFor(t, 10*time.Second, "the bridge to join bob's room", func() bool {
		return metric(t, w.b, "icebox_matrix_autojoin_total", "result", "ok") == 1
	}, w.b.logs.String)
	var members struct {
		Joined map[string]any `json:"joined"`
	}
	api(t, w.bob.base, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(created.RoomID)+"/joined_members", w.bob.token, nil, &members)
	if _, ok := members.Joined[w.svc.id]; !ok {
		t.Errorf("the service user is not among the members of %s: %v", created.RoomID, members.Joined)
	}
	// The joined room becomes a conversation of its members: bob's call
	// there is icebox's.
	w.sendTo(t, w.bob, created.RoomID, "m.call.invite", invite("elsewhere", "bobdev", "1", 60000))
	waitInbound(t, w.b, "m.call.invite", "ok", 3)
	if c, ok := w.call(t, "elsewhere"); !ok || !strings.HasPrefix(c.ConversationID, "room-") || c.RoomID != created.RoomID {
		t.Errorf("the call in the joined room = %+v (found %v), want one in its room- conversation", c, ok)
	}
	checkNoSecretsLogged(t, w.b.logs.String(), w.svc.token)
}

// TestInboundRestart: a bridge started again on the same store resumes
// from the stored next_batch and handles nothing twice; even without the
// token (a sync from scratch replays the room's recent events) the
// seen-events record keeps every event from being applied again.
func TestInboundRestart(t *testing.T) {
	w := newInWorld(t, inOptions{})
	stop := w.start(t, w.b)
	ctx := context.Background()

	w.send(t, w.bob, "m.call.invite", invite("r1", "bobdev", "1", 60000))
	w.send(t, w.bob, "m.call.candidates", with(base("r1", "bobdev"), "candidates", []any{map[string]any{"candidate": ""}}))
	waitInbound(t, w.b, "m.call.candidates", "ok", 1)
	if _, err := w.calls.Answer(ctx, "alice", "r1", signaling.AnswerRequest{SDPAnswer: answerSDP}); err != nil {
		t.Fatal(err)
	}
	waitInbound(t, w.b, "m.call.answer", "echo", 1)
	// The echo can come back before the send returns: stop only once the
	// outbox is empty, or the next bridge sends the answer again.
	waitFor(t, 10*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	stop()

	nextBatchKey, filterKey := "next_batch/"+w.svc.id, "filter/"+w.svc.id
	token, err := w.st.LoadSyncValue(ctx, nextBatchKey)
	if err != nil || token == "" {
		t.Fatalf("stored next_batch = %q, %v; want a token", token, err)
	}
	if f, err := w.st.LoadSyncValue(ctx, filterKey); err != nil || !strings.Contains(f, `"id":`) {
		t.Errorf("stored filter = %q, %v; want the filter ID", f, err)
	}
	published := len(w.pub.all())

	// While icebox is down, bob calls and hangs up: the restarted bridge
	// gets both in one batch, and a call already over does not ring.
	w.send(t, w.bob, "m.call.invite", invite("r2", "bobdev", "1", 60000))
	w.send(t, w.bob, "m.call.hangup", base("r2", "bobdev"))

	// Restarted: resumes after the last handled event.
	again := w.newBridge(t, w.hs.URL())
	again.SetCalls(w.calls)
	stop = w.start(t, again)
	w.send(t, w.bob, "m.call.hangup", base("r1", "bobdev"))
	waitInbound(t, again, "m.call.hangup", "ok", 1)
	if got := totals(t, again); got["ok"] != 1 || got["ignored"] != 2 || got["duplicate"]+got["echo"] != 0 {
		t.Errorf("after a restart the bridge handled %v; want the new hangup ok, r2's invite and hangup ignored, nothing replayed", got)
	}
	if _, ok := w.call(t, "r2"); ok {
		t.Error("call r2 rang although its hangup came in the same batch")
	}
	if !strings.Contains(again.logs.String(), `"reason":"answered or ended later in the same sync batch"`) {
		t.Error("no log line saying r2's invite was suppressed")
	}
	if got := len(w.pub.all()); got != published+1 {
		t.Errorf("published %d events after the restart, want 1 (the hangup)", got-published)
	}
	published++
	stop()

	// Restarted without the token: the room's events come again, and none
	// is applied twice.
	if err := w.st.SaveSyncValue(ctx, nextBatchKey, ""); err != nil {
		t.Fatal(err)
	}
	third := w.newBridge(t, w.hs.URL())
	third.SetCalls(w.calls)
	w.start(t, third)
	waitFor(t, 10*time.Second, "the replayed events to be judged", func() bool {
		got := totals(t, third)
		return got["duplicate"] == 5 && got["echo"] == 1 // bob's 5 events; icebox's answer
	}, func() string { return fmt.Sprint(totals(t, third)) })
	if got := totals(t, third); got["ok"]+got["error"]+got["invalid"] != 0 {
		t.Errorf("replayed events gave %v; want only duplicates and echoes", got)
	}
	if got := len(w.pub.all()); got != published {
		t.Errorf("published %d events from the replay, want none", got-published)
	}
	if c, _ := w.call(t, "r1"); c.Status != signaling.StatusEnded {
		t.Errorf("call r1 is %s, want ended", c.Status)
	}
	if token, _ := w.st.LoadSyncValue(ctx, nextBatchKey); token == "" {
		t.Error("no next_batch stored after the sync from scratch")
	}
}

// TestInboundSyncOutage: while the homeserver is unreachable the sync
// fails, counts and retries with backoff; when it is back, events flow
// again. A refused token still ends Run at once.
func TestInboundSyncOutage(t *testing.T) {
	var cut *outage
	w := newInWorld(t, inOptions{homeserverURL: func(hs *matrixtest.Homeserver) string {
		cut = newOutage(t, hs.URL())
		return cut.URL()
	}})
	w.start(t, w.b)

	cut.setDown(true)
	waitFor(t, 10*time.Second, "3 failed syncs", func() bool {
		return metric(t, w.b, "icebox_matrix_sync_errors_total", "kind", "network") >= 3
	}, w.b.logs.String)
	w.sendRetrying(t, w.bob, "m.call.invite", invite("during", "bobdev", "1", 60000)) // bob's homeserver is up
	waitFor(t, 10*time.Second, "the sync lag to grow", func() bool {
		return metric(t, w.b, "icebox_matrix_sync_lag_seconds") >= 0.3
	})
	if got := inbound(t, w.b, "m.call.invite", "ok"); got != 0 {
		t.Fatalf("invite handled (%v) while the homeserver was cut off", got)
	}
	cut.setDown(false)
	waitInbound(t, w.b, "m.call.invite", "ok", 1)
	if _, ok := w.call(t, "during"); !ok {
		t.Error("the invite sent during the outage did not ring after it")
	}
	if !strings.Contains(w.b.logs.String(), "matrix sync failed; retrying") {
		t.Error("no log line about the failed sync")
	}

	bad := newBridge(t, matrix.Config{HomeserverURL: w.hs.URL(), UserID: w.svc.id, AccessToken: "not-a-token", Store: openStore(t), Calls: w.calls}, matrix.Timing{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := bad.Run(ctx); err == nil || !strings.Contains(err.Error(), "refused the access token") {
		t.Errorf("Run with a refused token = %v, want the refusal", err)
	}
	if got := metric(t, bad, "icebox_matrix_sync_errors_total", "kind", "unauthorized"); got != 0 {
		t.Errorf("the sync ran with a refused token (%v failures)", got)
	}
	checkNoSecretsLogged(t, w.b.logs.String(), w.svc.token)
}

// TestSeenEventsPruned: a bridge that syncs forgets, at start, the events
// seen more than 48 hours ago, and keeps the newer ones.
func TestSeenEventsPruned(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := time.Now()
	for id, at := range map[string]time.Time{"$old": now.Add(-49 * time.Hour), "$new": now.Add(-47 * time.Hour)} {
		if _, err := st.MarkEventSeen(ctx, id, at); err != nil {
			t.Fatal(err)
		}
	}
	// The homeserver is unreachable: pruning does not wait for it.
	b := newBridge(t, matrix.Config{
		HomeserverURL: closedURL(t), UserID: "@icebox:localhost", AccessToken: noServerToken, Store: st,
		Calls: struct{ *signaling.Service }{}, // never called: nothing is synced
	}, matrix.Timing{})
	b.run(t)
	waitFor(t, 10*time.Second, "$old to be forgotten", func() bool {
		first, err := st.MarkEventSeen(ctx, "$old", now)
		if err != nil {
			t.Fatal(err)
		}
		return first
	})
	if first, err := st.MarkEventSeen(ctx, "$new", now); err != nil || first {
		t.Errorf("$new was forgotten (first = %v, %v)", first, err)
	}
}

// TestSetCallsWhileRunning: SetCalls may be called while Run runs (it takes
// effect at the next Run); the sync's handlers, mapping a joined room to a
// conversation here, must not read the calls service it writes. Under
// -race, an unsynchronised read fails this test.
func TestSetCallsWhileRunning(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	done := make(chan struct{})
	setting := make(chan struct{})
	go func() {
		defer close(setting)
		for {
			select {
			case <-done:
				return
			default:
				w.b.SetCalls(w.calls)
				runtime.Gosched()
			}
		}
	}()
	defer func() { close(done); <-setting }()

	// bob invites the service user to a room of his own: the bridge joins
	// and maps the room to a conversation through the calls service.
	var created struct {
		RoomID string `json:"room_id"`
	}
	api(t, w.bob.base, http.MethodPost, "/_matrix/client/v3/createRoom", w.bob.token,
		map[string]any{"preset": "private_chat", "invite": []string{w.svc.id}}, &created)
	waitFor(t, 10*time.Second, "bob's room to be mapped", func() bool {
		for _, line := range strings.Split(w.b.logs.String(), "\n") {
			if strings.Contains(line, created.RoomID) && strings.Contains(line, "matrix room mapped to a conversation") {
				return true
			}
		}
		return false
	}, w.b.logs.String)
}
