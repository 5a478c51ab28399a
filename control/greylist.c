/*
 * greylist.c - greylisting with its state in Redis; see greylist.h.
 */
#include "control/greylist.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <urcu/urcu-memb.h>

#include "control/log.h"
#include "control/rcache.h"
#include "control/wakeq.h"

/*
 * KEYS[1] the triplet; ARGV: now (s), delay (s), retry window (s), pass
 * TTL (s). Returns {1, 0} to pass, {0, seconds to wait} to greylist.
 */
static const char GL_SCRIPT[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"local now = tonumber(ARGV[1])\n"
	"local delay = tonumber(ARGV[2])\n"
	"if v == 'p' then\n"
	"  redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
	"  return {1, 0}\n"
	"end\n"
	"if v then\n"
	"  local first = tonumber(string.sub(v, 3))\n"
	"  if first and now - first >= delay then\n"
	"    redis.call('SET', KEYS[1], 'p', 'PX', ARGV[4])\n"
	"    return {1, 0}\n"
	"  end\n"
	"  if first then return {0, delay - (now - first)} end\n"
	"end\n"
	"redis.call('SET', KEYS[1], 'f:' .. ARGV[1], 'PX', ARGV[3])\n"
	"return {0, delay}\n";

struct ctl_greylist {
	struct ctl_greylist_conf conf;
	char *redis, *prefix;
	pthread_t th;
	atomic_bool stop;
	struct ctl_wakeq wq;           /* requests from the workers */
	redisContext *rc;              /* the thread's */
	struct ctl_rcache *cache;      /* passed triplets */
	uint64_t retry_at_ms;          /* no reconnect before this */
	uint64_t backoff_ms;
	_Atomic uint64_t checks, passed, grey, errors, skipped;
};

/* s into d (cap bytes), lower case; a BATV tag dropped when strip_batv. */
static void
norm_addr(char *d, size_t cap, const char *s, bool strip_batv)
{
	if (strip_batv && strncasecmp(s, "prvs=", 5) == 0) {
		const char *eq = strchr(s + 5, '=');
		const char *at = strchr(s, '@');
		if (eq != NULL && at != NULL && eq < at)
			s = eq + 1;
	}
	size_t i = 0;
	for (; s[i] && i + 1 < cap; i++)
		d[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
	d[i] = '\0';
}

void
ctl_greylist_req_init(struct ctl_gl_req *q, const uint8_t addr[16], const char *sender,
                      const char *rcpt)
{
	memcpy(q->addr, addr, 16);
	norm_addr(q->sender, sizeof(q->sender), sender ? sender : "", true);
	norm_addr(q->rcpt, sizeof(q->rcpt), rcpt ? rcpt : "", false);
	q->verdict = CTL_GL_ERROR;
	q->wait_s = 0;
}

int
ctl_greylist_key(const struct ctl_greylist_conf *conf, const struct ctl_gl_req *q, char *out,
                 size_t len)
{
	uint8_t net[16];
	char a[INET6_ADDRSTRLEN];
	memcpy(net, q->addr, 16);
	bool v4 = ctl_addr16_is_v4(q->addr);
	unsigned bits = v4 ? 96 + conf->ipv4_prefix : conf->ipv6_prefix;
	for (unsigned i = 0; i < 16; i++) {
		unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
		if (keep < 8)
			net[i] &= (uint8_t)(0xff00u >> keep);
	}
	if (v4)
		inet_ntop(AF_INET, net + 12, a, sizeof(a));
	else
		inet_ntop(AF_INET6, net, a, sizeof(a));
	int n = snprintf(out, len, "%s%s/%u|%s|%s", conf->prefix, a,
	                 v4 ? conf->ipv4_prefix : conf->ipv6_prefix, q->sender, q->rcpt);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int
ctl_greylist_check(struct ctl_greylist *g, struct ctl_gl_req *q)
{
	atomic_fetch_add(&g->checks, 1);
	q->cached = false;
	if (ctl_nets_match(g->conf.skip, g->conf.nskip, q->addr)) {
		q->verdict = CTL_GL_SKIPPED;
		atomic_fetch_add(&g->skipped, 1);
		return 0;
	}
	char key[CTL_RCACHE_KEY_MAX];
	uint8_t none;
	if (ctl_greylist_key(&g->conf, q, key, sizeof(key)) == 0 &&
	    ctl_rcache_get(g->cache, key, strlen(key), &none, 0, ctl_mono_ms())) {
		q->verdict = CTL_GL_PASS;
		q->cached = true;
		atomic_fetch_add(&g->passed, 1);
		return 0;
	}
	ctl_wakeq_push(&g->wq, &q->node);
	return 1;
}

/* ---- the Redis thread ---------------------------------------------------- */

static bool
connect_redis(struct ctl_greylist *g)
{
	uint64_t now = ctl_mono_ms();
	if (g->rc != NULL)
		return true;
	if (now < g->retry_at_ms)
		return false;
	struct timeval tv = { (time_t)(g->conf.timeout_ms / 1000),
	                      (suseconds_t)(g->conf.timeout_ms % 1000) * 1000 };
	redisContext *rc;
	if (strncmp(g->redis, "unix:", 5) == 0) {
		rc = redisConnectUnixWithTimeout(g->redis + 5, tv);
	} else {
		char host[128];
		const char *colon = strrchr(g->redis, ':');
		const char *h = g->redis;
		size_t hl = colon ? (size_t)(colon - h) : strlen(h);
		if (hl > 1 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl >= sizeof(host))
			hl = sizeof(host) - 1;
		memcpy(host, h, hl);
		host[hl] = '\0';
		rc = redisConnectWithTimeout(host, colon ? atoi(colon + 1) : 6379, tv);
	}
	if (rc == NULL || rc->err) {
		g->backoff_ms = g->backoff_ms ? g->backoff_ms * 2 : 100;
		if (g->backoff_ms > 5000)
			g->backoff_ms = 5000;
		g->retry_at_ms = now + g->backoff_ms;
		ctl_log(CTL_LOG_WARN, "event=greylist_redis_down redis=%s error=\"%s\" retry_ms=%llu",
		        g->redis, rc ? rc->errstr : "out of memory", (unsigned long long)g->backoff_ms);
		if (rc != NULL)
			redisFree(rc);
		return false;
	}
	redisSetTimeout(rc, tv);
	if (g->backoff_ms)
		ctl_log(CTL_LOG_INFO, "event=greylist_redis_up redis=%s", g->redis);
	g->backoff_ms = 0;
	g->rc = rc;
	return true;
}

static void
answer(struct ctl_greylist *g, struct ctl_gl_req *q)
{
	char key[CTL_RCACHE_KEY_MAX];
	q->verdict = CTL_GL_ERROR;
	if (ctl_greylist_key(&g->conf, q, key, sizeof(key)) == 0 && connect_redis(g)) {
		char now[24], delay[24], window[24], pass[24];
		snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
		snprintf(delay, sizeof(delay), "%llu", (unsigned long long)(g->conf.delay_ms / 1000));
		snprintf(window, sizeof(window), "%llu", (unsigned long long)g->conf.retry_window_ms);
		snprintf(pass, sizeof(pass), "%llu", (unsigned long long)g->conf.pass_ttl_ms);
		const char *argv[] = { "EVAL", GL_SCRIPT, "1", key, now, delay, window, pass };
		redisReply *r = redisCommandArgv(g->rc, 8, argv, NULL);
		if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		    r->element[0]->type == REDIS_REPLY_INTEGER &&
		    r->element[1]->type == REDIS_REPLY_INTEGER) {
			q->verdict = r->element[0]->integer == 1 ? CTL_GL_PASS : CTL_GL_GREY;
			q->wait_s = r->element[1]->integer > 0 ? (uint64_t)r->element[1]->integer : 0;
			if (q->verdict == CTL_GL_PASS && g->conf.cache_ttl_ms > 0) {
				uint64_t t = ctl_mono_ms(), ttl = g->conf.cache_ttl_ms;
				if (ttl > g->conf.pass_ttl_ms)
					ttl = g->conf.pass_ttl_ms;
				ctl_rcache_put(g->cache, key, strlen(key), NULL, 0, t + ttl, t);
			}
		} else {
			ctl_log(CTL_LOG_WARN, "event=greylist_redis_error redis=%s error=\"%s\"", g->redis,
			        r == NULL ? g->rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str
			                                                                : "unexpected reply");
			if (r == NULL) {  /* the connection is gone: a new one next time */
				redisFree(g->rc);
				g->rc = NULL;
			}
		}
		freeReplyObject(r);
	}
	switch (q->verdict) {
	case CTL_GL_PASS: atomic_fetch_add(&g->passed, 1); break;
	case CTL_GL_GREY: atomic_fetch_add(&g->grey, 1); break;
	default: atomic_fetch_add(&g->errors, 1); break;
	}
	q->done(q);
}

static void *
gl_main(void *arg)
{
	struct ctl_greylist *g = arg;
	urcu_memb_register_thread();  /* the cache's writer */
	while (!atomic_load(&g->stop)) {
		ctl_wakeq_wait(&g->wq, 1000);
		struct cds_wfcq_node *node;
		while (!atomic_load(&g->stop) && (node = ctl_wakeq_pop(&g->wq)) != NULL)
			answer(g, caa_container_of(node, struct ctl_gl_req, node));
	}
	struct cds_wfcq_node *node;
	while ((node = ctl_wakeq_pop(&g->wq)) != NULL) {
		struct ctl_gl_req *q = caa_container_of(node, struct ctl_gl_req, node);
		q->verdict = CTL_GL_ERROR;
		atomic_fetch_add(&g->errors, 1);
		q->done(q);
	}
	if (g->rc != NULL)
		redisFree(g->rc);
	ctl_rcache_clear(g->cache);
	urcu_memb_unregister_thread();
	return NULL;
}

/* What start allocated (the thread stopped or never started). */
static void
gl_free(struct ctl_greylist *g)
{
	if (g == NULL)
		return;
	ctl_wakeq_fini(&g->wq);
	ctl_rcache_free(g->cache);
	free(g->redis);
	free(g->prefix);
	free(g);
}

struct ctl_greylist *
ctl_greylist_start(const struct ctl_greylist_conf *conf, char *err, size_t errlen)
{
	struct ctl_greylist *g = calloc(1, sizeof(*g));
	if (g != NULL)
		g->wq.efd = -1;
	if (g == NULL || (g->redis = strdup(conf->redis)) == NULL ||
	    (g->prefix = strdup(conf->prefix)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	g->conf = *conf;
	g->conf.redis = g->redis;
	g->conf.prefix = g->prefix;
	if ((g->cache = ctl_rcache_new(conf->cache_ttl_ms ? conf->cache_max : 0)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	int rc = ctl_wakeq_init(&g->wq);
	if (rc < 0) {
		snprintf(err, errlen, "greylist: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = pthread_create(&g->th, NULL, gl_main, g)) != 0) {
		snprintf(err, errlen, "greylist: thread: %s", strerror(rc));
		goto fail;
	}
	pthread_setname_np(g->th, "sluice-grey");
	return g;
fail:
	gl_free(g);
	return NULL;
}

struct ctl_greylist *
ctl_greylist_stop(struct ctl_greylist *g)
{
	if (g == NULL)
		return NULL;
	atomic_store(&g->stop, true);
	ctl_wakeq_kick(&g->wq);
	pthread_join(g->th, NULL);
	gl_free(g);
	return NULL;
}

void
ctl_greylist_stats(const struct ctl_greylist *g, struct ctl_greylist_stats *st)
{
	struct ctl_greylist *m = (struct ctl_greylist *)g;
	st->checks = atomic_load(&m->checks);
	st->passed = atomic_load(&m->passed);
	st->greylisted = atomic_load(&m->grey);
	st->errors = atomic_load(&m->errors);
	st->skipped = atomic_load(&m->skipped);
}
