package config

import "time"

// Bounds of turn.quotas.bandwidth_burst: shorter drops the packets of a
// single video frame, longer is no limit over a call's first seconds.
const (
	minBandwidthBurst = 10 * time.Millisecond
	maxBandwidthBurst = 10 * time.Second
)

// bandwidth checks the bandwidth limits of turn.quotas.
func (v *validator) bandwidth(q *Quotas) {
	for _, l := range []struct {
		path string
		bps  int64
	}{
		{"turn.quotas.max_bps_per_allocation", q.MaxBPSPerAllocation},
		{"turn.quotas.max_bps_per_user", q.MaxBPSPerUser},
		{"turn.quotas.max_bps_total", q.MaxBPSTotal},
	} {
		if l.bps < 0 {
			v.add(l.path, "must be >= 0 bits per second, 0 for unlimited (got %d)", l.bps)
		} else if l.bps > 0 && l.bps < 8 {
			v.add(l.path, "must be at least 8 bits per second, or 0 for unlimited (got %d)", l.bps)
		}
	}
	if b := q.BandwidthBurst; b < minBandwidthBurst || b > maxBandwidthBurst {
		v.add("turn.quotas.bandwidth_burst", "must be between %s and %s (got %s)", minBandwidthBurst, maxBandwidthBurst, b)
	}
}
