/*
 * verify.h - recipient verification at RCPT: the mailbox server is asked
 * over LMTP whether it would take the recipient (DESIGN.md, life cycle
 * step 2: unknown mailboxes refused at RCPT with 5xx, a backend that cannot
 * be asked gives 4xx).
 *
 * Contract
 *   The recipient's domain picks the backend as delivery does (lmtp.routes,
 *   else lmtp.default). The verifier thread keeps one LMTP connection per
 *   backend open and asks MAIL FROM:<> / RCPT TO:<rcpt> / RSET; nothing is
 *   delivered. The answer:
 *     2xx            the recipient passes (cached for ttl);
 *     5xx            550 with the backend's status (5.1.1 ...) and text
 *                    (cached for negative_ttl);
 *     4xx            450 4.1.1, the backend's reason (not cached);
 *     no answer      451 4.4.1: the backend cannot be asked (not cached).
 *   A connection found broken is reopened once per request. Recipients are
 *   compared without case; the cache (CTL_VFY_CACHE slots, owned by the
 *   thread) holds the latest answers, a newer one replacing an older one in
 *   its slot.
 *
 *   Threads: workers hand requests over a wait-free queue and get q->done()
 *   on the verifier thread.
 */
#ifndef CTL_VERIFY_H
#define CTL_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <urcu/wfcqueue.h>

#include "control/spool.h"

#define CTL_VFY_ADDR_MAX 256
#define CTL_VFY_CACHE 8192u

struct ctl_verify_conf {
	const char *hostname;          /* LHLO name */
	const char *dflt;              /* lmtp.default, or NULL */
	const struct ctl_route *routes;
	unsigned nroutes;
	uint64_t timeout_ms;
	uint64_t ttl_ms, negative_ttl_ms;
};

struct ctl_vfy_req {
	/* in */
	char rcpt[CTL_VFY_ADDR_MAX];
	void (*done)(struct ctl_vfy_req *q);
	void *ctx;
	/* out: code 250 to pass, else the reply to give */
	uint16_t code;
	char enh[12];
	char text[160];
	bool cached;
	/* the thread's */
	struct cds_wfcq_node node;
};

struct ctl_verify;

struct ctl_verify *ctl_verify_start(const struct ctl_verify_conf *conf, char *err, size_t errlen);
/* Requests still queued are answered 451 first. */
struct ctl_verify *ctl_verify_stop(struct ctl_verify *v);

/* Always pending: q->done(q) follows on the verifier thread. */
void ctl_verify_check(struct ctl_verify *v, struct ctl_vfy_req *q);

struct ctl_verify_stats {
	uint64_t checks, cache_hits, passed, unknown, tempfail;
};
void ctl_verify_stats(const struct ctl_verify *v, struct ctl_verify_stats *st);

/* rcpt's domain is one of domains[0..n) ("example.org" exactly, or
 * ".example.org" for its subdomains); true when n is 0. */
bool ctl_domain_listed(const char *const *domains, unsigned n, const char *rcpt);

/* addr matches one of list[0..n) (lower case): "user@example.org" exactly,
 * "@example.org" or "example.org" any user there, "@.example.org" or
 * ".example.org" any user in its subdomains, "user@" that local part in any
 * domain. The null sender "" matches nothing. */
bool ctl_access_match(char *const *list, unsigned n, const char *addr);

#endif
