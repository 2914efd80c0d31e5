/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Structures shared by the BPF program and every userspace consumer (Rust
 * library, C library): the per-CPU control block of the payload area and the
 * filter configuration. Their layout is part of the 2-layer protocol
 * (docs/protocol.md); sizes are asserted on both sides.
 */
#ifndef TB_BOOTSTRAP_PROTOCOL_H
#define TB_BOOTSTRAP_PROTOCOL_H

#include <bootstrap.gen.h>

#define TB_MAX_COMM_FILTERS 8
/* Cgroups in the cgroup filter: slots of the `cgroups` map (a cgroup and
 * its descendants each; rs/cgroup/filter.rs CGROUP_FILTERS_MAX). */
#define TB_MAX_CGROUP_FILTERS 8

/* A comm prefix: its bytes (no NUL among them), NUL padded; the BPF side
 * matches the non-NUL bytes (bpf/filter.h). */
struct tb_comm_prefix {
	char prefix[TB_COMM_LEN];
	__u32 len; /* bytes of the prefix; kept for the layout, the BPF side does not need it */
};

/* Changeable while tracing (userspace updates the single `cfg` entry). */
struct tb_config {
	__u32 self_tgid;     /* never trace this process (the tracer); 0 = trace it */
	__u32 pid_filter;    /* 1: only processes in `pids` */
	__u32 follow;        /* 1: add children of processes in `pids` as they fork */
	__u32 ncomm;         /* number of active comm prefixes */
	__u32 content_max;   /* cap on write content bytes per event */
	__u32 argv_max;      /* cap on argv bytes per exec */
	__u32 all_fds;       /* 1: capture content of every fd, ignore `content_fds` */
	__u32 generic_max;   /* cap on the raw bytes of a generic tracepoint record */
	__u64 fd_mask;       /* bit n: content of fd n (< 64) is captured; larger fds: `content_fds` */
	struct tb_comm_prefix comm[TB_MAX_COMM_FILTERS];
	__u32 exclude_pids;  /* 1: never processes in `excluded` */
	__u32 nexclude_comm; /* number of active excluded comm prefixes */
	struct tb_comm_prefix exclude_comm[TB_MAX_COMM_FILTERS]; /* never tasks whose comm starts so */
	__u32 ncgroup;       /* only tasks under one of the first ncgroup cgroups of `cgroups` */
	__u32 stopped;       /* 1: recording stopped (stop, close): every handler returns at once */
};

/* One CPU's control block, mmapped by userspace. The producer's fields and
 * the consumer's `tail` sit on different cache lines. Positions are logical
 * bytes of this CPU's payload stream; logical chunk L (bytes L x
 * TB_CHUNK_SIZE on) lives in the pool chunk that slot L % tb_slots of this
 * CPU names (the `chunk_slot` map). */
struct tb_cpu_ctl {
	__u64 head;          /* producer: next logical payload position */
	__u64 seq;           /* producer: last record sequence number */
	__u64 last_wake_ns;  /* producer: last forced reader wake-up */
	__u32 busy;          /* producer: a handler is writing this CPU's stream */
	__u32 pad0;
	__u64 mapped;        /* producer: logical chunks given a pool chunk so far */
	__u8 pad1[24];
	__u64 tail;          /* consumer: payload consumed up to here */
	__u8 pad2[56];
};
TB_STATIC_ASSERT(sizeof(struct tb_cpu_ctl) == TB_CPU_CTL_SIZE, "tb_cpu_ctl size");

/* The payload area's chunks are one pool shared by every CPU (a CPU that
 * writes a burst may take all of them). `used` counts the chunks taken:
 * producers add one before they search for a free chunk (`chunk_owner`
 * entry 0 -> 1), the consumer sets the entry back to 0 and then subtracts
 * one once its tail has passed the chunk. One entry, mmapped by userspace;
 * `used` and `hint` on separate cache lines. */
struct tb_pool {
	__u64 used;          /* chunks held by a CPU (taking one may overshoot briefly) */
	__u8 pad0[56];
	__u64 hint;          /* producers: where the next search for a free chunk starts */
	__u8 pad1[56];
};
TB_STATIC_ASSERT(sizeof(struct tb_pool) == 128, "tb_pool size");
TB_STATIC_ASSERT(sizeof(struct tb_config) == 376, "tb_config size");

/*
 * Generic tracepoints: any tracepoint, recorded raw by handle__generic and
 * decoded in userspace from its tracefs format file. Userspace fills one
 * descriptor per attached tracepoint, keyed by its tracefs ID (common_type).
 */
#define TB_GENERIC_MAX_DATALOC 8
#define TB_GENERIC_MAX_STRS 3
/* A `char *const *` argument (argv, envp: a NULL-terminated array of user
 * strings) keeps at most this many strings and bytes (NULs included); more
 * is flagged truncated and counted. */
#define TB_GENERIC_LIST_STRS 128
#define TB_GENERIC_LIST_BYTES 4096

struct tb_generic_desc {
	__u32 raw_size;                          /* bytes of the fixed record */
	__u32 ndataloc;                          /* __data_loc fields */
	__u16 dataloc_off[TB_GENERIC_MAX_DATALOC]; /* their offsets */
	__u32 nstr;                              /* user-string pointer fields */
	__u16 str_off[TB_GENERIC_MAX_STRS];      /* their offsets */
	__u16 str_list;                          /* bit i: field i is a `char *const *` (argv, envp) */
};

/* Fixed part of a generic record (TB_REC_GENERIC; event_type = tracefs ID):
 * the raw tracepoint record (fixed fields and __data_loc data), then the user
 * strings its pointer fields point to, in descriptor order. */
struct tb_generic_payload {
	struct tb_var raw;
	struct tb_var str[TB_GENERIC_MAX_STRS];
};
TB_STATIC_ASSERT(sizeof(struct tb_generic_payload) <= TB_FIXED_SLOT_SIZE, "tb_generic_payload size");

/* Many syscall events at once (c/bpf/syscalls.h): the tracefs IDs of the
 * enter and exit events of one syscall number, 0 where not traced. */
struct tb_syscall_ids {
	__u32 enter;
	__u32 exit;
};

#endif /* TB_BOOTSTRAP_PROTOCOL_H */
