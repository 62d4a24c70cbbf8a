package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"

	"github.com/icebox-voip/icebox/internal/portmux"
	"github.com/icebox-voip/icebox/turnserver"
)

// bind takes what only one process may have: the state directory, then
// every socket.
func (n *Node) bind(ctx context.Context) error {
	// The state file's lock comes first: a second icebox on the same state
	// directory must fail here, before SO_REUSEPORT lets it share (and
	// steal part of) the first one's UDP traffic.
	if err := n.openState(ctx); err != nil {
		return err
	}
	if err := n.bindTURN(ctx); err != nil {
		return err
	}
	if err := n.bindHTTP(ctx); err != nil {
		return err
	}
	// PROXY headers come before TLS: under the certificates.
	if err := n.bindProxied(); err != nil {
		return err
	}
	// Certificates last: tls-alpn-01 answers on a bound TLS listener.
	if err := n.bindCerts(ctx); err != nil {
		return err
	}
	return n.bindMux()
}

// openState opens the store (statedb.go: the state file, or PostgreSQL)
// and closes it last.
func (n *Node) openState(ctx context.Context) error {
	st, err := openStore(ctx, n.cfg, n.opts.InitState, n.opts.Registry, n.log)
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
	// The shared ports (turn.mux) count as TLS listeners for the
	// addresses: the ACME tls-alpn-01 listener is picked among them, and
	// the relay must not reach them as peers. UDP joins on the same port.
	for _, addr := range cfg.Mux.Listen {
		l, err := turnserver.ListenTCP(ctx, addr)
		if err != nil {
			return err
		}
		n.onClose(func() error { return ignoreClosed(l.Close()) })
		n.muxLn = append(n.muxLn, l)
		n.addrs.TURNTLS = append(n.addrs.TURNTLS, l.Addr().String())
		if !cfg.Mux.UDP {
			continue
		}
		conns, _, err := turnserver.ListenUDP(ctx, l.Addr().String(), sockets, cfg.SocketBuffer)
		if err != nil {
			return fmt.Errorf("turn.mux.udp: %w", err)
		}
		n.turnLn.UDP = append(n.turnLn.UDP, conns...)
		n.addrs.TURNUDP = append(n.addrs.TURNUDP, conns[0].LocalAddr().String())
	}
	return nil
}

// bindMux serves the shared ports (turn.mux) with turn.tls's certificate
// (bindCerts): TURN over TCP and TLS go to the relay's listeners, the API's
// connections join the API's own listener.
func (n *Node) bindMux() error {
	if len(n.muxLn) == 0 {
		return nil
	}
	mc := n.cfg.TURN.Mux
	trusted, err := mc.ProxyProtocol.Prefixes()
	if err != nil {
		return ConfigError{fmt.Errorf("turn.mux.proxy_protocol.trusted: %w", err)}
	}
	if n.muxMetrics == nil {
		if n.muxMetrics, err = portmux.NewMetrics(n.opts.Registry); err != nil {
			return err
		}
	}
	m, err := portmux.New(portmux.Config{
		TLS:              n.turnLn.TLSConfig,
		TrustedProxies:   trusted,
		HandshakeTimeout: mc.HandshakeTimeout,
		Logger:           n.log,
		Metrics:          n.muxMetrics,
	}, n.muxLn...)
	if err != nil {
		return err
	}
	m.Serve()
	n.onClose(m.Close)
	n.turnLn.TCP = append(n.turnLn.TCP, m.TURN())
	n.turnLn.TLSDone = append(n.turnLn.TLSDone, m.TURNTLS())
	n.httpLn = portmux.Merge(n.httpLn, m.HTTP())
	return nil
}

// bindProxied puts PROXY protocol (turn.proxy_protocol,
// http.proxy_protocol) in front of the TURN TCP/TLS listeners and the API's:
// each connection of a trusted load balancer must start with a PROXY
// header, whose client address the relay and the API then see; a header
// from anyone else closes the connection. The shared port reads its own
// (bindMux). The Muxes share one set of counters.
func (n *Node) bindProxied() error {
	turnTrusted, err := n.cfg.TURN.ProxyProtocol.Prefixes()
	if err != nil {
		return ConfigError{fmt.Errorf("turn.proxy_protocol.trusted: %w", err)}
	}
	httpTrusted, err := n.cfg.HTTP.ProxyProtocol.Prefixes()
	if err != nil {
		return ConfigError{fmt.Errorf("http.proxy_protocol.trusted: %w", err)}
	}
	if len(turnTrusted) == 0 && len(httpTrusted) == 0 {
		return nil
	}
	if n.muxMetrics == nil {
		if n.muxMetrics, err = portmux.NewMetrics(n.opts.Registry); err != nil {
			return err
		}
	}
	proxied := func(l net.Listener, trusted []netip.Prefix) (net.Listener, error) {
		m, err := portmux.New(portmux.Config{
			TrustedProxies: trusted, Passthrough: true, HandshakeTimeout: n.cfg.TURN.Mux.HandshakeTimeout,
			Logger: n.log, Metrics: n.muxMetrics,
		}, l)
		if err != nil {
			return nil, err
		}
		m.Serve()
		n.onClose(m.Close)
		return m.Passed(), nil
	}
	if len(turnTrusted) > 0 {
		for _, lns := range [][]net.Listener{n.turnLn.TCP, n.turnLn.TLS} {
			for i, l := range lns {
				if lns[i], err = proxied(l, turnTrusted); err != nil {
					return err
				}
			}
		}
	}
	if len(httpTrusted) > 0 {
		if n.httpLn, err = proxied(n.httpLn, httpTrusted); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) closeTURN() error {
	var errs []error
	for _, c := range n.turnLn.UDP {
		errs = append(errs, ignoreClosed(c.Close()))
	}
	for _, l := range slices.Concat(n.turnLn.TCP, n.turnLn.TLS, n.turnLn.TLSDone) {
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
