/*
 * Tests for the exception path: which received frames the stack hands to
 * io->exception (stack.h) and which it keeps, drops or answers; without a
 * callback the old behaviour (drop, RST for a closed port). Then the TAP
 * side (dataplane/exception.c): name checks always, a real tap when run as
 * root with /dev/net/tun.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataplane/exception.h"
#include "dataplane/stack_impl.h"
#include "tests/dataplane/ref_csum.h"

#define OUR_IP  0x0a000002u        /* 10.0.0.2/24 */
#define PEER_IP 0x0a000001u
#define LISTEN  25

static const uint8_t OUR_MAC[6] = { 2, 0, 0, 0, 0, 2 };
static const uint8_t PEER_MAC[6] = { 2, 0, 0, 0, 0, 1 };

/* What the stack did with the frames of one test. */
struct cap {
	unsigned exc, sent;
	size_t exc_len;
	uint8_t exc_frame[2048];
	uint8_t tx[2048];
};

static uint8_t *
t_tx_buf(void *ctx, size_t max, void **h)
{
	struct cap *c = ctx;
	if (max > sizeof(c->tx))
		return NULL;
	*h = c;
	return c->tx;
}

static void
t_tx_send(void *ctx, void *h, size_t len)
{
	(void)h;
	(void)len;
	((struct cap *)ctx)->sent++;
}

static void
t_exception(void *ctx, const uint8_t *frame, size_t len)
{
	struct cap *c = ctx;
	c->exc++;
	c->exc_len = len;
	memcpy(c->exc_frame, frame, len < sizeof(c->exc_frame) ? len : sizeof(c->exc_frame));
}

static const struct dp_stack_io io_exc = { .tx_buf = t_tx_buf, .tx_send = t_tx_send,
                                           .exception = t_exception };
static const struct dp_stack_io io_none = { .tx_buf = t_tx_buf, .tx_send = t_tx_send };

static void *
a_accept(void *wa, struct dp_conn *c, const struct sockaddr *peer, const struct sockaddr *local,
         unsigned flags)
{
	(void)wa; (void)c; (void)peer; (void)local; (void)flags;
	return NULL;   /* no connection completes in these tests */
}
static size_t a_recv(void *ca, const uint8_t *p, size_t n) { (void)ca; (void)p; return n; }
static size_t a_pull(void *ca, const uint8_t **p) { (void)ca; (void)p; return 0; }
static void a_sent(void *ca, size_t n) { (void)ca; (void)n; }
static void a_timer(void *ca) { (void)ca; }
static void a_closed(void *ca, int err) { (void)ca; (void)err; }
static void w_wake(struct dp_worker *w) { (void)w; }

static const struct dp_app_ops app_ops = {
	.accept = a_accept, .recv = a_recv, .pull = a_pull, .sent = a_sent,
	.timer = a_timer, .closed = a_closed,
};
static const struct dp_worker_ops w_ops = { .wake = w_wake };

struct fix {
	struct dp_worker w;
	struct cap cap;
	struct dp_stack *st;
};

static struct fix *
fix_new(bool with_exception)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct dp_stack_conf c;
	memset(&c, 0, sizeof(c));
	memcpy(c.mac, OUR_MAC, 6);
	c.ipv4 = OUR_IP;
	c.netmask = 0xffffff00u;
	c.conn_max = 8;
	c.rx_buf = c.tx_buf = 4096;
	c.listen[0].port = LISTEN;
	c.nlisten = 1;
	f->w.ops = &w_ops;
	f->w.now = 1000000;
	f->st = dp_stack_new(&c, with_exception ? &io_exc : &io_none, &f->cap, &f->w, &app_ops, NULL);
	assert_non_null(f->st);
	return f;
}

static void
fix_free(struct fix *f)
{
	dp_stack_free(f->st);
	free(f);
}

static size_t
eth(uint8_t *f, const uint8_t *dmac, uint16_t type)
{
	memcpy(f, dmac, 6);
	memcpy(f + 6, PEER_MAC, 6);
	wr16(f + 12, type);
	return DP_ETH_HLEN;
}

/* IPv4 header (checksum filled) at f + 14; returns the frame length. */
static size_t
ip4(uint8_t *f, uint32_t dst, uint8_t proto, uint16_t frag, size_t l4len)
{
	eth(f, OUR_MAC, DP_ETH_IPV4);
	uint8_t *ip = f + DP_ETH_HLEN;
	memset(ip, 0, DP_IP_HLEN);
	ip[0] = 0x45;
	wr16(ip + 2, (uint16_t)(DP_IP_HLEN + l4len));
	wr16(ip + 6, frag);
	ip[8] = 64;
	ip[9] = proto;
	wr32(ip + 12, PEER_IP);
	wr32(ip + 16, dst);
	wr16(ip + 10, ref_csum(0, ip, DP_IP_HLEN));
	return DP_ETH_HLEN + DP_IP_HLEN + l4len;
}

static size_t
udp(uint8_t *f, uint32_t dst, uint16_t frag)
{
	uint8_t *u = f + DP_ETH_HLEN + DP_IP_HLEN;
	wr16(u, 40000);
	wr16(u + 2, 53);
	wr16(u + 4, 12);
	wr16(u + 6, 0);           /* no checksum (allowed over IPv4) */
	memcpy(u + 8, "ping", 4);
	return ip4(f, dst, 17, frag, 12);
}

static size_t
tcp(uint8_t *f, uint16_t dport, uint8_t flags, bool bad_csum)
{
	uint8_t *t = f + DP_ETH_HLEN + DP_IP_HLEN;
	memset(t, 0, DP_TCP_HLEN);
	wr16(t, 40001);
	wr16(t + 2, dport);
	wr32(t + 4, 1000);
	wr32(t + 8, (flags & DP_TH_ACK) ? 5000 : 0);
	t[12] = 5 << 4;
	t[13] = flags;
	wr16(t + 14, 65535);
	uint32_t ps = (PEER_IP >> 16) + (PEER_IP & 0xffff) + (OUR_IP >> 16) + (OUR_IP & 0xffff) +
	              DP_PROTO_TCP + DP_TCP_HLEN;
	wr16(t + 16, (uint16_t)(ref_csum(ps, t, DP_TCP_HLEN) ^ (bad_csum ? 1 : 0)));
	return ip4(f, OUR_IP, DP_PROTO_TCP, 0, DP_TCP_HLEN);
}

/* ICMP type/code with 8 bytes of header and `body` (n bytes). */
static size_t
icmp(uint8_t *f, uint8_t type, uint8_t code, const uint8_t *body, size_t n)
{
	uint8_t *m = f + DP_ETH_HLEN + DP_IP_HLEN;
	memset(m, 0, 8);
	m[0] = type;
	m[1] = code;
	memcpy(m + 8, body, n);
	wr16(m + 2, ref_csum(0, m, 8 + n));
	return ip4(f, OUR_IP, DP_PROTO_ICMP, 0, 8 + n);
}

static size_t
arp_request(uint8_t *f, uint32_t target)
{
	static const uint8_t bc[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	eth(f, bc, DP_ETH_ARP);
	uint8_t *a = f + DP_ETH_HLEN;
	wr16(a, 1);
	wr16(a + 2, DP_ETH_IPV4);
	a[4] = 6;
	a[5] = 4;
	wr16(a + 6, 1);
	memcpy(a + 8, PEER_MAC, 6);
	wr32(a + 14, PEER_IP);
	memset(a + 18, 0, 6);
	wr32(a + 24, target);
	memset(a + 28, 0, 18);
	return DP_ETH_HLEN + 46;
}

#define S(fx) dp_stack_stats((fx)->st)

/* Feeds one frame; returns how many times the callback ran for it, and
 * checks that it got the frame whole. */
static unsigned
feed(struct fix *fx, const uint8_t *f, size_t len)
{
	unsigned before = fx->cap.exc;
	dp_stack_input(fx->st, f, len);
	unsigned n = fx->cap.exc - before;
	if (n > 0) {
		assert_int_equal(fx->cap.exc_len, len);
		assert_memory_equal(fx->cap.exc_frame, f, len);
	}
	return n;
}

static void
test_to_exception(void **state)
{
	(void)state;
	struct fix *fx = fix_new(true);
	uint8_t f[1600];
	size_t n;

	/* UDP to our address, whole and as a fragment. */
	assert_int_equal(feed(fx, f, udp(f, OUR_IP, 0)), 1);
	assert_int_equal(feed(fx, f, udp(f, OUR_IP, 0x2000)), 1);
	/* Broadcasts (limited, subnet) too; another host's unicast not. */
	assert_int_equal(feed(fx, f, udp(f, 0xffffffffu, 0)), 1);
	assert_int_equal(feed(fx, f, udp(f, 0x0a0000ffu, 0)), 1);
	assert_int_equal(feed(fx, f, udp(f, 0x0a000009u, 0)), 0);
	assert_int_equal(S(fx)->drop_ip_dst, 1);
	assert_int_equal(S(fx)->drop_ip_proto, 0);
	assert_int_equal(S(fx)->drop_ip_frag, 0);

	/* Another EtherType (LLDP). */
	n = eth(f, OUR_MAC, 0x88cc);
	memset(f + n, 0, 46);
	assert_int_equal(feed(fx, f, n + 46), 1);
	assert_int_equal(S(fx)->drop_eth_type, 0);
	/* A frame for another MAC is not ours, nor the kernel's. */
	n = udp(f, OUR_IP, 0);
	f[5] = 9;
	assert_int_equal(feed(fx, f, n), 0);
	assert_int_equal(S(fx)->drop_eth_dst, 1);

	/* ARP: answered by the stack and handed over as well. */
	unsigned sent = fx->cap.sent;
	assert_int_equal(feed(fx, f, arp_request(f, OUR_IP)), 1);
	assert_int_equal(fx->cap.sent, sent + 1);
	assert_int_equal(S(fx)->arp_replies_out, 1);
	assert_int_equal(feed(fx, f, arp_request(f, 0x0a000009u)), 1);  /* not for us: still */

	/* ICMP: echo requests answered here; replies, time exceeded and
	 * unreachables about non-TCP datagrams or unknown TCP flows go over. */
	uint8_t body[28 + 8];
	memset(body, 0, sizeof(body));
	assert_int_equal(feed(fx, f, icmp(f, 8, 0, body, 8)), 0);
	assert_int_equal(S(fx)->icmp_echo_out, 1);
	assert_int_equal(feed(fx, f, icmp(f, 0, 0, body, 8)), 1);
	assert_int_equal(feed(fx, f, icmp(f, 11, 0, body, 8)), 1);
	uint8_t *q = body;         /* quoted: our IPv4 header + 8 bytes */
	q[0] = 0x45;
	wr16(q + 2, 40);
	q[8] = 64;
	q[9] = 17;
	wr32(q + 12, OUR_IP);
	wr32(q + 16, PEER_IP);
	wr16(q + 20, 40000);
	wr16(q + 22, 53);
	assert_int_equal(feed(fx, f, icmp(f, 3, 3, body, 28)), 1);
	q[9] = DP_PROTO_TCP;       /* a TCP flow no connection of ours has */
	assert_int_equal(feed(fx, f, icmp(f, 3, 3, body, 28)), 1);
	assert_int_equal(S(fx)->drop_icmp_type, 0);

	/* TCP to a port without listener: every kind of segment, no RST. */
	assert_int_equal(feed(fx, f, tcp(f, 8080, DP_TH_SYN, false)), 1);
	assert_int_equal(feed(fx, f, tcp(f, 8080, DP_TH_ACK, false)), 1);
	assert_int_equal(feed(fx, f, tcp(f, 8080, DP_TH_RST, false)), 1);
	assert_int_equal(feed(fx, f, tcp(f, 8080, DP_TH_SYN | DP_TH_ACK, false)), 1);
	assert_int_equal(S(fx)->tcp_rst_out, 0);
	assert_int_equal(S(fx)->drop_tcp_noport, 0);
	/* ... but not when it fails validation. */
	assert_int_equal(feed(fx, f, tcp(f, 8080, DP_TH_SYN, true)), 0);
	assert_int_equal(S(fx)->drop_tcp_csum, 1);
	/* The SMTP port stays the stack's: a SYN gets a SYN-ACK. */
	sent = fx->cap.sent;
	assert_int_equal(feed(fx, f, tcp(f, LISTEN, DP_TH_SYN, false)), 0);
	assert_int_equal(S(fx)->tcp_syn_in, 1);
	/* (the SYN-ACK waits for ARP or is sent: the peer was learnt above) */
	assert_true(fx->cap.sent > sent);

	/* IPv6 to our link-local: ND and echo stay, UDP goes over. */
	uint8_t *ip6 = f + eth(f, OUR_MAC, 0x86dd);
	memset(ip6, 0, 40 + 8);
	wr32(ip6, 0x60000000u);
	wr16(ip6 + 4, 8);
	ip6[6] = 17;
	ip6[7] = 64;
	ip6[8] = 0xfe; ip6[9] = 0x80; ip6[23] = 1;       /* fe80::1 */
	ip6[24] = 0xfe; ip6[25] = 0x80;                  /* fe80:: + EUI-64 of OUR_MAC */
	ip6[32] = OUR_MAC[0] ^ 2; ip6[33] = OUR_MAC[1]; ip6[34] = OUR_MAC[2];
	ip6[35] = 0xff; ip6[36] = 0xfe;
	ip6[37] = OUR_MAC[3]; ip6[38] = OUR_MAC[4]; ip6[39] = OUR_MAC[5];
	assert_int_equal(feed(fx, f, DP_ETH_HLEN + 48), 1);
	assert_int_equal(S(fx)->drop_ip6_proto, 0);

	assert_int_equal(S(fx)->exception_out, fx->cap.exc);
	fix_free(fx);
}

static void
test_without_callback(void **state)
{
	(void)state;
	struct fix *fx = fix_new(false);
	uint8_t f[1600];
	dp_stack_input(fx->st, f, udp(f, OUR_IP, 0));
	assert_int_equal(S(fx)->drop_ip_proto, 1);
	dp_stack_input(fx->st, f, udp(f, OUR_IP, 0x2000));
	assert_int_equal(S(fx)->drop_ip_frag, 1);
	dp_stack_input(fx->st, f, udp(f, 0xffffffffu, 0));
	assert_int_equal(S(fx)->drop_ip_dst, 1);
	size_t n = eth(f, OUR_MAC, 0x88cc);
	memset(f + n, 0, 46);
	dp_stack_input(fx->st, f, n + 46);
	assert_int_equal(S(fx)->drop_eth_type, 1);
	uint8_t body[8] = { 0 };
	dp_stack_input(fx->st, f, icmp(f, 0, 0, body, 8));
	assert_int_equal(S(fx)->drop_icmp_type, 1);
	/* A closed port is reset (RFC 9293 3.10.7.1); an RST to it dropped. */
	dp_stack_input(fx->st, f, tcp(f, 8080, DP_TH_SYN, false));
	assert_int_equal(S(fx)->drop_tcp_noport, 1);
	assert_int_equal(S(fx)->tcp_rst_out, 1);
	dp_stack_input(fx->st, f, tcp(f, 8080, DP_TH_RST, false));
	assert_int_equal(S(fx)->drop_tcp_rst, 1);
	assert_int_equal(S(fx)->tcp_rst_out, 1);
	dp_stack_input(fx->st, f, arp_request(f, OUR_IP));
	assert_int_equal(S(fx)->arp_replies_out, 1);
	assert_int_equal(S(fx)->exception_out, 0);
	assert_int_equal(fx->cap.exc, 0);
	fix_free(fx);
}

static void
test_tap_names(void **state)
{
	(void)state;
	char err[256];
	static const uint8_t mac[6] = { 2, 0, 0, 0, 0, 2 };
	const char *bad[] = { "", "a/b", "a b", "x:1", "sixteen-chars-xx" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(dp_exc_tap_open(bad[i], mac, 1500, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "not an interface name"));
	}
}

/* A real tap: created, written to, read without blocking, gone on close. */
static void
test_tap_real(void **state)
{
	(void)state;
	if (geteuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0)
		skip();
	char name[16], err[256], path[64];
	snprintf(name, sizeof(name), "slut%u", (unsigned)getpid() % 100000u);
	static const uint8_t mac[6] = { 2, 0, 0, 0x5a, 0, 7 };
	int fd = dp_exc_tap_open(name, mac, 1400, err, sizeof(err));
	if (fd == -EPERM || fd == -EACCES || fd == -ENOENT || fd == -ENODEV)
		skip();
	assert_true(fd >= 0);
	snprintf(path, sizeof(path), "/sys/class/net/%s/address", name);
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	char got[32] = "";
	assert_non_null(fgets(got, sizeof(got), fp));
	fclose(fp);
	assert_string_equal(got, "02:00:00:5a:00:07\n");
	snprintf(path, sizeof(path), "/sys/class/net/%s/mtu", name);
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_non_null(fgets(got, sizeof(got), fp));
	fclose(fp);
	assert_string_equal(got, "1400\n");
	uint8_t f[64];
	memset(f, 0, sizeof(f));
	memcpy(f, mac, 6);
	memcpy(f + 6, PEER_MAC, 6);
	wr16(f + 12, 0x88b5);      /* local experimental EtherType: the kernel drops it */
	assert_int_equal(dp_exc_tap_write(fd, f, sizeof(f)), 0);
	/* Whatever the kernel sends (IPv6 chatter) or nothing: never blocks. */
	uint8_t buf[2048];
	for (int i = 0; i < 64; i++)
		if (dp_exc_tap_read(fd, buf, sizeof(buf)) <= 0)
			break;
	assert_int_equal(dp_exc_tap_read(fd, buf, sizeof(buf)) >= 0, 1);
	close(fd);
	snprintf(path, sizeof(path), "/sys/class/net/%s", name);
	for (int i = 0; i < 100 && access(path, F_OK) == 0; i++)
		usleep(10000);
	assert_int_not_equal(access(path, F_OK), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_to_exception),
		cmocka_unit_test(test_without_callback),
		cmocka_unit_test(test_tap_names),
		cmocka_unit_test(test_tap_real),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
