package turnserver

import (
	"errors"
	"net"
	"sync"
)

// connTracker wraps a TURN TCP/TLS listener so that closing it also closes
// the client connections it accepted: pion's Server.Close stops accepting
// but leaves live TCP connections (and so their allocations) running.
type connTracker struct {
	net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func trackConns(l net.Listener) *connTracker {
	return &connTracker{Listener: l, conns: make(map[net.Conn]struct{})}
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.Join(net.ErrClosed, c.Close())
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *connTracker) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		if cerr := c.(*trackedConn).Conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	return err
}

func (l *connTracker) forget(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

type trackedConn struct {
	net.Conn
	l    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}
