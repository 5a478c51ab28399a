/*
 * smtp.h - the SMTP server protocol engine (sans-IO).
 *
 * Contract
 *   One struct smtp_session per client connection. The transport glue feeds
 *   the bytes it received with smtp_session_input(), takes the bytes to send
 *   with smtp_session_output() + smtp_session_sent(), and drives time with
 *   smtp_session_tick(). The engine never does I/O, never reads a clock (time
 *   is the `now` argument, milliseconds on any monotonic scale), never blocks
 *   and never calls the general allocator; the only exception is OpenSSL's own
 *   allocations while a STARTTLS session is active.
 *
 *   Decisions reach a session through struct smtp_hooks, filled in by
 *   control/ at start-up. A hook answers at once (SMTP_HOOK_OK: the engine's
 *   default reply; SMTP_HOOK_REPLY: the reply written into *r) or returns
 *   SMTP_HOOK_PENDING: the session parks, consumes no further input and waits
 *   for smtp_session_resume() with the answer.
 *
 *   Memory: the caller provides smtp_session_size(conf) bytes, aligned to 64,
 *   and owns them; smtp_session_fini() releases only what the engine holds
 *   inside (TLS). The conf and hooks must outlive every session using them.
 *
 *   Call order: smtp_session_init -> smtp_session_start ->
 *   { input | output/sent | tick | resume }* -> smtp_session_fini.
 *   Thread: all calls for one session come from the thread that owns it.
 *
 * Protocol: RFC 5321 with PIPELINING (2920), SIZE (1870), 8BITMIME (6152),
 * SMTPUTF8 (6531), ENHANCEDSTATUSCODES (2034, 3463), DSN (3461),
 * CHUNKING/BDAT (3030), STARTTLS (3207), PROXY protocol v1/v2 (haproxy spec).
 * Only CRLF ends a line; a bare CR or LF inside DATA/BDAT content makes the
 * message refused (SMTP smuggling), and only CRLF "." CRLF ends DATA.
 */
#ifndef SMTP_SMTP_H
#define SMTP_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct ssl_ctx_st SSL_CTX;

struct smtp_session;

/* Limits and timeouts; one instance shared read-only by all sessions. */
struct smtp_server_conf {
	const char *hostname;          /* in the banner, EHLO and Received */
	const char *banner;            /* text after "220 hostname " */
	uint32_t cmd_line_max;         /* octets incl. CRLF (RFC 5321 4.5.3.1.4,
	                                  extended by SIZE/DSN parameters) */
	uint32_t text_line_max;        /* octets incl. CRLF (4.5.3.1.6) */
	uint64_t message_size_max;     /* advertised SIZE, enforced while data streams */
	uint32_t rcpt_max;             /* per transaction (4.5.3.1.8: >= 100) */
	uint32_t errors_max;           /* protocol errors before 421 and close */
	uint64_t greet_pause_ms;       /* banner delay; input before it = early talker */
	uint64_t timeout_command_ms;   /* waiting for a command (4.5.3.2.7) */
	uint64_t timeout_data_ms;      /* between data blocks (4.5.3.2.5) */
	uint64_t timeout_tls_ms;       /* TLS handshake */
	SSL_CTX *tls_ctx;              /* NULL: STARTTLS not offered */
	uint64_t tarpit_interval_ms;   /* between a held reply's lines; 0: 10 s */
	bool early_talker_reject;      /* an early talker gets 554 instead of the
	                                  banner, then only QUIT */
	/* Added by the engine; zero keeps the behaviour above. */
	uint32_t junk_max;             /* NOOP/RSET/VRFY/EXPN/HELP per accepted
	                                  message before each counts as an error;
	                                  0: no limit */
	bool tls_required;             /* with tls_ctx: only EHLO, HELO, STARTTLS,
	                                  NOOP, RSET, QUIT before TLS (530 5.7.0) */
};

/* Per-listener options given at session init. */
#define SMTP_SESS_PROXY 0x1u /* expect a PROXY v1/v2 header before anything */

/* Reply a hook gives; text is one line without CRLF. */
struct smtp_reply {
	uint16_t code;                 /* 250, 451, 550, ... */
	char enh[12];                  /* "2.1.0"; empty: the engine picks one */
	char text[200];
	bool close;                    /* close the connection after this reply */
	/* Connect refusals only (a tarpit): hold the client this long before
	 * the reply ends, sending its line as a continuation ("554-5.7.1 text")
	 * every conf->tarpit_interval_ms meanwhile; input is read and dropped.
	 * 0: answer at once. */
	uint32_t hold_ms;
};

#define SMTP_NOTIFY_NEVER   0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY   0x8u

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };
enum smtp_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

struct smtp_rcpt {
	const char *addr;              /* forward-path without <>, NUL-terminated */
	const char *orcpt;             /* ORCPT value as sent ("rfc822;x"), or NULL */
	uint8_t notify;                /* SMTP_NOTIFY_* bits; 0 = not given */
};

/* The transaction as far as it has got. Valid until the hook returns (for
 * mail/rcpt) or until the transaction is reset (data_end, data_abort). */
struct smtp_txn {
	const char *mail_from;         /* "" for the null reverse-path <> */
	uint64_t size_declared;        /* SIZE= value, 0 if none */
	enum smtp_body body;
	enum smtp_ret ret;
	const char *envid;             /* ENVID xtext as sent, or NULL */
	bool smtputf8;
	const struct smtp_rcpt *rcpt;  /* accepted recipients */
	uint32_t nrcpt;
	uint64_t data_bytes;           /* message bytes passed to the data hook */
	bool bdat;                     /* body came by BDAT */
};

/* What is known about the connection. */
struct smtp_conn_info {
	struct sockaddr_storage peer;  /* client (from PROXY header if proxied) */
	struct sockaddr_storage local;
	char peer_str[64];             /* printable address of peer, no port */
	uint16_t peer_port;
	char helo[256];                /* last HELO/EHLO argument, "" if none */
	bool esmtp;                    /* EHLO (not HELO) */
	bool tls;                      /* STARTTLS completed */
	char tls_version[16];          /* "TLSv1.3" */
	char tls_cipher[64];
	bool early_talker;             /* sent before the banner */
	bool proxied;                  /* peer came from a PROXY header */
	uint32_t transactions;         /* messages accepted or refused at data end */
	uint32_t errors;
};

enum smtp_hook_result { SMTP_HOOK_OK = 0, SMTP_HOOK_REPLY, SMTP_HOOK_PENDING };

/* Why the engine dropped a message or a session; for data_abort and events. */
enum smtp_event {
	SMTP_EV_EARLY_TALKER = 1,      /* input before the banner */
	SMTP_EV_TLS_UP,                /* handshake done; info->tls_* filled */
	SMTP_EV_TLS_FAILED,
	SMTP_EV_PLAINTEXT_DISCARDED,   /* bytes pipelined after STARTTLS dropped */
	SMTP_EV_TIMEOUT,               /* 421 sent */
	SMTP_EV_TOO_MANY_ERRORS,       /* 421 sent */
	SMTP_EV_PROXY_BAD,             /* malformed PROXY header; closing */
	SMTP_EV_QUIT,
	SMTP_EV_ABORT_SIZE,            /* data_abort reasons from here on */
	SMTP_EV_ABORT_BARE_EOL,        /* bare CR or LF in content */
	SMTP_EV_ABORT_LINE_LENGTH,
	SMTP_EV_ABORT_DISCONNECT,      /* connection gone mid-data (fini) */
	SMTP_EV_ABORT_RSET,
	SMTP_EV_ABORT_HOOK,            /* data_start/BDAT refused by policy */
};

struct smtp_hooks {
	/* After the PROXY header (if any), before the banner: refuse with r. */
	int (*connect)(void *ctx, struct smtp_session *s, struct smtp_reply *r);
	int (*helo)(void *ctx, struct smtp_session *s, const char *name, struct smtp_reply *r);
	int (*mail)(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r);
	int (*rcpt)(void *ctx, struct smtp_session *s, const struct smtp_txn *t,
	            const struct smtp_rcpt *rc, struct smtp_reply *r);
	/* DATA command, or first BDAT chunk, with at least one recipient. */
	int (*data_start)(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r);
	/* Message content in order: dot-unstuffed, CRLF line ends, without the
	 * final "." line. Called zero or more times between data_start and
	 * data_end/data_abort. */
	void (*data)(void *ctx, struct smtp_session *s, const uint8_t *p, size_t n);
	/* Whole clean message received. Usually PENDING until durably spooled;
	 * the engine's OK reply is "250 2.0.0 Ok". */
	int (*data_end)(void *ctx, struct smtp_session *s, const struct smtp_txn *t, struct smtp_reply *r);
	/* The message will not be accepted (reason SMTP_EV_ABORT_*; also
	 * SMTP_EV_TIMEOUT or SMTP_EV_QUIT when the session ends mid-message);
	 * no more data calls follow for it. */
	void (*data_abort)(void *ctx, struct smtp_session *s, const struct smtp_txn *t, enum smtp_event why);
	/* Transaction state cleared (RSET, HELO/EHLO, after data end, STARTTLS). */
	void (*reset)(void *ctx, struct smtp_session *s);
	/* Informational events: early talker, TLS, timeouts, ... */
	void (*event)(void *ctx, struct smtp_session *s, enum smtp_event ev);
};

/* Status bits from smtp_session_status(). */
#define SMTP_ST_PARKED 0x1u  /* waiting for smtp_session_resume() */
#define SMTP_ST_CLOSE  0x2u  /* close once the output is flushed */
#define SMTP_ST_DATA   0x4u  /* inside DATA or BDAT content */
#define SMTP_ST_OUTFULL 0x8u /* output over its high-water mark (or input held
                                inside the engine): after smtp_session_sent()
                                drains it, call smtp_session_input() again,
                                with the held rest or with n = 0 */

size_t smtp_session_size(const struct smtp_server_conf *conf);

/* Construct in caller memory. peer/local may be NULL (tests). */
void smtp_session_init(struct smtp_session *s, const struct smtp_server_conf *conf,
                       const struct smtp_hooks *hooks, void *ctx,
                       const struct sockaddr *peer, const struct sockaddr *local,
                       unsigned flags, uint64_t now);

/* Begin: wait for PROXY header, or run the connect hook and (after the greet
 * pause) queue the banner. */
void smtp_session_start(struct smtp_session *s, uint64_t now);

/* Offer received bytes; returns how many were consumed. Less than n only
 * while parked, closing, or with the output full (SMTP_ST_OUTFULL): offer
 * the rest again after resume / after the output was sent. Bytes before the
 * banner (early talker) are kept inside, up to 1 KB, and run as commands
 * once the banner is queued. n = 0 is allowed (a kick after OUTFULL). */
size_t smtp_session_input(struct smtp_session *s, const uint8_t *p, size_t n, uint64_t now);

/* Bytes waiting to be sent (network bytes: ciphertext under TLS). */
size_t smtp_session_output(struct smtp_session *s, const uint8_t **p);
void smtp_session_sent(struct smtp_session *s, size_t n);

/* Answer a parked hook. r NULL means SMTP_HOOK_OK. */
void smtp_session_resume(struct smtp_session *s, const struct smtp_reply *r, uint64_t now);

/* Fire due timers; returns the next deadline (UINT64_MAX for none). */
uint64_t smtp_session_tick(struct smtp_session *s, uint64_t now);
uint64_t smtp_session_deadline(const struct smtp_session *s);

unsigned smtp_session_status(const struct smtp_session *s);
const struct smtp_conn_info *smtp_session_info(const struct smtp_session *s);
const struct smtp_txn *smtp_session_txn(const struct smtp_session *s);
void *smtp_session_ctx(const struct smtp_session *s);

/* Connection lost or closed: data_abort if mid-data, free TLS state. */
void smtp_session_fini(struct smtp_session *s);

#endif
