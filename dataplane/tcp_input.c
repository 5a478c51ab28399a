/*
 * tcp_input.c - segment arrival (RFC 9293 3.10.7): header and checksum
 * validation, option parsing, the stateless listener (SYN cookies, RFC
 * 4987), SYN_SENT, and the synchronized states: PAWS (RFC 7323 5), the
 * window acceptability test, RST/SYN/ACK validation with challenge ACKs
 * (RFC 5961), ACK processing with RTT samples, NewReno (RFC 5681, 6582),
 * in-order and out-of-order data, FIN.
 */
#include <errno.h>
#include <netinet/in.h>

#include "dataplane/stack_impl.h"

#define PAWS_IDLE_MS (24ull * 24 * 3600 * 1000)  /* RFC 7323 5.5 */

static bool
parse_options(struct dp_tcp_seg *s, const uint8_t *o, size_t n)
{
	s->wscale = 0xff;
	size_t i = 0;
	while (i < n) {
		uint8_t k = o[i];
		if (k == 0)
			break;
		if (k == 1) {
			i++;
			continue;
		}
		if (i + 1 >= n || o[i + 1] < 2 || i + o[i + 1] > n)
			return false;
		uint8_t l = o[i + 1];
		switch (k) {
		case 2:
			if (l == 4 && (s->flags & DP_TH_SYN)) {
				s->has_mss = true;
				s->mss = rd16(o + i + 2);
			}
			break;
		case 3:
			if (l == 3 && (s->flags & DP_TH_SYN))
				s->wscale = o[i + 2] > 14 ? 14 : o[i + 2];
			break;
		case 4:
			if (l == 2 && (s->flags & DP_TH_SYN))
				s->sack_perm = true;
			break;
		case 5:
			if (l >= 10 && (l - 2) % 8 == 0 && !(s->flags & DP_TH_SYN)) {
				for (unsigned b = 0; b < (l - 2u) / 8 && s->nsack < DP_SACK_MAX; b++) {
					s->sack[s->nsack].start = rd32(o + i + 2 + 8 * b);
					s->sack[s->nsack].end = rd32(o + i + 6 + 8 * b);
					s->nsack++;
				}
			}
			break;
		case 8:
			if (l == 10) {
				s->has_ts = true;
				s->tsval = rd32(o + i + 2);
				s->tsecr = rd32(o + i + 6);
			}
			break;
		default:
			break;  /* unknown options: ignored */
		}
		i += l;
	}
	return true;
}

static void
fill_sin(struct sockaddr_in *a, uint32_t ip, uint16_t port)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(ip);
	a->sin_port = htons(port);
}

static void
init_cwnd(struct dp_tcb *c)
{
	/* RFC 6928: min(10*MSS, max(2*MSS, 14600)). */
	uint32_t a = 10u * c->mss, b = 2u * c->mss > 14600u ? 2u * c->mss : 14600u;
	c->cwnd = a < b ? a : b;
	c->ssthresh = 0x7fffffff;
	c->recover = c->iss;
}

static void conn_input(struct dp_tcb *c, struct dp_tcp_seg *s);

static void
reset_for(struct dp_stack *st, uint32_t src, uint16_t sport, uint16_t dport, const struct dp_tcp_seg *s)
{
	if (s->flags & DP_TH_RST)
		return;
	if (s->flags & DP_TH_ACK)
		dp_tcp_send_rst(st, src, dport, sport, s->ack, 0, DP_TH_RST);
	else
		dp_tcp_send_rst(st, src, dport, sport, 0,
		                s->seq + s->len + !!(s->flags & DP_TH_SYN) + !!(s->flags & DP_TH_FIN),
		                DP_TH_RST | DP_TH_ACK);
}

/* The handshake of a passive open is complete (cookie or SYN_RCVD entry):
 * hand the connection to the application, then process the segment. */
static void
passive_done(struct dp_tcb *c, struct dp_tcp_seg *s)
{
	struct dp_stack *st = c->st;
	int li = dp_tcp_listener(st, c->lport);
	st->stats.tcp_established++;
	struct sockaddr_in peer, local;
	fill_sin(&peer, c->faddr, c->fport);
	fill_sin(&local, st->conf.ipv4, c->lport);
	c->in_cb++;
	c->app = li < 0 ? NULL
	                : st->ops->accept(st->wapp, &c->base, (struct sockaddr *)&peer,
	                                  (struct sockaddr *)&local, st->conf.listen[li].flags);
	c->in_cb--;
	if (c->app == NULL) {
		/* Refused: no closed() for a connection never taken. */
		st->stats.tcp_refused++;
		c->app_gone = 1;
		dp_tcp_send_rst(st, c->faddr, c->lport, c->fport, c->snd_nxt, 0, DP_TH_RST);
		dp_tcp_release(c);
		return;
	}
	st->stats.tcp_accepted++;
	conn_input(c, s);
}

/* A half-open entry while the table has room and SYNs are few (RFC 4987
 * 3.6: a SYN cache below the threshold, cookies above, as Linux does). */
static bool
synq_admit(struct dp_stack *st)
{
	uint64_t sec = dp_now(st) / 1000u;
	if (sec != st->syn_sec) {
		st->syn_sec = sec;
		st->syn_count = 0;
	}
	st->syn_count++;
	return st->synq < st->synq_max && st->syn_count <= st->synq_max && st->free_tcb != NULL;
}

/* SYN_RCVD: state from the SYN, an RFC 6528 ISN, the SYN-ACK sent now and
 * again by the timer until the ACK comes. False: no connection free. */
static bool
synq_open(struct dp_stack *st, uint32_t src, uint16_t sport, uint16_t dport,
          const struct dp_tcp_seg *s)
{
	struct dp_tcb *c = dp_tcp_alloc(st, src, sport, dport);
	if (c == NULL)
		return false;
	st->synq++;
	st->stats.tcp_synq_out++;
	c->state = DP_TCP_SYN_RCVD;
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->iss = dp_tcp_isn(st, src, sport, dport);
	c->snd_una = c->snd_nxt = c->snd_max = c->iss;
	c->ts_off = dp_tcp_ts_off(st, src, sport, dport);
	uint16_t m = s->has_mss ? s->mss : 536;  /* RFC 9293 3.7.1 default */
	c->mss = m < st->mss_local ? m : st->mss_local;
	if (c->mss < 64)
		c->mss = 64;
	if (s->wscale != 0xff) {
		c->ws_ok = 1;
		c->snd_wscale = s->wscale;
		c->rcv_wscale = st->rcv_wscale;
	}
	c->sack_ok = s->sack_perm;
	if (s->has_ts) {
		c->ts_ok = 1;
		c->ts_recent = s->tsval;
		c->ts_recent_age = dp_now(st);
	}
	c->snd_wnd = s->win;  /* never scaled in a SYN */
	c->max_sndwnd = c->snd_wnd;
	c->rcv_adv = c->rcv_nxt + (st->conf.rx_buf > 65535 ? 65535 : st->conf.rx_buf);
	c->last_ack_sent = c->rcv_nxt;
	dp_tcp_output(c);
	return true;
}

static void
cookie_opts(const struct dp_tcp_seg *s, uint8_t *opts)
{
	*opts = s->has_ts ? (uint8_t)(s->tsecr & ((1u << DP_COOKIE_TSBITS) - 1)) : DP_COOKIE_WS_NONE;
}

/* No connection for this 4-tuple: a SYN gets a half-open entry or a
 * cookie, an ACK may carry a cookie back; the rest is answered with RST
 * (RFC 9293 3.10.7.1). A port without a listener goes to the exception
 * path instead, when there is one. */
static void
no_conn(struct dp_stack *st, uint32_t src, uint16_t sport, uint16_t dport, struct dp_tcp_seg *s)
{
	uint8_t fl = s->flags;
	/* Not the SMTP service's port: the kernel's (it answers or resets). */
	if (st->io->exception != NULL && dp_tcp_listener(st, dport) < 0 && dp_exception(st))
		return;
	if (fl & DP_TH_RST) {
		st->stats.drop_tcp_rst++;
		return;
	}
	int li = dp_tcp_listener(st, dport);
	if (li < 0) {
		st->stats.drop_tcp_noport++;
		reset_for(st, src, sport, dport, s);
		return;
	}
	if ((fl & DP_TH_SYN) && !(fl & DP_TH_ACK)) {
		if (fl & DP_TH_FIN) {
			st->stats.drop_tcp_flags++;
			return;
		}
		st->stats.tcp_syn_in++;
		if (synq_admit(st) && synq_open(st, src, sport, dport, s))
			return;
		dp_tcp_send_synack_cookie(st, src, sport, dport, s);
		return;
	}
	if (!(fl & DP_TH_ACK) || (fl & DP_TH_SYN)) {
		st->stats.drop_tcp_flags++;
		/* A SYN-ACK to a listener is answered <SEQ=SEG.ACK><CTL=RST>
		 * (RFC 9293 3.10.7.2): a peer confused about who opened. */
		if (fl & DP_TH_ACK)
			reset_for(st, src, sport, dport, s);
		return;
	}
	uint8_t opts;
	cookie_opts(s, &opts);
	uint16_t mss;
	if (dp_tcp_cookie_check(st, src, sport, dport, s->seq - 1, s->ack - 1, opts, &mss) != 0) {
		/* Silently, as Linux does: a valid cookie whose segment is not
		 * the first after the SYN (reordered data) must not be reset. */
		st->stats.drop_tcp_cookie++;
		return;
	}
	struct dp_tcb *c = dp_tcp_alloc(st, src, sport, dport);
	if (c == NULL) {
		reset_for(st, src, sport, dport, s);
		return;
	}
	st->stats.tcp_cookies_ok++;
	c->irs = s->seq - 1;
	c->iss = s->ack - 1;
	c->snd_una = c->snd_nxt = c->snd_max = s->ack;
	c->rcv_nxt = s->seq;
	c->mss = mss;
	c->ts_off = dp_tcp_ts_off(st, src, sport, dport);
	if (s->has_ts) {
		c->ts_ok = 1;
		c->ts_recent = s->tsval;
		c->ts_recent_age = dp_now(st);
		uint8_t ws = opts & 0xf;
		if (ws != DP_COOKIE_WS_NONE) {
			c->snd_wscale = ws;
			c->rcv_wscale = st->rcv_wscale;
		}
		c->sack_ok = (opts >> 4) & 1;
		uint32_t rtt = dp_tcp_tsval(c) - s->tsecr;
		dp_tcp_rtt_sample(c, rtt);
	}
	c->snd_wnd = (uint32_t)s->win << c->snd_wscale;
	c->max_sndwnd = c->snd_wnd;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->rcv_adv = c->rcv_nxt + (st->conf.rx_buf > 65535 ? 65535 : st->conf.rx_buf);
	c->last_ack_sent = c->rcv_nxt;
	init_cwnd(c);
	c->state = DP_TCP_ESTABLISHED;
	passive_done(c, s);
}

static void
syn_sent(struct dp_tcb *c, struct dp_tcp_seg *s)
{
	struct dp_stack *st = c->st;
	uint8_t fl = s->flags;
	if ((fl & DP_TH_ACK) && (SEQ_LEQ(s->ack, c->iss) || SEQ_GT(s->ack, c->snd_max))) {
		st->stats.drop_tcp_ack++;
		if (!(fl & DP_TH_RST))
			dp_tcp_send_rst(st, c->faddr, c->lport, c->fport, s->ack, 0, DP_TH_RST);
		return;
	}
	if (fl & DP_TH_RST) {
		if (fl & DP_TH_ACK) {
			st->stats.tcp_rst_in++;
			c->state = DP_TCP_CLOSED;
			dp_tcp_detach(c, -ECONNREFUSED);
			dp_tcp_settle(c);
		} else {
			st->stats.drop_tcp_rst++;
		}
		return;
	}
	if (!(fl & DP_TH_SYN) || !(fl & DP_TH_ACK)) {
		st->stats.drop_tcp_state++;  /* simultaneous open: not supported */
		return;
	}
	c->irs = s->seq;
	c->rcv_nxt = s->seq + 1;
	c->snd_una = s->ack;
	if (SEQ_LT(c->snd_nxt, c->snd_una))
		c->snd_nxt = c->snd_una;
	uint16_t m = s->has_mss ? s->mss : 536;
	c->mss = m < st->mss_local ? m : st->mss_local;
	if (c->mss < 64)
		c->mss = 64;
	if (s->wscale != 0xff) {
		c->snd_wscale = s->wscale;
		c->rcv_wscale = st->rcv_wscale;
	} else {
		c->snd_wscale = c->rcv_wscale = 0;
	}
	c->ts_ok = s->has_ts;
	c->ts_recent = s->tsval;
	c->ts_recent_age = dp_now(st);
	c->sack_ok = s->sack_perm;
	c->snd_wnd = s->win;  /* never scaled in a SYN (RFC 7323 2.2) */
	c->max_sndwnd = c->snd_wnd;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->rcv_adv = c->rcv_nxt;
	init_cwnd(c);
	if (c->backoff == 0) {
		if (s->has_ts && s->tsecr != 0)
			dp_tcp_rtt_sample(c, dp_tcp_tsval(c) - s->tsecr);
	} else {
		c->rto = 1000;  /* RFC 6298 5.7 */
	}
	c->backoff = 0;
	c->rto_at = 0;
	c->state = DP_TCP_ESTABLISHED;
	st->stats.tcp_established++;
	c->ack_now = 1;
	dp_tcp_settle(c);
}

static bool
acceptable(const struct dp_tcb *c, uint32_t seq, uint32_t seglen)
{
	uint32_t rwnd = SEQ_GT(c->rcv_adv, c->rcv_nxt) ? c->rcv_adv - c->rcv_nxt : 0;
	uint32_t space = c->st->conf.rx_buf - (c->rx ? c->rx->held : 0);
	if (space > rwnd)
		rwnd = space;
	if (seglen == 0) {
		if (rwnd == 0)
			return seq == c->rcv_nxt;
		return SEQ_GEQ(seq, c->rcv_nxt) && SEQ_LT(seq, c->rcv_nxt + rwnd);
	}
	if (rwnd == 0)
		return false;
	return (SEQ_GEQ(seq, c->rcv_nxt) && SEQ_LT(seq, c->rcv_nxt + rwnd)) ||
	       (SEQ_GEQ(seq + seglen - 1, c->rcv_nxt) && SEQ_LT(seq + seglen - 1, c->rcv_nxt + rwnd));
}

static void
challenge_ack(struct dp_tcb *c)
{
	if (dp_tcp_challenge_ok(c->st))
		dp_tcp_send_ack(c);
}

static void
fin_acked(struct dp_tcb *c)
{
	switch (c->state) {
	case DP_TCP_FIN_WAIT_1:
		c->state = DP_TCP_FIN_WAIT_2;
		/* Nobody will read any more: bound the wait for the peer's FIN. */
		c->rto_at = dp_now(c->st) + DP_FW2_MS;
		break;
	case DP_TCP_CLOSING:
		dp_tcp_enter_time_wait(c);
		break;
	case DP_TCP_LAST_ACK:
		c->state = DP_TCP_CLOSED;
		break;
	default:
		break;
	}
}

static void
process_ack(struct dp_tcb *c, const struct dp_tcp_seg *s)
{
	struct dp_stack *st = c->st;
	uint64_t now = dp_now(st);
	bool wnd_changed = false;
	if (SEQ_LT(c->snd_wl1, s->seq) || (c->snd_wl1 == s->seq && SEQ_LEQ(c->snd_wl2, s->ack))) {
		uint32_t w = (uint32_t)s->win << c->snd_wscale;
		wnd_changed = w != c->snd_wnd;
		c->snd_wnd = w;
		c->snd_wl1 = s->seq;
		c->snd_wl2 = s->ack;
		if (w > c->max_sndwnd)
			c->max_sndwnd = w;
		if (w > 0 && c->persist) {
			c->persist = 0;
			c->rto_at = 0;
			c->backoff = 0;
		}
	}
	if (SEQ_GT(s->ack, c->snd_una)) {
		uint32_t acked = s->ack - c->snd_una;
		uint32_t txlen = c->tx ? c->tx->len : 0;
		uint32_t data = acked < txlen ? acked : txlen;
		bool fin = acked > txlen;
		if (c->tx != NULL) {
			c->tx->head = (c->tx->head + data) % st->conf.tx_buf;
			c->tx->len -= data;
			if (c->tx->len == 0)
				dp_tcp_tx_put(c);
		}
		c->snd_una = s->ack;
		if (SEQ_LT(c->snd_nxt, c->snd_una))
			c->snd_nxt = c->snd_una;
		/* RTT (RFC 6298, 7323 4): echoed timestamp, or the timed segment. */
		if (c->ts_ok && s->has_ts && s->tsecr != 0)
			dp_tcp_rtt_sample(c, dp_tcp_tsval(c) - s->tsecr);
		else if (c->rtt_timing && SEQ_GT(s->ack, c->rtt_seq)) {
			c->rtt_timing = 0;
			dp_tcp_rtt_sample(c, (uint32_t)now - c->rtt_start);
		}
		if (c->backoff) {
			c->backoff = 0;
			if (c->srtt)
				dp_tcp_set_rto(c);
		}
		uint32_t flight = c->snd_max - c->snd_una;
		if (c->in_recovery) {
			if (SEQ_GEQ(s->ack, c->recover)) {
				/* Full ACK (RFC 6582 3.2 step 3). */
				uint32_t f = flight + c->mss;
				c->cwnd = c->ssthresh < f ? c->ssthresh : f;
				c->in_recovery = 0;
				c->dupacks = 0;
			} else {
				/* Partial ACK: the next hole, deflate. */
				dp_tcp_retransmit_one(c);
				c->cwnd = c->cwnd > acked ? c->cwnd - acked + c->mss : c->mss;
				c->rto_at = now + c->rto;
			}
		} else {
			c->dupacks = 0;
			if (c->cwnd < c->ssthresh)
				c->cwnd += acked < c->mss ? acked : c->mss;
			else
				c->cwnd += (uint32_t)c->mss * c->mss / c->cwnd ? (uint32_t)c->mss * c->mss / c->cwnd : 1;
		}
		if (c->cwnd > (1u << 30))
			c->cwnd = 1u << 30;
		if (!c->persist)
			c->rto_at = c->snd_una == c->snd_max ? 0 : now + c->rto;
		if (fin)
			fin_acked(c);
	} else if (s->ack == c->snd_una && s->len == 0 && !wnd_changed && c->snd_una != c->snd_max &&
	           !(s->flags & DP_TH_FIN)) {
		/* Duplicate ACK (RFC 5681 2). */
		c->dupacks++;
		if (c->dupacks == 3 && !c->in_recovery && SEQ_GT(s->ack, c->recover)) {
			st->stats.tcp_fast_rexmit++;
			uint32_t flight = c->snd_max - c->snd_una, two = 2u * c->mss;
			c->ssthresh = flight / 2 > two ? flight / 2 : two;
			c->recover = c->snd_max;
			dp_tcp_retransmit_one(c);
			c->cwnd = c->ssthresh + 3u * c->mss;
			c->in_recovery = 1;
			c->rto_at = now + c->rto;
		} else if (c->dupacks > 3 && c->in_recovery) {
			c->cwnd += c->mss;  /* inflate: a segment has left */
		}
	}
}

/* Out-of-order data into the ring at its offset; up to DP_SACK_MAX ranges. */
static void
ooo_insert(struct dp_tcb *c, uint32_t seq, const uint8_t *p, uint32_t n)
{
	struct dp_stack *st = c->st;
	struct dp_rxbuf *b = dp_tcp_rx_get(c);
	if (b == NULL) {
		st->stats.tcp_ooo_drop++;
		return;
	}
	uint32_t size = st->conf.rx_buf;
	uint32_t idx = (b->head + b->held + (seq - c->rcv_nxt)) % size;
	uint32_t a = size - idx < n ? size - idx : n;
	memcpy(b->data + idx, p, a);
	memcpy(b->data, p + a, n - a);
	struct { uint32_t start, end; } r[DP_SACK_MAX + 1], t;
	unsigned m = b->nooo, k = 0;
	memcpy(r, b->ooo, m * sizeof(r[0]));
	r[m].start = seq;
	r[m].end = seq + n;
	for (unsigned i = m; i > 0 && SEQ_LT(r[i].start, r[i - 1].start); i--) {
		t = r[i];
		r[i] = r[i - 1];
		r[i - 1] = t;
	}
	for (unsigned i = 0; i <= m; i++) {
		if (k > 0 && SEQ_LEQ(r[i].start, r[k - 1].end)) {
			if (SEQ_GT(r[i].end, r[k - 1].end))
				r[k - 1].end = r[i].end;
		} else {
			r[k++] = r[i];
		}
	}
	if (k > DP_SACK_MAX) {
		st->stats.tcp_ooo_drop++;  /* too fragmented: the peer resends */
		return;
	}
	memcpy(b->ooo, r, k * sizeof(r[0]));
	b->nooo = (uint8_t)k;
}

/* A segment for a half-open entry (RFC 9293 3.10.7.4 in SYN-RECEIVED,
 * RFC 5961 for RST and SYN). */
static void
syn_rcvd(struct dp_tcb *c, struct dp_tcp_seg *s)
{
	struct dp_stack *st = c->st;
	uint8_t fl = s->flags;
	uint32_t faddr = c->faddr;
	uint16_t fport = c->fport, lport = c->lport;
	if (fl & DP_TH_RST) {
		if (s->seq == c->rcv_nxt) {
			st->stats.tcp_rst_in++;
			dp_tcp_synq_leave(c);
			c->state = DP_TCP_CLOSED;
			dp_tcp_settle(c);
		} else {
			st->stats.drop_tcp_rst++;
			if (acceptable(c, s->seq, 0))
				challenge_ack(c);
		}
		return;
	}
	if ((fl & DP_TH_SYN) && !(fl & DP_TH_ACK)) {
		if (s->seq == c->irs) {
			/* Our SYN-ACK was lost: the same one again. */
			st->stats.tcp_synack_rexmit++;
			c->snd_nxt = c->iss;
			dp_tcp_output(c);
		} else {
			/* Another incarnation: start over from this SYN. */
			dp_tcp_release(c);
			no_conn(st, faddr, fport, lport, s);
		}
		return;
	}
	if (!(fl & DP_TH_ACK) || (fl & DP_TH_SYN)) {
		st->stats.drop_tcp_flags++;
		return;
	}
	if (s->ack != c->iss + 1) {
		/* Perhaps the answer to a cookie we sent this peer before the
		 * entry existed (its SYN retransmitted): that cookie wins. */
		uint8_t opts;
		uint16_t mss;
		cookie_opts(s, &opts);
		if (dp_tcp_cookie_check(st, faddr, fport, lport, s->seq - 1, s->ack - 1, opts, &mss) == 0) {
			dp_tcp_release(c);
			no_conn(st, faddr, fport, lport, s);
			return;
		}
		st->stats.drop_tcp_ack++;
		dp_tcp_send_rst(st, faddr, lport, fport, s->ack, 0, DP_TH_RST);
		return;
	}
	uint64_t now = dp_now(st);
	if (c->ts_ok && s->has_ts && SEQ_LT(s->tsval, c->ts_recent)) {
		st->stats.drop_tcp_paws++;
		return;
	}
	if (!acceptable(c, s->seq, s->len + !!(fl & DP_TH_FIN))) {
		st->stats.drop_tcp_seq++;
		return;
	}
	dp_tcp_synq_leave(c);
	st->stats.tcp_synq_ok++;
	c->snd_una = s->ack;
	if (SEQ_LT(c->snd_nxt, c->snd_una))
		c->snd_nxt = c->snd_una;
	if (c->ts_ok && !s->has_ts)
		c->ts_ok = 0;  /* the SYN had them, the ACK not: go without */
	c->snd_wnd = (uint32_t)s->win << c->snd_wscale;
	c->max_sndwnd = c->snd_wnd;
	c->snd_wl1 = s->seq;
	c->snd_wl2 = s->ack;
	c->rto_at = 0;
	c->rto = 1000;
	if (c->ts_ok && s->tsecr != 0)
		dp_tcp_rtt_sample(c, dp_tcp_tsval(c) - s->tsecr);
	else if (c->backoff == 0)
		dp_tcp_rtt_sample(c, (uint32_t)now - c->rtt_start);  /* Karn: never after a resend */
	c->backoff = 0;
	init_cwnd(c);
	c->state = DP_TCP_ESTABLISHED;
	passive_done(c, s);
}

static void
conn_input(struct dp_tcb *c, struct dp_tcp_seg *s)
{
	struct dp_stack *st = c->st;
	uint64_t now = dp_now(st);
	uint8_t fl = s->flags;
	if (c->state == DP_TCP_SYN_SENT) {
		syn_sent(c, s);
		return;
	}
	if (c->state == DP_TCP_SYN_RCVD) {
		syn_rcvd(c, s);
		return;
	}
	/* PAWS (RFC 7323 5.3). */
	if (c->ts_ok && s->has_ts && !(fl & DP_TH_RST) && SEQ_LT(s->tsval, c->ts_recent) &&
	    now - c->ts_recent_age < PAWS_IDLE_MS) {
		st->stats.drop_tcp_paws++;
		c->ack_now = 1;
		dp_tcp_settle(c);
		return;
	}
	uint32_t seglen = s->len + !!(fl & DP_TH_SYN) + !!(fl & DP_TH_FIN);
	if (!acceptable(c, s->seq, seglen)) {
		st->stats.drop_tcp_seq++;
		if (!(fl & DP_TH_RST)) {
			if (c->state == DP_TCP_TIME_WAIT && (fl & DP_TH_FIN))
				c->rto_at = now + st->conf.time_wait_ms;  /* restart 2MSL */
			/* Answered, but not to every one: two confused ends must
			 * not ping-pong ACKs (RFC 5961 10; Linux does the same). */
			if (seglen > 0 || (uint32_t)now - c->oow_ack_at >= DP_OOW_ACK_MS) {
				c->oow_ack_at = (uint32_t)now;
				c->ack_now = 1;
			}
			dp_tcp_settle(c);
		}
		return;
	}
	if (fl & DP_TH_RST) {
		/* RFC 5961 3.2: exact match resets; in-window gets a challenge.
		 * RFC 1337: TIME_WAIT ignores RSTs (no assassination). */
		if (c->state == DP_TCP_TIME_WAIT) {
			st->stats.drop_tcp_rst++;
		} else if (s->seq == c->rcv_nxt) {
			st->stats.tcp_rst_in++;
			c->state = DP_TCP_CLOSED;
			dp_tcp_detach(c, -ECONNRESET);
			dp_tcp_settle(c);
		} else {
			st->stats.drop_tcp_rst++;
			challenge_ack(c);
		}
		return;
	}
	if (fl & DP_TH_SYN) {
		st->stats.drop_tcp_syn++;  /* RFC 5961 4.2 */
		challenge_ack(c);
		return;
	}
	if (!(fl & DP_TH_ACK)) {
		st->stats.drop_tcp_flags++;
		return;
	}
	/* RFC 5961 5.2: an ACK for data never sent, or too old. */
	if (SEQ_GT(s->ack, c->snd_max)) {
		st->stats.drop_tcp_ack++;
		c->ack_now = 1;
		dp_tcp_settle(c);
		return;
	}
	if (SEQ_LT(s->ack, c->snd_una - c->max_sndwnd)) {
		st->stats.drop_tcp_ack++;
		challenge_ack(c);
		return;
	}
	if (c->ts_ok && s->has_ts && SEQ_GEQ(s->tsval, c->ts_recent) && SEQ_LEQ(s->seq, c->last_ack_sent)) {
		c->ts_recent = s->tsval;
		c->ts_recent_age = now;
	}
	if (c->state != DP_TCP_TIME_WAIT) {
		if (c->sack_ok && c->tx != NULL)
			dp_tcp_sack_update(c, s);  /* first: it steers retransmit_one */
		process_ack(c, s);
	}
	if (c->state == DP_TCP_CLOSED || c->state == DP_TCP_TIME_WAIT) {
		dp_tcp_settle(c);
		return;
	}
	/* Data: only while the peer has not closed. */
	const uint8_t *d = s->data;
	uint32_t n = s->len, seq = s->seq;
	bool fin = fl & DP_TH_FIN;
	bool rcv_open = c->state == DP_TCP_ESTABLISHED || c->state == DP_TCP_FIN_WAIT_1 ||
	                c->state == DP_TCP_FIN_WAIT_2;
	if (!rcv_open) {
		n = 0;
		fin = false;
	}
	if (n > 0 && SEQ_LT(seq, c->rcv_nxt)) {
		uint32_t skip = c->rcv_nxt - seq;
		if (skip >= n) {
			st->stats.tcp_dup_data++;
			c->ack_now = 1;
			skip = n;
		}
		d += skip;
		n -= skip;
		seq += skip;
	}
	uint32_t space = st->conf.rx_buf - (c->rx ? c->rx->held : 0);
	uint32_t right = c->rcv_nxt + space;
	if (n > 0 && SEQ_GT(seq + n, right)) {
		uint32_t keep = SEQ_GT(right, seq) ? right - seq : 0;
		n = keep;
		fin = false;
	}
	if (n > 0 && c->app_gone && c->state != DP_TCP_ESTABLISHED) {
		/* Data after our close with nobody to read it: reset (as Linux
		 * does for orphans), rather than ACK into a void forever. */
		st->stats.drop_tcp_state++;
		dp_tcp_send_rst(st, c->faddr, c->lport, c->fport, c->snd_nxt, 0, DP_TH_RST);
		c->state = DP_TCP_CLOSED;
		dp_tcp_settle(c);
		return;
	}
	if (n > 0) {
		if (seq == c->rcv_nxt) {
			dp_tcp_deliver(c, d, n);
			if (c->rx != NULL && c->rx->nooo > 0)
				c->ack_now = 1;
			if (!c->ack_now) {
				/* Delayed ACK (RFC 1122 4.2.3.2, RFC 5681 4.2). */
				if (++c->dack_segs >= 2)
					c->ack_now = 1;
				else if (c->dack_at == 0)
					c->dack_at = now + DP_DACK_MS;
			}
		} else {
			st->stats.tcp_ooo_segs++;
			ooo_insert(c, seq, d, n);
			c->ack_now = 1;  /* duplicate ACK for the sender's fast retransmit */
		}
	}
	if (fin && seq + n == c->rcv_nxt && !c->fin_rcvd) {
		c->rcv_nxt++;
		c->fin_rcvd = 1;
		c->ack_now = 1;
		switch (c->state) {
		case DP_TCP_ESTABLISHED:
			c->state = DP_TCP_CLOSE_WAIT;
			c->eof = 1;
			break;
		case DP_TCP_FIN_WAIT_1:
			if (c->snd_una == c->snd_max)
				dp_tcp_enter_time_wait(c);
			else
				c->state = DP_TCP_CLOSING;
			break;
		case DP_TCP_FIN_WAIT_2:
			dp_tcp_enter_time_wait(c);
			break;
		default:
			break;
		}
	}
	dp_tcp_settle(c);
}

void
dp_tcp_input(struct dp_stack *st, uint32_t src, const uint8_t *p, size_t len)
{
	if (len < DP_TCP_HLEN) {
		st->stats.drop_tcp_short++;
		return;
	}
	size_t hl = (size_t)(p[12] >> 4) * 4;
	if (hl < DP_TCP_HLEN || hl > len) {
		st->stats.drop_tcp_hlen++;
		return;
	}
	uint32_t sum = dp_ip_pseudo(src, st->conf.ipv4, DP_PROTO_TCP, len);
	if (!(st->conf.offload & DP_STACK_RX_CSUM) && dp_csum_fold(dp_csum_add(sum, p, len)) != 0) {
		st->stats.drop_tcp_csum++;
		return;
	}
	struct dp_tcp_seg s;
	memset(&s, 0, sizeof(s));
	uint16_t sport = rd16(p), dport = rd16(p + 2);
	s.seq = rd32(p + 4);
	s.ack = rd32(p + 8);
	s.flags = p[13] & 0x3f;
	s.win = rd16(p + 14);
	s.data = p + hl;
	s.len = (uint32_t)(len - hl);
	if (sport == 0 || dport == 0 || !parse_options(&s, p + DP_TCP_HLEN, hl - DP_TCP_HLEN) ||
	    ((s.flags & DP_TH_SYN) && (s.flags & DP_TH_RST))) {
		st->stats.drop_tcp_flags++;
		return;
	}
	st->stats.tcp_segs_in++;
	struct dp_tcb *c = dp_tcp_lookup(st, src, sport, dport);
	if (c != NULL && c->state == DP_TCP_TIME_WAIT && (s.flags & DP_TH_SYN) &&
	    !(s.flags & (DP_TH_ACK | DP_TH_RST))) {
		/* A new SYN for a TIME_WAIT tuple (RFC 6191): accepted when its
		 * timestamp or sequence number is beyond the old connection. */
		if ((c->ts_ok && s.has_ts && SEQ_GT(s.tsval, c->ts_recent)) || SEQ_GT(s.seq, c->rcv_nxt)) {
			st->stats.tcp_tw_reuse++;
			dp_tcp_release(c);
			c = NULL;
		}
	}
	if (c == NULL) {
		no_conn(st, src, sport, dport, &s);
		return;
	}
	conn_input(c, &s);
}

/* RFC 1191 5: the plateau below a datagram of `tot` bytes, for routers
 * that report no next-hop MTU. */
static uint32_t
mtu_plateau(uint32_t tot)
{
	static const uint16_t plateau[] = { 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68 };
	for (unsigned i = 0; i < sizeof(plateau) / sizeof(plateau[0]); i++)
		if (plateau[i] < tot)
			return plateau[i];
	return 68;
}

/* ICMP destination unreachable for a segment of ours (RFC 792, 1122
 * 4.2.3.9, 1191, 5927). The quote must name a live connection and a
 * sequence number it has sent and not had acknowledged (RFC 5927 4.1:
 * SND.UNA <= SEG.SEQ < SND.MAX), which a blind attacker must guess.
 *   code 4 (fragmentation needed, DF set): the path MTU drops to the
 *     reported one (or the RFC 1191 plateau below the quoted datagram if
 *     none is given), never below DP_PMTU_MIN and never up; the MSS
 *     follows and what is in flight is sent again in smaller segments
 *     at once (not a congestion signal: cwnd stays).
 *   an active open (SYN_SENT): protocol or port unreachable (2, 3) ends
 *     it with -ECONNREFUSED, administratively prohibited (9, 10, 13) with
 *     -EHOSTUNREACH; the soft errors (net/host unreachable and the rest)
 *     are remembered and turn a later timeout into -EHOSTUNREACH.
 *   synchronized connections: other codes are only counted (RFC 5927
 *     4.1 recommends treating hard errors as soft there). */
void
dp_tcp_icmp_unreach(struct dp_stack *st, uint8_t code, uint16_t mtu, const uint8_t *q, size_t qlen)
{
	size_t hl = (size_t)(q[0] & 15) * 4;
	const uint8_t *t = q + hl;
	(void)qlen;
	uint32_t faddr = rd32(q + 16), seq = rd32(t + 4);
	uint16_t lport = rd16(t), fport = rd16(t + 2);
	struct dp_tcb *c = dp_tcp_lookup(st, faddr, fport, lport);
	if (c == NULL || c->state == DP_TCP_TIME_WAIT || c->state == DP_TCP_CLOSED ||
	    SEQ_LT(seq, c->snd_una) || !SEQ_LT(seq, c->snd_max)) {
		st->stats.icmp_bad_quote++;
		return;
	}
	if (code == 4) {
		uint32_t m = mtu >= 68 ? mtu : mtu_plateau(rd16(q + 2));
		if (m < DP_PMTU_MIN)
			m = DP_PMTU_MIN;
		uint32_t mss = m - DP_IP_HLEN - DP_TCP_HLEN;
		if (mss >= c->mss)
			return;  /* a path MTU only ever goes down here */
		st->stats.tcp_pmtu_lowered++;
		c->mss = (uint16_t)mss;
		if (c->state != DP_TCP_SYN_SENT && c->state != DP_TCP_SYN_RCVD &&
		    c->snd_una != c->snd_max) {
			c->snd_nxt = c->snd_una;  /* resend, smaller */
			c->rtt_timing = 0;
			dp_tcp_settle(c);
		}
		return;
	}
	if (c->state != DP_TCP_SYN_SENT) {
		st->stats.icmp_soft_err++;
		return;
	}
	int err = 0;
	if (code == 2 || code == 3)
		err = -ECONNREFUSED;
	else if (code == 9 || code == 10 || code == 13)
		err = -EHOSTUNREACH;
	if (err == 0) {
		st->stats.icmp_soft_err++;
		c->soft_unreach = 1;
		return;
	}
	st->stats.icmp_conn_err++;
	c->state = DP_TCP_CLOSED;
	dp_tcp_detach(c, err);
	dp_tcp_settle(c);
}
