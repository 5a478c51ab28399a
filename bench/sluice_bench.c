/*
 * sluice_bench.c - sluice-bench, the SMTP load generator; DPDK mode.
 *
 * Contract
 *   Opens SMTP sessions over the userspace TCP/IP stack (dataplane/dpdk.h,
 *   active opens through dp_worker_connect()) on one DPDK port, one worker,
 *   so that two DPDK processes (this one and sluiced) can be wired together
 *   over net_memif or net_ring and the server measured without the kernel
 *   in the way. The kernel-socket mode comes later.
 *
 *   Each session: 220 banner, EHLO, then --messages transactions of
 *   MAIL / RCPT / DATA (as one group with PIPELINING, RFC 2920, else one
 *   command per round trip; with PIPELINING the end of data travels with
 *   the next group or QUIT), then QUIT and 221. Every message carries a
 *   unique Message-ID <RUN.SEQ@sluice-bench.invalid>, SEQ counting from 0
 *   in the order the messages were started, so a test can account for each
 *   one; --ids FILE writes the SEQ of every message answered 250.
 *
 *   Bounds: --sessions in all, at most --concurrency at once; no session
 *   starts after --duration; each session is aborted after --timeout; the
 *   process stops at the latest --timeout + 5 s after --duration.
 *
 *   Output: a progress line per --progress interval on stderr, then one
 *   summary line on stdout, key=value:
 *     bench_summary sessions=... sessions_ok=... sessions_failed=...
 *     messages_sent=... accepted=... rejected=... tempfailed=... refused=...
 *     lost=... elapsed_s=... txn_per_s=... conn_per_s=... lat_ms_p50=...
 *   sent: the end of data went out; accepted/rejected/tempfailed: the reply
 *   to it was 2xx/5xx/4xx; refused: MAIL, RCPT or DATA was not accepted;
 *   lost: the end of data went out and no reply came back. Exit status 0
 *   when every session ended with 221 and every message sent was answered,
 *   1 otherwise, 2 on a usage or start-up error.
 *
 * Threads: main parses, starts the transport, prints progress; everything
 * else runs on the DPDK worker in the transport's callbacks. Counters are
 * written by the worker only (relaxed atomic stores) and read by main.
 * The worker allocates nothing: sessions come from a pool sized by
 * --concurrency, output points at templates built at start-up.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "dataplane/dpdk.h"
#include "dataplane/stack.h"
#include "dataplane/transport.h"

#define BENCH_EXPECT_MAX  8      /* replies outstanding per session */
#define BENCH_OPEN_BUDGET 64     /* connects per loop pass */
#define BENCH_LAT_BUCKETS 4096   /* 1 ms each; the last one holds the rest */
#define BENCH_SEQ_DIGITS  12
#define BENCH_HEAD_MAX    512
#define BENCH_IDS_MAX     (64u << 20) /* messages tracked one by one */

enum bench_reply {
	BENCH_R_BANNER, BENCH_R_EHLO, BENCH_R_MAIL, BENCH_R_RCPT, BENCH_R_DATA,
	BENCH_R_DOT, BENCH_R_RSET, BENCH_R_QUIT,
};

enum bench_fail {
	BENCH_F_NONE, BENCH_F_PROTOCOL, BENCH_F_TIMEOUT, BENCH_F_CLOSED,
};

/* Per message, in the ids table. */
enum { BENCH_M_SENT = 1, BENCH_M_ACCEPTED, BENCH_M_REJECTED, BENCH_M_TEMPFAILED };

struct bench_conf {
	struct sockaddr_in server;
	uint32_t local, netmask, gateway;   /* host order */
	uint64_t sessions;
	uint32_t concurrency, messages, body_size;
	bool pipelining;
	const char *eal;
	unsigned port;
	uint64_t duration_ms, timeout_ms, progress_ms;
	const char *helo, *from, *rcpt, *run_id, *ids_file;
	bool quiet;
};

struct bench_seg {
	const uint8_t *p;
	size_t n;
};

struct bench_sess {
	struct bench *b;
	struct dp_conn *c;
	struct bench_sess *next_free;
	uint8_t exp[BENCH_EXPECT_MAX];
	uint8_t exp_head, exp_n;
	/* reply parser: the code of the line being read, its column, whether it
	 * is the reply's last line (a blank after the code) */
	uint16_t code;
	uint8_t col;
	bool last_line;
	bool txn_bad, quit_ok, established;
	uint8_t fail;
	uint32_t msgs_started, msgs_done;
	uint64_t seq;                  /* the message in flight */
	uint64_t t_dot;                /* ms: its end of data went out */
	uint8_t nseg, segi;
	struct bench_seg seg[3];
	uint8_t head[BENCH_HEAD_MAX];  /* this message's header section */
};

/* Worker-written counters, read by main. */
struct bench_ctr {
	_Atomic uint64_t opened, connect_errors, sessions_ok, sessions_failed, fail_protocol,
	                 fail_timeout, fail_closed, sent, accepted, rejected, tempfailed, refused,
	                 lost, active;
	_Atomic uint64_t t_start_us, t_end_us;
	atomic_bool finished;
};

struct bench {
	const struct bench_conf *conf;
	struct dp_worker *w;
	struct bench_sess *sess;
	struct bench_sess *free_list;
	uint64_t next_seq;
	uint64_t stop_opening_ms;      /* w->now after which no session starts */
	bool ramped;                   /* the first session got through */
	uint8_t *ids;                  /* per message: BENCH_M_*; NULL if too many */
	uint64_t nids;
	/* templates, built once */
	char ehlo[300], group[600], mail[300], rcpt[300];
	size_t ehlo_n, group_n, mail_n, rcpt_n;
	char tail_more[620], tail_last[16];
	size_t tail_more_n, tail_last_n;
	uint8_t head_tmpl[BENCH_HEAD_MAX];
	size_t head_n, head_seq_off;
	uint8_t *body;
	struct bench_ctr ctr;
	uint32_t lat[BENCH_LAT_BUCKETS];
};

#define BENCH_ADD(x, v) \
	atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (v), \
	                      memory_order_relaxed)
#define BENCH_GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

static const char S_DATA[] = "DATA\r\n", S_RSET[] = "RSET\r\n", S_QUIT[] = "QUIT\r\n";

static uint64_t
mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- output ------------------------------------------------------------- */

static bool
out_add(struct bench_sess *s, const void *p, size_t n)
{
	if (s->nseg == 3)
		return false;
	s->seg[s->nseg].p = p;
	s->seg[s->nseg].n = n;
	s->nseg++;
	return true;
}

static void
expect(struct bench_sess *s, enum bench_reply r)
{
	/* Never more than 6 (pipelined group + dot + next group): no check. */
	s->exp[(s->exp_head + s->exp_n) % BENCH_EXPECT_MAX] = (uint8_t)r;
	s->exp_n++;
}

static void
sess_fail(struct bench_sess *s, enum bench_fail why)
{
	if (s->fail == BENCH_F_NONE)
		s->fail = (uint8_t)why;
	dp_conn_abort(s->c);
}

/* Send a command; output is empty whenever a reply is awaited, since a
 * reply comes only after the stack took everything before it. */
static void
send_cmd(struct bench_sess *s, const void *p, size_t n, enum bench_reply r)
{
	if (s->segi != s->nseg) {
		sess_fail(s, BENCH_F_PROTOCOL);
		return;
	}
	s->nseg = s->segi = 0;
	out_add(s, p, n);
	expect(s, r);
}

/* The next transaction, or QUIT. */
static void
next_step(struct bench_sess *s)
{
	struct bench *b = s->b;
	if (s->msgs_started == b->conf->messages) {
		send_cmd(s, S_QUIT, sizeof(S_QUIT) - 1, BENCH_R_QUIT);
		return;
	}
	s->msgs_started++;
	if (b->conf->pipelining) {
		send_cmd(s, b->group, b->group_n, BENCH_R_MAIL);
		expect(s, BENCH_R_RCPT);
		expect(s, BENCH_R_DATA);
	} else {
		send_cmd(s, b->mail, b->mail_n, BENCH_R_MAIL);
	}
}

/* After 354: header section (with this message's sequence number), body,
 * end of data, and with PIPELINING the next group or QUIT behind it. */
static void
send_message(struct bench_sess *s)
{
	struct bench *b = s->b;
	if (s->segi != s->nseg) {
		sess_fail(s, BENCH_F_PROTOCOL);
		return;
	}
	uint64_t seq = b->next_seq++;
	s->seq = seq;
	memcpy(s->head, b->head_tmpl, b->head_n);
	uint8_t *d = s->head + b->head_seq_off + BENCH_SEQ_DIGITS;
	for (int i = 0; i < BENCH_SEQ_DIGITS; i++) {
		*--d = (uint8_t)('0' + seq % 10);
		seq /= 10;
	}
	s->nseg = s->segi = 0;
	out_add(s, s->head, b->head_n);
	out_add(s, b->body, b->conf->body_size);
	expect(s, BENCH_R_DOT);
	if (!b->conf->pipelining) {
		out_add(s, b->tail_more, 3);      /* ".\r\n" */
	} else if (s->msgs_started < b->conf->messages) {
		s->msgs_started++;
		out_add(s, b->tail_more, b->tail_more_n);
		expect(s, BENCH_R_MAIL);
		expect(s, BENCH_R_RCPT);
		expect(s, BENCH_R_DATA);
	} else {
		out_add(s, b->tail_last, b->tail_last_n);
		expect(s, BENCH_R_QUIT);
	}
	s->t_dot = dp_worker_now(b->w);
	BENCH_ADD(b->ctr.sent, 1);
	if (s->seq < b->nids)
		b->ids[s->seq] = BENCH_M_SENT;
}

static void
message_done(struct bench_sess *s, unsigned code)
{
	struct bench *b = s->b;
	uint8_t m;
	if (code / 100 == 2) {
		BENCH_ADD(b->ctr.accepted, 1);
		m = BENCH_M_ACCEPTED;
		uint64_t ms = dp_worker_now(b->w) - s->t_dot;
		b->lat[ms < BENCH_LAT_BUCKETS ? ms : BENCH_LAT_BUCKETS - 1]++;
	} else if (code / 100 == 4) {
		BENCH_ADD(b->ctr.tempfailed, 1);
		m = BENCH_M_TEMPFAILED;
	} else {
		BENCH_ADD(b->ctr.rejected, 1);
		m = BENCH_M_REJECTED;
	}
	if (s->seq < b->nids)
		b->ids[s->seq] = m;
	s->msgs_done++;
	s->t_dot = 0;
}

/* One complete reply. */
static void
on_reply(struct bench_sess *s, unsigned code)
{
	struct bench *b = s->b;
	if (s->exp_n == 0) {
		sess_fail(s, BENCH_F_PROTOCOL);  /* a reply to nothing */
		return;
	}
	enum bench_reply r = s->exp[s->exp_head];
	s->exp_head = (uint8_t)((s->exp_head + 1) % BENCH_EXPECT_MAX);
	s->exp_n--;
	switch (r) {
	case BENCH_R_BANNER:
		if (code != 220) {
			sess_fail(s, BENCH_F_PROTOCOL);
			return;
		}
		send_cmd(s, b->ehlo, b->ehlo_n, BENCH_R_EHLO);
		return;
	case BENCH_R_EHLO:
		if (code != 250) {
			sess_fail(s, BENCH_F_PROTOCOL);
			return;
		}
		next_step(s);
		return;
	case BENCH_R_MAIL:
		if (code != 250)
			s->txn_bad = true;
		else if (!b->conf->pipelining)
			send_cmd(s, b->rcpt, b->rcpt_n, BENCH_R_RCPT);
		break;
	case BENCH_R_RCPT:
		if (code != 250)
			s->txn_bad = true;
		else if (!b->conf->pipelining)
			send_cmd(s, S_DATA, sizeof(S_DATA) - 1, BENCH_R_DATA);
		break;
	case BENCH_R_DATA:
		if (code == 354 && !s->txn_bad)
			send_message(s);
		else
			s->txn_bad = true;
		break;
	case BENCH_R_DOT:
		message_done(s, code);
		if (s->exp_n == 0)
			next_step(s);
		return;
	case BENCH_R_RSET:
		next_step(s);
		return;
	case BENCH_R_QUIT:
		/* The server closes after 221 (its TIME_WAIT, not ours); the
		 * session timer closes from here if it does not. */
		s->quit_ok = code == 221;
		if (!s->quit_ok)
			sess_fail(s, BENCH_F_PROTOCOL);
		return;
	}
	/* MAIL, RCPT or DATA refused: once the group is answered, RSET and on. */
	if (s->txn_bad && s->exp_n == 0) {
		s->txn_bad = false;
		s->msgs_done++;
		BENCH_ADD(b->ctr.refused, 1);
		send_cmd(s, S_RSET, sizeof(S_RSET) - 1, BENCH_R_RSET);
	}
}

/* ---- transport callbacks ------------------------------------------------ */

static void *
b_worker_init(void *app, struct dp_worker *w, unsigned worker_id)
{
	struct bench *b = app;
	b->w = w;
	return b;
}

static void
b_worker_fini(void *worker_app)
{
}

static void *
b_accept(void *worker_app, struct dp_conn *c, const struct sockaddr *peer,
         const struct sockaddr *local, unsigned listener_flags)
{
	return NULL;  /* listens on nothing */
}

static size_t
b_recv(void *conn_app, const uint8_t *p, size_t n)
{
	struct bench_sess *s = conn_app;
	const uint8_t *end = p + n;
	while (p < end && s->fail == BENCH_F_NONE) {
		while (s->col < 4 && p < end) {
			uint8_t ch = *p++;
			if (ch == '\n') {   /* a line shorter than "NNN " */
				sess_fail(s, BENCH_F_PROTOCOL);
				return n;
			}
			if (s->col < 3) {
				if (ch < '0' || ch > '9') {
					sess_fail(s, BENCH_F_PROTOCOL);
					return n;
				}
				s->code = (uint16_t)(s->code * 10 + (ch - '0'));
			} else {
				s->last_line = ch != '-';
			}
			s->col++;
		}
		if (p == end)
			break;
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			break;
		p = nl + 1;
		unsigned code = s->code;
		s->code = 0;
		s->col = 0;
		if (s->last_line)
			on_reply(s, code);
	}
	return n;
}

static size_t
b_pull(void *conn_app, const uint8_t **p)
{
	struct bench_sess *s = conn_app;
	if (!s->established) {
		s->established = true;
		struct bench *b = s->b;
		if (!b->ramped) {
			b->ramped = true;
			atomic_store_explicit(&b->ctr.t_start_us, mono_us(), memory_order_relaxed);
			if (b->conf->duration_ms != UINT64_MAX)
				b->stop_opening_ms = dp_worker_now(b->w) + b->conf->duration_ms;
		}
	}
	if (s->segi == s->nseg)
		return 0;
	*p = s->seg[s->segi].p;
	return s->seg[s->segi].n;
}

static void
b_sent(void *conn_app, size_t n)
{
	struct bench_sess *s = conn_app;
	while (n > 0 && s->segi < s->nseg) {
		struct bench_seg *g = &s->seg[s->segi];
		size_t k = n < g->n ? n : g->n;
		g->p += k;
		g->n -= k;
		n -= k;
		if (g->n == 0)
			s->segi++;
	}
}

static void
b_timer(void *conn_app)
{
	struct bench_sess *s = conn_app;
	if (s->quit_ok)
		dp_conn_close(s->c);
	else
		sess_fail(s, BENCH_F_TIMEOUT);
}

static void
b_closed(void *conn_app, int err)
{
	struct bench_sess *s = conn_app;
	struct bench *b = s->b;
	if (s->t_dot != 0) {
		BENCH_ADD(b->ctr.lost, 1);   /* end of data sent, never answered */
		s->t_dot = 0;
	}
	bool ok = s->fail == BENCH_F_NONE && s->quit_ok && s->msgs_done == b->conf->messages;
	if (ok) {
		BENCH_ADD(b->ctr.sessions_ok, 1);
	} else {
		BENCH_ADD(b->ctr.sessions_failed, 1);
		switch (s->fail) {
		case BENCH_F_PROTOCOL: BENCH_ADD(b->ctr.fail_protocol, 1); break;
		case BENCH_F_TIMEOUT: BENCH_ADD(b->ctr.fail_timeout, 1); break;
		default: BENCH_ADD(b->ctr.fail_closed, 1); break;
		}
	}
	s->c = NULL;
	s->next_free = b->free_list;
	b->free_list = s;
	BENCH_ADD(b->ctr.active, (uint64_t)-1);
}

static bool
open_one(struct bench *b)
{
	struct bench_sess *s = b->free_list;
	if (s == NULL)
		return false;
	b->free_list = s->next_free;
	memset(s, 0, offsetof(struct bench_sess, head));
	s->b = b;
	expect(s, BENCH_R_BANNER);
	s->c = dp_worker_connect(b->w, (const struct sockaddr *)&b->conf->server, s);
	if (s->c == NULL) {
		BENCH_ADD(b->ctr.connect_errors, 1);
		s->next_free = b->free_list;
		b->free_list = s;
		return false;
	}
	dp_conn_timer(s->c, dp_worker_now(b->w) + b->conf->timeout_ms);
	BENCH_ADD(b->ctr.opened, 1);
	BENCH_ADD(b->ctr.active, 1);
	return true;
}

/* Once per loop pass: start sessions up to the concurrency, notice the end. */
static void
b_idle(void *worker_app)
{
	struct bench *b = worker_app;
	const struct bench_conf *cf = b->conf;
	if (atomic_load_explicit(&b->ctr.finished, memory_order_relaxed))
		return;
	uint64_t opened = BENCH_GET(b->ctr.opened), active = BENCH_GET(b->ctr.active);
	bool more = opened < cf->sessions && dp_worker_now(b->w) < b->stop_opening_ms;
	if (!more && active == 0) {
		atomic_store_explicit(&b->ctr.t_end_us, mono_us(), memory_order_relaxed);
		atomic_store_explicit(&b->ctr.finished, true, memory_order_release);
		return;
	}
	if (!more)
		return;
	/* One session until the path works (ARP, link): the rest would only
	 * wait for their SYN retransmissions. */
	uint64_t room = b->ramped ? cf->concurrency - active : (active == 0);
	if (room > cf->sessions - opened)
		room = cf->sessions - opened;
	if (room > BENCH_OPEN_BUDGET)
		room = BENCH_OPEN_BUDGET;
	for (uint64_t i = 0; i < room; i++)
		if (!open_one(b))
			break;
}

static void
b_wake(void *worker_app)
{
}

static const struct dp_app_ops bench_ops = {
	.worker_init = b_worker_init,
	.worker_fini = b_worker_fini,
	.accept = b_accept,
	.recv = b_recv,
	.pull = b_pull,
	.sent = b_sent,
	.timer = b_timer,
	.closed = b_closed,
	.wake = b_wake,
	.idle = b_idle,
};

/* ---- start-up ----------------------------------------------------------- */

static void
usage(FILE *f)
{
	fprintf(f,
"usage: sluice-bench --eal \"EAL ARGS\" --local A.B.C.D/LEN [options]\n"
"  SMTP load over the DPDK userspace stack (one worker, active opens).\n"
"  --eal ARGS            EAL arguments, blank-separated, e.g.\n"
"                        \"--no-huge --no-shconf -l 1 --file-prefix bench\n"
"                         --vdev=net_memif0,role=client,socket=/tmp/m.sock\"\n"
"  --port N              DPDK port id (default 0)\n"
"  --local ADDR/LEN      this side's IPv4 address and prefix length\n"
"  --gateway ADDR        next hop for a server outside the prefix\n"
"  -s, --server ADDR:PORT   the SMTP server (default 10.78.0.2:2525)\n"
"  -n, --sessions N      sessions in all (default 1000)\n"
"  -c, --concurrency N   sessions at once (default 64)\n"
"  -m, --messages N      messages per session (default 1)\n"
"  -b, --body-size N     body bytes per message (default 1024)\n"
"  --pipelining on|off   MAIL/RCPT/DATA as one group (default on)\n"
"  -d, --duration S      no session starts after S seconds (default: none)\n"
"  -t, --timeout S       a session is aborted after S seconds (default 30)\n"
"  --progress S          progress line every S seconds on stderr (default 1, 0: none)\n"
"  --helo NAME, --from ADDR, --to ADDR   envelope (defaults: bench.test,\n"
"                        sender@bench.test, rcpt@bench.test)\n"
"  --run-id ID           Message-ID left part (default: pid and time)\n"
"  --ids FILE            write the sequence number of every accepted message\n"
"  --conn-size           print the stack's bytes per connection and exit\n"
"  -q, --quiet           no EAL or stack log lines\n");
}

static int
parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, 10);
	if (errno != 0 || e == s || *e != '\0' || s[0] == '-' || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int
parse_prefix(const char *s, uint32_t *addr, uint32_t *mask)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	if (slash == NULL || (size_t)(slash - s) >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, (size_t)(slash - s));
	buf[slash - s] = '\0';
	struct in_addr a;
	uint64_t len;
	if (inet_pton(AF_INET, buf, &a) != 1 || parse_u64(slash + 1, 1, 32, &len) != 0)
		return -EINVAL;
	*addr = ntohl(a.s_addr);
	*mask = len == 32 ? UINT32_MAX : ~(UINT32_MAX >> len);
	return 0;
}

static int
parse_hostport(const char *s, struct sockaddr_in *sin)
{
	char buf[64];
	const char *colon = strrchr(s, ':');
	uint64_t port;
	if (colon == NULL || (size_t)(colon - s) >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, (size_t)(colon - s));
	buf[colon - s] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1 || parse_u64(colon + 1, 1, 65535, &port) != 0)
		return -EINVAL;
	sin->sin_port = htons((uint16_t)port);
	return 0;
}

/* Lines of printable text (none starting with a dot), exactly n bytes,
 * ending in CRLF. */
static uint8_t *
make_body(size_t n)
{
	uint8_t *p = malloc(n);
	if (p == NULL)
		return NULL;
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		size_t left = n - i;
		if (left == 2 || col == 76) {
			p[i] = '\r';
			p[++i] = '\n';
			col = 0;
			continue;
		}
		if (left == 3 && col == 0) {  /* too short for a line: widen the last */
			p[i] = 'z';
			continue;
		}
		p[i] = (uint8_t)('a' + (i * 7 + col) % 26);
		col++;
	}
	return p;
}

static int
build_templates(struct bench *b)
{
	const struct bench_conf *cf = b->conf;
	int n;
	n = snprintf(b->ehlo, sizeof(b->ehlo), "EHLO %s\r\n", cf->helo);
	if (n < 0 || (size_t)n >= sizeof(b->ehlo))
		return -E2BIG;
	b->ehlo_n = (size_t)n;
	n = snprintf(b->mail, sizeof(b->mail), "MAIL FROM:<%s>\r\n", cf->from);
	if (n < 0 || (size_t)n >= sizeof(b->mail))
		return -E2BIG;
	b->mail_n = (size_t)n;
	n = snprintf(b->rcpt, sizeof(b->rcpt), "RCPT TO:<%s>\r\n", cf->rcpt);
	if (n < 0 || (size_t)n >= sizeof(b->rcpt))
		return -E2BIG;
	b->rcpt_n = (size_t)n;
	n = snprintf(b->group, sizeof(b->group), "%s%s%s", b->mail, b->rcpt, S_DATA);
	if (n < 0 || (size_t)n >= sizeof(b->group))
		return -E2BIG;
	b->group_n = (size_t)n;
	n = snprintf(b->tail_more, sizeof(b->tail_more), ".\r\n%s", b->group);
	if (n < 0 || (size_t)n >= sizeof(b->tail_more))
		return -E2BIG;
	b->tail_more_n = (size_t)n;
	n = snprintf(b->tail_last, sizeof(b->tail_last), ".\r\n%s", S_QUIT);
	b->tail_last_n = (size_t)n;
	char zeros[BENCH_SEQ_DIGITS + 1];
	memset(zeros, '0', BENCH_SEQ_DIGITS);
	zeros[BENCH_SEQ_DIGITS] = '\0';
	n = snprintf((char *)b->head_tmpl, sizeof(b->head_tmpl),
	             "From: <%s>\r\nTo: <%s>\r\nSubject: sluice-bench\r\nMessage-ID: <%s.",
	             cf->from, cf->rcpt, cf->run_id);
	if (n < 0 || (size_t)n >= sizeof(b->head_tmpl))
		return -E2BIG;
	b->head_seq_off = (size_t)n;
	int m = snprintf((char *)b->head_tmpl + n, sizeof(b->head_tmpl) - (size_t)n,
	                 "%s@sluice-bench.invalid>\r\n\r\n", zeros);
	if (m < 0 || (size_t)(n + m) >= sizeof(b->head_tmpl))
		return -E2BIG;
	b->head_n = (size_t)(n + m);
	b->body = make_body(cf->body_size);
	return b->body != NULL ? 0 : -ENOMEM;
}

static void
log_line(void *ctx, const char *line)
{
	const struct bench_conf *cf = ctx;
	if (!cf->quiet)
		fprintf(stderr, "sluice-bench: %s\n", line);
}

static volatile sig_atomic_t interrupted;

static void
on_signal(int sig)
{
	interrupted = sig;
}

static unsigned
lat_pct(const struct bench *b, uint64_t n, double q)
{
	uint64_t want = (uint64_t)((double)n * q), seen = 0;
	for (unsigned i = 0; i < BENCH_LAT_BUCKETS; i++) {
		seen += b->lat[i];
		if (seen > want)
			return i;
	}
	return BENCH_LAT_BUCKETS - 1;
}

static void
progress(struct bench *b, double t, uint64_t *last_acc, double *last_t)
{
	uint64_t acc = BENCH_GET(b->ctr.accepted);
	double dt = t - *last_t;
	fprintf(stderr, "sluice-bench: t=%.1fs opened=%" PRIu64 " active=%" PRIu64 " ok=%" PRIu64
	        " failed=%" PRIu64 " accepted=%" PRIu64 " txn_per_s=%.0f\n", t,
	        BENCH_GET(b->ctr.opened), BENCH_GET(b->ctr.active), BENCH_GET(b->ctr.sessions_ok),
	        BENCH_GET(b->ctr.sessions_failed), acc, dt > 0 ? (double)(acc - *last_acc) / dt : 0.0);
	*last_acc = acc;
	*last_t = t;
}

int
main(int argc, char **argv)
{
	static struct bench_conf cf;
	char run_id[40];
	snprintf(run_id, sizeof(run_id), "%x%llx", (unsigned)getpid(), (unsigned long long)time(NULL));
	cf.sessions = 1000;
	cf.concurrency = 64;
	cf.messages = 1;
	cf.body_size = 1024;
	cf.pipelining = true;
	cf.duration_ms = UINT64_MAX;
	cf.timeout_ms = 30000;
	cf.progress_ms = 1000;
	cf.helo = "bench.test";
	cf.from = "sender@bench.test";
	cf.rcpt = "rcpt@bench.test";
	cf.run_id = run_id;
	parse_hostport("10.78.0.2:2525", &cf.server);
	bool have_local = false;

	enum { O_EAL = 256, O_PORT, O_LOCAL, O_GW, O_PIPE, O_PROGRESS, O_HELO, O_FROM, O_TO,
	       O_RUNID, O_IDS, O_CONNSIZE };
	static const struct option opts[] = {
		{ "eal", required_argument, NULL, O_EAL },
		{ "port", required_argument, NULL, O_PORT },
		{ "local", required_argument, NULL, O_LOCAL },
		{ "gateway", required_argument, NULL, O_GW },
		{ "server", required_argument, NULL, 's' },
		{ "sessions", required_argument, NULL, 'n' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "messages", required_argument, NULL, 'm' },
		{ "body-size", required_argument, NULL, 'b' },
		{ "pipelining", required_argument, NULL, O_PIPE },
		{ "duration", required_argument, NULL, 'd' },
		{ "timeout", required_argument, NULL, 't' },
		{ "progress", required_argument, NULL, O_PROGRESS },
		{ "helo", required_argument, NULL, O_HELO },
		{ "from", required_argument, NULL, O_FROM },
		{ "to", required_argument, NULL, O_TO },
		{ "run-id", required_argument, NULL, O_RUNID },
		{ "ids", required_argument, NULL, O_IDS },
		{ "conn-size", no_argument, NULL, O_CONNSIZE },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	uint64_t v;
	while ((o = getopt_long(argc, argv, "s:n:c:m:b:d:t:qh", opts, NULL)) != -1) {
		int bad = 0;
		switch (o) {
		case O_EAL: cf.eal = optarg; break;
		case O_PORT: bad = parse_u64(optarg, 0, 1023, &v); cf.port = (unsigned)v; break;
		case O_LOCAL: bad = parse_prefix(optarg, &cf.local, &cf.netmask); have_local = true; break;
		case O_GW: {
			struct in_addr a;
			bad = inet_pton(AF_INET, optarg, &a) == 1 ? 0 : -EINVAL;
			cf.gateway = ntohl(a.s_addr);
			break;
		}
		case 's': bad = parse_hostport(optarg, &cf.server); break;
		case 'n': bad = parse_u64(optarg, 1, UINT64_MAX / 2, &cf.sessions); break;
		case 'c': bad = parse_u64(optarg, 1, 1000000, &v); cf.concurrency = (uint32_t)v; break;
		case 'm': bad = parse_u64(optarg, 1, 1000000, &v); cf.messages = (uint32_t)v; break;
		case 'b': bad = parse_u64(optarg, 2, 64u << 20, &v); cf.body_size = (uint32_t)v; break;
		case O_PIPE:
			if (strcmp(optarg, "on") == 0)
				cf.pipelining = true;
			else if (strcmp(optarg, "off") == 0)
				cf.pipelining = false;
			else
				bad = -EINVAL;
			break;
		case 'd': bad = parse_u64(optarg, 1, 86400 * 365, &v); cf.duration_ms = v * 1000; break;
		case 't': bad = parse_u64(optarg, 1, 86400, &v); cf.timeout_ms = v * 1000; break;
		case O_PROGRESS: bad = parse_u64(optarg, 0, 3600, &v); cf.progress_ms = v * 1000; break;
		case O_HELO: cf.helo = optarg; break;
		case O_FROM: cf.from = optarg; break;
		case O_TO: cf.rcpt = optarg; break;
		case O_RUNID: cf.run_id = optarg; break;
		case O_IDS: cf.ids_file = optarg; break;
		case O_CONNSIZE:
			printf("dp_stack_conn_size=%zu flow_slot=%zu\n", dp_stack_conn_size(),
			       2 * sizeof(void *));
			return 0;
		case 'q': cf.quiet = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (bad != 0) {
			fprintf(stderr, "sluice-bench: bad value '%s' (%s)\n", optarg, argv[optind - 1]);
			return 2;
		}
	}
	if (optind != argc || cf.eal == NULL || !have_local) {
		fprintf(stderr, "sluice-bench: %s\n", optind != argc ? "unexpected arguments"
		        : cf.eal == NULL ? "--eal is required (DPDK mode is the only one so far)"
		        : "--local ADDR/LEN is required");
		usage(stderr);
		return 2;
	}
	for (const char *p = cf.run_id; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      *p == '-' || *p == '_')) {
			fprintf(stderr, "sluice-bench: --run-id: letters, digits, '-' and '_' only\n");
			return 2;
		}

	static struct bench b;
	b.conf = &cf;
	b.stop_opening_ms = UINT64_MAX;
	if (build_templates(&b) != 0) {
		fprintf(stderr, "sluice-bench: --helo/--from/--to/--run-id too long\n");
		return 2;
	}
	b.sess = calloc(cf.concurrency, sizeof(*b.sess));
	if (b.sess == NULL) {
		fprintf(stderr, "sluice-bench: out of memory for %u sessions\n", cf.concurrency);
		return 2;
	}
	for (uint32_t i = cf.concurrency; i-- > 0;) {
		b.sess[i].next_free = b.free_list;
		b.free_list = &b.sess[i];
	}
	uint64_t total = cf.sessions * cf.messages;
	if (total <= BENCH_IDS_MAX) {
		b.ids = calloc(total, 1);
		b.nids = b.ids != NULL ? total : 0;
	}
	if (cf.ids_file != NULL && b.nids == 0) {
		fprintf(stderr, "sluice-bench: --ids: at most %u messages can be tracked\n", BENCH_IDS_MAX);
		return 2;
	}

	struct dp_dpdk_conf dc = {
		.eal = cf.eal,
		.port = cf.port,
		.workers = 1,
		.listen = NULL,
		.nlisten = 0,
		/* each session may leave a TIME_WAIT behind: room for both */
		.conn_max = 2 * cf.concurrency + 64,
		.ipv4 = cf.local,
		.netmask = cf.netmask,
		.gateway = cf.gateway,
		.log = log_line,
		.log_ctx = &cf,
	};
	char err[512];
	struct dp_dpdk *d = dp_dpdk_start(&dc, &bench_ops, &b, err, sizeof(err));
	if (d == NULL) {
		fprintf(stderr, "sluice-bench: %s\n", err);
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	/* Bounds of our own, whatever the peer does: with --duration, start-up
	 * (10 s) + duration + the last sessions' timeout; always, no session
	 * through within start-up + timeout, or none ending for timeout + 10 s
	 * (every open session must have been cut by then). */
	uint64_t t0 = mono_us();
	uint64_t limit_ms = cf.duration_ms != UINT64_MAX ? 10000 + cf.duration_ms + cf.timeout_ms + 5000
	                                                  : UINT64_MAX;
	uint64_t next_progress = cf.progress_ms, last_acc = 0, last_done = 0, last_change = 0;
	double last_t = 0;
	bool timed_out = false;
	while (!atomic_load_explicit(&b.ctr.finished, memory_order_acquire) && !interrupted) {
		struct timespec nap = { 0, 20 * 1000000L };
		nanosleep(&nap, NULL);
		uint64_t el = (mono_us() - t0) / 1000;
		if (cf.progress_ms > 0 && el >= next_progress) {
			progress(&b, (double)el / 1000.0, &last_acc, &last_t);
			next_progress += cf.progress_ms;
		}
		uint64_t ended = BENCH_GET(b.ctr.sessions_ok) + BENCH_GET(b.ctr.sessions_failed);
		if (ended != last_done) {
			last_done = ended;
			last_change = el;
		}
		bool started = BENCH_GET(b.ctr.t_start_us) != 0;
		if (el > limit_ms || (!started && el > 10000 + cf.timeout_ms) ||
		    (started && el - last_change > cf.timeout_ms + 10000)) {
			timed_out = true;
			break;
		}
	}
	d = dp_dpdk_stop(d);   /* sessions still open end in closed(-ESHUTDOWN) */

	uint64_t ts = BENCH_GET(b.ctr.t_start_us), te = BENCH_GET(b.ctr.t_end_us);
	if (te == 0)
		te = mono_us();
	double elapsed = ts != 0 && te > ts ? (double)(te - ts) / 1e6 : 0.0;
	uint64_t acc = BENCH_GET(b.ctr.accepted);
	uint64_t nlat = 0, lat_max = 0;
	for (unsigned i = 0; i < BENCH_LAT_BUCKETS; i++) {
		nlat += b.lat[i];
		if (b.lat[i] != 0)
			lat_max = i;
	}
	uint64_t done = BENCH_GET(b.ctr.sessions_ok) + BENCH_GET(b.ctr.sessions_failed);
	printf("bench_summary sessions=%" PRIu64 " sessions_ok=%" PRIu64 " sessions_failed=%" PRIu64
	       " fail_protocol=%" PRIu64 " fail_timeout=%" PRIu64 " fail_closed=%" PRIu64
	       " connect_errors=%" PRIu64 " messages_sent=%" PRIu64 " accepted=%" PRIu64
	       " rejected=%" PRIu64 " tempfailed=%" PRIu64 " refused=%" PRIu64 " lost=%" PRIu64
	       " elapsed_s=%.3f txn_per_s=%.0f conn_per_s=%.0f lat_ms_p50=%u lat_ms_p99=%u"
	       " lat_ms_max=%" PRIu64 "%s%s\n",
	       done, BENCH_GET(b.ctr.sessions_ok), BENCH_GET(b.ctr.sessions_failed),
	       BENCH_GET(b.ctr.fail_protocol), BENCH_GET(b.ctr.fail_timeout),
	       BENCH_GET(b.ctr.fail_closed), BENCH_GET(b.ctr.connect_errors), BENCH_GET(b.ctr.sent),
	       acc, BENCH_GET(b.ctr.rejected), BENCH_GET(b.ctr.tempfailed), BENCH_GET(b.ctr.refused),
	       BENCH_GET(b.ctr.lost), elapsed, elapsed > 0 ? (double)acc / elapsed : 0.0,
	       elapsed > 0 ? (double)done / elapsed : 0.0, nlat ? lat_pct(&b, nlat, 0.5) : 0,
	       nlat ? lat_pct(&b, nlat, 0.99) : 0, lat_max, timed_out ? " timed_out=1" : "",
	       interrupted ? " interrupted=1" : "");
	fflush(stdout);

	int rc = 0;
	if (cf.ids_file != NULL) {
		FILE *f = fopen(cf.ids_file, "w");
		if (f == NULL) {
			fprintf(stderr, "sluice-bench: %s: %s\n", cf.ids_file, strerror(errno));
			rc = 1;
		} else {
			for (uint64_t i = 0; i < b.nids; i++)
				if (b.ids[i] == BENCH_M_ACCEPTED)
					fprintf(f, "%" PRIu64 "\n", i);
			if (fclose(f) != 0) {
				fprintf(stderr, "sluice-bench: %s: %s\n", cf.ids_file, strerror(errno));
				rc = 1;
			}
		}
	}
	bool clean = BENCH_GET(b.ctr.sessions_failed) == 0 && BENCH_GET(b.ctr.lost) == 0 &&
	             BENCH_GET(b.ctr.sessions_ok) > 0 && !timed_out && !interrupted;
	free(b.ids);
	free(b.body);
	free(b.sess);
	return rc != 0 ? rc : clean ? 0 : 1;
}
