/*
 * config.c - sluiced configuration; the contract is in config.h, the
 * reference of every key in docs/CONFIG.md.
 *
 * The file is loaded with libyaml's document API so that every node keeps
 * its line. The schema is one table of dotted keys; a mapping is walked
 * against it with the dotted prefix of where it sits, so unknown keys,
 * duplicates and misplaced sections are found the same way at every depth.
 * The first error stops the load: one clear message beats a cascade.
 */
#include "control/config.h"
#include "control/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yaml.h>

#include "control/lmtp.h"

#define CFG_FILE_MAX (1u << 20)
#define CFG_DEPTH_MAX 32        /* collections nested deeper: refused */
#define CFG_SHOW_MAX 40          /* bytes of a bad value quoted in a message */
#define CFG_SUGGEST_LEN 64       /* keys longer than this get no suggestion */

#define MS_S  1000ull
#define MS_M  (60 * MS_S)
#define MS_H  (60 * MS_M)
#define MS_D  (24 * MS_H)

enum kt {
	KT_SECTION,      /* a mapping of further keys */
	KT_LISTEN,       /* the listen list */
	KT_HOSTNAME,     /* char *, a domain or an address literal */
	KT_TEXT,         /* char *, printable text (banner) */
	KT_PATH,         /* char *, "" stores NULL */
	KT_U32,          /* uint32_t / unsigned */
	KT_SIZE,         /* uint64_t bytes */
	KT_DUR_MS,       /* uint64_t ms */
	KT_DUR_US32,     /* uint32_t us */
	KT_BOOL,
	KT_ENUM,         /* int-sized enum, value = index in names */
	KT_BACKEND,      /* char *, an LMTP target: "unix:/path" or address */
	KT_ROUTES,       /* the lmtp.routes mapping: domain -> backend */
	KT_SCORE,        /* double, a rule score or threshold, min..max */
	KT_PATHS,        /* filter.rules: one path or a list of them */
	KT_SCORES,       /* filter.attachments.scores: RULE -> score */
	KT_IPV4,         /* uint32_t, host byte order, "a.b.c.d" */
	KT_IPV4_NET,     /* struct ctl_ipv4_net, "a.b.c.d/len" */
	KT_IPV6_NET,     /* struct ctl_ipv6_net, "x:y::z/len" */
	KT_RBL_ZONES,    /* the rbl.zones mapping: zone[=code] -> weight */
};

struct key {
	const char *name;            /* dotted */
	enum kt type;
	size_t off;
	uint64_t min, max;           /* inclusive, in the field's unit */
	const char *const *names;    /* KT_ENUM, NULL-terminated */
	const char *why;             /* appended to a range error */
};

static const char *const transport_names[] = { "kernel", "dpdk", NULL };
static const char *const delivery_names[] = { "maildir", "discard", "lmtp", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const exception_names[] = { "drop", "tap", NULL };
static const char *const on_error_names[] = { "accept", "tempfail", NULL };
static const char *const early_names[] = { "accept", "reject", NULL };

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "workers is stored as a uint32_t");
_Static_assert(sizeof(enum ctl_transport) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum ctl_delivery_method) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum ctl_log_level) == sizeof(int), "enums are stored as int");
_Static_assert(CTL_DELIVER_MAILDIR == 0 && CTL_DELIVER_DISCARD == 1 && CTL_DELIVER_LMTP == 2,
               "delivery_names order");
_Static_assert(CTL_TRANSPORT_KERNEL == 0 && CTL_TRANSPORT_DPDK == 1, "transport_names order");
_Static_assert(CTL_LOG_ERR == 0 && CTL_LOG_DEBUG == 3, "level_names order");

#define OFF(f) offsetof(struct ctl_config, f)

static const struct key keys[] = {
	{ "server", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "server.hostname", KT_HOSTNAME, OFF(hostname), 0, 0, NULL, NULL },
	{ "server.workers", KT_U32, OFF(workers), 1, 64, NULL, NULL },
	{ "server.transport", KT_ENUM, OFF(transport), 0, 0, transport_names, NULL },
	{ "listen", KT_LISTEN, 0, 0, 0, NULL, NULL },
	{ "smtp", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "smtp.banner", KT_TEXT, OFF(banner), 0, 0, NULL, NULL },
	{ "smtp.command_line_max", KT_U32, OFF(cmd_line_max), 512, 65536, NULL,
	  "RFC 5321 4.5.3.1.4 sets 512" },
	{ "smtp.text_line_max", KT_U32, OFF(text_line_max), 1000, 1000000, NULL,
	  "RFC 5321 4.5.3.1.6 sets 1000" },
	{ "smtp.message_size_max", KT_SIZE, OFF(message_size_max), 1024, 1ull << 40, NULL, NULL },
	{ "smtp.recipients_max", KT_U32, OFF(rcpt_max), 1, 100000, NULL, NULL },
	{ "smtp.errors_max", KT_U32, OFF(errors_max), 1, 10000, NULL, NULL },
	{ "smtp.junk_max", KT_U32, OFF(junk_max), 0, 1000000, NULL, NULL },
	{ "smtp.connections_max", KT_U32, OFF(connections_max), 1, 10000000, NULL, NULL },
	{ "smtp.greet_pause", KT_DUR_MS, OFF(greet_pause_ms), 0, 5 * MS_M - 1, NULL,
	  "clients wait 5m for the greeting, RFC 5321 4.5.3.2.1" },
	{ "smtp.early_talker", KT_ENUM, OFF(early_talker), 0, 0, early_names, NULL },
	{ "smtp.tarpit_interval", KT_DUR_MS, OFF(tarpit_interval_ms), 100, 5 * MS_M, NULL, NULL },
	{ "smtp.timeouts", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "smtp.timeouts.command", KT_DUR_MS, OFF(timeout_command_ms), 1, MS_D, NULL, NULL },
	{ "smtp.timeouts.data", KT_DUR_MS, OFF(timeout_data_ms), 1, MS_D, NULL, NULL },
	{ "smtp.timeouts.tls_handshake", KT_DUR_MS, OFF(timeout_tls_ms), 1, MS_D, NULL, NULL },
	{ "tls", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "tls.certificate", KT_PATH, OFF(tls_cert), 0, 0, NULL, NULL },
	{ "tls.key", KT_PATH, OFF(tls_key), 0, 0, NULL, NULL },
	{ "spool", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "spool.directory", KT_PATH, OFF(spool_dir), 0, 0, NULL, NULL },
	{ "spool.segment_size", KT_SIZE, OFF(spool_segment_max), 64ull << 10, 64ull << 30, NULL, NULL },
	{ "spool.commit_delay", KT_DUR_US32, OFF(spool_commit_delay_us), 0, 1000000, NULL, NULL },
	{ "spool.commit_batch", KT_U32, OFF(spool_commit_batch_max), 1, 1000000, NULL, NULL },
	{ "spool.sync", KT_BOOL, OFF(spool_sync), 0, 0, NULL, NULL },
	{ "spool.limit", KT_SIZE, OFF(spool_limit), 0, 1ull << 50, NULL, NULL },
	{ "delivery", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "delivery.method", KT_ENUM, OFF(delivery), 0, 0, delivery_names, NULL },
	{ "delivery.maildir", KT_PATH, OFF(maildir), 0, 0, NULL, NULL },
	{ "delivery.retry_min", KT_DUR_MS, OFF(retry_min_ms), MS_S, MS_D, NULL, NULL },
	{ "delivery.retry_max", KT_DUR_MS, OFF(retry_max_ms), MS_S, 30 * MS_D, NULL, NULL },
	{ "delivery.max_age", KT_DUR_MS, OFF(max_age_ms), MS_M, 365 * MS_D, NULL, NULL },
	{ "delivery.bounce_return_max", KT_SIZE, OFF(bounce_return_max), 1024, 1ull << 30, NULL, NULL },
	{ "lmtp", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "lmtp.default", KT_BACKEND, OFF(lmtp_default), 0, 0, NULL, NULL },
	{ "lmtp.routes", KT_ROUTES, 0, 0, 0, NULL, NULL },
	{ "lmtp.timeout", KT_DUR_MS, OFF(lmtp_timeout_ms), MS_S, MS_H, NULL, NULL },
	{ "antivirus", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "antivirus.enabled", KT_BOOL, OFF(av_enabled), 0, 0, NULL, NULL },
	{ "antivirus.database", KT_PATH, OFF(av_database), 0, 0, NULL, NULL },
	{ "antivirus.threads", KT_U32, OFF(av_threads), 1, 64, NULL, NULL },
	{ "antivirus.timeout", KT_DUR_MS, OFF(av_timeout_ms), 1, MS_H, NULL, NULL },
	{ "antivirus.queue_max", KT_U32, OFF(av_queue_max), 1, 1000000, NULL, NULL },
	{ "antivirus.max_scan_bytes", KT_SIZE, OFF(av_max_scan_bytes), 1024, 128ull << 20, NULL,
	  "the per-message scan buffer" },
	{ "filter", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "filter.enabled", KT_BOOL, OFF(filter_enabled), 0, 0, NULL, NULL },
	{ "filter.rules", KT_PATHS, 0, 0, 0, NULL, NULL },
	{ "filter.cache", KT_PATH, OFF(filter_cache), 0, 0, NULL, NULL },
	{ "filter.policy", KT_TEXT, OFF(filter_policy), 0, 0, NULL, NULL },
	{ "filter.tag", KT_SCORE, OFF(filter_tag), 0, 1000000, NULL, NULL },
	{ "filter.subject_lower", KT_SCORE, OFF(filter_subject_lower), 0, 1000000, NULL, NULL },
	{ "filter.subject_upper", KT_SCORE, OFF(filter_subject_upper), 0, 1000000, NULL, NULL },
	{ "filter.quarantine", KT_SCORE, OFF(filter_quarantine), 0, 1000000, NULL, NULL },
	{ "filter.reject", KT_SCORE, OFF(filter_reject), 0, 1000000, NULL, NULL },
	{ "filter.tempfail", KT_SCORE, OFF(filter_tempfail), 0, 1000000, NULL, NULL },
	{ "filter.slots", KT_U32, OFF(filter_slots), 1, 100000, NULL, NULL },
	{ "filter.shed_percent", KT_SCORE, OFF(filter_shed_pct), 0, 5, NULL, NULL },
	{ "filter.ascii_share", KT_SCORE, OFF(filter_ascii_share), 0, 1, NULL, NULL },
	{ "filter.attachments", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "filter.attachments.enabled", KT_BOOL, OFF(filter_attach_enabled), 0, 0, NULL, NULL },
	{ "filter.attachments.extensions", KT_TEXT, OFF(filter_attach_ext), 0, 0, NULL, NULL },
	{ "filter.attachments.scores", KT_SCORES, 0, 0, 0, NULL, NULL },
	{ "rbl", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "rbl.enabled", KT_BOOL, OFF(rbl_enabled), 0, 0, NULL, NULL },
	{ "rbl.zones", KT_RBL_ZONES, 0, 0, 0, NULL, NULL },
	{ "rbl.threshold", KT_SCORE, OFF(rbl_threshold), 0, 1000000, NULL, NULL },
	{ "rbl.servers", KT_TEXT, OFF(rbl_servers), 0, 0, NULL, NULL },
	{ "rbl.timeout", KT_DUR_MS, OFF(rbl_timeout_ms), 100, MS_M, NULL, NULL },
	{ "rbl.cache_ttl", KT_DUR_MS, OFF(rbl_cache_ttl_ms), 0, MS_D, NULL, NULL },
	{ "rbl.negative_ttl", KT_DUR_MS, OFF(rbl_negative_ttl_ms), 0, MS_D, NULL, NULL },
	{ "rbl.cache_max", KT_U32, OFF(rbl_cache_max), 0, 100000000, NULL, NULL },
	{ "rbl.skip", KT_TEXT, OFF(rbl_skip_text), 0, 0, NULL, NULL },
	{ "rbl.tarpit", KT_DUR_MS, OFF(rbl_tarpit_ms), 0, MS_H, NULL, NULL },
	{ "dpdk", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "dpdk.eal", KT_TEXT, OFF(dpdk_eal), 0, 0, NULL, NULL },
	{ "dpdk.port", KT_U32, OFF(dpdk_port), 0, 1023, NULL, NULL },
	{ "dpdk.address", KT_IPV4_NET, OFF(dpdk_address), 0, 0, NULL, NULL },
	{ "dpdk.gateway", KT_IPV4, OFF(dpdk_gateway), 0, 0, NULL, NULL },
	{ "dpdk.address6", KT_IPV6_NET, OFF(dpdk_address6), 0, 0, NULL, NULL },
	{ "dpdk.checksum_offload", KT_BOOL, OFF(dpdk_csum_offload), 0, 0, NULL, NULL },
	{ "dpdk.connections_max", KT_U32, OFF(dpdk_conn_max), 0, 16000000, NULL, NULL },
	{ "dpdk.buffer_size", KT_SIZE, OFF(dpdk_buffer_size), 2048, 1ull << 30, NULL, NULL },
	{ "dpdk.buffers", KT_U32, OFF(dpdk_buffers), 0, 16000000, NULL, NULL },
	{ "dpdk.time_wait", KT_DUR_MS, OFF(dpdk_time_wait_ms), 100, 4 * MS_M, NULL, NULL },
	{ "dpdk.mbufs", KT_U32, OFF(dpdk_mbufs), 0, 16000000, NULL, NULL },
	{ "dpdk.dispatch_ring", KT_U32, OFF(dpdk_ring), 0, 1u << 20, NULL, NULL },
	{ "dpdk.queues", KT_U32, OFF(dpdk_queues), 0, 1024, NULL, NULL },
	{ "dpdk.software_dispatch", KT_BOOL, OFF(dpdk_software_dispatch), 0, 0, NULL, NULL },
	{ "dpdk.exception", KT_ENUM, OFF(dpdk_exception), 0, 0, exception_names, NULL },
	{ "dpdk.exception_iface", KT_TEXT, OFF(dpdk_exception_iface), 0, 0, NULL, NULL },
	{ "limits", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "limits.connections_per_client", KT_U32, OFF(lim_conns_per_client), 0, 1000000, NULL, NULL },
	{ "limits.messages_per_minute", KT_U32, OFF(lim_msgs_per_minute), 0, 100000000, NULL, NULL },
	{ "limits.skip", KT_TEXT, OFF(lim_skip_text), 0, 0, NULL, NULL },
	{ "access", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "access.senders_deny", KT_TEXT, OFF(acc_text[0]), 0, 0, NULL, NULL },
	{ "access.senders_allow", KT_TEXT, OFF(acc_text[1]), 0, 0, NULL, NULL },
	{ "access.recipients_deny", KT_TEXT, OFF(acc_text[2]), 0, 0, NULL, NULL },
	{ "access.recipients_allow", KT_TEXT, OFF(acc_text[3]), 0, 0, NULL, NULL },
	{ "recipients", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "recipients.domains", KT_TEXT, OFF(rcpt_domains_text), 0, 0, NULL, NULL },
	{ "recipients.verify", KT_BOOL, OFF(rcpt_verify), 0, 0, NULL, NULL },
	{ "recipients.verify_timeout", KT_DUR_MS, OFF(rcpt_verify_timeout_ms), 100, MS_M, NULL, NULL },
	{ "recipients.verify_ttl", KT_DUR_MS, OFF(rcpt_verify_ttl_ms), 0, 30 * MS_D, NULL, NULL },
	{ "recipients.verify_negative_ttl", KT_DUR_MS, OFF(rcpt_verify_negative_ttl_ms), 0, MS_D, NULL,
	  NULL },
	{ "greylist", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "greylist.enabled", KT_BOOL, OFF(gl_enabled), 0, 0, NULL, NULL },
	{ "greylist.redis", KT_TEXT, OFF(gl_redis), 0, 0, NULL, NULL },
	{ "greylist.prefix", KT_TEXT, OFF(gl_prefix), 0, 0, NULL, NULL },
	{ "greylist.timeout", KT_DUR_MS, OFF(gl_timeout_ms), 10, 10 * MS_S, NULL, NULL },
	{ "greylist.delay", KT_DUR_MS, OFF(gl_delay_ms), MS_S, MS_D, NULL, NULL },
	{ "greylist.retry_window", KT_DUR_MS, OFF(gl_retry_window_ms), MS_M, 30 * MS_D, NULL, NULL },
	{ "greylist.pass_ttl", KT_DUR_MS, OFF(gl_pass_ttl_ms), MS_M, 365 * MS_D, NULL, NULL },
	{ "greylist.ipv4_prefix", KT_U32, OFF(gl_ipv4_prefix), 8, 32, NULL, NULL },
	{ "greylist.ipv6_prefix", KT_U32, OFF(gl_ipv6_prefix), 16, 128, NULL, NULL },
	{ "greylist.cache_ttl", KT_DUR_MS, OFF(gl_cache_ttl_ms), 0, MS_D, NULL, NULL },
	{ "greylist.on_error", KT_ENUM, OFF(gl_on_error), 0, 0, on_error_names, NULL },
	{ "greylist.skip", KT_TEXT, OFF(gl_skip_text), 0, 0, NULL, NULL },
	{ "admin", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "admin.socket", KT_PATH, OFF(admin_socket), 0, 0, NULL, NULL },
	{ "admin.http", KT_TEXT, OFF(admin_http), 0, 0, NULL, NULL },
	{ "log", KT_SECTION, 0, 0, 0, NULL, NULL },
	{ "log.level", KT_ENUM, OFF(log_level), 0, 0, level_names, NULL },
	{ "log.file", KT_PATH, OFF(log_file), 0, 0, NULL, NULL },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(NKEYS <= CTL_CONFIG_KEYS_MAX, "raise CTL_CONFIG_KEYS_MAX");

/* ---------------------------------------------------------------------- */
/* Value parsers                                                           */

/* Decimal digits into *v with overflow check; returns the end. */
static const char *parse_u64(const char *s, uint64_t *v, bool *ok)
{
	uint64_t x = 0;
	const char *p = s;

	*ok = false;
	while (*p >= '0' && *p <= '9') {
		unsigned d = (unsigned)(*p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return p;
		x = x * 10 + d;
		p++;
	}
	if (p == s)
		return p;
	*v = x;
	*ok = true;
	return p;
}

/* -ERANGE on overflow, so that the loader can tell "too big" from "what?". */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
	if (b != 0 && a > UINT64_MAX / b)
		return -ERANGE;
	*out = a * b;
	return 0;
}

/* The digits of a number; -ERANGE if they overflow, -EINVAL if none. */
static const char *number(const char *s, uint64_t *v, int *r)
{
	bool ok;
	const char *p = parse_u64(s, v, &ok);

	*r = 0;
	if (!ok) {
		*r = p == s ? -EINVAL : -ERANGE;
		if (*r == -ERANGE)
			while (*p >= '0' && *p <= '9')
				p++;
	}
	return p;
}

static int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	int r;

	if (!s)
		return -EINVAL;
	const char *p = number(s, &v, &r);
	if (r == -EINVAL)
		return r;
	const char *digits_end = p;
	while (*p == ' ')
		p++;
	if (*p == '\0' && p != digits_end)
		return -EINVAL; /* trailing blanks */
	switch (*p) {
	case 'k': case 'K': mul = 1ull << 10; p++; break;
	case 'm': case 'M': mul = 1ull << 20; p++; break;
	case 'g': case 'G': mul = 1ull << 30; p++; break;
	default: break;
	}
	if (*p == 'b' || *p == 'B')
		p++;
	if (*p != '\0')
		return -EINVAL;
	return r < 0 ? r : mul_ok(v, mul, out);
}

int ctl_parse_size(const char *s, uint64_t *out)
{
	return parse_size(s, out) < 0 ? -EINVAL : 0;
}

static int parse_duration_us(const char *s, uint64_t *out)
{
	static const struct { const char *unit; uint64_t us; } units[] = {
		{ "us", 1 }, { "ms", 1000 }, { "s", 1000000 }, { "m", 60000000 },
		{ "h", 3600000000ull }, { "d", 86400000000ull },
	};
	uint64_t v, mul = 1000000; /* bare number: seconds */
	int r;

	if (!s)
		return -EINVAL;
	const char *p = number(s, &v, &r);
	if (r == -EINVAL)
		return r;
	const char *digits_end = p;
	while (*p == ' ')
		p++;
	if (*p == '\0' && p != digits_end)
		return -EINVAL; /* trailing blanks */
	if (*p != '\0') {
		size_t i;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strcasecmp(p, units[i].unit) == 0)
				break;
		if (i == sizeof(units) / sizeof(units[0]))
			return -EINVAL;
		mul = units[i].us;
	}
	return r < 0 ? r : mul_ok(v, mul, out);
}

int ctl_parse_duration_us(const char *s, uint64_t *out)
{
	return parse_duration_us(s, out) < 0 ? -EINVAL : 0;
}

int ctl_parse_duration_ms(const char *s, uint64_t *out)
{
	uint64_t us;
	int r = ctl_parse_duration_us(s, &us);

	if (r < 0)
		return r;
	if (us % 1000 != 0)
		return -EINVAL; /* finer than the field can hold */
	*out = us / 1000;
	return 0;
}

static int parse_port(const char *s, uint16_t *port)
{
	uint64_t v;
	bool ok;
	const char *end = parse_u64(s, &v, &ok);

	if (!ok || *end != '\0' || end - s > 5 || v == 0 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int ctl_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	const char *colon, *port_s;
	uint16_t port;

	if (!s)
		return -EINVAL;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		size_t hl = (size_t)(close - s - 1);
		if (hl == 0 || hl >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		port_s = close + 2;
		if (parse_port(port_s, &port) < 0)
			return -EINVAL;

		struct sockaddr_in6 sin6;
		memset(&sin6, 0, sizeof(sin6));
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons(port);
		char *pct = strchr(host, '%');
		if (pct) { /* zone: an interface name or index (RFC 4007 11.2) */
			uint64_t idx;
			bool ok;
			*pct++ = '\0';
			const char *end = parse_u64(pct, &idx, &ok);
			if (ok && *end == '\0' && idx <= UINT32_MAX)
				sin6.sin6_scope_id = (uint32_t)idx;
			else if (*pct)
				sin6.sin6_scope_id = if_nametoindex(pct);
			if (sin6.sin6_scope_id == 0)
				return -EINVAL;
		}
		if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1)
			return -EINVAL;
		memset(ss, 0, sizeof(*ss));
		memcpy(ss, &sin6, sizeof(sin6));
		*len = sizeof(sin6);
		return 0;
	}
	colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host) || colon == s)
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	if (parse_port(colon + 1, &port) < 0)
		return -EINVAL;

	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin, sizeof(sin));
	*len = sizeof(sin);
	return 0;
}

/* A whole decimal number (strtod's syntax), finite and in range of a
 * double: 0 or -EINVAL. */
static int parse_number(const char *s, double *out)
{
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || d != d)
		return -EINVAL;
	*out = d;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on" };
	static const char *const no[] = { "false", "no", "off" };

	for (size_t i = 0; i < 3; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* RFC 1035 / 5321 4.1.2 Domain: labels of letters, digits and inner hyphens;
 * or an address literal. It lands in the banner and EHLO reply verbatim. */
static bool valid_hostname(const char *s)
{
	size_t n = strlen(s), label = 0;

	if (n == 0 || n > 253)
		return false;
	if (s[0] == '[') {
		char buf[INET6_ADDRSTRLEN + 6];
		unsigned char a[16];
		if (s[n - 1] != ']' || n - 2 >= sizeof(buf))
			return false;
		memcpy(buf, s + 1, n - 2);
		buf[n - 2] = '\0';
		if (strncasecmp(buf, "IPv6:", 5) == 0)
			return inet_pton(AF_INET6, buf + 5, a) == 1;
		return inet_pton(AF_INET, buf, a) == 1;
	}
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		             (ch >= '0' && ch <= '9');
		if (!alnum && (ch != '-' || label == 0))
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && s[n - 1] != '-';
}

/* ---------------------------------------------------------------------- */
/* Defaults, free, lines                                                   */

void ctl_config_defaults(struct ctl_config *c)
{
	char host[256];

	memset(c, 0, sizeof(*c));
	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	c->hostname = strdup(host);
	c->workers = 1;
	c->transport = CTL_TRANSPORT_KERNEL;
	c->nlisten = 1;
	ctl_parse_addr("127.0.0.1:2525", &c->listen[0].addr, &c->listen[0].addrlen);
	c->listen[0].text = strdup("127.0.0.1:2525");
	c->banner = strdup("ESMTP sluice");
	c->cmd_line_max = 1024;
	c->text_line_max = 1000;
	c->message_size_max = 50ull << 20;
	c->rcpt_max = 100;
	c->errors_max = 10;
	c->junk_max = 100;
	c->connections_max = 10000;
	c->dpdk_buffer_size = 65536;
	c->dpdk_time_wait_ms = 2000;
	c->dpdk_csum_offload = true;
	c->greet_pause_ms = 0;
	c->timeout_command_ms = 5 * MS_M;
	c->timeout_data_ms = 3 * MS_M;
	c->timeout_tls_ms = 1 * MS_M;
	c->spool_dir = strdup("var/spool");
	c->spool_segment_max = 64ull << 20;
	c->spool_commit_delay_us = 0;
	c->spool_commit_batch_max = 1024;
	c->spool_sync = true;
	c->delivery = CTL_DELIVER_MAILDIR;
	c->maildir = strdup("var/Maildir");
	c->retry_min_ms = 1 * MS_M;
	c->retry_max_ms = 1 * MS_H;
	c->max_age_ms = 7 * MS_D;
	c->bounce_return_max = 256ull << 10;
	c->spool_limit = 0;
	c->lmtp_default = NULL;
	c->lmtp_timeout_ms = 5 * MS_M;
	c->av_enabled = false;
	c->av_database = strdup("/var/lib/clamav");
	c->av_threads = 1;
	c->av_timeout_ms = 30 * MS_S;
	c->av_queue_max = 256;
	c->av_max_scan_bytes = 25ull << 20;
	c->filter_enabled = false;
	c->filter_rules[0] = strdup("/usr/share/spamassassin");
	c->filter_nrules = c->filter_rules[0] ? 1 : 0;
	c->filter_cache = strdup("var/scan.cache");
	c->rbl_threshold = 1.0;
	c->rbl_timeout_ms = 5 * MS_S;
	c->rbl_cache_ttl_ms = MS_H;
	c->rbl_negative_ttl_ms = 10 * MS_M;
	c->rbl_cache_max = 100000;
	c->tarpit_interval_ms = 10 * MS_S;
	c->rcpt_verify_timeout_ms = 10 * MS_S;
	c->rcpt_verify_ttl_ms = MS_H;
	c->rcpt_verify_negative_ttl_ms = 10 * MS_M;
	c->gl_redis = strdup("127.0.0.1:6379");
	c->gl_prefix = strdup("sluice:gl:");
	c->gl_timeout_ms = MS_S;
	c->gl_delay_ms = 5 * MS_M;
	c->gl_retry_window_ms = MS_D;
	c->gl_pass_ttl_ms = 35 * MS_D;
	c->gl_ipv4_prefix = 24;
	c->gl_cache_ttl_ms = 10 * MS_M;
	c->gl_ipv6_prefix = 64;
	c->filter_tag = 5.0;
	c->filter_subject_lower = 5.0;
	c->filter_subject_upper = 10.0;
	c->filter_reject = 15.0;
	c->filter_slots = 256;
	c->filter_attach_enabled = true;
	c->log_level = CTL_LOG_INFO;
	c->log_file = NULL;
}

void ctl_config_free(struct ctl_config *c)
{
	if (!c)
		return;
	free(c->path);
	free(c->hostname);
	for (unsigned i = 0; i < c->nlisten && i < CTL_LISTEN_MAX; i++)
		free(c->listen[i].text);
	free(c->banner);
	free(c->tls_cert);
	free(c->tls_key);
	free(c->spool_dir);
	free(c->maildir);
	free(c->log_file);
	free(c->lmtp_default);
	free(c->av_database);
	for (unsigned i = 0; i < c->filter_nrules && i < CTL_FILTER_PATHS_MAX; i++)
		free(c->filter_rules[i]);
	free(c->filter_cache);
	for (unsigned i = 0; i < c->rbl_nzones; i++)
		free(c->rbl_zones[i].zone);
	free(c->rbl_servers);
	free(c->lim_skip_text);
	for (unsigned k = 0; k < 4; k++) {
		free(c->acc_text[k]);
		for (unsigned i = 0; i < c->nacc[k]; i++)
			free(c->acc[k][i]);
		free(c->acc[k]);
	}
	free(c->rcpt_domains_text);
	for (unsigned i = 0; i < c->rcpt_ndomains; i++)
		free(c->rcpt_domains[i]);
	free(c->rcpt_domains);
	free(c->gl_redis);
	free(c->gl_prefix);
	free(c->gl_skip_text);
	free(c->admin_socket);
	free(c->admin_http);
	free(c->rbl_skip_text);
	free(c->filter_policy);
	free(c->filter_attach_ext);
	free(c->dpdk_eal);
	free(c->dpdk_exception_iface);
	for (unsigned i = 0; i < c->filter_attach_nscores && i < CTL_FILTER_SCORES_MAX; i++)
		free(c->filter_attach_score_name[i]);
	for (unsigned i = 0; i < c->nroutes; i++) {
		free(c->routes[i].domain);
		free(c->routes[i].backend);
	}
	free(c->routes);
	memset(c, 0, sizeof(*c));
}

static int key_index(const char *name, size_t len)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
			return (int)i;
	return -1;
}

unsigned ctl_config_key_line(const struct ctl_config *c, const char *key)
{
	int i = key ? key_index(key, strlen(key)) : -1;
	return i < 0 ? 0 : c->key_line[i];
}

/* ---------------------------------------------------------------------- */
/* Loading                                                                 */

struct ld {
	const char *name;
	yaml_document_t *doc;
	struct ctl_config *c;
	char *err;
	size_t errlen;
};

static unsigned node_line(const yaml_node_t *n)
{
	return n ? (unsigned)n->start_mark.line + 1 : 0;
}

static int errf(char *err, size_t errlen, const char *name, unsigned line,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int errf(char *err, size_t errlen, const char *name, unsigned line,
                const char *fmt, ...)
{
	va_list ap;
	int k;

	if (!err || errlen == 0)
		return -EINVAL;
	if (line)
		k = snprintf(err, errlen, "%s:%u: ", name, line);
	else
		k = snprintf(err, errlen, "%s: ", name);
	if (k < 0 || (size_t)k >= errlen)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

#define FAIL(ld, node, ...) errf((ld)->err, (ld)->errlen, (ld)->name, node_line(node), __VA_ARGS__)

/* A bad value, quoted for a message: printable ASCII, cut at CFG_SHOW_MAX. */
static const char *show(const yaml_node_t *n, char *buf, size_t cap)
{
	size_t o = 0, len = n->data.scalar.length;
	const unsigned char *v = n->data.scalar.value;

	for (size_t i = 0; i < len && o + 5 < cap; i++) {
		if (i == CFG_SHOW_MAX) {
			o += (size_t)snprintf(buf + o, cap - o, "...");
			break;
		}
		if (v[i] >= 0x20 && v[i] < 0x7f && v[i] != '\\')
			buf[o++] = (char)v[i];
		else
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", v[i]);
	}
	buf[o] = '\0';
	return buf;
}

static const char *kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE: return "a scalar";
	case YAML_SEQUENCE_NODE: return "a list";
	case YAML_MAPPING_NODE: return "a mapping";
	default: return "nothing";
	}
}

/* A plain empty, "~" or "null" scalar: the key is present with no value. */
static bool is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *v = (const char *)n->data.scalar.value;
	return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
	       strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* The scalar's text, refusing embedded NULs ("\0" escapes) and non-scalars. */
static int scalar(struct ld *ld, const char *key, const yaml_node_t *n, const char **out)
{
	if (n->type != YAML_SCALAR_NODE)
		return FAIL(ld, n, "%s: expected a scalar value, got %s", key, kind(n));
	if (memchr(n->data.scalar.value, '\0', n->data.scalar.length))
		return FAIL(ld, n, "%s: value contains a NUL byte", key);
	*out = (const char *)n->data.scalar.value;
	return 0;
}

static void fmt_dur_ms(uint64_t ms, char *buf, size_t cap)
{
	static const struct { const char *u; uint64_t ms; } u[] = {
		{ "d", MS_D }, { "h", MS_H }, { "m", MS_M }, { "s", MS_S },
	};
	for (size_t i = 0; i < 4; i++)
		if (ms != 0 && ms % u[i].ms == 0) {
			snprintf(buf, cap, "%llu%s", (unsigned long long)(ms / u[i].ms), u[i].u);
			return;
		}
	snprintf(buf, cap, "%llums", (unsigned long long)ms);
}

static void fmt_size(uint64_t b, char *buf, size_t cap)
{
	static const char sfx[] = "gmk";
	for (int i = 0; i < 3; i++) {
		uint64_t unit = 1ull << (10 * (3 - i));
		if (b != 0 && b % unit == 0) {
			snprintf(buf, cap, "%llu%c", (unsigned long long)(b / unit), sfx[i]);
			return;
		}
	}
	snprintf(buf, cap, "%llu", (unsigned long long)b);
}

static int range_err(struct ld *ld, const struct key *k, const yaml_node_t *n)
{
	char lo[32], hi[32], v[CFG_SHOW_MAX * 4 + 8];

	switch (k->type) {
	case KT_SIZE:
		fmt_size(k->min, lo, sizeof(lo));
		fmt_size(k->max, hi, sizeof(hi));
		break;
	case KT_DUR_MS:
		fmt_dur_ms(k->min, lo, sizeof(lo));
		fmt_dur_ms(k->max, hi, sizeof(hi));
		break;
	case KT_DUR_US32:
		snprintf(lo, sizeof(lo), "%lluus", (unsigned long long)k->min);
		fmt_dur_ms(k->max / 1000, hi, sizeof(hi));
		break;
	default:
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)k->min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)k->max);
		break;
	}
	return FAIL(ld, n, "%s: %s is out of range %s..%s%s%s%s", k->name,
	            show(n, v, sizeof(v)), lo, hi,
	            k->why ? " (" : "", k->why ? k->why : "", k->why ? ")" : "");
}

static int set_str(struct ld *ld, char **slot, const char *v)
{
	char *d = NULL;

	if (v) {
		d = strdup(v);
		if (!d) {
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
	}
	free(*slot);
	*slot = d;
	return 0;
}

static int set_leaf(struct ld *ld, const struct key *k, const yaml_node_t *n)
{
	char v[CFG_SHOW_MAX * 4 + 8];
	void *field = (char *)ld->c + k->off;
	const char *s;
	uint64_t x;
	int r;

	if ((r = scalar(ld, k->name, n, &s)) < 0)
		return r;
	if (is_null(n))
		s = ""; /* "key:", "key: ~" */
	switch (k->type) {
	case KT_HOSTNAME:
		if (s[0] == '\0')
			return 0; /* "": the default, gethostname() */
		if (!valid_hostname(s))
			return FAIL(ld, n, "%s: expected a domain name or an address literal, got '%s'",
			            k->name, show(n, v, sizeof(v)));
		return set_str(ld, field, s);
	case KT_TEXT:
		for (const unsigned char *p = (const unsigned char *)s; *p; p++)
			if (*p < 0x20 || *p == 0x7f)
				return FAIL(ld, n, "%s: control characters are not allowed, got '%s'",
				            k->name, show(n, v, sizeof(v)));
		if (strlen(s) > 400)
			return FAIL(ld, n, "%s: longer than 400 characters", k->name);
		return set_str(ld, field, s);
	case KT_BACKEND: {
		struct ctl_lmtp_target t;
		if (s[0] == '\0')
			return set_str(ld, field, NULL);
		if (ctl_lmtp_target_parse(s, &t) < 0)
			return FAIL(ld, n, "%s: expected unix:/path, IPv4:port or [IPv6]:port, got '%s'",
			            k->name, show(n, v, sizeof(v)));
		return set_str(ld, field, s);
	}
	case KT_PATH:
		if (strlen(s) >= PATH_MAX)
			return FAIL(ld, n, "%s: path longer than %d bytes", k->name, PATH_MAX - 1);
		return set_str(ld, field, s[0] ? s : NULL);
	case KT_U32: {
		bool neg = s[0] == '-';
		const char *end = number(s + neg, &x, &r);
		if (r == -EINVAL || *end != '\0')
			return FAIL(ld, n, "%s: expected an integer, got '%s'", k->name, show(n, v, sizeof(v)));
		if (r < 0 || neg || x < k->min || x > k->max)
			return range_err(ld, k, n);
		*(uint32_t *)field = (uint32_t)x;
		return 0;
	}
	case KT_SIZE:
		r = parse_size(s, &x);
		if (r == -EINVAL)
			return FAIL(ld, n, "%s: expected a size (bytes, or a number with k, m or g), got '%s'",
			            k->name, show(n, v, sizeof(v)));
		if (r < 0 || x < k->min || x > k->max)
			return range_err(ld, k, n);
		*(uint64_t *)field = x;
		return 0;
	case KT_DUR_MS:
	case KT_DUR_US32: {
		uint64_t us;
		r = parse_duration_us(s, &us);
		if (r == -EINVAL)
			return FAIL(ld, n, "%s: expected a duration (a number with %sms, s, m, h or d), got '%s'",
			            k->name, k->type == KT_DUR_US32 ? "us, " : "", show(n, v, sizeof(v)));
		if (r < 0)
			return range_err(ld, k, n);
		if (k->type == KT_DUR_US32) {
			if (us < k->min || us > k->max)
				return range_err(ld, k, n);
			*(uint32_t *)field = (uint32_t)us;
			return 0;
		}
		if (us % 1000 != 0)
			return FAIL(ld, n, "%s: '%s' is finer than the millisecond this setting counts in",
			            k->name, show(n, v, sizeof(v)));
		if (us / 1000 < k->min || us / 1000 > k->max)
			return range_err(ld, k, n);
		*(uint64_t *)field = us / 1000;
		return 0;
	}
	case KT_BOOL: {
		bool b;
		if (parse_bool(s, &b) < 0)
			return FAIL(ld, n, "%s: expected a boolean (true/false, yes/no, on/off), got '%s'",
			            k->name, show(n, v, sizeof(v)));
		*(bool *)field = b;
		return 0;
	}
	case KT_SCORE: {
		double d;
		if (parse_number(s, &d) < 0)
			return FAIL(ld, n, "%s: expected a number, got '%s'", k->name,
			            show(n, v, sizeof(v)));
		if (d < (double)k->min || d > (double)k->max)
			return range_err(ld, k, n);
		*(double *)field = d;
		return 0;
	}
	case KT_IPV4:
	case KT_IPV4_NET: {
		char a[INET_ADDRSTRLEN];
		const char *slash = k->type == KT_IPV4_NET ? strchr(s, '/') : NULL;
		size_t alen = slash ? (size_t)(slash - s) : strlen(s);
		struct in_addr in;
		uint64_t len = 32;
		const char *end = "";
		if (slash) {
			end = number(slash + 1, &len, &r);
			if (r < 0)
				len = 0;
		}
		if (alen == 0 && k->type == KT_IPV4 && !slash) {
			*(uint32_t *)field = 0;  /* "": none */
			return 0;
		}
		if (alen >= sizeof(a) || (k->type == KT_IPV4_NET && !slash) || *end != '\0' ||
		    len < 1 || len > 32)
			goto bad_ip;
		memcpy(a, s, alen);
		a[alen] = '\0';
		if (inet_pton(AF_INET, a, &in) != 1)
			goto bad_ip;
		if (k->type == KT_IPV4) {
			*(uint32_t *)field = ntohl(in.s_addr);
		} else {
			struct ctl_ipv4_net *net = field;
			net->addr = ntohl(in.s_addr);
			net->prefix = (uint32_t)len;
		}
		return 0;
bad_ip:
		return FAIL(ld, n, "%s: expected %s, got '%s'", k->name,
		            k->type == KT_IPV4 ? "an IPv4 address (a.b.c.d)" :
		                                 "an IPv4 address with its prefix length (a.b.c.d/24)",
		            show(n, v, sizeof(v)));
	}
	case KT_IPV6_NET: {
		char a[INET6_ADDRSTRLEN];
		const char *slash = strchr(s, '/');
		size_t alen = slash ? (size_t)(slash - s) : strlen(s);
		struct ctl_ipv6_net *net = field;
		struct in6_addr in6;
		uint64_t len = 0;
		static const uint8_t zero[16];
		if (alen == 0 && !slash) {
			memset(net, 0, sizeof(*net));   /* "": none */
			return 0;
		}
		if (slash) {
			const char *end = number(slash + 1, &len, &r);
			if (r < 0 || *end != '\0')
				len = 0;
		}
		if (alen >= sizeof(a) || len < 1 || len > 128)
			goto bad_ip6;
		memcpy(a, s, alen);
		a[alen] = '\0';
		/* a unicast address of our own: not ::, not multicast (ff00::/8) */
		if (inet_pton(AF_INET6, a, &in6) != 1 || memcmp(in6.s6_addr, zero, 16) == 0 ||
		    in6.s6_addr[0] == 0xff)
			goto bad_ip6;
		memcpy(net->addr, in6.s6_addr, 16);
		net->prefix = (uint32_t)len;
		return 0;
bad_ip6:
		return FAIL(ld, n, "%s: expected a unicast IPv6 address with its prefix length "
		            "(2001:db8::25/64), got '%s'", k->name, show(n, v, sizeof(v)));
	}
	case KT_ENUM: {
		char list[128];
		size_t o = 0;
		for (int i = 0; k->names[i]; i++) {
			if (strcmp(s, k->names[i]) == 0) {
				*(int *)field = i;
				return 0;
			}
			o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", k->names[i]);
		}
		return FAIL(ld, n, "%s: expected one of %s, got '%s'", k->name, list, show(n, v, sizeof(v)));
	}
	default:
		return FAIL(ld, n, "%s: internal error: bad key type", k->name);
	}
}

/* Levenshtein distance, for "did you mean"; both strings are short. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[CFG_SUGGEST_LEN + 1];

	if (la > CFG_SUGGEST_LEN || lb > CFG_SUGGEST_LEN)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/* The last component of a dotted name. */
static const char *leaf_name(const char *dotted)
{
	const char *dot = strrchr(dotted, '.');
	return dot ? dot + 1 : dotted;
}

/* Whether keys[i] is a direct child of prefix ("" for the top level). */
static bool is_child(size_t i, const char *prefix, size_t plen)
{
	const char *name = keys[i].name;
	if (plen) {
		if (strncmp(name, prefix, plen) != 0 || name[plen] != '.')
			return false;
		name += plen + 1;
	}
	return strchr(name, '.') == NULL;
}

static int unknown_key(struct ld *ld, const yaml_node_t *kn, const char *prefix,
                       const char *name)
{
	char v[CFG_SHOW_MAX * 4 + 8];
	const char *best = NULL;
	size_t plen = strlen(prefix), bestd = 3; /* suggest at distance <= 2 */

	show(kn, v, sizeof(v));
	for (size_t i = 0; i < NKEYS; i++) {
		if (!is_child(i, prefix, plen))
			continue;
		size_t d = edit_distance(name, leaf_name(keys[i].name));
		if (d < bestd) {
			bestd = d;
			best = keys[i].name;
		}
	}
	if (!best && strchr(name, '.') && plen + 1 + strlen(name) < 128) {
		char full[128];
		snprintf(full, sizeof(full), "%s%s%s", prefix, plen ? "." : "", name);
		if (key_index(full, strlen(full)) >= 0)
			return FAIL(ld, kn, "unknown key '%s': dotted names are not expanded, "
			            "nest the keys instead", full);
	}
	if (!best) /* the right key in the wrong section? */
		for (size_t i = 0; i < NKEYS; i++)
			if (strcmp(leaf_name(keys[i].name), name) == 0 && keys[i].type != KT_SECTION) {
				best = keys[i].name;
				break;
			}
	if (best)
		return FAIL(ld, kn, "unknown key '%s%s%s' (did you mean '%s'?)",
		            prefix, plen ? "." : "", v, best);
	return FAIL(ld, kn, "unknown key '%s%s%s'", prefix, plen ? "." : "", v);
}

static int load_listen(struct ld *ld, const yaml_node_t *n);
static int load_routes(struct ld *ld, const yaml_node_t *n);
static int load_filter_rules(struct ld *ld, const yaml_node_t *n);
static int load_filter_scores(struct ld *ld, const yaml_node_t *n);
static int load_rbl_zones(struct ld *ld, const yaml_node_t *n);
static unsigned cite(const struct ctl_config *c, const char *key);

static int load_mapping(struct ld *ld, const char *prefix, const yaml_node_t *map)
{
	char full[128];
	size_t plen = strlen(prefix);

	if (map->type != YAML_MAPPING_NODE) {
		if (is_null(map))
			return 0; /* "smtp:" with nothing under it */
		if (plen)
			return FAIL(ld, map, "%s: expected a mapping of keys, got %s", prefix, kind(map));
		return FAIL(ld, map, "expected a mapping of sections (server, listen, smtp, ...), got %s",
		            kind(map));
	}
	for (yaml_node_pair_t *pr = map->data.mapping.pairs.start;
	     pr < map->data.mapping.pairs.top; pr++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pr->value);
		int r;

		if (!kn || !vn)
			return FAIL(ld, map, "internal error: dangling node");
		if (kn->type != YAML_SCALAR_NODE)
			return FAIL(ld, kn, "%s%skeys must be plain names, got %s",
			            prefix, plen ? ": " : "", kind(kn));
		const char *name = (const char *)kn->data.scalar.value;
		size_t nlen = kn->data.scalar.length;
		int idx = -1;
		if (!memchr(name, '\0', nlen) && !memchr(name, '.', nlen) &&
		    plen + 1 + nlen < sizeof(full)) {
			snprintf(full, sizeof(full), "%s%s%s", prefix, plen ? "." : "", name);
			idx = key_index(full, strlen(full));
		}
		if (idx < 0)
			return unknown_key(ld, kn, prefix, name);
		const struct key *k = &keys[idx];
		if (ld->c->key_line[idx])
			return FAIL(ld, kn, "duplicate key '%s' (first set on line %u)",
			            k->name, ld->c->key_line[idx]);
		ld->c->key_line[idx] = node_line(kn);
		if (k->type == KT_SECTION)
			r = load_mapping(ld, k->name, vn);
		else if (k->type == KT_LISTEN)
			r = load_listen(ld, vn);
		else if (k->type == KT_ROUTES)
			r = load_routes(ld, vn);
		else if (k->type == KT_PATHS)
			r = load_filter_rules(ld, vn);
		else if (k->type == KT_SCORES)
			r = load_filter_scores(ld, vn);
		else if (k->type == KT_RBL_ZONES)
			r = load_rbl_zones(ld, vn);
		else
			r = set_leaf(ld, k, vn);
		if (r < 0)
			return r;
	}
	return 0;
}

static int load_listen_entry(struct ld *ld, unsigned i, const yaml_node_t *en,
                             struct ctl_listen *l)
{
	char v[CFG_SHOW_MAX * 4 + 8];
	const yaml_node_t *addr = NULL;
	bool seen_proxy = false;
	const char *s;
	int r;

	l->line = node_line(en);
	if (en->type == YAML_SCALAR_NODE) {
		addr = en; /* "- 127.0.0.1:25" shorthand */
	} else if (en->type == YAML_MAPPING_NODE) {
		for (yaml_node_pair_t *pr = en->data.mapping.pairs.start;
		     pr < en->data.mapping.pairs.top; pr++) {
			yaml_node_t *kn = yaml_document_get_node(ld->doc, pr->key);
			yaml_node_t *vn = yaml_document_get_node(ld->doc, pr->value);
			if (!kn || !vn)
				return FAIL(ld, en, "internal error: dangling node");
			const char *name = kn->type == YAML_SCALAR_NODE ?
			                   (const char *)kn->data.scalar.value : "";
			if (kn->type == YAML_SCALAR_NODE && strcmp(name, "address") == 0) {
				if (addr)
					return FAIL(ld, kn, "duplicate key 'listen[%u].address'", i);
				addr = vn;
			} else if (kn->type == YAML_SCALAR_NODE && strcmp(name, "proxy_protocol") == 0) {
				char key[48];
				if (seen_proxy)
					return FAIL(ld, kn, "duplicate key 'listen[%u].proxy_protocol'", i);
				seen_proxy = true;
				snprintf(key, sizeof(key), "listen[%u].proxy_protocol", i);
				if ((r = scalar(ld, key, vn, &s)) < 0)
					return r;
				if (parse_bool(s, &l->proxy_protocol) < 0)
					return FAIL(ld, vn, "%s: expected a boolean (true/false, yes/no, on/off), got '%s'",
					            key, show(vn, v, sizeof(v)));
			} else if (kn->type != YAML_SCALAR_NODE) {
				return FAIL(ld, kn, "listen[%u]: keys must be plain names, got %s", i, kind(kn));
			} else {
				size_t d1 = edit_distance(name, "address");
				size_t d2 = edit_distance(name, "proxy_protocol");
				const char *sug = d1 <= 2 ? "address" : d2 <= 2 ? "proxy_protocol" : NULL;
				show(kn, v, sizeof(v));
				if (sug)
					return FAIL(ld, kn, "unknown key 'listen[%u].%s' (did you mean '%s'?)",
					            i, v, sug);
				return FAIL(ld, kn, "unknown key 'listen[%u].%s'", i, v);
			}
		}
		if (!addr)
			return FAIL(ld, en, "listen[%u]: 'address' is required", i);
	} else {
		return FAIL(ld, en, "listen[%u]: expected a mapping (address, proxy_protocol), got %s",
		            i, kind(en));
	}
	char key[32];
	snprintf(key, sizeof(key), "listen[%u].address", i);
	if ((r = scalar(ld, key, addr, &s)) < 0)
		return r;
	if (ctl_parse_addr(s, &l->addr, &l->addrlen) < 0)
		return FAIL(ld, addr, "%s: expected IPv4:port or [IPv6]:port with a port 1..65535, got '%s'",
		            key, show(addr, v, sizeof(v)));
	l->line = node_line(addr);
	l->text = strdup(s);
	if (!l->text) {
		errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int load_listen(struct ld *ld, const yaml_node_t *n)
{
	struct ctl_config *c = ld->c;
	unsigned count;

	if (n->type != YAML_SEQUENCE_NODE)
		return FAIL(ld, n, "listen: expected a list of addresses, got %s", kind(n));
	count = (unsigned)(n->data.sequence.items.top - n->data.sequence.items.start);
	if (count == 0)
		return FAIL(ld, n, "listen: at least one address is needed");
	if (count > CTL_LISTEN_MAX)
		return FAIL(ld, n, "listen: at most %d addresses, got %u", CTL_LISTEN_MAX, count);
	/* The default entry goes; the file's list replaces it whole. */
	for (unsigned i = 0; i < c->nlisten; i++)
		free(c->listen[i].text);
	memset(c->listen, 0, sizeof(c->listen));
	c->nlisten = 0;
	for (unsigned i = 0; i < count; i++) {
		yaml_node_t *en = yaml_document_get_node(ld->doc, n->data.sequence.items.start[i]);
		struct ctl_listen *l = &c->listen[i];
		if (!en)
			return FAIL(ld, n, "internal error: dangling node");
		c->nlisten = i + 1; /* so that free() sees a partly filled entry */
		int r = load_listen_entry(ld, i, en, l);
		if (r < 0)
			return r;
		for (unsigned j = 0; j < i; j++)
			if (c->listen[j].addrlen == l->addrlen &&
			    memcmp(&c->listen[j].addr, &l->addr, l->addrlen) == 0)
				return errf(ld->err, ld->errlen, ld->name, l->line,
				            "listen[%u].address: %s is already listed on line %u",
				            i, l->text, c->listen[j].line);
	}
	return 0;
}

/* lmtp.routes: "example.org: unix:/run/lmtp" or ".example.org: ..." (its
 * subdomains). Domains are kept lowercased; each may appear once. */
/* filter.rules: "path" or a list of paths (files or directories of .cf). */
static int load_filter_rules(struct ld *ld, const yaml_node_t *n)
{
	struct ctl_config *c = ld->c;
	const yaml_node_item_t *it = NULL, *end = NULL;
	const char *s;
	int r;

	for (unsigned i = 0; i < c->filter_nrules; i++) {
		free(c->filter_rules[i]);
		c->filter_rules[i] = NULL;
	}
	c->filter_nrules = 0;
	if (is_null(n))
		return 0;
	if (n->type == YAML_SEQUENCE_NODE) {
		it = n->data.sequence.items.start;
		end = n->data.sequence.items.top;
	} else if (n->type != YAML_SCALAR_NODE) {
		return FAIL(ld, n, "filter.rules: expected a path or a list of paths, got %s", kind(n));
	}
	for (const yaml_node_t *en = n; ; ) {
		if (it != NULL) {
			if (it == end)
				break;
			en = yaml_document_get_node(ld->doc, *it++);
			if (!en)
				return FAIL(ld, n, "internal error: dangling node");
		}
		if ((r = scalar(ld, "filter.rules", en, &s)) < 0)
			return r;
		if (s[0] == '\0' || strlen(s) >= PATH_MAX)
			return FAIL(ld, en, "filter.rules: expected a path, got '%s'", s);
		if (c->filter_nrules == CTL_FILTER_PATHS_MAX)
			return FAIL(ld, en, "filter.rules: at most %d paths", CTL_FILTER_PATHS_MAX);
		if ((c->filter_rules[c->filter_nrules] = strdup(s)) == NULL) {
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
		c->filter_nrules++;
		if (it == NULL)
			break;
	}
	return 0;
}

/* filter.attachments.scores: a mapping RULE: score (the names are checked
 * against scan/attach.h when the filter starts, and by --check). */
static int load_filter_scores(struct ld *ld, const yaml_node_t *n)
{
	struct ctl_config *c = ld->c;
	char v[CFG_SHOW_MAX * 4 + 8];
	const char *s;
	int r;

	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return FAIL(ld, n, "filter.attachments.scores: expected a mapping of RULE: score, got %s",
		            kind(n));
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pr->value);
		if (!kn || !vn)
			return FAIL(ld, n, "internal error: dangling node");
		if ((r = scalar(ld, "filter.attachments.scores", kn, &s)) < 0)
			return r;
		size_t len = strlen(s);
		if (len == 0 || len > 40 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != len)
			return FAIL(ld, kn, "filter.attachments.scores: expected a rule name (ATTACH_...), "
			            "got '%s'", show(kn, v, sizeof(v)));
		if (c->filter_attach_nscores == CTL_FILTER_SCORES_MAX)
			return FAIL(ld, kn, "filter.attachments.scores: at most %d rules", CTL_FILTER_SCORES_MAX);
		unsigned i = c->filter_attach_nscores;
		if ((c->filter_attach_score_name[i] = strdup(s)) == NULL) {
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
		c->filter_attach_nscores++;
		if ((r = scalar(ld, "filter.attachments.scores", vn, &s)) < 0)
			return r;
		double d;
		if (parse_number(s, &d) < 0 || d < -1000000 || d > 1000000)
			return FAIL(ld, vn, "filter.attachments.scores.%s: expected a score, got '%s'",
			            c->filter_attach_score_name[i], show(vn, v, sizeof(v)));
		c->filter_attach_score[i] = d;
	}
	return 0;
}

/* rbl.zones: "zen.spamhaus.org: 1" (any 127/8 answer counts) or
 * "zen.spamhaus.org=127.0.0.4: 0.5" (only that answer); allow lists take
 * negative weights. */
static int load_rbl_zones(struct ld *ld, const yaml_node_t *n)
{
	struct ctl_config *c = ld->c;
	char v[CFG_SHOW_MAX * 4 + 8];
	const char *s;
	int r;

	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return FAIL(ld, n, "rbl.zones: expected a mapping of zone (or zone=127.0.0.N): weight, "
		            "got %s", kind(n));
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pr->value);
		if (!kn || !vn)
			return FAIL(ld, n, "internal error: dangling node");
		if ((r = scalar(ld, "rbl.zones", kn, &s)) < 0)
			return r;
		if (c->rbl_nzones == CTL_RBL_ZONES_MAX)
			return FAIL(ld, kn, "rbl.zones: at most %d entries", CTL_RBL_ZONES_MAX);
		char zone[256];
		uint32_t code = 0;
		const char *eq = strchr(s, '=');
		size_t zl = eq ? (size_t)(eq - s) : strlen(s);
		if (zl && s[zl - 1] == '.')
			zl--;  /* "zone." is the same zone */
		if (zl == 0 || zl >= 200)
			return FAIL(ld, kn, "rbl.zones: expected a DNS zone (zen.spamhaus.org) or "
			            "zone=127.0.0.N, got '%s'", show(kn, v, sizeof(v)));
		memcpy(zone, s, zl);
		zone[zl] = '\0';
		if (!valid_hostname(zone) || zone[0] == '[')
			return FAIL(ld, kn, "rbl.zones: expected a DNS zone (zen.spamhaus.org) or "
			            "zone=127.0.0.N, got '%s'", show(kn, v, sizeof(v)));
		if (eq != NULL) {
			struct in_addr in;
			if (inet_pton(AF_INET, eq + 1, &in) != 1 || (ntohl(in.s_addr) >> 24) != 127)
				return FAIL(ld, kn, "rbl.zones: '%s': the answer after '=' must be an "
				            "address in 127.0.0.0/8, got '%s'", zone, eq + 1);
			code = ntohl(in.s_addr);
		}
		for (unsigned j = 0; j < c->rbl_nzones; j++)
			if (strcasecmp(c->rbl_zones[j].zone, zone) == 0 && c->rbl_zones[j].code == code)
				return FAIL(ld, kn, "rbl.zones: duplicate entry '%s' (first on line %u)",
				            show(kn, v, sizeof(v)), c->rbl_zones[j].line);
		if ((r = scalar(ld, "rbl.zones", vn, &s)) < 0)
			return r;
		double d;
		if (parse_number(s, &d) < 0 || d < -1000000 || d > 1000000)
			return FAIL(ld, vn, "rbl.zones.%s: expected a weight (a number; negative for an "
			            "allow list), got '%s'", zone, show(vn, v, sizeof(v)));
		struct ctl_rbl_zone *z = &c->rbl_zones[c->rbl_nzones];
		if ((z->zone = strdup(zone)) == NULL) {
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
		for (char *p = z->zone; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		z->weight = d;
		z->code = code;
		z->line = node_line(kn);
		c->rbl_nzones++;
	}
	return 0;
}

bool ctl_addr16(const struct sockaddr *sa, uint8_t addr[16])
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		memset(addr, 0, 10);
		addr[10] = addr[11] = 0xff;
		memcpy(addr + 12, &in->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		memcpy(addr, &in6->sin6_addr, 16);
		return true;
	}
	return false;
}

bool ctl_addr16_is_v4(const uint8_t a[16])
{
	static const uint8_t pre[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	return memcmp(a, pre, 12) == 0;
}

bool ctl_nets_match(const struct ctl_net *nets, unsigned n, const uint8_t a[16])
{
	for (unsigned i = 0; i < n; i++) {
		unsigned full = nets[i].prefix / 8, rest = nets[i].prefix % 8;
		if (memcmp(a, nets[i].addr, full) != 0)
			continue;
		if (rest && ((a[full] ^ nets[i].addr[full]) & (uint8_t)(0xff00u >> rest)))
			continue;
		return true;
	}
	return false;
}

static int ctl_admin_path_ok(const char *path)
{
	struct sockaddr_un sun;
	return strlen(path) < sizeof(sun.sun_path) ? 0 : -1;
}

const char *ctl_config_admin_socket(const struct ctl_config *c, char *buf, size_t len)
{
	if (c->admin_socket != NULL) {
		if ((size_t)snprintf(buf, len, "%s", c->admin_socket) >= len)
			return NULL;
		return buf;
	}
	if (ctl_config_key_line(c, "admin.socket") != 0 || c->spool_dir == NULL)
		return NULL;  /* set to "": off */
	int n = snprintf(buf, len, "%s/admin.sock", c->spool_dir);
	if (n < 0 || (size_t)n >= len || ctl_admin_path_ok(buf) < 0)
		return NULL;
	return buf;
}

/* The next word of a blank- or comma-separated list at *p into buf (cap
 * bytes): 1, 0 at the end, -1 when it does not fit (buf then holds its
 * start). *p moves past it; p NULL is an empty list. */
static int next_word(const char **p, char *buf, size_t cap)
{
	const char *s = *p;
	if (s == NULL)
		return 0;
	s += strspn(s, " ,\t");
	size_t n = strcspn(s, " ,\t");
	*p = s + n;
	if (n == 0)
		return 0;
	size_t k = n < cap ? n : cap - 1;
	memcpy(buf, s, k);
	buf[k] = '\0';
	return n < cap ? 1 : -1;
}

/* rbl.skip, greylist.skip: addresses and networks, blank- or
 * comma-separated, into nets[*n]. */
static int parse_nets(struct ld *ld, const char *key, const char *text, struct ctl_net *nets,
                      unsigned *nnets)
{
	struct ctl_config *c = ld->c;
	const char *p = text;

	*nnets = 0;
	for (;;) {
		char tok[64];
		int w = next_word(&p, tok, sizeof(tok));
		if (w == 0)
			break;
		if (w < 0)
			return errf(ld->err, ld->errlen, ld->name, cite(c, key),
			            "%s: '%.40s' is no address or network", key, tok);
		if (*nnets == CTL_NETS_MAX)
			return errf(ld->err, ld->errlen, ld->name, cite(c, key),
			            "%s: at most %d networks", key, CTL_NETS_MAX);
		struct ctl_net *net = &nets[*nnets];
		char *slash = strchr(tok, '/');
		unsigned long len = 0;
		bool has_len = false;
		if (slash != NULL) {
			char *e;
			*slash = '\0';
			errno = 0;
			len = strtoul(slash + 1, &e, 10);
			if (e == slash + 1 || *e != '\0' || errno != 0)
				goto bad;
			has_len = true;
		}
		struct in_addr a4;
		struct in6_addr a6;
		memset(net, 0, sizeof(*net));
		if (inet_pton(AF_INET, tok, &a4) == 1) {
			if (has_len && len > 32)
				goto bad;
			net->addr[10] = net->addr[11] = 0xff;
			memcpy(net->addr + 12, &a4, 4);
			net->prefix = 96 + (unsigned)(has_len ? len : 32);
		} else if (inet_pton(AF_INET6, tok, &a6) == 1) {
			if (has_len && len > 128)
				goto bad;
			memcpy(net->addr, &a6, 16);
			net->prefix = (unsigned)(has_len ? len : 128);
		} else {
			goto bad;
		}
		(*nnets)++;
		continue;
bad:
		if (slash != NULL)
			*slash = '/';
		return errf(ld->err, ld->errlen, ld->name, cite(c, key),
		            "%s: '%s' is no address or network (10.0.0.0/8, 2001:db8::/32)", key, tok);
	}
	return 0;
}

/* recipients.domains and the access lists: words, blank- or
 * comma-separated, lower-cased into (*out)[*n]. Domains: "example.org" or
 * ".example.org"; with addresses, also "user@example.org", "@example.org"
 * and "user@". */
static int parse_words(struct ld *ld, const char *key, const char *text, bool addresses,
                       char ***out, unsigned *nout)
{
	struct ctl_config *c = ld->c;

	for (const char *p = text;;) {
		char d[320];
		int w = next_word(&p, d, sizeof(d));
		if (w == 0)
			break;
		if (w < 0)
			return errf(ld->err, ld->errlen, ld->name, cite(c, key), "%s: '%.40s...' is too long",
			            key, d);
		for (char *q = d; *q; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q = (char)(*q - 'A' + 'a');
		const char *at = strrchr(d, '@');
		const char *dom = at ? at + 1 : d;
		const char *bare = dom[0] == '.' ? dom + 1 : dom;
		bool ok = at ? addresses && (at > d || *dom) && (*dom == '\0' || (valid_hostname(bare) &&
		                                                                  bare[0] != '['))
		             : valid_hostname(bare) && bare[0] != '[';
		if (at && at > d && memchr(d, '@', (size_t)(at - d)) != NULL)
			ok = false;
		if (!ok)
			return errf(ld->err, ld->errlen, ld->name, cite(c, key),
			            addresses ? "%s: '%s' is no address or domain (user@example.org, "
			                        "@example.org, example.org, .example.org, user@)"
			                      : "%s: '%s' is no domain (example.org, or .example.org for "
			                        "its subdomains)", key, d);
		char **g = realloc(*out, (*nout + 1) * sizeof(*g));
		if (g == NULL || (g[*nout] = strdup(d)) == NULL) {
			if (g != NULL)
				*out = g;
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
		*out = g;
		(*nout)++;
	}
	return 0;
}

/* rbl.servers: "addr", "addr:port", "[v6]:port", comma-separated (what
 * c-ares takes). */
static int check_rbl_servers(struct ld *ld)
{
	struct ctl_config *c = ld->c;
	const char *p = c->rbl_servers;

	while (p != NULL && *p) {
		size_t n = strcspn(p, ",");
		char tok[80];
		struct sockaddr_storage ss;
		socklen_t sl;
		struct in_addr a4;
		struct in6_addr a6;
		if (n == 0 || n >= sizeof(tok))
			goto bad;
		memcpy(tok, p, n);
		tok[n] = '\0';
		if (inet_pton(AF_INET, tok, &a4) != 1 && inet_pton(AF_INET6, tok, &a6) != 1 &&
		    ctl_parse_addr(tok, &ss, &sl) < 0)
			goto bad;
		p += n;
		if (*p == ',')
			p++;
		continue;
bad:
		return errf(ld->err, ld->errlen, ld->name, cite(c, "rbl.servers"),
		            "rbl.servers: expected addresses of DNS servers (127.0.0.1, 127.0.0.1:5353, "
		            "[::1]:53), comma-separated, got '%s'", c->rbl_servers);
	}
	return 0;
}

static int load_routes(struct ld *ld, const yaml_node_t *n)
{
	struct ctl_config *c = ld->c;
	char v[CFG_SHOW_MAX * 4 + 8];

	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return FAIL(ld, n, "lmtp.routes: expected a mapping of domain: backend, got %s", kind(n));
	size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (count > CTL_ROUTES_MAX)
		return FAIL(ld, n, "lmtp.routes: at most %d routes, got %zu", CTL_ROUTES_MAX, count);
	if (count == 0)
		return 0;
	if ((c->routes = calloc(count, sizeof(*c->routes))) == NULL) {
		errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
		return -ENOMEM;
	}
	for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top; pr++) {
		yaml_node_t *kn = yaml_document_get_node(ld->doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(ld->doc, pr->value);
		const char *dom, *be;
		struct ctl_lmtp_target t;
		int r;

		if (!kn || !vn)
			return FAIL(ld, n, "internal error: dangling node");
		if ((r = scalar(ld, "lmtp.routes", kn, &dom)) < 0)
			return r;
		const char *bare = dom[0] == '.' ? dom + 1 : dom;
		if (!valid_hostname(bare) || bare[0] == '[')
			return FAIL(ld, kn, "lmtp.routes: expected a domain (or .domain for its subdomains), "
			            "got '%s'", show(kn, v, sizeof(v)));
		if ((r = scalar(ld, "lmtp.routes", vn, &be)) < 0)
			return r;
		if (ctl_lmtp_target_parse(be, &t) < 0)
			return FAIL(ld, vn, "lmtp.routes.%s: expected unix:/path, IPv4:port or [IPv6]:port, "
			            "got '%s'", dom, show(vn, v, sizeof(v)));
		for (unsigned j = 0; j < c->nroutes; j++)
			if (strcasecmp(c->routes[j].domain, dom) == 0)
				return FAIL(ld, kn, "lmtp.routes: duplicate domain '%s' (first on line %u)",
				            dom, c->routes[j].line);
		struct ctl_route *rt = &c->routes[c->nroutes];
		rt->domain = strdup(dom);
		rt->backend = strdup(be);
		rt->line = node_line(kn);
		c->nroutes++;
		if (!rt->domain || !rt->backend) {
			errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
			return -ENOMEM;
		}
		for (char *p = rt->domain; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
	}
	return 0;
}

/* The line to cite for a key: where it was set, else its section's. */
static unsigned cite(const struct ctl_config *c, const char *key)
{
	unsigned line = ctl_config_key_line(c, key);
	const char *dot;
	char sect[32];

	if (line || !(dot = strchr(key, '.')) || (size_t)(dot - key) >= sizeof(sect))
		return line;
	memcpy(sect, key, (size_t)(dot - key));
	sect[dot - key] = '\0';
	return ctl_config_key_line(c, sect);
}

static int check_maildir_template(struct ld *ld, const char *t)
{
	for (const char *p = t; *p; p++) {
		if (*p != '%')
			continue;
		if (p[1] != 'u' && p[1] != 'd' && p[1] != '%') {
			if (p[1] == '\0')
				return errf(ld->err, ld->errlen, ld->name, cite(ld->c, "delivery.maildir"),
				            "delivery.maildir: '%%' at the end (write %%%% for a '%%')");
			return errf(ld->err, ld->errlen, ld->name, cite(ld->c, "delivery.maildir"),
			            "delivery.maildir: unknown escape '%%%c' (use %%u, %%d or %%%%)",
			            (p[1] >= 0x20 && p[1] < 0x7f) ? p[1] : '?');
		}
		p++;
	}
	return 0;
}

/* Rules that tie keys together, once the file is read. */
static int check_whole(struct ld *ld)
{
	struct ctl_config *c = ld->c;
	int rr;

	if (!!c->tls_cert != !!c->tls_key) {
		const char *set = c->tls_cert ? "tls.certificate" : "tls.key";
		const char *unset = c->tls_cert ? "tls.key" : "tls.certificate";
		return errf(ld->err, ld->errlen, ld->name, cite(c, set),
		            "%s: set without %s (STARTTLS needs both)", set, unset);
	}
	if (!c->spool_dir)
		return errf(ld->err, ld->errlen, ld->name, cite(c, "spool.directory"),
		            "spool.directory: must not be empty");
	if (c->delivery == CTL_DELIVER_MAILDIR) {
		if (!c->maildir)
			return errf(ld->err, ld->errlen, ld->name, cite(c, "delivery.maildir"),
			            "delivery.maildir: must not be empty with delivery.method maildir");
		int r = check_maildir_template(ld, c->maildir);
		if (r < 0)
			return r;
	}
	if (c->delivery == CTL_DELIVER_LMTP && !c->lmtp_default)
		return errf(ld->err, ld->errlen, ld->name,
		            cite(c, ctl_config_key_line(c, "lmtp.default") ? "lmtp.default" :
		                    "delivery.method"),
		            "lmtp.default: must be set with delivery.method lmtp (the backend for "
		            "domains without a route)");
	if (c->av_enabled && !c->av_database)
		return errf(ld->err, ld->errlen, ld->name,
		            cite(c, ctl_config_key_line(c, "antivirus.database") ? "antivirus.database" :
		                    "antivirus.enabled"),
		            "antivirus.database: must be set with antivirus.enabled (the signature "
		            "directory, e.g. /var/lib/clamav)");
	if (c->transport == CTL_TRANSPORT_DPDK && c->dpdk_address.addr == 0)
		return errf(ld->err, ld->errlen, ld->name,
		            cite(c, ctl_config_key_line(c, "dpdk.address") ? "dpdk.address" :
		                    "server.transport"),
		            "dpdk.address: must be set with server.transport dpdk (the port's IPv4 "
		            "address and prefix, e.g. 10.77.0.2/24)");
	if (c->dpdk_exception_iface != NULL &&
	    (c->dpdk_exception_iface[0] == '\0' || strlen(c->dpdk_exception_iface) > 15 ||
	     strpbrk(c->dpdk_exception_iface, "/: ") != NULL))
		return errf(ld->err, ld->errlen, ld->name, cite(c, "dpdk.exception_iface"),
		            "dpdk.exception_iface: expected an interface name (1-15 characters, no "
		            "'/', ':' or blank), got '%s'", c->dpdk_exception_iface);
	if (c->admin_socket != NULL && ctl_admin_path_ok(c->admin_socket) < 0)
		return errf(ld->err, ld->errlen, ld->name, cite(c, "admin.socket"),
		            "admin.socket: '%s' is longer than the 107 bytes a unix socket path may have",
		            c->admin_socket);
	if (c->admin_http != NULL && c->admin_http[0] == '\0') {
		free(c->admin_http);  /* "": off */
		c->admin_http = NULL;
	}
	if (c->rbl_servers != NULL && c->rbl_servers[0] == '\0') {
		free(c->rbl_servers);  /* "": /etc/resolv.conf */
		c->rbl_servers = NULL;
	}
	if (c->admin_http != NULL &&
	    ctl_parse_addr(c->admin_http, &c->admin_http_addr, &c->admin_http_len) < 0)
		return errf(ld->err, ld->errlen, ld->name, cite(c, "admin.http"),
		            "admin.http: expected address:port (127.0.0.1:9425, [::1]:9425), got '%s'",
		            c->admin_http);
	if (c->rcpt_verify && c->delivery != CTL_DELIVER_LMTP)
		return errf(ld->err, ld->errlen, ld->name, cite(c, "recipients.verify"),
		            "recipients.verify: needs delivery.method lmtp (it asks the LMTP backends)");
	if ((rr = parse_words(ld, "recipients.domains", c->rcpt_domains_text, false,
	                      &c->rcpt_domains, &c->rcpt_ndomains)) < 0 ||
	    (rr = parse_words(ld, "access.senders_deny", c->acc_text[0], true, &c->acc[0],
	                      &c->nacc[0])) < 0 ||
	    (rr = parse_words(ld, "access.senders_allow", c->acc_text[1], true, &c->acc[1],
	                      &c->nacc[1])) < 0 ||
	    (rr = parse_words(ld, "access.recipients_deny", c->acc_text[2], true, &c->acc[2],
	                      &c->nacc[2])) < 0 ||
	    (rr = parse_words(ld, "access.recipients_allow", c->acc_text[3], true, &c->acc[3],
	                      &c->nacc[3])) < 0)
		return rr;
	if (c->gl_enabled) {
		struct sockaddr_storage ss;
		socklen_t sl;
		if (c->gl_redis == NULL ||
		    (strncmp(c->gl_redis, "unix:/", 6) != 0 && ctl_parse_addr(c->gl_redis, &ss, &sl) < 0))
			return errf(ld->err, ld->errlen, ld->name,
			            cite(c, ctl_config_key_line(c, "greylist.redis") ? "greylist.redis"
			                                                             : "greylist.enabled"),
			            "greylist.redis: expected address:port (127.0.0.1:6379) or unix:/path, "
			            "got '%s'", c->gl_redis ? c->gl_redis : "");
		if (c->gl_retry_window_ms <= c->gl_delay_ms)
			return errf(ld->err, ld->errlen, ld->name, cite(c, "greylist.retry_window"),
			            "greylist.retry_window: must be longer than greylist.delay (a retry "
			            "must be able to pass)");
	}
	if (c->gl_prefix == NULL || c->gl_prefix[0] == '\0')
		return errf(ld->err, ld->errlen, ld->name, cite(c, "greylist.prefix"),
		            "greylist.prefix: must not be empty (the Redis keys need a namespace)");
	if (c->rbl_enabled && c->rbl_nzones == 0)
		return errf(ld->err, ld->errlen, ld->name,
		            cite(c, ctl_config_key_line(c, "rbl.zones") ? "rbl.zones" : "rbl.enabled"),
		            "rbl.zones: must name at least one zone with rbl.enabled "
		            "(e.g. zen.spamhaus.org: 1)");
	if (c->rbl_threshold <= 0)
		return errf(ld->err, ld->errlen, ld->name, cite(c, "rbl.threshold"),
		            "rbl.threshold: must be above 0 (at 0 every client would be refused)");
	if ((rr = parse_nets(ld, "rbl.skip", c->rbl_skip_text, c->rbl_skip, &c->rbl_nskip)) < 0 ||
	    (rr = parse_nets(ld, "greylist.skip", c->gl_skip_text, c->gl_skip, &c->gl_nskip)) < 0 ||
	    (rr = parse_nets(ld, "limits.skip", c->lim_skip_text, c->lim_skip, &c->lim_nskip)) < 0 ||
	    (rr = check_rbl_servers(ld)) < 0)
		return rr;
	if (c->retry_max_ms < c->retry_min_ms) {
		char a[32], b[32];
		fmt_dur_ms(c->retry_max_ms, a, sizeof(a));
		fmt_dur_ms(c->retry_min_ms, b, sizeof(b));
		return errf(ld->err, ld->errlen, ld->name,
		            cite(c, ctl_config_key_line(c, "delivery.retry_max") ?
		                    "delivery.retry_max" : "delivery.retry_min"),
		            "delivery.retry_max: %s is less than delivery.retry_min %s", a, b);
	}
	return 0;
}

static int yaml_failure(struct ld *ld, const yaml_parser_t *ps)
{
	unsigned line;

	if (ps->error == YAML_MEMORY_ERROR) {
		errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
		return -ENOMEM;
	}
	line = (unsigned)(ps->error == YAML_READER_ERROR ? ps->mark.line : ps->problem_mark.line) + 1;
	if (ps->error == YAML_READER_ERROR)
		return errf(ld->err, ld->errlen, ld->name, line, "YAML: %s at byte %zu",
		            ps->problem ? ps->problem : "cannot read", ps->problem_offset);
	if (ps->context && ps->context_mark.line + 1 != line)
		return errf(ld->err, ld->errlen, ld->name, line, "YAML: %s (%s that started on line %zu)",
		            ps->problem ? ps->problem : "syntax error", ps->context,
		            ps->context_mark.line + 1);
	if (ps->context)
		return errf(ld->err, ld->errlen, ld->name, line, "YAML: %s (%s)",
		            ps->problem ? ps->problem : "syntax error", ps->context);
	return errf(ld->err, ld->errlen, ld->name, line, "YAML: %s",
	            ps->problem ? ps->problem : "syntax error");
}

/*
 * Refuses collections nested deeper than CFG_DEPTH_MAX, from libyaml's
 * events, before its loader sees the text: the loader takes time
 * quadratic in the depth (80,000 nested "[": 15 s; the 1 MB a file may
 * hold: minutes). A syntax error is left for the loader to report.
 */
static int yaml_depth_check(struct ld *ld, const void *buf, size_t n)
{
	yaml_parser_t ps;
	yaml_event_t ev;
	int depth = 0, r = 0;

	if (!yaml_parser_initialize(&ps)) {
		errf(ld->err, ld->errlen, ld->name, 0, "out of memory");
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&ps, buf, n);
	while (yaml_parser_parse(&ps, &ev)) {
		yaml_event_type_t t = ev.type;
		unsigned line = (unsigned)ev.start_mark.line + 1;
		yaml_event_delete(&ev);
		if (t == YAML_STREAM_END_EVENT)
			break;
		if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT)
			depth--;
		else if ((t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) &&
		         ++depth > CFG_DEPTH_MAX) {
			r = errf(ld->err, ld->errlen, ld->name, line,
			         "collections nested deeper than %d levels", CFG_DEPTH_MAX);
			break;
		}
	}
	yaml_parser_delete(&ps);
	return r;
}

int ctl_config_load_buffer(const char *name, const void *buf, size_t n,
                           struct ctl_config *c, char *err, size_t errlen)
{
	struct ld ld = { .name = name ? name : "(config)", .c = c, .err = err, .errlen = errlen };
	yaml_parser_t ps;
	yaml_document_t doc, extra;
	int r = 0;

	if (err && errlen)
		err[0] = '\0';
	ctl_config_defaults(c);
	c->path = strdup(ld.name);
	if (!c->path || !c->hostname || !c->banner || !c->spool_dir || !c->maildir || !c->av_database ||
	    !c->listen[0].text) {
		errf(err, errlen, ld.name, 0, "out of memory");
		ctl_config_free(c);
		return -ENOMEM;
	}
	if (n > CFG_FILE_MAX) {
		errf(err, errlen, ld.name, 0, "larger than %u bytes", CFG_FILE_MAX);
		ctl_config_free(c);
		return -EINVAL;
	}
	if ((r = yaml_depth_check(&ld, buf, n)) < 0) {
		ctl_config_free(c);
		return r;
	}
	if (!yaml_parser_initialize(&ps)) {
		errf(err, errlen, ld.name, 0, "out of memory");
		ctl_config_free(c);
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&ps, buf, n);
	if (!yaml_parser_load(&ps, &doc)) {
		r = yaml_failure(&ld, &ps);
		yaml_parser_delete(&ps);
		ctl_config_free(c);
		return r;
	}
	ld.doc = &doc;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root) {
		/* A second document would be silently ignored: refuse it. */
		if (!yaml_parser_load(&ps, &extra)) {
			r = yaml_failure(&ld, &ps);
		} else {
			yaml_node_t *x = yaml_document_get_root_node(&extra);
			if (x)
				r = FAIL(&ld, x, "only one YAML document is allowed");
			yaml_document_delete(&extra);
		}
		if (r == 0)
			r = load_mapping(&ld, "", root);
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&ps);
	if (r == 0)
		r = check_whole(&ld);
	if (r < 0)
		ctl_config_free(c);
	return r;
}

int ctl_config_load(const char *path, struct ctl_config *c, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	size_t len = 0;
	int fd, r;

	if (err && errlen)
		err[0] = '\0';
	memset(c, 0, sizeof(*c));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		errf(err, errlen, path, 0, "cannot open: %s", strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		errf(err, errlen, path, 0, "cannot stat: %s", strerror(-r));
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		errf(err, errlen, path, 0, "not a regular file");
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if ((uint64_t)st.st_size > CFG_FILE_MAX) {
		errf(err, errlen, path, 0, "larger than %u bytes", CFG_FILE_MAX);
		close(fd);
		return -EINVAL;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		errf(err, errlen, path, 0, "out of memory");
		return -ENOMEM;
	}
	/* Read to EOF (the file may change size under us; stay bounded). */
	for (;;) {
		ssize_t k = read(fd, buf + len, (size_t)st.st_size + 1 - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = -errno;
			errf(err, errlen, path, 0, "cannot read: %s", strerror(-r));
			free(buf);
			close(fd);
			return r;
		}
		if (k == 0)
			break;
		len += (size_t)k;
		if (len > (size_t)st.st_size) {
			errf(err, errlen, path, 0, "changed while being read");
			free(buf);
			close(fd);
			return -EINVAL;
		}
	}
	close(fd);
	r = ctl_config_load_buffer(path, buf, len, c, err, errlen);
	free(buf);
	return r;
}

/* ---------------------------------------------------------------------- */
/* --check: the files the configuration names                              */

static int no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf; (void)size; (void)rwflag; (void)u;
	return 0;
}

static int check_tls(const struct ctl_config *c, char *err, size_t errlen)
{
	X509 *x = NULL;
	EVP_PKEY *k = NULL;
	FILE *f;
	int r = 0;

	f = fopen(c->tls_cert, "r");
	if (!f)
		return errf(err, errlen, c->path, cite(c, "tls.certificate"),
		            "tls.certificate: cannot read %s: %s", c->tls_cert, strerror(errno));
	x = PEM_read_X509(f, NULL, no_password, NULL);
	fclose(f);
	if (!x) {
		ERR_clear_error();
		return errf(err, errlen, c->path, cite(c, "tls.certificate"),
		            "tls.certificate: %s holds no PEM certificate", c->tls_cert);
	}
	f = fopen(c->tls_key, "r");
	if (!f) {
		r = errf(err, errlen, c->path, cite(c, "tls.key"),
		         "tls.key: cannot read %s: %s", c->tls_key, strerror(errno));
		goto out;
	}
	k = PEM_read_PrivateKey(f, NULL, no_password, NULL);
	fclose(f);
	if (!k) {
		r = errf(err, errlen, c->path, cite(c, "tls.key"),
		         "tls.key: %s holds no unencrypted PEM private key", c->tls_key);
		goto out;
	}
	if (X509_check_private_key(x, k) != 1)
		r = errf(err, errlen, c->path, cite(c, "tls.key"),
		         "tls.key: %s does not match the certificate in %s", c->tls_key, c->tls_cert);
out:
	ERR_clear_error();
	EVP_PKEY_free(k);
	X509_free(x);
	return r;
}

/* A directory that exists and is writable, or whose nearest existing
 * ancestor is a writable directory (it will be created). */
static int check_dir(const struct ctl_config *c, const char *key, const char *dir,
                     char *err, size_t errlen)
{
	char p[PATH_MAX];
	struct stat st;

	snprintf(p, sizeof(p), "%s", dir);
	for (;;) {
		if (stat(p, &st) == 0) {
			if (!S_ISDIR(st.st_mode))
				return errf(err, errlen, c->path, cite(c, key), "%s: %s is not a directory",
				            key, p);
			if (access(p, W_OK | X_OK) != 0)
				return errf(err, errlen, c->path, cite(c, key), "%s: cannot write in %s: %s",
				            key, p, strerror(errno));
			return 0;
		}
		if (errno != ENOENT && errno != ENOTDIR)
			return errf(err, errlen, c->path, cite(c, key), "%s: cannot access %s: %s",
			            key, p, strerror(errno));
		/* Climb to the parent: strip trailing slashes, then one component. */
		size_t n = strlen(p);
		while (n > 1 && p[n - 1] == '/')
			p[--n] = '\0';
		char *slash = strrchr(p, '/');
		if (!slash) {
			snprintf(p, sizeof(p), ".");
		} else if (slash == p) {
			p[1] = '\0';
		} else {
			*slash = '\0';
		}
	}
}

/* The signature database: what cl_load() takes, a directory or one file.
 * Its content is the loader's business (an empty directory tempfails). */
static int check_av_database(const struct ctl_config *c, char *err, size_t errlen)
{
	struct stat st;

	if (stat(c->av_database, &st) != 0)
		return errf(err, errlen, c->path, cite(c, "antivirus.database"),
		            "antivirus.database: cannot access %s: %s", c->av_database, strerror(errno));
	if (access(c->av_database, S_ISDIR(st.st_mode) ? R_OK | X_OK : R_OK) != 0)
		return errf(err, errlen, c->path, cite(c, "antivirus.database"),
		            "antivirus.database: cannot read %s: %s", c->av_database, strerror(errno));
	return 0;
}

static int check_log_file(const struct ctl_config *c, char *err, size_t errlen)
{
	struct stat st;

	if (stat(c->log_file, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return errf(err, errlen, c->path, cite(c, "log.file"), "log.file: %s is a directory",
			            c->log_file);
		if (access(c->log_file, W_OK) != 0)
			return errf(err, errlen, c->path, cite(c, "log.file"), "log.file: cannot write %s: %s",
			            c->log_file, strerror(errno));
		return 0;
	}
	if (errno != ENOENT)
		return errf(err, errlen, c->path, cite(c, "log.file"), "log.file: cannot access %s: %s",
		            c->log_file, strerror(errno));
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", c->log_file);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return errf(err, errlen, c->path, cite(c, "log.file"),
		            "log.file: directory %s does not exist", dir);
	if (access(dir, W_OK | X_OK) != 0)
		return errf(err, errlen, c->path, cite(c, "log.file"), "log.file: cannot create a file in %s: %s",
		            dir, strerror(errno));
	return 0;
}

int ctl_config_check_files(const struct ctl_config *c, char *err, size_t errlen)
{
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (c->tls_cert && c->tls_key && (r = check_tls(c, err, errlen)) < 0)
		return r;
	if (c->spool_dir && (r = check_dir(c, "spool.directory", c->spool_dir, err, errlen)) < 0)
		return r;
	if (c->delivery == CTL_DELIVER_MAILDIR && c->maildir) {
		/* The fixed part before the first escape is what exists today. */
		char root[PATH_MAX];
		snprintf(root, sizeof(root), "%s", c->maildir);
		char *pct = strchr(root, '%');
		if (pct) {
			*pct = '\0';
			char *slash = strrchr(root, '/');
			if (slash)
				slash[slash == root] = '\0';
			else
				snprintf(root, sizeof(root), ".");
		}
		if ((r = check_dir(c, "delivery.maildir", root, err, errlen)) < 0)
			return r;
	}
	if (c->log_file && (r = check_log_file(c, err, errlen)) < 0)
		return r;
	if (c->av_enabled && c->av_database && (r = check_av_database(c, err, errlen)) < 0)
		return r;
	for (unsigned i = 0; c->filter_enabled && i < c->filter_nrules; i++)
		if (access(c->filter_rules[i], R_OK) != 0)
			return errf(err, errlen, c->path, cite(c, "filter.rules"),
			            "filter.rules: cannot read %s: %s", c->filter_rules[i], strerror(errno));
	return 0;
}
