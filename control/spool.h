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

enum ctl_delivery_method { CTL_DELIVER_MAILDIR = 0, CTL_DELIVER_DISCARD };

struct ctl_queue_conf {
	enum ctl_delivery_method method;
	const char *maildir;           /* path; may hold %u (local part), %d (domain) */
	uint64_t retry_min_ms;         /* first retry interval; doubles each time */
	uint64_t retry_max_ms;         /* interval cap */
	uint64_t max_age_ms;           /* give up after this (DSN comes with LMTP) */
	bool sync;                     /* fsync Maildir files and dirs */
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
};

struct ctl_queue;
struct ctl_spool;

/* Start the delivery thread. NULL and errno on error. */
struct ctl_queue *ctl_queue_open(const struct ctl_queue_conf *conf);
/* Open the spool directory, recover records into q, start the writer.
 * NULL and errno on error (directory unusable, bad segment header). */
struct ctl_spool *ctl_spool_open(const struct ctl_spool_conf *conf, struct ctl_queue *q);

/* Wait-free; callable from any thread. 0, or -EPIPE when closing. */
int ctl_spool_submit(struct ctl_spool *sp, struct ctl_msg *m);

void ctl_spool_stats(const struct ctl_spool *sp, struct ctl_spool_stats *st);
void ctl_queue_stats(const struct ctl_queue *q, struct ctl_queue_stats *st);

/* Commit everything submitted so far, stop the writer. */
struct ctl_spool *ctl_spool_close(struct ctl_spool *sp);
/* Stop delivery; queued messages stay in the spool for the next start. */
struct ctl_queue *ctl_queue_close(struct ctl_queue *q);

#endif
