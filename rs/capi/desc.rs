//! Event descriptors (`struct tb_event_desc`): built once for the typed
//! events (from the generated `FieldInfo`s), and per tracer for generic
//! tracepoints (from their tracefs formats), so C callers see both alike.

use super::types::{TbEventDesc, TbFieldDesc};
use crate::tracepoint_format::{FieldShape, Format};
use crate::types::{c_abi, Decode, EventType, FieldKind};
use std::ffi::{c_uint, c_ulong, CString};
use std::sync::OnceLock;

/// A descriptor and the memory its pointers point into. Boxed by its
/// owners so `raw`'s address is stable; never changed once built.
pub struct EventDesc {
    pub raw: TbEventDesc,
    _fields: Vec<TbFieldDesc>,
    _strings: Vec<CString>,
}

// SAFETY: the raw pointers point only into the descriptor's own heap
// memory, which is never written after construction.
unsafe impl Send for EventDesc {}
// SAFETY: as above: shared read-only.
unsafe impl Sync for EventDesc {}

/// One field before its name is made a C string.
struct FieldSpec<'a> {
    name: &'a str,
    kind: u32,
    offset: usize,
    decode: Option<Decode>,
    max: u64,
}

/// A C string of `s` (which never holds a NUL: names come from the
/// catalogue and tracefs; one that did would be cut there).
fn c_string(s: &str) -> CString {
    CString::new(s.split('\0').next().unwrap_or_default()).unwrap_or_default()
}

fn build(id: u32, name: &str, comment: &str, fixed_size: usize, specs: Vec<FieldSpec<'_>>) -> Box<EventDesc> {
    let mut strings = vec![c_string(name), c_string(comment)];
    let fields: Vec<TbFieldDesc> = specs
        .iter()
        .map(|f| {
            let n = c_string(f.name);
            let d = TbFieldDesc {
                name: n.as_ptr(),
                kind: f.kind,
                offset: f.offset as c_uint,
                decode: decode_const(f.decode),
                max: f.max as c_ulong,
            };
            strings.push(n); // moving a CString keeps its heap buffer
            d
        })
        .collect();
    let raw = TbEventDesc {
        id,
        name: strings[0].as_ptr(),
        comment: strings[1].as_ptr(),
        fixed_size: fixed_size as c_uint,
        nfields: fields.len() as c_uint,
        fields: if fields.is_empty() { std::ptr::null() } else { fields.as_ptr() },
    };
    Box::new(EventDesc { raw, _fields: fields, _strings: strings })
}

/// The descriptor of a typed event (built on first use, kept for the
/// process's life like the generated tables it replaces).
pub fn typed(t: EventType) -> &'static EventDesc {
    // Not moved once built: `&all[i].raw` is handed to C for good.
    static ALL: OnceLock<Vec<EventDesc>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        EventType::ALL
            .iter()
            .map(|&e| {
                let specs = e
                    .fields()
                    .iter()
                    .map(|f| FieldSpec { name: f.name, kind: kind_const(f.kind, false), offset: f.offset, decode: f.decode, max: f.max })
                    .collect();
                // Unboxed: the pointers inside point to heap memory a move keeps.
                *build(e.id(), e.name(), e.comment(), e.fixed_size(), specs)
            })
            .collect()
    });
    let i = EventType::ALL.iter().position(|&e| e == t).unwrap_or(0);
    &all[i]
}

/// The descriptor of a generic tracepoint.
pub fn generic(f: &Format) -> Box<EventDesc> {
    let specs = f
        .fields
        .iter()
        .map(|x| {
            let signed = matches!(x.shape, FieldShape::IntArray { signed: true, .. } | FieldShape::DataLocArray { signed: true, .. });
            FieldSpec { name: &x.name, kind: kind_const(x.kind(), signed), offset: x.offset, decode: x.decode, max: 0 }
        })
        .collect();
    build(f.id, f.name, "", f.raw_size, specs)
}

/// enum tb_field_kind of a field kind (`signed`: of an integer list).
pub fn kind_const(k: FieldKind, signed: bool) -> u32 {
    use FieldKind::*;
    match k {
        U8 => c_abi::FK_U8,
        U16 => c_abi::FK_U16,
        U32 => c_abi::FK_U32,
        U64 => c_abi::FK_U64,
        I8 => c_abi::FK_I8,
        I16 => c_abi::FK_I16,
        I32 => c_abi::FK_I32,
        I64 => c_abi::FK_I64,
        Str => c_abi::FK_STR,
        StrList => c_abi::FK_STRLIST,
        Bytes => c_abi::FK_BYTES,
        IntList if signed => c_abi::FK_ILIST,
        IntList => c_abi::FK_ULIST,
    }
}

/// enum tb_decode of a decode hint.
pub fn decode_const(d: Option<Decode>) -> u32 {
    match d {
        None => c_abi::DECODE_NONE,
        Some(Decode::Errno) => c_abi::DECODE_ERRNO,
        Some(Decode::OpenFlags) => c_abi::DECODE_OPEN_FLAGS,
        Some(Decode::Signal) => c_abi::DECODE_SIGNAL,
    }
}

/// The decode hint of an enum tb_decode value (unknown values: none).
pub fn decode_of(d: u32) -> Option<Decode> {
    match d {
        c_abi::DECODE_ERRNO => Some(Decode::Errno),
        c_abi::DECODE_OPEN_FLAGS => Some(Decode::OpenFlags),
        c_abi::DECODE_SIGNAL => Some(Decode::Signal),
        _ => None,
    }
}
