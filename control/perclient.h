/*
 * perclient.h - per-client limits shared by every worker: open connections
 * and messages per minute per client address (DESIGN.md, life cycle step 2).
 *
 * Contract
 *   Counts live in two fixed tables of atomic counters (a count-min sketch:
 *   each address counts in one slot of each row, chosen by two independent
 *   hashes, and its count is the smaller of the two). Memory is fixed
 *   (CTL_LIMITS_SLOTS per row), nothing is allocated or locked per check;
 *   each take or put is one atomic operation per row. Two addresses that
 *   share both slots count together, so a count can only be too high,
 *   never too low: a client far under its limit is refused only if another
 *   address shares both its slots (about (n / CTL_LIMITS_SLOTS)^2 for n
 *   busy addresses). The two rows are added to one after the other, not in
 *   one step: connections from one client that race on several workers at
 *   the same instant may let up to (threads racing - 1) past the limit.
 *
 *   Messages per minute count in fixed one-minute windows (a slot keeps its
 *   window's number with the count; a new window starts it at zero).
 *
 *   Any thread may call any function; the handle is read-only after
 *   ctl_limits_new().
 */
#ifndef CTL_PERCLIENT_H
#define CTL_PERCLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "control/net.h"

#define CTL_LIMITS_SLOTS 65536u

struct ctl_limits_conf {
	uint32_t conns_per_client;     /* 0: no limit */
	uint32_t msgs_per_minute;      /* 0: no limit */
	const struct ctl_net *skip;    /* never limited */
	unsigned nskip;
};

struct ctl_limits;

struct ctl_limits *ctl_limits_new(const struct ctl_limits_conf *conf);
struct ctl_limits *ctl_limits_free(struct ctl_limits *l);

/* One more open connection for addr: true (counted, unless addr is in the
 * skip list: put it back at the close either way) or false (at the limit;
 * nothing counted). Counted also while no limit is set (0), so that a
 * reload that sets one sees the open connections. */
bool ctl_limits_conn_take(struct ctl_limits *l, const uint8_t addr[16]);
void ctl_limits_conn_put(struct ctl_limits *l, const uint8_t addr[16]);

/* One more message from addr in the minute now_s falls in: true, or false
 * when the client already sent msgs_per_minute in it. */
bool ctl_limits_msg_take(struct ctl_limits *l, const uint8_t addr[16], uint64_t now_s);

/* New limits (a reload; 0: none); the counts stay. Any thread. */
void ctl_limits_set(struct ctl_limits *l, uint32_t conns_per_client, uint32_t msgs_per_minute);

#endif
