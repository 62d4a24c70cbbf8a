package turnserver

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// The guards are the outermost wrappers of the sockets pion serves: they
// see each request before pion and each answer after it, and correct two
// things pion's handlers get wrong that no pion callback can change.
//
//   - Connect and ConnectionBind over UDP (udpGuard.ReadFrom): answered 400
//     before pion reads them; see connect.go.
//   - A ChannelBind to a peer the policy refuses: pion answers 401
//     Unauthorized (handleChannelBindRequest), which tells a client its
//     credentials are wrong — it may retry with new ones, and a browser
//     reports an authentication failure. RFC 8656 §7.3/§12 and RFC 8489
//     §9.2: a request refused by the server's policy gets 403 Forbidden, as
//     pion already answers for CreatePermission and Connect. The guards
//     rewrite that 401 (the only 401 pion signs with MESSAGE-INTEGRITY; an
//     authentication 401 carries none) into a 403 signed with the same key,
//     which authenticate remembered for the request's source.

// channelBindKeys remembers the long-term key of the last authenticated
// ChannelBind per client source, until its answer passes a guard.
type channelBindKeys struct {
	mu sync.Mutex
	m  map[bindSource][]byte
}

// bindSource is a client's transport address; UDP and TCP ports are
// distinct spaces.
type bindSource struct {
	tcp bool
	ap  netip.AddrPort
}

// maxBindKeys bounds the table; past it, it starts over (an answer whose key
// was forgotten goes out as pion wrote it).
const maxBindKeys = 4096

func sourceOf(a net.Addr) (bindSource, bool) {
	ap, ok := addrPortOf(a)
	if !ok {
		return bindSource{}, false
	}
	_, tcp := a.(*net.TCPAddr)
	return bindSource{tcp: tcp, ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, true
}

func (k *channelBindKeys) remember(src net.Addr, key []byte) {
	s, ok := sourceOf(src)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= maxBindKeys {
		k.m = make(map[bindSource][]byte)
	}
	k.m[s] = key
}

func (k *channelBindKeys) take(dst net.Addr) []byte {
	s, ok := sourceOf(dst)
	if !ok {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key := k.m[s]
	delete(k.m, s)
	return key
}

// fixAnswer returns what to send instead of pion's answer p to dst through
// listener ln: p itself; for a ChannelBind refused by the peer policy or
// the scope a 403. It learns scoped clients from Allocate successes.
func (s *Server) fixAnswer(ln int, p []byte, dst net.Addr) []byte {
	if isSTUNType(p, stun.MethodAllocate, stun.ClassSuccessResponse) {
		s.learnScoped(ln, p, dst)
		return p
	}
	errResp := isSTUNType(p, stun.MethodChannelBind, stun.ClassErrorResponse)
	if !errResp && !isSTUNType(p, stun.MethodChannelBind, stun.ClassSuccessResponse) {
		return p // the common case: a few comparisons of the header
	}
	key := s.bindKeys.take(dst)
	if key == nil {
		return p
	}
	if !errResp {
		// Success: pion bound it; a scoped client's bind to an unlisted
		// port is refused all the same (its datagrams are dropped by the
		// scope, and the fast path never learns a binding it sees
		// refused). Other successes go out untouched, undecoded.
		var id [stun.TransactionIDSize]byte
		copy(id[:], p[8:20])
		k, kok := keyOf(ln, dst)
		if !kok || !s.binds.take(bindKey{c: k, id: id}) {
			return p
		}
	}
	m, ok := decodeSTUN(p)
	if !ok || stun.MessageIntegrity(key).Check(m) != nil {
		return p // not signed with the key remembered
	}
	if errResp && errorCode(m) != stun.CodeUnauthorized {
		return p // not the policy refusal
	}
	if !errResp {
		s.m.scopeRefused.WithLabelValues(scopeStageChannelBind).Inc()
	}
	res, err := stun.Build(&stun.Message{TransactionID: m.TransactionID},
		stun.NewType(stun.MethodChannelBind, stun.ClassErrorResponse),
		stun.CodeForbidden, stun.MessageIntegrity(key))
	if err != nil {
		return p
	}
	return res.Raw
}

// inspectRequest looks at a client's STUN request before pion does, for
// what the scope needs and pion's callbacks do not tell: which SFU secret
// signed an SFU username while several are live (sfuKIDs), and the port of
// a scoped client's ChannelBind (scopedBinds). Cheap for everything else:
// a header check, and a lookup for ChannelBinds.
func (s *Server) inspectRequest(ln int, p []byte, src net.Addr) {
	// The class bits (RFC 8489 §5: 0x0110) are zero in a request.
	if len(p) < 20 || p[0]&0xc0 != 0 || binary.BigEndian.Uint32(p[4:8]) != stunMagicCookie ||
		binary.BigEndian.Uint16(p[0:2])&0x0110 != 0 {
		return // not a STUN request
	}
	bind := isSTUNType(p, stun.MethodChannelBind, stun.ClassRequest)
	k, ok := keyOf(ln, src)
	if !ok {
		return
	}
	var rc *relayPacketConn
	if bind {
		rc = s.scoped.get(k)
	}
	multi := s.keyring().SFUSecrets() > 1
	if rc == nil && !multi {
		return
	}
	m, ok := decodeSTUN(p)
	if !ok {
		return
	}
	if rc != nil {
		var peer stun.XORMappedAddress
		if peer.GetFromAs(m, stun.AttrXORPeerAddress) == nil {
			if pa, ok := netip.AddrFromSlice(peer.IP); ok && !s.allowScoped(netip.AddrPortFrom(pa.Unmap(), uint16(peer.Port))) {
				s.binds.add(bindKey{c: k, id: m.TransactionID})
			}
		}
	}
	if multi {
		s.learnSFUKID(m, src)
	}
}

// learnSFUKID finds which SFU secret signed m's username, if it is an SFU
// username, by its MESSAGE-INTEGRITY.
func (s *Server) learnSFUKID(m *stun.Message, src net.Addr) {
	var user stun.Username
	if user.GetFrom(m) != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return
	}
	kr := s.keyring()
	username := user.String()
	pws := kr.SFUPasswords(username)
	kids := kr.SFUKIDs()
	k, ok := keyOf(-1, src)
	if !ok {
		return
	}
	for i, pw := range pws {
		if stun.MessageIntegrity(turn.GenerateAuthKey(username, s.cfg.Realm, pw)).Check(m) == nil {
			s.kids.put(kidKey{c: k, username: username}, kids[i])
			return
		}
	}
}

// errorCode returns the ERROR-CODE of m, 0 if it has none.
func errorCode(m *stun.Message) stun.ErrorCode {
	var code stun.ErrorCodeAttribute
	if code.GetFrom(m) != nil {
		return 0
	}
	return code.Code
}

// udpGuard wraps a UDP listener socket, the one pion reads. Its answers
// go out through the wrapped socket, so the error-rate limit applies to
// them too.
type udpGuard struct {
	net.PacketConn
	s  *Server
	ln int // the listener's index (scope.go)
}

var _ net.PacketConn = (*udpGuard)(nil)

func (g *udpGuard) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := g.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if !isTCPOnlyRequest(p[:n]) {
			g.s.inspectRequest(g.ln, p[:n], addr)
			return n, addr, nil
		}
		g.refuseTCPOnly(p[:n], addr)
	}
}

func (g *udpGuard) WriteTo(p []byte, addr net.Addr) (int, error) {
	if _, err := g.PacketConn.WriteTo(g.s.fixAnswer(g.ln, p, addr), addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// refuseTCPOnly answers a TCP-only request that came over UDP with 400,
// before any authentication: the answer reveals nothing, and no nonce is
// spent on a request that can never succeed here.
func (g *udpGuard) refuseTCPOnly(req []byte, to net.Addr) {
	var id [stun.TransactionIDSize]byte
	copy(id[:], req[8:20])
	method := stun.MethodConnect
	if isSTUNType(req, stun.MethodConnectionBind, stun.ClassRequest) {
		method = stun.MethodConnectionBind
	}
	res, err := stun.Build(&stun.Message{TransactionID: id},
		stun.NewType(method, stun.ClassErrorResponse),
		stun.CodeBadRequest) // the standard reason phrase: a short answer to a possibly spoofed source
	if err != nil {
		return // cannot fail for these attributes
	}
	_, _ = g.PacketConn.WriteTo(res.Raw, to) // a lost answer is retransmitted for; pion would not report it either
}

// isTCPOnlyRequest reports whether p is an RFC 6062 Connect or
// ConnectionBind request.
func isTCPOnlyRequest(p []byte) bool {
	return isSTUNType(p, stun.MethodConnect, stun.ClassRequest) ||
		isSTUNType(p, stun.MethodConnectionBind, stun.ClassRequest)
}

// tlsHandshakeTimeout bounds a TLS client's handshake, as pion bounds it
// for the *tls.Conn it is handed (10 s).
const tlsHandshakeTimeout = 10 * time.Second

// streamGuard wraps a TURN TCP or TLS listener, above the TLS layer: the
// guard must see the STUN messages, not TLS records. pion then sees a
// streamConn rather than a *tls.Conn, so it neither bounds the handshake
// nor reports the TLS state to the auth handler (icebox's does not use
// it); streamConn bounds the handshake itself.
type streamGuard struct {
	net.Listener
	s  *Server
	ln int // the listener's index among the TCP and TLS ones (scope.go)
}

func (l *streamGuard) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &streamConn{Conn: c, s: l.s, ln: l.ln}, nil
}

// streamConn is a TURN client connection over TCP or TLS. pion writes one
// STUN message or ChannelData per Write.
type streamConn struct {
	net.Conn
	s  *Server
	ln int
	// frames follows the stream's framing to show each STUN request to
	// inspectRequest (scope.go) before pion reads it.
	frames frameReader

	handshake sync.Once
	hsErr     error
}

func (c *streamConn) Read(p []byte) (int, error) {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		c.handshake.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), tlsHandshakeTimeout)
			defer cancel()
			c.hsErr = tc.HandshakeContext(ctx)
		})
		if c.hsErr != nil {
			return 0, c.hsErr
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.frames.feed(p[:n], func(req []byte) { c.s.inspectRequest(c.ln, req, c.Conn.RemoteAddr()) })
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(c.s.fixAnswer(c.ln, p, c.Conn.RemoteAddr())); err != nil {
		return 0, err
	}
	return len(p), nil
}
