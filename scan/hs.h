/*
 * hs.h - the rule engine: per-target Hyperscan streaming databases with a
 * gated PCRE2 fallback, a checked cache file, per-message scan state.
 *
 * Contract
 *   Build (control plane, may take seconds; allocates):
 *     e = scan_hs_build(rs, &cfg, &err)   rs finished and kept alive by the
 *                                         caller for as long as e lives
 *     e = scan_hs_free(e)
 *   With cfg.cache_path set, the build first tries the cache file: it is
 *   used when its key (rule-set hash, engine options, Hyperscan version)
 *   matches and every checksum holds; otherwise (missing, stale, corrupt)
 *   the databases are compiled and the file rewritten atomically
 *   (tmp + rename). A cache that cannot be written is not an error.
 *
 *   Scan (a worker; no allocation, no locks, no blocking):
 *     w = scan_hs_worker_new(e)           once per worker (scratch, PCRE2 data)
 *     m = scan_hs_msg_new(e)              once per pool slot: every stream
 *                                         is opened here and only reset later
 *     per message:
 *       scan_hs_msg_begin(m)
 *       scan_hs_header(m, w, ...)*        top-level header fields, in order
 *       scan_hs_feed(m, w, target, p, n)* any target, any split, interleaved
 *       scan_hs_msg_end(m, w)             ends every stream (end-of-data
 *                                         matches), runs the PCRE2 rules whose
 *                                         gate fired, resolves header rules
 *                                         (negation, absent headers), metas
 *       m->hits[i]                        hit count of rule i (metas 0/1)
 *   With m->lazy (sluiced), scan_hs_msg_end runs a rule whose gate fired
 *   only if it can still move a rule that counts (scan_rules_lazy_needed):
 *   the rules that count read as in a full run, a "__" rule read only by
 *   decided metas may read 0.
 *   Free with scan_hs_msg_free / scan_hs_worker_free (control plane). A slot
 *   and a worker belong to one engine: after a reload, make new ones.
 *
 *   Targets and what they see (the differences from SpamAssassin are in
 *   docs/SCAN-RULES.md):
 *     HEADER   records "\x01key\n\x02" value "\n", one per wanted header key;
 *              a named-header rule P becomes ^\x01key\n\x02[^\n]*?(?:P) with
 *              HS_FLAG_MULTILINE; start anchors in P (Hyperscan takes ^
 *              only at the start) become \x02, the value's first byte, and
 *              the prefix ^\x01key\n(?:\x02[^\n]*?)?; $ ends the value.
 *     BODY     decoded text (UTF-8) of text/ parts, the Subject first
 *     RAWBODY  decoded text parts, HTML intact (SpamAssassin's rawbody)
 *     FULL     the whole message as received
 *     URI      one URI per line
 *   BODY, RAWBODY and URI rules run with HS_FLAG_MULTILINE (SpamAssassin
 *   matches them line by line); FULL keeps the rule's own flags.
 *
 *   PCRE2 fallback: a rule Hyperscan rejects (look-arounds, back-references,
 *   atomic groups, possessive quantifiers, \K, ...), or whose lone database
 *   is too big or slow to compile, runs in PCRE2 (JIT) on the first
 *   cfg.keep[target] bytes of its target, and only when its gate fired:
 *     GATED      literals matched caselessly by Hyperscan in the target's
 *                database: the longest literal every match contains, or a
 *                set of them one of which every match contains (one per
 *                top-level branch, small classes expanded), >= 3 bytes each;
 *     PREFILTER  without one, the pattern compiled with HS_FLAG_PREFILTER,
 *                in the shared database if it is cheap there, else in the
 *                target's gates database (a second stream per target), and
 *                only if it does not match the built-in sample prose (a
 *                gate that opens on ordinary text is no gate);
 *                Failing that, its relaxed form (scan_rules_relax and
 *                scan_rules_collapse: look-arounds out, wide repeats
 *                unbounded, a repeat of the whole cut to two copies or one,
 *                look-alike letter alternations collapsed to classes), if
 *                it scans the sample text in under half the time PCRE2 takes
 *                to run the rule over it: all such forms of a target are one
 *                block-mode database, scanned over the kept text at the end
 *                of the message (a rule whose form does not match cannot);
 *                A whole repeat (?:(X){k}) gets the chain gate instead: k
 *                copies of X relaxed, back to back (chain_open in hs.c).
 *     ALWAYS     failing all, on every message (cfg.drop_always: not run).
 *   Shedding (cfg.shed_pct > 0): the costliest rules on the sample text, in
 *   the form each would run in, are left out (class FAILED, how "shed")
 *   until shed_pct percent of the active regex rules is out of effect,
 *   those neither engine takes included; never one whose 0 could raise a
 *   score. Speed for a few rules, the operator's choice (docs/SCAN-RULES.md
 *   "Shedding").
 *   A GATED rule whose relaxed form is cheaper than the rule is "filtered":
 *   when the literal fired, the form is scanned first, PCRE2 only if it
 *   matched.
 *   The scan-cost model: a pattern (not HEADER) that scans the sample text
 *   alone slower than SCAN_HS_DEFER_MBPS and has a gate is deferred: its
 *   gate goes in the stream (a literal, or a literal of the squeezed text
 *   in the target's squeeze database, scan_rules_squeeze_set), and the
 *   pattern runs alone, block mode, over the kept text when the gate fired:
 *   the same hits (one of bounded width, not `multiple`, behind a literal
 *   or a run: PCRE2 near the gate's ends when those are few). Own gates are
 *   priced at their plain ASCII form on cfg.ascii_share of texts, against a
 *   prefilter form in the stream. A `multiple` rule that matches a few short strings is
 *   counted by a byte loop (scan_rules_exact_set), and a word run,
 *   \b(?:[C]{m,}[S]+){n}, by a byte automaton. See docs/SCAN-RULES.md.
 *   Match and backtracking limits bound PCRE2.
 */
#ifndef SCAN_HS_H
#define SCAN_HS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scan/rules.h"

#define SCAN_HS_KEEP_DEFAULT (256u * 1024)      /* bytes of a target kept for PCRE2 */
#define SCAN_HS_GATE_MIN 3                      /* shortest gate literal */
/* cost model: a pattern that alone compiles bigger or slower goes to PCRE2 */
#define SCAN_HS_COSTLY_DB (64u * 1024)
#define SCAN_HS_COSTLY_SECONDS 0.05
/* a PREFILTER gate too costly for the shared database goes to the target's
 * gates database (its own stream) when it compiles alone within these */
#define SCAN_HS_GATE_DB (1536u * 1024)
/* the cost model's share of texts that an own gate scans in its plain
 * ASCII form (no byte >= 0x80, no "&#"; 398 of the corpus's 400) */
#define SCAN_HS_ASCII_SHARE 0.9
#define SCAN_HS_GATE_SECONDS 1.5
/* scan-cost model: a BODY / RAWBODY pattern that alone scans the sample text
 * (SCAN_HS_SAMPLE bytes of built-in pseudo-prose) slower than this, and has
 * a literal gate, runs in PCRE2 behind the gate */
#define SCAN_HS_SAMPLE (32u * 1024)
/* deferral: a pattern of any target but HEADER that alone scans the sample
 * text slower than this, and has a gate (a literal of SCAN_HS_GATE_MIN
 * bytes, or a squeeze literal of SCAN_HS_SQUEEZE_MIN), leaves the stream:
 * its gate goes in instead, and the pattern runs alone in block mode over
 * the kept text when the gate fired. 4000: on the corpus, a pattern alone
 * at 1600 MB/s (DEAR_BENEFICIARY) still costs 2% of the body stream's
 * time; from 1500 to 4000 the stream took 17% less and the whole scan 6%
 * fewer instructions (8000: no better; bench/RESULTS.md) */
#define SCAN_HS_DEFER_MBPS 4000.0
/* a pattern of any target but HEADER that stays in the stream (no gate to
 * defer it behind) but alone scans the sample text slower than this goes
 * to the target's gates database, a second stream: Hyperscan's database of
 * the fast patterns is then far cheaper (body, corpus: 66 ms alone against
 * 46 ms for both; bench/RESULTS.md) */
#define SCAN_HS_APART_MBPS 6000.0
#define SCAN_HS_APART_MIN 8     /* fewer in a target: they stay in the main stream */
/* shedding (cfg.shed_pct): at most this percent of the active regex rules
 * out of effect, the rules neither engine takes included (8 of Debian's
 * 1306: at 5, 57 more are shed, and 95.0% stay in effect) */
#define SCAN_HS_SHED_MAX 5.0
#define SCAN_HS_SQUEEZE_MIN 3
#define SCAN_HS_SQUEEZE_SURE 4  /* shorter squeeze strings must not occur in
                                   the squeezed sample text */

/* how a regex rule runs */
enum scan_hs_class {
	SCAN_HS_C_NONE = 0,     /* not a regex rule of an active kind */
	SCAN_HS_C_HS,           /* in the Hyperscan database */
	SCAN_HS_C_GATED,        /* PCRE2 after its literal matched */
	SCAN_HS_C_PREFILTER,    /* PCRE2 after its HS_FLAG_PREFILTER form matched */
	SCAN_HS_C_ALWAYS,       /* PCRE2 on every message */
	SCAN_HS_C_FAILED,       /* neither engine takes it: skipped */
	SCAN_HS_C_COUNT
};

struct scan_hs_config {
	const char *cache_path;         /* NULL: no cache */
	size_t keep[SCAN_T_COUNT];      /* 0: SCAN_HS_KEEP_DEFAULT */
	uint32_t pcre_match_limit;      /* 0: 200000 */
	bool no_prefilter;              /* measure: no HS_FLAG_PREFILTER gates */
	bool no_gtube;                  /* tests only */
	bool no_scan_cost;              /* measure: no sample text (no scan-cost model,
	                                   no check that a prefilter gate is selective) */
	bool drop_always;               /* rules that would run PCRE2 on every message
	                                   are not run (class FAILED): faster, fewer rules */
	bool no_defer;                  /* measure: every Hyperscan rule in the stream
	                                   (no deferral, no counters) */
	unsigned apart_min;             /* 0: SCAN_HS_APART_MIN; tests: 1 */
	bool own_apart;                 /* tests: every own gate's ASCII and plain forms
	                                   in a block database of its own */
	double defer_mbps;              /* 0: SCAN_HS_DEFER_MBPS; tests: 1e12 defers
	                                   every rule that has a gate */
	bool no_near;                   /* tests, measure: PCRE2 over the whole kept text,
	                                   not only near its gate's match ends */
	double ascii_share;             /* 0: SCAN_HS_ASCII_SHARE; the share of texts at
	                                   which the cost model prices an own gate's plain
	                                   ASCII form (tests: 1, or near 0) */
	double shed_pct;                /* 0: every rule; else leave out the costliest
	                                   rules on the sample text until this percent of
	                                   the active regex rules is out of effect, failed
	                                   ones included (at most SCAN_HS_SHED_MAX) */
};

#define SCAN_HS_REASONS 24

struct scan_hs_stats {
	unsigned cls[SCAN_T_COUNT][SCAN_HS_C_COUNT];
	unsigned patterns[SCAN_T_COUNT];        /* expressions in each database */
	size_t db_bytes[SCAN_T_COUNT];
	size_t stream_bytes[SCAN_T_COUNT];
	unsigned gpatterns[SCAN_T_COUNT];       /* gates database: expressions */
	size_t gdb_bytes[SCAN_T_COUNT];
	size_t gstream_bytes[SCAN_T_COUNT];
	unsigned own[SCAN_T_COUNT];             /* PREFILTER gates by their relaxed forms,
	                                           in a block database per target */
	size_t rdb_bytes[SCAN_T_COUNT];
	unsigned own_dbs[SCAN_T_COUNT];         /* block databases the own gates share */
	size_t ascii_bytes[SCAN_T_COUNT];       /* ... all of them in ASCII forms
	                                           (0: none) */
	unsigned ascii_dbs[SCAN_T_COUNT];       /* ... in so many block databases */
	size_t plain_bytes[SCAN_T_COUNT];       /* ... in plain ASCII forms (no HTML
	                                           entity branches) */
	unsigned plain_dbs[SCAN_T_COUNT];
	unsigned near[SCAN_T_COUNT];            /* PCRE2 rules that run near their gate's
	                                           match ends (at most WIN_MAX wide) */
	unsigned deferred[SCAN_T_COUNT];        /* Hyperscan rules run alone behind a gate */
	unsigned squeezed[SCAN_T_COUNT];        /* ... of which behind a squeeze gate */
	unsigned deferred_run[SCAN_T_COUNT];    /* ... behind a run of their own atoms */
	unsigned apart[SCAN_T_COUNT];           /* slow Hyperscan rules in the gates stream */
	unsigned counted[SCAN_T_COUNT];         /* rules counted without Hyperscan */
	unsigned shed[SCAN_T_COUNT];            /* class FAILED by cfg.shed_pct */
	unsigned chained[SCAN_T_COUNT];         /* PREFILTER rules behind a chain gate */
	unsigned filtered[SCAN_T_COUNT];        /* GATED PCRE2 rules probed by their relaxed
	                                           form before PCRE2 runs */
	unsigned spatterns[SCAN_T_COUNT];       /* squeeze database: expressions */
	size_t sdb_bytes[SCAN_T_COUNT];
	size_t sstream_bytes[SCAN_T_COUNT];
	size_t ddb_bytes;                       /* every deferred rule's database */
	double sample_mbps[SCAN_T_COUNT];       /* each database on the sample text */
	double gsample_mbps[SCAN_T_COUNT];
	size_t scratch_bytes;                   /* one worker's Hyperscan scratch */
	unsigned header_keys;
	unsigned costly;                /* compilable, but sent to PCRE2 by the cost model */
	bool cache_hit;
	int cache_status;               /* 0 hit, -ENOENT none, -ESTALE other key, -EBADMSG corrupt */
	double compile_seconds;
	/* why Hyperscan refused patterns: message prefix and count */
	struct {
		char why[64];
		unsigned count;
	} reason[SCAN_HS_REASONS];
	unsigned n_reason;
};

struct scan_hs;
struct scan_hs_worker;

struct scan_hs_msg {
	const struct scan_hs *e;
	uint32_t *hits;                 /* [rs->n] */
	bool gtube;
	bool lazy;                      /* set by the caller: at the end of a message, run
	                                   only what can still move a rule that counts in
	                                   the verdict (scores, X-Spam-Status); a "__"
	                                   rule read only by decided metas may then read 0 */
	uint32_t lazy_skips;            /* rules left unrun this message (lazy) */
	uint64_t bytes[SCAN_T_COUNT];   /* fed this message */
	uint32_t pcre_runs;             /* PCRE2 rules run this message */
	uint32_t pcre_limited;          /* ... that hit a match limit */
	uint32_t writes;                /* Hyperscan stream writes this message */
	uint32_t deferred_runs;         /* deferred rules run this message */
	uint32_t deferred_near;         /* ... of which with PCRE2 near their gate's ends */
	uint32_t filter_runs;           /* relaxed forms probed before PCRE2 */
	uint32_t chain_runs;            /* chain gates evaluated */
	uint32_t near_runs;             /* PCRE2 rules run only near their gate's matches */
	uint32_t ascii_runs;            /* targets whose own gates ran in their ASCII forms */
	uint32_t plain_runs;            /* ... of which in their plain forms (no "&#") */
	struct scan_hs_msg_priv *priv;
};

/* NULL with errno (EINVAL: rs not finished; ENOMEM; EIO: Hyperscan failed). */
struct scan_hs *scan_hs_build(const struct scan_ruleset *rs, const struct scan_hs_config *cfg,
    struct scan_hs_stats *st);
struct scan_hs *scan_hs_free(struct scan_hs *e);
const struct scan_ruleset *scan_hs_rules(const struct scan_hs *e);
/* The class of rule i (enum scan_hs_class). */
unsigned scan_hs_rule_class(const struct scan_hs *e, uint32_t i);
/*
 * The strings a literal gate of pattern re would be made of (as
 * gate_literals_in chooses them: the required literal, or the literal set,
 * whichever has the longer shortest string; each at least SCAN_HS_GATE_MIN
 * bytes), into set[]; how many, 0 none. A required literal longer than a
 * set string gives 0, or with cut its first SCAN_RULES_LSET_LEN bytes.
 */
unsigned scan_hs_gate_strings(const char *re, uint32_t re_flags,
    uint8_t (*set)[SCAN_RULES_LSET_LEN + 1], bool cut);
/* How a rule runs, beyond its class: "deferred" (a Hyperscan rule alone,
 * behind a literal gate), "deferred-squeeze" (behind a squeeze gate),
 * "counted" (a byte loop), "filtered" (a GATED PCRE2 rule whose relaxed
 * form is probed before PCRE2), "shed" (class FAILED: left out by
 * cfg.shed_pct); for a PREFILTER rule its gate: "gate-in-stream" (its
 * prefilter form in the target's stream), "gate-in-gates-stream" (in the
 * gates stream), "own-gate" (a relaxed form or run of it, block mode at
 * the end), "chain-gate"; or "". */
const char *scan_hs_rule_how(const struct scan_hs *e, uint32_t i);

struct scan_hs_worker *scan_hs_worker_new(const struct scan_hs *e);
struct scan_hs_worker *scan_hs_worker_free(struct scan_hs_worker *w);

struct scan_hs_msg *scan_hs_msg_new(const struct scan_hs *e);
struct scan_hs_msg *scan_hs_msg_free(struct scan_hs_msg *m);

void scan_hs_msg_begin(struct scan_hs_msg *m);
/*
 * One header field of the message itself: name as received, value
 * unfolded and decoded, raw as received after the colon (may be NULL).
 */
void scan_hs_header(struct scan_hs_msg *m, struct scan_hs_worker *w,
    const char *name, size_t name_len, const uint8_t *value, size_t value_len,
    const uint8_t *raw, size_t raw_len);
/*
 * Bytes of a target. Writes under 4 KB are copied to the slot's batch for
 * the target and scanned when it fills or at scan_hs_msg_end (the caller's
 * buffer is not kept). Returns 0, or -EIO if Hyperscan failed (the message
 * then tempfails).
 */
int scan_hs_feed(struct scan_hs_msg *m, struct scan_hs_worker *w, enum scan_target t,
    const uint8_t *p, size_t n);
/* Ends the message: afterwards m->hits is final. 0 or -EIO. */
int scan_hs_msg_end(struct scan_hs_msg *m, struct scan_hs_worker *w);

/* The standard GTUBE test string. */
extern const char scan_hs_gtube[];

#endif
