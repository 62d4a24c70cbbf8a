package turnserver

import (
	"errors"
	"net"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

// authenticate is pion's AuthHandler. It returns the username itself as the
// user ID (so Refresh finds the allocation Allocate made) and the long-term
// key derived from the expected password; pion checks MESSAGE-INTEGRITY with
// it, and reports the verdict to onAuth.
//
// An expired credential is refused for Allocate only: an allocation made
// while its credential was valid may keep refreshing, creating permissions
// and binding channels — its lifetime is capped by max_allocation_duration
// instead (the relay socket is closed then). A revoked call is refused for
// every method.
func (s *Server) authenticate(ra *turn.RequestAttributes) (string, []byte, bool) {
	kr := s.keyring()
	sfuKID := ""
	if kr.SFUSecrets() > 1 {
		if k, ok := keyOf(-1, ra.SrcAddr); ok {
			sfuKID = s.kids.get(kidKey{c: k, username: ra.Username})
		}
	}
	claims, password, err := kr.LookupSFU(ra.Username, sfuKID)
	if err != nil {
		reason := authMalformed
		if errors.Is(err, credentials.ErrUnknownKID) {
			reason = authUnknownKID
		}
		s.refuse(ra, reason)
		return "", nil, false
	}
	if claims.CallID != "" && s.isRevoked(claims.CallID) {
		s.refuse(ra, authRevoked)
		return "", nil, false
	}
	if kr.Expired(claims) {
		graceOver := !s.now().Before(claims.Expires.Add(s.cfg.MaxAllocationDuration))
		if ra.Method == stun.MethodAllocate || graceOver {
			s.refuse(ra, authExpired)
			return "", nil, false
		}
	}
	key := turn.GenerateAuthKey(ra.Username, s.cfg.Realm, password)
	if ra.Method == stun.MethodChannelBind {
		// To sign a 403 should the peer policy refuse it (guard.go).
		s.bindKeys.remember(ra.SrcAddr, key)
	}
	return ra.Username, key, true
}

// refuse counts an authentication failure and logs it, rate-limited. The
// username is logged (it names a user and a call, not a secret); the password
// never reaches this code.
func (s *Server) refuse(ra *turn.RequestAttributes, reason string) {
	s.m.auth.WithLabelValues(reason).Inc()
	s.authLog.Info().Str("reason", reason).Str("method", ra.Method.String()).
		Stringer("src", ra.SrcAddr).Str("username", ra.Username).Msg("turn auth refused")
}

// onAuth receives pion's verdict after the MESSAGE-INTEGRITY check.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, ok bool) {
	if ok {
		s.m.auth.WithLabelValues(authOK).Inc()
		return
	}
	s.m.auth.WithLabelValues(authBadHMAC).Inc()
	s.authLog.Info().Str("reason", authBadHMAC).Str("method", method).
		Stringer("src", src).Str("username", username).Msg("turn auth refused")
}

// allowQuota is pion's QuotaHandler: false makes pion answer 486 (Allocation
// Quota Reached). The relay allocator checks again when it reserves the slot,
// which closes the race between two concurrent Allocates.
func (s *Server) allowQuota(username, _ string, _ net.Addr) bool {
	claims, err := credentials.ParseUsername(username)
	if err != nil {
		return false
	}
	if q := s.reg.exceeded(claims.User, claims.CallID); q != "" {
		s.m.quotaRejected.WithLabelValues(q).Inc()
		return false
	}
	return true
}

// allowPeer is pion's PermissionHandler, for CreatePermission and ChannelBind.
func (s *Server) allowPeer(_ net.Addr, peerIP net.IP) bool {
	ip, ok := addrOf(peerIP)
	if ok && s.policy.Load().AllowIP(ip) {
		return true
	}
	s.m.peerDenied.WithLabelValues(stagePermission).Inc()
	return false
}
