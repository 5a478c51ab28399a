/*
 * sluicectl - talks to a running sluiced over its admin socket
 * (control/admin.h).
 *
 *   sluicectl -c FILE COMMAND      the socket from FILE (admin.socket, else
 *                                  SPOOL/admin.sock)
 *   sluicectl -s SOCKET COMMAND    that socket
 *
 * Commands: status, stats, reload, queue, tarpit, greylist, help. Prints the answer; exits 0
 * when it ends with "ok", 1 on "error: ...", 2 when sluiced cannot be
 * reached or the arguments are wrong.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control/config.h"

static void
usage(FILE *f)
{
	fprintf(f, "usage: sluicectl (-c FILE | -s SOCKET) COMMAND\n"
	        "  status   what runs, connections open, mail waiting\n"
	        "  stats    every counter (Prometheus text format)\n"
	        "  reload   reload the filter rules and antivirus signatures\n"
	        "  queue    the delivery queue's counts\n"
	        "  tarpit   clients held in the tarpit now and in all\n"
	        "  greylist the greylist's counts\n"
	        "  help     the commands sluiced knows\n");
}

int
main(int argc, char **argv)
{
	const char *conf = NULL, *sock = NULL;
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "c:s:h", lo, NULL)) != -1) {
		switch (o) {
		case 'c': conf = optarg; break;
		case 's': sock = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if ((conf == NULL) == (sock == NULL) || optind >= argc) {
		usage(stderr);
		return 2;
	}
	char path[PATH_MAX];
	if (conf != NULL) {
		struct ctl_config cfg;
		char err[1024];
		if (ctl_config_load(conf, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "sluicectl: %s\n", err);
			return 2;
		}
		sock = ctl_config_admin_socket(&cfg, path, sizeof(path));
		ctl_config_free(&cfg);
		if (sock == NULL) {
			fprintf(stderr, "sluicectl: %s: the admin socket is off (admin.socket: \"\") or "
			        "its default path is too long; set admin.socket\n", conf);
			return 2;
		}
	}
	/* the command: the arguments joined by blanks */
	char line[514];
	size_t n = 0;
	for (int i = optind; i < argc; i++) {
		int k = snprintf(line + n, sizeof(line) - n, "%s%s", i > optind ? " " : "", argv[i]);
		if (k < 0 || (size_t)k >= sizeof(line) - n - 1) {
			fprintf(stderr, "sluicectl: the command is longer than 512 bytes\n");
			return 2;
		}
		n += (size_t)k;
	}
	line[n++] = '\n';

	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	if (strlen(sock) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "sluicectl: %s: longer than a unix socket path may be\n", sock);
		return 2;
	}
	strcpy(sun.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "sluicectl: cannot reach sluiced at %s: %s (is it running, with this "
		        "configuration?)\n", sock, strerror(errno));
		return 2;
	}
	if (send(fd, line, n, MSG_NOSIGNAL) != (ssize_t)n) {
		fprintf(stderr, "sluicectl: %s: %s\n", sock, strerror(errno));
		return 2;
	}
	/* the answer, to its end; its last line says how it went */
	char *ans = NULL;
	size_t alen = 0, acap = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 30000) <= 0) {
			fprintf(stderr, "sluicectl: %s: no answer within 30 s\n", sock);
			return 2;
		}
		if (acap - alen < 4096) {
			char *g = realloc(ans, acap = acap ? 2 * acap : 65536);
			if (g == NULL) {
				fprintf(stderr, "sluicectl: out of memory\n");
				return 2;
			}
			ans = g;
		}
		ssize_t r = recv(fd, ans + alen, acap - alen - 1, 0);
		if (r < 0) {
			fprintf(stderr, "sluicectl: %s: %s\n", sock, strerror(errno));
			return 2;
		}
		if (r == 0)
			break;
		alen += (size_t)r;
	}
	if (alen > 0)
		fwrite(ans, 1, alen, stdout);
	fflush(stdout);
	const char *last = "";
	if (alen > 0 && ans[alen - 1] == '\n') {
		ans[alen - 1] = '\0';
		const char *nl = strrchr(ans, '\n');
		last = nl ? nl + 1 : ans;
	}
	int rc = strcmp(last, "ok") == 0 ? 0 : strncmp(last, "error:", 6) == 0 ? 1 : 2;
	if (rc == 2)
		fprintf(stderr, "sluicectl: %s: the answer was cut short\n", sock);
	free(ans);
	close(fd);
	return rc;
}
