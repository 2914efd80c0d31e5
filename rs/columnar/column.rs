//! One payload column being filled: an Arrow builder per `ColKind`, padded
//! with nulls for the rows whose event has no such field.

use super::schema::{lost_names, ColKind};
use crate::types::FieldKind;
use arrow_array::builder::{
    BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, Int8Builder, LargeBinaryBuilder, LargeStringBuilder, ListBuilder,
    StringBuilder, UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, DictionaryArray, StringArray};
use arrow_schema::{DataType, Field};
use std::sync::Arc;

pub(crate) enum Column {
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    Str(LargeStringBuilder),
    Bytes(LargeBinaryBuilder),
    StrList(ListBuilder<LargeStringBuilder>),
    BytesList(ListBuilder<LargeBinaryBuilder>),
    UList(ListBuilder<UInt64Builder>),
    IList(ListBuilder<Int64Builder>),
    Flag(BooleanBuilder),
    /// Keys into `lost_names()`.
    Lost(Int8Builder),
    Text(StringBuilder),
}

/// Runs `$e` with `$b` bound to the builder, whatever the variant.
macro_rules! each {
    ($self:expr, $b:ident => $e:expr) => {
        match $self {
            Column::U8($b) => $e,
            Column::U16($b) => $e,
            Column::U32($b) => $e,
            Column::U64($b) => $e,
            Column::I8($b) => $e,
            Column::I16($b) => $e,
            Column::I32($b) => $e,
            Column::I64($b) => $e,
            Column::Str($b) => $e,
            Column::Bytes($b) => $e,
            Column::StrList($b) => $e,
            Column::BytesList($b) => $e,
            Column::UList($b) => $e,
            Column::IList($b) => $e,
            Column::Flag($b) => $e,
            Column::Lost($b) => $e,
            Column::Text($b) => $e,
        }
    };
}

/// List items are never null (matches `ColKind::data_type`).
fn item<T>(values: T, t: DataType) -> ListBuilder<T>
where
    T: arrow_array::builder::ArrayBuilder,
{
    ListBuilder::new(values).with_field(Arc::new(Field::new("item", t, false)))
}

impl Column {
    pub(crate) fn new(kind: ColKind, rows: usize) -> Column {
        match kind {
            ColKind::Int(k) => match k {
                FieldKind::U8 => Column::U8(UInt8Builder::with_capacity(rows)),
                FieldKind::U16 => Column::U16(UInt16Builder::with_capacity(rows)),
                FieldKind::U32 => Column::U32(UInt32Builder::with_capacity(rows)),
                FieldKind::I8 => Column::I8(Int8Builder::with_capacity(rows)),
                FieldKind::I16 => Column::I16(Int16Builder::with_capacity(rows)),
                FieldKind::I32 => Column::I32(Int32Builder::with_capacity(rows)),
                FieldKind::I64 => Column::I64(Int64Builder::with_capacity(rows)),
                _ => Column::U64(UInt64Builder::with_capacity(rows)),
            },
            ColKind::Str => Column::Str(LargeStringBuilder::with_capacity(rows, rows * 16)),
            ColKind::Bytes => Column::Bytes(LargeBinaryBuilder::with_capacity(rows, rows * 64)),
            ColKind::StrList => Column::StrList(item(LargeStringBuilder::new(), DataType::LargeUtf8)),
            ColKind::BytesList => Column::BytesList(item(LargeBinaryBuilder::new(), DataType::LargeBinary)),
            ColKind::UList => Column::UList(item(UInt64Builder::new(), DataType::UInt64)),
            ColKind::IList => Column::IList(item(Int64Builder::new(), DataType::Int64)),
            ColKind::Flag => Column::Flag(BooleanBuilder::with_capacity(rows)),
            ColKind::Lost => Column::Lost(Int8Builder::with_capacity(rows)),
            ColKind::Text => Column::Text(StringBuilder::new()),
        }
    }

    fn len(&self) -> usize {
        use arrow_array::builder::ArrayBuilder;
        each!(self, b => ArrayBuilder::len(b))
    }

    /// Appends nulls until the column has `rows` rows.
    pub(crate) fn pad(&mut self, rows: usize) {
        let n = rows.saturating_sub(self.len());
        if n == 0 {
            return;
        }
        match self {
            Column::U8(b) => b.append_nulls(n),
            Column::U16(b) => b.append_nulls(n),
            Column::U32(b) => b.append_nulls(n),
            Column::U64(b) => b.append_nulls(n),
            Column::I8(b) => b.append_nulls(n),
            Column::I16(b) => b.append_nulls(n),
            Column::I32(b) => b.append_nulls(n),
            Column::I64(b) => b.append_nulls(n),
            Column::Str(b) => b.append_nulls(n),
            Column::Bytes(b) => b.append_nulls(n),
            Column::Flag(b) => b.append_nulls(n),
            Column::Lost(b) => b.append_nulls(n),
            Column::Text(b) => b.append_nulls(n),
            Column::StrList(b) => (0..n).for_each(|_| b.append_null()),
            Column::BytesList(b) => (0..n).for_each(|_| b.append_null()),
            Column::UList(b) => (0..n).for_each(|_| b.append_null()),
            Column::IList(b) => (0..n).for_each(|_| b.append_null()),
        }
    }

    /// An unsigned value (the column's type holds it: it is the field's).
    pub(crate) fn unsigned(&mut self, v: u64) {
        match self {
            Column::U8(b) => b.append_value(v as u8),
            Column::U16(b) => b.append_value(v as u16),
            Column::U32(b) => b.append_value(v as u32),
            Column::U64(b) => b.append_value(v),
            Column::I8(b) => b.append_value(v as i8),
            Column::I16(b) => b.append_value(v as i16),
            Column::I32(b) => b.append_value(v as i32),
            Column::I64(b) => b.append_value(v as i64),
            _ => {} // not reached: integer fields have integer columns
        }
    }

    pub(crate) fn signed(&mut self, v: i64) {
        self.unsigned(v as u64)
    }

    pub(crate) fn flag(&mut self, v: bool) {
        if let Column::Flag(b) = self {
            b.append_value(v)
        }
    }

    pub(crate) fn lost(&mut self, reason: Option<usize>) {
        if let Column::Lost(b) = self {
            b.append_option(reason.map(|i| i as i8))
        }
    }

    pub(crate) fn text(&mut self, v: Option<&str>) {
        match self {
            Column::Text(b) => b.append_option(v),
            Column::Str(b) => b.append_option(v),
            _ => {}
        }
    }

    pub(crate) fn bytes(&mut self, v: Option<&[u8]>) {
        if let Column::Bytes(b) = self {
            b.append_option(v)
        }
    }

    /// A list of strings (text, or exact bytes), or null.
    pub(crate) fn strings<'a>(&mut self, v: Option<impl Iterator<Item = &'a [u8]>>) {
        match (self, v) {
            (Column::StrList(b), Some(parts)) => {
                for p in parts {
                    b.values().append_value(String::from_utf8_lossy(p));
                }
                b.append(true);
            }
            (Column::BytesList(b), Some(parts)) => {
                for p in parts {
                    b.values().append_value(p);
                }
                b.append(true);
            }
            (Column::StrList(b), None) => b.append_null(),
            (Column::BytesList(b), None) => b.append_null(),
            _ => {}
        }
    }

    pub(crate) fn ulist(&mut self, v: &[u64]) {
        if let Column::UList(b) = self {
            b.values().append_slice(v);
            b.append(true);
        }
    }

    pub(crate) fn ilist(&mut self, v: &[i64]) {
        if let Column::IList(b) = self {
            b.values().append_slice(v);
            b.append(true);
        }
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        use arrow_array::builder::ArrayBuilder;
        match self {
            Column::Lost(b) => {
                let values: StringArray = lost_names().map(Some).collect();
                Arc::new(DictionaryArray::new(b.finish(), Arc::new(values)))
            }
            _ => each!(self, b => ArrayBuilder::finish(b)),
        }
    }
}
