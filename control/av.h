/*
 * av.h - virus scanning with libclamav: a loader thread and a scan pool.
 *
 * Contract
 *   ctl_av_start() starts a loader thread and conf->threads scan threads and
 *   returns at once: the signature database is loaded in the background
 *   (cl_init once per process, cl_engine_new, cl_load(database), compile)
 *   and the engine is published with RCU (liburcu, memb flavour). Until a
 *   first load succeeds there is no engine and every submission is refused
 *   with -EAGAIN. ctl_av_reload() (main, on SIGHUP) asks the loader to build
 *   a new engine from the same path; on success it replaces the old one,
 *   which is freed after a grace period (scans running on it finish on it);
 *   on failure the old engine stays. No scan is dropped by a reload.
 *
 *   A request (struct ctl_av_req) carries decoded attachment bytes as spans
 *   of the submitter's memory, seen as one byte stream, and a table of files:
 *   (offset, length) ranges of that stream, each scanned as one file from
 *   memory (cl_fmap_open_memory; a file cut across spans is joined in the
 *   scan thread's own buffer first). Nothing is written to disk by sluice
 *   (libclamav itself may use its temporary directory for some archives).
 *   The scan stops at the first virus.
 *
 *   ctl_av_submit() is wait-free on the request path (liburcu wfcqueue; a
 *   sleeping scan thread is woken with one sem_post) and callable from any
 *   thread. Its result, or later done() on a scan thread, is the only answer:
 *     0        queued: done(r) will be called exactly once, on a scan thread,
 *              with r->verdict set; from then on r and the bytes it points to
 *              are the submitter's again (the pool keeps no reference).
 *     -EAGAIN  no engine loaded yet (or the last loads all failed)
 *     -ENOBUFS conf->queue_max requests are already waiting or in a scan
 *     -EPIPE   the pool is stopping
 *   Verdicts: CLEAN (every file scanned, nothing found, within the deadline),
 *   VIRUS (name: the signature, as libclamav reports it), and the ones that
 *   must become a temporary failure: UNAVAILABLE (no engine), TIMEOUT (the
 *   deadline, conf->timeout_ms after submission, passed before the last file
 *   was scanned; libclamav is also told the time limit, and a scan that
 *   comes back after the deadline does not count as clean), ERROR (libclamav
 *   error, out of memory, pool stopping). A virus found is reported even
 *   when found after the deadline.
 *
 *   Memory: the submitter owns *r, the spans, the file table and the bytes
 *   until done(r). The pool allocates (jemalloc; control plane) its threads,
 *   one join buffer per scan thread (grown to the largest file that spans
 *   more than one span) and libclamav's engines.
 *
 *   Call order: ctl_av_start -> (submit | reload | stats)* -> ctl_av_stop.
 *   ctl_av_stop() lets running scans finish, answers requests still queued
 *   with ERROR, frees the engine and returns NULL. Stop the submitters first.
 */
#ifndef CTL_AV_H
#define CTL_AV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <urcu/wfcqueue.h>

#define CTL_AV_NAME_MAX 128            /* signature name or reason, NUL included */

struct ctl_av_conf {
	const char *database;          /* directory or file for cl_load(); copied */
	unsigned threads;              /* scan threads, >= 1 */
	uint64_t timeout_ms;           /* deadline per request, from submission */
	uint32_t queue_max;            /* requests waiting or in a scan, >= 1 */
	uint64_t max_scan_bytes;       /* libclamav's file/scan size limits are raised to this */
};

enum ctl_av_verdict {
	CTL_AV_CLEAN = 0,
	CTL_AV_VIRUS,                  /* name: the signature */
	CTL_AV_UNAVAILABLE,            /* no engine */
	CTL_AV_TIMEOUT,
	CTL_AV_ERROR,                  /* name: what failed */
};

/* One file: a range of the request's byte stream (the spans end to end). */
struct ctl_av_file {
	uint64_t off;
	uint64_t len;                  /* 0: skipped */
};

struct ctl_av_req {
	struct cds_wfcq_node node;     /* pool-internal */
	uint64_t deadline_ms;          /* pool-internal: CLOCK_MONOTONIC ms */
	double t_submit_ms;            /* pool-internal */
	/* in */
	const struct iovec *span;      /* the byte stream, in order */
	unsigned nspan;
	const struct ctl_av_file *file;
	unsigned nfile;
	void (*done)(struct ctl_av_req *r); /* scan thread; see above */
	void *ctx;                     /* the submitter's */
	/* out, valid in done() */
	enum ctl_av_verdict verdict;
	unsigned files_scanned;
	uint64_t bytes_scanned;
	double scan_ms;                /* submission to verdict */
	char name[CTL_AV_NAME_MAX];    /* VIRUS: signature; ERROR/TIMEOUT: reason; else "" */
};

struct ctl_av_stats {
	bool loaded;                   /* an engine is published */
	uint64_t generation;           /* engines published so far */
	uint64_t load_attempts;        /* loads finished, good or bad */
	uint64_t load_failures;
	unsigned sigs;                 /* signatures in the current engine */
	uint64_t scanned;              /* requests answered CLEAN or VIRUS */
	uint64_t viruses;
	uint64_t tempfails;            /* UNAVAILABLE, TIMEOUT, ERROR and refusals */
	uint32_t queued;               /* waiting or in a scan now */
	char last_error[160];          /* of the last failed load; "" if none */
};

struct ctl_av;

/* Starts the threads; the first load runs in the background. NULL and
 * errno on error (EINVAL for a bad conf, ENOMEM, or pthread_create's). */
struct ctl_av *ctl_av_start(const struct ctl_av_conf *conf);
/* Ask the loader for a fresh engine from conf->database; returns at once.
 * Requests made while a load runs are folded into one more load. */
void ctl_av_reload(struct ctl_av *av);
/* 0, -EAGAIN, -ENOBUFS or -EPIPE: see above. */
int ctl_av_submit(struct ctl_av *av, struct ctl_av_req *r);
/* Any thread; a consistent snapshot. */
void ctl_av_stats(struct ctl_av *av, struct ctl_av_stats *st);
struct ctl_av *ctl_av_stop(struct ctl_av *av);

const char *ctl_av_verdict_name(enum ctl_av_verdict v);

#endif
