/*
 * kernel.c - the kernel-socket transport; see kernel.h and transport.h.
 *
 * Each worker thread owns an epoll set with its own SO_REUSEPORT listeners,
 * an eventfd for cross-thread wake-ups, a timer wheel and its connections.
 * Reads go into one per-worker buffer; bytes the application declines
 * (a parked session with pipelined input behind it) move to a per-connection
 * hold buffer from a per-worker free list, and reading from that socket stops
 * until the application asks for them again.
 */
#include "dataplane/kernel.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dataplane/timer.h"

#define DP_K_RXBUF       65536u
#define DP_K_HOLDBUF     65536u
#define DP_K_EVENTS      256
#define DP_K_ACCEPT_BURST 64
#define DP_K_LISTEN_MAX  16
#define DP_K_TAG_WAKE    1u
#define DP_K_TAG_LISTEN  2u  /* + listener index */

struct dp_hold {
	struct dp_hold *next_free;
	uint32_t off, len;
	uint8_t buf[DP_K_HOLDBUF];
};

struct kconn {
	struct dp_conn base;           /* first: the transport-neutral handle */
	int fd;
	uint32_t interest;             /* events registered with epoll */
	uint16_t in_cb;                /* nesting of callbacks into the app */
	bool closing;                  /* close once output is flushed */
	bool aborting;                 /* close at once with RST */
	bool eof;                      /* peer closed its side */
	bool out_blocked;              /* last write hit EAGAIN */
	struct kworker *w;
	void *app;
	struct dp_hold *hold;
	struct dp_timer timer;
	struct kconn *next, *prev;   /* live list, or free list (next) */
};

struct kworker {
	struct dp_worker base;         /* first: the transport-neutral handle */
	struct dp_kernel *k;
	unsigned id;
	pthread_t thread;
	int ep;
	int evfd;
	atomic_int wake_pending;
	int lfd[DP_K_LISTEN_MAX];
	void *app;
	struct dp_wheel wheel;
	struct kconn *live;
	struct kconn *free_conns;
	struct dp_hold *free_holds;
	unsigned nconn;
	uint64_t refused;              /* accepts closed at conn_max */
	uint8_t rx[DP_K_RXBUF];
} __attribute__((aligned(64)));

struct dp_kernel {
	struct dp_kernel_conf conf;
	struct dp_listen listen[DP_K_LISTEN_MAX];
	bool listen_wild[DP_K_LISTEN_MAX];
	const struct dp_app_ops *ops;
	void *app;
	atomic_bool stop;
	unsigned nworkers;
	struct kworker *w[];
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
k_worker_wake(struct dp_worker *dw)
{
	struct kworker *w = (struct kworker *)dw;
	if (atomic_exchange(&w->wake_pending, 1) == 0) {
		uint64_t one = 1;
		ssize_t r = write(w->evfd, &one, sizeof(one));
		(void)r;
	}
}

static void
conn_interest(struct kconn *c, uint32_t want)
{
	if (c->interest == want)
		return;
	struct epoll_event ev = { .events = want, .data.ptr = c };
	if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->interest = want;
}

static void
conn_release(struct kconn *c, int err)
{
	struct kworker *w = c->w;
	if (c->aborting) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	close(c->fd);
	dp_timer_cancel(&w->wheel, &c->timer);
	if (c->hold != NULL) {
		c->hold->next_free = w->free_holds;
		w->free_holds = c->hold;
		c->hold = NULL;
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->live = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	w->nconn--;
	w->k->ops->closed(c->app, err);
	c->app = NULL;
	c->next = w->free_conns;
	w->free_conns = c;
}

/* Pull from the application and write until it has nothing or the socket
 * is full. Returns -errno on a dead socket. */
static int
conn_write(struct kconn *c)
{
	const struct dp_app_ops *ops = c->w->k->ops;
	c->out_blocked = false;
	for (;;) {
		const uint8_t *p;
		size_t n = ops->pull(c->app, &p);
		if (n == 0)
			return 0;
		ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				c->out_blocked = true;
				return 0;
			}
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c->in_cb++;
		ops->sent(c->app, (size_t)r);
		c->in_cb--;
		if ((size_t)r < n) {
			c->out_blocked = true;
			return 0;
		}
	}
}

static void conn_offer_hold(struct kconn *c);

/* After any callback into the application: send, then decide interest or
 * close. Never called while a callback for c is running. */
static void
conn_settle(struct kconn *c)
{
	if (c->aborting) {
		conn_release(c, 0);
		return;
	}
	/* Held bytes are offered again after every callback (a timer, a
	 * wake-up or sent output may have made the application ready), and
	 * again after each write while that makes progress: an application
	 * whose output was full takes more once it has been sent. */
	bool more = false;
	for (int round = 0;; round++) {
		int err = conn_write(c);
		if (err < 0) {
			conn_release(c, err);
			return;
		}
		if (c->hold == NULL || c->closing || c->out_blocked)
			break;
		if (round == 16) {
			more = true;  /* fairness: come back on the next loop */
			break;
		}
		uint32_t left = c->hold->len - c->hold->off;
		c->in_cb++;
		conn_offer_hold(c);
		c->in_cb--;
		if (c->aborting) {
			conn_release(c, 0);
			return;
		}
		if (c->hold != NULL && c->hold->len - c->hold->off == left)
			break;  /* no progress: the application is parked */
	}
	if (c->closing && !c->out_blocked) {
		conn_release(c, 0);
		return;
	}
	if (c->eof && c->hold == NULL) {
		conn_release(c, -ECONNRESET);
		return;
	}
	uint32_t want = 0;
	if (c->hold == NULL && !c->closing && !c->eof)
		want |= EPOLLIN | EPOLLRDHUP;
	if (c->out_blocked || more)
		want |= EPOLLOUT;
	conn_interest(c, want);
}

static void
conn_hold(struct kconn *c, const uint8_t *p, size_t n)
{
	struct kworker *w = c->w;
	struct dp_hold *h = w->free_holds;
	if (h != NULL) {
		w->free_holds = h->next_free;
	} else {
		h = malloc(sizeof(*h));
		if (h == NULL) {
			c->aborting = true;  /* cannot keep the client's bytes: drop it */
			return;
		}
	}
	memcpy(h->buf, p, n);
	h->off = 0;
	h->len = (uint32_t)n;
	c->hold = h;
}

static void
conn_offer_hold(struct kconn *c)
{
	struct dp_hold *h = c->hold;
	size_t took = c->w->k->ops->recv(c->app, h->buf + h->off, h->len - h->off);
	h->off += (uint32_t)took;
	if (h->off == h->len) {
		h->next_free = c->w->free_holds;
		c->w->free_holds = h;
		c->hold = NULL;
	}
}

static void
conn_read(struct kconn *c)
{
	struct kworker *w = c->w;
	if (c->hold != NULL || c->closing)
		return;
	ssize_t n = recv(c->fd, w->rx, sizeof(w->rx), 0);
	if (n > 0) {
		c->in_cb++;
		size_t took = w->k->ops->recv(c->app, w->rx, (size_t)n);
		c->in_cb--;
		if (took < (size_t)n && !c->aborting)
			conn_hold(c, w->rx + took, (size_t)n - took);
	} else if (n == 0) {
		c->eof = true;
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		c->eof = true;
	}
}

static void
k_conn_flush(struct dp_conn *dc)
{
	struct kconn *c = (struct kconn *)dc;
	if (c->in_cb == 0)
		conn_settle(c);
}

static void
k_conn_close(struct dp_conn *dc)
{
	struct kconn *c = (struct kconn *)dc;
	c->closing = true;
	if (c->in_cb == 0)
		conn_settle(c);
}

static void
k_conn_abort(struct dp_conn *dc)
{
	struct kconn *c = (struct kconn *)dc;
	c->aborting = true;
	if (c->in_cb == 0)
		conn_settle(c);
}

static void
k_conn_timer(struct dp_conn *dc, uint64_t deadline_ms)
{
	struct kconn *c = (struct kconn *)dc;
	if (deadline_ms == UINT64_MAX)
		dp_timer_cancel(&c->w->wheel, &c->timer);
	else if (!dp_timer_armed(&c->timer) || c->timer.deadline != deadline_ms)
		dp_timer_arm(&c->w->wheel, &c->timer, deadline_ms);
}

static void
k_conn_rx_resume(struct dp_conn *dc)
{
	struct kconn *c = (struct kconn *)dc;
	if (c->in_cb > 0)
		return;  /* the settle after the running callback does it */
	conn_settle(c);
}

static const struct dp_conn_ops k_conn_ops = {
	.flush = k_conn_flush,
	.close = k_conn_close,
	.abort = k_conn_abort,
	.timer = k_conn_timer,
	.rx_resume = k_conn_rx_resume,
};

/* No active open over kernel sockets yet (sluice-bench's kernel mode will
 * bring one). */
static struct dp_conn *
k_worker_connect(struct dp_worker *dw, const struct sockaddr *peer, void *conn_app)
{
	errno = ENOTSUP;
	return NULL;
}

static const struct dp_worker_ops k_worker_ops = {
	.wake = k_worker_wake,
	.connect = k_worker_connect,
};

static void
timer_fire(struct dp_timer *t, void *arg)
{
	(void)arg;
	struct kconn *c = (struct kconn *)((char *)t - offsetof(struct kconn, timer));
	c->in_cb++;
	c->w->k->ops->timer(c->app);
	c->in_cb--;
	conn_settle(c);
}

static void
do_accept(struct kworker *w, unsigned li)
{
	struct dp_kernel *k = w->k;
	for (int i = 0; i < DP_K_ACCEPT_BURST; i++) {
		struct sockaddr_storage peer, local;
		socklen_t plen = sizeof(peer), llen = sizeof(local);
		int fd = accept4(w->lfd[li], (struct sockaddr *)&peer, &plen,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;  /* EAGAIN, or a transient error such as EMFILE */
		if (w->nconn >= k->conf.conn_max) {
			w->refused++;
			close(fd);
			continue;
		}
		/* TCP_NODELAY comes from the listener (Linux copies it to
		 * accepted sockets); the local address is the listener's
		 * unless it listens on a wildcard address. */
		if (k->listen_wild[li])
			getsockname(fd, (struct sockaddr *)&local, &llen);
		else
			memcpy(&local, &k->listen[li].addr, sizeof(local));
		struct kconn *c = w->free_conns;
		if (c != NULL)
			w->free_conns = c->next;
		else if ((c = malloc(sizeof(*c))) == NULL) {
			close(fd);
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->base.ops = &k_conn_ops;
		c->fd = fd;
		c->w = w;
		c->interest = EPOLLIN | EPOLLRDHUP;
		struct epoll_event ev = { .events = c->interest, .data.ptr = c };
		if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			c->next = w->free_conns;
			w->free_conns = c;
			continue;
		}
		c->next = w->live;
		if (w->live != NULL)
			w->live->prev = c;
		w->live = c;
		w->nconn++;
		c->in_cb++;
		c->app = k->ops->accept(w->app, &c->base, (struct sockaddr *)&peer,
		                        (struct sockaddr *)&local, k->listen[li].flags);
		c->in_cb--;
		if (c->app == NULL) {
			/* Refused: no closed() callback for a connection never taken. */
			close(fd);
			dp_timer_cancel(&w->wheel, &c->timer);
			if (c->prev != NULL)
				c->prev->next = c->next;
			else
				w->live = c->next;
			if (c->next != NULL)
				c->next->prev = c->prev;
			w->nconn--;
			c->next = w->free_conns;
			w->free_conns = c;
			continue;
		}
		conn_settle(c);
	}
}

static void
conn_event(struct kconn *c, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR))
		conn_read(c);
	/* HUP and ERR cannot be masked: a gone peer with held input would
	 * otherwise wake the loop forever. */
	if ((events & (EPOLLHUP | EPOLLERR)) && c->hold != NULL)
		c->aborting = true;
	conn_settle(c);
}

static void *
worker_main(void *arg)
{
	struct kworker *w = arg;
	struct dp_kernel *k = w->k;
	struct epoll_event ev[DP_K_EVENTS];

	if (k->conf.cpu_first >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((unsigned)k->conf.cpu_first + w->id, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	w->base.now = mono_ms();
	dp_wheel_init(&w->wheel, w->base.now);
	w->app = k->ops->worker_init(k->app, &w->base, w->id);

	while (!atomic_load_explicit(&k->stop, memory_order_relaxed)) {
		uint64_t idle = dp_wheel_idle_ms(&w->wheel, w->base.now, 200);
		int n = epoll_wait(w->ep, ev, DP_K_EVENTS, (int)idle);
		w->base.now = mono_ms();
		for (int i = 0; i < n; i++) {
			uint64_t tag = ev[i].data.u64;
			if (tag == DP_K_TAG_WAKE) {
				uint64_t v;
				ssize_t r = read(w->evfd, &v, sizeof(v));
				(void)r;
				atomic_store(&w->wake_pending, 0);
				k->ops->wake(w->app);
			} else if (tag >= DP_K_TAG_LISTEN && tag < DP_K_TAG_LISTEN + DP_K_LISTEN_MAX) {
				do_accept(w, (unsigned)(tag - DP_K_TAG_LISTEN));
			} else {
				conn_event(ev[i].data.ptr, ev[i].events);
			}
		}
		dp_wheel_expire(&w->wheel, w->base.now, timer_fire, NULL);
		if (k->ops->idle != NULL)
			k->ops->idle(w->app);
	}

	/* Shutdown: stop listening, close every connection, let the app drain. */
	for (unsigned i = 0; i < k->conf.nlisten; i++)
		if (w->lfd[i] >= 0) {
			close(w->lfd[i]);
			w->lfd[i] = -1;
		}
	while (w->live != NULL) {
		struct kconn *c = w->live;
		c->aborting = true;
		conn_release(c, -ESHUTDOWN);
	}
	k->ops->worker_fini(w->app);
	return NULL;
}

static int
open_listener(const struct dp_listen *l, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (l->addr.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&l->addr;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (l->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&l->addr;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket for %s:%u: %s", host, port, strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* inherited */
	if (l->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, 4096) < 0) {
		snprintf(err, errlen, "bind %s:%u: %s (is another server on that port?)", host, port,
		         strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static struct kworker *
worker_new(struct dp_kernel *k, unsigned id, char *err, size_t errlen)
{
	struct kworker *w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
	if (w == NULL) {
		snprintf(err, errlen, "out of memory for worker %u", id);
		return NULL;
	}
	memset(w, 0, sizeof(*w));
	w->base.ops = &k_worker_ops;
	w->k = k;
	w->id = id;
	for (unsigned i = 0; i < DP_K_LISTEN_MAX; i++)
		w->lfd[i] = -1;
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->ep < 0 || w->evfd < 0) {
		snprintf(err, errlen, "epoll/eventfd: %s", strerror(errno));
		return w;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = DP_K_TAG_WAKE };
	epoll_ctl(w->ep, EPOLL_CTL_ADD, w->evfd, &ev);
	for (unsigned i = 0; i < k->conf.nlisten; i++) {
		w->lfd[i] = open_listener(&k->listen[i], err, errlen);
		if (w->lfd[i] < 0)
			return w;
		struct epoll_event lev = { .events = EPOLLIN, .data.u64 = DP_K_TAG_LISTEN + i };
		epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd[i], &lev);
	}
	return w;
}

static void
worker_free(struct kworker *w)
{
	if (w == NULL)
		return;
	for (unsigned i = 0; i < DP_K_LISTEN_MAX; i++)
		if (w->lfd[i] >= 0)
			close(w->lfd[i]);
	if (w->ep >= 0)
		close(w->ep);
	if (w->evfd >= 0)
		close(w->evfd);
	while (w->free_conns != NULL) {
		struct kconn *c = w->free_conns;
		w->free_conns = c->next;
		free(c);
	}
	while (w->free_holds != NULL) {
		struct dp_hold *h = w->free_holds;
		w->free_holds = h->next_free;
		free(h);
	}
	free(w);
}

struct dp_kernel *
dp_kernel_start(const struct dp_kernel_conf *conf, const struct dp_app_ops *ops, void *app,
                char *err, size_t errlen)
{
	if (conf->workers == 0 || conf->nlisten == 0 || conf->nlisten > DP_K_LISTEN_MAX) {
		snprintf(err, errlen, "need 1+ workers and 1..%d listeners", DP_K_LISTEN_MAX);
		errno = EINVAL;
		return NULL;
	}
	struct dp_kernel *k = calloc(1, sizeof(*k) + conf->workers * sizeof(k->w[0]));
	if (k == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	k->conf = *conf;
	memcpy(k->listen, conf->listen, conf->nlisten * sizeof(conf->listen[0]));
	for (unsigned i = 0; i < conf->nlisten; i++) {
		const struct sockaddr_storage *a = &conf->listen[i].addr;
		if (a->ss_family == AF_INET)
			k->listen_wild[i] = ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
		else
			k->listen_wild[i] = a->ss_family != AF_INET6 ||
			    IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
	}
	k->conf.listen = k->listen;
	k->ops = ops;
	k->app = app;
	err[0] = '\0';
	for (unsigned i = 0; i < conf->workers; i++) {
		k->w[i] = worker_new(k, i, err, errlen);
		k->nworkers = i + 1;
		if (k->w[i] == NULL || err[0] != '\0')
			goto fail;
	}
	for (unsigned i = 0; i < conf->workers; i++) {
		int rc = pthread_create(&k->w[i]->thread, NULL, worker_main, k->w[i]);
		if (rc != 0) {
			snprintf(err, errlen, "pthread_create: %s", strerror(rc));
			atomic_store(&k->stop, true);
			for (unsigned j = 0; j < i; j++) {
				k_worker_wake(&k->w[j]->base);
				pthread_join(k->w[j]->thread, NULL);
			}
			k->nworkers = conf->workers;
			goto fail;
		}
	}
	return k;
fail:
	for (unsigned i = 0; i < k->nworkers; i++)
		worker_free(k->w[i]);
	free(k);
	errno = EADDRINUSE;
	return NULL;
}

struct dp_kernel *
dp_kernel_stop(struct dp_kernel *k)
{
	if (k == NULL)
		return NULL;
	atomic_store(&k->stop, true);
	for (unsigned i = 0; i < k->nworkers; i++)
		k_worker_wake(&k->w[i]->base);
	for (unsigned i = 0; i < k->nworkers; i++)
		pthread_join(k->w[i]->thread, NULL);
	for (unsigned i = 0; i < k->nworkers; i++)
		worker_free(k->w[i]);
	free(k);
	return NULL;
}
