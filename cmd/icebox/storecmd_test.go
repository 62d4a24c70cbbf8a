package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// fillBBolt writes a single-node install's worth of every kind of state:
// conversations with and without rooms, calls ringing, answered and ended
// (revoked; SDPs with a NUL and markup), outbox entries of which some were
// sent already (so the outbox's sequence is past its last key), seen
// events and sync values. It returns the store, still open.
func fillBBolt(t *testing.T, dir string, calls int) *store.Store {
	t.Helper()
	ctx := t.Context()
	s, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	for i, conv := range []signaling.Conversation{
		{ID: "c-room", Participants: []string{"@alice:x", "@bob:x"}, RoomID: "!room:x", CreatedAt: base, UpdatedAt: base},
		{ID: "c-plain", Participants: []string{"alice", "bob"}, CreatedAt: base, UpdatedAt: base.Add(time.Duration(1) * time.Second)},
	} {
		if err := s.PutConversation(ctx, conv); err != nil {
			t.Fatalf("conversation %d: %v", i, err)
		}
	}
	entry := func(callID string) signaling.OutboxEntry {
		return signaling.OutboxEntry{CallID: callID, RoomID: "!room:x", EventType: "m.call.invite", Content: json.RawMessage(`{"call_id":"` + callID + `","offer":{"sdp":"<v=0>"}}`)}
	}
	for i := range calls {
		id := "call-" + string(rune('a'+i%26)) + "-" + time.Duration(i).String()
		c := signaling.Call{
			ID: id, ConversationID: []string{"c-room", "c-plain"}[i%2], Initiator: "@alice:x", Invitee: "@bob:x",
			PartyID: "p", Status: signaling.StatusRinging, SDPOffer: "v=0\r\na=x:<&>\x00\r\n", LifetimeMS: 60000, Version: "1",
			CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
		}
		if err := s.CreateCallOutbox(ctx, c, []signaling.OutboxEntry{entry(id)}); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			continue // stays ringing
		}
		_, err := s.UpdateCall(ctx, id, func(c *signaling.Call) error {
			answered := base.Add(time.Second)
			c.Status, c.AnsweredAt, c.SDPAnswer, c.Answerer = signaling.StatusAnswered, &answered, "v=0\r\nanswer", "@bob:x"
			if i%3 == 2 {
				ended, until := base.Add(time.Minute), time.Now().Add(time.Hour).UTC()
				c.Status, c.EndedAt, c.EndReason, c.RevokedUntil = signaling.StatusEnded, &ended, signaling.ReasonUserHangup, &until
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Send (delete) the first few entries, the Matrix invite of the
	// first one giving its call an event ID.
	out, err := s.PendingOutbox(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range out {
		if err := s.CompleteOutbox(ctx, e.Seq, "$ev"+string(rune('0'+i))+":x"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := s.MarkEventSeen(ctx, "$seen"+string(rune('0'+i))+":x", base.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"next_batch/@icebox:x": "s72_5", "filter/@icebox:x": "3"} {
		if err := s.SaveSyncValue(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestStoreMigrate: `icebox store migrate` copies everything a bbolt
// install holds into PostgreSQL, as the same records, and verifies the
// counts; the copy answers the same reads; the outbox continues above the
// source's sequence with the source's instance (no transaction ID reused).
// A second run into the now non-empty database, a wrong DSN, a missing
// source: exit 2, nothing written. A source a running icebox holds: exit 1.
func TestStoreMigrate(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := t.Context()
	dir := t.TempDir()
	const calls = 300
	src := fillBBolt(t, dir, calls)
	snap, err := src.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	dsn := srv.NewDatabase(t)

	migrate := func(args ...string) (int, string) {
		cmd := exec.Command(iceboxBin, append([]string{"store", "migrate"}, args...)...)
		cmd.Env = iceboxEnv()
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
		return 0, ""
	}
	start := time.Now()
	code, out := migrate("--from", "bbolt:"+filepath.Join(dir, store.FileName), "--to", "postgres:"+dsn)
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, out)
	}
	t.Logf("migrated %d calls in %s (process included):\n%s", calls, time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "counts verified") {
		t.Errorf("output does not say the counts were verified: %s", out)
	}

	dst, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Records: store.Records{}})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for _, want := range snap.Calls {
		got, err := dst.Call(ctx, want.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("call %s: got %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	for _, want := range snap.Conversations {
		got, err := dst.Conversation(ctx, want.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("conversation %s: got %+v, %v; want %+v", want.ID, got, err, want)
		}
	}
	if c, err := dst.ConversationByRoom(ctx, "!room:x"); err != nil || c.ID != "c-room" {
		t.Errorf("room index: %+v, %v", c, err)
	}
	// The participant index: each conversation is in its participants'
	// lists (GET /conversations), as on the source.
	for _, want := range snap.Conversations {
		for _, u := range want.Participants {
			list, err := dst.UserConversations(ctx, u, signaling.ConversationCursor{}, len(snap.Conversations)+1)
			if err != nil || !slices.ContainsFunc(list, func(c signaling.Conversation) bool { return c.ID == want.ID }) {
				t.Errorf("%s's conversations after the copy: %d, %v; %s missing", u, len(list), err, want.ID)
			}
		}
	}
	if c, err := dst.CallByMatrixEvent(ctx, "$ev0:x"); err != nil || c.MatrixInviteEventID != "$ev0:x" {
		t.Errorf("Matrix invite index: %+v, %v", c, err)
	}
	pending, err := dst.PendingOutbox(ctx, 0)
	if err != nil || !reflect.DeepEqual(pending, snap.Outbox) {
		t.Errorf("outbox: got %d entries, %v; want the source's %d", len(pending), err, len(snap.Outbox))
	}
	revs, err := dst.Revocations(ctx, time.Now())
	if err != nil || len(revs) != calls/3 {
		t.Errorf("revocations: %d, %v; want %d", len(revs), err, calls/3)
	}
	if v, err := dst.LoadSyncValue(ctx, "next_batch/@icebox:x"); err != nil || v != "s72_5" {
		t.Errorf("next_batch: %q, %v", v, err)
	}
	if first, err := dst.MarkEventSeen(ctx, "$seen0:x", time.Now()); err != nil || first {
		t.Errorf("a seen event is new again after the copy: %v, %v", first, err)
	}
	// The next entry continues the source's sequence, with its instance.
	if err := dst.AppendOutbox(ctx, []signaling.OutboxEntry{{CallID: "x", RoomID: "!room:x", EventType: "m.call.hangup", Content: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	after, _ := dst.PendingOutbox(ctx, 0)
	last := after[len(after)-1]
	if last.Seq != snap.OutboxSeq+1 || last.TxnID != "icebox-"+snap.InstanceID+"-"+itoa(snap.OutboxSeq+1) {
		t.Errorf("next entry: seq %d txn %q; want seq %d with instance %s", last.Seq, last.TxnID, snap.OutboxSeq+1, snap.InstanceID)
	}
	before, err := dst.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"non-empty target", []string{"--from", "bbolt:" + dir, "--to", "postgres:" + dsn}, 2, "database is not empty"},
		{"wrong DSN", []string{"--from", "bbolt:" + dir, "--to", "postgres:host=" + t.TempDir() + " dbname=x connect_timeout=2"}, 2, "database unreachable"},
		{"no such database", []string{"--from", "bbolt:" + dir, "--to", "postgres:" + srv.DSN("nope")}, 2, `database "nope" does not exist`},
		{"missing source", []string{"--from", "bbolt:" + t.TempDir(), "--to", "postgres:" + dsn}, 2, "state file missing"},
		{"bad source", []string{"--from", "sqlite:" + dir, "--to", "postgres:" + dsn}, 2, "--from must be bbolt:PATH"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := migrate(tc.args...)
			if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
				t.Errorf("exit %d: %s; want exit %d saying %q", code, out, tc.wantCode, tc.wantOut)
			}
		})
	}
	t.Run("source in use", func(t *testing.T) {
		held, err := store.Open(dir, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		code, out := migrate("--from", "bbolt:"+dir, "--to", "postgres:"+srv.NewDatabase(t))
		if code != 1 || !strings.Contains(out, "locked by another process") {
			t.Errorf("exit %d: %s; want exit 1, locked", code, out)
		}
	})
	if got, err := dst.Counts(context.Background()); err != nil || got != before {
		t.Errorf("a refused run wrote: counts %+v → %+v, %v", before, got, err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
