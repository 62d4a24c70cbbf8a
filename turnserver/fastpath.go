package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"

	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// The channel fast path. Media between a UDP client and its peers flows as
// ChannelData once the client has bound a channel (every browser does), and
// pion handles each such datagram with a chain of lookups, locks, log
// calls that format addresses, and allocations. icebox relays bound
// channels itself, with what pion already decided:
//
//   - It watches pion's answers on the UDP listener sockets: an Allocate
//     success names the client's relay socket, a ChannelBind success (to
//     the request it saw come in) a channel and its peer. Nothing is ever
//     bound that pion did not authenticate and permit.
//   - ChannelData from the client for a bound channel goes straight to the
//     relay socket (whose WriteTo still applies the peer policy and counts
//     it); a datagram from the bound peer goes straight back to the client
//     as ChannelData. Everything else — unbound channels, other peers
//     (Data indications), STUN — goes through pion as before.
//   - A binding lasts as long as pion's (10 minutes from its last
//     ChannelBind, which the client repeats to keep it) and ends with the
//     relay socket: deleting, expiring or revoking the allocation closes it.
//
// The relay engine's loops (internal/udpengine) do the relaying, calling the
// Receive methods here for each datagram; pion's goroutines do the
// learning. The clients of a listener are a sync.Map (written once
// per allocation, read per datagram); a client's channels and a relay
// socket's peers are small copy-on-write maps behind atomic pointers. All
// are read without locks.

// channelLifetime is how long pion keeps a channel binding after a
// ChannelBind (pion's proto.DefaultLifetime).
const channelLifetime = 10 * time.Minute

// maxPendingBinds bounds the ChannelBind requests awaiting pion's answer on
// one listener socket; past it the table starts over (a client whose
// request was forgotten just stays on pion's path until its next refresh).
const maxPendingBinds = 4096

// binding is one channel: client ↔ peer through relay.
type binding struct {
	channel  uint16
	peer     netip.AddrPort // unmapped
	clientAP netip.AddrPort // as the listener socket reports the client
	ln       *fastListener
	relay    *relayPacketConn
	expires  time.Time

	// Datagrams relayed on the fast path, each written by one goroutine
	// (the listener's reader, the relay socket's reader).
	toPeer, toClient atomic.Uint64
}

// live reports whether the fast path relays for b: the binding has not
// expired, its relay socket is open, and pion still holds a permission for
// the peer (RFC 8656 §12: a channel whose permission expired relays
// nothing; pion's own path is checked in relayPacketConn.send and deliver).
func (b *binding) live(now time.Time) bool {
	return now.Before(b.expires) && !b.relay.closed.Load() && b.relay.permitted(b.peer.Addr())
}

// fastClient is what the fast path knows about one client 5-tuple.
type fastClient struct {
	relay    *relayPacketConn
	channels atomic.Pointer[map[uint16]*binding] // copy-on-write under the listener's mu; nil: none
}

// pendingBind is a ChannelBind request awaiting pion's answer.
type pendingBind struct {
	client  netip.AddrPort
	channel uint16
	peer    netip.AddrPort
	at      time.Time
}

// fastListener wraps a UDP listener socket (under the error limiter, over
// the engine's listener): the engine asks it where bound channels'
// ChannelData goes, its ReadFrom notes ChannelBind requests, and its
// WriteTo learns allocations and bindings from pion's answers.
type fastListener struct {
	*engineListener
	s       *Server
	clients sync.Map // netip.AddrPort → *fastClient; an entry goes when its relay socket closes

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]pendingBind
}

var _ udpengine.Handler = (*fastListener)(nil)

func newFastListener(el *engineListener, s *Server) *fastListener {
	return &fastListener{engineListener: el, s: s, pending: make(map[[stun.TransactionIDSize]byte]pendingBind)}
}

// Receive handles a datagram the listener socket received (on an engine
// loop): bound channels' ChannelData goes to the peer, the rest to pion.
func (l *fastListener) Receive(r *udpengine.Round, pkt []byte, from netip.AddrPort) {
	d := pkt[udpengine.Headroom:]
	if len(d) >= 4 && d[0]&0xc0 == 0x40 { // ChannelData (RFC 8656 §12.4)
		if l.relayToPeer(d, from, r.Now()) {
			return
		}
	}
	l.deliver(d, from)
}

// The ChannelData header goes into the headroom the engine leaves.
var _ [udpengine.Headroom - 4]byte

// Receive handles a datagram a relay socket received (on an engine loop):
// from a peer bound to a channel it goes to the client as ChannelData, the
// header written into the datagram's headroom; the rest goes to pion.
func (c *relayPacketConn) Receive(r *udpengine.Round, pkt []byte, from netip.AddrPort) {
	n := len(pkt) - udpengine.Headroom
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if c.a.scoped && !c.s.allowScoped(from) {
		// A scoped allocation hears its allow-list only, whatever
		// permission pion holds.
		c.s.m.scopeRefused.WithLabelValues(scopeStageReceive).Inc()
		return
	} else if !c.a.scoped && !c.s.policy.Load().Allow(from) {
		// A peer the policy refuses is heard no more than it is reached:
		// its permission may predate a reload that denied it, or its
		// address may since have become one of this host's.
		c.s.m.peerDenied.WithLabelValues(stageReceive).Inc()
		return
	}
	if peers := c.peers.Load(); peers != nil {
		if b := (*peers)[from]; b != nil && b.live(r.Now()) {
			if bw := c.s.reg.bw; bw.on.Load() && !bw.admit(c.a, dirFromPeer, n, r.Now()) {
				return
			}
			c.a.bytesFromPeer.Add(uint64(n))
			c.a.packetsFromPeer.Add(1)
			binary.BigEndian.PutUint16(pkt[0:2], b.channel)
			binary.BigEndian.PutUint16(pkt[2:4], uint16(n))
			r.Send(b.ln.sock, pkt, b.clientAP)
			b.toClient.Add(1)
			return
		}
	}
	c.deliver(pkt[udpengine.Headroom:], from, r.Now())
}

// ReadFrom returns the next datagram pion must handle (the engine relayed
// bound channels' ChannelData already), noting ChannelBind requests.
func (l *fastListener) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := l.engineListener.ReadFrom(p)
	if err == nil && isSTUNType(p[:n], stun.MethodChannelBind, stun.ClassRequest) {
		l.noteChannelBind(p[:n], addr)
	}
	return n, addr, err
}

// relayToPeer sends a ChannelData datagram's payload to the channel's peer
// if the channel is bound on the fast path; false leaves it to pion. It
// runs on an engine loop.
func (l *fastListener) relayToPeer(d []byte, src netip.AddrPort, now time.Time) bool {
	v, ok := l.clients.Load(src)
	if !ok {
		return false
	}
	channels := v.(*fastClient).channels.Load()
	if channels == nil {
		return false
	}
	b := (*channels)[binary.BigEndian.Uint16(d[0:2])]
	size := int(binary.BigEndian.Uint16(d[2:4]))
	if b == nil || 4+size > len(d) || !b.live(now) {
		return false
	}
	b.relay.writeToPeer(d[4:4+size], b.peer, now) // a refused peer or a send error drops it, as pion would
	b.toPeer.Add(1)
	return true
}

// noteChannelBind remembers a ChannelBind request until pion answers it.
func (l *fastListener) noteChannelBind(d []byte, from net.Addr) {
	src, ok := addrPortOf(from)
	if !ok {
		return
	}
	m, ok := decodeSTUN(d)
	if !ok {
		return
	}
	raw, err := m.Get(stun.AttrChannelNumber)
	if err != nil || len(raw) < 2 {
		return
	}
	var peer stun.XORMappedAddress
	if peer.GetFromAs(m, stun.AttrXORPeerAddress) != nil {
		return
	}
	pa, ok := netip.AddrFromSlice(peer.IP)
	if !ok {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) >= maxPendingBinds {
		clear(l.pending)
	}
	l.pending[m.TransactionID] = pendingBind{
		client: src, channel: binary.BigEndian.Uint16(raw[0:2]),
		peer: netip.AddrPortFrom(pa.Unmap(), uint16(peer.Port)), at: now,
	}
}

// WriteTo sends pion's datagrams, learning from its Allocate and
// ChannelBind success responses on the way.
func (l *fastListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	switch {
	case len(p) >= 4 && p[0]&0xc0 == 0x40: // ChannelData: the bulk, nothing to learn
	case isSTUNType(p, stun.MethodAllocate, stun.ClassSuccessResponse):
		l.learnAllocation(p, addr)
	case isSTUNType(p, stun.MethodChannelBind, stun.ClassSuccessResponse):
		l.learnBinding(p, addr)
	}
	return l.engineListener.WriteTo(p, addr)
}

// learnAllocation maps the client to its relay socket, named by the
// XOR-RELAYED-ADDRESS of pion's Allocate success response.
func (l *fastListener) learnAllocation(p []byte, to net.Addr) {
	client, ok := addrPortOf(to)
	if !ok {
		return
	}
	m, ok := decodeSTUN(p)
	if !ok {
		return
	}
	var relayed stun.XORMappedAddress
	if relayed.GetFromAs(m, stun.AttrXORRelayedAddress) != nil {
		return
	}
	rc := l.s.relayConn(udpRelayPort(relayed.IP, relayed.Port))
	if rc == nil {
		return
	}
	c := &fastClient{relay: rc}
	l.clients.Store(client, c)
	rc.forget(func() { l.clients.CompareAndDelete(client, c) })
}

// learnBinding commits the ChannelBind request pion just accepted.
func (l *fastListener) learnBinding(p []byte, to net.Addr) {
	if len(p) < 20 {
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], p[8:20])
	l.mu.Lock()
	req, ok := l.pending[id]
	delete(l.pending, id)
	l.mu.Unlock()
	client, cok := addrPortOf(to)
	if !ok || !cok || client != req.client {
		return
	}
	v, found := l.clients.Load(client)
	if !found {
		return
	}
	c := v.(*fastClient)
	if c.relay.closed.Load() {
		return
	}
	b := &binding{channel: req.channel, peer: req.peer, clientAP: client, ln: l, relay: c.relay,
		expires: req.at.Add(channelLifetime)}
	l.mu.Lock()
	m := make(map[uint16]*binding)
	if old := c.channels.Load(); old != nil {
		for ch, ob := range *old {
			if ch != req.channel && ob.peer != req.peer {
				m[ch] = ob
			}
		}
	}
	m[req.channel] = b
	c.channels.Store(&m)
	l.mu.Unlock()
	c.relay.bind(b)
}

// bind adds b to the relay socket's peers (copy-on-write): datagrams from
// b.peer now go to the client as ChannelData on the fast path.
func (c *relayPacketConn) bind(b *binding) {
	defer c.kernelSync()
	c.bindMu.Lock()
	defer c.bindMu.Unlock()
	old := c.peers.Load()
	m := make(map[netip.AddrPort]*binding)
	if old != nil {
		for peer, ob := range *old {
			if peer != b.peer && ob.channel != b.channel {
				m[peer] = ob
			}
		}
	}
	m[b.peer] = b
	c.peers.Store(&m)
}

// decodeSTUN parses a copy of p (pion still owns p) as a STUN message.
func decodeSTUN(p []byte) (*stun.Message, bool) {
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	return m, m.Decode() == nil
}

// isSTUNType reports whether p is a STUN message of method and class.
func isSTUNType(p []byte, method stun.Method, class stun.MessageClass) bool {
	if len(p) < 20 || p[0]&0xc0 != 0 || binary.BigEndian.Uint32(p[4:8]) != stunMagicCookie {
		return false
	}
	return binary.BigEndian.Uint16(p[0:2]) == stun.NewType(method, class).Value()
}

// relayConn returns the live UDP relay socket on port, or nil.
func (s *Server) relayConn(port relayPort) *relayPacketConn {
	v, ok := s.relays.Load(port)
	if !ok {
		return nil
	}
	return v.(*relayPacketConn)
}

// fastPathCounts sums what the live bindings relayed on the fast path
// (tests).
func (s *Server) fastPathCounts() (toPeer, toClient uint64) {
	s.relays.Range(func(_, v any) bool {
		if peers := v.(*relayPacketConn).peers.Load(); peers != nil {
			for _, b := range *peers {
				toPeer += b.toPeer.Load()
				toClient += b.toClient.Load()
			}
		}
		return true
	})
	return toPeer, toClient
}

// forget runs f when the relay socket closes (at once if it has).
func (c *relayPacketConn) forget(f func()) {
	c.bindMu.Lock()
	if !c.closed.Load() {
		c.onClose = append(c.onClose, f)
		c.bindMu.Unlock()
		return
	}
	c.bindMu.Unlock()
	f()
}
