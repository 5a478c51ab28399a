/*
 * tests/smtp/proxy.c - smtp/proxy.c: PROXY protocol v1/v2 header parser.
 *
 * Every vector is replayed whole, byte by byte (each proper prefix must give
 * 0, or -EINVAL once a bad byte is in), at random split points, with SMTP
 * bytes following the header, and placed so that its last byte is the last
 * byte before a PROT_NONE guard page (an over-read faults).
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
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "smtp/proxy.h"

#define FAILF(...) do { print_error(__VA_ARGS__); print_error("\n"); fail(); } while (0)

struct vec {
	const char *name;
	const uint8_t *buf;
	size_t len;
	int version;
	bool local;
	const char *src, *dst;          /* textual, NULL when local */
	unsigned sport, dport;
};

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

/* v2 fixed part: signature, ver/cmd, fam/proto, length (big endian). */
#define V2SIG "\r\n\r\n\0\r\nQUIT\n"

static const uint8_t v2_inet[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x11, 0x00, 0x0c,
	192, 0, 2, 1,  198, 51, 100, 7,  0xc3, 0x50,  0x00, 0x19,
};
static const uint8_t v2_inet6[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x21, 0x00, 0x24,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
	0xff, 0xff,  0x02, 0x4b,
};
static const uint8_t v2_local[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x20, 0x00, 0x00, 0x00,
};
/* LOCAL may still carry an address block and TLVs: all skipped. */
static const uint8_t v2_local_inet[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x20, 0x11, 0x00, 0x0f,
	10, 0, 0, 1,  10, 0, 0, 2,  0x04, 0x00,  0x00, 0x19,
	0x04, 0x00, 0x00, /* PP2_TYPE_NOOP, empty */
};
/* PROXY INET with TLVs: ALPN "smtp", AUTHORITY "mx", NOOP padding. */
static const uint8_t v2_inet_tlv[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x11, 0x00, 0x0c + 7 + 5 + 5,
	203, 0, 113, 9,  203, 0, 113, 10,  0x00, 0x01,  0xff, 0xff,
	0x01, 0x00, 0x04, 's', 'm', 't', 'p',
	0x02, 0x00, 0x02, 'm', 'x',
	0x04, 0x00, 0x02, 0, 0,
};
/* PROXY over AF_UNIX: addresses unusable for policy, keep the real ones. */
static uint8_t v2_unix[16 + 216];

static const struct vec good[] = {
	{ "v1 tcp4", S("PROXY TCP4 192.0.2.1 198.51.100.7 49999 25\r\n"),
	  1, false, "192.0.2.1", "198.51.100.7", 49999, 25 },
	{ "v1 tcp4 ports 0 and 65535", S("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
	  1, false, "0.0.0.0", "255.255.255.255", 0, 65535 },
	{ "v1 tcp6", S("PROXY TCP6 2001:db8::1 2001:db8::2 65535 587\r\n"),
	  1, false, "2001:db8::1", "2001:db8::2", 65535, 587 },
	{ "v1 tcp6 v4-mapped", S("PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n"),
	  1, false, "::ffff:192.0.2.1", "::1", 1, 2 },
	{ "v1 tcp6 longest (107 bytes)",
	  S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "2001:db8:ffff:ffff:ffff:ffff:ffff:10 65535 65535\r\n"),
	  1, false, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
	  "2001:db8:ffff:ffff:ffff:ffff:ffff:10", 65535, 65535 },
	{ "v1 unknown longest (107 bytes)",
	  S("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
	  1, true, NULL, NULL, 0, 0 },
	{ "v1 unknown", S("PROXY UNKNOWN\r\n"), 1, true, NULL, NULL, 0, 0 },
	{ "v1 unknown with ignored rest",
	  S("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"),
	  1, true, NULL, NULL, 0, 0 },
	{ "v2 inet", v2_inet, sizeof(v2_inet), 2, false, "192.0.2.1", "198.51.100.7", 50000, 25 },
	{ "v2 inet6", v2_inet6, sizeof(v2_inet6), 2, false, "2001:db8::1", "2001:db8::2", 65535, 587 },
	{ "v2 local", v2_local, sizeof(v2_local), 2, true, NULL, NULL, 0, 0 },
	{ "v2 local with block", v2_local_inet, sizeof(v2_local_inet), 2, true, NULL, NULL, 0, 0 },
	{ "v2 inet with tlvs", v2_inet_tlv, sizeof(v2_inet_tlv), 2, false,
	  "203.0.113.9", "203.0.113.10", 1, 65535 },
	{ "v2 unix", v2_unix, sizeof(v2_unix), 2, true, NULL, NULL, 0, 0 },
};

static void init_v2_unix(void)
{
	memcpy(v2_unix, V2SIG, 12);
	v2_unix[12] = 0x21;
	v2_unix[13] = 0x31;
	v2_unix[14] = 0;
	v2_unix[15] = 216;
	memcpy(v2_unix + 16, "/run/haproxy.sock", 17);
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t len, unsigned *port)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s->sin_addr, buf, (socklen_t)len);
		*port = ntohs(s->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, buf, (socklen_t)len);
		*port = ntohs(s->sin6_port);
	} else {
		snprintf(buf, len, "family %d", ss->ss_family);
		*port = 0;
	}
}

/* The canonical text of want, for comparison with inet_ntop()'s. */
static void canon(const char *want, char *buf, size_t len)
{
	uint8_t a[16];
	if (inet_pton(AF_INET, want, a) == 1)
		inet_ntop(AF_INET, a, buf, (socklen_t)len);
	else if (inet_pton(AF_INET6, want, a) == 1)
		inet_ntop(AF_INET6, a, buf, (socklen_t)len);
	else
		snprintf(buf, len, "%s", want);
}

static void check_hdr(const struct vec *v, const struct smtp_proxy_hdr *h)
{
	char got[INET6_ADDRSTRLEN + 16], want[INET6_ADDRSTRLEN + 16];
	unsigned port;

	if (h->version != v->version)
		FAILF("%s: version: got %d, want %d", v->name, h->version, v->version);
	if (h->local != v->local)
		FAILF("%s: local: got %d, want %d", v->name, h->local, v->local);
	if (v->local) {
		if (h->src.ss_family != AF_UNSPEC || h->dst.ss_family != AF_UNSPEC)
			FAILF("%s: families: got %d/%d, want AF_UNSPEC", v->name,
			      h->src.ss_family, h->dst.ss_family);
		return;
	}
	addr_text(&h->src, got, sizeof(got), &port);
	canon(v->src, want, sizeof(want));
	if (strcmp(got, want) != 0 || port != v->sport)
		FAILF("%s: src: got %s port %u, want %s port %u", v->name, got, port, want, v->sport);
	addr_text(&h->dst, got, sizeof(got), &port);
	canon(v->dst, want, sizeof(want));
	if (strcmp(got, want) != 0 || port != v->dport)
		FAILF("%s: dst: got %s port %u, want %s port %u", v->name, got, port, want, v->dport);
}

/* Copy buf so it ends exactly at a PROT_NONE page; returns the copy. */
struct guarded {
	uint8_t *map;
	size_t maplen;
	uint8_t *data;
};

static struct guarded guard_copy(const uint8_t *buf, size_t len)
{
	struct guarded g;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t body = (len + pg - 1) / pg * pg;
	if (body == 0)
		body = pg;
	g.maplen = body + pg;
	g.map = mmap(NULL, g.maplen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g.map != MAP_FAILED);
	assert_int_equal(mprotect(g.map + body, pg, PROT_NONE), 0);
	g.data = g.map + body - len;
	memcpy(g.data, buf, len);
	return g;
}

static void guard_free(struct guarded *g)
{
	munmap(g->map, g->maplen);
}

static void test_good_whole(void **state)
{
	/* The two "longest" vectors sit exactly at the protocol's limit. */
	assert_int_equal(good[4].len, SMTP_PROXY_V1_MAX);
	assert_int_equal(good[5].len, SMTP_PROXY_V1_MAX);
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		const struct vec *v = &good[k];
		struct smtp_proxy_hdr h;
		struct guarded g = guard_copy(v->buf, v->len);
		memset(&h, 0xa5, sizeof(h));
		ssize_t r = smtp_proxy_parse(g.data, v->len, &h);
		if (r != (ssize_t)v->len)
			FAILF("%s: whole: got %zd, want %zu", v->name, r, v->len);
		check_hdr(v, &h);
		guard_free(&g);
	}
}

static void test_good_bytewise(void **state)
{
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		const struct vec *v = &good[k];
		struct smtp_proxy_hdr h;
		for (size_t n = 0; n < v->len; n++) {
			/* Each prefix sits against the guard page. */
			struct guarded g = guard_copy(v->buf, n);
			ssize_t r = smtp_proxy_parse(g.data, n, &h);
			guard_free(&g);
			if (r != 0)
				FAILF("%s: prefix of %zu bytes: got %zd, want 0", v->name, n, r);
		}
		ssize_t r = smtp_proxy_parse(v->buf, v->len, &h);
		if (r != (ssize_t)v->len)
			FAILF("%s: complete: got %zd, want %zu", v->name, r, v->len);
		check_hdr(v, &h);
	}
}

/* A caller that receives the header in random pieces and retries each time. */
static void test_good_random_splits(void **state)
{
	srand(5321);
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		const struct vec *v = &good[k];
		for (int round = 0; round < 200; round++) {
			struct smtp_proxy_hdr h;
			size_t have = 0;
			ssize_t r = 0;
			while (have < v->len) {
				have += 1 + (size_t)rand() % (v->len - have);
				r = smtp_proxy_parse(v->buf, have, &h);
				if (have < v->len && r != 0)
					FAILF("%s: split at %zu: got %zd, want 0", v->name, have, r);
			}
			if (r != (ssize_t)v->len)
				FAILF("%s: after splits: got %zd, want %zu", v->name, r, v->len);
			check_hdr(v, &h);
		}
	}
}

/* SMTP that follows in the same read is not consumed. */
static void test_good_trailing(void **state)
{
	static const char smtp[] = "EHLO client.example\r\n";
	uint8_t buf[sizeof(v2_unix) + sizeof(smtp)];
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		const struct vec *v = &good[k];
		struct smtp_proxy_hdr h;
		memcpy(buf, v->buf, v->len);
		memcpy(buf + v->len, smtp, sizeof(smtp) - 1);
		ssize_t r = smtp_proxy_parse(buf, v->len + sizeof(smtp) - 1, &h);
		if (r != (ssize_t)v->len)
			FAILF("%s: with trailing SMTP: got %zd, want %zu", v->name, r, v->len);
		check_hdr(v, &h);
	}
}

struct bad {
	const char *name;
	const uint8_t *buf;
	size_t len;
	size_t reject_at;               /* the shortest prefix that must give -EINVAL; 0: len */
};

static const uint8_t v2_bad_sig[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'X', '\n',
	0x21, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_bad_version1[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x11, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_bad_version3[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x31, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_bad_cmd[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x22, 0x11, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_bad_family[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x41, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_bad_transport[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x13, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_dgram[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x12, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};
static const uint8_t v2_proxy_unspec[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x00, 0x00, 0x00,
};
static const uint8_t v2_inet_short_len[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x11, 0x00, 0x0b, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0,
};
static const uint8_t v2_inet6_short_len[] = {
	'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n',
	0x21, 0x21, 0x00, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2,
};

static const struct bad bad[] = {
	{ "smtp instead", S("EHLO client.example\r\n"), 1 },
	{ "lower case", S("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 1 },
	{ "double space after PROXY", S("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), 7 },
	{ "unknown protocol", S("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), 8 },
	{ "TCP5", S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), 10 },
	{ "tcp4 with v6 address", S("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"), 16 },
	{ "tcp6 with junk address", S("PROXY TCP6 2001:db8::g ::1 1 2\r\n"), 22 },
	{ "tcp4 bad address", S("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"), 17 },
	{ "tcp4 octet > 255", S("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n"), 21 },
	{ "tcp4 address too long", S("PROXY TCP4 1.2.3.4.5.6.7.8.9 5.6.7.8 1 2\r\n"), 27 },
	{ "double space between", S("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), 20 },
	{ "port > 65535", S("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), 32 },
	{ "port 99999", S("PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n"), 32 },
	{ "port leading zero", S("PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n"), 29 },
	{ "port sign", S("PROXY TCP4 1.2.3.4 5.6.7.8 +25 2\r\n"), 28 },
	{ "port hex", S("PROXY TCP4 1.2.3.4 5.6.7.8 0x19 2\r\n"), 29 },
	{ "empty port", S("PROXY TCP4 1.2.3.4 5.6.7.8  2\r\n"), 28 },
	{ "missing dport", S("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), 29 },
	{ "extra field", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), 31 },
	{ "bare LF", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), 31 },
	{ "CR without LF", S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), 32 },
	{ "unknown bare LF", S("PROXY UNKNOWN\n"), 14 },
	{ "unknown rest bare LF", S("PROXY UNKNOWN x\ny\r\n"), 16 },
	{ "unknown rest lone CR", S("PROXY UNKNOWN x\ry\r\n"), 17 },
	{ "UNKNOWNX", S("PROXY UNKNOWNX\r\n"), 14 },
	{ "missing CRLF at 107",
	  S("PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"), 107 },
	{ "tcp6 overlong (108 bytes)",
	  S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
	    "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 1 2\r\n"), 107 },
	{ "v2 bad signature", v2_bad_sig, sizeof(v2_bad_sig), 11 },
	{ "v2 version 1", v2_bad_version1, sizeof(v2_bad_version1), 13 },
	{ "v2 version 3", v2_bad_version3, sizeof(v2_bad_version3), 13 },
	{ "v2 command 2", v2_bad_cmd, sizeof(v2_bad_cmd), 13 },
	{ "v2 family 4", v2_bad_family, sizeof(v2_bad_family), 14 },
	{ "v2 transport 3", v2_bad_transport, sizeof(v2_bad_transport), 14 },
	{ "v2 proxy over dgram", v2_dgram, sizeof(v2_dgram), 14 },
	{ "v2 proxy over unspec", v2_proxy_unspec, sizeof(v2_proxy_unspec), 14 },
	{ "v2 inet length 11", v2_inet_short_len, sizeof(v2_inet_short_len), 16 },
	{ "v2 inet6 length 12", v2_inet6_short_len, sizeof(v2_inet6_short_len), 16 },
	{ "v2 first byte then junk", S("\r\nEHLO"), 3 },
};

static void test_bad(void **state)
{
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		const struct bad *b = &bad[k];
		size_t at = b->reject_at ? b->reject_at : b->len;
		struct smtp_proxy_hdr h, before;
		memset(&h, 0x5a, sizeof(h));
		before = h;
		for (size_t n = 0; n <= b->len; n++) {
			struct guarded g = guard_copy(b->buf, n);
			ssize_t r = smtp_proxy_parse(g.data, n, &h);
			guard_free(&g);
			ssize_t want = n < at ? 0 : -EINVAL;
			if (r != want)
				FAILF("%s: prefix of %zu bytes: got %zd, want %zd", b->name, n, r, want);
		}
		if (memcmp(&h, &before, sizeof(h)) != 0)
			FAILF("%s: *out written on failure", b->name);
	}
}

/* v2: a complete header needs 16 + length bytes, however large the length. */
static void test_v2_long_tlvs(void **state)
{
	size_t len = SMTP_PROXY_V2_MAX;
	uint8_t *buf = calloc(1, len + 4);
	struct smtp_proxy_hdr h;
	assert_non_null(buf);
	memcpy(buf, v2_inet, sizeof(v2_inet));
	buf[14] = 0xff;
	buf[15] = 0xff;
	ssize_t r = smtp_proxy_parse(buf, len - 1, &h);
	if (r != 0)
		FAILF("one byte short of 65551: got %zd, want 0", r);
	r = smtp_proxy_parse(buf, len + 4, &h);
	if (r != (ssize_t)len)
		FAILF("length 65535: got %zd, want %zu", r, len);
	free(buf);
}

int main(void)
{
	init_v2_unix();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_whole),
		cmocka_unit_test(test_good_bytewise),
		cmocka_unit_test(test_good_random_splits),
		cmocka_unit_test(test_good_trailing),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_v2_long_tlvs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
