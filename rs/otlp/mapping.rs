//! One event → one OTLP LogRecord (the table in docs/otlp.md#mapping).
//!
//! - `time_unix_nano` is the event's time, `observed_time_unix_nano` when
//!   it was read, `event_name` its type (`syscalls/sys_enter_write`);
//! - the body is the content bytes of an event with a `u8[]` field (write,
//!   writev, pwrite64), exact; otherwise a map of the payload fields, named
//!   as in the JSON lines: text that is valid UTF-8 as a string, other bytes
//!   as bytes (exact), integers as integers (a u64 above i64's range as its
//!   decimal string), `<field>_name` beside a field with a decode hint, a
//!   field not captured as an empty value;
//! - attributes: the semantic conventions' `process.pid`, `thread.id`,
//!   `process.parent_pid`, `process.executable.name` (comm),
//!   `process.command_args` and `process.args_count` (exec),
//!   `process.exit.code` (exit, when no signal ended the task),
//!   `container.id`, `container.runtime` and `k8s.pod.uid` (when the
//!   task's cgroup names them); then the
//!   tracer's own under `tracer_ebpf.`: `upid`, `uppid`, `event_id`, `cpu`,
//!   `cgroup_id`, `cgroup` (its path, when resolved), `ns_pid`/`ns_tid`
//!   (only for a task in a child pid
//!   namespace, where they differ from `process.pid`/`thread.id`),
//!   `seq` (per exporter, from 1, for gap detection), `comm_bytes` (when
//!   the comm is not UTF-8), `payload.<field>_truncated` / `_size` / `_lost`
//!   (the JSON keys), and for write-like events the other payload fields as
//!   `payload.<field>`.

use crate::event::Event;
use crate::json::decoded_name;
use crate::types::{FieldKind, FieldRef, FieldValue, Payload, Var};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// Prefix of the tracer's own attributes.
pub const NS: &str = "tracer_ebpf.";
/// Prefix of payload fields and their flags among the attributes.
pub const PAYLOAD_NS: &str = "tracer_ebpf.payload.";

pub fn kv(key: impl Into<String>, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn int(i: impl Into<i64>) -> Value {
    Value::IntValue(i.into())
}

/// An unsigned integer: an OTLP integer when it fits in one, else its
/// decimal string (OTLP integers are i64).
fn unsigned(u: u64) -> Value {
    match i64::try_from(u) {
        Ok(i) => Value::IntValue(i),
        Err(_) => Value::StringValue(u.to_string()),
    }
}

/// Text as a string when it is UTF-8, else the exact bytes.
#[cfg(test)]
fn text(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::StringValue(s.to_string()),
        Err(_) => Value::BytesValue(b.to_vec()),
    }
}

fn array(values: impl Iterator<Item = Value>) -> Value {
    Value::ArrayValue(ArrayValue { values: values.map(|v| AnyValue { value: Some(v) }).collect() })
}

/// Whether the event's body is the bytes of its `u8[]` field.
pub fn is_write_like(e: &Event) -> bool {
    e.event_type.typed().is_some_and(|t| t.fields().iter().any(|f| f.kind == FieldKind::Bytes))
}

/// A value written over the one a slot held for the record before: a
/// string or bytes value of the same kind keeps its buffer, so that a
/// stream of similar records costs no allocation per attribute.
fn set_str(slot: &mut Option<AnyValue>, s: &str) {
    if let Some(AnyValue { value: Some(Value::StringValue(old)) }) = slot {
        old.clear();
        old.push_str(s);
    } else {
        *slot = Some(AnyValue { value: Some(Value::StringValue(s.to_owned())) });
    }
}

fn set_bytes(slot: &mut Option<AnyValue>, b: &[u8]) {
    if let Some(AnyValue { value: Some(Value::BytesValue(old)) }) = slot {
        old.clear();
        old.extend_from_slice(b);
    } else {
        *slot = Some(AnyValue { value: Some(Value::BytesValue(b.to_vec())) });
    }
}

/// Text as a string when it is UTF-8, else the exact bytes.
fn set_text(slot: &mut Option<AnyValue>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => set_str(slot, s),
        Err(_) => set_bytes(slot, b),
    }
}

fn set_value(slot: &mut Option<AnyValue>, v: Value) {
    *slot = Some(AnyValue { value: Some(v) });
}

/// A list of key-values written from the start over the previous record's:
/// keys are rewritten in their own buffers, and `finish` cuts what the
/// previous record had beyond this one's.
struct KvWriter<'a> {
    list: &'a mut Vec<KeyValue>,
    n: usize,
}

impl<'a> KvWriter<'a> {
    fn new(list: &'a mut Vec<KeyValue>) -> KvWriter<'a> {
        KvWriter { list, n: 0 }
    }

    /// The value slot of the next key, made of `parts`.
    fn slot(&mut self, parts: &[&str]) -> &mut Option<AnyValue> {
        if self.n == self.list.len() {
            self.list.push(KeyValue::default());
        }
        let kv = &mut self.list[self.n];
        self.n += 1;
        kv.key.clear();
        for p in parts {
            kv.key.push_str(p);
        }
        &mut kv.value
    }

    fn int(&mut self, key: &[&str], i: impl Into<i64>) {
        set_value(self.slot(key), Value::IntValue(i.into()));
    }

    fn unsigned(&mut self, key: &[&str], u: u64) {
        match i64::try_from(u) {
            Ok(i) => self.int(key, i),
            Err(_) => set_str(self.slot(key), &u.to_string()),
        }
    }

    fn str(&mut self, key: &[&str], s: &str) {
        set_str(self.slot(key), s);
    }

    /// Bytes shown as text: invalid UTF-8 replaced (the exact bytes are
    /// elsewhere in the record).
    fn lossy(&mut self, key: &[&str], b: &[u8]) {
        set_str(self.slot(key), &String::from_utf8_lossy(b));
    }

    fn value(&mut self, key: &[&str], v: Value) {
        set_value(self.slot(key), v);
    }

    fn finish(self) {
        self.list.truncate(self.n);
    }
}

/// `tracer_ebpf.payload.<field>_lost`, `_truncated`, `_size`: what the JSON
/// line says beside the field.
fn var_flags(attrs: &mut KvWriter<'_>, name: &str, v: &Var) {
    if let Some(why) = v.lost() {
        attrs.str(&[PAYLOAD_NS, name, "_lost"], why);
    }
    if v.truncated() {
        attrs.value(&[PAYLOAD_NS, name, "_truncated"], Value::BoolValue(true));
        if v.size != 0 {
            attrs.unsigned(&[PAYLOAD_NS, name, "_size"], v.size);
        }
    }
}

/// The value of a captured variable field, written into `slot`.
fn set_var(slot: &mut Option<AnyValue>, kind: FieldKind, v: &Var) {
    match kind {
        FieldKind::StrList => {
            let items = v.strings().map(|s| match std::str::from_utf8(s) {
                Ok(t) => Value::StringValue(t.to_string()),
                Err(_) => Value::BytesValue(s.to_vec()),
            });
            set_value(slot, array(items))
        }
        FieldKind::Bytes => set_bytes(slot, &v.data),
        _ => set_text(slot, &v.data),
    }
}

/// The LogRecord of `e`, the `seq`-th record of its exporter, read at
/// `observed_ns` (epoch ns).
pub fn log_record(e: &Event, seq: u64, observed_ns: u64) -> LogRecord {
    let mut r = LogRecord::default();
    fill_record(&mut r, e, seq, observed_ns);
    r
}

/// Writes the LogRecord of `e` over `r` (which may hold the previous
/// record: its buffers are reused).
pub fn fill_record(r: &mut LogRecord, e: &Event, seq: u64, observed_ns: u64) {
    let mut attrs = KvWriter::new(&mut r.attributes);
    attrs.int(&["process.pid"], e.pid);
    attrs.int(&["thread.id"], e.tid);
    attrs.int(&["process.parent_pid"], e.ppid);
    let comm = e.comm.as_bytes();
    attrs.lossy(&["process.executable.name"], comm);
    match &e.payload {
        Payload::SchedSchedProcessExec(p) => {
            attrs.int(&["process.args_count"], p.argc);
            if p.argv.captured() {
                let args = p.argv.strings().map(|a| Value::StringValue(String::from_utf8_lossy(a).into_owned()));
                attrs.value(&["process.command_args"], array(args));
            }
            attrs.int(&["process.real_user.id"], p.uid);
            // Only a whole path: a cut one is not a directory (the body has it).
            if p.cwd.captured() && !p.cwd.truncated() {
                attrs.lossy(&["process.working_directory"], &p.cwd.data);
            }
        }
        // A process already running (snapshot): its argv and executable.
        Payload::ProcSnapshot(p) => {
            if p.argv.captured() {
                let args = p.argv.strings().map(|a| Value::StringValue(String::from_utf8_lossy(a).into_owned()));
                attrs.value(&["process.command_args"], array(args));
            }
            if p.exe.captured() && !p.exe.data.is_empty() {
                attrs.lossy(&["process.executable.path"], &p.exe.data);
            }
        }
        Payload::SchedSchedProcessExit(p) if p.signal == 0 => attrs.int(&["process.exit.code"], p.exit_status),
        _ => {}
    }
    if std::str::from_utf8(comm).is_err() {
        set_bytes(attrs.slot(&[NS, "comm_bytes"]), comm);
    }
    attrs.unsigned(&[NS, "upid"], e.upid);
    attrs.unsigned(&[NS, "uppid"], e.uppid);
    attrs.unsigned(&[NS, "event_id"], e.event_id);
    attrs.int(&[NS, "cpu"], e.cpu);
    attrs.unsigned(&[NS, "cgroup_id"], e.cgroup_id);
    if let Some(c) = &e.cgroup {
        if let Some(p) = &c.path {
            attrs.str(&[NS, "cgroup"], p);
        }
        if let Some(id) = &c.container_id {
            attrs.str(&["container.id"], id);
        }
        if let Some(rt) = c.runtime {
            attrs.str(&["container.runtime"], rt);
        }
        if let Some(u) = &c.pod_uid {
            attrs.str(&["k8s.pod.uid"], u);
        }
    }
    if (e.ns_pid, e.ns_tid) != (e.pid, e.tid) {
        attrs.int(&[NS, "ns_pid"], e.ns_pid);
        attrs.int(&[NS, "ns_tid"], e.ns_tid);
    }
    attrs.unsigned(&[NS, "seq"], seq);

    let write_like = is_write_like(e);
    // The body's buffers, kept from the previous record when of the same kind.
    let mut body = r.body.take().and_then(|b| b.value);
    let mut fields = match body.take() {
        Some(Value::KvlistValue(l)) if !write_like => l.values,
        other => {
            body = other;
            Vec::new()
        }
    };
    let mut fields_w = KvWriter::new(&mut fields);
    let mut has_body = false;
    e.payload.for_each_field(|f: FieldRef<'_>, v: FieldValue<'_>| {
        let (value, decoded) = match v {
            FieldValue::Unsigned(u) => (Some(unsigned(u)), f.decode.and_then(|d| decoded_name(d, u as i64))),
            FieldValue::Signed(i) => (Some(int(i)), f.decode.and_then(|d| decoded_name(d, i))),
            FieldValue::UList(l) => (Some(array(l.iter().map(|&u| unsigned(u)))), None),
            FieldValue::IList(l) => (Some(array(l.iter().map(|&i| int(i)))), None),
            FieldValue::Var(var) => {
                var_flags(&mut attrs, f.name, var);
                if !write_like {
                    let slot = fields_w.slot(&[f.name]);
                    if var.captured() {
                        set_var(slot, f.kind, var);
                    } else {
                        *slot = Some(AnyValue { value: None });
                    }
                } else if !var.captured() {
                    // Nothing to show: its `_lost` attribute says why.
                } else if f.kind == FieldKind::Bytes {
                    let mut slot = body.take().map(|v| AnyValue { value: Some(v) });
                    set_var(&mut slot, f.kind, var);
                    body = slot.and_then(|s| s.value);
                    has_body = true;
                } else {
                    set_var(attrs.slot(&[PAYLOAD_NS, f.name]), f.kind, var);
                }
                return;
            }
        };
        if write_like {
            if let Some(value) = value {
                attrs.value(&[PAYLOAD_NS, f.name], value);
            }
            if let Some(n) = decoded {
                attrs.str(&[PAYLOAD_NS, f.name, "_name"], &n);
            }
        } else {
            *fields_w.slot(&[f.name]) = Some(AnyValue { value });
            if let Some(n) = decoded {
                fields_w.str(&[f.name, "_name"], &n);
            }
        }
    });
    fields_w.finish();
    attrs.finish();
    r.body = if write_like {
        if has_body {
            body.map(|v| AnyValue { value: Some(v) })
        } else {
            None
        }
    } else {
        Some(AnyValue { value: Some(Value::KvlistValue(KeyValueList { values: fields })) })
    };
    r.time_unix_nano = e.timestamp_ns;
    r.observed_time_unix_nano = observed_ns;
    r.event_name.clear();
    r.event_name.push_str(e.event_type.name());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Comm, EventKind};
    use crate::types::{payload, var_flags as vf, EventType};
    use bytes::Bytes;

    fn event(t: EventType, payload: Payload, comm: &[u8]) -> Event {
        let mut raw = [0u8; 16];
        raw[..comm.len()].copy_from_slice(comm);
        Event {
            event_id: 7,
            event_type: EventKind::Typed(t),
            timestamp_ns: 1_700_000_000_000_000_000,
            cpu: 1,
            pid: 10,
            tid: 11,
            ppid: 9,
            upid: 123 << 22 | 10,
            uppid: 100 << 22 | 9,
            comm: Comm::from_padded(&raw),
            ns_pid: 0,
            ns_tid: 0,
            cgroup_id: 0,
            cgroup: None,
            flags: 0,
            payload,
        }
    }

    fn attr<'a>(r: &'a LogRecord, k: &str) -> Option<&'a Value> {
        r.attributes.iter().find(|a| a.key == k).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
    }

    fn field<'a>(r: &'a LogRecord, k: &str) -> Option<&'a AnyValue> {
        match r.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Value::KvlistValue(l)) => l.values.iter().find(|a| a.key == k).and_then(|a| a.value.as_ref()),
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn a_write_is_its_bytes_with_the_other_fields_as_attributes() {
        let content = Var { data: Bytes::from_static(b"a\0\xff\n"), flags: vf::TRUNCATED, size: 10 };
        let p = Payload::SyscallsSysEnterWrite(payload::SyscallsSysEnterWrite { fd: 1, count: 10, content });
        let r = log_record(&event(EventType::SyscallsSysEnterWrite, p, b"sh\xff"), 5, 42);
        assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(r.observed_time_unix_nano, 42);
        assert_eq!(r.event_name, "syscalls/sys_enter_write");
        assert_eq!(r.body.as_ref().unwrap().value, Some(Value::BytesValue(b"a\0\xff\n".to_vec())));
        assert_eq!(attr(&r, "process.pid"), Some(&Value::IntValue(10)));
        assert_eq!(attr(&r, "thread.id"), Some(&Value::IntValue(11)));
        assert_eq!(attr(&r, "process.parent_pid"), Some(&Value::IntValue(9)));
        assert_eq!(attr(&r, "process.executable.name"), Some(&Value::StringValue("sh\u{fffd}".into())));
        assert_eq!(attr(&r, "tracer_ebpf.comm_bytes"), Some(&Value::BytesValue(b"sh\xff".to_vec())));
        assert_eq!(attr(&r, "tracer_ebpf.seq"), Some(&Value::IntValue(5)));
        assert_eq!(attr(&r, "tracer_ebpf.upid"), Some(&Value::IntValue(123 << 22 | 10)));
        assert_eq!(attr(&r, "tracer_ebpf.payload.fd"), Some(&Value::IntValue(1)));
        assert_eq!(attr(&r, "tracer_ebpf.payload.count"), Some(&Value::IntValue(10)));
        assert_eq!(attr(&r, "tracer_ebpf.payload.content_truncated"), Some(&Value::BoolValue(true)));
        assert_eq!(attr(&r, "tracer_ebpf.payload.content_size"), Some(&Value::IntValue(10)));
        assert_eq!(attr(&r, "tracer_ebpf.payload.content"), None);
    }

    #[test]
    fn a_lost_content_is_no_body_and_says_why() {
        let content = Var { data: Bytes::new(), flags: vf::NO_SPACE, size: 0 };
        let p = Payload::SyscallsSysEnterWrite(payload::SyscallsSysEnterWrite { fd: 1, count: 3, content });
        let r = log_record(&event(EventType::SyscallsSysEnterWrite, p, b"sh"), 1, 0);
        assert_eq!(r.body, None);
        assert_eq!(attr(&r, "tracer_ebpf.payload.content_lost"), Some(&Value::StringValue("payload_full".into())));
        assert_eq!(attr(&r, "tracer_ebpf.comm_bytes"), None);
    }

    #[test]
    fn an_exec_is_a_map_with_argv_exact_and_command_args() {
        let p = Payload::SchedSchedProcessExec(Box::new(payload::SchedSchedProcessExec {
            old_pid: 10,
            argc: 3,
            filename: Var { data: Bytes::from_static(b"/bin/echo"), flags: 0, size: 0 },
            argv: Var { data: Bytes::from_static(b"echo\0\xfe\0\0"), flags: 0, size: 0 },
            uid: 1000,
            gid: 1001,
            cwd: Var { data: Bytes::from_static(b"/home/a"), flags: 0, size: 0 },
        }));
        let r = log_record(&event(EventType::SchedSchedProcessExec, p, b"echo"), 1, 0);
        assert_eq!(field(&r, "uid").unwrap().value, Some(Value::IntValue(1000)));
        assert_eq!(field(&r, "gid").unwrap().value, Some(Value::IntValue(1001)));
        assert_eq!(field(&r, "cwd").unwrap().value, Some(Value::StringValue("/home/a".into())));
        assert_eq!(attr(&r, "process.real_user.id"), Some(&Value::IntValue(1000)));
        assert_eq!(attr(&r, "process.working_directory"), Some(&Value::StringValue("/home/a".into())));
        assert_eq!(field(&r, "filename").unwrap().value, Some(Value::StringValue("/bin/echo".into())));
        assert_eq!(field(&r, "old_pid").unwrap().value, Some(Value::IntValue(10)));
        assert_eq!(field(&r, "argv").unwrap().value, Some(array([text(b"echo"), text(b"\xfe"), text(b"")].into_iter())));
        assert_eq!(
            attr(&r, "process.command_args"),
            Some(&array(["echo", "\u{fffd}", ""].into_iter().map(|s| Value::StringValue(s.into()))))
        );
        assert_eq!(attr(&r, "process.args_count"), Some(&Value::IntValue(3)));
    }

    #[test]
    fn a_cut_cwd_is_no_working_directory() {
        let none = || Var { data: Bytes::new(), flags: 0, size: 0 };
        let p = Payload::SchedSchedProcessExec(Box::new(payload::SchedSchedProcessExec {
            old_pid: 10,
            argc: 0,
            filename: none(),
            argv: none(),
            uid: 0,
            gid: 0,
            cwd: Var { data: Bytes::from_static(b"b/c"), flags: vf::TRUNCATED, size: 0 },
        }));
        let r = log_record(&event(EventType::SchedSchedProcessExec, p, b"x"), 1, 0);
        assert_eq!(attr(&r, "process.working_directory"), None);
        assert_eq!(field(&r, "cwd").unwrap().value, Some(Value::StringValue("b/c".into())));
        assert_eq!(attr(&r, "tracer_ebpf.payload.cwd_truncated"), Some(&Value::BoolValue(true)));
    }

    #[test]
    fn exit_codes_and_decoded_names() {
        let exit = |status: i32, signal: i32| {
            Payload::SchedSchedProcessExit(payload::SchedSchedProcessExit {
                exit_code: status << 8 | signal,
                exit_status: status,
                signal,
                core_dumped: 0,
                group_leader: 1,
            })
        };
        let r = log_record(&event(EventType::SchedSchedProcessExit, exit(3, 0), b"sh"), 1, 0);
        assert_eq!(attr(&r, "process.exit.code"), Some(&Value::IntValue(3)));
        let r = log_record(&event(EventType::SchedSchedProcessExit, exit(0, 9), b"sh"), 1, 0);
        assert_eq!(attr(&r, "process.exit.code"), None);
        assert_eq!(field(&r, "signal").unwrap().value, Some(Value::IntValue(9)));
        assert_eq!(field(&r, "signal_name").unwrap().value, Some(Value::StringValue("SIGKILL".into())));
    }

    #[test]
    fn a_record_written_over_another_is_the_same_as_a_fresh_one() {
        let var = |d: &'static [u8], flags| Var { data: Bytes::from_static(d), flags, size: 0 };
        let write = |content: Var| Payload::SyscallsSysEnterWrite(payload::SyscallsSysEnterWrite { fd: 1, count: 10, content });
        let exec = |cwd: Var| {
            Payload::SchedSchedProcessExec(Box::new(payload::SchedSchedProcessExec {
                old_pid: 10,
                argc: 2,
                filename: var(b"/bin/x\xff", 0),
                argv: var(b"x\0y\0", 0),
                uid: 1,
                gid: 2,
                cwd,
            }))
        };
        let events = [
            event(EventType::SyscallsSysEnterWrite, write(var(b"hello\0\xfe", vf::TRUNCATED)), b"sh\xff"),
            event(EventType::SchedSchedProcessExec, exec(var(b"/tmp", 0)), b"x"),
            event(EventType::SyscallsSysEnterWrite, write(var(b"", vf::NO_SPACE)), b"sh"),
            event(EventType::SchedSchedProcessExec, exec(var(b"", vf::NO_SPACE)), b"longer-comm"),
            event(EventType::SyscallsSysEnterWrite, write(var(b"abc", 0)), b"sh"),
            event(EventType::SyscallsSysEnterWrite, write(var(b"\xffdef", 0)), b"a"),
        ];
        // Every event after every other (and after itself).
        for a in &events {
            for b in &events {
                let mut r = log_record(a, 1, 2);
                fill_record(&mut r, b, 3, 4);
                assert_eq!(r, log_record(b, 3, 4));
            }
        }
    }

    #[test]
    fn big_unsigned_values_stay_exact() {
        assert_eq!(unsigned(u64::MAX), Value::StringValue("18446744073709551615".into()));
        assert_eq!(unsigned(i64::MAX as u64), Value::IntValue(i64::MAX));
    }
}
