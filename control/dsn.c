/*
 * dsn.c - failure reports (RFC 3464 in RFC 6522 multipart/report);
 * contract in control/dsn.h.
 *
 * Everything that comes from outside (addresses, ORCPT, ENVID, server
 * replies) lands in header-like fields, so each value is reduced to
 * printable characters on one line before it is written.
 */
#include "control/dsn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_grow(struct sbuf *b, size_t need)
{
	if (b->oom || b->len + need + 1 <= b->cap)
		return;
	size_t nc = b->cap ? b->cap : 4096;
	while (nc < b->len + need + 1)
		nc *= 2;
	char *np = realloc(b->p, nc);
	if (np == NULL) {
		b->oom = true;
		return;
	}
	b->p = np;
	b->cap = nc;
}

static void sb_put(struct sbuf *b, const void *s, size_t n)
{
	sb_grow(b, n);
	if (b->oom)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[1024];
	va_list ap;
	int k;

	va_start(ap, fmt);
	k = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* A value safe on one header line: printable ASCII (UTF-8 bytes kept, for
 * SMTPUTF8 addresses), at most max bytes. */
static void sb_value(struct sbuf *b, const char *s, size_t max)
{
	size_t n = 0;

	for (; s != NULL && *s != '\0' && n < max; s++, n++) {
		unsigned char ch = (unsigned char)*s;
		char o = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
		sb_put(b, &o, 1);
	}
}

/* RFC 5322 3.3 date, C locale names. */
static void fmt_date(int64_t t, char *out, size_t cap)
{
	static const char *const day[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	snprintf(out, cap, "%s, %02d %s %04d %02d:%02d:%02d +0000", day[tm.tm_wday], tm.tm_mday,
	         mon[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bool ctl_dsn_wanted(uint8_t notify)
{
	if (notify == 0)
		return true;
	if (notify & SMTP_NOTIFY_NEVER)
		return false;
	return (notify & SMTP_NOTIFY_FAILURE) != 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int ctl_dsn_xtext_decode(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	if (cap == 0)
		return -ENOSPC;
	for (const char *p = in; *p != '\0'; p++) {
		int ch = (unsigned char)*p;
		if (ch == '+') {
			int h = hexval(p[1]), l = h >= 0 ? hexval(p[2]) : -1;
			if (h < 0 || l < 0)
				return -EINVAL;
			ch = h * 16 + l;
			p += 2;
		}
		if (ch < 0x20 || ch == 0x7f)
			return -EINVAL;
		if (o + 1 >= cap)
			return -ENOSPC;
		out[o++] = (char)ch;
	}
	out[o] = '\0';
	return 0;
}

/* End of the header section (just after the empty line), or len. */
static size_t header_end(const uint8_t *m, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (m[i] == '\n' && m[i + 1] == '\n')
			return i + 2;
		if (m[i] == '\n' && m[i + 1] == '\r' && i + 2 < len && m[i + 2] == '\n')
			return i + 3;
	}
	if (len >= 2 && m[0] == '\r' && m[1] == '\n')
		return 2;
	return len;
}

static bool has_8bit(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] & 0x80)
			return true;
	return false;
}

static bool contains(const uint8_t *hay, size_t n, const char *needle)
{
	size_t k = strlen(needle);

	if (k == 0 || k > n)
		return false;
	for (size_t i = 0; i + k <= n; i++)
		if (hay[i] == (uint8_t)needle[0] && memcmp(hay + i, needle, k) == 0)
			return true;
	return false;
}

static void put_orcpt(struct sbuf *b, const char *orcpt)
{
	char dec[1024];
	const char *semi = strchr(orcpt, ';');

	/* RFC 3461 4.2: addr-type ";" xtext; the report carries it decoded. */
	if (semi == NULL || semi == orcpt || (size_t)(semi - orcpt) > 32 ||
	    ctl_dsn_xtext_decode(semi + 1, dec, sizeof dec) != 0)
		return;
	sb_printf(b, "Original-Recipient: ");
	sb_value(b, orcpt, (size_t)(semi - orcpt));
	sb_printf(b, ";");
	sb_value(b, dec, sizeof dec);
	sb_printf(b, "\r\n");
}

int ctl_dsn_build(const struct ctl_dsn *d, char **out, size_t *len, bool *body8bit)
{
	struct sbuf b = { 0 };
	char date[64], arrived[64], boundary[96];
	size_t hend = header_end(d->msg, d->msglen);
	bool full = d->ret != SMTP_RET_HDRS && d->msglen <= d->return_max;
	size_t retlen = full ? d->msglen : hend;
	bool cut = false;

	*out = NULL;
	*len = 0;
	if (d->sender == NULL || d->sender[0] == '\0' || d->nrcpt == 0)
		return -EINVAL;
	if (!full && retlen > d->return_max) {
		/* Cut on a line boundary. */
		size_t k = d->return_max;
		while (k > 0 && d->msg[k - 1] != '\n')
			k--;
		retlen = k;
		cut = true;
	}
	fmt_date(d->now, date, sizeof date);
	fmt_date(d->arrival, arrived, sizeof arrived);
	/* A boundary that the returned bytes do not contain (RFC 2046 5.1.1). */
	for (unsigned n = 0;; n++) {
		snprintf(boundary, sizeof boundary, "=_sluice_%s_%lld_%u", d->qid,
		         (long long)d->now, n);
		if (!contains(d->msg, retlen, boundary))
			break;
	}
	*body8bit = has_8bit(d->msg, retlen);

	sb_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@");
	sb_value(&b, d->reporting_mta, 255);
	sb_printf(&b, ">\r\nTo: <");
	sb_value(&b, d->sender, 512);
	sb_printf(&b, ">\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: %s\r\n", date);
	sb_printf(&b, "Message-ID: <%s.%lld.dsn@", d->qid, (long long)d->now);
	sb_value(&b, d->reporting_mta, 255);
	sb_printf(&b, ">\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
	          "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	          "\tboundary=\"%s\"\r\n\r\n"
	          "This is a MIME-formatted delivery status notification.\r\n\r\n", boundary);

	/* 1: for people. */
	sb_printf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n"
	          "Content-Description: Notification\r\n\r\n", boundary);
	sb_printf(&b, "This is the mail system at ");
	sb_value(&b, d->reporting_mta, 255);
	sb_printf(&b, ".\r\n\r\nYour message (queue id %s, received %s) could not be\r\n"
	          "delivered to the following recipient%s:\r\n\r\n", d->qid, arrived,
	          d->nrcpt > 1 ? "s" : "");
	for (size_t i = 0; i < d->nrcpt; i++) {
		sb_printf(&b, "  <");
		sb_value(&b, d->rcpt[i].addr, 512);
		sb_printf(&b, ">:\r\n    ");
		sb_value(&b, d->rcpt[i].diag, 900);
		sb_printf(&b, "\r\n");
	}
	sb_printf(&b, "\r\nThe delivery report is attached, followed by %s.\r\n",
	          full ? "your message" : cut ? "the beginning of your message's header" :
	          "your message's header");
	if (!full && d->ret != SMTP_RET_HDRS)
		sb_printf(&b, "(Your message was larger than %zu bytes: only its header is returned.)\r\n",
		          d->return_max);
	sb_printf(&b, "\r\n");

	/* 2: RFC 3464 2.2 per-message fields, 2.3 per-recipient fields. */
	sb_printf(&b, "--%s\r\nContent-Type: message/delivery-status\r\n"
	          "Content-Description: Delivery report\r\n\r\n", boundary);
	sb_printf(&b, "Reporting-MTA: dns; ");
	sb_value(&b, d->reporting_mta, 255);
	sb_printf(&b, "\r\nX-Sluice-Queue-ID: %s\r\n", d->qid);
	if (d->envid != NULL && d->envid[0] != '\0') {
		char dec[512];
		if (ctl_dsn_xtext_decode(d->envid, dec, sizeof dec) == 0) {
			sb_printf(&b, "Original-Envelope-Id: ");
			sb_value(&b, dec, sizeof dec);
			sb_printf(&b, "\r\n");
		}
	}
	sb_printf(&b, "Arrival-Date: %s\r\n", arrived);
	for (size_t i = 0; i < d->nrcpt; i++) {
		const struct ctl_dsn_rcpt *r = &d->rcpt[i];
		sb_printf(&b, "\r\n");
		if (r->orcpt != NULL)
			put_orcpt(&b, r->orcpt);
		sb_printf(&b, "Final-Recipient: rfc822; ");
		sb_value(&b, r->addr, 512);
		sb_printf(&b, "\r\nAction: failed\r\nStatus: ");
		sb_value(&b, r->status != NULL && r->status[0] ? r->status : "5.0.0", 16);
		sb_printf(&b, "\r\nDiagnostic-Code: ");
		sb_value(&b, r->diag_type != NULL ? r->diag_type : "smtp", 32);
		sb_printf(&b, "; ");
		sb_value(&b, r->diag, 900);
		sb_printf(&b, "\r\nLast-Attempt-Date: %s\r\n", date);
	}
	sb_printf(&b, "\r\n");

	/* 3: the original, or its header. */
	sb_printf(&b, "--%s\r\nContent-Type: %s\r\n", boundary,
	          full ? "message/rfc822" : "text/rfc822-headers");
	if (*body8bit)
		sb_printf(&b, "Content-Transfer-Encoding: 8bit\r\n");
	sb_printf(&b, "Content-Description: %s\r\n\r\n", full ? "Undelivered message" :
	          "Undelivered message header");
	sb_put(&b, d->msg, retlen);
	if (retlen > 0 && d->msg[retlen - 1] != '\n')
		sb_printf(&b, "\r\n");
	sb_printf(&b, "\r\n--%s--\r\n", boundary);

	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}
