package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// TestSecurityStateFileSDPSize: an SDP (and Matrix content carrying it)
// must take about its own size in the state file, whatever its characters.
// encoding/json wrote each '<' as \u003c (six bytes), and writes each
// control character so even without HTML escaping; the signaling layer
// accepts any UTF-8 in an SDP. One user at the allowed call rate grew the
// file by ≈1.9 GB an hour.
func TestSecurityStateFileSDPSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill string
	}{
		{"less-than", "<"},
		{"control", "\x01"},
		{"quote", `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t, t.TempDir())
			const (
				calls   = 40
				sdpSize = 32 << 10
			)
			sdp := "v=0\r\n" + strings.Repeat(tc.fill, sdpSize-5)
			// The Matrix content as the bridge hands it over: JSON, with
			// its own escaping of what JSON must escape, '<' left as is.
			content, err := encode(map[string]string{"sdp": sdp})
			if err != nil {
				t.Fatal(err)
			}
			before := dataSize(t, s)
			for i := range calls {
				c := ringingCall(fmt.Sprintf("call-%02d", i), "conv", time.Duration(i)*time.Second)
				c.SDPOffer = sdp
				invite := entry(c.ID, "m.call.invite")
				invite.Content = content
				if err := s.CreateCallOutbox(t.Context(), c, []signaling.OutboxEntry{invite}); err != nil {
					t.Fatal(err)
				}
				_, err := s.UpdateCall(t.Context(), c.ID, func(c *signaling.Call) error {
					c.Status, c.SDPAnswer, c.AnsweredAt = signaling.StatusAnswered, sdp, ptr(at(time.Minute))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			// The call's two SDPs; the outbox entry's content is the
			// bridge's JSON, stored as it came.
			sdps := int64(2 * len(sdp))
			stored := sdps + int64(len(content))
			perCall := (dataSize(t, s) - before) / calls
			t.Logf("SDP of %q: state file grows %d bytes per call holding %d bytes of SDP and %d of Matrix content (%.2f×)",
				tc.fill, perCall, sdps, len(content), float64(perCall)/float64(stored))
			if perCall > 3*stored/2 {
				t.Errorf("state file grows %d bytes per call for %d bytes of SDP and content; want at most 1.5×", perCall, stored)
			}
			got, err := s.Call(t.Context(), "call-00")
			if err != nil || got.SDPOffer != sdp || got.SDPAnswer != sdp {
				t.Fatalf("SDPs did not survive the round trip: %v", err)
			}
			es := pending(t, s)
			if len(es) != calls || string(es[0].Content) != string(content) {
				t.Fatalf("outbox content did not survive the round trip")
			}
			checkIndexes(t, s)
		})
	}
}

// dataSize is how much of the state file is in use (bbolt's high-water
// mark): the file itself grows in coarse steps.
func dataSize(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// endedCall is a call of conv created at t0+created and ended (status st)
// at t0+ended, revoked until t0+200h.
func endedCall(id, conv string, st signaling.Status, created, ended time.Duration) signaling.Call {
	c := ringingCall(id, conv, created)
	c.Status = st
	c.EndedAt = ptr(at(ended))
	c.EndReason = signaling.ReasonUserHangup
	c.RevokedUntil = ptr(at(200 * time.Hour))
	return c
}

// TestSecurityStateFilePruneEndedCalls: calls that ended before the cutoff
// are deleted with all their index entries, in bounded batches; active and
// recently ended calls and every revocation stay.
func TestSecurityStateFilePruneEndedCalls(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		old2 := endedCall("old2", "c", signaling.StatusEnded, 0, 2*time.Hour)
		old2.MatrixInviteEventID = "$old2:example.org"
		answered := ringingCall("answered", "c", 0)
		answered.Status = signaling.StatusAnswered
		mustCreate(t, s,
			endedCall("old1", "c", signaling.StatusEnded, 0, time.Hour),
			old2,
			endedCall("old3", "d", signaling.StatusRejected, 0, 3*time.Hour),
			endedCall("recent", "c", signaling.StatusExpired, 0, 100*time.Hour),
			ringingCall("ringing", "c", time.Hour),
			answered,
		)
		// A call that ends through UpdateCall gets indexed as it ends.
		mustCreate(t, s, ringingCall("old4", "d", 0))
		if _, err := s.UpdateCall(t.Context(), "old4", func(c *signaling.Call) error {
			c.Status, c.EndedAt, c.RevokedUntil = signaling.StatusEnded, ptr(at(4*time.Hour)), ptr(at(200*time.Hour))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		checkIndexes(t, s)

		cutoff := at(50 * time.Hour)
		var batches []int
		for range 10 {
			n, err := s.PruneEndedCalls(t.Context(), cutoff, 3)
			if err != nil {
				t.Fatal(err)
			}
			batches = append(batches, n)
			if n < 3 {
				break
			}
		}
		if want := []int{3, 1}; !slices.Equal(batches, want) {
			t.Errorf("batches: got %v, want %v", batches, want)
		}
		checkIndexes(t, s)
		for _, id := range []string{"old1", "old2", "old3", "old4"} {
			if _, err := s.Call(t.Context(), id); !errors.Is(err, signaling.ErrNotFound) {
				t.Errorf("Call(%s) after prune: %v, want ErrNotFound", id, err)
			}
		}
		if _, err := s.CallByMatrixEvent(t.Context(), old2.MatrixInviteEventID); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("CallByMatrixEvent after prune: %v, want ErrNotFound", err)
		}
		got, err := s.Calls(t.Context(), signaling.CallFilter{ConversationID: "c"})
		if err != nil || !slices.Equal(ids(got), []string{"ringing", "recent", "answered"}) &&
			!slices.Equal(ids(got), []string{"ringing", "answered", "recent"}) {
			t.Errorf("Calls(c) after prune: %v, %v", ids(got), err)
		}
		if got, err := s.Calls(t.Context(), signaling.CallFilter{ConversationID: "d"}); err != nil || len(got) != 0 {
			t.Errorf("Calls(d) after prune: %v, %v", ids(got), err)
		}
		// The revocations outlive the calls: their credentials are refused
		// until they would have expired.
		wantRevs := map[string]time.Time{}
		for _, id := range []string{"old1", "old2", "old3", "old4", "recent"} {
			wantRevs[id] = at(200 * time.Hour)
		}
		if got := storedRevocations(t, s); !reflect.DeepEqual(got, wantRevs) {
			t.Errorf("revocations after prune: got %v, want %v", got, wantRevs)
		}

		// Nothing due: no write transaction.
		tx := txID(t, s)
		if n, err := s.PruneEndedCalls(t.Context(), cutoff, 3); n != 0 || err != nil {
			t.Errorf("second prune: %d, %v", n, err)
		}
		if txID(t, s) != tx {
			t.Error("a prune with nothing due committed a transaction")
		}
		// Later, the recent one goes too; the active ones never.
		if n, err := s.PruneEndedCalls(t.Context(), at(1000*time.Hour), 3); n != 1 || err != nil {
			t.Errorf("late prune: %d, %v; want 1", n, err)
		}
		active, err := s.ActiveCalls(t.Context())
		if err != nil || !slices.Equal(ids(active), []string{"answered", "ringing"}) {
			t.Errorf("ActiveCalls after prune: %v, %v", ids(active), err)
		}
		checkIndexes(t, s)

		if _, err := s.PruneEndedCalls(t.Context(), cutoff, 0); !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("limit 0: got %v, want ErrInvalid", err)
		}
	})
}

// TestMigrateSchema4To5 writes a schema-4 file holding ended calls (stored
// with HTML escaping, as before), then opens it with this build, which must
// index them for pruning and read them unchanged.
func TestMigrateSchema4To5(t *testing.T) {
	dir := t.TempDir()
	calls := []signaling.Call{
		ringingCall("r", "c", 0),
		endedCall("e", "c", signaling.StatusEnded, time.Minute, time.Hour),
		endedCall("x", "d", signaling.StatusExpired, 0, 2*time.Hour),
	}
	calls[1].SDPOffer = "v=0\r\na=<&>\r\n"

	writeSchemaFixture(t, dir, oldSchema{version: 4, absent: [][]byte{bucketCallsEnded}, calls: calls}) // HTML-escaped, as schema 4 wrote it

	s := openTemp(t, dir)
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	checkIndexes(t, s)
	if got, err := s.Call(t.Context(), "e"); err != nil || !reflect.DeepEqual(got, calls[1]) {
		t.Errorf("escaped record: got %+v, %v", got, err)
	}
	// The next write of a call moves its inline SDP apart.
	if _, err := s.UpdateCall(t.Context(), "r", func(c *signaling.Call) error { c.Invitee = "@bob:example.org"; return nil }); err != nil {
		t.Fatal(err)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketCalls).Get([]byte("r")); strings.Contains(string(raw), "sdp_offer") {
			t.Errorf("rewritten record still carries its SDP: %s", raw)
		}
		if got := tx.Bucket(bucketCallSDPs).Get(sdpKey([]byte("r"), sdpOffer)); string(got) != calls[0].SDPOffer {
			t.Errorf("%s holds %q for r, want %q", bucketCallSDPs, got, calls[0].SDPOffer)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Call(t.Context(), "r"); err != nil || got.SDPOffer != calls[0].SDPOffer {
		t.Errorf("r after its rewrite: %+v, %v", got, err)
	}
	if n, err := s.PruneEndedCalls(t.Context(), at(24*time.Hour), 10); n != 2 || err != nil {
		t.Errorf("prune after migration: %d, %v; want 2", n, err)
	}
	checkIndexes(t, s)
}
