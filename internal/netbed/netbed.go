//go:build linux

// Package netbed builds network test beds out of Linux network namespaces
// for tests: namespaces, veth pairs, bridges, routes, iptables NAT rules,
// and commands or sockets inside a namespace. Everything a bed creates is
// removed by t.Cleanup, also when the test fails; names carry a random
// prefix so that parallel tests (and parallel test binaries) never collide.
//
// It needs root, iproute2 (`ip`) and iptables (Debian's nft backend):
// Require skips a test without them, saying what is missing, and fails it
// under CI=true, where the bed must run.
package netbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cmdTimeout bounds every ip/iptables/sysctl command.
const cmdTimeout = 10 * time.Second

// Require skips the test unless namespaces can be built here: root, `ip`
// and `iptables`. Under CI=true it fails instead.
func Require(t testing.TB) {
	t.Helper()
	if why := missing(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("netbed: %s; CI must run these tests as root with iproute2 and iptables (scripts/install-test-deps.sh)", why)
		}
		t.Skipf("netbed: %s; run as root with iproute2 and iptables (apt-get install iproute2 iptables) to build the namespace test bed", why)
	}
}

func missing() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, tool := range []string{"ip", "iptables", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found"
		}
	}
	return ""
}

// Bed is a set of namespaces made for one test.
type Bed struct {
	t      testing.TB
	prefix string
}

// New starts a bed; its namespaces are named "<prefix>-<name>" with a prefix
// unique to this bed.
func New(t testing.TB) *Bed {
	t.Helper()
	Require(t)
	var b [3]byte
	_, _ = rand.Read(b[:])
	return &Bed{t: t, prefix: "nb" + hex.EncodeToString(b[:])}
}

// Prefix is the bed's unique name prefix.
func (b *Bed) Prefix() string { return b.prefix }

// NS is a network namespace of a bed.
type NS struct {
	Name string // the full name: ip netns exec Name …
	bed  *Bed
}

// Namespace creates a namespace with its loopback up. It is deleted at
// cleanup (with its interfaces and iptables rules); register the cleanup of
// processes running inside it after this call so they stop first.
func (b *Bed) Namespace(name string) *NS {
	b.t.Helper()
	ns := &NS{Name: b.prefix + "-" + name, bed: b}
	b.run("ip", "netns", "add", ns.Name)
	b.t.Cleanup(func() {
		if out, err := command("ip", "netns", "del", ns.Name); err != nil {
			b.t.Errorf("netbed: ip netns del %s: %v: %s", ns.Name, err, out)
		}
	})
	ns.Run("ip", "link", "set", "lo", "up")
	return ns
}

// run runs a command in the root namespace and fails the test on error.
func (b *Bed) run(name string, args ...string) string {
	b.t.Helper()
	out, err := command(name, args...)
	if err != nil {
		b.t.Fatalf("netbed: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func command(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// Run runs a command inside the namespace, fails the test on error, and
// returns its output.
func (ns *NS) Run(name string, args ...string) string {
	ns.bed.t.Helper()
	return ns.bed.run("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error.
func (ns *NS) Try(name string, args ...string) (string, error) {
	return command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Command returns a command that runs inside the namespace. `ip netns exec`
// execs the program, so the started process's PID is the program's.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Forwarding turns IPv4 forwarding on inside the namespace (a router).
func (ns *NS) Forwarding() {
	ns.bed.t.Helper()
	ns.Run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
}

// Bridge creates a bridge named name inside ns, up, without an address.
func (ns *NS) Bridge(name string) {
	ns.bed.t.Helper()
	ns.Run("ip", "link", "add", name, "type", "bridge")
	ns.Run("ip", "link", "set", name, "up")
}

// Link connects two namespaces with a veth pair: aIf in a with address aAddr
// (CIDR, or "" for none), bIf in b with bAddr. Both ends come up.
func Link(a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	a.bed.t.Helper()
	a.Run("ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	a.setUp(aIf, aAddr)
	b.setUp(bIf, bAddr)
}

// Attach connects ns to a bridge in bridgeNS: ifName in ns with addr, the
// other end enslaved to the bridge (named "<ifName>-<ns name suffix>"-like
// port names are chosen here).
func (ns *NS) Attach(ifName, addr string, bridgeNS *NS, bridge string) {
	ns.bed.t.Helper()
	port := portName(ns.Name)
	Link(ns, ifName, addr, bridgeNS, port, "")
	bridgeNS.Run("ip", "link", "set", port, "master", bridge)
}

// portName is a bridge port name for a namespace: interface names hold 15
// bytes, so the namespace's own name (after the prefix) is cut.
func portName(nsName string) string {
	_, n, _ := strings.Cut(nsName, "-")
	n = "p-" + n
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

func (ns *NS) setUp(ifName, addr string) {
	ns.bed.t.Helper()
	if addr != "" {
		ns.Run("ip", "addr", "add", addr, "dev", ifName)
	}
	ns.Run("ip", "link", "set", ifName, "up")
}

// DefaultRoute routes everything not local through gateway.
func (ns *NS) DefaultRoute(gateway string) {
	ns.bed.t.Helper()
	ns.Run("ip", "route", "add", "default", "via", gateway)
}

// IPTables adds a rule: ns.IPTables("-t", "nat", "-A", "POSTROUTING", …).
func (ns *NS) IPTables(args ...string) {
	ns.bed.t.Helper()
	ns.Run("iptables", append([]string{"-w", "5"}, args...)...)
}

// Masquerade makes ns a NAT router that masquerades what leaves through
// outIf (a home router: endpoint-independent mapping where the kernel can,
// address-dependent filtering by conntrack).
func (ns *NS) Masquerade(outIf string) {
	ns.bed.t.Helper()
	ns.Forwarding()
	ns.IPTables("-t", "nat", "-A", "POSTROUTING", "-o", outIf, "-j", "MASQUERADE")
}

// OneToOneNAT makes ns a 1:1 NAT (a cloud provider's): publicIP on the
// outside stands for privateIP on the inside, for the given destination
// ports (iptables --dport syntax: "3478", "40000:40999"); replies and
// traffic from privateIP leave as publicIP. Hairpin traffic (the inside host
// to its own public address) is forwarded back and SNATed, as clouds do.
func (ns *NS) OneToOneNAT(publicIP, privateIP, insideIf string, ports ...string) {
	ns.bed.t.Helper()
	ns.Forwarding()
	for _, proto := range []string{"udp", "tcp"} {
		for _, p := range ports {
			ns.IPTables("-t", "nat", "-A", "PREROUTING", "-d", publicIP, "-p", proto, "--dport", p,
				"-j", "DNAT", "--to-destination", privateIP)
		}
	}
	ns.IPTables("-t", "nat", "-A", "POSTROUTING", "-s", privateIP, "-d", privateIP, "-o", insideIf,
		"-j", "SNAT", "--to-source", publicIP)
	ns.IPTables("-t", "nat", "-A", "POSTROUTING", "-s", privateIP, "!", "-o", insideIf,
		"-j", "SNAT", "--to-source", publicIP)
}

// nsMu serialises Do: setns is per thread, so it is safe under concurrency,
// but one at a time keeps the thread juggling easy to reason about.
var nsMu sync.Mutex

// Do runs fn with the calling goroutine's thread inside the namespace:
// sockets fn creates live there and stay there. fn must not start
// goroutines that create sockets (they would run on other threads).
func (ns *NS) Do(fn func() error) error {
	nsMu.Lock()
	defer nsMu.Unlock()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netbed: setns %s: %w", ns.Name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the namespace: let it die with the
		// goroutine rather than serve others (no UnlockOSThread).
		return errors.Join(fnErr, fmt.Errorf("netbed: back from %s: %w", ns.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// DialContext dials from inside the namespace (for an http.Transport).
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// AddAddr adds an address (CIDR) to ifName inside ns, with extra `ip addr
// add` options (e.g. "preferred_lft", "0": deprecated, never chosen as a
// source address). IPv6 addresses skip duplicate address detection, so they
// are usable at once rather than "tentative" for a second or more.
func (ns *NS) AddAddr(ifName, cidr string, extra ...string) {
	ns.bed.t.Helper()
	args := append([]string{"addr", "add", cidr, "dev", ifName}, extra...)
	if strings.Contains(cidr, ":") {
		args = append(args, "nodad")
	}
	ns.Run("ip", args...)
}
