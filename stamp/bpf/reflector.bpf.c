// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * srv6pm STAMP Session-Reflector fast path (RFC 8762, RFC 8972, RFC 9503).
 *
 * One core, two attachments that share the maps:
 *
 *   stamp_reflect_xdp  XDP (native or generic). Replies with XDP_TX, so only
 *                      when the reply leaves by the interface the test packet
 *                      came in on; and only when the test packet's UDP
 *                      checksum verifies in full (a locally sent packet that
 *                      still carries a partial checksum offload value, as on
 *                      veth, is passed up).
 *   stamp_reflect_tc   tc clsact ingress, direct action. Replies with
 *                      bpf_redirect() to the egress of whichever interface the
 *                      route says; the UDP checksum is updated with
 *                      bpf_l4_csum_replace(), which is right for full and for
 *                      partial (offloaded) checksums alike.
 *
 * What the program answers itself, byte for byte as stamp/reflector.py would:
 * a Session-Sender test packet to the configured address (or, with bind ::,
 * to any local address) and UDP port, in Ethernet + IPv6 [+ one SRH with
 * Segments Left 0] + UDP, unauthenticated, whose TLVs are Extra Padding,
 * Destination Node Address, Return Path (Control Code, SRv6 Segment List,
 * SR-MPLS Label Stack and unknown sub-TLVs refused) and TLVs it copies with
 * U = 1; a TLV cut short by the end of the packet gets M = 1; an all-zero
 * TLV area (or 1-3 trailing octets) is copied as it is. Class of Service and
 * Direct Measurement TLVs, and trailing octets that do not start like a TLV
 * (padding, see stamp/tlv.py parse_sent) go up to user space. The reply goes back from the address the test
 * packet was sent to, to its source, through the Return Path's SRv6 segments
 * if any (an SRH exactly as the kernel's IPV6_RTHDR option builds it: Segment
 * List[0] = the sender, the destination address = the first segment).
 *
 * Everything else is passed up unchanged (XDP_PASS / TC_ACT_UNSPEC) to the
 * user-space reflector bound to the same address and port, which answers it
 * as it always did: authenticated mode, an HMAC TLV, a Return Address
 * sub-TLV, a malformed TLV or base packet, more than MAX_TLVS TLVs or
 * MAX_SUB_TLVS sub-TLVs or MAX_WAYPOINTS return segments, a neighbour not
 * resolved yet, a route that is not a plain unicast one (seg6 encap, local,
 * blackhole), a reply larger than the route's MTU, and (XDP) a reply that
 * would leave by another interface or a checksum that does not verify. Each
 * reason has its counter. Nothing is modified before the decision to answer.
 *
 * The reply's route is the kernel's: bpf_fib_lookup() (egress perspective; it
 * needs IPv6 forwarding on the interface, else everything goes up), cached in
 * `routes` for as long as user space says nothing changed (see there).
 *
 * Timestamps: t2 as soon as the program has recognised a test packet to the
 * reflector's address and port (its first few dozen instructions; unrelated
 * traffic never reads the clock), t3 just before it returns the reply, both
 * bpf_ktime_get_tai_ns(), made UTC with the kernel's TAI offset and then NTP or
 * PTP (the settings' flag) with the offsets user space keeps in the settings
 * map, with its Error Estimate. Stateful mode numbers replies
 * per session (sender address and port, local address, SSID) in the LRU map
 * `sessions`, which the user-space reflector uses too, so a session's numbers
 * are one sequence whichever path answers its packets.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_SHOT 2
#define ETHERTYPE_IPV6 0x86DD
#define ETH_LEN 14
#define IP6_LEN 40
#define UDP_LEN 8
#define SRH_FIXED 8
#define NH_ROUTING 43
#define NH_UDP 17
#define SRH_TYPE 4
#define FAMILY_INET6 10
#define NS 1000000000ULL

#define BASE 44              /* the unauthenticated base packet */
#define MAX_UDP 9216         /* UDP length (header included) the program handles */
#define MAX_TLVS 16
#define MAX_SUB_TLVS 8       /* a power of two */
#define MAX_WAYPOINTS 8      /* return segments before the sender */
#define MAX_CHANGES (MAX_TLVS + MAX_SUB_TLVS)
#define DEFAULT_HOP_LIMIT 64

#define TLV_U 0x80
#define TLV_M 0x40
#define TLV_I 0x20
#define TLV_KNOWN 0xE0       /* U, M, I; the others are reserved */

#define TLV_EXTRA_PADDING 1
#define TLV_CLASS_OF_SERVICE 4
#define TLV_DIRECT_MEASUREMENT 5
#define TLV_HMAC 8
#define TLV_DESTINATION_NODE_ADDRESS 9
#define TLV_RETURN_PATH 10
#define SUB_CONTROL_CODE 1
#define SUB_RETURN_ADDRESS 2
#define SUB_SR_MPLS 3
#define SUB_SRV6 4

/* refl_settings.flags */
#define CFG_ENABLED 1        /* answer; without it every packet goes up */
#define CFG_STATEFUL 2
#define CFG_PTP 4            /* timestamps in PTPv2 truncated format, else NTP */
#define CFG_BIND_ANY 8       /* bound to ::, answer for any local address */
#define CFG_AUTHENTICATED 16 /* a key is configured: everything goes up */

enum refl_counter {
	C_RECEIVED,          /* test packets to the reflector's address and port */
	C_REFLECTED,         /* answered here */
	C_RETURN_PATH_SRV6,  /* of which through a Return Path's SRv6 segments */
	C_NO_REPLY,          /* Control Code without the Reply Request flag: no reply */
	P_AUTHENTICATED,     /* passed up: authenticated mode */
	P_TLV,               /* passed up: a TLV or sub-TLV handled only in user space */
	P_MALFORMED,         /* passed up: malformed base packet, TLV or sub-TLV */
	P_CHECKSUM,          /* passed up: UDP checksum zero or not verified (XDP) */
	P_ROUTE,             /* passed up: the reply's route or neighbour is not a plain one */
	P_HEADERS,           /* passed up: lengths, extension headers, GSO, sizes */
	N_COUNTERS,
};

struct refl_settings {
	__u8 bind[16];       /* the address answered (ignored with CFG_BIND_ANY) */
	__be16 port;
	__be16 error_estimate;
	__u32 flags;
	__u64 kernel_tai_ns; /* CLOCK_TAI - CLOCK_REALTIME as the kernel keeps them */
	__u64 ptp_tai_ns;    /* TAI - UTC that PTP timestamps carry */
	__u64 ntp_epoch_ns;  /* 1900-01-01 to 1970-01-01 */
	__u64 session_idle_ns;
	__u64 route_generation; /* bumped by user space at every routing change in the namespace */
	__u64 route_ttl_ns;     /* a cached route is used at most this long */
};

struct refl_session_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 ssid;
};

struct refl_session {
	__u32 next;          /* the Sequence Number of the session's next reply */
	__u32 pad;
	__u64 seen_ns;       /* CLOCK_TAI of its last packet */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct refl_settings);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10000); /* user space sets max_sessions before loading */
	__type(key, struct refl_session_key);
	__type(value, struct refl_session);
} sessions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, N_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* ifindex -> the Hop Limit a socket's packet gets on that interface */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} hop_limits SEC(".maps");

/* The reply routes bpf_fib_lookup() found (it costs more than the rest of a reply put together
 * when the caches are cold). An entry serves while its generation is the settings' (user space
 * bumps it at every rtnetlink route, rule, neighbour, address or link event in the namespace),
 * for at most route_ttl_ns, and for replies no longer than the one it was looked up for. */
struct refl_route_key {
	__u8 dst[16];        /* the reply's IPv6 destination: the first return segment, or the sender */
	__u8 src[16];
	__u32 ifindex;       /* the test packet's interface */
	__be16 dport;        /* the sender's port (policy routing may look at it) */
	__u16 pad;
};

struct refl_route {
	__u64 generation;
	__u64 expires_ns;
	__u32 ifindex;       /* where the reply leaves */
	__u32 tot_len;       /* the longest reply the MTU check let through */
	__u8 smac[6];
	__u8 dmac[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct refl_route_key);
	__type(value, struct refl_route);
} routes SEC(".maps");

enum refl_verdict { V_NOT_OURS, V_PASS, V_DROP, V_TX, V_REDIRECT };

struct refl_change {          /* one TLV flags octet to rewrite, at payload offset off */
	__u32 off;
	__u8 old;
	__u8 new;
	__u16 pad;
};

struct refl_plan {
	struct refl_change changes[MAX_CHANGES];
	__u32 nchanges;
	__u32 seg_off;       /* payload offset of the first return segment */
	__u32 nsegs;         /* return segments before the sender (0: no SRH) */
	__u32 suppress;      /* no reply requested */
};

struct refl_request {         /* what the reply needs from the test packet's headers */
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 check;
	__u32 udp_len;       /* host order, UDP header included */
	__u32 udp_off;       /* packet offset of the UDP header */
	__u32 srh_len;       /* octets of the test packet's SRH (0: none) */
	__u32 ifindex;
	__u8 hop_limit;
};

union refl_base {
	__u64 align[(BASE + 7) / 8];
	__u8 b[BASE];
	__u16 w[BASE / 2];
	struct {
		__be32 seq;
		__be64 timestamp;
		__be16 ee;
		__be16 ssid;
	} __attribute__((packed)) sender;
};

/* The per-packet working state: too large for the 512-octet stack, so one per CPU (a
 * program runs to its end on the CPU it started on, and never nests on it). */
struct refl_work {
	struct refl_request rq;
	struct refl_plan plan;
	struct bpf_fib_lookup fib;
	union refl_base req, rep;
	__u8 first_hop[16];
	__u8 buf[16];
	__u32 sub_off[MAX_SUB_TLVS];
	__u8 sub_type[MAX_SUB_TLVS];
	__u8 sub_flags[MAX_SUB_TLVS];
	__u32 rp_off;        /* the first Return Path TLV: payload offset of its value, */
	__u32 rp_len;        /* its length, */
	__u32 rp_tlv_off;    /* the offset of its header (0: none), */
	__u32 rp_flags;      /* its flags */
	struct refl_session_key key;
	struct refl_session fresh;
	struct refl_route_key route_key;
	struct refl_route route;
	__u64 t2;            /* CLOCK_TAI when the test packet was recognised */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct refl_work);
} scratch SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		*v += 1;
}

static __always_inline enum refl_verdict pass(__u32 why)
{
	count(why);
	return V_PASS;
}

/* -- the context: the same code for XDP and tc, `xdp` a constant per program -------------- */

#define CTX_DATA(c) (xdp ? (void *)(long)((struct xdp_md *)(c))->data : (void *)(long)((struct __sk_buff *)(c))->data)
#define CTX_END(c) (xdp ? (void *)(long)((struct xdp_md *)(c))->data_end : (void *)(long)((struct __sk_buff *)(c))->data_end)
#define LOAD(off, buf, len) (xdp ? bpf_xdp_load_bytes(ctx, off, buf, len) : bpf_skb_load_bytes(ctx, off, buf, len))
#define STORE(off, buf, len) (xdp ? bpf_xdp_store_bytes(ctx, off, buf, len) \
				  : bpf_skb_store_bytes(ctx, off, buf, len, BPF_F_RECOMPUTE_CSUM))

/* Global functions: the verifier checks each once, on its own, instead of once per path that
 * reaches it (the TLV walks would otherwise exceed its complexity limit). One instance per
 * program type, since a function's context argument has the type of one program's context. */
#define GLOBAL __attribute__((noinline))
GLOBAL int refl_sum_xdp(struct xdp_md *ctx, __u32 off, __u32 len);
GLOBAL int refl_sum_tc(struct __sk_buff *ctx, __u32 off, __u32 len);
GLOBAL int refl_return_path_xdp(struct xdp_md *ctx, struct refl_work *w);
GLOBAL int refl_return_path_tc(struct __sk_buff *ctx, struct refl_work *w);
GLOBAL int refl_plan_tlvs_xdp(struct xdp_md *ctx, struct refl_work *w);
GLOBAL int refl_plan_tlvs_tc(struct __sk_buff *ctx, struct refl_work *w);

/* -- one's complement arithmetic on native-order 16-bit words (RFC 1071, RFC 1624) -------- */

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* The native 16-bit word value of octet b at an offset of the given parity. */
static __always_inline __u32 octet_word(__u8 b, __u32 off)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (off & 1) ? (__u32)b << 8 : b;
#else
	return (off & 1) ? b : (__u32)b << 8;
#endif
}

static __always_inline int same_address(const __u8 *a, const __u8 *b)
{
	__u8 diff = 0;

	for (int i = 0; i < 16; i++)
		diff |= a[i] ^ b[i];
	return !diff;
}

static __always_inline __u64 sum16(const __u16 *w, int n)
{
	__u64 s = 0;

	for (int i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* Sum of the native 16-bit words of [data + off, data + off + len): packet memory, read in
 * place. *bad is set when the range is not all in the packet. */
static __always_inline __u64 sum_range(void *data, void *end, __u32 off, __u32 len, int *bad)
{
	__u64 sum = 0;
	void *p;

	if (off > 4096 || len > MAX_UDP) {
		*bad = 1;
		return 0;
	}
	p = data + off;
	for (int i = 0; i < MAX_UDP / 256; i++) {
		if (len < 256)
			break;
		if (p + 256 > end) {
			*bad = 1;
			return 0;
		}
		sum += (__u32)bpf_csum_diff(0, 0, p, 256, 0);
		p += 256;
		len -= 256;
	}
#define PIECE(n)                                                        \
	if (len & n) {                                                  \
		if (p + n > end) {                                      \
			*bad = 1;                                       \
			return 0;                                       \
		}                                                       \
		sum += (__u32)bpf_csum_diff(0, 0, p, n, 0);             \
		p += n;                                                 \
	}
	PIECE(128)
	PIECE(64)
	PIECE(32)
	PIECE(16)
	PIECE(8)
	PIECE(4)
#undef PIECE
	if (len & 2) {
		if (p + 2 > end) {
			*bad = 1;
			return 0;
		}
		sum += *(__u16 *)p;
		p += 2;
	}
	if (len & 1) {
		if (p + 1 > end) {
			*bad = 1;
			return 0;
		}
		sum += octet_word(*(__u8 *)p, 0);
	}
	return sum;
}

/* The folded one's complement sum of packet octets [off, off + len), or -1 if they are not all
 * in the packet. */
#define SUM_BODY(is_xdp)                                                                \
	{                                                                               \
		const int xdp = is_xdp;                                                 \
		int bad = 0;                                                            \
		__u64 sum;                                                              \
                                                                                        \
		sum = sum_range(CTX_DATA(ctx), CTX_END(ctx), off, len, &bad);           \
		return bad ? -1 : fold(sum);                                            \
	}
GLOBAL int refl_sum_xdp(struct xdp_md *ctx, __u32 off, __u32 len) SUM_BODY(1)
GLOBAL int refl_sum_tc(struct __sk_buff *ctx, __u32 off, __u32 len) SUM_BODY(0)
#undef SUM_BODY

/* -- time ------------------------------------------------------------------------------ */

/* The 64-bit wire value (host order) of the CLOCK_TAI instant tai_ns, exactly as
 * srv6pm.stamp.timestamp.encode() makes it from the same UTC instant. */
static __always_inline __u64 wire_time(__u64 tai_ns, const struct refl_settings *cfg)
{
	__u64 utc = tai_ns - cfg->kernel_tai_ns, t, s, r;

	if (cfg->flags & CFG_PTP) {
		t = utc + cfg->ptp_tai_ns;
		return ((t / NS) << 32) | (t % NS);
	}
	t = utc + cfg->ntp_epoch_ns;
	s = t / NS;
	r = t % NS;
	return (s << 32) + (((r << 32) + NS / 2) / NS); /* rounded to nearest, as ntp_from_unix_ns */
}

/* -- the TLVs ------------------------------------------------------------------------------ */

static __always_inline int note(struct refl_plan *plan, __u32 off, __u8 old, __u8 new)
{
	__u32 i = plan->nchanges;

	if (old == new)
		return 0;
	if (i >= MAX_CHANGES)
		return -1;
	plan->changes[i].off = off;
	plan->changes[i].old = old;
	plan->changes[i].new = new;
	plan->nchanges = i + 1;
	return 0;
}

/* One walk over TLVs or sub-TLVs: one bpf_loop() step per TLV, so the verifier checks a step
 * once however many TLVs a packet has. */
struct refl_walk {
	void *ctx;           /* the program's context */
	struct refl_work *w;
	__u32 off;           /* payload offset of the next (sub-)TLV */
	__u32 end;           /* payload offset where they end */
	__u32 count;         /* how many were seen */
	__u32 rc;            /* a P_* counter: the packet goes up; 0: go on */
	__u32 control;       /* the first Control Code's value (Return Path only) */
	__u32 srv6_off;      /* the first SRv6 Segment List's value (Return Path only) */
	__u32 srv6_len;
	__u8 have_control;
	__u8 have_srv6;
};

/* The bpf_loop() callbacks of a step function step(k, xdp): step_xdp and step_tc. */
#define LOOP_STEPS(step)                                \
	static long step##_xdp(__u32 index, void *k)    \
	{                                               \
		return step(k, 1);                      \
	}                                               \
	static long step##_tc(__u32 index, void *k)     \
	{                                               \
		return step(k, 0);                      \
	}

/* The global functions name_xdp and name_tc running body(ctx, xdp, w). */
#define GLOBAL_INSTANCES(name, body)                                            \
	GLOBAL int name##_xdp(struct xdp_md *ctx, struct refl_work *w)          \
	{                                                                       \
		return w ? body(ctx, 1, w) : P_HEADERS;                         \
	}                                                                       \
	GLOBAL int name##_tc(struct __sk_buff *ctx, struct refl_work *w)        \
	{                                                                       \
		return w ? body(ctx, 0, w) : P_HEADERS;                         \
	}

static __always_inline long stop(struct refl_walk *k, __u32 rc)
{
	k->rc = rc;
	return 1;
}

/* One TLV of the area (RFC 8972 §4): plan its flags, note the first Return Path TLV. */
static __always_inline long tlv_step(struct refl_walk *k, const int xdp)
{
	void *ctx = k->ctx;
	struct refl_work *w = k->w;
	__u32 pl, off = k->off, len, rest;
	__u8 hdr[4], flags, new;

	if (!w || off >= k->end)
		return 1;
	rest = k->end - off;
	if (rest < 4)
		return 1; /* a fragment too short for a TLV header: echoed as it came */
	if (k->count++ == MAX_TLVS)
		return stop(k, P_TLV);
	pl = w->rq.udp_off + UDP_LEN;
	if (LOAD(pl + off, hdr, 4))
		return stop(k, P_HEADERS);
	flags = hdr[0];
	len = (__u32)hdr[2] << 8 | hdr[3];
	if (hdr[1] == TLV_HMAC || hdr[1] == TLV_CLASS_OF_SERVICE || hdr[1] == TLV_DIRECT_MEASUREMENT)
		return stop(k, P_TLV); /* user space fills these in (its sockets see the DSCP; its counters) */
	if (len > rest - 4) /* cut short by the end of the packet: M = 1, the rest as it came */
		return note(&w->plan, off, flags, flags | TLV_M) ? stop(k, P_TLV) : 1;
	new = (flags & TLV_KNOWN) | TLV_U; /* not understood, or a second Return Path TLV: U = 1 */
	if (hdr[1] == TLV_EXTRA_PADDING) {
		new = 0;
	} else if (hdr[1] == TLV_DESTINATION_NODE_ADDRESS) {
		if (len == 16) {
			if (LOAD(pl + off + 4, w->buf, 16))
				return stop(k, P_HEADERS);
			new = same_address(w->buf, w->rq.daddr) ? 0 : TLV_U;
		} else if (len == 4) {
			new = TLV_U; /* an IPv4 address is never this IPv6 destination */
		} else {
			return stop(k, P_MALFORMED);
		}
	} else if (hdr[1] == TLV_RETURN_PATH && !w->rp_tlv_off) {
		w->rp_tlv_off = off; /* return_path() decides, once the walk is done */
		w->rp_off = off + 4;
		w->rp_len = len;
		w->rp_flags = flags;
		new = flags;
	}
	if (note(&w->plan, off, flags, new))
		return stop(k, P_TLV);
	k->off = off + 4 + len;
	return 0;
}

LOOP_STEPS(tlv_step)

/* One sub-TLV of the first Return Path TLV (RFC 9503 §4.1): validate it, remember it. */
static __always_inline long sub_step(struct refl_walk *k, const int xdp)
{
	void *ctx = k->ctx;
	struct refl_work *w = k->w;
	__u32 pl, off = k->off, len, rest, i = k->count;
	__u8 hdr[4];

	if (!w || off >= k->end)
		return 1;
	if (i >= MAX_SUB_TLVS)
		return stop(k, P_TLV);
	rest = k->end - off;
	pl = w->rq.udp_off + UDP_LEN;
	if (rest < 4 || LOAD(pl + off, hdr, 4))
		return stop(k, P_MALFORMED);
	len = (__u32)hdr[2] << 8 | hdr[3];
	if (len > rest - 4)
		return stop(k, P_MALFORMED);
	if (i == 0 && !(hdr[0] | hdr[1] | hdr[2] | hdr[3]))
		return stop(k, P_TLV); /* maybe an all-zero value (malformed): left to user space */
	switch (hdr[1]) {
	case SUB_CONTROL_CODE:
		if (len != 4)
			return stop(k, P_MALFORMED);
		if (!k->have_control) {
			__be32 value;

			if (LOAD(pl + off + 4, &value, 4))
				return stop(k, P_MALFORMED);
			k->control = bpf_ntohl(value);
			k->have_control = 1;
		}
		break;
	case SUB_RETURN_ADDRESS:
		return stop(k, len == 4 || len == 16 ? P_TLV : P_MALFORMED);
	case SUB_SR_MPLS:
		if (len == 0 || len % 4)
			return stop(k, P_MALFORMED);
		break;
	case SUB_SRV6:
		if (len == 0 || len % 16)
			return stop(k, P_MALFORMED);
		if (!k->have_srv6) {
			k->have_srv6 = 1;
			k->srv6_off = off + 4;
			k->srv6_len = len;
		}
		break;
	}
	w->sub_off[i & (MAX_SUB_TLVS - 1)] = off;
	w->sub_type[i & (MAX_SUB_TLVS - 1)] = hdr[1];
	w->sub_flags[i & (MAX_SUB_TLVS - 1)] = hdr[0];
	k->count = i + 1;
	k->off = off + 4 + len;
	return 0;
}

LOOP_STEPS(sub_step)

/* RFC 9503 §4 for the first Return Path TLV (w->rp_*): plan its flags, the reply's route, or no
 * reply. Returns 0 (planned), or the counter that says why the packet goes up. */
static __always_inline int return_path(void *ctx, const int xdp, struct refl_work *w)
{
	struct refl_walk k = { .ctx = ctx, .w = w, .off = w->rp_off, .end = w->rp_off + w->rp_len };
	struct refl_plan *plan = &w->plan;
	int refused = 0;

	if (!w->rp_len)
		return P_MALFORMED;
	bpf_loop(MAX_SUB_TLVS + 1, xdp ? (void *)sub_step_xdp : (void *)sub_step_tc, &k, 0);
	if (k.rc)
		return k.rc;
	if (k.have_control) { /* §4.1.1: the other sub-TLVs are ignored */
		plan->suppress = !(k.control & 1);
		for (int i = 0; i < MAX_SUB_TLVS; i++) {
			if (i >= k.count)
				break;
			if (note(plan, w->sub_off[i], w->sub_flags[i], w->sub_type[i] == SUB_CONTROL_CODE ? 0 : TLV_U))
				return P_TLV;
		}
		return note(plan, w->rp_tlv_off, w->rp_flags, 0) ? P_TLV : 0;
	}
	if (k.have_srv6) {
		__u32 n = k.srv6_len / 16;
		__u32 pl = w->rq.udp_off + UDP_LEN;

		if (LOAD(pl + k.srv6_off + k.srv6_len - 16, w->buf, 16))
			return P_MALFORMED;
		if (same_address(w->buf, w->rq.saddr))
			n -= 1; /* the sender itself ends the list: not repeated */
		if (n > MAX_WAYPOINTS)
			return P_TLV;
		plan->seg_off = k.srv6_off;
		plan->nsegs = n;
	}
	for (int i = 0; i < MAX_SUB_TLVS; i++) {
		int used;

		if (i >= k.count)
			break;
		used = k.have_srv6 && w->sub_type[i] == SUB_SRV6;
		if (!used)
			refused = 1;
		if (note(plan, w->sub_off[i], w->sub_flags[i], used ? 0 : TLV_U))
			return P_TLV;
	}
	return note(plan, w->rp_tlv_off, w->rp_flags, refused ? TLV_U : 0) ? P_TLV : 0;
}

GLOBAL_INSTANCES(refl_return_path, return_path)

/* The reflector's decision on the TLV area, payload [BASE, udp_len - 8): 0 (planned) or the
 * counter of the reason to pass the packet up. */
static __always_inline int plan_tlvs(void *ctx, const int xdp, struct refl_work *w)
{
	struct refl_walk k = { .ctx = ctx, .w = w, .off = BASE, .end = w->rq.udp_len - UDP_LEN };
	__u32 pl = w->rq.udp_off + UDP_LEN;
	__u8 hdr[4];

	w->rp_tlv_off = 0;
	if (k.end == BASE)
		return 0;
	if (k.end - BASE < 4)
		return 0; /* 1-3 octets: padding, echoed as they came */
	if (LOAD(pl + BASE, hdr, 4))
		return P_HEADERS;
	if (!(hdr[0] | hdr[1] | hdr[2] | hdr[3])) {
		int sum = xdp ? refl_sum_xdp(ctx, pl + BASE, k.end - BASE) : refl_sum_tc(ctx, pl + BASE, k.end - BASE);

		if (sum < 0)
			return P_HEADERS;
		if (sum == 0)
			return 0; /* all-zero padding: echoed as it came */
	}
	/* Not a TLV header as a Session-Sender sends one (a non-zero Type, M = I = 0, a Length that fits):
	 * padding (RFC 8762 §4.6), which the user-space reflector copies back unchanged. */
	if (!hdr[1] || (hdr[0] & (TLV_M | TLV_I)) || ((__u32)hdr[2] << 8 | hdr[3]) > k.end - BASE - 4)
		return P_TLV;
	bpf_loop(MAX_TLVS + 1, xdp ? (void *)tlv_step_xdp : (void *)tlv_step_tc, &k, 0);
	return k.rc;
}

GLOBAL_INSTANCES(refl_plan_tlvs, plan_tlvs)

/* A source the reply can go back to as the user-space reflector would send it: not
 * multicast, not ::/ ::1 and the like, not IPv4-mapped. */
static __always_inline int unicast_source(const __u8 *a)
{
	__u8 high = 0;

	for (int i = 0; i < 10; i++)
		high |= a[i];
	if (a[0] == 0xff)
		return 0;
	return high || (a[10] | a[11]) != 0 ? !(high == 0 && a[10] == 0xff && a[11] == 0xff) : 0;
}

/* -- the reply --------------------------------------------------------------------------- */

static __always_inline __u32 next_seq(struct refl_work *w, __u64 now, const struct refl_settings *cfg, int *failed)
{
	struct refl_session_key *key = &w->key;
	struct refl_session *s;

	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->saddr, w->rq.saddr, 16);
	__builtin_memcpy(key->daddr, w->rq.daddr, 16);
	key->sport = w->rq.sport;
	key->ssid = w->req.sender.ssid;
	s = bpf_map_lookup_elem(&sessions, key);
	if (s && now - s->seen_ns <= cfg->session_idle_ns) {
		s->seen_ns = now;
		return __sync_fetch_and_add(&s->next, 1);
	}
	w->fresh.next = 1;
	w->fresh.pad = 0;
	w->fresh.seen_ns = now;
	if (bpf_map_update_elem(&sessions, key, &w->fresh, BPF_ANY))
		*failed = 1;
	return 0; /* a new session, or one idle for longer than session_idle_ns: from 0 again */
}

/* w->fib: the reply's route towards w->first_hop from the test packet's destination (from the
 * cache, else bpf_fib_lookup, whose answer is cached); 0, or -1 if the kernel has no plain one. */
static __always_inline int route(void *ctx, struct refl_work *w, const struct refl_settings *cfg, __u32 tot_len,
				 __u64 now)
{
	struct refl_route_key *key = &w->route_key;
	struct bpf_fib_lookup *fib = &w->fib;
	struct refl_route *hit;

	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memcpy(key->dst, w->first_hop, 16);
	__builtin_memcpy(key->src, w->rq.daddr, 16);
	key->ifindex = w->rq.ifindex;
	key->dport = w->rq.sport;
	hit = bpf_map_lookup_elem(&routes, key);
	if (hit && hit->generation == cfg->route_generation && now < hit->expires_ns && tot_len <= hit->tot_len) {
		fib->ifindex = hit->ifindex;
		__builtin_memcpy(fib->smac, hit->smac, 6);
		__builtin_memcpy(fib->dmac, hit->dmac, 6);
		return 0;
	}
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = FAMILY_INET6;
	fib->l4_protocol = NH_UDP;
	fib->sport = cfg->port;
	fib->dport = w->rq.sport;
	fib->tot_len = tot_len;
	fib->ifindex = w->rq.ifindex;
	__builtin_memcpy(fib->ipv6_src, w->rq.daddr, 16);
	__builtin_memcpy(fib->ipv6_dst, w->first_hop, 16);
	if (bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	w->route.generation = cfg->route_generation;
	w->route.expires_ns = now + cfg->route_ttl_ns;
	w->route.ifindex = fib->ifindex;
	w->route.tot_len = hit && hit->generation == cfg->route_generation && hit->tot_len > tot_len ? hit->tot_len
												     : tot_len;
	__builtin_memcpy(w->route.smac, fib->smac, 6);
	__builtin_memcpy(w->route.dmac, fib->dmac, 6);
	bpf_map_update_elem(&routes, key, &w->route, BPF_ANY);
	return 0;
}

/* Parse and decide; V_NOT_OURS / V_PASS leave the packet exactly as it came. */
static __always_inline enum refl_verdict decide(void *ctx, const int xdp, struct refl_work *w,
						const struct refl_settings *cfg)
{
	void *data = CTX_DATA(ctx), *end = CTX_END(ctx);
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_LEN;
	struct refl_request *rq = &w->rq;
	struct bpf_fib_lookup *fib = &w->fib;
	struct udphdr *udp;
	__u32 total, ip6_len, srh_new;
	int rc;

	if ((void *)(ip6 + 1) > end || eth->h_proto != bpf_htons(ETHERTYPE_IPV6))
		return V_NOT_OURS;
	rq->udp_off = ETH_LEN + IP6_LEN;
	rq->srh_len = 0;
	if (ip6->nexthdr == NH_ROUTING) {
		struct ipv6_sr_hdr *srh = (void *)(ip6 + 1);

		if ((void *)(srh + 1) > end)
			return V_NOT_OURS;
		if (srh->type != SRH_TYPE || srh->segments_left != 0 || srh->nexthdr != NH_UDP)
			return V_NOT_OURS; /* a waypoint's packet, or more headers: the kernel's business */
		rq->srh_len = ((__u32)srh->hdrlen + 1) * 8;
		rq->udp_off += rq->srh_len;
	} else if (ip6->nexthdr != NH_UDP) {
		return V_NOT_OURS;
	}
	udp = data + rq->udp_off;
	if ((void *)(udp + 1) > end || udp->dest != cfg->port)
		return V_NOT_OURS;
	if (ip6->daddr.in6_u.u6_addr8[0] == 0xff)
		return V_NOT_OURS; /* multicast */
	if (!(cfg->flags & CFG_BIND_ANY) && !same_address((__u8 *)&ip6->daddr, cfg->bind))
		return V_NOT_OURS;
	w->t2 = bpf_ktime_get_tai_ns(); /* a test packet to us: not read for unrelated traffic */
	__builtin_memcpy(rq->saddr, &ip6->saddr, 16);
	__builtin_memcpy(rq->daddr, &ip6->daddr, 16);
	rq->sport = udp->source;
	rq->check = udp->check;
	rq->udp_len = bpf_ntohs(udp->len);
	rq->hop_limit = ip6->hop_limit;
	ip6_len = bpf_ntohs(ip6->payload_len);
	if (xdp) {
		rq->ifindex = ((struct xdp_md *)ctx)->ingress_ifindex;
		total = end - data;
	} else {
		struct __sk_buff *skb = ctx;

		rq->ifindex = skb->ingress_ifindex;
		total = skb->len;
	}
	if (cfg->flags & CFG_BIND_ANY) { /* is the destination one of this node's addresses? */
		__builtin_memset(fib, 0, sizeof(*fib));
		fib->family = FAMILY_INET6;
		fib->ifindex = rq->ifindex;
		__builtin_memcpy(fib->ipv6_dst, rq->daddr, 16);
		if (bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_NOT_FWDED)
			return V_NOT_OURS;
	}

	count(C_RECEIVED);
	if (cfg->flags & CFG_AUTHENTICATED)
		return pass(P_AUTHENTICATED);
	if (rq->udp_len < UDP_LEN + BASE)
		return pass(P_MALFORMED);
	if (rq->udp_len > MAX_UDP || ip6_len != rq->srh_len + rq->udp_len || total != rq->udp_off + rq->udp_len)
		return pass(P_HEADERS);
	if (!xdp && ((struct __sk_buff *)ctx)->gso_size)
		return pass(P_HEADERS);
	if (!rq->check)
		return pass(P_CHECKSUM); /* a zero UDP checksum is not allowed over IPv6: the stack drops it */
	if (!unicast_source(rq->saddr))
		return pass(P_ROUTE);
	if (!xdp && (__u32)(end - data) < total) { /* tc: make the whole packet linear, once */
		if (bpf_skb_pull_data(ctx, total))
			return pass(P_HEADERS);
	}
	if (LOAD(rq->udp_off + UDP_LEN, w->req.b, BASE))
		return pass(P_HEADERS);

	__builtin_memset(&w->plan, 0, sizeof(w->plan));
	rc = xdp ? refl_plan_tlvs_xdp(ctx, w) : refl_plan_tlvs_tc(ctx, w);
	if (!rc && w->rp_tlv_off)
		rc = xdp ? refl_return_path_xdp(ctx, w) : refl_return_path_tc(ctx, w);
	if (rc)
		return pass(rc);
	if (w->plan.suppress) {
		count(C_NO_REPLY);
		return V_DROP;
	}

	/* the route of the reply: towards the first return segment, else the sender */
	if (w->plan.nsegs) {
		if (LOAD(rq->udp_off + UDP_LEN + w->plan.seg_off, w->first_hop, 16))
			return pass(P_MALFORMED);
	} else {
		__builtin_memcpy(w->first_hop, rq->saddr, 16);
	}
	srh_new = w->plan.nsegs ? SRH_FIXED + 16 * (w->plan.nsegs + 1) : 0;
	if (route(ctx, w, cfg, IP6_LEN + srh_new + rq->udp_len, w->t2))
		return pass(P_ROUTE);
	if (xdp && fib->ifindex != rq->ifindex)
		return pass(P_ROUTE); /* XDP_TX sends back by the interface it came in on only */

	if (xdp) { /* the test packet's UDP checksum must verify in full (no partial offload value) */
		__u64 sum = sum16((__u16 *)rq->saddr, 8) + sum16((__u16 *)rq->daddr, 8) + bpf_htons(rq->udp_len)
			    + bpf_htons(NH_UDP);
		int body = refl_sum_xdp(ctx, rq->udp_off, rq->udp_len);

		if (body < 0 || fold(sum + body) != 0xffff)
			return pass(P_CHECKSUM);
	}
	return V_TX;
}

/* Turn the test packet into its reply (decide() said V_TX): V_TX, V_REDIRECT, or V_DROP if
 * something failed half way (the user-space reflector would have answered it). */
static __always_inline enum refl_verdict answer(void *ctx, const int xdp, struct refl_work *w,
						const struct refl_settings *cfg, __u64 t2)
{
	struct refl_request *rq = &w->rq;
	struct refl_plan *plan = &w->plan;
	union refl_base *req = &w->req, *rep = &w->rep;
	__u32 nsegs = plan->nsegs, srh_new = nsegs ? SRH_FIXED + 16 * (nsegs + 1) : 0, pl_new, seq, *hop;
	__u64 acc = 0, t3, wire;
	int failed = 0;

	if (srh_new != rq->srh_len) {
		int delta = (int)srh_new - (int)rq->srh_len;

		if (xdp ? bpf_xdp_adjust_head(ctx, -delta) : bpf_skb_adjust_room(ctx, delta, BPF_ADJ_ROOM_NET, 0))
			return pass(P_HEADERS); /* nothing changed yet */
	}
	pl_new = ETH_LEN + IP6_LEN + srh_new + UDP_LEN;

	if (cfg->flags & CFG_STATEFUL) {
		seq = next_seq(w, t2, cfg, &failed);
		if (failed)
			return V_DROP;
	} else {
		seq = bpf_ntohl(req->sender.seq);
	}
	__builtin_memset(rep, 0, sizeof(*rep));
	*(__be32 *)&rep->b[0] = bpf_htonl(seq);
	/* rep->b[4..12): the Timestamp, t3, written last */
	*(__be16 *)&rep->b[12] = cfg->error_estimate;
	*(__be16 *)&rep->b[14] = req->sender.ssid;
	*(__be64 *)&rep->b[16] = bpf_cpu_to_be64(wire_time(t2, cfg));
	__builtin_memcpy(&rep->b[24], &req->b[0], 4);  /* Session-Sender Sequence Number */
	__builtin_memcpy(&rep->b[28], &req->b[4], 8);  /* Session-Sender Timestamp */
	__builtin_memcpy(&rep->b[36], &req->b[12], 2); /* Session-Sender Error Estimate */
	rep->b[40] = rq->hop_limit;                    /* Session-Sender TTL */
	acc = sum16(rep->w, BASE / 2) + (BASE / 2) * 0xffffULL - sum16(req->w, BASE / 2);
	if (STORE(pl_new, rep->b, BASE))
		return V_DROP;
	for (int i = 0; i < MAX_CHANGES; i++) {
		struct refl_change *c = &plan->changes[i];

		if (i >= plan->nchanges)
			break;
		acc += octet_word(c->new, c->off) + (0xffff - octet_word(c->old, c->off));
		if (STORE(pl_new + c->off, &c->new, 1))
			return V_DROP;
	}

	/* headers: Ethernet, IPv6, the return SRH, UDP; built in w->buf areas of the work state */
	{
		struct ethhdr *e = (void *)w->rep.b; /* rep is stored already: reused as a buffer */
		struct ipv6hdr *h = (void *)w->rep.b;
		struct udphdr *u = (void *)w->rep.b;

		__builtin_memcpy(e->h_dest, w->fib.dmac, 6);
		__builtin_memcpy(e->h_source, w->fib.smac, 6);
		e->h_proto = bpf_htons(ETHERTYPE_IPV6);
		if (STORE(0, e, ETH_LEN))
			return V_DROP;
		hop = bpf_map_lookup_elem(&hop_limits, &w->fib.ifindex);
		__builtin_memset(h, 0, sizeof(*h));
		*(__be32 *)h = bpf_htonl(0x60000000);
		h->payload_len = bpf_htons(srh_new + rq->udp_len);
		h->nexthdr = srh_new ? NH_ROUTING : NH_UDP;
		h->hop_limit = hop ? *hop : DEFAULT_HOP_LIMIT;
		__builtin_memcpy(&h->saddr, rq->daddr, 16);
		__builtin_memcpy(&h->daddr, w->first_hop, 16);
		if (STORE(ETH_LEN, h, IP6_LEN))
			return V_DROP;
		if (srh_new) {
			/* Segment List[0] = the sender, [i] = waypoint n-i, Segments Left = Last Entry = n */
			__u8 fixed[SRH_FIXED] = { NH_UDP, 2 * (nsegs + 1), SRH_TYPE, nsegs, nsegs, 0, 0, 0 };

			if (STORE(ETH_LEN + IP6_LEN, fixed, SRH_FIXED)
			    || STORE(ETH_LEN + IP6_LEN + SRH_FIXED, rq->saddr, 16))
				return V_DROP;
			for (__u32 i = 1; i <= MAX_WAYPOINTS; i++) {
				if (i > nsegs)
					break;
				if (LOAD(pl_new + plan->seg_off + 16 * (nsegs - i), w->buf, 16)
				    || STORE(ETH_LEN + IP6_LEN + SRH_FIXED + 16 * i, w->buf, 16))
					return V_DROP;
			}
		}
		u->source = cfg->port;
		u->dest = rq->sport;
		u->len = bpf_htons(rq->udp_len);
		u->check = rq->check; /* ports swapped, same two addresses: the pseudo-header sum is unchanged */
		if (STORE(pl_new - UDP_LEN, u, UDP_LEN))
			return V_DROP;
	}

	/* t3, as late as possible */
	t3 = bpf_ktime_get_tai_ns();
	wire = bpf_cpu_to_be64(wire_time(t3, cfg));
	acc += sum16((__u16 *)&wire, 4); /* the Timestamp was zero */
	if (STORE(pl_new + 4, &wire, 8))
		return V_DROP;
	if (xdp) {
		__u16 check = ~fold((__u64)(__u16)~rq->check + acc);

		if (!check)
			check = 0xffff;
		if (STORE(pl_new - UDP_LEN + 6, &check, 2))
			return V_DROP;
	} else if (bpf_l4_csum_replace(ctx, pl_new - UDP_LEN + 6, 0, fold(acc), BPF_F_MARK_MANGLED_0)) {
		return V_DROP;
	}
	count(C_REFLECTED);
	if (srh_new)
		count(C_RETURN_PATH_SRV6);
	return w->fib.ifindex == rq->ifindex ? V_TX : V_REDIRECT;
}

static __always_inline enum refl_verdict reflect(void *ctx, const int xdp, __u32 *out_ifindex)
{
	__u32 zero = 0;
	struct refl_settings *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct refl_work *w = bpf_map_lookup_elem(&scratch, &zero);
	enum refl_verdict v;

	if (!cfg || !w || !(cfg->flags & CFG_ENABLED))
		return V_NOT_OURS;
	v = decide(ctx, xdp, w, cfg);
	if (v != V_TX)
		return v;
	v = answer(ctx, xdp, w, cfg, w->t2);
	*out_ifindex = w->fib.ifindex;
	return v;
}

SEC("xdp")
int stamp_reflect_xdp(struct xdp_md *ctx)
{
	__u32 ifindex = 0;

	switch (reflect(ctx, 1, &ifindex)) {
	case V_DROP:
		return XDP_DROP;
	case V_TX:
		return XDP_TX;
	default:
		return XDP_PASS;
	}
}

SEC("tc")
int stamp_reflect_tc(struct __sk_buff *skb)
{
	__u32 ifindex = 0;

	switch (reflect(skb, 0, &ifindex)) {
	case V_DROP:
		return TC_ACT_SHOT;
	case V_TX:
	case V_REDIRECT:
		return bpf_redirect(ifindex, 0);
	default:
		return TC_ACT_UNSPEC; /* on to the next filter (the exporter's counting) and up the stack */
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
