/*
 * tcp_timer.c - per-connection timers on the stack's wheel: one for TCP
 * (the earliest of retransmission / persist / TIME_WAIT / FIN_WAIT_2, and
 * delayed ACK), one for the application's deadline (dp_conn_timer).
 * A half-open (SYN_RCVD) entry resends its SYN-ACK with backoff.
 * RTO per RFC 6298 (Karn: samples from timestamps, RFC 7323, or one timed
 * segment never retransmitted; exponential backoff, min 200 ms, max 60 s).
 */
#include <errno.h>
#include <stddef.h>

#include "dataplane/stack_impl.h"

#define DP_RTO_MIN      200u
#define DP_RTO_MAX      60000u
#define DP_SYN_RETRIES  6
#define DP_DATA_RETRIES 12
#define DP_SYNACK_RETRIES 4
#define DP_CHAL_PER_SEC 100u

void
dp_tcp_set_rto(struct dp_tcb *c)
{
	uint32_t r = (c->srtt >> 3) + (c->rttvar > 1 ? c->rttvar : 1);  /* rttvar holds 4*RTTVAR */
	if (r < DP_RTO_MIN)
		r = DP_RTO_MIN;
	if (r > DP_RTO_MAX)
		r = DP_RTO_MAX;
	c->rto = r;
}

/* RFC 6298 2.2 / 2.3, in integer ms: srtt scaled by 8, rttvar by 4. */
void
dp_tcp_rtt_sample(struct dp_tcb *c, uint32_t rtt)
{
	if (rtt > DP_RTO_MAX)
		return;
	if (c->srtt == 0) {
		c->srtt = (rtt << 3) ? (rtt << 3) : 1;
		c->rttvar = rtt << 1;
	} else {
		int32_t d = (int32_t)rtt - (int32_t)(c->srtt >> 3);
		c->srtt = (uint32_t)((int32_t)c->srtt + d) ? (uint32_t)((int32_t)c->srtt + d) : 1;
		if (d < 0)
			d = -d;
		c->rttvar = (uint32_t)((int32_t)c->rttvar + (d - (int32_t)(c->rttvar >> 2)));
	}
	dp_tcp_set_rto(c);
}

/* RFC 5961 7: a per-stack budget of challenge ACKs per second. */
bool
dp_tcp_challenge_ok(struct dp_stack *st)
{
	uint64_t sec = dp_now(st) / 1000u;
	if (sec != st->chal_window) {
		st->chal_window = sec;
		st->chal_count = 0;
	}
	if (st->chal_count >= DP_CHAL_PER_SEC) {
		st->stats.tcp_challenge_limited++;
		return false;
	}
	st->chal_count++;
	st->stats.tcp_challenge_ack++;
	return true;
}

static void
rto_expired(struct dp_tcb *c)
{
	struct dp_stack *st = c->st;
	uint64_t now = dp_now(st);
	switch (c->state) {
	case DP_TCP_TIME_WAIT:
	case DP_TCP_FIN_WAIT_2:
		c->state = DP_TCP_CLOSED;
		return;
	default:
		break;
	}
	if (c->state == DP_TCP_SYN_RCVD) {
		/* Half-open: the SYN-ACK again, 1, 2, 4, 8 s apart, then the
		 * entry goes quietly (as Linux drops a request sock). */
		if (++c->backoff > DP_SYNACK_RETRIES) {
			st->stats.tcp_synq_timeout++;
			dp_tcp_synq_leave(c);
			c->state = DP_TCP_CLOSED;
			return;
		}
		st->stats.tcp_synack_rexmit++;
		c->rto = c->rto * 2 < DP_RTO_MAX ? c->rto * 2 : DP_RTO_MAX;
		c->snd_nxt = c->iss;  /* dp_tcp_output sends it */
		return;
	}
	if (c->want_tx) {
		c->want_tx = 0;  /* a send buffer may be free now: settle pulls */
		return;
	}
	if (c->persist) {
		/* Zero-window probe: an old sequence number makes the peer
		 * answer with its current window. A window too small for the
		 * sender's silly-window rule is filled instead (RFC 9293
		 * 3.8.6.2.1, the override timeout). */
		st->stats.tcp_persist_probes++;
		if (c->snd_wnd > 0)
			c->sws_force = 1;
		else
			dp_tcp_send_seg(c, c->snd_una - 1, 0, DP_TH_ACK);
		if (c->backoff < 16)
			c->backoff++;
		uint64_t d = (uint64_t)c->rto << (c->backoff < 6 ? c->backoff : 6);
		c->rto_at = now + (d < DP_RTO_MAX ? d : DP_RTO_MAX);
		return;
	}
	if (c->snd_una == c->snd_max && c->state != DP_TCP_SYN_SENT)
		return;
	c->backoff++;
	if (c->backoff > (c->state == DP_TCP_SYN_SENT ? DP_SYN_RETRIES : DP_DATA_RETRIES)) {
		st->stats.tcp_timeouts++;
		if (c->state != DP_TCP_SYN_SENT)
			dp_tcp_send_rst(st, c->faddr, c->lport, c->fport, c->snd_nxt, 0, DP_TH_RST);
		c->state = DP_TCP_CLOSED;
		/* An open that only ever met ICMP soft errors says so. */
		dp_tcp_detach(c, c->soft_unreach ? -EHOSTUNREACH : -ETIMEDOUT);
		return;
	}
	st->stats.tcp_rexmit_timeout++;
	/* RFC 5681 (4): ssthresh from the flight, cwnd to one segment;
	 * RFC 6582: recovery ends, recover marks the highest sent. */
	uint32_t flight = c->snd_max - c->snd_una;
	uint32_t two = 2u * c->mss;
	c->ssthresh = flight / 2 > two ? flight / 2 : two;
	c->cwnd = c->mss;
	c->in_recovery = 0;
	c->dupacks = 0;
	c->recover = c->snd_max;
	c->rtt_timing = 0;
	c->rto = c->rto * 2 < DP_RTO_MAX ? c->rto * 2 : DP_RTO_MAX;
	/* A second timeout in a row: the receiver may have reneged on what
	 * it SACKed (RFC 2018 8); resend everything. */
	if (c->backoff >= 2 && c->tx != NULL)
		c->tx->nsacked = 0;
	if (c->state == DP_TCP_SYN_SENT) {
		c->snd_nxt = c->iss;  /* dp_tcp_output sends the SYN again */
	} else {
		c->snd_nxt = c->snd_una;  /* go back: resend from the first hole */
	}
}

static void
tcp_timer(struct dp_tcb *c)
{
	uint64_t now = dp_now(c->st);
	if (c->dack_at != 0 && now >= c->dack_at) {
		c->dack_at = 0;
		c->ack_now = 1;
		c->st->stats.tcp_delack++;
	}
	if (c->rto_at != 0 && now >= c->rto_at) {
		c->rto_at = 0;
		rto_expired(c);
	}
	dp_tcp_arm(c);
	dp_tcp_settle(c);
}

void
dp_tcp_timer_fire(struct dp_timer *t, void *arg)
{
	struct dp_stack *st = arg;
	size_t off = (size_t)((char *)t - (char *)st->tcbs);
	struct dp_tcb *c = &st->tcbs[off / sizeof(*c)];
	if (t == &c->t_tcp) {
		tcp_timer(c);
	} else if (!c->app_gone && c->app != NULL) {
		c->in_cb++;
		st->ops->timer(c->app);
		c->in_cb--;
		dp_tcp_settle(c);
	}
}
