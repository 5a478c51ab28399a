/*
 * rules.c - SpamAssassin rule files: line parser, ReplaceTags, meta
 * expressions compiled to RPN and evaluated in dependency order.
 * Control plane only (allocates); see rules.h for the dialect.
 */
#include "scan/rules.h"
#include "scan/strbuf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COND_MAX 32

struct tag {
	char *name;
	char *val;
};

struct scan_rules_priv {
	uint32_t *tab;          /* open addressing: index + 1, 0 empty */
	uint32_t tab_cap;
	uint32_t cap;
	char **files;
	unsigned n_files;
	struct tag *tags[4];    /* tag, pre, inter, post */
	unsigned n_tags[4];
	unsigned skips_cap;
	/* conditional stack: 1 = lines taken */
	uint8_t cond[COND_MAX];
	uint8_t cond_parent[COND_MAX];
	unsigned ncond;
	unsigned cond_overflow;
	/* meta evaluation (meta_deps, after ordering): a meta's value when
	 * every rule it reads is at rest (no regex rule hit), and who reads whom */
	uint8_t *meta_rest;     /* per rule: the meta's value at rest */
	uint32_t *dep_off;      /* per rule + 1: its readers, dep[dep_off[i] ..] */
	uint32_t *dep;          /* active metas that read rule i */
	uint32_t *base;         /* rules read by metas that are not active metas */
	uint32_t n_base;
	uint8_t *reaches;       /* per rule: it counts, or a meta that reaches one
	                           reads it (lazy evaluation: the others never matter) */
};

enum { TAG_TAG = 0, TAG_PRE, TAG_INTER, TAG_POST };

static const char *const type_names[SCAN_RT_COUNT] = {
	"header", "body", "rawbody", "full", "uri", "meta",
};

const char *
scan_rules_type_name(unsigned type)
{
	return type < SCAN_RT_COUNT ? type_names[type] : "?";
}

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

static char *
xstrndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

static void diag(struct scan_ruleset *rs, const char *file, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
diag(struct scan_ruleset *rs, const char *file, unsigned line, const char *fmt, ...)
{
	char msg[512];
	int k;
	va_list ap;

	rs->st.errors++;
	if (rs->n_diag >= SCAN_RULES_DIAG_MAX)
		return;
	k = snprintf(msg, sizeof(msg), "%s:%u: ", file, line);
	if (k < 0 || (size_t)k >= sizeof(msg))
		k = 0;
	va_start(ap, fmt);
	vsnprintf(msg + k, sizeof(msg) - (size_t)k, fmt, ap);
	va_end(ap);
	char **d = realloc(rs->diag, (rs->n_diag + 1) * sizeof(*d));
	if (!d)
		return;
	rs->diag = d;
	d[rs->n_diag] = strdup(msg);
	if (d[rs->n_diag])
		rs->n_diag++;
}

static void
count_skip(struct scan_ruleset *rs, const char *name, size_t n)
{
	struct scan_rules_priv *p = rs->priv;

	rs->st.skipped_directives++;
	if (n >= sizeof(rs->skips[0].name))
		n = sizeof(rs->skips[0].name) - 1;
	for (unsigned i = 0; i < rs->n_skips; i++)
		if (strlen(rs->skips[i].name) == n && !memcmp(rs->skips[i].name, name, n)) {
			rs->skips[i].count++;
			return;
		}
	if (rs->n_skips == p->skips_cap) {
		unsigned c = p->skips_cap ? p->skips_cap * 2 : 16;
		struct scan_rules_skip *s = realloc(rs->skips, c * sizeof(*s));
		if (!s)
			return;
		rs->skips = s;
		p->skips_cap = c;
	}
	memcpy(rs->skips[rs->n_skips].name, name, n);
	rs->skips[rs->n_skips].name[n] = '\0';
	rs->skips[rs->n_skips].count = 1;
	rs->n_skips++;
}

struct scan_ruleset *
scan_rules_new(void)
{
	struct scan_ruleset *rs = calloc(1, sizeof(*rs));

	if (!rs)
		return NULL;
	rs->priv = calloc(1, sizeof(*rs->priv));
	if (!rs->priv) {
		free(rs);
		errno = ENOMEM;
		return NULL;
	}
	return rs;
}

struct scan_ruleset *
scan_rules_free(struct scan_ruleset *rs)
{
	if (!rs)
		return NULL;
	for (uint32_t i = 0; i < rs->n; i++) {
		struct scan_rule *r = &rs->rules[i];
		free(r->name);
		free(r->header);
		free(r->re);
		free(r->unset);
		free(r->meta_src);
		free(r->meta);
		free(r->describe);
	}
	free(rs->rules);
	free(rs->meta_order);
	for (unsigned i = 0; i < rs->n_diag; i++)
		free(rs->diag[i]);
	free(rs->diag);
	free(rs->skips);
	for (uint32_t i = 0; i < rs->n_tlds; i++)
		free(rs->tlds[i]);
	free(rs->tlds);
	for (uint32_t i = 0; i < rs->n_redirs; i++)
		pcre2_code_free(rs->redirs[i]);
	free(rs->redirs);
	if (rs->priv) {
		struct scan_rules_priv *p = rs->priv;
		free(p->tab);
		for (unsigned i = 0; i < p->n_files; i++)
			free(p->files[i]);
		free(p->files);
		for (int k = 0; k < 4; k++) {
			for (unsigned i = 0; i < p->n_tags[k]; i++) {
				free(p->tags[k][i].name);
				free(p->tags[k][i].val);
			}
			free(p->tags[k]);
		}
		free(p->meta_rest);
		free(p->reaches);
		free(p->dep_off);
		free(p->dep);
		free(p->base);
		free(p);
	}
	free(rs);
	return NULL;
}

/* ---- name table ---- */

static int
find_n(const struct scan_ruleset *rs, const char *name, size_t n)
{
	const struct scan_rules_priv *p = rs->priv;

	if (!p->tab_cap)
		return -1;
	uint32_t m = p->tab_cap - 1;
	for (uint32_t h = (uint32_t)fnv(name, n, 0xcbf29ce484222325ull) & m;; h = (h + 1) & m) {
		uint32_t v = p->tab[h];
		if (!v)
			return -1;
		const char *s = rs->rules[v - 1].name;
		if (!strncmp(s, name, n) && s[n] == '\0')
			return (int)(v - 1);
	}
}

int
scan_rules_find(const struct scan_ruleset *rs, const char *name)
{
	return find_n(rs, name, strlen(name));
}

static int
tab_insert(struct scan_ruleset *rs, uint32_t idx)
{
	struct scan_rules_priv *p = rs->priv;

	if ((rs->n + 1) * 2 > p->tab_cap) {
		uint32_t c = p->tab_cap ? p->tab_cap * 2 : 1024;
		uint32_t *t = calloc(c, sizeof(*t));
		if (!t)
			return -ENOMEM;
		free(p->tab);
		p->tab = t;
		p->tab_cap = c;
		for (uint32_t i = 0; i < rs->n; i++)
			if (i != idx) {
				const char *s = rs->rules[i].name;
				uint32_t h = (uint32_t)fnv(s, strlen(s), 0xcbf29ce484222325ull) & (c - 1);
				while (t[h])
					h = (h + 1) & (c - 1);
				t[h] = i + 1;
			}
	}
	const char *s = rs->rules[idx].name;
	uint32_t m = p->tab_cap - 1;
	uint32_t h = (uint32_t)fnv(s, strlen(s), 0xcbf29ce484222325ull) & m;
	while (p->tab[h])
		h = (h + 1) & m;
	p->tab[h] = idx + 1;
	return 0;
}

/* The rule called name (n bytes), created undefined when new; NULL: ENOMEM. */
static struct scan_rule *
rule_get(struct scan_ruleset *rs, const char *name, size_t n)
{
	struct scan_rules_priv *p = rs->priv;
	int i = find_n(rs, name, n);

	if (i >= 0)
		return &rs->rules[i];
	if (rs->n == p->cap) {
		uint32_t c = p->cap ? p->cap * 2 : 512;
		struct scan_rule *r = realloc(rs->rules, c * sizeof(*r));
		if (!r)
			return NULL;
		rs->rules = r;
		p->cap = c;
	}
	struct scan_rule *r = &rs->rules[rs->n];
	memset(r, 0, sizeof(*r));
	r->name = xstrndup(name, n);
	if (!r->name)
		return NULL;
	r->state = SCAN_RS_UNDEFINED;
	r->type = SCAN_RT_COUNT;
	rs->n++;
	if (tab_insert(rs, rs->n - 1) < 0) {
		free(r->name);
		rs->n--;
		return NULL;
	}
	return r;
}

static void
rule_clear_def(struct scan_rule *r)
{
	free(r->header);
	free(r->re);
	free(r->unset);
	free(r->meta_src);
	free(r->meta);
	r->header = r->re = r->unset = r->meta_src = NULL;
	r->meta = NULL;
	r->meta_n = 0;
	r->hmod = r->negate = r->exists = 0;
	r->re_flags = 0;
}

/* ---- lexing helpers ---- */

static const char *
skip_ws(const char *s, const char *e)
{
	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	return s;
}

static const char *
word_end(const char *s, const char *e)
{
	while (s < e && *s != ' ' && *s != '\t')
		s++;
	return s;
}

static bool
valid_name(const char *s, size_t n)
{
	if (!n || n > 200)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

/*
 * Parses a Perl match operator at s: /re/flags, m/re/flags or m{re}flags
 * (any punctuation delimiter). On success *re / *flags are set and the
 * pointer after the flags is returned; NULL with *why on a malformed one.
 */
static const char *
parse_regex(const char *s, const char *e, char **re, uint32_t *flags, const char **why)
{
	char open, close;
	int depth = 0;

	if (s < e && *s == 'm' && s + 1 < e && ispunct((unsigned char)s[1]) && s[1] != '_')
		s++;
	if (s >= e || !ispunct((unsigned char)*s)) {
		*why = "regex must start with / or m";
		return NULL;
	}
	open = *s++;
	switch (open) {
	case '{': close = '}'; break;
	case '(': close = ')'; break;
	case '[': close = ']'; break;
	case '<': close = '>'; break;
	default: close = open; break;
	}
	const char *b = s;
	for (; s < e; s++) {
		if (*s == '\\' && s + 1 < e) {
			s++;
			continue;
		}
		if (open != close && *s == open)
			depth++;
		else if (*s == close) {
			if (depth == 0)
				break;
			depth--;
		}
	}
	if (s >= e) {
		*why = "unterminated regex";
		return NULL;
	}
	size_t len = (size_t)(s - b);
	s++;
	*flags = 0;
	for (; s < e && isalpha((unsigned char)*s); s++) {
		switch (*s) {
		case 'i': *flags |= SCAN_RE_I; break;
		case 'm': *flags |= SCAN_RE_M; break;
		case 's': *flags |= SCAN_RE_S; break;
		case 'x': *flags |= SCAN_RE_X; break;
		case 'g': case 'o': break;
		default:
			*why = "unsupported regex flag";
			return NULL;
		}
	}
	if (!len) {
		*why = "empty regex";
		return NULL;
	}
	*re = xstrndup(b, len);
	if (!*re) {
		*why = "out of memory";
		return NULL;
	}
	return s;
}

/* ---- conditionals ---- */

/* s[0..n) is one of the names in list[0..count). */
static bool
name_in(const char *const *list, size_t count, const char *s, size_t n)
{
	for (size_t i = 0; i < count; i++)
		if (strlen(list[i]) == n && !memcmp(list[i], s, n))
			return true;
	return false;
}

static bool
plugin_loaded(const char *s, size_t n)
{
	static const char *const loaded[] = {
		"Mail::SpamAssassin::Plugin::Check",
		"Mail::SpamAssassin::Plugin::ReplaceTags",
	};
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return name_in(loaded, sizeof(loaded) / sizeof(loaded[0]), s, n);
}

static bool
can_feature(const char *s, size_t n)
{
	static const char *const yes[] = {
		"Mail::SpamAssassin::Conf::feature_bug6558_free",
		"Mail::SpamAssassin::Conf::perl_min_version_5010000",
	};
	return name_in(yes, sizeof(yes) / sizeof(yes[0]), s, n);
}

struct cexpr {
	const char *s, *e;
	bool bad;
	unsigned depth;         /* ( and ! nested: at most CX_DEPTH */
};
#define CX_DEPTH 64

static double cx_or(struct cexpr *c);

static void
cx_ws(struct cexpr *c)
{
	c->s = skip_ws(c->s, c->e);
}

static bool
cx_eat(struct cexpr *c, const char *tok)
{
	size_t n = strlen(tok);

	cx_ws(c);
	if ((size_t)(c->e - c->s) >= n && !memcmp(c->s, tok, n)) {
		c->s += n;
		return true;
	}
	return false;
}

static double
cx_primary(struct cexpr *c)
{
	cx_ws(c);
	if (c->s >= c->e || c->depth >= CX_DEPTH) {
		c->bad = true;  /* a line nested deeper is not a condition here */
		return 0;
	}
	if (*c->s == '!' && !(c->s + 1 < c->e && c->s[1] == '=')) {
		c->s++;
		c->depth++;
		double v = !cx_primary(c);
		c->depth--;
		return v;
	}
	if (*c->s == '(') {
		c->s++;
		c->depth++;
		double v = cx_or(c);
		c->depth--;
		if (!cx_eat(c, ")"))
			c->bad = true;
		return v;
	}
	if (isdigit((unsigned char)*c->s)) {
		char *end;
		double v = strtod(c->s, &end);
		c->s = end;
		return v;
	}
	if (cx_eat(c, "version"))
		return 4.000000;
	if (cx_eat(c, "perl_version"))
		return 5.036;
	bool is_plugin = cx_eat(c, "plugin");
	if (is_plugin || cx_eat(c, "can") || cx_eat(c, "has")) {
		if (!cx_eat(c, "(")) {
			c->bad = true;
			return 0;
		}
		cx_ws(c);
		const char *b = c->s;
		while (c->s < c->e && *c->s != ')')
			c->s++;
		size_t n = (size_t)(c->s - b);
		while (n && (b[n - 1] == ' ' || b[n - 1] == '\t'))
			n--;
		if (!cx_eat(c, ")"))
			c->bad = true;
		return is_plugin ? plugin_loaded(b, n) : can_feature(b, n);
	}
	c->bad = true;
	return 0;
}

static double
cx_cmp(struct cexpr *c)
{
	double a = cx_primary(c);

	for (;;) {
		if (cx_eat(c, ">="))
			a = a >= cx_primary(c);
		else if (cx_eat(c, "<="))
			a = a <= cx_primary(c);
		else if (cx_eat(c, "=="))
			a = a == cx_primary(c);
		else if (cx_eat(c, "!="))
			a = a != cx_primary(c);
		else if (cx_eat(c, ">"))
			a = a > cx_primary(c);
		else if (cx_eat(c, "<"))
			a = a < cx_primary(c);
		else
			return a;
	}
}

static double
cx_and(struct cexpr *c)
{
	double a = cx_cmp(c);

	while (cx_eat(c, "&&")) {
		double b = cx_cmp(c);
		a = a && b;
	}
	return a;
}

static double
cx_or(struct cexpr *c)
{
	double a = cx_and(c);

	while (cx_eat(c, "||")) {
		double b = cx_and(c);
		a = a || b;
	}
	return a;
}

static bool
cond_active(const struct scan_rules_priv *p)
{
	return p->ncond == 0 || p->cond[p->ncond - 1];
}

/* ---- ReplaceTags ---- */

static int
tag_set(struct scan_ruleset *rs, int kind, const char *name, size_t nn, const char *val, size_t vn)
{
	struct scan_rules_priv *p = rs->priv;
	struct tag *t;

	for (unsigned i = 0; i < p->n_tags[kind]; i++) {
		t = &p->tags[kind][i];
		if (strlen(t->name) == nn && !memcmp(t->name, name, nn)) {
			char *v = xstrndup(val, vn);
			if (!v)
				return -ENOMEM;
			free(t->val);
			t->val = v;
			return 0;
		}
	}
	t = realloc(p->tags[kind], (p->n_tags[kind] + 1) * sizeof(*t));
	if (!t)
		return -ENOMEM;
	p->tags[kind] = t;
	t = &t[p->n_tags[kind]];
	t->name = xstrndup(name, nn);
	t->val = xstrndup(val, vn);
	if (!t->name || !t->val) {
		free(t->name);
		free(t->val);
		return -ENOMEM;
	}
	p->n_tags[kind]++;
	return 0;
}

static const char *
tag_get(const struct scan_rules_priv *p, int kind, const char *name, size_t n)
{
	for (unsigned i = 0; i < p->n_tags[kind]; i++)
		if (strlen(p->tags[kind][i].name) == n && !memcmp(p->tags[kind][i].name, name, n))
			return p->tags[kind][i].val;
	return NULL;
}

/*
 * Expands <TAG> references in s; pre/post wrap each expansion, inter goes
 * between two adjacent ones (the ReplaceTags plugin's rules). depth bounds
 * tags that name tags.
 */
static void
expand_tags(const struct scan_rules_priv *p, const char *s, struct scan_sb *out,
    const char *pre, const char *inter, const char *post, int depth)
{
	const char *last_end = NULL;

	while (*s && out->n <= SCAN_RE_EXPAND_MAX) {
		if (*s == '\\' && s[1]) {
			scan_sb_put(out, s, 2);
			s += 2;
			continue;
		}
		if (*s == '<') {
			const char *q = s + 1;
			while (*q && (isalnum((unsigned char)*q) || *q == '_'))
				q++;
			const char *v = NULL;
			if (*q == '>' && q > s + 1)
				v = tag_get(p, TAG_TAG, s + 1, (size_t)(q - s - 1));
			if (v && depth < 8) {
				if (last_end == s && inter)
					scan_sb_puts(out, inter);
				if (pre)
					scan_sb_puts(out, pre);
				scan_sb_puts(out, "(?:");
				expand_tags(p, v, out, NULL, NULL, NULL, depth + 1);
				scan_sb_puts(out, ")");
				if (post)
					scan_sb_puts(out, post);
				s = q + 1;
				last_end = s;
				continue;
			}
		}
		scan_sb_put(out, s, 1);
		s++;
	}
}

/* Applies replace tags to a rule's regex; -1 and a diagnostic on an unknown pre/post/inter. */
static int
replace_rule(struct scan_ruleset *rs, struct scan_rule *r)
{
	const struct scan_rules_priv *p = rs->priv;
	const char *pre = NULL, *inter = NULL, *post = NULL;
	struct scan_sb stripped = {0}, out = {0};
	const char *s = r->re;

	while (*s) {
		static const char *const kw[3] = {"<pre ", "<inter ", "<post "};
		int k;
		for (k = 0; k < 3; k++)
			if (!strncmp(s, kw[k], strlen(kw[k])))
				break;
		if (k < 3) {
			const char *n = s + strlen(kw[k]);
			const char *q = strchr(n, '>');
			if (q) {
				const char *v = tag_get(p, k == 0 ? TAG_PRE : k == 1 ? TAG_INTER : TAG_POST,
				    n, (size_t)(q - n));
				if (!v) {
					diag(rs, r->file, r->line, "%s: unknown replace tag %.*s",
					    r->name, (int)(q - s + 1), s);
					free(stripped.p);
					return -1;
				}
				if (k == 0)
					pre = v;
				else if (k == 1)
					inter = v;
				else
					post = v;
				s = q + 1;
				continue;
			}
		}
		if (*s == '\\' && s[1]) {
			scan_sb_put(&stripped, s, 2);
			s += 2;
			continue;
		}
		scan_sb_put(&stripped, s, 1);
		s++;
	}
	if (!stripped.p)
		scan_sb_put(&stripped, "", 0);
	expand_tags(p, stripped.p ? stripped.p : "", &out, pre, inter, post, 0);
	free(stripped.p);
	if (out.n > SCAN_RE_EXPAND_MAX) {
		diag(rs, r->file, r->line, "%s: replace tags expand the pattern past %u bytes "
		    "(a tag that names itself?)", r->name, SCAN_RE_EXPAND_MAX);
		free(out.p);
		return -1;
	}
	if (out.oom || !out.p) {
		free(out.p);
		return -1;
	}
	free(r->re);
	r->re = out.p;
	return 0;
}

/* ---- directives ---- */

struct line {
	const char *file;
	unsigned no;
};

static int
def_regex_rule(struct scan_ruleset *rs, const struct line *ln, int type,
    const char *name, size_t nn, const char *s, const char *e)
{
	struct scan_rule *r;
	const char *why = NULL;
	char *re = NULL;
	uint32_t flags = 0;

	if (!valid_name(name, nn)) {
		diag(rs, ln->file, ln->no, "bad rule name");
		return 0;
	}
	r = rule_get(rs, name, nn);
	if (!r)
		return -ENOMEM;
	if (r->defined) {
		rs->st.redefined++;
		rs->st.defined[r->type]--;
	}
	rule_clear_def(r);
	r->defined = 1;
	r->type = (uint8_t)type;
	r->file = ln->file;
	r->line = ln->no;
	r->state = SCAN_RS_ACTIVE;
	rs->st.defined[type]++;

	s = skip_ws(s, e);
	if ((size_t)(e - s) >= 5 && !memcmp(s, "eval:", 5)) {
		r->state = SCAN_RS_EVAL;
		return 0;
	}
	if (type == SCAN_RT_HEADER) {
		const char *he;
		if ((size_t)(e - s) >= 7 && !memcmp(s, "exists:", 7)) {
			s += 7;
			he = word_end(s, e);
			if (he == s) {
				diag(rs, ln->file, ln->no, "%s: exists: without a header name", r->name);
				r->state = SCAN_RS_BROKEN;
				return 0;
			}
			r->header = xstrndup(s, (size_t)(he - s));
			if (!r->header)
				return -ENOMEM;
			for (char *c = r->header; *c; c++)
				*c = (char)tolower((unsigned char)*c);
			r->exists = 1;
			return 0;
		}
		he = s;
		while (he < e && *he != ' ' && *he != '\t' && *he != '=' && *he != '!')
			he++;
		const char *colon = memchr(s, ':', (size_t)(he - s));
		const char *hn_end = colon ? colon : he;
		if (hn_end == s) {
			diag(rs, ln->file, ln->no, "%s: no header name", r->name);
			r->state = SCAN_RS_BROKEN;
			return 0;
		}
		if (colon) {
			size_t mn = (size_t)(he - colon - 1);
			bool raw = mn == 8 && !memcmp(colon + 5, ":raw", 4);
			if (mn == 3 && !memcmp(colon + 1, "raw", 3))
				r->hmod = SCAN_HMOD_RAW;
			else if ((mn == 4 || raw) && !memcmp(colon + 1, "addr", 4))
				r->hmod = raw ? SCAN_HMOD_ADDR_RAW : SCAN_HMOD_ADDR;
			else if ((mn == 4 || raw) && !memcmp(colon + 1, "name", 4))
				r->hmod = raw ? SCAN_HMOD_NAME_RAW : SCAN_HMOD_NAME;
			else {
				diag(rs, ln->file, ln->no, "%s: unsupported header modifier :%.*s",
				    r->name, (int)mn, colon + 1);
				r->state = SCAN_RS_BROKEN;
				return 0;
			}
		}
		r->header = xstrndup(s, (size_t)(hn_end - s));
		if (!r->header)
			return -ENOMEM;
		for (char *c = r->header; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		s = skip_ws(he, e);
		if ((size_t)(e - s) >= 2 && s[0] == '=' && s[1] == '~')
			s += 2;
		else if ((size_t)(e - s) >= 2 && s[0] == '!' && s[1] == '~') {
			r->negate = 1;
			s += 2;
		} else {
			diag(rs, ln->file, ln->no, "%s: expected =~ or !~", r->name);
			r->state = SCAN_RS_BROKEN;
			return 0;
		}
		s = skip_ws(s, e);
	}
	s = parse_regex(s, e, &re, &flags, &why);
	if (!s) {
		diag(rs, ln->file, ln->no, "%s: %s", r->name, why);
		r->state = SCAN_RS_BROKEN;
		return why && !strcmp(why, "out of memory") ? -ENOMEM : 0;
	}
	r->re = re;
	r->re_flags = flags;
	s = skip_ws(s, e);
	if (type == SCAN_RT_HEADER && (size_t)(e - s) >= 11 && !memcmp(s, "[if-unset:", 10)) {
		const char *b = skip_ws(s + 10, e);
		const char *q = e;
		while (q > b && q[-1] != ']')
			q--;
		if (q > b) {
			q--;
			while (q > b && (q[-1] == ' ' || q[-1] == '\t'))
				q--;
			r->unset = xstrndup(b, (size_t)(q - b));
			if (!r->unset)
				return -ENOMEM;
		}
		s = e;
	}
	if (s < e)
		diag(rs, ln->file, ln->no, "%s: trailing text after regex ignored", r->name);
	return 0;
}

static int
def_meta(struct scan_ruleset *rs, const struct line *ln, const char *name, size_t nn,
    const char *s, const char *e)
{
	struct scan_rule *r;

	if (!valid_name(name, nn)) {
		diag(rs, ln->file, ln->no, "bad rule name");
		return 0;
	}
	r = rule_get(rs, name, nn);
	if (!r)
		return -ENOMEM;
	if (r->defined) {
		rs->st.redefined++;
		rs->st.defined[r->type]--;
	}
	rule_clear_def(r);
	r->defined = 1;
	r->type = SCAN_RT_META;
	r->file = ln->file;
	r->line = ln->no;
	r->state = SCAN_RS_ACTIVE;
	rs->st.defined[SCAN_RT_META]++;
	s = skip_ws(s, e);
	r->meta_src = xstrndup(s, (size_t)(e - s));
	return r->meta_src ? 0 : -ENOMEM;
}

static int
set_attr(struct scan_ruleset *rs, const struct line *ln, const char *dir,
    const char *name, size_t nn, const char *s, const char *e)
{
	struct scan_rule *r;

	if (!valid_name(name, nn)) {
		diag(rs, ln->file, ln->no, "%s: bad rule name", dir);
		return 0;
	}
	r = rule_get(rs, name, nn);
	if (!r)
		return -ENOMEM;
	s = skip_ws(s, e);
	if (!strcmp(dir, "score")) {
		char *end;
		const char *b = s;
		if (s < e && *s == '(')
			b++;
		double v = strtod(b, &end);
		if (end == b || end > e) {
			diag(rs, ln->file, ln->no, "score %s: not a number", r->name);
			return 0;
		}
		r->score = v;
		r->has_score = 1;
		rs->st.scores++;
	} else if (!strcmp(dir, "describe")) {
		char *d = xstrndup(s, (size_t)(e - s));
		if (!d)
			return -ENOMEM;
		free(r->describe);
		r->describe = d;
		rs->st.describes++;
	} else { /* tflags */
		rs->st.tflags_lines++;
		r->tflags = 0;
		r->maxhits = 0;
		while (s < e) {
			const char *w = word_end(s, e);
			size_t n = (size_t)(w - s);
			if (n == 8 && !memcmp(s, "multiple", 8))
				r->tflags |= SCAN_TF_MULTIPLE;
			else if (n == 9 && !memcmp(s, "nosubject", 9))
				r->tflags |= SCAN_TF_NOSUBJECT;
			else if (n > 8 && !memcmp(s, "maxhits=", 8))
				r->maxhits = (uint32_t)strtoul(s + 8, NULL, 10);
			else {
				rs->st.tflags_ignored++;
				if (n == 4 && !memcmp(s, "nice", 4))
					r->tflags |= SCAN_TF_NICE;
				else if (n == 3 && !memcmp(s, "net", 3))
					r->tflags |= SCAN_TF_NET;
				else if (n == 5 && !memcmp(s, "learn", 5))
					r->tflags |= SCAN_TF_LEARN;
				else if (n == 8 && !memcmp(s, "userconf", 8))
					r->tflags |= SCAN_TF_USERCONF;
				else if (n == 11 && !memcmp(s, "noautolearn", 11))
					r->tflags |= SCAN_TF_NOAUTOLEARN;
				else if (n == 7 && !memcmp(s, "publish", 7))
					r->tflags |= SCAN_TF_PUBLISH;
				else
					r->tflags |= SCAN_TF_OTHER;
			}
			s = skip_ws(w, e);
		}
	}
	return 0;
}

/* See rules.h. */
const char *
scan_rules_brace_end(const char *p, const char *ok)
{
	size_t n = ok ? strspn(p + 1, ok) : strcspn(p + 1, "}()[]|\\");

	return n && p[1 + n] == '}' ? p + n + 2 : NULL;
}

/* See rules.h. */
uint32_t
scan_rules_pcre2_options(uint32_t re_flags)
{
	return (re_flags & SCAN_RE_I ? PCRE2_CASELESS : 0) |
	    (re_flags & SCAN_RE_M ? PCRE2_MULTILINE : 0) |
	    (re_flags & SCAN_RE_S ? PCRE2_DOTALL : 0) |
	    (re_flags & SCAN_RE_X ? PCRE2_EXTENDED : 0);
}

/*
 * redirector_pattern /re/flags: a redirector's URI, whose group 1 is where
 * it leads (SpamAssassin's Conf.pm; scan.c reads the target as a URI of
 * its own). Compiled here, once; one that PCRE2 refuses is reported with
 * file:line and left out.
 */
static int
redirector(struct scan_ruleset *rs, const struct line *ln, const char *a, const char *e)
{
	char *re = NULL, m[128];
	const char *why = NULL;
	uint32_t fl = 0;
	int err;
	PCRE2_SIZE off;

	if (!parse_regex(a, e, &re, &fl, &why)) {
		diag(rs, ln->file, ln->no, "redirector_pattern: %s", why);
		return 0;
	}
	pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
	    scan_rules_pcre2_options(fl), &err, &off, NULL);
	free(re);
	if (!c) {
		pcre2_get_error_message(err, (PCRE2_UCHAR *)m, sizeof(m));
		diag(rs, ln->file, ln->no, "redirector_pattern: %s at offset %zu", m, (size_t)off);
		return 0;
	}
	pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);
	struct pcre2_real_code_8 **v = realloc(rs->redirs, (rs->n_redirs + 1) * sizeof(*v));
	if (!v) {
		pcre2_code_free(c);
		return -ENOMEM;
	}
	rs->redirs = v;
	v[rs->n_redirs++] = c;
	return 0;
}

static int
do_line(struct scan_ruleset *rs, const struct line *ln, const char *s, const char *e)
{
	struct scan_rules_priv *p = rs->priv;
	const char *w = word_end(s, e);
	size_t dn = (size_t)(w - s);
	char dir[32];

	if (dn >= sizeof(dir)) {
		if (cond_active(p))
			count_skip(rs, s, dn);
		else
			rs->st.cond_skipped++;
		return 0;
	}
	for (size_t i = 0; i < dn; i++)
		dir[i] = (char)tolower((unsigned char)s[i]);
	dir[dn] = '\0';
	const char *a = skip_ws(w, e);

	/* conditionals are tracked even inside a false branch */
	if (!strcmp(dir, "ifplugin") || !strcmp(dir, "if")) {
		bool v;
		if (dir[2] == 'p')
			v = plugin_loaded(a, (size_t)(e - a));
		else {
			struct cexpr c = {a, e, false};
			v = cx_or(&c) != 0;
			cx_ws(&c);
			if (c.bad || c.s != c.e) {
				diag(rs, ln->file, ln->no, "if: cannot evaluate \"%.*s%s\", taken as false",
				    (int)(e - a > 80 ? 80 : e - a), a, e - a > 80 ? "..." : "");
				v = false;
			}
		}
		if (p->ncond == COND_MAX) {
			p->cond_overflow++;
			diag(rs, ln->file, ln->no, "conditionals nested too deep");
			return 0;
		}
		p->cond_parent[p->ncond] = cond_active(p);
		p->cond[p->ncond] = p->cond_parent[p->ncond] && v;
		p->ncond++;
		return 0;
	}
	if (!strcmp(dir, "else")) {
		if (!p->ncond)
			diag(rs, ln->file, ln->no, "else without if");
		else
			p->cond[p->ncond - 1] = p->cond_parent[p->ncond - 1] && !p->cond[p->ncond - 1];
		return 0;
	}
	if (!strcmp(dir, "endif")) {
		if (p->cond_overflow)
			p->cond_overflow--;
		else if (!p->ncond)
			diag(rs, ln->file, ln->no, "endif without if");
		else
			p->ncond--;
		return 0;
	}
	if (!cond_active(p)) {
		rs->st.cond_skipped++;
		return 0;
	}
	if (!strcmp(dir, "lang")) {
		rs->st.lang_skipped++;
		return 0;
	}
	if (!strcmp(dir, "include")) {
		rs->st.includes_skipped++;
		diag(rs, ln->file, ln->no, "include not followed (load the file explicitly)");
		return 0;
	}

	const char *ne = word_end(a, e);
	const char *rest = skip_ws(ne, e);
	size_t nn = (size_t)(ne - a);
	int type = -1;

	if (!strcmp(dir, "header"))
		type = SCAN_RT_HEADER;
	else if (!strcmp(dir, "body"))
		type = SCAN_RT_BODY;
	else if (!strcmp(dir, "rawbody"))
		type = SCAN_RT_RAWBODY;
	else if (!strcmp(dir, "full"))
		type = SCAN_RT_FULL;
	else if (!strcmp(dir, "uri"))
		type = SCAN_RT_URI;
	if (type >= 0) {
		if (!nn || rest >= e) {
			diag(rs, ln->file, ln->no, "%s: missing name or pattern", dir);
			return 0;
		}
		return def_regex_rule(rs, ln, type, a, nn, rest, e);
	}
	if (!strcmp(dir, "meta")) {
		if (!nn || rest >= e) {
			diag(rs, ln->file, ln->no, "meta: missing name or expression");
			return 0;
		}
		return def_meta(rs, ln, a, nn, rest, e);
	}
	if (!strcmp(dir, "score") || !strcmp(dir, "describe") || !strcmp(dir, "tflags")) {
		if (!nn) {
			diag(rs, ln->file, ln->no, "%s: missing rule name", dir);
			return 0;
		}
		return set_attr(rs, ln, dir, a, nn, rest, e);
	}
	if (!strcmp(dir, "replace_tag") || !strcmp(dir, "replace_pre") ||
	    !strcmp(dir, "replace_inter") || !strcmp(dir, "replace_post")) {
		int kind = dir[8] == 't' ? TAG_TAG : dir[8] == 'p' && dir[9] == 'r' ? TAG_PRE :
		    dir[8] == 'i' ? TAG_INTER : TAG_POST;
		if (!nn || rest >= e) {
			diag(rs, ln->file, ln->no, "%s: missing name or value", dir);
			return 0;
		}
		rs->st.replace_tags++;
		return tag_set(rs, kind, a, nn, rest, (size_t)(e - rest));
	}
	if (!strcmp(dir, "replace_rules")) {
		const char *q = a;
		while (q < e) {
			const char *qe = word_end(q, e);
			if (valid_name(q, (size_t)(qe - q))) {
				struct scan_rule *r = rule_get(rs, q, (size_t)(qe - q));
				if (!r)
					return -ENOMEM;
				r->replace = 1;
				rs->st.replace_rules++;
			}
			q = skip_ws(qe, e);
		}
		return 0;
	}
	if (!strcmp(dir, "util_rb_tld")) {
		for (const char *q = a, *qe; q < e; q = skip_ws(qe, e)) {
			qe = word_end(q, e);
			size_t n = (size_t)(qe - q);
			char **t = realloc(rs->tlds, (rs->n_tlds + 1) * sizeof(*t));
			if (!t)
				return -ENOMEM;
			rs->tlds = t;
			char *d = malloc(n + 1);        /* n bytes: a NUL in them stays */
			if (!d)
				return -ENOMEM;
			for (size_t k = 0; k < n; k++)
				d[k] = (char)tolower((unsigned char)q[k]);
			d[n] = '\0';
			t[rs->n_tlds++] = d;
		}
		return 0;
	}
	if (!strcmp(dir, "redirector_pattern"))
		return redirector(rs, ln, a, e);
	count_skip(rs, dir, dn);
	return 0;
}

static int
tld_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* util_rb_tld's names sorted, each once */
static void
tlds_sort(struct scan_ruleset *rs)
{
	uint32_t k = 0;

	if (!rs->n_tlds)
		return;
	qsort(rs->tlds, rs->n_tlds, sizeof(*rs->tlds), tld_cmp);
	for (uint32_t i = 1; i < rs->n_tlds; i++) {
		if (!strcmp(rs->tlds[i], rs->tlds[k]))
			free(rs->tlds[i]);
		else
			rs->tlds[++k] = rs->tlds[i];
	}
	rs->n_tlds = k + 1;
}

bool
scan_rules_tld_valid(const struct scan_ruleset *rs, const char *tld, size_t n)
{
	char key[64];
	const char *kp = key;

	if (!rs->n_tlds)
		return true;
	if (!n || n >= sizeof(key))
		return false;
	for (size_t k = 0; k < n; k++) {
		if ((unsigned char)tld[k] >= 0x80)
			return true;
		key[k] = (char)tolower((unsigned char)tld[k]);
	}
	key[n] = '\0';
	return bsearch(&kp, rs->tlds, rs->n_tlds, sizeof(*rs->tlds), tld_cmp) != NULL;
}

static const char *
intern_file(struct scan_ruleset *rs, const char *fname)
{
	struct scan_rules_priv *p = rs->priv;

	for (unsigned i = 0; i < p->n_files; i++)
		if (!strcmp(p->files[i], fname))
			return p->files[i];
	char **f = realloc(p->files, (p->n_files + 1) * sizeof(*f));
	if (!f)
		return NULL;
	p->files = f;
	f[p->n_files] = strdup(fname);
	if (!f[p->n_files])
		return NULL;
	return f[p->n_files++];
}

int
scan_rules_load_text(struct scan_ruleset *rs, const char *fname, const char *text, size_t len)
{
	struct scan_rules_priv *p = rs->priv;
	struct line ln;
	const char *s = text, *end = text + len;
	char *buf = NULL;
	size_t bcap = 0;
	int rc = 0;

	ln.file = intern_file(rs, fname);
	if (!ln.file)
		return -ENOMEM;
	ln.no = 0;
	rs->st.files++;
	p->ncond = 0;
	p->cond_overflow = 0;
	while (s < end && rc == 0) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *le = nl ? nl : end;
		size_t n = (size_t)(le - s);
		ln.no++;
		rs->st.lines++;
		if (n + 1 > bcap) {
			bcap = n + 1 + 256;
			char *b = realloc(buf, bcap);
			if (!b) {
				rc = -ENOMEM;
				break;
			}
			buf = b;
		}
		/* strip comments: an unescaped '#' ends the line; then \# -> # */
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			char c = s[i];
			if (c == '#' && (i == 0 || s[i - 1] != '\\'))
				break;
			if (c == '\\' && i + 1 < n && s[i + 1] == '#')
				continue;
			if (c == '\r' && i + 1 == n)
				break;
			buf[k++] = c;
		}
		const char *b = skip_ws(buf, buf + k);
		while (k && (buf[k - 1] == ' ' || buf[k - 1] == '\t' || buf[k - 1] == '\r'))
			k--;
		buf[k] = '\0';         /* strtod() & co. must stop at the line end */
		const char *e = buf + k;
		if (e > b)
			rc = do_line(rs, &ln, b, e);
		s = nl ? nl + 1 : end;
	}
	if (p->ncond && rc == 0)
		diag(rs, ln.file, ln.no, "%u conditional(s) not closed at end of file", p->ncond);
	p->ncond = 0;
	free(buf);
	return rc;
}

static int
load_file(struct scan_ruleset *rs, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;
	int rc;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		rc = -errno;
		fclose(f);
		return rc;
	}
	buf = malloc((size_t)n + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	rc = scan_rules_load_text(rs, path, buf, (size_t)n);
	free(buf);
	return rc;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
scan_rules_load_path(struct scan_ruleset *rs, const char *path)
{
	struct stat sb;

	if (stat(path, &sb) < 0)
		return -errno;
	if (!S_ISDIR(sb.st_mode))
		return load_file(rs, path);
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l < 4 || strcmp(de->d_name + l - 3, ".cf"))
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*nn));
		if (!nn) {
			rc = -ENOMEM;
			break;
		}
		names = nn;
		names[n] = malloc(strlen(path) + l + 2);
		if (!names[n]) {
			rc = -ENOMEM;
			break;
		}
		sprintf(names[n], "%s/%s", path, de->d_name);
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (rc == 0) {
			int r = load_file(rs, names[i]);
			if (r == -ENOMEM)
				rc = r;
			else if (r < 0)
				diag(rs, names[i], 0, "cannot read: %s", strerror(-r));
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

/* ---- meta expressions ---- */

enum { PREC_OR = 1, PREC_AND, PREC_EQ, PREC_REL, PREC_ADD, PREC_MUL, PREC_UNARY };

static int
op_prec(int op)
{
	switch (op) {
	case SCAN_MO_OR: return PREC_OR;
	case SCAN_MO_AND: return PREC_AND;
	case SCAN_MO_EQ: case SCAN_MO_NE: return PREC_EQ;
	case SCAN_MO_LT: case SCAN_MO_LE: case SCAN_MO_GT: case SCAN_MO_GE: return PREC_REL;
	case SCAN_MO_ADD: case SCAN_MO_SUB: return PREC_ADD;
	case SCAN_MO_MUL: case SCAN_MO_DIV: return PREC_MUL;
	default: return PREC_UNARY;
	}
}

#define OPEN_PAREN 255

/* Compiles r->meta_src into RPN (shunting-yard); -1 with a diagnostic. */
static int
meta_compile(struct scan_ruleset *rs, struct scan_rule *r)
{
	const char *s = r->meta_src;
	size_t cap = strlen(s) + 2;
	struct scan_meta_op *out = calloc(cap, sizeof(*out));
	uint8_t *ops = malloc(cap);
	size_t no = 0, nops = 0;
	int depth = 0;          /* operands on the stack, for validation */
	int maxd = 0;           /* ... and the most at once */
	bool want_operand = true;
	const char *why = NULL;

	if (!out || !ops) {
		free(out);
		free(ops);
		return -1;
	}
	while (*s && !why) {
		if (*s == ' ' || *s == '\t') {
			s++;
			continue;
		}
		if (want_operand) {
			if (*s == '(') {
				ops[nops++] = OPEN_PAREN;
				s++;
			} else if (*s == '!' && s[1] != '=') {
				ops[nops++] = SCAN_MO_NOT;
				s++;
			} else if (*s == '-') {
				ops[nops++] = SCAN_MO_NEG;
				s++;
			} else if (*s == '+') {
				s++;
			} else if (isdigit((unsigned char)*s) || *s == '.') {
				char *e;
				out[no].op = SCAN_MO_NUM;
				out[no++].num = strtod(s, &e);
				if (e == s)
					why = "bad number";
				s = e;
				if (++depth > maxd)
					maxd = depth;
				want_operand = false;
			} else if (isalpha((unsigned char)*s) || *s == '_') {
				const char *b = s;
				while (isalnum((unsigned char)*s) || *s == '_')
					s++;
				int i = find_n(rs, b, (size_t)(s - b));
				if (i < 0 || !rs->rules[i].defined) {
					rs->st.meta_unknown_refs++;
					out[no].op = SCAN_MO_NUM;
					out[no++].num = 0;
				} else {
					out[no].op = SCAN_MO_RULE;
					out[no++].rule = (uint32_t)i;
				}
				if (++depth > maxd)
					maxd = depth;
				want_operand = false;
			} else
				why = "operand expected";
			continue;
		}
		/* an operator or ')' */
		int op = -1;
		if (*s == ')') {
			while (nops && ops[nops - 1] != OPEN_PAREN) {
				out[no++].op = ops[--nops];
				if (out[no - 1].op != SCAN_MO_NOT && out[no - 1].op != SCAN_MO_NEG)
					depth--;
			}
			if (!nops) {
				why = "unbalanced )";
				break;
			}
			nops--;
			s++;
			continue;
		}
		if (s[0] == '&' && s[1] == '&') { op = SCAN_MO_AND; s += 2; }
		else if (s[0] == '|' && s[1] == '|') { op = SCAN_MO_OR; s += 2; }
		else if (s[0] == '>' && s[1] == '=') { op = SCAN_MO_GE; s += 2; }
		else if (s[0] == '<' && s[1] == '=') { op = SCAN_MO_LE; s += 2; }
		else if (s[0] == '=' && s[1] == '=') { op = SCAN_MO_EQ; s += 2; }
		else if (s[0] == '!' && s[1] == '=') { op = SCAN_MO_NE; s += 2; }
		else if (*s == '>') { op = SCAN_MO_GT; s++; }
		else if (*s == '<') { op = SCAN_MO_LT; s++; }
		else if (*s == '+') { op = SCAN_MO_ADD; s++; }
		else if (*s == '-') { op = SCAN_MO_SUB; s++; }
		else if (*s == '*') { op = SCAN_MO_MUL; s++; }
		else if (*s == '/') { op = SCAN_MO_DIV; s++; }
		else {
			why = "operator expected";
			break;
		}
		while (nops && ops[nops - 1] != OPEN_PAREN && op_prec(ops[nops - 1]) >= op_prec(op)) {
			out[no++].op = ops[--nops];
			if (out[no - 1].op != SCAN_MO_NOT && out[no - 1].op != SCAN_MO_NEG)
				depth--;
		}
		ops[nops++] = (uint8_t)op;
		want_operand = true;
	}
	if (!why && want_operand)
		why = "expression ends without an operand";
	while (!why && nops) {
		uint8_t op = ops[--nops];
		if (op == OPEN_PAREN) {
			why = "unbalanced (";
			break;
		}
		out[no++].op = op;
		if (op != SCAN_MO_NOT && op != SCAN_MO_NEG)
			depth--;
	}
	if (!why && depth != 1)
		why = "malformed expression";
	if (!why && maxd > SCAN_META_STACK)
		why = "nested too deep (more than " SCAN_META_STACK_S " operands pending)";
	free(ops);
	if (why) {
		diag(rs, r->file, r->line, "meta %s: %s", r->name, why);
		free(out);
		return -1;
	}
	r->meta = out;
	r->meta_n = (uint32_t)no;
	return 0;
}

double
scan_rules_meta_value(const struct scan_rule *r, const uint32_t *hits)
{
	/* the parser refuses a meta that needs more (no heap on the hot path) */
	double stack[SCAN_META_STACK];
	size_t sp = 0;

	for (uint32_t i = 0; i < r->meta_n; i++) {
		const struct scan_meta_op *o = &r->meta[i];
		double a, b;
		switch (o->op) {
		case SCAN_MO_NUM: stack[sp++] = o->num; continue;
		case SCAN_MO_RULE: stack[sp++] = hits[o->rule]; continue;
		case SCAN_MO_NOT: stack[sp - 1] = !stack[sp - 1]; continue;
		case SCAN_MO_NEG: stack[sp - 1] = -stack[sp - 1]; continue;
		default: break;
		}
		b = stack[--sp];
		a = stack[sp - 1];
		switch (o->op) {
		case SCAN_MO_MUL: a = a * b; break;
		case SCAN_MO_DIV: a = b != 0 ? a / b : 0; break;
		case SCAN_MO_ADD: a = a + b; break;
		case SCAN_MO_SUB: a = a - b; break;
		case SCAN_MO_LT: a = a < b; break;
		case SCAN_MO_LE: a = a <= b; break;
		case SCAN_MO_GT: a = a > b; break;
		case SCAN_MO_GE: a = a >= b; break;
		case SCAN_MO_EQ: a = a == b; break;
		case SCAN_MO_NE: a = a != b; break;
		case SCAN_MO_AND: a = a && b; break;
		case SCAN_MO_OR: a = a || b; break;
		}
		stack[sp - 1] = a;
	}
	return sp ? stack[0] : 0;
}

/* truth of a bounded value: 0 false, 1 true, 2 either */
static int
bound_truth(struct scan_bound a)
{
	if (a.lo == 0 && a.hi == 0)
		return 0;
	if (a.lo > 0 || a.hi < 0)
		return 1;
	return 2;
}

static struct scan_bound
bound_bool(int t)
{
	return (struct scan_bound){t == 1, t != 0};
}

/* lo <= a OP b <= hi over every a, b in their bounds (SCAN_MO_* binary) */
static struct scan_bound
bound_op(uint8_t op, struct scan_bound a, struct scan_bound b)
{
	double p[4];
	int ta, tb;

	switch (op) {
	case SCAN_MO_ADD: return (struct scan_bound){a.lo + b.lo, a.hi + b.hi};
	case SCAN_MO_SUB: return (struct scan_bound){a.lo - b.hi, a.hi - b.lo};
	case SCAN_MO_MUL:
		p[0] = a.lo * b.lo, p[1] = a.lo * b.hi, p[2] = a.hi * b.lo, p[3] = a.hi * b.hi;
		return (struct scan_bound){fmin(fmin(p[0], p[1]), fmin(p[2], p[3])),
		    fmax(fmax(p[0], p[1]), fmax(p[2], p[3]))};
	case SCAN_MO_DIV:
		if (a.lo == a.hi && b.lo == b.hi) {
			double v = b.lo != 0 ? a.lo / b.lo : 0;
			return (struct scan_bound){v, v};
		}
		return (struct scan_bound){-HUGE_VAL, HUGE_VAL};
	case SCAN_MO_LT: return bound_bool(a.hi < b.lo ? 1 : a.lo >= b.hi ? 0 : 2);
	case SCAN_MO_LE: return bound_bool(a.hi <= b.lo ? 1 : a.lo > b.hi ? 0 : 2);
	case SCAN_MO_GT: return bound_bool(a.lo > b.hi ? 1 : a.hi <= b.lo ? 0 : 2);
	case SCAN_MO_GE: return bound_bool(a.lo >= b.hi ? 1 : a.hi < b.lo ? 0 : 2);
	case SCAN_MO_EQ:
	case SCAN_MO_NE: {
		int t = a.lo == a.hi && b.lo == b.hi && a.lo == b.lo ? 1 :
		    a.hi < b.lo || b.hi < a.lo ? 0 : 2;
		return bound_bool(op == SCAN_MO_EQ || t == 2 ? t : !t);
	}
	case SCAN_MO_AND:
		ta = bound_truth(a), tb = bound_truth(b);
		return bound_bool(ta == 0 || tb == 0 ? 0 : ta == 1 && tb == 1 ? 1 : 2);
	case SCAN_MO_OR:
		ta = bound_truth(a), tb = bound_truth(b);
		return bound_bool(ta == 1 || tb == 1 ? 1 : ta == 0 && tb == 0 ? 0 : 2);
	default:
		return (struct scan_bound){-HUGE_VAL, HUGE_VAL};
	}
}

void
scan_rules_lazy_begin(struct scan_lazy *z)
{
	z->round += 8;
	if (z->round < 8) {     /* wrapped: no stale round may match */
		memset(z->gen, 0, z->rs->n * sizeof(*z->gen));
		z->round = 8;
	}
}

static inline bool
lazy_meta(const struct scan_ruleset *rs, uint32_t x)
{
	return rs->rules[x].type == SCAN_RT_META && rs->rules[x].state == SCAN_RS_ACTIVE;
}

/* a rule's bounds when the metas nest too deep to look: anything */
static const struct scan_bound bound_any = {-HUGE_VAL, HUGE_VAL};

/* scan_rules_meta_value over bounds, its inputs on demand: bounds on the
 * meta's 0/1 value. Deeper than SCAN_LAZY_DEPTH, an input meta reads
 * bound_any (a rule file can nest metas as deep as it likes; a worker's
 * stack cannot). */
static struct scan_bound
lazy_bound(struct scan_lazy *z, uint32_t m, unsigned depth)
{
	const struct scan_rule *r = &z->rs->rules[m];
	struct scan_bound stack[SCAN_META_STACK];
	size_t sp = 0;

	if ((z->gen[m] & ~7u) == z->round && (z->gen[m] & 1))
		return z->b[m];
	if (depth >= SCAN_LAZY_DEPTH)
		return bound_any;
	for (uint32_t i = 0; i < r->meta_n; i++) {
		const struct scan_meta_op *o = &r->meta[i];
		struct scan_bound a;
		switch (o->op) {
		case SCAN_MO_NUM: stack[sp++] = (struct scan_bound){o->num, o->num}; continue;
		case SCAN_MO_RULE:
			stack[sp++] = lazy_meta(z->rs, o->rule) ? lazy_bound(z, o->rule, depth + 1) :
			    z->base(z->arg, o->rule);
			continue;
		case SCAN_MO_NOT:
			a = stack[sp - 1];
			stack[sp - 1] = bound_bool(bound_truth(a) == 2 ? 2 : !bound_truth(a));
			continue;
		case SCAN_MO_NEG:
			a = stack[sp - 1];
			stack[sp - 1] = (struct scan_bound){-a.hi, -a.lo};
			continue;
		default: break;
		}
		sp--;
		stack[sp - 1] = bound_op(o->op, stack[sp - 1], stack[sp]);
	}
	z->b[m] = sp ? bound_bool(bound_truth(stack[0])) : bound_bool(0);
	if ((z->gen[m] & ~7u) != z->round)
		z->gen[m] = z->round;
	z->gen[m] |= 1;
	return z->b[m];
}

struct scan_bound
scan_rules_lazy_bound(struct scan_lazy *z, uint32_t m)
{
	return lazy_bound(z, m, 0);
}

static bool lazy_meta_needed(struct scan_lazy *z, uint32_t m, unsigned depth);

/* Does an undecided reader of rule i that is needed exist? Deeper than
 * SCAN_LAZY_DEPTH: say yes. */
static bool
lazy_readers(struct scan_lazy *z, uint32_t i, unsigned depth)
{
	const struct scan_rules_priv *p = z->rs->priv;

	if (!p || !p->dep_off || !p->reaches || depth >= SCAN_LAZY_DEPTH)
		return true;
	for (uint32_t j = p->dep_off[i]; j < p->dep_off[i + 1]; j++) {
		uint32_t m = p->dep[j];
		if (!p->reaches[m])
			continue;
		struct scan_bound b = lazy_bound(z, m, 0);
		if (b.lo != b.hi && lazy_meta_needed(z, m, depth + 1))
			return true;
	}
	return false;
}

static bool
lazy_meta_needed(struct scan_lazy *z, uint32_t m, unsigned depth)
{
	if (scan_rules_counts(z->rs, m))
		return true;
	if ((z->gen[m] & ~7u) == z->round && (z->gen[m] & 2))
		return (z->gen[m] & 4) != 0;
	bool v = lazy_readers(z, m, depth);
	if ((z->gen[m] & ~7u) != z->round)
		z->gen[m] = z->round;
	z->gen[m] |= 2 | (v ? 4 : 0);
	return v;
}

bool
scan_rules_lazy_needed(struct scan_lazy *z, uint32_t i)
{
	return scan_rules_counts(z->rs, i) || lazy_readers(z, i, 0);
}

/* the active metas that read rule i: from its nonzero value on, they must be evaluated */
static void
meta_touch(const struct scan_rules_priv *p, uint32_t i, uint32_t *hits)
{
	for (uint32_t k = p->dep_off[i]; k < p->dep_off[i + 1]; k++)
		hits[p->dep[k]] = 1;
}

/*
 * Most messages hit a few dozen rules, and a meta none of whose inputs
 * moved from rest has its value at rest (meta_rest): only the metas that
 * read a moved rule are evaluated. A meta's slot in hits[] holds "to be
 * evaluated" until its turn (every reader comes after what it reads).
 */
void
scan_rules_meta_eval(const struct scan_ruleset *rs, uint32_t *hits)
{
	const struct scan_rules_priv *p = rs->priv;

	if (!p || !p->dep_off) {
		for (uint32_t k = 0; k < rs->n_meta; k++) {
			const struct scan_rule *r = &rs->rules[rs->meta_order[k]];
			hits[rs->meta_order[k]] = scan_rules_meta_value(r, hits) != 0;
		}
		return;
	}
	for (uint32_t k = 0; k < rs->n_meta; k++)
		hits[rs->meta_order[k]] = 0;
	for (uint32_t k = 0; k < p->n_base; k++)
		if (hits[p->base[k]])
			meta_touch(p, p->base[k], hits);
	for (uint32_t k = 0; k < rs->n_meta; k++) {
		uint32_t i = rs->meta_order[k];
		if (!hits[i]) {
			hits[i] = p->meta_rest[i];
			continue;
		}
		uint32_t v = scan_rules_meta_value(&rs->rules[i], hits) != 0;
		hits[i] = v;
		if (v != p->meta_rest[i])
			meta_touch(p, i, hits);
	}
}

/* The tables of scan_rules_meta_eval, after meta_order. */
static int
meta_deps(struct scan_ruleset *rs)
{
	struct scan_rules_priv *p = rs->priv;
	uint32_t *rest = calloc(rs->n + 1, sizeof(*rest));
	uint8_t *active = calloc(rs->n + 1, 1), *based = calloc(rs->n + 1, 1);
	uint32_t *last = calloc(rs->n + 1, sizeof(*last)), nd = 0;
	int rc = -ENOMEM;

	if (!rest || !active || !based || !last || !(p->meta_rest = calloc(rs->n + 1, 1)) ||
	    !(p->dep_off = calloc(rs->n + 2, sizeof(*p->dep_off))))
		goto out;
	for (uint32_t k = 0; k < rs->n_meta; k++)
		active[rs->meta_order[k]] = 1;
	/* readers per rule, each meta once (last[]: the meta that saw it);
	 * pass 0 counts them, pass 1 files them */
	uint32_t *fill = rest;  /* borrowed: next free slot per rule */
	for (int pass = 0; pass < 2; pass++) {
		memset(last, 0, (rs->n + 1) * sizeof(*last));
		for (uint32_t k = 0; k < rs->n_meta; k++) {
			uint32_t m = rs->meta_order[k];
			const struct scan_rule *r = &rs->rules[m];
			for (uint32_t j = 0; j < r->meta_n; j++) {
				uint32_t x = r->meta[j].rule;
				if (r->meta[j].op != SCAN_MO_RULE || last[x] == m + 1)
					continue;
				last[x] = m + 1;
				if (pass) {
					p->dep[fill[x]++] = m;
					continue;
				}
				p->dep_off[x + 1]++;
				nd++;
				if (!active[x] && !based[x]) {
					based[x] = 1;
					p->n_base++;
				}
			}
		}
		if (pass)
			break;
		for (uint32_t i = 0; i < rs->n; i++)
			p->dep_off[i + 1] += p->dep_off[i];
		if (!(p->dep = calloc(nd + 1, sizeof(*p->dep))) ||
		    !(p->base = calloc(p->n_base + 1, sizeof(*p->base))))
			goto out;
		for (uint32_t i = 0; i < rs->n; i++)
			fill[i] = p->dep_off[i];
	}
	p->n_base = 0;
	for (uint32_t i = 0; i < rs->n; i++)
		if (based[i])
			p->base[p->n_base++] = i;
	/* which rules can matter to a verdict at all: readers first */
	if (!(p->reaches = calloc(rs->n + 1, 1)))
		goto out;
	for (uint32_t i = 0; i < rs->n; i++)
		p->reaches[i] = scan_rules_counts(rs, i);
	for (uint32_t k = rs->n_meta; k-- > 0;) {
		const struct scan_rule *r = &rs->rules[rs->meta_order[k]];
		if (!p->reaches[rs->meta_order[k]])
			continue;
		for (uint32_t j = 0; j < r->meta_n; j++)
			if (r->meta[j].op == SCAN_MO_RULE)
				p->reaches[r->meta[j].rule] = 1;
	}
	/* values at rest: no regex rule hit */
	memset(rest, 0, (rs->n + 1) * sizeof(*rest));
	for (uint32_t k = 0; k < rs->n_meta; k++) {
		uint32_t m = rs->meta_order[k];
		rest[m] = scan_rules_meta_value(&rs->rules[m], rest) != 0;
		p->meta_rest[m] = (uint8_t)rest[m];
	}
	rc = 0;
out:
	if (rc < 0) {
		free(p->meta_rest);
		free(p->reaches);
		free(p->dep_off);
		free(p->dep);
		p->meta_rest = NULL;
		p->reaches = NULL;
		p->dep_off = p->dep = NULL;
	}
	free(rest);
	free(active);
	free(based);
	free(last);
	return rc;
}

/* a meta on meta_visit's path and the next op of it to follow */
struct visit {
	uint32_t rule, k;
};

/*
 * DFS over meta dependencies from active meta root: 0 unvisited, 1 on the
 * path, 2 done; each meta is ordered after what it reads. The path is
 * st[] (rs->n entries, from the heap: a rule file may chain metas deeper
 * than any stack). A cycle breaks every meta on the path into it: -1.
 */
static int
meta_visit(struct scan_ruleset *rs, uint32_t root, uint8_t *mark, struct visit *st)
{
	uint32_t sp = 0;

	mark[root] = 1;
	st[sp++] = (struct visit){root, 0};
	while (sp) {
		struct visit *v = &st[sp - 1];
		const struct scan_rule *r = &rs->rules[v->rule];
		if (v->k == r->meta_n) {
			mark[v->rule] = 2;
			rs->meta_order[rs->n_meta++] = v->rule;
			sp--;
			continue;
		}
		const struct scan_meta_op *o = &r->meta[v->k++];
		if (o->op != SCAN_MO_RULE)
			continue;
		struct scan_rule *d = &rs->rules[o->rule];
		if (d->type != SCAN_RT_META || d->state != SCAN_RS_ACTIVE || mark[o->rule] == 2)
			continue;
		if (mark[o->rule] == 1) {
			/* in a cycle: every meta on the path into it breaks with it,
			 * so no active meta is left unordered */
			d->state = SCAN_RS_BROKEN;
			while (sp) {
				uint32_t y = st[--sp].rule;
				mark[y] = 2;
				rs->rules[y].state = SCAN_RS_BROKEN;
			}
			return -1;
		}
		mark[o->rule] = 1;
		st[sp++] = (struct visit){o->rule, 0};
	}
	return 0;
}

/* Every rule's compile input, for the cache key of scan/hs.c. */
static uint64_t
ruleset_hash(const struct scan_ruleset *rs)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (r->state != SCAN_RS_ACTIVE || r->type == SCAN_RT_META)
			continue;
		uint8_t hdr[8] = {r->type, r->hmod, r->negate, r->exists,
		    (uint8_t)r->re_flags, (uint8_t)(r->tflags & SCAN_TF_MULTIPLE),
		    (uint8_t)r->maxhits, (uint8_t)(r->maxhits >> 8)};
		uint32_t idx = i;
		h = fnv(&idx, sizeof(idx), h);
		h = fnv(hdr, sizeof(hdr), h);
		if (r->header)
			h = fnv(r->header, strlen(r->header) + 1, h);
		if (r->re)
			h = fnv(r->re, strlen(r->re) + 1, h);
	}
	return h;
}

/* How deep re's groups nest (escapes and classes skipped). */
static unsigned
re_nesting(const char *re)
{
	unsigned d = 0, max = 0;

	for (const char *s = re; *s;) {
		if (*s == '\\' && s[1]) {
			s += 2;
			continue;
		}
		if (*s == '[') {
			const char *q = scan_rules_class_end(s);
			s = q ? q : s + 1;
			continue;
		}
		if (*s == '(' && ++d > max)
			max = d;
		else if (*s == ')' && d)
			d--;
		s++;
	}
	return max;
}

int
scan_rules_finish(struct scan_ruleset *rs)
{
	uint8_t *mark;

	if (rs->finished)
		return 0;
	tlds_sort(rs);
	for (uint32_t i = 0; i < rs->n; i++) {
		struct scan_rule *r = &rs->rules[i];
		bool sub = r->name[0] == '_' && r->name[1] == '_';
		if (!r->defined) {
			if (r->has_score || r->describe || r->tflags)
				rs->st.orphan_attrs++;
			continue;
		}
		if (!r->has_score)
			r->score = sub ? 0 : 1.0;
		if (sub)
			r->score = 0;
		if (r->state == SCAN_RS_ACTIVE && r->replace && r->re && replace_rule(rs, r) < 0)
			r->state = SCAN_RS_BROKEN;
		unsigned nest = r->state == SCAN_RS_ACTIVE && r->re ? re_nesting(r->re) : 0;
		if (nest > SCAN_RE_NEST) {
			/* the pattern walks here and in hs.c recurse into groups, and
			 * PCRE2 refuses more than 250 levels anyway */
			diag(rs, r->file, r->line, "%s: groups nested %u deep (more than %d)", r->name,
			    nest, SCAN_RE_NEST);
			r->state = SCAN_RS_BROKEN;
		}
		if (r->state == SCAN_RS_ACTIVE && r->type == SCAN_RT_META && meta_compile(rs, r) < 0)
			r->state = SCAN_RS_BROKEN;
		if (r->state == SCAN_RS_ACTIVE && !sub && r->has_score && r->score == 0)
			r->state = SCAN_RS_DISABLED;
	}
	rs->meta_order = calloc(rs->n + 1, sizeof(uint32_t));
	mark = calloc(rs->n + 1, 1);
	struct visit *path = calloc(rs->n + 1, sizeof(*path));
	if (!rs->meta_order || !mark || !path) {
		free(mark);
		free(path);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < rs->n; i++) {
		struct scan_rule *r = &rs->rules[i];
		if (r->type != SCAN_RT_META || r->state != SCAN_RS_ACTIVE || mark[i])
			continue;
		uint32_t before = rs->n_meta;
		if (meta_visit(rs, i, mark, path) < 0) {
			rs->st.meta_cycles++;
			diag(rs, r->file, r->line, "meta %s: circular dependency, disabled", r->name);
			/* drop whatever this walk ordered; the rules in the cycle break */
			for (uint32_t k = before; k < rs->n_meta; k++)
				mark[rs->meta_order[k]] = 2;
			r->state = SCAN_RS_BROKEN;
		}
	}
	/* a meta broken after ordering must not run */
	uint32_t w = 0;
	for (uint32_t k = 0; k < rs->n_meta; k++)
		if (rs->rules[rs->meta_order[k]].state == SCAN_RS_ACTIVE)
			rs->meta_order[w++] = rs->meta_order[k];
	rs->n_meta = w;
	free(mark);
	free(path);
	if (meta_deps(rs) < 0)
		return -ENOMEM;
	for (uint32_t i = 0; i < rs->n; i++) {
		struct scan_rule *r = &rs->rules[i];
		if (!r->defined)
			continue;
		switch (r->state) {
		case SCAN_RS_ACTIVE:
			rs->st.active[r->type]++;
			if (r->exists)
				rs->st.exists++;
			if (r->negate)
				rs->st.negated++;
			break;
		case SCAN_RS_EVAL: rs->st.eval[r->type]++; break;
		case SCAN_RS_DISABLED: rs->st.disabled[r->type]++; break;
		case SCAN_RS_BROKEN: rs->st.broken[r->type]++; break;
		}
	}
	/* most frequent skipped directives first */
	for (unsigned i = 1; i < rs->n_skips; i++)
		for (unsigned j = i; j > 0 && rs->skips[j].count > rs->skips[j - 1].count; j--) {
			struct scan_rules_skip t = rs->skips[j];
			rs->skips[j] = rs->skips[j - 1];
			rs->skips[j - 1] = t;
		}
	rs->hash = ruleset_hash(rs);
	rs->finished = true;
	return 0;
}

/* ---- required literal ---- */

/*
 * A walk over the Perl pattern that tracks the current run of bytes every
 * match must contain in order; anything that is not a plain byte (class,
 * dot, alternation, optional element) ends the run. Zero-width items
 * (anchors, \b, look-arounds) are skipped: the consumed text stays
 * contiguous around them. A group that is required once contributes its
 * best inner run but breaks the outer run; groups with alternation give
 * nothing. Exact when in doubt: a shorter literal is always safe.
 */
struct lit {
	const char *s, *e;
	bool x;                 /* /x: whitespace and # comments ignored */
	uint8_t best[256];
	size_t nbest;
	uint8_t cur[256];
	size_t ncur;
};

static void
lit_end_run(struct lit *L)
{
	if (L->ncur > L->nbest) {
		memcpy(L->best, L->cur, L->ncur);
		L->nbest = L->ncur;
	}
	L->ncur = 0;
}

/* A decimal quantifier bound from *q, saturated: a regex like /a{99999999999}/
 * must not overflow (PCRE2 and Hyperscan refuse bounds above 65535 anyway). */
static int
quant_num(const char **q, const char *e)
{
	int v = 0;
	while (*q < e && isdigit((unsigned char)**q)) {
		if (v < 1000000)
			v = v * 10 + (**q - '0');
		(*q)++;
	}
	return v;
}

/*
 * PCRE2 constructs the literal walks do not read, and give up on: verbs
 * and alpha assertions, "(*...)" ((*ACCEPT) ends a match anywhere,
 * (*pla:...) is a look-ahead), and the non-atomic look-arounds "(?*" and
 * "(?<*". None is in Debian's rules.
 */
static bool
re_exotic(const char *re)
{
	return strstr(re, "(*") || strstr(re, "(?*") || strstr(re, "(?<*");
}

/*
 * The bytes /x ignores in a pattern: PCRE2's white space (its C-locale
 * spaces, and NEL, 0x85, which it skips in 8-bit patterns too).
 */
static bool
x_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' ||
	    (unsigned char)c == 0x85;
}

/*
 * Under /x, whitespace and # comments between an atom and its quantifier
 * are ignored ("d *" is "d*"): skips them at *s.
 */
static const char *
x_skip(const char *s, const char *e, bool x)
{
	while (x && s < e) {
		if (x_space(*s))
			s++;
		else if (*s == '#')
			while (s < e && *s != '\n')
				s++;
		else
			break;
	}
	return s;
}

/* Skips a quantifier at L->s; returns its minimum count (-1 none). */
static int
lit_quant(struct lit *L, bool *exact_one)
{
	int min = -1;

	*exact_one = false;
	L->s = x_skip(L->s, L->e, L->x);
	if (L->s >= L->e)
		return -1;
	char c = *L->s;
	if (c == '*' || c == '?') {
		L->s++;
		min = 0;
	} else if (c == '+') {
		L->s++;
		min = 1;
	} else if (c == '{') {
		const char *q = L->s + 1;
		if (q < L->e && isdigit((unsigned char)*q)) {
			int lo = 0, hi = -1;
			lo = quant_num(&q, L->e);
			if (q < L->e && *q == '}')
				hi = lo;
			else if (q < L->e && *q == ',') {
				q++;
				if (q < L->e && isdigit((unsigned char)*q)) {
					hi = 0;
					hi = quant_num(&q, L->e);
				} else
					hi = -2;
			}
			if (q < L->e && *q == '}') {
				L->s = q + 1;
				min = lo > 1 ? 1 : lo;
				*exact_one = lo == 1 && hi == 1;
			}
		}
	}
	if (min >= 0 && L->s < L->e && (*L->s == '?' || *L->s == '+'))
		L->s++;
	return min;
}

static void lit_seq(struct lit *L, int depth);

/* Skips a character class starting after '['. */
static void
lit_skip_class(struct lit *L)
{
	if (L->s < L->e && *L->s == '^')
		L->s++;
	if (L->s < L->e && *L->s == ']')
		L->s++;
	while (L->s < L->e && *L->s != ']') {
		if (*L->s == '\\' && L->s + 1 < L->e)
			L->s += 2;
		else if (*L->s == '[' && L->s + 1 < L->e && L->s[1] == ':') {
			const char *q = scan_rules_posix_end(L->s, L->e);
			L->s = q ? q : L->s + 1;
		} else
			L->s++;
	}
	if (L->s < L->e)
		L->s++;
}

/* Skips to the ')' that closes the group we are in (after its '('). */
static void
lit_skip_group(struct lit *L)
{
	int d = 1;

	while (L->s < L->e && d) {
		char c = *L->s;
		if (c == '\\' && L->s + 1 < L->e) {
			L->s += 2;
			continue;
		}
		if (c == '[') {
			L->s++;
			lit_skip_class(L);
			continue;
		}
		if (c == '(')
			d++;
		else if (c == ')')
			d--;
		L->s++;
	}
}

/*
 * One atom: returns 1 with *byte set for a literal byte, 0 for a zero-width
 * item, 2 for something else consumed (class, dot, group handled inside).
 */
static int
lit_atom(struct lit *L, uint8_t *byte, int depth)
{
	char c = *L->s++;

	switch (c) {
	case '^': case '$':
		return 0;
	case '.':
		return 2;
	case '[':
		lit_skip_class(L);
		return 2;
	case '(': {
		if (L->s < L->e && *L->s == '?') {
			const char *q = L->s + 1;
			if (q < L->e && (*q == '=' || *q == '!' || *q == '#' ||
			    (*q == '<' && q + 1 < L->e && (q[1] == '=' || q[1] == '!')))) {
				lit_skip_group(L);
				return 0;
			}
			/* (?flags) alone, or (?flags: ... ) / (?: / (?> / (?| */
			while (q < L->e && (isalpha((unsigned char)*q) || *q == '-' || *q == '^'))
				q++;
			if (q < L->e && *q == ')') {
				L->s = q + 1;
				return 0;
			}
			if (q < L->e && (*q == ':' || *q == '>'))
				L->s = q + 1;
			else if (q < L->e && *q == '<' ) {
				/* named group (?<name> */
				while (q < L->e && *q != '>')
					q++;
				L->s = q < L->e ? q + 1 : q;
			} else if (q < L->e && *q == 'P' ) {
				lit_skip_group(L);
				return 2;
			} else {
				lit_skip_group(L);
				return 2;
			}
		}
		if (depth >= 60) {
			/* deeper groups add nothing worth a stack frame (of 0.5
			 * KB each: a rule file may nest them as deep as it likes) */
			lit_skip_group(L);
			return 2;
		}
		/* the group's own runs: only if it has no top-level alternation */
		struct lit inner = *L;
		inner.nbest = inner.ncur = 0;
		const char *start = L->s;
		lit_seq(&inner, depth + 1);
		L->s = start;
		lit_skip_group(L);
		bool exact;
		const char *qs = L->s;
		int min = lit_quant(L, &exact);
		L->s = qs;
		if (inner.nbest > L->nbest && min != 0 && depth < 32) {
			memcpy(L->best, inner.best, inner.nbest);
			L->nbest = inner.nbest;
		}
		return 2;
	}
	case '\\': {
		if (L->s >= L->e)
			return 2;
		char d = *L->s++;
		switch (d) {
		case 'b': case 'B': case 'A': case 'z': case 'Z': case 'G': case 'K':
			return 0;
		case 't': *byte = '\t'; return 1;
		case 'n': *byte = '\n'; return 1;
		case 'r': *byte = '\r'; return 1;
		case 'f': *byte = '\f'; return 1;
		case 'e': *byte = 0x1b; return 1;
		case 'a': *byte = 0x07; return 1;
		case 'x': {
			unsigned v = 0;
			int k = 0;
			if (L->s < L->e && *L->s == '{') {
				L->s++;
				while (L->s < L->e && isxdigit((unsigned char)*L->s)) {
					v = v * 16 + (unsigned)(isdigit((unsigned char)*L->s) ? *L->s - '0' :
					    (tolower((unsigned char)*L->s) - 'a' + 10));
					L->s++;
					k++;
				}
				if (L->s < L->e && *L->s == '}')
					L->s++;
			} else {
				while (k < 2 && L->s < L->e && isxdigit((unsigned char)*L->s)) {
					v = v * 16 + (unsigned)(isdigit((unsigned char)*L->s) ? *L->s - '0' :
					    (tolower((unsigned char)*L->s) - 'a' + 10));
					L->s++;
					k++;
				}
			}
			if (v > 0xff)
				return 2;
			*byte = (uint8_t)v;
			return 1;
		}
		case 'Q': {
			/* \Q...\E: literal bytes; treat as something else for safety */
			const char *q = L->s;
			while (q + 1 < L->e && !(q[0] == '\\' && q[1] == 'E'))
				q++;
			L->s = q + 1 < L->e ? q + 2 : L->e;
			return 2;
		}
		case 'p': case 'P': case 'N':
			if (L->s < L->e && *L->s == '{') {
				while (L->s < L->e && *L->s != '}')
					L->s++;
				if (L->s < L->e)
					L->s++;
			} else if (L->s < L->e)
				L->s++;
			return 2;
		case 'c':
			if (L->s < L->e)
				L->s++;
			return 2;
		case 'k': case 'g':
			if (L->s < L->e && (*L->s == '{' || *L->s == '<' || *L->s == '\'')) {
				char cl = *L->s == '{' ? '}' : *L->s == '<' ? '>' : '\'';
				while (L->s < L->e && *L->s != cl)
					L->s++;
				if (L->s < L->e)
					L->s++;
			} else
				while (L->s < L->e && (isdigit((unsigned char)*L->s) || *L->s == '-'))
					L->s++;
			return 2;
		default:
			if (isalnum((unsigned char)d)) {
				if (d == '0') {
					/* octal \0nn */
					unsigned v = 0;
					int k = 0;
					while (k < 2 && L->s < L->e && *L->s >= '0' && *L->s <= '7') {
						v = v * 8 + (unsigned)(*L->s++ - '0');
						k++;
					}
					*byte = (uint8_t)v;
					return 1;
				}
				while (isdigit((unsigned char)d) && L->s < L->e && isdigit((unsigned char)*L->s))
					L->s++;
				return 2;       /* \d \w \s \1 ... */
			}
			*byte = (uint8_t)d;
			return 1;
		}
	}
	default:
		*byte = (uint8_t)c;
		return 1;
	}
}

static void
lit_seq(struct lit *L, int depth)
{
	struct lit save;
	bool alt = false;

	save.nbest = 0;
	while (L->s < L->e) {
		char c = *L->s;
		if (c == ')')
			break;
		if (c == '|') {
			/* alternation: nothing from this sequence is required */
			alt = true;
			L->s++;
			continue;
		}
		if (L->x && x_space(c)) {
			L->s++;
			continue;
		}
		if (L->x && c == '#') {
			while (L->s < L->e && *L->s != '\n')
				L->s++;
			continue;
		}
		uint8_t b = 0;
		int k = lit_atom(L, &b, depth);
		bool exact;
		int min = lit_quant(L, &exact);
		if (k == 0)
			continue;
		if (k == 1 && (min < 0 || exact)) {
			if (L->ncur < sizeof(L->cur))
				L->cur[L->ncur++] = b;
			else
				lit_end_run(L);
			continue;
		}
		if (k == 1 && min == 1) {
			/* x+ : x is required, the run ends after it */
			if (L->ncur < sizeof(L->cur))
				L->cur[L->ncur++] = b;
			lit_end_run(L);
			continue;
		}
		lit_end_run(L);
	}
	lit_end_run(L);
	if (alt)
		L->nbest = 0;
	(void)save;
}

size_t
scan_rules_literal(const char *re, uint32_t flags, uint8_t *out, size_t cap)
{
	struct lit L;

	memset(&L, 0, sizeof(L));
	L.s = re;
	L.e = re + strlen(re);
	L.x = (flags & SCAN_RE_X) != 0;
	/* an inline (?x) anywhere: be conservative, give up on /x-less parsing */
	if ((!L.x && strstr(re, "(?x")) || re_exotic(re))
		return 0;
	while (L.s < L.e) {
		lit_seq(&L, 0);
		if (L.s < L.e && *L.s == ')')
			L.s++;      /* unbalanced ')': skip */
	}
	size_t n = L.nbest < cap ? L.nbest : cap;
	memcpy(out, L.best, n);
	return n;
}

/* ---- required literal sets ----
 * A walk over the pattern that keeps, per node, the finite set of strings
 * it can match (exact, when small) and a set of strings one of which every
 * match must contain (req). Three modes:
 *   LS_FOLD     strings ASCII-lower-cased: the gates that use them match
 *               caselessly, so folding only widens them;
 *   LS_SQUEEZE  the strings are those of the *squeezed* text: every byte
 *               that is not an ASCII letter or digit deleted, letters
 *               lower-cased (scan_rules_squeeze_byte). The squeeze is a
 *               per-byte map, so a match's image is a substring of the
 *               text's image: a class of separators ([_\W]{0,3}, \s+)
 *               maps to the empty string whatever its repeat, a class
 *               mixing letters and separators to its letters or nothing;
 *   LS_EXACT    bytes as written and no assertion, look-around or inline
 *               flag: the exact set is then every string the pattern
 *               matches (for counting matches outside Hyperscan).
 */
#define LS_MAX 32
#define LS_LEN 24
#define LS_CLASS 8              /* a class of up to this many bytes is a set */

struct lset {
	bool none;              /* no usable set (unbounded or too big) */
	uint8_t n;
	uint8_t len[LS_MAX];
	uint8_t s[LS_MAX][LS_LEN];
};

enum { LS_FOLD, LS_SQUEEZE, LS_EXACT };

struct lsp {
	const char *s, *e;
	bool x;
	int depth;
	int mode;
};

static void ls_alt(struct lsp *P, struct lset *exact, struct lset *req);

static void
ls_none(struct lset *a)
{
	a->none = true;
	a->n = 0;
}

static void
ls_empty(struct lset *a)
{
	a->none = false;
	a->n = 1;
	a->len[0] = 0;
}

static void
ls_add(struct lset *a, const uint8_t *p, size_t n)
{
	if (a->none)
		return;
	if (n > LS_LEN || a->n >= LS_MAX) {
		ls_none(a);
		return;
	}
	for (unsigned i = 0; i < a->n; i++)
		if (a->len[i] == n && !memcmp(a->s[i], p, n))
			return;
	memcpy(a->s[a->n], p, n);
	a->len[a->n++] = (uint8_t)n;
}

static void
ls_byte(struct lset *a, uint8_t b)
{
	b = (uint8_t)tolower(b);
	ls_add(a, &b, 1);
}

static bool
ls_is_alnum(uint8_t b)
{
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z');
}

/* The set of one literal byte, as the mode sees it. */
static void
ls_lit(const struct lsp *P, struct lset *a, uint8_t b)
{
	a->none = false;
	a->n = 0;
	if (P->mode == LS_EXACT)
		ls_add(a, &b, 1);
	else if (P->mode == LS_SQUEEZE && !ls_is_alnum(b))
		ls_add(a, &b, 0);       /* deleted by the squeeze */
	else
		ls_byte(a, b);
}

/* Only the empty string (a separator, an assertion, under the squeeze). */
static bool
ls_eps(const struct lset *a)
{
	return !a->none && a->n == 1 && a->len[0] == 0;
}

static unsigned
ls_minlen(const struct lset *a)
{
	unsigned m = LS_LEN + 1;

	if (a->none || !a->n)
		return 0;
	for (unsigned i = 0; i < a->n; i++)
		if (a->len[i] < m)
			m = a->len[i];
	return m;
}

/* Is a a better gate than b: longer shortest string, then fewer strings. */
static bool
ls_better(const struct lset *a, const struct lset *b)
{
	unsigned ma = ls_minlen(a), mb = ls_minlen(b);

	if (ma > 6)
		ma = 6;
	if (mb > 6)
		mb = 6;
	if (ma != mb)
		return ma > mb;
	return ma && a->n < b->n;
}

static void
ls_take_better(struct lset *best, const struct lset *c)
{
	if (ls_better(c, best))
		*best = *c;
}

/* a = a x b (every string of a followed by every string of b) */
static void
ls_cross(struct lset *a, const struct lset *b)
{
	struct lset r;

	if (a->none || b->none || (unsigned)a->n * b->n > LS_MAX) {
		ls_none(a);
		return;
	}
	r.none = false;
	r.n = 0;
	for (unsigned i = 0; i < a->n; i++)
		for (unsigned j = 0; j < b->n; j++) {
			uint8_t t[2 * LS_LEN];
			memcpy(t, a->s[i], a->len[i]);
			memcpy(t + a->len[i], b->s[j], b->len[j]);
			ls_add(&r, t, (size_t)a->len[i] + b->len[j]);
		}
	*a = r;
}

/*
 * cur x ax with cur cut to the suffixes of length L of its strings (the
 * shorter ones whole), for the largest L that fits; false if none does.
 */
static bool
ls_trim_cross(struct lset *cur, const struct lset *ax)
{
	unsigned maxlen = 0;

	if (cur->none || ax->none || !ax->n)
		return false;
	for (unsigned i = 0; i < cur->n; i++)
		if (cur->len[i] > maxlen)
			maxlen = cur->len[i];
	for (unsigned L = maxlen; L-- > 1;) {
		struct lset t;
		t.none = false;
		t.n = 0;
		for (unsigned i = 0; i < cur->n && !t.none; i++) {
			unsigned k = cur->len[i] < L ? cur->len[i] : L;
			ls_add(&t, cur->s[i] + cur->len[i] - k, k);
		}
		if (t.none || (unsigned)t.n * ax->n > LS_MAX)
			continue;
		ls_cross(&t, ax);
		if (!t.none) {
			*cur = t;
			return true;
		}
	}
	return false;
}

static void
ls_union(struct lset *a, const struct lset *b)
{
	if (b->none) {
		ls_none(a);
		return;
	}
	for (unsigned j = 0; j < b->n && !a->none; j++)
		ls_add(a, b->s[j], b->len[j]);
}

/*
 * The fallback a branch offers its alternation when the branches' best
 * sets do not fit in one (ls_alt): fewest strings first, among those whose
 * every string is a usable gate (LS_FEW_MIN bytes), then the longer
 * shortest string.
 */
#define LS_FEW_MIN 3

static bool
ls_fewer(const struct lset *a, const struct lset *b)
{
	unsigned ma = ls_minlen(a), mb = ls_minlen(b);

	if (!ma)
		return false;
	if (!mb)
		return true;
	if ((ma >= LS_FEW_MIN) != (mb >= LS_FEW_MIN))
		return ma >= LS_FEW_MIN;
	if (a->n != b->n)
		return a->n < b->n;
	return (ma > 6 ? 6 : ma) > (mb > 6 ? 6 : mb);
}

static void
ls_take_fewer(struct lset *few, const struct lset *c)
{
	if (ls_fewer(c, few))
		*few = *c;
}

/*
 * The fewest-strings run: one string at a time (frun), cut before every
 * atom that can match more than one string (or none), which is a candidate
 * of its own; each cut leaves the run so far as a candidate.
 */
static void
ls_few_atom(struct lset *frun, struct lset *few, const struct lset *ax, const struct lset *ar)
{
	if (!ax->none && ax->n == 1) {
		struct lset t = *frun;
		ls_cross(&t, ax);
		if (!t.none) {
			*frun = t;
			return;
		}
		ls_take_fewer(few, frun);
		*frun = *ax;
		return;
	}
	ls_take_fewer(few, frun);
	ls_take_fewer(few, ax);
	ls_take_fewer(few, ar);
	ls_empty(frun);
}

/* Adds an escape's class (\d \w \s \h \v and negations) to mem; false if unknown. */
static bool
ls_class_escape(char d, uint8_t *mem)
{
	uint8_t m[256] = {0};
	bool neg = isupper((unsigned char)d);

	switch (tolower((unsigned char)d)) {
	case 'd':
		for (int b = '0'; b <= '9'; b++)
			m[b] = 1;
		break;
	case 'w':
		for (int b = 0; b < 256; b++)
			m[b] = ls_is_alnum((uint8_t)b) || b == '_';
		break;
	case 's':
		m[' '] = m['\t'] = m['\n'] = m['\v'] = m['\f'] = m['\r'] = 1;
		break;
	case 'h':
		m[' '] = m['\t'] = 1;
		break;
	case 'v':
		m['\n'] = m['\v'] = m['\f'] = m['\r'] = 1;
		break;
	default:
		return false;
	}
	for (int b = 0; b < 256; b++)
		if (m[b] != neg)
			mem[b] = 1;
	return true;
}

/* A POSIX [:name:] class into mem; false if unknown. */
static bool
ls_class_posix(const char *n, size_t len, uint8_t *mem)
{
	static const struct {
		const char *name;
		int (*f)(int);
	} px[] = {
		{"alpha", isalpha}, {"digit", isdigit}, {"alnum", isalnum}, {"space", isspace},
		{"upper", isupper}, {"lower", islower}, {"punct", ispunct}, {"xdigit", isxdigit},
	};
	bool neg = len && *n == '^';

	if (neg) {
		n++;
		len--;
	}
	for (size_t k = 0; k < sizeof(px) / sizeof(px[0]); k++)
		if (strlen(px[k].name) == len && !memcmp(px[k].name, n, len)) {
			for (int b = 0; b < 256; b++)
				if ((b < 128 && px[k].f(b)) != neg)
					mem[b] = 1;
			return true;
		}
	return false;
}

/* One byte of a class: a plain byte or a simple escape; -1 if it is a class escape. */
static int
ls_class_byte(struct lsp *P, char c, char *esc)
{
	*esc = 0;
	if (c != '\\' || P->s >= P->e)
		return (unsigned char)c;
	char d = *P->s++;
	switch (d) {
	case 'n': return '\n';
	case 't': return '\t';
	case 'r': return '\r';
	case 'f': return '\f';
	case 'e': return 0x1b;
	case 'a': return 0x07;
	case 'x': {
		unsigned v = 0;
		int k = 0;
		if (P->s < P->e && *P->s == '{') {
			*esc = '{';
			while (P->s < P->e && *P->s != '}')
				P->s++;
			if (P->s < P->e)
				P->s++;
			return -1;
		}
		while (k < 2 && P->s < P->e && isxdigit((unsigned char)*P->s)) {
			char h = *P->s++;
			v = v * 16 + (unsigned)(isdigit((unsigned char)h) ? h - '0' :
			    tolower((unsigned char)h) - 'a' + 10);
			k++;
		}
		return (int)v;
	}
	default:
		if (isalnum((unsigned char)d)) {
			*esc = d;       /* \d \w \s \p octal ...: a class escape */
			if ((d == 'p' || d == 'P') && P->s < P->e && *P->s == '{')
				while (P->s < P->e && *P->s++ != '}')
					;
			else if ((d == 'p' || d == 'P') && P->s < P->e)
				P->s++;         /* \pL */
			return -1;
		}
		return (unsigned char)d;
	}
}

/*
 * One class after '[': its members, then the set the mode makes of them
 * (small classes only; under the squeeze, a class of separators is the
 * empty string and a mixed one its letters or nothing).
 */
static void
ls_class(struct lsp *P, struct lset *a)
{
	bool neg = false, unknown = false;
	uint8_t mem[256] = {0};
	int prev = -1;

	if (P->s < P->e && *P->s == '^') {
		neg = true;
		P->s++;
	}
	bool first = true;
	while (P->s < P->e && (*P->s != ']' || first)) {
		first = false;
		char c = *P->s++, esc;
		const char *pe = c == '[' && P->s < P->e && *P->s == ':' ?
		    scan_rules_posix_end(P->s - 1, P->e) : NULL;
		if (pe) {
			if (!ls_class_posix(P->s + 1, (size_t)(pe - 2 - P->s - 1), mem))
				unknown = true;
			P->s = pe;
			prev = -1;
			continue;
		}
		int lo = ls_class_byte(P, c, &esc);
		if (lo < 0) {
			if (!ls_class_escape(esc, mem))
				unknown = true;
			prev = -1;
			continue;
		}
		if (c == '-' && prev >= 0 && P->s < P->e && *P->s != ']') {
			/* a range prev-hi */
			char h = *P->s++;
			int hi = ls_class_byte(P, h, &esc);
			if (hi < 0)
				unknown = true;
			else
				for (int b = prev; b <= hi && b < 256; b++)
					mem[b] = 1;
			prev = -1;
			continue;
		}
		mem[lo] = 1;
		prev = lo;
	}
	if (P->s < P->e)
		P->s++;         /* ']' */
	ls_none(a);
	if (unknown)
		return;
	if (neg)
		for (int b = 0; b < 256; b++)
			mem[b] = !mem[b];
	uint8_t set[256] = {0};
	bool sep = false;
	unsigned n = 0;
	for (int b = 0; b < 256; b++) {
		if (!mem[b])
			continue;
		if (P->mode == LS_SQUEEZE && !ls_is_alnum((uint8_t)b)) {
			sep = true;
			continue;
		}
		int k = P->mode == LS_EXACT ? b : tolower(b);
		n += !set[k];
		set[k] = 1;
	}
	if (n > LS_CLASS)
		return;
	a->none = false;
	a->n = 0;
	for (int b = 0; b < 256; b++)
		if (set[b])
			ls_add(a, (const uint8_t *)&(uint8_t){(uint8_t)b}, 1);
	if (sep || !n)
		ls_add(a, (const uint8_t *)"", 0);
	if (!n && P->mode != LS_SQUEEZE)
		ls_none(a);     /* an empty class matches nothing: no set */
}

/* Skips a group body up to its closing ')' (after the opening). */
static void
ls_skip_group(struct lsp *P)
{
	int d = 1;

	while (P->s < P->e && d) {
		char c = *P->s++;
		if (c == '\\' && P->s < P->e)
			P->s++;
		else if (c == '[') {
			if (P->s < P->e && *P->s == '^')
				P->s++;
			if (P->s < P->e && *P->s == ']')
				P->s++;
			while (P->s < P->e && *P->s != ']') {
				if (*P->s == '\\' && P->s + 1 < P->e)
					P->s++;
				P->s++;
			}
			if (P->s < P->e)
				P->s++;
		} else if (c == '(')
			d++;
		else if (c == ')')
			d--;
	}
}

/* One atom: its exact set (or none) and a required set. */
static void
ls_atom(struct lsp *P, struct lset *ex, struct lset *req)
{
	char c = *P->s++;

	ls_none(req);
	switch (c) {
	case '^': case '$':
		if (P->mode == LS_EXACT)
			ls_none(ex);    /* counting needs the bytes alone */
		else
			ls_empty(ex);
		return;
	case '.':
		ls_none(ex);
		return;
	case '[':
		ls_class(P, ex);
		return;
	case '(':
		if (P->s < P->e && *P->s == '?') {
			const char *q = P->s + 1;
			if (q < P->e && (*q == '=' || *q == '!' || *q == '#' ||
			    (*q == '<' && q + 1 < P->e && (q[1] == '=' || q[1] == '!')))) {
				P->s = q;
				ls_skip_group(P);
				if (P->mode == LS_EXACT)
					ls_none(ex);
				else
					ls_empty(ex);
				return;
			}
			if (q < P->e && (*q == '(' || *q == 'R' || isdigit((unsigned char)*q) ||
			    *q == '+' || *q == '&' || (*q == 'P' && q + 1 < P->e && q[1] == '>'))) {
				P->s = q;
				ls_skip_group(P);
				ls_none(ex);
				return;
			}
			if (q < P->e && (*q == '<' || *q == '\'' || *q == 'P')) {
				/* named group */
				while (q < P->e && *q != '>' && *q != '\'')
					q++;
				if (q < P->e && *q == '\'' && q == P->s + 1)
					q++;
				while (q < P->e && *q != '>' && *q != '\'')
					q++;
				P->s = q < P->e ? q + 1 : P->e;
			} else {
				while (q < P->e && (isalpha((unsigned char)*q) || *q == '-' || *q == '^'))
					q++;
				if (q < P->e && *q == ')') {
					P->s = q + 1;   /* (?flags) */
					if (P->mode == LS_EXACT)
						ls_none(ex);
					else
						ls_empty(ex);
					return;
				}
				if (P->mode == LS_EXACT && q < P->e && *q == ':' && q != P->s + 1) {
					ls_skip_group(P);       /* (?i:...): flags inside */
					ls_none(ex);
					return;
				}
				if (q < P->e && (*q == ':' || *q == '>' || *q == '|'))
					q++;
				P->s = q;
			}
		}
		if (++P->depth > 60) {
			ls_skip_group(P);
			ls_none(ex);
			P->depth--;
			return;
		}
		ls_alt(P, ex, req);
		P->depth--;
		if (P->s < P->e && *P->s == ')')
			P->s++;
		return;
	case '\\': {
		if (P->s >= P->e) {
			ls_none(ex);
			return;
		}
		char d = *P->s;
		switch (d) {
		case 'b': case 'B': case 'A': case 'z': case 'Z': case 'G': case 'K':
			P->s++;
			if (P->mode == LS_EXACT)
				ls_none(ex);
			else
				ls_empty(ex);
			return;
		case 'Q': {
			const char *q = ++P->s;
			while (q + 1 < P->e && !(q[0] == '\\' && q[1] == 'E'))
				q++;
			P->s = q + 1 < P->e ? q + 2 : P->e;
			ls_none(ex);
			return;
		}
		case 'N': case 'k': case 'g':
			P->s++;
			if (P->s < P->e && (*P->s == '{' || *P->s == '<' || *P->s == '\'')) {
				char cl = *P->s == '{' ? '}' : *P->s == '<' ? '>' : '\'';
				P->s++;
				while (P->s < P->e && *P->s != cl)
					P->s++;
				if (P->s < P->e)
					P->s++;
			} else if (d != 'N' && P->s < P->e)
				P->s++;
			ls_none(ex);
			return;
		case 'c':
			P->s += P->s + 1 < P->e ? 2 : 1;
			ls_none(ex);
			return;
		default:
			break;
		}
		/* a byte, or a class escape (\d \w \s \p{..} \1 octal ...) */
		char esc;
		int lo = ls_class_byte(P, '\\', &esc);
		if (lo >= 0) {
			ls_lit(P, ex, (uint8_t)lo);
			return;
		}
		while (isdigit((unsigned char)esc) && P->s < P->e && isdigit((unsigned char)*P->s))
			P->s++;
		/* under the squeeze a class of separators only (\s \W \h \v \R) is
		 * the empty string */
		if (P->mode == LS_SQUEEZE && esc && strchr("sWhvR", esc))
			ls_empty(ex);
		else
			ls_none(ex);
		return;
	}
	default:
		ls_lit(P, ex, (uint8_t)c);
		return;
	}
}

/* A quantifier after an atom: min and max (-1 unbounded); false if none. */
static bool
ls_quant(struct lsp *P, int *lo, int *hi)
{
	P->s = x_skip(P->s, P->e, P->x);
	if (P->s >= P->e)
		return false;
	char c = *P->s;
	if (c == '*' || c == '?' || c == '+') {
		P->s++;
		*lo = c == '+';
		*hi = c == '?' ? 1 : -1;
	} else if (c == '{') {
		const char *q = P->s + 1;
		int a = 0, b;
		if (q >= P->e || !isdigit((unsigned char)*q))
			return false;
		a = quant_num(&q, P->e);
		b = a;
		if (q < P->e && *q == ',') {
			q++;
			b = -1;
			if (q < P->e && isdigit((unsigned char)*q))
				b = quant_num(&q, P->e);
		}
		if (q >= P->e || *q != '}')
			return false;
		P->s = q + 1;
		*lo = a;
		*hi = b;
	} else
		return false;
	if (P->s < P->e && (*P->s == '?' || *P->s == '+'))
		P->s++;
	return true;
}

/*
 * A sequence up to '|' or ')' or the end: its exact set, its best required
 * set (req), and the required set with the fewest strings (few).
 */
static void
ls_seq(struct lsp *P, struct lset *exact, struct lset *req, struct lset *few)
{
	struct lset cur, ax, ar, frun;
	bool all_exact = true;

	ls_empty(&cur);
	ls_empty(&frun);
	ls_none(req);
	ls_none(few);
	while (P->s < P->e && *P->s != '|' && *P->s != ')') {
		char c = *P->s;
		if (P->x && x_space(c)) {
			P->s++;
			continue;
		}
		if (P->x && c == '#') {
			while (P->s < P->e && *P->s != '\n')
				P->s++;
			continue;
		}
		int lo, hi;
		ls_atom(P, &ax, &ar);
		bool q = ls_quant(P, &lo, &hi);
		if (q && P->mode == LS_SQUEEZE && ls_eps(&ax)) {
			/* separators only: any number of them squeezes to nothing */
			ls_none(&ar);
		} else if (q) {
			struct lset one = ar;
			ls_take_better(&one, &ax);
			if (lo == 0) {
				if (hi == 1 && !ax.none) {
					struct lset e;
					ls_empty(&e);
					ls_union(&ax, &e);
				} else
					ls_none(&ax);
				ls_none(&ar);
			} else if (lo == hi && lo <= 4 && !ax.none) {
				struct lset r;
				ls_empty(&r);
				for (int k = 0; k < lo; k++)
					ls_cross(&r, &ax);
				ax = r;
				ar = one;
			} else if (!ax.none) {
				/* x+ or x{2,}: the first copy ends the run so far, the
				 * last one starts the next */
				struct lset t = cur;
				ls_cross(&t, &ax);
				ls_take_better(req, t.none ? &cur : &t);
				ls_take_better(req, &one);
				cur = ax;
				ls_few_atom(&frun, few, &ax, &one);
				ls_take_fewer(few, &frun);
				if (ax.n == 1)
					frun = ax;
				else
					ls_empty(&frun);
				all_exact = false;
				continue;
			} else {
				ls_none(&ax);
				ar = one;
			}
		}
		ls_few_atom(&frun, few, &ax, &ar);
		if (!ax.none) {
			struct lset t = cur;
			ls_cross(&t, &ax);
			if (!t.none) {
				cur = t;
				continue;
			}
			/* too many or too long: the run so far is a candidate, and
			 * the run goes on from the longest suffixes of its strings
			 * that leave room (each match still holds one of them
			 * followed by one of ax's) */
			ls_take_better(req, &cur);
			all_exact = false;
			if (!ls_trim_cross(&cur, &ax))
				cur = ax;
			continue;
		}
		all_exact = false;
		ls_take_better(req, &cur);
		ls_take_better(req, &ar);
		ls_empty(&cur);
	}
	ls_take_better(req, &cur);
	ls_take_fewer(few, &frun);
	ls_take_fewer(few, req);
	if (all_exact)
		*exact = cur;
	else
		ls_none(exact);
}

/*
 * Alternatives: the union of the branches' sets. When the union of their
 * best sets is too big (or holds a string too short), the union of each
 * branch's fewest-strings set may still fit, and is taken if it is the
 * better gate: /\b(?:confiden[tc]i[ae]l|secr[e\xe8](?:te?|cy)|very\sdiscrete|...)/
 * overflows with every spelling of each branch, and gates on 12 strings
 * ("confiden", "secr", "discrete", ...), one a branch. Only then: where
 * the best sets fit, they stay.
 */
static void
ls_alt(struct lsp *P, struct lset *exact, struct lset *req)
{
	struct lset ex, rq, fw, fu;
	bool first = true;

	for (;;) {
		ls_seq(P, &ex, &rq, &fw);
		ls_take_better(&rq, &ex);
		ls_take_fewer(&fw, &ex);
		if (ls_minlen(&rq) == 0)
			ls_none(&rq);
		if (ls_minlen(&fw) == 0)
			ls_none(&fw);
		if (first) {
			*exact = ex;
			*req = rq;
			fu = fw;
			first = false;
		} else {
			ls_union(exact, &ex);
			ls_union(req, &rq);
			ls_union(&fu, &fw);
		}
		if (P->s < P->e && *P->s == '|') {
			P->s++;
			continue;
		}
		break;
	}
	if (ls_minlen(req) < LS_FEW_MIN && ls_minlen(&fu) >= LS_FEW_MIN)
		*req = fu;
}

static unsigned
ls_run(const char *re, uint32_t flags, int mode, uint8_t (*out)[SCAN_RULES_LSET_LEN + 1],
    unsigned cap)
{
	struct lsp P = {.s = re, .e = re + strlen(re), .x = (flags & SCAN_RE_X) != 0, .mode = mode};
	struct lset ex, req;

	if (mode == LS_EXACT) {
		if ((flags & (SCAN_RE_I | SCAN_RE_X)) || strstr(re, "(?x") || re_exotic(re))
			return 0;
		ls_alt(&P, &ex, &req);
		if (P.s != P.e || ex.none || !ex.n || ex.n > cap || ls_minlen(&ex) == 0)
			return 0;
		for (unsigned i = 0; i < ex.n; i++) {
			out[i][0] = ex.len[i];
			memcpy(&out[i][1], ex.s[i], ex.len[i]);
		}
		return ex.n;
	}

	if ((!P.x && strstr(re, "(?x")) || re_exotic(re))
		return 0;
	ls_alt(&P, &ex, &req);
	if (P.s != P.e)
		return 0;       /* unbalanced ')': do not trust the walk */
	ls_take_better(&req, &ex);
	if (req.none || !req.n || req.n > cap || ls_minlen(&req) == 0)
		return 0;
	for (unsigned i = 0; i < req.n; i++) {
		out[i][0] = req.len[i];
		memcpy(&out[i][1], req.s[i], req.len[i]);
	}
	return req.n;
}

unsigned
scan_rules_literal_set(const char *re, uint32_t flags, uint8_t (*out)[SCAN_RULES_LSET_LEN + 1],
    unsigned cap)
{
	return ls_run(re, flags, LS_FOLD, out, cap);
}

unsigned
scan_rules_squeeze_set(const char *re, uint32_t flags, uint8_t (*out)[SCAN_RULES_LSET_LEN + 1],
    unsigned cap)
{
	return ls_run(re, flags, LS_SQUEEZE, out, cap);
}

unsigned
scan_rules_exact_set(const char *re, uint32_t flags, uint8_t (*out)[SCAN_RULES_LSET_LEN + 1],
    unsigned cap)
{
	return ls_run(re, flags, LS_EXACT, out, cap);
}

/* ---- relaxed forms (gates for rules Hyperscan cannot take) ---- */

#define RELAX_MAXN 5            /* a repeat up to {m,5} stays bounded, and {n} of one atom */

/* Past the group that opens at g ('('), or NULL if it does not close. */
static const char *
skip_group(const char *g)
{
	int depth = 0;

	for (const char *s = g; *s; s++) {
		if (*s == '\\') {
			if (!*++s)
				return NULL;
			continue;
		}
		if (*s == '[') {
			const char *q = scan_rules_class_end(s);
			if (!q)
				return NULL;
			s = q - 1;      /* the loop steps past the ']' */
			continue;
		}
		if (*s == '(')
			depth++;
		else if (*s == ')' && --depth == 0)
			return s + 1;
	}
	return NULL;
}

/* A counted quantifier at s ("{m}", "{m,}", "{m,n}"): its length, 0 if none. */
static size_t
counted(const char *s, unsigned *lo, unsigned *hi)
{
	const char *q = s + 1;
	unsigned a = 0, b;

	if (*s != '{' || !isdigit((unsigned char)*q))
		return 0;
	for (; isdigit((unsigned char)*q); q++)
		if ((a = a * 10 + (unsigned)(*q - '0')) > 100000)
			a = 100000;
	b = a;
	if (*q == ',') {
		q++;
		b = UINT32_MAX;
		if (isdigit((unsigned char)*q))
			for (b = 0; isdigit((unsigned char)*q); q++)
				if ((b = b * 10 + (unsigned)(*q - '0')) > 100000)
					b = 100000;
	}
	if (*q != '}')
		return 0;
	*lo = a;
	*hi = b;
	return (size_t)(q + 1 - s);
}

/*
 * The relaxed form of an expression x wrapped in (?:...): a superset
 * that Hyperscan may take where x is refused or too costly, so that every
 * match of x contains a match of it and it can gate x. Look-arounds, \K and
 * \G go; atomic groups become plain ones, possessive quantifiers greedy, a
 * back-reference any text; a repeat with more than maxn copies (RELAX_MAXN;
 * more for the tight form) becomes unbounded ({m,n} -> {min(m, maxn),}); a
 * repeat of the whole
 * expression keeps one copy. drop_asserts: ^ $ \b \B \A \z \Z go too.
 * NULL for constructs it does not know (conditionals, recursion, /x) or ENOMEM.
 */
const char *
scan_rules_posix_end(const char *s, const char *e)
{
	/* PCRE2's check_posix_syntax, for ':' */
	for (const char *p = s + 2; e - p >= 2; p++) {
		if (*p == '\\' && (p[1] == ']' || p[1] == '\\'))
			p++;
		else if ((*p == '[' && p[1] == ':') || *p == ']')
			return NULL;
		else if (*p == ':' && p[1] == ']')
			return p + 2;
	}
	return NULL;
}

const char *
scan_rules_class_end(const char *s)
{
	s++;
	if (*s == '^')
		s++;
	if (*s == ']')
		s++;
	while (*s && *s != ']') {
		if (*s == '\\' && s[1])
			s += 2;
		else if (s[0] == '[' && s[1] == ':') {
			const char *q = scan_rules_posix_end(s, s + strlen(s));
			s = q ? q : s + 1;
		} else
			s++;
	}
	return *s ? s + 1 : NULL;
}

/* width: keep every repeat as written (scan_rules_width_form) */
static char *
relax(const char *x, bool drop_asserts, unsigned copies, bool width, unsigned maxn)
{
	struct scan_sb b = {0};
	const char *s = x;
	bool quant = false;     /* the last token was a quantifier */
	bool group = false;     /* the last token closed a group */

	if (strncmp(x, "(?:", 3))
		return NULL;
	while (*s) {
		const char *tok = s;
		bool dropped = false;
		bool was_group = group;
		group = *s == ')';
		if (quant && *s == '+') {
			s++;    /* possessive */
			quant = false;
			continue;
		}
		if (quant && *s == '?') {
			scan_sb_put(&b, s++, 1);        /* lazy */
			quant = false;
			continue;
		}
		quant = false;
		if (*s == '\\') {
			char d = s[1];
			if (!d)
				goto fail;
			if (d >= '1' && d <= '9') {
				s += 2;
				while (isdigit((unsigned char)*s))
					s++;
				scan_sb_puts(&b, "[\\s\\S]*");
				continue;
			}
			if (d == 'g' || d == 'k') {
				const char *q = s + 2;
				char close = *q == '{' ? '}' : *q == '<' ? '>' : *q == '\'' ? '\'' : 0;
				if (close) {
					q = strchr(q + 1, close);
					if (!q)
						goto fail;
					q++;
				} else {
					if (*q == '-' || *q == '+')
						q++;
					while (isdigit((unsigned char)*q))
						q++;
				}
				s = q;
				scan_sb_puts(&b, "[\\s\\S]*");
				continue;
			}
			if (width && (d == 'K' || d == 'G'))
				goto fail;      /* the match start moves, or depends on where the search began */
			if (d == 'K' || d == 'G' || (drop_asserts && strchr("bBAzZ", d))) {
				s += 2;
				dropped = true;
			} else if (strchr("xpPNo", d) && s[2] == '{') {
				if (!(s = scan_rules_brace_end(s + 2, NULL)))
					goto fail;
				scan_sb_put(&b, tok, (size_t)(s - tok));
			} else if (d == 'c' && s[2]) {
				scan_sb_put(&b, s, 3);
				s += 3;
			} else if (d == 'Q') {
				goto fail;
			} else {
				scan_sb_put(&b, s, 2);
				s += 2;
			}
		} else if (*s == '[') {
			if ((s = scan_rules_class_end(s)) == NULL)
				goto fail;
			scan_sb_put(&b, tok, (size_t)(s - tok));
		} else if (*s == '(' && s[1] == '?') {
			const char *q = s + 2;
			if (*q == '=' || *q == '!' || (*q == '<' && (q[1] == '=' || q[1] == '!')) ||
			    *q == '#') {
				s = skip_group(s);
				if (!s)
					goto fail;
				dropped = true;
			} else if (*q == '>') {
				scan_sb_puts(&b, "(?:");
				s += 3;
			} else if (*q == '(' || *q == 'R' || *q == '&' || *q == '+' || *q == '-' ||
			    isdigit((unsigned char)*q) || (*q == 'P' && q[1] == '>')) {
				goto fail;
			} else {
				scan_sb_put(&b, s, 2);
				s += 2;
			}
		} else if (*s == '{') {
			unsigned lo, hi;
			size_t k = counted(s, &lo, &hi);
			if (k && !width && hi > maxn && hi != UINT32_MAX && (was_group || lo != hi)) {
				char q[32];
				/* maxn 0 (the open form): every such repeat {lo,} */
				snprintf(q, sizeof(q), "{%u,}", lo < maxn || !maxn ? lo : maxn);
				scan_sb_puts(&b, q);
				s += k;
				quant = true;
			} else if (k) {
				scan_sb_put(&b, s, k);
				s += k;
				quant = true;
			} else
				scan_sb_put(&b, s++, 1);
		} else if (*s == '*' || *s == '+' || *s == '?') {
			scan_sb_put(&b, s++, 1);
			quant = true;
		} else if (drop_asserts && (*s == '^' || *s == '$')) {
			s++;
			dropped = true;
		} else
			scan_sb_put(&b, s++, 1);
		/* a zero-width item that went, followed by a quantifier */
		if (dropped && (*s == '*' || *s == '+' || *s == '?' || *s == '{'))
			scan_sb_puts(&b, "(?:)");
	}
	if (b.oom || !b.p)
		goto fail;
	/* (?:(X){n}) keeps min(n, copies) copies of X: every match has them */
	const char *g = b.p + 3;
	char *q;
	if (!width && *g == '(' && (q = (char *)skip_group(g)) != NULL) {
		unsigned lo, hi;
		size_t k = counted(q, &lo, &hi);
		if (!k && *q == '+')
			k = 1, lo = 1;
		bool lazy = k && q[k] == '?';
		if (k && lo >= 1 && q[k + lazy] == ')' && !q[k + lazy + 1]) {
			char rep[32];
			snprintf(rep, sizeof(rep), "{%u})", lo < copies ? lo : copies);
			*q = '\0';
			b.n = (size_t)(q - b.p);
			scan_sb_puts(&b, rep);
			if (b.oom)
				goto fail;
		}
	}
	return b.p;
fail:
	free(b.p);
	return NULL;
}

char *
scan_rules_relax(const char *x, bool drop_asserts, unsigned copies)
{
	return relax(x, drop_asserts, copies, false, RELAX_MAXN);
}

char *
scan_rules_relax_n(const char *x, bool drop_asserts, unsigned copies, unsigned maxn)
{
	return relax(x, drop_asserts, copies, false, maxn < RELAX_MAXN ? RELAX_MAXN : maxn);
}

char *
scan_rules_relax_open(const char *x, bool drop_asserts, unsigned copies)
{
	return relax(x, drop_asserts, copies, false, 0);
}

char *
scan_rules_width_form(const char *x)
{
	return relax(x, true, 0, true, RELAX_MAXN);
}

unsigned
scan_rules_whole_repeat(const char *x, char **inner)
{
	size_t n = strlen(x);
	const char *q;
	unsigned lo, hi;

	*inner = NULL;
	if (n < 6 || strncmp(x, "(?:", 3) || x[3] != '(' || x[n - 1] != ')')
		return 0;
	if ((q = skip_group(x + 3)) == NULL)
		return 0;
	size_t k = counted(q, &lo, &hi);
	bool lazy = k && q[k] == '?';
	if (!k || lo < 1 || q + k + lazy != x + n - 1)
		return 0;
	*inner = strndup(x + 3, (size_t)(q - (x + 3)));
	return *inner ? lo : 0;
}

/*
 * Collapse: a group that only spells a few short byte strings (the
 * look-alike letters of the ReplaceTags FUZZY_* rules: (?:[pP]|\xce\xa1|...))
 * becomes one class per position ([pP\xce...][\xa1...]?): a superset that
 * Hyperscan scans as a handful of classes, not a wide alternation.
 */
#define CL_LEN 12
#define CL_ALTS 256

struct cl_seq {
	uint8_t n;
	uint8_t set[CL_LEN][32];
};

struct cl_alts {
	unsigned n;
	struct cl_seq *v;       /* [CL_ALTS] */
};

static void
cl_bit(uint8_t *set, unsigned c)
{
	set[c >> 3] |= (uint8_t)(1u << (c & 7));
}

static int
cl_hex(const char *s)
{
	int v = 0;

	for (int k = 0; k < 2; k++) {
		char c = s[k];
		v = v * 16 + (c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
		    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1000);
	}
	return v < 0 ? -1 : v;
}

/* One byte of a class or sequence at *sp (an escape or a char): 0-255, -1 none. */
static int
cl_byte(const char **sp)
{
	const char *s = *sp;

	if (*s != '\\') {
		*sp = s + 1;
		return (uint8_t)*s;
	}
	if (s[1] == 'x' && s[2] != '{') {
		int v = cl_hex(s + 2);
		*sp = s + 4;
		return v;
	}
	if (s[1] && !isalnum((unsigned char)s[1])) {
		*sp = s + 2;
		return (uint8_t)s[1];
	}
	return -1;
}

/* A class at s ('['): its bytes, and the end; NULL if it has what this does not read. */
static const char *
cl_class(const char *s, uint8_t *set)
{
	bool neg = false, first = true;

	memset(set, 0, 32);
	s++;
	if (*s == '^') {
		neg = true;
		s++;
	}
	while (*s && (first || *s != ']')) {
		first = false;
		if (s[0] == '\\' && (s[1] == 'd' || s[1] == 's' || s[1] == 'w')) {
			for (unsigned c = 0; c < 256; c++)
				if ((s[1] == 'd' && isdigit((int)c)) || (s[1] == 's' && (c == ' ' ||
				    (c >= 9 && c <= 13))) || (s[1] == 'w' && (c < 128 && (isalnum((int)c) ||
				    c == '_'))))
					cl_bit(set, c);
			s += 2;
			continue;
		}
		if (s[0] == '[' && s[1] == ':')
			return NULL;
		int a = cl_byte(&s), b = a;
		if (a < 0)
			return NULL;
		if (s[0] == '-' && s[1] && s[1] != ']') {
			s++;
			b = cl_byte(&s);
			if (b < a)
				return NULL;
		}
		for (int c = a; c <= b; c++)
			cl_bit(set, (unsigned)c);
	}
	if (*s != ']')
		return NULL;
	if (neg)
		for (unsigned k = 0; k < 32; k++)
			set[k] = (uint8_t)~set[k];
	return s + 1;
}

static bool cl_alts_of(const char *s, const char *end, struct cl_alts *out, int depth);

/* The strings a sequence s..end spells (classes, bytes, (?:...) groups), appended to out. */
static bool
cl_seq_of(const char *s, const char *end, struct cl_alts *out, int depth)
{
	unsigned base = out->n;

	if (out->n >= CL_ALTS)
		return false;
	memset(&out->v[out->n++], 0, sizeof(out->v[0]));
	while (s < end) {
		uint8_t set[32];
		if (*s == '(') {
			if (strncmp(s, "(?:", 3) || depth > 8)
				return false;
			const char *g = skip_group(s);
			if (!g || g > end)
				return false;
			struct cl_alts sub = {0, malloc(CL_ALTS * sizeof(struct cl_seq))};
			bool ok = sub.v && cl_alts_of(s + 3, g - 1, &sub, depth + 1);
			/* product: every string so far times every string of the group */
			unsigned have = out->n - base;
			if (ok && have * sub.n > CL_ALTS - base)
				ok = false;
			if (ok) {
				/* every string so far times every string of the group */
				struct cl_seq *pre = malloc(have * sizeof(*pre));
				if (!pre)
					ok = false;
				else {
					memcpy(pre, &out->v[base], have * sizeof(*pre));
					out->n = base;
					for (unsigned a = 0; ok && a < have; a++)
						for (unsigned k = 0; ok && k < sub.n; k++) {
							struct cl_seq *d = &out->v[out->n++];
							*d = pre[a];
							if (d->n + sub.v[k].n > CL_LEN) {
								ok = false;
								break;
							}
							memcpy(d->set[d->n], sub.v[k].set, sub.v[k].n * 32u);
							d->n = (uint8_t)(d->n + sub.v[k].n);
						}
					free(pre);
				}
			}
			free(sub.v);
			if (!ok)
				return false;
			s = g;
			continue;
		}
		if (*s == '[') {
			s = cl_class(s, set);
			if (!s)
				return false;
		} else if (strchr("*+?{|)^$.", *s)) {
			return false;
		} else {
			int c = cl_byte(&s);
			if (c < 0)
				return false;
			memset(set, 0, 32);
			cl_bit(set, (unsigned)c);
		}
		for (unsigned a = base; a < out->n; a++) {
			if (out->v[a].n >= CL_LEN)
				return false;
			memcpy(out->v[a].set[out->v[a].n++], set, 32);
		}
	}
	return true;
}

static bool
cl_alts_of(const char *s, const char *end, struct cl_alts *out, int depth)
{
	const char *b = s;
	int d = 0;

	for (const char *q = s; q <= end; q++) {
		if (q < end && *q == '\\') {
			q++;
			continue;
		}
		if (q < end && *q == '[') {
			uint8_t set[32];
			const char *c = cl_class(q, set);
			if (!c)
				return false;
			q = c - 1;
			continue;
		}
		if (q < end && *q == '(')
			d++;
		else if (q < end && *q == ')')
			d--;
		else if (q == end || (*q == '|' && d == 0)) {
			if (!cl_seq_of(b, q, out, depth))
				return false;
			b = q + 1;
		}
	}
	return true;
}

static void
cl_emit(struct scan_sb *b, const uint8_t *set)
{
	char x[16];

	scan_sb_puts(b, "[");
	for (unsigned c = 0; c < 256;) {
		if (!(set[c >> 3] & (1u << (c & 7)))) {
			c++;
			continue;
		}
		unsigned e = c;
		while (e + 1 < 256 && (set[(e + 1) >> 3] & (1u << ((e + 1) & 7))))
			e++;
		if (e == c && c < 128 && isalnum((int)c))
			snprintf(x, sizeof(x), "%c", (char)c);
		else if (c < 128 && e < 128 && isalnum((int)c) && isalnum((int)e) && e > c + 1 &&
		    (isdigit((int)c) == isdigit((int)e)) && (isupper((int)c) == isupper((int)e)))
			snprintf(x, sizeof(x), "%c-%c", (char)c, (char)e);
		else
			snprintf(x, sizeof(x), e > c ? "\\x%02x-\\x%02x" : "\\x%02x", c, e);
		scan_sb_puts(b, x);
		c = e + 1;
	}
	scan_sb_puts(b, "]");
}

/* See rules.h. */
char *
scan_rules_ascii_form(const char *x)
{
	struct scan_sb b = {0};

	for (const char *s = x; *s;) {
		const char *tok = s;
		uint8_t set[32];
		bool high = false;      /* the atom matches only bytes >= 0x80 */
		if (*s == '\\') {
			if (!s[1])
				goto fail;
			if (s[1] == 'x' && s[2] != '{') {
				int v = cl_hex(s + 2);
				if (v < 0)
					goto fail;
				s += 4;
				high = v >= 0x80;
			} else if (s[1] == 'x') {
				if (!(s = scan_rules_brace_end(s + 2, NULL)))
					goto fail;
			} else
				s += 2;
			if (!high) {
				scan_sb_put(&b, tok, (size_t)(s - tok));
				continue;
			}
		} else if (*s == '[') {
			const char *e = cl_class(s, set);
			if (!e) {
				/* a class this does not read stays as written */
				if ((e = scan_rules_class_end(s)) == NULL)
					goto fail;
				scan_sb_put(&b, s, (size_t)(e - s));
				s = e;
				continue;
			}
			s = e;
			memset(set + 16, 0, 16);
			bool any = false;
			for (unsigned k = 0; k < 16; k++)
				any |= set[k] != 0;
			if (any) {
				cl_emit(&b, set);
				continue;
			}
			high = true;
		} else if ((unsigned char)*s >= 0x80) {
			s++;
			high = true;
		} else {
			scan_sb_put(&b, s++, 1);
			continue;
		}
		/* a high-only atom: with a quantifier that allows none it goes
		 * (it matched nothing there); else a byte ASCII text never has */
		unsigned lo = 1, hi = 1;
		size_t k = counted(s, &lo, &hi);
		if (*s == '?' || *s == '*' || (k && lo == 0)) {
			s += k ? k : 1;
			if (*s == '?' || *s == '+')
				s++;
			continue;
		}
		scan_sb_puts(&b, "\\x80");
	}
	if (b.oom || !b.p)
		goto fail;
	return b.p;
fail:
	free(b.p);
	return NULL;
}

/* Does string q need "&#" (an HTML numeric entity) in the text? */
static bool
cl_entity(const struct cl_seq *q)
{
	uint8_t amp[32] = {0}, hash[32] = {0};

	cl_bit(amp, '&');
	cl_bit(hash, '#');
	for (unsigned p = 0; p + 1 < q->n; p++)
		if (!memcmp(q->set[p], amp, 32) && !memcmp(q->set[p + 1], hash, 32))
			return true;
	return false;
}

/*
 * scan_rules_collapse, and with plain the strings that hold "&#" left out
 * of every collapsed group: each group keeps as many positions (atoms) as
 * the full collapse gives it, a position only those strings reach becomes
 * \x80? and a group of nothing else \x80 (bytes a plain text lacks).
 */
static char *
collapse(const char *x, bool plain)
{
	struct scan_sb b = {0};
	struct cl_alts a = {0, malloc(CL_ALTS * sizeof(struct cl_seq))};

	if (!a.v)
		return NULL;
	for (const char *s = x; *s;) {
		if (!strncmp(s, "(?:", 3)) {
			const char *g = skip_group(s);
			a.n = 0;
			if (g && cl_alts_of(s + 3, g - 1, &a, 0) && a.n > 1) {
				unsigned mn = CL_LEN, mx = 0, pmn = CL_LEN, pmx = 0;
				for (unsigned k = 0; k < a.n; k++) {
					mn = a.v[k].n < mn ? a.v[k].n : mn;
					mx = a.v[k].n > mx ? a.v[k].n : mx;
					if (plain && cl_entity(&a.v[k]))
						continue;
					pmn = a.v[k].n < pmn ? a.v[k].n : pmn;
					pmx = a.v[k].n > pmx ? a.v[k].n : pmx;
				}
				if (!plain) {
					pmn = mn;
					pmx = mx;
				}
				if (mn > 0) {
					scan_sb_puts(&b, "(?:");
					for (unsigned p = 0; p < mx; p++) {
						uint8_t u[32] = {0};
						if (p >= pmx) {
							/* only "&#" strings reach here */
							scan_sb_puts(&b, p < mn ? "\\x80" : "\\x80?");
							continue;
						}
						for (unsigned k = 0; k < a.n; k++)
							if (a.v[k].n > p && !(plain && cl_entity(&a.v[k])))
								for (unsigned j = 0; j < 32; j++)
									u[j] |= a.v[k].set[p][j];
						/* shorter still: several UTF-8 continuation bytes
						 * become all of them, several digits all digits */
						unsigned nc = 0, nd = 0;
						for (unsigned c = 0x80; c < 0xc0; c++)
							nc += (u[c >> 3] >> (c & 7)) & 1;
						for (unsigned c = '0'; c <= '9'; c++)
							nd += (u[c >> 3] >> (c & 7)) & 1;
						if (nc >= 4)
							memset(u + 16, 0xff, 8);
						if (nd >= 3)
							for (unsigned c = '0'; c <= '9'; c++)
								cl_bit(u, c);
						cl_emit(&b, u);
						if (p >= pmn)
							scan_sb_puts(&b, "?");
					}
					scan_sb_puts(&b, ")");
					s = g;
					continue;
				}
			}
			scan_sb_put(&b, s, 3);
			s += 3;
			continue;
		}
		if (*s == '\\' && s[1]) {
			scan_sb_put(&b, s, 2);
			s += 2;
			continue;
		}
		if (*s == '[') {
			uint8_t set[32];
			const char *c = cl_class(s, set);
			if (c) {
				scan_sb_put(&b, s, (size_t)(c - s));
				s = c;
				continue;
			}
			/* a class this does not read: copy it as scan_rules_relax does */
			const char *q = scan_rules_class_end(s);
			if (q == NULL)
				q = s + strlen(s);
			scan_sb_put(&b, s, (size_t)(q - s));
			s = q;
			continue;
		}
		scan_sb_put(&b, s++, 1);
	}
	free(a.v);
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	return b.p;
}

/* See rules.h. */
char *
scan_rules_collapse(const char *x)
{
	return collapse(x, false);
}

/* See rules.h. */
char *
scan_rules_collapse_plain(const char *x)
{
	return collapse(x, true);
}
