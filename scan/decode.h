/*
 * decode.h - streaming content decoders for the MIME scanner (sans-IO).
 *
 * Contract
 *   Everything here is pure computation over bytes the caller owns: no
 *   allocation (except iconv_open() in the charset cache, see below), no
 *   globals, no I/O. State structs live in caller memory; any thread may use
 *   its own state. Input is only read, never past the length given.
 *
 *   Base64 (RFC 2045 6.8) and quoted-printable (RFC 2045 6.7) decode in a
 *   stream: scan_*_decode() takes any chunk and writes every byte it can
 *   decide into out (the caller sizes out with SCAN_B64_OUT_MAX /
 *   SCAN_QP_OUT_MAX of the chunk length); a quantum, an "=XX" escape or a
 *   soft line break split across chunks is carried in the state; any split
 *   of the same input gives the same output. scan_*_finish() flushes the
 *   end. Broken input is never an error: it decodes as well as it can and
 *   counts what it found in the state (the scanner turns counts into
 *   anomalies).
 *
 *   Charset conversion to UTF-8 (struct scan_conv) is streaming and bounded:
 *   an incomplete multibyte sequence at the end of a chunk (at most
 *   SCAN_CONV_PEND bytes) is carried to the next; output always is valid
 *   UTF-8. Decided here by table, without iconv: us-ascii, utf-8 and their
 *   aliases decode as UTF-8 whose invalid bytes are read as windows-1252
 *   (what mail clients show, better text for rules than U+FFFD);
 *   iso-8859-1 and windows-1252 labels both decode as windows-1252 (WHATWG
 *   practice: latin1-labelled mail carries cp1252 punctuation); utf-7 is
 *   decoded here too (RFC 2152), one state change per byte: glibc's
 *   decoder takes base64 bytes into its state and then reports an invalid
 *   sequence where the whole text and the same text cut into writes
 *   differ, so the text rules saw depended on how it arrived. Every other
 *   charset goes through glibc iconv: struct scan_cscache keeps
 *   SCAN_CS_SLOTS descriptors per owner, opened lazily on first use and
 *   reused (least recently used one replaced; unknown names are cached as
 *   unknown too, so iconv_open() runs once per charset name per owner).
 *   iconv_open() allocates: that is the one allocation, bounded by the
 *   slots, and only for the rare charsets. Invalid sequences become
 *   U+FFFD; an unknown charset falls back to the UTF-8/cp1252 table.
 *   Rule: at most one struct scan_conv per cache is open at a time (the
 *   descriptor is shared, its shift state is reset on open).
 *
 *   Header words: scan_rfc2047_decode() turns an unfolded header value into
 *   UTF-8 (RFC 2047: B and Q words, whitespace between adjacent words
 *   dropped, a run of words in one charset converted as one stream so a
 *   character split across words survives; RFC 2231 section 5 "*lang"
 *   suffixes accepted). scan_param_get() finds one parameter of a
 *   Content-Type / Content-Disposition value (RFC 2045 5.1, RFC 2183) and
 *   decodes it: RFC 2231 extended values "charset'lang'%XX" and
 *   continuations name*0, name*1*, ... in any order (up to
 *   SCAN_PARAM_SECTIONS), else the plain value, in which RFC 2047 words are
 *   decoded when asked (not standard, but what senders do for file names).
 *   Both write at most cap bytes, cut at a character boundary, and report
 *   problems as SCAN_DEC_* bits in *flags (or-ed in, never cleared).
 */
#ifndef SCAN_DECODE_H
#define SCAN_DECODE_H

#include <iconv.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- base64 ---------------------------------------------------------- */

struct scan_b64 {
	uint32_t acc;           /* pending 6-bit groups */
	uint8_t nacc;           /* how many (0..3) */
	uint8_t padded;         /* last quantum ended with '=' */
	uint32_t garbage;       /* bytes outside the alphabet and whitespace */
	uint32_t after_pad;     /* data resumed after a padded quantum */
	uint32_t truncated;     /* finish: a lone 6-bit group was dropped */
	uint32_t nopad;         /* finish: last quantum had no padding (tolerated) */
};

#define SCAN_B64_OUT_MAX(n) ((n) / 4 * 3 + 3)

void scan_b64_init(struct scan_b64 *s);
/* Decodes in[0..n) into out (room for SCAN_B64_OUT_MAX(n)); returns bytes written.
 * Whitespace is skipped, other non-alphabet bytes are counted in garbage. */
size_t scan_b64_decode(struct scan_b64 *s, const uint8_t *in, size_t n, uint8_t *out);
/* Flushes 2 or 3 pending groups (missing padding); out has room for 3. */
size_t scan_b64_finish(struct scan_b64 *s, uint8_t *out);

/* ---- quoted-printable --------------------------------------------------- */

#define SCAN_QP_WS 64           /* trailing whitespace held back per line */

struct scan_qp {
	uint8_t st;             /* internal state */
	uint8_t hi;             /* first hex digit of "=XY", raw */
	uint8_t nws;            /* held whitespace (transport padding, RFC 2045 6.7 (3)) */
	uint8_t eqws;           /* whitespace seen after '=' */
	uint8_t ws[SCAN_QP_WS];
	uint32_t invalid;       /* malformed escapes, taken literally */
};

#define SCAN_QP_OUT_MAX(n) ((n) + SCAN_QP_WS + 4)

void scan_qp_init(struct scan_qp *s);
/* Decodes in[0..n) into out (room for SCAN_QP_OUT_MAX(n)); returns bytes written.
 * Hard line breaks pass through as received; trailing whitespace on a line is
 * dropped; "=" CRLF / "=" LF (with whitespace between) is a soft break. */
size_t scan_qp_decode(struct scan_qp *s, const uint8_t *in, size_t n, uint8_t *out);
/* Flushes the end: held whitespace is dropped (end of line), a dangling "=X"
 * is written literally and counted; a lone "=" is a soft break. Room for 4. */
size_t scan_qp_finish(struct scan_qp *s, uint8_t *out);

/* ---- charset conversion -------------------------------------------------- */

#define SCAN_CS_SLOTS 4
#define SCAN_CS_NAME 40         /* longest charset name kept, NUL included */
#define SCAN_CONV_PEND 8        /* longest incomplete sequence carried */
#define SCAN_CONV_OUT_MIN 32    /* smallest out buffer for progress and for finish */

struct scan_cscache {
	struct {
		iconv_t cd;     /* (iconv_t)-1: the name is known to be unsupported */
		uint32_t last;  /* LRU tick; 0 = slot empty */
		char name[SCAN_CS_NAME];
	} slot[SCAN_CS_SLOTS];
	uint32_t tick;
	uint32_t opens;         /* iconv_open() calls made (tests, metrics) */
};

void scan_cscache_init(struct scan_cscache *cc);
/* Closes every descriptor; the cache may be initialised again. Returns NULL. */
struct scan_cscache *scan_cscache_fini(struct scan_cscache *cc);

enum scan_conv_kind {
	SCAN_CONV_UTF8 = 0,     /* utf-8 / us-ascii / unknown: invalid bytes as cp1252 */
	SCAN_CONV_CP1252,       /* windows-1252, iso-8859-1 */
	SCAN_CONV_ICONV,
	SCAN_CONV_UTF7,         /* RFC 2152, decoded here: a byte-at-a-time state
	                           machine, so any cut converts like the whole */
};

struct scan_conv {
	uint8_t kind;
	uint8_t npend;
	uint8_t pend[SCAN_CONV_PEND];
	iconv_t cd;
	uint32_t invalid;       /* invalid or incomplete sequences replaced */
	/* SCAN_CONV_UTF7: in a base64 run, its bits so far, a high surrogate */
	uint32_t u7acc;
	uint8_t u7bits;
	uint8_t u7mode;         /* 0 direct, 1 just after '+', 2 in a run */
	uint16_t u7hi;
};

/*
 * Opens a converter from the charset named name[0..len) (case-insensitive,
 * surrounding quotes and blanks ignored; len 0 means us-ascii). Returns 0, or
 * -ENOENT when the charset is unknown or unsupported: c is then usable and
 * decodes as UTF-8 with the cp1252 fallback.
 */
int scan_conv_open(struct scan_conv *c, struct scan_cscache *cc, const char *name, size_t len);
/*
 * Converts from in[0..n) as much as fits into out[0..cap) (cap >=
 * SCAN_CONV_OUT_MIN), sets *used to the input bytes consumed (the rest is
 * the caller's to pass again), returns the bytes written. A trailing
 * incomplete sequence is consumed into the state.
 */
size_t scan_conv_run(struct scan_conv *c, const uint8_t *in, size_t n, size_t *used,
    uint8_t *out, size_t cap);
/*
 * How many leading bytes of in[0..n) convert to themselves (valid UTF-8 for
 * the UTF-8 kind, ASCII for cp1252, none for iconv or with a carried
 * sequence): the caller may use them as output directly, without a copy,
 * and run the converter from there.
 */
size_t scan_conv_same(const struct scan_conv *c, const uint8_t *in, size_t n);
/* Ends the stream: a carried incomplete sequence becomes U+FFFD (counted). cap >= SCAN_CONV_OUT_MIN. */
size_t scan_conv_finish(struct scan_conv *c, uint8_t *out, size_t cap);

/* ---- header words and parameters ------------------------------------------ */

enum {
	SCAN_DEC_TRUNC = 1u << 0,       /* output cut at cap */
	SCAN_DEC_BAD = 1u << 1,         /* malformed encoded word / parameter / escape */
	SCAN_DEC_CHARSET = 1u << 2,     /* unknown charset (fallback used) */
	SCAN_DEC_INVALID = 1u << 3,     /* invalid byte sequences replaced */
	SCAN_DEC_8BIT = 1u << 4,        /* raw 8-bit bytes outside encoded words */
};

/*
 * Decodes the unfolded header value in[0..n) to UTF-8 into out[0..cap);
 * returns the length written. Text outside encoded words is taken as
 * UTF-8 (cp1252 fallback). cap >= SCAN_CONV_OUT_MIN.
 */
size_t scan_rfc2047_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap,
    struct scan_cscache *cc, unsigned *flags);

#define SCAN_PARAM_SECTIONS 64  /* RFC 2231 continuations honoured: *0 .. *63 */
#define SCAN_PARAM_RAW 2048     /* longest raw (percent-decoded) value assembled */

/*
 * Looks up parameter `name` (ASCII, case-insensitive) in the parameter list
 * of a header value: p[0..n) is the whole value, "type/sub; a=b; ..." or
 * "attachment; filename=..."; the leading token is skipped. Writes the
 * UTF-8 value to out[0..cap) and its length to *len. words: also decode
 * RFC 2047 words inside a plain value. Returns 0, or -ENOENT when absent.
 */
int scan_param_get(const uint8_t *p, size_t n, const char *name, bool words,
    uint8_t *out, size_t cap, size_t *len, struct scan_cscache *cc, unsigned *flags);

/* Code point cp (at most 0x10FFFF) as UTF-8 at o; its length, 1 to 4. */
size_t scan_utf8_put(uint32_t cp, uint8_t *o);

#endif
