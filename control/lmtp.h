/*
 * lmtp.h - the LMTP client (RFC 2033) the queue manager delivers with.
 *
 * Contract
 *   Two layers. The reply parser (ctl_lmtp_rp_*) is pure and resumable: it
 *   takes bytes the caller owns, any split, and hands out one complete
 *   (possibly multi-line) reply at a time. The connection layer
 *   (ctl_lmtp_open/_send/_close) is blocking I/O with a deadline per step,
 *   for the queue thread only: one connection is used by one thread at a
 *   time, and is kept open across messages (reuse).
 *
 *   Per-recipient results (RFC 2033 4.2): after the final dot the server
 *   sends one reply per recipient it accepted at RCPT, in RCPT order. A
 *   recipient refused at RCPT keeps its RCPT reply. A reply code of 0 means
 *   "no answer" (connection failed, timed out, or the server closed it):
 *   the outcome is unknown and must be treated as temporary.
 *
 *   Targets: "unix:/path" (a stream socket) or a numeric "IPv4:port" /
 *   "[IPv6]:port"; no name lookup ever.
 *
 *   Returns: constructors a pointer or NULL with errno; other int functions
 *   0 or -errno.
 */
#ifndef CTL_LMTP_H
#define CTL_LMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CTL_LMTP_TEXT_MAX 512   /* reply text kept (lines joined by '\n') */
#define CTL_LMTP_LINE_MAX 2048  /* a longer reply line is a protocol error */
#define CTL_LMTP_LINES_MAX 64   /* more lines in one reply: protocol error */

/* One reply: code 200..599 (0: no reply, see above). */
struct ctl_lmtp_reply {
	int code;
	char status[16];               /* enhanced status "5.1.1" (RFC 3463) or "" */
	char text[CTL_LMTP_TEXT_MAX];  /* text after "NNN-"/"NNN ", lines joined by '\n' */
};

/* ---- reply parser (pure) -------------------------------------------- */

struct ctl_lmtp_rp {
	char line[CTL_LMTP_LINE_MAX];
	size_t linelen;
	unsigned nlines;
	struct ctl_lmtp_reply cur;
};

void ctl_lmtp_rp_init(struct ctl_lmtp_rp *p);
/* Feed n bytes. Consumes up to the end of the first complete reply and sets
 * *used. Returns 1 (a reply is in *out; feed the rest again), 0 (all bytes
 * taken, need more) or -EBADMSG (not a reply: bad code, codes that differ
 * between lines, a line or reply too long). Lines end in CRLF or bare LF. */
int ctl_lmtp_rp_feed(struct ctl_lmtp_rp *p, const char *buf, size_t n, size_t *used,
                     struct ctl_lmtp_reply *out);

/* The reply as one line for a DSN Diagnostic-Code or a log:
 * "550 5.1.1 text text", printable ASCII only. Returns out. */
char *ctl_lmtp_reply_line(const struct ctl_lmtp_reply *r, char *out, size_t cap);

/* ---- targets and routes ------------------------------------------------ */

struct ctl_lmtp_target {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char text[128];                /* as configured, for logs */
};

/* "unix:/path" or "IPv4:port" / "[IPv6]:port". 0 or -EINVAL. */
int ctl_lmtp_target_parse(const char *s, struct ctl_lmtp_target *t);

/* The route for the domain of address rcpt (after the last '@'): the index
 * of the first exact match among domains[0..n) (case-insensitive), else of
 * the longest ".suffix" entry that matches a subdomain, else -1 (the
 * default route). */
int ctl_lmtp_route_match(const char *const *domains, size_t n, const char *rcpt);

/* ---- connection ----------------------------------------------------- */

struct ctl_lmtp_conn;

/* Connect, read the greeting, LHLO. NULL with errno on failure; then *why
 * holds what the server said (code 4xx/5xx) or code 0 and the local error. */
struct ctl_lmtp_conn *ctl_lmtp_open(const struct ctl_lmtp_target *t, const char *lhlo,
                                    uint64_t timeout_ms, struct ctl_lmtp_reply *why);

/* True if the connection still looks usable: nothing unread (a 421 or EOF
 * from an idle server) and not broken by an earlier error. */
bool ctl_lmtp_usable(const struct ctl_lmtp_conn *c);
bool ctl_lmtp_pipelining(const struct ctl_lmtp_conn *c);

struct ctl_lmtp_msg {
	const char *from;              /* reverse-path without <>, "" for <> */
	const char *const *rcpt;       /* forward-paths without <> */
	uint32_t nrcpt;
	bool body8bit;                 /* send BODY=8BITMIME (if offered) */
	bool smtputf8;                 /* send SMTPUTF8 (if offered) */
	const uint8_t *data;           /* message, CRLF, not dot-stuffed */
	size_t len;
};

/* One transaction: MAIL, RCPT*, DATA (pipelined when offered), the message
 * dot-stuffed, then one reply per accepted recipient. res[i] gets recipient
 * i's outcome. Returns 0 when the dialogue ended cleanly (the connection
 * may be reused) or -errno when it broke; res is filled in either case
 * (code 0 where the outcome is unknown) and a broken connection is not
 * usable any more. */
int ctl_lmtp_send(struct ctl_lmtp_conn *c, const struct ctl_lmtp_msg *m,
                  struct ctl_lmtp_reply *res);

/* Asks whether the server would take rcpt: MAIL FROM:<>, RCPT TO:<rcpt>,
 * RSET, one command at a time (recipient verification; nothing is sent).
 * *res gets the RCPT reply (or the MAIL reply when MAIL was refused).
 * 0, or -errno when the connection broke (res code 0: unknown). */
int ctl_lmtp_verify(struct ctl_lmtp_conn *c, const char *rcpt, struct ctl_lmtp_reply *res);

/* QUIT (best effort, bounded), close. Returns NULL. */
struct ctl_lmtp_conn *ctl_lmtp_close(struct ctl_lmtp_conn *c);

#endif
