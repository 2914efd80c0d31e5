//! The `tracer_ebpf._native` extension module (Cargo feature `python`).
//!
//! Thin by design: the Python package (python/tracer_ebpf/) holds the
//! user-facing API; this module exposes the tracer, events and errors.

use crate::config::Config;
use crate::error::Error;
use crate::event::Event;
use crate::types::{EventType, FieldKind, FieldValue, Var};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::sync::Mutex;
use std::time::Duration;

/// Maps a Rust error to the matching exception class of tracer_ebpf.errors.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let class = match &e {
        Error::Permission { .. } => "TracerPermissionError",
        Error::BtfMissing { .. } => "BtfMissingError",
        Error::TracefsMissing { .. } => "TracefsError",
        Error::UnknownEvent { .. } => "UnknownEventError",
        Error::TracepointMissing { .. } => "TracepointMissingError",
        Error::Config(_) => "ConfigError",
        Error::Verifier { .. } => "VerifierError",
        Error::Bpf { .. } | Error::Io { .. } => "TracerError",
    };
    let msg = e.to_string();
    match py.import("tracer_ebpf.errors").and_then(|m| m.getattr(class)).and_then(|c| c.call1((msg.clone(),))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// A running tracer. Use tracer_ebpf.Tracer, which wraps this.
#[pyclass(module = "tracer_ebpf._native")]
pub struct NativeTracer {
    // A Mutex makes the tracer shareable between Python threads: one call at
    // a time, the GIL released while it waits for events.
    inner: Mutex<crate::Tracer>,
}

impl NativeTracer {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, crate::Tracer>> {
        self.inner.lock().map_err(|_| PyRuntimeError::new_err("tracer state poisoned by an earlier panic"))
    }
}

#[pymethods]
impl NativeTracer {
    #[new]
    #[pyo3(signature = (*, events, pids, follow_children, comm, content_fds, all_fds, content_max, argv_max,
                        ring_bytes, payload_bytes_per_cpu, trace_self))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        events: Vec<String>,
        pids: Vec<u32>,
        follow_children: bool,
        comm: Vec<String>,
        content_fds: Vec<i32>,
        all_fds: bool,
        content_max: u32,
        argv_max: u32,
        ring_bytes: usize,
        payload_bytes_per_cpu: usize,
        trace_self: bool,
    ) -> PyResult<Self> {
        let cfg = Config {
            events,
            pids,
            follow_children,
            comm,
            content_fds,
            all_fds,
            content_max,
            argv_max,
            ring_bytes,
            payload_bytes_per_cpu,
            trace_self,
            ..Config::default()
        };
        let t = py.detach(|| crate::Tracer::new(cfg)).map_err(|e| to_py(py, e))?;
        Ok(NativeTracer { inner: Mutex::new(t) })
    }

    /// Waits up to `timeout` seconds, returns up to `max_events` events.
    fn poll(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<Vec<PyEvent>> {
        let timeout = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 86400.0) } else { 0.0 });
        let events = py
            .detach(|| self.inner.lock().map(|mut t| t.poll(max_events, timeout)).map_err(|_| ()))
            .map_err(|_| PyRuntimeError::new_err("tracer state poisoned by an earlier panic"))?
            .map_err(|e| to_py(py, e))?;
        Ok(events.into_iter().map(|e| PyEvent { ev: e }).collect())
    }

    /// Like poll(), but returns the events as JSON lines (bytes, one per
    /// line, newline-terminated) and their count: the fast path of
    /// tracer-example, with no Python object per event.
    fn poll_json<'py>(&self, py: Python<'py>, max_events: usize, timeout: f64) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let timeout = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 86400.0) } else { 0.0 });
        let (text, n) = py
            .detach(|| {
                self.inner
                    .lock()
                    .map(|mut t| {
                        t.poll(max_events, timeout).map(|evs| {
                            let mut s = String::with_capacity(evs.len() * 256);
                            for e in &evs {
                                crate::json::write_event(&mut s, e);
                                s.push('\n');
                            }
                            (s, evs.len())
                        })
                    })
                    .map_err(|_| ())
            })
            .map_err(|_| PyRuntimeError::new_err("tracer state poisoned by an earlier panic"))?
            .map_err(|e| to_py(py, e))?;
        Ok((PyBytes::new(py, text.as_bytes()), n))
    }

    /// Every counter, by name.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.lock()?.stats().map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        for (k, v) in s.pairs() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn set_pids(&self, py: Python<'_>, pids: Vec<u32>) -> PyResult<()> {
        self.lock()?.set_pids(&pids).map_err(|e| to_py(py, e))
    }

    fn set_comm(&self, py: Python<'_>, comm: Vec<String>) -> PyResult<()> {
        self.lock()?.set_comm(&comm).map_err(|e| to_py(py, e))
    }

    /// Names of the attached events.
    #[getter]
    fn events(&self) -> PyResult<Vec<String>> {
        Ok(self.lock()?.event_names())
    }

    /// Tracepoints a wildcard named that could not be attached: [(name, reason)].
    fn attach_failures(&self) -> PyResult<Vec<(String, String)>> {
        Ok(self.lock()?.attach_failures().to_vec())
    }

    /// Seconds from creation to attached.
    #[getter]
    fn startup_seconds(&self) -> PyResult<f64> {
        Ok(self.lock()?.startup_time().as_secs_f64())
    }

    /// Detaches and frees everything; idempotent. Waits for a concurrent
    /// poll() to return (at most its timeout).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.lock().map(|mut t| t.close()).map_err(|_| ()))
            .map_err(|_| PyRuntimeError::new_err("tracer state poisoned by an earlier panic"))
    }

    #[getter]
    fn closed(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_closed())
    }
}

/// One captured event.
#[pyclass(name = "Event", module = "tracer_ebpf._native", frozen)]
pub struct PyEvent {
    ev: Event,
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
    fn event_type(&self) -> &'static str {
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
            let r = match v {
                FieldValue::Unsigned(u) => d.set_item(info.name, u),
                FieldValue::Signed(i) => d.set_item(info.name, i),
                FieldValue::Var(var) => var_to_py(py, info.kind, var).and_then(|o| d.set_item(info.name, o)),
                FieldValue::UList(l) => d.set_item(info.name, l.to_vec()),
                FieldValue::IList(l) => d.set_item(info.name, l.to_vec()),
            };
            if let Err(e) = r {
                err.get_or_insert(e);
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
                FieldValue::Var(var) if !var.captured() => "None".to_string(),
                FieldValue::Var(var) => {
                    let mut t = String::from_utf8_lossy(&var.data[..var.data.len().min(40)]).into_owned();
                    if var.data.len() > 40 {
                        t.push('…');
                    }
                    format!("{t:?} ({} bytes)", var.data.len())
                }
                FieldValue::UList(l) => format!("{l:?}"),
                FieldValue::IList(l) => format!("{l:?}"),
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

/// The typed event catalogue: [{name, id, comment, optional, fields: [(name, type)]}].
#[pyfunction]
fn list_events<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for e in EventType::ALL {
        let d = PyDict::new(py);
        d.set_item("name", e.name())?;
        d.set_item("id", e.id())?;
        d.set_item("comment", e.comment())?;
        d.set_item("optional", e.optional())?;
        let fields: Vec<(&str, &str)> = e.fields().iter().map(|f| (f.name, f.kind.toml_name())).collect();
        d.set_item("fields", fields)?;
        out.append(d)?;
    }
    Ok(out)
}

/// Close matches among known event names.
#[pyfunction]
fn suggest_events(name: &str) -> Vec<String> {
    crate::config::suggestions(name)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeTracer>()?;
    m.add_class::<PyEvent>()?;
    m.add_function(wrap_pyfunction!(list_events, m)?)?;
    m.add_function(wrap_pyfunction!(suggest_events, m)?)?;
    m.add("DEFAULT_CONTENT_MAX", Config::default().content_max)?;
    m.add("DEFAULT_ARGV_MAX", Config::default().argv_max)?;
    m.add("DEFAULT_RING_BYTES", Config::default().ring_bytes)?;
    m.add("DEFAULT_PAYLOAD_BYTES_PER_CPU", Config::default().payload_bytes_per_cpu)?;
    Ok(())
}
