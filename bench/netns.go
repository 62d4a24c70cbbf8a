//go:build linux

package main

// Network namespaces: each server lives in its own, with only loopback, so
// the namespace's UDP counters count the benchmark's traffic and nothing
// else. Processes enter one with `ip netns exec`, which execs in place: the
// PID the harness starts is the server's own.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netns is a network namespace this run created.
type netns struct{ name string }

// Ephemeral ports of the load generators (ip_local_port_range in the
// namespace) and the relay ports of both servers are disjoint, so a client
// socket never takes a port a relay wants, and the 10 000 sockets of the
// hold test fit.
const (
	ephemeralMin = 50000
	ephemeralMax = 65535
	relayMin     = 10000
	relayMax     = 49999
)

func newNetns(ctx context.Context, name string) (*netns, error) {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	ns := &netns{name: name}
	for _, args := range [][]string{
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", name, "sysctl", "-q", "-w", fmt.Sprintf("net.ipv4.ip_local_port_range=%d %d", ephemeralMin, ephemeralMax)},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			ns.delete()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return ns, nil
}

// delete removes the namespace; the processes in it must have exited.
func (ns *netns) delete() error {
	out, err := exec.Command("ip", "netns", "delete", ns.name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns delete %s: %v: %s", ns.name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command returns a command that runs name inside the namespace.
func (ns *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name, name}, args...)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL} // never outlive the harness
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// dial opens a connection from inside the namespace: the socket is created
// by a thread that has entered it (setns) and goes back to its own namespace
// afterwards. The socket stays in the namespace whichever thread uses it
// later.
//
// The thread must not die: the servers run with Pdeathsig, which fires when
// the *thread* that started them exits, and a goroutine that ends while
// locked takes its thread with it. So the thread is restored and unlocked;
// only if restoring fails is it left locked, to die (and the run with it).
func (ns *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns.name)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("setns %s: %w", ns.name, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			if c != nil {
				c.Close()
			}
			ch <- result{err: fmt.Errorf("setns back from %s: %w", ns.name, rerr)}
			return // still locked: this thread exits with the goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
