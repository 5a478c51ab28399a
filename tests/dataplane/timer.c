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

/* A busy loop that calls dp_wheel_expire() only when dp_wheel_due() says
 * so: random deadlines, re-arms and cancels, every timer fires once, never
 * early and at most a tick (plus the loop's step) late. */
static void
test_due_skips_nothing(void **state)
{
	static struct dp_wheel wh;
	enum { N = 300 };
	static struct ev e[N];
	static uint64_t want[N];
	struct ctx cx = { .now = 1000, .wh = &wh };
	dp_wheel_init(&wh, cx.now);
	srand(7);
	int live = 0;
	for (uint64_t end = cx.now + 20000; cx.now < end; cx.now += 1 + (uint64_t)(rand() % 3)) {
		int i = rand() % N;
		if (rand() % 8 == 0) {
			if (dp_timer_armed(&e[i].t)) {
				dp_timer_cancel(&wh, &e[i].t);
				live--;
			}
			uint64_t d = (uint64_t)(rand() % 4 == 0 ? rand() % 6000 : rand() % 200);
			e[i].fired = 0;
			want[i] = cx.now + d;
			dp_timer_arm(&wh, &e[i].t, want[i]);
			live++;
		}
		if (!dp_wheel_due(&wh, cx.now))
			continue;
		dp_wheel_expire(&wh, cx.now, fire, &cx);
		for (int j = 0; j < N; j++) {
			if (e[j].fired && want[j]) {
				if (e[j].fired_at < want[j] || e[j].fired_at > want[j] + DP_WHEEL_TICK_MS + 3)
					fail_msg("timer %d: got fired at %llu, want %llu..+%u", j,
					         (unsigned long long)e[j].fired_at, (unsigned long long)want[j],
					         DP_WHEEL_TICK_MS + 3);
				want[j] = 0;
				live--;
			}
		}
	}
	for (int j = 0; j < N; j++)
		if (want[j] && want[j] + DP_WHEEL_TICK_MS + 3 < cx.now)
			fail_msg("timer %d: got not fired by %llu, want at %llu", j,
			         (unsigned long long)cx.now, (unsigned long long)want[j]);
	(void)live;
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
		cmocka_unit_test(test_due_skips_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
