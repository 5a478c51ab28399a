/*
 * tests/control/rbl.c - control/rbl.c's pure parts and the rbl section of
 * the configuration: query names (RFC 5782: IPv4 octets and IPv6 nibbles
 * reversed), addresses from sockets, zone entries with return codes, the
 * skip list, and the zone list for the log. The resolver itself is tested
 * against a real rbldnsd in tests/integration/test_rbl.py.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/config.h"
#include "control/rbl.h"

static void
addr_of(const char *text, uint8_t a[16])
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *in = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, text, &in->sin_addr) == 1)
		in->sin_family = AF_INET;
	else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
	}
	assert_true(ctl_addr16((struct sockaddr *)&ss, a));
}

static void
test_qname(void **state)
{
	(void)state;
	uint8_t a[16];
	char name[320];

	addr_of("192.0.2.99", a);
	assert_int_equal(ctl_rbl_qname(a, "zen.spamhaus.org", name, sizeof(name)), 0);
	assert_string_equal(name, "99.2.0.192.zen.spamhaus.org");

	/* RFC 5782 2.4's example */
	addr_of("2001:db8:1:2:3:4:567:89ab", a);
	assert_int_equal(ctl_rbl_qname(a, "ugly.example.com", name, sizeof(name)), 0);
	assert_string_equal(name, "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2."
	                          "ugly.example.com");

	/* too small a buffer is an error, not a cut name */
	addr_of("192.0.2.99", a);
	assert_int_equal(ctl_rbl_qname(a, "zen.spamhaus.org", name, 20), -1);

	/* no lists for a unix socket */
	struct sockaddr sa = { .sa_family = AF_UNIX };
	assert_false(ctl_addr16(&sa, a));
}

static int
load(const char *text, struct ctl_config *c, char *err, size_t errlen)
{
	return ctl_config_load_buffer("t.conf", text, strlen(text), c, err, errlen);
}

static void
test_config(void **state)
{
	(void)state;
	struct ctl_config c;
	char err[512];

	assert_int_equal(load("rbl:\n"
	                      "  enabled: true\n"
	                      "  zones: {Zen.Spamhaus.org.: 1, zen.spamhaus.org=127.0.0.10: -0.5,\n"
	                      "          list.dnswl.org: -5}\n"
	                      "  threshold: 2.5\n"
	                      "  servers: \"127.0.0.1:5353,[::1]:53\"\n"
	                      "  timeout: 750ms\n"
	                      "  skip: \"10.0.0.0/8, 192.0.2.1 2001:db8::/32\"\n",
	                      &c, err, sizeof(err)), 0);
	assert_true(c.rbl_enabled);
	assert_int_equal(c.rbl_nzones, 3);
	assert_string_equal(c.rbl_zones[0].zone, "zen.spamhaus.org");  /* lower case, no dot */
	assert_int_equal(c.rbl_zones[0].code, 0);
	assert_int_equal(c.rbl_zones[0].line, 3);
	assert_int_equal(c.rbl_zones[1].code, 0x7f00000au);
	assert_true(c.rbl_zones[1].weight == -0.5);
	assert_true(c.rbl_zones[2].weight == -5);
	assert_true(c.rbl_threshold == 2.5);
	assert_string_equal(c.rbl_servers, "127.0.0.1:5353,[::1]:53");
	assert_int_equal(c.rbl_timeout_ms, 750);
	assert_int_equal(c.rbl_nskip, 3);
	assert_int_equal(c.rbl_skip[0].prefix, 96 + 8);
	assert_int_equal(c.rbl_skip[0].addr[12], 10);
	assert_int_equal(c.rbl_skip[1].prefix, 128);
	assert_int_equal(c.rbl_skip[2].prefix, 32);
	assert_int_equal(c.rbl_skip[2].addr[0], 0x20);
	/* defaults */
	assert_int_equal(c.rbl_cache_ttl_ms, 3600000);
	assert_int_equal(c.rbl_negative_ttl_ms, 600000);
	assert_int_equal(c.rbl_cache_max, 100000);
	ctl_config_free(&c);

	static const struct { const char *text, *want; } bad[] = {
		{ "rbl: {enabled: true}\n", "t.conf:1: rbl.zones: must name at least one zone" },
		{ "rbl: {zones: {bl.test=127.0.0.2: 1, bl.test=127.0.0.2: 2}}\n",
		  "t.conf:1: rbl.zones: duplicate entry 'bl.test=127.0.0.2'" },
		{ "rbl: {zones: {bl.test=127.0.0.256: 1}}\n", "the answer after '=' must be" },
		{ "rbl: {zones: {\"bad zone\": 1}}\n", "expected a DNS zone" },
		{ "rbl: {zones: {bl.test: 1e999}}\n", "rbl.zones.bl.test: expected a weight" },
		{ "rbl: {zones: [bl.test]}\n", "rbl.zones: expected a mapping" },
		{ "rbl: {skip: \"::1/129\"}\n", "rbl.skip: '::1/129' is no address or network" },
		{ "rbl: {skip: \"host.example\"}\n", "rbl.skip: 'host.example' is no address" },
		{ "rbl: {servers: \"127.0.0.1:0\"}\n", "rbl.servers: expected addresses" },
		{ "rbl: {timeout: 50ms}\n", "rbl.timeout" },
		{ "rbl: {threshold: 0}\n", "rbl.threshold: must be above 0" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = load(bad[i].text, &c, err, sizeof(err));
		if (r != -EINVAL || strstr(err, bad[i].want) == NULL)
			fail_msg("%s: got %d '%s', want -EINVAL and '%s'", bad[i].text, r, err, bad[i].want);
		ctl_config_free(&c);
	}
}

/* The zone list the log and the 554 name; and the skip list, through a
 * resolver that is started (no query is sent: every address is skipped). */
static void
test_zones_str_and_skip(void **state)
{
	(void)state;
	struct ctl_config c;
	char err[512], buf[256];
	assert_int_equal(load("rbl:\n"
	                      "  enabled: true\n"
	                      "  zones: {a.test: 1, b.test=127.0.0.4: 1, c.test: -1}\n"
	                      "  servers: \"127.0.0.1:9\"\n"
	                      "  skip: \"10.1.0.0/16 2001:db8::/33\"\n",
	                      &c, err, sizeof(err)), 0);
	struct ctl_rbl_conf rc = {
		.zones = c.rbl_zones, .nzones = c.rbl_nzones, .threshold = c.rbl_threshold,
		.servers = c.rbl_servers, .timeout_ms = c.rbl_timeout_ms,
		.cache_ttl_ms = c.rbl_cache_ttl_ms, .negative_ttl_ms = c.rbl_negative_ttl_ms,
		.cache_max = c.rbl_cache_max, .skip = c.rbl_skip, .nskip = c.rbl_nskip,
	};
	struct ctl_rbl *r = ctl_rbl_start(&rc, err, sizeof(err));
	if (r == NULL)
		fail_msg("ctl_rbl_start: %s", err);
	ctl_rbl_zones_str(r, 0x3, buf, sizeof(buf));
	assert_string_equal(buf, "a.test,b.test=127.0.0.4");
	ctl_rbl_zones_str(r, 0x4, buf, sizeof(buf));
	assert_string_equal(buf, "c.test");

	static const struct { const char *addr; bool skip; } cases[] = {
		{ "10.1.255.7", true }, { "10.2.0.1", false }, { "10.0.255.255", false },
		{ "2001:db8:7fff::1", true }, { "2001:db8:8000::1", false },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ctl_rbl_req q;
		memset(&q, 0, sizeof(q));
		addr_of(cases[i].addr, q.addr);
		if (!cases[i].skip) {
			/* asked (not sent here: 127.0.0.1:9 answers nothing) */
			assert_false(ctl_rbl_addr_skipped(r, q.addr));
			continue;
		}
		assert_true(ctl_rbl_addr_skipped(r, q.addr));
		assert_int_equal(ctl_rbl_check(r, &q), 0);
		if (q.verdict != CTL_RBL_SKIPPED)
			fail_msg("%s: got verdict %d, want skipped", cases[i].addr, q.verdict);
	}
	struct ctl_rbl_stats st;
	ctl_rbl_stats(r, &st);
	assert_int_equal(st.skipped, 2);
	assert_int_equal(st.queries, 0);
	r = ctl_rbl_stop(r);
	assert_null(r);
	ctl_config_free(&c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_qname),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_zones_str_and_skip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
