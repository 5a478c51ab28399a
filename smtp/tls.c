/*
 * tls.c - STARTTLS (RFC 3207) over OpenSSL memory BIOs.
 *
 * Network bytes go into the read BIO; SSL_read's plaintext lands in the
 * session's hold buffer and runs through the same parser as cleartext.
 * Replies collect in the output buffer as plaintext and are SSL_written in
 * one batch at the end of each engine call; the caller pulls ciphertext from
 * the write BIO through a small stage buffer. Bytes queued before STARTTLS
 * (the "220 Ready" reply) are sent in the clear first: out[0, out_net).
 *
 * After "220 2.0.0 Ready to start TLS" everything else in that input is
 * thrown away (CVE-2011-0411 class injection), the session forgets HELO and
 * the transaction, and a handshake failure closes the connection.
 */
#include "smtp/smtp_impl.h"

#include <errno.h>
#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

size_t
smtp_tls_pending(const struct smtp_session *s)
{
	return (s->stage_len - s->stage_off) + BIO_ctrl_pending(s->wbio);
}

int
smtp_tls_start(struct smtp_session *s)
{
	SSL *ssl = SSL_new(s->conf->tls_ctx);
	if (ssl == NULL) {
		ERR_clear_error();
		return -ENOMEM;
	}
	BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
	if (r == NULL || w == NULL) {
		BIO_free(r);
		BIO_free(w);
		SSL_free(ssl);
		ERR_clear_error();
		return -ENOMEM;
	}
	BIO_set_mem_eof_return(r, -1);
	SSL_set_bio(ssl, r, w);
	SSL_set_accept_state(ssl);
	smtp_reply(s, 220, "2.0.0", "Ready to start TLS");
	s->ssl = ssl;
	s->rbio = r;
	s->wbio = w;
	s->out_net = s->out_len;  /* all so far leaves in the clear */
	s->mode = SMTP_M_TLS_HS;
	s->t_tls = s->t_last;
	s->lbuf_len = 0;
	s->discard = false;
	/* RFC 3207 4.2: forget everything learnt from the client. */
	smtp_txn_reset(s, SMTP_EV_ABORT_RSET);
	s->state = SMTP_S_INIT;
	s->info.helo[0] = '\0';
	s->info.esmtp = false;
	return 0;
}

static void
tls_fail(struct smtp_session *s)
{
	ERR_clear_error();
	smtp_event(s, SMTP_EV_TLS_FAILED);
	smtp_close(s);
}

/* Decrypt one record's worth into hold. false: nothing (more) to read. */
bool
smtp_tls_read(struct smtp_session *s)
{
	int r = SSL_read(s->ssl, s->hold, (int)s->hold_cap);
	if (r > 0) {
		s->hold_off = 0;
		s->hold_len = (uint32_t)r;
		return true;
	}
	int e = SSL_get_error(s->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		ERR_clear_error();
		return false;
	}
	/* close_notify or a broken stream: hang up without a reply. */
	ERR_clear_error();
	smtp_close(s);
	return false;
}

size_t
smtp_tls_input(struct smtp_session *s, const uint8_t *p, size_t n)
{
	if (n > 0 && BIO_write(s->rbio, p, (int)n) != (int)n) {
		tls_fail(s);
		return n;
	}
	if (s->mode == SMTP_M_TLS_HS) {
		int r = SSL_do_handshake(s->ssl);
		if (r != 1) {
			int e = SSL_get_error(s->ssl, r);
			if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
				ERR_clear_error();
			else
				tls_fail(s);
			return n;
		}
		s->tls_up = true;
		s->info.tls = true;
		snprintf(s->info.tls_version, sizeof(s->info.tls_version), "%s", SSL_get_version(s->ssl));
		snprintf(s->info.tls_cipher, sizeof(s->info.tls_cipher), "%s", SSL_get_cipher_name(s->ssl));
		s->mode = SMTP_M_CMD;
		smtp_event(s, SMTP_EV_TLS_UP);
	}
	smtp_pump(s);
	return n;
}

/* Encrypt the replies queued after the handshake. */
void
smtp_tls_flush(struct smtp_session *s)
{
	if (!s->tls_up || s->out_len <= s->out_net)
		return;
	int r = SSL_write(s->ssl, s->out + s->out_net, (int)(s->out_len - s->out_net));
	if (r <= 0) {
		tls_fail(s);
		return;
	}
	s->out_len = s->out_net;
	if (s->out_off == s->out_len)
		s->out_off = s->out_len = s->out_net = 0;
}

size_t
smtp_tls_output(struct smtp_session *s, const uint8_t **p)
{
	if (s->out_off < s->out_net) {
		*p = s->out + s->out_off;
		return s->out_net - s->out_off;
	}
	smtp_tls_flush(s);
	if (s->stage_off == s->stage_len) {
		s->stage_off = s->stage_len = 0;
		if (BIO_ctrl_pending(s->wbio) > 0) {
			int r = BIO_read(s->wbio, s->stage, SMTP_STAGE_CAP);
			if (r > 0)
				s->stage_len = (uint32_t)r;
		}
	}
	*p = s->stage + s->stage_off;
	return s->stage_len - s->stage_off;
}

void
smtp_tls_sent(struct smtp_session *s, size_t n)
{
	if (s->out_off < s->out_net) {
		size_t left = s->out_net - s->out_off;
		s->out_off += (uint32_t)(n < left ? n : left);
		if (s->out_off == s->out_net) {
			/* cleartext part gone; move any plaintext tail down */
			memmove(s->out, s->out + s->out_net, s->out_len - s->out_net);
			s->out_len -= s->out_net;
			s->out_off = s->out_net = 0;
		}
		return;
	}
	size_t left = s->stage_len - s->stage_off;
	s->stage_off += (uint32_t)(n < left ? n : left);
}

void
smtp_tls_free(struct smtp_session *s)
{
	SSL_free(s->ssl);  /* frees both BIOs */
	s->ssl = NULL;
	s->rbio = s->wbio = NULL;
	s->tls_up = false;
}
