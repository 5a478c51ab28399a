/*
 * server.c - transport + SMTP engine + antivirus + spool; see server.h.
 *
 * Everything here except spool_done() and av_done() runs on the worker that
 * owns the connection. Those two run on the spool's writer thread and on a
 * scan thread; they only enqueue a completion (wait-free) and wake the
 * worker.
 *
 * Antivirus (only when ctl_server_start() got a pool): while DATA streams
 * in, the bytes also go through a MIME parser lent from a per-worker pool;
 * the DECODED bytes of attachment parts are kept in message chunks of their
 * own (the file table and the span array of the scan request sit in one
 * more chunk). At end of data a message with attachment bytes goes to the
 * scan pool first, the session parked; CLEAN goes on to the spool as
 * without antivirus, VIRUS gets 554 5.7.1, anything else 451 4.7.1.
 * What counts as an attachment, and what happens beyond max_scan_bytes, is
 * in docs/ARCHITECTURE.md ("Virus scanning").
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
#include <urcu/urcu-memb.h>

#include "control/av.h"
#include "control/filter.h"
#include "control/greylist.h"
#include "control/perclient.h"
#include "control/verify.h"
#include "control/log.h"
#include "control/rbl.h"
#include "dataplane/kernel.h"
#ifdef SLUICE_HAVE_DPDK
#include "dataplane/dpdk.h"
#endif
#include "scan/mime.h"
#include "smtp/smtp.h"

#define SRV_CHUNK_BYTES  65536u
#define SRV_RECEIVED_MAX 1024u
/* Message buffers a worker may hold at once, all sessions together. */
#define SRV_CHUNKS_MAX   16384u /* 1 GiB */
/* MIME parsers (about 30 KB each) a worker may lend at once: one per
 * message in DATA while antivirus is on. */
#define SRV_MIMES_MAX    4096u
/* Attachments kept per message: the MIME parser's default part limit. */
#define SRV_AV_FILES_MAX 1024u

struct srv_chunk {
	struct srv_chunk *next;
	uint32_t len;
	/* aligned: a chunk also carries the iovec array of a message */
	_Alignas(16) uint8_t data[SRV_CHUNK_BYTES - 16];
};

struct srv_worker;
struct srv_conn;

/* A MIME parser on loan to the message its borrower receives. */
struct srv_mime {
	struct srv_mime *next;
	struct srv_conn *c;
	struct scan_mime m;
};

/* The chunk that goes with a message to the scan pool: the request, the
 * file table filled while parsing, the span array filled at end of data. */
struct srv_av_meta {
	struct ctl_av_req req;
	struct ctl_av_file file[SRV_AV_FILES_MAX];
	struct iovec span[];
};

#define SRV_AV_SPANS_MAX ((sizeof(((struct srv_chunk *)0)->data) - sizeof(struct srv_av_meta)) / \
                          sizeof(struct iovec))
_Static_assert(sizeof(struct srv_av_meta) + 16 * sizeof(struct iovec) <=
               sizeof(((struct srv_chunk *)0)->data), "the meta chunk holds the file table");
/* antivirus.max_scan_bytes (at most 128m, config.c) fits the span array */
_Static_assert(SRV_AV_SPANS_MAX * (SRV_CHUNK_BYTES - 16) >= (128ull << 20) + (SRV_CHUNK_BYTES - 16),
               "the meta chunk holds the spans of max_scan_bytes");

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
	/* antivirus only; all NULL/0 while it is off */
	struct srv_mime *mime;         /* parser lent while in DATA */
	struct srv_chunk *av_head, *av_tail; /* decoded attachment bytes */
	struct srv_chunk *av_meta;     /* struct srv_av_meta */
	uint64_t av_bytes;
	uint32_t av_nfile;
	bool av_collect;               /* the current MIME part is kept */
	bool av_partial;               /* cut at max_scan_bytes (or the file table) */
	bool av_stage;                 /* in flight with the scanner, not the spool */
	const char *av_result;         /* for the txn log line */
	double av_ms;
	struct ctl_filter_msg *flt;    /* content filter slot; NULL: filter off */
	struct ctl_rbl_req rbl;        /* the DNS lists' answer for this client */
	bool rbl_stage;                /* in flight with the resolver */
	bool rbl_asked;                /* rbl holds an answer (for the log) */
	bool tarpit;                   /* held in the tarpit */
	bool limit_taken;              /* counted in the per-client connections */
	bool has_addr;                 /* addr holds the client's address */
	uint8_t addr[16];              /* the client (after a PROXY header) */
	struct ctl_gl_req gl;          /* the greylist's answer for the current RCPT */
	bool gl_stage;                 /* in flight with the greylist */
	struct ctl_vfy_req vfy;        /* the backend's answer for the current RCPT */
	bool vfy_stage;                /* in flight with the verifier */
	char received[SRV_RECEIVED_MAX];
	/* the smtp_session follows, 64-aligned */
};

/* A worker's counters: written by that worker only (a relaxed load and
 * store, no locked instruction), read by the metrics thread. */
struct srv_metrics {
	_Atomic uint64_t conns;        /* accepted connections */
	_Atomic uint64_t conns_refused; /* 421 above smtp.connections_max */
	_Atomic uint64_t open;         /* open now (a gauge) */
	_Atomic uint64_t txn_accepted, txn_rejected, txn_tempfail;
	_Atomic uint64_t bytes_accepted;
	_Atomic uint64_t gl_grey, gl_error;  /* recipients greylisted; Redis failures */
	_Atomic uint64_t tarpit, tarpit_open; /* clients held in the tarpit: all, now */
	_Atomic uint64_t lim_conns, lim_msgs; /* refused by limits.* */
};

static inline void
ctr_add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
	                      memory_order_relaxed);
}

#define SRV_WORKERS_MAX 64

struct srv_worker {
	struct ctl_server *srv;
	struct dp_worker *dpw;
	unsigned id;
	uint32_t seq;
	unsigned nconn;
	unsigned ntarpit;              /* of nconn, held in the tarpit */
	unsigned inflight;
	unsigned nchunks;              /* allocated, free or in use */
	unsigned nmimes;               /* MIME parsers allocated, free or lent */
	struct srv_conn *free_conns;
	struct srv_chunk *free_chunks;
	struct srv_mime *free_mimes;
	struct cds_wfcq_head done_head;
	struct cds_wfcq_tail done_tail;
	struct ctl_filter_worker *flt; /* NULL: filter off */
	bool rcu_own;                  /* registered with urcu memb here (not by flt) */
	struct srv_metrics m;
	time_t date_sec;               /* received_date()'s cache */
	uint8_t date_len;
	char date[40];
} __attribute__((aligned(64)));

struct ctl_server {
	const struct ctl_config *cfg;
	struct ctl_spool *spool;
	struct ctl_av *av;             /* NULL: antivirus off */
	struct ctl_filter *flt;        /* NULL: content filter off */
	struct ctl_rbl *rbl;           /* NULL: no DNS list checks */
	struct ctl_greylist *gl;       /* NULL: no greylisting */
	struct ctl_verify *vfy;        /* NULL: recipients not verified */
	struct ctl_limits *lim;        /* NULL: no per-client limits */
	/* What the hooks decide by that a reload may change (access lists,
	 * recipients.domains, rbl.tarpit): cfg at start, a newer loaded
	 * configuration after ctl_server_reload_policy(); read under the RCU
	 * (memb) read lock. */
	struct ctl_config *pol;
	bool pol_owned;                /* pol is a reload's, freed when replaced */
	uint64_t av_max_bytes;
	struct smtp_server_conf smtp;
	struct smtp_hooks hooks;
	size_t conn_size;
	size_t sess_off;
	struct dp_listen listen[CTL_LISTEN_MAX];
	struct srv_worker *_Atomic workers[SRV_WORKERS_MAX]; /* for the metrics */
	time_t started;
	struct dp_kernel *kernel;
#ifdef SLUICE_HAVE_DPDK
	struct dp_dpdk *dpdk;
#endif
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

static void mime_put(struct srv_worker *w, struct srv_mime *m);

/* Antivirus state of the message; the parser goes back to the pool. */
static void
av_clear(struct srv_conn *c)
{
	if (c->mime != NULL) {
		mime_put(c->w, c->mime);
		c->mime = NULL;
	}
	chunk_put_list(c->w, c->av_head);
	chunk_put_list(c->w, c->av_meta);
	c->av_head = c->av_tail = c->av_meta = NULL;
	c->av_bytes = 0;
	c->av_nfile = 0;
	c->av_collect = false;
	c->av_partial = false;
}

static void
msg_clear(struct srv_conn *c)
{
	chunk_put_list(c->w, c->head);
	chunk_put_list(c->w, c->iovs);
	c->head = c->tail = c->iovs = NULL;
	c->msg_bytes = 0;
	c->nomem = false;
	if (c->flt != NULL) {
		ctl_filter_put(c->w->flt, c->flt);
		c->flt = NULL;
	}
	if (c->av_head != NULL || c->av_meta != NULL || c->mime != NULL)
		av_clear(c);
}

/* Append to a chunk list; false when no chunk could be had. */
static inline bool
chunks_append(struct srv_worker *w, struct srv_chunk **head, struct srv_chunk **tail,
              const uint8_t *p, size_t n)
{
	while (n > 0) {
		struct srv_chunk *t = *tail;
		if (t == NULL || t->len == sizeof(t->data)) {
			struct srv_chunk *ch = chunk_get(w);
			if (ch == NULL)
				return false;
			if (t == NULL)
				*head = ch;
			else
				t->next = ch;
			*tail = t = ch;
		}
		size_t room = sizeof(t->data) - t->len;
		size_t k = n < room ? n : room;
		memcpy(t->data + t->len, p, k);
		t->len += (uint32_t)k;
		p += k;
		n -= k;
	}
	return true;
}

static void
msg_append(struct srv_conn *c, const uint8_t *p, size_t n)
{
	if (c->nomem)
		return;
	c->msg_bytes += n;
	if (!chunks_append(c->w, &c->head, &c->tail, p, n))
		c->nomem = true;
}

/* ---- Received header (RFC 5321 4.4, protocol names RFC 3848/6531) ----- */

/* The date part of the Received header, formatted once per second per
 * worker: gmtime_r + strftime cost more than the rest of the header. */
static const char *
received_date(struct srv_worker *w, size_t *len)
{
	time_t now = time(NULL);
	if (now != w->date_sec || w->date_len == 0) {
		struct tm tm;
		gmtime_r(&now, &tm);
		w->date_len = (uint8_t)strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
		w->date_sec = now;
	}
	*len = w->date_len;
	return w->date;
}

/* Bounded appends into the header buffer; ok turns false once one does
 * not fit. */
struct srv_buf {
	char *p;
	size_t n, cap;
	bool ok;
};

static void
buf_put(struct srv_buf *b, const char *s, size_t n)
{
	if (!b->ok || n >= b->cap - b->n) {
		b->ok = false;
		return;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

static void
buf_puts(struct srv_buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* s with every byte that could break the header's comment syntax made '?',
 * at most max bytes of it. */
static void
buf_printable(struct srv_buf *b, const char *s, size_t max)
{
	size_t i = 0;
	for (; s[i] && i < max; i++) {
		if (b->n + 1 >= b->cap) {
			b->ok = false;
			return;
		}
		unsigned char ch = (unsigned char)s[i];
		b->p[b->n++] = (ch > ' ' && ch < 0x7f && ch != '(' && ch != ')' && ch != ';') ? (char)ch : '?';
	}
}

static void
build_received(struct srv_conn *c, const struct smtp_txn *t, const char *qid)
{
	const struct smtp_conn_info *ci = smtp_session_info(conn_sess(c));
	const char *host = c->w->srv->smtp.hostname;
	const char *proto = t->smtputf8 ? (ci->tls ? "UTF8SMTPS" : "UTF8SMTP")
	                                : ci->esmtp ? (ci->tls ? "ESMTPS" : "ESMTP") : "SMTP";
	size_t dlen;
	const char *date = received_date(c->w, &dlen);
	struct srv_buf b = { c->received, 0, sizeof(c->received), true };
	buf_puts(&b, "Received: from ");
	buf_printable(&b, ci->helo[0] ? ci->helo : "unknown", 127);
	buf_puts(&b, " ([");
	if (ci->peer.ss_family == AF_INET6)
		buf_puts(&b, "IPv6:");
	buf_puts(&b, ci->peer_str[0] ? ci->peer_str : "unknown");
	buf_puts(&b, "])\r\n\tby ");
	buf_puts(&b, host);
	buf_puts(&b, " (sluice) with ");
	buf_puts(&b, proto);
	buf_puts(&b, " id ");
	buf_puts(&b, qid);
	if (ci->tls) {
		buf_puts(&b, "\r\n\t(using ");
		buf_puts(&b, ci->tls_version);
		buf_puts(&b, " with cipher ");
		buf_puts(&b, ci->tls_cipher);
		buf_puts(&b, ")");
	}
	if (t->nrcpt == 1) {
		buf_puts(&b, "\r\n\tfor <");
		buf_printable(&b, t->rcpt[0].addr, 299);
		buf_puts(&b, ">");
	}
	buf_puts(&b, "; ");
	buf_put(&b, date, dlen);
	buf_puts(&b, "\r\n");
	if (!b.ok) {
		/* Only a pathological hostname gets here; keep the header valid. */
		b = (struct srv_buf){ c->received, 0, sizeof(c->received), true };
		buf_puts(&b, "Received: by sluice id ");
		buf_puts(&b, qid);
		buf_puts(&b, "; ");
		buf_put(&b, date, dlen);
		buf_puts(&b, "\r\n");
	}
	c->received_len = (uint32_t)b.n;
}

/* Upper-case hex of v in exactly n digits. */
static char *
put_hex(char *o, unsigned long long v, int n)
{
	static const char digits[16] = "0123456789ABCDEF";
	for (int i = n - 1; i >= 0; i--) {
		o[i] = digits[v & 0xf];
		v >>= 4;
	}
	return o + n;
}

/* 13 hex digits of microseconds (enough until the year 2541), the worker,
 * 4 of sequence: 18 characters. */
static void
make_qid(struct srv_conn *c, char *qid)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long long us = (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000u;
	char *o = put_hex(qid, us, 13);
	o = put_hex(o, c->w->id & 0xf, 1);
	o = put_hex(o, c->w->seq++ & 0xffff, 4);
	*o = '\0';
}

/* ---- logging ----------------------------------------------------------- */

static void
log_txn(struct srv_conn *c, const struct smtp_txn *t, const char *qid, const char *verdict,
        const char *dsn, const char *reason, double commit_ms)
{
	struct srv_metrics *m = &c->w->m;
	if (strncmp(verdict, "accepted", 8) == 0) {
		ctr_add(&m->txn_accepted, 1);
		ctr_add(&m->bytes_accepted, c->msg_bytes);
	} else if (strcmp(verdict, "rejected") == 0) {
		ctr_add(&m->txn_rejected, 1);
	} else {
		ctr_add(&m->txn_tempfail, 1);
	}
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
	char av[128] = "";
	if (c->w->srv->av != NULL)
		snprintf(av, sizeof(av), " av=%s av_files=%u av_bytes=%llu av_partial=%d av_ms=%.3f",
		         c->av_result ? c->av_result : "-", c->av_nfile,
		         (unsigned long long)c->av_bytes, c->av_partial, c->av_ms);
	char flt[800] = "";
	if (c->flt != NULL)
		ctl_filter_log(c->flt, flt, sizeof(flt));
	ctl_log(CTL_LOG_INFO,
	        "event=txn worker=%u qid=%s client=%s helo=%s from=%s nrcpt=%u to=%s size=%llu "
	        "verdict=%s dsn=%s reason=%s tls=%d data_ms=%llu commit_ms=%.3f%s%s",
	        c->w->id, qid[0] ? qid : "-", ci->peer_str,
	        ctl_log_value(helo, sizeof(helo), ci->helo),
	        ctl_log_value(from, sizeof(from), t ? t->mail_from : ""),
	        t ? t->nrcpt : 0, ctl_log_value(rcpts_v, sizeof(rcpts_v), rcpts),
	        (unsigned long long)c->msg_bytes, verdict, dsn,
	        ctl_log_value(reason_v, sizeof(reason_v), reason),
	        ci->tls, (unsigned long long)(now_ms(c->w) - c->t_data), commit_ms, av, flt);
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

/* ---- antivirus: attachments out of the MIME stream ---------------------- */

static inline struct srv_av_meta *
av_meta(const struct srv_conn *c)
{
	return (struct srv_av_meta *)(void *)c->av_meta->data;
}

/* What goes to the scanner: a leaf with a file name, or declared an
 * attachment, or of any type but text/ (application/, image/, audio/,
 * video/, model/, font/, and containers left opaque by the parser's
 * limits or an encoding). Text bodies are for the rule engine. */
static bool
av_wanted(const struct scan_mime_part *p)
{
	if ((p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE)) &&
	    !(p->flags & SCAN_MIME_P_OPAQUE))
		return false;  /* a container: its children come as parts */
	if ((p->flags & SCAN_MIME_P_HAS_FILENAME) || p->disp == SCAN_MIME_DISP_ATTACHMENT)
		return true;
	return !(p->flags & SCAN_MIME_P_TEXT);
}

static void
av_part_begin(void *ctx, const struct scan_mime_part *p)
{
	struct srv_conn *c = ((struct srv_mime *)ctx)->c;
	c->av_collect = false;
	if (c->nomem || !av_wanted(p))
		return;
	if (c->av_nfile == SRV_AV_FILES_MAX) {
		c->av_partial = true;
		return;
	}
	if (c->av_meta == NULL) {
		c->av_meta = chunk_get(c->w);
		if (c->av_meta == NULL) {
			c->nomem = true;
			return;
		}
	}
	av_meta(c)->file[c->av_nfile++] = (struct ctl_av_file){ .off = c->av_bytes, .len = 0 };
	c->av_collect = true;
}

static void
av_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view view, const uint8_t *b,
        size_t n)
{
	struct srv_conn *c = ((struct srv_mime *)ctx)->c;
	if (view != SCAN_MIME_DECODED || !c->av_collect || c->nomem)
		return;
	uint64_t room = c->w->srv->av_max_bytes - c->av_bytes;
	if (n > room) {
		n = (size_t)room;
		c->av_partial = true;
	}
	if (n == 0)
		return;
	if (!chunks_append(c->w, &c->av_head, &c->av_tail, b, n)) {
		c->nomem = true;
		return;
	}
	c->av_bytes += n;
	av_meta(c)->file[c->av_nfile - 1].len += n;
}

static void
av_part_end(void *ctx, const struct scan_mime_end *e)
{
	((struct srv_mime *)ctx)->c->av_collect = false;
}

static const struct scan_mime_sink av_sink = {
	.part_begin = av_part_begin,
	.body = av_body,
	.part_end = av_part_end,
};

/* A parser from the worker's pool (allocated while it warms up), reset. */
static struct srv_mime *
mime_get(struct srv_worker *w)
{
	struct srv_mime *m = w->free_mimes;
	if (m != NULL) {
		w->free_mimes = m->next;
		return m;
	}
	if (w->nmimes >= SRV_MIMES_MAX)
		return NULL;
	m = malloc(sizeof(*m));
	if (m == NULL)
		return NULL;
	scan_mime_init(&m->m, NULL, &av_sink, m);
	w->nmimes++;
	return m;
}

static void
mime_put(struct srv_worker *w, struct srv_mime *m)
{
	scan_mime_reset(&m->m);
	m->c = NULL;
	m->next = w->free_mimes;
	w->free_mimes = m;
}

/* ---- SMTP hooks -------------------------------------------------------- */

static void post_done(struct srv_conn *c);

static void
rbl_done(struct ctl_rbl_req *q)
{
	post_done(q->ctx);
}

/* The lists' answer as the connect hook's: a listed client gets 554 (then
 * only QUIT, RFC 5321 3.1), one that a list could have refused but that
 * list could not be asked 421 and the close. */
static int
rbl_answer(struct srv_conn *c, struct smtp_reply *r)
{
	const struct ctl_rbl_req *q = &c->rbl;
	struct ctl_rbl *rbl = c->w->srv->rbl;
	const struct smtp_conn_info *ci = smtp_session_info(conn_sess(c));
	char zones[512];

	c->rbl_asked = true;
	switch (q->verdict) {
	case CTL_RBL_LISTED:
		ctl_rbl_zones_str(rbl, q->listed, zones, sizeof(zones));
		urcu_memb_read_lock();
		uint64_t hold = rcu_dereference(c->w->srv->pol)->rbl_tarpit_ms;
		urcu_memb_read_unlock();
		ctl_log(CTL_LOG_INFO, "event=rbl_reject worker=%u client=%s score=%.2f zones=%s cached=%d "
		        "tarpit_ms=%llu", c->w->id, ci->peer_str, q->score, zones, q->cached,
		        (unsigned long long)hold);
		if (hold > 0) {
			/* held: the session's buffers and a timer, nothing else */
			r->hold_ms = (uint32_t)hold;
			c->tarpit = true;
			c->w->ntarpit++;
			ctr_add(&c->w->m.tarpit, 1);
			atomic_store_explicit(&c->w->m.tarpit_open, c->w->ntarpit, memory_order_relaxed);
		}
		r->code = 554;
		snprintf(r->enh, sizeof(r->enh), "5.7.1");
		/* as much of the zone list as fits: the log line has it all */
		snprintf(r->text, sizeof(r->text), "Service unavailable; client [%s] blocked using ",
		         ci->peer_str);
		size_t k = strlen(r->text), zl = strlen(zones);
		if (zl > sizeof(r->text) - 1 - k)
			zl = sizeof(r->text) - 1 - k;
		memcpy(r->text + k, zones, zl);
		r->text[k + zl] = '\0';
		return SMTP_HOOK_REPLY;
	case CTL_RBL_TEMPFAIL:
		ctl_rbl_zones_str(rbl, q->failed, zones, sizeof(zones));
		ctl_log(CTL_LOG_WARN, "event=rbl_tempfail worker=%u client=%s score=%.2f failed=%s",
		        c->w->id, ci->peer_str, q->score, zones);
		r->code = 421;
		snprintf(r->enh, sizeof(r->enh), "4.7.0");
		snprintf(r->text, sizeof(r->text), "%s DNS block list lookup failed, try again later",
		         c->w->srv->smtp.hostname);
		r->close = true;
		return SMTP_HOOK_REPLY;
	case CTL_RBL_PASS:
	case CTL_RBL_SKIPPED:
		break;
	}
	return SMTP_HOOK_OK;
}

static const char *
rbl_name(const struct srv_conn *c)
{
	if (!c->rbl_asked)
		return "-";
	switch (c->rbl.verdict) {
	case CTL_RBL_LISTED: return "listed";
	case CTL_RBL_TEMPFAIL: return "tempfail";
	case CTL_RBL_SKIPPED: return "skipped";
	case CTL_RBL_PASS: break;
	}
	return "pass";
}

static int
hook_connect(void *ctx, struct smtp_session *s, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	if (c->w->nconn > c->w->srv->cfg->connections_max) {
		ctr_add(&c->w->m.conns_refused, 1);
		r->code = 421;
		snprintf(r->enh, sizeof(r->enh), "4.7.0");
		snprintf(r->text, sizeof(r->text), "%s Error: too many connections, try again later",
		         c->w->srv->smtp.hostname);
		r->close = true;
		return SMTP_HOOK_REPLY;
	}
	struct ctl_rbl *rbl = c->w->srv->rbl;
	struct ctl_limits *lim = c->w->srv->lim;
	const struct smtp_conn_info *ci = smtp_session_info(s);
	c->has_addr = ctl_addr16((const struct sockaddr *)&ci->peer, c->addr);
	if (lim != NULL && c->has_addr) {
		if (!ctl_limits_conn_take(lim, c->addr)) {
			ctr_add(&c->w->m.lim_conns, 1);
			ctl_log(CTL_LOG_INFO, "event=limit_connections worker=%u client=%s max=%u", c->w->id,
			        ci->peer_str, c->w->srv->cfg->lim_conns_per_client);
			r->code = 421;
			snprintf(r->enh, sizeof(r->enh), "4.7.0");
			snprintf(r->text, sizeof(r->text), "%s Error: too many connections from [%s], try "
			         "again later", c->w->srv->smtp.hostname, ci->peer_str);
			r->close = true;
			return SMTP_HOOK_REPLY;
		}
		c->limit_taken = true;
	}
	if (rbl == NULL || !c->has_addr)
		return SMTP_HOOK_OK;
	memcpy(c->rbl.addr, c->addr, 16);
	c->rbl.done = rbl_done;
	c->rbl.ctx = c;
	if (ctl_rbl_check(rbl, &c->rbl) == 0)
		return rbl_answer(c, r);
	c->rbl_stage = true;
	c->inflight = true;
	c->w->inflight++;
	return SMTP_HOOK_PENDING;
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

static void
gl_done(struct ctl_gl_req *q)
{
	post_done(q->ctx);
}

/* The greylist's answer as the RCPT hook's. */
static int
gl_answer(struct srv_conn *c, struct smtp_reply *r)
{
	const struct ctl_gl_req *q = &c->gl;
	const struct smtp_conn_info *ci = smtp_session_info(conn_sess(c));
	char from[300], to[300];
	switch (q->verdict) {
	case CTL_GL_GREY:
		ctr_add(&c->w->m.gl_grey, 1);
		ctl_log(CTL_LOG_INFO, "event=greylisted worker=%u client=%s from=%s to=%s wait_s=%llu",
		        c->w->id, ci->peer_str, ctl_log_value(from, sizeof(from), q->sender),
		        ctl_log_value(to, sizeof(to), q->rcpt), (unsigned long long)q->wait_s);
		r->code = 451;
		snprintf(r->enh, sizeof(r->enh), "4.7.1");
		snprintf(r->text, sizeof(r->text), "Greylisted, try again in %llu seconds",
		         (unsigned long long)(q->wait_s ? q->wait_s : 1));
		return SMTP_HOOK_REPLY;
	case CTL_GL_ERROR:
		ctr_add(&c->w->m.gl_error, 1);
		if (c->w->srv->cfg->gl_on_error == 0)
			return SMTP_HOOK_OK;  /* greylisting fails open */
		r->code = 451;
		snprintf(r->enh, sizeof(r->enh), "4.3.0");
		snprintf(r->text, sizeof(r->text), "Greylisting unavailable, try again later");
		return SMTP_HOOK_REPLY;
	case CTL_GL_PASS:
	case CTL_GL_SKIPPED:
		break;
	}
	return SMTP_HOOK_OK;
}

/* The greylist step of RCPT (after the domain and verification steps). */
static int
rcpt_greylist(struct srv_conn *c, struct smtp_session *s, const struct smtp_txn *t,
              const char *rcpt, struct smtp_reply *r)
{
	struct ctl_greylist *g = c->w->srv->gl;
	const struct smtp_conn_info *ci = smtp_session_info(s);
	uint8_t a[16];
	if (g == NULL || !ctl_addr16((const struct sockaddr *)&ci->peer, a))
		return SMTP_HOOK_OK;
	urcu_memb_read_lock();
	const struct ctl_config *pol = rcu_dereference(c->w->srv->pol);
	bool allowed = ctl_access_match(pol->acc[1], pol->nacc[1], t->mail_from) ||
	               ctl_access_match(pol->acc[3], pol->nacc[3], rcpt);
	urcu_memb_read_unlock();
	if (allowed)
		return SMTP_HOOK_OK;  /* access.*_allow: never greylisted */
	ctl_greylist_req_init(&c->gl, a, t->mail_from, rcpt);
	c->gl.done = gl_done;
	c->gl.ctx = c;
	if (ctl_greylist_check(g, &c->gl) == 0)
		return gl_answer(c, r);
	c->gl_stage = true;
	c->inflight = true;
	c->w->inflight++;
	return SMTP_HOOK_PENDING;
}

static void
vfy_done(struct ctl_vfy_req *q)
{
	post_done(q->ctx);
}

/*
 * RCPT: the domain must be one of recipients.domains (550 5.7.1 else: an
 * MX takes mail for its own domains only), then the backend is asked
 * (recipients.verify), then the greylist; each later step only for a
 * recipient the earlier ones let through.
 */
static int
hook_rcpt(void *ctx, struct smtp_session *s, const struct smtp_txn *t, const struct smtp_rcpt *rc,
          struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	struct ctl_server *srv = c->w->srv;
	urcu_memb_read_lock();
	const struct ctl_config *pol = rcu_dereference(srv->pol);
	bool ours = ctl_domain_listed((const char *const *)pol->rcpt_domains, pol->rcpt_ndomains,
	                              rc->addr);
	bool denied = ctl_access_match(pol->acc[2], pol->nacc[2], rc->addr);
	urcu_memb_read_unlock();
	if (!ours) {
		r->code = 550;
		snprintf(r->enh, sizeof(r->enh), "5.7.1");
		snprintf(r->text, sizeof(r->text), "<%.120s>: Relay access denied", rc->addr);
		return SMTP_HOOK_REPLY;
	}
	if (denied) {
		r->code = 550;
		snprintf(r->enh, sizeof(r->enh), "5.7.1");
		snprintf(r->text, sizeof(r->text), "<%.120s>: Recipient address rejected: Access denied",
		         rc->addr);
		return SMTP_HOOK_REPLY;
	}
	if (srv->vfy != NULL) {
		snprintf(c->vfy.rcpt, sizeof(c->vfy.rcpt), "%s", rc->addr);
		c->vfy.done = vfy_done;
		c->vfy.ctx = c;
		c->vfy_stage = true;
		c->inflight = true;
		c->w->inflight++;
		ctl_verify_check(srv->vfy, &c->vfy);
		return SMTP_HOOK_PENDING;
	}
	return rcpt_greylist(c, s, t, rc->addr, r);
}

static int
hook_mail(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;
	struct ctl_limits *lim = c->w->srv->lim;
	urcu_memb_read_lock();
	const struct ctl_config *pol = rcu_dereference(c->w->srv->pol);
	bool denied = ctl_access_match(pol->acc[0], pol->nacc[0], t->mail_from);
	urcu_memb_read_unlock();
	if (denied) {
		ctl_log(CTL_LOG_INFO, "event=sender_denied worker=%u client=%s",
		        c->w->id, smtp_session_info(s)->peer_str);
		r->code = 550;
		snprintf(r->enh, sizeof(r->enh), "5.7.1");
		snprintf(r->text, sizeof(r->text), "<%.120s>: Sender address rejected: Access denied",
		         t->mail_from);
		return SMTP_HOOK_REPLY;
	}
	if (lim != NULL && c->has_addr && !ctl_limits_msg_take(lim, c->addr, (uint64_t)time(NULL))) {
		const struct smtp_conn_info *ci = smtp_session_info(s);
		ctr_add(&c->w->m.lim_msgs, 1);
		ctl_log(CTL_LOG_INFO, "event=limit_messages worker=%u client=%s max_per_minute=%u",
		        c->w->id, ci->peer_str, c->w->srv->cfg->lim_msgs_per_minute);
		r->code = 450;
		snprintf(r->enh, sizeof(r->enh), "4.7.1");
		snprintf(r->text, sizeof(r->text), "Error: too many messages from [%s], slow down",
		         ci->peer_str);
		return SMTP_HOOK_REPLY;
	}
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
	if (c->w->srv->av != NULL) {
		av_clear(c);
		c->av_result = "-";
		c->av_ms = 0;
		c->mime = mime_get(c->w);
		if (c->mime == NULL) {
			r->code = 452;
			snprintf(r->enh, sizeof(r->enh), "4.3.1");
			snprintf(r->text, sizeof(r->text), "Insufficient system storage, try again later");
			return SMTP_HOOK_REPLY;
		}
		c->mime->c = c;
	}
	if (c->w->flt != NULL) {
		int err = 0;
		c->flt = ctl_filter_begin(c->w->flt, &err);
		if (c->flt == NULL) {
			r->code = err == -EAGAIN ? 451 : 452;
			snprintf(r->enh, sizeof(r->enh), err == -EAGAIN ? "4.7.1" : "4.3.1");
			snprintf(r->text, sizeof(r->text), "%s", err == -EAGAIN
			         ? "Content filter not ready, try again later"
			         : "Insufficient system storage, try again later");
			return SMTP_HOOK_REPLY;
		}
	}
	return SMTP_HOOK_OK;
}

static void
hook_data(void *ctx, struct smtp_session *s, const uint8_t *p, size_t n)
{
	struct srv_conn *c = ctx;
	msg_append(c, p, n);
	if (c->mime != NULL)
		scan_mime_feed(&c->mime->m, p, n);
	if (c->flt != NULL)
		ctl_filter_feed(c->flt, p, n);
}

/* Completions from other threads: onto the worker's queue, then a wake. */
static void
post_done(struct srv_conn *c)
{
	cds_wfcq_node_init(&c->done_node);
	cds_wfcq_enqueue(&c->w->done_head, &c->w->done_tail, &c->done_node);
	dp_worker_wake(c->w->dpw);
}

static void
spool_done(struct ctl_msg *m, int err)
{
	struct srv_conn *c = m->ctx;
	c->spool_err = err;
	post_done(c);
}

static void
av_done(struct ctl_av_req *q)
{
	post_done(q->ctx);
}

/* The message (with its Received header) to the spool: PENDING until the
 * group commit, or REPLY with r filled (and the message dropped). */
static int
spool_submit(struct srv_conn *c, struct smtp_session *s, const struct smtp_txn *t,
             struct smtp_reply *r)
{
	struct srv_worker *w = c->w;
	const struct smtp_conn_info *ci = smtp_session_info(s);
	const char *qid = c->msg.env.qid;

	build_received(c, t, qid);

	/* iovec array in a chunk of its own: header + one entry per chunk. */
	unsigned nchunks = 0;
	for (struct srv_chunk *ch = c->head; ch != NULL; ch = ch->next)
		nchunks++;
	c->iovs = chunk_get(w);
	if (c->iovs == NULL || (nchunks + 4) * sizeof(struct iovec) > sizeof(c->iovs->data)) {
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
	if (c->flt != NULL)  /* X-Spam-* headers after Received, the subject tag */
		i = ctl_filter_splice(c->flt, iov, i, (unsigned)(sizeof(c->iovs->data) / sizeof(*iov)));

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

/* The attachments to the scan pool: PENDING until its verdict, or REPLY
 * 451 4.7.1 with r filled when it cannot take them now. */
static int
av_submit(struct srv_conn *c, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct srv_worker *w = c->w;
	struct srv_av_meta *meta = av_meta(c);
	unsigned n = 0;
	for (struct srv_chunk *ch = c->av_head; ch != NULL && n < SRV_AV_SPANS_MAX; ch = ch->next, n++) {
		meta->span[n].iov_base = ch->data;
		meta->span[n].iov_len = ch->len;
	}
	struct ctl_av_req *q = &meta->req;
	q->span = meta->span;
	q->nspan = n;
	q->file = meta->file;
	q->nfile = c->av_nfile;
	q->done = av_done;
	q->ctx = c;
	int rc = ctl_av_submit(w->srv->av, q);
	if (rc == 0) {
		c->inflight = true;
		c->av_stage = true;
		w->inflight++;
		return SMTP_HOOK_PENDING;
	}
	c->av_result = rc == -EAGAIN ? "unavailable" : rc == -ENOBUFS ? "busy" : "error";
	r->code = 451;
	snprintf(r->enh, sizeof(r->enh), "4.7.1");
	snprintf(r->text, sizeof(r->text), "%s",
	         rc == -EAGAIN ? "Virus scanner not ready, try again later"
	         : rc == -ENOBUFS ? "Virus scanner busy, try again later"
	                          : "Virus scanner unavailable, try again later");
	log_txn(c, t, c->msg.env.qid, "tempfail", "4.7.1",
	        rc == -EAGAIN ? "av_unavailable: no engine loaded"
	        : rc == -ENOBUFS ? "av_busy: scan queue full" : "av_error: scanner stopping", 0);
	msg_clear(c);
	return SMTP_HOOK_REPLY;
}

/* The content filter's verdict: OK to go on (accept, tag, quarantine), or
 * REPLY with r filled (reject 550 5.7.1, tempfail 451 4.7.1). */
static int
filter_verdict(struct srv_conn *c, const struct smtp_txn *t, struct smtp_reply *r)
{
	const struct ctl_filter_result *v = ctl_filter_end(c->flt);
	c->msg.env.quarantine = v->action == SCAN_ACT_QUARANTINE;
	if (v->smtp_code < 400)
		return SMTP_HOOK_OK;
	char why[64];
	snprintf(why, sizeof(why), "%s: score %.1f", v->failed ? "filter_failed" : "spam", v->score);
	r->code = v->smtp_code;
	snprintf(r->enh, sizeof(r->enh), "%s", v->smtp_enh);
	snprintf(r->text, sizeof(r->text), "%s", v->smtp_text);
	log_txn(c, t, c->msg.env.qid, v->smtp_code >= 500 ? "rejected" : "tempfail", v->smtp_enh, why, 0);
	msg_clear(c);
	return SMTP_HOOK_REPLY;
}

static int
hook_data_end(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct srv_conn *c = ctx;

	if (c->mime != NULL) {
		scan_mime_finish(&c->mime->m);
		mime_put(c->w, c->mime);
		c->mime = NULL;
	}
	if (c->nomem) {
		msg_clear(c);
		r->code = 452;
		snprintf(r->enh, sizeof(r->enh), "4.3.1");
		snprintf(r->text, sizeof(r->text), "Insufficient system storage, try again later");
		log_txn(c, t, c->msg.env.qid, "tempfail", "4.3.1", "out of message buffers", 0);
		return SMTP_HOOK_REPLY;
	}
	if (c->flt != NULL && filter_verdict(c, t, r) != SMTP_HOOK_OK)
		return SMTP_HOOK_REPLY;
	if (c->av_bytes > 0)
		return av_submit(c, t, r);
	if (c->w->srv->av != NULL)
		c->av_result = "none";
	return spool_submit(c, s, t, r);
}

static void
hook_data_abort(void *ctx, struct smtp_session *s, const struct smtp_txn *t, enum smtp_event why)
{
	struct srv_conn *c = ctx;
	if (c->inflight)
		return;  /* the scanner or the spool has it; the completion cleans up */
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
	if (srv->flt != NULL && (w->flt = ctl_filter_worker_new(srv->flt, id)) == NULL)
		abort();  /* start-up only */
	if (srv->flt == NULL) {
		/* the policy, the DNS lists' and the greylist's caches are
		 * read under the memb read lock (the filter registers itself) */
		urcu_memb_register_thread();
		w->rcu_own = true;
	}
	if (id < SRV_WORKERS_MAX)
		atomic_store(&srv->workers[id], w);
	return w;
}

/* Answer the parked end of data and let the session go on. */
static void
resume(struct srv_conn *c, const struct smtp_reply *r)
{
	struct smtp_session *s = conn_sess(c);
	smtp_session_resume(s, r, now_ms(c->w));
	if (smtp_session_status(s) & SMTP_ST_CLOSE) {
		dp_conn_close(c->dc);
	} else {
		dp_conn_timer(c->dc, smtp_session_deadline(s));
		dp_conn_rx_resume(c->dc);
	}
}

/* The scan pool's verdict: CLEAN goes on to the spool (parked still),
 * VIRUS is refused, anything else is a temporary failure. */
static void
av_finished(struct srv_conn *c)
{
	struct srv_worker *w = c->w;
	struct smtp_session *s = conn_sess(c);
	const struct smtp_txn *t = smtp_session_txn(s);
	const struct ctl_av_req *q = &av_meta(c)->req;
	const char *qid = c->msg.env.qid;
	char why[CTL_AV_NAME_MAX + 32];
	struct smtp_reply r = { 0 };

	c->inflight = false;
	c->av_stage = false;
	w->inflight--;
	c->av_result = ctl_av_verdict_name(q->verdict);
	c->av_ms = q->scan_ms;
	if (q->verdict == CTL_AV_VIRUS) {
		snprintf(why, sizeof(why), "virus:%s", q->name);
		r.code = 554;
		snprintf(r.enh, sizeof(r.enh), "5.7.1");
		snprintf(r.text, sizeof(r.text), "Virus found: %s", q->name);
		log_txn(c, t, qid, "rejected", "5.7.1", why, 0);
	} else if (q->verdict != CTL_AV_CLEAN) {
		snprintf(why, sizeof(why), "av_%s: %s", c->av_result, q->name);
		r.code = 451;
		snprintf(r.enh, sizeof(r.enh), "4.7.1");
		snprintf(r.text, sizeof(r.text), "%s",
		         q->verdict == CTL_AV_TIMEOUT ? "Virus scan timed out, try again later"
		         : q->verdict == CTL_AV_UNAVAILABLE ? "Virus scanner not ready, try again later"
		                                            : "Virus scan failed, try again later");
		log_txn(c, t, qid, "tempfail", "4.7.1", why, 0);
	} else if (c->dc == NULL) {
		/* Never told 250: the client sends it again. */
		log_txn(c, t, qid, "tempfail", "-", "client gone during the virus scan", 0);
	}
	if (c->dc == NULL) {
		conn_free(c);
		return;
	}
	if (q->verdict == CTL_AV_CLEAN) {
		/* The attachments are done with (their counts stay for the
		 * log line); the message goes on. */
		chunk_put_list(w, c->av_head);
		chunk_put_list(w, c->av_meta);
		c->av_head = c->av_tail = c->av_meta = NULL;
		if (spool_submit(c, s, t, &r) == SMTP_HOOK_PENDING)
			return;
	} else {
		msg_clear(c);
	}
	resume(c, &r);
}

/* The resolver's answer for a session parked at connect. */
/* A parked session's answer is back: not in flight any more. false when
 * the client went away meanwhile (c is freed then). */
static bool
stage_back(struct srv_conn *c)
{
	c->inflight = false;
	c->w->inflight--;
	if (c->dc == NULL) {
		conn_free(c);
		return false;
	}
	return true;
}

static void
rbl_finished(struct srv_conn *c)
{
	c->rbl_stage = false;
	if (!stage_back(c))
		return;  /* gone while the lists were asked */
	struct smtp_reply r = { 0 };
	resume(c, rbl_answer(c, &r) == SMTP_HOOK_REPLY ? &r : NULL);
}

/* The backend's answer for a session parked at RCPT: refused, or on to
 * the greylist. */
static void
vfy_finished(struct srv_conn *c)
{
	c->vfy_stage = false;
	if (!stage_back(c))
		return;
	struct smtp_reply r = { 0 };
	const struct ctl_vfy_req *q = &c->vfy;
	if (q->code != 250) {
		r.code = q->code;
		snprintf(r.enh, sizeof(r.enh), "%s", q->enh);
		snprintf(r.text, sizeof(r.text), "%s", q->text);
		if (q->code / 100 == 5)
			ctl_log(CTL_LOG_INFO, "event=rcpt_unknown worker=%u rcpt=%s cached=%d reply=\"%u %s\"",
			        c->w->id, q->rcpt, q->cached, q->code, q->enh);
		resume(c, &r);
		return;
	}
	struct smtp_session *s = conn_sess(c);
	int res = rcpt_greylist(c, s, smtp_session_txn(s), q->rcpt, &r);
	if (res == SMTP_HOOK_PENDING)
		return;  /* parked still, now for the greylist */
	resume(c, res == SMTP_HOOK_REPLY ? &r : NULL);
}

/* The greylist's answer for a session parked at RCPT. */
static void
gl_finished(struct srv_conn *c)
{
	c->gl_stage = false;
	if (!stage_back(c))
		return;
	struct smtp_reply r = { 0 };
	resume(c, gl_answer(c, &r) == SMTP_HOOK_REPLY ? &r : NULL);
}

static void
drain_done(struct srv_worker *w)
{
	struct cds_wfcq_node *node;
	while ((node = __cds_wfcq_dequeue_blocking(&w->done_head, &w->done_tail)) != NULL) {
		struct srv_conn *c = (struct srv_conn *)((char *)node - offsetof(struct srv_conn, done_node));
		if (c->rbl_stage) {
			rbl_finished(c);
			continue;
		}
		if (c->gl_stage) {
			gl_finished(c);
			continue;
		}
		if (c->vfy_stage) {
			vfy_finished(c);
			continue;
		}
		if (c->av_stage) {
			av_finished(c);
			continue;
		}
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
		if (c->flt != NULL) {
			ctl_filter_put(w->flt, c->flt);
			c->flt = NULL;
		}
		if (c->dc == NULL) {
			conn_free(c);
			continue;
		}
		struct smtp_reply r = { 0 };
		if (c->spool_err == 0) {
			r.code = 250;
			memcpy(r.enh, "2.0.0", 6);
			struct srv_buf b = { r.text, 0, sizeof(r.text), true };
			buf_puts(&b, "Ok: queued as ");
			buf_puts(&b, qid);   /* CTL_QID_LEN: fits */
			r.text[b.n] = '\0';
		} else {
			r.code = 451;
			snprintf(r.enh, sizeof(r.enh), "4.3.0");
			snprintf(r.text, sizeof(r.text), "Error: queue file write error, try again later");
		}
		c->msg_bytes = 0;
		resume(c, &r);
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
	while (w->free_mimes != NULL) {
		struct srv_mime *m = w->free_mimes;
		w->free_mimes = m->next;
		scan_mime_fini(&m->m);
		free(m);
	}
	w->flt = ctl_filter_worker_free(w->flt);
	if (w->id < SRV_WORKERS_MAX)
		atomic_store(&w->srv->workers[w->id], NULL);
	if (w->rcu_own)
		urcu_memb_unregister_thread();
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
	ctr_add(&w->m.conns, 1);
	atomic_store_explicit(&w->m.open, w->nconn, memory_order_relaxed);
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
	atomic_store_explicit(&w->m.open, w->nconn, memory_order_relaxed);
	if (c->limit_taken)
		ctl_limits_conn_put(w->srv->lim, c->addr);
	if (c->tarpit) {
		w->ntarpit--;
		atomic_store_explicit(&w->m.tarpit_open, w->ntarpit, memory_order_relaxed);
	}
	if (ctl_log_enabled(CTL_LOG_INFO)) {
		const struct smtp_conn_info *ci = smtp_session_info(s);
		char helo[300];
		ctl_log(CTL_LOG_INFO,
		        "event=disconnect worker=%u client=%s port=%u helo=%s proxied=%d tls=%d "
		        "early_talker=%d msgs=%u errors=%u duration_ms=%llu close=%s rbl=%s",
		        w->id, ci->peer_str, ci->peer_port, ctl_log_value(helo, sizeof(helo), ci->helo),
		        ci->proxied, ci->tls, ci->early_talker, ci->transactions, ci->errors,
		        (unsigned long long)(now_ms(w) - c->t_conn),
		        err == 0 ? "server" : err == -ESHUTDOWN ? "shutdown" : "client", rbl_name(c));
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

#ifdef SLUICE_HAVE_DPDK
static void
dpdk_log(void *ctx, const char *line)
{
	(void)ctx;
	ctl_log(CTL_LOG_INFO, "%s", line);
}
#endif

struct ctl_server *
ctl_server_start(const struct ctl_config *cfg, struct ctl_spool *sp, struct ctl_av *av,
                 struct ctl_filter *flt, struct ctl_rbl *rbl, struct ctl_greylist *gl,
                 struct ctl_verify *vfy, SSL_CTX *tls, char *err, size_t errlen)
{
	struct ctl_server *srv = calloc(1, sizeof(*srv));
	if (srv == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->cfg = cfg;
	srv->spool = sp;
	srv->av = av;
	srv->flt = flt;
	srv->rbl = rbl;
	srv->gl = gl;
	srv->vfy = vfy;
	srv->pol = (struct ctl_config *)cfg;  /* not owned: the caller's */
	if ((cfg->lim_conns_per_client || cfg->lim_msgs_per_minute) &&
	    (srv->lim = ctl_limits_new(&(struct ctl_limits_conf){
	         .conns_per_client = cfg->lim_conns_per_client,
	         .msgs_per_minute = cfg->lim_msgs_per_minute,
	         .skip = cfg->lim_skip, .nskip = cfg->lim_nskip })) == NULL) {
		snprintf(err, errlen, "limits: out of memory");
		free(srv);
		return NULL;
	}
	srv->started = time(NULL);
	srv->av_max_bytes = cfg->av_max_scan_bytes;
	srv->smtp = (struct smtp_server_conf){
		.hostname = cfg->hostname,
		.banner = cfg->banner,
		.cmd_line_max = cfg->cmd_line_max,
		.text_line_max = cfg->text_line_max,
		.message_size_max = cfg->message_size_max,
		.rcpt_max = cfg->rcpt_max,
		.errors_max = cfg->errors_max,
		.junk_max = cfg->junk_max,
		.greet_pause_ms = cfg->greet_pause_ms,
		.tarpit_interval_ms = cfg->tarpit_interval_ms,
		.early_talker_reject = cfg->early_talker == 1,
		.timeout_command_ms = cfg->timeout_command_ms,
		.timeout_data_ms = cfg->timeout_data_ms,
		.timeout_tls_ms = cfg->timeout_tls_ms,
		.tls_ctx = tls,
	};
	srv->hooks = (struct smtp_hooks){
		.connect = hook_connect,
		.mail = hook_mail,
		.rcpt = hook_rcpt,
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
#ifdef SLUICE_HAVE_DPDK
	if (cfg->transport == CTL_TRANSPORT_DPDK) {
		struct dp_dpdk_conf dc = {
			.eal = cfg->dpdk_eal,
			.port = cfg->dpdk_port,
			.workers = kc.workers,
			.listen = kc.listen,
			.nlisten = kc.nlisten,
			.conn_max = cfg->dpdk_conn_max ? cfg->dpdk_conn_max : kc.conn_max,
			.buf_size = (uint32_t)cfg->dpdk_buffer_size,
			.bufs = cfg->dpdk_buffers,
			.time_wait_ms = (uint32_t)cfg->dpdk_time_wait_ms,
			.mbufs = cfg->dpdk_mbufs,
			.ring = cfg->dpdk_ring,
			.queues = cfg->dpdk_queues,
			.software_dispatch = cfg->dpdk_software_dispatch,
			.exception_tap = cfg->dpdk_exception == 1,
			.exception_iface = cfg->dpdk_exception_iface,
			.ipv4 = cfg->dpdk_address.addr,
			.netmask = cfg->dpdk_address.prefix >= 32 ? 0xffffffffu :
			           ~(0xffffffffu >> cfg->dpdk_address.prefix),
			.gateway = cfg->dpdk_gateway,
			.log = dpdk_log,
		};
		memcpy(dc.ipv6, cfg->dpdk_address6.addr, sizeof(dc.ipv6));
		dc.no_csum_offload = !cfg->dpdk_csum_offload;
		srv->dpdk = dp_dpdk_start(&dc, &srv_ops, srv, err, errlen);
		if (srv->dpdk == NULL) {
			ctl_limits_free(srv->lim);
			free(srv);
			return NULL;
		}
		return srv;
	}
#endif
	srv->kernel = dp_kernel_start(&kc, &srv_ops, srv, err, errlen);
	if (srv->kernel == NULL) {
		ctl_limits_free(srv->lim);
		free(srv);
		return NULL;
	}
	return srv;
}

void
ctl_server_reload_policy(struct ctl_server *srv, struct ctl_config *cfg)
{
	struct ctl_config *old = rcu_xchg_pointer(&srv->pol, cfg);
	bool owned = srv->pol_owned;
	srv->pol_owned = true;
	if (srv->lim != NULL)
		ctl_limits_set(srv->lim, cfg->lim_conns_per_client, cfg->lim_msgs_per_minute);
	urcu_memb_synchronize_rcu();  /* no worker reads old any more */
	if (owned) {
		ctl_config_free(old);
		free(old);
	}
}

/* Every worker's counters added up; the number of workers. */
static unsigned
metrics_sum(struct ctl_server *srv, struct srv_metrics *sum)
{
	unsigned n = 0;
	memset(sum, 0, sizeof(*sum));
	for (unsigned i = 0; i < SRV_WORKERS_MAX; i++) {
		struct srv_worker *w = atomic_load(&srv->workers[i]);
		if (w == NULL)
			continue;
		n++;
#define ADD(x) atomic_store_explicit(&sum->x, atomic_load_explicit(&sum->x, memory_order_relaxed) + \
		                     atomic_load_explicit(&w->m.x, memory_order_relaxed), memory_order_relaxed)
		ADD(conns); ADD(conns_refused); ADD(open);
		ADD(txn_accepted); ADD(txn_rejected); ADD(txn_tempfail); ADD(bytes_accepted);
		ADD(gl_grey); ADD(gl_error); ADD(tarpit); ADD(tarpit_open); ADD(lim_conns); ADD(lim_msgs);
#undef ADD
	}
	return n;
}

void
ctl_server_counts(struct ctl_server *srv, struct ctl_server_counts *out)
{
	struct srv_metrics sum;
	out->workers = metrics_sum(srv, &sum);
	out->conns_open = atomic_load_explicit(&sum.open, memory_order_relaxed);
	out->tarpit_open = atomic_load_explicit(&sum.tarpit_open, memory_order_relaxed);
	out->tarpit_total = atomic_load_explicit(&sum.tarpit, memory_order_relaxed);
}

void
ctl_server_metrics(struct ctl_server *srv, FILE *f)
{
	struct srv_metrics sum;
	unsigned n = metrics_sum(srv, &sum);
#define V(x) (unsigned long long)atomic_load_explicit(&sum.x, memory_order_relaxed)
	fprintf(f, "# HELP sluice_workers Worker threads serving SMTP.\n"
	        "# TYPE sluice_workers gauge\nsluice_workers %u\n", n);
	fprintf(f, "# HELP sluice_start_time_seconds When sluiced started (Unix time).\n"
	        "# TYPE sluice_start_time_seconds gauge\nsluice_start_time_seconds %lld\n",
	        (long long)srv->started);
	fprintf(f, "# HELP sluice_connections_total SMTP connections accepted.\n"
	        "# TYPE sluice_connections_total counter\nsluice_connections_total %llu\n", V(conns));
	fprintf(f, "# HELP sluice_connections_refused_total Connections answered 421 above "
	        "smtp.connections_max.\n# TYPE sluice_connections_refused_total counter\n"
	        "sluice_connections_refused_total %llu\n", V(conns_refused));
	fprintf(f, "# HELP sluice_connections_open SMTP connections open now.\n"
	        "# TYPE sluice_connections_open gauge\nsluice_connections_open %llu\n", V(open));
	fprintf(f, "# HELP sluice_messages_total Transactions that reached a verdict, by result.\n"
	        "# TYPE sluice_messages_total counter\n"
	        "sluice_messages_total{result=\"accepted\"} %llu\n"
	        "sluice_messages_total{result=\"rejected\"} %llu\n"
	        "sluice_messages_total{result=\"tempfail\"} %llu\n",
	        V(txn_accepted), V(txn_rejected), V(txn_tempfail));
	if (srv->gl != NULL)
		fprintf(f, "# HELP sluice_greylisted_total Recipients answered 451 by greylisting.\n"
		        "# TYPE sluice_greylisted_total counter\nsluice_greylisted_total %llu\n"
		        "# HELP sluice_greylist_errors_total Greylist checks Redis could not answer.\n"
		        "# TYPE sluice_greylist_errors_total counter\nsluice_greylist_errors_total %llu\n",
		        V(gl_grey), V(gl_error));
	fprintf(f, "# HELP sluice_limited_total Clients refused by limits.*, by limit.\n"
	        "# TYPE sluice_limited_total counter\n"
	        "sluice_limited_total{limit=\"connections_per_client\"} %llu\n"
	        "sluice_limited_total{limit=\"messages_per_minute\"} %llu\n", V(lim_conns), V(lim_msgs));
	fprintf(f, "# HELP sluice_tarpit_total Clients held in the tarpit.\n"
	        "# TYPE sluice_tarpit_total counter\nsluice_tarpit_total %llu\n"
	        "# HELP sluice_tarpit_open Clients held in the tarpit now.\n"
	        "# TYPE sluice_tarpit_open gauge\nsluice_tarpit_open %llu\n", V(tarpit), V(tarpit_open));
	fprintf(f, "# HELP sluice_accepted_bytes_total Message bytes accepted (as received).\n"
	        "# TYPE sluice_accepted_bytes_total counter\nsluice_accepted_bytes_total %llu\n",
	        V(bytes_accepted));
#undef V
}

void
ctl_server_log_stats(struct ctl_server *srv)
{
#ifdef SLUICE_HAVE_DPDK
	if (srv->dpdk != NULL) {
		dp_dpdk_stats_request(srv->dpdk);
		return;
	}
#endif
	ctl_log(CTL_LOG_INFO, "event=dp_stats transport=kernel note=\"no stack counters: the "
	        "kernel's are in /proc/net/snmp\"");
}

struct ctl_server *
ctl_server_stop(struct ctl_server *srv)
{
	if (srv == NULL)
		return NULL;
#ifdef SLUICE_HAVE_DPDK
	srv->dpdk = dp_dpdk_stop(srv->dpdk);
#endif
	srv->kernel = dp_kernel_stop(srv->kernel);
	ctl_limits_free(srv->lim);
	if (srv->pol_owned) {
		ctl_config_free(srv->pol);
		free(srv->pol);
	}
	free(srv);
	return NULL;
}
