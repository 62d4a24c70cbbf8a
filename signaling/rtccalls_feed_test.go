package signaling_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestRTCTransitionsInFeed: on PostgreSQL as nodes run it (the feed on),
// the gateway's transitions — a MatrixRTC ring becoming a call
// (InviteFromRTC), a member answering (AnswerFromRTC) and leaving
// (EndFromRTC), also of a legacy caller's bridged call — hand their
// events to the store's transaction (signaling.TxEvents) like every
// other transition: the event row (and
// the end's revocation) is in the feed, written by the transaction that
// committed the call's change, and the Service publishes nothing itself
// (the feed's readers deliver it on every node, in commit order). A ring
// whose call cannot be created (its ID is taken) writes no row.
//
// Before InviteFromRTC used WithTxEvents, its CallInviteViaMatrix went to
// the Publisher straight after the commit and never into the feed.
func TestRTCTransitionsInFeed(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, postgres.Options{DSN: srv.NewDatabase(t), Records: store.Records{}, Feed: true, NodeID: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	rec := newRecorder()
	steps := &rtcSteps{}
	svc, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, Relay: rec, Publisher: rec, RoomIndex: st,
		Outbound: &matrix.Encoder{}, CallProtocol: signaling.CallProtocolMatrixRTC, RTC: steps,
		CredentialTTL: time.Hour, InitiateRate: 100, InitiateBurst: 100, Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if _, err := svc.PutConversationSpec(ctx, "rtc", signaling.ConversationSpec{
		Participants: []string{"alice", bob}, RoomID: rtcRoom}); err != nil {
		t.Fatal(err)
	}

	var head postgres.FeedCursor
	// fed requires the feed's new rows to be exactly want (kind, or the
	// event's type), all about callID.
	fed := func(what, callID string, want ...string) {
		t.Helper()
		items, next, err := st.FeedAfter(ctx, head, 100)
		if err != nil {
			t.Fatal(err)
		}
		head = next
		var got []string
		for _, it := range items {
			k := it.Kind
			if k == postgres.FeedEvent {
				ev, err := postgres.DecodeFeedEvent(it.Body)
				if err != nil {
					t.Fatal(err)
				}
				k = ev.Type
			}
			if it.CallID != callID || it.Node != "n1" {
				t.Errorf("%s: feed row %d: call %s by node %s, want call %s by n1", what, it.ID, it.CallID, it.Node, callID)
			}
			got = append(got, k)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: feed rows %v, want %v", what, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: feed rows %v, want %v", what, got, want)
			}
		}
	}

	in := signaling.RTCInvite{ID: "rtc-feed-1", RoomID: rtcRoom, Sender: bob, DeviceID: "BOBDEVICE",
		NotificationEventID: "$ring1", SDPOffer: "v=0 gateway offer", Lifetime: 30 * time.Second}
	if _, err := svc.InviteFromRTC(ctx, in); err != nil {
		t.Fatal(err)
	}
	fed("InviteFromRTC", in.ID, signaling.EventCallInviteViaMatrix)
	dup := in
	dup.NotificationEventID = "$ring2"
	if _, err := svc.InviteFromRTC(ctx, dup); !errors.Is(err, signaling.ErrConflict) {
		t.Fatalf("InviteFromRTC of a taken call ID: %v, want ErrConflict", err)
	}
	fed("InviteFromRTC refused", in.ID)

	out, err := svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "rtc", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	fed("Initiate", out.ID, signaling.EventCallInvite)
	if _, err := svc.AnswerFromRTC(ctx, out.ID, bob, "BOBDEVICE", "v=0 answer"); err != nil {
		t.Fatal(err)
	}
	fed("AnswerFromRTC", out.ID, signaling.EventCallAnswerViaMatrix)
	if _, err := svc.EndFromRTC(ctx, out.ID, bob, signaling.ReasonUserHangup, false); err != nil {
		t.Fatal(err)
	}
	fed("EndFromRTC", out.ID, signaling.EventCallHangupViaMatrix, postgres.FeedRevoke)

	// A legacy Matrix caller bridged to the room's MatrixRTC call
	// (rtclegacy.go): its events, addressed to no icebox client, still
	// travel with their transitions (the other nodes' readers wake their
	// Matrix senders on them).
	legacy, err := svc.InviteFromMatrix(ctx, legacyInvite("legacy-feed"))
	if err != nil || !legacy.LegacyBridged() {
		t.Fatalf("InviteFromMatrix: %+v, %v; want a legacy-bridged call", legacy, err)
	}
	fed("legacy invite", legacy.ID, signaling.EventCallInviteViaMatrix)
	if _, err := svc.AnswerFromRTC(ctx, legacy.ID, "alice", "ALICEX", "v=0 leg answer"); err != nil {
		t.Fatal(err)
	}
	fed("legacy AnswerFromRTC", legacy.ID, signaling.EventCallAnswer)
	if _, err := svc.EndFromRTC(ctx, legacy.ID, "alice", signaling.ReasonUserHangup, false); err != nil {
		t.Fatal(err)
	}
	fed("legacy EndFromRTC", legacy.ID, signaling.EventCallHangup, postgres.FeedRevoke)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		t.Errorf("the Service published %s of call %s itself: the transaction's feed rows should carry it", ev.Type, ev.CallID)
	}
}
