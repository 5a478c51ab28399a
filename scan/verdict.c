/*
 * verdict.c - score, action, header text. See verdict.h.
 */
#include "scan/verdict.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const act_names[SCAN_ACT_COUNT] = {
	"accept", "headers", "tag_lower", "tag_upper", "quarantine", "reject", "tempfail",
};

const char *
scan_action_name(unsigned a)
{
	return a < SCAN_ACT_COUNT ? act_names[a] : "?";
}

void
scan_policy_default(struct scan_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->th[0] = (struct scan_threshold){5.0, SCAN_ACT_TAG_LOWER};
	p->th[1] = (struct scan_threshold){10.0, SCAN_ACT_TAG_UPPER};
	p->th[2] = (struct scan_threshold){15.0, SCAN_ACT_REJECT};
	p->n = 3;
	p->required = 5.0;
	snprintf(p->tag_lower, sizeof(p->tag_lower), "{SPAM?}");
	snprintf(p->tag_upper, sizeof(p->tag_upper), "{SPAM!}");
	p->headers_always = true;
}

int
scan_policy_parse(struct scan_policy *p, const char *spec)
{
	struct scan_policy q;
	const char *s = spec;

	scan_policy_default(&q);
	q.n = 0;
	q.required = 0;
	while (*s) {
		char *end;
		double v = strtod(s, &end);
		if (end == s || *end != ':' || q.n == SCAN_POLICY_MAX)
			return -EINVAL;
		s = end + 1;
		size_t n = strcspn(s, ",");
		int a = -1;
		for (int k = 0; k < SCAN_ACT_COUNT; k++)
			if (strlen(act_names[k]) == n && !strncmp(s, act_names[k], n))
				a = k;
		if (a < 0 || (q.n && v < q.th[q.n - 1].score))
			return -EINVAL;
		q.th[q.n++] = (struct scan_threshold){v, (uint8_t)a};
		if (!q.required && a != SCAN_ACT_ACCEPT && a != SCAN_ACT_ADD_HEADERS)
			q.required = v;
		s += n;
		if (*s == ',')
			s++;
	}
	if (!q.n)
		return -EINVAL;
	if (!q.required)
		q.required = q.th[q.n - 1].score;
	*p = q;
	return 0;
}

void
scan_verdict_compute(const struct scan_ruleset *rs, const uint32_t *hits, bool gtube,
    bool failed, const struct scan_policy *pol, struct scan_verdict *v)
{
	double score = 0;

	memset(v, 0, sizeof(*v));
	for (uint32_t i = 0; i < rs->n; i++) {
		const struct scan_rule *r = &rs->rules[i];
		if (!hits[i] || r->state != SCAN_RS_ACTIVE)
			continue;
		if (r->name[0] == '_' && r->name[1] == '_')
			continue;
		uint32_t k = (r->tflags & SCAN_TF_MULTIPLE) ? hits[i] : 1;
		score += r->score * k;
		if (v->n_hits < SCAN_VERDICT_HITS)
			v->hit[v->n_hits++] = i;
		else
			v->more_hits++;
	}
	/* the engine's own GTUBE, unless the rule files' GTUBE rule already counted */
	int g = gtube ? scan_rules_find(rs, "GTUBE") : -1;
	if (gtube && !(g >= 0 && hits[g] && rs->rules[g].state == SCAN_RS_ACTIVE))
		score += SCAN_GTUBE_SCORE;
	/* SpamAssassin shows one decimal; decide on what is shown */
	v->score = (double)(long long)(score * 10 + (score < 0 ? -0.5 : 0.5)) / 10;
	v->gtube = gtube;
	v->spam = v->score >= pol->required;
	/* Of the thresholds reached, the most severe action wins, whatever
	 * their order: quarantine at 8 beats {SPAM!} at 10 for a score of 12,
	 * and reject at 15 beats tempfail at 8 for a score of 16. */
	static const uint8_t severity[SCAN_ACT_COUNT] = {
		[SCAN_ACT_ACCEPT] = 0, [SCAN_ACT_ADD_HEADERS] = 1, [SCAN_ACT_TAG_LOWER] = 2,
		[SCAN_ACT_TAG_UPPER] = 3, [SCAN_ACT_QUARANTINE] = 4, [SCAN_ACT_TEMPFAIL] = 5,
		[SCAN_ACT_REJECT] = 6,
	};
	v->action = SCAN_ACT_ACCEPT;
	for (unsigned k = 0; k < pol->n; k++)
		if (v->score >= pol->th[k].score && pol->th[k].action < SCAN_ACT_COUNT &&
		    severity[pol->th[k].action] >= severity[v->action])
			v->action = pol->th[k].action;
	if (failed)
		v->action = SCAN_ACT_TEMPFAIL;
	switch (v->action) {
	case SCAN_ACT_REJECT:
		v->smtp_code = 550;
		v->smtp_enh = "5.7.1";
		v->smtp_text = "Message rejected as spam";
		break;
	case SCAN_ACT_TEMPFAIL:
		v->smtp_code = 451;
		v->smtp_enh = "4.7.1";
		v->smtp_text = "Message could not be scanned, try again later";
		break;
	default:
		v->smtp_code = 250;
		v->smtp_enh = "2.0.0";
		v->smtp_text = "OK";
	}
}

struct out {
	char *b;
	size_t cap, n, col;
};

static void
put(struct out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (o->n + 1 < o->cap)
			o->b[o->n] = s[i];
		o->n++;
		o->col = s[i] == '\n' ? 0 : o->col + 1;
	}
	if (o->cap)
		o->b[o->n < o->cap ? o->n : o->cap - 1] = '\0';
}

static void
puts_o(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

/* a word that folds onto a new line when it would pass column 78 */
static void
word(struct out *o, const char *sep, const char *w)
{
	size_t n = strlen(w) + strlen(sep);

	if (o->col + n > 78 && o->col > 1) {
		puts_o(o, sep[0] == ' ' ? "\r\n\t" : ",\r\n\t");
		puts_o(o, w);
		return;
	}
	puts_o(o, sep);
	puts_o(o, w);
}

size_t
scan_verdict_headers(const struct scan_verdict *v, const struct scan_ruleset *rs,
    const struct scan_policy *pol, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0, 0};
	char tmp[96];

	if (cap)
		buf[0] = '\0';
	snprintf(tmp, sizeof(tmp), "X-Spam-Score: %.1f\r\n", v->score);
	puts_o(&o, tmp);
	snprintf(tmp, sizeof(tmp), "X-Spam-Status: %s,", v->spam ? "Yes" : "No");
	puts_o(&o, tmp);
	snprintf(tmp, sizeof(tmp), "score=%.1f", v->score);
	word(&o, " ", tmp);
	snprintf(tmp, sizeof(tmp), "required=%.1f", pol->required);
	word(&o, " ", tmp);
	bool first = true;
	int g = v->gtube ? scan_rules_find(rs, "GTUBE") : -1;
	if (v->gtube && !(g >= 0 && v->n_hits && rs->rules[g].state == SCAN_RS_ACTIVE)) {
		word(&o, " ", "tests=GTUBE");
		first = false;
	}
	for (uint32_t k = 0; k < v->n_hits; k++) {
		const char *name = rs->rules[v->hit[k]].name;
		if (first) {
			char t[256];
			snprintf(t, sizeof(t), "tests=%s", name);
			word(&o, " ", t);
			first = false;
		} else
			word(&o, ",", name);
	}
	if (first)
		word(&o, " ", "tests=none");
	puts_o(&o, "\r\n");
	return o.n;
}

size_t
scan_verdict_subject(const struct scan_verdict *v, const struct scan_policy *pol,
    const char *subj, size_t n, char *buf, size_t cap)
{
	struct out o = {buf, cap, 0, 0};
	const char *tag = v->action == SCAN_ACT_TAG_LOWER ? pol->tag_lower :
	    v->action == SCAN_ACT_TAG_UPPER ? pol->tag_upper : "";

	if (cap)
		buf[0] = '\0';
	if (*tag && !(n >= strlen(tag) && !strncmp(subj, tag, strlen(tag)))) {
		puts_o(&o, tag);
		put(&o, " ", 1);
	}
	put(&o, subj, n);
	return o.n;
}
