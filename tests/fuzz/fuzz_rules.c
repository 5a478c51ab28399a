/*
 * fuzz_rules.c - libFuzzer target for the rule-file parser (scan/rules.h).
 *
 * The input is a rule file. Checks the contract beyond "no crash": load
 * and finish never fail except for memory; every meta in the evaluation
 * order is active and comes after the active metas it reads; evaluation
 * over arbitrary hit counts stays in bounds; the required-literal walk of
 * every pattern returns at most its capacity (and so do the squeeze and
 * exact sets, scan_rules_whole_repeat finds a group); the relaxed-form rewrites
 * (scan_rules_relax, scan_rules_collapse, scan_rules_width_form) take any
 * pattern text; the sub-chains of a form (scan_gate_subchains, groups
 * flattened) are at most their capacity, each "(?:" ... ")" with balanced
 * parentheses outside classes and escapes, and so are those of its plain
 * collapse and the runs its prefixes map onto there (scan_gate_map_run).
 * The literal, squeeze and exact sets are sound: every PCRE2 match of the
 * pattern over the input holds one of the set's strings (its squeezed
 * image does; it is one of them), as a gate relies on; and where the
 * pattern finds a match in the input, so do its relaxed, collapsed and
 * ASCII forms (the plain collapse and the ASCII form on ASCII input).
 * No Hyperscan compile (slow).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scan/gates.h"
#include "scan/rules.h"

/* "(?:" ... ")", every ( closed, outside classes and escapes; whole: the
 * first "(?:" closes at the last ')' only (a pattern that closes it early
 * and opens another, "a)|(?!b", is not one group when wrapped) */
static int
balanced_as(const char *x, int whole)
{
	int depth = 0;

	if (strncmp(x, "(?:", 3) || x[strlen(x) - 1] != ')')
		return 0;
	for (const char *p = x; *p; p++) {
		if (whole && depth == 0 && p > x)
			return 0;
		if (*p == '\\') {
			if (!*++p)
				return 0;
			if (*p == 'c' && !*++p)         /* \cX: X is taken as is, even \ or ) */
				return 0;
		} else if (*p == '[') {
			const char *q = scan_rules_class_end(p);
			if (!q)
				return 0;
			p = q - 1;
		} else if (*p == '(')
			depth++;
		else if (*p == ')' && --depth < 0)
			return 0;
	}
	return depth == 0;
}

static int
balanced(const char *x)
{
	return balanced_as(x, 0);
}

static void
check_runs(const char *form)
{
	char *runs[8];
	unsigned n = form ? scan_gate_subchains(form, runs, 8) : 0;

	if (n > 8)
		abort();
	for (unsigned k = 0; k < n; k++) {
		if (!balanced(runs[k]))
			abort();
		free(runs[k]);
	}
}

/* every prefix of the collapse maps onto the plain collapse, balanced, or
 * onto nothing (chains of different lengths) */
static void
check_map(const char *cx, const char *px)
{
	char *pre[8];
	unsigned n = scan_gate_prefixes(cx, pre, 8);

	if (n > 8)
		abort();
	for (unsigned k = 0; k < n; k++) {
		char *m = scan_gate_map_run(cx, pre[k], px);
		if (m && !balanced(m))
			abort();
		free(m);
		free(pre[k]);
	}
	char *w = scan_gate_map_run(cx, cx, px);
	if (!w || strcmp(w, px))
		abort();
	free(w);
}

/* A rule's pattern compiled by PCRE2 with its flags, and what a match
 * needs, with limits that keep a fuzz run quick. */
struct pm {
	pcre2_code *c;
	pcre2_match_data *md;
	pcre2_match_context *mc;
};

static bool
pm_open(struct pm *p, const char *re, uint32_t fl)
{
	int err;
	PCRE2_SIZE eo;

	if (!(p->c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
	    scan_rules_pcre2_options(fl), &err, &eo, NULL)))
		return false;   /* the engine reports such a rule broken */
	p->md = pcre2_match_data_create_from_pattern(p->c, NULL);
	p->mc = pcre2_match_context_create(NULL);
	if (!p->md || !p->mc)
		abort();
	pcre2_set_match_limit(p->mc, 20000);
	pcre2_set_depth_limit(p->mc, 1000);
	return true;
}

static void
pm_close(struct pm *p)
{
	pcre2_match_context_free(p->mc);
	pcre2_match_data_free(p->md);
	pcre2_code_free(p->c);
}

/*
 * Every match of re (PCRE2, as the engine runs it) over text must hold a
 * string of set: k 0 the literal set (caselessly), 1 the squeeze set (in
 * the match's squeezed image), 2 the exact set (the match is one).
 */
static void
check_sound(const char *re, uint32_t fl, int k, uint8_t (*set)[SCAN_RULES_LSET_LEN + 1],
    unsigned ns, const uint8_t *text, size_t n)
{
	struct pm p;

	if (strstr(re, "\\K") || !pm_open(&p, re, fl))
		return;         /* \K: the match starts after bytes it holds */
	PCRE2_SIZE off = 0;
	for (unsigned m = 0; m < 32 && off <= n; m++) {
		if (pcre2_match(p.c, text, n, off, 0, p.md, p.mc) < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p.md);
		if (ov[0] > ov[1])
			break;          /* \K past the start: no plain substring */
		uint8_t img[4096];
		size_t il = 0;
		for (PCRE2_SIZE j = ov[0]; j < ov[1] && il < sizeof(img); j++) {
			uint8_t b = text[j];
			if (k == 1)
				b = scan_rules_squeeze_byte(b);
			else if (k == 0 && b >= 'A' && b <= 'Z')
				b = (uint8_t)(b + 32);
			if (b || k != 1)
				img[il++] = b;
		}
		bool found = false;
		for (unsigned q = 0; q < ns && !found; q++) {
			size_t sl = set[q][0];
			if (k == 2)
				found = sl == il && !memcmp(img, &set[q][1], sl);
			else
				for (size_t j = 0; j + sl <= il && !found; j++)
					found = !memcmp(img + j, &set[q][1], sl);
		}
		if (!found && ov[1] - ov[0] < sizeof(img))
			abort();
		off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
	}
	pm_close(&p);
}

/* PCRE2 with the rule's flags: 1 a match in text, 0 none, -1 unknown */
static int
pcre_finds(const char *re, uint32_t fl, const uint8_t *text, size_t n)
{
	struct pm p;

	if (!pm_open(&p, re, fl))
		return -1;
	int rc = pcre2_match(p.c, text, n, 0, 0, p.md, p.mc);
	pm_close(&p);
	return rc >= 0 ? 1 : rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

/*
 * A gate form f of x: where x finds a match in text, f must find one too
 * (the gate opens wherever the rule can match). x_found: pcre_finds(x).
 */
static void
check_gate_form(int x_found, const char *f, uint32_t fl, const uint8_t *text, size_t n)
{
	if (x_found == 1 && f && pcre_finds(f, fl, text, n) == 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct scan_ruleset *rs = scan_rules_new();

	if (!rs)
		return 0;
	if (scan_rules_load_text(rs, "fuzz.cf", (const char *)data, size) < 0 ||
	    scan_rules_finish(rs) < 0) {
		scan_rules_free(rs);
		return 0;
	}
	uint8_t *pos = calloc(rs->n + 1, 1);
	uint32_t *hits = calloc(rs->n + 1, sizeof(*hits));
	if (!pos || !hits)
		abort();
	for (uint32_t k = 0; k < rs->n_meta; k++) {
		const struct scan_rule *r = &rs->rules[rs->meta_order[k]];
		if (r->type != SCAN_RT_META || r->state != SCAN_RS_ACTIVE)
			abort();
		for (uint32_t j = 0; j < r->meta_n; j++) {
			if (r->meta[j].op != SCAN_MO_RULE)
				continue;
			if (r->meta[j].rule >= rs->n)
				abort();
			const struct scan_rule *d = &rs->rules[r->meta[j].rule];
			if (d->type == SCAN_RT_META && d->state == SCAN_RS_ACTIVE && !pos[r->meta[j].rule])
				abort();
		}
		pos[rs->meta_order[k]] = 1;
	}
	for (uint32_t i = 0; i < rs->n; i++)
		hits[i] = (uint32_t)(i * 2654435761u) % 4;
	scan_rules_meta_eval(rs, hits);
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		uint8_t lit[8];
		if (r->re && scan_rules_literal(r->re, r->re_flags, lit, sizeof(lit)) > sizeof(lit))
			abort();
		/* the relaxed forms: any pattern text, no crash, no leak; not
		 * past 64 KB, which only replace tags reach from a small input
		 * and which PCRE2 refuses as too large before the engine makes
		 * forms (the walks take time in the groups' count times the
		 * length on unbalanced text: minutes at a megabyte) */
		if (r->re && strlen(r->re) <= 65536) {
			size_t n = strlen(r->re);
			char *x = malloc(n + 5);
			if (!x)
				abort();
			memcpy(x, "(?:", 3);
			memcpy(x + 3, r->re, n);
			memcpy(x + 3 + n, ")", 2);
			/* the forms are gates: each finds a match where x does (on
			 * plain ASCII text, with no "&#", for the plain and ASCII
			 * forms); not for /x, which the engine wraps differently */
			bool ascii = true;
			for (size_t j = 0; j < size && ascii; j++)
				ascii = data[j] < 0x80 && !(data[j] == '&' && j + 1 < size && data[j + 1] == '#');
			int xf = (r->re_flags & SCAN_RE_X) ? -1 : pcre_finds(x, r->re_flags, data, size);
			char *af = xf == 1 && ascii ? scan_rules_ascii_form(x) : NULL;
			check_gate_form(xf, af, r->re_flags, data, size);
			free(af);
			for (int k = 0; k < 4; k++) {   /* loose, loose without assertions, tight, open */
				char *rx = k == 3 ? scan_rules_relax_open(x, false, 1) :
				    k == 2 ? scan_rules_relax_n(x, false, 1, 100) :
				    scan_rules_relax(x, k == 1, k == 0 ? 2 : 1);
				char *cx = rx ? scan_rules_collapse(rx) : NULL;
				char *px = rx ? scan_rules_collapse_plain(rx) : NULL;
				check_gate_form(xf, rx, r->re_flags, data, size);
				check_gate_form(xf, cx, r->re_flags, data, size);
				if (ascii)
					check_gate_form(xf, px, r->re_flags, data, size);
				if (balanced_as(x, 1) && !strstr(x, "(?#") && cx) {
					check_runs(cx);
					/* the lead: balanced, never the whole form */
					char *lx = scan_gate_lead(cx), *tx = scan_gate_tail(cx);
					if ((lx && (!balanced(lx) || !strcmp(lx, cx))) ||
					    (tx && !balanced(tx)))
						abort();
					free(lx);
					free(tx);
					/* the split: balanced parts, each longer than
					 * nothing, as many as the count says */
					char *sp[16];
					unsigned ns = scan_gate_split(cx, sp, 16);
					if (ns == 1)
						abort();
					for (unsigned j = 0; j < ns; j++) {
						if (!sp[j] || !balanced(sp[j]))
							abort();
						free(sp[j]);
					}
					if (px) {
						check_runs(px);
						check_map(cx, px);
					}
				}
				free(px);
				free(cx);
				free(rx);
			}
			free(scan_rules_width_form(x));
			free(scan_rules_collapse(x));
			/* the literal-set walks stay within their capacity; an exact
			 * set has only non-empty strings; a whole repeat has a group */
			uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
			unsigned (*const walk[3])(const char *, uint32_t,
			    uint8_t (*)[SCAN_RULES_LSET_LEN + 1], unsigned) = {
				scan_rules_literal_set, scan_rules_squeeze_set, scan_rules_exact_set};
			for (int k = 0; k < 3; k++) {
				unsigned ns = walk[k](r->re, r->re_flags, set, 4);
				if (ns > 4)
					abort();
				for (unsigned q = 0; q < ns; q++)
					if (set[q][0] > SCAN_RULES_LSET_LEN || (k == 2 && !set[q][0]))
						abort();
				ns = walk[k](r->re, r->re_flags, set, SCAN_RULES_LSET_MAX);
				if (ns)
					check_sound(r->re, r->re_flags, k, set, ns, data, size);
			}
			char *inner = NULL;
			if (scan_rules_whole_repeat(x, &inner) && (!inner || inner[0] != '('))
				abort();
			free(inner);
			free(x);
		}
	}
	free(pos);
	free(hits);
	scan_rules_free(rs);
	return 0;
}
