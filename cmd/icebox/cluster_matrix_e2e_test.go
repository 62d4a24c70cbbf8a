package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestClusterMatrixTakeover: three nodes on one PostgreSQL database, all
// with the Matrix bridge on, against Dendrite (issue 18, item 3). Node A
// takes the bridge's lease and runs the bridge (its password login makes
// the device; session, keys and room state go to the database); B and C
// wait. The conversation's encrypted room is created through C, as the
// same device. alice calls bob (a Matrix user with an E2EE client) through
// B: A sends the encrypted invite. A is killed with SIGKILL mid-call; alice's
// candidates and hangup are committed through another node while no node
// runs the bridge (queued in the outbox). One of B and C takes the lease
// over within store.postgres.matrix_takeover, as the same device, and
// sends them. Then that node is killed too, after its outbox entries are
// put back as if it had died between sending them and marking them sent:
// the last node resends all three with their transaction IDs, and the
// homeserver keeps each once. bob decrypts the invite, the candidates and
// the hangup, once each, in order; the homeserver stores three encrypted
// events of icebox's.
func TestClusterMatrixTakeover(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password-123", false)
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	env := []string{
		"ICEBOX_AUTH_STATIC_TOKENS=" + hash(matrixAliceTok) + ":alice," + hash(matrixAdminTok) + ":ops:admin",
		"MATRIX_ENABLED=true", "MATRIX_HOMESERVER_URL=" + hs.URL(), "MATRIX_SERVICE_USER=" + service,
		"ICEBOX_MATRIX_PASSWORD=" + servicePassword,
		"ICEBOX_MATRIX_INVITE_WAIT=5s",
	}
	const takeover = 5 * time.Second
	cfg := func() string {
		return testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}) +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n    matrix_takeover: " + takeover.String() + "\n"
	}
	// A copy of every outbox row as written, to put rows back later.
	db, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.WithoutCancel(t.Context())) //nolint:errcheck // the test is over

	a := startIceboxBin(t, iceboxBin, cfg(), env...)
	if m := a.waitMetrics(t, func(m map[string]float64) bool { return m["icebox_matrix_bridge_lease"] == 1 }); m["icebox_matrix_bridge_lease"] != 1 {
		t.Fatalf("node A does not hold the bridge lease: %v", m["icebox_matrix_bridge_lease"])
	}
	if _, err := db.Exec(t.Context(), `
		CREATE TABLE outbox_copy AS SELECT * FROM icebox_outbox WITH NO DATA;
		CREATE FUNCTION outbox_copy() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO outbox_copy VALUES (NEW.*); RETURN NEW; END $$;
		CREATE TRIGGER outbox_copy AFTER INSERT ON icebox_outbox FOR EACH ROW EXECUTE FUNCTION outbox_copy();`); err != nil {
		t.Fatal(err)
	}
	b := startIceboxBin(t, iceboxBin, cfg(), env...)
	c := startIceboxBin(t, iceboxBin, cfg(), env...)
	for name, in := range map[string]*instance{"B": b, "C": c} {
		if m := in.metrics(t); m["icebox_matrix_bridge_lease"] != 0 || m["icebox_matrix_bridge_leader_changes_total"] != 0 {
			t.Fatalf("node %s runs the bridge too: lease %v, changes %v", name, m["icebox_matrix_bridge_lease"], m["icebox_matrix_bridge_leader_changes_total"])
		}
	}
	bob := hs.NewE2EEUser(t, bobID, "bob-password-123")

	// The room is created through C, which does not run the bridge: as
	// the same device, with the session A's login stored.
	code, resp := clientRequest(t, roomCreateClient, http.MethodPut, c.httpURL("/admin/conversations/c1"), matrixAdminTok,
		fmt.Sprintf(`{"participants":["alice",%q]}`, bobID))
	if code != http.StatusOK {
		t.Fatalf("PUT conversation on C: %d %s", code, resp)
	}
	var conv struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(resp, &conv); err != nil || !strings.HasPrefix(conv.RoomID, "!") {
		t.Fatalf("conversation has no room: %s", resp)
	}
	room := conv.RoomID
	bob.Join(t, room)
	fromService := func(typ, callID string) func(matrixtest.Event) bool {
		return func(ev matrixtest.Event) bool {
			return ev.Sender == service && ev.Type == typ && strings.Contains(string(ev.Content), `"call_id":"`+callID+`"`)
		}
	}

	// alice calls through B, which does not run the bridge: the invite is
	// committed there and sent by A.
	code, resp = apiRequest(t, http.MethodPost, b.httpURL("/calls/initiate"), matrixAliceTok,
		fmt.Sprintf(`{"conversation_id":"c1","sdp_offer":"v=0 offer-through-b","invitee":%q}`, bobID))
	if code != http.StatusCreated {
		t.Fatalf("initiate on B: %d %s", code, resp)
	}
	var call initiatedCall
	if err := json.Unmarshal(resp, &call); err != nil {
		t.Fatal(err)
	}
	bob.WaitEvent(t, room, fromService("m.call.invite", call.ID), 30*time.Second)

	a.crash()
	killed := time.Now()
	cands := `{"candidates":[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.77 50000 typ host","sdpMid":"0","sdpMLineIndex":0},{"candidate":""}]}`
	if code, resp := apiRequest(t, http.MethodPost, b.httpURL("/calls/"+call.ID+"/candidates"), matrixAliceTok, cands); code != http.StatusNoContent {
		t.Fatalf("candidates on B: %d %s", code, resp)
	}
	if code, resp := apiRequest(t, http.MethodPost, c.httpURL("/calls/"+call.ID+"/hangup"), matrixAliceTok, ""); code != http.StatusOK {
		t.Fatalf("hangup on C: %d %s", code, resp)
	}
	leader := func(nodes ...*instance) *instance {
		var l *instance
		waitFor(2*takeover, func() bool {
			for _, in := range nodes {
				if in.metrics(t)["icebox_matrix_bridge_lease"] == 1 {
					l = in
					return true
				}
			}
			return false
		})
		return l
	}
	next := leader(b, c)
	if next == nil {
		t.Fatalf("neither B nor C took the bridge lease over within %s of A's death", 2*takeover)
	}
	tookOver := time.Since(killed)
	bob.WaitEvent(t, room, fromService("m.call.hangup", call.ID), 60*time.Second)
	t.Logf("A killed → another node holds the lease: %s; → bob decrypted the hangup: %s", tookOver.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if tookOver > takeover {
		t.Errorf("takeover took %s, more than store.postgres.matrix_takeover %s", tookOver, takeover)
	}
	if m := next.metrics(t); m["icebox_matrix_bridge_leader_changes_total"] != 1 {
		t.Errorf("the new leader's icebox_matrix_bridge_leader_changes_total = %v, want 1", m["icebox_matrix_bridge_leader_changes_total"])
	}

	// The new leader dies as if between sending the call's events and
	// marking them sent: its rows are back in the outbox. The last node
	// sends them again with the same transaction IDs.
	last := b
	if next == b {
		last = c
	}
	next.crash()
	killed = time.Now()
	tag, err := db.Exec(t.Context(), `INSERT INTO icebox_outbox SELECT * FROM outbox_copy WHERE call_id = $1`, call.ID)
	if err != nil || tag.RowsAffected() < 3 {
		t.Fatalf("putting the call's outbox rows back: %v rows, %v", tag.RowsAffected(), err)
	}
	if leader(last) == nil {
		t.Fatalf("the last node did not take the bridge lease over within %s", 2*takeover)
	}
	var depth int
	if !waitFor(60*time.Second, func() bool {
		return db.QueryRow(t.Context(), `SELECT count(*) FROM icebox_outbox`).Scan(&depth) == nil && depth == 0
	}) {
		t.Fatalf("the last node left %d outbox entries unsent", depth)
	}
	t.Logf("second leader killed → the last node resent the call's events: %s", time.Since(killed).Round(time.Millisecond))
	// Sent again, not dropped: the homeserver answered each resend.
	m := last.metrics(t)
	if m["matrix_voip_invite_sent_total"] != 1 || m["matrix_voip_hangup_sent_total"] != 1 || sum(m, "icebox_matrix_outbox_dropped_total") != 0 {
		t.Errorf("the last node sent %v invites and %v hangups and dropped %v entries; want the invite and the hangup resent once each, none dropped",
			m["matrix_voip_invite_sent_total"], m["matrix_voip_hangup_sent_total"], sum(m, "icebox_matrix_outbox_dropped_total"))
	}

	var got []string
	for _, ev := range bob.Events(room) {
		if ev.Sender == service && strings.HasPrefix(ev.Type, "m.call.") {
			if !ev.Encrypted {
				t.Errorf("%s arrived in plaintext", ev.Type)
			}
			got = append(got, ev.Type)
		}
	}
	if strings.Join(got, ",") != "m.call.invite,m.call.candidates,m.call.hangup" {
		t.Fatalf("bob saw %v, want the invite, the (batched) candidates, then the hangup, once each", got)
	}
	// The homeserver's own view: the same three, once each (the resends
	// were deduplicated), all encrypted.
	encrypted := 0
	for _, ev := range hs.RoomMessages(t, bob.Client.AccessToken, room) {
		var e struct {
			Sender string `json:"sender"`
			Type   string `json:"type"`
		}
		if json.Unmarshal(ev, &e) == nil && e.Sender == service && e.Type == "m.room.encrypted" {
			encrypted++
		}
	}
	if encrypted != 3 {
		t.Errorf("the homeserver holds %d encrypted events of icebox's in the room, want 3", encrypted)
	}
}
