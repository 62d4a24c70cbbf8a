package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// matrixBed is icebox with the Matrix bridge on, against a fresh Dendrite:
// the bridge logs in with the service user's password (its own device,
// end-to-end encryption required); conversation c1 = {alice, bob}, its
// encrypted room created by icebox and joined by bob, a Matrix user with
// an E2EE client of his own.
type matrixBed struct {
	hs       *matrixtest.Homeserver
	service  string // the service user's Matrix ID
	bob      *matrixtest.E2EEUser
	in       *instance
	room     string
	bin      string // the icebox binary
	cfg      string // icebox's configuration, to start it again on the same state
	env      []string
	stateDir string
}

// Bearer tokens of the bed's icebox users, and the service user's password.
const (
	matrixAliceTok, matrixAdminTok = "matrix-bed-alice-token-01", "matrix-bed-admin-token-01"
	servicePassword                = "service-password-123"
)

func startMatrixBed(t *testing.T, bin string) *matrixBed {
	t.Helper()
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password-123", false)
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	b := &matrixBed{hs: hs, service: service, bin: bin, stateDir: filepath.Join(t.TempDir(), "state")}
	b.cfg = testConfig(b.stateDir, cfgOpts{secret: testSecret})
	b.env = []string{
		"ICEBOX_AUTH_STATIC_TOKENS=" + hash(matrixAliceTok) + ":alice," + hash(matrixAdminTok) + ":ops:admin",
		"MATRIX_ENABLED=true", "MATRIX_HOMESERVER_URL=" + hs.URL(), "MATRIX_SERVICE_USER=" + service,
		"ICEBOX_MATRIX_PASSWORD=" + servicePassword,
		// The first invite also shares the room key with bob's device: give
		// initiate time to report its event ID on a slow machine.
		"ICEBOX_MATRIX_INVITE_WAIT=5s",
	}
	b.in = startIceboxBin(t, bin, b.cfg, b.env...)
	b.bob = hs.NewE2EEUser(t, bobID, "bob-password-123")

	// A conversation between a local user and a Matrix user gets an
	// encrypted room, and the Matrix user is invited: the PUT creates the
	// room at the homeserver before it answers, which took over the
	// shared client's 5 s on a loaded CI machine.
	code, resp := clientRequest(t, roomCreateClient, http.MethodPut, b.in.httpURL("/admin/conversations/c1"), matrixAdminTok,
		fmt.Sprintf(`{"participants":["alice",%q]}`, bobID))
	if code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, resp)
	}
	var conv struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(resp, &conv); err != nil || !strings.HasPrefix(conv.RoomID, "!") {
		t.Fatalf("conversation has no room: %s", resp)
	}
	b.room = conv.RoomID
	b.bob.Join(t, b.room)
	return b
}

// restart stops icebox and starts it again on the same state directory.
func (b *matrixBed) restart(t *testing.T) {
	t.Helper()
	b.in.stop(t)
	b.in = startIceboxBin(t, b.bin, b.cfg, b.env...)
}

// deviceID is the device icebox's password login made (state_dir/matrix).
func (b *matrixBed) deviceID(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(b.stateDir, "matrix", "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.DeviceID == "" {
		t.Fatalf("session.json: %s (%v)", raw, err)
	}
	return s.DeviceID
}

// dialAlice opens alice's WebSocket (registered with the hub on return).
func (b *matrixBed) dialAlice(t *testing.T) *wsClient {
	t.Helper()
	env := &callsEnv{instance: b.in, tok: apiTokens{"alice": matrixAliceTok}}
	return env.dialWS(t, "alice", false)
}

// fromService matches the service user's events of one type and call.
func (b *matrixBed) fromService(typ, callID string) func(matrixtest.Event) bool {
	return func(ev matrixtest.Event) bool {
		return ev.Sender == b.service && ev.Type == typ && strings.Contains(string(ev.Content), `"call_id":"`+callID+`"`)
	}
}

// initiatedCall is what POST /calls/initiate answers.
type initiatedCall struct {
	ID     string `json:"id"`
	Matrix *struct {
		EventID string `json:"event_id"`
		PartyID string `json:"party_id"`
		RoomID  string `json:"room_id"`
	} `json:"matrix"`
}

// aliceCallsBob: alice (WebSocket/REST) calls bob (Matrix) with an offer,
// sends candidates and hangs up; bob's client decrypts the invite, the
// batched candidates and the hangup. Returns the call and the events.
func (b *matrixBed) aliceCallsBob(t *testing.T, sdp string) (initiatedCall, []matrixtest.Event) {
	t.Helper()
	code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/initiate"), matrixAliceTok,
		fmt.Sprintf(`{"conversation_id":"c1","sdp_offer":%q,"invitee":%q}`, sdp, b.bob.UserID()))
	if code != http.StatusCreated {
		t.Fatalf("initiate: %d %s", code, resp)
	}
	var call initiatedCall
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	if call.Matrix == nil || call.Matrix.RoomID != b.room || !strings.HasPrefix(call.Matrix.EventID, "$") {
		t.Fatalf("initiate response lacks the Matrix invite: %s", resp)
	}
	cands := `{"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.77 50000 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}`
	if code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+call.ID+"/candidates"), matrixAliceTok, cands); code != http.StatusNoContent {
		t.Fatalf("candidates: %d %s", code, resp)
	}
	if code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+call.ID+"/hangup"), matrixAliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup: %d %s", code, resp)
	}
	var events []matrixtest.Event
	for _, typ := range []string{"m.call.invite", "m.call.candidates", "m.call.hangup"} {
		ev := b.bob.WaitEvent(t, b.room, b.fromService(typ, call.ID), 30*time.Second)
		if !ev.Encrypted {
			t.Fatalf("%s reached bob in plaintext", typ)
		}
		events = append(events, ev)
	}
	return call, events
}

// bobCallsAlice: bob (Matrix, encrypted) calls alice; her WebSocket rings,
// she answers over REST, bob decrypts the answer, and his hangup ends the
// call on her side.
func (b *matrixBed) bobCallsAlice(t *testing.T, ws *wsClient, callID, sdp string) {
	t.Helper()
	send := func(typ string, content map[string]any) {
		content["call_id"], content["party_id"], content["version"] = callID, "bobdev", "1"
		b.bob.Send(t, b.room, typ, content)
	}
	send("m.call.invite", map[string]any{"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": sdp}})
	invite := ws.await(t, "the Matrix invite", event("CallInviteViaMatrix", callID))
	if invite.InitiatorID != b.bob.UserID() || invite.SDPOffer != sdp {
		t.Fatalf("CallInviteViaMatrix = %s", invite.raw)
	}
	code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+callID+"/answer"), matrixAliceTok, `{"sdp_answer":"v=0 answer-from-alice"}`)
	if code != http.StatusOK {
		t.Fatalf("alice answers: %d %s", code, resp)
	}
	answer := b.bob.WaitEvent(t, b.room, b.fromService("m.call.answer", callID), 30*time.Second)
	if !answer.Encrypted || !strings.Contains(string(answer.Content), "v=0 answer-from-alice") {
		t.Fatalf("bob's copy of alice's answer: encrypted %v, content %s", answer.Encrypted, answer.Content)
	}
	send("m.call.hangup", map[string]any{"reason": "user_hangup"})
	// Matrix caused it: CallHangupViaMatrix (every Matrix-caused event is <Name>ViaMatrix).
	if hangup := ws.await(t, "the hangup", event("CallHangupViaMatrix", callID)); hangup.Status != "ended" {
		t.Fatalf("CallHangupViaMatrix = %s", hangup.raw)
	}
}

// assertHomeserverSeesNothing reads the room as the homeserver stores it
// and fails on any trace of the calls: an m.call.* type, an SDP, a
// candidate address or a call ID.
func (b *matrixBed) assertHomeserverSeesNothing(t *testing.T, secrets ...string) {
	t.Helper()
	raw := b.hs.RoomMessages(t, b.bob.Client.AccessToken, b.room)
	encrypted := 0
	for _, ev := range raw {
		for _, s := range append([]string{"m.call."}, secrets...) {
			if strings.Contains(string(ev), s) {
				t.Fatalf("the homeserver's copy of the room holds %q: %s", s, ev)
			}
		}
		var e struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(ev, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type == "m.room.encrypted" {
			encrypted++
		}
	}
	if encrypted == 0 {
		t.Fatalf("no m.room.encrypted event among the room's %d events", len(raw))
	}
}

// e2eeCallsBothWays is the whole E2EE story on one bed: a call each way,
// decrypted on both sides, with nothing readable on the homeserver.
func e2eeCallsBothWays(t *testing.T, b *matrixBed) {
	t.Helper()
	ws := b.dialAlice(t)
	call, events := b.aliceCallsBob(t, "v=0 offer-from-alice SECRET-SDP-A")
	var invite struct {
		CallID   string          `json:"call_id"`
		PartyID  string          `json:"party_id"`
		Version  json.RawMessage `json:"version"`
		Lifetime int64           `json:"lifetime"`
		Invitee  string          `json:"invitee"`
		Offer    struct {
			Type string `json:"type"`
			SDP  string `json:"sdp"`
		} `json:"offer"`
	}
	if err := json.Unmarshal(events[0].Content, &invite); err != nil {
		t.Fatal(err)
	}
	if invite.CallID != call.ID || invite.PartyID != call.Matrix.PartyID || string(invite.Version) != `"1"` ||
		invite.Lifetime <= 0 || invite.Invitee != b.bob.UserID() || invite.Offer.SDP != "v=0 offer-from-alice SECRET-SDP-A" {
		t.Fatalf("decrypted invite %s", events[0].Content)
	}
	if events[0].ID != call.Matrix.EventID {
		t.Fatalf("invite event %s, initiate reported %s", events[0].ID, call.Matrix.EventID)
	}
	if !strings.Contains(string(events[1].Content), `{"candidate":""}`) || !strings.Contains(string(events[1].Content), "192.0.2.77") {
		t.Fatalf("decrypted candidates %s", events[1].Content)
	}

	b.bobCallsAlice(t, ws, "bobcall-e2ee-1", "v=0 offer-from-bob SECRET-SDP-B")
	if n := b.bob.DecryptFailures(); n != 0 {
		t.Errorf("bob failed to decrypt %d events", n)
	}
	b.assertHomeserverSeesNothing(t, call.ID, "bobcall-e2ee-1", "SECRET-SDP-A", "SECRET-SDP-B", "answer-from-alice", "192.0.2.77")

	counted := func(m map[string]float64) bool {
		return sum(m, "matrix_voip_invite_sent_total") >= 1 && sum(m, "matrix_voip_hangup_sent_total") >= 1 &&
			m[`icebox_matrix_inbound_total{result="ok",type="m.call.invite"}`] >= 1 && sum(m, "icebox_matrix_undecryptable_total") == 0
	}
	if m := b.in.waitMetrics(t, counted); !counted(m) {
		t.Errorf("metrics: invites sent %v, hangups sent %v, invites received %v, undecryptable %v",
			sum(m, "matrix_voip_invite_sent_total"), sum(m, "matrix_voip_hangup_sent_total"),
			m[`icebox_matrix_inbound_total{result="ok",type="m.call.invite"}`], sum(m, "icebox_matrix_undecryptable_total"))
	}
}

// TestMatrixE2EECalls: an E2EE Matrix user and an icebox WebSocket user
// call each other both ways in the encrypted room icebox created; the
// homeserver stores only m.room.encrypted events.
func TestMatrixE2EECalls(t *testing.T) {
	t.Parallel()
	e2eeCallsBothWays(t, startMatrixBed(t, iceboxBin))
}

// TestMatrixE2EEStaticBinary: the binary as it ships (CGO_ENABLED=0, pure-Go
// Olm and SQLite) does the same.
func TestMatrixE2EEStaticBinary(t *testing.T) {
	t.Parallel()
	e2eeCallsBothWays(t, startMatrixBed(t, staticBin(t)))
}

// TestMatrixE2EERestart: after a restart icebox is the same device with the
// same keys: no new login, no new cross-signing, and calls in the
// encrypted room go on both ways.
func TestMatrixE2EERestart(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t, iceboxBin)
	b.aliceCallsBob(t, "v=0 before-restart")
	device := b.deviceID(t)
	if !strings.Contains(b.in.out.String(), "matrix device cross-signed") {
		t.Errorf("the first start did not cross-sign its device:\n%s", b.in.out.String())
	}

	first := b.in.out.String()
	b.restart(t)
	ws := b.dialAlice(t)
	b.aliceCallsBob(t, "v=0 after-restart")
	b.bobCallsAlice(t, ws, "bobcall-after-restart", "v=0 bob-after-restart")
	if got := b.deviceID(t); got != device {
		t.Fatalf("device after restart %s, want %s", got, device)
	}
	for _, line := range []string{"password login", "cross-signed", `"new_store":true`} {
		if strings.Contains(b.in.out.String(), line) {
			t.Errorf("the restarted icebox logged %q: it should reuse its device and keys", line)
		}
	}
	if n := b.bob.DecryptFailures(); n != 0 {
		t.Errorf("bob failed to decrypt %d events", n)
	}
	// The device's secrets never reach the log, in either run.
	secrets := map[string]string{"password": servicePassword}
	for _, f := range []string{"pickle.key", "recovery.key"} {
		raw, err := os.ReadFile(filepath.Join(b.stateDir, "matrix", f))
		if err != nil {
			t.Fatal(err)
		}
		secrets[f] = strings.TrimSpace(string(raw))
	}
	for _, out := range []string{first, b.in.out.String()} {
		for name, secret := range secrets {
			if strings.Contains(out, secret) {
				t.Errorf("the %s appears in icebox's log", name)
			}
		}
	}
}

// TestMatrixUnencryptedRoomRefused: a conversation whose room is not
// encrypted, with require_encryption on (the default): the call works over
// the API, nothing of it is sent into the room, the refusal is counted, and
// a plaintext call from the room is ignored.
func TestMatrixUnencryptedRoomRefused(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t, iceboxBin)
	plain := b.bob.CreatePlainRoom(t, b.service)
	b.bob.WaitJoined(t, plain, b.service, 30*time.Second) // icebox auto-joins
	// and maps the room to a conversation of its members; alice joins it.
	sum := sha256.Sum256([]byte(plain))
	convID := "room-" + hex.EncodeToString(sum[:8])
	var code int
	var resp []byte
	ok := waitFor(10*time.Second, func() bool {
		code, resp = apiRequest(t, http.MethodPut, b.in.httpURL("/admin/conversations/"+convID), matrixAdminTok,
			fmt.Sprintf(`{"participants":["alice",%q],"room_id":%q}`, b.bob.UserID(), plain))
		return code == http.StatusOK
	})
	if !ok {
		t.Fatalf("PUT the plain room's conversation: %d %s", code, resp)
	}

	code, resp = apiRequest(t, http.MethodPost, b.in.httpURL("/calls/initiate"), matrixAliceTok,
		fmt.Sprintf(`{"conversation_id":%q,"sdp_offer":"v=0 never-in-the-clear","invitee":%q}`, convID, b.bob.UserID()))
	if code != http.StatusCreated {
		t.Fatalf("initiate in the plain room's conversation: %d %s", code, resp)
	}
	var call initiatedCall
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	if code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+call.ID+"/hangup"), matrixAliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup: %d %s", code, resp)
	}
	refused := func(m map[string]float64) bool {
		return m[`icebox_matrix_outbox_dropped_total{reason="unencrypted_room"}`] >= 2 && m["icebox_matrix_outbox_depth"] == 0
	}
	if m := b.in.waitMetrics(t, refused); !refused(m) {
		t.Fatalf("dropped as unencrypted %v, outbox depth %v; want the invite and the hangup dropped",
			m[`icebox_matrix_outbox_dropped_total{reason="unencrypted_room"}`], m["icebox_matrix_outbox_depth"])
	}

	// A plaintext call from the room is not taken: icebox could not answer it.
	b.bob.Send(t, plain, "m.call.invite", map[string]any{"call_id": "plaincall", "party_id": "bobdev", "version": "1",
		"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0 plain"}})
	ignored := func(m map[string]float64) bool {
		return m[`icebox_matrix_inbound_total{result="ignored",type="m.call.invite"}`] >= 1
	}
	if m := b.in.waitMetrics(t, ignored); !ignored(m) {
		t.Fatalf("the plaintext invite was not counted as ignored: %v", m[`icebox_matrix_inbound_total{result="ignored",type="m.call.invite"}`])
	}
	if code, _ := apiRequest(t, http.MethodGet, b.in.httpURL("/calls/plaincall"), matrixAliceTok, ""); code != http.StatusNotFound {
		t.Fatalf("GET /calls/plaincall = %d, want 404: a plaintext invite made a call", code)
	}
	for _, ev := range b.bob.Events(plain) {
		if ev.Sender == b.service && (strings.HasPrefix(ev.Type, "m.call.") || ev.Encrypted) {
			t.Fatalf("icebox sent %s into the plain room", ev.Type)
		}
	}
}

// TestMatrixOutageKeepsEventsInOrder: the homeserver stops mid-call; the call
// goes on over the API, its events wait in the outbox, and once the
// homeserver is back every one arrives once, in order, encrypted.
// roomCreateClient is for requests that create a Matrix room before they
// answer.
var roomCreateClient = &http.Client{Timeout: 30 * time.Second}

func TestMatrixOutageKeepsEventsInOrder(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t, iceboxBin)
	code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/initiate"), matrixAliceTok,
		fmt.Sprintf(`{"conversation_id":"c1","sdp_offer":"v=0 offer","invitee":%q}`, b.bob.UserID()))
	if code != http.StatusCreated {
		t.Fatalf("initiate: %d %s", code, resp)
	}
	var call initiatedCall
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	b.bob.WaitEvent(t, b.room, b.fromService("m.call.invite", call.ID), 30*time.Second)

	b.hs.Stop(t)
	for i, body := range []string{
		`{"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}]}`,
		`{"candidates":[{"candidate":""}]}`,
	} {
		if code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+call.ID+"/candidates"), matrixAliceTok, body); code != http.StatusNoContent {
			t.Fatalf("candidates %d during the outage: %d %s", i, code, resp)
		}
	}
	if code, resp := apiRequest(t, http.MethodPost, b.in.httpURL("/calls/"+call.ID+"/hangup"), matrixAliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup during the outage: %d %s", code, resp)
	}
	queued := func(m map[string]float64) bool { return sum(m, "icebox_matrix_outbox_depth") >= 2 }
	if m := b.in.waitMetrics(t, queued); !queued(m) {
		t.Fatalf("outbox depth during the outage = %v, want the candidates and the hangup waiting", sum(m, "icebox_matrix_outbox_depth"))
	}

	b.hs.Restart(t)
	b.bob.WaitEvent(t, b.room, b.fromService("m.call.hangup", call.ID), 90*time.Second)
	var got []string
	for _, ev := range b.bob.Events(b.room) {
		if ev.Sender == b.service && strings.HasPrefix(ev.Type, "m.call.") {
			if !ev.Encrypted {
				t.Fatalf("%s arrived in plaintext", ev.Type)
			}
			got = append(got, ev.Type)
		}
	}
	if strings.Join(got, ",") != "m.call.invite,m.call.candidates,m.call.hangup" {
		t.Fatalf("bob saw %v, want the invite, the (batched) candidates, then the hangup, once each", got)
	}
}
