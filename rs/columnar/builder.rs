//! Events into Arrow record batches, row by row, with no per-event
//! allocation for the header and the integer and byte fields.

use super::column::Column;
use super::context::ContextColumns;
use super::schema::{lost_names, EventSchema, FieldSlot};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::json::decoded_name;
use crate::types::{FieldKind, FieldValue, Var};
use arrow_array::builder::{BinaryBuilder, BooleanBufferBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, DictionaryArray, Int32Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{Buffer, ScalarBuffer};
use std::sync::Arc;

/// Fills one record batch of `schema` from events; `finish` hands it out
/// and starts the next.
pub struct BatchBuilder {
    schema: Arc<EventSchema>,
    rows: usize,
    event_id: Vec<u64>,
    event_type: Vec<i32>,
    timestamp_ns: Vec<u64>,
    pid: Vec<u32>,
    tid: Vec<u32>,
    ppid: Vec<u32>,
    upid: Vec<u64>,
    uppid: Vec<u64>,
    comm: StringBuilder,
    comm_bytes: BinaryBuilder,
    ns_pid: Vec<u32>,
    ns_tid: Vec<u32>,
    cgroup_id: Vec<u64>,
    context: ContextColumns,
    cpu: Vec<u32>,
    payload_lost: BooleanBufferBuilder,
    payload: Vec<Column>,
    /// The previous event's type: consecutive events mostly share it.
    last: Option<(&'static str, usize)>,
}

impl BatchBuilder {
    pub fn new(schema: Arc<EventSchema>) -> BatchBuilder {
        Self::with_capacity(schema, 1024)
    }

    pub fn with_capacity(schema: Arc<EventSchema>, rows: usize) -> BatchBuilder {
        let payload = schema.payload_columns().iter().map(|(_, k)| Column::new(*k, rows)).collect();
        BatchBuilder {
            schema,
            rows: 0,
            event_id: Vec::with_capacity(rows),
            event_type: Vec::with_capacity(rows),
            timestamp_ns: Vec::with_capacity(rows),
            pid: Vec::with_capacity(rows),
            tid: Vec::with_capacity(rows),
            ppid: Vec::with_capacity(rows),
            upid: Vec::with_capacity(rows),
            uppid: Vec::with_capacity(rows),
            comm: StringBuilder::with_capacity(rows, rows * 16),
            comm_bytes: BinaryBuilder::new(),
            ns_pid: Vec::with_capacity(rows),
            ns_tid: Vec::with_capacity(rows),
            cgroup_id: Vec::with_capacity(rows),
            context: ContextColumns::default(),
            cpu: Vec::with_capacity(rows),
            payload_lost: BooleanBufferBuilder::new(rows),
            payload,
            last: None,
        }
    }

    pub fn schema(&self) -> &Arc<EventSchema> {
        &self.schema
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds `events`. An event type the schema lacks is an error, and then
    /// nothing of `events` is added.
    pub fn extend<'a>(&mut self, events: impl IntoIterator<Item = &'a Event> + Clone) -> Result<()> {
        self.check(events.clone())?;
        for e in events {
            if let Some(key) = self.key_of(e.event_type.name()) {
                self.push(e, key);
            }
        }
        Ok(())
    }

    /// Whether every one of `events` has a type of the schema (the error
    /// names the first that has not).
    pub fn check<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> Result<()> {
        match events.into_iter().find(|e| self.key_of(e.event_type.name()).is_none()) {
            None => Ok(()),
            Some(e) => Err(Error::Config(format!(
                "event type {} is not in this schema (it has {})",
                e.event_type.name(),
                self.schema.event_types().join(", ")
            ))),
        }
    }

    /// The dictionary key of an event type. Consecutive events mostly share
    /// their type, and type names are interned: the last one is compared
    /// by address first.
    fn key_of(&mut self, name: &'static str) -> Option<usize> {
        if let Some((n, k)) = self.last {
            if std::ptr::eq(n, name) || n == name {
                return Some(k);
            }
        }
        let (k, _) = self.schema.lookup(name)?;
        self.last = Some((name, k));
        Some(k)
    }

    /// Adds one event of the schema's type `key`.
    fn push(&mut self, e: &Event, key: usize) {
        let row = self.rows;
        self.event_id.push(e.event_id);
        self.event_type.push(key as i32);
        self.timestamp_ns.push(e.timestamp_ns);
        self.pid.push(e.pid);
        self.tid.push(e.tid);
        self.ppid.push(e.ppid);
        self.upid.push(e.upid);
        self.uppid.push(e.uppid);
        let comm = e.comm.as_bytes();
        match std::str::from_utf8(comm) {
            Ok(s) => {
                self.comm.append_value(s);
                self.comm_bytes.append_null();
            }
            Err(_) => {
                self.comm.append_value(String::from_utf8_lossy(comm));
                self.comm_bytes.append_value(comm);
            }
        }
        self.ns_pid.push(e.ns_pid);
        self.ns_tid.push(e.ns_tid);
        self.cgroup_id.push(e.cgroup_id);
        self.context.push(e.cgroup.as_ref());
        self.cpu.push(e.cpu);
        self.payload_lost.append(e.payload_lost());
        let mut slots = self.schema.slots(key).iter();
        let cols = &mut self.payload;
        e.payload.for_each_field(|f, v| {
            if let Some(slot) = slots.next() {
                fill(cols, row, slot, f.kind, f.decode, v);
            }
        });
        self.rows += 1;
    }

    /// The batch of the rows added since the last `finish`.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let n = self.rows;
        self.rows = 0;
        self.last = None;
        let names: StringArray = self.schema.event_types().iter().map(|s| Some(*s)).collect();
        let keys = Int32Array::from(std::mem::take(&mut self.event_type));
        let event_type = DictionaryArray::try_new(keys, Arc::new(names)).map_err(arrow_error)?;
        let ts = Buffer::from_vec(std::mem::take(&mut self.timestamp_ns));
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(std::mem::take(&mut self.event_id))),
            Arc::new(event_type),
            Arc::new(TimestampNanosecondArray::new(ScalarBuffer::new(ts.clone(), 0, n), None).with_timezone("UTC")),
            Arc::new(UInt64Array::new(ScalarBuffer::new(ts, 0, n), None)),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.pid))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.tid))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.ppid))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.upid))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.uppid))),
            Arc::new(self.comm.finish()),
            Arc::new(self.comm_bytes.finish()),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.ns_pid))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.ns_tid))),
            Arc::new(UInt64Array::from(std::mem::take(&mut self.cgroup_id))),
        ];
        columns.extend(self.context.finish().map_err(arrow_error)?);
        columns.extend::<[ArrayRef; 2]>([
            Arc::new(UInt32Array::from(std::mem::take(&mut self.cpu))),
            Arc::new(BooleanArray::new(self.payload_lost.finish(), None)),
        ]);
        for c in &mut self.payload {
            c.pad(n);
            columns.push(c.finish());
        }
        RecordBatch::try_new(self.schema.schema(), columns).map_err(arrow_error)
    }
}

/// `events` as one record batch of `schema`: what every front end's
/// `poll_arrow` returns.
pub fn record_batch(schema: Arc<EventSchema>, events: &[Event]) -> Result<RecordBatch> {
    let mut b = BatchBuilder::with_capacity(schema, events.len());
    b.extend(events)?;
    b.finish()
}

pub(crate) fn arrow_error(e: arrow_schema::ArrowError) -> Error {
    Error::Arrow { context: "building a record batch".into(), source: e }
}

/// Writes one field's value (and its auxiliary columns) at `row`.
fn fill(cols: &mut [Column], row: usize, slot: &FieldSlot, kind: FieldKind, decode: Option<crate::types::Decode>, v: FieldValue<'_>) {
    let col = &mut cols[slot.value];
    col.pad(row);
    match v {
        FieldValue::Unsigned(u) => col.unsigned(u),
        FieldValue::Signed(i) => col.signed(i),
        FieldValue::UList(l) => col.ulist(l),
        FieldValue::IList(l) => col.ilist(l),
        FieldValue::Var(var) => return fill_var(cols, row, slot, kind, var),
    }
    if let (Some(i), Some(d)) = (slot.name, decode) {
        let n = match v {
            FieldValue::Unsigned(u) => decoded_name(d, u as i64),
            FieldValue::Signed(i) => decoded_name(d, i),
            _ => None,
        };
        cols[i].pad(row);
        cols[i].text(n.as_deref());
    }
}

fn fill_var(cols: &mut [Column], row: usize, slot: &FieldSlot, kind: FieldKind, var: &Var) {
    let captured = var.captured();
    let data: &[u8] = &var.data;
    match kind {
        FieldKind::Str => {
            let (text, raw) = match std::str::from_utf8(data) {
                Ok(s) => (Some(std::borrow::Cow::Borrowed(s)), None),
                Err(_) => (Some(String::from_utf8_lossy(data)), Some(data)),
            };
            cols[slot.value].text(if captured { text.as_deref() } else { None });
            if let Some(r) = slot.raw {
                cols[r].pad(row);
                cols[r].bytes(raw.filter(|_| captured));
            }
        }
        FieldKind::StrList => {
            cols[slot.value].strings(captured.then(|| var.strings()));
            let invalid = captured && var.strings().any(|p| std::str::from_utf8(p).is_err());
            if let Some(r) = slot.raw {
                cols[r].pad(row);
                cols[r].strings(invalid.then(|| var.strings()));
            }
        }
        _ => cols[slot.value].bytes(captured.then_some(data)),
    }
    if let Some([t, l, s]) = slot.var {
        for i in [t, l, s] {
            cols[i].pad(row);
        }
        cols[t].flag(var.truncated());
        cols[l].lost(var.view().lost_index());
        let size = (var.truncated() && var.size != 0).then_some(var.size);
        match size {
            Some(v) => cols[s].unsigned(v),
            None => cols[s].pad(row + 1),
        }
    }
}

/// The `_lost` dictionary's values, for readers of the schema.
pub fn lost_reasons() -> Vec<&'static str> {
    lost_names().collect()
}
