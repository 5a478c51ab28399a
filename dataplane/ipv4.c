/*
 * ipv4.c - IPv4 (RFC 791, RFC 1122 3.2.1) for one address: validates
 * version, header length, total length and header checksum, accepts only
 * datagrams to our address from plausible unicast sources, and counts and
 * drops fragments (a front end for short TCP segments does not reassemble;
 * peers are told our MSS so that none should be needed). Output sets DF and
 * ID 0 (RFC 6864: atomic datagrams) and TTL 64, and picks the next hop:
 * the destination on our subnet, else the gateway.
 */
#include "dataplane/stack_impl.h"

#define DP_IP_TTL 64

uint32_t
dp_ip_pseudo(uint32_t src, uint32_t dst, uint8_t proto, size_t len)
{
	/* The pseudo-header's 16-bit words summed in place (RFC 9293 3.1),
	 * host-order values, as dp_csum_add() would sum its bytes. */
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto +
	       (uint32_t)(uint16_t)len;
}

static bool
martian(const struct dp_stack *st, uint32_t a)
{
	uint32_t net = st->conf.ipv4 & st->conf.netmask;
	return a == 0 || a == 0xffffffffu || (a >> 24) == 127 || (a >> 28) == 0xe ||
	       (a >> 28) == 0xf || a == st->conf.ipv4 ||
	       (st->conf.netmask != 0xffffffffu && a == (net | ~st->conf.netmask));
}

void
dp_ip_input(struct dp_stack *st, const uint8_t *p, size_t len)
{
	if (len < DP_IP_HLEN) {
		st->stats.drop_ip_short++;
		return;
	}
	if ((p[0] >> 4) != 4) {
		st->stats.drop_ip_version++;
		return;
	}
	size_t hl = (size_t)(p[0] & 15) * 4;
	if (hl < DP_IP_HLEN || hl > len) {
		st->stats.drop_ip_hlen++;
		return;
	}
	size_t tot = rd16(p + 2);
	if (tot < hl || tot > len) {   /* Ethernet padding beyond tot is fine */
		st->stats.drop_ip_len++;
		return;
	}
	if (!(st->conf.offload & DP_STACK_RX_CSUM) && dp_csum_fold(dp_csum_add(0, p, hl)) != 0) {
		st->stats.drop_ip_csum++;
		return;
	}
	uint32_t src = rd32(p + 12), dst = rd32(p + 16);
	if ((rd16(p + 6) & 0x3fff) != 0) {   /* MF or an offset */
		/* Not TCP: the kernel may reassemble it (exception path). */
		if (p[9] == DP_PROTO_TCP || dst != st->conf.ipv4 || !dp_exception(st))
			st->stats.drop_ip_frag++;
		return;
	}
	if (dst != st->conf.ipv4) {
		/* Broadcasts (not TCP) may be the kernel's business. */
		if (p[9] == DP_PROTO_TCP || (dst != 0xffffffffu &&
		    (st->conf.netmask == 0xffffffffu || dst != (st->conf.ipv4 | ~st->conf.netmask))) ||
		    !dp_exception(st))
			st->stats.drop_ip_dst++;
		return;
	}
	if (martian(st, src)) {
		st->stats.drop_ip_src++;
		return;
	}
	switch (p[9]) {
	case DP_PROTO_TCP:
		dp_tcp_input(st, src, p + hl, tot - hl);
		break;
	case DP_PROTO_ICMP:
		dp_icmp_input(st, src, p + hl, tot - hl);
		break;
	default:
		if (!dp_exception(st))
			st->stats.drop_ip_proto++;
	}
}

uint8_t *
dp_ip_tx_begin(struct dp_stack *st, uint32_t dst, size_t l4max, struct dp_txctx *tx)
{
	size_t l3max = DP_IP_HLEN + l4max;
	if (l3max > st->conf.mtu)
		l3max = st->conf.mtu;
	uint32_t hop = dst;
	if (((dst ^ st->conf.ipv4) & st->conf.netmask) != 0 && st->conf.gateway != 0)
		hop = st->conf.gateway;
	struct dp_arp_entry *e = dp_arp_lookup(st, hop, true);
	if (e == NULL)
		return NULL;
	tx->dst = dst;
	if (e->state == 2) {
		uint8_t *p = dp_eth_tx_begin(st, e->mac, DP_ETH_IPV4, l3max, tx);
		return p != NULL ? p + DP_IP_HLEN : NULL;
	}
	/* Unresolved: the frame waits in the entry, replacing an older one. */
	if (e->pend_len != 0)
		st->stats.arp_queue_drop++;
	e->pend_len = 0;
	if (e->tries == 0) {
		e->tries = 1;
		e->expires = dp_now(st) + 1000;
		dp_arp_request(st, hop);
	}
	tx->park = e;
	tx->frame = e->pend;
	tx->h = NULL;
	memset(e->pend, 0, 6);
	memcpy(e->pend + 6, st->conf.mac, 6);
	wr16(e->pend + 12, DP_ETH_IPV4);
	return e->pend + DP_ETH_HLEN + DP_IP_HLEN;
}

void
dp_ip_tx_end(struct dp_stack *st, struct dp_txctx *tx, uint8_t proto, size_t l4len)
{
	uint8_t *ip = tx->frame + DP_ETH_HLEN;
	size_t tot = DP_IP_HLEN + l4len;
	ip[0] = 0x45;
	ip[1] = 0;
	wr16(ip + 2, (uint16_t)tot);
	wr16(ip + 4, 0);
	wr16(ip + 6, 0x4000);   /* DF */
	ip[8] = DP_IP_TTL;
	ip[9] = proto;
	wr16(ip + 10, 0);
	wr32(ip + 12, st->conf.ipv4);
	wr32(ip + 16, tx->dst);
	if (!(st->conf.offload & DP_STACK_TX_CSUM))
		wr16(ip + 10, dp_csum_fold(dp_csum_add(0, ip, DP_IP_HLEN)));
	if (tx->park != NULL)
		tx->park->pend_len = (uint16_t)(DP_ETH_HLEN + tot);
	else
		dp_eth_tx_end(st, tx, tot);
}
