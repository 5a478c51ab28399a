/*
 * tests/control/maildir.c - Maildir path templates and delivery.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "control/maildir.h"

#define fail_msg_if(cond, ...) do { if (cond) fail_msg(__VA_ARGS__); } while (0)

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st; (void)flag; (void)f;
	return remove(p);
}

static int setup(void **state)
{
	char *dir = malloc(256);
	const char *t = getenv("TMPDIR");

	snprintf(dir, 256, "%s/sluice-maildir-XXXXXX", t != NULL && t[0] ? t : "/tmp");
	if (mkdtemp(dir) == NULL)
		return -1;
	*state = dir;
	return 0;
}

static int teardown(void **state)
{
	nftw(*state, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(*state);
	return 0;
}

static void expand_is(const char *tmpl, const char *rcpt, const char *want)
{
	char out[256];
	int rc = ctl_maildir_expand(tmpl, rcpt, out, sizeof out);

	fail_msg_if(rc != 0, "expand(%s, %s): got %d, want 0", tmpl, rcpt, rc);
	fail_msg_if(strcmp(out, want) != 0, "expand(%s, %s): got \"%s\", want \"%s\"",
	            tmpl, rcpt, out, want);
}

static void test_expand(void **state)
{
	char out[16];

	(void)state;
	expand_is("/var/mail", "a@b", "/var/mail");
	expand_is("/m/%d/%u", "Alice@Example.COM", "/m/example.com/Alice");
	expand_is("/m/%u%%x", "bob@x", "/m/bob%x");
	/* Unsafe values cannot leave their directory. */
	expand_is("/m/%d/%u", "../etc@x", "/m/x/___etc");
	expand_is("/m/%u", "a/b@x", "/m/a_b");
	expand_is("/m/%u", ".hidden@x", "/m/_hidden");
	expand_is("/m/%u", "a..b@x", "/m/a._b");
	expand_is("/m/%d", "a@..", "/m/__");
	expand_is("/m/%d", "a@.Example.", "/m/_example.");
	expand_is("/m/%u", "@x", "/m/_");
	expand_is("/m/%d", "nodomain", "/m/_");
	expand_is("/m/%u", "a\r\nb@x", "/m/a__b");
	expand_is("/m/%u", "\"q@q\"@x", "/m/\"q@q\"");
	/* UTF-8 local parts pass unchanged; only ASCII is lowercased. */
	expand_is("/m/%d/%u", "J\xc3\xb6rg@B\xc3\x9c" "CHER.example", "/m/b\xc3\x9c" "cher.example/J\xc3\xb6rg");

	assert_int_equal(ctl_maildir_expand("/m/%x", "a@b", out, sizeof out), -EINVAL);
	assert_int_equal(ctl_maildir_expand("/m/%", "a@b", out, sizeof out), -EINVAL);
	assert_int_equal(ctl_maildir_expand("/a/very/long/path/%u", "a@b", out, sizeof out),
	                 -ENAMETOOLONG);
	assert_int_equal(ctl_maildir_expand("/m/%u", "abcdefghijklmnopq@b", out, sizeof out),
	                 -ENAMETOOLONG);
	assert_true(ctl_maildir_templated("/m/%u"));
	assert_true(ctl_maildir_templated("/m/%d"));
	assert_false(ctl_maildir_templated("/m/%%u"));
	assert_false(ctl_maildir_templated("/m/plain"));
}

static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	char *b;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	b = malloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, b, (size_t)st.st_size), st.st_size);
	b[st.st_size] = '\0';
	close(fd);
	*len = (size_t)st.st_size;
	return b;
}

static int count_entries(const char *dir)
{
	struct dirent *de;
	int n = 0;
	DIR *d = opendir(dir);

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_deliver(void **state)
{
	const char *base = *state;
	char md[512], p[1200], name[512];
	const char body[] = "Subject: hi\r\n\r\nbody \xe2\x82\xac\r\n";
	struct iovec iov[2] = {{(void *)body, 10}, {(void *)(body + 10), sizeof body - 11}};
	const char *hdr = "Return-Path: <a@b>\r\nDelivered-To: c@d\r\n";
	size_t len;

	/* Missing parents, tmp/ new/ cur/ are created. */
	snprintf(md, sizeof md, "%s/deep/er/Maildir", base);
	assert_int_equal(ctl_maildir_deliver(md, hdr, iov, 2, true, name, sizeof name), 0);
	const char *sub[] = {"tmp", "new", "cur"};
	for (int i = 0; i < 3; i++) {
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", md, sub[i]);
		fail_msg_if(stat(p, &st) != 0 || !S_ISDIR(st.st_mode), "%s: want a directory", p);
	}
	snprintf(p, sizeof p, "%s/new/%s", md, name);
	char *got = slurp(p, &len);
	char want[256];
	snprintf(want, sizeof want, "%s%s", hdr, body);
	fail_msg_if(len != strlen(want) || memcmp(got, want, len) != 0,
	            "content: got \"%s\", want \"%s\"", got, want);
	free(got);
	/* <sec>.M<usec>P<pid>Q<n>.<host> */
	long long sec;
	long usec, pid;
	unsigned long q;
	char host[256];
	assert_int_equal(sscanf(name, "%lld.M%ldP%ldQ%lu.%255s", &sec, &usec, &pid, &q, host), 5);
	assert_int_equal(pid, (long)getpid());
	assert_null(strchr(host, '/'));
	assert_null(strchr(host, ':'));
	snprintf(p, sizeof p, "%s/tmp", md);
	assert_int_equal(count_entries(p), 0);

	/* Many deliveries: unique names; many iovecs (more than IOV_MAX). */
	enum { K = 200, V = IOV_MAX + 500 };
	static struct iovec many[V];
	static char bytes[V];
	for (int i = 0; i < V; i++) {
		bytes[i] = (char)('a' + i % 26);
		many[i] = (struct iovec){&bytes[i], 1};
	}
	for (int i = 0; i < K; i++)
		assert_int_equal(ctl_maildir_deliver(md, NULL, many, i == 0 ? V : 1, false, NULL, 0), 0);
	snprintf(p, sizeof p, "%s/new", md);
	assert_int_equal(count_entries(p), K + 1);

	/* The one with V iovecs holds all bytes in order. */
	DIR *d = opendir(p);
	struct dirent *de;
	int found = 0;
	while ((de = readdir(d)) != NULL) {
		char fp[2048];
		if (de->d_name[0] == '.')
			continue;
		snprintf(fp, sizeof fp, "%s/%s", p, de->d_name);
		char *b = slurp(fp, &len);
		if (len == V) {
			assert_memory_equal(b, bytes, V);
			found++;
		}
		free(b);
	}
	closedir(d);
	assert_int_equal(found, 1);
}

static void test_deliver_fails_cleanly(void **state)
{
	const char *base = *state;
	char md[512], file[512];
	struct iovec iov = {(void *)"x\r\n", 3};

	snprintf(file, sizeof file, "%s/plainfile", base);
	int fd = open(file, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(md, sizeof md, "%s/plainfile/Maildir", base);
	assert_int_equal(ctl_maildir_deliver(md, NULL, &iov, 1, true, NULL, 0), -ENOTDIR);

	/* The folder exists but new/ is broken (a file): the rename fails and
	 * nothing stays in tmp/. */
	snprintf(md, sizeof md, "%s/broken", base);
	assert_int_equal(ctl_maildir_deliver(md, NULL, &iov, 1, false, NULL, 0), 0);
	char p[600], q[600];
	snprintf(p, sizeof p, "%s/new", md);
	snprintf(q, sizeof q, "%s/new.moved", md);
	assert_int_equal(rename(p, q), 0);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	int rc = ctl_maildir_deliver(md, NULL, &iov, 1, true, NULL, 0);
	fail_msg_if(rc != -ENOTDIR, "deliver into broken new/: got %d, want %d", rc, -ENOTDIR);
	snprintf(p, sizeof p, "%s/tmp", md);
	assert_int_equal(count_entries(p), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_expand),
		cmocka_unit_test_setup_teardown(test_deliver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deliver_fails_cleanly, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
