/*
 * rules.h - SpamAssassin-compatible rule files: parse, resolve, meta logic.
 *
 * Contract
 *   A rule set is built on the control plane (it allocates freely) and is
 *   read-only afterwards: scan/hs.h compiles it, workers only read it.
 *     rs = scan_rules_new()
 *     scan_rules_load_path(rs, dir-or-file)* / scan_rules_load_text(rs, ...)*
 *     scan_rules_finish(rs)       resolve scores, tags, metas; once
 *     ... scan_hs_build(rs, ...), scan_rules_meta_eval(rs, counts) ...
 *     rs = scan_rules_free(rs)
 *
 *   The dialect is the subset of SpamAssassin's Conf syntax that a streaming
 *   regex engine can honour:
 *     header NAME Header[:raw|:addr|:name] =~ /re/flags [if-unset: text]
 *     header NAME Header !~ /re/flags        hit when it does not match
 *     header NAME ALL =~ /re/                every header as "Name: value"
 *     header NAME exists:Header
 *     body | rawbody | full | uri NAME /re/flags   (also m{re}flags, m!re!)
 *     meta NAME expr           && || ! ( ) + - * / < <= > >= == != numbers
 *     score NAME s0 [s1 s2 s3] set 0 (no Bayes, no network tests) is used
 *     describe NAME text       tflags NAME multiple maxhits=N (rest counted)
 *     ifplugin P / if EXPR / else / endif   evaluated, nested
 *     replace_tag / replace_pre / replace_inter / replace_post /
 *       replace_rules           the ReplaceTags plugin (counted as loaded)
 *     include, lang xx ...     skipped and counted
 *   Everything else (eval: tests, mimeheader, network and whitelist
 *   directives, ...) is skipped and counted per directive; a malformed line
 *   is a diagnostic "file:line: reason" (kept, first SCAN_RULES_DIAG_MAX),
 *   never fatal. A later definition of a rule replaces an earlier one
 *   (SpamAssassin does the same; counted as redefined).
 *
 *   Plugins taken as loaded by `ifplugin` / `plugin()`: Check, ReplaceTags.
 *   `if (version >= X)`: true for X <= 4.000000. `can(...)`: true only for
 *   syntax features we parse (feature_bug6558_free, perl_min_version_*).
 *
 *   Scores: a rule with no score line scores 1.0, a "__" rule 0 (SpamAssassin
 *   defaults); `score NAME 0` disables a rule (not compiled, reads 0 in
 *   metas), except that a "__" rule never has a score and always runs.
 *
 *   Errors: scan_rules_new() returns NULL with errno; load functions return
 *   0 or -errno (only for I/O: a file that cannot be read); finish returns
 *   0 or -ENOMEM.
 */
#ifndef SCAN_RULES_H
#define SCAN_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum scan_target {
	SCAN_T_HEADER = 0,
	SCAN_T_BODY,
	SCAN_T_RAWBODY,
	SCAN_T_FULL,
	SCAN_T_URI,
	SCAN_T_COUNT
};

enum scan_rule_type {
	SCAN_RT_HEADER = 0,     /* same order as enum scan_target */
	SCAN_RT_BODY,
	SCAN_RT_RAWBODY,
	SCAN_RT_FULL,
	SCAN_RT_URI,
	SCAN_RT_META,
	SCAN_RT_COUNT
};

/* header modifiers */
enum {
	SCAN_HMOD_NONE = 0,     /* value: unfolded, RFC 2047-decoded */
	SCAN_HMOD_RAW,          /* as received, folds kept */
	SCAN_HMOD_ADDR,         /* the first address */
	SCAN_HMOD_NAME,         /* the display name of the first address */
	SCAN_HMOD_ADDR_RAW,     /* :addr:raw, of the value as received */
	SCAN_HMOD_NAME_RAW,     /* :name:raw (not RFC 2047-decoded) */
	SCAN_HMOD_COUNT
};

/* regex flags */
enum {
	SCAN_RE_I = 1u << 0,
	SCAN_RE_M = 1u << 1,
	SCAN_RE_S = 1u << 2,
	SCAN_RE_X = 1u << 3,
};

/* tflags */
enum {
	SCAN_TF_MULTIPLE = 1u << 0,
	SCAN_TF_NICE = 1u << 1,
	SCAN_TF_NET = 1u << 2,
	SCAN_TF_LEARN = 1u << 3,
	SCAN_TF_USERCONF = 1u << 4,
	SCAN_TF_NOAUTOLEARN = 1u << 5,
	SCAN_TF_PUBLISH = 1u << 6,
	SCAN_TF_OTHER = 1u << 7,
	SCAN_TF_NOSUBJECT = 1u << 8,    /* body: not on the Subject line */
};

/* what became of a rule */
enum scan_rule_state {
	SCAN_RS_ACTIVE = 0,     /* runs (regex, exists or meta) */
	SCAN_RS_EVAL,           /* eval:... test: not run, reads 0 */
	SCAN_RS_DISABLED,       /* score 0 */
	SCAN_RS_BROKEN,         /* malformed regex / meta: reported */
	SCAN_RS_UNDEFINED,      /* only named by score/describe/tflags */
};

/* one step of a meta expression in reverse Polish notation */
enum scan_meta_opcode {
	SCAN_MO_NUM = 0,        /* push num */
	SCAN_MO_RULE,           /* push hits of rule `rule` */
	SCAN_MO_NOT, SCAN_MO_NEG,
	SCAN_MO_MUL, SCAN_MO_DIV, SCAN_MO_ADD, SCAN_MO_SUB,
	SCAN_MO_LT, SCAN_MO_LE, SCAN_MO_GT, SCAN_MO_GE, SCAN_MO_EQ, SCAN_MO_NE,
	SCAN_MO_AND, SCAN_MO_OR,
};

struct scan_meta_op {
	uint8_t op;
	uint32_t rule;
	double num;
};

struct scan_rule {
	char *name;
	uint8_t type;           /* enum scan_rule_type */
	uint8_t state;          /* enum scan_rule_state */
	uint8_t hmod;           /* SCAN_HMOD_* (header) */
	uint8_t negate;         /* header !~ */
	uint8_t exists;         /* header exists:Name */
	uint8_t replace;        /* named by replace_rules */
	uint8_t has_score;
	uint8_t defined;
	uint32_t re_flags;      /* SCAN_RE_* */
	uint32_t tflags;        /* SCAN_TF_* */
	uint32_t maxhits;       /* with multiple; 0 = unbounded */
	char *header;           /* lower-case header name, "all", or NULL */
	char *re;               /* the pattern (tags replaced after finish) */
	char *unset;            /* [if-unset: text], or NULL */
	char *meta_src;
	struct scan_meta_op *meta;
	uint32_t meta_n;        /* at most SCAN_META_STACK operands pending at once */
	uint32_t meta_order;    /* evaluation order rank (metas only) */
	double score;
	char *describe;
	const char *file;       /* interned */
	uint32_t line;
};

#define SCAN_RULES_DIAG_MAX 200
#define SCAN_RE_NEST 64         /* a pattern's groups nested deeper: broken */
/* A pattern that replace tags expand past this: broken. Debian's largest,
 * __MY_MALWARE, is 225 KB (PCRE2 refuses it as too large); a tag that
 * names itself a few times would otherwise expand to gigabytes. */
#define SCAN_RE_EXPAND_MAX (1u << 20)
/* A meta's evaluation stack: a meta that would need more operands pending
 * at once is reported (file:line) and skipped. */
#define SCAN_META_STACK 64
#define SCAN_META_STACK_S "64"

struct scan_rules_stats {
	unsigned defined[SCAN_RT_COUNT];        /* rule lines seen, last definitions */
	unsigned active[SCAN_RT_COUNT];
	unsigned eval[SCAN_RT_COUNT];
	unsigned disabled[SCAN_RT_COUNT];       /* score 0 */
	unsigned broken[SCAN_RT_COUNT];
	unsigned exists;                        /* header exists: rules (in active) */
	unsigned negated;
	unsigned redefined;
	unsigned lines, files;
	unsigned scores, describes, tflags_lines;
	unsigned tflags_ignored;                /* tflags words other than multiple/maxhits */
	unsigned cond_skipped;                  /* lines inside a false if/ifplugin */
	unsigned lang_skipped, includes_skipped;
	unsigned replace_tags, replace_rules;
	unsigned skipped_directives;            /* unknown / unsupported directives */
	unsigned errors;                        /* diagnostics reported */
	unsigned orphan_attrs;                  /* score/describe/tflags for no rule */
	unsigned meta_unknown_refs;             /* meta names with no rule: read 0 */
	unsigned meta_cycles;
};

/* a skipped directive and how often (sorted, most frequent first) */
struct scan_rules_skip {
	char name[32];
	unsigned count;
};

struct scan_rules_priv;

struct pcre2_real_code_8;

struct scan_ruleset {
	struct scan_rule *rules;
	uint32_t n;
	uint32_t *meta_order;   /* indices of active metas, dependencies first */
	uint32_t n_meta;
	struct scan_rules_stats st;
	char **diag;            /* "file:line: reason" */
	unsigned n_diag;
	struct scan_rules_skip *skips;
	unsigned n_skips;
	char **tlds;            /* util_rb_tld: lower case, sorted after finish */
	uint32_t n_tlds;
	/* redirector_pattern: PCRE2 (pcre2_code), in file order; its group 1
	 * is the URI a redirector's URI leads to (scan.c: uri_canon) */
	struct pcre2_real_code_8 **redirs;
	uint32_t n_redirs;
	uint64_t hash;          /* of every active rule's compile input, after finish */
	bool finished;
	struct scan_rules_priv *priv;
};

struct scan_ruleset *scan_rules_new(void);
struct scan_ruleset *scan_rules_free(struct scan_ruleset *rs);

/* A directory loads its *.cf files in name order; a file loads itself. */
int scan_rules_load_path(struct scan_ruleset *rs, const char *path);
/* Parses text (len bytes, NUL not needed); fname labels diagnostics. */
int scan_rules_load_text(struct scan_ruleset *rs, const char *fname,
    const char *text, size_t len);
int scan_rules_finish(struct scan_ruleset *rs);

/*
 * Whether a host's last label (n bytes, any case) is a TLD the rules know
 * (util_rb_tld, as SpamAssassin's RegistryBoundaries): true when they name
 * none, or when the label is not ASCII (an IDN: not checked).
 */
bool scan_rules_tld_valid(const struct scan_ruleset *rs, const char *tld, size_t n);

/* Rule index by name, or -1. */
int scan_rules_find(const struct scan_ruleset *rs, const char *name);

/*
 * Evaluates every active meta rule in dependency order. hits[] has rs->n
 * entries: the hit count of each regex rule in, meta results (0/1) out.
 */
void scan_rules_meta_eval(const struct scan_ruleset *rs, uint32_t *hits);

/* Evaluates one compiled meta expression over hits[]. */
double scan_rules_meta_value(const struct scan_rule *r, const uint32_t *hits);

/* Bounds on a rule's final value: exact when lo == hi. */
struct scan_bound {
	double lo, hi;
};

/*
 * Lazy evaluation at a message's end: can a rule still to run move a rule
 * that counts in the verdict? The caller gives bounds on every non-meta
 * rule's final value through base() (exact for a decided rule; from its
 * hits so far to its most for one still to run). A rule is needed if it
 * counts, or an active meta reads it whose bounds (interval arithmetic
 * over its inputs' bounds) are not yet one value and that is needed in
 * turn. A rule that is not needed cannot change any rule that counts: it
 * may be left unrun. Only the metas between the rule and the rules that
 * count are evaluated, each once per round (scan_rules_lazy_begin: the
 * bounds changed). b and gen have rs->n entries, gen zeroed once; no
 * allocation.
 */
#define SCAN_LAZY_DEPTH 24       /* metas nested deeper: undecided, needed */

struct scan_lazy {
	const struct scan_ruleset *rs;
	struct scan_bound *b;
	uint32_t *gen;                  /* bit 0: b[i] is this round's; bit 1: need
	                                   known, bit 2 its value; the rest the round */
	uint32_t round;
	struct scan_bound (*base)(void *arg, uint32_t i);
	void *arg;
};

void scan_rules_lazy_begin(struct scan_lazy *z);
/* Bounds on active meta m's value */
struct scan_bound scan_rules_lazy_bound(struct scan_lazy *z, uint32_t m);
/* Can undecided rule i (not a meta) move a rule that counts? */
bool scan_rules_lazy_needed(struct scan_lazy *z, uint32_t i);

/* Does rule i count in a verdict (active, not a "__" sub-rule)? */
static inline bool
scan_rules_counts(const struct scan_ruleset *rs, uint32_t i)
{
	const struct scan_rule *r = &rs->rules[i];

	return r->state == SCAN_RS_ACTIVE && !(r->name[0] == '_' && r->name[1] == '_');
}

/*
 * Regex helpers shared with hs.c (pure functions).
 * scan_rules_literal(): the longest byte string that every match of re
 * (with SCAN_RE_* flags) must contain, compared caselessly; writes at most
 * cap bytes to out and returns its length (0: none found).
 */
size_t scan_rules_literal(const char *re, uint32_t flags, uint8_t *out, size_t cap);

/*
 * scan_rules_literal_set(): a set of byte strings, one of which every match
 * of re must contain (ASCII lower-cased: compare caselessly). One string per
 * top-level branch at least; small classes ([o0]) and short optional parts
 * are expanded. Each out[i] is a length byte then the bytes. Returns how
 * many (at most cap, at most SCAN_RULES_LSET_MAX), 0 when there is none.
 */
#define SCAN_RULES_LSET_MAX 32
#define SCAN_RULES_LSET_LEN 24
unsigned scan_rules_literal_set(const char *re, uint32_t flags,
    uint8_t (*out)[SCAN_RULES_LSET_LEN + 1], unsigned cap);

/*
 * The squeezed text of a byte string: every byte that is not an ASCII
 * letter or digit deleted, letters lower-cased (scan_rules_squeeze_byte:
 * the byte, or 0 when deleted). A per-byte map, so the image of a match is
 * a substring of the image of the text.
 * scan_rules_squeeze_set(): like scan_rules_literal_set, a set of strings
 * one of which the squeezed image of every match of re contains: the
 * obfuscation-proof spelling of rules such as /t[_\W]?r[_\W]?a[_\W]?m/
 * ("tram"), which have no literal in the text itself.
 * scan_rules_exact_set(): every string re can match, bytes as written, when
 * that is a small finite set and re has no assertion, look-around, inline
 * flag or /i (0 otherwise): its matches can be counted without a regex.
 */
static inline uint8_t
scan_rules_squeeze_byte(uint8_t b)
{
	if ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z'))
		return b;
	return b >= 'A' && b <= 'Z' ? (uint8_t)(b + 32) : 0;
}
unsigned scan_rules_squeeze_set(const char *re, uint32_t flags,
    uint8_t (*out)[SCAN_RULES_LSET_LEN + 1], unsigned cap);
unsigned scan_rules_exact_set(const char *re, uint32_t flags,
    uint8_t (*out)[SCAN_RULES_LSET_LEN + 1], unsigned cap);

/*
 * Relaxed forms, for gates. scan_rules_relax(): x is an expression wrapped in
 * "(?:" ... ")"; returns a superset of it (every match of x contains a match
 * of the result) that Hyperscan is more likely to take: look-arounds, \K and
 * \G dropped, atomic groups plain, possessive quantifiers greedy,
 * back-references any text, a bounded repeat wider than 5 unbounded
 * (but for {n} of a single atom), a repeat of the whole kept to at most
 * `copies` copies, and with drop_asserts ^ $ \b \B \A \z \Z dropped.
 * scan_rules_collapse(): every (?:...) group that spells a few short byte
 * strings (the look-alike letters of the FUZZY_* rules) becomes one class
 * per position, a superset again.
 * Both return a malloc'd string, or NULL (unknown constructs: conditionals,
 * recursion, /x; ENOMEM).
 */
char *scan_rules_relax(const char *x, bool drop_asserts, unsigned copies);
/*
 * The tight relaxed form: as scan_rules_relax, but a bounded repeat stays as
 * written up to {m,maxn} (maxn < 5 counts as 5). A closer superset (the
 * wide repeats of __YOU_WON_03, [-a-z\s]{4,40}, no longer span a whole
 * paragraph), for block-mode gates where bounded repeats are cheap enough.
 */
char *scan_rules_relax_n(const char *x, bool drop_asserts, unsigned copies, unsigned maxn);
/*
 * The open relaxed form: as scan_rules_relax, but every repeat {m,n}
 * (m < n, or of a group) becomes {m,}, however small n: a looser superset
 * that Hyperscan takes where nested bounded repeats make the others "too
 * large" (the <FF_ALL> alternatives of __FILL_THIS_FORM_PARTIAL).
 */
char *scan_rules_relax_open(const char *x, bool drop_asserts, unsigned copies);
/* Past the bracket expression that opens at s (a '['): just after its ']'
 * (escapes, a ']' first or after '^', and POSIX [:name:] classes inside do
 * not close it); NULL when the pattern ends first. */
const char *scan_rules_class_end(const char *s);
/* At s, "[:" inside a bracket expression: just past its ":]" when PCRE2
 * reads a POSIX class there (no unescaped ']' or "[:" before the ":]"),
 * else NULL, and the '[' is a byte of the class. e: the pattern's end. */
const char *scan_rules_posix_end(const char *s, const char *e);
/* At p, the '{' of an escape's argument (\x{..} \o{..} \p{..}): just past
 * its '}' when every byte between is from ok (NULL: any but the pattern's
 * syntax, "}()[]|\\") and there is one at least, else NULL. PCRE2 refuses
 * "\x{0se)"; a walk that ran on to the next '}' would take the groups
 * between for part of an escape. */
const char *scan_rules_brace_end(const char *p, const char *ok);
/* PCRE2's compile options for a rule's /i /m /s /x (SCAN_RE_*). */
uint32_t scan_rules_pcre2_options(uint32_t re_flags);
char *scan_rules_collapse(const char *x);
/*
 * scan_rules_collapse_plain(): as scan_rules_collapse, but a group's
 * strings that hold "&#" (HTML numeric entities, in the look-alike tags)
 * count for nothing; every group keeps the same number of positions, so the
 * atoms of the two forms correspond one to one (scan_gate_map_run). On a
 * text with no "&#" and no byte >= 0x80, a superset of x again.
 */
char *scan_rules_collapse_plain(const char *x);
/*
 * scan_rules_width_form(): as scan_rules_relax(x, true, .) but every
 * repeat kept as written, so its widest match is at least as wide as x's
 * (look-arounds and assertions consume nothing; a back-reference becomes
 * any text); NULL
 * also for \K and \G, where the match or the search start is not where a
 * search from a chosen offset would find it. For Hyperscan's max_width.
 */
char *scan_rules_width_form(const char *x);
/*
 * scan_rules_ascii_form(): x as it acts on text with no byte >= 0x80:
 * classes lose their high bytes; an atom that matches only such bytes goes
 * when its quantifier allows none, else becomes \x80 (which such text never
 * has). On ASCII text its matches are x's, at the same offsets; the
 * look-alike groups of the FUZZY_* forms shrink to their ASCII letters,
 * which Hyperscan scans about twice as fast. NULL on ENOMEM or a pattern
 * this does not read.
 */
char *scan_rules_ascii_form(const char *x);
/*
 * scan_rules_whole_repeat(): x (wrapped in "(?:" ... ")") is one group
 * repeated as a whole, (?:(E){lo,hi}): returns lo and sets *inner to the
 * group "(E)" (malloc'd); 0 otherwise (or ENOMEM). Every match is lo or
 * more consecutive matches of the group.
 */
unsigned scan_rules_whole_repeat(const char *x, char **inner);

const char *scan_rules_type_name(unsigned type);

#endif
