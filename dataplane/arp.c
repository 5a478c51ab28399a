/*
 * arp.c - ARP (RFC 826) for one IPv4 address: answers requests for it and
 * resolves next hops through a small bounded cache. An entry lives
 * DP_ARP_TTL_MS after its last reply; an unresolved one is asked for
 * DP_ARP_TRIES times, a second apart, and holds at most one frame (the
 * newest) until answered. Entries are created only by our own lookups and
 * by requests addressed to us, never by unsolicited replies.
 */
#include "dataplane/stack_impl.h"

#define DP_ARP_LEN      28
#define DP_ARP_TTL_MS   60000u
#define DP_ARP_RETRY_MS 1000u
#define DP_ARP_TRIES    3

static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

static void
arp_send(struct dp_stack *st, uint16_t op, const uint8_t tha[6], uint32_t tpa, const uint8_t dmac[6])
{
	struct dp_txctx tx;
	uint8_t *p = dp_eth_tx_begin(st, dmac, DP_ETH_ARP, DP_ARP_LEN, &tx);
	if (p == NULL)
		return;
	wr16(p, 1);
	wr16(p + 2, DP_ETH_IPV4);
	p[4] = 6;
	p[5] = 4;
	wr16(p + 6, op);
	memcpy(p + 8, st->conf.mac, 6);
	wr32(p + 14, st->conf.ipv4);
	memcpy(p + 18, tha, 6);
	wr32(p + 24, tpa);
	dp_eth_tx_end(st, &tx, DP_ARP_LEN);
}

void
dp_arp_request(struct dp_stack *st, uint32_t ip)
{
	static const uint8_t zero[6];
	st->stats.arp_requests_out++;
	arp_send(st, 1, zero, ip, bcast);
}

struct dp_arp_entry *
dp_arp_lookup(struct dp_stack *st, uint32_t ip, bool create)
{
	struct dp_arp_entry *freeslot = NULL, *victim = NULL;
	for (uint32_t i = 0; i < st->conf.arp_max; i++) {
		struct dp_arp_entry *e = &st->arp[i];
		if (e->state != 0 && e->ip == ip)
			return e;
		if (e->state == 0) {
			if (freeslot == NULL)
				freeslot = e;
		} else if (e->state == 2 && (victim == NULL || e->expires < victim->expires)) {
			victim = e;
		}
	}
	if (!create)
		return NULL;
	if (freeslot == NULL) {
		/* Full: reuse the resolved entry closest to expiry; incomplete
		 * ones keep their queued frame until they time out. */
		if (victim == NULL) {
			st->stats.arp_full++;
			return NULL;
		}
		freeslot = victim;
	}
	freeslot->ip = ip;
	freeslot->state = 1;
	freeslot->tries = 0;
	freeslot->expires = 0;
	freeslot->pend_len = 0;
	return freeslot;
}

static void
arp_resolved(struct dp_stack *st, struct dp_arp_entry *e, const uint8_t mac[6])
{
	memcpy(e->mac, mac, 6);
	e->state = 2;
	e->expires = dp_now(st) + DP_ARP_TTL_MS;
	if (e->pend_len != 0) {
		struct dp_txctx tx;
		size_t l3 = e->pend_len - DP_ETH_HLEN;
		uint8_t *p = dp_eth_tx_begin(st, mac, DP_ETH_IPV4, l3, &tx);
		if (p != NULL) {
			memcpy(p, e->pend + DP_ETH_HLEN, l3);
			dp_eth_tx_end(st, &tx, l3);
		}
		e->pend_len = 0;
	}
}

void
dp_arp_input(struct dp_stack *st, const uint8_t *p, size_t len)
{
	if (len < DP_ARP_LEN || rd16(p) != 1 || rd16(p + 2) != DP_ETH_IPV4 || p[4] != 6 || p[5] != 4) {
		st->stats.drop_arp_bad++;
		return;
	}
	uint16_t op = rd16(p + 6);
	const uint8_t *sha = p + 8;
	uint32_t spa = rd32(p + 14), tpa = rd32(p + 24);
	if ((op != 1 && op != 2) || (sha[0] & 1) || spa == 0 || spa == 0xffffffffu ||
	    spa == st->conf.ipv4) {
		st->stats.drop_arp_bad++;
		return;
	}
	/* RFC 826 merge: refresh a sender we already know. */
	struct dp_arp_entry *e = dp_arp_lookup(st, spa, false);
	if (e != NULL) {
		if (op == 2)
			st->stats.arp_replies_in++;
		arp_resolved(st, e, sha);
	}
	if (tpa != st->conf.ipv4) {
		if (e == NULL)
			st->stats.drop_arp_other++;
		return;
	}
	if (op == 1) {
		/* A peer about to talk to us: learn it, if on our subnet. */
		if (e == NULL && ((spa ^ st->conf.ipv4) & st->conf.netmask) == 0 &&
		    (e = dp_arp_lookup(st, spa, true)) != NULL)
			arp_resolved(st, e, sha);
		st->stats.arp_replies_out++;
		arp_send(st, 2, sha, spa, sha);
	} else if (e == NULL) {
		st->stats.drop_arp_other++;  /* unsolicited reply */
	}
}

/* Retries and expiry; runs every 250 ms from dp_stack_poll(). */
void
dp_arp_poll(struct dp_stack *st)
{
	uint64_t now = dp_now(st);
	st->arp_next_scan = now + 250;
	for (uint32_t i = 0; i < st->conf.arp_max; i++) {
		struct dp_arp_entry *e = &st->arp[i];
		if (e->state == 2 && now >= e->expires) {
			e->state = 0;  /* re-resolved on next use */
		} else if (e->state == 1 && now >= e->expires) {
			if (e->tries > DP_ARP_TRIES) {
				st->stats.arp_timeout++;
				if (e->pend_len)
					st->stats.arp_queue_drop++;
				e->state = 0;
				e->pend_len = 0;
				continue;
			}
			e->tries++;
			e->expires = now + DP_ARP_RETRY_MS;
			dp_arp_request(st, e->ip);
		}
	}
}
