package store

import (
	"context"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// t0 is the tests' reference time; UTC without a monotonic reading, so it
// survives a JSON round trip unchanged for reflect.DeepEqual.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptr(t time.Time) *time.Time { return &t }

// ringingCall is a minimal ringing call in conv created at t0+d.
func ringingCall(id, conv string, d time.Duration) signaling.Call {
	return signaling.Call{
		ID:             id,
		ConversationID: conv,
		Initiator:      "@alice:example.org",
		PartyID:        "party-" + id,
		Status:         signaling.StatusRinging,
		SDPOffer:       "v=0\r\n",
		LifetimeMS:     60000,
		Version:        signaling.VoIPVersion,
		CreatedAt:      at(d),
	}
}

func mustCreate(t testing.TB, s testStore, calls ...signaling.Call) {
	t.Helper()
	for _, c := range calls {
		if err := s.CreateCall(context.Background(), c); err != nil {
			t.Fatalf("CreateCall(%s): %v", c.ID, err)
		}
	}
}

func ids(calls []signaling.Call) []string {
	out := []string{}
	for _, c := range calls {
		out = append(out, c.ID)
	}
	return out
}

// checkIndexes asserts that calls_by_conversation, calls_ringing and
// calls_active hold exactly one entry per call, per ringing call and per
// ringing or answered call, calls_ended one per call in a terminal status,
// calls_by_matrix_event exactly one per call with a MatrixInviteEventID,
// pointing to that call, and conversations_by_room exactly one per
// conversation with a RoomID, pointing to that conversation (so no two
// conversations share a room, and no entry is stale), and call_sdps no entry
// without its call.
func checkIndexes(t *testing.T, st testStore) {
	t.Helper()
	if p := pgOf(st); p != nil {
		pgCheckIndexes(t, p)
		return
	}
	s := st.(*Store)
	err := s.db.View(func(tx *bolt.Tx) error {
		wantConv := map[string]bool{}
		wantRinging := map[string]bool{}
		wantActive := map[string]bool{}
		wantEnded := map[string]bool{}
		wantMatrix := map[string]string{} // event ID → call ID
		err := tx.Bucket(bucketCalls).ForEach(func(k, v []byte) error {
			c, err := decodeCall(k, v)
			if err != nil {
				return err
			}
			wantConv[string(convKey(c))] = true
			if c.Status == signaling.StatusRinging {
				wantRinging[string(k)] = true
			}
			if c.Status == signaling.StatusRinging || c.Status == signaling.StatusAnswered {
				wantActive[string(k)] = true
			}
			if c.Status.Terminal() {
				wantEnded[string(endedKey(c))] = true
			}
			if c.MatrixInviteEventID != "" {
				if other, ok := wantMatrix[c.MatrixInviteEventID]; ok {
					t.Errorf("calls %q and %q share Matrix invite %q", other, k, c.MatrixInviteEventID)
				}
				wantMatrix[c.MatrixInviteEventID] = string(k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, ix := range []struct {
			bucket []byte
			want   map[string]bool
		}{{bucketCallsByConv, wantConv}, {bucketCallsRinging, wantRinging}, {bucketCallsActive, wantActive}, {bucketCallsEnded, wantEnded}} {
			n := 0
			_ = tx.Bucket(ix.bucket).ForEach(func(k, v []byte) error {
				n++
				if !ix.want[string(k)] {
					t.Errorf("%s: stale entry %q", ix.bucket, k)
				}
				if len(v) != 0 {
					t.Errorf("%s: entry %q has value %q", ix.bucket, k, v)
				}
				return nil
			})
			if n != len(ix.want) {
				t.Errorf("%s: got %d entries, want %d", ix.bucket, n, len(ix.want))
			}
		}
		gotMatrix := map[string]string{}
		_ = tx.Bucket(bucketCallsByMatrixEv).ForEach(func(k, v []byte) error {
			gotMatrix[string(k)] = string(v)
			return nil
		})
		if !maps.Equal(gotMatrix, wantMatrix) {
			t.Errorf("%s: got %v, want %v", bucketCallsByMatrixEv, gotMatrix, wantMatrix)
		}
		// call_sdps: no entry without its call, none empty.
		_ = tx.Bucket(bucketCallSDPs).ForEach(func(k, v []byte) error {
			if len(k) < 3 || k[len(k)-2] != 0 || (k[len(k)-1] != sdpOffer && k[len(k)-1] != sdpAnswer) {
				t.Errorf("%s: malformed key %q", bucketCallSDPs, k)
				return nil
			}
			if tx.Bucket(bucketCalls).Get(k[:len(k)-2]) == nil {
				t.Errorf("%s: entry %q of a missing call", bucketCallSDPs, k)
			}
			if len(v) == 0 {
				t.Errorf("%s: entry %q is empty", bucketCallSDPs, k)
			}
			return nil
		})
		checkUserIndex(t, tx)
		return checkRoomIndex(t, tx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkUserIndex asserts that conversations_by_user holds exactly an
// entry for each participant of each conversation that decodes.
func checkUserIndex(t *testing.T, tx *bolt.Tx) {
	t.Helper()
	want := map[string]bool{}
	_ = tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
		var c signaling.Conversation
		if decode("conversation", k, v, &c) == nil {
			for _, u := range c.Participants {
				want[string(userKey(u, c))] = true
			}
		}
		return nil
	})
	n := 0
	_ = tx.Bucket(bucketConvsByUser).ForEach(func(k, _ []byte) error {
		n++
		if !want[string(k)] {
			t.Errorf("%s: stale entry %q", bucketConvsByUser, k)
		}
		return nil
	})
	if n != len(want) {
		t.Errorf("%s: got %d entries, want %d", bucketConvsByUser, n, len(want))
	}
}

// checkRoomIndex asserts conversations_by_room both ways: every
// conversation with a RoomID is indexed under it, and every entry points to
// a conversation whose RoomID is the entry's key.
func checkRoomIndex(t *testing.T, tx *bolt.Tx) error {
	t.Helper()
	want := map[string]string{} // room ID → conversation ID
	err := tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
		var c signaling.Conversation
		if err := decode("conversation", k, v, &c); err != nil {
			return err
		}
		if c.RoomID == "" {
			return nil
		}
		if other, ok := want[c.RoomID]; ok {
			t.Errorf("conversations %q and %q share room %q", other, k, c.RoomID)
		}
		want[c.RoomID] = string(k)
		return nil
	})
	if err != nil {
		return err
	}
	got := map[string]string{}
	_ = tx.Bucket(bucketConvsByRoom).ForEach(func(k, v []byte) error {
		got[string(k)] = string(v)
		return nil
	})
	if !maps.Equal(got, want) {
		t.Errorf("%s: got %v, want %v", bucketConvsByRoom, got, want)
	}
	return nil
}

// roomIndex reads conversations_by_room directly.
func roomIndex(t *testing.T, st testStore) map[string]string {
	t.Helper()
	if p := pgOf(st); p != nil {
		return pgRoomIndex(t, p)
	}
	s := st.(*Store)
	got := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketConvsByRoom).ForEach(func(k, v []byte) error {
			got[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// storedRevocations reads the revocations bucket directly.
func storedRevocations(t *testing.T, st testStore) map[string]time.Time {
	t.Helper()
	if p := pgOf(st); p != nil {
		return pgRevocations(t, p)
	}
	s := st.(*Store)
	got := map[string]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRevocations).ForEach(func(k, v []byte) error {
			var r signaling.Revocation
			if err := decode("revocation", k, v, &r); err != nil {
				return err
			}
			if r.CallID != string(k) {
				t.Errorf("revocation under key %q has call_id %q", k, r.CallID)
			}
			got[r.CallID] = r.Until
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// txID is the ID of the last committed transaction (bbolt), or a digest of
// the database's content (PostgreSQL): it moves iff something was
// committed.
func txID(t *testing.T, st testStore) string {
	t.Helper()
	if p := pgOf(st); p != nil {
		return pgFingerprint(t, p)
	}
	var id int
	if err := st.(*Store).db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(id)
}
