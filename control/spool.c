/*
 * spool.c - the durable spool: group commit writer, record format, recovery.
 * Contract in control/spool.h, on-disk format in docs/SPOOL.md.
 *
 * Why one writer: a single thread owning the current segment needs no lock
 * on the append path and turns any number of concurrent submissions into one
 * pwritev + one fdatasync per batch. Submitters only do a wait-free enqueue
 * and, when the writer sleeps, one eventfd write.
 */
#define _LGPL_SOURCE /* inline the wfcqueue fast paths */
#include "control/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"
#include "control/log.h"
#include "control/queue_impl.h"

#define SPOOL_SEGMENT_DEFAULT (UINT64_C(128) << 20)
#define SPOOL_BATCH_DEFAULT 1024u

/* ---- CRC32C --------------------------------------------------------- */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
#if defined(__x86_64__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc_x86(uint32_t c, const uint8_t *p, size_t n)
{
	uint64_t c64 = c;

	for (; n > 0 && ((uintptr_t)p & 7) != 0; n--)
		c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
	for (; n >= 8; n -= 8, p += 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		c64 = __builtin_ia32_crc32di(c64, w);
	}
	for (; n > 0; n--)
		c64 = __builtin_ia32_crc32qi((uint32_t)c64, *p++);
	return (uint32_t)c64;
}
#endif

/* Slicing-by-8 (little-endian loads assembled bytewise: endian-neutral). */
static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	for (; n >= 8; n -= 8, p += 8) {
		c ^= ctl_get_le32(p);
		uint32_t hi = ctl_get_le32(p + 4);
		c = crc_tab[7][c & 0xff] ^ crc_tab[6][(c >> 8) & 0xff] ^
		    crc_tab[5][(c >> 16) & 0xff] ^ crc_tab[4][c >> 24] ^
		    crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		    crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
	}
	for (; n > 0; n--)
		c = (c >> 8) ^ crc_tab[0][(c ^ *p++) & 0xff];
	return c;
}

uint32_t ctl_crc32c(uint32_t crc, const void *p, size_t n)
{
	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(__x86_64__)
	if (crc_hw)
		return ~crc_x86(crc, p, n);
#endif
	return ~crc_sw(crc, p, n);
}

/* ---- envelope codec ----------------------------------------------- */
/*
 * u8 version, u8 body, u8 ret, u8 flags (1: smtputf8, 2: envid present,
 * 4: quarantined by the content filter),
 * i64 arrival, u32 nrcpt, str qid, str client, str helo, str mail_from,
 * [str envid], nrcpt * { u8 notify, u8 flags (1: orcpt present), str addr,
 * [str orcpt] }; str = u32 length + bytes, no NUL.
 */
#define ENV_FIXED 16u
#define ENV_F_UTF8 0x1u
#define ENV_F_ENVID 0x2u
#define ENV_F_QUAR 0x4u
#define RCPT_F_ORCPT 0x1u

static size_t env_slen(const char *s)
{
	return s != NULL ? strlen(s) : 0;
}

size_t ctl_env_size(const struct ctl_envelope *env)
{
	size_t n = ENV_FIXED, l;
	const char *fixed[] = {env->qid, env->client, env->helo, env->mail_from};

	if (strnlen(env->qid, CTL_QID_LEN) >= CTL_QID_LEN)
		return 0;
	for (size_t i = 0; i < 4; i++) {
		if ((l = env_slen(fixed[i])) > UINT32_MAX)
			return 0;
		n += 4 + l;
	}
	if (env->envid != NULL) {
		if ((l = strlen(env->envid)) > UINT32_MAX)
			return 0;
		n += 4 + l;
	}
	if (env->nrcpt > 0 && env->rcpt == NULL)
		return 0;
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		const struct smtp_rcpt *r = &env->rcpt[i];
		if ((l = env_slen(r->addr)) > UINT32_MAX)
			return 0;
		n += 2 + 4 + l;
		if (r->orcpt != NULL) {
			if ((l = strlen(r->orcpt)) > UINT32_MAX)
				return 0;
			n += 4 + l;
		}
	}
	return n;
}

static uint8_t *env_put_str(uint8_t *p, const char *s)
{
	size_t l = env_slen(s);

	ctl_put_le32(p, (uint32_t)l);
	if (l > 0)
		memcpy(p + 4, s, l);
	return p + 4 + l;
}

size_t ctl_env_encode(const struct ctl_envelope *env, uint8_t *p, size_t cap)
{
	size_t need = ctl_env_size(env);
	uint8_t *q = p;

	if (need == 0 || need > cap)
		return 0;
	*q++ = CTL_ENV_VERSION;
	*q++ = (uint8_t)env->body;
	*q++ = (uint8_t)env->ret;
	*q++ = (uint8_t)((env->smtputf8 ? ENV_F_UTF8 : 0) | (env->envid != NULL ? ENV_F_ENVID : 0) |
	                 (env->quarantine ? ENV_F_QUAR : 0));
	ctl_put_le64(q, (uint64_t)env->arrival);
	ctl_put_le32(q + 8, env->nrcpt);
	q += 12;
	q = env_put_str(q, env->qid);
	q = env_put_str(q, env->client);
	q = env_put_str(q, env->helo);
	q = env_put_str(q, env->mail_from);
	if (env->envid != NULL)
		q = env_put_str(q, env->envid);
	for (uint32_t i = 0; i < env->nrcpt; i++) {
		const struct smtp_rcpt *r = &env->rcpt[i];
		*q++ = r->notify;
		*q++ = r->orcpt != NULL ? RCPT_F_ORCPT : 0;
		q = env_put_str(q, r->addr);
		if (r->orcpt != NULL)
			q = env_put_str(q, r->orcpt);
	}
	return (size_t)(q - p);
}

struct env_rd {
	const uint8_t *p, *end;
	char *arena;
};

/* Read one string into the arena (NUL-terminated); NULL if malformed. */
static const char *env_get_str(struct env_rd *r)
{
	uint32_t l;
	char *s;

	if (r->end - r->p < 4)
		return NULL;
	l = ctl_get_le32(r->p);
	r->p += 4;
	if ((size_t)(r->end - r->p) < l || memchr(r->p, '\0', l) != NULL)
		return NULL;
	s = r->arena;
	memcpy(s, r->p, l);
	s[l] = '\0';
	r->arena += l + 1;
	r->p += l;
	return s;
}

int ctl_env_decode(const uint8_t *p, size_t n, struct ctl_env_dec *out)
{
	struct env_rd r = {p, p + n, NULL};
	struct ctl_envelope *e = &out->env;
	struct smtp_rcpt *rc;
	const char *s;
	uint8_t flags;
	uint32_t nrcpt;

	memset(out, 0, sizeof *out);
	if (n < ENV_FIXED || p[0] != CTL_ENV_VERSION || p[1] > SMTP_BODY_BINARYMIME ||
	    p[2] > SMTP_RET_HDRS || (p[3] & ~(ENV_F_UTF8 | ENV_F_ENVID | ENV_F_QUAR)) != 0)
		return -EBADMSG;
	flags = p[3];
	nrcpt = ctl_get_le32(p + 12);
	/* Each recipient takes at least 6 bytes: bound the allocation first. */
	if (nrcpt > (n - ENV_FIXED) / 6)
		return -EBADMSG;
	/* Every string costs 4 + len input bytes and len + 1 output bytes. */
	out->mem = malloc((size_t)nrcpt * sizeof *rc + n + 1);
	if (out->mem == NULL)
		return -ENOMEM;
	rc = out->mem;
	r.arena = (char *)(rc + nrcpt);
	r.p = p + ENV_FIXED;
	e->body = (enum smtp_body)p[1];
	e->ret = (enum smtp_ret)p[2];
	e->smtputf8 = (flags & ENV_F_UTF8) != 0;
	e->quarantine = (flags & ENV_F_QUAR) != 0;
	e->arrival = (int64_t)ctl_get_le64(p + 4);
	if ((s = env_get_str(&r)) == NULL || strlen(s) >= CTL_QID_LEN)
		goto bad;
	memcpy(e->qid, s, strlen(s) + 1);
	if ((e->client = env_get_str(&r)) == NULL || (e->helo = env_get_str(&r)) == NULL ||
	    (e->mail_from = env_get_str(&r)) == NULL)
		goto bad;
	if ((flags & ENV_F_ENVID) != 0 && (e->envid = env_get_str(&r)) == NULL)
		goto bad;
	for (uint32_t i = 0; i < nrcpt; i++) {
		uint8_t rf;
		if (r.end - r.p < 2)
			goto bad;
		rc[i].notify = r.p[0];
		rf = r.p[1];
		r.p += 2;
		if ((rc[i].notify & ~0xfu) != 0 || (rf & ~RCPT_F_ORCPT) != 0)
			goto bad;
		if ((rc[i].addr = env_get_str(&r)) == NULL)
			goto bad;
		rc[i].orcpt = NULL;
		if ((rf & RCPT_F_ORCPT) != 0 && (rc[i].orcpt = env_get_str(&r)) == NULL)
			goto bad;
	}
	if (r.p != r.end)
		goto bad;
	e->rcpt = nrcpt > 0 ? rc : NULL;
	e->nrcpt = nrcpt;
	return 0;
bad:
	free(out->mem);
	memset(out, 0, sizeof *out);
	return -EBADMSG;
}

void ctl_env_dec_free(struct ctl_env_dec *d)
{
	free(d->mem);
	memset(d, 0, sizeof *d);
}

uint64_t ctl_rec_check(const uint8_t *p, uint64_t avail, const uint8_t **env,
                       uint32_t *envlen, const uint8_t **msg, uint64_t *msglen,
                       uint32_t *crc)
{
	uint64_t len;
	uint32_t el, c;

	if (avail < CTL_REC_HDR_LEN || ctl_get_le32(p) != CTL_REC_MAGIC ||
	    ctl_get_le32(p + 4) != 0)
		return 0;
	len = ctl_get_le64(p + 8);
	el = ctl_get_le32(p + 16);
	if (len > avail || len > CTL_REC_MAX || len < (uint64_t)CTL_REC_HDR_LEN + el)
		return 0;
	c = ctl_crc32c(0, p, 20);
	c = ctl_crc32c(c, p + CTL_REC_HDR_LEN, (size_t)(len - CTL_REC_HDR_LEN));
	if (c != ctl_get_le32(p + 20))
		return 0;
	*env = p + CTL_REC_HDR_LEN;
	*envlen = el;
	*msg = p + CTL_REC_HDR_LEN + el;
	*msglen = len - CTL_REC_HDR_LEN - el;
	*crc = c;
	return len;
}

/* ---- the spool ---------------------------------------------------- */

struct spool_rec {
	struct ctl_msg *m;
	int err;
	size_t envoff;                 /* in wenv */
	uint32_t envlen;
	uint64_t msglen;
	uint8_t hdr[CTL_REC_HDR_LEN];
};

struct ctl_spool {
	/* submit side, shared */
	struct __cds_wfcq_head qh;
	struct cds_wfcq_tail qt;
	atomic_int sleeping;           /* writer blocks on efd */
	atomic_int closing;
	atomic_int submitting;         /* submitters between check and enqueue */
	int efd;

	struct ctl_spool_conf conf;
	char *dir;
	struct ctl_queue *q;
	int dirfd;                     /* DIR/seg, flock'ed */
	pthread_t writer;

	/* writer thread only */
	struct ctl_qseg *seg;          /* current segment or NULL */
	uint64_t seg_id;
	uint64_t seg_size;
	uint64_t next_id;
	struct spool_rec *recs;
	struct ctl_qrec *qrecs;
	uint8_t *wenv;
	size_t wenv_cap;
	struct iovec *wiov;
	size_t wiov_cap;

	atomic_uint_fast64_t st_messages, st_bytes, st_commits, st_errors, st_recovered;
};

static void seg_name(char *buf, size_t len, uint64_t id, const char *ext)
{
	snprintf(buf, len, "%016llx.%s", (unsigned long long)id, ext);
}

static int fsync_fd(int fd)
{
	return fsync(fd) == 0 ? 0 : -errno;
}

/* Create the next segment and make it the current one. 0 or -errno. */
static int seg_create(struct ctl_spool *sp)
{
	uint8_t h[CTL_SEG_HDR_LEN] = {0};
	char name[32];
	uint64_t id = sp->next_id++;
	int fd, rc;

	seg_name(name, sizeof name, id, "seg");
	fd = openat(sp->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	memcpy(h, CTL_SEG_MAGIC, 8);
	ctl_put_le32(h + 8, CTL_SEG_VERSION);
	ctl_put_le32(h + 12, CTL_SEG_HDR_LEN);
	ctl_put_le64(h + 16, id);
	ctl_put_le32(h + 28, ctl_crc32c(0, h, 28));
	if (pwrite(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
		rc = errno != 0 ? -errno : -EIO;
		goto fail;
	}
	/* The file and its name must be durable before a record in it is. */
	if (sp->conf.sync && ((rc = fsync_fd(fd)) != 0 || (rc = fsync_fd(sp->dirfd)) != 0))
		goto fail;
	sp->seg = ctl_queue_seg_new(sp->q, id, fd);
	if (sp->seg == NULL) {
		rc = -errno;
		unlinkat(sp->dirfd, name, 0);
		return rc;
	}
	sp->seg_id = id;
	sp->seg_size = CTL_SEG_HDR_LEN;
	return 0;
fail:
	close(fd);
	unlinkat(sp->dirfd, name, 0);
	return rc;
}

static void seg_rotate(struct ctl_spool *sp)
{
	if (sp->seg != NULL)
		ctl_queue_seg_seal(sp->q, sp->seg);
	sp->seg = NULL;
}

/* pwritev all of iov (modified) at off. 0 or -errno. */
static int pwritev_all(int fd, struct iovec *iov, size_t cnt, uint64_t off)
{
	while (cnt > 0) {
		ssize_t w = pwritev(fd, iov, cnt > IOV_MAX ? IOV_MAX : (int)cnt, (off_t)off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		size_t left = (size_t)w;
		while (cnt > 0 && left >= iov->iov_len) {
			left -= iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0) {
			iov->iov_base = (char *)iov->iov_base + left;
			iov->iov_len -= left;
		}
	}
	return 0;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t n = *cap != 0 ? *cap : 64;
	void *np;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	np = realloc(*p, n * elem);
	if (np == NULL)
		return -ENOMEM;
	*p = np;
	*cap = n;
	return 0;
}

/* Encode envelope and record header of r; sets r->err on failure. */
static void rec_prepare(struct ctl_spool *sp, struct spool_rec *r, size_t *envused)
{
	struct ctl_msg *m = r->m;
	size_t el = ctl_env_size(&m->env);
	uint64_t ml = 0, len;
	uint32_t c;

	r->err = 0;
	if (el == 0 || el > UINT32_MAX || m->iovcnt < 0 || (m->iovcnt > 0 && m->iov == NULL)) {
		r->err = -EINVAL;
		return;
	}
	for (int i = 0; i < m->iovcnt; i++)
		ml += m->iov[i].iov_len;
	len = CTL_REC_HDR_LEN + el + ml;
	if (len > CTL_REC_MAX) {
		r->err = -EFBIG;
		return;
	}
	if (grow((void **)&sp->wenv, &sp->wenv_cap, *envused + el, 1) != 0) {
		r->err = -ENOMEM;
		return;
	}
	r->envoff = *envused;
	r->envlen = (uint32_t)ctl_env_encode(&m->env, sp->wenv + *envused, el);
	*envused += el;
	r->msglen = ml;
	ctl_put_le32(r->hdr, CTL_REC_MAGIC);
	ctl_put_le32(r->hdr + 4, 0);
	ctl_put_le64(r->hdr + 8, len);
	ctl_put_le32(r->hdr + 16, r->envlen);
	c = ctl_crc32c(0, r->hdr, 20);
	c = ctl_crc32c(c, sp->wenv + r->envoff, r->envlen);
	for (int i = 0; i < m->iovcnt; i++)
		c = ctl_crc32c(c, m->iov[i].iov_base, m->iov[i].iov_len);
	ctl_put_le32(r->hdr + 20, c);
}

static uint64_t rec_len(const struct spool_rec *r)
{
	return CTL_REC_HDR_LEN + r->envlen + r->msglen;
}

/* Write records [a, b) (those with err 0) to the current segment, sync,
 * queue them, call done() for all of [a, b). */
static void commit_part(struct ctl_spool *sp, struct spool_rec *recs, size_t a, size_t b)
{
	size_t niov = 0, nq = 0;
	uint64_t off = sp->seg_size, bytes = 0, msgbytes = 0;
	int err = 0;

	for (size_t i = a; i < b; i++)
		if (recs[i].err == 0)
			niov += 2 + (size_t)recs[i].m->iovcnt;
	if (niov == 0)
		goto done;
	if (grow((void **)&sp->wiov, &sp->wiov_cap, niov, sizeof *sp->wiov) != 0) {
		err = -ENOMEM;
		goto fail;
	}
	niov = 0;
	for (size_t i = a; i < b; i++) {
		struct spool_rec *r = &recs[i];
		if (r->err != 0)
			continue;
		sp->wiov[niov++] = (struct iovec){r->hdr, CTL_REC_HDR_LEN};
		sp->wiov[niov++] = (struct iovec){sp->wenv + r->envoff, r->envlen};
		for (int k = 0; k < r->m->iovcnt; k++)
			if (r->m->iov[k].iov_len > 0)
				sp->wiov[niov++] = r->m->iov[k];
		struct ctl_qrec *qr = &sp->qrecs[nq++];
		qr->off = off + bytes;
		qr->len = rec_len(r);
		qr->crc = ctl_get_le32(r->hdr + 20);
		qr->arrival = r->m->env.arrival;
		memcpy(qr->qid, r->m->env.qid, CTL_QID_LEN);
		qr->qid[CTL_QID_LEN - 1] = '\0';
		bytes += rec_len(r);
		msgbytes += r->msglen;
	}
	if ((err = pwritev_all(ctl_queue_seg_fd(sp->seg), sp->wiov, niov, off)) != 0)
		goto fail;
	if (sp->conf.sync) {
		if (fdatasync(ctl_queue_seg_fd(sp->seg)) != 0) {
			err = -errno;
			goto fail;
		}
		atomic_fetch_add_explicit(&sp->st_commits, 1, memory_order_relaxed);
	}
	sp->seg_size += bytes;
	ctl_queue_add(sp->q, sp->seg, sp->qrecs, nq);
	atomic_fetch_add_explicit(&sp->st_messages, nq, memory_order_relaxed);
	atomic_fetch_add_explicit(&sp->st_bytes, msgbytes, memory_order_relaxed);
	goto done;
fail:
	/* After a failed write or fsync the page cache state is unknown: cut
	 * the tail (best effort) and never append to this file again. */
	ctl_log(CTL_LOG_ERR, "event=spool_error seg=%016llx off=%llu msgs=%zu error=%s",
	              (unsigned long long)sp->seg_id, (unsigned long long)off, nq,
	              strerror(-err));
	if (ftruncate(ctl_queue_seg_fd(sp->seg), (off_t)off) != 0)
		ctl_log(CTL_LOG_WARN, "event=spool_truncate_failed seg=%016llx error=%s",
		              (unsigned long long)sp->seg_id, strerror(errno));
	seg_rotate(sp);
	for (size_t i = a; i < b; i++)
		if (recs[i].err == 0)
			recs[i].err = err;
done:
	for (size_t i = a; i < b; i++) {
		if (recs[i].err != 0)
			atomic_fetch_add_explicit(&sp->st_errors, 1, memory_order_relaxed);
		recs[i].m->done(recs[i].m, recs[i].err);
	}
}

static void commit(struct ctl_spool *sp, size_t n)
{
	struct spool_rec *recs = sp->recs;
	size_t envused = 0, i = 0;
	int err;

	for (size_t k = 0; k < n; k++)
		rec_prepare(sp, &recs[k], &envused);
	while (i < n) {
		if (sp->seg == NULL && (err = seg_create(sp)) != 0) {
			ctl_log(CTL_LOG_ERR, "event=spool_error op=create error=%s",
			              strerror(-err));
			for (size_t k = i; k < n; k++)
				if (recs[k].err == 0)
					recs[k].err = err;
			commit_part(sp, recs, i, n);
			return;
		}
		/* Take records while they fit; an empty segment takes one anyway. */
		uint64_t size = sp->seg_size;
		size_t j = i;
		for (; j < n; j++) {
			if (recs[j].err != 0)
				continue;
			if (size > CTL_SEG_HDR_LEN && size + rec_len(&recs[j]) > sp->conf.segment_max)
				break;
			size += rec_len(&recs[j]);
		}
		if (j == i) {
			seg_rotate(sp);
			continue;
		}
		commit_part(sp, recs, i, j);
		i = j;
		if (i < n)
			seg_rotate(sp);
	}
	if (sp->seg != NULL && sp->seg_size >= sp->conf.segment_max)
		seg_rotate(sp);
}

static size_t take(struct ctl_spool *sp, size_t have, size_t max)
{
	while (have < max) {
		struct cds_wfcq_node *nd = __cds_wfcq_dequeue_blocking(&sp->qh, &sp->qt);
		if (nd == NULL)
			break;
		sp->recs[have++].m = caa_container_of(nd, struct ctl_msg, node);
	}
	return have;
}

static void writer_wait(struct ctl_spool *sp)
{
	uint64_t v;

	if (atomic_load(&sp->closing)) {
		struct pollfd pfd = {sp->efd, POLLIN, 0};
		if (poll(&pfd, 1, 1) > 0 && read(sp->efd, &v, sizeof v) < 0)
			(void)0;
		return;
	}
	atomic_store(&sp->sleeping, 1);
	atomic_thread_fence(memory_order_seq_cst);
	if (!cds_wfcq_empty(&sp->qh, &sp->qt) || atomic_load(&sp->closing)) {
		atomic_store(&sp->sleeping, 0);
		return;
	}
	while (read(sp->efd, &v, sizeof v) < 0 && errno == EINTR)
		;
	atomic_store(&sp->sleeping, 0);
}

static void *writer_main(void *arg)
{
	struct ctl_spool *sp = arg;
	size_t max = sp->conf.commit_batch_max;

	for (;;) {
		size_t n = take(sp, 0, max);

		if (n == 0) {
			if (atomic_load(&sp->closing) && atomic_load(&sp->submitting) == 0 &&
			    cds_wfcq_empty(&sp->qh, &sp->qt))
				break;
			writer_wait(sp);
			continue;
		}
		if (sp->conf.commit_delay_us > 0 && n < max && !atomic_load(&sp->closing)) {
			struct timespec ts = {0, (long)sp->conf.commit_delay_us * 1000};
			while (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			nanosleep(&ts, NULL);
			n = take(sp, n, max);
		}
		commit(sp, n);
	}
	seg_rotate(sp);
	return NULL;
}

int ctl_spool_submit(struct ctl_spool *sp, struct ctl_msg *m)
{
	atomic_fetch_add(&sp->submitting, 1);
	if (atomic_load(&sp->closing)) {
		atomic_fetch_sub(&sp->submitting, 1);
		return -EPIPE;
	}
	cds_wfcq_node_init(&m->node);
	cds_wfcq_enqueue(&sp->qh, &sp->qt, &m->node);
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&sp->sleeping, memory_order_relaxed) &&
	    atomic_exchange(&sp->sleeping, 0)) {
		uint64_t one = 1;
		if (write(sp->efd, &one, sizeof one) < 0)
			(void)0; /* counter saturated: the writer is awake anyway */
	}
	atomic_fetch_sub(&sp->submitting, 1);
	return 0;
}

/* ---- recovery ----------------------------------------------------- */

struct mark {
	uint64_t off;
	uint32_t crc;
};

static int mark_cmp(const void *a, const void *b)
{
	const struct mark *x = a, *y = b;

	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return x->crc < y->crc ? -1 : x->crc > y->crc;
}

/* Read id's .done file: sorted marks (torn or foreign entries skipped). */
static int load_marks(struct ctl_spool *sp, uint64_t id, struct mark **out, size_t *n)
{
	char name[32];
	uint8_t buf[CTL_MARK_LEN * 256];
	struct mark *v = NULL;
	size_t cap = 0, cnt = 0;
	uint64_t pos = 0;
	int fd;

	*out = NULL;
	*n = 0;
	seg_name(name, sizeof name, id, "done");
	fd = openat(sp->dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	for (;;) {
		ssize_t r = pread(fd, buf, sizeof buf, (off_t)pos);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = -errno;
			close(fd);
			free(v);
			return e;
		}
		size_t whole = (size_t)r / CTL_MARK_LEN * CTL_MARK_LEN;
		for (size_t i = 0; i < whole; i += CTL_MARK_LEN) {
			if (ctl_get_le32(buf + i + 12) != CTL_MARK_MAGIC)
				continue;
			if (grow((void **)&v, &cap, cnt + 1, sizeof *v) != 0) {
				close(fd);
				free(v);
				return -ENOMEM;
			}
			v[cnt].off = ctl_get_le64(buf + i);
			v[cnt].crc = ctl_get_le32(buf + i + 8);
			cnt++;
		}
		if (whole == 0)
			break;
		pos += whole;
	}
	close(fd);
	if (cnt > 1)
		qsort(v, cnt, sizeof *v, mark_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

static void unlink_seg(struct ctl_spool *sp, uint64_t id)
{
	char name[32];

	seg_name(name, sizeof name, id, "seg");
	unlinkat(sp->dirfd, name, 0);
	seg_name(name, sizeof name, id, "done");
	unlinkat(sp->dirfd, name, 0);
}

static int recover_segment(struct ctl_spool *sp, uint64_t id)
{
	char name[32];
	uint8_t h[CTL_SEG_HDR_LEN], rh[CTL_REC_HDR_LEN];
	struct mark *marks = NULL;
	size_t nmarks = 0, nq = 0, qcap = 0, ndone = 0;
	struct ctl_qrec *qr = NULL;
	uint8_t *buf = NULL;
	size_t bufcap = 0;
	struct ctl_qseg *seg;
	struct stat st;
	uint64_t off;
	int fd, rc = 0;

	seg_name(name, sizeof name, id, "seg");
	fd = openat(sp->dirfd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h || memcmp(h, CTL_SEG_MAGIC, 8) != 0 ||
	    ctl_get_le32(h + 8) != CTL_SEG_VERSION || ctl_get_le32(h + 12) != CTL_SEG_HDR_LEN ||
	    ctl_get_le64(h + 16) != id || ctl_get_le32(h + 28) != ctl_crc32c(0, h, 28)) {
		close(fd);
		if ((uint64_t)st.st_size <= CTL_SEG_HDR_LEN) {
			/* Crashed while creating it: nothing was ever acknowledged. */
			unlink_seg(sp, id);
			return 0;
		}
		ctl_log(CTL_LOG_ERR, "event=spool_bad_segment seg=%s", name);
		return -EINVAL;
	}
	if ((rc = load_marks(sp, id, &marks, &nmarks)) != 0) {
		close(fd);
		return rc;
	}
	for (off = CTL_SEG_HDR_LEN; off < (uint64_t)st.st_size;) {
		uint64_t avail = (uint64_t)st.st_size - off, len, msglen;
		const uint8_t *env, *msg;
		uint32_t envlen, crc;
		struct ctl_env_dec dec;

		if (avail < CTL_REC_HDR_LEN || pread(fd, rh, sizeof rh, (off_t)off) != (ssize_t)sizeof rh)
			break;
		len = ctl_get_le64(rh + 8);
		if (ctl_get_le32(rh) != CTL_REC_MAGIC || len > avail || len < CTL_REC_HDR_LEN ||
		    len > CTL_REC_MAX || len > SIZE_MAX)
			break;
		if (grow((void **)&buf, &bufcap, (size_t)len, 1) != 0) {
			rc = -ENOMEM;
			goto out;
		}
		if (pread(fd, buf, (size_t)len, (off_t)off) != (ssize_t)len)
			break;
		if (ctl_rec_check(buf, len, &env, &envlen, &msg, &msglen, &crc) != len)
			break;
		struct mark key = {off, crc};
		if (nmarks > 0 && bsearch(&key, marks, nmarks, sizeof key, mark_cmp) != NULL) {
			ndone++;
			off += len;
			continue;
		}
		if (ctl_env_decode(env, envlen, &dec) != 0) {
			/* CRC good but undecodable: written by a newer or buggy writer. */
			ctl_log(CTL_LOG_ERR, "event=spool_bad_envelope seg=%s off=%llu",
			              name, (unsigned long long)off);
			off += len;
			continue;
		}
		if (grow((void **)&qr, &qcap, nq + 1, sizeof *qr) != 0) {
			ctl_env_dec_free(&dec);
			rc = -ENOMEM;
			goto out;
		}
		qr[nq].off = off;
		qr[nq].len = len;
		qr[nq].crc = crc;
		qr[nq].arrival = dec.env.arrival;
		memcpy(qr[nq].qid, dec.env.qid, CTL_QID_LEN);
		nq++;
		ctl_env_dec_free(&dec);
		off += len;
	}
	if (off < (uint64_t)st.st_size)
		ctl_log(CTL_LOG_WARN,
		              "event=spool_torn seg=%s off=%llu ignored=%llu",
		              name, (unsigned long long)off,
		              (unsigned long long)((uint64_t)st.st_size - off));
	seg = ctl_queue_seg_new(sp->q, id, fd);
	fd = -1;
	if (seg == NULL) {
		rc = -errno;
		goto out;
	}
	if (ctl_queue_add(sp->q, seg, qr, nq) != nq) {
		ctl_queue_seg_seal(sp->q, seg);
		rc = -ENOMEM;
		goto out;
	}
	ctl_queue_seg_seal(sp->q, seg); /* removes it now if nothing is left */
	atomic_fetch_add(&sp->st_recovered, nq);
	if (nq > 0)
		ctl_log(CTL_LOG_INFO, "event=spool_recovered seg=%s queued=%zu done=%zu",
		              name, nq, ndone);
out:
	if (fd >= 0)
		close(fd);
	free(marks);
	free(qr);
	free(buf);
	return rc;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Parse "%016llx.<ext>"; true if name matches. */
static bool parse_name(const char *name, const char *ext, uint64_t *id)
{
	char *end;

	if (strlen(name) != 17 + strlen(ext) || name[16] != '.' || strcmp(name + 17, ext) != 0)
		return false;
	for (int i = 0; i < 16; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	*id = strtoull(name, &end, 16);
	return end == name + 16;
}

static int recover(struct ctl_spool *sp)
{
	uint64_t *segs = NULL, *dones = NULL, id, max = 0;
	size_t nseg = 0, capseg = 0, ndone = 0, capdone = 0;
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if ((fd = dup(sp->dirfd)) < 0)
		return -errno;
	if ((d = fdopendir(fd)) == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	while ((de = readdir(d)) != NULL) {
		if (parse_name(de->d_name, "seg", &id)) {
			if (grow((void **)&segs, &capseg, nseg + 1, sizeof *segs) != 0) {
				rc = -ENOMEM;
				break;
			}
			segs[nseg++] = id;
		} else if (parse_name(de->d_name, "done", &id)) {
			if (grow((void **)&dones, &capdone, ndone + 1, sizeof *dones) != 0) {
				rc = -ENOMEM;
				break;
			}
			dones[ndone++] = id;
		} else {
			continue;
		}
		if (id >= max)
			max = id + 1;
	}
	closedir(d);
	if (rc == 0) {
		if (nseg > 1)
			qsort(segs, nseg, sizeof *segs, u64_cmp);
		for (size_t i = 0; i < nseg && rc == 0; i++)
			rc = recover_segment(sp, segs[i]);
		/* A .done without its .seg: the unlink was cut short by a crash. */
		for (size_t i = 0; i < ndone && rc == 0; i++) {
			if (nseg == 0 || bsearch(&dones[i], segs, nseg, sizeof *segs, u64_cmp) == NULL) {
				char name[32];
				seg_name(name, sizeof name, dones[i], "done");
				unlinkat(sp->dirfd, name, 0);
			}
		}
	}
	sp->next_id = max;
	free(segs);
	free(dones);
	return rc;
}

/* ---- open / close / stats ------------------------------------------ */

static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof path)
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		char c = path[i];
		path[i] = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST)
			return -errno;
		path[i] = c;
	}
	return 0;
}

static void spool_free(struct ctl_spool *sp)
{
	if (sp->efd >= 0)
		close(sp->efd);
	if (sp->dirfd >= 0)
		close(sp->dirfd);
	free(sp->recs);
	free(sp->qrecs);
	free(sp->wenv);
	free(sp->wiov);
	free(sp->dir);
	free(sp);
}

struct ctl_spool *ctl_spool_open(const struct ctl_spool_conf *conf, struct ctl_queue *q)
{
	struct ctl_spool *sp;
	char path[PATH_MAX];
	int rc;

	if (conf == NULL || conf->dir == NULL || q == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if ((sp = calloc(1, sizeof *sp)) == NULL)
		return NULL;
	sp->efd = -1;
	sp->dirfd = -1;
	sp->conf = *conf;
	if (sp->conf.segment_max == 0)
		sp->conf.segment_max = SPOOL_SEGMENT_DEFAULT;
	if (sp->conf.commit_batch_max == 0)
		sp->conf.commit_batch_max = SPOOL_BATCH_DEFAULT;
	if (sp->conf.commit_delay_us > 1000000)
		sp->conf.commit_delay_us = 1000000;
	sp->dir = strdup(conf->dir);
	sp->recs = calloc(sp->conf.commit_batch_max, sizeof *sp->recs);
	sp->qrecs = calloc(sp->conf.commit_batch_max, sizeof *sp->qrecs);
	if (sp->dir == NULL || sp->recs == NULL || sp->qrecs == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	sp->conf.dir = sp->dir;
	__cds_wfcq_init(&sp->qh, &sp->qt);

	if ((size_t)snprintf(path, sizeof path, "%s/seg", conf->dir) >= sizeof path) {
		rc = -ENAMETOOLONG;
		goto fail;
	}
	if ((rc = mkdir_p(path)) != 0)
		goto fail;
	if ((sp->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	/* One process per spool: a second one would deliver everything twice. */
	if (flock(sp->dirfd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		goto fail;
	}
	if ((rc = ctl_queue_attach(q, sp->dirfd)) != 0)
		goto fail;
	sp->q = q;
	if ((sp->efd = eventfd(0, EFD_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = recover(sp)) != 0)
		goto fail;
	if ((rc = seg_create(sp)) != 0)
		goto fail;
	if ((rc = -pthread_create(&sp->writer, NULL, writer_main, sp)) != 0) {
		seg_rotate(sp);
		goto fail;
	}
	return sp;
fail:
	ctl_log(CTL_LOG_ERR, "event=spool_open_failed dir=%s error=%s", conf->dir,
	              strerror(-rc));
	spool_free(sp);
	errno = -rc;
	return NULL;
}

struct ctl_spool *ctl_spool_close(struct ctl_spool *sp)
{
	uint64_t one = 1;

	if (sp == NULL)
		return NULL;
	atomic_store(&sp->closing, 1);
	if (write(sp->efd, &one, sizeof one) < 0)
		(void)0;
	pthread_join(sp->writer, NULL);
	spool_free(sp);
	return NULL;
}

void ctl_spool_stats(const struct ctl_spool *sp, struct ctl_spool_stats *st)
{
	struct ctl_spool *s = (struct ctl_spool *)sp; /* atomics: loads only */

	st->messages = atomic_load_explicit(&s->st_messages, memory_order_relaxed);
	st->bytes = atomic_load_explicit(&s->st_bytes, memory_order_relaxed);
	st->commits = atomic_load_explicit(&s->st_commits, memory_order_relaxed);
	st->errors = atomic_load_explicit(&s->st_errors, memory_order_relaxed);
	st->recovered = atomic_load_explicit(&s->st_recovered, memory_order_relaxed);
}

bool
ctl_spool_full(const struct ctl_spool *sp)
{
	return ctl_queue_full(sp->q);
}
