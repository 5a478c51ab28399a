/*
 * gates.c - the cheapest sound Hyperscan gate of a PCRE2 rule: its prefilter
 * form, its relaxed form, or a run of the relaxed form's top-level atoms.
 * See gates.h for the contract.
 */
#include "scan/gates.h"
#include "scan/rules.h"
#include "scan/strbuf.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hs/hs.h>

#define CHUNK 4096u             /* stream writes while measuring, as the
                                   cost model in hs.c feeds its streams */
#define REPS SCAN_GATE_REPS
#define SAMPLE_MSGS 8           /* the sample, cut into this many "messages" */
#define NEAR_CALL_SECONDS 0.3e-6 /* a PCRE2 search and the gate's callbacks, per window */
/* A form longer than this is not split into runs: the parse walks each
 * group once per level it is nested in (Debian's longest forms are some
 * 3 KB; a fuzzed ReplaceTags expansion of 30 KB nested 16 deep took
 * seconds) */
#define CHAIN_MAX_LEN 16384u

/* One top-level atom of a relaxed form's body, its quantifier included. */
struct atom {
	size_t off, len;
	bool solid;             /* cannot match empty: a run counts these */
	uint8_t first[32];      /* a superset of the bytes a match starts with */
};

struct chain {
	const char *body;
	struct atom *a;         /* NULL and n 0: no chain */
	unsigned n;
};

static void
set_add(uint8_t *s, unsigned b)
{
	s[(b & 255) >> 3] |= (uint8_t)(1u << (b & 7));
}

static bool
set_has(const uint8_t *s, unsigned b)
{
	return s[b >> 3] & (1u << (b & 7));
}

static void
set_range(uint8_t *s, unsigned lo, unsigned hi)
{
	for (unsigned b = lo; b <= hi && b < 256; b++)
		set_add(s, b);
}

static void
set_not(uint8_t *s)
{
	for (unsigned k = 0; k < 32; k++)
		s[k] = (uint8_t)~s[k];
}

static void
set_fold(uint8_t *s)
{
	for (unsigned b = 'A'; b <= 'Z'; b++)
		if (set_has(s, b) || set_has(s, b + 32)) {
			set_add(s, b);
			set_add(s, b + 32);
		}
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
is_quant(const char *s)
{
	if (*s == '?' || *s == '*' || *s == '+')
		return true;
	if (*s != '{')
		return false;
	/* {m} {m,} {m,n} {,n}; anything else is a literal brace */
	const char *p = s + 1;
	bool digits = false;
	while (*p >= '0' && *p <= '9')
		p++, digits = true;
	if (*p == ',') {
		p++;
		while (*p >= '0' && *p <= '9')
			p++, digits = true;
	}
	return digits && *p == '}';
}

/*
 * Past the quantifier at s (s itself if none); *min its lower bound (1 with
 * none). NULL for a quantifier that follows another one.
 */
static const char *
quant_end(const char *s, unsigned long *min)
{
	const char *p = s;

	*min = 1;
	if (!is_quant(p))
		return p;
	if (*p == '{') {
		*min = strtoul(p + 1, NULL, 10);        /* 0 for {,n} */
		p = strchr(p, '}');
	} else if (*p != '+')
		*min = 0;
	p++;
	if (*p == '?' || *p == '+')     /* lazy, possessive */
		p++;
	return is_quant(p) ? NULL : p;
}

/* Past the escape at s (a '\\'); NULL for one whose meaning depends on
 * the rest of the pattern or that spans text (back-references, \Q). */
static const char *
escape_end(const char *s)
{
	const char *p = s + 2;

	switch (s[1]) {
	case '\0':
	case 'Q': case 'E': case 'g': case 'k': case 'K':
	case '1': case '2': case '3': case '4': case '5': case '6': case '7': case '8': case '9':
		return NULL;
	case 'x':
		if (*p == '{')
			return scan_rules_brace_end(p, "0123456789abcdefABCDEF");
		for (int k = 0; k < 2 && hexval(*p) >= 0; k++)
			p++;
		return p;
	case 'o':
		return *p == '{' ? scan_rules_brace_end(p, "01234567") : NULL;
	case '0':
		for (int k = 0; k < 2 && *p >= '0' && *p <= '7'; k++)
			p++;
		return p;
	case 'c':
		/* "\c\" would hide the escape after it from a reader that
		 * takes "\c" and one byte */
		return *p && *p != '\\' ? p + 1 : NULL;
	case 'p': case 'P':
		if (*p == '{')
			return scan_rules_brace_end(p, NULL);
		/* a one-letter property (\pL); "\p\:" is no pattern */
		return (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ? p + 1 : NULL;
	case 'N':
		return *p == '{' ? NULL : p;
	default:
		return p;
	}
}

/* The bytes of a class escape (\d \w \s ...) added to set; false if c is
 * not one. */
static bool
class_escape(int c, uint8_t *set)
{
	uint8_t t[32] = {0};

	switch (c | 0x20) {
	case 'd':
		set_range(t, '0', '9');
		break;
	case 'w':
		set_range(t, '0', '9');
		set_range(t, 'A', 'Z');
		set_range(t, 'a', 'z');
		set_add(t, '_');
		break;
	case 's':
		set_range(t, 9, 13);
		set_add(t, ' ');
		break;
	case 'h':
		set_add(t, 9);
		set_add(t, ' ');
		set_add(t, 0xa0);
		break;
	case 'v':
		set_range(t, 10, 13);
		set_add(t, 0x85);
		break;
	default:
		return false;
	}
	if (c >= 'A' && c <= 'Z')
		set_not(t);
	for (unsigned k = 0; k < 32; k++)
		set[k] |= t[k];
	return true;
}

/* The byte an escape at s spells (\x41, \n, \., \0101 ...), or -1 when it
 * stands for a set of bytes. */
static int
escape_byte(const char *s)
{
	switch (s[1]) {
	case 'x': {
		if (s[2] == '{') {
			unsigned long v = strtoul(s + 3, NULL, 16);
			return v < 256 ? (int)v : -1;
		}
		int v = 0;
		for (int k = 2; k < 4 && hexval(s[k]) >= 0; k++)
			v = v * 16 + hexval(s[k]);
		return v;
	}
	case '0': {
		int v = 0;
		for (int k = 2; k < 4 && s[k] >= '0' && s[k] <= '7'; k++)
			v = v * 8 + (s[k] - '0');
		return v;
	}
	case 'n': return '\n';
	case 't': return '\t';
	case 'r': return '\r';
	case 'f': return '\f';
	case 'e': return 27;
	case 'a': return 7;
	case 'c': return s[2] ? (s[2] & 0xdf) ^ 0x40 : -1;
	default:
		if ((s[1] >= 'a' && s[1] <= 'z') || (s[1] >= 'A' && s[1] <= 'Z'))
			return -1;      /* \d, \p{L}, \b ...: not one byte */
		return (unsigned char)s[1];
	}
}

/* Bytes of one class member at *s (advanced); -1 when it was a set (added). */
static int
class_member(const char **s, uint8_t *set)
{
	const char *p = *s;

	if (*p != '\\') {
		*s = p + 1;
		return (unsigned char)*p;
	}
	const char *q = escape_end(p);
	*s = q ? q : p + 2;
	if (p[1] == 'b')
		return 8;       /* backspace inside a class */
	if (class_escape(p[1], set))
		return -1;
	int b = q ? escape_byte(p) : -1;
	if (b < 0)
		memset(set, 0xff, 32);  /* \p{..}, code points: any byte */
	return b;
}

/* The bytes the class [s, e) (e just past its ']') can match, a superset. */
static void
class_set(const char *s, const char *e, bool icase, uint8_t *set)
{
	uint8_t t[32] = {0};
	const char *p = s + 1;
	bool neg = false;

	if (*p == '^') {
		neg = true;
		p++;
	}
	e--;                    /* the closing ']' */
	while (p < e) {
		const char *q = p[0] == '[' && p[1] == ':' ? scan_rules_posix_end(p, e + 1) : NULL;
		if (q) {
			/* POSIX names: any byte will do for a ranking */
			memset(t, 0xff, 32);
			p = q;
			continue;
		}
		int lo = class_member(&p, t);
		if (lo >= 0 && p[0] == '-' && p + 1 < e) {
			const char *r = p + 1;
			int hi = class_member(&r, t);
			if (hi >= lo) {
				set_range(t, (unsigned)lo, (unsigned)hi);
				p = r;
				continue;
			}
		}
		if (lo >= 0)
			set_add(t, (unsigned)lo);
	}
	if (icase)
		set_fold(t);
	if (neg) {
		set_not(t);
		set_range(t, 0x80, 0xff);       /* UTF-8 lead bytes of excluded chars */
	}
	for (unsigned k = 0; k < 32; k++)
		set[k] |= t[k];
}

/* s at "(?": past an option setting such as (?i) or (?-s), else NULL. */
static const char *
option_set(const char *s, bool *icase)
{
	const char *p = s + 2;
	bool on = true, ic = *icase;

	if (s[0] != '(' || s[1] != '?')
		return NULL;
	for (; *p && *p != ')'; p++) {
		if (*p == '-')
			on = false;
		else if (*p == 'i')
			ic = on;
		else if (!strchr("imnsxJU^", *p))
			return NULL;       /* (?R), (?C), ...: not options */
	}
	if (*p != ')')
		return NULL;
	*icase = ic;
	return p + 1;
}

/* Past the group that opens at s, before e; NULL if it does not close. */
static const char *
group_end(const char *s, const char *e)
{
	unsigned depth = 0;

	for (const char *p = s; p < e;) {
		if (*p == '\\') {
			if (!(p = escape_end(p)))
				return NULL;
		} else if (*p == '[') {
			if (!(p = scan_rules_class_end(p)))
				return NULL;
		} else if (p[0] == '(' && p[1] == '?' && p[2] == '#') {
			if (!(p = strchr(p, ')')))
				return NULL;
			p++;
			if (!depth)
				return p;
		} else if (*p == '(') {
			depth++;
			p++;
		} else if (*p == ')') {
			p++;
			if (--depth == 0)
				return p;
		} else
			p++;
	}
	return NULL;
}

static bool atom_scan(const char *p, const char *e, bool icase, const char **end,
    uint8_t *first, bool *empty);

/*
 * A sequence [p, e), alternatives and all: the bytes its matches can start
 * with added to first, *empty if it can match empty. false: a construct
 * this parser does not know.
 */
static bool
seq_scan(const char *p, const char *e, bool icase, uint8_t *first, bool *empty)
{
	bool alt_empty = true;

	*empty = false;
	while (p < e) {
		const char *q;
		if (*p == '|') {
			*empty |= alt_empty;
			alt_empty = true;
			p++;
			continue;
		}
		if ((q = option_set(p, &icase)) != NULL) {
			p = q;
			continue;
		}
		uint8_t f[32] = {0};
		bool ae;
		if (!atom_scan(p, e, icase, &q, f, &ae))
			return false;
		if (alt_empty)
			for (unsigned k = 0; k < 32; k++)
				first[k] |= f[k];
		if (!ae)
			alt_empty = false;
		p = q;
	}
	*empty |= alt_empty;
	return true;
}

/* Where a group's content starts and what kind it is: 0 a group, 1 an
 * assertion or comment (matches empty), -1 unknown (conditionals,
 * recursion, named back-references). */
static int
group_content(const char *s, const char **body, bool *icase)
{
	const char *p = s + 1;

	*body = p;
	if (*p != '?')
		return 0;
	p++;
	switch (*p) {
	case ':': case '>': case '|':
		*body = p + 1;
		return 0;
	case '=': case '!': case '#':
		return 1;
	case '<':
		if (p[1] == '=' || p[1] == '!')
			return 1;
		p = strchr(p, '>');
		*body = p ? p + 1 : s;
		return p ? 0 : -1;
	case 'P':
		if (p[1] != '<')
			return -1;
		p = strchr(p, '>');
		*body = p ? p + 1 : s;
		return p ? 0 : -1;
	case '\'':
		p = strchr(p + 1, '\'');
		*body = p ? p + 1 : s;
		return p ? 0 : -1;
	}
	/* (?i:...), (?-i:...) */
	bool on = true, ic = *icase;
	for (; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '^'; p++)
		if (*p == '-')
			on = false;
		else if (*p == 'i')
			ic = on;
	if (*p != ':')
		return -1;
	*icase = ic;
	*body = p + 1;
	return 0;
}

/*
 * The atom at p (before e) with its quantifier: *end just past it, the bytes
 * it can start with added to first, *empty if it can match empty. false for
 * what this parser does not know, a dangling quantifier or ')' or '|'.
 */
static bool
atom_scan(const char *p, const char *e, bool icase, const char **end, uint8_t *first,
    bool *empty)
{
	const char *q;
	bool ce = false;
	unsigned long min;

	switch (*p) {
	case '(': {
		const char *body;
		bool ic = icase;
		int kind = group_content(p, &body, &ic);
		if (kind < 0 || !(q = group_end(p, e)))
			return false;
		if (kind == 1)
			ce = true;
		else if (!seq_scan(body, q - 1, ic, first, &ce))
			return false;
		break;
	}
	case '[':
		if (!(q = scan_rules_class_end(p)) || q > e)
			return false;
		class_set(p, q, icase, first);
		break;
	case '\\': {
		if (!(q = escape_end(p)) || q > e)
			return false;
		int b;
		if (strchr("bBAzZG", p[1]))
			ce = true;
		else if (class_escape(p[1], first))
			;
		else if ((b = escape_byte(p)) >= 0) {
			set_add(first, (unsigned)b);
			if (icase)
				set_fold(first);
		} else
			memset(first, 0xff, 32);
		break;
	}
	case '^': case '$':
		q = p + 1;
		ce = true;
		break;
	case '.':
		q = p + 1;
		memset(first, 0xff, 32);
		break;
	case '|': case ')': case '?': case '*': case '+':
		return false;
	case '{':
		if (is_quant(p))
			return false;
		/* fall through - a literal brace */
	default:
		q = p + 1;
		/* a UTF-8 character stays whole: in UTF-8 mode a quantifier
		 * after it takes the whole character */
		if ((unsigned char)*p >= 0xc0)
			while (q < e && ((unsigned char)*q & 0xc0) == 0x80)
				q++;
		set_add(first, (unsigned char)*p);
		if (icase)
			set_fold(first);
		break;
	}
	if (!(q = quant_end(q, &min)) || q > e)
		return false;
	*empty = ce || min == 0;
	*end = q;
	return true;
}

/*
 * Adds the atoms of [p, e) to c: a plain group with no quantifier, (?:X)
 * or (X), whose content is itself a concatenation, gives its atoms instead
 * (the same language, and a run may then start inside it: the '%' of
 * __PCT_FOR_YOU_1 sits in such a group). false: no plain concatenation.
 */
static bool
chain_add(struct chain *c, const char *p, const char *e, bool icase, unsigned depth)
{
	while (p < e) {
		struct atom *a;
		const char *q, *g;
		bool empty, ic = icase;
		/* an option setting applies to the atoms after it: a run
		 * that started past it would lose it */
		if (option_set(p, &ic))
			return false;
		/* a plain group with no quantifier: its atoms, if its content
		 * is a concatenation (every atom inside is scanned then). Tried
		 * before the group's own scan, which walks it all again, once
		 * per level of nesting above: on a form nested 17 deep that
		 * took seconds. */
		if (depth < 8 && *p == '(' && (p[1] != '?' || p[2] == ':') &&
		    (g = group_end(p, e)) != NULL && !is_quant(g)) {
			unsigned n0 = c->n;
			const char *body = p[1] == '?' ? p + 3 : p + 1;
			if (g - 1 > body && chain_add(c, body, g - 1, icase, depth + 1)) {
				p = g;
				continue;
			}
			c->n = n0;      /* alternatives inside: one atom */
		}
		a = &c->a[c->n];
		memset(a->first, 0, sizeof(a->first));
		if (!atom_scan(p, e, icase, &q, a->first, &empty))
			return false;
		a->off = (size_t)(p - c->body);
		a->len = (size_t)(q - p);
		a->solid = !empty;
		c->n++;
		p = q;
	}
	return true;
}

/*
 * Splits a relaxed form into its top-level atoms; c->n 0 when it is no
 * plain concatenation (see scan_gate_subchains). 0 or -ENOMEM.
 */
static int
chain_parse(const char *x, bool icase, struct chain *c)
{
	size_t len = strlen(x);
	const char *b = x, *e = x + len;

	memset(c, 0, sizeof(*c));
	if (len > CHAIN_MAX_LEN)
		return 0;       /* no chain */
	if (!strncmp(x, "(?:", 3) && group_end(x, e) == e) {
		b = x + 3;
		e--;
	}
	c->body = b;
	if (e <= b)
		return 0;
	if (!(c->a = calloc((size_t)(e - b), sizeof(*c->a))))
		return -ENOMEM;
	if (!chain_add(c, b, e, icase, 0)) {
		free(c->a);
		memset(c, 0, sizeof(*c));
	}
	return 0;
}

/* The length of atom a's text without its quantifier when it is a group
 * repeated at least once (its one copy); else its whole length. */
static size_t
one_copy(const char *a, size_t al)
{
	const char *q;

	if (*a != '(' || (q = group_end(a, a + al)) == NULL || q >= a + al)
		return al;
	unsigned lo = *q == '+' ? 1 : 0;
	if (*q == '{')
		lo = (unsigned)strtoul(q + 1, NULL, 10);
	return lo >= 1 ? (size_t)(q - a) : al;
}

/* "(?:" atoms [from, to) ")", atom k cut to its one copy (malloc'd). */
static char *
cut_run(const struct chain *c, unsigned from, unsigned to, unsigned k)
{
	size_t n = 0;
	char *out;

	for (unsigned j = from; j < to; j++)
		n += c->a[j].len;
	if ((out = malloc(n + 5)) == NULL)
		return NULL;
	memcpy(out, "(?:", 3);
	n = 3;
	for (unsigned j = from; j < to; j++) {
		const char *a = c->body + c->a[j].off;
		size_t l = j == k ? one_copy(a, c->a[j].len) : c->a[j].len;
		memcpy(out + n, a, l);
		n += l;
	}
	memcpy(out + n, ")", 2);
	return out;
}

/* "(?:" atoms [k, end) ")", malloc'd (atoms from inside groups are not
 * contiguous in the text). */
static char *
chain_run(const struct chain *c, unsigned k, unsigned end)
{
	return cut_run(c, k, end, UINT_MAX);
}

/*
 * The runs that start at each atom of starts[], in that order (see
 * scan_gate_subchains), into out[*m .. cap); -ENOMEM or 0.
 */
static int
chain_runs(const struct chain *c, const unsigned *starts, unsigned ns, char **out,
    unsigned *from, unsigned cap, unsigned *m)
{
	static const unsigned lens[] = {2, 3, 4, 5, 0};  /* 0: to the end */

	for (unsigned s = 0; s < ns; s++) {
		unsigned k = starts[s];
		for (unsigned li = 0; li < sizeof(lens) / sizeof(lens[0]) && *m < cap; li++) {
			unsigned end = 0, solid = 0;
			for (unsigned j = k; j < c->n; j++)
				if (c->a[j].solid && ++solid == lens[li] && !end)
					end = j + 1;
			if (!lens[li])
				end = solid >= 2 ? c->n : 0;
			if (!end || (k == 0 && end == c->n))
				continue;       /* too few atoms, or the whole form */
			char *x = chain_run(c, k, end);
			if (!x)
				return -ENOMEM;
			bool dup = false;
			for (unsigned i = 0; i < *m && !dup; i++)
				dup = !strcmp(out[i], x);
			if (dup)
				free(x);
			else {
				if (from)
					from[*m] = s;
				out[(*m)++] = x;
			}
		}
	}
	return 0;
}

/* The lead (tail false) or the tail of a form: see gates.h. */
static char *
lead_or_tail(const char *form, bool tail)
{
	struct chain c;
	char *out = NULL;

	if (!form || chain_parse(form, false, &c) < 0 || !c.n)
		return NULL;
	if (!tail) {
		unsigned k = 0;
		while (k < c.n && !c.a[k].solid)
			k++;
		if (k < c.n && (k + 1 < c.n ||
		    one_copy(c.body + c.a[k].off, c.a[k].len) < c.a[k].len))
			out = cut_run(&c, 0, k + 1, k);
	} else
		for (unsigned k = c.n; k-- > 0;)
			if (c.a[k].solid && one_copy(c.body + c.a[k].off, c.a[k].len) < c.a[k].len) {
				out = cut_run(&c, k, c.n, k);
				break;
			}
	free(c.a);
	return out;
}

char *
scan_gate_lead(const char *form)
{
	return lead_or_tail(form, false);
}

char *
scan_gate_tail(const char *form)
{
	return lead_or_tail(form, true);
}

/* The largest alternation of a form (scan_gate_split): the group at g, its
 * content from body, its end (past the ')'), its n alternatives. */
struct alt_site {
	const char *g, *body, *end;
	unsigned n;
};

/* The top-level alternatives of [p, e): how many, 0 for what the parser
 * does not know (an option setting such as (?i) among them included). */
static unsigned
seq_alts(const char *p, const char *e)
{
	unsigned n = 1;

	while (p < e) {
		const char *q;
		uint8_t f[32];
		bool empty;
		if (*p == '|') {
			n++;
			p++;
			continue;
		}
		if (!atom_scan(p, e, false, &q, f, &empty))
			return 0;
		p = q;
	}
	return n;
}

/*
 * The groups with no quantifier that [p, e) (a concatenation) reaches
 * through itself and such groups, whose content has alternatives: the one
 * with the most into *best. false for what the parser does not know.
 */
static bool
alt_sites(const char *p, const char *e, unsigned depth, struct alt_site *best)
{
	while (p < e) {
		const char *q, *body;
		uint8_t f[32];
		bool empty, ic = false;
		if (!atom_scan(p, e, false, &q, f, &empty))
			return false;
		if (*p == '(' && group_content(p, &body, &ic) == 0 && group_end(p, e) == q) {
			unsigned n = seq_alts(body, q - 1);
			if (!n)
				return false;
			if (n > 1) {
				if (n > best->n)
					*best = (struct alt_site){p, body, q, n};
			} else if (depth < 16 && !alt_sites(body, q - 1, depth + 1, best))
				return false;
		}
		p = q;
	}
	return true;
}

unsigned
scan_gate_split(const char *form, char **out, unsigned cap)
{
	size_t len = form ? strlen(form) : 0;
	const char *e = form + len;
	struct alt_site s = {0};
	unsigned n = form ? seq_alts(form, e) : 0;

	if (n > 1)
		s = (struct alt_site){form, form, e, n};  /* A|B at the top */
	else if (!n || !alt_sites(form, e, 0, &s))
		return 0;
	if (s.n < 2 || s.n > cap)
		return 0;
	/* text before the site, the group's opener ("(?:", "(?i:", "(") or
	 * "(?:" for a top-level site, one alternative, ")", text after */
	bool top = s.g == form && s.body == form;
	const char *open = top ? "(?:" : s.g;
	size_t olen = top ? 3 : (size_t)(s.body - s.g);
	const char *close = top ? s.end : s.end - 1;    /* the site's ')' or its end */
	unsigned m = 0;
	const char *a = s.body;
	for (const char *p = s.body; m < s.n; ) {
		const char *q;
		uint8_t f[32];
		bool empty;
		if (p < close && *p != '|') {
			if (!atom_scan(p, close, false, &q, f, &empty))
				break;
			p = q;
			continue;
		}
		struct scan_sb b = {0};
		scan_sb_put(&b, form, (size_t)((top ? form : s.g) - form));
		scan_sb_put(&b, open, olen);
		scan_sb_put(&b, a, (size_t)(p - a));
		scan_sb_puts(&b, ")");
		scan_sb_puts(&b, top ? "" : s.end);
		if (b.oom) {
			free(b.p);
			break;
		}
		out[m++] = b.p;
		a = ++p;
	}
	if (m < s.n) {
		while (m)
			free(out[--m]);
		return 0;
	}
	return m;
}

unsigned
scan_gate_prefixes(const char *form, char **out, unsigned cap)
{
	struct chain c;
	unsigned m = 0;

	if (!form || chain_parse(form, false, &c) < 0)
		return 0;
	for (unsigned j = 1; j <= c.n && m < cap; j++) {
		if ((out[m] = chain_run(&c, 0, j)) == NULL) {
			while (m)
				free(out[--m]);
			break;
		}
		m++;
	}
	free(c.a);
	return m;
}

unsigned
scan_gate_subchains(const char *relaxed, char **out, unsigned cap)
{
	struct chain c;
	unsigned m = 0;

	if (!relaxed || chain_parse(relaxed, false, &c) < 0)
		return 0;
	unsigned *starts = c.n ? malloc(c.n * sizeof(*starts)) : NULL;
	unsigned ns = 0;
	for (unsigned k = 0; starts && k < c.n; k++)
		if (c.a[k].solid)
			starts[ns++] = k;
	if (starts && chain_runs(&c, starts, ns, out, NULL, cap, &m) < 0) {
		while (m)
			free(out[--m]);
	}
	free(starts);
	free(c.a);
	return m;
}

char *
scan_gate_map_run(const char *form, const char *run, const char *form2)
{
	struct chain a, b;
	char *out = NULL;

	if (!form || !run || !form2)
		return NULL;
	if (!strcmp(run, form))
		return strdup(form2);
	if (chain_parse(form, false, &a) < 0)
		return NULL;
	if (chain_parse(form2, false, &b) < 0) {
		free(a.a);
		return NULL;
	}
	for (unsigned k = 0; a.n && a.n == b.n && k < a.n && !out; k++)
		for (unsigned end = k + 1; end <= a.n && !out; end++) {
			char *x = chain_run(&a, k, end);
			if (!x)
				goto done;
			if (!strcmp(x, run))
				out = chain_run(&b, k, end);
			free(x);
		}
done:
	free(a.a);
	free(b.a);
	return out;
}

/*
 * The SCAN_GATE_STARTS solid atoms (each followed by another solid one)
 * whose first bytes are rarest in the sample, rarest first, ties by
 * position; how many.
 */
static unsigned
rare_starts(const struct chain *c, const uint8_t *smp, size_t n, unsigned *starts)
{
	size_t freq[256] = {0};
	size_t weight[SCAN_GATE_STARTS];
	unsigned ns = 0, last = c->n;

	for (size_t i = 0; smp && i < n; i++)
		freq[smp[i]]++;
	for (unsigned k = c->n; k-- > 0;)
		if (c->a[k].solid) {
			last = k;
			break;
		}
	for (unsigned k = 0; k < last; k++) {
		if (!c->a[k].solid)
			continue;
		size_t w = 0;
		for (unsigned b = 0; b < 256; b++)
			if (set_has(c->a[k].first, b))
				w += freq[b] + 1;       /* + 1: a byte the sample lacks
				                           is rare, not free */
		/* insertion into the sorted few */
		unsigned at = ns;
		while (at > 0 && weight[at - 1] > w)
			at--;
		if (at >= SCAN_GATE_STARTS)
			continue;
		if (ns < SCAN_GATE_STARTS)
			ns++;
		for (unsigned j = ns - 1; j > at; j--) {
			weight[j] = weight[j - 1];
			starts[j] = starts[j - 1];
		}
		weight[at] = w;
		starts[at] = k;
	}
	return ns;
}

int
scan_gate_probe(unsigned int id, unsigned long long from, unsigned long long to,
    unsigned int flags, void *ctx)
{
	(void)id;
	(void)from;
	(void)to;
	(void)flags;
	*(bool *)ctx = true;
	return 1;               /* a gate needs one match */
}

/* a gate's match ends, merged into windows as run_pcre (hs.c) merges them */
struct near_count {
	unsigned width;
	unsigned long long hi;          /* the open window's last end */
	bool open;
	unsigned windows;
	unsigned long long span;        /* bytes PCRE2 may start in, all windows */
};

static int
near_end(unsigned int id, unsigned long long from, unsigned long long to, unsigned int flags,
    void *ctx)
{
	struct near_count *c = ctx;

	(void)id;
	(void)from;
	(void)flags;
	if (c->open && to <= c->hi + c->width) {
		c->span += to - c->hi;
		c->hi = to;
		return 0;
	}
	c->open = true;
	c->hi = to;
	c->windows++;
	c->span += c->width;
	return 0;
}

static double
elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/*
 * Compiles x alone (mode HS_MODE_BLOCK or HS_MODE_STREAM) and times its
 * scan of the sample, best of REPS; false if it does not compile, is over
 * max_db bytes or has no scratch.
 */
static bool
measure(const char *x, unsigned flags, unsigned mode, const uint8_t *smp, size_t n,
    size_t max_db, double *secs, double *share, struct near_count *near)
{
	hs_database_t *db = NULL;
	hs_compile_error_t *err = NULL;
	hs_scratch_t *sc = NULL;
	size_t dbs = 0;
	bool ok = false;

	struct timespec t0, t1;

	*secs = 0;
	*share = 0;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
	hs_error_t rc = hs_compile(x, flags, mode, scan_hs_target(), &db, &err);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
	if (rc != HS_SUCCESS) {
		if (getenv("SLUICE_GATE_DEBUG"))
			fprintf(stderr, "gate %s refused (%s): %.100s\n",
			    mode == HS_MODE_BLOCK ? "block" : "stream", err ? err->message : "?", x);
		hs_free_compile_error(err);
		return false;
	}
	if (hs_database_size(db, &dbs) != HS_SUCCESS || (max_db && dbs > max_db) ||
	    hs_alloc_scratch(db, &sc) != HS_SUCCESS)
		goto out;
	ok = true;
	if (!smp || !n)
		goto out;
	/* the sample as SAMPLE_MSGS messages: the share of them a gate opens
	 * on is the share of messages that would run PCRE2 behind it */
	*secs = 1e9;
	for (int rep = 0; rep < REPS; rep++) {
		struct timespec c0, c1;
		unsigned opened = 0;
		size_t per = (n + SAMPLE_MSGS - 1) / SAMPLE_MSGS;
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
		for (size_t m0 = 0; m0 < n && ok; m0 += per) {
			const uint8_t *mp = smp + m0;
			size_t mn = n - m0 < per ? n - m0 : per;
			bool op = false;
			hs_stream_t *st = NULL;
			if (mode == HS_MODE_BLOCK && near && near->width) {
				/* every end, as the engine collects them */
				struct near_count c = {.width = near->width};
				rc = hs_scan(db, (const char *)mp, (unsigned)mn, 0, sc, near_end, &c);
				if (rc != HS_SUCCESS)
					ok = false;
				op = c.windows > 0;
				if (rep == 0) {
					near->windows += c.windows;
					near->span += c.span;
				}
			} else if (mode == HS_MODE_BLOCK) {
				rc = hs_scan(db, (const char *)mp, (unsigned)mn, 0, sc, scan_gate_probe, &op);
				if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED)
					ok = false;
			} else if (hs_open_stream(db, 0, &st) == HS_SUCCESS) {
				for (size_t o = 0; o < mn && !op; o += CHUNK)
					hs_scan_stream(st, (const char *)mp + o,
					    (unsigned)(mn - o < CHUNK ? mn - o : CHUNK), 0, sc, scan_gate_probe, &op);
				hs_close_stream(st, sc, op ? NULL : scan_gate_probe, &op);
			} else
				ok = false;
			opened += op;
		}
		clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
		if (!ok)
			break;
		double t = elapsed(&c0, &c1);
		*secs = t < *secs ? t : *secs;
		*share = (double)opened / SAMPLE_MSGS;
	}
out:
	if (getenv("SLUICE_GATE_DEBUG"))
		fprintf(stderr, "gate %s %s compile %.3fs db=%zu scan %.1f us%s: %.100s\n",
		    mode == HS_MODE_BLOCK ? "block" : "stream", ok ? "ok" : "refused",
		    elapsed(&t0, &t1), dbs, *secs * 1e6, *share > 0 ? " opens" : "", x);
	hs_free_scratch(sc);
	hs_free_database(db);
	return ok;
}

int
scan_gate_pick(const char *prefilter, unsigned pf_flags, const char *relaxed,
    unsigned flags, const uint8_t *sample, size_t n, double pcre_seconds, size_t max_db,
    struct scan_gate_pick *out)
{
	return scan_gate_pick_near(prefilter, pf_flags, relaxed, flags, sample, n, pcre_seconds,
	    max_db, 0, out);
}

int
scan_gate_pick_near(const char *prefilter, unsigned pf_flags, const char *relaxed,
    unsigned flags, const uint8_t *sample, size_t n, double pcre_seconds, size_t max_db,
    unsigned width, struct scan_gate_pick *out)
{
	char *runs[SCAN_GATE_MAX_RUNS];
	unsigned from[SCAN_GATE_MAX_RUNS];     /* the start of each run */
	bool done[SCAN_GATE_STARTS] = {false};
	unsigned nr = 0;
	struct chain c = {0};
	int rc = 0;

	memset(out, 0, sizeof(*out));
	if (relaxed) {
		unsigned starts[SCAN_GATE_STARTS];
		if ((rc = chain_parse(relaxed, flags & HS_FLAG_CASELESS, &c)) < 0)
			return rc;
		unsigned ns = c.n ? rare_starts(&c, sample, n, starts) : 0;
		rc = chain_runs(&c, starts, ns, runs, from, SCAN_GATE_MAX_RUNS, &nr);
		free(c.a);
		if (rc < 0)
			goto out;
	}

	/* in order of preference on a tie */
	const char *best = NULL;
	double best_cost = pcre_seconds;
	for (unsigned i = 0; i < 2 + nr; i++) {
		const char *x = i == 0 ? prefilter : i == 1 ? relaxed : runs[i - 2];
		unsigned f = i == 0 ? pf_flags : width ? flags & ~(unsigned)HS_FLAG_SINGLEMATCH : flags;
		unsigned mode = i == 0 ? HS_MODE_STREAM : HS_MODE_BLOCK;
		double secs, share;
		struct near_count near = {.width = i == 0 ? 0 : width};
		if (!x || (i >= 2 && done[from[i - 2]]))
			continue;
		out->tried++;
		if (!measure(x, f, mode, sample, n, max_db, &secs, &share, &near))
			continue;
		bool opens = share > 0;
		/* a longer run from the same start matches less and has more
		 * states to track: once one stays shut, the rest cannot be
		 * cheaper by much, and their compiles are the build time */
		if (i >= 2 && !opens)
			done[from[i - 2]] = true;
		double cost = secs + share * pcre_seconds;
		if (near.width && n) {
			/* PCRE2 near the gate's ends: a search per window, over
			 * the bytes it may start in (and its width past them) */
			double per_byte = pcre_seconds / (double)n;
			double nc = near.windows * NEAR_CALL_SECONDS +
			    (double)(near.span + (unsigned long long)near.windows * width) * per_byte;
			if (nc < share * pcre_seconds)
				cost = secs + nc;
		}
		if (cost < best_cost) {
			best = x;
			best_cost = cost;
			out->flags = f;
			out->mode = i == 0 ? SCAN_GATE_STREAM : SCAN_GATE_BLOCK;
			out->seconds = secs;
			out->opens = opens;
		}
	}
	if (best && !(out->expr = strdup(best))) {
		out->mode = SCAN_GATE_NONE;
		rc = -ENOMEM;
	}
	if (!best) {
		out->flags = 0;
		out->mode = SCAN_GATE_NONE;
	}
out:
	while (nr)
		free(runs[--nr]);
	return rc;
}

const struct hs_platform_info *
scan_hs_target(void)
{
	static hs_platform_info_t pl;
	static int state;       /* 0 unread, 1 host (NULL), 2 pl */

	if (state == 0) {
		const char *v = getenv("SLUICE_HS_PLATFORM");
		state = 1;
		if (v && (!strcmp(v, "avx2") || !strcmp(v, "generic")) &&
		    hs_populate_platform(&pl) == HS_SUCCESS) {
			pl.cpu_features = !strcmp(v, "avx2") ? HS_CPU_FEATURES_AVX2 : 0;
			state = 2;
		}
	}
	return state == 2 ? &pl : NULL;
}

void
scan_gate_pick_free(struct scan_gate_pick *p)
{
	free(p->expr);
	memset(p, 0, sizeof(*p));
}
