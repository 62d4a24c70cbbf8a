package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// matrixUser is a plain Matrix client for tests: join and sync over HTTP.
type matrixUser struct {
	hs    string
	token string
	since string
}

func (u *matrixUser) do(t *testing.T, method, path string, body any, out any) {
	t.Helper()
	var rd bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&rd).Encode(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, u.hs+path, &rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, buf.String())
	}
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatal(err)
		}
	}
}

type roomEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	EventID string          `json:"event_id"`
	Content json.RawMessage `json:"content"`
}

// syncRoom returns the timeline events of room from the next sync.
func (u *matrixUser) syncRoom(t *testing.T, room string) []roomEvent {
	t.Helper()
	var resp struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []roomEvent `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
			Invite map[string]json.RawMessage `json:"invite"`
		} `json:"rooms"`
	}
	q := url.Values{"timeout": {"1000"}}
	if u.since != "" {
		q.Set("since", u.since)
	}
	u.do(t, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), nil, &resp)
	u.since = resp.NextBatch
	return resp.Rooms.Join[room].Timeline.Events
}

// waitCallEvents syncs until the room has shown n m.call.* events (or the deadline).
func (u *matrixUser) waitCallEvents(t *testing.T, room string, n int) []roomEvent {
	t.Helper()
	var got []roomEvent
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		for _, ev := range u.syncRoom(t, room) {
			if strings.HasPrefix(ev.Type, "m.call.") {
				got = append(got, ev)
			}
		}
	}
	if len(got) < n {
		t.Fatalf("saw %d m.call.* events in %s, want %d: %+v", len(got), room, n, got)
	}
	return got
}

// matrixBed is icebox with the Matrix bridge on, against a fresh Dendrite:
// conversation c1 = {alice, bob}, its room created by icebox and joined by
// bob, who has synced up to his join.
type matrixBed struct {
	hs      *matrixtest.Homeserver
	service string // the service user's Matrix ID
	bob     string // bob's Matrix ID
	bobc    *matrixUser
	in      *instance
	room    string
}

// Bearer tokens of the bed's icebox users.
const matrixAliceTok, matrixAdminTok = "matrix-bed-alice-token-01", "matrix-bed-admin-token-01"

func startMatrixBed(t *testing.T) *matrixBed {
	t.Helper()
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", "service-password-123", false)
	serviceToken, device := hs.Login(t, service, "service-password-123") // its own device
	bob, bobToken, _ := hs.Register(t, "bob", "bob-password-123", false)
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}),
		"ICEBOX_AUTH_STATIC_TOKENS="+hash(matrixAliceTok)+":alice,"+hash(matrixAdminTok)+":ops:admin",
		"MATRIX_ENABLED=true", "MATRIX_HOMESERVER_URL="+hs.URL(), "MATRIX_SERVICE_USER="+service,
		"MATRIX_ACCESS_TOKEN="+serviceToken, "ICEBOX_MATRIX_DEVICE_ID="+device)

	// A conversation between a local user and a Matrix user gets a room, and the Matrix user is invited.
	code, resp := apiRequest(t, http.MethodPut, in.httpURL("/admin/conversations/c1"), matrixAdminTok,
		fmt.Sprintf(`{"participants":["alice",%q]}`, bob))
	if code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, resp)
	}
	var conv struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(resp, &conv); err != nil || !strings.HasPrefix(conv.RoomID, "!") {
		t.Fatalf("conversation has no room: %s", resp)
	}
	bobc := &matrixUser{hs: hs.URL(), token: bobToken}
	bobc.do(t, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(conv.RoomID), map[string]any{}, nil)
	bobc.syncRoom(t, conv.RoomID) // catch up to the join
	return &matrixBed{hs: hs, service: service, bob: bob, bobc: bobc, in: in, room: conv.RoomID}
}

func TestCallsGoOutToMatrix(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t)
	in, service, bob, bobClient := b.in, b.service, b.bob, b.bobc
	aliceTok := matrixAliceTok

	code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/initiate"), aliceTok,
		fmt.Sprintf(`{"conversation_id":"c1","sdp_offer":"v=0 offer-from-alice","invitee":%q}`, bob))
	if code != http.StatusCreated {
		t.Fatalf("initiate: %d %s", code, resp)
	}
	var call struct {
		ID     string `json:"id"`
		Matrix *struct {
			EventID string `json:"event_id"`
			PartyID string `json:"party_id"`
			RoomID  string `json:"room_id"`
		} `json:"matrix"`
	}
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	if call.Matrix == nil || call.Matrix.RoomID != b.room || !strings.HasPrefix(call.Matrix.EventID, "$") {
		t.Fatalf("initiate response lacks the Matrix invite: %s", resp)
	}
	cands := `{"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}`
	if code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/"+call.ID+"/candidates"), aliceTok, cands); code != http.StatusNoContent {
		t.Fatalf("candidates: %d %s", code, resp)
	}
	if code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/"+call.ID+"/hangup"), aliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup: %d %s", code, resp)
	}

	events := bobClient.waitCallEvents(t, b.room, 3)
	wantTypes := []string{"m.call.invite", "m.call.candidates", "m.call.hangup"}
	for i, ev := range events[:3] {
		if ev.Type != wantTypes[i] || ev.Sender != service {
			t.Fatalf("event %d = %s from %s, want %s from %s", i, ev.Type, ev.Sender, wantTypes[i], service)
		}
		var c struct {
			CallID  string          `json:"call_id"`
			PartyID string          `json:"party_id"`
			Version json.RawMessage `json:"version"`
		}
		if err := json.Unmarshal(ev.Content, &c); err != nil {
			t.Fatal(err)
		}
		if c.CallID != call.ID || c.PartyID != call.Matrix.PartyID || string(c.Version) != `"1"` {
			t.Fatalf("%s content %s: want call_id %s, party_id %s, version \"1\" (a string)", ev.Type, ev.Content, call.ID, call.Matrix.PartyID)
		}
	}
	var invite struct {
		Lifetime int64  `json:"lifetime"`
		Invitee  string `json:"invitee"`
		Offer    struct {
			Type string `json:"type"`
			SDP  string `json:"sdp"`
		} `json:"offer"`
	}
	if err := json.Unmarshal(events[0].Content, &invite); err != nil {
		t.Fatal(err)
	}
	if invite.Lifetime <= 0 || invite.Invitee != bob || invite.Offer.Type != "offer" || invite.Offer.SDP != "v=0 offer-from-alice" {
		t.Fatalf("invite content %s", events[0].Content)
	}
	if events[0].EventID != call.Matrix.EventID {
		t.Fatalf("invite event %s, initiate reported %s", events[0].EventID, call.Matrix.EventID)
	}
	if !strings.Contains(string(events[1].Content), `{"candidate":""}`) {
		t.Fatalf("end-of-candidates lost: %s", events[1].Content)
	}
	// The sender counts an event after the homeserver's reply, which bob's
	// sync may beat: wait for the counters.
	counted := func(m map[string]float64) bool {
		return sum(m, "matrix_voip_invite_sent_total") >= 1 && sum(m, "matrix_voip_hangup_sent_total") >= 1 &&
			sum(m, "matrix_voip_ice_candidates_sent_total") >= 1
	}
	if m := in.waitMetrics(t, counted); !counted(m) {
		t.Errorf("Matrix sends not counted: invite %v, candidates %v, hangup %v", sum(m, "matrix_voip_invite_sent_total"),
			sum(m, "matrix_voip_ice_candidates_sent_total"), sum(m, "matrix_voip_hangup_sent_total"))
	}
}

func TestMatrixUserCallsIcebox(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t)
	in, service, bob, bobClient := b.in, b.service, b.bob, b.bobc
	aliceTok := matrixAliceTok

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+loopback(in.httpPort)+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + aliceTok}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	awaitWS := func(typ string) map[string]any {
		t.Helper()
		for {
			rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
			_, data, err := ws.Read(rctx)
			rcancel()
			if err != nil {
				t.Fatalf("waiting for %s on alice's WebSocket: %v", typ, err)
			}
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			if m["type"] == typ {
				return m
			}
		}
	}
	// The hub registers the socket after the upgrade: a round trip makes sure.
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"get","ref":"sync","call_id":"none"}`)); err != nil {
		t.Fatal(err)
	}
	awaitWS("error")

	send := func(typ, txn string, content map[string]any) {
		content["call_id"], content["party_id"], content["version"] = "bobcall1", "bobdev", "1"
		bobClient.do(t, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(b.room)+"/send/"+typ+"/"+txn, content, nil)
	}
	send("m.call.invite", "t1", map[string]any{"lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": "v=0 from-bob"}})
	invite := awaitWS("CallInviteViaMatrix")
	if invite["call_id"] != "bobcall1" || invite["initiator_id"] != bob || invite["sdp_offer"] != "v=0 from-bob" {
		t.Fatalf("CallInviteViaMatrix = %v", invite)
	}
	code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/bobcall1/answer"), aliceTok, `{"sdp_answer":"v=0 from-alice"}`)
	if code != http.StatusOK {
		t.Fatalf("alice answers: %d %s", code, resp)
	}
	var answer roomEvent
	for _, ev := range bobClient.waitCallEvents(t, b.room, 2) { // his own invite, then icebox's answer
		if ev.Type == "m.call.answer" {
			answer = ev
		}
	}
	if answer.Sender != service || !strings.Contains(string(answer.Content), `"call_id":"bobcall1"`) ||
		!strings.Contains(string(answer.Content), "v=0 from-alice") {
		t.Fatalf("bob did not get alice's answer: %+v", answer)
	}
	send("m.call.hangup", "t2", map[string]any{"reason": "user_hangup"})
	hangup := awaitWS("CallHangup")
	if hangup["call_id"] != "bobcall1" || hangup["status"] != "ended" {
		t.Fatalf("CallHangup = %v", hangup)
	}
	timed := func(m map[string]float64) bool {
		return sum(m, "matrix_voip_call_duration_seconds_count") >= 1 && sum(m, "matrix_voip_answer_received_total") == 0
	}
	if m := in.waitMetrics(t, timed); !timed(m) {
		t.Errorf("call duration not observed (count %v)", sum(m, "matrix_voip_call_duration_seconds_count"))
	}
}

// TestMatrixOutageKeepsEventsInOrder: the homeserver stops mid-call; the call
// goes on over the API, its events wait in the outbox, and once the
// homeserver is back every one arrives once, in order.
func TestMatrixOutageKeepsEventsInOrder(t *testing.T) {
	t.Parallel()
	b := startMatrixBed(t)
	hs, in, bob, bobClient := b.hs, b.in, b.bob, b.bobc
	aliceTok := matrixAliceTok

	code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/initiate"), aliceTok,
		fmt.Sprintf(`{"conversation_id":"c1","sdp_offer":"v=0 offer","invitee":%q}`, bob))
	if code != http.StatusCreated {
		t.Fatalf("initiate: %d %s", code, resp)
	}
	var call struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	bobClient.waitCallEvents(t, b.room, 1) // the invite

	hs.Stop(t)
	for i, body := range []string{
		`{"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}]}`,
		`{"candidates":[{"candidate":""}]}`,
	} {
		if code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/"+call.ID+"/candidates"), aliceTok, body); code != http.StatusNoContent {
			t.Fatalf("candidates %d during the outage: %d %s", i, code, resp)
		}
	}
	if code, resp := apiRequest(t, http.MethodPost, in.httpURL("/calls/"+call.ID+"/hangup"), aliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup during the outage: %d %s", code, resp)
	}
	queued := func(m map[string]float64) bool { return sum(m, "icebox_matrix_outbox_depth") >= 2 }
	if m := in.waitMetrics(t, queued); !queued(m) {
		t.Fatalf("outbox depth during the outage = %v, want the candidates and the hangup waiting", sum(m, "icebox_matrix_outbox_depth"))
	}

	hs.Restart(t)
	var got []string
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && (len(got) == 0 || got[len(got)-1] != "m.call.hangup") {
		for _, ev := range bobClient.syncRoom(t, b.room) {
			if strings.HasPrefix(ev.Type, "m.call.") {
				got = append(got, ev.Type)
			}
		}
	}
	if strings.Join(got, ",") != "m.call.candidates,m.call.hangup" {
		t.Fatalf("after the outage bob saw %v, want the (batched) candidates then the hangup, once each", got)
	}
	// Nothing more: no duplicate arrives late.
	for _, ev := range bobClient.syncRoom(t, b.room) {
		if strings.HasPrefix(ev.Type, "m.call.") {
			t.Fatalf("a late duplicate: %s", ev.Type)
		}
	}
}
