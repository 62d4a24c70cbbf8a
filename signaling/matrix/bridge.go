package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
)

// Store is what the bridge needs from durable storage (package store
// implements it). Every method commits before it returns nil.
type Store interface {
	// PendingOutbox returns up to limit entries, in Seq order, whether
	// due or not.
	PendingOutbox(ctx context.Context, limit int) ([]signaling.OutboxEntry, error)
	// OutboxDepth counts the entries not yet sent or dropped.
	OutboxDepth(ctx context.Context) (int, error)
	// CompleteOutbox deletes a sent entry; for an m.call.invite it also
	// records eventID as the call's MatrixInviteEventID.
	CompleteOutbox(ctx context.Context, seq uint64, eventID string) error
	// RetryOutbox records a failed attempt and when to try again.
	RetryOutbox(ctx context.Context, seq uint64, attempts int, next time.Time) error
	// DropOutbox deletes an entry that will never be sent.
	DropOutbox(ctx context.Context, seq uint64) error
	// Call returns a call (to address CallMatrixSent and to answer
	// WaitInviteSent for an invite sent before the wait began; inbound, to
	// recognise icebox's own parties).
	Call(ctx context.Context, id string) (signaling.Call, error)

	// Inbound (when Config.Calls is set):

	// MarkEventSeen records a Matrix event ID and reports whether it is
	// the first time; an event delivered again is applied once.
	MarkEventSeen(ctx context.Context, eventID string, at time.Time) (first bool, err error)
	// PruneSeenEvents forgets the events seen before before.
	PruneSeenEvents(ctx context.Context, before time.Time) (removed int, err error)
	// SaveSyncValue and LoadSyncValue keep the sync's next_batch token
	// and filter ID ("" when none).
	SaveSyncValue(ctx context.Context, key, value string) error
	LoadSyncValue(ctx context.Context, key string) (string, error)
}

// Config configures the bridge.
type Config struct {
	// HomeserverURL is the client-server API's base URL, e.g.
	// https://matrix.example.org. Required.
	HomeserverURL string
	// UserID is the service user, @icebox:example.org. Required.
	UserID string
	// AccessToken is the service user's token, from its own login (never a
	// token copied from another client). One of AccessToken and Password
	// is required.
	AccessToken string
	// Password logs the service user in as a new device the first time;
	// the session is kept in Encryption.Dir and used from then on. It also
	// answers the homeserver's password prompt when the device uploads its
	// cross-signing keys. Needs Encryption.
	Password string
	// DeviceID is the token's device; when set, Run checks the token
	// belongs to it. Default: not checked.
	DeviceID string
	// Store holds the outbox. Required.
	Store Store
	// Publisher receives CallMatrixSent. Default: nil, nothing published.
	Publisher signaling.Publisher
	// Calls applies the m.call.* events of Matrix users; with it, Run also
	// syncs. The calls service usually needs the bridge first (its
	// Encoder), so it may be given later with SetCalls. Default: nil,
	// outbound only: nothing is read from Matrix.
	Calls InboundCalls
	// Logger is the parent logger; the bridge adds component=matrix.
	Logger zerolog.Logger
	// Registerer takes the bridge's metrics. Default: nil, not registered.
	Registerer prometheus.Registerer
	// BatchWindow is how long the first of a burst of ICE candidates waits
	// for more before they go out in one m.call.candidates event.
	// Default: 200 ms (matrix-js-sdk waits 500–2000 ms; icebox's clients
	// batch already, so a short window adds little delay).
	BatchWindow time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Encryption turns on end-to-end encryption (crypto.go). Default: nil,
	// plain rooms only: nothing is encrypted or decrypted.
	Encryption *Encryption
}

const defaultBatchWindow = 200 * time.Millisecond

// Bridge carries icebox calls into Matrix rooms and, with a calls service
// (Config.Calls), the calls of Matrix users into icebox. It implements
// signaling.InviteWaiter and signaling.RoomCreator; Encoder returns its
// signaling.Outbound.
type Bridge struct {
	cfg     Config
	log     zerolog.Logger
	cli     *mautrix.Client
	enc     *Encoder
	send    *sender
	waiters inviteWaiters
	rooms   singleflight.Group
	running atomic.Bool

	in      *inbound
	callsMu sync.Mutex
	calls   InboundCalls // Config.Calls or SetCalls
	syncState
	cryptoState
	sessionStored bool // the token is a stored session of a password login
}

var (
	_ signaling.InviteWaiter = (*Bridge)(nil)
	_ signaling.RoomCreator  = (*Bridge)(nil)
)

// New checks cfg and prepares the client; it does no I/O (Run verifies the
// token). The metrics are registered with cfg.Registerer, so one Bridge per
// registry.
func New(cfg Config) (*Bridge, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.BatchWindow == 0 {
		cfg.BatchWindow = defaultBatchWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With().Str("component", "matrix").Logger()
	cli, err := mautrix.NewClient(cfg.HomeserverURL, id.UserID(cfg.UserID), cfg.AccessToken) // with Password, set by Run
	if err != nil {
		return nil, fmt.Errorf("matrix: homeserver_url %q: %w", cfg.HomeserverURL, err)
	}
	cli.DeviceID = id.DeviceID(cfg.DeviceID)
	cli.Log = log
	// The outbox retries, with its own backoff and bookkeeping; a retry
	// inside mautrix would hide failures from it and hold up other calls.
	cli.DefaultHTTPRetries = 0

	// cli.Log is for what runs inside mautrix on its own (the sync loop and
	// crypto, later). The requests the bridge makes itself run with quiet:
	// the bridge logs their outcome once, without the request body.
	b := &Bridge{cfg: cfg, log: log, cli: cli}
	wake := make(chan struct{}, 1)
	b.enc = &Encoder{now: cfg.Now, wake: wake}
	outMetrics := newMetrics(cfg.Registerer, cfg.Store)
	b.send = newSender(senderConfig{
		store:        cfg.Store,
		client:       cli,
		log:          log,
		metrics:      outMetrics,
		now:          cfg.Now,
		wake:         wake,
		batchWindow:  cfg.BatchWindow,
		onInviteSent: b.inviteSent,
		checkRoom:    b.checkRoom,
		// An initiate waiting for the invite's event ID stops waiting.
		onInviteDropped: func(callID string) { b.waiters.release(callID, "") },
	})

	b.calls = cfg.Calls
	b.inMetrics = newInboundMetrics(cfg.Registerer, b.syncLag)
	b.inMetrics.observeCall = outMetrics.observeCall
	b.syncTiming = syncTiming{minBackoff: defaultSyncMinBackoff, maxBackoff: defaultSyncMaxBackoff}
	b.pendingJoins = make(map[id.RoomID]pendingJoin)
	b.in = &inbound{user: cfg.UserID, store: cfg.Store, log: log, metrics: b.inMetrics, now: cfg.Now,
		requireEncrypted: cfg.Encryption != nil && cfg.Encryption.Require}
	b.roomsLoaded = make(map[id.RoomID]bool)
	b.syncStore = newSyncStore(cfg.Store, cli.UserID, syncFilter(cfg.Encryption != nil))
	cli.Store = b.syncStore
	return b, nil
}

// SetCalls sets the calls service that applies inbound events, for when it
// could not be built before the bridge (Config.Calls). It takes effect at
// the next Run; nil turns inbound off.
func (b *Bridge) SetCalls(calls InboundCalls) {
	b.callsMu.Lock()
	defer b.callsMu.Unlock()
	b.calls = calls
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.HomeserverURL == "" {
		errs = append(errs, errors.New("matrix: homeserver_url: required"))
	} else if u, err := url.Parse(cfg.HomeserverURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("matrix: homeserver_url: %q is not an http(s) URL", cfg.HomeserverURL))
	}
	if !isMatrixUserID(cfg.UserID) {
		errs = append(errs, fmt.Errorf("matrix: service_user: %q is not a Matrix user ID (@name:server)", cfg.UserID))
	}
	switch {
	case cfg.AccessToken == "" && cfg.Password == "":
		errs = append(errs, errors.New("matrix: access_token or password: required"))
	case cfg.AccessToken != "" && cfg.Password != "":
		errs = append(errs, errors.New("matrix: access_token and password are both set; keep one"))
	case cfg.Password != "" && cfg.Encryption == nil:
		errs = append(errs, errors.New("matrix: password login needs Encryption (its directory keeps the session)"))
	}
	if cfg.Encryption != nil && cfg.Encryption.Dir == "" {
		errs = append(errs, errors.New("matrix: Encryption.Dir is required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("matrix: Store is required"))
	}
	if cfg.BatchWindow < 0 {
		errs = append(errs, fmt.Errorf("matrix: batch window %v is negative", cfg.BatchWindow))
	}
	return errors.Join(errs...)
}

// Encoder returns the signaling.Outbound that writes this bridge's outbox
// entries and wakes its sender.
func (b *Bridge) Encoder() signaling.Outbound { return b.enc }

// Run verifies the access token and sends the outbox until ctx ends; it
// then returns nil. It returns an error, naming the homeserver, if the
// homeserver refuses the token or the token is another user's. While the
// homeserver cannot be reached the check is retried in the background and
// the sender keeps the outbox (retrying with backoff): a homeserver that is
// down when icebox starts delays Matrix events, it does not stop calls.
//
// With a calls service (Config.Calls, SetCalls), Run also syncs once the
// token is verified — the sync must not read another user's events — and
// applies the m.call.* events of Matrix users through it. Sync failures
// are retried with backoff until ctx ends.
func (b *Bridge) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("matrix: Run is already running")
	}
	defer b.running.Store(false)
	defer b.cli.Client.CloseIdleConnections()

	b.callsMu.Lock()
	b.in.calls = b.calls
	b.callsMu.Unlock()
	syncing := b.in.calls != nil
	// A fresh syncer per Run: the crypto helper registers its handlers on
	// it, and a second Run must not register them twice.
	b.syncer = newSyncer(b)
	b.cli.Syncer = b.syncer
	if b.cfg.Encryption == nil {
		b.syncer.OnSync(b.prepareBatch)
	}
	// Late decryptions (a room key that arrives after its event) outlive
	// the batch but not Run.
	defer b.closeCrypto() // after stop: the late decryptions end first
	life, stop := context.WithCancel(quiet(context.WithoutCancel(ctx)))
	b.life = life
	defer stop()

	// With encryption nothing may be sent before the crypto helper is up:
	// mautrix would send in plaintext.
	ready := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := b.start(gctx); err != nil || gctx.Err() != nil {
			return err
		}
		close(ready)
		if !syncing {
			return nil
		}
		return b.runSync(gctx)
	})
	g.Go(func() error {
		if b.cfg.Encryption != nil {
			select {
			case <-ready:
			case <-gctx.Done():
				return nil
			}
		}
		b.send.run(gctx)
		return nil
	})
	if syncing {
		g.Go(func() error { b.pruneSeen(gctx); return nil })
	}
	return g.Wait()
}

// start logs in (password login, or the stored session), verifies the
// token and brings end-to-end encryption up, retrying while the homeserver
// cannot be reached. It returns an error for what retrying cannot fix.
func (b *Bridge) start(ctx context.Context) error {
	if b.cfg.Password != "" {
		if err := b.ensureSession(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
	if err := b.verify(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	if b.cfg.Encryption == nil {
		return nil
	}
	return b.retry(ctx, "setting up end-to-end encryption", b.initCrypto)
}

// whoamiTimeout bounds one token check; the homeserver answers in
// milliseconds when it is up.
const whoamiTimeout = 30 * time.Second

// verify checks the token with /account/whoami, retrying while the
// homeserver cannot be reached or answers 5xx/429.
func (b *Bridge) verify(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(quiet(ctx), whoamiTimeout)
		resp, err := b.cli.Whoami(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return b.checkWhoami(resp)
		}
		f := classify(err)
		switch {
		case (f.kind == kindUnauthorized || f.kind == kindForbidden) && b.sessionStored:
			return fmt.Errorf("matrix: %s refused the stored session of %s (device %s): it was logged out or deleted; that device and its keys are gone, so "+
				"delete %s, %s* and %s in %s (keep %s) and restart to log in as a new device: %w", b.cfg.HomeserverURL, b.cfg.UserID, b.cli.DeviceID,
				sessionFile, cryptoDBFile, pickleKeyFile, b.cfg.Encryption.Dir, recoveryKeyFile, err)
		case f.kind == kindUnauthorized || f.kind == kindForbidden:
			return fmt.Errorf("matrix: %s refused the access token of %s: %w", b.cfg.HomeserverURL, b.cfg.UserID, err)
		case f.permanent: // 404 and the like: not a Matrix client-server API at that URL
			return fmt.Errorf("matrix: %s failed the access token check of %s (is homeserver_url the client-server API's base URL?): %w", b.cfg.HomeserverURL, b.cfg.UserID, err)
		}
		delay := max(backoff(attempt, b.send.minBackoff, b.send.maxBackoff), f.retryAfter)
		b.log.Warn().Err(err).Str("homeserver", b.cfg.HomeserverURL).Dur("retry_in", delay).
			Msg("cannot verify the access token: homeserver unreachable; the outbox keeps events until it is back")
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

func (b *Bridge) checkWhoami(resp *mautrix.RespWhoami) error {
	if string(resp.UserID) != b.cfg.UserID {
		return fmt.Errorf("matrix: the access token is %s's on %s, not the service user %s", resp.UserID, b.cfg.HomeserverURL, b.cfg.UserID)
	}
	if b.cfg.DeviceID != "" && resp.DeviceID != "" && string(resp.DeviceID) != b.cfg.DeviceID {
		return fmt.Errorf("matrix: the access token is for device %s on %s, not %s", resp.DeviceID, b.cfg.HomeserverURL, b.cfg.DeviceID)
	}
	if b.cli.DeviceID != "" && resp.DeviceID != "" && resp.DeviceID != b.cli.DeviceID {
		return fmt.Errorf("matrix: the stored session's token is for device %s on %s, not %s", resp.DeviceID, b.cfg.HomeserverURL, b.cli.DeviceID)
	}
	if b.cli.DeviceID == "" {
		b.cli.DeviceID = resp.DeviceID
	}
	if b.cfg.Encryption != nil && b.cli.DeviceID == "" {
		return fmt.Errorf("matrix: %s did not say which device the access token is for; set matrix.device_id", b.cfg.HomeserverURL)
	}
	b.log.Info().Str("homeserver", b.cfg.HomeserverURL).Str("user_id", b.cfg.UserID).
		Str("device_id", string(resp.DeviceID)).Msg("matrix access token verified")
	return nil
}

// WaitInviteSent waits until the call's m.call.invite was sent (returning
// its event ID), or was dropped unsent, or ctx ends (ok false for both).
// An invite sent before the wait began is found in the store.
func (b *Bridge) WaitInviteSent(ctx context.Context, callID string) (eventID string, ok bool) {
	ch, done := b.waiters.add(callID)
	defer done()
	// After registering, so an invite sent in between is not missed.
	if c, err := b.cfg.Store.Call(ctx, callID); err == nil && c.MatrixInviteEventID != "" {
		return c.MatrixInviteEventID, true
	}
	select {
	case id := <-ch:
		return id, id != ""
	case <-ctx.Done():
		return "", false
	}
}

// MatrixSentPayload is the body of CallMatrixSent: the call's m.call.invite
// is in the room.
type MatrixSentPayload struct {
	Type           string `json:"type"` // CallMatrixSent
	CallID         string `json:"call_id"`
	ConversationID string `json:"conversation_id,omitempty"`
	RoomID         string `json:"room_id"`
	EventID        string `json:"event_id"`
	PartyID        string `json:"party_id"`
}

// inviteSent runs after an m.call.invite was sent and completed in the
// store: it releases WaitInviteSent and publishes CallMatrixSent to the
// call's caller, invitee and answerer (the call is loaded from the store;
// its conversation's other participants do not need the Matrix IDs).
func (b *Bridge) inviteSent(ctx context.Context, e signaling.OutboxEntry, partyID, eventID string) {
	b.waiters.release(e.CallID, eventID)
	if b.cfg.Publisher == nil {
		return
	}
	c, err := b.cfg.Store.Call(ctx, e.CallID)
	if err != nil {
		b.log.Warn().Err(err).Str("call_id", e.CallID).Msg("CallMatrixSent not published: loading the call")
		return
	}
	var recipients []string
	for _, u := range []string{c.Initiator, c.Invitee, c.Answerer} {
		if u != "" && !slices.Contains(recipients, u) {
			recipients = append(recipients, u)
		}
	}
	b.cfg.Publisher.Publish(signaling.Event{
		Type:           signaling.EventCallMatrixSent,
		CallID:         c.ID,
		ConversationID: c.ConversationID,
		Recipients:     recipients,
		Payload: MatrixSentPayload{
			Type: signaling.EventCallMatrixSent, CallID: c.ID, ConversationID: c.ConversationID,
			RoomID: e.RoomID, EventID: eventID, PartyID: partyID,
		},
	})
}
