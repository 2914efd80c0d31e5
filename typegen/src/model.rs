//! The event model: events.toml parsed, validated and laid out.
//!
//! Every error names the file, line and column of the offending key, so a
//! typo in events.toml reads like a compiler error.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// Size of the fixed payload slot inside each ring-buffer record. Fixed
/// fields and variable-field descriptors of one event must fit in it.
pub const FIXED_SLOT_SIZE: usize = 64;
/// Size of a variable-field descriptor (`struct tb_var`) in the fixed part.
pub const VAR_DESC_SIZE: usize = 16;
/// Ceiling for `max` of any variable field (one event's payload).
pub const VAR_MAX_CEILING: u64 = 1 << 20;
/// Default `max` of a variable field when none is given.
pub const VAR_MAX_DEFAULT: u64 = 4096;

/// The field types events.toml accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    /// `char[]`: one string, no terminating NUL stored.
    Str,
    /// `char[][]`: strings separated by NUL bytes (argv); empty strings kept.
    StrList,
    /// `u8[]`: raw bytes, binary safe.
    Bytes,
}

pub const TYPE_NAMES: &[&str] = &[
    "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "char[]", "char[][]", "u8[]",
];

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        use FieldType::*;
        Some(match s {
            "u8" => U8,
            "u16" => U16,
            "u32" => U32,
            "u64" => U64,
            "i8" => I8,
            "i16" => I16,
            "i32" => I32,
            "i64" => I64,
            "char[]" => Str,
            "char[][]" => StrList,
            "u8[]" => Bytes,
            _ => return None,
        })
    }
    pub fn toml_name(self) -> &'static str {
        use FieldType::*;
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
        }
    }
    pub fn is_var(self) -> bool {
        matches!(self, FieldType::Str | FieldType::StrList | FieldType::Bytes)
    }
    pub fn is_signed(self) -> bool {
        matches!(self, FieldType::I8 | FieldType::I16 | FieldType::I32 | FieldType::I64)
    }
    /// Size and alignment in the fixed part.
    pub fn fixed_size(self) -> usize {
        use FieldType::*;
        match self {
            U8 | I8 => 1,
            U16 | I16 => 2,
            U32 | I32 => 4,
            U64 | I64 => 8,
            Str | StrList | Bytes => VAR_DESC_SIZE,
        }
    }
    pub fn align(self) -> usize {
        if self.is_var() {
            8
        } else {
            self.fixed_size()
        }
    }
}

/// Symbolic decoding added next to an integer field in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    /// Negative values are `-errno`: adds `<field>_name` = "ENOENT".
    Errno,
    /// open(2) flags: adds `<field>_name` = "O_WRONLY|O_CREAT".
    OpenFlags,
    /// A signal number: adds `<field>_name` = "SIGKILL" (0 adds nothing).
    Signal,
}

pub const DECODE_NAMES: &[&str] = &["errno", "open_flags", "signal"];

impl Decode {
    pub fn parse(s: &str) -> Option<Decode> {
        Some(match s {
            "errno" => Decode::Errno,
            "open_flags" => Decode::OpenFlags,
            "signal" => Decode::Signal,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Decode::Errno => "errno",
            Decode::OpenFlags => "open_flags",
            Decode::Signal => "signal",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    /// Byte offset in the fixed part (the value, or the `tb_var` descriptor).
    pub offset: usize,
    /// Byte limit of a variable field.
    pub max: u64,
    pub decode: Option<Decode>,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub category: String,
    pub tracepoint: String,
    pub id: u32,
    pub comment: String,
    pub context: String,
    pub optional: bool,
    pub fields: Vec<Field>,
    /// Size of the fixed part, rounded up to 8.
    pub fixed_size: usize,
}

impl Event {
    /// "category/tracepoint", the name users see.
    pub fn name(&self) -> String {
        format!("{}/{}", self.category, self.tracepoint)
    }
    /// "category__tracepoint": C identifiers (fill functions, structs).
    pub fn ident(&self) -> String {
        format!("{}__{}", self.category, self.tracepoint)
    }
    pub fn enum_const(&self) -> String {
        format!("TB_EVENT_{}", self.ident().to_uppercase())
    }
    /// CamelCase, for Rust and Python type names.
    pub fn camel(&self) -> String {
        camel(&self.category) + &camel(&self.tracepoint)
    }
    pub fn var_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.ty.is_var())
    }
}

fn camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Model {
    /// Sorted by id.
    pub events: Vec<Event>,
}

/// An events.toml error, located at file:line:column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The offending key, e.g. `syscalls.sys_enter_write.payload[2].type`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Error {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Spanned<i64>,
    comment: Spanned<String>,
    context: Spanned<String>,
    #[serde(default)]
    optional: bool,
    payload: Vec<Spanned<RawField>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    #[serde(rename = "type")]
    ty: Spanned<String>,
    max: Option<Spanned<i64>>,
    decode: Option<Spanned<String>>,
}

type RawFile = BTreeMap<String, BTreeMap<String, Spanned<RawEvent>>>;

struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        let (line, column) = line_col(self.text, span.start);
        Error {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Names a C or Rust payload struct may not use as field names.
const RESERVED: &[&str] = &[
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "int", "long", "register", "return", "short",
    "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void",
    "volatile", "while", "as", "fn", "impl", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "self", "super", "trait", "type", "use", "where", "async", "await", "dyn", "crate",
    "in", "is", "not", "and", "or", "from", "import", "pass", "def", "class", "lambda", "None",
    "True", "False",
];

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Model, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates events.toml text; `file` is only used in messages.
pub fn parse(file: &str, text: &str) -> Result<Model, Error> {
    let loc = Locator { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let msg = e.message().trim().to_string();
        let key = match (table_at(text, span.start), msg.split('`').nth(1)) {
            (Some(t), Some(k)) if msg.contains("field") => format!("{t}.{k}"),
            (Some(t), _) => t,
            (None, _) => String::new(),
        };
        loc.err(span, &key, msg)
    })?;

    let mut events = Vec::new();
    let mut ids: HashMap<u32, String> = HashMap::new();
    for (category, table) in &raw {
        if !is_ident(category) {
            let span = table.values().next().map(|v| v.span()).unwrap_or(0..0);
            return Err(loc.err(
                span,
                category,
                "category must be a lowercase identifier ([a-z_][a-z0-9_]*)",
            ));
        }
        for (tracepoint, value) in table {
            let key = format!("{category}.{tracepoint}");
            if !is_ident(tracepoint) {
                return Err(loc.err(
                    value.span(),
                    &key,
                    "tracepoint must be a lowercase identifier ([a-z_][a-z0-9_]*)",
                ));
            }
            let ev = parse_event(&loc, category, tracepoint, value)?;
            if let Some(other) = ids.insert(ev.id, key.clone()) {
                return Err(loc.err(
                    value.get_ref().id.span(),
                    &format!("{key}.id"),
                    format!("duplicate id {} (already used by {other})", ev.id),
                ));
            }
            events.push(ev);
        }
    }
    if events.is_empty() {
        return Err(loc.err(0..0, "", "no events defined"));
    }
    events.sort_by_key(|e| e.id);
    Ok(Model { events })
}

/// The `[a.b]` table header in force at `offset`, for naming the event in
/// errors that serde reports without one.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    before.lines().rev().find_map(|l| {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.split(']').next()?;
        (!inner.starts_with('[')).then(|| inner.trim().to_string())
    })
}

fn parse_event(
    loc: &Locator<'_>,
    category: &str,
    tracepoint: &str,
    value: &Spanned<RawEvent>,
) -> Result<Event, Error> {
    let key = format!("{category}.{tracepoint}");
    let span = value.span();
    let raw = value.get_ref();

    let id = *raw.id.get_ref();
    if !(1..=u32::MAX as i64).contains(&id) {
        return Err(loc.err(raw.id.span(), &format!("{key}.id"), "id must be an integer from 1 to 4294967295"));
    }
    if raw.comment.get_ref().trim().is_empty() || raw.comment.get_ref().contains('\n') {
        return Err(loc.err(raw.comment.span(), &format!("{key}.comment"), "comment must be one non-empty line"));
    }
    let context = raw.context.get_ref().trim();
    if !is_ident(context) {
        return Err(loc.err(
            raw.context.span(),
            &format!("{key}.context"),
            "context must be the name of a struct in vmlinux.h, e.g. trace_event_raw_sys_enter",
        ));
    }

    let mut fields: Vec<Field> = Vec::new();
    let mut offset = 0usize;
    for (i, f) in raw.payload.iter().enumerate() {
        let fkey = format!("{key}.payload[{i}]");
        let f = f.get_ref();
        let name = f.name.get_ref();
        if !is_ident(name) || RESERVED.contains(&name.as_str()) {
            return Err(loc.err(
                f.name.span(),
                &format!("{fkey}.name"),
                format!("invalid field name {name:?}: use a lowercase identifier that is not a C, Rust or Python keyword"),
            ));
        }
        if name.starts_with('_') {
            return Err(loc.err(f.name.span(), &format!("{fkey}.name"), "field names starting with '_' are reserved for padding"));
        }
        if fields.iter().any(|o| &o.name == name) {
            return Err(loc.err(f.name.span(), &format!("{fkey}.name"), format!("duplicate field name {name:?}")));
        }
        let ty = FieldType::parse(f.ty.get_ref().trim()).ok_or_else(|| {
            loc.err(
                f.ty.span(),
                &format!("{fkey}.type"),
                format!("unknown type {:?}; expected one of: {}", f.ty.get_ref(), TYPE_NAMES.join(", ")),
            )
        })?;
        let max = match (&f.max, ty.is_var()) {
            (Some(m), false) => {
                return Err(loc.err(m.span(), &format!("{fkey}.max"), format!("`max` applies only to variable-length types, not {}", ty.toml_name())))
            }
            (Some(m), true) => {
                let v = *m.get_ref();
                if v < 1 || v as u64 > VAR_MAX_CEILING {
                    return Err(loc.err(m.span(), &format!("{fkey}.max"), format!("max must be from 1 to {VAR_MAX_CEILING} bytes")));
                }
                v as u64
            }
            (None, true) => VAR_MAX_DEFAULT,
            (None, false) => 0,
        };
        let decode = match &f.decode {
            None => None,
            Some(d) => {
                let dec = Decode::parse(d.get_ref()).ok_or_else(|| {
                    loc.err(d.span(), &format!("{fkey}.decode"), format!("unknown decode {:?}; expected one of: {}", d.get_ref(), DECODE_NAMES.join(", ")))
                })?;
                if ty.is_var() {
                    return Err(loc.err(d.span(), &format!("{fkey}.decode"), "decode applies only to integer fields"));
                }
                Some(dec)
            }
        };
        let align = ty.align();
        offset = offset.div_ceil(align) * align;
        fields.push(Field { name: name.clone(), ty, offset, max, decode });
        offset += ty.fixed_size();
    }
    // An event without fields still gets an 8-byte part, so its struct is
    // never empty (empty structs differ in size between C and C++).
    let fixed_size = (offset.div_ceil(8) * 8).max(8);
    if fixed_size > FIXED_SLOT_SIZE {
        return Err(loc.err(
            span,
            &format!("{key}.payload"),
            format!(
                "fixed part is {fixed_size} bytes but the record slot holds {FIXED_SLOT_SIZE} \
                 (each integer takes its size, each variable field a {VAR_DESC_SIZE}-byte descriptor)"
            ),
        ));
    }
    Ok(Event {
        category: category.to_string(),
        tracepoint: tracepoint.to_string(),
        id: id as u32,
        comment: raw.comment.get_ref().trim().to_string(),
        context: context.to_string(),
        optional: raw.optional,
        fields,
        fixed_size,
    })
}

