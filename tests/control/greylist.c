/*
 * tests/control/greylist.c - control/greylist.c's triplet: the client
 * network cut to its prefix, the sender without its BATV tag and both
 * mailboxes without case, as the Redis key holds them. The Redis side is
 * tested against a real redis-server in tests/integration/test_greylist.py.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/greylist.h"

static void
addr_of(const char *text, uint8_t a[16])
{
	memset(a, 0, 16);
	struct in_addr v4;
	if (inet_pton(AF_INET, text, &v4) == 1) {
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &v4, 4);
		return;
	}
	assert_int_equal(inet_pton(AF_INET6, text, a), 1);
}

static void
test_key(void **state)
{
	(void)state;
	struct ctl_greylist_conf conf = { .prefix = "gl:", .ipv4_prefix = 24, .ipv6_prefix = 64 };
	struct ctl_gl_req q;
	uint8_t a[16];
	char key[700];
	static const struct {
		const char *addr, *sender, *rcpt, *want;
	} cases[] = {
		{ "192.0.2.77", "a@example.org", "b@example.test", "gl:192.0.2.0/24|a@example.org|b@example.test" },
		{ "192.0.2.200", "A@Example.ORG", "B@EXAMPLE.test", "gl:192.0.2.0/24|a@example.org|b@example.test" },
		{ "192.0.2.1", "prvs=0123abcd=a@example.org", "b@x.test", "gl:192.0.2.0/24|a@example.org|b@x.test" },
		/* no '=' before the '@': not a BATV tag */
		{ "192.0.2.1", "prvs=abc@example.org", "b@x.test", "gl:192.0.2.0/24|prvs=abc@example.org|b@x.test" },
		{ "2001:db8:1:2:3:4:5:6", "", "b@x.test", "gl:2001:db8:1:2::/64||b@x.test" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		addr_of(cases[i].addr, a);
		ctl_greylist_req_init(&q, a, cases[i].sender, cases[i].rcpt);
		assert_int_equal(ctl_greylist_key(&conf, &q, key, sizeof(key)), 0);
		if (strcmp(key, cases[i].want) != 0)
			fail_msg("%s %s %s: got '%s', want '%s'", cases[i].addr, cases[i].sender,
			         cases[i].rcpt, key, cases[i].want);
	}
	conf.ipv4_prefix = 32;
	addr_of("192.0.2.77", a);
	ctl_greylist_req_init(&q, a, "a@b", "c@d");
	assert_int_equal(ctl_greylist_key(&conf, &q, key, sizeof(key)), 0);
	assert_string_equal(key, "gl:192.0.2.77/32|a@b|c@d");
	conf.ipv4_prefix = 20;
	assert_int_equal(ctl_greylist_key(&conf, &q, key, sizeof(key)), 0);
	assert_string_equal(key, "gl:192.0.0.0/20|a@b|c@d");
	/* a key that does not fit is an error, not a cut key */
	assert_int_equal(ctl_greylist_key(&conf, &q, key, 10), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
