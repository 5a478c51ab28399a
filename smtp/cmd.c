/*
 * cmd.c - command lines: assembly from the byte stream, the command table,
 * the handlers, and MAIL/RCPT path and parameter parsing.
 *
 * A command line ends only at CRLF (RFC 5321 2.3.8). A bare CR or LF in a
 * line is a 500 5.5.2; a line longer than cmd_line_max gets 500 5.5.2 at
 * once and is dropped up to the next CRLF. Lines are parsed in place in the
 * caller's input when they are whole there; only a line split across input
 * calls is copied into the line buffer.
 */
#include "smtp/smtp_impl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef void smtp_cmd_fn(struct smtp_session *s, const char *a, size_t n);

#define F_LAST    0x1u  /* last in a pipelined group (RFC 2920 3.1) */
#define F_PRE_TLS 0x2u  /* allowed before STARTTLS when TLS is required */
#define F_JUNK    0x4u  /* counts toward junk_max */

struct smtp_cmd {
	char verb[9];
	uint8_t len;
	smtp_cmd_fn *fn;
	uint8_t states;      /* SMTP_S_* where it may be used */
	uint8_t flags;
	const char *seq_err; /* 503 text outside those states */
};

static smtp_cmd_fn cmd_helo, cmd_ehlo, cmd_mail, cmd_rcpt, cmd_data, cmd_bdat,
	cmd_rset, cmd_noop, cmd_quit, cmd_help, cmd_vrfy, cmd_expn, cmd_starttls;

static const struct smtp_cmd smtp_cmds[] = {
	{ "MAIL", 4, cmd_mail, SMTP_S_HELO, 0, "Error: nested MAIL command" },
	{ "RCPT", 4, cmd_rcpt, SMTP_S_MAIL | SMTP_S_RCPT, 0, "Error: need MAIL command" },
	{ "DATA", 4, cmd_data, SMTP_S_RCPT, F_LAST, "Error: need RCPT command" },
	{ "BDAT", 4, cmd_bdat, SMTP_S_ANY, 0, NULL },
	{ "EHLO", 4, cmd_ehlo, SMTP_S_ANY, F_LAST | F_PRE_TLS, NULL },
	{ "HELO", 4, cmd_helo, SMTP_S_ANY, F_LAST | F_PRE_TLS, NULL },
	{ "RSET", 4, cmd_rset, SMTP_S_ANY, F_PRE_TLS | F_JUNK, NULL },
	{ "QUIT", 4, cmd_quit, SMTP_S_ANY, F_LAST | F_PRE_TLS, NULL },
	{ "NOOP", 4, cmd_noop, SMTP_S_ANY, F_LAST | F_PRE_TLS | F_JUNK, NULL },
	{ "STARTTLS", 8, cmd_starttls, SMTP_S_INIT | SMTP_S_HELO, F_LAST | F_PRE_TLS,
	  "Error: STARTTLS inside a mail transaction" },
	{ "HELP", 4, cmd_help, SMTP_S_ANY, F_LAST | F_JUNK, NULL },
	{ "VRFY", 4, cmd_vrfy, SMTP_S_ANY, F_LAST | F_JUNK, NULL },
	{ "EXPN", 4, cmd_expn, SMTP_S_ANY, F_LAST | F_JUNK, NULL },
};

#define NCMDS (sizeof(smtp_cmds) / sizeof(smtp_cmds[0]))

static inline char
up(char c)
{
	return (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
}

static const struct smtp_cmd *
lookup(const char *v, size_t n)
{
	char u[8];
	if (n == 0 || n > 8)
		return NULL;
	for (size_t i = 0; i < n; i++)
		u[i] = up(v[i]);
	for (size_t i = 0; i < NCMDS; i++)
		if (smtp_cmds[i].len == n && smtp_cmds[i].verb[0] == u[0] &&
		    memcmp(smtp_cmds[i].verb, u, n) == 0)
			return &smtp_cmds[i];
	return NULL;
}

/* ---- string arena ---- */

static const char *
arena_put(struct smtp_session *s, const char *p, size_t n)
{
	if (n + 1 > s->arena_cap - s->arena_len)
		return NULL;
	char *d = s->arena + s->arena_len;
	memcpy(d, p, n);
	d[n] = '\0';
	s->arena_len += (uint32_t)(n + 1);
	return d;
}

/* ---- syntax helpers ---- */

static bool
is_atext(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

static bool
is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Well-formed UTF-8 (RFC 3629), no overlongs or surrogates. */
static bool
utf8_ok(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = p[i];
		size_t k;
		unsigned min;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			k = 1, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3, min = 0x10000;
		} else {
			return false;
		}
		if (i + k >= n)
			return false;
		unsigned v = c & (0x3fu >> k);
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return false;
			v = (v << 6) | (p[i + j] & 0x3f);
		}
		if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

/* xtext (RFC 3461 4): "!".."~" except "+" and "=", or "+" two hex digits. */
static bool
xtext_ok(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '+') {
			if (i + 2 >= n)
				return false;
			for (int j = 1; j <= 2; j++) {
				char h = up(p[i + j]);
				if (!((h >= '0' && h <= '9') || (h >= 'A' && h <= 'F')))
					return false;
			}
			i += 2;
		} else if (c < '!' || c > '~' || c == '=') {
			return false;
		}
	}
	return true;
}

/* Parse "<path>" at p (RFC 5321 4.1.2): optional source route (dropped),
 * dot-string or quoted local part, domain or address literal. Writes the
 * address without <> into the arena. Returns the octet after '>' or NULL.
 * *nonascii is set when the address has octets >= 0x80 (RFC 6531). */
static const char *
parse_path(struct smtp_session *s, const char *p, const char *e, bool mail,
           const char **out, bool *nonascii, bool *nospace)
{
	*nonascii = false;
	*nospace = false;
	if (p >= e || *p != '<')
		return NULL;
	p++;
	if (mail && p < e && *p == '>') {
		*out = arena_put(s, "", 0);
		return p + 1;
	}
	if (p < e && *p == '@') {  /* A-d-l ":" - obsolete, accepted, ignored */
		while (p < e && *p != ':') {
			unsigned char c = (unsigned char)*p;
			if (!(is_ldh(c) || c == '.' || c == '@' || c == ',' || c == '[' || c == ']'))
				return NULL;
			p++;
		}
		if (p == e)
			return NULL;
		p++;
	}
	const char *a = p;
	if (p < e && *p == '"') {
		p++;
		while (p < e && *p != '"') {
			unsigned char c = (unsigned char)*p;
			if (c == '\\') {
				p++;
				if (p == e || (unsigned char)*p < 0x20 || *p == 0x7f)
					return NULL;
			} else if (c < 0x20 || c == 0x7f) {
				return NULL;
			}
			if ((unsigned char)*p >= 0x80)
				*nonascii = true;
			p++;
		}
		if (p == e)
			return NULL;
		p++;
	} else {
		for (;;) {
			const char *w = p;
			while (p < e && (is_atext((unsigned char)*p) || (unsigned char)*p >= 0x80)) {
				if ((unsigned char)*p >= 0x80)
					*nonascii = true;
				p++;
			}
			if (p == w)
				return NULL;
			if (p < e && *p == '.') {
				p++;
				continue;
			}
			break;
		}
	}
	if (p - a > 64 * 4)
		return NULL;
	if (p < e && *p == '>' && !mail) {
		/* RFC 5321 4.1.1.3: <Postmaster> without a domain. */
		if (p - a != 10 || strncasecmp(a, "postmaster", 10) != 0)
			return NULL;
	} else {
		if (p >= e || *p != '@')
			return NULL;
		p++;
		if (p < e && *p == '[') {
			const char *l = p++;
			while (p < e && *p != ']') {
				unsigned char c = (unsigned char)*p;
				if (c <= 0x20 || c >= 0x7f || c == '[' || c == '\\')
					return NULL;
				p++;
			}
			if (p == e || p - l < 2)
				return NULL;
			p++;
		} else {
			for (;;) {
				const char *w = p;
				while (p < e && (is_ldh((unsigned char)*p) || (unsigned char)*p >= 0x80)) {
					if ((unsigned char)*p >= 0x80)
						*nonascii = true;
					p++;
				}
				if (p == w || *w == '-' || p[-1] == '-')
					return NULL;
				if (p < e && *p == '.' && p + 1 < e && p[1] != '>') {
					p++;
					continue;
				}
				break;
			}
		}
	}
	if (p >= e || *p != '>')
		return NULL;
	size_t len = (size_t)(p - a);
	if (len > 254 * 2)
		return NULL;
	if (*nonascii && !utf8_ok((const unsigned char *)a, len))
		return NULL;
	*out = arena_put(s, a, len);
	if (*out == NULL)
		*nospace = true;
	p++;
	if (p < e && *p != ' ')
		return NULL;
	return p;
}

/* Next "KEY[=VALUE]" in a parameter list. Returns false at the end. */
static bool
next_param(const char **pp, const char *e, const char **k, size_t *kn, const char **v, size_t *vn)
{
	const char *p = *pp;
	while (p < e && *p == ' ')
		p++;
	if (p == e)
		return false;
	*k = p;
	while (p < e && *p != '=' && *p != ' ')
		p++;
	*kn = (size_t)(p - *k);
	*v = NULL;
	*vn = 0;
	if (p < e && *p == '=') {
		*v = ++p;
		while (p < e && *p != ' ')
			p++;
		*vn = (size_t)(p - *v);
	}
	*pp = p;
	return true;
}

static bool
key_is(const char *k, size_t kn, const char *name)
{
	size_t n = strlen(name);
	return kn == n && strncasecmp(k, name, n) == 0;
}

static bool
val_is(const char *v, size_t vn, const char *name)
{
	return v != NULL && key_is(v, vn, name);
}

static bool
parse_u64(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	if (v == NULL || n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		uint64_t d = (uint64_t)(v[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
	}
	*out = x;
	return true;
}

/* ---- hook plumbing ---- */

static void
txn_clear(struct smtp_session *s)
{
	memset(&s->txn, 0, sizeof(s->txn));
	s->txn.rcpt = s->rcpt;
	s->arena_len = 0;
}

static void
ehlo_reply(struct smtp_session *s)
{
	const struct smtp_server_conf *c = s->conf;
	char buf[1024];
	const char *ext[10];
	size_t extn[10];
	char size[32];
	size_t next = 0, n;
	size_t hl = strnlen(c->hostname, 255);
	if (!s->info.esmtp) {
		smtp_reply_parts(s, "250 ", 4, c->hostname, hl, "", 0);
		return;
	}
	/* Literal lengths, no strlen: this runs once per connection. */
#define EXT(lit) do { ext[next] = lit; extn[next++] = sizeof(lit) - 1; } while (0)
	EXT("PIPELINING");
	if (c->message_size_max != 0) {
		memcpy(size, "SIZE ", 5);
		extn[next] = 5 + smtp_u64_str(size + 5, c->message_size_max);
		ext[next++] = size;
	} else {
		EXT("SIZE");
	}
	if (c->tls_ctx != NULL && !s->tls_up)
		EXT("STARTTLS");
	EXT("ENHANCEDSTATUSCODES");
	EXT("8BITMIME");
	EXT("DSN");
	EXT("SMTPUTF8");
	EXT("CHUNKING");
#undef EXT
	memcpy(buf, "250-", 4);
	memcpy(buf + 4, c->hostname, hl);
	memcpy(buf + 4 + hl, "\r\n", 2);
	n = hl + 6;
	for (size_t i = 0; i < next; i++) {
		size_t k = extn[i];
		memcpy(buf + n, i + 1 < next ? "250-" : "250 ", 4);
		memcpy(buf + n + 4, ext[i], k);
		memcpy(buf + n + 4 + k, "\r\n", 2);
		n += 6 + k;
	}
	smtp_out_put(s, buf, n);
}

static void
helo_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_REPLY && smtp_hook_norm(r) >= 400) {
		smtp_reply_hook(s, r, "5.7.1", true);
		s->info.helo[0] = '\0';
		s->info.esmtp = false;
		s->state = SMTP_S_INIT;
		return;
	}
	s->state = SMTP_S_HELO;
	ehlo_reply(s);
}

static void
mail_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_REPLY && smtp_hook_norm(r) >= 400) {
		smtp_reply_hook(s, r, "5.1.0", true);
		txn_clear(s);
		return;
	}
	s->state = SMTP_S_MAIL;
	s->arena_txn = s->arena_len;
	if (res == SMTP_HOOK_REPLY)
		smtp_reply_hook(s, r, "2.1.0", true);
	else
		smtp_out_put(s, "250 2.1.0 Ok\r\n", 14);
}

static void
rcpt_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_REPLY && smtp_hook_norm(r) >= 400) {
		smtp_reply_hook(s, r, "5.1.1", true);
		s->arena_len = s->arena_txn;
		return;
	}
	s->txn.nrcpt++;
	s->arena_txn = s->arena_len;
	s->state = SMTP_S_RCPT;
	if (res == SMTP_HOOK_REPLY)
		smtp_reply_hook(s, r, "2.1.5", true);
	else
		smtp_out_put(s, "250 2.1.5 Ok\r\n", 14);
}

static void
data_start_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_REPLY && smtp_hook_norm(r) >= 400) {
		smtp_reply_hook(s, r, "5.7.1", true);
		return;
	}
	s->d.started = true;
	smtp_out_put(s, "354 End data with <CR><LF>.<CR><LF>\r\n", 37);
	smtp_data_begin(s);
}

static void
bdat_start_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_REPLY && smtp_hook_norm(r) >= 400) {
		s->d.refused = true;
		s->d.reset_after = true;
		s->d.chunk_reply = *r;
		if (s->d.chunk_reply.enh[0] == '\0')
			snprintf(s->d.chunk_reply.enh, sizeof(s->d.chunk_reply.enh), "%c.7.1",
			         (char)('0' + r->code / 100));
	} else {
		s->d.started = true;
	}
	smtp_bdat_begin(s);
}

void
smtp_cmd_resume(struct smtp_session *s, enum smtp_pend pend, const struct smtp_reply *r0)
{
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (r0 != NULL) {
		r = *r0;
		res = SMTP_HOOK_REPLY;
	}
	switch (pend) {
	case SMTP_P_HELO:
		helo_answer(s, res, &r);
		break;
	case SMTP_P_MAIL:
		mail_answer(s, res, &r);
		break;
	case SMTP_P_RCPT:
		rcpt_answer(s, res, &r);
		break;
	case SMTP_P_DATA_START:
		data_start_answer(s, res, &r);
		break;
	case SMTP_P_BDAT_START:
		bdat_start_answer(s, res, &r);
		break;
	default:
		break;
	}
}

/* ---- handlers: a is the argument (no CRLF, trimmed), n its length ---- */

static void
greet(struct smtp_session *s, const char *a, size_t n, bool esmtp)
{
	if (n == 0) {
		smtp_reply_cmd(s, 501, "5.5.4", esmtp ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
		return;
	}
	if (memchr(a, ' ', n) != NULL && !esmtp)
		n = (size_t)((const char *)memchr(a, ' ', n) - a);
	if (n > sizeof(s->info.helo) - 1)
		n = sizeof(s->info.helo) - 1;
	if (memchr(a, '\0', n) != NULL) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax error: NUL in hostname");
		return;
	}
	/* RFC 5321 4.1.4: HELO/EHLO clears any transaction. */
	smtp_txn_reset(s, SMTP_EV_ABORT_RSET);
	memcpy(s->info.helo, a, n);
	s->info.helo[n] = '\0';
	s->info.esmtp = esmtp;
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->helo != NULL)
		res = s->hooks->helo(s->ctx, s, s->info.helo, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_HELO;
		return;
	}
	helo_answer(s, res, &r);
}

static void
cmd_helo(struct smtp_session *s, const char *a, size_t n)
{
	greet(s, a, n, false);
}

static void
cmd_ehlo(struct smtp_session *s, const char *a, size_t n)
{
	greet(s, a, n, true);
}

static void
cmd_mail(struct smtp_session *s, const char *a, size_t n)
{
	const char *e = a + n, *p;
	bool nonascii, nospace;
	if (n < 5 || strncasecmp(a, "FROM:", 5) != 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		return;
	}
	p = a + 5;
	while (p < e && *p == ' ')
		p++;
	txn_clear(s);
	p = parse_path(s, p, e, true, &s->txn.mail_from, &nonascii, &nospace);
	if (p == NULL || nospace) {
		txn_clear(s);
		smtp_reply_cmd(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	struct smtp_txn *t = &s->txn;
	bool seen_size = false, seen_env = false;
	const char *k, *v;
	size_t kn, vn;
	const char *bad = NULL;
	unsigned badcode = 501;
	while (bad == NULL && next_param(&p, e, &k, &kn, &v, &vn)) {
		if (key_is(k, kn, "SIZE")) {
			if (seen_size || !parse_u64(v, vn, &t->size_declared))
				bad = "Bad SIZE parameter";
			seen_size = true;
		} else if (key_is(k, kn, "BODY")) {
			if (t->body != SMTP_BODY_NONE)
				bad = "Bad BODY parameter";
			else if (val_is(v, vn, "7BIT"))
				t->body = SMTP_BODY_7BIT;
			else if (val_is(v, vn, "8BITMIME"))
				t->body = SMTP_BODY_8BITMIME;
			else
				bad = "Bad BODY parameter";
		} else if (key_is(k, kn, "SMTPUTF8")) {
			if (v != NULL || t->smtputf8)
				bad = "Bad SMTPUTF8 parameter";
			t->smtputf8 = true;
		} else if (key_is(k, kn, "RET")) {
			if (t->ret != SMTP_RET_NONE)
				bad = "Bad RET parameter";
			else if (val_is(v, vn, "FULL"))
				t->ret = SMTP_RET_FULL;
			else if (val_is(v, vn, "HDRS"))
				t->ret = SMTP_RET_HDRS;
			else
				bad = "Bad RET parameter";
		} else if (key_is(k, kn, "ENVID")) {
			if (seen_env || v == NULL || vn == 0 || vn > 100 || !xtext_ok(v, vn) ||
			    (t->envid = arena_put(s, v, vn)) == NULL)
				bad = "Bad ENVID parameter";
			seen_env = true;
		} else {
			bad = "Unsupported MAIL parameter";
			badcode = 555;
		}
	}
	if (bad != NULL) {
		txn_clear(s);
		smtp_reply_cmd(s, badcode, "5.5.4", bad);
		return;
	}
	if (nonascii && !t->smtputf8) {
		txn_clear(s);
		smtp_reply_cmd(s, 553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8");
		return;
	}
	if (s->size_max != 0 && t->size_declared > s->size_max) {
		txn_clear(s);
		smtp_reply_cmd(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		return;
	}
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->mail != NULL)
		res = s->hooks->mail(s->ctx, s, t, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_MAIL;
		return;
	}
	mail_answer(s, res, &r);
}

static void
cmd_rcpt(struct smtp_session *s, const char *a, size_t n)
{
	const char *e = a + n, *p;
	bool nonascii, nospace;
	if (n < 3 || strncasecmp(a, "TO:", 3) != 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		return;
	}
	if (s->txn.nrcpt >= s->rcpt_max) {
		smtp_reply_cmd(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	p = a + 3;
	while (p < e && *p == ' ')
		p++;
	struct smtp_rcpt *rc = &s->rcpt[s->txn.nrcpt];
	memset(rc, 0, sizeof(*rc));
	s->arena_len = s->arena_txn;
	p = parse_path(s, p, e, false, &rc->addr, &nonascii, &nospace);
	if (p == NULL) {
		s->arena_len = s->arena_txn;
		smtp_reply_cmd(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}
	const char *k, *v, *bad = NULL;
	size_t kn, vn;
	unsigned badcode = 501;
	while (!nospace && bad == NULL && next_param(&p, e, &k, &kn, &v, &vn)) {
		if (key_is(k, kn, "NOTIFY")) {
			if (rc->notify != 0 || v == NULL || vn == 0) {
				bad = "Bad NOTIFY parameter";
				break;
			}
			const char *q = v, *ve = v + vn;
			while (q < ve && bad == NULL) {
				const char *w = q;
				while (q < ve && *q != ',')
					q++;
				size_t wn = (size_t)(q - w);
				if (key_is(w, wn, "NEVER"))
					rc->notify |= SMTP_NOTIFY_NEVER;
				else if (key_is(w, wn, "SUCCESS"))
					rc->notify |= SMTP_NOTIFY_SUCCESS;
				else if (key_is(w, wn, "FAILURE"))
					rc->notify |= SMTP_NOTIFY_FAILURE;
				else if (key_is(w, wn, "DELAY"))
					rc->notify |= SMTP_NOTIFY_DELAY;
				else
					bad = "Bad NOTIFY parameter";
				if (q < ve && ++q == ve)
					bad = "Bad NOTIFY parameter";
			}
			if ((rc->notify & SMTP_NOTIFY_NEVER) && rc->notify != SMTP_NOTIFY_NEVER)
				bad = "Bad NOTIFY parameter";
		} else if (key_is(k, kn, "ORCPT")) {
			const char *semi = v != NULL ? memchr(v, ';', vn) : NULL;
			bool ok = rc->orcpt == NULL && semi != NULL && semi > v && vn <= 500 &&
			          (size_t)(semi - v) + 1 < vn;
			for (const char *q = v; ok && q < semi; q++)
				ok = is_atext((unsigned char)*q);
			if (ok)
				ok = xtext_ok(semi + 1, (size_t)(v + vn - semi - 1));
			if (!ok) {
				bad = "Bad ORCPT parameter";
			} else if ((rc->orcpt = arena_put(s, v, vn)) == NULL) {
				nospace = true;
			}
		} else {
			bad = "Unsupported RCPT parameter";
			badcode = 555;
		}
	}
	if (nospace) {
		s->arena_len = s->arena_txn;
		smtp_reply_cmd(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	if (bad != NULL) {
		s->arena_len = s->arena_txn;
		smtp_reply_cmd(s, badcode, "5.5.4", bad);
		return;
	}
	if (nonascii && !s->txn.smtputf8) {
		s->arena_len = s->arena_txn;
		smtp_reply_cmd(s, 553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8");
		return;
	}
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->rcpt != NULL)
		res = s->hooks->rcpt(s->ctx, s, &s->txn, rc, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_RCPT;
		return;
	}
	rcpt_answer(s, res, &r);
}

static void
cmd_data(struct smtp_session *s, const char *a, size_t n)
{
	if (n != 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: DATA");
		return;
	}
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->data_start != NULL)
		res = s->hooks->data_start(s->ctx, s, &s->txn, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_DATA_START;
		return;
	}
	data_start_answer(s, res, &r);
}

/* BDAT <size> [LAST] (RFC 3030 2). Once the size is known the chunk is
 * always read, even when the command is refused, so that its octets can
 * never be taken for commands. */
static void
cmd_bdat(struct smtp_session *s, const char *a, size_t n)
{
	const char *e = a + n, *p = a;
	uint64_t size;
	bool last = false;
	while (p < e && *p != ' ')
		p++;
	if (!parse_u64(a, (size_t)(p - a), &size)) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
		return;
	}
	while (p < e && *p == ' ')
		p++;
	if (p < e) {
		if (e - p != 4 || strncasecmp(p, "LAST", 4) != 0) {
			smtp_reply_cmd(s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
			return;
		}
		last = true;
	}
	struct smtp_data_state *d = &s->d;
	d->chunk_left = d->chunk_size = size;
	d->last = last;
	d->refused = d->reset_after = false;
	if (!(s->state & (SMTP_S_RCPT | SMTP_S_BDATX))) {
		d->refused = true;
		memset(&d->chunk_reply, 0, sizeof(d->chunk_reply));
		d->chunk_reply.code = 503;
		memcpy(d->chunk_reply.enh, "5.5.1", 6);
		snprintf(d->chunk_reply.text, sizeof(d->chunk_reply.text), "%s",
		         s->state & SMTP_S_MAIL ? "Error: need RCPT command"
		         : s->state & SMTP_S_HELO ? "Error: need MAIL command"
		                                  : "Error: send HELO/EHLO first");
		smtp_bdat_begin(s);
		return;
	}
	if (s->state & SMTP_S_BDATX) {
		smtp_bdat_begin(s);
		return;
	}
	s->txn.bdat = true;
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->data_start != NULL)
		res = s->hooks->data_start(s->ctx, s, &s->txn, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_BDAT_START;
		return;
	}
	bdat_start_answer(s, res, &r);
}

static void
cmd_rset(struct smtp_session *s, const char *a, size_t n)
{
	if (n != 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: RSET");
		return;
	}
	smtp_txn_reset(s, SMTP_EV_ABORT_RSET);
	smtp_out_put(s, "250 2.0.0 Ok\r\n", 14);
}

static void
cmd_noop(struct smtp_session *s, const char *a, size_t n)
{
	smtp_out_put(s, "250 2.0.0 Ok\r\n", 14);
}

static void
cmd_quit(struct smtp_session *s, const char *a, size_t n)
{
	if (s->d.started) {
		s->d.started = false;
		if (s->hooks->data_abort != NULL)
			s->hooks->data_abort(s->ctx, s, &s->txn, SMTP_EV_QUIT);
	}
	smtp_out_put(s, "221 2.0.0 Bye\r\n", 15);
	smtp_event(s, SMTP_EV_QUIT);
	smtp_close(s);
}

static void
cmd_help(struct smtp_session *s, const char *a, size_t n)
{
	smtp_reply(s, 214, "2.0.0",
	           "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS");
}

static void
cmd_vrfy(struct smtp_session *s, const char *a, size_t n)
{
	if (n == 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	/* RFC 5321 3.5.3: 252 when the server will not verify. */
	smtp_reply(s, 252, "2.5.2", "Cannot VRFY the address; send mail and delivery will be attempted");
}

static void
cmd_expn(struct smtp_session *s, const char *a, size_t n)
{
	smtp_reply_cmd(s, 502, "5.5.1", "Error: EXPN not available");
}

static void
cmd_starttls(struct smtp_session *s, const char *a, size_t n)
{
	if (s->conf->tls_ctx == NULL) {
		smtp_reply_cmd(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (s->tls_up) {
		smtp_reply_cmd(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	if (n != 0) {
		smtp_reply_cmd(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	if (smtp_tls_start(s) != 0) {
		smtp_reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return;
	}
}

/* ---- one command line ---- */

static void
do_line(struct smtp_session *s, const uint8_t *l, size_t len)
{
	/* len counts the LF; only CRLF ends a line. */
	if (len < 2 || l[len - 2] != '\r' || memchr(l, '\r', len - 2) != NULL) {
		smtp_reply_cmd(s, 500, "5.5.2", "Syntax error: bare CR or LF in command line");
		return;
	}
	const char *a = (const char *)l, *e = a + len - 2;
	while (e > a && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	const char *v = a;
	while (a < e && *a != ' ')
		a++;
	const struct smtp_cmd *c = lookup(v, (size_t)(a - v));
	while (a < e && *a == ' ')
		a++;
	if (c == NULL) {
		smtp_reply_cmd(s, 500, "5.5.2", "Error: command not recognized");
		return;
	}
	if (s->refused && c->fn != cmd_quit) {
		smtp_reply_cmd(s, 503, "5.7.0", "Error: connection refused, only QUIT");
		return;
	}
	if (s->conf->tls_required && s->conf->tls_ctx != NULL && !s->tls_up && !(c->flags & F_PRE_TLS)) {
		smtp_reply_cmd(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	if (!(c->states & s->state)) {
		const char *t = c->seq_err;
		if (s->state == SMTP_S_INIT)
			t = "Error: send HELO/EHLO first";
		else if (s->state == SMTP_S_BDATX && c->fn == cmd_data)
			t = "Error: DATA after BDAT in the same transaction";
		smtp_reply_cmd(s, 503, "5.5.1", t);
		return;
	}
	if (c->flags & F_JUNK) {
		s->junk++;
		if (s->conf->junk_max != 0 && s->junk > s->conf->junk_max) {
			smtp_count_error(s);
			if (s->closing)
				return;
		}
	}
	c->fn(s, a, (size_t)(e - a));
}

static void
line_too_long(struct smtp_session *s)
{
	smtp_reply_cmd(s, 500, "5.5.2", "Error: line too long");
}

size_t
smtp_cmd_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t pos = 0;
	while (pos < n) {
		if (s->closing || s->pend != SMTP_P_NONE || s->mode != SMTP_M_CMD)
			break;
		if (smtp_out_pending(s) >= SMTP_OUT_HIWAT)
			break;
		const uint8_t *q = p + pos;
		size_t avail = n - pos;
		const uint8_t *lf = memchr(q, '\n', avail);
		size_t take = lf != NULL ? (size_t)(lf - q) + 1 : avail;
		if (s->discard) {
			/* Drop the rest of an over-long line, up to CRLF. */
			if (lf != NULL && (take >= 2 ? q[take - 2] == '\r' : s->disc_cr))
				s->discard = false;
			else
				s->disc_cr = q[take - 1] == '\r';
			pos += take;
			continue;
		}
		if (s->lbuf_len + take > s->cmd_max) {
			line_too_long(s);
			s->lbuf_len = 0;
			if (lf == NULL) {
				s->discard = true;
				s->disc_cr = q[take - 1] == '\r';
			}
			pos += take;
			continue;
		}
		if (lf == NULL) {
			memcpy(s->lbuf + s->lbuf_len, q, take);
			s->lbuf_len += (uint32_t)take;
			pos += take;
			break;
		}
		pos += take;
		uint8_t m = s->mode;
		if (s->lbuf_len == 0) {
			do_line(s, q, take);
		} else {
			memcpy(s->lbuf + s->lbuf_len, q, take);
			size_t len = s->lbuf_len + take;
			s->lbuf_len = 0;
			do_line(s, s->lbuf, len);
		}
		/* STARTTLS (a last-in-group command) turned the channel: what
		 * follows in this input is plaintext injection; smtp_process
		 * drops it. */
		if (s->mode != m)
			break;
	}
	return pos;
}
