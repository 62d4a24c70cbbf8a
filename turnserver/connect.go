package turnserver

import "sync"

// RFC 6062 Connect, and where its dial may run.
//
// pion handles a Connect synchronously: handleConnectRequest calls the relay
// allocator's AllocateConn and answers when it returns, on the goroutine
// that read the request. That goroutine is
//   - for UDP, the single read loop of the listener socket (pion's
//     Server.readLoop per PacketConnConfig), shared by every client hashed
//     to that socket: a 30-second dial towards an address that drops SYNs
//     froze them all (issue 13);
//   - for TCP and TLS, the requesting client's own connection (pion starts a
//     goroutine per accepted connection, server.go readListener), so a dial
//     stalls only that client's control connection.
//
// Decision: a Connect (and a ConnectionBind, its companion) that arrives over
// UDP is answered 400 by udpGuard (guard.go) before pion reads it — RFC 6062 §4.3
// and §5.2 define both for TCP and TLS control connections only — so no dial
// can ever start on a listener's read path. AllocateConn also refuses any
// allocation that is not a TCP one (a TCP client may hold a UDP allocation),
// so pion answers 447 at once instead of dialing from a UDP relay port.
//
// TCP allocations keep pion's synchronous dial on the client's own goroutine:
// running it on another goroutine would not answer sooner (pion waits for
// AllocateConn either way), and the connection ID pion returns comes from its
// unexported addTCPConnection, which icebox cannot call on its own. What
// icebox adds is a bound on dials in flight, per allocation and in total, so
// many clients dialing black holes hold neither unbounded sockets nor
// goroutines; a Connect over the bound fails at once (pion answers 447, the
// only failure code its Connect handler gives for an AllocateConn error).

// Bounds of concurrent RFC 6062 dials (Server.dials). pion reads one
// control connection's requests one at a time, so an allocation has at most
// one dial in flight today; the per-allocation bound holds should that ever
// change. 256 dials of 30 s at most each cost 256 sockets and goroutines.
const (
	defaultConnectDialsPerAllocation = 4
	defaultConnectDialsTotal         = 256
)

// dialLimits counts RFC 6062 dials in flight, per allocation (its relay
// port) and in total.
type dialLimits struct {
	perAllocation, total int

	mu       sync.Mutex
	inFlight map[relayPort]int
	sum      int
}

func newDialLimits(perAllocation, total int) *dialLimits {
	return &dialLimits{perAllocation: perAllocation, total: total, inFlight: make(map[relayPort]int)}
}

// acquire takes a dial slot for the allocation on port, or reports false.
func (l *dialLimits) acquire(port relayPort) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sum >= l.total || l.inFlight[port] >= l.perAllocation {
		return false
	}
	l.sum++
	l.inFlight[port]++
	return true
}

// setBounds changes the bounds (tests).
func (l *dialLimits) setBounds(perAllocation, total int) {
	l.mu.Lock()
	l.perAllocation, l.total = perAllocation, total
	l.mu.Unlock()
}

// inFlightTotal is the number of dials in flight (tests).
func (l *dialLimits) inFlightTotal() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sum
}

func (l *dialLimits) release(port relayPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sum--
	if l.inFlight[port] <= 1 {
		delete(l.inFlight, port)
		return
	}
	l.inFlight[port]--
}
