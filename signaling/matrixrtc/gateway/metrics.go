package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Directions of forwarded media (the direction label).
const (
	dirUp   = "up"   // client → room
	dirDown = "down" // room → client
)

// Why a frame was not forwarded (the reason label).
const (
	reasonTransform   = "transform"   // the transformer refused it (a decryption failure, down)
	reasonUnencrypted = "unencrypted" // held back: the room is end-to-end encrypted and the transformer does not encrypt
	reasonWrite       = "write"       // the track refused it
	reasonIncomplete  = "incomplete"  // a packet of it was lost, or came too late (assemble.go)
)

// Metrics are the gateway's, shared by every leg: make them once per
// registry (NewMetrics) and hand them to each Config. The labels are
// fixed here, never taken from a peer.
type Metrics struct {
	legs    prometheus.Gauge
	frames  *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	dropped *prometheus.CounterVec
	ended   *prometheus.CounterVec
}

// NewMetrics registers the gateway's metrics with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		legs: f.NewGauge(prometheus.GaugeOpts{
			Name: "icebox_gateway_legs_active",
			Help: "Client legs the gateway runs into LiveKit rooms (answered, not yet ended).",
		}),
		frames: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_gateway_frames_total",
			Help: "Media frames the gateway forwarded, by direction: up (client to room), down (room to client).",
		}, []string{"direction"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_gateway_frame_bytes_total",
			Help: "Bytes of the media frames the gateway forwarded (after the frame transformer), by direction.",
		}, []string{"direction"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_gateway_frames_dropped_total",
			Help: "Media frames not forwarded, by direction and reason: transform (the frame transformer refused it: a decryption or encryption failure), unencrypted (held back: the room is end-to-end encrypted and the transformer does not encrypt), write, incomplete (a packet of it lost or too late).",
		}, []string{"direction", "reason"}),
		ended: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_gateway_legs_ended_total",
			Help: "Client legs ended, by reason: closed, unencrypted (refused: end-to-end encrypted room without encryption), failed (LiveKit or the client connection).",
		}, []string{"reason"}),
	}
	for _, d := range []string{dirUp, dirDown} {
		m.frames.WithLabelValues(d)
		m.bytes.WithLabelValues(d)
		for _, r := range []string{reasonTransform, reasonUnencrypted, reasonWrite, reasonIncomplete} {
			m.dropped.WithLabelValues(d, r)
		}
	}
	for _, r := range []string{"closed", "unencrypted", "failed"} {
		m.ended.WithLabelValues(r)
	}
	return m
}
