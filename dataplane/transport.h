/*
 * transport.h - the byte-stream interface every transport implements.
 *
 * Contract
 *   A transport (kernel sockets now, the DPDK TCP stack later) owns worker
 *   threads, each with its own poll loop, connections and timers. It knows
 *   nothing of SMTP: it hands an application byte streams through the
 *   callbacks in struct dp_app_ops, all called on the owning worker's thread.
 *
 *   Per connection:
 *     accept()   a new connection; the application returns its per-connection
 *                state, or NULL to refuse (the transport closes at once).
 *     recv()     bytes arrived; the application returns how many it took.
 *                The rest stay in the transport's receive buffer and are
 *                offered again after every later callback for the connection
 *                and on dp_conn_rx_resume(); while bytes are held the
 *                transport stops reading from the peer (backpressure). So an
 *                application keeps a partial line itself, and declines bytes
 *                only when it cannot take any more now.
 *     pull()     the transport asks for bytes to send; the application points
 *                *p at them and returns their number (0: nothing to send), then
 *                sent() tells how many left. The transport pulls after every
 *                recv/timer callback and after dp_conn_flush().
 *     timer()    the deadline set with dp_conn_timer() has passed.
 *     closed()   the connection is gone (peer close, reset, error, or after
 *                dp_conn_close() has flushed). The last callback for it: the
 *                application frees its state here.
 *   Per worker:
 *     wake()     another thread called dp_worker_wake(); drain your queues.
 *     idle()     once per loop iteration, after the burst (RCU quiescent
 *                state, statistics).
 *
 *   Active open: dp_worker_connect() from the worker's own thread, in wake()
 *   or idle() (not inside a connection's callback), returns the handle at
 *   once; conn_app then gets the per-connection callbacks above, pull()
 *   first when the handshake completes; a failed open ends in
 *   closed(-ECONNREFUSED or -ETIMEDOUT). accept() is not called for it.
 *
 *   Time: dp_worker_now() in milliseconds on a monotonic clock, read once
 *   per loop iteration.
 */
#ifndef DP_TRANSPORT_H
#define DP_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct dp_conn;
struct dp_worker;

/* What a transport does for a connection and a worker. Every transport's
 * connection object starts with struct dp_conn, every worker with struct
 * dp_worker, so the calls below reach the right transport through one
 * indirect call. */
struct dp_conn_ops {
	void (*flush)(struct dp_conn *c);
	void (*close)(struct dp_conn *c);
	void (*abort)(struct dp_conn *c);
	void (*timer)(struct dp_conn *c, uint64_t deadline_ms);
	void (*rx_resume)(struct dp_conn *c);
};

struct dp_worker_ops {
	void (*wake)(struct dp_worker *w);
	struct dp_conn *(*connect)(struct dp_worker *w, const struct sockaddr *peer, void *conn_app);
};

struct dp_conn {
	const struct dp_conn_ops *ops;
};

struct dp_worker {
	const struct dp_worker_ops *ops;
	uint64_t now;                  /* ms, monotonic, read once per loop */
};

struct dp_app_ops {
	void *(*worker_init)(void *app, struct dp_worker *w, unsigned worker_id);
	void (*worker_fini)(void *worker_app);
	void *(*accept)(void *worker_app, struct dp_conn *c, const struct sockaddr *peer,
	                const struct sockaddr *local, unsigned listener_flags);
	size_t (*recv)(void *conn_app, const uint8_t *p, size_t n);
	size_t (*pull)(void *conn_app, const uint8_t **p);
	void (*sent)(void *conn_app, size_t n);
	void (*timer)(void *conn_app);
	void (*closed)(void *conn_app, int err);
	void (*wake)(void *worker_app);
	void (*idle)(void *worker_app);
};

struct dp_listen {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	unsigned flags;                /* handed to accept() as listener_flags */
};

/* Connection calls: owning worker thread only. Outside a callback these
 * act at once and may end in closed(): do not touch c after calling them
 * there. */
static inline void dp_conn_flush(struct dp_conn *c) { c->ops->flush(c); }       /* pull and send now */
static inline void dp_conn_close(struct dp_conn *c) { c->ops->close(c); }       /* after pending output is sent */
static inline void dp_conn_abort(struct dp_conn *c) { c->ops->abort(c); }       /* at once, RST */
/* UINT64_MAX: no timer. */
static inline void dp_conn_timer(struct dp_conn *c, uint64_t deadline_ms) { c->ops->timer(c, deadline_ms); }
/* The application is ready again: offer held bytes (if any), then send. */
static inline void dp_conn_rx_resume(struct dp_conn *c) { c->ops->rx_resume(c); }

static inline uint64_t dp_worker_now(const struct dp_worker *w) { return w->now; }
/* Any thread: make the worker call wake() soon. */
static inline void dp_worker_wake(struct dp_worker *w) { w->ops->wake(w); }
/* Owning worker thread, from wake() or idle(): open a connection to peer.
 * NULL with errno: EAGAIN (no connection or local port free now), EINVAL
 * (bad address), EAFNOSUPPORT (a family the transport cannot open),
 * ENOTSUP (the transport has no active open). */
static inline struct dp_conn *
dp_worker_connect(struct dp_worker *w, const struct sockaddr *peer, void *conn_app)
{
	return w->ops->connect(w, peer, conn_app);
}

#endif
