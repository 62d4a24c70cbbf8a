//go:build linux

package kernelpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Path is the loaded program, attached to every Ethernet-like interface
// that is up (attach_linux.go): at native XDP where Options.Mode and the
// driver allow, at tc ingress (tcx, or a cls_bpf filter before kernel 6.6)
// elsewhere and behind XDP.
//
// Why not XDP everywhere: relaying means growing or shrinking a datagram
// by the 4-byte ChannelData header and sending it out of another device,
// and on veth (containers, namespaces) XDP_TX/XDP_REDIRECT frames are
// dropped unless the veth's peer runs an XDP program (or GRO) too, which
// icebox cannot install in its clients' namespaces. At tc the skb is
// resized in place and bpf_redirect_neigh resolves the next hop, on any
// driver.
type Path struct {
	objs relayObjects
	opts Options
	ns   netns.NsHandle  // the namespace Open ran in: where ifindexes mean something
	nl   *netlink.Handle // in ns

	mu      sync.Mutex
	att     map[int]*attachment // by ifindex
	refused map[int]bool        // by ifindex: the watcher tried once

	stop, done chan struct{} // the watcher's (nil: none)
	closed     bool
}

// Open loads the program and attaches it. It fails (and leaves nothing
// behind) without CAP_BPF and CAP_NET_ADMIN, on a kernel without tcx
// or the older tc hook, or when no interface takes the program.
func Open(opts Options) (*Path, error) {
	switch opts.Mode {
	case "":
		opts.Mode = ModeAuto
	case ModeAuto, ModeXDP, ModeTC:
	default:
		return nil, fmt.Errorf("kernelpath: mode %q: want auto, xdp or tc", opts.Mode)
	}
	p := &Path{opts: opts, ns: netns.None(), att: make(map[int]*attachment), refused: make(map[int]bool)}
	if err := loadRelayObjects(&p.objs, nil); err != nil {
		return nil, fmt.Errorf("kernelpath: load: %w", err)
	}
	var err error
	if p.ns, err = netns.Get(); err != nil {
		return nil, errors.Join(fmt.Errorf("kernelpath: network namespace: %w", err), p.Close())
	}
	if p.nl, err = netlink.NewHandleAt(p.ns); err != nil {
		return nil, errors.Join(fmt.Errorf("kernelpath: netlink: %w", err), p.Close())
	}
	links, err := p.nl.LinkList()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("kernelpath: interfaces: %w", err), p.Close())
	}
	var errs []error
	for _, l := range links {
		if !eligible(l) {
			continue
		}
		if _, err := p.attach(l); err != nil {
			errs = append(errs, err)
		}
	}
	if len(p.att) == 0 {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no Ethernet interface is up"))
		}
		return nil, errors.Join(fmt.Errorf("kernelpath: attach: %w", errors.Join(errs...)), p.Close())
	}
	// An interface that refused while others took it is served by user
	// space alone; not an error (Attachments says which are in).
	if opts.Watch {
		if err := p.watch(); err != nil {
			return nil, errors.Join(fmt.Errorf("kernelpath: watch interfaces: %w", err), p.Close())
		}
	}
	return p, nil
}

// Attachments are the interfaces the program is attached to, by index.
func (p *Path) Attachments() []Attachment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Attachment, 0, len(p.att))
	for _, a := range p.att {
		out = append(out, a.Attachment)
	}
	slices.SortFunc(out, func(a, b Attachment) int { return a.Index - b.Index })
	return out
}

// Interfaces are the devices the program is attached to.
func (p *Path) Interfaces() []string {
	var names []string
	for _, a := range p.Attachments() {
		names = append(names, a.Name)
	}
	return names
}

// peerLocal is relay.c's PEER_LOCAL.
const peerLocal = 1

// errLocal: the route to an endpoint is local (or loopback); the kernel
// path cannot send there, user space does.
var errLocal = errors.New("kernelpath: endpoint is local")

// Resolve fills in b's wildcard addresses as the kernel would send from
// them: a relay socket bound to the wildcard address sends from the source
// the kernel picks towards the peer, and the peer answers to it; a
// listener bound to the wildcard address answers its client from the
// source the kernel picks towards the client, so the program matches the
// client's datagrams sent to that address (those sent to another address
// of the host stay in user space) and answers from it, as user space does.
func (p *Path) Resolve(b Binding) (Binding, error) {
	fill := func(ap, towards netip.AddrPort, what string) (netip.AddrPort, error) {
		if !ap.IsValid() || !ap.Addr().IsUnspecified() {
			return ap, nil
		}
		_, src, err := route(towards.Addr(), netip.Addr{})
		if errors.Is(err, errLocal) {
			src, err = towards.Addr(), nil // to this host, from the same address
		}
		if err != nil || !src.IsValid() {
			return ap, fmt.Errorf("kernelpath: no source address towards the %s: %w", what, err)
		}
		return netip.AddrPortFrom(src, ap.Port()), nil
	}
	var err error
	if b.Relay, err = fill(b.Relay, b.Peer, "peer"); err != nil {
		return Binding{}, err
	}
	if b.Listener, err = fill(b.Listener, b.Client, "client"); err != nil {
		return Binding{}, err
	}
	return b, nil
}

// Put installs b (or renews it) and returns it as installed (Delete
// takes that one), its wildcard addresses resolved (Resolve). The egress
// devices towards the peer and the client are looked up now; a route
// change later is followed by the kernel's neighbour resolution on that
// device only, so a binding whose route moved to another device stays
// there until it is put again (every ChannelBind refresh does, and
// turnserver puts them all again when an interface comes or goes).
func (p *Path) Put(b Binding) (Binding, error) {
	b, err := p.Resolve(b)
	if err != nil {
		return Binding{}, fmt.Errorf("kernelpath: put: %w", err)
	}
	for _, ap := range []netip.AddrPort{b.Listener, b.Client, b.Relay, b.Peer} {
		if !ap.IsValid() || ap.Addr().IsUnspecified() {
			return Binding{}, fmt.Errorf("kernelpath: put: address %v is not specific", ap)
		}
	}
	v4 := b.Client.Addr().Is4()
	if b.Listener.Addr().Is4() != v4 || b.Relay.Addr().Is4() != v4 || b.Peer.Addr().Is4() != v4 {
		return Binding{}, errors.New("kernelpath: put: mixed address families")
	}
	// A peer on this host is another relay (the policy allows no other
	// local address): the program hands the datagram to that relay's
	// client if its channel is in the maps (peerLocal).
	var flags uint32
	peerIf, err := routeOif(b.Peer.Addr(), b.Relay.Addr())
	switch {
	case errors.Is(err, errLocal):
		flags, peerIf = peerLocal, 0
	case err != nil:
		return Binding{}, fmt.Errorf("kernelpath: put: route to peer: %w", err)
	}
	clientIf, err := routeOif(b.Client.Addr(), b.Listener.Addr())
	if err != nil {
		return Binding{}, fmt.Errorf("kernelpath: put: route to client: %w", err)
	}
	expires := monotonic(b.Expires)
	tpk, tck := keys(b)
	tpv := relayToPeerVal{RelayPort: b.Relay.Port(), PeerPort: b.Peer.Port(), Alloc: b.Alloc,
		Ifindex: uint32(peerIf), Flags: flags, Expires: expires}
	tpv.Relay.B = b.Relay.Addr().As16()
	tpv.Peer.B = b.Peer.Addr().As16()
	tcv := relayToClientVal{ListenerPort: b.Listener.Port(), ClientPort: b.Client.Port(), Channel: b.Channel,
		Alloc: b.Alloc, Ifindex: uint32(clientIf), Expires: expires}
	tcv.Listener.B = b.Listener.Addr().As16()
	tcv.Client.B = b.Client.Addr().As16()
	if err := p.objs.ToPeer.Update(&tpk, &tpv, ebpf.UpdateAny); err != nil {
		return Binding{}, fmt.Errorf("kernelpath: put: %w", err)
	}
	if err := p.objs.ToClient.Update(&tck, &tcv, ebpf.UpdateAny); err != nil {
		p.Delete(b)
		return Binding{}, fmt.Errorf("kernelpath: put: %w", err)
	}
	return b, nil
}

func keys(b Binding) (relayToPeerKey, relayToClientKey) {
	tpk := relayToPeerKey{ListenerPort: b.Listener.Port(), ClientPort: b.Client.Port(), Channel: b.Channel}
	tpk.Listener.B = b.Listener.Addr().As16()
	tpk.Client.B = b.Client.Addr().As16()
	tck := relayToClientKey{RelayPort: b.Relay.Port(), PeerPort: b.Peer.Port()}
	tck.Relay.B = b.Relay.Addr().As16()
	tck.Peer.B = b.Peer.Addr().As16()
	return tpk, tck
}

// Delete removes b: the next datagram of the channel goes to user space.
func (p *Path) Delete(b Binding) {
	tpk, tck := keys(b)
	// ErrKeyNotExist is fine: removing is idempotent.
	_ = p.objs.ToPeer.Delete(&tpk)
	_ = p.objs.ToClient.Delete(&tck)
}

// Counters sums an allocation's per-CPU counters; false: none yet.
func (p *Path) Counters(alloc uint32) (Counters, bool) {
	var per []relayCounters
	if err := p.objs.AllocCounters.Lookup(alloc, &per); err != nil {
		return Counters{}, false
	}
	var c Counters
	for _, v := range per {
		c.PacketsToPeer += v.PacketsToPeer
		c.BytesToPeer += v.BytesToPeer
		c.PacketsToClient += v.PacketsToClient
		c.BytesToClient += v.BytesToClient
	}
	return c, true
}

// DeleteCounters forgets an allocation's counters (after its last read).
func (p *Path) DeleteCounters(alloc uint32) { _ = p.objs.AllocCounters.Delete(alloc) }

// Stats sums the per-CPU reasons datagrams were not relayed here.
func (p *Path) Stats() Stats {
	sum := func(k uint32) uint64 {
		var per []uint64
		if p.objs.Stats.Lookup(k, &per) != nil {
			return 0
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	return Stats{Expired: sum(0), TooBig: sum(1), Errors: sum(2),
		RelayedTC: sum(3), RelayedXDP: sum(4), XDPPassed: sum(5)}
}

// Close stops the watcher, detaches the program (removing the tc filters
// and qdiscs it added) and frees its maps.
func (p *Path) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop = nil
	}
	var errs []error
	p.mu.Lock()
	for idx, a := range p.att {
		errs = append(errs, a.close())
		delete(p.att, idx)
	}
	p.mu.Unlock()
	if p.nl != nil {
		p.nl.Close()
	}
	if p.ns.IsOpen() {
		errs = append(errs, p.ns.Close())
	}
	errs = append(errs, p.objs.Close())
	return errors.Join(errs...)
}

// monotonic converts t to CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
func monotonic(t time.Time) uint64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0 // expired at once: user space relays
	}
	ns := ts.Nano() + int64(time.Until(t))
	if ns < 0 {
		return 0
	}
	return uint64(ns)
}

// routeOif asks the kernel (RTM_GETROUTE, as `ip route get dst from src`)
// which device reaches dst.
func routeOif(dst, src netip.Addr) (int, error) {
	oif, _, err := route(dst, src)
	return oif, err
}

// route returns the device that reaches dst from src (unspecified: any)
// and the source address the kernel would choose.
func route(dst, src netip.Addr) (int, netip.Addr, error) {
	family, bits := unix.AF_INET, 32
	if dst.Is6() {
		family, bits = unix.AF_INET6, 128
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return 0, netip.Addr{}, fmt.Errorf("netlink timeout: %w", err)
	}
	msg := make([]byte, unix.NLMSG_HDRLEN+unix.SizeofRtMsg)
	msg = appendAttr(msg, unix.RTA_DST, dst.AsSlice())
	srcBits := 0
	if src.IsValid() && !src.IsUnspecified() {
		msg = appendAttr(msg, unix.RTA_SRC, src.AsSlice())
		srcBits = bits
	}
	putNlmsghdr(msg, unix.RTM_GETROUTE, unix.NLM_F_REQUEST)
	rtm := msg[unix.NLMSG_HDRLEN:]
	rtm[0] = byte(family)
	rtm[1] = byte(bits)    // dst_len
	rtm[2] = byte(srcBits) // src_len
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, netip.Addr{}, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("netlink receive: %w", err)
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("netlink parse: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(binary.NativeEndian.Uint32(m.Data[0:4])); e != 0 {
					return 0, netip.Addr{}, fmt.Errorf("route get %v: %w", dst, unix.Errno(-e))
				}
			}
		case unix.RTM_NEWROUTE:
			if len(m.Data) < unix.SizeofRtMsg {
				continue
			}
			if typ := m.Data[7]; typ != unix.RTN_UNICAST {
				return 0, netip.Addr{}, errLocal
			}
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return 0, netip.Addr{}, fmt.Errorf("netlink attributes: %w", err)
			}
			oif, prefsrc := 0, netip.Addr{}
			for _, a := range attrs {
				switch a.Attr.Type {
				case unix.RTA_OIF:
					if len(a.Value) >= 4 {
						oif = int(binary.NativeEndian.Uint32(a.Value))
					}
				case unix.RTA_PREFSRC:
					prefsrc, _ = netip.AddrFromSlice(a.Value)
				}
			}
			if oif == 0 {
				continue
			}
			if ifc, err := net.InterfaceByIndex(oif); err == nil && ifc.Flags&net.FlagLoopback != 0 {
				return 0, netip.Addr{}, errLocal
			}
			return oif, prefsrc, nil
		}
	}
	return 0, netip.Addr{}, fmt.Errorf("route get %v: no device", dst)
}

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	l := unix.SizeofRtAttr + len(v)
	h := make([]byte, unix.SizeofRtAttr)
	binary.NativeEndian.PutUint16(h[0:2], uint16(l))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h...)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func putNlmsghdr(b []byte, typ, flags uint16) {
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], 1)
}
