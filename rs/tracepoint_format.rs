//! Tracefs format files (`events/<category>/<name>/format`): how a generic
//! tracepoint's raw record is laid out, and how to decode each field.

use crate::decode::DecodeError;
use crate::value::{Decode, FieldKind, FieldRef, FieldValue, Var};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// How one field of a raw record is decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldShape {
    /// An integer of `size` bytes (a pointer is an unsigned integer).
    Int { signed: bool },
    /// A fixed `char name[N]`: a NUL-padded string.
    CharArray,
    /// A fixed array of integers (`u8 addr[16]`, `unsigned long stack[8]`).
    IntArray { elem: usize, signed: bool },
    /// `__data_loc char[]`: a string stored after the fixed fields.
    DataLocStr,
    /// `__data_loc T[]`: an array of integers stored after the fixed fields.
    DataLocArray { elem: usize, signed: bool },
    /// A pointer to a user-space string (syscall arguments such as
    /// `filename`): the kernel program copies the string, index `slot`.
    UserStr { slot: usize },
    /// A `const char *const *` syscall argument (argv, envp of execve): the
    /// kernel program copies the NULL-terminated array of strings it points
    /// to (at most TB_GENERIC_LIST_STRS strings, TB_GENERIC_LIST_BYTES
    /// bytes), NUL-separated, into user-string `slot`.
    UserStrList { slot: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
    pub shape: FieldShape,
    pub decode: Option<Decode>,
}

impl FormatField {
    /// The events.toml-style kind, for catalogues and Python types.
    pub fn kind(&self) -> FieldKind {
        match &self.shape {
            FieldShape::Int { signed: true } => FieldKind::I64,
            FieldShape::Int { signed: false } => FieldKind::U64,
            FieldShape::CharArray | FieldShape::DataLocStr | FieldShape::UserStr { .. } => FieldKind::Str,
            FieldShape::UserStrList { .. } => FieldKind::StrList,
            FieldShape::IntArray { .. } | FieldShape::DataLocArray { .. } => FieldKind::IntList,
        }
    }
}

/// Interns a tracepoint name: one leaked copy per distinct name for the
/// life of the process (bounded by the kernel's tracepoints), so event names
/// are `&'static str` for typed and generic events alike.
pub fn intern(name: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = set.get(name) {
        return s;
    }
    let s: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(s);
    s
}

/// A parsed format file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// "category/name".
    pub name: &'static str,
    /// The tracefs ID (the record's common_type).
    pub id: u32,
    /// Fields after the common ones, in record order.
    pub fields: Vec<FormatField>,
    /// Bytes of the fixed part of the record.
    pub raw_size: usize,
}

/// Most user-string pointer fields captured per event (TB_GENERIC_MAX_STRS).
pub const MAX_USER_STRS: usize = 3;
/// Most __data_loc fields per event (TB_GENERIC_MAX_DATALOC).
pub const MAX_DATALOC: usize = 8;

fn type_is_signed(c_type: &str) -> Option<bool> {
    let t = c_type.trim();
    if t.contains('*') {
        return Some(false);
    }
    let base = t.trim_start_matches("const ").trim();
    if base.starts_with("unsigned")
        || base.starts_with('u') && base[1..].chars().all(|c| c.is_ascii_digit())
        || base.starts_with("__u")
        || base.starts_with("size_t")
        || base == "bool"
        || base.starts_with("umode_t")
        || base.starts_with("gfp_t")
        || base.starts_with("dev_t")
        || base.starts_with("uid_t")
        || base.starts_with("gid_t")
    {
        return Some(false);
    }
    if matches!(
        base,
        "int" | "long" | "short" | "long long" | "signed char" | "pid_t" | "ssize_t" | "loff_t" | "off_t" | "time64_t" | "clockid_t"
    ) || base.starts_with("s") && base[1..].chars().all(|c| c.is_ascii_digit()) && base.len() > 1
        || base.starts_with("__s")
    {
        return Some(true);
    }
    None
}

/// Width of an integer C type when the format gives a wider slot (syscall
/// arguments are all 8 bytes; an `int fd` is the low 4).
fn type_width(c_type: &str) -> Option<usize> {
    let base = c_type.trim().trim_start_matches("const ").trim();
    Some(match base {
        "int" | "unsigned int" | "pid_t" | "u32" | "s32" | "__u32" | "__s32" | "uid_t" | "gid_t" | "key_serial_t" | "clockid_t"
        | "mqd_t" | "timer_t" | "qid_t" | "rwf_t" => 4,
        "short" | "unsigned short" | "u16" | "s16" | "umode_t" => 2,
        _ => return None,
    })
}

/// Parses the text of a format file for `category/name`.
pub fn parse(name: &str, text: &str) -> Result<Format, String> {
    let mut id = None;
    let mut fields = Vec::new();
    let mut raw_size = 0;
    let mut strs = 0;
    let is_syscall = name.starts_with("syscalls/");
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = v.trim().parse::<u32>().ok();
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else { continue };
        // "TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;"
        let mut parts = rest.split(';').map(str::trim);
        let decl = parts.next().unwrap_or_default();
        let mut offset = None;
        let mut size = None;
        let mut signed = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse::<usize>().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse::<usize>().ok();
            } else if let Some(v) = p.strip_prefix("signed:") {
                signed = Some(v == "1");
            }
        }
        let (Some(offset), Some(size)) = (offset, size) else {
            return Err(format!("{name}: cannot parse field line {line:?}"));
        };
        let end = offset.checked_add(size).filter(|&e| e <= 1 << 16).ok_or_else(|| format!("{name}: field out of range in {line:?}"))?;
        raw_size = raw_size.max(end);
        let (c_type, fname, array) = split_decl(decl).ok_or_else(|| format!("{name}: cannot parse declaration {decl:?}"))?;
        if fname.starts_with("common_") {
            continue;
        }
        let signed_t = type_is_signed(&c_type).unwrap_or(signed.unwrap_or(false)) || signed == Some(true) && !c_type.contains('*');
        let elem_type = c_type.trim_start_matches("__data_loc ").to_string();
        let shape = if c_type.starts_with("__data_loc") {
            let elem = elem_type.trim_end_matches("[]").trim().to_string();
            if elem.ends_with("char") {
                FieldShape::DataLocStr
            } else {
                let w = type_width(&elem).or_else(|| int_size(&elem)).unwrap_or(1);
                FieldShape::DataLocArray { elem: w, signed: type_is_signed(&elem).unwrap_or(false) }
            }
        } else if let Some(n) = array {
            if c_type.ends_with("char") && !c_type.contains("unsigned") {
                FieldShape::CharArray
            } else {
                let elem = size.checked_div(n).unwrap_or(1);
                FieldShape::IntArray { elem: elem.max(1), signed: signed_t }
            }
        } else if is_syscall && is_user_str_list(&c_type) && strs < MAX_USER_STRS {
            strs += 1;
            FieldShape::UserStrList { slot: strs - 1 }
        } else if is_syscall && c_type.contains("char *") && c_type.starts_with("const") && fname != "buf" && strs < MAX_USER_STRS {
            strs += 1;
            FieldShape::UserStr { slot: strs - 1 }
        } else {
            FieldShape::Int { signed: signed_t }
        };
        // Syscall arguments sit in 8-byte slots; an int argument is the low 4.
        let size = match (&shape, type_width(&c_type)) {
            (FieldShape::Int { .. }, Some(w)) if w < size => w,
            _ => size,
        };
        let decode = if name.starts_with("syscalls/sys_exit_") && fname == "ret" { Some(Decode::Errno) } else { None };
        fields.push(FormatField { name: fname, c_type, offset, size, shape, decode });
    }
    let id = id.ok_or_else(|| format!("{name}: format has no ID"))?;
    if fields.iter().filter(|f| f.shape == FieldShape::DataLocStr || matches!(f.shape, FieldShape::DataLocArray { .. })).count()
        > MAX_DATALOC
    {
        return Err(format!("{name}: more than {MAX_DATALOC} __data_loc fields"));
    }
    Ok(Format { name: intern(name), id, fields, raw_size })
}

/// `const char *const *` or `const char **`: an array of user strings.
fn is_user_str_list(c_type: &str) -> bool {
    let t: String = c_type.chars().filter(|c| !c.is_whitespace()).collect();
    matches!(t.as_str(), "constchar*const*" | "constchar**" | "char*const*" | "char**")
}

fn int_size(t: &str) -> Option<usize> {
    let t = t.trim();
    Some(match t {
        "u8" | "s8" | "__u8" | "char" | "unsigned char" | "signed char" | "bool" => 1,
        "u16" | "s16" | "__u16" | "short" | "unsigned short" => 2,
        "u32" | "s32" | "__u32" | "int" | "unsigned int" => 4,
        "u64" | "s64" | "__u64" | "long" | "unsigned long" | "long long" | "unsigned long long" | "size_t" => 8,
        _ => return None,
    })
}

/// Splits "const char * filename" / "char comm[16]" / "__data_loc char[] name"
/// into (type, name, array length).
fn split_decl(decl: &str) -> Option<(String, String, Option<usize>)> {
    let decl = decl.trim();
    let (head, array) = match decl.rfind('[') {
        Some(i) if decl.ends_with(']') && !decl[..i].ends_with("[]") && !decl.starts_with("__data_loc") => {
            let n = decl[i + 1..decl.len() - 1].trim().parse::<usize>().unwrap_or(0);
            (&decl[..i], Some(n))
        }
        _ => (decl, None),
    };
    let split = head.rfind(|c: char| c.is_whitespace() || c == '*')?;
    let name = head[split + 1..].trim().to_string();
    let c_type = head[..split + 1].trim().to_string();
    if name.is_empty() || c_type.is_empty() {
        return None;
    }
    Some((c_type, name, array))
}

/// Reads and parses the format of `category/name` from the tracing directory.
pub fn load(tracing: &Path, name: &str) -> Result<Format, String> {
    let (cat, tp) = name.split_once('/').ok_or_else(|| format!("{name}: not category/name"))?;
    let path = tracing.join("events").join(cat).join(tp).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(name, &text)
}

/// One decoded value of a generic field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenericValue {
    Unsigned(u64),
    Signed(i64),
    Str(Var),
    UList(Vec<u64>),
    IList(Vec<i64>),
}

/// A decoded generic event payload: values in format order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenericPayload {
    pub format: Arc<Format>,
    pub values: Vec<GenericValue>,
    /// The raw record as captured (flags tell whether it was cut).
    pub raw_flags: u32,
}

fn int_at(raw: &[u8], off: usize, size: usize, signed: bool) -> Option<GenericValue> {
    let b = raw.get(off..off.checked_add(size)?)?;
    let mut v: u64 = 0;
    for (i, byte) in b.iter().enumerate().take(8) {
        v |= (*byte as u64) << (8 * i);
    }
    Some(if signed {
        if size == 0 {
            return Some(GenericValue::Signed(0));
        }
        let shift = 64 - 8 * size.min(8) as u32;
        GenericValue::Signed(((v << shift) as i64) >> shift)
    } else {
        GenericValue::Unsigned(v)
    })
}

fn cstr(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

impl GenericPayload {
    /// Decodes a raw record (`raw`) and the user strings (`strs`) captured by
    /// handle__generic. Fields beyond what was captured are errors, never
    /// out-of-bounds reads.
    pub fn decode(format: Arc<Format>, raw: &Var, strs: [Var; MAX_USER_STRS]) -> Result<GenericPayload, DecodeError> {
        let r = &raw.data;
        let oob = |f: &FormatField| DecodeError::OutOfBounds { offset: f.offset, len: f.size, size: r.len() };
        let mut values = Vec::with_capacity(format.fields.len());
        let mut strs = strs.into_iter();
        for f in &format.fields {
            let v = match &f.shape {
                FieldShape::Int { signed } => int_at(r, f.offset, f.size, *signed).ok_or_else(|| oob(f))?,
                FieldShape::CharArray => {
                    let b = r.get(f.offset..f.offset.saturating_add(f.size)).ok_or_else(|| oob(f))?;
                    GenericValue::Str(Var { data: Bytes::copy_from_slice(cstr(b)), flags: 0, size: 0 })
                }
                FieldShape::IntArray { elem, signed } => {
                    let b = r.get(f.offset..f.offset.saturating_add(f.size)).ok_or_else(|| oob(f))?;
                    list(b, *elem, *signed)
                }
                FieldShape::DataLocStr | FieldShape::DataLocArray { .. } => {
                    let loc = match int_at(r, f.offset, 4, false) {
                        Some(GenericValue::Unsigned(l)) => l as usize,
                        _ => return Err(oob(f)),
                    };
                    let (off, len) = (loc & 0xffff, loc >> 16);
                    let b =
                        r.get(off..off.saturating_add(len)).ok_or(DecodeError::VarOutOfBounds { offset: off, len, available: r.len() })?;
                    match &f.shape {
                        FieldShape::DataLocStr => GenericValue::Str(Var { data: Bytes::copy_from_slice(cstr(b)), flags: 0, size: 0 }),
                        FieldShape::DataLocArray { elem, signed } => list(b, *elem, *signed),
                        _ => unreachable!("matched above"),
                    }
                }
                FieldShape::UserStr { .. } | FieldShape::UserStrList { .. } => GenericValue::Str(strs.next().unwrap_or_default()),
            };
            values.push(v);
        }
        Ok(GenericPayload { format, values, raw_flags: raw.flags })
    }
}

impl GenericPayload {
    /// Calls `f` with each field's description and value, in format order.
    pub fn for_each_field<'a>(&'a self, mut f: impl FnMut(FieldRef<'a>, FieldValue<'a>)) {
        for (field, v) in self.format.fields.iter().zip(&self.values) {
            let r = FieldRef { name: &field.name, kind: field.kind(), decode: field.decode };
            let v = match v {
                GenericValue::Unsigned(u) => FieldValue::Unsigned(*u),
                GenericValue::Signed(i) => FieldValue::Signed(*i),
                GenericValue::Str(s) => FieldValue::Var(s),
                GenericValue::UList(l) => FieldValue::UList(l),
                GenericValue::IList(l) => FieldValue::IList(l),
            };
            f(r, v);
        }
    }
}

fn list(b: &[u8], elem: usize, signed: bool) -> GenericValue {
    let elem = elem.clamp(1, 8);
    if signed {
        GenericValue::IList(
            b.chunks_exact(elem)
                .filter_map(|c| match int_at(c, 0, elem, true) {
                    Some(GenericValue::Signed(v)) => Some(v),
                    _ => None,
                })
                .collect(),
        )
    } else {
        GenericValue::UList(
            b.chunks_exact(elem)
                .filter_map(|c| match int_at(c, 0, elem, false) {
                    Some(GenericValue::Unsigned(v)) => Some(v),
                    _ => None,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENAME: &str = "name: sys_enter_renameat2\nID: 872\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:int olddfd;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:const char * oldname;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:int newdfd;\toffset:32;\tsize:8;\tsigned:0;\n\
        \tfield:const char * newname;\toffset:40;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned int flags;\toffset:48;\tsize:8;\tsigned:0;\n";

    const DMA: &str = "name: dma_map_sg\nID: 99\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:__data_loc char[] device;\toffset:8;\tsize:4;\tsigned:0;\n\
        \tfield:__data_loc u64[] phys_addrs;\toffset:12;\tsize:4;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:16;\tsize:16;\tsigned:0;\n\
        \tfield:s16 prio[2];\toffset:32;\tsize:4;\tsigned:1;\n";

    #[test]
    fn parses_syscall_arguments() {
        let f = parse("syscalls/sys_enter_renameat2", RENAME).unwrap();
        assert_eq!(f.id, 872);
        let names: Vec<&str> = f.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["__syscall_nr", "olddfd", "oldname", "newdfd", "newname", "flags"]);
        assert_eq!(f.fields[1].shape, FieldShape::Int { signed: true });
        assert_eq!(f.fields[1].size, 4);
        assert_eq!(f.fields[2].shape, FieldShape::UserStr { slot: 0 });
        assert_eq!(f.fields[4].shape, FieldShape::UserStr { slot: 1 });
        assert_eq!(f.fields[5].shape, FieldShape::Int { signed: false });
        assert_eq!(f.raw_size, 56);
    }

    const EXECVE: &str = "name: sys_enter_execve\nID: 862\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
        \tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:const char *const * argv;\toffset:24;\tsize:8;\tsigned:0;\n\
        \tfield:const char *const * envp;\toffset:32;\tsize:8;\tsigned:0;\n";

    #[test]
    fn string_array_arguments_are_string_lists() {
        let f = parse("syscalls/sys_enter_execve", EXECVE).unwrap();
        let shapes: Vec<&FieldShape> = f.fields.iter().map(|f| &f.shape).collect();
        assert_eq!(
            shapes,
            [
                &FieldShape::Int { signed: true },
                &FieldShape::UserStr { slot: 0 },
                &FieldShape::UserStrList { slot: 1 },
                &FieldShape::UserStrList { slot: 2 }
            ]
        );
        assert_eq!(f.fields[2].kind(), FieldKind::StrList);
    }

    #[test]
    fn decodes_data_loc_arrays_and_strings() {
        let f = Arc::new(parse("dma/dma_map_sg", DMA).unwrap());
        let mut raw = vec![0u8; 36];
        raw.extend_from_slice(b"vda\0");
        for a in [0x1000u64, 0xdead_beef] {
            raw.extend_from_slice(&a.to_le_bytes());
        }
        raw[8..12].copy_from_slice(&((4u32 << 16) | 36).to_le_bytes());
        raw[12..16].copy_from_slice(&((16u32 << 16) | 40).to_le_bytes());
        raw[16..20].copy_from_slice(b"kwo\0");
        raw[32..34].copy_from_slice(&(-5i16).to_le_bytes());
        raw[34..36].copy_from_slice(&7i16.to_le_bytes());
        let p = GenericPayload::decode(f, &Var { data: raw.into(), flags: 0, size: 0 }, Default::default()).unwrap();
        assert_eq!(p.values[0], GenericValue::Str(Var { data: Bytes::from_static(b"vda"), flags: 0, size: 0 }));
        assert_eq!(p.values[1], GenericValue::UList(vec![0x1000, 0xdead_beef]));
        assert_eq!(p.values[2], GenericValue::Str(Var { data: Bytes::from_static(b"kwo"), flags: 0, size: 0 }));
        assert_eq!(p.values[3], GenericValue::IList(vec![-5, 7]));
    }

    #[test]
    fn short_raw_record_is_an_error_not_a_panic() {
        let f = Arc::new(parse("syscalls/sys_enter_renameat2", RENAME).unwrap());
        let r = GenericPayload::decode(f.clone(), &Var { data: vec![0u8; 20].into(), flags: 0, size: 0 }, Default::default());
        assert!(r.is_err());
        let f2 = Arc::new(parse("dma/dma_map_sg", DMA).unwrap());
        let mut raw = vec![0u8; 36];
        raw[8..12].copy_from_slice(&((400u32 << 16) | 30).to_le_bytes());
        assert!(GenericPayload::decode(f2, &Var { data: raw.into(), flags: 0, size: 0 }, Default::default()).is_err());
    }
}
