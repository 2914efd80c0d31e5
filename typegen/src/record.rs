//! The common ring-buffer record header: one definition, emitted as the C
//! struct and the Rust offsets so the two sides cannot drift apart.

use crate::model::FIXED_SLOT_SIZE;

pub struct HeaderField {
    pub name: &'static str,
    /// "u32", "u64" or "char[N]".
    pub ty: &'static str,
    pub size: usize,
    pub doc: &'static str,
}

const fn f(name: &'static str, ty: &'static str, size: usize, doc: &'static str) -> HeaderField {
    HeaderField { name, ty, size, doc }
}

pub const COMM_LEN: usize = 16;

/// In order; every field is naturally aligned, so offsets are running sums.
pub const HEADER: &[HeaderField] = &[
    f("event_type", "u32", 4, "event id from events.toml"),
    f("cpu", "u32", 4, "CPU the event was recorded on; selects its payload stream"),
    f("seq", "u64", 8, "per-CPU record sequence number, starts at 1; gaps are lost records"),
    f("timestamp_ns", "u64", 8, "CLOCK_BOOTTIME nanoseconds (userspace converts to the epoch)"),
    f("pid", "u32", 4, "process id (tgid)"),
    f("tid", "u32", 4, "thread id"),
    f("ppid", "u32", 4, "parent process id, from real_parent"),
    f("flags", "u32", 4, "TB_REC_* flags"),
    f("upid", "u64", 8, "unique process id: start time since boot in 2^20 ns units << 22 | pid"),
    f("uppid", "u64", 8, "unique parent process id, same scheme"),
    f("comm", "char[16]", COMM_LEN, "task comm, NUL padded"),
    f("payload_pos", "u64", 8, "logical start of the variable bytes in this CPU's payload stream"),
    f("payload_len", "u32", 4, "number of variable bytes in the payload stream"),
    f("inline_len", "u32", 4, "bytes of a TB_VAR_INLINE field right after this record in its ring sample"),
    f("cgroup_id", "u64", 8, "cgroup v2 id of the task (the inode of its cgroup2 directory; the root's on v1-only hosts)"),
    f("ns_pid", "u32", 4, "process id as seen in the task's own pid namespace"),
    f("ns_tid", "u32", 4, "thread id as seen in the task's own pid namespace"),
];

pub fn offset_of(name: &str) -> usize {
    let mut off = 0;
    for h in HEADER {
        if h.name == name {
            return off;
        }
        off += h.size;
    }
    panic!("no header field {name}")
}

pub fn header_size() -> usize {
    HEADER.iter().map(|h| h.size).sum()
}

pub fn record_size() -> usize {
    header_size() + FIXED_SLOT_SIZE
}

/// Payload area geometry: each CPU owns `nchunks` consecutive array-map
/// elements of CHUNK_SIZE data bytes. Elements carry PIECE_MAX extra bytes
/// that are never written: they only let the verifier prove that a copy of at
/// most PIECE_MAX bytes at an offset below CHUNK_SIZE stays in bounds. The
/// verifier walks the copy loop once per piece a 1 MiB field can take, so
/// large pieces keep loading fast (64 KiB: 19 iterations, about 60 ms less
/// per handler than 16 KiB) and large writes cheap (one helper call per
/// 64 KiB); the slack stays 1/16 of the data.
pub const CHUNK_SIZE: usize = 1 << 20;
pub const PIECE_MAX: usize = 64 << 10;
pub const CHUNK_ELEM_SIZE: usize = CHUNK_SIZE + PIECE_MAX;
/// Bytes of one CPU's control block (struct tb_cpu_ctl), a multiple of the
/// cache line so producer and consumer fields do not share lines.
pub const CPU_CTL_SIZE: usize = 128;

/// One flag bit of a wire field.
pub struct Flag {
    pub name: &'static str,
    pub value: u32,
    pub doc: &'static str,
}

const fn flag(name: &'static str, value: u32, doc: &'static str) -> Flag {
    Flag { name, value, doc }
}

/// Flags of one variable field (struct tb_var.flags, TB_VAR_*).
pub const VAR_FLAGS: &[Flag] = &[
    flag("TRUNCATED", 0x1, "cut at the configured or declared maximum"),
    flag("FAULT", 0x2, "reading user memory failed: only the bytes before it"),
    flag("NO_SPACE", 0x4, "payload area full: the bytes were not delivered"),
    flag("NOT_CAPTURED", 0x8, "not selected for capture (e.g. fd not in content_fds): JSON \"not_selected\""),
    flag("INLINE", 0x10, "transport: the bytes follow the record in its ring sample, not in the payload area"),
    flag("NULL_POINTER", 0x20, "the user pointer was NULL: nothing to read"),
    flag("UNAVAILABLE", 0x40, "this kernel does not provide the field"),
    flag("OVERWRITTEN", 0x100, "set by userspace: the bytes were overwritten while being read (never expected)"),
    flag("EXITED", 0x200, "set by userspace: the process exited before its /proc file was read (proc/snapshot)"),
    flag("UNREADABLE", 0x400, "set by userspace: its /proc file could not be read (proc/snapshot)"),
];

/// Flags of a record (struct tb_record.flags, TB_REC_*).
pub const REC_FLAGS: &[Flag] = &[
    flag("PAYLOAD_LOST", 0x1, "some variable bytes were not delivered (see fields)"),
    flag("GENERIC", 0x2, "a generic tracepoint: event_type is its tracefs ID"),
];

pub struct Stat {
    pub name: &'static str,
    pub doc: &'static str,
}

const fn st(name: &'static str, doc: &'static str) -> Stat {
    Stat { name, doc }
}

/// Kernel-side counters (a per-CPU array, summed by userspace).
pub const KERNEL_STATS: &[Stat] = &[
    st("records", "records submitted to the ring buffer"),
    st("ring_full", "events dropped because the ring buffer was full"),
    st("payload_full", "variable fields not delivered because the payload area was full"),
    st("fault", "variable fields cut short by a fault reading user memory"),
    st("truncated", "variable fields cut at their configured maximum"),
    st("busy", "events dropped because their CPU's payload writer was busy (nesting)"),
    st("followed", "processes added to the pid filter by follow mode"),
];

/// Field kinds of the C ABI (enum tb_field_kind), in value order: the
/// events.toml types, then the integer lists of generic tracepoints (`data`
/// points at `len` 8-byte integers).
pub const C_FIELD_KINDS: &[&str] = &["U8", "U16", "U32", "U64", "I8", "I16", "I32", "I64", "STR", "STRLIST", "BYTES", "ULIST", "ILIST"];

/// Decode hints of the C ABI (enum tb_decode), in value order.
pub const C_DECODES: &[&str] = &["NONE", "ERRNO", "OPEN_FLAGS", "SIGNAL"];
