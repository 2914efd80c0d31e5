/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Syscall events through two programs on the raw sys_enter and sys_exit
 * tracepoints instead of one perf event per syscall event: a traced syscall
 * costs 90-120 ns less this way (no perf record is built for the program),
 * a syscall not traced 45-65 ns more (the programs run up to the lookup of
 * its number, where a perf event's handler tests a bit; see
 * bench/results/syscall_paths.md), and detaching takes no grace period
 * under the kernel's event_mutex (about 35 ms per perf event, 25 s for all).
 *
 * The typed syscall events (write, openat, ...) are recorded here by their
 * own fill functions, which read the record below as their tracepoint's
 * context. Generic syscall events (when many are asked for) get the records
 * the syscalls/* tracepoints would give (struct syscall_trace_enter /
 * syscall_trace_exit: the common header, the syscall number, the arguments
 * or the return value), built from the registers, and recorded by
 * tb_generic under the syscall event's tracefs ID, so userspace decodes
 * them from the same format files.
 *
 * Which syscall number each event belongs to is read from the kernel's own
 * syscall metadata, not from a table of names (the event names are the
 * SYSCALL_DEFINE names: newstat is stat, umount is umount2): userspace opens
 * each event's tracefs `enable` file, and tb_syscall_ident, a file iterator
 * over this process, follows each of those files to its trace event and the
 * event's struct syscall_metadata. Userspace checks that the event found is
 * the one it opened (its tracefs ID) before it uses the number.
 */
#ifndef TB_BPF_SYSCALLS_H
#define TB_BPF_SYSCALLS_H

#include "handlers.h"

/* Syscall numbers the programs look up: x86-64's table ends below 512, and
 * the tracepoints ignore numbers at or above the kernel's NR_syscalls. */
#define TB_SYSCALL_NR_MAX 1024
/* thread_info.status: the task is in a 32-bit syscall (arch/x86), whose
 * number is from another table; the syscalls/* tracepoints skip those. */
#define TB_TS_COMPAT 0x0002

/* Set at load time: the process whose files tb_syscall_ident reads. */
const volatile __u32 tb_ident_tgid = 0;

/* The tracefs IDs of a syscall's enter and exit events being traced (0: not
 * traced), by syscall number; written by userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TB_SYSCALL_NR_MAX);
	__type(key, __u32);
	__type(value, struct tb_syscall_ids);
} syscall_ids SEC(".maps");

/* One line of tb_syscall_ident's output. */
struct tb_syscall_ident_rec {
	__u32 fd;
	__u32 type; /* the trace event's tracefs ID */
	__s32 nr;   /* its syscall number */
	__u32 _pad;
};
_Static_assert(sizeof(struct tb_syscall_ident_rec) == 16, "tb_syscall_ident_rec size");

/* For each open file of this process: the trace event and syscall number
 * behind it, if it is the `enable` file of a syscall event (its inode's
 * private data is then the event's struct trace_event_file). Every read is a
 * checked kernel read: on any other file it yields numbers userspace
 * ignores, since it asks only about the files it opened. */
SEC("iter/task_file")
int tb_syscall_ident(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	if (!task || !file || task->tgid != tb_ident_tgid)
		return 0;
	struct trace_event_file *tf = BPF_CORE_READ(file, f_inode, i_private);
	struct trace_event_call *call = BPF_CORE_READ(tf, event_call);
	struct syscall_metadata *meta = BPF_CORE_READ(call, data);
	struct tb_syscall_ident_rec r = {
		.fd = ctx->fd,
		.type = BPF_CORE_READ(call, event.type),
		.nr = BPF_CORE_READ(meta, syscall_nr),
	};
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* Each typed syscall event's bit in tb_shared_typed: its place in
 * TB_SYSCALL_TRACEPOINT_LIST (events.toml order; userspace counts the same). */
enum tb_shared_slot {
#define TB_SHARED_SLOT(cat, tp, ctx_type, eid, optional) TB_SHARED_SLOT_##cat##__##tp,
	TB_SYSCALL_TRACEPOINT_LIST(TB_SHARED_SLOT)
#undef TB_SHARED_SLOT
	TB_SHARED_SLOTS
};
_Static_assert(TB_SHARED_SLOTS <= 64, "at most 64 typed syscall events (tb_shared_typed)");

/* Set at load time, known to the verifier, which drops the code of what is
 * not asked for: the typed syscall events the shared programs record (by
 * slot), and whether they record generic syscall events. */
const volatile __u64 tb_shared_typed = 0;
const volatile bool tb_shared_generic = false;

/* A syscall_ids entry for a typed event: this flag and its event id (else a
 * generic event's tracefs ID). */
#define TB_SYSCALL_TYPED 0x80000000u

/* The event syscall `nr` is traced as (0: none), given the direction. */
static __always_inline __u32 tb_syscall_type(long nr, bool enter)
{
	if (nr < 0 || nr >= TB_SYSCALL_NR_MAX)
		return 0;
	__u32 key = (__u32)nr;
	struct tb_syscall_ids *ids = bpf_map_lookup_elem(&syscall_ids, &key);
	if (!ids)
		return 0;
	__u32 type = enter ? ids->enter : ids->exit;
	if (!type) /* not traced: every other syscall of the machine ends here */
		return 0;
	/* Before tb_filter: past it, the CPU's payload stream is taken (busy) until
	 * tb_end gives it back. */
	if (tb_current_task()->thread_info.status & TB_TS_COMPAT)
		return 0;
	return type;
}

/* The record the tracepoint would give, in `rec`: struct syscall_trace_enter
 * (the common header, which userspace skips, the number, the six argument
 * registers of x86-64's syscall convention) or syscall_trace_exit (the
 * number, the return value). Written through the kernel's types, so CO-RE
 * places each field where this kernel's format file says it is (the header
 * is 12 bytes with Debian's PREEMPT_RT patches, 8 elsewhere). Typed events
 * read it as their tracepoint's context. */
static __always_inline void tb_syscall_record(__u64 rec[10], struct pt_regs *regs, long nr, bool enter, long ret)
{
	if (enter) {
		struct syscall_trace_enter *e = (void *)rec;
		e->nr = (int)nr;
		e->args[0] = regs->di;
		e->args[1] = regs->si;
		e->args[2] = regs->dx;
		e->args[3] = regs->r10;
		e->args[4] = regs->r8;
		e->args[5] = regs->r9;
	} else {
		struct syscall_trace_exit *x = (void *)rec;
		x->nr = (int)nr;
		x->ret = ret;
	}
}

/* Records generic syscall event `type` from its record. */
static __always_inline void tb_syscall_generic(__u32 type, __u64 rec[10])
{
	if (!tb_shared_generic)
		return;
	struct tb_generic_desc *d = bpf_map_lookup_elem(&generic_desc, &type);
	if (!d)
		return;
	struct tb_ctx t;
	if (!tb_filter(&t))
		return;
	tb_generic(&t, d, type, rec, 10 * sizeof(__u64));
}

/* Records typed syscall event `id` as its own handler would (TB_HANDLER). */
#define TB_SHARED_CASE(cat, tp, ctx_type, eid, optional)                               \
	case eid: {                                                                      \
		/* The other direction's events: left out by the compiler. */          \
		if (__builtin_types_compatible_p(struct ctx_type, struct syscall_trace_enter) != enter) \
			return;                                                          \
		if (!(tb_shared_typed & (1ull << TB_SHARED_SLOT_##cat##__##tp)))         \
			return;                                                          \
		struct tb_ctx t;                                                         \
		if (!tb_filter(&t) || !tb_reserve(&t, eid, tb_inline_room(eid)))       \
			return;                                                          \
		fill_##cat##__##tp((struct ctx_type *)rec, &t,                          \
				   (struct tb_payload_##cat##__##tp *)t.rec->fixed);    \
		tb_end(&t);                                                              \
		return;                                                                  \
	}

/* The shared programs: expanded by bootstrap.bpf.c after its fill functions,
 * which the typed events call. */
#define TB_DEFINE_SYSCALL_PROGRAMS()                                                   \
	static __always_inline void tb_syscall_typed(__u32 id, __u64 rec[10], bool enter)           \
	{                                                                               \
		switch (id) {                                                           \
			TB_SYSCALL_TRACEPOINT_LIST(TB_SHARED_CASE)                      \
		}                                                                       \
	}                                                                               \
                                                                                        \
	static __always_inline int tb_syscall_event(struct pt_regs *regs, long nr, bool enter, long ret) \
	{                                                                               \
		__u32 type = tb_syscall_type(nr, enter);                                \
		if (!type)                                                              \
			return 0;                                                       \
		__u64 rec[10] = {};                                                     \
		tb_syscall_record(rec, regs, nr, enter, ret);                           \
		if (type & TB_SYSCALL_TYPED)                                            \
			tb_syscall_typed(type & ~TB_SYSCALL_TYPED, rec, enter);                \
		else                                                                    \
			tb_syscall_generic(type, rec);                                  \
		return 0;                                                               \
	}                                                                               \
                                                                                        \
	SEC("tp_btf/sys_enter")                                                         \
	int BPF_PROG(handle__sys_enter, struct pt_regs *regs, long id)                  \
	{                                                                               \
		return tb_syscall_event(regs, id, true, 0);                             \
	}                                                                               \
                                                                                        \
	/* The number is the one the syscall entered with (syscall_get_nr). */   \
	SEC("tp_btf/sys_exit")                                                          \
	int BPF_PROG(handle__sys_exit, struct pt_regs *regs, long ret)                  \
	{                                                                               \
		return tb_syscall_event(regs, (long)regs->orig_ax, false, ret);         \
	}

#endif /* TB_BPF_SYSCALLS_H */
