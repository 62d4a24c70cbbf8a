package matrix_test

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// outage is a TCP forwarder in front of the homeserver that can be cut
// and restored on the same address: while it is down every connection,
// open or new, is closed at once, which is what a client sees of a
// homeserver that is stopped (or a network that drops). The matrixtest
// harness has no way to stop and restart Dendrite on the same data; this
// gives the same view from the bridge's side.
type outage struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newOutage(t *testing.T, homeserverURL string) *outage {
	t.Helper()
	u, err := url.Parse(homeserverURL)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &outage{t: t, ln: ln, target: u.Host, conns: make(map[net.Conn]struct{})}
	o.wg.Add(1)
	go o.serve()
	t.Cleanup(func() {
		ln.Close()
		o.setDown(true)
		o.wg.Wait()
	})
	return o
}

// URL is the homeserver's URL through the forwarder.
func (o *outage) URL() string { return "http://" + o.ln.Addr().String() }

// setDown cuts (true) or restores (false) the homeserver.
func (o *outage) setDown(down bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.down = down
	if down {
		for c := range o.conns {
			c.Close()
		}
	}
}

func (o *outage) serve() {
	defer o.wg.Done()
	for {
		c, err := o.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				o.t.Errorf("outage: accept: %v", err)
			}
			return
		}
		o.mu.Lock()
		if o.down {
			o.mu.Unlock()
			c.Close()
			continue
		}
		o.mu.Unlock()
		up, err := net.Dial("tcp", o.target)
		if err != nil {
			c.Close()
			continue
		}
		if !o.track(c, up) {
			continue
		}
		o.wg.Add(2)
		go o.pipe(c, up)
		go o.pipe(up, c)
	}
}

// track registers a connection pair, or closes it if the forwarder went
// down meanwhile.
func (o *outage) track(a, b net.Conn) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.down {
		a.Close()
		b.Close()
		return false
	}
	o.conns[a], o.conns[b] = struct{}{}, struct{}{}
	return true
}

func (o *outage) pipe(dst, src net.Conn) {
	defer o.wg.Done()
	_, _ = io.Copy(dst, src) // ends when either side closes
	dst.Close()
	src.Close()
	o.mu.Lock()
	delete(o.conns, dst)
	delete(o.conns, src)
	o.mu.Unlock()
}
