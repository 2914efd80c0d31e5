// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tracer-ebpf C library: loads c/bootstrap.bpf.c (through its bpftool
 * skeleton), consumes the `events` ring buffer and the mmapped per-CPU
 * payload area (docs/protocol.md), decodes records with the generated
 * descriptor tables of bootstrap.gen.h and hands them to a callback.
 * rs/tracer.rs, rs/loader.rs and rs/payload_area.rs are the reference; this
 * file follows them step by step.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bootstrap-api.h"
#include "bootstrap-protocol.h"
#include "bootstrap.skel.h"

/* ------------------------------------------------------------------ */
/* Static tables                                                       */

/* Counter names come from the generated tb_stat_names[] (typegen). */
#define stat_names tb_stat_names

/* Per event: its tracepoint and BPF program, from the generated X-macro. */
struct prog_info {
	__u32 id;
	const char *category;
	const char *tracepoint;
	const char *program;
	int optional;
};
#define TB_X_PROG(cat, tp, ctx_type, id, opt) { id, #cat, #tp, "handle__" #cat "__" #tp, opt },
static const struct prog_info progs[] = { TB_TRACEPOINT_LIST(TB_X_PROG) };
#undef TB_X_PROG
#define NPROGS (sizeof(progs) / sizeof(progs[0]))
_Static_assert(NPROGS == TB_EVENT_COUNT, "TB_TRACEPOINT_LIST and tb_events disagree");

#define FOLLOW_PROG "tb_follow_fork"
#define BTF_PATH "/sys/kernel/btf/vmlinux"
#define TRACEFS "/sys/kernel/tracing"
#define DEBUGFS_TRACING "/sys/kernel/debug/tracing"
#define CAP_SYS_ADMIN_BIT 21
#define CAP_PERFMON_BIT 38
#define CAP_BPF_BIT 39

/* tb_cpu_ctl words the reader uses (rs/payload_area.rs CTL_HEAD/CTL_TAIL). */
_Static_assert(__builtin_offsetof(struct tb_cpu_ctl, head) == 0, "tb_cpu_ctl.head");
_Static_assert(__builtin_offsetof(struct tb_cpu_ctl, tail) == 64, "tb_cpu_ctl.tail");

/* ------------------------------------------------------------------ */
/* The tracer                                                          */

struct resolved {
	const struct prog_info **events; /* selected, in order */
	size_t nevents;
	uint32_t *pids;
	size_t npids;
	int follow;
	char comms[TB_MAX_COMM_FILTERS][TB_COMM_LEN];
	size_t ncomms;
	int *fds;
	size_t nfds;
	int all_fds;
	uint32_t content_max, argv_max;
	size_t ring_bytes;
	size_t nchunks;
	uint64_t wake_ns;
	int trace_self;
};

struct tb_tracer {
	struct bootstrap_bpf *skel;
	struct ring_buffer *rb;
	struct bpf_link **links;
	size_t nlinks;
	int ring_fd;
	int stop_fd;  /* eventfd: readable once tb_stop() was called */
	int stop;     /* atomic: tb_stop() was called */

	/* payload area */
	const uint8_t *data;
	size_t data_len;
	uint8_t *ctl;
	size_t ctl_len;
	unsigned ncpus;
	size_t nchunks;
	uint64_t region;

	/* decoding */
	uint8_t *buf;           /* one record's payload bytes, grown to payload_len */
	size_t buf_cap;
	struct tb_field *fields; /* room for the largest event */
	uint64_t *last_seq;     /* per CPU */
	int64_t clock_offset;   /* epoch ns - boot ns */
	uint64_t next_event_id;
	struct tb_stats user;   /* user counters (kernel[] unused here) */

	tb_event_fn cb;
	void *cb_ctx;
	int in_callback;
	/* consume loop */
	int honor_stop;         /* tb_poll: a tb_stop() ends the loop */
	uint64_t budget;        /* records left in this call */
	int stop_loop;          /* the callback asked to return */
	int delivered;          /* this call */

	struct resolved cfg;
};

/* ------------------------------------------------------------------ */
/* Errors                                                              */

const char *tb_strerror(int status)
{
	switch (status) {
	case TB_OK: return "success";
	case TB_STOPPED: return "stopped";
	case TB_ERR_INVALID: return "invalid argument";
	case TB_ERR_PERMISSION: return "permission denied";
	case TB_ERR_NO_BTF: return "kernel BTF missing";
	case TB_ERR_TRACEFS: return "tracefs unavailable";
	case TB_ERR_UNKNOWN_EVENT: return "unknown event";
	case TB_ERR_NO_TRACEPOINT: return "tracepoint missing";
	case TB_ERR_VERIFIER: return "BPF program rejected by the verifier";
	case TB_ERR_BPF: return "BPF operation failed";
	case TB_ERR_NOMEM: return "out of memory";
	case TB_ERR_IO: return "system call failed";
	}
	return "unknown status";
}

__attribute__((format(printf, 4, 5)))
static int fail(char *errbuf, size_t errlen, int code, const char *fmt, ...)
{
	if (errbuf && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

#define PERMISSION_HINT                                                                          \
	"Run as root, or grant the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (e.g. "   \
	"`sudo setcap cap_bpf,cap_perfmon,cap_sys_admin+ep <binary>`); CAP_SYS_ADMIN alone also " \
	"works on kernels before 5.8"

/* ------------------------------------------------------------------ */
/* libbpf messages of the current open, for error reports              */

struct logbuf {
	char *s;
	size_t len, cap;
};
static __thread struct logbuf *cur_log;
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	va_list ap2;
	va_copy(ap2, ap);
	if (getenv("TRACER_EBPF_DEBUG")) {
		fputs("libbpf: ", stderr);
		vfprintf(stderr, fmt, ap);
	}
	struct logbuf *l = cur_log;
	if (l && l->len < (4u << 20)) {
		/* One message can be a whole verifier log: size it first. */
		va_list ap3;
		va_copy(ap3, ap2);
		int n = vsnprintf(NULL, 0, fmt, ap3);
		va_end(ap3);
		if (n > 0 && l->len + (size_t)n + 1 > l->cap) {
			size_t nc = (l->len + (size_t)n + 1) * 2;
			char *ns = realloc(l->s, nc);
			if (ns) {
				l->s = ns;
				l->cap = nc;
			}
		}
		if (n > 0 && l->len + (size_t)n + 1 <= l->cap) {
			vsnprintf(l->s + l->len, (size_t)n + 1, fmt, ap2);
			l->len += (size_t)n;
		}
	}
	va_end(ap2);
	return 0;
}

/* The last `nlines` lines of the log. */
static const char *log_tail(const struct logbuf *l, int nlines)
{
	if (!l->s)
		return "";
	const char *p = l->s + l->len;
	int seen = 0;
	while (p > l->s) {
		p--;
		if (*p == '\n' && p + 1 < l->s + l->len && ++seen > nlines) {
			p++;
			break;
		}
	}
	return p;
}

/* ------------------------------------------------------------------ */
/* Environment: privileges, BTF, tracefs                               */

static int effective_caps(uint64_t *caps)
{
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return -1;
	char line[256];
	int found = -1;
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "CapEff:", 7)) {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(line + 7, &end, 16);
			if (!errno && end != line + 7) {
				*caps = v;
				found = 0;
			}
			break;
		}
	}
	fclose(f);
	return found;
}

static int check_environment(char *errbuf, size_t errlen)
{
	if (access(BTF_PATH, R_OK) != 0 && errno == ENOENT)
		return fail(errbuf, errlen, TB_ERR_NO_BTF,
			    "kernel BTF not found at %s: tracer-ebpf needs a kernel built with "
			    "CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2020 have it)",
			    BTF_PATH);
	uint64_t caps;
	if (effective_caps(&caps) == 0) {
#define HAS(bit) ((caps >> (bit)) & 1)
		if (!HAS(CAP_SYS_ADMIN_BIT) && !(HAS(CAP_BPF_BIT) && HAS(CAP_PERFMON_BIT))) {
			char missing[64] = "";
			if (!HAS(CAP_BPF_BIT))
				strcat(missing, "CAP_BPF, ");
			if (!HAS(CAP_PERFMON_BIT))
				strcat(missing, "CAP_PERFMON, ");
			strcat(missing, "CAP_SYS_ADMIN");
			return fail(errbuf, errlen, TB_ERR_PERMISSION,
				    "insufficient privileges to trace: this process lacks %s. " PERMISSION_HINT,
				    missing);
		}
#undef HAS
	}
	return TB_OK;
}

static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The tracing directory, mounting tracefs at /sys/kernel/tracing if needed. */
static int ensure_tracefs(const char **dir, char *errbuf, size_t errlen)
{
	static const char *const dirs[] = { TRACEFS, DEBUGFS_TRACING };
	char p[64];
	for (size_t i = 0; i < 2; i++) {
		snprintf(p, sizeof p, "%s/events", dirs[i]);
		if (is_dir(p)) {
			*dir = dirs[i];
			return TB_OK;
		}
	}
#define TRACEFS_MSG "tracefs is not mounted and could not be mounted (%s). Mount it as root: " \
		    "`mount -t tracefs nodev " TRACEFS "`"
	if (!is_dir(TRACEFS))
		return fail(errbuf, errlen, TB_ERR_TRACEFS, TRACEFS_MSG,
			    TRACEFS " does not exist: is CONFIG_TRACING enabled?");
	if (mount("nodev", TRACEFS, "tracefs", 0, NULL) != 0) {
		int e = errno;
		if (e == EPERM || e == EACCES)
			return fail(errbuf, errlen, TB_ERR_TRACEFS, TRACEFS_MSG,
				    "mounting it needs CAP_SYS_ADMIN");
		char why[128];
		snprintf(why, sizeof why, "mount failed: %s", strerror(e));
		return fail(errbuf, errlen, TB_ERR_TRACEFS, TRACEFS_MSG, why);
	}
	if (!is_dir(TRACEFS "/events"))
		return fail(errbuf, errlen, TB_ERR_TRACEFS, TRACEFS_MSG,
			    "mounted, but it has no events/ directory");
#undef TRACEFS_MSG
	*dir = TRACEFS;
	return TB_OK;
}

static void kernel_release(char *out, size_t n)
{
	snprintf(out, n, "unknown kernel");
	FILE *f = fopen("/proc/sys/kernel/osrelease", "re");
	if (f) {
		if (fgets(out, (int)n, f))
			out[strcspn(out, "\n")] = '\0';
		fclose(f);
	}
}

static int check_tracepoints(const char *tracing, const struct resolved *c, char *errbuf, size_t errlen)
{
	for (size_t i = 0; i < c->nevents; i++) {
		const struct prog_info *p = c->events[i];
		char path[512];
		snprintf(path, sizeof path, "%s/events/%s/%s", tracing, p->category, p->tracepoint);
		if (!is_dir(path)) {
			char rel[128];
			kernel_release(rel, sizeof rel);
			return fail(errbuf, errlen, TB_ERR_NO_TRACEPOINT,
				    "tracepoint %s/%s does not exist on this kernel (%s); %s", p->category,
				    p->tracepoint, rel,
				    p->optional ? "this event is optional: leave it out of `events` on this kernel"
						: "check the kernel configuration, or leave this event out");
		}
	}
	return TB_OK;
}

/* ------------------------------------------------------------------ */
/* Options                                                             */

static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t *prev = malloc((lb + 1) * sizeof *prev), *cur = malloc((lb + 1) * sizeof *cur);
	size_t d = (size_t)-1;
	if (prev && cur) {
		for (size_t j = 0; j <= lb; j++)
			prev[j] = j;
		for (size_t i = 1; i <= la; i++) {
			cur[0] = i;
			for (size_t j = 1; j <= lb; j++) {
				size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
				size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
				cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
			}
			size_t *t = prev;
			prev = cur;
			cur = t;
		}
		d = prev[lb];
	}
	free(prev);
	free(cur);
	return d;
}

/* "; did you mean ..." for an unknown event name (rs/config.rs suggestions). */
static void suggest(const char *name, char *out, size_t n)
{
	struct { size_t d; const char *name; } s[TB_EVENT_COUNT];
	size_t ns = 0;
	for (size_t i = 0; i < TB_EVENT_COUNT; i++) {
		const char *full = tb_events[i].name;
		const char *tp = strchr(full, '/');
		tp = tp ? tp + 1 : full;
		size_t d1 = edit_distance(name, full), d2 = edit_distance(name, tp);
		size_t d = d1 < d2 ? d1 : d2;
		if ((strstr(full, name) || strstr(name, tp)) && d > 1)
			d = 1;
		size_t lim = strlen(full) / 3 > 3 ? strlen(full) / 3 : 3;
		if (d <= lim) {
			size_t k = ns++;
			while (k > 0 && (s[k - 1].d > d || (s[k - 1].d == d && strcmp(s[k - 1].name, full) > 0))) {
				s[k] = s[k - 1];
				k--;
			}
			s[k].d = d;
			s[k].name = full;
		}
	}
	if (!ns) {
		snprintf(out, n, "; see tb_events[] in bootstrap.gen.h or docs/events.md");
		return;
	}
	size_t used = (size_t)snprintf(out, n, "; did you mean ");
	for (size_t i = 0; i < ns && i < 5 && used < n; i++)
		used += (size_t)snprintf(out + used, n - used, "%s\"%s\"", i ? ", " : "", s[i].name);
	if (used < n)
		snprintf(out + used, n - used, "?");
}

static int add_event(struct resolved *c, const struct prog_info *p)
{
	for (size_t i = 0; i < c->nevents; i++)
		if (c->events[i] == p)
			return 0;
	c->events[c->nevents++] = p;
	return 0;
}

static int resolve_events(const struct tb_options *o, struct resolved *c, char *errbuf, size_t errlen)
{
	c->events = calloc(NPROGS ? NPROGS : 1, sizeof *c->events);
	if (!c->events)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	if (!o->nevents) {
		for (size_t i = 0; i < NPROGS; i++)
			if (!progs[i].optional)
				add_event(c, &progs[i]);
		return TB_OK;
	}
	if (!o->events)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: nevents without events");
	for (size_t k = 0; k < o->nevents; k++) {
		const char *raw = o->events[k] ? o->events[k] : "";
		/* trimmed copy */
		while (*raw && isspace((unsigned char)*raw))
			raw++;
		char name[256];
		snprintf(name, sizeof name, "%s", raw);
		size_t l = strlen(name);
		while (l && isspace((unsigned char)name[l - 1]))
			name[--l] = '\0';
		int wild = strpbrk(name, "*?") != NULL, matched = 0;
		for (size_t i = 0; i < NPROGS; i++) {
			const struct tb_event_desc *d = tb_event_desc(progs[i].id);
			const char *full = d ? d->name : "";
			if (wild ? fnmatch(name, full, 0) == 0 : strcmp(name, full) == 0) {
				add_event(c, &progs[i]);
				matched = 1;
			}
		}
		if (!matched) {
			char hint[512];
			suggest(name, hint, sizeof hint);
			return fail(errbuf, errlen, TB_ERR_UNKNOWN_EVENT, "unknown event \"%s\"%s", name, hint);
		}
	}
	return TB_OK;
}

static int set_comms(struct resolved *c, const char *const *comms, size_t n, char *errbuf, size_t errlen)
{
	if (n && !comms)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: ncomms without comms");
	if (n > TB_MAX_COMM_FILTERS)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: at most %d comm prefixes, got %zu",
			    TB_MAX_COMM_FILTERS, n);
	for (size_t i = 0; i < n; i++) {
		size_t l = comms[i] ? strlen(comms[i]) : 0;
		if (l == 0 || l >= TB_COMM_LEN)
			return fail(errbuf, errlen, TB_ERR_INVALID,
				    "invalid configuration: comm prefix \"%s\" must be 1 to %d bytes "
				    "(the kernel keeps %d bytes of comm)",
				    comms[i] ? comms[i] : "", TB_COMM_LEN - 1, TB_COMM_LEN - 1);
	}
	memset(c->comms, 0, sizeof c->comms);
	for (size_t i = 0; i < n; i++)
		memcpy(c->comms[i], comms[i], strlen(comms[i]));
	c->ncomms = n;
	return TB_OK;
}

static int set_pids(struct resolved *c, const uint32_t *pids, size_t n, char *errbuf, size_t errlen)
{
	if (n && !pids)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: npids without pids");
	if (n > 65536)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: at most 65536 pids, got %zu", n);
	for (size_t i = 0; i < n; i++)
		if (pids[i] == 0)
			return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: pid 0 is not a process id");
	uint32_t *np = NULL;
	if (n) {
		np = malloc(n * sizeof *np);
		if (!np)
			return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
		memcpy(np, pids, n * sizeof *np);
	}
	free(c->pids);
	c->pids = np;
	c->npids = n;
	return TB_OK;
}

#define RANGE(what, v, lo, hi)                                                                        \
	do {                                                                                          \
		unsigned long long v_ = (v);                                                          \
		if (v_ < (lo) || v_ > (hi))                                                           \
			return fail(errbuf, errlen, TB_ERR_INVALID,                                   \
				    "invalid configuration: %s must be from %llu to %llu, got %llu", what, \
				    (unsigned long long)(lo), (unsigned long long)(hi), v_);          \
	} while (0)

static size_t next_pow2(size_t v)
{
	size_t p = 1;
	while (p < v)
		p <<= 1;
	return p;
}

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Default buffer sizes, the rule of the Rust core (rs/sizing.rs) from
 * physical memory M (the Rust core also lowers M to the cgroup's memory
 * limit; this library does not read cgroups): kernel budget K = M/384,
 * 12 to 64 MiB; the ring the power of two nearest K/8 (1 to 8 MiB); 1 MiB
 * for the other maps; the payload area the rest, over the possible CPUs, in
 * whole chunks, at least 2 MiB each. */
static uint64_t kernel_budget(void)
{
	struct sysinfo si;
	uint64_t ram = sysinfo(&si) == 0 ? (uint64_t)si.totalram * (si.mem_unit ? si.mem_unit : 1) : 0;
	return clamp_u64((ram ? ram : 1ull << 30) / 384, 12ull << 20, 64ull << 20);
}

static size_t default_ring_bytes(void)
{
	uint64_t k = kernel_budget() / 8, below = 1;
	while (below * 2 <= k)
		below *= 2;
	return (size_t)clamp_u64(k - below >= below / 2 ? below * 2 : below, 1ull << 20, 8ull << 20);
}

static size_t default_payload_bytes_per_cpu(void)
{
	uint64_t k = kernel_budget(), ring = default_ring_bytes(), other = 1ull << 20;
	int ncpus = libbpf_num_possible_cpus();
	uint64_t area = k > ring + other ? k - ring - other : 0;
	uint64_t chunks = area / (uint64_t)(ncpus > 0 ? ncpus : 1) / TB_CHUNK_ELEM_SIZE;
	uint64_t min_chunks = (2ull << 20) / TB_CHUNK_SIZE;
	return (size_t)((chunks > min_chunks ? chunks : min_chunks) * TB_CHUNK_SIZE);
}

static int resolve(const struct tb_options *o, struct resolved *c, char *errbuf, size_t errlen)
{
	int err = resolve_events(o, c, errbuf, errlen);
	if (err)
		return err;
	c->content_max = o->content_max ? o->content_max : 1u << 20;
	c->argv_max = o->argv_max ? o->argv_max : 128u << 10;
	size_t ring = o->ring_bytes ? o->ring_bytes : default_ring_bytes();
	size_t payload = o->payload_bytes_per_cpu ? o->payload_bytes_per_cpu : default_payload_bytes_per_cpu();
	c->wake_ns = o->wake_ns ? o->wake_ns : 1000000;
	RANGE("content_max", c->content_max, 1, 1u << 20);
	RANGE("argv_max", c->argv_max, 1, 1u << 20);
	RANGE("ring_bytes", ring, 4096, 1u << 30);
	RANGE("payload_bytes_per_cpu", payload, 1, 1u << 30);
	c->ring_bytes = next_pow2(ring);
	c->nchunks = (payload + TB_CHUNK_SIZE - 1) / TB_CHUNK_SIZE;
	c->follow = !!o->follow;
	c->all_fds = !!o->all_fds;
	c->trace_self = !!o->trace_self;
	if (c->follow && !o->npids)
		return fail(errbuf, errlen, TB_ERR_INVALID,
			    "invalid configuration: follow needs at least one pid to follow");
	err = set_pids(c, o->pids, o->npids, errbuf, errlen);
	if (err)
		return err;
	err = set_comms(c, o->comms, o->ncomms, errbuf, errlen);
	if (err)
		return err;
	static const int default_fds[] = { 1, 2 };
	const int *fds = o->content_fds ? o->content_fds : default_fds;
	size_t nfds = o->content_fds ? o->ncontent_fds : 2;
	if (nfds > 256)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: at most 256 content_fds, got %zu", nfds);
	c->fds = malloc((nfds ? nfds : 1) * sizeof *c->fds);
	if (!c->fds)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < nfds; i++) {
		if (fds[i] < 0)
			return fail(errbuf, errlen, TB_ERR_INVALID,
				    "invalid configuration: content_fds must be non-negative, got %d", fds[i]);
		c->fds[i] = fds[i];
	}
	c->nfds = nfds;
	return TB_OK;
}

static void free_resolved(struct resolved *c)
{
	free(c->events);
	free(c->pids);
	free(c->fds);
	memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ */
/* Filter maps                                                         */

static int bpf_fail(char *errbuf, size_t errlen, const char *what, int err)
{
	if (err == -EPERM || err == -EACCES)
		return fail(errbuf, errlen, TB_ERR_PERMISSION, "insufficient privileges to trace: %s failed: %s. " PERMISSION_HINT,
			    what, strerror(-err));
	return fail(errbuf, errlen, TB_ERR_BPF, "%s: %s", what, strerror(err < 0 ? -err : err));
}

/* Collects the keys of a u32-keyed hash map. */
static int map_keys(int fd, uint32_t **keys, size_t *n)
{
	size_t cap = 64;
	uint32_t *k = malloc(cap * sizeof *k), cur, next;
	if (!k)
		return -ENOMEM;
	*n = 0;
	const void *prev = NULL;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (*n == cap) {
			uint32_t *nk = realloc(k, cap * 2 * sizeof *k);
			if (!nk) {
				free(k);
				return -ENOMEM;
			}
			k = nk;
			cap *= 2;
		}
		k[(*n)++] = next;
		cur = next;
		prev = &cur;
	}
	*keys = k;
	return 0;
}

/* Writes pids, content fds and then the `cfg` switch (rs/loader.rs write_filters). */
static int write_filters(struct tb_tracer *t, char *errbuf, size_t errlen)
{
	const struct resolved *c = &t->cfg;
	int pids_fd = bpf_map__fd(t->skel->maps.pids), fds_fd = bpf_map__fd(t->skel->maps.content_fds);
	uint32_t *keys;
	size_t n;
	__u8 one = 1;
	int err = map_keys(pids_fd, &keys, &n);
	if (err)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		int keep = 0;
		for (size_t j = 0; j < c->npids && !keep; j++)
			keep = c->pids[j] == keys[i];
		if (!keep)
			bpf_map_delete_elem(pids_fd, &keys[i]);
	}
	free(keys);
	for (size_t i = 0; i < c->npids; i++)
		if ((err = bpf_map_update_elem(pids_fd, &c->pids[i], &one, BPF_ANY)))
			return bpf_fail(errbuf, errlen, "updating filter maps", err);

	if (map_keys(fds_fd, &keys, &n))
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		bpf_map_delete_elem(fds_fd, &keys[i]);
	free(keys);
	for (size_t i = 0; i < c->nfds; i++) {
		uint32_t fd = (uint32_t)c->fds[i];
		if ((err = bpf_map_update_elem(fds_fd, &fd, &one, BPF_ANY)))
			return bpf_fail(errbuf, errlen, "updating filter maps", err);
	}

	struct tb_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.self_tgid = c->trace_self ? 0 : (uint32_t)getpid();
	cfg.pid_filter = c->npids != 0;
	cfg.follow = (uint32_t)c->follow;
	cfg.ncomm = (uint32_t)c->ncomms;
	cfg.content_max = c->content_max;
	cfg.argv_max = c->argv_max;
	cfg.all_fds = (uint32_t)c->all_fds;
	for (size_t i = 0; i < c->nfds; i++)
		if (c->fds[i] < 64)
			cfg.fd_mask |= 1ull << c->fds[i];
	for (size_t i = 0; i < c->ncomms; i++) {
		size_t l = strnlen(c->comms[i], TB_COMM_LEN - 1);
		memcpy(cfg.comm[i].prefix, c->comms[i], l);
		cfg.comm[i].len = (uint32_t)l;
	}
	uint32_t zero = 0;
	if ((err = bpf_map_update_elem(bpf_map__fd(t->skel->maps.cfg), &zero, &cfg, BPF_ANY)))
		return bpf_fail(errbuf, errlen, "updating filter maps", err);
	return TB_OK;
}

/* ------------------------------------------------------------------ */
/* Payload area (rs/payload_area.rs)                                   */

static void *map_area(int fd, size_t entries, size_t value_size, int writable, size_t *len)
{
	long page = sysconf(_SC_PAGESIZE);
	if (page <= 0)
		page = 4096;
	size_t bytes = entries * ((value_size + 7) / 8 * 8);
	bytes = (bytes + (size_t)page - 1) / (size_t)page * (size_t)page;
	void *p = mmap(NULL, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	*len = bytes;
	return p;
}

static uint64_t *ctl_word(struct tb_tracer *t, unsigned cpu, size_t off)
{
	return (uint64_t *)(t->ctl + (size_t)cpu * TB_CPU_CTL_SIZE + off);
}

/* Copies `len` bytes at logical position `pos` of `cpu`'s region to `out`.
 * Returns 1 if intact, 0 if the producer may have overwritten them. */
static int area_read(struct tb_tracer *t, unsigned cpu, uint64_t pos, uint32_t len, uint8_t *out)
{
	uint64_t done = 0;
	while (done < len) {
		uint64_t p = pos + done;
		size_t chunk = (size_t)cpu * t->nchunks + (size_t)((p / TB_CHUNK_SIZE) % t->nchunks);
		size_t off = (size_t)(p % TB_CHUNK_SIZE);
		size_t n = TB_CHUNK_SIZE - off;
		if (n > len - done)
			n = (size_t)(len - done);
		memcpy(out + done, t->data + chunk * TB_CHUNK_ELEM_SIZE + off, n);
		done += n;
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	/* Intact unless the producer reserved past pos + region, where it
	 * would start reusing these bytes. */
	uint64_t head = __atomic_load_n(ctl_word(t, cpu, __builtin_offsetof(struct tb_cpu_ctl, head)), __ATOMIC_ACQUIRE);
	return head <= pos + t->region;
}

static void area_release(struct tb_tracer *t, unsigned cpu, uint64_t upto)
{
	__atomic_store_n(ctl_word(t, cpu, __builtin_offsetof(struct tb_cpu_ctl, tail)), upto, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------ */
/* Decoding one record (rs/tracer.rs Inbox::decode)                    */

static const unsigned int_size[] = {
	[TB_FK_U8] = 1, [TB_FK_U16] = 2, [TB_FK_U32] = 4, [TB_FK_U64] = 8,
	[TB_FK_I8] = 1, [TB_FK_I16] = 2, [TB_FK_I32] = 4, [TB_FK_I64] = 8,
};

/* Fills t->fields from the fixed part, the payload-area bytes (`var`) and the
 * inline bytes after the record in its ring sample (fields flagged
 * TB_VAR_INLINE); -1 if malformed. */
static int decode_fields(struct tb_tracer *t, const struct tb_event_desc *d, const uint8_t *fixed,
			 const uint8_t *var, uint32_t var_len, const uint8_t *inl, uint32_t inl_len)
{
	if (d->fixed_size > TB_FIXED_SLOT_SIZE)
		return -1;
	uint64_t vpos = 0, ipos = 0;
	for (unsigned k = 0; k < d->nfields; k++) {
		const struct tb_field_desc *fd = &d->fields[k];
		struct tb_field *f = &t->fields[k];
		memset(f, 0, sizeof *f);
		f->desc = fd;
		switch (fd->kind) {
		case TB_FK_U8: case TB_FK_U16: case TB_FK_U32: case TB_FK_U64:
		case TB_FK_I8: case TB_FK_I16: case TB_FK_I32: case TB_FK_I64: {
			unsigned sz = int_size[fd->kind];
			if ((uint64_t)fd->offset + sz > d->fixed_size)
				return -1;
			const uint8_t *p = fixed + fd->offset;
			switch (fd->kind) {
			case TB_FK_U8: { __u8 v; memcpy(&v, p, 1); f->u = v; f->i = v; break; }
			case TB_FK_U16: { __u16 v; memcpy(&v, p, 2); f->u = v; f->i = v; break; }
			case TB_FK_U32: { __u32 v; memcpy(&v, p, 4); f->u = v; f->i = v; break; }
			case TB_FK_U64: { __u64 v; memcpy(&v, p, 8); f->u = v; f->i = (int64_t)v; break; }
			case TB_FK_I8: { __s8 v; memcpy(&v, p, 1); f->i = v; f->u = (uint64_t)f->i; break; }
			case TB_FK_I16: { __s16 v; memcpy(&v, p, 2); f->i = v; f->u = (uint64_t)f->i; break; }
			case TB_FK_I32: { __s32 v; memcpy(&v, p, 4); f->i = v; f->u = (uint64_t)f->i; break; }
			case TB_FK_I64: { __s64 v; memcpy(&v, p, 8); f->i = v; f->u = (uint64_t)f->i; break; }
			default: break;
			}
			break;
		}
		case TB_FK_STR: case TB_FK_STRLIST: case TB_FK_BYTES: {
			struct tb_var v;
			if ((uint64_t)fd->offset + sizeof v > d->fixed_size)
				return -1;
			memcpy(&v, fixed + fd->offset, sizeof v);
			const uint8_t *src = var;
			uint64_t *at = &vpos, avail = var_len;
			if (v.flags & TB_VAR_INLINE) {
				src = inl;
				at = &ipos;
				avail = inl_len;
			}
			if (*at + v.len > avail)
				return -1;
			f->data = src + *at;
			f->len = v.len;
			f->flags = v.flags & ~TB_VAR_INLINE; /* transport only */
			f->size = v.size;
			*at += v.len;
			break;
		}
		default:
			return -1;
		}
	}
	/* the descriptors must account for every byte */
	return vpos == var_len && ipos == inl_len ? 0 : -1;
}

static void handle_record(struct tb_tracer *t, const uint8_t *raw, size_t size)
{
	struct tb_record r;
	if (size < sizeof r) {
		t->user.decode_errors++;
		return;
	}
	memcpy(&r, raw, sizeof r);
	if (r.cpu >= t->ncpus || r.payload_len > t->region) {
		t->user.decode_errors++;
		return;
	}
	/* Copy the payload out first, then hand its space back to the
	 * producer, whatever becomes of the decoding. */
	if (r.payload_len > t->buf_cap) {
		size_t nc = t->buf_cap;
		while (nc < r.payload_len)
			nc *= 2;
		uint8_t *nb = realloc(t->buf, nc);
		if (!nb) {
			area_release(t, r.cpu, r.payload_pos + r.payload_len);
			t->user.decode_errors++;
			return;
		}
		t->buf = nb;
		t->buf_cap = nc;
	}
	int intact = area_read(t, r.cpu, r.payload_pos, r.payload_len, t->buf);
	area_release(t, r.cpu, r.payload_pos + r.payload_len);
	uint64_t *last = &t->last_seq[r.cpu];
	if (r.seq > *last + 1)
		t->user.seq_gaps += r.seq - *last - 1;
	*last = r.seq;
	if (!intact) {
		t->user.overwritten++;
		return;
	}

	const struct tb_event_desc *d = tb_event_desc(r.event_type);
	if (r.inline_len > size - sizeof r) { /* the inline bytes must be in the sample */
		t->user.decode_errors++;
		return;
	}
	if (!d || decode_fields(t, d, r.fixed, t->buf, r.payload_len, raw + sizeof r, r.inline_len)) {
		t->user.decode_errors++;
		return;
	}
	struct tb_event ev;
	memset(&ev, 0, sizeof ev);
	ev.event_id = ++t->next_event_id;
	ev.event_type = r.event_type;
	ev.desc = d;
	ev.timestamp_ns = (uint64_t)((int64_t)r.timestamp_ns + t->clock_offset);
	ev.cpu = r.cpu;
	ev.pid = r.pid;
	ev.tid = r.tid;
	ev.ppid = r.ppid;
	ev.upid = r.upid;
	ev.uppid = r.uppid;
	memcpy(ev.comm, r.comm, TB_COMM_LEN);
	ev.comm[TB_COMM_LEN] = '\0';
	ev.comm_len = (uint32_t)strnlen(ev.comm, TB_COMM_LEN);
	ev.flags = r.flags;
	ev.nfields = d->nfields;
	ev.fields = t->fields;
	t->user.delivered++;
	t->delivered++;
	t->in_callback = 1;
	int rc = t->cb(&ev, t->cb_ctx);
	t->in_callback = 0;
	if (rc)
		t->stop_loop = 1;
}

static int on_sample(void *ctx, void *data, size_t size)
{
	struct tb_tracer *t = ctx;
	handle_record(t, data, size);
	if (t->budget)
		t->budget--;
	if (t->stop_loop || !t->budget || (t->honor_stop && __atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)))
		return -ECANCELED; /* the record is consumed; libbpf stops here */
	return 0;
}

/* Delivers what is in the ring: at most about one ring's worth of records,
 * so a producer that never pauses cannot keep the caller here forever. */
static int consume(struct tb_tracer *t, int honor_stop)
{
	t->honor_stop = honor_stop;
	t->budget = t->cfg.ring_bytes / (TB_RECORD_SIZE + 8) + 1;
	t->stop_loop = 0;
	t->delivered = 0;
	int rc = ring_buffer__consume(t->rb);
	if (rc < 0 && rc != -ECANCELED)
		return TB_ERR_IO;
	return t->delivered;
}

/* ------------------------------------------------------------------ */
/* Public functions                                                    */

static int64_t clock_ns(clockid_t c)
{
	struct timespec ts = { 0, 0 };
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_REALTIME - CLOCK_BOOTTIME, sampled tightly. */
static int64_t clock_offset(void)
{
	int64_t b1 = clock_ns(CLOCK_BOOTTIME), real = clock_ns(CLOCK_REALTIME), b2 = clock_ns(CLOCK_BOOTTIME);
	return real - (b1 + (b2 - b1) / 2);
}

static int load_error(int err, struct logbuf *log, char *errbuf, size_t errlen)
{
	const char *s = log->s ? log->s : "";
	if (strstr(s, "-- BEGIN PROG LOAD LOG --") || strstr(s, "processed ") || strstr(s, "verifier log")) {
		/* The program is named on libbpf's "BEGIN PROG LOAD LOG" or
		 * "failed to load" line: prog 'NAME': ... */
		char prog[128] = "?";
		const char *mark = strstr(s, "-- BEGIN PROG LOAD LOG --");
		if (!mark)
			mark = strstr(s, "failed to load");
		if (mark) {
			const char *line = mark;
			while (line > s && line[-1] != '\n')
				line--;
			const char *p = strstr(line, "prog '");
			if (p && p < mark) {
				p += 6;
				size_t l = strcspn(p, "'");
				if (l >= sizeof prog)
					l = sizeof prog - 1;
				memcpy(prog, p, l);
				prog[l] = '\0';
			}
		}
		return fail(errbuf, errlen, TB_ERR_VERIFIER, "the kernel rejected the BPF program %s: %s\n%s", prog,
			    strerror(-err), log_tail(log, 40));
	}
	if (err == -EPERM || err == -EACCES)
		return fail(errbuf, errlen, TB_ERR_PERMISSION,
			    "insufficient privileges to trace: loading the BPF program failed: %s. " PERMISSION_HINT,
			    strerror(-err));
	return fail(errbuf, errlen, TB_ERR_BPF, "loading the BPF program: %s\n%s", strerror(-err), log_tail(log, 10));
}

static int wanted_prog(const struct resolved *c, const char *name)
{
	if (!strcmp(name, FOLLOW_PROG))
		return c->follow;
	for (size_t i = 0; i < c->nevents; i++)
		if (!strcmp(c->events[i]->program, name))
			return 1;
	return 0;
}

static int open_locked(struct tb_tracer *t, const char *tracing, struct logbuf *log, char *errbuf, size_t errlen)
{
	int err, ncpus = libbpf_num_possible_cpus();
	if (ncpus <= 0)
		return fail(errbuf, errlen, TB_ERR_BPF, "counting possible CPUs: %s", strerror(ncpus ? -ncpus : EINVAL));
	t->ncpus = (unsigned)ncpus;
	t->nchunks = t->cfg.nchunks;
	t->region = (uint64_t)t->nchunks * TB_CHUNK_SIZE;
	if ((uint64_t)t->ncpus * t->nchunks > UINT32_MAX)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: payload area too large");

	(void)tracing;
	t->skel = bootstrap_bpf__open();
	if (!t->skel)
		return fail(errbuf, errlen, TB_ERR_BPF, "opening the BPF object: %s\n%s", strerror(errno),
			    log_tail(log, 10));
	struct bootstrap_bpf *s = t->skel;
	if ((err = bpf_map__set_max_entries(s->maps.events, (uint32_t)t->cfg.ring_bytes)) ||
	    (err = bpf_map__set_max_entries(s->maps.payload, (uint32_t)(t->ncpus * t->nchunks))) ||
	    (err = bpf_map__set_max_entries(s->maps.cpu_ctl, t->ncpus)))
		return bpf_fail(errbuf, errlen, "sizing the maps", err);
	s->rodata->tb_nchunks = (__u32)t->nchunks;
	s->rodata->tb_wake_ns = t->cfg.wake_ns;
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, s->obj)
		bpf_program__set_autoload(prog, wanted_prog(&t->cfg, bpf_program__name(prog)));
	if ((err = bootstrap_bpf__load(s)))
		return load_error(err, log, errbuf, errlen);

	/* The payload area and control blocks. */
	t->data = map_area(bpf_map__fd(s->maps.payload), (size_t)t->ncpus * t->nchunks, TB_CHUNK_ELEM_SIZE, 0,
			   &t->data_len);
	if (!t->data)
		return fail(errbuf, errlen, TB_ERR_IO, "mmap of the payload map: %s", strerror(errno));
	t->ctl = map_area(bpf_map__fd(s->maps.cpu_ctl), t->ncpus, TB_CPU_CTL_SIZE, 1, &t->ctl_len);
	if (!t->ctl)
		return fail(errbuf, errlen, TB_ERR_IO, "mmap of the cpu_ctl map: %s", strerror(errno));
	t->last_seq = calloc(t->ncpus, sizeof *t->last_seq);
	if (!t->last_seq)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");

	t->ring_fd = bpf_map__fd(s->maps.events);
	t->rb = ring_buffer__new(t->ring_fd, on_sample, t, NULL);
	if (!t->rb)
		return bpf_fail(errbuf, errlen, "setting up the ring buffer", -errno);

	if ((err = write_filters(t, errbuf, errlen)))
		return err;

	/* Attach: the selected events, then follow mode's fork hook. */
	t->links = calloc(t->cfg.nevents + 1, sizeof *t->links);
	if (!t->links)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i <= t->cfg.nevents; i++) {
		const char *name = i < t->cfg.nevents ? t->cfg.events[i]->program : FOLLOW_PROG;
		if (i == t->cfg.nevents && !t->cfg.follow)
			break;
		prog = bpf_object__find_program_by_name(s->obj, name);
		if (!prog)
			return fail(errbuf, errlen, TB_ERR_BPF, "the BPF object has no program %s", name);
		struct bpf_link *l = bpf_program__attach(prog);
		if (!l) {
			char what[160];
			snprintf(what, sizeof what, "attaching %s", name);
			return bpf_fail(errbuf, errlen, what, -errno);
		}
		t->links[t->nlinks++] = l;
	}
	return TB_OK;
}

int tb_open(const struct tb_options *opts, struct tb_tracer **out, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!out)
		return fail(errbuf, errlen, TB_ERR_INVALID, "tb_open: out is NULL");
	*out = NULL;
	if (!opts)
		return fail(errbuf, errlen, TB_ERR_INVALID, "tb_open: opts is NULL");
	if (!opts->on_event)
		return fail(errbuf, errlen, TB_ERR_INVALID, "invalid configuration: on_event (the callback) is required");

	struct tb_tracer *t = calloc(1, sizeof *t);
	if (!t)
		return fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
	t->ring_fd = -1;
	t->stop_fd = -1;
	t->cb = opts->on_event;
	t->cb_ctx = opts->ctx;
	int err = resolve(opts, &t->cfg, errbuf, errlen);
	if (err)
		goto out;
	unsigned maxf = 1;
	for (size_t i = 0; i < TB_EVENT_COUNT; i++)
		if (tb_events[i].nfields > maxf)
			maxf = tb_events[i].nfields;
	t->fields = calloc(maxf, sizeof *t->fields);
	t->buf_cap = 64u << 10; /* grown to the largest payload_len seen */
	t->buf = malloc(t->buf_cap);
	t->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (!t->fields || !t->buf) {
		err = fail(errbuf, errlen, TB_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (t->stop_fd < 0) {
		err = fail(errbuf, errlen, TB_ERR_IO, "eventfd: %s", strerror(errno));
		goto out;
	}
	if ((err = check_environment(errbuf, errlen)))
		goto out;
	const char *tracing;
	if ((err = ensure_tracefs(&tracing, errbuf, errlen)))
		goto out;
	if ((err = check_tracepoints(tracing, &t->cfg, errbuf, errlen)))
		goto out;

	/* libbpf's print hook is process-wide: one open at a time captures it. */
	struct logbuf log = { 0 };
	pthread_mutex_lock(&open_lock);
	libbpf_print_fn_t prev = libbpf_set_print(libbpf_print);
	cur_log = &log;
	err = open_locked(t, tracing, &log, errbuf, errlen);
	cur_log = NULL;
	libbpf_set_print(prev);
	pthread_mutex_unlock(&open_lock);
	free(log.s);
	if (err)
		goto out;
	t->clock_offset = clock_offset();
	t->next_event_id = (uint64_t)clock_ns(CLOCK_REALTIME);
	*out = t;
	return TB_OK;
out:
	tb_close(t);
	return err;
}

int tb_poll(struct tb_tracer *t, int timeout_ms)
{
	if (!t || t->in_callback)
		return TB_ERR_INVALID;
	if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
		return TB_STOPPED;
	/* The ring map fd is readable whenever records are pending, woken or
	 * not; the producer skips most wake-ups, so a timeout also ends in a
	 * consume. */
	struct pollfd p[2] = { { t->ring_fd, POLLIN, 0 }, { t->stop_fd, POLLIN, 0 } };
	if (poll(p, 2, timeout_ms) < 0 && errno != EINTR)
		return TB_ERR_IO;
	if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
		return TB_STOPPED;
	if (p[1].revents & POLLIN) { /* stale wake-up of a tb_stop() undone by tb_resume() */
		uint64_t v;
		ssize_t r = read(t->stop_fd, &v, sizeof v);
		(void)r;
	}
	return consume(t, 1);
}

int tb_consume(struct tb_tracer *t)
{
	if (!t || t->in_callback)
		return TB_ERR_INVALID;
	return consume(t, 0);
}

void tb_stop(struct tb_tracer *t)
{
	if (!t)
		return;
	int saved = errno;
	__atomic_store_n(&t->stop, 1, __ATOMIC_SEQ_CST);
	uint64_t one = 1;
	ssize_t r = write(t->stop_fd, &one, sizeof one);
	(void)r;
	errno = saved;
}

void tb_resume(struct tb_tracer *t)
{
	if (!t)
		return;
	__atomic_store_n(&t->stop, 0, __ATOMIC_SEQ_CST);
	uint64_t v;
	ssize_t r = read(t->stop_fd, &v, sizeof v);
	(void)r;
}

int tb_fd(const struct tb_tracer *t)
{
	return t ? t->ring_fd : -1;
}

unsigned tb_ncpus(const struct tb_tracer *t)
{
	return t ? t->ncpus : 0;
}

size_t tb_nevents(const struct tb_tracer *t)
{
	return t ? t->cfg.nevents : 0;
}

const struct tb_event_desc *tb_event_at(const struct tb_tracer *t, size_t i)
{
	return t && i < t->cfg.nevents ? tb_event_desc(t->cfg.events[i]->id) : NULL;
}

int tb_set_pids(struct tb_tracer *t, const uint32_t *pids, size_t npids, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!t || t->in_callback)
		return fail(errbuf, errlen, TB_ERR_INVALID, "tb_set_pids: no tracer, or called from the callback");
	int err = set_pids(&t->cfg, pids, npids, errbuf, errlen);
	return err ? err : write_filters(t, errbuf, errlen);
}

int tb_set_comms(struct tb_tracer *t, const char *const *comms, size_t ncomms, char *errbuf, size_t errlen)
{
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!t || t->in_callback)
		return fail(errbuf, errlen, TB_ERR_INVALID, "tb_set_comms: no tracer, or called from the callback");
	int err = set_comms(&t->cfg, comms, ncomms, errbuf, errlen);
	return err ? err : write_filters(t, errbuf, errlen);
}

const char *tb_stat_name(unsigned i)
{
	return i < TB_STAT_COUNT ? stat_names[i] : NULL;
}

int tb_stats(struct tb_tracer *t, struct tb_stats *out)
{
	if (!t || !out)
		return TB_ERR_INVALID;
	*out = t->user;
	uint64_t *per_cpu = calloc(t->ncpus, sizeof *per_cpu); /* 8-byte values need no padding */
	if (!per_cpu)
		return TB_ERR_NOMEM;
	int fd = bpf_map__fd(t->skel->maps.stats), err = TB_OK;
	for (uint32_t i = 0; i < TB_STAT_COUNT; i++) {
		out->kernel[i] = 0;
		if (bpf_map_lookup_elem(fd, &i, per_cpu)) {
			err = TB_ERR_BPF;
			break;
		}
		for (unsigned c = 0; c < t->ncpus; c++)
			out->kernel[i] += per_cpu[c];
	}
	free(per_cpu);
	return err;
}

void tb_close(struct tb_tracer *t)
{
	if (!t)
		return;
	/* Detach first, so nothing writes while the rest goes away. */
	for (size_t i = 0; i < t->nlinks; i++)
		bpf_link__destroy(t->links[i]);
	free(t->links);
	ring_buffer__free(t->rb);
	if (t->data)
		munmap((void *)t->data, t->data_len);
	if (t->ctl)
		munmap(t->ctl, t->ctl_len);
	bootstrap_bpf__destroy(t->skel);
	if (t->stop_fd >= 0)
		close(t->stop_fd);
	free(t->buf);
	free(t->fields);
	free(t->last_seq);
	free_resolved(&t->cfg);
	free(t);
}
