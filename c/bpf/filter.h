/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Filters, run before anything is copied: pids, exclusions, comm prefixes,
 * and which fds' write content is captured.
 */
#ifndef TB_BPF_FILTER_H
#define TB_BPF_FILTER_H

#include "maps.h"

/* 0xff in each byte of `w` that is not NUL, 0 in the others (no branch:
 * the high bit of each byte is set if any of its bits is). */
static __always_inline __u64 tb_nonzero_bytes(__u64 w)
{
	const __u64 low7 = 0x7f7f7f7f7f7f7f7full;
	__u64 high = (((w & low7) + low7) | w) & ~low7;
	return (high >> 7) * 0xff;
}

/* Does comm (two words, NUL padded) start with one of the first n prefixes?
 * A prefix is NUL padded and holds no NUL (userspace refuses one), so its
 * own bytes are its non-NUL ones: two masked word compares a prefix, without
 * a branch inside. A byte loop here took the verifier about 4,500 instructions
 * in every handler; this takes a few hundred. */
static __always_inline bool tb_comm_matches(const struct tb_comm_prefix *prefixes, __u32 n, const __u64 *comm)
{
	for (int i = 0; i < TB_MAX_COMM_FILTERS; i++) {
		if (i >= n)
			break;
		__u64 w0, w1;
		__builtin_memcpy(&w0, prefixes[i].prefix, 8);
		__builtin_memcpy(&w1, prefixes[i].prefix + 8, 8);
		if (!(((comm[0] ^ w0) & tb_nonzero_bytes(w0)) | ((comm[1] ^ w1) & tb_nonzero_bytes(w1))))
			return true;
	}
	return false;
}

/* Whether the current task is in one of the first n cgroups of the filter
 * or below one (its cgroup v2, the default hierarchy's). One helper call
 * per slot, made only when the cgroup filter is on. */
static __always_inline bool tb_cgroup_matches(__u32 n)
{
	for (__u32 i = 0; i < TB_MAX_CGROUP_FILTERS; i++) {
		if (i >= n)
			break;
		if (bpf_current_task_under_cgroup(&cgroups, i) == 1)
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

/* The current task as a read-only (untrusted) BTF pointer where the kernel
 * has bpf_rdonly_cast (6.2+): the header's pointer chains (parent, group
 * leader, pid, cgroup) are then plain loads the verifier accepts without
 * asking, field by field, whether the pointer they yield is trusted; on 6.18
 * each of those questions is a search of the kernel's BTF by name, most of
 * the time a handler takes to load. The loads are the same instructions at
 * run time. 6.1 has no such question to ask, and no kfunc: the trusted
 * pointer there. */
static __always_inline struct task_struct *tb_current_task(void)
{
	if (bpf_ksym_exists(bpf_rdonly_cast))
		return bpf_core_cast((void *)bpf_get_current_task(), struct task_struct);
	return bpf_get_current_task_btf();
}

/* Filters: takes the CPU's payload stream for this event, or returns false.
 * Helper calls are the expensive part of a handler (each is a call and a
 * return, and returns are costly under the kernel's return-stack
 * mitigations), so pid, tid and comm come from the task through its BTF
 * pointer (plain CO-RE loads) rather than one helper each. */
static __always_inline bool tb_filter(struct tb_ctx *t)
{
	__u32 zero = 0;
	struct task_struct *task = tb_current_task();
	__u32 tgid = task->tgid; /* as bpf_get_current_pid_tgid */

	t->task = task;
	t->cfg = bpf_map_lookup_elem(&cfg, &zero);
	if (!t->cfg || t->cfg->stopped)
		return false;
	if (t->cfg->self_tgid && tgid == t->cfg->self_tgid) /* 0: trace_self (pid 0 is the idle task) */
		return false;
	if (t->cfg->pid_filter && !bpf_map_lookup_elem(&pids, &tgid))
		return false;
	if (t->cfg->exclude_pids && bpf_map_lookup_elem(&excluded, &tgid))
		return false;
	/* Two 8-byte loads; the kernel keeps comm NUL-terminated. */
	__builtin_memcpy(t->comm, task->comm, TB_COMM_LEN);
	if (t->cfg->ncomm && !tb_comm_matches(t->cfg->comm, t->cfg->ncomm, t->comm))
		return false;
	if (t->cfg->nexclude_comm && tb_comm_matches(t->cfg->exclude_comm, t->cfg->nexclude_comm, t->comm))
		return false;
	/* Last: helper calls, one per cgroup, after the plain loads above. */
	if (t->cfg->ncgroup && !tb_cgroup_matches(t->cfg->ncgroup))
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

#endif /* TB_BPF_FILTER_H */
