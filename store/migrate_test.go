package store

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// TestMigrateSchema1To2 writes a schema-1 file holding calls (with only the
// first migration, as the first release did), then opens it with this build.
func TestMigrateSchema1To2(t *testing.T) {
	dir := t.TempDir()
	calls := []signaling.Call{
		ringingCall("r", "c", 0),
		ringingCall("a", "c", time.Minute),
		ringingCall("e", "d", 2*time.Minute),
	}
	calls[1].Status = signaling.StatusAnswered
	calls[2].Status = signaling.StatusEnded

	all := migrations
	migrations = all[:1]
	s, err := Open(dir, Options{})
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Version(); err != nil || v != 1 {
		t.Fatalf("schema-1 file has version %d, %v", v, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCallsByConv, bucketCallsRinging} {
			if tx.Bucket(b) != nil {
				t.Errorf("bucket %s exists at schema 1", b)
			}
		}
		for _, c := range calls {
			raw, err := json.Marshal(recordOf(c))
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketCalls).Put([]byte(c.ID), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTemp(t, dir)
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketCallsByConv, bucketCallsRinging} {
			if tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing after migration", b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkIndexes(t, s)

	tests := []struct {
		name string
		f    signaling.CallFilter
		want []signaling.Call
	}{
		{"c", signaling.CallFilter{ConversationID: "c"}, []signaling.Call{calls[1], calls[0]}},
		{"d", signaling.CallFilter{ConversationID: "d"}, []signaling.Call{calls[2]}},
	}
	for _, tt := range tests {
		got, err := s.Calls(t.Context(), tt.f)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Calls(%s): got %v, %v; want %v", tt.name, ids(got), err, ids(tt.want))
		}
	}
	if got, err := s.RingingCalls(t.Context()); err != nil || !slices.Equal(ids(got), []string{"r"}) {
		t.Errorf("RingingCalls: got %v, %v; want [r]", ids(got), err)
	}
}
