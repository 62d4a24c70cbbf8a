//go:build linux

package turnserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/turnserver/internal/kernelpath"
)

// The kernel path's tests run the relay inside a network namespace: its
// program attaches to every interface of the relay's namespace, which must
// not be the machine's. TestKernelPathNetns builds the bed — a client, the
// relay and a peer in three namespaces joined by two veth pairs — and runs
// this test binary again inside the relay's namespace for
// TestKernelPathInNamespace, which the environment variable below names
// the other two namespaces to.
const kernelBedEnv = "TURNSERVER_TEST_KERNEL_BED"

func TestKernelPathNetns(t *testing.T) {
	if os.Getenv(kernelBedEnv) != "" {
		t.Skip("inside the bed already")
	}
	// The same tests at each hook: tcx, native XDP (the interfaces
	// forward; the bed's ends run XDP), and the clsact/cls_bpf hook of
	// kernels before 6.6 (forced here).
	for _, hook := range []string{kernelpath.HookTCX, kernelpath.HookXDP, kernelpath.HookTC} {
		t.Run(hook, func(t *testing.T) { kernelPathBed(t, hook) })
	}
}

func kernelPathBed(t *testing.T, hook string) {
	nb := netbed.New(t)
	c, r, p := nb.Namespace("c"), nb.Namespace("r"), nb.Namespace("p")
	// q: a peer's namespace joined to the relay only once icebox runs.
	q := nb.Namespace("q")
	netbed.Link(c, "vc", "10.1.0.2/24", r, "vr1", "10.1.0.1/24")
	netbed.Link(p, "vp", "10.2.0.2/24", r, "vr2", "10.2.0.1/24")
	c.DefaultRoute("10.1.0.1")
	p.DefaultRoute("10.2.0.1")
	c.AddAddr("vc", "fd01::2/64")
	r.AddAddr("vr1", "fd01::1/64")
	r.AddAddr("vr2", "fd02::1/64")
	p.AddAddr("vp", "fd02::2/64")
	c.DefaultRoute("fd01::1")
	p.DefaultRoute("fd02::1")
	r.Run("ip", "link", "set", "lo", "up")
	if hook == kernelpath.HookXDP {
		xdpBed(t, r, []string{"vr1", "vr2"}, nsIf{c, "vc"}, nsIf{p, "vp"})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := r.Command(ctx, os.Args[0], "-test.run=^TestKernelPathInNamespace$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), kernelBedEnv+"="+strings.Join([]string{c.Name, p.Name, r.Name, hook, q.Name}, " "))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestKernelPathInNamespace") {
		t.Fatalf("in the relay's namespace: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "kernel_linux_test.go") {
			t.Log(strings.TrimSpace(line))
		}
	}
}

// nsIf is an interface in a namespace.
type nsIf struct {
	ns  *netbed.NS
	ifc string
}

// xdpBed readies a veth bed for the XDP hook. The relay's interfaces
// forward (bpf_fib_lookup answers only for a forwarding device; the
// FORWARD policy drop keeps the relay from routing others' packets all the
// same). Each other end runs a pass-through XDP program (a veth hands
// what XDP sends into it to its peer only then) and computes its
// checksums itself, as frames from a wire carry them (XDP cannot tell a
// partial checksum of offload, and would send it on as it is).
func xdpBed(t *testing.T, relay *netbed.NS, relayIfs []string, ends ...nsIf) {
	t.Helper()
	if _, err := exec.LookPath("ethtool"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ethtool not found; CI installs it (scripts/install-test-deps.sh)")
		}
		t.Skip("ethtool not found (apt-get install ethtool): the XDP bed turns checksum offload off with it")
	}
	relay.Run("iptables", "-P", "FORWARD", "DROP")
	relay.Run("ip6tables", "-P", "FORWARD", "DROP")
	for _, ifc := range relayIfs {
		relay.Run("sysctl", "-qw", "net.ipv4.conf."+ifc+".forwarding=1", "net.ipv6.conf."+ifc+".forwarding=1")
	}
	for _, e := range ends {
		e.ns.Run("ethtool", "-K", e.ifc, "tx", "off")
		passThroughXDP(t, e.ns.Do, e.ifc)
	}
}

// passThroughXDP attaches, where do runs, an XDP program to ifc that
// passes every frame, until the test ends.
func passThroughXDP(t *testing.T, do func(func() error) error, ifc string) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2 /* XDP_PASS */), asm.Return()}})
	if err != nil {
		t.Fatalf("pass-through XDP: %v", err)
	}
	t.Cleanup(func() { _ = prog.Close() })
	if err := do(func() error {
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

// kernelBed is what TestKernelPathInNamespace works with; v6: the
// clients and peers use IPv6 (fd01::2 → fd01::1, relays on fd02::1, peers
// on fd02::2).
type kernelBed struct {
	client, peer, relay *netbed.NS
	v6                  bool
	// hook: the hook the bed is for (kernelpath.Hook*).
	hook string
	// peerIP: the peers' address ("": 10.2.0.2, fd02::2).
	peerIP string
	// logs, if set, also gets start's server's log.
	logs *lockedBuffer
}

// hookStats are the kernel path's counters of srv (its relayed
// datagrams per hook).
func hookStats(srv *Server) kernelpath.Stats { return srv.reg.kernel.Load().p.Stats() }

// atHook checks that the bed's hook relayed the datagrams between before
// and after, n of them, and the other hook none.
func (kb *kernelBed) atHook(t *testing.T, before, after kernelpath.Stats, n uint64) {
	t.Helper()
	xdp, tc := after.RelayedXDP-before.RelayedXDP, after.RelayedTC-before.RelayedTC
	if (kb.hook == kernelpath.HookXDP && (xdp != n || tc != 0)) || (kb.hook != kernelpath.HookXDP && (tc != n || xdp != 0)) {
		t.Errorf("%s bed: relayed at XDP %d, at tc %d; want all %d at %s", kb.hook, xdp, tc, n, kb.hook)
	}
}

func TestKernelPathInNamespace(t *testing.T) {
	names := strings.Fields(os.Getenv(kernelBedEnv))
	if len(names) != 5 {
		t.Skip("runs inside TestKernelPathNetns's relay namespace")
	}
	kb := &kernelBed{client: &netbed.NS{Name: names[0]}, peer: &netbed.NS{Name: names[1]},
		relay: &netbed.NS{Name: names[2]}, hook: names[3]}
	laterNS := &netbed.NS{Name: names[4]}
	t.Run("attached at the bed's hook", func(t *testing.T) {
		srv, _ := kb.start(t, "10.1.0.1:3477", 50600, 50699, KernelPathRequired, 0)
		atts := srv.reg.kernel.Load().p.Attachments()
		if len(atts) != 2 {
			t.Errorf("attached to %v, want vr1 and vr2", atts)
		}
		for _, a := range atts {
			if a.Hook != kb.hook {
				t.Errorf("%s attached at %s, want %s", a.Name, a.Hook, kb.hook)
			}
		}
		if got := gathered(t, srv, "icebox_turn_kernel_path_interfaces", kb.hook); got != 2 {
			t.Errorf("icebox_turn_kernel_path_interfaces{hook=%q} = %v, want 2", kb.hook, got)
		}
		t.Logf("%s bed: %v", kb.hook, atts)
	})

	t.Run("pion client relays in the kernel", func(t *testing.T) {
		srv, kr := kb.start(t, "10.1.0.1:3478", 50000, 50099, KernelPathRequired, 0)
		relay, peer := kb.allocate(t, srv, kr, "alice", "", "10.1.0.1:3478")
		kb.bound(t, srv, 1)
		a := srv.onlyAllocation(t)
		// The server binds the channel as it answers; pion's client sends
		// Send indications until the answer reaches it.
		k0 := srv.reg.kernel.Load().traffic(a).packetsToPeer
		waitFor(t, "the client sending ChannelData", 5*time.Second, func() bool {
			kb.relayRun(t, relay, peer, 1)
			return srv.reg.kernel.Load().traffic(a).packetsToPeer > k0
		})
		// A Send indication of the warm-up may still be on its way through
		// user space: the baseline once the user-space counters stand still.
		userBefore := a.traffic()
		waitFor(t, "the user-space counters settling", 5*time.Second, func() bool {
			time.Sleep(100 * time.Millisecond) // pacing the poll: unchanged over 100 ms
			now := a.traffic()
			settled := now == userBefore
			userBefore = now
			return settled
		})
		fastBefore := fmt.Sprint(srv.fastPathCounts())
		kernelBefore := srv.reg.kernel.Load().traffic(a) // the exchange's reply may have gone this way
		hooksBefore := hookStats(srv)
		const n = 2000
		kb.relayRun(t, relay, peer, n)
		kb.atHook(t, hooksBefore, hookStats(srv), 2*n)
		if fast := fmt.Sprint(srv.fastPathCounts()); fast != fastBefore {
			t.Errorf("user-space fast path relayed: %s → %s, want no change", fastBefore, fast)
		}
		if user := a.traffic(); user != userBefore {
			t.Errorf("user-space counters moved: %+v → %+v", userBefore, user)
		}
		k := srv.reg.kernel.Load().traffic(a)
		if k.packetsToPeer-kernelBefore.packetsToPeer != n || k.packetsFromPeer-kernelBefore.packetsFromPeer != n {
			t.Errorf("kernel counters: %+v → %+v, want %d more packets each way", kernelBefore, k, n)
		}
		info := srv.Allocations()
		if len(info) != 1 || info[0].PacketsToPeer < n || info[0].PacketsFromPeer < n ||
			info[0].BytesToPeer != userBefore.bytesToPeer+k.bytesToPeer {
			t.Errorf("admin view: %+v, want the kernel's %+v added", info, k)
		}
		if all, _ := srv.reg.relayed(); all.packetsToPeer < n || all.packetsFromPeer < n {
			t.Errorf("relayed packets (the metric): %+v, want ≥ %d each way", all, n)
		}
		if got := gathered(t, srv, "icebox_turn_kernel_path_channels", ""); got != 1 {
			t.Errorf("icebox_turn_kernel_path_channels = %v, want 1", got)
		}
		for _, dir := range []string{"to_peer", "from_peer"} {
			if got := gathered(t, srv, "icebox_turn_kernel_relayed_packets_total", dir); got < n {
				t.Errorf("icebox_turn_kernel_relayed_packets_total{direction=%q} = %v, want ≥ %d", dir, got, n)
			}
		}
		t.Logf("%s bed: kernel path relayed %d datagrams each way, byte-exact, none lost, all at %s; user-space fast path %s (unchanged)",
			kb.hook, n, kb.hook, fastBefore)

		// A deny-listed peer: the policy change empties the maps and user
		// space refuses.
		srv.setPolicy(t, nil)
		kb.bound(t, srv, 0)
		kb.refused(t, relay, peer)
		srv.setPolicy(t, []string{"10.2.0.0/24"})
		kb.bound(t, srv, 1)
		kb.relayRun(t, relay, peer, 10)

		// A bandwidth limit keeps every channel in user space.
		if err := srv.SetBandwidth(Bandwidth{PerAllocation: 100_000_000}); err != nil {
			t.Fatal(err)
		}
		kb.bound(t, srv, 0)
		fastBefore2, _ := srv.fastPathCounts()
		kb.relayRun(t, relay, peer, 10)
		if fast, _ := srv.fastPathCounts(); fast < fastBefore2+10 {
			t.Errorf("limited allocation: user-space fast path relayed %d → %d, want +10", fastBefore2, fast)
		}
	})

	t.Run("turnutils_uclient -y relays in the kernel", func(t *testing.T) {
		uclient, err := exec.LookPath("turnutils_uclient")
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatal("turnutils_uclient not found; CI installs coturn (scripts/install-test-deps.sh)")
			}
			t.Skip("turnutils_uclient not found (apt-get install coturn)")
		}
		srv, _ := kb.start(t, "10.1.0.1:3481", 50300, 50399, KernelPathRequired, 0)
		hooksBefore := hookStats(srv)
		// -y: sessions pair up and send to each other's relay address,
		// which is this host's: the kernel hands each message from one
		// relay to the other allocation's client (PEER_LOCAL).
		const sessions, messages = 10, 500
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var out []byte
		if err := kb.client.Do(func() error {
			cmd := exec.CommandContext(ctx, uclient, "-W", string(testOldSecret), "-u", "uc", "-y", "-c",
				"-l", "172", "-z", "5", "-m", fmt.Sprint(sessions), "-n", fmt.Sprint(messages), "-p", "3481", "10.1.0.1")
			var err error
			out, err = cmd.CombinedOutput()
			return err
		}); err != nil {
			t.Fatalf("turnutils_uclient: %v\n%s", err, out)
		}
		res := string(out)
		if !strings.Contains(res, "Total lost packets 0 (0.000000%)") {
			t.Fatalf("turnutils_uclient lost packets:\n%s", tailLines(res, 15))
		}
		srv.reg.mu.Lock()
		all := srv.reg.retired // uclient released its allocations at the end
		kernel := srv.reg.kernel.Load().relayed(nil)
		srv.reg.mu.Unlock()
		// A pair's first messages may cross before both channels are
		// bound (then user space relays them); the rest is the kernel's.
		if kernel.packetsToPeer < all.packetsToPeer*9/10 || kernel.packetsFromPeer < all.packetsFromPeer*9/10 {
			t.Errorf("kernel relayed %+v of %+v, want ≥ 90%%", kernel, all)
		}
		// A hairpin counts once per hook and twice in the allocations'
		// counters (sent by one, received by the other).
		hooks := hookStats(srv)
		xdp, tc := hooks.RelayedXDP-hooksBefore.RelayedXDP, hooks.RelayedTC-hooksBefore.RelayedTC
		if mine, other := tc, xdp; kb.hook == kernelpath.HookXDP && (xdp < (xdp+tc)*9/10 || xdp == 0) ||
			kb.hook != kernelpath.HookXDP && (other != 0 || mine == 0) {
			t.Errorf("%s bed: relayed at XDP %d, at tc %d", kb.hook, xdp, tc)
		}
		t.Logf("%s bed: turnutils_uclient -y, %d sessions × %d messages: 0 lost; the kernel relayed %d of %d packets to peers and %d of %d to clients (at XDP %d, at tc %d)",
			kb.hook, sessions, messages, kernel.packetsToPeer, all.packetsToPeer, kernel.packetsFromPeer, all.packetsFromPeer, xdp, tc)
	})

	// A measurement, not a check (TURNSERVER_KERNEL_MEASURE=1, without
	// -race): the same uclient -y load relayed in user space and in the
	// kernel, interleaved; the server's CPU (this process's rusage) and the
	// machine's softirq time (/proc/stat: the kernel path's cost is
	// there, and on a shared machine so is everyone else's) per message.
	t.Run("measure", func(t *testing.T) {
		if os.Getenv("TURNSERVER_KERNEL_MEASURE") == "" {
			t.Skip("set TURNSERVER_KERNEL_MEASURE=1 to measure")
		}
		uclient, err := exec.LookPath("turnutils_uclient")
		if err != nil {
			t.Skip("turnutils_uclient not found")
		}
		port := 3490
		for round := range 2 {
			for _, mode := range []string{KernelPathOff, KernelPathRequired} {
				port++
				kb.measure(t, uclient, mode, port, uint16(51000+round*2000+(port%2)*1000), round)
			}
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		kb6 := &kernelBed{client: kb.client, peer: kb.peer, relay: kb.relay, v6: true, hook: kb.hook}
		srv, kr := kb6.start(t, "[fd01::1]:3482", 50400, 50499, KernelPathRequired, 0)
		relay, peer := kb6.allocate(t, srv, kr, "erin", "", "[fd01::1]:3482")
		kb6.bound(t, srv, 1)
		const n = 500
		kb6.inKernel(t, srv, relay, peer, n)
		t.Logf("IPv6: kernel path relayed %d datagrams each way, byte-exact, none lost", n)
	})

	// A listener bound to the wildcard address: the kernel answers the
	// client from the source it picks towards the client (10.1.0.1 here,
	// the address the client sent to), as user space does.
	t.Run("wildcard listener", func(t *testing.T) {
		srv, kr := kb.start(t, "0.0.0.0:3483", 50500, 50599, KernelPathRequired, 0)
		relay, peer := kb.allocate(t, srv, kr, "frank", "", "10.1.0.1:3483")
		kb.bound(t, srv, 1)
		const n = 500
		kb.inKernel(t, srv, relay, peer, n) // each datagram's sender is checked: 10.1.0.1:3483 to the client
		t.Logf("listener on 0.0.0.0: kernel path relayed %d datagrams each way, byte-exact, none lost", n)
	})

	// An interface that appears after start is attached at the bed's hook
	// and relays: a veth pair to a new peer network, 10.3.0.0/24.
	t.Run("interface added after start", func(t *testing.T) {
		logged := *kb
		logged.logs = &lockedBuffer{}
		srv, kr := logged.start(t, "10.1.0.1:3484", 50700, 50799, KernelPathRequired, 0)
		srv.setPolicy(t, []string{"10.2.0.0/24", "10.3.0.0/24"})
		ip := func(args ...string) {
			t.Helper()
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		ip("link", "add", "vr3", "type", "veth", "peer", "name", "vq", "netns", laterNS.Name)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "vr3").Run() })
		inQ := func(args ...string) { ip(append([]string{"netns", "exec", laterNS.Name}, args...)...) }
		inQ("ip", "link", "set", "lo", "up")
		if kb.hook == kernelpath.HookXDP {
			// As xdpBed: the other end runs XDP and sends full
			// checksums; the relay's end forwards. Before vr3 comes up:
			// icebox attaches to it as it does.
			inQ("ethtool", "-K", "vq", "tx", "off")
			passThroughXDP(t, laterNS.Do, "vq")
			if out, err := exec.Command("sysctl", "-qw", "net.ipv4.conf.vr3.forwarding=1").CombinedOutput(); err != nil {
				t.Fatalf("sysctl: %v: %s", err, out)
			}
		}
		inQ("ip", "addr", "add", "10.3.0.2/24", "dev", "vq")
		inQ("ip", "link", "set", "vq", "up")
		inQ("ip", "route", "add", "default", "via", "10.3.0.1")
		ip("addr", "add", "10.3.0.1/24", "dev", "vr3")
		ip("link", "set", "vr3", "up")
		k := srv.reg.kernel.Load()
		var got kernelpath.Attachment
		waitFor(t, "vr3 attached", 5*time.Second, func() bool {
			for _, a := range k.p.Attachments() {
				if a.Name == "vr3" {
					got = a
					return true
				}
			}
			return false
		})
		if got.Hook != kb.hook {
			t.Errorf("vr3 attached at %s, want %s", got.Hook, kb.hook)
		}
		kq := &kernelBed{client: kb.client, peer: laterNS, relay: kb.relay, hook: kb.hook, peerIP: "10.3.0.2"}
		relay, peer := kq.allocate(t, srv, kr, "gina", "", "10.1.0.1:3484")
		kq.bound(t, srv, 1)
		a := srv.onlyAllocation(t)
		k0 := k.traffic(a)
		waitFor(t, "the client sending ChannelData", 5*time.Second, func() bool {
			kq.relayRun(t, relay, peer, 1)
			return k.traffic(a).packetsToPeer > k0.packetsToPeer
		})
		k1, h1 := k.traffic(a), hookStats(srv)
		const n = 500
		kq.relayRun(t, relay, peer, n)
		k2 := k.traffic(a)
		kq.atHook(t, h1, hookStats(srv), 2*n)
		if k2.packetsToPeer-k1.packetsToPeer != n || k2.packetsFromPeer-k1.packetsFromPeer != n {
			t.Errorf("kernel counters: %+v → %+v, want %d more each way", k1, k2, n)
		}
		// Down and up again: still attached, said once.
		ip("link", "set", "vr3", "down")
		ip("link", "set", "vr3", "up")
		ip("link", "del", "vr3")
		gone := regexp.MustCompile(`"interface":"vr3","hook":"` + kb.hook + `"[^\n]*kernel path: interface gone`)
		waitFor(t, "vr3's removal logged", 5*time.Second, func() bool { return gone.MatchString(logged.logs.String()) })
		// Its channel had its egress there and no route now: out of the
		// maps (not sent into a device that is gone).
		kq.bound(t, srv, 0)
		attached := regexp.MustCompile(`"interface":"vr3","hook":"` + kb.hook + `"[^\n]*kernel path: interface attached`)
		if n := len(attached.FindAllString(logged.logs.String(), -1)); n != 1 {
			t.Errorf("vr3's attachment logged %d times, want once:\n%s", n, logged.logs.String())
		}
		for _, a := range k.p.Attachments() {
			if a.Name == "vr3" {
				t.Errorf("vr3 still attached after it went: %v", k.p.Attachments())
			}
		}
		t.Logf("%s bed: vr3, added after start, attached at %s (logged once); the kernel path relayed %d datagrams each way through it, byte-exact; forgotten when removed, and its channel left the kernel's maps",
			kb.hook, got.Hook, n)
	})

	t.Run("revoked call", func(t *testing.T) {
		srv, kr := kb.start(t, "10.1.0.1:3479", 50100, 50199, KernelPathRequired, 0)
		relay, peer := kb.allocate(t, srv, kr, "bob", "call-k", "10.1.0.1:3479")
		kb.bound(t, srv, 1)
		kb.relayRun(t, relay, peer, 10)
		if n := srv.RevokeCall("call-k", time.Now().Add(time.Hour)); n != 1 {
			t.Fatalf("RevokeCall closed %d allocations, want 1", n)
		}
		kb.bound(t, srv, 0)
		kb.refused(t, relay, peer)
	})

	t.Run("expired permission", func(t *testing.T) {
		srv, kr := kb.start(t, "10.1.0.1:3480", 50200, 50299, KernelPathRequired, 3*time.Second)
		relay, peer := kb.allocate(t, srv, kr, "carol", "", "10.1.0.1:3480")
		kb.bound(t, srv, 1)
		kb.relayRun(t, relay, peer, 10)
		// pion's client refreshes permissions every few minutes: this one
		// expires after 3 s, and its channel leaves the kernel with it.
		kb.bound(t, srv, 0)
		kb.refused(t, relay, peer)
	})

	t.Run("required fails unprivileged, auto falls back", func(t *testing.T) {
		if kb.hook != kernelpath.HookTCX {
			t.Skip("the same at every hook: run in the tcx bed")
		}
		bin := unprivilegedCopy(t)
		for _, mode := range []string{KernelPathRequired, KernelPathAuto} {
			cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
				bin, "-test.run=^TestKernelPathUnprivileged$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), kernelBedEnv+"=", "TURNSERVER_TEST_KERNEL_MODE="+mode)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestKernelPathUnprivileged") {
				t.Fatalf("%s, unprivileged: %v\n%s", mode, err, out)
			}
		}
	})
}

// unprivilegedCopy copies the test binary where an unprivileged user may
// run it.
func unprivilegedCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "icebox-kernel-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "turnserver.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestKernelPathUnprivileged runs as an unprivileged user (from the test
// above): required fails New with a clear error, auto starts and relays
// in user space.
func TestKernelPathUnprivileged(t *testing.T) {
	mode := os.Getenv("TURNSERVER_TEST_KERNEL_MODE")
	if mode == "" {
		t.Skip("run by TestKernelPathInNamespace as an unprivileged user")
	}
	if os.Geteuid() == 0 {
		t.Fatal("running as root")
	}
	var logs lockedBuffer
	r, err := startRelayErr(t, relayOptions{allowLoopback: true, kernelPath: mode, logTo: &logs})
	if err == nil && mode == KernelPathRequired {
		t.Fatal("New succeeded") // (so r is used only below)
	}
	switch mode {
	case KernelPathRequired:
		if err == nil || !strings.Contains(err.Error(), "kernel_path is required but unavailable") {
			t.Fatalf("New: %v, want the required kernel path refused", err)
		}
	case KernelPathAuto:
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if !strings.Contains(logs.String(), "kernel path unavailable; relaying in user space") {
			t.Errorf("logs: %s\nwant the fallback said once", logs.String())
		}
		cred := r.mint(t, "dave", "", time.Hour)
		c := r.newClient(t, overUDP, cred.Username, cred.Password, turn.RequestedAddressFamilyIPv4)
		relay, err := c.Allocate()
		if err != nil {
			t.Fatal(err)
		}
		exchange(t, relay, newPeer(t))
		if r.srv.reg.kernel.Load() != nil {
			t.Error("kernel path on without privileges")
		}
	}
}

// start runs a relay listening on listen (UDP) in the relay namespace, its
// relay ports on 10.2.0.1, with the kernel path in mode; permTimeout 0:
// pion's default.
func (kb *kernelBed) start(t *testing.T, listen string, minPort, maxPort uint16, mode string,
	permTimeout time.Duration,
) (*Server, *credentials.Keyring) {
	t.Helper()
	kr, err := credentials.NewKeyring([]credentials.Secret{
		{KID: "k2", Key: testSecret},
		{KID: "k1", Key: testOldSecret, Compat: true}, // turnutils_uclient -W
	}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	udp, _, err := ListenUDP(context.Background(), listen, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Realm: testRealm, Keyring: func() *credentials.Keyring { return kr },
		RelayBindIPv4: netip.MustParseAddr("10.2.0.1"), RelayIPv4: netip.MustParseAddr("10.2.0.1"),
		RelayBindIPv6: netip.MustParseAddr("fd02::1"), RelayIPv6: netip.MustParseAddr("fd02::1"),
		MinPort: minPort, MaxPort: maxPort,
		Policy:     kernelTestPolicy(t, minPort, maxPort, []string{"10.2.0.0/24", "fd02::/64"}),
		Logger:     testLogger(t),
		KernelPath: mode, permissionTimeout: permTimeout,
	}
	if kb.logs != nil {
		cfg.Logger = zerolog.New(zerolog.MultiLevelWriter(cfg.Logger, kb.logs))
	}
	switch kb.hook {
	case kernelpath.HookXDP:
		cfg.KernelPathMode = KernelModeXDP
	case kernelpath.HookTC:
		cfg.KernelPathMode, cfg.kernelLegacyTC = KernelModeTC, true
	}
	srv, err := New(cfg, Listeners{UDP: udp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv, kr
}

// kernelTestPolicy allows the peers' network (private addresses are
// denied by default) unless allowed is nil.
func kernelTestPolicy(t *testing.T, minPort, maxPort uint16, allowed []string) *Policy {
	t.Helper()
	p, err := NewPolicy(PolicyConfig{
		Allowed: allowed, RelayAddrs: []netip.Addr{netip.MustParseAddr("10.2.0.1"), netip.MustParseAddr("fd02::1")},
		MinPort: minPort, MaxPort: maxPort, ServicePorts: []uint16{3478, 3479, 3480, 3481, 3482, 3483},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (s *Server) setPolicy(t *testing.T, allowed []string) {
	t.Helper()
	if allowed != nil {
		allowed = append(allowed, "fd02::/64")
	}
	if err := s.SetPolicy(kernelTestPolicy(t, s.cfg.MinPort, s.cfg.MaxPort, allowed)); err != nil {
		t.Fatal(err)
	}
}

// allocate allocates for user from the client namespace and opens a peer
// in the peer namespace; one exchange installs the permission and the
// channel.
func (kb *kernelBed) allocate(t *testing.T, srv *Server, kr *credentials.Keyring, user, call, server string,
) (net.PacketConn, *net.UDPConn) {
	t.Helper()
	cred, err := kr.Mint(credentials.Subject{User: user, CallID: call}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	network, clientAddr, peerIP, family := "udp4", "10.1.0.2:0", net.IPv4(10, 2, 0, 2), turn.RequestedAddressFamilyIPv4
	if kb.v6 {
		network, clientAddr, peerIP, family = "udp6", "[fd01::2]:0", net.ParseIP("fd02::2"), turn.RequestedAddressFamilyIPv6
	}
	if kb.peerIP != "" {
		peerIP = net.ParseIP(kb.peerIP)
	}
	var conn net.PacketConn
	if err := kb.client.Do(func() error {
		conn, err = net.ListenPacket(network, clientAddr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: cred.Username, Password: cred.Password, Realm: testRealm, RTO: 200 * time.Millisecond,
		RequestedAddressFamily: family,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = conn.Close() })
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	var peer *net.UDPConn
	if err := kb.peer.Do(func() error {
		peer, err = net.ListenUDP(network, &net.UDPAddr{IP: peerIP})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	exchange(t, relay, peer)
	return relay, peer
}

// bound waits until the kernel's maps hold n channels (pion's client binds
// the channel after its first datagram, in the background).
func (kb *kernelBed) bound(t *testing.T, srv *Server, n int) {
	t.Helper()
	k := srv.reg.kernel.Load()
	if k == nil {
		t.Fatal("kernel path off")
	}
	waitFor(t, fmt.Sprintf("%d channels in the kernel", n), 10*time.Second, func() bool { return k.bindings() == n })
}

// relayRun sends n datagrams of changing size each way, one at a time, and
// checks each arrives byte for byte from the right address.
func (kb *kernelBed) relayRun(t *testing.T, relay net.PacketConn, peer *net.UDPConn, n int) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := range n {
		size := 20 + (i*37)%1180
		want := make([]byte, size)
		for j := range want {
			want[j] = byte(i + j*13)
		}
		if _, err := relay.WriteTo(want, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, from, err := peer.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:m], want) || from.String() != relay.LocalAddr().String() {
			t.Fatalf("datagram %d to the peer: %d bytes from %v (%v), want %d from %v", i, m, from, err, size, relay.LocalAddr())
		}
		want[0] ^= 0xff
		if _, err := peer.WriteTo(want, from); err != nil {
			t.Fatal(err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, from, err = relay.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:m], want) || from.String() != peer.LocalAddr().String() {
			t.Fatalf("datagram %d to the client: %d bytes from %v (%v), want %d from %v", i, m, from, err, size, peer.LocalAddr())
		}
	}
}

// refused checks that a datagram from the client does not reach the peer.
func (kb *kernelBed) refused(t *testing.T, relay net.PacketConn, peer *net.UDPConn) {
	t.Helper()
	if _, err := relay.WriteTo([]byte("refused?"), peer.LocalAddr()); err != nil {
		return // the client may know its allocation is gone
	}
	_ = peer.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 64)
	if n, from, err := peer.ReadFrom(buf); err == nil {
		t.Fatalf("peer got %q from %v, want nothing", buf[:n], from)
	}
}

func (s *Server) onlyAllocation(t *testing.T) *allocation {
	t.Helper()
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	if len(s.reg.byID) != 1 {
		t.Fatalf("%d allocations, want 1", len(s.reg.byID))
	}
	for _, a := range s.reg.byID {
		return a
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// gathered reads a metric from srv's registry (label: the direction, if
// any).
func gathered(t *testing.T, srv *Server, name, direction string) float64 {
	t.Helper()
	mfs, err := srv.cfg.Registerer.(prometheus.Gatherer).Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if direction != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != direction) {
				continue
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s %s not found", name, direction)
	return 0
}

// measure runs one uclient -y load against a fresh relay in mode and logs
// CPU per relayed message.
func (kb *kernelBed) measure(t *testing.T, uclient, mode string, port int, minPort uint16, round int) {
	t.Helper()
	srv, _ := kb.start(t, fmt.Sprintf("10.1.0.1:%d", port), minPort, minPort+999, mode, 0)
	defer func() { _ = srv.Close() }()
	const sessions, messages = 100, 2000
	ru0, st0 := rusage(t), procStat(t)
	start := time.Now()
	var out []byte
	var client time.Duration
	if err := kb.client.Do(func() error {
		cmd := exec.Command(uclient, "-W", string(testOldSecret), "-u", "uc", "-y", "-c",
			"-l", "100", "-z", "1", "-m", fmt.Sprint(sessions), "-n", fmt.Sprint(messages), "-p", fmt.Sprint(port), "10.1.0.1")
		var err error
		out, err = cmd.CombinedOutput()
		if cmd.ProcessState != nil {
			client = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		}
		return err
	}); err != nil {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	wall := time.Since(start)
	ru1, st1 := rusage(t), procStat(t)
	srv.reg.mu.Lock()
	all := srv.reg.retired
	srv.reg.mu.Unlock()
	for _, a := range srv.reg.list(Filter{}, time.Now()) {
		all.packetsToPeer += a.PacketsToPeer
	}
	lost := "?"
	if m := reUclientLost.FindStringSubmatch(string(out)); m != nil {
		lost = m[1]
	}
	msgs := float64(all.packetsToPeer)
	// The kernel path runs in softirq, which this kernel charges to the
	// task it interrupts — mostly uclient's sends (veth delivers in the
	// sender's context): server + client CPU is the comparable sum.
	srvCPU := float64((ru1 - ru0).Microseconds()) / msgs
	cliCPU := float64(client.Microseconds()) / msgs
	t.Logf("round %d %-8s uclient -y %d×%d: %d messages in %v, lost %s%%; µs/msg: server %.2f, uclient %.2f, sum %.2f; machine-wide softirq %.2f, system %.2f (shared machine)",
		round, mode, sessions, messages, all.packetsToPeer, wall.Round(time.Millisecond), lost,
		srvCPU, cliCPU, srvCPU+cliCPU, (st1.softirq-st0.softirq)*1e6/msgs, (st1.system-st0.system)*1e6/msgs)
}

var reUclientLost = regexp.MustCompile(`Total lost packets \d+ \(([0-9.]+)%\)`)

func rusage(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type cpuTimes struct{ system, softirq float64 } // seconds, all CPUs

func procStat(t *testing.T) cpuTimes {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0]) // cpu user nice system idle iowait irq softirq
	if len(f) < 8 {
		t.Fatalf("/proc/stat: %q", f)
	}
	hz := 100.0 // USER_HZ
	sys, _ := strconv.ParseFloat(f[3], 64)
	si, _ := strconv.ParseFloat(f[7], 64)
	return cpuTimes{system: sys / hz, softirq: si / hz}
}

// inKernel relays n datagrams each way on srv's only allocation, once the
// kernel relays its channel (the first ChannelData may reach user space
// before the entry exists), and checks that the kernel relayed all of
// them, at the bed's hook.
func (kb *kernelBed) inKernel(t *testing.T, srv *Server, relay net.PacketConn, peer *net.UDPConn, n int) {
	t.Helper()
	a := srv.onlyAllocation(t)
	k0 := srv.reg.kernel.Load().traffic(a)
	waitFor(t, "the client sending ChannelData", 5*time.Second, func() bool {
		kb.relayRun(t, relay, peer, 1)
		return srv.reg.kernel.Load().traffic(a).packetsToPeer > k0.packetsToPeer
	})
	k1 := srv.reg.kernel.Load().traffic(a)
	h1 := hookStats(srv)
	kb.relayRun(t, relay, peer, n)
	k2 := srv.reg.kernel.Load().traffic(a)
	kb.atHook(t, h1, hookStats(srv), 2*uint64(n))
	if k2.packetsToPeer-k1.packetsToPeer != uint64(n) || k2.packetsFromPeer-k1.packetsFromPeer != uint64(n) {
		t.Errorf("kernel counters: %+v → %+v, want %d more each way", k1, k2, n)
	}
}
