package turnserver

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// The security tests that relay run in every mode the test bed allows
// (forModes): in user space on loopback, and — as root on Linux, in a
// network namespace joined to another by a veth pair — in user space and
// with the kernel path on (modes_linux_test.go). The kernel path attaches
// to Ethernet-like devices only, so it needs the veth bed: there the relay
// listens and relays on vethRelayIP, and clients and peers sit on
// vethPeerIP in the other namespace.
type testMode struct {
	name   string
	kernel bool   // turn.kernel_path: required
	hooks  string // turn.kernel_path_mode ("": auto, which is tc on veth)
	// in runs fn where the clients and peers live (the other namespace);
	// nil: here, on loopback.
	in func(fn func() error) error
}

const (
	vethRelayIP = "10.9.0.1"
	vethPeerIP  = "10.9.0.2"
)

var loopbackMode = testMode{name: "loopback-user"}

func (m testMode) veth() bool { return m.in != nil }

// options puts o in mode m.
func (m testMode) options(o relayOptions) relayOptions {
	o.mode = m
	if m.kernel {
		o.kernelPath = KernelPathRequired
		o.kernelPathMode = m.hooks
	}
	return o
}

// listenUDP opens a UDP socket where m's clients and peers live.
func (m testMode) listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	if !m.veth() {
		return newPeer(t)
	}
	var c *net.UDPConn
	if err := m.in(func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(vethPeerIP)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newPeer opens a peer socket where r's mode puts peers.
func (r *testRelay) newPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	return r.mode.listenUDP(t)
}

// rawUDP is a raw TURN client over UDP where r's mode puts clients.
func (r *testRelay) rawUDP(t *testing.T, user, pass string) *rawTURN {
	t.Helper()
	if !r.mode.veth() {
		return newRawUDP(t, r.udp, user, pass)
	}
	sa, err := net.ResolveUDPAddr("udp4", r.udp)
	if err != nil {
		t.Fatal(err)
	}
	return &rawTURN{t: t, udp: r.mode.listenUDP(t), server: sa, user: user, pass: pass}
}

// kernelRelayed is what the kernel path relayed so far (zero when off).
func (r *testRelay) kernelRelayed() traffic {
	k := r.srv.reg.kernel.Load()
	if k == nil {
		return traffic{}
	}
	r.srv.reg.mu.Lock()
	defer r.srv.reg.mu.Unlock()
	live := make([]*allocation, 0, len(r.srv.reg.byID))
	for _, a := range r.srv.reg.byID {
		live = append(live, a)
	}
	return k.relayed(live)
}

// kernelChannels is the number of channels in the kernel's maps (0 when
// the kernel path is off; fails the test if the mode wants it on and it
// is not).
func (r *testRelay) kernelChannels(t *testing.T) int {
	t.Helper()
	k := r.srv.reg.kernel.Load()
	if k == nil {
		if r.mode.kernel {
			t.Fatal("kernel path off in the kernel mode")
		}
		return 0
	}
	return k.bindings()
}

// inKernel waits, in the kernel mode, until the kernel holds n channels.
func (r *testRelay) inKernel(t *testing.T, n int) {
	t.Helper()
	if !r.mode.kernel {
		if got := r.kernelChannels(t); got != 0 {
			t.Fatalf("%d channels in the kernel with the kernel path off", got)
		}
		return
	}
	waitFor(t, "channels in the kernel", 10*time.Second, func() bool { return r.kernelChannels(t) == n })
}

// viaKernel checks who relayed since before: in the kernel mode the
// kernel, both ways; otherwise nothing went through it.
func (r *testRelay) viaKernel(t *testing.T, before traffic) {
	t.Helper()
	now := r.kernelRelayed()
	toPeer, toClient := now.packetsToPeer-before.packetsToPeer, now.packetsFromPeer-before.packetsFromPeer
	switch {
	case r.mode.kernel && (toPeer == 0 || toClient == 0):
		t.Fatalf("kernel mode: the kernel relayed %d to the peer and %d to the client, want both > 0", toPeer, toClient)
	case !r.mode.kernel && (toPeer != 0 || toClient != 0):
		t.Fatalf("%s: the kernel relayed %d/%d", r.mode.name, toPeer, toClient)
	}
	r.atHook(t)
}

// atHook checks, in the kernel modes, that the hook the mode asks for did
// the work: with XDP, all but the first datagram of each direction (its
// next hop has no neighbour entry yet: XDP leaves it to tc, which
// resolves one) — this relay's counters, since it started.
func (r *testRelay) atHook(t *testing.T) {
	t.Helper()
	k := r.srv.reg.kernel.Load()
	if !r.mode.kernel || k == nil {
		return
	}
	st := k.p.Stats()
	switch {
	case r.mode.hooks == KernelModeXDP && (st.RelayedXDP == 0 || st.RelayedTC > 2):
		t.Fatalf("%s: relayed at XDP %d, at tc %d; want XDP to do the work", r.mode.name, st.RelayedXDP, st.RelayedTC)
	case r.mode.hooks != KernelModeXDP && st.RelayedXDP != 0:
		t.Fatalf("%s: relayed at XDP %d, want none", r.mode.name, st.RelayedXDP)
	}
	t.Logf("%s: relayed at XDP %d, at tc %d (XDP passed %d)", r.mode.name, st.RelayedXDP, st.RelayedTC, st.XDPPassed)
}

// peerAllowed is the policy's prefix for m's peers beyond loopback.
func (m testMode) peerAllowed() []string {
	if m.veth() {
		return []string{vethPeerIP + "/32"}
	}
	return nil
}

// relayIP is where m's relay listens and relays.
func (m testMode) relayIP() netip.Addr {
	if m.veth() {
		return netip.MustParseAddr(vethRelayIP)
	}
	return netip.MustParseAddr("127.0.0.1")
}
