/*
 * data.c - message content: DATA (dot-stuffed, RFC 5321 4.1.1.4, 4.5.2)
 * and BDAT chunks (RFC 3030), scanned in place.
 *
 * The scanner is a five-state machine driven by a search for the first CR
 * or LF (find_eol), so a clean line costs one vector pass and no per-byte
 * work. Content goes to
 * the data hook in the largest spans the input allows (many lines per call);
 * only a leading stuffed dot splits a span.
 *
 * Smuggling rules: only CRLF "." CRLF ends DATA; a CR not followed by LF or
 * an LF not preceded by CR anywhere in the content refuses the message
 * (550 5.6.0). A CR ending one input (or one BDAT chunk) is held back until
 * the next octet shows whether it is half of a CRLF.
 *
 * Errors (bare CR/LF, text line over text_line_max, size over
 * message_size_max) call data_abort at once, stop the data hook, and are
 * answered once, after the end of the content:
 *   bare CR/LF   550 5.6.0   line too long   552 5.3.4   size   552 5.3.4
 */
#include "smtp/smtp_impl.h"

#include <stdio.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The first CR or LF in [p, e), or NULL: one pass, 16 octets a step where
 * SSE2 is there (every x86-64), where two memchr() calls per line cost
 * twice the loads and two calls. */
static inline const uint8_t *
find_eol(const uint8_t *p, const uint8_t *e)
{
#if defined(__SSE2__)
	const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n');
	while (e - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, cr),
		                                                      _mm_cmpeq_epi8(v, lf)));
		if (m != 0)
			return p + __builtin_ctz(m);
		p += 16;
	}
#endif
	for (; p < e; p++)
		if (*p == '\r' || *p == '\n')
			return p;
	return NULL;
}

static void
fail(struct smtp_session *s, enum smtp_event why)
{
	struct smtp_data_state *d = &s->d;
	if (d->err == 0)
		d->err = (uint8_t)why;
	if (d->started) {
		d->started = false;
		if (s->hooks->data_abort != NULL)
			s->hooks->data_abort(s->ctx, s, &s->txn, why);
	}
}

static inline void
emit(struct smtp_session *s, const uint8_t *p, size_t n)
{
	if (n == 0 || !s->d.started)
		return;
	if (s->size_max != 0 && s->txn.data_bytes + n > s->size_max) {
		fail(s, SMTP_EV_ABORT_SIZE);
		return;
	}
	s->txn.data_bytes += n;
	if (s->hooks->data != NULL)
		s->hooks->data(s->ctx, s, p, n);
}

static inline void
line_len_check(struct smtp_session *s, uint64_t ll)
{
	if (s->text_max != 0 && ll > s->text_max)
		fail(s, SMTP_EV_ABORT_LINE_LENGTH);
}

/* Scan content; *end set (DATA only) after the final CRLF "." CRLF, and
 * the return value then counts octets up to and including it. */
static size_t
scan(struct smtp_session *s, const uint8_t *p, size_t n, bool dot, bool *end)
{
	struct smtp_data_state *d = &s->d;
	const uint8_t *e = p + n;
	size_t pos = 0, span = 0;
	uint64_t ll = d->line_len;
	*end = false;
	while (pos < n) {
		switch (d->ds) {
		case SMTP_DS_BOL:
			if (p[pos] == '.') {
				emit(s, p + span, pos - span);
				span = ++pos;
				ll = 1;
				d->ds = SMTP_DS_DOT;
				continue;
			}
			d->ds = SMTP_DS_TEXT;
			break;
		case SMTP_DS_DOT:
			if (p[pos] == '\r') {
				span = ++pos;  /* CR held back */
				ll++;
				d->ds = SMTP_DS_DOTCR;
				continue;
			}
			d->ds = SMTP_DS_TEXT;  /* the stuffed dot is dropped */
			break;
		case SMTP_DS_DOTCR:
			if (p[pos] == '\n') {
				pos++;
				*end = true;
				d->ds = SMTP_DS_BOL;
				d->line_len = 0;
				return pos;
			}
			fail(s, SMTP_EV_ABORT_BARE_EOL);
			d->ds = SMTP_DS_TEXT;
			break;
		case SMTP_DS_CR:
			if (p[pos] == '\n') {
				emit(s, (const uint8_t *)"\r", 1);
				pos++;
				line_len_check(s, ll + 1);
				ll = 0;
				d->ds = dot ? SMTP_DS_BOL : SMTP_DS_TEXT;
				continue;
			}
			fail(s, SMTP_EV_ABORT_BARE_EOL);
			d->ds = SMTP_DS_TEXT;
			break;
		case SMTP_DS_TEXT: {
			/* The first CR or LF decides: CR LF ends a clean line; an
			 * LF first is a bare LF; a CR not followed by LF is a bare
			 * CR, unless it is the last octet (held back). */
			const uint8_t *q = p + pos;
			const uint8_t *x = find_eol(q, e);
			if (x != NULL && *x == '\r' && x + 1 < e && x[1] == '\n') {
				size_t l = (size_t)(x + 1 - q);
				if (s->text_max != 0 && ll + l + 1 > s->text_max)
					fail(s, SMTP_EV_ABORT_LINE_LENGTH);
				ll = 0;
				pos += l + 1;
				/* BOL without a dot is TEXT again: skip the round trip */
				if (dot && (pos == n || p[pos] == '.'))
					d->ds = SMTP_DS_BOL;
				continue;
			}
			if (x == NULL) {
				ll += (size_t)(e - q);
				pos = n;
				line_len_check(s, ll);
			} else if (*x == '\n') {
				fail(s, SMTP_EV_ABORT_BARE_EOL);  /* bare LF */
				ll += (size_t)(x - q) + 1;
				pos = (size_t)(x - p) + 1;
			} else if (x == e - 1) {
				ll += (size_t)(e - q);
				emit(s, p + span, (size_t)(x - p) - span);
				span = pos = n;
				d->ds = SMTP_DS_CR;
				line_len_check(s, ll);
			} else {
				fail(s, SMTP_EV_ABORT_BARE_EOL);  /* bare CR */
				ll += (size_t)(x - q) + 1;
				pos = (size_t)(x - p) + 1;
			}
			if (s->text_max != 0 && ll > (uint64_t)s->text_max + 1)
				ll = (uint64_t)s->text_max + 1;  /* no overflow on endless lines */
			break;
		}
		}
	}
	emit(s, p + span, pos - span);
	d->line_len = ll;
	return pos;
}

static void
txn_done(struct smtp_session *s)
{
	s->info.transactions++;
	smtp_txn_reset(s, SMTP_EV_ABORT_RSET);
}

static void
data_end_answer(struct smtp_session *s, int res, struct smtp_reply *r)
{
	if (res == SMTP_HOOK_OK) {
		smtp_out_put(s, "250 2.0.0 Ok\r\n", 14);
		s->junk = 0;
	} else {
		/* smtp_reply_hook normalizes (a code out of range becomes 451):
		 * the same test without normalizing twice. */
		if (r->code >= 200 && r->code < 400)
			s->junk = 0;
		smtp_reply_hook(s, r, "2.0.0", false);
	}
	txn_done(s);
}

void
smtp_data_end_resume(struct smtp_session *s, const struct smtp_reply *r0)
{
	struct smtp_reply r = { 0 };
	if (r0 != NULL)
		r = *r0;
	data_end_answer(s, r0 != NULL ? SMTP_HOOK_REPLY : SMTP_HOOK_OK, &r);
}

/* End of content (final dot, BDAT LAST): one reply for the message. */
static void
finish(struct smtp_session *s)
{
	struct smtp_data_state *d = &s->d;
	s->mode = SMTP_M_CMD;
	switch (d->err) {
	case 0:
		break;
	case SMTP_EV_ABORT_BARE_EOL:
		smtp_reply(s, 550, "5.6.0", "Message refused: bare CR or LF in message content");
		txn_done(s);
		return;
	case SMTP_EV_ABORT_LINE_LENGTH:
		smtp_reply(s, 552, "5.3.4", "Message refused: text line too long");
		txn_done(s);
		return;
	default:
		smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		txn_done(s);
		return;
	}
	d->started = false;
	struct smtp_reply r = { 0 };
	int res = SMTP_HOOK_OK;
	if (s->hooks->data_end != NULL)
		res = s->hooks->data_end(s->ctx, s, &s->txn, &r);
	if (res == SMTP_HOOK_PENDING) {
		s->pend = SMTP_P_DATA_END;
		return;
	}
	data_end_answer(s, res, &r);
}

static void
scan_reset(struct smtp_session *s, bool dot)
{
	struct smtp_data_state *d = &s->d;
	d->ds = dot ? SMTP_DS_BOL : SMTP_DS_TEXT;
	d->err = 0;
	d->line_len = 0;
	s->txn.data_bytes = 0;
}

void
smtp_data_begin(struct smtp_session *s)
{
	scan_reset(s, true);
	s->mode = SMTP_M_DATA;
}

void
smtp_bdat_begin(struct smtp_session *s)
{
	if (!s->d.refused && !(s->state & SMTP_S_BDATX))
		scan_reset(s, false);
	s->mode = SMTP_M_BDAT;
	if (s->d.chunk_left == 0)
		smtp_bdat_chunk_done(s);
}

void
smtp_bdat_chunk_done(struct smtp_session *s)
{
	struct smtp_data_state *d = &s->d;
	s->mode = SMTP_M_CMD;
	if (d->refused) {
		d->refused = false;
		smtp_reply_hook(s, &d->chunk_reply, "5.5.1", true);
		if (d->reset_after) {
			d->reset_after = false;
			smtp_txn_reset(s, SMTP_EV_ABORT_HOOK);
		}
		return;
	}
	if (!d->last) {
		s->state = SMTP_S_BDATX;
		char num[24];
		size_t k = smtp_u64_str(num, d->chunk_size);
		smtp_reply_parts(s, "250 2.0.0 ", 10, num, k, " octets received", 16);
		return;
	}
	if (d->ds == SMTP_DS_CR)
		fail(s, SMTP_EV_ABORT_BARE_EOL);  /* the message ended in a bare CR */
	finish(s);
}

size_t
smtp_data_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	bool end;
	if (s->mode == SMTP_M_BDAT) {
		struct smtp_data_state *d = &s->d;
		size_t k = n < d->chunk_left ? n : (size_t)d->chunk_left;
		if (!d->refused)
			scan(s, p, k, false, &end);
		d->chunk_left -= k;
		if (d->chunk_left == 0)
			smtp_bdat_chunk_done(s);
		return k;
	}
	size_t k = scan(s, p, n, true, &end);
	if (end)
		finish(s);
	return k;
}
