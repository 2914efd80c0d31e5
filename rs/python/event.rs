//! Event: one captured event as a Python object.

use crate::event::Event;
use crate::types::{FieldKind, FieldValue, Var};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// A payload value as Python: int, bytes (u8[]), str (char[]), list of str
/// (char[][]), list of int; None for a variable field not captured.
pub(crate) fn value_to_py<'py>(py: Python<'py>, kind: FieldKind, v: FieldValue<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        FieldValue::Unsigned(u) => u.into_pyobject(py)?.into_any(),
        FieldValue::Signed(i) => i.into_pyobject(py)?.into_any(),
        FieldValue::UList(l) => PyList::new(py, l)?.into_any(),
        FieldValue::IList(l) => PyList::new(py, l)?.into_any(),
        FieldValue::Var(v) => var_to_py(py, kind, v)?,
    })
}

/// The events of a Python list of Event (copied); a TypeError naming
/// `what` for anything else in it.
pub(crate) fn events_of(list: &Bound<'_, PyList>, what: &str) -> PyResult<Vec<Event>> {
    let mut evs = Vec::with_capacity(list.len());
    for item in list.iter() {
        let e = item.cast::<PyEvent>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "{what} takes Event objects, not {}",
                item.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        evs.push(e.get().ev.clone());
    }
    Ok(evs)
}

/// One captured event.
#[pyclass(name = "Event", module = "tracer_ebpf._native", frozen)]
pub struct PyEvent {
    pub(crate) ev: Event,
}

fn var_to_py<'py>(py: Python<'py>, kind: FieldKind, v: &Var) -> PyResult<Bound<'py, PyAny>> {
    if !v.captured() {
        return Ok(py.None().into_bound(py));
    }
    Ok(match kind {
        FieldKind::Bytes => PyBytes::new(py, &v.data).into_any(),
        FieldKind::StrList => {
            let parts: Vec<String> = v.strings().map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            PyList::new(py, parts)?.into_any()
        }
        _ => PyString::new(py, &String::from_utf8_lossy(&v.data)).into_any(),
    })
}

#[pymethods]
impl PyEvent {
    #[getter]
    fn event_id(&self) -> u64 {
        self.ev.event_id
    }
    /// "category/tracepoint"
    #[getter]
    fn event_type(&self) -> &str {
        self.ev.event_type.name()
    }
    /// Nanoseconds since the Unix epoch.
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.ev.timestamp_ns
    }
    #[getter]
    fn cpu(&self) -> u32 {
        self.ev.cpu
    }
    #[getter]
    fn pid(&self) -> u32 {
        self.ev.pid
    }
    #[getter]
    fn tid(&self) -> u32 {
        self.ev.tid
    }
    #[getter]
    fn ppid(&self) -> u32 {
        self.ev.ppid
    }
    #[getter]
    fn upid(&self) -> u64 {
        self.ev.upid
    }
    #[getter]
    fn uppid(&self) -> u64 {
        self.ev.uppid
    }
    /// Process id as seen in the task's own pid namespace.
    #[getter]
    fn ns_pid(&self) -> u32 {
        self.ev.ns_pid
    }
    /// Thread id as seen in the task's own pid namespace.
    #[getter]
    fn ns_tid(&self) -> u32 {
        self.ev.ns_tid
    }
    /// cgroup v2 id: the inode of the task's cgroup2 directory.
    #[getter]
    fn cgroup_id(&self) -> u64 {
        self.ev.cgroup_id
    }
    /// The cgroup's path under the cgroup2 root ("/..."), or None when it
    /// could not be resolved (docs/context.md).
    #[getter]
    fn cgroup(&self) -> Option<&str> {
        self.ev.cgroup.as_ref()?.path.as_deref()
    }
    /// The container the task runs in (docker, containerd, cri-o, podman,
    /// systemd machines, LXC), or None.
    #[getter]
    fn container_id(&self) -> Option<&str> {
        self.ev.cgroup.as_ref()?.container_id.as_deref()
    }
    /// "docker", "containerd", "cri-o", "podman", "machine" or "lxc", or None.
    #[getter]
    fn container_runtime(&self) -> Option<&'static str> {
        self.ev.cgroup.as_ref()?.runtime
    }
    /// The Kubernetes pod UID, or None.
    #[getter]
    fn pod_uid(&self) -> Option<&str> {
        self.ev.cgroup.as_ref()?.pod_uid.as_deref()
    }
    /// The task's comm (invalid UTF-8 replaced).
    #[getter]
    fn comm(&self) -> String {
        self.ev.comm.to_string_lossy()
    }
    #[getter]
    fn comm_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.ev.comm.as_bytes())
    }
    /// True if some variable bytes of this event were not delivered.
    #[getter]
    fn payload_lost(&self) -> bool {
        self.ev.payload_lost()
    }
    /// Payload fields by name: ints, bytes (u8[]), str (char[]), list of str
    /// (char[][]); None for a variable field whose bytes were not captured.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let mut err = None;
        self.ev.payload.for_each_field(|info, v| {
            if let Err(e) = value_to_py(py, info.kind, v).and_then(|o| d.set_item(info.name, o)) {
                err.get_or_insert(e);
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }
    /// The exact bytes of each variable field (the strings of `payload` are
    /// lossy where they are not valid UTF-8): bytes, a list of bytes for
    /// char[][], None where not captured.
    #[getter]
    fn payload_raw<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let mut err = None;
        self.ev.payload.for_each_field(|info, v| {
            if let FieldValue::Var(var) = v {
                let raw = if !var.captured() {
                    Ok(py.None().into_bound(py))
                } else if info.kind == FieldKind::StrList {
                    PyList::new(py, var.strings().map(|s| PyBytes::new(py, s)).collect::<Vec<_>>()).map(Bound::into_any)
                } else {
                    Ok(PyBytes::new(py, &var.data).into_any())
                };
                if let Err(e) = raw.and_then(|o| d.set_item(info.name, o)) {
                    err.get_or_insert(e);
                }
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }
    /// Per variable field: {"truncated": bool, "lost": str|None, "size": int, "len": int}.
    #[getter]
    fn payload_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let mut err = None;
        self.ev.payload.for_each_field(|info, v| {
            if let FieldValue::Var(var) = v {
                let r = (|| {
                    let f = PyDict::new(py);
                    f.set_item("truncated", var.truncated())?;
                    f.set_item("lost", var.lost())?;
                    f.set_item("captured", var.captured())?;
                    f.set_item("size", var.size)?;
                    f.set_item("len", var.data.len())?;
                    d.set_item(info.name, f)
                })();
                if let Err(e) = r {
                    err.get_or_insert(e);
                }
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(d),
        }
    }
    /// Header fields and payload as a dict (payload as in `.payload`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("event_id", self.ev.event_id)?;
        d.set_item("event_type", self.ev.event_type.name())?;
        d.set_item("timestamp_ns", self.ev.timestamp_ns)?;
        d.set_item("pid", self.ev.pid)?;
        d.set_item("tid", self.ev.tid)?;
        d.set_item("ppid", self.ev.ppid)?;
        d.set_item("upid", self.ev.upid)?;
        d.set_item("uppid", self.ev.uppid)?;
        d.set_item("comm", self.ev.comm.to_string_lossy())?;
        d.set_item("ns_pid", self.ev.ns_pid)?;
        d.set_item("ns_tid", self.ev.ns_tid)?;
        d.set_item("cgroup_id", self.ev.cgroup_id)?;
        d.set_item("cgroup", self.cgroup())?;
        d.set_item("container_id", self.container_id())?;
        d.set_item("container_runtime", self.container_runtime())?;
        d.set_item("pod_uid", self.pod_uid())?;
        d.set_item("payload", self.payload(py)?)?;
        Ok(d)
    }
    /// Text of a variable field (default: the first one), invalid UTF-8
    /// replaced by U+FFFD: never raises on binary content. None if the event
    /// has no such field or its bytes were not captured.
    #[pyo3(signature = (field=None))]
    fn text(&self, field: Option<&str>) -> Option<String> {
        let mut out = None;
        self.ev.payload.for_each_field(|info, v| {
            if let FieldValue::Var(var) = v {
                if out.is_none() && field.is_none_or(|f| f == info.name) && var.captured() {
                    out = Some(String::from_utf8_lossy(&var.data).into_owned());
                }
            }
        });
        out
    }
    /// The JSON line tracer-example prints (no trailing newline).
    fn to_json(&self) -> String {
        self.ev.to_json()
    }
    fn __repr__(&self) -> String {
        let mut fields = Vec::new();
        self.ev.payload.for_each_field(|info, v| {
            let s = match v {
                FieldValue::Unsigned(u) => u.to_string(),
                FieldValue::Signed(i) => i.to_string(),
                FieldValue::UList(l) => format!("{l:?}"),
                FieldValue::IList(l) => format!("{l:?}"),
                FieldValue::Var(var) if !var.captured() => "None".to_string(),
                FieldValue::Var(var) => {
                    let mut t = String::from_utf8_lossy(&var.data[..var.data.len().min(40)]).into_owned();
                    if var.data.len() > 40 {
                        t.push('…');
                    }
                    format!("{t:?} ({} bytes)", var.data.len())
                }
            };
            fields.push(format!("{}={}", info.name, s));
        });
        format!(
            "<Event {} pid={} tid={} comm={:?} {}>",
            self.ev.event_type.name(),
            self.ev.pid,
            self.ev.tid,
            self.ev.comm.to_string_lossy(),
            fields.join(" ")
        )
    }
}
