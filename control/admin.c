/*
 * admin.c - the admin socket and the metrics endpoint; see admin.h.
 */
#include "control/admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "control/log.h"

#define ADMIN_LINE_MAX 512
#define ADMIN_READ_MS 5000

struct ctl_admin {
	struct ctl_admin_conf conf;
	char *path;
	int lfd;
	int stop_pipe[2];
	pthread_t th;
	bool th_started;
	struct MHD_Daemon *mhd;
};


/* Writes all of buf; false when the client went away. */
static bool
write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		buf += w;
		n -= (size_t)w;
	}
	return true;
}

/* One line from fd within ADMIN_READ_MS, without its LF (and CR). */
static bool
read_line(int fd, char *line, size_t cap)
{
	size_t n = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, ADMIN_READ_MS) <= 0)
			return false;
		ssize_t r = recv(fd, line + n, cap - 1 - n, 0);
		if (r <= 0)
			return false;
		n += (size_t)r;
		char *lf = memchr(line, '\n', n);
		if (lf != NULL) {
			*lf = '\0';
			if (lf > line && lf[-1] == '\r')
				lf[-1] = '\0';
			return true;
		}
		if (n == cap - 1)
			return false;  /* too long */
	}
}

static void
serve(struct ctl_admin *a, int fd)
{
	char line[ADMIN_LINE_MAX + 2];
	if (!read_line(fd, line, sizeof(line))) {
		static const char msg[] = "error: expected one command line (at most 512 bytes) "
		                          "within 5 s\n";
		write_all(fd, msg, sizeof(msg) - 1);
		return;
	}
	char *body = NULL;
	size_t blen = 0;
	FILE *out = open_memstream(&body, &blen);
	if (out == NULL) {
		static const char msg[] = "error: out of memory\n";
		write_all(fd, msg, sizeof(msg) - 1);
		return;
	}
	char err[256] = "";
	int rc = a->conf.command(a->conf.ctx, line, out, err, sizeof(err));
	if (rc == 0)
		fputs("ok\n", out);
	else
		fprintf(out, "error: %s\n", err[0] ? err : "failed");
	fclose(out);
	write_all(fd, body, blen);
	free(body);
	ctl_log(CTL_LOG_DEBUG, "event=admin command=\"%.64s\" result=%s", line, rc == 0 ? "ok" : "error");
}

static void *
admin_main(void *arg)
{
	struct ctl_admin *a = arg;
	for (;;) {
		struct pollfd p[2] = { { .fd = a->lfd, .events = POLLIN },
		                       { .fd = a->stop_pipe[0], .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve(a, fd);
		close(fd);
	}
	return NULL;
}

static enum MHD_Result
on_http(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
        const char *version, const char *upload_data, size_t *upload_size, void **req_cls)
{
	struct ctl_admin *a = cls;
	(void)version;
	(void)upload_data;
	(void)upload_size;
	(void)req_cls;
	struct MHD_Response *resp;
	unsigned status;
	char *body = NULL;
	size_t blen = 0;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static const char msg[] = "only GET /metrics\n";
		resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics") != 0) {
		static const char msg[] = "not found: the metrics are at /metrics\n";
		resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
		status = MHD_HTTP_NOT_FOUND;
	} else {
		FILE *out = open_memstream(&body, &blen);
		if (out == NULL)
			return MHD_NO;
		a->conf.metrics(a->conf.ctx, out);
		fclose(out);
		resp = MHD_create_response_from_buffer(blen, body, MHD_RESPMEM_MUST_FREE);
		status = MHD_HTTP_OK;
		if (resp == NULL)
			free(body);
		else
			MHD_add_response_header(resp, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	}
	if (resp == NULL)
		return MHD_NO;
	enum MHD_Result r = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return r;
}

struct ctl_admin *
ctl_admin_start(const struct ctl_admin_conf *conf, char *err, size_t errlen)
{
	struct ctl_admin *a = calloc(1, sizeof(*a));
	if (a == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->conf = *conf;
	a->lfd = -1;
	a->stop_pipe[0] = a->stop_pipe[1] = -1;
	if (conf->socket_path != NULL) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		if (strlen(conf->socket_path) >= sizeof(sun.sun_path)) {
			snprintf(err, errlen, "admin.socket: '%s' is longer than the %zu bytes a unix socket "
			         "path may have; set admin.socket to a shorter path",
			         conf->socket_path, sizeof(sun.sun_path) - 1);
			goto fail;
		}
		strcpy(sun.sun_path, conf->socket_path);
		a->path = strdup(conf->socket_path);
		a->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (a->path == NULL || a->lfd < 0 || pipe2(a->stop_pipe, O_CLOEXEC) < 0) {
			snprintf(err, errlen, "admin.socket: %s", strerror(errno));
			goto fail;
		}
		/* a socket left by a sluiced that died: the spool's lock says
		 * none runs on this spool now */
		unlink(conf->socket_path);
		mode_t old = umask(077);
		int b = bind(a->lfd, (struct sockaddr *)&sun, sizeof(sun));
		umask(old);
		if (b < 0 || listen(a->lfd, 16) < 0) {
			snprintf(err, errlen, "admin.socket: %s: %s", conf->socket_path, strerror(errno));
			goto fail;
		}
		int rc = pthread_create(&a->th, NULL, admin_main, a);
		if (rc != 0) {
			snprintf(err, errlen, "admin: thread: %s", strerror(rc));
			goto fail;
		}
		a->th_started = true;
		pthread_setname_np(a->th, "sluice-admin");
	}
	if (conf->http != NULL) {
		unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
		if (conf->http->sa_family == AF_INET6)
			flags |= MHD_USE_IPv6;
		uint16_t port = ntohs(((const struct sockaddr_in *)(const void *)conf->http)->sin_port);
		a->mhd = MHD_start_daemon(flags, port, NULL, NULL, on_http, a,
		                          MHD_OPTION_SOCK_ADDR, conf->http,
		                          MHD_OPTION_CONNECTION_LIMIT, 16u,
		                          MHD_OPTION_CONNECTION_TIMEOUT, 10u,
		                          MHD_OPTION_END);
		if (a->mhd == NULL) {
			snprintf(err, errlen, "admin.http: cannot listen (address in use, or not this "
			         "host's?)");
			goto fail;
		}
	}
	return a;
fail:
	ctl_admin_stop(a);
	return NULL;
}

struct ctl_admin *
ctl_admin_stop(struct ctl_admin *a)
{
	if (a == NULL)
		return NULL;
	if (a->mhd != NULL)
		MHD_stop_daemon(a->mhd);
	if (a->th_started) {
		ssize_t w = write(a->stop_pipe[1], "x", 1);
		(void)w;
		pthread_join(a->th, NULL);
	}
	if (a->lfd >= 0) {
		close(a->lfd);
		if (a->path != NULL)
			unlink(a->path);
	}
	if (a->stop_pipe[0] >= 0) {
		close(a->stop_pipe[0]);
		close(a->stop_pipe[1]);
	}
	free(a->path);
	free(a);
	return NULL;
}
