/*
 * tests/control/dsn.c - control/dsn.c: RFC 3464 failure reports, NOTIFY
 * rules, xtext decoding.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "control/dsn.h"

#define FAILF(...) do { print_error(__VA_ARGS__); print_error("\n"); fail(); } while (0)

static const char orig[] =
	"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
	"From: <alice@example.test>\r\n"
	"Subject: hello\r\n"
	"\r\n"
	"body line\r\n"
	"second line\r\n";

static void want_in(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		FAILF("got report without \"%s\", want it; report:\n%s", needle, hay);
}

static void want_not_in(const char *hay, const char *needle)
{
	if (strstr(hay, needle) != NULL)
		FAILF("got \"%s\" in the report, want it absent; report:\n%s", needle, hay);
}

static struct ctl_dsn base(const struct ctl_dsn_rcpt *r, size_t n)
{
	struct ctl_dsn d = {
		.reporting_mta = "mx.example.test", .qid = "ABC123", .sender = "alice@example.test",
		.envid = NULL, .arrival = 1700000000, .now = 1700000100, .ret = SMTP_RET_NONE,
		.msg = (const uint8_t *)orig, .msglen = sizeof orig - 1, .return_max = 65536,
		.rcpt = r, .nrcpt = n,
	};
	return d;
}

static size_t count(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

static void test_full(void **state)
{
	struct ctl_dsn_rcpt r[2] = {
		{ "bob@example.test", "rfc822;Bob+2Bx@example.test", "5.1.1", "smtp",
		  "550 5.1.1 <bob@example.test> User doesn't exist" },
		{ "carol@example.test", NULL, "4.2.2", "smtp", "452 4.2.2 Quota (gave up after 604800s)" },
	};
	struct ctl_dsn d = base(r, 2);
	char *out;
	size_t len;
	bool b8;

	d.envid = "id+2B1";
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), 0);
	assert_int_equal(strlen(out), len);
	assert_false(b8);
	want_in(out, "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\r\n");
	want_in(out, "To: <alice@example.test>\r\n");
	want_in(out, "Auto-Submitted: auto-replied\r\n");
	want_in(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	             "\tboundary=\"=_sluice_ABC123_1700000100_0\"\r\n");
	want_in(out, "Content-Type: message/delivery-status\r\n");
	want_in(out, "Reporting-MTA: dns; mx.example.test\r\n");
	want_in(out, "Original-Envelope-Id: id+1\r\n");
	want_in(out, "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n");
	want_in(out, "\r\n\r\nOriginal-Recipient: rfc822;Bob+x@example.test\r\n"
	             "Final-Recipient: rfc822; bob@example.test\r\nAction: failed\r\n"
	             "Status: 5.1.1\r\n"
	             "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.test> User doesn't exist\r\n");
	want_in(out, "\r\n\r\nFinal-Recipient: rfc822; carol@example.test\r\nAction: failed\r\n"
	             "Status: 4.2.2\r\n");
	/* No RET: the whole message, as message/rfc822. */
	want_in(out, "Content-Type: message/rfc822\r\n");
	want_in(out, "second line\r\n");
	/* Three parts and the closing delimiter. */
	assert_int_equal(count(out, "\r\n--=_sluice_ABC123_1700000100_0\r\n"), 3);
	want_in(out, "\r\n--=_sluice_ABC123_1700000100_0--\r\n");
	/* Every line ends in CRLF and is shorter than 998 bytes. */
	for (size_t i = 0, col = 0; i < len; i++, col++) {
		if (out[i] == '\n') {
			if (i == 0 || out[i - 1] != '\r')
				FAILF("got a bare LF at %zu, want CRLF", i);
			col = 0;
		}
		if (col > 998)
			FAILF("got a line longer than 998 at %zu", i);
	}
	free(out);
}

static void test_hdrs_and_cap(void **state)
{
	struct ctl_dsn_rcpt r = { "bob@example.test", NULL, "5.1.1", "smtp", "550 5.1.1 no" };
	struct ctl_dsn d = base(&r, 1);
	char *out;
	size_t len;
	bool b8;

	d.ret = SMTP_RET_HDRS;
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), 0);
	want_in(out, "Content-Type: text/rfc822-headers\r\n");
	want_in(out, "Subject: hello\r\n");
	want_not_in(out, "body line");
	want_not_in(out, "Original-Envelope-Id");
	free(out);

	/* RET=FULL but over the cap: the header only, and a note. */
	d.ret = SMTP_RET_FULL;
	d.return_max = 80;
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), 0);
	want_in(out, "Content-Type: text/rfc822-headers\r\n");
	want_in(out, "only its header is returned");
	want_in(out, "Received: from a by b");
	want_not_in(out, "Subject: hello");     /* cut at a line boundary within 80 bytes */
	want_not_in(out, "body line");
	free(out);
}

static void test_boundary_and_8bit(void **state)
{
	static const char tricky[] =
		"Subject: x\r\n\r\n--=_sluice_Q_5_0\r\ncaf\xc3\xa9\r\n";
	struct ctl_dsn_rcpt r = { "bob@example.test", NULL, "5.1.1", "smtp", "550 5.1.1 no\r\nx" };
	struct ctl_dsn d = base(&r, 1);
	char *out;
	size_t len;
	bool b8;

	d.qid = "Q";
	d.now = 5;
	d.msg = (const uint8_t *)tricky;
	d.msglen = sizeof tricky - 1;
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), 0);
	assert_true(b8);
	want_in(out, "boundary=\"=_sluice_Q_5_1\"");
	want_in(out, "Content-Transfer-Encoding: 8bit\r\n");
	/* A CR LF in a diagnostic does not break the field. */
	want_in(out, "Diagnostic-Code: smtp; 550 5.1.1 no??x\r\n");
	free(out);
}

static void test_refusals(void **state)
{
	struct ctl_dsn_rcpt r = { "bob@example.test", NULL, "5.1.1", "smtp", "550" };
	struct ctl_dsn d = base(&r, 1);
	char *out = (char *)1;
	size_t len = 1;
	bool b8;

	d.sender = "";
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), -EINVAL);
	assert_null(out);
	d.sender = "alice@example.test";
	d.nrcpt = 0;
	assert_int_equal(ctl_dsn_build(&d, &out, &len, &b8), -EINVAL);
}

static void test_wanted(void **state)
{
	assert_true(ctl_dsn_wanted(0));
	assert_true(ctl_dsn_wanted(SMTP_NOTIFY_FAILURE));
	assert_true(ctl_dsn_wanted(SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY));
	assert_false(ctl_dsn_wanted(SMTP_NOTIFY_NEVER));
	assert_false(ctl_dsn_wanted(SMTP_NOTIFY_SUCCESS));
	assert_false(ctl_dsn_wanted(SMTP_NOTIFY_DELAY | SMTP_NOTIFY_SUCCESS));
}

static void test_xtext(void **state)
{
	char out[16];

	assert_int_equal(ctl_dsn_xtext_decode("a+2Bb+3D", out, sizeof out), 0);
	assert_string_equal(out, "a+b=");
	assert_int_equal(ctl_dsn_xtext_decode("", out, sizeof out), 0);
	assert_string_equal(out, "");
	assert_int_equal(ctl_dsn_xtext_decode("a+2", out, sizeof out), -EINVAL);
	assert_int_equal(ctl_dsn_xtext_decode("a+zz", out, sizeof out), -EINVAL);
	assert_int_equal(ctl_dsn_xtext_decode("a+2b", out, sizeof out), -EINVAL); /* upper hex only */
	assert_int_equal(ctl_dsn_xtext_decode("a+0D+0A", out, sizeof out), -EINVAL);
	assert_int_equal(ctl_dsn_xtext_decode("0123456789abcdefg", out, sizeof out), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_hdrs_and_cap),
		cmocka_unit_test(test_boundary_and_8bit),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_wanted),
		cmocka_unit_test(test_xtext),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
