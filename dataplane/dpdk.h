/*
 * dpdk.h - the DPDK transport: one Ethernet port, the userspace TCP/IPv4
 * stack (stack.h) on every worker, busy-polled.
 *
 * Contract
 *   dp_dpdk_start() initialises the EAL with conf->eal (blank-separated
 *   arguments, as on a DPDK command line), takes one port, configures one
 *   RX/TX queue pair per worker as far as the port has them (and
 *   conf->queues allows), one mbuf pool per NUMA socket in use,
 *   starts the port and one loop per worker. Workers run on the EAL's
 *   worker lcores when there are at least conf->workers of them, else on
 *   threads registered with the EAL (so "-l 0" serves one worker).
 *   Each loop: rx_burst (if it has an RX queue) -> dispatch -> its inbox ->
 *   dp_stack_input() per frame -> wake() if
 *   dp_worker_wake() was called -> dp_stack_poll() -> tx_burst of what the
 *   stack emitted -> idle(). Frames the stack writes go into mbufs taken
 *   from the worker's pool and are sent in bursts at the end of the
 *   iteration (or when a burst is full); what the NIC does not take is
 *   retried a few times, then freed and counted. When nothing arrives for a
 *   while the loop sleeps up to DP_DPDK_NAP_US between polls, so that an
 *   idle server shares its cores.
 *
 *   Dispatch (more than one worker). A TCP connection lives in exactly one
 *   worker's stack, so every frame of a flow must reach that worker.
 *     - RSS: when every worker has an RX queue and the port offers an
 *       IPv4/TCP hash (and conf->software_dispatch is off), the NIC picks
 *       the queue and the worker polling it owns the flow.
 *     - Software: otherwise (fewer RX queues than workers, no RSS, or
 *       forced) each worker that polls an RX queue hashes every IPv4/TCP
 *       frame (peer address, peer port, local port, keyed with a random
 *       64-bit key per start so that a client cannot aim at one worker)
 *       and hands frames owned by another worker to that worker's inbox, an
 *       MP/SC rte_ring (conf->ring slots; a full inbox drops the frame,
 *       counted, as a full RX queue would).
 *     - In both modes ARP requests and replies and ICMP
 *       destination-unreachable go to every worker (one
 *       mbuf, its reference count raised, enqueued to every other inbox),
 *       so each stack learns the peer's MAC and path MTU whichever worker
 *       saw or asked; the answer a stack writes to a copied ARP request is
 *       freed, not sent (dpdk_arp_quiet), so the peer gets one reply, from
 *       the receiving worker. ICMP echo, IPv6 ND and ping, IPv4 fragments
 *       and frames that fail validation stay with the worker that received
 *       them (which answers or counts the drop).
 *     - TX: a worker transmits on its own TX queue when the port has one
 *       for it; otherwise it enqueues its bursts to the TX box (MP/SC
 *       rte_ring) of worker (id mod TX queues), which drains it onto its
 *       queue once per pass.
 *   No locks anywhere on this path: ring operations are lock-free. Active
 *   opens (dp_worker_connect) with more than one worker and software
 *   dispatch are not supported yet: the stack chooses the local port
 *   without regard to which worker the reply will hash to.
 *
 *   The application sees transport.h exactly as with the kernel transport;
 *   the stack's listeners are the ports of conf->listen (addresses are not
 *   compared: the stack owns one IPv4 address, conf->ipv4; IPv6 listeners
 *   are skipped, their port is already served if an IPv4 one has it).
 *   dp_worker_connect() opens IPv4 connections on the worker's stack; a
 *   pure client (sluice-bench) passes no listeners at all.
 *
 *   Exception path (conf->exception_tap): the stacks hand frames that are
 *   not for the SMTP service (stack.h, io->exception) to a TAP interface,
 *   one write() each, from whichever worker received them (a copy from
 *   another worker's dispatch, ARP or ICMP, is not written again); worker
 *   0 reads the kernel's frames from it (non-blocking, DP_D_BURST a pass
 *   at most, once a millisecond unless the last read filled the burst)
 *   and sends them on its TX queue. Counted as dpdk_exception_* in the
 *   dp_stats lines.
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
 *   "no DPDK port 1 (0 available)", "port 0: RX queue 1: ...").
 */
#ifndef DP_DPDK_H
#define DP_DPDK_H

#include <stdbool.h>
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
	uint8_t ipv6[16];              /* global IPv6 address (ND, ping); all zero: none */
	bool no_csum_offload;          /* checksums in software even where the port has offload */
	/* Sizes; 0 takes the default (stack.h's for the stack's). */
	uint32_t buf_size;             /* bytes per connection receive / send ring */
	uint32_t bufs;                 /* rings of each kind per worker */
	uint32_t time_wait_ms;
	unsigned mbufs;                /* per NUMA socket */
	unsigned ring;                 /* dispatch / TX ring slots per worker */
	unsigned queues;               /* queue pairs at most; 0: one per worker */
	bool software_dispatch;        /* even when the port has RSS */
	/* Exception path (docs/TCP.md): with exception_tap, frames not for
	 * the SMTP service go to a Linux TAP interface named exception_iface
	 * (NULL: "sluice-exc0") with the port's MAC, and what the kernel sends
	 * there leaves through the port (worker 0 reads it: at most a burst
	 * per pass, once a millisecond while there is nothing). Without it
	 * they are dropped (counted), a TCP segment to a closed port reset. */
	bool exception_tap;
	const char *exception_iface;
	/* Optional: start-up facts (port, MAC, queues, dispatch mode, link
	 * state), one line each; link changes (event=dpdk_link) from the EAL
	 * interrupt thread when the port has link-state interrupts; dp_stats
	 * lines from the workers. So: thread-safe. */
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
