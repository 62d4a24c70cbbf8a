package turnserver

import (
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// failingListener fails its first Accepts the way a TCP listener does when
// the process runs out of file descriptors.
type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestTCPAcceptRetriesTemporaryErrors(t *testing.T) {
	// pion's accept loop ends on the first error; one EMFILE must not end
	// TURN over TCP until a restart.
	fl := &failingListener{}
	fl.failures.Store(3)
	r := startRelay(t, relayOptions{allowLoopback: true, wrapTCP: func(l net.Listener) net.Listener {
		fl.Listener = l
		return fl
	}})
	cred := r.mint(t, "alice", "", time.Hour)
	relay, err := r.newClient(t, overTCP, cred.Username, cred.Password, 0).Allocate()
	if err != nil {
		t.Fatalf("Allocate over TCP after accept errors: %v", err)
	}
	defer relay.Close()
	exchange(t, relay, newPeer(t))
	if got := r.counter(t, "icebox_turn_tcp_accept_errors_total"); got != 3 {
		t.Fatalf("accept errors counted = %v, want 3", got)
	}
}

func TestTCPConnectionLimits(t *testing.T) {
	r := startRelay(t, relayOptions{tcpMaxPerSource: 2, tcpMaxTotal: 3})
	a1, a2 := r.dialTCP(t, "127.0.0.1"), r.dialTCP(t, "127.0.0.1")
	for i, c := range []net.Conn{a1, a2} {
		if err := stunBinding(c); err != nil {
			t.Fatalf("connection %d from 127.0.0.1: %v", i+1, err)
		}
	}
	// A third connection from the same source is closed at once.
	requireClosedByServer(t, r.dialTCP(t, "127.0.0.1"), 5*time.Second)
	if got := r.counter(t, "icebox_turn_tcp_connections_refused_total", "reason", refusedPerSource); got != 1 {
		t.Fatalf("refused{per_source} = %v, want 1", got)
	}
	// Another source has its own budget, up to the total.
	if err := stunBinding(r.dialTCP(t, "127.0.0.2")); err != nil {
		t.Fatalf("connection from 127.0.0.2: %v", err)
	}
	requireClosedByServer(t, r.dialTCP(t, "127.0.0.3"), 5*time.Second)
	if got := r.counter(t, "icebox_turn_tcp_connections_refused_total", "reason", refusedTotal); got != 1 {
		t.Fatalf("refused{total} = %v, want 1", got)
	}
	if got := r.counter(t, "icebox_turn_tcp_connections_active"); got != 3 {
		t.Fatalf("tcp_connections_active = %v, want 3", got)
	}
	// A closed connection frees its slot.
	if err := a1.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the closed connection to be released", 5*time.Second, func() bool {
		return r.counter(t, "icebox_turn_tcp_connections_active") == 2
	})
	if err := stunBinding(r.dialTCP(t, "127.0.0.1")); err != nil {
		t.Fatalf("connection from 127.0.0.1 after one closed: %v", err)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	r := startRelay(t, relayOptions{tcpIdleTimeout: idle})
	quiet, busy := r.dialTCP(t, "127.0.0.1"), r.dialTCP(t, "127.0.0.1")
	for _, c := range []net.Conn{quiet, busy} {
		if err := stunBinding(c); err != nil {
			t.Fatal(err)
		}
	}
	// The timeout rolls with each read: a client that keeps talking stays,
	// for several idle periods.
	tick := time.NewTicker(idle / 6)
	defer tick.Stop()
	for end := time.Now().Add(4 * idle); time.Now().Before(end); <-tick.C {
		if err := stunBinding(busy); err != nil {
			t.Fatalf("active connection dropped: %v", err)
		}
	}
	// The quiet one has been closed by now (or is about to be).
	requireClosedByServer(t, quiet, 5*time.Second)
}

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7:4000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:4000", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:4000", "2001:db8:1:2::"}, // one subscriber's /64
	} {
		a, err := net.ResolveTCPAddr("tcp", tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceKey(a).String(); got != tc.want {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
