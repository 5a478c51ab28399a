/* timer.c - per-worker hashed timer wheel; see timer.h. */
#include "dataplane/timer.h"

#include <stddef.h>
#include <string.h>

/* How far past a scan dp_wheel_expire() looks for the next non-empty slot
 * to raise wh->low: a slot i ticks ahead holds no timer due sooner. */
#define LOW_SEARCH 64u

static inline uint64_t
tick_of(uint64_t ms)
{
	return ms / DP_WHEEL_TICK_MS;
}

void
dp_wheel_init(struct dp_wheel *wh, uint64_t now)
{
	memset(wh, 0, sizeof(*wh));
	wh->tick = tick_of(now);
	wh->low = UINT64_MAX;
	wh->due_ms = UINT64_MAX;
}

static void
set_low(struct dp_wheel *wh, uint64_t tk)
{
	wh->low = tk;
	wh->due_ms = (tk + 1) * DP_WHEEL_TICK_MS;
}

static void
unlink_timer(struct dp_timer *t)
{
	*t->pprev = t->next;
	if (t->next != NULL)
		t->next->pprev = t->pprev;
	t->next = NULL;
	t->pprev = NULL;
}

void
dp_timer_cancel(struct dp_wheel *wh, struct dp_timer *t)
{
	if (t->pprev == NULL)
		return;
	unlink_timer(t);
	if (--wh->armed == 0) {
		wh->low = UINT64_MAX;
		wh->due_ms = UINT64_MAX;
	}
}

void
dp_timer_arm(struct dp_wheel *wh, struct dp_timer *t, uint64_t deadline)
{
	dp_timer_cancel(wh, t);
	uint64_t tk = tick_of(deadline);
	/* A deadline already past goes into the next slot to be looked at. */
	if (tk < wh->tick)
		tk = wh->tick;
	struct dp_timer **head = &wh->slot[tk % DP_WHEEL_SLOTS];
	t->deadline = deadline;
	t->next = *head;
	if (t->next != NULL)
		t->next->pprev = &t->next;
	t->pprev = head;
	*head = t;
	wh->armed++;
	if (tk < wh->low)
		set_low(wh, tk);
}

unsigned
dp_wheel_expire(struct dp_wheel *wh, uint64_t now,
                void (*fire)(struct dp_timer *t, void *arg), void *arg)
{
	/* A tick is looked at once it has ended, so every timer in its slot
	 * that belongs to this revolution is due: at most one tick late.
	 * Before due_ms no slot below low has ended; wh->tick may lag then,
	 * which only costs the clamp in dp_timer_arm() (deadlines not in the
	 * past never hit it). */
	if (now < wh->due_ms)
		return 0;
	uint64_t cur = tick_of(now);
	if (cur <= wh->tick)
		return 0;
	uint64_t first = wh->tick > wh->low ? wh->tick : wh->low, last = cur - 1;
	wh->tick = cur;
	/* After a long stall look at every slot once, not once per tick. */
	if (last - first >= DP_WHEEL_SLOTS)
		first = last - DP_WHEEL_SLOTS + 1;
	struct dp_timer *due = NULL;
	for (uint64_t tk = first; tk <= last && wh->armed > 0; tk++) {
		struct dp_timer *t = wh->slot[tk % DP_WHEEL_SLOTS];
		while (t != NULL) {
			struct dp_timer *next = t->next;
			if (t->deadline <= now) {
				unlink_timer(t);
				wh->armed--;
				t->next = due;  /* collect first: fire() may re-arm */
				due = t;
			}
			t = next;
		}
	}
	/* Every timer left is due at cur or later; a slot i ticks past cur
	 * holds none due before cur + i. fire() may lower low again. */
	if (wh->armed == 0) {
		wh->low = UINT64_MAX;
		wh->due_ms = UINT64_MAX;
	} else {
		uint64_t tk = cur;
		while (tk < cur + LOW_SEARCH && wh->slot[tk % DP_WHEEL_SLOTS] == NULL)
			tk++;
		set_low(wh, tk);
	}
	unsigned n = 0;
	while (due != NULL) {
		struct dp_timer *t = due;
		due = t->next;
		t->next = NULL;
		fire(t, arg);
		n++;
	}
	return n;
}

uint64_t
dp_wheel_idle_ms(const struct dp_wheel *wh, uint64_t now, uint64_t cap)
{
	if (wh->armed == 0)
		return cap;
	if (now >= wh->due_ms)
		return 0;  /* a tick ended that may hold a due timer */
	/* A slot i ticks ahead is at least i ticks away: stop at the cap. */
	uint64_t start = tick_of(now) > wh->low ? tick_of(now) : wh->low;
	for (uint64_t tk = start; tk - start < DP_WHEEL_SLOTS && tk * DP_WHEEL_TICK_MS < now + cap; tk++) {
		if (wh->slot[tk % DP_WHEEL_SLOTS] != NULL) {
			uint64_t at = (tk + 1) * DP_WHEEL_TICK_MS;
			uint64_t d = at > now ? at - now : 0;
			return d < cap ? d : cap;
		}
	}
	return cap;
}
