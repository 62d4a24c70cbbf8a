package turnserver

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v4"
)

// Scoped allocations. The LiveKit SFU hands its participants TURN
// credentials signed with an SFU secret of their own (credentials/sfu.go,
// Claims.SFU). Such a credential is for reaching the SFU and nothing else,
// so an allocation made with one is scoped: it may create permissions,
// bind channels and relay packets only to the peers of the SFU allow-list
// (the SFU's media addresses and ports), both ways. The peer policy
// applies as well, so a denied peer stays denied; the one thing the scope
// adds is that an SFU on an address of this host (the managed LiveKit) is
// reachable on exactly the ports listed, which the host-address rule would
// otherwise refuse (only icebox's own service ports stay closed). A leaked
// SFU credential is thus no open relay: at worst it reaches the SFU.
//
// Where it is checked:
//   - CreatePermission and ChannelBind (pion's PermissionHandler, per
//     listener: scopedPermission): 403 for an IP outside the list;
//   - ChannelBind to a listed IP on an unlisted port: pion binds it, the
//     guard turns its success into a 403 (fixAnswer) and the fast path
//     never learns the binding;
//   - every datagram sent (relayPacketConn.send: Send indications, pion's
//     channels and the fast path) and received (Receive) — the hard line:
//     nothing passes to or from an unlisted address or port whatever pion
//     decided;
//   - a TCP relay (RFC 6062) is refused to a scoped credential.
//
// The list is data (PeerRange), swapped whole with SetSFUPeers; each
// scoped allocation reads the server's current list per packet (an atomic
// load, no allocation), so shrinking it cuts traffic at once.

// PeerRange is one entry of an allow-list: the addresses of Prefix on the
// ports MinPort..MaxPort (inclusive; 1 <= MinPort <= MaxPort).
type PeerRange struct {
	Prefix           netip.Prefix
	MinPort, MaxPort uint16
}

func (r PeerRange) String() string {
	if r.MinPort == r.MaxPort {
		return fmt.Sprintf("%s:%d", r.Prefix, r.MinPort)
	}
	return fmt.Sprintf("%s:%d-%d", r.Prefix, r.MinPort, r.MaxPort)
}

// peerScope is a compiled allow-list. A nil or empty one allows nothing.
type peerScope struct {
	ranges []PeerRange // prefixes canonical (Canonical) and masked
}

// newPeerScope checks and compiles an allow-list.
func newPeerScope(list []PeerRange) (*peerScope, error) {
	s := &peerScope{ranges: make([]PeerRange, 0, len(list))}
	for i, r := range list {
		if !r.Prefix.IsValid() {
			return nil, fmt.Errorf("turnserver: sfu peers[%d]: invalid prefix", i)
		}
		if r.MinPort == 0 || r.MinPort > r.MaxPort {
			return nil, fmt.Errorf("turnserver: sfu peers[%d] %s: want 1 <= min port <= max port", i, r)
		}
		p := r.Prefix
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("turnserver: sfu peers[%d] %s: IPv4-mapped prefix shorter than /96", i, r)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		if p.Addr().IsUnspecified() && p.Bits() < p.Addr().BitLen() {
			return nil, fmt.Errorf("turnserver: sfu peers[%d] %s: a prefix this wide is an open relay, not an SFU", i, r)
		}
		r.Prefix = p.Masked()
		s.ranges = append(s.ranges, r)
	}
	return s, nil
}

// allow reports whether peer (canonical) is on the list.
func (s *peerScope) allow(peer netip.AddrPort) bool {
	if s == nil {
		return false
	}
	ip, port := peer.Addr(), peer.Port()
	for i := range s.ranges {
		r := &s.ranges[i]
		if port >= r.MinPort && port <= r.MaxPort && r.Prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// allowIP reports whether some port of ip (canonical) is on the list: a
// permission names an IP only.
func (s *peerScope) allowIP(ip netip.Addr) bool {
	if s == nil {
		return false
	}
	for i := range s.ranges {
		if s.ranges[i].Prefix.Contains(ip) {
			return true
		}
	}
	return false
}

// SetSFUPeers replaces the SFU allow-list of every scoped allocation, live
// ones included. An empty list makes scoped allocations reach nothing.
func (s *Server) SetSFUPeers(list []PeerRange) error {
	sc, err := newPeerScope(list)
	if err != nil {
		return err
	}
	s.sfuScope.Store(sc)
	return nil
}

// allowScoped is the peer check of a scoped allocation for a datagram to
// or from peer (unmapped): on the list, and allowed by the policy, where a
// listed address of this host counts as allowed on the listed ports (the
// managed SFU runs here) except icebox's own service ports.
func (s *Server) allowScoped(peer netip.AddrPort) bool {
	ap := netip.AddrPortFrom(Canonical(peer.Addr()), peer.Port())
	if !s.sfuScope.Load().allow(ap) {
		return false
	}
	return s.policy.Load().allowListed(ap)
}

// allowScopedIP is allowScoped for a permission (an IP).
func (s *Server) allowScopedIP(ip netip.Addr) bool {
	ip = Canonical(ip)
	if !s.sfuScope.Load().allowIP(ip) {
		return false
	}
	return s.policy.Load().allowListedIP(ip)
}

// allowListed is the policy's verdict on a peer an allow-list names: the
// rules decide (deny-list wins), except that on this host's addresses the
// allow-list stands in for the host-address rule and the built-in
// deny-list (the managed SFU listens on this host, on a LAN address or
// loopback as well): reachable on the listed ports unless the operator's
// denied_peers says otherwise, and never on a service port.
func (p *Policy) allowListed(peer netip.AddrPort) bool {
	if !p.allowListedIP(peer.Addr()) {
		return false
	}
	if p.isHost(peer.Addr()) {
		for _, sp := range p.servicePorts {
			if sp == peer.Port() {
				return false
			}
		}
	}
	return true
}

func (p *Policy) allowListedIP(ip netip.Addr) bool {
	if ip.IsUnspecified() {
		return false
	}
	if !p.isHost(ip) {
		return p.allowByRules(ip)
	}
	for i := range p.rules {
		if p.rules[i].prefix.Contains(ip) {
			return p.rules[i].allow || p.rules[i].rank != rankOperatorDeny
		}
	}
	return true
}

// scopedClients are the clients whose allocation is scoped, by the
// listener they use and their transport address, for the PermissionHandler
// (which pion gives the client's address only). An entry is learnt from
// pion's Allocate success answer as it passes the guard, and goes when the
// relay socket closes. A client missing here is judged as unscoped at the
// permission; its packets are still checked against the scope.
type scopedClients struct {
	m sync.Map // clientKey → *relayPacketConn
}

type clientKey struct {
	ln  int // index of the listener among those of its transport
	tcp bool
	ap  netip.AddrPort // unmapped
}

func keyOf(ln int, a net.Addr) (clientKey, bool) {
	ap, ok := addrPortOf(a)
	if !ok {
		return clientKey{}, false
	}
	_, tcp := a.(*net.TCPAddr)
	return clientKey{ln: ln, tcp: tcp, ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, true
}

func (c *scopedClients) get(k clientKey) *relayPacketConn {
	v, ok := c.m.Load(k)
	if !ok {
		return nil
	}
	return v.(*relayPacketConn)
}

// learnScoped records a scoped allocation's client from pion's Allocate
// success answer p, going to client through listener ln.
func (s *Server) learnScoped(ln int, p []byte, client net.Addr) {
	m, ok := decodeSTUN(p)
	if !ok {
		return
	}
	var relayed stun.XORMappedAddress
	if relayed.GetFromAs(m, stun.AttrXORRelayedAddress) != nil {
		return
	}
	rc := s.relayConn(udpRelayPort(relayed.IP, relayed.Port))
	k, kok := keyOf(ln, client)
	if rc == nil || !kok || !rc.a.scoped {
		return
	}
	s.scoped.m.Store(k, rc)
	rc.forget(func() { s.scoped.m.CompareAndDelete(k, rc) })
}

// scopedPermission is pion's PermissionHandler for listener ln: a scoped
// client's allocation may get permissions for listed IPs only; others go
// by the peer policy (allowPeer).
func (s *Server) scopedPermission(ln int) func(net.Addr, net.IP) bool {
	return func(src net.Addr, peerIP net.IP) bool {
		k, ok := keyOf(ln, src)
		if !ok || s.scoped.get(k) == nil {
			return s.allowPeer(src, peerIP)
		}
		ip, ok := addrOf(peerIP)
		if ok && s.allowScopedIP(ip) {
			return true
		}
		s.m.scopeRefused.WithLabelValues(scopeStagePermission).Inc()
		return false
	}
}

// scopedBinds remembers scoped clients' ChannelBind requests to a peer off
// the list (a listed IP on an unlisted port, which the PermissionHandler
// cannot see), by listener, client and transaction, until pion's answer
// passes the guard and is turned into a 403.
type scopedBinds struct {
	mu sync.Mutex
	m  map[bindKey]struct{}
}

type bindKey struct {
	c  clientKey
	id [12]byte
}

func (b *scopedBinds) add(k bindKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil || len(b.m) >= maxBindKeys {
		b.m = make(map[bindKey]struct{})
	}
	b.m[k] = struct{}{}
}

func (b *scopedBinds) take(k bindKey) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[k]
	delete(b.m, k)
	return ok
}

// sfuKIDs remembers which SFU secret signed a client's SFU username, learnt
// by the guard from a request's MESSAGE-INTEGRITY while more than one SFU
// secret is live (after a rotation), for authenticate to pick it: the
// usernames LiveKit mints name no secret. Keyed by client and username; a
// forged request matches no secret and records nothing.
type sfuKIDs struct {
	mu sync.Mutex
	m  map[kidKey]string
}

type kidKey struct {
	c        clientKey
	username string
}

func (k *sfuKIDs) put(key kidKey, kid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= maxBindKeys {
		k.m = make(map[kidKey]string)
	}
	k.m[key] = kid
}

func (k *sfuKIDs) get(key kidKey) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key]
}

// scopeState is the server's part: the list and what the guards learnt.
type scopeState struct {
	sfuScope atomic.Pointer[peerScope]
	scoped   scopedClients
	binds    scopedBinds
	kids     sfuKIDs
}

// maxObservedFrame bounds the STUN message frameReader buffers: a client's
// request is a few hundred bytes; a longer one is skipped unseen (pion
// then judges it without the scope's hints: the current SFU secret, and a
// bind's port checked per datagram).
const maxObservedFrame = 4096

// frameReader follows TURN's framing over TCP and TLS (RFC 8656 §12.5:
// STUN messages and ChannelData padded to four bytes, as pion's STUNConn
// reads them) and hands each whole STUN message to a function, before pion
// reads it. ChannelData, the bulk, is skipped without copying.
type frameReader struct {
	buf  []byte // the start of a frame, at most a header or a STUN message
	skip int    // bytes of the current frame still to pass unseen
	lost bool   // the stream is not TURN framing; pion will close it
}

func (f *frameReader) feed(p []byte, onSTUN func([]byte)) {
	for len(p) > 0 && !f.lost {
		if f.skip > 0 {
			n := min(f.skip, len(p))
			f.skip -= n
			p = p[n:]
			continue
		}
		// Take what the header needs, then the frame's length decides.
		need := 4
		if len(f.buf) >= 4 && f.buf[0]&0xc0 == 0 {
			need = 20 + int(binary.BigEndian.Uint16(f.buf[2:4]))
		}
		if len(f.buf) < need {
			n := min(need-len(f.buf), len(p))
			f.buf = append(f.buf, p[:n]...)
			p = p[n:]
			if len(f.buf) < need {
				continue
			}
		}
		switch {
		case f.buf[0]&0xc0 == 0x40: // ChannelData: skip its padded payload
			size := int(binary.BigEndian.Uint16(f.buf[2:4]))
			f.skip = (size + 3) &^ 3
			f.buf = f.buf[:0]
		case f.buf[0]&0xc0 != 0:
			f.lost = true
		case len(f.buf) == 4:
			// A STUN header's first four bytes: its length is known now.
			if 20+int(binary.BigEndian.Uint16(f.buf[2:4])) > maxObservedFrame {
				f.skip = 20 + int(binary.BigEndian.Uint16(f.buf[2:4])) - 4
				f.buf = f.buf[:0]
			}
		default: // a whole STUN message
			onSTUN(f.buf)
			f.buf = f.buf[:0]
		}
	}
}
