package e2ee

// Test hooks, visible to package e2ee_test only.

// SwitchKeyNow runs a Session's pending switch to its rotated key now
// instead of after the use delay; false if none is pending.
func SwitchKeyNow(s *Session) bool {
	s.mu.Lock()
	f := s.switchFn
	s.mu.Unlock()
	if f == nil {
		return false
	}
	f()
	return true
}

// Held is the number of keys a Registry holds for unopened Sessions.
func Held(r *Registry) int { return r.heldCount() }
