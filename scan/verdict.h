/*
 * verdict.h - message score, action by threshold, X-Spam-* header text.
 *
 * Contract
 *   Pure functions over a finished rule set and one message's hit counts
 *   (scan/hs.h); no allocation, any thread.
 *     scan_policy_default(&pol) / scan_policy_parse(&pol, "5:tag_lower,...")
 *     scan_verdict_compute(rs, hits, gtube, failed, &pol, &v)
 *     scan_verdict_headers(&v, rs, &pol, buf, cap)   X-Spam-Score/-Status
 *     scan_verdict_subject(&v, &pol, subj, n, buf, cap)
 *   Score = sum over rules that hit of score x hits (a `multiple` rule adds
 *   its score per hit, SpamAssassin's rule), metas included, "__" rules
 *   score nothing; GTUBE (always on, in the engine) adds 1000.
 *   The action is that of the highest threshold <= score (below all of
 *   them: accept); thresholds are data, so a policy may add headers,
 *   tag the subject ({SPAM?} from the lower, {SPAM!} from the upper
 *   threshold), quarantine or reject (550 5.7.1) at any score. A message
 *   that could not be scanned is tempfailed (451 4.7.1), never accepted.
 */
#ifndef SCAN_VERDICT_H
#define SCAN_VERDICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scan/rules.h"

enum scan_action {
	SCAN_ACT_ACCEPT = 0,
	SCAN_ACT_ADD_HEADERS,   /* accept, with X-Spam-* headers */
	SCAN_ACT_TAG_LOWER,     /* headers + subject prefixed with the lower tag */
	SCAN_ACT_TAG_UPPER,     /* headers + subject prefixed with the upper tag */
	SCAN_ACT_QUARANTINE,    /* accept into quarantine, not the mailbox */
	SCAN_ACT_REJECT,        /* 550 5.7.1 */
	SCAN_ACT_TEMPFAIL,      /* 451 4.7.1 */
	SCAN_ACT_COUNT
};

#define SCAN_POLICY_MAX 8
#define SCAN_VERDICT_HITS 128
#define SCAN_GTUBE_SCORE 1000.0

struct scan_threshold {
	double score;
	uint8_t action;         /* enum scan_action */
};

struct scan_policy {
	struct scan_threshold th[SCAN_POLICY_MAX];      /* ascending score */
	unsigned n;
	double required;        /* shown as required= (the first spam threshold) */
	char tag_lower[24];
	char tag_upper[24];
	bool headers_always;    /* X-Spam-* also on accepted ham */
};

struct scan_verdict {
	double score;
	uint8_t action;
	bool spam;              /* score >= required */
	bool gtube;
	int smtp_code;          /* 250, 451 or 550 */
	const char *smtp_enh;   /* "2.0.0", "4.7.1", "5.7.1" */
	const char *smtp_text;
	uint32_t n_hits;        /* rules in hit[] (those not starting "__") */
	uint32_t hit[SCAN_VERDICT_HITS];
	uint32_t more_hits;     /* beyond SCAN_VERDICT_HITS */
};

/* 5 tag_lower (required), 10 tag_upper, 15 reject; headers always. */
void scan_policy_default(struct scan_policy *p);
/*
 * "SCORE:ACTION[,SCORE:ACTION]..." with actions accept, headers, tag_lower,
 * tag_upper, quarantine, reject, tempfail; required becomes the first
 * threshold whose action is not accept/headers. 0 or -EINVAL.
 */
int scan_policy_parse(struct scan_policy *p, const char *spec);
const char *scan_action_name(unsigned a);

void scan_verdict_compute(const struct scan_ruleset *rs, const uint32_t *hits, bool gtube,
    bool scan_failed, const struct scan_policy *pol, struct scan_verdict *v);
/*
 * Writes "X-Spam-Score: S\r\nX-Spam-Status: Yes|No, score=S required=R
 * tests=A,B\r\n" (folded under 78 columns) into buf; returns the length it
 * needs (like snprintf: a result >= cap was cut, buf always NUL-ended).
 */
size_t scan_verdict_headers(const struct scan_verdict *v, const struct scan_ruleset *rs,
    const struct scan_policy *pol, char *buf, size_t cap);
/* The subject with the tag the action calls for ("" tag: unchanged). Like snprintf. */
size_t scan_verdict_subject(const struct scan_verdict *v, const struct scan_policy *pol,
    const char *subj, size_t n, char *buf, size_t cap);

#endif
