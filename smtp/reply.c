/*
 * reply.c - the output buffer and SMTP reply formatting.
 *
 * Replies are appended to one bounded buffer while a pipelined group is
 * processed (RFC 2920) and leave together when the caller pulls output.
 * Enhanced status codes (RFC 2034, 3463) go on every reply except the 220
 * greeting and the HELO/EHLO success reply, which are written raw.
 */
#include "smtp/smtp_impl.h"

#include <stdio.h>
#include <string.h>

/* Network bytes waiting: plaintext buffer plus, under TLS, ciphertext. */
size_t
smtp_out_pending(const struct smtp_session *s)
{
	size_t n = s->out_len - s->out_off;
	if (s->ssl != NULL)
		n += smtp_tls_pending(s);
	return n;
}

void
smtp_out_put(struct smtp_session *s, const void *p, size_t n)
{
	if (s->out_len + n > SMTP_OUT_CAP && s->out_off > 0) {
		uint32_t off = s->out_off;
		memmove(s->out, s->out + off, s->out_len - off);
		s->out_len -= off;
		s->out_net = s->out_net > off ? s->out_net - off : 0;
		s->out_off = 0;
	}
	if (s->out_len + n > SMTP_OUT_CAP) {
		/* Cannot happen with the high-water check; fail safe, not open. */
		smtp_close(s);
		return;
	}
	memcpy(s->out + s->out_len, p, n);
	s->out_len += (uint32_t)n;
}

/* Decimal digits of v into buf (at least 20 octets); returns their number. */
size_t
smtp_u64_str(char *buf, uint64_t v)
{
	char t[20];
	size_t n = 0;
	do {
		t[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (size_t i = 0; i < n; i++)
		buf[i] = t[n - 1 - i];
	return n;
}

/* One reply line from three pieces plus CRLF, no formatting (hot paths). */
void
smtp_reply_parts(struct smtp_session *s, const char *a, size_t an, const char *b, size_t bn,
                 const char *c, size_t cn)
{
	char buf[600];
	if (an + bn + cn + 2 > sizeof(buf))
		return;
	memcpy(buf, a, an);
	memcpy(buf + an, b, bn);
	memcpy(buf + an + bn, c, cn);
	memcpy(buf + an + bn + cn, "\r\n", 2);
	smtp_out_put(s, buf, an + bn + cn + 2);
}

static void
reply_line(struct smtp_session *s, unsigned code, char sep, const char *enh, const char *text)
{
	char buf[512];
	size_t n = 0, k;
	buf[n++] = (char)('0' + code / 100 % 10);
	buf[n++] = (char)('0' + code / 10 % 10);
	buf[n++] = (char)('0' + code % 10);
	buf[n++] = sep;
	if (enh != NULL && enh[0] != '\0') {
		k = strnlen(enh, 11);
		memcpy(buf + n, enh, k);
		n += k;
		buf[n++] = ' ';
	}
	k = strnlen(text, sizeof(buf) - n - 2);
	memcpy(buf + n, text, k);
	n += k;
	buf[n++] = '\r';
	buf[n++] = '\n';
	smtp_out_put(s, buf, n);
}

/* "code enh text\r\n"; enh NULL or "" leaves the enhanced code out. */
void
smtp_reply(struct smtp_session *s, unsigned code, const char *enh, const char *text)
{
	reply_line(s, code, ' ', enh, text);
}

/* "code-enh text\r\n": a line of a reply that goes on (RFC 5321 4.2.1). */
void
smtp_reply_cont(struct smtp_session *s, unsigned code, const char *enh, const char *text)
{
	reply_line(s, code, '-', enh, text);
}

void
smtp_reply_fmt(struct smtp_session *s, unsigned code, const char *enh, const char *fmt, ...)
{
	char text[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	smtp_reply(s, code, enh, text);
}

void
smtp_count_error(struct smtp_session *s)
{
	s->info.errors++;
	if (s->conf->errors_max != 0 && s->info.errors >= s->conf->errors_max && !s->closing) {
		smtp_reply_fmt(s, 421, "4.7.0", "%s Error: too many errors", s->conf->hostname);
		smtp_event(s, SMTP_EV_TOO_MANY_ERRORS);
		smtp_close(s);
	}
}

/* A reply to a command: 5xx counts as a protocol error (errors_max). */
void
smtp_reply_cmd(struct smtp_session *s, unsigned code, const char *enh, const char *text)
{
	smtp_reply(s, code, enh, text);
	if (code == 421)
		smtp_close(s);
	else if (code >= 500)
		smtp_count_error(s);
}

/* Make a hook's reply safe to send: a sane code, an enhanced code of the
 * same class (or none), one line of printable ASCII. Returns the code. */
int
smtp_hook_norm(struct smtp_reply *r)
{
	if (r->code < 200 || r->code > 599) {
		r->code = 451;
		memcpy(r->enh, "4.3.0", 6);
		memcpy(r->text, "Error: internal policy error", 29);
		return r->code;
	}
	r->enh[sizeof(r->enh) - 1] = '\0';
	const char *e = r->enh;
	bool ok = e[0] == (char)('0' + r->code / 100) && e[1] == '.';
	for (size_t i = 2; ok && e[i] != '\0'; i++)
		ok = (e[i] >= '0' && e[i] <= '9') || e[i] == '.';
	if (!ok)
		r->enh[0] = '\0';
	r->text[sizeof(r->text) - 1] = '\0';
	for (char *t = r->text; *t != '\0'; t++)
		if ((unsigned char)*t < 0x20 || (unsigned char)*t > 0x7e)
			*t = '?';
	return r->code;
}

/* Send a hook's reply; dflt_enh ("2.1.0") supplies the enhanced code when the
 * hook gave none, with its class fixed to the code's. cmd: count errors. */
void
smtp_reply_hook(struct smtp_session *s, const struct smtp_reply *r0, const char *dflt_enh, bool cmd)
{
	struct smtp_reply r = *r0;
	smtp_hook_norm(&r);
	char enh[12];
	if (r.enh[0] != '\0') {
		memcpy(enh, r.enh, sizeof(enh));
	} else {
		snprintf(enh, sizeof(enh), "%s", dflt_enh);
		enh[0] = (char)('0' + r.code / 100);
	}
	const char *text = r.text[0] != '\0' ? r.text : (r.code < 400 ? "Ok" : "Error: refused by policy");
	if (cmd)
		smtp_reply_cmd(s, r.code, enh, text);
	else
		smtp_reply(s, r.code, enh, text);
	if (r.close || r.code == 421)
		smtp_close(s);
}

/* Public: bytes to send. Under TLS the plaintext-era bytes go first, then
 * the ciphertext of everything after STARTTLS. */
size_t
smtp_session_output(struct smtp_session *s, const uint8_t **p)
{
	if (s->ssl != NULL)
		return smtp_tls_output(s, p);
	*p = s->out + s->out_off;
	return s->out_len - s->out_off;
}

void
smtp_session_sent(struct smtp_session *s, size_t n)
{
	if (s->ssl != NULL) {
		smtp_tls_sent(s, n);
		return;
	}
	size_t left = s->out_len - s->out_off;
	if (n > left)
		n = left;
	s->out_off += (uint32_t)n;
	if (s->out_off == s->out_len)
		s->out_off = s->out_len = 0;
}
