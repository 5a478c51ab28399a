/*
 * Tests for the userspace stack (dataplane/stack.h and the files behind
 * it): ARP, ping, the SYN-cookie handshake and a SYN flood, bulk transfer
 * through a lossy, reordering, duplicating, corrupting network, zero
 * window and window update, RST and SYN validation with challenge ACKs,
 * PAWS, retransmission backoff, FIN and TIME_WAIT (cap, RFC 1337, RFC
 * 6191 reuse), out-of-order data with SACK, delayed ACK, many concurrent
 * connections, refused connections, pool exhaustion, garbage frames, IPv6
 * neighbour discovery and ping. Harness: stack_net.h. STACK_SEEDS=n runs
 * n mixed-impairment transfers; STACK_TRACE=1 prints every frame.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "stack_net.h"

/* ---- the applications ---- */

#define PAT_LEN (1u << 21)
static uint8_t pat[PAT_LEN];

static uint8_t
pat_byte(size_t i)
{
	return pat[i % PAT_LEN];
}

/* Server: echoes everything through a 32 KiB buffer; declines what does
 * not fit (backpressure), or everything while `decline` is set. */
struct srv_conn {
	struct dp_conn *dc;
	uint8_t buf[32768];
	size_t off, len;
	uint64_t got;
	bool pat_bad;                  /* input differed from the pattern */
	int closed_err;
};

struct srv_app {
	int accepted, closed, decline;
	unsigned flags;
	struct srv_conn *last;
	int last_err;
	bool refuse;
};

static void *
s_accept(void *wa, struct dp_conn *c, const struct sockaddr *peer, const struct sockaddr *local,
         unsigned flags)
{
	struct srv_app *a = wa;
	if (a->refuse)
		return NULL;
	struct srv_conn *sc = calloc(1, sizeof(*sc));
	sc->dc = c;
	a->accepted++;
	a->flags = flags;
	a->last = sc;
	assert_int_equal(peer->sa_family, AF_INET);
	assert_int_equal(ntohs(((const struct sockaddr_in *)local)->sin_port), SRV_PORT);
	return sc;
}

static struct srv_app *the_srv;

static size_t
s_recv(void *ca, const uint8_t *p, size_t n)
{
	struct srv_conn *sc = ca;
	if (the_srv->decline)
		return 0;
	if (sc->off > 0 && sc->off == sc->len)
		sc->off = sc->len = 0;
	if (sc->off > 0 && sc->len + n > sizeof(sc->buf)) {
		memmove(sc->buf, sc->buf + sc->off, sc->len - sc->off);
		sc->len -= sc->off;
		sc->off = 0;
	}
	size_t room = sizeof(sc->buf) - sc->len;
	size_t k = n < room ? n : room;
	memcpy(sc->buf + sc->len, p, k);
	for (size_t i = 0; i < k; i++)
		if (p[i] != pat_byte(sc->got + i))
			sc->pat_bad = true;
	sc->len += k;
	sc->got += k;
	return k;
}

static size_t
s_pull(void *ca, const uint8_t **p)
{
	struct srv_conn *sc = ca;
	*p = sc->buf + sc->off;
	return sc->len - sc->off;
}

static void
s_sent(void *ca, size_t n)
{
	struct srv_conn *sc = ca;
	sc->off += n;
}

static void
s_timer(void *ca)
{
	struct srv_conn *sc = ca;
	dp_conn_close(sc->dc);
}

static void
s_closed(void *ca, int err)
{
	the_srv->closed++;
	the_srv->last_err = err;
	if (the_srv->last == ca)
		the_srv->last = NULL;
	free(ca);
}

static const struct dp_app_ops srv_ops = {
	.accept = s_accept, .recv = s_recv, .pull = s_pull, .sent = s_sent,
	.timer = s_timer, .closed = s_closed,
};

/* Client: sends `total` pattern bytes, checks the echo, closes when all
 * came back. */
struct cli_conn {
	struct dp_conn *dc;
	uint64_t total, sent, got;
	bool bad, closed, close_when_done;
	int err;
	struct cli_app *app;
};

struct cli_app {
	int closed, done;
};

static size_t
c_recv(void *ca, const uint8_t *p, size_t n)
{
	struct cli_conn *cc = ca;
	for (size_t i = 0; i < n; i++)
		if (p[i] != pat_byte(cc->got + i))
			cc->bad = true;
	cc->got += n;
	if (cc->got == cc->total) {
		cc->app->done++;
		if (cc->close_when_done)
			dp_conn_close(cc->dc);
	}
	return n;
}

static size_t
c_pull(void *ca, const uint8_t **p)
{
	struct cli_conn *cc = ca;
	if (cc->sent >= cc->total)
		return 0;
	size_t off = cc->sent % PAT_LEN, n = cc->total - cc->sent;
	if (n > PAT_LEN - off)
		n = PAT_LEN - off;
	if (n > 100000)
		n = 100000;
	*p = pat + off;
	return n;
}

static void
c_sent(void *ca, size_t n)
{
	((struct cli_conn *)ca)->sent += n;
}

static void
c_timer(void *ca)
{
	(void)ca;
}

static void
c_closed(void *ca, int err)
{
	struct cli_conn *cc = ca;
	cc->closed = true;
	cc->err = err;
	cc->app->closed++;
}

static const struct dp_app_ops cli_ops = {
	.recv = c_recv, .pull = c_pull, .sent = c_sent, .timer = c_timer, .closed = c_closed,
};

/* ---- fixtures ---- */

struct pair {
	struct net net;
	struct srv_app srv;
	struct cli_app cli;
};

static struct pair *
pair_new(uint64_t seed, uint32_t conn_max)
{
	struct pair *p = calloc(1, sizeof(*p));
	net_init(&p->net, seed);
	the_srv = &p->srv;
	struct dp_stack_conf c0, c1;
	conf_for(&c0, 0, conn_max);
	conf_for(&c1, 1, conn_max);
	net_node(&p->net, 0, &c0, &cli_ops, &p->cli);
	net_node(&p->net, 1, &c1, &srv_ops, &p->srv);
	return p;
}

static void
pair_free(struct pair *p)
{
	net_fini(&p->net);
	free(p);
}

static struct cli_conn *
cli_open(struct pair *p, uint64_t total)
{
	struct cli_conn *cc = calloc(1, sizeof(*cc));
	cc->total = total;
	cc->app = &p->cli;
	cc->close_when_done = true;
	cc->dc = dp_stack_connect(p->net.n[0].st, IP_SRV, SRV_PORT, cc);
	assert_non_null(cc->dc);
	return cc;
}

static bool
cli_closed(void *arg)
{
	return ((struct cli_conn *)arg)->closed;
}

static bool
srv_accepted(void *arg)
{
	return ((struct pair *)arg)->srv.accepted > 0;
}

static const struct dp_stack_stats *
S(struct pair *p, int i)
{
	return dp_stack_stats(p->net.n[i].st);
}

/* ---- tests ---- */

static void
test_conn_size(void **state)
{
	size_t sz = dp_stack_conn_size();
	printf("# sizeof(struct dp_tcb) = %zu bytes\n", sz);
	if (sz > 512)
		fail_msg("connection state: got %zu bytes, want <= 512", sz);
	/* Bad configurations are refused with EINVAL. */
	struct dp_worker w = { .ops = &w_ops, .now = 1 };
	struct dp_stack_conf c;
	conf_for(&c, 1, 0);
	errno = 0;
	assert_null(dp_stack_new(&c, &test_io, NULL, &w, &srv_ops, NULL));
	assert_int_equal(errno, EINVAL);
	conf_for(&c, 1, 4);
	c.mtu = 100;
	assert_null(dp_stack_new(&c, &test_io, NULL, &w, &srv_ops, NULL));
	conf_for(&c, 1, 4);
	c.rx_buf = 100;
	assert_null(dp_stack_new(&c, &test_io, NULL, &w, &srv_ops, NULL));
	conf_for(&c, 1, 4);
	struct dp_stack *st = dp_stack_new(&c, &test_io, NULL, &w, &srv_ops, NULL);
	assert_non_null(st);
	assert_null(dp_stack_free(st));
}

static void
transfer_x(uint64_t seed, unsigned loss, unsigned reorder, unsigned dup, unsigned corrupt,
           uint64_t bytes)
{
	struct pair *p = pair_new(seed, 16);
	p->net.corrupt = corrupt;
	p->net.loss = loss;
	p->net.reorder = reorder;
	p->net.dup = dup;
	struct cli_conn *cc = cli_open(p, bytes);
	if (getenv("DUMP_AT"))
		net_run(&p->net, strtoull(getenv("DUMP_AT"), NULL, 0) - p->net.now, cli_closed, cc);
	bool ok = getenv("DUMP_AT") ? false : net_run(&p->net, 600000, cli_closed, cc);
	if (!ok || cc->got != bytes) {
		for (int i = 0; i < 2; i++) {
			struct dp_stack *st = p->net.n[i].st;
			for (uint32_t k = 0; k < st->conf.conn_max; k++) {
				struct dp_tcb *c = &st->tcbs[k];
				if (c->state == DP_TCP_CLOSED)
					continue;
				fprintf(stderr, "node %d: state %d una %u nxt %u max %u wnd %u cwnd %u rcv_nxt %u "
				        "adv %u tx %u rx held %u ooo %u persist %d rto_at %llu app_gone %d\n",
				        i, c->state, c->snd_una, c->snd_nxt, c->snd_max, c->snd_wnd, c->cwnd,
				        c->rcv_nxt, c->rcv_adv, c->tx ? c->tx->len : 0, c->rx ? c->rx->held : 0,
				        c->rx ? c->rx->nooo : 0, c->persist, (unsigned long long)c->rto_at,
				        c->app_gone);
			}
		}
	}
	if (!ok)
		fail_msg("transfer (loss %u reorder %u dup %u): got %llu of %llu bytes back, not closed",
		         loss, reorder, dup, (unsigned long long)cc->got, (unsigned long long)bytes);
	assert_false(cc->bad);
	assert_int_equal(cc->got, bytes);
	assert_int_equal(cc->err, 0);
	/* The server saw the peer FIN after all the data. */
	net_run(&p->net, 200000, NULL, NULL);
	assert_int_equal(p->srv.closed, 1);
	assert_int_equal(p->srv.last_err, -ECONNRESET);
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(S(p, 0)->conns, 0);
	if (loss >= 100) {
		assert_true(S(p, 0)->tcp_segs_rexmit + S(p, 1)->tcp_segs_rexmit > 0);
		/* Resending after a timeout skipped data the peer had SACKed. */
		if (bytes >= (1u << 20))
			assert_true(S(p, 0)->tcp_sack_skip + S(p, 1)->tcp_sack_skip > 0);
	}
	if (getenv("STACK_VERBOSE"))
		fprintf(stderr, "# seed %llu loss %u: rexmit %llu+%llu segs, sack skip %llu+%llu bytes, "
		        "%llu ms\n", (unsigned long long)seed, loss,
		        (unsigned long long)S(p, 0)->tcp_segs_rexmit, (unsigned long long)S(p, 1)->tcp_segs_rexmit,
		        (unsigned long long)S(p, 0)->tcp_sack_skip, (unsigned long long)S(p, 1)->tcp_sack_skip,
		        (unsigned long long)(p->net.now - 1000000));
	pair_free(p);
	free(cc);
}

static void
transfer(uint64_t seed, unsigned loss, unsigned reorder, unsigned dup, uint64_t bytes)
{
	transfer_x(seed, loss, reorder, dup, 0, bytes);
}

static void test_bulk_clean(void **state) { transfer(1, 0, 0, 0, 1u << 20); }
static void test_bulk_loss1(void **state) { transfer(2, 10, 0, 0, 1u << 20); }
static void test_bulk_loss10(void **state) { transfer(3, 100, 0, 0, 1u << 20); }
static void test_bulk_reorder_dup(void **state) { transfer(4, 10, 100, 50, 1u << 20); }

static void
test_bulk_corrupt(void **state)
{
	struct pair *p = pair_new(5, 16);
	p->net.corrupt = 50;
	struct cli_conn *cc = cli_open(p, 300000);
	assert_true(net_run(&p->net, 600000, cli_closed, cc));
	assert_false(cc->bad);
	assert_int_equal(cc->got, 300000);
	uint64_t drops = 0;
	for (int i = 0; i < 2; i++) {
		const struct dp_stack_stats *s = S(p, i);
		drops += s->drop_tcp_csum + s->drop_ip_csum + s->drop_eth_dst + s->drop_ip_dst +
		         s->drop_ip_len + s->drop_ip_hlen + s->drop_ip_version + s->drop_ip_frag +
		         s->drop_ip_src + s->drop_ip_proto + s->drop_eth_type + s->drop_tcp_hlen;
	}
	assert_true(drops > 0);
	pair_free(p);
	free(cc);
}

/* ARP: the client resolves the server before its SYN; both learn. */
static void
test_arp_between_stacks(void **state)
{
	struct pair *p = pair_new(6, 4);
	struct cli_conn *cc = cli_open(p, 10);
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	assert_int_equal(S(p, 0)->arp_requests_out, 1);
	assert_int_equal(S(p, 0)->arp_replies_in, 1);
	assert_int_equal(S(p, 1)->arp_replies_out, 1);
	assert_int_equal(S(p, 1)->arp_requests_out, 0);  /* learnt from the request */
	pair_free(p);
	free(cc);
}

/* A raw endpoint (node 0) behind the gateway talks to the server. */
static struct pair *
raw_new(uint32_t conn_max)
{
	struct pair *p = calloc(1, sizeof(*p));
	net_init(&p->net, 7);
	the_srv = &p->srv;
	struct dp_stack_conf c1;
	conf_for(&c1, 1, conn_max);
	net_node(&p->net, 0, NULL, NULL, NULL);
	net_node(&p->net, 1, &c1, &srv_ops, &p->srv);
	return p;
}

static void
raw_send(struct pair *p, const uint8_t *f, size_t len)
{
	p->net.n[1].w.now = p->net.now;
	dp_stack_input(p->net.n[1].st, f, len);
	net_run(&p->net, 2, NULL, NULL);
}

static void
test_arp_and_ping(void **state)
{
	struct pair *p = raw_new(4);
	uint8_t f[128];
	/* ARP request for the server's address: answered. */
	memset(f, 0, sizeof(f));
	memset(f, 0xff, 6);
	memcpy(f + 6, MAC_GW, 6);
	t_wr16(f + 12, 0x0806);
	t_wr16(f + 14, 1);
	t_wr16(f + 16, 0x0800);
	f[18] = 6;
	f[19] = 4;
	t_wr16(f + 20, 1);
	memcpy(f + 22, MAC_GW, 6);
	t_wr32(f + 28, IP_GW);
	t_wr32(f + 38, IP_SRV);
	raw_send(p, f, 60);
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_int_equal(r->data[21], 2);
	assert_memory_equal(r->data + 22, MAC_SRV, 6);
	assert_memory_equal(r->data, MAC_GW, 6);
	free(r);
	/* Ping from beyond the gateway (known now: learnt from the request). */
	uint8_t *icmp = f + 34;
	memset(icmp, 0, 40);
	icmp[0] = 8;
	memcpy(icmp + 8, "ping-payload", 12);
	t_wr16(icmp + 2, ref_csum(0, icmp, 40));
	size_t n = mk_ip(f, MAC_GW, 0xc0000201u, IP_SRV, 1, 40);
	raw_send(p, f, n);
	r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_int_equal(r->data[34], 0);  /* echo reply */
	assert_memory_equal(r->data + 42, "ping-payload", 12);
	assert_int_equal(t_rd32(r->data + 30), 0xc0000201u);
	assert_int_equal(ref_csum(0, r->data + 14, 20), 0);
	assert_int_equal(ref_csum(0, r->data + 34, 40), 0);
	free(r);
	assert_int_equal(S(p, 1)->icmp_echo_out, 1);
	/* Bad ICMP checksum: dropped. */
	icmp[5] ^= 1;
	raw_send(p, f, n);
	assert_null(cap_pop(&p->net, 0));
	assert_int_equal(S(p, 1)->drop_icmp_csum, 1);
	pair_free(p);
}

/* An unresolved next hop: one frame waits, requests repeat, then give up. */
static void
test_arp_queue_and_timeout(void **state)
{
	struct pair *p = raw_new(4);
	uint8_t f[128];
	uint8_t *icmp = f + 34;
	memset(icmp, 0, 16);
	icmp[0] = 8;
	t_wr16(icmp + 2, ref_csum(0, icmp, 16));
	size_t n = mk_ip(f, MAC_GW, 0xc0000201u, IP_SRV, 1, 16);
	raw_send(p, f, n);
	raw_send(p, f, n);  /* the second reply replaces the first in the queue */
	assert_int_equal(S(p, 1)->arp_requests_out, 1);
	assert_int_equal(S(p, 1)->arp_queue_drop, 1);
	raw_answer_arp(&p->net, 0);
	cap_clear(&p->net, 0);
	net_run(&p->net, 2, NULL, NULL);
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_int_equal(r->data[34], 0);
	free(r);
	assert_null(cap_pop(&p->net, 0));
	pair_free(p);

	p = raw_new(4);
	raw_send(p, f, n);
	net_run(&p->net, 6000, NULL, NULL);
	assert_int_equal(S(p, 1)->arp_requests_out, 4);  /* first + 3 retries */
	assert_int_equal(S(p, 1)->arp_timeout, 1);
	pair_free(p);
}

static struct tview
raw_syn(struct pair *p, uint32_t sip, uint16_t sport, uint32_t isn, bool ts)
{
	uint8_t f[256];
	struct tseg s = { .sip = sip, .sport = sport, .dport = SRV_PORT, .seq = isn,
	                  .flags = DP_TH_SYN, .win = 65535, .ts = ts, .tsval = 1000,
	                  .syn_opts = true };
	raw_send(p, f, mk_tcp(f, &s));
	raw_answer_arp(&p->net, 0);
	struct frame *r;
	struct tview v = { 0 };
	net_run(&p->net, 2, NULL, NULL);
	while ((r = cap_pop(&p->net, 0)) != NULL) {
		struct tview t = tcp_view(r);
		if (t.ok) {
			v = t;
			static uint8_t keep[9100];
			memcpy(keep, r->data, r->len);
			v.data = NULL;
		}
		free(r);
	}
	return v;
}

static void
test_cookie_handshake(void **state)
{
	struct pair *p = raw_new(8);
	p->net.n[1].st->synq_max = 0;  /* cookies only */
	uint32_t sip = 0xc0000207u;
	struct tview sa = raw_syn(p, sip, 40000, 5000, true);
	assert_true(sa.ok);
	assert_int_equal(sa.flags, DP_TH_SYN | DP_TH_ACK);
	assert_int_equal(sa.ack, 5001);
	assert_true(sa.ts);
	assert_int_equal(sa.tsecr, 1000);
	/* No state between SYN and ACK. */
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(p->srv.accepted, 0);
	/* A wrong cookie: RST, still nothing. */
	uint8_t f[256];
	struct tseg a = { .sip = sip, .sport = 40000, .dport = SRV_PORT, .seq = 5001,
	                  .ack = sa.seq + 2, .flags = DP_TH_ACK, .win = 1000, .ts = true,
	                  .tsval = 1001, .tsecr = sa.tsval };
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(S(p, 1)->drop_tcp_cookie, 1);
	assert_int_equal(S(p, 1)->conns, 0);
	cap_clear(&p->net, 0);
	/* Options bits tampered in TSecr: the MAC covers them. */
	a.ack = sa.seq + 1;
	a.tsecr = sa.tsval ^ 1;
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(S(p, 1)->drop_tcp_cookie, 2);
	cap_clear(&p->net, 0);
	/* The right ACK with data: the connection exists, data delivered. */
	a.tsecr = sa.tsval;
	a.data = (const uint8_t *)"hello";
	a.len = 5;
	a.flags = DP_TH_ACK | DP_TH_PSH;
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(S(p, 1)->conns, 1);
	assert_int_equal(p->srv.accepted, 1);
	assert_int_equal(p->srv.flags, 7);
	assert_non_null(p->srv.last);
	assert_int_equal(p->srv.last->got, 5);
	/* The echo comes back with the window scaled by 7 negotiated. */
	struct dp_tcb *c = dp_tcp_lookup(p->net.n[1].st, sip, 40000, SRV_PORT);
	assert_non_null(c);
	assert_int_equal(c->snd_wscale, 7);
	assert_true(c->sack_ok);
	assert_true(c->ts_ok);
	assert_int_equal(c->mss, 1460);
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	struct tview e = tcp_view(r);
	assert_int_equal(e.len, 5);
	assert_memory_equal(e.data, "hello", 5);
	free(r);
	pair_free(p);
}

static void
test_cookie_no_timestamps(void **state)
{
	struct pair *p = raw_new(8);
	p->net.n[1].st->synq_max = 0;  /* cookies only */
	uint32_t sip = 0xc0000208u;
	struct tview sa = raw_syn(p, sip, 40001, 77, false);
	assert_true(sa.ok);
	assert_false(sa.ts);
	uint8_t f[256];
	struct tseg a = { .sip = sip, .sport = 40001, .dport = SRV_PORT, .seq = 78,
	                  .ack = sa.seq + 1, .flags = DP_TH_ACK, .win = 1000 };
	raw_send(p, f, mk_tcp(f, &a));
	struct dp_tcb *c = dp_tcp_lookup(p->net.n[1].st, sip, 40001, SRV_PORT);
	assert_non_null(c);
	assert_false(c->ts_ok);
	assert_int_equal(c->snd_wscale, 0);  /* lost without timestamps, like Linux */
	assert_false(c->sack_ok);
	pair_free(p);
}

static void
test_syn_flood(void **state)
{
	struct pair *p = raw_new(64);
	uint8_t f[256];
	uint64_t rng = 12345;
	for (int i = 0; i < 10000; i++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		struct tseg s = { .sip = 0xc6120000u | (uint32_t)(rng >> 48), .sport = (uint16_t)(rng >> 20 | 1),
		                  .dport = SRV_PORT, .seq = (uint32_t)rng, .flags = DP_TH_SYN,
		                  .win = 1024, .ts = (i & 1) != 0, .tsval = 5, .syn_opts = true };
		p->net.n[1].w.now = p->net.now;
		dp_stack_input(p->net.n[1].st, f, mk_tcp(f, &s));
		if (i == 0)
			raw_answer_arp(&p->net, 0);
		if ((i & 255) == 0) {
			net_run(&p->net, 1, NULL, NULL);
			cap_clear(&p->net, 0);
		}
	}
	cap_clear(&p->net, 0);
	/* The half-open table (conn_max / 8 = 8 entries) takes the first
	 * SYNs; every other one is a cookie: no state beyond the table. */
	struct dp_stack *st = p->net.n[1].st;
	assert_int_equal(st->synq_max, 8);
	assert_int_equal(S(p, 1)->tcp_syn_in, 10000);
	assert_int_equal(S(p, 1)->tcp_cookies_out, 10000 - 8);
	assert_int_equal(st->stats.tcp_synq_out, 8);
	assert_int_equal(st->synq, 8);
	assert_int_equal(S(p, 1)->conns, 8);
	assert_int_equal(p->srv.accepted, 0);
	/* The entries resend their SYN-ACKs, then give up: nothing left. */
	net_run(&p->net, 40000, NULL, NULL);
	cap_clear(&p->net, 0);
	assert_int_equal(st->stats.tcp_synack_rexmit, 8 * 4);
	assert_int_equal(st->stats.tcp_synq_timeout, 8);
	assert_int_equal(st->synq, 0);
	assert_int_equal(S(p, 1)->conns, 0);
	pair_free(p);
}

/* Zero window: the server declines everything, the client probes, then
 * the server resumes and the transfer completes. */
static void
test_zero_window(void **state)
{
	struct pair *p = pair_new(8, 8);
	p->srv.decline = 1;
	struct cli_conn *cc = cli_open(p, 300000);
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	net_run(&p->net, 8000, NULL, NULL);
	assert_true(S(p, 0)->tcp_persist_probes > 0);
	assert_int_equal(cc->got, 0);
	/* The server holds a full receive buffer and advertised zero. */
	struct srv_conn *s = p->srv.last;
	assert_non_null(s);
	assert_int_equal(s->got, 0);
	p->srv.decline = 0;
	dp_conn_rx_resume(s->dc);
	assert_true(net_run(&p->net, 60000, cli_closed, cc));
	assert_false(cc->bad);
	assert_int_equal(cc->got, 300000);
	pair_free(p);
	free(cc);
}

static struct dp_tcb *
only_conn(struct dp_stack *st)
{
	for (uint32_t i = 0; i < st->conf.conn_max; i++)
		if (st->tcbs[i].state != DP_TCP_CLOSED)
			return &st->tcbs[i];
	return NULL;
}

/* Inject a segment into the server's one connection as if from the client. */
static void
inject(struct pair *p, struct dp_tcb *c, uint32_t seq, uint32_t ack, uint8_t flags, bool ts,
       uint32_t tsval, const char *data)
{
	uint8_t f[512];
	struct tseg s = { .sip = IP_CLI, .sport = c->fport, .dport = c->lport, .seq = seq, .ack = ack,
	                  .flags = flags, .win = 1000, .ts = ts, .tsval = tsval, .tsecr = 0,
	                  .data = (const uint8_t *)data, .len = data ? strlen(data) : 0 };
	size_t n = mk_tcp(f, &s);
	memcpy(f + 6, MAC_CLI, 6);
	dp_stack_input(p->net.n[1].st, f, n);
}

static void
test_rst_validation(void **state)
{
	struct pair *p = pair_new(9, 8);
	struct cli_conn *cc = cli_open(p, 1u << 30);  /* never finishes */
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	net_run(&p->net, 50, NULL, NULL);
	struct dp_tcb *c = only_conn(p->net.n[1].st);
	assert_non_null(c);
	p->net.block[0] = true;  /* the client is silent from now on */
	net_run(&p->net, 5, NULL, NULL);
	uint64_t chal = S(p, 1)->tcp_challenge_ack;
	/* In window, not exact: challenge ACK, connection stays. */
	inject(p, c, c->rcv_nxt + 100, 0, DP_TH_RST, false, 0, NULL);
	assert_int_equal(S(p, 1)->tcp_challenge_ack, chal + 1);
	assert_int_equal(p->srv.closed, 0);
	/* Out of window: silently dropped. */
	inject(p, c, c->rcv_nxt + (1u << 30), 0, DP_TH_RST, false, 0, NULL);
	assert_int_equal(S(p, 1)->tcp_challenge_ack, chal + 1);
	assert_int_equal(p->srv.closed, 0);
	/* A SYN on an established connection: challenge ACK (RFC 5961 4). */
	inject(p, c, c->rcv_nxt + 5, 0, DP_TH_SYN, false, 0, NULL);
	assert_int_equal(S(p, 1)->tcp_challenge_ack, chal + 2);
	assert_int_equal(p->srv.closed, 0);
	/* Exact: reset. */
	inject(p, c, c->rcv_nxt, 0, DP_TH_RST, false, 0, NULL);
	assert_int_equal(p->srv.closed, 1);
	assert_int_equal(p->srv.last_err, -ECONNRESET);
	assert_int_equal(S(p, 1)->conns, 0);
	pair_free(p);
	free(cc);
}

static void
test_challenge_rate_limit(void **state)
{
	struct pair *p = pair_new(10, 8);
	struct cli_conn *cc = cli_open(p, 1u << 30);
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	p->net.block[0] = true;
	net_run(&p->net, 5, NULL, NULL);
	struct dp_tcb *c = only_conn(p->net.n[1].st);
	for (int i = 0; i < 500; i++)
		inject(p, c, c->rcv_nxt + 100, 0, DP_TH_RST, false, 0, NULL);
	assert_true(S(p, 1)->tcp_challenge_ack <= 100);
	assert_true(S(p, 1)->tcp_challenge_limited >= 400);
	pair_free(p);
	free(cc);
}

static void
test_paws(void **state)
{
	struct pair *p = pair_new(11, 8);
	struct cli_conn *cc = cli_open(p, 1u << 30);
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	p->net.block[0] = true;
	net_run(&p->net, 300, NULL, NULL);
	struct dp_tcb *c = only_conn(p->net.n[1].st);
	assert_true(c->ts_ok);
	uint64_t got = p->srv.last->got;
	uint32_t old = c->ts_recent - 1000;
	inject(p, c, c->rcv_nxt, c->snd_una, DP_TH_ACK, true, old, "stale");
	assert_int_equal(S(p, 1)->drop_tcp_paws, 1);
	assert_int_equal(p->srv.last->got, got);
	inject(p, c, c->rcv_nxt, c->snd_una, DP_TH_ACK, true, c->ts_recent + 1, "fresh");
	assert_int_equal(p->srv.last->got, got + 5);
	pair_free(p);
	free(cc);
}

/* SYN retransmissions back off 1, 2, 4, ... s, then the open fails. */
static uint64_t syn_times[16];
static unsigned nsyn;

static void
watch_syn(struct net *net, int from, const uint8_t *f, size_t len)
{
	if (from == 0 && len >= 54 && f[12] == 8 && f[23] == 6 && (f[47] & DP_TH_SYN) && nsyn < 16)
		syn_times[nsyn++] = net->now;
}

static void
test_syn_backoff(void **state)
{
	struct pair *p = pair_new(12, 8);
	struct cli_conn *cc = cli_open(p, 10);  /* resolves ARP first */
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	free(cc);
	nsyn = 0;
	p->net.watch = watch_syn;
	p->net.block[1] = true;  /* the server never answers */
	p->net.block_pass_arp = true;
	cc = cli_open(p, 10);
	assert_true(net_run(&p->net, 200000, cli_closed, cc));
	assert_int_equal(cc->err, -ETIMEDOUT);
	assert_int_equal(nsyn, 7);  /* first + 6 retries */
	for (unsigned i = 1; i < nsyn; i++) {
		uint64_t d = syn_times[i] - syn_times[i - 1], want = 1000u << (i - 1);
		if (d < want || d > want + 2 * DP_WHEEL_TICK_MS)
			fail_msg("SYN %u after %llu ms, want %llu", i, (unsigned long long)d,
			         (unsigned long long)want);
	}
	pair_free(p);
	free(cc);
}

/* Data retransmission backs off too, and gives up with ETIMEDOUT. */
static void
test_data_backoff(void **state)
{
	struct pair *p = pair_new(13, 8);
	struct cli_conn *cc = cli_open(p, 1u << 30);
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	net_run(&p->net, 100, NULL, NULL);
	p->net.block[1] = true;  /* no more ACKs */
	assert_true(net_run(&p->net, 2000000, cli_closed, cc));
	assert_int_equal(cc->err, -ETIMEDOUT);
	assert_int_equal(S(p, 0)->tcp_rexmit_timeout, 12);
	pair_free(p);
	free(cc);
}

static void
test_fin_time_wait(void **state)
{
	struct pair *p = pair_new(14, 8);
	struct cli_conn *cc = cli_open(p, 1000);
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	net_run(&p->net, 100, NULL, NULL);
	/* Client closed first: it holds TIME_WAIT, the server is gone. */
	assert_int_equal(S(p, 0)->time_wait, 1);
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(S(p, 1)->time_wait, 0);
	net_run(&p->net, 2500, NULL, NULL);
	assert_int_equal(S(p, 0)->time_wait, 0);
	assert_int_equal(S(p, 0)->conns, 0);
	pair_free(p);
	free(cc);
}

/* Server closes first (app timer): passive close on the client side. */
static void
test_server_close(void **state)
{
	struct pair *p = pair_new(15, 8);
	struct cli_conn *cc = cli_open(p, 5);
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	dp_conn_timer(p->srv.last->dc, p->net.now + 50);
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	assert_int_equal(cc->err, -ECONNRESET);
	net_run(&p->net, 100, NULL, NULL);
	assert_int_equal(p->srv.closed, 1);
	assert_int_equal(p->srv.last_err, 0);
	assert_int_equal(S(p, 1)->time_wait, 1);
	assert_int_equal(S(p, 0)->conns, 0);
	pair_free(p);
	free(cc);
}

static void
test_time_wait_cap(void **state)
{
	struct pair *p = pair_new(16, 64);
	struct cli_conn *cc[40];
	for (int i = 0; i < 40; i++)
		cc[i] = cli_open(p, 100);
	/* Until ARP resolves, each SYN replaces the one queued before it:
	 * the rest go out on their first retransmission. */
	net_run(&p->net, 1500, NULL, NULL);
	for (int i = 0; i < 40; i++) {
		assert_true(cc[i]->closed);
		free(cc[i]);
	}
	assert_int_equal(S(p, 0)->time_wait, 16);  /* conn_max / 4 */
	assert_int_equal(S(p, 0)->tcp_tw_full, 24);
	pair_free(p);
}

static void
test_many_connections(void **state)
{
	struct pair *p = pair_new(17, 2048);
	enum { N = 1000 };
	struct cli_conn **cc = calloc(N, sizeof(*cc));
	for (int i = 0; i < N; i++)
		cc[i] = cli_open(p, 2000 + (uint64_t)i);
	net_run(&p->net, 20000, NULL, NULL);
	for (int i = 0; i < N; i++) {
		if (!cc[i]->closed || cc[i]->got != cc[i]->total || cc[i]->bad)
			fail_msg("conn %d: got %llu of %llu, closed %d", i,
			         (unsigned long long)cc[i]->got, (unsigned long long)cc[i]->total,
			         cc[i]->closed);
		free(cc[i]);
	}
	assert_int_equal(p->srv.accepted, N);
	assert_int_equal(p->srv.closed, N);
	assert_int_equal(S(p, 1)->conns, 0);
	pair_free(p);
	free(cc);
}

static void
test_refused(void **state)
{
	struct pair *p = pair_new(18, 8);
	struct cli_conn *cc = calloc(1, sizeof(*cc));
	cc->app = &p->cli;
	cc->dc = dp_stack_connect(p->net.n[0].st, IP_SRV, 26, cc);  /* no listener */
	assert_true(net_run(&p->net, 3000, cli_closed, cc));
	assert_int_equal(cc->err, -ECONNREFUSED);
	free(cc);
	/* The application refuses in accept(): RST, no closed(). */
	p->srv.refuse = true;
	cc = cli_open(p, 10);
	assert_true(net_run(&p->net, 3000, cli_closed, cc));
	assert_int_equal(cc->err, -ECONNRESET);
	assert_int_equal(S(p, 1)->tcp_refused, 1);
	assert_int_equal(p->srv.closed, 0);
	pair_free(p);
	free(cc);
}

static void
test_conn_pool_exhausted(void **state)
{
	struct pair *p = pair_new(19, 4);
	struct cli_conn *cc[4];
	for (int i = 0; i < 4; i++) {
		cc[i] = cli_open(p, 1u << 30);
		cc[i]->close_when_done = false;
	}
	errno = 0;
	assert_null(dp_stack_connect(p->net.n[0].st, IP_SRV, SRV_PORT, NULL));
	assert_int_equal(errno, EAGAIN);
	net_run(&p->net, 1500, NULL, NULL);
	assert_int_equal(p->srv.accepted, 4);
	for (int i = 0; i < 4; i++) {
		dp_conn_abort(cc[i]->dc);
		assert_true(cc[i]->closed);
		free(cc[i]);
	}
	net_run(&p->net, 100, NULL, NULL);
	assert_int_equal(S(p, 0)->conns, 0);
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(S(p, 1)->tcp_rst_in, 4);
	pair_free(p);
}

static void
test_garbage(void **state)
{
	struct pair *p = raw_new(8);
	struct dp_stack *st = p->net.n[1].st;
	uint8_t f[256];
	/* Short Ethernet frame, unknown type, other MAC. */
	dp_stack_input(st, f, 10);
	memset(f, 0, sizeof(f));
	memcpy(f, MAC_SRV, 6);
	t_wr16(f + 12, 0x88cc);
	dp_stack_input(st, f, 60);
	f[0] = 4;
	dp_stack_input(st, f, 60);
	const struct dp_stack_stats *s = dp_stack_stats(st);
	assert_int_equal(s->drop_eth_short, 1);
	assert_int_equal(s->drop_eth_type, 1);
	assert_int_equal(s->drop_eth_dst, 1);
	/* A valid SYN, then broken copies of it. */
	struct tseg sy = { .sip = 0xc0000209u, .sport = 1234, .dport = SRV_PORT, .seq = 1,
	                   .flags = DP_TH_SYN, .win = 100 };
	size_t n = mk_tcp(f, &sy);
	uint8_t g[256];
	memcpy(g, f, n);
	g[14 + 10] ^= 1;           /* IP checksum */
	dp_stack_input(st, g, n);
	assert_int_equal(s->drop_ip_csum, 1);
	memcpy(g, f, n);
	g[34 + 4] ^= 1;            /* TCP checksum */
	dp_stack_input(st, g, n);
	assert_int_equal(s->drop_tcp_csum, 1);
	dp_stack_input(st, f, 14 + 19);  /* truncated IP header */
	assert_int_equal(s->drop_ip_short, 1);
	dp_stack_input(st, f, 14 + 30);  /* total length beyond the frame */
	assert_int_equal(s->drop_ip_len, 1);
	memcpy(g, f, n);
	g[14 + 6] = 0x20;          /* MF: a fragment */
	g[14 + 10] = g[14 + 11] = 0;
	t_wr16(g + 24, ref_csum(0, g + 14, 20));
	dp_stack_input(st, g, n);
	assert_int_equal(s->drop_ip_frag, 1);
	memcpy(g, f, n);
	g[34 + 12] = 0xf0;         /* data offset beyond the segment */
	dp_stack_input(st, g, n);
	assert_int_equal(s->drop_tcp_hlen, 1);
	/* SYN+ACK to the listener: RST with SEQ = SEG.ACK (RFC 9293 3.10.7.2). */
	memcpy(g, f, n);
	struct tseg sa = sy;
	sa.flags = DP_TH_SYN | DP_TH_ACK;
	sa.ack = 0x12345678u;
	p->net.n[1].w.now = p->net.now;
	dp_stack_input(st, g, mk_tcp(g, &sa));
	assert_int_equal(s->drop_tcp_flags, 1);
	assert_int_equal(s->tcp_rst_out, 1);
	net_run(&p->net, 2, NULL, NULL);
	raw_answer_arp(&p->net, 0);
	net_run(&p->net, 2, NULL, NULL);
	struct frame *rr = NULL, *fr;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		if (tcp_view(fr).ok && rr == NULL)
			rr = fr;
		else
			free(fr);
	}
	assert_non_null(rr);
	assert_int_equal(tcp_view(rr).flags, DP_TH_RST);
	assert_int_equal(tcp_view(rr).seq, 0x12345678u);
	free(rr);
	memcpy(g, f, n);
	g[14] = 0x65;              /* version 6 in an IPv4 frame */
	dp_stack_input(st, g, n);
	assert_int_equal(s->drop_ip_version, 1);
	/* Random garbage: no crash, no connection. */
	uint64_t r = 99;
	for (int i = 0; i < 20000; i++) {
		size_t len = (size_t)(r % 200);
		for (size_t k = 0; k < len; k++) {
			r = r * 6364136223846793005ull + 1442695040888963407ull;
			g[k] = (uint8_t)(r >> 56);
		}
		if (len > 14 && (i & 1)) {
			memcpy(g, f, 34);   /* plausible headers, garbage beyond */
		}
		dp_stack_input(st, g, len);
	}
	assert_int_equal(s->conns, 0);
	assert_int_equal(s->rx_frames, 20000 + 12);  /* + the SYN-ACK and an ARP reply */
	pair_free(p);
}

/* A raw connection from 192.0.2.10:40100 with timestamps and SACK. */
struct rawc {
	uint32_t sip;
	uint16_t sport;
	uint32_t snd_nxt, rcv_nxt, tsecr, tsval;
};

static void
raw_connect(struct pair *p, struct rawc *r)
{
	r->sip = 0xc000020au;
	r->sport = 40100;
	struct tview sa = raw_syn(p, r->sip, r->sport, 9000, true);
	assert_true(sa.ok);
	r->snd_nxt = 9001;
	r->rcv_nxt = sa.seq + 1;
	r->tsecr = sa.tsval;
	r->tsval = 2000;
	uint8_t f[256];
	struct tseg a = { .sip = r->sip, .sport = r->sport, .dport = SRV_PORT, .seq = r->snd_nxt,
	                  .ack = r->rcv_nxt, .flags = DP_TH_ACK, .win = 1000, .ts = true,
	                  .tsval = r->tsval, .tsecr = r->tsecr };
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(S(p, 1)->conns, 1);
	cap_clear(&p->net, 0);
}

static void
raw_data(struct pair *p, struct rawc *r, uint32_t off, size_t len)
{
	static uint8_t buf[2000];
	uint8_t f[2100];
	for (size_t i = 0; i < len; i++)
		buf[i] = pat_byte(off + i);
	struct tseg a = { .sip = r->sip, .sport = r->sport, .dport = SRV_PORT, .seq = r->snd_nxt + off,
	                  .ack = r->rcv_nxt, .flags = DP_TH_ACK, .win = 1000, .ts = true,
	                  .tsval = ++r->tsval, .tsecr = r->tsecr, .data = buf, .len = len };
	raw_send(p, f, mk_tcp(f, &a));
}

/* Out-of-order data: an immediate duplicate ACK with a SACK block
 * (RFC 2018), then the hole filled: everything delivered in order. */
static void
test_ooo_sack(void **state)
{
	struct pair *p = raw_new(8);
	struct rawc r;
	raw_connect(p, &r);
	p->srv.decline = 1;  /* no echo: only ACKs come back */
	raw_data(p, &r, 1000, 500);
	struct frame *fr = cap_pop(&p->net, 0);
	assert_non_null(fr);
	struct tview v = tcp_view(fr);
	free(fr);
	assert_int_equal(v.ack, r.snd_nxt);
	assert_int_equal(v.nsack, 1);
	assert_int_equal(v.sack_start, r.snd_nxt + 1000);
	assert_int_equal(v.sack_end, r.snd_nxt + 1500);
	raw_data(p, &r, 2000, 100);  /* a second hole */
	fr = cap_pop(&p->net, 0);
	v = tcp_view(fr);
	free(fr);
	assert_int_equal(v.nsack, 2);
	raw_data(p, &r, 500, 500);   /* joins the first block */
	cap_clear(&p->net, 0);
	p->srv.decline = 0;
	raw_data(p, &r, 0, 500);     /* fills the first hole */
	assert_int_equal(p->srv.last->got, 1500);
	fr = cap_pop(&p->net, 0);
	assert_non_null(fr);
	v = tcp_view(fr);
	free(fr);
	assert_int_equal(v.ack, r.snd_nxt + 1500);
	cap_clear(&p->net, 0);
	raw_data(p, &r, 1500, 500);
	assert_int_equal(p->srv.last->got, 2100);
	assert_false(p->srv.last->pat_bad);
	pair_free(p);
}

/* Delayed ACK: one segment is ACKed after ~40 ms, a second at once. */
static void
test_delayed_ack(void **state)
{
	struct pair *p = raw_new(8);
	struct rawc r;
	raw_connect(p, &r);
	p->srv.decline = 1;
	raw_data(p, &r, 0, 1000);
	net_run(&p->net, 20, NULL, NULL);
	assert_null(cap_pop(&p->net, 0));
	net_run(&p->net, 30, NULL, NULL);
	struct frame *fr = cap_pop(&p->net, 0);
	assert_non_null(fr);
	struct tview v = tcp_view(fr);
	free(fr);
	assert_int_equal(v.ack, r.snd_nxt + 1000);
	raw_data(p, &r, 1000, 1000);
	assert_null(cap_pop(&p->net, 0));
	raw_data(p, &r, 2000, 1000);
	net_run(&p->net, 1, NULL, NULL);
	fr = cap_pop(&p->net, 0);
	assert_non_null(fr);
	v = tcp_view(fr);
	free(fr);
	assert_int_equal(v.ack, r.snd_nxt + 3000);
	/* Held bytes shrink the window; the right edge never moves left. */
	assert_int_equal((uint32_t)v.win << 1, 65536 - 3000);
	pair_free(p);
}

/* RFC 1337: a RST does not end TIME_WAIT early. */
static void
test_time_wait_rst(void **state)
{
	struct pair *p = pair_new(20, 8);
	struct cli_conn *cc = cli_open(p, 100);
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	net_run(&p->net, 50, NULL, NULL);
	assert_int_equal(S(p, 0)->time_wait, 1);
	struct dp_tcb *c = only_conn(p->net.n[0].st);
	assert_non_null(c);
	uint8_t f[256];
	struct tseg s = { .sip = IP_SRV, .sport = c->fport, .dport = c->lport, .seq = c->rcv_nxt,
	                  .flags = DP_TH_RST };
	size_t n = mk_tcp(f, &s);
	/* mk_tcp addresses the server; readdress to the client. */
	memcpy(f, MAC_CLI, 6);
	memcpy(f + 6, MAC_SRV, 6);
	uint8_t *ip = f + 14;
	t_wr32(ip + 16, IP_CLI);
	t_wr16(ip + 10, 0);
	t_wr16(ip + 10, ref_csum(0, ip, 20));
	uint8_t *t = ip + 20;
	uint8_t ph[12];
	t_wr32(ph, IP_SRV);
	t_wr32(ph + 4, IP_CLI);
	ph[8] = 0;
	ph[9] = 6;
	t_wr16(ph + 10, 20);
	uint32_t sum = 0;
	for (int i = 0; i < 12; i += 2)
		sum += (uint32_t)(ph[i] << 8 | ph[i + 1]);
	t_wr16(t + 16, 0);
	t_wr16(t + 16, ref_csum(sum, t, 20));
	dp_stack_input(p->net.n[0].st, f, n);
	assert_int_equal(S(p, 0)->time_wait, 1);
	assert_int_equal(S(p, 0)->drop_tcp_rst, 1);
	pair_free(p);
	free(cc);
}

/* Mixed impairments over several seeds (STACK_SEEDS=n for more). */
static void
test_mixed_seeds(void **state)
{
	unsigned n = getenv("STACK_SEEDS") ? (unsigned)atoi(getenv("STACK_SEEDS")) : 4;
	for (unsigned i = 0; i < n; i++) {
		uint64_t seed = 1000 + i;
		transfer_x(seed, (unsigned)(seed % 7) * 10, (unsigned)(seed % 5) * 40, (unsigned)(seed % 3) * 20,
		           (unsigned)(seed % 4) * 5, 100000 + (seed % 13) * 7777);
	}
}

/* RFC 6191: a new SYN with a higher timestamp takes over the server's
 * TIME_WAIT for the same 4-tuple. */
static void
test_time_wait_reuse(void **state)
{
	struct pair *p = pair_new(21, 8);
	struct cli_conn *cc = cli_open(p, 5);
	cc->close_when_done = false;
	assert_true(net_run(&p->net, 2000, srv_accepted, p));
	struct dp_tcb *c = only_conn(p->net.n[0].st);
	uint16_t port = c->lport;
	dp_conn_timer(p->srv.last->dc, p->net.now + 20);  /* the server closes */
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	net_run(&p->net, 100, NULL, NULL);
	assert_int_equal(S(p, 1)->time_wait, 1);
	free(cc);
	p->net.n[0].st->next_port = port;  /* same 4-tuple again */
	cc = cli_open(p, 1000);
	assert_true(net_run(&p->net, 5000, cli_closed, cc));
	assert_int_equal(cc->got, 1000);
	assert_int_equal(S(p, 1)->tcp_tw_reuse, 1);
	assert_int_equal(p->srv.accepted, 2);
	pair_free(p);
	free(cc);
}

/* IPv6: neighbour solicitation → advertisement, DAD, ping; bad input dropped. */
static size_t
mk_icmp6(uint8_t *f, const uint8_t dmac[6], const uint8_t src[16], const uint8_t dst[16],
         uint8_t hops, const uint8_t *msg, size_t len)
{
	memcpy(f, dmac, 6);
	memcpy(f + 6, MAC_GW, 6);
	t_wr16(f + 12, 0x86dd);
	uint8_t *ip = f + 14;
	memset(ip, 0, 40);
	ip[0] = 0x60;
	t_wr16(ip + 4, (uint16_t)len);
	ip[6] = 58;
	ip[7] = hops;
	memcpy(ip + 8, src, 16);
	memcpy(ip + 24, dst, 16);
	uint8_t *m = ip + 40;
	memcpy(m, msg, len);
	t_wr16(m + 2, 0);
	uint32_t sum = 0;
	for (int i = 0; i < 32; i += 2)
		sum += (uint32_t)(ip[8 + i] << 8 | ip[9 + i]);
	sum += (uint32_t)len + 58;
	t_wr16(m + 2, ref_csum(sum, m, len));
	return 54 + len;
}

static void
test_ipv6_nd_ping(void **state)
{
	struct pair *p = raw_new(4);
	struct dp_stack *st = p->net.n[1].st;
	const struct dp_stack_stats *s = dp_stack_stats(st);
	/* Our link-local address from MAC 02:00:00:00:00:02. */
	uint8_t ll[16] = { 0xfe, 0x80, [8] = 0, [9] = 0, [10] = 0, [11] = 0xff, [12] = 0xfe, [15] = 2 };
	uint8_t peer[16] = { 0xfe, 0x80, [15] = 0x99 };
	uint8_t sn[16] = { 0xff, 2, [11] = 1, [12] = 0xff, [13] = 0, [14] = 0, [15] = 2 };
	uint8_t snmac[6] = { 0x33, 0x33, 0xff, 0, 0, 2 };
	uint8_t ns[32] = { 135, 0 };
	memcpy(ns + 8, ll, 16);
	ns[24] = 1;
	ns[25] = 1;
	memcpy(ns + 26, MAC_GW, 6);
	uint8_t f[256];
	raw_send(p, f, mk_icmp6(f, snmac, peer, sn, 255, ns, sizeof(ns)));
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_memory_equal(r->data, MAC_GW, 6);
	assert_int_equal(r->data[54], 136);
	assert_int_equal(r->data[58], 0x60);
	assert_memory_equal(r->data + 62, ll, 16);
	assert_memory_equal(r->data + 80, MAC_SRV, 6);
	assert_memory_equal(r->data + 38, peer, 16);
	free(r);
	/* Hop limit not 255: not from the link, dropped. */
	raw_send(p, f, mk_icmp6(f, snmac, peer, sn, 64, ns, sizeof(ns)));
	assert_null(cap_pop(&p->net, 0));
	assert_int_equal(s->drop_ip6_nd, 1);
	/* DAD probe (unspecified source): answered to all-nodes. */
	uint8_t unspec[16] = { 0 };
	raw_send(p, f, mk_icmp6(f, snmac, unspec, sn, 255, ns, 24));
	r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_int_equal(r->data[0], 0x33);
	assert_int_equal(r->data[5], 1);
	assert_int_equal(r->data[58], 0x20);
	free(r);
	/* Ping. */
	uint8_t echo[20] = { 128, 0, 0, 0, 0, 7, 0, 1, 'p', 'i', 'n', 'g', '6' };
	raw_send(p, f, mk_icmp6(f, MAC_SRV, peer, ll, 64, echo, sizeof(echo)));
	r = cap_pop(&p->net, 0);
	assert_non_null(r);
	assert_int_equal(r->data[54], 129);
	assert_memory_equal(r->data + 62, "ping6", 5);
	assert_memory_equal(r->data + 22, ll, 16);
	assert_memory_equal(r->data + 38, peer, 16);
	free(r);
	assert_int_equal(s->icmp6_echo_out, 1);
	/* Corrupted checksum, another host's address, TCP over IPv6. */
	size_t n = mk_icmp6(f, MAC_SRV, peer, ll, 64, echo, sizeof(echo));
	f[60] ^= 1;
	raw_send(p, f, n);
	assert_int_equal(s->drop_ip6_bad, 1);
	uint8_t other[16] = { 0xfe, 0x80, [15] = 0x55 };
	raw_send(p, f, mk_icmp6(f, MAC_SRV, peer, other, 64, echo, sizeof(echo)));
	assert_int_equal(s->drop_ip6_dst, 1);
	n = mk_icmp6(f, MAC_SRV, peer, ll, 64, echo, sizeof(echo));
	f[14 + 6] = 6;
	raw_send(p, f, n);
	assert_int_equal(s->drop_ip6_proto, 1);
	/* Multicast not ours: dropped at the Ethernet layer. */
	uint8_t othermac[6] = { 0x33, 0x33, 0xff, 0, 0, 0x55 };
	raw_send(p, f, mk_icmp6(f, othermac, peer, sn, 255, ns, sizeof(ns)));
	assert_int_equal(s->drop_eth_dst, 1);
	assert_null(cap_pop(&p->net, 0));
	pair_free(p);
}

/* Checksum offload: RX skips verification, TX leaves the NIC's share. */
static void
test_csum_offload(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));
	net_init(&p->net, 22);
	the_srv = &p->srv;
	struct dp_stack_conf c1;
	conf_for(&c1, 1, 4);
	c1.offload = DP_STACK_RX_CSUM | DP_STACK_TX_CSUM;
	net_node(&p->net, 0, NULL, NULL, NULL);
	net_node(&p->net, 1, &c1, &srv_ops, &p->srv);
	uint8_t f[256];
	struct tseg sy = { .sip = 0xc000020bu, .sport = 999, .dport = SRV_PORT, .seq = 1,
	                   .flags = DP_TH_SYN, .win = 100 };
	size_t n = mk_tcp(f, &sy);
	f[34 + 16] ^= 0x55;        /* a wrong TCP checksum: the NIC would have said */
	raw_send(p, f, n);
	raw_answer_arp(&p->net, 0);
	cap_clear(&p->net, 0);
	net_run(&p->net, 2, NULL, NULL);
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	struct tview v = tcp_view(r);
	assert_true(v.ok);
	assert_int_equal(v.flags, DP_TH_SYN | DP_TH_ACK);
	assert_int_equal(r->data[24] << 8 | r->data[25], 0);  /* IPv4 checksum left to the NIC */
	uint8_t ph[12];
	t_wr32(ph, IP_SRV);
	t_wr32(ph + 4, 0xc000020bu);
	ph[8] = 0;
	ph[9] = 6;
	t_wr16(ph + 10, (uint16_t)(r->len - 34));
	uint16_t want = (uint16_t)~ref_csum(0, ph, 12);
	assert_int_equal(r->data[50] << 8 | r->data[51], want);
	free(r);
	pair_free(p);
}

/* Bytes held while the application declined them, then taken at once on
 * rx_resume: what the application wrote in answer leaves in the same
 * settle (it used to wait for the next event once the ring was freed). */
static void
test_held_bytes_answer_at_once(void **state)
{
	struct pair *p = raw_new(8);
	struct rawc r;
	raw_connect(p, &r);
	p->srv.decline = 1;
	raw_data(p, &r, 0, 300);
	cap_clear(&p->net, 0);
	struct dp_tcb *c = dp_tcp_lookup(p->net.n[1].st, r.sip, r.sport, SRV_PORT);
	assert_non_null(c->rx);
	assert_int_equal(c->rx->held, 300);
	p->srv.decline = 0;
	dp_conn_rx_resume(p->srv.last->dc);
	assert_null(c->rx);
	net_run(&p->net, 2, NULL, NULL);
	struct frame *fr;
	size_t echoed = 0;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		echoed += tcp_view(fr).len;
		free(fr);
	}
	assert_int_equal(echoed, 300);
	pair_free(p);
}

/* ---- half-open table (SYN_RCVD) ---- */

/* Take the captured TCP frames of the raw node; the last one is kept in
 * *last (caller frees), the number of SYN-ACKs returned. */
static int
raw_synacks(struct pair *p, struct tview *last)
{
	struct frame *r;
	int n = 0;
	while ((r = cap_pop(&p->net, 0)) != NULL) {
		struct tview t = tcp_view(r);
		if (t.ok && t.flags == (DP_TH_SYN | DP_TH_ACK)) {
			n++;
			if (last != NULL) {
				*last = t;
				last->data = NULL;
			}
		}
		free(r);
	}
	return n;
}

/* A lost third ACK from a client that waits for the server to speak
 * (SMTP): the SYN-ACK comes again, 1 s and then 2 s later, with the same
 * ISN; the late ACK completes the handshake with the SYN's options. */
static void
test_synq_lost_ack(void **state)
{
	struct pair *p = raw_new(64);
	struct dp_stack *st = p->net.n[1].st;
	uint32_t sip = 0xc0000210u;
	struct tview sa = raw_syn(p, sip, 41000, 7000, true);
	assert_true(sa.ok);
	assert_int_equal(sa.flags, DP_TH_SYN | DP_TH_ACK);
	assert_int_equal(sa.ack, 7001);
	assert_true(sa.ts);
	assert_int_equal(sa.tsecr, 1000);
	struct dp_tcb *c = dp_tcp_lookup(st, sip, 41000, SRV_PORT);
	assert_non_null(c);
	assert_int_equal(c->state, DP_TCP_SYN_RCVD);
	assert_int_equal(S(p, 1)->tcp_cookies_out, 0);
	assert_int_equal(st->synq, 1);
	assert_int_equal(p->srv.accepted, 0);
	net_run(&p->net, 900, NULL, NULL);
	assert_int_equal(raw_synacks(p, NULL), 0);
	struct tview again = { 0 };
	net_run(&p->net, 150, NULL, NULL);
	assert_int_equal(raw_synacks(p, &again), 1);
	assert_int_equal(again.seq, sa.seq);
	net_run(&p->net, 1900, NULL, NULL);
	assert_int_equal(raw_synacks(p, NULL), 0);
	net_run(&p->net, 150, NULL, NULL);
	assert_int_equal(raw_synacks(p, &again), 1);
	assert_int_equal(again.seq, sa.seq);
	assert_int_equal(st->stats.tcp_synack_rexmit, 2);
	/* The ACK at last, without data. */
	uint8_t f[256];
	struct tseg a = { .sip = sip, .sport = 41000, .dport = SRV_PORT, .seq = 7001,
	                  .ack = sa.seq + 1, .flags = DP_TH_ACK, .win = 1000, .ts = true,
	                  .tsval = 1005, .tsecr = again.tsval };
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(p->srv.accepted, 1);
	assert_int_equal(c->state, DP_TCP_ESTABLISHED);
	assert_int_equal(st->synq, 0);
	assert_int_equal(st->stats.tcp_synq_ok, 1);
	assert_int_equal(c->snd_wscale, 7);
	assert_int_equal(c->rcv_wscale, st->rcv_wscale);
	assert_true(c->sack_ok);
	assert_true(c->ts_ok);
	assert_int_equal(c->mss, 1460);
	assert_int_equal(c->snd_wnd, 1000u << 7);
	/* Data flows: the echo comes back. */
	a.data = (const uint8_t *)"hello";
	a.len = 5;
	a.flags = DP_TH_ACK | DP_TH_PSH;
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(p->srv.last->got, 5);
	pair_free(p);
}

/* Nobody answers: four SYN-ACK retransmissions, then the entry goes
 * without a trace (no accept, no closed, no RST). */
static void
test_synq_timeout(void **state)
{
	struct pair *p = raw_new(64);
	struct dp_stack *st = p->net.n[1].st;
	raw_syn(p, 0xc0000211u, 41001, 1, false);
	assert_int_equal(S(p, 1)->conns, 1);
	net_run(&p->net, 40000, NULL, NULL);
	assert_int_equal(raw_synacks(p, NULL), 4);
	assert_int_equal(st->stats.tcp_synq_timeout, 1);
	assert_int_equal(st->synq, 0);
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(S(p, 1)->tcp_rst_out, 0);
	assert_int_equal(p->srv.accepted, 0);
	assert_int_equal(p->srv.closed, 0);
	pair_free(p);
}

/* Without timestamps a half-open entry still negotiates window scaling
 * and SACK (cookies cannot), answers only the options offered, a
 * duplicate SYN with the same SYN-ACK, an unacceptable ACK with RST, and
 * an exact RST by going away; a SYN with another ISN starts over. */
static void
test_synq_options_and_validation(void **state)
{
	struct pair *p = raw_new(64);
	struct dp_stack *st = p->net.n[1].st;
	uint32_t sip = 0xc0000212u;
	struct tview sa = raw_syn(p, sip, 41002, 500, false);
	assert_true(sa.ok);
	assert_false(sa.ts);
	struct tview dup = raw_syn(p, sip, 41002, 500, false);
	assert_int_equal(dup.seq, sa.seq);
	assert_int_equal(st->stats.tcp_synack_rexmit, 1);
	uint8_t f[256];
	struct tseg a = { .sip = sip, .sport = 41002, .dport = SRV_PORT, .seq = 501,
	                  .ack = sa.seq + 7, .flags = DP_TH_ACK, .win = 100 };
	raw_send(p, f, mk_tcp(f, &a));
	struct frame *r = cap_pop(&p->net, 0);
	assert_non_null(r);
	struct tview v = tcp_view(r);
	free(r);
	assert_int_equal(v.flags, DP_TH_RST);
	assert_int_equal(v.seq, sa.seq + 7);
	assert_int_equal(S(p, 1)->conns, 1);   /* the entry stays */
	a.ack = sa.seq + 1;
	raw_send(p, f, mk_tcp(f, &a));
	struct dp_tcb *c = dp_tcp_lookup(st, sip, 41002, SRV_PORT);
	assert_non_null(c);
	assert_int_equal(c->state, DP_TCP_ESTABLISHED);
	assert_int_equal(c->snd_wscale, 7);
	assert_true(c->sack_ok);
	assert_false(c->ts_ok);
	assert_int_equal(c->snd_wnd, 100u << 7);
	/* A SYN with another ISN for a half-open tuple: a fresh entry. */
	struct tview sb = raw_syn(p, sip, 41003, 9000, true);
	c = dp_tcp_lookup(st, sip, 41003, SRV_PORT);
	assert_int_equal(c->state, DP_TCP_SYN_RCVD);
	struct tview sc = raw_syn(p, sip, 41003, 123456, true);
	assert_int_equal(sc.ack, 123457);
	c = dp_tcp_lookup(st, sip, 41003, SRV_PORT);
	assert_int_equal(c->irs, 123456);
	assert_int_equal(st->synq, 1);
	(void)sb;
	/* An RST off by one: dropped (challenge ACK); exact: the entry goes. */
	struct tseg rst = { .sip = sip, .sport = 41003, .dport = SRV_PORT, .seq = 123458,
	                    .flags = DP_TH_RST };
	raw_send(p, f, mk_tcp(f, &rst));
	assert_non_null(dp_tcp_lookup(st, sip, 41003, SRV_PORT));
	rst.seq = 123457;
	raw_send(p, f, mk_tcp(f, &rst));
	assert_null(dp_tcp_lookup(st, sip, 41003, SRV_PORT));
	assert_int_equal(st->synq, 0);
	assert_int_equal(S(p, 1)->conns, 1);
	pair_free(p);
}

/* Beyond the table, cookies; a cookie answered for a tuple that has
 * since got an entry (the client's SYN retransmitted) still wins. */
static void
test_synq_threshold_and_cookie_race(void **state)
{
	struct pair *p = raw_new(64);
	struct dp_stack *st = p->net.n[1].st;
	uint32_t sip = 0xc0000213u;
	for (uint16_t i = 0; i < 12; i++)
		raw_syn(p, sip, (uint16_t)(42000 + i), 100u * i, true);
	assert_int_equal(st->synq, 8);
	assert_int_equal(S(p, 1)->tcp_cookies_out, 4);
	assert_int_equal(S(p, 1)->conns, 8);
	/* A second later the SYN rate is low again but the table is full. */
	net_run(&p->net, 1000, NULL, NULL);
	cap_clear(&p->net, 0);
	raw_syn(p, sip, 42100, 1, true);
	assert_int_equal(S(p, 1)->tcp_cookies_out, 5);
	/* Cookie race: a cookie first, then the retransmitted SYN gets an
	 * entry; the client ACKs the cookie. */
	st->synq_max = 0;
	struct tview ck = raw_syn(p, sip, 42200, 777, true);
	st->synq_max = 16;
	struct tview ent = raw_syn(p, sip, 42200, 777, true);
	assert_int_not_equal(ck.seq, ent.seq);
	struct dp_tcb *c = dp_tcp_lookup(st, sip, 42200, SRV_PORT);
	assert_int_equal(c->state, DP_TCP_SYN_RCVD);
	uint8_t f[256];
	struct tseg a = { .sip = sip, .sport = 42200, .dport = SRV_PORT, .seq = 778,
	                  .ack = ck.seq + 1, .flags = DP_TH_ACK, .win = 1000, .ts = true,
	                  .tsval = 1001, .tsecr = ck.tsval };
	int accepted = p->srv.accepted;
	raw_send(p, f, mk_tcp(f, &a));
	assert_int_equal(p->srv.accepted, accepted + 1);
	c = dp_tcp_lookup(st, sip, 42200, SRV_PORT);
	assert_non_null(c);
	assert_int_equal(c->state, DP_TCP_ESTABLISHED);
	assert_int_equal(c->iss, ck.seq);
	pair_free(p);
}

/* ---- ICMP destination unreachable ---- */

/* Destination unreachable from `from` quoting the IP header and 8 bytes
 * of TCP of a frame the stack sent (seq replaced unless 0). */
static size_t
mk_unreach(uint8_t *f, uint32_t from, uint8_t code, uint16_t mtu, const uint8_t *orig,
           uint32_t seq)
{
	uint8_t *icmp = f + 34;
	memset(icmp, 0, 36);
	icmp[0] = 3;
	icmp[1] = code;
	t_wr16(icmp + 6, mtu);
	memcpy(icmp + 8, orig + 14, 28);
	if (seq != 0)
		t_wr32(icmp + 8 + 24, seq);
	t_wr16(icmp + 2, ref_csum(0, icmp, 36));
	return mk_ip(f, MAC_GW, from, IP_SRV, 1, 36);
}

/* RFC 1191 with RFC 5927 checks: a quote of an unacknowledged segment
 * lowers the MSS and resends in smaller segments; a quote outside the
 * send window, a higher MTU or one below 576 are not taken as they are. */
static void
test_icmp_frag_needed(void **state)
{
	struct pair *p = raw_new(8);
	struct dp_stack *st = p->net.n[1].st;
	struct rawc r;
	raw_connect(p, &r);
	raw_data(p, &r, 0, 1400);   /* echoed in one 1400-byte segment */
	net_run(&p->net, 2, NULL, NULL);
	struct frame *e = NULL, *fr;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		struct tview v = tcp_view(fr);
		if (v.ok && v.len == 1400 && e == NULL)
			e = fr;
		else
			free(fr);
	}
	assert_non_null(e);
	struct tview ev = tcp_view(e);
	struct dp_tcb *c = dp_tcp_lookup(st, r.sip, r.sport, SRV_PORT);
	assert_int_equal(c->mss, 1460);
	uint8_t f[256];
	/* Outside the window: ignored. */
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 1000, e->data, ev.seq - 5000));
	assert_int_equal(c->mss, 1460);
	assert_int_equal(st->stats.icmp_bad_quote, 1);
	assert_null(cap_pop(&p->net, 0));
	/* Another connection's ports: ignored. */
	uint8_t g[128];
	memcpy(g, e->data, 62);
	g[34 + 2] ^= 1;
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 1000, g, 0));
	assert_int_equal(st->stats.icmp_bad_quote, 2);
	/* In the window: MSS 960, the 1400 bytes go again as 948 + 452. */
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 1000, e->data, 0));
	assert_int_equal(c->mss, 960);
	assert_int_equal(st->stats.tcp_pmtu_lowered, 1);
	assert_int_equal(st->stats.icmp_unreach, 3);
	size_t lens[4], n = 0;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		struct tview v = tcp_view(fr);
		if (v.ok && v.len > 0 && n < 4) {
			assert_true(fr->len <= 14 + 1000);
			assert_int_equal(v.seq, ev.seq + (n ? lens[0] : 0));
			lens[n++] = v.len;
		}
		free(fr);
	}
	assert_int_equal(n, 2);
	assert_int_equal(lens[0], 948);
	assert_int_equal(lens[1], 452);
	/* A higher MTU never raises it; 300 is taken as 576; no MTU (an old
	 * router) means the RFC 1191 plateau below the quoted datagram. */
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 1400, e->data, 0));
	assert_int_equal(c->mss, 960);
	cap_clear(&p->net, 0);
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 0, e->data, 0));   /* 1452 -> 1006 */
	assert_int_equal(c->mss, 960);
	cap_clear(&p->net, 0);
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 300, e->data, 0));
	assert_int_equal(c->mss, 536);
	cap_clear(&p->net, 0);
	/* A bad ICMP checksum or a quote of someone else's datagram: dropped. */
	size_t k = mk_unreach(f, IP_GW, 4, 100, e->data, 0);
	f[34 + 5] ^= 1;
	raw_send(p, f, k);
	assert_int_equal(S(p, 1)->drop_icmp_csum, 1);
	memcpy(g, e->data, 62);
	t_wr32(g + 14 + 12, 0x0a000063u);
	raw_send(p, f, mk_unreach(f, IP_GW, 4, 100, g, 0));
	assert_int_equal(c->mss, 536);
	/* After the ACK the rest of the transfer uses the smaller segments. */
	free(e);
	pair_free(p);
}

/* RFC 1122 4.2.3.9 for an active open: port unreachable is a hard error
 * (-ECONNREFUSED at once); host unreachable is soft (the SYN keeps
 * going; a timeout then says -EHOSTUNREACH). */
static void
test_icmp_unreach_active_open(void **state)
{
	struct pair *p = raw_new(8);
	struct dp_stack *st = p->net.n[1].st;
	uint32_t dst = 0xc0000301u;
	struct srv_conn *sc = calloc(1, sizeof(*sc));
	p->net.n[1].w.now = p->net.now;
	struct dp_conn *dc = dp_stack_connect(st, dst, 80, sc);
	assert_non_null(dc);
	net_run(&p->net, 2, NULL, NULL);
	raw_answer_arp(&p->net, 0);
	net_run(&p->net, 2, NULL, NULL);
	struct frame *syn = NULL, *fr;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		struct tview v = tcp_view(fr);
		if (v.ok && v.flags == DP_TH_SYN && syn == NULL)
			syn = fr;
		else
			free(fr);
	}
	assert_non_null(syn);
	uint8_t f[256];
	/* A wrong sequence number in the quote: ignored. */
	raw_send(p, f, mk_unreach(f, dst, 3, 0, syn->data, tcp_view(syn).seq + 1));
	assert_int_equal(p->srv.closed, 0);
	assert_int_equal(st->stats.icmp_bad_quote, 1);
	raw_send(p, f, mk_unreach(f, dst, 3, 0, syn->data, 0));
	assert_int_equal(p->srv.closed, 1);
	assert_int_equal(p->srv.last_err, -ECONNREFUSED);
	assert_int_equal(S(p, 1)->conns, 0);
	assert_int_equal(st->stats.icmp_conn_err, 1);
	free(syn);
	/* Host unreachable: soft. */
	sc = calloc(1, sizeof(*sc));
	dc = dp_stack_connect(st, dst, 81, sc);
	assert_non_null(dc);
	net_run(&p->net, 2, NULL, NULL);
	syn = NULL;
	while ((fr = cap_pop(&p->net, 0)) != NULL) {
		struct tview v = tcp_view(fr);
		if (v.ok && v.flags == DP_TH_SYN && syn == NULL)
			syn = fr;
		else
			free(fr);
	}
	assert_non_null(syn);
	raw_send(p, f, mk_unreach(f, IP_GW, 1, 0, syn->data, 0));
	assert_int_equal(p->srv.closed, 1);
	assert_int_equal(st->stats.icmp_soft_err, 1);
	net_run(&p->net, 130000, NULL, NULL);
	assert_int_equal(p->srv.closed, 2);
	assert_int_equal(p->srv.last_err, -EHOSTUNREACH);
	free(syn);
	pair_free(p);
}

int
main(void)
{
	for (size_t i = 0; i < PAT_LEN; i++)
		pat[i] = (uint8_t)((i * 2654435761u) >> 13);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_size),
		cmocka_unit_test(test_arp_and_ping),
		cmocka_unit_test(test_arp_queue_and_timeout),
		cmocka_unit_test(test_arp_between_stacks),
		cmocka_unit_test(test_cookie_handshake),
		cmocka_unit_test(test_cookie_no_timestamps),
		cmocka_unit_test(test_syn_flood),
		cmocka_unit_test(test_bulk_clean),
		cmocka_unit_test(test_bulk_loss1),
		cmocka_unit_test(test_bulk_loss10),
		cmocka_unit_test(test_bulk_reorder_dup),
		cmocka_unit_test(test_bulk_corrupt),
		cmocka_unit_test(test_zero_window),
		cmocka_unit_test(test_rst_validation),
		cmocka_unit_test(test_challenge_rate_limit),
		cmocka_unit_test(test_paws),
		cmocka_unit_test(test_syn_backoff),
		cmocka_unit_test(test_data_backoff),
		cmocka_unit_test(test_fin_time_wait),
		cmocka_unit_test(test_server_close),
		cmocka_unit_test(test_time_wait_cap),
		cmocka_unit_test(test_many_connections),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_conn_pool_exhausted),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_ooo_sack),
		cmocka_unit_test(test_delayed_ack),
		cmocka_unit_test(test_time_wait_rst),
		cmocka_unit_test(test_mixed_seeds),
		cmocka_unit_test(test_time_wait_reuse),
		cmocka_unit_test(test_ipv6_nd_ping),
		cmocka_unit_test(test_csum_offload),
		cmocka_unit_test(test_held_bytes_answer_at_once),
		cmocka_unit_test(test_synq_lost_ack),
		cmocka_unit_test(test_synq_timeout),
		cmocka_unit_test(test_synq_options_and_validation),
		cmocka_unit_test(test_synq_threshold_and_cookie_race),
		cmocka_unit_test(test_icmp_frag_needed),
		cmocka_unit_test(test_icmp_unreach_active_open),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
