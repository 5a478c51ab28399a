/*
 * sluice-rules - load SpamAssassin rule files, report what the engine made
 * of them, and scan messages with them.
 *
 *   sluice-rules -r DIR|FILE [-r ...] [-c CACHE] [-v] [-P]
 *                [-s FILE|MBOX ...] [-d DIR] [-n REPEAT] [-q]
 *
 *   -r   rule file or directory (*.cf in name order); repeatable
 *   -c   Hyperscan cache file (reused when the rule set is unchanged)
 *   -s   message file, or mbox ("From " lines) of messages; repeatable
 *   -d   every regular file in DIR is a message
 *   -n   scan the messages N times and report messages/s (one core)
 *   -q   no per-message lines
 *   -v   diagnostics and per-rule classes
 *   -P   no HS_FLAG_PREFILTER gates (measurement)
 *   -S   no scan-cost model (measurement)
 *   -D   drop the rules that would run PCRE2 on every message (faster, fewer rules)
 *   -x P shed: leave out the costliest rules on the sample text until P
 *        percent of the active regex rules is out of effect (P <= 5: 95%
 *        stay; faster, fewer rules)
 *   -l   list every rule with its type and class, then exit
 *   -H F write every rule that hit (metas and __ rules too, with counts),
 *        one line per message, to F (implies -A)
 *   -C F compare the hits with a file written by -H; exit 1 if any differ
 *   -A   run every rule to the end of each message; by default (as sluiced
 *        does) the end of a message runs only what can still move a rule
 *        that counts in the verdict, so a "__" rule may read 0 (lazy)
 * Per message: "file score action tests=..." (rules that hit).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scan/hs.h"
#include "scan/rules.h"
#include "scan/scan.h"
#include "scan/verdict.h"

struct msg {
	char *name;
	uint8_t *p;
	size_t n;
};

static struct msg *msgs;
static size_t nmsgs, capmsgs;

static void
add_msg(const char *name, const uint8_t *p, size_t n)
{
	if (nmsgs == capmsgs) {
		capmsgs = capmsgs ? capmsgs * 2 : 256;
		msgs = realloc(msgs, capmsgs * sizeof(*msgs));
		if (!msgs)
			exit(2);
	}
	msgs[nmsgs].name = strdup(name);
	msgs[nmsgs].p = malloc(n + 1);
	if (!msgs[nmsgs].name || !msgs[nmsgs].p)
		exit(2);
	memcpy(msgs[nmsgs].p, p, n);
	msgs[nmsgs].n = n;
	nmsgs++;
}

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
			b = realloc(b, cap);
			if (!b)
				exit(2);
		}
		k = fread(b + len, 1, cap - len, f);
		len += k;
	} while (k > 0);
	fclose(f);
	*n = len;
	return b;
}

/* A file that starts with "From " is an mbox: split at "\nFrom " lines. */
static void
load_messages(const char *path)
{
	size_t n;
	uint8_t *b = slurp(path, &n);

	if (!b) {
		fprintf(stderr, "sluice-rules: %s: %s\n", path, strerror(errno));
		return;
	}
	if (n < 5 || memcmp(b, "From ", 5)) {
		add_msg(path, b, n);
		free(b);
		return;
	}
	size_t i = 0, k = 0;
	while (i < n) {
		const uint8_t *nl = memchr(b + i, '\n', n - i);
		size_t s = nl ? (size_t)(nl - b) + 1 : n;      /* body starts after the From line */
		size_t e = s;
		while (e < n) {
			const uint8_t *q = memchr(b + e, '\n', n - e);
			if (!q) {
				e = n;
				break;
			}
			e = (size_t)(q - b) + 1;
			if (n - e >= 5 && !memcmp(b + e, "From ", 5))
				break;
		}
		char name[600];
		snprintf(name, sizeof(name), "%s#%zu", path, ++k);
		add_msg(name, b + s, e - s);
		i = e;
	}
	free(b);
}

static int
cmp_msg(const void *a, const void *b)
{
	return strcmp(((const struct msg *)a)->name, ((const struct msg *)b)->name);
}

static void
load_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t first = nmsgs;

	if (!d) {
		fprintf(stderr, "sluice-rules: %s: %s\n", dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		char p[4096];
		struct stat sb;
		snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (de->d_name[0] == '.' || stat(p, &sb) < 0 || !S_ISREG(sb.st_mode))
			continue;
		load_messages(p);
	}
	closedir(d);
	qsort(msgs + first, nmsgs - first, sizeof(*msgs), cmp_msg);
}

/* "name rule=count rule=count ...": every nonzero hit, in rule order */
static void
hit_line(FILE *f, const char *name, const struct scan_ruleset *rs, const struct scan_msg *sm)
{
	fprintf(f, "%s", name);
	if (sm->hm->gtube)
		fprintf(f, " *GTUBE");
	for (uint32_t k = 0; k < rs->n; k++)
		if (sm->hm->hits[k])
			fprintf(f, " %s=%u", rs->rules[k].name, sm->hm->hits[k]);
	fprintf(f, "\n");
}

/* Prints the words of a that are not in b (space-separated lists). */
static void
words_missing(const char *label, const char *a, const char *b)
{
	char *w = strdup(a), *save = NULL;

	if (!w)
		return;
	printf("compare:   %s:", label);
	for (char *t = strtok_r(w, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
		size_t n = strlen(t);
		const char *q = b;
		bool found = false;
		while ((q = strstr(q, t))) {
			if ((q == b || q[-1] == ' ') && (q[n] == ' ' || q[n] == '\n' || q[n] == '\0')) {
				found = true;
				break;
			}
			q += n;
		}
		if (!found)
			printf(" %s", t);
	}
	printf("\n");
	free(w);
}

/* Compares the hit lines of this run (now) with ref; prints what differs. */
static int
compare_hits(FILE *now, const char *ref_path)
{
	FILE *ref = fopen(ref_path, "r");
	char *a = NULL, *b = NULL;
	size_t an = 0, bn = 0;
	unsigned lines = 0, diff = 0;

	if (!ref) {
		fprintf(stderr, "sluice-rules: %s: %s\n", ref_path, strerror(errno));
		return 2;
	}
	rewind(now);
	for (;;) {
		ssize_t x = getline(&a, &an, ref), y = getline(&b, &bn, now);
		if (x < 0 && y < 0)
			break;
		lines++;
		if (x < 0 || y < 0 || strcmp(a, b)) {
			diff++;
			if (diff > 20)
				continue;
			if (x < 0 || y < 0) {
				printf("compare: message count differs\n");
				continue;
			}
			printf("compare: %.*s\n", (int)strcspn(a, " \n"), a);
			words_missing("only before", a, b);
			words_missing("only after", b, a);
		}
	}
	printf("compare: %u messages, %u with different hits\n", lines, diff);
	free(a);
	free(b);
	fclose(ref);
	return diff ? 1 : 0;
}

static const char *const cls_names[SCAN_HS_C_COUNT] = {
	"none", "hyperscan", "pcre2-gated", "pcre2-prefilter", "pcre2-always", "failed",
};

static void
report(const struct scan_ruleset *rs, const struct scan_hs *e, const struct scan_hs_stats *st,
    bool verbose)
{
	const struct scan_rules_stats *s = &rs->st;
	unsigned tot_re = 0, tot_eff = 0;

	printf("rules: %u files, %u lines, %u names\n", s->files, s->lines, rs->n);
	printf("%-8s %7s %7s %7s %7s %7s | %7s %7s %7s %7s %7s %7s\n", "type", "defined", "active",
	    "eval", "score0", "broken", "hs", "gated", "prefilt", "always", "failed", "effect%");
	for (unsigned t = 0; t < SCAN_RT_COUNT; t++) {
		printf("%-8s %7u %7u %7u %7u %7u", scan_rules_type_name(t), s->defined[t],
		    s->active[t], s->eval[t], s->disabled[t], s->broken[t]);
		if (t < SCAN_T_COUNT) {
			const unsigned *c = st->cls[t];
			unsigned re = s->active[t];
			unsigned eff = c[SCAN_HS_C_HS] + c[SCAN_HS_C_GATED] + c[SCAN_HS_C_PREFILTER] +
			    c[SCAN_HS_C_ALWAYS];
			tot_re += re;
			tot_eff += eff;
			printf(" | %7u %7u %7u %7u %7u %6.1f%%", c[SCAN_HS_C_HS], c[SCAN_HS_C_GATED],
			    c[SCAN_HS_C_PREFILTER], c[SCAN_HS_C_ALWAYS], c[SCAN_HS_C_FAILED],
			    re ? 100.0 * eff / re : 100.0);
		}
		printf("\n");
	}
	printf("regex rules in effect: %u of %u active (%.1f%%); header exists: rules %u, "
	    "negated %u\n", tot_eff, tot_re, tot_re ? 100.0 * tot_eff / tot_re : 100.0,
	    s->exists, s->negated);
	unsigned shed = 0;
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		shed += st->shed[t];
	if (shed) {
		printf("shed (the costliest on the sample text, counted as failed above):");
		for (unsigned t = 0; t < SCAN_T_COUNT; t++)
			if (st->shed[t])
				printf(" %s=%u", scan_rules_type_name(t), st->shed[t]);
		printf("\n");
	}
	printf("databases:");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		printf(" %s=%u pat/%zu KB/stream %zu B", scan_rules_type_name(t), st->patterns[t],
		    st->db_bytes[t] / 1024, st->stream_bytes[t]);
	printf(" scratch=%zu KB", st->scratch_bytes / 1024);
	printf("\nsample text MB/s:");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		printf(" %s=%.0f", scan_rules_type_name(t), st->sample_mbps[t]);
	printf(" gates:");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->gpatterns[t])
			printf(" %s=%.0f", scan_rules_type_name(t), st->gsample_mbps[t]);
	printf("\ngates databases:");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->gpatterns[t])
			printf(" %s=%u pat/%zu KB/stream %zu B", scan_rules_type_name(t), st->gpatterns[t],
			    st->gdb_bytes[t] / 1024, st->gstream_bytes[t]);
	printf("\nstream apart (slow alone on the sample, no gate: in the gates stream):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->apart[t])
			printf(" %s=%u", scan_rules_type_name(t), st->apart[t]);
	printf("\nown gates (relaxed forms or runs of them; block mode, over the kept text):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->own[t])
			printf(" %s=%u pat in %u databases/%zu KB (ASCII forms %u/%zu KB, plain %u/%zu KB)",
			    scan_rules_type_name(t), st->own[t], st->own_dbs[t], st->rdb_bytes[t] / 1024,
			    st->ascii_dbs[t], st->ascii_bytes[t] / 1024, st->plain_dbs[t],
			    st->plain_bytes[t] / 1024);
	printf("\ndeferred (slow alone on the sample text; run alone over the kept text when the gate fired):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->deferred[t])
			printf(" %s=%u (%u squeeze, %u run)", scan_rules_type_name(t), st->deferred[t],
			    st->squeezed[t], st->deferred_run[t]);
	printf("; %zu KB of databases\nsqueeze databases:", st->ddb_bytes / 1024);
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->spatterns[t])
			printf(" %s=%u pat/%zu KB/stream %zu B", scan_rules_type_name(t), st->spatterns[t],
			    st->sdb_bytes[t] / 1024, st->sstream_bytes[t]);
	printf("\nchain gates (whole repeats):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->chained[t])
			printf(" %s=%u", scan_rules_type_name(t), st->chained[t]);
	printf("\nnear (PCRE2 rules run only near their gate's match ends):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->near[t])
			printf(" %s=%u", scan_rules_type_name(t), st->near[t]);
	printf("\nfiltered (PCRE2 rules whose relaxed form is probed first):");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->filtered[t])
			printf(" %s=%u", scan_rules_type_name(t), st->filtered[t]);
	printf("\ncounted without Hyperscan:");
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		if (st->counted[t])
			printf(" %s=%u", scan_rules_type_name(t), st->counted[t]);
	printf("\ncost model: %u compilable patterns sent to PCRE2\n", st->costly);
	printf("scratch %zu KB per worker\n", st->scratch_bytes / 1024);
	printf("header keys %u; cache %s (%d); build %.2f s\n", st->header_keys,
	    st->cache_hit ? "hit" : "miss", st->cache_status, st->compile_seconds);
	printf("URI rules' TLDs (util_rb_tld) %u; redirector patterns %u\n", rs->n_tlds,
	    rs->n_redirs);
	printf("skipped: %u directives, %u lines in false conditionals, %u lang, %u include; "
	    "%u redefined; %u tflags words ignored; %u orphan score/describe/tflags; "
	    "%u meta refs to unknown rules; %u diagnostics\n", s->skipped_directives,
	    s->cond_skipped, s->lang_skipped, s->includes_skipped, s->redefined, s->tflags_ignored,
	    s->orphan_attrs, s->meta_unknown_refs, s->errors);
	printf("skipped directives:");
	for (unsigned i = 0; i < rs->n_skips && i < (verbose ? rs->n_skips : 12); i++)
		printf(" %s=%u", rs->skips[i].name, rs->skips[i].count);
	printf("\nHyperscan refused (reason: count):\n");
	for (unsigned i = 0; i < st->n_reason; i++)
		printf("  %-60s %u\n", st->reason[i].why, st->reason[i].count);
	if (verbose) {
		for (unsigned i = 0; i < rs->n_diag; i++)
			printf("diag: %s\n", rs->diag[i]);
		for (uint32_t i = 0; i < rs->n; i++) {
			unsigned c = scan_hs_rule_class(e, i);
			if (c == SCAN_HS_C_FAILED || c == SCAN_HS_C_ALWAYS || c == SCAN_HS_C_PREFILTER)
				printf("rule %s %s %s\n", rs->rules[i].name,
				    scan_rules_type_name(rs->rules[i].type), cls_names[c]);
		}
	}
}

int
main(int argc, char **argv)
{
	struct scan_hs_config cfg = {0};
	struct scan_hs_stats st;
	struct scan_ruleset *rs = scan_rules_new();
	const char *dirs[64];
	unsigned ndirs = 0, repeat = 0;
	bool verbose = false, quiet = false, list = false, all_rules = false;
	const char *hit_path = NULL, *cmp_path = NULL;
	FILE *hitf = NULL;
	int c, rc;

	if (!rs)
		return 2;
	while ((c = getopt(argc, argv, "r:c:s:d:n:qvPlH:C:SDNM:Wx:Ah")) != -1) {
		switch (c) {
		case 'r':
			rc = scan_rules_load_path(rs, optarg);
			if (rc < 0) {
				fprintf(stderr, "sluice-rules: %s: %s\n", optarg, strerror(-rc));
				return 2;
			}
			break;
		case 'c': cfg.cache_path = optarg; break;
		case 's': load_messages(optarg); break;
		case 'd':
			if (ndirs < 64)
				dirs[ndirs++] = optarg;
			break;
		case 'n': repeat = (unsigned)atoi(optarg); break;
		case 'q': quiet = true; break;
		case 'v': verbose = true; break;
		case 'P': cfg.no_prefilter = true; break;
		case 'S': cfg.no_scan_cost = true; break;
		case 'D': cfg.drop_always = true; break;
		case 'N': cfg.no_defer = true; break;
		case 'M': cfg.defer_mbps = atof(optarg); break;
		case 'W': cfg.no_near = true; break;
		case 'x':
			cfg.shed_pct = atof(optarg);
			if (!(cfg.shed_pct >= 0 && cfg.shed_pct <= SCAN_HS_SHED_MAX)) {
				fprintf(stderr, "sluice-rules: -x %s: the percent to shed must be "
				    "from 0 to %.0f\n", optarg, SCAN_HS_SHED_MAX);
				return 2;
			}
			break;
		case 'l': list = true; break;
		case 'A': all_rules = true; break;
		case 'H': hit_path = optarg; break;
		case 'C': cmp_path = optarg; break;
		default:
			fprintf(stderr, "usage: sluice-rules -r RULES [-c CACHE] [-s MSG|MBOX] [-d DIR] "
			    "[-n REPEAT] [-q] [-v] [-P] [-S] [-D] [-x PCT] [-N] [-M MBPS] [-W] [-l] [-H HITS] "
			    "[-C HITS] [-A]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	for (unsigned i = 0; i < ndirs; i++)
		load_dir(dirs[i]);
	if (scan_rules_finish(rs) < 0)
		return 2;
	struct scan_hs *e = scan_hs_build(rs, &cfg, &st);
	if (!e) {
		fprintf(stderr, "sluice-rules: engine build failed: %s\n", strerror(errno));
		return 1;
	}
	if (list) {
		for (uint32_t i = 0; i < rs->n; i++)
			if (rs->rules[i].defined)
				printf("%s %s %s%s%s %.3f\n", rs->rules[i].name,
				    scan_rules_type_name(rs->rules[i].type),
				    rs->rules[i].state == SCAN_RS_ACTIVE ?
				    cls_names[scan_hs_rule_class(e, i)] :
				    rs->rules[i].state == SCAN_RS_EVAL ? "eval" :
				    rs->rules[i].state == SCAN_RS_DISABLED ? "score0" : "broken",
				    *scan_hs_rule_how(e, i) ? "," : "", scan_hs_rule_how(e, i),
				    rs->rules[i].score);
		scan_hs_free(e);
		scan_rules_free(rs);
		return 0;
	}
	report(rs, e, &st, verbose);
	if (!nmsgs) {
		scan_hs_free(e);
		scan_rules_free(rs);
		return 0;
	}
	struct scan_hs_worker *w = scan_hs_worker_new(e);
	struct scan_msg *sm = scan_msg_new(e);
	struct scan_policy pol;
	if (!w || !sm)
		return 2;
	sm->hm->lazy = !all_rules && !hit_path && !cmp_path;
	scan_policy_default(&pol);
	unsigned acts[SCAN_ACT_COUNT] = {0};
	if (hit_path)
		hitf = fopen(hit_path, "w+");
	else if (cmp_path)
		hitf = tmpfile();
	if ((hit_path || cmp_path) && !hitf) {
		fprintf(stderr, "sluice-rules: hit file: %s\n", strerror(errno));
		return 2;
	}
	uint64_t pcre_runs = 0, bytes = 0, writes = 0, deferred_runs = 0, filter_runs = 0;
	uint64_t near_runs = 0, ascii_runs = 0, plain_runs = 0, lazy_skips = 0, deferred_near = 0;
	for (size_t i = 0; i < nmsgs; i++) {
		struct scan_verdict v;
		scan_msg_begin(sm, w);
		scan_msg_feed(sm, msgs[i].p, msgs[i].n);
		rc = scan_msg_end(sm);
		scan_verdict_compute(rs, sm->hm->hits, sm->hm->gtube, rc < 0, &pol, &v);
		acts[v.action]++;
		pcre_runs += sm->hm->pcre_runs;
		deferred_runs += sm->hm->deferred_runs;
		deferred_near += sm->hm->deferred_near;
		filter_runs += sm->hm->filter_runs;
		near_runs += sm->hm->near_runs;
		ascii_runs += sm->hm->ascii_runs;
		plain_runs += sm->hm->plain_runs;
		lazy_skips += sm->hm->lazy_skips;
		writes += sm->hm->writes;
		bytes += msgs[i].n;
		if (hitf)
			hit_line(hitf, msgs[i].name, rs, sm);
		if (quiet)
			continue;
		printf("%s %.1f %s tests=", msgs[i].name, v.score, scan_action_name(v.action));
		int g = scan_rules_find(rs, "GTUBE");
		if (v.gtube && !(g >= 0 && sm->hm->hits[g]))
			printf("GTUBE%s", v.n_hits ? "," : "");
		for (uint32_t k = 0; k < v.n_hits; k++)
			printf("%s%s", k ? "," : "", rs->rules[v.hit[k]].name);
		printf("\n");
	}
	printf("scanned %zu messages (%.1f KB avg): ", nmsgs, bytes / 1024.0 / nmsgs);
	for (unsigned a = 0; a < SCAN_ACT_COUNT; a++)
		if (acts[a])
			printf("%s=%u ", scan_action_name(a), acts[a]);
	printf("pcre2 runs/msg=%.1f (near %.1f) deferred runs/msg=%.1f (near %.1f) filter probes/msg=%.1f "
	    "hyperscan writes/msg=%.1f own gates in ASCII forms/msg=%.2f (plain %.2f) "
	    "left unrun/msg=%.1f (%s)\n",
	    (double)pcre_runs / nmsgs, (double)near_runs / nmsgs, (double)deferred_runs / nmsgs,
	    (double)deferred_near / nmsgs,
	    (double)filter_runs / nmsgs, (double)writes / nmsgs, (double)ascii_runs / nmsgs,
	    (double)plain_runs / nmsgs, (double)lazy_skips / nmsgs,
	    sm->hm->lazy ? "lazy" : "every rule");
	int cmp_rc = 0;
	if (hitf) {
		fflush(hitf);
		if (cmp_path)
			cmp_rc = compare_hits(hitf, cmp_path);
		fclose(hitf);
	}
	if (repeat) {
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (unsigned r = 0; r < repeat; r++)
			for (size_t i = 0; i < nmsgs; i++) {
				scan_msg_begin(sm, w);
				scan_msg_feed(sm, msgs[i].p, msgs[i].n);
				scan_msg_end(sm);
			}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
		double n = (double)nmsgs * repeat;
		printf("throughput: %.0f msgs/s, %.1f MB/s (%u x %zu messages, %.2f s, one core)\n",
		    n / s, (double)bytes * repeat / s / 1e6, repeat, nmsgs, s);
	}
	scan_msg_free(sm);
	scan_hs_worker_free(w);
	scan_hs_free(e);
	scan_rules_free(rs);
	for (size_t i = 0; i < nmsgs; i++) {
		free(msgs[i].name);
		free(msgs[i].p);
	}
	free(msgs);
	return cmp_rc;
}
