package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// TestSecurityLiveChannelRefused: a bound channel that relays both ways
// stops, both ways (a refused peer is neither reached nor heard), the moment the relay must refuse it — the peer
// deny-listed by a reload, the peer's address becoming one of the host's,
// the call revoked, a bandwidth limit set (then what is over it is
// dropped), and a scoped (SFU) allocation's peer leaving the allow-list.
// In every mode (forModes): with the kernel path on, each case first
// checks the kernel relayed the channel (its counters), or — scoped
// allocations and limited ones — that it kept out of the kernel, and then
// that the refusal holds with the kernel's entries gone.
func TestSecurityLiveChannelRefused(t *testing.T) {
	forModes(t, func(t *testing.T, m testMode) {
		t.Run("deny-listed by a reload", func(t *testing.T) {
			r := startRelay(t, m.options(relayOptions{allowLoopback: true}))
			b := r.kernelChannelBed(t, "alice", "")
			pc := r.policy
			pc.AllowLoopback, pc.Allowed = false, nil
			p, err := NewPolicy(pc)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.srv.SetPolicy(p); err != nil {
				t.Fatal(err)
			}
			b.refusedFromNow(t, true)
		})

		t.Run("peer becomes a host address", func(t *testing.T) {
			if !m.veth() {
				t.Skip("loopback peers are open to tests (allow_loopback_peers): the host-address rule shows on the veth bed")
			}
			var hosts atomic.Pointer[[]netip.Addr]
			hosts.Store(&[]netip.Addr{m.relayIP()})
			r := startRelay(t, m.options(relayOptions{
				hostAddrs:         func() ([]netip.Addr, error) { return *hosts.Load(), nil },
				hostAddrsInterval: 10 * time.Millisecond,
			}))
			b := r.kernelChannelBed(t, "alice", "")
			hosts.Store(&[]netip.Addr{m.relayIP(), b.peerAP.Addr()})
			waitFor(t, "the policy to deny the peer", 5*time.Second, func() bool { return !r.srv.policy.Load().Allow(b.peerAP) })
			b.refusedFromNow(t, true)
		})

		t.Run("call revoked", func(t *testing.T) {
			r := startRelay(t, m.options(relayOptions{allowLoopback: true}))
			b := r.kernelChannelBed(t, "alice", "call-r")
			if n := r.srv.RevokeCall("call-r", r.clock.Now().Add(time.Hour)); n != 1 {
				t.Fatalf("RevokeCall closed %d allocations, want 1", n)
			}
			b.refusedFromNow(t, true)
		})

		t.Run("over a bandwidth limit", func(t *testing.T) {
			r := startRelay(t, m.options(relayOptions{allowLoopback: true}))
			b := r.kernelChannelBed(t, "alice", "")
			// 16 kbit/s with a 500 ms burst: 1000 bytes at once, then
			// 2000 bytes a second.
			if err := r.srv.SetBandwidth(Bandwidth{PerAllocation: 16_000}); err != nil {
				t.Fatal(err)
			}
			r.inKernel(t, 0)
			k0 := r.kernelRelayed()
			const n = 20
			got := b.burstToPeer(t, n, 400)
			t.Logf("%s: %d of %d datagrams of 400 bytes through a 16 kbit/s limit", m.name, got, n)
			if got == 0 || got > n/2 {
				t.Errorf("%d of %d datagrams through the limit, want some but at most %d", got, n, n/2)
			}
			if k := r.kernelRelayed(); k != k0 {
				t.Errorf("the kernel relayed for a limited allocation: %+v → %+v", k0, k)
			}
		})

		t.Run("scoped allocation", func(t *testing.T) {
			sfu := m.listenUDP(t)
			sfuAP := sfu.LocalAddr().(*net.UDPAddr).AddrPort()
			r := startRelay(t, m.options(relayOptions{allowLoopback: true, sfuKeys: []string{testSFUSecret},
				sfuPeers: []PeerRange{{Prefix: netip.PrefixFrom(sfuAP.Addr(), 32), MinPort: sfuAP.Port(), MaxPort: sfuAP.Port()}}}))
			user, pass := livekitCredential(testSFUSecret, r.clock.Now(), 4*time.Hour)
			b := &channelBed{t: t, r: r, c: r.rawUDP(t, user, pass), peer: sfu, peerAP: sfuAP}
			b.relay = b.c.allocate(protoUDP)
			if code := b.request(stun.MethodChannelBind, channelNumber(testChannel), xorPeer(sfuAP)); code != 0 {
				t.Fatalf("ChannelBind to the SFU: %d", code)
			}
			k0 := r.kernelRelayed()
			if !b.relayedBoth(5 * time.Second) {
				t.Fatal("the scoped channel relays nothing")
			}
			// The allow-list is checked per datagram in user space: a
			// scoped channel never enters the kernel.
			if n := r.kernelChannels(t); n != 0 {
				t.Fatalf("%d scoped channels in the kernel, want 0", n)
			}
			if k := r.kernelRelayed(); k != k0 {
				t.Fatalf("the kernel relayed for a scoped allocation: %+v → %+v", k0, k)
			}
			if err := r.srv.SetSFUPeers(nil); err != nil {
				t.Fatal(err)
			}
			b.refusedFromNow(t, true)
		})
	})
}

// kernelChannelBed binds a channel for user (and call) and checks it
// relays both ways — in the kernel mode through the kernel.
func (r *testRelay) kernelChannelBed(t *testing.T, user, call string) *channelBed {
	t.Helper()
	cred := r.mint(t, user, call, time.Hour)
	b := &channelBed{t: t, r: r, c: r.rawUDP(t, cred.Username, cred.Password), peer: r.newPeer(t)}
	b.peerAP = b.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	b.relay = b.c.allocate(protoUDP)
	if code := b.request(stun.MethodChannelBind, channelNumber(testChannel), xorPeer(b.peerAP)); code != 0 {
		t.Fatalf("ChannelBind: got error %d", code)
	}
	r.inKernel(t, 1)
	k0 := r.kernelRelayed()
	if !b.relayedBoth(5 * time.Second) {
		t.Fatal("the channel relays nothing")
	}
	for range 20 {
		if !b.toPeer(time.Second) || !b.toClient(time.Second) {
			t.Fatal("a datagram on the channel was lost")
		}
	}
	r.viaKernel(t, k0)
	return b
}

// refusedFromNow checks the kernel holds no channel and nothing reaches
// the peer any more; bothWays: nor the client. The peer policy (deny-list,
// host addresses) governs where the relay sends, as in user space; the
// peer's datagrams to the client stop with the permission, the
// allocation or the scope.
func (b *channelBed) refusedFromNow(t *testing.T, bothWays bool) {
	t.Helper()
	b.r.inKernel(t, 0)
	k0 := b.r.kernelRelayed()
	leaked, back := 0, 0
	for range 5 {
		if b.toPeer(100 * time.Millisecond) {
			leaked++
		}
		if b.toClient(100 * time.Millisecond) {
			back++
		}
	}
	k := b.r.kernelRelayed()
	t.Logf("%s: after the refusal %d of 5 datagrams reached the peer (want 0), %d of 5 the client (want 0: %v); the kernel relayed %d/%d of them (want 0/0)",
		b.r.mode.name, leaked, back, bothWays, k.packetsToPeer-k0.packetsToPeer, k.packetsFromPeer-k0.packetsFromPeer)
	if leaked != 0 || (bothWays && back != 0) {
		t.Errorf("relayed after the refusal: %d to the peer, %d to the client", leaked, back)
	}
	if k != k0 {
		t.Errorf("the kernel relayed after the refusal: %+v → %+v", k0, k)
	}
}

// burstToPeer sends n ChannelData datagrams of size bytes at once and
// counts those the peer receives.
func (b *channelBed) burstToPeer(t *testing.T, n, size int) int {
	t.Helper()
	payload := make([]byte, size)
	for i := range n {
		payload[0] = byte(i)
		d := binary.BigEndian.AppendUint16(nil, testChannel)
		d = binary.BigEndian.AppendUint16(d, uint16(size))
		d = append(d, payload...)
		if _, err := b.c.udp.WriteTo(d, b.c.server); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for receive(b.peer, 300*time.Millisecond, func(p []byte) bool { return len(p) == size }) {
		got++
		if got > n {
			break
		}
	}
	return got
}
