/*
 * greylist.h - greylisting at RCPT on the triplet (client network, sender,
 * recipient), with its state in Redis (DESIGN.md, life cycle step 2).
 *
 * Contract
 *   The first time a triplet is seen it is recorded and the recipient gets
 *   451 4.7.1; a retry within `delay` gets the same; the first retry after
 *   `delay` (and within `retry_window` of the first attempt) passes, and the
 *   triplet then passes at once for `pass_ttl`, renewed at each pass. The
 *   client network is the address cut to ipv4_prefix / ipv6_prefix bits
 *   (senders retry from another host of the same farm); sender and
 *   recipient are compared without case, and a BATV tag (prvs=TAG=user@,
 *   which changes with every message) is dropped from the sender.
 *
 *   One Redis round trip per check: an EVAL of a short script, so that two
 *   sluiced in front of one Redis see one state. Redis keys are
 *   PREFIX + "net|sender|recipient"; a first sighting holds "f:UNIXTIME"
 *   (expires after retry_window), a passed triplet "p" (expires after
 *   pass_ttl). Redis that cannot be reached or answers an error gives
 *   CTL_GL_ERROR; what that means for the client is the caller's
 *   (greylist.on_error).
 *
 *   Passed triplets are also kept in a local cache (control/rcache.h) for
 *   cache_ttl (at most pass_ttl): a repeat sender passes without a Redis
 *   round trip, and keeps passing while Redis is down.
 *
 *   Threads: one thread owns the hiredis connection (reconnecting with a
 *   back-off); workers hand it requests through a wait-free queue and get
 *   q->done() on that thread. Nothing is allocated per check on a worker.
 */
#ifndef CTL_GREYLIST_H
#define CTL_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu/wfcqueue.h>

#include "control/net.h"

#define CTL_GL_ADDR_MAX 256            /* sender / recipient bytes kept */

struct ctl_greylist_conf {
	const char *redis;             /* "host:port", "[v6]:port" or "unix:/path" */
	const char *prefix;            /* key prefix */
	uint64_t timeout_ms;           /* per Redis command and connect */
	uint64_t delay_ms;
	uint64_t retry_window_ms;
	uint64_t pass_ttl_ms;
	unsigned ipv4_prefix, ipv6_prefix;
	uint64_t cache_ttl_ms;         /* passed triplets answered locally; 0: off */
	uint32_t cache_max;
	const struct ctl_net *skip;
	unsigned nskip;
};

enum ctl_gl_verdict { CTL_GL_PASS = 0, CTL_GL_GREY, CTL_GL_ERROR, CTL_GL_SKIPPED };

struct ctl_gl_req {
	/* in */
	uint8_t addr[16];
	char sender[CTL_GL_ADDR_MAX];
	char rcpt[CTL_GL_ADDR_MAX];
	void (*done)(struct ctl_gl_req *q);
	void *ctx;
	/* out */
	enum ctl_gl_verdict verdict;
	uint64_t wait_s;               /* CTL_GL_GREY: seconds until a retry passes */
	bool cached;                   /* CTL_GL_PASS from the local cache */
	/* the thread's */
	struct cds_wfcq_node node;
};

struct ctl_greylist;

struct ctl_greylist *ctl_greylist_start(const struct ctl_greylist_conf *conf, char *err,
                                        size_t errlen);
/* Requests still queued are answered CTL_GL_ERROR first. */
struct ctl_greylist *ctl_greylist_stop(struct ctl_greylist *g);

/* Fills q's triplet from the client address and the two mailboxes. */
void ctl_greylist_req_init(struct ctl_gl_req *q, const uint8_t addr[16], const char *sender,
                           const char *rcpt);

/* 0: answered now (skipped, or a triplet that passed within
 * cache_ttl: from the local cache, which the greylist thread fills with
 * Redis's passes and workers read without a lock; the caller must be
 * registered with urcu memb); 1: pending, q->done(q) follows. */
int ctl_greylist_check(struct ctl_greylist *g, struct ctl_gl_req *q);

/* The Redis key of q's triplet (for tests and the log); -1 if it does not
 * fit. */
int ctl_greylist_key(const struct ctl_greylist_conf *conf, const struct ctl_gl_req *q, char *out,
                     size_t len);

struct ctl_greylist_stats {
	uint64_t checks, passed, greylisted, errors, skipped;
};
void ctl_greylist_stats(const struct ctl_greylist *g, struct ctl_greylist_stats *st);

#endif
