/*
 * dpdk.h - the DPDK transport: one Ethernet port, the userspace TCP/IPv4
 * stack (stack.h) on every worker, busy-polled.
 *
 * Contract
 *   dp_dpdk_start() initialises the EAL with conf->eal (blank-separated
 *   arguments, as on a DPDK command line), takes one port, configures one
 *   RX/TX queue pair per worker and one mbuf pool per NUMA socket in use,
 *   starts the port and one loop per worker. Workers run on the EAL's
 *   worker lcores when there are at least conf->workers of them, else on
 *   threads registered with the EAL (so "-l 0" serves one worker).
 *   Each loop: rx_burst -> dp_stack_input() per frame -> wake() if
 *   dp_worker_wake() was called -> dp_stack_poll() -> tx_burst of what the
 *   stack emitted -> idle(). Frames the stack writes go into mbufs taken
 *   from the worker's pool and are sent in bursts at the end of the
 *   iteration (or when a burst is full); what the NIC does not take is
 *   retried a few times, then freed and counted. When nothing arrives for a
 *   while the loop sleeps up to DP_DPDK_NAP_US between polls, so that an
 *   idle server shares its cores.
 *
 *   More than one worker needs RSS on the port (an IPv4/TCP hash):
 *   dp_dpdk_start refuses more than one worker on a port without it
 *   (net_tap, for example) with the reason in err. Not done yet with RSS:
 *   ARP frames land on one queue only, so a worker whose stack never saw
 *   the peer's ARP reply cannot send to it; multi-worker DPDK is untested.
 *
 *   The application sees transport.h exactly as with the kernel transport;
 *   the stack's listeners are the ports of conf->listen (addresses are not
 *   compared: the stack owns one IPv4 address, conf->ipv4; IPv6 listeners
 *   are skipped, their port is already served if an IPv4 one has it).
 *   dp_worker_connect() opens IPv4 connections on the worker's stack; a
 *   pure client (sluice-bench) passes no listeners at all.
 *
 *   Statistics: dp_dpdk_stats_request() bumps an atomic generation; each
 *   worker compares it with the last one it served once per loop pass and,
 *   when it moved, writes one line through conf->log from its own thread:
 *     event=dp_stats worker=N conns=N time_wait=N <counter>=N ...
 *   with every nonzero counter of struct dp_stack_stats (by its field name)
 *   and of this binding (dpdk_*). A worker writes the same line, ending in
 *   final=1, as it stops (before its stack is freed).
 *
 *   dp_dpdk_stop() (the thread that called start, never a worker) stops the
 *   loops, which free their stacks (closed(-ESHUTDOWN) for every
 *   connection, no frames sent) and call worker_fini(); then the port is
 *   stopped and closed and the EAL cleaned up. The EAL cannot be
 *   initialised twice in one process: start at most once.
 *   Errors: NULL with errno, a reason in err ("rte_eal_init: ...",
 *   "no DPDK port 1 (0 available)", "2 workers need RSS; net_tap has none").
 */
#ifndef DP_DPDK_H
#define DP_DPDK_H

#include <stddef.h>
#include <stdint.h>

#include "dataplane/transport.h"

#define DP_DPDK_NAP_US 200

struct dp_dpdk_conf {
	const char *eal;               /* EAL arguments, blank-separated */
	unsigned port;                 /* DPDK port id */
	unsigned workers;
	const struct dp_listen *listen;
	unsigned nlisten;
	unsigned conn_max;             /* per worker, TIME_WAIT included */
	uint32_t ipv4, netmask, gateway;  /* host byte order; gateway 0: none */
	/* Optional: start-up facts (port, MAC, link state), one line each. */
	/* Also called on the workers (dp_stats lines): must be thread-safe. */
	void (*log)(void *log_ctx, const char *line);
	void *log_ctx;
};

struct dp_dpdk;

struct dp_dpdk *dp_dpdk_start(const struct dp_dpdk_conf *conf, const struct dp_app_ops *ops,
                              void *app, char *err, size_t errlen);
struct dp_dpdk *dp_dpdk_stop(struct dp_dpdk *d);
/* Any thread, async-signal-safe (one atomic add): every worker logs one
 * event=dp_stats line on its next loop pass. */
void dp_dpdk_stats_request(struct dp_dpdk *d);

#endif
