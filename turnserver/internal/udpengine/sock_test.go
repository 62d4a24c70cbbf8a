package udpengine

import (
	"net"
	"net/netip"
	"testing"
)

// BenchmarkSockSendTo: one datagram sent by the fast path's SendTo; it
// allocates nothing.
func BenchmarkSockSendTo(b *testing.B) {
	sock, err := Open(netip.MustParseAddrPort("127.0.0.1:0"), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer sock.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	go func() { // drain, so the sink's buffer never fills
		buf := make([]byte, 1600)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	payload := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := sock.SendTo(payload, to); err != nil && !BufferFull(err) {
			b.Fatal(err)
		}
	}
}
