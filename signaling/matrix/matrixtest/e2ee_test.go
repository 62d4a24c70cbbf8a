package matrixtest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// eventTimeout is how long a test waits for an event to arrive through the
// other user's sync, decrypted. Delivery takes milliseconds; a missing room
// key makes mautrix wait up to 25 s for it, which a test should not.
const eventTimeout = 15 * time.Second

// The invite and answer carry markers that must never appear in what the
// homeserver stores for an encrypted room.
const (
	secretInvite = `{"call_id":"c-secret-123","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0 SECRET-SDP"}}`
	secretAnswer = `{"call_id":"c-secret-123","party_id":"p2","version":"1","answer":{"type":"answer","sdp":"v=0 SECRET-SDP-ANSWER"}}`
)

// TestE2EECallEventsEncrypted: call events between two E2EE users in an
// encrypted room arrive decrypted and intact, and the homeserver only ever
// has them as m.room.encrypted.
func TestE2EECallEventsEncrypted(t *testing.T) {
	begin := time.Now()
	hs := matrixtest.StartDendrite(t)
	aliceID, _, _ := hs.Register(t, "alice", "alice-password", false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	carolID, carolToken, _ := hs.Register(t, "carol", "carol-password", false)
	alice := hs.NewE2EEUser(t, aliceID, "alice-password")
	bob := hs.NewE2EEUser(t, bobID, "bob-password")
	if alice.UserID() != aliceID || alice.DeviceID() == "" {
		t.Errorf("alice: UserID() = %q, DeviceID() = %q; want %q and a device", alice.UserID(), alice.DeviceID(), aliceID)
	}
	setup := time.Now()

	room := alice.CreateEncryptedRoom(t, bobID, carolID)
	bob.Join(t, room)
	// Carol reads what the server stores; she has no keys and needs none.
	call(t, hs, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/join", carolToken, map[string]any{}, nil)
	// Alice shares the room key with the members her state store knows.
	alice.WaitJoined(t, room, bobID, eventTimeout)

	sent := time.Now()
	inviteID := alice.Send(t, room, "m.call.invite", json.RawMessage(secretInvite))
	invite := bob.WaitEvent(t, room, func(ev matrixtest.Event) bool { return ev.ID == inviteID }, eventTimeout)
	t.Logf("encrypted m.call.invite delivered in %v", time.Since(sent).Round(time.Millisecond))
	checkEvent(t, invite, "m.call.invite", aliceID, true, secretInvite)

	answerID := bob.Send(t, room, "m.call.answer", json.RawMessage(secretAnswer))
	answer := alice.WaitEvent(t, room, func(ev matrixtest.Event) bool { return ev.ID == answerID }, eventTimeout)
	checkEvent(t, answer, "m.call.answer", bobID, true, secretAnswer)
	exchanged := time.Now()

	stored := map[string]string{} // event ID → type, as the server has it
	for _, raw := range hs.RoomMessages(t, carolToken, room) {
		for _, secret := range []string{"c-secret-123", "SECRET-SDP", "m.call."} {
			if strings.Contains(string(raw), secret) {
				t.Errorf("the homeserver stores %q in plaintext: %s", secret, raw)
			}
		}
		var ev struct {
			ID   string `json:"event_id"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		stored[ev.ID] = ev.Type
	}
	for name, id := range map[string]string{"invite": inviteID, "answer": answerID} {
		if got := stored[id]; got != "m.room.encrypted" {
			t.Errorf("the homeserver has the %s %s as %q, want m.room.encrypted", name, id, got)
		}
	}
	for name, u := range map[string]*matrixtest.E2EEUser{"alice": alice, "bob": bob} {
		if n := u.DecryptFailures(); n != 0 {
			t.Errorf("%s: DecryptFailures() = %d, want 0", name, n)
		}
	}
	t.Logf("timings: dendrite+users+2 devices %v, room+join+invite+answer %v, total %v",
		setup.Sub(begin).Round(time.Millisecond), exchanged.Sub(setup).Round(time.Millisecond),
		time.Since(begin).Round(time.Millisecond))
}

// TestE2EEPlainRoom: in a room without m.room.encryption the same client
// sends in the clear, and refuses a room it has not joined.
func TestE2EEPlainRoom(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	aliceID, _, _ := hs.Register(t, "alice", "alice-password", false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	alice := hs.NewE2EEUser(t, aliceID, "alice-password")
	bob := hs.NewE2EEUser(t, bobID, "bob-password")

	room := alice.CreatePlainRoom(t, bobID)
	bob.Join(t, room)
	alice.WaitJoined(t, room, bobID, eventTimeout)
	const hello = `{"msgtype":"m.text","body":"hello in the clear"}`
	sentID := alice.Send(t, room, "m.room.message", json.RawMessage(hello))
	got := bob.WaitEvent(t, room, func(ev matrixtest.Event) bool { return ev.ID == sentID }, eventTimeout)
	checkEvent(t, got, "m.room.message", aliceID, false, hello)

	// Bob was never in this room: his state store cannot say whether it is
	// encrypted, so Send must not guess.
	other := alice.CreatePlainRoom(t)
	ft := &fatalRecorder{TB: t}
	ft.run(func() { bob.Send(ft, other, "m.room.message", json.RawMessage(hello)) })
	if want := "the state store does not show"; !strings.Contains(ft.msg, want) {
		t.Errorf("Send to a room not joined: fatal message %q, want one containing %q", ft.msg, want)
	}
}

// checkEvent compares a received event with what was sent; content is
// compared as canonical JSON.
func checkEvent(t *testing.T, got matrixtest.Event, wantType, wantSender string, wantEncrypted bool, wantContent string) {
	t.Helper()
	if got.Type != wantType || got.Sender != wantSender || got.Encrypted != wantEncrypted {
		t.Errorf("event %s: type %q from %q, encrypted %v; want %q from %q, encrypted %v",
			got.ID, got.Type, got.Sender, got.Encrypted, wantType, wantSender, wantEncrypted)
	}
	if c, want := canonical(t, got.Content), canonical(t, json.RawMessage(wantContent)); c != want {
		t.Errorf("event %s content = %s, want %s", got.ID, c, want)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// only the goroutine run started, so that a test can check a helper's refusal.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}
