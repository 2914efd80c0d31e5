//! The event model: events.toml parsed, validated and laid out.
//!
//! Every error names the file, line and column of the offending key, so a
//! typo in events.toml reads like a compiler error.

use std::collections::HashMap;
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use toml_edit::{ImDocument, Item, Key, TableLike};

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

pub const TYPE_NAMES: &[&str] = &["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "char[]", "char[][]", "u8[]"];

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
    /// The tracepoint's context struct; empty for a synthetic event.
    pub context: String,
    pub optional: bool,
    /// Made by userspace (no tracepoint, no BPF handler), e.g. proc/snapshot.
    pub synthetic: bool,
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

type Span = Range<usize>;

struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn err(&self, span: Span, key: &str, message: impl Into<String>) -> Error {
        let (line, column) = line_col(self.text, span.start);
        Error { file: self.file.to_string(), line, column, key: key.to_string(), message: message.into() }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// `[a-z_][a-z0-9_]*`
fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Names a payload field may not use: keywords of C, C++, Rust or Python,
/// since each field becomes a struct member or TypedDict key in those.
const RESERVED: &[&str] = &[
    // C and C++
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "continue",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "explicit",
    "extern",
    "float",
    "for",
    "friend",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "mutable",
    "namespace",
    "new",
    "nullptr",
    "operator",
    "private",
    "protected",
    "public",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "try",
    "typedef",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "while",
    // Rust (strict and reserved)
    "abstract",
    "as",
    "async",
    "await",
    "become",
    "box",
    "crate",
    "dyn",
    "false",
    "final",
    "fn",
    "gen",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "self",
    "super",
    "trait",
    "true",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "where",
    "yield",
    // Python
    "and",
    "assert",
    "def",
    "del",
    "elif",
    "except",
    "finally",
    "from",
    "global",
    "import",
    "is",
    "lambda",
    "nonlocal",
    "not",
    "or",
    "pass",
    "raise",
    "with",
];

/// "a string", "an integer": TOML type names with their article.
fn a(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {type_name}")
}

/// A TOML table being validated: its key path (for messages), where it
/// starts, and what it must contain (for "missing key" messages).
struct Table<'a> {
    t: &'a dyn TableLike,
    path: String,
    span: Span,
    needs: &'static str,
}

impl<'a> Table<'a> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.path)
    }

    /// Rejects keys other than `allowed`, pointing at the first unknown one.
    fn only(&self, loc: &Locator<'_>, allowed: &[&str]) -> Result<(), Error> {
        match self.t.iter().find(|(k, _)| !allowed.contains(k)) {
            None => Ok(()),
            Some((k, _)) => {
                let span = self.t.key(k).and_then(Key::span).unwrap_or(self.span.clone());
                Err(loc.err(span, &self.key(k), format!("unknown key; expected one of: {}", allowed.join(", "))))
            }
        }
    }

    /// The value of `k` and where it is, if present.
    fn get(&self, k: &str) -> Option<(&'a Item, Span)> {
        let (key, item) = self.t.get_key_value(k)?;
        Some((item, item.span().or_else(|| key.span()).unwrap_or(self.span.clone())))
    }

    fn required<T>(&self, loc: &Locator<'_>, k: &str, v: Option<T>) -> Result<T, Error> {
        v.ok_or_else(|| loc.err(self.span.clone(), &self.key(k), format!("missing key ({})", self.needs)))
    }

    fn str(&self, loc: &Locator<'_>, k: &str) -> Result<Option<(&'a str, Span)>, Error> {
        let Some((item, span)) = self.get(k) else { return Ok(None) };
        match item.as_str() {
            Some(s) => Ok(Some((s, span))),
            None => Err(loc.err(span, &self.key(k), format!("{k} must be a string, found {}", a(item.type_name())))),
        }
    }

    /// An integer in `range`; `what` describes the valid values.
    fn int(&self, loc: &Locator<'_>, k: &str, range: RangeInclusive<i64>, what: &str) -> Result<Option<(i64, Span)>, Error> {
        let Some((item, span)) = self.get(k) else { return Ok(None) };
        match item.as_integer() {
            Some(v) if range.contains(&v) => Ok(Some((v, span))),
            Some(v) => Err(loc.err(span, &self.key(k), format!("{k} must be {what}, found {v}"))),
            None => Err(loc.err(span, &self.key(k), format!("{k} must be {what}, found {}", a(item.type_name())))),
        }
    }
}

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
    let doc = ImDocument::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        // toml_edit puts a detail on a second line: keep messages on one.
        let mut msg = e.message().trim().lines().map(str::trim).collect::<Vec<_>>().join(": ");
        if msg.starts_with("invalid table header") && msg.contains("duplicate key") {
            msg = "table already defined above (each [category.tracepoint] may appear only once)".to_string();
        }
        loc.err(span.clone(), &key_at(text, span.start), msg)
    })?;
    let root = doc.as_table();

    let mut events: Vec<Event> = Vec::new();
    let mut ids: HashMap<u32, String> = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    for (category, item) in root.iter() {
        let cat_span = root.key(category).and_then(Key::span).unwrap_or(0..0);
        // Names start with a letter so that their CamelCase forms are
        // valid Rust and Python type names.
        if !is_ident(category) || category.starts_with('_') {
            return Err(loc.err(cat_span, category, "category must be a lowercase identifier ([a-z][a-z0-9_]*)"));
        }
        let Some(cat) = item.as_table_like() else {
            return Err(loc.err(
                item.span().unwrap_or(cat_span),
                category,
                format!("expected a table of events such as [{category}.<tracepoint>], found {}", a(item.type_name())),
            ));
        };
        for (tracepoint, item) in cat.iter() {
            let key = format!("{category}.{tracepoint}");
            let tp_span = cat.key(tracepoint).and_then(Key::span).unwrap_or(cat_span.clone());
            if !is_ident(tracepoint) || tracepoint.starts_with('_') {
                return Err(loc.err(tp_span, &key, "tracepoint must be a lowercase identifier ([a-z][a-z0-9_]*)"));
            }
            let Some(t) = item.as_table_like() else {
                return Err(loc.err(
                    item.span().unwrap_or(tp_span),
                    &key,
                    format!("expected a table [{key}] with id, comment, context and payload, found {}", a(item.type_name())),
                ));
            };
            let table = Table {
                t,
                path: key.clone(),
                span: item.span().unwrap_or(tp_span.clone()),
                needs: "an event needs id, comment, context and payload",
            };
            let (ev, id_span) = parse_event(&loc, category, tracepoint, &table)?;
            if let Some(other) = ids.insert(ev.id, key.clone()) {
                return Err(loc.err(id_span, &format!("{key}.id"), format!("duplicate id {} (already used by {other})", ev.id)));
            }
            // `a.b_c` and `a_b.c` would both be `ABC` in Rust and Python.
            if let Some(other) = types.insert(ev.camel(), key.clone()) {
                return Err(loc.err(tp_span, &key, format!("its type name {} is already used by {other}; rename one of them", ev.camel())));
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

/// The key a syntax error at `offset` is in, as far as a line-based look can
/// tell: the `[a.b]` header in force, plus the line's own `key =` if any.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let header = text[..line_end].lines().rev().find_map(|l| {
        let inner = l.trim().strip_prefix('[')?.trim_start_matches('[');
        Some(inner.split(']').next()?.trim().to_string())
    });
    let line = text[..line_end].lines().last().unwrap_or("");
    let own = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)));
    match (header, own) {
        (Some(h), Some(k)) => format!("{h}.{k}"),
        (Some(h), None) => h,
        (None, Some(k)) => k.to_string(),
        (None, None) => String::new(),
    }
}

/// An optional `true`/`false` key (absent: false).
fn bool_key(loc: &Locator<'_>, ev: &Table<'_>, k: &str) -> Result<bool, Error> {
    match ev.get(k) {
        None => Ok(false),
        Some((item, span)) => {
            item.as_bool().ok_or_else(|| loc.err(span, &ev.key(k), format!("{k} must be true or false, found {}", a(item.type_name()))))
        }
    }
}

/// Validates one event table; also returns where its id is, for the
/// duplicate-id check.
fn parse_event(loc: &Locator<'_>, category: &str, tracepoint: &str, ev: &Table<'_>) -> Result<(Event, Span), Error> {
    let key = &ev.path;
    ev.only(loc, &["id", "comment", "context", "optional", "synthetic", "payload"])?;
    let (id, id_span) = ev.required(loc, "id", ev.int(loc, "id", 1..=u32::MAX as i64, "an integer from 1 to 4294967295")?)?;
    let (comment, comment_span) = ev.required(loc, "comment", ev.str(loc, "comment")?)?;
    if comment.trim().is_empty() || comment.contains(char::is_control) {
        return Err(loc.err(comment_span, &ev.key("comment"), "comment must be one non-empty line"));
    }
    // The comment is copied into C comments, Python docstrings and a
    // Markdown table, where these would end or break the text.
    if comment.contains("*/") || comment.contains(['"', '\\', '|']) {
        return Err(loc.err(comment_span, &ev.key("comment"), "comment must not contain \", \\, | or */ (use ' for quotes)"));
    }
    let synthetic = bool_key(loc, ev, "synthetic")?;
    let optional = bool_key(loc, ev, "optional")?;
    let context = match (ev.str(loc, "context")?, synthetic) {
        (Some((_, span)), true) => {
            return Err(loc.err(span, &ev.key("context"), "a synthetic event has no tracepoint, so no context: remove one of them"))
        }
        (None, true) => String::new(),
        (None, false) => return Err(loc.err(
            ev.span.clone(),
            &ev.key("context"),
            "missing key (an event needs id, comment, context and payload; one made by userspace has synthetic = true instead of context)",
        )),
        (Some((context, context_span)), false) => {
            if !is_ident(context.trim()) {
                return Err(loc.err(
                    context_span,
                    &ev.key("context"),
                    "context must be the name of a struct in vmlinux.h, e.g. syscall_trace_enter",
                ));
            }
            context.trim().to_string()
        }
    };
    if synthetic && optional {
        let span = ev.get("optional").map(|(_, s)| s).unwrap_or(ev.span.clone());
        return Err(loc.err(span, &ev.key("optional"), "a synthetic event has no tracepoint a kernel could lack: remove optional"));
    }
    let (payload, payload_span) = ev.required(loc, "payload", ev.get("payload"))?;
    // payload = [ { ... }, ... ], or [[category.tracepoint.payload]] tables.
    let elems: Vec<(Option<&dyn TableLike>, Option<Span>)> = match payload {
        Item::Value(toml_edit::Value::Array(a)) => a.iter().map(|v| (v.as_inline_table().map(|t| t as &dyn TableLike), v.span())).collect(),
        Item::ArrayOfTables(a) => a.iter().map(|t| (Some(t as &dyn TableLike), t.span())).collect(),
        other => {
            return Err(loc.err(
                payload_span,
                &ev.key("payload"),
                format!("payload must be an array of {{ name, type }} tables, found {}", a(other.type_name())),
            ))
        }
    };

    let mut fields: Vec<Field> = Vec::new();
    let mut spans: Vec<Span> = Vec::new();
    let mut offset = 0usize;
    for (i, (t, span)) in elems.into_iter().enumerate() {
        let span = span.unwrap_or(payload_span.clone());
        let fkey = format!("{key}.payload[{i}]");
        let Some(t) = t else {
            return Err(loc.err(span, &fkey, "a payload field must be a table such as { name = \"fd\", type = \"i32\" }"));
        };
        let f = Table { t, path: fkey, span: span.clone(), needs: "a field needs name and type" };
        f.only(loc, &["name", "type", "max", "decode"])?;
        let (name, name_span) = f.required(loc, "name", f.str(loc, "name")?)?;
        if !is_ident(name) || RESERVED.contains(&name) {
            return Err(loc.err(
                name_span,
                &f.key("name"),
                format!("invalid field name {name:?}: use a lowercase identifier that is not a C, Rust or Python keyword"),
            ));
        }
        if name.starts_with('_') {
            return Err(loc.err(name_span, &f.key("name"), "field names starting with '_' are reserved for padding"));
        }
        if fields.iter().any(|o| o.name == name) {
            return Err(loc.err(name_span, &f.key("name"), format!("duplicate field name {name:?}")));
        }
        let (ty, ty_span) = f.required(loc, "type", f.str(loc, "type")?)?;
        let ty = FieldType::parse(ty.trim())
            .ok_or_else(|| loc.err(ty_span, &f.key("type"), format!("unknown type {ty:?}; expected one of: {}", TYPE_NAMES.join(", "))))?;
        let max_range = 1..=VAR_MAX_CEILING as i64;
        let max = match (f.get("max"), ty.is_var()) {
            (Some((_, span)), false) => {
                return Err(loc.err(span, &f.key("max"), format!("max applies only to variable-length types, not {}", ty.toml_name())))
            }
            (Some(_), true) => {
                f.int(loc, "max", max_range, &format!("an integer from 1 to {VAR_MAX_CEILING} (bytes)"))?.map_or(0, |m| m.0 as u64)
            }
            (None, true) => VAR_MAX_DEFAULT,
            (None, false) => 0,
        };
        let decode = match f.str(loc, "decode")? {
            None => None,
            Some((d, span)) => {
                let dec = Decode::parse(d).ok_or_else(|| {
                    loc.err(span.clone(), &f.key("decode"), format!("unknown decode {d:?}; expected one of: {}", DECODE_NAMES.join(", ")))
                })?;
                if ty.is_var() {
                    return Err(loc.err(span, &f.key("decode"), format!("decode applies only to integer fields, not {}", ty.toml_name())));
                }
                Some(dec)
            }
        };
        let align = ty.align();
        offset = offset.div_ceil(align) * align;
        fields.push(Field { name: name.to_string(), ty, offset, max, decode });
        spans.push(span);
        offset += ty.fixed_size();
    }
    // An event without fields still gets an 8-byte part, so its struct is
    // never empty (empty structs differ in size between C and C++).
    let fixed_size = (offset.div_ceil(8) * 8).max(8);
    if fixed_size > FIXED_SLOT_SIZE {
        // Point at the first field that ends past the slot.
        let i = fields.iter().position(|f| f.offset + f.ty.fixed_size() > FIXED_SLOT_SIZE).unwrap_or(0);
        return Err(loc.err(
            spans[i].clone(),
            &format!("{key}.payload[{i}]"),
            format!(
                "field {:?} does not fit: the fixed part is {fixed_size} bytes but the record slot holds \
                 {FIXED_SLOT_SIZE} (each integer takes its size, each variable field a {VAR_DESC_SIZE}-byte descriptor)",
                fields[i].name
            ),
        ));
    }
    let event = Event {
        category: category.to_string(),
        tracepoint: tracepoint.to_string(),
        id: id as u32,
        comment: comment.trim().to_string(),
        context,
        optional,
        synthetic,
        fields,
        fixed_size,
    };
    Ok((event, id_span))
}
