/*
 * fuzz_smtp.c - libFuzzer target for the SMTP engine.
 *
 * Input: two configuration octets, then the client's byte stream.
 *   byte 0: bit 0 PROXY listener, bit 1 greet pause, bits 2..7 which hooks
 *           answer PENDING (then resumed with OK / 250 / 550 in turn)
 *   byte 1: seed for the split points and small limits
 * The stream is fed in pieces of 1..64 octets, with timer ticks in between.
 * Checked: every reply line is "ddd" SP/"-" ... CRLF, input never stalls
 * unless the session is parked or closing, data_bytes matches the hook.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

struct fz {
	uint8_t pend_mask;
	unsigned calls;
	unsigned resumes;
	uint64_t seen;
	bool in_data;
};

static int
answer(struct fz *f, unsigned bit, struct smtp_reply *r)
{
	f->calls++;
	if ((f->pend_mask & (1u << bit)) && (f->calls & 1))
		return SMTP_HOOK_PENDING;
	if ((f->calls % 7) == 3) {
		r->code = 550;
		memcpy(r->text, "no", 3);
		return SMTP_HOOK_REPLY;
	}
	return SMTP_HOOK_OK;
}

static int
h_connect(void *c, struct smtp_session *s, struct smtp_reply *r)
{
	return (((struct fz *)c)->pend_mask & 1) ? SMTP_HOOK_PENDING : SMTP_HOOK_OK;
}

static int
h_helo(void *c, struct smtp_session *s, const char *n, struct smtp_reply *r)
{
	if (strlen(n) > 255)
		__builtin_trap();
	return answer(c, 1, r);
}

static int
h_mail(void *c, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	if (t->mail_from == NULL)
		__builtin_trap();
	return answer(c, 2, r);
}

static int
h_rcpt(void *c, struct smtp_session *s, const struct smtp_txn *t, const struct smtp_rcpt *rc,
       struct smtp_reply *r)
{
	if (rc->addr == NULL || strlen(rc->addr) == 0)
		__builtin_trap();
	return answer(c, 3, r);
}

static int
h_data_start(void *c, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct fz *f = c;
	if (t->nrcpt == 0)
		__builtin_trap();
	f->seen = 0;
	return answer(c, 4, r);
}

static void
h_data(void *c, struct smtp_session *s, const uint8_t *p, size_t n)
{
	struct fz *f = c;
	if (n == 0)
		__builtin_trap();
	f->seen += n;
	if (smtp_session_txn(s)->data_bytes != f->seen)
		__builtin_trap();
}

static int
h_data_end(void *c, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r)
{
	struct fz *f = c;
	if (t->data_bytes != f->seen)
		__builtin_trap();
	return answer(c, 5, r);
}

static void
check_output(const uint8_t *p, size_t n, bool *bol)
{
	/* Cheap shape check: CR only before LF, LF only after CR. */
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n' && (i == 0 ? !*bol : p[i - 1] != '\r'))
			__builtin_trap();
		if (p[i] == '\r' && i + 1 < n && p[i + 1] != '\n')
			__builtin_trap();
	}
	*bol = n > 0 && p[n - 1] == '\r';
}

static void
drain(struct smtp_session *s, bool *cr)
{
	const uint8_t *p;
	size_t k;
	while ((k = smtp_session_output(s, &p)) > 0) {
		check_output(p, k, cr);
		smtp_session_sent(s, k);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	uint8_t c0 = data[0], c1 = data[1];
	data += 2;
	size -= 2;
	struct smtp_server_conf conf = {
		.hostname = "mx.fuzz",
		.banner = "ESMTP",
		.cmd_line_max = 128 + (c1 & 3) * 200,
		.text_line_max = 100 + (c1 & 4) * 200,
		.message_size_max = 3000,
		.rcpt_max = 3 + (c1 & 8),
		.errors_max = 30,
		.greet_pause_ms = (c0 & 2) ? 100 : 0,
		.timeout_command_ms = 5000,
		.timeout_data_ms = 7000,
		.timeout_tls_ms = 1000,
		.junk_max = (c1 & 16) ? 5 : 0,
		.tarpit_interval_ms = 50,
	};
	struct fz f = { .pend_mask = (uint8_t)(c0 >> 1) };
	struct smtp_hooks hooks = {
		.connect = h_connect, .helo = h_helo, .mail = h_mail, .rcpt = h_rcpt,
		.data_start = h_data_start, .data = h_data, .data_end = h_data_end,
	};
	size_t sz = smtp_session_size(&conf);
	void *mem = aligned_alloc(64, (sz + 63) & ~(size_t)63);
	struct smtp_session *s = mem;
	uint64_t now = 1000;
	bool cr = false;
	smtp_session_init(s, &conf, &hooks, &f, NULL, NULL, (c0 & 1) ? SMTP_SESS_PROXY : 0, now);
	smtp_session_start(s, now);
	unsigned rng = c1 * 2654435761u + 1;
	size_t off = 0;
	int stall = 0;
	while (off < size && !(smtp_session_status(s) & SMTP_ST_CLOSE)) {
		rng = rng * 1103515245u + 12345u;
		size_t k = 1 + (rng >> 16) % 64;
		if (k > size - off)
			k = size - off;
		size_t took = smtp_session_input(s, data + off, k, now);
		if (took > k)
			__builtin_trap();
		off += took;
		drain(s, &cr);
		unsigned st = smtp_session_status(s);
		if (st & SMTP_ST_PARKED) {
			/* a held refusal (tarpit) when it answers the connect hook */
			struct smtp_reply r = { .code = (f.resumes % 3) == 1 ? 250 : 550,
			                        .hold_ms = (c1 & 32) ? 200 : 0 };
			smtp_session_resume(s, (f.resumes++ % 3) == 0 ? NULL : &r, now);
			drain(s, &cr);
		}
		if (took == 0 && !(st & (SMTP_ST_PARKED | SMTP_ST_CLOSE))) {
			/* greet pause or output full: time must move it along */
			if (++stall > 100)
				__builtin_trap();
			now += 50;
		} else {
			stall = 0;
		}
		if (((rng >> 8) & 15) == 0)
			now += 1 + ((rng >> 12) & 4095);
		smtp_session_tick(s, now);
		drain(s, &cr);
	}
	smtp_session_fini(s);
	free(mem);
	return 0;
}
