/*
 * eth.c - the stack's entry points (new/free/input/poll) and the Ethernet
 * layer; checksums and the keyed hash shared by the other files.
 * See stack.h for the contract.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>

#include "dataplane/stack_impl.h"

static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

/* One's-complement sum (RFC 1071) in network order. The sum is byte-order
 * independent (RFC 1071 2(B)), so the buffer is summed as native 64-bit
 * words with their carries counted apart (add, adc: four words a step),
 * folded to 16 bits and swapped once. An odd last byte is the high byte of
 * a zero-padded word. Unaligned p is fine (memcpy loads). */
uint32_t
dp_csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	uint64_t a = 0, c = 0, v0, v1, v2, v3;
	while (n >= 32) {
		memcpy(&v0, p, 8);
		memcpy(&v1, p + 8, 8);
		memcpy(&v2, p + 16, 8);
		memcpy(&v3, p + 24, 8);
		a += v0;
		c += a < v0;
		a += v1;
		c += a < v1;
		a += v2;
		c += a < v2;
		a += v3;
		c += a < v3;
		p += 32;
		n -= 32;
	}
	while (n >= 8) {
		memcpy(&v0, p, 8);
		a += v0;
		c += a < v0;
		p += 8;
		n -= 8;
	}
	v0 = 0;             /* 0-7 bytes left, the rest zero: an odd byte pads right */
	if (n & 4) {
		uint32_t w;
		memcpy(&w, p, 4);
		v0 = w;
		p += 4;
	}
	if (n & 2) {
		uint16_t h;
		memcpy(&h, p, 2);
		v0 |= (uint64_t)h << (8 * (n & 4));
		p += 2;
	}
	if (n & 1)
		v0 |= (uint64_t)p[0] << (8 * (n & 6));
	a += v0;
	c += a < v0;
	a += c;             /* c is small: one more carry at most */
	a += a < c;
	uint32_t x = (uint32_t)a + (uint32_t)(a >> 32);
	x += x < (uint32_t)a;
	x = (x & 0xffff) + (x >> 16);
	x = (x & 0xffff) + (x >> 16);
#if __BYTE_ORDER == __LITTLE_ENDIAN
	x = (uint32_t)__builtin_bswap16((uint16_t)x);
#endif
	uint64_t r = (uint64_t)sum + x;
	return (uint32_t)r + (uint32_t)(r >> 32);
}

uint16_t
dp_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* SipHash-2-4 (Aumasson, Bernstein 2012), written from the paper. */
#define ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { \
	v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); \
	v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2; \
	v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; \
	v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32); \
} while (0)

uint64_t
dp_siphash(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t m = 0;
		for (int j = 7; j >= 0; j--)
			m = m << 8 | p[i + (size_t)j];
		v3 ^= m;
		SIPROUND; SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)n << 56;
	for (size_t j = 0; i + j < n; j++)
		b |= (uint64_t)p[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND; SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND; SIPROUND; SIPROUND; SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* SipHash-1-3 of one 64-bit word (the message is m's 8 bytes in
 * little-endian order): for hash tables, where the key only has to keep
 * peers from choosing colliding inputs; the ISNs and cookies keep 2-4. */
uint64_t
dp_siphash13_u64(uint64_t k0, uint64_t k1, uint64_t m)
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	v3 ^= m;
	SIPROUND;
	v0 ^= m;
	uint64_t b = 8ull << 56;
	v3 ^= b;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND; SIPROUND; SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint8_t *
dp_eth_tx_begin(struct dp_stack *st, const uint8_t dmac[6], uint16_t type, size_t l3max,
                struct dp_txctx *tx)
{
	uint8_t *f = st->io->tx_buf(st->io_ctx, DP_ETH_HLEN + l3max, &tx->h);
	if (f == NULL) {
		st->stats.tx_nobuf++;
		return NULL;
	}
	memcpy(f, dmac, 6);
	memcpy(f + 6, st->conf.mac, 6);
	wr16(f + 12, type);
	tx->frame = f;
	tx->park = NULL;
	return f + DP_ETH_HLEN;
}

void
dp_eth_tx_end(struct dp_stack *st, struct dp_txctx *tx, size_t l3len)
{
	st->stats.tx_frames++;
	st->io->tx_send(st->io_ctx, tx->h, DP_ETH_HLEN + l3len);
}

void
dp_stack_input(struct dp_stack *st, const uint8_t *f, size_t len)
{
	st->stats.rx_frames++;
	if (len < DP_ETH_HLEN) {
		st->stats.drop_eth_short++;
		return;
	}
	/* Ours, broadcast; everything else (multicast too) is not for us. */
	if (memcmp(f, st->conf.mac, 6) != 0 && memcmp(f, bcast, 6) != 0 && !dp_ip6_mac_ok(st, f)) {
		st->stats.drop_eth_dst++;
		return;
	}
	uint16_t type = rd16(f + 12);
	st->rx_frame = f;   /* for dp_exception() */
	st->rx_len = len;
	if (type == DP_ETH_IPV4) {
		dp_ip_input(st, f + DP_ETH_HLEN, len - DP_ETH_HLEN);
	} else if (type == DP_ETH_ARP) {
		dp_arp_input(st, f + DP_ETH_HLEN, len - DP_ETH_HLEN);
		dp_exception(st);  /* the kernel keeps its neighbour cache too */
	} else if (type == 0x86dd) {
		dp_ip6_input(st, f + 6, f + DP_ETH_HLEN, len - DP_ETH_HLEN);
	} else if (!dp_exception(st)) {
		st->stats.drop_eth_type++;
	}
	st->rx_frame = NULL;
}

static void __attribute__((noinline))
poll_due(struct dp_stack *st, uint64_t now)
{
	if (dp_wheel_due(&st->wheel, now))
		dp_wheel_expire(&st->wheel, now, dp_tcp_timer_fire, st);
	if (now >= st->arp_next_scan)
		dp_arp_poll(st);
}

/* Called on every pass of a busy loop: most passes have nothing due, so
 * the checks come before any call. */
void
dp_stack_poll(struct dp_stack *st)
{
	uint64_t now = dp_now(st);
	if (dp_wheel_due(&st->wheel, now) || now >= st->arp_next_scan)
		poll_due(st, now);
}

uint64_t
dp_stack_idle_ms(const struct dp_stack *st, uint64_t cap)
{
	uint64_t now = dp_now(st);
	uint64_t d = dp_wheel_idle_ms(&st->wheel, now, cap);
	uint64_t a = st->arp_next_scan > now ? st->arp_next_scan - now : 0;
	return a < d ? a : d;
}

const struct dp_stack_stats *
dp_stack_stats(const struct dp_stack *st)
{
	return &st->stats;
}

struct dp_stack *
dp_stack_new(const struct dp_stack_conf *conf, const struct dp_stack_io *io, void *io_ctx,
             struct dp_worker *w, const struct dp_app_ops *ops, void *worker_app)
{
	if (conf == NULL || io == NULL || w == NULL || ops == NULL || conf->conn_max == 0 ||
	    conf->nlisten > DP_STACK_LISTEN_MAX || conf->ipv4 == 0) {
		errno = EINVAL;
		return NULL;
	}
	struct dp_stack *st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NULL;
	st->conf = *conf;
	struct dp_stack_conf *c = &st->conf;
	if (c->mtu == 0)
		c->mtu = 1500;
	if (c->mtu < 576 || c->mtu > 9000) {
		free(st);
		errno = EINVAL;
		return NULL;
	}
	if (c->rx_buf == 0)
		c->rx_buf = 65536;
	if (c->tx_buf == 0)
		c->tx_buf = 65536;
	if (c->rx_buf < 2048 || c->rx_buf > (1u << 30) || c->tx_buf < 2048 || c->tx_buf > (1u << 30)) {
		free(st);
		errno = EINVAL;
		return NULL;
	}
	if (c->rx_bufs == 0)
		c->rx_bufs = c->conn_max;
	if (c->tx_bufs == 0)
		c->tx_bufs = c->conn_max;
	if (c->time_wait_max == 0)
		c->time_wait_max = c->conn_max / 4 ? c->conn_max / 4 : 1;
	if (c->time_wait_ms == 0)
		c->time_wait_ms = 2000;
	if (c->arp_max == 0)
		c->arp_max = 64;
	st->io = io;
	st->io_ctx = io_ctx;
	st->w = w;
	st->ops = ops;
	st->wapp = worker_app;
	st->mss_local = (uint16_t)(c->mtu - DP_IP_HLEN - DP_TCP_HLEN);
	while (st->rcv_wscale < 14 && (c->rx_buf >> st->rcv_wscale) > 65535)
		st->rcv_wscale++;
	memcpy(&st->sip_k0, c->secret, 8);
	memcpy(&st->sip_k1, c->secret + 8, 8);
	/* Keys of their own for the cheaper SipHash-1-3 uses (flow table, TS
	 * offsets), so that nothing they reveal bears on the ISN and cookie
	 * key. */
	st->flow_k[0] = dp_siphash(st->sip_k0, st->sip_k1, (const uint8_t *)"flow key 0", 10);
	st->flow_k[1] = dp_siphash(st->sip_k0, st->sip_k1, (const uint8_t *)"flow key 1", 10);
	st->ts_k[0] = dp_siphash(st->sip_k0, st->sip_k1, (const uint8_t *)"tsoff key 0", 11);
	st->ts_k[1] = dp_siphash(st->sip_k0, st->sip_k1, (const uint8_t *)"tsoff key 1", 11);
	dp_wheel_init(&st->wheel, w->now);

	uint32_t hsize = 64;
	while (hsize < c->conn_max * 2 && hsize < (1u << 30))
		hsize <<= 1;
	st->hmask = hsize - 1;
	st->htab = calloc(hsize, sizeof(*st->htab));
	st->tcbs = calloc(c->conn_max, sizeof(*st->tcbs));
	size_t rxsz = (sizeof(struct dp_rxbuf) + c->rx_buf + 63) & ~(size_t)63;
	size_t txsz = (sizeof(struct dp_txbuf) + c->tx_buf + 63) & ~(size_t)63;
	/* calloc'd slabs: pages are touched only when a buffer is first used. */
	st->rx_slab = calloc(c->rx_bufs, rxsz);
	st->tx_slab = calloc(c->tx_bufs, txsz);
	st->arp = calloc(c->arp_max, sizeof(*st->arp));
	st->arp_pend = calloc(c->arp_max, (size_t)c->mtu + DP_ETH_HLEN);
	st->scratch_big = malloc(c->mtu);
	if (st->htab == NULL || st->tcbs == NULL || st->rx_slab == NULL || st->tx_slab == NULL ||
	    st->arp == NULL || st->arp_pend == NULL || st->scratch_big == NULL) {
		dp_stack_free(st);
		errno = ENOMEM;
		return NULL;
	}
	for (uint32_t i = c->conn_max; i-- > 0;) {
		st->tcbs[i].hnext = st->free_tcb;
		st->free_tcb = &st->tcbs[i];
	}
	for (uint32_t i = c->rx_bufs; i-- > 0;) {
		struct dp_rxbuf *b = (struct dp_rxbuf *)(st->rx_slab + i * rxsz);
		b->next_free = st->free_rx;
		st->free_rx = b;
	}
	for (uint32_t i = c->tx_bufs; i-- > 0;) {
		struct dp_txbuf *b = (struct dp_txbuf *)(st->tx_slab + i * txsz);
		b->next_free = st->free_tx;
		st->free_tx = b;
	}
	for (uint32_t i = 0; i < c->arp_max; i++)
		st->arp[i].pend = st->arp_pend + (size_t)i * (c->mtu + DP_ETH_HLEN);
	st->next_port = (uint16_t)(32768 + (dp_siphash(st->sip_k0, st->sip_k1, (const uint8_t *)"port", 4) & 16383));
	st->arp_next_scan = w->now + 250;
	st->synq_max = c->conn_max / 8 < DP_SYNQ_MAX ? c->conn_max / 8 : DP_SYNQ_MAX;
	if (st->synq_max == 0)
		st->synq_max = 1;
	return st;
}

struct dp_stack *
dp_stack_free(struct dp_stack *st)
{
	if (st == NULL)
		return NULL;
	if (st->tcbs != NULL) {
		for (uint32_t i = 0; i < st->conf.conn_max; i++) {
			struct dp_tcb *c = &st->tcbs[i];
			if (c->state != DP_TCP_CLOSED && !c->released) {
				c->aborting = true;  /* no RST: the port is going away */
				c->state = DP_TCP_CLOSED;
				dp_tcp_detach(c, -ESHUTDOWN);
				dp_tcp_release(c);
			}
		}
	}
	free(st->htab);
	free(st->tcbs);
	free(st->rx_slab);
	free(st->tx_slab);
	free(st->arp);
	free(st->arp_pend);
	free(st->scratch_big);
	free(st);
	return NULL;
}
