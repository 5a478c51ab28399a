/*
 * sluice-avscan - scan files from memory with sluiced's libclamav pool.
 *
 *   sluice-avscan -d DATABASE [-t THREADS] [-n ROUNDS] [-q] FILE...
 *
 * Loads DATABASE the way sluiced does (ctl_av_start: background load,
 * RCU-published engine), reads every FILE into memory once, then submits
 * each file as one request ROUNDS times, keeping at most 4 x THREADS
 * requests in flight, and prints one line per infected file (first round)
 * and a summary: files/s and MB/s over the scan phase, and the process's
 * CPU time. For operators (what would sluiced say about this file?) and for
 * bench/av.py, which runs it next to clamscan on the same database.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/av.h"

struct job {
	struct ctl_av_req req;
	struct iovec span;
	struct ctl_av_file file;
	unsigned index;
	unsigned round;
};

static sem_t slots;
static atomic_uint answered, viruses, tempfails;
static const char **names;
static int quiet;

static void
done(struct ctl_av_req *r)
{
	struct job *j = r->ctx;
	if (r->verdict == CTL_AV_VIRUS) {
		atomic_fetch_add(&viruses, 1);
		if (j->round == 0 && !quiet)
			printf("%s: %s FOUND\n", names[j->index], r->name);
	} else if (r->verdict != CTL_AV_CLEAN) {
		atomic_fetch_add(&tempfails, 1);
		if (j->round == 0)
			fprintf(stderr, "sluice-avscan: %s: %s %s\n", names[j->index],
			        ctl_av_verdict_name(r->verdict), r->name);
	}
	free(j);
	atomic_fetch_add(&answered, 1);
	sem_post(&slots);
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int
read_file(const char *path, struct iovec *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	uint8_t *buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	size_t got = 0;
	while (buf != NULL && got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (buf == NULL)
		return -ENOMEM;
	out->iov_base = buf;
	out->iov_len = got;
	return 0;
}

int
main(int argc, char **argv)
{
	const char *db = NULL;
	unsigned threads = 1, rounds = 1;
	int ch;
	while ((ch = getopt(argc, argv, "d:t:n:qh")) != -1) {
		switch (ch) {
		case 'd': db = optarg; break;
		case 't': threads = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'n': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'q': quiet = 1; break;
		default:
			fprintf(stderr, "usage: sluice-avscan -d DATABASE [-t THREADS] [-n ROUNDS] [-q] FILE...\n");
			return ch == 'h' ? 0 : 2;
		}
	}
	if (db == NULL || optind >= argc || threads == 0 || rounds == 0) {
		fprintf(stderr, "usage: sluice-avscan -d DATABASE [-t THREADS] [-n ROUNDS] [-q] FILE...\n");
		return 2;
	}
	unsigned nfiles = (unsigned)(argc - optind);
	names = (const char **)(argv + optind);
	struct iovec *data = calloc(nfiles, sizeof(*data));
	uint64_t total = 0;
	for (unsigned i = 0; i < nfiles; i++) {
		int rc = read_file(names[i], &data[i]);
		if (rc < 0) {
			fprintf(stderr, "sluice-avscan: %s: %s\n", names[i], strerror(-rc));
			return 1;
		}
		total += data[i].iov_len;
	}

	double t_load = now_s();
	struct ctl_av_conf conf = {
		.database = db, .threads = threads, .timeout_ms = 600000,
		.queue_max = 4 * threads, .max_scan_bytes = 128u << 20,
	};
	struct ctl_av *av = ctl_av_start(&conf);
	if (av == NULL) {
		fprintf(stderr, "sluice-avscan: cannot start the scan pool: %s\n", strerror(errno));
		return 1;
	}
	struct ctl_av_stats st;
	for (;;) {
		ctl_av_stats(av, &st);
		if (st.loaded)
			break;
		if (st.load_failures > 0) {
			fprintf(stderr, "sluice-avscan: %s: %s\n", db, st.last_error);
			ctl_av_stop(av);
			return 1;
		}
		usleep(10000);
	}
	fprintf(stderr, "sluice-avscan: %u signatures loaded in %.2f s; scanning %u files (%.1f MB) x %u rounds with %u threads\n",
	        st.sigs, now_s() - t_load, nfiles, (double)total / 1e6, rounds, threads);

	sem_init(&slots, 0, conf.queue_max);
	double t0 = now_s(), c0 = cpu_s();
	unsigned submitted = 0;
	for (unsigned r = 0; r < rounds; r++) {
		for (unsigned i = 0; i < nfiles; i++) {
			sem_wait(&slots);
			struct job *j = calloc(1, sizeof(*j));
			j->span = data[i];
			j->file.off = 0;
			j->file.len = data[i].iov_len;
			j->index = i;
			j->round = r;
			j->req.span = &j->span;
			j->req.nspan = 1;
			j->req.file = &j->file;
			j->req.nfile = 1;
			j->req.done = done;
			j->req.ctx = j;
			int rc = ctl_av_submit(av, &j->req);
			if (rc < 0) {
				fprintf(stderr, "sluice-avscan: submit: %s\n", strerror(-rc));
				free(j);
				sem_post(&slots);
				atomic_fetch_add(&tempfails, 1);
				atomic_fetch_add(&answered, 1);
			}
			submitted++;
		}
	}
	while (atomic_load(&answered) < submitted)
		usleep(1000);
	double wall = now_s() - t0, cpu = cpu_s() - c0;
	ctl_av_stop(av);
	double mb = (double)total * rounds / 1e6;
	printf("files=%u rounds=%u threads=%u wall_s=%.3f cpu_s=%.3f files_per_s=%.1f mb_per_s=%.2f "
	       "cpu_ms_per_file=%.4f viruses=%u tempfails=%u\n",
	       nfiles, rounds, threads, wall, cpu, submitted / wall, mb / wall,
	       cpu * 1e3 / submitted, atomic_load(&viruses) / rounds, atomic_load(&tempfails));
	for (unsigned i = 0; i < nfiles; i++)
		free(data[i].iov_base);
	free(data);
	return atomic_load(&tempfails) ? 1 : 0;
}
