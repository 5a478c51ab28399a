/*
 * tests/control/verify.c - the pure parts of control/verify.c: which
 * domains recipients.domains takes, how the access lists match addresses,
 * and how the configuration reads those lists. The LMTP side is tested
 * against a real Dovecot in tests/integration/test_recipients.py.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/config.h"
#include "control/verify.h"

static void
test_domains(void **state)
{
	(void)state;
	const char *d[] = { "example.org", ".sub.test" };
	assert_true(ctl_domain_listed(d, 2, "a@example.org"));
	assert_true(ctl_domain_listed(d, 2, "a@EXAMPLE.org"));
	assert_false(ctl_domain_listed(d, 2, "a@x.example.org"));
	assert_true(ctl_domain_listed(d, 2, "a@x.sub.test"));
	assert_true(ctl_domain_listed(d, 2, "a@y.x.sub.test"));
	assert_false(ctl_domain_listed(d, 2, "a@sub.test"));
	assert_false(ctl_domain_listed(d, 2, "a@notsub.test"));
	assert_false(ctl_domain_listed(d, 2, "nodomain"));
	assert_true(ctl_domain_listed(d, 0, "anything@any.where"));
}

static void
test_access(void **state)
{
	(void)state;
	char *l[] = { "spam@bad.test", "@junk.test", "worse.test", ".farm.test", "postmaster@",
	              "@.nested.test" };
	static const struct { const char *addr; bool want; } cases[] = {
		{ "spam@bad.test", true }, { "SPAM@Bad.Test", true }, { "ham@bad.test", false },
		{ "x@junk.test", true }, { "x@a.junk.test", false },
		{ "x@worse.test", true }, { "x@farm.test", false }, { "x@h1.farm.test", true },
		{ "postmaster@anything.test", true }, { "postmasterx@a.test", false },
		{ "a@b.nested.test", true }, { "a@nested.test", false },
		{ "", false }, { "noat", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (ctl_access_match(l, 6, cases[i].addr) != cases[i].want)
			fail_msg("%s: got %d, want %d", cases[i].addr, !cases[i].want, cases[i].want);
}

static void
test_config(void **state)
{
	(void)state;
	struct ctl_config c;
	char err[512];
	static const char ok[] =
		"recipients: {domains: \"Example.ORG, .sub.test\"}\n"
		"access:\n"
		"  senders_deny: \"Spam@Bad.test @junk.test\"\n"
		"  recipients_allow: \"postmaster@ abuse@example.org\"\n";
	assert_int_equal(ctl_config_load_buffer("t.conf", ok, sizeof(ok) - 1, &c, err, sizeof(err)), 0);
	assert_int_equal(c.rcpt_ndomains, 2);
	assert_string_equal(c.rcpt_domains[0], "example.org");
	assert_int_equal(c.nacc[0], 2);
	assert_string_equal(c.acc[0][0], "spam@bad.test");
	assert_int_equal(c.nacc[3], 2);
	assert_string_equal(c.acc[3][0], "postmaster@");
	ctl_config_free(&c);
	static const struct { const char *text, *want; } bad[] = {
		{ "recipients: {domains: \"a@b.test\"}\n", "t.conf:1: recipients.domains: 'a@b.test' is no domain" },
		{ "access: {senders_deny: \"a@b@c.test\"}\n", "access.senders_deny: 'a@b@c.test' is no address" },
		{ "access: {recipients_deny: \"@\"}\n", "access.recipients_deny: '@' is no address" },
		{ "access: {senders_allow: \"x@-bad-\"}\n", "access.senders_allow: 'x@-bad-' is no address" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = ctl_config_load_buffer("t.conf", bad[i].text, strlen(bad[i].text), &c, err,
		                               sizeof(err));
		if (r != -EINVAL || strstr(err, bad[i].want) == NULL)
			fail_msg("%s: got %d '%s', want '%s'", bad[i].text, r, err, bad[i].want);
		ctl_config_free(&c);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_domains),
		cmocka_unit_test(test_access),
		cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
