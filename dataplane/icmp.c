/*
 * icmp.c - ICMP (RFC 792): echo requests to our address are answered
 * (RFC 1122 3.2.2.6); every other type is counted and dropped.
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
	if (p[0] != 8 || p[1] != 0) {
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
