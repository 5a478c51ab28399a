/*
 * tests/control/filter.c - control/filter.c: rules written by the test
 * (header, body, uri, meta, scores), policy to action, the subject tag spliced
 * into the iovecs at every split, the X-Spam-* header text, reload.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/filter.h"

static const char rules_v1[] =
    "header T_SUBJ Subject =~ /\\bviagra\\b/i\n"
    "score T_SUBJ 3.0\n"
    "body T_BODY /cheap meds/i\n"
    "score T_BODY 3.0\n"
    "uri T_URI /spam\\.example\\.net/\n"
    "score T_URI 2.0\n"
    "meta T_META T_SUBJ && T_BODY\n"
    "score T_META 2.5\n";

static char dir[64];

static const char *
write_rules(const char *text)
{
	static char path[128];
	snprintf(path, sizeof(path), "%s/rules.cf", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static struct ctl_filter *
make(const char *policy)
{
	struct ctl_filter_conf fc = { 0 };
	fc.rules[0] = write_rules(rules_v1);
	fc.nrules = 1;
	if (policy)
		assert_int_equal(scan_policy_parse(&fc.pol, policy), 0);
	else
		scan_policy_default(&fc.pol);
	fc.attach = true;
	scan_attach_conf_default(&fc.attach_conf);
	fc.slots_init = 1;
	fc.slots_max = 2;
	char err[256];
	struct ctl_filter *f = ctl_filter_new(&fc, err, sizeof(err));
	assert_non_null(f);
	assert_int_equal(ctl_filter_wait(f, 30000), 0);
	return f;
}

/* Feed msg in pieces of `step` bytes (0: whole); returns the result. */
static const struct ctl_filter_result *
run(struct ctl_filter_msg *m, const char *msg, size_t step)
{
	size_t n = strlen(msg);
	for (size_t o = 0; o < n;) {
		size_t k = step == 0 || n - o < step ? n - o : step;
		ctl_filter_feed(m, (const uint8_t *)msg + o, k);
		o += k;
	}
	return ctl_filter_end(m);
}

static const char spam[] =
    "From: a@b.example\r\nSubject: Buy viagra now\r\nTo: c@d.example\r\n\r\n"
    "Cheap meds at http://spam.example.net/x\r\n";

static void
test_actions(void **state)
{
	(void)state;
	struct ctl_filter *f = make(NULL);
	struct ctl_filter_worker *fw = ctl_filter_worker_new(f, 0);
	int err = 0;
	struct ctl_filter_msg *m = ctl_filter_begin(fw, &err);
	assert_non_null(m);
	const struct ctl_filter_result *r = run(m, spam, 0);
	assert_int_equal(r->action, SCAN_ACT_TAG_UPPER);  /* 10.5 */
	assert_true(r->score > 10.4 && r->score < 10.6);
	assert_int_equal(r->smtp_code, 250);
	size_t hl;
	const char *h = ctl_filter_headers(m, &hl);
	assert_true(hl > 0 && !strncmp(h, "X-Spam-Score: 10.5\r\nX-Spam-Status: Yes, score=10.5", 50));
	assert_non_null(strstr(h, "T_META"));
	assert_null(strstr(h, "__"));
	char log[800];
	ctl_filter_log(m, log, sizeof(log));
	assert_non_null(strstr(log, " filter=tag_upper score=10.5 rules="));
	assert_non_null(strstr(log, "truncated=0"));
	/* pool: slots_max 2, then ENOBUFS */
	struct ctl_filter_msg *m2 = ctl_filter_begin(fw, &err);
	assert_non_null(m2);
	assert_null(ctl_filter_begin(fw, &err));
	assert_int_equal(err, -ENOBUFS);
	r = run(m2, "Subject: hi\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n", 7);
	assert_int_equal(r->action, SCAN_ACT_REJECT);
	assert_int_equal(r->smtp_code, 550);
	assert_string_equal(r->smtp_enh, "5.7.1");
	ctl_filter_put(fw, m2);
	ctl_filter_put(fw, m);
	ctl_filter_worker_free(fw);
	ctl_filter_free(f);
}

static void
test_policy(void **state)
{
	(void)state;
	struct ctl_filter *f = make("1:headers,5:quarantine,8:tempfail");
	struct ctl_filter_worker *fw = ctl_filter_worker_new(f, 0);
	int err;
	struct ctl_filter_msg *m = ctl_filter_begin(fw, &err);
	const struct ctl_filter_result *r = run(m, spam, 3);
	assert_int_equal(r->action, SCAN_ACT_TEMPFAIL);
	assert_int_equal(r->smtp_code, 451);
	ctl_filter_put(fw, m);
	m = ctl_filter_begin(fw, &err);
	r = run(m, "Subject: viagra\r\n\r\nhttp://spam.example.net/\r\n", 0);
	assert_int_equal(r->action, SCAN_ACT_QUARANTINE);
	ctl_filter_put(fw, m);
	m = ctl_filter_begin(fw, &err);
	r = run(m, "Subject: hello\r\n\r\nhi\r\n", 0);
	assert_int_equal(r->action, SCAN_ACT_ACCEPT);
	size_t hl;
	ctl_filter_headers(m, &hl);
	assert_true(hl > 0);  /* scan_policy_parse keeps headers on every message */
	ctl_filter_put(fw, m);
	ctl_filter_worker_free(fw);
	ctl_filter_free(f);
}

/* The spliced iovecs, joined. */
static size_t
join(const struct iovec *iov, unsigned n, char *out, size_t cap)
{
	size_t o = 0;
	for (unsigned i = 0; i < n; i++) {
		assert_true(o + iov[i].iov_len < cap);
		memcpy(out + o, iov[i].iov_base, iov[i].iov_len);
		o += iov[i].iov_len;
	}
	out[o] = '\0';
	return o;
}

static void
test_subject_splice(void **state)
{
	(void)state;
	struct ctl_filter *f = make(NULL);
	struct ctl_filter_worker *fw = ctl_filter_worker_new(f, 0);
	const char *msg = "From: a@b.example\r\nX-Subject: no\r\nSubject:   Buy viagra now\r\n"
	                  "\r\nSubject: not this one\r\ncheap meds http://spam.example.net/\r\n";
	size_t n = strlen(msg);
	char want[1024], got[2048];
	for (size_t split = 1; split < n; split++) {
		int err;
		struct ctl_filter_msg *m = ctl_filter_begin(fw, &err);
		assert_non_null(m);
		/* feed at one split and store the same split as two chunks */
		ctl_filter_feed(m, (const uint8_t *)msg, split);
		ctl_filter_feed(m, (const uint8_t *)msg + split, n - split);
		const struct ctl_filter_result *r = ctl_filter_end(m);
		assert_int_equal(r->action, SCAN_ACT_TAG_UPPER);
		struct iovec iov[8] = {
			{ (void *)"Received: x\r\n", 13 },
			{ (void *)msg, split },
			{ (void *)(msg + split), n - split },
		};
		unsigned k = ctl_filter_splice(m, iov, 3, 8);
		size_t hl;
		const char *h = ctl_filter_headers(m, &hl);
		int w = snprintf(want, sizeof(want), "Received: x\r\n%.*s%s", (int)hl, h,
		                 "From: a@b.example\r\nX-Subject: no\r\nSubject:   {SPAM!} Buy viagra now\r\n"
		                 "\r\nSubject: not this one\r\ncheap meds http://spam.example.net/\r\n");
		size_t gl = join(iov, k, got, sizeof(got));
		if (gl != (size_t)w || memcmp(got, want, gl) != 0)
			fail_msg("split %zu: got %s, want %s", split, got, want);
		ctl_filter_put(fw, m);
	}
	/* already tagged: unchanged */
	int err;
	struct ctl_filter_msg *m = ctl_filter_begin(fw, &err);
	const char *t = "Subject: {SPAM!} viagra\r\n\r\ncheap meds http://spam.example.net/\r\n";
	run(m, t, 5);
	struct iovec iov[6] = { { (void *)"R\r\n", 3 }, { (void *)t, strlen(t) } };
	unsigned k = ctl_filter_splice(m, iov, 2, 6);
	assert_int_equal(k, 3);  /* the headers only */
	ctl_filter_put(fw, m);
	ctl_filter_worker_free(fw);
	ctl_filter_free(f);
}

static void
test_reload(void **state)
{
	(void)state;
	struct ctl_filter *f = make(NULL);
	struct ctl_filter_worker *fw = ctl_filter_worker_new(f, 0);
	int err;
	struct ctl_filter_msg *old = ctl_filter_begin(fw, &err);
	ctl_filter_feed(old, (const uint8_t *)"Subject: report\r\n\r\n", 19);
	write_rules("header T_REPORT Subject =~ /report/\nscore T_REPORT 20\n");
	assert_int_equal(ctl_filter_generation(f), 1);
	ctl_filter_reload(f);
	assert_int_equal(ctl_filter_wait(f, 30000), 0);
	assert_int_equal(ctl_filter_generation(f), 2);
	struct ctl_filter_msg *m = ctl_filter_begin(fw, &err);
	assert_non_null(m);
	const struct ctl_filter_result *r = run(m, "Subject: report\r\n\r\nx\r\n", 0);
	assert_int_equal(r->action, SCAN_ACT_REJECT);
	ctl_filter_put(fw, m);
	/* the message that began before the reload ends on the old rules */
	ctl_filter_feed(old, (const uint8_t *)"x\r\n", 3);
	r = ctl_filter_end(old);
	assert_int_equal(r->action, SCAN_ACT_ACCEPT);
	ctl_filter_put(fw, old);
	/* a failed load keeps the engine */
	unlink(write_rules(""));
	ctl_filter_reload(f);
	assert_true(ctl_filter_wait(f, 30000) < 0);
	assert_true(ctl_filter_ready(f));
	assert_int_equal(ctl_filter_generation(f), 2);
	ctl_filter_worker_free(fw);
	ctl_filter_free(f);
}

int
main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/sluice-filter-test.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_actions),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_subject_splice),
		cmocka_unit_test(test_reload),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char p[128];
	snprintf(p, sizeof(p), "%s/rules.cf", dir);
	unlink(p);
	rmdir(dir);
	return rc;
}
