package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
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
	// RTCRooms receives the rooms' MatrixRTC call memberships
	// (org.matrix.msc3401.call.member state) and legacy invites, for
	// matrix.call_protocol auto (rtcmembers.go); the bridge also loads a
	// room's memberships from the homeserver when it is first asked.
	// Default: nil, memberships are not read.
	RTCRooms *membership.Rooms

	// RTCCalls receives the MatrixRTC events of the rooms icebox is in,
	// for the gateway (rtcring.go): other devices' memberships joining,
	// changing and leaving, notifications (ring) and declines from other
	// users. Needs the sync (Config.Calls or SetCalls). Default: nil, not
	// delivered.
	RTCCalls RTCObserver
	// RTCFocusAllowAddr, when set, says whether RTCFocusToken may connect
	// to an address of a focus's authorization service: a member's focus
	// URL comes from the room's state, which any member writes, and the
	// request carries an OpenID token of icebox's user. Checked after name
	// resolution, at each dial. Service URLs in RTCFocusTrusted (icebox's
	// own) are exempt. Default: nil, any address.
	RTCFocusAllowAddr func(netip.Addr) bool
	RTCFocusTrusted   []string
}

const defaultBatchWindow = 200 * time.Millisecond

// Bridge carries icebox calls into Matrix rooms and, with a calls service
// (Config.Calls), the calls of Matrix users into icebox. It implements
// signaling.InviteWaiter and signaling.RoomCreator; Encoder returns its
// signaling.Outbound.
//
// It is assembled from parts that each own their state, sharing one
// mautrix client (one session, one HTTP client): login (the service
// user's session and token check), crypto (end-to-end encryption), send
// (the outbox worker), rooms (room creation and memberships), in (the
// inbound handlers) and sync (the sync loop that feeds them).
type Bridge struct {
	cfg     Config
	log     zerolog.Logger
	cli     *mautrix.Client
	enc     *Encoder
	login   *login    // session.go
	crypto  *e2ee     // crypto.go; nil without Config.Encryption
	send    *sender   // sender.go
	rooms   *rooms    // rooms.go
	in      *inbound  // inbound.go
	sync    *syncLoop // sync.go
	waiters inviteWaiters
	running atomic.Bool

	callsMu sync.Mutex
	calls   InboundCalls // Config.Calls or SetCalls; each Run takes it once
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
	if cfg.RTCCalls != nil && cfg.RTCRooms == nil {
		// RTCCalls needs the members' last memberships (whose device left).
		cfg.RTCRooms = membership.NewRooms(0, 0, nil)
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
	b := &Bridge{cfg: cfg, log: log, cli: cli, calls: cfg.Calls}
	wake := make(chan struct{}, 1)
	b.enc = &Encoder{now: cfg.Now, wake: wake}
	outMetrics := newMetrics(cfg.Registerer, cfg.Store)
	b.in = newInbound(cfg, log)
	b.rooms = newRooms(cfg, cli, log)
	// The sync loop before the inbound metrics: their lag gauge reads it.
	b.sync = newSyncLoop(cfg, cli, log, b.in, b.rooms)
	inMetrics := newInboundMetrics(cfg.Registerer, b.sync.lag)
	inMetrics.observeCall = outMetrics.observeCall
	b.in.metrics, b.sync.metrics, b.rooms.autojoin = inMetrics, inMetrics, inMetrics.autojoin
	b.crypto = newE2EE(cfg, cli, log, inMetrics.undecryptable)
	b.sync.crypto = b.crypto
	b.send = newSender(senderConfig{
		store:        cfg.Store,
		client:       cli,
		log:          log,
		metrics:      outMetrics,
		now:          cfg.Now,
		wake:         wake,
		batchWindow:  cfg.BatchWindow,
		onInviteSent: b.inviteSent,
		// An initiate waiting for the invite's event ID stops waiting.
		onInviteDropped: func(callID string) { b.waiters.release(callID, "") },
	})
	if b.crypto != nil {
		b.send.checkRoom = b.crypto.checkRoom
	}
	// Logging in and the token check retry with the sender's backoff.
	b.login = newLogin(cfg, cli, log, func(n int) time.Duration { return backoff(n, b.send.minBackoff, b.send.maxBackoff) })
	cli.Store = b.sync.store
	if cfg.RTCRooms != nil {
		cfg.RTCRooms.SetLoader(b.loadRTCMembers)
		b.sync.rtcSeen = newRTCMetrics(cfg.Registerer)
	}
	if cfg.RTCCalls != nil {
		b.sync.rtcEvents = newRTCEventMetrics(cfg.Registerer)
	}
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

	// Once per Run: the handlers read it without a lock.
	b.callsMu.Lock()
	calls := b.calls
	b.callsMu.Unlock()
	syncing := calls != nil
	// Late decryptions (a room key that arrives after its event) outlive
	// the batch but not Run.
	defer b.crypto.close() // after stop: the late decryptions end first
	life, stop := context.WithCancel(quiet(context.WithoutCancel(ctx)))
	defer stop()
	s := b.sync.newSyncer(life, calls)
	b.cli.Syncer = s

	// With encryption nothing may be sent before the crypto helper is up:
	// mautrix would send in plaintext.
	ready := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := b.start(gctx, life, s); err != nil || gctx.Err() != nil {
			return err
		}
		close(ready)
		if !syncing {
			return nil
		}
		return b.sync.run(gctx)
	})
	g.Go(func() error {
		if b.crypto != nil {
			select {
			case <-ready:
			case <-gctx.Done():
				return nil
			}
		}
		b.send.run(gctx)
		return nil
	})
	g.Go(func() error {
		select {
		case <-ready:
		case <-gctx.Done():
			return nil
		}
		b.leaveStaleRTC(gctx)
		return nil
	})
	if syncing {
		g.Go(func() error { b.in.pruneSeen(gctx); return nil })
	}
	return g.Wait()
}

// start logs in and verifies the token (login), then brings end-to-end
// encryption up, retrying while the homeserver cannot be reached. It
// returns an error for what retrying cannot fix.
func (b *Bridge) start(ctx, life context.Context, s *syncer) error {
	if err := b.login.start(ctx); err != nil || ctx.Err() != nil || b.crypto == nil {
		return err
	}
	err := b.login.retry(ctx, "setting up end-to-end encryption", func(ctx context.Context) error { return b.crypto.init(ctx, life) })
	if err != nil || ctx.Err() != nil {
		return err
	}
	// After cryptohelper's own sync handler, which imports the room keys
	// of the same response's to-device events.
	s.OnSync(s.prepareBatch)
	return nil
}
