/*
 * dsn.h - delivery status notifications (bounces): RFC 3464 reports in an
 * RFC 6522 multipart/report, as asked for by RFC 3461 (DSN extension).
 *
 * Contract
 *   ctl_dsn_build() is pure: it formats one failure report for the given
 *   recipients of one message into a new buffer (the caller frees it) and
 *   reads no clock and no file (time comes in as a parameter). The report
 *   is sent from the null sender <> to the original envelope sender; the
 *   caller must never build one for a message whose sender was <> (that
 *   would be a bounce of a bounce): ctl_dsn_build() refuses with -EINVAL.
 *
 *   Layout: a text/plain part for people, a message/delivery-status part
 *   (per-message fields, then one block per recipient: Final-Recipient,
 *   Original-Recipient from ORCPT, Action: failed, Status,
 *   Diagnostic-Code), then the original: message/rfc822 when RET=FULL (or
 *   no RET) and it fits in return_max bytes, else text/rfc822-headers (its
 *   header section, cut at return_max on a line boundary).
 *
 *   Thread: any. Returns 0 or -errno (-ENOMEM, -EINVAL).
 */
#ifndef CTL_DSN_H
#define CTL_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp/smtp.h"

struct ctl_dsn_rcpt {
	const char *addr;              /* the recipient the delivery failed for */
	const char *orcpt;             /* ORCPT as sent ("rfc822;a+2Bb@x") or NULL */
	const char *status;            /* RFC 3463 "5.1.1" */
	const char *diag_type;         /* "smtp" for a server's reply, else "X-Sluice" */
	const char *diag;              /* one line: "550 5.1.1 <a@b> User unknown" */
};

struct ctl_dsn {
	const char *reporting_mta;     /* our host name */
	const char *qid;               /* the original's queue id */
	const char *sender;            /* the original's envelope sender (not "") */
	const char *envid;             /* ENVID as sent (xtext) or NULL */
	int64_t arrival;               /* unix seconds */
	int64_t now;                   /* unix seconds */
	enum smtp_ret ret;
	const uint8_t *msg;            /* the original message, CRLF */
	size_t msglen;
	size_t return_max;             /* bytes of the original returned at most */
	const struct ctl_dsn_rcpt *rcpt;
	size_t nrcpt;
};

/* RFC 3461 4.1: a failure report is wanted unless NOTIFY was given
 * without FAILURE (NEVER included). notify: SMTP_NOTIFY_* bits, 0 = absent. */
bool ctl_dsn_wanted(uint8_t notify);

/* The report in *out (malloc'd, *len bytes, CRLF; NUL-terminated too).
 * *body8bit tells whether it holds 8-bit bytes (send BODY=8BITMIME). */
int ctl_dsn_build(const struct ctl_dsn *d, char **out, size_t *len, bool *body8bit);

/* Decode RFC 3461 4 xtext ("+2B" escapes) into out (cap bytes, NUL
 * terminated). 0, -EINVAL (bad escape, control character), -ENOSPC. */
int ctl_dsn_xtext_decode(const char *in, char *out, size_t cap);

#endif
