/*
 * mime.h - streaming MIME parser (sans-IO): message bytes in, events out.
 *
 * Contract
 *   The SMTP engine hands the message (after dot-unstuffing) in chunks of
 *   any size; the parser takes them as they come and calls the sink back
 *   from inside scan_mime_feed() / scan_mime_finish(). Any split of the same
 *   message gives the same events with the same bytes (body bytes may come
 *   in more, smaller calls; join consecutive body calls of one view).
 *
 *   Call order, on one thread (a worker's), state in caller memory:
 *     scan_mime_init(m, lim, sink, ctx)     once per struct
 *     { scan_mime_feed(m, p, n)* ; scan_mime_finish(m) ; scan_mime_reset(m) }*
 *     scan_mime_fini(m)                     closes the iconv descriptors
 *   All state is fixed-size inside struct scan_mime (about 30 KB): the part
 *   stack, the boundary table, the header buffer, the decoder states and
 *   their output buffers. feed/finish never allocate; the only allocation is
 *   iconv_open() for a charset that is not decided by table (decode.h), at
 *   most SCAN_CS_SLOTS per struct, kept across reset and released by fini.
 *   Nothing fails: every function returns void and any input gives a
 *   balanced event sequence; broken MIME becomes anomalies, never an error.
 *   Input is only read, never beyond p[n-1], and not kept after the call.
 *   Work is linear in the bytes fed: memchr over lines, a boundary compare
 *   only for lines that start with '-' (at most SCAN_MIME_LINE_MAX bytes
 *   times the open boundaries per line, per call that adds to the line).
 *
 *   Events (each callback may be NULL; pointers are valid during the call):
 *     header      one header field of a part, once complete: name, value
 *                 (unfolded, RFC 2047-decoded UTF-8) and raw (bytes after
 *                 the colon as received, folds included). The headers of a
 *                 part come before its part_begin, tagged with its index.
 *     part_begin  once per part, when its headers end (or are cut short):
 *                 index (0 = the message itself, then in order of
 *                 appearance), parent, depth (0 = top), type/subtype
 *                 (lowercase; defaults per RFC 2045 5.2 and RFC 2046 5.1.5),
 *                 charset, transfer encoding, disposition and file name
 *                 (UTF-8, from filename*= (RFC 2231), filename= (RFC 2047
 *                 words decoded), else the Content-Type name*= / name=).
 *     body        bytes of a leaf part, in three views: RAW (as received,
 *                 line ends included, without the CRLF that belongs to the
 *                 next boundary, RFC 2046 5.1.1), DECODED (after base64 /
 *                 quoted-printable; the RAW bytes for 7bit/8bit/binary) and,
 *                 for text/ parts only, UTF8 (DECODED converted from the
 *                 part's charset). A leaf gets all its RAW/DECODED/UTF8
 *                 bytes between its part_begin and its part_end.
 *     part_end    once per part_begin, innermost first; a part that never
 *                 saw its closing delimiter is ended by an outer boundary
 *                 or by scan_mime_finish().
 *     anomaly     something broken or suspicious (enum scan_mime_anomaly),
 *                 with the part it concerns; repeats of one kind are
 *                 folded while the same part goes on (a preamble and an
 *                 epilogue may each report). Also in m->stats (bit mask
 *                 and a count per kind of what was reported). Decoder
 *                 anomalies come at the end of the leaf, before part_end.
 *
 *   Structure: multipart/ bodies are split at lines "--boundary" (up to 70
 *   characters, RFC 2046 5.1.1) that start after a line end (or start the
 *   body), optionally followed by "--" (close), then only blanks up to the
 *   line end (a line with more than SCAN_MIME_LINE_MAX bytes of it all is
 *   not a delimiter). Every open multipart's boundary is tried, innermost
 *   first, so an outer boundary closes inner parts that never closed. Preamble and
 *   epilogue give no body events; their bytes are counted in m->stats.
 *   message/rfc822 (and message/global) leaves are parsed as messages one
 *   level deeper. Bare LF line ends are accepted (and reported).
 *
 *   Bounds (struct scan_mime_limits; 0 in a field takes the default, a value
 *   above the compile-time maximum is clamped):
 *     max_depth        16 (max SCAN_MIME_DEPTH_MAX): a multipart or message
 *                      at this depth is an opaque leaf (its bytes as one
 *                      body), NESTING reported.
 *     max_parts        1024: later parts are skipped up to the next
 *                      boundary (counted in stats.skipped_bytes), PARTS.
 *     max_boundaries   16 (max SCAN_MIME_DEPTH_MAX): multiparts open at
 *                      once; beyond, the multipart is an opaque leaf.
 *     max_header_line  8192 (max SCAN_MIME_HDR_MAX): one field as received
 *                      (folds included); the excess is cut, HEADER_LONG.
 *     max_header_bytes 65536: header bytes of one part; further fields are
 *                      parsed for the end of the header but dropped,
 *                      HEADERS_BIG.
 */
#ifndef SCAN_MIME_H
#define SCAN_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scan/decode.h"

#define SCAN_MIME_DEPTH_MAX 32
#define SCAN_MIME_HDR_MAX 8192
#define SCAN_MIME_BOUNDARY_MAX 70               /* RFC 2046 5.1.1 */
#define SCAN_MIME_LINE_MAX 128                  /* a candidate boundary line: "--", 70, "--", blanks */
#define SCAN_MIME_BUF 8192                      /* decoder output, per call */
#define SCAN_MIME_TYPE_MAX 32
#define SCAN_MIME_SUBTYPE_MAX 64
#define SCAN_MIME_CHARSET_MAX 40
#define SCAN_MIME_FILENAME_MAX 1024             /* UTF-8 bytes kept, NUL included */

struct scan_mime_limits {
	unsigned max_depth;
	unsigned max_parts;
	unsigned max_boundaries;
	unsigned max_header_line;
	unsigned max_header_bytes;
};

enum scan_mime_cte {
	SCAN_MIME_CTE_7BIT = 0,         /* also the default, and unknown ones */
	SCAN_MIME_CTE_8BIT,
	SCAN_MIME_CTE_BINARY,
	SCAN_MIME_CTE_BASE64,
	SCAN_MIME_CTE_QP,
};

enum scan_mime_disp {
	SCAN_MIME_DISP_NONE = 0,
	SCAN_MIME_DISP_INLINE,
	SCAN_MIME_DISP_ATTACHMENT,
	SCAN_MIME_DISP_OTHER,
};

enum scan_mime_view {
	SCAN_MIME_RAW = 0,
	SCAN_MIME_DECODED,
	SCAN_MIME_UTF8,
};

/* part flags */
enum {
	SCAN_MIME_P_MULTIPART = 1u << 0,        /* a container with children */
	SCAN_MIME_P_MESSAGE = 1u << 1,          /* message/rfc822 parsed as a message */
	SCAN_MIME_P_TEXT = 1u << 2,             /* text/: has the UTF8 view */
	SCAN_MIME_P_OPAQUE = 1u << 3,           /* container not parsed (limits, encoding) */
	SCAN_MIME_P_NO_CTYPE = 1u << 4,         /* no Content-Type: the default applies */
	SCAN_MIME_P_HAS_FILENAME = 1u << 5,
};

enum scan_mime_anomaly {
	SCAN_MIME_A_NO_CLOSE = 0,       /* multipart without its closing "--boundary--" */
	SCAN_MIME_A_NO_BOUNDARY,        /* multipart with no usable boundary parameter */
	SCAN_MIME_A_NO_PARTS,           /* multipart closed with no part at all */
	SCAN_MIME_A_B64_GARBAGE,        /* bytes outside the base64 alphabet */
	SCAN_MIME_A_B64_TRUNCATED,      /* a dangling 6-bit group, or data after padding */
	SCAN_MIME_A_QP_INVALID,         /* malformed "=" escape */
	SCAN_MIME_A_NESTING,            /* depth limit: an opaque leaf instead */
	SCAN_MIME_A_PARTS,              /* parts limit: later parts skipped */
	SCAN_MIME_A_BOUNDARIES,         /* boundary table full: an opaque leaf instead */
	SCAN_MIME_A_HEADER_LONG,        /* a field over max_header_line, cut */
	SCAN_MIME_A_HEADERS_BIG,        /* header over max_header_bytes, rest dropped */
	SCAN_MIME_A_HEADER_BAD,         /* a header line without a colon, or a stray continuation */
	SCAN_MIME_A_HEADER_8BIT,        /* raw 8-bit bytes in a header */
	SCAN_MIME_A_HEADER_NUL,         /* NUL in a header */
	SCAN_MIME_A_HEADER_CUT,         /* the header ended without an empty line */
	SCAN_MIME_A_DUPLICATE,          /* a second Content-Type / -Transfer-Encoding / -Disposition */
	SCAN_MIME_A_BARE_LF,            /* line ended by LF alone */
	SCAN_MIME_A_BARE_CR,            /* CR not followed by LF */
	SCAN_MIME_A_CTE_UNKNOWN,        /* unknown Content-Transfer-Encoding, taken as 7bit */
	SCAN_MIME_A_CTE_CONTAINER,      /* encoded multipart or message (RFC 2045 6.4): opaque */
	SCAN_MIME_A_CHARSET_UNKNOWN,    /* charset not supported: UTF-8/cp1252 used */
	SCAN_MIME_A_CHARSET_INVALID,    /* invalid sequences in text or header words */
	SCAN_MIME_A_ENCODED_WORD,       /* malformed RFC 2047 word or RFC 2231 parameter */
	SCAN_MIME_A_FILENAME_LONG,      /* file name cut at SCAN_MIME_FILENAME_MAX */
	SCAN_MIME_A_COUNT
};

struct scan_mime_part {
	uint32_t index;
	uint32_t parent;                /* UINT32_MAX for the message itself */
	uint16_t depth;
	uint8_t cte;                    /* enum scan_mime_cte */
	uint8_t disp;                   /* enum scan_mime_disp */
	uint32_t flags;                 /* SCAN_MIME_P_* */
	char type[SCAN_MIME_TYPE_MAX];  /* lowercase, NUL-terminated */
	char subtype[SCAN_MIME_SUBTYPE_MAX];
	char charset[SCAN_MIME_CHARSET_MAX];    /* lowercase; "" when none given */
	uint16_t filename_len;
	char filename[SCAN_MIME_FILENAME_MAX];  /* UTF-8, NUL-terminated; "" when none */
};

/* what part_end reports; the rest of the part was in its part_begin */
struct scan_mime_end {
	uint32_t index;
	uint16_t depth;
	uint32_t flags;
	uint64_t raw_bytes;             /* RAW view bytes of a leaf */
	uint64_t decoded_bytes;         /* DECODED view bytes of a leaf */
};

struct scan_mime_hdr {
	uint32_t part;
	uint16_t depth;
	const char *name;               /* as received, trailing blanks cut */
	size_t name_len;
	const uint8_t *value;           /* unfolded, RFC 2047-decoded, UTF-8 */
	size_t value_len;
	const uint8_t *raw;             /* after the colon, as received */
	size_t raw_len;
};

struct scan_mime_sink {
	void (*header)(void *ctx, const struct scan_mime_hdr *h);
	void (*part_begin)(void *ctx, const struct scan_mime_part *p);
	void (*body)(void *ctx, const struct scan_mime_part *p, enum scan_mime_view view,
	    const uint8_t *b, size_t n);
	void (*part_end)(void *ctx, const struct scan_mime_end *e);
	void (*anomaly)(void *ctx, uint32_t part, enum scan_mime_anomaly a);
};

struct scan_mime_stats {
	uint32_t parts;                 /* parts begun */
	uint32_t max_depth;             /* deepest part */
	uint64_t bytes;                 /* fed */
	uint64_t preamble_bytes;
	uint64_t epilogue_bytes;
	uint64_t skipped_bytes;         /* parts over max_parts, headers over limits */
	uint32_t anomalies;             /* bit (1 << enum scan_mime_anomaly) for each seen */
	uint32_t count[SCAN_MIME_A_COUNT];
};

/* an open container (internal) */
struct scan_mime_frame {
	uint32_t part;
	uint32_t children;
	uint16_t depth;
	uint8_t multipart;              /* else message/rfc822 */
	uint8_t closed;                 /* saw "--boundary--": in the epilogue */
	uint8_t digest;                 /* multipart/digest: children default to message/rfc822 */
	uint8_t blen;
	char boundary[SCAN_MIME_BOUNDARY_MAX];
};

struct scan_mime {
	struct scan_mime_limits lim;
	struct scan_mime_sink sink;
	void *ctx;
	struct scan_mime_stats stats;

	/* line scanner */
	uint8_t state;
	uint8_t bol;                    /* at the start of a line */
	uint8_t cr;                     /* the last byte fed was CR (held) */
	uint8_t eol_len;                /* a held line end (may precede a boundary) */
	uint8_t eol[2];
	uint16_t llen;                  /* candidate boundary line so far */
	uint8_t lbuf[SCAN_MIME_LINE_MAX];
	uint8_t nbound;                 /* open multiparts with a live boundary */

	/* header of the current part */
	uint8_t hfield;                 /* a field is being collected */
	uint8_t hdrop;                  /* the current field is dropped (limits, junk) */
	uint8_t htrunc;                 /* the current field was cut */
	uint8_t hcr;                    /* a bare CR in the current header line */
	uint8_t seen;                   /* Content-* fields seen (duplicates) */
	uint8_t hfold_len;              /* line end before a possible continuation */
	uint8_t hfold[2];
	uint32_t hlen;                  /* bytes in hbuf */
	uint64_t hline;                 /* bytes of the current header line */
	uint64_t hbytes;                /* header bytes of the part */

	/* anomalies: repeats for one part in a row are folded */
	uint32_t aowner;
	uint32_t amask;

	/* the current part */
	struct scan_mime_part part;
	uint8_t fname_src;              /* 0 none, 1 Content-Type name, 2 disposition filename */
	uint8_t blen;
	char boundary[SCAN_MIME_BOUNDARY_MAX];
	uint64_t raw_bytes, decoded_bytes;
	struct scan_b64 b64;
	struct scan_qp qp;
	struct scan_conv conv;

	uint16_t nframes;
	struct scan_mime_frame frame[SCAN_MIME_DEPTH_MAX];
	struct scan_cscache cs;

	uint8_t hbuf[SCAN_MIME_HDR_MAX];        /* the field being collected */
	uint8_t dbuf[SCAN_MIME_BUF];            /* decoded body / unfolded value */
	uint8_t ubuf[SCAN_MIME_BUF];            /* UTF-8 body / decoded value */
};

/* Initialises m; lim NULL takes the defaults; sink is copied. Cannot fail. */
void scan_mime_init(struct scan_mime *m, const struct scan_mime_limits *lim,
    const struct scan_mime_sink *sink, void *ctx);
/* Parses p[0..n); events arrive from inside the call. After finish: ignored. */
void scan_mime_feed(struct scan_mime *m, const uint8_t *p, size_t n);
/* End of message: flushes decoders and ends every open part. */
void scan_mime_finish(struct scan_mime *m);
/* Ready for the next message with the same limits, sink and ctx (keeps the iconv cache). */
void scan_mime_reset(struct scan_mime *m);
/* Releases the iconv descriptors. Returns NULL. */
struct scan_mime *scan_mime_fini(struct scan_mime *m);

#endif
