/*
 * kernel.h - the kernel-socket transport: epoll + SO_REUSEPORT.
 *
 * Contract
 *   dp_kernel_start() opens one listening socket per listener address per
 *   worker (SO_REUSEPORT: the kernel spreads connections over the workers),
 *   and starts one thread per worker running a non-blocking epoll loop that
 *   serves its own connections through struct dp_app_ops (transport.h).
 *   Nothing is shared between workers. Connection objects come from a
 *   per-worker free list: the heap is touched only when the list is empty,
 *   never more than conn_max at a time.
 *
 *   dp_kernel_stop() (any thread but a worker's) stops accepting, closes every
 *   connection (closed() callbacks run on the workers), calls worker_fini()
 *   and joins; it returns NULL.
 *   Errors: dp_kernel_start returns NULL and sets errno, with a reason in
 *   err (e.g. "bind 127.0.0.1:25: Address already in use").
 */
#ifndef DP_KERNEL_H
#define DP_KERNEL_H

#include <stddef.h>

#include "dataplane/transport.h"

struct dp_kernel_conf {
	unsigned workers;
	const struct dp_listen *listen;
	unsigned nlisten;
	unsigned conn_max;             /* per worker; accepts beyond it wait */
	int cpu_first;                 /* pin worker i to cpu_first+i; -1: no pinning */
};

struct dp_kernel;

struct dp_kernel *dp_kernel_start(const struct dp_kernel_conf *conf, const struct dp_app_ops *ops,
                                  void *app, char *err, size_t errlen);
struct dp_kernel *dp_kernel_stop(struct dp_kernel *k);

#endif
