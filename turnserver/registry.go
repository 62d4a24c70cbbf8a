package turnserver

import (
	crand "crypto/rand"
	"encoding/hex"
	"io"
	"math/rand/v2"
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
	id uint64
	// key is the allocation's ID in the admin API: random, so it says
	// nothing about the allocations before it and cannot be guessed.
	key     string
	user    string
	callID  string
	network string
	created time.Time
	// scoped: made with an SFU credential; reaches the SFU allow-list
	// only (scope.go).
	scoped bool

	// Set once by registry.activate, under the registry's lock; nil closer
	// means the socket is still being bound.
	relay    net.Addr
	port     relayPort
	closer   io.Closer
	capTimer *time.Timer
	// client and transport: the client's address and how it reaches the
	// server (udp, tcp, tls), set by pion's OnAllocationCreated under the
	// registry's lock ("" until then).
	client, transport string

	// Bandwidth buckets (bandwidth.go): the allocation's own, by
	// direction, and its user's (set by reserve, nil without a limiter).
	bw     [numDirs]bucket
	userBW *userBuckets

	// The bit rate, sampled by the registry's sampler under its lock: the
	// byte counters at the last sample and the rates since the one before.
	sampledAt                time.Time
	sampledTo, sampledFrom   uint64
	rateToPeer, rateFromPeer uint64

	bytesToPeer     atomic.Uint64
	bytesFromPeer   atomic.Uint64
	packetsToPeer   atomic.Uint64
	packetsFromPeer atomic.Uint64
}

// traffic is what allocations relayed.
type traffic struct {
	bytesToPeer, bytesFromPeer, packetsToPeer, packetsFromPeer uint64
}

func (a *allocation) traffic() traffic {
	return traffic{a.bytesToPeer.Load(), a.bytesFromPeer.Load(), a.packetsToPeer.Load(), a.packetsFromPeer.Load()}
}

// trafficOf is what a relayed in user space and in the kernel.
func (r *registry) trafficOf(a *allocation) traffic {
	t := a.traffic()
	if k := r.kernel.Load(); k != nil {
		t.add(k.traffic(a))
	}
	return t
}

func (t *traffic) add(o traffic) {
	t.bytesToPeer += o.bytesToPeer
	t.bytesFromPeer += o.bytesFromPeer
	t.packetsToPeer += o.packetsToPeer
	t.packetsFromPeer += o.packetsFromPeer
}

// AllocationInfo describes a live allocation, for the admin API and tests.
type AllocationInfo struct {
	// ID names the allocation in DELETE /admin/allocations/{id}: random,
	// not derived from anything a client sees.
	ID        string `json:"id"`
	User      string `json:"user"`
	CallID    string `json:"call_id,omitempty"`
	Network   string `json:"network"`
	RelayAddr string `json:"relay_addr"`
	// ClientAddr and Transport: the client's address as the server sees
	// it, and udp, tcp or tls.
	ClientAddr      string    `json:"client_addr,omitempty"`
	Transport       string    `json:"transport,omitempty"`
	Created         time.Time `json:"created_at"`
	AgeSeconds      float64   `json:"age_seconds"`
	BytesToPeer     uint64    `json:"bytes_to_peer"`
	BytesFromPeer   uint64    `json:"bytes_from_peer"`
	PacketsToPeer   uint64    `json:"packets_to_peer"`
	PacketsFromPeer uint64    `json:"packets_from_peer"`
	// BPSToPeer and BPSFromPeer: the bit rate relayed over the last
	// sampling interval (RateInterval).
	BPSToPeer   uint64 `json:"bps_to_peer"`
	BPSFromPeer uint64 `json:"bps_from_peer"`
	// Scoped: made with the LiveKit SFU's credential, it reaches the SFU
	// allow-list only.
	Scoped bool `json:"scoped,omitempty"`
}

// registry tracks live allocations for quotas, revocation and listing, and
// the relay ports in use.
type registry struct {
	quotas Quotas
	bw     *limiter // bandwidth limits: never nil
	// kernel: the kernel path (kernel.go), nil when off. What it relayed
	// is part of every allocation's traffic (trafficOf).
	kernel atomic.Pointer[kernelPath]

	mu      sync.Mutex
	nextID  uint64
	byID    map[uint64]*allocation
	byKey   map[string]*allocation
	byPort  map[relayPort]*allocation // active ones
	perUser map[string]int
	perCall map[string]int
	// closed is set by close: from then on reserve refuses and activate
	// tells its caller to close the socket it just bound.
	closed  bool
	drained chan struct{} // closed once closed is set and byID is empty
	// retired is the traffic of the allocations released so far. An
	// allocation's traffic moves here under the lock, in the same step that
	// unlists it, so a sum never counts it twice (the exported counters
	// never go down).
	retired traffic
	// retiredScoped is the part of retired that scoped allocations
	// relayed.
	retiredScoped traffic

	// reserved are the relay ports taken, per network, from before the
	// bind until the socket closes. TCP relay listeners are bound with
	// SO_REUSEPORT (RFC 6062 Connect binds outgoing connections to the
	// relay address), so the kernel would let two allocations share a
	// port: this set is what keeps relayed addresses unique.
	reserved [numRelayNetworks]portBits
	// live marks the reserved ports whose socket is bound. It is read
	// without the lock on every relayed packet to the server's own
	// address (Policy.Allow), so it is a set of atomic words.
	live [numRelayNetworks]atomicPortBits
}

// Relay networks, the index of registry.reserved and registry.live.
const (
	netUDP4 = iota
	netUDP6
	netTCP4
	netTCP6
	numRelayNetworks
)

// relayNetwork maps pion's network names to the registry's index.
// udpRelayPort is the registry's key of the UDP relay socket at ip:port.
func udpRelayPort(ip net.IP, port int) relayPort {
	network := netUDP4
	if ip.To4() == nil {
		network = netUDP6
	}
	return relayPort{network: network, port: uint16(port)}
}

func relayNetwork(network string) (int, bool) {
	switch network {
	case "udp4":
		return netUDP4, true
	case "udp6":
		return netUDP6, true
	case "tcp4":
		return netTCP4, true
	case "tcp6":
		return netTCP6, true
	}
	return 0, false
}

type portBits [65536 / 64]uint64

func (b *portBits) has(p uint16) bool { return b[p/64]&(1<<(p%64)) != 0 }
func (b *portBits) set(p uint16)      { b[p/64] |= 1 << (p % 64) }
func (b *portBits) clear(p uint16)    { b[p/64] &^= 1 << (p % 64) }

type atomicPortBits [65536 / 64]atomic.Uint64

func (b *atomicPortBits) has(p uint16) bool { return b[p/64].Load()&(1<<(p%64)) != 0 }
func (b *atomicPortBits) set(p uint16)      { b[p/64].Or(1 << (p % 64)) }
func (b *atomicPortBits) clear(p uint16)    { b[p/64].And(^uint64(1 << (p % 64))) }

func newRegistry(q Quotas) *registry {
	bw, _ := newLimiter(Bandwidth{}) // no limits: cannot fail
	return &registry{
		quotas:  q,
		bw:      bw,
		byID:    make(map[uint64]*allocation),
		byKey:   make(map[string]*allocation),
		byPort:  make(map[relayPort]*allocation),
		perUser: make(map[string]int),
		perCall: make(map[string]int),
		drained: make(chan struct{}),
	}
}

// reservePort takes a relay port of network: the requested one if it is
// free, or with requested 0 a random free one in [lo, hi]. It reports false
// when none is free or the registry is closed.
func (r *registry) reservePort(network int, lo, hi, requested uint16) (uint16, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, false
	}
	set := &r.reserved[network]
	if requested != 0 {
		if set.has(requested) {
			return 0, false
		}
		set.set(requested)
		return requested, true
	}
	// Start at a random port and take the first free one from there: a
	// few random draws would fail in a nearly full range, and a scan of
	// the bit set costs microseconds even for 16 384 ports.
	n := int(hi) - int(lo) + 1
	start := rand.IntN(n)
	for i := range n {
		p := uint16(int(lo) + (start+i)%n)
		if !set.has(p) {
			set.set(p)
			return p, true
		}
	}
	return 0, false
}

// portBound marks a reserved port as a live relay socket.
func (r *registry) portBound(network int, port uint16) { r.live[network].set(port) }

// releasePort frees a port taken by reservePort, once its socket is closed
// (or its bind failed).
func (r *registry) releasePort(network int, port uint16) {
	r.live[network].clear(port)
	r.mu.Lock()
	r.reserved[network].clear(port)
	r.mu.Unlock()
}

// liveRelayPort reports whether port of network is bound by a relay socket
// of this server. It does not lock.
func (r *registry) liveRelayPort(network int, port uint16) bool {
	return r.live[network].has(port)
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

// reserve counts a against the quotas unless one is full (it returns the
// quota that refused it) or the registry is closed (errServerClosed). a is
// not listed, revoked or closed by the registry until activate.
func (r *registry) reserve(a *allocation) (quota string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", errServerClosed
	}
	if q := r.exceededLocked(a.user, a.callID); q != "" {
		return q, nil
	}
	r.nextID++
	a.id = r.nextID
	a.key = newAllocationKey()
	r.byID[a.id] = a
	r.byKey[a.key] = a
	r.bw.attach(a)
	r.perUser[a.user]++
	if a.callID != "" {
		r.perCall[a.callID]++
	}
	return "", nil
}

// activate publishes a reserved allocation once its socket exists. It
// reports false if the registry was closed meanwhile: close did not see the
// socket, so the caller must close it.
func (r *registry) activate(a *allocation, relay net.Addr, port relayPort, closer io.Closer, capTimer *time.Timer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	a.relay, a.port, a.closer, a.capTimer = relay, port, closer, capTimer
	a.sampledAt = time.Now() // the sampler's clock: real, not Config.Now
	r.byPort[port] = a
	return !r.closed
}

// newAllocationKey returns 96 random bits, hex.
func newAllocationKey() string {
	var b [12]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}

// noteClient records the client of the allocation on relay port, from
// pion's OnAllocationCreated.
func (r *registry) noteClient(port relayPort, client, transport string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byPort[port]; a != nil {
		a.client, a.transport = client, transport
	}
}

// close refuses new allocations from now on and returns the active ones,
// for the caller to close. Allocations still being set up close themselves
// in activate's caller. drained is closed once every allocation is released.
func (r *registry) close() []*allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		r.signalDrainedLocked()
	}
	out := make([]*allocation, 0, len(r.byID))
	for _, a := range r.byID {
		if a.closer != nil {
			out = append(out, a)
		}
	}
	return out
}

func (r *registry) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *registry) signalDrainedLocked() {
	if r.closed && len(r.byID) == 0 {
		select {
		case <-r.drained:
		default:
			close(r.drained)
		}
	}
}

func (r *registry) release(a *allocation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byID[a.id]; !ok {
		return
	}
	delete(r.byID, a.id)
	delete(r.byKey, a.key)
	if r.byPort[a.port] == a {
		delete(r.byPort, a.port)
	}
	r.bw.detach(a)
	t := r.trafficOf(a)
	if k := r.kernel.Load(); k != nil {
		k.forget(a) // after its last read
	}
	r.retired.add(t)
	if a.scoped {
		r.retiredScoped.add(t)
	}
	decrement(r.perUser, a.user)
	if a.callID != "" {
		decrement(r.perCall, a.callID)
	}
	r.signalDrainedLocked()
}

func decrement(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// relayed sums the traffic of every allocation, live or released, and
// that of the scoped ones.
func (r *registry) relayed() (all, scoped traffic) {
	r.mu.Lock()
	defer r.mu.Unlock()
	all, scoped = r.retired, r.retiredScoped
	for _, a := range r.byID {
		t := r.trafficOf(a)
		all.add(t)
		if a.scoped {
			scoped.add(t)
		}
	}
	return all, scoped
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

// Filter selects allocations by user and call; empty fields match all.
type Filter struct {
	User, CallID string
}

func (f Filter) match(a *allocation) bool {
	return (f.User == "" || a.user == f.User) && (f.CallID == "" || a.callID == f.CallID)
}

func (r *registry) list(f Filter, now time.Time) []AllocationInfo {
	r.mu.Lock()
	out := make([]AllocationInfo, 0, len(r.byID))
	for _, a := range r.byID {
		if a.closer == nil || !f.match(a) {
			continue // still being set up, or not asked for
		}
		t := r.trafficOf(a)
		out = append(out, AllocationInfo{
			ID:              a.key,
			User:            a.user,
			CallID:          a.callID,
			Network:         a.network,
			RelayAddr:       a.relay.String(),
			ClientAddr:      a.client,
			Transport:       a.transport,
			Created:         a.created,
			AgeSeconds:      max(now.Sub(a.created), 0).Seconds(),
			BytesToPeer:     t.bytesToPeer,
			BytesFromPeer:   t.bytesFromPeer,
			PacketsToPeer:   t.packetsToPeer,
			PacketsFromPeer: t.packetsFromPeer,
			BPSToPeer:       a.rateToPeer,
			BPSFromPeer:     a.rateFromPeer,
			Scoped:          a.scoped,
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

// byKeyOf returns the active allocation named key, or nil.
func (r *registry) byKeyOf(key string) *allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a := r.byKey[key]; a != nil && a.closer != nil {
		return a
	}
	return nil
}

// matching returns the active allocations f selects; an empty filter
// selects none (a kill of everything is Close's job, not a typo's).
func (r *registry) matching(f Filter) []*allocation {
	if f == (Filter{}) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*allocation
	for _, a := range r.byID {
		if a.closer != nil && f.match(a) {
			out = append(out, a)
		}
	}
	return out
}

// sampleRates updates every allocation's bit rates from its byte counters:
// the counters the relay keeps anyway, read once per interval, so the rate
// costs nothing per packet.
func (r *registry) sampleRates(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.byID {
		if a.closer == nil {
			continue
		}
		t := r.trafficOf(a)
		to, from := t.bytesToPeer, t.bytesFromPeer
		if dt := now.Sub(a.sampledAt).Seconds(); dt > 0 {
			a.rateToPeer = uint64(float64(to-a.sampledTo) * 8 / dt)
			a.rateFromPeer = uint64(float64(from-a.sampledFrom) * 8 / dt)
		}
		a.sampledAt, a.sampledTo, a.sampledFrom = now, to, from
	}
}
