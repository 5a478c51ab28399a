/* Tests for dataplane/timer.c: the per-worker hashed timer wheel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "dataplane/timer.h"

struct ev {
	struct dp_timer t;
	uint64_t fired_at;
	int fired;
	uint64_t rearm;                /* re-arm this far ahead once */
};

struct ctx {
	uint64_t now;
	struct dp_wheel *wh;
};

static void
fire(struct dp_timer *t, void *arg)
{
	struct ctx *cx = arg;
	struct ev *e = (struct ev *)t;
	e->fired++;
	e->fired_at = cx->now;
	if (e->rearm) {
		uint64_t d = e->rearm;
		e->rearm = 0;
		dp_timer_arm(cx->wh, t, cx->now + d);
	}
}

static unsigned
run_until(struct dp_wheel *wh, struct ctx *cx, uint64_t end, uint64_t step)
{
	unsigned n = 0;
	for (; cx->now <= end; cx->now += step)
		n += dp_wheel_expire(wh, cx->now, fire, cx);
	return n;
}

static void
test_fires_in_order_not_early(void **state)
{
	static struct dp_wheel wh;
	struct ctx cx = { .now = 1000, .wh = &wh };
	dp_wheel_init(&wh, cx.now);
	struct ev e[50] = { 0 };
	for (int i = 0; i < 50; i++)
		dp_timer_arm(&wh, &e[i].t, 1000 + (uint64_t)i * 97);
	assert_int_equal(wh.armed, 50);
	run_until(&wh, &cx, 1000 + 50 * 97 + 10, 1);
	for (int i = 0; i < 50; i++) {
		if (e[i].fired != 1)
			fail_msg("timer %d fired %d times, want 1", i, e[i].fired);
		uint64_t want = 1000 + (uint64_t)i * 97;
		if (e[i].fired_at < want || e[i].fired_at > want + DP_WHEEL_TICK_MS)
			fail_msg("timer %d fired at %llu, want [%llu, %llu]", i,
			         (unsigned long long)e[i].fired_at, (unsigned long long)want,
			         (unsigned long long)(want + DP_WHEEL_TICK_MS));
	}
	assert_int_equal(wh.armed, 0);
}

static void
test_beyond_one_revolution(void **state)
{
	static struct dp_wheel wh;
	struct ctx cx = { .now = 0, .wh = &wh };
	dp_wheel_init(&wh, 0);
	struct ev e = { 0 };
	uint64_t at = (uint64_t)DP_WHEEL_SLOTS * DP_WHEEL_TICK_MS * 3 + 17; /* 3+ revolutions */
	dp_timer_arm(&wh, &e.t, at);
	run_until(&wh, &cx, at - 1, 1);
	if (e.fired)
		fail_msg("fired at %llu, before its deadline %llu", (unsigned long long)e.fired_at,
		         (unsigned long long)at);
	run_until(&wh, &cx, at + DP_WHEEL_TICK_MS, 1);
	assert_int_equal(e.fired, 1);
}

static void
test_cancel_and_rearm(void **state)
{
	static struct dp_wheel wh;
	struct ctx cx = { .now = 0, .wh = &wh };
	dp_wheel_init(&wh, 0);
	struct ev a = { 0 }, b = { 0 }, c = { .rearm = 500 };
	dp_timer_arm(&wh, &a.t, 100);
	dp_timer_arm(&wh, &b.t, 100);
	dp_timer_arm(&wh, &c.t, 100);
	dp_timer_cancel(&wh, &a.t);
	dp_timer_arm(&wh, &b.t, 300); /* re-arm moves it */
	run_until(&wh, &cx, 200, 1);
	assert_int_equal(a.fired, 0);
	assert_int_equal(b.fired, 0);
	assert_int_equal(c.fired, 1); /* and re-armed itself from fire() */
	run_until(&wh, &cx, 700, 1);
	assert_int_equal(b.fired, 1);
	assert_int_equal(c.fired, 2);
	assert_int_equal(wh.armed, 0);
}

static void
test_long_stall_fires_everything_once(void **state)
{
	static struct dp_wheel wh;
	struct ctx cx = { .now = 0, .wh = &wh };
	dp_wheel_init(&wh, 0);
	struct ev e[64] = { 0 };
	for (int i = 0; i < 64; i++)
		dp_timer_arm(&wh, &e[i].t, (uint64_t)i * 1000);
	cx.now = 10 * 60 * 1000; /* the loop was away for ten minutes */
	unsigned n = dp_wheel_expire(&wh, cx.now, fire, &cx);
	assert_int_equal(n, 64);
	for (int i = 0; i < 64; i++)
		assert_int_equal(e[i].fired, 1);
}

static void
test_idle_hint(void **state)
{
	static struct dp_wheel wh;
	dp_wheel_init(&wh, 0);
	assert_int_equal(dp_wheel_idle_ms(&wh, 0, 200), 200);
	struct ev e = { 0 };
	dp_timer_arm(&wh, &e.t, 50);
	struct ctx cx = { .now = 0, .wh = &wh };
	dp_wheel_expire(&wh, 0, fire, &cx);
	uint64_t idle = dp_wheel_idle_ms(&wh, 0, 200);
	if (idle > 52 || idle < 48)
		fail_msg("got idle %llu ms, want 48..52", (unsigned long long)idle);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fires_in_order_not_early),
		cmocka_unit_test(test_beyond_one_revolution),
		cmocka_unit_test(test_cancel_and_rearm),
		cmocka_unit_test(test_long_stall_fires_everything_once),
		cmocka_unit_test(test_idle_hint),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
