/*
 * tests/control/rcache.c - control/rcache.c: values by key, replacement,
 * expiry, the bound (expired entries go first), and readers on other
 * threads while the owner writes.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <urcu/urcu-memb.h>

#include "control/rcache.h"

static void
test_get_put_expire(void **state)
{
	(void)state;
	urcu_memb_register_thread();
	struct ctl_rcache *c = ctl_rcache_new(100);
	uint32_t v = 0;
	assert_false(ctl_rcache_get(c, "a", 1, &v, sizeof(v), 1000));
	uint32_t one = 1, two = 2;
	ctl_rcache_put(c, "a", 1, &one, sizeof(one), 2000, 1000);
	assert_true(ctl_rcache_get(c, "a", 1, &v, sizeof(v), 1500));
	assert_int_equal(v, 1);
	assert_false(ctl_rcache_get(c, "a", 1, &v, sizeof(v), 2000));  /* expired */
	ctl_rcache_put(c, "a", 1, &two, sizeof(two), 5000, 1000);      /* replaces */
	assert_true(ctl_rcache_get(c, "a", 1, &v, sizeof(v), 2000));
	assert_int_equal(v, 2);
	assert_false(ctl_rcache_get(c, "ab", 2, &v, sizeof(v), 2000)); /* keys by bytes */
	ctl_rcache_put(c, "b", 1, &one, sizeof(one), 900, 1000);       /* already expired: kept not */
	assert_false(ctl_rcache_get(c, "b", 1, &v, sizeof(v), 950));
	ctl_rcache_clear(c);
	assert_false(ctl_rcache_get(c, "a", 1, &v, sizeof(v), 2000));
	ctl_rcache_free(c);
	urcu_memb_unregister_thread();
}

/* At the bound the expired entries go first: 100 short-lived, then 100
 * long-lived; every long-lived one is still there. */
static void
test_bound(void **state)
{
	(void)state;
	urcu_memb_register_thread();
	struct ctl_rcache *c = ctl_rcache_new(100);
	char k[16];
	uint32_t v;
	for (uint32_t i = 0; i < 100; i++) {
		int n = snprintf(k, sizeof(k), "old%u", i);
		ctl_rcache_put(c, k, (size_t)n, &i, sizeof(i), 1100, 1000);
	}
	for (uint32_t i = 0; i < 80; i++) {
		int n = snprintf(k, sizeof(k), "new%u", i);
		ctl_rcache_put(c, k, (size_t)n, &i, sizeof(i), 10000, 2000);
	}
	for (uint32_t i = 0; i < 80; i++) {
		int n = snprintf(k, sizeof(k), "new%u", i);
		assert_true(ctl_rcache_get(c, k, (size_t)n, &v, sizeof(v), 3000));
		assert_int_equal(v, i);
	}
	/* past the bound with nothing expired: still bounded, still works */
	for (uint32_t i = 0; i < 1000; i++) {
		int n = snprintf(k, sizeof(k), "more%u", i);
		ctl_rcache_put(c, k, (size_t)n, &i, sizeof(i), 10000, 3000);
	}
	assert_true(ctl_rcache_get(c, "more999", 7, &v, sizeof(v), 3000));
	ctl_rcache_clear(c);
	ctl_rcache_free(c);
	urcu_memb_unregister_thread();
}

static struct ctl_rcache *shared;
static atomic_bool done;

static void *
reader(void *arg)
{
	(void)arg;
	urcu_memb_register_thread();
	unsigned long hits = 0;
	while (!atomic_load(&done)) {
		uint64_t v;
		for (uint64_t i = 0; i < 64; i++)
			if (ctl_rcache_get(shared, &i, sizeof(i), &v, sizeof(v), 1000)) {
				if (v != i * 3)
					abort();  /* a torn or stale-freed value */
				hits++;
			}
	}
	urcu_memb_unregister_thread();
	return (void *)hits;
}

/* Three readers while the owner replaces and evicts: every value read is
 * whole (run under ASan in CI: a use after free would show). */
static void
test_readers(void **state)
{
	(void)state;
	urcu_memb_register_thread();
	shared = ctl_rcache_new(32);
	atomic_store(&done, false);
	pthread_t th[3];
	for (int i = 0; i < 3; i++)
		pthread_create(&th[i], NULL, reader, NULL);
	for (int round = 0; round < 2000; round++)
		for (uint64_t i = 0; i < 64; i++) {
			uint64_t v = i * 3;
			ctl_rcache_put(shared, &i, sizeof(i), &v, sizeof(v), 5000, 1000);
		}
	atomic_store(&done, true);
	unsigned long hits = 0;
	for (int i = 0; i < 3; i++) {
		void *h;
		pthread_join(th[i], &h);
		hits += (unsigned long)h;
	}
	assert_true(hits > 0);
	ctl_rcache_clear(shared);
	ctl_rcache_free(shared);
	urcu_memb_unregister_thread();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_put_expire),
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_readers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
