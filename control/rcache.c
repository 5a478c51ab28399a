/*
 * rcache.c - a bounded RCU-read cache; see rcache.h.
 */
#include "control/rcache.h"

#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>
#include <urcu/rculfhash.h>

struct rc_ent {
	struct cds_lfht_node node;
	uint64_t expires_ms;
	uint16_t klen, vlen;
	uint8_t val[CTL_RCACHE_VAL_MAX];
	struct rcu_head rcu;
	uint8_t key[];
};

struct rc_key {
	const void *p;
	size_t n;
};

struct ctl_rcache {
	struct cds_lfht *ht;
	unsigned long max;
	unsigned long n;               /* owner thread only */
};

static unsigned long
key_hash(const void *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;  /* FNV-1a, then a final mix */
	for (const uint8_t *b = p; n--; b++)
		h = (h ^ *b) * 1099511628211ull;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return (unsigned long)h;
}

static int
ent_match(struct cds_lfht_node *node, const void *key)
{
	const struct rc_ent *e = caa_container_of(node, struct rc_ent, node);
	const struct rc_key *k = key;
	return e->klen == k->n && memcmp(e->key, k->p, k->n) == 0;
}

static void
ent_free_rcu(struct rcu_head *h)
{
	free(caa_container_of(h, struct rc_ent, rcu));
}

struct ctl_rcache *
ctl_rcache_new(unsigned long max)
{
	struct ctl_rcache *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->max = max;
	c->ht = cds_lfht_new_flavor(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING,
	                            &urcu_memb_flavor, NULL);
	if (c->ht == NULL) {
		free(c);
		return NULL;
	}
	return c;
}

bool
ctl_rcache_get(struct ctl_rcache *c, const void *key, size_t klen, void *val, size_t vlen,
               uint64_t now_ms)
{
	struct rc_key k = { key, klen };
	struct cds_lfht_iter it;
	bool hit = false;
	urcu_memb_read_lock();
	cds_lfht_lookup(c->ht, key_hash(key, klen), ent_match, &k, &it);
	struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
	if (node != NULL) {
		const struct rc_ent *e = caa_container_of(node, struct rc_ent, node);
		if (e->expires_ms > now_ms) {
			memcpy(val, e->val, vlen < e->vlen ? vlen : e->vlen);
			hit = true;
		}
	}
	urcu_memb_read_unlock();
	return hit;
}

/* Expired entries out; if still over nine tenths of max, any. */
static void
trim(struct ctl_rcache *c, uint64_t now_ms)
{
	struct cds_lfht_iter it;
	struct rc_ent *e;
	unsigned long goal = c->max - c->max / 10;
	for (int pass = 0; pass < 2 && c->n >= goal; pass++) {
		urcu_memb_read_lock();
		cds_lfht_for_each_entry(c->ht, &it, e, node) {
			if (pass == 0 && e->expires_ms > now_ms)
				continue;
			if (cds_lfht_del(c->ht, &e->node) == 0) {
				urcu_memb_call_rcu(&e->rcu, ent_free_rcu);
				c->n--;
			}
			if (pass == 1 && c->n < goal)
				break;
		}
		urcu_memb_read_unlock();
	}
}

void
ctl_rcache_put(struct ctl_rcache *c, const void *key, size_t klen, const void *val, size_t vlen,
               uint64_t expires_ms, uint64_t now_ms)
{
	if (c->max == 0 || expires_ms <= now_ms || klen > CTL_RCACHE_KEY_MAX || vlen > CTL_RCACHE_VAL_MAX)
		return;
	if (c->n >= c->max)
		trim(c, now_ms);
	struct rc_ent *e = malloc(sizeof(*e) + klen);
	if (e == NULL)
		return;
	cds_lfht_node_init(&e->node);
	e->expires_ms = expires_ms;
	e->klen = (uint16_t)klen;
	e->vlen = (uint16_t)vlen;
	if (vlen > 0)
		memcpy(e->val, val, vlen);
	memcpy(e->key, key, klen);
	struct rc_key k = { e->key, klen };
	urcu_memb_read_lock();
	struct cds_lfht_node *old = cds_lfht_add_replace(c->ht, key_hash(key, klen), ent_match, &k,
	                                                 &e->node);
	urcu_memb_read_unlock();
	if (old != NULL)
		urcu_memb_call_rcu(&caa_container_of(old, struct rc_ent, node)->rcu, ent_free_rcu);
	else
		c->n++;
}

void
ctl_rcache_clear(struct ctl_rcache *c)
{
	struct cds_lfht_iter it;
	struct rc_ent *e;
	urcu_memb_read_lock();
	cds_lfht_for_each_entry(c->ht, &it, e, node)
		if (cds_lfht_del(c->ht, &e->node) == 0)
			urcu_memb_call_rcu(&e->rcu, ent_free_rcu);
	urcu_memb_read_unlock();
	c->n = 0;
	urcu_memb_barrier();
}

void
ctl_rcache_free(struct ctl_rcache *c)
{
	if (c == NULL)
		return;
	cds_lfht_destroy(c->ht, NULL);
	free(c);
}
