/* log.c - structured log lines; see log.h. */
#include "control/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Set once at start-up (before worker threads exist), read by all. */
static int log_fd = STDERR_FILENO;
static _Atomic int log_level = CTL_LOG_INFO;

static const char *const level_name[] = {
	[CTL_LOG_ERR] = "error", [CTL_LOG_WARN] = "warn",
	[CTL_LOG_INFO] = "info", [CTL_LOG_DEBUG] = "debug",
};

int
ctl_log_open(const char *path, enum ctl_log_level level)
{
	atomic_store(&log_level, level);
	if (path == NULL || path[0] == '\0')
		return 0;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -errno;
	log_fd = fd;
	return 0;
}

void
ctl_log_close(void)
{
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
}

int
ctl_log_enabled(enum ctl_log_level level)
{
	return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void
ctl_log(enum ctl_log_level level, const char *fmt, ...)
{
	if (!ctl_log_enabled(level))
		return;
	char line[CTL_LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line),
	                 "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ sluiced[%d]: level=%s ",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid(),
	                 level_name[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	/* A short write to a log is not worth retrying on a worker. */
	ssize_t w = write(log_fd, line, len);
	(void)w;
}

char *
ctl_log_value(char *dst, size_t cap, const char *s)
{
	if (cap == 0)
		return dst;
	if (s == NULL)
		s = "";
	int bare = s[0] != '\0';
	for (const char *p = s; *p && bare; p++)
		if (*p <= ' ' || *p == '"' || *p == '\\' || *p == '=' || (unsigned char)*p == 0x7f)
			bare = 0;
	if (bare) {
		snprintf(dst, cap, "%s", s);
		return dst;
	}
	size_t o = 0;
	dst[o++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && o + 6 < cap; p++) {
		if (*p == '"' || *p == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)*p;
		} else if (*p < ' ' || *p == 0x7f) {
			o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *p);
		} else {
			dst[o++] = (char)*p;
		}
	}
	if (o + 1 < cap)
		dst[o++] = '"';
	dst[o < cap ? o : cap - 1] = '\0';
	return dst;
}

uint64_t
ctl_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
