/*
 * main.c - sluiced: start-up, signals, shutdown.
 *
 *   sluiced -c FILE            run in the foreground
 *   sluiced -c FILE --check    validate FILE and exit (0: valid)
 *
 * Start order: configuration, log, queue manager, spool (recovers what an
 * earlier run left), TLS, transport. Stop order is the reverse, so that every
 * message a client was told is accepted is on disk before the spool closes.
 * Signals are taken synchronously by this thread (sigwait); workers never
 * see them.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "control/admin.h"
#include "control/av.h"
#include "control/config.h"
#include "control/filter.h"
#include "control/greylist.h"
#include "control/verify.h"
#include "control/rbl.h"
#include "control/log.h"
#include "control/server.h"
#include "control/spool.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

/* What the admin socket and the metrics endpoint read (control/admin.h). */
struct admin_ctx {
	const struct ctl_config *cfg;
	struct ctl_server *srv;
	struct ctl_queue *q;
	struct ctl_rbl *rbl;
	struct ctl_greylist *gl;
	bool filter, av;
	time_t started;
};

static void
admin_metrics(void *arg, FILE *f)
{
	struct admin_ctx *a = arg;
	ctl_server_metrics(a->srv, f);
	struct ctl_queue_stats qs;
	ctl_queue_stats(a->q, &qs);
	fprintf(f, "# HELP sluice_queue_messages Messages waiting for delivery.\n"
	        "# TYPE sluice_queue_messages gauge\nsluice_queue_messages %llu\n"
	        "# HELP sluice_delivered_total Recipients delivered.\n"
	        "# TYPE sluice_delivered_total counter\nsluice_delivered_total %llu\n"
	        "# HELP sluice_deferred_total Delivery attempts that failed for now.\n"
	        "# TYPE sluice_deferred_total counter\nsluice_deferred_total %llu\n"
	        "# HELP sluice_bounced_total Recipients given up on.\n"
	        "# TYPE sluice_bounced_total counter\nsluice_bounced_total %llu\n"
	        "# HELP sluice_spool_bytes Bytes of live spool segments.\n"
	        "# TYPE sluice_spool_bytes gauge\nsluice_spool_bytes %llu\n",
	        (unsigned long long)qs.queued, (unsigned long long)qs.delivered,
	        (unsigned long long)qs.deferred, (unsigned long long)qs.bounced,
	        (unsigned long long)qs.spool_bytes);
	if (a->rbl != NULL) {
		struct ctl_rbl_stats rs;
		ctl_rbl_stats(a->rbl, &rs);
		fprintf(f, "# HELP sluice_rbl_checks_total Client addresses checked against the DNS "
		        "lists, by verdict.\n# TYPE sluice_rbl_checks_total counter\n"
		        "sluice_rbl_checks_total{verdict=\"pass\"} %llu\n"
		        "sluice_rbl_checks_total{verdict=\"listed\"} %llu\n"
		        "sluice_rbl_checks_total{verdict=\"tempfail\"} %llu\n"
		        "sluice_rbl_checks_total{verdict=\"skipped\"} %llu\n"
		        "# HELP sluice_rbl_cache_hits_total Checks answered from the cache.\n"
		        "# TYPE sluice_rbl_cache_hits_total counter\nsluice_rbl_cache_hits_total %llu\n"
		        "# HELP sluice_rbl_queries_total DNS queries sent.\n"
		        "# TYPE sluice_rbl_queries_total counter\nsluice_rbl_queries_total %llu\n",
		        (unsigned long long)rs.passed, (unsigned long long)rs.listed,
		        (unsigned long long)rs.tempfail, (unsigned long long)rs.skipped,
		        (unsigned long long)rs.cache_hits, (unsigned long long)rs.queries);
	}
}

static int
admin_command(void *arg, const char *line, FILE *out, char *err, size_t errlen)
{
	struct admin_ctx *a = arg;
	while (*line == ' ' || *line == '\t')
		line++;
	size_t n = strcspn(line, " \t");
	if (n == 6 && strncmp(line, "status", n) == 0) {
		struct ctl_queue_stats qs;
		ctl_queue_stats(a->q, &qs);
		struct ctl_server_counts sc;
		ctl_server_counts(a->srv, &sc);
		unsigned long long open = sc.conns_open;
		fprintf(out, "version %s\npid %ld\nuptime_s %lld\ntransport %s\nworkers %u\n"
		        "connections_open %llu\nqueue_messages %llu\nfilter %s\nantivirus %s\nrbl %s\n",
		        SLUICE_VERSION, (long)getpid(), (long long)(time(NULL) - a->started),
		        a->cfg->transport == CTL_TRANSPORT_DPDK ? "dpdk" : "kernel", a->cfg->workers,
		        open, (unsigned long long)qs.queued, a->filter ? "on" : "off",
		        a->av ? "on" : "off", a->rbl ? "on" : "off");
		fprintf(out, "greylist %s\nrecipient_domains %u\nrecipient_verify %s\n",
		        a->cfg->gl_enabled ? "on" : "off", a->cfg->rcpt_ndomains,
		        a->cfg->rcpt_verify ? "on" : "off");
		return 0;
	}
	if (n == 5 && strncmp(line, "stats", n) == 0) {
		admin_metrics(a, out);
		return 0;
	}
	if (n == 6 && strncmp(line, "reload", n) == 0) {
		kill(getpid(), SIGHUP);
		fprintf(out, "reloading the configuration's lists (access, recipients.domains, "
		        "rbl.tarpit, limits; event=reload)%s%s in the background\n",
		        a->filter ? ", the filter rules (event=filter_ready)" : "",
		        a->av ? ", the antivirus signatures (event=av_loaded)" : "");
		return 0;
	}
	if (n == 5 && strncmp(line, "queue", n) == 0) {
		struct ctl_queue_stats qs;
		ctl_queue_stats(a->q, &qs);
		fprintf(out, "waiting %llu\ndelivered %llu\ndeferred %llu\nbounced %llu\n"
		        "spool_bytes %llu\n(sluice-queue -c FILE list shows the messages)\n",
		        (unsigned long long)qs.queued, (unsigned long long)qs.delivered,
		        (unsigned long long)qs.deferred, (unsigned long long)qs.bounced,
		        (unsigned long long)qs.spool_bytes);
		return 0;
	}
	if (n == 6 && strncmp(line, "tarpit", n) == 0) {
		struct ctl_server_counts sc;
		ctl_server_counts(a->srv, &sc);
		fprintf(out, "held_now %llu\nheld_total %llu\nhold_ms %llu\ninterval_ms %llu\n",
		        (unsigned long long)sc.tarpit_open, (unsigned long long)sc.tarpit_total,
		        (unsigned long long)a->cfg->rbl_tarpit_ms,
		        (unsigned long long)a->cfg->tarpit_interval_ms);
		return 0;
	}
	if (n == 8 && strncmp(line, "greylist", n) == 0) {
		if (a->gl == NULL) {
			snprintf(err, errlen, "greylisting is off (greylist.enabled)");
			return -1;
		}
		struct ctl_greylist_stats gs;
		ctl_greylist_stats(a->gl, &gs);
		fprintf(out, "checks %llu\npassed %llu\ngreylisted %llu\nerrors %llu\nskipped %llu\n"
		        "redis %s\ndelay_ms %llu\n", (unsigned long long)gs.checks,
		        (unsigned long long)gs.passed, (unsigned long long)gs.greylisted,
		        (unsigned long long)gs.errors, (unsigned long long)gs.skipped, a->cfg->gl_redis,
		        (unsigned long long)a->cfg->gl_delay_ms);
		return 0;
	}
	if (n == 4 && strncmp(line, "help", n) == 0) {
		fputs("status   what runs, connections open, mail waiting\n"
		      "stats    every counter (Prometheus text format, as GET /metrics)\n"
		      "reload   reload the filter rules and antivirus signatures (as SIGHUP)\n"
		      "queue    the delivery queue's counts\n"
		      "tarpit   clients held in the tarpit now and in all\n"
		      "greylist the greylist's counts\n", out);
		return 0;
	}
	snprintf(err, errlen, "unknown command '%.*s'; 'help' lists them", (int)(n > 40 ? 40 : n), line);
	return -1;
}

/* SIGHUP, sluicectl reload: the configuration file read again; what the
 * server may change while it runs (control/server.h) comes from it, the
 * rest stays as it was at start. A file that does not load changes
 * nothing. */
static void
reload_policy(struct ctl_server *srv, const char *path)
{
	char err[1024];
	struct ctl_config *cfg = malloc(sizeof(*cfg));
	if (cfg == NULL) {
		ctl_log(CTL_LOG_ERR, "event=reload_failed error=\"out of memory\"");
		return;
	}
	if (ctl_config_load(path, cfg, err, sizeof(err)) < 0) {
		ctl_log(CTL_LOG_ERR, "event=reload_failed error=\"%s\" note=\"the running settings "
		        "stay\"", err);
		free(cfg);
		return;
	}
	ctl_server_reload_policy(srv, cfg);
	ctl_log(CTL_LOG_INFO, "event=reload applied=\"access recipients.domains rbl.tarpit limits\" "
	        "senders_deny=%u senders_allow=%u recipients_deny=%u recipients_allow=%u domains=%u "
	        "note=\"other settings take a restart\"", cfg->nacc[0], cfg->nacc[1], cfg->nacc[2],
	        cfg->nacc[3], cfg->rcpt_ndomains);
}

/* Start-up failed: stop what was started, newest first (NULL: not started). */
static int
start_failed(struct ctl_server *srv, struct ctl_verify *vfy, struct ctl_greylist *gl,
             struct ctl_rbl *rbl, struct ctl_filter *flt, struct ctl_av *av, struct ctl_queue *q,
             struct ctl_spool *sp, SSL_CTX *tls)
{
	ctl_server_stop(srv);
	ctl_verify_stop(vfy);
	ctl_greylist_stop(gl);
	ctl_rbl_stop(rbl);
	ctl_filter_free(flt);
	ctl_av_stop(av);
	ctl_queue_set_spool(q, NULL);
	ctl_spool_close(sp);
	ctl_queue_close(q);
	if (tls != NULL)
		SSL_CTX_free(tls);
	return 1;
}

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: sluiced -c FILE [--check]\n"
	        "  -c, --config FILE   configuration (YAML); see docs/CONFIG.md\n"
	        "      --check         validate the configuration and exit\n"
	        "  -V, --version       print the version\n"
	        "  -h, --help          this text\n");
}

static const char *
abs_path(const char *p, char *buf, size_t cap)
{
	if (p == NULL || p[0] == '/' || strchr(p, '%') != NULL)
		return p;
	char cwd[PATH_MAX];
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return p;
	snprintf(buf, cap, "%s/%s", cwd, p);
	return buf;
}

static const char *
delivery_name(enum ctl_delivery_method m)
{
	return m == CTL_DELIVER_MAILDIR ? "maildir" : m == CTL_DELIVER_LMTP ? "lmtp" : "discard";
}

/* Where mail goes, for the start-up lines: the Maildir path, the default
 * LMTP backend, or nowhere. */
static const char *
delivery_target(const struct ctl_config *cfg, char *buf, size_t cap)
{
	switch (cfg->delivery) {
	case CTL_DELIVER_MAILDIR: {
		const char *p = abs_path(cfg->maildir, buf, cap);
		if (p != buf)
			snprintf(buf, cap, "%s", p);
		return buf;
	}
	case CTL_DELIVER_LMTP:
		snprintf(buf, cap, "lmtp:%s (and routes)", cfg->lmtp_default ? cfg->lmtp_default : "-");
		return buf;
	default:
		return "nowhere (delivery.method: discard)";
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	int check = 0, ch;
	while ((ch = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': path = optarg; break;
		case 'k': check = 1; break;
		case 'V': printf("sluiced %s\n", SLUICE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (path == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}

	struct ctl_config cfg;
	char err[1024];
	if (ctl_config_load(path, &cfg, err, sizeof(err)) < 0 ||
	    ctl_config_check_files(&cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		return 1;
	}
#ifndef SLUICE_HAVE_DPDK
	if (cfg.transport != CTL_TRANSPORT_KERNEL) {
		fprintf(stderr, "sluiced: %s:%u: server.transport: only 'kernel' is available in this "
		        "build (sluiced was built without libdpdk)\n",
		        path, ctl_config_key_line(&cfg, "server.transport"));
		ctl_config_free(&cfg);
		return 1;
	}
#endif
	struct ctl_filter_conf fc;
	if (cfg.filter_enabled && ctl_filter_conf_from_config(&fc, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluiced: %s\n", err);
		ctl_config_free(&cfg);
		return 1;
	}
	if (check) {
		printf("sluiced: %s: configuration OK\n", path);
		ctl_config_free(&cfg);
		return 0;
	}

	/* Every thread started from here inherits this mask. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGQUIT);
	sigaddset(&sigs, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	int rc = ctl_log_open(cfg.log_file, cfg.log_level);
	if (rc < 0) {
		fprintf(stderr, "sluiced: log.file %s: %s\n", cfg.log_file, strerror(-rc));
		return 1;
	}

	struct ctl_queue_conf qc;
	ctl_queue_conf_from_config(&qc, &cfg);
	struct ctl_queue *q = ctl_queue_open(&qc);
	if (q == NULL) {
		ctl_log(CTL_LOG_ERR, "event=fatal what=queue error=%s", strerror(errno));
		return 1;
	}
	struct ctl_spool_conf sc = {
		.dir = cfg.spool_dir,
		.segment_max = cfg.spool_segment_max,
		.commit_delay_us = cfg.spool_commit_delay_us,
		.commit_batch_max = cfg.spool_commit_batch_max,
		.sync = cfg.spool_sync,
	};
	struct ctl_spool *sp = ctl_spool_open(&sc, q);
	if (sp == NULL) {
		ctl_log(CTL_LOG_ERR, "event=fatal what=spool dir=%s error=\"%s\" hint=\"check that the "
		        "directory exists or can be created and is writable\"", cfg.spool_dir, strerror(errno));
		ctl_queue_close(q);
		return 1;
	}
	ctl_queue_set_spool(q, sp);  /* bounces go back into the spool */
	struct ctl_spool_stats st;
	ctl_spool_stats(sp, &st);

	SSL_CTX *tls = NULL;
	if (cfg.tls_cert != NULL) {
		tls = ctl_tls_ctx_new(cfg.tls_cert, cfg.tls_key, err, sizeof(err));
		if (tls == NULL) {
			ctl_log(CTL_LOG_ERR, "event=fatal what=tls error=\"%s\"", err);
			return start_failed(NULL, NULL, NULL, NULL, NULL, NULL, q, sp, NULL);
		}
	}

	/* Antivirus: the signature database loads in the background; until it
	 * is loaded, mail with attachments gets 451 4.7.1. */
	struct ctl_av *av = NULL;
	if (cfg.av_enabled) {
		struct ctl_av_conf ac = {
			.database = cfg.av_database,
			.threads = cfg.av_threads,
			.timeout_ms = cfg.av_timeout_ms,
			.queue_max = cfg.av_queue_max,
			.max_scan_bytes = cfg.av_max_scan_bytes,
		};
		av = ctl_av_start(&ac);
		if (av == NULL) {
			ctl_log(CTL_LOG_ERR, "event=fatal what=antivirus error=%s", strerror(errno));
			return start_failed(NULL, NULL, NULL, NULL, NULL, NULL, q, sp, tls);
		}
	}

	/* Content filter: the rules load and compile on the filter's own thread
	 * (with the cache about a second; cold, Debian's rules take about two
	 * minutes); until then DATA gets 451 4.7.1. */
	struct ctl_filter *flt = NULL;
	if (cfg.filter_enabled && (flt = ctl_filter_new(&fc, err, sizeof(err))) == NULL) {
		ctl_log(CTL_LOG_ERR, "event=fatal what=filter error=\"%s\"", err);
		return start_failed(NULL, NULL, NULL, NULL, NULL, av, q, sp, tls);
	}

	/* DNS block and allow lists: a resolver thread of their own. */
	struct ctl_rbl *rbl = NULL;
	if (cfg.rbl_enabled) {
		struct ctl_rbl_conf rbc = {
			.zones = cfg.rbl_zones,
			.nzones = cfg.rbl_nzones,
			.threshold = cfg.rbl_threshold,
			.servers = cfg.rbl_servers,
			.timeout_ms = cfg.rbl_timeout_ms,
			.cache_ttl_ms = cfg.rbl_cache_ttl_ms,
			.negative_ttl_ms = cfg.rbl_negative_ttl_ms,
			.cache_max = cfg.rbl_cache_max,
			.skip = cfg.rbl_skip,
			.nskip = cfg.rbl_nskip,
		};
		if ((rbl = ctl_rbl_start(&rbc, err, sizeof(err))) == NULL) {
			ctl_log(CTL_LOG_ERR, "event=fatal what=rbl error=\"%s\"", err);
			return start_failed(NULL, NULL, NULL, NULL, flt, av, q, sp, tls);
		}
		char zones[512];
		ctl_rbl_zones_str(rbl, UINT32_MAX, zones, sizeof(zones));
		ctl_log(CTL_LOG_INFO, "event=rbl_start zones=%s threshold=%.2f servers=%s skip=%u",
		        zones, cfg.rbl_threshold, cfg.rbl_servers ? cfg.rbl_servers : "resolv.conf",
		        cfg.rbl_nskip);
	}

	/* Greylisting: its Redis connection on a thread of its own. */
	struct ctl_greylist *gl = NULL;
	if (cfg.gl_enabled) {
		struct ctl_greylist_conf gc = {
			.redis = cfg.gl_redis,
			.prefix = cfg.gl_prefix,
			.timeout_ms = cfg.gl_timeout_ms,
			.delay_ms = cfg.gl_delay_ms,
			.retry_window_ms = cfg.gl_retry_window_ms,
			.pass_ttl_ms = cfg.gl_pass_ttl_ms,
			.ipv4_prefix = cfg.gl_ipv4_prefix,
			.ipv6_prefix = cfg.gl_ipv6_prefix,
			.cache_ttl_ms = cfg.gl_cache_ttl_ms,
			.cache_max = 100000,
			.skip = cfg.gl_skip,
			.nskip = cfg.gl_nskip,
		};
		if ((gl = ctl_greylist_start(&gc, err, sizeof(err))) == NULL) {
			ctl_log(CTL_LOG_ERR, "event=fatal what=greylist error=\"%s\"", err);
			return start_failed(NULL, NULL, NULL, rbl, flt, av, q, sp, tls);
		}
		ctl_log(CTL_LOG_INFO, "event=greylist_start redis=%s delay_ms=%llu retry_window_ms=%llu "
		        "pass_ttl_ms=%llu on_error=%s", cfg.gl_redis, (unsigned long long)cfg.gl_delay_ms,
		        (unsigned long long)cfg.gl_retry_window_ms, (unsigned long long)cfg.gl_pass_ttl_ms,
		        cfg.gl_on_error ? "tempfail" : "accept");
	}

	/* Recipient verification: the LMTP backends asked at RCPT. */
	struct ctl_verify *vfy = NULL;
	if (cfg.rcpt_verify) {
		struct ctl_verify_conf vc = {
			.hostname = cfg.hostname,
			.dflt = cfg.lmtp_default,
			.routes = cfg.routes,
			.nroutes = cfg.nroutes,
			.timeout_ms = cfg.rcpt_verify_timeout_ms,
			.ttl_ms = cfg.rcpt_verify_ttl_ms,
			.negative_ttl_ms = cfg.rcpt_verify_negative_ttl_ms,
		};
		if ((vfy = ctl_verify_start(&vc, err, sizeof(err))) == NULL) {
			ctl_log(CTL_LOG_ERR, "event=fatal what=verify error=\"%s\"", err);
			return start_failed(NULL, NULL, gl, rbl, flt, av, q, sp, tls);
		}
	}

	struct ctl_server *srv = ctl_server_start(&cfg, sp, av, flt, rbl, gl, vfy, tls, err,
	                                          sizeof(err));
	if (srv == NULL) {
		ctl_log(CTL_LOG_ERR, "event=fatal what=listen error=\"%s\"", err);
		start_failed(NULL, vfy, gl, rbl, flt, av, q, sp, tls);
		ctl_log_close();
		ctl_config_free(&cfg);
		return 1;
	}

	/* The admin socket (sluicectl) and GET /metrics. */
	struct admin_ctx actx = { .cfg = &cfg, .srv = srv, .q = q, .rbl = rbl, .gl = gl,
	                          .filter = flt != NULL, .av = av != NULL, .started = time(NULL) };
	char sockbuf[PATH_MAX];
	struct ctl_admin_conf adc = {
		.socket_path = ctl_config_admin_socket(&cfg, sockbuf, sizeof(sockbuf)),
		.http = cfg.admin_http ? (const struct sockaddr *)&cfg.admin_http_addr : NULL,
		.http_len = cfg.admin_http_len,
		.command = admin_command,
		.metrics = admin_metrics,
		.ctx = &actx,
	};
	if (adc.socket_path == NULL && ctl_config_key_line(&cfg, "admin.socket") == 0)
		ctl_log(CTL_LOG_WARN, "event=admin_socket_off reason=\"SPOOL/admin.sock is longer than "
		        "a unix socket path may be\" hint=\"set admin.socket\"");
	struct ctl_admin *admin = NULL;
	if ((adc.socket_path != NULL || adc.http != NULL) &&
	    (admin = ctl_admin_start(&adc, err, sizeof(err))) == NULL) {
		ctl_log(CTL_LOG_ERR, "event=fatal what=admin error=\"%s\"", err);
		return start_failed(srv, vfy, gl, rbl, flt, av, q, sp, tls);
	}
	if (admin != NULL)
		ctl_log(CTL_LOG_INFO, "event=admin_start socket=%s metrics=%s",
		        adc.socket_path ? adc.socket_path : "-", cfg.admin_http ? cfg.admin_http : "-");

	char buf1[PATH_MAX + 64], buf2[PATH_MAX + 64];
	char listen[512] = "";
	for (unsigned i = 0; i < cfg.nlisten; i++)
		snprintf(listen + strlen(listen), sizeof(listen) - strlen(listen), "%s%s%s",
		         i ? "," : "", cfg.listen[i].text, cfg.listen[i].proxy_protocol ? "(proxy)" : "");
	ctl_log(CTL_LOG_INFO,
	        "event=start version=%s transport=%s workers=%u listen=%s starttls=%s "
	        "spool=%s recovered=%llu delivery=%s to=%s",
	        SLUICE_VERSION, cfg.transport == CTL_TRANSPORT_DPDK ? "dpdk" : "kernel",
	        cfg.workers, listen, tls ? "yes" : "no",
	        abs_path(cfg.spool_dir, buf1, sizeof(buf1)), (unsigned long long)st.recovered,
	        delivery_name(cfg.delivery), delivery_target(&cfg, buf2, sizeof(buf2)));
	fprintf(stderr, "sluiced: listening on %s; mail is delivered to %s\n", listen,
	        delivery_target(&cfg, buf2, sizeof(buf2)));

	for (;;) {
		int sig = 0;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			ctl_server_log_stats(srv);  /* DPDK: one event=dp_stats line per worker */
			continue;
		}
		if (sig == SIGHUP) {
			reload_policy(srv, path);
			if (flt != NULL) {
				ctl_log(CTL_LOG_INFO, "event=sighup action=filter_reload");
				ctl_filter_reload(flt);
			}
			if (av != NULL) {
				ctl_log(CTL_LOG_INFO, "event=sighup action=antivirus_reload");
				ctl_av_reload(av);
			}
			continue;
		}
		ctl_log(CTL_LOG_INFO, "event=stopping signal=%d", sig);
		break;
	}

	admin = ctl_admin_stop(admin);  /* first: it reads everything below */
	srv = ctl_server_stop(srv);
	av = ctl_av_stop(av);  /* after the server: its workers wait for verdicts */
	flt = ctl_filter_free(flt);  /* after the server: workers hold engines */
	gl = ctl_greylist_stop(gl);  /* after the server: its workers wait for answers */
	vfy = ctl_verify_stop(vfy);
	if (rbl != NULL) {  /* after the server: its workers wait for answers */
		struct ctl_rbl_stats rs;
		ctl_rbl_stats(rbl, &rs);
		ctl_log(CTL_LOG_INFO, "event=rbl_stats checks=%llu cache_hits=%llu queries=%llu "
		        "listed=%llu passed=%llu tempfail=%llu skipped=%llu refused_answers=%llu",
		        (unsigned long long)rs.checks, (unsigned long long)rs.cache_hits,
		        (unsigned long long)rs.queries, (unsigned long long)rs.listed,
		        (unsigned long long)rs.passed, (unsigned long long)rs.tempfail,
		        (unsigned long long)rs.skipped, (unsigned long long)rs.refused_answers);
		rbl = ctl_rbl_stop(rbl);
	}
	ctl_queue_set_spool(q, NULL);
	sp = ctl_spool_close(sp);
	struct ctl_queue_stats qs;
	ctl_queue_stats(q, &qs);
	q = ctl_queue_close(q);
	if (tls != NULL)
		SSL_CTX_free(tls);
	ctl_log(CTL_LOG_INFO, "event=stopped delivered=%llu queued=%llu",
	        (unsigned long long)qs.delivered, (unsigned long long)qs.queued);
	ctl_log_close();
	ctl_config_free(&cfg);
	return 0;
}
