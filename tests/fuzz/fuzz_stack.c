/*
 * fuzz_stack.c - libFuzzer target for the userspace stack (dataplane/
 * stack.h): a server stack listening on port 25 with an echo application
 * gets a script of operations from the input:
 *   0 len16 bytes   a raw Ethernet frame
 *   1 n             advance time by n*4 ms, run timers
 *   2 fl n data..   a TCP segment from peer 10.0.0.9:4000+(fl>>6) answering
 *                   the stack's last segment to that port (so handshakes
 *                   with the real cookie, data, FIN, RST are reachable):
 *                   flags fl&0x3f, n payload bytes, TSecr echoed; with
 *                   URG the first two bytes make a SACK block instead
 *   3               answer the stack's last ARP request
 *   4 a             the application acts on its newest connection:
 *                   a%5: close, abort, rx_resume, timer(now+a), toggle decline
 * With the first byte's top bit set the stack has an exception callback
 * (stack.h), which reads every byte it is given: the frame being input,
 * whole. Checked by the sanitizers; plus: every frame the stack sends parses as
 * Ethernet/ARP, Ethernet/IPv4 with a valid header checksum, or
 * Ethernet/IPv6 with a consistent payload length.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/stack_impl.h"
#include "tests/dataplane/ref_csum.h"

#define PEER_IP 0x0a000009u
#define OUR_IP  0x0a000002u

struct fconn {
	struct dp_conn *dc;
	uint8_t buf[4096];
	size_t off, len;
	struct fconn **slot;
};

struct fz {
	struct dp_worker w;
	struct dp_stack *st;
	bool decline;
	struct fconn *newest;
	uint8_t frame[9100];
	uint8_t last_arp[64];
	bool have_arp;
	struct { bool have; uint32_t seq, ack, tsval; uint16_t len; uint8_t flags; } last[4];
};

static struct fz F;

static void fw_wake(struct dp_worker *w) { (void)w; }
static const struct dp_worker_ops fw_ops = { .wake = fw_wake };

static uint8_t *
f_tx_buf(void *ctx, size_t max, void **h)
{
	if (max > sizeof(F.frame))
		abort();
	*h = F.frame;
	return F.frame;
}

static void
f_tx_send(void *ctx, void *h, size_t len)
{
	const uint8_t *f = F.frame;
	if (len < 14)
		abort();
	if (f[12] == 8 && f[13] == 6) {
		if (len < 42)
			abort();
		memcpy(F.last_arp, f, 42);
		F.have_arp = f[21] == 1;
		return;
	}
	if (f[12] == 0x86 && f[13] == 0xdd) {
		if (len < 62 || (f[14] >> 4) != 6 || (size_t)rd16(f + 18) + 54 != len)
			abort();
		return;
	}
	if (!(f[12] == 8 && f[13] == 0) || len < 34 || ref_csum(0, f + 14, 20) != 0)
		abort();
	const uint8_t *ip = f + 14, *t = ip + 20;
	if (ip[9] != 6 || len < 54)
		return;
	uint16_t dport = (uint16_t)(t[2] << 8 | t[3]);
	if (dport < 4000 || dport > 4003)
		return;
	unsigned i = dport - 4000u;
	size_t hl = (size_t)(t[12] >> 4) * 4;
	F.last[i].have = true;
	F.last[i].seq = rd32(t + 4);
	F.last[i].ack = rd32(t + 8);
	F.last[i].flags = t[13];
	F.last[i].len = (uint16_t)(len - 34 - hl);
	F.last[i].tsval = 0;
	for (size_t k = 20; k + 1 < hl;) {
		if (t[k] == 0)
			break;
		if (t[k] == 1) {
			k++;
			continue;
		}
		if (t[k] == 8 && k + 10 <= hl)
			F.last[i].tsval = rd32(t + k + 2);
		k += t[k + 1] ? t[k + 1] : 1;
	}
}

static const struct dp_stack_io f_io = { .tx_buf = f_tx_buf, .tx_send = f_tx_send };

static const uint8_t *f_in;        /* the frame dp_stack_input() has */
static size_t f_in_len;

static void
f_exception(void *ctx, const uint8_t *frame, size_t len)
{
	(void)ctx;
	if (frame != f_in || len != f_in_len)
		abort();
	volatile uint8_t x = 0;
	for (size_t k = 0; k < len; k++)
		x ^= frame[k];
	(void)x;
}

static const struct dp_stack_io f_io_exc = { .tx_buf = f_tx_buf, .tx_send = f_tx_send,
                                             .exception = f_exception };

static void
feed(const uint8_t *f, size_t n)
{
	f_in = f;
	f_in_len = n;
	dp_stack_input(F.st, f, n);
	f_in = NULL;
}

static void *
a_accept(void *wa, struct dp_conn *c, const struct sockaddr *peer, const struct sockaddr *local,
         unsigned flags)
{
	struct fconn *fc = calloc(1, sizeof(*fc));
	fc->dc = c;
	if (F.newest != NULL)
		F.newest->slot = NULL;
	F.newest = fc;
	fc->slot = &F.newest;
	return fc;
}

static size_t
a_recv(void *ca, const uint8_t *p, size_t n)
{
	struct fconn *fc = ca;
	if (F.decline)
		return 0;
	if (fc->off == fc->len)
		fc->off = fc->len = 0;
	size_t room = sizeof(fc->buf) - fc->len, k = n < room ? n : room;
	memcpy(fc->buf + fc->len, p, k);
	fc->len += k;
	return k;
}

static size_t
a_pull(void *ca, const uint8_t **p)
{
	struct fconn *fc = ca;
	*p = fc->buf + fc->off;
	return fc->len - fc->off;
}

static void
a_sent(void *ca, size_t n)
{
	((struct fconn *)ca)->off += n;
}

static void
a_timer(void *ca)
{
	dp_conn_close(((struct fconn *)ca)->dc);
}

static void
a_closed(void *ca, int err)
{
	struct fconn *fc = ca;
	if (fc->slot != NULL)
		*fc->slot = NULL;
	free(fc);
}

static const struct dp_app_ops f_ops = {
	.accept = a_accept, .recv = a_recv, .pull = a_pull, .sent = a_sent,
	.timer = a_timer, .closed = a_closed,
};

static void
send_tcp(unsigned port, uint8_t fl, const uint8_t *data, size_t n)
{
	uint8_t f[1600];
	unsigned i = port - 4000u;
	uint32_t seq = 1000, ack = 0;
	if (F.last[i].have) {
		seq = F.last[i].ack;
		ack = F.last[i].seq + F.last[i].len + ((F.last[i].flags & (DP_TH_SYN | DP_TH_FIN)) ? 1 : 0);
	}
	uint8_t *t = f + 34, *o = t + 20;
	size_t ol = 0;
	if (fl & DP_TH_SYN) {
		o[ol++] = 2; o[ol++] = 4; wr16(o + ol, 1400); ol += 2;
		o[ol++] = 1; o[ol++] = 3; o[ol++] = 3; o[ol++] = 2;
		o[ol++] = 1; o[ol++] = 1; o[ol++] = 4; o[ol++] = 2;
	}
	o[ol++] = 1; o[ol++] = 1; o[ol++] = 8; o[ol++] = 10;
	wr32(o + ol, (uint32_t)F.w.now * 3u); wr32(o + ol + 4, F.last[i].tsval); ol += 8;
	if ((fl & DP_TH_URG) && n >= 2) {
		/* URG (ignored by the stack) asks for a SACK block instead. */
		uint32_t a = ack + 1u + data[0] * 64u;
		o[ol++] = 1; o[ol++] = 1; o[ol++] = 5; o[ol++] = 10;
		wr32(o + ol, a); wr32(o + ol + 4, a + 1u + data[1] * 64u); ol += 8;
		fl &= (uint8_t)~DP_TH_URG;
		data += 2;
		n -= 2;
	}
	size_t hl = 20 + ol, len = hl + n;
	wr16(t, (uint16_t)port);
	wr16(t + 2, 25);
	wr32(t + 4, seq);
	wr32(t + 8, ack);
	t[12] = (uint8_t)((hl / 4) << 4);
	t[13] = fl;
	wr16(t + 14, 2000);
	wr16(t + 16, 0);
	wr16(t + 18, 0);
	memcpy(t + hl, data, n);
	uint32_t sum = dp_ip_pseudo(PEER_IP, OUR_IP, 6, len);
	wr16(t + 16, ref_csum(sum, t, len));
	memcpy(f, F.st->conf.mac, 6);
	memcpy(f + 6, "\x02\0\0\0\0\x09", 6);
	wr16(f + 12, 0x0800);
	uint8_t *ip = f + 14;
	memset(ip, 0, 20);
	ip[0] = 0x45;
	wr16(ip + 2, (uint16_t)(20 + len));
	ip[8] = 64;
	ip[9] = 6;
	wr32(ip + 12, PEER_IP);
	wr32(ip + 16, OUR_IP);
	wr16(ip + 10, ref_csum(0, ip, 20));
	feed(f, 34 + len);
}

static void
answer_arp(void)
{
	if (!F.have_arp)
		return;
	uint8_t r[60];
	memset(r, 0, sizeof(r));
	memcpy(r, F.st->conf.mac, 6);
	memcpy(r + 6, "\x02\0\0\0\0\x09", 6);
	wr16(r + 12, 0x0806);
	wr16(r + 14, 1);
	wr16(r + 16, 0x0800);
	r[18] = 6;
	r[19] = 4;
	wr16(r + 20, 2);
	memcpy(r + 22, "\x02\0\0\0\0\x09", 6);
	memcpy(r + 28, F.last_arp + 38, 4);
	memcpy(r + 32, F.st->conf.mac, 6);
	wr32(r + 38, OUR_IP);
	feed(r, sizeof(r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	memset(&F, 0, sizeof(F));
	F.w.ops = &fw_ops;
	F.w.now = 5000000;
	struct dp_stack_conf c;
	memset(&c, 0, sizeof(c));
	memcpy(c.mac, "\x02\0\0\0\0\x02", 6);
	c.ipv4 = OUR_IP;
	c.netmask = 0xffffff00u;
	c.gateway = 0x0a0000feu;
	c.listen[0].port = 25;
	c.nlisten = 1;
	c.conn_max = 8;
	c.rx_buf = 4096;
	c.tx_buf = 4096;
	c.rx_bufs = 3;
	c.tx_bufs = 3;
	c.time_wait_max = 2;
	c.arp_max = 4;
	F.st = dp_stack_new(&c, size > 0 && (data[0] & 0x80) ? &f_io_exc : &f_io, NULL, &F.w,
	                    &f_ops, NULL);
	if (F.st == NULL)
		abort();
	size_t i = 0;
	while (i < size) {
		uint8_t op = data[i++] % 5;
		switch (op) {
		case 0: {
			if (i + 2 > size)
				goto out;
			size_t n = (size_t)(data[i] << 8 | data[i + 1]);
			i += 2;
			if (n > size - i)
				n = size - i;
			feed(data + i, n);
			i += n;
			break;
		}
		case 1:
			if (i >= size)
				goto out;
			F.w.now += (uint64_t)data[i++] * 4u;
			dp_stack_poll(F.st);
			break;
		case 2: {
			if (i + 2 > size)
				goto out;
			uint8_t fl = data[i], n = data[i + 1];
			i += 2;
			if (n > size - i)
				n = (uint8_t)(size - i);
			send_tcp(4000u + (fl >> 6), fl & 0x3f, data + i, n);
			i += n;
			break;
		}
		case 3:
			answer_arp();
			break;
		case 4: {
			if (i >= size)
				goto out;
			uint8_t a = data[i++];
			struct fconn *fc = F.newest;
			if (a % 5 == 4) {
				F.decline = !F.decline;
				break;
			}
			if (fc == NULL)
				break;
			switch (a % 5) {
			case 0: dp_conn_close(fc->dc); break;
			case 1: dp_conn_abort(fc->dc); break;
			case 2: dp_conn_rx_resume(fc->dc); break;
			case 3: dp_conn_timer(fc->dc, F.w.now + a); break;
			}
			break;
		}
		}
	}
out:
	/* Run every timer out, then tear down. */
	for (int k = 0; k < 200; k++) {
		F.w.now += 1000;
		dp_stack_poll(F.st);
	}
	if (getenv("FUZZ_STACK_STATS") != NULL) {
		const struct dp_stack_stats *s = dp_stack_stats(F.st);
		fprintf(stderr, "accepted %llu segs in %llu out %llu rst out %llu\n",
		        (unsigned long long)s->tcp_accepted, (unsigned long long)s->tcp_segs_in,
		        (unsigned long long)s->tcp_segs_out, (unsigned long long)s->tcp_rst_out);
	}
	F.st = dp_stack_free(F.st);
	return 0;
}
