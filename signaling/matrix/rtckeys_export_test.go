package matrix

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// RTCKeysCounter returns the child of icebox_matrix_rtc_keys_received_total
// (sent false) or icebox_matrix_rtc_keys_sent_total (sent true) for result.
func RTCKeysCounter(b *Bridge, sent bool, result string) prometheus.Collector {
	if sent {
		return b.keys.sent.WithLabelValues(result)
	}
	return b.keys.received.WithLabelValues(result)
}

// OwnDevice is the bridge's device, once Run logged in.
func OwnDevice(b *Bridge) membership.Device { return b.rtcDevice() }
