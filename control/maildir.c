/*
 * maildir.c - Maildir delivery: see control/maildir.h for the contract.
 *
 * Why a file appears only in new/ once complete: readers (IMAP servers)
 * look at new/ and cur/ only; the rename from tmp/ is atomic, so they never
 * see a partial message. With sync, the data is fsync'ed before the rename
 * and the directory after, so the name survives a crash too.
 */
#include "control/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char md_host[256];
static pthread_once_t md_host_once = PTHREAD_ONCE_INIT;
static atomic_ulong md_counter;

/* The Maildir spec wants '/' and ':' in the host name encoded as octal. */
static void md_host_init(void)
{
	char h[128];
	size_t o = 0;

	if (gethostname(h, sizeof h) != 0 || h[0] == '\0')
		snprintf(h, sizeof h, "localhost");
	h[sizeof h - 1] = '\0';
	for (const char *p = h; *p != '\0' && o + 5 < sizeof md_host; p++) {
		if (*p == '/' || *p == ':') {
			o += (size_t)snprintf(md_host + o, sizeof md_host - o, "\\%03o",
			                      (unsigned)(unsigned char)*p);
		} else if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			md_host[o++] = '_';
		} else {
			md_host[o++] = *p;
		}
	}
	md_host[o] = '\0';
}

bool ctl_maildir_templated(const char *tmpl)
{
	for (const char *p = tmpl; *p != '\0'; p++) {
		if (*p == '%' && (p[1] == 'u' || p[1] == 'd'))
			return true;
		if (*p == '%' && p[1] == '%')
			p++;
	}
	return false;
}

/* Append value [v, v+n) made safe as one path component. */
static int md_put_component(char *out, size_t outlen, size_t *o, const char *v,
                            size_t n, bool lower)
{
	if (n == 0) {
		v = "_";
		n = 1;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '/' || c < 0x20 || c == 0x7f)
			c = '_';
		else if (c == '.' && (i == 0 || v[i - 1] == '.'))
			c = '_';
		else if (lower && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (*o + 1 >= outlen)
			return -ENAMETOOLONG;
		out[(*o)++] = (char)c;
	}
	return 0;
}

int ctl_maildir_expand(const char *tmpl, const char *rcpt, char *out, size_t outlen)
{
	const char *at = strrchr(rcpt, '@');
	size_t llen = at != NULL ? (size_t)(at - rcpt) : strlen(rcpt);
	const char *dom = at != NULL ? at + 1 : "";
	size_t o = 0;
	int rc;

	if (outlen == 0)
		return -ENAMETOOLONG;
	for (const char *p = tmpl; *p != '\0'; p++) {
		if (*p != '%') {
			if (o + 1 >= outlen)
				return -ENAMETOOLONG;
			out[o++] = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'u':
			rc = md_put_component(out, outlen, &o, rcpt, llen, false);
			break;
		case 'd':
			rc = md_put_component(out, outlen, &o, dom, strlen(dom), true);
			break;
		case '%':
			rc = o + 1 >= outlen ? -ENAMETOOLONG : 0;
			if (rc == 0)
				out[o++] = '%';
			break;
		default:
			rc = -EINVAL;
			break;
		}
		if (rc != 0)
			return rc;
	}
	out[o] = '\0';
	return 0;
}

static int md_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

/* fsync the directory that holds path (path has no trailing '/'). */
static int md_fsync_parent(const char *path)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return md_fsync_dir(".");
	if (slash == path)
		return md_fsync_dir("/");
	if ((size_t)(slash - path) >= sizeof parent)
		return -ENAMETOOLONG;
	memcpy(parent, path, (size_t)(slash - path));
	parent[slash - path] = '\0';
	return md_fsync_dir(parent);
}

/* mkdir that counts EEXIST (of a directory) as success; *made tells. */
static int md_mkdir(const char *path, bool sync, bool *made)
{
	struct stat st;

	*made = false;
	if (mkdir(path, 0700) == 0) {
		*made = true;
		return sync ? md_fsync_parent(path) : 0;
	}
	if (errno != EEXIST)
		return -errno;
	if (stat(path, &st) != 0)
		return -errno;
	return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Create dir and its missing parents, then tmp/ new/ cur/. */
static int md_create(const char *dir, bool sync)
{
	char path[PATH_MAX];
	size_t len = strlen(dir);
	bool made;
	int rc;

	if (len + 5 >= sizeof path)
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	for (size_t i = 1; i < len; i++) {
		if (path[i] != '/')
			continue;
		path[i] = '\0';
		rc = md_mkdir(path, sync, &made);
		path[i] = '/';
		if (rc != 0)
			return rc;
	}
	if ((rc = md_mkdir(path, sync, &made)) != 0)
		return rc;
	static const char *const sub[] = {"/tmp", "/new", "/cur"};
	for (size_t i = 0; i < 3; i++) {
		memcpy(path + len, sub[i], 5);
		if ((rc = md_mkdir(path, sync, &made)) != 0)
			return rc;
	}
	return 0;
}

/* Write all of iov (modified in place), IOV_MAX at a time. */
static int md_writev_all(int fd, struct iovec *iov, int cnt)
{
	while (cnt > 0) {
		ssize_t w = writev(fd, iov, cnt > IOV_MAX ? IOV_MAX : cnt);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
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

int ctl_maildir_deliver(const char *dir, const char *hdr, const struct iovec *iov,
                        int iovcnt, bool sync, char *name, size_t namelen)
{
	char uniq[384], tmp[PATH_MAX], dst[PATH_MAX];
	struct iovec small[16], *v = small;
	struct timespec ts;
	int fd, rc, n;

	if (iovcnt < 0)
		return -EINVAL;
	pthread_once(&md_host_once, md_host_init);
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(uniq, sizeof uniq, "%lld.M%ldP%ldQ%lu.%s", (long long)ts.tv_sec,
	         ts.tv_nsec / 1000, (long)getpid(),
	         atomic_fetch_add_explicit(&md_counter, 1, memory_order_relaxed) + 1,
	         md_host);
	if ((size_t)snprintf(tmp, sizeof tmp, "%s/tmp/%s", dir, uniq) >= sizeof tmp ||
	    (size_t)snprintf(dst, sizeof dst, "%s/new/%s", dir, uniq) >= sizeof dst)
		return -ENAMETOOLONG;
	if (name != NULL && namelen > 0)
		snprintf(name, namelen, "%s", uniq);

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		if ((rc = md_create(dir, sync)) != 0)
			return rc;
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;

	if ((size_t)iovcnt + 1 > sizeof small / sizeof small[0]) {
		v = malloc(((size_t)iovcnt + 1) * sizeof *v);
		if (v == NULL) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	n = 0;
	if (hdr != NULL && hdr[0] != '\0')
		v[n++] = (struct iovec){(void *)hdr, strlen(hdr)};
	for (int i = 0; i < iovcnt; i++)
		if (iov[i].iov_len > 0)
			v[n++] = iov[i];
	rc = md_writev_all(fd, v, n);
	if (v != small)
		free(v);
	if (rc != 0)
		goto fail;
	if (sync && fsync(fd) != 0) {
		rc = -errno;
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, dst) != 0) {
		rc = -errno;
		goto fail;
	}
	if (sync) {
		snprintf(tmp, sizeof tmp, "%s/new", dir);
		if ((rc = md_fsync_dir(tmp)) != 0)
			return rc; /* renamed but maybe not durable: the caller retries */
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}
