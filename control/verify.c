/*
 * verify.c - recipient verification over LMTP; see verify.h.
 */
#include "control/verify.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "control/lmtp.h"
#include "control/log.h"
#include "control/wakeq.h"

struct vfy_slot {
	uint64_t expires_ms;           /* 0: empty */
	uint16_t code;
	char enh[12];
	char text[160];
	char rcpt[CTL_VFY_ADDR_MAX];
};

struct vfy_backend {
	struct ctl_lmtp_target target;
	struct ctl_lmtp_conn *conn;
	bool ok;                       /* target parsed */
};

struct ctl_verify {
	struct ctl_verify_conf conf;
	struct vfy_backend *be;        /* [0, nroutes): the routes; [nroutes]: default */
	const char **domains;
	pthread_t th;
	atomic_bool stop;
	struct ctl_wakeq wq;           /* requests from the workers */
	struct vfy_slot *cache;
	_Atomic uint64_t checks, hits, passed, unknown, tempfail;
};

bool
ctl_domain_listed(const char *const *domains, unsigned n, const char *rcpt)
{
	/* the same matching as the LMTP routes: exact, or ".domain" for its
	 * subdomains */
	return n == 0 || ctl_lmtp_route_match(domains, n, rcpt) >= 0;
}

bool
ctl_access_match(char *const *list, unsigned n, const char *addr)
{
	const char *at = strrchr(addr, '@');
	if (addr[0] == '\0' || at == NULL)
		return false;
	size_t ll = (size_t)(at - addr);
	const char *dom = at + 1;
	for (unsigned i = 0; i < n; i++) {
		const char *e = list[i];
		const char *eat = strrchr(e, '@');
		if (eat != NULL && eat > e) {  /* user@... */
			if ((size_t)(eat - e) != ll || strncasecmp(e, addr, ll) != 0)
				continue;
			if (eat[1] == '\0' || strcasecmp(eat + 1, dom) == 0)
				return true;
			continue;
		}
		const char *d = eat ? eat + 1 : e;
		const char *one[1] = { d };
		if (ctl_domain_listed(one, 1, addr))
			return true;
	}
	return false;
}

void
ctl_verify_check(struct ctl_verify *v, struct ctl_vfy_req *q)
{
	atomic_fetch_add(&v->checks, 1);
	for (char *p = q->rcpt; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	ctl_wakeq_push(&v->wq, &q->node);
}

static struct vfy_slot *
slot_of(struct ctl_verify *v, const char *rcpt)
{
	uint64_t h = 1469598103934665603ull;  /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)rcpt; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return &v->cache[h & (CTL_VFY_CACHE - 1)];
}

static void
set_reply(struct ctl_vfy_req *q, uint16_t code, const char *enh, const char *text)
{
	q->code = code;
	snprintf(q->enh, sizeof(q->enh), "%.11s", enh);
	snprintf(q->text, sizeof(q->text), "%s", text);
}

/* One question to the backend for q->rcpt: 0 with r filled, or -errno. */
static int
ask(struct ctl_verify *v, struct vfy_backend *b, const char *rcpt, struct ctl_lmtp_reply *r)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (b->conn != NULL && !ctl_lmtp_usable(b->conn))
			b->conn = ctl_lmtp_close(b->conn);
		if (b->conn == NULL) {
			b->conn = ctl_lmtp_open(&b->target, v->conf.hostname, v->conf.timeout_ms, r);
			if (b->conn == NULL)
				return -EIO;  /* r says why */
		}
		if (ctl_lmtp_verify(b->conn, rcpt, r) == 0)
			return 0;
		b->conn = ctl_lmtp_close(b->conn);  /* broken: once more, afresh */
	}
	return -EIO;
}

static void
answer(struct ctl_verify *v, struct ctl_vfy_req *q)
{
	uint64_t now = ctl_mono_ms();
	struct vfy_slot *s = slot_of(v, q->rcpt);
	q->cached = false;
	if (s->expires_ms > now && strcmp(s->rcpt, q->rcpt) == 0) {
		q->cached = true;
		set_reply(q, s->code, s->enh, s->text);
		atomic_fetch_add(&v->hits, 1);
		atomic_fetch_add(s->code / 100 == 2 ? &v->passed : &v->unknown, 1);
		q->done(q);
		return;
	}
	const char *const *doms = (const char *const *)v->domains;
	int m = ctl_lmtp_route_match(doms, v->conf.nroutes, q->rcpt);
	struct vfy_backend *b = &v->be[m >= 0 ? (unsigned)m : v->conf.nroutes];
	struct ctl_lmtp_reply r;
	memset(&r, 0, sizeof(r));
	char line[CTL_LMTP_TEXT_MAX + 32];
	if (!b->ok) {
		set_reply(q, 451, "4.4.1", "Recipient verification unavailable, try again later");
		atomic_fetch_add(&v->tempfail, 1);
	} else if (ask(v, b, q->rcpt, &r) < 0 || r.code == 0) {
		ctl_log(CTL_LOG_WARN, "event=verify_unavailable backend=%s rcpt=%s error=\"%s\"",
		        b->target.text, q->rcpt, ctl_lmtp_reply_line(&r, line, sizeof(line)));
		set_reply(q, 451, "4.4.1", "Recipient verification unavailable, try again later");
		atomic_fetch_add(&v->tempfail, 1);
	} else if (r.code / 100 == 2) {
		set_reply(q, 250, "2.1.5", "Ok");
		atomic_fetch_add(&v->passed, 1);
	} else if (r.code / 100 == 5) {
		char text[sizeof(q->text)];
		snprintf(text, sizeof(text), "<%.80s>: Recipient address rejected: %.40s", q->rcpt,
		         r.text[0] ? r.text : "unknown");
		for (char *p = text; *p; p++)
			if (*p == '\n' || *p == '\r' || (unsigned char)*p < 0x20)
				*p = ' ';
		set_reply(q, 550, r.status[0] ? r.status : "5.1.1", text);
		atomic_fetch_add(&v->unknown, 1);
	} else {
		set_reply(q, 450, "4.1.1", "Recipient address verification failed for now, try again "
		          "later");
		atomic_fetch_add(&v->tempfail, 1);
	}
	uint64_t ttl = q->code == 250 ? v->conf.ttl_ms : q->code == 550 ? v->conf.negative_ttl_ms : 0;
	if (ttl > 0) {
		s->expires_ms = now + ttl;
		s->code = q->code;
		memcpy(s->enh, q->enh, sizeof(s->enh));
		memcpy(s->text, q->text, sizeof(s->text));
		snprintf(s->rcpt, sizeof(s->rcpt), "%s", q->rcpt);
	}
	q->done(q);
}

static void *
vfy_main(void *arg)
{
	struct ctl_verify *v = arg;
	while (!atomic_load(&v->stop)) {
		ctl_wakeq_wait(&v->wq, 1000);
		struct cds_wfcq_node *node;
		while (!atomic_load(&v->stop) && (node = ctl_wakeq_pop(&v->wq)) != NULL)
			answer(v, caa_container_of(node, struct ctl_vfy_req, node));
	}
	struct cds_wfcq_node *node;
	while ((node = ctl_wakeq_pop(&v->wq)) != NULL) {
		struct ctl_vfy_req *q = caa_container_of(node, struct ctl_vfy_req, node);
		set_reply(q, 451, "4.4.1", "Recipient verification unavailable, try again later");
		q->done(q);
	}
	for (unsigned i = 0; i <= v->conf.nroutes; i++)
		v->be[i].conn = ctl_lmtp_close(v->be[i].conn);
	return NULL;
}

/* What start allocated (the thread stopped or never started). */
static void
vfy_free(struct ctl_verify *v)
{
	if (v == NULL)
		return;
	ctl_wakeq_fini(&v->wq);
	free(v->be);
	free(v->domains);
	free(v->cache);
	free(v);
}

struct ctl_verify *
ctl_verify_start(const struct ctl_verify_conf *conf, char *err, size_t errlen)
{
	struct ctl_verify *v = calloc(1, sizeof(*v));
	if (v == NULL)
		goto nomem;
	v->conf = *conf;
	v->wq.efd = -1;
	v->be = calloc(conf->nroutes + 1, sizeof(*v->be));
	v->domains = calloc(conf->nroutes + 1, sizeof(*v->domains));
	v->cache = calloc(CTL_VFY_CACHE, sizeof(*v->cache));
	if (v->be == NULL || v->domains == NULL || v->cache == NULL)
		goto nomem;
	for (unsigned i = 0; i < conf->nroutes; i++) {
		v->domains[i] = conf->routes[i].domain;
		v->be[i].ok = ctl_lmtp_target_parse(conf->routes[i].backend, &v->be[i].target) == 0;
	}
	if (conf->dflt != NULL)
		v->be[conf->nroutes].ok = ctl_lmtp_target_parse(conf->dflt, &v->be[conf->nroutes].target) == 0;
	int rc = ctl_wakeq_init(&v->wq);
	if (rc < 0) {
		snprintf(err, errlen, "recipients.verify: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = pthread_create(&v->th, NULL, vfy_main, v)) != 0) {
		snprintf(err, errlen, "recipients.verify: thread: %s", strerror(rc));
		goto fail;
	}
	pthread_setname_np(v->th, "sluice-verify");
	return v;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	vfy_free(v);
	return NULL;
}

struct ctl_verify *
ctl_verify_stop(struct ctl_verify *v)
{
	if (v == NULL)
		return NULL;
	atomic_store(&v->stop, true);
	ctl_wakeq_kick(&v->wq);
	pthread_join(v->th, NULL);
	vfy_free(v);
	return NULL;
}

void
ctl_verify_stats(const struct ctl_verify *v, struct ctl_verify_stats *st)
{
	struct ctl_verify *m = (struct ctl_verify *)v;
	st->checks = atomic_load(&m->checks);
	st->cache_hits = atomic_load(&m->hits);
	st->passed = atomic_load(&m->passed);
	st->unknown = atomic_load(&m->unknown);
	st->tempfail = atomic_load(&m->tempfail);
}
