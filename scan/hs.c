/*
 * hs.c - per-target Hyperscan streaming databases, PCRE2 gated fallback,
 * cache file, per-message state. See hs.h for the contract.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "scan/hs.h"
#include "scan/gates.h"
#include "scan/strbuf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hs/hs.h>

const char scan_hs_gtube[] =
    "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

#define GATE_BIT 0x80000000u
#define GTUBE_ID 0x7fffffffu
#define CACHE_MAGIC "SLUICEHS"
#define CACHE_VERSION 34u
#define HDR_BUF (32u * 1024)
/* ALL and ALL:raw: the header block, "Name: value" lines, its first
 * ALL_BUF bytes (scan_hs_header); a record of its own at the end */
#define ALL_BUF (32u * 1024)
#define BATCH (8u * 1024)       /* per-target write batch */
#define MAX_KEYS 4096
/* where a PREFILTER gate lives */
#define GSEP_SHARED 0           /* the target's database */
#define GSEP_GATESDB 1          /* the target's gates database (its own stream) */
#define GSEP_OWN 2              /* its own block-mode database (e->ddb[i]: the relaxed
                                   form or a sub-chain of it, scan_gate_pick), run over
                                   the kept text at the end of the message */
#define GSEP_CHAIN 3            /* a whole repeat (?:(X){k}): the chain gate (chain_open) */
#define CHAIN_MAX_K 8           /* deeper repeats are checked this deep (a superset) */
#define CHAIN_ENDS 8192         /* ends of the first copy looked at; more: run the rule */
#define CHAIN_STEP_ENDS 64      /* ends of one anchored copy; more: take it as reachable */
#define CHAIN_BUDGET 4096       /* anchored scans per message and rule; more: run the rule */
#define CHAIN_MEMO 2048
#define CHAIN_PARTS 32          /* alternatives of a chain unit compiled apart */
#define OWN_BUCKETS 64          /* block databases the GSEP_OWN gates of a target share */
#define OWN_JOIN 0.8            /* an own gate joins a group that grows by less than
                                   this share of its scan alone (group_block) */
#define OWN_SPLIT 0.5           /* ... when the gates alone cost less than this share
                                   of their one database */

/* a Hyperscan rule that is not in its target's streaming database */
#define DEFER_NO 0
#define DEFER_LIT 1             /* deferred: its literal gate is in the database */
#define DEFER_SQ 2              /* deferred: its gate is in the squeeze database */
#define DEFER_COUNT 3           /* counted outside Hyperscan (scan_rules_exact_set) */
#define DEFER_FILTER 4          /* a GATED PCRE2 rule: when its literal fired, its
                                   relaxed form runs first (its own block database),
                                   and PCRE2 only if that matched */
#define DEFER_RUN 5             /* deferred: its gate is a run of its own atoms
                                   (scan_gate_pick), among the target's own gates */
#define DEFER_WORDS 6           /* a word run, \b(?:[C]{m,}[S]+){n}, counted by a
                                   byte automaton (wordrun_make) */
#define DEFER_APART 7           /* slow alone on the sample, no gate: in the target's
                                   gates stream, apart from the fast patterns */
#define DEFER_LINE 8            /* ^[^\r\n]{n} (multi-line), a line of n bytes:
                                   counted by a byte loop (linelen_make) */
#define DEFER_SHED 9            /* class FAILED: shed (cfg.shed_pct), one of the
                                   costliest rules on the sample text (shed_pick) */
#define LL_MAX 4                /* line-length rules per target; more stay in Hyperscan */
#define CTR_MAX SCAN_RULES_LSET_MAX
#define WR_MAX 8                /* word-run rules per target; more stay in Hyperscan */
/* a PCRE2 rule whose matches are at most WIN_MAX bytes wide runs only near
 * the ends of its gate's matches (run_pcre): the windows of a message */
#define WIN_MAX 4096
/* tight relaxed forms (filters and own gates) keep bounded repeats up to
 * {m,TIGHT_MAXN}: a gate that opens only where the rule nearly matches */
#define TIGHT_MAXN 100
#define WIN_CAP 1024            /* merged windows one message keeps; more: whole text */
#define WIN_RULE_CAP 64         /* ... one rule keeps: a gate that matches all over
                                   the text runs its rule over the whole text once,
                                   and leaves the windows to the others */
#define WIN_NONE 0xffffu
/* a deferred rule runs near its gate's ends when they span under 1/this of the text */
#define DEFER_NEAR_SHARE 4
/* a filtered PCRE2 rule skips its probe when its windows span under 1/this of the text */
#define FILTER_NEAR_SHARE 8
#define WIN_OVER 0xfffeu        /* this rule ran out of windows */

/* the gate of one windowed rule matched at ends lo..hi, each within its width of the next */
struct win {
	uint32_t lo, hi;
	uint16_t next;
};

/* a rule whose matches are a few short strings, counted byte by byte */
struct counter {
	uint32_t rule;
	uint32_t max;                   /* maxhits; 0 unbounded */
	unsigned n;
	uint32_t val[CTR_MAX];          /* a string (<= 4 bytes) as its last bytes */
	uint32_t mask[CTR_MAX];
	uint8_t last[256];              /* some string ends with this byte */
};

/*
 * A rule of the shape \b(?:[C]{m,}[S]+){n} (the __LONGWORDS_* rules: runs of
 * long lower-case words), C word bytes, S non-word bytes: a match is n
 * consecutive words of at least m bytes of C, each followed by bytes of S,
 * the first after a non-word byte. A byte loop finds it exactly; in the
 * stream, 3 such rules cost a quarter of the body database.
 */
enum { WR_OTHER, WR_LETTER, WR_WORD, WR_SEP };

struct wordrun {
	uint32_t rule;
	uint16_t min, n;
	uint8_t kind[256];              /* WR_* of each byte */
};

/* one word-run rule's state in a message's stream */
struct wrstate {
	uint16_t run;                   /* words completed in the current run */
	int16_t wlen;                   /* letters of the word so far, WR_INVALID,
	                                   WR_NOWORD (rules that share no classes) */
};
#define WR_INVALID (-1)
#define WR_NOWORD (-2)

/* a header key: what one record in the header stream is */
struct hkey {
	char *name;             /* lower-case record name: "subject", "from:addr", "all" */
	uint8_t hmod;
	uint8_t exists_only;    /* "?name": only the seen bit, no record */
};

/* a header name as received (lower-case) and the keys it feeds */
struct hname {
	char *lname;
	uint16_t key[SCAN_HMOD_COUNT];  /* key id + 1 per modifier, 0 none */
	uint16_t pseudo[SCAN_HMOD_COUNT]; /* a pseudo-header key fed by this one */
	uint16_t exists_key[4]; /* key ids + 1 of exists: rules this header satisfies
	                           (its own name, pseudo-headers built from it) */
};

/* a header rule resolved after the scan */
struct hrule {
	uint32_t rule;
	uint16_t key;
	uint8_t negate;
	uint8_t exists;
	uint8_t absent_hit;
};

struct tdb {
	hs_database_t *db;
	size_t stream_size;
	hs_database_t *gdb;     /* costly prefilter gates, a database of their own */
	size_t gstream_size;
	unsigned ngpat;
	unsigned npat;
	uint32_t *always;       /* PCRE2 rules run on every message */
	unsigned n_always;
	hs_database_t *rbk[OWN_BUCKETS]; /* block mode: every own gate's ASCII form
	                           (own_ascii), grouped (group_block); scanned instead of
	                           obk[] when the kept text has no byte >= 0x80 */
	unsigned n_rbk;
	hs_database_t *pbk[OWN_BUCKETS]; /* block mode: the same gates in their plain
	                           ASCII forms (scan_rules_collapse_plain), grouped;
	                           scanned instead of rbk[] when the kept text also has
	                           no "&#" */
	unsigned n_pbk;
	unsigned n_own;
	unsigned n_gated;       /* GATED + PREFILTER rules */
	hs_database_t *sdb;     /* squeeze gates: literals of the squeezed text */
	size_t sstream_size;
	unsigned nspat;
	uint32_t *defer;        /* deferred rules: run alone, in block mode, over
	                           the kept text when their gate fired */
	unsigned n_defer;
	struct counter *ctr;    /* rules counted without Hyperscan */
	unsigned n_ctr;
	uint8_t ctr_any[256];   /* some counter's string ends with this byte */
	struct linelen {
		uint32_t rule, n;
	} ll[LL_MAX];           /* line-length rules, by a byte loop */
	unsigned n_ll;
	struct wordrun wr[WR_MAX]; /* word-run rules, by a byte automaton */
	unsigned n_wr;
	bool wr_shared;         /* ... all with the same byte classes: one pass */
	uint32_t *chain;        /* PREFILTER rules behind a chain gate */
	unsigned n_chain;
	uint32_t *ownv;         /* PREFILTER rules behind a gate of their own (GSEP_OWN) */
	hs_database_t *obk[OWN_BUCKETS]; /* ... grouped into a few block databases */
	unsigned n_obk;
	size_t keep;            /* 0: this target keeps nothing */
};

struct scan_hs {
	const struct scan_ruleset *rs;
	uint8_t *cls;                   /* [rs->n] enum scan_hs_class */
	uint8_t *gsep;                  /* [rs->n] PREFILTER gate: GSEP_SHARED / _GATESDB / _OWN */
	char **rexpr;                   /* [rs->n] build only: GSEP_OWN rules' relaxed forms */
	char **rplain;                  /* [rs->n] build only: ... the same atoms of the
	                                   plain collapse, where it differs */
	uint8_t *defer;                 /* [rs->n] DEFER_*: Hyperscan rules kept out of the stream */
	hs_database_t **ddb;            /* [rs->n] a deferred rule's own block database; a
	                                   filtered rule's relaxed form; a chain rule's copy */
	hs_database_t **adb;            /* [rs->n] a chain rule's copy anchored at the start */
	uint8_t *chain_k;               /* [rs->n] a chain rule's copies to find */
	uint8_t *sample;                /* build only: the scan-cost model's text */
	uint8_t *sqsample;              /* build only: its squeezed image */
	uint8_t *lcsample;              /* build only: lower-cased */
	size_t sqsample_n;
	pcre2_code **code;              /* [rs->n] for PCRE2 classes */
	uint8_t *multiple;              /* [rs->n] */
	uint8_t *term_check;            /* [rs->n] :addr / :name header rules */
	uint16_t *width;                /* [rs->n] how far before one of its gate's match
	                                   ends a PCRE2 rule's match can start: its widest
	                                   match, or behind a literal gate its reach
	                                   (literal_reach); at most WIN_MAX, its gate then
	                                   reports every end and it runs near them
	                                   (near_ok); else 0 */
	uint16_t *reach;                /* [rs->n] build: rule_width's reach for a literal gate */
	float *cost;                    /* [rs->n] build: seconds over the sample text in the
	                                   form it runs in, where the cost model timed it
	                                   (shed_pick); 0 not timed */
	uint16_t *wslot;                /* [rs->n] 1 + its slot among windowed rules, 0 none */
	unsigned n_wslot;
	uint8_t *late;                  /* [rs->n] a chain or always rule: undecided until
	                                   the end of a message runs it (lazy_base) */
	int32_t *hrule_of;              /* [rs->n] its hrules[] entry, -1 none */
	struct tdb t[SCAN_T_COUNT];
	struct hkey *keys;
	unsigned nkeys;
	int key_all, key_all_raw;       /* ids or -1 */
	struct hname *names;            /* open addressing */
	unsigned names_cap;
	struct hrule *hrules;
	unsigned n_hrules;
	uint32_t pcre_limit;
	unsigned max_pending;
	bool force_forms;               /* tests (defer_mbps >= 1e12): every relaxed form
	                                   that compiles is used, whatever it costs, and a
	                                   rule's own gate before its prefilter form */
	bool skip_always;               /* measurement: SLUICE_HS_SKIP_ALWAYS */
	bool skip_gated;                /* measurement: SLUICE_HS_SKIP_GATED */
	bool skip_end;                  /* measurement: SLUICE_HS_SKIP_END (streams only) */
	bool no_near;                   /* cfg.no_near */
	double ascii_share;             /* cfg.ascii_share or SCAN_HS_ASCII_SHARE */
	const char *dump;               /* measurement: SLUICE_HS_DUMP directory */
};

struct scan_hs_worker {
	const struct scan_hs *e;
	hs_scratch_t *scratch;
	struct scan_lazy lz;            /* lazy evaluation's memory (lazy_needs) */
	pcre2_match_data *md;
	pcre2_match_context *mctx;
	pcre2_jit_stack *jit;
	uint64_t *prof_ns;              /* [rs->n] SLUICE_HS_PROFILE: PCRE2 time per rule */
	uint32_t *prof_runs;
	uint32_t *prof_near;            /* ... of which near the gate's matches */
	uint64_t prof_phase[5];         /* ... and per phase of the message's end */
	uint8_t *sq;                    /* BATCH bytes: a write, squeezed */
	uint8_t sqmap[256];             /* scan_rules_squeeze_byte, as a table */
	uint32_t *ends;                 /* CHAIN_ENDS: a chain rule's first-copy ends */
	uint32_t memo_key[CHAIN_MEMO];  /* chain_reach: position << 4 | level */
	uint32_t memo_gen[CHAIN_MEMO];
	uint8_t memo_val[CHAIN_MEMO];
	uint32_t gen;
};

struct scan_hs_msg_priv {
	hs_stream_t *s[SCAN_T_COUNT];
	hs_stream_t *gs[SCAN_T_COUNT];  /* the gates database's stream */
	hs_stream_t *ss[SCAN_T_COUNT];  /* the squeeze database's stream */
	uint32_t hist[SCAN_T_COUNT];    /* the last 4 bytes, for the counters */
	struct wrstate wrs[SCAN_T_COUNT][WR_MAX];
	int16_t wlen[SCAN_T_COUNT];     /* the shared word length (wr_shared) */
	uint32_t llen[SCAN_T_COUNT];    /* bytes of the line so far, LLEN_DEAD after a CR */
	uint8_t *batch[SCAN_T_COUNT];   /* small writes not yet scanned (BATCH) */
	size_t blen[SCAN_T_COUNT];
	uint8_t *keep[SCAN_T_COUNT];
	size_t kept[SCAN_T_COUNT];
	uint8_t *fired;                 /* [rs->n] gate fired */
	uint32_t *pending;              /* rules whose gate fired */
	unsigned npending;
	uint64_t *seen;                 /* header keys fed */
	uint8_t *hbuf;                  /* header records not yet scanned */
	size_t hlen;
	uint8_t *ablk[2];               /* the ALL and ALL:raw blocks so far */
	size_t alen[2];
	/* stream offsets of the line ends of :addr / :name records: a match
	 * that takes that line end in is not a match (the value has none) */
	uint64_t term[64];
	unsigned nterm;
	bool dirty;
	bool failed;
	FILE *dump[SCAN_T_COUNT];       /* measurement: every target's bytes */
	struct win *win;                /* WIN_CAP */
	unsigned nwin;
	uint16_t *whead, *wtail;        /* [e->n_wslot] a fired windowed rule's windows */
	uint8_t *wcount;                /* [e->n_wslot] ... how many (to WIN_RULE_CAP) */
};

struct cbctx {
	struct scan_hs_msg *m;
};

static uint64_t
fnv(const void *p, size_t n, uint64_t h)
{
	const uint8_t *s = p;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

const struct scan_ruleset *
scan_hs_rules(const struct scan_hs *e)
{
	return e->rs;
}

unsigned
scan_hs_rule_class(const struct scan_hs *e, uint32_t i)
{
	return i < e->rs->n ? e->cls[i] : SCAN_HS_C_NONE;
}

const char *
scan_hs_rule_how(const struct scan_hs *e, uint32_t i)
{
	static const char *const how[] = {"", "deferred", "deferred-squeeze", "counted", "filtered",
	    "deferred-run", "counted-words", "stream-apart", "counted-lines"};

	static const char *const gate[] = {"gate-in-stream", "gate-in-gates-stream", "own-gate",
	    "chain-gate"};

	if (i < e->rs->n && e->cls[i] == SCAN_HS_C_FAILED && e->defer[i] == DEFER_SHED)
		return "shed";
	if (i < e->rs->n && e->cls[i] == SCAN_HS_C_PREFILTER && e->gsep[i] <= GSEP_CHAIN)
		return gate[e->gsep[i]];
	if (i >= e->rs->n || e->defer[i] > DEFER_LINE)
		return "";
	if (e->cls[i] == SCAN_HS_C_HS ? e->defer[i] == DEFER_FILTER :
	    e->cls[i] != SCAN_HS_C_GATED || e->defer[i] != DEFER_FILTER)
		return "";
	return how[e->defer[i]];
}

/* ---- header keys ---- */

static int
key_find(const struct scan_hs *e, const char *name, uint8_t hmod)
{
	for (unsigned i = 0; i < e->nkeys; i++)
		if (e->keys[i].hmod == hmod && !strcmp(e->keys[i].name, name))
			return (int)i;
	return -1;
}

/* a header key's name: the header's, then its modifier (SCAN_HMOD_*) */
static const char *const hmod_sfx[SCAN_HMOD_COUNT] = {"", ":raw", ":addr", ":name",
	":addr:raw", ":name:raw"};

/* an address or a name out of the value: its matches that take in the
 * record's line end are not the rule's */
static bool
hmod_term(uint8_t hmod)
{
	return hmod == SCAN_HMOD_ADDR || hmod == SCAN_HMOD_NAME || hmod == SCAN_HMOD_ADDR_RAW ||
	    hmod == SCAN_HMOD_NAME_RAW;
}

static int
key_add(struct scan_hs *e, const char *lname, uint8_t hmod)
{
	char buf[300];
	int i;

	snprintf(buf, sizeof(buf), "%s%s", lname, hmod_sfx[hmod]);
	i = key_find(e, buf, hmod);
	if (i >= 0)
		return i;
	if (e->nkeys >= MAX_KEYS)
		return -1;
	struct hkey *k = realloc(e->keys, (e->nkeys + 1) * sizeof(*k));
	if (!k)
		return -1;
	e->keys = k;
	k[e->nkeys].name = strdup(buf);
	k[e->nkeys].hmod = hmod;
	k[e->nkeys].exists_only = lname[0] == '?';
	if (!k[e->nkeys].name)
		return -1;
	return (int)e->nkeys++;
}

static uint32_t
name_hash(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++) {
		h ^= (uint8_t)tolower((unsigned char)s[i]);
		h *= 0x100000001b3ull;
	}
	return (uint32_t)h;
}

/* The slot for a received header name (n bytes, any case), or NULL. */
static const struct hname *
name_lookup(const struct scan_hs *e, const char *s, size_t n)
{
	if (!e->names_cap)
		return NULL;
	uint32_t m = e->names_cap - 1;
	for (uint32_t h = name_hash(s, n) & m;; h = (h + 1) & m) {
		const struct hname *hn = &e->names[h];
		if (!hn->lname)
			return NULL;
		if (!strncasecmp(hn->lname, s, n) && hn->lname[n] == '\0')
			return hn;
	}
}

static struct hname *
name_slot(struct scan_hs *e, const char *lname)
{
	uint32_t m = e->names_cap - 1;
	for (uint32_t h = name_hash(lname, strlen(lname)) & m;; h = (h + 1) & m) {
		struct hname *hn = &e->names[h];
		if (!hn->lname) {
			hn->lname = strdup(lname);
			return hn->lname ? hn : NULL;
		}
		if (!strcmp(hn->lname, lname))
			return hn;
	}
}

/* pseudo-headers that SpamAssassin builds from real ones */
static const struct {
	const char *pseudo;
	const char *from[4];
} pseudo_map[] = {
	{"messageid", {"message-id", "resent-message-id", "x-message-id", NULL}},
	{"tocc", {"to", "cc", NULL}},
	{"envelopefrom", {"return-path", "x-envelope-from", NULL}},
};

static int
setup_header_keys(struct scan_hs *e)
{
	const struct scan_ruleset *rs = e->rs;
	unsigned nh = 0;

	e->key_all = e->key_all_raw = -1;
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (r->defined && r->type == SCAN_RT_HEADER && r->state == SCAN_RS_ACTIVE && r->header)
			nh++;
	}
	e->hrules = calloc(nh + 1, sizeof(*e->hrules));
	e->names_cap = 64;
	while (e->names_cap < (nh + 16) * 4)
		e->names_cap *= 2;
	e->names = calloc(e->names_cap, sizeof(*e->names));
	if (!e->hrules || !e->names)
		return -ENOMEM;
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (!r->defined || r->type != SCAN_RT_HEADER || r->state != SCAN_RS_ACTIVE || !r->header)
			continue;
		char xname[300];
		/* exists: looks for the header by its own name, never a pseudo-header */
		snprintf(xname, sizeof(xname), "%s%s", r->exists ? "?" : "", r->header);
		int k = key_add(e, xname, r->exists ? SCAN_HMOD_NONE : r->hmod);
		if (k < 0)
			return -ENOMEM;
		struct hrule *h = &e->hrules[e->n_hrules++];
		h->rule = i;
		h->key = (uint16_t)k;
		h->negate = r->negate;
		h->exists = r->exists;
		if (r->exists) {
			/* exists:ToCc holds when To or Cc does, as in SpamAssassin
			 * 4.0; its exists:MESSAGEID never does (measured by
			 * tests/scan/test_sa_agreement.py), so only ToCc maps. */
			const char *own[2] = { r->header, NULL };
			const char *const *src = own;
			for (size_t pi = 0; pi < sizeof(pseudo_map) / sizeof(pseudo_map[0]); pi++)
				if (!strcmp(r->header, pseudo_map[pi].pseudo) && !strcmp(r->header, "tocc"))
					src = pseudo_map[pi].from;
			for (; *src != NULL; src++) {
				struct hname *hn = name_slot(e, *src);
				if (!hn)
					return -ENOMEM;
				for (unsigned j = 0; j < 4; j++) {
					if (hn->exists_key[j] == (uint16_t)(k + 1))
						break;
					if (hn->exists_key[j] == 0) {
						hn->exists_key[j] = (uint16_t)(k + 1);
						break;
					}
				}
			}
			continue;
		}
		if (!strcmp(r->header, "all")) {
			if (r->hmod == SCAN_HMOD_RAW)
				e->key_all_raw = k;
			else
				e->key_all = k;
			continue;
		}
		bool pseudo = false;
		for (size_t p = 0; p < sizeof(pseudo_map) / sizeof(pseudo_map[0]); p++) {
			if (strcmp(r->header, pseudo_map[p].pseudo))
				continue;
			pseudo = true;
			for (int f = 0; pseudo_map[p].from[f]; f++) {
				struct hname *hn = name_slot(e, pseudo_map[p].from[f]);
				if (!hn)
					return -ENOMEM;
				hn->pseudo[r->hmod] = (uint16_t)(k + 1);
			}
		}
		if (!pseudo) {
			struct hname *hn = name_slot(e, r->header);
			if (!hn)
				return -ENOMEM;
			hn->key[r->hmod] = (uint16_t)(k + 1);
		}
	}
	return 0;
}

/* ---- expressions ---- */

static pcre2_code *pcre_compile(const char *x, uint32_t opts, char *why, size_t whylen);

static void
sb_hex(struct scan_sb *b, const uint8_t *s, size_t n)
{
	char x[5];

	for (size_t i = 0; i < n; i++) {
		if (isalnum(s[i]))
			scan_sb_put(b, &s[i], 1);
		else {
			snprintf(x, sizeof(x), "\\x%02x", s[i]);
			scan_sb_put(b, x, 4);
		}
	}
}

/*
 * P with every start anchor (^ and \A outside a class) turned into mark:
 * \x02, the byte that starts each header value record, or \n, the byte
 * before each line of the ALL block; how many there were. Hyperscan
 * takes ^ only at the start of an expression.
 */
static unsigned
anchors_to_mark(const char *re, struct scan_sb *out, const char *mark)
{
	unsigned any = 0;

	for (const char *s = re; *s;) {
		if (*s == '\\' && s[1]) {
			if (s[1] == 'A') {
				scan_sb_puts(out, mark);
				any++;
			} else
				scan_sb_put(out, s, 2);
			s += 2;
			continue;
		}
		if (*s == '[') {
			const char *b = s;
			if ((s = scan_rules_class_end(b)) == NULL)
				s = b + strlen(b);
			scan_sb_put(out, b, (size_t)(s - b));
			continue;
		}
		if (*s == '^') {
			scan_sb_puts(out, mark);
			any++;
		} else
			scan_sb_put(out, s, 1);
		s++;
	}
	return any;
}

/* Is r an ALL or ALL:raw rule (the header block, scan_hs_header)? */
static bool
all_rule(const struct scan_rule *r)
{
	return r->type == SCAN_RT_HEADER && !strcmp(r->header, "all") &&
	    (r->hmod == SCAN_HMOD_NONE || r->hmod == SCAN_HMOD_RAW);
}

/*
 * The key's record prefix, for named-header rules: "^\x01key\n", then what
 * may come before the rule's match in the record: the value's line (any
 * line of the ALL block), or, anchored, nothing or that.
 */
static void
header_prefix(struct scan_sb *b, const struct scan_rule *r, bool anchored)
{
	char buf[300];

	snprintf(buf, sizeof(buf), "%s%s", r->header, hmod_sfx[r->hmod]);
	scan_sb_puts(b, "^\\x01");
	sb_hex(b, (const uint8_t *)buf, strlen(buf));
	scan_sb_puts(b, "\\n");
	if (all_rule(r))
		scan_sb_puts(b, "\\x02[^\\x01]*?");
	else
		scan_sb_puts(b, anchored ? "(?:\\x02[^\\n]*?)?" : "\\x02[^\\n]*?");
}

/*
 * The expression a rule compiles to (both engines), or NULL on ENOMEM.
 * Header rule P on key K: ^\x01K\n\x02[^\n]*?(?:P); with start anchors,
 * ^\x01K\n(?:\x02[^\n]*?)?(?:P') where P' has \x02 for each anchor; with two
 * or more, P' has (?<=\x02) for each after the first form's prefix (PCRE2).
 * ALL and ALL:raw P: ^\x01all\n\x02[^\x01]*?(?:P') with \n for each start
 * anchor in P': the block is one record, a line break before each line.
 * A body rule with tflags nosubject: \n[\s\S]*?(?:P), past BODY's first
 * line (the Subject's, scan/scan.h).
 */
static char *
rule_expr(const struct scan_hs *e, const struct scan_rule *r)
{
	struct scan_sb b = {0};

	(void)e;
	if (r->type == SCAN_RT_BODY && (r->tflags & SCAN_TF_NOSUBJECT))
		scan_sb_puts(&b, "\\n[\\s\\S]*?");
	scan_sb_puts(&b, r->re_flags & SCAN_RE_X ? "(?x:" : "(?:");
	if (r->type == SCAN_RT_HEADER) {
		struct scan_sb p = {0}, h = {0};
		bool all = all_rule(r);
		unsigned anchored = anchors_to_mark(r->re, &p, all ? "\\n" : "\\x02");
		if (anchored > 1 && !all) {
			/* two anchors on one path would take two \x02 bytes: zero
			 * width instead (PCRE2 only: Hyperscan refuses lookbehind) */
			free(p.p);
			p = (struct scan_sb){0};
			anchors_to_mark(r->re, &p, "(?<=\\x02)");
			anchored = 0;
		}
		header_prefix(&h, r, anchored);
		scan_sb_put(&h, b.p, b.n);
		scan_sb_puts(&h, p.p ? p.p : "");
		free(p.p);
		free(b.p);
		if (p.oom)
			h.oom = true;
		b = h;
	} else
		scan_sb_puts(&b, r->re);
	scan_sb_puts(&b, r->re_flags & SCAN_RE_X ? "\n)" : ")");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/*
 * Whether ^ and $ of rule r (without /m) match at every line: SpamAssassin
 * matches header, body and uri rules line by line (a header, a paragraph,
 * a URI: a line each here), full and rawbody rules over the whole text (a
 * part's decoded text, in chunks of 2048 bytes or more).
 */
static bool
line_target(const struct scan_rule *r)
{
	return r->type != SCAN_RT_FULL && r->type != SCAN_RT_RAWBODY;
}

static unsigned
rule_hs_flags(const struct scan_rule *r, bool multiple)
{
	unsigned f = 0;

	if (r->re_flags & SCAN_RE_I)
		f |= HS_FLAG_CASELESS;
	if (r->re_flags & SCAN_RE_S)
		f |= HS_FLAG_DOTALL;
	if ((r->re_flags & SCAN_RE_M) || line_target(r))
		f |= HS_FLAG_MULTILINE;
	if (!multiple)
		f |= HS_FLAG_SINGLEMATCH;
	return f;
}

static uint32_t
rule_pcre_flags(const struct scan_rule *r)
{
	/* /x is in the pattern as "(?x:...\n)" (rule_expr) */
	return scan_rules_pcre2_options(r->re_flags & ~SCAN_RE_X) |
	    (line_target(r) ? PCRE2_MULTILINE : 0);
}

/*
 * Rule i's widest match, from Hyperscan's max_width of its width form
 * (scan_rules_width_form: every match of the rule is one of it, at the same
 * offsets), into e->width[i] when 1..WIN_MAX, else 0. Header rules are
 * left out: their form starts at the record's name, any distance before.
 */
/* Hyperscan's max_width of a width form (collapsed first), 0 if over WIN_MAX or unknown */
static unsigned
form_width(const char *wx, unsigned flags)
{
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *err = NULL;
	/* look-alike letter groups as classes: as wide, and within Hyperscan's limits */
	char *cx = wx ? scan_rules_collapse(wx) : NULL;
	unsigned w = 0;

	if (cx && hs_expression_info(cx, flags, &info, &err) == HS_SUCCESS &&
	    info->max_width >= 1 && info->max_width <= WIN_MAX)
		w = info->max_width;
	hs_free_compile_error(err);
	free(info);
	free(cx);
	return w;
}

unsigned
scan_hs_gate_strings(const char *re, uint32_t re_flags, uint8_t (*set)[SCAN_RULES_LSET_LEN + 1],
    bool cut)
{
	uint8_t lit[256];
	size_t n = scan_rules_literal(re, re_flags, lit, sizeof(lit));
	unsigned ns = scan_rules_literal_set(re, re_flags, set, SCAN_RULES_LSET_MAX);
	unsigned smin = ns ? 255 : 0;

	for (unsigned k = 0; k < ns; k++)
		if (set[k][0] < smin)
			smin = set[k][0];
	if (n >= SCAN_HS_GATE_MIN && (n >= smin || n >= 6)) {
		if (n > SCAN_RULES_LSET_LEN && !cut)
			return 0;       /* longer than a set string: not compared here */
		if (n > SCAN_RULES_LSET_LEN)
			n = SCAN_RULES_LSET_LEN;        /* a prefix is required too */
		set[0][0] = (uint8_t)n;
		memcpy(&set[0][1], lit, n);
		return 1;
	}
	return smin >= SCAN_HS_GATE_MIN ? ns : 0;
}

/*
 * A literal-gated rule too wide (or unbounded) for a window can still
 * have a bounded reach from its start to its gate: the shortest prefix
 * A1..Aj of its width form whose own gate strings are all among the
 * rule's holds one in every match, within the prefix's width of the
 * match's start, so that width bounds how far before a gate end a match
 * starts. 0: no such prefix.
 */
static unsigned
literal_reach(const struct scan_rule *r, const char *wx)
{
	uint8_t g[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	uint8_t p[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	char *pre[64];
	unsigned ng = scan_hs_gate_strings(r->re, r->re_flags, g, false), reach = 0;
	unsigned np = ng ? scan_gate_prefixes(wx, pre, 64) : 0;
	bool done = false;

	for (unsigned j = 0; j < np; j++) {
		if (!done && !reach) {
			unsigned w = form_width(pre[j], rule_hs_flags(r, false));
			size_t l = strlen(pre[j]);
			if (!w)
				done = true;    /* wider prefixes are no narrower */
			else if (l > 4) {
				pre[j][l - 1] = '\0';  /* the atoms without "(?:" ")" */
				unsigned n = scan_hs_gate_strings(pre[j] + 3, r->re_flags, p, false), in = 0;
				for (unsigned a = 0; a < n; a++)
					for (unsigned b = 0; b < ng; b++)
						if (p[a][0] == g[b][0] && !strncasecmp((const char *)&p[a][1],
						    (const char *)&g[b][1], p[a][0])) {
							in++;
							break;
						}
				if (n && in == n)
					reach = w;
			}
		}
		free(pre[j]);
	}
	return reach;
}

/*
 * Rule i's widest match, from Hyperscan's max_width of its width form
 * (scan_rules_width_form: every match of the rule is one of it, at the same
 * offsets), into e->width[i] when 1..WIN_MAX, else 0; and into
 * e->reach[i], for a literal gate, the widest a match reaches from its
 * start to the end of its gate's string (literal_reach), or that width.
 * Header rules are left out: their form starts at the record's name, any
 * distance before.
 */
static void
rule_width(struct scan_hs *e, uint32_t i)
{
	const struct scan_rule *r = &e->rs->rules[i];
	char *x, *wx;

	e->width[i] = e->reach[i] = 0;
	if (r->type == SCAN_RT_HEADER || e->multiple[i] || e->term_check[i])
		return;
	if ((x = rule_expr(e, r)) == NULL)
		return;
	wx = scan_rules_width_form(x);
	free(x);
	e->width[i] = (uint16_t)form_width(wx, rule_hs_flags(r, false));
	e->reach[i] = e->width[i] ? e->width[i] : wx ? (uint16_t)literal_reach(r, wx) : 0;
	if (getenv("SLUICE_HS_DEBUG"))
		fprintf(stderr, "width %s: %u, reach %u%s\n", r->name, e->width[i], e->reach[i],
		    wx ? "" : " (no width form)");
	free(wx);
}

/* Does PCRE2 rule i run near its gate's match ends (its gate reports them all)? */
static bool
near_ok(const struct scan_hs *e, uint32_t i)
{
	return e->width[i] != 0;
}

/*
 * A deferred Hyperscan rule behind a literal or a run of its own atoms,
 * not multiple, with a bounded width (rule_width; set in make_items): its
 * gate reports every end, and when those ends' windows cover little of the
 * kept text PCRE2 searches them instead of Hyperscan the whole text
 * (run_near).
 */
static bool
defer_near(const struct scan_hs *e, uint32_t i)
{
	return e->cls[i] == SCAN_HS_C_HS && (e->defer[i] == DEFER_LIT ||
	    e->defer[i] == DEFER_RUN) && !e->multiple[i] && e->width[i] != 0;
}

/* Does the gate of rule i report every match end (a windowed rule)? */
static bool
gate_all_ends(const struct scan_hs *e, uint32_t i)
{
	return (e->cls[i] == SCAN_HS_C_PREFILTER && near_ok(e, i)) || defer_near(e, i);
}

static void
add_reason(struct scan_hs_stats *st, const char *why)
{
	char w[64];

	snprintf(w, sizeof(w), "%s", why);
	/* cut at the first index / digit so messages group */
	for (char *c = w; *c; c++)
		if (isdigit((unsigned char)*c)) {
			*c = '\0';
			break;
		}
	for (unsigned i = 0; i < st->n_reason; i++)
		if (!strcmp(st->reason[i].why, w)) {
			st->reason[i].count++;
			return;
		}
	if (st->n_reason < SCAN_HS_REASONS) {
		snprintf(st->reason[st->n_reason].why, sizeof(st->reason[0].why), "%s", w);
		st->reason[st->n_reason++].count = 1;
	}
}

/* one expression of a database under construction */
struct item {
	char *expr;
	unsigned flags;
	unsigned id;
};

struct items {
	struct item *v;
	unsigned n, cap;
};

static int
items_add(struct items *it, char *expr, unsigned flags, unsigned id)
{
	if (!expr)
		return -ENOMEM;
	if (it->n == it->cap) {
		unsigned c = it->cap ? it->cap * 2 : 256;
		struct item *v = realloc(it->v, c * sizeof(*v));
		if (!v) {
			free(expr);
			return -ENOMEM;
		}
		it->v = v;
		it->cap = c;
	}
	it->v[it->n++] = (struct item){expr, flags, id};
	return 0;
}

static void
items_free(struct items *it)
{
	for (unsigned i = 0; i < it->n; i++)
		free(it->v[i].expr);
	free(it->v);
	it->v = NULL;
	it->n = it->cap = 0;
}

static bool
hs_accepts(const char *expr, unsigned flags, struct scan_hs_stats *st)
{
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *err = NULL;

	if (hs_expression_info(expr, flags, &info, &err) != HS_SUCCESS) {
		if (st)
			add_reason(st, err ? err->message : "?");
		hs_free_compile_error(err);
		return false;
	}
	free(info);
	return true;
}

/*
 * The cost model: a pattern compiled alone whose database or stream state
 * is large (wide bounded repeats, many NFA states) slows the whole shared
 * database and its compile; it goes to PCRE2 behind a gate instead.
 */
/*
 * The sample text of the scan-cost model: deterministic pseudo-prose (our
 * own word list, digits, punctuation, a little markup, some UTF-8), n bytes.
 */
static void
sample_text(uint8_t *b, size_t n)
{
	static const char *const words[] = {
		"the", "and", "you", "your", "for", "with", "this", "that", "have", "from",
		"please", "meeting", "notes", "agenda", "monday", "report", "today", "team",
		"there", "project", "build", "message", "question", "review", "we",
		"will", "are", "our", "not", "can", "new", "more", "now", "only", "was",
		"http://www.example.com/a?b=1", "42", "3.5", "U.S.", "&nbsp;", "caf\xc3\xa9",
		"re:", "hi", "all", "thanks", "later.", "minutes", "draft", "slides",
		"lunch", "next", "week", "room", "call", "patch", "branch", "tests",
		"--", "=3D", "<b>", "</b>", "(1)", "[2]", "release", "notes", "fixed",
		"to", "of", "in", "is", "it", "on", "be", "at", "by", "as", "or", "an", "if",
		"so", "my", "me", "do", "no", "up", "isn't", "don't", "it's", "account",
		"payment", "order", "price", "money", "10%", "$25", "one", "two", "time",
		"which", "before", "made", "these", "most", "had", "them", "over", "into",
		"even", "than", "him", "she", "her", "they", "were", "been", "said", "would",
		"could", "other", "about", "many", "first", "man", "what", "some", "also",
		"then", "must", "such", "like", "any", "who", "when", "their", "through",
		"after", "has", "did", "may", "out", "its", "his", "but", "way", "work",
		"here", "information", "company", "service", "email", "online", "home",
		"day", "year", "people", "good", "know", "get", "make", "see", "use", "need",
	};
	uint32_t x = 2463534242u;
	size_t i = 0, col = 0;

	while (i < n) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		const char *w = words[x % (sizeof(words) / sizeof(words[0]))];
		size_t k = strlen(w);
		for (size_t j = 0; j < k && i < n; j++)
			b[i++] = (uint8_t)((x >> 8) % 7 == 0 && j == 0 ? toupper((unsigned char)w[j]) : w[j]);
		col += k + 1;
		if (i < n)
			b[i++] = col > 70 || (x >> 12) % 23 == 0 ? '\n' : (x >> 16) % 11 == 0 ? ',' : ' ';
		if (col > 70)
			col = 0;
	}
}

static int
count_match(unsigned int id, unsigned long long from, unsigned long long to,
    unsigned int flags, void *ctx)
{
	(void)id;
	(void)from;
	(void)to;
	(void)flags;
	(*(unsigned *)ctx)++;
	return 0;
}

/*
 * MB/s of one database over the sample text (best of SCAN_GATE_REPS), 0 on
 * failure;
 * *matches (if not NULL): how many matches the text gave.
 */
static double
scan_speed(const hs_database_t *db, const uint8_t *sample, size_t n, unsigned *matches)
{
	hs_scratch_t *sc = NULL;
	hs_stream_t *str = NULL;
	double best = 0;

	if (hs_alloc_scratch(db, &sc) != HS_SUCCESS)
		return 0;
	for (int r = 0; r < SCAN_GATE_REPS; r++) {
		struct timespec c0, c1;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
		if (hs_open_stream(db, 0, &str) != HS_SUCCESS)
			break;
		unsigned k = 0;
		for (size_t o = 0; o < n; o += 4096)
			hs_scan_stream(str, (const char *)sample + o, (unsigned)(n - o < 4096 ? n - o : 4096),
			    0, sc, count_match, &k);
		hs_close_stream(str, sc, count_match, &k);
		if (matches)
			*matches = k;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
		double secs = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
		double mbps = secs > 0 ? (double)n / secs / 1e6 : 1e9;
		if (mbps > best)
			best = mbps;
	}
	hs_free_scratch(sc);
	return best;
}

static bool
hs_cheap_within(const char *expr, unsigned flags, struct scan_hs_stats *st, size_t max_db,
    double max_secs, const uint8_t *sample, size_t sample_n, double *mbps, unsigned *matches)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;
	size_t dbs = 0, ss = 0;
	struct timespec c0, c1;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	if (hs_compile(expr, flags, HS_MODE_STREAM, scan_hs_target(), &db, &err) != HS_SUCCESS) {
		if (st)
			add_reason(st, err ? err->message : "?");
		hs_free_compile_error(err);
		return false;
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	hs_database_size(db, &dbs);
	hs_stream_size(db, &ss);
	if (mbps)
		*mbps = sample ? scan_speed(db, sample, sample_n, matches) : 0;
	hs_free_database(db);
	double secs = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
	if (getenv("SLUICE_HS_DEBUG"))
		fprintf(stderr, "cost %.4fs db=%zu stream=%zu %.0fMB/s %.80s\n", secs, dbs, ss,
		    mbps ? *mbps : 0.0, expr);
	if (dbs > max_db || secs > max_secs) {
		if (st)
			st->costly++;
		return false;
	}
	return true;
}


/* CPU seconds of one block scan of the sample text (best of SCAN_GATE_REPS);
 * 1e9 on failure. */
static double
block_seconds(const hs_database_t *db, const uint8_t *sample)
{
	hs_scratch_t *sc = NULL;
	double best = 1e9;
	unsigned k = 0;

	if (!sample || hs_alloc_scratch(db, &sc) != HS_SUCCESS)
		return 1e9;
	for (int rep = 0; rep < SCAN_GATE_REPS; rep++) {
		struct timespec c0, c1;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
		if (hs_scan(db, (const char *)sample, SCAN_HS_SAMPLE, 0, sc, count_match, &k) !=
		    HS_SUCCESS)
			break;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
		double t = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
		best = t < best ? t : best;
	}
	hs_free_scratch(sc);
	return best;
}

/*
 * CPU seconds of one block scan of the sample by expression x alone (*opens:
 * it matched the sample); 1e9 when it does not compile within
 * SCAN_HS_GATE_DB.
 */
static double
form_block_seconds(const char *x, unsigned flags, const uint8_t *sample, bool *opens)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;
	hs_scratch_t *sc = NULL;
	size_t z = 0;
	double secs = 1e9;
	unsigned k = 0;

	*opens = true;
	if (!x || !sample || hs_compile(x, flags, HS_MODE_BLOCK, scan_hs_target(), &db, &err) !=
	    HS_SUCCESS) {
		hs_free_compile_error(err);
		return 1e9;
	}
	if (hs_database_size(db, &z) == HS_SUCCESS && z <= SCAN_HS_GATE_DB) {
		secs = block_seconds(db, sample);
		if (hs_alloc_scratch(db, &sc) == HS_SUCCESS && hs_scan(db, (const char *)sample,
		    SCAN_HS_SAMPLE, 0, sc, count_match, &k) == HS_SUCCESS)
			*opens = k != 0;
		hs_free_scratch(sc);
	}
	hs_free_database(db);
	return secs;
}

/* CPU seconds PCRE2 (JIT) takes to run expression x of rule r over the
 * sample (best of SCAN_GATE_REPS). */
static double
pcre_seconds(const struct scan_rule *r, const char *x, const uint8_t *sample)
{
	char why[160];
	pcre2_code *c = sample ? pcre_compile(x, rule_pcre_flags(r), why, sizeof(why)) : NULL;
	pcre2_match_data *md = c ? pcre2_match_data_create(1, NULL) : NULL;
	pcre2_match_context *mc = md ? pcre2_match_context_create(NULL) : NULL;
	pcre2_jit_stack *js = mc ? pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL) : NULL;
	double best = 0;

	if (js) {
		pcre2_set_match_limit(mc, 200000);
		pcre2_set_depth_limit(mc, 10000);
		pcre2_jit_stack_assign(mc, NULL, js);
		best = 1e9;
		for (int rep = 0; rep < SCAN_GATE_REPS; rep++) {
			struct timespec c0, c1;
			clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
			pcre2_match(c, sample, SCAN_HS_SAMPLE, 0, 0, md, mc);
			clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
			double t = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
			best = t < best ? t : best;
		}
	}
	pcre2_jit_stack_free(js);
	pcre2_match_context_free(mc);
	pcre2_match_data_free(md);
	pcre2_code_free(c);
	return best;
}

/*
 * The relaxed form of rule i (scan_rules_relax, then scan_rules_collapse):
 * the first of the rule itself / the tight form (bounded repeats up to
 * TIGHT_MAXN kept) / two copies of a repeated whole / one copy / no
 * assertions that compiles alone in block mode within SCAN_HS_GATE_DB and
 * scans the sample text in under 1/1.25 (the rule, tight) or half (the
 * others) of the CPU time PCRE2 takes to run the rule over it; NULL if
 * none. It may match ordinary text: a gate that opens runs PCRE2 as the
 * rule did without one, the cost bound keeps that cheap.
 */
static char *
relaxed_form(const struct scan_hs *e, uint32_t i)
{
	const struct scan_rule *r = &e->rs->rules[i];
	char *x = rule_expr(e, r);
	unsigned f = rule_hs_flags(r, false);
	char *ok = NULL;

	/* the rule itself (when Hyperscan takes it whole: too slow to compile
	 * into the stream, say, but not in block mode alone; a repeat such as
	 * {4,40} made {4,} by the relaxing can cost it twice the time), then
	 * tight (bounded repeats kept), then two copies of a repeated whole,
	 * then one, then without assertions */
	char *prev = NULL;
	for (int pass = -1; x && pass < 4 && !ok; pass++) {
		char *rx0 = pass < 0 ? strdup(x) : pass == 0 ?
		    scan_rules_relax_n(x, false, 2, TIGHT_MAXN) :
		    scan_rules_relax(x, pass == 3, pass == 1 ? 2 : 1);
		char *rx = pass < 0 ? rx0 : rx0 ? scan_rules_collapse(rx0) : NULL;
		hs_database_t *db = NULL;
		hs_compile_error_t *err = NULL;
		struct timespec c0, c1;
		size_t dbs = 0;
		if (rx0 != rx)
			free(rx0);
		if (!rx || (prev && !strcmp(prev, rx))) {
			free(rx);
			continue;       /* nothing new to try */
		}
		free(prev);
		prev = strdup(rx);
		clock_gettime(CLOCK_MONOTONIC, &c0);
		if (hs_compile(rx, f, HS_MODE_BLOCK, scan_hs_target(), &db, &err) != HS_SUCCESS) {
			hs_free_compile_error(err);
			db = NULL;
		}
		clock_gettime(CLOCK_MONOTONIC, &c1);
		if (db)
			hs_database_size(db, &dbs);
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "relaxed %s pass %d: %s %.2fs db=%zu %.100s\n", r->name, pass,
			    db ? "ok" : "refused", (double)(c1.tv_sec - c0.tv_sec) +
			    (double)(c1.tv_nsec - c0.tv_nsec) / 1e9, dbs, rx);
		/* size, not compile time, decides (a loaded machine compiles
		 * slowly); and the form must scan the sample text in well under
		 * the time PCRE2 takes to run the rule over it (half, for the
		 * loose forms) */
		double hs_s = db && dbs <= SCAN_HS_GATE_DB ? block_seconds(db, e->sample) : 1e9;
		double pc_s = hs_s < 1e9 ? pcre_seconds(r, x, e->sample) : 0;
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "relaxed %s: form %.1f us, pcre2 %.1f us on the sample\n",
			    r->name, hs_s * 1e6, pc_s * 1e6);
		/* the tight form opens little more often than the rule matches:
		 * it pays when cheaper than PCRE2 at all (with a margin) */
		if (hs_s < 1e9 && (hs_s * (pass <= 0 ? 1.25 : 2) < pc_s || e->force_forms))
			ok = rx;
		else
			free(rx);
		if (db)
			hs_free_database(db);
	}
	free(prev);
	free(x);
	return ok;
}

/* A gate expression: lit behind the header key prefix for header rules. */
static char *
gate_expr(const struct scan_rule *r, const uint8_t *lit, size_t n)
{
	struct scan_sb b = {0};

	if (r->type == SCAN_RT_HEADER) {
		header_prefix(&b, r, false);
	}
	sb_hex(&b, lit, n);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/*
 * The literal gate of a rule, added to it (it NULL: only measured): the
 * longest literal every match contains, or a set of literals one of which
 * every match contains (one per top-level branch), whichever has the longer
 * shortest string; each at least SCAN_HS_GATE_MIN bytes. The length of its
 * shortest string, 0 none, or -ENOMEM.
 */
static int
gate_literals_in(const struct scan_rule *r, struct items *it, uint32_t i, const uint8_t *lc,
    size_t lcn, bool all_ends);

/* all_ends: the gate reports every match end (a windowed rule), not only the first */
static int
gate_literals(const struct scan_rule *r, struct items *it, uint32_t i, bool all_ends)
{
	return gate_literals_in(r, it, i, NULL, 0, all_ends);
}

/* Does s (n bytes) occur in lc (lower-cased text), compared caselessly? */
static bool
in_lower(const uint8_t *lc, size_t lcn, const uint8_t *s, size_t n)
{
	uint8_t low[256];

	if (!lc || n > sizeof(low))
		return false;
	for (size_t k = 0; k < n; k++)
		low[k] = (uint8_t)tolower(s[k]);
	return memmem(lc, lcn, low, n) != NULL;
}

/* gate_literals; with lc (the lower-cased sample text), a gate that occurs in
 * it opens on ordinary prose: 0, no gate. */
static int
gate_literals_in(const struct scan_rule *r, struct items *it, uint32_t i, const uint8_t *lc,
    size_t lcn, bool all_ends)
{
	uint8_t lit[256];
	uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	size_t n = scan_rules_literal(r->re, r->re_flags, lit, sizeof(lit));
	unsigned ns = scan_rules_literal_set(r->re, r->re_flags, set, SCAN_RULES_LSET_MAX);
	unsigned smin = ns ? 255 : 0;
	unsigned f = HS_FLAG_CASELESS | (all_ends ? 0 : HS_FLAG_SINGLEMATCH) |
	    (r->type == SCAN_RT_HEADER ? HS_FLAG_MULTILINE : 0);
	int rc;

	for (unsigned k = 0; k < ns; k++)
		if (set[k][0] < smin)
			smin = set[k][0];
	if (n >= SCAN_HS_GATE_MIN && (n >= smin || n >= 6)) {
		if (in_lower(lc, lcn, lit, n))
			return 0;
		if (it && (rc = items_add(it, gate_expr(r, lit, n), f, GATE_BIT | i)) < 0)
			return rc;
		return (int)n;
	}
	if (smin < SCAN_HS_GATE_MIN)
		return 0;
	for (unsigned k = 0; k < ns && lc; k++)
		if (in_lower(lc, lcn, &set[k][1], set[k][0]))
			return 0;
	for (unsigned k = 0; k < ns && it; k++)
		if ((rc = items_add(it, gate_expr(r, &set[k][1], set[k][0]), f, GATE_BIT | i)) < 0)
			return rc;
	return (int)smin;
}

/*
 * The squeeze gate of a rule, added to it (the target's squeeze database;
 * NULL: only measured): the strings of scan_rules_squeeze_set, one of
 * which the squeezed image of every match contains, at least
 * SCAN_HS_SQUEEZE_MIN bytes each; with sq (the squeezed sample text, when
 * deciding), a set with a string shorter than SCAN_HS_SQUEEZE_SURE that
 * occurs in it is no gate. The length of the shortest, 0 none, or -ENOMEM.
 */
static int
squeeze_gate(const struct scan_rule *r, struct items *it, uint32_t i, const uint8_t *sq,
    size_t sqn)
{
	uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	unsigned ns = r->type == SCAN_RT_HEADER ? 0 :
	    scan_rules_squeeze_set(r->re, r->re_flags, set, SCAN_RULES_LSET_MAX);
	unsigned smin = ns ? 255 : 0;
	int rc;

	for (unsigned k = 0; k < ns; k++)
		if (set[k][0] < smin)
			smin = set[k][0];
	if (smin < SCAN_HS_SQUEEZE_MIN)
		return 0;
	for (unsigned k = 0; k < ns && sq; k++)
		if (memmem(sq, sqn, &set[k][1], set[k][0]))
			return 0;       /* opens on ordinary prose */
	for (unsigned k = 0; k < ns && it; k++) {
		struct scan_sb b = {0};
		sb_hex(&b, &set[k][1], set[k][0]);
		if (b.oom) {
			free(b.p);
			return -ENOMEM;
		}
		if ((rc = items_add(it, b.p, HS_FLAG_SINGLEMATCH, GATE_BIT | i)) < 0)
			return rc;
	}
	return (int)smin;
}

static pcre2_code *pcre_compile(const char *x, uint32_t opts, char *why, size_t whylen);

/* The bytes class [...] (cls, n bytes) takes, under rule r's flags, into in[]. */
static bool
class_bytes(const struct scan_rule *r, const char *cls, size_t n, bool *in)
{
	char x[512];
	char why[160];

	if (n + 16 > sizeof(x))
		return false;
	snprintf(x, sizeof(x), "^(?:%.*s)\\z", (int)n, cls);
	pcre2_code *c = pcre_compile(x, rule_pcre_flags(r) & ~(uint32_t)PCRE2_MULTILINE, why,
	    sizeof(why));
	pcre2_match_data *md = c ? pcre2_match_data_create(1, NULL) : NULL;
	if (!md) {
		pcre2_code_free(c);
		return false;
	}
	for (unsigned v = 0; v < 256; v++) {
		uint8_t ch = (uint8_t)v;
		in[v] = pcre2_match(c, &ch, 1, 0, 0, md, NULL) >= 0;
	}
	pcre2_match_data_free(md);
	pcre2_code_free(c);
	return true;
}

static bool
word_byte(unsigned v)
{
	return (v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') || (v >= '0' && v <= '9') || v == '_';
}

/*
 * A word-run automaton for rule i, \b(?:[C]{m,}[S]+){n} exactly (a plain
 * rule, not `multiple`; C only word bytes, S only non-word bytes, so that
 * \b before the first word is "after a non-word byte"): true if it
 * qualifies.
 */
static bool
wordrun_make(const struct scan_rule *r, uint32_t i, struct wordrun *w)
{
	const char *s = r->re, *c1, *c2, *s1, *s2;
	bool inc[256], ins[256];
	char *end;

	if (!s || (r->tflags & SCAN_TF_MULTIPLE) || r->type == SCAN_RT_HEADER ||
	    (r->re_flags & SCAN_RE_X) || strncmp(s, "\\b(?:[", 6))
		return false;
	c1 = s + 5;
	if (!(c2 = scan_rules_class_end(c1)) || *c2 != '{')
		return false;
	unsigned long mn = strtoul(c2 + 1, &end, 10);
	if (end == c2 + 1 || strncmp(end, ",}[", 3) || mn < 1 || mn > 1000)
		return false;
	s1 = end + 2;
	if (!(s2 = scan_rules_class_end(s1)) || strncmp(s2, "+){", 3))
		return false;
	unsigned long nn = strtoul(s2 + 3, &end, 10);
	if (end == s2 + 3 || strcmp(end, "}") || nn < 1 || nn > 1000)
		return false;
	if (!class_bytes(r, c1, (size_t)(c2 - c1), inc) ||
	    !class_bytes(r, s1, (size_t)(s2 - s1), ins))
		return false;
	memset(w, 0, sizeof(*w));
	bool any = false;
	for (unsigned v = 0; v < 256; v++) {
		if ((inc[v] && !word_byte(v)) || (ins[v] && word_byte(v)))
			return false;
		any |= inc[v];
		w->kind[v] = inc[v] ? WR_LETTER : word_byte(v) ? WR_WORD : ins[v] ? WR_SEP : WR_OTHER;
	}
	if (!any)
		return false;
	w->rule = i;
	w->min = (uint16_t)mn;
	w->n = (uint16_t)nn;
	return true;
}

/*
 * A rule of exactly the shape ^[^\r\n]{n} under /m (__LONGLINE, n 998, on
 * the full message: a line of at least n bytes): a line starts at the text's
 * start and after every LF (Hyperscan's and PCRE2's multi-line ^), and
 * matches once n bytes follow with no CR or LF among them. Not `multiple`,
 * not /x, not negated. *n (if not NULL) its length. Alone in the full
 * target's stream it cost 4.3 ms over the corpus; memchr finds the CRs and
 * LFs instead.
 */
static bool
linelen_make(const struct scan_rule *r, uint32_t *n)
{
	const char *x = r->re;
	char *end;

	if (!x || r->negate || (r->tflags & SCAN_TF_MULTIPLE) || !(r->re_flags & SCAN_RE_M) ||
	    (r->re_flags & SCAN_RE_X) || r->type == SCAN_RT_HEADER)
		return false;
	static const size_t pl = sizeof("^[^\\r\\n]{") - 1;
	if (strncmp(x, "^[^\\r\\n]{", pl) && strncmp(x, "^[^\\n\\r]{", pl))
		return false;
	if (x[pl] < '0' || x[pl] > '9')
		return false;
	unsigned long v = strtoul(x + pl, &end, 10);
	if (strcmp(end, "}") || v == 0 || v > 1000000)
		return false;
	if (n)
		*n = (uint32_t)v;
	return true;
}

/*
 * A counter for rule i (a `multiple` rule whose matches are a few strings
 * of at most 4 bytes, e.g. /e/): true if it qualifies. Hyperscan reports a
 * rule once per match end, so the count is the number of offsets where one
 * of the strings ends, which a byte loop finds exactly.
 */
static bool
counter_make(const struct scan_rule *r, uint32_t i, struct counter *c)
{
	uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	unsigned ns;

	if (!(r->tflags & SCAN_TF_MULTIPLE) || r->type == SCAN_RT_HEADER ||
	    !(ns = scan_rules_exact_set(r->re, r->re_flags, set, SCAN_RULES_LSET_MAX)) ||
	    ns > CTR_MAX)
		return false;
	memset(c, 0, sizeof(*c));
	c->rule = i;
	c->max = r->maxhits;
	for (unsigned k = 0; k < ns; k++) {
		unsigned n = set[k][0];
		if (!n || n > 4)
			return false;
		for (unsigned j = 0; j < n; j++) {
			if (!set[k][1 + j] && n > 1)
				return false;   /* the history starts as zero bytes */
			c->val[k] = c->val[k] << 8 | set[k][1 + j];
		}
		c->mask[k] = n == 4 ? 0xffffffffu : (1u << (8 * n)) - 1;
		c->last[set[k][n]] = 1;
	}
	c->n = ns;
	return true;
}

/*
 * The chain gate of a rule that repeats one group as a whole, (?:(X){k})
 * (the __FILL_THIS_FORM_SHORT2 shape): X' is X relaxed (a superset, every
 * assertion dropped) and never empty. A match is k consecutive matches of
 * X, so it holds a match of X' ending at some p1 (any start) from which
 * k-1 more copies follow back to back: the gate scans for X' (every end)
 * and then, from each end, for X' anchored there (chain_open). The copy
 * scanning every end is in e->ddb[i], the anchored one in e->adb[i].
 * 0, or -1 when the rule has no such shape or the forms do not compile.
 */
static int
chain_build(struct scan_hs *e, uint32_t i)
{
	const struct scan_rule *r = &e->rs->rules[i];
	char *x = rule_expr(e, r), *inner = NULL;
	unsigned lo = x ? scan_rules_whole_repeat(x, &inner) : 0;
	struct scan_sb b = {0}, a = {0};
	char *parts[CHAIN_PARTS] = {NULL};
	unsigned fl[CHAIN_PARTS], id[CHAIN_PARTS], np = 0;
	int rc = -1;

	free(x);
	if (lo < 2) {
		free(inner);
		return -1;
	}
	scan_sb_puts(&b, "(?:");
	scan_sb_puts(&b, inner);
	scan_sb_puts(&b, ")");
	free(inner);
	char *rx0 = b.oom ? NULL : scan_rules_relax(b.p, true, 1);
	char *rx = rx0 ? scan_rules_collapse(rx0) : NULL;
	free(rx0);
	free(b.p);
	unsigned f = rule_hs_flags(r, true), fa = f & ~HS_FLAG_MULTILINE;
	hs_expr_info_t *info = NULL;
	hs_compile_error_t *err = NULL;
	if (!rx || hs_expression_info(rx, f, &info, &err) != HS_SUCCESS || !info ||
	    info->min_width == 0)
		goto out;
	/* X' split at its largest alternation, one pattern per alternative
	 * (scan_gate_split: the same matches; for the field-name lists of
	 * __FILL_THIS_FORM_SHORT2 a quarter of the scan). The anchored copy,
	 * which stops where the copy can no longer match, stays whole: split,
	 * it would be twice the size. */
	np = scan_gate_split(rx, parts, CHAIN_PARTS);
	if (!np) {
		if (!(parts[0] = strdup(rx)))
			goto out;
		np = 1;
	}
	for (unsigned k = 0; k < np; k++) {
		fl[k] = f;
		id[k] = i;
	}
	scan_sb_puts(&a, "^");
	scan_sb_puts(&a, rx);
	const char *as[1] = {a.p};
	size_t z1 = 0, z2 = 0;
	if (a.oom || hs_compile_multi((const char *const *)parts, fl, id, np, HS_MODE_BLOCK,
	    scan_hs_target(), &e->ddb[i], &err) != HS_SUCCESS)
		goto out;
	hs_free_compile_error(err);
	err = NULL;
	if (hs_compile_multi(as, &fa, &id[0], 1, HS_MODE_BLOCK, scan_hs_target(), &e->adb[i],
	    &err) != HS_SUCCESS)
		goto out;
	hs_database_size(e->ddb[i], &z1);
	hs_database_size(e->adb[i], &z2);
	if (z1 > SCAN_HS_GATE_DB || z2 > SCAN_HS_GATE_DB)
		goto out;
	e->chain_k[i] = (uint8_t)(lo < CHAIN_MAX_K ? lo : CHAIN_MAX_K);
	rc = 0;
out:
	if (getenv("SLUICE_HS_DEBUG"))
		fprintf(stderr, "chain %s: k=%u %s (%u parts%s%s) %.100s\n", r->name, lo,
		    rc ? "no" : "ok", np, err ? ": " : "", err ? err->message : "", rx ? rx : "");
	if (rc) {
		if (e->ddb[i])
			hs_free_database(e->ddb[i]);
		if (e->adb[i])
			hs_free_database(e->adb[i]);
		e->ddb[i] = e->adb[i] = NULL;
	}
	hs_free_compile_error(err);
	free(info);
	free(a.p);
	free(rx);
	for (unsigned k = 0; k < np; k++)
		free(parts[k]);
	return rc;
}

/*
 * Rule expression x relaxed (repeats wider than {m,n} unbounded; n 0: every
 * one) and collapsed; *drop: its assertions had to go for that. NULL when
 * neither way gives a form.
 */
static char *
relaxed_collapse(const char *x, unsigned n, bool *drop)
{
	char *rx0 = scan_rules_relax_n(x, false, 1, n);
	char *fx = rx0 ? scan_rules_collapse(rx0) : NULL;

	free(rx0);
	*drop = false;
	if (!fx && (rx0 = scan_rules_relax_n(x, true, 1, n)) != NULL) {
		*drop = true;   /* a form with no assertions, then */
		fx = scan_rules_collapse(rx0);
		free(rx0);
	}
	return fx;
}

/*
 * The gate of a PCRE2 rule (not HEADER) with no literal gate, by cost on
 * the sample text (scan_gate_pick): its prefilter form (the shared
 * database if cheap to compile there, else the gates database), or its
 * relaxed form or a run of it in a block database of its own (e->ddb[i]).
 * 1 chosen, 0 none better than running PCRE2 on every message, or -ENOMEM.
 */
static int
pick_gate(struct scan_hs *e, struct items *it, struct items *git, uint32_t i,
    struct scan_hs_stats *st)
{
	const struct scan_rule *r = &e->rs->rules[i];
	char *x = rule_expr(e, r);
	unsigned f = rule_hs_flags(r, false), pf = f | HS_FLAG_PREFILTER;
	struct scan_gate_pick pk;
	int rc;

	if (!x)
		return -ENOMEM;
	/* tests (force_forms): any gate that compiles beats PCRE2 on every message */
	double pc = e->force_forms ? 1e9 : pcre_seconds(r, x, e->sample);
	const char *pfx = hs_accepts(x, pf, NULL) ? x : NULL;
	/* the tight form first (bounded repeats kept: it opens only where the
	 * rule nearly matches, which the sample text cannot show), unless the
	 * loose form's pick scans the sample in under half its time */
	bool drop = false;
	unsigned maxn = TIGHT_MAXN;
	char *rx = NULL;
	rc = -ENOMEM;           /* no pick yet */
	memset(&pk, 0, sizeof(pk));
	for (int pass = 0; pass < 2; pass++) {
		unsigned n = pass == 0 ? TIGHT_MAXN : 0;
		bool d;
		char *fx = relaxed_collapse(x, n, &d);
		if (pass == 1 && rx && fx && !strcmp(fx, rx)) {
			free(fx);       /* no wide repeat: the same form */
			break;
		}
		struct scan_gate_pick p2;
		int rc2 = scan_gate_pick_near(pfx && !(e->force_forms && fx) ? pfx : NULL, pf, fx, f,
		    e->sample, SCAN_HS_SAMPLE, pc, SCAN_HS_GATE_DB, e->width[i], &p2);
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "gate %s %s: mode %d, %.1f us %.100s\n", r->name,
			    pass ? "loose" : "tight", rc2 ? -1 : (int)p2.mode, p2.seconds * 1e6,
			    p2.expr ? p2.expr : "");
		bool take = rc2 == 0 && (pass == 0 || rc != 0 || pk.mode != SCAN_GATE_BLOCK ||
		    (p2.mode == SCAN_GATE_BLOCK && p2.seconds * 2 < pk.seconds));
		if (take) {
			if (rc == 0)
				scan_gate_pick_free(&pk);
			pk = p2;
			rc = rc2;
			free(rx);
			rx = fx;
			drop = d;
			maxn = n;
		} else {
			if (rc2 == 0)
				scan_gate_pick_free(&p2);
			free(fx);
		}
		if (rc == 0 && pk.mode == SCAN_GATE_STREAM)
			break;  /* the prefilter form won: the loose form will not change that */
	}
	if (rc == 0 && pk.mode == SCAN_GATE_STREAM && !e->force_forms) {
		/* the prefilter form in a stream costs every byte of every
		 * message; the tight relaxed form as an own gate is scanned on
		 * most texts (no byte >= 0x80, no "&#": 398 of the corpus's
		 * 400) in its plain ASCII form, which for the look-alike rules
		 * is a few plain classes (__MY_VICTIM: 0.24 ms over the corpus
		 * bodies, against 5.75 ms for its prefilter form in the stream
		 * and 14.5 ms for the full collapse). Priced at
		 * e->ascii_share of texts plain, the rest full. */
		bool d, o1 = false, o2 = false;
		char *fx = relaxed_collapse(x, TIGHT_MAXN, &d);
		char *rx0 = fx ? scan_rules_relax_n(x, d, 1, TIGHT_MAXN) : NULL;
		char *px = rx0 ? scan_rules_collapse_plain(rx0) : NULL;
		char *ax = px ? scan_rules_ascii_form(px) : NULL;
		double sp = form_block_seconds(ax, f, e->sample, &o1);
		double sf = sp < 1e9 ? form_block_seconds(fx, f, e->sample, &o2) : 1e9;
		double q = e->ascii_share;
		double cost = q * (sp + (o1 ? pc : 0)) + (1 - q) * (sf + (o2 ? pc : 0));
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "gate %s plain: %.1f us, full %.1f us: %.1f us against %.1f\n",
			    r->name, sp * 1e6, sf * 1e6, cost * 1e6, pk.seconds * 1e6);
		if (sf < 1e9 && cost * 2 < pk.seconds) {
			scan_gate_pick_free(&pk);
			memset(&pk, 0, sizeof(pk));
			pk.expr = fx;
			pk.flags = f;
			pk.mode = SCAN_GATE_BLOCK;
			pk.seconds = cost;
			pk.opens = o1;
			fx = NULL;
			free(rx);
			rx = strdup(pk.expr);
			drop = d;
			maxn = TIGHT_MAXN;
			if (!rx) {
				scan_gate_pick_free(&pk);
				rc = -ENOMEM;
			}
		}
		free(fx);
		free(px);
		free(ax);
		free(rx0);
	}
	int lead = -1;          /* the pick is the open form's lead (0) or tail (1) */
	/* the lead of the open form (every repeat unbounded): a prefix of
	 * every match, for a rule anchored at line starts whose forms are too
	 * large for Hyperscan, or whose runs open on every message
	 * (__FILL_THIS_FORM_PARTIAL); then its tail, a suffix of every match
	 * (__TENWORD_GIBBERISH). One wins as the loose form does, at under
	 * half the scan of the pick so far. */
	char *ox0 = rc != 0 || pk.mode != SCAN_GATE_STREAM ? scan_rules_relax_open(x, false, 1) :
	    NULL;
	char *ox = ox0 ? scan_rules_collapse(ox0) : NULL;
	free(ox0);
	for (int end = 0; end < 2 && ox && (rc != 0 || pk.mode != SCAN_GATE_STREAM); end++) {
		char *lx = end ? scan_gate_tail(ox) : scan_gate_lead(ox);
		/* the sample's lines start with random words, so a lead opens
		 * on it where mail's lines seldom give it a chance: the one
		 * candidate (the form or a run of it) that opens least, then
		 * scans fastest, at under half PCRE2's time, as relaxed_form
		 * takes a filter */
		struct scan_gate_pick p2;
		int rc2 = lx ? scan_gate_pick_near(NULL, pf, lx, f, e->sample, SCAN_HS_SAMPLE, 1e3,
		    SCAN_HS_GATE_DB, e->width[i], &p2) : -1;
		if (rc2 == 0 && (p2.mode == SCAN_GATE_NONE || (p2.seconds * 2 >= pc &&
		    !e->force_forms) || (rc == 0 && pk.mode == SCAN_GATE_BLOCK &&
		    p2.seconds * 2 >= pk.seconds)))
			scan_gate_pick_free(&p2);
		else if (rc2 == 0) {
			if (getenv("SLUICE_HS_DEBUG"))
				fprintf(stderr, "gate %s %s: mode %d, %.1f us %.100s\n", r->name,
				    end ? "tail" : "lead", (int)p2.mode, p2.seconds * 1e6,
				    p2.expr ? p2.expr : "");
			if (rc == 0)
				scan_gate_pick_free(&pk);
			pk = p2;
			rc = 0;
			free(rx);
			rx = lx;
			lx = NULL;
			lead = end;
		}
		free(lx);
	}
	free(ox);
	if (rc == 0 && pk.mode == SCAN_GATE_BLOCK && rx) {
		/* the same atoms of the plain collapse: the gate on texts with
		 * no "&#" (and no high byte), for the plain database */
		char *px0 = lead >= 0 ? scan_rules_relax_open(x, false, 1) :
		    scan_rules_relax_n(x, drop, 1, maxn);
		char *px1 = px0 ? scan_rules_collapse_plain(px0) : NULL;
		char *px = !px1 || lead < 0 ? px1 : lead ? scan_gate_tail(px1) : scan_gate_lead(px1);
		if (px && strcmp(px, rx))
			e->rplain[i] = scan_gate_map_run(rx, pk.expr, px);
		if (px != px1)
			free(px);
		free(px1);
		free(px0);
	}
	free(rx);
	if (getenv("SLUICE_HS_DEBUG"))
		fprintf(stderr, "gate %s: mode %d, %u tried, %.1f us (pcre2 %.1f us) %.100s\n", r->name,
		    rc ? -1 : (int)pk.mode, pk.tried, pk.seconds * 1e6, pc * 1e6,
		    pk.expr ? pk.expr : "");
	if (rc < 0) {
		free(x);
		return rc;
	}
	rc = 0;
	e->cost[i] = (float)pk.seconds;
	if (pk.mode == SCAN_GATE_STREAM) {
		e->cls[i] = SCAN_HS_C_PREFILTER;
		if (hs_cheap_within(x, pf, NULL, SCAN_HS_COSTLY_DB, SCAN_HS_COSTLY_SECONDS, NULL, 0,
		    NULL, NULL)) {
			e->gsep[i] = GSEP_SHARED;
			rc = items_add(it, x, pf, GATE_BIT | i);
		} else {
			e->gsep[i] = GSEP_GATESDB;
			rc = items_add(git, x, pf, GATE_BIT | i);
		}
		x = NULL;
		rc = rc < 0 ? rc : 1;
	} else if (pk.mode == SCAN_GATE_BLOCK) {
		hs_compile_error_t *err = NULL;
		const char *xs[1] = {pk.expr};
		unsigned id[1] = {i};
		if (hs_compile_multi(xs, &pk.flags, id, 1, HS_MODE_BLOCK, scan_hs_target(), &e->ddb[i],
		    &err) == HS_SUCCESS && (e->rexpr[i] = strdup(pk.expr)) != NULL) {
			e->cls[i] = SCAN_HS_C_PREFILTER;
			e->gsep[i] = GSEP_OWN;
			rc = 1;
		} else if (st)
			add_reason(st, err ? err->message : "?");
		hs_free_compile_error(err);
	}
	scan_gate_pick_free(&pk);
	free(x);
	return rc;
}

/*
 * Decides a PCRE2 rule's gate (cls GATED / PREFILTER / ALWAYS) and adds it
 * to the items (a costly prefilter form to git, the gates database).
 * classify: decide; else honour e->cls and e->gsep (cache load).
 */
static int
add_gate(struct scan_hs *e, struct items *it, struct items *git, uint32_t i,
    const struct scan_hs_config *cfg, bool classify)
{
	const struct scan_rule *r = &e->rs->rules[i];

	rule_width(e, i);
	if (classify || e->cls[i] == SCAN_HS_C_GATED) {
		int g = gate_literals(r, it, i, e->reach[i] != 0);
		if (g < 0)
			return g;
		if (g > 0) {
			/* behind its literal: a window reaches back to the match start */
			e->width[i] = e->reach[i];
			e->cls[i] = SCAN_HS_C_GATED;
			if (classify && !cfg->no_prefilter && !cfg->no_defer &&
			    r->type != SCAN_RT_HEADER && (e->rexpr[i] = relaxed_form(e, i)) != NULL)
				e->defer[i] = DEFER_FILTER;
			return 0;
		}
		if (!classify)
			return -EINVAL;
	}
	if (classify && e->force_forms && r->type != SCAN_RT_HEADER && chain_build(e, i) == 0) {
		e->cls[i] = SCAN_HS_C_PREFILTER;        /* tests: the chain gate first */
		e->gsep[i] = GSEP_CHAIN;
		return 0;
	}
	if (classify && !cfg->no_prefilter && !cfg->no_defer && r->type != SCAN_RT_HEADER &&
	    e->sample) {
		/* by cost: the chain gate for a whole repeat, else the cheapest of
		 * the prefilter form, the relaxed form and its runs */
		int g;
		if (chain_build(e, i) == 0) {
			e->cls[i] = SCAN_HS_C_PREFILTER;
			e->gsep[i] = GSEP_CHAIN;
			return 0;
		}
		if ((g = pick_gate(e, it, git, i, NULL)) != 0)
			return g < 0 ? g : 0;
		e->cls[i] = cfg->drop_always ? SCAN_HS_C_FAILED : SCAN_HS_C_ALWAYS;
		return 0;
	}
	if ((classify && !cfg->no_prefilter) || e->cls[i] == SCAN_HS_C_PREFILTER) {
		char *x = rule_expr(e, r);
		unsigned f = (rule_hs_flags(r, false) | HS_FLAG_PREFILTER);
		if (!x)
			return -ENOMEM;
		if (!classify && (e->gsep[i] == GSEP_OWN || e->gsep[i] == GSEP_CHAIN)) {
			free(x);        /* a database of its own, or a chain (cache) */
			return 0;
		}
		if (!classify)
			return items_add(e->gsep[i] ? git : it, x, f, GATE_BIT | i);
		double mbps;
		unsigned fires = 0;
		const uint8_t *smp = r->type == SCAN_RT_HEADER ? NULL : e->sample;
		/* a prefilter form that matches ordinary prose (the sample text)
		 * opens its gate on nearly every message: no gate at all is cheaper */
		if (hs_accepts(x, f, NULL)) {
			if (hs_cheap_within(x, f, NULL, SCAN_HS_COSTLY_DB, SCAN_HS_COSTLY_SECONDS, smp,
			    SCAN_HS_SAMPLE, &mbps, &fires)) {
				if (!fires) {
					e->cls[i] = SCAN_HS_C_PREFILTER;
					e->gsep[i] = GSEP_SHARED;
					return items_add(it, x, f, GATE_BIT | i);
				}
			}
			if (git && hs_cheap_within(x, f, NULL, SCAN_HS_GATE_DB,
			    SCAN_HS_GATE_SECONDS, smp, SCAN_HS_SAMPLE, &mbps, &fires) && !fires) {
				/* too big for the shared database, but far cheaper than
				 * PCRE2 on every message: the gates database */
				if (smp && mbps > 0)
					e->cost[i] = (float)(SCAN_HS_SAMPLE / (mbps * 1e6));
				e->cls[i] = SCAN_HS_C_PREFILTER;
				e->gsep[i] = GSEP_GATESDB;
				return items_add(git, x, f, GATE_BIT | i);
			}
		}
		free(x);
	}
	if (classify && !cfg->no_prefilter && !cfg->no_defer && r->type != SCAN_RT_HEADER &&
	    chain_build(e, i) == 0) {
		e->cls[i] = SCAN_HS_C_PREFILTER;
		e->gsep[i] = GSEP_CHAIN;
		return 0;
	}
	e->cls[i] = cfg->drop_always ? SCAN_HS_C_FAILED : SCAN_HS_C_ALWAYS;
	return 0;
}

static bool
target_rule(const struct scan_rule *r, unsigned t)
{
	return r->defined && r->state == SCAN_RS_ACTIVE && r->type == t && !r->exists &&
	    r->type < SCAN_RT_META;
}

/*
 * Builds the item lists of target t from e->cls and e->defer (classify:
 * decide them first): it the streaming database, git its gates database,
 * sit its squeeze database.
 */
static int
make_items(struct scan_hs *e, unsigned t, struct items *it, struct items *git,
    struct items *sit, const struct scan_hs_config *cfg, bool classify, struct scan_hs_stats *st)
{
	const struct scan_ruleset *rs = e->rs;
	unsigned n_wr = 0, n_ll = 0;
	int rc;

	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (!target_rule(r, t))
			continue;
		if (classify) {
			char *x = rule_expr(e, r);
			unsigned f = rule_hs_flags(r, e->multiple[i] || e->term_check[i]);
			struct counter ctr;
			struct wordrun wr;
			if (!x)
				return -ENOMEM;
			double mbps = 0;
			bool slow_ok = e->sample && !e->term_check[i] && t != SCAN_T_HEADER &&
			    !cfg->no_defer;
			e->defer[i] = DEFER_NO;
			if (hs_accepts(x, f, st) && hs_cheap_within(x, f, st, SCAN_HS_COSTLY_DB,
			    SCAN_HS_COSTLY_SECONDS, slow_ok ? e->sample : NULL, SCAN_HS_SAMPLE, &mbps,
			    NULL)) {
				e->cls[i] = SCAN_HS_C_HS;
				if (!cfg->no_defer && counter_make(r, i, &ctr)) {
					e->defer[i] = DEFER_COUNT;
				} else if (!cfg->no_defer && n_ll < LL_MAX && linelen_make(r, NULL)) {
					e->defer[i] = DEFER_LINE;
					n_ll++;
				} else if (!cfg->no_defer && !e->term_check[i] && n_wr < WR_MAX &&
				    wordrun_make(r, i, &wr)) {
					e->defer[i] = DEFER_WORDS;
					n_wr++;
				} else if (slow_ok && mbps < (cfg->defer_mbps > 0 ? cfg->defer_mbps :
				    SCAN_HS_DEFER_MBPS)) {
					/* the scan-cost model: a slow pattern with a gate is
					 * kept out of the stream and run alone, in block mode,
					 * over the kept text when its gate fired; the squeeze
					 * gate (denser text) must be a byte longer to win */
					/* a gate that opens on the sample prose would run the
					 * rule alone on most messages: it stays in the stream */
					int ll = gate_literals_in(r, NULL, i, e->lcsample, SCAN_HS_SAMPLE,
					    false);
					int sl = squeeze_gate(r, NULL, i, e->sqsample, e->sqsample_n);
					if (ll > 0 && ll + 1 >= sl)
						e->defer[i] = DEFER_LIT;
					else if (sl > 0)
						e->defer[i] = DEFER_SQ;
					else if (mbps > 0) {
						/* no literal: a run of its own atoms that is far
						 * cheaper and opens rarely on the sample, among
						 * the target's own gates (end of message) */
						struct scan_gate_pick pk;
						double alone = SCAN_HS_SAMPLE / (mbps * 1e6);
						if (scan_gate_pick(NULL, 0, x, rule_hs_flags(r, false), e->sample,
						    SCAN_HS_SAMPLE, alone, SCAN_HS_GATE_DB, &pk) == 0 &&
						    pk.mode == SCAN_GATE_BLOCK && strcmp(pk.expr, x) &&
						    (e->rexpr[i] = strdup(pk.expr)) != NULL) {
							e->defer[i] = DEFER_RUN;
							e->cost[i] = (float)pk.seconds;
						}
						scan_gate_pick_free(&pk);
					}
				}
				/* a slow pattern that stays in the stream goes to the
				 * target's second stream (the gates database): the fast
				 * patterns' database then scans the corpus bodies in 40%
				 * of the time, the slow ones cost what they cost alone */
				if (e->defer[i] == DEFER_NO && slow_ok && mbps > 0 &&
				    mbps < SCAN_HS_APART_MBPS)
					e->defer[i] = DEFER_APART;
				if ((e->defer[i] == DEFER_NO || e->defer[i] == DEFER_APART) && mbps > 0)
					e->cost[i] = (float)(SCAN_HS_SAMPLE / (mbps * 1e6));
			} else
				e->cls[i] = SCAN_HS_C_ALWAYS;   /* PCRE2; gate decided below */
			free(x);
		}
		if (e->cls[i] == SCAN_HS_C_HS) {
			switch (e->defer[i]) {
			case DEFER_LIT:
				/* behind its literal: a window reaches back to the match start */
				rule_width(e, i);
				e->width[i] = e->reach[i];
				rc = gate_literals(r, it, i, defer_near(e, i));
				break;
			case DEFER_SQ:
				rc = squeeze_gate(r, sit, i, NULL, 0);
				break;
			case DEFER_RUN:
				rule_width(e, i);
				rc = 1;
				break;
			case DEFER_COUNT:
			case DEFER_WORDS:
			case DEFER_LINE:
				rc = 1;
				break;
			case DEFER_APART:
				rc = items_add(git, rule_expr(e, r),
				    rule_hs_flags(r, e->multiple[i] || e->term_check[i]), i);
				if (rc == 0) {
					rc = 1;
					st->apart[t]++;
				}
				break;
			default:
				rc = items_add(it, rule_expr(e, r),
				    rule_hs_flags(r, e->multiple[i] || e->term_check[i]), i);
			}
			if (rc < 0)
				return rc;
			if (rc == 0 && e->defer[i] != DEFER_NO)
				return -EINVAL;         /* a cache that does not fit the rules */
		} else if (e->cls[i] != SCAN_HS_C_FAILED) {
			if ((rc = add_gate(e, it, git, i, cfg, classify)) < 0)
				return rc;
		}
	}
	if (classify && st->apart[t] &&
	    st->apart[t] < (cfg->apart_min ? cfg->apart_min : SCAN_HS_APART_MIN)) {
		/* a few slow patterns apart cost a second stream and save little
		 * (rawbody, 3 of 54: 8.7 ms for both streams against 4.3 for one):
		 * back into the main database */
		for (unsigned k = git->n; k-- > 0;) {
			uint32_t id = git->v[k].id;
			if ((id & GATE_BIT) || id == GTUBE_ID || e->defer[id] != DEFER_APART)
				continue;
			if ((rc = items_add(it, git->v[k].expr, git->v[k].flags, id)) < 0)
				return rc;
			git->v[k] = git->v[--git->n];
			e->defer[id] = DEFER_NO;
		}
		st->apart[t] = 0;
	}
	if (t == SCAN_T_BODY && !cfg->no_gtube) {
		struct scan_sb b = {0};
		sb_hex(&b, (const uint8_t *)scan_hs_gtube, strlen(scan_hs_gtube));
		if ((rc = items_add(it, b.p, HS_FLAG_SINGLEMATCH, GTUBE_ID)) < 0)
			return rc;
	}
	return 0;
}

static int
cost_desc(const void *a, const void *b, void *arg)
{
	const float *cost = arg;
	float x = cost[*(const uint32_t *)a], y = cost[*(const uint32_t *)b];

	return x < y ? 1 : x > y ? -1 : (*(const uint32_t *)a > *(const uint32_t *)b) -
	    (*(const uint32_t *)a < *(const uint32_t *)b);
}

/*
 * Which rules may be shed without raising any score: a shed rule reads 0,
 * so the message's score must be non-decreasing in it. Signs: P (rises
 * with it), N (falls), B (either way). A rule's own score gives its sign;
 * in a meta, each occurrence of it is followed up its expression tree:
 * ! and unary - flip it, so does the right side of - and of > >=, and the
 * left side of < <=; * / == != make it B; && || + keep it. That times the
 * reading meta's own sign, over every reader, metas last first (their
 * readers come after them), gives the rule's sign. Only P or none may
 * go: !__BODY_TEXT_LINE, a rule read by == 3, or one with a negative score
 * stays. Returns safe[i] (1 may be shed), or NULL.
 */
#define SG_P 1
#define SG_N 2
#define SG_B 3

static uint8_t
sign_mul(uint8_t a, uint8_t b)
{
	if (!a || !b)
		return 0;
	if (a == SG_B || b == SG_B)
		return SG_B;
	return a == b ? SG_P : SG_N;
}

static uint8_t *
shed_safe(const struct scan_ruleset *rs)
{
	uint8_t *sg = calloc(rs->n + 1, 1);
	int32_t *par = NULL, *stk = NULL;
	uint8_t *side = NULL;
	uint32_t cap = 0;

	if (!sg)
		return NULL;
	for (uint32_t i = 0; i < rs->n; i++)
		sg[i] = rs->rules[i].score > 0 ? SG_P : rs->rules[i].score < 0 ? SG_N : 0;
	for (uint32_t k = rs->n_meta; k-- > 0;) {
		const struct scan_rule *m = &rs->rules[rs->meta_order[k]];
		uint8_t ms = sg[rs->meta_order[k]];
		if (!ms || !m->meta_n)
			continue;
		if (m->meta_n > cap) {
			cap = m->meta_n;
			free(par);
			free(stk);
			free(side);
			par = malloc(cap * sizeof(*par));
			stk = malloc(cap * sizeof(*stk));
			side = malloc(cap);
			if (!par || !stk || !side) {
				free(par);
				free(stk);
				free(side);
				free(sg);
				return NULL;
			}
		}
		/* the expression tree: each op's parent and side (0 left) */
		uint32_t sp = 0;
		bool ok = true;
		for (uint32_t j = 0; j < m->meta_n && ok; j++) {
			uint8_t op = m->meta[j].op;
			par[j] = -1;
			side[j] = 0;
			unsigned arity = op == SCAN_MO_NUM || op == SCAN_MO_RULE ? 0 :
			    op == SCAN_MO_NOT || op == SCAN_MO_NEG ? 1 : 2;
			if (sp < arity) {
				ok = false;
				break;
			}
			for (unsigned a = 0; a < arity; a++) {
				int32_t c = stk[--sp];
				par[c] = (int32_t)j;
				side[c] = (uint8_t)(arity - 1 - a);
			}
			stk[sp++] = (int32_t)j;
		}
		for (uint32_t j = 0; j < m->meta_n; j++) {
			if (m->meta[j].op != SCAN_MO_RULE || m->meta[j].rule >= rs->n)
				continue;
			uint8_t s = ok ? SG_P : SG_B;
			for (int32_t c = (int32_t)j; ok && par[c] >= 0 && s != SG_B; c = par[c]) {
				switch (m->meta[par[c]].op) {
				case SCAN_MO_NOT: case SCAN_MO_NEG:
					s = sign_mul(s, SG_N);
					break;
				case SCAN_MO_SUB: case SCAN_MO_GT: case SCAN_MO_GE:
					if (side[c])
						s = sign_mul(s, SG_N);
					break;
				case SCAN_MO_LT: case SCAN_MO_LE:
					if (!side[c])
						s = sign_mul(s, SG_N);
					break;
				case SCAN_MO_AND: case SCAN_MO_OR: case SCAN_MO_ADD:
					break;
				default:
					s = SG_B;
				}
			}
			sg[m->meta[j].rule] |= sign_mul(s, ms);
		}
	}
	free(par);
	free(stk);
	free(side);
	for (uint32_t i = 0; i < rs->n; i++)
		sg[i] = sg[i] == 0 || sg[i] == SG_P;    /* now: safe */
	return sg;
}

/*
 * Shedding (cfg.shed_pct): after every target is classified, the costliest
 * regex rules on the sample text, at most shed_pct percent of the active
 * ones, are left out (class FAILED, DEFER_SHED). A rule's cost is the time
 * the cost model measured for the form it would run in: a stream pattern
 * alone, a prefilter form alone, its own gate's block scan. Rules with no
 * timing (header rules, literal gates, deferred rules behind a literal or
 * a squeeze string that the sample does not open) are not candidates: they
 * are cheap by construction. Nor are rules whose falling to 0 could raise
 * the score (shed_safe): shedding lowers scores, never raises one. Their
 * hits read 0, and metas see 0. Returns how many were shed.
 */
static unsigned
shed_pick(struct scan_hs *e, const struct scan_hs_config *cfg)
{
	const struct scan_ruleset *rs = e->rs;
	double pct = cfg->shed_pct > SCAN_HS_SHED_MAX ? SCAN_HS_SHED_MAX : cfg->shed_pct;
	uint32_t *v = calloc(rs->n + 1, sizeof(*v)), nv = 0, active = 0;
	uint8_t *safe = shed_safe(rs);
	unsigned shed = 0;

	if (!v || !safe) {
		free(v);
		free(safe);
		return 0;
	}
	unsigned out = 0;       /* out of effect already, or will be */
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (!r->defined || r->state != SCAN_RS_ACTIVE || r->type >= SCAN_T_COUNT)
			continue;
		active++;       /* as sluice-rules counts them: exists: rules too */
		unsigned c = e->cls[i];
		if (r->exists)
			continue;
		if (c == SCAN_HS_C_FAILED || c == SCAN_HS_C_NONE) {
			out++;
			continue;
		}
		if (c == SCAN_HS_C_GATED || c == SCAN_HS_C_PREFILTER || c == SCAN_HS_C_ALWAYS) {
			/* PCRE2 refuses a few (too large): they fail later */
			char *x = rule_expr(e, r);
			int err;
			PCRE2_SIZE off;
			pcre2_code *code = x ? pcre2_compile((PCRE2_SPTR)x, PCRE2_ZERO_TERMINATED,
			    rule_pcre_flags(r), &err, &off, NULL) : NULL;
			free(x);
			if (!code) {
				out++;
				continue;
			}
			pcre2_code_free(code);
		}
		/* slow, as the cost model calls a stream pattern slow: a cheap one
		 * (a literal: 1-3 us, mostly the call) saves nothing */
		if (e->cost[i] > SCAN_HS_SAMPLE / (SCAN_HS_APART_MBPS * 1e6) && safe[i])
			v[nv++] = i;
	}
	/* at most pct percent of the active regex rules out of effect, those
	 * neither engine takes included */
	unsigned lim = (unsigned)(active * pct / 100.0), k = lim > out ? lim - out : 0;
	qsort_r(v, nv, sizeof(*v), cost_desc, e->cost);
	for (uint32_t j = 0; j < nv && shed < k; j++) {
		uint32_t i = v[j];
		if (e->ddb[i])
			hs_free_database(e->ddb[i]);
		if (e->adb[i])
			hs_free_database(e->adb[i]);
		e->ddb[i] = e->adb[i] = NULL;
		free(e->rexpr[i]);
		free(e->rplain[i]);
		e->rexpr[i] = e->rplain[i] = NULL;
		e->cls[i] = SCAN_HS_C_FAILED;
		e->gsep[i] = 0;
		e->defer[i] = DEFER_SHED;
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "shed %s: %.1f us on the sample\n", rs->rules[i].name,
			    e->cost[i] * 1e6);
		shed++;
	}
	free(v);
	free(safe);
	return shed;
}

/* measurement (SLUICE_HS_DUMP): a database's expressions, for bench tools */
static void
dump_items(const struct scan_hs *e, unsigned t, const struct items *it, const char *kind)
{
	char fn[4096];

	snprintf(fn, sizeof(fn), "%s/items-%u-%s", e->dump, t, kind);
	FILE *f = fopen(fn, "w");
	for (unsigned k = 0; f && k < it->n; k++)
		fprintf(f, "%u %u %zu %s\n%s\n", it->v[k].id, it->v[k].flags, strlen(it->v[k].expr),
		    it->v[k].id == GTUBE_ID ? "GTUBE" : e->rs->rules[it->v[k].id & ~GATE_BIT].name,
		    it->v[k].expr);
	if (f)
		fclose(f);
}

/* measurement (SLUICE_HS_DUMP): the gates of their own, one block database each */
static void
dump_own(const struct scan_hs *e, unsigned t)
{
	char fn[4096];

	snprintf(fn, sizeof(fn), "%s/items-%u-own", e->dump, t);
	FILE *f = fopen(fn, "w");
	for (unsigned k = 0; f && k < e->t[t].n_own; k++) {
		uint32_t i = e->t[t].ownv[k];
		if (e->rexpr[i])
			fprintf(f, "%u %u %zu %s\n%s\n", i, rule_hs_flags(&e->rs->rules[i], false),
			    strlen(e->rexpr[i]), e->rs->rules[i].name, e->rexpr[i]);
	}
	if (f)
		fclose(f);
}

/* Compiles the items; on a per-expression failure demotes it and retries. */
static int
compile_items(struct scan_hs *e, unsigned t, struct items *it, struct items *git,
    hs_database_t **dbp, const struct scan_hs_config *cfg, struct scan_hs_stats *st)
{
	if (getenv("SLUICE_HS_ITEMCOST") && e->sample)
		for (unsigned k = 0; k < it->n; k++) {
			/* measurement: what each expression of this database costs alone */
			hs_database_t *db = NULL;
			hs_compile_error_t *err = NULL;
			unsigned fires = 0;
			if (hs_compile(it->v[k].expr, it->v[k].flags, HS_MODE_STREAM, scan_hs_target(),
			    &db, &err) != HS_SUCCESS) {
				hs_free_compile_error(err);
				continue;
			}
			double v = scan_speed(db, e->sample, SCAN_HS_SAMPLE, &fires);
			hs_free_database(db);
			fprintf(stderr, "itemcost t=%u db=%s %.0f MB/s fires=%u id=%s%s %.100s\n", t,
			    git ? "main" : "gates", v, fires, it->v[k].id & GATE_BIT ? "gate:" : "",
			    it->v[k].id == GTUBE_ID ? "GTUBE" :
			    e->rs->rules[it->v[k].id & ~GATE_BIT].name, it->v[k].expr);
		}
	for (unsigned tries = 0; tries < 200; tries++) {
		hs_compile_error_t *err = NULL;
		const char **ex = malloc((it->n + 1) * sizeof(*ex));
		unsigned *fl = malloc((it->n + 1) * sizeof(*fl));
		unsigned *id = malloc((it->n + 1) * sizeof(*id));
		if (!ex || !fl || !id) {
			free(ex);
			free(fl);
			free(id);
			return -ENOMEM;
		}
		for (unsigned k = 0; k < it->n; k++) {
			ex[k] = it->v[k].expr;
			fl[k] = it->v[k].flags;
			id[k] = it->v[k].id;
		}
		struct timespec c0, c1;
		clock_gettime(CLOCK_MONOTONIC, &c0);
		hs_error_t rc = hs_compile_multi(ex, fl, id, it->n, HS_MODE_STREAM, scan_hs_target(),
		    dbp, &err);
		clock_gettime(CLOCK_MONOTONIC, &c1);
		if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "compile t=%u n=%u rc=%d %.2fs %s\n", t, it->n, rc,
			    (double)(c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) / 1e9,
			    err ? err->message : "");
		free(ex);
		free(fl);
		free(id);
		if (rc == HS_SUCCESS)
			return 0;
		int bad = err ? err->expression : -1;
		if (st)
			add_reason(st, err ? err->message : "?");
		hs_free_compile_error(err);
		if (bad < 0 || (unsigned)bad >= it->n)
			return -EIO;
		/* demote the expression that failed (every expression of a gate), and rebuild */
		unsigned bid = it->v[bad].id;
		for (unsigned k = it->n; k-- > 0;)
			if (it->v[k].id == bid) {
				free(it->v[k].expr);
				it->v[k] = it->v[--it->n];
			}
		if (bid == GTUBE_ID)
			continue;
		uint32_t ri = bid & ~GATE_BIT;
		if (!(bid & GATE_BIT)) {
			int r2 = add_gate(e, it, git, ri, cfg, true);
			if (r2 < 0)
				return r2;
		} else {
			e->cls[ri] = cfg->drop_always ? SCAN_HS_C_FAILED : SCAN_HS_C_ALWAYS;
			e->gsep[ri] = 0;
		}
		/* keep item order deterministic for the cache: sort by id */
		for (unsigned a = 1; a < it->n; a++)
			for (unsigned b = a; b > 0 && it->v[b].id < it->v[b - 1].id; b--) {
				struct item tmp = it->v[b];
				it->v[b] = it->v[b - 1];
				it->v[b - 1] = tmp;
			}
	}
	return -EIO;
}

/* ---- cache ---- */

/* The k-th database of the cache file: per target main, gates, squeeze;
 * the own gates' groups (UTF-8, ASCII, plain forms); then every deferred
 * rule's, in rule order (NULL past the end). */
static hs_database_t **
cache_db(struct scan_hs *e, unsigned k)
{
	unsigned t = k % SCAN_T_COUNT;

	switch (k / SCAN_T_COUNT) {
	case 0: return &e->t[t].db;
	case 1: return &e->t[t].gdb;
	case 2: return &e->t[t].sdb;
	default:
		break;
	}
	k -= 3 * SCAN_T_COUNT;
	if (k < SCAN_T_COUNT * OWN_BUCKETS)
		return &e->t[k / OWN_BUCKETS].obk[k % OWN_BUCKETS];
	k -= SCAN_T_COUNT * OWN_BUCKETS;
	if (k < SCAN_T_COUNT * OWN_BUCKETS)
		return &e->t[k / OWN_BUCKETS].rbk[k % OWN_BUCKETS];
	k -= SCAN_T_COUNT * OWN_BUCKETS;
	if (k < SCAN_T_COUNT * OWN_BUCKETS)
		return &e->t[k / OWN_BUCKETS].pbk[k % OWN_BUCKETS];
	k -= SCAN_T_COUNT * OWN_BUCKETS;
	for (uint32_t i = 0; i < e->rs->n; i++) {
		if (e->cls[i] == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_CHAIN) {
			if (k < 2)
				return k ? &e->adb[i] : &e->ddb[i];
			k -= 2;
			continue;
		}
		if (((e->cls[i] == SCAN_HS_C_HS && (e->defer[i] == DEFER_LIT || e->defer[i] == DEFER_SQ ||
		    e->defer[i] == DEFER_RUN)) ||
		    (e->cls[i] == SCAN_HS_C_GATED && e->defer[i] == DEFER_FILTER)) && k-- == 0)
			return &e->ddb[i];
	}
	return NULL;
}

static void
cache_free_dbs(struct scan_hs *e)
{
	hs_database_t **dbp;

	for (unsigned k = 0; (dbp = cache_db(e, k)) != NULL; k++)
		if (*dbp) {
			hs_free_database(*dbp);
			*dbp = NULL;
		}
}

static uint64_t
cache_key(const struct scan_hs *e, const struct scan_hs_config *cfg)
{
	uint64_t h = fnv(&e->rs->hash, sizeof(e->rs->hash), 0xcbf29ce484222325ull);
	const char *v = hs_version();
	uint8_t opt[6] = {cfg->no_prefilter, cfg->no_gtube, cfg->drop_always, cfg->no_scan_cost,
	    cfg->no_defer, cfg->own_apart};

	h = fnv(v, strlen(v), h);
	h = fnv(opt, sizeof(opt), h);
	h = fnv(&cfg->defer_mbps, sizeof(cfg->defer_mbps), h);
	h = fnv(&cfg->apart_min, sizeof(cfg->apart_min), h);
	if (cfg->shed_pct > 0)  /* caches built before shedding stay valid */
		h = fnv(&cfg->shed_pct, sizeof(cfg->shed_pct), h);
	if (e->ascii_share != SCAN_HS_ASCII_SHARE)
		h = fnv(&e->ascii_share, sizeof(e->ascii_share), h);
	uint32_t ver = CACHE_VERSION;
	h = fnv(&ver, sizeof(ver), h);
	return h;
}

static int
read_all(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	long n;

	if (!f)
		return -ENOENT;
	if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		fclose(f);
		return -EBADMSG;
	}
	*out = malloc((size_t)n + 1);
	if (!*out) {
		fclose(f);
		return -ENOMEM;
	}
	if (fread(*out, 1, (size_t)n, f) != (size_t)n) {
		free(*out);
		fclose(f);
		return -EBADMSG;
	}
	fclose(f);
	*len = (size_t)n;
	return 0;
}

/* Loads classes and databases from the cache; 0, or -ENOENT/-ESTALE/-EBADMSG. */
static int
cache_load(struct scan_hs *e, const struct scan_hs_config *cfg)
{
	uint8_t *buf = NULL;
	size_t len = 0, off = 0;
	int rc = read_all(cfg->cache_path, &buf, &len);
	uint64_t key, sum, n;

	if (rc < 0)
		return rc;
#define TAKE(dst, sz) do { if (len - off < (sz)) { rc = -EBADMSG; goto out; } \
	memcpy((dst), buf + off, (sz)); off += (sz); } while (0)
	if (len < 8 + 8 || memcmp(buf, CACHE_MAGIC, 8)) {
		rc = -EBADMSG;
		goto out;
	}
	memcpy(&sum, buf + len - 8, 8);
	if (fnv(buf, len - 8, 0xcbf29ce484222325ull) != sum) {
		rc = -EBADMSG;
		goto out;
	}
	len -= 8;
	off = 8;
	TAKE(&key, 8);
	if (key != cache_key(e, cfg)) {
		rc = -ESTALE;
		goto out;
	}
	TAKE(&n, 8);
	if (n != e->rs->n) {
		rc = -ESTALE;
		goto out;
	}
	TAKE(e->cls, (size_t)n);
	TAKE(e->gsep, (size_t)n);
	TAKE(e->defer, (size_t)n);
	hs_database_t **dbp;
	for (unsigned k = 0; (dbp = cache_db(e, k)) != NULL; k++) {
		uint64_t sz;
		TAKE(&sz, 8);
		if (!sz)
			continue;
		if (len - off < sz) {
			rc = -EBADMSG;
			goto out;
		}
		if (hs_deserialize_database((const char *)buf + off, (size_t)sz, dbp) != HS_SUCCESS) {
			rc = -EBADMSG;
			goto out;
		}
		off += (size_t)sz;
	}
	rc = off == len ? 0 : -EBADMSG;
out:
#undef TAKE
	free(buf);
	if (rc < 0)
		cache_free_dbs(e);
	return rc;
}

static void
cache_save(const struct scan_hs *e, const struct scan_hs_config *cfg)
{
	struct scan_sb b = {0};
	uint64_t key = cache_key(e, cfg), n = e->rs->n;
	char tmp[4096];
	int fd;

	scan_sb_put(&b, CACHE_MAGIC, 8);
	scan_sb_put(&b, &key, 8);
	scan_sb_put(&b, &n, 8);
	scan_sb_put(&b, e->cls, (size_t)n);
	scan_sb_put(&b, e->gsep, (size_t)n);
	scan_sb_put(&b, e->defer, (size_t)n);
	hs_database_t **dbp;
	for (unsigned k = 0; (dbp = cache_db((struct scan_hs *)e, k)) != NULL; k++) {
		char *ser = NULL;
		size_t sz = 0;
		uint64_t s64 = 0;
		hs_database_t *db = *dbp;
		if (db && hs_serialize_database(db, &ser, &sz) != HS_SUCCESS) {
			free(b.p);
			return;
		}
		s64 = sz;
		scan_sb_put(&b, &s64, 8);
		if (ser)
			scan_sb_put(&b, ser, sz);
		free(ser);
	}
	if (b.oom) {
		free(b.p);
		return;
	}
	uint64_t sum = fnv(b.p, b.n, 0xcbf29ce484222325ull);
	scan_sb_put(&b, &sum, 8);
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", cfg->cache_path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		bool ok = !b.oom && write(fd, b.p, b.n) == (ssize_t)b.n && fsync(fd) == 0;
		close(fd);
		if (!ok || rename(tmp, cfg->cache_path) < 0)
			unlink(tmp);
	}
	free(b.p);
}

/* ---- build ---- */

struct scan_hs *
scan_hs_free(struct scan_hs *e)
{
	if (!e)
		return NULL;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		if (e->t[t].db)
			hs_free_database(e->t[t].db);
		if (e->t[t].gdb)
			hs_free_database(e->t[t].gdb);
		if (e->t[t].sdb)
			hs_free_database(e->t[t].sdb);
		for (unsigned b = 0; b < OWN_BUCKETS; b++) {
			hs_free_database(e->t[t].rbk[b]);
			hs_free_database(e->t[t].pbk[b]);
		}
		free(e->t[t].always);
		free(e->t[t].defer);
		free(e->t[t].ctr);
		free(e->t[t].chain);
		free(e->t[t].ownv);
		for (unsigned b = 0; b < e->t[t].n_obk; b++)
			if (e->t[t].obk[b])
				hs_free_database(e->t[t].obk[b]);
	}
	for (uint32_t i = 0; i < e->rs->n; i++) {
		if (e->ddb && e->ddb[i])
			hs_free_database(e->ddb[i]);
		if (e->adb && e->adb[i])
			hs_free_database(e->adb[i]);
	}
	free(e->ddb);
	free(e->adb);
	free(e->cost);
	free(e->late);
	free(e->hrule_of);
	free(e->chain_k);
	free(e->defer);
	if (e->rexpr)
		for (uint32_t i = 0; i < e->rs->n; i++)
			free(e->rexpr[i]);
	free(e->rexpr);
	if (e->rplain)
		for (uint32_t i = 0; i < e->rs->n; i++)
			free(e->rplain[i]);
	free(e->rplain);
	if (e->code)
		for (uint32_t i = 0; i < e->rs->n; i++)
			if (e->code[i])
				pcre2_code_free(e->code[i]);
	free(e->code);
	free(e->cls);
	free(e->gsep);
	free(e->sample);
	free(e->sqsample);
	free(e->lcsample);
	free(e->multiple);
	free(e->term_check);
	free(e->width);
	free(e->wslot);
	free(e->reach);
	for (unsigned i = 0; i < e->nkeys; i++)
		free(e->keys[i].name);
	free(e->keys);
	for (unsigned i = 0; i < e->names_cap; i++)
		free(e->names[i].lname);
	free(e->names);
	free(e->hrules);
	free(e);
	return NULL;
}

static pcre2_code *
pcre_compile(const char *x, uint32_t opts, char *why, size_t whylen)
{
	int err;
	PCRE2_SIZE off;
	pcre2_code *c = pcre2_compile((PCRE2_SPTR)x, PCRE2_ZERO_TERMINATED, opts, &err, &off, NULL);

	if (!c) {
		char m[128];
		pcre2_get_error_message(err, (PCRE2_UCHAR *)m, sizeof(m));
		snprintf(why, whylen, "pcre2: %s", m);
		return NULL;
	}
	pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
	return c;
}

/* A header rule on an absent header sees "" (or its [if-unset:] text). */
static uint8_t
absent_hit(const struct scan_rule *r)
{
	char why[160];
	const char *v = r->unset ? r->unset : "";
	struct scan_sb b = {0};
	bool m = false;

	if (r->exists)
		return 0;
	scan_sb_puts(&b, r->re_flags & SCAN_RE_X ? "(?x:" : "(?:");
	scan_sb_puts(&b, r->re);
	scan_sb_puts(&b, r->re_flags & SCAN_RE_X ? "\n)" : ")");
	pcre2_code *c = b.p ? pcre_compile(b.p, rule_pcre_flags(r), why, sizeof(why)) : NULL;
	if (c) {
		pcre2_match_data *md = pcre2_match_data_create(1, NULL);
		if (md)
			m = pcre2_match(c, (PCRE2_SPTR)v, strlen(v), 0, 0, md, NULL) >= 0;
		pcre2_match_data_free(md);
		pcre2_code_free(c);
	}
	free(b.p);
	return r->negate ? !m : m;
}

/* Appends x to the list *v of *n rule ids; 0 or -ENOMEM. */
static int
u32_push(uint32_t **v, unsigned *n, uint32_t x)
{
	uint32_t *nv = realloc(*v, (*n + 1) * sizeof(*nv));

	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[(*n)++] = x;
	return 0;
}

/* One block database of the expressions sel[0..n-1] of ex/fl/id (sel NULL: the
 * first n); NULL if it fails. */
static hs_database_t *
block_subset(const char *const *ex, const unsigned *fl, const unsigned *id, const unsigned *sel,
    unsigned n)
{
	const char **x = malloc(n * sizeof(*x));
	unsigned *f = malloc(n * sizeof(*f)), *i = malloc(n * sizeof(*i));
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;

	for (unsigned k = 0; x && f && i && k < n; k++) {
		unsigned j = sel ? sel[k] : k;
		x[k] = ex[j];
		f[k] = fl[j];
		i[k] = id[j];
	}
	if (!x || !f || !i || hs_compile_multi(x, f, i, n, HS_MODE_BLOCK, scan_hs_target(), &db,
	    &err) != HS_SUCCESS)
		db = NULL;
	hs_free_compile_error(err);
	free(x);
	free(f);
	free(i);
	return db;
}

/* One block database of the gates of rules v[0..n-1] (ids GATE_BIT | rule); NULL if it fails. */
static hs_database_t *
own_compile(const struct scan_hs *e, const uint32_t *v, unsigned n)
{
	const char **ex = malloc(n * sizeof(*ex));
	unsigned *fl = malloc(n * sizeof(*fl)), *id = malloc(n * sizeof(*id));
	hs_database_t *db = NULL;

	for (unsigned k = 0; ex && fl && id && k < n; k++) {
		ex[k] = e->rexpr[v[k]];
		fl[k] = rule_hs_flags(&e->rs->rules[v[k]], false);
		if (gate_all_ends(e, v[k]))
			fl[k] &= ~(unsigned)HS_FLAG_SINGLEMATCH;        /* every end: windows */
		id[k] = GATE_BIT | v[k];
	}
	if (ex && fl && id)
		db = block_subset(ex, fl, id, NULL, n);
	free(ex);
	free(fl);
	free(id);
	return db;
}

/*
 * Groups target t's gates of their own into a few block databases, each
 * scanned once per message: a database costs a pass over the text, but
 * some gates slow each other down badly when they share one (measured).
 * Costliest first, a gate joins the open group if the group then scans the
 * sample in at most its time plus 80% of the gate's own; else it opens the
 * next group. The gates' own databases are freed.
 */
static int
own_group(struct scan_hs *e, unsigned t)
{
	struct tdb *d = &e->t[t];
	unsigned n = d->n_own, g0 = 0;
	double *cost, gcost = 0;
	uint32_t *v;
	hs_database_t *cur = NULL;
	int rc = 0;

	if (!n)
		return 0;
	cost = calloc(n + 1, sizeof(*cost));
	v = malloc((n + 1) * sizeof(*v));
	if (!cost || !v) {
		free(cost);
		free(v);
		return -ENOMEM;
	}
	memcpy(v, d->ownv, n * sizeof(*v));
	for (unsigned k = 0; k < n; k++) {
		hs_database_t *one = own_compile(e, v + k, 1);
		cost[k] = one ? block_seconds(one, e->sample) : 1e9;
		if (one)
			hs_free_database(one);
	}
	for (unsigned a = 1; a < n; a++)
		for (unsigned b = a; b > 0 && cost[b] > cost[b - 1]; b--) {
			double tc = cost[b];
			uint32_t tv = v[b];
			cost[b] = cost[b - 1];
			v[b] = v[b - 1];
			cost[b - 1] = tc;
			v[b - 1] = tv;
		}
	for (unsigned k = 0; k < n && rc == 0; k++) {
		hs_database_t *db = k > g0 ? own_compile(e, v + g0, k - g0 + 1) : NULL;
		double c = db ? block_seconds(db, e->sample) : 1e9;
		bool full = d->n_obk == OWN_BUCKETS - 1;
		if (db && (c <= gcost + 0.8 * cost[k] || full)) {
			hs_free_database(cur);
			cur = db;
			gcost = c;
			continue;
		}
		if (db)
			hs_free_database(db);
		if (cur)
			d->obk[d->n_obk++] = cur;
		g0 = k;
		cur = own_compile(e, v + k, 1);
		gcost = cost[k];
		if (!cur)
			rc = -EIO;
	}
	if (cur && rc == 0)
		d->obk[d->n_obk++] = cur;
	else if (cur)
		hs_free_database(cur);
	if (getenv("SLUICE_HS_DEBUG"))
		fprintf(stderr, "own gates t=%u: %u in %u databases\n", t, n, d->n_obk);
	for (unsigned k = 0; k < n; k++)
		if (e->cls[d->ownv[k]] == SCAN_HS_C_PREFILTER && e->ddb[d->ownv[k]]) {
			/* a PCRE2 rule's gate alone (a deferred rule's own stays) */
			hs_free_database(e->ddb[d->ownv[k]]);
			e->ddb[d->ownv[k]] = NULL;
		}
	free(cost);
	free(v);
	return rc;
}

/* The own gates' group counts of a target loaded from the cache. */
static void
count_bk(struct tdb *d)
{
	while (d->n_obk < OWN_BUCKETS && d->obk[d->n_obk])
		d->n_obk++;
	while (d->n_rbk < OWN_BUCKETS && d->rbk[d->n_rbk])
		d->n_rbk++;
	while (d->n_pbk < OWN_BUCKETS && d->pbk[d->n_pbk])
		d->n_pbk++;
}

/*
 * Puts n block-mode expressions in one database, or, when they scan the
 * sample text alone in under OWN_SPLIT of that database's time, groups
 * them into at most OWN_BUCKETS databases: costliest first, each joins
 * the group whose scan grows least with it, if that growth is under
 * OWN_JOIN of its own scan alone; else it opens a group. A block scan is
 * a pass over the kept text, so sharing a database usually wins, but a
 * few expressions slow a database down far beyond their own cost: on the
 * corpus's rawbody texts, the 6 plain own gates cost 20.6 ms in one
 * database and 8.6 ms in three. Only a large gap on the sample is
 * trusted: the body's 65 plain gates cost half as much grouped there,
 * and on the corpus no less than in one database (docs/SCAN-RULES.md).
 * With apart (tests), every expression gets a database of its own. The
 * databases go to out[], their count to *nout; 0, -EIO when one does not
 * compile (none is kept), -ENOMEM.
 */
static int
group_block(const struct scan_hs *e, const char *const *ex, const unsigned *fl,
    const unsigned *id, unsigned n, hs_database_t **out, unsigned *nout, bool apart)
{
	double *cost = calloc(n + 1, sizeof(*cost)), gcost[OWN_BUCKETS];
	unsigned *ord = malloc((n + 1) * sizeof(*ord)), *grp = malloc((n + 1) * sizeof(*grp));
	unsigned *sel = malloc((n + 1) * sizeof(*sel)), ng = 0, placing = n;
	int rc = 0;

	*nout = 0;
	if (!n)
		goto out;
	if (!cost || !ord || !grp || !sel) {
		rc = -ENOMEM;
		goto out;
	}
	for (unsigned k = 0; k < n && rc == 0; k++) {
		hs_database_t *one = block_subset(ex, fl, id, &k, 1);
		if (!one)
			rc = -EIO;
		cost[k] = one ? block_seconds(one, e->sample) : 1e9;
		hs_free_database(one);
		ord[k] = k;
		grp[k] = UINT_MAX;
	}
	if (rc == 0) {
		/* one database, unless the gates alone cost far less together */
		double sum = 0, c;
		for (unsigned k = 0; k < n; k++) {
			sum += cost[k];
			sel[k] = k;
		}
		if (!(out[0] = block_subset(ex, fl, id, sel, n)))
			rc = -EIO;
		else if (!apart && (sum > OWN_SPLIT * (c = block_seconds(out[0], e->sample)) ||
		    n == 1)) {
			gcost[0] = c;
			for (unsigned k = 0; k < n; k++)
				grp[k] = 0;
			ng = 1;
			placing = 0;
		} else {
			hs_free_database(out[0]);
			out[0] = NULL;
		}
	}
	for (unsigned a = 1; a < placing; a++)
		for (unsigned b = a; b > 0 && cost[ord[b]] > cost[ord[b - 1]]; b--) {
			unsigned tv = ord[b];
			ord[b] = ord[b - 1];
			ord[b - 1] = tv;
		}
	for (unsigned j = 0; j < placing && rc == 0; j++) {
		unsigned k = ord[j], best = UINT_MAX;
		double binc = 1e18, bc = 0;
		hs_database_t *bdb = NULL;
		for (unsigned g = 0; g < ng; g++) {
			unsigned m = 0;
			for (unsigned i = 0; i < n; i++)
				if (grp[i] == g)
					sel[m++] = i;
			sel[m++] = k;
			hs_database_t *db = block_subset(ex, fl, id, sel, m);
			double c = db ? block_seconds(db, e->sample) : 1e9;
			if (db && c - gcost[g] < binc) {
				hs_free_database(bdb);
				bdb = db;
				binc = c - gcost[g];
				bc = c;
				best = g;
			} else
				hs_free_database(db);
		}
		if (bdb && ((!apart && binc <= OWN_JOIN * cost[k]) || ng == OWN_BUCKETS)) {
			hs_free_database(out[best]);
			out[best] = bdb;
			gcost[best] = bc;
			grp[k] = best;
			continue;
		}
		hs_free_database(bdb);
		if (!(out[ng] = block_subset(ex, fl, id, &k, 1))) {
			rc = -EIO;
			break;
		}
		gcost[ng] = cost[k];
		grp[k] = ng++;
	}
	if (rc == 0 && getenv("SLUICE_HS_DEBUG"))
		for (unsigned g = 0; g < ng; g++) {
			fprintf(stderr, "group %u: %.3f ms on the sample:", g, gcost[g] * 1e3);
			for (unsigned i = 0; i < n; i++)
				if (grp[i] == g)
					fprintf(stderr, " %s", id[i] & GATE_BIT ?
					    e->rs->rules[id[i] & ~GATE_BIT].name : "?");
			fprintf(stderr, "\n");
		}
out:
	if (rc < 0)
		for (unsigned g = 0; g < ng; g++) {
			hs_free_database(out[g]);
			out[g] = NULL;
		}
	else
		*nout = ng;
	free(cost);
	free(ord);
	free(grp);
	free(sel);
	return rc;
}

/*
 * Target t's own gates in their ASCII forms (scan_rules_ascii_form),
 * grouped in a few block databases (group_block): on a kept text with no
 * byte >= 0x80 they match where the gates do, at the same offsets, and
 * the look-alike groups of the fuzzy forms lose their UTF-8 branches
 * (half the scan). A form that does not compile stays as it was. With
 * plain, the forms of the plain collapse (e->rplain, where a gate has one)
 * instead: on a text that also has no "&#" the HTML-entity branches cannot
 * match either, and the groups shrink to one class each; no database when
 * no gate has a plain form. 0, or -ENOMEM; a group that fails leaves none.
 */
static int
own_ascii(struct scan_hs *e, unsigned t, bool plain, bool own_apart)
{
	struct tdb *d = &e->t[t];
	unsigned n = d->n_own, np = 0;
	const char **ex;
	char **ax;
	unsigned *fl, *id;
	hs_compile_error_t *err = NULL;
	hs_database_t **db = plain ? d->pbk : d->rbk;
	unsigned *ndb = plain ? &d->n_pbk : &d->n_rbk;
	int rc = 0;

	if (!n || getenv("SLUICE_HS_NO_ASCII"))
		return 0;
	ex = calloc(n, sizeof(*ex));
	ax = calloc(n, sizeof(*ax));
	fl = calloc(n, sizeof(*fl));
	id = calloc(n, sizeof(*id));
	for (unsigned k = 0; ex && ax && fl && id && k < n; k++) {
		uint32_t i = d->ownv[k];
		hs_expr_info_t *info = NULL;
		const char *g = e->rexpr[i];
		if (plain && e->rplain[i]) {
			g = e->rplain[i];
			np++;
		}
		fl[k] = rule_hs_flags(&e->rs->rules[i], false);
		if (gate_all_ends(e, i))
			fl[k] &= ~(unsigned)HS_FLAG_SINGLEMATCH;
		id[k] = GATE_BIT | i;
		ax[k] = g ? scan_rules_ascii_form(g) : NULL;
		if (ax[k] && hs_expression_info(ax[k], fl[k], &info, &err) != HS_SUCCESS) {
			hs_free_compile_error(err);
			err = NULL;
			free(ax[k]);
			ax[k] = NULL;
		}
		free(info);
		ex[k] = ax[k] ? ax[k] : g;
		if (!ex[k])
			rc = -EINVAL;
		else if (getenv("SLUICE_HS_DEBUG"))
			fprintf(stderr, "%s %s %u %zu\n%s\n", plain ? "plain" : "ascii",
			    e->rs->rules[i].name, fl[k], strlen(ex[k]), ex[k]);
	}
	if (!ex || !ax || !fl || !id)
		rc = -ENOMEM;
	else if (rc == 0 && (!plain || np))
		rc = group_block(e, ex, fl, id, n, db, ndb, own_apart) == -ENOMEM ? -ENOMEM : 0;
	for (unsigned k = 0; ax && k < n; k++)
		free(ax[k]);
	free(ex);
	free(ax);
	free(fl);
	free(id);
	return rc == -ENOMEM ? rc : 0;
}

/* Does b (n bytes) hold "&#"? (memchr: '&' is rare outside HTML; glibc's
 * memmem walks a two-byte needle byte by byte) */
static bool
has_entity(const uint8_t *b, size_t n)
{
	const uint8_t *q, *e = b + n;

	while (b < e && (q = memchr(b, '&', (size_t)(e - b))) != NULL) {
		if (q + 1 < e && q[1] == '#')
			return true;
		b = q + 1;
	}
	return false;
}

/* Has b (n bytes) no byte >= 0x80? */
static bool
all_ascii(const uint8_t *b, size_t n)
{
	uint64_t acc = 0, w;
	size_t k = 0;

	for (; k + 8 <= n; k += 8) {
		memcpy(&w, b + k, 8);
		acc |= w;
	}
	for (; k < n; k++)
		acc |= b[k];
	return (acc & 0x8080808080808080ull) == 0;
}

struct scan_hs *
scan_hs_build(const struct scan_ruleset *rs, const struct scan_hs_config *cfg_in,
    struct scan_hs_stats *st_out)
{
	struct scan_hs_config cfg = {0};
	struct scan_hs_stats stl, *st = st_out ? st_out : &stl;
	struct scan_hs *e;
	struct timespec t0, t1;
	int rc = 0;

	if (!rs || !rs->finished) {
		errno = EINVAL;
		return NULL;
	}
	if (cfg_in)
		cfg = *cfg_in;
	memset(st, 0, sizeof(*st));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	e = calloc(1, sizeof(*e));
	if (!e) {
		errno = ENOMEM;
		return NULL;
	}
	e->rs = rs;
	e->pcre_limit = cfg.pcre_match_limit ? cfg.pcre_match_limit : 200000;
	e->skip_always = getenv("SLUICE_HS_SKIP_ALWAYS") != NULL;
	e->force_forms = cfg.defer_mbps >= 1e12;
	e->skip_gated = getenv("SLUICE_HS_SKIP_GATED") != NULL;
	e->skip_end = getenv("SLUICE_HS_SKIP_END") != NULL;
	e->no_near = cfg.no_near;
	e->ascii_share = cfg.ascii_share > 0 && cfg.ascii_share <= 1 ? cfg.ascii_share :
	    SCAN_HS_ASCII_SHARE;
	e->dump = getenv("SLUICE_HS_DUMP");
	e->cls = calloc(rs->n + 1, 1);
	e->gsep = calloc(rs->n + 1, 1);
	e->defer = calloc(rs->n + 1, 1);
	e->ddb = calloc(rs->n + 1, sizeof(*e->ddb));
	e->adb = calloc(rs->n + 1, sizeof(*e->adb));
	e->chain_k = calloc(rs->n + 1, 1);
	e->rexpr = calloc(rs->n + 1, sizeof(*e->rexpr));
	e->rplain = calloc(rs->n + 1, sizeof(*e->rplain));
	e->code = calloc(rs->n + 1, sizeof(*e->code));
	e->multiple = calloc(rs->n + 1, 1);
	e->term_check = calloc(rs->n + 1, 1);
	e->width = calloc(rs->n + 1, sizeof(*e->width));
	e->wslot = calloc(rs->n + 1, sizeof(*e->wslot));
	e->reach = calloc(rs->n + 1, sizeof(*e->reach));
	e->cost = calloc(rs->n + 1, sizeof(*e->cost));
	if (!e->cls || !e->gsep || !e->rexpr || !e->code || !e->multiple || !e->term_check ||
	    !e->defer || !e->ddb || !e->adb || !e->chain_k || !e->width || !e->wslot ||
	    !e->reach || !e->cost) {
		rc = -ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		e->multiple[i] = (r->tflags & SCAN_TF_MULTIPLE) != 0;
		/* these need every match, not the first, to skip line-end ones */
		e->term_check[i] = r->type == SCAN_RT_HEADER && hmod_term(r->hmod);
	}
	if ((rc = setup_header_keys(e)) < 0)
		goto fail;
	if (!cfg.no_scan_cost && (e->sample = malloc(SCAN_HS_SAMPLE))) {
		sample_text(e->sample, SCAN_HS_SAMPLE);
		if ((e->sqsample = malloc(SCAN_HS_SAMPLE)))
			for (size_t k = 0; k < SCAN_HS_SAMPLE; k++)
				if ((e->sqsample[e->sqsample_n] = scan_rules_squeeze_byte(e->sample[k])))
					e->sqsample_n++;
		if ((e->lcsample = malloc(SCAN_HS_SAMPLE)))
			for (size_t k = 0; k < SCAN_HS_SAMPLE; k++)
				e->lcsample[k] = (uint8_t)tolower(e->sample[k]);
	}
	st->header_keys = e->nkeys;

	st->cache_status = -ENOENT;
	bool cached = false;
	if (cfg.cache_path) {
		st->cache_status = cache_load(e, &cfg);
		cached = st->cache_status == 0;
		for (unsigned t = 0; t < SCAN_T_COUNT && cached; t++)
			count_bk(&e->t[t]);
		if (!cached) {
			memset(e->cls, 0, rs->n);
			memset(e->gsep, 0, rs->n);
			memset(e->defer, 0, rs->n);
		}
	}
	st->cache_hit = cached;
	/* every target classified first: shedding ranks the rules of all */
	struct items its[SCAN_T_COUNT] = {0}, gits[SCAN_T_COUNT] = {0}, sits[SCAN_T_COUNT] = {0};
	for (unsigned t = 0; t < SCAN_T_COUNT && rc == 0; t++)
		rc = make_items(e, t, &its[t], &gits[t], &sits[t], &cfg, !cached, st);
	if (rc == 0 && !cached && cfg.shed_pct > 0 && shed_pick(e, &cfg) > 0) {
		/* the items again, from the classes as they now are */
		for (unsigned t = 0; t < SCAN_T_COUNT && rc == 0; t++) {
			items_free(&its[t]);
			items_free(&gits[t]);
			items_free(&sits[t]);
			st->apart[t] = 0;
			rc = make_items(e, t, &its[t], &gits[t], &sits[t], &cfg, false, st);
		}
	}
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		struct items it = its[t], git = gits[t], sit = sits[t];
		memset(&its[t], 0, sizeof(its[t]));
		memset(&gits[t], 0, sizeof(gits[t]));
		memset(&sits[t], 0, sizeof(sits[t]));
		if (rc < 0) {
			items_free(&it);
			items_free(&git);
			items_free(&sit);
			continue;
		}
		if (rc == 0 && !cached && it.n)
			rc = compile_items(e, t, &it, &git, &e->t[t].db, &cfg, st);
		if (rc == 0 && !cached && git.n)
			rc = compile_items(e, t, &git, NULL, &e->t[t].gdb, &cfg, st);
		if (rc == 0 && !cached && sit.n)
			rc = compile_items(e, t, &sit, NULL, &e->t[t].sdb, &cfg, st);
		if (rc == 0 && cached && ((it.n && !e->t[t].db) || (git.n && !e->t[t].gdb) ||
		    (sit.n && !e->t[t].sdb)))
			rc = -EIO;
		if (rc == 0 && e->dump) {
			dump_items(e, t, &it, "main");
			dump_items(e, t, &git, "gates");
			dump_items(e, t, &sit, "squeeze");
		}
		e->t[t].npat = it.n;
		e->t[t].ngpat = git.n;
		e->t[t].nspat = sit.n;
		items_free(&it);
		items_free(&git);
		items_free(&sit);
		if (rc < 0)
			goto fail;
	}
	if (rc < 0)
		goto fail;
	/* a deferred rule's own block database, and the counters */
	for (uint32_t i = 0; i < rs->n && rc == 0; i++) {
		const struct scan_rule *r = &rs->rules[i];
		struct tdb *d = &e->t[r->type < SCAN_T_COUNT ? r->type : 0];
		if (e->cls[i] == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_CHAIN) {
			char *x = rule_expr(e, r), *inner = NULL;
			unsigned lo = x ? scan_rules_whole_repeat(x, &inner) : 0;
			free(x);
			free(inner);
			if (lo < 2 || !e->ddb[i] || !e->adb[i]) {
				rc = -EINVAL;   /* a cache that does not fit */
				break;
			}
			if ((rc = u32_push(&d->chain, &d->n_chain, i)) < 0)
				break;
			e->chain_k[i] = (uint8_t)(lo < CHAIN_MAX_K ? lo : CHAIN_MAX_K);
			st->chained[r->type]++;
			continue;
		}
		if (e->cls[i] == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_OWN) {
			if ((rc = u32_push(&d->ownv, &d->n_own, i)) < 0)
				break;
			continue;       /* grouped below (own_group) or from the cache */
		}
		if (e->cls[i] == SCAN_HS_C_GATED && e->defer[i] == DEFER_FILTER) {
			/* the relaxed form, probed before PCRE2 */
			st->filtered[r->type]++;
			if (cached)
				continue;
			hs_compile_error_t *err = NULL;
			const char *xs[1] = {e->rexpr[i]};
			unsigned fl[1] = {rule_hs_flags(r, false)}, id[1] = {i};
			if (!e->rexpr[i] || hs_compile_multi(xs, fl, id, 1, HS_MODE_BLOCK,
			    scan_hs_target(), &e->ddb[i], &err) != HS_SUCCESS) {
				e->defer[i] = DEFER_NO;         /* PCRE2 behind the literal alone */
				st->filtered[r->type]--;
			}
			hs_free_compile_error(err);
			continue;
		}
		if (e->cls[i] != SCAN_HS_C_HS || e->defer[i] == DEFER_NO ||
		    e->defer[i] == DEFER_APART || r->type >= SCAN_T_COUNT)
			continue;
		if (e->defer[i] == DEFER_LINE) {
			if (d->n_ll >= LL_MAX || !linelen_make(r, &d->ll[d->n_ll].n)) {
				rc = -EINVAL;   /* a cache that does not fit the rules */
				break;
			}
			d->ll[d->n_ll++].rule = i;
			st->counted[r->type]++;
			continue;
		}
		if (e->defer[i] == DEFER_WORDS) {
			if (d->n_wr >= WR_MAX || !wordrun_make(r, i, &d->wr[d->n_wr])) {
				rc = -EINVAL;   /* a cache that does not fit the rules */
				break;
			}
			d->n_wr++;
			d->wr_shared = d->n_wr == 1 || (d->wr_shared &&
			    !memcmp(d->wr[0].kind, d->wr[d->n_wr - 1].kind, sizeof(d->wr[0].kind)));
			st->counted[r->type]++;
			continue;
		}
		if (e->defer[i] == DEFER_COUNT) {
			struct counter *c = realloc(d->ctr, (d->n_ctr + 1) * sizeof(*c));
			if (!c) {
				rc = -ENOMEM;
				break;
			}
			d->ctr = c;
			if (!counter_make(r, i, &d->ctr[d->n_ctr]))
				rc = -EINVAL;
			for (unsigned b = 0; b < 256; b++)
				d->ctr_any[b] |= d->ctr[d->n_ctr].last[b];
			d->n_ctr++;
			st->counted[r->type]++;
			continue;
		}
		if (e->defer[i] == DEFER_RUN) {
			/* its gate is grouped with the own gates */
			if ((rc = u32_push(&d->ownv, &d->n_own, i)) < 0)
				break;
			st->deferred_run[r->type]++;
		}
		if ((rc = u32_push(&d->defer, &d->n_defer, i)) < 0)
			break;
		st->deferred[r->type]++;
		st->squeezed[r->type] += e->defer[i] == DEFER_SQ;
		if (cached)
			continue;
		char *x = rule_expr(e, r);
		hs_compile_error_t *err = NULL;
		const char *xs[1] = {x};
		unsigned fl[1] = {rule_hs_flags(r, e->multiple[i] || e->term_check[i])}, id[1] = {i};
		/* the match reports carry the rule's index, as in the stream */
		if (!x || hs_compile_multi(xs, fl, id, 1, HS_MODE_BLOCK, scan_hs_target(),
		    &e->ddb[i], &err) != HS_SUCCESS)
			rc = x ? -EIO : -ENOMEM;
		hs_free_compile_error(err);
		free(x);
	}
	for (unsigned t = 0; t < SCAN_T_COUNT && !cached && rc == 0; t++)
		if ((rc = own_group(e, t)) == 0 && (rc = own_ascii(e, t, false, cfg.own_apart)) == 0)
			rc = own_ascii(e, t, true, cfg.own_apart);
	for (unsigned t = 0; t < SCAN_T_COUNT && e->dump && rc == 0; t++)
		dump_own(e, t);
	if (rc < 0)
		goto fail;
	/* exists rules are resolved from the header keys seen */
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (r->defined && r->state == SCAN_RS_ACTIVE && r->exists)
			e->cls[i] = SCAN_HS_C_HS;
	}
	/* PCRE2 code for every rule that needs it */
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		unsigned c = e->cls[i];
		bool dnear = defer_near(e, i) && e->ddb[i] && r->type != SCAN_RT_HEADER;
		if (c != SCAN_HS_C_GATED && c != SCAN_HS_C_PREFILTER && c != SCAN_HS_C_ALWAYS &&
		    !dnear)
			continue;
		char why[160];
		char *x = rule_expr(e, r);
		if (!x) {
			rc = -ENOMEM;
			goto fail;
		}
		/* near its gate's match ends: a literal gate, or one of its own
		 * (a relaxed form or a run of it; a chain or prefilter gate's
		 * ends say nothing certain) */
		bool near = dnear || (near_ok(e, i) && r->type != SCAN_RT_HEADER &&
		    (c == SCAN_HS_C_GATED || (c == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_OWN)));
		if (near && e->n_wslot < 0xfffeu) {
			e->wslot[i] = (uint16_t)++e->n_wslot;
			st->near[r->type]++;
		}
		e->code[i] = pcre_compile(x, rule_pcre_flags(r) | (e->wslot[i] ?
		    PCRE2_USE_OFFSET_LIMIT : 0), why, sizeof(why));
		if (e->dump && !dnear) {
			char fn[4096];
			snprintf(fn, sizeof(fn), "%s/pcre-%u", e->dump, r->type);
			FILE *f = fopen(fn, "a");
			if (f) {
				fprintf(f, "%u %u %zu %s\n%s\n", i, rule_hs_flags(r, e->multiple[i] ||
				    e->term_check[i]), strlen(x), r->name, x);
				fclose(f);
			}
		}
		free(x);
		if (!e->code[i] && dnear) {
			if (e->wslot[i]) {      /* PCRE2 refuses it: Hyperscan over the whole text */
				e->wslot[i] = 0;
				e->n_wslot--;   /* the last one given */
				st->near[r->type]--;
			}
		} else if (!e->code[i]) {
			add_reason(st, why);
			e->cls[i] = SCAN_HS_C_FAILED;
		}
	}
	for (unsigned h = 0; h < e->n_hrules; h++)
		e->hrules[h].absent_hit = absent_hit(&rs->rules[e->hrules[h].rule]);
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		unsigned c = e->cls[i];
		if (r->type >= SCAN_RT_META || !r->defined)
			continue;
		struct tdb *d = &e->t[r->type];
		st->cls[r->type][c]++;
		st->shed[r->type] += c == SCAN_HS_C_FAILED && e->defer[i] == DEFER_SHED;
		if (c == SCAN_HS_C_ALWAYS) {
			if ((rc = u32_push(&d->always, &d->n_always, i)) < 0)
				goto fail;
		} else if (c == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_CHAIN) {
			d->n_gated++;
		} else if (c == SCAN_HS_C_PREFILTER && e->gsep[i] == GSEP_OWN) {
			d->n_gated++;
			st->own[r->type]++;
		} else if (c == SCAN_HS_C_GATED || c == SCAN_HS_C_PREFILTER)
			d->n_gated++;
	}
	/* what the end of a message runs besides rules whose gate fired (lazy_base) */
	if (!(e->late = calloc(rs->n + 1, 1)) ||
	    !(e->hrule_of = malloc((rs->n + 1) * sizeof(*e->hrule_of)))) {
		rc = -ENOMEM;
		goto fail;
	}
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		for (unsigned k = 0; k < e->t[t].n_chain; k++)
			e->late[e->t[t].chain[k]] = 1;
		for (unsigned k = 0; k < e->t[t].n_always; k++)
			e->late[e->t[t].always[k]] = 1;
	}
	for (uint32_t i = 0; i < rs->n; i++)
		e->hrule_of[i] = -1;
	for (unsigned h = 0; h < e->n_hrules; h++)
		e->hrule_of[e->hrules[h].rule] = (int32_t)h;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		struct tdb *d = &e->t[t];
		if (d->db) {
			hs_database_size(d->db, &st->db_bytes[t]);
			hs_stream_size(d->db, &d->stream_size);
		}
		if (d->gdb) {
			hs_database_size(d->gdb, &st->gdb_bytes[t]);
			hs_stream_size(d->gdb, &d->gstream_size);
		}

		st->stream_bytes[t] = d->stream_size;
		st->gstream_bytes[t] = d->gstream_size;
		st->patterns[t] = d->npat;
		st->gpatterns[t] = d->ngpat;
		if (d->sdb) {
			hs_database_size(d->sdb, &st->sdb_bytes[t]);
			hs_stream_size(d->sdb, &d->sstream_size);
		}
		st->sstream_bytes[t] = d->sstream_size;
		for (unsigned b = 0; b < d->n_obk; b++) {
			size_t z = 0;
			hs_database_size(d->obk[b], &z);
			st->rdb_bytes[t] += z;
		}
		st->own_dbs[t] = d->n_obk;
		for (unsigned b = 0; b < d->n_rbk; b++) {
			size_t z = 0;
			hs_database_size(d->rbk[b], &z);
			st->ascii_bytes[t] += z;
		}
		for (unsigned b = 0; b < d->n_pbk; b++) {
			size_t z = 0;
			hs_database_size(d->pbk[b], &z);
			st->plain_bytes[t] += z;
		}
		st->ascii_dbs[t] = d->n_rbk;
		st->plain_dbs[t] = d->n_pbk;
		st->spatterns[t] = d->nspat;
		for (unsigned k = 0; k < d->n_defer; k++) {
			size_t z = 0;
			hs_database_size(e->ddb[d->defer[k]], &z);
			st->ddb_bytes += z;
		}
		if (d->n_always || d->n_gated || d->n_defer)
			d->keep = cfg.keep[t] ? cfg.keep[t] : SCAN_HS_KEEP_DEFAULT;
		e->max_pending += d->n_gated + d->n_defer;
	}
	if (cfg.cache_path && !cached)
		cache_save(e, &cfg);
	if (!e->sample && (e->sample = malloc(SCAN_HS_SAMPLE)))
		sample_text(e->sample, SCAN_HS_SAMPLE);
	if (e->dump && e->sample) {
		/* measurement: the cost model's text, as one message of text-T */
		char fn[4096];
		uint32_t l[2] = {SCAN_HS_SAMPLE, 0};
		snprintf(fn, sizeof(fn), "%s/sample", e->dump);
		FILE *f = fopen(fn, "w");
		if (f) {
			fwrite(&l[0], 4, 1, f);
			fwrite(e->sample, 1, SCAN_HS_SAMPLE, f);
			fwrite(&l[1], 4, 1, f);
			fclose(f);
		}
	}
	for (unsigned t = 0; t < SCAN_T_COUNT && e->sample; t++) {
		/* what each database costs on the sample text (report only) */
		if (e->t[t].db)
			st->sample_mbps[t] = scan_speed(e->t[t].db, e->sample, SCAN_HS_SAMPLE, NULL);
		if (e->t[t].gdb)
			st->gsample_mbps[t] = scan_speed(e->t[t].gdb, e->sample, SCAN_HS_SAMPLE, NULL);
	}
	free(e->sample);
	e->sample = NULL;
	free(e->sqsample);
	e->sqsample = NULL;
	free(e->lcsample);
	e->lcsample = NULL;
	{
		/* what a worker's scratch will take (report only) */
		hs_scratch_t *sc = NULL;
		for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
			if (e->t[t].db)
				hs_alloc_scratch(e->t[t].db, &sc);
			if (e->t[t].gdb)
				hs_alloc_scratch(e->t[t].gdb, &sc);
		}
		for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
			if (e->t[t].sdb)
				hs_alloc_scratch(e->t[t].sdb, &sc);
			for (unsigned b = 0; b < e->t[t].n_obk; b++)
				hs_alloc_scratch(e->t[t].obk[b], &sc);
			for (unsigned b = 0; b < e->t[t].n_rbk; b++)
				hs_alloc_scratch(e->t[t].rbk[b], &sc);
			for (unsigned b = 0; b < e->t[t].n_pbk; b++)
				hs_alloc_scratch(e->t[t].pbk[b], &sc);
		}
		for (uint32_t i = 0; i < rs->n; i++) {
			if (e->ddb[i])
				hs_alloc_scratch(e->ddb[i], &sc);
			if (e->adb[i])
				hs_alloc_scratch(e->adb[i], &sc);
		}
		if (sc) {
			hs_scratch_size(sc, &st->scratch_bytes);
			hs_free_scratch(sc);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	st->compile_seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	return e;
fail:
	scan_hs_free(e);
	errno = -rc;
	return NULL;
}

/* ---- worker and message ---- */

static struct scan_bound lazy_base(void *arg, uint32_t i);

struct scan_hs_worker *
scan_hs_worker_new(const struct scan_hs *e)
{
	struct scan_hs_worker *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->e = e;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if ((e->t[t].db && hs_alloc_scratch(e->t[t].db, &w->scratch) != HS_SUCCESS) ||
		    (e->t[t].gdb && hs_alloc_scratch(e->t[t].gdb, &w->scratch) != HS_SUCCESS))
			goto fail;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (e->t[t].sdb && hs_alloc_scratch(e->t[t].sdb, &w->scratch) != HS_SUCCESS)
			goto fail;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		for (unsigned b = 0; b < e->t[t].n_obk; b++)
			if (hs_alloc_scratch(e->t[t].obk[b], &w->scratch) != HS_SUCCESS)
				goto fail;
		for (unsigned b = 0; b < e->t[t].n_rbk; b++)
			if (hs_alloc_scratch(e->t[t].rbk[b], &w->scratch) != HS_SUCCESS)
				goto fail;
		for (unsigned b = 0; b < e->t[t].n_pbk; b++)
			if (hs_alloc_scratch(e->t[t].pbk[b], &w->scratch) != HS_SUCCESS)
				goto fail;
	}
	for (uint32_t i = 0; i < e->rs->n; i++)
		if ((e->ddb[i] && hs_alloc_scratch(e->ddb[i], &w->scratch) != HS_SUCCESS) ||
		    (e->adb[i] && hs_alloc_scratch(e->adb[i], &w->scratch) != HS_SUCCESS))
			goto fail;
	if (!(w->sq = malloc(BATCH)) || !(w->ends = malloc(CHAIN_ENDS * sizeof(*w->ends))) ||
	    !(w->lz.b = malloc((e->rs->n + 1) * sizeof(*w->lz.b))) ||
	    !(w->lz.gen = calloc(e->rs->n + 1, sizeof(*w->lz.gen))))
		goto fail;
	w->lz.rs = e->rs;
	w->lz.base = lazy_base;
	for (unsigned b = 0; b < 256; b++)
		w->sqmap[b] = scan_rules_squeeze_byte((uint8_t)b);
	w->md = pcre2_match_data_create(1, NULL);
	w->mctx = pcre2_match_context_create(NULL);
	w->jit = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
	if (!w->md || !w->mctx || !w->jit)
		goto fail;
	pcre2_set_match_limit(w->mctx, e->pcre_limit);
	pcre2_set_depth_limit(w->mctx, 10000);
	pcre2_jit_stack_assign(w->mctx, NULL, w->jit);
	if (getenv("SLUICE_HS_PROFILE")) {
		w->prof_ns = calloc(e->rs->n + 1, sizeof(*w->prof_ns));
		w->prof_runs = calloc(e->rs->n + 1, sizeof(*w->prof_runs));
		w->prof_near = calloc(e->rs->n + 1, sizeof(*w->prof_near));
	}
	return w;
fail:
	scan_hs_worker_free(w);
	errno = ENOMEM;
	return NULL;
}

struct scan_hs_worker *
scan_hs_worker_free(struct scan_hs_worker *w)
{
	if (!w)
		return NULL;
	if (w->prof_ns && w->prof_runs && w->prof_near) {
		/* the 40 costliest PCRE2 rules, to stderr */
		for (int k = 0; k < 40; k++) {
			uint32_t best = UINT32_MAX;
			for (uint32_t i = 0; i < w->e->rs->n; i++)
				if (w->prof_ns[i] && (best == UINT32_MAX || w->prof_ns[i] > w->prof_ns[best]))
					best = i;
			if (best == UINT32_MAX)
				break;
			fprintf(stderr, "%s %8.1f ms %6u runs (%u near, width %u) cls=%u %s\n",
			    w->e->cls[best] == SCAN_HS_C_HS ? "deferred" : "pcre2/probe",
			    w->prof_ns[best] / 1e6, w->prof_runs[best], w->prof_near[best],
			    w->e->wslot[best] ? w->e->width[best] : 0, w->e->cls[best],
			    w->e->rs->rules[best].name);
			w->prof_ns[best] = 0;
		}
	}
	if (w->prof_ns) {
		static const char *const ph[] = {"relaxed databases", "chain gates", "filter probes",
		    "deferred rules"};
		for (int k = 0; k < 4; k++)
			fprintf(stderr, "phase %8.1f ms %s\n", w->prof_phase[k] / 1e6, ph[k]);
	}
	free(w->prof_ns);
	free(w->prof_near);
	free(w->prof_runs);
	free(w->sq);
	free(w->ends);
	free(w->lz.b);
	free(w->lz.gen);
	if (w->scratch)
		hs_free_scratch(w->scratch);
	pcre2_match_data_free(w->md);
	pcre2_match_context_free(w->mctx);
	pcre2_jit_stack_free(w->jit);
	free(w);
	return NULL;
}

struct scan_hs_msg *
scan_hs_msg_free(struct scan_hs_msg *m)
{
	if (!m)
		return NULL;
	if (m->priv) {
		struct scan_hs_msg_priv *p = m->priv;
		for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
			if (p->s[t])
				hs_close_stream(p->s[t], NULL, NULL, NULL);
			if (p->gs[t])
				hs_close_stream(p->gs[t], NULL, NULL, NULL);
			if (p->ss[t])
				hs_close_stream(p->ss[t], NULL, NULL, NULL);
			free(p->keep[t]);
			free(p->batch[t]);
			if (p->dump[t])
				fclose(p->dump[t]);
		}
		free(p->fired);
		free(p->pending);
		free(p->win);
		free(p->whead);
		free(p->wtail);
		free(p->wcount);
		free(p->seen);
		free(p->hbuf);
		free(p->ablk[0]);
		free(p->ablk[1]);
		free(p);
	}
	free(m->hits);
	free(m);
	return NULL;
}

struct scan_hs_msg *
scan_hs_msg_new(const struct scan_hs *e)
{
	struct scan_hs_msg *m = calloc(1, sizeof(*m));
	struct scan_hs_msg_priv *p;

	if (!m)
		return NULL;
	m->e = e;
	m->priv = p = calloc(1, sizeof(*p));
	m->hits = calloc(e->rs->n + 1, sizeof(*m->hits));
	if (!p || !m->hits)
		goto fail;
	p->fired = calloc(e->rs->n + 1, 1);
	p->pending = calloc(e->max_pending + 1, sizeof(*p->pending));
	p->seen = calloc(e->nkeys / 64 + 1, sizeof(*p->seen));
	p->hbuf = malloc(HDR_BUF);
	if ((e->key_all >= 0 && !(p->ablk[0] = malloc(ALL_BUF))) ||
	    (e->key_all_raw >= 0 && !(p->ablk[1] = malloc(ALL_BUF))))
		goto fail;
	p->win = malloc(WIN_CAP * sizeof(*p->win));
	p->whead = malloc((e->n_wslot + 1) * sizeof(*p->whead));
	p->wtail = malloc((e->n_wslot + 1) * sizeof(*p->wtail));
	p->wcount = malloc(e->n_wslot + 1);
	if (!p->fired || !p->pending || !p->seen || !p->hbuf || !p->win || !p->whead ||
	    !p->wtail || !p->wcount)
		goto fail;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		if (e->t[t].db && hs_open_stream(e->t[t].db, 0, &p->s[t]) != HS_SUCCESS)
			goto fail;
		if (e->t[t].gdb && hs_open_stream(e->t[t].gdb, 0, &p->gs[t]) != HS_SUCCESS)
			goto fail;
		if (e->t[t].sdb && hs_open_stream(e->t[t].sdb, 0, &p->ss[t]) != HS_SUCCESS)
			goto fail;
		if ((p->s[t] || p->gs[t] || p->ss[t] || e->t[t].n_ctr || e->t[t].n_wr ||
		    e->t[t].n_ll) &&
		    !(p->batch[t] = malloc(BATCH)))
			goto fail;
		if (e->t[t].keep && !(p->keep[t] = malloc(e->t[t].keep)))
			goto fail;
		if (e->dump) {
			char fn[4096];
			snprintf(fn, sizeof(fn), "%s/text-%u", e->dump, t);
			p->dump[t] = fopen(fn, "w");
		}
	}
	return m;
fail:
	scan_hs_msg_free(m);
	errno = ENOMEM;
	return NULL;
}

void
scan_hs_msg_begin(struct scan_hs_msg *m)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;

	if (p->dirty) {
		/* a message abandoned midway: drop its stream state silently */
		for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
			if (p->s[t])
				hs_reset_stream(p->s[t], 0, NULL, NULL, NULL);
			if (p->gs[t])
				hs_reset_stream(p->gs[t], 0, NULL, NULL, NULL);
			if (p->ss[t])
				hs_reset_stream(p->ss[t], 0, NULL, NULL, NULL);
		}
	}
	memset(p->hist, 0, sizeof(p->hist));
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		for (unsigned k = 0; k < WR_MAX; k++)
			p->wrs[t][k] = (struct wrstate){.run = 0, .wlen = WR_NOWORD};
		p->wlen[t] = WR_NOWORD;
		p->llen[t] = 0;         /* the text starts a line */
	}
	memset(m->hits, 0, e->rs->n * sizeof(*m->hits));
	for (unsigned k = 0; k < p->npending; k++)
		p->fired[p->pending[k]] = 0;
	p->npending = 0;
	memset(p->seen, 0, (e->nkeys / 64 + 1) * sizeof(*p->seen));
	memset(p->kept, 0, sizeof(p->kept));
	memset(p->blen, 0, sizeof(p->blen));
	memset(m->bytes, 0, sizeof(m->bytes));
	p->hlen = 0;
	p->alen[0] = p->alen[1] = 0;
	p->nterm = 0;
	p->nwin = 0;
	p->failed = false;
	p->dirty = true;
	m->gtube = false;
	m->pcre_runs = m->pcre_limited = m->writes = m->deferred_runs = m->filter_runs = 0;
	m->deferred_near = 0;
	m->chain_runs = 0;
	m->lazy_skips = 0;
	m->near_runs = 0;
	m->ascii_runs = 0;
	m->plain_runs = 0;
}

/*
 * A windowed rule's gate matched, ending at g: its match, if any, starts in
 * [g - width, g]. Windows whose start ranges overlap merge; ends arrive in
 * order, so only the last window can take g.
 */
static void
win_add(struct scan_hs_msg_priv *p, unsigned s, unsigned long long g, uint32_t wd)
{
	uint16_t h = p->whead[s], t = p->wtail[s];

	if (h == WIN_OVER || g > UINT32_MAX - WIN_MAX)
		return;
	if (h != WIN_NONE) {
		struct win *w = &p->win[t];
		if (g + wd >= w->lo && g <= (unsigned long long)w->hi + wd) {
			if (g < w->lo)
				w->lo = (uint32_t)g;
			if (g > w->hi)
				w->hi = (uint32_t)g;
			return;
		}
	}
	if (p->nwin == WIN_CAP || p->wcount[s] == WIN_RULE_CAP) {
		p->whead[s] = WIN_OVER;         /* run over the whole text */
		return;
	}
	p->wcount[s]++;
	uint16_t k = (uint16_t)p->nwin++;
	p->win[k] = (struct win){(uint32_t)g, (uint32_t)g, WIN_NONE};
	if (h == WIN_NONE)
		p->whead[s] = k;
	else
		p->win[t].next = k;
	p->wtail[s] = k;
}

static bool
ends_at_term(const struct scan_hs_msg_priv *p, unsigned long long to)
{
	for (unsigned k = 0; k < p->nterm; k++)
		if (p->term[k] + 1 == to)
			return true;
	return false;
}

static int
on_match(unsigned int id, unsigned long long from, unsigned long long to,
    unsigned int flags, void *ctx)
{
	struct scan_hs_msg *m = ctx;
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;

	(void)from;
	(void)to;
	(void)flags;
	if (id == GTUBE_ID) {
		m->gtube = true;
		return 0;
	}
	uint32_t rid = id & ~GATE_BIT;
	if (e->term_check[rid] && ends_at_term(p, to))
		return 0;
	if (id & GATE_BIT) {
		uint32_t r = id & ~GATE_BIT;
		unsigned ws = e->wslot[r];
		if (!p->fired[r]) {
			if (p->npending >= e->max_pending)
				return 0;
			p->fired[r] = 1;
			p->pending[p->npending++] = r;
			if (ws) {
				p->whead[ws - 1] = WIN_NONE;
				p->wcount[ws - 1] = 0;
			}
		}
		if (ws)
			win_add(p, ws - 1, to, e->width[r]);
		return 0;
	}
	if (e->multiple[id]) {
		uint32_t mx = e->rs->rules[id].maxhits;
		if (!mx || m->hits[id] < mx)
			m->hits[id]++;
	} else
		m->hits[id] = 1;
	return 0;
}

/*
 * SLUICE_HS_PROFILE: CPU time since the last mark goes to phase k (0 the
 * relaxed databases, 1 chain gates, 2 filter probes, 3 deferred rules);
 * k < 0 only restarts the clock. PCRE2 keeps its own per-rule count.
 */
static void
prof_mark_rule(struct scan_hs_worker *w, int k, uint32_t ri)
{
	static __thread struct timespec last;
	struct timespec now;

	if (!w->prof_ns)
		return;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
	uint64_t d = (uint64_t)((now.tv_sec - last.tv_sec) * 1000000000ll +
	    (now.tv_nsec - last.tv_nsec));
	if (k >= 0)
		w->prof_phase[k] += d;
	if (k >= 0 && ri != UINT32_MAX) {
		w->prof_ns[ri] += d;
		w->prof_runs[ri]++;
	}
	last = now;
}

static void
prof_mark(struct scan_hs_worker *w, int k)
{
	prof_mark_rule(w, k, UINT32_MAX);
}

/* ends of one pattern's matches, in order, each once */
struct chain_ends {
	uint32_t *v;
	unsigned n, cap;
	bool over;
};

static int
chain_end(unsigned int id, unsigned long long from, unsigned long long to,
    unsigned int flags, void *ctx)
{
	struct chain_ends *c = ctx;

	(void)id;
	(void)from;
	(void)flags;
	if (c->n && c->v[c->n - 1] == (uint32_t)to)
		return 0;
	if (c->n == c->cap) {
		c->over = true;
		return 1;
	}
	c->v[c->n++] = (uint32_t)to;
	return 0;
}

/*
 * Can `level` more copies of chain rule ri's X' follow back to back from
 * pos of the kept text? Memoised per (pos, level); when the work runs out
 * (budget) or a copy has too many ends to follow, the answer is yes: the
 * rule then runs, as it would without the gate.
 */
static bool
chain_reach(struct scan_hs_msg *m, struct scan_hs_worker *w, uint32_t ri, uint32_t pos,
    unsigned level, int *budget)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	unsigned t = e->rs->rules[ri].type;
	uint32_t key = pos << 4 | level, h = (key * 2654435761u) % CHAIN_MEMO, slot = UINT32_MAX;

	if (!level)
		return true;
	if (pos >= p->kept[t])
		return false;
	for (unsigned k = 0; k < 8; k++) {
		uint32_t s = (h + k) % CHAIN_MEMO;
		if (w->memo_gen[s] != w->gen) {
			slot = s;
			break;
		}
		if (w->memo_key[s] == key)
			return w->memo_val[s];
	}
	if (--*budget < 0)
		return true;
	uint32_t ends[CHAIN_STEP_ENDS];
	struct chain_ends c = {ends, 0, CHAIN_STEP_ENDS, false};
	hs_error_t hr = hs_scan(e->adb[ri], (const char *)p->keep[t] + pos,
	    (unsigned)(p->kept[t] - pos), 0, w->scratch, chain_end, &c);
	bool yes = c.over || (hr != HS_SUCCESS && hr != HS_SCAN_TERMINATED);
	for (unsigned j = 0; j < c.n && !yes; j++)
		yes = ends[j] > 0 && chain_reach(m, w, ri, pos + ends[j], level - 1, budget);
	if (slot != UINT32_MAX) {
		w->memo_gen[slot] = w->gen;
		w->memo_key[slot] = key;
		w->memo_val[slot] = yes;
	}
	return yes;
}

/* Does chain rule ri's gate open: k copies of X' back to back somewhere? */
static bool
chain_open(struct scan_hs_msg *m, struct scan_hs_worker *w, uint32_t ri)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	unsigned t = e->rs->rules[ri].type;
	struct chain_ends c = {w->ends, 0, CHAIN_ENDS, false};
	int budget = CHAIN_BUDGET;

	if (!p->keep[t] || !p->kept[t])
		return false;
	hs_error_t hr = hs_scan(e->ddb[ri], (const char *)p->keep[t], (unsigned)p->kept[t], 0,
	    w->scratch, chain_end, &c);
	if (c.over || (hr != HS_SUCCESS && hr != HS_SCAN_TERMINATED))
		return true;
	if (++w->gen == 0) {
		memset(w->memo_gen, 0, sizeof(w->memo_gen));
		w->gen = 1;
	}
	for (unsigned j = 0; j < c.n; j++)
		if (chain_reach(m, w, ri, c.v[j], e->chain_k[ri] - 1u, &budget))
			return true;
	return false;
}


static int flush_batch(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t);
static int scan_write(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t,
    const uint8_t *b, size_t n);

static int
feed_raw(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t, const uint8_t *b, size_t n)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;

	m->bytes[t] += n;
	if (p->dump[t] && n) {
		/* measurement: a record per write (u32 length, bytes) */
		uint32_t l = (uint32_t)n;
		fwrite(&l, 4, 1, p->dump[t]);
		fwrite(b, 1, n, p->dump[t]);
	}
	if (p->keep[t] && p->kept[t] < e->t[t].keep) {
		size_t k = e->t[t].keep - p->kept[t];
		if (k > n)
			k = n;
		memcpy(p->keep[t] + p->kept[t], b, k);
		p->kept[t] += k;
	}
	if ((!p->s[t] && !p->gs[t] && !p->ss[t] && !e->t[t].n_ctr && !e->t[t].n_wr &&
	    !e->t[t].n_ll) || !n)
		return 0;
	/* small writes are batched: a stream write costs a fixed amount (stream
	 * state in and out of every engine), lines are short; matches are the
	 * same however the stream is cut */
	if (n < BATCH / 2) {
		if (p->blen[t] + n > BATCH && flush_batch(m, w, t) < 0)
			return -EIO;
		memcpy(p->batch[t] + p->blen[t], b, n);
		p->blen[t] += n;
		return 0;
	}
	if (flush_batch(m, w, t) < 0)
		return -EIO;
	return scan_write(m, w, t, b, n);
}

static int
flush_batch(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t)
{
	struct scan_hs_msg_priv *p = m->priv;
	size_t n = p->blen[t];

	p->blen[t] = 0;
	return n ? scan_write(m, w, t, p->batch[t], n) : 0;
}

/* The counters of target t over b: the match ends in b, up to maxhits. */
static void
count_write(struct scan_hs_msg *m, unsigned t, const uint8_t *b, size_t n)
{
	const struct tdb *d = &m->e->t[t];
	struct scan_hs_msg_priv *p = m->priv;
	uint32_t h = p->hist[t];

	while (n) {
		bool open = false;
		for (unsigned k = 0; k < d->n_ctr; k++)
			open |= !d->ctr[k].max || m->hits[d->ctr[k].rule] < d->ctr[k].max;
		if (!open)
			return;         /* every counter full: nothing more this message */
		size_t c = n < 512 ? n : 512;
		for (size_t j = 0; j < c; j++) {
			h = h << 8 | b[j];
			if (!d->ctr_any[b[j]])
				continue;       /* most bytes end no counted string */
			for (unsigned k = 0; k < d->n_ctr; k++) {
				const struct counter *ct = &d->ctr[k];
				if (!ct->last[b[j]])
					continue;
				for (unsigned q = 0; q < ct->n; q++)
					if ((h & ct->mask[q]) == ct->val[q]) {
						uint32_t *x = &m->hits[ct->rule];
						if (!ct->max || *x < ct->max)
							(*x)++;
						break;
					}
			}
		}
		b += c;
		n -= c;
	}
	p->hist[t] = h;
}

/*
 * Word runs over b for rules [k0, k1) of target t, which share the byte
 * classes of rule k0: a tight loop over a word's letters, the runs updated
 * only at the byte after it. *wlenp: the word so far, across writes.
 */
static void
words_pass(struct scan_hs_msg *m, unsigned t, unsigned k0, unsigned k1, int16_t *wlenp,
    const uint8_t *b, size_t n)
{
	const struct tdb *d = &m->e->t[t];
	struct wrstate *ws = m->priv->wrs[t];
	const uint8_t *kind = d->wr[k0].kind;
	int wlen = *wlenp, least = 0x7fff;
	bool live = false;      /* some run under way */
	size_t j = 0;

	for (unsigned k = k0; k < k1; k++) {
		least = d->wr[k].min < least ? d->wr[k].min : least;
		live |= ws[k].run != 0;
	}
	while (j < n) {
		if (kind[b[j]] == WR_LETTER) {
			size_t j0 = j;
			while (j < n && kind[b[j]] == WR_LETTER)
				j++;
			if (wlen == WR_NOWORD)
				wlen = 0;       /* after a non-word byte: \b holds */
			if (wlen >= 0)
				wlen = (int)(j - j0) + wlen > 0x7fff ? 0x7fff : (int)(j - j0) + wlen;
			continue;
		}
		switch (kind[b[j]]) {
		case WR_WORD:
			wlen = WR_INVALID;      /* a word with other bytes: its SEP ends the run */
			break;
		case WR_SEP:
			/* a word too short for every rule, with no run under
			 * way, changes nothing (most words) */
			if (wlen != WR_NOWORD && (live || wlen >= least)) {
				live = false;
				for (unsigned k = k0; k < k1; k++) {
					const struct wordrun *w = &d->wr[k];
					if (wlen < w->min)
						ws[k].run = 0;
					else if (++ws[k].run >= w->n && !m->hits[w->rule])
						m->hits[w->rule] = 1;
					live |= ws[k].run != 0;
				}
			}
			wlen = WR_NOWORD;
			break;
		default:
			if (live)
				for (unsigned k = k0; k < k1; k++)
					ws[k].run = 0;
			live = false;
			wlen = WR_NOWORD;
		}
		j++;
	}
	*wlenp = (int16_t)wlen;
}

#define LLEN_DEAD UINT32_MAX    /* a CR since the line's start: no match before the next LF */

/* The line-length rules of target t over b (linelen_make). */
static void
lines_write(struct scan_hs_msg *m, unsigned t, const uint8_t *b, size_t n)
{
	const struct tdb *d = &m->e->t[t];
	struct scan_hs_msg_priv *p = m->priv;
	const uint8_t *e = b + n;
	uint32_t len = p->llen[t], need = UINT32_MAX;

	for (unsigned k = 0; k < d->n_ll; k++)
		if (!m->hits[d->ll[k].rule] && d->ll[k].n < need)
			need = d->ll[k].n;
	if (need == UINT32_MAX)
		return;         /* every rule has hit */
	while (b < e) {
		const uint8_t *lf = memchr(b, '\n', (size_t)(e - b)), *end = lf ? lf : e;
		if (len != LLEN_DEAD) {
			const uint8_t *cr = memchr(b, '\r', (size_t)(end - b));
			size_t run = (size_t)((cr ? cr : end) - b);
			len = run >= LLEN_DEAD - 1 - len ? LLEN_DEAD - 1 : len + (uint32_t)run;
			if (len >= need)
				for (unsigned k = 0; k < d->n_ll; k++)
					if (len >= d->ll[k].n)
						m->hits[d->ll[k].rule] = 1;
			if (cr)
				len = LLEN_DEAD;
		}
		if (lf)
			len = 0;
		b = lf ? lf + 1 : e;
	}
	p->llen[t] = len;
}

/* The word-run rules of target t over b (wordrun_make): one pass when they
 * share their byte classes, else one per rule. */
static void
words_write(struct scan_hs_msg *m, unsigned t, const uint8_t *b, size_t n)
{
	const struct tdb *d = &m->e->t[t];
	struct scan_hs_msg_priv *p = m->priv;

	if (d->wr_shared) {
		unsigned open = 0;
		for (unsigned k = 0; k < d->n_wr; k++)
			open += !m->hits[d->wr[k].rule];
		if (open)       /* else every rule hit: nothing left to count */
			words_pass(m, t, 0, d->n_wr, &p->wlen[t], b, n);
		return;
	}
	for (unsigned k = 0; k < d->n_wr; k++)
		if (!m->hits[d->wr[k].rule])
			words_pass(m, t, k, k + 1, &p->wrs[t][k].wlen, b, n);
}

/* Target t's squeezed image of b (letters and digits, lower case) into its squeeze stream. */
static int
squeeze_write(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t, const uint8_t *b,
    size_t n)
{
	struct scan_hs_msg_priv *p = m->priv;

	while (n) {
		size_t c = n < BATCH ? n : BATCH, k = 0;
		for (size_t j = 0; j < c; j++) {
			uint8_t q = w->sqmap[b[j]];
			w->sq[k] = q;
			k += q != 0;
		}
		if (k && hs_scan_stream(p->ss[t], (const char *)w->sq, (unsigned)k, 0, w->scratch,
		    on_match, m) != HS_SUCCESS)
			return -EIO;
		b += c;
		n -= c;
	}
	return 0;
}

static int
scan_write(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned t, const uint8_t *b, size_t n)
{
	struct scan_hs_msg_priv *p = m->priv;

	m->writes++;
	if (m->e->t[t].n_ctr)
		count_write(m, t, b, n);
	if (m->e->t[t].n_wr)
		words_write(m, t, b, n);
	if (m->e->t[t].n_ll)
		lines_write(m, t, b, n);
	if (p->ss[t] && squeeze_write(m, w, t, b, n) < 0) {
		p->failed = true;
		return -EIO;
	}
	while (n) {
		/* Hyperscan takes unsigned int lengths */
		unsigned c = n > 0x40000000u ? 0x40000000u : (unsigned)n;
		if ((p->s[t] && hs_scan_stream(p->s[t], (const char *)b, c, 0, w->scratch, on_match,
		    m) != HS_SUCCESS) || (p->gs[t] && hs_scan_stream(p->gs[t], (const char *)b, c, 0,
		    w->scratch, on_match, m) != HS_SUCCESS)) {
			p->failed = true;
			return -EIO;
		}
		b += c;
		n -= c;
	}
	return 0;
}

int
scan_hs_feed(struct scan_hs_msg *m, struct scan_hs_worker *w, enum scan_target t,
    const uint8_t *b, size_t n)
{
	if ((unsigned)t >= SCAN_T_COUNT)
		return -EINVAL;
	if (t == SCAN_T_HEADER && m->priv->hlen) {
		int rc = feed_raw(m, w, t, m->priv->hbuf, m->priv->hlen);
		m->priv->hlen = 0;
		if (rc < 0)
			return rc;
	}
	return feed_raw(m, w, t, b, n);
}

/* Appends one header record; flushes the batch when it would not fit. */
static void
hrec(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned key,
    const char *pre, size_t pre_n, const uint8_t *v, size_t vn)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	const char *kn = e->keys[key].name;
	size_t kl = strlen(kn);
	size_t need = 1 + kl + 2 + pre_n + vn + 1;

	p->seen[key / 64] |= 1ull << (key % 64);
	if (!p->s[SCAN_T_HEADER] && !p->gs[SCAN_T_HEADER] && !p->keep[SCAN_T_HEADER])
		return;
	if (hmod_term(e->keys[key].hmod) &&
	    p->nterm < sizeof(p->term) / sizeof(p->term[0]))
		p->term[p->nterm++] = m->bytes[SCAN_T_HEADER] + p->hlen + need - 1 -
		    (p->hlen + need > HDR_BUF && p->hlen ? p->hlen : 0);
	if (p->hlen + need > HDR_BUF && p->hlen) {
		feed_raw(m, w, SCAN_T_HEADER, p->hbuf, p->hlen);
		p->hlen = 0;
	}
	if (need > HDR_BUF) {
		feed_raw(m, w, SCAN_T_HEADER, (const uint8_t *)"\x01", 1);
		feed_raw(m, w, SCAN_T_HEADER, (const uint8_t *)kn, kl);
		feed_raw(m, w, SCAN_T_HEADER, (const uint8_t *)"\n\x02", 2);
		feed_raw(m, w, SCAN_T_HEADER, (const uint8_t *)pre, pre_n);
		feed_raw(m, w, SCAN_T_HEADER, v, vn);
		feed_raw(m, w, SCAN_T_HEADER, (const uint8_t *)"\n", 1);
		return;
	}
	uint8_t *d = p->hbuf + p->hlen;
	*d++ = 0x01;
	memcpy(d, kn, kl);
	d += kl;
	*d++ = '\n';
	*d++ = 0x02;
	memcpy(d, pre, pre_n);
	d += pre_n;
	memcpy(d, v, vn);
	d += vn;
	*d++ = '\n';
	p->hlen += need;
}

/* The first address of a header value: inside <...>, else the first word with '@'. */
static void
value_addr(const uint8_t *v, size_t n, const uint8_t **a, size_t *an)
{
	const uint8_t *lt = memchr(v, '<', n);

	if (lt) {
		const uint8_t *gt = memchr(lt, '>', n - (size_t)(lt - v));
		*a = lt + 1;
		*an = gt ? (size_t)(gt - lt - 1) : n - (size_t)(lt - v) - 1;
		return;
	}
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',' || v[i] == '\n'))
			i++;
		size_t b = i;
		while (i < n && v[i] != ' ' && v[i] != '\t' && v[i] != ',' && v[i] != '\n')
			i++;
		if (memchr(v + b, '@', i - b) || i >= n) {
			*a = v + b;
			*an = i - b;
			return;
		}
	}
	*a = v;
	*an = 0;
}

/* The display name: before '<' (quotes dropped), else a (comment). */
static void
value_name(const uint8_t *v, size_t n, const uint8_t **a, size_t *an)
{
	const uint8_t *lt = memchr(v, '<', n);
	const uint8_t *b = v, *e;

	if (lt)
		e = lt;
	else {
		const uint8_t *po = memchr(v, '(', n);
		const uint8_t *pc = po ? memchr(po, ')', n - (size_t)(po - v)) : NULL;
		if (!po || !pc) {
			*a = v;
			*an = 0;
			return;
		}
		b = po + 1;
		e = pc;
	}
	while (b < e && (*b == ' ' || *b == '\t' || *b == '"'))
		b++;
	while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '"'))
		e--;
	*a = b;
	*an = (size_t)(e - b);
}

static void
hrec_mod(struct scan_hs_msg *m, struct scan_hs_worker *w, unsigned key, uint8_t hmod,
    const uint8_t *v, size_t vn, const uint8_t *raw, size_t rn)
{
	const uint8_t *a;
	size_t an;

	switch (hmod) {
	case SCAN_HMOD_RAW:
		hrec(m, w, key, "", 0, raw ? raw : v, raw ? rn : vn);
		break;
	case SCAN_HMOD_ADDR:
		value_addr(v, vn, &a, &an);
		hrec(m, w, key, "", 0, a, an);
		break;
	case SCAN_HMOD_NAME:
		value_name(v, vn, &a, &an);
		hrec(m, w, key, "", 0, a, an);
		break;
	case SCAN_HMOD_ADDR_RAW:
		value_addr(raw ? raw : v, raw ? rn : vn, &a, &an);
		hrec(m, w, key, "", 0, a, an);
		break;
	case SCAN_HMOD_NAME_RAW:
		value_name(raw ? raw : v, raw ? rn : vn, &a, &an);
		hrec(m, w, key, "", 0, a, an);
		break;
	default:
		hrec(m, w, key, "", 0, v, vn);
	}
}

/* One header's line of the ALL (k 0) or ALL:raw (k 1) block, if it fits. */
static void
all_line(struct scan_hs_msg *m, unsigned k, const char *pre, size_t pn, const uint8_t *v, size_t vn)
{
	struct scan_hs_msg_priv *p = m->priv;

	if (p->alen[k] + pn + vn + 1 > ALL_BUF)
		return;
	memcpy(p->ablk[k] + p->alen[k], pre, pn);
	memcpy(p->ablk[k] + p->alen[k] + pn, v, vn);
	p->alen[k] += pn + vn;
	p->ablk[k][p->alen[k]++] = '\n';
}

void
scan_hs_header(struct scan_hs_msg *m, struct scan_hs_worker *w, const char *name, size_t nn,
    const uint8_t *v, size_t vn, const uint8_t *raw, size_t rn)
{
	const struct scan_hs *e = m->e;
	char pre[300];

	/* SpamAssassin's values start after the blanks that follow the colon */
	while (vn && (*v == ' ' || *v == '\t')) {
		v++;
		vn--;
	}
	if (nn > 250)
		nn = 250;
	if (e->key_all >= 0 || e->key_all_raw >= 0) {
		memcpy(pre, name, nn);
		pre[nn] = ':';
		pre[nn + 1] = ' ';
		if (e->key_all >= 0)
			all_line(m, 0, pre, nn + 2, v, vn);
		if (e->key_all_raw >= 0)
			all_line(m, 1, pre, nn + 1, raw ? raw : v, raw ? rn : vn);
	}
	const struct hname *hn = name_lookup(e, name, nn);
	if (!hn)
		return;
	for (unsigned j = 0; j < 4 && hn->exists_key[j]; j++) {
		unsigned k = hn->exists_key[j] - 1u;
		m->priv->seen[k / 64] |= 1ull << (k % 64);
	}
	for (uint8_t k = 0; k < SCAN_HMOD_COUNT; k++) {
		if (hn->key[k])
			hrec_mod(m, w, hn->key[k] - 1u, k, v, vn, raw, rn);
		if (hn->pseudo[k])
			hrec_mod(m, w, hn->pseudo[k] - 1u, k, v, vn, raw, rn);
	}
}

/* Do windowed rule ri's windows span under 1/share of the kept text? */
static bool
near_few(const struct scan_hs_msg *m, uint32_t ri, unsigned share)
{
	const struct scan_hs *e = m->e;
	const struct scan_hs_msg_priv *p = m->priv;
	unsigned t = e->rs->rules[ri].type, ws = e->wslot[ri];
	size_t span = 0;

	if (!ws || !e->code[ri] || !p->keep[t] || p->whead[ws - 1] == WIN_OVER || e->no_near)
		return false;
	for (uint16_t k = p->whead[ws - 1]; k != WIN_NONE; k = p->win[k].next)
		span += p->win[k].hi - p->win[k].lo + e->width[ri];
	return span * share < p->kept[t];
}

/*
 * Windowed rule ri near its gate's match ends only, when their windows
 * span under 1/share of the kept text: every match of the rule holds one
 * of its gate's, so starts at most its width before that end. PCRE2
 * searches each window on the whole subject (look-arounds see the real
 * neighbours); *hits is 1 if one matched. False: not run (no windows, too
 * many, or too wide).
 */
static bool
run_near(struct scan_hs_msg *m, struct scan_hs_worker *w, uint32_t ri, unsigned share,
    uint32_t *hits)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	unsigned t = e->rs->rules[ri].type, ws = e->wslot[ri];
	const pcre2_code *c = e->code[ri];
	size_t n = p->kept[t];
	uint32_t wd = e->width[ri];

	if (!near_few(m, ri, share))
		return false;
	if (w->prof_near)
		w->prof_near[ri]++;
	for (uint16_t k = p->whead[ws - 1]; k != WIN_NONE && !*hits; k = p->win[k].next) {
		size_t a = p->win[k].lo > wd ? p->win[k].lo - wd : 0;
		if (a > n)
			break;
		pcre2_set_offset_limit(w->mctx, p->win[k].hi);
		int rc = pcre2_match(c, p->keep[t], n, a, 0, w->md, w->mctx);
		if (rc >= 0)
			*hits = 1;
		else if (rc != PCRE2_ERROR_NOMATCH)
			m->pcre_limited++;
	}
	pcre2_set_offset_limit(w->mctx, PCRE2_UNSET);
	return true;
}

static void
run_pcre(struct scan_hs_msg *m, struct scan_hs_worker *w, uint32_t ri)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	const struct scan_rule *r = &e->rs->rules[ri];
	unsigned t = r->type;
	const pcre2_code *c = e->code[ri];
	size_t off = 0, n = p->kept[t];
	uint32_t mx = e->multiple[ri] ? (r->maxhits ? r->maxhits : 1000) : 1;
	uint32_t hits = 0;

	if (!c || !p->keep[t])
		return;
	m->pcre_runs++;
	struct timespec p0, p1;
	if (w->prof_ns)
		clock_gettime(CLOCK_MONOTONIC, &p0);
	if (run_near(m, w, ri, 1, &hits)) {
		m->near_runs++;
		off = n + 1;    /* done */
	}
	while (hits < mx && off <= n) {
		int rc = pcre2_match(c, p->keep[t], n, off, 0, w->md, w->mctx);
		if (rc < 0) {
			if (rc != PCRE2_ERROR_NOMATCH)
				m->pcre_limited++;
			break;
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
		if (e->term_check[ri] && ends_at_term(p, ov[1])) {
			off = ov[0] + 1;
			continue;
		}
		hits++;
		off = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
	}
	if (hits > m->hits[ri])
		m->hits[ri] = hits;
	if (w->prof_ns) {
		clock_gettime(CLOCK_MONOTONIC, &p1);
		w->prof_ns[ri] += (uint64_t)((p1.tv_sec - p0.tv_sec) * 1000000000ll + (p1.tv_nsec - p0.tv_nsec));
		w->prof_runs[ri]++;
	}
}

/*
 * Lazy evaluation (scan_rules_lazy_needed), after the own gates ran:
 * bounds on non-meta rule i's final value. Undecided: rules whose gate
 * fired (pending), chain and always rules. Every other rule's hits are
 * final; a header rule's value is what the end of scan_hs_msg_end will
 * make of them.
 */
static struct scan_bound
lazy_base(void *arg, uint32_t i)
{
	const struct scan_hs_msg *m = arg;
	const struct scan_hs *e = m->e;
	const struct scan_hs_msg_priv *p = m->priv;
	struct scan_bound x = {m->hits[i], m->hits[i]};

	if (p->fired[i] || e->late[i])
		x.hi = !e->multiple[i] ? 1 : e->rs->rules[i].maxhits ? e->rs->rules[i].maxhits : 1e9;
	if (e->hrule_of[i] >= 0) {
		const struct hrule *hr = &e->hrules[e->hrule_of[i]];
		bool seen = (p->seen[hr->key / 64] >> (hr->key % 64)) & 1;
		if (hr->exists)
			x.lo = x.hi = seen;
		else if (!seen)
			x.lo = x.hi = hr->absent_hit;
		else if (hr->negate && x.lo > 0)
			x.lo = x.hi = 0;
		else if (hr->negate && x.hi > x.lo)
			x.lo = 0, x.hi = 1;     /* 1 if nothing more matches */
		else if (hr->negate)
			x.lo = x.hi = 1;
	}
	return x;
}

/* Must undecided rule i run (m->lazy: only if it can move the verdict)? */
static inline bool
lazy_needs(struct scan_hs_msg *m, struct scan_hs_worker *w, uint32_t i)
{
	if (!m->lazy)
		return true;
	if (scan_rules_lazy_needed(&w->lz, i))
		return true;
	m->lazy_skips++;
	return false;
}

int
scan_hs_msg_end(struct scan_hs_msg *m, struct scan_hs_worker *w)
{
	const struct scan_hs *e = m->e;
	struct scan_hs_msg_priv *p = m->priv;
	int rc = 0;

	/* the header blocks last: an ALL rule's [^\x01]*? runs to the stream's
	 * end (ALL:raw's into ALL's block at most) */
	if (p->alen[1])
		hrec(m, w, (unsigned)e->key_all_raw, "\n", 1, p->ablk[1], p->alen[1]);
	if (p->alen[0])
		hrec(m, w, (unsigned)e->key_all, "\n", 1, p->ablk[0], p->alen[0]);
	if (p->hlen) {
		feed_raw(m, w, SCAN_T_HEADER, p->hbuf, p->hlen);
		p->hlen = 0;
	}
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		if (flush_batch(m, w, t) < 0)
			p->failed = true;
		if (p->s[t] && hs_reset_stream(p->s[t], 0, w->scratch, on_match, m) != HS_SUCCESS)
			p->failed = true;
		if (p->gs[t] && hs_reset_stream(p->gs[t], 0, w->scratch, on_match, m) != HS_SUCCESS)
			p->failed = true;
		if (p->ss[t] && hs_reset_stream(p->ss[t], 0, w->scratch, on_match, m) != HS_SUCCESS)
			p->failed = true;
	}
	p->dirty = false;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (p->dump[t]) {
			uint32_t l = 0;         /* end of a message */
			fwrite(&l, 4, 1, p->dump[t]);
		}
	if (p->failed)
		rc = -EIO;
	prof_mark(w, -1);
	if (e->skip_end)
		goto metas;     /* measurement: what the streams alone cost */
	for (unsigned t = 0; t < SCAN_T_COUNT; t++) {
		if (!p->keep[t] || !p->kept[t] || !e->t[t].n_obk)
			continue;
		if (e->t[t].n_rbk && all_ascii(p->keep[t], p->kept[t])) {
			/* the same gates in their ASCII forms; with no HTML
			 * numeric entity in the text, their plain forms */
			hs_database_t *const *db = e->t[t].rbk;
			unsigned n = e->t[t].n_rbk;
			if (e->t[t].n_pbk && !has_entity(p->keep[t], p->kept[t])) {
				db = e->t[t].pbk;
				n = e->t[t].n_pbk;
				m->plain_runs++;
			}
			m->ascii_runs++;
			for (unsigned b = 0; b < n; b++)
				if (hs_scan(db[b], (const char *)p->keep[t], (unsigned)p->kept[t], 0,
				    w->scratch, on_match, m) != HS_SUCCESS)
					rc = -EIO;
			continue;
		}
		for (unsigned b = 0; b < e->t[t].n_obk; b++)
			/* the gates of their own over the text PCRE2 would see: a
			 * rule whose gate does not match cannot match */
			if (hs_scan(e->t[t].obk[b], (const char *)p->keep[t], (unsigned)p->kept[t], 0,
			    w->scratch, on_match, m) != HS_SUCCESS)
				rc = -EIO;
	}
	prof_mark(w, 0);
	/* lazy from here: what the own gates left unfired is decided */
	w->lz.arg = m;
	scan_rules_lazy_begin(&w->lz);
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		for (unsigned k = 0; k < e->t[t].n_chain; k++) {
			uint32_t ri = e->t[t].chain[k];
			if (!lazy_needs(m, w, ri))
				continue;
			m->chain_runs++;
			if (!p->fired[ri] && p->npending < e->max_pending && chain_open(m, w, ri)) {
				p->fired[ri] = 1;
				p->pending[p->npending++] = ri;
			}
		}
	prof_mark(w, 1);
	for (unsigned k = 0; k < p->npending; k++) {
		uint32_t ri = p->pending[k];
		unsigned t = e->rs->rules[ri].type;
		if (!lazy_needs(m, w, ri))
			continue;
		prof_mark(w, -1);       /* PCRE2 keeps its own count */
		if (e->cls[ri] == SCAN_HS_C_PREFILTER) {
			if (!e->skip_gated)
				run_pcre(m, w, ri);
		} else if (e->ddb[ri] && e->cls[ri] != SCAN_HS_C_HS) {
			/* a filtered PCRE2 rule: its relaxed form first */
			bool hit = false;
			if (near_few(m, ri, FILTER_NEAR_SHARE))
				hit = true;     /* PCRE2 near a few gate ends: cheaper than the probe */
			else
				m->filter_runs++;
			if (!hit && p->keep[t] && p->kept[t]) {
				hs_error_t hr = hs_scan(e->ddb[ri], (const char *)p->keep[t],
				    (unsigned)p->kept[t], 0, w->scratch, scan_gate_probe, &hit);
				if (hr != HS_SUCCESS && hr != HS_SCAN_TERMINATED)
					hit = true;     /* cannot tell: run the rule */
			}
			prof_mark_rule(w, 2, ri);
			if (hit && !e->skip_gated)
				run_pcre(m, w, ri);
			prof_mark(w, -1);
		} else if (e->ddb[ri]) {
			/* a deferred rule whose gate fired: near its gate's ends
			 * (PCRE2) when they are few, else alone over the kept text */
			uint32_t nh = 0;
			m->deferred_runs++;
			if (run_near(m, w, ri, DEFER_NEAR_SHARE, &nh)) {
				m->deferred_near++;
				if (nh)
					m->hits[ri] = 1;
			} else if (p->keep[t] && p->kept[t] && hs_scan(e->ddb[ri],
			    (const char *)p->keep[t], (unsigned)p->kept[t], 0, w->scratch, on_match,
			    m) != HS_SUCCESS)
				rc = -EIO;
			prof_mark_rule(w, 3, ri);
		} else if (!e->skip_gated)
			run_pcre(m, w, ri);
	}
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		for (unsigned k = 0; k < e->t[t].n_always && !e->skip_always; k++)
			if (lazy_needs(m, w, e->t[t].always[k]))
				run_pcre(m, w, e->t[t].always[k]);
metas:
	for (unsigned h = 0; h < e->n_hrules; h++) {
		const struct hrule *hr = &e->hrules[h];
		bool seen = (p->seen[hr->key / 64] >> (hr->key % 64)) & 1;
		uint32_t *x = &m->hits[hr->rule];
		if (hr->exists)
			*x = seen;
		else if (!seen)
			*x = hr->absent_hit;
		else if (hr->negate)
			*x = *x == 0;
	}
	scan_rules_meta_eval(e->rs, m->hits);
	return rc;
}
