/*
 * icmp.c - ICMP (RFC 792): echo requests to our address are answered
 * (RFC 1122 3.2.2.6); destination unreachable quoting one of our TCP
 * segments goes to TCP (path MTU, RFC 1191; failed opens, RFC 1122
 * 4.2.3.9; validated there per RFC 5927); every other type, and an
 * unreachable about something not ours, goes to the exception path
 * (stack.h) or is counted and dropped.
 */
#include "dataplane/stack_impl.h"

void
dp_icmp_input(struct dp_stack *st, uint32_t src, const uint8_t *p, size_t len)
{
	if (len < 8) {
		st->stats.drop_icmp_short++;
		return;
	}
	if (dp_csum_fold(dp_csum_add(0, p, len)) != 0) {
		st->stats.drop_icmp_csum++;
		return;
	}
	if (p[0] == 3) {
		/* Unreachable: [type code csum unused|mtu] + our IP header + 8. */
		const uint8_t *q = p + 8;
		size_t qlen = len - 8, qhl = qlen >= DP_IP_HLEN ? (size_t)(q[0] & 15) * 4 : 0;
		st->stats.icmp_unreach++;
		if (qlen < DP_IP_HLEN || (q[0] >> 4) != 4 || qhl < DP_IP_HLEN || qlen < qhl + 8 ||
		    q[9] != DP_PROTO_TCP || rd32(q + 12) != st->conf.ipv4 ||
		    (rd16(q + 6) & 0x1fff) != 0) {
			/* About a datagram of the kernel's (UDP, ...), perhaps. */
			if (!dp_exception(st))
				st->stats.icmp_bad_quote++;
			return;
		}
		/* A TCP quote no connection of ours matches: the kernel's. */
		const uint8_t *t = q + qhl;
		if (st->io->exception != NULL &&
		    dp_tcp_lookup(st, rd32(q + 16), rd16(t + 2), rd16(t)) == NULL &&
		    dp_exception(st))
			return;
		dp_tcp_icmp_unreach(st, p[1], rd16(p + 6), q, qlen);
		return;
	}
	if (p[0] != 8 || p[1] != 0) {
		/* Echo replies, time exceeded, ...: for the kernel's own traffic. */
		if (!dp_exception(st))
			st->stats.drop_icmp_type++;
		return;
	}
	if (len > (size_t)st->conf.mtu - DP_IP_HLEN) {
		st->stats.drop_icmp_short++;
		return;
	}
	struct dp_txctx tx;
	uint8_t *q = dp_ip_tx_begin(st, src, len, &tx);
	if (q == NULL)
		return;
	memcpy(q, p, len);
	q[0] = 0;
	wr16(q + 2, 0);
	wr16(q + 2, dp_csum_fold(dp_csum_add(0, q, len)));
	st->stats.icmp_echo_out++;
	dp_ip_tx_end(st, &tx, DP_PROTO_ICMP, len);
}
