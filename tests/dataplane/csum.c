/* Tests for dp_csum_add() (dataplane/eth.c): the word-at-a-time sum
 * against a plain 16-bit one (RFC 1071) on random buffers, lengths,
 * alignments and chained calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dataplane/stack_impl.h"
#include "tests/dataplane/ref_csum.h"

static void
test_random_buffers(void **state)
{
	static uint8_t buf[9100];
	srand(1);
	for (int round = 0; round < 20000; round++) {
		size_t off = (size_t)(rand() % 16);
		size_t n = round < 64 ? (size_t)round : (size_t)(rand() % (int)(sizeof(buf) - 16));
		int fill = rand() % 4;  /* all 0xff stresses the carries */
		for (size_t i = 0; i < n; i++)
			buf[off + i] = fill == 0 ? 0xff : fill == 1 ? 0 : (uint8_t)rand();
		uint32_t start = round % 3 == 0 ? 0 : (uint32_t)rand() * 2654435761u;
		uint16_t got = dp_csum_fold(dp_csum_add(start, buf + off, n));
		uint16_t want = ref_csum(start, buf + off, n);
		if (got != want)
			fail_msg("round %d len %zu off %zu: got %04x, want %04x", round, n, off, got, want);
	}
}

/* Callers chain sums (pseudo-header, then segment); even-length pieces
 * must add up to the sum of the whole. */
static void
test_chained(void **state)
{
	static uint8_t buf[4000];
	srand(2);
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)(rand() % (int)sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		size_t cut = n ? ((size_t)rand() % n) & ~(size_t)1 : 0;
		uint32_t s = dp_csum_add(0, buf, cut);
		uint16_t got = dp_csum_fold(dp_csum_add(s, buf + cut, n - cut));
		uint16_t want = ref_csum(0, buf, n);
		if (got != want)
			fail_msg("len %zu cut %zu: got %04x, want %04x", n, cut, got, want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_buffers),
		cmocka_unit_test(test_chained),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
