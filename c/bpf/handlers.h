/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Programs: follow mode, one handler per typed event (TB_DEFINE_HANDLERS,
 * expanded by bootstrap.bpf.c after its fill functions), and the generic
 * handler of any other tracepoint.
 */
#ifndef TB_BPF_HANDLERS_H
#define TB_BPF_HANDLERS_H

#include "copy.h"
#include "filter.h"

/* Follow mode: children of traced processes are traced too. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(tb_follow_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 zero = 0;
	struct tb_config *c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c || !c->follow || c->stopped)
		return 0;
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ptgid == ctgid || !bpf_map_lookup_elem(&pids, &ptgid))
		return 0;
	__u8 mark = 2;
	if (bpf_map_update_elem(&pids, &ctgid, &mark, BPF_NOEXIST) == 0)
		tb_count(TB_STAT_FOLLOWED);
	return 0;
}

/* One handler per typed event: it calls the event's fill function, which
 * writes its fixed fields and copies its variable ones, from `ctx`. */
#define TB_HANDLER_BODY(cat, tp, id)                                                 \
	{                                                                            \
		struct tb_ctx t;                                                     \
		if (!tb_filter(&t) || !tb_reserve(&t, id, tb_inline_room(id)))      \
			return 0;                                                    \
		fill_##cat##__##tp(ctx, &t, (struct tb_payload_##cat##__##tp *)t.rec->fixed); \
		tb_end(&t);                                                          \
		return 0;                                                            \
	}
/* The syscall events: perf-event tracepoint programs, given the tracepoint's
 * record; only for kernels that refuse the shared programs of syscalls.h. */
#define TB_HANDLER(cat, tp, ctx_type, id, optional)                                  \
	SEC("tp/" #cat "/" #tp)                                                      \
	int handle__##cat##__##tp(struct ctx_type *ctx) TB_HANDLER_BODY(cat, tp, id)
/* The other typed events: BTF raw tracepoint programs, given the
 * tracepoint's arguments (ctx[i]) instead of its record, which is then not
 * built; and their links detach at once, where a perf event's detach waits
 * for a grace period under the kernel's event_mutex (about 80 ms each). */
#define TB_BTF_HANDLER(cat, tp, ctx_type, id, optional)                              \
	SEC("tp_btf/" #tp)                                                           \
	int handle__##cat##__##tp(__u64 *ctx) TB_HANDLER_BODY(cat, tp, id)
#define TB_DEFINE_HANDLERS() TB_OTHER_TRACEPOINT_LIST(TB_BTF_HANDLER) TB_SYSCALL_TRACEPOINT_LIST(TB_HANDLER)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192); /* the generic tracepoints asked for, set at load time */
	__type(key, __u32); /* tracefs ID (common_type) */
	__type(value, struct tb_generic_desc);
} generic_desc SEC(".maps");

/*
 * Records generic tracepoint `type` described by `d`: the raw tracepoint
 * record at `raw` (its fixed fields and the __data_loc data after them, at
 * most `limit` bytes of it and at most cfg->generic_max), then the user
 * strings its pointer fields point to. `raw` is kernel memory: the
 * tracepoint's own record, or one built on the stack (tb_syscall_record).
 */
static __always_inline void tb_generic(struct tb_ctx *t, struct tb_generic_desc *d, __u32 type, const void *raw, __u64 limit)
{
	__u32 zero = 0;
	if (!tb_reserve(t, type, false))
		return;
	struct tb_generic_payload *p = (struct tb_generic_payload *)t->rec->fixed;
	t->rec->flags |= TB_REC_GENERIC;

	__u64 size = d->raw_size;
	for (int i = 0; i < TB_GENERIC_MAX_DATALOC; i++) {
		if (i >= d->ndataloc)
			break;
		__u32 loc = 0;
		bpf_probe_read_kernel(&loc, sizeof(loc), raw + (d->dataloc_off[i] & 0x7ff));
		__u64 end = (loc & 0xffff) + (loc >> 16);
		if (end > size)
			size = end;
	}
	if (size > limit)
		size = limit;
	struct tb_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (s) {
		__u64 max = t->cfg->generic_max;
		if (max > TB_SCRATCH_SIZE - 2)
			max = TB_SCRATCH_SIZE - 2;
		__u64 n = size < max ? size : max;
		/* Keep the mask: clang would drop it (it knows n <= max), and
		 * verifiers before 6.8 learn no bound from `size < max`. */
		barrier_var(n);
		n &= TB_SCRATCH_SIZE - 1;
		if (bpf_probe_read_kernel(s->buf, n, raw) == 0) {
			if (tb_var_start(t, &p->raw, size, max))
				tb_put(t, &p->raw, s->buf, n, false);
		} else {
			p->raw.flags |= TB_VAR_FAULT;
			tb_count(TB_STAT_FAULT);
		}
	}
	for (int i = 0; i < TB_GENERIC_MAX_STRS; i++) {
		if (i >= d->nstr)
			break;
		__u64 ptr = 0;
		bpf_probe_read_kernel(&ptr, sizeof(ptr), raw + (d->str_off[i] & 0x7ff));
		if (ptr && (d->str_list >> i & 1))
			tb_copy_user_str_list(t, &p->str[i], ptr);
		else if (ptr)
			tb_copy_user_str(t, &p->str[i], (const char *)ptr, 4096);
		else
			tb_none(&p->str[i], TB_VAR_NULL_POINTER);
	}
	tb_end(t);
}

/*
 * Any tracepoint: attached by userspace to each requested tracepoint that has
 * no typed event (syscalls: see syscalls.h when many are asked for).
 */
SEC("tp")
int handle__generic(void *ctx)
{
	/* The attach cookie is the tracefs ID: the record's own common_type is
	 * not usable here (perf stores a pt_regs pointer over it for BPF). */
	__u32 type = (__u32)bpf_get_attach_cookie(ctx);
	struct tb_generic_desc *d = bpf_map_lookup_elem(&generic_desc, &type);
	if (!d)
		return 0;
	struct tb_ctx t;
	if (!tb_filter(&t))
		return 0;
	tb_generic(&t, d, type, ctx, 1 << 16);
	return 0;
}

#endif /* TB_BPF_HANDLERS_H */
