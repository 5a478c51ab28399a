/*
 * Tests for scan/mime.c: the streaming MIME parser.
 *
 * Every vector is parsed whole, byte by byte (each byte in its own heap
 * block, so ASan sees any over-read), at 50 random split points (each
 * piece in its own block) and from the end of a page whose next page is
 * PROT_NONE; every run must give the same event log, and the whole run the
 * log written in the test where there is one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "scan/mime.h"

/* ---- the event log ---- */

struct buf {
	char *p;
	size_t n, cap;
};

static void
buf_put(struct buf *b, const void *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		b->cap = (b->n + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static void buf_fmt(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
buf_fmt(struct buf *b, const char *fmt, ...)
{
	char tmp[2048];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	buf_put(b, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* printable ASCII as is; \r \n \t and \xNN otherwise */
static void
buf_esc(struct buf *b, const uint8_t *s, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		uint8_t c = s[k];
		if (c == '\r')
			buf_put(b, "\\r", 2);
		else if (c == '\n')
			buf_put(b, "\\n", 2);
		else if (c == '\t')
			buf_put(b, "\\t", 2);
		else if (c == '\\')
			buf_put(b, "\\\\", 2);
		else if (c < 0x20 || c >= 0x7f)
			buf_fmt(b, "\\x%02x", c);
		else
			buf_put(b, &c, 1);
	}
}

struct log {
	struct buf out;
	struct buf view[3];
	uint32_t begun, ended;
	int open_leaf;          /* body bytes only between a leaf's begin and end */
	int text;               /* the open leaf has the UTF8 view */
	uint32_t leaf;
	size_t body_calls;
	size_t max_body_call;
};

static const char *const anomaly_name[SCAN_MIME_A_COUNT] = {
	[SCAN_MIME_A_NO_CLOSE] = "NO_CLOSE", [SCAN_MIME_A_NO_BOUNDARY] = "NO_BOUNDARY",
	[SCAN_MIME_A_NO_PARTS] = "NO_PARTS", [SCAN_MIME_A_B64_GARBAGE] = "B64_GARBAGE",
	[SCAN_MIME_A_B64_TRUNCATED] = "B64_TRUNCATED", [SCAN_MIME_A_QP_INVALID] = "QP_INVALID",
	[SCAN_MIME_A_NESTING] = "NESTING", [SCAN_MIME_A_PARTS] = "PARTS",
	[SCAN_MIME_A_BOUNDARIES] = "BOUNDARIES", [SCAN_MIME_A_HEADER_LONG] = "HEADER_LONG",
	[SCAN_MIME_A_HEADERS_BIG] = "HEADERS_BIG", [SCAN_MIME_A_HEADER_BAD] = "HEADER_BAD",
	[SCAN_MIME_A_HEADER_8BIT] = "HEADER_8BIT", [SCAN_MIME_A_HEADER_NUL] = "HEADER_NUL",
	[SCAN_MIME_A_HEADER_CUT] = "HEADER_CUT", [SCAN_MIME_A_DUPLICATE] = "DUPLICATE",
	[SCAN_MIME_A_BARE_LF] = "BARE_LF", [SCAN_MIME_A_BARE_CR] = "BARE_CR",
	[SCAN_MIME_A_CTE_UNKNOWN] = "CTE_UNKNOWN", [SCAN_MIME_A_CTE_CONTAINER] = "CTE_CONTAINER",
	[SCAN_MIME_A_CHARSET_UNKNOWN] = "CHARSET_UNKNOWN",
	[SCAN_MIME_A_CHARSET_INVALID] = "CHARSET_INVALID",
	[SCAN_MIME_A_ENCODED_WORD] = "ENCODED_WORD", [SCAN_MIME_A_FILENAME_LONG] = "FILENAME_LONG",
};

static const char *const cte_name[] = { "7bit", "8bit", "binary", "base64", "qp" };
static const char *const disp_name[] = { "-", "inline", "attachment", "other" };

static void
ev_header(void *ctx, const struct scan_mime_hdr *h)
{
	struct log *l = ctx;
	buf_fmt(&l->out, "H%u %.*s: ", h->part, (int)h->name_len, h->name);
	buf_esc(&l->out, h->value, h->value_len);
	/* the raw value when it says more than the value */
	size_t s = 0;
	while (s < h->raw_len && (h->raw[s] == ' ' || h->raw[s] == '\t'))
		s++;
	if (h->raw_len - s != h->value_len || memcmp(h->raw + s, h->value, h->value_len) != 0) {
		buf_put(&l->out, " [raw ", 6);
		buf_esc(&l->out, h->raw, h->raw_len);
		buf_put(&l->out, "]", 1);
	}
	buf_put(&l->out, "\n", 1);
}

static void
ev_begin(void *ctx, const struct scan_mime_part *p)
{
	struct log *l = ctx;
	char fl[8];
	size_t k = 0;
	if (p->flags & SCAN_MIME_P_MULTIPART)
		fl[k++] = 'M';
	if (p->flags & SCAN_MIME_P_MESSAGE)
		fl[k++] = 'G';
	if (p->flags & SCAN_MIME_P_TEXT)
		fl[k++] = 'T';
	if (p->flags & SCAN_MIME_P_OPAQUE)
		fl[k++] = 'O';
	if (p->flags & SCAN_MIME_P_NO_CTYPE)
		fl[k++] = 'N';
	fl[k] = '\0';
	buf_fmt(&l->out, "B%u<%d d%u %s/%s", p->index, p->parent == UINT32_MAX ? -1 : (int)p->parent,
	    p->depth, p->type, p->subtype);
	if (p->charset[0])
		buf_fmt(&l->out, " cs=%s", p->charset);
	if (p->cte)
		buf_fmt(&l->out, " cte=%s", cte_name[p->cte]);
	if (p->disp)
		buf_fmt(&l->out, " disp=%s", disp_name[p->disp]);
	if (p->flags & SCAN_MIME_P_HAS_FILENAME) {
		buf_put(&l->out, " fn=\"", 5);
		buf_esc(&l->out, (const uint8_t *)p->filename, p->filename_len);
		buf_put(&l->out, "\"", 1);
		if (strlen(p->filename) != p->filename_len && memchr(p->filename, 0, p->filename_len) == NULL)
			fail_msg("filename_len %u, strlen %zu", p->filename_len, strlen(p->filename));
	}
	if (k)
		buf_fmt(&l->out, " %s", fl);
	buf_put(&l->out, "\n", 1);
	l->begun++;
	if (!(p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE))) {
		if (l->open_leaf)
			fail_msg("part %u begins inside leaf %u", p->index, l->leaf);
		l->open_leaf = 1;
		l->text = !!(p->flags & SCAN_MIME_P_TEXT);
		l->leaf = p->index;
	}
}

static void
ev_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view v, const uint8_t *b, size_t n)
{
	struct log *l = ctx;
	if (!l->open_leaf || p->index != l->leaf)
		fail_msg("body for part %u, open leaf %u (%d)", p->index, l->leaf, l->open_leaf);
	if (n == 0)
		fail_msg("empty body event for part %u", p->index);
	if (v == SCAN_MIME_UTF8 && !(p->flags & SCAN_MIME_P_TEXT))
		fail_msg("UTF8 view for non-text part %u", p->index);
	buf_put(&l->view[v], b, n);
	l->body_calls++;
	if (n > l->max_body_call)
		l->max_body_call = n;
}

static int
same(const struct buf *a, const struct buf *b)
{
	return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

static void
ev_end(void *ctx, const struct scan_mime_end *e)
{
	struct log *l = ctx;
	buf_fmt(&l->out, "E%u", e->index);
	if (!(e->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE))) {
		if (!l->open_leaf || l->leaf != e->index)
			fail_msg("end of part %u, open leaf %u", e->index, l->leaf);
		if (e->raw_bytes != l->view[0].n || e->decoded_bytes != l->view[1].n)
			fail_msg("part %u: got raw %llu decoded %llu bytes, want %zu %zu", e->index,
			    (unsigned long long)e->raw_bytes, (unsigned long long)e->decoded_bytes,
			    l->view[0].n, l->view[1].n);
		if (l->view[0].n) {
			buf_put(&l->out, " raw=\"", 6);
			buf_esc(&l->out, (const uint8_t *)l->view[0].p, l->view[0].n);
			buf_put(&l->out, "\"", 1);
		}
		/* the decoded / UTF-8 views only where they differ */
		if (!same(&l->view[1], &l->view[0])) {
			buf_put(&l->out, " dec=\"", 6);
			buf_esc(&l->out, (const uint8_t *)l->view[1].p, l->view[1].n);
			buf_put(&l->out, "\"", 1);
		}
		if (l->text && !same(&l->view[2], &l->view[1])) {
			buf_put(&l->out, " utf8=\"", 7);
			buf_esc(&l->out, (const uint8_t *)l->view[2].p, l->view[2].n);
			buf_put(&l->out, "\"", 1);
		}
		for (int v = 0; v < 3; v++)
			l->view[v].n = 0;
		l->open_leaf = 0;
	}
	buf_put(&l->out, "\n", 1);
	l->ended++;
}

static void
ev_anomaly(void *ctx, uint32_t part, enum scan_mime_anomaly a)
{
	struct log *l = ctx;
	assert_true(a < SCAN_MIME_A_COUNT);
	buf_fmt(&l->out, "A%u %s\n", part, anomaly_name[a]);
}

static const struct scan_mime_sink sink = {
	.header = ev_header, .part_begin = ev_begin, .body = ev_body,
	.part_end = ev_end, .anomaly = ev_anomaly,
};

static void
log_free(struct log *l)
{
	free(l->out.p);
	for (int v = 0; v < 3; v++)
		free(l->view[v].p);
	memset(l, 0, sizeof(*l));
}

/* ---- runs ---- */

enum mode { WHOLE, BYTES, RANDOM, GUARD };
static const char *const mode_name[] = { "whole", "byte by byte", "random splits", "guard page" };

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static int
cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

/* feeds in[0..n) from a copy in its own heap block (ASan catches over-reads) */
static void
feed_copy(struct scan_mime *m, const uint8_t *in, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	assert_non_null(c);
	memcpy(c, in, n);
	scan_mime_feed(m, c, n);
	free(c);
}

static struct scan_mime *
new_parser(const struct scan_mime_limits *lim, struct log *l)
{
	struct scan_mime *m = malloc(sizeof(*m));
	assert_non_null(m);
	scan_mime_init(m, lim, &sink, l);
	return m;
}

static void
run(const uint8_t *in, size_t n, const struct scan_mime_limits *lim, enum mode mode, struct log *l,
    struct scan_mime_stats *st)
{
	struct scan_mime *m = new_parser(lim, l);

	switch (mode) {
	case WHOLE:
		feed_copy(m, in, n);
		break;
	case BYTES:
		for (size_t k = 0; k < n; k++)
			feed_copy(m, in + k, 1);
		break;
	case RANDOM: {
		size_t cut[52];
		int nc = 0;
		cut[nc++] = 0;
		for (int k = 0; k < 50; k++)
			cut[nc++] = n ? (size_t)(rng() % (n + 1)) : 0;
		cut[nc++] = n;
		qsort(cut, (size_t)nc, sizeof(cut[0]), cmp_size);
		for (int k = 0; k + 1 < nc; k++)
			feed_copy(m, in + cut[k], cut[k + 1] - cut[k]);
		break;
	}
	case GUARD: {
		long pg = sysconf(_SC_PAGESIZE);
		size_t len = (n + (size_t)pg - 1) / (size_t)pg * (size_t)pg + (size_t)pg;
		uint8_t *map = mmap(NULL, len + (size_t)pg, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(map != MAP_FAILED);
		assert_int_equal(mprotect(map + len, (size_t)pg, PROT_NONE), 0);
		uint8_t *at = map + len - n;
		memcpy(at, in, n);
		scan_mime_feed(m, at, n);
		scan_mime_finish(m);
		if (st)
			*st = m->stats;
		scan_mime_fini(m);
		/* and byte by byte from the same place */
		struct log l2 = { 0 };
		struct scan_mime *m2 = new_parser(lim, &l2);
		for (size_t k = 0; k < n; k++)
			scan_mime_feed(m2, at + k, 1);
		scan_mime_finish(m2);
		scan_mime_fini(m2);
		free(m2);
		if (strcmp(l2.out.p ? l2.out.p : "", l->out.p ? l->out.p : "") != 0)
			fail_msg("guard page byte by byte: got\n%s\nwant\n%s", l2.out.p, l->out.p);
		log_free(&l2);
		munmap(map, len + (size_t)pg);
		free(m);
		return;
	}
	}
	scan_mime_finish(m);
	scan_mime_feed(m, (const uint8_t *)"ignored", 7);   /* after finish: nothing */
	scan_mime_finish(m);
	if (st)
		*st = m->stats;
	scan_mime_fini(m);
	free(m);
	if (l->begun != l->ended)
		fail_msg("%s: got %u part_begin and %u part_end, want equal", mode_name[mode],
		    l->begun, l->ended);
}

/*
 * Runs a vector in every mode; compares with want when given. Returns the
 * whole-run log (caller frees) and its stats.
 */
static char *
check(const char *what, const void *in, size_t n, const struct scan_mime_limits *lim,
    const char *want, struct scan_mime_stats *st)
{
	struct log whole = { 0 };
	run(in, n, lim, WHOLE, &whole, st);
	const char *w = whole.out.p ? whole.out.p : "";
	if (want && strcmp(w, want) != 0)
		fail_msg("%s, whole: got\n%s\nwant\n%s", what, w, want);
	for (int mode = BYTES; mode <= GUARD; mode++) {
		int reps = mode == RANDOM ? 3 : 1;
		for (int r = 0; r < reps; r++) {
			struct log l = { 0 };
			run(in, n, lim, (enum mode)mode, &l, NULL);
			const char *g = l.out.p ? l.out.p : "";
			if (strcmp(g, w) != 0) {
				size_t d = 0;
				while (g[d] && g[d] == w[d])
					d++;
				fail_msg("%s, %s: logs differ at byte %zu: got\n%s\nwant\n%s", what,
				    mode_name[mode], d, g, w);
			}
			log_free(&l);
		}
	}
	char *ret = strdup(w);
	log_free(&whole);
	return ret;
}

#define CHECK(what, msg, want) free(check(what, msg, strlen(msg), NULL, want, NULL))

/* ---- vectors ---- */

static void
test_simple_text(void **state)
{
	CHECK("simple text",
	    "From: a@example.org\r\n"
	    "Subject: Hello\r\n"
	    "\r\n"
	    "Hi there.\r\n"
	    "-- \r\n"
	    "sig\r\n",
	    "H0 From: a@example.org\n"
	    "H0 Subject: Hello\n"
	    "B0<-1 d0 text/plain TN\n"
	    "E0 raw=\"Hi there.\\r\\n-- \\r\\nsig\\r\\n\"\n");
	/* no body at all, and headers only */
	CHECK("empty body", "Subject: x\r\n\r\n",
	    "H0 Subject: x\nB0<-1 d0 text/plain TN\nE0\n");
	CHECK("headers only", "Subject: x\r\n",
	    "H0 Subject: x\nA0 HEADER_CUT\nB0<-1 d0 text/plain TN\nE0\n");
	CHECK("nothing", "", "A0 HEADER_CUT\nB0<-1 d0 text/plain TN\nE0\n");
	CHECK("no final CRLF", "Subject: x\r\n\r\nbody",
	    "H0 Subject: x\nB0<-1 d0 text/plain TN\nE0 raw=\"body\"\n");
}

static void
test_folded_headers(void **state)
{
	CHECK("folded",
	    "Subject: a long\r\n"
	    "\tsubject line\r\n"
	    "  continued\r\n"
	    "To: x@example.org,\r\n y@example.org\r\n"
	    "Content-Type: text/plain;\r\n"
	    "\tcharset=\"iso-8859-1\"\r\n"
	    "X-Empty:\r\n"
	    "Subject2 : =?utf-8?q?caf=C3=A9?= =?utf-8?b?IGF1IGxhaXQ=?=\r\n"
	    "\r\n"
	    "caf\xe9\r\n",
	    "H0 Subject: a long\\tsubject line  continued [raw  a long\\r\\n\\tsubject line\\r\\n  continued]\n"
	    "H0 To: x@example.org, y@example.org [raw  x@example.org,\\r\\n y@example.org]\n"
	    "H0 Content-Type: text/plain;\\tcharset=\"iso-8859-1\" [raw  text/plain;\\r\\n\\tcharset=\"iso-8859-1\"]\n"
	    "H0 X-Empty: \n"
	    "H0 Subject2: caf\\xc3\\xa9 au lait [raw  =?utf-8?q?caf=C3=A9?= =?utf-8?b?IGF1IGxhaXQ=?=]\n"
	    "B0<-1 d0 text/plain cs=iso-8859-1 T\n"
	    "E0 raw=\"caf\\xe9\\r\\n\" utf8=\"caf\\xc3\\xa9\\r\\n\"\n");
	/* stray continuation, no colon, bare LF, 8-bit, duplicates */
	CHECK("bad header lines",
	    " stray\r\n"
	    "NoColonHere\r\n"
	    "X-8bit: caf\xc3\xa9\n"
	    "Content-Type: text/html\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Transfer-Encoding: x-uue\r\n"
	    "\r\n"
	    "b\r\n",
	    "A0 HEADER_BAD\n"
	    "A0 BARE_LF\n"
	    "A0 HEADER_8BIT\n"
	    "H0 X-8bit: caf\\xc3\\xa9\n"
	    "H0 Content-Type: text/html\n"
	    "H0 Content-Type: text/plain\n"
	    "A0 DUPLICATE\n"
	    "H0 Content-Transfer-Encoding: x-uue\n"
	    "A0 CTE_UNKNOWN\n"
	    "B0<-1 d0 text/html T\n"
	    "E0 raw=\"b\\r\\n\"\n");
}

static const char alternative[] =
    "From: a@example.org\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"=_alt\"\r\n"
    "\r\n"
    "This is a preamble.\r\n"
    "--=_alt\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "caf=C3=A9 soft=\r\n"
    "break and a very long line that goes on=\r\n"
    " and on\r\n"
    "--=_alt\r\n"
    "Content-Type: text/html; charset=windows-1252\r\n"
    "\r\n"
    "<p>\x93quoted\x94</p>\r\n"
    "--=_alt--\r\n"
    "epilogue\r\n";

static void
test_multipart_alternative(void **state)
{
	struct scan_mime_stats st;
	free(check("alternative", alternative, strlen(alternative), NULL,
	    "H0 From: a@example.org\n"
	    "H0 MIME-Version: 1.0\n"
	    "H0 Content-Type: multipart/alternative; boundary=\"=_alt\"\n"
	    "B0<-1 d0 multipart/alternative M\n"
	    "H1 Content-Type: text/plain; charset=utf-8\n"
	    "H1 Content-Transfer-Encoding: quoted-printable\n"
	    "B1<0 d1 text/plain cs=utf-8 cte=qp T\n"
	    "E1 raw=\"caf=C3=A9 soft=\\r\\nbreak and a very long line that goes on=\\r\\n and on\" "
	    "dec=\"caf\\xc3\\xa9 softbreak and a very long line that goes on and on\"\n"
	    "H2 Content-Type: text/html; charset=windows-1252\n"
	    "B2<0 d1 text/html cs=windows-1252 T\n"
	    "E2 raw=\"<p>\\x93quoted\\x94</p>\" utf8=\"<p>\\xe2\\x80\\x9cquoted\\xe2\\x80\\x9d</p>\"\n"
	    "E0\n", &st));
	assert_int_equal(st.parts, 3);
	/* the CRLF before the first delimiter is the delimiter's */
	if (st.preamble_bytes != 19 || st.epilogue_bytes != 10)
		fail_msg("got preamble %llu epilogue %llu bytes, want 19 10",
		    (unsigned long long)st.preamble_bytes, (unsigned long long)st.epilogue_bytes);
}

static void
b64_encode(const uint8_t *in, size_t n, size_t wrap, struct buf *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t col = 0;
	for (size_t k = 0; k < n; k += 3) {
		uint32_t v = (uint32_t)in[k] << 16 | (k + 1 < n ? in[k + 1] << 8 : 0) | (k + 2 < n ? in[k + 2] : 0);
		char q[4] = { a[v >> 18 & 63], a[v >> 12 & 63], k + 1 < n ? a[v >> 6 & 63] : '=',
			k + 2 < n ? a[v & 63] : '=' };
		buf_put(out, q, 4);
		col += 4;
		if (wrap && col >= wrap && k + 3 < n) {
			buf_put(out, "\r\n", 2);
			col = 0;
		}
	}
}

static void
test_mixed_attachments(void **state)
{
	uint8_t bin[300];
	for (size_t k = 0; k < sizeof(bin); k++)
		bin[k] = (uint8_t)(k * 7 + 3);
	struct buf msg = { 0 }, enc76 = { 0 }, enc0 = { 0 };
	b64_encode(bin, sizeof(bin), 76, &enc76);
	b64_encode(bin, sizeof(bin), 0, &enc0);
	buf_fmt(&msg,
	    "Content-Type: multipart/mixed; boundary=b1\r\n"
	    "\r\n"
	    "--b1\r\n"
	    "\r\n"
	    "implicit text/plain\r\n"
	    "--b1\r\n"
	    "Content-Type: application/octet-stream; name=\"by-name.bin\"\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n%s\r\n"
	    "--b1\r\n"
	    "Content-Type: application/octet-stream\r\n"
	    "Content-Disposition: attachment; filename=\"by filename.exe\"\r\n"
	    "Content-Transfer-Encoding: BASE64\r\n"
	    "\r\n%s\r\n"
	    "--b1\r\n"
	    "Content-Type: application/pdf; name=\"fallback.pdf\"\r\n"
	    "Content-Disposition: attachment;\r\n"
	    " filename*=UTF-8''%%E2%%82%%AC%%20invoice.pdf\r\n"
	    "\r\n"
	    "x\r\n"
	    "--b1\r\n"
	    "Content-Disposition: attachment; filename*1*=%%20two.scr; filename*0*=iso-8859-1''caf%%E9;\r\n"
	    "\tfilename*2=\".zip\"\r\n"
	    "\r\n"
	    "--b1\r\n"
	    "Content-Type: application/x-msdownload;\r\n"
	    " name=\"=?UTF-8?B?w6l0w6k=?= =?UTF-8?Q?=2Eexe?=\"\r\n"
	    "\r\n"
	    "--b1--\r\n",
	    enc76.p, enc0.p);
	struct scan_mime_stats st;
	char *log = check("mixed", msg.p, msg.n, NULL, NULL, &st);
	static const char *const want[] = {
		"B1<0 d1 text/plain TN\nE1 raw=\"implicit text/plain\"\n",
		"B2<0 d1 application/octet-stream cte=base64 fn=\"by-name.bin\"\n",
		"B3<0 d1 application/octet-stream cte=base64 disp=attachment fn=\"by filename.exe\"\n",
		"B4<0 d1 application/pdf disp=attachment fn=\"\\xe2\\x82\\xac invoice.pdf\"\n",
		"B5<0 d1 text/plain disp=attachment fn=\"caf\\xc3\\xa9 two.scr.zip\" TN\n",
		"B6<0 d1 application/x-msdownload fn=\"\\xc3\\xa9t\\xc3\\xa9.exe\"\n",
		"E0\n",
	};
	for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
		if (strstr(log, want[k]) == NULL)
			fail_msg("mixed: got\n%s\nwant a line\n%s", log, want[k]);
	if (strstr(log, "\nA") != NULL)
		fail_msg("mixed: got anomalies\n%s\nwant none", log);
	/* both base64 bodies decode to bin */
	struct buf dec = { 0 };
	buf_esc(&dec, bin, sizeof(bin));
	const char *p = log;
	for (int k = 0; k < 2; k++) {
		p = strstr(p, " dec=\"");
		assert_non_null(p);
		p += 6;
		if (strncmp(p, dec.p, dec.n) != 0 || p[dec.n] != '"')
			fail_msg("attachment %d: got dec=\"%.60s...\", want dec=\"%.60s...\"", k, p, dec.p);
	}
	assert_int_equal(st.parts, 7);
	free(log);
	free(msg.p);
	free(enc76.p);
	free(enc0.p);
	free(dec.p);
}

static void
test_nested_3_deep(void **state)
{
	CHECK("nested",
	    "Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
	    "\r\n"
	    "--outer\r\n"
	    "Content-Type: multipart/related; boundary=\"mid\"\r\n"
	    "\r\n"
	    "--mid\r\n"
	    "Content-Type: multipart/alternative; boundary=\"in\"\r\n"
	    "\r\n"
	    "--in\r\n"
	    "\r\n"
	    "text\r\n"
	    "--in\r\n"
	    "Content-Type: text/html\r\n"
	    "\r\n"
	    "<b>html</b>\r\n"
	    "--in--\r\n"
	    "--mid\r\n"
	    "Content-Type: image/png\r\n"
	    "\r\n"
	    "PNG\r\n"
	    "--mid--\r\n"
	    "--outer\r\n"
	    "\r\n"
	    "last\r\n"
	    "--outer--\r\n",
	    "H0 Content-Type: multipart/mixed; boundary=\"outer\"\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "H1 Content-Type: multipart/related; boundary=\"mid\"\n"
	    "B1<0 d1 multipart/related M\n"
	    "H2 Content-Type: multipart/alternative; boundary=\"in\"\n"
	    "B2<1 d2 multipart/alternative M\n"
	    "B3<2 d3 text/plain TN\n"
	    "E3 raw=\"text\"\n"
	    "H4 Content-Type: text/html\n"
	    "B4<2 d3 text/html T\n"
	    "E4 raw=\"<b>html</b>\"\n"
	    "E2\n"
	    "H5 Content-Type: image/png\n"
	    "B5<1 d2 image/png\n"
	    "E5 raw=\"PNG\"\n"
	    "E1\n"
	    "B6<0 d1 text/plain TN\n"
	    "E6 raw=\"last\"\n"
	    "E0\n");
}

static void
test_message_rfc822(void **state)
{
	CHECK("rfc822",
	    "Content-Type: multipart/mixed; boundary=x\r\n"
	    "\r\n"
	    "--x\r\n"
	    "Content-Type: message/rfc822\r\n"
	    "\r\n"
	    "From: inner@example.org\r\n"
	    "Subject: =?iso-8859-1?q?inner_caf=E9?=\r\n"
	    "Content-Type: multipart/mixed; boundary=y\r\n"
	    "\r\n"
	    "--y\r\n"
	    "Content-Type: application/zip; name=a.zip\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "UEsDBA==\r\n"
	    "--y--\r\n"
	    "--x--\r\n",
	    "H0 Content-Type: multipart/mixed; boundary=x\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "H1 Content-Type: message/rfc822\n"
	    "B1<0 d1 message/rfc822 G\n"
	    "H2 From: inner@example.org\n"
	    "H2 Subject: inner caf\\xc3\\xa9 [raw  =?iso-8859-1?q?inner_caf=E9?=]\n"
	    "H2 Content-Type: multipart/mixed; boundary=y\n"
	    "B2<1 d2 multipart/mixed M\n"
	    "H3 Content-Type: application/zip; name=a.zip\n"
	    "H3 Content-Transfer-Encoding: base64\n"
	    "B3<2 d3 application/zip cte=base64 fn=\"a.zip\"\n"
	    "E3 raw=\"UEsDBA==\" dec=\"PK\\x03\\x04\"\n"
	    "E2\n"
	    "E1\n"
	    "E0\n");
	/* an encoded message/rfc822 stays a leaf (RFC 2045 6.4) */
	CHECK("rfc822 base64",
	    "Content-Type: message/rfc822\r\n"
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "U3ViamVjdDogeA0KDQpi\r\n",
	    "H0 Content-Type: message/rfc822\n"
	    "H0 Content-Transfer-Encoding: base64\n"
	    "A0 CTE_CONTAINER\n"
	    "B0<-1 d0 message/rfc822 cte=base64 O\n"
	    "E0 raw=\"U3ViamVjdDogeA0KDQpi\\r\\n\" dec=\"Subject: x\\r\\n\\r\\nb\"\n");
	/* multipart/digest: children default to message/rfc822 */
	CHECK("digest",
	    "Content-Type: multipart/digest; boundary=d\r\n"
	    "\r\n"
	    "--d\r\n"
	    "\r\n"
	    "Subject: one\r\n"
	    "\r\n"
	    "1\r\n"
	    "--d--\r\n",
	    "H0 Content-Type: multipart/digest; boundary=d\n"
	    "B0<-1 d0 multipart/digest M\n"
	    "B1<0 d1 message/rfc822 GN\n"
	    "H2 Subject: one\n"
	    "B2<1 d2 text/plain TN\n"
	    "E2 raw=\"1\"\n"
	    "E1\n"
	    "E0\n");
}

static void
test_broken_structure(void **state)
{
	/* no closing boundary anywhere */
	CHECK("missing close",
	    "Content-Type: multipart/mixed; boundary=m\r\n"
	    "\r\n"
	    "--m\r\n"
	    "\r\n"
	    "one\r\n"
	    "--m\r\n"
	    "\r\n"
	    "two\r\n",
	    "H0 Content-Type: multipart/mixed; boundary=m\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "B1<0 d1 text/plain TN\n"
	    "E1 raw=\"one\"\n"
	    "B2<0 d1 text/plain TN\n"
	    "E2 raw=\"two\\r\\n\"\n"
	    "A0 NO_CLOSE\n"
	    "E0\n");
	/* the outer boundary closes an inner multipart that never closed */
	CHECK("outer closes inner",
	    "Content-Type: multipart/mixed; boundary=out\r\n"
	    "\r\n"
	    "--out\r\n"
	    "Content-Type: multipart/alternative; boundary=in\r\n"
	    "\r\n"
	    "--in\r\n"
	    "\r\n"
	    "inner\r\n"
	    "--out\r\n"
	    "\r\n"
	    "next\r\n"
	    "--out--",
	    "H0 Content-Type: multipart/mixed; boundary=out\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "H1 Content-Type: multipart/alternative; boundary=in\n"
	    "B1<0 d1 multipart/alternative M\n"
	    "B2<1 d2 text/plain TN\n"
	    "E2 raw=\"inner\"\n"
	    "A1 NO_CLOSE\n"
	    "E1\n"
	    "B3<0 d1 text/plain TN\n"
	    "E3 raw=\"next\"\n"
	    "E0\n");
	/* lines that look like boundaries but are not */
	CHECK("near misses",
	    "Content-Type: multipart/mixed; boundary=\"abc\"\r\n"
	    "\r\n"
	    "--abc\r\n"
	    "\r\n"
	    "--abcd\r\n"
	    "--ab\r\n"
	    "-- abc\r\n"
	    "---abc\r\n"
	    "x--abc\r\n"
	    "--abc-\r\n"
	    "--abc--x\r\n"
	    "--abc \tjunk\r\n"
	    "--abc\rX\r\n"
	    "--abc  \t\r\n"
	    "\r\n"
	    "after ws boundary\r\n"
	    "--abc-- \r\n"
	    "--abc\r\n"
	    "epilogue, not a part\r\n",
	    "H0 Content-Type: multipart/mixed; boundary=\"abc\"\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "B1<0 d1 text/plain TN\n"
	    "A1 BARE_CR\n"
	    "E1 raw=\"--abcd\\r\\n--ab\\r\\n-- abc\\r\\n---abc\\r\\nx--abc\\r\\n--abc-\\r\\n"
	    "--abc--x\\r\\n--abc \\tjunk\\r\\n--abc\\rX\"\n"
	    "B2<0 d1 text/plain TN\n"
	    "E2 raw=\"after ws boundary\"\n"
	    "E0\n");
	/* a part cut short by the next boundary; bare LF line ends */
	CHECK("cut header, bare LF",
	    "Content-Type: multipart/mixed; boundary=q\n"
	    "\n"
	    "--q\n"
	    "Content-Type: text/plain\n"
	    "--q\n"
	    "\n"
	    "lf body\n"
	    "--q--\n",
	    "A0 BARE_LF\n"
	    "H0 Content-Type: multipart/mixed; boundary=q\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "A1 BARE_LF\n"
	    "H1 Content-Type: text/plain\n"
	    "A1 HEADER_CUT\n"
	    "B1<0 d1 text/plain T\n"
	    "E1\n"
	    "A2 BARE_LF\n"
	    "B2<0 d1 text/plain TN\n"
	    "E2 raw=\"lf body\"\n"
	    "E0\n");
	/* multipart without a usable boundary: one opaque leaf */
	CHECK("no boundary",
	    "Content-Type: multipart/mixed\r\n"
	    "\r\n"
	    "--x\r\n",
	    "H0 Content-Type: multipart/mixed\n"
	    "A0 NO_BOUNDARY\n"
	    "B0<-1 d0 multipart/mixed O\n"
	    "E0 raw=\"--x\\r\\n\"\n");
	CHECK("closed with no parts",
	    "Content-Type: multipart/mixed; boundary=e\r\n"
	    "\r\n"
	    "--e--\r\n",
	    "H0 Content-Type: multipart/mixed; boundary=e\n"
	    "B0<-1 d0 multipart/mixed M\n"
	    "A0 NO_PARTS\n"
	    "E0\n");
	/* a boundary of 71 characters is not one (RFC 2046 5.1.1) */
	char msg[512];
	const char *b71 = "12345678901234567890123456789012345678901234567890123456789012345678901";
	snprintf(msg, sizeof(msg), "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n--%s\r\n", b71, b71);
	char *log = check("long boundary", msg, strlen(msg), NULL, NULL, NULL);
	if (strstr(log, "A0 NO_BOUNDARY\n") == NULL)
		fail_msg("long boundary: got\n%s\nwant NO_BOUNDARY", log);
	free(log);
	/* 70 is */
	snprintf(msg, sizeof(msg), "Content-Type: multipart/mixed; boundary=\"%.70s\"\r\n\r\n--%.70s\r\n\r\nin\r\n--%.70s--\r\n",
	    b71, b71, b71);
	log = check("70 boundary", msg, strlen(msg), NULL, NULL, NULL);
	if (strstr(log, "E1 raw=\"in\"\n") == NULL || strstr(log, "\nA") != NULL)
		fail_msg("70 boundary: got\n%s\nwant part 1 \"in\", no anomaly", log);
	free(log);
}

static void
test_base64_bodies(void **state)
{
	CHECK("broken base64",
	    "Content-Transfer-Encoding: base64\r\n"
	    "\r\n"
	    "SGVs!bG8=\r\n"
	    "V29y*bGQ\r\n",
	    "H0 Content-Transfer-Encoding: base64\n"
	    "B0<-1 d0 text/plain cte=base64 TN\n"
	    "A0 B64_GARBAGE\n"
	    "A0 B64_TRUNCATED\n"
	    "E0 raw=\"SGVs!bG8=\\r\\nV29y*bGQ\\r\\n\" dec=\"HelloWorld\"\n");
	CHECK("qp invalid",
	    "Content-Transfer-Encoding: quoted-printable\r\n"
	    "\r\n"
	    "a=ZZb=\r\n",
	    "H0 Content-Transfer-Encoding: quoted-printable\n"
	    "B0<-1 d0 text/plain cte=qp TN\n"
	    "A0 QP_INVALID\n"
	    "E0 raw=\"a=ZZb=\\r\\n\" dec=\"a=ZZb\"\n");
	/* charsets in the UTF8 view */
	CHECK("iso-8859-2 text",
	    "Content-Type: text/plain; charset=ISO-8859-2\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"
	    "\r\n"
	    "\xb1\r\n",
	    "H0 Content-Type: text/plain; charset=ISO-8859-2\n"
	    "H0 Content-Transfer-Encoding: 8bit\n"
	    "B0<-1 d0 text/plain cs=iso-8859-2 cte=8bit T\n"
	    "E0 raw=\"\\xb1\\r\\n\" utf8=\"\\xc4\\x85\\r\\n\"\n");
	CHECK("unknown charset",
	    "Content-Type: text/plain; charset=x-martian\r\n"
	    "\r\n"
	    "ok\r\n",
	    "H0 Content-Type: text/plain; charset=x-martian\n"
	    "A0 CHARSET_UNKNOWN\n"
	    "B0<-1 d0 text/plain cs=x-martian T\n"
	    "E0 raw=\"ok\\r\\n\"\n");
}

/* a large base64 attachment, wrapped at 76 and unwrapped: decoded exactly */
static void
test_base64_large(void **state)
{
	for (int wrap = 0; wrap <= 76; wrap += 76) {
		size_t n = 20000;
		uint8_t *bin = malloc(n);
		for (size_t k = 0; k < n; k++)
			bin[k] = (uint8_t)(rng() >> 32);
		struct buf enc = { 0 }, msg = { 0 };
		b64_encode(bin, n, (size_t)wrap, &enc);
		buf_fmt(&msg, "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
		    "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n");
		buf_put(&msg, enc.p, enc.n);
		buf_fmt(&msg, "\r\n--zz--\r\n");
		char *log = check(wrap ? "base64 wrapped" : "base64 unwrapped", msg.p, msg.n, NULL, NULL, NULL);
		struct buf want = { 0 };
		buf_put(&want, " dec=\"", 6);
		buf_esc(&want, bin, n);
		buf_put(&want, "\"\n", 2);
		if (strstr(log, want.p) == NULL || strstr(log, "\nA") != NULL)
			fail_msg("base64 wrap %d: decoded bytes differ or anomalies:\n%.300s", wrap, log);
		free(log);
		free(want.p);
		free(enc.p);
		free(msg.p);
		free(bin);
	}
}

static void
test_absurd_nesting(void **state)
{
	struct buf msg = { 0 };
	int levels = 1000;
	for (int k = 0; k < levels; k++)
		buf_fmt(&msg, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", k, k);
	buf_fmt(&msg, "\r\ndeep\r\n");
	for (int k = levels; k-- > 0;)
		buf_fmt(&msg, "--b%d--\r\n", k);
	struct scan_mime_stats st;
	char *log = check("1000 levels", msg.p, msg.n, NULL, NULL, &st);
	if (st.max_depth != 16 || st.parts != 17)
		fail_msg("1000 levels: got depth %u parts %u, want 16 17", st.max_depth, st.parts);
	if (strstr(log, "A16 NESTING\n") == NULL || strstr(log, "B16<15 d16 multipart/mixed O\n") == NULL)
		fail_msg("1000 levels: got\n%.2000s\nwant NESTING at part 16, opaque", log);
	free(log);
	/* a lower limit */
	struct scan_mime_limits lim = { .max_depth = 3 };
	log = check("1000 levels, depth 3", msg.p, msg.n, &lim, NULL, &st);
	if (st.max_depth != 3 || st.parts != 4)
		fail_msg("depth 3: got depth %u parts %u, want 3 4", st.max_depth, st.parts);
	free(log);
	/* 1000 nested message/rfc822 */
	struct buf m2 = { 0 };
	for (int k = 0; k < levels; k++)
		buf_fmt(&m2, "Content-Type: message/rfc822\r\n\r\n");
	buf_fmt(&m2, "Subject: bottom\r\n\r\nbody\r\n");
	log = check("1000 messages", m2.p, m2.n, NULL, NULL, &st);
	if (st.max_depth != 16 || st.parts != 17 || strstr(log, "A16 NESTING\n") == NULL)
		fail_msg("1000 messages: got depth %u parts %u, want 16 17 and NESTING", st.max_depth, st.parts);
	free(log);
	free(msg.p);
	free(m2.p);
}

static void
test_many_parts(void **state)
{
	struct buf msg = { 0 };
	buf_fmt(&msg, "Content-Type: multipart/mixed; boundary=p\r\n\r\n");
	for (int k = 0; k < 10000; k++)
		buf_fmt(&msg, "--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n", k);
	buf_fmt(&msg, "--p--\r\n");
	struct scan_mime_stats st;
	char *log = check("10000 parts", msg.p, msg.n, NULL, NULL, &st);
	if (st.parts != 1024 || st.count[SCAN_MIME_A_PARTS] != 1 || st.skipped_bytes == 0)
		fail_msg("10000 parts: got %u parts, %u PARTS, %llu skipped; want 1024, 1, >0",
		    st.parts, st.count[SCAN_MIME_A_PARTS], (unsigned long long)st.skipped_bytes);
	if (strstr(log, "E1023 raw=\"part 1022\"\n") == NULL || strstr(log, "B1024") != NULL)
		fail_msg("10000 parts: last parts wrong");
	free(log);
	struct scan_mime_limits lim = { .max_parts = 5 };
	log = check("10000 parts, limit 5", msg.p, msg.n, &lim, NULL, &st);
	assert_int_equal(st.parts, 5);
	free(log);
	free(msg.p);
}

static void
test_header_limits(void **state)
{
	struct buf msg = { 0 };
	buf_fmt(&msg, "Subject: ");
	for (int k = 0; k < 200; k++)
		buf_fmt(&msg, "word%03d ", k);
	buf_fmt(&msg, "\r\nX-After: kept\r\n\r\nbody\r\n");
	struct scan_mime_limits lim = { .max_header_line = 100 };
	char *log = check("long header", msg.p, msg.n, &lim, NULL, NULL);
	if (strstr(log, "A0 HEADER_LONG\n") == NULL || strstr(log, "H0 X-After: kept\n") == NULL ||
	    strstr(log, "H0 Subject: word000 word001 ") == NULL)
		fail_msg("long header: got\n%s", log);
	free(log);
	lim = (struct scan_mime_limits){ .max_header_bytes = 40 };
	const char *hb = "A: 0123456789\r\nB: 0123456789\r\nC: 0123456789\r\n"
	    "Content-Type: text/html\r\n\r\nbody\r\n";
	log = check("header bytes", hb, strlen(hb), &lim,
	    "H0 A: 0123456789\n"
	    "H0 B: 0123456789\n"
	    "A0 HEADERS_BIG\n"
	    "B0<-1 d0 text/plain TN\n"
	    "E0 raw=\"body\\r\\n\"\n", NULL);
	free(log);
	free(msg.p);
}

/* a message whose last byte is the last byte before a PROT_NONE page, all shapes */
static void
test_guard_page_ends(void **state)
{
	static const char *const ends[] = {
		"Subject: x", "Subject: x\r", "Subject: x\r\n", "Subject: x\r\n ",
		"Content-Type: multipart/mixed; boundary=g\r\n\r\n--g",
		"Content-Type: multipart/mixed; boundary=g\r\n\r\n--g\r\n\r\nab\r\n--g-",
		"Content-Type: multipart/mixed; boundary=g\r\n\r\n--g\r\n\r\nab\r\n--g--",
		"Content-Type: multipart/mixed; boundary=g\r\n\r\n--g\r\n\r\nab\r",
		"Content-Transfer-Encoding: base64\r\n\r\nQUJD",
		"Content-Transfer-Encoding: base64\r\n\r\nQU",
		"Content-Transfer-Encoding: quoted-printable\r\n\r\na=4",
		"Content-Transfer-Encoding: quoted-printable\r\n\r\na=",
		"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe2\x82",
		"Content-Type: text/plain; charset=shift_jis\r\n\r\n\x82",
		"Subject: =?utf-8?q?a?=",
	};
	for (size_t k = 0; k < sizeof(ends) / sizeof(ends[0]); k++)
		free(check(ends[k], ends[k], strlen(ends[k]), NULL, NULL, NULL));
}

/* body events are spans, not lines */
static void
test_large_spans(void **state)
{
	struct buf msg = { 0 };
	buf_fmt(&msg, "Content-Type: multipart/mixed; boundary=s\r\n\r\n--s\r\n\r\n");
	for (int k = 0; k < 500; k++)
		buf_fmt(&msg, "line %d of a plain body that has many short lines\r\n", k);
	buf_fmt(&msg, "--s--\r\n");
	struct log l = { 0 };
	struct scan_mime *m = new_parser(NULL, &l);
	scan_mime_feed(m, (const uint8_t *)msg.p, msg.n);
	scan_mime_finish(m);
	scan_mime_fini(m);
	free(m);
	/* RAW + DECODED + UTF8 for one leaf in one chunk: 3 calls */
	if (l.body_calls != 3)
		fail_msg("got %zu body calls, want 3 (one span per view)", l.body_calls);
	log_free(&l);
	free(msg.p);
}

/* reset keeps working and keeps the iconv cache */
static void
test_reset(void **state)
{
	struct log l = { 0 };
	struct scan_mime *m = new_parser(NULL, &l);
	const char *msg = "Content-Type: text/plain; charset=koi8-r\r\n\r\n\xf0\r\n";
	for (int k = 0; k < 3; k++) {
		scan_mime_reset(m);
		scan_mime_feed(m, (const uint8_t *)msg, strlen(msg));
		scan_mime_finish(m);
		assert_int_equal(m->stats.parts, 1);
	}
	if (m->cs.opens != 1)
		fail_msg("got %u iconv_open calls over 3 messages, want 1", m->cs.opens);
	scan_mime_fini(m);
	free(m);
	log_free(&l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_text),
		cmocka_unit_test(test_folded_headers),
		cmocka_unit_test(test_multipart_alternative),
		cmocka_unit_test(test_mixed_attachments),
		cmocka_unit_test(test_nested_3_deep),
		cmocka_unit_test(test_message_rfc822),
		cmocka_unit_test(test_broken_structure),
		cmocka_unit_test(test_base64_bodies),
		cmocka_unit_test(test_base64_large),
		cmocka_unit_test(test_absurd_nesting),
		cmocka_unit_test(test_many_parts),
		cmocka_unit_test(test_header_limits),
		cmocka_unit_test(test_guard_page_ends),
		cmocka_unit_test(test_large_spans),
		cmocka_unit_test(test_reset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
