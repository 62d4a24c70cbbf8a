package turnserver

import "errors"

// SetPolicy replaces the peer policy (a configuration reload): every
// permission, Connect and relayed datagram checked from then on, live
// allocations included, goes by p. Permissions already installed stay, but
// their packets are checked against p.
func (s *Server) SetPolicy(p *Policy) error {
	if p == nil {
		return errors.New("turnserver: SetPolicy: nil policy")
	}
	s.policy.Store(p.forServer(s.reg.liveRelayPort, s.hosts))
	s.kernelSyncAll() // the kernel's channels hold only peers the policy allows
	return nil
}

// SetQuotas replaces the allocation-count quotas; allocations over a
// lowered quota stay, new ones are refused until the count is below it.
func (s *Server) SetQuotas(q Quotas) {
	s.reg.mu.Lock()
	s.reg.quotas = q
	s.reg.mu.Unlock()
}

// SetRateLimits replaces the per-source limits of STUN error responses and
// Binding success responses on the UDP listeners (Config.ErrorRate,
// BindingRate); PerSecond 0 turns one off.
func (s *Server) SetRateLimits(errorRate, bindingRate ErrorRate) {
	if s.errLim != nil {
		s.errLim.set(errorRate)
	}
	if s.bindLim != nil {
		s.bindLim.set(bindingRate)
	}
}
