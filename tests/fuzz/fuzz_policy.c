/*
 * fuzz_policy.c - libFuzzer target for the policy checks that read what a
 * client sends: the MAIL FROM and RCPT TO addresses against the access
 * lists and recipients.domains (ctl_access_match, ctl_domain_listed), and
 * the greylist's triplet key (ctl_greylist_req_init, ctl_greylist_key).
 *
 * Input: the sender, a NUL, the recipient, a NUL, then list entries
 * separated by blanks (the first 16 bytes also serve as the client's
 * address). Checks the contracts, not just the absence of crashes:
 *   - matching ignores case: the same answer for the address in upper
 *     case;
 *   - the key: 0 only with all of it in the buffer, -1 only when it does
 *     not fit (then a larger buffer takes it); it starts with the prefix;
 *     a sender in other case, or with a BATV tag, gives the same key.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "control/greylist.h"
#include "control/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELD 300
#define ENTRIES 16

static size_t
take(const uint8_t *d, size_t n, size_t *off, char *out)
{
	size_t k = 0;
	while (*off < n && d[*off] != '\0' && k < FIELD - 1)
		out[k++] = (char)d[(*off)++];
	if (*off < n)
		(*off)++;  /* the NUL */
	out[k] = '\0';
	return k;
}

static void
upper(char *d, const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		d[i] = (char)((s[i] >= 'a' && s[i] <= 'z') ? s[i] - 'a' + 'A' : s[i]);
	d[i] = '\0';
}

static void
lower(char *d, const char *s)
{
	size_t i = 0;
	for (; s[i]; i++)
		d[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
	d[i] = '\0';
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char sender[FIELD], rcpt[FIELD], up[FIELD], rest[FIELD * 2];
	size_t off = 0;
	take(data, size, &off, sender);
	take(data, size, &off, rcpt);
	size_t rl = 0;
	while (off < size && rl < sizeof(rest) - 1) {
		char c = (char)data[off++];
		rest[rl++] = c == '\0' ? ' ' : c;
	}
	rest[rl] = '\0';

	/* list entries, lower case as the configuration keeps them */
	char store[FIELD * 2];
	char *list[ENTRIES];
	unsigned n = 0;
	lower(store, rest);
	for (char *p = strtok(store, " \t,"); p != NULL && n < ENTRIES; p = strtok(NULL, " \t,"))
		list[n++] = p;

	bool m1 = ctl_access_match(list, n, sender);
	upper(up, sender);
	if (ctl_access_match(list, n, up) != m1)
		__builtin_trap();
	bool d1 = ctl_domain_listed((const char *const *)list, n, rcpt);
	upper(up, rcpt);
	if (ctl_domain_listed((const char *const *)list, n, up) != d1)
		__builtin_trap();

	/* the greylist's key */
	uint8_t addr[16] = { 0 };
	memcpy(addr, data, size < 16 ? size : 16);
	struct ctl_greylist_conf conf = {
		.prefix = "gl:",
		.ipv4_prefix = 8 + (size ? data[0] % 25 : 16),
		.ipv6_prefix = 16 + (size > 1 ? data[1] % 113 : 48),
	};
	struct ctl_gl_req q, q2;
	ctl_greylist_req_init(&q, addr, sender, rcpt);
	char big[2048], small[64];
	if (ctl_greylist_key(&conf, &q, big, sizeof(big)) != 0)
		__builtin_trap();  /* two 256-byte mailboxes always fit in 2 KB */
	size_t bl = strlen(big);
	if (strncmp(big, "gl:", 3) != 0)
		__builtin_trap();
	int r = ctl_greylist_key(&conf, &q, small, sizeof(small));
	if ((r == 0) != (bl < sizeof(small)) || (r == 0 && strcmp(small, big) != 0))
		__builtin_trap();
	/* the same triplet from the sender in upper case, or BATV-tagged */
	upper(up, sender);
	ctl_greylist_req_init(&q2, addr, up, rcpt);
	if (ctl_greylist_key(&conf, &q2, small, sizeof(small)) == 0 && strcmp(small, big) != 0)
		__builtin_trap();
	if (strchr(sender, '@') != NULL && strchr(sender, '=') == NULL && strlen(sender) < 200 &&
	    strncasecmp(sender, "prvs=", 5) != 0) {
		char tagged[FIELD + 16];
		strcpy(tagged, "prvs=0123abcd=");
		strcat(tagged, sender);
		ctl_greylist_req_init(&q2, addr, tagged, rcpt);
		char k2[2048];
		if (ctl_greylist_key(&conf, &q2, k2, sizeof(k2)) != 0 || strcmp(k2, big) != 0)
			__builtin_trap();
	}
	return 0;
}
