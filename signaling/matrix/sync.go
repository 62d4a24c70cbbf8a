package matrix

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
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
	// timelineLimit bounds the call events of one room in one sync
	// response; after a longer outage the older ones are skipped (logged).
	timelineLimit = 100
)

// Kinds of sync failure besides classify's (network, server, …).
const (
	kindStore      = "store"      // the sync store could not be read or written
	kindProcessing = "processing" // mautrix failed while dispatching a response
)

// syncKinds are the kinds of sync failure exported from the start.
var syncKinds = []string{kindNetwork, kindTimeout, kindServer, kindRateLimited, kindUnauthorized, kindForbidden,
	kindNotFound, kindBadRequest, kindClientError, kindStore, kindProcessing}

// syncTiming holds the sync's backoff bounds (New sets the defaults).
type syncTiming struct {
	minBackoff, maxBackoff time.Duration
}

// syncLoop is the bridge's sync: it runs mautrix's long poll, counts and
// retries its failures, persists next_batch after each batch, and keeps
// the lag. Each Run gives it a fresh syncer with the Run's calls service.
type syncLoop struct {
	cli        *mautrix.Client
	log        zerolog.Logger
	user       string
	homeserver string
	now        func() time.Time
	encrypted  bool
	store      *syncStore
	timing     syncTiming
	metrics    *inboundMetrics // set by New, after the lag gauge is made
	in         *inbound
	rooms      *rooms
	crypto     *e2ee                  // set by New; nil without encryption
	rtc        *membership.Rooms      // Config.RTCRooms; nil: memberships not read (rtcmembers.go)
	rtcSeen    *prometheus.CounterVec // membership events by result; set by New with rtc
	rtcCalls   RTCObserver            // Config.RTCCalls; nil: MatrixRTC events not delivered (rtcring.go)
	rtcEvents  *prometheus.CounterVec // rings and declines by kind and result; set by New with rtcCalls

	failures int           // consecutive failures; the sync goroutine only
	lastSync atomic.Int64  // unix nanoseconds; 0 when not syncing
	syncs    atomic.Uint64 // responses processed (tests)
}

// newSyncLoop makes the sync; New sets its metrics and crypto part.
func newSyncLoop(cfg Config, cli *mautrix.Client, log zerolog.Logger, in *inbound, rooms *rooms) *syncLoop {
	encrypted := cfg.Encryption != nil
	return &syncLoop{cli: cli, log: log, user: cfg.UserID, homeserver: cfg.HomeserverURL, now: cfg.Now,
		encrypted: encrypted, store: newSyncStore(cfg.Store, cli.UserID, syncFilter(encrypted)),
		timing: syncTiming{minBackoff: defaultSyncMinBackoff, maxBackoff: defaultSyncMaxBackoff},
		in:     in, rooms: rooms, rtc: cfg.RTCRooms, rtcCalls: cfg.RTCCalls}
}

// syncer is mautrix's DefaultSyncer (handlers by event type, Dispatch for
// decrypted events) with icebox's bookkeeping around each response. One
// is made per Run: the crypto helper registers its handlers on it, and a
// second Run must not register them twice.
type syncer struct {
	*mautrix.DefaultSyncer
	loop *syncLoop
	// life is the handlers' context: Run's values, cancelled when Run
	// returns (late decryptions outlive the batch but not Run).
	life context.Context
	// calls applies the inbound events; fixed for the Run (SetCalls takes
	// effect at the next one), so the handlers read it without a lock.
	calls    InboundCalls
	batchNow time.Time // when the response being processed arrived; the sync goroutine only
}

var (
	_ mautrix.ExtensibleSyncer   = (*syncer)(nil)
	_ mautrix.DispatchableSyncer = (*syncer)(nil)
)

// newSyncer makes a Run's syncer and registers the handlers. Without
// encryption it also registers prepareBatch; with it, Run does once the
// crypto helper's handlers are registered (they import the room keys
// prepareBatch decrypts with).
func (l *syncLoop) newSyncer(life context.Context, calls InboundCalls) *syncer {
	ds := mautrix.NewDefaultSyncer()
	ds.FilterJSON = syncFilter(l.encrypted)
	// mautrix drops an event whose content does not fit its own struct
	// (an offer that is not an object…); call events must reach the
	// handler, which parses them itself and counts them as invalid.
	dropUnparsed := ds.ParseErrorHandler
	ds.ParseErrorHandler = func(evt *event.Event, err error) bool {
		return evt.Type.Class == event.MessageEventType && slices.Contains(inboundTypes, evt.Type.Type) || dropUnparsed(evt, err)
	}
	s := &syncer{DefaultSyncer: ds, loop: l, life: life, calls: calls}
	for _, t := range inboundTypes {
		ds.OnEventType(event.Type{Type: t, Class: event.MessageEventType}, s.onCallEvent)
	}
	ds.OnEventType(event.StateMember, s.onMember)
	s.registerRTC(ds)
	if !l.encrypted {
		ds.OnSync(s.prepareBatch)
	}
	return s
}

func (s *syncer) onCallEvent(ctx context.Context, evt *event.Event) {
	s.loop.in.handle(ctx, evt, s.calls)
}
func (s *syncer) onMember(ctx context.Context, evt *event.Event) {
	s.loop.rooms.onMember(ctx, evt, s.calls)
}

// prepareBatch runs as the syncer's last OnSync handler: it stamps the
// response, decrypts what it can, and finds the invites that must not
// ring (beginBatch).
func (s *syncer) prepareBatch(ctx context.Context, resp *mautrix.RespSync, since string) bool {
	s.loop.beginBatch(ctx, resp, since, s.batchNow)
	return true
}

// ProcessResponse runs the handlers over one sync response, then persists
// its next_batch. The handlers finish the batch even if ctx ends meanwhile
// (each within handlerTimeout): an event marked seen must also be applied.
// The OnSync handlers run first: the crypto helper's (room keys), then
// prepareBatch (beginBatch).
func (s *syncer) ProcessResponse(ctx context.Context, resp *mautrix.RespSync, since string) error {
	l := s.loop
	now := l.now()
	s.batchNow = now
	err := s.DefaultSyncer.ProcessResponse(s.life, resp, since)
	l.in.setSuppressed(nil)
	if err != nil {
		// Only mautrix's own code can get here (the handlers recover
		// their panics). The batch is skipped rather than retried: a
		// response that breaks the dispatcher would break it every time.
		l.metrics.syncErrors.WithLabelValues(kindProcessing).Inc()
		l.log.Error().Err(err).Msg("matrix sync response could not be dispatched; skipped")
	}
	l.rooms.retryJoins(ctx, s.calls)
	if err := l.store.commit(ctx, resp.NextBatch); err != nil {
		return err // SyncWithContext returns it; the loop restarts from the last stored token
	}
	l.failures = 0
	l.lastSync.Store(now.UnixNano())
	l.syncs.Add(1)
	return nil
}

// OnFailedSync counts a failed /sync and returns the backoff; it never
// stops the loop. An unknown token (the token was revoked while running)
// is retried like the rest: an operator fixes it, and verify already
// refused a bad token at start.
func (s *syncer) OnFailedSync(_ *mautrix.RespSync, err error) (time.Duration, error) {
	return s.loop.failed(err, classify(err)), nil
}

// failed counts and logs a sync failure and returns how long to wait.
func (l *syncLoop) failed(err error, f failure) time.Duration {
	l.failures++
	l.metrics.syncErrors.WithLabelValues(f.kind).Inc()
	delay := max(backoff(l.failures, l.timing.minBackoff, l.timing.maxBackoff), f.retryAfter)
	line := l.log.Warn()
	if f.kind == kindUnauthorized || f.kind == kindForbidden {
		line = l.log.Error()
	}
	line.Err(err).Str("homeserver", l.homeserver).Str("kind", f.kind).Int("failures", l.failures).
		Dur("retry_in", delay).Msg("matrix sync failed; retrying")
	return delay
}

// run syncs with the client's syncer until ctx ends, then returns nil.
// SyncWithContext retries failed requests itself (OnFailedSync); it
// returns on the failures it does not retry — creating the filter, the
// sync store — and those are retried here, with the same backoff.
func (l *syncLoop) run(ctx context.Context) error {
	l.lastSync.Store(l.now().UnixNano()) // the lag counts from the start until the first sync
	defer l.lastSync.Store(0)
	for {
		err := l.cli.SyncWithContext(quiet(ctx))
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
		delay := l.failed(err, f)
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

// lag is the icebox_matrix_sync_lag_seconds gauge: seconds since the last
// successful sync (since the start, before the first), 0 when the sync is
// not running.
func (l *syncLoop) lag() float64 {
	last := l.lastSync.Load()
	if last == 0 {
		return 0
	}
	return max(l.now().Sub(time.Unix(0, last)).Seconds(), 0)
}
