//go:build linux

package netbed

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// forwardDialTimeout bounds the dial inside the namespace; the target is on
// a virtual link, so a slow dial means nobody listens.
const forwardDialTimeout = 5 * time.Second

// Forward opens a TCP listener on 127.0.0.1:0 in the test's own namespace
// and relays every connection to target (host:port), dialled from inside
// ns. It is the way in for clients that cannot enter a namespace, such as
// the http.Client inside a library under test. It returns the listening
// address. At cleanup the listener and every relayed connection are closed
// and their goroutines waited for.
func (ns *NS) Forward(target string) string {
	ns.bed.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ns.bed.t.Fatalf("netbed: forward to %s in %s: %v", target, ns.Name, err)
	}
	f := &forwarder{ns: ns, target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	ns.bed.t.Cleanup(f.close)
	return ln.Addr().String()
}

type forwarder struct {
	ns     *NS
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed
		}
		f.wg.Add(1)
		go f.relay(c)
	}
}

// relay dials the target and copies both ways until both directions end.
func (f *forwarder) relay(client net.Conn) {
	defer f.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), forwardDialTimeout)
	server, err := f.ns.DialContext(ctx, "tcp", f.target)
	cancel()
	if err != nil {
		_ = client.Close() // the client sees a reset, as it would without the forwarder
		return
	}
	if !f.track(client, server) {
		return
	}
	var both sync.WaitGroup
	both.Add(2)
	go func() { defer both.Done(); pipe(server, client) }()
	go func() { defer both.Done(); pipe(client, server) }()
	both.Wait()
	f.untrack(client, server)
}

// pipe copies src to dst, then half-closes dst so the other side sees EOF
// while the opposite direction may still carry data.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok && err == nil {
		_ = tc.CloseWrite()
		return
	}
	// An error (a reset, or close at cleanup): end both directions.
	_ = dst.Close()
	_ = src.Close()
}

// track registers a relayed pair, or closes it if the forwarder is closing.
func (f *forwarder) track(a, b net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_, _ = a.Close(), b.Close()
		return false
	}
	f.conns[a], f.conns[b] = struct{}{}, struct{}{}
	return true
}

func (f *forwarder) untrack(a, b net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, a)
	delete(f.conns, b)
	_, _ = a.Close(), b.Close()
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	err := f.ln.Close()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		f.ns.bed.t.Errorf("netbed: close forwarder to %s: %v", f.target, err)
	}
	f.wg.Wait()
}
