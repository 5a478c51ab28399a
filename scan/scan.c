/*
 * scan.c - MIME events into rule-engine targets. See scan.h.
 */
#include "scan/scan.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libxml/HTMLparser.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

static void
feed(struct scan_msg *s, enum scan_target t, const void *p, size_t n)
{
	if (n && scan_hs_feed(s->hm, s->w, t, p, n) < 0)
		s->rc = -EIO;
}

/* ---- URIs ---- */

/* per byte: 1 ends a URI token (controls, space and the quoting /
 * bracketing characters), 2 may be part of a scheme's ':' or '.' (a table:
 * uri_bytes looks at every byte of the text) */
static const uint8_t uri_class[256] = {
	[0 ... ' '] = 1, ['"'] = 1, ['\''] = 1, ['<'] = 1, ['>'] = 1, ['('] = 1,
	[')'] = 1, ['['] = 1, [']'] = 1, ['{'] = 1, ['}'] = 1, ['\\'] = 1, ['^'] = 1,
	['`'] = 1, ['|'] = 1, [':'] = 2, ['.'] = 2,
};

/* the schemes a token is searched for, in order of preference at one offset */
static const struct {
	const char *s;
	uint8_t len;
} uri_schemes[] = {{"http://", 7}, {"https://", 8}, {"ftp://", 6}, {"mailto:", 7}, {"www.", 4}};

/*
 * URI pre + b (pn and n bytes) to URI, unless it went there already this
 * message: SpamAssassin's URI list is a set (PerMsgStatus.pm,
 * get_uri_detail_list), so a link written twice, or in an attribute and
 * in the text, is one URI, and a `multiple` uri rule counts it once. The
 * first SCAN_URI_SEEN / 2 URIs are kept, as 64-bit FNV-1a hashes in an
 * open table; past them a URI is still looked up, not kept.
 */
static bool uri_domain_ok(const struct scan_msg *s, const uint8_t *u, size_t n);

static void
uri_put(struct scan_msg *s, const uint8_t *pre, size_t pn, const uint8_t *b, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	if (s->udry) {
		/* a text URI on trial (uri_text): has one of its forms a domain? */
		uint8_t t[SCAN_URI_MAX + 16];
		if (s->uvalid)
			return;
		if (!pn)
			s->uvalid = uri_domain_ok(s, b, n);
		else if (pn + n <= sizeof(t)) {
			memcpy(t, pre, pn);
			memcpy(t + pn, b, n);
			s->uvalid = uri_domain_ok(s, t, pn + n);
		}
		return;
	}

	for (i = 0; i < pn; i++)
		h = (h ^ pre[i]) * 0x100000001b3ull;
	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	h |= 1;                 /* 0 is an empty slot */
	for (i = (size_t)(h >> 40) & (SCAN_URI_SEEN - 1); s->seen[i];
	    i = (i + 1) & (SCAN_URI_SEEN - 1))
		if (s->seen[i] == h)
			return;
	if (s->nseen < SCAN_URI_SEEN / 2) {
		s->seen[i] = h;
		s->nseen++;
	}
	feed(s, SCAN_T_URI, pre, pn);
	feed(s, SCAN_T_URI, b, n);
	feed(s, SCAN_T_URI, "\n", 1);
}

/* ---- a URI's variants (Util.pm: uri_list_canonicalize) ---- */

/* a variant being made: up to its size, else it is dropped */
struct ubuf {
	uint8_t *p;
	size_t n, cap;
	bool over;
};

static void
ub_add(struct ubuf *v, const void *b, size_t n)
{
	if (v->n + n > v->cap) {
		v->over = true;
		return;
	}
	memcpy(v->p + v->n, b, n);
	v->n += n;
}

static void
uri_puts(struct scan_msg *s, const struct ubuf *v)
{
	if (!v->over)
		uri_put(s, NULL, 0, v->p, v->n);
}

static int
hexval(uint8_t c)
{
	return isdigit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/*
 * Util.pm's url_encode, which decodes as much as it encodes: %XX of a
 * printable character but space and DEL ('2'-'7' first) becomes the
 * character; outside %XX, control bytes, space, DEL, bytes past 0x7F, '"',
 * '%', '<' and '>' become %xx.
 */
static void
url_encode(struct ubuf *v, const uint8_t *u, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = u[i];
		if (c == '%' && i + 2 < n && isxdigit(u[i + 1]) && isxdigit(u[i + 2])) {
			uint8_t x = (uint8_t)(hexval(u[i + 1]) << 4 | hexval(u[i + 2]));
			if (u[i + 1] >= '2' && u[i + 1] <= '7' && x != 0x20 && x != 0x7F)
				ub_add(v, &x, 1);
			else
				ub_add(v, u + i, 3);
			i += 2;
		} else if (c <= 0x20 || c >= 0x7F || c == '"' || c == '%' || c == '<' || c == '>') {
			char e[4];
			snprintf(e, sizeof(e), "%%%02x", c);
			ub_add(v, e, 3);
		} else
			ub_add(v, &c, 1);
	}
}

/* "&#NN;" and "&#xNN;" of '!'..'~' as the character (not "&#x2a;" to
 * "&#x2f;"), the full stops "&#x2e;" "&#12290;" (...) as '.'
 * (uri_list_canonicalize). */
static size_t
uri_refs(uint8_t *u, size_t n)
{
	static const char *const dots[] = {"&#x2e;", "&#12290;", "&#x3002;", "&#65294;",
	    "&#xff0e;", "&#65377;", "&#xff61;"};
	size_t i = 0, o = 0;

	while (i < n) {
		if (u[i] == '&' && i + 3 < n && u[i + 1] == '#') {
			bool hex = (u[i + 2] | 0x20) == 'x';
			size_t k = i + 2 + hex, d0;
			while (k < n && u[k] == '0')
				k++;
			unsigned v = 0;
			for (d0 = k; k < n && k - d0 < 4 && (hex ? isxdigit(u[k]) : isdigit(u[k])); k++)
				v = v * (hex ? 16 : 10) + (unsigned)hexval(u[k]);
			/* Util.pm's hex form leaves 0x2a-0x2f alone: 2[1-9] */
			if (k > d0 && k < n && u[k] == ';' && v >= 0x21 && v <= 0x7E &&
			    !(hex && v >= 0x2A && v <= 0x2F)) {
				u[o++] = (uint8_t)v;
				i = k + 1;
				continue;
			}
			bool dot = false;
			for (size_t j = 0; j < sizeof(dots) / sizeof(dots[0]) && !dot; j++) {
				size_t l = strlen(dots[j]);
				if (n - i >= l && !strncasecmp((const char *)u + i, dots[j], l)) {
					u[o++] = '.';
					i += l;
					dot = true;
				}
			}
			if (dot)
				continue;
		}
		u[o++] = u[i++];
	}
	return o;
}

/* Perl's decode_ulong_to_ip: the first 8 hex digits of %08lx as a dotted quad. */
static void
ulong_ip(struct ubuf *v, unsigned long long x)
{
	char hx[24], ip[16];

	snprintf(hx, sizeof(hx), "%08llx", x);
	snprintf(ip, sizeof(ip), "%d.%d.%d.%d", hexval((uint8_t)hx[0]) << 4 | hexval((uint8_t)hx[1]),
	    hexval((uint8_t)hx[2]) << 4 | hexval((uint8_t)hx[3]),
	    hexval((uint8_t)hx[4]) << 4 | hexval((uint8_t)hx[5]),
	    hexval((uint8_t)hx[6]) << 4 | hexval((uint8_t)hx[7]));
	ub_add(v, ip, strlen(ip));
}

static void uri_canon(struct scan_msg *s, const uint8_t *u, size_t n, unsigned depth);

/* The variants of a mail address (uri_list_canonicalize's first branch). */
static void
uri_canon_mail(struct scan_msg *s, const uint8_t *u, size_t n)
{
	const uint8_t *at = memchr(u, '@', n);
	size_t a, k;

	if (!at || at == u)
		return;
	a = (size_t)(at - u);
	const uint8_t *q = memchr(at + 1, '?', n - a - 1);
	if (q && q > at + 1)
		uri_put(s, NULL, 0, u, (size_t)(q - u));        /* up to its ?query */
	for (k = a + 1; k < n && u[k] != '?' && u[k] != '&'; k++)
		;
	if (k < n && u[k] == '&' && k > a + 1)
		uri_put(s, NULL, 0, u, k);                      /* up to its &... */
	if (memmem(u, n, "%20", 3)) {
		k = n >= 7 && !memcmp(u, "mailto:", 7) ? 7 : 0;
		while (k + 3 <= n && !memcmp(u + k, "%20", 3))
			k += 3;
		const uint8_t *at2 = memchr(u + k, '@', n - k);
		if (at2 && at2 > u + k) {
			size_t e = (size_t)(at2 - u) + 1;
			while (e < n && u[e] != '?' && u[e] != '&' && u[e] != '%')
				e++;
			if (e > (size_t)(at2 - u) + 1)
				uri_put(s, (const uint8_t *)"mailto:", 7, u + k, e - k);
		}
	}
	for (k = 0; k < n && u[k] != '?' && u[k] != '&' && u[k] != '<'; k++)
		;
	if (k < n && u[k] == '<') {                             /* Name <a@b> */
		size_t b = k + 1, c;
		for (c = b; c < n && u[c] != '@' && u[c] != '>'; c++)
			;
		if (c < n && u[c] == '@' && c > b) {
			size_t d;
			for (d = c + 1; d < n && u[d] != '>'; d++)
				;
			if (d < n && d > c + 1)
				uri_put(s, (const uint8_t *)"mailto:", 7, u + b, d - b);
		}
	}
}

/* An http(s) URI in parts: its scheme, its host (a copy, changed form by
 * form), the rest (port, path, query). */
struct uparts {
	const uint8_t *proto, *rest;
	size_t pl, rn;
	uint8_t host[256 + 8];
	size_t hn;
};

/* proto + the host as it now is + rest to URI: a form of uri_canon. */
static void
host_form(struct scan_msg *s, const struct uparts *p)
{
	uint8_t b[SCAN_URI_MAX * 3 + 64];
	struct ubuf w = {b, 0, sizeof(b), false};

	ub_add(&w, p->proto, p->pl);
	ub_add(&w, p->host, p->hn);
	ub_add(&w, p->rest, p->rn);
	uri_puts(s, &w);
}

/*
 * The URI a redirector's URI leads to is a URI of its own, with its forms
 * (depth: the steps so far, at most 2): the rules' redirector_pattern
 * group 1 (with a '.'), else the first http(s): URI in the rest.
 */
static void
uri_redirect(struct scan_msg *s, const struct uparts *p, unsigned depth)
{
	const struct scan_ruleset *rs = scan_hs_rules(s->hm->e);
	const uint8_t *rest = p->rest;
	size_t rn = p->rn;
	uint8_t r[SCAN_URI_MAX];

	if (depth >= 2)
		return;
	if (rs->n_redirs && s->md) {
		uint8_t b[SCAN_URI_MAX * 3 + 64];
		struct ubuf w = {b, 0, sizeof(b), false};
		ub_add(&w, p->proto, p->pl);
		ub_add(&w, p->host, p->hn);
		ub_add(&w, rest, rn);
		for (uint32_t q = 0; !w.over && q < rs->n_redirs; q++) {
			if (pcre2_match(rs->redirs[q], w.p, w.n, 0, 0, s->md, NULL) < 2)
				continue;
			PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
			if (ov[2] == PCRE2_UNSET || ov[3] <= ov[2] || ov[3] - ov[2] > SCAN_URI_MAX ||
			    !memchr(w.p + ov[2], '.', ov[3] - ov[2]))
				continue;
			size_t rl = ov[3] - ov[2];
			memcpy(r, w.p + ov[2], rl);
			uri_put(s, NULL, 0, r, rl);
			uri_canon(s, r, rl, depth + 1);
			return;
		}
	}
	for (size_t k = 0; k + 5 <= rn; k++) {
		if (strncasecmp((const char *)rest + k, "http", 4))
			continue;
		size_t e = k + 4;
		if (e < rn && (rest[e] | 0x20) == 's')
			e++;
		if (e >= rn || rest[e] != ':')
			continue;
		e++;
		for (size_t sl = 0; sl < 2 && e < rn && rest[e] == '/'; sl++)
			e++;
		size_t z = e;
		while (z < rn && rest[z] != '&' && rest[z] != '#')
			z++;
		if (z == e || !memchr(rest + k, '.', z - k) || z - k > SCAN_URI_MAX)
			return;         /* the first such URI, or none */
		memcpy(r, rest + k, z - k);
		uri_put(s, NULL, 0, r, z - k);
		uri_canon(s, r, z - k, depth + 1);
		return;
	}
}

/*
 * A host (h, n bytes, NUL after them) that is an IP address in another
 * notation, as a dotted quad into w (Util.pm's reading): four parts of
 * hex (0x..) or decimal, each in decimal, octal ones (leading zeros)
 * read as octal, leading zeros out ("0." becomes ".", as there); one hex
 * number (its last 8 digits) or one decimal number as 32 bits. False if
 * it is none of these.
 */
static bool
ip_form(struct ubuf *w, const uint8_t *h, size_t n)
{
	unsigned parts = 0;
	size_t pos[5], k;
	bool dotted = n > 0;

	pos[0] = 0;
	for (k = 0; dotted && k <= n; k++)
		if (k == n || h[k] == '.') {
			size_t a = pos[parts], l = k - a;
			bool hx = l > 2 && h[a] == '0' && (h[a + 1] | 0x20) == 'x';
			bool ok = l > (hx ? 2u : 0u);
			for (size_t j = a + (hx ? 2 : 0); ok && j < k; j++)
				ok = hx ? isxdigit(h[j]) : isdigit(h[j]);
			if (!ok || parts == 4 || (k == n) != (parts == 3))
				dotted = false;
			else
				pos[++parts] = k + 1;
		}
	if (dotted && parts == 4) {
		for (unsigned q = 0; q < 4; q++) {
			size_t a = pos[q], l = pos[q + 1] - 1 - a, z = 0;
			char o[32];
			unsigned long long x = 0;
			if (l > 2 && h[a] == '0' && (h[a + 1] | 0x20) == 'x') {
				for (size_t j = a + 2; j < a + l && x < (1ull << 56); j++)
					x = x * 16 + (unsigned)hexval(h[j]);
				snprintf(o, sizeof(o), "%llu", x);
			} else {
				if (l >= sizeof(o))
					return false;
				memcpy(o, h + a, l);
				o[l] = '\0';
				while (o[z] == '0')
					z++;
				size_t ol = strlen(o + z);
				bool oct = z && ol &&
				    ((o[z] >= '1' && o[z] <= '3' && ol <= 3) || (o[z] >= '4' && o[z] <= '7' && ol <= 2)) &&
				    strspn(o + z, "01234567") == ol;
				if (oct)
					snprintf(o, sizeof(o), "%llu", strtoull(o + z, NULL, 8));
			}
			for (z = 0; o[z] == '0'; z++)
				;
			ub_add(w, o + z, strlen(o + z));
			if (q < 3)
				ub_add(w, ".", 1);
		}
		return true;
	}
	if (n > 2 && h[0] == '0' && (h[1] | 0x20) == 'x' &&
	    strspn((const char *)h + 2, "0123456789abcdefABCDEF") == n - 2) {
		ulong_ip(w, strtoull((const char *)h + (n - 2 > 8 ? n - 8 : 2), NULL, 16));
		return true;
	}
	if (n && n <= 19 && strspn((const char *)h, "0123456789") == n) {
		ulong_ip(w, strtoull((const char *)h, NULL, 10));
		return true;
	}
	return false;
}

/*
 * The forms uri_list_canonicalize makes from the host of an http(s) URI
 * (u, n bytes; pl: the scheme's length with "://"): proto [user@] host
 * [:port] rest. The default port left out; spaces and controls out of the
 * host; its redirector's target; a user@ in the host out; its trailing
 * punctuation out; an IP address in another notation as a dotted quad;
 * "http://name/" (no TLD) as "http://www.name.com/".
 */
static void
uri_host_forms(struct scan_msg *s, const uint8_t *u, size_t n, size_t pl, unsigned depth)
{
	struct uparts p = {.proto = u, .pl = pl};
	bool http = !memcmp(u, "http://", 7), port80 = true;
	size_t h0 = pl, h1, k;
	uint8_t b[SCAN_URI_MAX * 3 + 64];
	struct ubuf w = {b, 0, sizeof(b), false};

	for (k = pl; k < n && !strchr("@/?#", u[k]); k++)
		;
	bool auth = k < n && u[k] == '@';
	if (auth)
		h0 = k + 1;
	for (h1 = h0; h1 < n && !strchr("/?#:", u[h1]); h1++)
		;
	if (h1 == h0)
		return;
	p.rest = u + h1;
	p.rn = n - h1;
	if (p.rn && p.rest[0] == ':') {
		size_t d = 1;
		while (d < p.rn && isdigit(p.rest[d]))
			d++;
		if (d > 1) {
			port80 = d == 3 && !memcmp(p.rest, ":80", 3);
			/* :80 (http) or :443 (https) left out: ^:80\b */
			const char *dp = http ? ":80" : ":443";
			size_t dl = strlen(dp);
			if (p.rn >= dl && !memcmp(p.rest, dp, dl) &&
			    (p.rn == dl || !(isalnum(p.rest[dl]) || p.rest[dl] == '_'))) {
				ub_add(&w, u, pl);
				ub_add(&w, u + h0, h1 - h0);
				ub_add(&w, p.rest + dl, p.rn - dl);
				uri_puts(s, &w);
			}
		}
	}
	if (h1 - h0 >= sizeof(p.host) - 8)
		return;
	char lhost[sizeof(p.host)];
	bool cut = false;
	for (k = h0; k < h1; k++) {
		lhost[k - h0] = (char)tolower(u[k]);
		if (u[k] <= 0x20)
			cut = true;     /* control characters and spaces out */
		else
			p.host[p.hn++] = u[k];
	}
	lhost[h1 - h0] = '\0';
	if (cut)
		host_form(s, &p);
	uri_redirect(s, &p, depth);
	const uint8_t *at = memchr(p.host, '@', p.hn);
	if (at && at > p.host) {                /* host =~ s/^[^@]+@// */
		size_t drop = (size_t)(at - p.host) + 1;
		memmove(p.host, p.host + drop, p.hn - drop);
		p.hn -= drop;
		host_form(s, &p);
	}
	size_t hn0 = p.hn;
	while (p.hn && !isalnum(p.host[p.hn - 1]))
		p.hn--;
	if (p.hn != hn0)
		host_form(s, &p);
	p.host[p.hn] = '\0';
	w.n = 0;
	w.over = false;
	ub_add(&w, u, pl);
	if (ip_form(&w, p.host, p.hn)) {
		ub_add(&w, p.rest, p.rn);
		uri_puts(s, &w);
		return;
	}
	/* "www.name" or "name" (no TLD) as "www.name.com" */
	const struct scan_ruleset *rs = scan_hs_rules(s->hm->e);
	const char *nm = !strncmp(lhost, "www.", 4) ? lhost + 4 : lhost;
	const char *dot = strrchr(lhost, '.');
	bool tld = dot && rs->n_tlds && scan_rules_tld_valid(rs, dot + 1, strlen(dot + 1));
	if (!http || auth || !port80 || !strcmp(lhost, "localhost") || !*nm || strchr(nm, '.') || tld)
		return;
	w.n = 0;
	ub_add(&w, "http://www.", 11);
	ub_add(&w, nm, strlen(nm));
	ub_add(&w, ".com", 4);
	ub_add(&w, p.rest, p.rn);
	uri_puts(s, &w);
}

/*
 * The forms of URI u (n bytes) that SpamAssassin's uri rules also see
 * (Util.pm: uri_list_canonicalize), each to URI once (uri_put): '\' as
 * '/', "http:/x" as "http://x", %XX of printable characters decoded, a
 * missing scheme as http:// (ftp:// for "ftp."), a '/' before a ? or #
 * right after the host, &#NN; of printable characters decoded; then from
 * the host: the default port left out, control characters and trailing
 * punctuation out, a user@ in it out, an IP address written in hex,
 * octal or as one number as a dotted quad, "www.name" as
 * "www.name.com"; and a URI in the query (a redirector: ?u=http://...) is
 * a URI of its own, with its forms (depth: at most 2 such steps). Mail
 * addresses get theirs (uri_canon_mail).
 */
static void
uri_canon(struct scan_msg *s, const uint8_t *u, size_t n, unsigned depth)
{
	uint8_t b1[SCAN_URI_MAX + 16], b2[3 * (SCAN_URI_MAX + 16)], b3[SCAN_URI_MAX * 3 + 64];
	struct ubuf t = {b1, 0, sizeof(b1), false}, v = {b2, 0, sizeof(b2), false};
	size_t k;

	if (n <= 1 || n > SCAN_URI_MAX || u[0] == '#' || u[0] == '?' || u[0] == '&' ||
	    (u[0] == '/' && u[1] != '/'))
		return;
	const uint8_t *at = memchr(u, '@', n), *colon = memchr(u, ':', n);
	if ((n >= 7 && !strncasecmp((const char *)u, "mailto:", 7)) || (at && (!colon || colon > at))) {
		uri_canon_mail(s, u, n);
		return;
	}
	/* '\' as '/', then http:/x as http://x */
	for (k = 0; k < n; k++)
		ub_add(&t, u[k] == '\\' ? (const uint8_t *)"/" : u + k, 1);
	size_t sl = t.n >= 5 && !strncasecmp((const char *)t.p, "http:", 5) ? 5 :
	    t.n >= 6 && !strncasecmp((const char *)t.p, "https:", 6) ? 6 : 0;
	if (sl) {
		size_t j = sl;
		while (j < t.n && j < sl + 2 && t.p[j] == '/')
			j++;
		memcpy(b3, t.p, sl);
		memcpy(b3 + sl, "//", 2);
		memcpy(b3 + sl + 2, t.p + j, t.n - j);
		k = sl + 2 + t.n - j;
		t.n = 0;
		ub_add(&t, b3, k);
	}
	bool pct = false;
	for (k = 0; k + 2 < t.n && !pct; k++)
		pct = t.p[k] == '%' && isxdigit(t.p[k + 1]) && isxdigit(t.p[k + 2]);
	if (pct)
		url_encode(&v, t.p, t.n);
	else
		ub_add(&v, t.p, t.n);
	if (v.over)
		return;
	/* a scheme: [-_a-z0-9]+: */
	for (k = 0; k < v.n && (isalnum(v.p[k]) || v.p[k] == '-' || v.p[k] == '_'); k++)
		;
	if (!(k && k < v.n && v.p[k] == ':')) {
		bool ftp = v.n >= 4 && !memcmp(v.p, "ftp.", 4);
		if (v.n + 7 > v.cap)
			return;
		memmove(v.p + (ftp ? 6 : 7), v.p, v.n);
		memcpy(v.p, ftp ? "ftp://" : "http://", ftp ? 6 : 7);
		v.n += ftp ? 6 : 7;
	}
	size_t pl = v.n >= 7 && !strncasecmp((const char *)v.p, "http://", 7) ? 7 :
	    v.n >= 8 && !strncasecmp((const char *)v.p, "https://", 8) ? 8 : 0;
	if (pl) {
		/* a '/' between the host and a ? or # */
		for (k = pl; k < v.n && v.p[k] != '/' && v.p[k] != '?' && v.p[k] != '#'; k++)
			;
		if (k > pl && k < v.n && v.p[k] != '/' && v.n < v.cap) {
			memmove(v.p + k + 1, v.p + k, v.n - k);
			v.p[k] = '/';
			v.n++;
		}
	}
	v.n = uri_refs(v.p, v.n);
	if (v.n != n || memcmp(v.p, u, n))
		uri_puts(s, &v);

	/* the host's forms */
	if (pl)
		uri_host_forms(s, v.p, v.n, pl, depth);
}

/* URI pre + b to URI, then its forms (uri_canon). */
static void
uri_emit(struct scan_msg *s, const uint8_t *pre, size_t pn, const uint8_t *b, size_t n)
{
	uint8_t u[SCAN_URI_MAX + 16];

	uri_put(s, pre, pn, b, n);
	if (pn + n > SCAN_URI_MAX)
		return;
	if (pn)
		memcpy(u, pre, pn);
	memcpy(u + pn, b, n);
	uri_canon(s, u, pn + n, 0);
}

/*
 * A URI found in text: to URI with its forms only if one of them has a
 * domain SpamAssassin takes (PerMsgStatus.pm: add_uri_detail_list with
 * valid_domain, over every cleaned form: http://3405803785/ counts by its
 * form http://203.0.113.9/). A first pass makes the forms only to look.
 */
static void
uri_text(struct scan_msg *s, const uint8_t *pre, size_t pn, const uint8_t *b, size_t n)
{
	s->udry = true;
	s->uvalid = false;
	uri_emit(s, pre, pn, b, n);
	s->udry = false;
	if (s->uvalid)
		uri_emit(s, pre, pn, b, n);
}

/* A host (h, n bytes) that SpamAssassin takes: an IP address, or a name
 * with a dot whose TLD the rules know (scan_rules_tld_valid). */
static bool
host_valid(const struct scan_ruleset *rs, const uint8_t *h, size_t n)
{
	size_t dot = n;
	bool ip = true;

	if (!rs->n_tlds)
		return true;    /* the rules name no TLD: every host counts */
	if (n && h[0] == '[')
		return true;    /* an IPv6 address */
	for (size_t k = 0; k < n; k++) {
		if (h[k] == '.')
			dot = k;
		else if (!isdigit(h[k]))
			ip = false;
	}
	if (ip && n)
		return true;
	if (dot == n)
		return false;   /* no dot, no TLD */
	return scan_rules_tld_valid(rs, (const char *)h + dot + 1, n - dot - 1);
}

/*
 * Whether URI u (n bytes) has a domain SpamAssassin takes
 * (RegistryBoundaries.pm: uri_to_domain): mailto:'s address after its
 * one '@', else the host after the scheme, without user@ and :port; not
 * javascript:, cid:, file:, nor a host with %XX of a printable character
 * in it; an IP address, or a name with a TLD the rules know.
 */
static bool
uri_domain_ok(const struct scan_msg *s, const uint8_t *u, size_t n)
{
	size_t a = 0, z, k;

	if ((n >= 11 && !strncasecmp((const char *)u, "javascript:", 11)) ||
	    (n >= 4 && !strncasecmp((const char *)u, "cid:", 4)) ||
	    (n >= 5 && !strncasecmp((const char *)u, "file:", 5)))
		return false;
	if (n >= 7 && !strncasecmp((const char *)u, "mailto:", 7)) {
		const uint8_t *q = memchr(u + 7, '?', n - 7);
		z = q ? (size_t)(q - u) : n;
		const uint8_t *at = memchr(u + 7, '@', z - 7);
		if (!at || memchr(at + 1, '@', z - (size_t)(at + 1 - u)))
			return false;
		a = (size_t)(at - u) + 1;
	} else {
		for (k = 0; k < n && isalpha(u[k]); k++)
			;
		if (k && k < n && u[k] == ':') {
			a = k + 1;
			for (k = 0; k < 2 && a < n && u[a] == '/'; k++)
				a++;
		}
		for (z = a; z < n && u[z] != '/' && u[z] != '?' && u[z] != '#'; z++)
			;
		for (k = z; k > a; k--)         /* user:password@ */
			if (u[k - 1] == '@') {
				a = k;
				break;
			}
		for (k = z; k > a && isdigit(u[k - 1]); k--)    /* :port */
			;
		if (k > a && u[k - 1] == ':')
			z = k - 1;
	}
	for (k = a; k + 2 < z; k++)
		if (u[k] == '%' && isxdigit(u[k + 1]) && isxdigit(u[k + 2]) &&
		    u[k + 1] >= '2' && u[k + 1] <= '7' && (u[k + 1] != '2' || u[k + 2] != '0') &&
		    !(u[k + 1] == '7' && (u[k + 2] | 0x20) == 'f'))
			return false;
	return z > a && host_valid(scan_hs_rules(s->hm->e), u + a, z - a);
}

/*
 * A bare address in a token with no scheme (b, n bytes): SpamAssassin's
 * text parser takes user@host.tld as mailto:user@host.tld (PerMsgStatus.pm,
 * urimailscheme), what comes before a ':' ("e-mail:") and trailing
 * punctuation left out, if a dot follows the @ and the host is one it
 * takes (host_valid); not cid: or mid: (MIME part ids).
 */
static void
uri_mail(struct scan_msg *s, const uint8_t *b, size_t n)
{
	const uint8_t *at = memchr(b, '@', n), *h;
	size_t hn;

	if (!at || (n > 4 && (!strncasecmp((const char *)b, "cid:", 4) ||
	    !strncasecmp((const char *)b, "mid:", 4))))
		return;         /* a part's Content-ID, not an address */
	for (const uint8_t *c = at; c > b; c--)
		if (c[-1] == ':') {
			n -= (size_t)(c - b);
			b = c;
			break;
		}
	while (n && strchr("-~!@#^&*()_+=:;'?,.", b[n - 1]))
		n--;
	if (!(at = memchr(b, '@', n)) || at == b)
		return;
	h = at + 1;
	hn = n - (size_t)(h - b);
	for (size_t k = 0; k < hn; k++)
		if (strchr("?&>", h[k])) {
			hn = k;
			break;
		}
	const uint8_t *dot = memchr(h, '.', hn);
	if (!dot || dot == h || !host_valid(scan_hs_rules(s->hm->e), h, hn))
		return;
	uri_emit(s, (const uint8_t *)"mailto:", 7, b, n);
}

/* The characters after which a host name with no scheme may start in a
 * token (PerMsgStatus.pm, scstartdelim; the others end tokens). */
static const uint8_t sc_start[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['&'] = 1, ['*'] = 1, ['+'] = 1, [','] = 1,
	['/'] = 1, [':'] = 1, [';'] = 1, ['='] = 1, ['?'] = 1, ['@'] = 1, ['~'] = 1,
};

/*
 * A host name with no scheme in a token with no '@' (b, n bytes): as
 * SpamAssassin's text parser (urischemeless) sluice takes "example.com",
 * "shop.example.org:8080/x" as http://... (ftp://... for "ftp.") if the
 * name's last label is a TLD the rules name: [a-z0-9][a-z0-9._-]* at the
 * token's start or after one of sc_start, a '.' after the TLD at most,
 * then an optional :port and /path to the token's end; trailing
 * punctuation dropped. Not without util_rb_tld: every "a.b" would be one.
 */
static void
uri_schemeless(struct scan_msg *s, const uint8_t *b, size_t n)
{
	const struct scan_ruleset *rs = scan_hs_rules(s->hm->e);

	if (!rs->n_tlds)
		return;
	for (size_t a = 0; a < n; a++) {
		if ((a && !sc_start[b[a - 1]]) || !isalnum(b[a]))
			continue;
		size_t z = a, h, k, dot = 0;
		while (z < n && (isalnum(b[z]) || b[z] == '.' || b[z] == '_' || b[z] == '-'))
			z++;
		h = z > a + 1 && b[z - 1] == '.' ? z - 1 : z;
		for (k = a; k < h; k++)
			if (b[k] == '.')
				dot = k;
		if (!dot || h - a > 253 || !scan_rules_tld_valid(rs, (const char *)b + dot + 1,
		    h - dot - 1))
			continue;
		k = z;
		if (k < n && b[k] == ':') {
			size_t d = k + 1;
			while (d < n && d - k <= 5 && isdigit(b[d]))
				d++;
			if (d == k + 1)
				continue;
			k = d;
		}
		if (k < n && (b[k] != '/' || k + 1 == n))
			continue;       /* not a name, a port, a path, then the end */
		size_t e = n;
		while (e > a && strchr("-~!@#^&*()_+=:;'?,.", b[e - 1]))
			e--;
		bool ftp = e - a > 4 && !strncasecmp((const char *)b + a, "ftp.", 4);
		uri_emit(s, (const uint8_t *)(ftp ? "ftp://" : "http://"), ftp ? 6 : 7, b + a, e - a);
		return;
	}
}

/*
 * The URI in a token (b, n bytes; mark: it holds ':' or '.'): from the
 * leftmost offset where a scheme starts (caseless; at one offset the first
 * scheme in uri_schemes that fits), trailing sentence punctuation dropped.
 * Every scheme holds ':' or '.', so a token with neither (most words) is
 * done at once.
 */
static void
uri_token(struct scan_msg *s, const uint8_t *b, size_t n, bool mark)
{
	const uint8_t *best = NULL;
	int which = -1;

	if (n < 5 || !mark)
		return;
	for (size_t i = 0; i + 4 <= n && !best; i++) {
		uint8_t c = (uint8_t)(b[i] | 0x20);
		if (c != 'h' && c != 'f' && c != 'm' && c != 'w')
			continue;
		for (int k = 0; k < 5; k++)
			if (uri_schemes[k].s[0] == c && i + uri_schemes[k].len <= n &&
			    !strncasecmp((const char *)b + i, uri_schemes[k].s, uri_schemes[k].len)) {
				best = b + i;
				which = k;
				break;
			}
	}
	if (!best) {
		if (memchr(b, '@', n))
			uri_mail(s, b, n);
		else
			uri_schemeless(s, b, n);
		return;
	}
	n -= (size_t)(best - b);
	while (n && strchr(".,;:!?", best[n - 1]))
		n--;
	if (n <= uri_schemes[which].len)
		return;
	uri_text(s, (const uint8_t *)"http://", which == 4 ? 7 : 0, best, n);
}

/* The token that ran across writes, in s->ubuf (its first SCAN_URI_MAX bytes). */
static void
uri_flush(struct scan_msg *s)
{
	size_t n = s->ulen;

	s->ulen = 0;
	s->uover = false;
	uri_token(s, s->ubuf, n, memchr(s->ubuf, ':', n) || memchr(s->ubuf, '.', n));
}

static void
uri_keep(struct scan_msg *s, const uint8_t *p, size_t n)
{
	size_t room = SCAN_URI_MAX - s->ulen;

	if (n > room) {
		n = room;
		s->uover = true;
	}
	memcpy(s->ubuf + s->ulen, p, n);
	s->ulen += n;
}

/* The first ':' or '.' in b (n bytes), or NULL: 16 bytes at a time.
 * Not inlined: inlined into a caller that passes a 1-byte literal, GCC 12
 * warns (-Warray-bounds) of the 16-byte load that n < 16 never reaches. */
static __attribute__((noinline)) const uint8_t *
uri_mark(const uint8_t *b, size_t n)
{
	size_t i = 0;
#ifdef __SSE2__
	const __m128i colon = _mm_set1_epi8(':'), dot = _mm_set1_epi8('.');
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(b + i));
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, colon),
		    _mm_cmpeq_epi8(v, dot)));
		if (m)
			return b + i + (unsigned)__builtin_ctz(m);
	}
#endif
	for (; i < n; i++)
		if (b[i] == ':' || b[i] == '.')
			return b + i;
	return NULL;
}

/*
 * The text's tokens, each up to the next delimiter. Only a token that
 * holds ':' or '.' can hold a URI, so those are looked for (uri_mark) and
 * their tokens found around them; a token that the write cuts waits in
 * s->ubuf for the next.
 */
static void
uri_bytes(struct scan_msg *s, const uint8_t *p, size_t n)
{
	size_t i = 0, e = n, k;

	if (!n)
		return;
	if (s->ulen) {
		while (i < n && !(uri_class[p[i]] & 1))
			i++;
		uri_keep(s, p, i);
		if (i == n)
			return;
		uri_flush(s);
		i++;
	}
	while (e > i && !(uri_class[p[e - 1]] & 1))
		e--;
	/* whole tokens in [i, e): p[e - 1] ends one */
	for (k = i; k < e;) {
		const uint8_t *m = uri_mark(p + k, e - k);
		if (!m)
			break;
		size_t a = (size_t)(m - p), z = a;
		while (a > k && !(uri_class[p[a - 1]] & 1))
			a--;
		while (!(uri_class[p[z]] & 1))
			z++;
		/* as if kept in s->ubuf: its first SCAN_URI_MAX bytes (a mark
		 * past them leaves no scheme in them: every scheme has one) */
		uri_token(s, p + a, z - a < SCAN_URI_MAX ? z - a : SCAN_URI_MAX, true);
		k = z + 1;
	}
	uri_keep(s, p + e, n - e);
}

/* ---- BODY as SpamAssassin renders it ---- */

/*
 * SpamAssassin's body rules see the text of every text/ leaf after
 * Message.pm's get_body_text_array_common: a run of whitespace that holds
 * two line breaks or more becomes one line break (`\n+\s*\n+` to a
 * paragraph break, with the whitespace before and after it a space each),
 * any other run one space (`\s+`, Unicode spaces included: the text is
 * decoded), so that a paragraph is one line; then lines longer than
 * SCAN_BODY_LINE are cut after their last space within it
 * (split_into_array_of_short_lines). The rules match line by line, so
 * BODY is compiled with multi-line ^ and $, and a cut is a line break.
 */
enum {
	WS_RUN = 1,     /* in a whitespace run */
	WS_PRE = 2,     /* whitespace before the run's first line break */
	WS_POST = 4,    /* whitespace after its last line break */
	WS_HARD = 8,    /* html: a tag's line break is in it (the text's own
	                   spaces beside it go, as in HTML.pm's display_text) */
};

/* 1: ASCII whitespace (\s); 2: the first byte of a Unicode space in UTF-8 */
static const uint8_t body_ws[256] = {
	['\t'] = 1, ['\n'] = 1, ['\v'] = 1, ['\f'] = 1, ['\r'] = 1, [' '] = 1,
	[0xC2] = 2, [0xE1] = 2, [0xE2] = 2, [0xE3] = 2,
};

/*
 * Whether p (k bytes, p[0] a lead byte of body_ws 2) is a Unicode space
 * (Perl's \s: U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
 * U+202F, U+205F, U+3000): its length, 0 if it is not one, -1 if the k
 * bytes are too few to tell.
 */
static int
uspace(const uint8_t *p, size_t k)
{
	if (p[0] == 0xC2)
		return k < 2 ? -1 : p[1] == 0x85 || p[1] == 0xA0 ? 2 : 0;
	if (k < 2)
		return -1;
	if (p[0] == 0xE1 && p[1] != 0x9A)
		return 0;
	if (p[0] == 0xE2 && p[1] != 0x80 && p[1] != 0x81)
		return 0;
	if (p[0] == 0xE3 && p[1] != 0x80)
		return 0;
	if (k < 3)
		return -1;
	if (p[0] == 0xE1 || p[0] == 0xE3)
		return p[2] == 0x80 ? 3 : 0;
	if (p[1] == 0x81)
		return p[2] == 0x9F ? 3 : 0;
	return p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF ? 3 : 0;
}

/* The lines made so far go out; the one being made moves to the front. */
static void
body_out(struct scan_msg *s)
{
	feed(s, SCAN_T_BODY, s->line, s->lstart);
	s->llen = (uint16_t)(s->llen - s->lstart);
	memmove(s->line, s->line + s->lstart, s->llen);
	s->lstart = 0;
}

/*
 * The line being made is longer than SCAN_BODY_LINE, its line break counted
 * (SpamAssassin does): a line break after its last space at or before its
 * offset SCAN_BODY_LINE, or at that offset if there is none (Perl:
 * rindex($line, ' ', MAX) + 1).
 */
static void
line_cut(struct scan_msg *s)
{
	if (s->llen == sizeof(s->line))
		body_out(s);
	size_t a = s->lstart, k = a + SCAN_BODY_LINE, cut;

	if (k >= s->llen)
		k = s->llen - 1u;
	while (k > a && s->line[k] != ' ')
		k--;
	cut = s->line[k] == ' ' ? k + 1 : a + SCAN_BODY_LINE;
	memmove(s->line + cut + 1, s->line + cut, s->llen - cut);
	s->line[cut] = '\n';
	s->llen++;
	s->lstart = (uint16_t)(cut + 1);
}

/* One byte of rendered text. */
static void
body_put(struct scan_msg *s, uint8_t c)
{
	if (c == '\n' && s->llen - s->lstart >= SCAN_BODY_LINE)
		line_cut(s);
	if (s->llen == sizeof(s->line))
		body_out(s);
	s->line[s->llen++] = c;
	if (c == '\n')
		s->lstart = s->llen;
	else if (s->llen - s->lstart > SCAN_BODY_LINE)
		line_cut(s);
}

/* Rendered text with no line break in it (a run between whitespace). */
static void
body_text(struct scan_msg *s, const uint8_t *b, size_t n)
{
	while (n) {
		if (s->llen == sizeof(s->line))
			body_out(s);
		size_t k = sizeof(s->line) - s->llen;
		size_t left = SCAN_BODY_LINE + 1u - (size_t)(s->llen - s->lstart);
		if (k > left)
			k = left;
		if (k > n)
			k = n;
		memcpy(s->line + s->llen, b, k);
		s->llen = (uint16_t)(s->llen + k);
		b += k;
		n -= k;
		if (s->llen - s->lstart > SCAN_BODY_LINE)
			line_cut(s);
	}
}

static inline void
ws_add(struct scan_msg *s, uint8_t c)
{
	if (c == '\n') {
		if (s->ws_nl < 2)
			s->ws_nl++;
		s->ws &= (uint8_t)~WS_POST;
	} else
		s->ws |= s->ws_nl ? WS_POST : WS_PRE;
	s->ws |= WS_RUN;
}

/* The whitespace run before text: a paragraph break or a space. */
static void
ws_run(struct scan_msg *s)
{
	if (s->ws_nl < 2)
		body_put(s, ' ');
	else if (s->ws & WS_HARD)
		body_put(s, '\n');
	else {
		if (s->ws & WS_PRE)
			body_put(s, ' ');
		body_put(s, '\n');
		if (s->ws & WS_POST)
			body_put(s, ' ');
	}
	s->ws = s->ws_nl = 0;
}

static inline void
ws_end(struct scan_msg *s)
{
	if (s->ws & WS_RUN)
		ws_run(s);
}

/* Bytes of a Unicode space's UTF-8 form that a write cut, as text. */
static void
u8_drop(struct scan_msg *s)
{
	if (!s->u8n)
		return;
	ws_end(s);
	body_text(s, s->u8, s->u8n);
	s->u8n = 0;
}

/*
 * Text into BODY (b, n bytes of UTF-8; a text/plain leaf's, or an html
 * leaf's between tags, whose own line breaks are spaces: flat).
 */
static void
body_render(struct scan_msg *s, const uint8_t *b, size_t n, bool flat)
{
	size_t i = 0;

	if (n)
		s->btext = true;
	if (s->u8n) {
		/* a Unicode space's first bytes came in the last write */
		uint8_t t[3];
		size_t k = s->u8n;
		memcpy(t, s->u8, k);
		while (k < 3 && k - s->u8n < n) {
			t[k] = b[k - s->u8n];
			k++;
		}
		int l = uspace(t, k);
		if (l < 0) {
			memcpy(s->u8, t, k);    /* still too few */
			s->u8n = (uint8_t)k;
			return;
		}
		if (l > 0) {
			ws_add(s, ' ');
			i = (size_t)l - s->u8n;
			s->u8n = 0;
		} else
			u8_drop(s);
	}
	while (i < n) {
		if (!body_ws[b[i]]) {
			/* text: the run before it (mostly one space: in place),
			 * then as much of it as the line and the buffer take, copied
			 * as it is looked at */
			if (s->ws & WS_RUN) {
				if (s->ws_nl < 2 && s->llen < sizeof(s->line) &&
				    s->llen - s->lstart < SCAN_BODY_LINE) {
					s->line[s->llen++] = ' ';
					s->ws = s->ws_nl = 0;
				} else
					ws_run(s);
			}
			size_t lim = sizeof(s->line) - s->llen;
			size_t left = SCAN_BODY_LINE + 1u - (size_t)(s->llen - s->lstart);
			if (lim > left)
				lim = left;
			if (lim > n - i)
				lim = n - i;
			uint8_t *d = s->line + s->llen;
			const uint8_t *src = b + i;
			size_t j = 0;
			while (j < lim && !body_ws[src[j]]) {
				d[j] = src[j];
				j++;
			}
			s->llen = (uint16_t)(s->llen + j);
			i += j;
			if (s->llen == sizeof(s->line))
				body_out(s);
			if (s->llen - s->lstart > SCAN_BODY_LINE)
				line_cut(s);
			continue;
		}
		if (body_ws[b[i]] == 1) {
			ws_add(s, flat ? ' ' : b[i]);
			i++;
			continue;
		}
		int l = uspace(b + i, n - i);
		if (l < 0) {
			memcpy(s->u8, b + i, n - i);
			s->u8n = (uint8_t)(n - i);
			return;
		}
		if (l > 0) {
			ws_add(s, ' ');
			i += (size_t)l;
		} else {
			ws_end(s);
			body_text(s, b + i, 1);
			i++;
		}
	}
}

/* ---- what of a part the rules read ---- */

/*
 * SpamAssassin's body rules read at most the first SCAN_BODY_PART bytes of
 * a part's rendered text, its rawbody rules the first SCAN_RAWBODY_PART of
 * its decoded text, each cut at the first line break within 1,024 bytes
 * past that, else (rawbody) the first '>', else the first space, else at
 * the limit (Message.pm: body_part_scan_size, rawbody_part_scan_size). So
 * does sluice: the scan of a huge part costs what a large one does. Past
 * the limit the bytes wait in c->hold until one of those decides.
 */
enum { CAP_UNDER, CAP_HOLD, CAP_CUT };

static void
cap_out(struct scan_msg *s, enum scan_target t, const uint8_t *b, size_t n, bool flat)
{
	if (t == SCAN_T_BODY)
		body_render(s, b, n, flat);
	else
		feed(s, t, b, n);
}

/* The held bytes go out through the first of the cut bytes, in order. */
static void
cap_decide(struct scan_msg *s, struct scan_cap *c, enum scan_target t)
{
	for (const char *e = t == SCAN_T_BODY ? "\n " : "\n> "; *e; e++) {
		const uint8_t *q = memchr(c->hold, *e, c->hn);
		if (q) {
			cap_out(s, t, c->hold, (size_t)(q - c->hold) + 1, c->flat);
			break;
		}
	}
	c->hn = 0;
	c->state = CAP_CUT;
}

static void
cap_bytes(struct scan_msg *s, struct scan_cap *c, enum scan_target t, size_t limit,
    const uint8_t *b, size_t n, bool flat)
{
	if (c->state == CAP_CUT)
		return;
	if (c->state == CAP_UNDER) {
		size_t k = limit - c->seen;
		if (n <= k) {
			c->seen += n;
			cap_out(s, t, b, n, flat);
			return;
		}
		cap_out(s, t, b, k, flat);
		c->seen = limit;
		b += k;
		n -= k;
		c->state = CAP_HOLD;
		c->flat = flat;
	}
	/* a line break decides at once, else the end of the slack */
	size_t k = sizeof(c->hold) - c->hn;
	if (k > n)
		k = n;
	const uint8_t *nl = memchr(b, '\n', k);
	if (nl)
		k = (size_t)(nl - b) + 1;
	memcpy(c->hold + c->hn, b, k);
	c->hn = (uint16_t)(c->hn + k);
	if (nl || c->hn == sizeof(c->hold))
		cap_decide(s, c, t);
}

/* A part starts: none of it read yet. */
static void
cap_reset(struct scan_cap *c)
{
	c->state = CAP_UNDER;
	c->seen = c->hn = 0;
}

/* The part ended: what is held is decided. */
static void
cap_end(struct scan_msg *s, struct scan_cap *c, enum scan_target t)
{
	if (c->state == CAP_HOLD)
		cap_decide(s, c, t);
	cap_reset(c);
}

/* Text of a part into BODY (flat: an html part's, between tags). */
static void
body_bytes(struct scan_msg *s, const uint8_t *b, size_t n, bool flat)
{
	cap_bytes(s, &s->bcap, SCAN_T_BODY, SCAN_BODY_PART, b, n, flat);
}

/* What an html tag puts in the text (HTML.pm's html_whitespace, for the
 * start and the end tag alike): a line break (1), a space (3), or a
 * paragraph (2); 0 nothing. */
static int
html_ws(struct scan_msg *s, const char *t)
{
	static const char *const nl[] = {"br", "div", NULL};
	static const char *const sp[] = {"li", "th", "td", "dt", "dd", "embed", "h1", "h2",
	    "h3", "h4", "h5", "h6", NULL};
	static const char *const par[] = {"p", "hr", "blockquote", "pre", "listing",
	    "plaintext", "xmp", "title", NULL};
	int n = 0;

	for (int i = 0; !n && nl[i]; i++)
		n = strcmp(t, nl[i]) ? 0 : 1;
	for (int i = 0; !n && par[i]; i++)
		n = strcmp(t, par[i]) ? 0 : 2;
	for (int i = 0; !n && sp[i]; i++)
		n = strcmp(t, sp[i]) ? 0 : 3;
	if (!n || s->bcap.state != CAP_UNDER)
		return n;       /* past what the rules read of the part */
	if (n == 3)
		ws_add(s, ' ');
	else {
		s->btext = true;
		ws_add(s, '\n');
		if (n == 2)
			ws_add(s, '\n');
		s->ws |= WS_HARD;
	}
	return n;
}

/* A tag's '>': script and style hide their text; a whitespace tag puts
 * its break in BODY and ends the text's URI token. */
static void
tag_end(struct scan_msg *s)
{
	s->tag[s->tag_len] = '\0';
	s->tag_state = 0;
	if (!strcmp(s->tag, "script") || !strcmp(s->tag, "style"))
		s->skip = !s->tag_close;
	else if (!s->skip && html_ws(s, s->tag))
		uri_bytes(s, (const uint8_t *)" ", 1);
}

/* ---- html: the URIs of tags (HTML.pm: html_uri) ---- */

enum { URI_TAG_BG = 1, URI_TAG_HREF, URI_TAG_SRC, URI_TAG_ACTION, URI_TAG_BASE, URI_TAG_META };

static uint8_t
uri_tag(const char *t)
{
	static const struct {
		const char *t;
		uint8_t k;
	} tags[] = {
		{"a", URI_TAG_HREF}, {"img", URI_TAG_SRC}, {"td", URI_TAG_BG},
		{"table", URI_TAG_BG}, {"tr", URI_TAG_BG}, {"body", URI_TAG_BG},
		{"area", URI_TAG_HREF}, {"link", URI_TAG_HREF}, {"frame", URI_TAG_SRC},
		{"iframe", URI_TAG_SRC}, {"embed", URI_TAG_SRC}, {"script", URI_TAG_SRC},
		{"bgsound", URI_TAG_SRC}, {"form", URI_TAG_ACTION}, {"base", URI_TAG_BASE},
		{"meta", URI_TAG_META},
	};

	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
		if (!strcmp(t, tags[i].t))
			return tags[i].k;
	return 0;
}

/* Whether the attribute just named (s->attr) holds the tag's URI. */
static bool
uri_attr(const struct scan_msg *s)
{
	const char *a = s->attr;

	switch (s->tag_uri) {
	case URI_TAG_BG:
		return !strcmp(a, "background");
	case URI_TAG_HREF:
		return !strcmp(a, "href") || !strcmp(a, "data-saferedirecturl");
	case URI_TAG_BASE:
		return !strcmp(a, "href");
	case URI_TAG_SRC:
		return !strcmp(a, "src");
	case URI_TAG_ACTION:
		return !strcmp(a, "action");
	case URI_TAG_META:
		return !strcmp(a, "content");   /* a URI if http-equiv says refresh */
	}
	return false;
}

/*
 * The code point of a character reference's name (n bytes, without '&'
 * and ';'; "#38", "#x26" or a name HTML knows: libxml2's table of HTML
 * 4's 253), 0 if none. The HTML parser SpamAssassin uses decodes them in
 * text and attribute values alike.
 */
static uint32_t
ref_value(const uint8_t *r, size_t n)
{
	char name[sizeof(((struct scan_msg *)0)->ent)];
	uint32_t cp = 0;

	if (!n || n >= sizeof(name))
		return 0;
	if (r[0] == '#') {
		bool hex = n > 1 && (r[1] | 0x20) == 'x';
		size_t k = 1 + hex;
		if (k == n || n - k > 7)
			return 0;
		for (; k < n; k++) {
			if (hex ? !isxdigit(r[k]) : !isdigit(r[k]))
				return 0;
			cp = cp * (hex ? 16 : 10) +
			    (uint32_t)(isdigit(r[k]) ? r[k] - '0' : (r[k] | 0x20) - 'a' + 10);
		}
		return cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF) ? cp : 0;
	}
	memcpy(name, r, n);
	name[n] = '\0';
	const htmlEntityDesc *e = htmlEntityLookup((const xmlChar *)name);
	return e ? e->value : 0;
}

/* Whether c goes on the character reference r (n bytes from its '&'). */
static bool
ref_char(const uint8_t *r, size_t n, uint8_t c)
{
	if (n == 1)
		return c == '#' || isalpha(c);
	if (r[1] != '#')
		return isalnum(c);
	if (n == 2)
		return isdigit(c) || (c | 0x20) == 'x';
	return (r[2] | 0x20) == 'x' ? isxdigit(c) : isdigit(c);
}

/*
 * An attribute value's character references decoded in place (&amp;
 * &#38; &#x26;, the ';' optional); line breaks and the byte order mark
 * left out (a URI is one line of URI; HTML.pm drops U+FEFF). A reference
 * is never shorter than its UTF-8, so the value only shrinks. Returns the
 * new length.
 */
static size_t
html_unescape(uint8_t *v, size_t n)
{
	size_t i = 0, o = 0;

	while (i < n) {
		uint8_t c = v[i];
		if (c == '\r' || c == '\n') {
			i++;
			continue;
		}
		if (c == 0xEF && i + 2 < n && v[i + 1] == 0xBB && v[i + 2] == 0xBF) {
			i += 3;
			continue;
		}
		size_t k = i + 1;
		while (c == '&' && k < n && k - i < sizeof(((struct scan_msg *)0)->ent) &&
		    ref_char(v + i, k - i, v[k]))
			k++;
		uint32_t cp = c == '&' ? ref_value(v + i + 1, k - i - 1) : 0;
		if (!cp) {
			v[o++] = v[i++];
			continue;
		}
		if (k < n && v[k] == ';')
			k++;
		o += scan_utf8_put(cp, v + o);
		i = k;
	}
	return o;
}

/* The length of u's scheme with its ':' (RFC 3986: ALPHA *( ALPHA /
 * DIGIT / "+" / "-" / "." ) ":"), 0 if it has none. */
static size_t
uri_scheme(const uint8_t *u, size_t n)
{
	if (!n || !isalpha(u[0]))
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (u[i] == ':')
			return i + 1;
		if (!isalnum(u[i]) && u[i] != '+' && u[i] != '-' && u[i] != '.')
			return 0;
	}
	return 0;
}

/*
 * <base href="u">: the part's other URIs are resolved against it if it is
 * http, https or ftp, as a directory: a trailing file name (name.ext, the
 * extension 2-4 characters) cut off, a '/' put at the end (HTML.pm).
 */
static void
html_base(struct scan_msg *s, const uint8_t *u, size_t n)
{
	size_t sch = uri_scheme(u, n), a, k;

	if (!((sch == 5 && !strncasecmp((const char *)u, "http:", 5)) ||
	    (sch == 6 && !strncasecmp((const char *)u, "https:", 6)) ||
	    (sch == 4 && !strncasecmp((const char *)u, "ftp:", 4))))
		return;
	if (n >= sizeof(s->base))
		return;
	/* the host, and the '/' after it */
	for (a = sch; a < n && a < sch + 2 && u[a] == '/'; a++)
		;
	const uint8_t *slash = a < n ? memchr(u + a, '/', n - a) : NULL;
	if (slash && slash > u + a) {
		/* a file name: [^/.]+ '.' [^/.]{2,4} at the end */
		size_t dot = n, e;
		for (e = n; e > (size_t)(slash - u) + 1 && u[e - 1] != '/' && u[e - 1] != '.'; e--)
			;
		if (e > (size_t)(slash - u) + 1 && u[e - 1] == '.' && n - e >= 2 && n - e <= 4)
			dot = e - 1;
		if (dot < n) {
			for (k = dot; k > (size_t)(slash - u) + 1 && u[k - 1] != '/' && u[k - 1] != '.'; k--)
				;
			if (k < dot)
				n = k;
		}
	}
	memcpy(s->base, u, n);
	s->base_len = (uint16_t)n;
	if (s->base[n - 1] != '/')
		s->base[s->base_len++] = '/';
}

/*
 * A tag's URI (v, n bytes, references decoded) as SpamAssassin's HTML
 * parser keeps it (HTML.pm: push_uri, canon_uri, target_uri): the
 * whitespace around it out, empty ones none; data:, mailto:, file:, cid:,
 * tel: and every URI with a scheme as they are, others resolved against
 * the part's <base href> if it has one. Its host is not checked
 * (SpamAssassin keeps a tag's URI whatever it is).
 */
static void
html_push(struct scan_msg *s, const uint8_t *v, size_t n)
{
	while (n && (isspace(*v) || (n >= 2 && v[0] == 0xC2 && v[1] == 0xA0))) {
		size_t k = *v == 0xC2 ? 2 : 1;
		v += k;
		n -= k;
	}
	while (n && (isspace(v[n - 1]) || (n >= 2 && v[n - 2] == 0xC2 && v[n - 1] == 0xA0)))
		n -= isspace(v[n - 1]) ? 1 : 2;
	if (!n)
		return;
	if (s->tag_uri == URI_TAG_BASE) {
		uri_emit(s, NULL, 0, v, n);
		html_base(s, v, n);
		return;
	}
	if (uri_scheme(v, n) || !s->base_len) {
		uri_emit(s, NULL, 0, v, n);
		return;
	}
	/* relative: "//host/x" takes the base's scheme, "/x" its scheme and
	 * host, anything else its directory */
	size_t pre = s->base_len, sch = uri_scheme(s->base, s->base_len);
	if (n >= 2 && v[0] == '/' && v[1] == '/')
		pre = sch;
	else if (v[0] == '/') {
		size_t a = sch;
		while (a < s->base_len && a < sch + 2 && s->base[a] == '/')
			a++;
		const uint8_t *e = memchr(s->base + a, '/', s->base_len - a);
		pre = e ? (size_t)(e - s->base) : s->base_len;
	}
	uri_emit(s, s->base, pre, v, n);
}

/* The URI attribute just read (s->aval, s->alen bytes). */
static void
html_uri(struct scan_msg *s)
{
	html_push(s, s->aval, html_unescape(s->aval, s->alen));
}

/*
 * <meta http-equiv="refresh" content="5; url=U">: U, from the content's
 * last "url=" to a ';' (HTML.pm).
 */
static void
html_refresh(struct scan_msg *s)
{
	uint8_t *v = s->aval;
	size_t n = html_unescape(v, s->alen), at = n;

	for (size_t i = 0; i + 3 <= n; i++) {
		if (strncasecmp((const char *)v + i, "url", 3) ||
		    (i && (isalnum(v[i - 1]) || v[i - 1] == '_')))
			continue;
		size_t k = i + 3;
		while (k < n && isspace(v[k]))
			k++;
		if (k == n || v[k] != '=')
			continue;
		for (k++; k < n && isspace(v[k]); k++)
			;
		at = k;
	}
	if (at == n)
		return;
	const uint8_t *semi = memchr(v + at, ';', n - at);
	html_push(s, v + at, (semi ? (size_t)(semi - v) : n) - at);
}

/* An attribute's value ends: a URI goes out (a <meta>'s waits for the
 * tag's end: its http-equiv may come after it). */
static void
attr_end(struct scan_msg *s)
{
	if (s->attr_equiv) {
		s->equiv[s->equiv_len] = '\0';
		s->meta_refresh = strstr(s->equiv, "refresh") != NULL;
	} else if (s->attr_uri) {
		if (s->tag_uri == URI_TAG_META)
			s->meta_content = true;
		else
			html_uri(s);
	}
}

enum { AT_GAP, AT_NAME, AT_EQ, AT_VALUE0, AT_VALUE };

/* A byte of an attribute's name (ws: whitespace), or the '=' after it. */
static void
attr_name(struct scan_msg *s, uint8_t c, bool ws)
{
	if (c == '=') {
		s->attr[s->attr_len < sizeof(s->attr) ? s->attr_len : 0] = '\0';
		s->attr_uri = s->attr_len < sizeof(s->attr) && uri_attr(s);
		s->attr_equiv = s->tag_uri == URI_TAG_META && !strcmp(s->attr, "http-equiv");
		s->attr_state = AT_VALUE0;
	} else if (ws)
		s->attr_state = AT_EQ;
	else if (c == '/')
		s->attr_state = AT_GAP;
	else if (s->attr_len < sizeof(s->attr) - 1)
		s->attr[s->attr_len++] = (char)tolower(c);
	else
		s->attr_len = sizeof(s->attr);  /* too long to be one */
}

/*
 * The attributes of a tag that carries a URI (p, n bytes, up to and with
 * its '>'): name, optional '=' and value (quoted with " or ', or up to
 * whitespace), the one that holds the URI kept and handed to html_uri.
 * Returns the bytes read.
 */
static size_t
html_attr(struct scan_msg *s, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];
		bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';

		if (c == '>' && !(s->attr_state == AT_VALUE && s->attr_q)) {
			if (s->attr_state == AT_VALUE)
				attr_end(s);
			if (s->meta_refresh && s->meta_content)
				html_refresh(s);
			tag_end(s);
			return i + 1;
		}
		switch (s->attr_state) {
		case AT_EQ:
			if (ws)
				break;
			if (c != '=') {         /* no value: c begins the next name */
				s->attr_state = AT_NAME;
				s->attr_len = 0;
			}
			attr_name(s, c, false);
			break;
		case AT_GAP:
			if (ws || c == '/')
				break;
			s->attr_state = AT_NAME;
			s->attr_len = 0;
			/* FALLTHROUGH */
		case AT_NAME:
			attr_name(s, c, ws);
			break;
		case AT_VALUE0:
			if (ws)
				break;
			s->attr_state = AT_VALUE;
			if (s->attr_uri)
				s->alen = 0;
			s->equiv_len = 0;
			s->attr_q = c == '"' || c == '\'' ? c : 0;
			if (s->attr_q)
				break;
			/* FALLTHROUGH */
		default:
			if (s->attr_q ? c == s->attr_q : ws) {
				attr_end(s);
				s->attr_state = AT_GAP;
			} else if (s->attr_uri && s->alen < SCAN_URI_MAX)
				s->aval[s->alen++] = c;
			else if (s->attr_equiv && s->equiv_len < sizeof(s->equiv) - 1)
				s->equiv[s->equiv_len++] = (char)tolower(c);
		}
	}
	return n;
}

/* ---- html to text (tags out; script and style out with their text) ---- */

/* Displayed text to BODY and to the URI tokens (SpamAssassin finds a text
 * URI in the displayed text). */
static void
html_out(struct scan_msg *s, const uint8_t *p, size_t n)
{
	body_bytes(s, p, n, true);
	uri_bytes(s, p, n);
}

/* The character reference in s->ent ends (semi: with a ';', read): its
 * character, or its bytes as they were if it names none. */
static void
ref_end(struct scan_msg *s, bool semi)
{
	uint32_t cp = ref_value(s->ent + 1, s->entn - 1u);
	uint8_t u[4];

	if (cp)
		html_out(s, u, scan_utf8_put(cp, u));
	else {
		html_out(s, s->ent, s->entn);
		if (semi)
			html_out(s, (const uint8_t *)";", 1);
	}
	s->entn = 0;
}

/*
 * A text run of html (p, n bytes, no '<'), character references decoded
 * as the HTML parser hands SpamAssassin its text (`&#86;iagra` is Viagra,
 * `&nbsp;` a space); a reference cut by a write waits in s->ent.
 */
static void
html_text(struct scan_msg *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (s->entn) {
			if (ref_char(s->ent, s->entn, p[i]) && s->entn < sizeof(s->ent)) {
				s->ent[s->entn++] = p[i++];
				continue;
			}
			bool semi = p[i] == ';';
			i += semi;
			ref_end(s, semi);
			continue;
		}
		const uint8_t *amp = memchr(p + i, '&', n - i);
		size_t e = amp ? (size_t)(amp - p) : n;
		html_out(s, p + i, e - i);
		if (!amp)
			break;
		s->ent[0] = '&';
		s->entn = 1;
		i = e + 1;
	}
}

/* Text runs go out whole (memchr to the next '<'; html_text); a tag is
 * read for its name, then skipped to its '>', or, if it is one that
 * carries a URI, read attribute by attribute (html_attr). */
static void
html_bytes(struct scan_msg *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (s->tag_state == 0) {
			const uint8_t *lt = memchr(p + i, '<', n - i);
			size_t e = lt ? (size_t)(lt - p) : n;
			if (!s->skip)
				html_text(s, p + i, e - i);
			if (!lt)
				break;
			if (s->entn)
				ref_end(s, false);
			s->tag_state = 1;
			s->tag_len = 0;
			s->tag_close = false;
			i = e + 1;
			continue;
		}
		if (s->tag_state == 2) {
			const uint8_t *gt = memchr(p + i, '>', n - i);
			if (!gt)
				break;
			i = (size_t)(gt - p) + 1;
			tag_end(s);
			continue;
		}
		if (s->tag_state == 3) {
			i += html_attr(s, p + i, n - i);
			continue;
		}
		if (s->tag_state == 4) {
			/* a comment, to its first "-->" (a '>' in it is text of
			 * the comment, as for the HTML parser) */
			for (; i < n && !(p[i] == '>' && s->cdash == 2); i++)
				s->cdash = p[i] != '-' ? 0 : s->cdash < 2 ? s->cdash + 1 : 2;
			if (i == n)
				break;
			i++;
			s->tag_state = 0;
			continue;
		}
		uint8_t c = p[i];
		if (c == '>') {
			i++;
			tag_end(s);
		} else if (!s->skip && s->tag_len < 3 && !s->tag_close &&
		    c == (uint8_t)"!--"[s->tag_len] && (s->tag_len == 0 || s->tag[0] == '!')) {
			/* "<!--" opens a comment (not in a script: its text is
			 * not html) */
			i++;
			s->tag[s->tag_len++] = (char)c;
			if (s->tag_len == 3) {
				s->tag_state = 4;
				s->cdash = 0;
			}
		} else if (c == '/' && s->tag_len == 0 && !s->tag_close) {
			i++;
			s->tag_close = true;
		} else if (isalnum(c) && s->tag_len < sizeof(s->tag) - 1) {
			i++;
			s->tag[s->tag_len++] = (char)tolower(c);
		} else {
			/* past the name: the attributes of a URI tag are read */
			s->tag[s->tag_len] = '\0';
			s->tag_uri = s->tag_close || s->skip ? 0 : uri_tag(s->tag);
			s->tag_state = s->tag_uri ? 3 : 2;
			s->attr_state = AT_GAP;
			s->meta_refresh = s->meta_content = false;
		}
	}
}

/* ---- MIME sink ---- */

static void
on_header(void *ctx, const struct scan_mime_hdr *h)
{
	struct scan_msg *s = ctx;

	if (h->part != 0)
		return;
	scan_hs_header(s->hm, s->w, h->name, h->name_len, h->value, h->value_len, h->raw, h->raw_len);
	if (h->name_len == 7 && !strncasecmp(h->name, "subject", 7) && !s->subject) {
		const uint8_t *v = h->value;
		size_t n = h->value_len;
		while (n && (*v == ' ' || *v == '\t')) {
			v++;
			n--;
		}
		body_text(s, v, n);
		body_put(s, '\n');
		s->subject = true;
	}
}

static void
on_part_begin(void *ctx, const struct scan_mime_part *p)
{
	struct scan_msg *s = ctx;

	bool leaf = !(p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE));

	if (!s->subject) {
		body_put(s, '\n');     /* BODY's first line is the Subject's, empty */
		s->subject = true;
	}
	/* SpamAssassin renders text/plain and text/html (Node.pm: rendered;
	 * no text/calendar, text/x-vcard, text/csv ...), and its rawbody rules
	 * read every text/ leaf but text/calendar, and message/ leaves
	 * (Message.pm: get_decoded_body_text_array) */
	s->text = leaf && (p->flags & SCAN_MIME_P_TEXT) &&
	    (!strcmp(p->subtype, "plain") || !strcmp(p->subtype, "html"));
	s->raw = leaf && (((p->flags & SCAN_MIME_P_TEXT) && strcmp(p->subtype, "calendar")) ||
	    !strcmp(p->type, "message"));
	s->html = s->text && !strcmp(p->subtype, "html");
	s->tag_state = 0;
	s->skip = false;
	s->entn = 0;
	s->base_len = 0;
	s->ulen = 0;
	cap_reset(&s->bcap);
	cap_reset(&s->rcap);
	/* SpamAssassin's line break before every leaf after text */
	if (leaf && s->btext)
		ws_add(s, '\n');
}

static void
on_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view view, const uint8_t *b, size_t n)
{
	struct scan_msg *s = ctx;

	(void)p;
	if (view == SCAN_MIME_DECODED) {
		if (s->raw)
			cap_bytes(s, &s->rcap, SCAN_T_RAWBODY, SCAN_RAWBODY_PART, b, n, false);
	} else if (view == SCAN_MIME_UTF8 && s->text) {
		if (s->html)
			html_bytes(s, b, n);
		else {
			body_bytes(s, b, n, false);
			uri_bytes(s, b, n);
		}
	}
}

static void
on_part_end(void *ctx, const struct scan_mime_end *e)
{
	struct scan_msg *s = ctx;

	(void)e;
	if (s->text) {
		if (s->entn)
			ref_end(s, false);
		if (s->ulen)
			uri_flush(s);
		cap_end(s, &s->bcap, SCAN_T_BODY);
		u8_drop(s);
	}
	if (s->raw) {
		cap_end(s, &s->rcap, SCAN_T_RAWBODY);
		/* parts do not run into each other: SpamAssassin matches
		 * rawbody rules over each part apart, so a line of one NUL
		 * parts them, which no whitespace, word or markup pattern
		 * crosses (`<\/html>\s*[a-z0-9]`: html then a text attachment) */
		feed(s, SCAN_T_RAWBODY, "\n\0\n", 3);
	}
	s->text = s->raw = false;
}

struct scan_msg *
scan_msg_new(const struct scan_hs *e)
{
	struct scan_msg *s = calloc(1, sizeof(*s));
	static const struct scan_mime_sink sink = {
		.header = on_header,
		.part_begin = on_part_begin,
		.body = on_body,
		.part_end = on_part_end,
	};

	if (!s)
		return NULL;
	s->hm = scan_hs_msg_new(e);
	if (!s->hm) {
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	s->md = pcre2_match_data_create(4, NULL);
	if (!s->md) {
		scan_hs_msg_free(s->hm);
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	scan_mime_init(&s->mime, NULL, &sink, s);
	return s;
}

struct scan_msg *
scan_msg_free(struct scan_msg *s)
{
	if (!s)
		return NULL;
	scan_mime_fini(&s->mime);
	scan_hs_msg_free(s->hm);
	pcre2_match_data_free(s->md);
	free(s);
	return NULL;
}

void
scan_msg_begin(struct scan_msg *s, struct scan_hs_worker *w)
{
	s->w = w;
	s->rc = 0;
	s->text = s->raw = s->html = false;
	s->ulen = 0;
	if (s->nseen) {
		memset(s->seen, 0, sizeof(s->seen));
		s->nseen = 0;
	}
	s->btext = s->subject = false;
	s->ws = s->ws_nl = s->u8n = 0;
	s->llen = s->lstart = 0;
	scan_mime_reset(&s->mime);
	scan_hs_msg_begin(s->hm);
}

void
scan_msg_feed(struct scan_msg *s, const uint8_t *p, size_t n)
{
	feed(s, SCAN_T_FULL, p, n);
	scan_mime_feed(&s->mime, p, n);
}

int
scan_msg_end(struct scan_msg *s)
{
	scan_mime_finish(&s->mime);
	u8_drop(s);
	ws_end(s);
	s->lstart = s->llen;
	body_out(s);
	int rc = scan_hs_msg_end(s->hm, s->w);
	return s->rc < 0 ? s->rc : rc;
}
