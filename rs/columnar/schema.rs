//! The Arrow schema of events: the header columns, then the payload columns
//! of every event type a batch can hold, and for each event type which
//! columns its fields fill.

use crate::event::EventKind;
use crate::tracepoint_format::FieldShape;
use crate::types::FieldKind;
use crate::value::LOST_REASONS;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// What a payload column holds (and so which Arrow builder fills it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColKind {
    /// An integer of the declared type (`U8` … `I64`).
    Int(FieldKind),
    /// `char[]` as text (invalid UTF-8 replaced by U+FFFD).
    Str,
    /// `u8[]`, or the exact bytes of a `char[]` that is not valid UTF-8.
    Bytes,
    /// `char[][]` as a list of text.
    StrList,
    /// The exact bytes of each string of a `char[][]` with invalid UTF-8.
    BytesList,
    /// Generic tracepoint arrays.
    UList,
    IList,
    /// `<field>_truncated`.
    Flag,
    /// `<field>_lost`: a dictionary of `LOST_REASONS`.
    Lost,
    /// `<field>_name`: the symbolic name of a decoded integer.
    Text,
}

impl ColKind {
    pub(crate) fn data_type(self) -> DataType {
        let int = |k| match k {
            FieldKind::U8 => DataType::UInt8,
            FieldKind::U16 => DataType::UInt16,
            FieldKind::U32 => DataType::UInt32,
            FieldKind::I8 => DataType::Int8,
            FieldKind::I16 => DataType::Int16,
            FieldKind::I32 => DataType::Int32,
            FieldKind::I64 => DataType::Int64,
            _ => DataType::UInt64,
        };
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, false)));
        match self {
            ColKind::Int(k) => int(k),
            ColKind::Str => DataType::LargeUtf8,
            ColKind::Bytes => DataType::LargeBinary,
            ColKind::StrList => list(DataType::LargeUtf8),
            ColKind::BytesList => list(DataType::LargeBinary),
            ColKind::UList => list(DataType::UInt64),
            ColKind::IList => list(DataType::Int64),
            ColKind::Flag => DataType::Boolean,
            ColKind::Lost => DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
            ColKind::Text => DataType::Utf8,
        }
    }
}

/// The names of `ColKind::Lost` values, in key order.
pub(crate) fn lost_names() -> impl Iterator<Item = &'static str> {
    LOST_REASONS.iter().map(|(_, n)| *n)
}

/// Where one payload field goes: its value column and, for variable fields
/// and decoded integers, the columns beside it (indices into the payload
/// columns).
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSlot {
    pub value: usize,
    /// Exact bytes where a string is not valid UTF-8.
    pub raw: Option<usize>,
    /// `_truncated`, `_lost`, `_size` of a variable field.
    pub var: Option<[usize; 3]>,
    /// `_name` of a decoded integer.
    pub name: Option<usize>,
}

/// The header columns, in order (the JSON line's, with `timestamp` beside
/// `timestamp_ns` and `comm_bytes` after `comm`; then `cpu` and
/// `payload_lost`).
pub const HEADER_COLUMNS: [&str; 20] = [
    "event_id",
    "event_type",
    "timestamp",
    "timestamp_ns",
    "pid",
    "tid",
    "ppid",
    "upid",
    "uppid",
    "comm",
    "comm_bytes",
    "ns_pid",
    "ns_tid",
    "cgroup_id",
    "cgroup",
    "container_id",
    "container_runtime",
    "pod_uid",
    "cpu",
    "payload_lost",
];

fn header_fields() -> Vec<Field> {
    use DataType::*;
    let dict = Dictionary(Box::new(Int32), Box::new(Utf8));
    let ts = Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    let types = [
        UInt64,
        dict.clone(),
        ts,
        UInt64,
        UInt32,
        UInt32,
        UInt32,
        UInt64,
        UInt64,
        Utf8,
        Binary,
        UInt32,
        UInt32,
        UInt64,
        dict.clone(),
        dict.clone(),
        dict.clone(),
        dict,
        UInt32,
        Boolean,
    ];
    let nullable = |n: &str| n == "comm_bytes" || super::context::CONTEXT_COLUMNS.contains(&n);
    HEADER_COLUMNS.iter().zip(types).map(|(n, t)| Field::new(*n, t, nullable(n))).collect()
}

/// The columns of a batch of events. Payload fields are named
/// `payload.<field>`; fields of the same name and kind in several event
/// types share a column; a field whose name is taken by another kind gets
/// `payload.<event type>.<field>`. Every payload column is nullable: null
/// where the row's event has no such field or its bytes were not captured.
#[derive(Debug)]
pub struct EventSchema {
    schema: SchemaRef,
    /// Payload columns (after the header): name and kind.
    columns: Vec<(String, ColKind)>,
    /// Event type names, in dictionary order.
    names: Vec<&'static str>,
    /// Per event type (same order), where each of its fields goes.
    slots: Vec<Vec<FieldSlot>>,
    index: HashMap<&'static str, usize>,
}

impl EventSchema {
    /// The schema for batches of these event types (duplicates ignored).
    pub fn new<'a>(kinds: impl IntoIterator<Item = &'a EventKind>) -> EventSchema {
        let mut s = EventSchema {
            schema: Arc::new(Schema::empty()),
            columns: Vec::new(),
            names: Vec::new(),
            slots: Vec::new(),
            index: HashMap::new(),
        };
        for k in kinds {
            s.add(k);
        }
        let mut fields = header_fields();
        fields.extend(s.columns.iter().map(|(n, k)| Field::new(n.as_str(), k.data_type(), true)));
        s.schema = Arc::new(Schema::new(fields));
        s
    }

    /// The Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Event type names, in the `event_type` dictionary's order.
    pub fn event_types(&self) -> &[&'static str] {
        &self.names
    }

    /// The payload column names an event type fills (in field order,
    /// auxiliary columns after their field), if the schema has it.
    pub fn event_columns(&self, event_type: &str) -> Option<Vec<&str>> {
        let slots = &self.slots[*self.index.get(event_type)?];
        let mut out = Vec::new();
        for s in slots {
            let all = [Some(s.value), s.name, s.raw].into_iter().chain(s.var.into_iter().flatten().map(Some));
            out.extend(all.flatten().map(|i| self.columns[i].0.as_str()));
        }
        Some(out)
    }

    pub(crate) fn payload_columns(&self) -> &[(String, ColKind)] {
        &self.columns
    }

    /// The field slots of the event type of dictionary key `key`.
    pub(crate) fn slots(&self, key: usize) -> &[FieldSlot] {
        &self.slots[key]
    }

    /// The dictionary key of an event type and its field slots.
    pub(crate) fn lookup(&self, event_type: &str) -> Option<(usize, &[FieldSlot])> {
        let i = *self.index.get(event_type)?;
        Some((i, &self.slots[i]))
    }

    fn add(&mut self, kind: &EventKind) {
        let event = kind.name();
        if self.index.contains_key(event) {
            return;
        }
        // (name, kind, decoded, signed list)
        let mut fields: Vec<(String, FieldKind, bool, bool)> = Vec::new();
        match kind {
            EventKind::Typed(t) => fields.extend(t.fields().iter().map(|f| (f.name.to_string(), f.kind, f.decode.is_some(), false))),
            EventKind::Generic(f) => fields.extend(f.fields.iter().map(|f| {
                let signed = matches!(f.shape, FieldShape::IntArray { signed: true, .. } | FieldShape::DataLocArray { signed: true, .. });
                (f.name.clone(), f.kind(), f.decode.is_some(), signed)
            })),
        }
        let slots = fields
            .iter()
            .map(|(name, kind, decoded, signed)| {
                let field = Spec { kind: *kind, decoded: *decoded, signed: *signed };
                self.place(&format!("payload.{name}"), field)
                    .or_else(|| self.place(&format!("payload.{event}.{name}"), field))
                    .unwrap_or_else(|| {
                        (2..)
                            .find_map(|n| self.place(&format!("payload.{event}.{name}#{n}"), field))
                            .expect("an unused numbered name exists")
                    })
            })
            .collect();
        self.index.insert(event, self.names.len());
        self.names.push(event);
        self.slots.push(slots);
    }

    /// The columns of a field named `base` (value and auxiliaries), shared
    /// with earlier fields of the same name and kind; None if one of the
    /// names is taken by another kind.
    fn place(&mut self, base: &str, spec: Spec) -> Option<FieldSlot> {
        let wanted = columns_of(base, spec);
        for (name, k) in &wanted {
            if self.columns.iter().any(|(n, q)| n == name && q != k) {
                return None;
            }
        }
        let mut idx = wanted.iter().map(|(name, k)| match self.columns.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.columns.push((name.clone(), *k));
                self.columns.len() - 1
            }
        });
        let value = idx.next()?;
        let mut slot = FieldSlot { value, ..FieldSlot::default() };
        match spec.kind {
            FieldKind::Str | FieldKind::StrList => {
                slot.raw = idx.next();
                slot.var = Some([idx.next()?, idx.next()?, idx.next()?]);
            }
            FieldKind::Bytes => slot.var = Some([idx.next()?, idx.next()?, idx.next()?]),
            _ if spec.decoded => slot.name = idx.next(),
            _ => {}
        }
        Some(slot)
    }
}

/// What decides a field's columns.
#[derive(Clone, Copy)]
struct Spec {
    kind: FieldKind,
    /// Has a decode hint (a `_name` column).
    decoded: bool,
    /// An integer list of signed values.
    signed: bool,
}

/// The columns a field of `kind` named `base` fills, value first.
fn columns_of(base: &str, spec: Spec) -> Vec<(String, ColKind)> {
    let var = |mut v: Vec<(String, ColKind)>| {
        v.push((format!("{base}_truncated"), ColKind::Flag));
        v.push((format!("{base}_lost"), ColKind::Lost));
        v.push((format!("{base}_size"), ColKind::Int(FieldKind::U64)));
        v
    };
    match spec.kind {
        FieldKind::Str => var(vec![(base.to_string(), ColKind::Str), (format!("{base}_bytes"), ColKind::Bytes)]),
        FieldKind::StrList => var(vec![(base.to_string(), ColKind::StrList), (format!("{base}_bytes"), ColKind::BytesList)]),
        FieldKind::Bytes => var(vec![(base.to_string(), ColKind::Bytes)]),
        FieldKind::IntList if spec.signed => vec![(base.to_string(), ColKind::IList)],
        FieldKind::IntList => vec![(base.to_string(), ColKind::UList)],
        k if spec.decoded => vec![(base.to_string(), ColKind::Int(k)), (format!("{base}_name"), ColKind::Text)],
        k => vec![(base.to_string(), ColKind::Int(k))],
    }
}
