/*
 * tcp_conn.c - connection objects: the flow table (a per-stack chained hash
 * on the peer address and ports, keyed so that peers cannot aim at one
 * chain), the connection and buffer pools, the dp_conn operations seen by
 * the application, ISNs (RFC 6528), SYN cookies (RFC 4987), active opens
 * and TIME_WAIT bookkeeping.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>

#include "dataplane/stack_impl.h"

static uint32_t
flow_hash(const struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	/* SipHash-1-3: a table key, not a secret (ISNs, cookies: 2-4 below) */
	uint64_t m = (uint64_t)faddr << 32 | (uint64_t)fport << 16 | lport;
	return (uint32_t)dp_siphash13_u64(st->flow_k[0], st->flow_k[1], m) & st->hmask;
}

struct dp_tcb *
dp_tcp_lookup(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	for (struct dp_tcb *c = st->htab[flow_hash(st, faddr, fport, lport)]; c; c = c->hnext)
		if (c->faddr == faddr && c->fport == fport && c->lport == lport)
			return c;
	return NULL;
}

int
dp_tcp_listener(const struct dp_stack *st, uint16_t port)
{
	for (unsigned i = 0; i < st->conf.nlisten; i++)
		if (st->conf.listen[i].port == port)
			return (int)i;
	return -1;
}

static void tw_unlink(struct dp_tcb *c);

static void c_flush(struct dp_conn *dc);
static void c_close(struct dp_conn *dc);
static void c_abort(struct dp_conn *dc);
static void c_timer(struct dp_conn *dc, uint64_t deadline);
static void c_rx_resume(struct dp_conn *dc);

static const struct dp_conn_ops tcb_ops = {
	.flush = c_flush,
	.close = c_close,
	.abort = c_abort,
	.timer = c_timer,
	.rx_resume = c_rx_resume,
};

struct dp_tcb *
dp_tcp_alloc(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	struct dp_tcb *c = st->free_tcb;
	if (c == NULL && st->tw_head != NULL) {
		/* Out of connections: the oldest TIME_WAIT makes room. */
		st->stats.tcp_tw_reuse++;
		dp_tcp_release(st->tw_head);
		c = st->free_tcb;
	}
	if (c == NULL) {
		st->stats.tcp_conn_full++;
		return NULL;
	}
	st->free_tcb = c->hnext;
	memset(c, 0, sizeof(*c));
	c->base.ops = &tcb_ops;
	c->st = st;
	c->faddr = faddr;
	c->fport = fport;
	c->lport = lport;
	c->rto = 1000;
	c->rcv_wscale = 0;
	uint32_t h = flow_hash(st, faddr, fport, lport);
	c->hnext = st->htab[h];
	st->htab[h] = c;
	st->stats.conns++;
	return c;
}

/* Back to the pool. Never while a callback for c runs. */
void
dp_tcp_release(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	if (c->released)
		return;
	struct dp_tcb **pp = &st->htab[flow_hash(st, c->faddr, c->fport, c->lport)];
	while (*pp != NULL && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp == c)
		*pp = c->hnext;
	if (c->tw_prev != NULL || st->tw_head == c)
		tw_unlink(c);
	dp_timer_cancel(&st->wheel, &c->t_tcp);
	dp_timer_cancel(&st->wheel, &c->t_app);
	dp_tcp_rx_put(c);
	dp_tcp_tx_put(c);
	dp_tcp_synq_leave(c);
	c->state = DP_TCP_CLOSED;
	c->released = 1;
	c->app = NULL;
	c->hnext = st->free_tcb;
	st->free_tcb = c;
	st->stats.conns--;
}

/* The application's last callback. */
void
dp_tcp_detach(struct dp_tcb *c, int err)
{
	if (c->app_gone)
		return;
	c->app_gone = 1;
	dp_timer_cancel(&c->st->wheel, &c->t_app);
	void *app = c->app;
	c->app = NULL;
	if (app != NULL) {
		c->in_cb++;
		c->st->ops->closed(app, err);
		c->in_cb--;
	}
}

static void
tw_unlink(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	if (c->tw_prev)
		c->tw_prev->tw_next = c->tw_next;
	else
		st->tw_head = c->tw_next;
	if (c->tw_next)
		c->tw_next->tw_prev = c->tw_prev;
	else
		st->tw_tail = c->tw_prev;
	c->tw_next = c->tw_prev = NULL;
	st->stats.time_wait--;
}

/* RFC 9293 3.10.7.4: TIME_WAIT, bounded in time (conf.time_wait_ms; a
 * reincarnation is protected by clock-driven ISNs and PAWS) and in number
 * (conf.time_wait_max; beyond it the connection goes at once). */
void
dp_tcp_enter_time_wait(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	dp_tcp_detach(c, 0);
	dp_tcp_rx_put(c);
	dp_tcp_tx_put(c);
	if (st->stats.time_wait >= st->conf.time_wait_max) {
		st->stats.tcp_tw_full++;
		dp_tcp_send_ack(c);  /* the peer's FIN: settle sends nothing once CLOSED */
		c->state = DP_TCP_CLOSED;  /* released by the caller's settle */
		return;
	}
	c->state = DP_TCP_TIME_WAIT;
	c->tw_prev = st->tw_tail;
	c->tw_next = NULL;
	if (st->tw_tail)
		st->tw_tail->tw_next = c;
	else
		st->tw_head = c;
	st->tw_tail = c;
	st->stats.time_wait++;
	c->dack_at = 0;
	c->persist = 0;
	c->rto_at = dp_now(st) + st->conf.time_wait_ms;
	dp_tcp_arm(c);
}

void
dp_tcp_arm(struct dp_tcb *c)
{
	uint64_t at = c->rto_at;
	if (c->dack_at != 0 && (at == 0 || c->dack_at < at))
		at = c->dack_at;
	if (at == 0)
		dp_timer_cancel(&c->st->wheel, &c->t_tcp);
	else if (!dp_timer_armed(&c->t_tcp) || c->t_tcp.deadline != at)
		dp_timer_arm(&c->st->wheel, &c->t_tcp, at);
}

/* ---- keyed functions: ISN, timestamp offset, cookies ---- */

static uint64_t
tuple_hash(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport, uint32_t extra,
           uint32_t extra2, uint8_t tag)
{
	uint8_t k[21];
	wr32(k, st->conf.ipv4);
	wr32(k + 4, faddr);
	wr16(k + 8, fport);
	wr16(k + 10, lport);
	wr32(k + 12, extra);
	wr32(k + 16, extra2);
	k[20] = tag;
	return dp_siphash(st->sip_k0, st->sip_k1, k, sizeof(k));
}

/* RFC 6528: ISN = M + F(4-tuple, secret), M a 4 us clock. */
uint32_t
dp_tcp_isn(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	return (uint32_t)(dp_now(st) * 250u) + (uint32_t)tuple_hash(st, faddr, fport, lport, 0, 0, 1);
}

/* RFC 7323 5.4: a per-connection random offset for TSval. It only hides
 * the clock and keeps connections apart, so a keyed SipHash-1-3 of the
 * 4-tuple (our address is fixed per stack) serves, with a key of its own;
 * the ISN and the cookie MAC keep SipHash-2-4. Called twice per cookie
 * connection (SYN-ACK, then the ACK), once per SYN-queue one. */
uint32_t
dp_tcp_ts_off(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport)
{
	uint64_t m = (uint64_t)faddr << 32 | (uint64_t)fport << 16 | lport;
	return (uint32_t)dp_siphash13_u64(st->ts_k[0], st->ts_k[1], m);
}

static const uint16_t cookie_mss[8] = { 536, 1200, 1300, 1380, 1400, 1440, 1460, 8960 };

/* Cookie ISN: [5 bits: 64 s clock][3 bits: MSS index][24 bits: MAC over
 * the 4-tuple, the peer's ISN, the clock, the MSS index and the option
 * bits carried in the TSval]. Valid for the current and previous period. */
uint32_t
dp_tcp_cookie_make(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport,
                   uint32_t peer_isn, uint16_t peer_mss, uint8_t opts, uint16_t *mss_out)
{
	uint32_t t = (uint32_t)(dp_now(st) / 64000u) & 31u;
	uint32_t idx = 0;
	for (uint32_t i = 0; i < 8; i++)
		if (cookie_mss[i] <= peer_mss)
			idx = i;
	uint32_t mac = (uint32_t)tuple_hash(st, faddr, fport, lport, peer_isn,
	                                    t << 16 | idx << 8 | opts, 3) & 0xffffffu;
	uint16_t m = cookie_mss[idx];
	*mss_out = m < st->mss_local ? m : st->mss_local;
	return t << 27 | idx << 24 | mac;
}

int
dp_tcp_cookie_check(struct dp_stack *st, uint32_t faddr, uint16_t fport, uint16_t lport,
                    uint32_t peer_isn, uint32_t cookie, uint8_t opts, uint16_t *mss_out)
{
	uint32_t now_t = (uint32_t)(dp_now(st) / 64000u) & 31u;
	uint32_t t = cookie >> 27, idx = (cookie >> 24) & 7u;
	if (((now_t - t) & 31u) > 1)
		return -1;
	uint32_t mac = (uint32_t)tuple_hash(st, faddr, fport, lport, peer_isn,
	                                    t << 16 | idx << 8 | opts, 3) & 0xffffffu;
	if (mac != (cookie & 0xffffffu))
		return -1;
	uint16_t m = cookie_mss[idx];
	*mss_out = m < st->mss_local ? m : st->mss_local;
	return 0;
}

/* ---- buffers ---- */

struct dp_rxbuf *
dp_tcp_rx_get(struct dp_tcb *c)
{
	if (c->rx != NULL)
		return c->rx;
	struct dp_stack *st = c->st;
	struct dp_rxbuf *b = st->free_rx;
	if (b == NULL) {
		st->stats.tcp_rx_nobuf++;
		return NULL;
	}
	st->free_rx = b->next_free;
	b->head = b->held = 0;
	b->nooo = 0;
	c->rx = b;
	return b;
}

void
dp_tcp_rx_put(struct dp_tcb *c)
{
	if (c->rx == NULL)
		return;
	c->rx->next_free = c->st->free_rx;
	c->st->free_rx = c->rx;
	c->rx = NULL;
}

struct dp_txbuf *
dp_tcp_tx_get(struct dp_tcb *c)
{
	if (c->tx != NULL)
		return c->tx;
	struct dp_stack *st = c->st;
	struct dp_txbuf *b = st->free_tx;
	if (b == NULL) {
		st->stats.tcp_tx_nobuf++;
		return NULL;
	}
	st->free_tx = b->next_free;
	b->head = b->len = 0;
	b->nsacked = 0;
	c->tx = b;
	return b;
}

void
dp_tcp_tx_put(struct dp_tcb *c)
{
	if (c->tx == NULL)
		return;
	c->tx->next_free = c->st->free_tx;
	c->st->free_tx = c->tx;
	c->tx = NULL;
}

/* ---- receive side towards the application ---- */

static void
rx_write(struct dp_stack *st, struct dp_rxbuf *b, uint32_t idx, const uint8_t *p, uint32_t n)
{
	uint32_t size = st->conf.rx_buf;
	idx %= size;
	uint32_t a = size - idx < n ? size - idx : n;
	memcpy(b->data + idx, p, a);
	memcpy(b->data, p + a, n - a);
}

static size_t
app_recv(struct dp_tcb *c, const uint8_t *p, size_t n)
{
	if (c->app_gone || c->closing || c->aborting)
		return n;  /* nobody to read: discard */
	c->in_cb++;
	size_t took = c->st->ops->recv(c->app, p, n);
	c->in_cb--;
	return took > n ? n : took;
}

/* In-order bytes at rcv_nxt, with nothing held before them: straight to
 * the application, the rest into the ring. Advances rcv_nxt by what was
 * accepted (all of it unless no ring is free), then joins any out-of-order
 * data now contiguous. */
void
dp_tcp_deliver(struct dp_tcb *c, const uint8_t *p, uint32_t n)
{
	struct dp_stack *st = c->st;
	uint32_t took = 0;
	if (c->rx == NULL || c->rx->held == 0)
		took = (uint32_t)app_recv(c, p, n);
	if (took < n || c->rx != NULL) {
		struct dp_rxbuf *b = dp_tcp_rx_get(c);
		if (b == NULL) {
			c->rcv_nxt += took;  /* the rest is dropped: the peer sends it again */
			return;
		}
		if (b->held == 0)
			b->head = (b->head + took) % st->conf.rx_buf;
		else
			took = 0;
		rx_write(st, b, b->head + b->held, p + took, n - took);
		b->held += n - took;
	}
	c->rcv_nxt += n;
	struct dp_rxbuf *b = c->rx;
	if (b != NULL && b->nooo > 0 && SEQ_LEQ(b->ooo[0].start, c->rcv_nxt)) {
		if (SEQ_GT(b->ooo[0].end, c->rcv_nxt)) {
			b->held += b->ooo[0].end - c->rcv_nxt;
			c->rcv_nxt = b->ooo[0].end;
		}
		b->nooo--;
		memmove(&b->ooo[0], &b->ooo[1], b->nooo * sizeof(b->ooo[0]));
		c->ack_now = 1;  /* a hole filled: ACK at once (RFC 5681 4.2) */
	}
	dp_tcp_offer_held(c);
}

/* Offer held bytes again; free the ring once empty. */
void
dp_tcp_offer_held(struct dp_tcb *c)
{
	struct dp_rxbuf *b = c->rx;
	if (b == NULL)
		return;
	uint32_t size = c->st->conf.rx_buf;
	uint32_t before = b->held;
	while (b->held > 0) {
		uint32_t piece = size - b->head < b->held ? size - b->head : b->held;
		uint32_t took = (uint32_t)app_recv(c, b->data + b->head, piece);
		b->head = (b->head + took) % size;
		b->held -= took;
		if (took < piece || c->rx == NULL)
			break;
	}
	if (b->held == 0 && b->nooo == 0)
		dp_tcp_rx_put(c);
	/* Window update once it has opened by two segments or from zero
	 * (RFC 9293 3.8.6.2.2: receiver-side silly window avoidance). */
	if (before != b->held && (c->zero_wnd_sent || before - (c->rx ? b->held : 0) >= 2u * c->mss))
		c->ack_now = 1;
}

/* ---- settle: after any callback or event ---- */

static void
pull_output(struct dp_tcb *c, bool *app_done)
{
	struct dp_stack *st = c->st;
	*app_done = false;
	for (int round = 0; round < 64; round++) {
		if (c->app_gone || c->aborting)
			return;
		struct dp_txbuf *b = c->tx;
		if (b != NULL && b->len >= st->conf.tx_buf)
			return;  /* full: the application keeps the rest */
		const uint8_t *p;
		size_t n = st->ops->pull(c->app, &p);
		if (n == 0) {
			*app_done = true;
			return;
		}
		if ((b = dp_tcp_tx_get(c)) == NULL) {
			/* No send buffer free: try again shortly. */
			if (c->rto_at == 0) {
				c->want_tx = 1;
				c->rto_at = dp_now(st) + 10;
				dp_tcp_arm(c);
			}
			return;
		}
		uint32_t size = st->conf.tx_buf;
		uint32_t room = size - b->len;
		uint32_t k = n < room ? (uint32_t)n : room;
		uint32_t idx = (b->head + b->len) % size;
		uint32_t a = size - idx < k ? size - idx : k;
		memcpy(b->data + idx, p, a);
		memcpy(b->data, p + a, k - a);
		b->len += k;
		c->in_cb++;
		st->ops->sent(c->app, k);
		c->in_cb--;
	}
}

void
dp_tcp_settle(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	if (c->in_cb > 0 || c->released)
		return;
	if (c->aborting && !c->app_gone) {
		if (c->state != DP_TCP_SYN_SENT && c->state != DP_TCP_CLOSED)
			dp_tcp_send_rst(st, c->faddr, c->lport, c->fport, c->snd_nxt, 0, DP_TH_RST);
		c->state = DP_TCP_CLOSED;
		dp_tcp_detach(c, 0);
	}
	bool sendable = c->state == DP_TCP_ESTABLISHED || c->state == DP_TCP_CLOSE_WAIT;
	if (sendable && !c->app_gone) {
		bool app_done = false;
		for (int round = 0; round < 16; round++) {
			pull_output(c, &app_done);
			if (c->rx == NULL || c->rx->held == 0 || c->closing || c->aborting || c->app_gone)
				break;
			uint32_t left = c->rx->held;
			dp_tcp_offer_held(c);
			if (c->rx != NULL && c->rx->held == left)  /* all taken: pull once more */
				break;
		}
		if (c->aborting) {
			dp_tcp_settle(c);
			return;
		}
		bool held = c->rx != NULL && c->rx->held > 0;
		/* Close after the application's output is all in our buffer;
		 * a peer FIN closes once its data was all taken, after one more
		 * pull (as the kernel transport does). */
		if ((app_done && c->closing) || (c->eof && !held)) {
			c->fin_queued = 1;
			dp_tcp_detach(c, c->closing ? 0 : -ECONNRESET);
			if (c->rx != NULL && c->rx->nooo == 0)
				dp_tcp_rx_put(c);
		}
	}
	if (c->state != DP_TCP_CLOSED)
		dp_tcp_output(c);
	if (c->state == DP_TCP_CLOSED) {
		dp_tcp_detach(c, -ECONNRESET);
		dp_tcp_release(c);
	}
}

/* ---- the application's handle ---- */

static void
c_flush(struct dp_conn *dc)
{
	dp_tcp_settle((struct dp_tcb *)dc);
}

static void
c_close(struct dp_conn *dc)
{
	struct dp_tcb *c = (struct dp_tcb *)dc;
	c->closing = 1;
	if (c->state == DP_TCP_SYN_SENT)
		c->aborting = 1;  /* nothing sent yet: just go */
	dp_tcp_settle(c);
}

static void
c_abort(struct dp_conn *dc)
{
	struct dp_tcb *c = (struct dp_tcb *)dc;
	c->aborting = 1;
	dp_tcp_settle(c);
}

static void
c_timer(struct dp_conn *dc, uint64_t deadline)
{
	struct dp_tcb *c = (struct dp_tcb *)dc;
	if (c->app_gone)
		return;
	if (deadline == UINT64_MAX)
		dp_timer_cancel(&c->st->wheel, &c->t_app);
	else if (!dp_timer_armed(&c->t_app) || c->t_app.deadline != deadline)
		dp_timer_arm(&c->st->wheel, &c->t_app, deadline);
}

static void
c_rx_resume(struct dp_conn *dc)
{
	dp_tcp_settle((struct dp_tcb *)dc);
}

size_t
dp_stack_conn_size(void)
{
	return sizeof(struct dp_tcb);
}

/* ---- active open ---- */

struct dp_conn *
dp_stack_connect(struct dp_stack *st, uint32_t ipv4, uint16_t port, void *conn_app)
{
	if (ipv4 == 0 || port == 0 || ipv4 == st->conf.ipv4) {
		errno = EINVAL;
		return NULL;
	}
	uint16_t lport = 0;
	for (unsigned i = 0; i < 28232; i++) {
		uint16_t p = st->next_port;
		st->next_port = p >= 60999 ? 32768 : (uint16_t)(p + 1);
		if (dp_tcp_listener(st, p) < 0 && dp_tcp_lookup(st, ipv4, port, p) == NULL) {
			lport = p;
			break;
		}
	}
	struct dp_tcb *c = lport ? dp_tcp_alloc(st, ipv4, port, lport) : NULL;
	if (c == NULL) {
		errno = EAGAIN;
		return NULL;
	}
	st->stats.tcp_connects++;
	c->app = conn_app;
	c->state = DP_TCP_SYN_SENT;
	c->iss = dp_tcp_isn(st, ipv4, port, lport);
	c->ts_off = dp_tcp_ts_off(st, ipv4, port, lport);
	c->snd_una = c->snd_nxt = c->snd_max = c->iss;
	c->rcv_wscale = st->rcv_wscale;
	c->mss = 536;
	dp_tcp_output(c);
	return &c->base;
}
