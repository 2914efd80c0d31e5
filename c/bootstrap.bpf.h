/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-side machinery shared by every event handler: filters, the 2-layer
 * buffers, counters. bootstrap.bpf.c includes this, defines one fill
 * function per event and ends with TB_DEFINE_HANDLERS().
 *
 * The 2-layer protocol (docs/protocol.md):
 *  - every event is one fixed-size struct tb_record in the `events` ring
 *    buffer: common header + the event's fixed fields; a small write
 *    content may follow it in the same ring sample (TB_VAR_INLINE);
 *  - variable bytes (write content, paths, argv) go to this CPU's region of
 *    the mmapped `payload` array, at logical positions [payload_pos,
 *    payload_pos + payload_len);
 *  - the consumer publishes how far it has read (tb_cpu_ctl.tail); the
 *    producer never writes past tail + region size, so a payload is never
 *    overwritten before it was read. What does not fit is not written, and
 *    is flagged in the field (TB_VAR_NO_SPACE) and counted (payload_full).
 */
#ifndef TB_BOOTSTRAP_BPF_H
#define TB_BOOTSTRAP_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bootstrap.gen.h>
#include <bootstrap-protocol.h>

#ifndef barrier_var /* libbpf < 1.0 headers */
#define barrier_var(var) asm volatile("" : "+r"(var))
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Copy loop bound: the largest variable field (1 MiB) in PIECE_MAX pieces,
 * plus one extra piece per chunk boundary it can cross. */
#define TB_MAX_PIECES ((1u << 20) / TB_PIECE_MAX + (1u << 20) / TB_CHUNK_SIZE + 2)
#define TB_SCRATCH_SIZE 8192 /* strings read in one helper call (PATH_MAX and more) */

/* Fixed at load time (rodata): payload area geometry and wake-up policy. */
const volatile __u32 tb_nchunks = 1;       /* payload chunks per CPU */
const volatile __u64 tb_wake_ns = 1000000; /* each CPU wakes the reader at most once per this */

struct tb_chunk {
	__u8 data[TB_CHUNK_ELEM_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized at load time */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* possible CPUs x tb_nchunks, set at load time */
	__type(key, __u32);
	__type(value, struct tb_chunk);
} payload SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* possible CPUs, set at load time */
	__type(key, __u32);
	__type(value, struct tb_cpu_ctl);
} cpu_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tb_config);
} cfg SEC(".maps");

/* Allocated as entries are added (not preallocated: 65,536 entries would
 * hold 5 MiB of kernel memory for a filter that is usually empty). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);  /* 1 = given by the caller, 2 = added by follow */
} pids SEC(".maps");

/* Processes never traced (cfg.exclude_pids): the readers of the tracer's
 * own output and those the caller names. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u32);   /* tgid */
	__type(value, __u8);
} excluded SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);   /* fd whose write content is captured */
	__type(value, __u8);
} content_fds SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TB_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

#define TB_IOV_MAX 1024  /* IOV_MAX: the kernel refuses a writev with more (EINVAL) */
/* Iovecs whose bytes writev content is copied from: the copy loop takes an
 * iteration per piece and per iovec, and the verifier walks every one (with
 * 1024 it gives up: "sequence of 8193 jumps is too complex"; each 64 more
 * cost about 0.05 s of start-up here). Content beyond them is cut, flagged
 * and counted like a cut at content_max. */
#define TB_IOV_COPY 64

struct tb_scratch {
	char buf[TB_SCRATCH_SIZE];
	/* Loop state kept in memory, not registers, so the verifier sees one
	 * state per loop iteration (see tb_append). */
	__u64 iov_idx;
	__u64 iov_off;
	__u64 list_len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tb_scratch);
} scratch SEC(".maps");

/* Room for an inline field after the record of events that have it (see
 * tb_inline_room in bootstrap.bpf.c). */
#define TB_INLINE_ROOM 64

/* State of one event being recorded. */
struct tb_ctx {
	struct tb_record *rec;
	struct tb_cpu_ctl *ctl;
	struct tb_config *cfg;
	struct task_struct *task;
	__u64 comm[TB_COMM_LEN / 8];
	__u64 inline_cap; /* room left after the record for an inline field */
	__u32 cpu;
};

static __always_inline void tb_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &stat);
	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

static __always_inline bool tb_comm_matches(const struct tb_comm_prefix *prefixes, __u32 n, const char *comm)
{
	for (int i = 0; i < TB_MAX_COMM_FILTERS; i++) {
		if (i >= n)
			break;
		__u32 len = prefixes[i].len;
		bool ok = true;
		for (int j = 0; j < TB_COMM_LEN; j++) {
			if (j >= len)
				break;
			if (comm[j] != prefixes[i].prefix[j]) {
				ok = false;
				break;
			}
		}
		if (ok)
			return true;
	}
	return false;
}

static __always_inline __u64 tb_upid(__u64 start_boottime, __u32 tgid)
{
	/* Start time since boot in units of 2^20 ns (about 1 ms; a shift, not a
	 * division, on every event), 42 bits (146 years), above the pid (22
	 * bits: pid_max is at most 2^22), so it does not wrap within a boot. */
	return ((start_boottime >> 20) << 22) | (tgid & ((1u << 22) - 1));
}

/* Filters: takes the CPU's region for this event, or returns false.
 * Helper calls are the expensive part of a handler (each is a call and a
 * return, and returns are costly under the kernel's return-stack
 * mitigations), so pid, tid and comm come from the task through its BTF
 * pointer (plain CO-RE loads) rather than one helper each. */
static __always_inline bool tb_filter(struct tb_ctx *t)
{
	__u32 zero = 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tgid = task->tgid; /* as bpf_get_current_pid_tgid */

	t->task = task;
	t->cfg = bpf_map_lookup_elem(&cfg, &zero);
	if (!t->cfg)
		return false;
	if (t->cfg->self_tgid && tgid == t->cfg->self_tgid) /* 0: trace_self (pid 0 is the idle task) */
		return false;
	if (t->cfg->pid_filter && !bpf_map_lookup_elem(&pids, &tgid))
		return false;
	if (t->cfg->exclude_pids && bpf_map_lookup_elem(&excluded, &tgid))
		return false;
	/* Two 8-byte loads; the kernel keeps comm NUL-terminated. */
	__builtin_memcpy(t->comm, task->comm, TB_COMM_LEN);
	if (t->cfg->ncomm && !tb_comm_matches(t->cfg->comm, t->cfg->ncomm, (const char *)t->comm))
		return false;
	if (t->cfg->nexclude_comm && tb_comm_matches(t->cfg->exclude_comm, t->cfg->nexclude_comm, (const char *)t->comm))
		return false;

	t->cpu = bpf_get_smp_processor_id();
	t->ctl = bpf_map_lookup_elem(&cpu_ctl, &t->cpu);
	if (!t->ctl)
		return false;
	/* Handlers of tracepoint programs do not nest on a CPU (the kernel's
	 * bpf_prog_active guard); if one ever did, it must not write into the
	 * region another handler is filling. A nested handler runs to its end
	 * between two instructions of the one it interrupts, so a plain flag
	 * tells them apart (no locked instruction needed). */
	if (t->ctl->busy) {
		tb_count(TB_STAT_BUSY);
		return false;
	}
	t->ctl->busy = 1;
	return true;
}

/* Reserves the ring record, followed by TB_INLINE_ROOM bytes for an inline
 * field if `inline_room` (a constant per handler, so one path each: a
 * record size chosen at run time would make the verifier walk the rest of
 * the handler once per size), and fills the common header. */
static __always_inline bool tb_reserve(struct tb_ctx *t, __u32 event_type, bool inline_room)
{
	struct tb_record *r;
	__u64 seq = ++t->ctl->seq;
	if (inline_room) {
		r = bpf_ringbuf_reserve(&events, sizeof(*r) + TB_INLINE_ROOM, 0);
		t->inline_cap = TB_INLINE_ROOM;
	} else {
		r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
		t->inline_cap = 0;
	}
	if (!r) {
		tb_count(TB_STAT_RING_FULL);
		t->ctl->busy = 0;
		return false;
	}
	struct task_struct *task = t->task;
	struct task_struct *parent = task->real_parent;
	__u32 tgid = task->tgid;
	r->event_type = event_type;
	r->cpu = t->cpu;
	r->seq = seq;
	r->timestamp_ns = bpf_ktime_get_boot_ns();
	r->pid = tgid;
	r->tid = task->pid;
	r->ppid = parent->tgid;
	r->flags = 0;
	r->upid = tb_upid(task->group_leader->start_boottime, tgid);
	r->uppid = tb_upid(parent->group_leader->start_boottime, r->ppid);
	__builtin_memcpy(r->comm, t->comm, TB_COMM_LEN);
	r->payload_pos = t->ctl->head;
	r->payload_len = 0;
	r->inline_len = 0;
	__builtin_memset(r->fixed, 0, TB_FIXED_SLOT_SIZE);
	t->rec = r;
	return true;
}

/* Publishes the record. Wakes the reader at most once per tb_wake_ns per CPU:
 * a wake-up is a self-interrupt (costly in a VM), and one per event
 * dominates the cost on small machines. Records in between are read by the
 * next wake-up or the reader's own poll timeout (bounded latency). */
static __always_inline void tb_end(struct tb_ctx *t)
{
	struct tb_record *r = t->rec;
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 now = r->timestamp_ns;

	r->payload_len = (__u32)(t->ctl->head - r->payload_pos);
	if (now - t->ctl->last_wake_ns >= tb_wake_ns) {
		flags = BPF_RB_FORCE_WAKEUP;
		t->ctl->last_wake_ns = now;
	}
	tb_count(TB_STAT_RECORDS);
	bpf_ringbuf_submit(r, flags);
	t->ctl->busy = 0;
}

/* Room in this CPU's region for `need` more bytes, given the consumer's tail.
 * The tail's cache line belongs to the consumer (it writes it after every
 * payload): reading it on every event would pull that line across CPUs each
 * time. The last value read is kept on the producer's own line instead, and
 * the real tail is read only when that stale value (never ahead of the real
 * one) does not leave room. */
static __always_inline bool tb_room(struct tb_ctx *t, __u64 need)
{
	__u64 region = (__u64)tb_nchunks * TB_CHUNK_SIZE;
	__u64 head = t->ctl->head;
	if (head + need - t->ctl->seen_tail <= region)
		return true;
	__u64 tail = *(volatile __u64 *)&t->ctl->tail;
	t->ctl->seen_tail = tail;
	return head + need - tail <= region;
}

/* The copy loop is bounded for the largest variable field. */
#define TB_VAR_CEILING (1u << 20)

/*
 * Starts variable field `v` of `size` original bytes, at most `max` of them
 * kept: flags a cut, and checks the payload area has room for what will be
 * copied (all or nothing: a field is never delivered partly for lack of
 * room). Returns how many bytes to copy with tb_append (0: none).
 */
static __always_inline __u64 tb_var_start(struct tb_ctx *t, struct tb_var *v, __u64 size, __u64 max)
{
	if (max > TB_VAR_CEILING)
		max = TB_VAR_CEILING;
	__u64 want = size < max ? size : max;

	v->size = size;
	v->len = 0;
	if (want < size) {
		v->flags |= TB_VAR_TRUNCATED;
		tb_count(TB_STAT_TRUNCATED);
	}
	if (want && want <= t->inline_cap) { /* rides in the ring sample */
		v->flags |= TB_VAR_INLINE;
		return want;
	}
	if (want && !tb_room(t, want)) {
		v->flags |= TB_VAR_NO_SPACE;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_PAYLOAD_FULL);
		return 0;
	}
	return want;
}

/*
 * Appends one piece of at most `n` bytes from `src` (user memory if `user`,
 * else the per-CPU scratch) to `v`: no more than TB_PIECE_MAX and never across
 * a chunk boundary, so it is a single bounded helper call. Room was checked
 * by tb_var_start. Returns the bytes appended; 0 on a fault (the field keeps
 * the bytes before it and is flagged TB_VAR_FAULT).
 */
static __always_inline __u64 tb_piece(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 pos = t->ctl->head;
	__u32 off = pos & (TB_CHUNK_SIZE - 1);
	__u32 idx = t->cpu * tb_nchunks + (__u32)((pos / TB_CHUNK_SIZE) % tb_nchunks);
	__u64 k = n;
	if (k > TB_CHUNK_SIZE - off)
		k = TB_CHUNK_SIZE - off;
	if (k > TB_PIECE_MAX)
		k = TB_PIECE_MAX;
	struct tb_chunk *c = bpf_map_lookup_elem(&payload, &idx);
	if (!c)
		return 0;
	/* Reserve, then write: a reader checking `head` after its copy sees
	 * any writer that could have touched its bytes. */
	t->ctl->head = pos + k;
	long err = user ? bpf_probe_read_user(&c->data[off & (TB_CHUNK_SIZE - 1)], k, src)
			: bpf_probe_read_kernel(&c->data[off & (TB_CHUNK_SIZE - 1)], k, src);
	if (err) {
		t->ctl->head = pos; /* nothing of this piece was delivered */
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return 0;
	}
	v->len += (__u32)k;
	return k;
}

/*
 * Appends `n` bytes from `src` to `v` in pieces (see tb_piece). Returns
 * false on a fault.
 */
static __always_inline bool tb_append(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 base = *(volatile __u32 *)&v->len;
	__u64 end = base + n;

	for (__u32 i = 0; i < TB_MAX_PIECES; i++) {
		/* Progress is re-read from the record each time rather than kept in
		 * a register: the verifier then sees the same (unknown) state at
		 * every iteration and prunes, instead of walking each distinct
		 * byte count separately. */
		__u64 done = *(volatile __u32 *)&v->len;
		if (done >= end)
			break;
		/* Kernel copies only come from the per-CPU scratch (strings): the
		 * mask lets the verifier bound the pointer arithmetic on it. */
		const void *from = user ? src + (done - base) : src + ((done - base) & (TB_SCRATCH_SIZE - 1));
		if (!tb_piece(t, v, from, end - done, user))
			return false;
	}
	return true;
}

/* Copies the `n` bytes of inline field `v` (tb_var_start said it fits)
 * right after the record, in one helper call. */
static __always_inline void tb_inline(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	__u64 k = n;
	if (k > t->inline_cap)
		k = t->inline_cap;
	long err = user ? bpf_probe_read_user(t->rec + 1, k, src) : bpf_probe_read_kernel(t->rec + 1, k, src);
	if (err) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	t->rec->inline_len = (__u32)k;
	v->len = (__u32)k;
}

/* Puts the `n` bytes tb_var_start granted for `v`: inline, or in pieces
 * into the payload area. Kept apart so that the verifier walks the piece
 * loop once, not once per placement. */
static __always_inline void tb_put(struct tb_ctx *t, struct tb_var *v, const void *src, __u64 n, bool user)
{
	if (v->flags & TB_VAR_INLINE)
		tb_inline(t, v, src, n, user);
	else
		tb_append(t, v, src, n, user);
}

/* Copies `size` bytes at `src` into variable field `v`, at most `max`. */
static __always_inline void tb_copy(struct tb_ctx *t, struct tb_var *v, const void *src,
				    __u64 size, __u64 max, bool user)
{
	__u64 n = tb_var_start(t, v, size, max);
	if (n)
		tb_put(t, v, src, n, user);
}

/* Copies bytes from user memory into variable field `v`. */
static __always_inline void tb_copy_user(struct tb_ctx *t, struct tb_var *v, const void *src,
					 __u64 size, __u64 max)
{
	tb_copy(t, v, src, size, max, true);
}

/*
 * Copies a NUL-terminated string (user or kernel memory; at most `max`
 * bytes, the NUL not stored) into variable field `v`. It is read whole into
 * per-CPU scratch first, so its length is known before it goes to the
 * payload area; reading max + 1 characters tells a string of exactly `max`
 * bytes from a longer one.
 */
static __always_inline void tb_copy_str(struct tb_ctx *t, struct tb_var *v, const char *src, __u64 max, bool user)
{
	__u32 zero = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	if (max > TB_SCRATCH_SIZE - 2)
		max = TB_SCRATCH_SIZE - 2;
	long n = user ? bpf_probe_read_user_str(s->buf, max + 2, src) : bpf_probe_read_kernel_str(s->buf, max + 2, src);
	if (n < 0) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	__u64 len = n > 0 ? n - 1 : 0; /* without the NUL */
	__u64 size = len;
	if (len > max) {
		size = 0; /* longer than max: original length unknown */
		len = max;
	}
	if (tb_var_start(t, v, len, max))
		tb_put(t, v, s->buf, len & (TB_SCRATCH_SIZE - 1), false);
	if (size == 0 && len == max) {
		v->flags |= TB_VAR_TRUNCATED;
		tb_count(TB_STAT_TRUNCATED);
	}
	v->size = size;
}

/* A user string into variable field `v`. */
static __always_inline void tb_copy_user_str(struct tb_ctx *t, struct tb_var *v, const char *src, __u64 max)
{
	tb_copy_str(t, v, src, max, true);
}

#define TB_LIST_CUT (1ull << 32)
#define TB_LIST_FAULT (1ull << 33)

/*
 * Gathers the NULL-terminated array of user strings at `src` (argv, envp) in
 * the per-CPU scratch, each string followed by its NUL, at most
 * TB_GENERIC_LIST_STRS strings and TB_GENERIC_LIST_BYTES bytes (a string
 * crossing the limit is cut there). Returns the bytes gathered, | TB_LIST_CUT
 * if some were left out, | TB_LIST_FAULT if reading user memory failed. A
 * global function: the verifier walks its loop once, not once per call site.
 */
__noinline __u64 tb_gather_str_list(__u64 src)
{
	__u32 zero = 0;
	__u64 cut = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return TB_LIST_FAULT;
	s->list_len = 0;
	for (__u32 i = 0; i <= TB_GENERIC_LIST_STRS; i++) {
		/* Progress in memory, not a register (see tb_append). */
		__u64 off = *(volatile __u64 *)&s->list_len;
		const char *str = NULL;
		if (bpf_probe_read_user(&str, sizeof(str), (const void *)(src + i * sizeof(str))))
			return off | TB_LIST_FAULT;
		if (!str)
			break;
		if (i == TB_GENERIC_LIST_STRS || off >= TB_GENERIC_LIST_BYTES)
			return off | TB_LIST_CUT;
		off &= TB_GENERIC_LIST_BYTES - 1;
		__u64 room = TB_GENERIC_LIST_BYTES - off;
		/* room + 2: tells a string of exactly `room` bytes (kept whole,
		 * without its NUL) from a longer one (cut). */
		long n = bpf_probe_read_user_str(&s->buf[off], room + 2, str);
		if (n < 0)
			return off | TB_LIST_FAULT;
		if ((__u64)n > room + 1)
			return (off + room) | TB_LIST_CUT;
		s->list_len = off + ((__u64)n > room ? room : (__u64)n);
	}
	return *(volatile __u64 *)&s->list_len;
}

/* The array of user strings at `src` into variable field `v` (see
 * tb_gather_str_list). */
static __always_inline void tb_copy_user_str_list(struct tb_ctx *t, struct tb_var *v, __u64 src)
{
	__u32 zero = 0;
	__u64 r = tb_gather_str_list(src);
	__u64 len = r & 0xffffffff;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	if (len > TB_GENERIC_LIST_BYTES)
		len = TB_GENERIC_LIST_BYTES;
	if (tb_var_start(t, v, len, TB_GENERIC_LIST_BYTES))
		tb_put(t, v, s->buf, len & (TB_SCRATCH_SIZE - 1), false);
	if (r & TB_LIST_CUT) {
		v->flags |= TB_VAR_TRUNCATED;
		v->size = 0; /* the whole array's size is not known */
		tb_count(TB_STAT_TRUNCATED);
	}
	if (r & TB_LIST_FAULT) {
		v->flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
	}
}

/* Marks variable field `v` as not selected for capture (`size` bytes). */
static __always_inline void tb_skip(struct tb_var *v, __u64 size)
{
	v->flags |= TB_VAR_NOT_CAPTURED;
	v->size = size;
}

/* Marks variable field `v` as having no bytes, for reason `why`
 * (TB_VAR_NULL_POINTER, TB_VAR_UNAVAILABLE). */
static __always_inline void tb_none(struct tb_var *v, __u32 why)
{
	v->flags |= why;
	v->size = 0;
}

/* Is write content captured for this fd? */
static __always_inline bool tb_content_fd(struct tb_ctx *t, __s64 fd)
{
	if (fd < 0)
		return false;
	if (t->cfg->all_fds)
		return true;
	if (fd < 64) /* a bit test instead of a hash lookup for the usual fds */
		return (t->cfg->fd_mask >> fd) & 1;
	__u32 key = (__u32)fd;
	return bpf_map_lookup_elem(&content_fds, &key) != NULL;
}

/* Follow mode: children of traced processes are traced too. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tb_follow_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 zero = 0;
	struct tb_config *c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c || !c->follow)
		return 0;
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ptgid == ctgid || !bpf_map_lookup_elem(&pids, &ptgid))
		return 0;
	__u8 mark = 2;
	if (bpf_map_update_elem(&pids, &ctgid, &mark, BPF_NOEXIST) == 0)
		tb_count(TB_STAT_FOLLOWED);
	return 0;
}

/* Expands one handler per TB_TRACEPOINT_LIST entry; each calls the event's
 * fill function, which writes its fixed fields and copies its variable ones. */
#define TB_HANDLER(cat, tp, ctx_type, id, optional)                                  \
	SEC("tp/" #cat "/" #tp)                                                      \
	int handle__##cat##__##tp(struct ctx_type *ctx)                              \
	{                                                                            \
		struct tb_ctx t;                                                     \
		if (!tb_filter(&t) || !tb_reserve(&t, id, tb_inline_room(id)))      \
			return 0;                                                    \
		fill_##cat##__##tp(ctx, &t, (struct tb_payload_##cat##__##tp *)t.rec->fixed); \
		tb_end(&t);                                                          \
		return 0;                                                            \
	}
#define TB_DEFINE_HANDLERS() TB_TRACEPOINT_LIST(TB_HANDLER)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); /* the generic tracepoints asked for, set at load time */
	__type(key, __u32); /* tracefs ID (common_type) */
	__type(value, struct tb_generic_desc);
} generic_desc SEC(".maps");

/*
 * Any tracepoint: attached by userspace to each requested tracepoint that has
 * no typed event. Records the raw tracepoint record (fixed fields and the
 * __data_loc data after them, at most cfg->generic_max bytes) and the user
 * strings that pointer fields of syscall events point to.
 */
SEC("tp")
int handle__generic(void *ctx)
{
	/* The attach cookie is the tracefs ID: the record's own common_type is
	 * not usable here (perf stores a pt_regs pointer over it for BPF). */
	__u32 type = (__u32)bpf_get_attach_cookie(ctx);
	__u32 zero = 0;
	struct tb_generic_desc *d = bpf_map_lookup_elem(&generic_desc, &type);
	if (!d)
		return 0;
	struct tb_ctx t;
	if (!tb_filter(&t) || !tb_reserve(&t, type, false))
		return 0;
	struct tb_generic_payload *p = (struct tb_generic_payload *)t.rec->fixed;
	t.rec->flags |= TB_REC_GENERIC;

	__u64 size = d->raw_size;
	for (int i = 0; i < TB_GENERIC_MAX_DATALOC; i++) {
		if (i >= d->ndataloc)
			break;
		__u32 loc = 0;
		bpf_probe_read_kernel(&loc, sizeof(loc), ctx + (d->dataloc_off[i] & 0x7ff));
		__u64 end = (loc & 0xffff) + (loc >> 16);
		if (end > size)
			size = end;
	}
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (s) {
		__u64 max = t.cfg->generic_max;
		if (max > TB_SCRATCH_SIZE - 2)
			max = TB_SCRATCH_SIZE - 2;
		__u64 n = size < max ? size : max;
		/* Keep the mask: clang would drop it (it knows n <= max), and
		 * verifiers before 6.8 learn no bound from `size < max`. */
		barrier_var(n);
		n &= TB_SCRATCH_SIZE - 1;
		if (bpf_probe_read_kernel(s->buf, n, ctx) == 0) {
			if (tb_var_start(&t, &p->raw, size, max))
				tb_put(&t, &p->raw, s->buf, n, false);
		} else {
			p->raw.flags |= TB_VAR_FAULT;
			tb_count(TB_STAT_FAULT);
		}
	}
	for (int i = 0; i < TB_GENERIC_MAX_STRS; i++) {
		if (i >= d->nstr)
			break;
		__u64 ptr = 0;
		bpf_probe_read_kernel(&ptr, sizeof(ptr), ctx + (d->str_off[i] & 0x7ff));
		if (ptr && (d->str_list >> i & 1))
			tb_copy_user_str_list(&t, &p->str[i], ptr);
		else if (ptr)
			tb_copy_user_str(&t, &p->str[i], (const char *)ptr, 4096);
		else
			tb_none(&p->str[i], TB_VAR_NULL_POINTER);
	}
	tb_end(&t);
	return 0;
}

#endif /* TB_BOOTSTRAP_BPF_H */
