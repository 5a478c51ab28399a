/*
 * stack_impl.h - internals shared by the files of the userspace stack
 * (eth.c, arp.c, ipv4.c, icmp.c, tcp_*.c). Not for use outside dataplane/.
 */
#ifndef DP_STACK_IMPL_H
#define DP_STACK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dataplane/stack.h"
#include "dataplane/timer.h"

#define DP_ETH_HLEN    14
#define DP_ETH_IPV4    0x0800
#define DP_ETH_ARP     0x0806
#define DP_IP_HLEN     20
#define DP_TCP_HLEN    20
#define DP_TCP_OPT_MAX 40
#define DP_PROTO_ICMP  1
#define DP_PROTO_TCP   6

#define DP_TH_FIN 0x01
#define DP_TH_SYN 0x02
#define DP_TH_RST 0x04
#define DP_TH_PSH 0x08
#define DP_TH_ACK 0x10
#define DP_TH_URG 0x20

#define DP_SACK_MAX 4              /* out-of-order ranges kept and reported */
#define DP_DACK_MS 40u             /* delayed ACK */
#define DP_OOW_ACK_MS 200u         /* ACKs for unacceptable segments, at most */
#define DP_FW2_MS 30000u           /* FIN_WAIT_2 without the application */
#define DP_SYNQ_MAX 256u           /* half-open (SYN_RCVD) entries, at most */
#define DP_PMTU_MIN 576u           /* lowest path MTU we accept (RFC 791/1122) */

/* Sequence-space comparisons (RFC 9293 3.4). */
#define SEQ_LT(a, b)  ((int32_t)((uint32_t)(a) - (uint32_t)(b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((uint32_t)(a) - (uint32_t)(b)) <= 0)
#define SEQ_GT(a, b)  ((int32_t)((uint32_t)(a) - (uint32_t)(b)) > 0)
#define SEQ_GEQ(a, b) ((int32_t)((uint32_t)(a) - (uint32_t)(b)) >= 0)

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

enum dp_tcp_state {
	DP_TCP_CLOSED, DP_TCP_SYN_SENT, DP_TCP_ESTABLISHED, DP_TCP_FIN_WAIT_1,
	DP_TCP_FIN_WAIT_2, DP_TCP_CLOSE_WAIT, DP_TCP_CLOSING, DP_TCP_LAST_ACK,
	DP_TCP_TIME_WAIT, DP_TCP_SYN_RCVD,
};

/* Receive ring: bytes the application declined (held, from `head`) followed
 * by room for out-of-order data at their sequence offsets. Exists only
 * while non-empty. */
struct dp_rxbuf {
	struct dp_rxbuf *next_free;
	uint32_t head, held;
	uint8_t nooo;
	struct { uint32_t start, end; } ooo[DP_SACK_MAX];  /* seq ranges, sorted */
	uint8_t data[];
};

/* Send ring: bytes from snd_una on (sent-unacked, then unsent), and the
 * ranges above snd_una the peer reported with SACK (RFC 2018). */
struct dp_txbuf {
	struct dp_txbuf *next_free;
	uint32_t head, len;
	uint8_t nsacked;
	struct { uint32_t start, end; } sacked[DP_SACK_MAX];  /* sorted */
	uint8_t data[];
};

/* The connection (TCB). Kept small: buffers are separate and pooled. */
struct dp_tcb {
	struct dp_conn base;           /* first: transport-neutral handle */
	struct dp_stack *st;
	void *app;
	struct dp_tcb *hnext;          /* flow-table chain, or free list */
	struct dp_tcb *tw_next, *tw_prev;  /* TIME_WAIT list (oldest first) */
	struct dp_rxbuf *rx;
	struct dp_txbuf *tx;
	uint32_t faddr;
	uint16_t fport, lport;
	uint8_t state;
	uint8_t snd_wscale, rcv_wscale;
	uint8_t dupacks;
	uint8_t backoff;
	uint8_t in_cb;
	uint8_t dack_segs;
	/* flags; sws_force: the persist timer fills a window too small for
	 * silly-window avoidance; want_tx: waiting for a free send ring */
	uint8_t ts_ok : 1, sack_ok : 1, closing : 1, aborting : 1, eof : 1,
	        fin_queued : 1, in_recovery : 1, ack_now : 1;
	uint8_t persist : 1, rtt_timing : 1, app_gone : 1, released : 1,
	        want_tx : 1, sws_force : 1, fin_rcvd : 1, zero_wnd_sent : 1;
	/* ws_ok: the peer's SYN offered window scaling (a SYN_RCVD entry
	 * answers in kind); soft_unreach: an ICMP soft error (RFC 1122
	 * 4.2.3.9) arrived during an active open, reported if it times out */
	uint8_t ws_ok : 1, soft_unreach : 1;
	uint16_t mss;                  /* send MSS (payload bytes) */
	uint32_t iss, irs;
	uint32_t snd_una, snd_nxt, snd_max, snd_wnd, snd_wl1, snd_wl2, max_sndwnd;
	uint32_t rcv_nxt, rcv_adv, last_ack_sent;
	uint32_t cwnd, ssthresh, recover;
	uint32_t ts_recent, ts_off;
	uint32_t srtt, rttvar, rto;    /* ms; srtt/rttvar scaled by 8/4 */
	uint32_t rtt_seq, rtt_start;
	uint32_t oow_ack_at;           /* ms: last ACK for an unacceptable segment */
	uint64_t ts_recent_age;
	uint64_t rto_at, dack_at;      /* 0: not armed */
	struct dp_timer t_tcp;         /* min(rto_at, dack_at) */
	struct dp_timer t_app;         /* the application's deadline */
};

struct dp_arp_entry {
	uint32_t ip;                   /* 0: free */
	uint8_t mac[6];
	uint8_t state;                 /* 0 free, 1 incomplete, 2 reachable */
	uint8_t tries;
	uint64_t expires;              /* reachable: until; incomplete: next request */
	uint16_t pend_len;             /* queued frame (one), 0: none */
	uint8_t *pend;
};

struct dp_txctx {
	void *h;
	uint8_t *frame;                /* Ethernet header */
	struct dp_arp_entry *park;     /* unresolved: frame goes to its queue */
	uint32_t dst;
};

struct dp_stack {
	struct dp_stack_conf conf;
	const struct dp_stack_io *io;
	void *io_ctx;
	struct dp_worker *w;
	const struct dp_app_ops *ops;
	void *wapp;
	struct dp_stack_stats stats;
	struct dp_wheel wheel;
	uint16_t mss_local;            /* MTU - 40 */
	uint8_t rcv_wscale;
	/* flow table */
	struct dp_tcb **htab;
	uint32_t hmask;
	struct dp_tcb *tcbs, *free_tcb;
	struct dp_tcb *tw_head, *tw_tail;
	/* buffer pools */
	uint8_t *rx_slab, *tx_slab;
	struct dp_rxbuf *free_rx;
	struct dp_txbuf *free_tx;
	/* ARP */
	struct dp_arp_entry *arp;
	uint8_t *arp_pend;
	uint64_t arp_next_scan;
	/* RFC 5961 challenge ACK limit */
	uint64_t chal_window;
	uint32_t chal_count;
	/* Half-open table: SYN_RCVD connections while fewer than synq_max exist
	 * and fewer than synq_max SYNs came in this second; cookies beyond. */
	uint32_t synq, synq_max;
	uint32_t syn_count;
	uint64_t syn_sec;
	uint16_t next_port;
	uint64_t sip_k0, sip_k1;
	uint64_t flow_k[2], ts_k[2];   /* SipHash-1-3 keys, derived from sip_k* at start */
	uint8_t *scratch_big;          /* one MTU, for replies built from input */
	const uint8_t *rx_frame;       /* the frame dp_stack_input() is handling */
	size_t rx_len;
};

static inline uint64_t dp_now(const struct dp_stack *st) { return st->w->now; }

/* The frame being input (dp_stack_input) goes to the exception path if
 * the binding has one (true); else nothing happens and the caller drops or
 * answers it as it would without one (false). */
static inline bool
dp_exception(struct dp_stack *st)
{
	if (st->io->exception == NULL || st->rx_frame == NULL)
		return false;
	st->stats.exception_out++;
	st->io->exception(st->io_ctx, st->rx_frame, st->rx_len);
	return true;
}

/* util (eth.c) */
uint32_t dp_csum_add(uint32_t sum, const uint8_t *p, size_t n);
uint16_t dp_csum_fold(uint32_t sum);
uint64_t dp_siphash(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n);
uint64_t dp_siphash13_u64(uint64_t k0, uint64_t k1, uint64_t m);

/* eth.c: frame output */
uint8_t *dp_eth_tx_begin(struct dp_stack *st, const uint8_t dmac[6], uint16_t type, size_t l3max,
                         struct dp_txctx *tx);
void dp_eth_tx_end(struct dp_stack *st, struct dp_txctx *tx, size_t l3len);

/* arp.c */
void dp_arp_input(struct dp_stack *st, const uint8_t *p, size_t len);
struct dp_arp_entry *dp_arp_lookup(struct dp_stack *st, uint32_t ip, bool create);
void dp_arp_request(struct dp_stack *st, uint32_t ip);
void dp_arp_poll(struct dp_stack *st);

/* ipv4.c */
void dp_ip_input(struct dp_stack *st, const uint8_t *p, size_t len);
/* Returns the L4 area of a frame to dst with room for l4max bytes, NULL
 * if no buffer (counted). */
uint8_t *dp_ip_tx_begin(struct dp_stack *st, uint32_t dst, size_t l4max, struct dp_txctx *tx);
void dp_ip_tx_end(struct dp_stack *st, struct dp_txctx *tx, uint8_t proto, size_t l4len);
uint32_t dp_ip_pseudo(uint32_t src, uint32_t dst, uint8_t proto, size_t len);

/* ipv6.c */
void dp_ip6_input(struct dp_stack *st, const uint8_t *smac, const uint8_t *p, size_t len);
bool dp_ip6_ours(const struct dp_stack *st, const uint8_t a[16]);
bool dp_ip6_mac_ok(const struct dp_stack *st, const uint8_t mac[6]);

/* icmp.c */
void dp_icmp_input(struct dp_stack *st, uint32_t src, const uint8_t *p, size_t len);

/* tcp_input.c: ICMP destination unreachable (code, next-hop MTU) quoting
 * `q`, our IPv4 header plus at least 8 bytes of TCP (validated by icmp.c). */
void dp_tcp_icmp_unreach(struct dp_stack *st, uint8_t code, uint16_t mtu, const uint8_t *q,
                         size_t qlen);

/* tcp_*.c */
struct dp_tcp_seg {
	uint32_t seq, ack, tsval, tsecr;
	uint32_t len;                  /* payload */
	uint16_t win, mss;
	uint8_t flags;
	uint8_t wscale;                /* 0xff: none */
	bool has_ts, sack_perm, has_mss;
	uint8_t nsack;
	struct { uint32_t start, end; } sack[DP_SACK_MAX];
	const uint8_t *data;
};
void dp_tcp_input(struct dp_stack *st, uint32_t src, const uint8_t *p, size_t len);
void dp_tcp_output(struct dp_tcb *c);
void dp_tcp_send_ack(struct dp_tcb *c);
void dp_tcp_send_seg(struct dp_tcb *c, uint32_t seq, uint32_t len, uint8_t flags);
void dp_tcp_send_rst(struct dp_stack *st, uint32_t dst, uint16_t sport, uint16_t dport,
                     uint32_t seq, uint32_t ack, uint8_t flags);
void dp_tcp_send_synack_cookie(struct dp_stack *st, uint32_t dst, uint16_t dport, uint16_t lport,
                               const struct dp_tcp_seg *syn);
void dp_tcp_retransmit_one(struct dp_tcb *c);
uint16_t dp_tcp_rcv_window(const struct dp_tcb *c);
uint32_t dp_tcp_tsval(const struct dp_tcb *c);
bool dp_tcp_challenge_ok(struct dp_stack *st);

/* tcp_conn.c */
struct dp_tcb *dp_tcp_lookup(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport);
struct dp_tcb *dp_tcp_alloc(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport);
void dp_tcp_release(struct dp_tcb *c);
/* Leaving SYN_RCVD (established, reset or given up): the half-open count. */
static inline void dp_tcp_synq_leave(struct dp_tcb *c)
{
	if (c->state == DP_TCP_SYN_RCVD)
		c->st->synq--;
}
void dp_tcp_detach(struct dp_tcb *c, int err);
void dp_tcp_settle(struct dp_tcb *c);
void dp_tcp_enter_time_wait(struct dp_tcb *c);
void dp_tcp_arm(struct dp_tcb *c);
int dp_tcp_listener(const struct dp_stack *st, uint16_t port);
uint32_t dp_tcp_isn(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport);
uint32_t dp_tcp_ts_off(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport);
uint32_t dp_tcp_cookie_make(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport,
                            uint32_t peer_isn, uint16_t peer_mss, uint8_t opts, uint16_t *mss_out);
int dp_tcp_cookie_check(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport,
                        uint32_t peer_isn, uint32_t cookie, uint8_t opts, uint16_t *mss_out);
struct dp_rxbuf *dp_tcp_rx_get(struct dp_tcb *c);
void dp_tcp_rx_put(struct dp_tcb *c);
struct dp_txbuf *dp_tcp_tx_get(struct dp_tcb *c);
void dp_tcp_tx_put(struct dp_tcb *c);
void dp_tcp_deliver(struct dp_tcb *c, const uint8_t *p, uint32_t n);
void dp_tcp_offer_held(struct dp_tcb *c);
void dp_tcp_set_rto(struct dp_tcb *c);
void dp_tcp_sack_update(struct dp_tcb *c, const struct dp_tcp_seg *s);
uint32_t dp_tcp_sack_clip(struct dp_tcb *c, uint32_t len);

/* tcp_timer.c */
void dp_tcp_timer_fire(struct dp_timer *t, void *arg);
void dp_tcp_app_timer_fire(struct dp_timer *t, void *arg);
void dp_tcp_rtt_sample(struct dp_tcb *c, uint32_t rtt);

/* Option bits carried in the low bits of the SYN-ACK's TSval (cookies). */
#define DP_COOKIE_TSBITS 5
#define DP_COOKIE_WS_NONE 0xf

#endif
