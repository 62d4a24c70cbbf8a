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

// oldSchema is what a migration test stores in a file at an older schema
// version, as the release of that version stored it.
type oldSchema struct {
	version int
	// absent are the buckets a later version adds: checked missing.
	absent [][]byte
	calls  []signaling.Call         // with the indexes that version kept (putOldCall)
	convs  []signaling.Conversation // as JSON in bucket conversations
}

// writeSchemaFixture creates the store file in dir at f.version, with only
// the migrations up to it, checks its version and that f.absent are
// missing, writes f's records, and closes it: the next Open of dir
// migrates it.
func writeSchemaFixture(t *testing.T, dir string, f oldSchema) {
	t.Helper()
	all := migrations
	migrations = all[:f.version]
	s, err := Open(dir, Options{})
	migrations = all
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.Version(); err != nil || v != f.version {
		t.Fatalf("schema-%d file has version %d, %v", f.version, v, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range f.absent {
			if tx.Bucket(b) != nil {
				t.Errorf("bucket %s exists at schema %d", b, f.version)
			}
		}
		for _, c := range f.calls {
			if err := putOldCall(tx, c, f.version); err != nil {
				return err
			}
		}
		for _, c := range f.convs {
			raw, err := json.Marshal(c)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketConversations).Put([]byte(c.ID), raw); err != nil {
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
}

// putOldCall stores c as schema version did: its record whole, HTML-escaped
// by json.Marshal (SDPs apart and unescaped came with schema 5); from
// schema 2 in calls_by_conv and, ringing, in calls_ringing; from schema 4,
// ringing or answered, in calls_active.
func putOldCall(tx *bolt.Tx, c signaling.Call, version int) error {
	raw, err := json.Marshal(recordOf(c))
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketCalls).Put([]byte(c.ID), raw); err != nil {
		return err
	}
	type entry struct{ bucket, key []byte }
	var index []entry
	if version >= 2 {
		index = append(index, entry{bucketCallsByConv, convKey(c)})
		if c.Status == signaling.StatusRinging {
			index = append(index, entry{bucketCallsRinging, []byte(c.ID)})
		}
	}
	if version >= 4 && isActive(c.Status) {
		index = append(index, entry{bucketCallsActive, []byte(c.ID)})
	}
	for _, e := range index {
		if err := tx.Bucket(e.bucket).Put(e.key, nil); err != nil {
			return err
		}
	}
	return nil
}

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

	writeSchemaFixture(t, dir, oldSchema{version: 1, absent: [][]byte{bucketCallsByConv, bucketCallsRinging}, calls: calls})

	s := openTemp(t, dir)
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	err := s.db.View(func(tx *bolt.Tx) error {
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
