package turnserver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Auth outcomes, used as the "outcome" label of icebox_turn_auth_total.
const (
	authOK         = "ok"
	authMalformed  = "malformed"
	authUnknownKID = "unknown_kid"
	authBadHMAC    = "bad_hmac"
	authExpired    = "expired"
	authRevoked    = "revoked"
)

// Where a peer was refused, the "stage" label of icebox_turn_peer_denied_total.
const (
	stagePermission = "permission"
	stageSend       = "send"
	stageReceive    = "receive" // a datagram from a refused peer: dropped
	stageConnect    = "connect"
)

// Where a scoped (SFU) allocation was refused a peer, the "stage" label of
// icebox_turn_scoped_refusals_total.
const (
	scopeStagePermission  = "permission"   // CreatePermission or ChannelBind to an unlisted IP: 403
	scopeStageChannelBind = "channel_bind" // ChannelBind to a listed IP on an unlisted port: 403
	scopeStageSend        = "send"         // a datagram to an unlisted peer: dropped
	scopeStageReceive     = "receive"      // a datagram from an unlisted peer: dropped
	scopeStageTCP         = "tcp_allocate" // a TCP relay (RFC 6062): refused
)

type metrics struct {
	scopeRefused     *prometheus.CounterVec
	allocationsTotal *prometheus.CounterVec
	auth             *prometheus.CounterVec
	peerDenied       *prometheus.CounterVec
	quotaRejected    *prometheus.CounterVec
	revokedClosed    prometheus.Counter
	killed           prometheus.Counter
	bandwidthDropped *prometheus.CounterVec
	errorsDropped    prometheus.Counter
	bindingsDropped  prometheus.Counter
	tcpRefused       *prometheus.CounterVec
	tcpAcceptErrors  prometheus.Counter
	udpDropped       *prometheus.CounterVec
	queueFull        prometheus.Counter // udpDropped{reason="queue_full"}
	sendFailed       prometheus.Counter // udpDropped{reason="send_failed"}
	noPermission     prometheus.Counter // udpDropped{reason="no_permission"}
}

// Why the relay dropped a UDP datagram, the "reason" label of
// icebox_turn_udp_dropped_total.
const (
	dropQueueFull  = "queue_full"
	dropSendFailed = "send_failed"
	// A datagram to or from a peer the allocation holds no permission for
	// (a channel whose permission expired, or a stranger writing to the
	// relay port).
	dropNoPermission = "no_permission"
)

func newMetrics(reg prometheus.Registerer, allocs *registry, tcpConns func() float64) *metrics {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_turn_allocations_active",
		Help: "TURN allocations currently open.",
	}, func() float64 { return float64(allocs.count()) })
	reg.MustRegister(relayedCollector{allocs})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_turn_tcp_connections_active",
		Help: "TURN client connections currently open over TCP and TLS.",
	}, tcpConns)
	m := &metrics{
		allocationsTotal: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_allocations_total",
			Help: "TURN allocations created, by transport of the client connection (udp, tcp — TLS counts as tcp).",
		}, []string{"transport"}),
		auth: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_auth_total",
			Help: "TURN authentication results by outcome (ok, malformed, unknown_kid, bad_hmac, expired, revoked).",
		}, []string{"outcome"}),
		scopeRefused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_scoped_refusals_total",
			Help: "Peers refused to scoped (LiveKit SFU credential) allocations, by stage: permission and channel_bind (403), send and receive (datagram dropped), tcp_allocate (TCP relay refused).",
		}, []string{"stage"}),
		peerDenied: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_peer_denied_total",
			Help: "Peers refused by the peer policy, by stage (permission, send, receive, connect).",
		}, []string{"stage"}),
		quotaRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_quota_rejections_total",
			Help: "Allocations refused by a quota (user, call, total).",
		}, []string{"quota"}),
		errorsDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_turn_error_responses_dropped_total",
			Help: "STUN error responses (401, 400, …) not sent because their source exceeded turn.error_rate (reflection guard).",
		}),
		bindingsDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_turn_binding_responses_dropped_total",
			Help: "STUN Binding success responses not sent because their source exceeded turn.binding_rate (reflection guard).",
		}),
		revokedClosed: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_turn_revoked_allocations_closed_total",
			Help: "Live allocations closed because their call was revoked.",
		}),
		killed: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_turn_allocations_killed_total",
			Help: "Live allocations closed through the admin API (DELETE /admin/allocations).",
		}),
		bandwidthDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_bandwidth_dropped_total",
			Help: "Relayed UDP datagrams dropped by a bandwidth limit, by limit (allocation, user, total) and direction (to_peer, from_peer).",
		}, []string{"limit", "direction"}),
		tcpRefused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_tcp_connections_refused_total",
			Help: "TURN TCP/TLS client connections closed at accept, by the limit they hit (per_source, total).",
		}, []string{"reason"}),
		tcpAcceptErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "icebox_turn_tcp_accept_errors_total",
			Help: "Failed accepts on TURN TCP/TLS listeners (e.g. out of file descriptors); each is retried after a backoff.",
		}),
		udpDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_turn_udp_dropped_total",
			Help: "UDP datagrams the relay dropped, by reason: queue_full (pion's queue of STUN and slow-path datagrams was full), send_failed (the kernel refused a relayed datagram, e.g. a full send buffer), no_permission (to or from a peer without a live permission).",
		}, []string{"reason"}),
	}
	// Make every label value visible from the start, so dashboards and
	// alerts see zeros rather than missing series.
	for _, o := range []string{authOK, authMalformed, authUnknownKID, authBadHMAC, authExpired, authRevoked} {
		m.auth.WithLabelValues(o)
	}
	for _, s := range []string{stagePermission, stageSend, stageReceive, stageConnect} {
		m.peerDenied.WithLabelValues(s)
	}
	for _, q := range []string{quotaUser, quotaCall, quotaTotal} {
		m.quotaRejected.WithLabelValues(q)
	}
	for _, r := range []string{refusedPerSource, refusedTotal} {
		m.tcpRefused.WithLabelValues(r)
	}
	m.queueFull = m.udpDropped.WithLabelValues(dropQueueFull)
	for _, st := range []string{scopeStagePermission, scopeStageChannelBind, scopeStageSend, scopeStageReceive, scopeStageTCP} {
		m.scopeRefused.WithLabelValues(st)
	}
	m.sendFailed = m.udpDropped.WithLabelValues(dropSendFailed)
	m.noPermission = m.udpDropped.WithLabelValues(dropNoPermission)
	return m
}

// relayedCollector exports the relayed traffic. The relay counts each
// packet in its allocation's own counters only (no counter shared by all
// allocations is touched per packet: on several cores those shared cache
// lines cost more than the counting); a scrape sums the live allocations
// and the ones already closed.
type relayedCollector struct{ reg *registry }

var (
	relayedBytesDesc = prometheus.NewDesc("icebox_turn_relayed_bytes_total",
		"Payload bytes relayed, by direction (to_peer, from_peer).", []string{"direction"}, nil)
	relayedPacketsDesc = prometheus.NewDesc("icebox_turn_relayed_packets_total",
		"Packets relayed, by direction (to_peer, from_peer).", []string{"direction"}, nil)
	scopedBytesDesc = prometheus.NewDesc("icebox_turn_scoped_relayed_bytes_total",
		"Payload bytes relayed by scoped (LiveKit SFU credential) allocations, by direction (to_peer, from_peer); part of icebox_turn_relayed_bytes_total.",
		[]string{"direction"}, nil)
)

func (c relayedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- relayedBytesDesc
	ch <- relayedPacketsDesc
	ch <- scopedBytesDesc
}

func (c relayedCollector) Collect(ch chan<- prometheus.Metric) {
	t, scoped := c.reg.relayed()
	ch <- prometheus.MustNewConstMetric(scopedBytesDesc, prometheus.CounterValue, float64(scoped.bytesToPeer), "to_peer")
	ch <- prometheus.MustNewConstMetric(scopedBytesDesc, prometheus.CounterValue, float64(scoped.bytesFromPeer), "from_peer")
	ch <- prometheus.MustNewConstMetric(relayedBytesDesc, prometheus.CounterValue, float64(t.bytesToPeer), "to_peer")
	ch <- prometheus.MustNewConstMetric(relayedBytesDesc, prometheus.CounterValue, float64(t.bytesFromPeer), "from_peer")
	ch <- prometheus.MustNewConstMetric(relayedPacketsDesc, prometheus.CounterValue, float64(t.packetsToPeer), "to_peer")
	ch <- prometheus.MustNewConstMetric(relayedPacketsDesc, prometheus.CounterValue, float64(t.packetsFromPeer), "from_peer")
}
