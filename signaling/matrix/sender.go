package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
)

// Sender defaults. Each is a field of senderConfig so that tests can
// shorten them.
const (
	// defaultPoll: the sender reads the outbox at least this often, so
	// entries committed without a Wake (another process, a restart) go out
	// within a second.
	defaultPoll = time.Second
	// Backoff after a failed attempt: 1 s doubling to 60 s. A homeserver
	// back from a restart is retried within a minute; a dead one costs
	// one request per call per minute.
	defaultMinBackoff = time.Second
	defaultMaxBackoff = time.Minute
	// defaultMaxAge: an event still unsent after a day is about a call long
	// over; sending it would only confuse the room's clients.
	defaultMaxAge = 24 * time.Hour
	// defaultPermanentAttempts: a permanent refusal (403, 404, 400) is
	// retried this many times in all before the entry is dropped — a
	// membership or power-level change being applied may still fix it.
	defaultPermanentAttempts = 5
	// defaultSendTimeout bounds one PUT; Dendrite and Synapse answer in
	// tens of milliseconds, a stuck connection must not hold a call's
	// events for the client's 3-minute default.
	defaultSendTimeout = 30 * time.Second
	// defaultPageSize is how many entries one pass reads. When a full page
	// is all waiting (one call's refused entries can fill it), the next
	// pass reads twice as many, up to maxPageSize, so that the calls behind
	// it are not starved; back to the default once something went out.
	defaultPageSize = 100
	maxPageSize     = 10_000
	// defaultConcurrency: calls are independent, so this many are sent in
	// parallel; each call's own entries strictly one after the other.
	defaultConcurrency = 4
)

type senderConfig struct {
	store        Store
	client       *mautrix.Client
	log          zerolog.Logger
	metrics      *metrics
	now          func() time.Time
	wake         <-chan struct{}
	batchWindow  time.Duration
	onInviteSent func(ctx context.Context, e signaling.OutboxEntry, partyID, eventID string)
	// onInviteDropped runs when a call's invite is given up on.
	onInviteDropped func(callID string)
	// checkRoom, when set, runs before each send: an error is handled
	// like the send's own, errUnencryptedRoom drops the event.
	checkRoom func(ctx context.Context, roomID id.RoomID) error

	// Zero means the default above.
	poll, minBackoff, maxBackoff, maxAge, sendTimeout time.Duration
	permanentAttempts, pageSize, concurrency          int
}

// sender delivers the outbox: in Seq order within a call, calls
// independently, candidates batched, each entry with its own transaction
// ID so that a retry after a lost response is deduplicated by the
// homeserver instead of posted twice.
type sender struct {
	senderConfig
}

func newSender(cfg senderConfig) *sender {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.poll, defaultPoll)
	def(&cfg.minBackoff, defaultMinBackoff)
	def(&cfg.maxBackoff, defaultMaxBackoff)
	def(&cfg.maxAge, defaultMaxAge)
	def(&cfg.sendTimeout, defaultSendTimeout)
	if cfg.permanentAttempts == 0 {
		cfg.permanentAttempts = defaultPermanentAttempts
	}
	if cfg.pageSize == 0 {
		cfg.pageSize = defaultPageSize
	}
	if cfg.concurrency == 0 {
		cfg.concurrency = defaultConcurrency
	}
	return &sender{senderConfig: cfg}
}

// run sends until ctx ends. A pass that made progress is followed at once
// by another (there may be more than one page); otherwise the sender sleeps
// until a Wake, the earliest due entry, or the poll interval.
func (s *sender) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	page := s.pageSize
	for {
		due, progressed, full := s.pass(ctx, page)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			page = s.pageSize
			continue
		}
		if full {
			page = min(2*page, max(maxPageSize, s.pageSize))
		}
		wait := s.poll
		if !due.IsZero() {
			wait = min(wait, max(due.Sub(s.now()), time.Millisecond))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// pass reads one page of the outbox and works through it, call by call. It
// returns the earliest time a held entry becomes due (zero: none), whether
// any entry was sent or dropped, and whether the page was full.
func (s *sender) pass(ctx context.Context, page int) (due time.Time, progressed, full bool) {
	entries, err := s.store.PendingOutbox(ctx, page)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("reading the Matrix outbox")
		}
		return time.Time{}, false, false
	}
	var (
		mu sync.Mutex
		g  errgroup.Group
	)
	g.SetLimit(s.concurrency)
	for _, q := range byCall(entries) {
		g.Go(func() error {
			d, p := s.sendCall(ctx, q)
			mu.Lock()
			defer mu.Unlock()
			progressed = progressed || p
			if !d.IsZero() && (due.IsZero() || d.Before(due)) {
				due = d
			}
			return nil
		})
	}
	_ = g.Wait() // the goroutines return nil; failures are handled per entry
	return due, progressed, len(entries) == page
}

// byCall splits entries (in Seq order) into per-call queues, keeping Seq
// order within each and the calls in order of their oldest entry.
func byCall(entries []signaling.OutboxEntry) [][]signaling.OutboxEntry {
	index := make(map[string]int)
	var out [][]signaling.OutboxEntry
	for _, e := range entries {
		i, ok := index[e.CallID]
		if !ok {
			i = len(out)
			index[e.CallID] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], e)
	}
	return out
}

// outcome of sending one group of entries.
type outcome int

const (
	sent    outcome = iota // sent and completed
	dropped                // given up on and dropped
	retry                  // failed; retried later (RetryOutbox written)
	stopped                // ctx ended or the store failed: nothing recorded
)

// sendCall sends one call's queue in order. An entry that is not due yet
// blocks the entries after it (returned as due).
func (s *sender) sendCall(ctx context.Context, q []signaling.OutboxEntry) (due time.Time, progressed bool) {
	inviteDropped := false
	for i := 0; i < len(q); {
		if ctx.Err() != nil {
			return time.Time{}, progressed
		}
		now := s.now()
		e := q[i]
		reason := ""
		switch {
		case inviteDropped:
			// The call never reached the room; what follows would be
			// about an unknown call.
			reason = reasonInviteExpired
		case now.Sub(e.CreatedAt) > s.maxAge:
			reason = reasonExpired
		case e.NextAttempt.After(now):
			return e.NextAttempt, progressed
		case e.EventType == TypeInvite && inviteLapsed(e, now):
			// Its origin_server_ts would be fresh, so clients would ring
			// for the whole lifetime for a call that is over.
			reason, inviteDropped = reasonInviteExpired, true
		case e.RoomID == "" || e.EventType == "" || !json.Valid(e.Content):
			reason = kindInvalid
		}
		if reason != "" {
			if !s.drop(ctx, q[i:i+1], reason, 0) {
				return time.Time{}, progressed
			}
			i++
			progressed = true
			continue
		}

		group, content := q[i:i+1], json.RawMessage(e.Content)
		if e.EventType == TypeCandidates {
			var hold time.Time
			group, content, hold = s.batch(q[i:], now)
			if !hold.IsZero() {
				return hold, progressed
			}
		}
		switch out, next := s.send(ctx, group, content); out {
		case sent, dropped:
			i += len(group)
			progressed = true
		case retry:
			return next, progressed
		case stopped:
			return time.Time{}, progressed
		}
	}
	return time.Time{}, progressed
}

// inviteLapsed reports whether an invite's lifetime has passed.
func inviteLapsed(e signaling.OutboxEntry, now time.Time) bool {
	var c struct {
		Lifetime int64 `json:"lifetime"`
	}
	if json.Unmarshal(e.Content, &c) != nil || c.Lifetime <= 0 {
		return false
	}
	return !now.Before(e.CreatedAt.Add(time.Duration(c.Lifetime) * time.Millisecond))
}

// send sends group (one entry, or merged candidates) as one event with the
// first entry's transaction ID, and records the result in the store.
func (s *sender) send(ctx context.Context, group []signaling.OutboxEntry, content json.RawMessage) (outcome, time.Time) {
	e := group[0]
	// A send in flight is finished, not cancelled, when icebox stops (it
	// is bounded by sendTimeout): a homeserver may store an event from a
	// cancelled request without recording its transaction ID, and the
	// retry after the restart would then post it twice.
	flight := context.WithoutCancel(ctx)
	sctx, cancel := context.WithTimeout(quiet(flight), s.sendTimeout)
	begin := time.Now()
	var resp *mautrix.RespSendEvent
	var err error
	if s.checkRoom != nil {
		err = s.checkRoom(sctx, id.RoomID(e.RoomID))
	}
	if err == nil {
		resp, err = s.client.SendMessageEvent(sctx, id.RoomID(e.RoomID),
			event.Type{Type: e.EventType, Class: event.MessageEventType}, content,
			mautrix.ReqSendEvent{TransactionID: e.TxnID})
	}
	cancel()
	if err == nil {
		return s.sent(flight, group, content, string(resp.EventID), time.Since(begin))
	}
	if ctx.Err() != nil {
		return stopped, time.Time{} // shutting down: not the entry's failure
	}
	if errors.Is(err, errUnencryptedRoom) {
		s.log.Error().Str("type", e.EventType).Str("call_id", e.CallID).Str("room_id", e.RoomID).Int("entries", len(group)).
			Msg("matrix event not sent: the room is not end-to-end encrypted and matrix.require_encryption is on; the call goes on without Matrix")
		if !s.drop(ctx, group, reasonUnencrypted, e.Attempts+1) {
			return stopped, time.Time{}
		}
		return dropped, time.Time{}
	}

	f := classify(err)
	s.metrics.sendErrors.WithLabelValues(f.kind).Inc()
	// One count for all failures: an entry refused after an outage that
	// cost it five attempts already is dropped at the first refusal.
	attempts := e.Attempts + 1
	log := s.log.Warn()
	if f.permanent {
		log = s.log.Error()
	}
	log = log.Err(err).Str("type", e.EventType).Str("call_id", e.CallID).Str("room_id", e.RoomID).
		Str("kind", f.kind).Int("attempts", attempts).Int("entries", len(group))
	if f.permanent && attempts >= s.permanentAttempts {
		log.Msg("matrix event refused; dropped")
		if !s.drop(ctx, group, f.kind, attempts) {
			return stopped, time.Time{}
		}
		return dropped, time.Time{}
	}
	next := s.now().Add(max(backoff(attempts, s.minBackoff, s.maxBackoff), f.retryAfter))
	log.Time("next_attempt", next).Msg("matrix event not sent; will retry")
	for _, g := range group {
		if err := s.store.RetryOutbox(ctx, g.Seq, attempts, next); err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Uint64("seq", g.Seq).Str("call_id", g.CallID).Msg("recording a Matrix send failure")
			}
			return stopped, time.Time{}
		}
	}
	return retry, next
}

// sent completes the group's entries, counts and logs the event, and runs
// the invite hook. Entries are completed last to first: if the store fails
// half-way, the first entry (whose transaction ID was used) is still there,
// and its retry is answered by the homeserver with the same event ID.
func (s *sender) sent(ctx context.Context, group []signaling.OutboxEntry, content json.RawMessage, eventID string, took time.Duration) (outcome, time.Time) {
	e := group[0]
	for i := len(group) - 1; i >= 0; i-- {
		if err := s.store.CompleteOutbox(ctx, group[i].Seq, eventID); err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Uint64("seq", group[i].Seq).Str("call_id", e.CallID).
					Str("event_id", eventID).Msg("matrix event sent but not marked sent; it will be sent again with the same transaction ID")
			}
			return stopped, time.Time{}
		}
	}
	var party string
	switch e.EventType {
	case TypeInvite:
		s.metrics.inviteSent.Inc()
		party = partyOf(content)
	case TypeAnswer:
		s.metrics.answerSent.Inc()
	case TypeHangup:
		s.metrics.hangupSent.Inc()
		if c, err := s.store.Call(ctx, e.CallID); err == nil {
			s.metrics.observeCall(c)
		}
	case TypeCandidates:
		s.metrics.candidatesSent.Add(float64(countCandidates(content)))
	}
	s.log.Info().Str("type", e.EventType).Str("call_id", e.CallID).Str("room_id", e.RoomID).
		Str("event_id", eventID).Int("entries", len(group)).Int("attempts", e.Attempts+1).
		Dur("took", took).Msg("matrix event sent")
	if e.EventType == TypeInvite && s.onInviteSent != nil {
		s.onInviteSent(ctx, e, party, eventID)
	}
	return sent, time.Time{}
}

// drop deletes entries that will not be sent and counts them; false if the
// store failed.
func (s *sender) drop(ctx context.Context, group []signaling.OutboxEntry, reason string, attempts int) bool {
	for _, e := range group {
		if err := s.store.DropOutbox(ctx, e.Seq); err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Uint64("seq", e.Seq).Str("call_id", e.CallID).Msg("dropping a Matrix outbox entry")
			}
			return false
		}
		s.metrics.dropped.WithLabelValues(reason).Inc()
		if e.EventType == TypeInvite {
			s.metrics.inviteFailed.Inc()
			if s.onInviteDropped != nil {
				s.onInviteDropped(e.CallID)
			}
		}
		if attempts == 0 { // send already logged refusals
			s.log.Warn().Str("type", e.EventType).Str("call_id", e.CallID).Str("room_id", e.RoomID).
				Str("reason", reason).Time("created_at", e.CreatedAt).Msg("matrix event dropped unsent")
		}
	}
	return true
}

func partyOf(content json.RawMessage) string {
	var b callBase
	_ = json.Unmarshal(content, &b) // content was accepted by the homeserver: valid JSON
	return b.PartyID
}

// quiet returns ctx carrying a logger that drops mautrix's per-request log
// line. That line holds the request body — for a send, the SDP and the
// candidates — at debug level, and at error level when the request fails
// (mautrix masks it only for its own "sensitive" requests). The bridge
// writes its own line per event or request instead, without the body.
// mautrix takes the context's logger over cli.Log unless it is disabled,
// so a logger writing to io.Discard is used, not zerolog.Nop().
func quiet(ctx context.Context) context.Context { return zerolog.New(io.Discard).WithContext(ctx) }
