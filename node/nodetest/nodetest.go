// Package nodetest starts icebox nodes in-process for tests, as httptest
// starts HTTP servers: the node binds what its configuration names (port 0
// lets the kernel pick) and the test reads where it listens from Addrs.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

// StopTimeout bounds a node's drain and shutdown in Stop; a test config's
// drain_timeout should be well below it.
const StopTimeout = 15 * time.Second

// Node is a node running in-process.
type Node struct {
	*node.Node
	Addrs node.Addrs

	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's and Close's; read after done
	once   sync.Once
}

// Start builds a node from cfg and opts, runs it, and waits until it
// serves. A nil Registry or Auth gets a fresh registry, or an authenticator
// that refuses every API request. At cleanup the node is stopped (Stop) and
// the test fails if it did not stop cleanly.
func Start(t testing.TB, cfg config.Config, opts node.Options) *Node {
	t.Helper()
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Auth == nil {
		auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
		if err != nil {
			t.Fatalf("nodetest: %v", err)
		}
		opts.Auth = auth
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := node.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatalf("nodetest: start: %v", err)
	}
	nt := &Node{Node: n, Addrs: n.Addrs(), cancel: cancel, done: make(chan struct{})}
	go func() {
		nt.err = errors.Join(n.Run(ctx), n.Close())
		close(nt.done)
	}()
	t.Cleanup(func() {
		if err := nt.Stop(); err != nil {
			t.Errorf("nodetest: stop: %v", err)
		}
	})
	select {
	case <-n.Serving():
	case <-nt.done:
		t.Fatalf("nodetest: the node stopped before it served: %v", nt.err)
	}
	return nt
}

// Stop ends the node as the first SIGTERM does (it drains, for up to the
// config's drain_timeout) and returns what Run and Close returned. It runs
// once; later calls return the same.
func (n *Node) Stop() error {
	n.once.Do(func() {
		n.cancel()
		select {
		case <-n.done:
		case <-time.After(StopTimeout):
			n.err = fmt.Errorf("the node did not stop within %s", StopTimeout)
		}
	})
	return n.err
}

// Port returns the port of a bound "host:port" address, or 0.
func Port(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	port, _ := strconv.Atoi(p)
	return port
}

// Config is a configuration for a node on loopback: every listener on
// 127.0.0.1 port 0 (TURN UDP and TCP, HTTP), relays on 127.0.0.1 in
// 40000-40999 with loopback peers allowed, an inline compat secret, and a
// short drain.
func Config(stateDir, secret string) config.Config {
	cfg := config.Default()
	cfg.StateDir = stateDir
	cfg.DrainTimeout = 2 * time.Second
	cfg.TURN.Realm = "nodetest.icebox.test"
	cfg.TURN.Listen.UDP = []string{"127.0.0.1:0"}
	cfg.TURN.Listen.TCP = []string{"127.0.0.1:0"}
	cfg.TURN.Listen.TLS = nil
	cfg.TURN.UDPSockets = 1
	cfg.TURN.Relay.BindIP = "127.0.0.1"
	cfg.TURN.Relay.MinPort, cfg.TURN.Relay.MaxPort = 40000, 40999
	cfg.TURN.AllowLoopbackPeers = true
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Secret: secret, Compat: true}}
	cfg.HTTP.Listen = "127.0.0.1:0"
	return cfg
}
