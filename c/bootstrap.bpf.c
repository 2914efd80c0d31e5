// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * One fill function per event of typegen/events.toml. A fill function writes
 * the event's fixed fields into `p` (struct tb_payload_<category>__<tracepoint>,
 * generated) and copies variable fields with tb_copy_user / tb_copy_str /
 * tb_append. Everything else (maps, filters, the record header, handlers)
 * lives in bootstrap.bpf.h.
 */
#include "bootstrap.bpf.h"


/* write(2): content of the selected fds, binary safe. */
static __always_inline void
fill_syscalls__sys_enter_write(struct syscall_trace_enter *ctx, struct tb_ctx *t,
			       struct tb_payload_syscalls__sys_enter_write *p)
{
	p->fd = (__s32)ctx->args[0];
	p->count = ctx->args[2];
	if (tb_content_fd(t, p->fd))
		tb_copy_user(t, &p->content, (const void *)ctx->args[1], p->count, t->cfg->content_max);
	else
		tb_skip(&p->content, p->count);
}

/* pwrite64(2): like write, at a file position. */
static __always_inline void
fill_syscalls__sys_enter_pwrite64(struct syscall_trace_enter *ctx, struct tb_ctx *t,
				  struct tb_payload_syscalls__sys_enter_pwrite64 *p)
{
	p->fd = (__s32)ctx->args[0];
	p->count = ctx->args[2];
	p->pos = (__s64)ctx->args[3];
	if (tb_content_fd(t, p->fd))
		tb_copy_user(t, &p->content, (const void *)ctx->args[1], p->count, t->cfg->content_max);
	else
		tb_skip(&p->content, p->count);
}

/* Where tb_iov_sum_step's bpf_loop is: the iovec array, the sum so far. */
struct tb_iov_sum {
	__u64 iov; /* user address of the iovec array */
	__u64 sum;
	__u64 fault;
};

/* Adds the length of iovec `i` (a bpf_loop callback: the verifier checks
 * it once, not once per iovec). Returns 1 to stop if it cannot be read. */
static long tb_iov_sum_step(__u64 i, void *ctx)
{
	struct tb_iov_sum *a = ctx;
	struct iovec v;

	if (bpf_probe_read_user(&v, sizeof(v), (const void *)(a->iov + i * sizeof(v)))) {
		a->fault = 1;
		return 1;
	}
	a->sum += v.iov_len;
	return 0;
}

/* Where tb_iov_copy_step's bpf_loop is. How far the copy got is kept in
 * the per-CPU scratch, not here: read back from a map it is a number the
 * verifier does not track, so it checks one step, where numbers on the
 * stack would make it walk every iovec (see tb_append). */
struct tb_iov_copy {
	struct tb_ctx *t;
	struct tb_var *v;
	struct tb_scratch *s;
	__u64 iov;  /* user address of the iovec array */
	__u64 n;    /* iovecs */
	__u64 want; /* bytes to copy */
};

/* Copies one piece of the current iovec and steps to the next iovec when it
 * is done (at once for an empty one) (a bpf_loop callback).
 * Returns 1 when the copy is done or cannot go on. */
static long tb_iov_copy_step(__u64 i, void *ctx)
{
	struct tb_iov_copy *c = ctx;
	struct tb_scratch *s = c->s;
	struct iovec v;
	__u64 done = c->v->len;
	__u64 idx = *(volatile __u64 *)&s->iov_idx;
	__u64 off = *(volatile __u64 *)&s->iov_off;

	if (done >= c->want || idx >= c->n)
		return 1;
	if (bpf_probe_read_user(&v, sizeof(v), (const void *)(c->iov + idx * sizeof(v))))
		return 1; /* flagged by the caller */
	__u64 k = 0;
	if (off < v.iov_len) {
		__u64 len = v.iov_len - off;
		if (len > c->want - done)
			len = c->want - done;
		k = tb_piece(c->t, c->v, v.iov_base + off, len, true);
		if (!k)
			return 1;
	}
	if (off + k >= v.iov_len) {
		s->iov_idx = idx + 1;
		s->iov_off = 0;
	} else {
		s->iov_off = off + k;
	}
	return 0;
}

/* writev(2): count is the sum of the lengths of all iovecs (up to IOV_MAX,
 * the most the kernel accepts); content is their bytes, concatenated, up to
 * content_max. Both walks are bpf_loop callbacks, so verification does not
 * grow with the number of iovecs or pieces. */
static __always_inline void
fill_syscalls__sys_enter_writev(struct syscall_trace_enter *ctx, struct tb_ctx *t,
				struct tb_payload_syscalls__sys_enter_writev *p)
{
	__u64 iov = ctx->args[1];
	__s32 iovcnt = (__s32)ctx->args[2];
	__u32 n = iovcnt < 0 ? 0 : iovcnt > TB_IOV_MAX ? TB_IOV_MAX : (__u32)iovcnt;
	struct tb_iov_sum sum = { .iov = iov };

	p->fd = (__s32)ctx->args[0];
	p->iovcnt = iovcnt;
	bpf_loop(n, tb_iov_sum_step, &sum, 0);
	if (sum.fault) {
		/* The iovec array itself is unreadable: no total, no content. */
		p->content.flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
		return;
	}
	p->count = sum.sum;
	if (!tb_content_fd(t, p->fd)) {
		tb_skip(&p->content, sum.sum);
		return;
	}
	__u32 zero = 0;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return;
	__u64 want = tb_var_start(t, &p->content, sum.sum, t->cfg->content_max);
	struct tb_iov_copy c = { .t = t, .v = &p->content, .s = s, .iov = iov, .n = n, .want = want };
	s->iov_idx = 0;
	s->iov_off = 0;
	/* Each iteration copies a piece or steps over an iovec: at most one
	 * per piece plus one per iovec. */
	if (want)
		bpf_loop(TB_MAX_PIECES + TB_IOV_MAX, tb_iov_copy_step, &c, 0);
	/* Short of what was granted without a piece faulting: the iovec array
	 * became unreadable, or another thread shrank it, since it was summed. */
	if (p->content.len < want && !(p->content.flags & TB_VAR_FAULT)) {
		p->content.flags |= TB_VAR_FAULT;
		t->rec->flags |= TB_REC_PAYLOAD_LOST;
		tb_count(TB_STAT_FAULT);
	}
}

/* openat(2) entry: the path exactly as passed (relative paths stay relative). */
static __always_inline void
fill_syscalls__sys_enter_openat(struct syscall_trace_enter *ctx, struct tb_ctx *t,
				struct tb_payload_syscalls__sys_enter_openat *p)
{
	p->dfd = (__s32)ctx->args[0];
	p->flags = (__u32)ctx->args[2];
	p->mode = (__u32)ctx->args[3];
	tb_copy_user_str(t, &p->filename, (const char *)ctx->args[1], TB_MAX_SYSCALLS__SYS_ENTER_OPENAT__FILENAME);
}

static __always_inline void
fill_syscalls__sys_exit_openat(struct syscall_trace_exit *ctx, struct tb_ctx *t,
			       struct tb_payload_syscalls__sys_exit_openat *p)
{
	p->ret = ctx->ret;
}

static __always_inline void
fill_syscalls__sys_enter_read(struct syscall_trace_enter *ctx, struct tb_ctx *t,
			      struct tb_payload_syscalls__sys_enter_read *p)
{
	p->fd = (__s32)ctx->args[0];
	p->count = ctx->args[2];
}

/*
 * exec: the file from the tracepoint, argv from the new process image (the
 * argument area of its mm, NUL-separated, so empty arguments are kept) and
 * argc from the top of its stack. uid and gid are the real ids of the new
 * image's credentials (committed before the tracepoint, so a setuid program
 * shows its caller's real ids), as the initial user namespace sees them;
 * cwd is walked from the task's fs (bpf/path.h).
 */
static __always_inline void
fill_sched__sched_process_exec(__u64 *ctx, struct tb_ctx *t, struct tb_payload_sched__sched_process_exec *p)
{
	/* The tracepoint's arguments: (task, old_pid, bprm); its record's
	 * filename is bprm->filename. */
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	unsigned long start_stack = BPF_CORE_READ(mm, start_stack);
	__u64 argc = 0;

	p->old_pid = (__s32)ctx[1];
	if (!bpf_probe_read_user(&argc, sizeof(argc), (const void *)start_stack))
		p->argc = (__u32)argc;
	tb_copy_str(t, &p->filename, BPF_CORE_READ(bprm, filename), TB_MAX_SCHED__SCHED_PROCESS_EXEC__FILENAME, false);
	tb_copy_user(t, &p->argv, (const void *)arg_start, arg_end > arg_start ? arg_end - arg_start : 0,
		     t->cfg->argv_max);
	const struct cred *cred = t->task->cred;
	p->uid = cred->uid.val;
	p->gid = cred->gid.val;
	tb_copy_cwd(t, &p->cwd);
}

/*
 * exit: task->exit_code is a wait status (exit(3) is 0x300, SIGKILL is 9):
 * decoded here into the exit status and the terminating signal.
 */
static __always_inline void
fill_sched__sched_process_exit(__u64 *ctx, struct tb_ctx *t, struct tb_payload_sched__sched_process_exit *p)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	int code = BPF_CORE_READ(task, exit_code);

	p->exit_code = code;
	p->exit_status = (code >> 8) & 0xff;
	p->signal = code & 0x7f;
	p->core_dumped = (code & 0x80) != 0;
	p->group_leader = t->rec->pid == t->rec->tid;
}

static __always_inline void
fill_vmscan__mm_vmscan_direct_reclaim_begin(__u64 *ctx, struct tb_ctx *t,
					    struct tb_payload_vmscan__mm_vmscan_direct_reclaim_begin *p)
{
	/* (order, gfp_flags) */
	p->order = (__s32)ctx[0];
	p->gfp_flags = (__u32)ctx[1];
}

/*
 * oom: the victim is the tracepoint's task, not the one running the killer.
 * Its arguments are (task, uid) since 6.8, when the record got the victim's
 * comm, and (pid) before.
 */
static __always_inline void
fill_oom__mark_victim(__u64 *ctx, struct tb_ctx *t, struct tb_payload_oom__mark_victim *p)
{
	if (bpf_core_field_exists(((struct trace_event_raw_mark_victim *)0)->__data_loc_comm)) {
		struct task_struct *victim = (struct task_struct *)ctx[0];
		p->victim_pid = BPF_CORE_READ(victim, pid);
		tb_copy_str(t, &p->victim_comm, (const char *)victim + bpf_core_field_offset(victim->comm),
			    TB_MAX_OOM__MARK_VICTIM__VICTIM_COMM, false);
	} else {
		p->victim_pid = (__s32)ctx[0];
		tb_none(&p->victim_comm, TB_VAR_UNAVAILABLE); /* older kernels: pid only */
	}
}

static __always_inline void
fill_sched__psi_memstall_enter(__u64 *ctx, struct tb_ctx *t, struct tb_payload_sched__psi_memstall_enter *p)
{
}

/*
 * Events whose records carry TB_INLINE_ROOM bytes of room after them in the
 * ring sample: a content that fits goes there instead of the payload area
 * (no flow control, one memory stream: 51-57 ns less per 64-byte write in
 * interleaved A/B runs in this VM). write and pwrite64 only: small writes are common, and these
 * events have one variable field.
 */
static __always_inline bool tb_inline_room(__u32 id)
{
	return id == TB_EVENT_SYSCALLS__SYS_ENTER_WRITE || id == TB_EVENT_SYSCALLS__SYS_ENTER_PWRITE64;
}

TB_DEFINE_HANDLERS()
TB_DEFINE_SYSCALL_PROGRAMS()
