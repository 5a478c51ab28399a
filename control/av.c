/*
 * av.c - libclamav engine loader and scan pool; the contract is in av.h.
 *
 * Threads: one loader (builds engines: slow, minutes for a full database)
 * and conf.threads scanners. The engine pointer is the only shared state on
 * the scan path: scanners read it under an RCU read-side section (urcu memb
 * flavour: no quiescent-state reports needed from threads that block inside
 * libclamav), the loader swaps it with rcu_xchg_pointer() and frees the old
 * engine after synchronize_rcu(), i.e. once every scan that could have
 * picked it up has finished.
 *
 * Requests come in over a wfcqueue (enqueue is wait-free; the scanners
 * dequeue under the queue's own lock) and a POSIX semaphore counts them, so
 * a submitter pays a syscall only when a scanner sleeps.
 */
#include "control/av.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <clamav.h>
#include <urcu/urcu-memb.h>

#include "control/log.h"

struct av_thread {
	struct ctl_av *av;
	pthread_t tid;
	bool started;
	uint8_t *buf;                  /* join buffer for files cut across spans */
	size_t cap;
};

struct ctl_av {
	struct ctl_av_conf conf;       /* database copied */
	struct cl_engine *engine;      /* RCU-protected; NULL until a load succeeds */

	struct cds_wfcq_head qh;       /* requests */
	struct cds_wfcq_tail qt;
	sem_t sem;                     /* one post per request, one per scanner at stop */
	_Atomic uint32_t queued;
	_Atomic int submitting;
	_Atomic bool closing;
	_Atomic bool stop_scanners;

	/* loader */
	pthread_t loader;
	bool loader_started;
	pthread_mutex_t mu;            /* the fields below */
	pthread_cond_t cv;
	bool reload_wanted;
	bool loader_stop;
	uint64_t generation, load_attempts, load_failures;
	unsigned sigs;
	char last_error[160];

	_Atomic uint64_t scanned, viruses, tempfails;

	unsigned nthreads;
	struct av_thread thr[];
};

/* What a scan hands to libclamav's callbacks. */
struct av_scan_ctx {
	uint64_t deadline_ms;
	bool timed_out;
};

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double
mono_ms_f(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

const char *
ctl_av_verdict_name(enum ctl_av_verdict v)
{
	switch (v) {
	case CTL_AV_CLEAN: return "clean";
	case CTL_AV_VIRUS: return "virus";
	case CTL_AV_UNAVAILABLE: return "unavailable";
	case CTL_AV_TIMEOUT: return "timeout";
	case CTL_AV_ERROR: return "error";
	}
	return "unknown";
}

/* ---- libclamav process state ---------------------------------------- */

/* libclamav's messages go to our log. Its "errors" are mostly about one
 * malformed file being scanned: a warning for us; our own load failures are
 * logged as errors by the loader. */
static void
av_clamav_msg(enum cl_msg severity, const char *fullmsg, const char *msg, void *context)
{
	enum ctl_log_level lvl = severity == CL_MSG_ERROR ? CTL_LOG_WARN : CTL_LOG_DEBUG;
	if (!ctl_log_enabled(lvl) || msg == NULL)
		return;
	char text[512], v[600];
	snprintf(text, sizeof(text), "%s", msg);
	size_t n = strlen(text);
	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
		text[--n] = '\0';
	ctl_log(lvl, "event=clamav msg=%s", ctl_log_value(v, sizeof(v), text));
}

static pthread_once_t av_once = PTHREAD_ONCE_INIT;
static cl_error_t av_init_rc = CL_SUCCESS;  /* written once, under av_once */

static void
av_init_once(void)
{
	cl_set_clcb_msg(av_clamav_msg);
	av_init_rc = cl_init(CL_INIT_DEFAULT);
}

/* ---- loader ------------------------------------------------------------ */

/* libclamav calls this before each file it scans, embedded ones included:
 * the cheapest place to give up on a request past its deadline. CL_VIRUS
 * stops the scan; the caller sees timed_out and reports a timeout. */
static cl_error_t
av_pre_scan(int fd, const char *type, void *context)
{
	struct av_scan_ctx *sc = context;
	if (sc != NULL && mono_ms() > sc->deadline_ms) {
		sc->timed_out = true;
		return CL_VIRUS;
	}
	return CL_CLEAN;
}

static void
raise_limit(struct cl_engine *e, enum cl_engine_field f, long long want)
{
	int err = 0;
	long long cur = cl_engine_get_num(e, f, &err);
	if (err == CL_SUCCESS && cur < want)
		cl_engine_set_num(e, f, want);
}

/* A compiled engine from conf.database, or NULL with the reason in why. */
static struct cl_engine *
build_engine(struct ctl_av *av, unsigned *sigs, char *why, size_t whylen)
{
	pthread_once(&av_once, av_init_once);
	if (av_init_rc != CL_SUCCESS) {
		snprintf(why, whylen, "cl_init: %s", cl_strerror(av_init_rc));
		return NULL;
	}
	struct cl_engine *e = cl_engine_new();
	if (e == NULL) {
		snprintf(why, whylen, "cl_engine_new: out of memory");
		return NULL;
	}
	/* What sluice hands over is scanned whole: libclamav's own size limits
	 * (smaller by default in some versions) must not cut it silently. */
	long long max = (long long)av->conf.max_scan_bytes;
	raise_limit(e, CL_ENGINE_MAX_FILESIZE, max);
	raise_limit(e, CL_ENGINE_MAX_SCANSIZE, max);
	uint64_t t = av->conf.timeout_ms;
	cl_engine_set_num(e, CL_ENGINE_MAX_SCANTIME, (long long)(t > UINT32_MAX ? UINT32_MAX : t));
	cl_engine_set_clcb_pre_scan(e, av_pre_scan);

	unsigned n = 0;
	cl_error_t rc = cl_load(av->conf.database, e, &n, CL_DB_STDOPT);
	if (rc != CL_SUCCESS) {
		snprintf(why, whylen, "cl_load %s: %s", av->conf.database, cl_strerror(rc));
		cl_engine_free(e);
		return NULL;
	}
	/* An engine without signatures would pass everything: that is an
	 * unscanned accept in disguise, not an engine. */
	if (n == 0) {
		snprintf(why, whylen, "cl_load %s: no signatures", av->conf.database);
		cl_engine_free(e);
		return NULL;
	}
	rc = cl_engine_compile(e);
	if (rc != CL_SUCCESS) {
		snprintf(why, whylen, "cl_engine_compile: %s", cl_strerror(rc));
		cl_engine_free(e);
		return NULL;
	}
	*sigs = n;
	return e;
}

static void
load_once(struct ctl_av *av)
{
	char why[160] = "", v[200], dbv[300];
	unsigned sigs = 0;
	double t0 = mono_ms_f();
	struct cl_engine *e = build_engine(av, &sigs, why, sizeof(why));
	double ms = mono_ms_f() - t0;
	if (e == NULL) {
		pthread_mutex_lock(&av->mu);
		av->load_attempts++;
		av->load_failures++;
		snprintf(av->last_error, sizeof(av->last_error), "%s", why);
		bool have = av->engine != NULL;
		pthread_mutex_unlock(&av->mu);
		ctl_log(CTL_LOG_ERR, "event=av_load_failed database=%s error=%s keep=%s ms=%.0f",
		        ctl_log_value(dbv, sizeof(dbv), av->conf.database),
		        ctl_log_value(v, sizeof(v), why), have ? "previous_engine" : "none_tempfail", ms);
		return;
	}
	struct cl_engine *old = rcu_xchg_pointer(&av->engine, e);
	pthread_mutex_lock(&av->mu);
	av->load_attempts++;
	av->generation++;
	av->sigs = sigs;
	av->last_error[0] = '\0';
	uint64_t gen = av->generation;
	pthread_mutex_unlock(&av->mu);
	ctl_log(CTL_LOG_INFO, "event=av_loaded database=%s sigs=%u generation=%llu ms=%.0f",
	        ctl_log_value(dbv, sizeof(dbv), av->conf.database), sigs, (unsigned long long)gen, ms);
	if (old != NULL) {
		/* Scans that picked up old finish on it; then it goes. */
		urcu_memb_synchronize_rcu();
		cl_engine_free(old);
	}
}

static void *
loader_main(void *arg)
{
	struct ctl_av *av = arg;
	load_once(av);
	pthread_mutex_lock(&av->mu);
	for (;;) {
		while (!av->reload_wanted && !av->loader_stop)
			pthread_cond_wait(&av->cv, &av->mu);
		if (av->loader_stop)
			break;
		av->reload_wanted = false;
		pthread_mutex_unlock(&av->mu);
		load_once(av);
		pthread_mutex_lock(&av->mu);
	}
	pthread_mutex_unlock(&av->mu);
	return NULL;
}

void
ctl_av_reload(struct ctl_av *av)
{
	pthread_mutex_lock(&av->mu);
	av->reload_wanted = true;
	pthread_cond_signal(&av->cv);
	pthread_mutex_unlock(&av->mu);
}

/* ---- scanning ---------------------------------------------------------- */

/* Signature names go into an SMTP reply and a log line: printable only. */
static void
copy_name(char *dst, size_t cap, const char *s)
{
	size_t o = 0;
	for (; s != NULL && *s && o + 1 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		dst[o++] = (ch > ' ' && ch < 0x7f) ? (char)ch : '?';
	}
	dst[o] = '\0';
}

/* The bytes of one file: a pointer into a span when it lies in one, else
 * joined into the thread's buffer. NULL: bad range (EINVAL) or no memory. */
static const uint8_t *
file_bytes(struct av_thread *t, const struct ctl_av_req *r, const struct ctl_av_file *f)
{
	uint64_t base = 0;
	unsigned i = 0;
	while (i < r->nspan && base + r->span[i].iov_len <= f->off) {
		base += r->span[i].iov_len;
		i++;
	}
	if (i == r->nspan) {
		errno = EINVAL;
		return NULL;
	}
	uint64_t in = f->off - base;
	if (in + f->len <= r->span[i].iov_len)
		return (const uint8_t *)r->span[i].iov_base + in;
	if (f->len > SIZE_MAX / 2) {
		errno = ENOMEM;
		return NULL;
	}
	if (t->cap < f->len) {
		uint8_t *nb = realloc(t->buf, (size_t)f->len);
		if (nb == NULL) {
			errno = ENOMEM;
			return NULL;
		}
		t->buf = nb;
		t->cap = (size_t)f->len;
	}
	uint64_t got = 0;
	for (; i < r->nspan && got < f->len; i++, in = 0) {
		uint64_t k = r->span[i].iov_len - in;
		if (k > f->len - got)
			k = f->len - got;
		memcpy(t->buf + got, (const uint8_t *)r->span[i].iov_base + in, (size_t)k);
		got += k;
	}
	if (got < f->len) {
		errno = EINVAL;
		return NULL;
	}
	return t->buf;
}

static void
scan_files(struct av_thread *t, struct cl_engine *e, struct ctl_av_req *r)
{
	/* EXCEEDS_MAX: a scan cut short by a libclamav limit (time, size,
	 * recursion) is reported as Heuristics.Limits.Exceeded.* instead of a
	 * silent clean, and becomes a tempfail below. */
	struct cl_scan_options opts = {
		.general = CL_SCAN_GENERAL_HEURISTICS,
		.parse = ~0u,
		.heuristic = CL_SCAN_HEURISTIC_EXCEEDS_MAX,
	};
	r->verdict = CTL_AV_CLEAN;
	for (unsigned i = 0; i < r->nfile; i++) {
		const struct ctl_av_file *f = &r->file[i];
		if (f->len == 0)
			continue;
		if (mono_ms() > r->deadline_ms) {
			r->verdict = CTL_AV_TIMEOUT;
			snprintf(r->name, sizeof(r->name), "deadline passed before file %u", i + 1);
			return;
		}
		const uint8_t *p = file_bytes(t, r, f);
		if (p == NULL) {
			r->verdict = CTL_AV_ERROR;
			snprintf(r->name, sizeof(r->name), "file %u: %s", i + 1,
			         errno == ENOMEM ? "out of memory" : "bad range");
			return;
		}
		cl_fmap_t *map = cl_fmap_open_memory(p, (size_t)f->len);
		if (map == NULL) {
			r->verdict = CTL_AV_ERROR;
			snprintf(r->name, sizeof(r->name), "cl_fmap_open_memory failed");
			return;
		}
		struct av_scan_ctx sc = { .deadline_ms = r->deadline_ms };
		const char *vir = NULL;
		unsigned long scanned = 0;
		cl_error_t rc = cl_scanmap_callback(map, NULL, &vir, &scanned, e, &opts, &sc);
		cl_fmap_close(map);
		r->files_scanned++;
		r->bytes_scanned += f->len;
		if (sc.timed_out || rc == CL_ETIMEOUT) {
			r->verdict = CTL_AV_TIMEOUT;
			snprintf(r->name, sizeof(r->name), "scan time limit");
			return;
		}
		if (rc == CL_VIRUS && vir != NULL && strncmp(vir, "Heuristics.Limits.Exceeded", 26) == 0) {
			r->verdict = strstr(vir, "ScanTime") != NULL ? CTL_AV_TIMEOUT : CTL_AV_ERROR;
			snprintf(r->name, sizeof(r->name), "not scanned whole: %s", vir);
			return;
		}
		if (rc == CL_VIRUS) {
			r->verdict = CTL_AV_VIRUS;
			copy_name(r->name, sizeof(r->name), vir ? vir : "unknown");
			return;
		}
		if (rc != CL_CLEAN) {
			r->verdict = CTL_AV_ERROR;
			snprintf(r->name, sizeof(r->name), "%s", cl_strerror(rc));
			return;
		}
	}
	/* libclamav may stop at its time limit and still say clean: a clean
	 * that comes back late is not known to be clean. */
	if (mono_ms() >= r->deadline_ms) {
		r->verdict = CTL_AV_TIMEOUT;
		snprintf(r->name, sizeof(r->name), "scan time limit");
	}
}

static void
answer(struct ctl_av *av, struct ctl_av_req *r)
{
	r->scan_ms = mono_ms_f() - r->t_submit_ms;
	if (r->verdict == CTL_AV_CLEAN || r->verdict == CTL_AV_VIRUS)
		atomic_fetch_add(&av->scanned, 1);
	else
		atomic_fetch_add(&av->tempfails, 1);
	if (r->verdict == CTL_AV_VIRUS)
		atomic_fetch_add(&av->viruses, 1);
	atomic_fetch_sub(&av->queued, 1);
	r->done(r);  /* r is the submitter's from here on */
}

static void *
scanner_main(void *arg)
{
	struct av_thread *t = arg;
	struct ctl_av *av = t->av;
	urcu_memb_register_thread();
	for (;;) {
		while (sem_wait(&av->sem) != 0 && errno == EINTR)
			;
		struct cds_wfcq_node *nd = cds_wfcq_dequeue_blocking(&av->qh, &av->qt);
		if (nd == NULL) {
			if (atomic_load(&av->stop_scanners))
				break;
			continue;
		}
		struct ctl_av_req *r = caa_container_of(nd, struct ctl_av_req, node);
		if (mono_ms() > r->deadline_ms) {
			r->verdict = CTL_AV_TIMEOUT;
			snprintf(r->name, sizeof(r->name), "deadline passed in the queue");
		} else {
			urcu_memb_read_lock();
			struct cl_engine *e = rcu_dereference(av->engine);
			if (e == NULL) {
				r->verdict = CTL_AV_UNAVAILABLE;
				snprintf(r->name, sizeof(r->name), "no engine loaded");
			} else {
				scan_files(t, e, r);
			}
			urcu_memb_read_unlock();
		}
		answer(av, r);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

int
ctl_av_submit(struct ctl_av *av, struct ctl_av_req *r)
{
	/* Only a NULL test: the engine is not used here, no read lock needed. */
	if (CMM_LOAD_SHARED(av->engine) == NULL) {
		atomic_fetch_add(&av->tempfails, 1);
		return -EAGAIN;
	}
	atomic_fetch_add(&av->submitting, 1);
	if (atomic_load(&av->closing)) {
		atomic_fetch_sub(&av->submitting, 1);
		return -EPIPE;
	}
	if (atomic_fetch_add(&av->queued, 1) >= av->conf.queue_max) {
		atomic_fetch_sub(&av->queued, 1);
		atomic_fetch_sub(&av->submitting, 1);
		atomic_fetch_add(&av->tempfails, 1);
		return -ENOBUFS;
	}
	r->deadline_ms = mono_ms() + av->conf.timeout_ms;
	r->t_submit_ms = mono_ms_f();
	r->verdict = CTL_AV_ERROR;
	r->files_scanned = 0;
	r->bytes_scanned = 0;
	r->scan_ms = 0;
	r->name[0] = '\0';
	cds_wfcq_node_init(&r->node);
	cds_wfcq_enqueue(&av->qh, &av->qt, &r->node);
	sem_post(&av->sem);
	atomic_fetch_sub(&av->submitting, 1);
	return 0;
}

void
ctl_av_stats(struct ctl_av *av, struct ctl_av_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&av->mu);
	st->loaded = CMM_LOAD_SHARED(av->engine) != NULL;
	st->generation = av->generation;
	st->load_attempts = av->load_attempts;
	st->load_failures = av->load_failures;
	st->sigs = av->sigs;
	snprintf(st->last_error, sizeof(st->last_error), "%s", av->last_error);
	pthread_mutex_unlock(&av->mu);
	st->scanned = atomic_load(&av->scanned);
	st->viruses = atomic_load(&av->viruses);
	st->tempfails = atomic_load(&av->tempfails);
	st->queued = atomic_load(&av->queued);
}

/* ---- start / stop -------------------------------------------------------- */

struct ctl_av *
ctl_av_start(const struct ctl_av_conf *conf)
{
	if (conf == NULL || conf->database == NULL || conf->database[0] == '\0' ||
	    conf->threads == 0 || conf->queue_max == 0 || conf->timeout_ms == 0) {
		errno = EINVAL;
		return NULL;
	}
	struct ctl_av *av = calloc(1, sizeof(*av) + conf->threads * sizeof(av->thr[0]));
	if (av == NULL)
		return NULL;
	av->conf = *conf;
	av->conf.database = strdup(conf->database);
	av->nthreads = conf->threads;
	if (av->conf.database == NULL) {
		free(av);
		errno = ENOMEM;
		return NULL;
	}
	cds_wfcq_init(&av->qh, &av->qt);
	sem_init(&av->sem, 0, 0);
	pthread_mutex_init(&av->mu, NULL);
	pthread_cond_init(&av->cv, NULL);
	int rc = 0;
	for (unsigned i = 0; i < av->nthreads && rc == 0; i++) {
		av->thr[i].av = av;
		rc = pthread_create(&av->thr[i].tid, NULL, scanner_main, &av->thr[i]);
		av->thr[i].started = rc == 0;
	}
	if (rc == 0) {
		rc = pthread_create(&av->loader, NULL, loader_main, av);
		av->loader_started = rc == 0;
	}
	if (rc != 0) {
		ctl_av_stop(av);
		errno = rc;
		return NULL;
	}
	return av;
}

struct ctl_av *
ctl_av_stop(struct ctl_av *av)
{
	if (av == NULL)
		return NULL;
	atomic_store(&av->closing, true);
	while (atomic_load(&av->submitting) > 0) {
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&av->stop_scanners, true);
	for (unsigned i = 0; i < av->nthreads; i++)
		sem_post(&av->sem);
	for (unsigned i = 0; i < av->nthreads; i++) {
		if (av->thr[i].started)
			pthread_join(av->thr[i].tid, NULL);
		free(av->thr[i].buf);
	}
	/* Left behind by a scanner that took a stop post early. */
	struct cds_wfcq_node *nd;
	while ((nd = cds_wfcq_dequeue_blocking(&av->qh, &av->qt)) != NULL) {
		struct ctl_av_req *r = caa_container_of(nd, struct ctl_av_req, node);
		r->verdict = CTL_AV_ERROR;
		snprintf(r->name, sizeof(r->name), "scanner stopping");
		answer(av, r);
	}
	if (av->loader_started) {
		pthread_mutex_lock(&av->mu);
		av->loader_stop = true;
		pthread_cond_signal(&av->cv);
		pthread_mutex_unlock(&av->mu);
		pthread_join(av->loader, NULL);
	}
	struct cl_engine *e = rcu_xchg_pointer(&av->engine, NULL);
	if (e != NULL) {
		urcu_memb_synchronize_rcu();  /* no scanner is left; cheap */
		cl_engine_free(e);
	}
	cds_wfcq_destroy(&av->qh, &av->qt);
	sem_destroy(&av->sem);
	pthread_mutex_destroy(&av->mu);
	pthread_cond_destroy(&av->cv);
	free((char *)av->conf.database);
	free(av);
	return NULL;
}
