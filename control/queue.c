/*
 * queue.c - the queue manager: delivery thread, retries, delivered marks,
 * segment removal. Contract in control/spool.h and control/queue_impl.h.
 *
 * Why entries are small and re-read the record: the queue may hold millions
 * of messages after an outage; keeping only the record's location costs
 * ~100 bytes each, and the record (CRC-checked again) is the one source of
 * truth for both delivery and crash recovery.
 *
 * Locking: one mutex guards the heap, the segment list and the segments'
 * counters and marks. The delivery itself runs unlocked, so the spool
 * writer's hand-off never waits for a Maildir fsync.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"
#include "control/log.h"
#include "control/maildir.h"
#include "control/queue_impl.h"

#define QUEUE_BATCH 64

struct ctl_qseg {
	struct ctl_qseg *prev, *next;
	uint64_t id;
	int fd;                        /* the .seg file (shared with the writer) */
	int done_fd;                   /* the .done file, opened on first mark */
	size_t pending;                /* queued records of this segment */
	bool sealed;
	bool keep;                     /* a record could not be queued: keep files */
	bool dirty;                    /* marks waiting in marks[] */
	uint8_t *marks;
	size_t nmarks, capmarks;
	struct ctl_qseg *dnext;        /* dirty list */
};

struct q_entry {
	struct ctl_qseg *seg;
	uint64_t off, len;
	uint32_t crc;
	uint32_t attempts;
	int64_t arrival;               /* unix seconds, from the envelope */
	uint64_t next_ms;              /* monotonic */
	uint64_t seq;                  /* FIFO among equal next_ms */
	uint8_t *rcpt_done;            /* per recipient, after a partial delivery */
	uint32_t nrcpt_done;
	char qid[CTL_QID_LEN];
};

struct ctl_queue {
	struct ctl_queue_conf conf;
	char *maildir;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thr;
	atomic_bool stop;
	int dirfd;

	struct q_entry **heap;
	size_t n, cap;
	uint64_t seq;
	struct ctl_qseg *segs;

	uint8_t *buf;                  /* delivery thread: record bytes */
	size_t bufcap;

	atomic_uint_fast64_t st_delivered, st_deferred, st_queued;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- heap ordered by (next_ms, seq) ---------------------------------- */

static bool ent_less(const struct q_entry *a, const struct q_entry *b)
{
	return a->next_ms != b->next_ms ? a->next_ms < b->next_ms : a->seq < b->seq;
}

static int heap_push(struct ctl_queue *q, struct q_entry *e)
{
	size_t i;

	if (q->n == q->cap) {
		size_t nc = q->cap != 0 ? q->cap * 2 : 256;
		struct q_entry **nh = realloc(q->heap, nc * sizeof *nh);
		if (nh == NULL)
			return -ENOMEM;
		q->heap = nh;
		q->cap = nc;
	}
	for (i = q->n++; i > 0; i = (i - 1) / 2) {
		struct q_entry *p = q->heap[(i - 1) / 2];
		if (!ent_less(e, p))
			break;
		q->heap[i] = p;
	}
	q->heap[i] = e;
	return 0;
}

static struct q_entry *heap_pop(struct ctl_queue *q)
{
	struct q_entry *top = q->heap[0], *last = q->heap[--q->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= q->n)
			break;
		if (c + 1 < q->n && ent_less(q->heap[c + 1], q->heap[c]))
			c++;
		if (!ent_less(q->heap[c], last))
			break;
		q->heap[i] = q->heap[c];
		i = c;
	}
	if (q->n > 0)
		q->heap[i] = last;
	return top;
}

/* ---- segments (mutex held) ------------------------------------------- */

static void seg_name(char *buf, size_t len, uint64_t id, const char *ext)
{
	snprintf(buf, len, "%016llx.%s", (unsigned long long)id, ext);
}

static void seg_free(struct ctl_queue *q, struct ctl_qseg *s, bool remove)
{
	char name[32];

	if (remove && q->dirfd >= 0) {
		/* .seg first: a leftover .done alone is cleaned up at open. */
		seg_name(name, sizeof name, s->id, "seg");
		if (unlinkat(q->dirfd, name, 0) != 0)
			ctl_log(CTL_LOG_WARN, "event=spool_unlink_failed seg=%s error=%s",
			              name, strerror(errno));
		seg_name(name, sizeof name, s->id, "done");
		unlinkat(q->dirfd, name, 0);
	}
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		q->segs = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	if (s->fd >= 0)
		close(s->fd);
	if (s->done_fd >= 0)
		close(s->done_fd);
	free(s->marks);
	free(s);
}

static void seg_maybe_remove(struct ctl_queue *q, struct ctl_qseg *s)
{
	if (s->sealed && s->pending == 0 && !s->keep && !s->dirty)
		seg_free(q, s, true);
}

static void seg_mark(struct ctl_qseg *s, const struct q_entry *e, struct ctl_qseg **dirty)
{
	if (s->nmarks + CTL_MARK_LEN > s->capmarks) {
		size_t nc = s->capmarks != 0 ? s->capmarks * 2 : CTL_MARK_LEN * 64;
		uint8_t *nm = realloc(s->marks, nc);
		if (nm == NULL) {
			/* Unmarked: delivered again after a restart, never lost. */
			s->keep = true;
			return;
		}
		s->marks = nm;
		s->capmarks = nc;
	}
	ctl_put_le64(s->marks + s->nmarks, e->off);
	ctl_put_le32(s->marks + s->nmarks + 8, e->crc);
	ctl_put_le32(s->marks + s->nmarks + 12, CTL_MARK_MAGIC);
	s->nmarks += CTL_MARK_LEN;
	if (!s->dirty) {
		s->dirty = true;
		s->dnext = *dirty;
		*dirty = s;
	}
}

/* Append the buffered marks. No fsync: a lost mark means a duplicate
 * delivery after a crash, never a lost message (docs/SPOOL.md). */
static void seg_flush(struct ctl_queue *q, struct ctl_qseg *s)
{
	char name[32];
	size_t o = 0;

	if (s->sealed && s->pending == 0 && !s->keep) {
		s->nmarks = 0; /* the files go away anyway */
		return;
	}
	if (s->done_fd < 0) {
		seg_name(name, sizeof name, s->id, "done");
		s->done_fd = openat(q->dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (s->done_fd < 0) {
			ctl_log(CTL_LOG_ERR, "event=spool_mark_failed seg=%016llx error=%s",
			              (unsigned long long)s->id, strerror(errno));
			s->nmarks = 0;
			return;
		}
	}
	while (o < s->nmarks) {
		ssize_t w = write(s->done_fd, s->marks + o, s->nmarks - o);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			ctl_log(CTL_LOG_ERR, "event=spool_mark_failed seg=%016llx error=%s",
			              (unsigned long long)s->id, strerror(errno));
			break;
		}
		o += (size_t)w;
	}
	s->nmarks = 0;
}

static void flush_dirty(struct ctl_queue *q, struct ctl_qseg *dirty)
{
	while (dirty != NULL) {
		struct ctl_qseg *s = dirty;
		dirty = s->dnext;
		seg_flush(q, s);
		s->dirty = false;
		s->dnext = NULL;
		seg_maybe_remove(q, s);
	}
}

int ctl_queue_attach(struct ctl_queue *q, int dirfd)
{
	int fd;

	pthread_mutex_lock(&q->mu);
	if (q->dirfd >= 0) {
		pthread_mutex_unlock(&q->mu);
		return -EBUSY;
	}
	fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (fd >= 0)
		q->dirfd = fd;
	pthread_mutex_unlock(&q->mu);
	return fd >= 0 ? 0 : -errno;
}

struct ctl_qseg *ctl_queue_seg_new(struct ctl_queue *q, uint64_t id, int fd)
{
	struct ctl_qseg *s = calloc(1, sizeof *s);

	if (s == NULL) {
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	s->id = id;
	s->fd = fd;
	s->done_fd = -1;
	pthread_mutex_lock(&q->mu);
	s->next = q->segs;
	if (q->segs != NULL)
		q->segs->prev = s;
	q->segs = s;
	pthread_mutex_unlock(&q->mu);
	return s;
}

int ctl_queue_seg_fd(const struct ctl_qseg *s)
{
	return s->fd;
}

void ctl_queue_seg_seal(struct ctl_queue *q, struct ctl_qseg *s)
{
	pthread_mutex_lock(&q->mu);
	s->sealed = true;
	seg_maybe_remove(q, s);
	pthread_mutex_unlock(&q->mu);
}

size_t ctl_queue_add(struct ctl_queue *q, struct ctl_qseg *s, const struct ctl_qrec *r, size_t n)
{
	uint64_t now = mono_ms();
	size_t i;

	pthread_mutex_lock(&q->mu);
	for (i = 0; i < n; i++) {
		struct q_entry *e = calloc(1, sizeof *e);
		if (e == NULL)
			break;
		e->seg = s;
		e->off = r[i].off;
		e->len = r[i].len;
		e->crc = r[i].crc;
		/* Age counts from arrival; an unset one from now. */
		e->arrival = r[i].arrival > 0 ? r[i].arrival : wall_ms() / 1000;
		e->next_ms = now;
		e->seq = q->seq++;
		memcpy(e->qid, r[i].qid, CTL_QID_LEN);
		e->qid[CTL_QID_LEN - 1] = '\0';
		if (heap_push(q, e) != 0) {
			free(e);
			break;
		}
		s->pending++;
	}
	if (i < n) {
		s->keep = true;
		ctl_log(CTL_LOG_ERR, "event=queue_full seg=%016llx unqueued=%zu "
		              "reason=out_of_memory (kept on disk for the next start)",
		              (unsigned long long)s->id, n - i);
	}
	atomic_fetch_add_explicit(&q->st_queued, i, memory_order_relaxed);
	if (i > 0)
		pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return i;
}

/* ---- delivery (unlocked, delivery thread) --------------------------- */

/* Copy s into a header value; control characters become '_'. */
static size_t hdr_put(char *out, size_t cap, size_t o, const char *s)
{
	for (; *s != '\0' && o + 1 < cap; s++)
		out[o++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '_' : *s;
	out[o < cap ? o : cap - 1] = '\0';
	return o;
}

static char *make_hdr(const char *from, const char *to)
{
	size_t cap = strlen(from) + (to != NULL ? strlen(to) : 0) + 64, o = 0;
	char *h = malloc(cap);

	if (h == NULL)
		return NULL;
	o = hdr_put(h, cap, o, "Return-Path: <");
	o = hdr_put(h, cap, o, from);
	o = hdr_put(h, cap, o, ">");
	memcpy(h + o, "\r\n", 3);
	o += 2;
	if (to != NULL) {
		o = hdr_put(h, cap, o, "Delivered-To: ");
		o = hdr_put(h, cap, o, to);
		memcpy(h + o, "\r\n", 3);
	}
	return h;
}

struct rpath {
	char *path;
	uint32_t idx;
};

static int rpath_cmp(const void *a, const void *b)
{
	const struct rpath *x = a, *y = b;
	int c = strcmp(x->path, y->path);

	return c != 0 ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int deliver_maildir(struct ctl_queue *q, struct q_entry *e, const struct ctl_envelope *env,
                           const uint8_t *msg, uint64_t msglen, const char **why)
{
	const bool tmpl = ctl_maildir_templated(q->maildir);
	struct iovec iov = {(void *)msg, (size_t)msglen};
	int64_t delay = wall_ms() / 1000 - env->arrival;
	struct rpath *rp;
	uint32_t nr = env->nrcpt, npaths = 0;
	char path[PATH_MAX];
	int first_err = 0, rc;

	if (nr == 0)
		return 0;
	if (e->rcpt_done == NULL || e->nrcpt_done != nr) {
		free(e->rcpt_done);
		e->rcpt_done = calloc(nr, 1);
		e->nrcpt_done = nr;
		if (e->rcpt_done == NULL) {
			*why = "out of memory";
			return -ENOMEM;
		}
	}
	if ((rp = calloc(nr, sizeof *rp)) == NULL) {
		*why = "out of memory";
		return -ENOMEM;
	}
	/* Distinct folders: sort (path, index) so each is written once. */
	for (uint32_t i = 0; i < nr; i++) {
		if (e->rcpt_done[i])
			continue;
		if (tmpl) {
			rc = ctl_maildir_expand(q->maildir, env->rcpt[i].addr, path, sizeof path);
			if (rc != 0) {
				*why = "maildir path";
				first_err = first_err != 0 ? first_err : rc;
				continue;
			}
		} else {
			snprintf(path, sizeof path, "%s", q->maildir);
		}
		if ((rp[npaths].path = strdup(path)) == NULL) {
			*why = "out of memory";
			first_err = first_err != 0 ? first_err : -ENOMEM;
			continue;
		}
		rp[npaths++].idx = i;
	}
	qsort(rp, npaths, sizeof *rp, rpath_cmp);
	for (uint32_t a = 0, b; a < npaths; a = b) {
		for (b = a + 1; b < npaths && strcmp(rp[a].path, rp[b].path) == 0; b++)
			;
		/* Delivered-To names the recipient when the folder is his alone. */
		const char *dto = tmpl && b - a == 1 ? env->rcpt[rp[a].idx].addr : NULL;
		char *hdr = make_hdr(env->mail_from, dto);
		if (hdr == NULL)
			rc = -ENOMEM;
		else
			rc = ctl_maildir_deliver(rp[a].path, hdr, &iov, 1, q->conf.sync, NULL, 0);
		free(hdr);
		for (uint32_t k = a; k < b; k++) {
			char to[CTL_LOG_LINE_MAX / 4], md[CTL_LOG_LINE_MAX / 4];
			ctl_log_value(to, sizeof to, env->rcpt[rp[k].idx].addr);
			ctl_log_value(md, sizeof md, rp[a].path);
			if (rc == 0) {
				e->rcpt_done[rp[k].idx] = 1;
				ctl_log(CTL_LOG_INFO, "event=delivered qid=%s to=%s maildir=%s "
				        "dsn=2.0.0 delay=%llds attempts=%u", e->qid, to, md,
				        (long long)delay, e->attempts + 1);
			} else {
				ctl_log(CTL_LOG_INFO, "event=deferred qid=%s to=%s maildir=%s "
				        "dsn=4.3.0 delay=%llds attempts=%u reason=\"%s\"", e->qid, to,
				        md, (long long)delay, e->attempts + 1, strerror(-rc));
			}
		}
		if (rc != 0 && first_err == 0) {
			first_err = rc;
			*why = "maildir";
		}
	}
	for (uint32_t i = 0; i < npaths; i++)
		free(rp[i].path);
	free(rp);
	return first_err;
}

/* One delivery attempt: 0, or -errno with *why set. */
static int deliver(struct ctl_queue *q, struct q_entry *e, const char **why)
{
	const uint8_t *envp, *msg;
	uint32_t envlen, crc;
	uint64_t msglen;
	struct ctl_env_dec dec;
	ssize_t r;
	int rc;

	if (q->conf.method == CTL_DELIVER_DISCARD) {
		if (ctl_log_enabled(CTL_LOG_DEBUG))
			ctl_log(CTL_LOG_DEBUG, "event=discarded qid=%s", e->qid);
		return 0;
	}
	if (e->len > SIZE_MAX) {
		*why = "record too large";
		return -EFBIG;
	}
	if (e->len > q->bufcap) {
		uint8_t *nb = realloc(q->buf, (size_t)e->len);
		if (nb == NULL) {
			*why = "out of memory";
			return -ENOMEM;
		}
		q->buf = nb;
		q->bufcap = (size_t)e->len;
	}
	do {
		r = pread(e->seg->fd, q->buf, (size_t)e->len, (off_t)e->off);
	} while (r < 0 && errno == EINTR);
	if (r != (ssize_t)e->len) {
		*why = "spool read";
		return r < 0 ? -errno : -EIO;
	}
	if (ctl_rec_check(q->buf, e->len, &envp, &envlen, &msg, &msglen, &crc) != e->len ||
	    crc != e->crc) {
		*why = "spool record corrupt";
		return -EBADMSG;
	}
	if ((rc = ctl_env_decode(envp, envlen, &dec)) != 0) {
		*why = "spool envelope corrupt";
		return rc;
	}
	rc = deliver_maildir(q, e, &dec.env, msg, msglen, why);
	ctl_env_dec_free(&dec);
	return rc;
}

static uint64_t retry_interval(const struct ctl_queue *q, uint32_t attempts)
{
	uint64_t iv = q->conf.retry_min_ms;

	for (uint32_t i = 1; i < attempts && iv < q->conf.retry_max_ms; i++)
		iv *= 2;
	return iv < q->conf.retry_max_ms ? iv : q->conf.retry_max_ms;
}

static void entry_free(struct q_entry *e)
{
	free(e->rcpt_done);
	free(e);
}

static void *queue_main(void *arg)
{
	struct ctl_queue *q = arg;
	struct q_entry *batch[QUEUE_BATCH];
	int res[QUEUE_BATCH];
	const char *why[QUEUE_BATCH];

	pthread_mutex_lock(&q->mu);
	while (!atomic_load(&q->stop)) {
		uint64_t now = mono_ms();
		size_t n = 0, tried;

		if (q->n == 0) {
			pthread_cond_wait(&q->cv, &q->mu);
			continue;
		}
		if (q->heap[0]->next_ms > now) {
			uint64_t t = q->heap[0]->next_ms;
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)((t - now) / 1000);
			ts.tv_nsec += (long)((t - now) % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&q->cv, &q->mu, &ts);
			continue;
		}
		while (n < QUEUE_BATCH && q->n > 0 && q->heap[0]->next_ms <= now)
			batch[n++] = heap_pop(q);
		pthread_mutex_unlock(&q->mu);

		for (tried = 0; tried < n && !atomic_load(&q->stop); tried++) {
			why[tried] = "";
			res[tried] = deliver(q, batch[tried], &why[tried]);
		}

		pthread_mutex_lock(&q->mu);
		struct ctl_qseg *dirty = NULL;
		now = mono_ms();
		int64_t wnow = wall_ms();
		for (size_t i = 0; i < n; i++) {
			struct q_entry *e = batch[i];
			struct ctl_qseg *s = e->seg;
			bool drop = false;

			if (i >= tried) {              /* stopping: not attempted */
				if (heap_push(q, e) != 0) {
					s->keep = true;
					drop = true;
				}
				goto next;
			}
			e->attempts++;
			if (res[i] == 0) {
				atomic_fetch_add_explicit(&q->st_delivered, 1, memory_order_relaxed);
				seg_mark(s, e, &dirty);
				drop = true;
				goto next;
			}
			atomic_fetch_add_explicit(&q->st_deferred, 1, memory_order_relaxed);
			if (q->conf.max_age_ms > 0 && wnow - e->arrival * 1000 >= (int64_t)q->conf.max_age_ms) {
				/* No DSN yet (comes with LMTP): give up loudly. */
				ctl_log(CTL_LOG_ERR, "event=expired qid=%s attempts=%u age=%llds "
				              "reason=\"%s: %s\"", e->qid, e->attempts,
				              (long long)(wnow / 1000 - e->arrival), why[i], strerror(-res[i]));
				seg_mark(s, e, &dirty);
				drop = true;
				goto next;
			}
			e->next_ms = now + retry_interval(q, e->attempts);
			e->seq = q->seq++;
			if (heap_push(q, e) != 0) {
				s->keep = true;
				drop = true;
			}
next:
			if (drop) {
				s->pending--;
				atomic_fetch_sub_explicit(&q->st_queued, 1, memory_order_relaxed);
				entry_free(e);
				if (!s->dirty)
					seg_maybe_remove(q, s);
			}
		}
		flush_dirty(q, dirty);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

struct ctl_queue *ctl_queue_open(const struct ctl_queue_conf *conf)
{
	struct ctl_queue *q;
	pthread_condattr_t ca;
	int rc;

	if (conf == NULL || (conf->method == CTL_DELIVER_MAILDIR &&
	                     (conf->maildir == NULL || conf->maildir[0] == '\0'))) {
		errno = EINVAL;
		return NULL;
	}
	if ((q = calloc(1, sizeof *q)) == NULL)
		return NULL;
	q->conf = *conf;
	q->dirfd = -1;
	if (q->conf.retry_min_ms == 0)
		q->conf.retry_min_ms = 1000;
	if (q->conf.retry_max_ms < q->conf.retry_min_ms)
		q->conf.retry_max_ms = q->conf.retry_min_ms;
	if (conf->maildir != NULL && (q->maildir = strdup(conf->maildir)) == NULL) {
		free(q);
		return NULL;
	}
	q->conf.maildir = q->maildir;
	if (conf->method == CTL_DELIVER_MAILDIR) {
		char probe[PATH_MAX];
		if ((rc = ctl_maildir_expand(q->maildir, "u@d", probe, sizeof probe)) != 0) {
			free(q->maildir);
			free(q);
			errno = -rc;
			return NULL;
		}
	}
	pthread_mutex_init(&q->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&q->thr, NULL, queue_main, q)) != 0) {
		pthread_cond_destroy(&q->cv);
		pthread_mutex_destroy(&q->mu);
		free(q->maildir);
		free(q);
		errno = rc;
		return NULL;
	}
	return q;
}

struct ctl_queue *ctl_queue_close(struct ctl_queue *q)
{
	if (q == NULL)
		return NULL;
	pthread_mutex_lock(&q->mu);
	atomic_store(&q->stop, true);
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	pthread_join(q->thr, NULL);

	while (q->n > 0)
		entry_free(q->heap[--q->n]);
	free(q->heap);
	while (q->segs != NULL)
		seg_free(q, q->segs, false);
	if (q->dirfd >= 0)
		close(q->dirfd);
	free(q->buf);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	free(q->maildir);
	free(q);
	return NULL;
}

void ctl_queue_stats(const struct ctl_queue *q, struct ctl_queue_stats *st)
{
	struct ctl_queue *m = (struct ctl_queue *)q; /* atomics: loads only */

	st->delivered = atomic_load_explicit(&m->st_delivered, memory_order_relaxed);
	st->deferred = atomic_load_explicit(&m->st_deferred, memory_order_relaxed);
	st->queued = atomic_load_explicit(&m->st_queued, memory_order_relaxed);
}
