/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The maps of the 2-layer protocol (ring buffer, payload area, control
 * blocks), the filter and counter maps, load-time constants, and the state
 * of one event being recorded.
 */
#ifndef TB_BPF_MAPS_H
#define TB_BPF_MAPS_H

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
const volatile __u32 tb_pool_chunks = 2;   /* payload chunks, shared by all CPUs */
const volatile __u32 tb_slots = 2;         /* chunks one CPU may hold at once */
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
	__uint(max_entries, 1); /* tb_pool_chunks, set at load time */
	__type(key, __u32);
	__type(value, struct tb_chunk);
} payload SEC(".maps");

/* Per pool chunk: 1 while a CPU holds it, 0 when free. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* tb_pool_chunks, set at load time */
	__type(key, __u32);
	__type(value, __u64);
} chunk_owner SEC(".maps");

/* Per CPU, tb_slots entries: the pool chunk of logical chunk L of that
 * CPU's stream is entry cpu x tb_slots + L % tb_slots. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1); /* possible CPUs x tb_slots, set at load time */
	__type(key, __u32);
	__type(value, __u64);
} chunk_slot SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tb_pool);
} pool SEC(".maps");

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

/* The cgroup filter (cfg.ncgroup slots in use): cgroup v2 directories,
 * written by userspace as fds; the kernel keeps a reference to each cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, TB_MAX_CGROUP_FILTERS);
	__type(key, __u32);
	__type(value, __u32);
} cgroups SEC(".maps");

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

struct tb_scratch {
	char buf[TB_SCRATCH_SIZE];
	/* Loop state kept in memory, not registers, so the verifier sees one
	 * state per loop iteration (see tb_append). */
	__u64 iov_idx; /* writev's copy: the iovec being copied */
	__u64 iov_off; /* and the bytes of it copied */
	__u64 list_len;
	__u64 path_pos; /* start of the path being built (bpf/path.h) */
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

#endif /* TB_BPF_MAPS_H */
