/*
 * wakeq.h - the hand-over from workers to one control thread: a wait-free
 * queue (liburcu wfcqueue) and an eventfd that wakes the thread. Used by
 * the resolver (rbl.c), the greylist (greylist.c) and the verifier
 * (verify.c).
 *
 * Contract
 *   Any thread may push (one enqueue and one eventfd write: no lock, no
 *   allocation; the node lives in the caller's request). One thread pops.
 *   That thread waits on ctl_wakeq_fd() (with poll, alone or among other
 *   descriptors) or with ctl_wakeq_wait(), and calls ctl_wakeq_ack() when
 *   the descriptor is readable.
 */
#ifndef CTL_WAKEQ_H
#define CTL_WAKEQ_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <urcu/wfcqueue.h>

struct ctl_wakeq {
	struct cds_wfcq_head head;
	struct cds_wfcq_tail tail;
	int efd;
};

/* 0, or -errno (the eventfd). */
static inline int
ctl_wakeq_init(struct ctl_wakeq *q)
{
	cds_wfcq_init(&q->head, &q->tail);
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return q->efd < 0 ? -errno : 0;
}

static inline void
ctl_wakeq_fini(struct ctl_wakeq *q)
{
	if (q->efd >= 0)
		close(q->efd);
	q->efd = -1;
}

/* Wake the thread (also with nothing queued: to make it see a stop flag). */
static inline void
ctl_wakeq_kick(struct ctl_wakeq *q)
{
	uint64_t one = 1;
	ssize_t w = write(q->efd, &one, sizeof(one));
	(void)w;  /* a full counter still wakes it */
}

static inline void
ctl_wakeq_push(struct ctl_wakeq *q, struct cds_wfcq_node *node)
{
	cds_wfcq_node_init(node);
	cds_wfcq_enqueue(&q->head, &q->tail, node);
	ctl_wakeq_kick(q);
}

/* The oldest node, or NULL. The popping thread only. */
static inline struct cds_wfcq_node *
ctl_wakeq_pop(struct ctl_wakeq *q)
{
	return __cds_wfcq_dequeue_blocking(&q->head, &q->tail);
}

static inline int
ctl_wakeq_fd(const struct ctl_wakeq *q)
{
	return q->efd;
}

/* The descriptor was readable: reset it. */
static inline void
ctl_wakeq_ack(struct ctl_wakeq *q)
{
	uint64_t v;
	ssize_t r = read(q->efd, &v, sizeof(v));
	(void)r;
}

/* Wait up to ms for a push or a kick. */
static inline void
ctl_wakeq_wait(struct ctl_wakeq *q, int ms)
{
	struct pollfd p = { .fd = q->efd, .events = POLLIN };
	if (poll(&p, 1, ms) > 0)
		ctl_wakeq_ack(q);
}

#endif
