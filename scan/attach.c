/*
 * attach.c - attachment checks (see attach.h for the contract).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scan/attach.h"

#define BIT(n) (1u << (n))

static const char *const rule_names[SCAN_ATTACH_R_COUNT] = {
	[SCAN_ATTACH_R_DANGEROUS_EXT] = "ATTACH_DANGEROUS_EXT",
	[SCAN_ATTACH_R_DOUBLE_EXT] = "ATTACH_DOUBLE_EXT",
	[SCAN_ATTACH_R_NAME_SPACES] = "ATTACH_NAME_SPACES",
	[SCAN_ATTACH_R_NAME_BIDI] = "ATTACH_NAME_BIDI",
	[SCAN_ATTACH_R_NAME_CONTROL] = "ATTACH_NAME_CONTROL",
	[SCAN_ATTACH_R_ZIP_DANGEROUS_NAME] = "ATTACH_ZIP_DANGEROUS_NAME",
	[SCAN_ATTACH_R_ZIP_DOUBLE_EXT] = "ATTACH_ZIP_DOUBLE_EXT",
	[SCAN_ATTACH_R_ZIP_NAME_SPACES] = "ATTACH_ZIP_NAME_SPACES",
	[SCAN_ATTACH_R_ZIP_NAME_BIDI] = "ATTACH_ZIP_NAME_BIDI",
	[SCAN_ATTACH_R_ZIP_NAME_CONTROL] = "ATTACH_ZIP_NAME_CONTROL",
	[SCAN_ATTACH_R_TYPE_MISMATCH] = "ATTACH_TYPE_MISMATCH",
	[SCAN_ATTACH_R_EXEC_CONTENT] = "ATTACH_EXEC_CONTENT",
	[SCAN_ATTACH_R_ZIP_NESTED] = "ATTACH_ZIP_NESTED",
	[SCAN_ATTACH_R_ZIP_ENCRYPTED] = "ATTACH_ZIP_ENCRYPTED",
	[SCAN_ATTACH_R_ZIP_BROKEN] = "ATTACH_ZIP_BROKEN",
	[SCAN_ATTACH_R_ZIP_LIMIT] = "ATTACH_ZIP_LIMIT",
};

static const double default_score[SCAN_ATTACH_R_COUNT] = {
	[SCAN_ATTACH_R_DANGEROUS_EXT] = 4.0,
	[SCAN_ATTACH_R_DOUBLE_EXT] = 3.0,
	[SCAN_ATTACH_R_NAME_SPACES] = 2.0,
	[SCAN_ATTACH_R_NAME_BIDI] = 4.0,
	[SCAN_ATTACH_R_NAME_CONTROL] = 2.0,
	[SCAN_ATTACH_R_ZIP_DANGEROUS_NAME] = 3.0,
	[SCAN_ATTACH_R_ZIP_DOUBLE_EXT] = 2.5,
	[SCAN_ATTACH_R_ZIP_NAME_SPACES] = 1.5,
	[SCAN_ATTACH_R_ZIP_NAME_BIDI] = 3.0,
	[SCAN_ATTACH_R_ZIP_NAME_CONTROL] = 1.0,
	[SCAN_ATTACH_R_TYPE_MISMATCH] = 3.0,
	[SCAN_ATTACH_R_EXEC_CONTENT] = 3.0,
	[SCAN_ATTACH_R_ZIP_NESTED] = 0.5,
	[SCAN_ATTACH_R_ZIP_ENCRYPTED] = 1.0,
	[SCAN_ATTACH_R_ZIP_BROKEN] = 1.0,
	[SCAN_ATTACH_R_ZIP_LIMIT] = 0.5,
};

static const char default_ext[] =
    "ade adpx app bas bat chm cmd com cpl crt exe fpx hlp hta inf ins isp js jse lnk "
    "mda mdb mde mdt mdw mdz msc msi msp mst ops pcd pif prf prg reg scf scr sct shb "
    "shs url vb vbe vbs wsc wsf wsh xsl";

/* ---- content classes (magic bytes) and what a name or type claims ---- */

enum content {
	C_NONE = 0, C_PE, C_ELF, C_MACHO, C_LNK, C_SCRIPT, C_ZIP, C_PDF, C_OLE, C_RTF,
	C_GIF, C_PNG, C_JPEG, C_TIFF, C_BMP, C_RIFF, C_OGG, C_ID3, C_MP4, C_RAR, C_7Z,
	C_GZIP, C_BZ2, C_XZ, C_CAB, C_COUNT
};

#define C_ALL (BIT(C_COUNT) - 1)
#define C_NATIVE (BIT(C_PE) | BIT(C_ELF) | BIT(C_MACHO))
#define C_EXECLIKE (C_NATIVE | BIT(C_LNK))

enum group {
	G_NONE = 0, G_PDF, G_IMAGE, G_MEDIA, G_OLEDOC, G_OOXML, G_ZIP, G_RAR, G_7Z, G_GZ,
	G_BZ2, G_XZ, G_CAB, G_RTF, G_TEXT, G_ARCHIVE, G_COUNT
};

/* content classes that a group's extension may legitimately hold */
static const uint32_t group_allows[G_COUNT] = {
	[G_NONE] = C_ALL,
	[G_PDF] = BIT(C_PDF),
	[G_IMAGE] = BIT(C_GIF) | BIT(C_PNG) | BIT(C_JPEG) | BIT(C_TIFF) | BIT(C_BMP) |
	    BIT(C_RIFF) | BIT(C_MP4),
	[G_MEDIA] = BIT(C_RIFF) | BIT(C_OGG) | BIT(C_ID3) | BIT(C_MP4),
	/* Word opens a docx or an RTF named .doc; so do mail clients */
	[G_OLEDOC] = BIT(C_OLE) | BIT(C_ZIP) | BIT(C_RTF),
	/* a password-protected OOXML document is an OLE2 container */
	[G_OOXML] = BIT(C_ZIP) | BIT(C_OLE),
	[G_ZIP] = BIT(C_ZIP),
	[G_RAR] = BIT(C_RAR),
	[G_7Z] = BIT(C_7Z),
	[G_GZ] = BIT(C_GZIP),
	[G_BZ2] = BIT(C_BZ2),
	[G_XZ] = BIT(C_XZ),
	[G_CAB] = BIT(C_CAB),
	[G_RTF] = BIT(C_RTF) | BIT(C_OLE) | BIT(C_ZIP),
	/* text may start with anything but a binary container or a program */
	[G_TEXT] = C_ALL & ~(C_EXECLIKE | BIT(C_ZIP) | BIT(C_OLE) | BIT(C_RAR) | BIT(C_7Z) |
	    BIT(C_CAB) | BIT(C_PDF)),
	[G_ARCHIVE] = C_ALL,
};

struct ext_group {
	const char *ext;
	uint8_t group;
};

/* Known document, media and archive extensions: what a name claims, and the
 * first half of a double extension. */
static const struct ext_group ext_groups[] = {
	{"pdf", G_PDF},
	{"jpg", G_IMAGE}, {"jpeg", G_IMAGE}, {"jpe", G_IMAGE}, {"jfif", G_IMAGE},
	{"png", G_IMAGE}, {"gif", G_IMAGE}, {"bmp", G_IMAGE}, {"tif", G_IMAGE},
	{"tiff", G_IMAGE}, {"webp", G_IMAGE}, {"heic", G_IMAGE}, {"heif", G_IMAGE},
	{"mp3", G_MEDIA}, {"mp4", G_MEDIA}, {"m4a", G_MEDIA}, {"m4v", G_MEDIA},
	{"wav", G_MEDIA}, {"avi", G_MEDIA}, {"mov", G_MEDIA}, {"ogg", G_MEDIA},
	{"oga", G_MEDIA}, {"ogv", G_MEDIA}, {"3gp", G_MEDIA},
	{"doc", G_OLEDOC}, {"dot", G_OLEDOC}, {"xls", G_OLEDOC}, {"xlt", G_OLEDOC},
	{"ppt", G_OLEDOC}, {"pot", G_OLEDOC}, {"pps", G_OLEDOC}, {"msg", G_OLEDOC},
	{"pub", G_OLEDOC}, {"vsd", G_OLEDOC},
	{"docx", G_OOXML}, {"docm", G_OOXML}, {"dotx", G_OOXML}, {"dotm", G_OOXML},
	{"xlsx", G_OOXML}, {"xlsm", G_OOXML}, {"xltx", G_OOXML}, {"xlsb", G_OOXML},
	{"pptx", G_OOXML}, {"pptm", G_OOXML}, {"ppsx", G_OOXML}, {"potx", G_OOXML},
	{"odt", G_OOXML}, {"ods", G_OOXML}, {"odp", G_OOXML}, {"odg", G_OOXML},
	{"epub", G_OOXML}, {"jar", G_OOXML}, {"apk", G_OOXML}, {"xpi", G_OOXML},
	{"vsdx", G_OOXML}, {"kmz", G_OOXML},
	{"zip", G_ZIP}, {"rar", G_RAR}, {"7z", G_7Z}, {"gz", G_GZ}, {"tgz", G_GZ},
	{"bz2", G_BZ2}, {"tbz2", G_BZ2}, {"xz", G_XZ}, {"txz", G_XZ}, {"cab", G_CAB},
	{"rtf", G_RTF},
	{"txt", G_TEXT}, {"csv", G_TEXT}, {"log", G_TEXT}, {"ics", G_TEXT},
	{"vcf", G_TEXT}, {"htm", G_TEXT}, {"html", G_TEXT}, {"xml", G_TEXT},
	{"json", G_TEXT}, {"eml", G_TEXT}, {"svg", G_TEXT},
	{"arj", G_ARCHIVE}, {"lzh", G_ARCHIVE}, {"lha", G_ARCHIVE}, {"ace", G_ARCHIVE},
	{"tar", G_ARCHIVE}, {"iso", G_ARCHIVE}, {"img", G_ARCHIVE}, {"vhd", G_ARCHIVE},
	{"vhdx", G_ARCHIVE}, {"zipx", G_ARCHIVE}, {"z", G_ARCHIVE},
};

/* an archive (or disk image) inside a ZIP: ATTACH_ZIP_NESTED */
static bool
group_is_archive(unsigned g)
{
	return g == G_ZIP || g == G_RAR || g == G_7Z || g == G_GZ || g == G_BZ2 ||
	    g == G_XZ || g == G_CAB || g == G_ARCHIVE;
}

static bool
is_zip_group(unsigned g)
{
	return g == G_ZIP || g == G_OOXML;
}

static unsigned
ext_group(const char *ext)
{
	for (size_t k = 0; k < sizeof(ext_groups) / sizeof(ext_groups[0]); k++)
		if (strcmp(ext_groups[k].ext, ext) == 0)
			return ext_groups[k].group;
	return G_NONE;
}

static bool
has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static unsigned
type_group(const char *type, const char *sub)
{
	if (type == NULL || sub == NULL)
		return G_NONE;
	if (strcmp(type, "image") == 0)
		return strcmp(sub, "svg+xml") == 0 ? G_TEXT : G_IMAGE;
	if (strcmp(type, "audio") == 0 || strcmp(type, "video") == 0)
		return G_MEDIA;
	if (strcmp(type, "text") == 0)
		return strcmp(sub, "rtf") == 0 ? G_RTF : G_TEXT;
	if (strcmp(type, "application") != 0)
		return G_NONE;
	static const struct ext_group app[] = {
		{"pdf", G_PDF}, {"rtf", G_RTF}, {"msword", G_OLEDOC},
		{"vnd.ms-excel", G_OLEDOC}, {"vnd.ms-powerpoint", G_OLEDOC},
		{"vnd.ms-outlook", G_OLEDOC}, {"java-archive", G_OOXML},
		{"epub+zip", G_OOXML}, {"zip", G_ZIP}, {"x-zip-compressed", G_ZIP},
		{"x-zip", G_ZIP}, {"vnd.rar", G_RAR}, {"x-rar-compressed", G_RAR},
		{"x-rar", G_RAR}, {"x-7z-compressed", G_7Z}, {"gzip", G_GZ},
		{"x-gzip", G_GZ}, {"x-bzip2", G_BZ2}, {"x-xz", G_XZ},
		{"vnd.ms-cab-compressed", G_CAB},
	};
	for (size_t k = 0; k < sizeof(app) / sizeof(app[0]); k++)
		if (strcmp(app[k].ext, sub) == 0)
			return app[k].group;
	if (has_prefix(sub, "vnd.openxmlformats-officedocument.") ||
	    has_prefix(sub, "vnd.oasis.opendocument.") || has_prefix(sub, "vnd.ms-word.") ||
	    has_prefix(sub, "vnd.ms-excel.") || has_prefix(sub, "vnd.ms-powerpoint."))
		return G_OOXML;
	return G_NONE;
}

static bool
starts(const uint8_t *m, size_t n, const void *sig, size_t len)
{
	return n >= len && memcmp(m, sig, len) == 0;
}

static unsigned
sniff(const uint8_t *m, size_t n)
{
	if (starts(m, n, "MZ", 2))
		return C_PE;
	if (starts(m, n, "\x7f" "ELF", 4))
		return C_ELF;
	if (starts(m, n, "\xfe\xed\xfa\xce", 4) || starts(m, n, "\xfe\xed\xfa\xcf", 4) ||
	    starts(m, n, "\xce\xfa\xed\xfe", 4) || starts(m, n, "\xcf\xfa\xed\xfe", 4))
		return C_MACHO;
	if (starts(m, n, "\x4c\x00\x00\x00\x01\x14\x02\x00", 8))
		return C_LNK;
	if (starts(m, n, "#!", 2))
		return C_SCRIPT;
	if (starts(m, n, "PK\x03\x04", 4) || starts(m, n, "PK\x05\x06", 4) ||
	    starts(m, n, "PK\x07\x08", 4))
		return C_ZIP;
	if (starts(m, n, "%PDF-", 5))
		return C_PDF;
	if (starts(m, n, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 8))
		return C_OLE;
	if (starts(m, n, "{\\rtf", 5))
		return C_RTF;
	if (starts(m, n, "GIF87a", 6) || starts(m, n, "GIF89a", 6))
		return C_GIF;
	if (starts(m, n, "\x89PNG\r\n\x1a\n", 8))
		return C_PNG;
	if (starts(m, n, "\xff\xd8\xff", 3))
		return C_JPEG;
	if (starts(m, n, "II*\0", 4) || starts(m, n, "MM\0*", 4))
		return C_TIFF;
	/* "BM" alone starts words; the reserved fields must be zero */
	if (n >= 14 && m[0] == 'B' && m[1] == 'M' && !m[6] && !m[7] && !m[8] && !m[9])
		return C_BMP;
	if (starts(m, n, "RIFF", 4))
		return C_RIFF;
	if (starts(m, n, "OggS", 4))
		return C_OGG;
	if (starts(m, n, "ID3", 3))
		return C_ID3;
	if (n >= 8 && memcmp(m + 4, "ftyp", 4) == 0)
		return C_MP4;
	if (starts(m, n, "Rar!\x1a\x07", 6))
		return C_RAR;
	if (starts(m, n, "7z\xbc\xaf\x27\x1c", 6))
		return C_7Z;
	if (starts(m, n, "\x1f\x8b\x08", 3))
		return C_GZIP;
	if (n >= 4 && starts(m, n, "BZh", 3) && m[3] >= '1' && m[3] <= '9')
		return C_BZ2;
	if (starts(m, n, "\xfd" "7zXZ\0", 6))
		return C_XZ;
	if (starts(m, n, "MSCF\0\0\0\0", 8))
		return C_CAB;
	return C_NONE;
}

/* ---- UTF-8 and the characters that hide a name's end ---- */

#define CP_BAD UINT32_MAX

/* One code point of s[0..n), n >= 1; invalid: CP_BAD over 1 byte. */
static size_t
utf8_dec(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint8_t c = s[0];
	size_t len;
	uint32_t v, min;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, v = c & 0x1f, min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, v = c & 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, v = c & 0x07, min = 0x10000;
	} else {
		*cp = CP_BAD;
		return 1;
	}
	if (len > n)
		goto bad;
	for (size_t k = 1; k < len; k++) {
		if ((s[k] & 0xc0) != 0x80)
			goto bad;
		v = v << 6 | (s[k] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		goto bad;
	*cp = v;
	return len;
bad:
	*cp = CP_BAD;
	return 1;
}

static bool
is_uspace(uint32_t cp)
{
	return cp == 0xa0 || cp == 0x1680 || cp == 0x180e || (cp >= 0x2000 && cp <= 0x200b) ||
	    cp == 0x202f || cp == 0x205f || cp == 0x3000 || cp == 0xfeff;
}

static bool
is_bidi(uint32_t cp)
{
	return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

static bool
is_control(uint32_t cp)
{
	return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

/* Length of a blank (ASCII space, a control, or a Unicode space) that ends at
 * s[end), not before s[lo]; 0 if none. */
static size_t
blank_before(const uint8_t *s, size_t lo, size_t end)
{
	if (end <= lo)
		return 0;
	if (s[end - 1] <= ' ' || s[end - 1] == 0x7f)
		return 1;       /* blanks, and C0 controls ("a.pdf\0.exe") */
	for (size_t len = 2; len <= 3 && len <= end - lo; len++) {
		uint32_t cp;
		if (utf8_dec(s + end - len, len, &cp) == len && is_uspace(cp))
			return len;
	}
	return 0;
}

/* ---- hit details: the name, escaped for a log line ---- */

/* Escapes one unit of s[0..n) into out (at most 8 bytes): printable ASCII
 * and ordinary UTF-8 as is; \\ and \" ; controls and invalid bytes \xNN;
 * spaces, bidi controls and C1 as \uXXXX. Returns the bytes consumed. */
static size_t
esc_unit(const uint8_t *s, size_t n, char *out, size_t *olen)
{
	uint32_t cp;
	size_t len = utf8_dec(s, n, &cp);
	if (cp == CP_BAD || (cp < 0x80 && (cp < 0x20 || cp == 0x7f))) {
		*olen = (size_t)snprintf(out, 8, "\\x%02x", s[0]);
	} else if (cp == '\\' || cp == '"') {
		out[0] = '\\';
		out[1] = (char)cp;
		*olen = 2;
	} else if (cp < 0x80) {
		out[0] = (char)cp;
		*olen = 1;
	} else if (is_uspace(cp) || is_bidi(cp) || is_control(cp)) {
		*olen = (size_t)snprintf(out, 8, "\\u%04x", (unsigned)cp);
	} else {
		memcpy(out, s, len);
		*olen = len;
	}
	return len;
}

/* Writes the escaped name into dst[cap] (cap >= 16); a long one keeps its
 * head and its tail (where the extension is) around "...". */
static void
escape_name(char *dst, size_t cap, const uint8_t *s, size_t n)
{
	char u[8];
	size_t ul, total = 0, o = 0;
	for (size_t i = 0; i < n;) {
		i += esc_unit(s + i, n - i, u, &ul);
		total += ul;
	}
	size_t room = cap - 1;
	size_t head = total <= room ? room : (room - 3) / 2;
	size_t i = 0;
	while (i < n) {
		size_t used = esc_unit(s + i, n - i, u, &ul);
		if (o + ul > head)
			break;
		memcpy(dst + o, u, ul);
		o += ul;
		i += used;
	}
	if (i < n) {
		/* skip until what is left fits after "..." */
		size_t tail = room - 3 - o, left = total;
		for (size_t j = 0; j < i;) {
			j += esc_unit(s + j, n - j, u, &ul);
			left -= ul;
		}
		while (left > tail) {
			i += esc_unit(s + i, n - i, u, &ul);
			left -= ul;
		}
		memcpy(dst + o, "...", 3);
		o += 3;
		while (i < n) {
			i += esc_unit(s + i, n - i, u, &ul);
			memcpy(dst + o, u, ul);
			o += ul;
		}
	}
	dst[o] = '\0';
}

/* ---- configuration ---- */

const char *
scan_attach_rule_name(unsigned rule)
{
	return rule < SCAN_ATTACH_R_COUNT ? rule_names[rule] : "ATTACH_UNKNOWN";
}

int
scan_attach_rule_find(const char *name)
{
	for (unsigned r = 0; r < SCAN_ATTACH_R_COUNT; r++)
		if (strcmp(rule_names[r], name) == 0)
			return (int)r;
	return -1;
}

static bool
ext_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '_' || c == '-';
}

int
scan_attach_conf_set_ext(struct scan_attach_conf *c, const char *list)
{
	char ext[SCAN_ATTACH_EXT_MAX][SCAN_ATTACH_EXT_LEN];
	unsigned n = 0;
	const char *p = list;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' || *p == '\r')
			p++;
		if (*p == '\0')
			break;
		if (*p == '.')
			p++;
		size_t len = 0;
		while (ext_char(p[len]))
			len++;
		if (len == 0 || len >= SCAN_ATTACH_EXT_LEN)
			return -EINVAL;
		char e = p[len];
		if (e != '\0' && e != ' ' && e != '\t' && e != ',' && e != '\n' && e != '\r')
			return -EINVAL;
		if (n == SCAN_ATTACH_EXT_MAX)
			return -E2BIG;
		for (size_t k = 0; k < len; k++)
			ext[n][k] = (char)(p[k] >= 'A' && p[k] <= 'Z' ? p[k] + 32 : p[k]);
		ext[n][len] = '\0';
		n++;
		p += len;
	}
	memcpy(c->ext, ext, sizeof(ext[0]) * n);
	c->n_ext = n;
	return 0;
}

void
scan_attach_conf_default(struct scan_attach_conf *c)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->score, default_score, sizeof(c->score));
	int rc = scan_attach_conf_set_ext(c, default_ext);
	(void)rc;               /* a constant that parses */
	c->min_spaces = 5;
	c->max_zip_entries = 10000;
	c->max_zip_name = 1024;
	c->zip_tail = SCAN_ATTACH_TAIL_DEFAULT;
}

/* ---- recording hits ---- */

static void
hit(struct scan_attach *st, unsigned rule, const uint8_t *name, size_t n)
{
	if (st->conf->score[rule] == 0)
		return;
	if (st->count[rule]++ != 0)
		return;
	st->mask |= BIT(rule);
	if (name != NULL)
		escape_name(st->detail[rule], SCAN_ATTACH_DETAIL_MAX, name, n);
	else
		memcpy(st->detail[rule], st->name, (size_t)st->name_len + 1);
}

static size_t
emit(const struct scan_attach *st, struct scan_attach_hit *hits, size_t max)
{
	size_t k = 0;
	for (unsigned r = 0; r < SCAN_ATTACH_R_COUNT && k < max; r++) {
		if (!(st->mask & BIT(r)))
			continue;
		struct scan_attach_hit *h = &hits[k++];
		h->rule = (uint8_t)r;
		h->part = st->part;
		h->count = st->count[r];
		h->score = st->conf->score[r];
		h->name = rule_names[r];
		memcpy(h->detail, st->detail[r], sizeof(h->detail));
	}
	return k;
}

/* ---- name rules ---- */

/* The lowercase extension ext[0..len) of s[b..end) if it has one that fits. */
static bool
ext_of(const uint8_t *s, size_t b, size_t end, char ext[SCAN_ATTACH_EXT_LEN], size_t *dot)
{
	size_t d = end;
	while (d > b && s[d - 1] != '.')
		d--;
	if (d == b)
		return false;
	*dot = d - 1;
	size_t len = end - d;
	if (len == 0 || len >= SCAN_ATTACH_EXT_LEN)
		return false;
	for (size_t k = 0; k < len; k++) {
		uint8_t c = s[d + k];
		if (c >= 0x80 || c == 0)
			return false;
		ext[k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	ext[len] = '\0';
	return true;
}

static bool
dangerous(const struct scan_attach_conf *c, const char *ext)
{
	for (unsigned k = 0; k < c->n_ext && k < SCAN_ATTACH_EXT_MAX; k++)
		if (strcmp(c->ext[k], ext) == 0)
			return true;
	return false;
}

/*
 * Runs the name rules over s[0..n) (offset 0 for an attachment's name,
 * SCAN_ATTACH_R_ZIP for a ZIP entry's). Returns the group the extension
 * claims, for the content check.
 */
static unsigned
check_name(struct scan_attach *st, unsigned base, const uint8_t *s, size_t n)
{
	const struct scan_attach_conf *c = st->conf;
	unsigned min_spaces = c->min_spaces ? c->min_spaces : 5;
	bool spaces = false, bidi = false, control = false;
	unsigned run = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		i += utf8_dec(s + i, n - i, &cp);
		bool blank = cp == ' ' || cp == '\t' || is_uspace(cp);
		run = blank ? run + 1 : 0;
		if (run >= min_spaces || is_uspace(cp))
			spaces = true;
		if (is_bidi(cp))
			bidi = true;
		if (cp != CP_BAD && is_control(cp))
			control = true;
	}
	if (spaces)
		hit(st, base + SCAN_ATTACH_R_NAME_SPACES, s, n);
	if (bidi)
		hit(st, base + SCAN_ATTACH_R_NAME_BIDI, s, n);
	if (control)
		hit(st, base + SCAN_ATTACH_R_NAME_CONTROL, s, n);

	/* the last path element, with Windows' trailing dots and spaces gone */
	size_t b = n;
	while (b > 0 && s[b - 1] != '/' && s[b - 1] != '\\')
		b--;
	size_t end = n;
	while (end > b && (s[end - 1] == '.' || s[end - 1] == ' '))
		end--;
	char ext[SCAN_ATTACH_EXT_LEN], prev[SCAN_ATTACH_EXT_LEN];
	size_t dot;
	if (!ext_of(s, b, end, ext, &dot))
		return G_NONE;
	unsigned g = ext_group(ext);
	if (base == SCAN_ATTACH_R_ZIP && group_is_archive(g))
		hit(st, SCAN_ATTACH_R_ZIP_NESTED, s, n);
	if (!dangerous(c, ext))
		return g;
	hit(st, base + SCAN_ATTACH_R_DANGEROUS_EXT, s, n);
	/* "x.pdf.exe", "x.pdf     .exe", "x.pdf..exe": blanks and dots between */
	size_t e = dot;
	for (;;) {
		size_t bl = e > b && s[e - 1] == '.' ? 1 : blank_before(s, b, e);
		if (bl == 0)
			break;
		e -= bl;
	}
	size_t dot2;
	if (ext_of(s, b, e, prev, &dot2) && ext_group(prev) != G_NONE)
		hit(st, base + SCAN_ATTACH_R_DOUBLE_EXT, s, n);
	return g;
}

/* ---- ZIP central directory ---- */

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static bool
sig(const uint8_t *p, uint8_t a, uint8_t b)
{
	return p[0] == 'P' && p[1] == 'K' && p[2] == a && p[3] == b;
}

static void
reverse(uint8_t *p, size_t n)
{
	for (size_t i = 0, j = n; i + 1 < j; i++, j--) {
		uint8_t t = p[i];
		p[i] = p[j - 1];
		p[j - 1] = t;
	}
}

static void
zip_entry(struct scan_attach *st, const uint8_t *e, const uint8_t *name, size_t nlen)
{
	const struct scan_attach_conf *c = st->conf;
	uint16_t flags = rd16(e + 8), method = rd16(e + 10);
	size_t max_name = c->max_zip_name ? c->max_zip_name : 1024;
	if (max_name > SCAN_ATTACH_ZIP_NAME_MAX)
		max_name = SCAN_ATTACH_ZIP_NAME_MAX;
	if (nlen > max_name) {
		hit(st, SCAN_ATTACH_R_ZIP_LIMIT, NULL, 0);
		name += nlen - max_name;
		nlen = max_name;
	}
	/* bit 0 traditional/AES, bit 6 strong encryption, method 99 AES (APPNOTE 4.4.4) */
	if ((flags & 0x41) || method == 99)
		hit(st, SCAN_ATTACH_R_ZIP_ENCRYPTED, name, nlen);
	check_name(st, SCAN_ATTACH_R_ZIP, name, nlen);
}

/* APPNOTE 4.3.16 (EOCD), 4.3.14-15 (zip64 record and locator), 4.3.12 (CD). */
static void
zip_parse(struct scan_attach *st)
{
	uint8_t *b = st->tail;
	bool cut = st->total > st->keep;        /* the archive's start is gone */
	size_t len = cut ? st->keep : (size_t)st->total;
	if (cut) {
		/* the ring's oldest byte is at total % keep: rotate it to 0 */
		size_t pos = (size_t)(st->total % st->keep);
		reverse(b, pos);
		reverse(b + pos, len - pos);
		reverse(b, len);
	}
	if (len < 22) {
		hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
		return;
	}
	size_t lo = len - 22 > 65535 ? len - 22 - 65535 : 0;
	size_t eocd = SIZE_MAX, cand = SIZE_MAX;
	for (size_t i = len - 22 + 1; i-- > lo;) {
		if (!sig(b + i, 5, 6))
			continue;
		size_t clen = rd16(b + i + 20);
		if (i + 22 + clen == len) {
			eocd = i;
			break;
		}
		if (cand == SIZE_MAX && i + 22 + clen <= len)
			cand = i;
	}
	if (eocd == SIZE_MAX)
		eocd = cand;
	if (eocd == SIZE_MAX) {
		hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
		return;
	}
	uint64_t entries = rd16(b + eocd + 10), cd_size = rd32(b + eocd + 12);
	uint32_t cd_off = rd32(b + eocd + 16);
	size_t cd_end = eocd;
	bool z64 = false;
	if ((entries == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) &&
	    eocd >= 20 && sig(b + eocd - 20, 6, 7)) {
		size_t loc = eocd - 20, r = SIZE_MAX;
		uint64_t off = rd64(b + loc + 8), base = st->total - len;
		if (loc >= 56 && sig(b + loc - 56, 6, 6))
			r = loc - 56;           /* the usual place: right before the locator */
		else if (off >= base && off - base <= loc && loc - (off - base) >= 56 &&
		    sig(b + (off - base), 6, 6))
			r = (size_t)(off - base);
		if (r == SIZE_MAX) {
			hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
			return;
		}
		entries = rd64(b + r + 32);
		cd_size = rd64(b + r + 40);
		cd_end = r;
		z64 = true;
	}
	if (cd_size > cd_end) {
		hit(st, cut ? SCAN_ATTACH_R_ZIP_LIMIT : SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
		return;
	}
	const struct scan_attach_conf *c = st->conf;
	uint64_t max_entries = c->max_zip_entries ? c->max_zip_entries : 10000;
	uint64_t n = 0;
	for (size_t p = cd_end - (size_t)cd_size; p < cd_end; n++) {
		if (n == max_entries) {
			hit(st, SCAN_ATTACH_R_ZIP_LIMIT, NULL, 0);
			return;
		}
		if (cd_end - p < 46 || !sig(b + p, 1, 2)) {
			hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
			return;
		}
		size_t nlen = rd16(b + p + 28), elen = 46 + nlen + rd16(b + p + 30) + rd16(b + p + 32);
		if (elen > cd_end - p) {
			hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
			return;
		}
		zip_entry(st, b + p, b + p + 46, nlen);
		p += elen;
	}
	/* more than 65535 entries without zip64: writers let the count wrap */
	if (z64 ? n != entries : (n & 0xffff) != entries)
		hit(st, SCAN_ATTACH_R_ZIP_BROKEN, NULL, 0);
}

/* ---- the part ---- */

void
scan_attach_init(struct scan_attach *st, uint8_t *tail, size_t cap)
{
	memset(st, 0, sizeof(*st));
	st->tail = tail;
	st->tail_cap = tail != NULL ? cap : 0;
}

static void
reset(struct scan_attach *st, const struct scan_attach_conf *conf, uint32_t part)
{
	st->conf = conf;
	st->part = part;
	st->total = 0;
	st->nmagic = 0;
	st->claim_ext = st->claim_type = G_NONE;
	st->zip = 0;
	st->mask = 0;
	memset(st->count, 0, sizeof(st->count));
	st->name_len = 0;
	st->name[0] = '\0';
	size_t want = conf->zip_tail ? conf->zip_tail : SCAN_ATTACH_TAIL_DEFAULT;
	st->keep = st->tail_cap < want ? st->tail_cap : want;
	if (st->keep < 64)
		st->keep = 0;   /* too small for any central directory */
}

void
scan_attach_begin(struct scan_attach *st, const struct scan_attach_conf *conf, uint32_t part,
    const char *name, size_t name_len, const char *type, const char *subtype)
{
	reset(st, conf, part);
	if (name == NULL)
		name_len = 0;
	const uint8_t *s = (const uint8_t *)name;
	if (name_len > 0) {
		escape_name(st->name, sizeof(st->name), s, name_len);
	} else if (type != NULL && subtype != NULL) {
		snprintf(st->name, sizeof(st->name), "%s/%s", type, subtype);
		/* types come from the parser lowercase and token-only, but be safe */
		for (char *q = st->name; *q; q++)
			if ((unsigned char)*q < 0x20 || (unsigned char)*q >= 0x7f || *q == '"' || *q == '\\')
				*q = '?';
	}
	st->name_len = (uint16_t)strlen(st->name);
	if (name_len > 0)
		st->claim_ext = (uint8_t)check_name(st, 0, s, name_len);
	st->claim_type = (uint8_t)type_group(type, subtype);
	if (st->keep == 0)
		st->zip = 2;
	else if (is_zip_group(st->claim_ext) || is_zip_group(st->claim_type))
		st->zip = 1;
}

void
scan_attach_feed(struct scan_attach *st, const uint8_t *p, size_t n)
{
	if (n == 0)
		return;
	if (st->nmagic < SCAN_ATTACH_MAGIC) {
		size_t k = SCAN_ATTACH_MAGIC - st->nmagic;
		if (k > n)
			k = n;
		memcpy(st->magic + st->nmagic, p, k);
		st->nmagic = (uint8_t)(st->nmagic + k);
	}
	if (st->zip == 0 && st->nmagic >= 4)
		st->zip = sniff(st->magic, 4) == C_ZIP ? 1 : 2;
	if (st->zip != 2) {
		/* the ring: byte i of the part at i % keep; only the last keep count */
		const uint8_t *q = p;
		size_t m = n, pos;
		if (m > st->keep) {
			q += m - st->keep;
			pos = (size_t)((st->total + (m - st->keep)) % st->keep);
			m = st->keep;
		} else {
			pos = (size_t)(st->total % st->keep);
		}
		size_t first = st->keep - pos < m ? st->keep - pos : m;
		memcpy(st->tail + pos, q, first);
		memcpy(st->tail, q + first, m - first);
	}
	st->total += n;
}

size_t
scan_attach_end(struct scan_attach *st, struct scan_attach_hit *hits, size_t max)
{
	unsigned c = sniff(st->magic, st->nmagic);
	if (BIT(c) & C_NATIVE)
		hit(st, SCAN_ATTACH_R_EXEC_CONTENT, NULL, 0);
	if (c != C_NONE && (!(group_allows[st->claim_ext] & BIT(c)) ||
	    (st->claim_type != G_NONE && (BIT(c) & C_EXECLIKE))))
		hit(st, SCAN_ATTACH_R_TYPE_MISMATCH, NULL, 0);
	if (st->zip == 1 && (c == C_ZIP || c == C_NONE))
		zip_parse(st);
	st->zip = 2;            /* a second end finds nothing more */
	return emit(st, hits, max);
}

size_t
scan_attach_check_name(const struct scan_attach_conf *conf, const char *name, size_t len,
    struct scan_attach_hit *hits, size_t max)
{
	struct scan_attach st;
	scan_attach_init(&st, NULL, 0);
	reset(&st, conf, 0);
	if (name != NULL && len > 0) {
		escape_name(st.name, sizeof(st.name), (const uint8_t *)name, len);
		st.name_len = (uint16_t)strlen(st.name);
		check_name(&st, 0, (const uint8_t *)name, len);
	}
	return emit(&st, hits, max);
}
