/*
 * filter.c - SMTP-time content filtering; see filter.h.
 *
 * Engines: one struct flt_engine per successful load (rule set + Hyperscan
 * databases). f->cur is the RCU-published pointer. Lifetime is a counted
 * reference: the publication holds one (dropped by the loader after
 * synchronize_rcu() once a newer engine is published), every worker
 * generation holds one (taken inside the read-side section, so the count
 * cannot have reached zero). Whoever drops the last reference queues the
 * engine on f->dead; the loader thread frees it (Hyperscan and rule-set
 * frees stay off the workers).
 *
 * Worker generations: a worker keeps, per engine it has used, a scratch and
 * a pool of slots. A new engine seen at DATA start makes a new generation;
 * the old one is freed when its last message is put back.
 */
#include "control/filter.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>
#include <urcu/wfcqueue.h>

#include "control/config.h"
#include "control/log.h"
#include "scan/hs.h"
#include "scan/rules.h"
#include "scan/scan.h"

#define FLT_DIAG_LOG 20         /* diagnostics logged one by one at a load */

struct flt_engine {
	atomic_uint refs;
	uint64_t gen;
	struct scan_ruleset *rs;
	struct scan_hs *hs;
	struct cds_wfcq_node dead_node;
};

struct ctl_filter {
	struct ctl_filter_conf conf;
	char *paths[CTL_FILTER_RULES_MAX];
	char *cache;
	struct flt_engine *cur;         /* RCU */
	atomic_uint_fast64_t generation;
	struct cds_wfcq_head dead_head;
	struct cds_wfcq_tail dead_tail;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;              /* requests to the loader */
	pthread_cond_t done_cv;         /* loads finished */
	unsigned requested, finished;   /* load requests, loads finished (mu) */
	int last_err;                   /* of the last load (mu) */
	bool stop;
};

struct flt_gen {
	struct flt_gen *next;
	struct flt_engine *e;
	struct scan_hs_worker *hw;
	struct ctl_filter_msg *free;
	unsigned nslots, inuse;
};

struct ctl_filter_worker {
	struct ctl_filter *f;
	unsigned id;
	struct flt_gen *cur;
	struct flt_gen *old;            /* replaced, draining */
};

struct ctl_filter_msg {
	struct ctl_filter_msg *next;
	struct flt_gen *g;
	struct ctl_filter *f;
	struct scan_msg *sm;
	struct scan_mime_sink inner;    /* scan.c's own sink, called first */
	void *inner_ctx;
	/* attachments */
	bool attach_on, attach_part;
	struct scan_attach at;
	uint8_t *ztail;
	unsigned n_ahits;
	struct scan_attach_hit ahits[CTL_FILTER_ATTACH_HITS];
	/* the top-level Subject as received */
	uint64_t off;                   /* bytes fed */
	uint8_t hstate;                 /* 0 line start, 1 name, 2 skip line, 3 after colon, 4 done */
	uint8_t mpos;                   /* bytes of "subject:" matched */
	bool crlf_pending;
	bool subj_found;
	uint64_t subj_off;              /* where the value starts */
	uint8_t subj_len;
	char subj[24];                  /* its first bytes */
	bool hdr_end;
	/* the verdict */
	struct scan_verdict v;
	struct ctl_filter_result r;
	size_t hdr_len;
	char hdr[CTL_FILTER_HDR_MAX];
	uint8_t tag_len;
	char tag[40];                   /* "{SPAM?} " to put before the value */
};

/* ---- engines ------------------------------------------------------------ */

static void
engine_free(struct flt_engine *e)
{
	if (e == NULL)
		return;
	scan_hs_free(e->hs);
	scan_rules_free(e->rs);
	free(e);
}

static void
engine_put(struct ctl_filter *f, struct flt_engine *e)
{
	if (atomic_fetch_sub(&e->refs, 1) == 1) {
		cds_wfcq_node_init(&e->dead_node);
		cds_wfcq_enqueue(&f->dead_head, &f->dead_tail, &e->dead_node);
	}
}

static void
drain_dead(struct ctl_filter *f)
{
	struct cds_wfcq_node *n;
	while ((n = __cds_wfcq_dequeue_blocking(&f->dead_head, &f->dead_tail)) != NULL)
		engine_free((struct flt_engine *)(void *)((char *)n - offsetof(struct flt_engine, dead_node)));
}

static int
engine_build(struct ctl_filter *f, struct flt_engine **out)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct flt_engine *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	e->rs = scan_rules_new();
	if (e->rs == NULL) {
		free(e);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < f->conf.nrules; i++) {
		int rc = scan_rules_load_path(e->rs, f->paths[i]);
		if (rc < 0) {
			ctl_log(CTL_LOG_ERR, "event=filter_load path=%s error=\"%s\"", f->paths[i],
			        strerror(-rc));
			engine_free(e);
			return rc;
		}
	}
	int rc = scan_rules_finish(e->rs);
	if (rc < 0) {
		engine_free(e);
		return rc;
	}
	struct scan_hs_config hc = { .cache_path = f->cache, .no_gtube = f->conf.no_gtube,
	                             .shed_pct = f->conf.shed_pct,
	                             .ascii_share = f->conf.ascii_share };
	struct scan_hs_stats st;
	e->hs = scan_hs_build(e->rs, &hc, &st);
	if (e->hs == NULL) {
		rc = -(errno ? errno : EIO);
		engine_free(e);
		return rc;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	unsigned active = 0, shed = 0;
	for (unsigned t = 0; t < SCAN_RT_COUNT; t++)
		active += e->rs->st.active[t];
	for (unsigned t = 0; t < SCAN_T_COUNT; t++)
		shed += st.shed[t];
	ctl_log(CTL_LOG_INFO, "event=filter_load rules=%u active=%u diagnostics=%u cache=%s "
	        "seconds=%.3f shed=%u", e->rs->n, active, e->rs->n_diag,
	        f->cache == NULL ? "none" : st.cache_hit ? "hit" : "miss",
	        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, shed);
	/* what was skipped and why, so that an operator need not rerun the
	 * load by hand to find out: the first few, then where the rest are */
	for (unsigned i = 0; i < e->rs->n_diag && i < FLT_DIAG_LOG; i++) {
		char v[600];
		ctl_log(CTL_LOG_WARN, "event=filter_rule_skipped diag=%s",
		        ctl_log_value(v, sizeof(v), e->rs->diag[i]));
	}
	if (e->rs->st.errors > FLT_DIAG_LOG)
		ctl_log(CTL_LOG_WARN, "event=filter_rule_skipped more=%u note=\"sluice-rules -r PATH -v "
		        "lists every diagnostic\"", e->rs->st.errors - FLT_DIAG_LOG);
	atomic_init(&e->refs, 1);
	*out = e;
	return 0;
}

/* The loader: builds on request, publishes, retires the old engine. */
static void *
loader_main(void *arg)
{
	struct ctl_filter *f = arg;
	pthread_mutex_lock(&f->mu);
	for (;;) {
		while (!f->stop && f->requested == f->finished) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&f->cv, &f->mu, &ts);
			pthread_mutex_unlock(&f->mu);
			drain_dead(f);
			pthread_mutex_lock(&f->mu);
		}
		if (f->stop)
			break;
		unsigned target = f->requested;
		pthread_mutex_unlock(&f->mu);

		struct flt_engine *e = NULL;
		int rc = engine_build(f, &e);
		if (rc == 0) {
			e->gen = atomic_load(&f->generation) + 1;
			struct flt_engine *old = rcu_xchg_pointer(&f->cur, e);
			atomic_store(&f->generation, e->gen);
			if (old != NULL) {
				urcu_memb_synchronize_rcu();
				engine_put(f, old);
			}
			ctl_log(CTL_LOG_INFO, "event=filter_ready generation=%llu",
			        (unsigned long long)e->gen);
		} else {
			ctl_log(CTL_LOG_ERR, "event=filter_load_failed error=\"%s\" note=\"%s\"",
			        strerror(-rc), f->cur ? "keeping the rules loaded before" :
			        "mail gets 451 4.7.1 until a load succeeds (SIGHUP)");
		}
		drain_dead(f);
		pthread_mutex_lock(&f->mu);
		f->finished = target;
		f->last_err = rc;
		pthread_cond_broadcast(&f->done_cv);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

/* ---- control plane -------------------------------------------------------- */

int
ctl_filter_conf_from_config(struct ctl_filter_conf *fc, const struct ctl_config *c, char *err,
                            size_t errlen)
{
	memset(fc, 0, sizeof(*fc));
	for (unsigned i = 0; i < c->filter_nrules && i < CTL_FILTER_RULES_MAX; i++)
		fc->rules[fc->nrules++] = c->filter_rules[i];
	fc->cache = c->filter_cache;
	fc->slots_max = c->filter_slots;
	fc->shed_pct = c->filter_shed_pct;
	fc->ascii_share = c->filter_ascii_share;
	if (c->filter_policy != NULL) {
		if (scan_policy_parse(&fc->pol, c->filter_policy) < 0) {
			snprintf(err, errlen, "%s:%u: filter.policy: expected SCORE:ACTION[,SCORE:ACTION]... "
			         "in ascending order (actions accept, headers, tag_lower, tag_upper, "
			         "quarantine, reject, tempfail), got '%s'", c->path,
			         ctl_config_key_line(c, "filter.policy"), c->filter_policy);
			return -EINVAL;
		}
	} else {
		/* thresholds: 0 is off, except tag (0: headers on every message) */
		const struct { double s; uint8_t a; } th[] = {
			{ c->filter_tag, SCAN_ACT_ADD_HEADERS },
			{ c->filter_subject_lower, SCAN_ACT_TAG_LOWER },
			{ c->filter_subject_upper, SCAN_ACT_TAG_UPPER },
			{ c->filter_quarantine, SCAN_ACT_QUARANTINE },
			{ c->filter_reject, SCAN_ACT_REJECT },
			{ c->filter_tempfail, SCAN_ACT_TEMPFAIL },
		};
		struct scan_policy *p = &fc->pol;
		scan_policy_default(p);
		p->n = 0;
		p->required = 0;
		p->headers_always = c->filter_tag == 0;
		for (unsigned i = 0; i < sizeof(th) / sizeof(th[0]); i++) {
			if (th[i].s <= 0 || (i == 0 && th[i].s <= 0))
				continue;
			unsigned k = p->n++;
			while (k > 0 && p->th[k - 1].score > th[i].s) {
				p->th[k] = p->th[k - 1];
				k--;
			}
			p->th[k] = (struct scan_threshold){ th[i].s, th[i].a };
		}
		for (unsigned k = 0; k < p->n && p->required == 0; k++)
			if (p->th[k].action != SCAN_ACT_ACCEPT && p->th[k].action != SCAN_ACT_ADD_HEADERS)
				p->required = p->th[k].score;
		if (p->required == 0)
			p->required = p->n ? p->th[p->n - 1].score : 5.0;
	}
	fc->attach = c->filter_attach_enabled;
	scan_attach_conf_default(&fc->attach_conf);
	if (c->filter_attach_ext != NULL &&
	    scan_attach_conf_set_ext(&fc->attach_conf, c->filter_attach_ext) < 0) {
		snprintf(err, errlen, "%s:%u: filter.attachments.extensions: expected extensions "
		         "separated by blanks or commas (at most %d), got '%s'", c->path,
		         ctl_config_key_line(c, "filter.attachments.extensions"), SCAN_ATTACH_EXT_MAX,
		         c->filter_attach_ext);
		return -EINVAL;
	}
	for (unsigned i = 0; i < c->filter_attach_nscores; i++) {
		int r = scan_attach_rule_find(c->filter_attach_score_name[i]);
		if (r < 0) {
			snprintf(err, errlen, "%s:%u: filter.attachments.scores: unknown rule '%s' "
			         "(the ATTACH_* names of docs/SCAN-RULES.md)", c->path,
			         ctl_config_key_line(c, "filter.attachments.scores"),
			         c->filter_attach_score_name[i]);
			return -EINVAL;
		}
		fc->attach_conf.score[r] = c->filter_attach_score[i];
	}
	return 0;
}

struct ctl_filter *
ctl_filter_new(const struct ctl_filter_conf *fc, char *err, size_t errlen)
{
	if (fc->nrules == 0) {
		snprintf(err, errlen, "filter.rules: no rule files given");
		errno = EINVAL;
		return NULL;
	}
	for (unsigned i = 0; i < fc->nrules; i++)
		if (access(fc->rules[i], R_OK) != 0) {
			int e = errno;
			snprintf(err, errlen, "filter.rules: cannot read %s: %s", fc->rules[i], strerror(e));
			errno = e;
			return NULL;
		}
	struct ctl_filter *f = calloc(1, sizeof(*f));
	if (f == NULL)
		goto nomem;
	f->conf = *fc;
	for (unsigned i = 0; i < fc->nrules; i++) {
		if ((f->paths[i] = strdup(fc->rules[i])) == NULL)
			goto nomem;
		f->conf.rules[i] = f->paths[i];
	}
	if (fc->cache != NULL && (f->cache = strdup(fc->cache)) == NULL)
		goto nomem;
	f->conf.cache = f->cache;
	if (f->conf.slots_init == 0)
		f->conf.slots_init = 2;
	if (f->conf.slots_max == 0)
		f->conf.slots_max = 256;
	if (f->conf.slots_init > f->conf.slots_max)
		f->conf.slots_init = f->conf.slots_max;
	cds_wfcq_init(&f->dead_head, &f->dead_tail);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	pthread_cond_init(&f->done_cv, NULL);
	f->requested = 1;  /* the first load */
	f->last_err = -EAGAIN;
	if (pthread_create(&f->thread, NULL, loader_main, f) != 0) {
		pthread_mutex_destroy(&f->mu);
		pthread_cond_destroy(&f->cv);
		pthread_cond_destroy(&f->done_cv);
		goto nomem;
	}
	return f;
nomem:
	if (f != NULL) {
		for (unsigned i = 0; i < CTL_FILTER_RULES_MAX; i++)
			free(f->paths[i]);
		free(f->cache);
		free(f);
	}
	snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	return NULL;
}

void
ctl_filter_reload(struct ctl_filter *f)
{
	pthread_mutex_lock(&f->mu);
	f->requested++;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

int
ctl_filter_wait(struct ctl_filter *f, unsigned timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&f->mu);
	unsigned target = f->requested;
	int rc = 0;
	while (rc == 0 && (int)(f->finished - target) < 0)
		rc = pthread_cond_timedwait(&f->done_cv, &f->mu, &ts);
	int out = (int)(f->finished - target) < 0 ? -ETIMEDOUT : f->last_err;
	pthread_mutex_unlock(&f->mu);
	return out;
}

bool
ctl_filter_ready(const struct ctl_filter *f)
{
	return atomic_load(&((struct ctl_filter *)f)->generation) != 0;
}

uint64_t
ctl_filter_generation(const struct ctl_filter *f)
{
	return atomic_load(&((struct ctl_filter *)f)->generation);
}

struct ctl_filter *
ctl_filter_free(struct ctl_filter *f)
{
	if (f == NULL)
		return NULL;
	pthread_mutex_lock(&f->mu);
	f->stop = true;
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->thread, NULL);
	struct flt_engine *e = rcu_xchg_pointer(&f->cur, NULL);
	if (e != NULL) {
		urcu_memb_synchronize_rcu();
		engine_put(f, e);
	}
	drain_dead(f);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	pthread_cond_destroy(&f->done_cv);
	for (unsigned i = 0; i < CTL_FILTER_RULES_MAX; i++)
		free(f->paths[i]);
	free(f->cache);
	free(f);
	return NULL;
}

/* ---- the MIME sink wrapper: attachments, then scan.c's own handling ------ */

static void
w_header(void *ctx, const struct scan_mime_hdr *h)
{
	struct ctl_filter_msg *m = ctx;
	if (m->inner.header)
		m->inner.header(m->inner_ctx, h);
}

static bool
attach_wanted(const struct scan_mime_part *p)
{
	if ((p->flags & (SCAN_MIME_P_MULTIPART | SCAN_MIME_P_MESSAGE)) && !(p->flags & SCAN_MIME_P_OPAQUE))
		return false;
	if ((p->flags & SCAN_MIME_P_HAS_FILENAME) || p->disp == SCAN_MIME_DISP_ATTACHMENT)
		return true;
	return !(p->flags & SCAN_MIME_P_TEXT);
}

static void
w_part_begin(void *ctx, const struct scan_mime_part *p)
{
	struct ctl_filter_msg *m = ctx;
	if (m->inner.part_begin)
		m->inner.part_begin(m->inner_ctx, p);
	m->attach_part = m->attach_on && attach_wanted(p);
	if (m->attach_part)
		scan_attach_begin_mime(&m->at, &m->f->conf.attach_conf, p);
}

static void
w_body(void *ctx, const struct scan_mime_part *p, enum scan_mime_view view, const uint8_t *b,
       size_t n)
{
	struct ctl_filter_msg *m = ctx;
	if (m->inner.body)
		m->inner.body(m->inner_ctx, p, view, b, n);
	if (m->attach_part && view == SCAN_MIME_DECODED)
		scan_attach_feed(&m->at, b, n);
}

static void
w_part_end(void *ctx, const struct scan_mime_end *e)
{
	struct ctl_filter_msg *m = ctx;
	if (m->inner.part_end)
		m->inner.part_end(m->inner_ctx, e);
	if (!m->attach_part)
		return;
	m->attach_part = false;
	struct scan_attach_hit h[SCAN_ATTACH_R_COUNT];
	size_t k = scan_attach_end(&m->at, h, SCAN_ATTACH_R_COUNT);
	for (size_t i = 0; i < k; i++) {
		/* one per rule per message: the first part that hit it */
		bool seen = false;
		for (unsigned j = 0; j < m->n_ahits && !seen; j++)
			seen = m->ahits[j].rule == h[i].rule;
		if (!seen && m->n_ahits < CTL_FILTER_ATTACH_HITS)
			m->ahits[m->n_ahits++] = h[i];
	}
}

static void
w_anomaly(void *ctx, uint32_t part, enum scan_mime_anomaly a)
{
	struct ctl_filter_msg *m = ctx;
	if (m->inner.anomaly)
		m->inner.anomaly(m->inner_ctx, part, a);
}

static const struct scan_mime_sink wrap_sink = {
	.header = w_header,
	.part_begin = w_part_begin,
	.body = w_body,
	.part_end = w_part_end,
	.anomaly = w_anomaly,
};

/* ---- worker ---------------------------------------------------------------- */

static struct ctl_filter_msg *
slot_new(struct ctl_filter *f, struct flt_gen *g)
{
	struct ctl_filter_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	m->sm = scan_msg_new(g->e->hs);
	if (m->sm == NULL) {
		free(m);
		return NULL;
	}
	/* the verdict needs only the rules that count: the end of a message
	 * leaves unrun what cannot move one (scan/hs.h) */
	m->sm->hm->lazy = true;
	m->f = f;
	m->g = g;
	m->inner = m->sm->mime.sink;
	m->inner_ctx = m->sm->mime.ctx;
	m->sm->mime.sink = wrap_sink;
	m->sm->mime.ctx = m;
	size_t cap = f->conf.attach_conf.zip_tail ? f->conf.attach_conf.zip_tail : SCAN_ATTACH_TAIL_DEFAULT;
	if (f->conf.attach) {
		m->ztail = malloc(cap);
		if (m->ztail == NULL) {
			scan_msg_free(m->sm);
			free(m);
			return NULL;
		}
	}
	scan_attach_init(&m->at, m->ztail, m->ztail ? cap : 0);
	g->nslots++;
	return m;
}

static void
slot_free(struct ctl_filter_msg *m)
{
	scan_msg_free(m->sm);
	free(m->ztail);
	free(m);
}

static void
gen_free(struct ctl_filter *f, struct flt_gen *g)
{
	while (g->free != NULL) {
		struct ctl_filter_msg *m = g->free;
		g->free = m->next;
		slot_free(m);
	}
	scan_hs_worker_free(g->hw);
	engine_put(f, g->e);
	free(g);
}

/* A generation for engine e (a reference already taken for it). */
static struct flt_gen *
gen_new(struct ctl_filter *f, struct flt_engine *e)
{
	struct flt_gen *g = calloc(1, sizeof(*g));
	if (g == NULL)
		return NULL;
	g->e = e;
	g->hw = scan_hs_worker_new(e->hs);
	if (g->hw == NULL) {
		free(g);
		return NULL;
	}
	for (unsigned i = 0; i < f->conf.slots_init; i++) {
		struct ctl_filter_msg *m = slot_new(f, g);
		if (m == NULL)
			break;
		m->next = g->free;
		g->free = m;
	}
	return g;
}

struct ctl_filter_worker *
ctl_filter_worker_new(struct ctl_filter *f, unsigned id)
{
	struct ctl_filter_worker *fw = calloc(1, sizeof(*fw));
	if (fw == NULL)
		return NULL;
	fw->f = f;
	fw->id = id;
	urcu_memb_register_thread();
	return fw;
}

struct ctl_filter_worker *
ctl_filter_worker_free(struct ctl_filter_worker *fw)
{
	if (fw == NULL)
		return NULL;
	if (fw->cur != NULL)
		gen_free(fw->f, fw->cur);
	while (fw->old != NULL) {
		struct flt_gen *g = fw->old;
		fw->old = g->next;
		gen_free(fw->f, g);  /* messages still out are the caller's leak */
	}
	urcu_memb_unregister_thread();
	free(fw);
	return NULL;
}

/* Switch to the published engine when it changed. 0 or -errno. */
static int
worker_sync(struct ctl_filter_worker *fw)
{
	struct ctl_filter *f = fw->f;
	urcu_memb_read_lock();
	struct flt_engine *e = rcu_dereference(f->cur);
	if (e == NULL || (fw->cur != NULL && fw->cur->e == e)) {
		urcu_memb_read_unlock();
		return e == NULL ? -EAGAIN : 0;
	}
	atomic_fetch_add(&e->refs, 1);  /* the publication's ref outlives this section */
	urcu_memb_read_unlock();
	struct flt_gen *g = gen_new(f, e);
	if (g == NULL) {
		engine_put(f, e);
		return -ENOMEM;
	}
	struct flt_gen *old = fw->cur;
	fw->cur = g;
	if (old != NULL) {
		if (old->inuse == 0) {
			gen_free(f, old);
		} else {
			old->next = fw->old;
			fw->old = old;
		}
	}
	return 0;
}

struct ctl_filter_msg *
ctl_filter_begin(struct ctl_filter_worker *fw, int *err)
{
	int rc = worker_sync(fw);
	if (rc < 0 && (rc != -ENOMEM || fw->cur == NULL)) {
		*err = rc;
		return NULL;
	}
	struct flt_gen *g = fw->cur;
	struct ctl_filter_msg *m = g->free;
	if (m != NULL) {
		g->free = m->next;
	} else {
		if (g->nslots >= fw->f->conf.slots_max) {
			*err = -ENOBUFS;
			return NULL;
		}
		m = slot_new(fw->f, g);
		if (m == NULL) {
			*err = -ENOMEM;
			return NULL;
		}
	}
	g->inuse++;
	m->next = NULL;
	m->attach_on = fw->f->conf.attach;
	m->attach_part = false;
	m->n_ahits = 0;
	m->off = 0;
	m->hstate = 0;
	m->mpos = 0;
	m->subj_found = false;
	m->subj_len = 0;
	m->hdr_end = false;
	m->hdr_len = 0;
	m->tag_len = 0;
	memset(&m->r, 0, sizeof(m->r));
	scan_msg_begin(m->sm, g->hw);
	return m;
}

void
ctl_filter_put(struct ctl_filter_worker *fw, struct ctl_filter_msg *m)
{
	struct flt_gen *g = m->g;
	g->inuse--;
	m->next = g->free;
	g->free = m;
	if (g == fw->cur || g->inuse > 0)
		return;
	for (struct flt_gen **pp = &fw->old; *pp != NULL; pp = &(*pp)->next)
		if (*pp == g) {
			*pp = g->next;
			gen_free(fw->f, g);
			return;
		}
}

/* ---- per message ------------------------------------------------------------ */

/* Find the first top-level "Subject:" and where its value starts, over
 * the bytes as received, any split (RFC 5322 2.2: a field starts at the
 * start of a line; the header section ends at the first empty line). */
static void
track_subject(struct ctl_filter_msg *m, const uint8_t *p, size_t n)
{
	static const char name[] = "subject:";
	enum { LS = 0, NAME, SKIP, VAL };
	for (size_t i = 0; i < n && !m->hdr_end; i++) {
		uint8_t ch = p[i];
		switch (m->hstate) {
		case LS:
			if (ch == '\r')
				break;  /* an empty line is CR LF (or a bare LF) */
			if (ch == '\n') {
				m->hdr_end = true;
				break;
			}
			if (!m->subj_found && (ch | 0x20) == 's') {
				m->mpos = 1;
				m->hstate = NAME;
			} else {
				m->hstate = SKIP;
			}
			break;
		case NAME:
			if (ch == '\n') {
				m->hstate = LS;
			} else if ((uint8_t)(ch | 0x20) == (uint8_t)name[m->mpos]) {
				if (++m->mpos == 8) {
					m->subj_found = true;
					m->subj_off = m->off + i + 1;
					m->hstate = VAL;
				}
			} else {
				m->hstate = SKIP;
			}
			break;
		case SKIP:
			if (ch == '\n')
				m->hstate = LS;
			break;
		case VAL:  /* skip blanks, keep the value's first bytes */
			if (ch == '\n') {
				m->hstate = LS;
			} else if ((ch == ' ' || ch == '\t') && m->subj_len == 0) {
				m->subj_off = m->off + i + 1;
			} else if (ch != '\r' && m->subj_len < sizeof(m->subj)) {
				m->subj[m->subj_len++] = (char)ch;
			}
			break;
		}
	}
	m->off += n;
}

void
ctl_filter_feed(struct ctl_filter_msg *m, const uint8_t *p, size_t n)
{
	if (!m->hdr_end)
		track_subject(m, p, n);
	else
		m->off += n;
	scan_msg_feed(m->sm, p, n);
}

struct hout {
	char *b;
	size_t cap, n, col;
};

static void
hput(struct hout *o, const char *s)
{
	for (; *s; s++) {
		if (o->n + 1 < o->cap)
			o->b[o->n++] = *s;
		o->col = *s == '\n' ? 0 : o->col + 1;
	}
	o->b[o->n] = '\0';
}

/* a list item that folds onto a new line past column 78 */
static void
hword(struct hout *o, const char *sep, const char *w)
{
	if (o->col + strlen(sep) + strlen(w) > 78 && o->col > 1) {
		hput(o, sep[0] == ' ' ? "\r\n\t" : ",\r\n\t");
	} else {
		hput(o, sep);
	}
	hput(o, w);
}

const struct ctl_filter_result *
ctl_filter_end(struct ctl_filter_msg *m)
{
	const struct ctl_filter *f = m->f;
	const struct scan_policy *pol = &f->conf.pol;
	const struct scan_ruleset *rs = m->g->e->rs;
	int rc = scan_msg_end(m->sm);
	struct scan_verdict *v = &m->v;
	scan_verdict_compute(rs, m->sm->hm->hits, m->sm->hm->gtube, rc < 0, pol, v);

	/* attachment hits are scored rules too */
	double extra = 0;
	for (unsigned i = 0; i < m->n_ahits; i++)
		extra += m->ahits[i].score;
	if (extra != 0 && rc == 0) {
		double s = v->score + extra;
		v->score = (double)(long long)(s * 10 + (s < 0 ? -0.5 : 0.5)) / 10;
		v->spam = v->score >= pol->required;
		v->action = SCAN_ACT_ACCEPT;
		for (unsigned k = 0; k < pol->n; k++)
			if (v->score >= pol->th[k].score)
				v->action = pol->th[k].action;
	}
	struct ctl_filter_result *r = &m->r;
	r->action = v->action;
	r->score = v->score;
	r->spam = v->spam;
	r->failed = rc < 0;
	r->n_rules = v->n_hits + v->more_hits + (v->gtube ? 1 : 0);
	r->n_attach = m->n_ahits;
	switch (v->action) {
	case SCAN_ACT_REJECT:
		r->smtp_code = 550;
		r->smtp_enh = "5.7.1";
		r->smtp_text = v->gtube ? "Message rejected as spam (GTUBE)" : "Message rejected as spam";
		for (unsigned i = 0; i < m->n_ahits && !v->gtube; i++)
			if (m->ahits[i].score > 0)
				r->smtp_text = "Message rejected: dangerous attachment";
		break;
	case SCAN_ACT_TEMPFAIL:
		r->smtp_code = 451;
		r->smtp_enh = "4.7.1";
		r->smtp_text = r->failed ? "Message could not be scanned, try again later"
		                         : "Message deferred by the content filter, try again later";
		break;
	default:
		r->smtp_code = 250;
		r->smtp_enh = "2.0.0";
		r->smtp_text = "OK";
	}

	/* X-Spam-* headers: on every scanned message with headers_always,
	 * else from the tag threshold up */
	bool headers = pol->headers_always || v->action != SCAN_ACT_ACCEPT;
	if (headers && v->action != SCAN_ACT_REJECT && v->action != SCAN_ACT_TEMPFAIL) {
		struct hout o = { m->hdr, sizeof(m->hdr), 0, 0 };
		char tmp[300];
		snprintf(tmp, sizeof(tmp), "X-Spam-Score: %.1f\r\n", v->score);
		hput(&o, tmp);
		snprintf(tmp, sizeof(tmp), "X-Spam-Status: %s,", v->spam ? "Yes" : "No");
		hput(&o, tmp);
		snprintf(tmp, sizeof(tmp), "score=%.1f", v->score);
		hword(&o, " ", tmp);
		snprintf(tmp, sizeof(tmp), "required=%.1f", pol->required);
		hword(&o, " ", tmp);
		bool first = true;
		int g = v->gtube ? scan_rules_find(rs, "GTUBE") : -1;
		if (v->gtube && !(g >= 0 && m->sm->hm->hits[g])) {
			hword(&o, " ", "tests=GTUBE");
			first = false;
		}
		for (uint32_t k = 0; k < v->n_hits + m->n_ahits; k++) {
			const char *name = k < v->n_hits ? rs->rules[v->hit[k]].name : m->ahits[k - v->n_hits].name;
			if (o.n + strlen(name) + 64 > o.cap)
				break;  /* the Status header stays well-formed */
			if (first) {
				snprintf(tmp, sizeof(tmp), "tests=%.200s", name);
				hword(&o, " ", tmp);
				first = false;
			} else {
				hword(&o, ",", name);
			}
		}
		if (first)
			hword(&o, " ", "tests=none");
		hput(&o, "\r\n");
		m->hdr_len = o.n;
	}
	const char *tag = v->action == SCAN_ACT_TAG_LOWER ? pol->tag_lower
	                : v->action == SCAN_ACT_TAG_UPPER ? pol->tag_upper : "";
	size_t tl = strlen(tag);
	if (tl > 0 && !(m->subj_found && m->subj_len >= tl && !memcmp(m->subj, tag, tl))) {
		if (m->subj_found) {
			snprintf(m->tag, sizeof(m->tag), "%s ", tag);
			m->tag_len = (uint8_t)strlen(m->tag);
		} else if (m->hdr_len + tl + 16 < sizeof(m->hdr)) {
			/* no Subject at all: one with just the tag */
			m->hdr_len += (size_t)snprintf(m->hdr + m->hdr_len, sizeof(m->hdr) - m->hdr_len,
			                               "Subject: %s\r\n", tag);
		}
	}
	return r;
}

unsigned
ctl_filter_splice(const struct ctl_filter_msg *m, struct iovec *iov, unsigned n, unsigned cap)
{
	if (n + 3 > cap || n == 0)
		return n;
	if (m->tag_len > 0) {
		uint64_t at = 0;
		for (unsigned i = 1; i < n; i++) {
			size_t len = iov[i].iov_len;
			if (m->subj_off < at + len) {
				size_t k = (size_t)(m->subj_off - at);
				memmove(&iov[i + 2], &iov[i], (n - i) * sizeof(*iov));
				iov[i].iov_len = k;
				iov[i + 1].iov_base = (void *)m->tag;
				iov[i + 1].iov_len = m->tag_len;
				iov[i + 2].iov_base = (char *)iov[i + 2].iov_base + k;
				iov[i + 2].iov_len = len - k;
				n += 2;
				break;
			}
			at += len;
		}
	}
	if (m->hdr_len > 0) {
		memmove(&iov[2], &iov[1], (n - 1) * sizeof(*iov));
		iov[1].iov_base = (void *)m->hdr;
		iov[1].iov_len = m->hdr_len;
		n++;
	}
	return n;
}

size_t
ctl_filter_log(const struct ctl_filter_msg *m, char *buf, size_t cap)
{
	const struct scan_ruleset *rs = m->g->e->rs;
	const struct scan_verdict *v = &m->v;
	size_t o = 0;
	int k = snprintf(buf, cap, " filter=%s score=%.1f rules=", m->r.failed ? "failed"
	                 : scan_action_name(m->r.action), m->r.score);
	if (k < 0)
		return 0;
	o = (size_t)k;
	bool cut = v->more_hits > 0, any = false;
	if (v->gtube && o + 8 < cap) {
		o += (size_t)snprintf(buf + o, cap - o, "GTUBE");
		any = true;
	}
	for (uint32_t i = 0; i < v->n_hits + m->n_ahits; i++) {
		const char *name = i < v->n_hits ? rs->rules[v->hit[i]].name : m->ahits[i - v->n_hits].name;
		if (!strcmp(name, "GTUBE") && v->gtube)
			continue;
		if (o + strlen(name) + 40 > cap || o > 600) {
			cut = true;
			break;
		}
		o += (size_t)snprintf(buf + o, cap - o, "%s%s", any ? "," : "", name);
		any = true;
	}
	if (!any && o + 2 < cap)
		o += (size_t)snprintf(buf + o, cap - o, "-");
	if (o < cap)
		o += (size_t)snprintf(buf + o, cap - o, " truncated=%d", cut);
	return o;
}

const char *
ctl_filter_headers(const struct ctl_filter_msg *m, size_t *len)
{
	*len = m->hdr_len;
	return m->hdr;
}
