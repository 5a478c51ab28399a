/*
 * Tests for scan/rules.c: every directive kind, conditionals, ReplaceTags,
 * meta expressions (precedence, arithmetic), diagnostics with file:line,
 * required literals, and the real Debian rule files (counts).
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>

#include "scan/rules.h"

static struct scan_ruleset *
load(const char *text)
{
	struct scan_ruleset *rs = scan_rules_new();

	assert_non_null(rs);
	assert_int_equal(scan_rules_load_text(rs, "t.cf", text, strlen(text)), 0);
	assert_int_equal(scan_rules_finish(rs), 0);
	return rs;
}

static const struct scan_rule *
rule(const struct scan_ruleset *rs, const char *name)
{
	int i = scan_rules_find(rs, name);

	if (i < 0)
		fail_msg("rule %s: got none, want one", name);
	return &rs->rules[i];
}

/* Debian's rule files, finished; NULL (and a message) where they are not installed */
static struct scan_ruleset *
debian_rules(void)
{
	const char *dir = "/usr/share/spamassassin";

	if (access("/usr/share/spamassassin/72_active.cf", R_OK) != 0) {
		print_message("skipped the rule files: %s not installed\n", dir);
		return NULL;
	}
	struct scan_ruleset *rs = scan_rules_new();
	assert_non_null(rs);
	assert_int_equal(scan_rules_load_path(rs, dir), 0);
	assert_int_equal(scan_rules_finish(rs), 0);
	return rs;
}

static bool
has_diag(const struct scan_ruleset *rs, const char *needle)
{
	for (unsigned i = 0; i < rs->n_diag; i++)
		if (strstr(rs->diag[i], needle))
			return true;
	return false;
}

static void
test_directives(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(
	    "# comment\n"
	    "header H_SUBJ  Subject =~ /viagra/i\n"
	    "header H_NEG   Date !~ /^\\s*\\w+/ [if-unset: Wed, 1 Jan 2020]\n"
	    "header H_ALL   ALL =~ /^X-Foo: bar/m\n"
	    "header H_EX    exists:X-Mailer\n"
	    "header H_ADDR  From:addr =~ /\\@example\\.com$/\n"
	    "header H_NAME  From:name =~ /Bob/\n"
	    "header H_RAW   Subject:raw =~ /=\\?utf-8\\?/i\n"
	    "header H_EVAL  eval:check_for_missing_to_header()\n"
	    "body   B_1     /free money/i\n"
	    "body   B_M     m{cheap\\s+pills}i\n"
	    "rawbody R_1    /<font/i\n"
	    "full   F_1     /^Received:/m\n"
	    "uri    U_1     /^https?:\\/\\/bit\\.ly\\//\n"
	    "meta   M_1     B_1 && (H_SUBJ || !U_1)\n"
	    "score  B_1     2.5\n"
	    "score  B_M     1.0 2.0 3.0 4.0\n"
	    "score  U_1     0\n"
	    "describe B_1   Free money offer\n"
	    "tflags B_1     multiple maxhits=3 nice\n"
	    "lang de describe B_1 Geld\n"
	    "include other.cf\n"
	    "report_safe 1\n"
	    "required_score 5\n"
	    "body __B_SUB /sub/\n"
	    "score __B_SUB 3\n"
	    "body B_ESC /a\\#b/\n");
	const struct scan_rule *r = rule(rs, "H_SUBJ");
	assert_int_equal(r->type, SCAN_RT_HEADER);
	assert_string_equal(r->header, "subject");
	assert_string_equal(r->re, "viagra");
	assert_int_equal(r->re_flags, SCAN_RE_I);
	r = rule(rs, "H_NEG");
	assert_true(r->negate);
	assert_string_equal(r->unset, "Wed, 1 Jan 2020");
	assert_string_equal(rule(rs, "H_ALL")->header, "all");
	assert_int_equal(rule(rs, "H_ALL")->re_flags, SCAN_RE_M);
	assert_true(rule(rs, "H_EX")->exists);
	assert_string_equal(rule(rs, "H_EX")->header, "x-mailer");
	assert_int_equal(rule(rs, "H_ADDR")->hmod, SCAN_HMOD_ADDR);
	assert_int_equal(rule(rs, "H_NAME")->hmod, SCAN_HMOD_NAME);
	assert_int_equal(rule(rs, "H_RAW")->hmod, SCAN_HMOD_RAW);
	assert_int_equal(rule(rs, "H_EVAL")->state, SCAN_RS_EVAL);
	r = rule(rs, "B_1");
	assert_int_equal(r->type, SCAN_RT_BODY);
	assert_true(r->score == 2.5);
	assert_string_equal(r->describe, "Free money offer");
	assert_int_equal(r->tflags & SCAN_TF_MULTIPLE, SCAN_TF_MULTIPLE);
	assert_int_equal(r->maxhits, 3);
	assert_string_equal(rule(rs, "B_M")->re, "cheap\\s+pills");
	assert_true(rule(rs, "B_M")->score == 1.0);    /* set 0 of four */
	assert_int_equal(rule(rs, "R_1")->type, SCAN_RT_RAWBODY);
	assert_int_equal(rule(rs, "F_1")->type, SCAN_RT_FULL);
	assert_int_equal(rule(rs, "U_1")->type, SCAN_RT_URI);
	assert_int_equal(rule(rs, "U_1")->state, SCAN_RS_DISABLED);
	assert_int_equal(rule(rs, "M_1")->type, SCAN_RT_META);
	assert_true(rule(rs, "H_SUBJ")->score == 1.0);         /* default */
	assert_true(rule(rs, "__B_SUB")->score == 0);          /* "__" never scores */
	assert_int_equal(rule(rs, "__B_SUB")->state, SCAN_RS_ACTIVE);
	assert_string_equal(rule(rs, "B_ESC")->re, "a#b");
	assert_int_equal(rs->st.lang_skipped, 1);
	assert_int_equal(rs->st.includes_skipped, 1);
	assert_true(has_diag(rs, "t.cf:22: include"));
	assert_int_equal(rs->st.skipped_directives, 2);
	assert_int_equal(rs->st.tflags_ignored, 1);
	assert_int_equal(rs->st.defined[SCAN_RT_HEADER], 8);
	assert_int_equal(rs->st.eval[SCAN_RT_HEADER], 1);
	assert_int_equal(rs->st.active[SCAN_RT_BODY], 4);
	assert_int_equal(rs->st.disabled[SCAN_RT_URI], 1);
	scan_rules_free(rs);
}

static void
test_conditionals(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(
	    "ifplugin Mail::SpamAssassin::Plugin::DNSEval\n"
	    "body NET_1 /x1/\n"
	    "else\n"
	    "body NOT_NET /x2/\n"
	    "endif\n"
	    "ifplugin Mail::SpamAssassin::Plugin::ReplaceTags\n"
	    "  if (version >= 3.004000)\n"
	    "    body V34 /x3/\n"
	    "  endif\n"
	    "  if (version >= 9.0)\n"
	    "    body V9 /x4/\n"
	    "  endif\n"
	    "  if can(Mail::SpamAssassin::Conf::feature_bug6558_free)\n"
	    "    body CAN1 /x5/\n"
	    "  endif\n"
	    "  if can(Mail::SpamAssassin::Conf::feature_capture_rules)\n"
	    "    body CAN2 /x6/\n"
	    "  endif\n"
	    "  if !plugin(Mail::SpamAssassin::Plugin::Bayes) && (version >= 3.0)\n"
	    "    body NOBAYES /x7/\n"
	    "  endif\n"
	    "endif\n"
	    "if nonsense(\n"
	    "body NONSENSE /x8/\n"
	    "endif\n"
	    "endif\n");
	assert_int_equal(scan_rules_find(rs, "NET_1"), -1);
	assert_true(scan_rules_find(rs, "NOT_NET") >= 0);
	assert_true(scan_rules_find(rs, "V34") >= 0);
	assert_int_equal(scan_rules_find(rs, "V9"), -1);
	assert_true(scan_rules_find(rs, "CAN1") >= 0);
	assert_int_equal(scan_rules_find(rs, "CAN2"), -1);
	assert_true(scan_rules_find(rs, "NOBAYES") >= 0);
	assert_int_equal(scan_rules_find(rs, "NONSENSE"), -1);
	assert_true(has_diag(rs, "t.cf:23: if: cannot evaluate"));
	assert_true(has_diag(rs, "t.cf:26: endif without if"));
	assert_int_equal(rs->st.cond_skipped, 4);
	scan_rules_free(rs);

	/* nested 64 deep a condition evaluates; a million deep it is
	 * reported (its start only) and false, not a stack overflow */
	enum { DEEP = 1000000 };
	char *text = malloc(2 * DEEP + 256);
	assert_non_null(text);
	for (int d = 0; d < 2; d++) {
		int k = d ? DEEP : 63;
		size_t n = (size_t)sprintf(text, "if ");
		memset(text + n, '(', (size_t)k);
		n += (size_t)k;
		n += (size_t)sprintf(text + n, "version >= 3.0");
		memset(text + n, ')', (size_t)k);
		n += (size_t)k;
		sprintf(text + n, "\nbody DEEP /x9/\nendif\n");
		rs = load(text);
		if (d == 0) {
			assert_true(scan_rules_find(rs, "DEEP") >= 0);
		} else {
			assert_int_equal(scan_rules_find(rs, "DEEP"), -1);
			assert_true(has_diag(rs, "t.cf:1: if: cannot evaluate \"((((("));
			assert_true(has_diag(rs, "(((...\", taken as false"));
		}
		scan_rules_free(rs);
	}
	free(text);
}

static void
test_errors(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(
	    "body GOOD /ok/\n"
	    "body BAD1 /unterminated\n"
	    "body BAD2 /x/q\n"
	    "header BAD3 Subject ~ /x/\n"
	    "header BAD4 Subject:frob =~ /x/\n"
	    "meta BAD5 GOOD &&\n"
	    "meta BAD6 (GOOD || GOOD\n"
	    "meta BAD7 GOOD GOOD\n"
	    "meta CYC1 CYC2\n"
	    "meta CYC2 CYC1 || GOOD\n"
	    "score GOOD abc\n"
	    "body\n");
	assert_true(has_diag(rs, "t.cf:2: BAD1: unterminated regex"));
	assert_true(has_diag(rs, "t.cf:3: BAD2: unsupported regex flag"));
	assert_true(has_diag(rs, "t.cf:4: BAD3: expected =~ or !~"));
	assert_true(has_diag(rs, "t.cf:5: BAD4: unsupported header modifier"));
	assert_true(has_diag(rs, "t.cf:6: meta BAD5"));
	assert_true(has_diag(rs, "t.cf:7: meta BAD6: unbalanced ("));
	assert_true(has_diag(rs, "t.cf:8: meta BAD7: operator expected"));
	assert_true(has_diag(rs, "circular dependency"));
	assert_true(has_diag(rs, "t.cf:11: score GOOD: not a number"));
	assert_true(has_diag(rs, "t.cf:12: body: missing name or pattern"));
	assert_int_equal(rule(rs, "GOOD")->state, SCAN_RS_ACTIVE);
	assert_int_equal(rule(rs, "BAD5")->state, SCAN_RS_BROKEN);
	assert_int_equal(rs->st.meta_cycles, 1);
	assert_int_equal(rs->st.broken[SCAN_RT_BODY], 2);
	scan_rules_free(rs);

	/* groups nested SCAN_RE_NEST deep load; deeper (here 200,000: the
	 * pattern walks took minutes, or the stack) are reported, skipped */
	enum { DEEP = 200000 };
	char *text = malloc(4 * DEEP + 256);
	assert_non_null(text);
	for (int d = 0; d < 2; d++) {
		int k = d ? DEEP : SCAN_RE_NEST, n = sprintf(text, "body NEST /");
		for (int j = 0; j < k; j++)
			n += sprintf(text + n, "(?:");
		n += sprintf(text + n, "a[(]b");
		for (int j = 0; j < k; j++)
			n += sprintf(text + n, ")");
		sprintf(text + n, "/\n");
		rs = load(text);
		assert_int_equal(rule(rs, "NEST")->state, d ? SCAN_RS_BROKEN : SCAN_RS_ACTIVE);
		assert_int_equal(has_diag(rs, "t.cf:1: NEST: groups nested 200000 deep (more than 64)"),
		    d == 1);
		scan_rules_free(rs);
	}
	free(text);
}

/*
 * A meta's evaluation needs at most SCAN_META_STACK operands pending at
 * once (a fixed stack, no heap while scoring): "1+(1+(1+...A))" nested
 * that deep evaluates; one level more is reported and skipped.
 */
static void
test_meta_depth(void **state)
{
	(void)state;
	char text[4096];
	for (int d = SCAN_META_STACK; d <= SCAN_META_STACK + 1; d++) {
		size_t n = (size_t)snprintf(text, sizeof(text), "body A /a/\nmeta M ");
		for (int k = 1; k < d; k++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "1+(");
		n += (size_t)snprintf(text + n, sizeof(text) - n, "A");
		for (int k = 1; k < d; k++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, ")");
		snprintf(text + n, sizeof(text) - n, "\n");
		struct scan_ruleset *rs = load(text);
		if (d == SCAN_META_STACK) {
			assert_int_equal(rule(rs, "M")->state, SCAN_RS_ACTIVE);
			uint32_t hits[8] = {0};
			hits[scan_rules_find(rs, "A")] = 1;
			assert_true(scan_rules_meta_value(rule(rs, "M"), hits) ==
			    (double)SCAN_META_STACK);
		} else {
			assert_true(has_diag(rs, "t.cf:2: meta M: nested too deep"));
			assert_int_not_equal(rule(rs, "M")->state, SCAN_RS_ACTIVE);
		}
		scan_rules_free(rs);
	}
}

/*
 * A chain of metas each reading the next, defined top first: ordering them
 * walks 300,000 levels deep, which a recursive walk did on the stack (and
 * overflowed it). It loads, every meta ordered after what it reads.
 */
static void
test_meta_chain(void **state)
{
	(void)state;
	enum { N = 300000 };
	size_t cap = (size_t)N * 40, n = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	n += (size_t)snprintf(text + n, cap - n, "meta TOP __M%d\nscore TOP 1\n", N - 1);
	for (int k = N - 1; k > 0; k--)
		n += (size_t)snprintf(text + n, cap - n, "meta __M%d __M%d\n", k, k - 1);
	snprintf(text + n, cap - n, "meta __M0 __R\nbody __R /r/\n");
	struct scan_ruleset *rs = load(text);
	free(text);
	assert_int_equal(rs->n_meta, N + 1);
	assert_int_equal(rule(rs, "TOP")->state, SCAN_RS_ACTIVE);
	assert_int_equal(rs->meta_order[rs->n_meta - 1], (uint32_t)scan_rules_find(rs, "TOP"));
	uint32_t *hits = calloc(rs->n + 1, sizeof(*hits));
	assert_non_null(hits);
	hits[scan_rules_find(rs, "__R")] = 1;
	scan_rules_meta_eval(rs, hits);
	assert_int_equal(hits[scan_rules_find(rs, "TOP")], 1);
	free(hits);
	scan_rules_free(rs);
}

/* meta value with hits for rules A, B, C */
static double
meta_with(const char *expr, uint32_t a, uint32_t b, uint32_t c)
{
	char text[512];
	snprintf(text, sizeof(text), "body A /a/\nbody B /b/\nbody C /c/\nmeta M %s\n", expr);
	struct scan_ruleset *rs = load(text);
	uint32_t hits[8] = {0};
	hits[scan_rules_find(rs, "A")] = a;
	hits[scan_rules_find(rs, "B")] = b;
	hits[scan_rules_find(rs, "C")] = c;
	const struct scan_rule *m = rule(rs, "M");
	assert_int_equal(m->state, SCAN_RS_ACTIVE);
	double v = scan_rules_meta_value(m, hits);
	scan_rules_free(rs);
	return v;
}

static void
test_meta(void **state)
{
	(void)state;
	/* && binds tighter than || */
	assert_true(meta_with("A || B && C", 1, 0, 0) != 0);
	assert_true(meta_with("A || B && C", 0, 1, 0) == 0);
	assert_true(meta_with("(A || B) && C", 1, 0, 0) == 0);
	/* ! binds tightest */
	assert_true(meta_with("!A && B", 0, 1, 0) != 0);
	assert_true(meta_with("!(A && B)", 1, 1, 0) == 0);
	/* arithmetic before comparison before logic */
	assert_true(meta_with("A + B + C > 1", 1, 1, 0) != 0);
	assert_true(meta_with("A + B + C > 1", 1, 0, 0) == 0);
	assert_true(meta_with("A * 2 + B >= 3", 1, 1, 0) != 0);
	assert_true(meta_with("A * 2 + B >= 3", 1, 0, 0) == 0);
	assert_true(meta_with("A - B == 0 && C", 1, 1, 1) != 0);
	assert_true(meta_with("A + B < 2", 3, 0, 0) == 0);    /* multiple hits count */
	assert_true(meta_with("(A + B + C) / 3 >= 1", 1, 1, 1) != 0);
	assert_true(meta_with("UNKNOWN || A", 0, 0, 0) == 0);   /* unknown names read 0 */
	assert_true(meta_with("UNKNOWN || A", 1, 0, 0) != 0);
	assert_true(meta_with("-A + 2 > 1", 0, 0, 0) != 0);

	/* dependency order: M2 uses M1 defined after it */
	struct scan_ruleset *rs = load("meta M2 M1 && A\nmeta M1 B || C\nbody A /a/\nbody B /b/\nbody C /c/\n");
	uint32_t hits[8] = {0};
	hits[scan_rules_find(rs, "A")] = 1;
	hits[scan_rules_find(rs, "C")] = 1;
	scan_rules_meta_eval(rs, hits);
	assert_int_equal(hits[scan_rules_find(rs, "M1")], 1);
	assert_int_equal(hits[scan_rules_find(rs, "M2")], 1);
	scan_rules_free(rs);
}

/* scan_rules_meta_eval evaluates only the metas whose inputs moved from
 * rest: on random hits, every meta as the plain evaluation in order gives */
static void
meta_same(struct scan_ruleset *rs, unsigned rounds)
{
	uint32_t *a = calloc(rs->n + 1, sizeof(*a)), *b = calloc(rs->n + 1, sizeof(*b));
	unsigned seed = 7, evaluated = 0;
	assert_non_null(a);
	assert_non_null(b);
	for (unsigned round = 0; round < rounds; round++) {
		unsigned per_mille = (unsigned[]){0, 5, 20, 100, 500}[round % 5];
		for (uint32_t i = 0; i < rs->n; i++) {
			const struct scan_rule *r = &rs->rules[i];
			a[i] = r->type != SCAN_RT_META && (unsigned)rand_r(&seed) % 1000 < per_mille ?
			    1 + (unsigned)rand_r(&seed) % 3 : 0;
			if (r->type == SCAN_RT_META && r->state == SCAN_RS_ACTIVE)
				a[i] = (unsigned)rand_r(&seed) % 2;   /* overwritten by both */
		}
		memcpy(b, a, (rs->n + 1) * sizeof(*a));
		scan_rules_meta_eval(rs, a);
		for (uint32_t k = 0; k < rs->n_meta; k++) {
			uint32_t i = rs->meta_order[k];
			b[i] = scan_rules_meta_value(&rs->rules[i], b) != 0;
		}
		for (uint32_t i = 0; i < rs->n; i++)
			if (a[i] != b[i])
				fail_msg("round %u: %s is %u, in order %u", round, rs->rules[i].name, a[i],
				    b[i]);
		evaluated += rs->n_meta;
	}
	assert_true(evaluated > 0);
	free(a);
	free(b);
}

static void
test_meta_rest(void **state)
{
	(void)state;
	/* at rest: N1 (!A) is 1, N2 reads it; M3 reads a meta that moved */
	struct scan_ruleset *rs = load("body A /a/\nbody B /b/\nbody C /c/\nmeta N1 !A\n"
	    "meta N2 N1 && !B\nmeta M1 A || B\nmeta M2 M1 + C > 1\nmeta M3 (M2 || N2) && !C\n"
	    "meta M4 UNKNOWN + A * 2 >= 2\nmeta M5 M4 - N1 == 1\n");
	uint32_t hits[16] = {0};
	scan_rules_meta_eval(rs, hits);
	assert_int_equal(hits[scan_rules_find(rs, "N1")], 1);
	assert_int_equal(hits[scan_rules_find(rs, "N2")], 1);
	assert_int_equal(hits[scan_rules_find(rs, "M3")], 1);
	assert_int_equal(hits[scan_rules_find(rs, "M5")], 0);
	memset(hits, 0, sizeof(hits));
	hits[scan_rules_find(rs, "A")] = 1;
	hits[scan_rules_find(rs, "C")] = 1;
	scan_rules_meta_eval(rs, hits);
	assert_int_equal(hits[scan_rules_find(rs, "N1")], 0);
	assert_int_equal(hits[scan_rules_find(rs, "N2")], 0);
	assert_int_equal(hits[scan_rules_find(rs, "M2")], 1);
	assert_int_equal(hits[scan_rules_find(rs, "M3")], 0);
	assert_int_equal(hits[scan_rules_find(rs, "M5")], 1);
	meta_same(rs, 500);
	scan_rules_free(rs);

	if (!(rs = debian_rules()))
		return;
	meta_same(rs, 1000);
	scan_rules_free(rs);
}

/* lazy evaluation over fixed bounds on the non-meta rules */
struct lz_test {
	struct scan_lazy z;
	struct scan_bound *base;
};

static struct scan_bound
lz_base(void *arg, uint32_t i)
{
	return ((struct lz_test *)arg)->base[i];
}

static void
lz_up(struct lz_test *t, const struct scan_ruleset *rs)
{
	memset(t, 0, sizeof(*t));
	t->z.rs = rs;
	t->z.b = calloc(rs->n + 1, sizeof(*t->z.b));
	t->z.gen = calloc(rs->n + 1, sizeof(*t->z.gen));
	t->base = calloc(rs->n + 1, sizeof(*t->base));
	assert_true(t->z.b && t->z.gen && t->base);
	t->z.base = lz_base;
	t->z.arg = t;
}

static void
lz_down(struct lz_test *t)
{
	free(t->z.b);
	free(t->z.gen);
	free(t->base);
}

static bool
lz_needed(struct lz_test *t, const struct scan_ruleset *rs, const char *name)
{
	int i = scan_rules_find(rs, name);
	assert_true(i >= 0);
	return scan_rules_lazy_needed(&t->z, (uint32_t)i);
}

static struct scan_bound
lz_bound(struct lz_test *t, const struct scan_ruleset *rs, const char *name)
{
	int i = scan_rules_find(rs, name);
	assert_true(i >= 0);
	return scan_rules_lazy_bound(&t->z, (uint32_t)i);
}

/*
 * Lazy evaluation is sound: on random hits with random undecided rules,
 * for random final values within the bounds, every meta's value is within
 * its bounds, and every rule that counts reads the same whether the
 * undecided rules that are not needed take their final values or stay
 * where they were (where lazy evaluation leaves them). Returns how many
 * undecided rules were not needed (the test must leave some).
 */
static unsigned
need_sound(struct scan_ruleset *rs, unsigned rounds)
{
	uint32_t n = rs->n, *full = calloc(n + 1, sizeof(*full)), *lazy = calloc(n + 1, sizeof(*lazy));
	uint8_t *need = calloc(n + 1, 1), *und = calloc(n + 1, 1);
	unsigned seed = 11, skipped = 0;
	struct lz_test t;

	assert_true(full && lazy && need && und);
	lz_up(&t, rs);
	for (unsigned round = 0; round < rounds; round++) {
		unsigned hit_pm = (unsigned[]){0, 5, 20, 100, 500}[round % 5];
		unsigned und_pm = (unsigned[]){50, 200, 500, 900}[round % 4];
		scan_rules_lazy_begin(&t.z);
		for (uint32_t i = 0; i < n; i++) {
			und[i] = 0;
			if (rs->rules[i].type == SCAN_RT_META)
				continue;
			double v = (unsigned)rand_r(&seed) % 1000 < hit_pm ? 1 + rand_r(&seed) % 3 : 0;
			und[i] = (unsigned)rand_r(&seed) % 1000 < und_pm;
			t.base[i] = (struct scan_bound){v, und[i] ? v + 2 : v};
		}
		for (uint32_t i = 0; i < n; i++)
			need[i] = und[i] && scan_rules_lazy_needed(&t.z, i);
		for (int trial = 0; trial < 4; trial++) {
			for (uint32_t i = 0; i < n; i++) {
				if (rs->rules[i].type == SCAN_RT_META)
					continue;
				full[i] = (uint32_t)t.base[i].lo + (und[i] ? (unsigned)rand_r(&seed) % 3 : 0);
				lazy[i] = und[i] && !need[i] ? (uint32_t)t.base[i].lo : full[i];
				skipped += trial == 0 && und[i] && !need[i];
			}
			for (uint32_t k = 0; k < rs->n_meta; k++) {
				uint32_t i = rs->meta_order[k];
				full[i] = scan_rules_meta_value(&rs->rules[i], full) != 0;
				lazy[i] = scan_rules_meta_value(&rs->rules[i], lazy) != 0;
				struct scan_bound b = scan_rules_lazy_bound(&t.z, i);
				if (full[i] < b.lo || full[i] > b.hi)
					fail_msg("round %u: %s is %u, out of its bounds %g..%g", round,
					    rs->rules[i].name, full[i], b.lo, b.hi);
			}
			for (uint32_t i = 0; i < n; i++)
				if (scan_rules_counts(rs, i) && full[i] != lazy[i])
					fail_msg("round %u: %s is %u, %u with the rules it does not need "
					    "left unrun", round, rs->rules[i].name, full[i], lazy[i]);
		}
	}
	lz_down(&t);
	free(full);
	free(lazy);
	free(need);
	free(und);
	return skipped;
}

static void
test_meta_need(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load("body __A /a/\nbody __B /b/\nbody __C /c/\nbody D /d/\n"
	    "meta M1 __A && !__B\nmeta __S (__A + __B + __C) >= 3\nmeta M2 __S || D\n"
	    "meta M3 __C * 2 - __B > 1\nmeta __N !M1\nmeta M4 __N == 0\n"
	    "score M1 1\nscore M2 1\nscore M3 1\nscore M4 1\nscore D 1\n");
	uint32_t bb = (uint32_t)scan_rules_find(rs, "__B"), c = (uint32_t)scan_rules_find(rs, "__C");
	uint32_t a = (uint32_t)scan_rules_find(rs, "__A");
	struct lz_test t;
	struct scan_bound x;

	lz_up(&t, rs);
	/* __A decided 0: M1 is 0 and __S cannot reach 3, whatever __B and __C;
	 * M3 still reads them */
	t.base[bb] = t.base[c] = (struct scan_bound){0, 1};
	scan_rules_lazy_begin(&t.z);
	assert_true(lz_bound(&t, rs, "M1").hi == 0);
	assert_true(lz_bound(&t, rs, "__S").hi == 0);
	x = lz_bound(&t, rs, "M3");
	assert_true(x.lo == 0 && x.hi == 1);
	assert_true(lz_bound(&t, rs, "M4").hi == 0);
	assert_true(lz_needed(&t, rs, "__B"));
	assert_true(lz_needed(&t, rs, "__C"));
	assert_true(lz_needed(&t, rs, "D"));      /* counts itself */
	/* __C decided 0 too: M3 cannot pass 1, and nothing needs __B */
	t.base[c] = (struct scan_bound){0, 0};
	scan_rules_lazy_begin(&t.z);
	assert_false(lz_needed(&t, rs, "__B"));
	/* __A 1: M1 needs __B, and through __N so does M4 */
	t.base[a] = (struct scan_bound){1, 1};
	scan_rules_lazy_begin(&t.z);
	assert_true(lz_needed(&t, rs, "__B"));
	x = lz_bound(&t, rs, "M4");
	assert_true(x.lo == 0 && x.hi == 1);
	lz_down(&t);
	assert_true(need_sound(rs, 400) > 0);
	scan_rules_free(rs);

	/* metas nested far deeper than SCAN_LAZY_DEPTH (10000 levels: a
	 * recursion that deep overflows an 8 MB stack): the top one undecided,
	 * the bottom rule needed */
	static char deep[320 * 1024];
	size_t n = (size_t)snprintf(deep, sizeof(deep), "body __R /r/\nmeta __M0 __R\n");
	for (int k = 1; k < 10000; k++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, "meta __M%d __M%d\n", k, k - 1);
	snprintf(deep + n, sizeof(deep) - n, "meta TOP __M9999\nscore TOP 1\n");
	rs = load(deep);
	lz_up(&t, rs);
	t.base[scan_rules_find(rs, "__R")] = (struct scan_bound){0, 1};
	scan_rules_lazy_begin(&t.z);
	x = lz_bound(&t, rs, "TOP");   /* down first: nothing known on the way */
	assert_true(x.lo == 0 && x.hi == 1);
	scan_rules_lazy_begin(&t.z);
	assert_true(lz_needed(&t, rs, "__R"));  /* and up */
	lz_down(&t);
	need_sound(rs, 20);
	scan_rules_free(rs);

	if (!(rs = debian_rules()))
		return;
	unsigned skipped = need_sound(rs, 200);
	print_message("Debian rules: %u undecided rules not needed over 200 rounds\n", skipped);
	assert_true(skipped > 1000);
	scan_rules_free(rs);
}

static void
test_replace_tags(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(
	    "replace_tag A (?:a|4)\n"
	    "replace_tag B b\n"
	    "replace_tag AB <A><B>\n"
	    "replace_inter W1 \\W?\n"
	    "replace_post P2 {1,2}\n"
	    "body T1 /<inter W1><post P2><A><B>x/i\n"
	    "body T2 /<AB>/\n"
	    "body T3 /<A>/\n"
	    "body T4 /<post NOPE><A>/\n"
	    "replace_rules T1 T2 T4\n");
	assert_string_equal(rule(rs, "T1")->re, "(?:(?:a|4)){1,2}\\W?(?:b){1,2}x");
	assert_string_equal(rule(rs, "T2")->re, "(?:(?:(?:a|4))(?:b))");
	assert_string_equal(rule(rs, "T3")->re, "<A>");      /* not in replace_rules */
	assert_int_equal(rule(rs, "T4")->state, SCAN_RS_BROKEN);
	assert_true(has_diag(rs, "unknown replace tag <post NOPE>"));
	scan_rules_free(rs);

	/* a tag that names itself 20 times would expand to 20^8 copies
	 * (gigabytes, minutes): cut at SCAN_RE_EXPAND_MAX, the rule broken,
	 * said so; a self-naming tag that stays small still expands */
	rs = load("replace_tag S <S><S><S><S><S><S><S><S><S><S><S><S><S><S><S><S><S><S><S><S>x\n"
	    "replace_tag T (?:<T>|t)\n"
	    "body BOMB /<S>/\n"
	    "body SMALL /<T>/\n"
	    "replace_rules BOMB SMALL\n");
	assert_int_equal(rule(rs, "BOMB")->state, SCAN_RS_BROKEN);
	assert_true(has_diag(rs, "BOMB: replace tags expand the pattern past 1048576 bytes"));
	assert_int_equal(rule(rs, "SMALL")->state, SCAN_RS_ACTIVE);
	assert_non_null(strstr(rule(rs, "SMALL")->re, "|t)"));
	scan_rules_free(rs);
}

static void
expect_lit(const char *re, uint32_t flags, const char *want)
{
	uint8_t out[256];
	size_t n = scan_rules_literal(re, flags, out, sizeof(out));
	out[n] = '\0';
	if (strcmp((char *)out, want))
		fail_msg("literal of /%s/: got \"%s\", want \"%s\"", re, out, want);
}

static void
test_literal(void **state)
{
	(void)state;
	expect_lit("foo(?!bar)bazqux", 0, "foobazqux");   /* look-arounds take no bytes */
	expect_lit("\\bviagra\\b", SCAN_RE_I, "viagra");
	expect_lit("(?:abc|def)ghij", 0, "ghij");
	expect_lit("abc|defgh", 0, "");
	expect_lit("x?yz\\.com", 0, "yz.com");
	expect_lit("(pills)+ now", 0, "pills");
	expect_lit("a.b.c", 0, "a");
	expect_lit("\\x41\\x42C[d]", 0, "ABC");
	expect_lit("(?i)click here", 0, "click here");
	expect_lit("(\\w+)\\s+\\1 double", 0, " double");
	expect_lit("free  money # note", SCAN_RE_X, "freemoney");
	expect_lit("(?<=x)abcd", 0, "abcd");
	expect_lit("ab{2}cd", 0, "ab");
	expect_lit("q{0,3}rstu", 0, "rstu");
	/* /x: a quantifier after whitespace or a comment still applies to the
	 * atom before ("d *" is "d*"; found by fuzz_rules' soundness check) */
	expect_lit("abc d *", SCAN_RE_X, "abc");
	expect_lit("free4sa~ +", SCAN_RE_X, "free4sa~");
	expect_lit("abcd # note\n ?wxyz", SCAN_RE_X, "wxyz");
	/* PCRE2's /x skips NEL (0x85) as white space, in 8-bit patterns too */
	expect_lit("wxyz\x85#c", SCAN_RE_X, "wxyz");
	expect_lit("wxyz\x85*", SCAN_RE_X, "wxy");
	/* verbs and non-atomic look-arounds: no literal (abc(*ACCEPT)defgh
	 * matches "abc") */
	expect_lit("abc(*ACCEPT)defgh", 0, "");
	expect_lit("(?*<=h)wxyz", 0, "");
}

typedef unsigned set_fn(const char *, uint32_t, uint8_t (*)[SCAN_RULES_LSET_LEN + 1], unsigned);

/* want: the strings of the set, sorted, joined with '|' ("" = no set) */
static void
expect_set_of(set_fn *fn, const char *re, uint32_t flags, const char *want)
{
	uint8_t out[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	char buf[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
	char *v[SCAN_RULES_LSET_MAX];
	char got[2048] = "";
	unsigned n = fn(re, flags, out, SCAN_RULES_LSET_MAX);

	for (unsigned i = 0; i < n; i++) {
		memcpy(buf[i], &out[i][1], out[i][0]);
		buf[i][out[i][0]] = '\0';
		v[i] = buf[i];
	}
	for (unsigned i = 1; i < n; i++)
		for (unsigned j = i; j > 0 && strcmp(v[j], v[j - 1]) < 0; j--) {
			char *t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	for (unsigned i = 0; i < n; i++) {
		strcat(got, i ? "|" : "");
		strcat(got, v[i]);
	}
	if (strcmp(got, want))
		fail_msg("set of /%s/: got \"%s\", want \"%s\"", re, got, want);
}

static void
expect_set(const char *re, uint32_t flags, const char *want)
{
	expect_set_of(scan_rules_literal_set, re, flags, want);
}

static void
test_literal_set(void **state)
{
	(void)state;
	expect_set("abc|defgh", 0, "abc|defgh");
	expect_set("foo(?!bar)Bazqux", 0, "foobazqux");
	expect_set("(?:cheap|low) pri[cs]es", 0, "cheap prices|cheap prises|low prices|low prises");
	expect_set("\\b(?:viagra|cialis\\d+)\\b", SCAN_RE_I, "cialis|viagra");
	expect_set("x?yz\\.com", 0, "xyz.com|yz.com");
	expect_set("(?:a|b.*)cdef", 0, "cdef");
	expect_set("a.*b|cdef", 0, "a|cdef");             /* every branch gives one */
	expect_set("a*|b", 0, "");                          /* a branch with none: no set */
	expect_set("(?:ab)+xy", 0, "abxy");
	expect_set("(?:foo|bar){2}", 0, "barbar|barfoo|foobar|foofoo");
	expect_set("[^a]bcd", 0, "bcd");
	expect_set("(?<name>hello) [w0]orld", 0, "hello 0orld|hello world");
	expect_set("ab)cd", 0, "");                         /* unbalanced: give up */
	/* the branches' best sets overflow (8 x 4 + 2 strings): each branch
	 * gives its fewest-strings set instead, one string here */
	expect_set("(?:q[ab][cd][ef]stuv|w[gh][ij][kl]mnop|r[ab][cd][ef]wxyz|zz[12][34][56]abc|hello[xy])",
	    0, "abc|hello|mnop|stuv|wxyz");
	/* ... but not when they fit: the longer strings stay */
	expect_set("(?:q[ab][cd][ef]stuv|hello[xy])", 0,
	    "hellox|helloy|qacestuv|qacfstuv|qadestuv|qadfstuv|qbcestuv|qbcfstuv|qbdestuv|qbdfstuv");
	/* SpamAssassin's __HUSH_HUSH: 36 spellings; no set before, 12 strings now */
	expect_set("\\b(?:confiden[tc]i[ae]l(?:\\b|ity\\b|it(?:=E9|[\\xe9]|[\\xc3][\\xa9]))|private\\b|"
	    "secr[e\\xe8](?:te?|cy)\\b|sensitive\\b|concealed\\b|obscured?\\b|discre(?:et|tion)\\b|"
	    "very\\sdiscrete|top\\ssecret|vertraulich(?:en)?\\b|geheim\\b|"
	    "priv(?:e|=E9|[\\xe9]|[\\xc3][\\xa9]))", SCAN_RE_I,
	    "concealed|confiden|discre|discrete|geheim|obscure|priv|private|secr|secret|sensitive|vertraulich");
	/* "[:" with no ":]" before the class's ']' is two bytes of the class
	 * (PCRE2), not a POSIX name running on through the pattern: the empty
	 * last branch is seen, so there is no set */
	expect_set("abc|xy[a[:]q|", 0, "");
	expect_set("abc|xy[:\\]h|[e]q|", 0, "");
	expect_set("abcd|xy[[:alpha:]q]z", 0, "abcd|xy");
	expect_set("abc(*ACCEPT)defgh", 0, "");
	expect_set("(?*<=h)wxyz", 0, "");
	expect_set_of(scan_rules_squeeze_set, "(*pla:ab)cdef", 0, "");
	expect_set_of(scan_rules_exact_set, "ab(*ACCEPT)c", 0, "");
	/* /x: whitespace between an atom and its quantifier */
	expect_set("abc d *", SCAN_RE_X, "abc");
	expect_set_of(scan_rules_squeeze_set, "abc d *", SCAN_RE_X, "abc");
	/* a branch with a short string only: no usable fallback, as before */
	expect_set("(?:x[yz]|\\d\\dfoo)", 0, "foo|xy|xz");
}

static void
test_squeeze_set(void **state)
{
	(void)state;
	/* separators squeeze to nothing, whatever their repeat */
	expect_set_of(scan_rules_squeeze_set, "t[_\\W]?r[_\\W]{0,3}[a4@]\\s*m", SCAN_RE_I,
	    "tr4m|tram|trm");
	expect_set_of(scan_rules_squeeze_set, "(?:\\\\\\/|V)[_\\W]{0,3}iagra", SCAN_RE_I,
	    "iagra|viagra");
	expect_set_of(scan_rules_squeeze_set, "hello, world!", 0, "helloworld");
	expect_set_of(scan_rules_squeeze_set, "\\bfoo\\W+bar\\b", 0, "foobar");
	expect_set_of(scan_rules_squeeze_set, "[_\\W]+", 0, "");
	expect_set_of(scan_rules_squeeze_set, "a\\w+bcde", 0, "bcde");  /* \\w: letters: the run ends */
	expect_set_of(scan_rules_squeeze_set, "[[:punct:]]*abc[[:space:]]def", 0, "abcdef");
	expect_set_of(scan_rules_squeeze_set, "c[^a-zA-Z0-9]?a[^A-Za-z0-9]?t", 0, "cat");
	expect_set_of(scan_rules_squeeze_set, "c[^a-z0-9]?at", 0, "at"); /* A-Z are in it */
	/* a negated class may hold letters: not a separator */
	expect_set_of(scan_rules_squeeze_set, "ab[^x]cd", 0, "ab");
}

static void
test_exact_set(void **state)
{
	(void)state;
	expect_set_of(scan_rules_exact_set, "e", 0, "e");
	expect_set_of(scan_rules_exact_set, "(?:E|\\xc3[\\xa8\\xa9])", 0, "E|\xc3\xa8|\xc3\xa9");
	expect_set_of(scan_rules_exact_set, "\\be", 0, "");      /* an assertion */
	expect_set_of(scan_rules_exact_set, "^e", 0, "");
	expect_set_of(scan_rules_exact_set, "e", SCAN_RE_I, "");    /* caseless */
	expect_set_of(scan_rules_exact_set, "(?i)e", 0, "");
	expect_set_of(scan_rules_exact_set, "(?i:e)", 0, "");
	expect_set_of(scan_rules_exact_set, "a+", 0, "");
	expect_set_of(scan_rules_exact_set, "a(?=b)", 0, "");
}

/*
 * The squeeze set is a gate: the squeezed image of every match must contain
 * one of its strings. Checked against PCRE2 on random text built from the
 * patterns' own letters and separators.
 */
static void
test_squeeze_sound(void **state)
{
	(void)state;
	static const char *const pats[] = {
		"t[_\\W]?r[_\\W]?[a4@][_\\W]?m[_\\W]?[a4@]",
		"(?:\\\\\\/|V)[_\\W]{0,3}[i1!|l][_\\W]{0,3}[o0][_\\W]{0,3}x[_\\W]{0,3}xx?",
		"\\bd[_\\W]?[i1!|l][_\\W]?d[_\\W]?r[_\\W]?[e3]x",
		"(?:foo|b[a4]r)\\s+baz",
		"m\\W*o\\W*n\\W*e\\W*y",
		"r[\\s.,]{1,2}[e3]\\W?d(?:[_\\W]|\\d)o",
	};
	/* the words the patterns spell, written with look-alikes, separators,
	 * dropped and doubled letters: many matches and near misses */
	static const char *const words[] = {"tramam", "\\/ioxxx", "vioxx", "didrex", "foo baz",
	    "bar  baz", "money", "r. ed0o", "r,e d9o"};
	static const char sep[] = "_- .!|/@,\\";
	size_t n = 400000, i = 0;
	uint8_t *text = malloc(n + 64);
	uint32_t x = 12345;
	unsigned total = 0;

	assert_non_null(text);
#define RND() (x = x * 1103515245u + 12345u, (x >> 16) & 0x7fff)
	while (i < n) {
		const char *w = words[RND() % (sizeof(words) / sizeof(words[0]))];
		for (const char *c = w; *c && i < n; c++) {
			unsigned r = RND() % 16;
			char ch = *c;
			if (r == 0)
				continue;                               /* dropped */
			if (r == 1)
				ch = (char)toupper((unsigned char)ch);
			if (r == 2)
				ch = ch == 'a' ? '4' : ch == 'i' ? '1' : ch == 'o' ? '0' : ch == 'e' ? '3' : ch;
			if (r == 3 && ch == 'a')
				ch = '@';
			text[i++] = (uint8_t)ch;
			for (unsigned k = RND() % 6; k < 3 && i < n; k++)
				text[i++] = (uint8_t)sep[RND() % (sizeof(sep) - 1)];
		}
		if (i < n)
			text[i++] = RND() % 3 ? ' ' : '\n';
	}
#undef RND
	for (unsigned p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
		unsigned ns = scan_rules_squeeze_set(pats[p], SCAN_RE_I, set, SCAN_RULES_LSET_MAX);
		int err;
		PCRE2_SIZE eo;
		pcre2_code *c = pcre2_compile((PCRE2_SPTR)pats[p], PCRE2_ZERO_TERMINATED, PCRE2_CASELESS,
		    &err, &eo, NULL);
		pcre2_match_data *md = pcre2_match_data_create(1, NULL);
		assert_non_null(c);
		assert_true(ns > 0);
		unsigned matches = 0;
		for (PCRE2_SIZE off = 0; off < n && pcre2_match(c, text, n, off, 0, md, NULL) >= 0;) {
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
			char sq[256];
			size_t k = 0;
			for (PCRE2_SIZE j = ov[0]; j < ov[1] && k < sizeof(sq) - 1; j++)
				if (scan_rules_squeeze_byte(text[j]))
					sq[k++] = (char)scan_rules_squeeze_byte(text[j]);
			sq[k] = '\0';
			bool found = false;
			for (unsigned q = 0; q < ns && !found; q++) {
				char s[SCAN_RULES_LSET_LEN + 1];
				memcpy(s, &set[q][1], set[q][0]);
				s[set[q][0]] = '\0';
				found = strstr(sq, s) != NULL;
			}
			if (!found)
				fail_msg("/%s/ matched \"%.*s\" (squeezed \"%s\"): no set string in it",
				    pats[p], (int)(ov[1] - ov[0]), text + ov[0], sq);
			matches++;
			off = ov[0] + 1;
		}
		total += matches;
		pcre2_match_data_free(md);
		pcre2_code_free(c);
	}
	free(text);
	print_message("squeeze sets held on %u matches\n", total);
	assert_true(total > 50);
}

/* the real rule files of the spamassassin package, when installed */
static void
test_debian_rules(void **state)
{
	(void)state;
	struct scan_ruleset *rs = debian_rules();
	if (!rs)
		skip();
	const struct scan_rules_stats *s = &rs->st;
	/* observed with spamassassin 4.0.0 (Debian 12); +-20% for package updates */
#define NEAR(got, want) do { if ((got) < (want) * 8 / 10 || (got) > (want) * 12 / 10) \
	fail_msg(#got ": got %u, want about %u", (unsigned)(got), (unsigned)(want)); } while (0)
	NEAR(s->active[SCAN_RT_HEADER], 585);
	NEAR(s->active[SCAN_RT_BODY], 538);
	NEAR(s->active[SCAN_RT_RAWBODY], 53);
	NEAR(s->active[SCAN_RT_URI], 126);
	NEAR(s->active[SCAN_RT_META], 758);
	assert_true(s->active[SCAN_RT_FULL] >= 2);
	NEAR(s->exists, 68);
	/* almost nothing is malformed */
	unsigned broken = 0, active = 0;
	for (unsigned t = 0; t < SCAN_RT_COUNT; t++) {
		broken += s->broken[t];
		active += s->active[t];
	}
	assert_true(broken * 100 < active);
	assert_true(s->replace_rules > 50);
	print_message("header %u body %u rawbody %u full %u uri %u meta %u active; broken %u; "
	    "skipped directives %u; diagnostics %u\n", s->active[0], s->active[1], s->active[2],
	    s->active[3], s->active[4], s->active[5], broken, s->skipped_directives, s->errors);
	scan_rules_free(rs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_directives),
		cmocka_unit_test(test_conditionals),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_meta_depth),
		cmocka_unit_test(test_meta),
		cmocka_unit_test(test_meta_rest),
		cmocka_unit_test(test_meta_need),
		cmocka_unit_test(test_meta_chain),
		cmocka_unit_test(test_replace_tags),
		cmocka_unit_test(test_literal),
		cmocka_unit_test(test_literal_set),
		cmocka_unit_test(test_squeeze_set),
		cmocka_unit_test(test_exact_set),
		cmocka_unit_test(test_squeeze_sound),
		cmocka_unit_test(test_debian_rules),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
