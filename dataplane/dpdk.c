/*
 * dpdk.c - the DPDK transport; see dpdk.h, transport.h and stack.h.
 *
 * One struct dworker per worker: its queue pair (or the part of one the
 * port could give), its pool, its stack, the burst of frames waiting to be
 * sent and, with more than one worker, its dispatch inbox, its staging
 * area for the other inboxes and perhaps a TX box (dpdk.h, "Dispatch").
 * The stack's dp_stack_io writes straight into mbufs; nothing is copied on
 * transmit or dispatch (a frame for every worker is one mbuf with a raised
 * reference count), and on receive only a chained (multi-segment) frame is
 * linearised into the worker's buffer.
 */
#include "dataplane/dpdk.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "dataplane/exception.h"
#include "dataplane/stack.h"

#define DP_D_BURST       32
#define DP_D_TXQ_MAX     (2 * DP_D_BURST)
#define DP_D_TX_RETRY    4
#define DP_D_RXD         1024
#define DP_D_TXD         1024
#define DP_D_POOL_CACHE  256
#define DP_D_ARGV_MAX    64
#define DP_D_IDLE_SPINS  1024  /* empty iterations before napping */
#define DP_D_FRAME_MAX   9216
#define DP_D_RING        1024  /* dispatch ring slots per worker (default) */
#define DP_D_DRAIN_BURSTS 4    /* inbox / TX box bursts taken per pass at most */
#define DP_D_NO_OWNER    UINT32_MAX  /* classify(): the receiving worker */
#define DP_D_ALL         (UINT32_MAX - 1)  /* classify(): every worker */

struct dworker {
	struct dp_worker base;         /* first: the transport-neutral handle */
	struct dp_dpdk *d;
	unsigned id;
	uint16_t queue;                /* our RX queue (when rxq) and TX queue (when txq) */
	bool rxq, txq;                 /* the port gave us an RX / a TX queue */
	struct rte_ring *inbox;        /* frames other pollers hand us (MP/SC) */
	struct rte_ring *txbox;        /* with txq and workers without one: their frames (MP/SC) */
	struct dworker *tx_via;        /* without txq: the worker whose TX queue we use */
	struct rte_mbuf **stage;       /* [worker][DP_D_BURST]: frames for other inboxes */
	uint16_t *nstage;              /* [worker] */
	unsigned lcore;                /* EAL worker lcore, or UINT_MAX: a thread */
	pthread_t thread;
	bool thread_started;
	atomic_int wake_pending;
	struct rte_mempool *pool;
	struct dp_stack *st;
	void *app;
	uint16_t ntx;
	struct rte_mbuf *tx[DP_D_TXQ_MAX];
	uint64_t tx_dropped, rx_chained;
	uint64_t disp_out, disp_in, disp_drop, disp_copies, tx_via_frames, tx_via_drop;
	uint64_t arp_quiet;            /* ARP answers to copies, not sent */
	bool arp_copy;                 /* handing the stack a copied ARP frame */
	bool in_inbox;                 /* handing the stack frames from our inbox */
	bool exc_more;                 /* worker 0: the last tap read filled a burst */
	uint64_t exc_last_ms;          /* worker 0: when the tap was last read */
	uint64_t exc_out, exc_drop, exc_copies, exc_in, exc_in_drop;
	unsigned stats_seen;           /* last stats generation logged */
	uint8_t linear[DP_D_FRAME_MAX]; /* a chained frame, made contiguous */
} __rte_cache_aligned;

struct dp_dpdk {
	struct dp_dpdk_conf conf;
	const struct dp_app_ops *ops;
	void *app;
	struct dp_stack_conf sconf;
	uint16_t port;
	bool port_started;
	atomic_bool stop;
	atomic_uint stats_gen;         /* bumped by dp_dpdk_stats_request() */
	struct rte_mempool *pools[RTE_MAX_NUMA_NODES];
	bool rss;                      /* the NIC spreads TCP flows over the RX queues */
	bool sw_dispatch;              /* we do: TCP frames go to hash(flow)'s worker */
	bool lsc_cb;                   /* link-state callback registered */
	bool tx_csum;                  /* the port fills in IPv4 and TCP checksums */
	unsigned nrxq, ntxq;
	uint64_t flow_key;             /* random: which worker owns a flow is not guessable */
	int exc_fd;                    /* the exception tap, or -1 */
	unsigned nworkers;
	struct dworker *w[];
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
d_log(const struct dp_dpdk_conf *conf, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
d_log(const struct dp_dpdk_conf *conf, const char *fmt, ...)
{
	if (conf->log == NULL)
		return;
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	conf->log(conf->log_ctx, line);
}

static void
d_worker_wake(struct dp_worker *dw)
{
	struct dworker *w = (struct dworker *)dw;
	atomic_store_explicit(&w->wake_pending, 1, memory_order_release);
}

/* Active open on this worker's stack; from wake() or idle() only (the
 * stack is not in the middle of a frame then). IPv4 only, as the stack. */
static struct dp_conn *
d_worker_connect(struct dp_worker *dw, const struct sockaddr *peer, void *conn_app)
{
	struct dworker *w = (struct dworker *)dw;
	if (peer->sa_family != AF_INET) {
		errno = EAFNOSUPPORT;
		return NULL;
	}
	if (w->st == NULL) {
		errno = EAGAIN;  /* worker_init(): the stack does not exist yet */
		return NULL;
	}
	const struct sockaddr_in *sin = (const struct sockaddr_in *)peer;
	return dp_stack_connect(w->st, ntohl(sin->sin_addr.s_addr), ntohs(sin->sin_port), conn_app);
}

static const struct dp_worker_ops d_worker_ops = {
	.wake = d_worker_wake,
	.connect = d_worker_connect,
};

/* ---- transmit ---------------------------------------------------------- */

static uint16_t
tx_burst_retry(struct dworker *w, struct rte_mbuf **m, uint16_t n)
{
	uint16_t off = 0;
	for (int tries = 0; off < n && tries < DP_D_TX_RETRY; tries++)
		off += rte_eth_tx_burst(w->d->port, w->queue, m + off, n - off);
	if (off < n) {
		/* The NIC is full: drop the rest; TCP retransmits. */
		w->tx_dropped += n - off;
		rte_pktmbuf_free_bulk(m + off, n - off);
	}
	return off;
}

static void
tx_flush(struct dworker *w)
{
	if (w->txq) {
		tx_burst_retry(w, w->tx, w->ntx);
	} else {
		/* No TX queue of our own: through the owner's box; full means
		 * dropped, as a full NIC queue would. */
		unsigned k = rte_ring_mp_enqueue_burst(w->tx_via->txbox, (void **)w->tx, w->ntx, NULL);
		w->tx_via_frames += k;
		if (k < w->ntx) {
			w->tx_via_drop += w->ntx - k;
			rte_pktmbuf_free_bulk(w->tx + k, w->ntx - k);
		}
	}
	w->ntx = 0;
}

/* Frames of workers without a TX queue, onto ours. Returns how many. */
static unsigned
txbox_drain(struct dworker *w)
{
	struct rte_mbuf *m[DP_D_BURST];
	unsigned total = 0;
	/* Several borrowers may each have queued a burst this pass. */
	for (int i = 0; i < DP_D_DRAIN_BURSTS; i++) {
		unsigned n = rte_ring_sc_dequeue_burst(w->txbox, (void **)m, DP_D_BURST, NULL);
		if (n == 0)
			break;
		tx_burst_retry(w, m, (uint16_t)n);
		total += n;
	}
	return total;
}

static uint8_t *
io_tx_buf(void *ctx, size_t max, void **h)
{
	struct dworker *w = ctx;
	struct rte_mbuf *m = rte_pktmbuf_alloc(w->pool);
	if (m == NULL)
		return NULL;
	if (rte_pktmbuf_tailroom(m) < max) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	*h = m;
	return rte_pktmbuf_mtod(m, uint8_t *);
}

static void
io_tx_send(void *ctx, void *h, size_t len)
{
	struct dworker *w = ctx;
	struct rte_mbuf *m = h;
	if (unlikely(w->arp_copy) && len >= 14 &&
	    rte_pktmbuf_mtod(m, const struct rte_ether_hdr *)->ether_type ==
	    rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) {
		/* Our stack's answer to a copy of an ARP request: the worker
		 * that received the original answers; this one only learns. */
		w->arp_quiet++;
		rte_pktmbuf_free(m);
		return;
	}
	m->data_len = (uint16_t)len;
	m->pkt_len = (uint32_t)len;
	if (w->d->tx_csum && len >= 14 + 20) {
		/* The stack left the IPv4 header checksum 0 and put the
		 * pseudo-header sum in the TCP one (stack.h, DP_STACK_TX_CSUM). */
		const uint8_t *f = rte_pktmbuf_mtod(m, const uint8_t *);
		if (f[12] == 0x08 && f[13] == 0x00) {
			m->l2_len = 14;
			m->l3_len = (uint64_t)(f[14] & 0x0f) * 4;
			m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
			if (f[23] == IPPROTO_TCP)
				m->ol_flags |= RTE_MBUF_F_TX_TCP_CKSUM;
		}
	}
	w->tx[w->ntx++] = m;
	if (w->ntx == DP_D_TXQ_MAX)
		tx_flush(w);
}

static const struct dp_stack_io d_io = {
	.tx_buf = io_tx_buf,
	.tx_send = io_tx_send,
};

/* ---- exception path ------------------------------------------------------ */

/* A frame for the kernel (stack.h, io->exception): one write to the tap.
 * Frames from our inbox are TCP segments dispatched to us (written) or
 * copies of ARP and ICMP frames that the receiving worker writes itself. */
static void
io_exception(void *ctx, const uint8_t *frame, size_t len)
{
	struct dworker *w = ctx;
	if (w->in_inbox && !(len >= 14 + 20 && frame[12] == 0x08 && frame[13] == 0x00 &&
	                     frame[14 + 9] == IPPROTO_TCP)) {
		w->exc_copies++;
		return;
	}
	if (dp_exc_tap_write(w->d->exc_fd, frame, len) == 0)
		w->exc_out++;
	else
		w->exc_drop++;
}

static const struct dp_stack_io d_io_exc = {
	.tx_buf = io_tx_buf,
	.tx_send = io_tx_send,
	.exception = io_exception,
};

/* Worker 0: frames the kernel wrote to the tap, onto our TX burst. At most
 * one burst a pass; a pass that found none waits for the next millisecond.
 * Returns how many were queued. */
static unsigned
exc_pull(struct dworker *w)
{
	struct dp_dpdk *d = w->d;
	unsigned k = 0;
	w->exc_last_ms = w->base.now;
	w->exc_more = false;
	for (unsigned i = 0; i < DP_D_BURST; i++) {
		ssize_t n = dp_exc_tap_read(d->exc_fd, w->linear, sizeof(w->linear));
		if (n <= 0)
			return k;
		struct rte_mbuf *m = rte_pktmbuf_alloc(w->pool);
		if (m == NULL || n < 14 || rte_pktmbuf_tailroom(m) < (size_t)n) {
			w->exc_in_drop++;
			rte_pktmbuf_free(m);
			continue;
		}
		memcpy(rte_pktmbuf_mtod(m, uint8_t *), w->linear, (size_t)n);
		m->data_len = (uint16_t)n;
		m->pkt_len = (uint32_t)n;
		w->tx[w->ntx++] = m;
		if (w->ntx == DP_D_TXQ_MAX)
			tx_flush(w);
		w->exc_in++;
		k++;
	}
	w->exc_more = true;
	return k;
}

/* ---- statistics --------------------------------------------------------- */

/* The uint64_t counters of struct dp_stack_stats by slot (offset / 8), so a
 * counter added to stack.h without a name here still shows, as counter_N. */
#define SF(f) [offsetof(struct dp_stack_stats, f) / sizeof(uint64_t)] = #f
static const char *const stat_names[] = {
	SF(rx_frames), SF(tx_frames), SF(tx_nobuf),
	SF(drop_eth_short), SF(drop_eth_type), SF(drop_eth_dst),
	SF(drop_arp_bad), SF(drop_arp_other),
	SF(drop_ip_short), SF(drop_ip_version), SF(drop_ip_hlen), SF(drop_ip_len),
	SF(drop_ip_csum), SF(drop_ip_frag), SF(drop_ip_dst), SF(drop_ip_src), SF(drop_ip_proto),
	SF(drop_icmp_short), SF(drop_icmp_csum), SF(drop_icmp_type),
	SF(drop_tcp_short), SF(drop_tcp_csum), SF(drop_tcp_hlen), SF(drop_tcp_flags),
	SF(drop_tcp_noport), SF(drop_tcp_cookie), SF(drop_tcp_paws), SF(drop_tcp_seq),
	SF(drop_tcp_ack), SF(drop_tcp_rst), SF(drop_tcp_syn), SF(drop_tcp_state),
	SF(arp_requests_out), SF(arp_replies_out), SF(arp_replies_in), SF(arp_queue_drop),
	SF(arp_full), SF(arp_timeout),
	SF(icmp_echo_out),
	SF(tcp_syn_in), SF(tcp_cookies_out), SF(tcp_cookies_ok), SF(tcp_rst_out), SF(tcp_rst_in),
	SF(tcp_challenge_ack), SF(tcp_challenge_limited), SF(tcp_conn_full), SF(tcp_accepted),
	SF(tcp_refused), SF(tcp_connects), SF(tcp_established),
	SF(tcp_rexmit_timeout), SF(tcp_fast_rexmit), SF(tcp_segs_rexmit), SF(tcp_persist_probes),
	SF(tcp_ooo_segs), SF(tcp_ooo_drop), SF(tcp_rx_nobuf), SF(tcp_tx_nobuf), SF(tcp_dup_data),
	SF(tcp_delack), SF(tcp_tw_full), SF(tcp_tw_reuse), SF(tcp_timeouts), SF(tcp_sack_skip),
	SF(tcp_segs_in), SF(tcp_segs_out),
	SF(drop_ip6_bad), SF(drop_ip6_dst), SF(drop_ip6_proto), SF(drop_ip6_type), SF(drop_ip6_nd),
	SF(nd_adverts_out), SF(icmp6_echo_out), SF(exception_out),
	SF(tcp_synq_out), SF(tcp_synack_rexmit), SF(tcp_synq_timeout), SF(tcp_synq_ok),
	SF(icmp_unreach), SF(icmp_bad_quote), SF(tcp_pmtu_lowered), SF(icmp_conn_err),
	SF(icmp_soft_err),
};
#undef SF

/* One line: event=dp_stats worker=N conns=N time_wait=N, then every nonzero
 * counter of the stack and of this binding. On the worker's own thread, off
 * the per-frame path (only when asked, and once at the end). */
static void
stats_log(struct dworker *w, bool final)
{
	const struct dp_dpdk_conf *conf = &w->d->conf;
	if (conf->log == NULL || w->st == NULL)
		return;
	const struct dp_stack_stats *ss = dp_stack_stats(w->st);
	char line[3072];
	size_t n = 0;
	n += (size_t)snprintf(line, sizeof(line), "event=dp_stats worker=%u conns=%u time_wait=%u",
	                      w->id, ss->conns, ss->time_wait);
	const uint64_t *ctr = (const uint64_t *)(const void *)ss;
	size_t nctr = offsetof(struct dp_stack_stats, conns) / sizeof(uint64_t);
	for (size_t i = 0; i < nctr && n < sizeof(line); i++) {
		if (ctr[i] == 0)
			continue;
		const char *name = i < sizeof(stat_names) / sizeof(stat_names[0]) ? stat_names[i] : NULL;
		if (name != NULL)
			n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%llu", name,
			                      (unsigned long long)ctr[i]);
		else
			n += (size_t)snprintf(line + n, sizeof(line) - n, " counter_%zu=%llu", i,
			                      (unsigned long long)ctr[i]);
	}
	const struct { const char *name; uint64_t v; } own[] = {
		{ "dpdk_tx_dropped", w->tx_dropped },
		{ "dpdk_rx_chained", w->rx_chained },
		{ "dpdk_dispatch_out", w->disp_out },
		{ "dpdk_dispatch_in", w->disp_in },
		{ "dpdk_dispatch_copies", w->disp_copies },
		{ "dpdk_dispatch_drop", w->disp_drop },
		{ "dpdk_tx_via", w->tx_via_frames },
		{ "dpdk_tx_via_drop", w->tx_via_drop },
		{ "dpdk_arp_quiet", w->arp_quiet },
		{ "dpdk_exception_out", w->exc_out },
		{ "dpdk_exception_drop", w->exc_drop },
		{ "dpdk_exception_copies", w->exc_copies },
		{ "dpdk_exception_in", w->exc_in },
		{ "dpdk_exception_in_drop", w->exc_in_drop },
	};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]) && n < sizeof(line); i++)
		if (own[i].v != 0)
			n += (size_t)snprintf(line + n, sizeof(line) - n, " %s=%llu", own[i].name,
			                      (unsigned long long)own[i].v);
	if (final && n < sizeof(line))
		snprintf(line + n, sizeof(line) - n, " final=1");
	conf->log(conf->log_ctx, line);
}

/* ---- dispatch ---------------------------------------------------------- */

/* Which worker a received frame is for (see dpdk.h, "Dispatch"):
 *   IPv4/TCP, not a fragment: with software dispatch the owner of the flow
 *     (keyed hash of peer address, peer port, local port), with RSS the
 *     receiving worker (the NIC chose it);
 *   ARP requests and replies, ICMP destination unreachable (it may carry a
 *     path MTU or end an active open of any worker's): every worker (each stack learns the peer's MAC; only the receiving
 *     worker's answer to a request leaves, see io_tx_send);
 *   the rest (ICMP echo, IPv6 ND and ping, fragments, frames that fail
 *     validation): the receiving worker, whose stack answers or counts the
 *     drop. */
static inline uint32_t
flow_owner(const struct dp_dpdk *d, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	uint64_t k = ((uint64_t)faddr << 32 | (uint64_t)fport << 16 | lport) ^ d->flow_key;
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return (uint32_t)(((k & 0xffffffffu) * d->nworkers) >> 32);
}

static uint32_t
classify(const struct dp_dpdk *d, const struct rte_mbuf *m)
{
	if (m->data_len < 14 + 20)
		return DP_D_NO_OWNER;
	const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
	uint16_t type = (uint16_t)(p[12] << 8 | p[13]);
	if (type == RTE_ETHER_TYPE_ARP)  /* requests and replies */
		return p[14 + 6] == 0 && (p[14 + 7] == 1 || p[14 + 7] == 2) ? DP_D_ALL
		                                                             : DP_D_NO_OWNER;
	if (type != RTE_ETHER_TYPE_IPV4)
		return DP_D_NO_OWNER;
	const uint8_t *ip = p + 14;
	unsigned hl = (ip[0] & 15u) * 4u;
	if ((ip[0] >> 4) != 4 || hl < 20 || m->data_len < 14 + hl + 4)
		return DP_D_NO_OWNER;
	if ((ip[6] & 0x3fu) != 0 || ip[7] != 0)  /* MF or an offset: a fragment */
		return DP_D_NO_OWNER;
	const uint8_t *l4 = ip + hl;
	if (ip[9] == IPPROTO_ICMP)
		return l4[0] == 3 ? DP_D_ALL : DP_D_NO_OWNER;
	if (ip[9] != IPPROTO_TCP || !d->sw_dispatch)
		return DP_D_NO_OWNER;
	uint32_t faddr = (uint32_t)ip[12] << 24 | (uint32_t)ip[13] << 16 | (uint32_t)ip[14] << 8 | ip[15];
	return flow_owner(d, faddr, (uint16_t)(l4[0] << 8 | l4[1]), (uint16_t)(l4[2] << 8 | l4[3]));
}

static void rx_frame(struct dworker *w, struct rte_mbuf *m);

static inline void
stage_put(struct dworker *w, unsigned to, struct rte_mbuf *m)
{
	/* At most one entry per frame of one RX burst: never overflows. */
	w->stage[to * DP_D_BURST + w->nstage[to]++] = m;
}

/* A frame from our RX queue: ours (handed to our stack now), another
 * worker's or everyone's (staged; stage_flush() after the burst). Frees or
 * passes on our reference to m. */
static void
rx_dispatch(struct dworker *w, struct rte_mbuf *m)
{
	struct dp_dpdk *d = w->d;
	uint32_t to = classify(d, m);
	if (to == DP_D_ALL) {
		rte_pktmbuf_refcnt_update(m, (int16_t)(d->nworkers - 1));
		for (unsigned i = 0; i < d->nworkers; i++)
			if (i != w->id)
				stage_put(w, i, m);
		w->disp_copies += d->nworkers - 1;
	} else if (to != DP_D_NO_OWNER && to != w->id) {
		stage_put(w, to, m);
		w->disp_out++;
		return;
	}
	rx_frame(w, m);
	rte_pktmbuf_free(m);
}

/* The staged frames into the other workers' inboxes, one burst each; what
 * a full inbox refuses is dropped (the owner is behind: as a full RX
 * queue would). */
static void
stage_flush(struct dworker *w)
{
	struct dp_dpdk *d = w->d;
	for (unsigned i = 0; i < d->nworkers; i++) {
		unsigned n = w->nstage[i];
		if (n == 0)
			continue;
		struct rte_mbuf **m = w->stage + i * DP_D_BURST;
		unsigned k = rte_ring_mp_enqueue_burst(d->w[i]->inbox, (void **)m, n, NULL);
		if (k < n) {
			w->disp_drop += n - k;
			rte_pktmbuf_free_bulk(m + k, n - k);
		}
		w->nstage[i] = 0;
	}
}

/* ---- the loop ---------------------------------------------------------- */

static void
rx_frame(struct dworker *w, struct rte_mbuf *m)
{
	if (m->nb_segs == 1) {
		dp_stack_input(w->st, rte_pktmbuf_mtod(m, const uint8_t *), m->data_len);
		return;
	}
	w->rx_chained++;
	if (m->pkt_len > sizeof(w->linear))
		return;
	const void *p = rte_pktmbuf_read(m, 0, m->pkt_len, w->linear);
	if (p != NULL)
		dp_stack_input(w->st, p, m->pkt_len);
}

static int
worker_loop(void *arg)
{
	struct dworker *w = arg;
	struct dp_dpdk *d = w->d;
	struct rte_mbuf *rx[DP_D_BURST];
	unsigned empty = 0;

	w->base.now = mono_ms();
	w->app = d->ops->worker_init(d->app, &w->base, w->id);
	w->st = dp_stack_new(&d->sconf, d->exc_fd >= 0 ? &d_io_exc : &d_io, w, &w->base, d->ops,
	                     w->app);
	if (w->st == NULL) {
		/* Cannot serve: the start-up check (dp_stack_new in start) makes
		 * this unreachable short of memory running out since. */
		d->ops->worker_fini(w->app);
		return -1;
	}
	while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
		unsigned n = w->rxq ? rte_eth_rx_burst(d->port, w->queue, rx, DP_D_BURST) : 0;
		w->base.now = mono_ms();
		for (unsigned i = 0; i < n; i++) {
			if (i + 1 < n)
				rte_prefetch0(rte_pktmbuf_mtod(rx[i + 1], void *));
			if (d->nworkers > 1) {
				rx_dispatch(w, rx[i]);
			} else {
				rx_frame(w, rx[i]);
				rte_pktmbuf_free(rx[i]);
			}
		}
		if (n > 0 && d->nworkers > 1)
			stage_flush(w);
		/* Every other poller may have handed us a burst this pass. */
		w->in_inbox = true;
		for (int b = 0; w->inbox != NULL && b < DP_D_DRAIN_BURSTS; b++) {
			unsigned k = rte_ring_sc_dequeue_burst(w->inbox, (void **)rx, DP_D_BURST, NULL);
			w->disp_in += k;
			for (unsigned i = 0; i < k; i++) {
				/* A copied ARP frame: our stack learns from it, and its
				 * answer is the receiving worker's to send. */
				w->arp_copy = rx[i]->data_len >= 14 &&
				              rte_pktmbuf_mtod(rx[i], const struct rte_ether_hdr *)
				                      ->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
				rx_frame(w, rx[i]);
				w->arp_copy = false;
				rte_pktmbuf_free(rx[i]);
			}
			n += k;
			if (k < DP_D_BURST)
				break;
		}
		w->in_inbox = false;
		if (atomic_load_explicit(&w->wake_pending, memory_order_relaxed) &&
		    atomic_exchange_explicit(&w->wake_pending, 0, memory_order_acquire))
			d->ops->wake(w->app);
		dp_stack_poll(w->st);
		if (unlikely(d->exc_fd >= 0) && w->id == 0 &&
		    (w->exc_more || w->base.now != w->exc_last_ms))
			exc_pull(w);
		bool sent = w->ntx > 0;
		if (sent)
			tx_flush(w);
		if (w->txbox != NULL && txbox_drain(w) > 0)
			sent = true;
		if (d->ops->idle != NULL)
			d->ops->idle(w->app);
		unsigned gen = atomic_load_explicit(&d->stats_gen, memory_order_relaxed);
		if (gen != w->stats_seen) {
			w->stats_seen = gen;
			stats_log(w, false);
		}
		if (n > 0 || sent) {
			empty = 0;
		} else if (++empty >= DP_D_IDLE_SPINS) {
			/* Nothing for a while: nap, but never past a timer. */
			uint64_t ms = dp_stack_idle_ms(w->st, 1);
			if (ms > 0) {
				struct timespec ts = { 0, DP_DPDK_NAP_US * 1000L };
				nanosleep(&ts, NULL);
			}
		}
	}
	stats_log(w, true);
	w->st = dp_stack_free(w->st);
	if (w->ntx > 0)
		tx_flush(w);  /* through another's box: d_free frees what is left */
	d->ops->worker_fini(w->app);
	return 0;
}

static void *
worker_thread(void *arg)
{
	struct dworker *w = arg;
	if (rte_thread_register() < 0) {
		/* No lcore id: mempool caches are bypassed, nothing else. */
	}
	worker_loop(w);
	rte_thread_unregister();
	return NULL;
}

/* ---- start and stop ---------------------------------------------------- */

static int
eal_init(const char *args, char *err, size_t errlen)
{
	char *copy = strdup(args != NULL ? args : "");
	char *argv[DP_D_ARGV_MAX + 2];
	int argc = 0;
	if (copy == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	argv[argc++] = "sluiced";
	for (char *save = NULL, *t = strtok_r(copy, " \t", &save); t != NULL;
	     t = strtok_r(NULL, " \t", &save)) {
		if (argc == DP_D_ARGV_MAX) {
			snprintf(err, errlen, "dpdk.eal: more than %d arguments", DP_D_ARGV_MAX - 1);
			free(copy);
			return -E2BIG;
		}
		argv[argc++] = t;
	}
	argv[argc] = NULL;
	int rc = rte_eal_init(argc, argv);
	int e = rte_errno;
	free(copy);  /* the EAL keeps no pointers into argv after init */
	if (rc < 0) {
		snprintf(err, errlen, "rte_eal_init (dpdk.eal \"%s\"): %s", args ? args : "",
		         rte_strerror(e));
		return -(e ? e : EINVAL);
	}
	return 0;
}

/* EAL interrupt thread: the port's link went up or down. */
static int
link_changed(uint16_t port, enum rte_eth_event_type type, void *arg, void *ret)
{
	(void)type;
	(void)ret;
	struct dp_dpdk *d = arg;
	struct rte_eth_link link;
	memset(&link, 0, sizeof(link));
	rte_eth_link_get_nowait(port, &link);
	d_log(&d->conf, "event=dpdk_link port=%u link=%s speed_mbps=%u duplex=%s", port,
	      link.link_status ? "up" : "down", link.link_speed, link.link_duplex ? "full" : "half");
	return 0;
}

/* With more than one worker: an inbox per worker (frames dispatched to it,
 * ARP replies and ICMP errors copied to it), and a TX box on each worker
 * that lends its TX queue to workers without one (round robin). */
static int
rings_setup(struct dp_dpdk *d, char *err, size_t errlen)
{
	if (d->nworkers < 2)
		return 0;
	unsigned slots = d->conf.ring ? d->conf.ring : DP_D_RING;
	if (getrandom(&d->flow_key, sizeof(d->flow_key), 0) != (ssize_t)sizeof(d->flow_key)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -EIO;
	}
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct dworker *w = d->w[i];
		w->stage = rte_zmalloc("sluice_stage", sizeof(w->stage[0]) * DP_D_BURST * d->nworkers,
		                       RTE_CACHE_LINE_SIZE);
		w->nstage = rte_zmalloc("sluice_nstage", sizeof(w->nstage[0]) * d->nworkers,
		                        RTE_CACHE_LINE_SIZE);
		if (w->stage == NULL || w->nstage == NULL) {
			snprintf(err, errlen, "out of memory for dispatch");
			return -ENOMEM;
		}
		char name[RTE_RING_NAMESIZE];
		snprintf(name, sizeof(name), "sluice_in_%u", i);
		w->inbox = rte_ring_create(name, slots, rte_eth_dev_socket_id(d->port),
		                           RING_F_SC_DEQ | RING_F_EXACT_SZ);
		if (w->inbox == NULL) {
			snprintf(err, errlen, "dispatch ring of %u: %s", slots, rte_strerror(rte_errno));
			return -ENOMEM;
		}
		if (!w->txq) {
			struct dworker *o = d->w[i % d->ntxq];
			w->tx_via = o;
			if (o->txbox == NULL) {
				snprintf(name, sizeof(name), "sluice_tx_%u", o->id);
				o->txbox = rte_ring_create(name, slots, rte_eth_dev_socket_id(d->port),
				                           RING_F_SC_DEQ | RING_F_EXACT_SZ);
				if (o->txbox == NULL) {
					snprintf(err, errlen, "TX ring of %u: %s", slots,
					         rte_strerror(rte_errno));
					return -ENOMEM;
				}
			}
		}
	}
	return 0;
}

static int
port_setup(struct dp_dpdk *d, char *err, size_t errlen)
{
	uint16_t port = d->port;
	struct rte_eth_dev_info info;
	unsigned nq = d->conf.workers;
	int rc;

	if ((rc = rte_eth_dev_info_get(port, &info)) != 0) {
		snprintf(err, errlen, "port %u: dev_info: %s", port, rte_strerror(-rc));
		return rc;
	}
	/* Queues: one pair per worker as far as the port (and dpdk.queues)
	 * allow. With fewer RX queues than workers, or no TCP/IPv4 RSS, the
	 * pollers dispatch in software; a worker without a TX queue sends
	 * through another's (dpdk.h, "Dispatch"). */
	unsigned cap = d->conf.queues ? d->conf.queues : nq;
	unsigned want_q = nq < cap ? nq : cap;
	unsigned nrxq = want_q < info.max_rx_queues ? want_q : info.max_rx_queues;
	unsigned ntxq = want_q < info.max_tx_queues ? want_q : info.max_tx_queues;
	if (nrxq == 0 || ntxq == 0) {
		snprintf(err, errlen, "port %u (%s) has %u RX / %u TX queues", port, info.driver_name,
		         info.max_rx_queues, info.max_tx_queues);
		return -ENOTSUP;
	}
	struct rte_eth_conf pc;
	memset(&pc, 0, sizeof(pc));
	d->rss = nrxq == nq && nq > 1 && !d->conf.software_dispatch &&
	         (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP) != 0;
	d->sw_dispatch = nq > 1 && !d->rss;
	if (nrxq > 1 && (info.flow_type_rss_offloads & RTE_ETH_RSS_NONFRAG_IPV4_TCP) != 0) {
		uint64_t want = RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_IPV4;
		pc.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
		pc.rx_adv_conf.rss_conf.rss_hf = want & info.flow_type_rss_offloads;
	}
	if (info.dev_flags != NULL && (*info.dev_flags & RTE_ETH_DEV_INTR_LSC) != 0)
		pc.intr_conf.lsc = 1;
	/* TX checksum offload where the port has both (RX: the stack checks in
	 * software; a per-frame "verified" flag is future work). */
	const uint64_t csum_tx = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
	d->tx_csum = !d->conf.no_csum_offload && (info.tx_offload_capa & csum_tx) == csum_tx;
	if (d->tx_csum) {
		pc.txmode.offloads |= csum_tx;
		d->sconf.offload |= DP_STACK_TX_CSUM;
	}
	if ((rc = rte_eth_dev_configure(port, (uint16_t)nrxq, (uint16_t)ntxq, &pc)) != 0) {
		snprintf(err, errlen, "port %u: configure: %s", port, rte_strerror(-rc));
		return rc;
	}
	d->nrxq = nrxq;
	d->ntxq = ntxq;
	uint16_t rxd = DP_D_RXD, txd = DP_D_TXD;
	rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
	int sock = rte_eth_dev_socket_id(port);
	for (unsigned i = 0; i < nq; i++) {
		struct dworker *w = d->w[i];
		w->rxq = i < nrxq;
		w->txq = i < ntxq;
		if (w->rxq &&
		    (rc = rte_eth_rx_queue_setup(port, w->queue, rxd, (unsigned)sock, NULL, w->pool)) != 0) {
			snprintf(err, errlen, "port %u: RX queue %u: %s", port, i, rte_strerror(-rc));
			return rc;
		}
		if (w->txq && (rc = rte_eth_tx_queue_setup(port, w->queue, txd, (unsigned)sock, NULL)) != 0) {
			snprintf(err, errlen, "port %u: TX queue %u: %s", port, i, rte_strerror(-rc));
			return rc;
		}
	}
	if ((rc = rings_setup(d, err, errlen)) != 0)
		return rc;
	if (pc.intr_conf.lsc &&
	    rte_eth_dev_callback_register(port, RTE_ETH_EVENT_INTR_LSC, link_changed, d) == 0)
		d->lsc_cb = true;
	if ((rc = rte_eth_dev_start(port)) != 0) {
		snprintf(err, errlen, "port %u: start: %s", port, rte_strerror(-rc));
		return rc;
	}
	d->port_started = true;

	struct rte_ether_addr mac;
	if ((rc = rte_eth_macaddr_get(port, &mac)) != 0) {
		snprintf(err, errlen, "port %u: MAC address: %s", port, rte_strerror(-rc));
		return rc;
	}
	memcpy(d->sconf.mac, mac.addr_bytes, 6);
	uint16_t mtu = 0;
	if (rte_eth_dev_get_mtu(port, &mtu) == 0 && mtu >= 576 && mtu < 1500)
		d->sconf.mtu = mtu;
	char name[RTE_ETH_NAME_MAX_LEN] = "?";
	rte_eth_dev_get_name_by_port(port, name);
	struct rte_eth_link link;
	memset(&link, 0, sizeof(link));
	rte_eth_link_get_nowait(port, &link);
	d_log(&d->conf, "event=dpdk_port port=%u name=%s driver=%s mac=" RTE_ETHER_ADDR_PRT_FMT
	      " workers=%u rx_queues=%u tx_queues=%u port_max_queues=%u/%u rss_offloads=0x%llx "
	      "dispatch=%s tx_csum_offload=%d link=%s speed_mbps=%u duplex=%s link_watch=%s", port, name,
	      info.driver_name, RTE_ETHER_ADDR_BYTES(&mac), nq, nrxq, ntxq, info.max_rx_queues,
	      info.max_tx_queues, (unsigned long long)info.flow_type_rss_offloads,
	      d->rss ? "rss" : d->sw_dispatch ? "software" : "none", d->tx_csum ? 1 : 0,
	      link.link_status ? "up" : "down", link.link_speed,
	      link.link_duplex ? "full" : "half", d->lsc_cb ? "interrupt" : "no");
	return 0;
}

static int
pools_setup(struct dp_dpdk *d, char *err, size_t errlen)
{
	unsigned per_socket[RTE_MAX_NUMA_NODES] = { 0 };
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct dworker *w = d->w[i];
		int s = w->lcore != UINT32_MAX ? (int)rte_lcore_to_socket_id(w->lcore)
		                               : rte_eth_dev_socket_id(d->port);
		if (s < 0 || s >= RTE_MAX_NUMA_NODES)
			s = 0;
		per_socket[s]++;
	}
	for (int s = 0; s < RTE_MAX_NUMA_NODES; s++) {
		if (per_socket[s] == 0)
			continue;
		unsigned ring = d->nworkers > 1 ? (d->conf.ring ? d->conf.ring : DP_D_RING) : 0;
		unsigned n = d->conf.mbufs ? d->conf.mbufs :
		             per_socket[s] * (DP_D_RXD + DP_D_TXD + DP_D_TXQ_MAX + 2 * DP_D_POOL_CACHE +
		                              ring) + 1024;
		char name[RTE_MEMPOOL_NAMESIZE];
		snprintf(name, sizeof(name), "sluice_mbuf_%d", s);
		d->pools[s] = rte_pktmbuf_pool_create(name, n, DP_D_POOL_CACHE, 0,
		                                      RTE_MBUF_DEFAULT_BUF_SIZE, s);
		if (d->pools[s] == NULL) {
			snprintf(err, errlen, "mbuf pool of %u on socket %d: %s (about %u MB: lower "
			         "dpdk.mbufs, or give the EAL more memory: -m with --no-huge, else "
			         "hugepages)", n, s, rte_strerror(rte_errno),
			         (unsigned)(((uint64_t)n * (RTE_MBUF_DEFAULT_BUF_SIZE + 192)) >> 20));
			return -ENOMEM;
		}
	}
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct dworker *w = d->w[i];
		int s = w->lcore != UINT32_MAX ? (int)rte_lcore_to_socket_id(w->lcore)
		                               : rte_eth_dev_socket_id(d->port);
		if (s < 0 || s >= RTE_MAX_NUMA_NODES)
			s = 0;
		w->pool = d->pools[s];
	}
	return 0;
}

static int
stack_conf(struct dp_dpdk *d, char *err, size_t errlen)
{
	struct dp_stack_conf *sc = &d->sconf;
	memset(sc, 0, sizeof(*sc));
	sc->ipv4 = d->conf.ipv4;
	sc->netmask = d->conf.netmask;
	sc->gateway = d->conf.gateway;
	memcpy(sc->ipv6, d->conf.ipv6, sizeof(sc->ipv6));
	sc->conn_max = d->conf.conn_max;
	sc->rx_buf = sc->tx_buf = d->conf.buf_size;
	sc->rx_bufs = sc->tx_bufs = d->conf.bufs;
	sc->time_wait_ms = d->conf.time_wait_ms;
	for (unsigned i = 0; i < d->conf.nlisten; i++) {
		const struct dp_listen *l = &d->conf.listen[i];
		uint16_t port;
		if (l->addr.ss_family == AF_INET)
			port = ntohs(((const struct sockaddr_in *)&l->addr)->sin_port);
		else
			continue;
		bool dup = false;
		for (unsigned j = 0; j < sc->nlisten; j++)
			dup |= sc->listen[j].port == port;
		if (dup)
			continue;
		if (sc->nlisten == DP_STACK_LISTEN_MAX) {
			snprintf(err, errlen, "more than %d listening ports", DP_STACK_LISTEN_MAX);
			return -EINVAL;
		}
		sc->listen[sc->nlisten].port = port;
		sc->listen[sc->nlisten].flags = l->flags;
		sc->nlisten++;
	}
	if (sc->nlisten == 0 && d->conf.nlisten > 0) {  /* none: a client only */
		snprintf(err, errlen, "no IPv4 listen address: the DPDK stack serves IPv4 only");
		return -EINVAL;
	}
	if (sc->ipv4 == 0) {
		snprintf(err, errlen, "no IPv4 address for the DPDK port (dpdk.address)");
		return -EINVAL;
	}
	if (getrandom(sc->secret, sizeof(sc->secret), 0) != (ssize_t)sizeof(sc->secret)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -EIO;
	}
	return 0;
}

static void
ring_free(struct rte_ring *r)
{
	if (r == NULL)
		return;
	void *m;
	while (rte_ring_dequeue(r, &m) == 0)
		rte_pktmbuf_free(m);
	rte_ring_free(r);
}

static void
d_free(struct dp_dpdk *d)
{
	if (d->lsc_cb) {
		/* -EAGAIN: the callback is running on the interrupt thread. */
		for (int i = 0; i < 1000 && rte_eth_dev_callback_unregister(d->port,
		         RTE_ETH_EVENT_INTR_LSC, link_changed, d) == -EAGAIN; i++) {
			struct timespec ts = { 0, 1000000L };
			nanosleep(&ts, NULL);
		}
		d->lsc_cb = false;
	}
	if (d->port_started) {
		rte_eth_dev_stop(d->port);
		rte_eth_dev_close(d->port);
		d->port_started = false;
	}
	for (unsigned i = 0; i < d->nworkers; i++) {
		ring_free(d->w[i]->inbox);
		ring_free(d->w[i]->txbox);
		rte_free(d->w[i]->stage);
		rte_free(d->w[i]->nstage);
		rte_free(d->w[i]);
	}
	for (int s = 0; s < RTE_MAX_NUMA_NODES; s++)
		if (d->pools[s] != NULL)
			rte_mempool_free(d->pools[s]);
	if (d->exc_fd >= 0)
		close(d->exc_fd);  /* the tap interface goes with it */
	free(d);
	rte_eal_cleanup();
}

struct dp_dpdk *
dp_dpdk_start(const struct dp_dpdk_conf *conf, const struct dp_app_ops *ops, void *app,
              char *err, size_t errlen)
{
	int rc;
	err[0] = '\0';
	if (conf->workers == 0 || conf->workers > RTE_MAX_QUEUES_PER_PORT) {
		snprintf(err, errlen, "need 1..%d workers", RTE_MAX_QUEUES_PER_PORT);
		errno = EINVAL;
		return NULL;
	}
	struct dp_dpdk *d = calloc(1, sizeof(*d) + conf->workers * sizeof(d->w[0]));
	if (d == NULL) {
		snprintf(err, errlen, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	d->conf = *conf;
	d->ops = ops;
	d->app = app;
	d->exc_fd = -1;
	if ((rc = stack_conf(d, err, errlen)) != 0) {
		free(d);
		errno = -rc;
		return NULL;
	}
	if ((rc = eal_init(conf->eal, err, errlen)) != 0) {
		free(d);
		errno = -rc;
		return NULL;
	}
	uint16_t avail = rte_eth_dev_count_avail();
	if (conf->port >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)conf->port)) {
		snprintf(err, errlen, "no DPDK port %u (%u available; a --vdev or an allow-listed "
		         "device in dpdk.eal makes one)", conf->port, avail);
		rc = -ENODEV;
		goto fail;
	}
	d->port = (uint16_t)conf->port;

	/* Workers on EAL worker lcores if there are enough, else on threads. */
	unsigned nlc = rte_lcore_count() - 1;
	unsigned lc = RTE_MAX_LCORE;
	for (unsigned i = 0; i < conf->workers; i++) {
		struct dworker *w = rte_zmalloc("sluice_worker", sizeof(*w), RTE_CACHE_LINE_SIZE);
		if (w == NULL) {
			snprintf(err, errlen, "out of memory for worker %u", i);
			rc = -ENOMEM;
			goto fail;
		}
		w->base.ops = &d_worker_ops;
		w->d = d;
		w->id = i;
		w->queue = (uint16_t)i;
		w->lcore = UINT32_MAX;
		if (nlc >= conf->workers) {
			lc = rte_get_next_lcore(lc, 1, 0);
			w->lcore = lc;
		}
		d->w[i] = w;
		d->nworkers = i + 1;
	}
	if ((rc = pools_setup(d, err, errlen)) != 0 || (rc = port_setup(d, err, errlen)) != 0)
		goto fail;
	if (conf->exception_tap) {
		const char *ifname = conf->exception_iface != NULL ? conf->exception_iface
		                                                   : "sluice-exc0";
		rc = dp_exc_tap_open(ifname, d->sconf.mac, d->sconf.mtu ? d->sconf.mtu : 1500, err,
		                     errlen);
		if (rc < 0)
			goto fail;
		d->exc_fd = rc;
		rc = 0;
		d_log(&d->conf, "event=dpdk_exception mode=tap iface=%s", ifname);
	}
	/* Catch a bad stack configuration here, not on a worker. */
	struct dp_stack *probe = dp_stack_new(&d->sconf, &d_io, d->w[0], &d->w[0]->base, ops, NULL);
	if (probe == NULL) {
		snprintf(err, errlen, "TCP stack: %s", strerror(errno));
		rc = -errno;
		goto fail;
	}
	dp_stack_free(probe);

	for (unsigned i = 0; i < d->nworkers; i++) {
		struct dworker *w = d->w[i];
		if (w->lcore != UINT32_MAX)
			rc = -rte_eal_remote_launch(worker_loop, w, w->lcore);
		else
			rc = -pthread_create(&w->thread, NULL, worker_thread, w);
		if (rc != 0) {
			snprintf(err, errlen, "starting worker %u: %s", i, strerror(-rc));
			atomic_store(&d->stop, true);
			for (unsigned j = 0; j < i; j++) {
				if (d->w[j]->lcore != UINT32_MAX)
					rte_eal_wait_lcore(d->w[j]->lcore);
				else
					pthread_join(d->w[j]->thread, NULL);
			}
			goto fail;
		}
		w->thread_started = true;
	}
	return d;
fail:
	d_free(d);
	errno = rc < 0 ? -rc : EINVAL;
	return NULL;
}

void
dp_dpdk_stats_request(struct dp_dpdk *d)
{
	if (d != NULL)
		atomic_fetch_add_explicit(&d->stats_gen, 1, memory_order_relaxed);
}

struct dp_dpdk *
dp_dpdk_stop(struct dp_dpdk *d)
{
	if (d == NULL)
		return NULL;
	atomic_store(&d->stop, true);
	for (unsigned i = 0; i < d->nworkers; i++) {
		struct dworker *w = d->w[i];
		if (!w->thread_started)
			continue;
		if (w->lcore != UINT32_MAX)
			rte_eal_wait_lcore(w->lcore);
		else
			pthread_join(w->thread, NULL);
	}
	d_free(d);
	return NULL;
}
