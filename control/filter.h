/*
 * filter.h - SMTP-time content filtering: the rule engine (scan/) joined to
 * the server, rules published to workers with RCU, verdicts and actions.
 *
 * Contract
 *   Control plane (main thread):
 *     ctl_filter_conf_from_config(&fc, cfg, err)   policy, attachment conf
 *     f = ctl_filter_new(&fc)        checks the rule paths, starts the loader
 *                                    thread, which loads and compiles them
 *                                    (with the cache: ~1 s; cold Debian rules
 *                                    ~2 min); until the first engine is
 *                                    published ctl_filter_begin() says -EAGAIN
 *                                    and the server answers 451 4.7.1
 *     ctl_filter_reload(f)           SIGHUP: the loader re-reads the rule
 *                                    files; new messages get the new engine,
 *                                    messages in DATA finish on the old one;
 *                                    a failed load keeps the old engine
 *     f = ctl_filter_free(f)         after the server stopped
 *   The engine (rule set + Hyperscan databases) is published with
 *   rcu_assign_pointer (urcu memb). A worker dereferences it in a short
 *   read-side section at DATA start and takes a counted reference that its
 *   slots hold for as long as messages use it; the loader drops the
 *   publication's reference after synchronize_rcu(), and the engine is freed
 *   on the loader thread once the last worker let go.
 *
 *   Worker (the worker's own thread; no locks, no blocking):
 *     fw = ctl_filter_worker_new(f, id)    registers the thread with RCU;
 *                                          scratch + slots when ready
 *     m = ctl_filter_begin(fw, &err)       NULL: -EAGAIN (not ready),
 *                                          -ENOBUFS (all slots busy), -ENOMEM
 *     ctl_filter_feed(m, p, n)*            the message as received
 *     r = ctl_filter_end(m)                verdict; r->action etc.
 *     n = ctl_filter_splice(m, iov, n, cap) X-Spam-* headers after iov[0]
 *                                          (the Received header), the
 *                                          subject tag spliced in
 *     ctl_filter_log(m, buf, cap)          " filter=... score=... rules=..."
 *     ctl_filter_put(fw, m)                the slot back (after the spool
 *                                          is done with the iovecs: they
 *                                          point into m)
 *     fw = ctl_filter_worker_free(fw)      on the worker thread, after every put
 *   Slots (a scan_msg, the attachment checker with its ZIP tail, the header
 *   text) are made per engine: slots_init when the worker first sees an
 *   engine, more on demand up to slots_max; no allocation per message
 *   otherwise. The slots of an engine that was replaced are freed when their
 *   last message ends.
 */
#ifndef CTL_FILTER_H
#define CTL_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "scan/attach.h"
#include "scan/verdict.h"

struct ctl_config;

#define CTL_FILTER_RULES_MAX 16         /* rule paths */
#define CTL_FILTER_HDR_MAX 2048         /* X-Spam-* header text */
#define CTL_FILTER_ATTACH_HITS 32       /* attachment hits kept per message */

struct ctl_filter_conf {
	const char *rules[CTL_FILTER_RULES_MAX];        /* files or directories of .cf */
	unsigned nrules;
	const char *cache;              /* NULL: no cache file */
	struct scan_policy pol;
	bool attach;                    /* attachment checks */
	struct scan_attach_conf attach_conf;
	unsigned slots_init;            /* per worker and engine; 0: 2 */
	unsigned slots_max;             /* 0: 256 */
	double shed_pct;                /* scan_hs_config.shed_pct */
	double ascii_share;             /* scan_hs_config.ascii_share */
	bool no_gtube;                  /* tests only */
};

/* What a message gets. */
struct ctl_filter_result {
	uint8_t action;                 /* enum scan_action */
	double score;
	bool spam;
	bool failed;                    /* could not be scanned */
	int smtp_code;                  /* 250, 451, 550 */
	const char *smtp_enh;
	const char *smtp_text;
	uint32_t n_rules;               /* rules hit (listed in the headers) */
	uint32_t n_attach;              /* attachment rules hit */
};

struct ctl_filter;
struct ctl_filter_worker;
struct ctl_filter_msg;

/* The filter's configuration from sluiced's. 0, or -EINVAL with err. */
int ctl_filter_conf_from_config(struct ctl_filter_conf *fc, const struct ctl_config *cfg,
                                char *err, size_t errlen);

/* NULL with errno: ENOENT (a rule path is missing; err says which), ENOMEM. */
struct ctl_filter *ctl_filter_new(const struct ctl_filter_conf *fc, char *err, size_t errlen);
/* Asynchronous; a reload asked during a load runs after it. */
void ctl_filter_reload(struct ctl_filter *f);
/* Wait until the load that was current or pending at the call finished:
 * 0 when an engine is published, -ETIMEDOUT, or the load's -errno. */
int ctl_filter_wait(struct ctl_filter *f, unsigned timeout_ms);
bool ctl_filter_ready(const struct ctl_filter *f);
/* Loads done (published) so far: the first load is 1. */
uint64_t ctl_filter_generation(const struct ctl_filter *f);
struct ctl_filter *ctl_filter_free(struct ctl_filter *f);

struct ctl_filter_worker *ctl_filter_worker_new(struct ctl_filter *f, unsigned id);
struct ctl_filter_worker *ctl_filter_worker_free(struct ctl_filter_worker *fw);

struct ctl_filter_msg *ctl_filter_begin(struct ctl_filter_worker *fw, int *err);
void ctl_filter_feed(struct ctl_filter_msg *m, const uint8_t *p, size_t n);
const struct ctl_filter_result *ctl_filter_end(struct ctl_filter_msg *m);
/*
 * iov[0] is the Received header and iov[1..n) the message as received.
 * Inserts the X-Spam-* headers (and a Subject when tagging a message that
 * has none) at 1 and splits the iovec holding the Subject's value to put
 * the tag in front of it. Needs cap >= n + 3; returns the new count.
 */
unsigned ctl_filter_splice(const struct ctl_filter_msg *m, struct iovec *iov, unsigned n,
                           unsigned cap);
/* " filter=ACTION score=S rules=A,B truncated=0|1" (snprintf-like). */
size_t ctl_filter_log(const struct ctl_filter_msg *m, char *buf, size_t cap);
/* The X-Spam-* header text end() made (tests). */
const char *ctl_filter_headers(const struct ctl_filter_msg *m, size_t *len);
void ctl_filter_put(struct ctl_filter_worker *fw, struct ctl_filter_msg *m);

#endif
