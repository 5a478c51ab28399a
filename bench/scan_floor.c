/*
 * scan-floor - how fast could a target's stream be? A measurement behind
 * bench/RESULTS.md's scanning notes, not part of the engine.
 *
 *   SLUICE_HS_DUMP=DIR sluice-rules -r RULES -c CACHE -d MSGS -q
 *   scan-floor [-n MSGS] [-r REPEAT] [-v] RULES DIR/items-1-main DIR/text-1
 *
 * sluice-rules with SLUICE_HS_DUMP writes each target's main streaming
 * database (items-T-main: the expressions as compiled, with their ids and
 * flags) and the text each target saw (text-T: every message's, one after
 * another). scan-floor compiles four databases from a target's items, in
 * block mode, and times each over the text cut into MSGS equal pieces
 * (CPU time, the best of REPEAT passes):
 *
 *   as-is      the main database as sluice built it;
 *   literals   the floor of a literal prefilter: every item that is a
 *              literal as it is, and every regex item that has a gate
 *              literal (or literal set, as hs.c chooses them) as just its
 *              strings; an engine that ran every such rule only where its
 *              literal is found would scan at least this;
 *   no-gate    the regex items with no gate literal at all, alone: what no
 *              literal prefilter can take out of the stream;
 *   lit+no-gate  the two together: the stream of such an engine;
 *   no-gate apart  each no-gate item in a database of its own, the sum.
 *
 * -v lists the no-gate items, with their cost alone.
 */
#include <errno.h>
#include <hs/hs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scan/hs.h"
#include "scan/rules.h"

#define GATE_BIT 0x80000000u    /* as scan/hs.c marks a gate's id */

struct pats {
	const char **expr;
	unsigned *flags;
	unsigned *ids;
	unsigned n, cap;
};

static const char *text;
static size_t text_len;
static unsigned n_msgs = 200, repeat = 5;
static unsigned long long n_matches;

static void __attribute__((noreturn))
die(const char *what)
{
	fprintf(stderr, "scan-floor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void
pats_add(struct pats *p, const char *expr, unsigned flags, unsigned id)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? 2 * p->cap : 256;
		p->expr = realloc(p->expr, p->cap * sizeof(*p->expr));
		p->flags = realloc(p->flags, p->cap * sizeof(*p->flags));
		p->ids = realloc(p->ids, p->cap * sizeof(*p->ids));
		if (!p->expr || !p->flags || !p->ids)
			die("realloc");
	}
	p->expr[p->n] = expr;
	p->flags[p->n] = flags;
	p->ids[p->n++] = id;
}

static int
on_match(unsigned id, unsigned long long from, unsigned long long to, unsigned fl, void *ctx)
{
	(void)id, (void)from, (void)to, (void)fl, (void)ctx;
	n_matches++;
	return 0;
}

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Compiles p (block mode), scans the text piece by piece, prints a row;
 * returns the CPU seconds a message. quiet: no row.
 */
static double
measure(const char *name, const struct pats *p, bool quiet)
{
	hs_database_t *db;
	hs_compile_error_t *err;
	hs_scratch_t *scratch = NULL;
	size_t size = 0, piece = text_len / n_msgs;
	double best = 1e30;

	if (!p->n) {
		if (!quiet)
			printf("%-12s    0 patterns\n", name);
		return 0;
	}
	if (hs_compile_multi(p->expr, p->flags, p->ids, p->n, HS_MODE_BLOCK, NULL, &db,
	    &err) != HS_SUCCESS) {
		fprintf(stderr, "scan-floor: %s: expression %d: %s\n", name, err->expression,
		    err->message);
		exit(1);
	}
	hs_database_size(db, &size);
	if (hs_alloc_scratch(db, &scratch) != HS_SUCCESS) {
		fprintf(stderr, "scan-floor: %s: no scratch\n", name);
		exit(1);
	}
	for (unsigned r = 0; r < repeat; r++) {
		double t0 = cpu_now();
		n_matches = 0;
		for (unsigned m = 0; m < n_msgs; m++)
			hs_scan(db, text + (size_t)m * piece, (unsigned)piece, 0, scratch, on_match,
			    NULL);
		double dt = cpu_now() - t0;
		if (dt < best)
			best = dt;
	}
	if (!quiet)
		printf("%-12s %4u patterns %6zu KB %8.1f MB/s %7.1f us/msg %6.1f matches/msg\n",
		    name, p->n, size / 1024, (double)piece * n_msgs / best / 1e6,
		    best / n_msgs * 1e6, (double)n_matches / n_msgs);
	hs_free_scratch(scratch);
	hs_free_database(db);
	return best / n_msgs;
}

/* An item that is one literal as written: no regex syntax but \xNN. */
static bool
is_literal(const char *e)
{
	for (; *e; e++) {
		if (e[0] == '\\' && e[1] == 'x' && e[2] && e[3]) {
			e += 3;
			continue;
		}
		if (strchr("()[]{}.*+?|^$\\", *e))
			return false;
	}
	return true;
}

static char *
hex_literal(const uint8_t *b, unsigned n)
{
	char *s = malloc(4u * n + 1), *q = s;

	if (!s)
		die("malloc");
	for (unsigned i = 0; i < n; i++)
		q += sprintf(q, "\\x%02x", b[i]);
	*q = '\0';
	return s;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n = 0;

	if (!f || fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0 ||
	    !(b = malloc((size_t)n + 1)) || fread(b, 1, (size_t)n, f) != (size_t)n)
		die(path);
	fclose(f);
	b[n] = '\0';
	*len = (size_t)n;
	return b;
}

int
main(int argc, char **argv)
{
	struct pats as_is = { 0 }, lits = { 0 }, nogate = { 0 }, both = { 0 };
	bool verbose = false;
	int c;

	while ((c = getopt(argc, argv, "n:r:v")) != -1) {
		if (c == 'n')
			n_msgs = (unsigned)atoi(optarg);
		else if (c == 'r')
			repeat = (unsigned)atoi(optarg);
		else if (c == 'v')
			verbose = true;
		else
			goto usage;
	}
	if (argc - optind != 3 || !n_msgs || !repeat)
		goto usage;

	struct scan_ruleset *rs = scan_rules_new();
	if (!rs || scan_rules_load_path(rs, argv[optind]) < 0 || scan_rules_finish(rs) < 0) {
		fprintf(stderr, "scan-floor: %s: the rules did not load\n", argv[optind]);
		return 1;
	}
	size_t ilen;
	char *items = slurp(argv[optind + 1], &ilen);
	text = slurp(argv[optind + 2], &text_len);
	if (text_len < n_msgs) {
		fprintf(stderr, "scan-floor: %s: under one byte a message\n", argv[optind + 2]);
		return 1;
	}

	/* items: "ID FLAGS LEN NAME\nEXPR\n" each */
	unsigned n_items = 0, n_gated = 0;
	for (char *p = items, *end = items + ilen; p < end;) {
		unsigned id, flags;
		size_t len;
		int hl = 0;
		if (sscanf(p, "%u %u %zu %*s%n", &id, &flags, &len, &hl) != 3 || !hl)
			break;
		char *e = strchr(p + hl, '\n');
		if (!e || (size_t)(end - e - 1) < len)
			break;
		e++;
		e[len] = '\0';
		p = e + len + 1;
		n_items++;
		pats_add(&as_is, e, flags, n_items);
		if (is_literal(e)) {
			pats_add(&lits, e, flags, n_items);
			pats_add(&both, e, flags, n_items);
			continue;
		}
		uint8_t set[SCAN_RULES_LSET_MAX][SCAN_RULES_LSET_LEN + 1];
		uint32_t ri = id & ~GATE_BIT;
		unsigned ns = ri < rs->n && rs->rules[ri].re ?
		    scan_hs_gate_strings(rs->rules[ri].re, rs->rules[ri].re_flags, set, true) : 0;
		for (unsigned k = 0; k < ns; k++) {
			char *h = hex_literal(&set[k][1], set[k][0]);
			pats_add(&lits, h, HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH, n_items);
			pats_add(&both, h, HS_FLAG_CASELESS | HS_FLAG_SINGLEMATCH, n_items);
		}
		n_gated += ns > 0;
		if (!ns) {
			pats_add(&nogate, e, flags, n_items);
			pats_add(&both, e, flags, n_items);
			if (verbose)
				printf("no gate: %s %s\n", ri < rs->n ? rs->rules[ri].name : "?", e);
		}
	}
	printf("%u items: %u literals, %u regexes with a gate literal, %u without; "
	    "%zu bytes of text in %u pieces, best of %u\n", n_items,
	    n_items - n_gated - nogate.n, n_gated, nogate.n, text_len, n_msgs, repeat);
	measure("as-is", &as_is, false);
	measure("literals", &lits, false);
	measure("no-gate", &nogate, false);
	measure("lit+no-gate", &both, false);
	/* the no-gate items apart, a database each: what splitting can reach */
	double apart = 0;
	for (unsigned k = 0; k < nogate.n; k++) {
		struct pats one = { .expr = &nogate.expr[k], .flags = &nogate.flags[k],
			.ids = &nogate.ids[k], .n = 1, .cap = 1 };
		double t = measure("", &one, true);
		apart += t;
		if (verbose)
			printf("  %7.2f us/msg alone: %.70s\n", t * 1e6, nogate.expr[k]);
	}
	printf("%-12s %4u databases, %.1f us/msg in all\n", "no-gate apart", nogate.n, apart * 1e6);
	return 0;
usage:
	fprintf(stderr, "usage: scan-floor [-n MSGS] [-r REPEAT] [-v] RULES ITEMS TEXT\n");
	return 2;
}
