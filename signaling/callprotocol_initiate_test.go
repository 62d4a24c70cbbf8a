package signaling_test

import (
	"context"
	"errors"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

// TestInitiateMatrixRTCRefused: with Matrix on, a call in a conversation
// whose calls resolve to MatrixRTC (its own setting or the default) is
// refused with ErrMatrixRTCUnsupported and leaves nothing behind (no call,
// no event, no Matrix invite); the conversation's own legacy wins over a
// matrixrtc default, and auto without MatrixRTC state is legacy. With
// Matrix off nothing goes to Matrix, so no setting refuses a call.
func TestInitiateMatrixRTCRefused(t *testing.T) {
	ctx := context.Background()
	put := func(t *testing.T, e *env, id, room, protocol string) {
		t.Helper()
		if _, err := e.svc.PutConversationSpec(ctx, id, signaling.ConversationSpec{
			Participants: []string{"alice", bob}, RoomID: room, CallProtocol: &protocol}); err != nil {
			t.Fatal(err)
		}
	}
	initiate := func(e *env, conv string) (signaling.Call, error) {
		return e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: conv, SDPOffer: "v=0 offer"})
	}

	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex)
		c.CallProtocol = signaling.CallProtocolMatrixRTC
	})
	put(t, e, "default", "!a:example.org", "")
	put(t, e, "own-rtc", "!b:example.org", signaling.CallProtocolMatrixRTC)
	put(t, e, "own-legacy", "!c:example.org", signaling.CallProtocolLegacy)
	put(t, e, "auto", "!d:example.org", signaling.CallProtocolAuto)
	for _, conv := range []string{"default", "own-rtc"} {
		_, err := initiate(e, conv)
		if !errors.Is(err, signaling.ErrMatrixRTCUnsupported) {
			t.Fatalf("%s: Initiate = %v, want ErrMatrixRTCUnsupported", conv, err)
		}
		calls, err := e.svc.List(ctx, "alice", conv, false, 10)
		if err != nil || len(calls) != 0 {
			t.Fatalf("%s: calls after the refusal: %v, %v; want none", conv, calls, err)
		}
	}
	if ev := e.rec.last(); ev.Type != "" {
		t.Fatalf("an event was published for a refused call: %+v", ev)
	}
	for _, conv := range []string{"own-legacy", "auto"} {
		if _, err := initiate(e, conv); err != nil {
			t.Fatalf("%s: Initiate = %v, want a legacy call", conv, err)
		}
	}

	off := newEnv(t, func(c *signaling.ServiceConfig) { c.CallProtocol = signaling.CallProtocolMatrixRTC })
	put(t, off, "own-rtc", "", signaling.CallProtocolMatrixRTC)
	for _, conv := range []string{"conv1", "own-rtc"} {
		if _, err := initiate(off, conv); err != nil {
			t.Fatalf("Matrix off, %s: Initiate = %v, want the call", conv, err)
		}
	}
}
