/*
 * rbl.c - DNS block and allow lists at connect time; see rbl.h.
 *
 * One resolver thread owns the c-ares channel: it takes requests from a
 * wait-free queue (woken by an eventfd), asks every distinct zone once per
 * address, and answers on its own thread through q->done(). Workers read
 * the cache (control/rcache.h) without a lock; only the resolver thread
 * writes it.
 */
#include "control/rbl.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <urcu/urcu-memb.h>

#include "control/log.h"
#include "control/rcache.h"
#include "control/wakeq.h"

/* A distinct zone name and the config entries that read its answer. */
struct rbl_uzone {
	const char *zone;
	uint32_t entries;
};

/* What the cache keeps for an address. */
struct rbl_val {
	enum ctl_rbl_verdict verdict;
	uint32_t listed;
	double score;
};

/* One zone asked for one request. */
struct rbl_query {
	struct ctl_rbl *r;
	struct ctl_rbl_req *q;
	unsigned uz;
};

struct ctl_rbl {
	struct ctl_rbl_conf conf;
	struct rbl_uzone uz[CTL_RBL_ZONES_MAX];
	unsigned nuz;
	ares_channel ch;
	pthread_t th;
	atomic_bool stop;
	struct ctl_wakeq wq;           /* requests from the workers */
	struct ctl_rcache *cache;
	unsigned outstanding;          /* requests with queries out */
	_Atomic uint64_t checks, hits, queries, listed, passed, tempfail, skipped, refused;
};

int
ctl_rbl_qname(const uint8_t addr[16], const char *zone, char *out, size_t len)
{
	int n;
	if (ctl_addr16_is_v4(addr)) {
		n = snprintf(out, len, "%u.%u.%u.%u.%s", addr[15], addr[14], addr[13], addr[12], zone);
	} else {
		static const char hex[] = "0123456789abcdef";
		char nib[64];
		for (int i = 0; i < 16; i++) {
			nib[4 * i] = hex[addr[15 - i] & 0xf];
			nib[4 * i + 1] = '.';
			nib[4 * i + 2] = hex[addr[15 - i] >> 4];
			nib[4 * i + 3] = '.';
		}
		n = snprintf(out, len, "%.64s%s", nib, zone);
	}
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

bool
ctl_rbl_addr_skipped(const struct ctl_rbl *r, const uint8_t addr[16])
{
	return ctl_nets_match(r->conf.skip, r->conf.nskip, addr);
}

void
ctl_rbl_zones_str(const struct ctl_rbl *r, uint32_t bits, char *buf, size_t len)
{
	size_t k = 0;
	if (len == 0)
		return;
	buf[0] = '\0';
	for (unsigned i = 0; i < r->conf.nzones && k < len; i++) {
		if (!(bits & (1u << i)))
			continue;
		const struct ctl_rbl_zone *z = &r->conf.zones[i];
		int n;
		if (z->code) {
			struct in_addr in = { htonl(z->code) };
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &in, a, sizeof(a));
			n = snprintf(buf + k, len - k, "%s%s=%s", k ? "," : "", z->zone, a);
		} else {
			n = snprintf(buf + k, len - k, "%s%s", k ? "," : "", z->zone);
		}
		if (n < 0)
			return;
		k += (size_t)n;
	}
}

static void
count_verdict(struct ctl_rbl *r, enum ctl_rbl_verdict v)
{
	switch (v) {
	case CTL_RBL_LISTED: atomic_fetch_add(&r->listed, 1); break;
	case CTL_RBL_PASS: atomic_fetch_add(&r->passed, 1); break;
	case CTL_RBL_TEMPFAIL: atomic_fetch_add(&r->tempfail, 1); break;
	case CTL_RBL_SKIPPED: atomic_fetch_add(&r->skipped, 1); break;
	}
}

int
ctl_rbl_check(struct ctl_rbl *r, struct ctl_rbl_req *q)
{
	atomic_fetch_add(&r->checks, 1);
	q->listed = q->failed = 0;
	q->score = 0;
	q->cached = false;
	if (ctl_nets_match(r->conf.skip, r->conf.nskip, q->addr)) {
		q->verdict = CTL_RBL_SKIPPED;
		count_verdict(r, q->verdict);
		return 0;
	}
	struct rbl_val v;
	bool hit = ctl_rcache_get(r->cache, q->addr, 16, &v, sizeof(v), ctl_mono_ms());
	if (hit) {
		q->verdict = v.verdict;
		q->score = v.score;
		q->listed = v.listed;
		q->cached = true;
		atomic_fetch_add(&r->hits, 1);
		count_verdict(r, q->verdict);
		return 0;
	}
	ctl_wakeq_push(&r->wq, &q->node);
	return 1;
}

/* ---- the resolver thread ------------------------------------------------ */

static void
cache_put(struct ctl_rbl *r, const struct ctl_rbl_req *q, uint64_t ttl_ms)
{
	struct rbl_val v = { .verdict = q->verdict, .listed = q->listed, .score = q->score };
	uint64_t now = ctl_mono_ms();
	ctl_rcache_put(r->cache, q->addr, 16, &v, sizeof(v), now + ttl_ms, now);
}

static void
finish(struct ctl_rbl *r, struct ctl_rbl_req *q)
{
	double score = 0, lo = 0, hi = 0;
	for (unsigned i = 0; i < r->conf.nzones; i++) {
		double w = r->conf.zones[i].weight;
		if (q->listed & (1u << i))
			score += w;
		else if ((q->failed & (1u << i)) && w < 0)
			lo += w;
		else if (q->failed & (1u << i))
			hi += w;
	}
	double thr = r->conf.threshold;
	q->score = score;
	if (score + lo >= thr)
		q->verdict = CTL_RBL_LISTED;
	else if (score + hi < thr)
		q->verdict = CTL_RBL_PASS;
	else
		q->verdict = CTL_RBL_TEMPFAIL;
	if (q->failed == 0)
		cache_put(r, q, q->listed ? q->ttl_ms : r->conf.negative_ttl_ms);
	count_verdict(r, q->verdict);
	r->outstanding--;
	q->done(q);
}

static void
on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct rbl_query *qq = arg;
	struct ctl_rbl *r = qq->r;
	struct ctl_rbl_req *q = qq->q;
	uint32_t mask = r->uz[qq->uz].entries;
	(void)timeouts;

	if (status == ARES_SUCCESS) {
		struct ares_addrttl at[16];
		int nat = 16;
		int pr = ares_parse_a_reply(abuf, alen, NULL, at, &nat);
		if (pr == ARES_ENODATA) {
			nat = 0;
		} else if (pr != ARES_SUCCESS) {
			q->failed |= mask;
			nat = 0;
			ctl_log(CTL_LOG_WARN, "event=rbl_bad_answer zone=%s error=\"%s\"",
			        r->uz[qq->uz].zone, ares_strerror(pr));
		}
		for (int k = 0; k < nat; k++) {
			uint32_t a = ntohl(at[k].ipaddr.s_addr);
			if ((a >> 24) != 127 || (a >> 8) == 0x7fffffu) {
				/* a refusal (127.255.255.x) or a resolver that
				 * answers for names that do not exist */
				if (atomic_fetch_add(&r->refused, 1) < 20)
					ctl_log(CTL_LOG_WARN, "event=rbl_refused zone=%s answer=%u.%u.%u.%u "
					        "hint=\"the list refuses this resolver or the resolver rewrites "
					        "answers; point rbl.servers at a resolver of your own\"",
					        r->uz[qq->uz].zone, a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
				continue;
			}
			for (unsigned i = 0; i < r->conf.nzones; i++) {
				if (!(mask & (1u << i)))
					continue;
				if (r->conf.zones[i].code && r->conf.zones[i].code != a)
					continue;
				q->listed |= 1u << i;
				uint64_t ttl = (uint64_t)(at[k].ttl > 0 ? at[k].ttl : 0) * 1000u;
				if (ttl > r->conf.cache_ttl_ms)
					ttl = r->conf.cache_ttl_ms;
				if (ttl < q->ttl_ms)
					q->ttl_ms = ttl;
			}
		}
	} else if (status != ARES_ENOTFOUND && status != ARES_ENODATA) {
		q->failed |= mask;
		if (status != ARES_EDESTRUCTION && status != ARES_ECANCELLED)
			ctl_log(CTL_LOG_WARN, "event=rbl_lookup_failed zone=%s error=\"%s\"",
			        r->uz[qq->uz].zone, ares_strerror(status));
	}
	free(qq);
	if (--q->pending == 0)
		finish(r, q);
}

static void
start(struct ctl_rbl *r, struct ctl_rbl_req *q)
{
	q->pending = r->nuz;
	q->ttl_ms = r->conf.cache_ttl_ms;
	r->outstanding++;
	for (unsigned u = 0; u < r->nuz; u++) {
		char name[320];
		struct rbl_query *qq = malloc(sizeof(*qq));
		if (qq == NULL || ctl_rbl_qname(q->addr, r->uz[u].zone, name, sizeof(name)) < 0) {
			free(qq);
			q->failed |= r->uz[u].entries;
			if (--q->pending == 0)
				finish(r, q);
			continue;
		}
		qq->r = r;
		qq->q = q;
		qq->uz = u;
		atomic_fetch_add(&r->queries, 1);
		ares_query(r->ch, name, ns_c_in, ns_t_a, on_answer, qq);
	}
}

static void
take_requests(struct ctl_rbl *r)
{
	struct cds_wfcq_node *node;
	while ((node = ctl_wakeq_pop(&r->wq)) != NULL)
		start(r, caa_container_of(node, struct ctl_rbl_req, node));
}

static void *
resolver_main(void *arg)
{
	struct ctl_rbl *r = arg;
	urcu_memb_register_thread();
	while (!atomic_load(&r->stop)) {
		struct pollfd pfd[ARES_GETSOCK_MAXNUM + 1];
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		int bits = ares_getsock(r->ch, socks, ARES_GETSOCK_MAXNUM);
		nfds_t n = 0;
		pfd[n++] = (struct pollfd){ .fd = ctl_wakeq_fd(&r->wq), .events = POLLIN };
		/* bit i: socket i readable, bit 16 + i: writable (c-ares's own
		 * macros shift a signed 1 into the sign bit) */
		unsigned ubits = (unsigned)bits;
		for (unsigned i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short ev = 0;
			if ((ubits >> i) & 1u)
				ev |= POLLIN;
			if ((ubits >> (i + ARES_GETSOCK_MAXNUM)) & 1u)
				ev |= POLLOUT;
			if (ev)
				pfd[n++] = (struct pollfd){ .fd = socks[i], .events = ev };
		}
		struct timeval maxtv = { 1, 0 }, tv, *tvp = ares_timeout(r->ch, &maxtv, &tv);
		int ms = (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000);
		int k = poll(pfd, n, ms);
		if (k < 0 && errno != EINTR) {
			ctl_log(CTL_LOG_ERR, "event=rbl_poll_failed error=\"%s\"", strerror(errno));
			struct timespec ts = { 0, 10000000 };
			nanosleep(&ts, NULL);
		}
		if (k > 0 && (pfd[0].revents & POLLIN))
			ctl_wakeq_ack(&r->wq);
		for (nfds_t i = 1; k > 0 && i < n; i++) {
			if (!pfd[i].revents)
				continue;
			ares_socket_t rfd = (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) ? pfd[i].fd
			                                                                   : ARES_SOCKET_BAD;
			ares_socket_t wfd = (pfd[i].revents & POLLOUT) ? pfd[i].fd : ARES_SOCKET_BAD;
			ares_process_fd(r->ch, rfd, wfd);
		}
		ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  /* timeouts */
		take_requests(r);
	}
	/* Whatever is still out is answered: failed (ARES_ECANCELLED), and
	 * what was never asked likewise. */
	ares_cancel(r->ch);
	struct cds_wfcq_node *qn;
	while ((qn = ctl_wakeq_pop(&r->wq)) != NULL) {
		struct ctl_rbl_req *q = caa_container_of(qn, struct ctl_rbl_req, node);
		q->failed = UINT32_MAX >> (32 - r->conf.nzones);
		q->pending = 0;
		r->outstanding++;
		finish(r, q);
	}
	/* the cache empties here, on the one thread that writes it; the
	 * workers that read it have stopped */
	ctl_rcache_clear(r->cache);
	urcu_memb_unregister_thread();
	return NULL;
}

struct ctl_rbl *
ctl_rbl_start(const struct ctl_rbl_conf *conf, char *err, size_t errlen)
{
	int rc;
	struct ctl_rbl *r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->conf = *conf;
	r->wq.efd = -1;
	if (conf->nzones == 0 || conf->nzones > CTL_RBL_ZONES_MAX) {
		snprintf(err, errlen, "rbl: 1 to %d zones, got %u", CTL_RBL_ZONES_MAX, conf->nzones);
		goto fail;
	}
	for (unsigned i = 0; i < conf->nzones; i++) {
		unsigned u;
		for (u = 0; u < r->nuz; u++)
			if (strcasecmp(r->uz[u].zone, conf->zones[i].zone) == 0)
				break;
		if (u == r->nuz)
			r->uz[r->nuz++].zone = conf->zones[i].zone;
		r->uz[u].entries |= 1u << i;
	}
	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, errlen, "rbl: c-ares: %s", ares_strerror(rc));
		goto fail;
	}
	struct ares_options o = { 0 };
	/* two tries per server within the zone's time */
	o.timeout = (int)(conf->timeout_ms / 2 > 0 ? conf->timeout_ms / 2 : 1);
	o.tries = 2;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	if ((rc = ares_init_options(&r->ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS)) !=
	    ARES_SUCCESS) {
		snprintf(err, errlen, "rbl: c-ares: %s", ares_strerror(rc));
		ares_library_cleanup();
		goto fail;
	}
	if (conf->servers != NULL && (rc = ares_set_servers_ports_csv(r->ch, conf->servers)) != ARES_SUCCESS) {
		snprintf(err, errlen, "rbl.servers: '%s': %s", conf->servers, ares_strerror(rc));
		goto fail_ares;
	}
	r->cache = ctl_rcache_new(conf->cache_max);
	if (r->cache == NULL || (rc = ctl_wakeq_init(&r->wq)) < 0) {
		snprintf(err, errlen, "rbl: %s", r->cache == NULL ? "out of memory" : strerror(-rc));
		goto fail_ares;
	}
	if ((rc = pthread_create(&r->th, NULL, resolver_main, r)) != 0) {
		snprintf(err, errlen, "rbl: thread: %s", strerror(rc));
		goto fail_ares;
	}
	pthread_setname_np(r->th, "sluice-rbl");
	return r;
fail_ares:
	ctl_wakeq_fini(&r->wq);
	ctl_rcache_free(r->cache);
	ares_destroy(r->ch);
	ares_library_cleanup();
fail:
	free(r);
	return NULL;
}

struct ctl_rbl *
ctl_rbl_stop(struct ctl_rbl *r)
{
	if (r == NULL)
		return NULL;
	atomic_store(&r->stop, true);
	ctl_wakeq_kick(&r->wq);
	pthread_join(r->th, NULL);
	ares_destroy(r->ch);
	ares_library_cleanup();
	ctl_rcache_free(r->cache);  /* emptied by the resolver thread */
	ctl_wakeq_fini(&r->wq);
	free(r);
	return NULL;
}

void
ctl_rbl_stats(const struct ctl_rbl *r, struct ctl_rbl_stats *st)
{
	struct ctl_rbl *m = (struct ctl_rbl *)r;
	st->checks = atomic_load(&m->checks);
	st->cache_hits = atomic_load(&m->hits);
	st->queries = atomic_load(&m->queries);
	st->listed = atomic_load(&m->listed);
	st->passed = atomic_load(&m->passed);
	st->tempfail = atomic_load(&m->tempfail);
	st->skipped = atomic_load(&m->skipped);
	st->refused_answers = atomic_load(&m->refused);
}
