/*
 * config.h - sluiced configuration: loading, validation, defaults.
 *
 * Contract
 *   ctl_config_load() parses a YAML file (libyaml) into a struct ctl_config
 *   that starts from the built-in defaults (ctl_config_defaults()). Every
 *   error is reported as "FILE:LINE: reason" in err (unknown key, wrong type,
 *   bad size/duration/address, out-of-range value, missing file named by a
 *   key), and the function returns -EINVAL (-errno if the file cannot be
 *   read). Strings in the result are owned by the config and freed by
 *   ctl_config_free(). Control-plane only; not for workers' hot path.
 *
 *   Units: sizes accept a plain number of bytes or a suffix k, m, g (powers
 *   of 1024, case-insensitive, optional trailing "b"); durations accept ms, s,
 *   m, h, d (a bare number means seconds), and "us" where the field keeps
 *   microseconds (spool.commit_delay); a sub-millisecond value for a field in
 *   milliseconds is an error, not a silent rounding. The reference of every
 *   key is docs/CONFIG.md.
 *
 *   Ownership: ctl_config_defaults() and ctl_config_load() overwrite *c
 *   without freeing what it held. After a failed load c owns nothing (it is
 *   left zeroed; ctl_config_free() on it is harmless). Relative paths are
 *   kept as written and resolve against sluiced's working directory.
 *
 *   Lines: the 1-based line of each key found in the file is kept
 *   (ctl_config_key_line(), ctl_listen.line), so that later checks --
 *   ctl_config_check_files() for --check, main() refusing a transport --
 *   report "FILE:LINE: key: reason" too. 0 means "not in the file".
 */
#ifndef CTL_CONFIG_H
#define CTL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "control/rbl.h"
#include "control/spool.h"

#define CTL_LISTEN_MAX 16

enum ctl_transport { CTL_TRANSPORT_KERNEL = 0, CTL_TRANSPORT_DPDK };
enum ctl_log_level { CTL_LOG_ERR = 0, CTL_LOG_WARN, CTL_LOG_INFO, CTL_LOG_DEBUG };

struct ctl_listen {
	struct sockaddr_storage addr;  /* "127.0.0.1:2525", "[::1]:25" */
	socklen_t addrlen;
	char *text;                    /* as written in the config */
	bool proxy_protocol;
	unsigned line;                 /* of the entry in the file; 0: default */
};

/* An IPv4 address with its prefix length ("10.77.0.2/24"). */
struct ctl_ipv4_net {
	uint32_t addr;                 /* host byte order */
	uint32_t prefix;               /* 1..32 */
};

struct ctl_ipv6_net {
	uint8_t addr[16];              /* network byte order; all zero: unset */
	uint32_t prefix;               /* 1..128 */
};

/* Room for the line of every key of the schema (see ctl_config_key_line). */
#define CTL_CONFIG_KEYS_MAX 192
#define CTL_FILTER_PATHS_MAX 16
#define CTL_FILTER_SCORES_MAX 32
#define CTL_ROUTES_MAX 4096

struct ctl_config {
	char *path;                    /* the file loaded */
	/* server */
	char *hostname;                /* default: gethostname() */
	unsigned workers;              /* default 1 */
	enum ctl_transport transport;
	/* listen */
	struct ctl_listen listen[CTL_LISTEN_MAX];
	unsigned nlisten;
	/* smtp */
	char *banner;
	uint32_t cmd_line_max;
	uint32_t text_line_max;
	uint64_t message_size_max;
	uint32_t rcpt_max;
	uint32_t errors_max;
	uint32_t junk_max;             /* NOOP/RSET/VRFY/EXPN/HELP per accepted message
	                                  before each counts as an error; 0: no limit */
	uint32_t connections_max;      /* per worker; beyond it 421 */
	uint64_t greet_pause_ms;
	uint64_t tarpit_interval_ms;   /* between the lines of a held refusal */
	int early_talker;              /* 0 accept (flag and log), 1 reject */
	uint64_t timeout_command_ms;
	uint64_t timeout_data_ms;
	uint64_t timeout_tls_ms;
	/* tls (both set, or neither) */
	char *tls_cert;
	char *tls_key;
	/* spool */
	char *spool_dir;
	uint64_t spool_segment_max;
	uint32_t spool_commit_delay_us;
	uint32_t spool_commit_batch_max;
	bool spool_sync;
	/* delivery */
	enum ctl_delivery_method delivery;
	char *maildir;
	uint64_t retry_min_ms;
	uint64_t retry_max_ms;
	uint64_t max_age_ms;
	uint64_t bounce_return_max;    /* bytes of a message returned in a DSN */
	uint64_t spool_limit;          /* bytes; 0: no limit (backpressure) */
	/* lmtp */
	char *lmtp_default;            /* backend for unrouted domains, or NULL */
	struct ctl_route *routes;      /* lmtp.routes, in file order */
	unsigned nroutes;
	uint64_t lmtp_timeout_ms;
	/* antivirus (libclamav, control/av.h) */
	bool av_enabled;               /* default false */
	char *av_database;             /* signature directory (or one file) for cl_load */
	uint32_t av_threads;           /* scan threads */
	uint64_t av_timeout_ms;        /* per message, from hand-over to verdict */
	uint32_t av_queue_max;         /* messages waiting or being scanned; beyond: 451 */
	uint64_t av_max_scan_bytes;    /* decoded attachment bytes kept per message */
	/* filter (SMTP-time content filtering, control/filter.h) */
	bool filter_enabled;           /* default false */
	char *filter_rules[CTL_FILTER_PATHS_MAX]; /* files or directories of .cf */
	unsigned filter_nrules;
	char *filter_cache;            /* compiled-rules cache file, or NULL */
	char *filter_policy;           /* "SCORE:ACTION,...", or NULL: the thresholds */
	double filter_tag;             /* X-Spam-* headers from this score; 0: always */
	double filter_subject_lower;   /* {SPAM?}; 0: off (for each of these) */
	double filter_subject_upper;   /* {SPAM!} */
	double filter_quarantine;
	double filter_reject;          /* 550 5.7.1 */
	double filter_tempfail;        /* 451 4.7.1 */
	uint32_t filter_slots;         /* messages scanned at once per worker */
	double filter_shed_pct;        /* 0: every rule; else shed the costliest (<= 5) */
	double filter_ascii_share;     /* 0: SCAN_HS_ASCII_SHARE; the cost model's share of plain texts */
	bool filter_attach_enabled;    /* default true (with filter.enabled) */
	char *filter_attach_ext;       /* extension list, or NULL: the default */
	char *filter_attach_score_name[CTL_FILTER_SCORES_MAX]; /* ATTACH_* */
	double filter_attach_score[CTL_FILTER_SCORES_MAX];
	unsigned filter_attach_nscores;
	/* rbl (DNS block and allow lists at connect, control/rbl.h) */
	bool rbl_enabled;              /* default false */
	struct ctl_rbl_zone rbl_zones[CTL_RBL_ZONES_MAX]; /* zone strings owned */
	unsigned rbl_nzones;
	double rbl_threshold;          /* default 1 */
	char *rbl_servers;             /* "addr[:port],..."; NULL: /etc/resolv.conf */
	uint64_t rbl_timeout_ms;
	uint64_t rbl_cache_ttl_ms;
	uint64_t rbl_negative_ttl_ms;
	uint32_t rbl_cache_max;
	uint64_t rbl_tarpit_ms;        /* hold listed clients this long; 0: 554 at once */
	char *rbl_skip_text;           /* as written; parsed into rbl_skip */
	struct ctl_net rbl_skip[CTL_NETS_MAX];
	unsigned rbl_nskip;
	/* dpdk (server.transport: dpdk) */
	char *dpdk_eal;                /* EAL arguments, blank-separated */
	uint32_t dpdk_port;            /* DPDK port id */
	struct ctl_ipv4_net dpdk_address; /* addr 0: unset */
	uint32_t dpdk_gateway;         /* host byte order; 0: none */
	struct ctl_ipv6_net dpdk_address6; /* the stack's global IPv6 address */
	bool dpdk_csum_offload;        /* default true: where the port has it */
	uint32_t dpdk_conn_max;        /* stack connections per worker; 0: auto */
	uint64_t dpdk_buffer_size;     /* bytes per receive / send ring */
	uint32_t dpdk_buffers;         /* rings of each kind per worker; 0: auto */
	uint64_t dpdk_time_wait_ms;
	uint32_t dpdk_mbufs;           /* mbufs per NUMA socket; 0: auto */
	uint32_t dpdk_ring;            /* software dispatch ring slots; 0: auto */
	uint32_t dpdk_queues;          /* queue pairs at most; 0: one per worker */
	bool dpdk_software_dispatch;   /* even on a port with RSS */
	int dpdk_exception;            /* 0 drop, 1 tap (the exception path) */
	char *dpdk_exception_iface;    /* the tap's name; NULL: sluice-exc0 */
	/* limits (control/perclient.h) */
	uint32_t lim_conns_per_client; /* 0: none */
	uint32_t lim_msgs_per_minute;  /* 0: none */
	char *lim_skip_text;
	struct ctl_net lim_skip[CTL_NETS_MAX];
	unsigned lim_nskip;
	/* access: 0 senders_deny, 1 senders_allow, 2 recipients_deny,
	 * 3 recipients_allow (ctl_access_match) */
	char *acc_text[4];
	char **acc[4];
	unsigned nacc[4];
	/* recipients (control/verify.h) */
	char *rcpt_domains_text;       /* as written */
	char **rcpt_domains;           /* parsed; NULL/0: every domain */
	unsigned rcpt_ndomains;
	bool rcpt_verify;              /* ask the LMTP backend at RCPT */
	uint64_t rcpt_verify_timeout_ms;
	uint64_t rcpt_verify_ttl_ms;
	uint64_t rcpt_verify_negative_ttl_ms;
	/* greylist (control/greylist.h) */
	bool gl_enabled;
	char *gl_redis;                /* default 127.0.0.1:6379 */
	char *gl_prefix;               /* default "sluice:gl:" */
	uint64_t gl_timeout_ms;
	uint64_t gl_delay_ms;
	uint64_t gl_retry_window_ms;
	uint64_t gl_pass_ttl_ms;
	uint32_t gl_ipv4_prefix, gl_ipv6_prefix;
	uint64_t gl_cache_ttl_ms;      /* passed triplets answered locally */
	int gl_on_error;               /* 0 accept, 1 tempfail */
	char *gl_skip_text;
	struct ctl_net gl_skip[CTL_NETS_MAX];
	unsigned gl_nskip;
	/* admin (control/admin.h) */
	char *admin_socket;            /* NULL: SPOOL/admin.sock, or off if set to "" */
	char *admin_http;              /* "addr:port" of GET /metrics; NULL: off */
	struct sockaddr_storage admin_http_addr;
	socklen_t admin_http_len;
	/* log */
	enum ctl_log_level log_level;
	char *log_file;                /* NULL: stderr */
	/* where each key was found; use ctl_config_key_line() */
	unsigned key_line[CTL_CONFIG_KEYS_MAX];
};

/* Built-in defaults; strings are allocated (NULL only if out of memory). */
void ctl_config_defaults(struct ctl_config *c);
/* Read and parse the file at path (at most 1 MiB). 0, -EINVAL (bad
 * configuration), -ENOMEM, or -errno from opening/reading the file. */
int ctl_config_load(const char *path, struct ctl_config *c, char *err, size_t errlen);
/* Parse n bytes of YAML; name is used in messages and kept as c->path.
 * Same returns as ctl_config_load(). The fuzz target's entry point. */
int ctl_config_load_buffer(const char *name, const void *buf, size_t n,
                           struct ctl_config *c, char *err, size_t errlen);
/* Frees the strings and zeroes *c; safe to call twice. */
void ctl_config_free(struct ctl_config *c);

/* The 1-based line where the dotted key ("tls.certificate", "listen") was
 * set in the file; 0 if it was not (default) or the key is unknown. */
unsigned ctl_config_key_line(const struct ctl_config *c, const char *key);

/* --check: the files and directories the configuration names are usable:
 * tls.certificate / tls.key readable, PEM, and matching each other;
 * spool.directory and the Maildir root (up to its first %) directories or
 * creatable; log.file writable or creatable. Touches nothing. 0, or -EINVAL
 * with the first problem in err as "FILE:LINE: key: reason". */
int ctl_config_check_files(const struct ctl_config *c, char *err, size_t errlen);

/* The admin socket's path: admin.socket, or SPOOL/admin.sock when it is not
 * set; NULL when it is set to "" (off) or the path does not fit buf. */
const char *ctl_config_admin_socket(const struct ctl_config *c, char *buf, size_t len);

/* Parsers shared with tests; 0 or -EINVAL. */
int ctl_parse_size(const char *s, uint64_t *out);
int ctl_parse_duration_ms(const char *s, uint64_t *out);
int ctl_parse_duration_us(const char *s, uint64_t *out);
/* Numeric "a.b.c.d:port" or "[v6]:port" ("[fe80::1%eth0]:25" too); port
 * 1..65535; no name lookup. */
int ctl_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#endif
