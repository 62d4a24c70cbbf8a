package turnserver

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/livekit/protocol/utils/guid"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

const (
	testSFUSecret    = "sfu-turn-secret-0123456789abcdef"
	testOldSFUSecret = "sfu-turn-secret-old-0123456789ab"
)

// livekitCredential mints a TURN credential the way livekit-server v1.13.5
// does from rtc.turn_servers[].secret (pkg/service/roommanager.go), for a
// participant ID from LiveKit's own generator: username "<unix
// expiry>:<participant ID>", credential base64(HMAC-SHA1(secret,
// username)), expiry now + ttl (LiveKit's default ttl is 4 h).
func livekitCredential(secret string, now time.Time, ttl time.Duration) (username, credential string) {
	username = fmt.Sprintf("%d:%s", now.Add(ttl).Unix(), guid.New(guid.ParticipantPrefix))
	h := hmac.New(sha1.New, []byte(secret))
	h.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// sfuBed is a relay whose SFU allow-list is one "SFU" socket on loopback,
// and the peers around it a scoped credential must not reach.
type sfuBed struct {
	r        *testRelay
	sfu      *net.UDPConn   // the SFU's media socket: in scope
	sfuAP    netip.AddrPort // 127.0.0.1:<port>
	otherAP  netip.AddrPort // a socket on the SFU's IP, another port: out of scope
	other    *net.UDPConn
	hostAP   netip.AddrPort // another address of this host (127.0.0.2): out of scope
	host     *net.UDPConn
	deniedAP netip.AddrPort // RFC 1918, denied by the policy
	publicAP netip.AddrPort // a public address the policy allows: out of scope
}

func newSFUBed(t *testing.T, o relayOptions) *sfuBed {
	t.Helper()
	b := &sfuBed{sfu: newPeer(t), other: newPeer(t)}
	b.sfuAP = b.sfu.LocalAddr().(*net.UDPAddr).AddrPort()
	b.otherAP = b.other.LocalAddr().(*net.UDPAddr).AddrPort()
	host, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Close() })
	b.host, b.hostAP = host, host.LocalAddr().(*net.UDPAddr).AddrPort()
	b.deniedAP = netip.MustParseAddrPort("10.0.0.1:5000")
	b.publicAP = netip.MustParseAddrPort("8.8.8.8:5000")
	o.allowLoopback = true // the peers live on loopback; the scope must hold even so
	if o.sfuKeys == nil {
		o.sfuKeys = []string{testSFUSecret}
	}
	o.sfuPeers = []PeerRange{{Prefix: netip.PrefixFrom(b.sfuAP.Addr(), 32), MinPort: b.sfuAP.Port(), MaxPort: b.sfuAP.Port()}}
	b.r = startRelay(t, o)
	return b
}

// sendIndication is a Send indication of payload to peer (no auth, as RFC
// 8656 §11 has it).
func sendIndication(peer netip.AddrPort, payload []byte) *stun.Message {
	return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		xorPeer(peer), stun.RawAttribute{Type: stun.AttrData, Value: payload}, stun.Fingerprint)
}

// TestSecuritySFUCredentialScope: a credential minted exactly as
// livekit-server mints it allocates and relays to the SFU's address and
// port, and is refused everything else — 403 on CreatePermission and
// ChannelBind towards another address (the host's own, a denied one, a
// public one) or another port of the SFU's address, Send indications
// dropped, datagrams from other ports dropped, no TCP relay — over UDP,
// TCP and TLS.
func TestSecuritySFUCredentialScope(t *testing.T) {
	b := newSFUBed(t, relayOptions{})
	r := b.r
	for _, tr := range []transport{overUDP, overTCP, overTLS} {
		t.Run(string(tr), func(t *testing.T) {
			user, pass := livekitCredential(testSFUSecret, r.clock.Now(), 4*time.Hour)
			var c *rawTURN
			switch tr {
			case overUDP:
				c = newRawUDP(t, r.udp, user, pass)
			case overTCP:
				c = newRawTCP(t, r.tcp, user, pass)
			case overTLS:
				conn, err := tls.Dial("tcp4", r.tls, r.tlsConf)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = conn.Close() })
				c = &rawTURN{t: t, tcp: conn, user: user, pass: pass}
			}
			relay := c.allocate(protoUDP)
			key := stun.MessageIntegrity(turn.GenerateAuthKey(user, testRealm, pass))
			ask := func(method stun.Method, attrs ...stun.Setter) stun.ErrorCode {
				t.Helper()
				res, err := c.roundTrip(c.authed(method, attrs...), 5*time.Second)
				if err != nil {
					t.Fatalf("%v: %v", method, err)
				}
				if err := key.Check(res); err != nil {
					t.Errorf("%v: answer not signed with the client's key: %v", method, err)
				}
				if res.Type.Class == stun.ClassSuccessResponse {
					return 0
				}
				return errorCode(res)
			}
			if code := ask(stun.MethodCreatePermission, xorPeer(b.sfuAP)); code != 0 {
				t.Fatalf("CreatePermission to the SFU: error %d", code)
			}
			if code := ask(stun.MethodChannelBind, channelNumber(testChannel), xorPeer(b.sfuAP)); code != 0 {
				t.Fatalf("ChannelBind to the SFU: error %d", code)
			}
			for _, bad := range []struct {
				what string
				ap   netip.AddrPort
			}{
				{"another port of the SFU's address", b.otherAP},
				{"another address of this host", b.hostAP},
				{"a denied address", b.deniedAP},
				{"a public address", b.publicAP},
			} {
				perm := ask(stun.MethodCreatePermission, xorPeer(bad.ap))
				bind := ask(stun.MethodChannelBind, channelNumber(testChannel+1), xorPeer(bad.ap))
				t.Logf("%s: %s %v: CreatePermission %d, ChannelBind %d", tr, bad.what, bad.ap, perm, bind)
				if bad.ap != b.otherAP && perm != stun.CodeForbidden {
					t.Errorf("CreatePermission to %s %v: %d, want 403", bad.what, bad.ap, perm)
				}
				if bind != stun.CodeForbidden {
					t.Errorf("ChannelBind to %s %v: %d, want 403", bad.what, bad.ap, bind)
				}
			}

			// Send indications: one to the other port (its IP holds a
			// permission), then one to the SFU. pion handles a client's
			// indications in order, so once the SFU has its datagram the
			// other one was decided.
			leak := []byte("leak " + string(tr))
			hello := []byte("hello sfu " + string(tr))
			for _, to := range []netip.AddrPort{b.otherAP, b.hostAP, b.publicAP} {
				if err := c.send(sendIndication(to, leak)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.send(sendIndication(b.sfuAP, hello)); err != nil {
				t.Fatal(err)
			}
			if !receive(b.sfu, 5*time.Second, func(p []byte) bool { return bytes.Equal(p, hello) }) {
				t.Fatal("the SFU received nothing through the scoped allocation")
			}
			for _, pc := range []*net.UDPConn{b.other, b.host} {
				if receive(pc, 100*time.Millisecond, func(p []byte) bool { return bytes.Equal(p, leak) }) {
					t.Errorf("a Send indication reached %v, outside the scope", pc.LocalAddr())
				}
			}

			// From the peers' side: the other port writes first, then the
			// SFU; both land on the relay socket in this order.
			if _, err := b.other.WriteToUDPAddrPort([]byte("stranger"), relay); err != nil {
				t.Fatal(err)
			}
			if _, err := b.sfu.WriteToUDPAddrPort([]byte("from sfu"), relay); err != nil {
				t.Fatal(err)
			}
			var got [][]byte
			deadline := time.Now().Add(5 * time.Second)
			for len(got) == 0 || !bytes.HasSuffix(got[len(got)-1], []byte("from sfu")) {
				if time.Now().After(deadline) {
					t.Fatal("the client received nothing from the SFU")
				}
				got = append(got, c.readData(deadline))
			}
			for _, p := range got[:len(got)-1] {
				if bytes.Contains(p, []byte("stranger")) {
					t.Error("a datagram from outside the scope reached the client")
				}
			}

			if tr == overUDP {
				tcpRelay := c.authed(stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{protoTCP, 0, 0, 0}})
				res, err := c.roundTrip(tcpRelay, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if res.Type.Class == stun.ClassSuccessResponse {
					t.Error("a scoped credential got a second (TCP) allocation")
				}
			}
		})
	}
	// A TCP relay (RFC 6062) for a scoped credential over TCP.
	user, pass := livekitCredential(testSFUSecret, r.clock.Now(), time.Hour)
	c := newRawTCP(t, r.tcp, user, pass)
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{protoTCP, 0, 0, 0}}
	res, err := c.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport, stun.Fingerprint), 5*time.Second)
	if err != nil || c.nonce.GetFrom(res) != nil {
		t.Fatalf("unauthenticated Allocate: %v %v", res, err)
	}
	if res, err = c.roundTrip(c.authed(stun.MethodAllocate, transport), 5*time.Second); err != nil || res.Type.Class == stun.ClassSuccessResponse {
		t.Errorf("TCP relay for a scoped credential: %v %v, want an error", res, err)
	}

	figures := ""
	for _, st := range []string{scopeStagePermission, scopeStageChannelBind, scopeStageSend, scopeStageReceive, scopeStageTCP} {
		v := r.counter(t, "icebox_turn_scoped_refusals_total", "stage", st)
		figures += fmt.Sprintf(" %s=%v", st, v)
		if v == 0 {
			t.Errorf("icebox_turn_scoped_refusals_total{stage=%q} = 0", st)
		}
	}
	to := r.counter(t, "icebox_turn_scoped_relayed_bytes_total", "direction", "to_peer")
	from := r.counter(t, "icebox_turn_scoped_relayed_bytes_total", "direction", "from_peer")
	t.Logf("scoped refusals:%s; scoped bytes to_peer=%v from_peer=%v", figures, to, from)
	if to == 0 || from == 0 {
		t.Error("scoped relayed bytes not counted")
	}
}

// readData reads the next datagram the relay sends the client (a Data
// indication's DATA, or a ChannelData payload) until the deadline; nil on
// timeout.
func (r *rawTURN) readData(deadline time.Time) []byte {
	r.t.Helper()
	if r.udp != nil {
		buf := make([]byte, 1500)
		if err := r.udp.SetReadDeadline(deadline); err != nil {
			r.t.Fatal(err)
		}
		n, err := r.udp.Read(buf)
		if err != nil {
			return nil
		}
		return payloadOf(buf[:n])
	}
	// Over a stream, read one frame (STUN or padded ChannelData).
	if err := r.tcp.SetReadDeadline(deadline); err != nil {
		r.t.Fatal(err)
	}
	hdr := make([]byte, 4)
	if _, err := readFull(r.tcp, hdr); err != nil {
		return nil
	}
	size := int(binary.BigEndian.Uint16(hdr[2:4]))
	if hdr[0]&0xc0 == 0 {
		size += 16
	} else {
		size = (size + 3) &^ 3
	}
	rest := make([]byte, size)
	if _, err := readFull(r.tcp, rest); err != nil {
		return nil
	}
	return payloadOf(append(hdr, rest...))
}

func readFull(c net.Conn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// payloadOf returns a Data indication's DATA or a ChannelData payload;
// other messages give an empty slice.
func payloadOf(p []byte) []byte {
	if len(p) >= 4 && p[0]&0xc0 == 0x40 {
		n := int(binary.BigEndian.Uint16(p[2:4]))
		if 4+n <= len(p) {
			return p[4 : 4+n]
		}
		return []byte{}
	}
	m := &stun.Message{Raw: append([]byte(nil), p...)}
	if m.Decode() != nil {
		return []byte{}
	}
	d, err := m.Get(stun.AttrData)
	if err != nil {
		return []byte{}
	}
	return d
}

// TestSecuritySFUScopeWithPionClient: pion's TURN client (as a browser's
// would) with a LiveKit credential relays to the SFU both ways, and its
// writes to any other peer fail on CreatePermission's 403; an ordinary
// compat credential (a homeserver's "@user:server") keeps relaying where
// it always could; a compat-signed username with a participant-ID user is
// refused at Allocate.
func TestSecuritySFUScopeWithPionClient(t *testing.T) {
	b := newSFUBed(t, relayOptions{})
	r := b.r
	user, pass := livekitCredential(testSFUSecret, r.clock.Now(), 4*time.Hour)
	c := r.newClient(t, overUDP, user, pass, turn.RequestedAddressFamilyIPv4)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate with a LiveKit credential: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	exchange(t, relay, b.sfu)
	for _, to := range []netip.AddrPort{b.hostAP, b.publicAP, b.deniedAP} {
		_, err := relay.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(to))
		t.Logf("pion client WriteTo %v: %v", to, err)
		if err == nil {
			t.Errorf("WriteTo %v outside the scope succeeded; want CreatePermission's 403", to)
		}
	}

	// An ordinary compat credential, as Synapse mints it: unscoped.
	now := r.clock.Now()
	compatUser := fmt.Sprintf("%d:@alice:example.org", now.Add(time.Hour).Unix())
	cc := r.newClient(t, overUDP, compatUser, credentials.Password(testOldSecret, compatUser), turn.RequestedAddressFamilyIPv4)
	crelay, err := cc.Allocate()
	if err != nil {
		t.Fatalf("Allocate with a compat credential: %v", err)
	}
	t.Cleanup(func() { _ = crelay.Close() })
	exchange(t, crelay, b.host) // 127.0.0.2: outside the SFU scope, fine for it

	// A compat-signed LiveKit-shaped username gains nothing.
	paUser := fmt.Sprintf("%d:%s", now.Add(time.Hour).Unix(), guid.New(guid.ParticipantPrefix))
	pc := r.newClient(t, overUDP, paUser, credentials.Password(testOldSecret, paUser), turn.RequestedAddressFamilyIPv4)
	if _, err := pc.Allocate(); err == nil {
		t.Error("a compat credential with a participant-ID user allocated; want it refused")
	} else {
		t.Logf("compat credential with user %s: %v", paUser[len(paUser)-15:], err)
	}
	if v := r.counter(t, "icebox_turn_auth_total", "outcome", authBadHMAC); v == 0 {
		t.Error("the compat-signed participant username was not refused as a bad HMAC")
	}
}

// TestSecuritySFUFastPathScope: over UDP the fast path (the one the bench
// measures) relays a scoped client's channel to the SFU; a ChannelBind to
// another port of the SFU's address gets 403 and never reaches the fast
// path; and when the allow-list no longer holds the bound peer
// (SetSFUPeers: the SFU moved), the bound channel's data stops at once,
// both ways, though pion and the fast path keep the binding.
func TestSecuritySFUFastPathScope(t *testing.T) {
	b := newSFUBed(t, relayOptions{})
	r := b.r
	user, pass := livekitCredential(testSFUSecret, r.clock.Now(), 4*time.Hour)
	cb := &channelBed{t: t, r: r, c: newRawUDP(t, r.udp, user, pass), peer: b.sfu, peerAP: b.sfuAP}
	cb.relay = cb.c.allocate(protoUDP)
	if code := cb.request(stun.MethodChannelBind, channelNumber(testChannel), xorPeer(b.sfuAP)); code != 0 {
		t.Fatalf("ChannelBind to the SFU: %d", code)
	}
	if !cb.relayedBoth(5 * time.Second) {
		t.Fatal("the scoped channel relays nothing")
	}
	toPeer, toClient := r.srv.fastPathCounts()
	t.Logf("fast path while in scope: %d to the SFU, %d to the client", toPeer, toClient)
	if toPeer == 0 || toClient == 0 {
		t.Fatal("the scoped channel did not take the fast path")
	}

	if code := cb.request(stun.MethodChannelBind, channelNumber(testChannel+1), xorPeer(b.otherAP)); code != stun.CodeForbidden {
		t.Errorf("ChannelBind to another port of the SFU's address: %d, want 403", code)
	}
	rc := r.srv.relayConn(relayPort{network: netUDP4, port: cb.relay.Port()})
	if peers := rc.peers.Load(); peers != nil && (*peers)[b.otherAP] != nil {
		t.Error("the fast path learnt a binding the client was refused")
	}
	d := binary.BigEndian.AppendUint16(nil, testChannel+1)
	d = binary.BigEndian.AppendUint16(d, 4)
	d = append(d, "leak"...)
	if _, err := cb.c.udp.WriteTo(d, cb.c.server); err != nil {
		t.Fatal(err)
	}
	if cb.toPeer(2*time.Second) != true {
		t.Fatal("the SFU channel stopped")
	}
	if receive(b.other, 100*time.Millisecond, func(p []byte) bool { return bytes.Equal(p, []byte("leak")) }) {
		t.Error("ChannelData on the refused channel reached the other port")
	}

	// The SFU moves to the other port: the bound channel is out of scope.
	if err := r.srv.SetSFUPeers([]PeerRange{{Prefix: netip.PrefixFrom(b.otherAP.Addr(), 32), MinPort: b.otherAP.Port(), MaxPort: b.otherAP.Port()}}); err != nil {
		t.Fatal(err)
	}
	sendBefore := r.counter(t, "icebox_turn_scoped_refusals_total", "stage", scopeStageSend)
	recvBefore := r.counter(t, "icebox_turn_scoped_refusals_total", "stage", scopeStageReceive)
	leaked := 0
	for range 5 {
		if cb.toPeer(100 * time.Millisecond) {
			leaked++
		}
		if cb.toClient(100 * time.Millisecond) {
			leaked++
		}
	}
	sendRefused := r.counter(t, "icebox_turn_scoped_refusals_total", "stage", scopeStageSend) - sendBefore
	recvRefused := r.counter(t, "icebox_turn_scoped_refusals_total", "stage", scopeStageReceive) - recvBefore
	bound := rc.peers.Load() != nil && (*rc.peers.Load())[b.sfuAP] != nil
	t.Logf("after the scope moved: %d of 10 datagrams relayed (want 0), refused send=%v receive=%v, binding still on the fast path: %v",
		leaked, sendRefused, recvRefused, bound)
	if leaked != 0 {
		t.Errorf("%d datagrams relayed on a channel whose peer left the scope", leaked)
	}
	if sendRefused < 5 || recvRefused < 5 {
		t.Errorf("refusals counted: send %v, receive %v; want 5 each", sendRefused, recvRefused)
	}
	if !bound {
		t.Error("the binding is gone from the fast path; the test wants the scope to stop it, not an expiry")
	}
}

// TestSFUSecretRotationGrace: after a rotation the SFU (restarted) mints
// with the new SFU secret while participants still hold credentials of
// the old one; both allocate and relay to the SFU, over UDP and TCP,
// though the usernames name no secret (the guard learns which one signed
// each from its MESSAGE-INTEGRITY). Once the old secret has retired its
// credentials are refused.
func TestSFUSecretRotationGrace(t *testing.T) {
	b := newSFUBed(t, relayOptions{sfuKeys: []string{testSFUSecret, testOldSFUSecret}})
	r := b.r
	for _, tr := range []transport{overUDP, overTCP} {
		for _, secret := range []string{testOldSFUSecret, testSFUSecret} {
			user, pass := livekitCredential(secret, r.clock.Now(), 4*time.Hour)
			c := r.newClient(t, tr, user, pass, turn.RequestedAddressFamilyIPv4)
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("%s, %s secret: Allocate: %v", tr, map[bool]string{true: "old", false: "new"}[secret == testOldSFUSecret], err)
			}
			exchange(t, relay, b.sfu)
			_ = relay.Close()
		}
	}
	t.Logf("old and new SFU secrets both relay during the grace period (UDP, TCP)")

	retired, err := credentials.NewKeyring([]credentials.Secret{
		{KID: "k2", Key: testSecret}, {KID: "k1", Key: testOldSecret, Compat: true},
		{KID: "sfu2", Key: []byte(testSFUSecret), SFU: true},
	}, r.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	r.ring.Store(retired)
	user, pass := livekitCredential(testOldSFUSecret, r.clock.Now(), 4*time.Hour)
	c := r.newClient(t, overUDP, user, pass, turn.RequestedAddressFamilyIPv4)
	if _, err := c.Allocate(); err == nil {
		t.Error("a credential of the retired SFU secret allocated")
	}
}
