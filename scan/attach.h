/*
 * attach.h - attachment checks: file names, content vs declared type, and
 * the names inside ZIP archives (sans-IO, scored rules).
 *
 * Contract
 *   A pure checker over one attachment at a time. The caller (the MIME sink)
 *   gives the part's file name and declared type at part_begin, the DECODED
 *   body bytes in chunks of any size as they stream, and asks for the hits
 *   at part_end. Any split of the same bytes gives the same hits.
 *
 *   Call order, on one thread (a worker's), state in caller memory:
 *     scan_attach_init(st, tail, cap)            once per struct
 *     { scan_attach_begin(st, conf, part, name, type, subtype)
 *       scan_attach_feed(st, p, n)*
 *       n = scan_attach_end(st, hits, max) }*    hits of this part
 *   scan_attach_check_name(conf, name, len, hits, max) checks a name alone.
 *   Nothing allocates and nothing fails: begin/feed return void, end and
 *   check_name return how many hits they wrote (at most max; a part has at
 *   most SCAN_ATTACH_R_COUNT hits, one per rule, so hits[SCAN_ATTACH_R_COUNT]
 *   never loses one). Input is only read, never past p[n-1], never kept
 *   after the call except the ZIP tail below. No I/O, clock or globals.
 *
 *   Buffers: tail (cap bytes, from init) belongs to the caller and must
 *   outlive st; it holds the last min(cap, conf->zip_tail) decoded bytes of
 *   a part that looks like a ZIP (PK magic, or a zip-family extension or
 *   type), where the central directory is. tail NULL: no archive checks.
 *   conf is read at begin and at end: keep it alive (RCU: hold the read
 *   side, or keep the old conf until the part ends). Hits copy what they
 *   report; nothing in them points into st, except the static rule name.
 *
 *   Which parts: what goes to the antivirus (a leaf with a file name, or a
 *   disposition "attachment", or any type but text/). Text bodies would be
 *   sniffed too: a text/plain body that starts with "MZ" scores.
 *
 *   Rules (each reported at most once per part, with the number of names
 *   that hit it and the first one as detail; a rule scored 0 is off):
 *     ATTACH_DANGEROUS_EXT   the name's extension is in conf->ext, after
 *                            Windows' stripping of trailing dots and spaces,
 *                            ASCII case-insensitive, of the last path element
 *     ATTACH_DOUBLE_EXT      a document/media extension, then a dangerous
 *                            one ("invoice.pdf.exe", "scan.jpg   .scr")
 *     ATTACH_NAME_SPACES     min_spaces or more whitespace in a row, or any
 *                            Unicode space (U+00A0, U+1680, U+180E,
 *                            U+2000-U+200B, U+202F, U+205F, U+3000, U+FEFF)
 *     ATTACH_NAME_BIDI       bidi embedding/override/isolate controls
 *                            (U+202A-U+202E, U+2066-U+2069): "invoice[RLO]fdp.exe"
 *     ATTACH_NAME_CONTROL    C0/C1 control characters, DEL
 *     ATTACH_ZIP_*NAME*      the same five for each entry of a ZIP archive
 *                            (ATTACH_ZIP_DANGEROUS_NAME, _DOUBLE_EXT, ...)
 *     ATTACH_TYPE_MISMATCH   the content's magic bytes contradict the name's
 *                            extension (an MZ ".pdf", a ZIP ".jpg"; a docx
 *                            is a ZIP and fine; images among themselves are
 *                            fine), or they are executable (PE, ELF, Mach-O,
 *                            LNK) under a declared non-executable type
 *     ATTACH_EXEC_CONTENT    the content is a native executable (MZ, ELF,
 *                            Mach-O), whatever its name
 *     ATTACH_ZIP_NESTED      an archive inside the ZIP (by entry name only)
 *     ATTACH_ZIP_ENCRYPTED   an encrypted entry (flag bit 0 or 6, AES)
 *     ATTACH_ZIP_BROKEN      no end of central directory record (truncated),
 *                            a central directory that does not fit, walks off
 *                            its end, or holds another number of entries than
 *                            the record claims; a zip64 record not found
 *     ATTACH_ZIP_LIMIT       not all was checked: more than max_zip_entries,
 *                            a name over max_zip_name (its last max_zip_name
 *                            bytes are checked), or a central directory
 *                            larger than the kept tail
 *
 *   ZIP (APPNOTE 6.3.x): only the central directory is read, never a
 *   compressed byte. The End Of Central Directory record is searched
 *   backwards over the last 65535 + 22 bytes (the comment's maximum); a
 *   record whose comment ends exactly at the end wins, else the last
 *   plausible one. Zip64 (counts or sizes 0xFFFF / 0xFFFFFFFF with a
 *   locator in front of the record) reads the zip64 record. The central
 *   directory is located as "its size before its end", so data prepended to
 *   the archive does not matter. Work at end: O(kept tail), entries bounded.
 *
 *   Magic bytes (the first SCAN_ATTACH_MAGIC decoded bytes): MZ, ELF,
 *   Mach-O, "#!", PK (zip), %PDF, OLE2, RTF, GIF8, PNG, JPEG, TIFF, BMP,
 *   RIFF, OggS, ID3, ftyp (MP4), Rar!, 7z, gzip, bzip2, xz, MSCF (cab), LNK.
 */
#ifndef SCAN_ATTACH_H
#define SCAN_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scan/mime.h"

#define SCAN_ATTACH_EXT_MAX 128                 /* extensions in conf->ext */
#define SCAN_ATTACH_EXT_LEN 16                  /* one, NUL included */
#define SCAN_ATTACH_DETAIL_MAX 128              /* hit detail, NUL included */
#define SCAN_ATTACH_MAGIC 16                    /* first bytes kept for sniffing */
#define SCAN_ATTACH_ZIP_NAME_MAX 4096           /* cap on conf->max_zip_name */
#define SCAN_ATTACH_TAIL_DEFAULT (1u << 20)     /* conf->zip_tail default */

enum scan_attach_rule {
	/* name rules, then the same for ZIP entries at + SCAN_ATTACH_R_ZIP */
	SCAN_ATTACH_R_DANGEROUS_EXT = 0,
	SCAN_ATTACH_R_DOUBLE_EXT,
	SCAN_ATTACH_R_NAME_SPACES,
	SCAN_ATTACH_R_NAME_BIDI,
	SCAN_ATTACH_R_NAME_CONTROL,
	SCAN_ATTACH_R_ZIP_DANGEROUS_NAME,
	SCAN_ATTACH_R_ZIP_DOUBLE_EXT,
	SCAN_ATTACH_R_ZIP_NAME_SPACES,
	SCAN_ATTACH_R_ZIP_NAME_BIDI,
	SCAN_ATTACH_R_ZIP_NAME_CONTROL,
	SCAN_ATTACH_R_TYPE_MISMATCH,
	SCAN_ATTACH_R_EXEC_CONTENT,
	SCAN_ATTACH_R_ZIP_NESTED,
	SCAN_ATTACH_R_ZIP_ENCRYPTED,
	SCAN_ATTACH_R_ZIP_BROKEN,
	SCAN_ATTACH_R_ZIP_LIMIT,
	SCAN_ATTACH_R_COUNT
};
#define SCAN_ATTACH_R_ZIP SCAN_ATTACH_R_ZIP_DANGEROUS_NAME

/* Read-mostly configuration: built on the control plane, shared by workers. */
struct scan_attach_conf {
	double score[SCAN_ATTACH_R_COUNT];      /* 0: the rule is off */
	unsigned n_ext;
	char ext[SCAN_ATTACH_EXT_MAX][SCAN_ATTACH_EXT_LEN];     /* lowercase, no dot */
	unsigned min_spaces;            /* whitespace run for NAME_SPACES; 0 = 5 */
	unsigned max_zip_entries;       /* central directory entries read; 0 = 10000 */
	unsigned max_zip_name;          /* entry name bytes checked; 0 = 1024, max SCAN_ATTACH_ZIP_NAME_MAX */
	size_t zip_tail;                /* archive bytes kept (also bounded by init's cap); 0 = 1 MiB */
};

struct scan_attach_hit {
	uint8_t rule;                   /* enum scan_attach_rule */
	uint32_t part;                  /* MIME part index given to begin */
	uint32_t count;                 /* names/entries in the part that hit it */
	double score;                   /* conf->score[rule] */
	const char *name;               /* "ATTACH_...", static */
	char detail[SCAN_ATTACH_DETAIL_MAX];    /* the (first) file name, escaped */
};

/* Per-part state (internal fields; about 2.5 KB). */
struct scan_attach {
	const struct scan_attach_conf *conf;
	uint8_t *tail;
	size_t tail_cap;
	size_t keep;                    /* ring size for this part; 0: not kept */
	uint64_t total;                 /* decoded bytes fed */
	uint32_t part;
	uint8_t nmagic;
	uint8_t claim_ext;              /* internal group of the name's extension */
	uint8_t claim_type;             /* internal group of the declared type */
	uint8_t zip;                    /* 0 undecided, 1 keeping the tail, 2 not an archive */
	uint8_t magic[SCAN_ATTACH_MAGIC];
	uint16_t name_len;
	char name[SCAN_ATTACH_DETAIL_MAX];      /* escaped name (or type) for details */
	uint32_t mask;                  /* rules hit */
	uint32_t count[SCAN_ATTACH_R_COUNT];
	char detail[SCAN_ATTACH_R_COUNT][SCAN_ATTACH_DETAIL_MAX];
};

/* Defaults: the DESIGN.md extension list and scores; cannot fail. */
void scan_attach_conf_default(struct scan_attach_conf *c);
/*
 * Replaces the extension list: items separated by blanks or commas, each
 * with an optional leading dot, [A-Za-z0-9_-] of 1..15 characters.
 * 0, -EINVAL (a bad item), -E2BIG (over SCAN_ATTACH_EXT_MAX); on error c is
 * unchanged.
 */
int scan_attach_conf_set_ext(struct scan_attach_conf *c, const char *list);
/* "ATTACH_..." for a rule, or "ATTACH_UNKNOWN". */
const char *scan_attach_rule_name(unsigned rule);
/* The rule with that name (case-sensitive), or -1. */
int scan_attach_rule_find(const char *name);

/* Once per struct. tail/cap: the caller's ZIP tail buffer (may be NULL/0). */
void scan_attach_init(struct scan_attach *st, uint8_t *tail, size_t cap);
/*
 * A part starts: name (UTF-8, name_len bytes, NULs allowed; NULL or 0: no
 * name), type/subtype as the MIME parser gives them (lowercase; NULL: none).
 * The name rules are decided here.
 */
void scan_attach_begin(struct scan_attach *st, const struct scan_attach_conf *conf,
    uint32_t part, const char *name, size_t name_len, const char *type, const char *subtype);
/* Decoded body bytes of the part, any split. */
void scan_attach_feed(struct scan_attach *st, const uint8_t *p, size_t n);
/* The part ended: content and archive rules; writes up to max hits, in rule order. */
size_t scan_attach_end(struct scan_attach *st, struct scan_attach_hit *hits, size_t max);
/* The name rules alone (part 0 in the hits); up to max hits, in rule order. */
size_t scan_attach_check_name(const struct scan_attach_conf *conf, const char *name, size_t len,
    struct scan_attach_hit *hits, size_t max);

/* begin from the MIME parser's part_begin event */
static inline void
scan_attach_begin_mime(struct scan_attach *st, const struct scan_attach_conf *conf,
    const struct scan_mime_part *p)
{
	scan_attach_begin(st, conf, p->index, p->filename, p->filename_len, p->type, p->subtype);
}

#endif
