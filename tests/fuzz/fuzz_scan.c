/*
 * fuzz_scan.c - libFuzzer target for the path from MIME events to the rule
 * engine's targets (scan/scan.c: HTML to text, URI tokens, subject into the
 * body) and for the rule engine's streams behind it.
 *
 * Checks the contract, not just the absence of crashes: rules that count
 * every byte of each target (`multiple`, a match per byte) and a few that
 * look at URI and tag boundaries must give the same counts whether the
 * message comes whole, a byte at a time, or cut at points taken from the
 * input; and the meta rules as scan_rules_meta_eval leaves them must equal
 * their plain evaluation in order. The first byte picks the split seed.
 *
 * With SLUICE_FUZZ_RULES=PATH (a rule file or directory: Debian's
 * /usr/share/spamassassin, say) the same checks run on that rule set
 * instead, every rule run (no lazy evaluation): the near windows, own and
 * deferred gates, squeeze and chain gates must give the same hits however
 * the message is cut. SLUICE_FUZZ_CACHE=FILE keeps its databases between
 * runs (the first build takes minutes under ASan). Not part of the CI run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scan/rules.h"
#include "scan/scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char rules_text[] =
    "body    B_BYTES  /[^\\n]/\n"
    "tflags  B_BYTES  multiple maxhits=1000000\n"
    "body    B_LT     /</\n"
    "tflags  B_LT     multiple maxhits=1000000\n"
    "rawbody R_BYTES  /[^\\n]/\n"
    "tflags  R_BYTES  multiple maxhits=1000000\n"
    "full    F_BYTES  /[^\\n]/\n"
    "tflags  F_BYTES  multiple maxhits=1000000\n"
    "uri     U_BYTES  /[^\\n]/\n"
    "tflags  U_BYTES  multiple maxhits=1000000\n"
    "uri     U_LINES  /^[a-z]+:/im\n"
    "tflags  U_LINES  multiple maxhits=1000000\n"
    "uri     U_WWW    /^http:\\/\\/www\\./i\n"
    "util_rb_tld com org net\n"
    "redirector_pattern m'^https?:/*(?:\\w+\\.)?google(?:\\.\\w{2,3}){1,2}/url\\?.*?(?<=[?&])q=(.*?)(?:$|[&\\#])'i\n"
    "body    B_WORDS  /\\b(?:[a-z]{3,}[\\s\\.]+){3}/\n"
    "header  H_SUBJ   Subject =~ /\\w/\n"
    "meta    M_ANY    B_LT || U_WWW\n"
    "meta    M_NONE   !B_WORDS && !H_SUBJ\n"
    "meta    M_SUM    (U_LINES + B_LT > 2) || M_NONE\n";

static struct {
	struct scan_ruleset *rs;
	struct scan_hs *e;
	struct scan_hs_worker *w;
	struct scan_msg *s;
	uint32_t *want;
} g;

static void
setup(void)
{
	struct scan_hs_config cfg = {0};
	const char *path = getenv("SLUICE_FUZZ_RULES");

	g.rs = scan_rules_new();
	if (!g.rs || (path ? scan_rules_load_path(g.rs, path) :
	    scan_rules_load_text(g.rs, "fuzz.cf", rules_text, strlen(rules_text))) != 0 ||
	    scan_rules_finish(g.rs) != 0)
		abort();
	cfg.cache_path = getenv("SLUICE_FUZZ_CACHE");
	g.e = scan_hs_build(g.rs, &cfg, NULL);
	g.w = g.e ? scan_hs_worker_new(g.e) : NULL;
	g.s = g.e ? scan_msg_new(g.e) : NULL;
	g.want = calloc(g.rs->n + 1, sizeof(*g.want));
	if (!g.w || !g.s || !g.want)
		abort();
}

/* Scans data cut as mode says (0 whole, 1 byte by byte, 2 at points from
 * the input); the hits into out. */
static void
scan(const uint8_t *data, size_t size, unsigned mode, uint64_t seed, uint32_t *out)
{
	size_t off = 0;

	scan_msg_begin(g.s, g.w);
	while (off < size) {
		size_t k = size - off;
		if (mode == 1)
			k = 1;
		else if (mode == 2) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull + data[off];
			k = 1 + (size_t)(seed >> 33) % 64;
			if (k > size - off)
				k = size - off;
		}
		uint8_t *piece = malloc(k);     /* its own block: ASan sees over-reads */
		if (!piece)
			abort();
		memcpy(piece, data + off, k);
		scan_msg_feed(g.s, piece, k);
		free(piece);
		off += k;
	}
	if (scan_msg_end(g.s) != 0)
		abort();
	memcpy(out, g.s->hm->hits, g.rs->n * sizeof(*out));
}

/* names the first rule whose hits differ, then aborts */
static void
differ(const uint32_t *a, const uint32_t *b, const char *what)
{
	for (uint32_t i = 0; i < g.rs->n; i++)
		if (a[i] != b[i]) {
			fprintf(stderr, "fuzz_scan: %s: %s %u, whole %u\n", what, g.rs->rules[i].name,
			    a[i], b[i]);
			break;
		}
	abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!g.rs)
		setup();
	if (size < 1 || size > 65536)
		return 0;
	uint64_t seed = data[0];
	data++;
	size--;

	uint32_t *got = calloc(g.rs->n + 1, sizeof(*got));
	if (!got)
		abort();
	scan(data, size, 0, seed, g.want);
	/* the metas as left: their plain evaluation in order */
	memcpy(got, g.want, g.rs->n * sizeof(*got));
	for (uint32_t k = 0; k < g.rs->n_meta; k++) {
		uint32_t i = g.rs->meta_order[k];
		got[i] = scan_rules_meta_value(&g.rs->rules[i], got) != 0;
	}
	if (memcmp(got, g.want, g.rs->n * sizeof(*got)))
		differ(got, g.want, "metas in order");
	for (unsigned mode = 1; mode < 3; mode++) {
		if (mode == 1 && size > 4096)
			continue;       /* a byte at a time: small inputs only */
		scan(data, size, mode, seed, got);
		if (memcmp(got, g.want, g.rs->n * sizeof(*got)))
			differ(got, g.want, mode == 1 ? "byte by byte" : "cut");
	}
	free(got);
	return 0;
}
