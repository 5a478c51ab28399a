/*
 * tests/smtp/session.c - the SMTP engine driven by small scripts: bytes in,
 * exact replies out. Parsers are fed whole, byte by byte and at random split
 * points. Failure messages say "got X, want Y".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "smtp/smtp.h"

enum hk { H_CONNECT, H_HELO, H_MAIL, H_RCPT, H_DATA_START, H_DATA_END, H_N };

struct env {
	struct smtp_server_conf conf;
	struct smtp_hooks hooks;
	struct smtp_session *s;
	void *mem;
	uint64_t now;
	/* per hook: what to answer */
	int act[H_N];
	struct smtp_reply rep[H_N];
	int calls[H_N];
	/* recorded */
	char data[1 << 16];
	size_t data_len;
	size_t msg_len;  /* this message's content so far */
	int data_calls;
	int aborts;
	enum smtp_event abort_why;
	int resets;
	int ev[32];
	char out[1 << 16];
	/* copies taken in hooks */
	struct smtp_txn txn;
	char mail_from[300], envid[128];
	char rcpt[8][300], orcpt[8][600];
	uint8_t notify[8];
	int nrcpt_seen;
};

static int
hook_answer(struct env *e, enum hk h, struct smtp_reply *r)
{
	e->calls[h]++;
	if (e->act[h] == SMTP_HOOK_REPLY)
		*r = e->rep[h];
	return e->act[h];
}

static int
h_connect(void *ctx, struct smtp_session *s, struct smtp_reply *r)
{
	return hook_answer(ctx, H_CONNECT, r);
}

static int
h_helo(void *ctx, struct smtp_session *s, const char *name, struct smtp_reply *r)
{
	return hook_answer(ctx, H_HELO, r);
}

static int
h_mail(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct env *e = ctx;
	e->txn = *t;
	snprintf(e->mail_from, sizeof(e->mail_from), "%s", t->mail_from);
	snprintf(e->envid, sizeof(e->envid), "%s", t->envid ? t->envid : "(null)");
	return hook_answer(ctx, H_MAIL, r);
}

static int
h_rcpt(void *ctx, struct smtp_session *s, const struct smtp_txn *t, const struct smtp_rcpt *rc,
       struct smtp_reply *r)
{
	struct env *e = ctx;
	int i = e->nrcpt_seen++ & 7;
	snprintf(e->rcpt[i], sizeof(e->rcpt[i]), "%s", rc->addr);
	snprintf(e->orcpt[i], sizeof(e->orcpt[i]), "%s", rc->orcpt ? rc->orcpt : "(null)");
	e->notify[i] = rc->notify;
	return hook_answer(ctx, H_RCPT, r);
}

static int
h_data_start(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	((struct env *)ctx)->msg_len = 0;
	return hook_answer(ctx, H_DATA_START, r);
}

static void
h_data(void *ctx, struct smtp_session *s, const uint8_t *p, size_t n)
{
	struct env *e = ctx;
	assert_true(n > 0);
	if (e->data_len + n <= sizeof(e->data)) {
		memcpy(e->data + e->data_len, p, n);
		e->data_len += n;
	}
	e->msg_len += n;
	e->data_calls++;
}

static int
h_data_end(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct env *e = ctx;
	e->txn = *t;
	assert_int_equal(t->data_bytes, e->msg_len);
	return hook_answer(ctx, H_DATA_END, r);
}

static void
h_data_abort(void *ctx, struct smtp_session *s, const struct smtp_txn *t, enum smtp_event why)
{
	struct env *e = ctx;
	e->aborts++;
	e->abort_why = why;
}

static void
h_reset(void *ctx, struct smtp_session *s)
{
	((struct env *)ctx)->resets++;
}

static void
h_event(void *ctx, struct smtp_session *s, enum smtp_event ev)
{
	((struct env *)ctx)->ev[ev]++;
}

static void
conf_default(struct smtp_server_conf *c)
{
	memset(c, 0, sizeof(*c));
	c->hostname = "mx.test";
	c->banner = "ESMTP sluice";
	c->cmd_line_max = 512;
	c->text_line_max = 1000;
	c->message_size_max = 10000;
	c->rcpt_max = 5;
	c->errors_max = 5;
	c->timeout_command_ms = 300000;
	c->timeout_data_ms = 600000;
	c->timeout_tls_ms = 30000;
}

static void
env_init(struct env *e, unsigned flags)
{
	e->hooks = (struct smtp_hooks){
		.connect = h_connect, .helo = h_helo, .mail = h_mail, .rcpt = h_rcpt,
		.data_start = h_data_start, .data = h_data, .data_end = h_data_end,
		.data_abort = h_data_abort, .reset = h_reset, .event = h_event,
	};
	size_t sz = smtp_session_size(&e->conf);
	e->mem = aligned_alloc(64, (sz + 63) & ~(size_t)63);
	assert_non_null(e->mem);
	memset(e->mem, 0xa5, sz);  /* no reliance on zeroed memory */
	e->s = e->mem;
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(4242) };
	inet_pton(AF_INET, "192.0.2.7", &peer.sin_addr);
	smtp_session_init(e->s, &e->conf, &e->hooks, e, (struct sockaddr *)&peer, NULL, flags, e->now);
}

static struct env *
env_new_conf(const struct smtp_server_conf *c, unsigned flags, bool start)
{
	struct env *e = calloc(1, sizeof(*e));
	assert_non_null(e);
	if (c != NULL)
		e->conf = *c;
	else
		conf_default(&e->conf);
	e->now = 1000;
	env_init(e, flags);
	if (start)
		smtp_session_start(e->s, e->now);
	return e;
}

static struct env *
env_new(void)
{
	return env_new_conf(NULL, 0, true);
}

static void
env_free(struct env *e)
{
	smtp_session_fini(e->s);
	free(e->mem);
	free(e);
}

/* Drain all output into e->out, NUL-terminated. */
static const char *
drain(struct env *e)
{
	size_t n = 0;
	const uint8_t *p;
	size_t k;
	while ((k = smtp_session_output(e->s, &p)) > 0) {
		assert_true(n + k < sizeof(e->out));
		memcpy(e->out + n, p, k);
		n += k;
		smtp_session_sent(e->s, k);
	}
	e->out[n] = '\0';
	return e->out;
}

static size_t
feed_n(struct env *e, const void *p, size_t n)
{
	return smtp_session_input(e->s, p, n, e->now);
}

static size_t
feed(struct env *e, const char *str)
{
	return feed_n(e, str, strlen(str));
}

static void
check_str(const char *what, const char *got, const char *want)
{
	if (strcmp(got, want) != 0)
		fail_msg("%s: got \"%s\", want \"%s\"", what, got, want);
}

/* Send, expect exactly this output. */
static void
say(struct env *e, const char *send, const char *want)
{
	size_t n = strlen(send);
	size_t k = feed_n(e, send, n);
	if (k != n)
		fail_msg("input \"%s\": got %zu octets consumed, want %zu", send, k, n);
	check_str(send, drain(e), want);
}

static const char *EHLO_REPLY =
	"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n"
	"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";

static const char *BANNER = "220 mx.test ESMTP sluice\r\n";

static struct env *
env_ehlo(void)
{
	struct env *e = env_new();
	check_str("banner", drain(e), BANNER);
	say(e, "EHLO client.test\r\n", EHLO_REPLY);
	return e;
}

static struct env *
env_rcpt(void)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	return e;
}

/* ---------------- basic commands ---------------- */

static void
test_greeting_ehlo_helo(void **st)
{
	struct env *e = env_new();
	check_str("banner", drain(e), BANNER);
	assert_int_equal(e->calls[H_CONNECT], 1);
	say(e, "HELO client.test\r\n", "250 mx.test\r\n");
	assert_false(smtp_session_info(e->s)->esmtp);
	assert_string_equal(smtp_session_info(e->s)->helo, "client.test");
	say(e, "EHLO other.test\r\n", EHLO_REPLY);
	assert_true(smtp_session_info(e->s)->esmtp);
	assert_string_equal(smtp_session_info(e->s)->helo, "other.test");
	say(e, "ehlo\r\n", "501 5.5.4 Syntax: EHLO hostname\r\n");
	assert_string_equal(smtp_session_info(e->s)->peer_str, "192.0.2.7");
	assert_int_equal(smtp_session_info(e->s)->peer_port, 4242);
	env_free(e);
}

static void
test_transaction(void **st)
{
	struct env *e = env_rcpt();
	say(e, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_DATA);
	say(e, "Subject: hi\r\n\r\nbody\r\n.\r\n", "250 2.0.0 Ok\r\n");
	assert_false(smtp_session_status(e->s) & SMTP_ST_DATA);
	assert_int_equal(e->data_len, 21);
	assert_memory_equal(e->data, "Subject: hi\r\n\r\nbody\r\n", 21);
	assert_int_equal(e->calls[H_DATA_END], 1);
	assert_int_equal(smtp_session_info(e->s)->transactions, 1);
	assert_string_equal(e->mail_from, "a@b.test");
	assert_string_equal(e->rcpt[0], "c@d.test");
	/* transaction was reset: RCPT needs MAIL again */
	say(e, "RCPT TO:<x@y.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	say(e, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(e->ev[SMTP_EV_QUIT], 1);
	env_free(e);
}

static void
test_pipelining_batch(void **st)
{
	struct env *e = env_new();
	drain(e);
	say(e, "EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\n"
	       "DATA\r\nhello\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<g@h.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
	    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	    "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	    "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n");
	assert_int_equal(smtp_session_info(e->s)->transactions, 2);
	assert_int_equal(e->data_len, 10);
	assert_memory_equal(e->data, "hello\r\nx\r\n", 10);
	env_free(e);
}

static void
test_pipelining_park_resume(void **st)
{
	struct env *e = env_ehlo();
	e->act[H_RCPT] = SMTP_HOOK_PENDING;
	const char *in = "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<x@d.test>\r\nNOOP\r\n";
	size_t k = feed(e, in);
	size_t want = strlen("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n");
	if (k != want)
		fail_msg("consumed: got %zu, want %zu", k, want);
	assert_true(smtp_session_status(e->s) & SMTP_ST_PARKED);
	assert_int_equal(smtp_session_deadline(e->s), UINT64_MAX);  /* no timer while parked */
	check_str("before resume", drain(e), "250 2.1.0 Ok\r\n");
	assert_int_equal(feed(e, in + k), 0);  /* parked: nothing taken */
	struct smtp_reply r = { .code = 550, .enh = "5.1.1", .text = "No such user" };
	smtp_session_resume(e->s, &r, e->now);
	assert_false(smtp_session_status(e->s) & SMTP_ST_PARKED);
	check_str("after resume", drain(e), "550 5.1.1 No such user\r\n");
	k += feed(e, in + k);
	assert_int_equal(k, strlen(in) - strlen("NOOP\r\n"));
	smtp_session_resume(e->s, NULL, e->now);
	k += feed(e, in + k);
	assert_int_equal(k, strlen(in));
	check_str("tail", drain(e), "250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(smtp_session_txn(e->s)->nrcpt, 1);
	assert_int_equal(smtp_session_info(e->s)->errors, 1);
	env_free(e);
}

static void
test_sequence_errors(void **st)
{
	struct env *e = env_new();
	drain(e);
	e->conf.errors_max = 10;
	say(e, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
	say(e, "EHLO c\r\n", EHLO_REPLY);
	say(e, "RCPT TO:<a@b.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	say(e, "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n");
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	say(e, "DATA\r\n", "503 5.5.1 Error: need RCPT command\r\n");
	say(e, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: nested MAIL command\r\n");
	assert_int_equal(smtp_session_info(e->s)->errors, 5);
	say(e, "RSET\r\n", "250 2.0.0 Ok\r\n");
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	env_free(e);
}

static void
test_misc_commands(void **st)
{
	struct env *e = env_ehlo();
	e->conf.errors_max = 0;
	say(e, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	say(e, "noop whatever\r\n", "250 2.0.0 Ok\r\n");
	say(e, "VRFY postmaster\r\n",
	    "252 2.5.2 Cannot VRFY the address; send mail and delivery will be attempted\r\n");
	say(e, "VRFY\r\n", "501 5.5.4 Syntax: VRFY address\r\n");
	say(e, "EXPN list\r\n", "502 5.5.1 Error: EXPN not available\r\n");
	say(e, "HELP\r\n",
	    "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS\r\n");
	say(e, "FOO bar\r\n", "500 5.5.2 Error: command not recognized\r\n");
	say(e, "\r\n", "500 5.5.2 Error: command not recognized\r\n");
	say(e, "RSET x\r\n", "501 5.5.4 Syntax: RSET\r\n");
	say(e, "STARTTLS\r\n", "502 5.5.1 Error: command not implemented\r\n");
	say(e, "MAIL TO:<a@b.test>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>\r\n");
	env_free(e);
}

static void
test_bare_eol_command(void **st)
{
	struct env *e = env_ehlo();
	say(e, "NOOP\n", "500 5.5.2 Syntax error: bare CR or LF in command line\r\n");
	say(e, "NO\rOP\r\n", "500 5.5.2 Syntax error: bare CR or LF in command line\r\n");
	say(e, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	assert_int_equal(smtp_session_info(e->s)->errors, 2);
	env_free(e);
}

static void
test_cmd_line_too_long(void **st)
{
	struct env *e = env_ehlo();
	char line[2000];
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	/* exactly at the limit (512 incl. CRLF) is fine */
	memcpy(line + 510, "\r\n", 2);
	assert_int_equal(feed_n(e, line, 512), 512);
	check_str("512", drain(e), "250 2.0.0 Ok\r\n");
	/* one over, whole */
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + 511, "\r\nNOOP\r\n", 8);
	assert_int_equal(feed_n(e, line, 519), 519);
	check_str("513", drain(e), "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
	/* very long, in pieces: answered at once, dropped up to CRLF */
	memset(line, 'y', sizeof(line));
	assert_int_equal(feed_n(e, line, 300), 300);
	check_str("part 1", drain(e), "");
	assert_int_equal(feed_n(e, line, 300), 300);
	check_str("part 2", drain(e), "500 5.5.2 Error: line too long\r\n");
	assert_int_equal(feed_n(e, line, 1999), 1999);
	assert_int_equal(feed(e, "\r"), 1);
	say(e, "\nNOOP\r\n", "250 2.0.0 Ok\r\n");
	env_free(e);
}

static void
test_errors_max(void **st)
{
	struct env *e = env_ehlo();
	say(e, "X1\r\nX2\r\nX3\r\nX4\r\n",
	    "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n"
	    "500 5.5.2 Error: command not recognized\r\n500 5.5.2 Error: command not recognized\r\n");
	size_t k = feed(e, "X5\r\nNOOP\r\n");
	assert_int_equal(k, 4);
	check_str("421", drain(e),
	          "500 5.5.2 Error: command not recognized\r\n421 4.7.0 mx.test Error: too many errors\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(e->ev[SMTP_EV_TOO_MANY_ERRORS], 1);
	assert_int_equal(feed(e, "NOOP\r\n"), 0);
	env_free(e);
}

static void
test_rcpt_max_and_arena(void **st)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	for (int i = 0; i < 5; i++)
		say(e, "RCPT TO:<r@d.test>\r\n", "250 2.1.5 Ok\r\n");
	say(e, "RCPT TO:<r@d.test>\r\n", "452 4.5.3 Error: too many recipients\r\n");
	assert_int_equal(smtp_session_txn(e->s)->nrcpt, 5);
	env_free(e);

	/* the string arena running out is a 452, never a crash */
	struct smtp_server_conf c;
	conf_default(&c);
	c.rcpt_max = 1000;
	c.cmd_line_max = 2000;
	e = env_new_conf(&c, 0, true);
	drain(e);
	say(e, "EHLO c\r\n", EHLO_REPLY);
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	char line[1200], addr[300];
	int got452 = 0;
	for (int i = 0; i < 1000 && !got452; i++) {
		memset(addr, 'a', 60);
		snprintf(addr + 60, sizeof(addr) - 60, "%d@example.test", i);
		char orc[480];
		memset(orc, 'o', 400);
		orc[400] = '\0';
		snprintf(line, sizeof(line), "RCPT TO:<%s> ORCPT=rfc822;%s\r\n", addr, orc);
		feed(e, line);
		const char *o = drain(e);
		if (strcmp(o, "452 4.5.3 Error: too many recipients\r\n") == 0)
			got452 = 1;
		else
			check_str("rcpt", o, "250 2.1.5 Ok\r\n");
	}
	assert_true(got452);
	const struct smtp_txn *t = smtp_session_txn(e->s);
	assert_true(t->nrcpt > 100);
	for (uint32_t i = 0; i < t->nrcpt; i++)
		assert_true(strncmp(t->rcpt[i].addr, "aaaa", 4) == 0);
	assert_string_equal(t->mail_from, "a@b.test");
	env_free(e);
}

static void
test_addresses(void **st)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<>\r\n", "250 2.1.0 Ok\r\n");
	assert_string_equal(e->mail_from, "");
	say(e, "RSET\r\nMAIL FROM: <a@b.test>\r\n", "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n");
	say(e, "RCPT TO:<@relay.test,@r2.test:u@d.test>\r\n", "250 2.1.5 Ok\r\n");
	assert_string_equal(e->rcpt[0], "u@d.test");
	say(e, "RCPT TO:<\"john doe\"@d.test>\r\n", "250 2.1.5 Ok\r\n");
	assert_string_equal(e->rcpt[1], "\"john doe\"@d.test");
	say(e, "RCPT TO:<Postmaster>\r\n", "250 2.1.5 Ok\r\n");
	say(e, "RCPT TO:<u@[192.0.2.1]>\r\n", "250 2.1.5 Ok\r\n");
	const char *bad_rcpt[] = {
		"RCPT TO:u@d.test\r\n", "RCPT TO:<u@d.test\r\n", "RCPT TO:<u@>\r\n", "RCPT TO:<@d.test>\r\n",
		"RCPT TO:<u@@d.test>\r\n", "RCPT TO:<a..b@d.test>\r\n", "RCPT TO:<u@d.test>x\r\n",
		"RCPT TO:<u d@d.test>\r\n", "RCPT TO:<user>\r\n", "RCPT TO:<>\r\n",
	};
	for (size_t i = 0; i < sizeof(bad_rcpt) / sizeof(bad_rcpt[0]); i++) {
		feed(e, bad_rcpt[i]);
		check_str(bad_rcpt[i], drain(e), "501 5.1.3 Bad recipient address syntax\r\n");
		e->conf.errors_max = 0;  /* keep going */
	}
	say(e, "RSET\r\n", "250 2.0.0 Ok\r\n");
	say(e, "MAIL FROM:<a b>\r\n", "501 5.1.7 Bad sender address syntax\r\n");
	say(e, "MAIL FROM:<a@b.test> SIZE=1 BOGUS=1\r\n", "555 5.5.4 Unsupported MAIL parameter\r\n");
	env_free(e);
}

static void
test_size(void **st)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<a@b.test> SIZE=10001\r\n",
	    "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
	say(e, "MAIL FROM:<a@b.test> SIZE=x\r\n", "501 5.5.4 Bad SIZE parameter\r\n");
	say(e, "MAIL FROM:<a@b.test> SIZE=99999999999999999999999\r\n", "501 5.5.4 Bad SIZE parameter\r\n");
	say(e, "MAIL FROM:<a@b.test> SIZE=10000 BODY=8BITMIME\r\n", "250 2.1.0 Ok\r\n");
	assert_int_equal(e->txn.size_declared, 10000);
	assert_int_equal(e->txn.body, SMTP_BODY_8BITMIME);
	say(e, "RCPT TO:<c@d.test>\r\nDATA\r\n", "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	/* 100 lines of 100 octets = 10000: fine; one more: over */
	char line[101];
	memset(line, 'z', 98);
	memcpy(line + 98, "\r\n", 3);
	for (int i = 0; i < 100; i++)
		assert_int_equal(feed(e, line), 100);
	assert_int_equal(e->aborts, 0);
	feed(e, line);
	assert_int_equal(e->aborts, 1);
	assert_int_equal(e->abort_why, SMTP_EV_ABORT_SIZE);
	assert_true(e->data_len <= 10000);
	feed(e, line);
	check_str("no reply before the end", drain(e), "");
	say(e, ".\r\n", "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
	assert_int_equal(e->calls[H_DATA_END], 0);
	say(e, "MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n", "501 5.5.4 Bad BODY parameter\r\n");
	env_free(e);
}

static void
test_text_line_too_long(void **st)
{
	struct env *e = env_rcpt();
	say(e, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	char line[1200];
	memset(line, 'q', sizeof(line));
	assert_int_equal(feed_n(e, line, 998), 998);
	assert_int_equal(feed(e, "\r\n"), 2);  /* 1000 incl. CRLF: fine */
	assert_int_equal(e->aborts, 0);
	assert_int_equal(feed_n(e, line, 999), 999);
	assert_int_equal(feed(e, "\r\n"), 2);  /* 1001: too long */
	assert_int_equal(e->aborts, 1);
	assert_int_equal(e->abort_why, SMTP_EV_ABORT_LINE_LENGTH);
	say(e, "more\r\n.\r\n", "552 5.3.4 Message refused: text line too long\r\n");
	/* a line without end, beyond the limit, aborts at once */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
	for (int i = 0; i < 5; i++)
		feed_n(e, line, sizeof(line));
	assert_int_equal(e->aborts, 2);
	say(e, "\r\n.\r\n", "552 5.3.4 Message refused: text line too long\r\n");
	say(e, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	env_free(e);
}

static void
test_smtputf8(void **st)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<j\xc3\xb6rg@b.test>\r\n", "553 5.6.7 Non-ASCII sender address needs SMTPUTF8\r\n");
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	say(e, "RCPT TO:<\xc3\xb6@b.test>\r\n", "553 5.6.7 Non-ASCII recipient address needs SMTPUTF8\r\n");
	say(e, "RSET\r\n", "250 2.0.0 Ok\r\n");
	say(e, "MAIL FROM:<j\xc3\xb6rg@b.test> SMTPUTF8\r\n", "250 2.1.0 Ok\r\n");
	assert_true(e->txn.smtputf8);
	say(e, "RCPT TO:<\xc3\xb6@\xc3\xa9x.test>\r\n", "250 2.1.5 Ok\r\n");
	/* malformed UTF-8 is a syntax error */
	say(e, "RCPT TO:<\xc3@b.test>\r\n", "501 5.1.3 Bad recipient address syntax\r\n");
	say(e, "RCPT TO:<\xed\xa0\x80@b.test>\r\n", "501 5.1.3 Bad recipient address syntax\r\n");
	env_free(e);
}

static void
test_dsn(void **st)
{
	struct env *e = env_ehlo();
	say(e, "MAIL FROM:<a@b.test> RET=HDRS ENVID=QQ+2Bx123\r\n", "250 2.1.0 Ok\r\n");
	assert_int_equal(e->txn.ret, SMTP_RET_HDRS);
	assert_string_equal(e->envid, "QQ+2Bx123");
	say(e, "RCPT TO:<c@d.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40d.test\r\n", "250 2.1.5 Ok\r\n");
	assert_int_equal(e->notify[0], SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
	assert_string_equal(e->orcpt[0], "rfc822;c+40d.test");
	say(e, "RCPT TO:<x@d.test> NOTIFY=NEVER\r\n", "250 2.1.5 Ok\r\n");
	assert_int_equal(e->notify[1], SMTP_NOTIFY_NEVER);
	const struct smtp_txn *t = smtp_session_txn(e->s);
	assert_int_equal(t->nrcpt, 2);
	assert_string_equal(t->rcpt[0].orcpt, "rfc822;c+40d.test");
	assert_string_equal(t->envid, "QQ+2Bx123");
	const char *bad[][2] = {
		{ "RCPT TO:<c@d.test> NOTIFY=NEVER,SUCCESS\r\n", "501 5.5.4 Bad NOTIFY parameter\r\n" },
		{ "RCPT TO:<c@d.test> NOTIFY=SOMETIMES\r\n", "501 5.5.4 Bad NOTIFY parameter\r\n" },
		{ "RCPT TO:<c@d.test> NOTIFY=\r\n", "501 5.5.4 Bad NOTIFY parameter\r\n" },
		{ "RCPT TO:<c@d.test> NOTIFY=FAILURE,\r\n", "501 5.5.4 Bad NOTIFY parameter\r\n" },
		{ "RCPT TO:<c@d.test> ORCPT=rfc822\r\n", "501 5.5.4 Bad ORCPT parameter\r\n" },
		{ "RCPT TO:<c@d.test> ORCPT=rfc822;a+4\r\n", "501 5.5.4 Bad ORCPT parameter\r\n" },
		{ "RCPT TO:<c@d.test> ORCPT=;x\r\n", "501 5.5.4 Bad ORCPT parameter\r\n" },
	};
	e->conf.errors_max = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		say(e, bad[i][0], bad[i][1]);
	say(e, "RSET\r\n", "250 2.0.0 Ok\r\n");
	say(e, "MAIL FROM:<a@b.test> RET=ALL\r\n", "501 5.5.4 Bad RET parameter\r\n");
	say(e, "MAIL FROM:<a@b.test> ENVID=a=b\r\n", "501 5.5.4 Bad ENVID parameter\r\n");
	say(e, "MAIL FROM:<a@b.test> RET=FULL RET=FULL\r\n", "501 5.5.4 Bad RET parameter\r\n");
	say(e, "MAIL FROM:<a@b.test> RET=full\r\n", "250 2.1.0 Ok\r\n");
	assert_int_equal(e->txn.ret, SMTP_RET_FULL);
	env_free(e);
}

/* ---------------- DATA content and smuggling ---------------- */

enum split { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };

static void
feed_split(struct env *e, const char *p, size_t n, enum split how, unsigned *seed)
{
	size_t off = 0;
	while (off < n) {
		size_t k = n - off;
		if (how == SPLIT_BYTES)
			k = 1;
		else if (how == SPLIT_RANDOM)
			k = 1 + (size_t)rand_r(seed) % (k < 7 ? k : 7);
		size_t took = feed_n(e, p + off, k);
		if (took != k)
			fail_msg("split feed: got %zu consumed, want %zu", took, k);
		off += k;
	}
}

struct vec {
	const char *content;  /* after DATA's 354, through the real end */
	const char *want;     /* reply after the end + QUIT */
	const char *data;     /* content the hook must see (NULL: aborted) */
	int commands_after;   /* replies expected for commands smuggled: must be 0 */
};

#define TAIL "MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@d.test>\r\nDATA\r\nsmuggled\r\n"
#define REFUSED "550 5.6.0 Message refused: bare CR or LF in message content\r\n221 2.0.0 Bye\r\n"

static const struct vec vecs[] = {
	{ "a\r\n\n.\n" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r\n\r.\r" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r\n.\r" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\n.\r\n" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r.\r\n" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r\n.\n" TAIL "\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r\n.\r\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\rb\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\nb\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ ".\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", "", 0 },
	{ "a\r\n..\r\nb\r\n.\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", "a\r\n.\r\nb\r\n", 0 },
	{ "..a\r\n...\r\n.b.\r\n.\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", ".a\r\n..\r\nb.\r\n", 0 },
	{ "a\r\n\r\n.\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", "a\r\n\r\n", 0 },
	{ "x.\r\n. \r\n.\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", "x.\r\n \r\n", 0 },
	{ "\r\n.\r\nQUIT\r\n", "250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", "\r\n", 0 },
	{ "\n.\n\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "\r.\r\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "\r\n.\r\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
	{ "a\r\r\n.\r\nQUIT\r\n", REFUSED, NULL, 0 },
};

static void
run_vec(const struct vec *v, enum split how, unsigned seed)
{
	struct env *e = env_rcpt();
	say(e, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	feed_split(e, v->content, strlen(v->content), how, &seed);
	const char *o = drain(e);
	if (strcmp(o, v->want) != 0)
		fail_msg("vector \"%s\" split %d: got \"%s\", want \"%s\"", v->content, how, o, v->want);
	if (v->data != NULL) {
		if (e->data_len != strlen(v->data) || memcmp(e->data, v->data, e->data_len) != 0)
			fail_msg("vector \"%s\" split %d: got data \"%.*s\", want \"%s\"", v->content, how,
			         (int)e->data_len, e->data, v->data);
		assert_int_equal(e->aborts, 0);
	} else {
		assert_int_equal(e->aborts, 1);
		assert_int_equal(e->abort_why, SMTP_EV_ABORT_BARE_EOL);
		assert_int_equal(e->calls[H_DATA_END], 0);
	}
	/* nothing smuggled ran: MAIL hook called once (the real one) */
	assert_int_equal(e->calls[H_MAIL], 1);
	assert_int_equal(smtp_session_info(e->s)->transactions, 1);
	env_free(e);
}

static void
test_smuggling_vectors(void **st)
{
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		run_vec(&vecs[i], SPLIT_WHOLE, 0);
		run_vec(&vecs[i], SPLIT_BYTES, 0);
		for (unsigned seed = 1; seed < 40; seed++)
			run_vec(&vecs[i], SPLIT_RANDOM, seed);
	}
}

static void
test_data_large_spans(void **st)
{
	/* a 1 KB message in one input reaches the hook in one call */
	struct env *e = env_rcpt();
	say(e, "DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	char msg[1200];
	size_t n = 0;
	for (int i = 0; i < 16; i++) {
		memset(msg + n, 'a' + i, 62);
		memcpy(msg + n + 62, "\r\n", 2);
		n += 64;
	}
	memcpy(msg + n, ".\r\n", 3);
	assert_int_equal(feed_n(e, msg, n + 3), n + 3);
	assert_int_equal(e->data_calls, 1);
	assert_int_equal(e->data_len, n);
	check_str("end", drain(e), "250 2.0.0 Ok\r\n");
	env_free(e);
}

static void
test_data_end_pending(void **st)
{
	struct env *e = env_rcpt();
	e->act[H_DATA_END] = SMTP_HOOK_PENDING;
	const char *in = "DATA\r\nx\r\n.\r\nNOOP\r\n";
	size_t k = feed(e, in);
	assert_int_equal(k, strlen(in) - 6);
	assert_true(smtp_session_status(e->s) & SMTP_ST_PARKED);
	check_str("parked", drain(e), "354 End data with <CR><LF>.<CR><LF>\r\n");
	/* no timeout while parked */
	assert_int_equal(smtp_session_tick(e->s, e->now + 10000000), UINT64_MAX);
	struct smtp_reply r = { .code = 250, .enh = "2.0.0", .text = "Ok: queued as ABC" };
	smtp_session_resume(e->s, &r, e->now);
	say(e, in + k, "250 2.0.0 Ok: queued as ABC\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(e->resets, 2);  /* EHLO + after data end */
	/* data_start refused */
	e->act[H_DATA_START] = SMTP_HOOK_REPLY;
	e->rep[H_DATA_START] = (struct smtp_reply){ .code = 554, .text = "No thanks" };
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.7.1 No thanks\r\n");
	/* data_start pending */
	e->act[H_DATA_START] = SMTP_HOOK_PENDING;
	assert_int_equal(feed(e, "DATA\r\nabc\r\n.\r\n"), 6);
	smtp_session_resume(e->s, NULL, e->now);
	e->act[H_DATA_END] = SMTP_HOOK_OK;
	say(e, "abc\r\n.\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok\r\n");
	/* a hook reply with close */
	e->act[H_DATA_START] = SMTP_HOOK_OK;
	e->act[H_DATA_END] = SMTP_HOOK_REPLY;
	e->rep[H_DATA_END] = (struct smtp_reply){ .code = 421, .text = "Try later", .close = true };
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n421 4.0.0 Try later\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	env_free(e);
}

/* ---------------- BDAT ---------------- */

static void
test_bdat(void **st)
{
	struct env *e = env_rcpt();
	say(e, "BDAT 5\r\nhello", "250 2.0.0 5 octets received\r\n");
	assert_true(smtp_session_txn(e->s)->bdat);
	say(e, "BDAT 8 LAST\r\n\r\nx\r\n.\r\n", "250 2.0.0 Ok\r\n");
	assert_int_equal(e->data_len, 13);
	assert_memory_equal(e->data, "hello\r\nx\r\n.\r\n", 13);
	assert_int_equal(smtp_session_info(e->s)->transactions, 1);
	/* zero LAST */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 0 LAST\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok\r\n");
	/* CR at the end of one chunk, LF at the start of the next: a CRLF */
	e->data_len = 0;
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\nab\rBDAT 1 LAST\r\n\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(e->data_len, 4);
	assert_memory_equal(e->data, "ab\r\n", 4);
	/* bare LF across chunks, error remembered until LAST */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\nab\nBDAT 2\r\nxyBDAT 2 LAST\r\n\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n250 2.0.0 2 octets received\r\n"
	    "550 5.6.0 Message refused: bare CR or LF in message content\r\n");
	assert_int_equal(e->abort_why, SMTP_EV_ABORT_BARE_EOL);
	/* CR at the end of one chunk, not LF next */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\nab\rBDAT 2 LAST\r\nx\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 3 octets received\r\n"
	    "550 5.6.0 Message refused: bare CR or LF in message content\r\n");
	/* trailing bare CR at LAST */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3 LAST\r\nab\r",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.6.0 Message refused: bare CR or LF in message content\r\n");
	/* DATA after BDAT */
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 2\r\nabDATA\r\nRSET\r\n",
	    "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 2 octets received\r\n"
	    "503 5.5.1 Error: DATA after BDAT in the same transaction\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(e->abort_why, SMTP_EV_ABORT_RSET);
	/* BDAT before RCPT: chunk still read, its octets never commands */
	say(e, "MAIL FROM:<a@b.test>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n",
	    "250 2.1.0 Ok\r\n503 5.5.1 Error: need RCPT command\r\n250 2.0.0 Ok\r\n");
	say(e, "BDAT x\r\n", "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
	env_free(e);
}

static void
test_bdat_refused_and_size(void **st)
{
	struct env *e = env_rcpt();
	e->act[H_DATA_START] = SMTP_HOOK_REPLY;
	e->rep[H_DATA_START] = (struct smtp_reply){ .code = 550, .enh = "5.7.1", .text = "Go away" };
	say(e, "BDAT 6\r\nRSET\r\nNOOP\r\n", "550 5.7.1 Go away\r\n250 2.0.0 Ok\r\n");
	assert_int_equal(e->data_len, 0);
	/* after the refusal the transaction is gone */
	say(e, "BDAT 2 LAST\r\nxx", "503 5.5.1 Error: need MAIL command\r\n");
	e->act[H_DATA_START] = SMTP_HOOK_PENDING;
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	assert_int_equal(feed(e, "BDAT 4 LAST\r\nabcd"), 13);
	smtp_session_resume(e->s, NULL, e->now);
	say(e, "abcd", "250 2.0.0 Ok\r\n");
	/* size over the cap across chunks */
	e->act[H_DATA_START] = SMTP_HOOK_OK;
	say(e, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n");
	char buf[6100];
	memset(buf, 'x', sizeof(buf));
	for (int i = 0; i < 60; i++)
		memcpy(buf + i * 100 + 98, "\r\n", 2);
	for (int i = 0; i < 2; i++) {
		feed(e, "BDAT 6000\r\n");
		assert_int_equal(feed_n(e, buf, 6000), 6000);
		check_str("chunk", drain(e), "250 2.0.0 6000 octets received\r\n");
	}
	assert_int_equal(e->abort_why, SMTP_EV_ABORT_SIZE);
	say(e, "BDAT 1 LAST\r\nx", "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
	env_free(e);
}

static void
test_bdat_splits(void **st)
{
	const char *in = "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 4\r\nab\r\nBDAT 3 LAST\r\n.\r\n"
	                 "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 4 LAST\r\na\nb\rQUIT\r\n";
	const char *want = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 4 octets received\r\n250 2.0.0 Ok\r\n"
	                   "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	                   "550 5.6.0 Message refused: bare CR or LF in message content\r\n221 2.0.0 Bye\r\n";
	for (unsigned seed = 0; seed < 60; seed++) {
		struct env *e = env_ehlo();
		feed_split(e, in, strlen(in), seed == 0 ? SPLIT_WHOLE : seed == 1 ? SPLIT_BYTES : SPLIT_RANDOM,
		           &seed);
		check_str("bdat split", drain(e), want);
		assert_true(e->data_len >= 7);  /* the refused one may have begun */
		assert_memory_equal(e->data, "ab\r\n.\r\n", 7);
		env_free(e);
	}
}

/* ---------------- timers, greeting, connect ---------------- */

static void
test_timeouts(void **st)
{
	struct env *e = env_ehlo();
	uint64_t d = smtp_session_deadline(e->s);
	assert_int_equal(d, e->now + 300000);
	assert_int_equal(smtp_session_tick(e->s, d - 1), d);
	check_str("early tick", drain(e), "");
	e->now += 1000;
	say(e, "NOOP\r\n", "250 2.0.0 Ok\r\n");
	assert_int_equal(smtp_session_deadline(e->s), e->now + 300000);
	assert_int_equal(smtp_session_tick(e->s, e->now + 300000), UINT64_MAX);
	check_str("timeout", drain(e), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(e->ev[SMTP_EV_TIMEOUT], 1);
	env_free(e);

	/* data timeout aborts the message */
	e = env_rcpt();
	say(e, "DATA\r\nabc\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n");
	assert_int_equal(smtp_session_deadline(e->s), e->now + 600000);
	smtp_session_tick(e->s, e->now + 600000);
	check_str("data timeout", drain(e), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
	assert_int_equal(e->aborts, 1);
	assert_int_equal(e->abort_why, SMTP_EV_TIMEOUT);
	env_free(e);
}

static void
test_early_talker(void **st)
{
	struct smtp_server_conf c;
	conf_default(&c);
	c.greet_pause_ms = 3000;
	struct env *e = env_new_conf(&c, 0, true);
	check_str("no banner yet", drain(e), "");
	assert_int_equal(smtp_session_deadline(e->s), e->now + 3000);
	assert_int_equal(feed(e, "EHLO x\r\n"), 8);
	assert_int_equal(feed(e, "NOOP\r\n"), 6);
	assert_true(smtp_session_info(e->s)->early_talker);
	assert_int_equal(e->ev[SMTP_EV_EARLY_TALKER], 1);
	check_str("still no banner", drain(e), "");
	smtp_session_tick(e->s, e->now + 3000);
	/* banner first, then the early commands run */
	check_str("banner", drain(e), "220 mx.test ESMTP sluice\r\n250-mx.test\r\n250-PIPELINING\r\n"
	          "250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
	          "250 CHUNKING\r\n250 2.0.0 Ok\r\n");
	env_free(e);

	/* smtp.early_talker: reject: 554 instead of the banner, the early
	 * commands refused, QUIT served */
	c.early_talker_reject = true;
	e = env_new_conf(&c, 0, true);
	assert_int_equal(feed(e, "EHLO x\r\n"), 8);
	smtp_session_tick(e->s, e->now + 3000);
	check_str("refused", drain(e), "554 5.5.1 mx.test Error: talked before the greeting\r\n"
	          "503 5.7.0 Error: connection refused, only QUIT\r\n");
	say(e, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	env_free(e);

	/* a patient client is not flagged (and, with reject on, greeted) */
	e = env_new_conf(&c, 0, true);
	smtp_session_tick(e->s, e->now + 3000);
	check_str("banner", drain(e), BANNER);
	say(e, "EHLO x\r\n", EHLO_REPLY);
	assert_false(smtp_session_info(e->s)->early_talker);
	assert_int_equal(e->ev[SMTP_EV_EARLY_TALKER], 0);
	env_free(e);
}

static void
test_connect_hook(void **st)
{
	struct env *e = env_new_conf(NULL, 0, false);
	e->act[H_CONNECT] = SMTP_HOOK_REPLY;
	e->rep[H_CONNECT] = (struct smtp_reply){ .code = 554, .text = "Listed", .close = true };
	smtp_session_start(e->s, e->now);
	check_str("refused", drain(e), "554 5.7.1 Listed\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	env_free(e);

	e = env_new_conf(NULL, 0, false);
	e->act[H_CONNECT] = SMTP_HOOK_REPLY;
	e->rep[H_CONNECT] = (struct smtp_reply){ .code = 554, .enh = "5.7.1", .text = "Listed" };
	smtp_session_start(e->s, e->now);
	check_str("refused", drain(e), "554 5.7.1 Listed\r\n");
	say(e, "EHLO x\r\n", "503 5.7.0 Error: connection refused, only QUIT\r\n");
	say(e, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	env_free(e);

	e = env_new_conf(NULL, 0, false);
	e->act[H_CONNECT] = SMTP_HOOK_PENDING;
	smtp_session_start(e->s, e->now);
	assert_true(smtp_session_status(e->s) & SMTP_ST_PARKED);
	assert_int_equal(feed(e, "EHLO x\r\n"), 8);  /* before the banner: held */
	assert_true(smtp_session_info(e->s)->early_talker);
	smtp_session_resume(e->s, NULL, e->now);
	check_str("banner+ehlo", drain(e), "220 mx.test ESMTP sluice\r\n250-mx.test\r\n250-PIPELINING\r\n"
	          "250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
	          "250 CHUNKING\r\n");
	env_free(e);
}

/* A held connect refusal (tarpit): one continuation line at once, one per
 * interval, input read and dropped, the last line at the end of the hold,
 * then only QUIT; the only timer is the tarpit's (no 421 timeout). */
static void
test_tarpit(void **st)
{
	struct smtp_server_conf c;
	conf_default(&c);
	c.tarpit_interval_ms = 10000;
	c.timeout_command_ms = 5000;  /* shorter than the hold: must not fire */
	struct env *e = env_new_conf(&c, 0, false);
	e->act[H_CONNECT] = SMTP_HOOK_REPLY;
	e->rep[H_CONNECT] = (struct smtp_reply){ .code = 554, .enh = "5.7.1", .text = "Listed",
	                                         .hold_ms = 25000 };
	smtp_session_start(e->s, e->now);
	check_str("first line", drain(e), "554-5.7.1 Listed\r\n");
	assert_false(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(smtp_session_deadline(e->s), e->now + 10000);
	/* the client talks: read, dropped, never answered */
	assert_int_equal(feed(e, "EHLO spammer\r\nMAIL FROM:<a@b>\r\n"), 31);
	check_str("input dropped", drain(e), "");
	e->now += 10000;
	smtp_session_tick(e->s, e->now);
	check_str("second line", drain(e), "554-5.7.1 Listed\r\n");
	e->now += 10000;
	smtp_session_tick(e->s, e->now);
	check_str("third line", drain(e), "554-5.7.1 Listed\r\n");
	/* the end of the hold comes before the next interval */
	assert_int_equal(smtp_session_deadline(e->s), 1000 + 25000);
	e->now = 1000 + 25000;
	smtp_session_tick(e->s, e->now);
	check_str("last line", drain(e), "554 5.7.1 Listed\r\n");
	say(e, "EHLO x\r\n", "503 5.7.0 Error: connection refused, only QUIT\r\n");
	say(e, "QUIT\r\n", "221 2.0.0 Bye\r\n");
	env_free(e);

	/* a client that reads nothing: lines stop at the output's high-water
	 * mark instead of growing the buffer */
	e = env_new_conf(&c, 0, false);
	e->act[H_CONNECT] = SMTP_HOOK_REPLY;
	e->rep[H_CONNECT] = (struct smtp_reply){ .code = 421, .text = "go away", .close = true,
	                                         .hold_ms = 3600000 };
	smtp_session_start(e->s, e->now);
	for (int i = 0; i < 300; i++) {  /* 3,000 s of the 3,600 s hold */
		e->now += 10000;
		smtp_session_tick(e->s, e->now);
	}
	const uint8_t *p;
	size_t n = smtp_session_output(e->s, &p);
	assert_true(n > 0 && n < 4096);
	assert_memory_equal(p, "421-4.7.1 go away\r\n", 19);
	drain(e);
	e->now = 1000 + 3600000;
	smtp_session_tick(e->s, e->now);
	check_str("421 at the end", drain(e), "421 4.7.1 go away\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	env_free(e);
}

static void
test_hooks_null_and_helo_refused(void **st)
{
	struct env *e = env_new_conf(NULL, 0, false);
	memset(&e->hooks, 0, sizeof(e->hooks));
	smtp_session_start(e->s, e->now);
	drain(e);
	say(e, "EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nhi\r\n.\r\n",
	    "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
	    "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok\r\n");
	env_free(e);

	e = env_new();
	drain(e);
	e->act[H_HELO] = SMTP_HOOK_REPLY;
	e->rep[H_HELO] = (struct smtp_reply){ .code = 550, .text = "Bad HELO\r\nfake: injected" };
	say(e, "EHLO x\r\n", "550 5.7.1 Bad HELO??fake: injected\r\n");
	say(e, "MAIL FROM:<a@b.test>\r\n", "503 5.5.1 Error: send HELO/EHLO first\r\n");
	e->act[H_HELO] = SMTP_HOOK_PENDING;
	assert_int_equal(feed(e, "HELO y\r\nNOOP\r\n"), 8);
	smtp_session_resume(e->s, NULL, e->now);
	say(e, "NOOP\r\n", "250 mx.test\r\n250 2.0.0 Ok\r\n");
	e->act[H_MAIL] = SMTP_HOOK_REPLY;
	e->rep[H_MAIL] = (struct smtp_reply){ .code = 451, .text = "Greylisted" };
	say(e, "MAIL FROM:<a@b.test>\r\n", "451 4.1.0 Greylisted\r\n");
	say(e, "RCPT TO:<c@d.test>\r\n", "503 5.5.1 Error: need MAIL command\r\n");
	env_free(e);
}

static void
test_output_backpressure(void **st)
{
	struct env *e = env_ehlo();
	static char big[60000];
	size_t n = 0;
	while (n + 6 <= sizeof(big)) {
		memcpy(big + n, "NOOP\r\n", 6);
		n += 6;
	}
	size_t k = feed_n(e, big, n);
	assert_true(k < n);
	assert_true(smtp_session_status(e->s) & SMTP_ST_OUTFULL);
	const uint8_t *p;
	size_t o = smtp_session_output(e->s, &p);
	assert_true(o <= 4096);
	size_t total = 0;
	while (k < n) {
		drain(e);
		total++;
		size_t t = feed_n(e, big + k, n - k);
		assert_true(t > 0);
		k += t;
	}
	assert_true(total > 10);
	env_free(e);
}

/* ---------------- PROXY ---------------- */

static void
test_proxy(void **st)
{
	struct env *e = env_new_conf(NULL, SMTP_SESS_PROXY, true);
	check_str("no banner before header", drain(e), "");
	const char *h = "PROXY TCP4 198.51.100.9 203.0.113.1 5555 25\r\n";
	assert_int_equal(feed_n(e, h, 10), 10);
	assert_int_equal(feed(e, h + 10), strlen(h) - 10);
	check_str("banner", drain(e), BANNER);
	const struct smtp_conn_info *ci = smtp_session_info(e->s);
	assert_true(ci->proxied);
	assert_string_equal(ci->peer_str, "198.51.100.9");
	assert_int_equal(ci->peer_port, 5555);
	assert_int_equal(e->calls[H_CONNECT], 1);
	say(e, "EHLO x\r\n", EHLO_REPLY);
	env_free(e);

	e = env_new_conf(NULL, SMTP_SESS_PROXY, true);
	feed(e, "EHLO x\r\n");
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(e->ev[SMTP_EV_PROXY_BAD], 1);
	check_str("no reply", drain(e), "");
	assert_int_equal(e->calls[H_CONNECT], 0);
	env_free(e);

	e = env_new_conf(NULL, SMTP_SESS_PROXY, true);
	smtp_session_tick(e->s, e->now + 300000);
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	check_str("no reply", drain(e), "");
	env_free(e);
}

/* ---------------- STARTTLS ---------------- */

static SSL_CTX *
server_ctx(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"mx.test", -1, -1, 0);
	X509_set_issuer_name(x, nm);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	SSL_CTX *c = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(c, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(c, k), 1);
	X509_free(x);
	EVP_PKEY_free(k);
	return c;
}

struct tclient {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *r, *w;
};

static void
tclient_new(struct tclient *c)
{
	c->ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
	c->ssl = SSL_new(c->ctx);
	c->r = BIO_new(BIO_s_mem());
	c->w = BIO_new(BIO_s_mem());
	SSL_set_bio(c->ssl, c->r, c->w);
	SSL_set_connect_state(c->ssl);
}

static void
tclient_free(struct tclient *c)
{
	SSL_free(c->ssl);
	SSL_CTX_free(c->ctx);
}

/* Move bytes both ways until neither side has anything to say. */
static void
shuttle(struct env *e, struct tclient *c)
{
	for (int i = 0; i < 50; i++) {
		bool moved = false;
		if (!SSL_is_init_finished(c->ssl))
			SSL_do_handshake(c->ssl);
		char buf[16384];
		int n;
		while ((n = BIO_read(c->w, buf, sizeof(buf))) > 0) {
			size_t k = feed_n(e, buf, (size_t)n);
			assert_int_equal(k, (size_t)n);
			moved = true;
		}
		const uint8_t *p;
		size_t k;
		while ((k = smtp_session_output(e->s, &p)) > 0) {
			BIO_write(c->r, p, (int)k);
			smtp_session_sent(e->s, k);
			moved = true;
		}
		if (!moved && SSL_is_init_finished(c->ssl))
			return;
		if (smtp_session_status(e->s) & SMTP_ST_CLOSE)
			return;
	}
}

/* Client: send plaintext over TLS, return what came back decrypted. */
static const char *
tls_say(struct env *e, struct tclient *c, const char *send)
{
	static char got[8192];
	size_t n = 0;
	if (*send)
		assert_true(SSL_write(c->ssl, send, (int)strlen(send)) > 0);
	shuttle(e, c);
	int r;
	while ((r = SSL_read(c->ssl, got + n, (int)(sizeof(got) - 1 - n))) > 0)
		n += (size_t)r;
	got[n] = '\0';
	return got;
}

static void
test_starttls(void **st)
{
	struct smtp_server_conf conf;
	conf_default(&conf);
	conf.tls_ctx = server_ctx();
	struct env *e = env_new_conf(&conf, 0, true);
	drain(e);
	const char *ehlo_tls =
		"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
		"250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
	say(e, "EHLO c\r\n", ehlo_tls);
	say(e, "MAIL FROM:<a@b.test>\r\n", "250 2.1.0 Ok\r\n");
	say(e, "STARTTLS\r\n", "503 5.5.1 Error: STARTTLS inside a mail transaction\r\n");
	say(e, "RSET\r\n", "250 2.0.0 Ok\r\n");
	/* the injection: RSET pipelined after STARTTLS in the same input */
	int resets = e->resets;
	say(e, "STARTTLS\r\nRSET\r\nMAIL FROM:<evil@x.test>\r\n", "220 2.0.0 Ready to start TLS\r\n");
	assert_int_equal(e->ev[SMTP_EV_PLAINTEXT_DISCARDED], 1);
	assert_int_equal(e->resets, resets + 1);  /* the STARTTLS reset only */
	assert_int_equal(e->calls[H_MAIL], 1);
	struct tclient c;
	tclient_new(&c);
	shuttle(e, &c);
	assert_true(SSL_is_init_finished(c.ssl));
	assert_int_equal(e->ev[SMTP_EV_TLS_UP], 1);
	const struct smtp_conn_info *ci = smtp_session_info(e->s);
	assert_true(ci->tls);
	assert_true(strncmp(ci->tls_version, "TLS", 3) == 0);
	assert_true(ci->tls_cipher[0] != '\0');
	/* the session forgot EHLO */
	check_str("after tls", tls_say(e, &c, "MAIL FROM:<a@b.test>\r\n"),
	          "503 5.5.1 Error: send HELO/EHLO first\r\n");
	check_str("ehlo", tls_say(e, &c, "EHLO c\r\n"), EHLO_REPLY);
	check_str("second starttls", tls_say(e, &c, "STARTTLS\r\n"), "503 5.5.1 Error: TLS already active\r\n");
	check_str("txn", tls_say(e, &c, "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nsecret\r\n.\r\n"),
	          "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok\r\n");
	assert_memory_equal(e->data, "secret\r\n", 8);
	/* park under TLS: decrypted bytes wait inside, resume continues */
	e->act[H_MAIL] = SMTP_HOOK_PENDING;
	check_str("parked", tls_say(e, &c, "MAIL FROM:<a@b.test>\r\nNOOP\r\n"), "");
	assert_true(smtp_session_status(e->s) & SMTP_ST_PARKED);
	smtp_session_resume(e->s, NULL, e->now);
	check_str("resumed", tls_say(e, &c, ""), "250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n");
	check_str("quit", tls_say(e, &c, "QUIT\r\n"), "221 2.0.0 Bye\r\n");
	tclient_free(&c);
	env_free(e);

	/* handshake failure: garbage instead of a ClientHello */
	e = env_new_conf(&conf, 0, true);
	drain(e);
	feed(e, "EHLO c\r\nSTARTTLS\r\n");
	drain(e);
	feed(e, "EHLO this is not TLS\r\n");
	assert_int_equal(e->ev[SMTP_EV_TLS_FAILED], 1);
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	env_free(e);

	/* handshake timeout */
	e = env_new_conf(&conf, 0, true);
	drain(e);
	feed(e, "EHLO c\r\nSTARTTLS\r\n");
	drain(e);
	assert_int_equal(smtp_session_deadline(e->s), e->now + 30000);
	smtp_session_tick(e->s, e->now + 30000);
	assert_true(smtp_session_status(e->s) & SMTP_ST_CLOSE);
	assert_int_equal(e->ev[SMTP_EV_TIMEOUT], 1);
	env_free(e);

	/* TLS required */
	conf.tls_required = true;
	e = env_new_conf(&conf, 0, true);
	drain(e);
	say(e, "EHLO c\r\n", ehlo_tls);
	say(e, "MAIL FROM:<a@b.test>\r\n", "530 5.7.0 Must issue a STARTTLS command first\r\n");
	env_free(e);
	SSL_CTX_free(conf.tls_ctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_ehlo_helo),
		cmocka_unit_test(test_transaction),
		cmocka_unit_test(test_pipelining_batch),
		cmocka_unit_test(test_pipelining_park_resume),
		cmocka_unit_test(test_sequence_errors),
		cmocka_unit_test(test_misc_commands),
		cmocka_unit_test(test_bare_eol_command),
		cmocka_unit_test(test_cmd_line_too_long),
		cmocka_unit_test(test_errors_max),
		cmocka_unit_test(test_rcpt_max_and_arena),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_text_line_too_long),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_dsn),
		cmocka_unit_test(test_smuggling_vectors),
		cmocka_unit_test(test_data_large_spans),
		cmocka_unit_test(test_data_end_pending),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_bdat_refused_and_size),
		cmocka_unit_test(test_bdat_splits),
		cmocka_unit_test(test_timeouts),
		cmocka_unit_test(test_early_talker),
		cmocka_unit_test(test_connect_hook),
		cmocka_unit_test(test_tarpit),
		cmocka_unit_test(test_hooks_null_and_helo_refused),
		cmocka_unit_test(test_output_backpressure),
		cmocka_unit_test(test_proxy),
		cmocka_unit_test(test_starttls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
