/*
 * Tests for scan/attach.c: attachment names, content vs declared type, and
 * the names inside ZIP archives built here by a tiny ZIP writer (stored
 * entries: local headers, central directory, end record; zip64 on demand).
 *
 * Every body is fed whole, byte by byte (each byte in its own heap block,
 * so ASan sees any over-read), at random split points (each piece in its
 * own block) and from the end of a page whose next page is PROT_NONE; all
 * runs must give the same hits.
 */
#include <errno.h>
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

#include "scan/attach.h"

#define TAIL (1u << 20)

static struct scan_attach_conf conf;

static int
setup(void **state)
{
	(void)state;
	scan_attach_conf_default(&conf);
	return 0;
}

/* ---- running one part ---- */

struct result {
	size_t n;
	struct scan_attach_hit hit[SCAN_ATTACH_R_COUNT];
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t
next_rand(void)
{
	rng = rng * 6364136223846793005ull + 1442695040888963407ull;
	return rng >> 33;
}

static void
feed_copy(struct scan_attach *st, const uint8_t *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	assert_non_null(c);
	memcpy(c, p, n);
	scan_attach_feed(st, c, n);
	free(c);
}

enum mode { WHOLE, BYTES, SPLITS, GUARD };

static void
run_mode(const struct scan_attach_conf *cf, size_t tail_cap, const char *name, size_t name_len,
    const char *type, const char *sub, const uint8_t *data, size_t len, enum mode mode,
    struct result *r)
{
	struct scan_attach st;
	uint8_t *tail = tail_cap ? malloc(tail_cap) : NULL;
	scan_attach_init(&st, tail, tail_cap);
	scan_attach_begin(&st, cf, 7, name, name_len, type, sub);
	switch (mode) {
	case WHOLE:
		feed_copy(&st, data, len);
		break;
	case BYTES:
		for (size_t i = 0; i < len; i++)
			feed_copy(&st, data + i, 1);
		break;
	case SPLITS: {
		size_t i = 0;
		while (i < len) {
			size_t step = 1 + next_rand() % (next_rand() & 1 ? 7 : len / 3 + 1);
			if (step > len - i)
				step = len - i;
			feed_copy(&st, data + i, step);
			i += step;
		}
		break;
	}
	case GUARD: {
		long pg = sysconf(_SC_PAGESIZE);
		size_t span = (len + (size_t)pg - 1) / (size_t)pg * (size_t)pg + (size_t)pg;
		uint8_t *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		assert_true(m != MAP_FAILED);
		assert_int_equal(mprotect(m + span - pg, (size_t)pg, PROT_NONE), 0);
		uint8_t *at = m + span - pg - len;
		memcpy(at, data, len);
		scan_attach_feed(&st, at, len);
		munmap(m, span);
		break;
	}
	}
	memset(r, 0, sizeof(*r));
	r->n = scan_attach_end(&st, r->hit, SCAN_ATTACH_R_COUNT);
	free(tail);
}

static void
same(const struct result *a, const struct result *b, const char *what)
{
	if (a->n != b->n)
		fail_msg("%s: got %zu hits, want %zu", what, b->n, a->n);
	for (size_t k = 0; k < a->n; k++) {
		const struct scan_attach_hit *x = &a->hit[k], *y = &b->hit[k];
		if (x->rule != y->rule || x->count != y->count || x->part != y->part ||
		    x->score != y->score || strcmp(x->detail, y->detail) != 0)
			fail_msg("%s: hit %zu got %s(%s)x%u, want %s(%s)x%u", what, k, y->name,
			    y->detail, y->count, x->name, x->detail, x->count);
	}
}

static struct result
run_conf(const struct scan_attach_conf *cf, size_t tail_cap, const char *name, const char *type,
    const char *sub, const void *data, size_t len)
{
	struct result whole, other;
	size_t nl = name ? strlen(name) : 0;
	run_mode(cf, tail_cap, name, nl, type, sub, data, len, WHOLE, &whole);
	if (len <= 65536) {
		run_mode(cf, tail_cap, name, nl, type, sub, data, len, BYTES, &other);
		same(&whole, &other, "byte by byte");
	}
	for (int k = 0; k < (len <= 65536 ? 20 : 3); k++) {
		run_mode(cf, tail_cap, name, nl, type, sub, data, len, SPLITS, &other);
		same(&whole, &other, "random splits");
	}
	run_mode(cf, tail_cap, name, nl, type, sub, data, len, GUARD, &other);
	same(&whole, &other, "guard page");
	for (size_t k = 0; k < whole.n; k++) {
		assert_int_equal(whole.hit[k].part, 7);
		assert_true(k == 0 || whole.hit[k - 1].rule < whole.hit[k].rule);
	}
	return whole;
}

static struct result
run(const char *name, const char *type, const char *sub, const void *data, size_t len)
{
	return run_conf(&conf, TAIL, name, type, sub, data, len);
}

/* the rules hit, as "A(detail) B(detail)" without the ATTACH_ prefix */
static const char *
show(const struct result *r)
{
	static char buf[4096];
	size_t o = 0;
	buf[0] = '\0';
	for (size_t k = 0; k < r->n; k++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s(%s)", k ? " " : "",
		    r->hit[k].name + 7, r->hit[k].detail);
	return buf;
}

#define expect(r, want) do { \
		const char *got_ = show(&(r)); \
		if (strcmp(got_, (want)) != 0) \
			fail_msg("got \"%s\", want \"%s\"", got_, (want)); \
	} while (0)

static struct result
name_only(const char *name)
{
	struct result r, p;
	memset(&r, 0, sizeof(r));
	r.n = scan_attach_check_name(&conf, name, strlen(name), r.hit, SCAN_ATTACH_R_COUNT);
	/* the same name on a part with no body gives the same name hits */
	run_mode(&conf, 0, name, strlen(name), NULL, NULL, (const uint8_t *)"", 0, WHOLE, &p);
	for (size_t k = 0; k < p.n; k++)
		p.hit[k].part = 0;
	same(&r, &p, "check_name vs part");
	return r;
}

/* ---- a tiny ZIP writer (stored entries) ---- */

struct zipw {
	uint8_t *b;
	size_t n, cap;
	uint8_t *cd;
	size_t cdn, cdcap;
	uint32_t count;
};

static void
put(uint8_t **b, size_t *n, size_t *cap, const void *p, size_t len)
{
	if (*n + len > *cap) {
		*cap = (*n + len) * 2 + 64;
		*b = realloc(*b, *cap);
		assert_non_null(*b);
	}
	if (len > 0)
		memcpy(*b + *n, p, len);
	*n += len;
}

static void
le(uint8_t **b, size_t *n, size_t *cap, uint64_t v, int bytes)
{
	uint8_t t[8];
	for (int k = 0; k < bytes; k++)
		t[k] = (uint8_t)(v >> (8 * k));
	put(b, n, cap, t, (size_t)bytes);
}

#define Z(z, v, k) le(&(z)->b, &(z)->n, &(z)->cap, (v), (k))
#define CD(z, v, k) le(&(z)->cd, &(z)->cdn, &(z)->cdcap, (v), (k))

static uint32_t
crc32(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0xedb88320u : c >> 1;
	}
	return ~c;
}

static void
zip_add(struct zipw *z, const char *name, size_t nlen, const void *data, size_t len, uint16_t flags)
{
	uint32_t crc = crc32(data, len), off = (uint32_t)z->n;
	Z(z, 0x04034b50, 4); Z(z, 20, 2); Z(z, flags, 2); Z(z, 0, 2);
	Z(z, 0, 2); Z(z, 0x21, 2); Z(z, crc, 4); Z(z, len, 4); Z(z, len, 4);
	Z(z, nlen, 2); Z(z, 0, 2);
	put(&z->b, &z->n, &z->cap, name, nlen);
	put(&z->b, &z->n, &z->cap, data, len);
	CD(z, 0x02014b50, 4); CD(z, 20, 2); CD(z, 20, 2); CD(z, flags, 2); CD(z, 0, 2);
	CD(z, 0, 2); CD(z, 0x21, 2); CD(z, crc, 4); CD(z, len, 4); CD(z, len, 4);
	CD(z, nlen, 2); CD(z, 0, 2); CD(z, 0, 2); CD(z, 0, 2); CD(z, 0, 2); CD(z, 0, 4);
	CD(z, off, 4);
	put(&z->cd, &z->cdn, &z->cdcap, name, nlen);
	z->count++;
}

static void
zip_file(struct zipw *z, const char *name, const char *text)
{
	zip_add(z, name, strlen(name), text, strlen(text), 0);
}

/* Central directory and end record; claim (if not ~0) replaces the count. */
static void
zip_end(struct zipw *z, uint64_t claim, const char *comment, bool zip64)
{
	uint64_t count = claim != ~0ull ? claim : z->count;
	uint64_t cd_off = z->n, cd_size = z->cdn;
	put(&z->b, &z->n, &z->cap, z->cd, z->cdn);
	if (zip64) {
		uint64_t rec = z->n;
		Z(z, 0x06064b50, 4); Z(z, 44, 8); Z(z, 45, 2); Z(z, 45, 2); Z(z, 0, 4); Z(z, 0, 4);
		Z(z, count, 8); Z(z, count, 8); Z(z, cd_size, 8); Z(z, cd_off, 8);
		Z(z, 0x07064b50, 4); Z(z, 0, 4); Z(z, rec, 8); Z(z, 1, 4);
	}
	size_t clen = comment ? strlen(comment) : 0;
	Z(z, 0x06054b50, 4); Z(z, 0, 2); Z(z, 0, 2);
	Z(z, zip64 ? 0xffff : count & 0xffff, 2); Z(z, zip64 ? 0xffff : count & 0xffff, 2);
	Z(z, zip64 ? 0xffffffffu : cd_size, 4); Z(z, zip64 ? 0xffffffffu : cd_off, 4);
	Z(z, clen, 2);
	if (clen)
		put(&z->b, &z->n, &z->cap, comment, clen);
}

static void
zip_free(struct zipw *z)
{
	free(z->b);
	free(z->cd);
	memset(z, 0, sizeof(*z));
}

/* ---- name rules ---- */

static void
test_dangerous_ext(void **state)
{
	(void)state;
	struct result r;
	static const char *const bad[] = {
		"a.exe", "A.EXE", "Setup.Exe", "a.exe.", "a.exe . . ", "screen.scr", "x.js",
		"x.vbs", "x.hta", "x.lnk", "x.xsl", "x.ade", "dir/x.exe", "C:\\tmp\\x.bat",
		".bat", "x.msi",
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		r = name_only(bad[k]);
		if (r.n < 1 || r.hit[0].rule != SCAN_ATTACH_R_DANGEROUS_EXT)
			fail_msg("%s: got \"%s\", want DANGEROUS_EXT", bad[k], show(&r));
	}
	static const char *const good[] = {
		"a.pdf", "a.json", "a.jsx", "exe", "a.exe.txt", "x.exe/readme", "a.ex e",
		"report.docx", "a.", "", "a.e\xc3\xa9xe", "photo.JPG",
	};
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		r = name_only(good[k]);
		if (r.n != 0)
			fail_msg("%s: got \"%s\", want no hit", good[k], show(&r));
	}
	r = name_only("a.exe. .");
	expect(r, "DANGEROUS_EXT(a.exe. .)");
	assert_int_equal(r.hit[0].count, 1);
	assert_true(r.hit[0].score == conf.score[SCAN_ATTACH_R_DANGEROUS_EXT]);
	assert_string_equal(r.hit[0].name, "ATTACH_DANGEROUS_EXT");
}

static void
test_ext_list(void **state)
{
	(void)state;
	struct scan_attach_conf c;
	scan_attach_conf_default(&c);
	assert_int_equal(c.n_ext, 49);
	assert_int_equal(scan_attach_conf_set_ext(&c, " foo,.BAR\tq-1 "), 0);
	assert_int_equal(c.n_ext, 3);
	assert_string_equal(c.ext[1], "bar");
	struct scan_attach_hit h[SCAN_ATTACH_R_COUNT];
	assert_int_equal(scan_attach_check_name(&c, "x.Bar", 5, h, SCAN_ATTACH_R_COUNT), 1);
	assert_int_equal(scan_attach_check_name(&c, "x.exe", 5, h, SCAN_ATTACH_R_COUNT), 0);
	/* errors leave the list as it was */
	assert_int_equal(scan_attach_conf_set_ext(&c, "ok bad!"), -EINVAL);
	assert_int_equal(scan_attach_conf_set_ext(&c, "ok 0123456789abcdef"), -EINVAL);
	assert_int_equal(scan_attach_conf_set_ext(&c, "ok ."), -EINVAL);
	char many[SCAN_ATTACH_EXT_MAX * 8 + 16] = "";
	for (int k = 0; k <= SCAN_ATTACH_EXT_MAX; k++)
		sprintf(many + strlen(many), "e%d ", k);
	assert_int_equal(scan_attach_conf_set_ext(&c, many), -E2BIG);
	assert_int_equal(c.n_ext, 3);
	assert_int_equal(scan_attach_conf_set_ext(&c, ""), 0);
	assert_int_equal(c.n_ext, 0);
	/* rule names */
	for (unsigned r = 0; r < SCAN_ATTACH_R_COUNT; r++)
		assert_int_equal(scan_attach_rule_find(scan_attach_rule_name(r)), (int)r);
	assert_int_equal(scan_attach_rule_find("ATTACH_NOPE"), -1);
	assert_string_equal(scan_attach_rule_name(99), "ATTACH_UNKNOWN");
	/* a rule scored 0 is off */
	scan_attach_conf_default(&c);
	c.score[SCAN_ATTACH_R_DANGEROUS_EXT] = 0;
	assert_int_equal(scan_attach_check_name(&c, "x.pdf.exe", 9, h, SCAN_ATTACH_R_COUNT), 1);
	assert_int_equal(h[0].rule, SCAN_ATTACH_R_DOUBLE_EXT);
}

static void
test_spaces(void **state)
{
	(void)state;
	struct result r = name_only("invoice.pdf                  .exe");
	expect(r, "DANGEROUS_EXT(invoice.pdf                  .exe) "
	    "DOUBLE_EXT(invoice.pdf                  .exe) "
	    "NAME_SPACES(invoice.pdf                  .exe)");
	r = name_only("a     b.txt");
	expect(r, "NAME_SPACES(a     b.txt)");
	r = name_only("a    b.txt");                /* four: fine */
	expect(r, "");
	r = name_only("a \t  \t.txt");
	expect(r, "NAME_SPACES(a \\x09  \\x09.txt) NAME_CONTROL(a \\x09  \\x09.txt)");
	r = name_only("my holiday photo.jpg");
	expect(r, "");
	r = name_only("a\xc2\xa0" "b.txt");           /* U+00A0 */
	expect(r, "NAME_SPACES(a\\u00a0b.txt)");
	r = name_only("a\xe3\x80\x80" "b.txt");       /* U+3000 */
	expect(r, "NAME_SPACES(a\\u3000b.txt)");
	r = name_only("a\xe2\x80\x8b" "b.txt");       /* U+200B */
	expect(r, "NAME_SPACES(a\\u200bb.txt)");
	r = name_only("a\xe2\x80\x80" "b.txt");       /* U+2000 */
	expect(r, "NAME_SPACES(a\\u2000b.txt)");
	r = name_only("a\xe2\x80\x8c" "b.txt");       /* U+200C, ZWNJ: Persian text */
	expect(r, "");
	r = name_only("Stra\xc3\x9f" "e \xe6\x97\xa5\xe6\x9c\xac.pdf");
	expect(r, "");
	/* Unicode spaces pad a double extension too */
	r = name_only("x.pdf\xe2\x80\x83\xe2\x80\x83.scr");
	expect(r, "DANGEROUS_EXT(x.pdf\\u2003\\u2003.scr) DOUBLE_EXT(x.pdf\\u2003\\u2003.scr) "
	    "NAME_SPACES(x.pdf\\u2003\\u2003.scr)");
	/* a long padded name keeps its head and the extension in the detail */
	char longname[400];
	memset(longname, ' ', sizeof(longname));
	memcpy(longname, "invoice.pdf", 11);
	memcpy(longname + sizeof(longname) - 5, ".exe", 5);
	r = name_only(longname);
	assert_int_equal(r.n, 3);
	for (size_t k = 0; k < r.n; k++) {
		size_t dl = strlen(r.hit[k].detail);
		assert_true(dl < SCAN_ATTACH_DETAIL_MAX);
		assert_memory_equal(r.hit[k].detail, "invoice.pdf", 11);
		assert_non_null(strstr(r.hit[k].detail, "..."));
		assert_string_equal(r.hit[k].detail + dl - 6, "  .exe");
	}
}

static void
test_bidi(void **state)
{
	(void)state;
	/* "invoice[RLO]fdp.exe" shows as "invoiceexe.pdf" */
	struct result r = name_only("invoice\xe2\x80\xae" "fdp.exe");
	expect(r, "DANGEROUS_EXT(invoice\\u202efdp.exe) NAME_BIDI(invoice\\u202efdp.exe)");
	r = name_only("photo\xe2\x80\xae" "gpj.js");
	expect(r, "DANGEROUS_EXT(photo\\u202egpj.js) NAME_BIDI(photo\\u202egpj.js)");
	r = name_only("doc\xe2\x81\xa7" "x.txt");       /* U+2067 RLI */
	expect(r, "NAME_BIDI(doc\\u2067x.txt)");
	r = name_only("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d.pdf");  /* Hebrew, no controls */
	expect(r, "");
}

static void
test_control(void **state)
{
	(void)state;
	struct result r = name_only("a\x01" "b.txt");
	expect(r, "NAME_CONTROL(a\\x01b.txt)");
	r = name_only("a\xc2\x85" "b.txt");             /* U+0085 NEL */
	expect(r, "NAME_CONTROL(a\\u0085b.txt)");
	/* a NUL in the name: the part sees the whole name */
	struct scan_attach_hit h[SCAN_ATTACH_R_COUNT];
	size_t n = scan_attach_check_name(&conf, "a.pdf\0.exe", 10, h, SCAN_ATTACH_R_COUNT);
	assert_int_equal(n, 3);
	assert_int_equal(h[0].rule, SCAN_ATTACH_R_DANGEROUS_EXT);
	assert_int_equal(h[1].rule, SCAN_ATTACH_R_DOUBLE_EXT);
	assert_int_equal(h[2].rule, SCAN_ATTACH_R_NAME_CONTROL);
	assert_string_equal(h[2].detail, "a.pdf\\x00.exe");
	/* quotes and backslashes escaped, invalid UTF-8 as \xNN */
	r = name_only("a\"b\\c\xff.txt");
	expect(r, "");
	n = scan_attach_check_name(&conf, "q\"\\\xff\x01", 5, h, SCAN_ATTACH_R_COUNT);
	assert_int_equal(n, 1);
	assert_string_equal(h[0].detail, "q\\\"\\\\\\xff\\x01");
	/* max limits the hits written */
	assert_int_equal(scan_attach_check_name(&conf, "a.pdf\0.exe", 10, h, 1), 1);
	assert_int_equal(h[0].rule, SCAN_ATTACH_R_DANGEROUS_EXT);
	assert_int_equal(scan_attach_check_name(&conf, "a.pdf\0.exe", 10, h, 0), 0);
}

static void
test_double_ext(void **state)
{
	(void)state;
	struct result r = name_only("invoice.pdf.exe");
	expect(r, "DANGEROUS_EXT(invoice.pdf.exe) DOUBLE_EXT(invoice.pdf.exe)");
	r = name_only("Report.DOC.Scr");
	expect(r, "DANGEROUS_EXT(Report.DOC.Scr) DOUBLE_EXT(Report.DOC.Scr)");
	r = name_only("x.pdf..exe");
	expect(r, "DANGEROUS_EXT(x.pdf..exe) DOUBLE_EXT(x.pdf..exe)");
	r = name_only("scan.jpg .js");
	expect(r, "DANGEROUS_EXT(scan.jpg .js) DOUBLE_EXT(scan.jpg .js)");
	r = name_only("archive.zip.exe");
	expect(r, "DANGEROUS_EXT(archive.zip.exe) DOUBLE_EXT(archive.zip.exe)");
	r = name_only("my.setup.exe");                  /* "setup" is no document */
	expect(r, "DANGEROUS_EXT(my.setup.exe)");
	r = name_only("pdf.exe");                       /* no dot before pdf */
	expect(r, "DANGEROUS_EXT(pdf.exe)");
	r = name_only("backup.tar.gz");
	expect(r, "");
	r = name_only("invoice.exe.pdf");
	expect(r, "");
	r = name_only("dir.pdf/x.exe");                 /* another path element */
	expect(r, "DANGEROUS_EXT(dir.pdf/x.exe)");
}

/* ---- content ---- */

static const uint8_t mz[] = "MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0 this program cannot be run in DOS mode";
static const uint8_t elf[] = "\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0";
static const uint8_t pdf[] = "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n";
static const uint8_t png[] = "\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
static const uint8_t jpg[] = "\xff\xd8\xff\xe0\0\x10JFIF\0";
static const uint8_t ole[] = "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\0\0\0\0\0\0\0\0";
static const uint8_t sh[] = "#!/bin/sh\necho hello\n";
static const uint8_t rar[] = "Rar!\x1a\x07\x01\0";
static const uint8_t text[] = "Dear customer,\nplease find attached.\n";

#define RUN(name, type, sub, buf) run((name), (type), (sub), (buf), sizeof(buf) - 1)

static void
test_scr_attachment(void **state)
{
	(void)state;
	struct result r = RUN("screensaver.scr", "application", "octet-stream", mz);
	expect(r, "DANGEROUS_EXT(screensaver.scr) EXEC_CONTENT(screensaver.scr)");
	r = RUN("setup.exe", "application", "x-msdownload", mz);
	expect(r, "DANGEROUS_EXT(setup.exe) EXEC_CONTENT(setup.exe)");
	/* no name at all: the type is the detail */
	r = RUN(NULL, "application", "octet-stream", mz);
	expect(r, "EXEC_CONTENT(application/octet-stream)");
	r = RUN(NULL, NULL, NULL, elf);
	expect(r, "EXEC_CONTENT()");
}

static void
test_mismatch(void **state)
{
	(void)state;
	struct result r = RUN("invoice.pdf", "application", "pdf", mz);
	expect(r, "TYPE_MISMATCH(invoice.pdf) EXEC_CONTENT(invoice.pdf)");
	r = RUN("photo.jpg", "application", "octet-stream", mz);
	expect(r, "TYPE_MISMATCH(photo.jpg) EXEC_CONTENT(photo.jpg)");
	r = RUN("letter.doc", "application", "msword", mz);
	expect(r, "TYPE_MISMATCH(letter.doc) EXEC_CONTENT(letter.doc)");
	r = RUN("chart.png", NULL, NULL, elf);
	expect(r, "TYPE_MISMATCH(chart.png) EXEC_CONTENT(chart.png)");
	/* an executable under a declared image type, no name */
	r = RUN(NULL, "image", "jpeg", mz);
	expect(r, "TYPE_MISMATCH(image/jpeg) EXEC_CONTENT(image/jpeg)");
	r = RUN("x.bin", "text", "plain", mz);
	expect(r, "TYPE_MISMATCH(x.bin) EXEC_CONTENT(x.bin)");
	/* what is fine */
	r = RUN("invoice.pdf", "application", "pdf", pdf);
	expect(r, "");
	r = RUN("INVOICE.PDF", "application", "octet-stream", pdf);
	expect(r, "");
	r = RUN("photo.jpg", "image", "jpeg", png);     /* images among themselves */
	expect(r, "");
	r = RUN("photo.png", "image", "png", jpg);
	expect(r, "");
	r = RUN("old.doc", "application", "msword", ole);
	expect(r, "");
	r = RUN("locked.docx", NULL, NULL, ole);        /* encrypted OOXML */
	expect(r, "");
	r = RUN("notes.txt", "text", "plain", text);
	expect(r, "");
	r = RUN("run.txt", "text", "plain", sh);
	expect(r, "");
	r = RUN("data.bin", "application", "octet-stream", rar);
	expect(r, "");
	r = RUN("tiny.pdf", NULL, NULL, "M");           /* too short to say */
	expect(r, "");
	r = RUN("empty.pdf", NULL, NULL, "");
	expect(r, "");
	/* other contradictions */
	r = RUN("invoice.pdf", NULL, NULL, sh);
	expect(r, "TYPE_MISMATCH(invoice.pdf)");
	r = RUN("invoice.pdf", NULL, NULL, rar);
	expect(r, "TYPE_MISMATCH(invoice.pdf)");
	r = RUN("photo.jpg", NULL, NULL, pdf);
	expect(r, "TYPE_MISMATCH(photo.jpg)");
	r = RUN("notes.txt", NULL, NULL, ole);
	expect(r, "TYPE_MISMATCH(notes.txt)");
	r = RUN("archive.zip", NULL, NULL, rar);        /* not parsed as a zip */
	expect(r, "TYPE_MISMATCH(archive.zip)");
	r = RUN("x.rar", NULL, NULL, "PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
	expect(r, "TYPE_MISMATCH(x.rar)");
}

/* ---- archives ---- */

static struct result
run_zip(const char *name, struct zipw *z)
{
	struct result r = run(name, "application", "zip", z->b, z->n);
	zip_free(z);
	return r;
}

static void
test_zip_names(void **state)
{
	(void)state;
	struct zipw z = {0};
	zip_file(&z, "readme.txt", "hello");
	zip_file(&z, "docs/invoice.pdf.exe", "MZ fake");
	zip_file(&z, "docs/other.scr", "MZ");
	zip_end(&z, ~0ull, NULL, false);
	struct result r = run_zip("docs.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(docs/invoice.pdf.exe) ZIP_DOUBLE_EXT(docs/invoice.pdf.exe)");
	assert_int_equal(r.hit[0].count, 2);
	assert_int_equal(r.hit[1].count, 1);

	/* a clean archive, also as a docx (same magic, fine) */
	zip_file(&z, "[Content_Types].xml", "<Types/>");
	zip_file(&z, "word/document.xml", "<w:document/>");
	zip_file(&z, "word/media/image1.png", "\x89PNG");
	zip_end(&z, ~0ull, NULL, false);
	struct zipw copy = {0};
	put(&copy.b, &copy.n, &copy.cap, z.b, z.n);
	r = run("report.docx", "application",
	    "vnd.openxmlformats-officedocument.wordprocessingml.document", copy.b, copy.n);
	expect(r, "");
	zip_free(&copy);
	r = run_zip("report.zip", &z);
	expect(r, "");

	/* spaces, RLO and nested archives inside */
	zip_file(&z, "scan.pdf        .js", "x");
	zip_file(&z, "pay\xe2\x80\xae" "fdp.vbs", "x");
	zip_file(&z, "inner.ZIP", "PK\x05\x06");
	zip_file(&z, "disk.iso", "x");
	zip_file(&z, "ctl\x07.txt", "x");
	zip_end(&z, ~0ull, NULL, false);
	r = run_zip("mail.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(scan.pdf        .js) ZIP_DOUBLE_EXT(scan.pdf        .js) "
	    "ZIP_NAME_SPACES(scan.pdf        .js) ZIP_NAME_BIDI(pay\\u202efdp.vbs) "
	    "ZIP_NAME_CONTROL(ctl\\x07.txt) ZIP_NESTED(inner.ZIP)");
	assert_int_equal(r.hit[0].count, 2);
	assert_int_equal(r.hit[5].count, 2);

	/* the zip's own name counts too; directories are fine */
	zip_file(&z, "folder.exe/", "");
	zip_file(&z, "folder.exe/a.txt", "x");
	zip_end(&z, ~0ull, NULL, false);
	r = run_zip("evil.pdf.exe", &z);
	expect(r, "DANGEROUS_EXT(evil.pdf.exe) DOUBLE_EXT(evil.pdf.exe)");
}

static void
test_zip_encrypted(void **state)
{
	(void)state;
	struct zipw z = {0};
	zip_file(&z, "a.txt", "x");
	zip_add(&z, "secret.doc", 10, "\x12\x34\x56", 3, 0x0001);
	zip_add(&z, "payload.exe", 11, "\x12\x34\x56", 3, 0x0009);
	zip_end(&z, ~0ull, NULL, false);
	struct result r = run_zip("locked.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(payload.exe) ZIP_ENCRYPTED(secret.doc)");
	assert_int_equal(r.hit[1].count, 2);
	zip_file(&z, "a.txt", "x");
	zip_end(&z, ~0ull, NULL, false);
	r = run_zip("plain.zip", &z);
	expect(r, "");
}

static void
test_zip_broken(void **state)
{
	(void)state;
	struct zipw z = {0};
	zip_file(&z, "a.txt", "some text in the archive");
	zip_file(&z, "b.exe", "MZ");
	zip_end(&z, ~0ull, NULL, false);
	/* truncated at every length: never a crash, broken once the end is gone */
	for (size_t cut = 0; cut < z.n; cut += cut < 40 ? 1 : 7) {
		struct result r = run("cut.zip", NULL, NULL, z.b, cut);
		expect(r, "ZIP_BROKEN(cut.zip)");
	}
	zip_free(&z);

	/* the central directory claims 2^16 - 1 entries (no zip64): holds 2 */
	zip_file(&z, "a.txt", "x");
	zip_file(&z, "b.txt", "y");
	zip_end(&z, 0xffff, NULL, false);
	struct result r = run_zip("many.zip", &z);
	expect(r, "ZIP_BROKEN(many.zip)");

	/* zip64: 2^16 entries claimed, 2 there */
	zip_file(&z, "a.txt", "x");
	zip_file(&z, "b.scr", "y");
	zip_end(&z, 65536, NULL, true);
	r = run_zip("many64.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(b.scr) ZIP_BROKEN(many64.zip)");

	/* a count that does not match */
	zip_file(&z, "a.txt", "x");
	zip_file(&z, "b.txt", "y");
	zip_end(&z, 3, NULL, false);
	r = run_zip("three.zip", &z);
	expect(r, "ZIP_BROKEN(three.zip)");

	/* a central directory size larger than the archive */
	zip_file(&z, "a.txt", "x");
	zip_end(&z, ~0ull, NULL, false);
	z.b[z.n - 22 + 12] = 0xff;
	z.b[z.n - 22 + 13] = 0xff;
	r = run_zip("big.zip", &z);
	expect(r, "ZIP_BROKEN(big.zip)");

	/* an entry whose name runs past the central directory */
	zip_file(&z, "a.txt", "x");
	zip_end(&z, ~0ull, NULL, false);
	z.b[z.n - 22 - 46 - 5 + 28] = 200;
	r = run_zip("name.zip", &z);
	expect(r, "ZIP_BROKEN(name.zip)");

	/* zip64 markers, a locator, but no zip64 record where it points */
	zip_file(&z, "a.txt", "x");
	zip_end(&z, ~0ull, NULL, true);
	memset(z.b + z.n - 22 - 20 - 56, 'X', 4);
	r = run_zip("z64.zip", &z);
	expect(r, "ZIP_BROKEN(z64.zip)");

	/* garbage named .zip, and a zip that is only a local header */
	r = run("x.zip", NULL, NULL, text, sizeof(text) - 1);
	expect(r, "ZIP_BROKEN(x.zip)");
	r = RUN("y.zip", NULL, NULL, "PK\x03\x04\x14\0\0\0\0\0");
	expect(r, "ZIP_BROKEN(y.zip)");
	/* PK magic, no name: still an archive */
	r = RUN(NULL, NULL, NULL, "PK\x03\x04\x14\0\0\0\0\0");
	expect(r, "ZIP_BROKEN()");
}

static void
test_zip_layouts(void **state)
{
	(void)state;
	struct zipw z = {0};
	struct result r;

	/* an empty archive is only an end record */
	zip_end(&z, ~0ull, NULL, false);
	r = run_zip("empty.zip", &z);
	expect(r, "");

	/* a comment after the end record */
	zip_file(&z, "run.bat", "@echo off");
	zip_end(&z, ~0ull, "created by PK\x05\x06 with a long trailing comment text", false);
	r = run_zip("c.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(run.bat)");

	/* a good zip64 archive */
	zip_file(&z, "a.txt", "x");
	zip_file(&z, "b.cmd", "y");
	zip_end(&z, ~0ull, NULL, true);
	r = run_zip("z64.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(b.cmd)");

	/* data in front of the archive (a stub, no PK magic): the name says zip */
	Z(&z, 0x64636261, 4);
	for (int k = 0; k < 100; k++)
		Z(&z, 0x20202020, 4);
	zip_file(&z, "x.pif", "y");
	zip_end(&z, ~0ull, NULL, false);
	/* and the directory offset off by the stub: located from the end anyway */
	memset(z.b + z.n - 6, 0, 4);
	r = run_zip("pre.zip", &z);
	expect(r, "ZIP_DANGEROUS_NAME(x.pif)");

	/* no tail buffer: no archive checks at all */
	zip_file(&z, "x.pif", "y");
	zip_end(&z, ~0ull, NULL, false);
	r = run_conf(&conf, 0, "n.zip", NULL, NULL, z.b, z.n);
	expect(r, "");
	zip_free(&z);
}

static void
test_zip_bounds(void **state)
{
	(void)state;
	struct zipw z = {0};
	struct result r;

	/* a large stored entry: only the last 4 KiB are kept, the directory is there */
	size_t big = 200000;
	uint8_t *blob = malloc(big);
	assert_non_null(blob);
	for (size_t k = 0; k < big; k++)
		blob[k] = (uint8_t)(k * 131 + (k >> 7));
	zip_add(&z, "video.mp4", 9, blob, big, 0);
	zip_file(&z, "invoice.pdf.exe", "MZ");
	zip_end(&z, ~0ull, NULL, false);
	r = run_conf(&conf, 4096, "big.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_DANGEROUS_NAME(invoice.pdf.exe) ZIP_DOUBLE_EXT(invoice.pdf.exe)");
	/* conf->zip_tail bounds it below the buffer's size too */
	struct scan_attach_conf c = conf;
	c.zip_tail = 4096;
	r = run_conf(&c, TAIL, "big.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_DANGEROUS_NAME(invoice.pdf.exe) ZIP_DOUBLE_EXT(invoice.pdf.exe)");
	zip_free(&z);
	free(blob);

	/* a central directory larger than the kept tail */
	char name[64];
	for (int k = 0; k < 200; k++) {
		snprintf(name, sizeof(name), "file-%04d.txt", k);
		zip_file(&z, name, "x");
	}
	zip_end(&z, ~0ull, NULL, false);
	r = run_conf(&conf, 4096, "many.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_LIMIT(many.zip)");
	/* more entries than max_zip_entries */
	c = conf;
	c.max_zip_entries = 50;
	r = run_conf(&c, TAIL, "many.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_LIMIT(many.zip)");
	r = run("many.zip", NULL, NULL, z.b, z.n);
	expect(r, "");
	zip_free(&z);

	/* a name over max_zip_name: its last bytes are checked */
	char longname[3000];
	memset(longname, 'a', sizeof(longname));
	memcpy(longname + sizeof(longname) - 4, ".vbs", 4);
	zip_add(&z, longname, sizeof(longname), "x", 1, 0);
	zip_end(&z, ~0ull, NULL, false);
	r = run_zip("long.zip", &z);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.hit[0].rule, SCAN_ATTACH_R_ZIP_DANGEROUS_NAME);
	assert_int_equal(r.hit[1].rule, SCAN_ATTACH_R_ZIP_LIMIT);
	assert_string_equal(r.hit[1].detail, "long.zip");

	/* 2^16 real entries (zip64, as writers do past 65535): over the default
	 * 10000, and over a 1 MiB tail; a 4 MiB tail with the limit raised reads all */
	for (int k = 0; k < 65536; k++) {
		snprintf(name, sizeof(name), "%05d%s", k, k == 65535 ? ".exe" : ".txt");
		zip_add(&z, name, strlen(name), "", 0, 0);
	}
	zip_end(&z, ~0ull, NULL, true);
	r = run_conf(&conf, 4u << 20, "huge.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_LIMIT(huge.zip)");
	r = run_conf(&conf, TAIL, "huge.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_LIMIT(huge.zip)");
	c = conf;
	c.max_zip_entries = 70000;
	c.zip_tail = 4u << 20;
	r = run_conf(&c, 4u << 20, "huge.zip", NULL, NULL, z.b, z.n);
	expect(r, "ZIP_DANGEROUS_NAME(65535.exe)");
	zip_free(&z);
}

/* begin/feed/end again on the same struct: nothing leaks from a part to the next */
static void
test_reuse(void **state)
{
	(void)state;
	uint8_t *tail = malloc(TAIL);
	struct scan_attach st;
	struct scan_attach_hit h[SCAN_ATTACH_R_COUNT];
	scan_attach_init(&st, tail, TAIL);
	scan_attach_begin(&st, &conf, 1, "a.pdf.exe", 9, "application", "pdf");
	scan_attach_feed(&st, mz, sizeof(mz) - 1);
	assert_int_equal(scan_attach_end(&st, h, SCAN_ATTACH_R_COUNT), 4);
	scan_attach_begin(&st, &conf, 2, "b.pdf", 5, "application", "pdf");
	scan_attach_feed(&st, pdf, sizeof(pdf) - 1);
	assert_int_equal(scan_attach_end(&st, h, SCAN_ATTACH_R_COUNT), 0);
	struct zipw z = {0};
	zip_file(&z, "x.exe", "y");
	zip_end(&z, ~0ull, NULL, false);
	struct scan_mime_part p = { .index = 3, .filename_len = 5 };
	strcpy(p.type, "application");
	strcpy(p.subtype, "zip");
	strcpy(p.filename, "y.zip");
	scan_attach_begin_mime(&st, &conf, &p);
	scan_attach_feed(&st, z.b, z.n);
	assert_int_equal(scan_attach_end(&st, h, SCAN_ATTACH_R_COUNT), 1);
	assert_int_equal(h[0].part, 3);
	assert_int_equal(h[0].rule, SCAN_ATTACH_R_ZIP_DANGEROUS_NAME);
	assert_string_equal(h[0].detail, "x.exe");
	zip_free(&z);
	free(tail);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dangerous_ext),
		cmocka_unit_test(test_ext_list),
		cmocka_unit_test(test_spaces),
		cmocka_unit_test(test_bidi),
		cmocka_unit_test(test_control),
		cmocka_unit_test(test_double_ext),
		cmocka_unit_test(test_scr_attachment),
		cmocka_unit_test(test_mismatch),
		cmocka_unit_test(test_zip_names),
		cmocka_unit_test(test_zip_encrypted),
		cmocka_unit_test(test_zip_broken),
		cmocka_unit_test(test_zip_layouts),
		cmocka_unit_test(test_zip_bounds),
		cmocka_unit_test(test_reuse),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
