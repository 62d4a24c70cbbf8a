package matrix_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
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

// End-to-end encrypted calls between icebox and a Matrix user whose client
// encrypts (matrixtest.E2EEUser), against a real Dendrite.

// e2eeTimeout bounds the wait for one event to cross the homeserver,
// decrypted. Delivery takes milliseconds; a room key that never arrives
// makes mautrix wait 25 s, which these tests must not.
const e2eeTimeout = 15 * time.Second

// e2eeWorld is a Dendrite with the service user (password login, device in
// dir) and bob, a Matrix user with an encrypting client; a real store; and
// the conversation c1 = {alice (local), bob} whose room the encrypted bridge
// created (and bob joined, if asked to).
type e2eeWorld struct {
	hs       *matrixtest.Homeserver
	svcID    string
	bob      *matrixtest.E2EEUser
	bobToken string
	st       *store.Store
	dir      string // Encryption.Dir
	conv     signaling.Conversation
	cur      *e2eeBridge   // the bridge newE2EEWorld started
	wait     time.Duration // bounds the wait for one event to reach the other side
	txn      atomic.Int64
}

// e2eeBridge is one run of an encrypted bridge with its own calls service
// over the world's store, wired as serve.go wires them.
type e2eeBridge struct {
	*testBridge
	calls *signaling.Service
	pub   *recorder // what the calls service published
	stop  func()    // stops the bridge (Run returns, no goroutine left)
}

func newE2EEWorld(t *testing.T, bobJoins bool) *e2eeWorld {
	t.Helper()
	begin := time.Now()
	hs := matrixtest.StartDendrite(t)
	w := newE2EEWorldOn(t, hs, hs, e2eeTimeout, bobJoins)
	t.Logf("setup (Dendrite, users, bob's device, bridge with encryption, room, join) took %v", time.Since(begin).Round(time.Millisecond))
	return w
}

// newE2EEWorldOn builds the world with the service user on hs and bob, and
// his encrypting client, on bobHS: hs itself, or a homeserver federating
// with it. wait bounds each wait for an event to reach the other side.
func newE2EEWorldOn(t *testing.T, hs, bobHS *matrixtest.Homeserver, wait time.Duration, bobJoins bool) *e2eeWorld {
	t.Helper()
	svcID, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := bobHS.Register(t, "bob", "bob-password", false)
	bob := bobHS.NewE2EEUser(t, bobID, "bob-password")
	w := &e2eeWorld{
		hs: hs, svcID: svcID, bob: bob, bobToken: bob.Client.AccessToken,
		st: openStore(t), dir: filepath.Join(t.TempDir(), "matrix"), wait: wait,
	}
	w.cur = w.start(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	if w.conv, err = w.cur.calls.PutConversation(ctx, inConv, []string{"alice", bobID}, ""); err != nil {
		t.Fatalf("PutConversation: %v", err)
	}
	if bobJoins {
		bob.Join(t, w.conv.RoomID)
	}
	return w
}

// start runs a bridge of the service user on the world's store and
// encryption directory, with a calls service of its own, and waits until
// its encryption is up and it has synced once.
func (w *e2eeWorld) start(t *testing.T, require bool) *e2eeBridge {
	t.Helper()
	tb := newBridge(t, matrix.Config{
		HomeserverURL: w.hs.URL(), UserID: w.svcID, Password: servicePassword, Store: w.st,
		Encryption: &matrix.Encryption{Dir: w.dir, Require: require},
	}, matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	matrix.SetSyncBackoff(tb.Bridge, 50*time.Millisecond, 400*time.Millisecond)
	b := &e2eeBridge{testBridge: tb, pub: &recorder{}}
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: w.st, RoomIndex: w.st, Publisher: b.pub,
		Outbound: tb.Encoder(), Rooms: tb.Bridge,
		Logger: zerolog.New(tb.logs).With().Timestamp().Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.calls = calls
	runCtx, stopCalls := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- calls.Run(runCtx) }()
	t.Cleanup(func() { // after the bridge's own cleanup: registered first
		stopCalls()
		if err := <-done; err != nil {
			t.Errorf("calls service Run: %v", err)
		}
	})
	tb.SetCalls(calls)
	b.stop = runScoped(t, tb)
	waitFor(t, 60*time.Second, "encryption up and a first sync", func() bool {
		return matrix.EncryptionUp(tb.Bridge) && matrix.Syncs(tb.Bridge) > 0
	}, tb.logs.String)
	return b
}

// sendRaw sends content as bob with the plain client-server API (no
// encryption of its own) and returns the event ID.
func (w *e2eeWorld) sendRaw(t *testing.T, room, typ string, content any) string {
	t.Helper()
	var resp struct {
		EventID string `json:"event_id"`
	}
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/raw%d", url.PathEscape(room), typ, w.txn.Add(1))
	api(t, w.hs.URL(), http.MethodPut, path, w.bobToken, content, &resp)
	return resp.EventID
}

// call reads a call from the store; ok false if there is none.
func (w *e2eeWorld) call(t *testing.T, id string) (signaling.Call, bool) {
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

// stored reads the room as the homeserver keeps it (with bob's token) and
// fails for every raw event holding one of secrets; it returns the events'
// types by event ID and senders by event ID.
func (w *e2eeWorld) stored(t *testing.T, room string, secrets ...string) (types, senders map[string]string) {
	t.Helper()
	types, senders = map[string]string{}, map[string]string{}
	for _, raw := range w.hs.RoomMessages(t, w.bobToken, room) {
		for _, s := range secrets {
			if strings.Contains(string(raw), s) {
				t.Errorf("the homeserver has %q in plaintext: %s", s, raw)
			}
		}
		var ev struct {
			ID     string `json:"event_id"`
			Type   string `json:"type"`
			Sender string `json:"sender"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		types[ev.ID], senders[ev.ID] = ev.Type, ev.Sender
	}
	return types, senders
}

// bobInvite is the content of an m.call.invite as bob's client sends it.
func bobInvite(callID string) json.RawMessage {
	return json.RawMessage(`{"call_id":"` + callID + `","party_id":"bobdev","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"` + bobSDP + `"}}`)
}

func bobHangup(callID string) json.RawMessage {
	return json.RawMessage(`{"call_id":"` + callID + `","party_id":"bobdev","version":"1","reason":"user_hangup"}`)
}

const bobSDP = "v=0 from-bob"

// e2eeContent is the part of an m.call.* content the tests compare.
type e2eeContent struct {
	CallID     string          `json:"call_id"`
	PartyID    string          `json:"party_id"`
	Version    json.RawMessage `json:"version"`
	Invitee    string          `json:"invitee"`
	Offer      struct{ Type, SDP string }
	Candidates []struct {
		Candidate string `json:"candidate"`
	} `json:"candidates"`
	Reason string `json:"reason"`
}

func contentOf(t *testing.T, ev matrixtest.Event) e2eeContent {
	t.Helper()
	var c e2eeContent
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		t.Fatalf("%s %s: %v", ev.Type, ev.Content, err)
	}
	return c
}

// isCall matches the event of type typ about callID.
func isCall(typ, callID string) func(matrixtest.Event) bool {
	return func(ev matrixtest.Event) bool {
		var c struct {
			CallID string `json:"call_id"`
		}
		return ev.Type == typ && json.Unmarshal(ev.Content, &c) == nil && c.CallID == callID
	}
}

// callEventsOf returns the m.call.* events about callID bob received in room.
func callEventsOf(u *matrixtest.E2EEUser, room, callID string) []matrixtest.Event {
	var out []matrixtest.Event
	for _, ev := range u.Events(room) {
		var c struct {
			CallID string `json:"call_id"`
		}
		if strings.HasPrefix(ev.Type, "m.call.") && json.Unmarshal(ev.Content, &c) == nil && c.CallID == callID {
			out = append(out, ev)
		}
	}
	return out
}

func e2eeTypes(evs []matrixtest.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Type)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// undecryptable sums icebox_matrix_undecryptable_total over its reasons.
func undecryptable(t *testing.T, b *testBridge) float64 {
	t.Helper()
	return metric(t, b, "icebox_matrix_undecryptable_total", "reason", "no_session") +
		metric(t, b, "icebox_matrix_undecryptable_total", "reason", "error")
}

// checkClean: nothing was undecryptable on either side, and no secret
// reached the bridge's log.
func (w *e2eeWorld) checkClean(t *testing.T, b *testBridge) {
	t.Helper()
	if n := undecryptable(t, b); n != 0 {
		t.Errorf("icebox_matrix_undecryptable_total = %v, want 0", n)
	}
	if n := w.bob.DecryptFailures(); n != 0 {
		t.Errorf("bob failed to decrypt %d events", n)
	}
	checkNoE2EESecretsLogged(t, b, w.bobToken)
}

// checkNoE2EESecretsLogged: besides checkNoSecretsLogged's SDP, candidates
// and token, neither bob's SDP nor the service user's password.
func checkNoE2EESecretsLogged(t *testing.T, b *testBridge, token string) {
	t.Helper()
	logs := b.logs.String()
	checkNoSecretsLogged(t, logs, token)
	for _, s := range []string{bobSDP, servicePassword} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs contain %q", s)
		}
	}
}

// TestE2EE runs the end-to-end encryption tests in parallel with each
// other, but as subtests of one sequential test: testBridge.run's check for
// leftover goroutines looks at the whole process, so it must not run while
// another test's bridge is up. Top-level parallel tests (such as
// TestEncryptedDeviceLifecycle) start only after this one has finished.
// These subtests check their own bridges with runScoped instead.
func TestE2EE(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"OutboundCall", testE2EEOutboundCall},
		{"InboundCall", testE2EEInboundCall},
		{"PlainRoomRefused", testE2EEPlainRoomRefused},
		{"Undecryptable", testE2EEUndecryptable},
		{"Restart", testE2EERestart},
		{"CallBeforeJoin", testE2EECallBeforeJoin},
	} {
		t.Run(tc.name, tc.fn)
	}
}

// testE2EEOutboundCall: the room the encrypted bridge creates for a
// conversation is encrypted from its creation; an icebox call's invite,
// candidates and hangup, placed through the calls service, reach bob
// decrypted and intact, while the homeserver only ever has them as
// m.room.encrypted. The bridge decrypts its own events when they come back
// (echoes) and nothing is undecryptable.
func testE2EEOutboundCall(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, true)
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()

	var enc struct {
		Algorithm string `json:"algorithm"`
	}
	api(t, w.hs.URL(), http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.encryption/", w.bobToken, nil, &enc)
	if enc.Algorithm != "m.megolm.v1.aes-sha2" {
		t.Fatalf("the bridge's room has m.room.encryption %+v, want m.megolm.v1.aes-sha2", enc)
	}

	sent := time.Now()
	c, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	if err := b.calls.Candidates(ctx, "alice", c.ID, signaling.CandidatesRequest{Candidates: testCandidates}); err != nil {
		t.Fatalf("Candidates: %v", err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.invite", c.ID), e2eeTimeout)
	t.Logf("encrypted invite reached bob %v after Initiate", time.Since(sent).Round(time.Millisecond))
	if _, err := b.calls.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.hangup", c.ID), e2eeTimeout)
	t.Logf("invite, candidates and hangup reached bob %v after Initiate", time.Since(sent).Round(time.Millisecond))

	evs := callEventsOf(w.bob, room, c.ID)
	if got, want := e2eeTypes(evs), "[m.call.invite m.call.candidates m.call.hangup]"; got != want {
		t.Fatalf("bob received %s, want %s", got, want)
	}
	for _, ev := range evs {
		if !ev.Encrypted || ev.Sender != w.svcID {
			t.Errorf("%s %s: encrypted %v, from %s; want encrypted, from %s", ev.Type, ev.ID, ev.Encrypted, ev.Sender, w.svcID)
		}
		if got := contentOf(t, ev); string(got.Version) != `"1"` || got.PartyID != c.PartyID {
			t.Errorf("%s: version %s, party %q; want \"1\", %q", ev.Type, got.Version, got.PartyID, c.PartyID)
		}
	}
	if inv := contentOf(t, evs[0]); inv.Offer.SDP != offerSDP || inv.Offer.Type != "offer" || inv.Invitee != w.bob.UserID() {
		t.Errorf("decrypted invite = %s; want the offer, for %s", evs[0].Content, w.bob.UserID())
	}
	if cands := contentOf(t, evs[1]).Candidates; len(cands) != len(testCandidates) || cands[0].Candidate != testCandidates[0].Candidate {
		t.Errorf("decrypted candidates = %s; want the %d candidates", evs[1].Content, len(testCandidates))
	}
	if got := contentOf(t, evs[2]).Reason; got != signaling.ReasonUserHangup {
		t.Errorf("decrypted hangup reason = %q, want %q", got, signaling.ReasonUserHangup)
	}

	// What the homeserver stores: ciphertext only.
	types, _ := w.stored(t, room, c.ID, "secret-offer", "192.0.2.1", "typ host", "m.call.")
	for _, ev := range evs {
		if got := types[ev.ID]; got != "m.room.encrypted" {
			t.Errorf("the homeserver has the %s %s as %q, want m.room.encrypted", ev.Type, ev.ID, got)
		}
	}

	waitFor(t, 10*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	// The bridge's own events come back through its sync, decrypted.
	for _, typ := range []string{"m.call.invite", "m.call.candidates", "m.call.hangup"} {
		waitInbound(t, b.testBridge, typ, "echo", 1)
	}
	for name, want := range map[string]float64{
		"matrix_voip_invite_sent_total": 1, "matrix_voip_hangup_sent_total": 1,
		"matrix_voip_ice_candidates_sent_total": float64(len(testCandidates)),
	} {
		if got := metric(t, b.testBridge, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, b.testBridge, "icebox_matrix_outbox_dropped_total", "reason", "unencrypted_room"); got != 0 {
		t.Errorf("dropped{unencrypted_room} = %v, want 0", got)
	}
	w.checkClean(t, b.testBridge)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// testE2EEInboundCall: bob's encrypted invite rings like a plain one and his
// encrypted hangup ends the call. An encrypted invite and its hangup that
// arrive in one sync batch (sent while icebox was down) do not ring: the
// batch is decrypted before it is judged.
func testE2EEInboundCall(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, true)
	b, room := w.cur, w.conv.RoomID

	sent := time.Now()
	inviteID := w.bob.Send(t, room, "m.call.invite", bobInvite("bobcall1"))
	waitInbound(t, b.testBridge, "m.call.invite", "ok", 1)
	t.Logf("bob's encrypted invite rang %v after he sent it", time.Since(sent).Round(time.Millisecond))
	c, ok := w.call(t, "bobcall1")
	if !ok {
		t.Fatal("no call bobcall1 in the store")
	}
	if c.Status != signaling.StatusRinging || c.Initiator != w.bob.UserID() || c.PartyID != "bobdev" ||
		c.SDPOffer != bobSDP || c.MatrixInviteEventID != inviteID || c.ConversationID != inConv {
		t.Errorf("call = %+v; want ringing, from %s/bobdev with his offer, invite %s, in %s", c, w.bob.UserID(), inviteID, inConv)
	}
	var rang []signaling.Event
	for _, ev := range b.pub.all() {
		if ev.Type == signaling.EventCallInviteViaMatrix && ev.CallID == "bobcall1" {
			rang = append(rang, ev)
		}
	}
	if len(rang) != 1 {
		t.Fatalf("CallInviteViaMatrix published %d times, want 1", len(rang))
	}
	if p, ok := rang[0].Payload.(signaling.InvitePayload); !ok || p.SDPOffer != bobSDP || p.PartyID != "bobdev" {
		t.Errorf("CallInviteViaMatrix payload = %+v", rang[0].Payload)
	}

	w.bob.Send(t, room, "m.call.hangup", bobHangup("bobcall1"))
	waitInbound(t, b.testBridge, "m.call.hangup", "ok", 1)
	if c, _ := w.call(t, "bobcall1"); c.Status != signaling.StatusEnded || c.EndedBy != w.bob.UserID() {
		t.Errorf("call = %+v; want ended by %s", c, w.bob.UserID())
	}
	if got := totals(t, b.testBridge); got["ok"] != 2 || got["ignored"]+got["invalid"]+got["error"] != 0 {
		t.Errorf("results = %v; want the invite and the hangup ok, nothing ignored, invalid or failed", got)
	}
	checkNoE2EESecretsLogged(t, b.testBridge, w.bobToken)

	// While icebox is down, bob calls and hangs up: the next start gets
	// both, encrypted, in one batch.
	b.stop()
	w.bob.Send(t, room, "m.call.invite", bobInvite("bobcall2"))
	w.bob.Send(t, room, "m.call.hangup", bobHangup("bobcall2"))
	again := w.start(t, true)
	waitInbound(t, again.testBridge, "m.call.invite", "ignored", 1)
	waitInbound(t, again.testBridge, "m.call.hangup", "ignored", 1) // the call never existed
	if c, ok := w.call(t, "bobcall2"); ok {
		t.Errorf("call bobcall2 rang although its hangup came in the same batch: %+v", c)
	}
	if !strings.Contains(again.logs.String(), `"call_id":"bobcall2","room_id":"`+room+`","sender":"`+w.bob.UserID()) ||
		!strings.Contains(again.logs.String(), `"reason":"answered or ended later in the same sync batch"`) {
		t.Error("no log line saying bobcall2's invite was suppressed")
	}
	if got := totals(t, again.testBridge); got["ok"]+got["error"]+got["invalid"] != 0 {
		t.Errorf("after the restart: %v; want only bobcall2's invite and hangup, ignored", got)
	}
	if len(again.pub.all()) != 0 {
		t.Errorf("published %d events for a call over before icebox saw it", len(again.pub.all()))
	}
	if n := undecryptable(t, again.testBridge); n != 0 {
		t.Errorf("icebox_matrix_undecryptable_total = %v, want 0", n)
	}
	checkNoE2EESecretsLogged(t, again.testBridge, w.bobToken)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// testE2EEPlainRoomRefused: with require_encryption, a room bob made
// without encryption (the bridge joins it and maps it to a conversation)
// gets no call event from icebox — they are dropped, counted, and the
// outbox drains — and bob's plaintext call events there are ignored.
// Without require_encryption, the same room gets the events in plaintext.
func testE2EEPlainRoomRefused(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, true)
	b, ctx := w.cur, context.Background()

	plain := w.bob.CreatePlainRoom(t, w.svcID)
	var conv signaling.Conversation
	waitFor(t, 15*time.Second, "the bridge to join bob's plain room and map it", func() bool {
		var err error
		conv, err = w.st.ConversationByRoom(ctx, plain)
		return err == nil
	}, b.logs.String)
	// alice, an icebox user, is added to the room's conversation.
	conv, err := b.calls.PutConversation(ctx, conv.ID, append([]string{"alice"}, conv.Participants...), plain)
	if err != nil {
		t.Fatalf("PutConversation: %v", err)
	}

	c, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: conv.ID, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	if _, err := b.calls.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	waitFor(t, 10*time.Second, "the invite and hangup dropped, the outbox empty", func() bool {
		return metric(t, b.testBridge, "icebox_matrix_outbox_dropped_total", "reason", "unencrypted_room") == 2 && depth(t, w.st) == 0
	}, b.logs.String)
	if got := metric(t, b.testBridge, "icebox_matrix_outbox_depth"); got != 0 {
		t.Errorf("icebox_matrix_outbox_depth = %v, want 0", got)
	}
	if got, sent := metric(t, b.testBridge, "matrix_voip_invite_failed_total"), metric(t, b.testBridge, "matrix_voip_invite_sent_total"); got != 1 || sent != 0 {
		t.Errorf("invites failed %v, sent %v; want 1 failed, none sent", got, sent)
	}
	if !strings.Contains(b.logs.String(), "matrix event not sent: the room is not end-to-end encrypted") {
		t.Error("no log line saying why the events were not sent")
	}
	// bob's own message after the drops: once it is back, anything the
	// bridge had sent before would have arrived.
	marker := w.bob.Send(t, plain, "m.room.message", map[string]string{"msgtype": "m.text", "body": "marker"})
	w.bob.WaitEvent(t, plain, func(ev matrixtest.Event) bool { return ev.ID == marker }, e2eeTimeout)
	for _, ev := range w.bob.Events(plain) {
		if ev.Sender == w.svcID && (strings.HasPrefix(ev.Type, "m.call.") || ev.Encrypted) {
			t.Errorf("bob received %s (encrypted %v) from the service user in the plain room", ev.Type, ev.Encrypted)
		}
	}
	types, senders := w.stored(t, plain, c.ID, "secret-offer")
	for id, typ := range types {
		if senders[id] == w.svcID && (strings.HasPrefix(typ, "m.call.") || typ == "m.room.encrypted") {
			t.Errorf("the homeserver has a %s from the service user in the plain room", typ)
		}
	}

	// bob's plaintext invite there is not icebox's to ring.
	w.bob.Send(t, plain, "m.call.invite", bobInvite("plaincall"))
	waitInbound(t, b.testBridge, "m.call.invite", "ignored", 1)
	if c, ok := w.call(t, "plaincall"); ok {
		t.Errorf("a plaintext invite rang under require_encryption: %+v", c)
	}
	if !strings.Contains(b.logs.String(), `"reason":"not encrypted, and matrix.require_encryption is on"`) {
		t.Error("no log line saying the plaintext invite was ignored")
	}
	checkNoE2EESecretsLogged(t, b.testBridge, w.bobToken)

	// Without require_encryption, the same device sends into the plain
	// room in plaintext and takes bob's plaintext calls.
	b.stop()
	open := w.start(t, false)
	c2, err := open.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: conv.ID, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	got := w.bob.WaitEvent(t, plain, isCall("m.call.invite", c2.ID), e2eeTimeout)
	if got.Encrypted || got.Sender != w.svcID || contentOf(t, got).Offer.SDP != offerSDP {
		t.Errorf("bob received the invite encrypted %v from %s, offer %q; want it in plaintext from %s with the offer",
			got.Encrypted, got.Sender, contentOf(t, got).Offer.SDP, w.svcID)
	}
	if types, _ := w.stored(t, plain); types[got.ID] != "m.call.invite" {
		t.Errorf("the homeserver has the invite as %q, want m.call.invite", types[got.ID])
	}
	if _, err := open.calls.Hangup(ctx, "alice", c2.ID, signaling.EndRequest{}); err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	w.bob.WaitEvent(t, plain, isCall("m.call.hangup", c2.ID), e2eeTimeout)
	w.bob.Send(t, plain, "m.call.invite", bobInvite("plaincall2"))
	waitInbound(t, open.testBridge, "m.call.invite", "ok", 1)
	if c, ok := w.call(t, "plaincall2"); !ok || c.Status != signaling.StatusRinging {
		t.Errorf("bob's plaintext invite without require_encryption: %+v (found %v), want ringing", c, ok)
	}
	if got := metric(t, open.testBridge, "icebox_matrix_outbox_dropped_total", "reason", "unencrypted_room"); got != 0 {
		t.Errorf("dropped{unencrypted_room} = %v without require_encryption, want 0", got)
	}
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// testE2EEUndecryptable: encrypted events the bridge cannot decrypt — a
// corrupt one, and a well-formed one whose room key never comes — are
// counted (error at once; no_session after mautrix waited 25 s and asked
// for the key), and the sync goes on: bob's real invites, sent while the
// key is awaited and after it was given up, ring.
func testE2EEUndecryptable(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, true)
	b, room := w.cur, w.conv.RoomID

	corrupt := w.sendRaw(t, room, "m.room.encrypted", map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "sender_key": "x", "ciphertext": "AwgAEn...bogus",
		"session_id": "nosuchsession", "device_id": "BOGUS",
	})
	waitFor(t, e2eeTimeout, "the corrupt event counted", func() bool {
		return metric(t, b.testBridge, "icebox_matrix_undecryptable_total", "reason", "error") == 1
	}, b.logs.String)

	// Well formed (base64 ciphertext, 43-character session ID) but no
	// device ever shares its key.
	unknown := w.sendRaw(t, room, "m.room.encrypted", map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "sender_key": strings.Repeat("S", 43),
		"ciphertext": "Aw" + strings.Repeat("A", 150), "session_id": strings.Repeat("B", 43), "device_id": "BOGUS",
	})
	awaiting := time.Now()
	w.bob.Send(t, room, "m.call.invite", bobInvite("after1"))
	waitInbound(t, b.testBridge, "m.call.invite", "ok", 1)
	t.Logf("an invite sent while the bridge awaited a room key rang %v later", time.Since(awaiting).Round(time.Millisecond))

	waitFor(t, 40*time.Second, "the keyless event counted", func() bool {
		return metric(t, b.testBridge, "icebox_matrix_undecryptable_total", "reason", "no_session") == 1
	}, b.logs.String)
	t.Logf("the keyless event was counted no_session %v after it was sent", time.Since(awaiting).Round(time.Millisecond))
	logs := b.logs.String()
	for _, id := range []string{corrupt, unknown} {
		if !strings.Contains(logs, `"event_id":"`+id+`"`) || !strings.Contains(logs, "matrix event could not be decrypted") {
			t.Errorf("no log line saying %s could not be decrypted", id)
		}
	}

	w.bob.Send(t, room, "m.call.hangup", bobHangup("after1"))
	w.bob.Send(t, room, "m.call.invite", bobInvite("after2"))
	waitInbound(t, b.testBridge, "m.call.invite", "ok", 2)
	if c, ok := w.call(t, "after2"); !ok || c.Status != signaling.StatusRinging {
		t.Errorf("after2 = %+v (found %v), want ringing", c, ok)
	}
	if got := undecryptable(t, b.testBridge); got != 2 {
		t.Errorf("icebox_matrix_undecryptable_total = %v, want 2", got)
	}
	if got := metric(t, b.testBridge, "icebox_matrix_sync_errors_total", "kind", "processing"); got != 0 {
		t.Errorf("sync processing errors = %v, want 0", got)
	}
	checkNoE2EESecretsLogged(t, b.testBridge, w.bobToken)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// testE2EERestart: a bridge started again on the same encryption directory
// and store is the same device with the same keys: its new call in the
// encrypted room reaches bob decrypted, and bob's encrypted invite reaches
// the service.
func testE2EERestart(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, true)
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()
	device, _ := storedSession(t, w.dir)

	// A first call, so that a room key was shared with bob before.
	c1, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	if _, err := b.calls.Hangup(ctx, "alice", c1.ID, signaling.EndRequest{}); err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.hangup", c1.ID), e2eeTimeout)
	waitFor(t, 10*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	b.stop()

	restart := time.Now()
	again := w.start(t, true)
	t.Logf("restarted bridge up and synced in %v", time.Since(restart).Round(time.Millisecond))
	if d, _ := storedSession(t, w.dir); d != device {
		t.Fatalf("after the restart the session is device %s, want %s", d, device)
	}
	for _, line := range []string{"password login", `"new_store":true`} {
		if strings.Contains(again.logs.String(), line) {
			t.Errorf("the restart logged %q: it should reuse the device and its store", line)
		}
	}
	var keys struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	}
	api(t, w.hs.URL(), http.MethodPost, "/_matrix/client/v3/keys/query", w.bobToken,
		map[string]any{"device_keys": map[string][]string{w.svcID: {}}}, &keys)
	if devs := keys.DeviceKeys[w.svcID]; len(devs) != 1 || devs[device] == nil {
		t.Errorf("the service user's devices with keys: %d (%s present: %v), want only %s", len(devs), device, devs[device] != nil, device)
	}

	c2, err := again.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	sent := time.Now()
	inv := w.bob.WaitEvent(t, room, isCall("m.call.invite", c2.ID), e2eeTimeout)
	t.Logf("after the restart, the invite reached bob %v after Initiate", time.Since(sent).Round(time.Millisecond))
	if !inv.Encrypted || inv.Sender != w.svcID || contentOf(t, inv).Offer.SDP != offerSDP {
		t.Errorf("after the restart bob received the invite encrypted %v from %s; want it encrypted from %s with the offer", inv.Encrypted, inv.Sender, w.svcID)
	}
	if types, _ := w.stored(t, room, c2.ID, "secret-offer"); types[inv.ID] != "m.room.encrypted" {
		t.Errorf("the homeserver has the invite as %q, want m.room.encrypted", types[inv.ID])
	}
	if _, err := again.calls.Hangup(ctx, "alice", c2.ID, signaling.EndRequest{}); err != nil {
		t.Fatalf("Hangup: %v", err)
	}
	w.bob.WaitEvent(t, room, isCall("m.call.hangup", c2.ID), e2eeTimeout)

	w.bob.Send(t, room, "m.call.invite", bobInvite("afterrestart"))
	waitInbound(t, again.testBridge, "m.call.invite", "ok", 1)
	if c, ok := w.call(t, "afterrestart"); !ok || c.Status != signaling.StatusRinging || c.SDPOffer != bobSDP {
		t.Errorf("bob's invite after the restart = %+v (found %v), want ringing with his offer", c, ok)
	}
	w.checkClean(t, again.testBridge)
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}

// testE2EECallBeforeJoin: a call placed right after the conversation's
// room was created, while bob is only invited, is encrypted for him too
// (the room key goes to invited members): once he joins, he can read it.
func testE2EECallBeforeJoin(t *testing.T) {
	t.Parallel()
	begin := time.Now()
	w := newE2EEWorld(t, false)
	b, room, ctx := w.cur, w.conv.RoomID, context.Background()

	c, err := b.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.UserID()})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	waitFor(t, 10*time.Second, "the invite sent", func() bool {
		return metric(t, b.testBridge, "matrix_voip_invite_sent_total") == 1 && depth(t, w.st) == 0
	}, b.logs.String)
	w.bob.Join(t, room)
	inv := w.bob.WaitEvent(t, room, isCall("m.call.invite", c.ID), e2eeTimeout)
	if !inv.Encrypted || inv.Sender != w.svcID || contentOf(t, inv).Offer.SDP != offerSDP {
		t.Errorf("bob received the invite encrypted %v from %s; want it encrypted from %s with the offer", inv.Encrypted, inv.Sender, w.svcID)
	}
	if types, _ := w.stored(t, room, c.ID, "secret-offer"); types[inv.ID] != "m.room.encrypted" {
		t.Errorf("the homeserver has the invite as %q, want m.room.encrypted", types[inv.ID])
	}
	if n := w.bob.DecryptFailures(); n != 0 {
		t.Errorf("bob failed to decrypt %d events", n)
	}
	t.Logf("total %v", time.Since(begin).Round(time.Millisecond))
}
