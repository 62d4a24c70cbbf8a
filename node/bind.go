package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/icebox-voip/icebox/turnserver"
)

// bind takes what only one process may have: the state directory, then
// every socket.
func (n *Node) bind(ctx context.Context) error {
	// The state file's lock comes first: a second icebox on the same state
	// directory must fail here, before SO_REUSEPORT lets it share (and
	// steal part of) the first one's UDP traffic.
	if err := n.openState(); err != nil {
		return err
	}
	if err := n.bindTURN(ctx); err != nil {
		return err
	}
	if err := n.bindHTTP(ctx); err != nil {
		return err
	}
	// Certificates last: tls-alpn-01 answers on a bound TLS listener.
	return n.bindCerts(ctx)
}

// openState opens the state file (state.go) and closes it last.
func (n *Node) openState() error {
	st, err := openState(n.cfg, n.opts.InitState, n.log)
	if err != nil {
		return err
	}
	n.state = st
	n.onClose(st.Close)
	return nil
}

// bindTURN binds every configured TURN listener (bindCerts gives the TLS
// ones their certificate).
func (n *Node) bindTURN(ctx context.Context) error {
	cfg := n.cfg.TURN
	n.onClose(n.closeTURN)
	sockets := cfg.UDPSockets
	if sockets == 0 {
		sockets = runtime.NumCPU()
	}
	for _, addr := range cfg.Listen.UDP {
		conns, granted, err := turnserver.ListenUDP(ctx, addr, sockets, cfg.SocketBuffer)
		if err != nil {
			return err
		}
		n.turnLn.UDP = append(n.turnLn.UDP, conns...)
		n.addrs.TURNUDP = append(n.addrs.TURNUDP, conns[0].LocalAddr().String())
		if cfg.SocketBuffer > 0 && granted < cfg.SocketBuffer {
			n.log.Warn().Str("component", "turn").Int("wanted", cfg.SocketBuffer).Int("granted", granted).
				Msg("the kernel capped the UDP socket buffer; raise net.core.rmem_max/wmem_max or run with CAP_NET_ADMIN, or packets may be lost under load")
		}
	}
	for _, addr := range cfg.Listen.TCP {
		l, err := turnserver.ListenTCP(ctx, addr)
		if err != nil {
			return err
		}
		n.turnLn.TCP = append(n.turnLn.TCP, l)
		n.addrs.TURNTCP = append(n.addrs.TURNTCP, l.Addr().String())
	}
	for _, addr := range cfg.Listen.TLS {
		l, err := turnserver.ListenTCP(ctx, addr)
		if err != nil {
			return err
		}
		n.turnLn.TLS = append(n.turnLn.TLS, l)
		n.addrs.TURNTLS = append(n.addrs.TURNTLS, l.Addr().String())
	}
	return nil
}

func (n *Node) closeTURN() error {
	var errs []error
	for _, c := range n.turnLn.UDP {
		errs = append(errs, ignoreClosed(c.Close()))
	}
	for _, l := range append(append([]net.Listener{}, n.turnLn.TCP...), n.turnLn.TLS...) {
		errs = append(errs, ignoreClosed(l.Close()))
	}
	return errors.Join(errs...)
}

// bindHTTP binds the API's listener (bindCerts adds TLS if configured).
func (n *Node) bindHTTP(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", n.cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: listen %s: %w", n.cfg.HTTP.Listen, err)
	}
	n.onClose(func() error { return ignoreClosed(ln.Close()) })
	n.addrs.HTTP = ln.Addr().String()
	n.httpLn = ln
	return nil
}
