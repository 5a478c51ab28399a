/*
 * mime.c - streaming MIME parser. Contract in mime.h.
 *
 * How it works: a line scanner (memchr for LF) feeds one of two consumers:
 * the header collector (ST_HDR) or a body state (leaf, preamble, epilogue,
 * skipped part). Body bytes go out as spans as large as the chunk allows;
 * a line end is held back only where the next line may be a boundary (it
 * starts with '-' or is not here yet), because the CRLF before "--b" is
 * part of the delimiter (RFC 2046 5.1.1). A line that may be a boundary is
 * copied into lbuf (at most SCAN_MIME_LINE_MAX bytes) until it is decided.
 */
#include "scan/mime.h"

#include <string.h>
#include <strings.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

enum { ST_HDR, ST_LEAF, ST_PRE, ST_EPI, ST_SKIP, ST_DONE };
enum { M_NO, M_MAYBE, M_YES };
enum { SEEN_CT = 1, SEEN_CTE = 2, SEEN_CD = 4 };

static const struct scan_mime_limits defaults = {
	.max_depth = 16,
	.max_parts = 1024,
	.max_boundaries = 16,
	.max_header_line = SCAN_MIME_HDR_MAX,
	.max_header_bytes = 65536,
};

/* ---- events ------------------------------------------------------------- */

static uint32_t
cur_index(const struct scan_mime *m)
{
	if (m->state == ST_HDR || m->state == ST_LEAF || m->nframes == 0)
		return m->part.index;
	return m->frame[m->nframes - 1].part;
}

/* Reports a to the sink; repeats for the same part in a row are folded. */
static void
anomaly_at(struct scan_mime *m, uint32_t part, enum scan_mime_anomaly a)
{
	if (m->aowner != part) {
		m->aowner = part;
		m->amask = 0;
	}
	if (m->amask & 1u << a)
		return;
	m->amask |= 1u << a;
	m->stats.anomalies |= 1u << a;
	m->stats.count[a]++;
	if (m->sink.anomaly)
		m->sink.anomaly(m->ctx, part, a);
}

static void
anomaly(struct scan_mime *m, enum scan_mime_anomaly a)
{
	anomaly_at(m, cur_index(m), a);
}

/* A CR inside a line. In a header it is reported at the line end, so that
 * the order of events does not depend on where the input was cut. */
static void
check_cr(struct scan_mime *m, const uint8_t *s, size_t n)
{
	if (n && memchr(s, '\r', n) != NULL) {
		if (m->state == ST_HDR)
			m->hcr = 1;
		else
			anomaly(m, SCAN_MIME_A_BARE_CR);
	}
}

static void
end_event(struct scan_mime *m, uint32_t index, uint16_t depth, uint32_t flags,
    uint64_t raw, uint64_t dec)
{
	struct scan_mime_end e = {
		.index = index, .depth = depth, .flags = flags,
		.raw_bytes = raw, .decoded_bytes = dec,
	};
	if (m->sink.part_end)
		m->sink.part_end(m->ctx, &e);
}

/* ---- leaf bodies ---------------------------------------------------------- */

static void
put_utf8(struct scan_mime *m, const uint8_t *s, size_t n)
{
	size_t same = scan_conv_same(&m->conv, s, n);

	if (same && m->sink.body)       /* already UTF-8: no copy */
		m->sink.body(m->ctx, &m->part, SCAN_MIME_UTF8, s, same);
	s += same;
	n -= same;
	while (n > 0) {
		size_t used = 0;
		size_t w = scan_conv_run(&m->conv, s, n, &used, m->ubuf, sizeof(m->ubuf));
		if (w && m->sink.body)
			m->sink.body(m->ctx, &m->part, SCAN_MIME_UTF8, m->ubuf, w);
		s += used;
		n -= used;
		if (used == 0 && w == 0)
			break;          /* cannot happen with SCAN_MIME_BUF; no spinning */
	}
}

static void
put_decoded(struct scan_mime *m, const uint8_t *s, size_t n)
{
	if (n == 0)
		return;
	m->decoded_bytes += n;
	if (m->sink.body)
		m->sink.body(m->ctx, &m->part, SCAN_MIME_DECODED, s, n);
	if (m->part.flags & SCAN_MIME_P_TEXT)
		put_utf8(m, s, n);
}

static void
leaf_text(struct scan_mime *m, const uint8_t *s, size_t n)
{
	m->raw_bytes += n;
	if (m->sink.body)
		m->sink.body(m->ctx, &m->part, SCAN_MIME_RAW, s, n);
	if (m->part.cte == SCAN_MIME_CTE_BASE64) {
		while (n > 0) {
			size_t piece = MIN(n, (sizeof(m->dbuf) - 3) / 3 * 4);
			put_decoded(m, m->dbuf, scan_b64_decode(&m->b64, s, piece, m->dbuf));
			s += piece;
			n -= piece;
		}
	} else if (m->part.cte == SCAN_MIME_CTE_QP) {
		while (n > 0) {
			size_t piece = MIN(n, sizeof(m->dbuf) - SCAN_QP_WS - 4);
			put_decoded(m, m->dbuf, scan_qp_decode(&m->qp, s, piece, m->dbuf));
			s += piece;
			n -= piece;
		}
	} else {
		put_decoded(m, s, n);
	}
}

static void
leaf_end(struct scan_mime *m)
{
	if (m->part.cte == SCAN_MIME_CTE_BASE64) {
		put_decoded(m, m->dbuf, scan_b64_finish(&m->b64, m->dbuf));
		if (m->b64.garbage)
			anomaly(m, SCAN_MIME_A_B64_GARBAGE);
		if (m->b64.truncated || m->b64.after_pad)
			anomaly(m, SCAN_MIME_A_B64_TRUNCATED);
	} else if (m->part.cte == SCAN_MIME_CTE_QP) {
		put_decoded(m, m->dbuf, scan_qp_finish(&m->qp, m->dbuf));
		if (m->qp.invalid)
			anomaly(m, SCAN_MIME_A_QP_INVALID);
	}
	if (m->part.flags & SCAN_MIME_P_TEXT) {
		size_t w = scan_conv_finish(&m->conv, m->ubuf, sizeof(m->ubuf));
		if (w && m->sink.body)
			m->sink.body(m->ctx, &m->part, SCAN_MIME_UTF8, m->ubuf, w);
		if (m->conv.invalid)
			anomaly(m, SCAN_MIME_A_CHARSET_INVALID);
	}
	end_event(m, m->part.index, m->part.depth, m->part.flags, m->raw_bytes, m->decoded_bytes);
}

/* ---- parts ------------------------------------------------------------- */

static void
set_str(char *dst, size_t cap, const char *src, size_t n)
{
	n = MIN(n, cap - 1);
	for (size_t k = 0; k < n; k++) {
		char c = src[k];
		dst[k] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	dst[n] = '\0';
}

static void
begin_part(struct scan_mime *m, uint32_t parent, uint16_t depth, bool digest)
{
	struct scan_mime_part *p = &m->part;

	p->index = m->stats.parts++;
	p->parent = parent;
	p->depth = depth;
	p->cte = SCAN_MIME_CTE_7BIT;
	p->disp = SCAN_MIME_DISP_NONE;
	p->flags = 0;
	if (digest) {   /* RFC 2046 5.1.5 */
		set_str(p->type, sizeof(p->type), "message", 7);
		set_str(p->subtype, sizeof(p->subtype), "rfc822", 6);
	} else {        /* RFC 2045 5.2 */
		set_str(p->type, sizeof(p->type), "text", 4);
		set_str(p->subtype, sizeof(p->subtype), "plain", 5);
	}
	p->charset[0] = '\0';
	p->filename[0] = '\0';
	p->filename_len = 0;
	if (depth > m->stats.max_depth)
		m->stats.max_depth = depth;
	m->hfield = m->hdrop = m->htrunc = m->seen = 0;
	m->hline = m->hlen = 0;
	m->hbytes = 0;
	m->fname_src = 0;
	m->blen = 0;
	m->raw_bytes = m->decoded_bytes = 0;
	m->state = ST_HDR;
}

/* A new part under the top frame, or ST_SKIP past max_parts. */
static void
start_child(struct scan_mime *m)
{
	struct scan_mime_frame *fr = &m->frame[m->nframes - 1];

	fr->children++;
	if (m->stats.parts >= m->lim.max_parts) {
		anomaly_at(m, fr->part, SCAN_MIME_A_PARTS);
		m->state = ST_SKIP;
		return;
	}
	begin_part(m, fr->part, (uint16_t)(fr->depth + 1), fr->digest);
}

static void
push_frame(struct scan_mime *m, bool multipart)
{
	struct scan_mime_frame *fr = &m->frame[m->nframes++];

	memset(fr, 0, sizeof(*fr));
	fr->part = m->part.index;
	fr->depth = m->part.depth;
	fr->multipart = multipart;
	if (multipart) {
		fr->digest = strcmp(m->part.subtype, "digest") == 0;
		fr->blen = m->blen;
		memcpy(fr->boundary, m->boundary, m->blen);
		m->nbound++;
	}
}

static void
pop_frame(struct scan_mime *m)
{
	struct scan_mime_frame *fr = &m->frame[--m->nframes];

	if (fr->multipart && !fr->closed) {
		anomaly_at(m, fr->part, SCAN_MIME_A_NO_CLOSE);
		m->nbound--;
	}
	end_event(m, fr->part, fr->depth,
	    fr->multipart ? SCAN_MIME_P_MULTIPART : SCAN_MIME_P_MESSAGE, 0, 0);
}

/* ---- Content-* fields ---------------------------------------------------------- */

static bool
is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t';
}

/* first token of a field value: type/subtype, a disposition, an encoding */
static size_t
token(const uint8_t *v, size_t n, size_t *start, const char *stop)
{
	size_t k = 0;
	while (k < n && (is_wsp(v[k]) || v[k] == '"'))
		k++;
	if (k < n && v[k] == '(') {     /* a leading comment */
		int d = 0;
		for (; k < n; k++) {
			if (v[k] == '(')
				d++;
			else if (v[k] == ')' && --d == 0) {
				k++;
				break;
			}
		}
		while (k < n && is_wsp(v[k]))
			k++;
	}
	*start = k;
	while (k < n && !is_wsp(v[k]) && v[k] != ';' && v[k] != '(' && v[k] != '"' &&
	    strchr(stop, v[k]) == NULL)
		k++;
	return k - *start;
}

static void
dec_flags(struct scan_mime *m, unsigned fl)
{
	if (fl & SCAN_DEC_TRUNC)
		anomaly(m, SCAN_MIME_A_HEADER_LONG);
	if (fl & SCAN_DEC_BAD)
		anomaly(m, SCAN_MIME_A_ENCODED_WORD);
	if (fl & SCAN_DEC_CHARSET)
		anomaly(m, SCAN_MIME_A_CHARSET_UNKNOWN);
	if (fl & SCAN_DEC_INVALID)
		anomaly(m, SCAN_MIME_A_CHARSET_INVALID);
}

static void
take_filename(struct scan_mime *m, const uint8_t *v, size_t n, const char *pname, uint8_t src)
{
	struct scan_mime_part *p = &m->part;
	unsigned fl = 0;
	size_t len = 0;

	if (m->fname_src > src)
		return;
	if (scan_param_get(v, n, pname, true, (uint8_t *)p->filename, sizeof(p->filename) - 1,
	    &len, &m->cs, &fl) != 0)
		return;
	p->filename[len] = '\0';
	p->filename_len = (uint16_t)len;
	p->flags |= SCAN_MIME_P_HAS_FILENAME;
	m->fname_src = src;
	if (fl & SCAN_DEC_TRUNC)
		anomaly(m, SCAN_MIME_A_FILENAME_LONG);
	dec_flags(m, fl & ~SCAN_DEC_TRUNC);
}

static void
content_type(struct scan_mime *m, const uint8_t *v, size_t n)
{
	struct scan_mime_part *p = &m->part;
	size_t s, tl, k, ss, sl;
	uint8_t buf[SCAN_MIME_BOUNDARY_MAX + 16];
	unsigned fl = 0;
	size_t len;

	tl = token(v, n, &s, "/");
	k = s + tl;
	if (tl == 0 || k >= n || v[k] != '/')
		return;         /* not a type: the default stands (RFC 2045 5.2) */
	sl = token(v + k + 1, n - k - 1, &ss, "");
	if (sl == 0)
		return;
	set_str(p->type, sizeof(p->type), (const char *)v + s, tl);
	set_str(p->subtype, sizeof(p->subtype), (const char *)v + k + 1 + ss, sl);
	if (scan_param_get(v, n, "charset", false, buf, sizeof(buf), &len, &m->cs, &fl) == 0)
		set_str(p->charset, sizeof(p->charset), (const char *)buf, len);
	fl = 0;
	if (strcmp(p->type, "multipart") == 0 &&
	    scan_param_get(v, n, "boundary", false, buf, sizeof(buf), &len, &m->cs, &fl) == 0) {
		bool ok = len > 0 && len <= SCAN_MIME_BOUNDARY_MAX && !(fl & SCAN_DEC_TRUNC);
		for (size_t j = 0; ok && j < len; j++)
			ok = buf[j] >= 0x20 && buf[j] < 0x7f;
		if (ok) {
			memcpy(m->boundary, buf, len);
			m->blen = (uint8_t)len;
		}
	}
	take_filename(m, v, n, "name", 1);
}

static const struct {
	const char *name;
	uint8_t cte;
} cte_tab[] = {
	{ "7bit", SCAN_MIME_CTE_7BIT }, { "8bit", SCAN_MIME_CTE_8BIT },
	{ "binary", SCAN_MIME_CTE_BINARY }, { "base64", SCAN_MIME_CTE_BASE64 },
	{ "quoted-printable", SCAN_MIME_CTE_QP },
};

static void
content_cte(struct scan_mime *m, const uint8_t *v, size_t n)
{
	size_t s, tl = token(v, n, &s, "");

	for (size_t k = 0; k < sizeof(cte_tab) / sizeof(cte_tab[0]); k++)
		if (tl == strlen(cte_tab[k].name) &&
		    strncasecmp((const char *)v + s, cte_tab[k].name, tl) == 0) {
			m->part.cte = cte_tab[k].cte;
			return;
		}
	anomaly(m, SCAN_MIME_A_CTE_UNKNOWN);
}

static void
content_disp(struct scan_mime *m, const uint8_t *v, size_t n)
{
	size_t s, tl = token(v, n, &s, "");

	if (tl == 6 && strncasecmp((const char *)v + s, "inline", 6) == 0)
		m->part.disp = SCAN_MIME_DISP_INLINE;
	else if (tl == 10 && strncasecmp((const char *)v + s, "attachment", 10) == 0)
		m->part.disp = SCAN_MIME_DISP_ATTACHMENT;
	else
		m->part.disp = SCAN_MIME_DISP_OTHER;
	take_filename(m, v, n, "filename", 2);
}

/* ---- header fields ------------------------------------------------------------ */

static bool
name_is(const uint8_t *s, size_t n, const char *lit)
{
	return n == strlen(lit) && strncasecmp((const char *)s, lit, n) == 0;
}

/* The field in hbuf is complete: report it, and read it if it is Content-*. */
static void
hdr_emit(struct scan_mime *m)
{
	m->hfield = 0;
	if (m->hdrop)
		return;
	const uint8_t *h = m->hbuf;
	const uint8_t *colon = memchr(h, ':', m->hlen);
	if (colon == NULL || colon == h) {
		anomaly(m, SCAN_MIME_A_HEADER_BAD);
		return;
	}
	size_t nl = (size_t)(colon - h);
	while (nl > 0 && is_wsp(h[nl - 1]))
		nl--;
	for (size_t k = 0; k < nl; k++)
		if (h[k] <= ' ' || h[k] >= 0x7f) {
			anomaly(m, SCAN_MIME_A_HEADER_BAD);
			return;
		}
	const uint8_t *raw = colon + 1;
	size_t rl = m->hlen - (size_t)(raw - h);
	for (size_t k = 0; k < rl; k++) {
		if (raw[k] >= 0x80)
			anomaly(m, SCAN_MIME_A_HEADER_8BIT);
		else if (raw[k] == 0)
			anomaly(m, SCAN_MIME_A_HEADER_NUL);
	}

	/* unfold (RFC 5322 2.2.3) into dbuf, blanks at both ends cut */
	size_t ul = 0;
	for (size_t k = 0; k < rl; k++)
		if (raw[k] != '\r' && raw[k] != '\n')
			m->dbuf[ul++] = raw[k];
	size_t us = 0;
	while (us < ul && is_wsp(m->dbuf[us]))
		us++;
	while (ul > us && is_wsp(m->dbuf[ul - 1]))
		ul--;
	const uint8_t *uv = m->dbuf + us;
	ul -= us;

	unsigned fl = 0;
	size_t vl = scan_rfc2047_decode(uv, ul, m->ubuf, sizeof(m->ubuf), &m->cs, &fl);
	dec_flags(m, fl);
	if (m->sink.header) {
		struct scan_mime_hdr ev = {
			.part = m->part.index, .depth = m->part.depth,
			.name = (const char *)h, .name_len = nl,
			.value = m->ubuf, .value_len = vl,
			.raw = raw, .raw_len = rl,
		};
		m->sink.header(m->ctx, &ev);
	}

	uint8_t bit = 0;
	if (name_is(h, nl, "content-type"))
		bit = SEEN_CT;
	else if (name_is(h, nl, "content-transfer-encoding"))
		bit = SEEN_CTE;
	else if (name_is(h, nl, "content-disposition"))
		bit = SEEN_CD;
	if (bit == 0)
		return;
	if (m->seen & bit) {
		anomaly(m, SCAN_MIME_A_DUPLICATE);      /* the first one stands */
		return;
	}
	m->seen |= bit;
	if (bit == SEEN_CT)
		content_type(m, uv, ul);
	else if (bit == SEEN_CTE)
		content_cte(m, uv, ul);
	else
		content_disp(m, uv, ul);
}

static void
hdr_append(struct scan_mime *m, const uint8_t *s, size_t n)
{
	if (m->hdrop)
		return;
	size_t room = m->lim.max_header_line - m->hlen;
	if (n > room) {
		if (!m->htrunc)
			anomaly(m, SCAN_MIME_A_HEADER_LONG);
		m->htrunc = 1;
		n = room;
	}
	memcpy(m->hbuf + m->hlen, s, n);
	m->hlen += (uint32_t)n;
}

static void
hdr_text(struct scan_mime *m, const uint8_t *s, size_t n)
{
	if (n == 0)
		return;
	if (m->hline == 0) {
		if (is_wsp(s[0]) && m->hfield) {
			hdr_append(m, m->hfold, m->hfold_len);  /* a continuation */
		} else {
			if (m->hfield)
				hdr_emit(m);
			if (is_wsp(s[0]))
				anomaly(m, SCAN_MIME_A_HEADER_BAD);     /* continues nothing */
			m->hfield = 1;
			m->hlen = 0;
			m->htrunc = 0;
			m->hdrop = is_wsp(s[0]);
		}
	}
	/* bytes up to the limit first, so that HEADER_LONG and HEADERS_BIG
	 * come in input order whatever the chunks */
	size_t keep = n, lim = m->lim.max_header_bytes;
	if (m->hbytes + n > lim)
		keep = m->hbytes < lim ? lim - (size_t)m->hbytes : 0;
	m->hline += n;
	hdr_append(m, s, keep);
	m->hbytes += n;
	if (keep < n) {
		if (!m->hdrop)
			anomaly(m, SCAN_MIME_A_HEADERS_BIG);
		m->hdrop = 1;
	}
	if (m->hdrop)
		m->stats.skipped_bytes += n;
}

static void hdr_done(struct scan_mime *m, bool cut);

static void
hdr_eol(struct scan_mime *m, bool crlf)
{
	if (m->hcr)
		anomaly(m, SCAN_MIME_A_BARE_CR);
	if (!crlf)
		anomaly(m, SCAN_MIME_A_BARE_LF);
	m->hcr = 0;
	m->hbytes += crlf ? 2 : 1;
	if (m->hline == 0) {
		hdr_done(m, false);     /* the empty line */
		return;
	}
	m->hline = 0;
	m->hfold_len = 0;
	if (crlf)
		m->hfold[m->hfold_len++] = '\r';
	m->hfold[m->hfold_len++] = '\n';
}

/* The header of the current part is over (cut: by a boundary or the end). */
static void
hdr_done(struct scan_mime *m, bool cut)
{
	struct scan_mime_part *p = &m->part;

	if (m->hcr)
		anomaly(m, SCAN_MIME_A_BARE_CR);
	m->hcr = 0;
	if (m->hfield)
		hdr_emit(m);
	if (!(m->seen & SEEN_CT))
		p->flags |= SCAN_MIME_P_NO_CTYPE;
	if (cut)
		anomaly(m, SCAN_MIME_A_HEADER_CUT);

	bool multi = strcmp(p->type, "multipart") == 0;
	bool msg = strcmp(p->type, "message") == 0 &&
	    (strcmp(p->subtype, "rfc822") == 0 || strcmp(p->subtype, "global") == 0);
	bool encoded = p->cte == SCAN_MIME_CTE_BASE64 || p->cte == SCAN_MIME_CTE_QP;

	m->bol = 1;
	if ((multi || msg) && !cut) {
		enum scan_mime_anomaly why = SCAN_MIME_A_COUNT;
		if (multi && m->blen == 0)
			why = SCAN_MIME_A_NO_BOUNDARY;
		else if (encoded)
			why = SCAN_MIME_A_CTE_CONTAINER;
		else if (p->depth >= m->lim.max_depth)
			why = SCAN_MIME_A_NESTING;
		else if (multi && m->nbound >= m->lim.max_boundaries)
			why = SCAN_MIME_A_BOUNDARIES;
		if (why == SCAN_MIME_A_COUNT) {
			p->flags |= multi ? SCAN_MIME_P_MULTIPART : SCAN_MIME_P_MESSAGE;
			if (m->sink.part_begin)
				m->sink.part_begin(m->ctx, p);
			push_frame(m, multi);
			if (multi) {
				m->state = ST_PRE;
			} else {
				start_child(m);
			}
			return;
		}
		anomaly(m, why);
		p->flags |= SCAN_MIME_P_OPAQUE;
	} else if (multi || msg) {
		p->flags |= SCAN_MIME_P_OPAQUE;
	}

	/* a leaf */
	if (strcmp(p->type, "text") == 0 && !(p->flags & SCAN_MIME_P_OPAQUE)) {
		p->flags |= SCAN_MIME_P_TEXT;
		if (scan_conv_open(&m->conv, &m->cs, p->charset, strlen(p->charset)) != 0)
			anomaly(m, SCAN_MIME_A_CHARSET_UNKNOWN);
	}
	scan_b64_init(&m->b64);
	scan_qp_init(&m->qp);
	if (m->sink.part_begin)
		m->sink.part_begin(m->ctx, p);
	m->state = ST_LEAF;
	if (cut) {
		leaf_end(m);
		m->state = ST_SKIP;     /* nothing more of this part; the caller moves on */
	}
}

/* ---- the line scanner --------------------------------------------------------- */

static void
put_text(struct scan_mime *m, const uint8_t *s, size_t n)
{
	if (n == 0)
		return;
	switch (m->state) {
	case ST_HDR:
		hdr_text(m, s, n);
		break;
	case ST_LEAF:
		leaf_text(m, s, n);
		break;
	case ST_PRE:
		m->stats.preamble_bytes += n;
		break;
	case ST_EPI:
		m->stats.epilogue_bytes += n;
		break;
	default:
		m->stats.skipped_bytes += n;
		break;
	}
}

/* Is s[0..n) (no LF; final: the whole line, maybe with its CR) a delimiter line? */
static int
match(const struct scan_mime *m, const uint8_t *s, size_t n, bool final, unsigned *which, bool *close)
{
	int best = M_NO;

	if ((n >= 1 && s[0] != '-') || (n >= 2 && s[1] != '-'))
		return M_NO;
	if (n < 2)
		return final ? M_NO : M_MAYBE;
	for (unsigned f = m->nframes; f-- > 0;) {
		const struct scan_mime_frame *fr = &m->frame[f];
		if (!fr->multipart || fr->closed)
			continue;
		size_t bl = fr->blen;
		if (memcmp(s + 2, fr->boundary, MIN(n - 2, bl)) != 0)
			continue;
		if (n - 2 < bl) {
			best = M_MAYBE;
			continue;
		}
		const uint8_t *r = s + 2 + bl;
		size_t rl = n - 2 - bl, k = 0;
		bool cl = false;
		if (rl >= 1 && r[0] == '-') {
			if (rl == 1) {
				best = M_MAYBE;
				continue;
			}
			if (r[1] != '-')
				continue;
			cl = true;
			k = 2;
		}
		while (k < rl && is_wsp(r[k]))
			k++;
		if (k < rl && !(k + 1 == rl && r[k] == '\r'))
			continue;
		if (!final) {
			best = M_MAYBE;
			continue;
		}
		*which = f;
		*close = cl;
		return M_YES;
	}
	return final ? M_NO : best;
}

static void
boundary(struct scan_mime *m, unsigned f, bool close)
{
	m->eol_len = 0;         /* the line end before "--" is the delimiter's */
	if (m->state == ST_HDR)
		hdr_done(m, true);
	else if (m->state == ST_LEAF)
		leaf_end(m);
	while (m->nframes > f + 1)
		pop_frame(m);
	struct scan_mime_frame *fr = &m->frame[f];
	m->bol = 1;
	if (close) {
		fr->closed = 1;
		m->nbound--;
		if (fr->children == 0)
			anomaly_at(m, fr->part, SCAN_MIME_A_NO_PARTS);
		m->state = ST_EPI;
	} else {
		start_child(m);
	}
}

/* The candidate line is not a boundary: it and the held line end are text. */
static void
release(struct scan_mime *m)
{
	size_t n = m->llen;

	m->llen = 0;
	m->bol = 0;
	if (m->eol_len) {
		uint8_t e[2] = { m->eol[0], m->eol[1] };
		size_t el = m->eol_len;
		m->eol_len = 0;
		put_text(m, e, el);
	}
	if (n && m->lbuf[n - 1] == '\r') {
		n--;
		m->cr = 1;
	}
	check_cr(m, m->lbuf, n);
	put_text(m, m->lbuf, n);
}

/* At a line start that may be a delimiter: collect it into lbuf and decide. */
static size_t
candidate(struct scan_mime *m, const uint8_t *p, size_t n)
{
	size_t room = SCAN_MIME_LINE_MAX - m->llen;
	const uint8_t *q = memchr(p, '\n', MIN(n, room));
	size_t take = q ? (size_t)(q - p) : MIN(n, room);
	unsigned which = 0;
	bool close = false;

	memcpy(m->lbuf + m->llen, p, take);
	m->llen = (uint16_t)(m->llen + take);
	if (q != NULL) {
		if (match(m, m->lbuf, m->llen, true, &which, &close) == M_YES) {
			if (m->lbuf[m->llen - 1] != '\r')
				anomaly(m, SCAN_MIME_A_BARE_LF);
			m->llen = 0;
			boundary(m, which, close);
			return take + 1;
		}
		release(m);
		return take;
	}
	if (m->llen == SCAN_MIME_LINE_MAX || match(m, m->lbuf, m->llen, false, &which, &close) == M_NO)
		release(m);
	return take;
}

/* Header lines: one line (or what is here of it) per call. */
static size_t
scan_hdr(struct scan_mime *m, const uint8_t *p, size_t n)
{
	if (m->cr) {
		m->cr = 0;
		if (p[0] == '\n') {
			m->bol = 1;
			hdr_eol(m, true);
			return 1;
		}
		m->hcr = 1;
		hdr_text(m, (const uint8_t *)"\r", 1);
	}
	const uint8_t *q = memchr(p, '\n', n);
	if (q == NULL) {
		size_t end = n;
		if (p[n - 1] == '\r') {
			end--;
			m->cr = 1;
		}
		check_cr(m, p, end);
		hdr_text(m, p, end);
		return n;
	}
	size_t k = (size_t)(q - p);
	bool crlf = k > 0 && p[k - 1] == '\r';
	size_t end = crlf ? k - 1 : k;
	check_cr(m, p, end);
	hdr_text(m, p, end);
	m->bol = 1;
	hdr_eol(m, crlf);
	return k + 1;
}

/* Body states: consumes lines, emitting one span, up to a possible delimiter. */
static size_t
scan_body(struct scan_mime *m, const uint8_t *p, size_t n)
{
	size_t i = 0, span = 0;

	if (m->cr) {
		m->cr = 0;
		if (p[0] == '\n') {
			i = span = 1;
			if (m->nbound && (i == n || p[i] == '-')) {
				m->eol[0] = '\r';
				m->eol[1] = '\n';
				m->eol_len = 2;
				m->bol = 1;
				return i;
			}
			put_text(m, (const uint8_t *)"\r\n", 2);
		} else {
			anomaly(m, SCAN_MIME_A_BARE_CR);
			put_text(m, (const uint8_t *)"\r", 1);
		}
	}
	for (;;) {
		const uint8_t *q = memchr(p + i, '\n', n - i);
		if (q == NULL) {
			size_t end = n;
			if (end > i && p[end - 1] == '\r') {
				end--;
				m->cr = 1;
			}
			check_cr(m, p + i, end - i);
			put_text(m, p + span, end - span);
			return n;
		}
		size_t k = (size_t)(q - p);
		bool crlf = k > i && p[k - 1] == '\r';
		check_cr(m, p + i, (crlf ? k - 1 : k) - i);
		if (!crlf)
			anomaly(m, SCAN_MIME_A_BARE_LF);
		i = k + 1;
		if (m->nbound && (i == n || p[i] == '-')) {
			size_t eol = crlf ? k - 1 : k;
			put_text(m, p + span, eol - span);
			m->eol_len = 0;
			if (crlf)
				m->eol[m->eol_len++] = '\r';
			m->eol[m->eol_len++] = '\n';
			m->bol = 1;
			return i;
		}
	}
}

/* ---- API ---------------------------------------------------------------------- */

static unsigned
clamp(unsigned v, unsigned def, unsigned max)
{
	if (v == 0)
		return def;
	return v > max ? max : v;
}

void
scan_mime_init(struct scan_mime *m, const struct scan_mime_limits *lim,
    const struct scan_mime_sink *sink, void *ctx)
{
	const struct scan_mime_limits *l = lim ? lim : &defaults;

	memset(m, 0, offsetof(struct scan_mime, hbuf));
	m->lim.max_depth = clamp(l->max_depth, defaults.max_depth, SCAN_MIME_DEPTH_MAX);
	m->lim.max_parts = clamp(l->max_parts, defaults.max_parts, UINT32_MAX);
	m->lim.max_boundaries = clamp(l->max_boundaries, defaults.max_boundaries, SCAN_MIME_DEPTH_MAX);
	m->lim.max_header_line = clamp(l->max_header_line, defaults.max_header_line, SCAN_MIME_HDR_MAX);
	m->lim.max_header_bytes = clamp(l->max_header_bytes, defaults.max_header_bytes, UINT32_MAX);
	if (sink)
		m->sink = *sink;
	m->ctx = ctx;
	scan_cscache_init(&m->cs);
	scan_mime_reset(m);
}

void
scan_mime_reset(struct scan_mime *m)
{
	memset(&m->stats, 0, sizeof(m->stats));
	m->cr = m->eol_len = 0;
	m->llen = 0;
	m->nbound = 0;
	m->nframes = 0;
	m->aowner = UINT32_MAX;
	m->amask = 0;
	begin_part(m, UINT32_MAX, 0, false);
	m->bol = 1;
}

void
scan_mime_feed(struct scan_mime *m, const uint8_t *p, size_t n)
{
	size_t i = 0;

	if (m->state == ST_DONE)
		return;
	m->stats.bytes += n;
	while (i < n) {
		if (m->bol && m->nbound && (m->llen || p[i] == '-')) {
			i += candidate(m, p + i, n - i);
			continue;
		}
		if (m->bol) {
			m->bol = 0;
			if (m->eol_len) {
				uint8_t e[2] = { m->eol[0], m->eol[1] };
				size_t el = m->eol_len;
				m->eol_len = 0;
				put_text(m, e, el);
			}
		}
		if (m->state == ST_HDR)
			i += scan_hdr(m, p + i, n - i);
		else
			i += scan_body(m, p + i, n - i);
	}
}

void
scan_mime_finish(struct scan_mime *m)
{
	if (m->state == ST_DONE)
		return;
	if (m->llen) {
		unsigned which = 0;
		bool close = false;
		if (match(m, m->lbuf, m->llen, true, &which, &close) == M_YES) {
			m->llen = 0;
			boundary(m, which, close);
		} else {
			release(m);
		}
	}
	if (m->cr) {
		m->cr = 0;
		if (m->state == ST_HDR)
			hdr_eol(m, true);       /* a CRLF cut by the end */
		else
			put_text(m, (const uint8_t *)"\r", 1);
	}
	if (m->eol_len) {
		uint8_t e[2] = { m->eol[0], m->eol[1] };
		size_t el = m->eol_len;
		m->eol_len = 0;
		put_text(m, e, el);
	}
	if (m->state == ST_HDR)
		hdr_done(m, true);
	else if (m->state == ST_LEAF)
		leaf_end(m);
	while (m->nframes > 0)
		pop_frame(m);
	m->state = ST_DONE;
}

struct scan_mime *
scan_mime_fini(struct scan_mime *m)
{
	if (m != NULL)
		scan_cscache_fini(&m->cs);
	return NULL;
}
