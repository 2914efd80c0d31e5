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

/* A search of the pool for a free chunk (bpf_loop state). */
struct tb_claim {
	__u32 start; /* first entry looked at */
	__u32 found; /* the chunk taken + 1; 0: none yet */
};

static long tb_claim_step(__u64 i, void *ctx)
{
	struct tb_claim *c = ctx;
	__u32 idx = (c->start + (__u32)i) % tb_pool_chunks;
	__u64 *owner = bpf_map_lookup_elem(&chunk_owner, &idx);

	if (!owner)
		return 1;
	/* A plain read first: a locked instruction only on a likely winner. */
	if (*(volatile __u64 *)owner == 0 && __sync_val_compare_and_swap(owner, 0, 1) == 0) {
		c->found = idx + 1;
		return 1;
	}
	return 0;
}

/*
 * Takes a free chunk of the shared pool for this CPU. Returns its index + 1,
 * 0 if every chunk is held. `used` is raised first, so a search starts only
 * when a chunk is free; the search starts after the last chunk taken, where
 * the consumer, which frees chunks in the order they were taken, has most
 * likely left one. Two rounds: a chunk freed behind the search while another
 * CPU takes the one ahead of it is found in the second.
 */
static __always_inline __u32 tb_claim_chunk(void)
{
	__u32 zero = 0;
	struct tb_pool *p = bpf_map_lookup_elem(&pool, &zero);

	if (!p)
		return 0;
	if (__sync_fetch_and_add(&p->used, 1) >= tb_pool_chunks) {
		__sync_fetch_and_add(&p->used, -1);
		return 0;
	}
	struct tb_claim c = { .start = (__u32)p->hint, .found = 0 };
	bpf_loop(2 * tb_pool_chunks, tb_claim_step, &c, 0);
	if (!c.found) {
		__sync_fetch_and_add(&p->used, -1);
		return 0;
	}
	p->hint = c.found; /* the entry after it (mod the pool) */
	return c.found;
}

/*
 * Room in this CPU's stream for `need` (at most TB_CHUNK_SIZE) more bytes:
 * the logical chunks up to head + need must have pool chunks. Crossing into
 * a chunk not yet mapped takes one from the pool, if this CPU holds fewer
 * than tb_slots (the chunks from the one holding the consumer's tail on;
 * the consumer frees those it has passed). The tail's cache line belongs to
 * the consumer, so it is read only then, once per chunk.
 */
static __always_inline bool tb_room(struct tb_ctx *t, __u64 need)
{
	__u64 end = t->ctl->head + need;
	__u64 mapped = t->ctl->mapped;

	if (end <= mapped * TB_CHUNK_SIZE)
		return true;
	__u64 tail = *(volatile __u64 *)&t->ctl->tail;
	if (mapped - tail / TB_CHUNK_SIZE >= tb_slots)
		return false;
	__u32 got = tb_claim_chunk();
	if (!got)
		return false;
	__u32 slot = t->cpu * tb_slots + (__u32)(mapped % tb_slots);
	__u64 *s = bpf_map_lookup_elem(&chunk_slot, &slot);
	if (!s)
		return false; /* not reached: slot < possible CPUs x tb_slots */
	*s = got - 1;
	t->ctl->mapped = mapped + 1;
	/* need <= TB_CHUNK_SIZE and head <= mapped x TB_CHUNK_SIZE: one more
	 * chunk is always enough. */
	return end <= (mapped + 1) * TB_CHUNK_SIZE;
}

#endif /* TB_BPF_RECORD_H */
