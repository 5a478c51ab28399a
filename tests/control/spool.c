/*
 * tests/control/spool.c - the spool (group commit, recovery, record format)
 * and the queue manager (Maildir delivery, retries, segment removal).
 * Each test runs in its own mkdtemp directory, removed afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "control/log.h"
#include "control/queue_impl.h"
#include "control/spool.h"

#define fail_msg_if(cond, ...) do { if (cond) fail_msg(__VA_ARGS__); } while (0)

/* ---- fixtures ------------------------------------------------------- */

struct fx {
	char dir[256];
	char spool[300];
	char mail[300];     /* a good Maildir template */
	char blocked[300];  /* a Maildir path below a regular file */
	char blocker[300];
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st; (void)flag; (void)f;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);
	const char *t = getenv("TMPDIR");

	if (fx == NULL)
		return -1;
	snprintf(fx->dir, sizeof fx->dir, "%s/sluice-spool-XXXXXX", t != NULL && t[0] ? t : "/tmp");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->spool, sizeof fx->spool, "%s/spool", fx->dir);
	snprintf(fx->mail, sizeof fx->mail, "%s/mail", fx->dir);
	snprintf(fx->blocker, sizeof fx->blocker, "%s/blocker", fx->dir);
	snprintf(fx->blocked, sizeof fx->blocked, "%s/blocker/mail", fx->dir);
	int fd = open(fx->blocker, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return -1;
	close(fd);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	nftw(fx->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(fx);
	return 0;
}

/* ---- test messages -------------------------------------------------- */

struct tmsg {
	struct ctl_msg m;
	struct iovec iov[3];
	struct smtp_rcpt rc[2];
	char from[64], to[2][64];
	char *text;
	size_t len;
	int idx;
	atomic_int state;   /* 0 pending, 1 durable, 2 refused */
};

static atomic_int g_ok, g_err;
static int g_record_fd = -1; /* child: qids of done(0) messages */

static void tmsg_done(struct ctl_msg *m, int err)
{
	struct tmsg *t = m->ctx;

	atomic_store(&t->state, err == 0 ? 1 : 2);
	atomic_fetch_add(err == 0 ? &g_ok : &g_err, 1);
	if (err == 0 && g_record_fd >= 0) {
		char line[32];
		int n = snprintf(line, sizeof line, "%d\n", t->idx);
		if (write(g_record_fd, line, (size_t)n) != n)
			_exit(3);
	}
}

/* Deterministic content for message i: headers with its index, a body of
 * varying length with 8-bit bytes. */
static char *make_text(int i, size_t *len)
{
	size_t cap = 512 + (size_t)(i % 13) * 80;
	char *s = malloc(cap);
	size_t o;

	o = (size_t)snprintf(s, cap, "From: <sender-%d@example.net>\r\nX-Qid: %d\r\n"
	                     "Subject: t\xc3\xa9st %d\r\n\r\n", i, i, i);
	for (int l = 0; l < i % 13; l++)
		o += (size_t)snprintf(s + o, cap - o, "line %d of message %d \xe2\x82\xac\r\n", l, i);
	*len = o;
	return s;
}

/* nrcpt 1: "user<i%5>@Example.COM"; 2: adds "bob@example.com". */
static void tmsg_init(struct tmsg *t, int i, int nrcpt)
{
	memset(t, 0, sizeof *t);
	t->idx = i;
	t->text = make_text(i, &t->len);
	size_t a = t->len / 3, b = t->len / 2;
	t->iov[0] = (struct iovec){t->text, a};
	t->iov[1] = (struct iovec){t->text + a, b - a};
	t->iov[2] = (struct iovec){t->text + b, t->len - b};
	snprintf(t->from, sizeof t->from, "sender-%d@example.net", i);
	snprintf(t->to[0], sizeof t->to[0], "user%d@Example.COM", i % 5);
	snprintf(t->to[1], sizeof t->to[1], "bob@example.com");
	t->rc[0] = (struct smtp_rcpt){t->to[0], NULL, 0};
	t->rc[1] = (struct smtp_rcpt){t->to[1], "rfc822;bob@example.com", SMTP_NOTIFY_FAILURE};
	snprintf(t->m.env.qid, sizeof t->m.env.qid, "Q%08d", i);
	t->m.env.arrival = (int64_t)time(NULL);
	t->m.env.client = "192.0.2.7";
	t->m.env.helo = "client.example";
	t->m.env.mail_from = t->from;
	t->m.env.body = SMTP_BODY_8BITMIME;
	t->m.env.rcpt = t->rc;
	t->m.env.nrcpt = (uint32_t)nrcpt;
	t->m.iov = t->iov;
	t->m.iovcnt = 3;
	t->m.done = tmsg_done;
	t->m.ctx = t;
}

static struct tmsg *tmsgs_new(int n, int nrcpt)
{
	struct tmsg *v = calloc((size_t)n, sizeof *v);

	for (int i = 0; i < n; i++)
		tmsg_init(&v[i], i, nrcpt);
	return v;
}

static void tmsgs_free(struct tmsg *v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i].text);
	free(v);
}

static void reset_counts(void)
{
	atomic_store(&g_ok, 0);
	atomic_store(&g_err, 0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool wait_done(int n, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	while (atomic_load(&g_ok) + atomic_load(&g_err) < n) {
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
	return true;
}

/* Wait until the queue is empty and has delivered want in total. */
static void wait_delivered(struct ctl_queue *q, uint64_t want, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;
	struct ctl_queue_stats st;

	for (;;) {
		ctl_queue_stats(q, &st);
		if (st.delivered >= want && st.queued == 0)
			break;
		fail_msg_if(now_ms() > end, "delivered: got %llu (queued %llu), want %llu",
		            (unsigned long long)st.delivered, (unsigned long long)st.queued,
		            (unsigned long long)want);
		usleep(2000);
	}
	assert_int_equal(st.delivered, want);
}

static bool g_mail_sync = true; /* fsync Maildir files (off where not tested) */

static struct ctl_queue *queue_open(const char *maildir, enum ctl_delivery_method m,
                                    uint64_t retry_min, uint64_t max_age)
{
	struct ctl_queue_conf qc = {
		.method = m, .maildir = maildir, .retry_min_ms = retry_min,
		.retry_max_ms = retry_min * 4, .max_age_ms = max_age, .sync = g_mail_sync,
	};
	struct ctl_queue *q = ctl_queue_open(&qc);

	fail_msg_if(q == NULL, "ctl_queue_open: got %s, want a queue", strerror(errno));
	return q;
}

static struct ctl_spool *spool_open(const char *dir, struct ctl_queue *q, uint64_t segmax,
                                    uint32_t delay_us)
{
	struct ctl_spool_conf sc = {
		.dir = dir, .segment_max = segmax, .commit_delay_us = delay_us,
		.commit_batch_max = 512, .sync = true,
	};
	struct ctl_spool *sp = ctl_spool_open(&sc, q);

	fail_msg_if(sp == NULL, "ctl_spool_open: got %s, want a spool", strerror(errno));
	return sp;
}

/* Read every file in <folder>/new, check its bytes against message index
 * (Return-Path + optional Delivered-To + content), count per index. */
static void scan_maildir(const char *folder, const char *dto, int *counts, int n)
{
	char path[600];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof path, "%s/tmp", folder);
	d = opendir(path);
	fail_msg_if(d == NULL, "opendir %s: got %s, want ok", path, strerror(errno));
	while ((de = readdir(d)) != NULL)
		fail_msg_if(de->d_name[0] != '.', "tmp/ holds %s, want empty", de->d_name);
	closedir(d);
	snprintf(path, sizeof path, "%s/new", folder);
	d = opendir(path);
	fail_msg_if(d == NULL, "opendir %s: got %s, want ok", path, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		char fp[900], *buf, want[4096];
		struct stat st;
		int fd, idx;
		size_t wl, tl;

		if (de->d_name[0] == '.')
			continue;
		/* <sec>.M<usec>P<pid>Q<counter>.<host> */
		fail_msg_if(strstr(de->d_name, ".M") == NULL || strchr(de->d_name, 'P') == NULL ||
		            strchr(de->d_name, 'Q') == NULL, "name %s: want sec.MusecPpidQn.host",
		            de->d_name);
		snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
		fd = open(fp, O_RDONLY);
		assert_true(fd >= 0);
		assert_int_equal(fstat(fd, &st), 0);
		buf = malloc((size_t)st.st_size + 1);
		assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
		buf[st.st_size] = '\0';
		close(fd);
		char *x = strstr(buf, "X-Qid: ");
		fail_msg_if(x == NULL, "file %s: no X-Qid", fp);
		idx = atoi(x + 7);
		fail_msg_if(idx < 0 || idx >= n, "X-Qid: got %d, want < %d", idx, n);
		char *text = make_text(idx, &tl);
		wl = (size_t)snprintf(want, sizeof want, "Return-Path: <sender-%d@example.net>\r\n", idx);
		if (dto != NULL)
			wl += (size_t)snprintf(want + wl, sizeof want - wl, "Delivered-To: %s\r\n", dto);
		fail_msg_if((size_t)st.st_size != wl + tl || memcmp(buf, want, wl) != 0 ||
		            memcmp(buf + wl, text, tl) != 0,
		            "message %d in %s: got %lld bytes \"%.80s\", want %zu bytes \"%.80s\"",
		            idx, folder, (long long)st.st_size, buf, wl + tl, want);
		counts[idx]++;
		free(text);
		free(buf);
	}
	closedir(d);
}

static void assert_once(const int *counts, int n)
{
	for (int i = 0; i < n; i++)
		fail_msg_if(counts[i] != 1, "message %d delivered: got %d times, want 1", i, counts[i]);
}

static int count_files(const char *dir, const char *suffix)
{
	struct dirent *de;
	int n = 0;
	DIR *d = opendir(dir);

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name), s = strlen(suffix);
		if (l > s && strcmp(de->d_name + l - s, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/* ---- pure parts --------------------------------------------------- */

static void test_crc32c(void **state)
{
	(void)state;
	/* RFC 3720 B.4 / the usual check value. */
	assert_int_equal(ctl_crc32c(0, "123456789", 9), 0xe3069283u);
	uint8_t zeros[32] = {0};
	assert_int_equal(ctl_crc32c(0, zeros, 32), 0x8a9136aau);
	/* Against a bitwise reference, every length and alignment. */
	static uint8_t data[1100];
	srand(99);
	for (size_t i = 0; i < sizeof data; i++)
		data[i] = (uint8_t)rand();
	for (size_t a = 0; a < 8; a++) {
		for (size_t n = 0; n + a <= sizeof data; n += 1 + n / 8) {
			uint32_t ref = 0xffffffffu;
			for (size_t i = 0; i < n; i++) {
				ref ^= data[a + i];
				for (int k = 0; k < 8; k++)
					ref = (ref >> 1) ^ (0x82f63b78u & (0u - (ref & 1u)));
			}
			ref = ~ref;
			uint32_t got = ctl_crc32c(0, data + a, n);
			fail_msg_if(got != ref, "crc32c(align %zu, len %zu): got %08x, want %08x",
			            a, n, got, ref);
		}
	}
	/* Chaining at every split point equals one pass. */
	const char *s = "The quick brown fox jumps over the lazy dog, twice over.";
	uint32_t whole = ctl_crc32c(0, s, strlen(s));
	for (size_t k = 0; k <= strlen(s); k++) {
		uint32_t c = ctl_crc32c(ctl_crc32c(0, s, k), s + k, strlen(s) - k);
		fail_msg_if(c != whole, "split %zu: got %08x, want %08x", k, c, whole);
	}
}

static void env_equal(const struct ctl_envelope *a, const struct ctl_envelope *b)
{
	assert_string_equal(a->qid, b->qid);
	assert_int_equal(a->arrival, b->arrival);
	assert_string_equal(a->client, b->client ? b->client : "");
	assert_string_equal(a->helo, b->helo ? b->helo : "");
	assert_string_equal(a->mail_from, b->mail_from);
	assert_int_equal(a->body, b->body);
	assert_int_equal(a->ret, b->ret);
	assert_int_equal(a->smtputf8, b->smtputf8);
	if (b->envid == NULL)
		assert_null(a->envid);
	else
		assert_string_equal(a->envid, b->envid);
	assert_int_equal(a->nrcpt, b->nrcpt);
	for (uint32_t i = 0; i < b->nrcpt; i++) {
		assert_string_equal(a->rcpt[i].addr, b->rcpt[i].addr);
		assert_int_equal(a->rcpt[i].notify, b->rcpt[i].notify);
		if (b->rcpt[i].orcpt == NULL)
			assert_null(a->rcpt[i].orcpt);
		else
			assert_string_equal(a->rcpt[i].orcpt, b->rcpt[i].orcpt);
	}
}

static void test_envelope_roundtrip(void **state)
{
	enum { NR = 300 };
	static char addr[NR][80], orcpt[NR][100];
	struct smtp_rcpt rc[NR];
	struct ctl_envelope e = {
		.qid = "4XyZ0123456789abcdefgh",
		.arrival = INT64_C(1700000000),
		.client = "2001:db8::1",
		.helo = "m\xc3\xa4ilserver.example",
		.mail_from = "j\xc3\xb6rg@b\xc3\xbc" "cher.example",
		.body = SMTP_BODY_BINARYMIME,
		.ret = SMTP_RET_HDRS,
		.envid = "QQ314159+2B",
		.smtputf8 = true,
		.rcpt = rc,
		.nrcpt = NR,
	};
	(void)state;
	for (int i = 0; i < NR; i++) {
		snprintf(addr[i], sizeof addr[i], "\xe7\x94\xa8\xe6\x88\xb7%d@\xe4\xbe\x8b\xe5\xad\x90.example", i);
		snprintf(orcpt[i], sizeof orcpt[i], "utf-8;user%d@example.org", i);
		rc[i] = (struct smtp_rcpt){addr[i], i % 3 == 0 ? NULL : orcpt[i], (uint8_t)(i % 16)};
	}
	size_t n = ctl_env_size(&e);
	uint8_t *buf = malloc(n);
	assert_int_equal(ctl_env_encode(&e, buf, n), n);
	assert_int_equal(ctl_env_encode(&e, buf, n - 1), 0);
	struct ctl_env_dec d;
	assert_int_equal(ctl_env_decode(buf, n, &d), 0);
	env_equal(&d.env, &e);
	ctl_env_dec_free(&d);

	/* Every strict prefix and one extra byte are malformed. */
	for (size_t k = 0; k < n; k++) {
		int rc2 = ctl_env_decode(buf, k, &d);
		fail_msg_if(rc2 != -EBADMSG, "prefix %zu: got %d, want -EBADMSG", k, rc2);
	}
	uint8_t *more = malloc(n + 1);
	memcpy(more, buf, n);
	more[n] = 0;
	assert_int_equal(ctl_env_decode(more, n + 1, &d), -EBADMSG);
	free(more);

	/* Random corruption never crashes; whatever decodes is consistent. */
	srand(12345);
	for (int it = 0; it < 3000; it++) {
		uint8_t *c = malloc(n);
		memcpy(c, buf, n);
		for (int f = 0; f < 1 + it % 4; f++)
			c[(size_t)rand() % n] = (uint8_t)rand();
		if (ctl_env_decode(c, n, &d) == 0) {
			for (uint32_t i = 0; i < d.env.nrcpt; i++)
				assert_non_null(d.env.rcpt[i].addr);
			ctl_env_dec_free(&d);
		}
		free(c);
	}
	free(buf);

	/* Minimal envelope: <> sender, no envid, no recipients, NULL strings. */
	struct ctl_envelope m = {.qid = "", .mail_from = ""};
	n = ctl_env_size(&m);
	buf = malloc(n);
	assert_int_equal(ctl_env_encode(&m, buf, n), n);
	assert_int_equal(ctl_env_decode(buf, n, &d), 0);
	env_equal(&d.env, &m);
	assert_null(d.env.rcpt);
	ctl_env_dec_free(&d);
	free(buf);

	/* An over-long qid cannot be encoded. */
	memset(m.qid, 'x', sizeof m.qid);
	assert_int_equal(ctl_env_size(&m), 0);
}

/* ---- the spool -------------------------------------------------------- */

struct submitter {
	struct ctl_spool *sp;
	struct tmsg *v;
	int from, to;
	bool wait;    /* closed loop: one message in flight, like a session */
};

static void *submit_main(void *arg)
{
	struct submitter *s = arg;

	for (int i = s->from; i < s->to; i++) {
		int rc = ctl_spool_submit(s->sp, &s->v[i].m);
		if (rc != 0)
			abort();
		while (s->wait && atomic_load(&s->v[i].state) == 0)
			usleep(20);
	}
	return NULL;
}

static void run_submitters(struct ctl_spool *sp, struct tmsg *v, int n, int nthr, bool wait)
{
	pthread_t th[16];
	struct submitter s[16];

	for (int t = 0; t < nthr; t++) {
		s[t] = (struct submitter){sp, v, n * t / nthr, n * (t + 1) / nthr, wait};
		assert_int_equal(pthread_create(&th[t], NULL, submit_main, &s[t]), 0);
	}
	for (int t = 0; t < nthr; t++)
		pthread_join(th[t], NULL);
}

/* Many threads, fire and forget: all durable, few fdatasyncs; delivered
 * into per-recipient Maildirs with exact bytes. */
static void test_group_commit_and_delivery(void **state)
{
	struct fx *fx = *state;
	enum { N = 2000, T = 4 };
	char tmpl[400], folder[600];
	struct tmsg *v = tmsgs_new(N, 2);
	int *counts = calloc(N, sizeof *counts);

	reset_counts();
	snprintf(tmpl, sizeof tmpl, "%s/%%d/%%u", fx->mail);
	struct ctl_queue *q = queue_open(tmpl, CTL_DELIVER_MAILDIR, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	run_submitters(sp, v, N, T, false);
	fail_msg_if(!wait_done(N, 60000), "done: got %d, want %d", atomic_load(&g_ok), N);
	assert_int_equal(atomic_load(&g_err), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(atomic_load(&v[i].state), 1);
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.messages, N);
	assert_int_equal(st.errors, 0);
	fail_msg_if(st.commits == 0 || st.commits > N / 4,
	            "commits: got %llu, want 1..%d for %d messages",
	            (unsigned long long)st.commits, N / 4, N);
	wait_delivered(q, N, 120000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);

	/* user<i%5>@Example.COM -> mail/example.com/user<k>, one file each. */
	for (int k = 0; k < 5; k++) {
		char dto[64];
		snprintf(folder, sizeof folder, "%s/example.com/user%d", fx->mail, k);
		snprintf(dto, sizeof dto, "user%d@Example.COM", k);
		scan_maildir(folder, dto, counts, N);
	}
	assert_once(counts, N);
	memset(counts, 0, N * sizeof *counts);
	snprintf(folder, sizeof folder, "%s/example.com/bob", fx->mail);
	scan_maildir(folder, "bob@example.com", counts, N);
	assert_once(counts, N);

	/* Everything delivered and sealed: no segment left. */
	char segdir[400];
	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	assert_int_equal(count_files(segdir, ".seg"), 0);
	assert_int_equal(count_files(segdir, ".done"), 0);
	free(counts);
	tmsgs_free(v, N);
}

/* Sessions wait for their 250: the writer still batches across them. */
static void test_group_commit_closed_loop(void **state)
{
	struct fx *fx = *state;
	enum { N = 800, T = 8 };
	struct tmsg *v = tmsgs_new(N, 1);

	reset_counts();
	struct ctl_queue *q = queue_open(NULL, CTL_DELIVER_DISCARD, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 1000);
	run_submitters(sp, v, N, T, true);
	assert_int_equal(atomic_load(&g_ok), N);
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);
	/* Loose bound: two shared cores may schedule sessions late. */
	fail_msg_if(st.commits == 0 || st.commits > N * 3 / 4,
	            "commits: got %llu, want 1..%d for %d messages from %d sessions",
	            (unsigned long long)st.commits, N * 3 / 4, N, T);
	wait_delivered(q, N, 60000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	tmsgs_free(v, N);
}

/* Child: spool with an unwritable Maildir, submit, wait for every done(0),
 * then _exit without closing (as if killed). Parent recovers each once. */
static void test_crash_after_commit(void **state)
{
	struct fx *fx = *state;
	enum { N = 300 };
	int status, counts[N] = {0};
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct tmsg *v = tmsgs_new(N, 1);
		struct ctl_queue_conf qc = {.method = CTL_DELIVER_MAILDIR, .maildir = fx->blocked,
		                            .retry_min_ms = 600000, .retry_max_ms = 600000};
		struct ctl_spool_conf sc = {.dir = fx->spool, .segment_max = 64 * 1024,
		                            .commit_batch_max = 64, .sync = true};
		ctl_log_open(NULL, CTL_LOG_ERR);
		reset_counts();
		struct ctl_queue *q = ctl_queue_open(&qc);
		struct ctl_spool *sp = q != NULL ? ctl_spool_open(&sc, q) : NULL;
		if (sp == NULL)
			_exit(2);
		for (int i = 0; i < N; i++)
			if (ctl_spool_submit(sp, &v[i].m) != 0)
				_exit(2);
		if (!wait_done(N, 60000) || atomic_load(&g_err) != 0)
			_exit(2);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	fail_msg_if(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "child: got status %#x, want 0",
	            status);

	struct ctl_queue *q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.recovered, N);
	wait_delivered(q, N, 120000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	scan_maildir(fx->mail, NULL, counts, N);
	assert_once(counts, N);

	/* A third start finds nothing left to do. */
	q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	sp = spool_open(fx->spool, q, 0, 0);
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.recovered, 0);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	char segdir[400];
	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	assert_int_equal(count_files(segdir, ".seg"), 0);
}

/* SIGKILL at a random moment while two threads submit: every message the
 * child saw done(0) for is delivered, none twice. */
static void test_crash_sigkill(void **state)
{
	struct fx *fx = *state;
	enum { N = 4000 };
	char rec[400];
	int status;
	static int counts[N];
	unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

	for (int round = 0; round < 3; round++) {
		srand(seed + (unsigned)round);
		unsigned delay_us = (unsigned)rand() % 20000;
		char spool[400];
		snprintf(spool, sizeof spool, "%s/spool%d", fx->dir, round);
		snprintf(rec, sizeof rec, "%s/recorded%d", fx->dir, round);
		int rfd = open(rec, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
		assert_true(rfd >= 0);
		int ready[2];
		assert_int_equal(pipe(ready), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct tmsg *v = tmsgs_new(N, 1);
			struct ctl_queue_conf qc = {.method = CTL_DELIVER_MAILDIR, .maildir = fx->blocked,
			                            .retry_min_ms = 600000, .retry_max_ms = 600000};
			struct ctl_spool_conf sc = {.dir = spool, .segment_max = 256 * 1024,
			                            .commit_batch_max = 128, .sync = true};
			ctl_log_open(NULL, CTL_LOG_ERR);
			g_record_fd = rfd;
			struct ctl_queue *q = ctl_queue_open(&qc);
			struct ctl_spool *sp = q != NULL ? ctl_spool_open(&sc, q) : NULL;
			if (sp == NULL || write(ready[1], "r", 1) != 1)
				_exit(2);
			run_submitters(sp, v, N, 2, false);
			for (;;)
				pause();
		}
		close(rfd);
		close(ready[1]);
		char r;
		assert_int_equal(read(ready[0], &r, 1), 1); /* submitting from now on */
		close(ready[0]);
		usleep(delay_us);
		kill(pid, SIGKILL);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		fail_msg_if(!WIFSIGNALED(status), "child: got status %#x, want killed", status);

		char mail[400];
		snprintf(mail, sizeof mail, "%s/mail%d", fx->dir, round);
		g_mail_sync = false; /* the spool side is under test here */
		struct ctl_queue *q = queue_open(mail, CTL_DELIVER_MAILDIR, 1000, 0);
		g_mail_sync = true;
		struct ctl_spool *sp = spool_open(spool, q, 0, 0);
		struct ctl_spool_stats st;
		ctl_spool_stats(sp, &st);
		wait_delivered(q, st.recovered, 120000);
		sp = ctl_spool_close(sp);
		q = ctl_queue_close(q);

		memset(counts, 0, sizeof counts);
		int delivered = 0, recorded = 0;
		if (st.recovered > 0)
			scan_maildir(mail, NULL, counts, N);
		for (int i = 0; i < N; i++) {
			fail_msg_if(counts[i] > 1, "seed %u round %d: message %d delivered %d times, want once",
			            seed, round, i, counts[i]);
			delivered += counts[i];
		}
		assert_int_equal(delivered, st.recovered);
		FILE *f = fopen(rec, "r");
		assert_non_null(f);
		int idx;
		while (fscanf(f, "%d", &idx) == 1) {
			assert_true(idx >= 0 && idx < N);
			fail_msg_if(counts[idx] != 1, "seed %u round %d: acknowledged message %d "
			            "delivered %d times, want 1", seed, round, idx, counts[idx]);
			recorded++;
		}
		fclose(f);
		print_message("sigkill round %d after %u us: %d acknowledged, %d recovered\n",
		              round, delay_us, recorded, delivered);
		assert_true(delivered >= recorded);
	}
}

/* Leave n undelivered records in one segment of fx->spool; returns the
 * path of that segment. */
static void fill_undelivered(struct fx *fx, struct tmsg *v, int n, char *seg, size_t seglen)
{
	reset_counts();
	struct ctl_queue *q = queue_open(fx->blocked, CTL_DELIVER_MAILDIR, 600000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	assert_true(wait_done(n, 60000));
	assert_int_equal(atomic_load(&g_ok), n);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);

	char segdir[400];
	struct dirent *de;
	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	DIR *d = opendir(segdir);
	int found = 0;
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		if (l > 4 && strcmp(de->d_name + l - 4, ".seg") == 0) {
			snprintf(seg, seglen, "%s/%s", segdir, de->d_name);
			found++;
		}
	}
	closedir(d);
	assert_int_equal(found, 1);
}

/* Recover with a good Maildir; returns the number recovered and checks
 * that exactly messages [0, want) arrive, once each. */
static void recover_expect(struct fx *fx, int n, int want)
{
	int *counts = calloc((size_t)n, sizeof *counts);
	struct ctl_queue *q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	struct ctl_spool_stats st;

	ctl_spool_stats(sp, &st);
	assert_int_equal(st.recovered, want);
	wait_delivered(q, (uint64_t)want, 60000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	if (want > 0)
		scan_maildir(fx->mail, NULL, counts, n);
	for (int i = 0; i < n; i++)
		fail_msg_if(counts[i] != (i < want), "message %d: got %d deliveries, want %d",
		            i, counts[i], i < want);
	free(counts);
}

static void test_torn_tail_garbage(void **state)
{
	struct fx *fx = *state;
	enum { N = 40 };
	struct tmsg *v = tmsgs_new(N, 1);
	char seg[600];
	uint8_t junk[5000];

	fill_undelivered(fx, v, N, seg, sizeof seg);
	srand(7);
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)rand();
	/* A plausible header claiming a huge length, then noise. */
	ctl_put_le32(junk, CTL_REC_MAGIC);
	ctl_put_le32(junk + 4, 0);
	ctl_put_le64(junk + 8, UINT64_C(1) << 39);
	int fd = open(seg, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
	close(fd);
	recover_expect(fx, N, N);
	tmsgs_free(v, N);
}

static void test_torn_tail_truncated(void **state)
{
	struct fx *fx = *state;
	enum { N = 40 };
	struct tmsg *v = tmsgs_new(N, 1);
	char seg[600];
	struct stat st;

	fill_undelivered(fx, v, N, seg, sizeof seg);
	assert_int_equal(stat(seg, &st), 0);
	/* Cut into the last record: the other 39 survive. */
	assert_int_equal(truncate(seg, st.st_size - 7), 0);
	recover_expect(fx, N, N - 1);
	tmsgs_free(v, N);
}

static void test_corrupt_record_ends_scan(void **state)
{
	struct fx *fx = *state;
	enum { N = 40, K = 25 };
	struct tmsg *v = tmsgs_new(N, 1);
	char seg[600];

	fill_undelivered(fx, v, N, seg, sizeof seg);
	/* Find record K by walking the headers, flip a byte of its body. */
	int fd = open(seg, O_RDWR);
	uint64_t off = CTL_SEG_HDR_LEN;
	uint8_t h[CTL_REC_HDR_LEN], b;
	for (int i = 0; i < K; i++) {
		assert_int_equal(pread(fd, h, sizeof h, (off_t)off), (ssize_t)sizeof h);
		off += ctl_get_le64(h + 8);
	}
	assert_int_equal(pread(fd, &b, 1, (off_t)off + 60), 1);
	b ^= 0x10;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off + 60), 1);
	close(fd);
	recover_expect(fx, N, K);
	tmsgs_free(v, N);
}

/* Header-only and zero-length segments (a crash while creating one) are
 * removed; random bytes after a valid header are survived. */
static void test_garbage_segments(void **state)
{
	struct fx *fx = *state;
	char segdir[400], p[600];
	uint8_t h[CTL_SEG_HDR_LEN] = {0}, junk[3000];

	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	assert_int_equal(mkdir(fx->spool, 0700), 0);
	assert_int_equal(mkdir(segdir, 0700), 0);
	snprintf(p, sizeof p, "%s/0000000000000003.seg", segdir);
	close(open(p, O_WRONLY | O_CREAT, 0600));
	snprintf(p, sizeof p, "%s/0000000000000003.done", segdir);
	close(open(p, O_WRONLY | O_CREAT, 0600));
	snprintf(p, sizeof p, "%s/0000000000000009.done", segdir); /* orphan */
	close(open(p, O_WRONLY | O_CREAT, 0600));
	for (uint64_t id = 4; id < 8; id++) {
		memcpy(h, CTL_SEG_MAGIC, 8);
		ctl_put_le32(h + 8, CTL_SEG_VERSION);
		ctl_put_le32(h + 12, CTL_SEG_HDR_LEN);
		ctl_put_le64(h + 16, id);
		ctl_put_le32(h + 28, ctl_crc32c(0, h, 28));
		snprintf(p, sizeof p, "%s/%016llx.seg", segdir, (unsigned long long)id);
		int fd = open(p, O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, h, sizeof h), (ssize_t)sizeof h);
		srand((unsigned)id);
		size_t n = id == 4 ? 0 : (size_t)rand() % sizeof junk;
		for (size_t i = 0; i < n; i++)
			junk[i] = (uint8_t)rand();
		if (id == 6 && n >= 4)
			ctl_put_le32(junk, CTL_REC_MAGIC);
		assert_int_equal(write(fd, junk, n), (ssize_t)n);
		close(fd);
	}
	struct ctl_queue *q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.recovered, 0);
	/* Only the new current segment, numbered after the highest seen. */
	assert_int_equal(count_files(segdir, ".seg"), 1);
	assert_int_equal(count_files(segdir, ".done"), 0);
	snprintf(p, sizeof p, "%s/000000000000000a.seg", segdir);
	assert_int_equal(access(p, F_OK), 0);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	assert_int_equal(count_files(segdir, ".seg"), 0);
}

/* A full-size segment with a foreign header is not ours: refuse to start. */
static void test_bad_segment_header(void **state)
{
	struct fx *fx = *state;
	char segdir[400], p[600], junk[200];

	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	assert_int_equal(mkdir(fx->spool, 0700), 0);
	assert_int_equal(mkdir(segdir, 0700), 0);
	snprintf(p, sizeof p, "%s/0000000000000001.seg", segdir);
	memset(junk, 'x', sizeof junk);
	int fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
	close(fd);
	struct ctl_queue *q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	struct ctl_spool_conf sc = {.dir = fx->spool, .sync = true};
	errno = 0;
	struct ctl_spool *sp = ctl_spool_open(&sc, q);
	fail_msg_if(sp != NULL || errno != EINVAL, "open: got %p errno %d, want NULL EINVAL",
	            (void *)sp, errno);
	q = ctl_queue_close(q);
}

/* A second open of the same spool directory is refused. */
static void test_spool_locked(void **state)
{
	struct fx *fx = *state;
	struct ctl_queue *q1 = queue_open(NULL, CTL_DELIVER_DISCARD, 1000, 0);
	struct ctl_queue *q2 = queue_open(NULL, CTL_DELIVER_DISCARD, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q1, 0, 0);
	struct ctl_spool_conf sc = {.dir = fx->spool};

	errno = 0;
	assert_null(ctl_spool_open(&sc, q2));
	assert_int_equal(errno, EBUSY);
	sp = ctl_spool_close(sp);
	q1 = ctl_queue_close(q1);
	q2 = ctl_queue_close(q2);
}

/* The first attempts fail (Maildir below a regular file); once the path is
 * fixed the retry delivers. */
static void test_retry(void **state)
{
	struct fx *fx = *state;
	enum { N = 3 };
	struct tmsg *v = tmsgs_new(N, 1);
	int counts[N] = {0};
	struct ctl_queue_stats qs;

	reset_counts();
	struct ctl_queue *q = queue_open(fx->blocked, CTL_DELIVER_MAILDIR, 50, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	int64_t end = now_ms() + 30000;
	do {
		usleep(5000);
		ctl_queue_stats(q, &qs);
		assert_true(now_ms() < end);
	} while (qs.deferred < 2 * N);
	assert_int_equal(qs.delivered, 0);
	assert_int_equal(qs.queued, N);
	assert_int_equal(unlink(fx->blocker), 0);
	wait_delivered(q, N, 30000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	scan_maildir(fx->blocked, NULL, counts, N);
	assert_once(counts, N);
	tmsgs_free(v, N);
}

/* Older than max_age and still failing: dropped from the queue and marked,
 * so a restart does not bring it back. */
static void test_expiry(void **state)
{
	struct fx *fx = *state;
	enum { N = 3 };
	struct tmsg *v = tmsgs_new(N, 1);
	struct ctl_queue_stats qs;

	reset_counts();
	for (int i = 0; i < N; i++)
		v[i].m.env.arrival = (int64_t)time(NULL) - 3600;
	struct ctl_queue *q = queue_open(fx->blocked, CTL_DELIVER_MAILDIR, 50, 60000);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	assert_true(wait_done(N, 30000));
	int64_t end = now_ms() + 30000;
	do {
		usleep(5000);
		ctl_queue_stats(q, &qs);
		assert_true(now_ms() < end);
	} while (qs.queued > 0);
	assert_int_equal(qs.delivered, 0);
	assert_int_equal(qs.deferred, N);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	recover_expect(fx, N, 0);
	tmsgs_free(v, N);
}

/* Small segments: rotation happens, delivered segments disappear while
 * running, the rest at close. Recovery keeps counting ids upward. */
static void test_segment_removal(void **state)
{
	struct fx *fx = *state;
	enum { N = 600 };
	struct tmsg *v = tmsgs_new(N, 1);
	char segdir[400];
	struct ctl_spool_stats st;

	reset_counts();
	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	struct ctl_queue *q = queue_open(NULL, CTL_DELIVER_DISCARD, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 8192, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	assert_true(wait_done(N, 60000));
	assert_int_equal(atomic_load(&g_ok), N);
	wait_delivered(q, N, 60000);
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.messages, N);
	/* Sealed segments go once delivered; only the current one may stay. */
	int64_t end = now_ms() + 10000;
	while (count_files(segdir, ".seg") > 1 && now_ms() < end)
		usleep(2000);
	fail_msg_if(count_files(segdir, ".seg") > 1, "segments left: got %d, want <= 1",
	            count_files(segdir, ".seg"));
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	assert_int_equal(count_files(segdir, ".seg"), 0);
	assert_int_equal(count_files(segdir, ".done"), 0);
	tmsgs_free(v, N);
}

/* Segments kept between runs: partly delivered ones are resumed from the
 * done marks; messages spread over several segments. */
static void test_recovery_many_segments(void **state)
{
	struct fx *fx = *state;
	enum { N = 300 };
	struct tmsg *v = tmsgs_new(N, 1);
	char segdir[400];

	reset_counts();
	snprintf(segdir, sizeof segdir, "%s/seg", fx->spool);
	struct ctl_queue *q = queue_open(fx->blocked, CTL_DELIVER_MAILDIR, 600000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 4096, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	assert_true(wait_done(N, 60000));
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	int nseg = count_files(segdir, ".seg");
	fail_msg_if(nseg < 10, "segments: got %d, want >= 10", nseg);

	/* Mark the first half delivered by hand, as a previous run would. */
	int marked = 0;
	for (int id = 0; id < 1000 && marked < N / 2; id++) {
		char p[600], dp[600];
		snprintf(p, sizeof p, "%s/%016llx.seg", segdir, (unsigned long long)id);
		int fd = open(p, O_RDONLY);
		if (fd < 0)
			continue;
		snprintf(dp, sizeof dp, "%s/%016llx.done", segdir, (unsigned long long)id);
		int dfd = open(dp, O_WRONLY | O_CREAT | O_APPEND, 0600);
		struct stat st;
		fstat(fd, &st);
		uint64_t off = CTL_SEG_HDR_LEN;
		while (off < (uint64_t)st.st_size && marked < N / 2) {
			uint8_t h[CTL_REC_HDR_LEN], mk[CTL_MARK_LEN];
			assert_int_equal(pread(fd, h, sizeof h, (off_t)off), (ssize_t)sizeof h);
			ctl_put_le64(mk, off);
			memcpy(mk + 8, h + 20, 4);
			ctl_put_le32(mk + 12, CTL_MARK_MAGIC);
			assert_int_equal(write(dfd, mk, sizeof mk), (ssize_t)sizeof mk);
			off += ctl_get_le64(h + 8);
			marked++;
		}
		/* A torn mark at the end is ignored. */
		assert_int_equal(write(dfd, "\x01\x02\x03", 3), 3);
		close(dfd);
		close(fd);
	}
	assert_int_equal(marked, N / 2);

	int *counts = calloc(N, sizeof *counts);
	q = queue_open(fx->mail, CTL_DELIVER_MAILDIR, 1000, 0);
	sp = spool_open(fx->spool, q, 4096, 0);
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);
	assert_int_equal(st.recovered, N - N / 2);
	wait_delivered(q, N - N / 2, 60000);
	sp = ctl_spool_close(sp);
	q = ctl_queue_close(q);
	scan_maildir(fx->mail, NULL, counts, N);
	for (int i = 0; i < N; i++)
		fail_msg_if(counts[i] != (i >= N / 2), "message %d: got %d deliveries, want %d",
		            i, counts[i], i >= N / 2);
	assert_int_equal(count_files(segdir, ".seg"), 0);
	free(counts);
	tmsgs_free(v, N);
}

/* Malformed messages get done(-EINVAL) without hurting their batch. */
static void test_bad_message_refused(void **state)
{
	struct fx *fx = *state;
	enum { N = 5 };
	struct tmsg *v = tmsgs_new(N, 1);

	reset_counts();
	memset(v[2].m.env.qid, 'x', sizeof v[2].m.env.qid); /* not terminated */
	struct ctl_queue *q = queue_open(NULL, CTL_DELIVER_DISCARD, 1000, 0);
	struct ctl_spool *sp = spool_open(fx->spool, q, 0, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(ctl_spool_submit(sp, &v[i].m), 0);
	sp = ctl_spool_close(sp); /* commits everything submitted */
	assert_int_equal(atomic_load(&g_ok), N - 1);
	assert_int_equal(atomic_load(&g_err), 1);
	assert_int_equal(atomic_load(&v[2].state), 2);
	wait_delivered(q, N - 1, 30000);
	q = ctl_queue_close(q);
	tmsgs_free(v, N);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_envelope_roundtrip),
		cmocka_unit_test_setup_teardown(test_group_commit_and_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit_closed_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_record_ends_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_segment_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spool_locked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recovery_many_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_message_refused, setup, teardown),
	};

	/* Delivery lines for thousands of messages are noise here. */
	ctl_log_open(NULL, CTL_LOG_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
