//! poll_columns(): events column by column, with no Python object per event.

use super::event::value_to_py;
use crate::event::Event;
use crate::types::{EventType, FieldKind, FieldValue, Var};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyString};
use std::collections::HashMap;

/// The payload columns of poll_columns(): the union of the fields of the
/// tracer's events, grown when an event with new fields (a generic
/// tracepoint) shows up, so every later batch has the same columns.
#[derive(Default)]
pub(crate) struct Schema {
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
    /// For each event name, its payload column names.
    pub(crate) fn event_columns(&self) -> HashMap<String, Vec<String>> {
        self.index.iter().map(|(e, cols)| (e.clone(), cols.iter().map(|&i| self.columns[i].0.clone()).collect())).collect()
    }

    pub(crate) fn new(events: &[EventType]) -> Schema {
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
pub(crate) fn columns<'py>(py: Python<'py>, schema: &mut Schema, evs: &[Event]) -> PyResult<Bound<'py, PyDict>> {
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
    let mut ns_pid = Packed::new("I", n * 4);
    let mut ns_tid = Packed::new("I", n * 4);
    let mut cgroup_id = Packed::new("Q", n * 8);
    // cgroup, container_id, container_runtime, pod_uid: str or None,
    // shared while consecutive events share their cgroup.
    let mut context: [Vec<Bound<'py, PyAny>>; 4] = Default::default();
    let mut last_info = None;
    let mut last_context: Option<[Bound<'py, PyAny>; 4]> = None;
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
        ns_pid.bytes.extend_from_slice(&e.ns_pid.to_ne_bytes());
        ns_tid.bytes.extend_from_slice(&e.ns_tid.to_ne_bytes());
        cgroup_id.bytes.extend_from_slice(&e.cgroup_id.to_ne_bytes());
        let info = e.cgroup.as_ref();
        if last_context.is_none() || !crate::cgroup::same_cgroup(last_info, info) {
            let c = crate::json::Context::of(info.map(|i| &**i));
            let v = [c.cgroup, c.container_id, c.container_runtime, c.pod_uid]
                .map(|s| s.map_or_else(|| none.clone(), |s| PyString::new(py, s).into_any()));
            last_context = Some(v);
            last_info = info;
        }
        if let Some(v) = &last_context {
            for (col, x) in context.iter_mut().zip(v) {
                col.push(x.clone());
            }
        }
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
    d.set_item("ns_pid", ns_pid.into_py(py, &array)?)?;
    d.set_item("ns_tid", ns_tid.into_py(py, &array)?)?;
    d.set_item("cgroup_id", cgroup_id.into_py(py, &array)?)?;
    for (name, col) in crate::columnar::CONTEXT_COLUMNS.iter().zip(context) {
        d.set_item(*name, PyList::new(py, col)?)?;
    }
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
