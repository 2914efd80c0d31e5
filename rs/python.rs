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
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Maps a Rust error to the matching exception class of tracer_ebpf.errors.
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let class = match &e {
        Error::Permission { .. } => "TracerPermissionError",
        Error::BtfMissing { .. } => "BtfMissingError",
        Error::TracefsMissing { .. } => "TracefsError",
        Error::UnknownEvent { .. } => "UnknownEventError",
        Error::TracepointMissing { .. } => "TracepointMissingError",
        Error::Config(_) => "ConfigError",
        Error::Closed => "TracerClosedError",
        Error::OutOfMemory { .. } => "TracerMemoryError",
        Error::Verifier { .. } => "VerifierError",
        Error::Forked { .. } | Error::Bpf { .. } | Error::Io { .. } => "TracerError",
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
    schema: Mutex<Schema>,
    /// Reused between polls: no fresh (page-faulting) memory per batch.
    spare: Mutex<Vec<Event>>,
    /// The process that created it: a forked child must not take the
    /// mutexes (a thread of the parent may have held them at the fork).
    owner: i32,
    /// Closed in a forked child (which never touches `inner`).
    closed_in_child: std::sync::atomic::AtomicBool,
}

/// Longest wait without looking for Python signals: bounds how long Ctrl-C
/// (KeyboardInterrupt) takes to interrupt a poll.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

fn poisoned() -> PyErr {
    PyRuntimeError::new_err("tracer state poisoned by an earlier panic")
}

impl NativeTracer {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, crate::Tracer>> {
        self.check_owner()?;
        self.inner.lock().map_err(|_| poisoned())
    }

    fn forked(&self) -> bool {
        crate::fork_guard::current_pid() != self.owner
    }

    fn check_owner(&self) -> PyResult<()> {
        if self.forked() {
            Python::attach(|py| Err(to_py(py, Error::Forked { owner: self.owner })))
        } else {
            Ok(())
        }
    }

    /// Keeps an emptied `wait` buffer for the next call.
    fn recycle(&self, mut buf: Vec<Event>) {
        buf.clear();
        if let Ok(mut spare) = self.spare.lock() {
            *spare = buf;
        }
    }

    /// Up to `max_events` events, waiting up to `timeout` seconds for the
    /// first with the GIL released, in slices between which pending Python
    /// signals are handled (so Ctrl-C raises KeyboardInterrupt promptly).
    /// The Vec comes from `spare`: hand it back with `recycle`.
    fn wait(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<Vec<Event>> {
        self.check_owner()?;
        let mut out = self.spare.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        out.reserve(max_events.min(1 << 16));
        let timeout = Duration::from_secs_f64(if timeout.is_finite() { timeout.clamp(0.0, 1e9) } else { 0.0 });
        let deadline = Instant::now() + timeout;
        let mut first = true;
        loop {
            let slice = deadline.saturating_duration_since(Instant::now()).min(SIGNAL_CHECK);
            let got = py
                .detach(|| {
                    self.inner
                        .lock()
                        .map(|mut t| {
                            if t.is_closed() && !first {
                                Ok(None) // closed by another thread meanwhile
                            } else {
                                t.poll_into(&mut out, max_events, slice).map(|n| Some((n, t.is_drained())))
                            }
                        })
                        .map_err(|_| ())
                })
                .map_err(|_| poisoned())?
                .map_err(|e| to_py(py, e))?;
            first = false;
            match got {
                None => return Ok(out),
                Some((n, drained)) if n > 0 || drained || Instant::now() >= deadline => return Ok(out),
                Some(_) => py.check_signals()?,
            }
        }
    }
}

#[pymethods]
impl NativeTracer {
    #[new]
    #[pyo3(signature = (*, events, pids, follow_children, comm, content_fds, all_fds, content_max, argv_max,
                        ring_bytes, payload_bytes_per_cpu, queue_bytes, reader_thread, trace_self,
                        exclude_pids=Vec::new(), exclude_comm=Vec::new(), exclude_output_readers=true))]
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
        ring_bytes: Option<usize>,
        payload_bytes_per_cpu: Option<usize>,
        queue_bytes: Option<usize>,
        reader_thread: bool,
        trace_self: bool,
        exclude_pids: Vec<u32>,
        exclude_comm: Vec<String>,
        exclude_output_readers: bool,
    ) -> PyResult<Self> {
        // Sizes not given are sized from the memory this process may use
        // (RAM or its cgroup's limit), now: see sizing.rs.
        let defaults = Config::default();
        let cfg = Config {
            events,
            pids,
            follow_children,
            comm,
            content_fds,
            all_fds,
            content_max,
            argv_max,
            ring_bytes: ring_bytes.unwrap_or(defaults.ring_bytes),
            payload_bytes_per_cpu: payload_bytes_per_cpu.unwrap_or(defaults.payload_bytes_per_cpu),
            queue_bytes: queue_bytes.unwrap_or(defaults.queue_bytes),
            reader_thread,
            trace_self,
            exclude_pids,
            exclude_comm,
            exclude_output_readers,
            ..defaults
        };
        let t = py.detach(|| crate::Tracer::new(cfg)).map_err(|e| to_py(py, e))?;
        let schema = Mutex::new(Schema::new(t.events()));
        Ok(NativeTracer {
            inner: Mutex::new(t),
            schema,
            spare: Mutex::default(),
            owner: crate::fork_guard::current_pid(),
            closed_in_child: Default::default(),
        })
    }

    /// Waits up to `timeout` seconds, returns up to `max_events` events.
    fn poll(&self, py: Python<'_>, max_events: usize, timeout: f64) -> PyResult<Vec<PyEvent>> {
        let mut evs = self.wait(py, max_events, timeout)?;
        let out = evs.drain(..).map(|e| PyEvent { ev: e }).collect();
        self.recycle(evs);
        Ok(out)
    }

    /// Like poll(), but returns the events as JSON lines (bytes, one per
    /// line, newline-terminated) and their count: the fast path of
    /// tracer-example, with no Python object per event.
    fn poll_json<'py>(&self, py: Python<'py>, max_events: usize, timeout: f64) -> PyResult<(Bound<'py, PyBytes>, usize)> {
        let evs = self.wait(py, max_events, timeout)?;
        let text = py.detach(|| {
            let mut s = String::with_capacity(evs.len() * 256);
            for e in &evs {
                crate::json::write_event(&mut s, e);
                s.push('\n');
            }
            s
        });
        let n = evs.len();
        self.recycle(evs);
        Ok((PyBytes::new(py, text.as_bytes()), n))
    }

    /// Like poll(), but column by column: {column: array.array, list or
    /// BytesColumn}, one entry per event in each (see `columns`). No Python
    /// object per event but for `char[]`, `char[][]` and list fields.
    fn poll_columns<'py>(&self, py: Python<'py>, max_events: usize, timeout: f64) -> PyResult<Bound<'py, PyDict>> {
        let evs = self.wait(py, max_events, timeout)?;
        let cols = columns(py, &mut *self.schema.lock().map_err(|_| poisoned())?, &evs);
        self.recycle(evs);
        cols
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

    /// The buffer sizes in force and the kernel memory they hold.
    fn memory<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = self.lock()?;
        let kernel = t.kernel_memory().map_err(|e| to_py(py, e))?;
        let c = t.config();
        let d = PyDict::new(py);
        d.set_item("kernel_bytes", kernel)?;
        d.set_item("ring_bytes", c.ring_bytes)?;
        d.set_item("payload_bytes_per_cpu", c.payload_chunks_per_cpu * crate::types::CHUNK_SIZE)?;
        d.set_item("ncpus", t.ncpus())?;
        d.set_item("queue_bytes", c.queue_bytes)?;
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

    /// Processes not traced because they read this process's output.
    #[getter]
    fn output_readers(&self) -> PyResult<Vec<u32>> {
        Ok(self.lock()?.output_readers().to_vec())
    }

    /// Tracepoints a wildcard named that could not be attached: [(name, reason)].
    fn attach_failures(&self) -> PyResult<Vec<(String, String)>> {
        Ok(self.lock()?.attach_failures().to_vec())
    }

    /// For each event name seen so far by poll_columns() (and each typed
    /// event attached), its payload columns.
    #[getter]
    fn event_columns(&self) -> PyResult<HashMap<String, Vec<String>>> {
        let s = self.schema.lock().map_err(|_| poisoned())?;
        Ok(s.index.iter().map(|(e, cols)| (e.clone(), cols.iter().map(|&i| s.columns[i].0.clone()).collect())).collect())
    }

    /// Seconds from creation to attached.
    #[getter]
    fn startup_seconds(&self) -> PyResult<f64> {
        Ok(self.lock()?.startup_time().as_secs_f64())
    }

    /// Detaches: nothing new is captured; poll() hands out the rest, then
    /// returns nothing at once (`drained` becomes true).
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        self.check_owner()?;
        py.detach(|| self.inner.lock().map(|mut t| t.stop()).map_err(|_| ())).map_err(|_| poisoned())?.map_err(|e| to_py(py, e))
    }

    /// Whether stop() was called.
    #[getter]
    fn stopped(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_stopped())
    }

    /// Stopped, and everything captured has been handed out.
    #[getter]
    fn drained(&self) -> PyResult<bool> {
        Ok(self.lock()?.is_drained())
    }

    /// Detaches and frees everything; idempotent. What was not handed out is
    /// counted as `discarded`. Waits for a concurrent poll() to return
    /// (within SIGNAL_CHECK: it then returns no events). In a forked child it
    /// touches nothing: the tracer is the parent's.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        if self.forked() {
            self.closed_in_child.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        py.detach(|| self.inner.lock().map(|mut t| t.close()).map_err(|_| ())).map_err(|_| poisoned())
    }

    /// Closed; in a forked child, closed there (it was never usable there).
    #[getter]
    fn closed(&self) -> PyResult<bool> {
        if self.forked() {
            return Ok(self.closed_in_child.load(std::sync::atomic::Ordering::Relaxed));
        }
        Ok(self.lock()?.is_closed())
    }
}

/// The payload columns of poll_columns(): the union of the fields of the
/// tracer's events, grown when an event with new fields (a generic
/// tracepoint) shows up, so every later batch has the same columns.
#[derive(Default)]
struct Schema {
    /// Column name ("payload.<field>") and how its values are held.
    columns: Vec<(String, Packing)>,
    /// Per event name, the column of each of its fields (in field order).
    index: HashMap<String, Vec<usize>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Packing {
    Unsigned,
    Signed,
    /// u8[]: a BytesColumn.
    Bytes,
    Object,
}

fn packing(k: FieldKind) -> Packing {
    use FieldKind::*;
    match k {
        U8 | U16 | U32 | U64 => Packing::Unsigned,
        I8 | I16 | I32 | I64 => Packing::Signed,
        Bytes => Packing::Bytes,
        Str | StrList | IntList => Packing::Object,
    }
}

impl Schema {
    fn new(events: &[EventType]) -> Schema {
        let mut s = Schema::default();
        for e in events {
            s.add(e.name(), e.fields().iter().map(|f| (f.name, f.kind)));
        }
        s
    }

    /// Registers an event's fields (once per event name).
    fn add<'a>(&mut self, event: &str, fields: impl Iterator<Item = (&'a str, FieldKind)>) {
        if self.index.contains_key(event) {
            return;
        }
        let mut cols = Vec::new();
        for (name, kind) in fields {
            let p = packing(kind);
            let plain = format!("payload.{name}");
            // Same name, same packing: one column (integers: signed if any
            // is). Other clashes get a column of their own, named after the event.
            let int = |q: Packing| matches!(q, Packing::Signed | Packing::Unsigned);
            let found = self.columns.iter().position(|(n, q)| *n == plain && (*q == p || int(*q) && int(p)));
            let i = match found {
                Some(i) => {
                    if p == Packing::Signed {
                        self.columns[i].1 = Packing::Signed;
                    }
                    i
                }
                None => {
                    let name = if self.columns.iter().any(|(n, _)| *n == plain) { format!("payload.{event}.{name}") } else { plain };
                    self.columns.push((name, p));
                    self.columns.len() - 1
                }
            };
            cols.push(i);
        }
        self.index.insert(event.to_string(), cols);
    }
}

/// Fixed-size integers packed for `array.array(code, bytes)`.
struct Packed {
    code: &'static str,
    bytes: Vec<u8>,
}

impl Packed {
    fn new(code: &'static str, capacity: usize) -> Packed {
        Packed { code, bytes: Vec::with_capacity(capacity) }
    }
    fn into_py<'py>(self, py: Python<'py>, array: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        array.call1((self.code, PyBytes::new(py, &self.bytes)))
    }
}

/// A payload column: 64-bit integers (0 where the event has no such field),
/// packed bytes, or Python objects (None where absent or not captured).
enum Column<'py> {
    Int(Vec<u64>),
    Bytes(BytesColumn),
    Obj(Vec<Bound<'py, PyAny>>),
}

/// Events as columns, keyed like the JSON line: header fields (integers as
/// array.array: "Q" for 64-bit, "I" for 32-bit), event_type and comm (lists
/// of shared str), cpu, payload_lost ("B": 0 or 1), then "payload.<field>"
/// for every payload field of the tracer's events: "Q"/"q" arrays for
/// integers, a BytesColumn for u8[], lists for the others.
fn columns<'py>(py: Python<'py>, schema: &mut Schema, evs: &[Event]) -> PyResult<Bound<'py, PyDict>> {
    let n = evs.len();
    let none = py.None().into_bound(py);
    let mut event_id = Packed::new("Q", n * 8);
    let mut timestamp_ns = Packed::new("Q", n * 8);
    let mut upid = Packed::new("Q", n * 8);
    let mut uppid = Packed::new("Q", n * 8);
    let mut pid = Packed::new("I", n * 4);
    let mut tid = Packed::new("I", n * 4);
    let mut ppid = Packed::new("I", n * 4);
    let mut cpu = Packed::new("I", n * 4);
    let mut event_type = Vec::with_capacity(n);
    let mut comm = Vec::with_capacity(n);
    let mut lost = Packed::new("B", n);
    let mut payload: Vec<Column<'py>> = Vec::new();
    // Consecutive events mostly share their type and comm: the last one
    // found is tried before the (slower) maps.
    let mut names: HashMap<&str, (Bound<'py, PyString>, Vec<usize>)> = HashMap::new();
    let mut comms: HashMap<&[u8], Bound<'py, PyString>> = HashMap::new();
    let mut last_name: Option<(&str, Bound<'py, PyString>, Vec<usize>)> = None;
    let mut last_comm: Option<(&[u8], Bound<'py, PyString>)> = None;
    let mut err = None;
    for (row, e) in evs.iter().enumerate() {
        event_id.bytes.extend_from_slice(&e.event_id.to_ne_bytes());
        timestamp_ns.bytes.extend_from_slice(&e.timestamp_ns.to_ne_bytes());
        upid.bytes.extend_from_slice(&e.upid.to_ne_bytes());
        uppid.bytes.extend_from_slice(&e.uppid.to_ne_bytes());
        pid.bytes.extend_from_slice(&e.pid.to_ne_bytes());
        tid.bytes.extend_from_slice(&e.tid.to_ne_bytes());
        ppid.bytes.extend_from_slice(&e.ppid.to_ne_bytes());
        cpu.bytes.extend_from_slice(&e.cpu.to_ne_bytes());
        let c = e.comm.as_bytes();
        if last_comm.as_ref().is_none_or(|(l, _)| *l != c) {
            let v = comms.entry(c).or_insert_with(|| PyString::new(py, &String::from_utf8_lossy(c)));
            last_comm = Some((c, v.clone()));
        }
        comm.push(last_comm.as_ref().map(|(_, v)| v.clone()).expect("set above"));
        lost.bytes.push(u8::from(e.payload_lost()));
        let name = e.event_type.name();
        if last_name.as_ref().is_none_or(|(l, _, _)| *l != name) {
            let (ty, index) = names.entry(name).or_insert_with(|| {
                let mut fields = Vec::new();
                e.payload.for_each_field(|f, _| fields.push((f.name.to_string(), f.kind)));
                schema.add(name, fields.iter().map(|(n, k)| (n.as_str(), *k)));
                (PyString::intern(py, name), schema.index[name].clone())
            });
            last_name = Some((name, ty.clone(), index.clone()));
        }
        let (_, ty, index) = last_name.as_ref().expect("set above");
        event_type.push(ty.clone());
        // Columns added by this batch start now.
        add_columns(&mut payload, schema, n, &none);
        let mut i = 0;
        e.payload.for_each_field(|f, v| {
            let col = &mut payload[index[i]];
            i += 1;
            match (col, v) {
                (Column::Int(c), FieldValue::Unsigned(u)) => c[row] = u,
                (Column::Int(c), FieldValue::Signed(s)) => c[row] = s as u64,
                (Column::Bytes(c), FieldValue::Var(v)) => c.set(row, v),
                (Column::Obj(c), v) => match value_to_py(py, f.kind, v) {
                    Ok(x) => c[row] = x,
                    Err(e) => {
                        err.get_or_insert(e);
                    }
                },
                _ => {} // not reached: a column holds one packing
            }
        });
    }
    if let Some(e) = err {
        return Err(e);
    }
    let array = py.import("array")?.getattr("array")?;
    let d = PyDict::new(py);
    d.set_item("event_id", event_id.into_py(py, &array)?)?;
    d.set_item("event_type", PyList::new(py, event_type)?)?;
    d.set_item("timestamp_ns", timestamp_ns.into_py(py, &array)?)?;
    d.set_item("pid", pid.into_py(py, &array)?)?;
    d.set_item("tid", tid.into_py(py, &array)?)?;
    d.set_item("ppid", ppid.into_py(py, &array)?)?;
    d.set_item("upid", upid.into_py(py, &array)?)?;
    d.set_item("uppid", uppid.into_py(py, &array)?)?;
    d.set_item("comm", PyList::new(py, comm)?)?;
    d.set_item("cpu", cpu.into_py(py, &array)?)?;
    d.set_item("payload_lost", lost.into_py(py, &array)?)?;
    add_columns(&mut payload, schema, n, &none); // those of events absent from this batch
    for ((name, p), col) in schema.columns.iter().zip(payload) {
        let v = match col {
            Column::Int(c) => {
                let code = if *p == Packing::Signed { "q" } else { "Q" };
                let bytes: Vec<u8> = c.iter().flat_map(|v| v.to_ne_bytes()).collect();
                Packed { code, bytes }.into_py(py, &array)?
            }
            Column::Bytes(c) => Bound::new(py, c.finish())?.into_any(),
            Column::Obj(o) => PyList::new(py, o)?.into_any(),
        };
        d.set_item(name, v)?;
    }
    Ok(d)
}

/// A `u8[]` payload column of poll_columns(): every row's bytes in one
/// buffer, so a batch needs no Python object per event. A sequence of
/// `bytes` (None where the event has no such field or its bytes were not
/// captured); `data`, `offsets` and `valid` give the raw buffers.
#[pyclass(module = "tracer_ebpf._native", frozen, sequence)]
pub struct BytesColumn {
    data: Vec<u8>,
    /// Row i is data[offsets[i]..offsets[i + 1]].
    offsets: Vec<u64>,
    valid: Vec<u8>,
}

impl BytesColumn {
    /// `n` rows, None until `set`.
    fn new(n: usize) -> BytesColumn {
        BytesColumn { data: Vec::with_capacity(n * 64), offsets: Vec::with_capacity(n + 1), valid: vec![0; n] }
    }
    /// Fills `row` (rows are filled in increasing order).
    fn set(&mut self, row: usize, v: &Var) {
        self.pad(row);
        if v.captured() {
            self.data.extend_from_slice(&v.data);
            self.valid[row] = 1;
        }
        self.offsets.push(self.data.len() as u64);
    }
    /// Ends every row before `row` that has no value.
    fn pad(&mut self, row: usize) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        while self.offsets.len() <= row {
            self.offsets.push(self.data.len() as u64);
        }
    }
    fn finish(mut self) -> BytesColumn {
        self.pad(self.valid.len());
        self
    }
    fn row(&self, i: usize) -> Option<&[u8]> {
        (self.valid[i] != 0).then(|| &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }
}

#[pymethods]
impl BytesColumn {
    fn __len__(&self) -> usize {
        self.valid.len()
    }
    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let n = self.valid.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(pyo3::exceptions::PyIndexError::new_err("BytesColumn index out of range"));
        }
        Ok(self.row(i as usize).map(|b| PyBytes::new(py, b)))
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.to_list(py)?.try_iter()
    }
    /// The rows as a list of bytes (or None).
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, (0..self.valid.len()).map(|i| self.row(i).map(|b| PyBytes::new(py, b))))
    }
    /// Every row's bytes, concatenated.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    /// len(self) + 1 offsets ("Q" array): row i is data[offsets[i]:offsets[i + 1]].
    #[getter]
    fn offsets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let bytes = self.offsets.iter().flat_map(|o| o.to_ne_bytes()).collect();
        Packed { code: "Q", bytes }.into_py(py, &py.import("array")?.getattr("array")?)
    }
    /// 1 where the row has bytes, 0 where it is None ("B" array).
    #[getter]
    fn valid<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Packed { code: "B", bytes: self.valid.clone() }.into_py(py, &py.import("array")?.getattr("array")?)
    }
    fn __repr__(&self) -> String {
        format!("<BytesColumn of {} rows, {} bytes>", self.valid.len(), self.data.len())
    }
}

/// Appends the schema's columns missing from `payload`, empty (0 or None).
fn add_columns<'py>(payload: &mut Vec<Column<'py>>, schema: &Schema, n: usize, none: &Bound<'py, PyAny>) {
    while payload.len() < schema.columns.len() {
        payload.push(match schema.columns[payload.len()].1 {
            Packing::Object => Column::Obj(vec![none.clone(); n]),
            Packing::Bytes => Column::Bytes(BytesColumn::new(n)),
            Packing::Signed | Packing::Unsigned => Column::Int(vec![0; n]),
        });
    }
}

/// A payload value as Python: int, bytes (u8[]), str (char[]), list of str
/// (char[][]), list of int; None for a variable field not captured.
fn value_to_py<'py>(py: Python<'py>, kind: FieldKind, v: FieldValue<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        FieldValue::Unsigned(u) => u.into_pyobject(py)?.into_any(),
        FieldValue::Signed(i) => i.into_pyobject(py)?.into_any(),
        FieldValue::UList(l) => PyList::new(py, l)?.into_any(),
        FieldValue::IList(l) => PyList::new(py, l)?.into_any(),
        FieldValue::Var(v) => var_to_py(py, kind, v)?,
    })
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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Each poll builds and frees batches of several MB: see memory.rs.
    crate::memory::keep_freed_memory();
    m.add_class::<NativeTracer>()?;
    m.add_class::<PyEvent>()?;
    m.add_class::<BytesColumn>()?;
    m.add_function(wrap_pyfunction!(list_events, m)?)?;
    m.add("DEFAULT_CONTENT_MAX", Config::default().content_max)?;
    m.add("DEFAULT_ARGV_MAX", Config::default().argv_max)?;
    m.add("DEFAULT_RING_BYTES", Config::default().ring_bytes)?;
    m.add("DEFAULT_PAYLOAD_BYTES_PER_CPU", Config::default().payload_bytes_per_cpu)?;
    m.add("DEFAULT_QUEUE_BYTES", Config::default().queue_bytes)?;
    Ok(())
}
