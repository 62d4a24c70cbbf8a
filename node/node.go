// Package node is one running icebox assembled from its configuration: the
// relay, the calls service, the Matrix bridge, the HTTP API and what keeps
// them going (keyring retirement, certificate and keyring reloads, systemd's
// watchdog). Its life has phases, each a few short named steps:
//
//	New:   bind   the state directory's lock, then every socket (TURN UDP, TCP
//	              and TLS, HTTP), so a taken port fails before anything starts;
//	       build  the components from the configuration, handed the bound sockets
//	              (keyring, relay, calls, API);
//	Run:   run    every component under one errgroup until ctx is done or one fails,
//	       drain  until allocations and ringing invites end (or a deadline, or Force);
//	Close: close  everything New opened, in reverse; errors joined.
//
// New does not serve and Run does not bind: a test starts a node in-process
// on port 0 and reads where it listens from Addrs.
package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/internal/acmecert"
	"github.com/icebox-voip/icebox/internal/portmux"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/rtccall"
	"github.com/icebox-voip/icebox/turnserver"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
)

// Options is what a node is assembled from besides its configuration.
type Options struct {
	// InitState starts afresh on purpose when the state directory's state
	// file, keyring record or generated secrets are missing or damaged
	// (`icebox serve --init-state`).
	InitState bool
	Logger    zerolog.Logger
	// Registry receives every component's metrics and is served on
	// /metrics. Required: the caller adds process-wide collectors.
	Registry *prometheus.Registry
	// Auth verifies the API's bearer tokens. Required.
	Auth *httpapi.Authenticator
	// LoadConfig reads the configuration again on Reload, for the keyring;
	// nil reloads certificates only.
	LoadConfig func() (config.Config, error)
	// Reload asks for a reload of the configuration (LoadConfig), the
	// certificates and the keyring, one value per request (SIGHUP); nil
	// never reloads. See reload.go for what applies live.
	Reload <-chan struct{}
	// BuildAuth makes the API authenticator from a reloaded configuration
	// (its auth section; the matrix section as the node started), swapped
	// into Auth; nil: auth.* changes need a restart.
	BuildAuth func(config.Config) (*httpapi.Authenticator, error)
	// LogLevel is the filter under Logger whose level log.level sets on
	// reload; nil: log.level changes need a restart.
	LogLevel *LevelFilter
	// Force, once closed, cuts the drain short (a second stop signal);
	// nil waits for the drain.
	Force <-chan struct{}
	// Notifier tells a service manager about the node's state; nil tells
	// no one.
	Notifier Notifier
	// ACMERenewCheck is how often ACME certificates are checked for
	// renewal; 0 = certmagic's 10 minutes. For tests with short-lived
	// certificates.
	ACMERenewCheck time.Duration
}

// Notifier is what a node tells its service manager (systemd's sd_notify).
type Notifier interface {
	// Notify sends one state message, e.g. "READY=1".
	Notify(state string) error
	// RunWatchdog pings the watchdog until ctx is done, while healthy.
	RunWatchdog(ctx context.Context, healthy func() bool) error
}

// Addrs are the node's bound addresses ("host:port"), as the kernel gave
// them: port 0 in the configuration is resolved here.
type Addrs struct {
	TURNUDP, TURNTCP, TURNTLS []string
	HTTP                      string
}

// Node is one assembled icebox.
type Node struct {
	cfg  config.Config
	opts Options
	log  zerolog.Logger

	// bind
	state  stateStore // statedb.go
	turnLn turnserver.Listeners
	httpLn net.Listener
	muxLn  []net.Listener // turn.mux's shared ports, bound; served by bindMux (bind.go)
	// muxMetrics are the counters of the shared port's and the PROXY
	// listeners' Muxes (bindMux, bindProxied).
	muxMetrics *portmux.Metrics
	certs      []certSource      // of the TLS listeners (certs.go)
	acme       *acmecert.Manager // nil: no listener uses ACME
	addrs      Addrs

	// build
	plan   relayplan.Plan
	keys   *keystore.Manager
	relay  *turnserver.Server
	hub    *httpapi.Hub
	bridge *matrix.Bridge // nil: Matrix is off
	// bridgeLeader runs bridge under the database's lease when several
	// nodes may share it (bridgelease.go); nil on bbolt.
	bridgeLeader *bridgeLeader
	calls        *signaling.Service
	// cluster carries events and revocations to the other nodes on the
	// same database (cluster.go); nil unless store.driver is postgres.
	cluster *cluster
	api     *httpapi.Server
	// liveKit is the managed livekit-server; nil: not managed.
	liveKit *managedLiveKit
	// rtcCalls is the MatrixRTC gateway's call path; nil: off
	// (matrixrtc.gateway).
	rtcCalls *rtccall.Manager
	// rtcKeys are the bridged calls' media keys (with rtcCalls).
	rtcKeys *e2ee.Registry

	ready, draining atomic.Bool
	serving         chan struct{} // closed once Run serves

	closers   []func() error // in the order opened
	closeOnce sync.Once
	closeErr  error
}

// New binds and builds a node; it serves nothing until Run. On failure
// everything opened so far is closed again.
func New(ctx context.Context, cfg config.Config, opts Options) (*Node, error) {
	if opts.Registry == nil || opts.Auth == nil {
		return nil, errors.New("node: Options.Registry and Options.Auth are required")
	}
	if opts.Notifier == nil {
		opts.Notifier = nopNotifier{}
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger, serving: make(chan struct{})}
	if err := n.bind(ctx); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	if err := n.build(ctx); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// Addrs returns where the node listens.
func (n *Node) Addrs() Addrs { return n.addrs }

// Serving is closed once Run has started every component and /readyz
// answers 200.
func (n *Node) Serving() <-chan struct{} { return n.serving }

// Close closes everything New opened, last opened first, and joins the
// errors. It is idempotent; call it after Run has returned.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		for i := len(n.closers) - 1; i >= 0; i-- {
			errs = append(errs, n.closers[i]())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// onClose registers what Close undoes.
func (n *Node) onClose(f func() error) { n.closers = append(n.closers, f) }

type nopNotifier struct{}

func (nopNotifier) Notify(string) error { return nil }
func (nopNotifier) RunWatchdog(ctx context.Context, _ func() bool) error {
	<-ctx.Done()
	return nil
}
