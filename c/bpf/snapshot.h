/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The process snapshot (snapshot=True): a task iterator that writes one
 * fixed record per process (thread-group leader) to the iterator's file.
 * Userspace reads it once, right after attaching, adds what only /proc has
 * (exe, argv, cwd) and makes one proc/snapshot event of each. Read here,
 * not from /proc/<pid>/stat, because upid must be exactly what live events
 * carry: tb_upid of the start time in ns, which /proc gives in clock ticks.
 * Loaded only when a snapshot is asked for, and never attached to a hook:
 * userspace creates an iterator link, reads it and closes it.
 */
#ifndef TB_BPF_SNAPSHOT_H
#define TB_BPF_SNAPSHOT_H

#include "filter.h"

#define TB_PF_KTHREAD 0x00200000 /* task->flags: a kernel thread (include/linux/sched.h) */
#define TB_SNAP_KTHREAD 0x1u     /* tb_snap_rec.flags */

/* One process. Every field naturally aligned: rs/snapshot/record.rs reads
 * it at these offsets (asserted below). */
struct tb_snap_rec {
	__u64 upid;        /* tb_upid(start, pid), as live events */
	__u64 uppid;       /* the real parent's, same scheme */
	__u64 start_ns;    /* start_boottime in ns: the parents-first order */
	__u64 cgroup_id;   /* cgroup v2 id: the inode of its cgroup's directory */
	__u32 pid;         /* tgid */
	__u32 ppid;        /* real_parent's tgid */
	__u32 ns_pid;      /* the pid in its own pid namespace */
	__u32 uid;         /* real uid (objective credentials) */
	__u32 gid;         /* real gid */
	__u32 flags;       /* TB_SNAP_* */
	__u32 cpu;         /* CPU the iterator ran on */
	__u32 _pad;
	char comm[TB_COMM_LEN];
};
_Static_assert(sizeof(struct tb_snap_rec) == 80, "tb_snap_rec size");
_Static_assert(__builtin_offsetof(struct tb_snap_rec, pid) == 32, "tb_snap_rec.pid");
_Static_assert(__builtin_offsetof(struct tb_snap_rec, comm) == 64, "tb_snap_rec.comm");

/* The pid of `p` as its innermost namespace sees it: numbers[level].nr.
 * Offsets are relocated (CO-RE): struct pid's layout differs between
 * kernels and with PREEMPT_RT (its spinlock). */
static __always_inline __u32 tb_ns_pid(struct pid *p)
{
	__u32 level = BPF_CORE_READ(p, level);
	int nr = 0;
	__u64 off = bpf_core_field_offset(struct pid, numbers) + (__u64)(level & 63) * bpf_core_type_size(struct upid) +
		    bpf_core_field_offset(struct upid, nr);
	bpf_probe_read_kernel(&nr, sizeof(nr), (void *)p + off);
	return (__u32)nr;
}

SEC("iter/task")
int tb_snapshot(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct tb_snap_rec r = {};

	if (!task)
		return 0;
	r.pid = BPF_CORE_READ(task, tgid);
	if (BPF_CORE_READ(task, pid) != r.pid)
		return 0; /* one record per process: its leader */
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	r.ppid = BPF_CORE_READ(parent, tgid);
	r.start_ns = BPF_CORE_READ(task, start_boottime);
	r.upid = tb_upid(r.start_ns, r.pid);
	r.uppid = tb_upid(BPF_CORE_READ(parent, group_leader, start_boottime), r.ppid);
	r.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	r.ns_pid = tb_ns_pid(BPF_CORE_READ(task, thread_pid));
	r.uid = BPF_CORE_READ(task, real_cred, uid.val);
	r.gid = BPF_CORE_READ(task, real_cred, gid.val);
	if (BPF_CORE_READ(task, flags) & TB_PF_KTHREAD)
		r.flags |= TB_SNAP_KTHREAD;
	r.cpu = bpf_get_smp_processor_id();
	BPF_CORE_READ_INTO(&r.comm, task, comm);
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}

#endif /* TB_BPF_SNAPSHOT_H */
