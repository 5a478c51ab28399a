/*
 * queue_impl.h - internals shared by the spool writer (spool.c), the queue
 * manager (queue.c), Maildir delivery (maildir.c) and their tests. Not for
 * other modules: the public contract is control/spool.h.
 *
 * Contract
 *   On-disk formats (docs/SPOOL.md): segment header, record header, the
 *   envelope codec and delivered marks. All integers little-endian.
 *
 *   Segments are owned by the queue (struct ctl_qseg), because delivery and
 *   segment removal outlive the spool (ctl_spool_close before
 *   ctl_queue_close). The spool writer creates the current segment with
 *   ctl_queue_seg_new(), appends records to seg->fd, hands each durable
 *   record over with ctl_queue_add() and seals the segment with
 *   ctl_queue_seg_seal() when it rotates or closes. A sealed segment with no
 *   queued record left is unlinked (.seg and .done).
 *
 *   Threads: ctl_queue_attach/ctl_queue_seg_* and ctl_queue_add may be
 *   called from the spool's threads (open: the caller; later: the writer);
 *   they take the queue's mutex. The codec and CRC functions are pure.
 */
#ifndef CTL_QUEUE_IMPL_H
#define CTL_QUEUE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/spool.h"

/* Segment file header: "SLUICESG", u32 version, u32 header size,
 * u64 segment id, u32 reserved (0), u32 CRC32C of the 28 bytes before it. */
#define CTL_SEG_MAGIC "SLUICESG"
#define CTL_SEG_VERSION 1u
#define CTL_SEG_HDR_LEN 32u

/* Record header: u32 magic, u32 flags (0), u64 total length (header
 * included), u32 envelope length, u32 CRC32C over header bytes [0,20), the
 * envelope and the message. */
#define CTL_REC_MAGIC 0x31524c53u /* "SLR1" */
#define CTL_REC_HDR_LEN 24u
/* Delivered mark in %016llx.done: u64 record offset, u32 record CRC,
 * u32 magic. */
#define CTL_MARK_MAGIC 0x454e4f44u /* "DONE" */
#define CTL_MARK_LEN 16u
/* Per-recipient mark, same file and size: u64 record offset, u32 recipient
 * index, u32 magic. The recipient got a final outcome (delivered, or
 * bounced); a restart does not deliver to it again. */
#define CTL_RMARK_MAGIC 0x54504352u /* "RCPT" */

/* Admin requests (sluice-queue), docs/SPOOL.md "Admin": files in DIR/ctl/.
 * A request "req.NAME" holds lines "flush", "list", "delete QID"; the queue
 * thread polls the directory every CTL_CTL_POLL_MS, removes the request and
 * answers in "res.NAME" (written as ".res.NAME", then renamed). */
#define CTL_CTL_DIR "ctl"
#define CTL_QUARANTINE_DIR "quarantine" /* beside seg/: messages the content filter held */
#define CTL_CTL_POLL_MS 500u
#define CTL_CTL_REQ_MAX 65536u

#define CTL_ENV_VERSION 1u
#define CTL_REC_MAX (UINT64_C(1) << 40) /* sanity cap for a record's length */

/* CRC32C (Castagnoli), reflected, init/xorout ~0: crc = ctl_crc32c(0, p, n);
 * chain with ctl_crc32c(crc, next, m). */
uint32_t ctl_crc32c(uint32_t crc, const void *p, size_t n);

static inline void ctl_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

static inline void ctl_put_le64(uint8_t *p, uint64_t v)
{
	ctl_put_le32(p, (uint32_t)v);
	ctl_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t ctl_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline uint64_t ctl_get_le64(const uint8_t *p)
{
	return (uint64_t)ctl_get_le32(p) | (uint64_t)ctl_get_le32(p + 4) << 32;
}

/* Bytes ctl_env_encode() will write for env (0 if a field is too long). */
size_t ctl_env_size(const struct ctl_envelope *env);
/* Encode into p (cap bytes, at least ctl_env_size()). Returns the length,
 * or 0 if it does not fit. NULL strings other than envid/orcpt encode as "". */
size_t ctl_env_encode(const struct ctl_envelope *env, uint8_t *p, size_t cap);

/* A decoded envelope; its strings and recipients live in mem. */
struct ctl_env_dec {
	struct ctl_envelope env;
	void *mem;
};
/* Decode n untrusted bytes. 0, -EBADMSG (malformed: any length, count or
 * enum out of range, trailing bytes) or -ENOMEM. On success release with
 * ctl_env_dec_free(). */
int ctl_env_decode(const uint8_t *p, size_t n, struct ctl_env_dec *out);
void ctl_env_dec_free(struct ctl_env_dec *d);

/* Check one record at the start of p (avail bytes up to the end of the
 * file). Returns its total length and sets *env, *envlen, *msg, *msglen and
 * *crc; 0 if there is no complete valid record (bad magic, length, CRC). */
uint64_t ctl_rec_check(const uint8_t *p, uint64_t avail, const uint8_t **env,
                       uint32_t *envlen, const uint8_t **msg, uint64_t *msglen,
                       uint32_t *crc);

/* A segment, owned by the queue. */
struct ctl_qseg;

/* Give the queue the spool's seg/ directory (it dups dirfd, which also keeps
 * the spool's flock while segments are in use). 0 or -errno. */
int ctl_queue_attach(struct ctl_queue *q, int dirfd);
/* Register segment id whose file is open as fd (the queue owns fd from now
 * on, even on error). Not sealed: the writer appends to it. NULL + errno. */
struct ctl_qseg *ctl_queue_seg_new(struct ctl_queue *q, uint64_t id, int fd);
int ctl_queue_seg_fd(const struct ctl_qseg *s);
/* No more records will be added; removes the files once nothing is queued.
 * The caller must not use s afterwards. */
void ctl_queue_seg_seal(struct ctl_queue *q, struct ctl_qseg *s);

/* One durable record for the queue. */
struct ctl_qrec {
	uint64_t off;                  /* record start in the segment */
	uint64_t len;                  /* total record length */
	uint32_t crc;
	int64_t arrival;
	char qid[CTL_QID_LEN];
};
/* Queue n records of segment s (FIFO), wake the delivery thread. Records
 * that cannot be queued (out of memory) stay on disk for the next start.
 * Returns how many were queued. */
size_t ctl_queue_add(struct ctl_queue *q, struct ctl_qseg *s,
                     const struct ctl_qrec *r, size_t n);

#endif
