/*
 * timer.h - per-worker hashed timer wheel.
 *
 * Contract
 *   A wheel belongs to one worker; nothing here locks. Timers are intrusive
 *   (struct dp_timer lives inside the owner's object), so arming, re-arming
 *   and cancelling never allocate and cost O(1). dp_wheel_expire() unlinks
 *   every timer whose deadline has passed and calls fire() for each; fire()
 *   may re-arm or cancel any timer, including the one firing. Deadlines are
 *   milliseconds on the worker's clock. Resolution is DP_WHEEL_TICK_MS; a
 *   deadline further than one revolution away stays in its slot and is
 *   looked at once per revolution.
 */
#ifndef DP_TIMER_H
#define DP_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define DP_WHEEL_TICK_MS 4u
#define DP_WHEEL_SLOTS   1024u  /* one revolution: 4.1 s */

struct dp_timer {
	struct dp_timer *next;
	struct dp_timer **pprev;       /* NULL: not armed */
	uint64_t deadline;
};

struct dp_wheel {
	uint64_t tick;                 /* next tick to look at */
	uint64_t low;                  /* no armed timer's tick is below this */
	uint64_t due_ms;               /* (low + 1) ticks: nothing fires before; UINT64_MAX when empty */
	uint32_t armed;
	struct dp_timer *slot[DP_WHEEL_SLOTS];
};

void dp_wheel_init(struct dp_wheel *wh, uint64_t now);
void dp_timer_arm(struct dp_wheel *wh, struct dp_timer *t, uint64_t deadline);
void dp_timer_cancel(struct dp_wheel *wh, struct dp_timer *t);
static inline bool dp_timer_armed(const struct dp_timer *t) { return t->pprev != 0; }
/* False when dp_wheel_expire() could fire nothing at now: the check a
 * busy-polling loop makes on every pass instead of calling it. */
static inline bool dp_wheel_due(const struct dp_wheel *wh, uint64_t now) { return now >= wh->due_ms; }
/* Fire due timers; returns how many fired. */
unsigned dp_wheel_expire(struct dp_wheel *wh, uint64_t now,
                         void (*fire)(struct dp_timer *t, void *arg), void *arg);
/* Milliseconds until the wheel may next have work, capped at cap; 0 if
 * something is due now. A timer fires at most DP_WHEEL_TICK_MS late. */
uint64_t dp_wheel_idle_ms(const struct dp_wheel *wh, uint64_t now, uint64_t cap);

#endif
