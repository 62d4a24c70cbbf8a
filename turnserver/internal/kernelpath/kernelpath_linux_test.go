//go:build linux

package kernelpath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// bed is a client, the relay host and a peer, in three namespaces joined by
// two veth pairs (the relay host between them, no IP forwarding), with the
// kernel path loaded in the relay's namespace and one channel bound.
type bed struct {
	client, relay, peer *netbed.NS
	path                *Path
	cc, pc              *net.UDPConn
	b                   Binding
}

// addrs of the bed, by family: client, listener, relay, peer.
var bedAddrs = map[bool][4]string{
	false: {"10.1.0.2", "10.1.0.1", "10.2.0.1", "10.2.0.2"},
	true:  {"fd01::2", "fd01::1", "fd02::1", "fd02::2"},
}

// bedOpts: checksum offloads on; IPv6; Open's options.
type bedOpts struct {
	offload, v6 bool
	open        Options
	before      func(relay *netbed.NS) // runs before Open
}

func newBed(t *testing.T, offload, v6 bool) *bed {
	t.Helper()
	return newBedWith(t, bedOpts{offload: offload, v6: v6})
}

func newBedWith(t *testing.T, o bedOpts) *bed {
	t.Helper()
	offload, v6 := o.offload, o.v6
	nb := netbed.New(t)
	c, r, p := nb.Namespace("c"), nb.Namespace("r"), nb.Namespace("p")
	a := bedAddrs[v6]
	netbed.Link(c, "vc", "", r, "vr1", "")
	netbed.Link(p, "vp", "", r, "vr2", "")
	bits := "/24"
	if v6 {
		bits = "/64"
	}
	c.AddAddr("vc", a[0]+bits)
	r.AddAddr("vr1", a[1]+bits)
	r.AddAddr("vr2", a[2]+bits)
	p.AddAddr("vp", a[3]+bits)
	c.DefaultRoute(a[1])
	p.DefaultRoute(a[2])
	if !offload {
		if _, err := exec.LookPath("ethtool"); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("ethtool not found; CI installs it (scripts/install-test-deps.sh)")
			}
			t.Skip("ethtool not found (apt-get install ethtool): the checksum test turns offloads off with it")
		}
		// Every sender computes its checksums and every receiver verifies
		// them in software: a wrong one is dropped and counted.
		for _, x := range []struct {
			ns  *netbed.NS
			ifc string
		}{{c, "vc"}, {r, "vr1"}, {r, "vr2"}, {p, "vp"}} {
			x.ns.Run("ethtool", "-K", x.ifc, "tx", "off", "rx", "off")
		}
	}
	if o.open.Mode == ModeXDP {
		// A frame that XDP sends into a veth (XDP_TX back out of vr1, a
		// redirect out of vr2) is received by the veth's peer only if
		// that peer runs XDP itself (or has GRO on): the client's and the
		// peer's ends run a program that passes everything.
		passXDP(t, c, "vc")
		passXDP(t, p, "vp")
		// bpf_fib_lookup answers only for a device that forwards; the
		// relay host routes nothing of others' all the same.
		r.Run("iptables", "-P", "FORWARD", "DROP")
		r.Run("ip6tables", "-P", "FORWARD", "DROP")
		for _, ifc := range []string{"vr1", "vr2"} {
			r.Run("sysctl", "-qw", "net.ipv4.conf."+ifc+".forwarding=1", "net.ipv6.conf."+ifc+".forwarding=1")
		}
	}
	if o.before != nil {
		o.before(r)
	}
	bd := &bed{client: c, relay: r, peer: p}
	if err := r.Do(func() error {
		var err error
		bd.path, err = Open(o.open)
		return err
	}); err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := bd.path.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	listen := func(ns *netbed.NS, addr string) *net.UDPConn {
		var uc *net.UDPConn
		if err := ns.Do(func() error {
			var err error
			uc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), 0)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = uc.Close() })
		return uc
	}
	bd.cc = listen(c, a[0])
	bd.pc = listen(p, a[3])
	bd.b = Binding{
		Listener: netip.AddrPortFrom(netip.MustParseAddr(a[1]), 3478),
		Client:   bd.cc.LocalAddr().(*net.UDPAddr).AddrPort(),
		Channel:  0x4001,
		Relay:    netip.AddrPortFrom(netip.MustParseAddr(a[2]), 50000),
		Peer:     bd.pc.LocalAddr().(*net.UDPAddr).AddrPort(),
		Alloc:    7,
		Expires:  time.Now().Add(time.Minute),
	}
	if err := r.Do(func() error { _, err := bd.path.Put(bd.b); return err }); err != nil {
		t.Fatalf("put: %v", err)
	}
	return bd
}

// passXDP attaches an XDP program that passes every frame to ifc in ns,
// until the test ends.
func passXDP(t *testing.T, ns *netbed.NS, ifc string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		t.Fatalf("pass-through XDP: %v", err)
	}
	t.Cleanup(func() { _ = prog.Close() })
	if err := ns.Do(func() error {
		ni, err := net.InterfaceByName(ifc)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ni.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		t.Cleanup(func() { _ = l.Close() })
		return nil
	}); err != nil {
		t.Fatalf("pass-through XDP on %s: %v", ifc, err)
	}
}

// payload is datagram i of a run: its size and bytes differ per i.
func payload(i, size int) []byte {
	p := make([]byte, size)
	for j := range p {
		p[j] = byte(i*31 + j*7)
	}
	return p
}

// sizes cross the mover's chunk boundaries and include odd lengths (the
// checksum's byte parity).
var sizes = []int{1, 2, 3, 13, 255, 256, 257, 511, 512, 513, 1000, 1199, 1200, 1400}

func channelData(ch uint16, p []byte) []byte {
	d := make([]byte, 4+len(p))
	binary.BigEndian.PutUint16(d[0:2], ch)
	binary.BigEndian.PutUint16(d[2:4], uint16(len(p)))
	copy(d[4:], p)
	return d
}

// padded is channelData padded to 4 bytes, with nonzero padding (a
// receiver ignores its value; the checksum must not).
func padded(ch uint16, p []byte) []byte {
	d := channelData(ch, p)
	for len(d)%4 != 0 {
		d = append(d, 0xa5)
	}
	return d
}

func read(t *testing.T, c *net.UDPConn) ([]byte, netip.AddrPort) {
	t.Helper()
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n], from
}

// relayBoth sends every size both ways and checks each datagram byte for
// byte and its addresses.
func (bd *bed) relayBoth(t *testing.T, rounds int) {
	t.Helper()
	listener, relay := net.UDPAddrFromAddrPort(bd.b.Listener), net.UDPAddrFromAddrPort(bd.b.Relay)
	for r := range rounds {
		for i, size := range sizes {
			want := payload(r*100+i, size)
			msg := channelData(bd.b.Channel, want)
			if r%2 == 1 {
				msg = padded(bd.b.Channel, want)
			}
			if _, err := bd.cc.WriteToUDP(msg, listener); err != nil {
				t.Fatal(err)
			}
			got, from := read(t, bd.pc)
			if !bytes.Equal(got, want) || from != bd.b.Relay {
				t.Fatalf("to peer, %d bytes: got %d bytes from %v, want %d from %v (equal %v)",
					size, len(got), from, len(want), bd.b.Relay, bytes.Equal(got, want))
			}
			if _, err := bd.pc.WriteToUDP(want, relay); err != nil {
				t.Fatal(err)
			}
			got, from = read(t, bd.cc)
			if !bytes.Equal(got, channelData(bd.b.Channel, want)) || from != bd.b.Listener {
				t.Fatalf("to client, %d bytes: got %d bytes from %v, want %d from %v",
					size, len(got), from, len(want)+4, bd.b.Listener)
			}
		}
	}
}

// csumErrors reads UDP InCsumErrors (IPv4 and IPv6) inside ns.
func csumErrors(t *testing.T, ns *netbed.NS) uint64 {
	t.Helper()
	n := csumErrors4(t, ns)
	for _, line := range strings.Split(ns.Run("cat", "/proc/net/snmp6"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6InCsumErrors" {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			n += v
		}
	}
	return n
}

func csumErrors4(t *testing.T, ns *netbed.NS) uint64 {
	t.Helper()
	out := ns.Run("cat", "/proc/net/snmp")
	var names []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "InCsumErrors" && i < len(f) {
				v, err := strconv.ParseUint(f[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("no Udp InCsumErrors in /proc/net/snmp:\n%s", out)
	return 0
}

func TestRelayBothWays(t *testing.T) {
	for _, tc := range []struct {
		offload, v6 bool
		mode        string
		legacy      bool
	}{
		{true, false, ModeTC, false}, {false, false, ModeTC, false}, {true, true, ModeTC, false}, {false, true, ModeTC, false},
		// XDP with the senders' checksums in full (offload off), as frames
		// from a wire carry them: a local sender's checksum offload over
		// veth leaves a partial one in the frame, which XDP cannot tell
		// (no skb) and a redirect sends on as it is — why ModeAuto leaves
		// veth to tc.
		{false, false, ModeXDP, false}, {false, true, ModeXDP, false},
		{true, false, ModeTC, true}, {true, true, ModeTC, true},
	} {
		t.Run(fmt.Sprintf("offload=%v,ipv6=%v,mode=%s,legacy=%v", tc.offload, tc.v6, tc.mode, tc.legacy), func(t *testing.T) {
			bd := newBedWith(t, bedOpts{offload: tc.offload, v6: tc.v6, open: Options{Mode: tc.mode, LegacyTC: tc.legacy}})
			hook := HookTCX
			switch {
			case tc.mode == ModeXDP:
				hook = HookXDP
			case tc.legacy:
				hook = HookTC
			}
			for _, a := range bd.path.Attachments() {
				if a.Hook != hook {
					t.Errorf("%s attached at %s, want %s", a.Name, a.Hook, hook)
				}
			}
			st0 := bd.stats()
			const rounds = 3
			bd.relayBoth(t, rounds)
			var c Counters
			var ok bool
			_ = bd.relay.Do(func() error { c, ok = bd.path.Counters(bd.b.Alloc); return nil })
			var bytesEach uint64
			for _, s := range sizes {
				bytesEach += uint64(s)
			}
			n := uint64(rounds * len(sizes))
			want := Counters{PacketsToPeer: n, BytesToPeer: rounds * bytesEach, PacketsToClient: n, BytesToClient: rounds * bytesEach}
			if !ok || c != want {
				t.Errorf("counters: got %+v (%v), want %+v", c, ok, want)
			}
			for _, ns := range []*netbed.NS{bd.client, bd.peer} {
				if n := csumErrors(t, ns); n != 0 {
					t.Errorf("%s: %d UDP checksum errors", ns.Name, n)
				}
			}
			// Which hook did the work: all of it at the one chosen.
			st := bd.stats()
			xdp, tcn := st.RelayedXDP-st0.RelayedXDP, st.RelayedTC-st0.RelayedTC
			// XDP passes a datagram whose next hop has no neighbour entry
			// yet to the tc program, which resolves it: the first of each
			// direction at most.
			if (hook == HookXDP && (xdp+tcn != 2*n || tcn > 2)) || (hook != HookXDP && (tcn != 2*n || xdp != 0)) {
				t.Errorf("relayed at XDP %d, at tc %d; want all %d at %s", xdp, tcn, 2*n, hook)
			}
			t.Logf("%s: %d datagrams relayed at XDP, %d at tc, byte-exact; passed by XDP %d", hook, xdp, tcn, st.XDPPassed)
		})
	}
}

func (bd *bed) stats() Stats {
	var st Stats
	_ = bd.relay.Do(func() error { st = bd.path.Stats(); return nil })
	return st
}

// TestEndsRelaying: an expired entry and a deleted one relay nothing (the
// datagrams go up to the relay's stack, where no socket listens).
func TestEndsRelaying(t *testing.T) {
	forHooks(t, func(t *testing.T, o bedOpts) { endsRelaying(t, o) })
}

// forHooks runs body on a bed at tcx and one at XDP (offloads off: see
// TestRelayBothWays).
func forHooks(t *testing.T, body func(*testing.T, bedOpts)) {
	t.Run("tcx", func(t *testing.T) { body(t, bedOpts{offload: true, open: Options{Mode: ModeTC}}) })
	t.Run("xdp", func(t *testing.T) { body(t, bedOpts{open: Options{Mode: ModeXDP}}) })
}

func endsRelaying(t *testing.T, o bedOpts) {
	bd := newBedWith(t, o)
	bd.relayBoth(t, 1)
	expired := bd.b
	expired.Expires = time.Now().Add(-time.Second)
	if err := bd.relay.Do(func() error { _, err := bd.path.Put(expired); return err }); err != nil {
		t.Fatal(err)
	}
	bd.expectNothing(t)
	var st Stats
	_ = bd.relay.Do(func() error { st = bd.path.Stats(); return nil })
	// Each datagram once, whichever hook saw it first.
	if st.Expired != 2 {
		t.Errorf("stats: got %+v, want Expired 2", st)
	}
	if err := bd.relay.Do(func() error { _, err := bd.path.Put(bd.b); return err }); err != nil {
		t.Fatal(err)
	}
	bd.relayBoth(t, 1)
	_ = bd.relay.Do(func() error { bd.path.Delete(bd.b); return nil })
	bd.expectNothing(t)
}

// expectNothing sends one datagram each way and checks that neither
// arrives.
func (bd *bed) expectNothing(t *testing.T) {
	t.Helper()
	if _, err := bd.cc.WriteToUDP(channelData(bd.b.Channel, []byte("x")), net.UDPAddrFromAddrPort(bd.b.Listener)); err != nil {
		t.Fatal(err)
	}
	if _, err := bd.pc.WriteToUDP([]byte("y"), net.UDPAddrFromAddrPort(bd.b.Relay)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*net.UDPConn{bd.pc, bd.cc} {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 64)
		if n, from, err := c.ReadFromUDP(buf); err == nil {
			t.Errorf("got %q from %v, want nothing", buf[:n], from)
		}
	}
}

// TestTooBigGoesUp: a datagram that would exceed the egress MTU once
// relayed is left to the stack (and user space), and counted.
func TestTooBigGoesUp(t *testing.T) {
	forHooks(t, func(t *testing.T, o bedOpts) { tooBigGoesUp(t, o) })
}

func tooBigGoesUp(t *testing.T, o bedOpts) {
	bd := newBedWith(t, o)
	bd.relay.Run("ip", "link", "set", "vr1", "mtu", "1000") // towards the client
	// To the client, 900 bytes + the 4-byte header fit; 990 do not.
	if _, err := bd.pc.WriteToUDP(payload(1, 900), net.UDPAddrFromAddrPort(bd.b.Relay)); err != nil {
		t.Fatal(err)
	}
	if got, _ := read(t, bd.cc); len(got) != 904 {
		t.Fatalf("to client: got %d bytes, want 904", len(got))
	}
	if _, err := bd.pc.WriteToUDP(payload(2, 1000-28-2), net.UDPAddrFromAddrPort(bd.b.Relay)); err != nil {
		t.Fatal(err)
	}
	_ = bd.cc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 2048)
	if n, _, err := bd.cc.ReadFromUDP(buf); err == nil {
		t.Fatalf("client got %d bytes, want nothing (too big for the kernel path)", n)
	}
	var st Stats
	_ = bd.relay.Do(func() error { st = bd.path.Stats(); return nil })
	if st.TooBig != 1 {
		t.Errorf("stats: %+v, want TooBig 1", st)
	}
}

// TestLegacyTC: forced onto the older tc hook (a clsact qdisc and a
// cls_bpf filter, as before kernel 6.6), the program relays, and Close
// removes its filter, and the qdisc where icebox added it — but not a
// clsact qdisc that was there before.
func TestLegacyTC(t *testing.T) {
	bd := newBedWith(t, bedOpts{offload: true, open: Options{Mode: ModeTC, LegacyTC: true}, before: func(r *netbed.NS) {
		r.Run("tc", "qdisc", "add", "dev", "vr2", "clsact") // someone else's
	}})
	for _, a := range bd.path.Attachments() {
		if a.Hook != HookTC {
			t.Errorf("%s attached at %s, want %s", a.Name, a.Hook, HookTC)
		}
	}
	for _, ifc := range []string{"vr1", "vr2"} {
		if out := bd.relay.Run("tc", "filter", "show", "dev", ifc, "ingress"); !strings.Contains(out, "icebox_relay") {
			t.Errorf("%s: no icebox filter at ingress:\n%s", ifc, out)
		}
	}
	bd.relayBoth(t, 1)
	if st := bd.stats(); st.RelayedTC != uint64(2*len(sizes)) {
		t.Errorf("relayed at tc %d, want %d", st.RelayedTC, 2*len(sizes))
	}
	if err := bd.relay.Do(func() error { return bd.path.Close() }); err != nil {
		t.Fatalf("close: %v", err)
	}
	for _, ifc := range []string{"vr1", "vr2"} {
		if out := bd.relay.Run("tc", "filter", "show", "dev", ifc, "ingress"); out != "" {
			t.Errorf("%s: filters left at ingress:\n%s", ifc, out)
		}
	}
	if out := bd.relay.Run("tc", "qdisc", "show", "dev", "vr1"); strings.Contains(out, "clsact") {
		t.Errorf("vr1: icebox's clsact qdisc left behind:\n%s", out)
	}
	if out := bd.relay.Run("tc", "qdisc", "show", "dev", "vr2"); !strings.Contains(out, "clsact") {
		t.Errorf("vr2: the clsact qdisc that was there before was removed:\n%s", out)
	}
	bd.expectNothing(t)
}

// TestWatchNewInterface: an interface that appears after Open is
// attached (and said once), relays, and is forgotten when it goes.
func TestWatchNewInterface(t *testing.T) {
	type event struct {
		a  Attachment
		on bool
	}
	events := make(chan event, 16)
	bd := newBedWith(t, bedOpts{offload: true, open: Options{Mode: ModeAuto, Watch: true,
		OnChange: func(a Attachment, on bool) { events <- event{a, on} },
		OnError:  func(err error) { t.Errorf("watcher: %v", err) },
	}})
	if n := len(bd.path.Attachments()); n != 2 {
		t.Fatalf("attached to %d interfaces at Open, want 2", n)
	}
	// A third network, after Open: a new peer behind vr3.
	q := netbed.New(t).Namespace("q")
	netbed.Link(q, "vq", "10.3.0.2/24", bd.relay, "vr3", "10.3.0.1/24")
	q.DefaultRoute("10.3.0.1")
	wait := func(what string, want func(event) bool) event {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case e := <-events:
				if want(e) {
					return e
				}
				t.Errorf("unexpected interface event %+v", e)
			case <-deadline:
				t.Fatalf("no event: %s", what)
			}
		}
	}
	e := wait("vr3 attached", func(e event) bool { return e.on && e.a.Name == "vr3" })
	if e.a.Hook != HookTCX {
		t.Errorf("vr3 attached at %s, want tcx (veth in mode auto)", e.a.Hook)
	}
	var pc *net.UDPConn
	if err := q.Do(func() error {
		var err error
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("10.3.0.2")})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	bd.pc = pc
	bd.b.Relay = netip.MustParseAddrPort("10.3.0.1:50001")
	bd.b.Peer = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	bd.b.Channel = 0x4002
	if err := bd.relay.Do(func() error { _, err := bd.path.Put(bd.b); return err }); err != nil {
		t.Fatalf("put: %v", err)
	}
	st0 := bd.stats()
	bd.relayBoth(t, 1)
	if st := bd.stats(); st.RelayedTC-st0.RelayedTC != uint64(2*len(sizes)) {
		t.Errorf("relayed at tc %d, want %d (through vr3)", st.RelayedTC-st0.RelayedTC, 2*len(sizes))
	}
	bd.relay.Run("ip", "link", "del", "vr3")
	wait("vr3 forgotten", func(e event) bool { return !e.on && e.a.Name == "vr3" })
	if n := len(bd.path.Attachments()); n != 2 {
		t.Errorf("attached to %d interfaces after vr3 went, want 2", n)
	}
}
