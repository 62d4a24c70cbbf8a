package udpengine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/transport/v5/test"
	"github.com/rs/zerolog"
)

// These tests run against the engine the build selects: the epoll engine
// on Linux, the portable one with -tags icebox_portable or elsewhere.

// echoHandler sends every datagram back to its source, on the socket it
// came in on, behind a 4-byte header written into the headroom: its length
// and a count.
type echoHandler struct {
	sock *Socket
	n    atomic.Uint32
}

func (h *echoHandler) Receive(r *Round, pkt []byte, from netip.AddrPort) {
	if r.Now().IsZero() {
		panic("a round without a time")
	}
	binary.BigEndian.PutUint16(pkt[0:2], uint16(len(pkt)-Headroom))
	binary.BigEndian.PutUint16(pkt[2:4], uint16(h.n.Add(1)))
	r.Send(h.sock, pkt, from)
}

func newTestEngine(t *testing.T, loops int) *Engine {
	t.Helper()
	e, err := New(Config{Loops: loops, Batch: DefaultRecvBatch, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func openLoopback(t *testing.T) *Socket {
	t.Helper()
	s, err := Open(netip.MustParseAddrPort("127.0.0.1:0"), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.LocalAddr().Port() == 0 {
		t.Fatal("Open reports port 0")
	}
	return s
}

// TestEngineHandlerRoundTrip: a socket's datagrams reach its Handler with
// their source and the headroom before them, in order, and what the
// Handler sends leaves from that socket; a datagram longer than
// RecvBufferSize is dropped, the ones around it are not.
func TestEngineHandlerRoundTrip(t *testing.T) {
	defer test.CheckRoutines(t)()
	e := newTestEngine(t, 2)
	sock := openLoopback(t)
	h := &echoHandler{sock: sock}
	if err := e.Add(sock, h); err != nil {
		t.Fatal(err)
	}
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const n = 50
	for i := range n {
		if i == 10 {
			if _, err := client.WriteToUDPAddrPort(make([]byte, RecvBufferSize+1), sock.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := client.WriteToUDPAddrPort(bytes.Repeat([]byte{byte(i)}, i+1), sock.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 4096)
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		got, from, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if from != sock.LocalAddr() {
			t.Fatalf("echo %d from %v, want %v", i, from, sock.LocalAddr())
		}
		want := append([]byte{0, byte(i + 1), 0, byte(i + 1)}, bytes.Repeat([]byte{byte(i)}, i+1)...)
		if !bytes.Equal(buf[:got], want) {
			t.Fatalf("echo %d = % x, want % x", i, buf[:got], want)
		}
	}
	_ = client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if got, _, err := client.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("one more echo (%d bytes): the oversized datagram was not dropped", got)
	}
	e.Close() // the readers end, for the goroutine check
}

// TestEngineClose: Close returns with sockets still open (their owners
// close them), which still send; a socket added afterwards is refused.
func TestEngineClose(t *testing.T) {
	defer test.CheckRoutines(t)()
	e := newTestEngine(t, 1)
	sock := openLoopback(t)
	if err := e.Add(sock, &echoHandler{sock: sock}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { e.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return with a socket still open")
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, err := sock.SendTo([]byte("x"), sink.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatalf("SendTo after the engine closed: %v", err)
	}
	other := openLoopback(t)
	if err := e.Add(other, &echoHandler{sock: other}); err == nil {
		t.Fatal("a closed engine took a socket")
	}
	if err := sock.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sock.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sock.SendTo([]byte("x"), sink.LocalAddr().(*net.UDPAddr).AddrPort()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("SendTo after Close: %v, want net.ErrClosed", err)
	}
}

// TestSocketAddressFamily: an IPv4 socket sends to v4-mapped destinations
// and refuses IPv6 ones.
func TestSocketAddressFamily(t *testing.T) {
	sock := openLoopback(t)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	mapped := netip.AddrPortFrom(netip.AddrFrom16(to.Addr().As16()), to.Port())
	if _, err := sock.SendTo([]byte("mapped"), mapped); err != nil {
		t.Fatalf("SendTo(%v): %v", mapped, err)
	}
	buf := make([]byte, 64)
	_ = sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, from, err := sink.ReadFromUDPAddrPort(buf); err != nil || string(buf[:n]) != "mapped" || from != sock.LocalAddr() {
		t.Fatalf("sink got %q from %v, %v", buf[:n], from, err)
	}
	if _, err := sock.SendTo([]byte("x"), netip.MustParseAddrPort("[2001:db8::1]:9")); !errors.Is(err, errAddrFamily) {
		t.Fatalf("SendTo an IPv6 address on an IPv4 socket: %v, want errAddrFamily", err)
	}
}
