/*
 * decode.c - streaming base64 / quoted-printable, charset conversion to
 * UTF-8, RFC 2047 header words and RFC 2231 parameters. Contract in decode.h.
 */
#include "scan/decode.h"

#include <errno.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- base64 (RFC 2045 6.8) --------------------------------------------- */

enum { B64_GARBAGE = 0, B64_WS = 100, B64_PAD = 101 };

/* alphabet value + 1; 0 = not base64 */
static const uint8_t b64_tab[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7,
	['H'] = 8, ['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13,
	['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19,
	['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25,
	['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31,
	['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37,
	['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
	['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
	['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55,
	['3'] = 56, ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61,
	['9'] = 62, ['+'] = 63, ['/'] = 64,
	[' '] = B64_WS, ['\t'] = B64_WS, ['\r'] = B64_WS, ['\n'] = B64_WS,
	['\v'] = B64_WS, ['\f'] = B64_WS, ['='] = B64_PAD,
};

void
scan_b64_init(struct scan_b64 *s)
{
	memset(s, 0, sizeof(*s));
}

size_t
scan_b64_decode(struct scan_b64 *s, const uint8_t *in, size_t n, uint8_t *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		if (s->nacc == 0 && !s->padded) {
			/* whole quanta straight from the input: the common case.
			 * Table value - 1 is 0..63 for the alphabet, >= 64 otherwise. */
			while (i + 4 <= n) {
				uint32_t a = (uint8_t)(b64_tab[in[i]] - 1);
				uint32_t b = (uint8_t)(b64_tab[in[i + 1]] - 1);
				uint32_t c = (uint8_t)(b64_tab[in[i + 2]] - 1);
				uint32_t d = (uint8_t)(b64_tab[in[i + 3]] - 1);
				if ((a | b | c | d) & 0xc0) {
					/* a line break between quanta: skip it here */
					if (b64_tab[in[i]] == B64_WS) {
						i++;
						continue;
					}
					break;
				}
				uint32_t v = a << 18 | b << 12 | c << 6 | d;
				out[o] = (uint8_t)(v >> 16);
				out[o + 1] = (uint8_t)(v >> 8);
				out[o + 2] = (uint8_t)v;
				o += 3;
				i += 4;
			}
			if (i >= n)
				break;
		}
		uint8_t t = b64_tab[in[i++]];
		if (t >= 1 && t <= 64) {
			if (s->padded) {
				s->after_pad++;
				s->padded = 0;
			}
			s->acc = s->acc << 6 | (uint32_t)(t - 1);
			if (++s->nacc == 4) {
				out[o++] = (uint8_t)(s->acc >> 16);
				out[o++] = (uint8_t)(s->acc >> 8);
				out[o++] = (uint8_t)s->acc;
				s->acc = 0;
				s->nacc = 0;
			}
		} else if (t == B64_WS) {
			continue;
		} else if (t == B64_PAD) {
			if (s->nacc == 2) {
				out[o++] = (uint8_t)(s->acc >> 4);
				s->padded = 2;          /* one more '=' due */
			} else if (s->nacc == 3) {
				out[o++] = (uint8_t)(s->acc >> 10);
				out[o++] = (uint8_t)(s->acc >> 2);
				s->padded = 1;
			} else if (s->nacc == 0 && s->padded == 2) {
				s->padded = 1;
			} else {
				s->garbage++;
			}
			s->acc = 0;
			s->nacc = 0;
		} else {
			s->garbage++;
		}
	}
	return o;
}

size_t
scan_b64_finish(struct scan_b64 *s, uint8_t *out)
{
	size_t o = 0;

	if (s->nacc == 1) {
		s->truncated++;
	} else if (s->nacc == 2) {
		out[o++] = (uint8_t)(s->acc >> 4);
		s->nopad++;
	} else if (s->nacc == 3) {
		out[o++] = (uint8_t)(s->acc >> 10);
		out[o++] = (uint8_t)(s->acc >> 2);
		s->nopad++;
	}
	s->acc = 0;
	s->nacc = 0;
	s->padded = 0;
	return o;
}

/* ---- quoted-printable (RFC 2045 6.7) ------------------------------------- */

enum { QP_TEXT, QP_EQ, QP_EQHEX, QP_EQWS, QP_EQCR };

static int
hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static const uint8_t qp_special[256] = {
	['='] = 1, [' '] = 1, ['\t'] = 1, ['\r'] = 1, ['\n'] = 1,
};

void
scan_qp_init(struct scan_qp *s)
{
	memset(s, 0, sizeof(*s));
}

size_t
scan_qp_decode(struct scan_qp *s, const uint8_t *in, size_t n, uint8_t *out)
{
	size_t i = 0, o = 0;

	while (i < n) {
		uint8_t c = in[i];
		switch (s->st) {
		case QP_TEXT:
			if (s->nws == 0) {
				/* run of plain bytes; a space before a plain byte is
				 * no trailing padding, so it stays in the run */
				size_t j = i;
				while (j < n && (!qp_special[in[j]] || (in[j] == ' ' && j + 1 < n &&
				    !qp_special[in[j + 1]])))
					j++;
				memcpy(out + o, in + i, j - i);
				o += j - i;
				i = j;
				if (i >= n)
					break;
				c = in[i];
			}
			i++;
			if (c == ' ' || c == '\t') {
				if (s->nws == SCAN_QP_WS) {     /* not padding after all */
					memcpy(out + o, s->ws, s->nws);
					o += s->nws;
					s->nws = 0;
				}
				s->ws[s->nws++] = c;
			} else if (c == '\r' || c == '\n') {
				s->nws = 0;     /* trailing whitespace is transport padding */
				out[o++] = c;
			} else {
				memcpy(out + o, s->ws, s->nws);
				o += s->nws;
				s->nws = 0;
				if (c == '=')
					s->st = QP_EQ;
				else
					out[o++] = c;
			}
			break;
		case QP_EQ:
			i++;
			if (hexval(c) >= 0) {
				s->hi = c;
				s->st = QP_EQHEX;
			} else if (c == ' ' || c == '\t') {
				s->eqws = 1;
				s->st = QP_EQWS;
			} else if (c == '\r') {
				s->st = QP_EQCR;
			} else if (c == '\n') {
				s->st = QP_TEXT;        /* soft break, bare LF tolerated */
			} else {
				s->invalid++;
				out[o++] = '=';
				s->st = QP_TEXT;
				i--;                    /* c again, as text */
			}
			break;
		case QP_EQHEX:
			i++;
			if (hexval(c) >= 0) {
				out[o++] = (uint8_t)(hexval(s->hi) << 4 | hexval(c));
			} else {
				s->invalid++;
				out[o++] = '=';
				out[o++] = s->hi;
				i--;
			}
			s->st = QP_TEXT;
			break;
		case QP_EQWS:
			i++;
			if (c == ' ' || c == '\t') {
				if (s->eqws < SCAN_QP_WS)
					s->eqws++;
			} else if (c == '\r') {
				s->st = QP_EQCR;
			} else if (c == '\n') {
				s->st = QP_TEXT;
			} else {
				s->invalid++;
				out[o++] = '=';
				memset(out + o, ' ', s->eqws);
				o += s->eqws;
				s->st = QP_TEXT;
				i--;
			}
			break;
		case QP_EQCR:
			if (c == '\n')
				i++;
			else
				s->invalid++;   /* "=" CR without LF: still a soft break */
			s->st = QP_TEXT;
			break;
		}
	}
	return o;
}

size_t
scan_qp_finish(struct scan_qp *s, uint8_t *out)
{
	size_t o = 0;

	if (s->st == QP_EQHEX) {
		s->invalid++;
		out[o++] = '=';
		out[o++] = s->hi;
	}
	s->st = QP_TEXT;
	s->nws = 0;
	return o;
}

/* ---- charset conversion ----------------------------------------------- */

/* windows-1252 0x80..0x9f; the five holes map to the C1 controls (WHATWG). */
static const uint16_t cp1252_hi[32] = {
	0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008d, 0x017d, 0x008f,
	0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

size_t
scan_utf8_put(uint32_t cp, uint8_t *o)
{
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | cp >> 6);
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp >= 0x10000) {
		o[0] = (uint8_t)(0xf0 | cp >> 18);
		o[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		o[3] = (uint8_t)(0x80 | (cp & 0x3f));
		return 4;
	}
	o[0] = (uint8_t)(0xe0 | cp >> 12);
	o[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	o[2] = (uint8_t)(0x80 | (cp & 0x3f));
	return 3;
}

static size_t
put_cp1252(uint8_t b, uint8_t *o)
{
	if (b >= 0x80 && b < 0xa0)
		return scan_utf8_put(cp1252_hi[b - 0x80], o);
	return scan_utf8_put(b, o);
}

/* >0: length of a valid UTF-8 sequence at s; 0: valid but incomplete prefix; -1: invalid at s[0]. */
static int
utf8_seq(const uint8_t *s, size_t n)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	int len;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;      /* no surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return -1;
	}
	for (int k = 1; k < len; k++) {
		if ((size_t)k >= n)
			return 0;
		if (s[k] < (k == 1 ? lo : 0x80) || s[k] > (k == 1 ? hi : 0xbf))
			return -1;
	}
	return len;
}

void
scan_cscache_init(struct scan_cscache *cc)
{
	memset(cc, 0, sizeof(*cc));
	for (int k = 0; k < SCAN_CS_SLOTS; k++)
		cc->slot[k].cd = (iconv_t)-1;
}

struct scan_cscache *
scan_cscache_fini(struct scan_cscache *cc)
{
	if (cc == NULL)
		return NULL;
	for (int k = 0; k < SCAN_CS_SLOTS; k++) {
		if (cc->slot[k].cd != (iconv_t)-1)
			iconv_close(cc->slot[k].cd);
		cc->slot[k].cd = (iconv_t)-1;
		cc->slot[k].last = 0;
	}
	return NULL;
}

static bool
name_is(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

static const char *const cs_utf8[] = {
	"utf-8", "utf8", "us-ascii", "ascii", "ansi_x3.4-1968", "us", "iso646-us",
	"unicode-1-1-utf-8", "csascii", NULL,
};
static const char *const cs_utf7[] = {
	"utf-7", "utf7", "unicode-1-1-utf-7", "csunicode11utf7", "x-unicode-2-0-utf-7",
	"unicode11utf7", "xunicode20utf7", NULL,
};
static const char *const cs_1252[] = {
	"iso-8859-1", "iso8859-1", "iso_8859-1", "iso_8859-1:1987", "latin1",
	"l1", "cp819", "ibm819", "iso-ir-100", "csisolatin1", "windows-1252",
	"cp1252", "x-cp1252", "cswindows1252", NULL,
};

int
scan_conv_open(struct scan_conv *c, struct scan_cscache *cc, const char *name, size_t len)
{
	char nm[SCAN_CS_NAME];
	size_t k = 0;

	memset(c, 0, sizeof(*c));
	c->kind = SCAN_CONV_UTF8;
	c->cd = (iconv_t)-1;
	while (len > 0 && (*name == ' ' || *name == '\t' || *name == '"')) {
		name++;
		len--;
	}
	while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t' || name[len - 1] == '"'))
		len--;
	if (len == 0)
		return 0;
	if (len >= sizeof(nm))
		return -ENOENT;
	for (; k < len; k++) {
		char ch = name[k];
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		/* a charset token; nothing that iconv_open() would read as options */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
		    ch == '_' || ch == '.' || ch == ':' || ch == '+'))
			return -ENOENT;
		nm[k] = ch;
	}
	nm[k] = '\0';
	if (name_is(nm, cs_utf8))
		return 0;
	if (name_is(nm, cs_1252)) {
		c->kind = SCAN_CONV_CP1252;
		return 0;
	}
	/* UTF-7 by its letters and digits: iconv takes "utf+7" for it too,
	 * and iconv's UTF-7 keeps bits of a run in its own state, so that
	 * its errors fall at different bytes for different cuts of the input;
	 * ours does not. Its IMAP variant (utf-7-imap) is not a mail charset. */
	char al[SCAN_CS_NAME];
	size_t an = 0;
	for (size_t j = 0; j < k; j++)
		if ((nm[j] >= 'a' && nm[j] <= 'z') || (nm[j] >= '0' && nm[j] <= '9'))
			al[an++] = nm[j];
	al[an] = '\0';
	if (name_is(nm, cs_utf7) || name_is(al, cs_utf7)) {
		c->kind = SCAN_CONV_UTF7;
		return 0;
	}
	if (!strncmp(al, "utf7", 4))
		return -ENOENT;
	if (cc == NULL)
		return -ENOENT;

	int victim = 0;
	for (int s = 0; s < SCAN_CS_SLOTS; s++) {
		if (cc->slot[s].last != 0 && strcmp(cc->slot[s].name, nm) == 0) {
			cc->slot[s].last = ++cc->tick;
			if (cc->slot[s].cd == (iconv_t)-1)
				return -ENOENT;
			c->kind = SCAN_CONV_ICONV;
			c->cd = cc->slot[s].cd;
			iconv(c->cd, NULL, NULL, NULL, NULL);   /* initial shift state */
			return 0;
		}
		if (cc->slot[s].last < cc->slot[victim].last)
			victim = s;
	}
	if (cc->slot[victim].cd != (iconv_t)-1)
		iconv_close(cc->slot[victim].cd);
	cc->opens++;
	cc->slot[victim].cd = iconv_open("UTF-8", nm);
	cc->slot[victim].last = ++cc->tick;
	memcpy(cc->slot[victim].name, nm, k + 1);
	if (cc->slot[victim].cd == (iconv_t)-1)
		return -ENOENT;
	c->kind = SCAN_CONV_ICONV;
	c->cd = cc->slot[victim].cd;
	return 0;
}

static size_t
run_utf8(struct scan_conv *c, const uint8_t *in, size_t n, size_t *used, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0;

	while (i < n && cap - o >= 4) {
		if (c->npend) {
			uint8_t tmp[8];
			size_t take = MIN(n - i, (size_t)4 - c->npend);
			memcpy(tmp, c->pend, c->npend);
			memcpy(tmp + c->npend, in + i, take);
			int r = utf8_seq(tmp, c->npend + take);
			if (r > 0) {
				memcpy(out + o, tmp, (size_t)r);
				o += (size_t)r;
				i += (size_t)r - c->npend;
				c->npend = 0;
			} else if (r == 0) {    /* still short: everything is taken */
				memcpy(c->pend + c->npend, in + i, take);
				c->npend = (uint8_t)(c->npend + take);
				i += take;
			} else {
				c->invalid++;
				o += put_cp1252(c->pend[0], out + o);
				memmove(c->pend, c->pend + 1, --c->npend);
			}
			continue;
		}
		if (in[i] < 0x80) {
			size_t lim = MIN(n - i, cap - o), k = 0;
			while (k < lim && in[i + k] < 0x80)
				k++;
			memcpy(out + o, in + i, k);
			o += k;
			i += k;
			continue;
		}
		int r = utf8_seq(in + i, n - i);
		if (r > 0) {
			memcpy(out + o, in + i, (size_t)r);
			o += (size_t)r;
			i += (size_t)r;
		} else if (r == 0) {
			memcpy(c->pend, in + i, n - i);
			c->npend = (uint8_t)(n - i);
			i = n;
		} else {
			c->invalid++;
			o += put_cp1252(in[i++], out + o);
		}
	}
	*used = i;
	return o;
}

static size_t
put_fffd(struct scan_conv *c, uint8_t *o)
{
	c->invalid++;
	return scan_utf8_put(0xfffd, o);
}

/*
 * The carried bytes first: convert them, drop one as U+FFFD when they are
 * invalid (and retry the rest), take one more input byte only when iconv
 * says the sequence is incomplete. Any cut of the input thus converts like
 * the whole.
 */
static size_t
run_iconv(struct scan_conv *c, const uint8_t *in, size_t n, size_t *used, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0;

	while (cap - o >= 8) {
		char *ip, *op = (char *)out + o;
		size_t il, ol = cap - o, r;
		int err;

		if (c->npend) {
			ip = (char *)c->pend;
			il = c->npend;
			r = iconv(c->cd, &ip, &il, &op, &ol);
			err = r == (size_t)-1 ? errno : 0;
			o = (size_t)((uint8_t *)op - out);
			memmove(c->pend, ip, il);
			c->npend = (uint8_t)il;
			if (c->npend == 0)
				continue;
			if (err == E2BIG)
				break;
			if (err == EILSEQ || c->npend == SCAN_CONV_PEND) {
				if (cap - o < 3)
					break;
				o += put_fffd(c, out + o);
				memmove(c->pend, c->pend + 1, --c->npend);
				continue;
			}
			if (i == n)
				break;          /* incomplete: wait for more */
			c->pend[c->npend++] = in[i++];
			continue;
		}
		if (i == n)
			break;
		ip = (char *)(uintptr_t)(in + i);
		il = n - i;
		r = iconv(c->cd, &ip, &il, &op, &ol);
		err = r == (size_t)-1 ? errno : 0;
		o = (size_t)((uint8_t *)op - out);
		i = n - il;
		if (err == E2BIG) {
			break;
		} else if (err == EILSEQ) {
			if (cap - o < 3)
				break;
			o += put_fffd(c, out + o);
			i++;
		} else if (err == EINVAL) {
			if (il < SCAN_CONV_PEND) {
				memcpy(c->pend, in + i, il);
				c->npend = (uint8_t)il;
				i = n;
			} else {
				if (cap - o < 3)
					break;
				o += put_fffd(c, out + o);
				i++;
			}
		}
	}
	*used = i;
	return o;
}

/* modified base64 (RFC 2152): the value of b, or -1 */
static int
b64_val(uint8_t b)
{
	if (b >= 'A' && b <= 'Z')
		return b - 'A';
	if (b >= 'a' && b <= 'z')
		return b - 'a' + 26;
	if (b >= '0' && b <= '9')
		return b - '0' + 52;
	return b == '+' ? 62 : b == '/' ? 63 : -1;
}

/* one UTF-16 unit of a UTF-7 run: surrogates paired, strays as U+FFFD */
static size_t
u7_unit(struct scan_conv *c, uint32_t u, uint8_t *o)
{
	size_t k = 0;

	if (u >= 0xdc00 && u <= 0xdfff && c->u7hi) {
		k = scan_utf8_put(0x10000 + ((uint32_t)(c->u7hi - 0xd800) << 10) + (u - 0xdc00), o);
		c->u7hi = 0;
		return k;
	}
	if (c->u7hi) {
		k += put_fffd(c, o);
		c->u7hi = 0;
	}
	if (u >= 0xd800 && u <= 0xdbff)
		c->u7hi = (uint16_t)u;
	else if (u >= 0xdc00 && u <= 0xdfff)
		k += put_fffd(c, o + k);
	else
		k += scan_utf8_put(u, o + k);
	return k;
}

/* the end of a base64 run: a half pair left is U+FFFD */
static size_t
u7_close(struct scan_conv *c, uint8_t *o)
{
	size_t k = 0;

	if (c->u7hi)
		k = put_fffd(c, o);
	c->u7hi = 0;
	c->u7acc = 0;
	c->u7bits = 0;
	c->u7mode = 0;
	return k;
}

/*
 * UTF-7: direct bytes as they are, '+' opens a run of modified base64 of
 * UTF-16 that '-' (absorbed) or any other byte closes, "+-" is '+'; a byte
 * >= 0x80 is invalid (U+FFFD). Each input byte moves the state once, so
 * any cut of the input converts like the whole.
 */
static size_t
run_utf7(struct scan_conv *c, const uint8_t *in, size_t n, size_t *used, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0;

	while (i < n && cap - o >= 8) {
		uint8_t b = in[i++];
		if (c->u7mode) {
			int v = b64_val(b);
			if (v >= 0) {
				c->u7mode = 2;
				c->u7acc = (c->u7acc << 6 | (uint32_t)v) & 0xffffff;
				c->u7bits += 6;
				if (c->u7bits >= 16) {
					c->u7bits -= 16;
					o += u7_unit(c, (c->u7acc >> c->u7bits) & 0xffff, out + o);
				}
				continue;
			}
			bool plus = c->u7mode == 1;
			o += u7_close(c, out + o);
			if (b == '-') {
				if (plus)
					out[o++] = '+';
				continue;
			}
		}
		if (b == '+')
			c->u7mode = 1;
		else if (b < 0x80)
			out[o++] = b;
		else
			o += put_fffd(c, out + o);
	}
	*used = i;
	return o;
}

size_t
scan_conv_run(struct scan_conv *c, const uint8_t *in, size_t n, size_t *used, uint8_t *out, size_t cap)
{
	if (c->kind == SCAN_CONV_UTF7)
		return run_utf7(c, in, n, used, out, cap);
	if (c->kind == SCAN_CONV_ICONV)
		return run_iconv(c, in, n, used, out, cap);
	if (c->kind == SCAN_CONV_UTF8)
		return run_utf8(c, in, n, used, out, cap);
	size_t i = 0, o = 0;
	while (i < n && cap - o >= 3) {
		if (in[i] < 0x80) {
			size_t lim = MIN(n - i, cap - o), k = 0;
			while (k < lim && in[i + k] < 0x80)
				k++;
			memcpy(out + o, in + i, k);
			o += k;
			i += k;
		} else {
			o += put_cp1252(in[i++], out + o);
		}
	}
	*used = i;
	return o;
}

size_t
scan_conv_same(const struct scan_conv *c, const uint8_t *in, size_t n)
{
	size_t i = 0;

	if (c->npend || c->kind == SCAN_CONV_ICONV || c->kind == SCAN_CONV_UTF7)
		return 0;
	while (i < n) {
		while (i + 8 <= n) {
			uint64_t v;
			memcpy(&v, in + i, 8);
			if (v & 0x8080808080808080ull)
				break;
			i += 8;
		}
		while (i < n && in[i] < 0x80)
			i++;
		if (i >= n || c->kind != SCAN_CONV_UTF8)
			break;
		int r = utf8_seq(in + i, n - i);
		if (r <= 0)
			break;
		i += (size_t)r;
	}
	return i;
}

size_t
scan_conv_finish(struct scan_conv *c, uint8_t *out, size_t cap)
{
	size_t o = 0;

	if (c->kind == SCAN_CONV_UTF8) {
		/* a cut-off sequence: its bytes as cp1252, like any invalid byte */
		for (size_t k = 0; k < c->npend && cap - o >= 3; k++)
			o += put_cp1252(c->pend[k], out + o);
		if (c->npend)
			c->invalid++;
	} else if (c->kind == SCAN_CONV_UTF7) {
		o += u7_close(c, out + o);
	} else if (c->kind == SCAN_CONV_ICONV) {
		/* what converts still does; the rest of a cut sequence is U+FFFD */
		size_t used;
		o += run_iconv(c, NULL, 0, &used, out, cap);
		if (c->npend && cap - o >= 3)
			o += put_fffd(c, out + o);
		char *op = (char *)out + o;
		size_t ol = cap - o;
		iconv(c->cd, NULL, NULL, &op, &ol);
		o = (size_t)((uint8_t *)op - out);
	}
	c->npend = 0;
	return o;
}

/* ---- RFC 2047 encoded words --------------------------------------------- */

struct outbuf {
	uint8_t *p;
	size_t n, cap;
	bool full;
};

/* Converts src through c into ob; marks ob full when it does not fit. */
static void
conv_put(struct scan_conv *c, const uint8_t *src, size_t len, struct outbuf *ob)
{
	while (len > 0 && !ob->full) {
		size_t used = 0;
		size_t w = scan_conv_run(c, src, len, &used, ob->p + ob->n, ob->cap - ob->n);
		ob->n += w;
		src += used;
		len -= used;
		if (used == 0 && w == 0)
			ob->full = true;
	}
}

static void
conv_end(struct scan_conv *c, struct outbuf *ob, unsigned *flags)
{
	uint8_t tmp[SCAN_CONV_OUT_MIN];
	size_t w = scan_conv_finish(c, tmp, sizeof(tmp));
	if (w > ob->cap - ob->n) {
		ob->full = true;
		w = 0;
	}
	memcpy(ob->p + ob->n, tmp, w);
	ob->n += w;
	if (c->invalid)
		*flags |= SCAN_DEC_INVALID;
}

/* literal (not encoded) header text: UTF-8 with the cp1252 fallback */
static void
put_literal(const uint8_t *s, size_t len, struct outbuf *ob, unsigned *flags)
{
	struct scan_conv c;

	for (size_t k = 0; k < len; k++)
		if (s[k] >= 0x80) {
			*flags |= SCAN_DEC_8BIT;
			break;
		}
	scan_conv_open(&c, NULL, NULL, 0);
	conv_put(&c, s, len, ob);
	conv_end(&c, ob, flags);
}

struct eword {
	size_t cs, cslen;       /* charset, "*lang" cut off */
	char enc;               /* 'b' or 'q' */
	size_t text, textlen;
	size_t end;             /* just past "?=" */
};

/* Parses "=?cs?e?text?=" at in[at]; false if it is not one. */
static bool
eword_parse(const uint8_t *in, size_t n, size_t at, struct eword *w)
{
	size_t k = at + 2, star = 0;

	w->cs = k;
	while (k < n && in[k] != '?') {
		if (in[k] <= ' ' || in[k] >= 0x7f || in[k] == '=')
			return false;
		if (in[k] == '*' && star == 0)
			star = k;
		k++;
	}
	if (k >= n || k == w->cs)
		return false;
	w->cslen = (star ? star : k) - w->cs;
	k++;
	if (k + 1 >= n || in[k + 1] != '?')
		return false;
	w->enc = (char)(in[k] | 0x20);
	if (w->enc != 'b' && w->enc != 'q')
		return false;
	k += 2;
	w->text = k;
	while (k < n && in[k] != '?') {
		if (in[k] <= ' ' || in[k] >= 0x7f)
			return false;
		k++;
	}
	if (k + 1 >= n || in[k + 1] != '=')
		return false;
	w->textlen = k - w->text;
	w->end = k + 2;
	return true;
}

static void
eword_put(const uint8_t *in, const struct eword *w, struct scan_conv *c, struct outbuf *ob,
    unsigned *flags)
{
	uint8_t tmp[256];
	const uint8_t *t = in + w->text;
	size_t len = w->textlen, k = 0;

	if (w->enc == 'b') {
		struct scan_b64 b;
		scan_b64_init(&b);
		while (k < len) {
			size_t piece = MIN(len - k, (size_t)(sizeof(tmp) / 3 * 4 - 8));
			size_t o = scan_b64_decode(&b, t + k, piece, tmp);
			conv_put(c, tmp, o, ob);
			k += piece;
		}
		size_t o = scan_b64_finish(&b, tmp);
		conv_put(c, tmp, o, ob);
		if (b.garbage || b.truncated || b.after_pad)
			*flags |= SCAN_DEC_BAD;
		return;
	}
	while (k < len) {
		size_t o = 0;
		while (k < len && o < sizeof(tmp)) {
			uint8_t ch = t[k];
			if (ch == '_') {
				tmp[o++] = ' ';
				k++;
			} else if (ch == '=' && k + 2 < len && hexval(t[k + 1]) >= 0 &&
			    hexval(t[k + 2]) >= 0) {
				tmp[o++] = (uint8_t)(hexval(t[k + 1]) << 4 | hexval(t[k + 2]));
				k += 3;
			} else {
				if (ch == '=')
					*flags |= SCAN_DEC_BAD;
				tmp[o++] = ch;
				k++;
			}
		}
		conv_put(c, tmp, o, ob);
	}
}

static bool
all_lwsp(const uint8_t *s, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (s[k] != ' ' && s[k] != '\t' && s[k] != '\r' && s[k] != '\n')
			return false;
	return true;
}

size_t
scan_rfc2047_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
    struct scan_cscache *cc, unsigned *flags)
{
	struct outbuf ob = { .p = out, .cap = cap };
	struct scan_conv c;
	bool open = false, prev_word = false;
	size_t lit = 0, i = 0, cs = 0, cslen = 0;

	while (i + 1 < n && !ob.full) {
		const uint8_t *q = memmem(in + i, n - i, "=?", 2);
		if (q == NULL)
			break;
		size_t at = (size_t)(q - in);
		struct eword w;
		if (!eword_parse(in, n, at, &w)) {
			i = at + 1;
			continue;
		}
		if (!(prev_word && all_lwsp(in + lit, at - lit))) {
			if (open)
				conv_end(&c, &ob, flags);
			open = false;
			put_literal(in + lit, at - lit, &ob, flags);
		}
		if (open && (cslen != w.cslen || strncasecmp((const char *)in + cs,
		    (const char *)in + w.cs, cslen) != 0)) {
			conv_end(&c, &ob, flags);
			open = false;
		}
		if (!open) {
			if (scan_conv_open(&c, cc, (const char *)in + w.cs, w.cslen) != 0)
				*flags |= SCAN_DEC_CHARSET;
			open = true;
			cs = w.cs;
			cslen = w.cslen;
		}
		eword_put(in, &w, &c, &ob, flags);
		lit = i = w.end;
		prev_word = true;
	}
	if (open)
		conv_end(&c, &ob, flags);
	if (lit < n && !ob.full)
		put_literal(in + lit, n - lit, &ob, flags);
	if (ob.full)
		*flags |= SCAN_DEC_TRUNC;
	return ob.n;
}

/* ---- parameters (RFC 2045 5.1, RFC 2231) --------------------------------- */

struct param {
	const uint8_t *name;
	size_t nlen;
	const uint8_t *val;
	size_t vlen;
	bool quoted;
};

static bool
is_wsp(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* skips white space and (nested) comments */
static size_t
skip_cfws(const uint8_t *p, size_t n, size_t k)
{
	for (;;) {
		while (k < n && is_wsp(p[k]))
			k++;
		if (k >= n || p[k] != '(')
			return k;
		int depth = 0;
		while (k < n) {
			if (p[k] == '\\' && k + 1 < n) {
				k += 2;
				continue;
			}
			if (p[k] == '(')
				depth++;
			else if (p[k] == ')' && --depth == 0) {
				k++;
				break;
			}
			k++;
		}
	}
}

/* Next "name=value" after *pos (which sits on ';' or the value's start). */
static bool
param_next(const uint8_t *p, size_t n, size_t *pos, struct param *pa)
{
	size_t k = *pos;

	for (;;) {
		/* to the next ';' outside quotes */
		bool inq = false;
		while (k < n && (inq || p[k] != ';')) {
			if (p[k] == '"')
				inq = !inq;
			else if (p[k] == '\\' && inq && k + 1 < n)
				k++;
			k++;
		}
		if (k >= n)
			return false;
		k = skip_cfws(p, n, k + 1);
		size_t ns = k;
		while (k < n && p[k] != '=' && p[k] != ';' && !is_wsp(p[k]))
			k++;
		pa->name = p + ns;
		pa->nlen = k - ns;
		k = skip_cfws(p, n, k);
		if (pa->nlen == 0 || k >= n || p[k] != '=')
			continue;       /* junk: on to the next ';' */
		k = skip_cfws(p, n, k + 1);
		if (k < n && p[k] == '"') {
			size_t vs = ++k;
			while (k < n && p[k] != '"') {
				if (p[k] == '\\' && k + 1 < n)
					k++;
				k++;
			}
			pa->val = p + vs;
			pa->vlen = k - vs;
			pa->quoted = true;
			if (k < n)
				k++;
		} else {
			/* a token; up to ';' so that "a b.exe" is not cut at the space */
			size_t vs = k;
			while (k < n && p[k] != ';')
				k++;
			size_t ve = k;
			while (ve > vs && is_wsp(p[ve - 1]))
				ve--;
			pa->val = p + vs;
			pa->vlen = ve - vs;
			pa->quoted = false;
		}
		*pos = k;
		return true;
	}
}

/* copies a (quoted) value, undoing backslash escapes */
static size_t
unquote(const struct param *pa, uint8_t *out, size_t cap, bool *trunc)
{
	size_t o = 0;
	for (size_t k = 0; k < pa->vlen; k++) {
		uint8_t ch = pa->val[k];
		if (pa->quoted && ch == '\\' && k + 1 < pa->vlen)
			ch = pa->val[++k];
		if (pa->quoted && (ch == '\r' || ch == '\n'))
			continue;       /* folding inside the quotes */
		if (o == cap) {
			*trunc = true;
			break;
		}
		out[o++] = ch;
	}
	return o;
}

/* percent-decodes an RFC 2231 extended value */
static size_t
pct_decode(const uint8_t *s, size_t len, uint8_t *out, size_t cap, bool *trunc, unsigned *flags)
{
	size_t o = 0;
	for (size_t k = 0; k < len; k++) {
		uint8_t ch = s[k];
		if (ch == '%') {
			if (k + 2 < len && hexval(s[k + 1]) >= 0 && hexval(s[k + 2]) >= 0) {
				ch = (uint8_t)(hexval(s[k + 1]) << 4 | hexval(s[k + 2]));
				k += 2;
			} else {
				*flags |= SCAN_DEC_BAD;
			}
		}
		if (o == cap) {
			*trunc = true;
			break;
		}
		out[o++] = ch;
	}
	return o;
}

struct section {
	const uint8_t *v;
	uint32_t len;
	bool have, ext, quoted;
};

int
scan_param_get(const uint8_t *p, size_t n, const char *name, bool words,
    uint8_t *out, size_t cap, size_t *len, struct scan_cscache *cc, unsigned *flags)
{
	struct section sec[SCAN_PARAM_SECTIONS], star = { 0 }, plain = { 0 };
	size_t nlen = strlen(name), pos = 0;
	unsigned nsec = 0;
	struct param pa;

	memset(sec, 0, sizeof(sec));
	while (param_next(p, n, &pos, &pa)) {
		if (pa.nlen < nlen || strncasecmp((const char *)pa.name, name, nlen) != 0)
			continue;
		const uint8_t *r = pa.name + nlen;
		size_t rl = pa.nlen - nlen;
		struct section *s = NULL;
		bool ext = false;
		if (rl == 0) {
			s = &plain;
		} else if (r[0] != '*') {
			continue;       /* another parameter with this prefix */
		} else if (rl == 1) {
			s = &star;
			ext = true;
		} else {
			size_t k = 1;
			unsigned num = 0;
			while (k < rl && r[k] >= '0' && r[k] <= '9' && num < 100000)
				num = num * 10 + (unsigned)(r[k++] - '0');
			if (k == 1 || (k < rl && !(k + 1 == rl && r[k] == '*'))) {
				*flags |= SCAN_DEC_BAD;
				continue;
			}
			ext = k < rl;
			if (num >= SCAN_PARAM_SECTIONS) {
				*flags |= SCAN_DEC_BAD | SCAN_DEC_TRUNC;
				continue;
			}
			s = &sec[num];
			nsec++;
		}
		if (s->have) {
			*flags |= SCAN_DEC_BAD;         /* duplicate: the first stands */
			continue;
		}
		s->have = true;
		s->ext = ext;
		s->quoted = pa.quoted;
		s->v = pa.val;
		s->len = (uint32_t)MIN(pa.vlen, (size_t)UINT32_MAX);
	}

	uint8_t raw[SCAN_PARAM_RAW];
	size_t rn = 0;
	bool trunc = false;
	char csname[SCAN_CS_NAME];
	size_t cslen = 0;
	struct outbuf ob = { .p = out, .cap = cap };

	if (!star.have && !sec[0].have) {
		if (nsec)
			*flags |= SCAN_DEC_BAD;         /* continuations without *0 */
		if (!plain.have)
			return -ENOENT;
		struct param pp = { .val = plain.v, .vlen = plain.len, .quoted = plain.quoted };
		rn = unquote(&pp, raw, sizeof(raw), &trunc);
		if (words && memmem(raw, rn, "=?", 2) != NULL) {
			ob.n = scan_rfc2047_decode(raw, rn, out, cap, cc, flags);
		} else {
			put_literal(raw, rn, &ob, flags);
		}
		goto done;
	}

	/* extended / continued value: sections 0, 1, ... until the first gap */
	struct section *segs = star.have ? &star : sec;
	unsigned nseg = 1;
	if (!star.have) {
		while (nseg < SCAN_PARAM_SECTIONS && sec[nseg].have)
			nseg++;
		if (nseg < nsec)
			*flags |= SCAN_DEC_BAD;         /* a gap: later sections are lost */
	}
	for (unsigned k = 0; k < nseg; k++) {
		const struct section *s = &segs[k];
		struct param pp = { .val = s->v, .vlen = s->len, .quoted = s->quoted };
		if (!s->ext) {
			rn += unquote(&pp, raw + rn, sizeof(raw) - rn, &trunc);
			continue;
		}
		uint8_t tmp[SCAN_PARAM_RAW];
		size_t tn = unquote(&pp, tmp, sizeof(tmp), &trunc);
		const uint8_t *v = tmp;
		if (k == 0) {
			/* charset'language'value (RFC 2231 4) */
			const uint8_t *q1 = memchr(tmp, '\'', tn);
			const uint8_t *q2 = q1 ? memchr(q1 + 1, '\'', tn - (size_t)(q1 + 1 - tmp)) : NULL;
			if (q2 != NULL) {
				cslen = MIN((size_t)(q1 - tmp), sizeof(csname));
				memcpy(csname, tmp, cslen);
				v = q2 + 1;
				tn -= (size_t)(v - tmp);
			} else {
				*flags |= SCAN_DEC_BAD;
			}
		}
		rn += pct_decode(v, tn, raw + rn, sizeof(raw) - rn, &trunc, flags);
	}
	struct scan_conv c;
	if (scan_conv_open(&c, cc, csname, cslen) != 0)
		*flags |= SCAN_DEC_CHARSET;
	conv_put(&c, raw, rn, &ob);
	conv_end(&c, &ob, flags);
done:
	if (trunc || ob.full)
		*flags |= SCAN_DEC_TRUNC;
	*len = ob.n;
	return 0;
}
