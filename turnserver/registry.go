package turnserver

import (
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Quota names, the "quota" label of icebox_turn_quota_rejections_total.
const (
	quotaUser  = "user"
	quotaCall  = "call"
	quotaTotal = "total"
)

// Quotas limits live allocations. Zero means unlimited.
type Quotas struct {
	PerUser int
	PerCall int
	Total   int
}

// allocation is icebox's record of one relay socket (or TCP relay listener):
// who owns it, what it relayed, and how to end it. pion/turn has no API to
// delete an allocation; closing the relay socket ends it.
type allocation struct {
	id      uint64
	user    string
	callID  string
	network string
	created time.Time

	// Set once by registry.activate, under the registry's lock; nil closer
	// means the socket is still being bound.
	relay    net.Addr
	closer   io.Closer
	capTimer *time.Timer

	bytesToPeer     atomic.Uint64
	bytesFromPeer   atomic.Uint64
	packetsToPeer   atomic.Uint64
	packetsFromPeer atomic.Uint64
}

// AllocationInfo describes a live allocation, for the admin API and tests.
type AllocationInfo struct {
	User            string    `json:"user"`
	CallID          string    `json:"call_id,omitempty"`
	Network         string    `json:"network"`
	RelayAddr       string    `json:"relay_addr"`
	Created         time.Time `json:"created_at"`
	BytesToPeer     uint64    `json:"bytes_to_peer"`
	BytesFromPeer   uint64    `json:"bytes_from_peer"`
	PacketsToPeer   uint64    `json:"packets_to_peer"`
	PacketsFromPeer uint64    `json:"packets_from_peer"`
}

// registry tracks live allocations for quotas, revocation and listing.
type registry struct {
	quotas Quotas

	mu      sync.Mutex
	nextID  uint64
	byID    map[uint64]*allocation
	perUser map[string]int
	perCall map[string]int
}

func newRegistry(q Quotas) *registry {
	return &registry{
		quotas:  q,
		byID:    make(map[uint64]*allocation),
		perUser: make(map[string]int),
		perCall: make(map[string]int),
	}
}

// exceeded names the quota a new allocation for user/callID would exceed, or "".
func (r *registry) exceeded(user, callID string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.exceededLocked(user, callID)
}

func (r *registry) exceededLocked(user, callID string) string {
	switch {
	case r.quotas.Total > 0 && len(r.byID) >= r.quotas.Total:
		return quotaTotal
	case r.quotas.PerUser > 0 && r.perUser[user] >= r.quotas.PerUser:
		return quotaUser
	case callID != "" && r.quotas.PerCall > 0 && r.perCall[callID] >= r.quotas.PerCall:
		return quotaCall
	}
	return ""
}

// reserve counts a against the quotas unless one is full; it returns the
// quota that refused it, or "". a is not listed, revoked or closed by the
// registry until activate.
func (r *registry) reserve(a *allocation) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.exceededLocked(a.user, a.callID); q != "" {
		return q
	}
	r.nextID++
	a.id = r.nextID
	r.byID[a.id] = a
	r.perUser[a.user]++
	if a.callID != "" {
		r.perCall[a.callID]++
	}
	return ""
}

// activate publishes a reserved allocation once its socket exists.
func (r *registry) activate(a *allocation, relay net.Addr, closer io.Closer, capTimer *time.Timer) {
	r.mu.Lock()
	a.relay, a.closer, a.capTimer = relay, closer, capTimer
	r.mu.Unlock()
}

func (r *registry) release(a *allocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[a.id]; !ok {
		return
	}
	delete(r.byID, a.id)
	decrement(r.perUser, a.user)
	if a.callID != "" {
		decrement(r.perCall, a.callID)
	}
}

func decrement(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

func (r *registry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// ofCall returns the live allocations of a call.
func (r *registry) ofCall(callID string) []*allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*allocation
	for _, a := range r.byID {
		if a.callID == callID && a.closer != nil {
			out = append(out, a)
		}
	}
	return out
}

func (r *registry) list() []AllocationInfo {
	r.mu.Lock()
	out := make([]AllocationInfo, 0, len(r.byID))
	for _, a := range r.byID {
		if a.closer == nil {
			continue // still being set up
		}
		out = append(out, AllocationInfo{
			User:            a.user,
			CallID:          a.callID,
			Network:         a.network,
			RelayAddr:       a.relay.String(),
			Created:         a.created,
			BytesToPeer:     a.bytesToPeer.Load(),
			BytesFromPeer:   a.bytesFromPeer.Load(),
			PacketsToPeer:   a.packetsToPeer.Load(),
			PacketsFromPeer: a.packetsFromPeer.Load(),
		})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b AllocationInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.RelayAddr, b.RelayAddr)
	})
	return out
}

func (r *registry) all() []*allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*allocation, 0, len(r.byID))
	for _, a := range r.byID {
		if a.closer != nil {
			out = append(out, a)
		}
	}
	return out
}
