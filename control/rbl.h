/*
 * rbl.h - DNS block and allow lists (DNSBL/DNSWL) for the client address at
 * connect time (DESIGN.md, life cycle step 1).
 *
 * Contract
 *   Each configured zone is asked for the client's address (IPv4: its four
 *   octets reversed, "2.0.0.127.zone"; IPv6: its 32 nibbles reversed,
 *   RFC 5782) as an A query. A zone entry counts when the zone answers with
 *   an address in 127.0.0.0/8 (or exactly its `code`, for "zone=127.0.0.2"
 *   entries); 127.255.255.0/24 is a list's refusal (Spamhaus answers it to
 *   open resolvers) and any address outside 127/8 a broken resolver: both
 *   count as not listed and are logged. The client's score is the sum of
 *   the weights of the entries that count (allow lists have negative
 *   weights). A zone that cannot be asked (timeout, SERVFAIL, refused) is a
 *   failure; the answer is then
 *     CTL_RBL_LISTED   when the score reaches the threshold whatever the
 *                      failed zones would have said,
 *     CTL_RBL_PASS     when it stays below whatever they would have said,
 *     CTL_RBL_TEMPFAIL otherwise: never an accept that a list could have
 *                      refused.
 *
 *   Threads: one resolver thread runs c-ares. Workers call ctl_rbl_check():
 *   an address in the cache is answered at once, with no lock (the cache is
 *   a liburcu lock-free hash table read under the memb flavour's read lock;
 *   the calling thread must be registered with urcu memb); any other is
 *   handed to the resolver thread through a wait-free queue, and q->done()
 *   is called later on that thread. Only complete answers are cached, for
 *   the smallest TTL of the listing answers (at most cache_ttl) or for
 *   negative_ttl when no zone lists the address; the cache holds at most
 *   cache_max addresses (expired ones go first).
 *
 *   Memory: the request is the caller's (inside its connection); nothing is
 *   allocated per check on the worker.
 */
#ifndef CTL_RBL_H
#define CTL_RBL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <urcu/wfcqueue.h>

#include "control/net.h"

#define CTL_RBL_ZONES_MAX 32

struct ctl_rbl_zone {
	char *zone;                    /* "zen.spamhaus.org", no trailing dot */
	double weight;                 /* negative: an allow list */
	uint32_t code;                 /* host order; 0: any 127/8 answer */
	unsigned line;                 /* in the config file */
};

struct ctl_rbl_conf {
	const struct ctl_rbl_zone *zones;
	unsigned nzones;
	double threshold;              /* score at which the client is refused */
	const char *servers;           /* "127.0.0.1:5353,..."; NULL: resolv.conf */
	uint64_t timeout_ms;           /* for every zone of one address */
	uint64_t cache_ttl_ms;         /* cap on a listing's TTL */
	uint64_t negative_ttl_ms;      /* an address no zone lists */
	uint32_t cache_max;            /* addresses cached */
	const struct ctl_net *skip;     /* never looked up (rbl.skip) */
	unsigned nskip;
};

enum ctl_rbl_verdict { CTL_RBL_PASS = 0, CTL_RBL_LISTED, CTL_RBL_TEMPFAIL, CTL_RBL_SKIPPED };

struct ctl_rbl_req {
	/* in */
	uint8_t addr[16];              /* IPv4 as ::ffff:a.b.c.d */
	void (*done)(struct ctl_rbl_req *q); /* resolver thread; after the answer */
	void *ctx;
	/* out */
	enum ctl_rbl_verdict verdict;
	double score;
	uint32_t listed;               /* bit i: zone entry i counts */
	uint32_t failed;               /* bit i: zone entry i could not be asked */
	bool cached;                   /* answered from the cache */
	/* the resolver's */
	struct cds_wfcq_node node;
	unsigned pending;
	uint64_t ttl_ms;
};

struct ctl_rbl;

/* Starts the resolver thread. NULL with err filled on failure. conf's
 * arrays and strings must outlive the handle. */
struct ctl_rbl *ctl_rbl_start(const struct ctl_rbl_conf *conf, char *err, size_t errlen);
/* Stops the thread; requests still out are answered TEMPFAIL first. */
struct ctl_rbl *ctl_rbl_stop(struct ctl_rbl *r);

/* addr is in the skip list (never looked up). */
bool ctl_rbl_addr_skipped(const struct ctl_rbl *r, const uint8_t addr[16]);

/* 0: answered now (q's out fields set, done() not called); 1: pending,
 * q->done(q) follows on the resolver thread. */
int ctl_rbl_check(struct ctl_rbl *r, struct ctl_rbl_req *q);

/* The zone entries that q->listed (or q->failed) names, comma-separated,
 * into buf. */
void ctl_rbl_zones_str(const struct ctl_rbl *r, uint32_t bits, char *buf, size_t len);

struct ctl_rbl_stats {
	uint64_t checks, cache_hits, queries, listed, passed, tempfail, skipped, refused_answers;
};
void ctl_rbl_stats(const struct ctl_rbl *r, struct ctl_rbl_stats *st);

/* The query name for addr in zone ("4.3.2.1.zone"); -1 when it does not
 * fit. For tests. */
int ctl_rbl_qname(const uint8_t addr[16], const char *zone, char *out, size_t len);

#endif
