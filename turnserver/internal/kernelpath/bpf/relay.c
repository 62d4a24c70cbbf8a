// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// icebox's kernel path: relays steady-state TURN ChannelData (RFC 8656
// §12) for UDP allocations with a bound channel, at tc ingress, without
// waking user space. Two hash maps, filled only by icebox's user space
// after it has authenticated the client, checked the peer policy and seen
// a permission and a channel binding:
//
//   to_peer:   (listener addr, client addr, channel) → (relay addr, peer addr)
//              ChannelData from the client: the 4-byte header is removed
//              and the payload leaves from the relay address to the peer.
//   to_client: (relay addr, peer addr) → (listener addr, client addr, channel)
//              UDP from the peer: a ChannelData header is added and the
//              datagram leaves from the listener address to the client.
//
// Anything that does not match exactly — STUN, unbound channels, padded
// ChannelData, IP options or extension headers, fragments, GSO packets,
// expired entries, a datagram that would exceed the egress MTU or
// maxPayload, a change of address family — passes (PASS) to the
// socket and user space, which handles it as before. Addresses are 16
// bytes (IPv4 as ::ffff:a.b.c.d); ports and the channel in host order.
//
// The UDP header never moves: the payload moves by 4 bytes instead (and
// the tail is trimmed or grown). A CHECKSUM_PARTIAL skb (veth, virtio, local
// senders) keeps a valid csum_start that way, and bpf_l4_csum_replace
// updates the checksum field the way the skb carries it: every change for
// a full checksum, only the pseudo-header's for a partial one (the rest is
// summed at transmit from the unmoved header). A CHECKSUM_COMPLETE skb
// becomes CHECKSUM_NONE when bpf_skb_change_tail trims or grows it (the
// receiver verifies the bytes); the hairpin, which keeps the length, changes
// only fields whose difference bpf_l4_csum_replace carries into skb->csum.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual MIT/GPL";

struct addr16 {
	__u8 b[16];
};

struct to_peer_key {
	struct addr16 listener;
	struct addr16 client;
	__u16 listener_port;
	__u16 client_port;
	__u16 channel;
	__u16 pad;
};

struct to_peer_val {
	struct addr16 relay;
	struct addr16 peer;
	__u16 relay_port;
	__u16 peer_port;
	__u32 alloc;   // key of the counters
	__u32 ifindex; // egress device towards the peer
	__u32 flags;   // PEER_LOCAL
	__u64 expires; // CLOCK_MONOTONIC ns (bpf_ktime_get_ns)
};

// PEER_LOCAL: the peer is an address of this host — another allocation's
// relay (two clients of this server, as turnutils_uclient -y pairs them).
// The datagram would come straight back in to that relay port, so it goes
// to that allocation's client at once if its channel for this relay is in
// to_client, and to user space if not.
#define PEER_LOCAL 1

struct to_client_key {
	struct addr16 relay;
	struct addr16 peer;
	__u16 relay_port;
	__u16 peer_port;
};

struct to_client_val {
	struct addr16 listener;
	struct addr16 client;
	__u16 listener_port;
	__u16 client_port;
	__u16 channel;
	__u16 pad;
	__u32 alloc;
	__u32 ifindex; // egress device towards the client
	__u64 expires;
};

// The hash maps are not preallocated: 2^17 entries each would pin tens of
// MiB at start whatever the load; an entry costs its few hundred bytes when
// a channel is bound instead.

// Per allocation, per CPU: what the kernel path relayed (payload bytes, as
// user space counts them).
struct counters {
	__u64 packets_to_peer;
	__u64 bytes_to_peer;
	__u64 packets_to_client;
	__u64 bytes_to_client;
};

// Why datagrams that matched an entry were not relayed here (per CPU).
enum stat {
	STAT_EXPIRED = 0,
	STAT_TOO_BIG,
	STAT_ERROR,
	// Not reasons: datagrams relayed, by hook (which one did the work).
	STAT_RELAYED_TC,
	STAT_RELAYED_XDP,
	// XDP only: a datagram of an entry left to the stack (the tc program
	// behind XDP, or user space): the egress has no resolved neighbour
	// yet, no route, no XDP redirect target, does not forward, or its MTU
	// is too small, or the entry expired.
	STAT_XDP_PASSED,
	STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 17);
	__type(key, struct to_peer_key);
	__type(value, struct to_peer_val);
} to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 17);
	__type(key, struct to_client_key);
	__type(value, struct to_client_val);
} to_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 17);
	__type(key, __u32);
	__type(value, struct counters);
} alloc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// scratch holds the chunk of payload being moved (too big for the stack).
struct chunk {
	__u8 b[256];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chunk);
} scratch SEC(".maps");

// PASS hands the packet on: to the next tcx program if there is one (a
// CNI's, a firewall's), else to the stack. TC_ACT_OK would end the chain.
#define PASS TC_ACT_UNSPEC

#define IP_MF_OFFSET 0x3fff
#define TTL 64
#define ETH_LEN 14
#define UDP_LEN 8
// The payload moves in chunks of CHUNK bytes; past MAX_CHUNKS of them the
// datagram is left to user space (WebRTC media stays under ≈1200 bytes).
#define CHUNK 256
#define MAX_CHUNKS 8
#define MAX_PAYLOAD (CHUNK * MAX_CHUNKS)

static __always_inline void count_stat(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	if (v)
		*v += 1;
}

static __always_inline int is_v4(const struct addr16 *a)
{
	const __u32 *w = (const __u32 *)a->b;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

static __always_inline __u16 csum_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

static __always_inline void count(__u32 alloc, int to_peer_dir, __u32 bytes)
{
	struct counters *c = bpf_map_lookup_elem(&alloc_counters, &alloc);
	if (!c) {
		struct counters zero = {};
		bpf_map_update_elem(&alloc_counters, &alloc, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&alloc_counters, &alloc);
		if (!c)
			return;
	}
	if (to_peer_dir) {
		c->packets_to_peer++;
		c->bytes_to_peer += bytes;
	} else {
		c->packets_to_client++;
		c->bytes_to_client += bytes;
	}
}

// A datagram as parsed at ingress.
struct dgram {
	struct addr16 src, dst;
	__u16 sport, dport;
	__u16 ulen; // UDP length
	__u32 l4;   // offset of the UDP header
	int v6;
};

// move_payload moves len bytes at from to from+4 (grow) or from+4 to from
// (shrink), in chunks through the stack, in the order that never reads
// what it already overwrote.
static __always_inline int move_payload(struct __sk_buff *skb, __u32 from, __u32 len, int grow)
{
	__u32 zero = 0;
	struct chunk *buf = bpf_map_lookup_elem(&scratch, &zero);
	if (!buf)
		return -1;
	__u32 n_chunks = (len + CHUNK - 1) / CHUNK;
	for (__u32 i = 0; i < MAX_CHUNKS; i++) {
		if (i >= n_chunks)
			break;
		__u32 idx = grow ? n_chunks - 1 - i : i;
		__u32 off = idx * CHUNK;
		__u64 n = len - off;
		if (n > CHUNK)
			n = CHUNK;
		// Bounds the verifier can follow: 1 ≤ n ≤ CHUNK, checked apart
		// (the compiler would merge the checks into one it cannot).
		asm volatile("" : "+r"(n));
		if (n > CHUNK)
			return -1;
		asm volatile("" : "+r"(n));
		if (n == 0)
			return -1;
		__u32 src = grow ? from + off : from + 4 + off;
		__u32 dst = grow ? from + 4 + off : from + off;
		if (bpf_skb_load_bytes(skb, src, buf->b, n) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, dst, buf->b, n, 0) < 0)
			return -1;
	}
	return 0;
}

// rewrite_ip sets the addresses, TTL and length of the IP header.
static __always_inline int rewrite_ip(struct __sk_buff *skb, const struct dgram *d,
				      const struct addr16 *src, const struct addr16 *dst, __u16 nulen)
{
	if (!d->v6) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ETH_LEN, &ip, sizeof(ip)) < 0)
			return -1;
		__builtin_memcpy(&ip.saddr, &src->b[12], 4);
		__builtin_memcpy(&ip.daddr, &dst->b[12], 4);
		ip.ttl = TTL;
		ip.tot_len = bpf_htons(sizeof(ip) + nulen);
		ip.check = 0;
		__u16 *w = (__u16 *)&ip;
		__u64 s = 0;
#pragma unroll
		for (int i = 0; i < (int)(sizeof(ip) / 2); i++)
			s += w[i];
		ip.check = csum_fold(s);
		return bpf_skb_store_bytes(skb, ETH_LEN, &ip, sizeof(ip), 0);
	}
	struct ipv6hdr ip;
	if (bpf_skb_load_bytes(skb, ETH_LEN, &ip, sizeof(ip)) < 0)
		return -1;
	__builtin_memcpy(&ip.saddr, src->b, 16);
	__builtin_memcpy(&ip.daddr, dst->b, 16);
	ip.hop_limit = TTL;
	ip.payload_len = bpf_htons(nulen);
	return bpf_skb_store_bytes(skb, ETH_LEN, &ip, sizeof(ip), 0);
}

// fix_csum updates the UDP checksum for the new pseudo-header (addresses,
// length) and the header's ports, length and the ChannelData header
// removed (cd_from) or added (cd_to), and the padding removed (pad_from,
// the bytes laid out as they sum). The payload moved by 4 bytes, so
// every byte keeps its parity and its share of the sum. An IPv4 datagram
// sent without a checksum (0) keeps none.
static __always_inline int fix_csum(struct __sk_buff *skb, const struct dgram *d,
				    const struct addr16 *src, const struct addr16 *dst,
				    __u16 nsport, __u16 ndport, __u16 nulen, __u32 cd_from, __u32 cd_to,
				    __u32 pad_from)
{
	__u64 mangled = d->v6 ? 0 : BPF_F_MARK_MANGLED_0;
	__u32 csum_off = d->l4 + 6;
	// The pseudo-header: source, destination, length (IPv4: the last 4
	// bytes of the 16; the leading ::ffff: is the same in both and sums
	// away).
	__be32 pf[9] = {}, pt[9] = {};
	__builtin_memcpy(&pf[0], d->src.b, 16);
	__builtin_memcpy(&pf[4], d->dst.b, 16);
	pf[8] = bpf_htonl(d->ulen);
	__builtin_memcpy(&pt[0], src->b, 16);
	__builtin_memcpy(&pt[4], dst->b, 16);
	pt[8] = bpf_htonl(nulen);
	__s64 diff = bpf_csum_diff(pf, sizeof(pf), pt, sizeof(pt), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, BPF_F_PSEUDO_HDR | mangled) < 0)
		return -1;
	struct {
		__be16 sport, dport;
		__be32 len;
		__u32 cd;
		__u32 pad;
	} hf = {bpf_htons(d->sport), bpf_htons(d->dport), bpf_htonl(d->ulen), cd_from, pad_from},
	  ht = {bpf_htons(nsport), bpf_htons(ndport), bpf_htonl(nulen), cd_to, 0};
	diff = bpf_csum_diff((__be32 *)&hf, sizeof(hf), (__be32 *)&ht, sizeof(ht), 0);
	if (diff < 0 || bpf_l4_csum_replace(skb, csum_off, 0, diff, mangled) < 0)
		return -1;
	return 0;
}

static __always_inline int write_udp(struct __sk_buff *skb, const struct dgram *d, __u16 sport,
				     __u16 dport, __u16 ulen)
{
	struct {
		__be16 sport, dport, len;
	} h = {bpf_htons(sport), bpf_htons(dport), bpf_htons(ulen)};
	return bpf_skb_store_bytes(skb, d->l4, &h, sizeof(h), 0);
}

// hairpin relays ChannelData whose peer is another relay of this host to
// that relay's client, as ChannelData on that client's channel: the
// length stays, the channel number, addresses and ports change. Both
// allocations' entries must be live: each is there only while user space
// holds its binding, its permission and the policy's consent.
static __always_inline int hairpin(struct __sk_buff *skb, const struct dgram *d,
				   const struct to_peer_val *v, __u32 cd, __u16 size)
{
	struct to_client_key k = {.relay = v->peer, .peer = v->relay,
				  .relay_port = v->peer_port, .peer_port = v->relay_port};
	struct to_client_val *w = bpf_map_lookup_elem(&to_client, &k);
	if (!w || is_v4(&w->listener) != !d->v6 || is_v4(&w->client) != !d->v6)
		return PASS;
	if (bpf_ktime_get_ns() >= w->expires) {
		count_stat(STAT_EXPIRED);
		return PASS;
	}
	__u32 ifindex = w->ifindex, from_alloc = v->alloc, to_alloc = w->alloc;
	__u32 mtu = 0;
	if (bpf_check_mtu(skb, ifindex, &mtu, 0, 0) != 0) {
		count_stat(STAT_TOO_BIG);
		return PASS;
	}
	struct addr16 src = w->listener, dst = w->client;
	__u16 sport = w->listener_port, dport = w->client_port, channel = w->channel;
	__u8 cdh[4] = {channel >> 8, channel & 0xff, size >> 8, size & 0xff};
	__u32 ncd;
	__builtin_memcpy(&ncd, cdh, 4);
	if (fix_csum(skb, d, &src, &dst, sport, dport, d->ulen, cd, ncd, 0) < 0)
		goto fail;
	if (bpf_skb_store_bytes(skb, d->l4 + UDP_LEN, &ncd, 4, 0) < 0)
		goto fail;
	if (write_udp(skb, d, sport, dport, d->ulen) < 0 || rewrite_ip(skb, d, &src, &dst, d->ulen) < 0)
		goto fail;
	count(from_alloc, 1, size);
	count(to_alloc, 0, size);
	count_stat(STAT_RELAYED_TC);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
fail:
	count_stat(STAT_ERROR);
	return TC_ACT_SHOT;
}

// to_peer relays a bound channel's ChannelData to its peer.
static __always_inline int to_peer_path(struct __sk_buff *skb, const struct dgram *d, __u32 cd)
{
	__u8 *c = (__u8 *)&cd;
	struct to_peer_key k = {.listener = d->dst, .client = d->src,
				.listener_port = d->dport, .client_port = d->sport,
				.channel = ((__u16)c[0] << 8) | c[1]};
	struct to_peer_val *v = bpf_map_lookup_elem(&to_peer, &k);
	if (!v || is_v4(&v->relay) != !d->v6 || is_v4(&v->peer) != !d->v6)
		return PASS;
	__u16 size = ((__u16)c[2] << 8) | c[3];
	// One ChannelData message, padded to 4 bytes or not (pion's client
	// pads over UDP too); anything else is user space's to judge.
	__u32 pad = d->ulen - (UDP_LEN + 4 + size);
	if (d->ulen < UDP_LEN + 4 + size || pad > 3 || size > MAX_PAYLOAD)
		return PASS;
	if (bpf_ktime_get_ns() >= v->expires) {
		count_stat(STAT_EXPIRED);
		return PASS;
	}
	if (v->flags & PEER_LOCAL)
		return hairpin(skb, d, v, cd, size);
	__u32 ifindex = v->ifindex, alloc = v->alloc;
	__u32 mtu = 0;
	if (bpf_check_mtu(skb, ifindex, &mtu, -4, 0) != 0) {
		count_stat(STAT_TOO_BIG);
		return PASS;
	}
	struct addr16 src = v->relay, dst = v->peer;
	__u16 sport = v->relay_port, dport = v->peer_port;
	__u16 nulen = UDP_LEN + size;

	// The padding leaves the checksum with its bytes, at their parity:
	// after an odd payload the first pad byte is the low half of a word.
	__u8 pb[4] = {};
	__u32 pad_word = 0;
	if (pad > 0) {
		__u32 at = d->l4 + UDP_LEN + 4 + size;
		__u64 n = pad;
		asm volatile("" : "+r"(n));
		if (n > 3)
			goto fail;
		asm volatile("" : "+r"(n));
		if (n == 0)
			goto fail;
		long r = (size & 1) ? bpf_skb_load_bytes(skb, at, &pb[1], n)
				    : bpf_skb_load_bytes(skb, at, &pb[0], n);
		if (r < 0)
			goto fail;
		__builtin_memcpy(&pad_word, pb, 4);
	}
	// Checksum first, while the old bytes are still there to diff from.
	if (fix_csum(skb, d, &src, &dst, sport, dport, nulen, cd, 0, pad_word) < 0)
		goto fail;
	if (move_payload(skb, d->l4 + UDP_LEN, size, 0) < 0)
		goto fail;
	if (bpf_skb_change_tail(skb, d->l4 + nulen, 0) < 0)
		goto fail;
	if (write_udp(skb, d, sport, dport, nulen) < 0 || rewrite_ip(skb, d, &src, &dst, nulen) < 0)
		goto fail;
	count(alloc, 1, size);
	count_stat(STAT_RELAYED_TC);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
fail:
	count_stat(STAT_ERROR);
	return TC_ACT_SHOT;
}

// to_client relays a bound peer's datagram to the client as ChannelData.
static __always_inline int to_client_path(struct __sk_buff *skb, const struct dgram *d)
{
	struct to_client_key k = {.relay = d->dst, .peer = d->src,
				  .relay_port = d->dport, .peer_port = d->sport};
	struct to_client_val *v = bpf_map_lookup_elem(&to_client, &k);
	if (!v || is_v4(&v->listener) != !d->v6 || is_v4(&v->client) != !d->v6)
		return PASS;
	__u16 size = d->ulen - UDP_LEN;
	if (size > MAX_PAYLOAD)
		return PASS;
	if (bpf_ktime_get_ns() >= v->expires) {
		count_stat(STAT_EXPIRED);
		return PASS;
	}
	__u32 ifindex = v->ifindex, alloc = v->alloc;
	__u32 mtu = 0;
	if (bpf_check_mtu(skb, ifindex, &mtu, 4, 0) != 0) {
		count_stat(STAT_TOO_BIG);
		return PASS;
	}
	struct addr16 src = v->listener, dst = v->client;
	__u16 sport = v->listener_port, dport = v->client_port, channel = v->channel;
	__u16 nulen = d->ulen + 4;
	__u8 cdh[4] = {channel >> 8, channel & 0xff, size >> 8, size & 0xff};
	__u32 cd;
	__builtin_memcpy(&cd, cdh, 4);

	if (fix_csum(skb, d, &src, &dst, sport, dport, nulen, 0, cd, 0) < 0)
		goto fail;
	if (bpf_skb_change_tail(skb, d->l4 + nulen, 0) < 0)
		goto fail;
	if (move_payload(skb, d->l4 + UDP_LEN, size, 1) < 0)
		goto fail;
	if (bpf_skb_store_bytes(skb, d->l4 + UDP_LEN, &cd, 4, 0) < 0)
		goto fail;
	if (write_udp(skb, d, sport, dport, nulen) < 0 || rewrite_ip(skb, d, &src, &dst, nulen) < 0)
		goto fail;
	count(alloc, 0, size);
	count_stat(STAT_RELAYED_TC);
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
fail:
	count_stat(STAT_ERROR);
	return TC_ACT_SHOT;
}

// parse reads the IP and UDP headers; 0: not a datagram for this program.
static __always_inline int parse(struct __sk_buff *skb, struct dgram *d, __u32 *cd, int *has_cd)
{
	if (bpf_skb_pull_data(skb, ETH_LEN + sizeof(struct ipv6hdr) + UDP_LEN + 4) < 0 &&
	    bpf_skb_pull_data(skb, ETH_LEN + sizeof(struct iphdr) + UDP_LEN) < 0)
		return 0;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct udphdr *udp;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_LEN;
		if ((void *)(ip + 1) > end)
			return 0;
		if (ip->ihl != 5 || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
			return 0;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return 0;
		__builtin_memset(&d->src, 0, 32);
		d->src.b[10] = d->src.b[11] = 0xff;
		d->dst.b[10] = d->dst.b[11] = 0xff;
		__builtin_memcpy(&d->src.b[12], &ip->saddr, 4);
		__builtin_memcpy(&d->dst.b[12], &ip->daddr, 4);
		d->v6 = 0;
		d->l4 = ETH_LEN + sizeof(*ip);
		if (bpf_ntohs(ip->tot_len) != sizeof(*ip) + bpf_ntohs(udp->len))
			return 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = data + ETH_LEN;
		if ((void *)(ip + 1) > end)
			return 0;
		if (ip->version != 6 || ip->nexthdr != IPPROTO_UDP)
			return 0;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return 0;
		// A zero UDP checksum is invalid over IPv6: the stack drops it.
		if (udp->check == 0 || bpf_ntohs(ip->payload_len) != bpf_ntohs(udp->len))
			return 0;
		__builtin_memcpy(d->src.b, &ip->saddr, 16);
		__builtin_memcpy(d->dst.b, &ip->daddr, 16);
		d->v6 = 1;
		d->l4 = ETH_LEN + sizeof(*ip);
	} else {
		return 0;
	}
	d->sport = bpf_ntohs(udp->source);
	d->dport = bpf_ntohs(udp->dest);
	d->ulen = bpf_ntohs(udp->len);
	if (d->ulen < UDP_LEN)
		return 0;
	__u8 *c = (void *)(udp + 1);
	*has_cd = 0;
	if ((void *)(c + 4) <= end && (c[0] & 0xc0) == 0x40) {
		__builtin_memcpy(cd, c, 4);
		*has_cd = 1;
	}
	return 1;
}

SEC("tc")
int icebox_relay(struct __sk_buff *skb)
{
	// A GSO super-packet (a sender's UDP_SEGMENT over veth) is many
	// datagrams: user space takes it.
	if (skb->gso_segs > 1 || skb->gso_size != 0)
		return PASS;
	struct dgram d;
	__u32 cd = 0;
	int has_cd = 0;
	if (!parse(skb, &d, &cd, &has_cd))
		return PASS;
	if (has_cd) {
		int r = to_peer_path(skb, &d, cd);
		if (r != PASS)
			return r;
	}
	return to_client_path(skb, &d);
}

// ---------------------------------------------------------------------
// The XDP variant: the same maps, the same matches and the same refusals,
// in the driver's receive path, before any skb exists. The datagram is
// rewritten where it lies — the headers move by 4 bytes instead of the
// payload (bpf_xdp_adjust_head), the UDP checksum is updated from the
// field as received (the full checksum a NIC receives from the wire) —
// and leaves by XDP_TX when the route's device is the one it came in on,
// by the xdp_ports devmap when that device runs this program natively
// too, and otherwise is passed, untouched, to the stack: to the tc
// program behind it (which resolves neighbours itself) or to user space.
// bpf_fib_lookup picks the next hop: no neighbour entry yet, no route, a
// too small MTU — the datagram passes too.

// XPASS leaves a datagram of an entry to the tc program behind XDP (or
// user space), counted as passed by XDP only: the tc program counts the
// reason (expired, too big) if it has one, and only once.
#define XPASS (count_stat(STAT_XDP_PASSED), XDP_PASS)

// xdp_ports: the devices this program is attached to natively, that may
// be a redirect's target (user space fills it as it attaches).
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xdp_ports SEC(".maps");

struct xhdr {
	struct ethhdr eth;
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} ip;
	struct udphdr udp;
};

// xstate is one datagram's work, per CPU (the BPF stack is too small for
// it, and BPF functions take at most five arguments): as received (d, h)
// and as it will leave (src, dst, ports, UDP length and checksum, device).
struct xstate {
	struct dgram d;
	struct xhdr h;
	struct addr16 src, dst;
	__u16 sport, dport, nulen, check;
	__u32 oif, egress;
};

// Declared as bytes: user space never reads it, and bpf2go cannot render
// the kernel headers' anonymous unions in Go.
struct xstate_bytes {
	__u8 b[sizeof(struct xstate)];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xstate_bytes);
} xscratch SEC(".maps");

// xparse reads the headers (bpf_xdp_load_bytes: no pointer arithmetic
// for the verifier to follow); 0: not a datagram for this program.
static __always_inline int xparse(struct xdp_md *ctx, struct xstate *x, __u32 *cd, int *has_cd)
{
	struct dgram *d = &x->d;
	struct xhdr *h = &x->h;
	__u32 len = ctx->data_end - ctx->data;
	if (bpf_xdp_load_bytes(ctx, 0, &h->eth, ETH_LEN) < 0)
		return 0;
	if (h->eth.h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = &h->ip.v4;
		if (bpf_xdp_load_bytes(ctx, ETH_LEN, ip, sizeof(*ip)) < 0)
			return 0;
		if (ip->ihl != 5 || ip->version != 4 || ip->protocol != IPPROTO_UDP ||
		    (ip->frag_off & bpf_htons(IP_MF_OFFSET)))
			return 0;
		__builtin_memset(&d->src, 0, 32);
		d->src.b[10] = d->src.b[11] = 0xff;
		d->dst.b[10] = d->dst.b[11] = 0xff;
		__builtin_memcpy(&d->src.b[12], &ip->saddr, 4);
		__builtin_memcpy(&d->dst.b[12], &ip->daddr, 4);
		d->v6 = 0;
		d->l4 = ETH_LEN + sizeof(*ip);
		if (bpf_xdp_load_bytes(ctx, ETH_LEN + sizeof(*ip), &h->udp, UDP_LEN) < 0)
			return 0;
		if (bpf_ntohs(ip->tot_len) != sizeof(*ip) + bpf_ntohs(h->udp.len))
			return 0;
	} else if (h->eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = &h->ip.v6;
		if (bpf_xdp_load_bytes(ctx, ETH_LEN, ip, sizeof(*ip)) < 0)
			return 0;
		if (ip->version != 6 || ip->nexthdr != IPPROTO_UDP)
			return 0;
		__builtin_memcpy(d->src.b, &ip->saddr, 16);
		__builtin_memcpy(d->dst.b, &ip->daddr, 16);
		d->v6 = 1;
		d->l4 = ETH_LEN + sizeof(*ip);
		if (bpf_xdp_load_bytes(ctx, ETH_LEN + sizeof(*ip), &h->udp, UDP_LEN) < 0)
			return 0;
		if (h->udp.check == 0 || bpf_ntohs(ip->payload_len) != bpf_ntohs(h->udp.len))
			return 0;
	} else {
		return 0;
	}
	d->sport = bpf_ntohs(h->udp.source);
	d->dport = bpf_ntohs(h->udp.dest);
	d->ulen = bpf_ntohs(h->udp.len);
	// The frame may be longer (Ethernet's padding of short frames), not
	// shorter.
	if (d->ulen < UDP_LEN || len < d->l4 + d->ulen)
		return 0;
	*has_cd = 0;
	__u8 c[4];
	if (d->ulen >= UDP_LEN + 4 && bpf_xdp_load_bytes(ctx, d->l4 + UDP_LEN, c, 4) == 0 &&
	    (c[0] & 0xc0) == 0x40) {
		__builtin_memcpy(cd, c, 4);
		*has_cd = 1;
	}
	return 1;
}

// xcsum is fix_csum for XDP: x->check from the received checksum. An
// IPv4 datagram sent without a checksum (0) keeps none; a sum of 0 is
// sent as 0xffff.
static __always_inline int xcsum(struct xstate *x, __u32 cd_from, __u32 cd_to, __u32 pad_from)
{
	const struct dgram *d = &x->d;
	__u16 old = x->h.udp.check;
	if (!d->v6 && old == 0) {
		x->check = 0;
		return 0;
	}
	__be32 pf[9] = {}, pt[9] = {};
	__builtin_memcpy(&pf[0], d->src.b, 16);
	__builtin_memcpy(&pf[4], d->dst.b, 16);
	pf[8] = bpf_htonl(d->ulen);
	__builtin_memcpy(&pt[0], x->src.b, 16);
	__builtin_memcpy(&pt[4], x->dst.b, 16);
	pt[8] = bpf_htonl(x->nulen);
	__s64 s = bpf_csum_diff(pf, sizeof(pf), pt, sizeof(pt), (__u16)~old);
	if (s < 0)
		return -1;
	struct {
		__be16 sport, dport;
		__be32 len;
		__u32 cd;
		__u32 pad;
	} hf = {bpf_htons(d->sport), bpf_htons(d->dport), bpf_htonl(d->ulen), cd_from, pad_from},
	  ht = {bpf_htons(x->sport), bpf_htons(x->dport), bpf_htonl(x->nulen), cd_to, 0};
	s = bpf_csum_diff((__be32 *)&hf, sizeof(hf), (__be32 *)&ht, sizeof(ht), (__u32)s);
	if (s < 0)
		return -1;
	__u16 c = csum_fold(s);
	x->check = c ? c : 0xffff;
	return 0;
}

// xroute looks up the next hop from x->src to x->dst and chooses how the
// rewritten frame leaves: XDP_TX, XDP_REDIRECT (through xdp_ports) or, not
// possible, XDP_PASS (before anything is rewritten). It fills the
// Ethernet addresses and x->egress.
static __noinline int xroute(struct xdp_md *ctx, struct xstate *x)
{
	struct bpf_fib_lookup fib = {};
	fib.l4_protocol = IPPROTO_UDP;
	fib.sport = bpf_htons(x->sport);
	fib.dport = bpf_htons(x->dport);
	fib.ifindex = x->oif;
	if (!x->d.v6) {
		fib.family = 2; // AF_INET
		fib.tot_len = sizeof(struct iphdr) + x->nulen;
		__builtin_memcpy(&fib.ipv4_src, &x->src.b[12], 4);
		__builtin_memcpy(&fib.ipv4_dst, &x->dst.b[12], 4);
	} else {
		fib.family = 10; // AF_INET6
		fib.tot_len = sizeof(struct ipv6hdr) + x->nulen;
		__builtin_memcpy(fib.ipv6_src, x->src.b, 16);
		__builtin_memcpy(fib.ipv6_dst, x->dst.b, 16);
	}
	// (Too big for the egress MTU: FRAG_NEEDED, passed like the rest.)
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XPASS;
	__builtin_memcpy(x->h.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(x->h.eth.h_source, fib.smac, ETH_ALEN);
	x->egress = fib.ifindex;
	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	__u32 k = fib.ifindex;
	if (!bpf_map_lookup_elem(&xdp_ports, &k))
		return XPASS;
	return XDP_REDIRECT;
}

// xwrite stores the rewritten headers at the (moved) start of the frame:
// Ethernet, IP (addresses, TTL, length, IPv4's header checksum) and UDP.
static __noinline int xwrite(struct xdp_md *ctx, struct xstate *x)
{
	struct xhdr *h = &x->h;
	if (bpf_xdp_store_bytes(ctx, 0, &h->eth, ETH_LEN) < 0)
		return -1;
	if (!x->d.v6) {
		struct iphdr *ip = &h->ip.v4;
		__builtin_memcpy(&ip->saddr, &x->src.b[12], 4);
		__builtin_memcpy(&ip->daddr, &x->dst.b[12], 4);
		ip->ttl = TTL;
		ip->tot_len = bpf_htons(sizeof(*ip) + x->nulen);
		ip->check = 0;
		__u16 *w = (__u16 *)ip;
		__u64 s = 0;
#pragma unroll
		for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
			s += w[i];
		ip->check = csum_fold(s);
		if (bpf_xdp_store_bytes(ctx, ETH_LEN, ip, sizeof(*ip)) < 0)
			return -1;
		h->udp.source = bpf_htons(x->sport);
		h->udp.dest = bpf_htons(x->dport);
		h->udp.len = bpf_htons(x->nulen);
		h->udp.check = x->check;
		return bpf_xdp_store_bytes(ctx, ETH_LEN + sizeof(*ip), &h->udp, UDP_LEN);
	}
	struct ipv6hdr *ip = &h->ip.v6;
	__builtin_memcpy(&ip->saddr, x->src.b, 16);
	__builtin_memcpy(&ip->daddr, x->dst.b, 16);
	ip->hop_limit = TTL;
	ip->payload_len = bpf_htons(x->nulen);
	if (bpf_xdp_store_bytes(ctx, ETH_LEN, ip, sizeof(*ip)) < 0)
		return -1;
	h->udp.source = bpf_htons(x->sport);
	h->udp.dest = bpf_htons(x->dport);
	h->udp.len = bpf_htons(x->nulen);
	h->udp.check = x->check;
	return bpf_xdp_store_bytes(ctx, ETH_LEN + sizeof(*ip), &h->udp, UDP_LEN);
}

// xsend ends a rewrite: counts it and sends the frame as xroute chose.
static __always_inline int xsend(int action, __u32 egress)
{
	count_stat(STAT_RELAYED_XDP);
	if (action == XDP_TX)
		return XDP_TX;
	return bpf_redirect_map(&xdp_ports, egress, 0);
}

// xhairpin is hairpin for XDP: the frame keeps its length.
static __always_inline int xhairpin(struct xdp_md *ctx, struct xstate *x, const struct to_peer_val *v,
			       __u32 cd, __u32 size)
{
	struct to_client_key k = {.relay = v->peer, .peer = v->relay,
				  .relay_port = v->peer_port, .peer_port = v->relay_port};
	struct to_client_val *w = bpf_map_lookup_elem(&to_client, &k);
	if (!w || is_v4(&w->listener) != !x->d.v6 || is_v4(&w->client) != !x->d.v6)
		return XDP_PASS;
	if (bpf_ktime_get_ns() >= w->expires)
		return XPASS;
	x->src = w->listener;
	x->dst = w->client;
	x->sport = w->listener_port;
	x->dport = w->client_port;
	x->nulen = x->d.ulen;
	x->oif = w->ifindex;
	__u16 channel = w->channel;
	__u32 from_alloc = v->alloc, to_alloc = w->alloc;
	int act = xroute(ctx, x);
	if (act == XDP_PASS)
		return XDP_PASS;
	__u8 cdh[4] = {channel >> 8, channel & 0xff, size >> 8, size & 0xff};
	__u32 ncd;
	__builtin_memcpy(&ncd, cdh, 4);
	if (xcsum(x, cd, ncd, 0) < 0)
		return XDP_PASS; // nothing rewritten yet
	if (bpf_xdp_store_bytes(ctx, x->d.l4 + UDP_LEN, &ncd, 4) < 0 || xwrite(ctx, x) < 0) {
		count_stat(STAT_ERROR);
		return XDP_DROP;
	}
	count(from_alloc, 1, size);
	count(to_alloc, 0, size);
	return xsend(act, x->egress);
}

static __noinline int xto_peer(struct xdp_md *ctx, struct xstate *x, __u32 cd)
{
	const struct dgram *d = &x->d;
	__u8 *c = (__u8 *)&cd;
	struct to_peer_key k = {.listener = d->dst, .client = d->src,
				.listener_port = d->dport, .client_port = d->sport,
				.channel = ((__u16)c[0] << 8) | c[1]};
	struct to_peer_val *v = bpf_map_lookup_elem(&to_peer, &k);
	if (!v || is_v4(&v->relay) != !d->v6 || is_v4(&v->peer) != !d->v6)
		return XDP_PASS;
	__u16 size = ((__u16)c[2] << 8) | c[3];
	__u32 ulen = d->ulen, l4 = d->l4;
	__u32 pad = ulen - (UDP_LEN + 4 + size);
	if (ulen < UDP_LEN + 4 + size || pad > 3 || size > MAX_PAYLOAD)
		return XDP_PASS;
	if (bpf_ktime_get_ns() >= v->expires)
		return XPASS;
	if (v->flags & PEER_LOCAL)
		return xhairpin(ctx, x, v, cd, size);
	x->src = v->relay;
	x->dst = v->peer;
	x->sport = v->relay_port;
	x->dport = v->peer_port;
	x->nulen = UDP_LEN + size;
	x->oif = v->ifindex;
	__u32 alloc = v->alloc;
	int act = xroute(ctx, x);
	if (act == XDP_PASS)
		return XDP_PASS;
	__u8 pb[4] = {};
	__u32 pad_word = 0;
	if (pad > 0) {
		__u32 at = l4 + UDP_LEN + 4 + size;
		__u64 n = pad;
		asm volatile("" : "+r"(n));
		if (n > 3)
			return XDP_PASS;
		asm volatile("" : "+r"(n));
		if (n == 0)
			return XDP_PASS;
		long r = (size & 1) ? bpf_xdp_load_bytes(ctx, at, &pb[1], n)
				    : bpf_xdp_load_bytes(ctx, at, &pb[0], n);
		if (r < 0)
			return XDP_PASS;
		__builtin_memcpy(&pad_word, pb, 4);
	}
	if (xcsum(x, cd, 0, pad_word) < 0)
		return XDP_PASS;
	// The headers move 4 bytes towards the payload, over the ChannelData
	// header; the padding and any Ethernet trailer are cut off.
	int len = ctx->data_end - ctx->data;
	if (bpf_xdp_adjust_head(ctx, 4) < 0)
		return XDP_PASS; // nothing changed
	if (bpf_xdp_adjust_tail(ctx, (int)(l4 + UDP_LEN + size) - (len - 4)) < 0 || xwrite(ctx, x) < 0) {
		count_stat(STAT_ERROR);
		return XDP_DROP;
	}
	count(alloc, 1, size);
	return xsend(act, x->egress);
}

static __noinline int xto_client(struct xdp_md *ctx, struct xstate *x)
{
	const struct dgram *d = &x->d;
	struct to_client_key k = {.relay = d->dst, .peer = d->src,
				  .relay_port = d->dport, .peer_port = d->sport};
	struct to_client_val *v = bpf_map_lookup_elem(&to_client, &k);
	if (!v || is_v4(&v->listener) != !d->v6 || is_v4(&v->client) != !d->v6)
		return XDP_PASS;
	__u16 size = d->ulen - UDP_LEN;
	if (size > MAX_PAYLOAD)
		return XDP_PASS;
	if (bpf_ktime_get_ns() >= v->expires)
		return XPASS;
	x->src = v->listener;
	x->dst = v->client;
	x->sport = v->listener_port;
	x->dport = v->client_port;
	x->nulen = d->ulen + 4;
	x->oif = v->ifindex;
	__u16 channel = v->channel;
	__u32 alloc = v->alloc;
	int act = xroute(ctx, x);
	if (act == XDP_PASS)
		return XDP_PASS;
	__u8 cdh[4] = {channel >> 8, channel & 0xff, size >> 8, size & 0xff};
	__u32 ncd;
	__builtin_memcpy(&ncd, cdh, 4);
	if (xcsum(x, 0, ncd, 0) < 0)
		return XDP_PASS;
	// The headers move 4 bytes out into the headroom; the ChannelData
	// header goes between them and the payload.
	if (bpf_xdp_adjust_head(ctx, -4) < 0)
		return XDP_PASS;
	if (bpf_xdp_store_bytes(ctx, x->d.l4 + UDP_LEN, &ncd, 4) < 0 || xwrite(ctx, x) < 0) {
		count_stat(STAT_ERROR);
		return XDP_DROP;
	}
	count(alloc, 0, size);
	return xsend(act, x->egress);
}

SEC("xdp")
int icebox_relay_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct xstate *x = (struct xstate *)bpf_map_lookup_elem(&xscratch, &zero);
	if (!x)
		return XDP_PASS;
	__u32 cd = 0;
	int has_cd = 0;
	if (!xparse(ctx, x, &cd, &has_cd))
		return XDP_PASS;
	if (has_cd) {
		int r = xto_peer(ctx, x, cd);
		if (r != XDP_PASS)
			return r;
	}
	return xto_client(ctx, x);
}
