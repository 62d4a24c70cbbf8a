package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// fastPathBed is one allocation with one bound channel on a relay engine,
// without pion: a client socket, the listener, the relay socket, a peer.
type fastPathBed struct {
	client, peer *net.UDPConn
	listener     netip.AddrPort
	relay        netip.AddrPort
	channel      uint16
}

// With scoped, the allocation is an SFU credential's and the peer its
// allow-list.
// With limited, the allocation is under all three bandwidth limits, set so
// high that nothing is dropped: what the buckets cost per datagram.
func newFastPathBed(b *testing.B, scoped, limited bool) *fastPathBed {
	b.Helper()
	policy, err := NewPolicy(PolicyConfig{AllowLoopback: true, MinPort: 40000, MaxPort: 40999})
	if err != nil {
		b.Fatal(err)
	}
	s := testEngine(b, 1, DefaultRecvBatch, policy)
	el := testListener(b, s)
	lsock := el.sock
	fl := newFastListener(el, s)
	rsock, err := udpengine.Open(netip.MustParseAddrPort("127.0.0.1:0"), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	a := &allocation{scoped: scoped, user: "bench"}
	if limited {
		const huge = 1 << 50 // bits per second
		bw, err := newLimiter(Bandwidth{PerAllocation: huge, PerUser: huge, Total: huge})
		if err != nil {
			b.Fatal(err)
		}
		bw.registerMetrics(s.m)
		s.reg.bw = bw
		bw.attach(a)
	}
	rc := newRelayPacketConn(s, a, relayPort{}, rsock)

	bed := &fastPathBed{listener: lsock.LocalAddr(), relay: rsock.LocalAddr(), channel: 0x4001}
	for _, c := range []**net.UDPConn{&bed.client, &bed.peer} {
		if *c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			b.Fatal(err)
		}
		if err := (*c).SetReadBuffer(4 << 20); err != nil {
			b.Fatal(err)
		}
	}
	clientAP := bed.client.LocalAddr().(*net.UDPAddr).AddrPort()
	bd := &binding{channel: bed.channel, peer: bed.peer.LocalAddr().(*net.UDPAddr).AddrPort(), clientAP: clientAP,
		ln: fl, relay: rc, expires: time.Now().Add(time.Hour)}
	fc := &fastClient{relay: rc}
	fc.channels.Store(&map[uint16]*binding{bed.channel: bd})
	fl.clients.Store(clientAP, fc)
	rc.bind(bd)
	rc.permit(bd.peer.Addr(), 1) // as pion's permission event would
	if scoped {
		if err := s.SetSFUPeers([]PeerRange{{Prefix: netip.PrefixFrom(bd.peer.Addr(), 32), MinPort: bd.peer.Port(), MaxPort: bd.peer.Port()}}); err != nil {
			b.Fatal(err)
		}
	}

	if err := s.engine.AddTo(0, lsock, fl); err != nil {
		b.Fatal(err)
	}
	if err := s.engine.Add(rsock, rc); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		bed.client.Close()
		bed.peer.Close()
		rsock.Close() // rc.Close would release an allocation no registry holds
	})
	return bed
}

// burst is how many datagrams a benchmark sends before reading them back:
// they fit the socket buffers, so none is lost.
const burst = 64

// BenchmarkFastPathToClient: a peer's datagram, received by the engine on
// the relay socket and sent to the client as ChannelData (sendmmsg); per
// datagram, sender and receiver included. The engine allocates nothing.
func BenchmarkFastPathToClient(b *testing.B) { benchFastPathToClient(b, false, false) }

// BenchmarkFastPathToClientLimited: the same under bandwidth limits (per
// allocation, per user, total) that admit everything.
func BenchmarkFastPathToClientLimited(b *testing.B) { benchFastPathToClient(b, false, true) }

// BenchmarkFastPathToClientScoped: the same for a scoped (SFU credential)
// allocation, whose peer is checked against the allow-list.
func BenchmarkFastPathToClientScoped(b *testing.B) { benchFastPathToClient(b, true, false) }

func benchFastPathToClient(b *testing.B, scoped, limited bool) {
	bed := newFastPathBed(b, scoped, limited)
	payload := make([]byte, 100)
	buf := make([]byte, 1600)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		for range burst {
			if _, err := bed.peer.WriteToUDPAddrPort(payload, bed.relay); err != nil {
				b.Fatal(err)
			}
		}
		for range burst {
			n, _, err := bed.client.ReadFromUDPAddrPort(buf)
			if err != nil {
				b.Fatal(err)
			}
			if n != 4+len(payload) || binary.BigEndian.Uint16(buf[0:2]) != bed.channel {
				b.Fatalf("client got %d bytes, channel %#x", n, binary.BigEndian.Uint16(buf[0:2]))
			}
		}
	}
}

// BenchmarkFastPathToPeer: the client's ChannelData, received by the engine
// on the listener and sent to the peer from the relay socket (policy
// checked, counted); per datagram, sender and receiver included.
func BenchmarkFastPathToPeer(b *testing.B) { benchFastPathToPeer(b, false, false) }

// BenchmarkFastPathToPeerLimited: the same under bandwidth limits that
// admit everything.
func BenchmarkFastPathToPeerLimited(b *testing.B) { benchFastPathToPeer(b, false, true) }

// BenchmarkFastPathToPeerScoped: the same for a scoped allocation.
func BenchmarkFastPathToPeerScoped(b *testing.B) { benchFastPathToPeer(b, true, false) }

func benchFastPathToPeer(b *testing.B, scoped, limited bool) {
	bed := newFastPathBed(b, scoped, limited)
	msg := make([]byte, 4+100)
	binary.BigEndian.PutUint16(msg[0:2], bed.channel)
	binary.BigEndian.PutUint16(msg[2:4], 100)
	buf := make([]byte, 1600)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		for range burst {
			if _, err := bed.client.WriteToUDPAddrPort(msg, bed.listener); err != nil {
				b.Fatal(err)
			}
		}
		for range burst {
			n, from, err := bed.peer.ReadFromUDPAddrPort(buf)
			if err != nil {
				b.Fatal(err)
			}
			if n != 100 || from != bed.relay {
				b.Fatalf("peer got %d bytes from %v, want 100 from the relay %v", n, from, bed.relay)
			}
		}
	}
}

// TestEngineSendsToClientsOnSeveralListeners: one loop relays peers'
// datagrams to clients behind two listener sockets in the same rounds; each
// client gets all of its own, in order, from its own listener.
func TestEngineSendsToClientsOnSeveralListeners(t *testing.T) {
	s := testEngine(t, 1, DefaultRecvBatch, nil)
	peer := newPeer(t)
	type side struct {
		listener netip.AddrPort
		relay    netip.AddrPort
		client   *net.UDPConn
	}
	var sides []side
	for i := range 2 {
		el := testListener(t, s)
		lsock := el.sock
		fl := newFastListener(el, s)
		rsock, err := udpengine.Open(netip.MustParseAddrPort("127.0.0.1:0"), 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer rsock.Close()
		rc := newRelayPacketConn(s, &allocation{}, relayPort{}, rsock)
		client := newPeer(t)
		if err := client.SetReadBuffer(4 << 20); err != nil {
			t.Fatal(err)
		}
		rc.bind(&binding{channel: uint16(0x4000 + i), peer: peer.LocalAddr().(*net.UDPAddr).AddrPort(),
			clientAP: client.LocalAddr().(*net.UDPAddr).AddrPort(), ln: fl, relay: rc, expires: time.Now().Add(time.Hour)})
		rc.permit(peer.LocalAddr().(*net.UDPAddr).AddrPort().Addr(), 1) // as pion's permission event would
		if err := s.engine.AddTo(0, lsock, fl); err != nil {
			t.Fatal(err)
		}
		if err := s.engine.Add(rsock, rc); err != nil {
			t.Fatal(err)
		}
		sides = append(sides, side{listener: lsock.LocalAddr(), relay: rsock.LocalAddr(), client: client})
	}

	const each = 200
	for n := range each {
		for _, sd := range sides {
			if _, err := peer.WriteToUDPAddrPort([]byte{byte(n), byte(n >> 8)}, sd.relay); err != nil {
				t.Fatal(err)
			}
		}
	}
	buf := make([]byte, 64)
	for i, sd := range sides {
		_ = sd.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		for n := range each {
			got, from, err := sd.client.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("client %d: datagram %d: %v", i, n, err)
			}
			if from != sd.listener {
				t.Fatalf("client %d: datagram from %v, want its listener %v", i, from, sd.listener)
			}
			if got != 6 || binary.BigEndian.Uint16(buf[0:2]) != uint16(0x4000+i) || int(buf[4])|int(buf[5])<<8 != n {
				t.Fatalf("client %d: datagram %d is % x", i, n, buf[:got])
			}
		}
	}
}
