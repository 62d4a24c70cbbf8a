package turnserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

// blackHole returns a TCP address whose SYNs are dropped: a listener on
// 127.0.0.2 with a backlog of 0, never accepting, whose accept queue is
// filled first. Linux drops a SYN to a listener with a full accept queue
// (tcp_conn_request, LISTENOVERFLOWS) and the dialer retransmits it, as
// towards a firewalled host, until its timeout. It needs no root. 127.0.0.2
// rather than 127.0.0.1: the relay address (127.0.0.1) is a peer only on
// live relay ports.
func blackHole(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 2}), uint16(sa.(*syscall.SockaddrInet4).Port))
	// Fill the accept queue until a dial goes unanswered.
	for i := 0; ; i++ {
		if i == 16 {
			t.Fatal("black hole: the listener kept accepting")
		}
		c, err := net.DialTimeout("tcp4", addr.String(), 300*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return addr
			}
			t.Fatalf("black hole: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
}

// rawTURN is a hand-written TURN client over one UDP socket or TCP
// connection: it sends exactly the requests a test writes.
type rawTURN struct {
	t          *testing.T
	udp        *net.UDPConn // or
	tcp        net.Conn
	server     *net.UDPAddr
	user, pass string
	nonce      stun.Nonce
}

func newRawUDP(t *testing.T, server, user, pass string) *rawTURN {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	sa, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	return &rawTURN{t: t, udp: c, server: sa, user: user, pass: pass}
}

func newRawTCP(t *testing.T, server, user, pass string) *rawTURN {
	t.Helper()
	c, err := net.Dial("tcp4", server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawTURN{t: t, tcp: c, user: user, pass: pass}
}

func (r *rawTURN) send(m *stun.Message) error {
	if r.udp != nil {
		_, err := r.udp.WriteTo(m.Raw, r.server)
		return err
	}
	_, err := r.tcp.Write(m.Raw)
	return err
}

// read returns the next STUN message received before the deadline.
func (r *rawTURN) read(deadline time.Time) (*stun.Message, error) {
	if r.udp != nil {
		if err := r.udp.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		buf := make([]byte, 1500)
		for {
			n, err := r.udp.Read(buf)
			if err != nil {
				return nil, err
			}
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() == nil {
				return m, nil
			}
		}
	}
	if err := r.tcp.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	head := make([]byte, 20)
	if _, err := io.ReadFull(r.tcp, head); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint16(head[2:4]))
	if _, err := io.ReadFull(r.tcp, body); err != nil {
		return nil, err
	}
	m := &stun.Message{Raw: append(head, body...)}
	return m, m.Decode()
}

// roundTrip sends m and waits for its response until the deadline; over
// UDP it retransmits as a client would (RFC 8489 §6.2.1, RTO 250 ms).
func (r *rawTURN) roundTrip(m *stun.Message, within time.Duration) (*stun.Message, error) {
	deadline := time.Now().Add(within)
	rto := 250 * time.Millisecond
	for {
		if err := r.send(m); err != nil {
			return nil, err
		}
		wait := deadline
		if r.udp != nil {
			wait = minTime(deadline, time.Now().Add(rto))
			rto *= 2
		}
		for {
			res, err := r.read(wait)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
			case err != nil:
				return nil, err
			case res.TransactionID == m.TransactionID:
				return res, nil
			default:
				continue // an answer to an earlier request
			}
			break
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("no answer to %v within %v", m.Type, within)
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// authed builds a request of method with the client's credentials and the
// nonce of its last 401.
func (r *rawTURN) authed(method stun.Method, attrs ...stun.Setter) *stun.Message {
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	setters = append(setters, stun.NewUsername(r.user), stun.NewRealm(testRealm), r.nonce,
		stun.NewLongTermIntegrity(r.user, testRealm, r.pass), stun.Fingerprint)
	return stun.MustBuild(setters...)
}

// allocate makes an allocation relaying over transport proto (UDP or TCP)
// and returns its relayed address.
func (r *rawTURN) allocate(proto byte) netip.AddrPort {
	r.t.Helper()
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{proto, 0, 0, 0}}
	res, err := r.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		transport, stun.Fingerprint), 5*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.nonce.GetFrom(res); err != nil {
		r.t.Fatalf("no nonce in the answer to an unauthenticated Allocate: %v", res)
	}
	res, err = r.roundTrip(r.authed(stun.MethodAllocate, transport), 5*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	if res.Type.Class != stun.ClassSuccessResponse {
		r.t.Fatalf("Allocate: got %v (%d)", res.Type, errorCode(res))
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		r.t.Fatalf("Allocate: no XOR-RELAYED-ADDRESS: %v", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))
}

// connectMsg is an authenticated Connect towards peer.
func (r *rawTURN) connectMsg(peer netip.AddrPort) *stun.Message {
	return r.authed(stun.MethodConnect, xorPeer(peer))
}

// xorPeer is an XOR-PEER-ADDRESS attribute.
type xorPeer netip.AddrPort

func (p xorPeer) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(p)
	a := stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	return a.AddToAs(m, stun.AttrXORPeerAddress)
}

const (
	protoUDP = 17
	protoTCP = 6
)

// bystanderRound does one client's round trips on the relay's UDP listener:
// Binding, Allocate, CreatePermission, Refresh. It returns how many of them
// failed (no answer within pion's retransmissions, ≈ 8 s at RTO 200 ms).
func bystanderRound(t *testing.T, r *testRelay, user, pass string, peer net.Addr) (done, lost int) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Error(err)
		return 0, 1
	}
	defer pc.Close()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: r.udp, TURNServerAddr: r.udp, Conn: pc,
		Username: user, Password: pass, Realm: testRealm, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Error(err)
		return 0, 1
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Error(err)
		return 0, 1
	}
	count := func(err error) bool {
		done++
		if err != nil {
			lost++
			t.Logf("bystander %v: %v", pc.LocalAddr(), err)
		}
		return err == nil
	}
	_, err = c.SendBindingRequest()
	count(err)
	relay, err := c.Allocate()
	if !count(err) {
		return done, lost
	}
	defer relay.Close()
	count(c.CreatePermission(peer))
	count(stunRefresh(t, c, user, pass))
	return done, lost
}

// TestSecurityConnectUDPDoesNotFreezeListener: Connects sent over UDP,
// towards an address that drops SYNs, from several source ports and
// repeated as a client retransmits, are answered 400 at once, and the
// clients sharing the listener lose no transaction meanwhile. Before the
// fix pion dialed on the listener's read loop for 30 s per Connect.
func TestSecurityConnectUDPDoesNotFreezeListener(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	hole := blackHole(t)
	peer := newPeer(t)

	const attackers = 6
	var atk []*rawTURN
	for i := range attackers {
		cred := r.mint(t, fmt.Sprintf("mallory%d", i), "", time.Hour)
		a := newRawUDP(t, r.udp, cred.Username, cred.Password)
		a.allocate(protoUDP)
		atk = append(atk, a)
	}

	stop := make(chan struct{})
	var attackWG sync.WaitGroup
	var connects, refused400 atomic.Int64
	var attackErr atomic.Value
	for _, a := range atk {
		attackWG.Add(1)
		go func() {
			defer attackWG.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				connects.Add(1)
				res, err := a.roundTrip(a.connectMsg(hole), 5*time.Second)
				switch {
				case err != nil:
					attackErr.Store(fmt.Errorf("attacker %v: %w", a.udp.LocalAddr(), err))
					return
				case res.Type.Class != stun.ClassErrorResponse || errorCode(res) != stun.CodeBadRequest:
					attackErr.Store(fmt.Errorf("attacker %v: Connect over UDP got %v %d, want a 400 error",
						a.udp.LocalAddr(), res.Type, errorCode(res)))
					return
				}
				refused400.Add(1)
			}
		}()
	}

	// Bystanders: 4 clients at a time, 5 rounds each, during the attack.
	var done, lost atomic.Int64
	var wg sync.WaitGroup
	for i := range 4 {
		cred := r.mint(t, fmt.Sprintf("bystander%d", i), "", time.Hour)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				d, l := bystanderRound(t, r, cred.Username, cred.Password, peer.LocalAddr())
				done.Add(int64(d))
				lost.Add(int64(l))
			}
		}()
	}
	wg.Wait()
	close(stop)
	attackWG.Wait()

	t.Logf("bystander transactions: %d, lost: %d; attacker Connects sent: %d, answered 400: %d",
		done.Load(), lost.Load(), connects.Load(), refused400.Load())
	if err, _ := attackErr.Load().(error); err != nil {
		t.Error(err)
	}
	if lost.Load() != 0 {
		t.Errorf("%d of %d bystander transactions lost during the Connect attack, want 0", lost.Load(), done.Load())
	}
	if n := r.srv.dials.inFlightTotal(); n != 0 {
		t.Errorf("%d dials in flight after Connects over UDP, want none", n)
	}
}

// TestSecurityConnectOnUDPAllocationOverTCP: a TCP client holding a UDP
// allocation gets 447 for a Connect at once; nothing is dialed from the UDP
// relay port.
func TestSecurityConnectOnUDPAllocationOverTCP(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	hole := blackHole(t)
	cred := r.mint(t, "mallory", "", time.Hour)
	a := newRawTCP(t, r.tcp, cred.Username, cred.Password)
	a.allocate(protoUDP)
	res, err := a.roundTrip(a.connectMsg(hole), 10*time.Second)
	if err != nil {
		t.Fatalf("Connect on a UDP allocation: %v (want 447 at once)", err)
	}
	if errorCode(res) != stun.CodeConnTimeoutOrFailure {
		t.Fatalf("Connect on a UDP allocation: got %v %d, want 447", res.Type, errorCode(res))
	}
}

// TestSecurityConnectTCPBlackHoleBounded: Connects from TCP allocations
// towards a black hole dial on their own connections only — other clients,
// over UDP and TCP, are served meanwhile — and past the bound of dials in
// flight a Connect is answered 447 at once instead of dialing.
func TestSecurityConnectTCPBlackHoleBounded(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	const bound = 2
	r.srv.dials.setBounds(defaultConnectDialsPerAllocation, bound)
	hole := blackHole(t)

	var atk []*rawTURN
	for i := range bound + 1 {
		cred := r.mint(t, fmt.Sprintf("mallory%d", i), "", time.Hour)
		a := newRawTCP(t, r.tcp, cred.Username, cred.Password)
		a.allocate(protoTCP)
		atk = append(atk, a)
	}
	for _, a := range atk[:bound] {
		if err := a.send(a.connectMsg(hole)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the first Connects to dial", 5*time.Second, func() bool { return r.srv.dials.inFlightTotal() == bound })

	last := atk[bound]
	res, err := last.roundTrip(last.connectMsg(hole), 10*time.Second)
	if err != nil {
		t.Fatalf("Connect past the bound: %v (want 447 at once)", err)
	}
	if errorCode(res) != stun.CodeConnTimeoutOrFailure {
		t.Fatalf("Connect past the bound: got %v %d, want 447", res.Type, errorCode(res))
	}

	// Bystanders over UDP and TCP while the dials hang.
	peer := newPeer(t)
	cred := r.mint(t, "bystander", "", time.Hour)
	done, lost := bystanderRound(t, r, cred.Username, cred.Password, peer.LocalAddr())
	c := r.newClient(t, overTCP, cred.Username, cred.Password, turn.RequestedAddressFamilyIPv4)
	if _, err := c.SendBindingRequest(); err != nil {
		lost++
		t.Logf("TCP bystander Binding: %v", err)
	}
	relay, err := c.Allocate()
	if err != nil {
		lost++
		t.Logf("TCP bystander Allocate: %v", err)
	} else {
		_ = relay.Close()
	}
	done += 2
	t.Logf("dials in flight: %d (bound %d); bystander transactions: %d, lost: %d",
		r.srv.dials.inFlightTotal(), bound, done, lost)
	if lost != 0 {
		t.Errorf("%d bystander transactions lost while Connects dialed a black hole", lost)
	}
}

// TestDialLimits: the bounds of dials in flight, per allocation and in
// total, and slots coming back on release.
func TestDialLimits(t *testing.T) {
	l := newDialLimits(2, 3)
	a, b := relayPort{network: netTCP4, port: 40000}, relayPort{network: netTCP4, port: 40001}
	steps := []struct {
		op   string
		port relayPort
		want bool
	}{
		{"acquire", a, true},
		{"acquire", a, true},
		{"acquire", a, false}, // per allocation
		{"acquire", b, true},
		{"acquire", b, false}, // in total
		{"release", a, true},
		{"acquire", b, true},
		{"acquire", a, false}, // in total again
		{"release", b, true},
		{"release", b, true},
		{"acquire", a, true},
	}
	for i, s := range steps {
		if s.op == "release" {
			l.release(s.port)
			continue
		}
		if got := l.acquire(s.port); got != s.want {
			t.Fatalf("step %d: acquire(%v) = %v, want %v", i, s.port, got, s.want)
		}
	}
	if n := l.inFlightTotal(); n != 2 { // both on a
		t.Errorf("in flight: %d, want 2", n)
	}
}
