/*
 * lmtp.c - LMTP client (RFC 2033); contract in control/lmtp.h.
 *
 * The parser is a pure function over the caller's bytes; the connection
 * wraps it with blocking socket I/O bounded by poll() deadlines, because it
 * runs on the queue thread, never on a worker.
 */
#include "control/lmtp.h"
#include "control/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"

#define LMTP_OBUF 65536
#define LMTP_IBUF 8192

/* ---- reply parser ----------------------------------------------------- */

void ctl_lmtp_rp_init(struct ctl_lmtp_rp *p)
{
	memset(p, 0, sizeof *p);
}

/* "d.d{1,3}.d{1,3}" followed by a space or the end: its length, else 0. */
static size_t status_len(const char *s, size_t n)
{
	size_t i = 0;

	if (n < 5 || (s[0] < '2' || s[0] > '5') || s[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t d = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9' && d < 3) {
			i++;
			d++;
		}
		if (d == 0)
			return 0;
		if (part == 0) {
			if (i >= n || s[i] != '.')
				return 0;
			i++;
		}
	}
	return i == n || s[i] == ' ' ? i : 0;
}

static void text_append(struct ctl_lmtp_reply *r, const char *s, size_t n, bool first)
{
	size_t o = strlen(r->text);

	if (!first && o + 1 < sizeof r->text)
		r->text[o++] = '\n';
	for (size_t i = 0; i < n && o + 1 < sizeof r->text; i++)
		r->text[o++] = s[i];
	r->text[o] = '\0';
}

/* One complete line (without its end). 1: last line, 0: more, -EBADMSG. */
static int rp_line(struct ctl_lmtp_rp *p, const char *l, size_t n)
{
	int code;

	if (n < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
	    l[2] < '0' || l[2] > '9' || (n > 3 && l[3] != ' ' && l[3] != '-'))
		return -EBADMSG;
	code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	if (p->nlines == 0) {
		memset(&p->cur, 0, sizeof p->cur);
		p->cur.code = code;
	} else if (code != p->cur.code) {
		return -EBADMSG;
	}
	if (++p->nlines > CTL_LMTP_LINES_MAX)
		return -EBADMSG;
	const char *t = n > 4 ? l + 4 : "";
	size_t tn = n > 4 ? n - 4 : 0;
	if (p->nlines == 1) {
		size_t sl = status_len(t, tn);
		/* RFC 3463: the class must agree with the reply code. */
		if (sl > 0 && sl < sizeof p->cur.status && t[0] == l[0]) {
			memcpy(p->cur.status, t, sl);
			p->cur.status[sl] = '\0';
		}
	}
	text_append(&p->cur, t, tn, p->nlines == 1);
	return n == 3 || l[3] == ' ' ? 1 : 0;
}

int ctl_lmtp_rp_feed(struct ctl_lmtp_rp *p, const char *buf, size_t n, size_t *used,
                     struct ctl_lmtp_reply *out)
{
	size_t i = 0;

	while (i < n) {
		char ch = buf[i++];
		if (ch != '\n') {
			if (p->linelen >= sizeof p->line) {
				*used = i;
				return -EBADMSG;
			}
			p->line[p->linelen++] = ch;
			continue;
		}
		size_t ln = p->linelen;
		if (ln > 0 && p->line[ln - 1] == '\r')
			ln--;
		p->linelen = 0;
		int r = rp_line(p, p->line, ln);
		if (r < 0) {
			*used = i;
			return r;
		}
		if (r == 1) {
			*out = p->cur;
			p->nlines = 0;
			*used = i;
			return 1;
		}
	}
	*used = i;
	return 0;
}

char *ctl_lmtp_reply_line(const struct ctl_lmtp_reply *r, char *out, size_t cap)
{
	size_t o;

	if (cap == 0)
		return out;
	if (r->code == 0) {
		o = (size_t)snprintf(out, cap, "%s", r->text);
	} else {
		o = (size_t)snprintf(out, cap, "%03d %s", r->code, r->text);
	}
	if (o >= cap)
		o = cap - 1;
	for (size_t i = 0; i < o; i++)
		if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
			out[i] = out[i] == '\n' ? ' ' : '?';
	/* No trailing blank: it would be stripped in transit. */
	while (o > 0 && out[o - 1] == ' ')
		out[--o] = '\0';
	return out;
}

/* ---- targets and routes ------------------------------------------------- */

int ctl_lmtp_target_parse(const char *s, struct ctl_lmtp_target *t)
{
	memset(t, 0, sizeof *t);
	if (s == NULL || strlen(s) >= sizeof t->text)
		return -EINVAL;
	snprintf(t->text, sizeof t->text, "%s", s);
	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)&t->addr;
		const char *path = s + 5;
		if (path[0] == '\0' || strlen(path) >= sizeof un->sun_path)
			return -EINVAL;
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, path, strlen(path) + 1);
		t->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
		return 0;
	}
	return ctl_parse_addr(s, &t->addr, &t->addrlen) == 0 ? 0 : -EINVAL;
}

int ctl_lmtp_route_match(const char *const *domains, size_t n, const char *rcpt)
{
	const char *at = rcpt != NULL ? strrchr(rcpt, '@') : NULL;
	const char *dom = at != NULL ? at + 1 : "";
	size_t dl = strlen(dom), best_len = 0;
	int best = -1;

	for (size_t i = 0; i < n; i++)
		if (domains[i][0] != '.' && strcasecmp(domains[i], dom) == 0)
			return (int)i;
	for (size_t i = 0; i < n; i++) {
		size_t sl = strlen(domains[i]);
		if (domains[i][0] == '.' && sl < dl + 1 && sl > best_len &&
		    strcasecmp(dom + dl - sl, domains[i]) == 0) {
			best = (int)i;
			best_len = sl;
		}
	}
	return best;
}

/* ---- connection ------------------------------------------------------- */

struct ctl_lmtp_conn {
	int fd;
	bool broken;
	bool pipelining, eightbit, smtputf8;
	uint64_t timeout_ms;
	struct ctl_lmtp_target target;
	struct ctl_lmtp_rp rp;
	char ibuf[LMTP_IBUF];
	size_t ilen, ioff;
	uint8_t *obuf;
	size_t olen;
};

static void local_err(struct ctl_lmtp_reply *r, const char *what, const struct ctl_lmtp_conn *c,
                      int err)
{
	memset(r, 0, sizeof *r);
	snprintf(r->text, sizeof r->text, "%s %s: %s", what, c->target.text, strerror(err));
}

/* Wait for ev until deadline: 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		uint64_t now = ctl_mono_ms();
		struct pollfd pfd = { .fd = fd, .events = ev };
		if (now >= deadline)
			return -ETIMEDOUT;
		int r = poll(&pfd, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return 0;
	}
}

static int flush_out(struct ctl_lmtp_conn *c)
{
	uint64_t deadline = ctl_mono_ms() + c->timeout_ms;
	size_t o = 0;

	while (o < c->olen) {
		ssize_t w = send(c->fd, c->obuf + o, c->olen - o, MSG_NOSIGNAL);
		if (w > 0) {
			o += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(c->fd, POLLOUT, deadline);
			if (r < 0)
				return r;
			continue;
		}
		return w < 0 ? -errno : -EIO;
	}
	c->olen = 0;
	return 0;
}

static int put(struct ctl_lmtp_conn *c, const void *p, size_t n)
{
	const uint8_t *s = p;

	while (n > 0) {
		size_t k = LMTP_OBUF - c->olen < n ? LMTP_OBUF - c->olen : n;
		memcpy(c->obuf + c->olen, s, k);
		c->olen += k;
		s += k;
		n -= k;
		if (c->olen == LMTP_OBUF) {
			int r = flush_out(c);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int putf(struct ctl_lmtp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int putf(struct ctl_lmtp_conn *c, const char *fmt, ...)
{
	char line[CTL_LMTP_LINE_MAX];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= sizeof line)
		return -E2BIG;
	return put(c, line, (size_t)k);
}

/* Read one reply. 0, or -errno (-EBADMSG: not LMTP; -ECONNRESET: EOF). */
static int read_reply(struct ctl_lmtp_conn *c, struct ctl_lmtp_reply *out)
{
	uint64_t deadline = ctl_mono_ms() + c->timeout_ms;

	for (;;) {
		if (c->ioff < c->ilen) {
			size_t used;
			int r = ctl_lmtp_rp_feed(&c->rp, c->ibuf + c->ioff, c->ilen - c->ioff, &used, out);
			c->ioff += used;
			if (r < 0)
				return r;
			if (r == 1)
				return 0;
		}
		c->ioff = c->ilen = 0;
		ssize_t k = recv(c->fd, c->ibuf, sizeof c->ibuf, 0);
		if (k > 0) {
			c->ilen = (size_t)k;
			continue;
		}
		if (k == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int r = wait_fd(c->fd, POLLIN, deadline);
		if (r < 0)
			return r;
	}
}

static void conn_free(struct ctl_lmtp_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->obuf);
	free(c);
}

struct ctl_lmtp_conn *ctl_lmtp_open(const struct ctl_lmtp_target *t, const char *lhlo,
                                    uint64_t timeout_ms, struct ctl_lmtp_reply *why)
{
	struct ctl_lmtp_conn *c = calloc(1, sizeof *c);
	struct ctl_lmtp_reply r;
	int rc;

	memset(why, 0, sizeof *why);
	if (c == NULL || (c->obuf = malloc(LMTP_OBUF)) == NULL) {
		free(c);
		snprintf(why->text, sizeof why->text, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	c->target = *t;
	c->timeout_ms = timeout_ms != 0 ? timeout_ms : 300000;
	ctl_lmtp_rp_init(&c->rp);
	c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		rc = -errno;
		local_err(why, "socket for", c, -rc);
		goto fail;
	}
	if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0) {
		if (errno != EINPROGRESS && errno != EAGAIN) {
			rc = -errno;
			local_err(why, "connect to", c, -rc);
			goto fail;
		}
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if ((rc = wait_fd(c->fd, POLLOUT, ctl_mono_ms() + c->timeout_ms)) < 0 ||
		    (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr != 0 &&
		     (rc = -soerr) < 0)) {
			local_err(why, "connect to", c, -rc);
			goto fail;
		}
	}
	/* Greeting, RFC 2033 4.1 / RFC 5321 4.3.1. */
	if ((rc = read_reply(c, &r)) < 0) {
		local_err(why, "greeting from", c, -rc);
		goto fail;
	}
	if (r.code != 220) {
		*why = r;
		rc = -EPROTO;
		goto fail;
	}
	if ((rc = putf(c, "LHLO %s\r\n", lhlo)) < 0 || (rc = flush_out(c)) < 0 ||
	    (rc = read_reply(c, &r)) < 0) {
		local_err(why, "LHLO to", c, -rc);
		goto fail;
	}
	if (r.code != 250) {
		*why = r;
		rc = -EPROTO;
		goto fail;
	}
	/* Keywords, one per line after the first (RFC 5321 4.1.1.1). */
	for (char *l = strchr(r.text, '\n'); l != NULL; l = strchr(l, '\n')) {
		l++;
		size_t n = strcspn(l, " \n");
		if (n == 10 && strncasecmp(l, "PIPELINING", n) == 0)
			c->pipelining = true;
		else if (n == 8 && strncasecmp(l, "8BITMIME", n) == 0)
			c->eightbit = true;
		else if (n == 8 && strncasecmp(l, "SMTPUTF8", n) == 0)
			c->smtputf8 = true;
	}
	return c;
fail:
	conn_free(c);
	errno = -rc;
	return NULL;
}

bool ctl_lmtp_usable(const struct ctl_lmtp_conn *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

	if (c->broken || c->ioff < c->ilen)
		return false;
	/* Readable while idle: EOF or an unsolicited 421. */
	return poll(&pfd, 1, 0) == 0;
}

bool ctl_lmtp_pipelining(const struct ctl_lmtp_conn *c)
{
	return c->pipelining;
}

/* The message with dot-stuffing (RFC 5321 4.5.2) and the final dot. */
static int put_data(struct ctl_lmtp_conn *c, const uint8_t *p, size_t n)
{
	size_t i = 0, start = 0;
	bool bol = true;
	int r;

	for (i = 0; i < n; i++) {
		if (bol && p[i] == '.') {
			if ((r = put(c, p + start, i - start)) < 0 || (r = put(c, ".", 1)) < 0)
				return r;
			start = i;
		}
		bol = p[i] == '\n';
	}
	if ((r = put(c, p + start, n - start)) < 0)
		return r;
	if (n > 0 && !(n >= 2 && p[n - 2] == '\r' && p[n - 1] == '\n'))
		if ((r = put(c, "\r\n", 2)) < 0)
			return r;
	return put(c, ".\r\n", 3);
}

static void set_all(struct ctl_lmtp_reply *res, uint32_t n, const uint8_t *want,
                    const struct ctl_lmtp_reply *r)
{
	for (uint32_t i = 0; i < n; i++)
		if (want == NULL || want[i])
			res[i] = *r;
}

int ctl_lmtp_send(struct ctl_lmtp_conn *c, const struct ctl_lmtp_msg *m,
                  struct ctl_lmtp_reply *res)
{
	struct ctl_lmtp_reply r, mail;
	uint8_t *ok = NULL;             /* recipients accepted at RCPT */
	uint32_t nok = 0, i = 0;
	bool need_rset = false;
	int rc;

	memset(&r, 0, sizeof r);
	local_err(&r, "no answer from", c, EPIPE);
	set_all(res, m->nrcpt, NULL, &r);
	if (c->broken)
		return -EPIPE;
	if ((ok = calloc(m->nrcpt ? m->nrcpt : 1, 1)) == NULL) {
		snprintf(r.text, sizeof r.text, "out of memory");
		set_all(res, m->nrcpt, NULL, &r);
		return -ENOMEM;
	}
	/* MAIL, every RCPT and DATA go in one write when pipelining is offered
	 * (RFC 2920 3.1: DATA is the last command of the group). */
	rc = putf(c, "MAIL FROM:<%s>%s%s\r\n", m->from,
	          m->body8bit && c->eightbit ? " BODY=8BITMIME" : "",
	          m->smtputf8 && c->smtputf8 ? " SMTPUTF8" : "");
	if (rc == 0 && !c->pipelining) {
		if ((rc = flush_out(c)) == 0 && (rc = read_reply(c, &mail)) == 0 && mail.code / 100 != 2) {
			set_all(res, m->nrcpt, NULL, &mail);
			goto out;
		}
	}
	for (i = 0; rc == 0 && i < m->nrcpt; i++) {
		rc = putf(c, "RCPT TO:<%s>\r\n", m->rcpt[i]);
		if (rc == 0 && !c->pipelining && (rc = flush_out(c)) == 0 && (rc = read_reply(c, &r)) == 0) {
			res[i] = r;
			if (r.code / 100 == 2) {
				ok[i] = 1;
				nok++;
			}
		}
	}
	if (rc < 0)
		goto out;
	if (c->pipelining) {
		if ((rc = putf(c, "DATA\r\n")) < 0 || (rc = flush_out(c)) < 0 ||
		    (rc = read_reply(c, &mail)) < 0)
			goto out;
		for (i = 0; i < m->nrcpt; i++) {
			if ((rc = read_reply(c, &r)) < 0)
				goto out;
			if (mail.code / 100 != 2) {
				res[i] = mail;      /* the MAIL failure says why */
				continue;
			}
			res[i] = r;
			if (r.code / 100 == 2) {
				ok[i] = 1;
				nok++;
			}
		}
		if ((rc = read_reply(c, &r)) < 0)   /* DATA */
			goto out;
		if (mail.code / 100 != 2)
			goto out;
		need_rset = true;
	} else {
		need_rset = true;
		if (nok == 0)
			goto out;
		if ((rc = putf(c, "DATA\r\n")) < 0 || (rc = flush_out(c)) < 0 ||
		    (rc = read_reply(c, &r)) < 0)
			goto out;
	}
	if (r.code != 354) {
		/* DATA refused: every accepted recipient shares its reply. */
		if (nok > 0)
			set_all(res, m->nrcpt, ok, &r);
		goto out;
	}
	if (nok == 0) {
		/* 354 with nobody to deliver to (RFC 2920 3.1): end it empty. */
		if ((rc = put(c, ".\r\n", 3)) < 0 || (rc = flush_out(c)) < 0 ||
		    (rc = read_reply(c, &r)) < 0)
			goto out;
		need_rset = false;
		goto out;
	}
	if ((rc = put_data(c, m->data, m->len)) < 0 || (rc = flush_out(c)) < 0)
		goto out;
	need_rset = false;
	/* RFC 2033 4.2: one reply per accepted recipient, in RCPT order. */
	for (i = 0; i < m->nrcpt; i++) {
		if (!ok[i])
			continue;
		local_err(&res[i], "no answer after data from", c, EPIPE);
		if ((rc = read_reply(c, &res[i])) < 0) {
			local_err(&res[i], "no answer after data from", c, -rc);
			for (uint32_t k = i + 1; k < m->nrcpt; k++)
				if (ok[k])
					res[k] = res[i];
			goto out;
		}
	}
out:
	if (rc == 0 && need_rset) {
		if ((rc = putf(c, "RSET\r\n")) == 0 && (rc = flush_out(c)) == 0)
			rc = read_reply(c, &r);
	}
	if (rc < 0) {
		c->broken = true;
		/* Anyone without an answer: unknown, temporary. */
		for (uint32_t k = 0; k < m->nrcpt; k++)
			if (res[k].code == 0)
				local_err(&res[k], "connection to", c, -rc);
	}
	free(ok);
	return rc;
}

int ctl_lmtp_verify(struct ctl_lmtp_conn *c, const char *rcpt, struct ctl_lmtp_reply *res)
{
	struct ctl_lmtp_reply r;
	int rc;

	local_err(res, "no answer from", c, EPIPE);
	if (c->broken)
		return -EPIPE;
	if ((rc = putf(c, "MAIL FROM:<>\r\n")) == 0 && (rc = flush_out(c)) == 0 &&
	    (rc = read_reply(c, &r)) == 0) {
		*res = r;
		if (r.code / 100 == 2 && (rc = putf(c, "RCPT TO:<%s>\r\n", rcpt)) == 0 &&
		    (rc = flush_out(c)) == 0 && (rc = read_reply(c, &r)) == 0)
			*res = r;
		if (rc == 0 && (rc = putf(c, "RSET\r\n")) == 0 && (rc = flush_out(c)) == 0)
			rc = read_reply(c, &r);
	}
	if (rc < 0) {
		c->broken = true;
		local_err(res, "connection to", c, -rc);
	}
	return rc;
}

struct ctl_lmtp_conn *ctl_lmtp_close(struct ctl_lmtp_conn *c)
{
	if (c == NULL)
		return NULL;
	if (!c->broken) {
		struct ctl_lmtp_reply r;
		c->timeout_ms = 1000;
		if (putf(c, "QUIT\r\n") == 0 && flush_out(c) == 0)
			(void)read_reply(c, &r);
	}
	conn_free(c);
	return NULL;
}
