/*
 * fuzz_proxy.c - libFuzzer target for smtp_proxy_parse() (smtp/proxy.h).
 *
 * Checks the contract, not just the absence of crashes: the result is 0,
 * -EINVAL or a length within the input; every proper prefix of an accepted
 * header gives 0; an accepted header parses the same with bytes appended.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_proxy_hdr h, h2;
	ssize_t r = smtp_proxy_parse(data, size, &h);

	if (r != 0 && r != -EINVAL && (r < 0 || (size_t)r > size))
		abort();
	if (r == 0 && size >= SMTP_PROXY_MAX)
		abort(); /* a full buffer must be decided */
	if (r <= 0)
		return 0;
	if (h.version != 1 && h.version != 2)
		abort();
	for (size_t n = 0; n < (size_t)r; n++)
		if (smtp_proxy_parse(data, n, &h2) != 0)
			abort();
	if (smtp_proxy_parse(data, size, &h2) != r || memcmp(&h, &h2, sizeof(h)) != 0)
		abort();
	return 0;
}
