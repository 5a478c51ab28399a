/*
 * fuzz_control.c - libFuzzer target for the control plane's parsers of
 * bytes it does not write itself: LMTP replies from a backend
 * (ctl_lmtp_rp_feed), spool records and envelopes read back from disk
 * after a crash (ctl_rec_check, ctl_env_decode), and LMTP targets and
 * routes from the configuration (ctl_lmtp_target_parse,
 * ctl_lmtp_route_match).
 *
 * The first byte picks the parser; the rest is its input. Checks the
 * contracts, not just the absence of crashes:
 *   - replies: the same replies whether the bytes come at once or in
 *     pieces; each a code 200..599, an enhanced status of its class or
 *     none, text within its buffer; every byte consumed is accounted for;
 *     the one-line form has no control bytes and no trailing blank;
 *   - envelopes: what decodes encodes back to the same bytes;
 *   - records: an accepted record lies within the input, its parts add
 *     up; with the CRC fixed up by the harness (bit 0x80 of the first
 *     byte) the check passes exactly when the header is sane.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/lmtp.h"
#include "control/queue_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLIES_MAX 64

static void check_reply(const struct ctl_lmtp_reply *r)
{
	char line[sizeof r->text + 32];
	size_t sl = strnlen(r->status, sizeof r->status);

	if (r->code < 200 || r->code > 599)
		abort();
	if (sl >= sizeof r->status || strnlen(r->text, sizeof r->text) >= sizeof r->text)
		abort();
	if (sl > 0 && (sl < 5 || r->status[0] != '0' + r->code / 100 || r->status[1] != '.'))
		abort();
	ctl_lmtp_reply_line(r, line, sizeof line);
	size_t n = strlen(line);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f)
			abort();
	if (n > 0 && line[n - 1] == ' ')
		abort();
}

/* Feeds b in pieces of the given sizes (cycled; 0: all at once). The
 * replies into out; the count, or -1 at a protocol error. */
static int feed(const uint8_t *b, size_t n, const uint8_t *cuts, size_t ncuts,
                struct ctl_lmtp_reply *out, size_t *at_error)
{
	struct ctl_lmtp_rp p;
	size_t off = 0, k = 0;
	int nr = 0;

	ctl_lmtp_rp_init(&p);
	while (off < n) {
		size_t piece = n - off;
		if (ncuts > 0) {
			size_t c = (size_t)cuts[k++ % ncuts] % 17 + 1;
			piece = c < piece ? c : piece;
		}
		const char *q = (const char *)b + off;
		size_t left = piece;
		while (left > 0) {
			size_t used = 0;
			int r = ctl_lmtp_rp_feed(&p, q, left, &used, &out[nr < REPLIES_MAX ? nr : 0]);
			if (used > left || (r == 0 && used != left))
				abort();
			if (r < 0) {
				*at_error = (size_t)(q - (const char *)b) + used;
				return -1;
			}
			if (r == 1) {
				if (used == 0)
					abort();        /* a reply ends at a line feed it took */
				check_reply(&out[nr < REPLIES_MAX ? nr : 0]);
				if (nr < REPLIES_MAX)
					nr++;
			}
			q += used;
			left -= used;
		}
		off += piece;
	}
	*at_error = 0;
	return nr;
}

static void fuzz_replies(const uint8_t *b, size_t n)
{
	static struct ctl_lmtp_reply whole[REPLIES_MAX], cut[REPLIES_MAX];
	size_t ew = 0, ec = 0;
	/* the pieces' sizes come from the input's first bytes */
	int a = feed(b, n, NULL, 0, whole, &ew);
	int c = feed(b, n, b, n < 8 ? n : 8, cut, &ec);

	if (a != c || ew != ec)
		abort();
	for (int i = 0; i < a; i++)
		if (whole[i].code != cut[i].code || strcmp(whole[i].status, cut[i].status) ||
		    strcmp(whole[i].text, cut[i].text))
			abort();
}

static void fuzz_envelope(const uint8_t *b, size_t n)
{
	struct ctl_env_dec d;

	if (ctl_env_decode(b, n, &d) != 0)
		return;
	uint8_t *again = malloc(n + 1);
	if (again == NULL)
		abort();
	size_t m = ctl_env_encode(&d.env, again, n + 1);
	if (m != n || memcmp(again, b, n) != 0)
		abort();
	free(again);
	ctl_env_dec_free(&d);
}

static void fuzz_record(const uint8_t *b, size_t n, int fix_crc)
{
	uint8_t *p = malloc(n + 1);
	const uint8_t *env = NULL, *msg = NULL;
	uint32_t envlen = 0, crc = 0;
	uint64_t msglen = 0;

	if (p == NULL)
		abort();
	memcpy(p, b, n);
	bool sane = false;
	if (fix_crc && n >= CTL_REC_HDR_LEN) {
		/* a record as the writer makes it, whatever its length says */
		uint64_t len = ctl_get_le64(p + 8);
		uint32_t el = ctl_get_le32(p + 16);
		sane = ctl_get_le32(p) == CTL_REC_MAGIC && ctl_get_le32(p + 4) == 0 && len <= n &&
		       len >= (uint64_t)CTL_REC_HDR_LEN + el;
		if (sane) {
			uint32_t c = ctl_crc32c(0, p, 20);
			c = ctl_crc32c(c, p + CTL_REC_HDR_LEN, (size_t)(len - CTL_REC_HDR_LEN));
			ctl_put_le32(p + 20, c);
		}
	}
	uint64_t len = ctl_rec_check(p, n, &env, &envlen, &msg, &msglen, &crc);
	if (fix_crc && (len != 0) != sane)
		abort();
	if (len != 0) {
		if (len > n || len < CTL_REC_HDR_LEN || env != p + CTL_REC_HDR_LEN ||
		    msg != env + envlen || (uint64_t)CTL_REC_HDR_LEN + envlen + msglen != len)
			abort();
		fuzz_envelope(env, envlen);
	}
	free(p);
}

static void fuzz_target(const uint8_t *b, size_t n)
{
	char *s = malloc(n + 1);
	struct ctl_lmtp_target t;

	if (s == NULL)
		abort();
	memcpy(s, b, n);
	s[n] = '\0';
	if (ctl_lmtp_target_parse(s, &t) == 0) {
		if (t.addrlen == 0 || t.addrlen > sizeof t.addr ||
		    strnlen(t.text, sizeof t.text) >= sizeof t.text)
			abort();
	}
	/* the text as a recipient against a few routes, and its lines as routes */
	const char *routes[] = {"example.org", ".example.net", "", "."};
	int r = ctl_lmtp_route_match(routes, 4, s);
	if (r < -1 || r > 3)
		abort();
	const char *self[1] = {s};
	r = ctl_lmtp_route_match(self, 1, "user@example.org");
	if (r < -1 || r > 0)
		abort();
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const uint8_t *b = data + 1;
	size_t n = size - 1;

	switch (data[0] & 3) {
	case 0:
		fuzz_replies(b, n);
		break;
	case 1:
		fuzz_envelope(b, n);
		break;
	case 2:
		fuzz_record(b, n, data[0] & 0x80);
		break;
	default:
		fuzz_target(b, n);
		break;
	}
	return 0;
}
