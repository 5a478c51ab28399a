/*
 * sa_agree_hits - the helper of test_sa_agreement.py: load rule files into
 * the engine (scan/rules, scan/hs) and print, per message, every active rule
 * that hit, __ subrules included (sluice-rules -s prints only the scored
 * ones, as a verdict does; the agreement test needs the subrules too).
 *
 *   sa_agree_hits -r RULES [-r ...] [-c CACHE] MSG...
 *
 * Output, tab-separated, one line per message:
 *   hit  MSG  R1,R2,...        (metas included; the test filters by type)
 *   gtube MSG 0|1              (the engine's own GTUBE literal)
 * Exit status 0, 1 if the engine could not be built, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scan/hs.h"
#include "scan/rules.h"
#include "scan/scan.h"

static uint8_t *
slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = NULL;
	size_t cap = 0, len = 0, k;

	if (!f)
		return NULL;
	do {
		if (len + 65536 > cap) {
			cap = (len + 65536) * 2;
			uint8_t *nb = realloc(b, cap);
			if (!nb) {
				free(b);
				fclose(f);
				return NULL;
			}
			b = nb;
		}
		k = fread(b + len, 1, cap - len, f);
		len += k;
	} while (k > 0);
	fclose(f);
	*n = len;
	return b;
}

int
main(int argc, char **argv)
{
	struct scan_hs_config cfg = {0};
	struct scan_hs_stats st;
	struct scan_ruleset *rs = scan_rules_new();
	int c, rc;

	if (!rs)
		return 2;
	while ((c = getopt(argc, argv, "r:c:")) != -1) {
		switch (c) {
		case 'r':
			rc = scan_rules_load_path(rs, optarg);
			if (rc < 0) {
				fprintf(stderr, "sa_agree_hits: %s: %s\n", optarg, strerror(-rc));
				return 2;
			}
			break;
		case 'c': cfg.cache_path = optarg; break;
		default:
			fprintf(stderr, "usage: sa_agree_hits -r RULES [-c CACHE] MSG...\n");
			return 2;
		}
	}
	if (scan_rules_finish(rs) < 0)
		return 2;
	struct scan_hs *e = scan_hs_build(rs, &cfg, &st);
	if (!e) {
		fprintf(stderr, "sa_agree_hits: engine build failed: %s\n", strerror(errno));
		return 1;
	}
	struct scan_hs_worker *w = scan_hs_worker_new(e);
	struct scan_msg *sm = scan_msg_new(e);
	if (!w || !sm)
		return 1;
	for (int i = optind; i < argc; i++) {
		size_t n;
		uint8_t *p = slurp(argv[i], &n);
		if (!p) {
			fprintf(stderr, "sa_agree_hits: %s: %s\n", argv[i], strerror(errno));
			return 2;
		}
		scan_msg_begin(sm, w);
		scan_msg_feed(sm, p, n);
		rc = scan_msg_end(sm);
		free(p);
		if (rc < 0) {
			fprintf(stderr, "sa_agree_hits: %s: scan failed (%d)\n", argv[i], rc);
			return 1;
		}
		printf("hit\t%s\t", argv[i]);
		bool first = true;
		for (uint32_t k = 0; k < rs->n; k++) {
			if (!sm->hm->hits[k] || rs->rules[k].state != SCAN_RS_ACTIVE)
				continue;
			printf("%s%s", first ? "" : ",", rs->rules[k].name);
			first = false;
		}
		printf("\ngtube\t%s\t%d\n", argv[i], sm->hm->gtube ? 1 : 0);
	}
	scan_msg_free(sm);
	scan_hs_worker_free(w);
	scan_hs_free(e);
	scan_rules_free(rs);
	return 0;
}
