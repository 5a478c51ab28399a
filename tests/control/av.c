/*
 * tests/control/av.c - control/av.c: the libclamav loader and scan pool.
 *
 * Every test writes its own signature database into a temporary directory
 * (under $TMPDIR or /tmp): an .hdb (MD5 of a generated file), an .ndb (a hex
 * body signature), an .ldb (a logical signature: two sub-signatures, both
 * needed) and, when clamav-testfiles is installed, an .hdb for its clam.exe
 * (the Debian database does not carry the official test signature), which
 * also finds clam.exe inside clam.zip, scanned from memory.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "control/av.h"

#define FAILF(...) do { print_error(__VA_ARGS__); print_error("\n"); fail(); } while (0)

#define TESTFILES "/usr/share/clamav-testfiles"
#define HASH_NAME "Sluice.Test.Hash"
#define BODY_NAME "Sluice.Test.Body"
#define LOGICAL_NAME "Sluice.Test.Logical"
#define CLAMEXE_NAME "Sluice.Test.ClamExe"
#define BODY_MARK "sluice-ndb-marker-7f3a"
#define LOGIC_A "sluice-ldb-part-one"
#define LOGIC_B "sluice-ldb-part-two"

static char tmpdir[PATH_MAX];

static int setup_dir(void **state)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/sluice-av-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t len, const char *a, const char *b)
{
	if (snprintf(buf, len, "%s/%s%s%s", tmpdir, a, b ? "/" : "", b ? b : "") >= (int)len)
		fail_msg("path too long");
}

static void write_bytes(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *name, char *out, size_t len)
{
	path_of(out, len, name, NULL);
	if (mkdir(out, 0700) != 0 && errno != EEXIST)
		FAILF("mkdir %s: %s", out, strerror(errno));
}

static void hex(char *dst, const void *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = d[b[i] >> 4];
		dst[2 * i + 1] = d[b[i] & 15];
	}
	dst[2 * n] = '\0';
}

static void md5_hex(const void *p, size_t n, char out[33])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_md5(), NULL), 1);
	assert_int_equal(mdlen, 16);
	hex(out, md, 16);
}

static uint8_t *read_all(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		size_t k = fread(buf + len, 1, cap - len, f);
		if (k == 0)
			break;
		len += k;
	}
	fclose(f);
	*n = len;
	return buf;
}

/* Deterministic bytes that look like nothing in particular. */
static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t)x;
	}
}

/* The "hash" file: its MD5 and size make the .hdb signature. */
static uint8_t hash_file[3000];

static bool have_testfiles(void)
{
	return access(TESTFILES "/clam.exe", R_OK) == 0 && access(TESTFILES "/clam.zip", R_OK) == 0;
}

/* A database directory named name with the .hdb, .ndb and .ldb (and
 * clam.exe's .hdb when the test files are there). */
static void make_db(const char *name, char *dir, size_t len)
{
	char p[PATH_MAX], line[512], md5[33], h1[128], h2[128];
	make_dir(name, dir, len);
	fill(hash_file, sizeof(hash_file), 7);
	md5_hex(hash_file, sizeof(hash_file), md5);
	snprintf(line, sizeof(line), "%s:%zu:%s\n", md5, sizeof(hash_file), HASH_NAME);
	path_of(p, sizeof(p), name, "test.hdb");
	write_bytes(p, line, strlen(line));
	hex(h1, BODY_MARK, strlen(BODY_MARK));
	snprintf(line, sizeof(line), "%s:0:*:%s\n", BODY_NAME, h1);
	path_of(p, sizeof(p), name, "test.ndb");
	write_bytes(p, line, strlen(line));
	hex(h1, LOGIC_A, strlen(LOGIC_A));
	hex(h2, LOGIC_B, strlen(LOGIC_B));
	snprintf(line, sizeof(line), "%s;Engine:51-255,Target:0;0&1;%s;%s\n", LOGICAL_NAME, h1, h2);
	path_of(p, sizeof(p), name, "test.ldb");
	write_bytes(p, line, strlen(line));
	if (have_testfiles()) {
		size_t n;
		uint8_t *exe = read_all(TESTFILES "/clam.exe", &n);
		assert_non_null(exe);
		md5_hex(exe, n, md5);
		free(exe);
		snprintf(line, sizeof(line), "%s:%zu:%s\n", md5, n, CLAMEXE_NAME);
		path_of(p, sizeof(p), name, "clamexe.hdb");
		write_bytes(p, line, strlen(line));
	}
}

static struct ctl_av *start(const char *db, unsigned threads, uint64_t timeout_ms, uint32_t qmax)
{
	struct ctl_av_conf conf = {
		.database = db,
		.threads = threads,
		.timeout_ms = timeout_ms,
		.queue_max = qmax,
		.max_scan_bytes = 64u << 20,
	};
	struct ctl_av *av = ctl_av_start(&conf);
	if (av == NULL)
		FAILF("ctl_av_start(%s): got NULL (%s), want a pool", db, strerror(errno));
	return av;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Wait until `attempts` loads have finished; returns the stats. */
static struct ctl_av_stats wait_loads(struct ctl_av *av, uint64_t attempts)
{
	struct ctl_av_stats st;
	for (int i = 0; i < 6000; i++) {
		ctl_av_stats(av, &st);
		if (st.load_attempts >= attempts)
			return st;
		sleep_ms(10);
	}
	FAILF("got %llu loads finished after 60 s, want %llu",
	      (unsigned long long)st.load_attempts, (unsigned long long)attempts);
	return st;
}

/* ---- synchronous scans -------------------------------------------------- */

struct waiter {
	struct ctl_av_req req;
	sem_t done;
	_Atomic int calls;
	sem_t *hold;                   /* if set: done() waits on it (blocks the scanner) */
	sem_t *entered;                /* if set: posted when done() starts */
};

static void on_done(struct ctl_av_req *r)
{
	struct waiter *w = r->ctx;
	atomic_fetch_add(&w->calls, 1);
	if (w->entered)
		sem_post(w->entered);
	if (w->hold)
		while (sem_wait(w->hold) != 0 && errno == EINTR)
			;
	sem_post(&w->done);
}

static void waiter_init(struct waiter *w, const struct iovec *span, unsigned nspan,
                        const struct ctl_av_file *file, unsigned nfile)
{
	memset(w, 0, sizeof(*w));
	sem_init(&w->done, 0, 0);
	w->req.span = span;
	w->req.nspan = nspan;
	w->req.file = file;
	w->req.nfile = nfile;
	w->req.done = on_done;
	w->req.ctx = w;
}

static void waiter_wait(struct waiter *w)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 60;
	int rc;
	while ((rc = sem_timedwait(&w->done, &ts)) != 0 && errno == EINTR)
		;
	if (rc != 0)
		FAILF("got no done() within 60 s, want one");
	assert_int_equal(atomic_load(&w->calls), 1);
	sem_destroy(&w->done);
}

/* Scan one buffer as one file; returns the verdict, the name in name. */
static enum ctl_av_verdict scan_buf(struct ctl_av *av, const void *p, size_t n, char *name, size_t cap)
{
	struct iovec span = { (void *)p, n };
	struct ctl_av_file f = { 0, n };
	struct waiter w;
	waiter_init(&w, &span, 1, &f, 1);
	int rc = ctl_av_submit(av, &w.req);
	if (rc != 0)
		FAILF("ctl_av_submit: got %d (%s), want 0", rc, strerror(-rc));
	waiter_wait(&w);
	if (name)
		snprintf(name, cap, "%s", w.req.name);
	return w.req.verdict;
}

static void want_virus(struct ctl_av *av, const void *p, size_t n, const char *sig, const char *what)
{
	char name[CTL_AV_NAME_MAX];
	enum ctl_av_verdict v = scan_buf(av, p, n, name, sizeof(name));
	if (v != CTL_AV_VIRUS || strncmp(name, sig, strlen(sig)) != 0)
		FAILF("%s: got %s '%s', want virus %s", what, ctl_av_verdict_name(v), name, sig);
}

static void want_clean(struct ctl_av *av, const void *p, size_t n, const char *what)
{
	char name[CTL_AV_NAME_MAX];
	enum ctl_av_verdict v = scan_buf(av, p, n, name, sizeof(name));
	if (v != CTL_AV_CLEAN)
		FAILF("%s: got %s '%s', want clean", what, ctl_av_verdict_name(v), name);
}

/* ---- tests ------------------------------------------------------------------ */

/* No engine: an empty directory, or a database without a signature, never
 * becomes an engine; submissions are refused with -EAGAIN (a 451). */
static void test_not_loaded(void **state)
{
	char dir[PATH_MAX], p[PATH_MAX];
	make_dir("empty", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 1, 30000, 16);
	struct ctl_av_stats st = wait_loads(av, 1);
	assert_false(st.loaded);
	assert_int_equal(st.load_failures, 1);
	if (st.last_error[0] == '\0')
		FAILF("last_error: got '', want the reason");
	uint8_t b[16] = { 0 };
	struct iovec span = { b, sizeof(b) };
	struct ctl_av_file f = { 0, sizeof(b) };
	struct waiter w;
	waiter_init(&w, &span, 1, &f, 1);
	int rc = ctl_av_submit(av, &w.req);
	if (rc != -EAGAIN)
		FAILF("submit without an engine: got %d, want -EAGAIN", rc);
	sem_destroy(&w.done);
	/* Asking again changes nothing while the directory stays empty. */
	ctl_av_reload(av);
	st = wait_loads(av, 2);
	assert_false(st.loaded);
	assert_int_equal(st.load_failures, 2);
	av = ctl_av_stop(av);
	assert_null(av);

	make_dir("nosigs", dir, sizeof(dir));
	path_of(p, sizeof(p), "nosigs", "empty.hdb");
	write_bytes(p, "", 0);
	av = start(dir, 1, 30000, 16);
	st = wait_loads(av, 1);
	if (st.loaded)
		FAILF("database with no signature: got an engine (%u sigs), want none", st.sigs);
	av = ctl_av_stop(av);

	/* A bad configuration is refused at once. */
	struct ctl_av_conf bad = { .database = dir, .threads = 0, .timeout_ms = 1, .queue_max = 1 };
	assert_null(ctl_av_start(&bad));
	assert_int_equal(errno, EINVAL);
}

static void test_scan(void **state)
{
	char dir[PATH_MAX];
	make_db("db", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 2, 30000, 64);
	struct ctl_av_stats st = wait_loads(av, 1);
	if (!st.loaded)
		FAILF("load: got no engine (%s), want one", st.last_error);
	assert_int_equal(st.generation, 1);
	if (st.sigs < 3)
		FAILF("sigs: got %u, want at least 3", st.sigs);

	uint8_t clean[5000];
	fill(clean, sizeof(clean), 99);
	want_clean(av, clean, sizeof(clean), "random bytes");
	want_clean(av, "hello world\r\n", 13, "text");

	/* .hdb: exact bytes only */
	want_virus(av, hash_file, sizeof(hash_file), HASH_NAME, "hash file");
	want_clean(av, hash_file, sizeof(hash_file) - 1, "hash file minus one byte");

	/* .ndb: anywhere in the body */
	char body[4096];
	memset(body, 'a', sizeof(body));
	memcpy(body + 2000, BODY_MARK, strlen(BODY_MARK));
	want_virus(av, body, sizeof(body), BODY_NAME, "body marker");

	/* .ldb: both parts or nothing */
	char both[200], one[200];
	snprintf(both, sizeof(both), "xx %s yy %s zz\n", LOGIC_B, LOGIC_A);
	snprintf(one, sizeof(one), "xx %s yy\n", LOGIC_A);
	want_virus(av, both, strlen(both), LOGICAL_NAME, "logical, both parts");
	want_clean(av, one, strlen(one), "logical, one part");

	if (have_testfiles()) {
		size_t n;
		uint8_t *exe = read_all(TESTFILES "/clam.exe", &n);
		want_virus(av, exe, n, CLAMEXE_NAME, "clam.exe");
		free(exe);
		uint8_t *zip = read_all(TESTFILES "/clam.zip", &n);
		want_virus(av, zip, n, CLAMEXE_NAME, "clam.zip (archive in memory)");
		free(zip);
	} else {
		print_message("note: %s not installed, clam.exe cases skipped\n", TESTFILES);
	}

	/* several files: stops at the virus, after the clean one */
	struct iovec span[2] = { { clean, sizeof(clean) }, { body, sizeof(body) } };
	struct ctl_av_file f[3] = { { 0, sizeof(clean) }, { sizeof(clean), sizeof(body) },
	                            { 0, 10 } };
	struct waiter w;
	waiter_init(&w, span, 2, f, 3);
	assert_int_equal(ctl_av_submit(av, &w.req), 0);
	waiter_wait(&w);
	if (w.req.verdict != CTL_AV_VIRUS || w.req.files_scanned != 2)
		FAILF("two files: got %s after %u files, want virus after 2",
		      ctl_av_verdict_name(w.req.verdict), w.req.files_scanned);

	/* nothing to scan is clean; empty files are skipped */
	struct ctl_av_file empty = { 0, 0 };
	waiter_init(&w, span, 2, &empty, 1);
	assert_int_equal(ctl_av_submit(av, &w.req), 0);
	waiter_wait(&w);
	assert_int_equal(w.req.verdict, CTL_AV_CLEAN);
	assert_int_equal(w.req.files_scanned, 0);

	/* a range beyond the bytes is an error, not a clean */
	struct ctl_av_file past = { sizeof(clean), sizeof(body) + 1 };
	waiter_init(&w, span, 2, &past, 1);
	assert_int_equal(ctl_av_submit(av, &w.req), 0);
	waiter_wait(&w);
	if (w.req.verdict != CTL_AV_ERROR)
		FAILF("range past the end: got %s, want error", ctl_av_verdict_name(w.req.verdict));

	ctl_av_stats(av, &st);
	assert_int_equal(st.queued, 0);
	if (st.viruses < 5)
		FAILF("viruses: got %llu, want at least 5", (unsigned long long)st.viruses);
	av = ctl_av_stop(av);
}

/* Files cut across spans, at odd places, with other bytes around them in
 * the same spans: the hash signature needs the exact bytes joined. */
static void test_spans(void **state)
{
	char dir[PATH_MAX];
	make_db("db", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 1, 30000, 64);
	if (!wait_loads(av, 1).loaded)
		FAILF("load: got no engine, want one");

	/* stream: 100 junk + hash file (3000) + 50 junk, cut in 4 spans */
	static uint8_t stream[100 + sizeof(hash_file) + 50];
	fill(stream, sizeof(stream), 3);
	memcpy(stream + 100, hash_file, sizeof(hash_file));
	static const size_t cuts[][3] = { { 101, 1500, 3099 }, { 100, 3100, 3120 }, { 1, 2, 3149 },
	                                  { 2000, 2001, 2002 } };
	for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
		struct iovec span[4];
		size_t at = 0;
		for (int i = 0; i < 4; i++) {
			size_t end = i < 3 ? cuts[k][i] : sizeof(stream);
			span[i].iov_base = stream + at;
			span[i].iov_len = end - at;
			at = end;
		}
		struct ctl_av_file f[2] = { { 0, 100 }, { 100, sizeof(hash_file) } };
		struct waiter w;
		waiter_init(&w, span, 4, f, 2);
		assert_int_equal(ctl_av_submit(av, &w.req), 0);
		waiter_wait(&w);
		if (w.req.verdict != CTL_AV_VIRUS || strncmp(w.req.name, HASH_NAME, strlen(HASH_NAME)))
			FAILF("cuts %zu: got %s '%s', want virus %s", k, ctl_av_verdict_name(w.req.verdict),
			      w.req.name, HASH_NAME);
		assert_int_equal(w.req.files_scanned, 2);
		assert_int_equal(w.req.bytes_scanned, 100 + sizeof(hash_file));
	}
	/* inside one span, not at its start: scanned in place */
	struct iovec one = { stream, sizeof(stream) };
	struct ctl_av_file f = { 100, sizeof(hash_file) };
	struct waiter w;
	waiter_init(&w, &one, 1, &f, 1);
	assert_int_equal(ctl_av_submit(av, &w.req), 0);
	waiter_wait(&w);
	assert_int_equal(w.req.verdict, CTL_AV_VIRUS);
	/* one byte off: no longer the hashed file */
	f.off = 99;
	waiter_init(&w, &one, 1, &f, 1);
	assert_int_equal(ctl_av_submit(av, &w.req), 0);
	waiter_wait(&w);
	assert_int_equal(w.req.verdict, CTL_AV_CLEAN);
	av = ctl_av_stop(av);
}

/* Reloads swap engines while scans run: no scan fails, none is lost, and
 * the new signatures count from the swap on. */
struct hammer {
	struct ctl_av *av;
	_Atomic bool stop;
	_Atomic unsigned answered, bad;
	char bad_what[160];
};

static void *hammer_main(void *arg)
{
	struct hammer *h = arg;
	while (!atomic_load(&h->stop)) {
		struct iovec span = { hash_file, sizeof(hash_file) };
		struct ctl_av_file f = { 0, sizeof(hash_file) };
		struct waiter w;
		waiter_init(&w, &span, 1, &f, 1);
		int rc = ctl_av_submit(h->av, &w.req);
		if (rc != 0) {
			sem_destroy(&w.done);
			snprintf(h->bad_what, sizeof(h->bad_what), "submit %d", rc);
			atomic_fetch_add(&h->bad, 1);
			continue;
		}
		while (sem_wait(&w.done) != 0 && errno == EINTR)
			;
		sem_destroy(&w.done);
		atomic_fetch_add(&h->answered, 1);
		if (w.req.verdict != CTL_AV_VIRUS) {
			snprintf(h->bad_what, sizeof(h->bad_what), "%s '%s'",
			         ctl_av_verdict_name(w.req.verdict), w.req.name);
			atomic_fetch_add(&h->bad, 1);
		}
	}
	return NULL;
}

static void test_reload(void **state)
{
	char dir[PATH_MAX], p[PATH_MAX], line[256], h1[128];
	make_db("reload", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 2, 30000, 256);
	struct ctl_av_stats st = wait_loads(av, 1);
	assert_true(st.loaded);
	const char *later = "sluice-added-by-reload";
	want_clean(av, later, strlen(later), "before the reload");

	struct hammer h = { .av = av };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h), 0);
	for (unsigned gen = 2; gen <= 4; gen++) {
		if (gen == 3) {
			hex(h1, later, strlen(later));
			snprintf(line, sizeof(line), "Sluice.Test.Reloaded:0:*:%s\n", h1);
			path_of(p, sizeof(p), "reload", "later.ndb");
			write_bytes(p, line, strlen(line));
		}
		ctl_av_reload(av);
		st = wait_loads(av, gen);
		if (!st.loaded || st.generation != gen)
			FAILF("reload %u: got generation %llu (%s), want %u", gen,
			      (unsigned long long)st.generation, st.last_error, gen);
		sleep_ms(30);
	}
	atomic_store(&h.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	if (atomic_load(&h.bad) != 0)
		FAILF("scans during reloads: got %u bad of %u (last: %s), want none",
		      atomic_load(&h.bad), atomic_load(&h.answered), h.bad_what);
	if (atomic_load(&h.answered) < 10)
		FAILF("scans during reloads: got %u, want many", atomic_load(&h.answered));
	want_virus(av, later, strlen(later), "Sluice.Test.Reloaded", "after the reload");

	/* A reload that fails keeps the engine in service. */
	path_of(p, sizeof(p), "reload", "broken.ndb");
	write_bytes(p, "this is not a signature\n", 24);
	ctl_av_reload(av);
	st = wait_loads(av, 5);
	assert_true(st.loaded);
	assert_int_equal(st.generation, 4);
	assert_int_equal(st.load_failures, 1);
	want_virus(av, later, strlen(later), "Sluice.Test.Reloaded", "after a failed reload");
	av = ctl_av_stop(av);
}

/* queue_max bounds the requests waiting or in a scan: beyond, -ENOBUFS. */
static void test_queue_full(void **state)
{
	char dir[PATH_MAX];
	make_db("db", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 1, 30000, 2);
	assert_true(wait_loads(av, 1).loaded);
	uint8_t b[64];
	fill(b, sizeof(b), 5);
	struct iovec span = { b, sizeof(b) };
	struct ctl_av_file f = { 0, sizeof(b) };
	sem_t hold, entered;
	sem_init(&hold, 0, 0);
	sem_init(&entered, 0, 0);

	/* The only scanner is held inside the first request's done(). */
	struct waiter w[4];
	waiter_init(&w[0], &span, 1, &f, 1);
	w[0].hold = &hold;
	w[0].entered = &entered;
	assert_int_equal(ctl_av_submit(av, &w[0].req), 0);
	while (sem_wait(&entered) != 0 && errno == EINTR)
		;
	for (int i = 1; i < 4; i++)
		waiter_init(&w[i], &span, 1, &f, 1);
	assert_int_equal(ctl_av_submit(av, &w[1].req), 0);
	assert_int_equal(ctl_av_submit(av, &w[2].req), 0);
	int rc = ctl_av_submit(av, &w[3].req);
	if (rc != -ENOBUFS)
		FAILF("third queued request with queue_max 2: got %d, want -ENOBUFS", rc);
	struct ctl_av_stats st;
	ctl_av_stats(av, &st);
	assert_int_equal(st.queued, 2);
	sem_post(&hold);
	for (int i = 0; i < 3; i++) {
		waiter_wait(&w[i]);
		assert_int_equal(w[i].req.verdict, CTL_AV_CLEAN);
	}
	sem_destroy(&w[3].done);
	/* room again */
	want_clean(av, b, sizeof(b), "after the queue drained");
	ctl_av_stats(av, &st);
	assert_int_equal(st.queued, 0);
	if (st.tempfails < 1)
		FAILF("tempfails: got %llu, want >= 1", (unsigned long long)st.tempfails);
	sem_destroy(&hold);
	sem_destroy(&entered);
	av = ctl_av_stop(av);
}

/* The deadline: a request that waited past it in the queue, and a scan
 * that took longer than it, both come back TIMEOUT (never clean). */
static void test_timeout(void **state)
{
	char dir[PATH_MAX];
	make_db("db", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 1, 50, 16);
	assert_true(wait_loads(av, 1).loaded);
	uint8_t b[64];
	fill(b, sizeof(b), 6);
	struct iovec span = { b, sizeof(b) };
	struct ctl_av_file f = { 0, sizeof(b) };
	sem_t hold, entered;
	sem_init(&hold, 0, 0);
	sem_init(&entered, 0, 0);
	struct waiter w0, w1;
	waiter_init(&w0, &span, 1, &f, 1);
	w0.hold = &hold;
	w0.entered = &entered;
	assert_int_equal(ctl_av_submit(av, &w0.req), 0);
	while (sem_wait(&entered) != 0 && errno == EINTR)
		;
	waiter_init(&w1, &span, 1, &f, 1);
	assert_int_equal(ctl_av_submit(av, &w1.req), 0);
	sleep_ms(120);
	sem_post(&hold);
	waiter_wait(&w0);
	assert_int_equal(w0.req.verdict, CTL_AV_CLEAN);
	waiter_wait(&w1);
	if (w1.req.verdict != CTL_AV_TIMEOUT)
		FAILF("request held in the queue past its deadline: got %s, want timeout",
		      ctl_av_verdict_name(w1.req.verdict));
	if (w1.req.scan_ms < 50)
		FAILF("scan_ms: got %.1f, want >= 50", w1.req.scan_ms);
	sem_destroy(&hold);
	sem_destroy(&entered);
	av = ctl_av_stop(av);

	/* A scan longer than the deadline (1 ms for 48 MB). */
	av = start(dir, 1, 1, 16);
	assert_true(wait_loads(av, 1).loaded);
	size_t n = 48u << 20;
	uint8_t *big = malloc(n);
	assert_non_null(big);
	fill(big, n, 11);
	char name[CTL_AV_NAME_MAX];
	enum ctl_av_verdict v = scan_buf(av, big, n, name, sizeof(name));
	if (v != CTL_AV_TIMEOUT)
		FAILF("48 MB with a 1 ms deadline: got %s '%s', want timeout", ctl_av_verdict_name(v), name);
	free(big);
	av = ctl_av_stop(av);
}

/* Stop lets the running scan finish and answers everything queued. */
struct stopper {
	struct ctl_av *av;
};

static void *stop_main(void *arg)
{
	struct stopper *s = arg;
	s->av = ctl_av_stop(s->av);
	return NULL;
}

static void test_stop(void **state)
{
	char dir[PATH_MAX];
	make_db("db", dir, sizeof(dir));
	struct ctl_av *av = start(dir, 1, 30000, 16);
	assert_true(wait_loads(av, 1).loaded);
	uint8_t b[64];
	fill(b, sizeof(b), 8);
	struct iovec span = { b, sizeof(b) };
	struct ctl_av_file f = { 0, sizeof(b) };
	sem_t hold, entered;
	sem_init(&hold, 0, 0);
	sem_init(&entered, 0, 0);
	struct waiter w[4];
	waiter_init(&w[0], &span, 1, &f, 1);
	w[0].hold = &hold;
	w[0].entered = &entered;
	assert_int_equal(ctl_av_submit(av, &w[0].req), 0);
	while (sem_wait(&entered) != 0 && errno == EINTR)
		;
	for (int i = 1; i < 4; i++) {
		waiter_init(&w[i], &span, 1, &f, 1);
		assert_int_equal(ctl_av_submit(av, &w[i].req), 0);
	}
	struct stopper s = { av };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, stop_main, &s), 0);
	sleep_ms(50);
	sem_post(&hold);
	pthread_join(th, NULL);
	assert_null(s.av);
	for (int i = 0; i < 4; i++) {
		waiter_wait(&w[i]);
		if (w[i].req.verdict != CTL_AV_CLEAN && w[i].req.verdict != CTL_AV_ERROR)
			FAILF("request %d at stop: got %s, want clean or error", i,
			      ctl_av_verdict_name(w[i].req.verdict));
	}
	sem_destroy(&hold);
	sem_destroy(&entered);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_not_loaded),
		cmocka_unit_test(test_scan),
		cmocka_unit_test(test_spans),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_queue_full),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_stop),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
