/*
 * scan.c - MIME events into rule-engine targets. See scan.h.
 */
#include "scan/scan.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
	if (!best)
		return;
	n -= (size_t)(best - b);
	while (n && strchr(".,;:!?", best[n - 1]))
		n--;
	if (n <= uri_schemes[which].len)
		return;
	if (which == 4)
		feed(s, SCAN_T_URI, "http://", 7);
	feed(s, SCAN_T_URI, best, n);
	feed(s, SCAN_T_URI, "\n", 1);
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

/* The first ':' or '.' in b (n bytes), or NULL: 16 bytes at a time. */
static const uint8_t *
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

/* ---- html to text (tags out, block tags to line breaks) ---- */

static void
out_flush(struct scan_msg *s)
{
	feed(s, SCAN_T_BODY, s->out, s->olen);
	s->olen = 0;
}

static void
out_byte(struct scan_msg *s, uint8_t c)
{
	if (s->olen == sizeof(s->out))
		out_flush(s);
	s->out[s->olen++] = c;
}

/* a run of text between tags: batched with what came before it */
static void
out_bytes(struct scan_msg *s, const uint8_t *b, size_t n)
{
	if (s->olen + n > sizeof(s->out)) {
		out_flush(s);
		if (n >= sizeof(s->out)) {
			feed(s, SCAN_T_BODY, b, n);
			return;
		}
	}
	memcpy(s->out + s->olen, b, n);
	s->olen += n;
}

static bool
block_tag(const char *t)
{
	static const char *const blocks[] = {"br", "p", "div", "tr", "li", "td", "h1", "h2",
	    "h3", "table", "hr", "ul", "ol", "title", NULL};
	for (int i = 0; blocks[i]; i++)
		if (!strcmp(t, blocks[i]))
			return true;
	return false;
}

/* Text runs go out whole (memchr to the next '<'); a tag is read for its
 * name, then skipped to its '>'. */
static void
html_bytes(struct scan_msg *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (s->tag_state == 0) {
			const uint8_t *lt = memchr(p + i, '<', n - i);
			size_t e = lt ? (size_t)(lt - p) : n;
			out_bytes(s, p + i, e - i);
			if (!lt)
				break;
			s->tag_state = 1;
			s->tag_len = 0;
			i = e + 1;
			continue;
		}
		if (s->tag_state == 2) {
			const uint8_t *gt = memchr(p + i, '>', n - i);
			if (!gt)
				break;
			i = (size_t)(gt - p);
		}
		uint8_t c = p[i++];
		if (c == '>') {
			s->tag[s->tag_len < sizeof(s->tag) ? s->tag_len : sizeof(s->tag) - 1] = '\0';
			if (block_tag(s->tag))
				out_byte(s, '\n');
			s->tag_state = 0;
			continue;
		}
		if (c == '/' && s->tag_len == 0)
			continue;
		if (isalnum(c) && s->tag_len < sizeof(s->tag) - 1)
			s->tag[s->tag_len++] = (char)tolower(c);
		else
			s->tag_state = 2;       /* past the name */
	}
	out_flush(s);
}

/* ---- MIME sink ---- */

static void
on_header(void *ctx, const struct scan_mime_hdr *h)
{
	struct scan_msg *s = ctx;

	if (h->part != 0)
		return;
	scan_hs_header(s->hm, s->w, h->name, h->name_len, h->value, h->value_len, h->raw, h->raw_len);
	if (h->name_len == 7 && !strncasecmp(h->name, "subject", 7)) {
		const uint8_t *v = h->value;
		size_t n = h->value_len;
		while (n && (*v == ' ' || *v == '\t')) {
			v++;
			n--;
		}
		feed(s, SCAN_T_BODY, v, n);
		feed(s, SCAN_T_BODY, "\n", 1);
	}
}

static void
on_part_begin(void *ctx, const struct scan_mime_part *p)
{
	struct scan_msg *s = ctx;

	s->text = (p->flags & SCAN_MIME_P_TEXT) && !(p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE));
	s->html = s->text && !strcmp(p->subtype, "html");
	s->tag_state = 0;
	s->ulen = 0;
}

static void
on_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view view, const uint8_t *b, size_t n)
{
	struct scan_msg *s = ctx;

	(void)p;
	if (!s->text)
		return;
	if (view == SCAN_MIME_DECODED)
		feed(s, SCAN_T_RAWBODY, b, n);
	else if (view == SCAN_MIME_UTF8) {
		if (s->html)
			html_bytes(s, b, n);
		else
			feed(s, SCAN_T_BODY, b, n);
		uri_bytes(s, b, n);
	}
}

static void
on_part_end(void *ctx, const struct scan_mime_end *e)
{
	struct scan_msg *s = ctx;

	(void)e;
	if (!s->text)
		return;
	if (s->ulen)
		uri_flush(s);
	/* parts do not run into each other */
	feed(s, SCAN_T_BODY, "\n", 1);
	feed(s, SCAN_T_RAWBODY, "\n", 1);
	s->text = false;
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
	free(s);
	return NULL;
}

void
scan_msg_begin(struct scan_msg *s, struct scan_hs_worker *w)
{
	s->w = w;
	s->rc = 0;
	s->text = s->html = false;
	s->ulen = 0;
	s->olen = 0;
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
	int rc = scan_hs_msg_end(s->hm, s->w);
	return s->rc < 0 ? s->rc : rc;
}
