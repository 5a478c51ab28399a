/*
 * tests/control/config.c - control/config.c: loading, defaults, errors with
 * their exact "FILE:LINE: reason", unit parsers, --check file checks.
 *
 * Every configuration is written to its own temporary file (under $TMPDIR or
 * /tmp). etc/sluice.conf is found through $SLUICE_SRCDIR if set, else
 * relative to this source file (__FILE__) or to the test executable (a
 * build directory directly inside the source tree); no arguments needed.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "control/config.h"

#define FAILF(...) do { print_error(__VA_ARGS__); print_error("\n"); fail(); } while (0)

static char tmpdir[PATH_MAX];

static int setup_dir(void **state)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/sluice-config-XXXXXX", t && *t ? t : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Write text to tmpdir/name; returns the path (static buffer per call site). */
static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

static void tmp_path(char *buf, size_t len, const char *name)
{
	if (snprintf(buf, len, "%s/%s", tmpdir, name) >= (int)len)
		fail_msg("path too long");
}

/* Load text from a fresh file; path receives the file name used. */
static int load_text(const char *text, struct ctl_config *c, char *path, size_t plen,
                     char *err, size_t errlen)
{
	static unsigned seq;
	char name[32];
	snprintf(name, sizeof(name), "c%u.yaml", seq++);
	tmp_path(path, plen, name);
	write_file(path, text);
	return ctl_config_load(path, c, err, errlen);
}

static void test_defaults(void **state)
{
	struct ctl_config c;
	char host[256] = "";

	ctl_config_defaults(&c);
	gethostname(host, sizeof(host) - 1);
	if (host[0] && strcmp(c.hostname, host) != 0)
		FAILF("hostname: got %s, want %s", c.hostname, host);
	assert_int_equal(c.workers, 1);
	assert_int_equal(c.transport, CTL_TRANSPORT_KERNEL);
	assert_int_equal(c.nlisten, 1);
	assert_string_equal(c.listen[0].text, "127.0.0.1:2525");
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&c.listen[0].addr;
	assert_int_equal(sin->sin_family, AF_INET);
	assert_int_equal(ntohs(sin->sin_port), 2525);
	assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
	assert_int_equal(c.listen[0].addrlen, sizeof(struct sockaddr_in));
	assert_false(c.listen[0].proxy_protocol);
	assert_string_equal(c.banner, "ESMTP sluice");
	assert_int_equal(c.cmd_line_max, 1024);
	assert_int_equal(c.text_line_max, 1000);
	assert_int_equal(c.message_size_max, 50ull << 20);
	assert_int_equal(c.rcpt_max, 100);
	assert_int_equal(c.errors_max, 10);
	assert_int_equal(c.connections_max, 10000);
	assert_int_equal(c.greet_pause_ms, 0);
	assert_int_equal(c.timeout_command_ms, 300000);
	assert_int_equal(c.timeout_data_ms, 180000);
	assert_int_equal(c.timeout_tls_ms, 60000);
	assert_null(c.tls_cert);
	assert_null(c.tls_key);
	assert_string_equal(c.spool_dir, "var/spool");
	assert_int_equal(c.spool_segment_max, 64ull << 20);
	assert_int_equal(c.spool_commit_delay_us, 0);
	assert_int_equal(c.spool_commit_batch_max, 1024);
	assert_true(c.spool_sync);
	assert_int_equal(c.delivery, CTL_DELIVER_MAILDIR);
	assert_string_equal(c.maildir, "var/Maildir");
	assert_int_equal(c.retry_min_ms, 60000);
	assert_int_equal(c.retry_max_ms, 3600000);
	assert_int_equal(c.max_age_ms, 7ull * 86400000);
	assert_int_equal(c.log_level, CTL_LOG_INFO);
	assert_null(c.log_file);
	assert_int_equal(ctl_config_key_line(&c, "smtp.banner"), 0);
	ctl_config_free(&c);
	ctl_config_free(&c); /* twice is harmless */
}

/* An empty file, or one with only comments, or "---", is all defaults. */
static void test_empty(void **state)
{
	static const char *const texts[] = { "", "# nothing\n\n", "---\n", "---\n...\n",
	                                     "server:\nsmtp:\n" };
	char path[PATH_MAX], err[512];
	struct ctl_config c;

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		int r = load_text(texts[i], &c, path, sizeof(path), err, sizeof(err));
		if (r != 0)
			FAILF("text %zu: got %d (%s), want 0", i, r, err);
		assert_int_equal(c.rcpt_max, 100);
		assert_string_equal(c.path, path);
		ctl_config_free(&c);
	}
}

static const char every_key[] =
	"# every key, none at its default\n"
	"server:\n"
	"  hostname: mx1.example.test\n"
	"  workers: 8\n"
	"  transport: dpdk\n"
	"listen:\n"
	"  - address: 192.0.2.1:25\n"
	"    proxy_protocol: yes\n"
	"  - address: \"[2001:db8::1]:587\"\n"
	"  - 0.0.0.0:2526\n"
	"smtp:\n"
	"  banner: \"ESMTP ready\"\n"
	"  command_line_max: 2048\n"
	"  text_line_max: 2000\n"
	"  message_size_max: 10MB\n"
	"  recipients_max: 500\n"
	"  errors_max: 3\n"
	"  connections_max: 20000\n"
	"  greet_pause: 1500ms\n"
	"  timeouts:\n"
	"    command: 10m\n"
	"    data: 2h\n"
	"    tls_handshake: 30\n"
	"tls:\n"
	"  certificate: /etc/ssl/mx.pem\n"
	"  key: /etc/ssl/mx.key\n"
	"spool:\n"
	"  directory: /var/spool/sluice\n"
	"  segment_size: 1g\n"
	"  commit_delay: 200us\n"
	"  commit_batch: 64\n"
	"  sync: off\n"
	"delivery:\n"
	"  method: discard\n"
	"  maildir: /home/%u/Maildir/%d/%%\n"
	"  retry_min: 30s\n"
	"  retry_max: 2d\n"
	"  max_age: 3d\n"
	"log:\n"
	"  level: debug\n"
	"  file: /var/log/sluice.log\n"
	"dpdk:\n"
	"  eal: \"--no-huge --no-shconf -l 0 --vdev=net_tap0,iface=sltap0\"\n"
	"  port: 1\n"
	"  address: 10.77.0.2/24\n"
	"  gateway: 10.77.0.1\n"
	"  address6: 2001:db8:77::2/64\n"
	"  checksum_offload: false\n"
	"  exception: tap\n"
	"  exception_iface: exc0\n";


static void test_every_key(void **state)
{
	char path[PATH_MAX], err[512];
	struct ctl_config c;

	int r = load_text(every_key, &c, path, sizeof(path), err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_string_equal(c.hostname, "mx1.example.test");
	assert_int_equal(c.workers, 8);
	assert_int_equal(c.transport, CTL_TRANSPORT_DPDK);
	assert_string_equal(c.dpdk_eal, "--no-huge --no-shconf -l 0 --vdev=net_tap0,iface=sltap0");
	assert_int_equal(c.dpdk_port, 1);
	assert_int_equal(c.dpdk_address.addr, 0x0a4d0002);
	assert_int_equal(c.dpdk_address.prefix, 24);
	assert_int_equal(c.dpdk_gateway, 0x0a4d0001);
	{
		static const uint8_t want6[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0x77, [15] = 2 };
		assert_memory_equal(c.dpdk_address6.addr, want6, 16);
		assert_int_equal(c.dpdk_address6.prefix, 64);
	}
	assert_false(c.dpdk_csum_offload);
	assert_int_equal(c.dpdk_exception, 1);
	assert_string_equal(c.dpdk_exception_iface, "exc0");
	assert_int_equal(c.nlisten, 3);
	assert_string_equal(c.listen[0].text, "192.0.2.1:25");
	assert_true(c.listen[0].proxy_protocol);
	assert_int_equal(c.listen[0].line, 7);
	assert_string_equal(c.listen[1].text, "[2001:db8::1]:587");
	assert_false(c.listen[1].proxy_protocol);
	assert_int_equal(c.listen[1].addr.ss_family, AF_INET6);
	assert_int_equal(c.listen[1].addrlen, sizeof(struct sockaddr_in6));
	assert_int_equal(c.listen[1].line, 9);
	assert_string_equal(c.listen[2].text, "0.0.0.0:2526");
	assert_int_equal(c.listen[2].line, 10);
	assert_string_equal(c.banner, "ESMTP ready");
	assert_int_equal(c.cmd_line_max, 2048);
	assert_int_equal(c.text_line_max, 2000);
	assert_int_equal(c.message_size_max, 10ull << 20);
	assert_int_equal(c.rcpt_max, 500);
	assert_int_equal(c.errors_max, 3);
	assert_int_equal(c.connections_max, 20000);
	assert_int_equal(c.greet_pause_ms, 1500);
	assert_int_equal(c.timeout_command_ms, 600000);
	assert_int_equal(c.timeout_data_ms, 7200000);
	assert_int_equal(c.timeout_tls_ms, 30000);
	assert_string_equal(c.tls_cert, "/etc/ssl/mx.pem");
	assert_string_equal(c.tls_key, "/etc/ssl/mx.key");
	assert_string_equal(c.spool_dir, "/var/spool/sluice");
	assert_int_equal(c.spool_segment_max, 1ull << 30);
	assert_int_equal(c.spool_commit_delay_us, 200);
	assert_int_equal(c.spool_commit_batch_max, 64);
	assert_false(c.spool_sync);
	assert_int_equal(c.delivery, CTL_DELIVER_DISCARD);
	assert_string_equal(c.maildir, "/home/%u/Maildir/%d/%%");
	assert_int_equal(c.retry_min_ms, 30000);
	assert_int_equal(c.retry_max_ms, 2ull * 86400000);
	assert_int_equal(c.max_age_ms, 3ull * 86400000);
	assert_int_equal(c.log_level, CTL_LOG_DEBUG);
	assert_string_equal(c.log_file, "/var/log/sluice.log");
	/* lines of keys, for later checks */
	assert_int_equal(ctl_config_key_line(&c, "server"), 2);
	assert_int_equal(ctl_config_key_line(&c, "listen"), 6);
	assert_int_equal(ctl_config_key_line(&c, "smtp.timeouts.tls_handshake"), 23);
	assert_int_equal(ctl_config_key_line(&c, "tls.certificate"), 25);
	assert_int_equal(ctl_config_key_line(&c, "tls.key"), 26);
	assert_int_equal(ctl_config_key_line(&c, "log.file"), 41);
	assert_int_equal(ctl_config_key_line(&c, "no.such.key"), 0);
	ctl_config_free(&c);
}

/* Flow style, quoting and other spellings of the same values. */
static void test_spellings(void **state)
{
	char path[PATH_MAX], err[512];
	struct ctl_config c;
	static const char text[] =
		"server: {workers: '2', hostname: \"[192.0.2.1]\"}\n"
		"listen: [{address: '[::]:25', proxy_protocol: TRUE}]\n"
		"smtp: {message_size_max: 1024, greet_pause: 5 s, banner: ''}\n"
		"spool: {sync: Yes, commit_delay: 3ms, segment_size: 64K}\n"
		"log: {file: ~}\n"
		"tls: {certificate: '', key: ''}\n";

	int r = load_text(text, &c, path, sizeof(path), err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_int_equal(c.workers, 2);
	assert_string_equal(c.hostname, "[192.0.2.1]");
	assert_true(c.listen[0].proxy_protocol);
	assert_int_equal(c.message_size_max, 1024);
	assert_int_equal(c.greet_pause_ms, 5000);
	assert_string_equal(c.banner, "");
	assert_true(c.spool_sync);
	assert_int_equal(c.spool_commit_delay_us, 3000);
	assert_int_equal(c.spool_segment_max, 64 << 10);
	assert_null(c.log_file);
	assert_null(c.tls_cert);
	assert_null(c.tls_key);
	ctl_config_free(&c);
}

struct bad {
	const char *text;
	unsigned line;                  /* 0: "FILE: reason" */
	const char *reason;
};

static const struct bad bad[] = {
	/* unknown keys, with and without a suggestion */
	{ "smtp:\n  recipient_max: 5\n", 2,
	  "unknown key 'smtp.recipient_max' (did you mean 'smtp.recipients_max'?)" },
	{ "server:\n  workers: 1\n  banner: x\n", 3,
	  "unknown key 'server.banner' (did you mean 'smtp.banner'?)" },
	{ "sever:\n  workers: 1\n", 1, "unknown key 'sever' (did you mean 'server'?)" },
	{ "frobnicate: 1\n", 1, "unknown key 'frobnicate'" },
	{ "smtp.banner: x\n", 1,
	  "unknown key 'smtp.banner': dotted names are not expanded, nest the keys instead" },
	{ "smtp:\n  timeouts:\n    cmd: 1m\n", 3, "unknown key 'smtp.timeouts.cmd'" },
	{ "listen:\n  - address: 127.0.0.1:25\n    proxy: true\n", 3,
	  "unknown key 'listen[0].proxy'" },
	{ "listen:\n  - adress: 127.0.0.1:25\n", 2,
	  "unknown key 'listen[0].adress' (did you mean 'address'?)" },
	/* duplicates */
	{ "smtp:\n  errors_max: 1\n  errors_max: 2\n", 3,
	  "duplicate key 'smtp.errors_max' (first set on line 2)" },
	{ "log:\n  level: info\nlog:\n  file: x\n", 3, "duplicate key 'log' (first set on line 1)" },
	/* types */
	{ "smtp:\n  recipients_max: abc\n", 2, "smtp.recipients_max: expected an integer, got 'abc'" },
	{ "smtp:\n  recipients_max: 1.5\n", 2, "smtp.recipients_max: expected an integer, got '1.5'" },
	{ "smtp:\n  recipients_max:\n", 2, "smtp.recipients_max: expected an integer, got ''" },
	{ "smtp:\n  recipients_max: [1]\n", 2,
	  "smtp.recipients_max: expected a scalar value, got a list" },
	{ "smtp:\n  message_size_max: 5x\n", 2,
	  "smtp.message_size_max: expected a size (bytes, or a number with k, m or g), got '5x'" },
	{ "smtp:\n  greet_pause: 5 minutes\n", 2,
	  "smtp.greet_pause: expected a duration (a number with ms, s, m, h or d), got '5 minutes'" },
	{ "spool:\n  commit_delay: -1\n", 2,
	  "spool.commit_delay: expected a duration (a number with us, ms, s, m, h or d), got '-1'" },
	{ "smtp:\n  timeouts:\n    data: 1500us\n", 3,
	  "smtp.timeouts.data: '1500us' is finer than the millisecond this setting counts in" },
	{ "spool:\n  sync: maybe\n", 2,
	  "spool.sync: expected a boolean (true/false, yes/no, on/off), got 'maybe'" },
	{ "server:\n  transport: netmap\n", 2,
	  "server.transport: expected one of kernel, dpdk, got 'netmap'" },
	{ "server:\n  transport: dpdk\n", 2,
	  "dpdk.address: must be set with server.transport dpdk (the port's IPv4 address and "
	  "prefix, e.g. 10.77.0.2/24)" },
	{ "dpdk:\n  address: 10.77.0.2\n", 2,
	  "dpdk.address: expected an IPv4 address with its prefix length (a.b.c.d/24), got '10.77.0.2'" },
	{ "dpdk:\n  address: 10.77.0.2/33\n", 2,
	  "dpdk.address: expected an IPv4 address with its prefix length (a.b.c.d/24), got "
	  "'10.77.0.2/33'" },
	{ "dpdk:\n  address: 10.77.0/24\n", 2,
	  "dpdk.address: expected an IPv4 address with its prefix length (a.b.c.d/24), got "
	  "'10.77.0/24'" },
	{ "dpdk:\n  gateway: 10.77.0.1/24\n", 2,
	  "dpdk.gateway: expected an IPv4 address (a.b.c.d), got '10.77.0.1/24'" },
	{ "dpdk:\n  port: 2000\n", 2, "dpdk.port: 2000 is out of range 0..1023" },
	{ "dpdk:\n  address6: 2001:db8::2\n", 2,
	  "dpdk.address6: expected a unicast IPv6 address with its prefix length (2001:db8::25/64), "
	  "got '2001:db8::2'" },
	{ "dpdk:\n  address6: ff02::1/64\n", 2,
	  "dpdk.address6: expected a unicast IPv6 address with its prefix length (2001:db8::25/64), "
	  "got 'ff02::1/64'" },
	{ "dpdk:\n  address6: 10.77.0.2/24\n", 2,
	  "dpdk.address6: expected a unicast IPv6 address with its prefix length (2001:db8::25/64), "
	  "got '10.77.0.2/24'" },
	{ "dpdk:\n  exception: kernel\n", 2,
	  "dpdk.exception: expected one of drop, tap, got 'kernel'" },
	{ "dpdk:\n  exception_iface: a/b\n", 2,
	  "dpdk.exception_iface: expected an interface name (1-15 characters, no '/', ':' or "
	  "blank), got 'a/b'" },
	{ "log:\n  level: trace\n", 2, "log.level: expected one of error, warn, info, debug, got 'trace'" },
	{ "delivery:\n  method: smtp\n", 2,
	  "delivery.method: expected one of maildir, discard, lmtp, got 'smtp'" },
	{ "delivery:\n  method: lmtp\n", 2,
	  "lmtp.default: must be set with delivery.method lmtp (the backend for domains without a route)" },
	{ "lmtp:\n  default: localhost:24\n", 2,
	  "lmtp.default: expected unix:/path, IPv4:port or [IPv6]:port, got 'localhost:24'" },
	{ "lmtp:\n  routes: [a]\n", 2, "lmtp.routes: expected a mapping of domain: backend, got a list" },
	{ "lmtp:\n  routes:\n    'bad domain': unix:/x\n", 3,
	  "lmtp.routes: expected a domain (or .domain for its subdomains), got 'bad domain'" },
	{ "lmtp:\n  routes:\n    a.test: 'unix:'\n", 3,
	  "lmtp.routes.a.test: expected unix:/path, IPv4:port or [IPv6]:port, got 'unix:'" },
	{ "lmtp:\n  routes:\n    a.test: unix:/x\n    A.Test: 127.0.0.1:24\n", 4,
	  "lmtp.routes: duplicate domain 'A.Test' (first on line 3)" },
	{ "lmtp:\n  timeout: 2h\n", 2, "lmtp.timeout: 2h is out of range 1s..1h" },
	{ "spool:\n  limit: lots\n", 2,
	  "spool.limit: expected a size (bytes, or a number with k, m or g), got 'lots'" },
	{ "delivery:\n  bounce_return_max: 10\n", 2,
	  "delivery.bounce_return_max: 10 is out of range 1k..1g" },
	{ "smtp: 5\n", 1, "smtp: expected a mapping of keys, got a scalar" },
	{ "- a\n- b\n", 1, "expected a mapping of sections (server, listen, smtp, ...), got a list" },
	{ "server:\n  hostname: \"mx\\r\\n250 evil\"\n", 2,
	  "server.hostname: expected a domain name or an address literal, got 'mx\\x0d\\x0a250 evil'" },
	{ "server:\n  hostname: -mx.example\n", 2,
	  "server.hostname: expected a domain name or an address literal, got '-mx.example'" },
	{ "smtp:\n  banner: \"hi\\nthere\"\n", 2,
	  "smtp.banner: control characters are not allowed, got 'hi\\x0athere'" },
	{ "spool:\n  directory: \"a\\0b\"\n", 2, "spool.directory: value contains a NUL byte" },
	{ "smtp:\n  recipients_max: abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\n", 2,
	  "smtp.recipients_max: expected an integer, got 'abcdefghijklmnopqrstuvwxyzabcdefghijklmn...'" },
	/* ranges */
	{ "server:\n  workers: 0\n", 2, "server.workers: 0 is out of range 1..64" },
	{ "server:\n  workers: 65\n", 2, "server.workers: 65 is out of range 1..64" },
	{ "server:\n  workers: -1\n", 2, "server.workers: -1 is out of range 1..64" },
	{ "server:\n  workers: 99999999999999999999999\n", 2,
	  "server.workers: 99999999999999999999999 is out of range 1..64" },
	{ "smtp:\n  command_line_max: 511\n", 2,
	  "smtp.command_line_max: 511 is out of range 512..65536 (RFC 5321 4.5.3.1.4 sets 512)" },
	{ "smtp:\n  text_line_max: 999\n", 2,
	  "smtp.text_line_max: 999 is out of range 1000..1000000 (RFC 5321 4.5.3.1.6 sets 1000)" },
	{ "smtp:\n  recipients_max: 0\n", 2, "smtp.recipients_max: 0 is out of range 1..100000" },
	{ "smtp:\n  message_size_max: 2t\n", 2,
	  "smtp.message_size_max: expected a size (bytes, or a number with k, m or g), got '2t'" },
	{ "smtp:\n  message_size_max: 2000g\n", 2, "smtp.message_size_max: 2000g is out of range 1k..1024g" },
	{ "smtp:\n  message_size_max: 99999999999999999999g\n", 2,
	  "smtp.message_size_max: 99999999999999999999g is out of range 1k..1024g" },
	{ "smtp:\n  greet_pause: 5m\n", 2,
	  "smtp.greet_pause: 5m is out of range 0ms..299999ms "
	  "(clients wait 5m for the greeting, RFC 5321 4.5.3.2.1)" },
	{ "smtp:\n  timeouts:\n    command: 0\n", 3, "smtp.timeouts.command: 0 is out of range 1ms..1d" },
	{ "spool:\n  commit_delay: 2s\n", 2, "spool.commit_delay: 2s is out of range 0us..1s" },
	{ "spool:\n  segment_size: 1k\n", 2, "spool.segment_size: 1k is out of range 64k..64g" },
	{ "delivery:\n  max_age: 400d\n", 2, "delivery.max_age: 400d is out of range 1m..365d" },
	/* listen */
	{ "listen: 127.0.0.1:25\n", 1, "listen: expected a list of addresses, got a scalar" },
	{ "listen: []\n", 1, "listen: at least one address is needed" },
	{ "listen:\n  - address: localhost:25\n", 2,
	  "listen[0].address: expected IPv4:port or [IPv6]:port with a port 1..65535, got 'localhost:25'" },
	{ "listen:\n  - 127.0.0.1:25\n  - address: 127.0.0.1:0\n", 3,
	  "listen[1].address: expected IPv4:port or [IPv6]:port with a port 1..65535, got '127.0.0.1:0'" },
	{ "listen:\n  - proxy_protocol: true\n", 2, "listen[0]: 'address' is required" },
	{ "listen:\n  - address: 127.0.0.1:25\n    proxy_protocol: 2\n", 3,
	  "listen[0].proxy_protocol: expected a boolean (true/false, yes/no, on/off), got '2'" },
	{ "listen:\n  - 127.0.0.1:25\n  - 10.0.0.1:25\n  - 127.0.0.1:25\n", 4,
	  "listen[2].address: 127.0.0.1:25 is already listed on line 2" },
	{ "listen:\n  - [1]\n", 2, "listen[0]: expected a mapping (address, proxy_protocol), got a list" },
	{ "listen: [1.1.1.1:1, 1.1.1.1:2, 1.1.1.1:3, 1.1.1.1:4, 1.1.1.1:5, 1.1.1.1:6,\n"
	  "  1.1.1.1:7, 1.1.1.1:8, 1.1.1.1:9, 1.1.1.1:10, 1.1.1.1:11, 1.1.1.1:12,\n"
	  "  1.1.1.1:13, 1.1.1.1:14, 1.1.1.1:15, 1.1.1.1:16, 1.1.1.1:17]\n", 1,
	  "listen: at most 16 addresses, got 17" },
	/* rules across keys */
	{ "tls:\n  certificate: /x.pem\n", 2, "tls.certificate: set without tls.key (STARTTLS needs both)" },
	{ "tls:\n  key: /x.key\n  certificate: ''\n", 2,
	  "tls.key: set without tls.certificate (STARTTLS needs both)" },
	{ "spool:\n  directory: ''\n", 2, "spool.directory: must not be empty" },
	{ "delivery:\n  maildir: ''\n", 2,
	  "delivery.maildir: must not be empty with delivery.method maildir" },
	{ "delivery:\n  maildir: var/%x\n", 2,
	  "delivery.maildir: unknown escape '%x' (use %u, %d or %%)" },
	{ "delivery:\n  maildir: var/100%\n", 2,
	  "delivery.maildir: '%' at the end (write %% for a '%')" },
	{ "delivery:\n  retry_min: 2h\n", 2,
	  "delivery.retry_max: 1h is less than delivery.retry_min 2h" },
	{ "delivery:\n  retry_min: 10m\n  retry_max: 5m\n", 3,
	  "delivery.retry_max: 5m is less than delivery.retry_min 10m" },
	/* YAML itself */
	{ "server:\n  workers: [1\n", 3,
	  "YAML: did not find expected ',' or ']' (while parsing a flow sequence that started on line 2)" },
	{ "server:\n\tworkers: 1\n", 2,
	  "YAML: found character that cannot start any token (while scanning for the next token)" },
	{ "a: 1\n---\nb: 2\n", 3, "only one YAML document is allowed" },
	{ "server: {workers: 1}\nserver: x\n", 2, "duplicate key 'server' (first set on line 1)" },
};

static void test_errors(void **state)
{
	char path[PATH_MAX], err[512], want[PATH_MAX + 512];
	struct ctl_config c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const struct bad *b = &bad[i];
		int r = load_text(b->text, &c, path, sizeof(path), err, sizeof(err));
		if (b->line)
			snprintf(want, sizeof(want), "%s:%u: %s", path, b->line, b->reason);
		else
			snprintf(want, sizeof(want), "%s: %s", path, b->reason);
		if (r != -EINVAL)
			FAILF("case %zu (%s): got %d, want -EINVAL", i, b->reason, r);
		if (strcmp(err, want) != 0)
			FAILF("case %zu: got \"%s\", want \"%s\"", i, err, want);
		/* after a failure c owns nothing */
		assert_null(c.path);
		assert_null(c.hostname);
		ctl_config_free(&c);
	}
}

static void test_file_errors(void **state)
{
	char path[PATH_MAX], err[512], want[PATH_MAX + 64];
	struct ctl_config c;

	tmp_path(path, sizeof(path), "does-not-exist.yaml");
	int r = ctl_config_load(path, &c, err, sizeof(err));
	if (r != -ENOENT)
		FAILF("missing file: got %d, want -ENOENT", r);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	if (strcmp(err, want) != 0)
		FAILF("got \"%s\", want \"%s\"", err, want);

	r = ctl_config_load(tmpdir, &c, err, sizeof(err));
	if (r != -EISDIR)
		FAILF("directory: got %d, want -EISDIR", r);

	/* A short error buffer is cut, never overrun. */
	char small[8];
	memset(small, 'x', sizeof(small));
	r = load_text("nope: 1\n", &c, path, sizeof(path), small, sizeof(small));
	assert_int_equal(r, -EINVAL);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	r = load_text("nope: 1\n", &c, path, sizeof(path), NULL, 0);
	assert_int_equal(r, -EINVAL);
}

/* The fuzz target's entry point, with a name of its own choosing. */
static void test_load_buffer(void **state)
{
	struct ctl_config c;
	char err[256];
	static const char text[] = "smtp:\n  errors_max: 7\n";

	int r = ctl_config_load_buffer("mem", text, sizeof(text) - 1, &c, err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_int_equal(c.errors_max, 7);
	assert_string_equal(c.path, "mem");
	ctl_config_free(&c);

	/* bytes after an embedded NUL are not silently dropped */
	static const char nul[] = "smtp:\n  errors_max: 7\n\0junk: 1\n";
	r = ctl_config_load_buffer("mem", nul, sizeof(nul) - 1, &c, err, sizeof(err));
	assert_int_equal(r, -EINVAL);
	if (strncmp(err, "mem:", 4) != 0)
		FAILF("got \"%s\", want it to start with \"mem:\"", err);

	/* collections nested deeper than 32 are refused before libyaml's
	 * loader, which takes minutes on the 1 MB a file may hold (time
	 * quadratic in the depth); 31 deep reaches the key checks */
	enum { DEEP = 500000 };
	char *deep = malloc(2 * DEEP + 64);
	assert_non_null(deep);
	for (int d = 0; d < 2; d++) {
		int k = d ? DEEP : 31, n = sprintf(deep, "\nlisten: ");
		memset(deep + n, '[', (size_t)k);
		memset(deep + n + k, ']', (size_t)k);
		n += 2 * k;
		deep[n++] = '\n';
		r = ctl_config_load_buffer("mem", deep, (size_t)n, &c, err, sizeof(err));
		assert_int_equal(r, -EINVAL);
		bool refused = strstr(err, "mem:2: collections nested deeper than 32 levels") != NULL;
		if (refused != (d == 1))
			FAILF("%d deep: got \"%s\"", k, err);
	}
	free(deep);
}

static void test_parse_size(void **state)
{
	static const struct { const char *s; int r; uint64_t v; } t[] = {
		{ "0", 0, 0 }, { "1", 0, 1 }, { "1024", 0, 1024 }, { "1b", 0, 1 }, { "1B", 0, 1 },
		{ "1k", 0, 1024 }, { "1K", 0, 1024 }, { "1kb", 0, 1024 }, { "1KB", 0, 1024 },
		{ "50m", 0, 50ull << 20 }, { "50MB", 0, 50ull << 20 }, { "3g", 0, 3ull << 30 },
		{ "64 m", 0, 64ull << 20 }, { "18446744073709551615", 0, UINT64_MAX },
		{ "17179869183g", 0, 17179869183ull << 30 },
		{ "18446744073709551616", -EINVAL, 0 }, { "17179869184g", -EINVAL, 0 },
		{ "", -EINVAL, 0 }, { "k", -EINVAL, 0 }, { "-1", -EINVAL, 0 }, { "+1", -EINVAL, 0 },
		{ " 1", -EINVAL, 0 }, { "1 ", -EINVAL, 0 }, { "1t", -EINVAL, 0 }, { "1kk", -EINVAL, 0 },
		{ "1bk", -EINVAL, 0 }, { "0x10", -EINVAL, 0 }, { "1.5m", -EINVAL, 0 },
		{ "1mib", -EINVAL, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t v = 12345;
		int r = ctl_parse_size(t[i].s, &v);
		if (r != t[i].r)
			FAILF("ctl_parse_size(\"%s\"): got %d, want %d", t[i].s, r, t[i].r);
		if (r == 0 && v != t[i].v)
			FAILF("ctl_parse_size(\"%s\"): got %llu, want %llu", t[i].s,
			      (unsigned long long)v, (unsigned long long)t[i].v);
	}
	assert_int_equal(ctl_parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

static void test_parse_duration(void **state)
{
	static const struct { const char *s; int r; uint64_t ms; } t[] = {
		{ "0", 0, 0 }, { "5", 0, 5000 }, { "5s", 0, 5000 }, { "5S", 0, 5000 },
		{ "250ms", 0, 250 }, { "250MS", 0, 250 }, { "2m", 0, 120000 }, { "1h", 0, 3600000 },
		{ "7d", 0, 604800000 }, { "3000us", 0, 3 }, { "0us", 0, 0 }, { "5 m", 0, 300000 },
		{ "1500us", -EINVAL, 0 }, { "1us", -EINVAL, 0 },
		{ "", -EINVAL, 0 }, { "m", -EINVAL, 0 }, { "-1s", -EINVAL, 0 }, { "1.5s", -EINVAL, 0 },
		{ "1w", -EINVAL, 0 }, { "1 h ", -EINVAL, 0 }, { "1hm", -EINVAL, 0 }, { "1h30m", -EINVAL, 0 },
		{ "1sec", -EINVAL, 0 }, { "213503982335d", -EINVAL, 0 },
		{ "99999999999999999999", -EINVAL, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t v = 12345;
		int r = ctl_parse_duration_ms(t[i].s, &v);
		if (r != t[i].r)
			FAILF("ctl_parse_duration_ms(\"%s\"): got %d, want %d", t[i].s, r, t[i].r);
		if (r == 0 && v != t[i].ms)
			FAILF("ctl_parse_duration_ms(\"%s\"): got %llu, want %llu", t[i].s,
			      (unsigned long long)v, (unsigned long long)t[i].ms);
	}
	uint64_t us;
	assert_int_equal(ctl_parse_duration_us("200us", &us), 0);
	assert_int_equal(us, 200);
	assert_int_equal(ctl_parse_duration_us("2", &us), 0);
	assert_int_equal(us, 2000000);
	assert_int_equal(ctl_parse_duration_us("1ms", &us), 0);
	assert_int_equal(us, 1000);
	assert_int_equal(ctl_parse_duration_us("213503983d", &us), -EINVAL); /* > 2^64 us */
}

static void test_parse_addr(void **state)
{
	static const struct { const char *s; int r; int af; const char *addr; unsigned port; } t[] = {
		{ "127.0.0.1:2525", 0, AF_INET, "127.0.0.1", 2525 },
		{ "0.0.0.0:25", 0, AF_INET, "0.0.0.0", 25 },
		{ "255.255.255.255:65535", 0, AF_INET, "255.255.255.255", 65535 },
		{ "[::1]:25", 0, AF_INET6, "::1", 25 },
		{ "[::]:1", 0, AF_INET6, "::", 1 },
		{ "[2001:db8::ffff:192.0.2.1]:587", 0, AF_INET6, "2001:db8::ffff:c000:201", 587 },
		{ "[fe80::1%1]:25", 0, AF_INET6, "fe80::1", 25 },
		{ "[fe80::1%lo]:25", 0, AF_INET6, "fe80::1", 25 },
		{ "127.0.0.1:0", -EINVAL }, { "127.0.0.1:65536", -EINVAL }, { "127.0.0.1:", -EINVAL },
		{ "127.0.0.1", -EINVAL }, { ":25", -EINVAL }, { "127.0.0.1:+25", -EINVAL },
		{ "127.0.0.1:25x", -EINVAL }, { "127.0.0.1:0000025", -EINVAL },
		{ "127.1:25", -EINVAL }, { "localhost:25", -EINVAL }, { "::1:25", -EINVAL },
		{ "[::1]25", -EINVAL }, { "[::1]", -EINVAL }, { "[]:25", -EINVAL },
		{ "[127.0.0.1]:25", -EINVAL }, { "[::1:25", -EINVAL }, { "", -EINVAL },
		{ "[fe80::1%]:25", -EINVAL }, { "[fe80::1%no-such-if0]:25", -EINVAL },
		{ "1.2.3.4 :25", -EINVAL },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char got[INET6_ADDRSTRLEN];
		int r = ctl_parse_addr(t[i].s, &ss, &len);
		if (r != t[i].r)
			FAILF("ctl_parse_addr(\"%s\"): got %d, want %d", t[i].s, r, t[i].r);
		if (r != 0)
			continue;
		if (ss.ss_family != t[i].af)
			FAILF("ctl_parse_addr(\"%s\"): family got %d, want %d", t[i].s, ss.ss_family, t[i].af);
		unsigned port;
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got));
			port = ntohs(sin->sin_port);
			assert_int_equal(len, sizeof(*sin));
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &sin6->sin6_addr, got, sizeof(got));
			port = ntohs(sin6->sin6_port);
			assert_int_equal(len, sizeof(*sin6));
		}
		if (strcmp(got, t[i].addr) != 0 || port != t[i].port)
			FAILF("ctl_parse_addr(\"%s\"): got %s port %u, want %s port %u", t[i].s, got, port,
			      t[i].addr, t[i].port);
	}
}

/* Where is the source tree? See the comment at the top. */
static bool find_src(const char *rel, char *out, size_t len)
{
	const char *env = getenv("SLUICE_SRCDIR");
	char exe[PATH_MAX], dir[PATH_MAX];

	if (env && *env) {
		if (snprintf(out, len, "%s/%s", env, rel) < (int)len && access(out, R_OK) == 0)
			return true;
	}
	snprintf(dir, sizeof(dir), "%s", __FILE__);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		if (snprintf(out, len, "%s/../../%s", dir, rel) < (int)len && access(out, R_OK) == 0)
			return true;
	}
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		/* <src>/<build>/tests/control/test_control_config */
		for (int up = 0; up < 4 && (slash = strrchr(exe, '/')); up++)
			*slash = '\0';
		if (snprintf(out, len, "%s/%s", exe, rel) < (int)len && access(out, R_OK) == 0)
			return true;
	}
	return false;
}

static void test_sluice_conf(void **state)
{
	char path[PATH_MAX], err[512];
	struct ctl_config c;

	if (!find_src("etc/sluice.conf", path, sizeof(path)))
		FAILF("etc/sluice.conf: not found (set SLUICE_SRCDIR to the source tree)");
	int r = ctl_config_load(path, &c, err, sizeof(err));
	if (r != 0)
		FAILF("%s: got %d (%s), want 0", path, r, err);
	/* The quick start's promises. */
	assert_int_equal(c.transport, CTL_TRANSPORT_KERNEL);
	assert_int_equal(c.nlisten, 1);
	assert_string_equal(c.listen[0].text, "127.0.0.1:2525");
	assert_int_equal(c.delivery, CTL_DELIVER_MAILDIR);
	assert_string_equal(c.maildir, "var/Maildir");
	assert_string_equal(c.spool_dir, "var/spool");
	assert_true(c.spool_sync);
	/* Every key of the schema is present in the file. */
	static const char *const all[] = {
		"server.hostname", "server.workers", "server.transport", "listen",
		"smtp.banner", "smtp.command_line_max", "smtp.text_line_max",
		"smtp.message_size_max", "smtp.recipients_max", "smtp.errors_max",
		"smtp.connections_max", "smtp.greet_pause", "smtp.timeouts.command",
		"smtp.timeouts.data", "smtp.timeouts.tls_handshake", "tls.certificate", "tls.key",
		"spool.directory", "spool.segment_size", "spool.commit_delay", "spool.commit_batch",
		"spool.sync", "delivery.method", "delivery.maildir", "delivery.retry_min",
		"delivery.retry_max", "delivery.max_age", "log.level", "log.file",
		"spool.limit", "delivery.bounce_return_max", "lmtp.default", "lmtp.routes",
		"lmtp.timeout", "smtp.early_talker", "smtp.tarpit_interval",
		"rbl.enabled", "rbl.zones", "rbl.threshold", "rbl.servers", "rbl.timeout",
		"rbl.cache_ttl", "rbl.negative_ttl", "rbl.cache_max", "rbl.skip", "rbl.tarpit",
		"limits.connections_per_client", "limits.messages_per_minute", "limits.skip",
		"access.senders_deny", "access.senders_allow", "access.recipients_deny",
		"access.recipients_allow", "recipients.domains", "recipients.verify",
		"recipients.verify_timeout", "recipients.verify_ttl", "recipients.verify_negative_ttl",
		"greylist.enabled", "greylist.redis", "greylist.prefix", "greylist.timeout",
		"greylist.delay", "greylist.retry_window", "greylist.pass_ttl", "greylist.cache_ttl",
		"greylist.ipv4_prefix", "greylist.ipv6_prefix", "greylist.on_error", "greylist.skip",
		"admin.socket", "admin.http",
	};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (ctl_config_key_line(&c, all[i]) == 0)
			FAILF("etc/sluice.conf: %s: got no line, want the key present", all[i]);
	/* And its values are the built-in defaults (hostname aside). */
	struct ctl_config d;
	ctl_config_defaults(&d);
	assert_int_equal(c.workers, d.workers);
	assert_int_equal(c.cmd_line_max, d.cmd_line_max);
	assert_int_equal(c.message_size_max, d.message_size_max);
	assert_int_equal(c.timeout_command_ms, d.timeout_command_ms);
	assert_int_equal(c.spool_segment_max, d.spool_segment_max);
	assert_int_equal(c.max_age_ms, d.max_age_ms);
	assert_string_equal(c.hostname, d.hostname);
	assert_string_equal(c.banner, d.banner);
	assert_int_equal(c.rbl_enabled, d.rbl_enabled);
	assert_true(c.rbl_threshold == d.rbl_threshold);
	assert_int_equal(c.rbl_cache_max, d.rbl_cache_max);
	assert_int_equal(c.gl_enabled, d.gl_enabled);
	assert_int_equal(c.gl_delay_ms, d.gl_delay_ms);
	assert_int_equal(c.gl_pass_ttl_ms, d.gl_pass_ttl_ms);
	assert_int_equal(c.gl_cache_ttl_ms, d.gl_cache_ttl_ms);
	assert_string_equal(c.gl_redis, d.gl_redis);
	assert_int_equal(c.rcpt_verify_ttl_ms, d.rcpt_verify_ttl_ms);
	assert_int_equal(c.tarpit_interval_ms, d.tarpit_interval_ms);
	assert_int_equal(c.lim_conns_per_client, d.lim_conns_per_client);
	ctl_config_free(&d);
	ctl_config_free(&c);
}

/* LMTP delivery: routes, default, timeout; spool limit; bounce cap. */
static void test_lmtp_keys(void **state)
{
	char path[PATH_MAX], err[512];
	struct ctl_config c;
	static const char text[] =
		"spool:\n"
		"  limit: 10g\n"
		"delivery:\n"
		"  method: lmtp\n"
		"  bounce_return_max: 1m\n"
		"lmtp:\n"
		"  default: unix:/run/dovecot/lmtp\n"
		"  timeout: 90s\n"
		"  routes:\n"
		"    Example.ORG: 192.0.2.10:24\n"
		"    .example.org: \"[2001:db8::1]:24\"\n"
		"    other.test: unix:/run/other/lmtp\n";

	int r = load_text(text, &c, path, sizeof(path), err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_int_equal(c.delivery, CTL_DELIVER_LMTP);
	assert_int_equal(c.spool_limit, 10ull << 30);
	assert_int_equal(c.bounce_return_max, 1ull << 20);
	assert_string_equal(c.lmtp_default, "unix:/run/dovecot/lmtp");
	assert_int_equal(c.lmtp_timeout_ms, 90000);
	assert_int_equal(c.nroutes, 3);
	assert_string_equal(c.routes[0].domain, "example.org");
	assert_string_equal(c.routes[0].backend, "192.0.2.10:24");
	assert_int_equal(c.routes[0].line, 10);
	assert_string_equal(c.routes[1].domain, ".example.org");
	assert_string_equal(c.routes[1].backend, "[2001:db8::1]:24");
	assert_string_equal(c.routes[2].backend, "unix:/run/other/lmtp");
	assert_int_equal(ctl_config_key_line(&c, "lmtp.routes"), 9);

	struct ctl_queue_conf qc;
	ctl_queue_conf_from_config(&qc, &c);
	assert_int_equal(qc.method, CTL_DELIVER_LMTP);
	assert_ptr_equal(qc.routes, c.routes);
	assert_int_equal(qc.nroutes, 3);
	assert_string_equal(qc.lmtp_default, "unix:/run/dovecot/lmtp");
	assert_int_equal(qc.spool_limit, 10ull << 30);
	assert_string_equal(qc.hostname, c.hostname);
	ctl_config_free(&c);
	ctl_config_free(&c);                 /* twice is harmless */

	/* Defaults: no limit, 256k returned, 5m timeout, no routes. */
	ctl_config_defaults(&c);
	assert_int_equal(c.spool_limit, 0);
	assert_int_equal(c.bounce_return_max, 256ull << 10);
	assert_int_equal(c.lmtp_timeout_ms, 300000);
	assert_null(c.lmtp_default);
	assert_int_equal(c.nroutes, 0);
	ctl_config_free(&c);
}

/* A throwaway P-256 key and self-signed certificate, as PEM files. */
static void make_cert(const char *cert_path, const char *key_path)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(k);
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	                           (const unsigned char *)"mx.example.test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, k);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	FILE *f = fopen(cert_path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	f = fopen(key_path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

/* in with every "@T" replaced by tmpdir. */
static void subst(const char *in, char *out, size_t len)
{
	size_t o = 0, tl = strlen(tmpdir);
	for (; *in && o + 1 < len; in++) {
		if (in[0] == '@' && in[1] == 'T' && o + tl + 1 < len) {
			memcpy(out + o, tmpdir, tl);
			o += tl;
			in++;
		} else {
			out[o++] = *in;
		}
	}
	out[o] = '\0';
}

/* Load text (with @T standing for tmpdir) and run --check. */
static int check(const char *tmpl, char *path, size_t plen, char *err, size_t errlen)
{
	char text[4096];
	struct ctl_config c;
	subst(tmpl, text, sizeof(text));
	int r = load_text(text, &c, path, plen, err, errlen);
	if (r != 0)
		FAILF("load: got %d (%s), want 0", r, err);
	r = ctl_config_check_files(&c, err, errlen);
	ctl_config_free(&c);
	return r;
}

static void want_check(const char *fmt, unsigned line, const char *reason_fmt)
{
	char path[PATH_MAX], err[1024], want[PATH_MAX + 1100], reason[1024];
	int r = check(fmt, path, sizeof(path), err, sizeof(err));
	if (!reason_fmt) {
		if (r != 0)
			FAILF("check: got %d (%s), want 0", r, err);
		return;
	}
	subst(reason_fmt, reason, sizeof(reason));
	snprintf(want, sizeof(want), "%s:%u: %s", path, line, reason);
	if (r != -EINVAL || strcmp(err, want) != 0)
		FAILF("check: got %d \"%s\", want -EINVAL \"%s\"", r, err, want);
}

static void test_check_files(void **state)
{
	char p1[PATH_MAX], p2[PATH_MAX], p3[PATH_MAX], p4[PATH_MAX];

	tmp_path(p1, sizeof(p1), "cert.pem");
	tmp_path(p2, sizeof(p2), "key.pem");
	tmp_path(p3, sizeof(p3), "other-cert.pem");
	tmp_path(p4, sizeof(p4), "other-key.pem");
	make_cert(p1, p2);
	make_cert(p3, p4);
	tmp_path(p3, sizeof(p3), "plain-file");
	write_file(p3, "not a directory\n");
	tmp_path(p3, sizeof(p3), "ro");
	assert_int_equal(mkdir(p3, 0555), 0);

	/* All fine: files exist, dirs are creatable under tmpdir. */
	want_check("tls:\n  certificate: @T/cert.pem\n  key: @T/key.pem\n"
	             "spool:\n  directory: @T/spool/a/b\n"
	             "delivery:\n  maildir: @T/mail/%d/%u\n", 0, NULL);
	want_check("log:\n  file: @T/sluice.log\nspool:\n  directory: @T\n"
	             "delivery:\n  maildir: @T/%u\n", 0, NULL);
	/* TLS */
	want_check("tls:\n  certificate: @T/nope.pem\n  key: @T/key.pem\n", 2,
	             "tls.certificate: cannot read @T/nope.pem: No such file or directory");
	want_check("\n\ntls:\n  key: @T/nope.key\n  certificate: @T/cert.pem\n", 4,
	             "tls.key: cannot read @T/nope.key: No such file or directory");
	want_check("tls:\n  certificate: @T/plain-file\n  key: @T/key.pem\n", 2,
	             "tls.certificate: @T/plain-file holds no PEM certificate");
	want_check("tls:\n  certificate: @T/cert.pem\n  key: @T/cert.pem\n", 3,
	             "tls.key: @T/cert.pem holds no unencrypted PEM private key");
	want_check("tls:\n  certificate: @T/cert.pem\n  key: @T/other-key.pem\n", 3,
	             "tls.key: @T/other-key.pem does not match the certificate in @T/cert.pem");
	/* directories */
	want_check("spool:\n  directory: @T/plain-file\n", 2,
	             "spool.directory: @T/plain-file is not a directory");
	want_check("spool:\n  directory: @T/plain-file/sub\n", 2,
	             "spool.directory: @T/plain-file is not a directory");
	want_check("delivery:\n  maildir: @T/plain-file/%u\n", 2,
	             "delivery.maildir: @T/plain-file is not a directory");
	want_check("log:\n  file: @T/no-dir/x.log\n", 2,
	             "log.file: directory @T/no-dir does not exist");
	want_check("log:\n  file: @T\n", 2, "log.file: @T is a directory");
	if (geteuid() != 0) { /* root writes anywhere */
		want_check("spool:\n  directory: @T/ro/spool\n", 2,
		             "spool.directory: cannot write in @T/ro: Permission denied");
	}
}

/* filter: defaults (off), every key, a list of rule paths, scores. */
static void test_filter_keys(void **state)
{
	char path[PATH_MAX], err[512];
	struct ctl_config c;

	ctl_config_defaults(&c);
	assert_false(c.filter_enabled);
	assert_int_equal(c.filter_nrules, 1);
	assert_string_equal(c.filter_rules[0], "/usr/share/spamassassin");
	assert_true(c.filter_reject == 15.0 && c.filter_quarantine == 0);
	ctl_config_free(&c);

	int r = load_text("filter:\n  enabled: yes\n  rules: [/a.cf, /b]\n  cache: \"\"\n"
	                  "  tag: 0\n  reject: 12.5\n  policy: \"5:tag_lower,9:reject\"\n"
	                  "  attachments:\n    enabled: no\n    extensions: exe scr\n"
	                  "    scores: {ATTACH_DANGEROUS_EXT: 20, ATTACH_ZIP_LIMIT: 0}\n",
	                  &c, path, sizeof(path), err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_true(c.filter_enabled);
	assert_int_equal(c.filter_nrules, 2);
	assert_string_equal(c.filter_rules[1], "/b");
	assert_null(c.filter_cache);
	assert_true(c.filter_tag == 0 && c.filter_reject == 12.5);
	assert_string_equal(c.filter_policy, "5:tag_lower,9:reject");
	assert_false(c.filter_attach_enabled);
	assert_int_equal(c.filter_attach_nscores, 2);
	assert_string_equal(c.filter_attach_score_name[0], "ATTACH_DANGEROUS_EXT");
	assert_true(c.filter_attach_score[0] == 20);
	ctl_config_free(&c);

	r = load_text("filter:\n  rules: /one.cf\n", &c, path, sizeof(path), err, sizeof(err));
	assert_int_equal(r, 0);
	assert_int_equal(c.filter_nrules, 1);
	assert_string_equal(c.filter_rules[0], "/one.cf");
	ctl_config_free(&c);
	r = load_text("filter:\n  reject: lots\n", &c, path, sizeof(path), err, sizeof(err));
	if (r != -EINVAL || strstr(err, ":2: filter.reject: expected a number") == NULL)
		FAILF("got %d \"%s\", want filter.reject: expected a number", r, err);
	ctl_config_free(&c);
	r = load_text("filter:\n  attachments: {scores: {bad name: 1}}\n", &c, path, sizeof(path),
	              err, sizeof(err));
	if (r != -EINVAL || strstr(err, "expected a rule name") == NULL)
		FAILF("got %d \"%s\", want a rule name error", r, err);
	ctl_config_free(&c);
}

/* antivirus: defaults (off), every key, ranges, the database check. */
static void test_antivirus_keys(void **state)
{
	char path[PATH_MAX], err[512], want[PATH_MAX + 512];
	struct ctl_config c;

	ctl_config_defaults(&c);
	assert_false(c.av_enabled);
	assert_string_equal(c.av_database, "/var/lib/clamav");
	assert_int_equal(c.av_threads, 1);
	assert_int_equal(c.av_timeout_ms, 30000);
	assert_int_equal(c.av_queue_max, 256);
	assert_int_equal(c.av_max_scan_bytes, 25ull << 20);
	ctl_config_free(&c);

	int r = load_text("antivirus:\n  enabled: yes\n  database: /srv/clamav\n  threads: 4\n"
	                  "  timeout: 1500ms\n  queue_max: 10\n  max_scan_bytes: 100m\n",
	                  &c, path, sizeof(path), err, sizeof(err));
	if (r != 0)
		FAILF("got %d (%s), want 0", r, err);
	assert_true(c.av_enabled);
	assert_string_equal(c.av_database, "/srv/clamav");
	assert_int_equal(c.av_threads, 4);
	assert_int_equal(c.av_timeout_ms, 1500);
	assert_int_equal(c.av_queue_max, 10);
	assert_int_equal(c.av_max_scan_bytes, 100ull << 20);
	assert_int_equal(ctl_config_key_line(&c, "antivirus.max_scan_bytes"), 7);
	ctl_config_free(&c);

	static const struct bad av_bad[] = {
		{ "antivirus:\n  threads: 0\n", 2, "antivirus.threads: 0 is out of range 1..64" },
		{ "antivirus:\n  enabled: maybe\n", 2,
		  "antivirus.enabled: expected a boolean (true/false, yes/no, on/off), got 'maybe'" },
		{ "antivirus: {enabled: true, database: \"\"}\n", 1,
		  "antivirus.database: must be set with antivirus.enabled (the signature directory, "
		  "e.g. /var/lib/clamav)" },
	};
	for (size_t i = 0; i < sizeof(av_bad) / sizeof(av_bad[0]); i++) {
		r = load_text(av_bad[i].text, &c, path, sizeof(path), err, sizeof(err));
		snprintf(want, sizeof(want), "%s:%u: %s", path, av_bad[i].line, av_bad[i].reason);
		if (r != -EINVAL || strcmp(err, want) != 0)
			FAILF("case %zu: got %d \"%s\", want -EINVAL \"%s\"", i, r, err, want);
		ctl_config_free(&c);
	}
	r = load_text("antivirus:\n  max_scan_bytes: 129m\n", &c, path, sizeof(path), err, sizeof(err));
	if (r != -EINVAL || strstr(err, "antivirus.max_scan_bytes") == NULL)
		FAILF("max_scan_bytes 129m: got %d \"%s\", want -EINVAL naming the key", r, err);
	ctl_config_free(&c);

	/* --check: the database must exist when enabled, not when disabled */
	want_check("antivirus:\n  enabled: true\n  database: @T\n", 0, NULL);
	want_check("antivirus:\n  enabled: false\n  database: @T/no-such-db\n", 0, NULL);
	want_check("antivirus:\n  enabled: true\n  database: @T/no-such-db\n", 3,
	           "antivirus.database: cannot access @T/no-such-db: No such file or directory");

	/* etc/sluice.conf lists the section, off, with the defaults */
	if (!find_src("etc/sluice.conf", path, sizeof(path)))
		FAILF("etc/sluice.conf: not found (set SLUICE_SRCDIR to the source tree)");
	r = ctl_config_load(path, &c, err, sizeof(err));
	if (r != 0)
		FAILF("%s: got %d (%s), want 0", path, r, err);
	static const char *const keys[] = { "antivirus.enabled", "antivirus.database",
	                                    "antivirus.threads", "antivirus.timeout",
	                                    "antivirus.queue_max", "antivirus.max_scan_bytes" };
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (ctl_config_key_line(&c, keys[i]) == 0)
			FAILF("etc/sluice.conf: %s: got no line, want the key present", keys[i]);
	assert_false(c.av_enabled);
	assert_string_equal(c.av_database, "/var/lib/clamav");
	assert_int_equal(c.av_timeout_ms, 30000);
	assert_int_equal(c.av_queue_max, 256);
	assert_int_equal(c.av_max_scan_bytes, 25ull << 20);
	ctl_config_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_every_key),
		cmocka_unit_test(test_spellings),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_load_buffer),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_addr),
		cmocka_unit_test(test_sluice_conf),
		cmocka_unit_test(test_lmtp_keys),
		cmocka_unit_test(test_check_files),
		cmocka_unit_test(test_antivirus_keys),
		cmocka_unit_test(test_filter_keys),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
