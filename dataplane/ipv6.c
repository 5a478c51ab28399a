/*
 * ipv6.c - IPv6 (RFC 8200) for ping and neighbour discovery only:
 * answers Neighbor Solicitations for our addresses (RFC 4861 7.2.4) and
 * Echo Requests (RFC 4443 4.1). Our addresses: conf.ipv6 (if set) and the
 * link-local fe80::/64 address formed from the MAC (modified EUI-64,
 * RFC 4291 2.5.1). Replies go to the Ethernet source of the request,
 * so no neighbour cache is kept. No TCP over IPv6 yet (counted, dropped),
 * no extension headers, no fragments.
 */
#include "dataplane/stack_impl.h"

#define DP_IP6_HLEN   40
#define DP_PROTO_ICMP6 58

static void
link_local(const struct dp_stack *st, uint8_t a[16])
{
	memset(a, 0, 16);
	a[0] = 0xfe;
	a[1] = 0x80;
	a[8] = st->conf.mac[0] ^ 2;
	a[9] = st->conf.mac[1];
	a[10] = st->conf.mac[2];
	a[11] = 0xff;
	a[12] = 0xfe;
	a[13] = st->conf.mac[3];
	a[14] = st->conf.mac[4];
	a[15] = st->conf.mac[5];
}

static bool
is_zero(const uint8_t *a)
{
	static const uint8_t z[16];
	return memcmp(a, z, 16) == 0;
}

bool
dp_ip6_ours(const struct dp_stack *st, const uint8_t a[16])
{
	uint8_t ll[16];
	link_local(st, ll);
	return memcmp(a, ll, 16) == 0 || (!is_zero(st->conf.ipv6) && memcmp(a, st->conf.ipv6, 16) == 0);
}

/* ff02::1:ffXX:XXXX for one of our addresses, or ff02::1. */
static bool
our_multicast(const struct dp_stack *st, const uint8_t a[16])
{
	static const uint8_t sn[13] = { 0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff };
	static const uint8_t all[16] = { 0xff, 2, [15] = 1 };
	if (memcmp(a, all, 16) == 0)
		return true;
	if (memcmp(a, sn, 13) != 0)
		return false;
	uint8_t ll[16];
	link_local(st, ll);
	return memcmp(a + 13, ll + 13, 3) == 0 ||
	       (!is_zero(st->conf.ipv6) && memcmp(a + 13, st->conf.ipv6 + 13, 3) == 0);
}

/* Ethernet destinations we accept for IPv6: 33:33 + the low 32 bits. */
bool
dp_ip6_mac_ok(const struct dp_stack *st, const uint8_t mac[6])
{
	if (mac[0] != 0x33 || mac[1] != 0x33)
		return false;
	uint8_t a[16] = { 0xff, 2, [11] = 1 };
	memcpy(a + 12, mac + 2, 4);
	if (a[12] != 0xff) {
		a[11] = 0;
		return a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1;
	}
	return our_multicast(st, a);
}

static uint32_t
pseudo6(const uint8_t src[16], const uint8_t dst[16], uint32_t len, uint8_t nh)
{
	uint8_t ph[40];
	memcpy(ph, src, 16);
	memcpy(ph + 16, dst, 16);
	wr32(ph + 32, len);
	ph[36] = ph[37] = ph[38] = 0;
	ph[39] = nh;
	return dp_csum_add(0, ph, sizeof(ph));
}

/* ICMPv6 message (body filled by the caller at the returned pointer). */
static void
icmp6_send(struct dp_stack *st, const uint8_t dmac[6], const uint8_t src[16], const uint8_t dst[16],
           const uint8_t *msg, size_t len, uint8_t hops)
{
	struct dp_txctx tx;
	uint8_t *ip = dp_eth_tx_begin(st, dmac, 0x86dd, DP_IP6_HLEN + len, &tx);
	if (ip == NULL)
		return;
	wr32(ip, 0x60000000u);
	wr16(ip + 4, (uint16_t)len);
	ip[6] = DP_PROTO_ICMP6;
	ip[7] = hops;
	memcpy(ip + 8, src, 16);
	memcpy(ip + 24, dst, 16);
	uint8_t *m = ip + DP_IP6_HLEN;
	memcpy(m, msg, len);
	wr16(m + 2, 0);
	wr16(m + 2, dp_csum_fold(dp_csum_add(pseudo6(src, dst, (uint32_t)len, DP_PROTO_ICMP6), m, len)));
	dp_eth_tx_end(st, &tx, DP_IP6_HLEN + len);
}

static void
nd_solicit(struct dp_stack *st, const uint8_t *smac, const uint8_t *ip, const uint8_t *m, size_t len)
{
	/* RFC 4861 7.1.1 validation. */
	if (ip[7] != 255 || m[1] != 0 || len < 24 || (m[8] == 0xff)) {
		st->stats.drop_ip6_nd++;
		return;
	}
	const uint8_t *target = m + 8;
	if (!dp_ip6_ours(st, target)) {
		st->stats.drop_ip6_nd++;
		return;
	}
	bool dad = is_zero(ip + 8);
	if (dad && !our_multicast(st, ip + 24)) {
		st->stats.drop_ip6_nd++;
		return;
	}
	uint8_t na[32];
	memset(na, 0, sizeof(na));
	na[0] = 136;
	na[4] = dad ? 0x20 : 0x60;  /* Solicited (unless DAD), Override */
	memcpy(na + 8, target, 16);
	na[24] = 2;                  /* target link-layer address */
	na[25] = 1;
	memcpy(na + 26, st->conf.mac, 6);
	static const uint8_t all[16] = { 0xff, 2, [15] = 1 };
	static const uint8_t all_mac[6] = { 0x33, 0x33, 0, 0, 0, 1 };
	st->stats.nd_adverts_out++;
	icmp6_send(st, dad ? all_mac : smac, target, dad ? all : ip + 8, na, sizeof(na), 255);
}

void
dp_ip6_input(struct dp_stack *st, const uint8_t *smac, const uint8_t *p, size_t len)
{
	if (len < DP_IP6_HLEN) {
		st->stats.drop_ip6_bad++;
		return;
	}
	size_t plen = rd16(p + 4);
	if ((p[0] >> 4) != 6 || plen > len - DP_IP6_HLEN) {
		st->stats.drop_ip6_bad++;
		return;
	}
	const uint8_t *src = p + 8, *dst = p + 24;
	if (!dp_ip6_ours(st, dst) && !our_multicast(st, dst)) {
		st->stats.drop_ip6_dst++;
		return;
	}
	if (src[0] == 0xff || (smac[0] & 1)) {
		st->stats.drop_ip6_bad++;
		return;
	}
	if (p[6] != DP_PROTO_ICMP6) {
		/* TCP over IPv6, extension headers: not yet (or the kernel's). */
		if (!dp_exception(st))
			st->stats.drop_ip6_proto++;
		return;
	}
	const uint8_t *m = p + DP_IP6_HLEN;
	if (plen < 8 || dp_csum_fold(dp_csum_add(pseudo6(src, dst, (uint32_t)plen, DP_PROTO_ICMP6), m, plen)) != 0) {
		st->stats.drop_ip6_bad++;
		return;
	}
	if (m[0] == 135) {
		nd_solicit(st, smac, p, m, plen);
	} else if (m[0] == 128 && m[1] == 0 && dp_ip6_ours(st, dst) && !is_zero(src)) {
		if (plen > (size_t)st->conf.mtu - DP_IP6_HLEN) {
			st->stats.drop_ip6_bad++;
			return;
		}
		/* Echo Reply from the address asked, to the sender's MAC. */
		uint8_t *msg = st->scratch_big;
		memcpy(msg, m, plen);
		msg[0] = 129;
		st->stats.icmp6_echo_out++;
		icmp6_send(st, smac, dst, src, msg, plen, 64);
	} else if (!dp_exception(st)) {  /* NA, RA, MLD, ...: the kernel's */
		st->stats.drop_ip6_type++;
	}
}
