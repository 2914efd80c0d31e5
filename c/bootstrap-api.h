/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * tracer-ebpf C library (libbootstrap.a): load the BPF tracer, receive each
 * event decoded through a callback, print it as the project's JSON line, or
 * take events as Arrow record batches (tb_poll_arrow, below).
 *
 * The library is the C ABI of the Rust core (rs/capi, built by `make -C c`
 * with cargo): the same loader, reader thread, queue, decoder, counters and
 * JSON writer as the Rust and Python front ends. Events are typed ones
 * (events.toml) and any other tracepoint ("sched/sched_process_fork", or a
 * wildcard), decoded from its tracefs format. A reader thread drains the
 * kernel buffers into a bounded userspace queue as records arrive; tb_poll()
 * and tb_consume() deliver from that queue, tb_poll_arrow() and
 * tb_consume_arrow() hand it out as Arrow record batches.
 *
 *     struct tb_options o = {0};          // zero means "default" everywhere
 *     const char *ev[] = { "syscalls/sys_enter_write" };
 *     o.events = ev; o.nevents = 1;
 *     o.on_event = my_callback; o.ctx = my_state;
 *     struct tb_tracer *t;
 *     char err[512];
 *     if (tb_open(&o, &t, err, sizeof err) != TB_OK) { fprintf(stderr, "%s\n", err); exit(1); }
 *     while (tb_poll(t, 100) >= 0)        // TB_STOPPED once tb_stop() was called
 *         ;
 *     while (tb_consume(t) > 0)           // deliver what is already captured
 *         ;
 *     tb_close(t);
 *
 * Threads: one thread at a time may call any function on a tracer, except
 * tb_stop(), which may be called from any thread or from a signal handler
 * (the library's own reader thread never calls back into the caller).
 * Separate tracers are independent; a tracer can be opened again after
 * tb_close(). Functions never print: errors come back as a status code and,
 * where an error buffer is taken, a message saying what to do.
 */
#ifndef TB_BOOTSTRAP_API_H
#define TB_BOOTSTRAP_API_H

#include <stddef.h>
#include <stdint.h>
#include <bootstrap.gen.h> /* event ids, descriptor structs, TB_VAR_*, enum tb_stat */

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html),
 * declared exactly as the specification does, behind its guards so that this
 * header and nanoarrow's or Arrow C++'s (arrow/c/abi.h) can be included
 * together in any order.
 */
#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
	/* Array type description */
	const char *format;
	const char *name;
	const char *metadata;
	int64_t flags;
	int64_t n_children;
	struct ArrowSchema **children;
	struct ArrowSchema *dictionary;

	/* Release callback */
	void (*release)(struct ArrowSchema *);
	/* Opaque producer-specific data */
	void *private_data;
};

struct ArrowArray {
	/* Array data description */
	int64_t length;
	int64_t null_count;
	int64_t offset;
	int64_t n_buffers;
	int64_t n_children;
	const void **buffers;
	struct ArrowArray **children;
	struct ArrowArray *dictionary;

	/* Release callback */
	void (*release)(struct ArrowArray *);
	/* Opaque producer-specific data */
	void *private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

#ifndef ARROW_C_STREAM_INTERFACE
#define ARROW_C_STREAM_INTERFACE

struct ArrowArrayStream {
	/* Callbacks providing stream functionality */
	int (*get_schema)(struct ArrowArrayStream *, struct ArrowSchema *out);
	int (*get_next)(struct ArrowArrayStream *, struct ArrowArray *out);
	const char *(*get_last_error)(struct ArrowArrayStream *);

	/* Release callback */
	void (*release)(struct ArrowArrayStream *);

	/* Opaque producer-specific data */
	void *private_data;
};

#endif /* ARROW_C_STREAM_INTERFACE */

/* Status codes. tb_poll()/tb_consume() and their Arrow variants return a
 * count (>= 0) or one of the negative values; everything else returns TB_OK
 * or a negative value. */
enum tb_status {
	TB_OK = 0,
	TB_STOPPED = -1,               /* tb_stop() was called: not an error */
	TB_ERR_INVALID = -2,           /* invalid option or argument */
	TB_ERR_PERMISSION = -3,        /* needs root or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN) */
	TB_ERR_NO_BTF = -4,            /* kernel without /sys/kernel/btf/vmlinux */
	TB_ERR_TRACEFS = -5,           /* tracefs not mounted and could not be mounted */
	TB_ERR_UNKNOWN_EVENT = -6,     /* an event name matches no known event */
	TB_ERR_NO_TRACEPOINT = -7,     /* the running kernel lacks a selected tracepoint */
	TB_ERR_VERIFIER = -8,          /* the kernel rejected the BPF program */
	TB_ERR_BPF = -9,               /* other libbpf/kernel failure */
	TB_ERR_NOMEM = -10,            /* out of memory */
	TB_ERR_IO = -11,               /* system call failure (mmap, poll, ...) */
};

/* A short description of a status code ("permission denied", ...). */
const char *tb_strerror(int status);

/* One payload field of a delivered event. Generic tracepoints' integers are
 * TB_FK_U64 or TB_FK_I64, their strings TB_FK_STR (TB_FK_STRLIST for argv-like
 * arguments), their arrays TB_FK_ULIST or TB_FK_ILIST. */
struct tb_field {
	const struct tb_field_desc *desc; /* name, kind (TB_FK_*), decode hint, max */
	/* Integer fields (TB_FK_U8 .. TB_FK_I64): the value, in both views. */
	uint64_t u;
	int64_t i;
	/* Variable fields (TB_FK_STR, TB_FK_STRLIST, TB_FK_BYTES): `len` bytes at
	 * `data` (not NUL-terminated; valid only during the callback), TB_VAR_*
	 * flags, and the original size in bytes when known (else 0).
	 * Integer lists (TB_FK_ULIST, TB_FK_ILIST): `len` 8-byte integers
	 * (uint64_t or int64_t) at `data`. */
	const uint8_t *data;
	uint32_t len;
	uint32_t flags;
	uint64_t size;
};

/* One event, as handed to the callback. Valid only during the callback. */
struct tb_event {
	uint64_t event_id;     /* unique within this tracer */
	uint32_t event_type;   /* enum tb_event_type; a generic tracepoint: its tracefs ID */
	const struct tb_event_desc *desc; /* desc->name is "category/tracepoint"; lives as long as the tracer */
	uint64_t timestamp_ns; /* nanoseconds since the Unix epoch */
	uint32_t cpu;
	uint32_t pid;          /* process id (tgid) */
	uint32_t tid;          /* thread id */
	uint32_t ppid;         /* parent process id (real parent) */
	uint64_t upid;         /* unique process id: start ms since boot << 22 | pid */
	uint64_t uppid;        /* same for the parent */
	char comm[TB_COMM_LEN + 1]; /* task comm, NUL-terminated (may hold any byte but NUL) */
	uint32_t comm_len;
	uint32_t flags;        /* TB_REC_*: TB_REC_PAYLOAD_LOST if a field lost bytes */
	uint32_t nfields;
	const struct tb_field *fields; /* desc->fields order */
	uint32_t ns_pid;       /* pid as seen in the task's own pid namespace */
	uint32_t ns_tid;       /* tid as seen in the task's own pid namespace */
	uint64_t cgroup_id;    /* cgroup v2 id (inode of the task's cgroup2 directory) */
	/* Resolved in userspace (docs/context.md); NULL when unknown: */
	const char *cgroup;            /* path under the cgroup2 root, "/..." */
	const char *container_id;      /* docker, containerd, cri-o, podman, ... */
	const char *container_runtime; /* "docker", "containerd", "cri-o", "podman", "machine", "lxc" */
	const char *pod_uid;           /* Kubernetes pod UID */
};

/* Called once per event, from tb_poll()/tb_consume(). Return 0 to go on, or
 * non-zero to make that call return after this event. Must not call tb_poll,
 * tb_consume, tb_poll_arrow, tb_consume_arrow or tb_close on the same tracer. */
typedef int (*tb_event_fn)(const struct tb_event *ev, void *ctx);

/* What to trace. All-zero is a valid configuration: every non-optional
 * typed event, every process but this one and the readers of its stdout and
 * stderr (tracing them would trace its own output), content of fds 1 and 2,
 * defaults below. */
struct tb_options {
	/* Event names ("syscalls/sys_enter_write", or any tracepoint such as
	 * "sched/sched_process_fork") or wildcards ("syscalls/" "*");
	 * none: every non-optional typed event. */
	const char *const *events;
	size_t nevents;
	/* Only these processes (tgids); none: every process. */
	const uint32_t *pids;
	size_t npids;
	int follow;                  /* also trace children they fork (needs pids) */
	/* Only tasks whose comm starts with one of these (at most 8, 1..15 bytes). */
	const char *const *comms;
	size_t ncomms;
	/* File descriptors whose write content is captured. NULL: {1, 2};
	 * non-NULL with ncontent_fds == 0: none. At most 256. */
	const int *content_fds;
	size_t ncontent_fds;
	int all_fds;                 /* capture the content of every fd */
	uint32_t content_max;        /* bytes of content per write; 0: 1 MiB (the maximum) */
	uint32_t argv_max;           /* bytes of argv per exec; 0: 128 KiB (max 1 MiB) */
	size_t ring_bytes;           /* ring buffer; 0: a quarter of the kernel budget below (1 to 16 MiB); rounded up to a power of 2 */
	size_t payload_bytes_per_cpu; /* payload area per possible CPU; 0: the rest of a kernel budget of RAM/384
	                               * (12 to 64 MiB) over the CPUs, at least 2 MiB each (docs/protocol.md); rounded up to 1 MiB;
	                               * one pool of CPUs x this that any CPU may use all of */
	uint64_t wake_ns;            /* each CPU wakes the reader at most once per this; 0: 1 ms */
	int trace_self;              /* trace this process too (off: it would see its own output) */
	tb_event_fn on_event;        /* required by tb_poll/tb_consume; NULL for a tracer read
	                              * only with tb_poll_arrow/tb_consume_arrow */
	void *ctx;                   /* passed to on_event */
	/* Only tasks in these cgroup v2 directories or below them (at most 8):
	 * absolute inside the cgroup2 mount, or relative to its root; none: every
	 * cgroup. A bad path: TB_ERR_INVALID and a message saying why. */
	const char *const *cgroups;
	size_t ncgroups;
	/* Non-zero: right after attaching, one proc/snapshot event per process
	 * already running (those the filters select; with follow, the pids'
	 * existing descendants, then followed too), parents first, before any
	 * live event (docs/snapshot.md). */
	int snapshot;
	/* Non-zero: the reader thread builds Arrow record batches as events
	 * arrive; tb_poll_arrow/tb_consume_arrow hand them out as they are (the
	 * fastest way to columns). on_event must be NULL (else tb_open fails
	 * with TB_ERR_INVALID) (docs/columnar.md). */
	int arrow;
	/* Non-zero: the thread calling tb_poll/tb_consume runs as SCHED_IDLE
	 * while the queue holds less than a quarter of its bound, and at its
	 * own policy from then until the queue is down to an eighth, so a
	 * burst's writers keep their CPUs while the queue holds what is not
	 * consumed yet (needs CAP_SYS_NICE; threads and processes it starts
	 * while idle are idle too). The C example turns it on. */
	int yield_cpu;
};

struct tb_tracer;

/*
 * Checks privileges, BTF and tracefs (mounting tracefs at
 * /sys/kernel/tracing if it is not mounted), loads and verifies the BPF
 * program, applies the filters and attaches. On success *out is the tracer
 * and TB_OK is returned; otherwise *out is NULL, a negative tb_status is
 * returned and `errbuf` (if not NULL) holds a message saying what to do.
 */
int tb_open(const struct tb_options *opts, struct tb_tracer **out, char *errbuf, size_t errlen);

/*
 * Waits up to `timeout_ms` (-1: forever) for events and delivers them to the
 * callback. Returns the number delivered (possibly 0 on timeout or when a
 * signal interrupts the wait), TB_STOPPED if tb_stop() was called (then it
 * delivers nothing: see tb_consume), or a negative error (TB_ERR_INVALID
 * without an on_event callback).
 */
int tb_poll(struct tb_tracer *t, int timeout_ms);

/* Delivers the events already captured (queued, or in the kernel buffers)
 * without waiting, even after tb_stop(); a bounded batch per call, so a
 * producer that never pauses cannot hold the caller. Returns the number
 * delivered (0: nothing was captured) or a negative error. */
int tb_consume(struct tb_tracer *t);

/* Makes a running or future tb_poll() return TB_STOPPED, until tb_resume().
 * Async-signal-safe and callable from any thread (preserves errno), but not
 * concurrently with or after tb_close() of the same tracer. */
void tb_stop(struct tb_tracer *t);
/* Clears a tb_stop(). */
void tb_resume(struct tb_tracer *t);

/* A file descriptor for an external event loop (poll/epoll for reading, then
 * call tb_consume): readable while events are queued (the reader thread
 * queues them as the kernel wakes it, at most once per wake_ns per CPU).
 * Owned by the tracer. */
int tb_fd(const struct tb_tracer *t);

/* Replace filters while tracing (none: no filter of that kind). tb_set_pids
 * also forgets the children follow mode had added. */
int tb_set_pids(struct tb_tracer *t, const uint32_t *pids, size_t npids, char *errbuf, size_t errlen);
int tb_set_comms(struct tb_tracer *t, const char *const *comms, size_t ncomms, char *errbuf, size_t errlen);
int tb_set_cgroups(struct tb_tracer *t, const char *const *cgroups, size_t ncgroups, char *errbuf, size_t errlen);

/*
 * Arrow record batches, built by the Rust core (the columns of the Python
 * and Rust front ends' poll_arrow: header columns such as "event_id" (format
 * "L"), "event_type" (a dictionary), "timestamp" ("tsn:UTC"), "pid" ("I"),
 * then "payload.<field>" columns with their "_truncated", "_lost", "_size",
 * "_bytes" and "_name" companions, null where a row's event has no such
 * field; a write's "payload.content" is large binary, "Z").
 *
 * tb_arrow_schema() writes the tracer's schema: a struct ("+s") with one
 * child per column, the same for every batch of this tracer.
 *
 * tb_poll_arrow() is tb_poll() returning rows instead of calling back: it
 * waits up to `timeout_ms` (-1: forever) while nothing is queued, then
 * writes one batch of up to `max_events` events (0: up to 65536) as a
 * struct array of the schema's columns into `out` and returns its row
 * count: possibly 0 (a valid, empty batch) on timeout or when a signal
 * interrupts the wait. Like tb_poll(), it returns TB_STOPPED once tb_stop()
 * was called (also during the wait), until tb_resume(), and then hands out
 * nothing: tb_consume_arrow() is its tb_consume(), returning without
 * waiting the events already captured, even after tb_stop() (0 rows: none).
 * So stopping ends a reading loop at once, however busy the traced
 * processes are, and what was captured is still there to drain:
 *
 *     struct ArrowArray a;
 *     while (tb_poll_arrow(t, 100, 0, &a) >= 0) {   // TB_STOPPED after tb_stop()
 *         use(&schema, &a);
 *         a.release(&a);
 *     }
 *     while (tb_consume_arrow(t, 0, &a) > 0) {      // what is left
 *         use(&schema, &a);
 *         a.release(&a);
 *     }
 *     if (a.release)                                // the last, empty batch
 *         a.release(&a);
 *
 * Events a callback left undelivered (it returned non-zero) come first; the
 * rows count as `delivered` in tb_stats(). The callback is not called.
 *
 * Ownership (the C data interface's rules): the caller provides `out` (its
 * content on entry is ignored) and owns what is written there: it must call
 * out->release(out) once it is done with a schema or batch (whatever the row
 * count, 0 included), may move the struct elsewhere first, and may keep it
 * after tb_close(): the buffers belong to the batch, not the tracer. On
 * error and on TB_STOPPED, *out is released already (out->release == NULL),
 * so there is nothing to free. Same thread rule as tb_poll(); not from the
 * callback.
 */
int tb_arrow_schema(struct tb_tracer *t, struct ArrowSchema *out);
int tb_poll_arrow(struct tb_tracer *t, int timeout_ms, size_t max_events, struct ArrowArray *out);
int tb_consume_arrow(struct tb_tracer *t, size_t max_events, struct ArrowArray *out);

/* Every counter (the Rust core's). Kernel ones are the per-CPU `stats` map
 * summed over CPUs, indexed by enum tb_stat; named by tb_stat_name(). */
struct tb_stats {
	uint64_t kernel[TB_STAT_COUNT];
	uint64_t delivered;      /* events handed to the callback or in Arrow batches */
	uint64_t decode_errors;  /* malformed records (never expected) */
	uint64_t overwritten;    /* records whose payload was overwritten while read (never expected) */
	uint64_t seq_gaps;       /* records missing from a CPU's sequence (also counted by the kernel) */
	uint64_t discarded;      /* captured but never delivered (counted when the tracer closes) */
	uint64_t queued;         /* captured, waiting to be delivered */
	uint64_t cgroup_unresolved; /* events whose cgroup was gone before its path was found */
	/* The process snapshot (tb_options.snapshot, docs/snapshot.md): events
	 * made, their fields /proc no longer had, argv cut at argv_max,
	 * existing descendants followed, processes hidden from the task walk. */
	uint64_t snapshot_events;
	uint64_t snapshot_lost;
	uint64_t snapshot_truncated;
	uint64_t snapshot_followed;
	uint64_t snapshot_unseen;
};
int tb_stats(struct tb_tracer *t, struct tb_stats *out);
/* "records", "ring_full", ... for i < TB_STAT_COUNT; NULL otherwise. */
const char *tb_stat_name(unsigned i);

/* Possible CPUs the buffers were sized for. */
unsigned tb_ncpus(const struct tb_tracer *t);

/* The events this tracer is attached to: how many, and the i-th one's
 * descriptor (NULL if i is out of range). */
size_t tb_nevents(const struct tb_tracer *t);
const struct tb_event_desc *tb_event_at(const struct tb_tracer *t, size_t i);

/* Stops the reader thread and the programs (nothing more is recorded once it
 * returns; the counters are final) and frees the userspace resources; the
 * programs are detached and the kernel's resources freed by a release thread
 * right after (a tracer opened next waits for it; at exit the kernel does
 * it); more than 16 tracepoints are detached before it returns. NULL is
 * accepted. Not from the callback. */
void tb_close(struct tb_tracer *t);

/*
 * The event as one JSON line without newline, written by rs/json.rs (the
 * writer of every front end), also for events built by hand. snprintf-style: writes at most `size` bytes including a
 * terminating NUL and returns the full length (excluding the NUL); the
 * output is complete iff the result is < size.
 */
size_t tb_event_to_json(const struct tb_event *ev, char *buf, size_t size);

/* getline-style variant: (re)allocates *buf (free() it) so the whole line
 * fits; returns its length, or -1 (errno ENOMEM) if allocation failed. */
long tb_event_to_json_alloc(const struct tb_event *ev, char **buf, size_t *cap);

#ifdef __cplusplus
}
#endif

#endif /* TB_BOOTSTRAP_API_H */
