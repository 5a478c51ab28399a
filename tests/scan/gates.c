/*
 * Tests for scan/gates.c: the atom runs of hand-written relaxed forms (and
 * the forms that have none), soundness of every run against look-alike
 * strings that the whole form matches, and the choice of a gate.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <hs/hs.h>

#include "scan/gates.h"
#include "scan/rules.h"

#define CAP 64

static void
free_runs(char **v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(v[i]);
}

static void
expect_runs(const char *form, const char *const *want, unsigned nwant)
{
	char *got[CAP];
	unsigned n = scan_gate_subchains(form, got, CAP);

	for (unsigned i = 0; i < n && i < nwant; i++)
		if (strcmp(got[i], want[i]))
			fail_msg("%s run %u: got %s, want %s", form, i, got[i], want[i]);
	if (n != nwant)
		fail_msg("%s: got %u runs, want %u", form, n, nwant);
	free_runs(got, n);
}

static void
test_runs(void **state)
{
	(void)state;
	/* six atoms, each solid: a, b, \x41 (one atom, not \x 4 1), a class
	 * with an escaped ] and a lazy {m,n}, a quantified group, g */
	static const char *const w1[] = {
		"(?:ab)", "(?:ab\\x41)", "(?:ab\\x41[c\\]d]{2,3}?)",
		"(?:ab\\x41[c\\]d]{2,3}?(?:e|f)+)",
		"(?:b\\x41)", "(?:b\\x41[c\\]d]{2,3}?)", "(?:b\\x41[c\\]d]{2,3}?(?:e|f)+)",
		"(?:b\\x41[c\\]d]{2,3}?(?:e|f)+g)",
		"(?:\\x41[c\\]d]{2,3}?)", "(?:\\x41[c\\]d]{2,3}?(?:e|f)+)",
		"(?:\\x41[c\\]d]{2,3}?(?:e|f)+g)",
		"(?:[c\\]d]{2,3}?(?:e|f)+)", "(?:[c\\]d]{2,3}?(?:e|f)+g)",
		"(?:(?:e|f)+g)",
	};
	expect_runs("(?:ab\\x41[c\\]d]{2,3}?(?:e|f)+g)", w1, sizeof(w1) / sizeof(w1[0]));

	/* atoms that can match empty (\b, \W?, [-\s]*, d{0,2}, (?:$|\W)) do
	 * not count and never start a run, but stay inside one */
	static const char *const w2[] = {
		"(?:[ab]\\W?c)", "(?:[ab]\\W?c[-\\s]*d{0,2}e)",
		"(?:[ab]\\W?c[-\\s]*d{0,2}e(?:$|\\W))",
		"(?:c[-\\s]*d{0,2}e)", "(?:c[-\\s]*d{0,2}e(?:$|\\W))",
	};
	expect_runs("(?:\\b[ab]\\W?c[-\\s]*d{0,2}e(?:$|\\W))", w2, sizeof(w2) / sizeof(w2[0]));

	/* nested groups with ')' and '|' inside classes and escapes; ']' first
	 * in a class; \x{..}; a negated class with {1,}? */
	static const char *const w3[] = {
		"(?:[]a](?:x[)|]|\\(|y))", "(?:[]a](?:x[)|]|\\(|y)\\x{41})",
		"(?:[]a](?:x[)|]|\\(|y)\\x{41}[^\\]]{1,}?)",
		"(?:(?:x[)|]|\\(|y)\\x{41})", "(?:(?:x[)|]|\\(|y)\\x{41}[^\\]]{1,}?)",
		"(?:(?:x[)|]|\\(|y)\\x{41}[^\\]]{1,}?z)",
		"(?:\\x{41}[^\\]]{1,}?)", "(?:\\x{41}[^\\]]{1,}?z)",
		"(?:[^\\]]{1,}?z)",
	};
	expect_runs("(?:[]a](?:x[)|]|\\(|y)\\x{41}[^\\]]{1,}?z)", w3, sizeof(w3) / sizeof(w3[0]));

	/* a bare body (no wrapping group) is split the same way */
	static const char *const w4[] = {"(?:ab)", "(?:b[c])"};
	expect_runs("ab[c]", w4, 2);
	/* the whole form closes early: one body "(?:a)(?:b)c"; its plain
	 * groups give their atoms, so runs are a b c */
	static const char *const w5[] = {"(?:ab)", "(?:bc)"};
	expect_runs("(?:a)(?:b)c", w5, 2);
	/* a run may start inside a plain group (__PCT_FOR_YOU_1's '%'), not
	 * inside one with alternatives or a quantifier */
	static const char *const w6[] = {
		"(?:\\d\\d)", "(?:\\d\\d\\s?%)",
		"(?:\\d\\d\\s?%[\\s)]{0,3}(?:for|to))", "(?:\\d\\d\\s?%[\\s)]{0,3}(?:for|to)\\s)",
		"(?:\\d\\d\\s?%[\\s)]{0,3}(?:for|to)\\s(?:you)+)", "(?:\\d\\s?%)",
		"(?:\\d\\s?%[\\s)]{0,3}(?:for|to))", "(?:\\d\\s?%[\\s)]{0,3}(?:for|to)\\s)",
		"(?:\\d\\s?%[\\s)]{0,3}(?:for|to)\\s(?:you)+)", "(?:%[\\s)]{0,3}(?:for|to))",
		"(?:%[\\s)]{0,3}(?:for|to)\\s)", "(?:%[\\s)]{0,3}(?:for|to)\\s(?:you)+)",
		"(?:(?:for|to)\\s)", "(?:(?:for|to)\\s(?:you)+)",
		"(?:\\s(?:you)+)",
	};
	expect_runs("(?:(?:\\b\\d\\d\\s?%)[\\s)]{0,3}((?:for|to)\\s)(?:you)+)", w6,
	    sizeof(w6) / sizeof(w6[0]));
}

static void
test_no_runs(void **state)
{
	(void)state;
	static const char *const none[] = {
		"(?:ab|cd)",            /* top-level alternation */
		"(?:ab(?:c)|d)",
		"(?:a(?i)bc)",          /* an option setting: a run past it loses it */
		"(?:(a)b\\1c)",         /* a back-reference */
		"(?:a\\Qb|\\Ec)",
		"(?:*ab)",              /* a dangling quantifier */
		"(?:ab{2}{3})",
		"(?:a(?R)b)",
		"(?:ab(c)",             /* unbalanced */
		"(?:a[bc)",
		"(?:a)",                /* one atom */
		"(?:a?b?c)",            /* one solid atom */
		"(?:ab\\x{0c)(?:d[e}f)",  /* a brace argument with syntax in it (PCRE2 refuses it) */
		"(?:ab\\p{L)(?:d}ef)",
		"(?:ab\\o{19}cd)",
		"",
	};
	char *got[CAP];

	for (unsigned i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
		unsigned n = scan_gate_subchains(none[i], got, CAP);
		if (n)
			fail_msg("%s: got %u runs (first %s), want none", none[i], n, got[0]);
	}
	assert_int_equal(scan_gate_subchains(NULL, got, CAP), 0);
	/* a form over 16 KB is not split (the parse would take seconds on
	 * deep nesting); one under it is */
	for (size_t len = 16000; len <= 17000; len += 1000) {
		char *big = malloc(len + 1);
		assert_non_null(big);
		memcpy(big, "(?:", 3);
		for (size_t k = 3; k < len - 1; k++)
			big[k] = (char)('a' + k % 7);
		big[len - 1] = ')';
		big[len] = '\0';
		unsigned nb = scan_gate_subchains(big, got, CAP);
		if ((len > 16384) != (nb == 0))
			fail_msg("a form of %zu bytes: %u runs", len, nb);
		free_runs(got, nb);
		free(big);
	}
	/* a cap */
	unsigned n = scan_gate_subchains("(?:abcdef)", got, 3);
	assert_int_equal(n, 3);
	assert_string_equal(got[0], "(?:ab)");
	assert_string_equal(got[2], "(?:abcd)");
	free_runs(got, n);
}

/* ---- soundness: look-alike strings of a form, every run must match ---- */

static uint32_t rng = 2166136261u;

static unsigned
rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return n ? rng % n : 0;
}

static int
hex(int c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* an escape at *p (advanced): a byte, or -1 with set filled */
static int
gen_escape(const char **p, bool *set)
{
	const char *s = *p;
	int b;

	switch (s[1]) {
	case 'x':
		if (s[2] == '{') {
			b = (int)strtol(s + 3, NULL, 16);
			*p = strchr(s, '}') + 1;
			return b;
		}
		*p = s + 4;
		return hex(s[2]) * 16 + hex(s[3]);
	case 's': case 'W': case 'w': case 'd':
		for (int c = 1; c < 256; c++) {
			bool w = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
			    (c >= 'A' && c <= 'Z') || c == '_';
			set[c] = s[1] == 's' ? c == ' ' || c == '\t' : s[1] == 'W' ? !w :
			    s[1] == 'w' ? w : c >= '0' && c <= '9';
		}
		*p = s + 2;
		return -1;
	default:
		*p = s + 2;
		return (unsigned char)s[1];
	}
}

static int
pick_of(const bool *set)
{
	int c, n = 0;

	for (c = 1; c < 256; c++)
		n += set[c] && c != '\n';
	assert_true(n > 0);
	unsigned k = rnd((unsigned)n);
	for (c = 1; c < 256; c++)
		if (set[c] && c != '\n' && k-- == 0)
			break;
	return c;
}

static const char *
close_of(const char *s)
{
	int depth = 0;

	for (;; s++) {
		if (*s == '\\')
			s++;
		else if (*s == '[') {
			s++;
			if (*s == '^')
				s++;
			if (*s == ']')
				s++;
			while (*s != ']')
				s += *s == '\\' ? 2 : 1;
		} else if (*s == '(')
			depth++;
		else if (*s == ')' && --depth == 0)
			return s;
	}
}

static void gen_seq(const char *p, const char *e, char *out, size_t *n);

/* One random string the atom at *p matches, ignoring assertions (the
 * caller keeps only strings that the whole form matches). */
static void
gen_atom(const char **pp, char *out, size_t *n)
{
	const char *p = *pp, *q;
	bool set[256] = {false};
	int lit = -1;
	const char *gb = NULL, *ge = NULL;

	if (*p == '(') {
		ge = close_of(p);
		gb = p[1] == '?' ? p + 3 : p + 1;
		q = ge + 1;
	} else if (*p == '[') {
		bool neg = false;
		q = p + 1;
		if (*q == '^') {
			neg = true;
			q++;
		}
		for (bool first = true; first || *q != ']'; first = false) {
			int lo = *q == '\\' ? gen_escape(&q, set) : (unsigned char)*q++;
			if (lo >= 0 && *q == '-' && q[1] != ']') {
				q++;
				int hi = *q == '\\' ? gen_escape(&q, set) : (unsigned char)*q++;
				for (int c = lo; c <= hi; c++)
					set[c] = true;
			} else if (lo >= 0)
				set[lo] = true;
		}
		q++;
		if (neg)
			for (int c = 0; c < 256; c++)
				set[c] = !set[c];
	} else if (*p == '\\' && strchr("bB", p[1])) {
		q = p + 2;
		lit = -2;
	} else if (*p == '\\') {
		q = p;
		lit = gen_escape(&q, set);
	} else if (*p == '^' || *p == '$') {
		q = p + 1;
		lit = -2;
	} else {
		q = p + 1;
		lit = (unsigned char)*p;
	}
	unsigned lo = 1, hi = 1;
	if (*q == '?' || *q == '*' || *q == '+') {
		lo = *q == '+';
		hi = *q == '?' ? 1 : lo + 2;
		q++;
	} else if (*q == '{') {
		char *x;
		lo = (unsigned)strtoul(q + 1, &x, 10);
		hi = *x == ',' ? (x[1] == '}' ? lo + 2 : (unsigned)strtoul(x + 1, NULL, 10)) : lo;
		if (hi > lo + 2)
			hi = lo + 2;
		q = strchr(q, '}') + 1;
	}
	if (*q == '?')
		q++;
	for (unsigned r = lo + rnd(hi - lo + 1); r > 0; r--) {
		if (gb)
			gen_seq(gb, ge, out, n);
		else if (lit >= 0)
			out[(*n)++] = (char)lit;
		else if (lit == -1)
			out[(*n)++] = (char)pick_of(set);
	}
	*pp = q;
}

static void
gen_seq(const char *p, const char *e, char *out, size_t *n)
{
	const char *alt[16];
	unsigned na = 0;
	const char *s = p;

	/* top-level alternatives of [p, e) */
	alt[na++] = p;
	while (s < e) {
		if (*s == '\\')
			s += 2;
		else if (*s == '(' || *s == '[') {
			if (*s == '(')
				s = close_of(s) + 1;
			else {
				const char *t = s + 1;
				if (*t == '^')
					t++;
				if (*t == ']')
					t++;
				while (*t != ']')
					t += *t == '\\' ? 2 : 1;
				s = t + 1;
			}
		} else if (*s == '|') {
			alt[na++] = ++s;
			assert_true(na < 16);
		} else
			s++;
	}
	unsigned k = rnd(na);
	const char *b = alt[k], *end = k + 1 < na ? alt[k + 1] - 1 : e;
	while (b < end)
		gen_atom(&b, out, n);
}

static hs_database_t *
compile_block(const char *x, unsigned flags)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;

	if (hs_compile(x, flags, HS_MODE_BLOCK, NULL, &db, &err) != HS_SUCCESS) {
		print_error("hs_compile %s: %s\n", x, err ? err->message : "?");
		hs_free_compile_error(err);
		return NULL;
	}
	return db;
}

static int
on_hit(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
    void *ctx)
{
	(void)id;
	(void)from;
	(void)to;
	(void)flags;
	*(bool *)ctx = true;
	return 1;
}

static bool
matches(const hs_database_t *db, hs_scratch_t **sc, const char *t, size_t n)
{
	bool hit = false;

	assert_int_equal(hs_alloc_scratch(db, sc), HS_SUCCESS);
	hs_error_t rc = hs_scan(db, t, (unsigned)n, 0, *sc, on_hit, &hit);
	assert_true(rc == HS_SUCCESS || rc == HS_SCAN_TERMINATED);
	return hit;
}

/*
 * Generates strings for form, keeps those the form matches (in a line of
 * prose), and checks that every run in runs[] matches each; returns how
 * many runs missed at least one (0: sound), *pos the positives.
 */
static unsigned
check_runs(const char *form, unsigned flags, char *const *runs, unsigned nr, unsigned tries,
    unsigned *pos)
{
	hs_database_t *whole = compile_block(form, flags);
	hs_database_t *db[CAP];
	hs_scratch_t *sc = NULL;
	bool missed[CAP] = {false};
	unsigned bad = 0;

	assert_non_null(whole);
	assert_true(nr <= CAP);
	for (unsigned i = 0; i < nr; i++)
		assert_non_null(db[i] = compile_block(runs[i], flags));
	*pos = 0;
	for (unsigned t = 0; t < tries; t++) {
		char text[1024];
		size_t n = 0;
		memcpy(text, "hello ", 6);
		n = 6;
		const char *b = form + 3, *e = form + strlen(form) - 1;
		while (b < e)
			gen_atom(&b, text, &n);
		memcpy(text + n, " there\n", 7);
		n += 7;
		assert_true(n < sizeof(text));
		if (!matches(whole, &sc, text, n))
			continue;
		(*pos)++;
		for (unsigned i = 0; i < nr; i++)
			if (!missed[i] && !matches(db[i], &sc, text, n)) {
				missed[i] = true;
				bad++;
				print_message("%s misses %.*s\n", runs[i], (int)n - 1, text);
			}
	}
	for (unsigned i = 0; i < nr; i++)
		hs_free_database(db[i]);
	hs_free_database(whole);
	hs_free_scratch(sc);
	return bad;
}

/* look-alike forms in the style of the FUZZY_* relaxed forms (ours) */
static const struct {
	const char *form;
	unsigned flags;
} fuzzy[] = {
	{"(?:(?:[Gg6\\xc4\\xc7][\\x80-\\xbf]?)\\W?(?:[Rr\\xc5\\xd0-\\xd1][\\x80-\\xbf]?)\\W?"
	 "(?:[Ee3\\xc3\\xc8-\\xcb][\\x80-\\xbf]?)\\W?(?:[Aa4@\\xc0-\\xc5][\\x80-\\xbf]?)\\W?"
	 "(?:[Tt7\\xc5\\xd4][\\x80-\\xbf]?))", HS_FLAG_MULTILINE},
	{"(?:(?:^|\\W)(?:[Ww\\xc5\\xd0-\\xd1][\\x80-\\xbf]?[\\x80-\\xbf]?)"
	 "(?:[Ii1!|l\\xcc-\\xcf][\\x23\\x80-\\xbf]?[0-9]?)(?:[Nn\\xc3\\xd1][\\x80-\\xbf]?){1,2}"
	 "[-\\s]*(?:[Ee3\\xc8-\\xcb][\\x80-\\xbf]?)(?:[Rr\\xc5][\\x80-\\xbf]?)(?:$|\\W))",
	 HS_FLAG_MULTILINE},
	{"(?:\\b(?:[Ff\\xc6][\\x80-\\xbf]?)[_\\W]{0,3}(?:[Rr][\\x80-\\xbf]?)[_\\W]{0,3}"
	 "(?:[Ee3][\\x80-\\xbf]?)[_\\W]{0,3}(?:[Ee3][\\x80-\\xbf]?)\\b)", HS_FLAG_MULTILINE},
	{"(?:c[\\x2e\\-]?a,?s\\s?h\\W{0,2}\\d{1,3}\\$)", HS_FLAG_MULTILINE | HS_FLAG_CASELESS},
};

static void
test_soundness(void **state)
{
	(void)state;
	for (unsigned f = 0; f < sizeof(fuzzy) / sizeof(fuzzy[0]); f++) {
		char *runs[CAP];
		unsigned pos, nr = scan_gate_subchains(fuzzy[f].form, runs, CAP);
		if (nr < 5)
			fail_msg("%s: got %u runs, want >= 5", fuzzy[f].form, nr);
		unsigned bad = check_runs(fuzzy[f].form, fuzzy[f].flags, runs, nr, 400, &pos);
		if (bad)
			fail_msg("%s: got %u unsound runs, want 0", fuzzy[f].form, bad);
		if (pos < 200)
			fail_msg("%s: got %u positives of 400, want >= 200", fuzzy[f].form, pos);
		free_runs(runs, nr);
	}
	/* the check itself finds an unsound run: one that leaves out a \W? */
	char *skip = strdup("(?:(?:[Gg6\\xc4\\xc7][\\x80-\\xbf]?)(?:[Rr\\xc5\\xd0-\\xd1][\\x80-\\xbf]?))");
	unsigned pos;
	assert_int_equal(check_runs(fuzzy[0].form, fuzzy[0].flags, &skip, 1, 400, &pos), 1);
	free(skip);
}

/* ---- the choice ---- */

/* prose of common words: no digits, no capitals, no high bytes */
static uint8_t *
prose(size_t n)
{
	static const char *const words[] = {
		"the", "and", "to", "of", "a", "in", "that", "is", "it", "for", "on",
		"was", "with", "as", "at", "be", "this", "have", "from", "or", "one",
		"had", "by", "word", "but", "not", "what", "all", "were", "we", "when",
		"your", "can", "said", "there", "use", "an", "each", "which", "she",
		"do", "how", "their", "if", "will", "up", "other", "about", "out",
		"many", "then", "them", "these", "so", "some", "her", "would", "make",
		"like", "him", "into", "time", "has", "look", "two", "more", "write",
		"go", "see", "number", "no", "way", "could", "people", "my", "than",
	};
	uint8_t *b = malloc(n);
	size_t i = 0;

	assert_non_null(b);
	while (i < n) {
		const char *w = words[rnd(sizeof(words) / sizeof(words[0]))];
		for (size_t j = 0; w[j] && i < n; j++)
			b[i++] = (uint8_t)w[j];
		if (i < n)
			b[i++] = rnd(12) ? ' ' : rnd(2) ? '\n' : ',';
	}
	return b;
}

static bool
compiles(const char *x, unsigned flags, unsigned mode)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;

	if (hs_compile(x, flags, mode, NULL, &db, &err) != HS_SUCCESS) {
		hs_free_compile_error(err);
		return false;
	}
	hs_free_database(db);
	return true;
}

/* a letter that looks like c: the letter either case or a UTF-8 lead
 * byte, then up to three optional continuation or entity bytes */
static void
fuzzy_letter(char *out, size_t cap, char c)
{
	size_t n = strlen(out);

	snprintf(out + n, cap - n, "(?:[%c%c\\xc3-\\xc5\\xd0-\\xd1][\\x23\\x80-\\xbf]?"
	    "[0-9\\x80-\\xbf]?[0-9\\x3b]?[\\x3b]?)\\W?", c, c - 32);
}

static void
test_pick(void **state)
{
	(void)state;
	size_t n = 32 * 1024;
	uint8_t *smp = prose(n);
	struct scan_gate_pick p;
	char form[4096] = "(?:";
	const unsigned fl = HS_FLAG_MULTILINE;

	/* "theseqzjxk": its first letters are everywhere in the prose, its
	 * last ones nowhere; the whole form wakes up on every t, h, e, s */
	for (const char *w = "theseqzjxk"; *w; w++)
		fuzzy_letter(form, sizeof(form), *w);
	strcat(form, ")");

	char *runs[CAP];
	unsigned nr = scan_gate_subchains(form, runs, CAP);
	assert_true(nr > 0);
	assert_int_equal(scan_gate_pick(NULL, 0, form, fl, smp, n, 1.0, 0, &p), 0);
	print_message("picked %s, %.1f us, tried %u\n", p.expr ? p.expr : "-", p.seconds * 1e6,
	    p.tried);
	assert_int_equal(p.mode, SCAN_GATE_BLOCK);
	assert_false(p.opens);
	assert_int_equal(p.flags, fl);
	assert_true(p.tried > 1 && p.tried <= 1 + SCAN_GATE_MAX_RUNS);
	if (!strcmp(p.expr, form))
		fail_msg("got the whole relaxed form, want a run");
	bool found = false;
	for (unsigned i = 0; i < nr && !found; i++)
		found = !strcmp(runs[i], p.expr);
	assert_true(found);
	assert_true(compiles(p.expr, p.flags, HS_MODE_BLOCK));
	/* it starts at one of the rare letters */
	assert_true(strncmp(p.expr, "(?:[q", 5) == 0 || strncmp(p.expr, "(?:[z", 5) == 0 ||
	    strncmp(p.expr, "(?:[j", 5) == 0 || strncmp(p.expr, "(?:[x", 5) == 0);
	scan_gate_pick_free(&p);
	assert_null(p.expr);
	free_runs(runs, nr);

	/* the prefilter form alone: stream mode, as given */
	const char *pf = "qzj(?=xk)";
	unsigned pff = HS_FLAG_MULTILINE | HS_FLAG_PREFILTER;
	assert_int_equal(scan_gate_pick(pf, pff, NULL, 0, smp, n, 1.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_STREAM);
	assert_string_equal(p.expr, pf);
	assert_int_equal(p.flags, pff);
	assert_int_equal(p.tried, 1);
	assert_true(compiles(p.expr, p.flags, HS_MODE_STREAM));
	scan_gate_pick_free(&p);

	/* nothing to try */
	assert_int_equal(scan_gate_pick(NULL, 0, NULL, 0, smp, n, 1.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_NONE);
	assert_null(p.expr);
	assert_int_equal(p.tried, 0);

	/* a gate that opens on the sample costs its scan plus PCRE2: never */
	assert_int_equal(scan_gate_pick("the", pff, "(?:th[e])", fl, smp, n, 1.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_NONE);
	assert_int_equal(p.tried, 4);   /* the two forms, (?:th), (?:h[e]) */

	/* nothing costs under a PCRE2 time of zero */
	assert_int_equal(scan_gate_pick(NULL, 0, form, fl, smp, n, 0.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_NONE);
	assert_true(p.tried > 1);

	/* nothing fits in 16 bytes */
	assert_int_equal(scan_gate_pick(pf, pff, form, fl, smp, n, 1.0, 16, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_NONE);

	/* Hyperscan refuses a look-ahead; a run without it is still a gate */
	assert_int_equal(scan_gate_pick(NULL, 0, "(?:qz(?=j))", fl, smp, n, 1.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_BLOCK);
	assert_string_equal(p.expr, "(?:qz)");
	scan_gate_pick_free(&p);
	/* ... and with one solid atom there is no run: no gate */
	assert_int_equal(scan_gate_pick(NULL, 0, "(?:q(?=zj))", fl, smp, n, 1.0, 0, &p), 0);
	assert_int_equal(p.mode, SCAN_GATE_NONE);
	assert_int_equal(p.tried, 1);
	free(smp);
}

/* the forms' own gates on prose: each a run or the form, and it compiles */
static void
test_pick_fuzzy(void **state)
{
	(void)state;
	size_t n = 32 * 1024;
	uint8_t *smp = prose(n);

	for (unsigned f = 0; f < sizeof(fuzzy) / sizeof(fuzzy[0]); f++) {
		struct scan_gate_pick p;
		char *runs[CAP];
		unsigned nr = scan_gate_subchains(fuzzy[f].form, runs, CAP);
		assert_int_equal(scan_gate_pick(NULL, 0, fuzzy[f].form, fuzzy[f].flags, smp, n, 1.0,
		    0, &p), 0);
		assert_int_equal(p.mode, SCAN_GATE_BLOCK);
		bool ok = !strcmp(p.expr, fuzzy[f].form);
		for (unsigned i = 0; i < nr && !ok; i++)
			ok = !strcmp(runs[i], p.expr);
		if (!ok)
			fail_msg("got %s, want the form or one of its runs", p.expr);
		assert_true(compiles(p.expr, p.flags, HS_MODE_BLOCK));
		print_message("%u: %s %.1f us, tried %u\n", f, p.expr, p.seconds * 1e6, p.tried);
		scan_gate_pick_free(&p);
		free_runs(runs, nr);
	}
	free(smp);
}

/* match ends of a block scan, as a bitmap over the text */
static int
end_bit(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
    void *ctx)
{
	(void)id;
	(void)from;
	(void)flags;
	((uint8_t *)ctx)[to >> 3] |= (uint8_t)(1u << (to & 7));
	return 0;
}

/*
 * The lead of a form (scan_gate_lead): its atoms through the first that
 * cannot match empty, a group repeated at least once cut to one copy; NULL
 * when that is the whole form or there is no such atom. The tail
 * (scan_gate_tail): from the last repeated group, cut to one copy, to the
 * end. Sound: on random texts, wherever the form matches, both do.
 */
static void
test_lead(void **state)
{
	(void)state;
	static const struct {
		const char *form, *lead;
	} cases[] = {
		{"(?:^\\s?(?:\\d+\\.)?(?:(?:name|phone)(?:\\sor\\s)?){1,}:)",
		    "(?:^\\s?(?:\\d+\\.)?(?:(?:name|phone)(?:\\sor\\s)?))"},
		{"(?:^(?:ab)+c)", "(?:^(?:ab))"},
		{"(?:\\bfoo)", "(?:\\bf)"},
		{"(?:^x)", NULL},                       /* the lead is the whole form */
		{"(?:^(?:ab){0,}c)", "(?:^(?:ab){0,}c)"},        /* optional: through c */
		{"(?:^\\s*)", NULL},                   /* nothing solid */
		{"(?:a|b)", NULL},                      /* no plain concatenation */
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		char *l = scan_gate_lead(cases[k].form);
		if (!cases[k].lead)
			assert_null(l);
		else if (!strcmp(cases[k].lead, cases[k].form))
			assert_null(l);
		else {
			assert_non_null(l);
			assert_string_equal(l, cases[k].lead);
		}
		free(l);
	}

	static const struct {
		const char *form, *tail;
	} tails[] = {
		{"(?:^\\s*(?:[a-z]+\\s+){10}\\.$)", "(?:(?:[a-z]+\\s+)\\.$)"},
		{"(?:a(?:bc)+)", "(?:(?:bc))"},
		{"(?:^abc$)", NULL},                    /* no repeated group */
		{"(?:(?:ab)*c)", NULL},                 /* the group may be absent */
	};
	for (size_t k = 0; k < sizeof(tails) / sizeof(tails[0]); k++) {
		char *t = scan_gate_tail(tails[k].form);
		if (!tails[k].tail)
			assert_null(t);
		else {
			assert_non_null(t);
			assert_string_equal(t, tails[k].tail);
		}
		free(t);
	}

	static const char form[] = "(?:^\\s?(?:\\d{1,}[).]{1,}\\s?)?(?:(?:(?:home|cell)\\s?){1,}"
	    "phone|name\\s?){1,}:?\\s{0,}(?:[-_]{3,}|$))";
	static const char *const bits[] = {"home ", "cell", "phone", "name", "1. ", "2)", ":",
	    "___", "\n", " ", "x", "-", "no"};
	char *lead = scan_gate_lead(form), *tail = scan_gate_tail(form);
	assert_non_null(lead);
	assert_non_null(tail);
	hs_database_t *df = NULL, *dl = NULL, *dt = NULL;
	hs_compile_error_t *err = NULL;
	hs_scratch_t *sc = NULL;
	assert_int_equal(hs_compile(form, HS_FLAG_CASELESS | HS_FLAG_MULTILINE, HS_MODE_BLOCK, NULL,
	    &df, &err), HS_SUCCESS);
	assert_int_equal(hs_compile(lead, HS_FLAG_CASELESS | HS_FLAG_MULTILINE, HS_MODE_BLOCK, NULL,
	    &dl, &err), HS_SUCCESS);
	assert_int_equal(hs_compile(tail, HS_FLAG_CASELESS | HS_FLAG_MULTILINE, HS_MODE_BLOCK, NULL,
	    &dt, &err), HS_SUCCESS);
	assert_int_equal(hs_alloc_scratch(df, &sc), HS_SUCCESS);
	assert_int_equal(hs_alloc_scratch(dl, &sc), HS_SUCCESS);
	assert_int_equal(hs_alloc_scratch(dt, &sc), HS_SUCCESS);
	unsigned seed = 3, fm = 0, lonly = 0, tonly = 0;
	for (unsigned m = 0; m < 2000; m++) {
		char text[256];
		size_t n = 0;
		while (n < 80) {
			seed = seed * 1103515245u + 12345u;
			const char *b = bits[(seed >> 16) % (sizeof(bits) / sizeof(bits[0]))];
			memcpy(text + n, b, strlen(b));
			n += strlen(b);
		}
		bool f = false, l = false, t = false;
		hs_scan(df, text, (unsigned)n, 0, sc, on_hit, &f);
		hs_scan(dl, text, (unsigned)n, 0, sc, on_hit, &l);
		hs_scan(dt, text, (unsigned)n, 0, sc, on_hit, &t);
		if (f)
			assert_true(l && t);
		fm += f;
		lonly += l && !f;
		tonly += t && !f;
	}
	assert_true(fm > 50 && lonly > 50 && tonly > 50);       /* every kind of text occurs */
	hs_free_scratch(sc);
	hs_free_database(df);
	hs_free_database(dl);
	hs_free_database(dt);
	free(lead);
	free(tail);
}

/*
 * Split forms (scan_gate_split): the largest alternation reached through
 * concatenations and plain groups is expanded, the rest kept; a quantified
 * group is not reached; and the parts together match at exactly the ends
 * the form does (every end, on random texts), as a multi-pattern database.
 */
static void
test_split(void **state)
{
	(void)state;
	static const struct {
		const char *form;
		const char *parts[4];
	} cases[] = {
		{"a(?:b|c)d", {"a(?:b)d", "a(?:c)d"}},
		{"x|yz", {"(?:x)", "(?:yz)"}},
		{"(?:q(?:a|b)(?i:c|d|e))", {"(?:q(?:a|b)(?i:c))", "(?:q(?:a|b)(?i:d))",
		    "(?:q(?:a|b)(?i:e))"}},
		{"(?:(?:(?:p|q|r))s)", {"(?:(?:(?:p))s)", "(?:(?:(?:q))s)", "(?:(?:(?:r))s)"}},
		{"(?:a|b)+c", {NULL}},                 /* quantified: not reached */
		{"abc", {NULL}},                        /* no alternation */
		{"(?i)a|b", {NULL}},                    /* an option setting: not parsed */
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		char *out[8];
		unsigned n = scan_gate_split(cases[k].form, out, 8), want = 0;
		while (want < 4 && cases[k].parts[want])
			want++;
		assert_int_equal(n, want);
		for (unsigned j = 0; j < n; j++) {
			assert_string_equal(out[j], cases[k].parts[j]);
			free(out[j]);
		}
	}
	char *big[2];
	assert_int_equal(scan_gate_split("a|b|c", big, 2), 0);  /* over cap */

	static const char form[] = "(?:(?:your\\s)?(?:(?:home|cell)\\s?phone|name(?:s|\\sand)?"
	    "|e-?mail|(?:zip|post)\\s?code)[:\\s]{1,3}(?:_{2,}|\\n))";
	static const char *const bits[] = {"your ", "home", "cell", "phone", "name", "email",
	    "e-mail", "zip", "post", "code", ":", " ", "__", "\n", "s", " and", "x"};
	char *parts[16];
	unsigned np = scan_gate_split(form, parts, 16);
	assert_int_equal(np, 4);
	unsigned fl[16], id[16];
	for (unsigned j = 0; j < np; j++) {
		fl[j] = HS_FLAG_CASELESS;
		id[j] = 7;
	}
	hs_database_t *df = compile_block(form, HS_FLAG_CASELESS), *ds = NULL;
	hs_compile_error_t *err = NULL;
	hs_scratch_t *sc = NULL;
	assert_non_null(df);
	assert_int_equal(hs_compile_multi((const char *const *)parts, fl, id, np, HS_MODE_BLOCK,
	    NULL, &ds, &err), HS_SUCCESS);
	assert_int_equal(hs_alloc_scratch(df, &sc), HS_SUCCESS);
	assert_int_equal(hs_alloc_scratch(ds, &sc), HS_SUCCESS);
	unsigned seed = 5, hit = 0;
	for (unsigned m = 0; m < 2000; m++) {
		char text[256];
		size_t n = 0;
		uint8_t ef[sizeof(text) / 8 + 1] = {0}, es[sizeof(text) / 8 + 1] = {0};
		while (n < 120) {
			seed = seed * 1103515245u + 12345u;
			const char *b = bits[(seed >> 16) % (sizeof(bits) / sizeof(bits[0]))];
			memcpy(text + n, b, strlen(b));
			n += strlen(b);
		}
		hs_scan(df, text, (unsigned)n, 0, sc, end_bit, ef);
		hs_scan(ds, text, (unsigned)n, 0, sc, end_bit, es);
		assert_memory_equal(ef, es, sizeof(ef));
		for (size_t b = 0; b < sizeof(ef); b++)
			hit += ef[b] != 0;
	}
	assert_true(hit > 200);         /* the form matched, often */
	for (unsigned j = 0; j < np; j++)
		free(parts[j]);
	hs_free_scratch(sc);
	hs_free_database(df);
	hs_free_database(ds);
}

/*
 * ASCII forms (scan_rules_ascii_form): on text with no byte >= 0x80 they
 * match at exactly the offsets the original does (look-alike letter
 * groups, high bytes in classes, optional and required high-only atoms,
 * raw UTF-8 in the pattern), and they have no UTF-8 branches left.
 */
static void
test_ascii_form(void **state)
{
	(void)state;
	static const char *const pats[] = {
		("(?:[Vv\\x5c\\xce\\xd1][\\x2f\\x80-\\xbf]?[\\x80-\\xbf]?[Ii1!|l\\xcc-\\xcf][\\x80-\\xbf]?"
		    "[Aa4@\\xc0-\\xc5][\\x80-\\xbf]?)"),
		"(?:caf(?:e|\\xc3\\xa9)\\b)",
		"(?:\\xc3\\xa9t\\xc3\\xa9|et[ea])",
		"(?:x[\\x80-\\xff]{2}y|xzzy|x[\\x80-\\xff]{0,2}q)",
		"(?:[^\\x00-\\x7f]+z|a\\xe9?b)",
		"(?:\\bv[_\\W]{0,3}[i1\\xEC-\\xEF][_\\W]{0,3}a\\b)",
		"(?:caf\xc3\xa9|cafe!)",
	};
	static const char alpha[] = "abcefiltvqxyzVIA41!|@_ .-\\/\n";
	unsigned seed = 7, agree = 0;
	uint8_t text[256];

	for (size_t p = 0; p < sizeof(pats) / sizeof(pats[0]); p++) {
		char *a = scan_rules_ascii_form(pats[p]);
		hs_database_t *d0 = NULL, *d1 = NULL;
		hs_compile_error_t *err = NULL;
		hs_scratch_t *sc = NULL;
		assert_non_null(a);
		for (const char *c = a; *c; c++)
			assert_true((unsigned char)*c < 0x80);
		if (strstr(a, "\\x80") == NULL)
			for (const char *c = a; *c; c++)
				if (c[0] == '\\' && c[1] == 'x')
					assert_true(c[2] < '8');        /* no high byte left */
		assert_int_equal(hs_compile(pats[p], HS_FLAG_CASELESS, HS_MODE_BLOCK, NULL, &d0, &err),
		    HS_SUCCESS);
		assert_int_equal(hs_compile(a, HS_FLAG_CASELESS, HS_MODE_BLOCK, NULL, &d1, &err),
		    HS_SUCCESS);
		assert_int_equal(hs_alloc_scratch(d0, &sc), HS_SUCCESS);
		assert_int_equal(hs_alloc_scratch(d1, &sc), HS_SUCCESS);
		unsigned hits = 0;
		for (unsigned m = 0; m < 400; m++) {
			uint8_t e0[sizeof(text) / 8 + 1] = {0}, e1[sizeof(text) / 8 + 1] = {0};
			for (size_t k = 0; k < sizeof(text); k++) {
				seed = seed * 1103515245u + 12345u;
				text[k] = (uint8_t)alpha[(seed >> 16) % (sizeof(alpha) - 1)];
			}
			if (m % 3 == 0)         /* plant pieces of the patterns */
				memcpy(text + (seed >> 8) % 200, m % 2 ? "cafe vi@ xzzy" : "ete v_1_a ab", 12);
			hs_scan(d0, (const char *)text, sizeof(text), 0, sc, end_bit, e0);
			hs_scan(d1, (const char *)text, sizeof(text), 0, sc, end_bit, e1);
			if (memcmp(e0, e1, sizeof(e0)))
				fail_msg("pattern %zu, text %u: the ASCII form %s matches elsewhere", p, m, a);
			for (size_t k = 0; k < sizeof(e0); k++)
				hits += e0[k] != 0;
		}
		agree += hits > 0;
		hs_free_scratch(sc);
		hs_free_database(d0);
		hs_free_database(d1);
		free(a);
	}
	assert_true(agree >= 5);        /* most patterns did match somewhere */
	/* fewer states: the look-alike form loses its continuation bytes */
	char *a = scan_rules_ascii_form(pats[0]);
	assert_null(strstr(a, "\\x80-"));
	free(a);
}

/*
 * Plain collapses (scan_rules_collapse_plain): the strings that begin "&#"
 * leave every collapsed group, the atoms stay one to one with the full
 * collapse (scan_gate_map_run maps each prefix onto the same prefix), and
 * on text with no "&#" and no high byte the plain form's ASCII form still
 * matches wherever the rule does (every end), and nowhere the full
 * collapse does not. A group of entities only becomes \x80.
 */
static void
test_plain_form(void **state)
{
	(void)state;
	static const char rule[] =
	    "(?:(?:[pP]|&\\#(?:80|112);)(?:[hH]|&\\#(?:72|104);)[_\\W]?"
	    "(?:[aA@4]|&\\#(?:65|97);|[\\xc3][\\xa0-\\xa5])(?:[rR]|&\\#(?:82|114);))";
	static const char alpha[] = "pPhHaA@4rR_ -.&#;01x";
	char *rx = scan_rules_relax(rule, false, 1);
	char *cx = rx ? scan_rules_collapse(rx) : NULL;
	char *px = rx ? scan_rules_collapse_plain(rx) : NULL;
	assert_non_null(cx);
	assert_non_null(px);
	assert_string_not_equal(cx, px);
	assert_null(strstr(px, "\\x23"));               /* no '#' position left */
	char *pre_c[16], *pre_p[16];
	unsigned nc = scan_gate_prefixes(cx, pre_c, 16), np = scan_gate_prefixes(px, pre_p, 16);
	assert_true(nc >= 8);
	assert_int_equal(nc, np);
	for (unsigned k = 0; k < nc; k++) {
		char *m = scan_gate_map_run(cx, pre_c[k], px);
		assert_non_null(m);
		assert_string_equal(m, pre_p[k]);
		free(m);
	}
	char *whole = scan_gate_map_run(cx, cx, px);
	assert_string_equal(whole, px);
	free(whole);
	assert_null(scan_gate_map_run(cx, "(?:zz)", px));
	for (unsigned k = 0; k < nc; k++) {
		free(pre_c[k]);
		free(pre_p[k]);
	}

	char *ac = scan_rules_ascii_form(cx), *ap = scan_rules_ascii_form(px);
	assert_non_null(ap);
	assert_true(strlen(ap) < strlen(ac));
	hs_database_t *d[3] = {NULL};
	hs_compile_error_t *err = NULL;
	hs_scratch_t *sc = NULL;
	const char *xs[3] = {rule, ac, ap};
	for (int k = 0; k < 3; k++) {
		assert_int_equal(hs_compile(xs[k], HS_FLAG_CASELESS, HS_MODE_BLOCK, NULL, &d[k], &err),
		    HS_SUCCESS);
		assert_int_equal(hs_alloc_scratch(d[k], &sc), HS_SUCCESS);
	}
	unsigned seed = 11, hits = 0, narrower = 0;
	uint8_t text[256];
	for (unsigned m = 0; m < 600; m++) {
		uint8_t e[3][sizeof(text) / 8 + 1];
		memset(e, 0, sizeof(e));
		for (size_t k = 0; k < sizeof(text); k++) {
			seed = seed * 1103515245u + 12345u;
			text[k] = (uint8_t)alpha[(seed >> 16) % (sizeof(alpha) - 1)];
		}
		if (m % 2)
			memcpy(text + (seed >> 8) % 200, m % 4 == 1 ? "ph@r" : "p-hAR", 4);
		bool plain = m % 5 != 0;        /* every fifth text keeps its entities */
		for (size_t k = 0; plain && k + 1 < sizeof(text); k++)
			if (text[k] == '&' && text[k + 1] == '#')
				text[k + 1] = 'x';
		if (!plain)
			memcpy(text + 100, "&#80;h&#97;r", 12);
		for (int k = 0; k < 3; k++)
			hs_scan(d[k], (const char *)text, sizeof(text), 0, sc, end_bit, e[k]);
		for (size_t b = 0; b < sizeof(e[0]); b++) {
			hits += e[0][b] != 0;
			if ((e[2][b] & ~e[1][b]) || (plain && (e[0][b] & ~e[2][b])))
				fail_msg("text %u: the plain form misses a match of the rule or "
				    "matches beyond the collapse (%s)", m, ap);
			narrower += !plain && (e[0][b] & ~e[2][b]) != 0;
		}
	}
	assert_true(hits > 50);
	assert_true(narrower > 0);      /* on entity text the plain form is not a gate */
	for (int k = 0; k < 3; k++)
		hs_free_database(d[k]);
	hs_free_scratch(sc);
	free(ac);
	free(ap);
	/* a group of entities only: nothing a plain text holds */
	char *only = scan_rules_collapse_plain("(?:x(?:&\\#65;|&\\#97;)y)");
	assert_non_null(only);
	assert_non_null(strstr(only, "\\x80"));
	free(only);
	free(rx);
	free(cx);
	free(px);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_runs),
		cmocka_unit_test(test_no_runs),
		cmocka_unit_test(test_soundness),
		cmocka_unit_test(test_pick),
		cmocka_unit_test(test_pick_fuzzy),
		cmocka_unit_test(test_ascii_form),
		cmocka_unit_test(test_plain_form),
		cmocka_unit_test(test_lead),
		cmocka_unit_test(test_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
