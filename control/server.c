/*
 * server.c - transport + SMTP engine + spool; see server.h.
 *
 * Everything here except spool_done() runs on the worker that owns the
 * connection. spool_done() runs on the spool's writer thread and only
 * enqueues a completion (wait-free) and wakes the worker.
 */
#include "control/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "control/log.h"
#include "dataplane/kernel.h"
#include "smtp/smtp.h"

#define SRV_CHUNK_BYTES  65536u
#define SRV_RECEIVED_MAX 1024u
/* Message buffers a worker may hold at once, all sessions together. */
#define SRV_CHUNKS_MAX   16384u /* 1 GiB */

struct srv_chunk {
	struct srv_chunk *next;
	uint32_t len;
	/* aligned: a chunk also carries the iovec array of a message */
	_Alignas(16) uint8_t data[SRV_CHUNK_BYTES - 16];
};

struct srv_worker;

struct srv_conn {
	struct srv_worker *w;
	struct dp_conn *dc;            /* NULL once the transport closed it */
	struct srv_conn *next_free;
	struct srv_chunk *head, *tail; /* message being received */
	struct srv_chunk *iovs;        /* iovec array while in flight */
	uint64_t msg_bytes;
	bool nomem;                    /* a chunk could not be had: 452 */
	bool inflight;                 /* with the spool; done() not back yet */
	int spool_err;
	struct cds_wfcq_node done_node;
	struct ctl_msg msg;
	uint64_t t_conn, t_data;       /* worker ms */
	struct timespec t_submit;
	uint32_t received_len;
	char received[SRV_RECEIVED_MAX];
	/* the smtp_session follows, 64-aligned */
};

struct srv_worker {
	struct ctl_server *srv;
	struct dp_worker *dpw;
	unsigned id;
	uint32_t seq;
	unsigned nconn;
	unsigned inflight;
	unsigned nchunks;              /* allocated, free or in use */
	struct srv_conn *free_conns;
	struct srv_chunk *free_chunks;
	struct cds_wfcq_head done_head;
	struct cds_wfcq_tail done_tail;
} __attribute__((aligned(64)));

struct ctl_server {
	const struct ctl_config *cfg;
	struct ctl_spool *spool;
	struct smtp_server_conf smtp;
	struct smtp_hooks hooks;
	size_t conn_size;
	size_t sess_off;
	struct dp_listen listen[CTL_LISTEN_MAX];
	struct dp_kernel *kernel;
};

static inline struct smtp_session *
conn_sess(struct srv_conn *c)
{
	return (struct smtp_session *)((char *)c + c->w->srv->sess_off);
}

static inline uint64_t
now_ms(const struct srv_worker *w)
{
	return dp_worker_now(w->dpw);
}

/* ---- message buffers ------------------------------------------------- */

static struct srv_chunk *
chunk_get(struct srv_worker *w)
{
	struct srv_chunk *ch = w->free_chunks;
	if (ch != NULL) {
		w->free_chunks = ch->next;
	} else {
		if (w->nchunks >= SRV_CHUNKS_MAX)
			return NULL;
		ch = malloc(sizeof(*ch));
		if (ch == NULL)
			return NULL;
		w->nchunks++;
	}
	ch->next = NULL;
	ch->len = 0;
	return ch;
}

static void
chunk_put_list(struct srv_worker *w, struct srv_chunk *ch)
{
	while (ch != NULL) {
		struct srv_chunk *next = ch->next;
		ch->next = w->free_chunks;
		w->free_chunks = ch;
		ch = next;
	}
}

static void
msg_clear(struct srv_conn *c)
{
	chunk_put_list(c->w, c->head);
	chunk_put_list(c->w, c->iovs);
	c->head = c->tail = c->iovs = NULL;
	c->msg_bytes = 0;
	c->nomem = false;
}

static void
msg_append(struct srv_conn *c, const uint8_t *p, size_t n)
{
	if (c->nomem)
		return;
	c->msg_bytes += n;
	while (n > 0) {
		struct srv_chunk *t = c->tail;
		if (t == NULL || t->len == sizeof(t->data)) {
			struct srv_chunk *ch = chunk_get(c->w);
			if (ch == NULL) {
				c->nomem = true;
				return;
			}
			if (t == NULL)
				c->head = ch;
			else
				t->next = ch;
			c->tail = t = ch;
		}
		size_t room = sizeof(t->data) - t->len;
		size_t k = n < room ? n : room;
		memcpy(t->data + t->len, p, k);
		t->len += (uint32_t)k;
		p += k;
		n -= k;
	}
}

/* ---- Received header (RFC 5321 4.4, protocol names RFC 3848/6531) ----- */

static void
copy_printable(char *dst, size_t cap, const char *s)
{
	size_t o = 0;
	for (; *s && o + 1 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		dst[o++] = (ch > ' ' && ch < 0x7f && ch != '(' && ch != ')' && ch != ';') ? (char)ch : '?';
	}
	dst[o] = '\0';
}

static void
build_received(struct srv_conn *c, const struct smtp_txn *t, const char *qid)
{
	const struct smtp_conn_info *ci = smtp_session_info(conn_sess(c));
	const char *host = c->w->srv->smtp.hostname;
	char helo[128], rcpt[300], date[64];
	copy_printable(helo, sizeof(helo), ci->helo[0] ? ci->helo : "unknown");
	const char *proto = t->smtputf8 ? (ci->tls ? "UTF8SMTPS" : "UTF8SMTP")
	                                : ci->esmtp ? (ci->tls ? "ESMTPS" : "ESMTP") : "SMTP";
	bool v6 = ci->peer.ss_family == AF_INET6;
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	int n = snprintf(c->received, sizeof(c->received),
	                 "Received: from %s ([%s%s])\r\n\tby %s (sluice) with %s id %s",
	                 helo, v6 ? "IPv6:" : "", ci->peer_str[0] ? ci->peer_str : "unknown",
	                 host, proto, qid);
	if (ci->tls && n > 0 && (size_t)n < sizeof(c->received))
		n += snprintf(c->received + n, sizeof(c->received) - (size_t)n,
		              "\r\n\t(using %s with cipher %s)", ci->tls_version, ci->tls_cipher);
	if (t->nrcpt == 1 && n > 0 && (size_t)n < sizeof(c->received)) {
		copy_printable(rcpt, sizeof(rcpt), t->rcpt[0].addr);
		n += snprintf(c->received + n, sizeof(c->received) - (size_t)n, "\r\n\tfor <%s>", rcpt);
	}
	if (n > 0 && (size_t)n < sizeof(c->received))
		n += snprintf(c->received + n, sizeof(c->received) - (size_t)n, "; %s\r\n", date);
	if (n < 0 || (size_t)n >= sizeof(c->received)) {
		/* Only a pathological hostname gets here; keep the header valid. */
		n = snprintf(c->received, sizeof(c->received),
		             "Received: by sluice id %s; %s\r\n", qid, date);
	}
	c->received_len = (uint32_t)n;
}

static void
make_qid(struct srv_conn *c, char *qid)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long long us = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u;
	snprintf(qid, CTL_QID_LEN, "%013llX%X%04X", us, c->w->id & 0xf, c->w->seq++ & 0xffff);
}

/* ---- logging ----------------------------------------------------------- */

static void
log_txn(struct srv_conn *c, const struct smtp_txn *t, const char *qid, const char *verdict,
        const char *dsn, const char *reason, double commit_ms)
{
	if (!ctl_log_enabled(CTL_LOG_INFO))
		return;
	const struct smtp_conn_info *ci = smtp_session_info(conn_sess(c));
	char helo[300], from[600], reason_v[300], rcpts[1200];
	size_t o = 0;
	for (uint32_t i = 0; t != NULL && i < t->nrcpt && o + 4 < sizeof(rcpts); i++) {
		int k = snprintf(rcpts + o, sizeof(rcpts) - o, "%s%s", i ? "," : "", t->rcpt[i].addr);
		if (k < 0)
			break;
		o += (size_t)k;
	}
	if (o >= sizeof(rcpts))
		o = sizeof(rcpts) - 1;
	rcpts[o] = '\0';
	char rcpts_v[1300];
	ctl_log(CTL_LOG_INFO,
	        "event=txn worker=%u qid=%s client=%s helo=%s from=%s nrcpt=%u to=%s size=%llu "
	        "verdict=%s dsn=%s reason=%s tls=%d data_ms=%llu commit_ms=%.3f",
	        c->w->id, qid[0] ? qid : "-", ci->peer_str,
	        ctl_log_value(helo, sizeof(helo), ci->helo),
	        ctl_log_value(from, sizeof(from), t ? t->mail_from : ""),
	        t ? t->nrcpt : 0, ctl_log_value(rcpts_v, sizeof(rcpts_v), rcpts),
	        (unsigned long long)c->msg_bytes, verdict, dsn,
	        ctl_log_value(reason_v, sizeof(reason_v), reason),
	        ci->tls, (unsigned long long)(now_ms(c->w) - c->t_data), commit_ms);
}

static const char *
event_name(enum smtp_event ev)
{
	switch (ev) {
	case SMTP_EV_EARLY_TALKER: return "early_talker";
	case SMTP_EV_TLS_UP: return "tls_up";
	case SMTP_EV_TLS_FAILED: return "tls_failed";
	case SMTP_EV_PLAINTEXT_DISCARDED: return "plaintext_after_starttls_discarded";
	case SMTP_EV_TIMEOUT: return "timeout";
	case SMTP_EV_TOO_MANY_ERRORS: return "too_many_errors";
	case SMTP_EV_PROXY_BAD: return "proxy_header_bad";
	case SMTP_EV_QUIT: return "quit";
	case SMTP_EV_ABORT_SIZE: return "message_too_big";
	case SMTP_EV_ABORT_BARE_EOL: return "bare_cr_or_lf";
	case SMTP_EV_ABORT_LINE_LENGTH: return "line_too_long";
	case SMTP_EV_ABORT_DISCONNECT: return "disconnect_in_data";
	case SMTP_EV_ABORT_RSET: return "rset_in_data";
	case SMTP_EV_ABORT_HOOK: return "refused";
	}
	return "unknown";
}

/* ---- SMTP hooks -------------------------------------------------------- */

static int
hook_connect(void *ctx, struct smtp_session *s, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	if (c->w->nconn > c->w->srv->cfg->connections_max) {
		r->code = 421;
		snprintf(r->enh, sizeof(r->enh), "4.7.0");
		snprintf(r->text, sizeof(r->text), "%s Error: too many connections, try again later",
		         c->w->srv->smtp.hostname);
		r->close = true;
		return SMTP_HOOK_REPLY;
	}
	return SMTP_HOOK_OK;
}

/* Backpressure: near spool.limit new mail waits at the client (RFC 5321
 * 4.5.3.1.10 lets a server answer 452 for lack of storage). */
static int
refuse_if_spool_full(struct srv_conn *c, struct smtp_reply *r)
{
	if (!ctl_spool_full(c->w->srv->spool))
		return SMTP_HOOK_OK;
	r->code = 452;
	snprintf(r->enh, sizeof(r->enh), "4.3.1");
	snprintf(r->text, sizeof(r->text), "Insufficient system storage, try again later");
	return SMTP_HOOK_REPLY;
}

static int
hook_mail(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	return refuse_if_spool_full(ctx, r);
}

static int
hook_data_start(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	if (refuse_if_spool_full(c, r) != SMTP_HOOK_OK)
		return SMTP_HOOK_REPLY;
	msg_clear(c);
	c->t_data = now_ms(c->w);
	make_qid(c, c->msg.env.qid);
	return SMTP_HOOK_OK;
}

static void
hook_data(void *ctx, struct smtp_session *s, const uint8_t *p, size_t n)
{
	msg_append(ctx, p, n);
}

static void
spool_done(struct ctl_msg *m, int err)
{
	struct srv_conn *c = m->ctx;
	c->spool_err = err;
	cds_wfcq_node_init(&c->done_node);
	cds_wfcq_enqueue(&c->w->done_head, &c->w->done_tail, &c->done_node);
	dp_worker_wake(c->w->dpw);
}

static int
hook_data_end(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	struct srv_worker *w = c->w;
	const struct smtp_conn_info *ci = smtp_session_info(s);
	const char *qid = c->msg.env.qid;

	if (c->nomem) {
		msg_clear(c);
		r->code = 452;
		snprintf(r->enh, sizeof(r->enh), "4.3.1");
		snprintf(r->text, sizeof(r->text), "Insufficient system storage, try again later");
		log_txn(c, t, qid, "tempfail", "4.3.1", "out of message buffers", 0);
		return SMTP_HOOK_REPLY;
	}
	build_received(c, t, qid);

	/* iovec array in a chunk of its own: header + one entry per chunk. */
	unsigned nchunks = 0;
	for (struct srv_chunk *ch = c->head; ch != NULL; ch = ch->next)
		nchunks++;
	c->iovs = chunk_get(w);
	if (c->iovs == NULL || (nchunks + 1) * sizeof(struct iovec) > sizeof(c->iovs->data)) {
		msg_clear(c);
		r->code = 452;
		snprintf(r->enh, sizeof(r->enh), "4.3.1");
		snprintf(r->text, sizeof(r->text), "Insufficient system storage, try again later");
		log_txn(c, t, qid, "tempfail", "4.3.1", "out of message buffers", 0);
		return SMTP_HOOK_REPLY;
	}
	struct iovec *iov = (struct iovec *)(void *)c->iovs->data;
	iov[0].iov_base = c->received;
	iov[0].iov_len = c->received_len;
	unsigned i = 1;
	for (struct srv_chunk *ch = c->head; ch != NULL; ch = ch->next, i++) {
		iov[i].iov_base = ch->data;
		iov[i].iov_len = ch->len;
	}

	struct ctl_msg *m = &c->msg;
	m->env.arrival = time(NULL);
	m->env.client = ci->peer_str;
	m->env.helo = ci->helo;
	m->env.mail_from = t->mail_from;
	m->env.body = t->body;
	m->env.ret = t->ret;
	m->env.envid = t->envid;
	m->env.smtputf8 = t->smtputf8;
	m->env.rcpt = t->rcpt;
	m->env.nrcpt = t->nrcpt;
	m->iov = iov;
	m->iovcnt = (int)i;
	m->done = spool_done;
	m->ctx = c;
	clock_gettime(CLOCK_MONOTONIC, &c->t_submit);
	int rc = ctl_spool_submit(w->srv->spool, m);
	if (rc < 0) {
		msg_clear(c);
		r->code = 451;
		snprintf(r->enh, sizeof(r->enh), "4.3.0");
		snprintf(r->text, sizeof(r->text), "Queue unavailable, try again later");
		log_txn(c, t, qid, "tempfail", "4.3.0", "spool closed", 0);
		return SMTP_HOOK_REPLY;
	}
	c->inflight = true;
	w->inflight++;
	return SMTP_HOOK_PENDING;
}

static void
hook_data_abort(void *ctx, struct smtp_session *s, const struct smtp_txn *t, enum smtp_event why)
{
	struct srv_conn *c = ctx;
	if (c->inflight)
		return;  /* the spool has it; the completion cleans up */
	const char *dsn = why == SMTP_EV_ABORT_SIZE ? "5.3.4" : why == SMTP_EV_ABORT_BARE_EOL ? "5.6.0"
	                : why == SMTP_EV_ABORT_DISCONNECT ? "-" : "5.5.0";
	log_txn(c, t, c->msg.env.qid, "rejected", dsn, event_name(why), 0);
	msg_clear(c);
}

static void
hook_event(void *ctx, struct smtp_session *s, enum smtp_event ev)
{
	struct srv_conn *c = ctx;
	const struct smtp_conn_info *ci = smtp_session_info(s);
	enum ctl_log_level lvl = (ev == SMTP_EV_TLS_UP || ev == SMTP_EV_QUIT) ? CTL_LOG_DEBUG : CTL_LOG_INFO;
	if (ev == SMTP_EV_TLS_UP)
		ctl_log(lvl, "event=tls worker=%u client=%s version=%s cipher=%s", c->w->id,
		        ci->peer_str, ci->tls_version, ci->tls_cipher);
	else
		ctl_log(lvl, "event=%s worker=%u client=%s", event_name(ev), c->w->id, ci->peer_str);
}

/* ---- transport callbacks ---------------------------------------------- */

static void
conn_free(struct srv_conn *c)
{
	struct srv_worker *w = c->w;
	msg_clear(c);
	c->next_free = w->free_conns;
	w->free_conns = c;
}

/* After the session ran: close when it says so, else re-arm its timer.
 * Only inside a transport callback for c (closing is then deferred). */
static void
conn_post(struct srv_conn *c)
{
	struct smtp_session *s = conn_sess(c);
	if (smtp_session_status(s) & SMTP_ST_CLOSE)
		dp_conn_close(c->dc);
	else
		dp_conn_timer(c->dc, smtp_session_deadline(s));
}

static void *
op_worker_init(void *app, struct dp_worker *dpw, unsigned id)
{
	struct ctl_server *srv = app;
	struct srv_worker *w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
	if (w == NULL)
		abort();  /* start-up only */
	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->dpw = dpw;
	w->id = id;
	cds_wfcq_init(&w->done_head, &w->done_tail);
	return w;
}

static void
drain_done(struct srv_worker *w)
{
	struct cds_wfcq_node *node;
	while ((node = __cds_wfcq_dequeue_blocking(&w->done_head, &w->done_tail)) != NULL) {
		struct srv_conn *c = (struct srv_conn *)((char *)node - offsetof(struct srv_conn, done_node));
		struct smtp_session *s = conn_sess(c);
		const struct smtp_txn *t = smtp_session_txn(s);
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		double commit_ms = (double)(now.tv_sec - c->t_submit.tv_sec) * 1e3 +
		                   (double)(now.tv_nsec - c->t_submit.tv_nsec) / 1e6;
		c->inflight = false;
		w->inflight--;
		const char *qid = c->msg.env.qid;
		if (c->spool_err == 0)
			log_txn(c, t, qid, c->dc ? "accepted" : "accepted_client_gone", "2.0.0", "", commit_ms);
		else
			log_txn(c, t, qid, "tempfail", "4.3.0", strerror(-c->spool_err), commit_ms);
		chunk_put_list(w, c->head);
		chunk_put_list(w, c->iovs);
		c->head = c->tail = c->iovs = NULL;
		if (c->dc == NULL) {
			conn_free(c);
			continue;
		}
		struct smtp_reply r = { 0 };
		if (c->spool_err == 0) {
			r.code = 250;
			snprintf(r.enh, sizeof(r.enh), "2.0.0");
			snprintf(r.text, sizeof(r.text), "Ok: queued as %s", qid);
		} else {
			r.code = 451;
			snprintf(r.enh, sizeof(r.enh), "4.3.0");
			snprintf(r.text, sizeof(r.text), "Error: queue file write error, try again later");
		}
		c->msg_bytes = 0;
		smtp_session_resume(s, &r, now_ms(w));
		if (smtp_session_status(s) & SMTP_ST_CLOSE) {
			dp_conn_close(c->dc);
		} else {
			dp_conn_timer(c->dc, smtp_session_deadline(s));
			dp_conn_rx_resume(c->dc);
		}
	}
}

static void
op_wake(void *worker_app)
{
	drain_done(worker_app);
}

static void
op_worker_fini(void *worker_app)
{
	struct srv_worker *w = worker_app;
	/* Messages still with the spool come back before we free anything. */
	while (w->inflight > 0) {
		drain_done(w);
		if (w->inflight > 0) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	while (w->free_conns != NULL) {
		struct srv_conn *c = w->free_conns;
		w->free_conns = c->next_free;
		free(c);
	}
	while (w->free_chunks != NULL) {
		struct srv_chunk *ch = w->free_chunks;
		w->free_chunks = ch->next;
		free(ch);
	}
	free(w);
}

static void *
op_accept(void *worker_app, struct dp_conn *dc, const struct sockaddr *peer,
          const struct sockaddr *local, unsigned listener_flags)
{
	struct srv_worker *w = worker_app;
	struct ctl_server *srv = w->srv;
	struct srv_conn *c = w->free_conns;
	if (c != NULL) {
		w->free_conns = c->next_free;
	} else {
		c = aligned_alloc(64, srv->conn_size);
		if (c == NULL)
			return NULL;
	}
	memset(c, 0, srv->sess_off);
	c->w = w;
	c->dc = dc;
	c->t_conn = now_ms(w);
	w->nconn++;
	struct smtp_session *s = conn_sess(c);
	smtp_session_init(s, &srv->smtp, &srv->hooks, c, peer, local, listener_flags, c->t_conn);
	smtp_session_start(s, c->t_conn);
	conn_post(c);
	return c;
}

static size_t
op_recv(void *conn_app, const uint8_t *p, size_t n)
{
	struct srv_conn *c = conn_app;
	size_t took = smtp_session_input(conn_sess(c), p, n, now_ms(c->w));
	conn_post(c);
	return took;
}

static size_t
op_pull(void *conn_app, const uint8_t **p)
{
	struct srv_conn *c = conn_app;
	return smtp_session_output(conn_sess(c), p);
}

static void
op_sent(void *conn_app, size_t n)
{
	struct srv_conn *c = conn_app;
	struct smtp_session *s = conn_sess(c);
	bool was_full = smtp_session_status(s) & SMTP_ST_OUTFULL;
	smtp_session_sent(s, n);
	if (was_full) {
		/* The engine may hold input it could not answer while its
		 * output was full (under TLS); let it run now. */
		smtp_session_input(s, NULL, 0, now_ms(c->w));
		conn_post(c);
	}
}

static void
op_timer(void *conn_app)
{
	struct srv_conn *c = conn_app;
	smtp_session_tick(conn_sess(c), now_ms(c->w));
	conn_post(c);
}

static void
op_closed(void *conn_app, int err)
{
	struct srv_conn *c = conn_app;
	struct srv_worker *w = c->w;
	struct smtp_session *s = conn_sess(c);
	c->dc = NULL;
	smtp_session_fini(s);
	w->nconn--;
	if (ctl_log_enabled(CTL_LOG_INFO)) {
		const struct smtp_conn_info *ci = smtp_session_info(s);
		char helo[300];
		ctl_log(CTL_LOG_INFO,
		        "event=disconnect worker=%u client=%s port=%u helo=%s proxied=%d tls=%d "
		        "early_talker=%d msgs=%u errors=%u duration_ms=%llu close=%s",
		        w->id, ci->peer_str, ci->peer_port, ctl_log_value(helo, sizeof(helo), ci->helo),
		        ci->proxied, ci->tls, ci->early_talker, ci->transactions, ci->errors,
		        (unsigned long long)(now_ms(w) - c->t_conn),
		        err == 0 ? "server" : err == -ESHUTDOWN ? "shutdown" : "client");
	}
	if (!c->inflight)
		conn_free(c);
}

static const struct dp_app_ops srv_ops = {
	.worker_init = op_worker_init,
	.worker_fini = op_worker_fini,
	.accept = op_accept,
	.recv = op_recv,
	.pull = op_pull,
	.sent = op_sent,
	.timer = op_timer,
	.closed = op_closed,
	.wake = op_wake,
};

/* ---- start / stop -------------------------------------------------------- */

SSL_CTX *
ctl_tls_ctx_new(const char *cert, const char *key, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		char e[256];
		ERR_error_string_n(ERR_get_error(), e, sizeof(e));
		snprintf(err, errlen, "TLS certificate %s / key %s: %s", cert, key, e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

struct ctl_server *
ctl_server_start(const struct ctl_config *cfg, struct ctl_spool *sp, SSL_CTX *tls, char *err,
                 size_t errlen)
{
	struct ctl_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->cfg = cfg;
	srv->spool = sp;
	srv->smtp = (struct smtp_server_conf){
		.hostname = cfg->hostname,
		.banner = cfg->banner,
		.cmd_line_max = cfg->cmd_line_max,
		.text_line_max = cfg->text_line_max,
		.message_size_max = cfg->message_size_max,
		.rcpt_max = cfg->rcpt_max,
		.errors_max = cfg->errors_max,
		.greet_pause_ms = cfg->greet_pause_ms,
		.timeout_command_ms = cfg->timeout_command_ms,
		.timeout_data_ms = cfg->timeout_data_ms,
		.timeout_tls_ms = cfg->timeout_tls_ms,
		.tls_ctx = tls,
	};
	srv->hooks = (struct smtp_hooks){
		.connect = hook_connect,
		.mail = hook_mail,
		.data_start = hook_data_start,
		.data = hook_data,
		.data_end = hook_data_end,
		.data_abort = hook_data_abort,
		.event = hook_event,
	};
	srv->sess_off = (sizeof(struct srv_conn) + 63) & ~(size_t)63;
	srv->conn_size = (srv->sess_off + smtp_session_size(&srv->smtp) + 63) & ~(size_t)63;
	for (unsigned i = 0; i < cfg->nlisten; i++) {
		srv->listen[i].addr = cfg->listen[i].addr;
		srv->listen[i].addrlen = cfg->listen[i].addrlen;
		srv->listen[i].flags = cfg->listen[i].proxy_protocol ? SMTP_SESS_PROXY : 0;
	}
	struct dp_kernel_conf kc = {
		.workers = cfg->workers,
		.listen = srv->listen,
		.nlisten = cfg->nlisten,
		/* the connect hook answers 421 above connections_max; beyond
		 * this hard cap the socket is closed unanswered */
		.conn_max = cfg->connections_max + cfg->connections_max / 8 + 16,
		.cpu_first = -1,
	};
	srv->kernel = dp_kernel_start(&kc, &srv_ops, srv, err, errlen);
	if (srv->kernel == NULL) {
		free(srv);
		return NULL;
	}
	return srv;
}

struct ctl_server *
ctl_server_stop(struct ctl_server *srv)
{
	if (srv == NULL)
		return NULL;
	srv->kernel = dp_kernel_stop(srv->kernel);
	free(srv);
	return NULL;
}
