/*
 * maildir.h - local delivery into Maildir folders (the queue manager's
 * embedded default when no LMTP backend is configured).
 *
 * Contract
 *   ctl_maildir_expand() turns a path template and a recipient into the
 *   folder for that recipient: %u is the local part, %d the domain (ASCII
 *   lowercased), %% a '%'. Each substituted value is made safe as one path
 *   component: '/' and control characters become '_', a '.' that starts the
 *   value or follows another '.' becomes '_' (so no "..", no hidden or
 *   relative names), and an empty value becomes "_".
 *
 *   ctl_maildir_deliver() writes one message (the given header lines, then
 *   the content) as tmp/<unique> in the folder, creating the folder and its
 *   tmp/ new/ cur/ (and missing parents) on demand, then renames it into
 *   new/. With sync the file is fsync'ed before the rename and new/ after it
 *   (and each directory created, in its parent), so a 0 return means the
 *   message is on stable storage. Unique names follow the Maildir spec:
 *   "<sec>.M<usec>P<pid>Q<counter>.<host>".
 *
 *   Thread: any; the counter is atomic. Buffers stay the caller's.
 *   Returns 0 or -errno (nothing is left in tmp/ on error).
 */
#ifndef CTL_MAILDIR_H
#define CTL_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* 0, -ENAMETOOLONG (out too small) or -EINVAL (unknown %x). */
int ctl_maildir_expand(const char *tmpl, const char *rcpt, char *out, size_t outlen);
/* True if tmpl contains %u or %d. */
bool ctl_maildir_templated(const char *tmpl);

/* hdr: text prepended as is (e.g. "Return-Path: <a@b>\r\n"), may be NULL.
 * name (if not NULL) receives the file name in new/. */
int ctl_maildir_deliver(const char *dir, const char *hdr, const struct iovec *iov,
                        int iovcnt, bool sync, char *name, size_t namelen);

#endif
