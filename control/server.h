/*
 * server.h - joins a transport, the SMTP engine and the spool.
 *
 * Contract
 *   ctl_server_start() starts the transport's workers. On each worker a
 *   connection gets an SMTP session (from a per-worker free list); message
 *   bytes are copied into 64 KiB chunks from a per-worker pool; at the end of
 *   data the message, with its Received header, goes to the spool and the
 *   session parks until the spool's group commit made it durable; then the
 *   session answers 250 (or 451 if the write failed). Completions come back
 *   to the worker over a wait-free queue and an eventfd wake-up.
 *   With an antivirus pool (av not NULL), the message is also MIME-parsed
 *   while it streams in and its decoded attachments go to the pool at end
 *   of data before the spool: 554 5.7.1 for a virus, 451 4.7.1 when the
 *   scanner cannot give a verdict (never an unscanned accept). av must
 *   outlive the server: stop the server first.
 *   One log line per connection (at close) and one per transaction.
 *   ctl_server_stop() closes every connection and waits for messages in
 *   flight to the spool; it returns NULL.
 */
#ifndef CTL_SERVER_H
#define CTL_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "control/av.h"
#include "control/config.h"
#include "control/spool.h"

typedef struct ssl_ctx_st SSL_CTX;
struct ctl_filter;
struct ctl_rbl;
struct ctl_greylist;
struct ctl_verify;

struct ctl_server;

/* NULL (and a reason in err) when the transport cannot start. av NULL:
 * no virus scanning (and no MIME parsing). flt NULL: no content filter
 * (no scan work at all); else control/filter.h, and flt must outlive the
 * server. rbl NULL: no DNS list checks; else control/rbl.h: the connect
 * hook parks the session until the lists answered (554 5.7.1 for a listed
 * client, 421 4.7.0 when a list that could have refused it could not be
 * asked), and rbl must outlive the server. gl NULL: no greylisting; else
 * control/greylist.h: each RCPT waits for its answer (451 4.7.1 while
 * greylisted; greylist.on_error when Redis cannot answer); gl must outlive
 * the server. vfy NULL: recipients not verified; else control/verify.h,
 * asked at RCPT before the greylist, and it must outlive the server.
 * Recipients outside recipients.domains (when set) get 550 5.7.1. */
struct ctl_server *ctl_server_start(const struct ctl_config *cfg, struct ctl_spool *sp,
                                    struct ctl_av *av, struct ctl_filter *flt,
                                    struct ctl_rbl *rbl, struct ctl_greylist *gl,
                                    struct ctl_verify *vfy, SSL_CTX *tls,
                                    char *err, size_t errlen);
struct ctl_server *ctl_server_stop(struct ctl_server *srv);

/* A reload: what the hooks decide by and a reload may change (access.*,
 * recipients.domains, rbl.tarpit, and limits.* when the limits were on at
 * start) comes from cfg from now on; the server owns cfg (heap, loaded) and
 * frees the one it replaces once no worker reads it (RCU). Main thread. */
void ctl_server_reload_policy(struct ctl_server *srv, struct ctl_config *cfg);
/* SIGUSR1: with the DPDK transport every worker logs one event=dp_stats
 * line (dataplane/dpdk.h); the kernel transport has no stack counters and
 * logs one event=dp_stats line saying so. */
void ctl_server_log_stats(struct ctl_server *srv);

/* The server's counters in Prometheus text format (thread-safe; the
 * workers' counters are read without stopping them). */
void ctl_server_metrics(struct ctl_server *srv, FILE *f);

struct ctl_server_counts {
	unsigned workers;
	uint64_t conns_open, tarpit_open, tarpit_total;
};
void ctl_server_counts(struct ctl_server *srv, struct ctl_server_counts *out);

/* TLS server context from PEM files; NULL and a reason in err. */
SSL_CTX *ctl_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen);

#endif
