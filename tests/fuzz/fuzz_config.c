/*
 * fuzz_config.c - libFuzzer target for the configuration loader
 * (ctl_config_load_buffer(), control/config.h).
 *
 * Beyond "no crash, no leak": a failed load leaves nothing owned and an
 * error that starts with the file name; a successful one respects the
 * schema's bounds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_config c;
	char err[512];
	int r = ctl_config_load_buffer("fuzz.yaml", data, size, &c, err, sizeof(err));

	if (r < 0) {
		if ((r != -EINVAL && r != -ENOMEM) || strncmp(err, "fuzz.yaml:", 10) != 0)
			abort();
		if (c.path || c.hostname || c.banner)
			abort();
		return 0;
	}
	if (r != 0 || c.nlisten < 1 || c.nlisten > CTL_LISTEN_MAX || c.workers < 1 ||
	    c.workers > 64 || c.cmd_line_max < 512 || c.rcpt_max < 1 || !c.spool_dir ||
	    (!c.tls_cert != !c.tls_key) || c.retry_max_ms < c.retry_min_ms)
		abort();
	for (unsigned i = 0; i < c.nlisten; i++)
		if (!c.listen[i].text || c.listen[i].addrlen == 0)
			abort();
	ctl_config_free(&c);
	return 0;
}
