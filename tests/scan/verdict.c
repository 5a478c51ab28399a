/*
 * Tests for scan/verdict.c: score, thresholds to actions, SMTP replies,
 * policy strings, X-Spam-* header text, subject tags, GTUBE.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "scan/rules.h"
#include "scan/verdict.h"

static struct scan_ruleset *
load(const char *text)
{
	struct scan_ruleset *rs = scan_rules_new();
	assert_non_null(rs);
	assert_int_equal(scan_rules_load_text(rs, "v.cf", text, strlen(text)), 0);
	assert_int_equal(scan_rules_finish(rs), 0);
	return rs;
}

static const char rules[] =
    "body A /a/\nscore A 2.0\n"
    "body B /b/\nscore B 3.5\n"
    "body MULT /m/\nscore MULT 1.5\ntflags MULT multiple\n"
    "body __SUB /s/\n"
    "meta M A && B\nscore M 4.0\n"
    "body NEG /n/\nscore NEG -1.0\n";

static void
set(const struct scan_ruleset *rs, uint32_t *hits, const char *name, uint32_t n)
{
	int i = scan_rules_find(rs, name);
	assert_true(i >= 0);
	hits[i] = n;
}

static void
test_score_and_actions(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(rules);
	struct scan_policy pol;
	struct scan_verdict v;
	uint32_t hits[32] = {0};

	scan_policy_default(&pol);
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	assert_true(v.score == 0);
	assert_int_equal(v.action, SCAN_ACT_ACCEPT);
	assert_int_equal(v.smtp_code, 250);

	set(rs, hits, "A", 1);
	set(rs, hits, "__SUB", 1);          /* never scores, never listed */
	set(rs, hits, "NEG", 1);
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	assert_true(v.score == 1.0);
	assert_int_equal(v.n_hits, 2);

	set(rs, hits, "B", 1);
	scan_rules_meta_eval(rs, hits);     /* M = A && B */
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	assert_true(v.score == 2.0 + 3.5 + 4.0 - 1.0);
	assert_int_equal(v.action, SCAN_ACT_TAG_LOWER);
	assert_true(v.spam);

	set(rs, hits, "MULT", 3);           /* score per hit */
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	assert_true(v.score == 8.5 + 4.5);
	assert_int_equal(v.action, SCAN_ACT_TAG_UPPER);

	set(rs, hits, "MULT", 5);
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	assert_true(v.score == 16.0);
	assert_int_equal(v.action, SCAN_ACT_REJECT);
	assert_int_equal(v.smtp_code, 550);
	assert_string_equal(v.smtp_enh, "5.7.1");

	/* not scanned: tempfail, whatever the score */
	scan_verdict_compute(rs, hits, false, true, &pol, &v);
	assert_int_equal(v.action, SCAN_ACT_TEMPFAIL);
	assert_int_equal(v.smtp_code, 451);

	/* GTUBE */
	memset(hits, 0, sizeof(hits));
	scan_verdict_compute(rs, hits, true, false, &pol, &v);
	assert_true(v.score == SCAN_GTUBE_SCORE);
	assert_int_equal(v.action, SCAN_ACT_REJECT);
	scan_rules_free(rs);
}

static void
test_policy_parse(void **state)
{
	(void)state;
	struct scan_policy p;
	struct scan_ruleset *rs = load(rules);
	struct scan_verdict v;
	uint32_t hits[32] = {0};

	assert_int_equal(scan_policy_parse(&p, "0:headers,4:quarantine,6:reject"), 0);
	assert_int_equal(p.n, 3);
	assert_true(p.required == 4);
	set(rs, hits, "A", 1);
	set(rs, hits, "B", 1);      /* 5.5 */
	scan_verdict_compute(rs, hits, false, false, &p, &v);
	assert_int_equal(v.action, SCAN_ACT_QUARANTINE);
	assert_int_equal(v.smtp_code, 250);
	assert_int_equal(scan_policy_parse(&p, "3:tempfail"), 0);
	scan_verdict_compute(rs, hits, false, false, &p, &v);
	assert_int_equal(v.action, SCAN_ACT_TEMPFAIL);
	assert_int_equal(scan_policy_parse(&p, "5:bogus"), -EINVAL);
	assert_int_equal(scan_policy_parse(&p, "10:reject,5:tag_lower"), -EINVAL);
	assert_int_equal(scan_policy_parse(&p, "x:reject"), -EINVAL);
	assert_int_equal(scan_policy_parse(&p, ""), -EINVAL);
	scan_rules_free(rs);
}

static void
test_headers(void **state)
{
	(void)state;
	struct scan_ruleset *rs = load(rules);
	struct scan_policy pol;
	struct scan_verdict v;
	uint32_t hits[32] = {0};
	char buf[1024];

	scan_policy_default(&pol);
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	size_t n = scan_verdict_headers(&v, rs, &pol, buf, sizeof(buf));
	assert_string_equal(buf, "X-Spam-Score: 0.0\r\n"
	    "X-Spam-Status: No, score=0.0 required=5.0 tests=none\r\n");
	assert_int_equal(n, strlen(buf));

	set(rs, hits, "A", 1);
	set(rs, hits, "B", 1);
	scan_rules_meta_eval(rs, hits);
	scan_verdict_compute(rs, hits, false, false, &pol, &v);
	scan_verdict_headers(&v, rs, &pol, buf, sizeof(buf));
	assert_string_equal(buf, "X-Spam-Score: 9.5\r\n"
	    "X-Spam-Status: Yes, score=9.5 required=5.0 tests=A,B,M\r\n");

	/* many rules: folded, no line over 78 columns */
	char text[4096] = "";
	for (int i = 0; i < 30; i++) {
		char l[96];
		snprintf(l, sizeof(l), "body A_LONG_RULE_NAME_%02d /x%d/\n", i, i);
		strcat(text, l);
	}
	struct scan_ruleset *rs2 = load(text);
	uint32_t h2[64];
	for (int i = 0; i < 64; i++)
		h2[i] = 1;
	scan_verdict_compute(rs2, h2, false, false, &pol, &v);
	assert_true(v.score == 30.0);
	n = scan_verdict_headers(&v, rs2, &pol, buf, sizeof(buf));
	assert_int_equal(n, strlen(buf));
	for (char *line = buf; *line;) {
		char *e = strstr(line, "\r\n");
		assert_non_null(e);
		if (e - line > 78)
			fail_msg("header line: got %d columns, want <= 78", (int)(e - line));
		line = e + 2;
	}
	assert_non_null(strstr(buf, "A_LONG_RULE_NAME_29\r\n"));
	/* cut like snprintf */
	char small[16];
	size_t need = scan_verdict_headers(&v, rs2, &pol, small, sizeof(small));
	assert_int_equal(need, n);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	scan_rules_free(rs2);
	scan_rules_free(rs);
}

static void
test_subject(void **state)
{
	(void)state;
	struct scan_policy pol;
	struct scan_verdict v = {0};
	char buf[128];

	scan_policy_default(&pol);
	v.action = SCAN_ACT_TAG_LOWER;
	scan_verdict_subject(&v, &pol, "Hello", 5, buf, sizeof(buf));
	assert_string_equal(buf, "{SPAM?} Hello");
	v.action = SCAN_ACT_TAG_UPPER;
	scan_verdict_subject(&v, &pol, "Hello", 5, buf, sizeof(buf));
	assert_string_equal(buf, "{SPAM!} Hello");
	scan_verdict_subject(&v, &pol, "{SPAM!} Hello", 13, buf, sizeof(buf));
	assert_string_equal(buf, "{SPAM!} Hello");      /* not twice */
	v.action = SCAN_ACT_ACCEPT;
	scan_verdict_subject(&v, &pol, "Hello", 5, buf, sizeof(buf));
	assert_string_equal(buf, "Hello");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_score_and_actions),
		cmocka_unit_test(test_policy_parse),
		cmocka_unit_test(test_headers),
		cmocka_unit_test(test_subject),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
