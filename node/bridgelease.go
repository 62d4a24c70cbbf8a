package node

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store/postgres"
)

// One Matrix bridge at a time on a shared database (issue 18, item 3).
// Every node with matrix.enabled builds the bridge: its encoder writes the
// outbox entries of the transitions that node commits, whichever node
// sends them. Only the node holding the bridge's lease (a session advisory
// lock, store/postgres/lease.go) runs it — the sync and the outbox sender.
// The device is the same on every node (its session, keys and room state
// are in the database: pgDevice), and so are the outbox's transaction IDs
// (they carry the database's instance ID), so a node taking over resumes
// from the stored next_batch and outbox, and an event its predecessor sent
// without completing it is sent again with the same transaction ID, which
// the homeserver answers with the event it already has.
//
// The takeover time (store.postgres.matrix_takeover, T): the other nodes
// try the lease every T/5; a holder killed on a host that stays up loses
// it at once (the kernel closes its socket), a host that vanishes within
// about T*4/5 (the server's keepalives, TryLease). The holder checks its
// lease every T/5 and stops the bridge as soon as the check fails, before
// the server lets another node have it.

// bridgeLease names the lease of the Matrix bridge on a shared database.
const bridgeLease = "matrix-bridge"

// bridgeLeader runs the bridge while this node holds the lease.
type bridgeLeader struct {
	st       *postgres.Store
	bridge   *matrix.Bridge
	takeover time.Duration
	log      zerolog.Logger

	holding atomic.Bool // read by leaderInvites and leaderRooms on the request path
	held    prometheus.Gauge
	changes prometheus.Counter
}

func newBridgeLeader(st *postgres.Store, bridge *matrix.Bridge, takeover time.Duration, reg prometheus.Registerer, log zerolog.Logger) *bridgeLeader {
	f := promauto.With(reg)
	return &bridgeLeader{
		st: st, bridge: bridge, takeover: takeover,
		log: log.With().Str("component", "matrix").Logger(),
		held: f.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_matrix_bridge_lease",
			Help: "1 while this node holds the database's Matrix bridge lease and runs the bridge (store.driver: postgres with Matrix on).",
		}),
		changes: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_matrix_bridge_leader_changes_total",
			Help: "Times this node took the Matrix bridge lease (at start, or over from a node that stopped or died).",
		}),
	}
}

// Run tries the lease until ctx is done, and runs the bridge while it
// holds it. A bridge error that retrying cannot fix (the homeserver
// refuses the token) is returned, as on a single node.
func (l *bridgeLeader) Run(ctx context.Context) error {
	tick := max(l.takeover/5, 100*time.Millisecond)
	for {
		lease, ok, err := l.st.TryLease(ctx, bridgeLease, l.takeover)
		if ok {
			err = l.lead(ctx, lease, tick)
			if err != nil {
				return err
			}
		} else if err != nil && ctx.Err() == nil {
			l.log.Debug().Err(err).Msg("trying the Matrix bridge lease")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(tick):
		}
	}
}

// lead runs the bridge until ctx is done or the lease is lost.
func (l *bridgeLeader) lead(ctx context.Context, lease *postgres.Lease, tick time.Duration) error {
	l.changes.Inc()
	l.held.Set(1)
	l.holding.Store(true)
	l.log.Info().Msg("this node holds the Matrix bridge lease: running the bridge")
	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.bridge.Run(bctx) }()
	check := time.NewTicker(tick)
	defer check.Stop()
	var err error
loop:
	for {
		select {
		case err = <-done:
			if err != nil && ctx.Err() == nil {
				// The bridge gives up on what retrying cannot fix; the
				// database going away in the middle of its start is not
				// that: then the lease is gone too, and is tried again.
				cctx, cancel := context.WithTimeout(ctx, tick)
				cerr := lease.Check(cctx)
				cancel()
				switch {
				case cerr != nil:
					l.log.Warn().Err(err).Msg("the Matrix bridge stopped while the database is away; trying the lease again")
					err = nil
				case errors.Is(err, signaling.ErrStoreUnavailable):
					// The lease's session survived but the bridge's
					// own connections did not (the server ended them):
					// give the lease up and try again, like any node.
					l.log.Warn().Err(err).Msg("the Matrix bridge stopped: the database is unavailable; trying the lease again")
					err = nil
				}
			}
			break loop
		case <-check.C:
			cctx, cancel := context.WithTimeout(ctx, tick)
			cerr := lease.Check(cctx)
			cancel()
			if cerr != nil && ctx.Err() == nil {
				l.log.Warn().Err(cerr).Msg("lost the Matrix bridge lease (the database is away): stopping the bridge; another node may take it")
				stop()
				<-done // whatever it says, a lost lease is tried again
				break loop
			}
		}
	}
	stop()
	l.holding.Store(false)
	l.held.Set(0)
	if rerr := lease.Release(); rerr != nil && ctx.Err() == nil {
		l.log.Debug().Err(rerr).Msg("releasing the Matrix bridge lease")
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// leaderInvites is the calls service's InviteWaiter on a shared database:
// only the node running the bridge sends invites and hears that they went
// out; on the others an initiate does not wait for the invite.
type leaderInvites struct {
	leader *bridgeLeader
	bridge signaling.InviteWaiter
}

func (w leaderInvites) WaitInviteSent(ctx context.Context, callID string) (string, bool) {
	if !w.leader.holding.Load() {
		return "", false
	}
	return w.bridge.WaitInviteSent(ctx, callID)
}

// leaderRooms is the calls service's RoomCreator on a shared database: a
// node that does not run the bridge creates a conversation's room as the
// bridge's device too, with the session the running bridge stored.
type leaderRooms struct {
	leader *bridgeLeader
	bridge *matrix.Bridge
}

func (r leaderRooms) EnsureRoom(ctx context.Context, conv signaling.Conversation) (string, error) {
	if conv.RoomID == "" && !r.leader.holding.Load() {
		if err := r.bridge.UseStoredSession(ctx); err != nil {
			return "", err
		}
	}
	return r.bridge.EnsureRoom(ctx, conv)
}

// pgDevice is the bridge's Matrix device in the shared database: its files
// in icebox_matrix_device, mautrix's crypto and room-state stores in their
// own tables, through pgx's database/sql driver (pure Go).
type pgDevice struct{ *postgres.Store }

var _ matrix.DeviceStore = pgDevice{}

func (d pgDevice) OpenCryptoDB() (*dbutil.Database, error) {
	db := d.OpenSQL()
	dbu, err := dbutil.NewWithDB(db, "pgx")
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return dbu, nil
}

// Unavailable tells the bridge which errors of the crypto store are the
// database being away (it retries its start on those).
func (d pgDevice) Unavailable(err error) bool { return postgres.Unavailable(err) }

// bridgeEncryption is the bridge's encryption: its device in state_dir,
// or in the database when several nodes share it.
func bridgeEncryption(dir string, require bool, st matrix.Store) *matrix.Encryption {
	enc := &matrix.Encryption{Dir: dir, Require: require}
	if pg, ok := st.(*postgres.Store); ok {
		enc.Device = pgDevice{pg}
	}
	return enc
}

// runBridge runs the Matrix bridge: under the lease on a shared database,
// at once otherwise.
func (n *Node) runBridge(ctx context.Context) error {
	if n.bridgeLeader != nil {
		return n.bridgeLeader.Run(ctx)
	}
	return n.bridge.Run(ctx)
}

// MatrixDir is where a node on bbolt keeps its Matrix device (session,
// crypto store, pickle and recovery keys): `icebox store migrate` copies
// it into the database.
func MatrixDir(stateDir string) string { return matrixDir(stateDir) }
