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
 *  - variable bytes (write content, paths, argv) go to this CPU's stream in
 *    the mmapped `payload` array, at logical positions [payload_pos,
 *    payload_pos + payload_len); the stream's 1 MiB chunks are taken from a
 *    pool shared by all CPUs as the stream reaches them;
 *  - the consumer publishes how far it has read (tb_cpu_ctl.tail) and gives
 *    back the chunks it has read past; the producer writes only into chunks
 *    it holds, so a payload is never overwritten before it was read. What does not fit is not written, and
 *    is flagged in the field (TB_VAR_NO_SPACE) and counted (payload_full).
 */
#ifndef TB_BOOTSTRAP_BPF_H
#define TB_BOOTSTRAP_BPF_H

/* By layer: maps and protocol, filters, the ring record, copy helpers,
 * the working-directory walk, programs, the shared syscall programs, the
 * process snapshot's iterator. */
#include "bpf/maps.h"
#include "bpf/filter.h"
#include "bpf/record.h"
#include "bpf/copy.h"
#include "bpf/path.h"
#include "bpf/handlers.h"
#include "bpf/syscalls.h"
#include "bpf/snapshot.h"

#endif /* TB_BOOTSTRAP_BPF_H */
