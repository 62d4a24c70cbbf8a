package matrix

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The sync loop: mautrix's SyncWithContext long-polls /sync with a filter
// that asks only for call events and our own invitations, and dispatches
// each event to the handlers (inbound.go). Around mautrix:
//
//   - next_batch is persisted after the batch's handlers ran, not before
//     as mautrix does it (SaveNextBatch is called before ProcessResponse):
//     a crash in between then replays the batch, and the seen-events record
//     makes the replay harmless, instead of losing it.
//   - Failures never end the loop: they are counted and retried with
//     backoff until ctx ends.
//   - Each event is stamped with the time its response arrived, for the
//     invite's age (decryption keeps the stamp when crypto is added).
//   - DontProcessOldEvents is not used: it would also hide events from the
//     crypto helper's handlers; old call events are judged by their age.

// Sync intervals. The backoff bounds are fields of syncTiming so that
// tests can shorten them.
const (
	// Backoff after a failed sync: 1 s doubling to 30 s. A long poll waits
	// 30 s anyway, so a homeserver back from a restart is seen within one.
	defaultSyncMinBackoff = time.Second
	defaultSyncMaxBackoff = 30 * time.Second
	// seenRetention: events seen longer ago than this are forgotten. It is
	// twice maxEventAge, so every event old enough to be acted on is still
	// remembered when the sync delivers it again.
	seenRetention = 48 * time.Hour
	pruneInterval = time.Hour
	// timelineLimit bounds the call events of one room in one sync
	// response; after a longer outage the older ones are skipped (logged).
	timelineLimit = 100
	// joinAttempts: a failed auto-join is retried after later syncs, up to
	// this many attempts in all.
	joinAttempts = 5
	joinTimeout  = 30 * time.Second
)

// Results of an auto-join: the result label of icebox_matrix_autojoin_total.
const (
	joinOK      = "ok"      // joined
	joinFailed  = "failed"  // an attempt failed; retried after the next sync
	joinDropped = "dropped" // refused by the homeserver, or out of attempts
)

var joinResults = []string{joinOK, joinFailed, joinDropped}

// Kinds of sync failure besides classify's (network, server, …).
const (
	kindStore      = "store"      // the sync store could not be read or written
	kindProcessing = "processing" // mautrix failed while dispatching a response
)

// syncKinds are the kinds of sync failure exported from the start.
var syncKinds = []string{kindNetwork, kindTimeout, kindServer, kindRateLimited, kindUnauthorized, kindForbidden,
	kindNotFound, kindBadRequest, kindClientError, kindStore, kindProcessing}

// noEventType matches no event: listing it as the only wanted type leaves
// a part of the sync empty. The spec's "*" wildcard in not_types would say
// the same, but Dendrite does not implement wildcards.
var noEventType = event.Type{Type: "io.icebox.none"}

// syncFilter asks for what the handlers need and nothing else: the call
// events and membership changes of the rooms' timelines, and m.room.member
// state (invitations of the service user arrive in rooms.invite). With
// encryption, also m.room.encrypted events and the state the crypto
// machine needs: m.room.encryption (whether to encrypt) and
// m.room.history_visibility (whom to share keys with). To-device events
// (room keys) and device lists are not filtered.
//
// Changing it changes its hash, so the stored filter ID is not reused.
func syncFilter(encrypted bool) *mautrix.Filter {
	state := []event.Type{event.StateMember}
	if encrypted {
		state = append(state, event.StateEncryption, event.StateHistoryVisibility)
	}
	timeline := make([]event.Type, 0, len(inboundTypes)+len(state)+1)
	for _, t := range inboundTypes {
		timeline = append(timeline, event.Type{Type: t, Class: event.MessageEventType})
	}
	timeline = append(timeline, state...)
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

// syncTiming holds the sync's backoff bounds (New sets the defaults).
type syncTiming struct {
	minBackoff, maxBackoff time.Duration
}

// syncer is mautrix's DefaultSyncer (handlers by event type, Dispatch for
// decrypted events) with icebox's bookkeeping around each response.
type syncer struct {
	*mautrix.DefaultSyncer
	b *Bridge
}

var (
	_ mautrix.ExtensibleSyncer   = (*syncer)(nil)
	_ mautrix.DispatchableSyncer = (*syncer)(nil)
)

// newSyncer makes the syncer and registers the handlers.
func newSyncer(b *Bridge) *syncer {
	ds := mautrix.NewDefaultSyncer()
	ds.FilterJSON = syncFilter(b.cfg.Encryption != nil)
	// mautrix drops an event whose content does not fit its own struct
	// (an offer that is not an object…); call events must reach the
	// handler, which parses them itself and counts them as invalid.
	dropUnparsed := ds.ParseErrorHandler
	ds.ParseErrorHandler = func(evt *event.Event, err error) bool {
		return evt.Type.Class == event.MessageEventType && slices.Contains(inboundTypes, evt.Type.Type) || dropUnparsed(evt, err)
	}
	for _, t := range inboundTypes {
		ds.OnEventType(event.Type{Type: t, Class: event.MessageEventType}, b.in.handle)
	}
	ds.OnEventType(event.StateMember, b.onMember)
	return &syncer{DefaultSyncer: ds, b: b}
}

// ProcessResponse runs the handlers over one sync response, then persists
// its next_batch. The handlers finish the batch even if ctx ends meanwhile
// (each within handlerTimeout): an event marked seen must also be applied.
// The OnSync handlers run first: the crypto helper's (room keys), then
// prepareBatch (beginBatch).
func (s *syncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	b := s.b
	now := b.cfg.Now()
	b.batchNow = now
	err := s.DefaultSyncer.ProcessResponse(b.life, resp, since)
	b.in.mu.Lock()
	b.in.suppressed = nil
	b.in.mu.Unlock()
	if err != nil {
		// Only mautrix's own code can get here (the handlers recover
		// their panics). The batch is skipped rather than retried: a
		// response that breaks the dispatcher would break it every time.
		b.inMetrics.syncErrors.WithLabelValues(kindProcessing).Inc()
		b.log.Error().Err(err).Msg("matrix sync response could not be dispatched; skipped")
	}
	b.retryJoins(ctx)
	if err := b.syncStore.commit(ctx, resp.NextBatch); err != nil {
		return err // SyncWithContext returns it; the loop restarts from the last stored token
	}
	b.syncFailures = 0
	b.lastSync.Store(now.UnixNano())
	b.syncs.Add(1)
	return nil
}

// OnFailedSync counts a failed /sync and returns the backoff; it never
// stops the loop. An unknown token (the token was revoked while running)
// is retried like the rest: an operator fixes it, and verify already
// refused a bad token at start.
func (s *syncer) OnFailedSync(_ *mautrix.RespSync, err error) (time.Duration, error) {
	return s.b.syncFailed(err, classify(err)), nil
}

// syncFailed counts and logs a sync failure and returns how long to wait.
func (b *Bridge) syncFailed(err error, f failure) time.Duration {
	b.syncFailures++
	b.inMetrics.syncErrors.WithLabelValues(f.kind).Inc()
	delay := max(backoff(b.syncFailures, b.syncTiming.minBackoff, b.syncTiming.maxBackoff), f.retryAfter)
	line := b.log.Warn()
	if f.kind == kindUnauthorized || f.kind == kindForbidden {
		line = b.log.Error()
	}
	line.Err(err).Str("homeserver", b.cfg.HomeserverURL).Str("kind", f.kind).Int("failures", b.syncFailures).
		Dur("retry_in", delay).Msg("matrix sync failed; retrying")
	return delay
}

// beginBatch prepares the handlers for a response: it stamps its events
// with the time it arrived, decrypts the encrypted ones it can, finds the
// invites that must not ring, and logs the gaps of limited timelines.
func (b *Bridge) beginBatch(ctx context.Context, resp *mautrix.RespSync, since string, now time.Time) {
	stamp := func(evs []*event.Event) {
		for _, evt := range evs {
			evt.Mautrix.ReceivedAt = now
		}
	}
	var suppressed map[string]bool
	for roomID, room := range resp.Rooms.Join {
		stamp(room.Timeline.Events)
		stamp(room.State.Events)
		b.decryptTimeline(ctx, roomID, room.Timeline.Events)
		if room.Timeline.Limited && since != "" && !joinedIn(b.cfg.UserID, room.Timeline.Events) {
			b.log.Warn().Str("room_id", string(roomID)).Int("events", len(room.Timeline.Events)).
				Msg("matrix sync skipped older call events of a room (limited timeline)")
		}
		for _, inv := range endedInvites(b.cfg.UserID, room.Timeline.Events) {
			if suppressed == nil {
				suppressed = make(map[string]bool)
			}
			suppressed[inv] = true
		}
	}
	for _, room := range resp.Rooms.Leave {
		stamp(room.Timeline.Events)
	}
	for _, room := range resp.Rooms.Invite {
		stamp(room.State.Events)
	}
	b.in.mu.Lock()
	b.in.suppressed = suppressed
	b.in.mu.Unlock()
}

// joinedIn reports whether the timeline holds the service user's own join:
// a homeserver marks the timeline of a room just joined as limited, though
// there is nothing the bridge missed.
func joinedIn(self string, timeline []*event.Event) bool {
	for _, evt := range timeline {
		if evt.Type.Type == event.StateMember.Type && evt.GetStateKey() == self {
			var m struct {
				Membership string `json:"membership"`
			}
			if json.Unmarshal(evt.Content.VeryRaw, &m) == nil && m.Membership == string(event.MembershipJoin) {
				return true
			}
		}
	}
	return false
}

// endedInvites returns the event IDs of the invites in a room's timeline
// that a later event of the same batch answered, rejected or hung up (not
// icebox's own): the spec has clients process a whole batch before
// ringing, so that a call already over does not ring.
func endedInvites(self string, timeline []*event.Event) []string {
	invites := map[string]string{} // call_id → invite event ID
	var out []string
	for _, evt := range timeline {
		if string(evt.Sender) == self || evt.StateKey != nil {
			continue
		}
		var base struct {
			CallID string `json:"call_id"`
		}
		if json.Unmarshal(evt.Content.VeryRaw, &base) != nil || base.CallID == "" {
			continue
		}
		switch evt.Type.Type {
		case TypeInvite:
			invites[base.CallID] = string(evt.ID)
		case TypeAnswer, TypeReject, TypeHangup:
			if inv, ok := invites[base.CallID]; ok {
				out = append(out, inv)
				delete(invites, base.CallID)
			}
		}
	}
	return out
}

// runSync syncs until ctx ends, then returns nil. SyncWithContext retries
// failed requests itself (OnFailedSync); it returns on the failures it
// does not retry — creating the filter, the sync store — and those are
// retried here, with the same backoff.
func (b *Bridge) runSync(ctx context.Context) error {
	b.lastSync.Store(b.cfg.Now().UnixNano()) // the lag counts from the start until the first sync
	defer b.lastSync.Store(0)
	for {
		err := b.cli.SyncWithContext(quiet(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err == nil { // only StopSync ends it without an error, and nothing calls it
			err = errors.New("the sync stopped")
		}
		f := classify(err)
		var se *syncStoreError
		if errors.As(err, &se) {
			f = failure{kind: kindStore}
		}
		delay := b.syncFailed(err, f)
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

// syncLag is the icebox_matrix_sync_lag_seconds gauge: seconds since the
// last successful sync (since the start, before the first), 0 when the
// sync is not running.
func (b *Bridge) syncLag() float64 {
	last := b.lastSync.Load()
	if last == 0 {
		return 0
	}
	return max(b.cfg.Now().Sub(time.Unix(0, last)).Seconds(), 0)
}

// --- auto-join ---

// pendingJoin is an invitation whose join failed and is retried.
type pendingJoin struct {
	attempts int
	next     time.Time
}

// onMember joins the rooms the service user is invited to, and keeps the
// participants of a joined room's conversation in step with its members.
func (b *Bridge) onMember(ctx context.Context, evt *event.Event) {
	if evt.Mautrix.EventSource&event.SourceInvite == 0 {
		if evt.Mautrix.EventSource&event.SourceJoin != 0 && evt.GetStateKey() != b.cfg.UserID {
			b.mapRoom(ctx, evt.RoomID) // someone joined or left a room we are in
		}
		return
	}
	if evt.GetStateKey() != b.cfg.UserID {
		return
	}
	var m struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(evt.Content.VeryRaw, &m) != nil || m.Membership != string(event.MembershipInvite) {
		return
	}
	b.log.Info().Str("room_id", string(evt.RoomID)).Str("inviter", string(evt.Sender)).Msg("matrix invitation received")
	b.join(ctx, evt.RoomID, 1)
}

// join tries to join a room once; a transient failure is retried after a
// later sync (retryJoins).
func (b *Bridge) join(ctx context.Context, roomID id.RoomID, attempt int) {
	jctx, cancel := context.WithTimeout(quiet(ctx), joinTimeout)
	_, err := b.cli.JoinRoomByID(jctx, roomID)
	cancel()
	if err == nil {
		delete(b.pendingJoins, roomID)
		b.inMetrics.autojoin.WithLabelValues(joinOK).Inc()
		b.log.Info().Str("room_id", string(roomID)).Int("attempts", attempt).Msg("matrix room joined")
		b.mapRoom(ctx, roomID)
		return
	}
	f := classify(err)
	if f.permanent || attempt >= joinAttempts {
		delete(b.pendingJoins, roomID)
		b.inMetrics.autojoin.WithLabelValues(joinDropped).Inc()
		b.log.Error().Err(err).Str("room_id", string(roomID)).Str("kind", f.kind).Int("attempts", attempt).
			Msg("matrix room not joined; giving up")
		return
	}
	next := b.cfg.Now().Add(max(backoff(attempt, b.syncTiming.minBackoff, b.syncTiming.maxBackoff), f.retryAfter))
	b.pendingJoins[roomID] = pendingJoin{attempts: attempt, next: next}
	b.inMetrics.autojoin.WithLabelValues(joinFailed).Inc()
	b.log.Warn().Err(err).Str("room_id", string(roomID)).Str("kind", f.kind).Int("attempts", attempt).
		Time("next_attempt", next).Msg("matrix room not joined; will retry")
}

// retryJoins retries the failed joins that are due. The invitation is not
// delivered again by later syncs, so the bridge keeps it (in memory: an
// initial sync after a restart lists pending invitations anew).
func (b *Bridge) retryJoins(ctx context.Context) {
	now := b.cfg.Now()
	for roomID, p := range b.pendingJoins {
		if !now.Before(p.next) {
			b.join(ctx, roomID, p.attempts+1)
		}
	}
}

// --- seen events ---

// pruneSeen forgets seen events older than seenRetention, at start and
// then every pruneInterval, until ctx ends.
func (b *Bridge) pruneSeen(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		n, err := b.cfg.Store.PruneSeenEvents(ctx, b.cfg.Now().Add(-seenRetention))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.log.Error().Err(err).Msg("pruning seen matrix events")
		case n > 0:
			b.log.Info().Int("removed", n).Msg("pruned seen matrix events")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// --- sync store ---

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

// syncState is the bridge's sync bookkeeping (fields of Bridge).
type syncState struct {
	syncer       *syncer         // made by Run
	life         context.Context // the handlers' context: Run's values, cancelled when Run returns
	batchNow     time.Time       // when the response being processed arrived; the sync goroutine only
	syncStore    *syncStore
	syncTiming   syncTiming
	inMetrics    *inboundMetrics
	syncFailures int                       // consecutive failures; the sync goroutine only
	pendingJoins map[id.RoomID]pendingJoin // the sync goroutine only
	lastSync     atomic.Int64              // unix nanoseconds; 0 when not syncing
	syncs        atomic.Uint64             // responses processed (tests)
}

// mapRoom makes a joined room a conversation of its joined members (or
// refreshes them). Failures are logged: the next membership change or
// join tries again.
func (b *Bridge) mapRoom(ctx context.Context, roomID id.RoomID) {
	calls := b.calls
	if calls == nil {
		return
	}
	mctx, cancel := context.WithTimeout(quiet(ctx), joinTimeout)
	resp, err := b.cli.JoinedMembers(mctx, roomID)
	cancel()
	if err != nil {
		b.log.Warn().Err(err).Str("room_id", string(roomID)).Msg("listing the members of a joined room")
		return
	}
	var members []string
	for user := range resp.Joined {
		if string(user) != b.cfg.UserID {
			members = append(members, string(user))
		}
	}
	slices.Sort(members)
	conv, err := calls.RoomJoined(ctx, string(roomID), members)
	if err != nil {
		b.log.Warn().Err(err).Str("room_id", string(roomID)).Msg("mapping a joined room to a conversation")
		return
	}
	b.log.Info().Str("room_id", string(roomID)).Str("conversation_id", conv.ID).Int("participants", len(conv.Participants)).
		Msg("matrix room mapped to a conversation")
}
