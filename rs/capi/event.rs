//! An `Event` as the `struct tb_event` handed to the C callback: header
//! fields copied, payload fields pointing into the event's own bytes (valid
//! while the event lives, i.e. during the callback).

use super::desc::EventDesc;
use super::types::{TbEvent, TbField};
use crate::cgroup::{same_cgroup, CgroupInfo};
use crate::event::Event;
use crate::json::Context;
use crate::types::{FieldValue, COMM_LEN};
use std::ffi::c_char;
use std::ffi::CString;
use std::sync::Arc;

/// NUL-terminated copies of the cgroup strings of the last event's cgroup:
/// consecutive events mostly share it, so they are made once per cgroup.
#[derive(Default)]
pub struct ContextStrings {
    last: Option<Arc<CgroupInfo>>,
    /// cgroup, container_id, container_runtime, pod_uid.
    strs: [Option<CString>; 4],
}

impl ContextStrings {
    fn pointers(&mut self, info: Option<&Arc<CgroupInfo>>) -> [*const c_char; 4] {
        // Starts as the strings of no cgroup (all NULL).
        if !same_cgroup(self.last.as_ref(), info) {
            let c = Context::of(info.map(|i| &**i));
            // A path holds no NUL (the kernel refuses one in a name).
            let owned = |s: Option<&str>| s.and_then(|s| CString::new(s).ok());
            self.strs = [owned(c.cgroup), owned(c.container_id), owned(c.container_runtime), owned(c.pod_uid)];
            self.last = info.cloned();
        }
        self.strs.each_ref().map(|s| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
    }
}

/// Fills `fields` with the payload fields of `ev` and returns its
/// `tb_event`, whose `fields` points into `fields` and whose cgroup strings
/// into `strings`.
pub fn fill(ev: &Event, desc: &EventDesc, fields: &mut Vec<TbField>, strings: &mut ContextStrings) -> TbEvent {
    fields.clear();
    ev.payload.for_each_field(|_, v| {
        let i = fields.len();
        let desc = if i < desc.raw.nfields as usize {
            // SAFETY: i is within the descriptor's field array.
            unsafe { desc.raw.fields.add(i) }
        } else {
            std::ptr::null()
        };
        let mut f = TbField { desc, u: 0, i: 0, data: std::ptr::null(), len: 0, flags: 0, size: 0 };
        match v {
            FieldValue::Unsigned(u) => (f.u, f.i) = (u, u as i64),
            FieldValue::Signed(i) => (f.u, f.i) = (i as u64, i),
            FieldValue::Var(var) => {
                (f.data, f.len, f.flags, f.size) = (var.data.as_ptr(), var.data.len().min(u32::MAX as usize) as u32, var.flags, var.size)
            }
            FieldValue::UList(l) => (f.data, f.len) = (l.as_ptr().cast(), l.len().min(u32::MAX as usize) as u32),
            FieldValue::IList(l) => (f.data, f.len) = (l.as_ptr().cast(), l.len().min(u32::MAX as usize) as u32),
        }
        fields.push(f);
    });
    let comm = ev.comm.as_bytes();
    let mut c = [0 as c_char; COMM_LEN + 1];
    for (d, s) in c.iter_mut().zip(comm) {
        *d = *s as c_char;
    }
    let [cgroup, container_id, container_runtime, pod_uid] = strings.pointers(ev.cgroup.as_ref());
    TbEvent {
        event_id: ev.event_id,
        event_type: desc.raw.id,
        desc: &desc.raw,
        timestamp_ns: ev.timestamp_ns,
        cpu: ev.cpu,
        pid: ev.pid,
        tid: ev.tid,
        ppid: ev.ppid,
        upid: ev.upid,
        uppid: ev.uppid,
        comm: c,
        comm_len: comm.len() as u32,
        flags: ev.flags,
        nfields: fields.len() as u32,
        fields: fields.as_ptr(),
        ns_pid: ev.ns_pid,
        ns_tid: ev.ns_tid,
        cgroup_id: ev.cgroup_id,
        cgroup,
        container_id,
        container_runtime,
        pod_uid,
    }
}
