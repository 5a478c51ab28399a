/*
 * ref_csum.h - the tests' own Internet checksum (RFC 1071), written the
 * plain way so that it checks dataplane/csum rather than repeating it:
 * the one's-complement sum of 16-bit big-endian words of p, a trailing odd
 * byte padded with zero, added to start (a pseudo-header sum), folded and
 * inverted.
 */
#ifndef TESTS_DATAPLANE_REF_CSUM_H
#define TESTS_DATAPLANE_REF_CSUM_H

#include <stddef.h>
#include <stdint.h>

static inline uint16_t
ref_csum(uint32_t start, const uint8_t *p, size_t n)
{
	uint64_t s = start;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

#endif
