/*
 * proxy.c - PROXY protocol v1/v2 header parser; the contract is in proxy.h.
 *
 * Both versions are parsed from the first byte on every call (the header is
 * at most a few hundred bytes in practice), so there is no state to carry
 * between calls: a prefix that cannot become a valid header is refused as
 * soon as the offending byte is seen.
 */
#include "smtp/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

enum { V2_CMD_LOCAL = 0x0, V2_CMD_PROXY = 0x1 };
enum { V2_FAM_UNSPEC = 0x0, V2_FAM_INET = 0x1, V2_FAM_INET6 = 0x2, V2_FAM_UNIX = 0x3 };
enum { V2_TR_UNSPEC = 0x0, V2_TR_STREAM = 0x1, V2_TR_DGRAM = 0x2 };

/* Longest textual address inet_pton() takes for each family (without NUL). */
#define V1_ADDR4_MAX 15
#define V1_ADDR6_MAX 45

/* v1 cursor: the bytes seen so far, capped at the protocol's 107. */
struct v1_cur {
	const uint8_t *p;
	size_t n;          /* min(available, SMTP_PROXY_V1_MAX) */
	bool capped;       /* available >= SMTP_PROXY_V1_MAX */
	size_t i;
};

/* Running out of bytes is "need more" unless the 107-byte cap was hit. */
static ssize_t v1_short(const struct v1_cur *c)
{
	return c->capped ? -EINVAL : 0;
}

/* Match a literal; 1 matched, 0 need more (see v1_short), -1 mismatch. */
static int v1_lit(struct v1_cur *c, const char *lit)
{
	for (; *lit; lit++, c->i++) {
		if (c->i >= c->n)
			return 0;
		if (c->p[c->i] != (uint8_t)*lit)
			return -1;
	}
	return 1;
}

/*
 * An address field ending with a space. 1: done, *ss filled; 0: need more;
 * -1: invalid.
 */
static int v1_addr(struct v1_cur *c, int af, struct sockaddr_storage *ss)
{
	char buf[V1_ADDR6_MAX + 1];
	size_t max = af == AF_INET ? V1_ADDR4_MAX : V1_ADDR6_MAX;
	size_t len = 0;

	for (;;) {
		if (c->i >= c->n)
			return 0;
		uint8_t ch = c->p[c->i];
		if (ch == ' ')
			break;
		bool ok = (ch >= '0' && ch <= '9') || ch == '.';
		if (af == AF_INET6)
			ok = ok || ch == ':' || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
		if (!ok || len == max)
			return -1;
		buf[len++] = (char)ch;
		c->i++;
	}
	if (len == 0)
		return -1;
	buf[len] = '\0';
	c->i++; /* the space */
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		sin->sin_family = AF_INET;
		if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1)
			return -1;
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		sin6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
			return -1;
	}
	return 1;
}

/*
 * A port: decimal 0..65535, no leading zero, then the byte term.
 * 1: done (term consumed); 0: need more; -1: invalid.
 */
static int v1_port(struct v1_cur *c, uint8_t term, uint16_t *port)
{
	uint32_t v = 0;
	size_t len = 0;

	for (;;) {
		if (c->i >= c->n)
			return 0;
		uint8_t ch = c->p[c->i];
		if (ch == term)
			break;
		if (ch < '0' || ch > '9')
			return -1;
		if (len == 1 && v == 0)
			return -1; /* leading zero */
		v = v * 10 + (uint32_t)(ch - '0');
		if (v > 65535)
			return -1;
		len++;
		c->i++;
	}
	if (len == 0)
		return -1;
	c->i++;
	*port = (uint16_t)v;
	return 1;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* Map a helper's 1/0/-1 onto the caller's flow. */
#define V1_STEP(c, expr) do { \
	int r_ = (expr); \
	if (r_ < 0) \
		return -EINVAL; \
	if (r_ == 0) \
		return v1_short(c); \
} while (0)

static ssize_t parse_v1(const uint8_t *p, size_t n, struct smtp_proxy_hdr *out)
{
	struct v1_cur c = {
		.p = p,
		.n = n < SMTP_PROXY_V1_MAX ? n : SMTP_PROXY_V1_MAX,
		.capped = n >= SMTP_PROXY_V1_MAX,
	};
	struct smtp_proxy_hdr h;
	uint16_t sport, dport;
	int af;

	memset(&h, 0, sizeof(h));
	h.version = 1;
	V1_STEP(&c, v1_lit(&c, "PROXY "));

	/* The protocol token: TCP4, TCP6 or UNKNOWN. */
	if (c.i >= c.n)
		return v1_short(&c);
	if (p[c.i] == 'U') {
		V1_STEP(&c, v1_lit(&c, "UNKNOWN"));
		if (c.i >= c.n)
			return v1_short(&c);
		if (p[c.i] == ' ') {
			/* Anything up to CRLF is to be ignored; a lone CR or LF is not. */
			for (c.i++; ; c.i++) {
				if (c.i >= c.n)
					return v1_short(&c);
				if (p[c.i] == '\n')
					return -EINVAL;
				if (p[c.i] == '\r')
					break;
			}
		} else if (p[c.i] != '\r') {
			return -EINVAL;
		}
		V1_STEP(&c, v1_lit(&c, "\r\n"));
		h.local = true;
		*out = h;
		return (ssize_t)c.i;
	}
	V1_STEP(&c, v1_lit(&c, "TCP"));
	if (c.i >= c.n)
		return v1_short(&c);
	if (p[c.i] == '4')
		af = AF_INET;
	else if (p[c.i] == '6')
		af = AF_INET6;
	else
		return -EINVAL;
	c.i++;
	V1_STEP(&c, v1_lit(&c, " "));
	V1_STEP(&c, v1_addr(&c, af, &h.src));
	V1_STEP(&c, v1_addr(&c, af, &h.dst));
	V1_STEP(&c, v1_port(&c, ' ', &sport));
	V1_STEP(&c, v1_port(&c, '\r', &dport));
	V1_STEP(&c, v1_lit(&c, "\n"));
	set_port(&h.src, sport);
	set_port(&h.dst, dport);
	*out = h;
	return (ssize_t)c.i;
}

static ssize_t parse_v2(const uint8_t *p, size_t n, struct smtp_proxy_hdr *out)
{
	struct smtp_proxy_hdr h;
	size_t need = 0;

	for (size_t i = 0; i < sizeof(v2_sig); i++) {
		if (i >= n)
			return 0;
		if (p[i] != v2_sig[i])
			return -EINVAL;
	}
	if (n < 13)
		return 0;
	unsigned ver = p[12] >> 4, cmd = p[12] & 0xf;
	if (ver != 2 || (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY))
		return -EINVAL;
	if (n < 14)
		return 0;
	unsigned fam = p[13] >> 4, tr = p[13] & 0xf;
	if (fam > V2_FAM_UNIX || tr > V2_TR_DGRAM)
		return -EINVAL;
	if (cmd == V2_CMD_PROXY) {
		switch (fam) {
		case V2_FAM_INET:
			need = 12;
			break;
		case V2_FAM_INET6:
			need = 36;
			break;
		case V2_FAM_UNIX:
			need = 216;
			break;
		default:
			return -EINVAL; /* PROXY over UNSPEC: no addresses to use */
		}
		/* SMTP runs over a stream; UNIX addresses are dropped anyway. */
		if (fam != V2_FAM_UNIX && tr != V2_TR_STREAM)
			return -EINVAL;
		if (fam == V2_FAM_UNIX && tr == V2_TR_UNSPEC)
			return -EINVAL;
	}
	if (n < 16)
		return 0;
	size_t len = (size_t)p[14] << 8 | p[15];
	if (len < need)
		return -EINVAL;
	if (n < 16 + len)
		return 0;

	memset(&h, 0, sizeof(h));
	h.version = 2;
	const uint8_t *a = p + 16;
	if (cmd == V2_CMD_LOCAL || fam == V2_FAM_UNIX) {
		h.local = true;
	} else if (fam == V2_FAM_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&h.src;
		struct sockaddr_in *d = (struct sockaddr_in *)&h.dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);  /* already network order */
		memcpy(&d->sin_port, a + 10, 2);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&h.src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&h.dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
	}
	*out = h;
	return (ssize_t)(16 + len);
}

ssize_t smtp_proxy_parse(const uint8_t *p, size_t n, struct smtp_proxy_hdr *out)
{
	if (n == 0)
		return 0;
	if (p[0] == 'P')
		return parse_v1(p, n, out);
	if (p[0] == v2_sig[0])
		return parse_v2(p, n, out);
	return -EINVAL;
}
