/*
 * stack_net.h - test harness for dataplane/stack.h: two stacks (or one
 * stack and a raw endpoint the test drives by hand) joined by an in-memory
 * "network" that drops, duplicates, reorders, delays and corrupts frames
 * deterministically from a seed, with time advanced by the test. Included
 * by the stack test files; everything here is static.
 */
#ifndef TESTS_STACK_NET_H
#define TESTS_STACK_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/stack_impl.h"
#include "tests/dataplane/ref_csum.h"

#define IP_CLI 0x0a000001u
#define IP_SRV 0x0a000002u
#define IP_GW  0x0a0000feu
#define SRV_PORT 25

static const uint8_t MAC_CLI[6] = { 2, 0, 0, 0, 0, 1 };
static const uint8_t MAC_SRV[6] = { 2, 0, 0, 0, 0, 2 };
static const uint8_t MAC_GW[6] = { 2, 0, 0, 0, 0, 0xfe };

struct frame {
	struct frame *next;
	uint64_t at;
	int to;                        /* node index */
	size_t len;
	uint8_t data[9100];
};

struct net;

struct node {
	struct dp_worker w;
	struct dp_stack *st;
	struct net *net;
	int idx;
	struct frame *cap;             /* raw node: captured frames, in order */
	struct frame **cap_tail;
	unsigned ncap;
};

struct net {
	uint64_t now;
	struct node n[2];
	struct frame *q;               /* in flight, sorted by at */
	uint64_t rng;
	unsigned loss, dup, reorder, corrupt;  /* per mille */
	unsigned delay;                /* ms one way */
	bool block[2];                 /* drop everything sent by node i */
	bool block_pass_arp;           /* ... except ARP */
	void (*watch)(struct net *net, int from, const uint8_t *f, size_t len);
	void *watch_arg;
	uint64_t sent[2], dropped;
};

static uint64_t
net_rand(struct net *net)
{
	net->rng ^= net->rng << 13;
	net->rng ^= net->rng >> 7;
	net->rng ^= net->rng << 17;
	return net->rng;
}

static void
w_wake(struct dp_worker *w)
{
	(void)w;
}

static const struct dp_worker_ops w_ops = { .wake = w_wake };

static uint8_t *
io_tx_buf(void *ctx, size_t max, void **h)
{
	struct frame *f = calloc(1, sizeof(*f));
	if (f == NULL || max > sizeof(f->data)) {
		free(f);
		return NULL;
	}
	*h = f;
	return f->data;
}

static void
net_enqueue(struct net *net, struct frame *f)
{
	struct frame **pp = &net->q;
	while (*pp != NULL && (*pp)->at <= f->at)
		pp = &(*pp)->next;
	f->next = *pp;
	*pp = f;
}

static void net_trace(struct net *net, int from, const struct frame *f);

static void
io_tx_send(void *ctx, void *h, size_t len)
{
	struct node *nd = ctx;
	struct net *net = nd->net;
	struct frame *f = h;
	f->len = len;
	f->to = 1 - nd->idx;
	net->sent[nd->idx]++;
	if (net->watch)
		net->watch(net, nd->idx, f->data, len);
	if (getenv("STACK_TRACE") != NULL)
		net_trace(net, nd->idx, f);
	bool is_arp = len > 13 && f->data[12] == 8 && f->data[13] == 6;
	if ((net->block[nd->idx] && !(is_arp && net->block_pass_arp)) || (net->loss && net_rand(net) % 1000 < net->loss)) {
		net->dropped++;
		free(f);
		return;
	}
	f->at = net->now + net->delay;
	if (net->reorder && net_rand(net) % 1000 < net->reorder)
		f->at += 1 + net_rand(net) % 8;
	if (net->corrupt && net_rand(net) % 1000 < net->corrupt && len > 14)
		f->data[14 + net_rand(net) % (len - 14)] ^= (uint8_t)(1u << (net_rand(net) % 8));
	if (net->dup && net_rand(net) % 1000 < net->dup) {
		struct frame *g = malloc(sizeof(*g));
		memcpy(g, f, sizeof(*g));
		g->at += net_rand(net) % 3;
		net_enqueue(net, g);
	}
	net_enqueue(net, f);
}

static const struct dp_stack_io test_io = { .tx_buf = io_tx_buf, .tx_send = io_tx_send };

static void
conf_for(struct dp_stack_conf *c, int idx, uint32_t conn_max)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->mac, idx == 0 ? MAC_CLI : MAC_SRV, 6);
	c->ipv4 = idx == 0 ? IP_CLI : IP_SRV;
	c->netmask = 0xffffff00u;
	c->gateway = IP_GW;
	c->conn_max = conn_max;
	c->rx_buf = 65536;
	c->tx_buf = 65536;
	if (idx == 1) {
		c->listen[0].port = SRV_PORT;
		c->listen[0].flags = 7;
		c->nlisten = 1;
	}
	for (int i = 0; i < 16; i++)
		c->secret[i] = (uint8_t)(i * 31 + idx);
}

/* Node i: a stack with conf (NULL: a raw endpoint that captures). */
static void
net_node(struct net *net, int i, const struct dp_stack_conf *conf, const struct dp_app_ops *ops,
         void *wapp)
{
	struct node *nd = &net->n[i];
	nd->net = net;
	nd->idx = i;
	nd->w.ops = &w_ops;
	nd->w.now = net->now;
	nd->cap_tail = &nd->cap;
	if (conf != NULL) {
		nd->st = dp_stack_new(conf, &test_io, nd, &nd->w, ops, wapp);
		if (nd->st == NULL)
			abort();
	}
}

static void
net_init(struct net *net, uint64_t seed)
{
	memset(net, 0, sizeof(*net));
	net->now = 1000000;
	net->rng = seed ? seed : 1;
	net->delay = 1;
}

static void
net_fini(struct net *net)
{
	for (int i = 0; i < 2; i++) {
		net->n[i].st = dp_stack_free(net->n[i].st);
		while (net->n[i].cap != NULL) {
			struct frame *f = net->n[i].cap;
			net->n[i].cap = f->next;
			free(f);
		}
	}
	while (net->q != NULL) {
		struct frame *f = net->q;
		net->q = f->next;
		free(f);
	}
}

/* Deliver what is due now, then run timers. */
static void
net_step(struct net *net)
{
	for (int i = 0; i < 2; i++)
		net->n[i].w.now = net->now;
	while (net->q != NULL && net->q->at <= net->now) {
		struct frame *f = net->q;
		net->q = f->next;
		struct node *nd = &net->n[f->to];
		if (nd->st != NULL) {
			dp_stack_input(nd->st, f->data, f->len);
			free(f);
		} else {
			f->next = NULL;
			*nd->cap_tail = f;
			nd->cap_tail = &f->next;
			nd->ncap++;
		}
	}
	for (int i = 0; i < 2; i++)
		if (net->n[i].st != NULL)
			dp_stack_poll(net->n[i].st);
}

/* Run for up to ms milliseconds or until done(arg) says so. */
static bool
net_run(struct net *net, uint64_t ms, bool (*done)(void *), void *arg)
{
	uint64_t end = net->now + ms;
	while (net->now < end) {
		net_step(net);
		if (done != NULL && done(arg))
			return true;
		net->now++;
	}
	net_step(net);
	return done != NULL && done(arg);
}

/* Take the first captured frame of the raw node i (NULL: none). */
static struct frame *
cap_pop(struct net *net, int i)
{
	struct node *nd = &net->n[i];
	struct frame *f = nd->cap;
	if (f != NULL) {
		nd->cap = f->next;
		if (nd->cap == NULL)
			nd->cap_tail = &nd->cap;
		nd->ncap--;
	}
	return f;
}

static void
cap_clear(struct net *net, int i)
{
	struct frame *f;
	while ((f = cap_pop(net, i)) != NULL)
		free(f);
}

/* ---- hand-made frames from a raw endpoint ---- */

static void
t_wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
t_wr32(uint8_t *p, uint32_t v)
{
	t_wr16(p, (uint16_t)(v >> 16));
	t_wr16(p + 2, (uint16_t)v);
}

static uint32_t
t_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t
mk_ip(uint8_t *f, const uint8_t *smac, uint32_t sip, uint32_t dip, uint8_t proto, size_t l4len)
{
	memcpy(f, MAC_SRV, 6);
	memcpy(f + 6, smac, 6);
	t_wr16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	t_wr16(ip + 2, (uint16_t)(20 + l4len));
	ip[8] = 64;
	ip[9] = proto;
	t_wr32(ip + 12, sip);
	t_wr32(ip + 16, dip);
	t_wr16(ip + 10, ref_csum(0, ip, 20));
	return 34 + l4len;
}

struct tseg {
	uint32_t sip;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	bool ts;
	uint32_t tsval, tsecr;
	bool syn_opts;                 /* MSS 1460, WS 7, SACK-permitted */
	const uint8_t *data;
	size_t len;
};

static size_t
mk_tcp(uint8_t *f, const struct tseg *s)
{
	uint8_t *t = f + 34;
	size_t ol = 0;
	uint8_t *o = t + 20;
	if (s->syn_opts) {
		o[ol++] = 2; o[ol++] = 4; t_wr16(o + ol, 1460); ol += 2;
		o[ol++] = 1; o[ol++] = 3; o[ol++] = 3; o[ol++] = 7;
		o[ol++] = 1; o[ol++] = 1; o[ol++] = 4; o[ol++] = 2;
	}
	if (s->ts) {
		o[ol++] = 1; o[ol++] = 1; o[ol++] = 8; o[ol++] = 10;
		t_wr32(o + ol, s->tsval); t_wr32(o + ol + 4, s->tsecr); ol += 8;
	}
	size_t hl = 20 + ol, len = hl + s->len;
	t_wr16(t, s->sport);
	t_wr16(t + 2, s->dport);
	t_wr32(t + 4, s->seq);
	t_wr32(t + 8, s->ack);
	t[12] = (uint8_t)((hl / 4) << 4);
	t[13] = s->flags;
	t_wr16(t + 14, s->win);
	t_wr16(t + 16, 0);
	t_wr16(t + 18, 0);
	if (s->len)
		memcpy(t + hl, s->data, s->len);
	uint8_t ph[12];
	t_wr32(ph, s->sip);
	t_wr32(ph + 4, IP_SRV);
	ph[8] = 0;
	ph[9] = 6;
	t_wr16(ph + 10, (uint16_t)len);
	uint32_t sum = 0;
	for (int i = 0; i < 12; i += 2)
		sum += (uint32_t)(ph[i] << 8 | ph[i + 1]);
	t_wr16(t + 16, ref_csum(sum, t, len));
	return mk_ip(f, MAC_GW, s->sip, IP_SRV, 6, len);
}

/* Parsed view of a captured TCP frame. */
struct tview {
	bool ok;
	uint32_t src, dst;
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint16_t win;
	bool ts;
	uint32_t tsval, tsecr;
	unsigned nsack;
	uint32_t sack_start, sack_end;  /* the first block */
	size_t len;
	const uint8_t *data;
};

static struct tview
tcp_view(const struct frame *f)
{
	struct tview v;
	memset(&v, 0, sizeof(v));
	const uint8_t *ip = f->data + 14;
	if (f->len < 54 || f->data[12] != 8 || f->data[13] != 0 || ip[9] != 6)
		return v;
	size_t ihl = (size_t)(ip[0] & 15) * 4, tot = (size_t)(ip[2] << 8 | ip[3]);
	const uint8_t *t = ip + ihl;
	size_t hl = (size_t)(t[12] >> 4) * 4;
	v.ok = true;
	v.src = t_rd32(ip + 12);
	v.dst = t_rd32(ip + 16);
	v.sport = (uint16_t)(t[0] << 8 | t[1]);
	v.dport = (uint16_t)(t[2] << 8 | t[3]);
	v.seq = t_rd32(t + 4);
	v.ack = t_rd32(t + 8);
	v.flags = t[13];
	v.win = (uint16_t)(t[14] << 8 | t[15]);
	for (size_t i = 20; i < hl;) {
		if (t[i] == 0)
			break;
		if (t[i] == 1) {
			i++;
			continue;
		}
		if (t[i] == 5 && t[i + 1] >= 10) {
			v.nsack = (t[i + 1] - 2) / 8;
			v.sack_start = t_rd32(t + i + 2);
			v.sack_end = t_rd32(t + i + 6);
		}
		if (t[i] == 8) {
			v.ts = true;
			v.tsval = t_rd32(t + i + 2);
			v.tsecr = t_rd32(t + i + 6);
		}
		i += t[i + 1] ? t[i + 1] : 1;
	}
	v.len = tot - ihl - hl;
	v.data = t + hl;
	return v;
}

static void
net_trace(struct net *net, int from, const struct frame *f)
{
	struct tview v = tcp_view(f);
	if (!v.ok) {
		fprintf(stderr, "%llu %d->: type %02x%02x len %zu\n", (unsigned long long)net->now, from,
		        f->data[12], f->data[13], f->len);
		return;
	}
	fprintf(stderr, "%llu %d->%d: %s%s%s%s%s seq %u ack %u win %u len %zu\n",
	        (unsigned long long)net->now, from, 1 - from, v.flags & 2 ? "S" : "", v.flags & 16 ? "A" : "",
	        v.flags & 1 ? "F" : "", v.flags & 4 ? "R" : "", v.flags & 8 ? "P" : "", v.seq, v.ack, v.win,
	        v.len);
}

/* The raw endpoint answers the stack's ARP request for the gateway. */
static void
raw_answer_arp(struct net *net, int raw)
{
	struct node *srv = &net->n[1 - raw];
	for (struct frame *f = net->n[raw].cap; f != NULL; f = f->next) {
		if (f->len >= 42 && f->data[12] == 8 && f->data[13] == 6 && f->data[21] == 1) {
			uint8_t r[60];
			memset(r, 0, sizeof(r));
			memcpy(r, MAC_SRV, 6);
			memcpy(r + 6, MAC_GW, 6);
			t_wr16(r + 12, 0x0806);
			t_wr16(r + 14, 1);
			t_wr16(r + 16, 0x0800);
			r[18] = 6;
			r[19] = 4;
			t_wr16(r + 20, 2);
			memcpy(r + 22, MAC_GW, 6);
			memcpy(r + 28, f->data + 38, 4);   /* the address asked for */
			memcpy(r + 32, MAC_SRV, 6);
			t_wr32(r + 38, IP_SRV);
			dp_stack_input(srv->st, r, sizeof(r));
		}
	}
}

#endif
