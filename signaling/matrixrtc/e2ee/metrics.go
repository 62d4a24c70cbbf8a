package e2ee

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Results of a received key (icebox_e2ee_keys_received_total).
const (
	recvAccepted = "accepted" // into a member's key ring
	recvHeld     = "held"     // kept until the room's Session opens or the device joins it
	recvOutdated = "outdated" // older than the key already held at its index; dropped
	recvExpired  = "expired"  // held too long; dropped
	recvEvicted  = "evicted"  // held, then pushed out by newer ones (the bound); dropped
	recvIgnored  = "ignored"  // icebox's own device's, or for a closed Session
)

var recvResults = []string{recvAccepted, recvHeld, recvOutdated, recvExpired, recvEvicted, recvIgnored}

// Results of sending icebox's key (icebox_e2ee_keys_sent_total).
const (
	sentOK    = "ok"
	sentError = "error" // to at least one device it failed (the others got it)
)

// Why a key was rotated (icebox_e2ee_key_rotations_total).
const (
	rotateLeft   = "left"   // a member left
	rotateJoined = "joined" // a member joined after the grace period
)

// Why a frame failed (icebox_e2ee_frame_failures_total).
const (
	failNoKey       = "no_key"            // no key for the sender (a member without a key; icebox's own not made yet)
	failMissingKey  = "missing_key"       // the sender has keys, but none at the frame's index
	failKeyInvalid  = "key_invalid"       // the index failed too often and is held invalid until a new key comes
	failAuth        = "auth"              // the tag did not verify (wrong key, tampered frame)
	failMalformed   = "malformed"         // too short, bad trailer, unexpected server-injected frame
	failUnsupported = "unsupported_codec" // a codec icebox does not encrypt
	failClosed      = "closed"            // the Session was closed
)

var failReasons = []string{failNoKey, failMissingKey, failKeyInvalid, failAuth, failMalformed, failUnsupported, failClosed}

// Directions of a frame failure.
const (
	dirEncrypt = "encrypt"
	dirDecrypt = "decrypt"
)

type metrics struct {
	sent      *prometheus.CounterVec
	received  *prometheus.CounterVec
	rotations *prometheus.CounterVec
	failures  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_e2ee_keys_sent_total",
			Help: "Sends of icebox's own MatrixRTC media key to members' devices (each to one or more devices), by result: ok, error (to at least one device it failed; the others got it).",
		}, []string{"result"}),
		received: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_e2ee_keys_received_total",
			Help: "Members' MatrixRTC media keys the gateway received (already checked by the Matrix bridge), by result: accepted, held (until the room's session opens or the device joins it), outdated (older than the key at its index; dropped), expired (held too long; dropped), evicted (held, pushed out by newer ones; dropped), ignored (icebox's own device's, or for a closed session).",
		}, []string{"result"}),
		rotations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_e2ee_key_rotations_total",
			Help: "Rotations of icebox's own media key in a MatrixRTC call, by reason: left (a member left), joined (a member joined when the key was older than the grace period).",
		}, []string{"reason"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_e2ee_frame_failures_total",
			Help: "Media frames the gateway could not encrypt or decrypt (dropped, never forwarded in clear), by direction (encrypt, decrypt) and reason: no_key, missing_key (no key at the frame's index), key_invalid, auth (the tag did not verify), malformed, unsupported_codec, closed.",
		}, []string{"direction", "reason"}),
	}
	for _, r := range []string{sentOK, sentError} {
		m.sent.WithLabelValues(r)
	}
	for _, r := range recvResults {
		m.received.WithLabelValues(r)
	}
	for _, r := range []string{rotateLeft, rotateJoined} {
		m.rotations.WithLabelValues(r)
	}
	for _, d := range []string{dirEncrypt, dirDecrypt} {
		for _, r := range failReasons {
			m.failures.WithLabelValues(d, r)
		}
	}
	return m
}
