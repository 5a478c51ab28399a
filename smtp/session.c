/*
 * session.c - the session shell: memory layout, start-up (PROXY header,
 * connect hook, greet pause), the input loop that hands bytes to the
 * command parser or the content scanner, parking and resume, timers.
 *
 * Input path: smtp_session_input -> (TLS: decrypt into hold) ->
 * smtp_process, which alternates between smtp_cmd_input (command lines)
 * and smtp_data_input (DATA/BDAT content) until the bytes are used up or
 * the session parks, closes, or has too much output queued.
 */
#include "smtp/smtp_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "smtp/proxy.h"

#define ALIGN(x, a) (((x) + ((a) - 1)) & ~((size_t)(a) - 1))

struct smtp_layout {
	size_t lbuf, out, hold, stage, rcpt, arena, total;
	uint32_t lbuf_cap, hold_cap, arena_cap, rcpt_max;
};

static void
layout(const struct smtp_server_conf *conf, struct smtp_layout *l)
{
	uint32_t cmd_max = conf->cmd_line_max ? conf->cmd_line_max : 512;
	l->rcpt_max = conf->rcpt_max ? conf->rcpt_max : 100;
	l->lbuf_cap = cmd_max > SMTP_LBUF_MIN ? cmd_max : SMTP_LBUF_MIN;
	l->hold_cap = conf->tls_ctx != NULL ? SMTP_HOLD_CAP_TLS : SMTP_HOLD_CAP;
	l->arena_cap = SMTP_ARENA_BASE + l->rcpt_max * SMTP_ARENA_PER_RCPT;
	size_t off = ALIGN(sizeof(struct smtp_session), 64);
	l->rcpt = off;
	off = ALIGN(off + (size_t)l->rcpt_max * sizeof(struct smtp_rcpt), 64);
	l->out = off;
	off = ALIGN(off + SMTP_OUT_CAP, 64);
	l->lbuf = off;
	off = ALIGN(off + l->lbuf_cap, 64);
	l->hold = off;
	off = ALIGN(off + l->hold_cap, 64);
	l->stage = off;
	if (conf->tls_ctx != NULL)
		off = ALIGN(off + SMTP_STAGE_CAP, 64);
	l->arena = off;
	off = ALIGN(off + l->arena_cap, 64);
	l->total = off;
}

size_t
smtp_session_size(const struct smtp_server_conf *conf)
{
	struct smtp_layout l;
	layout(conf, &l);
	return l.total;
}

/* Dotted quad, as inet_ntop(AF_INET) writes it, at a tenth of its cost
 * (it runs once per connection); dst holds at least 16 bytes. */
static void
ipv4_str(char *dst, uint32_t a)
{
	for (int i = 3; i >= 0; i--) {
		unsigned v = (a >> (8 * i)) & 0xff;
		if (v >= 100)
			*dst++ = (char)('0' + v / 100);
		if (v >= 10)
			*dst++ = (char)('0' + v / 10 % 10);
		*dst++ = (char)('0' + v % 10);
		*dst++ = i ? '.' : '\0';
	}
}

static void
addr_str(struct smtp_conn_info *ci)
{
	const struct sockaddr_storage *ss = &ci->peer;
	ci->peer_str[0] = '\0';
	ci->peer_port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		ipv4_str(ci->peer_str, ntohl(a->sin_addr.s_addr));
		ci->peer_port = ntohs(a->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ci->peer_str, sizeof(ci->peer_str));
		ci->peer_port = ntohs(a->sin6_port);
	}
}

static void
copy_sa(struct sockaddr_storage *dst, const struct sockaddr *sa)
{
	memset(dst, 0, sizeof(*dst));
	if (sa == NULL)
		return;
	size_t n = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	         : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
	         : sizeof(struct sockaddr);
	memcpy(dst, sa, n);
}

void
smtp_session_init(struct smtp_session *s, const struct smtp_server_conf *conf,
                  const struct smtp_hooks *hooks, void *ctx,
                  const struct sockaddr *peer, const struct sockaddr *local,
                  unsigned flags, uint64_t now)
{
	struct smtp_layout l;
	layout(conf, &l);
	memset(s, 0, sizeof(*s));
	uint8_t *base = (uint8_t *)s;
	s->conf = conf;
	s->hooks = hooks;
	s->ctx = ctx;
	s->flags = flags;
	s->mode = (flags & SMTP_SESS_PROXY) ? SMTP_M_PROXY : SMTP_M_GREET;
	s->state = SMTP_S_INIT;
	s->cmd_max = conf->cmd_line_max ? conf->cmd_line_max : 512;
	s->text_max = conf->text_line_max;
	s->rcpt_max = l.rcpt_max;
	s->size_max = conf->message_size_max;
	s->t_start = s->t_last = now;
	s->deadline = UINT64_MAX;
	s->rcpt = (struct smtp_rcpt *)(base + l.rcpt);
	s->out = base + l.out;
	s->lbuf = base + l.lbuf;
	s->lbuf_cap = l.lbuf_cap;
	s->hold = base + l.hold;
	s->hold_cap = l.hold_cap;
	s->stage = base + l.stage;
	s->arena = (char *)(base + l.arena);
	s->arena_cap = l.arena_cap;
	s->txn.mail_from = NULL;
	s->txn.rcpt = s->rcpt;
	copy_sa(&s->info.peer, peer);
	copy_sa(&s->info.local, local);
	addr_str(&s->info);
}

void
smtp_event(struct smtp_session *s, enum smtp_event ev)
{
	if (s->hooks->event != NULL)
		s->hooks->event(s->ctx, s, ev);
}

void
smtp_close(struct smtp_session *s)
{
	s->closing = true;
}

/* Forget the transaction; data_abort first if content had started. */
void
smtp_txn_reset(struct smtp_session *s, enum smtp_event why)
{
	if (s->d.started) {
		s->d.started = false;
		if (s->hooks->data_abort != NULL)
			s->hooks->data_abort(s->ctx, s, &s->txn, why);
	}
	memset(&s->txn, 0, sizeof(s->txn));
	s->txn.rcpt = s->rcpt;
	s->arena_len = 0;
	if (s->state != SMTP_S_INIT)
		s->state = SMTP_S_HELO;
	if (s->hooks->reset != NULL)
		s->hooks->reset(s->ctx, s);
}

static void
queue_banner(struct smtp_session *s)
{
	const char *h = s->conf->hostname, *b = s->conf->banner != NULL ? s->conf->banner : "ESMTP";
	char host[260];
	size_t hl = strnlen(h, 255);
	memcpy(host, h, hl);
	host[hl++] = ' ';
	s->mode = SMTP_M_CMD;
	if (s->conf->early_talker_reject && s->info.early_talker) {
		/* RFC 5321 4.3.1: a client waits for the greeting; one that
		 * did not is no MTA. Its held bytes get 503, QUIT its 221. */
		smtp_reply_parts(s, "554 5.5.1 ", 10, host, hl, "Error: talked before the greeting", 33);
		s->refused = true;
		smtp_pump(s);
		return;
	}
	smtp_reply_parts(s, "220 ", 4, host, hl, b, strnlen(b, 200));
	/* Early-talker bytes wait in hold; they are commands now. */
	smtp_pump(s);
}

/* Banner now, or at the end of the greet pause (tick). */
static void
maybe_banner(struct smtp_session *s, uint64_t now)
{
	if (s->conf->greet_pause_ms == 0 || now >= s->t_start + s->conf->greet_pause_ms)
		queue_banner(s);
}

static uint64_t
tarpit_interval(const struct smtp_session *s)
{
	return s->conf->tarpit_interval_ms ? s->conf->tarpit_interval_ms : 10000;
}

/* One continuation line of the held reply ("554-5.7.1 text"), unless the
 * client has not read the last ones (then nothing more is queued). */
static void
tarpit_line(struct smtp_session *s, uint64_t now)
{
	const struct smtp_reply *r = &s->tarpit_r;
	if (smtp_out_pending(s) < SMTP_OUT_HIWAT)
		smtp_reply_cont(s, r->code, r->enh, r->text);
	s->tarpit_next = now + tarpit_interval(s);
}

/* The hold is over: the reply's last line, then only QUIT (or the close). */
static void
tarpit_end(struct smtp_session *s)
{
	s->mode = SMTP_M_CMD;
	smtp_reply_hook(s, &s->tarpit_r, "5.7.1", false);
	s->refused = true;
}

static void
connect_answer(struct smtp_session *s, int res, struct smtp_reply *r, uint64_t now)
{
	if (res == SMTP_HOOK_OK) {
		maybe_banner(s, now);
		return;
	}
	smtp_hook_norm(r);
	if (r->code >= 400 && r->hold_ms > 0) {
		s->tarpit_r = *r;
		if (s->tarpit_r.enh[0] == '\0')
			memcpy(s->tarpit_r.enh, r->code >= 500 ? "5.7.1" : "4.7.1", 6);
		if (s->tarpit_r.text[0] == '\0')
			memcpy(s->tarpit_r.text, "Error: refused by policy", 25);
		s->tarpit_until = now + r->hold_ms;
		s->mode = SMTP_M_TARPIT;
		tarpit_line(s, now);
		return;
	}
	if (r->code < 400) {
		smtp_reply_fmt(s, 220, NULL, "%s %s", s->conf->hostname,
		               r->text[0] ? r->text : "ESMTP");
		s->mode = SMTP_M_CMD;
		smtp_pump(s);
		return;
	}
	/* RFC 5321 3.1: after a 554 greeting only QUIT is served. */
	smtp_reply_hook(s, r, "5.7.1", false);
	s->refused = true;
	s->mode = SMTP_M_CMD;
	if (!s->closing)
		smtp_pump(s);
}

static void
begin_connect(struct smtp_session *s, uint64_t now)
{
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	s->mode = SMTP_M_GREET;
	if (s->hooks->connect != NULL)
		res = s->hooks->connect(s->ctx, s, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_CONNECT;
		return;
	}
	connect_answer(s, res, &r, now);
}

static void arm(struct smtp_session *s);

void
smtp_session_start(struct smtp_session *s, uint64_t now)
{
	s->t_start = s->t_last = now;
	if (s->mode != SMTP_M_PROXY)
		begin_connect(s, now);
	arm(s);
}

/* Run plaintext through the command parser / content scanner. Returns the
 * number of octets used; stops early when parked, closing, when the output
 * is over its high-water mark, or at STARTTLS (the rest is discarded). */
size_t
smtp_process(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t pos = 0;
	while (pos < n && !s->closing && s->pend == SMTP_P_NONE) {
		uint8_t m = s->mode;
		size_t before = pos;
		if (m == SMTP_M_CMD) {
			pos += smtp_cmd_input(s, p + pos, n - pos);
		} else if (m == SMTP_M_DATA || m == SMTP_M_BDAT) {
			pos += smtp_data_input(s, p + pos, n - pos);
		} else if (m == SMTP_M_TLS_HS) {
			/* Pipelined after STARTTLS: never a command (CVE-2011-0411). */
			smtp_event(s, SMTP_EV_PLAINTEXT_DISCARDED);
			return n;
		} else {
			break;
		}
		if (s->mode == m && (m == SMTP_M_CMD || pos == before))
			break;  /* parked, closing or output full */
	}
	return pos;
}

/* Process held plaintext (early-talker bytes, decrypted input), then under
 * TLS decrypt more. false: stopped with bytes still held. */
bool
smtp_pump(struct smtp_session *s)
{
	for (;;) {
		if (s->hold_off < s->hold_len) {
			s->hold_off += (uint32_t)smtp_process(s, s->hold + s->hold_off, s->hold_len - s->hold_off);
			if (s->hold_off < s->hold_len)
				return false;
		}
		s->hold_off = s->hold_len = 0;
		if (s->ssl == NULL || !s->tls_up || s->closing || s->pend != SMTP_P_NONE)
			return true;
		if (smtp_out_pending(s) >= SMTP_OUT_HIWAT)
			return true;
		if (!smtp_tls_read(s))
			return true;
	}
}

static size_t
proxy_input(struct smtp_session *s, const uint8_t *p, size_t n, uint64_t now)
{
	struct smtp_proxy_hdr h;
	ssize_t r;
	size_t used;
	if (s->lbuf_len == 0) {
		r = smtp_proxy_parse(p, n, &h);
		if (r == 0) {
			used = n < s->lbuf_cap ? n : s->lbuf_cap;
			memcpy(s->lbuf, p, used);
			s->lbuf_len = (uint32_t)used;
			if (used < n)
				r = -1;
		} else {
			used = r > 0 ? (size_t)r : 0;
		}
	} else {
		size_t old = s->lbuf_len, room = s->lbuf_cap - old;
		size_t k = n < room ? n : room;
		memcpy(s->lbuf + old, p, k);
		s->lbuf_len += (uint32_t)k;
		r = smtp_proxy_parse(s->lbuf, s->lbuf_len, &h);
		if (r == 0 && s->lbuf_len == s->lbuf_cap)
			r = -1;
		used = r > 0 ? (size_t)r - old : k;
	}
	if (r < 0) {
		smtp_event(s, SMTP_EV_PROXY_BAD);
		smtp_close(s);
		return n;
	}
	if (r == 0)
		return used;
	s->lbuf_len = 0;
	if (!h.local) {
		s->info.peer = h.src;
		s->info.local = h.dst;
		addr_str(&s->info);
	}
	s->info.proxied = true;
	begin_connect(s, now);
	return used;
}

/* Bytes before the banner: flag the early talker, keep them for later. */
static void
flag_early(struct smtp_session *s)
{
	s->info.early_talker = true;
	if (!s->early_ev) {
		s->early_ev = true;
		smtp_event(s, SMTP_EV_EARLY_TALKER);
	}
}

static size_t
early_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	if (n > 0)
		flag_early(s);
	size_t room = s->hold_cap - s->hold_len;
	size_t k = n < room ? n : room;
	memcpy(s->hold + s->hold_len, p, k);
	s->hold_len += (uint32_t)k;
	return k;
}

static void
after_call(struct smtp_session *s)
{
	if (s->ssl != NULL)
		smtp_tls_flush(s);
	arm(s);
}

size_t
smtp_session_input(struct smtp_session *s, const uint8_t *p, size_t n, uint64_t now)
{
	size_t used = 0;
	if (s->closing || s->mode == SMTP_M_CLOSED)
		return 0;
	if (s->pend != SMTP_P_NONE && s->mode != SMTP_M_GREET)
		return 0;
	if (n > 0)
		s->t_last = now;
	if (s->mode == SMTP_M_PROXY) {
		used = proxy_input(s, p, n, now);
		if (s->closing || s->mode == SMTP_M_PROXY || s->pend != SMTP_P_NONE) {
			after_call(s);
			return used;
		}
		/* Sent in the same breath as the header, before any banner. */
		if (used < n && s->mode == SMTP_M_CMD)
			flag_early(s);
	}
	if (s->mode == SMTP_M_GREET) {
		used += early_input(s, p + used, n - used);
		after_call(s);
		return used;
	}
	if (s->mode == SMTP_M_TARPIT) {
		after_call(s);
		return n;  /* read and dropped: the client waits for the reply */
	}
	if (s->ssl != NULL) {
		if (s->hold_off < s->hold_len && !smtp_pump(s)) {
			after_call(s);
			return used;
		}
		if (!s->closing && s->pend == SMTP_P_NONE)
			used += smtp_tls_input(s, p + used, n - used);
	} else {
		if (s->hold_off < s->hold_len && !smtp_pump(s)) {
			after_call(s);
			return used;
		}
		used += smtp_process(s, p + used, n - used);
	}
	after_call(s);
	return used;
}

void
smtp_session_resume(struct smtp_session *s, const struct smtp_reply *r, uint64_t now)
{
	enum smtp_pend pend = s->pend;
	if (pend == SMTP_P_NONE)
		return;
	s->pend = SMTP_P_NONE;
	s->t_last = now;
	if (pend == SMTP_P_CONNECT) {
		struct smtp_reply rr = { 0 };
		if (r != NULL)
			rr = *r;
		connect_answer(s, r != NULL ? SMTP_HOOK_REPLY : SMTP_HOOK_OK, &rr, now);
	} else if (pend == SMTP_P_DATA_END) {
		smtp_data_end_resume(s, r);
		if (!s->closing && s->pend == SMTP_P_NONE)
			smtp_pump(s);
	} else {
		smtp_cmd_resume(s, pend, r);
		if (!s->closing && s->pend == SMTP_P_NONE)
			smtp_pump(s);
	}
	after_call(s);
}

/* The one timer a session needs, from its mode. */
static void
arm(struct smtp_session *s)
{
	const struct smtp_server_conf *c = s->conf;
	uint64_t t = 0, base = 0;
	s->timer = SMTP_T_NONE;
	s->deadline = UINT64_MAX;
	if (s->closing || s->mode == SMTP_M_CLOSED || s->pend != SMTP_P_NONE)
		return;
	switch (s->mode) {
	case SMTP_M_PROXY:
		s->timer = SMTP_T_PROXY, t = c->timeout_command_ms, base = s->t_start;
		break;
	case SMTP_M_GREET:
		s->timer = SMTP_T_GREET, t = c->greet_pause_ms, base = s->t_start;
		break;
	case SMTP_M_TLS_HS:
		s->timer = SMTP_T_TLS, t = c->timeout_tls_ms, base = s->t_tls;
		break;
	case SMTP_M_TARPIT:
		s->timer = SMTP_T_TARPIT;
		s->deadline = s->tarpit_next < s->tarpit_until ? s->tarpit_next : s->tarpit_until;
		return;
	case SMTP_M_DATA:
	case SMTP_M_BDAT:
		s->timer = SMTP_T_DATA, t = c->timeout_data_ms, base = s->t_last;
		break;
	default:
		s->timer = SMTP_T_CMD, t = c->timeout_command_ms, base = s->t_last;
		break;
	}
	if (t == 0 && s->timer != SMTP_T_GREET) {
		s->timer = SMTP_T_NONE;
		return;
	}
	s->deadline = base + t;
}

uint64_t
smtp_session_tick(struct smtp_session *s, uint64_t now)
{
	if (s->deadline == UINT64_MAX || now < s->deadline)
		return s->deadline;
	switch (s->timer) {
	case SMTP_T_GREET:
		queue_banner(s);
		break;
	case SMTP_T_PROXY:
	case SMTP_T_TLS:
		/* Nothing sensible can be said in plaintext here. */
		smtp_event(s, SMTP_EV_TIMEOUT);
		smtp_close(s);
		break;
	case SMTP_T_TARPIT:
		if (now >= s->tarpit_until)
			tarpit_end(s);
		else
			tarpit_line(s, now);
		break;
	case SMTP_T_CMD:
	case SMTP_T_DATA:
		if (s->d.started) {
			s->d.started = false;
			if (s->hooks->data_abort != NULL)
				s->hooks->data_abort(s->ctx, s, &s->txn, SMTP_EV_TIMEOUT);
		}
		smtp_reply_fmt(s, 421, "4.4.2", "%s Error: timeout exceeded", s->conf->hostname);
		smtp_event(s, SMTP_EV_TIMEOUT);
		smtp_close(s);
		break;
	default:
		break;
	}
	after_call(s);
	return s->deadline;
}

uint64_t
smtp_session_deadline(const struct smtp_session *s)
{
	return s->deadline;
}

unsigned
smtp_session_status(const struct smtp_session *s)
{
	unsigned st = 0;
	if (s->pend != SMTP_P_NONE)
		st |= SMTP_ST_PARKED;
	if (s->closing || s->mode == SMTP_M_CLOSED)
		st |= SMTP_ST_CLOSE;
	if (s->mode == SMTP_M_DATA || s->mode == SMTP_M_BDAT)
		st |= SMTP_ST_DATA;
	if (smtp_out_pending(s) >= SMTP_OUT_HIWAT ||
	    (s->hold_off < s->hold_len && s->mode != SMTP_M_GREET && s->pend == SMTP_P_NONE))
		st |= SMTP_ST_OUTFULL;
	return st;
}

const struct smtp_conn_info *
smtp_session_info(const struct smtp_session *s)
{
	return &s->info;
}

const struct smtp_txn *
smtp_session_txn(const struct smtp_session *s)
{
	return &s->txn;
}

void *
smtp_session_ctx(const struct smtp_session *s)
{
	return s->ctx;
}

void
smtp_session_fini(struct smtp_session *s)
{
	if (s->d.started) {
		s->d.started = false;
		if (s->hooks->data_abort != NULL)
			s->hooks->data_abort(s->ctx, s, &s->txn, SMTP_EV_ABORT_DISCONNECT);
	}
	if (s->ssl != NULL)
		smtp_tls_free(s);
	s->mode = SMTP_M_CLOSED;
	s->closing = true;
	s->deadline = UINT64_MAX;
}
