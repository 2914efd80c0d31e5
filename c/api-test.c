// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Tests of the C API on the real kernel (run as root; tests/test_c_library.py
 * runs it, also in the ASan+UBSan build): option errors, open/close/reopen,
 * delivery of a child's writes, tb_stop() from a thread and from a signal
 * handler, a callback ending a call early, filter changes, stats, a generic
 * tracepoint (descriptors built from its tracefs format), Arrow batches read
 * through the C data interface, and the JSON helper on synthetic events
 * (edge cases of rs/json.rs).
 * Prints one line per failure and exits 1 if any.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap-api.h"

static int failures;
#define CHECK(cond, ...)                                                              \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                 \
			fputc('\n', stderr);                                          \
			failures++;                                                   \
		}                                                                     \
	} while (0)

static const char MARK[] = "api-test marker \x01\xff\n";

struct collect {
	int n;          /* events seen */
	int marks;      /* of which writes of MARK */
	int stop_after; /* return non-zero once n reaches it (0: never) */
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Checks snprintf-style and getline-style JSON output on every event. */
static void check_json_api(const struct tb_event *ev)
{
	size_t full = tb_event_to_json(ev, NULL, 0);
	char *buf = malloc(full + 1);
	size_t n = tb_event_to_json(ev, buf, full + 1);
	CHECK(n == full && buf[full] == '\0' && strlen(buf) == full, "full=%zu n=%zu", full, n);
	char small[10];
	n = tb_event_to_json(ev, small, sizeof small);
	CHECK(n == full && small[9] == '\0' && !memcmp(small, buf, 9), "cut output");
	char one[1] = { 'x' };
	tb_event_to_json(ev, one, 1);
	CHECK(one[0] == '\0', "size 1");
	char *a = NULL;
	size_t cap = 0;
	long l = tb_event_to_json_alloc(ev, &a, &cap);
	CHECK(l == (long)full && a && !strcmp(a, buf) && cap > full, "alloc variant");
	l = tb_event_to_json_alloc(ev, &a, &cap); /* reuse */
	CHECK(l == (long)full && !strcmp(a, buf), "alloc reuse");
	free(a);
	free(buf);
}

static int on_event(const struct tb_event *ev, void *ctx)
{
	struct collect *c = ctx;
	c->n++;
	check_json_api(ev);
	CHECK(ev->desc && ev->event_type == TB_EVENT_SYSCALLS__SYS_ENTER_WRITE, "type %u", ev->event_type);
	if (ev->desc && ev->nfields == 3) {
		const struct tb_field *f = ev->fields;
		CHECK(!strcmp(f[0].desc->name, "fd") && !strcmp(f[2].desc->name, "content"), "field names");
		CHECK(f[2].flags == 0, "content flags %u (len %zu, size %llu)", f[2].flags, (size_t)f[2].len,
		      (unsigned long long)f[2].size);
		if (f[2].len == sizeof MARK - 1 && !memcmp(f[2].data, MARK, f[2].len)) {
			c->marks++;
			CHECK(f[0].i == 1 && f[1].u == sizeof MARK - 1 && f[2].flags == 0 && f[2].size == sizeof MARK - 1,
			      "fd=%lld count=%llu flags=%u", (long long)f[0].i, (unsigned long long)f[1].u, f[2].flags);
			CHECK(ev->pid != (uint32_t)getpid() && ev->ppid == (uint32_t)getpid(), "pid %u ppid %u", ev->pid, ev->ppid);
		}
	}
	return c->stop_after && c->n >= c->stop_after;
}

/*
 * A child named `comm` that writes MARK `times` times to fd 1 (/dev/null).
 * It writes from a stack copy: the BPF program cannot fault pages in, and a
 * forked child has no page-table entry yet for read-only file pages such as
 * MARK's in .rodata, so on a filesystem without fault-around of cached pages
 * the content would be lost as `fault` (tests/test_write_capture.py covers that
 * case; this test is about the C API).
 */
static pid_t spawn_writer(const char *comm, int times)
{
	pid_t pid = fork();
	if (pid == 0) {
		char mark[sizeof MARK];
		memcpy(mark, MARK, sizeof MARK);
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		prctl(PR_SET_NAME, comm, 0, 0, 0);
		for (int i = 0; i < times; i++)
			if (write(1, mark, sizeof MARK - 1) < 0)
				_exit(2);
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	int st;
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed");
}

/* A tracer of writes by tasks named `comm`, delivering to on_event with `c`;
 * without a callback if `c` is NULL (read as Arrow only). */
static struct tb_tracer *open_tracer(const char *comm, struct collect *c, int arrow)
{
	const char *events[] = { "syscalls/sys_enter_write" };
	const char *comms[] = { comm };
	struct tb_options o;
	memset(&o, 0, sizeof o);
	o.events = events;
	o.nevents = 1;
	o.comms = comms;
	o.ncomms = 1;
	o.on_event = c ? on_event : NULL;
	o.ctx = c;
	o.arrow = arrow;
	struct tb_tracer *t = NULL;
	char err[4096];
	int rc = tb_open(&o, &t, err, sizeof err);
	CHECK(rc == TB_OK && t, "tb_open: %d %s", rc, err);
	return rc == TB_OK ? t : NULL;
}

static struct tb_tracer *open_write_tracer(const char *comm, struct collect *c)
{
	return open_tracer(comm, c, 0);
}

static void poll_until(struct tb_tracer *t, struct collect *c, int marks)
{
	double end = now_s() + 5;
	while (c->marks < marks && now_s() < end) {
		int n = tb_poll(t, 50);
		CHECK(n >= 0, "tb_poll: %d", n);
		if (n < 0)
			break;
	}
}

/* ------------------------------------------------------------------ */

static void test_option_errors(void)
{
	struct collect c = { 0 };
	struct tb_tracer *t = (struct tb_tracer *)1;
	char err[1024];
	struct tb_options o;
	memset(&o, 0, sizeof o);

	CHECK(tb_open(NULL, &t, err, sizeof err) == TB_ERR_INVALID && t == NULL, "NULL opts");
	o.on_event = on_event;
	o.ctx = &c;

	o.content_max = (1u << 20) + 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "content_max must be from 1 to 1048576"),
	      "%s", err);
	o.content_max = 0;

	const char *nine[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i" };
	o.comms = nine;
	o.ncomms = 9;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "at most 8 comm"), "%s", err);
	const char *longc[] = { "0123456789abcdef" };
	o.comms = longc;
	o.ncomms = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "1 to 15 bytes"), "%s", err);
	o.comms = NULL;
	o.ncomms = 0;

	o.follow = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "follow"), "%s", err);
	o.follow = 0;

	/* Batches built by the reader are read with tb_poll_arrow: no callback. */
	o.arrow = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "leave on_event NULL"), "%s", err);
	o.arrow = 0;

	const char *nocg[] = { "no-such-cgroup-api-test" };
	o.cgroups = nocg;
	o.ncgroups = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "invalid cgroup filter") &&
		      strstr(err, "does not exist"),
	      "%s", err);
	o.cgroups = NULL;
	o.ncgroups = 0;
	/* proc/snapshot comes from the snapshot option, not from its name. */
	const char *snap[] = { "proc/snapshot" };
	o.events = snap;
	o.nevents = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "set snapshot"), "%s", err);
	o.events = NULL;
	o.nevents = 0;

	int bad_fd = -1;
	o.content_fds = &bad_fd;
	o.ncontent_fds = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_INVALID && strstr(err, "non-negative"), "%s", err);
	o.content_fds = NULL;
	o.ncontent_fds = 0;

	const char *typo[] = { "syscalls/sys_enter_writ" };
	o.events = typo;
	o.nevents = 1;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_UNKNOWN_EVENT &&
		      strstr(err, "did you mean \"syscalls/sys_enter_write\""), "%s", err);
	const char *nomatch[] = { "nosuch/*" };
	o.events = nomatch;
	CHECK(tb_open(&o, &t, err, sizeof err) == TB_ERR_UNKNOWN_EVENT, "%s", err);
	CHECK(t == NULL, "out not cleared");
	CHECK(tb_open(&o, &t, NULL, 0) == TB_ERR_UNKNOWN_EVENT, "NULL errbuf");

	for (int s = 0; s >= -11; s--)
		CHECK(strcmp(tb_strerror(s), "unknown status") != 0, "tb_strerror(%d)", s);
	CHECK(!strcmp(tb_stat_name(TB_STAT_RECORDS), "records") && tb_stat_name(TB_STAT_COUNT) == NULL, "stat names");
	tb_close(NULL);
	tb_stop(NULL);
}

/* Open, receive a child's writes, check the counters, close; three times. */
static void test_reopen(void)
{
	for (int round = 0; round < 3; round++) {
		char comm[32];
		snprintf(comm, sizeof comm, "tbapi%d_%d", round, (int)(getpid() % 10000));
		struct collect c = { 0 };
		struct tb_tracer *t = open_write_tracer(comm, &c);
		if (!t)
			return;
		CHECK(tb_nevents(t) == 1 && !strcmp(tb_event_at(t, 0)->name, "syscalls/sys_enter_write") &&
			      tb_event_at(t, 1) == NULL, "tb_nevents/tb_event_at");
		CHECK(tb_ncpus(t) >= 1 && tb_fd(t) >= 0, "ncpus/fd");
		struct pollfd pfd = { .fd = tb_fd(t), .events = POLLIN };
		CHECK(poll(&pfd, 1, 0) == 0, "tb_fd readable with nothing queued");
		reap(spawn_writer(comm, 3));
		/* The reader thread queues the events: tb_fd becomes readable. */
		CHECK(poll(&pfd, 1, 5000) == 1 && (pfd.revents & POLLIN), "tb_fd not readable with events queued");
		poll_until(t, &c, 3);
		CHECK(poll(&pfd, 1, 0) == 0, "tb_fd still readable after every event was delivered");
		CHECK(c.marks == 3 && c.n == 3, "round %d: %d marks of %d events", round, c.marks, c.n);
		struct tb_stats s;
		CHECK(tb_stats(t, &s) == TB_OK, "tb_stats");
		CHECK(s.kernel[TB_STAT_RECORDS] == 3 && s.delivered == 3 && s.decode_errors == 0 && s.overwritten == 0 &&
			      s.seq_gaps == 0 && s.kernel[TB_STAT_RING_FULL] == 0,
		      "records=%llu delivered=%llu", (unsigned long long)s.kernel[TB_STAT_RECORDS],
		      (unsigned long long)s.delivered);
		tb_close(t);
	}
}

struct stopper {
	struct tb_tracer *t;
	int delay_ms;
};

static void *stop_later(void *arg)
{
	struct stopper *s = arg;
	usleep((useconds_t)s->delay_ms * 1000);
	tb_stop(s->t);
	return NULL;
}

static struct tb_tracer *volatile sig_tracer;

static void on_alarm(int sig)
{
	(void)sig;
	tb_stop(sig_tracer);
}

/* tb_stop() from another thread and from a signal handler ends a blocking
 * tb_poll(); it is sticky until tb_resume(). */
static void test_stop(void)
{
	struct collect c = { 0 };
	struct tb_tracer *t = open_write_tracer("tbstop-none", &c);
	if (!t)
		return;
	struct stopper s = { t, 200 };
	pthread_t th;
	double t0 = now_s();
	pthread_create(&th, NULL, stop_later, &s);
	int rc = tb_poll(t, -1);
	double dt = now_s() - t0;
	pthread_join(th, NULL);
	CHECK(rc == TB_STOPPED && dt > 0.15 && dt < 3, "thread stop: rc=%d after %.3fs", rc, dt);
	CHECK(tb_poll(t, -1) == TB_STOPPED, "sticky");
	CHECK(tb_consume(t) >= 0, "consume after stop");
	tb_resume(t);
	CHECK(tb_poll(t, 10) == 0, "resumed");

	sig_tracer = t;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = { { 0, 0 }, { 0, 150000 } };
	t0 = now_s();
	setitimer(ITIMER_REAL, &it, NULL);
	rc = tb_poll(t, -1);
	dt = now_s() - t0;
	CHECK(rc == TB_STOPPED && dt > 0.1 && dt < 3, "signal stop: rc=%d after %.3fs", rc, dt);
	signal(SIGALRM, SIG_DFL);
	sig_tracer = NULL;
	tb_close(t);
}

/* Filters replaced while attached. */
static void test_set_filters(void)
{
	char comm[32], other[32];
	snprintf(comm, sizeof comm, "tbflt%d", (int)(getpid() % 100000));
	snprintf(other, sizeof other, "tbother%d", (int)(getpid() % 100000));
	struct collect c = { 0 };
	struct tb_tracer *t = open_write_tracer(comm, &c);
	if (!t)
		return;
	char err[512];
	const char *o[] = { other };
	CHECK(tb_set_comms(t, o, 1, err, sizeof err) == TB_OK, "%s", err);
	reap(spawn_writer(comm, 2));
	CHECK(tb_poll(t, 100) == 0 && c.n == 0, "filtered out: %d", c.n);
	const char *both[] = { other, comm };
	CHECK(tb_set_comms(t, both, 2, err, sizeof err) == TB_OK, "%s", err);
	reap(spawn_writer(comm, 2));
	poll_until(t, &c, 2);
	CHECK(c.marks == 2, "after set_comms: %d", c.marks);
	const char *bad[] = { "" };
	CHECK(tb_set_comms(t, bad, 1, err, sizeof err) == TB_ERR_INVALID && strstr(err, "comm prefix"), "%s", err);
	uint32_t zero = 0;
	CHECK(tb_set_pids(t, &zero, 1, err, sizeof err) == TB_ERR_INVALID, "pid 0");
	/* A pid filter on a process that does not write: nothing more arrives. */
	uint32_t init = 1;
	CHECK(tb_set_pids(t, &init, 1, err, sizeof err) == TB_OK, "%s", err);
	reap(spawn_writer(comm, 1));
	CHECK(tb_poll(t, 100) == 0 && c.marks == 2, "pid filter");
	CHECK(tb_set_pids(t, NULL, 0, err, sizeof err) == TB_OK, "%s", err);
	reap(spawn_writer(comm, 1));
	poll_until(t, &c, 3);
	CHECK(c.marks == 3, "pid filter removed: %d", c.marks);
	/* The cgroup filter: a bad path is refused; the cgroup2 root (".",
	 * relative to it) holds every task. */
	const char *nocg[] = { "no-such-cgroup-api-test" };
	CHECK(tb_set_cgroups(t, nocg, 1, err, sizeof err) == TB_ERR_INVALID && strstr(err, "does not exist"), "%s", err);
	const char *cgroot[] = { "." };
	CHECK(tb_set_cgroups(t, cgroot, 1, err, sizeof err) == TB_OK, "%s", err);
	reap(spawn_writer(comm, 1));
	poll_until(t, &c, 4);
	CHECK(c.marks == 4, "under the cgroup2 root: %d", c.marks);
	CHECK(tb_set_cgroups(t, NULL, 0, err, sizeof err) == TB_OK, "%s", err);
	tb_close(t);
}

struct forks {
	pid_t child;     /* the fork to find */
	int seen;        /* events of it */
	int json_ok;     /* its JSON line names it */
};

static int on_fork(const struct tb_event *ev, void *ctx)
{
	struct forks *f = ctx;
	check_json_api(ev);
	CHECK(ev->desc && !strcmp(ev->desc->name, "sched/sched_process_fork") && ev->event_type == ev->desc->id,
	      "generic event %u", ev->event_type);
	if (!ev->desc || ev->nfields != ev->desc->nfields)
		return 0;
	for (uint32_t i = 0; i < ev->nfields; i++) {
		const struct tb_field *fl = &ev->fields[i];
		CHECK(fl->desc == &ev->desc->fields[i], "field %u descriptor", i);
		if (!strcmp(fl->desc->name, "child_pid") && fl->i == f->child) {
			CHECK(fl->desc->kind == TB_FK_I64, "child_pid kind %d", fl->desc->kind);
			char want[64], *line = NULL;
			size_t cap = 0;
			snprintf(want, sizeof want, "\"child_pid\":%d}}", (int)f->child);
			f->seen++;
			f->json_ok += tb_event_to_json_alloc(ev, &line, &cap) > 0 && strstr(line, want) != NULL;
			free(line);
		}
	}
	return 0;
}

/* A tracepoint that events.toml does not declare: attached, described and
 * decoded from its tracefs format. */
static void test_generic_tracepoint(void)
{
	const char *events[] = { "sched/sched_process_fork" };
	uint32_t me = (uint32_t)getpid();
	struct forks f = { 0 };
	struct tb_options o;
	memset(&o, 0, sizeof o);
	o.events = events;
	o.nevents = 1;
	o.pids = &me;
	o.npids = 1;
	o.trace_self = 1;
	o.on_event = on_fork;
	o.ctx = &f;
	struct tb_tracer *t = NULL;
	char err[4096];
	int rc = tb_open(&o, &t, err, sizeof err);
	CHECK(rc == TB_OK, "tb_open: %d %s", rc, err);
	if (rc != TB_OK)
		return;
	const struct tb_event_desc *d = tb_event_at(t, 0);
	CHECK(tb_nevents(t) == 1 && d && !strcmp(d->name, "sched/sched_process_fork") && d->nfields >= 2, "descriptor");
	f.child = fork();
	if (f.child == 0)
		_exit(0);
	reap(f.child);
	double end = now_s() + 5;
	while (!f.seen && now_s() < end)
		CHECK(tb_poll(t, 50) >= 0, "tb_poll");
	CHECK(f.seen == 1 && f.json_ok == 1, "fork of %d: seen %d, json %d", (int)f.child, f.seen, f.json_ok);
	tb_close(t);
}

/* ------------------------------------------------------------------ */
/* Arrow batches, read through the C data interface itself. */

/* The index of the schema's column `name` (checking its format), or -1. */
static int64_t arrow_column(const struct ArrowSchema *s, const char *name, const char *format)
{
	for (int64_t i = 0; i < s->n_children; i++) {
		const struct ArrowSchema *c = s->children[i];
		if (strcmp(c->name, name) != 0)
			continue;
		CHECK(!strcmp(c->format, format), "column %s: format %s, want %s", name, c->format, format);
		return i;
	}
	CHECK(0, "no column %s among %lld", name, (long long)s->n_children);
	return -1;
}

/* Whether element `i` (the array's offset included) is not null. */
static int arrow_valid(const struct ArrowArray *a, int64_t i)
{
	const uint8_t *bits = a->buffers[0];
	return !bits || ((bits[i / 8] >> (i % 8)) & 1);
}

struct arrow_cols {
	int64_t pid, content, n; /* column indices, and how many the schema has */
};

/* Rows of `b` that are a write of MARK by `pid`; checks the batch's shape. */
static int arrow_marks(const struct ArrowArray *b, const struct arrow_cols *cols, uint32_t pid)
{
	CHECK(b->release && b->n_children == cols->n && b->null_count == 0, "batch: release %p, %lld children",
	      (void *)b->release, (long long)b->n_children);
	if (!b->release || b->n_children != cols->n || cols->pid < 0 || cols->content < 0)
		return 0;
	const struct ArrowArray *p = b->children[cols->pid], *c = b->children[cols->content];
	CHECK(p->length >= b->offset + b->length && p->n_buffers == 2, "pid: length %lld, %lld buffers",
	      (long long)p->length, (long long)p->n_buffers);
	CHECK(c->length >= b->offset + b->length && c->n_buffers == 3, "content: length %lld, %lld buffers",
	      (long long)c->length, (long long)c->n_buffers);
	const uint32_t *pids = p->buffers[1];
	const int64_t *offsets = c->buffers[1]; /* "Z": large binary, int64 offsets */
	const uint8_t *data = c->buffers[2];
	int marks = 0;
	for (int64_t row = b->offset; row < b->offset + b->length; row++) {
		int64_t i = c->offset + row, len = offsets[i + 1] - offsets[i];
		if (!arrow_valid(c, i) || len != (int64_t)sizeof MARK - 1 || memcmp(data + offsets[i], MARK, (size_t)len))
			continue;
		CHECK(pids[p->offset + row] == pid, "MARK written by pid %u, want %u", pids[p->offset + row], pid);
		marks++;
	}
	return marks;
}

/* One tb_poll_arrow() or tb_consume_arrow() (timeout < -1) result: its rows
 * of MARK by `pid` added to *marks; the batch released. Returns the call's
 * result. */
static int arrow_take(struct tb_tracer *t, int timeout_ms, size_t max, const struct arrow_cols *cols, uint32_t pid,
		      int *marks)
{
	struct ArrowArray a;
	memset(&a, 0xab, sizeof a); /* the library must not read it */
	int n = timeout_ms < -1 ? tb_consume_arrow(t, max, &a) : tb_poll_arrow(t, timeout_ms, max, &a);
	if (n < 0) {
		CHECK(a.release == NULL, "a failed call (%d) left something to release", n);
		return n;
	}
	CHECK(a.length == n && (max == 0 || (size_t)n <= max), "%d rows, length %lld, max %zu", n, (long long)a.length, max);
	*marks += arrow_marks(&a, cols, pid);
	a.release(&a);
	CHECK(a.release == NULL, "release did not mark the batch released");
	return n;
}

/* The schema's columns the tests read, checked. */
static struct arrow_cols arrow_schema_cols(const struct ArrowSchema *s)
{
	struct arrow_cols cols = { -1, -1, s->n_children };
	CHECK(s->release && !strcmp(s->format, "+s") && s->n_children > 13, "schema %s of %lld columns", s->format,
	      (long long)s->n_children);
	if (!s->release || strcmp(s->format, "+s") != 0)
		return cols;
	arrow_column(s, "event_id", "L");
	arrow_column(s, "timestamp", "tsn:UTC");
	cols.pid = arrow_column(s, "pid", "I");
	cols.content = arrow_column(s, "payload.content", "Z");
	return cols;
}

/* Polls until `want` writes of MARK by `pid` arrived (5 s at most). */
static int arrow_poll_until(struct tb_tracer *t, const struct arrow_cols *cols, uint32_t pid, int want)
{
	int marks = 0;
	double end = now_s() + 5;
	while (marks < want && now_s() < end)
		if (arrow_take(t, 50, 0, cols, pid, &marks) < 0)
			break;
	return marks;
}

/* Waits (5 s at most) until `n` events are queued. A call that does not wait
 * takes what the queue holds, and the reader thread may still be moving a
 * child's records there from the ring: exact counts need them all queued. */
static void wait_queued(struct tb_tracer *t, uint64_t n)
{
	struct tb_stats s;
	memset(&s, 0, sizeof s);
	double end = now_s() + 5;
	while (tb_stats(t, &s) == TB_OK && s.queued < n && now_s() < end)
		usleep(1000);
	CHECK(s.queued == n, "queued %llu, want %llu", (unsigned long long)s.queued, (unsigned long long)n);
}

/* A child's writes arrive as rows with its exact bytes and pid; batch
 * bounds, stop and drain as tb_poll/tb_consume; batches and the schema
 * outlive the tracer; no callback needed. */
/* Batches built from the queue's events, or by the reader (tb_options.arrow):
 * the same rows either way. */
static void test_arrow(int built_by_reader)
{
	char comm[32];
	snprintf(comm, sizeof comm, "tbarrow%d", (int)(getpid() % 100000));
	struct tb_tracer *t = open_tracer(comm, NULL, built_by_reader);
	if (!t)
		return;
	CHECK(tb_poll(t, 0) == TB_ERR_INVALID && tb_consume(t) == TB_ERR_INVALID, "callback calls without a callback");
	struct ArrowSchema schema;
	memset(&schema, 0xab, sizeof schema);
	CHECK(tb_arrow_schema(t, &schema) == TB_OK, "tb_arrow_schema");
	struct arrow_cols cols = arrow_schema_cols(&schema);
	int marks = 0;
	CHECK(arrow_take(t, 10, 0, &cols, 0, &marks) == 0, "rows with nothing written");

	pid_t child = spawn_writer(comm, 3);
	reap(child);
	marks = arrow_poll_until(t, &cols, (uint32_t)child, 3);
	CHECK(marks == 3, "%d of 3 writes of the child as rows", marks);

	/* max_events bounds a batch; what is left comes next. */
	child = spawn_writer(comm, 3);
	reap(child);
	wait_queued(t, 3);
	marks = 0;
	CHECK(arrow_take(t, -2, 2, &cols, (uint32_t)child, &marks) == 2, "first batch of at most 2");
	CHECK(arrow_take(t, -2, 2, &cols, (uint32_t)child, &marks) == 1, "the rest");
	CHECK(arrow_take(t, -2, 2, &cols, (uint32_t)child, &marks) == 0 && marks == 3, "nothing left: %d", marks);

	/* After tb_stop(): TB_STOPPED at once, the rest through tb_consume_arrow. */
	child = spawn_writer(comm, 2);
	reap(child);
	wait_queued(t, 2);
	tb_stop(t);
	marks = 0;
	CHECK(arrow_take(t, -1, 0, &cols, 0, &marks) == TB_STOPPED, "stopped");
	CHECK(arrow_take(t, -2, 0, &cols, (uint32_t)child, &marks) == 2 && marks == 2, "drained after stop: %d", marks);
	CHECK(arrow_take(t, -2, 0, &cols, 0, &marks) == 0, "drained");
	tb_resume(t);
	CHECK(arrow_take(t, 10, 0, &cols, 0, &marks) == 0, "resumed");
	struct stopper s = { t, 100 };
	pthread_t th;
	pthread_create(&th, NULL, stop_later, &s);
	CHECK(arrow_take(t, -1, 0, &cols, 0, &marks) == TB_STOPPED, "stop during the wait");
	pthread_join(th, NULL);
	tb_resume(t);

	struct tb_stats st;
	CHECK(tb_stats(t, &st) == TB_OK && st.delivered == 8 && st.queued == 0, "delivered %llu",
	      (unsigned long long)st.delivered);
	struct ArrowArray a;
	CHECK(tb_poll_arrow(t, 0, 0, NULL) == TB_ERR_INVALID && tb_arrow_schema(t, NULL) == TB_ERR_INVALID, "NULL out");
	memset(&a, 0xab, sizeof a);
	CHECK(tb_poll_arrow(NULL, 0, 0, &a) == TB_ERR_INVALID && a.release == NULL, "NULL tracer");

	/* A batch and the schema are the caller's: still valid after tb_close(). */
	child = spawn_writer(comm, 1);
	reap(child);
	wait_queued(t, 1);
	CHECK(tb_consume_arrow(t, 0, &a) == 1, "one write");
	tb_close(t);
	CHECK(arrow_marks(&a, &cols, (uint32_t)child) == 1, "the batch after tb_close");
	if (a.release)
		a.release(&a);
	if (schema.release)
		schema.release(&schema);
}

/* A callback returning non-zero ends the call after that event; the events
 * it left undelivered come first in the next Arrow batch. */
static void test_callback_stop(void)
{
	char comm[32];
	snprintf(comm, sizeof comm, "tbcb%d", (int)(getpid() % 100000));
	struct collect c = { 0 };
	struct tb_tracer *t = open_write_tracer(comm, &c);
	if (!t)
		return;
	reap(spawn_writer(comm, 5)); /* its records are in the ring once it exited */
	c.stop_after = 1;
	for (int i = 1; i <= 5; i++) {
		int n = tb_consume(t);
		CHECK(n == 1 && c.n == i, "call %d delivered %d (total %d)", i, n, c.n);
		c.stop_after = c.n + 1;
	}
	CHECK(tb_consume(t) == 0, "nothing left");

	struct ArrowSchema schema;
	CHECK(tb_arrow_schema(t, &schema) == TB_OK, "tb_arrow_schema");
	struct arrow_cols cols = arrow_schema_cols(&schema);
	pid_t child = spawn_writer(comm, 3);
	reap(child);
	wait_queued(t, 3);
	CHECK(tb_consume(t) == 1 && c.n == 6, "the callback took one of three");
	int marks = 0;
	CHECK(arrow_take(t, 0, 0, &cols, (uint32_t)child, &marks) == 2 && marks == 2, "the other two: %d", marks);
	struct tb_stats st;
	CHECK(tb_stats(t, &st) == TB_OK && st.delivered == 8, "delivered %llu", (unsigned long long)st.delivered);
	schema.release(&schema);
	tb_close(t);
}

/* ------------------------------------------------------------------ */
/* JSON of synthetic events: the edge cases of rs/json.rs. */

static const struct tb_field_desc synth_fields[] = {
	{ "s", TB_FK_STR, 0, TB_DECODE_NONE, 4096 },
	{ "b", TB_FK_BYTES, 16, TB_DECODE_NONE, 4096 },
	{ "l", TB_FK_STRLIST, 32, TB_DECODE_NONE, 4096 },
	{ "e", TB_FK_I64, 48, TB_DECODE_ERRNO, 0 },
	{ "f", TB_FK_U32, 56, TB_DECODE_OPEN_FLAGS, 0 },
	{ "g", TB_FK_I32, 60, TB_DECODE_SIGNAL, 0 },
};
static const struct tb_event_desc synth_desc = { 1028, "cat/synthetic", "", 64, 6, synth_fields };

static void var(struct tb_field *f, const char *data, size_t len, uint32_t flags, uint64_t size)
{
	f->data = (const uint8_t *)data;
	f->len = (uint32_t)len;
	f->flags = flags;
	f->size = size;
}

static void expect_json(const struct tb_field *fields, const char *comm, size_t comm_len, const char *want)
{
	struct tb_event ev;
	memset(&ev, 0, sizeof ev);
	ev.event_id = 7;
	ev.event_type = 1028;
	ev.desc = &synth_desc;
	ev.timestamp_ns = 18446744073709551615ull;
	ev.pid = 1;
	ev.tid = 2;
	ev.ppid = 4294967295u;
	ev.upid = 5;
	ev.uppid = 6;
	ev.ns_pid = 8;
	ev.ns_tid = 9;
	ev.cgroup_id = 18446744073709551614ull;
	ev.cgroup = "/k\"8s"; /* escaped like any string */
	ev.pod_uid = "u-1";   /* container_id: NULL is null; a runtime: NULL is left out */
	memcpy(ev.comm, comm, comm_len);
	ev.comm_len = (uint32_t)comm_len;
	ev.nfields = 6;
	ev.fields = fields;
	char buf[4096];
	size_t n = tb_event_to_json(&ev, buf, sizeof buf);
	CHECK(n < sizeof buf && !strcmp(buf, want), "\n got: %s\nwant: %s", buf, want);
}

#define HEAD "{\"event_id\":7,\"event_type\":\"cat/synthetic\",\"timestamp_ns\":18446744073709551615,\"pid\":1,\"tid\":2,\"ppid\":4294967295,\"upid\":5,\"uppid\":6,\"comm\":"
/* What follows comm (and comm_base64): the task's context. */
#define CTX ",\"ns_pid\":8,\"ns_tid\":9,\"cgroup_id\":18446744073709551614,\"cgroup\":\"/k\\\"8s\",\"container_id\":null,\"pod_uid\":\"u-1\""

static void test_json_synthetic(void)
{
	struct tb_field f[6];
	memset(f, 0, sizeof f);
	for (int i = 0; i < 6; i++)
		f[i].desc = &synth_fields[i];

	/* Escapes, invalid UTF-8 (each bad byte one U+FFFD), base64 of bytes. */
	var(&f[0], "a\"b\\c\n\r\t\x00\x1b\x7f", 11, 0, 11);
	var(&f[1], "\xe2\x82\xac\xf0\x9f\x98\x80\xff\xc3\xe2\x82\xed\xa0\x80", 14, 0, 14);
	var(&f[2], "a\0\0b\0", 5, 0, 5);
	f[3].i = -2;
	f[3].u = (uint64_t)-2;
	f[4].u = 02000101;
	f[4].i = 02000101;
	f[5].i = 9;
	f[5].u = 9;
	expect_json(f, "x\x01\xff\"", 4,
		    HEAD "\"x\\u0001\xef\xbf\xbd\\\"\",\"comm_base64\":\"eAH/Ig==\"" CTX ",\"payload\":{"
			 "\"s\":\"a\\\"b\\\\c\\n\\r\\t\\u0000\\u001b\\u007f\","
			 "\"b\":\"\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\","
			 "\"b_base64\":\"4oKs8J+YgP/D4oLtoIA=\","
			 "\"l\":[\"a\",\"\",\"b\"],"
			 "\"e\":-2,\"e_name\":\"ENOENT\","
			 "\"f\":524353,\"f_name\":\"O_WRONLY|O_CREAT|O_CLOEXEC\","
			 "\"g\":9,\"g_name\":\"SIGKILL\"}}");

	/* Losses and cuts; names absent where the hint has none. */
	var(&f[0], "", 0, TB_VAR_NO_SPACE, 10);
	var(&f[1], "ab", 2, TB_VAR_FAULT | TB_VAR_TRUNCATED, 99);
	var(&f[2], "\0", 1, TB_VAR_TRUNCATED, 0);
	f[3].i = 3;
	f[3].u = 3;
	f[4].u = 0x40000000u | 2;
	f[4].i = (int64_t)f[4].u;
	f[5].i = 0;
	f[5].u = 0;
	expect_json(f, "", 0,
		    HEAD "\"\"" CTX ",\"payload\":{"
			 "\"s\":null,\"s_lost\":\"payload_full\","
			 "\"b\":\"ab\",\"b_lost\":\"fault\",\"b_truncated\":true,\"b_size\":99,"
			 "\"l\":[\"\"],\"l_truncated\":true,"
			 "\"e\":3,"
			 "\"f\":1073741826,\"f_name\":\"O_RDWR|0x40000000\","
			 "\"g\":0}}");

	var(&f[0], "x", 1, TB_VAR_NOT_CAPTURED, 1);
	var(&f[1], "", 0, TB_VAR_OVERWRITTEN, 0);
	var(&f[2], "\0\0", 2, 0, 2);
	f[3].i = INT64_MIN;
	f[3].u = (uint64_t)INT64_MIN;
	f[4].u = 0;
	f[4].i = 0;
	f[5].i = -1;
	f[5].u = (uint64_t)-1;
	expect_json(f, "0123456789abcdef", 16,
		    HEAD "\"0123456789abcdef\"" CTX ",\"payload\":{"
			 "\"s\":null,\"s_lost\":\"not_selected\","
			 "\"b\":null,\"b_lost\":\"overwritten\","
			 "\"l\":[\"\",\"\"],"
			 "\"e\":-9223372036854775808,"
			 "\"f\":0,\"f_name\":\"O_RDONLY\","
			 "\"g\":-1}}");

	/* C1 controls escaped (U+00A0 is not one); strings and string lists that
	 * are not valid UTF-8 carry their exact bytes, a list one per string. */
	var(&f[0], "\xc2\x9b" "1m\xff", 5, 0, 5);
	var(&f[1], "\xc2\x80\xc2\x9f\xc2\xa0", 6, 0, 6);
	var(&f[2], "ok\0\xfe\0", 5, 0, 5);
	expect_json(f, "t\xc2\x85", 3,
		    HEAD "\"t\\u0085\"" CTX ",\"payload\":{"
			 "\"s\":\"\\u009b1m\xef\xbf\xbd\",\"s_base64\":\"wpsxbf8=\","
			 "\"b\":\"\\u0080\\u009f\xc2\xa0\","
			 "\"l\":[\"ok\",\"\xef\xbf\xbd\"],\"l_base64\":[\"b2s=\",\"/g==\"],"
			 "\"e\":-9223372036854775808,"
			 "\"f\":0,\"f_name\":\"O_RDONLY\","
			 "\"g\":-1}}");

	/* Base64 padding (RFC 4648 vectors, behind a byte that forces it). */
	static const struct { const char *in; size_t n; const char *b64; } v[] = {
		{ "\xff", 1, "/w==" }, { "\xff" "f", 2, "/2Y=" }, { "\xff" "fo", 3, "/2Zv" }, { "\xff" "foob", 5, "/2Zvb2I=" },
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		var(&f[1], v[i].in, v[i].n, 0, v[i].n);
		struct tb_event ev;
		memset(&ev, 0, sizeof ev);
		ev.desc = &synth_desc;
		ev.nfields = 6;
		ev.fields = f;
		char buf[2048];
		tb_event_to_json(&ev, buf, sizeof buf);
		char want[64];
		snprintf(want, sizeof want, "\"b_base64\":\"%s\"", v[i].b64);
		CHECK(strstr(buf, want) != NULL, "base64 of %zu bytes: %s", v[i].n, buf);
	}
}

int main(void)
{
	setvbuf(stderr, NULL, _IONBF, 0);
	test_json_synthetic();
	test_option_errors();
	test_reopen();
	test_callback_stop();
	test_stop();
	test_set_filters();
	test_generic_tracepoint();
	test_arrow(0);
	test_arrow(1);
	if (failures) {
		fprintf(stderr, "api-test: %d failure(s)\n", failures);
		return 1;
	}
	printf("api-test: all passed\n");
	return 0;
}
