/*
 * log.h - structured log lines.
 *
 * Contract
 *   One event, one line: "TIMESTAMP sluiced[PID]: level=LEVEL key=value ...".
 *   Values with spaces, quotes or control characters are written quoted with
 *   ctl_log_value(). Each line leaves in a single write(2) on an O_APPEND
 *   descriptor, so lines from different threads never interleave. Callable
 *   from any thread after ctl_log_open(); before it, lines go to stderr.
 *   A line is cut at CTL_LOG_LINE_MAX bytes.
 */
#ifndef CTL_LOG_H
#define CTL_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "control/config.h"

#define CTL_LOG_LINE_MAX 4096

/* path NULL or "": stderr. 0 or -errno. */
int ctl_log_open(const char *path, enum ctl_log_level level);
void ctl_log_close(void);
int ctl_log_enabled(enum ctl_log_level level);
void ctl_log(enum ctl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Write s into dst (cap bytes) as a log value: bare if it is safe, else
 * double-quoted with \" \\ and \xNN escapes. Returns dst. */
char *ctl_log_value(char *dst, size_t cap, const char *s);

/* CLOCK_MONOTONIC in milliseconds: the deadlines and expiries of the
 * control threads (log lines carry wall-clock time). */
uint64_t ctl_mono_ms(void);

#endif
