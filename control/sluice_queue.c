/*
 * sluice_queue.c - sluice-queue: look at and act on the spool of a
 * configuration (docs/SPOOL.md, "Admin").
 *
 *   sluice-queue -c FILE list           undelivered messages
 *   sluice-queue -c FILE show QID       envelope, recipients, header
 *   sluice-queue -c FILE flush          retry everything now (running sluiced)
 *   sluice-queue -c FILE delete QID...  drop messages without a bounce
 *
 * Reading needs no coordination: segments are append-only and a record is
 * only believed when its CRC matches. Changes go through the queue thread
 * of a running sluiced (request files in DIR/ctl/); when no sluiced holds
 * the spool's lock, delete appends the delivered marks itself, under that
 * lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/config.h"
#include "control/queue_impl.h"

#define WAIT_ANSWER_MS 10000

struct mark {
	uint64_t off;
	uint32_t word;
	uint32_t magic;
};

struct seg {
	uint64_t id;
	struct mark *marks;
	size_t nmarks;
};

/* What a visitor gets for one undelivered record. */
struct rec {
	uint64_t seg, off, len;
	uint32_t crc;
	const struct ctl_envelope *env;
	const uint8_t *msg;
	uint64_t msglen;
	const uint8_t *rdone;          /* per recipient: 1 if final (RCPT mark) */
};

typedef int (*visit_fn)(const struct rec *r, void *arg);

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void load_marks(int dirfd, struct seg *s)
{
	char name[40];
	struct stat st;
	int fd;

	snprintf(name, sizeof name, "%016llx.done", (unsigned long long)s->id);
	fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_size >= CTL_MARK_LEN) {
		size_t n = (size_t)st.st_size / CTL_MARK_LEN;
		uint8_t *buf = malloc(n * CTL_MARK_LEN);
		s->marks = calloc(n, sizeof *s->marks);
		if (buf != NULL && s->marks != NULL &&
		    pread(fd, buf, n * CTL_MARK_LEN, 0) == (ssize_t)(n * CTL_MARK_LEN)) {
			for (size_t i = 0; i < n; i++) {
				const uint8_t *p = buf + i * CTL_MARK_LEN;
				s->marks[s->nmarks].off = ctl_get_le64(p);
				s->marks[s->nmarks].word = ctl_get_le32(p + 8);
				s->marks[s->nmarks].magic = ctl_get_le32(p + 12);
				s->nmarks++;
			}
		}
		free(buf);
	}
	close(fd);
}

static bool marked(const struct seg *s, uint64_t off, uint32_t word, uint32_t magic)
{
	for (size_t i = 0; i < s->nmarks; i++)
		if (s->marks[i].off == off && s->marks[i].word == word && s->marks[i].magic == magic)
			return true;
	return false;
}

/* Visit every undelivered record of the spool in segment and record order.
 * Returns the first non-zero visitor result, or 0. */
static int scan(int dirfd, visit_fn fn, void *arg)
{
	DIR *d;
	uint64_t *ids = NULL;
	size_t n = 0, cap = 0;
	int rc = 0, dfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);

	if (dfd < 0 || (d = fdopendir(dfd)) == NULL) {
		if (dfd >= 0)
			close(dfd);
		return -errno;
	}
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		unsigned long long id;
		char tail[8];
		if (strlen(de->d_name) != 20 || sscanf(de->d_name, "%16llx.%3s", &id, tail) != 2 ||
		    strcmp(tail, "seg") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *ni = realloc(ids, cap * sizeof *ids);
			if (ni == NULL)
				break;
			ids = ni;
		}
		ids[n++] = id;
	}
	closedir(d);
	qsort(ids, n, sizeof *ids, u64_cmp);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct seg s = { .id = ids[i] };
		char name[40];
		struct stat st;
		int fd;

		snprintf(name, sizeof name, "%016llx.seg", (unsigned long long)s.id);
		if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		if (fstat(fd, &st) != 0 || st.st_size <= (off_t)CTL_SEG_HDR_LEN) {
			close(fd);
			continue;
		}
		uint8_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		close(fd);
		if (map == MAP_FAILED)
			continue;
		if (memcmp(map, CTL_SEG_MAGIC, 8) != 0) {
			munmap(map, (size_t)st.st_size);
			continue;
		}
		load_marks(dirfd, &s);
		uint64_t off = CTL_SEG_HDR_LEN, size = (uint64_t)st.st_size;
		while (off < size && rc == 0) {
			const uint8_t *envp, *msg;
			uint32_t envlen, crc;
			uint64_t msglen;
			uint64_t len = ctl_rec_check(map + off, size - off, &envp, &envlen, &msg, &msglen, &crc);
			if (len == 0)
				break;                 /* torn tail, or being written now */
			struct ctl_env_dec dec;
			if (!marked(&s, off, crc, CTL_MARK_MAGIC) &&
			    ctl_env_decode(envp, envlen, &dec) == 0) {
				uint8_t *rd = calloc(dec.env.nrcpt ? dec.env.nrcpt : 1, 1);
				for (uint32_t k = 0; rd != NULL && k < dec.env.nrcpt; k++)
					rd[k] = marked(&s, off, k, CTL_RMARK_MAGIC);
				struct rec r = { s.id, off, len, crc, &dec.env, msg, msglen, rd };
				if (rd != NULL)
					rc = fn(&r, arg);
				free(rd);
				ctl_env_dec_free(&dec);
			}
			off += len;
		}
		free(s.marks);
		munmap(map, (size_t)size);
	}
	free(ids);
	return rc;
}

/* ---- requests to a running sluiced ------------------------------------ */

/* Send a request through DIR/ctl/ and wait for the answer (malloc'd), or
 * NULL on timeout (the request then stays for the queue to pick up). */
static char *request(const char *spool, const char *text)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 64], req[PATH_MAX + 64], res[PATH_MAX + 64];
	static unsigned seq;
	FILE *f;

	snprintf(dir, sizeof dir, "%s/" CTL_CTL_DIR, spool);
	mkdir(dir, 0700);
	snprintf(tmp, sizeof tmp, "%s/.req.%d.%u", dir, (int)getpid(), seq);
	snprintf(req, sizeof req, "%s/req.%d.%u", dir, (int)getpid(), seq);
	snprintf(res, sizeof res, "%s/res.%d.%u", dir, (int)getpid(), seq);
	seq++;
	if ((f = fopen(tmp, "w")) == NULL) {
		fprintf(stderr, "sluice-queue: %s: %s\n", tmp, strerror(errno));
		return NULL;
	}
	fputs(text, f);
	if (fclose(f) != 0 || rename(tmp, req) != 0) {
		fprintf(stderr, "sluice-queue: %s: %s\n", req, strerror(errno));
		unlink(tmp);
		return NULL;
	}
	for (int waited = 0; waited < WAIT_ANSWER_MS; waited += 20) {
		struct stat st;
		if (stat(res, &st) == 0) {
			char *buf = calloc(1, (size_t)st.st_size + 1);
			if ((f = fopen(res, "r")) != NULL) {
				if (buf != NULL && fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
					buf[0] = '\0';
				fclose(f);
			}
			unlink(res);
			return buf;
		}
		usleep(20000);
	}
	fprintf(stderr, "sluice-queue: no answer from sluiced within %ds; the request stays in %s "
	        "and is applied when the queue polls it\n", WAIT_ANSWER_MS / 1000, req);
	return NULL;
}

/* The spool's lock: 1 taken (no sluiced runs), 0 held by a running sluiced,
 * -errno. */
static int try_lock(int dirfd)
{
	if (flock(dirfd, LOCK_EX | LOCK_NB) == 0)
		return 1;
	return errno == EWOULDBLOCK ? 0 : -errno;
}

/* ---- commands --------------------------------------------------------- */

struct list_ctx {
	char *live;                    /* "list" answer of a running sluiced, or NULL */
	size_t count;
	uint64_t bytes;
	time_t now;
};

static void printable(FILE *out, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static int list_one(const struct rec *r, void *arg)
{
	struct list_ctx *c = arg;
	const struct ctl_envelope *e = r->env;
	long long age = (long long)(c->now - e->arrival);
	uint32_t pend = 0;

	for (uint32_t k = 0; k < e->nrcpt; k++)
		pend += !r->rdone[k];
	printf("%-20s %10llu  age=%lldd%02lldh%02lldm  from=<", e->qid,
	       (unsigned long long)r->msglen, age / 86400, age % 86400 / 3600, age % 3600 / 60);
	printable(stdout, e->mail_from);
	printf(">  pending=%u/%u", pend, e->nrcpt);
	if (c->live != NULL) {
		char key[CTL_QID_LEN + 8];
		snprintf(key, sizeof key, "entry %s ", e->qid);
		const char *p = strstr(c->live, key);
		if (p != NULL) {
			const char *eol = strchr(p, '\n');
			printf("  %.*s", (int)((eol ? eol : p + strlen(p)) - p - strlen(key)), p + strlen(key));
		}
	}
	printf("\n");
	for (uint32_t k = 0; k < e->nrcpt; k++) {
		if (r->rdone[k])
			continue;
		printf("    <");
		printable(stdout, e->rcpt[k].addr);
		printf(">\n");
	}
	c->count++;
	c->bytes += r->msglen;
	return 0;
}

struct show_ctx {
	const char *qid;
	bool found;
};

static int show_one(const struct rec *r, void *arg)
{
	struct show_ctx *c = arg;
	const struct ctl_envelope *e = r->env;
	static const char *const body[] = { "-", "7BIT", "8BITMIME", "BINARYMIME" };
	static const char *const ret[] = { "-", "FULL", "HDRS" };
	char when[64];
	time_t t = (time_t)e->arrival;
	struct tm tm;

	if (strcmp(e->qid, c->qid) != 0)
		return 0;
	c->found = true;
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
	printf("qid: %s\nsegment: %016llx offset: %llu length: %llu\narrival: %s\n", e->qid,
	       (unsigned long long)r->seg, (unsigned long long)r->off, (unsigned long long)r->len, when);
	printf("client: ");
	printable(stdout, e->client);
	printf("\nhelo: ");
	printable(stdout, e->helo);
	printf("\nfrom: <");
	printable(stdout, e->mail_from);
	printf(">\nbody: %s ret: %s smtputf8: %s envid: ", body[e->body], ret[e->ret],
	       e->smtputf8 ? "yes" : "no");
	printable(stdout, e->envid ? e->envid : "-");
	printf("\nsize: %llu\n", (unsigned long long)r->msglen);
	for (uint32_t k = 0; k < e->nrcpt; k++) {
		printf("rcpt: <");
		printable(stdout, e->rcpt[k].addr);
		printf("> %s notify=0x%x orcpt=", r->rdone[k] ? "done" : "pending", e->rcpt[k].notify);
		printable(stdout, e->rcpt[k].orcpt ? e->rcpt[k].orcpt : "-");
		printf("\n");
	}
	printf("\n");
	/* The header section, as stored. */
	for (uint64_t i = 0; i < r->msglen; i++) {
		if (r->msg[i] == '\n' && (i + 1 >= r->msglen || r->msg[i + 1] == '\r' ||
		                          r->msg[i + 1] == '\n')) {
			fwrite(r->msg, 1, (size_t)i + 1, stdout);
			break;
		}
	}
	return 1;
}

struct del_ctx {
	int dirfd;
	char **qids;
	int nqids;
	bool *hit;
};

static int delete_one(const struct rec *r, void *arg)
{
	struct del_ctx *c = arg;
	char name[40];
	uint8_t m[CTL_MARK_LEN];

	for (int i = 0; i < c->nqids; i++) {
		if (strcmp(r->env->qid, c->qids[i]) != 0)
			continue;
		snprintf(name, sizeof name, "%016llx.done", (unsigned long long)r->seg);
		int fd = openat(c->dirfd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		ctl_put_le64(m, r->off);
		ctl_put_le32(m + 8, r->crc);
		ctl_put_le32(m + 12, CTL_MARK_MAGIC);
		if (fd < 0 || write(fd, m, sizeof m) != (ssize_t)sizeof m || fsync(fd) != 0) {
			fprintf(stderr, "sluice-queue: %s: %s\n", name, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -EIO;
		}
		close(fd);
		c->hit[i] = true;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: sluice-queue -c FILE COMMAND\n"
	        "  list             undelivered messages and their pending recipients\n"
	        "  show QID         envelope, recipients and header of one message\n"
	        "  flush            make a running sluiced retry everything now\n"
	        "  delete QID...    drop messages from the queue (no bounce is sent)\n"
	        "  quarantine       messages the content filter held (spool/quarantine/)\n"
	        "  release QID...   deliver held messages after all (running sluiced)\n");
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	struct ctl_config cfg;
	char err[1024], segdir[PATH_MAX];
	int ch, rc = 0;

	while ((ch = getopt(argc, argv, "c:h")) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (path == NULL || optind >= argc) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[optind];
	if (ctl_config_load(path, &cfg, err, sizeof err) < 0) {
		fprintf(stderr, "sluice-queue: %s\n", err);
		return 1;
	}
	snprintf(segdir, sizeof segdir, "%s/seg", cfg.spool_dir);
	int dirfd = open(segdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		fprintf(stderr, "sluice-queue: %s: %s\n", segdir, strerror(errno));
		ctl_config_free(&cfg);
		return 1;
	}
	if (strcmp(cmd, "list") == 0 && optind + 1 == argc) {
		struct list_ctx c = { .now = time(NULL) };
		int lk = try_lock(dirfd);
		if (lk == 1)
			flock(dirfd, LOCK_UN);     /* never hold up a starting sluiced */
		else if (lk == 0)
			c.live = request(cfg.spool_dir, "list\n");
		rc = scan(dirfd, list_one, &c);
		printf("%zu message%s, %llu bytes%s\n", c.count, c.count == 1 ? "" : "s",
		       (unsigned long long)c.bytes, lk == 0 ? " (sluiced is running)" :
		       " (sluiced is not running)");
		free(c.live);
		rc = rc < 0 ? 1 : 0;
	} else if (strcmp(cmd, "show") == 0 && optind + 2 == argc) {
		struct show_ctx c = { .qid = argv[optind + 1] };
		scan(dirfd, show_one, &c);
		if (!c.found) {
			fprintf(stderr, "sluice-queue: %s: not in the queue\n", c.qid);
			rc = 1;
		}
	} else if (strcmp(cmd, "flush") == 0 && optind + 1 == argc) {
		int lk = try_lock(dirfd);
		if (lk == 1) {
			printf("sluiced is not running: everything queued is tried at its next start\n");
		} else if (lk == 0) {
			char *a = request(cfg.spool_dir, "flush\n");
			if (a != NULL)
				fputs(a, stdout);
			rc = a != NULL ? 0 : 1;
			free(a);
		} else {
			fprintf(stderr, "sluice-queue: %s: %s\n", segdir, strerror(-lk));
			rc = 1;
		}
	} else if (strcmp(cmd, "delete") == 0 && optind + 2 <= argc) {
		int n = argc - optind - 1;
		char **qids = argv + optind + 1;
		int lk = try_lock(dirfd);
		if (lk == 0) {
			size_t len = 1;
			for (int i = 0; i < n; i++)
				len += strlen(qids[i]) + 8;
			char *text = calloc(1, len);
			for (int i = 0; text != NULL && i < n; i++)
				if (strlen(qids[i]) < CTL_QID_LEN && strpbrk(qids[i], "\r\n") == NULL)
					snprintf(text + strlen(text), len - strlen(text), "delete %s\n", qids[i]);
			char *a = text != NULL ? request(cfg.spool_dir, text) : NULL;
			free(text);
			if (a != NULL) {
				fputs(a, stdout);
				if (strstr(a, "notfound") != NULL)
					rc = 1;
			} else {
				rc = 1;
			}
			free(a);
		} else if (lk == 1) {
			bool *hit = calloc((size_t)n, sizeof *hit);
			struct del_ctx c = { dirfd, qids, n, hit };
			rc = hit != NULL ? scan(dirfd, delete_one, &c) : -ENOMEM;
			flock(dirfd, LOCK_UN);
			for (int i = 0; hit != NULL && i < n; i++) {
				printf("%s %s\n", hit[i] ? "deleted" : "notfound", qids[i]);
				if (!hit[i])
					rc = 1;
			}
			free(hit);
			rc = rc != 0 ? 1 : 0;
		} else {
			fprintf(stderr, "sluice-queue: %s: %s\n", segdir, strerror(-lk));
			rc = 1;
		}
	} else if (strcmp(cmd, "quarantine") == 0 && optind + 1 == argc) {
		char qdir[PATH_MAX];
		snprintf(qdir, sizeof qdir, "%s/%s", cfg.spool_dir, CTL_QUARANTINE_DIR);
		int qfd = open(qdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = qfd >= 0 ? fdopendir(qfd) : NULL;
		unsigned n = 0;
		for (struct dirent *de; d != NULL && (de = readdir(d)) != NULL;) {
			struct stat st;
			if (de->d_name[0] == '.' || fstatat(qfd, de->d_name, &st, 0) != 0)
				continue;
			printf("%s %lld bytes\n", de->d_name, (long long)st.st_size);
			n++;
		}
		if (d != NULL)
			closedir(d);
		printf("%u held\n", n);
	} else if (strcmp(cmd, "release") == 0 && optind + 2 <= argc) {
		int lk = try_lock(dirfd);
		if (lk == 1) {
			fprintf(stderr, "sluice-queue: release needs a running sluiced (it puts the "
			        "message back into the spool)\n");
			rc = 1;
		} else if (lk == 0) {
			for (int i = optind + 1; i < argc && rc == 0; i++) {
				char req[CTL_QID_LEN + 16];
				snprintf(req, sizeof req, "release %s\n", argv[i]);
				char *a = request(cfg.spool_dir, req);
				if (a != NULL)
					fputs(a, stdout);
				if (a == NULL || strncmp(a, "released ", 9) != 0)
					rc = 1;
				free(a);
			}
		} else {
			fprintf(stderr, "sluice-queue: %s: %s\n", segdir, strerror(-lk));
			rc = 1;
		}
	} else {
		usage(stderr);
		rc = 2;
	}
	close(dirfd);
	ctl_config_free(&cfg);
	return rc;
}
