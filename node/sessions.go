package node

import (
	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/turnserver"
)

// relayBandwidth is the relay's bandwidth limits from turn.quotas.
func relayBandwidth(q config.Quotas) turnserver.Bandwidth {
	return turnserver.Bandwidth{
		PerAllocation: q.MaxBPSPerAllocation,
		PerUser:       q.MaxBPSPerUser,
		Total:         q.MaxBPSTotal,
		Burst:         q.BandwidthBurst,
	}
}

// sessionsAdmin serves the admin API's allocations and bandwidth routes
// from the relay (httpapi.Sessions). The relay is read at each call: it
// is built before the API and lives as long as the node.
type sessionsAdmin struct{ n *Node }

func (s sessionsAdmin) ListAllocations(user, callID string) any {
	return s.n.relay.ListAllocations(turnserver.Filter{User: user, CallID: callID})
}

func (s sessionsAdmin) KillAllocation(id string) bool { return s.n.relay.KillAllocation(id) }

func (s sessionsAdmin) KillAllocations(user, callID string) int {
	return s.n.relay.KillAllocations(turnserver.Filter{User: user, CallID: callID})
}

func (s sessionsAdmin) UserBandwidth(user string) any { return s.n.relay.UserBandwidth(user) }

func (s sessionsAdmin) SetUserBandwidth(user string, bps int64) error {
	return s.n.relay.SetUserBandwidth(user, bps)
}

func (s sessionsAdmin) ClearUserBandwidth(user string) { s.n.relay.ClearUserBandwidth(user) }
