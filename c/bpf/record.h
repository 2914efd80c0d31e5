/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The ring record of one event: reserved, filled, published (with the
 * reader's wake-up policy), and the flow control of the payload area.
 */
#ifndef TB_BPF_RECORD_H
#define TB_BPF_RECORD_H

#include "maps.h"

/* The task's cgroup v2 id and its ids in its own pid namespace. Plain CO-RE
 * loads through the task's BTF pointer (no helper call) on the common path:
 * the cgroup id is the kernfs node id of the task's cgroup on the default
 * hierarchy (what bpf_get_current_cgroup_id() returns, without the call).
 * Only a task in a child pid namespace (level > 0) pays for the reads of its
 * own-namespace numbers: numbers[] is indexed by the level, and a variable
 * index needs bpf_probe_read_kernel. */
static __always_inline void tb_task_context(struct tb_record *r, struct task_struct *task)
{
	struct pid *tpid = task->thread_pid;
	unsigned int level = tpid->level;

	r->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	if (level == 0) {
		r->ns_pid = r->pid;
		r->ns_tid = r->tid;
		return;
	}
	struct pid *gpid = task->group_leader->thread_pid;
	r->ns_tid = BPF_CORE_READ(tpid, numbers[level].nr);
	r->ns_pid = BPF_CORE_READ(gpid, numbers[level].nr);
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
	tb_task_context(r, task);
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

#endif /* TB_BPF_RECORD_H */
