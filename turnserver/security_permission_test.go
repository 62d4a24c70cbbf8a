package turnserver

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

const testChannel = 0x4000

// channelBed is a raw client with channel testChannel bound to a peer.
type channelBed struct {
	t      *testing.T
	r      *testRelay
	c      *rawTURN
	peer   *net.UDPConn
	peerAP netip.AddrPort
	relay  netip.AddrPort
	seq    int
}

func newChannelBed(t *testing.T, r *testRelay) *channelBed {
	t.Helper()
	cred := r.mint(t, "alice", "", time.Hour)
	c := r.rawUDP(t, cred.Username, cred.Password)
	b := &channelBed{t: t, r: r, c: c, peer: r.newPeer(t)}
	b.peerAP = b.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	b.relay = c.allocate(protoUDP)
	if code := b.request(stun.MethodChannelBind, channelNumber(testChannel), xorPeer(b.peerAP)); code != 0 {
		t.Fatalf("ChannelBind: got error %d", code)
	}
	return b
}

// request sends an authenticated request and returns its error code (0 on
// success).
func (b *channelBed) request(method stun.Method, attrs ...stun.Setter) stun.ErrorCode {
	b.t.Helper()
	res, err := b.c.roundTrip(b.c.authed(method, attrs...), 5*time.Second)
	if err != nil {
		b.t.Fatalf("%v: %v", method, err)
	}
	if res.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	return errorCode(res)
}

// channelNumber is a CHANNEL-NUMBER attribute.
type channelNumber uint16

func (n channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0})
	return nil
}

// toPeer sends one ChannelData datagram on the channel and reports whether
// the peer received it within wait.
func (b *channelBed) toPeer(wait time.Duration) bool {
	b.seq++
	payload := []byte(fmt.Sprintf("to-peer %d", b.seq))
	d := binary.BigEndian.AppendUint16(nil, testChannel)
	d = binary.BigEndian.AppendUint16(d, uint16(len(payload)))
	d = append(d, payload...)
	if _, err := b.c.udp.WriteTo(d, b.c.server); err != nil {
		b.t.Fatal(err)
	}
	return receive(b.peer, wait, func(p []byte) bool { return bytes.Equal(p, payload) })
}

// toClient sends one datagram from the peer to the relay address and
// reports whether the client received it as ChannelData within wait.
func (b *channelBed) toClient(wait time.Duration) bool {
	b.seq++
	payload := []byte(fmt.Sprintf("to-client %d", b.seq))
	if _, err := b.peer.WriteToUDPAddrPort(payload, b.relay); err != nil {
		b.t.Fatal(err)
	}
	return receive(b.c.udp, wait, func(p []byte) bool {
		return len(p) >= 4 && binary.BigEndian.Uint16(p[0:2]) == testChannel && bytes.Equal(p[4:], payload)
	})
}

// receive reads c until a datagram matches or wait passes.
func receive(c *net.UDPConn, wait time.Duration, match func([]byte) bool) bool {
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return false
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		if err == nil && match(buf[:n]) {
			return true
		}
	}
}

// relayedBoth polls until a datagram crosses the channel both ways.
func (b *channelBed) relayedBoth(within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !b.toPeer(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	for !b.toClient(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// TestSecurityChannelStopsWhenPermissionExpires: the permission a
// ChannelBind installs expires (1 s here) while the channel (10 minutes)
// lives on; from then on ChannelData is relayed neither to the peer nor
// back, until a CreatePermission renews it (RFC 8656 §12). pion relays
// bound channels without looking at the permission. In every mode
// (forModes): with the kernel path on, the channel is relayed by the
// kernel until the permission expires and leaves its maps with it.
func TestSecurityChannelStopsWhenPermissionExpires(t *testing.T) {
	forModes(t, testChannelStopsWhenPermissionExpires)
}

func testChannelStopsWhenPermissionExpires(t *testing.T, m testMode) {
	const permLife = 2 * time.Second
	r := startRelay(t, m.options(relayOptions{allowLoopback: true, permissionTimeout: permLife}))
	b := newChannelBed(t, r)
	r.inKernel(t, 1)
	k0 := r.kernelRelayed()
	if !b.relayedBoth(permLife / 2) {
		t.Fatal("channel relays nothing before its permission expired")
	}
	r.viaKernel(t, k0)

	// Send to the peer until it stops arriving: the permission expired.
	expired := time.Now().Add(permLife)
	sent := 0
	for b.toPeer(200 * time.Millisecond) {
		sent++
		if time.Now().After(expired.Add(5 * time.Second)) {
			t.Fatalf("ChannelData still relayed to the peer %v after the permission expired (%d datagrams)",
				time.Since(expired)+permLife, sent)
		}
	}
	var leaked int
	for range 3 {
		if b.toPeer(200 * time.Millisecond) {
			leaked++
		}
		if b.toClient(200 * time.Millisecond) {
			leaked++
		}
	}
	rc := r.srv.relayConn(relayPort{network: netUDP4, port: b.relay.Port()})
	bound := rc != nil && rc.peers.Load() != nil && (*rc.peers.Load())[b.peerAP] != nil
	dropped := r.counter(t, "icebox_turn_udp_dropped_total", "reason", dropNoPermission)
	if n := r.kernelChannels(t); n != 0 {
		t.Errorf("%d channels still in the kernel after the permission expired", n)
	}
	t.Logf("%s: after expiry: %d of 6 datagrams relayed (want 0), channel still bound on the fast path: %v, dropped for no permission: %v",
		m.name, leaked, bound, dropped)
	if leaked != 0 {
		t.Errorf("%d of 6 datagrams relayed over a channel whose permission expired", leaked)
	}
	if !bound {
		t.Error("the channel binding is gone; the test wants it alive while its permission expired")
	}

	if code := b.request(stun.MethodCreatePermission, xorPeer(b.peerAP)); code != 0 {
		t.Fatalf("CreatePermission: got error %d", code)
	}
	r.inKernel(t, 1)
	k1 := r.kernelRelayed()
	if !b.relayedBoth(permLife / 2) {
		t.Fatal("channel relays nothing after CreatePermission renewed its permission")
	}
	r.viaKernel(t, k1)
}

// TestSecurityDeniedPeerIs403: a ChannelBind or CreatePermission to a peer
// the policy refuses is answered 403 Forbidden, signed with the client's
// key, over UDP, TCP and TLS. pion answered a refused ChannelBind 401
// Unauthorized, which tells the client its credentials are wrong.
func TestSecurityDeniedPeerIs403(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	denied := netip.MustParseAddrPort("10.0.0.1:5000") // RFC 1918: refused by default
	for _, tr := range []transport{overUDP, overTCP, overTLS} {
		t.Run(string(tr), func(t *testing.T) {
			cred := r.mint(t, "alice", "", time.Hour)
			var c *rawTURN
			switch tr {
			case overUDP:
				c = newRawUDP(t, r.udp, cred.Username, cred.Password)
			case overTCP:
				c = newRawTCP(t, r.tcp, cred.Username, cred.Password)
			case overTLS:
				conn, err := tls.Dial("tcp4", r.tls, r.tlsConf)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
				c = &rawTURN{t: t, tcp: conn, user: cred.Username, pass: cred.Password}
			}
			c.allocate(protoUDP)
			key := stun.MessageIntegrity(turn.GenerateAuthKey(cred.Username, testRealm, cred.Password))
			for _, req := range []struct {
				method stun.Method
				attrs  []stun.Setter
			}{
				{stun.MethodChannelBind, []stun.Setter{channelNumber(testChannel), xorPeer(denied)}},
				{stun.MethodCreatePermission, []stun.Setter{xorPeer(denied)}},
			} {
				res, err := c.roundTrip(c.authed(req.method, req.attrs...), 5*time.Second)
				if err != nil {
					t.Fatalf("%v: %v", req.method, err)
				}
				t.Logf("%v to %v over %s: %v %d", req.method, denied, tr, res.Type, errorCode(res))
				if res.Type != stun.NewType(req.method, stun.ClassErrorResponse) || errorCode(res) != stun.CodeForbidden {
					t.Errorf("%v to a refused peer: got %v %d, want a 403 error", req.method, res.Type, errorCode(res))
				}
				if err := key.Check(res); err != nil {
					t.Errorf("%v: the answer's MESSAGE-INTEGRITY does not check with the client's key: %v", req.method, err)
				}
			}
			// A ChannelBind to a permitted peer is answered as pion
			// answers it.
			peer := newPeer(t)
			res, err := c.roundTrip(c.authed(stun.MethodChannelBind, channelNumber(testChannel+1),
				xorPeer(peer.LocalAddr().(*net.UDPAddr).AddrPort())), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Type != stun.NewType(stun.MethodChannelBind, stun.ClassSuccessResponse) || key.Check(res) != nil {
				t.Errorf("ChannelBind to a permitted peer: got %v %d, want a signed success", res.Type, errorCode(res))
			}
		})
	}
}
