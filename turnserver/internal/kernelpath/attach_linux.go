//go:build linux

package kernelpath

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// maxInterfaces bounds the interfaces attached (and xdp_ports' size):
// beyond it a new interface stays in user space.
const maxInterfaces = 256

// tcPriority is the cls_bpf filter's priority on the older tc hook: fixed,
// so that icebox finds (and removes) only its own filter.
const tcPriority = 0x1ceb

// tcFilterName names the cls_bpf filter (what `tc filter show` lists): the
// program's own name, which is not a metric.
const tcFilterName = "icebox_relay"

// attachment is an interface's hooks, undone in reverse order.
type attachment struct {
	Attachment
	undo []func() error
}

func (a *attachment) close() error {
	var errs []error
	for i := len(a.undo) - 1; i >= 0; i-- {
		errs = append(errs, a.undo[i]())
	}
	return errors.Join(errs...)
}

// eligible: an interface the program serves — up, with an Ethernet
// header, not loopback (loopback carries no link layer the redirect could
// resolve; a relay for local peers keeps them in user space).
func eligible(l netlink.Link) bool {
	at := l.Attrs()
	return at.Flags&net.FlagUp != 0 && at.Flags&net.FlagLoopback == 0 && len(at.HardwareAddr) == 6
}

// forwarding reports whether IPv4 forwarding is on for the interface
// (in the namespace of the calling thread). bpf_fib_lookup, which the XDP
// program needs for the next hop's addresses, answers only for an egress
// device that forwards; the datagrams to be relayed are addressed to this
// host, so forwarding changes nothing for them, but it makes the host a
// router for others' (a firewall's FORWARD policy drop keeps it not one —
// XDP's redirects do not pass netfilter).
func forwarding(ifname string) bool {
	b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4/conf", ifname, "forwarding"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// attach hooks the program to l as the mode says: native XDP first where
// it applies (with the tc program behind it), tc alone where XDP does not
// apply or the driver refuses it.
func (p *Path) attach(l netlink.Link) (Attachment, error) {
	at := l.Attrs()
	p.mu.Lock()
	n := len(p.att)
	p.mu.Unlock()
	if n >= maxInterfaces {
		return Attachment{}, fmt.Errorf("%s: more than %d interfaces; left to user space", at.Name, maxInterfaces)
	}
	a := &attachment{Attachment: Attachment{Name: at.Name, Index: at.Index}}
	fwd := forwarding(at.Name)
	if p.opts.Mode == ModeXDP || (p.opts.Mode == ModeAuto && l.Type() != "veth" && fwd) {
		xl, err := link.AttachXDP(link.XDPOptions{Program: p.objs.IceboxRelayXdp, Interface: at.Index, Flags: link.XDPDriverMode})
		if err == nil {
			a.Hook = HookXDP
			if !fwd {
				a.Note = "IP forwarding is off on this interface: XDP leaves the datagrams it would send out of it to the tc program"
			}
			a.undo = append(a.undo, xl.Close)
			// A redirect's target only once XDP runs there (a driver
			// sends redirected frames only then, and veth only then hands
			// them to its peer's receive path); the same device is XDP_TX.
			idx := uint32(at.Index)
			if err := p.objs.XdpPorts.Put(idx, idx); err == nil {
				a.undo = append(a.undo, func() error {
					if err := p.objs.XdpPorts.Delete(idx); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
						return fmt.Errorf("%s: xdp_ports: %w", at.Name, err)
					}
					return nil
				})
			}
		}
		if err != nil {
			// No native XDP in this driver (or another program holds
			// it): tc alone, as in mode tc, and the log says why.
			a.Note = fmt.Sprintf("native XDP refused: %v", err)
		}
	}
	hook, undo, err := p.attachTC(at.Index)
	switch {
	case err != nil && a.Hook == "":
		return Attachment{}, fmt.Errorf("%s: %w", at.Name, err)
	case err == nil:
		a.undo = append(a.undo, undo)
		if a.Hook == "" {
			a.Hook = hook
		}
	default:
		// XDP without the tc program behind it: what XDP passes goes to
		// user space.
		a.Note = strings.TrimPrefix(a.Note+"; ", "; ") + fmt.Sprintf("no tc program behind XDP: %v", err)
	}
	p.mu.Lock()
	p.att[at.Index] = a
	p.mu.Unlock()
	return a.Attachment, nil
}

// attachTC attaches the tc program at ingress: a tcx link, or where the
// kernel has no tcx (before 6.6) or LegacyTC asks, a cls_bpf filter in
// direct-action mode on a clsact qdisc.
func (p *Path) attachTC(ifindex int) (string, func() error, error) {
	if !p.opts.LegacyTC {
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p.objs.IceboxRelay, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			return HookTCX, l.Close, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return "", nil, fmt.Errorf("tcx ingress: %w", err)
		}
	}
	undo, err := p.attachClsact(ifindex)
	if err != nil {
		return "", nil, fmt.Errorf("tc ingress (clsact): %w", err)
	}
	return HookTC, undo, nil
}

// attachClsact adds the cls_bpf filter, and the clsact qdisc if the
// interface has none; undoing removes the filter, and the qdisc only if
// icebox added it and nobody has put a filter of theirs on it since.
func (p *Path) attachClsact(ifindex int) (func() error, error) {
	qdisc := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	created := true
	if err := p.nl.QdiscAdd(qdisc); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("add qdisc: %w", err)
		}
		created = false
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: netlink.MakeHandle(0, 1), Protocol: unix.ETH_P_ALL, Priority: tcPriority},
		Fd: p.objs.IceboxRelay.FD(), Name: tcFilterName, DirectAction: true,
	}
	delQdisc := func() error {
		if !created {
			return nil
		}
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			if fs, err := p.nl.FilterList(dev, parent); err != nil || len(fs) > 0 {
				return nil // another's filter (or no answer): the qdisc stays
			}
		}
		if err := p.nl.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete qdisc: %w", err)
		}
		return nil
	}
	if err := p.nl.FilterAdd(filter); err != nil {
		return nil, errors.Join(fmt.Errorf("add filter: %w", err), delQdisc())
	}
	return func() error {
		// The device may be gone, and its qdisc and filter with it.
		if err := p.nl.FilterDel(filter); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete filter: %w", err)
		}
		return delQdisc()
	}, nil
}

// watch follows the namespace's links (RTM_NEWLINK, RTM_DELLINK) until
// Close: an eligible interface not yet attached is attached, a deleted one
// forgotten, each reported once through OnChange.
func (p *Path) watch() error {
	ch := make(chan netlink.LinkUpdate, 64)
	stop := make(chan struct{})
	if err := netlink.LinkSubscribeWithOptions(ch, stop, netlink.LinkSubscribeOptions{
		Namespace: &p.ns,
		ErrorCallback: func(err error) {
			select {
			case <-stop: // closing: the subscription's socket was closed
			default:
				p.report(fmt.Errorf("kernelpath: interface updates: %w", err))
			}
		},
	}); err != nil {
		return err
	}
	p.stop, p.done = stop, make(chan struct{})
	go func() {
		defer close(p.done)
		// ifindexes and XDP/tcx attachment are per namespace: this
		// goroutine's thread joins Open's and dies with it (never
		// unlocked).
		runtime.LockOSThread()
		if err := netns.Set(p.ns); err != nil {
			p.report(fmt.Errorf("kernelpath: interface updates: enter namespace: %w", err))
			for range ch { // until Close ends the subscription
			}
			return
		}
		for u := range ch {
			p.update(u)
		}
	}()
	return nil
}

func (p *Path) update(u netlink.LinkUpdate) {
	idx := int(u.Index)
	p.mu.Lock()
	a, have := p.att[idx]
	p.mu.Unlock()
	switch u.Header.Type {
	case unix.RTM_DELLINK:
		p.mu.Lock()
		delete(p.refused, idx) // the index may come back as another device
		p.mu.Unlock()
		if !have {
			return
		}
		p.mu.Lock()
		delete(p.att, idx)
		p.mu.Unlock()
		// Its links went with the device; closing frees what is left.
		_ = a.close()
		if p.opts.OnChange != nil {
			p.opts.OnChange(a.Attachment, false)
		}
	case unix.RTM_NEWLINK:
		// An interface that goes down keeps its hooks (they cost nothing
		// without traffic) and is not attached again when it comes back.
		if have || u.Link == nil || !eligible(u.Link) {
			return
		}
		p.mu.Lock()
		refused := p.refused[idx]
		p.mu.Unlock()
		if refused {
			return // said once; not tried at every update of the link
		}
		got, err := p.attach(u.Link)
		if err != nil {
			p.mu.Lock()
			if len(p.refused) < maxInterfaces {
				p.refused[idx] = true
			}
			p.mu.Unlock()
			p.report(fmt.Errorf("kernelpath: attach: %w", err))
			return
		}
		if p.opts.OnChange != nil {
			p.opts.OnChange(got, true)
		}
	}
}

func (p *Path) report(err error) {
	if p.opts.OnError != nil {
		p.opts.OnError(err)
	}
}
