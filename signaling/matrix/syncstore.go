package matrix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// What the sync asks the homeserver for (its filter) and where it keeps its
// position (the sync store over Store's sync values).

// noEventType matches no event: listing it as the only wanted type leaves
// a part of the sync empty. The spec's "*" wildcard in not_types would say
// the same, but Dendrite does not implement wildcards.
var noEventType = event.Type{Type: "io.icebox.none"}

// syncFilter asks for what the handlers need and nothing else: the call
// events and membership changes of the rooms' timelines, and m.room.member
// state (invitations of the service user arrive in rooms.invite). With
// encryption, also m.room.encrypted events and the state the crypto
// machine needs: m.room.encryption (whether to encrypt) and
// m.room.history_visibility (whom to share keys with). MatrixRTC call
// memberships (org.matrix.msc3401.call.member state, rtcmembers.go) come
// in both parts: a few small events per call, and what decides
// matrix.call_protocol auto. To-device events (room keys) and device lists
// are not filtered.
//
// Changing it changes its hash, so the stored filter ID is not reused.
func syncFilter(encrypted bool) *mautrix.Filter {
	state := []event.Type{event.StateMember, rtcMemberType}
	if encrypted {
		state = append(state, event.StateEncryption, event.StateHistoryVisibility)
	}
	timeline := make([]event.Type, 0, len(inboundTypes)+len(state)+1)
	for _, t := range inboundTypes {
		timeline = append(timeline, event.Type{Type: t, Class: event.MessageEventType})
	}
	timeline = append(timeline, state...)
	timeline = append(timeline, rtcTimelineTypes...)
	if encrypted {
		timeline = append(timeline, event.EventEncrypted)
	}
	none := &mautrix.FilterPart{Types: []event.Type{noEventType}}
	return &mautrix.Filter{
		AccountData: none,
		Presence:    none,
		Room: &mautrix.RoomFilter{
			AccountData: none,
			Ephemeral:   none,
			State:       &mautrix.FilterPart{Types: state},
			Timeline:    &mautrix.FilterPart{Types: timeline, Limit: timelineLimit},
		},
	}
}

// syncStore is mautrix's SyncStore over the store's sync values, keys
// "next_batch/<user>" and "filter/<user>". SaveNextBatch keeps nothing:
// mautrix calls it before the handlers run; the syncer persists the token
// after them (commit).
type syncStore struct {
	st     Store
	user   id.UserID
	filter string // hash of the filter definition the stored ID was made for
}

var _ mautrix.SyncStore = (*syncStore)(nil)

// syncStoreError marks a failure of the store under the sync.
type syncStoreError struct{ err error }

func (e *syncStoreError) Error() string { return "matrix sync store: " + e.err.Error() }
func (e *syncStoreError) Unwrap() error { return e.err }

func newSyncStore(st Store, user id.UserID, filter *mautrix.Filter) *syncStore {
	raw, _ := json.Marshal(filter) // a struct of strings and ints: cannot fail
	sum := sha256.Sum256(raw)
	return &syncStore{st: st, user: user, filter: hex.EncodeToString(sum[:])}
}

func nextBatchKey(user id.UserID) string { return "next_batch/" + string(user) }
func filterKey(user id.UserID) string    { return "filter/" + string(user) }

// storedFilter is the value under "filter/<user>": a filter ID is only
// reused for the filter definition it was created for.
type storedFilter struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
}

func (s *syncStore) LoadNextBatch(ctx context.Context, user id.UserID) (string, error) {
	v, err := s.st.LoadSyncValue(ctx, nextBatchKey(user))
	if err != nil {
		return "", &syncStoreError{err}
	}
	return v, nil
}

// SaveNextBatch does nothing; see commit.
func (s *syncStore) SaveNextBatch(context.Context, id.UserID, string) error { return nil }

// commit persists the token of a response whose events were handled.
func (s *syncStore) commit(ctx context.Context, token string) error {
	if err := s.st.SaveSyncValue(ctx, nextBatchKey(s.user), token); err != nil {
		return &syncStoreError{err}
	}
	return nil
}

func (s *syncStore) LoadFilterID(ctx context.Context, user id.UserID) (string, error) {
	v, err := s.st.LoadSyncValue(ctx, filterKey(user))
	if err != nil {
		return "", &syncStoreError{err}
	}
	var f storedFilter
	if v == "" || json.Unmarshal([]byte(v), &f) != nil || f.SHA256 != s.filter {
		return "", nil // none, or made for another filter: mautrix creates one
	}
	return f.ID, nil
}

func (s *syncStore) SaveFilterID(ctx context.Context, user id.UserID, filterID string) error {
	v, err := json.Marshal(storedFilter{ID: filterID, SHA256: s.filter})
	if err != nil {
		return &syncStoreError{err}
	}
	if err := s.st.SaveSyncValue(ctx, filterKey(user), string(v)); err != nil {
		return &syncStoreError{err}
	}
	return nil
}
