/*
 * perclient.c - per-client limits in count-min sketches; see perclient.h.
 */
#include "control/perclient.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct ctl_limits {
	struct ctl_limits_conf conf;
	_Atomic uint32_t conns_max, msgs_max;  /* conf's, changed by a reload */
	struct ctl_net skip[CTL_NETS_MAX];
	_Atomic uint32_t conns[2][CTL_LIMITS_SLOTS];
	_Atomic uint64_t msgs[2][CTL_LIMITS_SLOTS];  /* window << 32 | count */
};

static uint32_t
mix(const uint8_t a[16], uint64_t seed)
{
	uint64_t x, y;
	memcpy(&x, a, 8);
	memcpy(&y, a + 8, 8);
	uint64_t h = (x ^ seed) * 0x9e3779b97f4a7c15ull;
	h ^= (y + (h >> 29)) * 0xbf58476d1ce4e5b9ull;
	h ^= h >> 31;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 32;
	return (uint32_t)h & (CTL_LIMITS_SLOTS - 1);
}

static void
slots(const uint8_t a[16], uint32_t s[2])
{
	s[0] = mix(a, 0x243f6a8885a308d3ull);
	s[1] = mix(a, 0x13198a2e03707344ull);
}

struct ctl_limits *
ctl_limits_new(const struct ctl_limits_conf *conf)
{
	struct ctl_limits *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->conf = *conf;
	if (conf->nskip > CTL_NETS_MAX)
		l->conf.nskip = CTL_NETS_MAX;
	if (l->conf.nskip > 0)
		memcpy(l->skip, conf->skip, l->conf.nskip * sizeof(*l->skip));
	l->conf.skip = l->skip;
	ctl_limits_set(l, conf->conns_per_client, conf->msgs_per_minute);
	return l;
}

void
ctl_limits_set(struct ctl_limits *l, uint32_t conns_per_client, uint32_t msgs_per_minute)
{
	atomic_store_explicit(&l->conns_max, conns_per_client, memory_order_relaxed);
	atomic_store_explicit(&l->msgs_max, msgs_per_minute, memory_order_relaxed);
}

struct ctl_limits *
ctl_limits_free(struct ctl_limits *l)
{
	free(l);
	return NULL;
}

bool
ctl_limits_conn_take(struct ctl_limits *l, const uint8_t addr[16])
{
	if (ctl_nets_match(l->conf.skip, l->conf.nskip, addr))
		return true;
	/* counted even with no limit set, so that a reload that sets one
	 * finds the connections already open */
	uint32_t max = atomic_load_explicit(&l->conns_max, memory_order_relaxed);
	uint32_t s[2];
	slots(addr, s);
	uint32_t a = atomic_fetch_add_explicit(&l->conns[0][s[0]], 1, memory_order_relaxed);
	uint32_t b = atomic_fetch_add_explicit(&l->conns[1][s[1]], 1, memory_order_relaxed);
	if (max == 0 || (a < b ? a : b) < max)
		return true;
	atomic_fetch_sub_explicit(&l->conns[0][s[0]], 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&l->conns[1][s[1]], 1, memory_order_relaxed);
	return false;
}

void
ctl_limits_conn_put(struct ctl_limits *l, const uint8_t addr[16])
{
	if (ctl_nets_match(l->conf.skip, l->conf.nskip, addr))
		return;
	uint32_t s[2];
	slots(addr, s);
	atomic_fetch_sub_explicit(&l->conns[0][s[0]], 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&l->conns[1][s[1]], 1, memory_order_relaxed);
}

/* This window's count in *slot plus one; the count before. */
static uint32_t
window_add(_Atomic uint64_t *slot, uint32_t win)
{
	uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
	for (;;) {
		uint32_t n = (uint32_t)(old >> 32) == win ? (uint32_t)old : 0;
		uint64_t nv = (uint64_t)win << 32 | (n + 1);
		if (atomic_compare_exchange_weak_explicit(slot, &old, nv, memory_order_relaxed,
		                                          memory_order_relaxed))
			return n;
	}
}

bool
ctl_limits_msg_take(struct ctl_limits *l, const uint8_t addr[16], uint64_t now_s)
{
	uint32_t max = atomic_load_explicit(&l->msgs_max, memory_order_relaxed);
	if (max == 0 || ctl_nets_match(l->conf.skip, l->conf.nskip, addr))
		return true;
	uint32_t s[2], win = (uint32_t)(now_s / 60);
	slots(addr, s);
	uint32_t a = window_add(&l->msgs[0][s[0]], win);
	uint32_t b = window_add(&l->msgs[1][s[1]], win);
	/* a refused message still counts: a client that keeps trying stays
	 * refused for the rest of the minute */
	return (a < b ? a : b) < max;
}
