/*
 * strbuf.h - a growing string for rule compilation (control plane only).
 *
 * Contract
 *   Zero-initialise, append with scan_sb_put/scan_sb_puts, read p (always
 *   NUL-terminated once anything was appended), free(p) when done. Running
 *   out of memory sets oom and makes further appends no-ops, so callers check
 *   once at the end. Never used on a worker's scan path.
 */
#ifndef SCAN_STRBUF_H
#define SCAN_STRBUF_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct scan_sb {
	char *p;
	size_t n, cap;
	bool oom;
};

static inline void
scan_sb_put(struct scan_sb *b, const void *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t c = (b->n + n + 1) * 2;
		char *q = realloc(b->p, c);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = c;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
}

static inline void
scan_sb_puts(struct scan_sb *b, const char *s)
{
	scan_sb_put(b, s, strlen(s));
}

#endif
