/*
 * tests/control/perclient.c - control/perclient.c: connections per client
 * up to the limit and back, messages per minute per window, the skip list,
 * counts shared by threads, and how seldom two addresses share a count.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/perclient.h"

static void
v4(uint8_t a[16], uint32_t ip)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = (uint8_t)(ip >> 24);
	a[13] = (uint8_t)(ip >> 16);
	a[14] = (uint8_t)(ip >> 8);
	a[15] = (uint8_t)ip;
}

static void
test_connections(void **state)
{
	(void)state;
	struct ctl_net skip = { .prefix = 96 + 24 };
	v4(skip.addr, 0x0a000000);  /* 10.0.0.0/24 */
	struct ctl_limits *l = ctl_limits_new(&(struct ctl_limits_conf){
		.conns_per_client = 3, .skip = &skip, .nskip = 1 });
	uint8_t a[16], b[16], s[16];
	v4(a, 0xc0000201);
	v4(b, 0xc0000202);
	v4(s, 0x0a000005);
	for (int i = 0; i < 3; i++)
		assert_true(ctl_limits_conn_take(l, a));
	assert_false(ctl_limits_conn_take(l, a));
	assert_false(ctl_limits_conn_take(l, a));  /* a refusal counts nothing */
	assert_true(ctl_limits_conn_take(l, b));   /* another client: its own count */
	ctl_limits_conn_put(l, a);
	assert_true(ctl_limits_conn_take(l, a));
	assert_false(ctl_limits_conn_take(l, a));
	for (int i = 0; i < 100; i++)
		assert_true(ctl_limits_conn_take(l, s));  /* skipped */
	l = ctl_limits_free(l);
	assert_null(l);
}

static void
test_messages_per_minute(void **state)
{
	(void)state;
	struct ctl_limits *l = ctl_limits_new(&(struct ctl_limits_conf){ .msgs_per_minute = 2 });
	uint8_t a[16];
	v4(a, 0xc0000201);
	uint64_t t = 6000000;  /* the start of a minute */
	assert_true(ctl_limits_msg_take(l, a, t));
	assert_true(ctl_limits_msg_take(l, a, t + 30));
	assert_false(ctl_limits_msg_take(l, a, t + 59));
	assert_true(ctl_limits_msg_take(l, a, t + 60));  /* a new minute */
	/* no connection limit set: never refused */
	for (int i = 0; i < 10; i++)
		assert_true(ctl_limits_conn_take(l, a));
	ctl_limits_free(l);
}

/* 2,000 clients each at 2 of a limit of 3: does any of them find itself
 * at 3 because another shares both its slots? With 2 x 65,536 slots it
 * should be very rare; this counts the clients refused early. */
static void
test_collisions_rare(void **state)
{
	(void)state;
	struct ctl_limits *l = ctl_limits_new(&(struct ctl_limits_conf){ .conns_per_client = 3 });
	uint8_t a[16];
	for (uint32_t i = 0; i < 2000; i++) {
		v4(a, 0xc6120000u + i * 7919u);
		assert_true(ctl_limits_conn_take(l, a));
		assert_true(ctl_limits_conn_take(l, a));
	}
	unsigned early = 0;
	for (uint32_t i = 0; i < 2000; i++) {
		v4(a, 0xc6120000u + i * 7919u);
		if (!ctl_limits_conn_take(l, a))
			early++;
	}
	assert_true(early <= 2);
	ctl_limits_free(l);
}

struct th { struct ctl_limits *l; int ok; };

static void *
taker(void *arg)
{
	struct th *t = arg;
	uint8_t a[16];
	v4(a, 0xc0000299);
	for (int i = 0; i < 1000; i++)
		t->ok += ctl_limits_conn_take(t->l, a);
	return NULL;
}

/* Four threads race for one client's 100 connections: 100 win, or at most
 * 3 more (the two rows are not taken in one step; perclient.h). */
static void
test_threads(void **state)
{
	(void)state;
	struct ctl_limits *l = ctl_limits_new(&(struct ctl_limits_conf){ .conns_per_client = 100 });
	pthread_t th[4];
	struct th t[4];
	for (int i = 0; i < 4; i++) {
		t[i] = (struct th){ .l = l };
		pthread_create(&th[i], NULL, taker, &t[i]);
	}
	int ok = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ok += t[i].ok;
	}
	assert_true(ok >= 100 && ok <= 103);
	ctl_limits_free(l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_connections),
		cmocka_unit_test(test_messages_per_minute),
		cmocka_unit_test(test_collisions_rare),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
