package main

// Attacks on the relay from a client namespace against `icebox serve` in a
// server namespace that has more addresses than its relay address, and a
// "LAN" namespace behind the server holding private and metadata addresses
// (issue 13). A raw TURN client (pion/stun messages, so each method is sent
// exactly as named: CreatePermission, ChannelBind, Send indication,
// ChannelData, RFC 6062 Connect) plays the attacker with valid credentials.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/icebox-voip/icebox/internal/netbed"
)

const (
	secRelay4  = "198.18.0.10"
	secSecond4 = "198.18.0.11"
	secLater4  = "198.18.0.12"
	secRelay6  = "2001:db8:1::10"
	secSecond6 = "2001:db8:1::11"
	secLater6  = "2001:db8:1::12"
	secClient4 = "198.18.0.20"
	secClient6 = "2001:db8:1::20"
	secProbe   = 2 * time.Second // one request's answer, or one probe's fate
)

// secBed: srv (icebox; eth0 with two IPv4 and two IPv6 addresses; lan0
// towards lan), cl (the attacker), lan (10.0.0.1, 172.16.0.1, 192.168.0.1,
// 169.254.169.254, fd00:ec2::254: what a relay must never reach).
type secBed struct {
	srv, cl, lan *netbed.NS
	in           *instance
	hc           *http.Client
}

func newSecBed(t *testing.T, extraTURN string) *secBed {
	t.Helper()
	b := netbed.New(t)
	sb := &secBed{srv: b.Namespace("srv"), cl: b.Namespace("cl"), lan: b.Namespace("lan")}
	netbed.Link(sb.srv, "eth0", secRelay4+"/24", sb.cl, "eth0", secClient4+"/24")
	sb.srv.AddAddr("eth0", secSecond4+"/24")
	sb.srv.AddAddr("eth0", secRelay6+"/64")
	// Listed first (the newest IPv6 address is), so it is the one
	// advertised; deprecated, so the kernel never picks it as the source
	// of a wildcard-bound socket: relays must bind it to send from it.
	sb.srv.AddAddr("eth0", secSecond6+"/64", "preferred_lft", "0")
	sb.cl.AddAddr("eth0", secClient6+"/64")
	netbed.Link(sb.srv, "lan0", "", sb.lan, "eth0", "")
	for _, p := range [][2]string{
		{"10.0.0.2/8", "10.0.0.1/8"}, {"172.16.0.2/12", "172.16.0.1/12"}, {"192.168.0.2/16", "192.168.0.1/16"},
		{"169.254.0.2/16", "169.254.169.254/16"}, {"fd00:ec2::2/64", "fd00:ec2::254/64"},
	} {
		sb.srv.AddAddr("lan0", p[0])
		sb.lan.AddAddr("eth0", p[1])
	}
	sb.hc = nsClient(sb.srv, time.Second)
	// bind_ip "::" on a host with two global addresses per family: the
	// relay must still send from the address it advertises. The bed's
	// ranges are in the default deny-list; listing them in allowed_peers
	// is what an operator does for a LAN — and must not open the host's
	// own addresses in it.
	sb.in = startIceboxIn(t, sb.srv, sb.hc, func(stateDir string) string {
		return fmt.Sprintf(`state_dir: %q
drain_timeout: 2s
log: {level: info, format: json}
turn:
  realm: sec.icebox.test
  listen:
    udp: ["%[2]s:3478", "[%[3]s]:3478"]
    tcp: ["%[2]s:3478", "[%[3]s]:3478"]
  udp_sockets: 1
  relay: {bind_ip: "::", min_port: %[4]d, max_port: %[5]d}
  allowed_peers: ["198.18.0.0/24", "2001:db8:1::/64"]
  quotas: {per_user: 100, per_call: 100, total: 1000}
%[6]scredentials:
  secrets:
    - {kid: k1, secret: %[7]q, compat: true}
http:
  listen: %[8]q
`, stateDir, secRelay4, secRelay6, relayMinPort, relayMaxPort, extraTURN, testSecret, nsHTTP)
	})
	return sb
}

// metric sums the series of name in the server's /metrics.
func (sb *secBed) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := sb.hc.Get("http://" + nsHTTP + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	m, err := metricSamples(resp.Body)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return sum(m, name)
}

// sinks are UDP and TCP services that record what reaches them.
type sinks struct {
	mu  sync.Mutex
	got []string // "udp 198.18.0.11:22 <payload>", "tcp 198.18.0.11:22"
}

func (s *sinks) add(what string) { s.mu.Lock(); s.got = append(s.got, what); s.mu.Unlock() }

func (s *sinks) count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.got {
		if strings.HasPrefix(g, prefix) {
			n++
		}
	}
	return n
}

// listen starts a UDP and a TCP service on each address inside ns.
func (s *sinks) listen(t *testing.T, ns *netbed.NS, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		var pc net.PacketConn
		var ln net.Listener
		if err := ns.Do(func() error {
			var err error
			if pc, err = net.ListenPacket("udp", a); err != nil {
				return err
			}
			ln, err = net.Listen("tcp", a)
			return err
		}); err != nil {
			t.Fatalf("listen %s in %s: %v", a, ns.Name, err)
		}
		t.Cleanup(func() { pc.Close(); ln.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				s.add("udp " + pc.LocalAddr().String() + " " + string(buf[:n]))
			}
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				s.add("tcp " + c.LocalAddr().String())
				c.Close()
			}
		}()
	}
}

// rawTURN is a TURN client built from STUN messages, over UDP or TCP.
type rawTURN struct {
	t           *testing.T
	pc          net.PacketConn // UDP
	server      net.Addr
	tc          net.Conn // TCP
	rd          *bufio.Reader
	user, pass  string
	realm       stun.Realm
	nonce       stun.Nonce
	relay       netip.AddrPort
	indications chan []byte // Data indications and ChannelData, for tests that read them
}

// dialTURN opens a client socket inside ns ("udp" or "tcp") towards server.
func dialTURN(t *testing.T, ns *netbed.NS, network string, server netip.AddrPort) *rawTURN {
	t.Helper()
	user, pass := restCredential(testSecret, "mallory", time.Now().Add(time.Hour))
	c := &rawTURN{t: t, user: user, pass: pass}
	err := ns.Do(func() error {
		var err error
		if network == "udp" {
			c.pc, err = net.ListenPacket("udp", ":0")
			c.server = net.UDPAddrFromAddrPort(server)
			return err
		}
		c.tc, err = net.DialTimeout("tcp", server.String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("client socket in %s: %v", ns.Name, err)
	}
	if c.tc != nil {
		c.rd = bufio.NewReader(c.tc)
		t.Cleanup(func() { c.tc.Close() })
	} else {
		t.Cleanup(func() { c.pc.Close() })
	}
	return c
}

func (c *rawTURN) write(b []byte) error {
	if c.tc != nil {
		_, err := c.tc.Write(b)
		return err
	}
	_, err := c.pc.WriteTo(b, c.server)
	return err
}

// read returns one STUN message or ChannelData frame.
func (c *rawTURN) read(deadline time.Time) ([]byte, error) {
	if c.tc != nil {
		_ = c.tc.SetReadDeadline(deadline)
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(c.rd, hdr); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint16(hdr[2:4]))
		if hdr[0]&0xc0 == 0 {
			n += 16 // a STUN header's rest
		} else {
			n = (n + 3) &^ 3 // ChannelData over TCP is padded
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(c.rd, body); err != nil {
			return nil, err
		}
		return append(hdr, body...), nil
	}
	_ = c.pc.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	n, _, err := c.pc.ReadFrom(buf)
	return buf[:n], err
}

// roundTrip sends m (again every 250 ms on UDP) and returns the response
// with its transaction ID.
func (c *rawTURN) roundTrip(m *stun.Message) (*stun.Message, error) {
	deadline := time.Now().Add(secProbe)
	for time.Now().Before(deadline) {
		if err := c.write(m.Raw); err != nil {
			return nil, err
		}
		resend := time.Now().Add(250 * time.Millisecond)
		if c.tc != nil {
			resend = deadline
		}
		for {
			b, err := c.read(resend)
			if err != nil {
				break
			}
			res := &stun.Message{Raw: b}
			if res.Decode() != nil || res.TransactionID != m.TransactionID {
				if c.indications != nil {
					select {
					case c.indications <- b:
					default:
					}
				}
				continue
			}
			return res, nil
		}
	}
	return nil, errors.New("no response")
}

// request sends an authenticated request (learning realm and nonce from a
// 401 or 438 first) and returns the response.
func (c *rawTURN) request(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for range 3 {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		if c.realm != nil {
			setters = append(setters, stun.NewUsername(c.user), c.realm, c.nonce,
				stun.NewLongTermIntegrity(c.user, c.realm.String(), c.pass))
		}
		m, err := stun.Build(append(setters, stun.Fingerprint)...)
		if err != nil {
			return nil, err
		}
		res, err := c.roundTrip(m)
		if err != nil {
			return nil, err
		}
		if code := errorCode(res); code == 401 || code == 438 {
			if c.realm != nil && code == 401 {
				return res, nil
			}
			if err := c.realm.GetFrom(res); err != nil {
				return nil, fmt.Errorf("%d without realm", code)
			}
			if err := c.nonce.GetFrom(res); err != nil {
				return nil, fmt.Errorf("%d without nonce", code)
			}
			continue
		}
		return res, nil
	}
	return nil, errors.New("authentication loop")
}

func errorCode(m *stun.Message) int {
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return -1
	}
	return int(ec.Code)
}

// allocate makes an allocation: proto 17 (UDP) or 6 (TCP, RFC 6062), of
// the IPv6 family if v6.
func (c *rawTURN) allocate(proto byte, v6 bool) {
	c.t.Helper()
	attrs := []stun.Setter{stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{proto, 0, 0, 0}}}
	if v6 {
		attrs = append(attrs, stun.RawAttribute{Type: stun.AttrRequestedAddressFamily, Value: []byte{2, 0, 0, 0}})
	}
	res, err := c.request(stun.MethodAllocate, attrs...)
	if err != nil || errorCode(res) != 0 {
		c.t.Fatalf("Allocate (proto %d, v6 %v): %v %v", proto, v6, err, res)
	}
	var relay stun.XORMappedAddress
	if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		c.t.Fatalf("Allocate: no relayed address: %v", err)
	}
	ip, _ := netip.AddrFromSlice(relay.IP)
	c.relay = netip.AddrPortFrom(ip.Unmap(), uint16(relay.Port))
}

// peerAttr is an XOR-PEER-ADDRESS exactly as given: an IPv4-mapped
// address stays a 16-byte IPv6 one on the wire.
type peerAttr netip.AddrPort

func (p peerAttr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	var raw []byte
	var fam byte = 1
	if ap.Addr().Is4() {
		a := ap.Addr().As4()
		raw = a[:]
	} else {
		a := ap.Addr().As16()
		raw, fam = a[:], 2
	}
	v := make([]byte, 4+len(raw))
	v[1] = fam
	binary.BigEndian.PutUint16(v[2:4], ap.Port()^0x2112)
	var key [16]byte
	binary.BigEndian.PutUint32(key[0:4], 0x2112A442)
	copy(key[4:], m.TransactionID[:])
	for i := range raw {
		v[4+i] = raw[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

func (c *rawTURN) permission(peer netip.AddrPort) int {
	res, err := c.request(stun.MethodCreatePermission, peerAttr(peer))
	if err != nil {
		return -1
	}
	return errorCode(res)
}

func (c *rawTURN) channelBind(peer netip.AddrPort, ch uint16) int {
	res, err := c.request(stun.MethodChannelBind, peerAttr(peer),
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(ch >> 8), byte(ch), 0, 0}})
	if err != nil {
		return -1
	}
	return errorCode(res)
}

func (c *rawTURN) connect(peer netip.AddrPort) int {
	res, err := c.request(stun.MethodConnect, peerAttr(peer))
	if err != nil {
		return -1
	}
	return errorCode(res)
}

func (c *rawTURN) send(peer netip.AddrPort, data string) {
	c.t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication), peerAttr(peer),
		stun.RawAttribute{Type: stun.AttrData, Value: []byte(data)}, stun.Fingerprint)
	if err := c.write(m.Raw); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawTURN) channelData(ch uint16, data string) {
	c.t.Helper()
	b := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(data)))
	if err := c.write(append(b, data...)); err != nil {
		c.t.Fatal(err)
	}
}

// relayToRelay: a's relay sends to b's; b must get it, from a's relay
// address.
func relayToRelay(t *testing.T, a, b *rawTURN) {
	t.Helper()
	if code := a.permission(b.relay); code != 0 {
		t.Fatalf("CreatePermission(%s) for relay to relay: %d", b.relay, code)
	}
	if code := b.permission(a.relay); code != 0 {
		t.Fatalf("CreatePermission(%s) for relay to relay: %d", a.relay, code)
	}
	b.indications = make(chan []byte, 16)
	ok := waitFor(5*time.Second, func() bool {
		a.send(b.relay, "relay to relay")
		// b reads only inside roundTrip; a Binding round trip reads
		// whatever arrived meanwhile.
		_, _ = b.roundTrip(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint))
		for {
			select {
			case raw := <-b.indications:
				m := &stun.Message{Raw: raw}
				if m.Decode() != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
					continue
				}
				var from stun.XORMappedAddress
				if from.GetFromAs(m, stun.AttrXORPeerAddress) != nil {
					continue
				}
				ip, _ := netip.AddrFromSlice(from.IP)
				if got := netip.AddrPortFrom(ip.Unmap(), uint16(from.Port)); got != a.relay {
					t.Errorf("relay to relay: datagram from %s, want from the advertised relay address %s", got, a.relay)
				}
				return true
			default:
				return false
			}
		}
	})
	if !ok {
		t.Fatalf("relay to relay: %s heard nothing from %s", b.relay, a.relay)
	}
}

// relayToClient: a datagram relayed to a peer at ip in ns leaves from the
// relay address c was told (bind_ip "::" on a host with two addresses per
// family must not let the kernel pick another source).
func relayToClient(t *testing.T, ns *netbed.NS, c *rawTURN, ip string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if code := c.permission(peer); code != 0 {
		t.Fatalf("CreatePermission(%s): %d", peer, code)
	}
	buf := make([]byte, 1500)
	var from net.Addr
	if !waitFor(5*time.Second, func() bool {
		c.send(peer, "to the client")
		_ = pc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var err error
		_, from, err = pc.ReadFrom(buf)
		return err == nil
	}) {
		t.Fatalf("nothing relayed from %s to %s", c.relay, peer)
	}
	got := from.(*net.UDPAddr).AddrPort()
	if got = netip.AddrPortFrom(got.Addr().Unmap(), got.Port()); got != c.relay {
		t.Errorf("relayed datagram left from %s, the client was told %s", got, c.relay)
	} else {
		t.Logf("relayed datagram left from the advertised relay address %s", got)
	}
}

// TestSecurityHostAddresses: services on the server's second IPv4 and
// IPv6 addresses (ports 22, 9999 and 40500, inside the relay range) are
// unreachable through the relay by Send indication, ChannelData and RFC
// 6062 Connect, though allowed_peers covers them; relay to relay still
// works and leaves from the advertised relay address; an address added
// after start is protected within the tracking interval.
func TestSecurityHostAddresses(t *testing.T) {
	t.Parallel()
	sb := newSecBed(t, "")
	server4 := netip.MustParseAddrPort(secRelay4 + ":3478")
	server6 := netip.MustParseAddrPort("[" + secRelay6 + "]:3478")

	// Relay to relay, per family, from the advertised address.
	var relays []*rawTURN
	for _, srv := range []netip.AddrPort{server4, server4, server6, server6} {
		c := dialTURN(t, sb.cl, "udp", srv)
		c.allocate(17, srv.Addr().Is6())
		relays = append(relays, c)
	}
	// Which of the two addresses per family is advertised is the host's
	// choice (the first listed); the other is the "second" one.
	second := map[string]string{secRelay4: secSecond4, secSecond4: secRelay4, secRelay6: secSecond6, secSecond6: secRelay6}
	second4, second6 := second[relays[0].relay.Addr().String()], second[relays[2].relay.Addr().String()]
	if second4 == "" || second6 == "" {
		t.Fatalf("relays advertised on %s and %s, want addresses of eth0", relays[0].relay, relays[2].relay)
	}
	relayToRelay(t, relays[0], relays[1])
	relayToRelay(t, relays[2], relays[3])
	relayToClient(t, sb.cl, relays[0], secClient4)
	relayToClient(t, sb.cl, relays[2], secClient6)

	var sk sinks
	var targets []netip.AddrPort
	for _, ip := range []string{second4, second6} {
		for _, port := range []int{22, 9999, 40500} {
			ap := netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
			targets = append(targets, ap)
			sk.listen(t, sb.srv, ap.String())
		}
	}
	leaked := 0
	var table strings.Builder
	ch := uint16(0x4000)
	for _, target := range targets {
		v6 := target.Addr().Is6()
		c := relays[0]
		if v6 {
			c = relays[2]
		}
		for _, method := range []string{"send", "channeldata"} {
			tag := method + " " + target.String()
			before := sb.metric(t, "icebox_turn_peer_denied_total")
			if code := c.permission(target); code != 0 {
				fmt.Fprintf(&table, "%-28s %-12s refused at CreatePermission (%d)\n", target, method, code)
				continue
			}
			if method == "send" {
				c.send(target, tag)
			} else {
				ch++
				if code := c.channelBind(target, ch); code != 0 {
					fmt.Fprintf(&table, "%-28s %-12s refused at ChannelBind (%d)\n", target, method, code)
					continue
				}
				c.channelData(ch, tag)
			}
			// The server says it denied the datagram, or the service got it.
			var denied bool
			waitFor(secProbe, func() bool {
				denied = sb.metric(t, "icebox_turn_peer_denied_total") > before
				return denied || sk.count("udp "+target.String()+" "+tag) > 0
			})
			result := "refused"
			if !denied || sk.count("udp "+target.String()+" "+tag) > 0 {
				result, leaked = "LEAKED", leaked+1
			}
			fmt.Fprintf(&table, "%-28s %-12s %s\n", target, method, result)
		}
		// RFC 6062 Connect from a TCP allocation of the target's family.
		tc := dialTURN(t, sb.cl, "tcp", map[bool]netip.AddrPort{false: server4, true: server6}[v6])
		tc.allocate(6, v6)
		code := tc.connect(target)
		result := fmt.Sprintf("refused (%d)", code)
		if code == 0 || sk.count("tcp "+target.String()) > 0 {
			result, leaked = "LEAKED", leaked+1
		}
		fmt.Fprintf(&table, "%-28s %-12s %s\n", target, "connect", result)
	}
	t.Logf("the server's second addresses through the relay (target / method / result):\n%s%d leaked", table.String(), leaked)
	if leaked > 0 {
		t.Errorf("%d probes reached a service on the server's own addresses", leaked)
	}

	t.Run("address added after start", func(t *testing.T) {
		for _, cidr := range []string{secLater4 + "/24", secLater6 + "/64"} {
			added := time.Now()
			sb.srv.AddAddr("eth0", cidr)
			ip, _, _ := strings.Cut(cidr, "/")
			target := netip.AddrPortFrom(netip.MustParseAddr(ip), 9999)
			sk.listen(t, sb.srv, target.String())
			c := relays[0]
			if target.Addr().Is6() {
				c = relays[2]
			}
			if code := c.permission(target); code != 0 {
				t.Fatalf("CreatePermission(%s): %d", target, code)
			}
			// Probe until the server denies one: then the new address is
			// tracked, and no later probe may arrive.
			before := sb.metric(t, "icebox_turn_peer_denied_total")
			protected := waitFor(10*time.Second, func() bool {
				c.send(target, "probe")
				return sb.metric(t, "icebox_turn_peer_denied_total") > before
			})
			if !protected {
				t.Fatalf("%s: sends still relayed 10s after the address was added (%d arrived)", target, sk.count("udp "+target.String()))
			}
			early := sk.count("udp " + target.String())
			tracked := time.Since(added)
			denied := sb.metric(t, "icebox_turn_peer_denied_total")
			for range 5 {
				c.send(target, "after")
			}
			waitFor(secProbe, func() bool { return sb.metric(t, "icebox_turn_peer_denied_total") >= denied+5 })
			if n := sk.count("udp " + target.String() + " after"); n > 0 {
				t.Errorf("%s: %d sends arrived after the address was tracked", target, n)
			}
			t.Logf("%s added: protected %v later; %d probes arrived before", target.Addr(), tracked.Round(time.Millisecond), early)
		}
	})
}

// TestSecurityPeerForms: the Enable Security checklist's forms (the
// turn-probe cases of coturn-secure-config) over CreatePermission,
// ChannelBind, Send indication and RFC 6062 Connect: every one refused.
// Services listen on the loopback addresses and the LAN addresses, so a
// form that slipped through would be seen arriving.
func TestSecurityPeerForms(t *testing.T) {
	t.Parallel()
	sb := newSecBed(t, "")
	server4 := netip.MustParseAddrPort(secRelay4 + ":3478")
	server6 := netip.MustParseAddrPort("[" + secRelay6 + "]:3478")
	const port = 9999
	var sk sinks
	// Dual-stack wildcards: loopback, 0.0.0.0 and every LAN address.
	sk.listen(t, sb.srv, "[::]:9999")
	sk.listen(t, sb.lan, "[::]:9999")
	control := sinks{}
	control.listen(t, sb.cl, secClient4+":9999", "["+secClient6+"]:9999")

	var table strings.Builder
	leaked := 0
	row := func(form, method, result string) {
		fmt.Fprintf(&table, "%-27s %-17s %s\n", form, method, result)
		if strings.HasPrefix(result, "LEAKED") {
			leaked++
		}
	}

	// Unauthenticated Allocate.
	c := dialTURN(t, sb.cl, "udp", server4)
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}, stun.Fingerprint)
	res, err := c.roundTrip(m)
	if err != nil || errorCode(res) != 401 {
		row("(no credentials)", "Allocate", fmt.Sprintf("LEAKED: %v %v", err, res))
	} else {
		row("(no credentials)", "Allocate", "refused (401)")
	}

	forms := []string{
		"127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "fd00:ec2::254",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::", "0.0.0.0",
	}
	clients := map[bool]*rawTURN{}
	for _, v6 := range []bool{false, true} {
		srv := map[bool]netip.AddrPort{false: server4, true: server6}[v6]
		clients[v6] = dialTURN(t, sb.cl, "udp", srv)
		clients[v6].allocate(17, v6)
	}
	ch := uint16(0x4000)
	type probe struct {
		form string
		v6   bool // over an allocation of the IPv6 family
	}
	var probes []probe
	for _, form := range forms {
		ip := netip.MustParseAddr(form)
		probes = append(probes, probe{form, !ip.Is4()})
		if ip.Is4In6() {
			// Also over an IPv4 allocation, where the address family
			// check (443) does not stop it first.
			probes = append(probes, probe{form, false})
		}
	}
	for _, pr := range probes {
		ip := netip.MustParseAddr(pr.form)
		peer := netip.AddrPortFrom(ip, port)
		v6 := pr.v6
		form := pr.form
		if ip.Is4In6() {
			form += map[bool]string{false: " (v4)", true: " (v6)"}[v6]
		}
		c := clients[v6]
		if code := c.permission(peer); code == 0 {
			row(form, "CreatePermission", "LEAKED (granted)")
		} else {
			row(form, "CreatePermission", fmt.Sprintf("refused (%d)", code))
		}
		ch++
		if code := c.channelBind(peer, ch); code == 0 {
			row(form, "ChannelBind", "LEAKED (granted)")
			c.channelData(ch, "channeldata "+form)
		} else {
			row(form, "ChannelBind", fmt.Sprintf("refused (%d)", code))
		}
		c.send(peer, "send "+form)
		tc := dialTURN(t, sb.cl, "tcp", map[bool]netip.AddrPort{false: server4, true: server6}[v6])
		tc.allocate(6, v6)
		if code := tc.connect(peer); code == 0 {
			row(form, "Connect", "LEAKED (connected)")
		} else {
			row(form, "Connect", fmt.Sprintf("refused (%d)", code))
		}
	}
	// A control datagram to the client, sent after every probe through
	// the same relays, arrives: what the probes sent would have arrived
	// before it.
	for _, v6 := range []bool{false, true} {
		to := netip.MustParseAddrPort(secClient4 + ":9999")
		if v6 {
			to = netip.MustParseAddrPort("[" + secClient6 + "]:9999")
		}
		if code := clients[v6].permission(to); code != 0 {
			t.Fatalf("CreatePermission(%s): %d", to, code)
		}
		if !waitFor(5*time.Second, func() bool {
			clients[v6].send(to, "control")
			return control.count("udp "+to.String()+" control") > 0
		}) {
			t.Fatalf("the control datagram to %s never arrived", to)
		}
	}
	sk.mu.Lock()
	arrived := append([]string(nil), sk.got...)
	sk.mu.Unlock()
	for _, g := range arrived {
		row("(arrived)", "Send/ChannelData", "LEAKED: "+g)
	}
	if len(arrived) == 0 {
		row("(every form)", "Send/ChannelData", "nothing arrived")
	}
	t.Logf("peer forms (form / method / result):\n%sleaked: %d", table.String(), leaked)
	if leaked > 0 {
		t.Errorf("%d probes leaked", leaked)
	}
}

// TestSecurityReflectionPerPrefix: 64 source addresses of one IPv6 /64 send
// unauthenticated Allocates (answered 401) and Binding requests; what comes
// back is bounded by one /64's budgets (turn.error_* and turn.binding_*
// defaults), so the amplification factor (bytes out / bytes in) stays
// below 1.
func TestSecurityReflectionPerPrefix(t *testing.T) {
	t.Parallel()
	sb := newSecBed(t, "")
	const sources, perSource = 64, 10
	var conns []net.PacketConn
	for i := range sources {
		ip := fmt.Sprintf("2001:db8:1::1:%x", i)
		sb.cl.AddAddr("eth0", ip+"/64")
		var pc net.PacketConn
		if err := sb.cl.Do(func() error {
			var err error
			pc, err = net.ListenPacket("udp6", "["+ip+"]:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		conns = append(conns, pc)
	}
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[" + secRelay6 + "]:3478"))
	var in, out, errors401, bindings int
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for _, pc := range conns {
		wg.Go(func() {
			buf := make([]byte, 1500)
			for {
				// Quiet for this long: every answer that will come has come.
				_ = pc.SetReadDeadline(time.Now().Add(time.Second))
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				m := &stun.Message{Raw: buf[:n]}
				if m.Decode() != nil {
					continue
				}
				mu.Lock()
				out += n
				switch {
				case m.Type.Class == stun.ClassErrorResponse:
					errors401++
				case m.Type == stun.BindingSuccess:
					bindings++
				}
				mu.Unlock()
			}
		})
	}
	for range perSource {
		for _, pc := range conns {
			for _, m := range []*stun.Message{
				stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint),
				stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
					stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}, stun.Fingerprint),
			} {
				if _, err := pc.WriteTo(m.Raw, server); err != nil {
					t.Fatal(err)
				}
				in += len(m.Raw)
			}
		}
	}
	sent := time.Since(start)
	wg.Wait()
	secs := sent.Seconds() + 1 // the quiet second at the end refills too
	factor := float64(out) / float64(in)
	t.Logf("%d sources of one /64, %d Allocates + %d Bindings each in %v: %d 401s, %d Binding responses; bytes in %d, out %d: amplification %.2f×",
		sources, perSource, perSource, sent.Round(time.Millisecond), errors401, bindings, in, out, factor)
	if maxErr := 20 + int(5*secs) + 2; errors401 > maxErr {
		t.Errorf("%d error responses to one /64, want <= %d (turn.error_burst 20 + 5/s)", errors401, maxErr)
	}
	if maxBind := 200 + int(50*secs) + 2; bindings > maxBind {
		t.Errorf("%d Binding responses to one /64, want <= %d (turn.binding_burst 200 + 50/s)", bindings, maxBind)
	}
	if factor >= 1 {
		t.Errorf("amplification %.2f×, want < 1", factor)
	}
	if got := sb.metric(t, "icebox_turn_binding_responses_dropped_total"); got == 0 {
		t.Error("icebox_turn_binding_responses_dropped_total = 0")
	}
}
