/*
 * gates.h - choosing the Hyperscan gate of a PCRE2 rule that has no literal
 * gate: the prefilter form, the relaxed form, or a sub-chain of the relaxed
 * form, whichever costs least on the sample text.
 *
 * Contract
 *   Build time only (control plane; compiles and scans, allocates; any
 *   thread, no shared state):
 *     n = scan_gate_subchains(relaxed, out, cap)   every sub-chain, for tests
 *     scan_gate_pick(pf, pf_flags, relaxed, flags, sample, n, pcre_s, max_db, &p)
 *     scan_gate_pick_free(&p)
 *   A gate must be sound: every text the rule matches, the gate matches.
 *   The relaxed form (scan_rules_relax + scan_rules_collapse) is a superset
 *   of the rule; when its body is a plain concatenation of top-level atoms
 *   (groups, classes, escapes, literals, each with its quantifier; no
 *   top-level '|'), every match of it contains, at the same offsets of the
 *   same text, a match of any contiguous run of those atoms. Assertions in
 *   the run (\b, ^, (?:$|\W)) see the same neighbours, because the gate scans
 *   the whole kept text; so a run is a superset too. A run that starts at an
 *   atom whose first byte is rare in ordinary text is far cheaper to scan
 *   than the whole form (FUZZY_IMPORTANT: 22 us/msg down to 2.7).
 *   Timing: CPU time of this thread (CLOCK_THREAD_CPUTIME_ID), best of three;
 *   the choice is deterministic apart from it. SLUICE_GATE_DEBUG in the
 *   environment prints every candidate (compile time, size, scan, opens).
 */
#ifndef SCAN_GATES_H
#define SCAN_GATES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCAN_GATE_STARTS 4      /* sub-chains start at the rarest few atoms */
#define SCAN_GATE_MAX_RUNS 32   /* at most SCAN_GATE_STARTS * 5 are made */

enum scan_gate_mode {
	SCAN_GATE_NONE = 0,
	SCAN_GATE_STREAM,       /* the prefilter form, for the target's streaming
	                           gates database */
	SCAN_GATE_BLOCK,        /* its own block-mode database, scanned over the
	                           kept text at the end of the message */
};

struct scan_gate_pick {
	char *expr;             /* malloc'd gate expression, NULL with SCAN_GATE_NONE */
	unsigned flags;         /* its Hyperscan flags */
	enum scan_gate_mode mode;
	double seconds;         /* its scan of the sample, CPU seconds (best of 3) */
	bool opens;             /* it matched the sample text */
	unsigned tried;         /* candidates compiled (report) */
};

/*
 * The sub-chains of a relaxed form "(?:A1...An)" (or a bare A1...An): for
 * each atom k that cannot match empty, in order, the runs from k through
 * its 2nd, 3rd, 4th and 5th such atom (counting k), then through An; only
 * runs with at least two such atoms, never the whole form, no duplicates.
 * Each is "(?:" run ")", malloc'd in out[], caller frees. Returns how many
 * were written, at most cap; 0 when the body has a top-level '|', a
 * top-level option setting such as (?i), a construct this parser does not
 * know (back-references, \Q, ...), or on ENOMEM.
 */
unsigned scan_gate_subchains(const char *relaxed, char **out, unsigned cap);

/*
 * The run of form2 made of the same atoms as run is of form (run is form
 * itself, or "(?:" Ak..Aj ")" as scan_gate_subchains makes them): for two
 * forms whose atom chains correspond one to one, such as a collapse and its
 * plain collapse (scan_rules_collapse_plain). Malloc'd; NULL when run is no
 * such run of form, the chains differ in length, or on ENOMEM.
 */
char *scan_gate_map_run(const char *form, const char *run, const char *form2);

/*
 * The prefixes of a form's atom chain (groups flattened as above): "(?:"
 * A1..Aj ")" for j = 1, 2, ... into out[] (malloc'd, caller frees), at
 * most cap; 0 when it is no plain concatenation or on ENOMEM. Every match
 * of the form begins with a match of each prefix, at the same offset.
 */
unsigned scan_gate_prefixes(const char *form, char **out, unsigned cap);

/*
 * The lead of a form's atom chain: its atoms up to its first that cannot
 * match empty (A1..Ak, the anchors and optional parts before it), with Ak
 * cut to its first copy when it is a group repeated at least once
 * ("(?:G){1,3}" -> "(?:G)"). Every match of the form begins with a match
 * of it, at the same offset: a gate for a rule anchored at line starts whose
 * whole form is too large (__FILL_THIS_FORM_PARTIAL: "^", a line number,
 * "your", then one of the form's field names). "(?:" ... ")", malloc'd;
 * NULL when it would be the whole form, the form is no plain
 * concatenation, or on ENOMEM.
 */
char *scan_gate_lead(const char *form);
/*
 * The tail: from the form's last repeated group that cannot match empty
 * ("(?:G){10}" -> "(?:G)", its last copy) to the end. Every match of the
 * form ends with a match of it: a gate for a rule whose end is rare where
 * its start is everywhere (__TENWORD_GIBBERISH, /^\s*(?:[a-z]+\s+){10}\.$/m:
 * a word, white space, a lone "." at the end of a line). Malloc'd; NULL
 * when there is no such group, or as above.
 */
char *scan_gate_tail(const char *form);

/*
 * The form split at its largest alternation: the group with no quantifier
 * that the form reaches through concatenations and such groups, whose
 * content has the most top-level alternatives (or the form's own top-level
 * alternatives), one form per alternative with the rest unchanged:
 * "a(?:b|c)d" -> "a(?:b)d", "a(?:c)d". Together they match exactly what
 * the form matches (the same starts and ends), and Hyperscan compiles them
 * as a multi-pattern database far better than one pattern when each
 * alternative has its own literals: the whole-repeat unit of
 * __FILL_THIS_FORM_SHORT2 (eleven lists of field names) scans the corpus
 * in a quarter of the time. Malloc'd into out[]; the count (at least 2),
 * 0 when there is no alternation, more than cap alternatives, a construct
 * the parser does not know, or on ENOMEM.
 */
unsigned scan_gate_split(const char *form, char **out, unsigned cap);

/*
 * Chooses the cheapest sound gate for a PCRE2 rule. prefilter: the rule's
 * expression (compiled with pf_flags, which include HS_FLAG_PREFILTER; it is
 * tried in stream mode, to share the target's streaming gates database), or
 * NULL; relaxed: its relaxed form (compiled with flags; block mode), or
 * NULL; from the relaxed form also the sub-chains that start at the
 * SCAN_GATE_STARTS atoms whose first bytes are rarest in the sample
 * (through 2..5 atoms or to the end; block mode, flags), shortest first,
 * and from a start no longer ones once one stays shut on the sample (they
 * match less but track more: the compiles they save are most of the build
 * time). A sub-chain may compile where the whole form does not. A candidate
 * must compile alone within max_db bytes (0: any size). The sample is cut
 * into 8 "messages"; cost = its scan of them + the share of them it opens
 * on x pcre_seconds (PCRE2 over the whole sample), the expected cost per
 * sample's worth of mail; the cheapest under pcre_seconds wins
 * (ties: prefilter, relaxed, then sub-chains from the rarest start).
 * The seconds of a candidate that opens count only up to its first match;
 * without a sample (NULL or n 0) every cost is 0: the first that compiles.
 * Returns 0 with *out filled (mode NONE if nothing compiles or nothing
 * costs under pcre_seconds; out->tried counts anyway), or -ENOMEM.
 */
/*
 * scan_gate_pick for a rule whose widest match is width bytes (0: unknown),
 * which then runs near its gate's match ends (hs.c, run_pcre): a relaxed
 * form or run costs its scan + for every window of the sample's ends (ends
 * within width of each other merge) a PCRE2 search over the window and
 * its width, at PCRE2's rate over the sample, if that is less than
 * running PCRE2 on the messages it opens on.
 */
int scan_gate_pick_near(const char *prefilter, unsigned pf_flags, const char *relaxed,
    unsigned flags, const uint8_t *sample, size_t n, double pcre_seconds, size_t max_db,
    unsigned width, struct scan_gate_pick *out);
int scan_gate_pick(const char *prefilter, unsigned pf_flags, const char *relaxed,
    unsigned flags, const uint8_t *sample, size_t n, double pcre_seconds, size_t max_db,
    struct scan_gate_pick *out);

/* every timing of the cost models (here and in hs.c) is the best of this
 * many runs: with 3, two cold builds on an idle machine chose differently
 * enough to differ by 3% in instructions per message (a pattern near a
 * threshold flips) */
#define SCAN_GATE_REPS 7

/*
 * The platform every database is compiled for: NULL (this CPU) unless
 * SLUICE_HS_PLATFORM is "avx2" or "generic" (no AVX2) in the environment
 * when first called. A cache built with "avx2" also loads under valgrind,
 * which runs no AVX-512 code, and on any AVX2 machine (bench/scan-callgrind.sh).
 */
struct hs_platform_info;
const struct hs_platform_info *scan_hs_target(void);

/* A Hyperscan match callback for gates: sets *(bool *)ctx, stops the scan. */
int scan_gate_probe(unsigned int id, unsigned long long from, unsigned long long to,
    unsigned int flags, void *ctx);

/* Frees p->expr and clears *p (safe on a cleared or NONE pick). */
void scan_gate_pick_free(struct scan_gate_pick *p);

#endif
