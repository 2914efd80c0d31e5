//! A decoded event: the common header plus its typed payload.

use crate::cgroup::CgroupInfo;
use crate::tracepoint_format::Format;
use crate::types::{EventType, Payload, COMM_LEN};
use std::sync::Arc;

/// The task's comm as the kernel had it (up to 15 bytes, no NUL).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Comm {
    bytes: [u8; COMM_LEN],
    len: u8,
}

impl Comm {
    /// From the kernel's NUL-padded array.
    pub fn from_padded(raw: &[u8; COMM_LEN]) -> Comm {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        Comm { bytes: *raw, len: len as u8 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
    /// Lossy text (invalid UTF-8 becomes U+FFFD).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// What kind of event: a typed one from events.toml, or any other tracepoint
/// decoded from its tracefs format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Typed(EventType),
    Generic(Arc<Format>),
}

impl EventKind {
    /// "category/name".
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Typed(t) => t.name(),
            EventKind::Generic(f) => f.name,
        }
    }
    /// The typed event, if it is one.
    pub fn typed(&self) -> Option<EventType> {
        match self {
            EventKind::Typed(t) => Some(*t),
            EventKind::Generic(_) => None,
        }
    }
}

impl PartialEq<EventType> for EventKind {
    fn eq(&self, other: &EventType) -> bool {
        self.typed() == Some(*other)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One captured event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique within this tracer: its start time in epoch ns plus a counter.
    pub event_id: u64,
    pub event_type: EventKind,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub cpu: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent process id (real parent).
    pub ppid: u32,
    /// Unique process id: process start since boot in units of 2^20 ns
    /// (about 1 ms) << 22 | pid.
    pub upid: u64,
    pub uppid: u64,
    pub comm: Comm,
    /// Process and thread id as seen in the task's own pid namespace (equal
    /// to `pid`/`tid` for a task in the initial namespace).
    pub ns_pid: u32,
    pub ns_tid: u32,
    /// cgroup v2 id of the task: the inode of its cgroup2 directory.
    pub cgroup_id: u64,
    /// That cgroup's path and container, resolved in userspace (shared by
    /// the events of one cgroup); None for cgroup id 0.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// Record flags (TB_REC_*): 1 = some variable bytes were not delivered.
    pub flags: u32,
    pub payload: Payload,
}

impl Event {
    /// True if any variable field of this event lost bytes.
    pub fn payload_lost(&self) -> bool {
        self.flags & crate::types::rec_flags::PAYLOAD_LOST != 0
    }
    /// The event as one JSON line (no trailing newline), the format every
    /// front end prints.
    pub fn to_json(&self) -> String {
        let mut s = String::with_capacity(256);
        crate::json::write_event(&mut s, self);
        s
    }

    /// A read(2) event of process 42 ("test") whose event id and count are
    /// `id`: for tests without a kernel.
    #[cfg(test)]
    pub(crate) fn test_read(id: u64, timestamp_ns: u64) -> Event {
        use crate::types::{payload, Payload};
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"test");
        Event {
            event_id: id,
            event_type: EventKind::Typed(EventType::SyscallsSysEnterRead),
            timestamp_ns,
            cpu: 0,
            pid: 42,
            tid: 42,
            ppid: 1,
            upid: 42,
            uppid: 1,
            comm: Comm::from_padded(&comm),
            ns_pid: 0,
            ns_tid: 0,
            cgroup_id: 0,
            cgroup: None,
            flags: 0,
            payload: Payload::SyscallsSysEnterRead(payload::SyscallsSysEnterRead { fd: 3, count: id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn an_event_is_no_larger_than_a_write_needs() {
        // The reader stores every event it drains, into memory the process
        // often touches for the first time during a burst: each byte of it
        // counts once per write. The payloads of several variable fields
        // (exec, snapshot) are boxed so that they do not set the size.
        assert!(std::mem::size_of::<Event>() <= 200, "{} bytes", std::mem::size_of::<Event>());
    }
}
