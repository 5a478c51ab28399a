/*
 * tests/control/lmtp.c - control/lmtp.c: the reply parser (every vector
 * whole, byte by byte and at every split point), targets and routes, and
 * whole transactions against a scripted server on a unix socket
 * (pipelining, per-recipient replies after DATA, dot-stuffing).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "control/lmtp.h"

#define FAILF(...) do { print_error(__VA_ARGS__); print_error("\n"); fail(); } while (0)

struct vec {
	const char *in;
	int rc;                        /* of the first reply */
	int code;
	const char *status;
	const char *text;
};

static const struct vec vecs[] = {
	{ "250 OK\r\n", 1, 250, "", "OK" },
	{ "250 2.1.5 OK\r\n", 1, 250, "2.1.5", "2.1.5 OK" },
	{ "550 5.1.1 <x@y> User doesn't exist: x\r\n", 1, 550, "5.1.1",
	  "5.1.1 <x@y> User doesn't exist: x" },
	{ "250-host\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 1, 250, "", "host\nPIPELINING\n8BITMIME" },
	{ "452 4.2.2 full\n", 1, 452, "4.2.2", "4.2.2 full" },             /* bare LF */
	{ "220\r\n", 1, 220, "", "" },
	{ "550 4.1.1 class differs\r\n", 1, 550, "", "4.1.1 class differs" },
	{ "250 2.0.0x not a status\r\n", 1, 250, "", "2.0.0x not a status" },
	{ "25 short\r\n", -EBADMSG, 0, NULL, NULL },
	{ "250-a\r\n251 b\r\n", -EBADMSG, 0, NULL, NULL },
	{ "2500 x\r\n", -EBADMSG, 0, NULL, NULL },
	{ "650 x\r\n", -EBADMSG, 0, NULL, NULL },
	{ "250-partial\r\n", 0, 0, NULL, NULL },
};

/* Feed in pieces of at most step bytes (0: at split, then the rest). */
static int feed(const char *in, size_t split, size_t step, struct ctl_lmtp_reply *out)
{
	struct ctl_lmtp_rp p;
	size_t n = strlen(in), off = 0;

	ctl_lmtp_rp_init(&p);
	while (off < n) {
		size_t k = step ? step : (off == 0 && split > 0 ? split : n - off);
		if (k > n - off)
			k = n - off;
		size_t used = 0;
		int r = ctl_lmtp_rp_feed(&p, in + off, k, &used, out);
		if (r != 0)
			return r;
		if (used != k)
			FAILF("got used %zu of %zu with rc 0, want all", used, k);
		off += k;
	}
	return 0;
}

static void test_parser_vectors(void **state)
{
	for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
		const struct vec *v = &vecs[i];
		size_t n = strlen(v->in);
		for (size_t mode = 0; mode <= n + 1; mode++) {
			struct ctl_lmtp_reply r;
			/* mode 0: whole; 1: byte by byte; k>1: split at k-1 */
			int rc = mode == 0 ? feed(v->in, 0, 0, &r) : mode == 1 ? feed(v->in, 0, 1, &r) :
			         feed(v->in, mode - 1, 0, &r);
			if (rc != v->rc)
				FAILF("vector %zu (%s) mode %zu: got rc %d, want %d", i, v->in, mode, rc, v->rc);
			if (rc != 1)
				continue;
			if (r.code != v->code || strcmp(r.status, v->status) != 0 ||
			    strcmp(r.text, v->text) != 0)
				FAILF("vector %zu mode %zu: got %d '%s' '%s', want %d '%s' '%s'", i, mode,
				      r.code, r.status, r.text, v->code, v->status, v->text);
		}
	}
}

static void test_parser_stream(void **state)
{
	static const char in[] = "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 no\r\n354 go\r\n";
	struct ctl_lmtp_rp p;
	struct ctl_lmtp_reply r;
	const int want[] = { 250, 250, 550, 354 };
	size_t off = 0, n = strlen(in), got = 0;

	ctl_lmtp_rp_init(&p);
	while (off < n) {
		size_t used;
		int rc = ctl_lmtp_rp_feed(&p, in + off, n - off, &used, &r);
		assert_true(rc >= 0);
		off += used;
		if (rc == 1) {
			assert_true(got < 4);
			assert_int_equal(r.code, want[got]);
			got++;
		}
	}
	assert_int_equal(got, 4);

	/* A line longer than the limit is an error, not an overflow. */
	char *big = malloc(CTL_LMTP_LINE_MAX + 16);
	memset(big, 'x', CTL_LMTP_LINE_MAX + 15);
	memcpy(big, "250 ", 4);
	big[CTL_LMTP_LINE_MAX + 15] = '\0';
	assert_int_equal(feed(big, 0, 0, &r), -EBADMSG);
	free(big);
}

static void test_reply_line(void **state)
{
	struct ctl_lmtp_reply r = { .code = 550, .status = "5.1.1", .text = "5.1.1 a\nb\x01 " };
	char out[64];

	assert_string_equal(ctl_lmtp_reply_line(&r, out, sizeof out), "550 5.1.1 a b?");
	r.code = 0;
	snprintf(r.text, sizeof r.text, "connect to unix:/x: refused");
	assert_string_equal(ctl_lmtp_reply_line(&r, out, sizeof out), "connect to unix:/x: refused");
}

static void test_targets_routes(void **state)
{
	struct ctl_lmtp_target t;

	assert_int_equal(ctl_lmtp_target_parse("unix:/run/dovecot/lmtp", &t), 0);
	assert_int_equal(t.addr.ss_family, AF_UNIX);
	assert_string_equal(t.text, "unix:/run/dovecot/lmtp");
	assert_int_equal(ctl_lmtp_target_parse("127.0.0.1:24", &t), 0);
	assert_int_equal(t.addr.ss_family, AF_INET);
	assert_int_equal(ctl_lmtp_target_parse("[::1]:24", &t), 0);
	assert_int_equal(t.addr.ss_family, AF_INET6);
	assert_int_equal(ctl_lmtp_target_parse("unix:", &t), -EINVAL);
	assert_int_equal(ctl_lmtp_target_parse("localhost:24", &t), -EINVAL);
	assert_int_equal(ctl_lmtp_target_parse("127.0.0.1", &t), -EINVAL);

	const char *const doms[] = { "example.org", ".example.org", ".sub.example.org", "b.test" };
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@example.org"), 0);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@EXAMPLE.Org"), 0);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@x.example.org"), 1);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@x.sub.example.org"), 2);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@b.test"), 3);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@xexample.org"), -1);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "a@other.test"), -1);
	assert_int_equal(ctl_lmtp_route_match(doms, 4, "postmaster"), -1);
	assert_int_equal(ctl_lmtp_route_match(doms, 0, "a@example.org"), -1);
}

/* ---- a scripted server ------------------------------------------------ */

struct srv {
	int lfd;
	bool pipelining;
	char got[8192];                /* everything the client sent */
	size_t gotlen;
	bool early_reply;              /* a reply went out before DATA arrived */
};

static bool got_has(struct srv *s, const char *needle)
{
	s->got[s->gotlen] = '\0';
	return strstr(s->got, needle) != NULL;
}

static bool read_until(struct srv *s, int fd, const char *needle)
{
	while (!got_has(s, needle)) {
		ssize_t k = read(fd, s->got + s->gotlen, sizeof s->got - 1 - s->gotlen);
		if (k <= 0)
			return false;
		s->gotlen += (size_t)k;
	}
	return true;
}

static void say(int fd, const char *t)
{
	ssize_t k = write(fd, t, strlen(t));
	(void)k;
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	int fd = accept(s->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	say(fd, "220 test LMTP\r\n");
	if (!read_until(s, fd, "LHLO "))
		goto out;
	say(fd, s->pipelining ? "250-test\r\n250-8BITMIME\r\n250 PIPELINING\r\n" : "250 test\r\n");
	if (s->pipelining) {
		/* Everything up to DATA arrives before any reply (RFC 2920). */
		if (!read_until(s, fd, "DATA\r\n"))
			goto out;
		say(fd, "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <b@x> no such user\r\n"
		        "250 2.1.5 OK\r\n354 go\r\n");
	} else {
		if (!read_until(s, fd, "MAIL FROM:"))
			goto out;
		say(fd, "250 2.1.0 OK\r\n");
		if (!read_until(s, fd, "<a@x>\r\n"))
			goto out;
		say(fd, "250 2.1.5 OK\r\n");
		if (!read_until(s, fd, "<b@x>\r\n"))
			goto out;
		say(fd, "550 5.1.1 <b@x> no such user\r\n");
		if (!read_until(s, fd, "<c@x>\r\n"))
			goto out;
		say(fd, "250 2.1.5 OK\r\n");
		if (!read_until(s, fd, "DATA\r\n"))
			goto out;
		say(fd, "354 go\r\n");
	}
	if (!read_until(s, fd, "\r\n.\r\n"))
		goto out;
	/* One reply per accepted recipient: a, then c. */
	say(fd, "250 2.0.0 <a@x> Saved\r\n452 4.2.2 <c@x> Quota exceeded\r\n");
	if (read_until(s, fd, "QUIT\r\n"))
		say(fd, "221 bye\r\n");
out:
	close(fd);
	return NULL;
}

static void run_transaction(bool pipelining)
{
	char path[108];
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct srv s = { .pipelining = pipelining };
	struct ctl_lmtp_target t;
	struct ctl_lmtp_reply why, res[3];
	pthread_t thr;
	static const char body[] = "Subject: t\r\n\r\n.starts with a dot\r\nmid.dot\r\n.\r\nlast";
	const char *rcpt[] = { "a@x", "b@x", "c@x" };

	snprintf(path, sizeof path, "/tmp/sluice-lmtp-test-%d-%d.sock", (int)getpid(), pipelining);
	unlink(path);
	snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
	s.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(s.lfd >= 0);
	assert_int_equal(bind(s.lfd, (struct sockaddr *)&un, sizeof un), 0);
	assert_int_equal(listen(s.lfd, 4), 0);
	assert_int_equal(pthread_create(&thr, NULL, srv_main, &s), 0);

	char target[128];
	snprintf(target, sizeof target, "unix:%s", path);
	assert_int_equal(ctl_lmtp_target_parse(target, &t), 0);
	struct ctl_lmtp_conn *c = ctl_lmtp_open(&t, "mx.test", 5000, &why);
	if (c == NULL)
		FAILF("open: got NULL (%s), want a connection", why.text);
	assert_int_equal(ctl_lmtp_pipelining(c), pipelining);
	assert_true(ctl_lmtp_usable(c));
	struct ctl_lmtp_msg m = { .from = "s@x", .rcpt = rcpt, .nrcpt = 3, .body8bit = true,
	                          .data = (const uint8_t *)body, .len = sizeof body - 1 };
	assert_int_equal(ctl_lmtp_send(c, &m, res), 0);
	assert_int_equal(res[0].code, 250);
	assert_string_equal(res[0].status, "2.0.0");
	assert_int_equal(res[1].code, 550);
	assert_string_equal(res[1].status, "5.1.1");
	assert_int_equal(res[2].code, 452);
	assert_string_equal(res[2].status, "4.2.2");
	c = ctl_lmtp_close(c);
	pthread_join(thr, NULL);
	close(s.lfd);
	unlink(path);

	/* What went over the wire: BODY=8BITMIME only when offered, and the
	 * message dot-stuffed with a CRLF added before the final dot. */
	s.got[s.gotlen] = '\0';
	if (pipelining)
		assert_true(got_has(&s, "MAIL FROM:<s@x> BODY=8BITMIME\r\nRCPT TO:<a@x>\r\n"
		                        "RCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r\n"));
	else
		assert_true(got_has(&s, "MAIL FROM:<s@x>\r\n"));
	if (!got_has(&s, "\r\n\r\n..starts with a dot\r\nmid.dot\r\n..\r\nlast\r\n.\r\nQUIT\r\n"))
		FAILF("got on the wire:\n%s\nwant the dot-stuffed message", s.got);
}

static void test_transaction_pipelined(void **state)
{
	run_transaction(true);
}

static void test_transaction_lockstep(void **state)
{
	run_transaction(false);
}

static void test_connect_refused(void **state)
{
	struct ctl_lmtp_target t;
	struct ctl_lmtp_reply why;

	assert_int_equal(ctl_lmtp_target_parse("unix:/nonexistent/sluice-lmtp.sock", &t), 0);
	assert_null(ctl_lmtp_open(&t, "mx.test", 1000, &why));
	assert_int_equal(why.code, 0);
	if (strstr(why.text, "connect to unix:/nonexistent/sluice-lmtp.sock") == NULL)
		FAILF("got why '%s', want the target named", why.text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parser_vectors),
		cmocka_unit_test(test_parser_stream),
		cmocka_unit_test(test_reply_line),
		cmocka_unit_test(test_targets_routes),
		cmocka_unit_test(test_transaction_pipelined),
		cmocka_unit_test(test_transaction_lockstep),
		cmocka_unit_test(test_connect_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
