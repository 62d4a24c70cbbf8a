package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/postgres"
)

// cluster carries, between nodes on one PostgreSQL database, what a
// transition on one node must do on the others (issue 18, item 2): its
// WebSocket events reach the participants connected to any node, and the
// revocation of an ended call closes its allocations on every node. It is
// the calls service's Publisher and Relay: each event and revocation is
// applied here at once, and appended to the database's feed
// (store/postgres/feed.go) for the other nodes, which read it when NOTIFY
// wakes them and every pollInterval in any case, so a lost notification
// delays and never loses. As a safety net for a node that died between a
// transition's commit and its feed append, every node also applies the
// stored revocations every resyncInterval.
//
// Events of one node keep their order (one writer); events of one call
// made on two nodes are ordered by their transitions' commits, as each
// transition is one row lock (SELECT … FOR UPDATE), but a node slow to
// append can let a later transition's event on another node arrive first.
type cluster struct {
	st    *postgres.Store
	id    string // this node in the feed
	local signaling.Publisher
	relay signaling.Relay
	log   zerolog.Logger

	out  chan postgres.FeedItem
	wake chan struct{}

	lag     prometheus.Histogram
	applied *prometheus.CounterVec
	dropped prometheus.Counter
}

const (
	// pollInterval bounds how late another node's event or revocation
	// is when a notification was lost (the issue asks revocations to
	// take effect everywhere within 1 s).
	pollInterval = 500 * time.Millisecond
	// resyncInterval is how often the stored revocations are applied
	// again (the safety net above).
	resyncInterval = 30 * time.Second
	// feedRetention is how long feed rows are kept: long enough for a
	// node's database outage, not for a node that was down (it starts
	// from the head).
	feedRetention = 10 * time.Minute
	// feedQueue bounds the items waiting to be appended while the
	// database is slow or away; beyond it they are dropped (the
	// revocations come back with the resync).
	feedQueue = 4096
	feedBatch = 256
)

func newCluster(st *postgres.Store, local signaling.Publisher, relay signaling.Relay, reg prometheus.Registerer, log zerolog.Logger) *cluster {
	raw := make([]byte, 6)
	_, _ = rand.Read(raw) // crypto/rand does not fail on Linux
	f := promauto.With(reg)
	return &cluster{
		st: st, id: hex.EncodeToString(raw), local: local, relay: relay,
		log:  log.With().Str("component", "cluster").Logger(),
		out:  make(chan postgres.FeedItem, feedQueue),
		wake: make(chan struct{}, 1),
		lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "icebox_cluster_feed_lag_seconds",
			Help:    "Time from another node's feed append (an event or revocation) to its application on this node.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		applied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_cluster_feed_applied_total",
			Help: "Items of other nodes applied on this node, by kind (event: delivered to WebSocket sessions; revoke: a call revoked on the relay).",
		}, []string{"kind"}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_cluster_feed_dropped_total",
			Help: "Items this node could not queue for the other nodes (the queue was full while the database was away).",
		}),
	}
}

var (
	_ signaling.Publisher = (*cluster)(nil)
	_ signaling.Relay     = (*cluster)(nil)
)

// feedEvent is a signaling.Event as the feed carries it.
type feedEvent struct {
	Type           string          `json:"type"`
	CallID         string          `json:"call_id"`
	ConversationID string          `json:"conversation_id"`
	Recipients     []string        `json:"recipients"`
	Payload        json.RawMessage `json:"payload"`
}

type feedRevoke struct {
	Until time.Time `json:"until"`
}

// Publish delivers ev to this node's WebSocket sessions and queues it for
// the others. It does not block.
func (c *cluster) Publish(ev signaling.Event) {
	c.local.Publish(ev)
	payload, err := json.Marshal(ev.Payload)
	if err == nil {
		var body []byte
		body, err = json.Marshal(feedEvent{Type: ev.Type, CallID: ev.CallID, ConversationID: ev.ConversationID, Recipients: ev.Recipients, Payload: payload})
		if err == nil {
			c.enqueue(postgres.FeedItem{Kind: "event", CallID: ev.CallID, Body: body})
			return
		}
	}
	c.log.Error().Err(err).Str("event", ev.Type).Str("call_id", ev.CallID).Msg("encoding an event for the other nodes")
}

// RevokeCall revokes on this node's relay and queues the revocation for
// the others.
func (c *cluster) RevokeCall(callID string, until time.Time) int {
	n := c.relay.RevokeCall(callID, until)
	body, _ := json.Marshal(feedRevoke{Until: until}) // a time always encodes
	c.enqueue(postgres.FeedItem{Kind: "revoke", CallID: callID, Body: body})
	return n
}

func (c *cluster) enqueue(it postgres.FeedItem) {
	it.Node = c.id
	select {
	case c.out <- it:
	default:
		c.dropped.Inc()
		c.log.Warn().Str("kind", it.Kind).Str("call_id", it.CallID).Msg("feed queue full: the other nodes miss this (revocations come back with the resync)")
	}
}

// Run appends this node's items and applies the other nodes', until ctx
// is done.
func (c *cluster) Run(ctx context.Context) error {
	done := make(chan struct{}, 2)
	go func() { c.writeLoop(ctx); done <- struct{}{} }()
	go func() {
		_ = c.st.ListenFeed(ctx, func() {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		})
		done <- struct{}{}
	}()
	c.readLoop(ctx)
	<-done
	<-done
	return nil
}

// writeLoop appends queued items in batches, retrying while the database
// is away.
func (c *cluster) writeLoop(ctx context.Context) {
	var batch []postgres.FeedItem
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case it := <-c.out:
				batch = append(batch, it)
			}
		}
		for len(batch) < feedBatch {
			select {
			case it := <-c.out:
				batch = append(batch, it)
				continue
			default:
			}
			break
		}
		if err := c.st.AppendFeed(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.log.Warn().Err(err).Int("items", len(batch)).Msg("appending to the feed; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(pollInterval):
			}
			continue
		}
		batch = batch[:0]
	}
}

// readLoop applies the other nodes' items, woken by NOTIFY or the poll.
func (c *cluster) readLoop(ctx context.Context) {
	head := int64(-1)
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	var lastResync, lastPrune time.Time
	for {
		if head < 0 {
			if h, err := c.st.FeedHead(ctx); err == nil {
				head = h
			}
		}
		if head >= 0 {
			head = c.readFeed(ctx, head)
		}
		if now := time.Now(); now.Sub(lastResync) >= resyncInterval {
			if c.resync(ctx) {
				lastResync = now
			}
		}
		if now := time.Now(); now.Sub(lastPrune) >= feedRetention/10 {
			if _, err := c.st.PruneFeed(ctx, now.Add(-feedRetention)); err == nil {
				lastPrune = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-poll.C:
		}
	}
}

// readFeed applies what the other nodes appended after head and returns
// the new head.
func (c *cluster) readFeed(ctx context.Context, head int64) int64 {
	for range 64 { // bounded: the next poll reads on
		items, err := c.st.FeedAfter(ctx, head, feedBatch)
		if err != nil {
			return head
		}
		for _, it := range items {
			head = it.ID
			if it.Node != c.id {
				c.apply(it)
			}
		}
		if len(items) < feedBatch {
			return head
		}
	}
	return head
}

func (c *cluster) apply(it postgres.FeedItem) {
	// Clocks of nodes differ a little; a negative lag is counted as none.
	c.lag.Observe(max(time.Since(it.At), 0).Seconds())
	switch it.Kind {
	case "event":
		var ev feedEvent
		if err := json.Unmarshal(it.Body, &ev); err != nil {
			c.log.Error().Err(err).Int64("feed_id", it.ID).Msg("undecodable feed event")
			return
		}
		c.local.Publish(signaling.Event{Type: ev.Type, CallID: ev.CallID, ConversationID: ev.ConversationID, Recipients: ev.Recipients, Payload: ev.Payload})
		c.applied.WithLabelValues("event").Inc()
	case "revoke":
		var r feedRevoke
		if err := json.Unmarshal(it.Body, &r); err != nil {
			c.log.Error().Err(err).Int64("feed_id", it.ID).Msg("undecodable feed revocation")
			return
		}
		c.applied.WithLabelValues("revoke").Inc()
		if n := c.relay.RevokeCall(it.CallID, r.Until); n > 0 {
			c.log.Info().Str("call_id", it.CallID).Int("allocations", n).Msg("closed the relay allocations of a call ended on another node")
		}
	}
}

// resync applies every stored revocation still in force; false if the
// database did not answer.
func (c *cluster) resync(ctx context.Context) bool {
	revs, err := c.st.Revocations(ctx, time.Now())
	if err != nil {
		return false
	}
	for _, r := range revs {
		c.relay.RevokeCall(r.CallID, r.Until)
	}
	return true
}

// bridgeLease names the lease of the Matrix bridge on a shared database.
const bridgeLease = "matrix-bridge"

// leaseBridge makes sure that at most one node on a PostgreSQL database
// runs the Matrix bridge: two would each sync and send (every event twice,
// from two devices). The lease is a session advisory lock, released when
// this node closes or dies; a second node with Matrix on is refused at
// start (exit 2). Taking over from a node that died (issue 18, item 3)
// needs the Matrix device and its keys in the database too: not built.
func (n *Node) leaseBridge(ctx context.Context) error {
	pg, ok := n.state.(*postgres.Store)
	if !ok {
		return nil // bbolt: the state file's lock already allows one process
	}
	lease, ok, err := pg.TryLease(ctx, bridgeLease)
	if err != nil {
		return err
	}
	if !ok {
		return ConfigError{errors.New("matrix: another icebox node runs the Matrix bridge on this database (store.postgres): " +
			"only one node may have matrix.enabled (several nodes with Matrix on are not supported yet); turn it off on this node")}
	}
	n.onClose(lease.Release)
	promauto.With(n.opts.Registry).NewGauge(prometheus.GaugeOpts{
		Name: "icebox_matrix_bridge_lease",
		Help: "1: this node holds the database's Matrix bridge lease (store.driver: postgres with Matrix on).",
	}).Set(1)
	return nil
}
