/*
 * admin.h - the admin socket (sluicectl) and the Prometheus metrics
 * endpoint (GET /metrics over HTTP on admin.http).
 *
 * Contract
 *   The admin socket is a unix stream socket. A client sends one command
 *   line ("status", "stats", "reload", "queue"; at most 512 bytes, LF
 *   ended) and reads the answer until the server closes: text lines, the
 *   last one "ok" or "error: REASON". One client at a time; a client that
 *   sends no full line within 5 s is dropped. The socket is mode 0600: who
 *   may talk to it is who may read the spool.
 *
 *   The HTTP endpoint (libmicrohttpd, its own thread) answers GET /metrics
 *   with the Prometheus text format (version 0.0.4) and 404 elsewhere.
 *
 *   Both run on control-plane threads and may block; the callbacks are
 *   called on those threads and must be thread-safe. Stop the admin before
 *   whatever its callbacks read.
 */
#ifndef CTL_ADMIN_H
#define CTL_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

struct ctl_admin_conf {
	const char *socket_path;       /* NULL: no admin socket */
	const struct sockaddr *http;   /* NULL: no metrics endpoint */
	socklen_t http_len;
	/* A command line (no LF) to out; 0 (ok) or -1 with the reason in err. */
	int (*command)(void *ctx, const char *line, FILE *out, char *err, size_t errlen);
	/* The metrics in Prometheus text format. */
	void (*metrics)(void *ctx, FILE *out);
	void *ctx;
};

struct ctl_admin;

struct ctl_admin *ctl_admin_start(const struct ctl_admin_conf *conf, char *err, size_t errlen);
struct ctl_admin *ctl_admin_stop(struct ctl_admin *a);

#endif
