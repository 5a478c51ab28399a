/*
 * rcache.h - a bounded cache of answers that many threads read without a
 * lock and one thread writes: the DNS lists' answers per address (rbl.c),
 * the greylist's passed triplets (greylist.c).
 *
 * Contract
 *   A liburcu lock-free hash table (cds_lfht, memb flavour). Readers call
 *   ctl_rcache_get() from any thread registered with urcu memb: it takes
 *   the read lock itself, copies the value out, allocates nothing. One
 *   thread, the owner (registered too), calls ctl_rcache_put() and
 *   ctl_rcache_clear(): a new entry replaces one with the same key; at
 *   `max` entries the expired ones go first, then any, down to nine tenths;
 *   entries are freed after a grace period (call_rcu). Keys are up to
 *   CTL_RCACHE_KEY_MAX bytes, values up to CTL_RCACHE_VAL_MAX.
 *
 *   ctl_rcache_clear() (owner, before it unregisters) empties the table and
 *   waits for the frees; ctl_rcache_free() then releases it from any thread.
 */
#ifndef CTL_RCACHE_H
#define CTL_RCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_RCACHE_KEY_MAX 640
#define CTL_RCACHE_VAL_MAX 32

struct ctl_rcache;

/* NULL when out of memory. max 0: nothing is ever kept. */
struct ctl_rcache *ctl_rcache_new(unsigned long max);
/* The value of key if it is there and not expired at now_ms (into val,
 * vlen bytes at most); false otherwise. Any registered thread. */
bool ctl_rcache_get(struct ctl_rcache *c, const void *key, size_t klen, void *val, size_t vlen,
                    uint64_t now_ms);
/* Owner thread only. Silently keeps nothing when out of memory or when the
 * key or value is too long. */
void ctl_rcache_put(struct ctl_rcache *c, const void *key, size_t klen, const void *val,
                    size_t vlen, uint64_t expires_ms, uint64_t now_ms);
void ctl_rcache_clear(struct ctl_rcache *c);
void ctl_rcache_free(struct ctl_rcache *c);

#endif
