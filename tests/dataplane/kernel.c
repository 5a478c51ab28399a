/*
 * Tests for dataplane/kernel.c: the kernel-socket transport, with a small
 * line-echo application over loopback. Covers accept, recv/pull/sent,
 * holding bytes the application declines until dp_conn_rx_resume(), wake-ups
 * from another thread, timers, close after flush, and peer close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "dataplane/kernel.h"

/* The echo application: answers each line "X\n" with "ok X\n"; the line
 * "park" makes it decline further input until the test wakes the worker;
 * "quit" answers "bye" and closes; "timer" closes the connection 50 ms later. */
struct app_conn {
	struct dp_conn *dc;
	bool parked;
	char part[256];                /* partial line: the app keeps it (contract) */
	size_t part_len;
	char out[65536];
	size_t out_len, out_off;
};

struct app {
	atomic_int accepted, closed, woken;
	struct dp_worker *worker;
	struct app_conn *last;         /* worker thread only */
	atomic_int unpark;             /* set by the test, read on wake */
};

static struct app the_app;

static void *
a_worker_init(void *app, struct dp_worker *w, unsigned id)
{
	struct app *a = app;
	a->worker = w;
	return a;
}

static void a_worker_fini(void *wa) {}

static void *
a_accept(void *wa, struct dp_conn *c, const struct sockaddr *peer, const struct sockaddr *local,
         unsigned flags)
{
	struct app *a = wa;
	struct app_conn *ac = calloc(1, sizeof(*ac));
	ac->dc = c;
	a->last = ac;
	atomic_fetch_add(&a->accepted, 1);
	return ac;
}

static void
out_add(struct app_conn *ac, const char *s, size_t n)
{
	if (ac->out_len + n <= sizeof(ac->out)) {
		memcpy(ac->out + ac->out_len, s, n);
		ac->out_len += n;
	}
}

static size_t
a_recv(void *ca, const uint8_t *p, size_t n)
{
	struct app_conn *ac = ca;
	size_t used = 0;
	while (used < n && !ac->parked) {
		const uint8_t *nl = memchr(p + used, '\n', n - used);
		if (nl == NULL) {
			/* Declining bytes means "hold them until I resume", so a
			 * partial line is taken and kept here. */
			size_t k = n - used;
			if (k > sizeof(ac->part) - ac->part_len)
				k = sizeof(ac->part) - ac->part_len;
			memcpy(ac->part + ac->part_len, p + used, k);
			ac->part_len += k;
			return n;
		}
		size_t len = (size_t)(nl - (p + used));
		char line[512];
		snprintf(line, sizeof(line), "%.*s%.*s", (int)ac->part_len, ac->part, (int)len,
		         (const char *)p + used);
		ac->part_len = 0;
		used += len + 1;
		if (strcmp(line, "park") == 0) {
			ac->parked = true;
			out_add(ac, "parked\n", 7);
		} else if (strcmp(line, "quit") == 0) {
			out_add(ac, "bye\n", 4);
			dp_conn_close(ac->dc);
		} else if (strcmp(line, "timer") == 0) {
			out_add(ac, "armed\n", 6);
			dp_conn_timer(ac->dc, dp_worker_now(the_app.worker) + 50);
		} else {
			char buf[300];
			int k = snprintf(buf, sizeof(buf), "ok %s\n", line);
			out_add(ac, buf, (size_t)k);
		}
	}
	return used;
}

static size_t
a_pull(void *ca, const uint8_t **p)
{
	struct app_conn *ac = ca;
	*p = (const uint8_t *)ac->out + ac->out_off;
	return ac->out_len - ac->out_off;
}

static void
a_sent(void *ca, size_t n)
{
	struct app_conn *ac = ca;
	ac->out_off += n;
	if (ac->out_off == ac->out_len)
		ac->out_off = ac->out_len = 0;
}

static void
a_timer(void *ca)
{
	struct app_conn *ac = ca;
	out_add(ac, "timeout\n", 8);
	dp_conn_close(ac->dc);
}

static void
a_closed(void *ca, int err)
{
	struct app_conn *ac = ca;
	if (the_app.last == ac)
		the_app.last = NULL;
	free(ac);
	atomic_fetch_add(&the_app.closed, 1);
}

static void
a_wake(void *wa)
{
	struct app *a = wa;
	atomic_fetch_add(&a->woken, 1);
	if (atomic_exchange(&a->unpark, 0) && a->last != NULL) {
		a->last->parked = false;
		out_add(a->last, "unparked\n", 9);
		dp_conn_rx_resume(a->last->dc);
	}
}

static const struct dp_app_ops ops = {
	.worker_init = a_worker_init, .worker_fini = a_worker_fini, .accept = a_accept,
	.recv = a_recv, .pull = a_pull, .sent = a_sent, .timer = a_timer,
	.closed = a_closed, .wake = a_wake,
};

static struct dp_kernel *k;
static uint16_t port;

static uint16_t
free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &l);
	close(fd);
	return ntohs(a.sin_port);
}

static int
setup(void **state)
{
	memset(&the_app, 0, sizeof(the_app));
	port = free_port();
	struct dp_listen l = { .addrlen = sizeof(struct sockaddr_in) };
	struct sockaddr_in *a = (struct sockaddr_in *)&l.addr;
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct dp_kernel_conf kc = { .workers = 1, .listen = &l, .nlisten = 1, .conn_max = 64, .cpu_first = -1 };
	char err[256];
	k = dp_kernel_start(&kc, &ops, &the_app, err, sizeof(err));
	if (k == NULL)
		fail_msg("dp_kernel_start: %s", err);
	return 0;
}

static int
teardown(void **state)
{
	k = dp_kernel_stop(k);
	return 0;
}

static int
client(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
	                         .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* Read until `want` has been seen (or 2 s pass); returns what was read. */
static char *
read_until(int fd, const char *want, char *buf, size_t cap)
{
	size_t n = 0;
	buf[0] = '\0';
	while (strstr(buf, want) == NULL) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 2000) <= 0)
			break;
		ssize_t r = read(fd, buf + n, cap - n - 1);
		if (r <= 0)
			break;
		n += (size_t)r;
		buf[n] = '\0';
	}
	return buf;
}

static void
expect(int fd, const char *want)
{
	char buf[4096];
	read_until(fd, want, buf, sizeof(buf));
	if (strstr(buf, want) == NULL)
		fail_msg("got \"%s\", want it to contain \"%s\"", buf, want);
}

static void
send_str(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

static void
wait_for(atomic_int *v, int want)
{
	for (int i = 0; i < 200 && atomic_load(v) < want; i++)
		usleep(10000);
	if (atomic_load(v) < want)
		fail_msg("got %d, want %d", atomic_load(v), want);
}

static void
test_echo_and_partial_lines(void **state)
{
	int fd = client();
	send_str(fd, "hello\nwor");
	expect(fd, "ok hello\n");
	send_str(fd, "ld\n");
	expect(fd, "ok world\n");
	send_str(fd, "quit\n");
	expect(fd, "bye\n");
	char b;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	poll(&p, 1, 2000);
	assert_int_equal(read(fd, &b, 1), 0); /* server closed after flushing */
	close(fd);
	wait_for(&the_app.closed, 1);
	assert_int_equal(atomic_load(&the_app.accepted), 1);
}

static void
test_hold_while_parked_then_resume(void **state)
{
	int fd = client();
	/* Everything after "park" must wait, in order, until the wake-up. */
	send_str(fd, "a\npark\nb\nc\n");
	expect(fd, "parked\n");
	char buf[256];
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 200) > 0) {
		ssize_t r = read(fd, buf, sizeof(buf) - 1);
		buf[r > 0 ? r : 0] = '\0';
		fail_msg("got \"%s\" while parked, want nothing", buf);
	}
	atomic_store(&the_app.unpark, 1);
	dp_worker_wake(the_app.worker);
	expect(fd, "unparked\nok b\nok c\n");
	send_str(fd, "d\n");
	expect(fd, "ok d\n");
	close(fd);
	wait_for(&the_app.closed, 1);
}

static void
test_timer_closes(void **state)
{
	int fd = client();
	send_str(fd, "timer\n");
	expect(fd, "armed\n");
	expect(fd, "timeout\n");
	close(fd);
	wait_for(&the_app.closed, 1);
}

static void
test_many_clients_and_peer_close(void **state)
{
	int fds[40];
	for (int i = 0; i < 40; i++)
		fds[i] = client();
	for (int i = 0; i < 40; i++) {
		char line[32];
		snprintf(line, sizeof(line), "n%d\n", i);
		send_str(fds[i], line);
	}
	for (int i = 0; i < 40; i++) {
		char want[32];
		snprintf(want, sizeof(want), "ok n%d\n", i);
		expect(fds[i], want);
		close(fds[i]);
	}
	wait_for(&the_app.closed, 40);
	assert_int_equal(atomic_load(&the_app.accepted), 40);
}

static void
test_bind_conflict_reports_address(void **state)
{
	/* The fixture's listener holds the port without SO_REUSEPORT from us. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	socklen_t l = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &l);
	listen(fd, 1);
	struct dp_listen dl = { .addrlen = sizeof(a) };
	memcpy(&dl.addr, &a, sizeof(a));
	struct dp_kernel_conf kc = { .workers = 1, .listen = &dl, .nlisten = 1, .conn_max = 4, .cpu_first = -1 };
	char err[256] = "";
	struct dp_kernel *k2 = dp_kernel_start(&kc, &ops, &the_app, err, sizeof(err));
	close(fd);
	if (k2 != NULL) {
		dp_kernel_stop(k2);
		fail_msg("got a running transport on a taken port, want an error");
	}
	if (strstr(err, "127.0.0.1") == NULL || strstr(err, "in use") == NULL)
		fail_msg("got error \"%s\", want the address and \"in use\"", err);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_echo_and_partial_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_while_parked_then_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_timer_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_clients_and_peer_close, setup, teardown),
		cmocka_unit_test(test_bind_conflict_reports_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
