// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * srv6pm alternate-marking data plane (RFC 9341 carried as RFC 9343).
 *
 * Two tc programs (on the tcx hooks, or clsact in direct-action mode on
 * kernels before 6.6) share one set of maps:
 *
 *   altmark_mark   tc egress at a flow's ingress node. It sees the packet
 *                  after seg6 encapsulation (H.Encaps): outer IPv6, SRH,
 *                  inner IPv6. If the inner (source, destination) belongs to a
 *                  monitored flow, it counts the packet under (FlowMonID,
 *                  colour), then inserts between the outer header and the SRH
 *                  an 8-octet Destination Options header holding the
 *                  Alternate-Marking option:
 *
 *                    0      1      2      3      4          5          6  7
 *                    +------+------+------+------+-------------------------+
 *                    | NH=43| HEL=0| 0x12 |  4   | FlowMonID(20)|L|D|Rsvd(10)
 *                    +------+------+------+------+-------------------------+
 *
 *                  The option fills the header exactly (the option data sits
 *                  at offset 4, so no Pad1/PadN is needed). The outer Next
 *                  Header becomes 60; the inner packet is not touched at all.
 *
 *                  The exporter's encap routes (dataplane: ebpf) reserve
 *                  the 8 octets: their SRH ends in two PadN TLVs of 4
 *                  octets (type 4, length 2, zeroes; RFC 8754 2.1.1 allows
 *                  PadN lengths 0-5 and more than one padding TLV; Hdr Ext
 *                  Len one more). For such a
 *                  packet the SRH proper moves 8 octets towards the tail
 *                  over that TLV (direct packet access, in
 *                  8-octet words, the last first), the option goes into the 8
 *                  octets freed after the outer header and the SRH's Hdr Ext
 *                  Len drops by 1: the packet's length, the outer Payload
 *                  Length, GSO and checksum offsets do not change, and no
 *                  helper is called. Without the TLV (a route made otherwise)
 *                  bpf_skb_adjust_room makes the room and the outer Payload
 *                  Length grows by 8. The packet on the wire is the same.
 *
 *   altmark_count  tc ingress at every other counting point (transit nodes and
 *                  the egress node, before decapsulation). It finds the
 *                  option in the first Destination Options header after the
 *                  outer IPv6 header and counts the packet under (FlowMonID,
 *                  L flag).
 *
 * Counters are per-CPU, one map per colour, keyed by FlowMonID. Only keys that user
 * space created are counted, so a packet of a flow this node does not monitor
 * changes nothing. Bytes are the inner IPv6 packet's length, header included,
 * at every counting point (the same figure the nftables data plane counts).
 *
 * The per-packet work is a bounded parse plus a few map lookups, whatever the
 * number of flows: flows between two single addresses (/128 to /128) are one
 * hash lookup; flows of wider prefixes take two LPM lookups after it misses.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Every verdict is "no opinion": TC_ACT_UNSPEC, which is TCX_NEXT on the tcx
 * hooks. The packet goes on to the next program or tc filter of the hook (the
 * STAMP reflector's, an operator's) and then on its way, as if the program
 * were not there; TC_ACT_OK would end the hook's processing there. */
#define TC_NEXT -1
#define ETH_P_IPV6 0x86DD
#define ETH_HLEN 14

#define NEXTHDR_IPV6 41
#define NEXTHDR_ROUTING 43
#define NEXTHDR_DEST 60
#define SRH_TYPE 4
#define SRH_TLV_PADN 4
#define MAX_SEGMENTS 16
/* The SRH proper (8 + 16 per segment) in 8-octet words, at most. */
#define MAX_SRH_WORDS (1 + 2 * MAX_SEGMENTS)

#define ALTMARK_OPT_TYPE 0x12
#define ALTMARK_OPT_LEN 4
#define DOH_LEN 8
#define MAX_OPTIONS 8

#define MAX_FLOWS 131072
#define MAX_SOURCES MAX_FLOWS

struct counter_value {
	__u64 packets;
	__u64 bytes;
};

/* Flows whose source and destination are single addresses: one hash lookup. */
struct exact_key {
	__u8 src[16];
	__u8 dst[16];
};

/* Source prefixes of the other flows -> a source class (first level). */
struct src_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* (source class, destination prefix) -> FlowMonID (second level). */
struct flow_key {
	__u32 prefixlen; /* 32 + destination prefix length */
	__u32 class;
	__u8 addr[16];
};

/* FlowMonID -> packets and bytes of colour 0 (counters0) and colour 1 (counters1): a guard
 * reads one colour's map whole. Preallocated: an update by user space is a copy. */
struct counters {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct counter_value);
};

struct counters counters0 SEC(".maps");
struct counters counters1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FLOWS);
	__type(key, struct exact_key);
	__type(value, __u32);
} exact SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_SOURCES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct src_key);
	__type(value, __u32);
} sources SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, __u32);
} flows SEC(".maps");

/* [0]: the colour marked now (0 or 1); one update switches every CPU at once. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} colour SEC(".maps");

struct altmark_doh {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 opt_type;
	__u8 opt_len;
	__be32 data; /* FlowMonID << 12 | L << 11 | D << 10 | reserved */
};

/* Each lookup call names its map as a constant: a call whose map is chosen at
 * run time is one the verifier cannot inline (its map pointer is "poisoned"),
 * so it stays the generic helper, an indirect call to the map's lookup. The
 * empty asm after one call keeps the compiler from merging the two calls into
 * one call on a selected map. */
static __always_inline struct counter_value *counter(__u32 c, __u32 *flowmon_id)
{
	struct counter_value *v;

	if (c) {
		v = bpf_map_lookup_elem(&counters1, flowmon_id);
		asm volatile("" : "+r"(v));
	} else {
		v = bpf_map_lookup_elem(&counters0, flowmon_id);
	}
	return v;
}

static __always_inline void count(__u32 flowmon_id, __u32 c, __u64 bytes)
{
	struct counter_value *v = counter(c, &flowmon_id);

	if (v) { /* per-CPU value: no other CPU writes it */
		v->packets += 1;
		v->bytes += bytes;
	}
}

static __always_inline void write_doh(struct altmark_doh *doh, __u32 flowmon_id, __u32 mark)
{
	doh->nexthdr = NEXTHDR_ROUTING;
	doh->hdrlen = 0;
	doh->opt_type = ALTMARK_OPT_TYPE;
	doh->opt_len = ALTMARK_OPT_LEN;
	doh->data = bpf_htonl(flowmon_id << 12 | mark << 11);
}

/* Move the first ``words`` 8-octet words at ``srh`` one word towards the tail, the last first (the
 * areas overlap). Unrolled with constant offsets, each access checked against the packet's end (which
 * the caller already knows is beyond them), so the verifier sees every access bounded. The first word
 * moved is the last one, the one checked furthest: 0 (nothing moved) if it is not in the packet. */
static __always_inline int move_srh(void *srh, __u32 words, void *end)
{
	__u64 *w = srh;

#pragma unroll
	for (int i = MAX_SRH_WORDS - 1; i >= 0; i--) {
		if (i < words) {
			if ((void *)(w + i + 2) > end)
				return 0;
			w[i + 1] = w[i];
		}
	}
	return 1;
}

SEC("tc")
int altmark_mark(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *outer = data + ETH_HLEN;
	struct ipv6_sr_hdr *srh;
	struct ipv6hdr *inner;
	struct exact_key ekey;
	struct src_key skey = { .prefixlen = 128 };
	struct flow_key fkey = { .prefixlen = 32 + 128 };
	struct altmark_doh *doh;
	__u32 *class, *id, *c, zero = 0, srh_len, words, flowmon_id, mark;
	__u16 payload;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_NEXT;
	if ((void *)(outer + 1) > end || outer->nexthdr != NEXTHDR_ROUTING)
		return TC_NEXT; /* not SRv6, or already marked (Next Header 60) */
	srh = (void *)(outer + 1);
	if ((void *)(srh + 1) > end || srh->type != SRH_TYPE || srh->nexthdr != NEXTHDR_IPV6)
		return TC_NEXT; /* only H.Encaps: the SRH is followed by the inner packet */
	srh_len = ((__u32)srh->hdrlen + 1) * 8;
	if (srh_len > 8 + 16 * MAX_SEGMENTS + DOH_LEN)
		return TC_NEXT;
	inner = (void *)srh + srh_len;
	if ((void *)(inner + 1) > end)
		return TC_NEXT;

	__builtin_memcpy(ekey.src, &inner->saddr, 16);
	__builtin_memcpy(ekey.dst, &inner->daddr, 16);
	id = bpf_map_lookup_elem(&exact, &ekey);
	if (!id) {
		__builtin_memcpy(skey.addr, &inner->saddr, 16);
		class = bpf_map_lookup_elem(&sources, &skey);
		if (!class)
			return TC_NEXT;
		fkey.class = *class;
		__builtin_memcpy(fkey.addr, &inner->daddr, 16);
		id = bpf_map_lookup_elem(&flows, &fkey);
		if (!id)
			return TC_NEXT;
	}
	flowmon_id = *id & 0xFFFFF;
	c = bpf_map_lookup_elem(&colour, &zero);
	mark = c ? (*c & 1) : 0;
	count(flowmon_id, mark, bpf_ntohs(inner->payload_len) + sizeof(*inner));

	words = 1 + 2 * ((__u32)srh->first_segment + 1); /* the SRH proper, TLVs not included */
	if (srh_len == words * 8 + DOH_LEN && words <= MAX_SRH_WORDS) {
		__u8 *tlv = (void *)srh + words * 8;

		if ((void *)(tlv + DOH_LEN) <= end && tlv[0] == SRH_TLV_PADN && tlv[1] == 2
		    && tlv[4] == SRH_TLV_PADN && tlv[5] == 2) {
			if (!move_srh(srh, words, end))
				return TC_NEXT;
			srh = (void *)srh + DOH_LEN;
			if ((void *)(srh + 1) > end)
				return TC_NEXT;
			srh->hdrlen -= 1;
			write_doh((void *)(outer + 1), flowmon_id, mark);
			outer->nexthdr = NEXTHDR_DEST;
			return TC_NEXT;
		}
	}

	/* No reserved TLV: the helper moves the Ethernet and outer IPv6 headers 8
	 * octets towards the head and zeroes the 8 octets after them, all in the
	 * linear part (which held the SRH and inner header before and grew by 8),
	 * so the option is written there in place, like the outer header's fields. */
	payload = bpf_ntohs(outer->payload_len);
	if (bpf_skb_adjust_room(skb, DOH_LEN, BPF_ADJ_ROOM_NET, 0))
		return TC_NEXT; /* counted but not marked: the next points miss it, as a loss would */

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	outer = data + ETH_HLEN;
	doh = (void *)(outer + 1);
	if ((void *)(doh + 1) > end)
		return TC_NEXT;
	write_doh(doh, flowmon_id, mark);
	outer->nexthdr = NEXTHDR_DEST;
	outer->payload_len = bpf_htons(payload + DOH_LEN);
	return TC_NEXT;
}

SEC("tc")
int altmark_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *outer = data + ETH_HLEN;
	__u8 *doh, *opt;
	__u32 doh_len, off, word, rest = 0;
	__u16 payload;
	int i;

	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_NEXT;
	if ((void *)(outer + 1) > end || outer->nexthdr != NEXTHDR_DEST)
		return TC_NEXT;
	doh = (void *)(outer + 1);
	if ((void *)(doh + 2) > end)
		return TC_NEXT;
	doh_len = ((__u32)doh[1] + 1) * 8;
	payload = bpf_ntohs(outer->payload_len);

	/* The inner packet's length: the outer payload less the DOH and, when it
	 * follows, the SRH (at the egress, before decapsulation, it is there). */
	if (doh[0] == NEXTHDR_ROUTING) {
		__u8 *srh = doh + doh_len;

		if (doh_len > 64 || (void *)(srh + 2) > end)
			return TC_NEXT;
		rest = ((__u32)srh[1] + 1) * 8;
	}
	if (doh_len + rest > payload)
		return TC_NEXT;

	off = 2;

	for (i = 0; i < MAX_OPTIONS; i++) {
		if (off + 2 > doh_len)
			return TC_NEXT;
		opt = doh + off;
		if ((void *)(opt + 2) > end)
			return TC_NEXT;
		if (opt[0] == 0) { /* Pad1 */
			off += 1;
			continue;
		}
		if (opt[0] == ALTMARK_OPT_TYPE && opt[1] == ALTMARK_OPT_LEN) {
			if (off + 6 > doh_len || (void *)(opt + 6) > end)
				return TC_NEXT;
			word = (__u32)opt[2] << 24 | (__u32)opt[3] << 16 | (__u32)opt[4] << 8 | opt[5];
			count(word >> 12, (word >> 11) & 1, payload - doh_len - rest);
			return TC_NEXT;
		}
		off += 2 + opt[1];
	}
	return TC_NEXT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
