/*
 * spool.h - the durable spool (group commit) and the queue manager.
 *
 * Contract
 *   The spool turns accepted messages into records on stable storage. Any
 *   thread may hand over a message with ctl_spool_submit(); a single writer
 *   thread appends many pending messages to the current segment file with one
 *   writev batch and one fdatasync (group commit), then calls each message's
 *   done() on the writer thread with err 0 (durable) or -errno (not stored:
 *   the client must get a 4xx). Only after done(m, 0) may a 250 be sent.
 *   Durable messages go to the queue manager, which delivers them (Maildir,
 *   or discard for benchmarks) on its own thread, retries failures with
 *   growing intervals and marks each record delivered. A segment whose
 *   records are all delivered is removed. On open, every segment is scanned
 *   and every record not marked delivered is queued again (crash recovery).
 *   The on-disk format and guarantees are in docs/SPOOL.md.
 *
 *   Memory: the submitter owns *m and everything it points to until done()
 *   has been called; the spool copies nothing but the bytes it writes.
 *
 *   Call order: ctl_queue_open -> ctl_spool_open(q) -> submit* ->
 *   ctl_spool_close -> ctl_queue_close.
 */
#ifndef CTL_SPOOL_H
#define CTL_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <urcu/wfcqueue.h>

#include "smtp/smtp.h"

#define CTL_QID_LEN 24 /* including NUL */

struct ctl_spool_conf {
	const char *dir;               /* created if missing */
	uint64_t segment_max;          /* bytes before a new segment is started */
	uint32_t commit_delay_us;      /* extra wait to gather a batch (0: none) */
	uint32_t commit_batch_max;     /* messages per fdatasync at most */
	bool sync;                     /* false: never fsync (protocol benchmarks) */
};

enum ctl_delivery_method { CTL_DELIVER_MAILDIR = 0, CTL_DELIVER_DISCARD, CTL_DELIVER_LMTP };

/* An LMTP route: recipients of domain go to backend. */
struct ctl_route {
	char *domain;                  /* lowercase; ".example.org": its subdomains */
	char *backend;                 /* "unix:/path", "IPv4:port" or "[IPv6]:port" */
	unsigned line;                 /* in the configuration file; 0: not from one */
};

struct ctl_queue_conf {
	enum ctl_delivery_method method;
	const char *maildir;           /* path; may hold %u (local part), %d (domain) */
	uint64_t retry_min_ms;         /* first retry interval; doubles each time */
	uint64_t retry_max_ms;         /* interval cap */
	uint64_t max_age_ms;           /* give up after this (LMTP: with a DSN) */
	bool sync;                     /* fsync Maildir files and dirs */
	/* LMTP (method CTL_DELIVER_LMTP); copied by ctl_queue_open */
	const char *lmtp_default;      /* backend for domains without a route */
	const struct ctl_route *routes;
	unsigned nroutes;
	uint64_t lmtp_timeout_ms;      /* per protocol step; 0: 5 minutes */
	const char *hostname;          /* LHLO name, Reporting-MTA of DSNs */
	uint64_t bounce_return_max;    /* bytes of the original in a DSN; 0: 256 KiB */
	uint64_t spool_limit;          /* bytes of spool segments; 0: no limit */
};

/* The envelope stored with a message. */
struct ctl_envelope {
	char qid[CTL_QID_LEN];
	int64_t arrival;               /* unix time, seconds */
	const char *client;            /* printable client address */
	const char *helo;
	const char *mail_from;         /* "" for <> */
	enum smtp_body body;
	enum smtp_ret ret;
	const char *envid;             /* or NULL */
	bool smtputf8;
	const struct smtp_rcpt *rcpt;
	uint32_t nrcpt;
	bool quarantine;               /* the content filter's verdict: held, not delivered */
};

/* A message handed to the spool. */
struct ctl_msg {
	struct cds_wfcq_node node;     /* spool-internal linkage */
	struct ctl_envelope env;
	const struct iovec *iov;       /* message content: headers + body, CRLF */
	int iovcnt;
	void (*done)(struct ctl_msg *m, int err); /* writer thread; see above */
	void *ctx;                     /* the submitter's */
};

struct ctl_spool_stats {
	uint64_t messages;             /* made durable */
	uint64_t bytes;
	uint64_t commits;              /* fdatasync calls for records */
	uint64_t errors;
	uint64_t recovered;            /* records queued again at open */
};

struct ctl_queue_stats {
	uint64_t delivered;
	uint64_t deferred;             /* delivery attempts that failed */
	uint64_t queued;               /* waiting now */
	uint64_t bounced;              /* recipients given up on (DSN or not) */
	uint64_t spool_bytes;          /* bytes of live spool segments */
};

struct ctl_queue;
struct ctl_spool;

struct ctl_config;

/* Fill *qc from the configuration; its strings point into cfg, which must
 * outlive ctl_queue_open() (the queue copies what it keeps). */
void ctl_queue_conf_from_config(struct ctl_queue_conf *qc, const struct ctl_config *cfg);

/* Start the delivery thread. NULL and errno on error. */
struct ctl_queue *ctl_queue_open(const struct ctl_queue_conf *conf);
/* Open the spool directory, recover records into q, start the writer.
 * NULL and errno on error (directory unusable, bad segment header). */
struct ctl_spool *ctl_spool_open(const struct ctl_spool_conf *conf, struct ctl_queue *q);

/* The spool that DSN bounces are submitted to: call with sp after
 * ctl_spool_open, and with NULL before ctl_spool_close (it waits for a
 * bounce being submitted). Without a spool, failed recipients wait (they
 * are retried) until one is set. */
void ctl_queue_set_spool(struct ctl_queue *q, struct ctl_spool *sp);

/* Backpressure (spool_limit): true from 95 % of the limit until the spool
 * drains below 90 %. One atomic load: callable from workers. */
bool ctl_queue_full(const struct ctl_queue *q);

/* Wait-free; callable from any thread. 0, or -EPIPE when closing. */
int ctl_spool_submit(struct ctl_spool *sp, struct ctl_msg *m);

void ctl_spool_stats(const struct ctl_spool *sp, struct ctl_spool_stats *st);
/* Any thread, one atomic read: the spool is near spool.limit and new mail
 * must get 452 until the queue drains (see ctl_queue_full). */
bool ctl_spool_full(const struct ctl_spool *sp);
void ctl_queue_stats(const struct ctl_queue *q, struct ctl_queue_stats *st);

/* Commit everything submitted so far, stop the writer. */
struct ctl_spool *ctl_spool_close(struct ctl_spool *sp);
/* Stop delivery; queued messages stay in the spool for the next start. */
struct ctl_queue *ctl_queue_close(struct ctl_queue *q);

#endif
