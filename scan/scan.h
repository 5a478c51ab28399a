/*
 * scan.h - one message through the rule engine: MIME events to targets.
 *
 * Contract
 *   The glue between scan/mime.h and scan/hs.h. Per worker, per pool slot:
 *     s = scan_msg_new(e)                 control plane, at pool creation
 *     scan_msg_begin(s, w)                a message starts on worker w
 *     scan_msg_feed(s, p, n)*             the message as received (after
 *                                         dot-unstuffing), any split
 *     scan_msg_end(s)                     0, or -EIO: the verdict is tempfail
 *     s->hm->hits[], s->hm->gtube          results until the next begin
 *     s = scan_msg_free(s)
 *   The whole message goes to FULL; the top-level header fields to HEADER
 *   (and the Subject, first, to BODY, as SpamAssassin does); for every
 *   text/plain and text/html leaf the UTF-8 view goes to BODY as
 *   SpamAssassin renders it (a paragraph a line, whitespace runs one
 *   space, lines of at most SCAN_BODY_LINE bytes; text/html without its
 *   tags, script and style),
 *   the decoded view of every text/ leaf but text/calendar, and of
 *   message/ leaves, to RAWBODY (each of a part: what SpamAssassin's rules
 *   read of it, SCAN_BODY_PART / SCAN_RAWBODY_PART), and URIs found in the
 *   UTF-8 view (http://, https://, ftp://, www., mailto:, bare addresses;
 *   from text/plain only with a known TLD or an IP address; from text/html
 *   the displayed text's, and the URI attributes of its tags as
 *   SpamAssassin's HTML parser takes them) to URI, one per line, each once
 *   a message. No allocation after scan_msg_new().
 */
#ifndef SCAN_SCAN_H
#define SCAN_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scan/hs.h"
#include "scan/mime.h"

#define SCAN_URI_MAX 2048
/* a message's URIs go to URI once each: the first SCAN_URI_SEEN / 2 are
 * kept (hashes, in an open table at most half full) to look the next up */
#define SCAN_URI_SEEN 512
/* SpamAssassin cuts longer body lines (MAX_BODY_LINE_LENGTH) */
#define SCAN_BODY_LINE 2048
/* what body and rawbody rules read of a part (SpamAssassin's defaults of
 * body_part_scan_size and rawbody_part_scan_size), then up to 1,024 bytes
 * more to a line break or a space (scan.c: cap_bytes) */
#define SCAN_BODY_PART 50000
#define SCAN_RAWBODY_PART 500000
#define SCAN_PART_SLACK 1024

struct pcre2_real_match_data_8;

/* how much of a part's text its rules read (scan.c) */
struct scan_cap {
	size_t seen;                    /* bytes of the part so far, to the limit */
	uint8_t state;
	bool flat;                      /* held bytes: an html part's text */
	uint16_t hn;
	uint8_t hold[SCAN_PART_SLACK + 1];      /* past the limit, not decided */
};

struct scan_msg {
	struct scan_hs_msg *hm;
	struct scan_hs_worker *w;
	int rc;
	/* the current leaf: text/plain or text/html (BODY, URIs), one for
	 * RAWBODY, text/html */
	bool text, raw, html;
	uint8_t tag_state;              /* html: 0 text, 1 in tag, 2 past its name,
	                                   3 in the attributes of a URI tag,
	                                   4 in a comment */
	uint8_t cdash;                  /* html comment: the '-' just before, to 2 */
	uint8_t tag_len;
	bool tag_close;                 /* html: an end tag */
	bool skip;                      /* html: inside <script> or <style> */
	char tag[12];
	uint8_t entn;                   /* html: a character reference being read */
	uint8_t ent[12];                /* its bytes, from the '&' */
	/* html: a tag that carries a URI (scan.c: html_attr) */
	uint8_t tag_uri;                /* its kind (URI_TAG_*), 0 none */
	uint8_t attr_state, attr_q;     /* where in an attribute; a value's quote */
	uint8_t attr_len;
	bool attr_uri;                  /* this attribute's value is the URI */
	bool attr_equiv;                /* <meta>: it is http-equiv */
	bool meta_refresh, meta_content;        /* <meta http-equiv=refresh content=..> */
	uint8_t equiv_len;
	char equiv[16];                 /* http-equiv's value (its start) */
	char attr[24];                  /* its name */
	uint16_t alen, base_len;
	uint8_t aval[SCAN_URI_MAX];     /* its value */
	uint8_t base[SCAN_URI_MAX];     /* the part's <base href>, a directory */
	/* BODY as SpamAssassin renders it (scan.c: body_bytes) */
	bool subject;                   /* BODY's first line (the Subject's) is out */
	bool btext;                     /* text went to BODY from a leaf */
	uint8_t ws, ws_nl;              /* the whitespace run being read */
	uint8_t u8n;                    /* the first bytes of a Unicode space ... */
	uint8_t u8[2];                  /* ... that ended a write */
	struct scan_cap bcap, rcap;     /* BODY's and RAWBODY's of the part */
	uint16_t llen, lstart;          /* bytes in line[]; where the last starts */
	uint8_t line[4 * SCAN_BODY_LINE];       /* lines made, the last being made */
	/* URI extractor */
	uint16_t ulen;
	bool uover;
	uint8_t ubuf[SCAN_URI_MAX];
	struct pcre2_real_match_data_8 *md;     /* redirector_pattern's matches */
	bool udry, uvalid;              /* a text URI on trial (scan.c: uri_text) */
	uint16_t nseen;                 /* URIs out this message: their hashes */
	uint64_t seen[SCAN_URI_SEEN];
	struct scan_mime mime;
};

struct scan_msg *scan_msg_new(const struct scan_hs *e);
struct scan_msg *scan_msg_free(struct scan_msg *s);
void scan_msg_begin(struct scan_msg *s, struct scan_hs_worker *w);
void scan_msg_feed(struct scan_msg *s, const uint8_t *p, size_t n);
int scan_msg_end(struct scan_msg *s);

#endif
