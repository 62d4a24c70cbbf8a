package turnserver

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/turnserver/internal/kernelpath"
)

// The kernel path (internal/kernelpath): an eBPF program relays the
// ChannelData of bound channels in the kernel, both ways, without waking
// this process. It extends the channel fast path (fastpath.go) and decides
// nothing of its own: a channel enters its maps only as the fast path
// holds it — learnt from pion's ChannelBind success, the client
// authenticated, pion's permission for the peer present — and only while
// the peer policy allows the peer, the allocation is not scoped (the SFU
// allow-list is checked per datagram in user space) and no bandwidth limit
// is configured (limits are enforced in user space only, so a limited
// relay never hands a channel to the kernel). It leaves the maps when the
// binding changes, the permission ends, the policy or the bandwidth limits
// change, or the relay socket closes (deallocation, expiry, revocation,
// kill); the kernel itself stops at the binding's expiry time. What the
// kernel relayed is counted per allocation in per-CPU maps and added to
// the allocation's counters wherever they are read.

// Kernel path modes (Config.KernelPath).
const (
	KernelPathOff      = "off"
	KernelPathAuto     = "auto"
	KernelPathRequired = "required"
)

// Kernel path hook modes (Config.KernelPathMode; kernelpath.Mode*).
const (
	KernelModeAuto = kernelpath.ModeAuto
	KernelModeXDP  = kernelpath.ModeXDP
	KernelModeTC   = kernelpath.ModeTC
)

// kernelPath is the server's side of the kernel path.
type kernelPath struct {
	p   *kernelpath.Path
	s   *Server
	log zerolog.Logger

	mu sync.Mutex
	// installed: the bindings in the maps, per relay socket and peer.
	installed map[*relayPacketConn]map[netip.AddrPort]kernelpath.Binding

	warnMu sync.Mutex
	warned map[string]bool // reasons logged once

	retiredMu sync.Mutex
	retired   traffic // what the kernel relayed for released allocations
}

// openKernelPath loads the kernel path as mode asks; nil: user space only.
// An error only for "required".
func openKernelPath(s *Server, mode, hooks string) (*kernelPath, error) {
	switch mode {
	case "", KernelPathOff:
		return nil, nil
	case KernelPathAuto, KernelPathRequired:
	default:
		return nil, fmt.Errorf("turnserver: kernel path %q: want off, auto or required", mode)
	}
	switch hooks {
	case "", KernelModeAuto, KernelModeXDP, KernelModeTC:
	default:
		return nil, fmt.Errorf("turnserver: kernel path mode %q: want auto, xdp or tc", hooks)
	}
	fail := func(err error) (*kernelPath, error) {
		if mode == KernelPathRequired {
			return nil, fmt.Errorf("turnserver: kernel_path is required but unavailable: %w", err)
		}
		s.log.Warn().Err(err).Msg("kernel path unavailable; relaying in user space")
		return nil, nil
	}
	if s.cfg.NoFastPath {
		return fail(errors.New("the kernel path extends the channel fast path, which is off"))
	}
	log := s.log
	// The watcher may report before k exists: then there is nothing to
	// re-route yet.
	var self atomic.Pointer[kernelPath]
	p, err := kernelpath.Open(kernelpath.Options{
		Mode: hooks, LegacyTC: s.cfg.kernelLegacyTC, Watch: true,
		// Interfaces that come and go after start, each said once.
		OnChange: func(a kernelpath.Attachment, attached bool) {
			if attached {
				logAttachment(log, a, "kernel path: interface attached")
			} else {
				log.Info().Str("interface", a.Name).Str("hook", a.Hook).Msg("kernel path: interface gone")
			}
			if k := self.Load(); k != nil {
				k.reroute()
			}
		},
		OnError: func(err error) {
			log.Warn().Err(err).Msg("kernel path: an interface stays in user space")
		},
	})
	if err != nil {
		return fail(err)
	}
	k := &kernelPath{p: p, s: s, log: s.log,
		installed: make(map[*relayPacketConn]map[netip.AddrPort]kernelpath.Binding),
		warned:    make(map[string]bool)}
	if err := s.cfg.Registerer.Register(kernelCollector{k: k, reg: s.reg}); err != nil {
		return nil, errors.Join(fmt.Errorf("turnserver: kernel path metrics: %w", err), p.Close())
	}
	self.Store(k)
	for _, a := range p.Attachments() {
		logAttachment(s.log, a, "kernel path: interface attached")
	}
	s.log.Info().Str("mode", hooks).Strs("interfaces", p.Interfaces()).
		Msg("kernel path on: bound channels' ChannelData relayed by eBPF (XDP only where the mode allows and the driver has it natively: on veth, XDP_TX/redirect needs XDP on the peer device)")
	return k, nil
}

// logAttachment says where the program serves an interface (its name is
// the host's own configuration, not a client's).
func logAttachment(log zerolog.Logger, a kernelpath.Attachment, msg string) {
	ev := log.Info().Str("interface", a.Name).Str("hook", a.Hook)
	if a.Note != "" {
		ev = ev.Str("note", a.Note)
	}
	ev.Msg(msg)
}

// kernelCollector exports what the kernel path holds and relayed.
type kernelCollector struct {
	k   *kernelPath
	reg *registry
}

var (
	kernelChannelsDesc = prometheus.NewDesc("icebox_turn_kernel_path_channels",
		"Channels the kernel path relays (entries in its maps).", nil, nil)
	kernelPacketsDesc = prometheus.NewDesc("icebox_turn_kernel_relayed_packets_total",
		"The part of icebox_turn_relayed_packets_total relayed by the kernel path, by direction (to_peer, from_peer).",
		[]string{"direction"}, nil)
	kernelPassedDesc = prometheus.NewDesc("icebox_turn_kernel_path_passed_total",
		"Datagrams of a channel in the kernel's maps that the kernel path left to user space (expired, too_big) or dropped half-rewritten (error).",
		[]string{"reason"}, nil)
	kernelInterfacesDesc = prometheus.NewDesc("icebox_turn_kernel_path_interfaces",
		"Interfaces the kernel path is attached to, by hook (xdp: native XDP with tc behind it, tcx, tc: clsact/cls_bpf before kernel 6.6).",
		[]string{"hook"}, nil)
	kernelHookDesc = prometheus.NewDesc("icebox_turn_kernel_path_hook_packets_total",
		"Datagrams the kernel path relayed at each hook (xdp, tc: tcx or cls_bpf).",
		[]string{"hook"}, nil)
	kernelXDPPassedDesc = prometheus.NewDesc("icebox_turn_kernel_path_xdp_passed_total",
		"Datagrams of a channel in the kernel's maps that XDP left to the tc program or user space (no neighbour entry or route yet, an egress device without XDP or forwarding, too big, expired).",
		nil, nil)
)

func (c kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- kernelChannelsDesc
	ch <- kernelPacketsDesc
	ch <- kernelPassedDesc
	ch <- kernelInterfacesDesc
	ch <- kernelHookDesc
	ch <- kernelXDPPassedDesc
}

func (c kernelCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(kernelChannelsDesc, prometheus.GaugeValue, float64(c.k.bindings()))
	c.reg.mu.Lock()
	live := make([]*allocation, 0, len(c.reg.byID))
	for _, a := range c.reg.byID {
		live = append(live, a)
	}
	t := c.k.relayed(live)
	c.reg.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(kernelPacketsDesc, prometheus.CounterValue, float64(t.packetsToPeer), "to_peer")
	ch <- prometheus.MustNewConstMetric(kernelPacketsDesc, prometheus.CounterValue, float64(t.packetsFromPeer), "from_peer")
	st := c.k.p.Stats()
	ch <- prometheus.MustNewConstMetric(kernelPassedDesc, prometheus.CounterValue, float64(st.Expired), "expired")
	ch <- prometheus.MustNewConstMetric(kernelPassedDesc, prometheus.CounterValue, float64(st.TooBig), "too_big")
	ch <- prometheus.MustNewConstMetric(kernelPassedDesc, prometheus.CounterValue, float64(st.Errors), "error")
	ch <- prometheus.MustNewConstMetric(kernelHookDesc, prometheus.CounterValue, float64(st.RelayedXDP), kernelpath.HookXDP)
	ch <- prometheus.MustNewConstMetric(kernelHookDesc, prometheus.CounterValue, float64(st.RelayedTC), kernelpath.HookTC)
	ch <- prometheus.MustNewConstMetric(kernelXDPPassedDesc, prometheus.CounterValue, float64(st.XDPPassed))
	per := make(map[string]int)
	for _, a := range c.k.p.Attachments() {
		per[a.Hook]++
	}
	for _, h := range kernelpath.Hooks() {
		ch <- prometheus.MustNewConstMetric(kernelInterfacesDesc, prometheus.GaugeValue, float64(per[h]), h)
	}
}

// eligible reports why c's channels stay in user space ("" if they may go
// to the kernel).
func (k *kernelPath) eligible(c *relayPacketConn) string {
	switch {
	case c.closed.Load():
		return "closed"
	case c.a.scoped:
		return "scoped"
	case k.s.reg.bw.on.Load():
		return "bandwidth limits are enforced in user space"
	}
	return ""
}

// sync makes the maps hold exactly c's live, allowed bindings.
func (k *kernelPath) sync(c *relayPacketConn) {
	// Under the lock from the reading on: two syncs of c must not apply
	// what they read in the other order (a permission just removed would
	// come back).
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	want := make(map[netip.AddrPort]kernelpath.Binding)
	if why := k.eligible(c); why == "" {
		if peers := c.peers.Load(); peers != nil {
			policy := k.s.policy.Load()
			for peer, b := range *peers {
				if b.live(now) && policy.Allow(peer) {
					want[peer] = kernelpath.Binding{
						Listener: unmapAP(b.ln.sock.LocalAddr()), Client: unmapAP(b.clientAP),
						Channel: b.channel, Relay: unmapAP(c.sock.LocalAddr()), Peer: peer,
						Alloc: uint32(c.a.id), Expires: b.expires,
					}
				}
			}
		}
	} else if why != "closed" && why != "scoped" {
		k.warnOnce(why, nil)
	}
	// Wildcard listener and relay addresses are filled in as the kernel
	// sends from them now (a changed host address is a changed binding).
	for peer, w := range want {
		r, err := k.p.Resolve(w)
		if err != nil {
			k.warnOnce("no source address", err)
			delete(want, peer)
			continue
		}
		want[peer] = r
	}
	have := k.installed[c]
	next := make(map[netip.AddrPort]kernelpath.Binding, len(want))
	for peer, inst := range have {
		if w, ok := want[peer]; ok && same(w, inst) {
			next[peer] = inst
			delete(want, peer)
			continue
		}
		k.p.Delete(inst)
	}
	for peer, w := range want {
		inst, err := k.p.Put(w)
		if err != nil {
			k.warnOnce("map entry refused", err)
			continue
		}
		next[peer] = inst
	}
	if len(next) == 0 {
		delete(k.installed, c)
		return
	}
	k.installed[c] = next
}

// same reports whether installed is w (both resolved).
func same(w, installed kernelpath.Binding) bool {
	return w.Listener == installed.Listener && w.Client == installed.Client && w.Channel == installed.Channel &&
		w.Relay == installed.Relay && w.Peer == installed.Peer && w.Alloc == installed.Alloc &&
		w.Expires.Equal(installed.Expires)
}

// syncAll re-checks every relay socket (a policy or limit change).
func (k *kernelPath) syncAll() {
	k.s.relays.Range(func(_, v any) bool {
		k.sync(v.(*relayPacketConn))
		return true
	})
}

// reroute puts every installed binding again, its egress devices looked
// up anew, after an interface came or went: a binding whose device is gone
// would otherwise be sent into nothing by the kernel until its next
// refresh. One that has no route now leaves the maps (user space relays
// it, or finds it unreachable as before).
func (k *kernelPath) reroute() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for c, m := range k.installed {
		for peer, inst := range m {
			if _, err := k.p.Put(inst); err != nil {
				k.p.Delete(inst)
				delete(m, peer)
				k.warnOnce("no route after an interface change", err)
			}
		}
		if len(m) == 0 {
			delete(k.installed, c)
		}
	}
}

// drop removes c's bindings (its socket is closing).
func (k *kernelPath) drop(c *relayPacketConn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, inst := range k.installed[c] {
		k.p.Delete(inst)
	}
	delete(k.installed, c)
}

// traffic is what the kernel relayed for a.
func (k *kernelPath) traffic(a *allocation) traffic {
	c, ok := k.p.Counters(uint32(a.id))
	if !ok {
		return traffic{}
	}
	return traffic{bytesToPeer: c.BytesToPeer, bytesFromPeer: c.BytesToClient,
		packetsToPeer: c.PacketsToPeer, packetsFromPeer: c.PacketsToClient}
}

// forget drops a's counters once they were added up for the last time.
func (k *kernelPath) forget(a *allocation) {
	t := k.traffic(a)
	k.retiredMu.Lock()
	k.retired.add(t)
	k.retiredMu.Unlock()
	k.p.DeleteCounters(uint32(a.id))
}

// relayed is what the kernel relayed for released allocations and, under
// the registry's lock, the live ones.
func (k *kernelPath) relayed(live []*allocation) traffic {
	k.retiredMu.Lock()
	t := k.retired
	k.retiredMu.Unlock()
	for _, a := range live {
		t.add(k.traffic(a))
	}
	return t
}

// bindings counts the channels in the maps.
func (k *kernelPath) bindings() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, m := range k.installed {
		n += len(m)
	}
	return n
}

// warnOnce logs why channels stay in user space, once per kind of reason
// (the first error of a kind stands for the rest: they name addresses).
func (k *kernelPath) warnOnce(kind string, err error) {
	k.warnMu.Lock()
	seen := k.warned[kind]
	k.warned[kind] = true
	k.warnMu.Unlock()
	if seen {
		return
	}
	ev := k.log.Warn().Str("reason", kind)
	if err != nil {
		ev = ev.Err(err)
	}
	ev.Msg("kernel path: some channels are kept in user space")
}

func (k *kernelPath) close() error { return k.p.Close() }

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// kernelSync brings c's kernel entries in line with its bindings and
// permissions (after a change to either; not under c.bindMu).
func (c *relayPacketConn) kernelSync() {
	if k := c.s.reg.kernel.Load(); k != nil {
		k.sync(c)
	}
}

// kernelSyncAll re-checks every channel in the kernel (the policy or the
// bandwidth limits changed).
func (s *Server) kernelSyncAll() {
	if k := s.reg.kernel.Load(); k != nil {
		k.syncAll()
	}
}
