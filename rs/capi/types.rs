//! The C structs of c/bootstrap-api.h and bootstrap.gen.h, mirrored
//! field for field (`#[repr(C)]`, same order and types).

use crate::types::{COMM_LEN, KERNEL_STATS};
use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void};

/// struct tb_field_desc
#[repr(C)]
pub struct TbFieldDesc {
    pub name: *const c_char,
    /// enum tb_field_kind (`types::c_abi::FK_*`)
    pub kind: u32,
    pub offset: c_uint,
    /// enum tb_decode (`types::c_abi::DECODE_*`)
    pub decode: u32,
    pub max: c_ulong,
}

/// struct tb_event_desc
#[repr(C)]
pub struct TbEventDesc {
    pub id: u32,
    pub name: *const c_char,
    pub comment: *const c_char,
    pub fixed_size: c_uint,
    pub nfields: c_uint,
    pub fields: *const TbFieldDesc,
}

/// struct tb_field
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TbField {
    pub desc: *const TbFieldDesc,
    pub u: u64,
    pub i: i64,
    pub data: *const u8,
    pub len: u32,
    pub flags: u32,
    pub size: u64,
}

/// struct tb_event
#[repr(C)]
pub struct TbEvent {
    pub event_id: u64,
    pub event_type: u32,
    pub desc: *const TbEventDesc,
    pub timestamp_ns: u64,
    pub cpu: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub upid: u64,
    pub uppid: u64,
    pub comm: [c_char; COMM_LEN + 1],
    pub comm_len: u32,
    pub flags: u32,
    pub nfields: u32,
    pub fields: *const TbField,
    pub ns_pid: u32,
    pub ns_tid: u32,
    pub cgroup_id: u64,
    pub cgroup: *const c_char,
    pub container_id: *const c_char,
    pub container_runtime: *const c_char,
    pub pod_uid: *const c_char,
}

/// tb_event_fn
pub type TbEventFn = Option<unsafe extern "C" fn(ev: *const TbEvent, ctx: *mut c_void) -> c_int>;

/// struct tb_options
#[repr(C)]
pub struct TbOptions {
    pub events: *const *const c_char,
    pub nevents: usize,
    pub pids: *const u32,
    pub npids: usize,
    pub follow: c_int,
    pub comms: *const *const c_char,
    pub ncomms: usize,
    pub content_fds: *const c_int,
    pub ncontent_fds: usize,
    pub all_fds: c_int,
    pub content_max: u32,
    pub argv_max: u32,
    pub ring_bytes: usize,
    pub payload_bytes_per_cpu: usize,
    pub wake_ns: u64,
    pub trace_self: c_int,
    pub on_event: TbEventFn,
    pub ctx: *mut c_void,
    pub cgroups: *const *const c_char,
    pub ncgroups: usize,
    /// Non-zero: the process snapshot (`Config::snapshot`).
    pub snapshot: c_int,
    /// Non-zero: batches built by the reader (`Config::arrow`).
    pub arrow: c_int,
    /// Non-zero: the polling thread yields while the queue is light (`Config::yield_cpu`).
    pub yield_cpu: c_int,
}

/// struct tb_stats
#[repr(C)]
pub struct TbStats {
    pub kernel: [u64; KERNEL_STATS.len()],
    pub delivered: u64,
    pub decode_errors: u64,
    pub overwritten: u64,
    pub seq_gaps: u64,
    pub discarded: u64,
    pub queued: u64,
    pub cgroup_unresolved: u64,
    pub snapshot_events: u64,
    pub snapshot_lost: u64,
    pub snapshot_truncated: u64,
    pub snapshot_followed: u64,
    pub snapshot_unseen: u64,
}
