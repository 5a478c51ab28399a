/*
 * stack.h - the per-worker userspace TCP/IPv4 stack as a sans-IO core
 * (IPv6: neighbour discovery and ping only, see docs/TCP.md).
 *
 * Contract
 *   One struct dp_stack belongs to one worker loop and is only ever touched
 *   from that loop's thread; nothing here locks, reads a clock or allocates
 *   after dp_stack_new(). The stack knows nothing of DPDK:
 *     - frames in:  the loop hands each received Ethernet frame to
 *                   dp_stack_input(); the stack reads it during the call only
 *                   (the caller owns and frees the buffer afterwards).
 *     - frames out: the stack asks io->tx_buf() for a buffer of at least
 *                   `max` bytes (NULL: no buffer, the frame is dropped and
 *                   counted), writes one frame into it and hands it back
 *                   with io->tx_send(len). Every buffer obtained is sent.
 *     - time:       w->now (ms, monotonic), set by the loop before it calls
 *                   in. Timers (retransmission, delayed ACK, persist,
 *                   TIME_WAIT, ARP, the application's deadlines) run in
 *                   dp_stack_poll(), which the loop calls every iteration;
 *                   dp_stack_idle_ms() says how long it may sleep.
 *   The application sees the byte-stream interface of transport.h: accept()
 *   when a passive open completes (listener flags from dp_stack_conf),
 *   recv/pull/sent/timer/closed as there. A connection object starts with
 *   struct dp_conn, so dp_conn_flush/close/abort/timer/rx_resume reach it.
 *   Active opens: dp_stack_connect() returns the handle at once; pull() is
 *   first called when the handshake completes; a failed open ends in
 *   closed(-ECONNREFUSED or -ETIMEDOUT). closed() errors: 0 after
 *   dp_conn_close() or abort, -ECONNRESET on a peer FIN (after all its data
 *   was taken, as the kernel transport does) or RST, -ETIMEDOUT when
 *   retransmissions give up, -ESHUTDOWN from dp_stack_free().
 *   After closed() the stack may keep the connection (FIN_WAIT, LAST_ACK,
 *   TIME_WAIT) without the application.
 *
 *   Memory: connections, receive and send buffers come from pools sized by
 *   dp_stack_conf at creation. A connection holds a buffer only while it is
 *   non-empty. Running out is a normal outcome, counted in the stats: no
 *   connection (RST), data dropped (the peer retransmits), output waits.
 *
 *   Passive opens: while fewer SYNs than the half-open table holds
 *   (conn_max / 8, at most 256) arrived in the current second, a SYN gets
 *   a small SYN_RCVD entry and its SYN-ACK is retransmitted if the third
 *   ACK is lost; beyond that, SYN cookies, so a flood creates no state
 *   (docs/TCP.md: the table, the cookie encoding).
 *
 * Call order: dp_stack_new -> (dp_stack_input | dp_stack_poll |
 * dp_stack_connect)* -> dp_stack_free.
 */
#ifndef DP_STACK_H
#define DP_STACK_H

#include <stddef.h>
#include <stdint.h>

#include "dataplane/transport.h"

#define DP_STACK_LISTEN_MAX 16

/* dp_stack_conf.offload. RX: the NIC has verified the IPv4 header and TCP
 * checksums and the binding dropped frames that failed (the stack skips
 * both checks). TX: the NIC fills them in; the stack leaves the IPv4
 * header checksum 0 and puts the folded, uncomplemented pseudo-header sum
 * in the TCP checksum field (the DPDK convention); the binding marks each
 * IPv4/TCP frame for the NIC. ARP, ICMP and IPv6 are always done in
 * software, and with TX the IPv4 header of ICMP frames is left 0 too. */
#define DP_STACK_RX_CSUM 1u
#define DP_STACK_TX_CSUM 2u

struct dp_stack;

struct dp_stack_listen {
	uint16_t port;                 /* host order */
	unsigned flags;                /* handed to accept() */
};

struct dp_stack_conf {
	uint8_t mac[6];
	uint32_t ipv4, netmask, gateway;   /* host byte order; gateway 0: none */
	uint16_t mtu;                  /* IP MTU; 0: 1500 */
	struct dp_stack_listen listen[DP_STACK_LISTEN_MAX];
	unsigned nlisten;
	uint32_t conn_max;             /* connections incl. TIME_WAIT */
	uint32_t rx_buf, tx_buf;       /* bytes per connection buffer; 0: 64 KiB */
	uint32_t rx_bufs, tx_bufs;     /* buffers in each pool; 0: conn_max */
	uint32_t time_wait_max;        /* 0: conn_max / 4 */
	uint32_t time_wait_ms;         /* 0: 2000 */
	uint32_t arp_max;              /* 0: 64 */
	uint8_t secret[16];            /* SYN cookie and ISN key */
	uint8_t ipv6[16];              /* all zero: link-local only (ping, ND) */
	unsigned offload;              /* DP_STACK_RX_CSUM | DP_STACK_TX_CSUM */
};

struct dp_stack_io {
	uint8_t *(*tx_buf)(void *io_ctx, size_t max, void **h);
	void (*tx_send)(void *io_ctx, void *h, size_t len);
	/* Optional, the exception path (docs/TCP.md, "Exception path"): a
	 * received frame that is not for the SMTP service (other EtherTypes,
	 * IPv4 protocols other than TCP and ICMP, ICMP types the stack does not
	 * handle, TCP to a port with neither listener nor connection, IPv6
	 * other than ND and echo; every ARP frame, after the stack has learnt
	 * from or answered it). The whole Ethernet frame, valid during the call
	 * only; counted in exception_out. NULL: such frames are dropped (and a
	 * TCP segment to a closed port is answered with RST), as before. */
	void (*exception)(void *io_ctx, const uint8_t *frame, size_t len);
};

/* Counters. A frame that fails validation lands in one drop_* field;
 * the rest count events (a frame may cause several). */
struct dp_stack_stats {
	uint64_t rx_frames, tx_frames, tx_nobuf;
	uint64_t drop_eth_short, drop_eth_type, drop_eth_dst;
	uint64_t drop_arp_bad, drop_arp_other;
	uint64_t drop_ip_short, drop_ip_version, drop_ip_hlen, drop_ip_len, drop_ip_csum,
	         drop_ip_frag, drop_ip_dst, drop_ip_src, drop_ip_proto;
	uint64_t drop_icmp_short, drop_icmp_csum, drop_icmp_type;
	uint64_t drop_tcp_short, drop_tcp_csum, drop_tcp_hlen, drop_tcp_flags,
	         drop_tcp_noport, drop_tcp_cookie, drop_tcp_paws, drop_tcp_seq,
	         drop_tcp_ack, drop_tcp_rst, drop_tcp_syn, drop_tcp_state;
	uint64_t arp_requests_out, arp_replies_out, arp_replies_in, arp_queue_drop,
	         arp_full, arp_timeout;
	uint64_t icmp_echo_out;
	uint64_t tcp_syn_in, tcp_cookies_out, tcp_cookies_ok, tcp_rst_out, tcp_rst_in,
	         tcp_challenge_ack, tcp_challenge_limited, tcp_conn_full, tcp_accepted,
	         tcp_refused, tcp_connects, tcp_established;
	uint64_t tcp_rexmit_timeout, tcp_fast_rexmit, tcp_segs_rexmit, tcp_persist_probes,
	         tcp_ooo_segs, tcp_ooo_drop, tcp_rx_nobuf, tcp_tx_nobuf, tcp_dup_data,
	         tcp_delack, tcp_tw_full, tcp_tw_reuse, tcp_timeouts, tcp_sack_skip;
	uint64_t tcp_segs_in, tcp_segs_out;
	uint64_t drop_ip6_bad, drop_ip6_dst, drop_ip6_proto, drop_ip6_type, drop_ip6_nd;
	uint64_t nd_adverts_out, icmp6_echo_out;
	uint64_t exception_out;        /* frames handed to io->exception */
	uint64_t tcp_synq_out;         /* stateful SYN-ACKs (first transmission) */
	uint64_t tcp_synack_rexmit;    /* SYN-ACKs sent again: timer or duplicate SYN */
	uint64_t tcp_synq_timeout;     /* half-open entries given up */
	uint64_t tcp_synq_ok;          /* half-open entries established */
	uint64_t icmp_unreach;         /* destination unreachable received */
	uint64_t icmp_bad_quote;       /* ... not matching a live connection's window */
	uint64_t tcp_pmtu_lowered;     /* fragmentation needed: MSS lowered */
	uint64_t icmp_conn_err;        /* active opens ended by a hard error */
	uint64_t icmp_soft_err;        /* soft errors noted */
	uint32_t conns, time_wait;     /* gauges */
};

/* NULL with errno (EINVAL, ENOMEM). */
struct dp_stack *dp_stack_new(const struct dp_stack_conf *conf, const struct dp_stack_io *io,
                              void *io_ctx, struct dp_worker *w, const struct dp_app_ops *ops,
                              void *worker_app);
/* Closes every connection (closed(-ESHUTDOWN) to the application, no frames
 * sent) and frees everything. Returns NULL. */
struct dp_stack *dp_stack_free(struct dp_stack *st);

/* One received Ethernet frame; the caller keeps ownership of `frame`. */
void dp_stack_input(struct dp_stack *st, const uint8_t *frame, size_t len);
/* Timers due at w->now. */
void dp_stack_poll(struct dp_stack *st);
/* Milliseconds until dp_stack_poll() may have work, capped at cap. */
uint64_t dp_stack_idle_ms(const struct dp_stack *st, uint64_t cap);

/* Active open to ipv4:port (host order). NULL with errno (EAGAIN: no
 * connection or port free; EINVAL). */
struct dp_conn *dp_stack_connect(struct dp_stack *st, uint32_t ipv4, uint16_t port,
                                 void *conn_app);

const struct dp_stack_stats *dp_stack_stats(const struct dp_stack *st);
/* sizeof the per-connection state, buffers excluded. */
size_t dp_stack_conn_size(void);

#endif
