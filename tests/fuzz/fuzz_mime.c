/*
 * fuzz_mime.c - libFuzzer target for the streaming MIME parser (scan/mime.h).
 *
 * Checks the contract, not just the absence of crashes: the input parsed
 * whole and cut at split points taken from the input give the same event
 * digest; part_begin / part_end balance and nest; depths and part counts
 * stay within the limits; body bytes only come inside a leaf; header and
 * UTF8 views are valid UTF-8. The first byte picks tight or default limits
 * and the split seed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scan/mime.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
	uint64_t h;             /* events, in order */
	uint64_t view[3];       /* body bytes of the open leaf, per view */
	const struct scan_mime_limits *lim;
	uint32_t open[SCAN_MIME_DEPTH_MAX + 2];
	unsigned nopen;
	int leaf;
	uint32_t leaf_index;
	uint32_t begun;
};

static uint64_t
mix(uint64_t h, const void *p, size_t n)
{
	const uint8_t *s = p;
	for (size_t k = 0; k < n; k++)
		h = (h ^ s[k]) * 0x100000001b3ull;
	return h;
}

static void
valid_utf8(const uint8_t *s, size_t n)
{
	for (size_t k = 0; k < n;) {
		uint8_t c = s[k];
		size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 :
		    c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		if (len == 0 || k + len > n)
			abort();
		for (size_t j = 1; j < len; j++)
			if ((s[k + j] & 0xc0) != 0x80)
				abort();
		k += len;
	}
}

static void
on_header(void *ctx, const struct scan_mime_hdr *h)
{
	struct digest *d = ctx;
	if (d->leaf)
		abort();
	valid_utf8(h->value, h->value_len);
	d->h = mix(d->h, "H", 1);
	d->h = mix(d->h, &h->part, sizeof(h->part));
	d->h = mix(d->h, h->name, h->name_len);
	d->h = mix(d->h, h->value, h->value_len);
	d->h = mix(d->h, h->raw, h->raw_len);
}

static void
on_begin(void *ctx, const struct scan_mime_part *p)
{
	struct digest *d = ctx;
	if (d->leaf || p->depth > d->lim->max_depth || d->begun >= d->lim->max_parts)
		abort();
	if (p->depth != d->nopen || (d->nopen && p->parent != d->open[d->nopen - 1]))
		abort();
	d->begun++;
	valid_utf8((const uint8_t *)p->filename, p->filename_len);
	if (p->filename[p->filename_len] != '\0')
		abort();
	d->h = mix(d->h, "B", 1);
	d->h = mix(d->h, &p->index, sizeof(p->index));
	d->h = mix(d->h, p->type, strlen(p->type));
	d->h = mix(d->h, p->subtype, strlen(p->subtype));
	d->h = mix(d->h, p->filename, p->filename_len);
	d->h = mix(d->h, &p->flags, sizeof(p->flags));
	if (p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE)) {
		d->open[d->nopen++] = p->index;
	} else {
		d->leaf = 1;
		d->leaf_index = p->index;
	}
}

static void
on_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view v, const uint8_t *b, size_t n)
{
	struct digest *d = ctx;
	if (!d->leaf || p->index != d->leaf_index || n == 0 || v > SCAN_MIME_UTF8)
		abort();
	if (v == SCAN_MIME_UTF8)
		valid_utf8(b, n);
	d->view[v] = mix(d->view[v], b, n);
}

static void
on_end(void *ctx, const struct scan_mime_end *e)
{
	struct digest *d = ctx;
	if (d->leaf) {
		if (e->index != d->leaf_index)
			abort();
		d->leaf = 0;
		d->h = mix(d->h, d->view, sizeof(d->view));
		memset(d->view, 0, sizeof(d->view));
	} else {
		if (d->nopen == 0 || d->open[d->nopen - 1] != e->index)
			abort();
		d->nopen--;
	}
	d->h = mix(d->h, "E", 1);
	d->h = mix(d->h, &e->index, sizeof(e->index));
}

static void
on_anomaly(void *ctx, uint32_t part, enum scan_mime_anomaly a)
{
	struct digest *d = ctx;
	if (a >= SCAN_MIME_A_COUNT)
		abort();
	d->h = mix(d->h, "A", 1);
	d->h = mix(d->h, &part, sizeof(part));
	d->h = mix(d->h, &a, sizeof(a));
}

static const struct scan_mime_sink sink = {
	.header = on_header, .part_begin = on_begin, .body = on_body,
	.part_end = on_end, .anomaly = on_anomaly,
};

static uint64_t
parse(const uint8_t *p, size_t n, const struct scan_mime_limits *lim, uint64_t seed, bool split)
{
	struct scan_mime *m = malloc(sizeof(*m));
	struct digest d = { .h = 0xcbf29ce484222325ull, .lim = lim };
	if (m == NULL)
		abort();
	scan_mime_init(m, lim, &sink, &d);
	size_t i = 0;
	while (i < n) {
		size_t step = n - i;
		if (split) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			step = 1 + (size_t)(seed >> 33) % (seed >> 62 ? 64 : 3);
			if (step > n - i)
				step = n - i;
		}
		/* each piece in its own block: reading past it is an ASan error */
		uint8_t *c = malloc(step);
		if (c == NULL)
			abort();
		memcpy(c, p + i, step);
		scan_mime_feed(m, c, step);
		free(c);
		i += step;
	}
	scan_mime_finish(m);
	if (d.nopen != 0 || d.leaf || m->stats.parts != d.begun)
		abort();
	scan_mime_fini(m);
	free(m);
	return d.h;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct scan_mime_limits tight = {
		.max_depth = 4, .max_parts = 20, .max_boundaries = 3,
		.max_header_line = 200, .max_header_bytes = 1000,
	};
	static const struct scan_mime_limits dflt = {
		.max_depth = 16, .max_parts = 1024, .max_boundaries = 16,
		.max_header_line = SCAN_MIME_HDR_MAX, .max_header_bytes = 65536,
	};
	if (size < 1)
		return 0;
	const struct scan_mime_limits *lim = data[0] & 1 ? &tight : &dflt;
	uint64_t seed = data[0];
	data++;
	size--;
	uint64_t whole = parse(data, size, lim, seed, false);
	if (parse(data, size, lim, seed, true) != whole)
		abort();
	return 0;
}
