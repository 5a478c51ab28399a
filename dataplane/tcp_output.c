/*
 * tcp_output.c - building and sending segments: SYN (active open), the
 * stateless SYN-ACK with its cookie, data with MSS segmentation limited by
 * the peer's window and cwnd (sender silly-window avoidance, RFC 9293
 * 3.8.6.2.1; no Nagle: the application writes whole replies), pure ACKs
 * with timestamps (RFC 7323) and SACK blocks (RFC 2018), RSTs, zero-window
 * probes and single-segment retransmissions.
 */
#include "dataplane/stack_impl.h"

#define OPT_EOL 0
#define OPT_NOP 1
#define OPT_MSS 2
#define OPT_WS 3
#define OPT_SACKOK 4
#define OPT_SACK 5
#define OPT_TS 8

uint32_t
dp_tcp_tsval(const struct dp_tcb *c)
{
	return (uint32_t)dp_now(c->st) + c->ts_off;
}

/* One segment; data from up to two pieces (a ring may wrap). */
static void
emit(struct dp_stack *st, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack,
     uint8_t flags, uint16_t win, const uint8_t *opt, size_t optlen, const uint8_t *d1, size_t n1,
     const uint8_t *d2, size_t n2)
{
	size_t hl = DP_TCP_HLEN + optlen, len = hl + n1 + n2;
	struct dp_txctx tx;
	uint8_t *p = dp_ip_tx_begin(st, dst, len, &tx);
	if (p == NULL)
		return;
	wr16(p, sport);
	wr16(p + 2, dport);
	wr32(p + 4, seq);
	wr32(p + 8, (flags & DP_TH_ACK) ? ack : 0);
	p[12] = (uint8_t)((hl / 4) << 4);
	p[13] = flags;
	wr16(p + 14, win);
	wr16(p + 16, 0);
	wr16(p + 18, 0);
	if (optlen)
		memcpy(p + DP_TCP_HLEN, opt, optlen);
	if (n1)
		memcpy(p + hl, d1, n1);
	if (n2)
		memcpy(p + hl + n1, d2, n2);
	uint32_t sum = dp_ip_pseudo(st->conf.ipv4, dst, DP_PROTO_TCP, len);
	if (st->conf.offload & DP_STACK_TX_CSUM)
		wr16(p + 16, (uint16_t)~dp_csum_fold(sum));
	else
		wr16(p + 16, dp_csum_fold(dp_csum_add(sum, p, len)));
	st->stats.tcp_segs_out++;
	dp_ip_tx_end(st, &tx, DP_PROTO_TCP, len);
}

void
dp_tcp_send_rst(struct dp_stack *st, uint32_t dst, uint16_t sport, uint16_t dport, uint32_t seq,
                uint32_t ack, uint8_t flags)
{
	st->stats.tcp_rst_out++;
	emit(st, dst, sport, dport, seq, ack, flags, 0, NULL, 0, NULL, 0, NULL, 0);
}

static size_t
opt_ts(uint8_t *o, uint32_t val, uint32_t ecr)
{
	o[0] = OPT_NOP;
	o[1] = OPT_NOP;
	o[2] = OPT_TS;
	o[3] = 10;
	wr32(o + 4, val);
	wr32(o + 8, ecr);
	return 12;
}

void
dp_tcp_send_synack_cookie(struct dp_stack *st, uint32_t dst, uint16_t dport, uint16_t lport,
                          const struct dp_tcp_seg *syn)
{
	uint8_t opts = DP_COOKIE_WS_NONE;
	if (syn->has_ts)
		opts = (uint8_t)((syn->wscale != 0xff ? (syn->wscale > 14 ? 14 : syn->wscale) : DP_COOKIE_WS_NONE) |
		                 (syn->sack_perm ? 0x10 : 0));
	uint16_t mss;
	uint32_t cookie = dp_tcp_cookie_make(st, dst, dport, lport, syn->seq,
	                                     syn->has_mss ? syn->mss : 536, opts, &mss);
	uint8_t o[DP_TCP_OPT_MAX];
	size_t n = 0;
	o[n++] = OPT_MSS;
	o[n++] = 4;
	wr16(o + n, st->mss_local);
	n += 2;
	if (syn->has_ts) {
		/* The options we accepted ride in TSval's low bits; the ACK
		 * echoes them in TSecr and the cookie's MAC covers them. */
		uint32_t x = (uint32_t)dp_now(st) + dp_tcp_ts_off(st, dst, dport, lport);
		uint32_t v = (x & ~((1u << DP_COOKIE_TSBITS) - 1)) | opts;
		if (SEQ_GT(v, x))
			v -= 1u << DP_COOKIE_TSBITS;
		n += opt_ts(o + n, v, syn->tsval);
		if (syn->wscale != 0xff) {
			o[n++] = OPT_NOP;
			o[n++] = OPT_WS;
			o[n++] = 3;
			o[n++] = st->rcv_wscale;
		}
		if (syn->sack_perm) {
			o[n++] = OPT_NOP;
			o[n++] = OPT_NOP;
			o[n++] = OPT_SACKOK;
			o[n++] = 2;
		}
	}
	uint32_t w = st->conf.rx_buf > 65535 ? 65535 : st->conf.rx_buf;
	st->stats.tcp_cookies_out++;
	emit(st, dst, lport, dport, cookie, syn->seq + 1, DP_TH_SYN | DP_TH_ACK, (uint16_t)w, o, n,
	     NULL, 0, NULL, 0);
}

/* The window to advertise, scaled; never moves the right edge left
 * (RFC 9293 3.8.6.2.2). Space is the ring minus the bytes held. */
uint16_t
dp_tcp_rcv_window(const struct dp_tcb *c)
{
	const struct dp_stack *st = c->st;
	uint32_t space = st->conf.rx_buf - (c->rx ? c->rx->held : 0);
	uint32_t right = c->rcv_nxt + space;
	if (SEQ_LT(right, c->rcv_adv))
		right = c->rcv_adv;
	uint32_t w = (right - c->rcv_nxt) >> c->rcv_wscale;
	return (uint16_t)(w > 65535 ? 65535 : w);
}

static size_t
seg_options(struct dp_tcb *c, uint8_t *o, bool syn, bool sack)
{
	size_t n = 0;
	if (syn && c->state == DP_TCP_SYN_RCVD) {
		/* SYN-ACK of a half-open entry: only what the SYN offered
		 * (RFC 7323 1.3, 3.2; RFC 2018 2). */
		o[n++] = OPT_MSS;
		o[n++] = 4;
		wr16(o + n, c->st->mss_local);
		n += 2;
		if (c->ws_ok) {
			o[n++] = OPT_NOP;
			o[n++] = OPT_WS;
			o[n++] = 3;
			o[n++] = c->rcv_wscale;
		}
		if (c->sack_ok) {
			o[n++] = OPT_NOP;
			o[n++] = OPT_NOP;
			o[n++] = OPT_SACKOK;
			o[n++] = 2;
		}
		if (c->ts_ok)
			n += opt_ts(o + n, dp_tcp_tsval(c), c->ts_recent);
		return n;
	}
	if (syn) {
		o[n++] = OPT_MSS;
		o[n++] = 4;
		wr16(o + n, c->st->mss_local);
		n += 2;
		o[n++] = OPT_NOP;
		o[n++] = OPT_WS;
		o[n++] = 3;
		o[n++] = c->st->rcv_wscale;
		o[n++] = OPT_NOP;
		o[n++] = OPT_NOP;
		o[n++] = OPT_SACKOK;
		o[n++] = 2;
		n += opt_ts(o + n, dp_tcp_tsval(c), 0);
		return n;
	}
	if (c->ts_ok)
		n += opt_ts(o + n, dp_tcp_tsval(c), c->ts_recent);
	if (sack && c->sack_ok && c->rx != NULL && c->rx->nooo > 0) {
		unsigned k = c->rx->nooo, room = (unsigned)(DP_TCP_OPT_MAX - n - 2) / 8;
		if (k > room)
			k = room;
		o[n++] = OPT_NOP;
		o[n++] = OPT_NOP;
		o[n++] = OPT_SACK;
		o[n++] = (uint8_t)(2 + 8 * k);
		for (unsigned i = 0; i < k; i++) {
			wr32(o + n, c->rx->ooo[i].start);
			wr32(o + n + 4, c->rx->ooo[i].end);
			n += 8;
		}
	}
	return n;
}

/* Payload room in a segment with timestamps (RFC 6691). */
static uint32_t
max_payload(const struct dp_tcb *c)
{
	return c->mss - (c->ts_ok ? 12u : 0u);
}

void
dp_tcp_send_seg(struct dp_tcb *c, uint32_t seq, uint32_t len, uint8_t flags)
{
	struct dp_stack *st = c->st;
	uint8_t o[DP_TCP_OPT_MAX];
	size_t n = seg_options(c, o, flags & DP_TH_SYN, len == 0);
	const uint8_t *d1 = NULL, *d2 = NULL;
	size_t n1 = 0, n2 = 0;
	if (len > 0 && c->tx != NULL) {
		uint32_t size = st->conf.tx_buf;
		uint32_t idx = (c->tx->head + (seq - c->snd_una)) % size;
		n1 = size - idx < len ? size - idx : len;
		d1 = c->tx->data + idx;
		d2 = c->tx->data;
		n2 = len - n1;
	}
	uint16_t win = dp_tcp_rcv_window(c);
	if (flags & DP_TH_SYN)
		win = (uint16_t)(st->conf.rx_buf > 65535 ? 65535 : st->conf.rx_buf);
	emit(st, c->faddr, c->lport, c->fport, seq, c->rcv_nxt, flags, win, o, n, d1, n1, d2, n2);
	if (flags & DP_TH_ACK) {
		if (!(flags & DP_TH_SYN)) {
			c->rcv_adv = c->rcv_nxt + ((uint32_t)win << c->rcv_wscale);
			c->zero_wnd_sent = win == 0;
		}
		c->last_ack_sent = c->rcv_nxt;
		c->ack_now = 0;
		c->dack_segs = 0;
		c->dack_at = 0;
	}
}

/* A pure ACK carries the highest sequence number sent: after a timeout
 * snd_nxt went back to snd_una, and the peer, which may hold data up to
 * snd_max, would find an older number unacceptable and drop the ACK. */
void
dp_tcp_send_ack(struct dp_tcb *c)
{
	dp_tcp_send_seg(c, c->snd_max, 0, DP_TH_ACK);
}

static uint32_t
tx_len(const struct dp_tcb *c)
{
	return c->tx ? c->tx->len : 0;
}

/* Resend the first unacknowledged segment (fast retransmit, NewReno
 * partial ACK). */
void
dp_tcp_retransmit_one(struct dp_tcb *c)
{
	uint32_t avail = tx_len(c);
	uint32_t len = avail < max_payload(c) ? avail : max_payload(c);
	for (unsigned i = 0; c->tx != NULL && i < c->tx->nsacked; i++) {
		if (SEQ_LEQ(c->tx->sacked[i].end, c->snd_una))
			continue;
		if (SEQ_GT(c->tx->sacked[i].start, c->snd_una) && c->tx->sacked[i].start - c->snd_una < len)
			len = c->tx->sacked[i].start - c->snd_una;  /* just the first hole */
		break;
	}
	uint8_t fl = DP_TH_ACK;
	if (c->fin_queued && len == avail && SEQ_GT(c->snd_max, c->snd_una + avail))
		fl |= DP_TH_FIN;
	if (len == 0 && !(fl & DP_TH_FIN))
		return;
	c->st->stats.tcp_segs_rexmit++;
	c->rtt_timing = 0;  /* Karn */
	dp_tcp_send_seg(c, c->snd_una, len, fl);
}

void
dp_tcp_output(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	uint64_t now = dp_now(st);
	switch (c->state) {
	case DP_TCP_SYN_SENT:
		if (c->snd_nxt == c->iss) {
			dp_tcp_send_seg(c, c->iss, 0, DP_TH_SYN);
			c->snd_nxt = c->snd_max = c->iss + 1;
			if (c->rto_at == 0)
				c->rto_at = now + c->rto;
		}
		dp_tcp_arm(c);
		return;
	case DP_TCP_SYN_RCVD:
		/* (Re)send the SYN-ACK; the timer (tcp_timer.c) backs off. */
		if (c->snd_nxt == c->iss) {
			if (c->backoff == 0 && c->rto_at == 0)
				c->rtt_start = (uint32_t)now;
			dp_tcp_send_seg(c, c->iss, 0, DP_TH_SYN | DP_TH_ACK);
			c->snd_nxt = c->snd_max = c->iss + 1;
			if (c->rto_at == 0)
				c->rto_at = now + c->rto;
		}
		c->ack_now = 0;
		dp_tcp_arm(c);
		return;
	case DP_TCP_CLOSED:
		return;
	case DP_TCP_TIME_WAIT:
	case DP_TCP_FIN_WAIT_2:
		if (c->ack_now)
			dp_tcp_send_ack(c);
		dp_tcp_arm(c);
		return;
	default:
		break;
	}
	if (c->fin_queued) {
		if (c->state == DP_TCP_ESTABLISHED)
			c->state = DP_TCP_FIN_WAIT_1;
		else if (c->state == DP_TCP_CLOSE_WAIT)
			c->state = DP_TCP_LAST_ACK;
	}
	uint32_t txlen = tx_len(c);
	uint32_t maxseg = max_payload(c);
	for (int burst = 0; burst < 64; burst++) {
		uint32_t segmax = dp_tcp_sack_clip(c, maxseg);
		uint32_t off = c->snd_nxt - c->snd_una;
		if (off > txlen)
			break;  /* FIN already sent */
		uint32_t wnd = c->snd_wnd < c->cwnd ? c->snd_wnd : c->cwnd;
		uint32_t avail = txlen - off;
		uint32_t usable = SEQ_GT(c->snd_una + wnd, c->snd_nxt) ? c->snd_una + wnd - c->snd_nxt : 0;
		uint32_t len = avail < usable ? avail : usable;
		if (len > segmax)
			len = segmax;
		bool fin = c->fin_queued && len == avail;
		if (len == 0 && !fin)
			break;
		/* Sender SWS avoidance: a short segment only if it carries all
		 * we have, or half the largest window the peer offered. */
		if (len < maxseg && len < avail && len < c->max_sndwnd / 2 && !c->sws_force &&
		    !SEQ_LT(c->snd_nxt, c->snd_max))
			break;  /* (a resent hole between SACKed ranges may be short) */
		c->sws_force = 0;
		uint8_t fl = DP_TH_ACK;
		if (len > 0 && len == avail)
			fl |= DP_TH_PSH;
		if (fin)
			fl |= DP_TH_FIN;
		if (!c->rtt_timing && !c->ts_ok && len > 0 && c->snd_nxt == c->snd_max) {
			c->rtt_timing = 1;
			c->rtt_seq = c->snd_nxt;
			c->rtt_start = (uint32_t)now;
		}
		if (SEQ_LT(c->snd_nxt, c->snd_max))
			st->stats.tcp_segs_rexmit++;
		dp_tcp_send_seg(c, c->snd_nxt, len, fl);
		c->snd_nxt += len + (fin ? 1 : 0);
		if (SEQ_GT(c->snd_nxt, c->snd_max))
			c->snd_max = c->snd_nxt;
		if (c->rto_at == 0 || c->persist) {
			c->persist = 0;
			c->rto_at = now + c->rto;
		}
		if (fin)
			break;
	}
	if (c->ack_now)
		dp_tcp_send_ack(c);
	/* Persist (RFC 9293 3.8.6.1): data waits on a zero window with
	 * nothing in flight to carry a window update back. */
	uint32_t unsent = txlen - (c->snd_nxt - c->snd_una <= txlen ? c->snd_nxt - c->snd_una : txlen);
	if (c->snd_una != c->snd_max && c->rto_at == 0)
		c->rto_at = now + c->rto;  /* data in flight always has a timer */
	if (c->snd_una == c->snd_max) {
		if (unsent > 0) {  /* zero window, or one too small to use */
			if (!c->persist) {
				c->persist = 1;
				c->rto_at = now + c->rto;
			}
		} else {
			c->persist = 0;
			if (!c->want_tx)
				c->rto_at = 0;
		}
	}
	dp_tcp_arm(c);
}

/* RFC 2018 scoreboard: keep the ranges above snd_una the peer holds (at
 * most DP_SACK_MAX, the lowest ones: they bound the next retransmission). */
void
dp_tcp_sack_update(struct dp_tcb *c, const struct dp_tcp_seg *s)
{
	struct dp_txbuf *b = c->tx;
	struct { uint32_t start, end; } r[2 * DP_SACK_MAX], t;
	unsigned n = 0;
	for (unsigned i = 0; i < b->nsacked; i++) {
		if (SEQ_LEQ(b->sacked[i].end, c->snd_una))
			continue;
		r[n].start = SEQ_LT(b->sacked[i].start, c->snd_una) ? c->snd_una : b->sacked[i].start;
		r[n].end = b->sacked[i].end;
		n++;
	}
	for (unsigned i = 0; i < s->nsack; i++) {
		uint32_t a = s->sack[i].start, e = s->sack[i].end;
		/* Only blocks for data sent and not yet cumulatively acked. */
		if (!SEQ_LT(a, e) || SEQ_LEQ(a, c->snd_una) || SEQ_GT(e, c->snd_max))
			continue;
		r[n].start = a;
		r[n].end = e;
		n++;
	}
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && SEQ_LT(r[j].start, r[j - 1].start); j--) {
			t = r[j];
			r[j] = r[j - 1];
			r[j - 1] = t;
		}
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++) {
		if (k > 0 && SEQ_LEQ(r[i].start, r[k - 1].end)) {
			if (SEQ_GT(r[i].end, r[k - 1].end))
				r[k - 1].end = r[i].end;
		} else {
			r[k++] = r[i];
		}
	}
	if (k > DP_SACK_MAX)
		k = DP_SACK_MAX;
	memcpy(b->sacked, r, k * sizeof(r[0]));
	b->nsacked = (uint8_t)k;
}

/* When resending (snd_nxt below snd_max): skip what the peer holds and
 * stop a segment at the next range it holds. Returns the new len bound. */
uint32_t
dp_tcp_sack_clip(struct dp_tcb *c, uint32_t len)
{
	struct dp_txbuf *b = c->tx;
	if (b == NULL || b->nsacked == 0 || !SEQ_LT(c->snd_nxt, c->snd_max))
		return len;
	for (unsigned i = 0; i < b->nsacked; i++) {
		if (SEQ_GEQ(c->snd_nxt, b->sacked[i].start) && SEQ_LT(c->snd_nxt, b->sacked[i].end)) {
			c->st->stats.tcp_sack_skip += b->sacked[i].end - c->snd_nxt;
			c->snd_nxt = b->sacked[i].end;
		} else if (SEQ_GT(b->sacked[i].start, c->snd_nxt)) {
			uint32_t room = b->sacked[i].start - c->snd_nxt;
			return room < len ? room : len;
		}
	}
	return len;
}
