package turnserver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// DefaultHostAddrsInterval is how often a Server re-reads the host's
// addresses when Config.HostAddrsInterval is zero. On Linux a netlink
// subscription re-reads them at once when they change; the interval is the
// fallback (events lost to a full socket buffer, other systems), short
// enough that a SLAAC address appearing is protected within seconds.
const DefaultHostAddrsInterval = 5 * time.Second

// ListHostAddrs lists every address of this host's interfaces (of the
// network namespace of the calling thread). It is Config.HostAddrs'
// default.
func ListHostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// hostSet returns addrs canonical (Canonical, so 6to4 and mapped forms
// meet the peers they stand for), sorted and without duplicates, for
// hostSetContains.
func hostSet(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, Canonical(a))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// hostSetContains is a binary search of a hostSet: per packet, without
// allocating, also on a host with hundreds of addresses.
func hostSetContains(set []netip.Addr, ip netip.Addr) bool {
	_, ok := slices.BinarySearchFunc(set, ip, netip.Addr.Compare)
	return ok
}

// hostAddrs is the host's address set as last read; readers load it per
// packet, the watcher swaps it whole.
type hostAddrs struct {
	set atomic.Pointer[[]netip.Addr]
}

func (h *hostAddrs) contains(ip netip.Addr) bool {
	s := h.set.Load()
	return s != nil && hostSetContains(*s, ip)
}

// store swaps the set in; changed: it differs from the one before.
func (h *hostAddrs) store(addrs []netip.Addr) (changed bool) {
	s := hostSet(addrs)
	old := h.set.Swap(&s)
	return old == nil || !slices.Equal(*old, s)
}

// refreshHostAddrs re-reads the host's addresses into s.hosts. On error the
// previous set stays: it still protects every address seen so far.
func (s *Server) refreshHostAddrs() error {
	addrs, err := s.cfg.HostAddrs()
	if err != nil {
		return fmt.Errorf("turnserver: host addresses: %w", err)
	}
	if s.hosts.store(addrs) {
		// A peer that is now the host's own address leaves the kernel's
		// maps, whose datagrams never see the policy.
		s.kernelSyncAll()
	}
	return nil
}

// watchHostAddrs re-reads the host's addresses when changed signals (a
// netlink event; nil where there are none) and every interval, until ctx
// ends.
func (s *Server) watchHostAddrs(ctx context.Context, changed <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-changed:
		}
		if err := s.refreshHostAddrs(); err != nil {
			s.log.Warn().Err(err).Msg("re-reading the host's addresses; keeping the previous set")
		}
	}
}
