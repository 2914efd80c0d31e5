//! Field descriptions and values shared by the generated payload types.

/// The events.toml type of a payload field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    /// `char[]`
    Str,
    /// `char[][]`, NUL-separated
    StrList,
    /// `u8[]`
    Bytes,
    /// A list of integers (generic tracepoints' arrays).
    IntList,
}

impl FieldKind {
    /// The events.toml spelling.
    pub fn toml_name(self) -> &'static str {
        use FieldKind::*;
        match self {
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            Str => "char[]",
            StrList => "char[][]",
            Bytes => "u8[]",
            IntList => "int[]",
        }
    }
}

/// Symbolic decoding of an integer field (events.toml `decode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    Errno,
    OpenFlags,
    Signal,
}

/// Static description of one payload field.
#[derive(Clone, Copy, Debug)]
pub struct FieldInfo {
    pub name: &'static str,
    pub kind: FieldKind,
    /// Offset in the record's fixed part.
    pub offset: usize,
    /// Byte limit of a variable field (0 for integers).
    pub max: u64,
    pub decode: Option<Decode>,
}

/// Flags of a variable field: TB_VAR_*, generated from typegen's one
/// definition.
pub use crate::types::var_flags;

/// A variable-length field: its bytes and what happened to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Var {
    /// Shared, cheaply cloned bytes (often a slice of the reader's blocks,
    /// see `byte_blocks`).
    pub data: bytes::Bytes,
    /// `var_flags::*`
    pub flags: u32,
    /// Original size in bytes when known (e.g. write's count), else 0.
    pub size: u64,
}

impl Var {
    /// The bytes and flags, borrowed.
    pub fn view(&self) -> VarRef<'_> {
        VarRef { data: &self.data, flags: self.flags, size: self.size }
    }
    /// True if the bytes were captured (possibly truncated).
    pub fn captured(&self) -> bool {
        self.view().captured()
    }
    pub fn truncated(&self) -> bool {
        self.view().truncated()
    }
    /// Why bytes are missing, if they are (see `VarRef::lost`).
    pub fn lost(&self) -> Option<&'static str> {
        self.view().lost()
    }
    /// The strings of a `char[][]` field (see `VarRef::strings`).
    pub fn strings(&self) -> impl Iterator<Item = &[u8]> {
        self.view().strings()
    }
}

/// Why a variable field's bytes are missing, by flag, in order of precedence:
/// lost on the way ("payload_full", "overwritten", "fault"), never asked
/// for ("not_selected", "null_pointer", "unavailable"), or not in /proc
/// when a proc/snapshot event was made ("exited", "unreadable").
pub const LOST_REASONS: [(u32, &str); 8] = [
    (var_flags::NO_SPACE, "payload_full"),
    (var_flags::OVERWRITTEN, "overwritten"),
    (var_flags::FAULT, "fault"),
    (var_flags::NOT_CAPTURED, "not_selected"),
    (var_flags::NULL_POINTER, "null_pointer"),
    (var_flags::UNAVAILABLE, "unavailable"),
    (var_flags::EXITED, "exited"),
    (var_flags::UNREADABLE, "unreadable"),
];

/// A variable field borrowed from anywhere: a decoded `Var`, or the bytes a
/// C caller's `struct tb_field` points at (see `capi`).
#[derive(Clone, Copy, Debug)]
pub struct VarRef<'a> {
    pub data: &'a [u8],
    /// `var_flags::*`
    pub flags: u32,
    /// Original size in bytes when known, else 0.
    pub size: u64,
}

impl<'a> VarRef<'a> {
    /// True if the bytes were captured (possibly truncated).
    pub fn captured(&self) -> bool {
        const NONE: u32 = var_flags::NOT_CAPTURED
            | var_flags::NO_SPACE
            | var_flags::OVERWRITTEN
            | var_flags::NULL_POINTER
            | var_flags::UNAVAILABLE
            | var_flags::EXITED
            | var_flags::UNREADABLE;
        self.flags & NONE == 0
    }
    pub fn truncated(&self) -> bool {
        self.flags & var_flags::TRUNCATED != 0
    }
    /// Why bytes are missing, if they are: lost on the way ("payload_full",
    /// "overwritten", "fault") or never asked for ("not_selected",
    /// "null_pointer", "unavailable"), or not in /proc for a snapshot
    /// ("exited", "unreadable"). Every field that is not captured has one.
    pub fn lost(&self) -> Option<&'static str> {
        self.lost_index().map(|i| LOST_REASONS[i].1)
    }
    /// The position of `lost()` in `LOST_REASONS`.
    pub fn lost_index(&self) -> Option<usize> {
        LOST_REASONS.iter().position(|(bit, _)| self.flags & bit != 0)
    }
    /// The strings of a `char[][]` field (argv): NUL-separated, empty ones kept.
    /// No bytes is no strings; a single NUL is one empty string.
    pub fn strings(&self) -> impl Iterator<Item = &'a [u8]> {
        let empty = self.data.is_empty();
        let data = self.data.strip_suffix(&[0]).unwrap_or(self.data);
        data.split(|&b| b == 0).filter(move |_| !empty)
    }
}

/// One field's value, borrowed from a decoded payload.
#[derive(Clone, Copy, Debug)]
pub enum FieldValue<'a> {
    Unsigned(u64),
    Signed(i64),
    Var(&'a Var),
    UList(&'a [u64]),
    IList(&'a [i64]),
}

/// A field's name and how to present it: a typed event's static FieldInfo,
/// or a generic tracepoint's format field.
#[derive(Clone, Copy, Debug)]
pub struct FieldRef<'a> {
    pub name: &'a str,
    pub kind: FieldKind,
    pub decode: Option<Decode>,
}

impl From<&'static FieldInfo> for FieldRef<'static> {
    fn from(f: &'static FieldInfo) -> Self {
        FieldRef { name: f.name, kind: f.kind, decode: f.decode }
    }
}
