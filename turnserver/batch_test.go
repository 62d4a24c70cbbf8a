package turnserver

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// listenBatch binds a loopback UDP socket of network and wraps it for batch
// receive.
func listenBatch(t testing.TB, network, addr string, batch int) (net.PacketConn, *net.UDPConn) {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		// A host without IPv6 on loopback cannot run the IPv6 cases; CI can.
		if os.Getenv("CI") == "true" {
			t.Fatalf("listen %s %s: %v", network, addr, err)
		}
		t.Skipf("listen %s %s: %v (not under CI=true)", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return newBatchConn(pc, batch), pc.(*net.UDPConn)
}

// TestBatchConnReadsEveryDatagram: datagrams queued on the socket come out
// of ReadFrom one by one, in order, whole, with their sources — across
// batch boundaries, on IPv4, IPv6 and dual-stack sockets; a datagram too
// long for the batch buffers is dropped, not handed over cut.
func TestBatchConnReadsEveryDatagram(t *testing.T) {
	for _, tc := range []struct{ name, network, listen, sendNet, sendTo string }{
		{"ipv4", "udp4", "127.0.0.1:0", "udp4", "127.0.0.1"},
		{"ipv6", "udp6", "[::1]:0", "udp6", "::1"},
		{"dual stack, IPv4 client", "udp", "[::]:0", "udp4", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bc, raw := listenBatch(t, tc.network, tc.listen, 4)
			if _, ok := bc.(*batchConn); !ok {
				t.Fatalf("newBatchConn returned %T, want *batchConn", bc)
			}
			port := raw.LocalAddr().(*net.UDPAddr).Port
			dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.sendTo), uint16(port)))
			senders := make([]*net.UDPConn, 2)
			for i := range senders {
				c, err := net.ListenUDP(tc.sendNet, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				senders[i] = c
			}
			const n = 11 // more than two batches of 4
			for i := range n {
				if _, err := senders[i%2].WriteToUDP([]byte(fmt.Sprintf("datagram %02d", i)), dst); err != nil {
					t.Fatal(err)
				}
				if i == 5 { // one too long for a 2 KiB buffer, in the middle
					if _, err := senders[0].WriteToUDP(bytes.Repeat([]byte{'x'}, recvBufferSize+100), dst); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := bc.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1600)
			for i := range n {
				got, from, err := bc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if want := fmt.Sprintf("datagram %02d", i); string(buf[:got]) != want {
					t.Fatalf("datagram %d = %q, want %q", i, buf[:got], want)
				}
				src := senders[i%2].LocalAddr().(*net.UDPAddr)
				ua, ok := from.(*net.UDPAddr)
				if !ok || ua.Port != src.Port || !ua.IP.IsLoopback() {
					t.Fatalf("datagram %d from %v, want port %d on loopback", i, from, src.Port)
				}
			}
		})
	}
}

// TestBatchConnOff: a batch of 1 leaves the socket as it is.
func TestBatchConnOff(t *testing.T) {
	bc, raw := listenBatch(t, "udp4", "127.0.0.1:0", 1)
	if bc != net.PacketConn(raw) {
		t.Fatalf("newBatchConn(pc, 1) = %T, want the socket itself", bc)
	}
}

// TestBatchConnClose: closing the socket ends a blocked ReadFrom with an
// error (how pion's read loop stops).
func TestBatchConnClose(t *testing.T) {
	bc, _ := listenBatch(t, "udp4", "127.0.0.1:0", DefaultRecvBatch)
	done := make(chan error, 1)
	go func() {
		_, _, err := bc.ReadFrom(make([]byte, 1600))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block in recvmmsg; the outcome does not depend on it
	bc.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFrom after Close returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom did not return after Close")
	}
}

// benchmarkReceive measures receiving n datagrams queued on a socket, per
// datagram.
func benchmarkReceive(b *testing.B, batch int) {
	bc, raw := listenBatch(b, "udp4", "127.0.0.1:0", batch)
	if err := raw.SetReadBuffer(4 << 20); err != nil {
		b.Fatal(err)
	}
	src, err := net.ListenUDP("udp4", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	benchBursts(b, src, raw.LocalAddr().(*net.UDPAddr), bc)
}

// benchBursts times reading datagrams from r, queued 256 at a time (they
// fit the socket buffer) by src sending 100 bytes each to dst; only the
// reads are timed.
func benchBursts(b *testing.B, src *net.UDPConn, dst *net.UDPAddr, r net.PacketConn) {
	payload := make([]byte, 100)
	buf := make([]byte, 1600)
	const burst = 256
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		b.StopTimer()
		for range burst {
			if _, err := src.WriteToUDP(payload, dst); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for range burst {
			if _, _, err := r.ReadFrom(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkReceiveOneByOne(b *testing.B) { benchmarkReceive(b, 1) }
func BenchmarkReceiveBatch64(b *testing.B)  { benchmarkReceive(b, DefaultRecvBatch) }

// BenchmarkRelayReadFrom: a relay socket's steady stream from one peer
// (what pion's relay loop reads) allocates nothing per datagram.
func BenchmarkRelayReadFrom(b *testing.B) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetReadBuffer(4 << 20); err != nil {
		b.Fatal(err)
	}
	c := &relayPacketConn{conn: pc, a: &allocation{}}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	benchBursts(b, peer, pc.LocalAddr().(*net.UDPAddr), c)
}
