/*
 * smtp_impl.h - internals of the SMTP engine, shared by the files of smtp/
 * only (session.c, cmd.c, data.c, reply.c, tls.c). Nothing outside smtp/
 * includes this header; the public contract is smtp.h.
 *
 * Layout: the caller's smtp_session_size() bytes hold struct smtp_session,
 * then the command line buffer, the output buffer, the hold buffer
 * (plaintext not yet parsed: early-talker bytes, SSL_read output), the
 * ciphertext stage (TLS only), the recipient array and the string arena.
 * Every pointer below points into that block; nothing is allocated.
 */
#ifndef SMTP_SMTP_IMPL_H
#define SMTP_SMTP_IMPL_H

#include "smtp/smtp.h"

#include <stdarg.h>

struct ssl_st;
struct bio_st;

/* Output: a reply is at most ~600 octets (EHLO with a 255-octet name), so
 * stopping input at the high-water mark can never overflow the buffer. */
#define SMTP_OUT_CAP     4096u
#define SMTP_OUT_HIWAT   2048u
#define SMTP_HOLD_CAP    1024u  /* early-talker bytes without TLS */
#define SMTP_HOLD_CAP_TLS 4096u /* one SSL_read worth of plaintext */
#define SMTP_STAGE_CAP   4096u  /* ciphertext taken from the write BIO */
#define SMTP_LBUF_MIN    1024u  /* also holds a partial PROXY header */
#define SMTP_ARENA_BASE  1024u  /* MAIL FROM + ENVID always fit */
#define SMTP_ARENA_PER_RCPT 128u

/* Input modes. */
enum smtp_mode {
	SMTP_M_PROXY = 0,  /* waiting for the PROXY header */
	SMTP_M_GREET,      /* connect hook / greet pause: banner not queued yet */
	SMTP_M_CMD,        /* reading command lines */
	SMTP_M_DATA,       /* DATA content (dot-stuffed) */
	SMTP_M_BDAT,       /* BDAT chunk octets */
	SMTP_M_TLS_HS,     /* STARTTLS handshake */
	SMTP_M_TARPIT,     /* a held connect refusal: input dropped */
	SMTP_M_CLOSED,
};

/* Protocol states; command table masks use these bits. */
#define SMTP_S_INIT  0x01u  /* no HELO/EHLO yet */
#define SMTP_S_HELO  0x02u  /* greeted, no transaction */
#define SMTP_S_MAIL  0x04u  /* MAIL accepted, no recipient */
#define SMTP_S_RCPT  0x08u  /* at least one recipient */
#define SMTP_S_BDATX 0x10u  /* between BDAT chunks of one message */
#define SMTP_S_ANY   0x1fu

/* What a parked session waits for. */
enum smtp_pend {
	SMTP_P_NONE = 0,
	SMTP_P_CONNECT,
	SMTP_P_HELO,
	SMTP_P_MAIL,
	SMTP_P_RCPT,
	SMTP_P_DATA_START,
	SMTP_P_BDAT_START,
	SMTP_P_DATA_END,
};

/* Timer kinds. */
enum smtp_timer { SMTP_T_NONE = 0, SMTP_T_PROXY, SMTP_T_GREET, SMTP_T_CMD, SMTP_T_DATA, SMTP_T_TLS,
                  SMTP_T_TARPIT };

/* Content scanner states (data.c). */
enum smtp_ds {
	SMTP_DS_BOL = 0, /* at the start of a line */
	SMTP_DS_DOT,     /* "." at the start of a line */
	SMTP_DS_DOTCR,   /* ".\r" at the start of a line */
	SMTP_DS_TEXT,    /* inside a line */
	SMTP_DS_CR,      /* a CR ended the previous input, LF not seen yet */
};

struct smtp_data_state {
	uint8_t ds;            /* enum smtp_ds */
	uint8_t err;           /* first enum smtp_event abort reason, 0 = clean */
	bool started;          /* data_start accepted, data_end/abort not yet called */
	bool last;             /* BDAT LAST */
	bool refused;          /* chunk_reply holds the answer to this BDAT */
	bool reset_after;      /* refused first chunk: drop the transaction */
	uint64_t line_len;     /* octets of the current text line so far */
	uint64_t chunk_left;   /* BDAT octets still to read */
	uint64_t chunk_size;
	struct smtp_reply chunk_reply;
};

struct smtp_session {
	const struct smtp_server_conf *conf;
	const struct smtp_hooks *hooks;
	void *ctx;

	uint8_t mode;          /* enum smtp_mode */
	uint8_t state;         /* SMTP_S_* */
	uint8_t pend;          /* enum smtp_pend */
	uint8_t timer;         /* enum smtp_timer */
	bool closing;
	bool refused;          /* connect hook refused without closing: 503 all */
	bool early_ev;         /* SMTP_EV_EARLY_TALKER already sent */
	bool discard;          /* dropping an over-long command line */
	bool disc_cr;          /* ... whose last octet was CR */
	bool tls_up;
	unsigned flags;

	/* effective limits (0 in the conf = default or no limit) */
	uint32_t cmd_max;
	uint32_t text_max;     /* 0: none */
	uint32_t rcpt_max;
	uint64_t size_max;     /* 0: none */

	uint64_t t_start;
	uint64_t t_last;       /* last input / resume: base of the idle timers */
	uint64_t t_tls;
	uint64_t deadline;

	uint32_t junk;         /* junk commands since the last accepted message */

	/* tarpit (SMTP_M_TARPIT): the held reply and its clock */
	uint64_t tarpit_until, tarpit_next;
	struct smtp_reply tarpit_r;

	struct smtp_conn_info info;
	struct smtp_txn txn;
	struct smtp_data_state d;

	struct smtp_rcpt *rcpt;
	char *arena;
	uint32_t arena_cap, arena_len, arena_txn; /* arena_txn: end of MAIL strings */

	uint8_t *lbuf;
	uint32_t lbuf_cap, lbuf_len;

	uint8_t *out;
	uint32_t out_off, out_len;
	uint32_t out_net;      /* under TLS: out[0, out_net) are plaintext-era network bytes */

	uint8_t *hold;
	uint32_t hold_cap, hold_off, hold_len;

	uint8_t *stage;
	uint32_t stage_off, stage_len;

	struct ssl_st *ssl;
	struct bio_st *rbio, *wbio;
};

/* session.c */
size_t smtp_process(struct smtp_session *s, const uint8_t *p, size_t n);
void smtp_event(struct smtp_session *s, enum smtp_event ev);
void smtp_close(struct smtp_session *s);
void smtp_txn_reset(struct smtp_session *s, enum smtp_event why);
bool smtp_pump(struct smtp_session *s);

/* reply.c */
void smtp_out_put(struct smtp_session *s, const void *p, size_t n);
size_t smtp_out_pending(const struct smtp_session *s);
void smtp_reply(struct smtp_session *s, unsigned code, const char *enh, const char *text);
void smtp_reply_cont(struct smtp_session *s, unsigned code, const char *enh, const char *text);
void smtp_reply_fmt(struct smtp_session *s, unsigned code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void smtp_reply_cmd(struct smtp_session *s, unsigned code, const char *enh, const char *text);
void smtp_reply_hook(struct smtp_session *s, const struct smtp_reply *r, const char *dflt_enh, bool cmd);
int smtp_hook_norm(struct smtp_reply *r);
void smtp_count_error(struct smtp_session *s);
size_t smtp_u64_str(char *buf, uint64_t v);
void smtp_reply_parts(struct smtp_session *s, const char *a, size_t an, const char *b, size_t bn,
                      const char *c, size_t cn);

/* cmd.c */
size_t smtp_cmd_input(struct smtp_session *s, const uint8_t *p, size_t n);
void smtp_cmd_resume(struct smtp_session *s, enum smtp_pend pend, const struct smtp_reply *r);

/* data.c */
size_t smtp_data_input(struct smtp_session *s, const uint8_t *p, size_t n);
void smtp_data_begin(struct smtp_session *s);
void smtp_bdat_begin(struct smtp_session *s);
void smtp_bdat_chunk_done(struct smtp_session *s);
void smtp_data_end_resume(struct smtp_session *s, const struct smtp_reply *r);

/* tls.c */
int smtp_tls_start(struct smtp_session *s);
size_t smtp_tls_input(struct smtp_session *s, const uint8_t *p, size_t n);
bool smtp_tls_read(struct smtp_session *s);
void smtp_tls_flush(struct smtp_session *s);
size_t smtp_tls_output(struct smtp_session *s, const uint8_t **p);
void smtp_tls_sent(struct smtp_session *s, size_t n);
size_t smtp_tls_pending(const struct smtp_session *s);
void smtp_tls_free(struct smtp_session *s);

#endif
