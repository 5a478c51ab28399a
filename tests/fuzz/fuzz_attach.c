/*
 * fuzz_attach.c - libFuzzer target for the attachment checks (scan/attach.h).
 *
 * Input: one option byte (tail size, entry and name limits, declared type,
 * split seed), one byte of name length, the name, then the decoded body.
 * Checks the contract, not just the absence of crashes: the body fed whole
 * and cut at split points gives the same hits; hits come in rule order,
 * once per rule, with the configured score, a count, and a NUL-ended detail
 * free of control characters; the name rules of the part are exactly what
 * scan_attach_check_name() finds for the name alone.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scan/attach.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct result {
	size_t n;
	struct scan_attach_hit hit[SCAN_ATTACH_R_COUNT];
};

static void
run(const struct scan_attach_conf *conf, size_t cap, const char *name, size_t nlen,
    const char *type, const char *sub, const uint8_t *p, size_t n, uint64_t seed, bool split,
    struct result *r)
{
	struct scan_attach st;
	uint8_t *tail = malloc(cap);
	if (tail == NULL)
		abort();
	scan_attach_init(&st, tail, cap);
	scan_attach_begin(&st, conf, 1, name, nlen, type, sub);
	size_t i = 0;
	while (i < n) {
		size_t step = n - i;
		if (split) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			step = 1 + (size_t)(seed >> 33) % (seed >> 62 ? 300 : 3);
			if (step > n - i)
				step = n - i;
		}
		/* each piece in its own block: reading past it is an ASan error */
		uint8_t *c = malloc(step);
		if (c == NULL)
			abort();
		memcpy(c, p + i, step);
		scan_attach_feed(&st, c, step);
		free(c);
		i += step;
	}
	memset(r, 0, sizeof(*r));
	r->n = scan_attach_end(&st, r->hit, SCAN_ATTACH_R_COUNT);
	free(tail);
}

static bool
same_hit(const struct scan_attach_hit *a, const struct scan_attach_hit *b)
{
	return a->rule == b->rule && a->count == b->count && a->score == b->score &&
	    strcmp(a->detail, b->detail) == 0;
}

static void
check(const struct scan_attach_conf *conf, const struct result *r)
{
	if (r->n > SCAN_ATTACH_R_COUNT)
		abort();
	for (size_t k = 0; k < r->n; k++) {
		const struct scan_attach_hit *h = &r->hit[k];
		if (h->rule >= SCAN_ATTACH_R_COUNT || (k && h->rule <= r->hit[k - 1].rule))
			abort();
		if (h->count == 0 || h->score != conf->score[h->rule] ||
		    strcmp(h->name, scan_attach_rule_name(h->rule)) != 0)
			abort();
		size_t dl = strnlen(h->detail, SCAN_ATTACH_DETAIL_MAX);
		if (dl == SCAN_ATTACH_DETAIL_MAX)
			abort();
		for (size_t j = 0; j < dl; j++) {
			uint8_t c = (uint8_t)h->detail[j];
			if (c < 0x20 || c == 0x7f)
				abort();
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const types[8][2] = {
		{NULL, NULL}, {"application", "octet-stream"}, {"application", "zip"},
		{"application", "pdf"}, {"image", "jpeg"}, {"text", "plain"},
		{"application", "vnd.openxmlformats-officedocument.wordprocessingml.document"},
		{"application", "msword"},
	};
	if (size < 2)
		return 0;
	uint8_t opt = data[0];
	size_t nlen = data[1];
	data += 2;
	size -= 2;
	if (nlen > size)
		nlen = size;
	const char *name = (const char *)data;
	data += nlen;
	size -= nlen;

	struct scan_attach_conf conf;
	scan_attach_conf_default(&conf);
	if (opt & 2)
		conf.max_zip_entries = 5;
	if (opt & 4)
		conf.max_zip_name = 16;
	size_t cap = opt & 1 ? 256 : 65536;
	const char *type = types[(opt >> 3) & 7][0], *sub = types[(opt >> 3) & 7][1];

	struct result whole, split;
	run(&conf, cap, name, nlen, type, sub, data, size, opt, false, &whole);
	check(&conf, &whole);
	run(&conf, cap, name, nlen, type, sub, data, size, opt, true, &split);
	if (split.n != whole.n)
		abort();
	for (size_t k = 0; k < whole.n; k++)
		if (!same_hit(&whole.hit[k], &split.hit[k]) || whole.hit[k].part != 1)
			abort();

	/* the name rules of the part are those of the name alone */
	struct result alone;
	alone.n = scan_attach_check_name(&conf, name, nlen, alone.hit, SCAN_ATTACH_R_COUNT);
	check(&conf, &alone);
	size_t j = 0;
	for (size_t k = 0; k < whole.n; k++) {
		if (whole.hit[k].rule >= SCAN_ATTACH_R_ZIP)
			continue;
		if (j >= alone.n || !same_hit(&whole.hit[k], &alone.hit[j]))
			abort();
		j++;
	}
	for (; j < alone.n; j++)
		if (alone.hit[j].rule < SCAN_ATTACH_R_ZIP)
			abort();
	return 0;
}
