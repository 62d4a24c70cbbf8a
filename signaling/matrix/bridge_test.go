package matrix_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

func TestNewRejectsBadConfig(t *testing.T) {
	st := openStore(t)
	good := matrix.Config{HomeserverURL: "https://matrix.example.org", UserID: "@icebox:example.org", AccessToken: "t", Store: st}
	tests := []struct {
		name   string
		change func(*matrix.Config)
		want   string
	}{
		{"no homeserver", func(c *matrix.Config) { c.HomeserverURL = "" }, "matrix: homeserver_url: required"},
		{"homeserver not a URL", func(c *matrix.Config) { c.HomeserverURL = "matrix.example.org" }, `matrix: homeserver_url: "matrix.example.org" is not an http(s) URL`},
		{"user not a Matrix ID", func(c *matrix.Config) { c.UserID = "icebox" }, `matrix: service_user: "icebox" is not a Matrix user ID (@name:server)`},
		{"no token", func(c *matrix.Config) { c.AccessToken = "" }, "matrix: access_token or password: required"},
		{"token and password", func(c *matrix.Config) { c.Password = "pw-secret" }, "matrix: access_token and password are both set; keep one"},
		{"password without encryption", func(c *matrix.Config) { c.AccessToken, c.Password = "", "pw-secret" }, "matrix: password login needs Encryption (its directory keeps the session)"},
		{"encryption without dir", func(c *matrix.Config) { c.Encryption = &matrix.Encryption{Require: true} }, "matrix: Encryption.Dir is required"},
		{"no store", func(c *matrix.Config) { c.Store = nil }, "matrix: Store is required"},
		{"negative window", func(c *matrix.Config) { c.BatchWindow = -time.Second }, "matrix: batch window -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			b, err := matrix.New(cfg)
			if err == nil || err.Error() != tt.want {
				t.Errorf("New = %v, %v; want error %q", b, err, tt.want)
			}
		})
	}
	if _, err := matrix.New(good); err != nil {
		t.Errorf("New(good) = %v", err)
	}
}

// TestStaleEntriesDropped: entries older than a day, and an invite whose
// lifetime passed before it could be sent (with the rest of its call), are
// dropped without being sent and counted; a fresh invite stays.
func TestStaleEntriesDropped(t *testing.T) {
	st, b := newTestBridgeNoServer(t)
	now := time.Now().UTC()
	enc := matrix.NewTestEncoder(time.Now)
	add := func(c signaling.Call, created time.Time, typ string, payload any) {
		t.Helper()
		out, err := enc.Encode(signaling.Event{Type: typ, Payload: payload}, c)
		if err != nil {
			t.Fatal(err)
		}
		for i := range out {
			out[i].CreatedAt = created
		}
		if err := st.AppendOutbox(context.Background(), out); err != nil {
			t.Fatal(err)
		}
	}
	call := func(id string, lifetime int64) signaling.Call {
		return signaling.Call{ID: id, ConversationID: "conv", RoomID: "!room:localhost", Initiator: "alice", PartyID: "iceboxalice", LifetimeMS: lifetime}
	}
	old, lapsed, fresh := call("old", 60000), call("lapsed", 5000), call("fresh", 60000)
	invite := signaling.InvitePayload{PartyID: "iceboxalice", SDPOffer: offerSDP}
	add(old, now.Add(-25*time.Hour), signaling.EventCallAnswer, signaling.AnswerPayload{PartyID: "iceboxbob", SDPAnswer: answerSDP})
	add(lapsed, now.Add(-10*time.Second), signaling.EventCallInvite, invite)
	add(lapsed, now.Add(-5*time.Second), signaling.EventCallHangup, signaling.EndPayload{Reason: signaling.ReasonInviteTimeout})
	add(fresh, now, signaling.EventCallInvite, invite)

	b.run(t)
	waitFor(t, 10*time.Second, "the stale entries to be dropped", func() bool {
		return metric(t, b, "icebox_matrix_outbox_dropped_total", "reason", "expired") == 1 &&
			metric(t, b, "icebox_matrix_outbox_dropped_total", "reason", "invite_expired") == 2
	}, b.logs.String)
	waitFor(t, 10*time.Second, "a failed attempt at the fresh invite", func() bool {
		return metric(t, b, "icebox_matrix_send_errors_total", "kind", "network") >= 1
	})
	pending, err := st.PendingOutbox(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].CallID != "fresh" {
		t.Errorf("outbox holds %+v, want only the fresh invite", pending)
	}
	if got := metric(t, b, "matrix_voip_invite_failed_total"); got != 1 {
		t.Errorf("invite_failed = %v, want 1 (the lapsed invite)", got)
	}
	checkNoSecretsLogged(t, b.logs.String(), noServerToken)
}

// TestEnsureRoomHomeserverDown names the homeserver in its error.
func TestEnsureRoomHomeserverDown(t *testing.T) {
	_, b := newTestBridgeNoServer(t)
	_, err := b.EnsureRoom(context.Background(), signaling.Conversation{ID: "conv-x", Participants: []string{"@bob:localhost"}})
	if err == nil || !strings.Contains(err.Error(), `matrix: create the room of conversation "conv-x" on http://127.0.0.1:`) {
		t.Errorf("EnsureRoom error = %v, want one naming the conversation and homeserver", err)
	}
}

// TestRestartResumesOutbox: a bridge stopped with entries still pending
// (the homeserver was down) leaves them in the store; the next one sends
// them, in order, once.
func TestRestartResumesOutbox(t *testing.T) {
	var cut *outage
	fast := matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond}
	w := newWorld(t, fast, matrix.Config{}, func(hs *matrixtest.Homeserver) string {
		cut = newOutage(t, hs.URL())
		return cut.URL()
	})
	cut.setDown(true)
	c := w.newCall(t, "call-restart")
	w.appendEvent(t, c, signaling.EventCallCandidates, candidatesOf("iceboxalice", testCandidates...))
	w.appendEvent(t, c, signaling.EventCallHangup, signaling.EndPayload{PartyID: "iceboxalice"})

	stop := w.b.run(t)
	waitFor(t, 10*time.Second, "2 failed attempts", func() bool {
		return metric(t, w.b, "icebox_matrix_send_errors_total", "kind", "network") >= 2
	})
	stop()
	if got := depth(t, w.st); got != 3 {
		t.Fatalf("outbox depth after stop = %d, want 3", got)
	}

	cut.setDown(false)
	again := newBridge(t, matrix.Config{HomeserverURL: cut.URL(), UserID: w.svc.id, AccessToken: w.svc.token, Store: w.st}, fast)
	begin := time.Now()
	again.run(t) // no Wake: the first pass finds the entries
	evs, since := w.bob.callEvents(t, w.since, w.conv.RoomID, 15*time.Second, hasType("m.call.hangup"))
	t.Logf("the restarted bridge delivered the pending entries in %v", time.Since(begin).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "an empty outbox", func() bool { return depth(t, w.st) == 0 })
	more, _ := w.bob.callEvents(t, since, w.conv.RoomID, 0, func([]roomEvent) bool { return true })
	if got, want := typesOf(append(evs, more...)), "[m.call.invite m.call.candidates m.call.hangup]"; got != want {
		t.Errorf("bob saw %s, want %s", got, want)
	}
}
