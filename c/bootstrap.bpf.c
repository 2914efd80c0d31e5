// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * One fill function per event of typegen/events.toml. A fill function writes
 * the event's fixed fields into `p` (struct tb_payload_<category>__<tracepoint>,
 * generated) and copies variable fields with tb_copy_user / tb_copy_user_str.
 * Everything else (maps, filters, the record header, handlers) lives in
 * bootstrap.bpf.h.
 */
#include "bootstrap.bpf.h"

static __always_inline void
fill_syscalls__sys_enter_write(struct trace_event_raw_sys_enter *ctx, struct tb_ctx *t,
			       struct tb_payload_syscalls__sys_enter_write *p)
{
	p->fd = (__s32)ctx->args[0];
	p->count = ctx->args[2];
	if (tb_content_fd(t, p->fd))
		tb_copy_user(t, &p->content, (const void *)ctx->args[1], p->count,
			     t->cfg->content_max);
	else
		p->content = (struct tb_var){ .flags = TB_VAR_NOT_CAPTURED, .size = p->count };
}

TB_DEFINE_HANDLERS()
