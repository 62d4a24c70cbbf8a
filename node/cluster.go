package node

import (
	"context"
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
// revocation of an ended call closes its allocations on every node.
//
// A transition writes its events and its revocation to the database's feed
// (store/postgres/feed.go) in the transaction that commits it, so the
// feed's order is the commit order and a node dying after its commit loses
// nothing. Every node, this one included, delivers the WebSocket events
// from the feed, in feed order: a call's events then reach every client in
// the order its transitions committed, wherever they were made. Readers
// are woken by NOTIFY and poll every pollInterval in any case, so a lost
// notification delays and never loses. As a safety net, every node also
// applies the stored revocations every resyncInterval.
//
// The cluster is the calls service's Publisher for the events no
// transition carries (a Matrix user's candidates, CallMatrixSent): it
// appends them to the feed at once, so they take their place in the same
// order.
type cluster struct {
	st    *postgres.Store
	local signaling.Publisher
	relay signaling.Relay
	log   zerolog.Logger
	head  postgres.FeedCursor // the feed's head when the node was built

	wake chan struct{}
	// wakeOutbox wakes the Matrix bridge's sender when another node's
	// transition is read (it may have written outbox entries); nil
	// without Matrix.
	wakeOutbox func()

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
	feedBatch     = 256
	// publishTimeout bounds the append of an event no transition
	// carries: the caller (the Matrix sync loop, the sender) waits for
	// it so that the event keeps its place in the feed's order.
	publishTimeout = 2 * time.Second
)

// newCluster reads the feed's head now, before the API serves: every
// transition committed after it is this node's to deliver.
func newCluster(ctx context.Context, st *postgres.Store, local signaling.Publisher, relay signaling.Relay, reg prometheus.Registerer, log zerolog.Logger) (*cluster, error) {
	head, err := st.FeedHead(ctx)
	if err != nil {
		return nil, err
	}
	f := promauto.With(reg)
	return &cluster{
		st: st, local: local, relay: relay, head: head,
		log:  log.With().Str("component", "cluster").Logger(),
		wake: make(chan struct{}, 1),
		lag: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "icebox_cluster_feed_lag_seconds",
			Help:    "Time from a feed append (a transition's commit: an event or revocation) to its application on this node.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		applied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_cluster_feed_applied_total",
			Help: "Items of other nodes applied on this node, by kind (event: delivered to WebSocket sessions; revoke: a call revoked on the relay).",
		}, []string{"kind"}),
		dropped: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_cluster_feed_dropped_total",
			Help: "Events no transition carried that could not be appended to the feed (the database was away): delivered on this node only.",
		}),
	}, nil
}

var _ signaling.Publisher = (*cluster)(nil)

// Publish appends an event no transition carried to the feed (the readers
// of every node deliver it, this one's included). While the database is
// away the event is delivered to this node's sessions only.
func (c *cluster) Publish(ev signaling.Event) {
	body, err := postgres.EncodeFeedEvent(ev)
	if err != nil {
		c.log.Error().Err(err).Str("event", ev.Type).Str("call_id", ev.CallID).Msg("encoding an event for the feed")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := c.st.AppendFeed(ctx, []postgres.FeedItem{{Kind: postgres.FeedEvent, CallID: ev.CallID, Body: body}}); err != nil {
		c.dropped.Inc()
		c.log.Warn().Err(err).Str("event", ev.Type).Str("call_id", ev.CallID).Msg("appending an event to the feed: delivered on this node only")
		c.local.Publish(ev)
		return
	}
	c.poke()
}

func (c *cluster) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run applies the feed's items, until ctx is done.
func (c *cluster) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.st.ListenFeed(ctx, c.poke)
	}()
	c.readLoop(ctx)
	<-done
	return nil
}

// readLoop applies the feed's items, woken by NOTIFY or the poll.
func (c *cluster) readLoop(ctx context.Context) {
	head := c.head
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	var lastResync, lastPrune time.Time
	for {
		head = c.readFeed(ctx, head)
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

// readFeed applies what was appended after head and returns the new head.
func (c *cluster) readFeed(ctx context.Context, head postgres.FeedCursor) postgres.FeedCursor {
	for range 64 { // bounded: the next poll reads on
		items, next, err := c.st.FeedAfter(ctx, head, feedBatch)
		if err != nil {
			return head
		}
		head = next
		for _, it := range items {
			c.apply(it)
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
	own := it.Node == c.st.NodeID()
	switch it.Kind {
	case postgres.FeedEvent:
		ev, err := postgres.DecodeFeedEvent(it.Body)
		if err != nil {
			c.log.Error().Err(err).Int64("feed_id", it.ID).Msg("undecodable feed event")
			return
		}
		c.local.Publish(ev)
		if !own {
			c.applied.WithLabelValues("event").Inc()
			if c.wakeOutbox != nil {
				c.wakeOutbox()
			}
		}
	case postgres.FeedRevoke:
		if own {
			return // the service revoked on this node's relay after the commit
		}
		until, err := postgres.DecodeFeedRevocation(it.Body)
		if err != nil {
			c.log.Error().Err(err).Int64("feed_id", it.ID).Msg("undecodable feed revocation")
			return
		}
		c.applied.WithLabelValues("revoke").Inc()
		if n := c.relay.RevokeCall(it.CallID, until); n > 0 {
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
