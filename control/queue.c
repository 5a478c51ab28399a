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
 * writer's hand-off never waits for a Maildir fsync or an LMTP server.
 *
 * Per-recipient outcomes (rcpt_done) are kept in memory and, once final
 * (delivered or bounced), appended as RCPT marks to the segment's .done
 * file, so a restart does not deliver to those recipients again. A DSN is
 * submitted to the spool like any message and waited for (durable) before
 * the failed recipients count as final.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"
#include "control/dsn.h"
#include "control/lmtp.h"
#include "control/log.h"
#include "control/maildir.h"
#include "control/queue_impl.h"

#define QUEUE_BATCH 64
#define LMTP_IDLE_MS 10000u            /* close a backend connection idle this long */
#define BOUNCE_RETURN_DEFAULT (256u << 10)

/* rcpt_done[i] */
#define R_DELIVERED 0x01u
#define R_FAILED    0x02u              /* bounced, or no bounce wanted */
#define R_FINAL     (R_DELIVERED | R_FAILED)
#define R_MARKED    0x80u              /* its RCPT mark is written */

struct rmark {
	uint64_t off;
	uint32_t idx;
};

struct q_route {
	char *domain;                  /* NULL for the default route */
	struct ctl_lmtp_target target;
	struct ctl_lmtp_conn *conn;
	uint64_t used_ms;              /* last use of conn */
	uint64_t down_round;           /* connect failed in this round: skip */
};

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
	uint64_t size;                 /* bytes of the .seg file (known end) */
	bool rmarks_loaded;            /* delivery thread only */
	struct rmark *rmarks;          /* RCPT marks of earlier runs, sorted */
	size_t nrmarks;
};

struct q_entry {
	struct ctl_qseg *seg;
	uint64_t off, len;
	uint32_t crc;
	uint32_t attempts;
	int64_t arrival;               /* unix seconds, from the envelope */
	uint64_t next_ms;              /* monotonic */
	uint64_t seq;                  /* FIFO among equal next_ms */
	uint8_t *rcpt_done;            /* per recipient R_* bits, after an attempt */
	uint32_t nrcpt_done;
	bool deleted;                  /* by sluice-queue: drop at the next pop */
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

	/* LMTP (delivery thread) */
	struct q_route *routes;        /* nroutes + 1: the last is the default */
	const char **route_domains;
	unsigned nroutes;
	char *hostname;
	uint64_t round;
	uint32_t dsn_seq;

	/* DSN submission */
	pthread_mutex_t spmu;
	struct ctl_spool *sp;

	/* admin requests */
	int ctlfd;
	uint64_t ctl_next_ms;

	/* backpressure */
	uint64_t bytes;                /* mutex: segment bytes on disk */
	uint64_t pending_bytes;        /* mutex: records not yet finished (backpressure) */
	atomic_bool full;

	atomic_uint_fast64_t st_delivered, st_deferred, st_queued, st_bounced, st_bytes;
};

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

/* Backpressure with hysteresis: full from 95 % of the limit, until the
 * spool is below 90 % again (mutex held). */
static void update_full(struct ctl_queue *q)
{
	uint64_t lim = q->conf.spool_limit;
	bool full = atomic_load_explicit(&q->full, memory_order_relaxed);

	if (lim == 0)
		return;
	/* Counted: mail not yet delivered. Delivered records wait in their
	 * segment until it is sealed and removed, at most one segment more. */
	if (!full && q->pending_bytes >= lim - lim / 20) {
		atomic_store_explicit(&q->full, true, memory_order_release);
		ctl_log(CTL_LOG_WARN, "event=spool_full bytes=%llu limit=%llu action=tempfail",
		        (unsigned long long)q->pending_bytes, (unsigned long long)lim);
	} else if (full && q->pending_bytes < lim - lim / 10) {
		atomic_store_explicit(&q->full, false, memory_order_release);
		ctl_log(CTL_LOG_INFO, "event=spool_resumed bytes=%llu limit=%llu",
		        (unsigned long long)q->pending_bytes, (unsigned long long)lim);
	}
}

bool ctl_queue_full(const struct ctl_queue *q)
{
	return atomic_load_explicit(&((struct ctl_queue *)q)->full, memory_order_acquire);
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
	q->bytes -= s->size < q->bytes ? s->size : q->bytes;
	atomic_store_explicit(&q->st_bytes, q->bytes, memory_order_relaxed);
	update_full(q);
	free(s->marks);
	free(s->rmarks);
	free(s);
}

static void seg_maybe_remove(struct ctl_queue *q, struct ctl_qseg *s)
{
	if (s->sealed && s->pending == 0 && !s->keep && !s->dirty)
		seg_free(q, s, true);
}

static void seg_mark_raw(struct ctl_qseg *s, uint64_t off, uint32_t word, uint32_t magic,
                         struct ctl_qseg **dirty)
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
	ctl_put_le64(s->marks + s->nmarks, off);
	ctl_put_le32(s->marks + s->nmarks + 8, word);
	ctl_put_le32(s->marks + s->nmarks + 12, magic);
	s->nmarks += CTL_MARK_LEN;
	if (!s->dirty) {
		s->dirty = true;
		s->dnext = *dirty;
		*dirty = s;
	}
}

static void seg_mark(struct ctl_qseg *s, const struct q_entry *e, struct ctl_qseg **dirty)
{
	seg_mark_raw(s, e->off, e->crc, CTL_MARK_MAGIC, dirty);
}

/* RCPT marks for the recipients that became final since the last round. */
static void seg_mark_rcpts(struct ctl_qseg *s, struct q_entry *e, struct ctl_qseg **dirty)
{
	for (uint32_t i = 0; e->rcpt_done != NULL && i < e->nrcpt_done; i++)
		if ((e->rcpt_done[i] & R_FINAL) && !(e->rcpt_done[i] & R_MARKED)) {
			seg_mark_raw(s, e->off, i, CTL_RMARK_MAGIC, dirty);
			e->rcpt_done[i] |= R_MARKED;
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
	struct stat st;
	if (fstat(fd, &st) == 0 && st.st_size > 0)
		s->size = (uint64_t)st.st_size;
	pthread_mutex_lock(&q->mu);
	q->bytes += s->size;
	atomic_store_explicit(&q->st_bytes, q->bytes, memory_order_relaxed);
	update_full(q);
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
	uint64_t now = ctl_mono_ms();
	size_t i;

	pthread_mutex_lock(&q->mu);
	for (i = 0; i < n; i++) {
		struct q_entry *e = calloc(1, sizeof *e);
		if (e == NULL)
			break;
		e->seg = s;
		e->off = r[i].off;
		e->len = r[i].len;
		if (r[i].off + r[i].len > s->size) {
			q->bytes += r[i].off + r[i].len - s->size;
			s->size = r[i].off + r[i].len;
		}
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
		q->pending_bytes += r[i].len;
	}
	if (i < n) {
		s->keep = true;
		ctl_log(CTL_LOG_ERR, "event=queue_full seg=%016llx unqueued=%zu "
		              "reason=out_of_memory (kept on disk for the next start)",
		              (unsigned long long)s->id, n - i);
	}
	atomic_fetch_add_explicit(&q->st_queued, i, memory_order_relaxed);
	atomic_store_explicit(&q->st_bytes, q->bytes, memory_order_relaxed);
	update_full(q);
	if (i > 0)
		pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return i;
}

/* ---- delivery (unlocked, delivery thread) --------------------------- */

static int rmark_cmp(const void *a, const void *b)
{
	const struct rmark *x = a, *y = b;

	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The RCPT marks an earlier run left in s's .done file (torn entries and
 * other kinds skipped). Failure to read only means duplicates, not loss. */
static void load_rmarks(struct ctl_queue *q, struct ctl_qseg *s)
{
	uint8_t buf[CTL_MARK_LEN * 256];
	char name[32];
	size_t cap = 0;
	uint64_t pos = 0;
	int fd;

	s->rmarks_loaded = true;
	seg_name(name, sizeof name, s->id, "done");
	if (q->dirfd < 0 || (fd = openat(q->dirfd, name, O_RDONLY | O_CLOEXEC)) < 0)
		return;
	for (;;) {
		ssize_t r = pread(fd, buf, sizeof buf, (off_t)pos);
		if (r < 0 && errno == EINTR)
			continue;
		size_t whole = r > 0 ? (size_t)r / CTL_MARK_LEN * CTL_MARK_LEN : 0;
		if (whole == 0)
			break;
		for (size_t i = 0; i < whole; i += CTL_MARK_LEN) {
			if (ctl_get_le32(buf + i + 12) != CTL_RMARK_MAGIC)
				continue;
			if (s->nrmarks == cap) {
				size_t nc = cap ? cap * 2 : 64;
				struct rmark *nv = realloc(s->rmarks, nc * sizeof *nv);
				if (nv == NULL)
					goto out;
				s->rmarks = nv;
				cap = nc;
			}
			s->rmarks[s->nrmarks].off = ctl_get_le64(buf + i);
			s->rmarks[s->nrmarks].idx = ctl_get_le32(buf + i + 8);
			s->nrmarks++;
		}
		pos += whole;
	}
out:
	close(fd);
	if (s->nrmarks > 1)
		qsort(s->rmarks, s->nrmarks, sizeof *s->rmarks, rmark_cmp);
}

/* e's per-recipient state for nr recipients, with the outcomes an earlier
 * run made final. 0 or -ENOMEM. */
static int rcpt_state(struct ctl_queue *q, struct q_entry *e, uint32_t nr)
{
	struct ctl_qseg *s = e->seg;
	size_t lo = 0, hi;

	if (e->rcpt_done != NULL && e->nrcpt_done == nr)
		return 0;
	free(e->rcpt_done);
	e->nrcpt_done = 0;
	if ((e->rcpt_done = calloc(nr != 0 ? nr : 1, 1)) == NULL)
		return -ENOMEM;
	e->nrcpt_done = nr;
	if (!s->rmarks_loaded)
		load_rmarks(q, s);
	hi = s->nrmarks;
	while (lo < hi) {                  /* first mark with off >= e->off */
		size_t mid = (lo + hi) / 2;
		if (s->rmarks[mid].off < e->off)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < s->nrmarks && s->rmarks[lo].off == e->off; lo++)
		if (s->rmarks[lo].idx < nr)
			e->rcpt_done[s->rmarks[lo].idx] = R_DELIVERED | R_MARKED;
	return 0;
}

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
	if (rcpt_state(q, e, nr) != 0) {
		*why = "out of memory";
		return -ENOMEM;
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

/* ---- LMTP delivery and bounces -------------------------------------- */

struct dsn_wait {
	struct ctl_msg m;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool fin;
	int err;
};

static void dsn_done(struct ctl_msg *m, int err)
{
	struct dsn_wait *w = m->ctx;

	pthread_mutex_lock(&w->mu);
	w->fin = true;
	w->err = err;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Submit a message to the spool and wait until it is durable (queue thread,
 * without the queue mutex). 0 or -errno. */
static int submit_wait(struct ctl_queue *q, const struct ctl_envelope *env,
                       const struct iovec *iov, int iovcnt)
{
	struct dsn_wait w;
	int r;

	memset(&w, 0, sizeof w);
	w.m.env = *env;
	w.m.iov = iov;
	w.m.iovcnt = iovcnt;
	w.m.done = dsn_done;
	w.m.ctx = &w;
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	pthread_mutex_lock(&q->spmu);
	if (q->sp == NULL) {
		r = -ENOTCONN;
	} else if ((r = ctl_spool_submit(q->sp, &w.m)) == 0) {
		pthread_mutex_lock(&w.mu);
		while (!w.fin)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
		r = w.err;
	}
	pthread_mutex_unlock(&q->spmu);
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.mu);
	return r;
}

/* Submit a report to the spool and wait until it is durable. 0 or -errno. */
static int dsn_submit(struct ctl_queue *q, const struct ctl_envelope *orig, const char *text,
                      size_t len, bool body8bit, char *qid)
{
	struct smtp_rcpt rc = { .addr = orig->mail_from, .orcpt = NULL,
	                        .notify = SMTP_NOTIFY_NEVER };
	struct iovec iov = { (void *)text, len };
	struct ctl_envelope env;
	struct timespec ts;

	memset(&env, 0, sizeof env);
	clock_gettime(CLOCK_REALTIME, &ts);
	/* Like the server's queue ids, with 'Z' where they have a worker digit. */
	snprintf(qid, CTL_QID_LEN, "%013llXZ%04X",
	         (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000,
	         q->dsn_seq++ & 0xffffu);
	memcpy(env.qid, qid, CTL_QID_LEN);
	env.arrival = ts.tv_sec;
	env.client = "127.0.0.1";
	env.helo = q->hostname;
	env.mail_from = "";
	env.body = body8bit ? SMTP_BODY_8BITMIME : SMTP_BODY_NONE;
	env.ret = SMTP_RET_NONE;
	env.smtputf8 = orig->smtputf8;
	env.rcpt = &rc;
	env.nrcpt = 1;
	return submit_wait(q, &env, &iov, 1);
}

struct rcpt_res {
	struct ctl_lmtp_reply reply;
	char diag[CTL_LMTP_TEXT_MAX + 16];
	const char *status;
};

/* Recipients in fail[0..nf) of e have failed for good: bounce them to the
 * sender (unless NOTIFY or a null sender says not to). 0: they are final;
 * -errno: the report could not be queued (they stay pending). */
static int bounce(struct ctl_queue *q, struct q_entry *e, const struct ctl_envelope *env,
                  const uint8_t *msg, uint64_t msglen, const uint32_t *fail, uint32_t nf,
                  struct rcpt_res *res)
{
	struct ctl_dsn_rcpt *dr = calloc(nf, sizeof *dr);
	struct ctl_dsn d;
	uint32_t nd = 0;
	char *text = NULL, qid[CTL_QID_LEN], to[256], sender[256];
	size_t len = 0;
	bool body8 = false;
	int r = 0;

	if (dr == NULL)
		return -ENOMEM;
	ctl_log_value(sender, sizeof sender, env->mail_from);
	for (uint32_t k = 0; k < nf; k++) {
		const struct smtp_rcpt *rc = &env->rcpt[fail[k]];
		struct rcpt_res *rr = &res[fail[k]];
		ctl_log_value(to, sizeof to, rc->addr);
		if (env->mail_from[0] == '\0') {
			ctl_log(CTL_LOG_WARN, "event=bounce_dropped qid=%s to=%s dsn=%s reason=\"null "
			        "sender: no bounce of a bounce\" diag=\"%s\"", e->qid, to, rr->status, rr->diag);
			continue;
		}
		if (!ctl_dsn_wanted(rc->notify)) {
			ctl_log(CTL_LOG_INFO, "event=bounce_suppressed qid=%s to=%s dsn=%s reason=notify "
			        "diag=\"%s\"", e->qid, to, rr->status, rr->diag);
			continue;
		}
		dr[nd].addr = rc->addr;
		dr[nd].orcpt = rc->orcpt;
		dr[nd].status = rr->status;
		dr[nd].diag_type = rr->reply.code != 0 ? "smtp" : "X-Sluice";
		dr[nd].diag = rr->diag;
		nd++;
	}
	if (nd > 0) {
		memset(&d, 0, sizeof d);
		d.reporting_mta = q->hostname;
		d.qid = e->qid;
		d.sender = env->mail_from;
		d.envid = env->envid;
		d.arrival = env->arrival;
		d.now = wall_ms() / 1000;
		d.ret = env->ret;
		d.msg = msg;
		d.msglen = (size_t)msglen;
		d.return_max = q->conf.bounce_return_max;
		d.rcpt = dr;
		d.nrcpt = nd;
		r = ctl_dsn_build(&d, &text, &len, &body8);
		if (r == 0)
			r = dsn_submit(q, env, text, len, body8, qid);
		free(text);
		if (r != 0) {
			ctl_log(CTL_LOG_WARN, "event=dsn_deferred qid=%s from=%s reason=\"%s\"%s", e->qid,
			        sender, strerror(-r), r == -ENOTCONN ? " note=\"no spool attached\"" : "");
			free(dr);
			return r;
		}
		for (uint32_t k = 0; k < nd; k++) {
			ctl_log_value(to, sizeof to, dr[k].addr);
			ctl_log(CTL_LOG_INFO, "event=bounced qid=%s to=%s dsn=%s dsn_qid=%s from=%s "
			        "diag=\"%s\"", e->qid, to, dr[k].status, qid, sender, dr[k].diag);
		}
	}
	for (uint32_t k = 0; k < nf; k++)
		e->rcpt_done[fail[k]] |= R_FAILED;
	atomic_fetch_add_explicit(&q->st_bounced, nf, memory_order_relaxed);
	free(dr);
	return 0;
}

/* A usable connection to route r, or NULL with *why. */
static struct ctl_lmtp_conn *route_conn(struct ctl_queue *q, struct q_route *r, bool *reused,
                                        struct ctl_lmtp_reply *why)
{
	*reused = false;
	if (r->conn != NULL && ctl_lmtp_usable(r->conn)) {
		*reused = true;
		return r->conn;
	}
	r->conn = ctl_lmtp_close(r->conn);
	if (r->down_round == q->round) {
		memset(why, 0, sizeof *why);
		snprintf(why->text, sizeof why->text, "backend %s unavailable (failed earlier this round)",
		         r->target.text);
		return NULL;
	}
	r->conn = ctl_lmtp_open(&r->target, q->hostname, q->conf.lmtp_timeout_ms, why);
	if (r->conn == NULL)
		r->down_round = q->round;
	return r->conn;
}

/* One LMTP transaction for recipients idx[0..n) of the message on route r. */
static void lmtp_group(struct ctl_queue *q, struct q_route *r, const struct ctl_envelope *env,
                       const uint8_t *msg, uint64_t msglen, const uint32_t *idx, uint32_t n,
                       struct rcpt_res *res)
{
	const char **addrs = calloc(n, sizeof *addrs);
	struct ctl_lmtp_reply *rep = calloc(n, sizeof *rep);
	struct ctl_lmtp_msg m;
	bool reused, b8 = env->body == SMTP_BODY_8BITMIME || env->body == SMTP_BODY_BINARYMIME;

	if (addrs == NULL || rep == NULL) {
		for (uint32_t k = 0; k < n; k++)
			snprintf(res[idx[k]].reply.text, sizeof res[idx[k]].reply.text, "out of memory");
		goto out;
	}
	for (uint32_t k = 0; k < n; k++)
		addrs[k] = env->rcpt[idx[k]].addr;
	m = (struct ctl_lmtp_msg){ .from = env->mail_from, .rcpt = addrs, .nrcpt = n,
	                           .body8bit = b8, .smtputf8 = env->smtputf8,
	                           .data = msg, .len = (size_t)msglen };
	for (int attempt = 0; attempt < 2; attempt++) {
		struct ctl_lmtp_reply why;
		struct ctl_lmtp_conn *c = route_conn(q, r, &reused, &why);
		if (c == NULL) {
			for (uint32_t k = 0; k < n; k++)
				rep[k] = why;
			break;
		}
		int rc = ctl_lmtp_send(c, &m, rep);
		r->used_ms = ctl_mono_ms();
		if (rc == 0)
			break;
		r->conn = ctl_lmtp_close(r->conn);
		/* A reused connection the server had dropped: nothing was done,
		 * try once on a fresh one. */
		bool none = true;
		for (uint32_t k = 0; k < n; k++)
			none = none && rep[k].code == 0;
		if (!(reused && none))
			break;
	}
	for (uint32_t k = 0; k < n; k++)
		res[idx[k]].reply = rep[k];
out:
	free(addrs);
	free(rep);
}

static int deliver_lmtp(struct ctl_queue *q, struct q_entry *e, const struct ctl_envelope *env,
                        const uint8_t *msg, uint64_t msglen, const char **why)
{
	uint32_t nr = env->nrcpt, nfail = 0, npend = 0;
	int64_t now = wall_ms();
	int64_t delay = now / 1000 - env->arrival;
	bool expired = q->conf.max_age_ms > 0 &&
	               now - env->arrival * 1000 >= (int64_t)q->conf.max_age_ms;
	struct rcpt_res *res = NULL;
	uint32_t *route = NULL, *idx = NULL, *fail = NULL;
	int rc = 0;

	if (nr == 0)
		return 0;
	if (rcpt_state(q, e, nr) != 0 || (res = calloc(nr, sizeof *res)) == NULL ||
	    (route = calloc(nr, sizeof *route)) == NULL || (idx = calloc(nr, sizeof *idx)) == NULL ||
	    (fail = calloc(nr, sizeof *fail)) == NULL) {
		*why = "out of memory";
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < nr; i++) {
		int m = ctl_lmtp_route_match(q->route_domains, q->nroutes, env->rcpt[i].addr);
		route[i] = m < 0 ? q->nroutes : (uint32_t)m;
	}
	/* One transaction per route, recipients in envelope order. */
	for (uint32_t ri = 0; ri <= q->nroutes; ri++) {
		uint32_t n = 0;
		for (uint32_t i = 0; i < nr; i++)
			if (!(e->rcpt_done[i] & R_FINAL) && route[i] == ri)
				idx[n++] = i;
		if (n > 0)
			lmtp_group(q, &q->routes[ri], env, msg, msglen, idx, n, res);
	}
	for (uint32_t i = 0; i < nr; i++) {
		struct rcpt_res *rr = &res[i];
		struct q_route *r = &q->routes[route[i]];
		char to[256];
		int code = rr->reply.code;

		if (e->rcpt_done[i] & R_FINAL)
			continue;
		ctl_lmtp_reply_line(&rr->reply, rr->diag, sizeof rr->diag);
		ctl_log_value(to, sizeof to, env->rcpt[i].addr);
		if (code / 100 == 2) {
			e->rcpt_done[i] |= R_DELIVERED;
			ctl_log(CTL_LOG_INFO, "event=delivered qid=%s to=%s lmtp=%s dsn=%s delay=%llds "
			        "attempts=%u", e->qid, to, r->target.text,
			        rr->reply.status[0] ? rr->reply.status : "2.0.0", (long long)delay,
			        e->attempts + 1);
			continue;
		}
		if (code / 100 == 5) {
			rr->status = rr->reply.status[0] ? rr->reply.status : "5.0.0";
			fail[nfail++] = i;
			continue;
		}
		/* 4xx, or no answer: temporary. */
		rr->status = rr->reply.status[0] == '4' ? rr->reply.status : code != 0 ? "4.0.0" : "4.4.1";
		if (expired) {
			char d2[sizeof rr->diag];
			snprintf(d2, sizeof d2, "%s (gave up after %llds)", rr->diag, (long long)delay);
			memcpy(rr->diag, d2, sizeof rr->diag);
			fail[nfail++] = i;
			ctl_log(CTL_LOG_INFO, "event=expired qid=%s to=%s lmtp=%s dsn=%s delay=%llds "
			        "attempts=%u", e->qid, to, r->target.text, rr->status, (long long)delay,
			        e->attempts + 1);
			continue;
		}
		npend++;
		ctl_log(CTL_LOG_INFO, "event=deferred qid=%s to=%s lmtp=%s dsn=%s delay=%llds "
		        "attempts=%u reason=\"%s\"", e->qid, to, r->target.text, rr->status,
		        (long long)delay, e->attempts + 1, rr->diag);
	}
	if (nfail > 0 && (rc = bounce(q, e, env, msg, msglen, fail, nfail, res)) != 0) {
		*why = "bounce not queued";
		goto out;
	}
	if (npend > 0) {
		*why = "lmtp: deferred";
		rc = -EAGAIN;
	}
out:
	free(res);
	free(route);
	free(idx);
	free(fail);
	return rc;
}

/* One delivery attempt: 0, or -errno with *why set. */
static int deliver_quarantine(struct ctl_queue *q, const struct q_entry *e, const uint8_t *rec,
                              uint64_t len, const char **why);

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
	if (dec.env.quarantine)
		rc = deliver_quarantine(q, e, q->buf, e->len, why);
	else if (q->conf.method == CTL_DELIVER_LMTP)
		rc = deliver_lmtp(q, e, &dec.env, msg, msglen, why);
	else
		rc = deliver_maildir(q, e, &dec.env, msg, msglen, why);
	ctl_env_dec_free(&dec);
	return rc;
}

struct sbuf {
	char *p;
	size_t len, cap;
};
static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- quarantine (docs/SPOOL.md "Quarantine") ------------------------ */

/* A quarantined message is kept whole, as its spool record (envelope and
 * message, CRC-checked), in DIR/quarantine/QID, made durable before the
 * spool record is marked done. sluice-queue release QID puts it back. */
static int deliver_quarantine(struct ctl_queue *q, const struct q_entry *e, const uint8_t *rec,
                              uint64_t len, const char **why)
{
	char tmp[CTL_QID_LEN + 16], name[CTL_QID_LEN + 16];
	int dfd, fd, rc = 0;

	*why = "quarantine";
	if (mkdirat(q->dirfd, "../" CTL_QUARANTINE_DIR, 0700) != 0 && errno != EEXIST)
		return -errno;
	dfd = openat(q->dirfd, "../" CTL_QUARANTINE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	snprintf(tmp, sizeof tmp, ".tmp.%s", e->qid);
	snprintf(name, sizeof name, "%s", e->qid);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		close(dfd);
		return rc;
	}
	for (uint64_t off = 0; off < len && rc == 0;) {
		ssize_t k = write(fd, rec + off, (size_t)(len - off));
		if (k < 0 && errno != EINTR)
			rc = -errno;
		else if (k > 0)
			off += (uint64_t)k;
	}
	if (rc == 0 && q->conf.sync && fdatasync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && renameat(dfd, tmp, dfd, name) != 0)
		rc = -errno;
	if (rc == 0 && q->conf.sync && fsync(dfd) != 0)
		rc = -errno;
	if (rc != 0)
		unlinkat(dfd, tmp, 0);
	close(dfd);
	if (rc == 0)
		ctl_log(CTL_LOG_INFO, "event=quarantined qid=%s file=%s/%s", e->qid,
		        CTL_QUARANTINE_DIR, name);
	return rc;
}

/* Release a quarantined message: back into the spool without the flag,
 * waiting until it is durable, then the quarantine file goes. Runs on the
 * queue thread without its mutex (the spool's done() takes it). */
static void quarantine_release(struct ctl_queue *q, const char *qid, struct sbuf *out)
{
	uint8_t *buf = NULL;
	const uint8_t *envp, *msg;
	uint32_t envlen, crc;
	uint64_t msglen;
	struct ctl_env_dec dec = { 0 };
	struct stat st;
	int dfd = -1, fd = -1, rc;

	if (qid[0] == '\0' || qid[0] == '.' || strchr(qid, '/') != NULL) {
		sb_add(out, "notfound %s\n", qid);
		return;
	}
	dfd = openat(q->dirfd, "../" CTL_QUARANTINE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	fd = dfd >= 0 ? openat(dfd, qid, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
	if (fd < 0 || fstat(fd, &st) != 0) {
		sb_add(out, "notfound %s\n", qid);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (buf == NULL || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size ||
	    ctl_rec_check(buf, (uint64_t)st.st_size, &envp, &envlen, &msg, &msglen, &crc) !=
	        (uint64_t)st.st_size ||
	    ctl_env_decode(envp, envlen, &dec) != 0) {
		sb_add(out, "error %s unreadable\n", qid);
		goto out;
	}
	dec.env.quarantine = false;
	struct iovec iov = { (void *)msg, (size_t)msglen };
	rc = submit_wait(q, &dec.env, &iov, 1);
	if (rc != 0) {
		sb_add(out, "error %s %s\n", qid, strerror(-rc));
		goto out;
	}
	unlinkat(dfd, qid, 0);
	if (q->conf.sync)
		fsync(dfd);
	ctl_log(CTL_LOG_INFO, "event=released qid=%s by=sluice-queue", qid);
	sb_add(out, "released %s\n", qid);
out:
	ctl_env_dec_free(&dec);
	free(buf);
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
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

/* ---- admin requests (sluice-queue), docs/SPOOL.md "Admin" ----------- */

static void heapify(struct ctl_queue *q)
{
	for (size_t k = q->n / 2; k-- > 0;) {
		struct q_entry *e = q->heap[k];
		size_t i = k;
		for (;;) {
			size_t c = 2 * i + 1;
			if (c >= q->n)
				break;
			if (c + 1 < q->n && ent_less(q->heap[c + 1], q->heap[c]))
				c++;
			if (!ent_less(q->heap[c], e))
				break;
			q->heap[i] = q->heap[c];
			i = c;
		}
		q->heap[i] = e;
	}
}



static void sb_add(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	if ((size_t)k >= sizeof line)
		k = sizeof line - 1;
	if (b->len + (size_t)k + 1 > b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 4096;
		while (nc < b->len + (size_t)k + 1)
			nc *= 2;
		char *np = realloc(b->p, nc);
		if (np == NULL)
			return;
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->len, line, (size_t)k);
	b->len += (size_t)k;
	b->p[b->len] = '\0';
}

/* Apply one request (mutex held); the answer goes to out. */
static void ctl_apply(struct ctl_queue *q, char *req, struct sbuf *out)
{
	uint64_t now = ctl_mono_ms();

	char *save = NULL;

	for (char *line = strtok_r(req, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		line[strcspn(line, "\r")] = '\0';
		if (strcmp(line, "flush") == 0) {
			for (size_t i = 0; i < q->n; i++)
				q->heap[i]->next_ms = now;
			heapify(q);
			for (unsigned r = 0; r <= q->nroutes && q->routes != NULL; r++)
				q->routes[r].down_round = 0;
			ctl_log(CTL_LOG_INFO, "event=flush queued=%zu", q->n);
			sb_add(out, "flushed %zu\n", q->n);
		} else if (strcmp(line, "list") == 0) {
			for (size_t i = 0; i < q->n; i++) {
				const struct q_entry *e = q->heap[i];
				sb_add(out, "entry %s attempts=%u next=%llds%s\n", e->qid, e->attempts,
				       (long long)(e->next_ms > now ? (e->next_ms - now + 999) / 1000 : 0),
				       e->deleted ? " deleted" : "");
			}
			sb_add(out, "end %zu\n", q->n);
		} else if (strncmp(line, "delete ", 7) == 0) {
			const char *qid = line + 7;
			size_t hits = 0;
			for (size_t i = 0; i < q->n; i++) {
				struct q_entry *e = q->heap[i];
				if (strcmp(e->qid, qid) == 0 && !e->deleted) {
					e->deleted = true;
					e->next_ms = 0;
					hits++;
				}
			}
			if (hits > 0)
				heapify(q);
			sb_add(out, "%s %s\n", hits > 0 ? "deleted" : "notfound", qid);
			if (hits > 0)
				pthread_cond_signal(&q->cv);
		} else if (line[0] != '\0') {
			sb_add(out, "error unknown request\n");
		}
	}
}

/* Poll DIR/ctl/ (called with the mutex held; drops it for file I/O). */
static void ctl_poll(struct ctl_queue *q)
{
	char *names[16];
	char *reqs[16];
	size_t n = 0;

	if (q->dirfd < 0)
		return;
	pthread_mutex_unlock(&q->mu);
	if (q->ctlfd < 0) {
		int fd = openat(q->dirfd, "../" CTL_CTL_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0 && errno == ENOENT && mkdirat(q->dirfd, "../" CTL_CTL_DIR, 0700) == 0)
			fd = openat(q->dirfd, "../" CTL_CTL_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		q->ctlfd = fd;
	}
	int dfd = q->ctlfd >= 0 ? fcntl(q->ctlfd, F_DUPFD_CLOEXEC, 0) : -1;
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (d == NULL) {
		if (dfd >= 0)
			close(dfd);
		pthread_mutex_lock(&q->mu);
		return;
	}
	rewinddir(d);
	for (struct dirent *de; n < 16 && (de = readdir(d)) != NULL;) {
		if (strncmp(de->d_name, "req.", 4) != 0)
			continue;
		int fd = openat(q->ctlfd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		char *buf = fd >= 0 ? malloc(CTL_CTL_REQ_MAX + 1) : NULL;
		ssize_t k = buf != NULL ? read(fd, buf, CTL_CTL_REQ_MAX) : -1;
		if (fd >= 0)
			close(fd);
		unlinkat(q->ctlfd, de->d_name, 0);
		if (k < 0 || (names[n] = strdup(de->d_name + 4)) == NULL) {
			free(buf);
			continue;
		}
		buf[k] = '\0';
		reqs[n++] = buf;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		struct sbuf out = { 0 };
		char tmp[300], fin[300];

		if (strncmp(reqs[i], "release ", 8) == 0) {
			/* no mutex: the spool's done() needs it */
			char *save = NULL;
			for (char *l = strtok_r(reqs[i], "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save))
				if (strncmp(l, "release ", 8) == 0)
					quarantine_release(q, l + 8, &out);
		} else {
			pthread_mutex_lock(&q->mu);
			ctl_apply(q, reqs[i], &out);
			pthread_mutex_unlock(&q->mu);
		}
		snprintf(tmp, sizeof tmp, ".res.%s", names[i]);
		snprintf(fin, sizeof fin, "res.%s", names[i]);
		int fd = openat(q->ctlfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd >= 0) {
			if (out.len > 0 && write(fd, out.p, out.len) != (ssize_t)out.len)
				ctl_log(CTL_LOG_WARN, "event=ctl_answer_failed req=%s", names[i]);
			close(fd);
			renameat(q->ctlfd, tmp, q->ctlfd, fin);
		}
		free(out.p);
		free(reqs[i]);
		free(names[i]);
	}
	pthread_mutex_lock(&q->mu);
}

/* Close backend connections idle for LMTP_IDLE_MS (mutex held; dropped
 * while talking to the servers). */
static void close_idle(struct ctl_queue *q, uint64_t now)
{
	bool any = false;

	for (unsigned r = 0; q->routes != NULL && r <= q->nroutes; r++)
		any = any || (q->routes[r].conn != NULL && now - q->routes[r].used_ms >= LMTP_IDLE_MS);
	if (!any)
		return;
	pthread_mutex_unlock(&q->mu);
	for (unsigned r = 0; r <= q->nroutes; r++)
		if (q->routes[r].conn != NULL && now - q->routes[r].used_ms >= LMTP_IDLE_MS)
			q->routes[r].conn = ctl_lmtp_close(q->routes[r].conn);
	pthread_mutex_lock(&q->mu);
}

static void wait_until(struct ctl_queue *q, uint64_t now, uint64_t t)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)((t - now) / 1000);
	ts.tv_nsec += (long)((t - now) % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&q->cv, &q->mu, &ts);
}

static void *queue_main(void *arg)
{
	struct ctl_queue *q = arg;
	struct q_entry *batch[QUEUE_BATCH];
	int res[QUEUE_BATCH];
	const char *why[QUEUE_BATCH];

	pthread_mutex_lock(&q->mu);
	while (!atomic_load(&q->stop)) {
		uint64_t now = ctl_mono_ms();
		size_t n = 0, tried;

		if (now >= q->ctl_next_ms) {
			ctl_poll(q);
			q->ctl_next_ms = ctl_mono_ms() + CTL_CTL_POLL_MS;
			continue;
		}
		if (q->n == 0 || q->heap[0]->next_ms > now) {
			uint64_t t = q->ctl_next_ms;
			if (q->n > 0 && q->heap[0]->next_ms < t)
				t = q->heap[0]->next_ms;
			close_idle(q, now);
			wait_until(q, now, t);
			continue;
		}
		while (n < QUEUE_BATCH && q->n > 0 && q->heap[0]->next_ms <= now)
			batch[n++] = heap_pop(q);
		q->round++;
		pthread_mutex_unlock(&q->mu);

		for (tried = 0; tried < n && !atomic_load(&q->stop); tried++) {
			why[tried] = "";
			res[tried] = batch[tried]->deleted ? 0 : deliver(q, batch[tried], &why[tried]);
		}

		pthread_mutex_lock(&q->mu);
		struct ctl_qseg *dirty = NULL;
		now = ctl_mono_ms();
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
			if (e->deleted) {
				ctl_log(CTL_LOG_INFO, "event=deleted qid=%s by=sluice-queue", e->qid);
				seg_mark(s, e, &dirty);
				drop = true;
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
			seg_mark_rcpts(s, e, &dirty);
			/* LMTP gives up per recipient, with a DSN (deliver_lmtp). */
			if (q->conf.method != CTL_DELIVER_LMTP && q->conf.max_age_ms > 0 &&
			    wnow - e->arrival * 1000 >= (int64_t)q->conf.max_age_ms) {
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
				q->pending_bytes -= e->len < q->pending_bytes ? e->len : q->pending_bytes;
				update_full(q);
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

void ctl_queue_conf_from_config(struct ctl_queue_conf *qc, const struct ctl_config *cfg)
{
	memset(qc, 0, sizeof *qc);
	qc->method = cfg->delivery;
	qc->maildir = cfg->maildir;
	qc->retry_min_ms = cfg->retry_min_ms;
	qc->retry_max_ms = cfg->retry_max_ms;
	qc->max_age_ms = cfg->max_age_ms;
	qc->sync = cfg->spool_sync;
	qc->lmtp_default = cfg->lmtp_default;
	qc->routes = cfg->routes;
	qc->nroutes = cfg->nroutes;
	qc->lmtp_timeout_ms = cfg->lmtp_timeout_ms;
	qc->hostname = cfg->hostname;
	qc->bounce_return_max = cfg->bounce_return_max;
	qc->spool_limit = cfg->spool_limit;
}

void ctl_queue_set_spool(struct ctl_queue *q, struct ctl_spool *sp)
{
	pthread_mutex_lock(&q->spmu);
	q->sp = sp;
	pthread_mutex_unlock(&q->spmu);
}

static void routes_free(struct ctl_queue *q)
{
	for (unsigned r = 0; q->routes != NULL && r <= q->nroutes; r++) {
		q->routes[r].conn = ctl_lmtp_close(q->routes[r].conn);
		free(q->routes[r].domain);
	}
	free(q->routes);
	free(q->route_domains);
	q->routes = NULL;
	q->route_domains = NULL;
}

/* Copy and parse the routes; the last entry is the default. 0 or -errno. */
static int routes_init(struct ctl_queue *q, const struct ctl_queue_conf *conf)
{
	if (conf->method != CTL_DELIVER_LMTP)
		return 0;
	if (conf->lmtp_default == NULL || (conf->nroutes > 0 && conf->routes == NULL))
		return -EINVAL;
	q->routes = calloc(conf->nroutes + 1, sizeof *q->routes);
	q->route_domains = calloc(conf->nroutes + 1, sizeof *q->route_domains);
	if (q->routes == NULL || q->route_domains == NULL)
		return -ENOMEM;
	q->nroutes = conf->nroutes;
	for (unsigned r = 0; r <= conf->nroutes; r++) {
		const char *be = r < conf->nroutes ? conf->routes[r].backend : conf->lmtp_default;
		if (ctl_lmtp_target_parse(be, &q->routes[r].target) != 0)
			return -EINVAL;
		if (r < conf->nroutes) {
			if ((q->routes[r].domain = strdup(conf->routes[r].domain)) == NULL)
				return -ENOMEM;
			q->route_domains[r] = q->routes[r].domain;
		}
	}
	return 0;
}

struct ctl_queue *ctl_queue_open(const struct ctl_queue_conf *conf)
{
	struct ctl_queue *q;
	pthread_condattr_t ca;
	char host[256];
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
	q->ctlfd = -1;
	if (q->conf.retry_min_ms == 0)
		q->conf.retry_min_ms = 1000;
	if (q->conf.retry_max_ms < q->conf.retry_min_ms)
		q->conf.retry_max_ms = q->conf.retry_min_ms;
	if (q->conf.bounce_return_max == 0)
		q->conf.bounce_return_max = BOUNCE_RETURN_DEFAULT;
	if (conf->hostname == NULL || conf->hostname[0] == '\0') {
		if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
			snprintf(host, sizeof host, "localhost");
		host[sizeof host - 1] = '\0';
	} else {
		snprintf(host, sizeof host, "%s", conf->hostname);
	}
	q->hostname = strdup(host);
	if (conf->maildir != NULL && (q->maildir = strdup(conf->maildir)) == NULL)
		rc = -ENOMEM;
	else if (q->hostname == NULL)
		rc = -ENOMEM;
	else
		rc = routes_init(q, conf);
	q->conf.maildir = q->maildir;
	q->conf.hostname = q->hostname;
	q->conf.lmtp_default = NULL;       /* copied into routes */
	q->conf.routes = NULL;
	if (rc == 0 && conf->method == CTL_DELIVER_MAILDIR) {
		char probe[PATH_MAX];
		rc = ctl_maildir_expand(q->maildir, "u@d", probe, sizeof probe);
	}
	if (rc != 0) {
		routes_free(q);
		free(q->hostname);
		free(q->maildir);
		free(q);
		errno = -rc;
		return NULL;
	}
	pthread_mutex_init(&q->mu, NULL);
	pthread_mutex_init(&q->spmu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cv, &ca);
	pthread_condattr_destroy(&ca);
	if ((rc = pthread_create(&q->thr, NULL, queue_main, q)) != 0) {
		pthread_cond_destroy(&q->cv);
		pthread_mutex_destroy(&q->spmu);
		pthread_mutex_destroy(&q->mu);
		routes_free(q);
		free(q->hostname);
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
	if (q->ctlfd >= 0)
		close(q->ctlfd);
	routes_free(q);
	free(q->buf);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->spmu);
	pthread_mutex_destroy(&q->mu);
	free(q->hostname);
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
	st->bounced = atomic_load_explicit(&m->st_bounced, memory_order_relaxed);
	st->spool_bytes = atomic_load_explicit(&m->st_bytes, memory_order_relaxed);
}
